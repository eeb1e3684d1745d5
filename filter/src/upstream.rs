//! Map the control plane's answer to the client's answer (pure): one map for every route, EST
//! and BRSKI alike.
//!
//! The control plane speaks the internal API of `estuary_proto::internal_api`, which also
//! classifies each answer ([`internal_api::classify`]); this module only words the classes for
//! the client. EST answers name "the registration authority", BRSKI ones "the registrar".
//! 5xx detail stays in the log.

use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::est;
use estuary_proto::internal_api::{self, AnswerClass, Operation, Protocol};
use estuary_proto::serverkeygen;

use crate::error::{EdgeError, DEFAULT_RETRY_AFTER_S};
use crate::reply::{Reply, CT_TEXT};

pub use estuary_proto::internal_api::{
    redirect_location, retry_after_seconds, MAX_LOCATION_BYTES, MAX_REASON_BYTES,
};

/// The client's answer, plus what to cache and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What the client gets.
    pub reply: Reply,
    /// DER to store in the cache (a 200 to cacerts, csrattrs, simpleenroll or simplereenroll).
    pub cache: Option<Vec<u8>>,
    /// A line for the proxy log (internal detail the client does not see).
    pub log: Option<String>,
}

/// The parts of a control-plane answer the filter reads (raw header values).
#[derive(Debug, Clone, Copy, Default)]
pub struct Upstream<'a> {
    /// `:status`; `None` when the call failed or timed out (Envoy then delivers none).
    pub status: Option<&'a [u8]>,
    /// `retry-after`.
    pub retry_after: Option<&'a [u8]>,
    /// `content-type`.
    pub content_type: Option<&'a [u8]>,
    /// `location`.
    pub location: Option<&'a [u8]>,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> Upstream<'a> {
    /// An answer with a status and a body, no headers.
    pub fn new(status: Option<&'a [u8]>, body: &'a [u8]) -> Self {
        Upstream {
            status,
            body,
            ..Upstream::default()
        }
    }
}

fn answer(reply: Reply, log: Option<String>) -> Answer {
    Answer {
        reply,
        cache: None,
        log,
    }
}

fn with_retry_after(mut reply: Reply, secs: u32) -> Reply {
    reply.headers.push(("retry-after", secs.to_string()));
    reply
}

fn snippet(body: &[u8]) -> String {
    let cut = body.get(..256).unwrap_or(body);
    String::from_utf8_lossy(cut).escape_debug().to_string()
}

/// Who the client is told failed, per protocol.
fn authority(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Est => "registration authority",
        Protocol::Brski => "registrar",
    }
}

/// A failed control plane: 500 stays 500, anything else is 502; the detail goes to the log.
fn server_error(op: Operation, status: u32, log: String) -> Answer {
    let code = if status == 500 { 500 } else { 502 };
    let text = match (op.protocol(), code) {
        (Protocol::Est, 500) => "internal error",
        (Protocol::Est, _) => "bad gateway: the registration authority failed",
        (Protocol::Brski, _) => "bad gateway: the registrar failed",
    };
    answer(Reply::text(code, text), Some(log))
}

