//! Map the control plane's answer to the EST answer (pure).
//!
//! The control plane speaks the internal API of `estuary_proto::internal_api`: raw DER bodies,
//! `text/plain` reasons for 4xx, `retry-after` on 202/429/503. 5xx detail stays in the log.

use estuary_proto::est;

use crate::error::{EdgeError, DEFAULT_RETRY_AFTER_S};
use crate::reply::Reply;

/// Longest control-plane reason passed on to the client.
pub const MAX_REASON_BYTES: usize = 1024;

/// What the filter asked the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// simpleenroll / simplereenroll.
    Enroll,
    /// cacerts.
    CaCerts,
    /// csrattrs.
    CsrAttrs,
}

/// The EST answer, plus what to cache and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What the client gets.
    pub reply: Reply,
    /// DER to store in the cache (200 on cacerts / csrattrs only).
    pub cache: Option<Vec<u8>>,
    /// A line for the proxy log (internal detail the client does not see).
    pub log: Option<String>,
}

/// `Retry-After` as delay-seconds (RFC 9110 §10.2.3); anything else gets the default.
pub fn retry_after_seconds(value: Option<&[u8]>) -> u32 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|s| s.clamp(1, 86_400))
        .unwrap_or(DEFAULT_RETRY_AFTER_S)
}

/// A 4xx reason fit to pass on: UTF-8, printable, bounded; else a generic phrase.
fn client_reason(status: u32, body: &[u8]) -> String {
    let text = std::str::from_utf8(body).unwrap_or("");
    let text = text.trim();
    let clean = !text.is_empty()
        && text.len() <= MAX_REASON_BYTES
        && text
            .chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\t');
    if clean {
        text.to_string()
    } else {
        format!("request refused by the registration authority (HTTP {status})")
    }
}

fn snippet(body: &[u8]) -> String {
    let cut = body.get(..256).unwrap_or(body);
    String::from_utf8_lossy(cut).escape_debug().to_string()
}

fn unavailable(log: String) -> Answer {
    Answer {
        reply: EdgeError::ControlPlaneUnavailable.reply(),
        cache: None,
        log: Some(log),
    }
}

fn generic_5xx(status: u32, log: String) -> Answer {
    let (code, text) = if status == 500 {
        (500, "internal error")
    } else {
        (502, "bad gateway: the registration authority failed")
    };
    Answer {
        reply: Reply::text(code, text),
        cache: None,
        log: Some(log),
    }
}

/// Map `(status, retry-after, body)` from the control plane; `status` is `None` when the call
/// failed or timed out (Envoy then delivers no `:status`).
pub fn map_answer(
    kind: CallKind,
    status: Option<&[u8]>,
    retry_after: Option<&[u8]>,
    body: &[u8],
) -> Answer {
    let status = status
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.trim().parse::<u32>().ok());
    let Some(status) = status else {
        return unavailable("control plane call failed or timed out (no :status)".into());
    };
    match status {
        200 => ok_answer(kind, body),
        // RFC 7030 §4.2.3: 202 + Retry-After while the certificate is being issued.
        202 if kind == CallKind::Enroll => {
            let secs = retry_after_seconds(retry_after);
            let mut reply = Reply::text(
                202,
                &format!("enrollment accepted and pending; retry after {secs} seconds"),
            );
            reply.headers.push(("retry-after", secs.to_string()));
            Answer {
                reply,
                cache: None,
                log: None,
            }
        }
        // RFC 6585 §4: the device's own limit (e.g. too many new keys); it learns why and when.
        429 => {
            let secs = retry_after_seconds(retry_after);
            let mut reply = Reply::text(429, &client_reason(status, body));
            reply.headers.push(("retry-after", secs.to_string()));
            Answer {
                reply,
                cache: None,
                log: None,
            }
        }
        503 => {
            let secs = retry_after_seconds(retry_after);
            let mut reply = Reply::text(503, "registration authority busy, retry later");
            reply.headers.push(("retry-after", secs.to_string()));
            Answer {
                reply,
                cache: None,
                log: Some(format!("control plane answered {status}")),
            }
        }
        400..=499 => Answer {
            reply: Reply::text(status, &client_reason(status, body)),
            cache: None,
            log: None,
        },
        _ => generic_5xx(
            status,
            format!(
                "control plane answered unexpected {status} to {kind:?}: {}",
                snippet(body)
            ),
        ),
    }
}

