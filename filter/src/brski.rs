//! BRSKI (RFC 8995 §5) at the edge: routes, and the cheap checks that keep garbage away from
//! the registrar (pure).
//!
//! | request | edge checks | forwarded to |
//! |---|---|---|
//! | `POST /.well-known/brski/requestvoucher` | client certificate, `application/voucher-cms+json`, size, the CMS parses as id-ct-animaJSONVoucher SignedData | `/estuary/v1/brski/requestvoucher` |
//! | `POST …/voucher_status`, `POST …/enrollstatus` | client certificate, `application/json`, size, the body is a JSON object | `/estuary/v1/brski/{voucher_status,enrollstatus}` |
//! | `GET`/`POST …/requestauditlog` | client certificate | `/estuary/v1/brski/requestauditlog` |
//!
//! The operations, internal paths and headers are `estuary_proto::internal_api`'s. The client
//! certificate goes along as base64 DER in `estuary-client-cert`: the registrar must
//! check the voucher request's signer against the very IDevID of the TLS connection. Signature
//! checks and policy are the registrar's.
//!
//! A 307 answer to requestvoucher (a cloud registrar sending the pledge to its owner's registrar,
//! draft-ietf-anima-brski-cloud) is passed on with its `Location` if that is an absolute
//! `https://` URL; see [`crate::upstream::map_answer`], the one map of control-plane answers.

use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::internal_api::Operation;
use estuary_proto::voucher::BRSKI_PREFIX;

use crate::reply::Reply;

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

/// The operation of a BRSKI path and method (always a BRSKI [`Operation`]).
pub fn route(path: &[u8], method: Option<&[u8]>) -> Result<Operation, BrskiEdgeError> {
    let rest = path
        .strip_prefix(BRSKI_PREFIX.as_bytes())
        .ok_or(BrskiEdgeError::UnknownOperation)?;
    let rest = rest.split(|b| *b == b'?').next().unwrap_or_default();
    let op = match rest {
        b"/requestvoucher" => Operation::RequestVoucher,
        b"/voucher_status" => Operation::VoucherStatus,
        b"/enrollstatus" => Operation::EnrollStatus,
        b"/requestauditlog" => Operation::RequestAuditLog,
        _ => return Err(BrskiEdgeError::UnknownOperation),
    };
    let ok = matches!(
        (op, method),
        (Operation::RequestAuditLog, Some(b"GET" | b"POST")) | (_, Some(b"POST"))
    );
    if !ok {
        return Err(BrskiEdgeError::MethodNotAllowed(
            if op == Operation::RequestAuditLog {
                "GET, POST"
            } else {
                "POST"
            },
        ));
    }
    Ok(op)
}

/// The Content-Type must be the operation's (parameters tolerated).
pub fn check_content_type(
    op: Operation,
    content_type: Option<&[u8]>,
) -> Result<(), BrskiEdgeError> {
    let Some(want) = op.request_content_type() else {
        return Ok(());
    };
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
pub fn check_body(op: Operation, body: &[u8]) -> Result<(), BrskiEdgeError> {
    if !op.has_body() {
        return Ok(());
    }
    if body.is_empty() {
        return Err(BrskiEdgeError::EmptyBody);
    }
    match op {
        Operation::RequestVoucher => cms_signed::parse_unverified(body, ANIMA_JSON_VOUCHER)
            .map(|_| ())
            .map_err(|e| BrskiEdgeError::BadCms(e.to_string())),
        _ => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => Err(BrskiEdgeError::BadJson),
        },
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
            Ok(Operation::RequestVoucher)
        );
        assert_eq!(
            route(b"/.well-known/brski/requestauditlog", Some(b"GET")),
            Ok(Operation::RequestAuditLog)
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
            Operation::RequestVoucher,
            Some(b"application/voucher-cms+json")
        )
        .is_ok());
        assert!(check_content_type(Operation::RequestVoucher, Some(b"application/json")).is_err());
        assert!(check_content_type(Operation::RequestVoucher, None).is_err());
        assert_eq!(
            check_body(Operation::RequestVoucher, b"garbage")
                .unwrap_err()
                .reply()
                .status,
            400
        );
        assert_eq!(
            check_body(Operation::VoucherStatus, b"[1]"),
            Err(BrskiEdgeError::BadJson)
        );
        assert!(check_body(Operation::VoucherStatus, br#"{"status":true}"#).is_ok());
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            assert!(check_body(Operation::RequestVoucher, &junk).is_err());
        }
    }
}