/// Map the control plane's answer to `op` for the client.
pub fn map_answer(op: Operation, up: &Upstream<'_>) -> Answer {
    let protocol = op.protocol();
    match internal_api::classify(op, up.status) {
        AnswerClass::NoAnswer => match protocol {
            Protocol::Est => answer(
                EdgeError::ControlPlaneUnavailable.reply(),
                Some("control plane call failed or timed out (no :status)".into()),
            ),
            Protocol::Brski => answer(
                with_retry_after(
                    Reply::text(503, "registrar unavailable, retry later"),
                    DEFAULT_RETRY_AFTER_S,
                ),
                Some("control plane BRSKI call failed or timed out".into()),
            ),
        },
        AnswerClass::Ok => ok_answer(op, up),
        // RFC 7030 §4.2.3: 202 + Retry-After while the certificate is being issued.
        AnswerClass::Pending => {
            let secs = retry_after_seconds(up.retry_after);
            let text = format!("enrollment accepted and pending; retry after {secs} seconds");
            answer(with_retry_after(Reply::text(202, &text), secs), None)
        }
        // draft-ietf-anima-brski-cloud: the cloud registrar redirects to the owner's registrar.
        AnswerClass::Redirect => match redirect_location(up.location) {
            Some(url) => {
                let mut r = Reply::text(307, "redirected to the owner's registrar");
                r.headers.push(("location", url.to_string()));
                answer(r, None)
            }
            None => server_error(
                op,
                307,
                format!(
                    "control plane answered 307 to requestvoucher without an absolute https \
                     Location (at most {MAX_LOCATION_BYTES} visible ASCII bytes)"
                ),
            ),
        },
        // RFC 6585 §4: the client's own limit; it learns why and when to come back.
        AnswerClass::TooManyRequests => {
            let reason = match (internal_api::client_reason(protocol, up.body), protocol) {
                (Some(r), _) => r.to_string(),
                (None, Protocol::Est) => {
                    "request refused by the registration authority (HTTP 429)".to_string()
                }
                (None, Protocol::Brski) => {
                    "too many requests from this pledge; retry later".to_string()
                }
            };
            let secs = retry_after_seconds(up.retry_after);
            answer(with_retry_after(Reply::text(429, &reason), secs), None)
        }
        AnswerClass::Busy => {
            let (text, log) = match protocol {
                Protocol::Est => (
                    "registration authority busy, retry later",
                    "control plane answered 503".to_string(),
                ),
                Protocol::Brski => (
                    "registrar unavailable, retry later",
                    format!("registrar busy or MASA unavailable ({op})"),
                ),
            };
            let secs = retry_after_seconds(up.retry_after);
            answer(with_retry_after(Reply::text(503, text), secs), Some(log))
        }
        AnswerClass::ClientError(status) => {
            let reason = match internal_api::client_reason(protocol, up.body) {
                Some(r) => r.to_string(),
                None => format!(
                    "request refused by the {} (HTTP {status})",
                    authority(protocol)
                ),
            };
            answer(Reply::text(status, &reason), None)
        }
        AnswerClass::InternalError => server_error(
            op,
            500,
            format!("control plane answered 500 to {op}: {}", snippet(up.body)),
        ),
        AnswerClass::Unexpected(status) => server_error(
            op,
            status,
            format!(
                "control plane answered unexpected {status} to {op}: {}",
                snippet(up.body)
            ),
        ),
    }
}

