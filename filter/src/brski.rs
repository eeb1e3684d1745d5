//! BRSKI (RFC 8995 §5) at the edge: routes, and the cheap checks that keep garbage away from
//! the registrar (pure).
//!
//! | request | edge checks | forwarded to |
//! |---|---|---|
//! | `POST /.well-known/brski/requestvoucher` | client certificate, `application/voucher-cms+json`, size, the CMS parses as id-ct-animaJSONVoucher SignedData | `/estuary/v1/brski/requestvoucher` |
//! | `POST …/voucher_status`, `POST …/enrollstatus` | client certificate, `application/json`, size, the body is a JSON object | `/estuary/v1/brski/{voucher_status,enrollstatus}` |
//! | `GET`/`POST …/requestauditlog` | client certificate | `/estuary/v1/brski/requestauditlog` |
//!
//! The client certificate goes along as base64 DER in `estuary-client-cert`: the registrar must
//! check the voucher request's signer against the very IDevID of the TLS connection. Signature
//! checks and policy are the registrar's.
//!
//! A 307 answer to requestvoucher (a cloud registrar sending the pledge to its owner's registrar,
//! draft-ietf-anima-brski-cloud) is passed on with its `Location` if that is an absolute
//! `https://` URL; see [`map_answer`].

use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::voucher::{BRSKI_PREFIX, CT_VOUCHER_CMS_JSON};

use crate::error::DEFAULT_RETRY_AFTER_S;
use crate::reply::{Reply, CT_TEXT};
use crate::upstream::retry_after_seconds;

/// Internal API header with the client certificate (base64 DER).
pub const HDR_CLIENT_CERT: &str = estuary_proto::internal_api::HDR_CLIENT_CERT;
/// Longest registrar reason passed on.
const MAX_REASON_BYTES: usize = 1024;

/// The BRSKI operations (RFC 8995 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrskiOp {
    /// §5.2 requestvoucher.
    RequestVoucher,
    /// §5.7 voucher_status.
    VoucherStatus,
    /// §5.9.4 enrollstatus.
    EnrollStatus,
    /// §5.8 requestauditlog.
    RequestAuditLog,
}

impl BrskiOp {
    /// The internal API path.
    pub fn internal_path(self) -> &'static str {
        match self {
            BrskiOp::RequestVoucher => "/estuary/v1/brski/requestvoucher",
            BrskiOp::VoucherStatus => "/estuary/v1/brski/voucher_status",
            BrskiOp::EnrollStatus => "/estuary/v1/brski/enrollstatus",
            BrskiOp::RequestAuditLog => "/estuary/v1/brski/requestauditlog",
        }
    }

    /// Whether a body is expected (and must be checked).
    pub fn has_body(self) -> bool {
        !matches!(self, BrskiOp::RequestAuditLog)
    }

    /// The request content type the operation takes.
    pub fn content_type(self) -> &'static str {
        match self {
            BrskiOp::RequestVoucher => CT_VOUCHER_CMS_JSON,
            _ => "application/json",
        }
    }
}

/// Why a BRSKI request is refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrskiEdgeError {
    /// Not a BRSKI operation.
    #[error("no such BRSKI operation")]
    UnknownOperation,
    /// Wrong method.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// Wrong Content-Type.
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// Empty body.
    #[error("request body is empty")]
    EmptyBody,
    /// Not a CMS voucher request.
    #[error("body is not a CMS SignedData voucher request: {0}")]
    BadCms(String),
    /// Not a JSON object.
    #[error("body is not a JSON object")]
    BadJson,
}

impl BrskiEdgeError {
    /// The local answer (RFC 8995 §5.3: 4xx for requests the registrar cannot use).
    pub fn reply(&self) -> Reply {
        let status = match self {
            BrskiEdgeError::UnknownOperation => 404,
            BrskiEdgeError::MethodNotAllowed(_) => 405,
            BrskiEdgeError::UnsupportedMediaType(_) => 415,
            BrskiEdgeError::EmptyBody | BrskiEdgeError::BadCms(_) | BrskiEdgeError::BadJson => 400,
        };
        let mut r = Reply::text(status, &self.to_string());
        if let BrskiEdgeError::MethodNotAllowed(allow) = self {
            r.headers.push(("allow", (*allow).to_string()));
        }
        r
    }
}

/// True if `path` is under `/.well-known/brski`.
pub fn is_brski_path(path: &[u8]) -> bool {
    match path.strip_prefix(BRSKI_PREFIX.as_bytes()) {
        Some(rest) => matches!(rest.first(), None | Some(b'/') | Some(b'?')),
        None => false,
    }
}