fn ok_answer(kind: CallKind, body: &[u8]) -> Answer {
    match kind {
        CallKind::Enroll | CallKind::CaCerts => {
            // Check it is what RFC 7030 promises before handing it to a device.
            match estuary_proto::pkcs7::decode_certs_only(body) {
                Ok(certs) if !certs.is_empty() => Answer {
                    reply: Reply::base64_der(est::CT_PKCS7_CERTS_ONLY, body),
                    cache: (kind == CallKind::CaCerts).then(|| body.to_vec()),
                    log: None,
                },
                _ => generic_5xx(
                    502,
                    format!(
                        "control plane 200 to {kind:?} is not a certs-only PKCS#7 ({} bytes)",
                        body.len()
                    ),
                ),
            }
        }
        CallKind::CsrAttrs => match estuary_proto::csrattrs::CsrAttrs::from_der(body) {
            Ok(_) => Answer {
                reply: Reply::base64_der(est::CT_CSRATTRS, body),
                cache: Some(body.to_vec()),
                log: None,
            },
            Err(_) => generic_5xx(
                502,
                format!(
                    "control plane 200 to csrattrs is not CsrAttrs DER ({} bytes)",
                    body.len()
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    // Tests: a panic here is a failed test.
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    fn pkcs7() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        estuary_proto::pkcs7::encode_certs_only(&[cert.der().to_vec()]).unwrap()
    }

    #[test]
    fn ok_enroll_is_base64_pkcs7_not_cached() {
        let p7 = pkcs7();
        let a = map_answer(CallKind::Enroll, Some(b"200"), None, &p7);
        assert_eq!(a.reply.status, 200);
        assert_eq!(
            a.reply.header("content-type"),
            Some(est::CT_PKCS7_CERTS_ONLY)
        );
        assert_eq!(a.reply.header("content-transfer-encoding"), Some("base64"));
        assert_eq!(estuary_proto::base64::decode(&a.reply.body).unwrap(), p7);
        assert_eq!(a.cache, None);
        let a = map_answer(CallKind::CaCerts, Some(b"200"), None, &p7);
        assert_eq!(a.cache, Some(p7));
    }

    #[test]
    fn pending_busy_and_failures() {
        let a = map_answer(CallKind::Enroll, Some(b"202"), Some(b" 42 "), b"");
        assert_eq!(
            (a.reply.status, a.reply.header("retry-after")),
            (202, Some("42"))
        );
        let a = map_answer(
            CallKind::Enroll,
            Some(b"202"),
            Some(b"Wed, 21 Oct 2015"),
            b"",
        );
        assert_eq!(a.reply.header("retry-after"), Some("10"));
        let a = map_answer(CallKind::Enroll, Some(b"503"), Some(b"3"), b"x");
        assert_eq!(
            (a.reply.status, a.reply.header("retry-after")),
            (503, Some("3"))
        );
        let a = map_answer(
            CallKind::Enroll,
            Some(b"429"),
            Some(b"3"),
            b"this device has requested 5 new certificates",
        );
        assert_eq!(
            (a.reply.status, a.reply.header("retry-after")),
            (429, Some("3"))
        );
        assert!(String::from_utf8_lossy(&a.reply.body).contains("requested 5 new certificates"));
        for s in [None, Some(&b""[..]), Some(b"abc")] {
            let a = map_answer(CallKind::Enroll, s, None, b"");
            assert_eq!(a.reply.status, 503);
            assert_eq!(a.reply.header("retry-after"), Some("10"));
        }
        let a = map_answer(
            CallKind::Enroll,
            Some(b"500"),
            None,
            b"db password=x at 10.0.0.1",
        );
        assert_eq!(a.reply.status, 500);
        assert!(!String::from_utf8_lossy(&a.reply.body).contains("10.0.0.1"));
        assert!(
            a.log.unwrap().contains("10.0.0.1"),
            "detail goes to the log"
        );
        let a = map_answer(CallKind::Enroll, Some(b"504"), None, b"");
        assert_eq!(a.reply.status, 502);
        let a = map_answer(CallKind::Enroll, Some(b"302"), None, b"");
        assert_eq!(a.reply.status, 502);
        // 202 makes no sense for cacerts.
        let a = map_answer(CallKind::CaCerts, Some(b"202"), None, b"");
        assert_eq!(a.reply.status, 502);
    }

    #[test]
    fn client_errors_keep_a_clean_reason() {
        let a = map_answer(CallKind::Enroll, Some(b"403"), None, b"name not allowed\n");
        assert_eq!(
            (a.reply.status, a.reply.body.as_slice()),
            (403, &b"name not allowed\n"[..])
        );
        let a = map_answer(CallKind::Enroll, Some(b"409"), None, b"\x00\x01binary");
        assert_eq!(a.reply.status, 409);
        assert!(String::from_utf8_lossy(&a.reply.body).contains("HTTP 409"));
        let long = vec![b'a'; MAX_REASON_BYTES + 1];
        let a = map_answer(CallKind::Enroll, Some(b"400"), None, &long);
        assert!(a.reply.body.len() < 100);
    }

    #[test]
    fn bad_200_bodies_are_502() {
        assert_eq!(
            map_answer(CallKind::Enroll, Some(b"200"), None, b"nope")
                .reply
                .status,
            502
        );
        assert_eq!(
            map_answer(CallKind::CsrAttrs, Some(b"200"), None, b"nope")
                .reply
                .status,
            502
        );
        let a = map_answer(CallKind::CsrAttrs, Some(b"200"), None, &[0x30, 0x00]);
        assert_eq!(a.reply.status, 200, "an empty CsrAttrs is valid");
        assert_eq!(a.reply.header("content-type"), Some(est::CT_CSRATTRS));
    }
}