/// A 200, checked to be what the client is promised before it is handed on.
fn ok_answer(op: Operation, up: &Upstream<'_>) -> Answer {
    let body = up.body;
    let bad = |what: &str| {
        server_error(
            op,
            502,
            format!(
                "control plane 200 to {op} is not {what} ({} bytes)",
                body.len()
            ),
        )
    };
    match op {
        Operation::SimpleEnroll | Operation::SimpleReenroll | Operation::CaCerts => {
            match estuary_proto::pkcs7::decode_certs_only(body) {
                Ok(certs) if !certs.is_empty() => Answer {
                    reply: Reply::base64_der(est::CT_PKCS7_CERTS_ONLY, body),
                    // Stored only where the caller gave a cache key (cacerts; an enrolment
                    // with `enroll_answer_cache` on).
                    cache: Some(body.to_vec()),
                    log: None,
                },
                _ => bad("a certs-only PKCS#7"),
            }
        }
        // RFC 7030 §4.4.2: the control plane built the multipart answer (the key never
        // exists in the edge but in transit); it is passed on byte for byte with its
        // content-type, whose boundary it needs. Only the frame is checked: a multipart/mixed
        // type with a boundary, and a body of text that ends with the closing delimiter.
        Operation::ServerKeyGen => {
            let ct = up.content_type.and_then(|c| std::str::from_utf8(c).ok());
            let framed = ct
                .and_then(|ct| serverkeygen::boundary(ct).ok())
                .is_some_and(|b| {
                    let closing = format!("--{b}--");
                    std::str::from_utf8(body)
                        .is_ok_and(|t| t.trim_end().ends_with(&closing) && t.starts_with("--"))
                });
            match (framed, ct) {
                (true, Some(ct)) => answer(
                    Reply {
                        status: 200,
                        headers: vec![("content-type", ct.to_string())],
                        body: body.to_vec(),
                    },
                    None,
                ),
                _ => bad("a multipart/mixed serverkeygen answer"),
            }
        }
        Operation::CsrAttrs => match estuary_proto::csrattrs::CsrAttrs::from_der(body) {
            Ok(_) => Answer {
                reply: Reply::base64_der(est::CT_CSRATTRS, body),
                cache: Some(body.to_vec()),
                log: None,
            },
            Err(_) => bad("CsrAttrs DER"),
        },
        Operation::RequestVoucher
            if cms_signed::parse_unverified(body, ANIMA_JSON_VOUCHER).is_err() =>
        {
            bad("a CMS voucher")
        }
        Operation::RequestVoucher
        | Operation::VoucherStatus
        | Operation::EnrollStatus
        | Operation::RequestAuditLog => {
            let ct = up
                .content_type
                .and_then(|c| std::str::from_utf8(c).ok())
                .unwrap_or(CT_TEXT)
                .to_string();
            answer(
                Reply {
                    status: 200,
                    headers: vec![("content-type", ct)],
                    body: body.to_vec(),
                },
                None,
            )
        }
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

    fn est(
        op: Operation,
        status: Option<&[u8]>,
        retry_after: Option<&[u8]>,
        body: &[u8],
    ) -> Answer {
        map_answer(
            op,
            &Upstream {
                status,
                retry_after,
                body,
                ..Upstream::default()
            },
        )
    }

    fn brski(
        op: Operation,
        status: Option<&[u8]>,
        retry_after: Option<&[u8]>,
        content_type: Option<&[u8]>,
        location: Option<&[u8]>,
        body: &[u8],
    ) -> (Reply, Option<String>) {
        let a = map_answer(
            op,
            &Upstream {
                status,
                retry_after,
                content_type,
                location,
                body,
            },
        );
        assert_eq!(a.cache, None, "BRSKI answers are never cached");
        (a.reply, a.log)
    }

    fn pkcs7() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        estuary_proto::pkcs7::encode_certs_only(&[cert.der().to_vec()]).unwrap()
    }

    #[test]
    fn ok_enroll_is_base64_pkcs7_and_cacheable() {
        let p7 = pkcs7();
        let a = est(Operation::SimpleEnroll, Some(b"200"), None, &p7);
        assert_eq!(a.reply.status, 200);
        assert_eq!(
            a.reply.header("content-type"),
            Some(est::CT_PKCS7_CERTS_ONLY)
        );
        assert_eq!(a.reply.header("content-transfer-encoding"), Some("base64"));
        assert_eq!(estuary_proto::base64::decode(&a.reply.body).unwrap(), p7);
        assert_eq!(a.cache.as_deref(), Some(p7.as_slice()));
        let a = est(Operation::CaCerts, Some(b"200"), None, &p7);
        assert_eq!(a.cache, Some(p7));
    }

    #[test]
    fn ok_serverkeygen_is_passed_on_unchanged_with_its_content_type() {
        let mut body = Vec::new();
        serverkeygen::build(&[1, 2, 3], &pkcs7(), &mut body);
        let ct = serverkeygen::content_type();
        let a = map_answer(
            Operation::ServerKeyGen,
            &Upstream {
                status: Some(b"200"),
                content_type: Some(ct.as_bytes()),
                body: &body,
                ..Upstream::default()
            },
        );
        assert_eq!(a.reply.status, 200);
        assert_eq!(a.reply.header("content-type"), Some(ct.as_str()));
        assert_eq!(a.reply.header("content-transfer-encoding"), None);
        assert_eq!(a.reply.body, body, "byte for byte");
        assert_eq!(a.cache, None, "never cached");
        // A wrong type, no boundary, or a body that is not the multipart frame: 502, and the
        // log names no content.
        for (ct, b) in [
            (None, body.as_slice()),
            (Some(&b"application/pkcs7-mime"[..]), body.as_slice()),
            (Some(b"multipart/mixed"), body.as_slice()),
            (Some(ct.as_bytes()), b"MIIB..."),
            (Some(ct.as_bytes()), &body[..body.len() / 2]),
        ] {
            let a = map_answer(
                Operation::ServerKeyGen,
                &Upstream {
                    status: Some(b"200"),
                    content_type: ct,
                    body: b,
                    ..Upstream::default()
                },
            );
            assert_eq!(a.reply.status, 502, "{ct:?}");
            assert!(!a.log.unwrap_or_default().contains("MII"));
        }
        let a = est(Operation::ServerKeyGen, Some(b"202"), Some(b"5"), b"");
        assert_eq!(
            (a.reply.status, a.reply.header("retry-after")),
            (202, Some("5"))
        );
    }

    #[test]
    fn pending_busy_and_failures() {
        let a = est(Operation::SimpleEnroll, Some(b"202"), Some(b" 42 "), b"");
        assert_eq!(
            (a.reply.status, a.reply.header("retry-after")),
            (202, Some("42"))
        );
        let a = est(
            Operation::SimpleEnroll,
            Some(b"202"),
            Some(b"Wed, 21 Oct 2015"),
            b"",
        );
        assert_eq!(a.reply.header("retry-after"), Some("10"));
        let a = est(Operation::SimpleEnroll, Some(b"503"), Some(b"3"), b"x");
        assert_eq!(
            (a.reply.status, a.reply.header("retry-after")),
            (503, Some("3"))
        );
        let a = est(
            Operation::SimpleEnroll,
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
            let a = est(Operation::SimpleEnroll, s, None, b"");
            assert_eq!(a.reply.status, 503);
            assert_eq!(a.reply.header("retry-after"), Some("10"));
        }
        let a = est(
            Operation::SimpleEnroll,
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
        let a = est(Operation::SimpleEnroll, Some(b"504"), None, b"");
        assert_eq!(a.reply.status, 502);
        let a = est(Operation::SimpleEnroll, Some(b"302"), None, b"");
        assert_eq!(a.reply.status, 502);
        // 202 makes no sense for cacerts.
        let a = est(Operation::CaCerts, Some(b"202"), None, b"");
        assert_eq!(a.reply.status, 502);
    }

    #[test]
    fn client_errors_keep_a_clean_reason() {
        let a = est(
            Operation::SimpleEnroll,
            Some(b"403"),
            None,
            b"name not allowed\n",
        );
        assert_eq!(
            (a.reply.status, a.reply.body.as_slice()),
            (403, &b"name not allowed\n"[..])
        );
        let a = est(
            Operation::SimpleEnroll,
            Some(b"409"),
            None,
            b"\x00\x01binary",
        );
        assert_eq!(a.reply.status, 409);
        assert!(String::from_utf8_lossy(&a.reply.body).contains("HTTP 409"));
        let long = vec![b'a'; MAX_REASON_BYTES + 1];
        let a = est(Operation::SimpleEnroll, Some(b"400"), None, &long);
        assert!(a.reply.body.len() < 100);
    }

    #[test]
    fn bad_200_bodies_are_502() {
        assert_eq!(
            est(Operation::SimpleEnroll, Some(b"200"), None, b"nope")
                .reply
                .status,
            502
        );
        assert_eq!(
            est(Operation::CsrAttrs, Some(b"200"), None, b"nope")
                .reply
                .status,
            502
        );
        let a = est(Operation::CsrAttrs, Some(b"200"), None, &[0x30, 0x00]);
        assert_eq!(a.reply.status, 200, "an empty CsrAttrs is valid");
        assert_eq!(a.reply.header("content-type"), Some(est::CT_CSRATTRS));
    }

    #[test]
    fn answers() {
        let (r, _) = brski(
            Operation::RequestVoucher,
            Some(b"503"),
            Some(b"30"),
            None,
            None,
            b"",
        );
        assert_eq!((r.status, r.header("retry-after")), (503, Some("30")));
        let (r, _) = brski(
            Operation::RequestVoucher,
            Some(b"200"),
            None,
            None,
            None,
            b"not cms",
        );
        assert_eq!(r.status, 502);
        let (r, _) = brski(
            Operation::VoucherStatus,
            Some(b"403"),
            None,
            None,
            None,
            b"no\n",
        );
        assert_eq!((r.status, r.body.as_slice()), (403, &b"no\n"[..]));
        let (r, log) = brski(
            Operation::VoucherStatus,
            Some(b"502"),
            None,
            None,
            None,
            b"secret",
        );
        assert_eq!(r.status, 502);
        assert!(!String::from_utf8_lossy(&r.body).contains("secret"));
        assert!(log.is_some());
    }

    #[test]
    fn a_307_to_requestvoucher_is_passed_on_with_its_location() {
        // draft-ietf-anima-brski-cloud: the cloud registrar redirects to the owner's registrar.
        let url = b"https://registrar.owner.example:8443/.well-known/brski/requestvoucher";
        let (r, log) = brski(
            Operation::RequestVoucher,
            Some(b"307"),
            None,
            Some(b"text/plain"),
            Some(url),
            b"internal detail",
        );
        assert_eq!(r.status, 307);
        assert_eq!(r.header("location").map(str::as_bytes), Some(&url[..]));
        assert_eq!(r.body, b"redirected to the owner's registrar\n");
        assert!(log.is_none());
        let (r, _) = brski(
            Operation::RequestVoucher,
            Some(b"307"),
            None,
            None,
            Some(b"HTTPS://Registrar.example"),
            b"",
        );
        assert_eq!(r.status, 307);
    }

    #[test]
    fn a_307_without_a_usable_location_or_to_another_op_is_502() {
        let long = format!("https://r.example/{}", "a".repeat(2048));
        for location in [
            None,
            Some(&b""[..]),
            Some(b"http://registrar.example/.well-known/brski/requestvoucher"),
            Some(b"/.well-known/brski/requestvoucher"),
            Some(b"https://"),
            Some(b"https:///path"),
            Some(b"https://r.example/a b"),
            Some(b"https://r.example/\r\nset-cookie: x"),
            Some("https://r\u{e9}.example/".as_bytes()),
            Some(b"ftp://r.example/"),
            Some(long.as_bytes()),
        ] {
            let (r, log) = brski(
                Operation::RequestVoucher,
                Some(b"307"),
                None,
                None,
                location,
                b"",
            );
            assert_eq!(r.status, 502, "{location:?}");
            assert!(r.header("location").is_none());
            assert!(log.is_some_and(|l| l.contains("307")), "{location:?}");
        }
        let ok = Some(&b"https://r.example/x"[..]);
        let (r, _) = brski(Operation::VoucherStatus, Some(b"307"), None, None, ok, b"");
        assert_eq!(r.status, 502, "only requestvoucher is redirected");
        for other in [&b"301"[..], b"302", b"308"] {
            let (r, _) = brski(Operation::RequestVoucher, Some(other), None, None, ok, b"");
            assert_eq!(r.status, 502, "{other:?}");
        }
        let exact = format!("https://r.example/{}", "a".repeat(2048 - 18));
        assert_eq!(exact.len(), 2048);
        assert_eq!(
            redirect_location(Some(exact.as_bytes())),
            Some(exact.as_str())
        );
    }
}