/// The operation of a BRSKI path and method.
pub fn route(path: &[u8], method: Option<&[u8]>) -> Result<BrskiOp, BrskiEdgeError> {
    let rest = path
        .strip_prefix(BRSKI_PREFIX.as_bytes())
        .ok_or(BrskiEdgeError::UnknownOperation)?;
    let rest = rest.split(|b| *b == b'?').next().unwrap_or_default();
    let op = match rest {
        b"/requestvoucher" => BrskiOp::RequestVoucher,
        b"/voucher_status" => BrskiOp::VoucherStatus,
        b"/enrollstatus" => BrskiOp::EnrollStatus,
        b"/requestauditlog" => BrskiOp::RequestAuditLog,
        _ => return Err(BrskiEdgeError::UnknownOperation),
    };
    let ok = matches!(
        (op, method),
        (BrskiOp::RequestAuditLog, Some(b"GET" | b"POST")) | (_, Some(b"POST"))
    );
    if !ok {
        return Err(BrskiEdgeError::MethodNotAllowed(
            if op == BrskiOp::RequestAuditLog {
                "GET, POST"
            } else {
                "POST"
            },
        ));
    }
    Ok(op)
}

/// The Content-Type must be the operation's (parameters tolerated).
pub fn check_content_type(op: BrskiOp, content_type: Option<&[u8]>) -> Result<(), BrskiEdgeError> {
    if !op.has_body() {
        return Ok(());
    }
    let want = op.content_type();
    let essence = content_type
        .and_then(|ct| ct.split(|b| *b == b';').next())
        .unwrap_or_default()
        .trim_ascii();
    if essence.eq_ignore_ascii_case(want.as_bytes()) {
        Ok(())
    } else {
        Err(BrskiEdgeError::UnsupportedMediaType(want))
    }
}

/// The body checks: a CMS that parses (requestvoucher) or a JSON object (status reports).
pub fn check_body(op: BrskiOp, body: &[u8]) -> Result<(), BrskiEdgeError> {
    if !op.has_body() {
        return Ok(());
    }
    if body.is_empty() {
        return Err(BrskiEdgeError::EmptyBody);
    }
    match op {
        BrskiOp::RequestVoucher => cms_signed::parse_unverified(body, ANIMA_JSON_VOUCHER)
            .map(|_| ())
            .map_err(|e| BrskiEdgeError::BadCms(e.to_string())),
        _ => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => Err(BrskiEdgeError::BadJson),
        },
    }
}

/// Longest `Location` passed on in a redirect.
pub const MAX_LOCATION_BYTES: usize = 2048;

/// A `Location` fit to pass on to a pledge: an absolute `https://` URL with a non-empty
/// authority, at most [`MAX_LOCATION_BYTES`] of visible ASCII. The pledge itself refuses a
/// downgrade (draft-ietf-anima-brski-cloud); the edge does not pass one on either.
pub fn redirect_location(location: Option<&[u8]>) -> Option<&str> {
    let raw = location?;
    if raw.is_empty() || raw.len() > MAX_LOCATION_BYTES || !raw.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    let scheme = text.get(..8)?;
    let rest = text.get(8..)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    (scheme.eq_ignore_ascii_case("https://") && !authority.is_empty()).then_some(text)
}

/// The registrar's answer, mapped for the pledge; the log line is for the proxy log.
///
/// `location` matters only for a 307 to requestvoucher: a cloud registrar
/// (draft-ietf-anima-brski-cloud) redirects the pledge to its owner's registrar.
pub fn map_answer(
    op: BrskiOp,
    status: Option<&[u8]>,
    retry_after: Option<&[u8]>,
    content_type: Option<&[u8]>,
    location: Option<&[u8]>,
    body: &[u8],
) -> (Reply, Option<String>) {
    let status = status
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.trim().parse::<u32>().ok());
    let busy = |secs: u32, log: String| {
        let mut r = Reply::text(503, "registrar unavailable, retry later");
        r.headers.push(("retry-after", secs.to_string()));
        (r, Some(log))
    };
    match status {
        None => busy(
            DEFAULT_RETRY_AFTER_S,
            "control plane BRSKI call failed or timed out".into(),
        ),
        Some(200) => {
            let ct = content_type
                .and_then(|c| std::str::from_utf8(c).ok())
                .unwrap_or(CT_TEXT)
                .to_string();
            if op == BrskiOp::RequestVoucher
                && cms_signed::parse_unverified(body, ANIMA_JSON_VOUCHER).is_err()
            {
                return (
                    Reply::text(502, "bad gateway: the registrar failed"),
                    Some("registrar 200 to requestvoucher is not a CMS voucher".into()),
                );
            }
            (
                Reply {
                    status: 200,
                    headers: vec![("content-type", ct)],
                    body: body.to_vec(),
                },
                None,
            )
        }
        Some(307) if op == BrskiOp::RequestVoucher => match redirect_location(location) {
            Some(url) => {
                let mut r = Reply::text(307, "redirected to the owner's registrar");
                r.headers.push(("location", url.to_string()));
                (r, None)
            }
            None => (
                Reply::text(502, "bad gateway: the registrar failed"),
                Some(
                    "control plane answered 307 to requestvoucher without an absolute https \
                     Location (at most 2048 visible ASCII bytes)"
                        .into(),
                ),
            ),
        },
        // RFC 6585 §4: the pledge's own limit; it learns why and when to come back.
        Some(429) => {
            let text = std::str::from_utf8(body).unwrap_or("").trim();
            let reason = if !text.is_empty()
                && text.len() <= MAX_REASON_BYTES
                && text.chars().all(|c| !c.is_control() || c == '\n')
            {
                text
            } else {
                "too many requests from this pledge; retry later"
            };
            let mut r = Reply::text(429, reason);
            r.headers
                .push(("retry-after", retry_after_seconds(retry_after).to_string()));
            (r, None)
        }
        Some(503) => busy(
            retry_after_seconds(retry_after),
            format!("registrar busy or MASA unavailable ({op:?})"),
        ),
        Some(s @ 400..=499) => {
            let text = std::str::from_utf8(body).unwrap_or("").trim();
            let clean = !text.is_empty()
                && text.len() <= MAX_REASON_BYTES
                && text.chars().all(|c| !c.is_control() || c == '\n');
            let reason = if clean {
                text.to_string()
            } else {
                format!("request refused by the registrar (HTTP {s})")
            };
            (Reply::text(s, &reason), None)
        }
        Some(s) => {
            let code = if s == 500 { 500 } else { 502 };
            (
                Reply::text(code, "bad gateway: the registrar failed"),
                Some(format!("control plane answered {s} to BRSKI {op:?}")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert!(is_brski_path(b"/.well-known/brski/requestvoucher"));
        assert!(!is_brski_path(b"/.well-known/brskix"));
        assert!(!is_brski_path(b"/.well-known/est/cacerts"));
        assert_eq!(
            route(b"/.well-known/brski/requestvoucher", Some(b"POST")),
            Ok(BrskiOp::RequestVoucher)
        );
        assert_eq!(
            route(b"/.well-known/brski/requestauditlog", Some(b"GET")),
            Ok(BrskiOp::RequestAuditLog)
        );
        assert_eq!(
            route(b"/.well-known/brski/requestvoucher", Some(b"GET")),
            Err(BrskiEdgeError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            route(b"/.well-known/brski/nope", Some(b"POST")),
            Err(BrskiEdgeError::UnknownOperation)
        );
    }

    #[test]
    fn bodies() {
        assert!(check_content_type(
            BrskiOp::RequestVoucher,
            Some(b"application/voucher-cms+json")
        )
        .is_ok());
        assert!(check_content_type(BrskiOp::RequestVoucher, Some(b"application/json")).is_err());
        assert!(check_content_type(BrskiOp::RequestVoucher, None).is_err());
        assert_eq!(
            check_body(BrskiOp::RequestVoucher, b"garbage")
                .unwrap_err()
                .reply()
                .status,
            400
        );
        assert_eq!(
            check_body(BrskiOp::VoucherStatus, b"[1]"),
            Err(BrskiEdgeError::BadJson)
        );
        assert!(check_body(BrskiOp::VoucherStatus, br#"{"status":true}"#).is_ok());
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            assert!(check_body(BrskiOp::RequestVoucher, &junk).is_err());
        }
    }

    #[test]
    fn answers() {
        let (r, _) = map_answer(
            BrskiOp::RequestVoucher,
            Some(b"503"),
            Some(b"30"),
            None,
            None,
            b"",
        );
        assert_eq!((r.status, r.header("retry-after")), (503, Some("30")));
        let (r, _) = map_answer(
            BrskiOp::RequestVoucher,
            Some(b"200"),
            None,
            None,
            None,
            b"not cms",
        );
        assert_eq!(r.status, 502);
        let (r, _) = map_answer(
            BrskiOp::VoucherStatus,
            Some(b"403"),
            None,
            None,
            None,
            b"no\n",
        );
        assert_eq!((r.status, r.body.as_slice()), (403, &b"no\n"[..]));
        let (r, log) = map_answer(
            BrskiOp::VoucherStatus,
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
        let (r, log) = map_answer(
            BrskiOp::RequestVoucher,
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
        let (r, _) = map_answer(
            BrskiOp::RequestVoucher,
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
            let (r, log) = map_answer(
                BrskiOp::RequestVoucher,
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
        let (r, _) = map_answer(BrskiOp::VoucherStatus, Some(b"307"), None, None, ok, b"");
        assert_eq!(r.status, 502, "only requestvoucher is redirected");
        for other in [&b"301"[..], b"302", b"308"] {
            let (r, _) = map_answer(BrskiOp::RequestVoucher, Some(other), None, None, ok, b"");
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
