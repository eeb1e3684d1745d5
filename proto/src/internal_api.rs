//! The control plane's internal HTTP API that the edge filter calls: one typed contract for
//! both sides.
//!
//! Every path, header, operation and answer class the filter and the control plane exchange is
//! here, so that neither side spells a wire string of its own. The caller authenticates with
//! `authorization: Bearer <token>` ([`HDR_AUTHORIZATION`]).
//!
//! | [`Operation`] | filter sends | [`InternalPath`] | request headers | 200 body |
//! |---|---|---|---|---|
//! | `simpleenroll`, `simplereenroll` | `POST` DER PKCS#10 ([`crate::est::CT_PKCS10`]) | [`ENROLL_PATH`] | [`HDR_DEVICE_SERIAL`], [`HDR_OPERATION`], [`HDR_CLIENT_CERT`], optional [`HDR_CLIENT_CHAIN`], [`HDR_LABEL`] | raw DER PKCS#7 certs-only (not base64: the filter encodes) |
//! | `serverkeygen` | `POST` DER PKCS#10 ([`crate::est::CT_PKCS10`]) | [`SERVERKEYGEN_PATH`] | as enrolment | `multipart/mixed` ([`crate::serverkeygen`]): the new private key (`application/pkcs8`) and the end-entity certificate (PKCS#7 certs-only), both base64, the `content-type` with its boundary passed on unchanged |
//! | `cacerts` | `GET` | [`CACERTS_PATH`] | optional [`HDR_LABEL`] | raw DER PKCS#7 certs-only |
//! | `csrattrs` | `GET` | [`CSRATTRS_PATH`] | [`HDR_DEVICE_SERIAL`], [`HDR_CLIENT_CERT`], optional [`HDR_CLIENT_CHAIN`], [`HDR_LABEL`] | raw DER CsrAttrs ([`crate::est::CT_CSRATTRS`]) |
//! | `requestvoucher` | `POST` CMS ([`crate::voucher::CT_VOUCHER_CMS_JSON`]) | [`BRSKI_REQUESTVOUCHER_PATH`] | [`HDR_CLIENT_CERT`] | the MASA's CMS voucher, its `content-type` passed on |
//! | `voucher_status`, `enrollstatus` | `POST` JSON object ([`CT_JSON`]) | [`BRSKI_VOUCHER_STATUS_PATH`], [`BRSKI_ENROLLSTATUS_PATH`] | [`HDR_CLIENT_CERT`] | passed on |
//! | `requestauditlog` | `POST`, no body (the control plane also takes `GET`) | [`BRSKI_REQUESTAUDITLOG_PATH`] | [`HDR_CLIENT_CERT`] | passed on |
//!
//! The client certificate the edge verified goes along as [`HDR_CLIENT_CERT`] (base64 DER, one
//! line) and, for EST, the other certificates the client presented as [`HDR_CLIENT_CHAIN`]. The
//! control plane re-derives the device from them with [`crate::identity`] and its own copy of
//! the trusted CAs (EST), or checks the voucher request's signer against it (BRSKI, RFC 8995
//! §5.5), and answers 403 when they disagree — a valid token alone obtains nothing.
//!
//! Answers ([`classify`] gives the [`AnswerClass`] of a status, for one operation):
//! - 200: the body is the answer (see the table).
//! - 202 with [`HDR_RETRY_AFTER`]: enrolment accepted and pending
//!   ([`Operation::may_be_pending`]: the enrolments and serverkeygen).
//! - 307 with [`HDR_LOCATION`], an absolute `https` URL: a cloud registrar sends the pledge to
//!   its owner's registrar (draft-ietf-anima-brski-cloud; [`Operation::RequestVoucher`] only).
//! - 429 with [`HDR_RETRY_AFTER`] and a `text/plain` reason: the caller's own limit.
//! - 503 with [`HDR_RETRY_AFTER`]: busy, or a dependency (Redis, CA, DNS, MASA) unavailable.
//! - other 4xx with a `text/plain` reason ([`CT_TEXT_PLAIN`]), which the filter may pass on.
//! - 500, 502 and anything else: internal detail the filter logs and does not pass on.

use std::fmt;
use std::str::FromStr;

use crate::est::EstOperation;

/// Enrolment (simpleenroll and simplereenroll): `POST` a raw DER PKCS#10.
pub const ENROLL_PATH: &str = "/estuary/v1/enroll";
/// Server-side key generation (RFC 7030 §4.4): `POST` a raw DER PKCS#10 -> `multipart/mixed`.
pub const SERVERKEYGEN_PATH: &str = "/estuary/v1/serverkeygen";
/// CA certificates: `GET` -> raw DER PKCS#7 certs-only.
pub const CACERTS_PATH: &str = "/estuary/v1/cacerts";
/// CSR attributes for one device: `GET` with [`HDR_DEVICE_SERIAL`] -> raw DER CsrAttrs.
pub const CSRATTRS_PATH: &str = "/estuary/v1/csrattrs";
/// BRSKI (RFC 8995 §5.2): `POST` the pledge's CMS voucher request -> the MASA's CMS voucher.
pub const BRSKI_REQUESTVOUCHER_PATH: &str = "/estuary/v1/brski/requestvoucher";
/// BRSKI (RFC 8995 §5.7): `POST` voucher status telemetry JSON.
pub const BRSKI_VOUCHER_STATUS_PATH: &str = "/estuary/v1/brski/voucher_status";
/// BRSKI (RFC 8995 §5.9.4): `POST` enrolment status telemetry JSON.
pub const BRSKI_ENROLLSTATUS_PATH: &str = "/estuary/v1/brski/enrollstatus";
/// BRSKI (RFC 8995 §5.8): `POST` (or `GET`) the device's audit log, relayed from the MASA.
pub const BRSKI_REQUESTAUDITLOG_PATH: &str = "/estuary/v1/brski/requestauditlog";

/// Header carrying the authenticated device serial (from the client certificate).
pub const HDR_DEVICE_SERIAL: &str = "estuary-device-serial";
/// Header carrying the TLS client certificate the edge verified: base64 DER, no line breaks.
pub const HDR_CLIENT_CERT: &str = "estuary-client-cert";
/// Header carrying the other certificates the client presented (the XFCC `Chain` less the
/// leaf, at most [`crate::identity::MAX_CHAIN_CERTS`]): base64 DER each, comma-separated.
pub const HDR_CLIENT_CHAIN: &str = "estuary-client-chain";
/// Header carrying the EST operation: [`OP_SIMPLEENROLL`] or [`OP_SIMPLEREENROLL`].
pub const HDR_OPERATION: &str = "estuary-operation";
/// Header carrying the EST path label (`/.well-known/est/<label>/...`), when there is one.
pub const HDR_LABEL: &str = "estuary-label";
/// Header with the caller's bearer token (`Bearer <token>`).
pub const HDR_AUTHORIZATION: &str = "authorization";
/// Header the control plane sets on 202, 429 and 503 answers (seconds).
pub const HDR_RETRY_AFTER: &str = "retry-after";
/// Header with the redirect target of a 307 answer to requestvoucher.
pub const HDR_LOCATION: &str = "location";
/// Header with the request's id, as Envoy sets it (`x-request-id`) on the device's request: the
/// edge passes it on to the control plane, whose log lines for that request carry it, so one
/// enrolment can be followed from the proxy's log to the control plane's.
pub const HDR_REQUEST_ID: &str = "x-request-id";
/// The longest request id passed on or logged.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether `id` may be passed on and logged as a request id: 1 to [`MAX_REQUEST_ID_LEN`]
/// characters of `A-Z a-z 0-9 - _ . :` (Envoy's UUIDs, and what tracing systems use). Anything
/// else is dropped rather than written into a log line.
pub fn request_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}
/// Header with the content type of a request or answer body.
pub const HDR_CONTENT_TYPE: &str = "content-type";

/// [`HDR_OPERATION`] value for a first enrolment.
pub const OP_SIMPLEENROLL: &str = "simpleenroll";
/// [`HDR_OPERATION`] value for a re-enrolment.
pub const OP_SIMPLEREENROLL: &str = "simplereenroll";

/// Operation name of server-side key generation.
pub const OP_SERVERKEYGEN: &str = "serverkeygen";

/// Content type of the plain-text reasons in 4xx/5xx answers.
pub const CT_TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// Content type of the BRSKI status reports (RFC 8995 §5.7, §5.9.4).
pub const CT_JSON: &str = "application/json";

/// Seconds a caller is told to wait when an answer carries no usable `retry-after`, or when
/// the control plane could not be reached.
pub const DEFAULT_RETRY_AFTER_S: u32 = 10;
/// Longest `retry-after` honoured, in seconds (a day).
pub const MAX_RETRY_AFTER_S: u32 = 86_400;
/// Longest `text/plain` reason the filter passes on to a client.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest 307 `location` the filter passes on.
pub const MAX_LOCATION_BYTES: usize = 2048;

/// HTTP method of an internal call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// The protocol an operation belongs to: it decides the wording of the answers the filter
/// makes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// EST (RFC 7030).
    Est,
    /// BRSKI (RFC 8995) and the BRSKI cloud registrar (draft-ietf-anima-brski-cloud).
    Brski,
}

/// Every operation the filter forwards to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// RFC 7030 §4.2.1.
    SimpleEnroll,
    /// RFC 7030 §4.2.2.
    SimpleReenroll,
    /// RFC 7030 §4.4.
    ServerKeyGen,
    /// RFC 7030 §4.1.
    CaCerts,
    /// RFC 7030 §4.5.
    CsrAttrs,
    /// RFC 8995 §5.2.
    RequestVoucher,
    /// RFC 8995 §5.7.
    VoucherStatus,
    /// RFC 8995 §5.9.4.
    EnrollStatus,
    /// RFC 8995 §5.8.
    RequestAuditLog,
}

/// A string that names no [`Operation`] or [`InternalPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown internal API name {0:?}")]
pub struct UnknownName(pub String);

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 9] = [
        Operation::SimpleEnroll,
        Operation::SimpleReenroll,
        Operation::ServerKeyGen,
        Operation::CaCerts,
        Operation::CsrAttrs,
        Operation::RequestVoucher,
        Operation::VoucherStatus,
        Operation::EnrollStatus,
        Operation::RequestAuditLog,
    ];

    /// The operation's name in its RFC (the last path segment the client used); for the two
    /// enrolments also the [`HDR_OPERATION`] value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::SimpleEnroll => OP_SIMPLEENROLL,
            Operation::SimpleReenroll => OP_SIMPLEREENROLL,
            Operation::ServerKeyGen => OP_SERVERKEYGEN,
            Operation::CaCerts => "cacerts",
            Operation::CsrAttrs => "csrattrs",
            Operation::RequestVoucher => "requestvoucher",
            Operation::VoucherStatus => "voucher_status",
            Operation::EnrollStatus => "enrollstatus",
            Operation::RequestAuditLog => "requestauditlog",
        }
    }

    /// The operation named `name` (exact, case-sensitive), if any.
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// The enrolment named by an [`HDR_OPERATION`] value: only [`OP_SIMPLEENROLL`] and
    /// [`OP_SIMPLEREENROLL`] are.
    pub fn parse_enroll_header(value: &str) -> Option<Operation> {
        Operation::parse(value).filter(|op| op.is_enroll())
    }

    /// EST or BRSKI.
    pub fn protocol(self) -> Protocol {
        match self {
            Operation::SimpleEnroll
            | Operation::SimpleReenroll
            | Operation::ServerKeyGen
            | Operation::CaCerts
            | Operation::CsrAttrs => Protocol::Est,
            Operation::RequestVoucher
            | Operation::VoucherStatus
            | Operation::EnrollStatus
            | Operation::RequestAuditLog => Protocol::Brski,
        }
    }

    /// simpleenroll or simplereenroll.
    pub fn is_enroll(self) -> bool {
        matches!(self, Operation::SimpleEnroll | Operation::SimpleReenroll)
    }

    /// The internal path the filter calls.
    pub fn path(self) -> InternalPath {
        match self {
            Operation::SimpleEnroll | Operation::SimpleReenroll => InternalPath::Enroll,
            Operation::ServerKeyGen => InternalPath::ServerKeyGen,
            Operation::CaCerts => InternalPath::CaCerts,
            Operation::CsrAttrs => InternalPath::CsrAttrs,
            Operation::RequestVoucher => InternalPath::BrskiRequestVoucher,
            Operation::VoucherStatus => InternalPath::BrskiVoucherStatus,
            Operation::EnrollStatus => InternalPath::BrskiEnrollStatus,
            Operation::RequestAuditLog => InternalPath::BrskiRequestAuditLog,
        }
    }

    /// The method the filter calls with.
    pub fn method(self) -> Method {
        match self {
            Operation::CaCerts | Operation::CsrAttrs => Method::Get,
            _ => Method::Post,
        }
    }

    /// The content type of the request body, for the operations that carry one (the same at
    /// the edge and on the internal call).
    pub fn request_content_type(self) -> Option<&'static str> {
        match self {
            Operation::SimpleEnroll | Operation::SimpleReenroll | Operation::ServerKeyGen => {
                Some(crate::est::CT_PKCS10)
            }
            Operation::RequestVoucher => Some(crate::voucher::CT_VOUCHER_CMS_JSON),
            Operation::VoucherStatus | Operation::EnrollStatus => Some(CT_JSON),
            Operation::CaCerts | Operation::CsrAttrs | Operation::RequestAuditLog => None,
        }
    }

    /// Whether the request carries a body.
    pub fn has_body(self) -> bool {
        self.request_content_type().is_some()
    }

    /// Whether 202 + `retry-after` (pending) is an answer to this operation.
    pub fn may_be_pending(self) -> bool {
        self.is_enroll() || self == Operation::ServerKeyGen
    }

    /// Whether 307 + `location` (a cloud registrar's redirect) is an answer to this operation.
    pub fn may_redirect(self) -> bool {
        self == Operation::RequestVoucher
    }

    /// The EST operation (RFC 7030 §3.2.2) this is, for the EST ones.
    pub fn est_operation(self) -> Option<EstOperation> {
        match self {
            Operation::SimpleEnroll => Some(EstOperation::SimpleEnroll),
            Operation::SimpleReenroll => Some(EstOperation::SimpleReenroll),
            Operation::ServerKeyGen => Some(EstOperation::ServerKeyGen),
            Operation::CaCerts => Some(EstOperation::CaCerts),
            Operation::CsrAttrs => Some(EstOperation::CsrAttrs),
            _ => None,
        }
    }

    /// The internal operation of an EST operation the edge forwards (fullcmc is not offered,
    /// so it has none).
    pub fn from_est(op: EstOperation) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|o| o.est_operation() == Some(op))
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Operation::parse(s).ok_or_else(|| UnknownName(s.to_string()))
    }
}

/// Every path of the internal API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InternalPath {
    /// [`ENROLL_PATH`].
    Enroll,
    /// [`SERVERKEYGEN_PATH`].
    ServerKeyGen,
    /// [`CACERTS_PATH`].
    CaCerts,
    /// [`CSRATTRS_PATH`].
    CsrAttrs,
    /// [`BRSKI_REQUESTVOUCHER_PATH`].
    BrskiRequestVoucher,
    /// [`BRSKI_VOUCHER_STATUS_PATH`].
    BrskiVoucherStatus,
    /// [`BRSKI_ENROLLSTATUS_PATH`].
    BrskiEnrollStatus,
    /// [`BRSKI_REQUESTAUDITLOG_PATH`].
    BrskiRequestAuditLog,
}

impl InternalPath {
    /// Every path.
    pub const ALL: [InternalPath; 8] = [
        InternalPath::Enroll,
        InternalPath::ServerKeyGen,
        InternalPath::CaCerts,
        InternalPath::CsrAttrs,
        InternalPath::BrskiRequestVoucher,
        InternalPath::BrskiVoucherStatus,
        InternalPath::BrskiEnrollStatus,
        InternalPath::BrskiRequestAuditLog,
    ];

    /// The path.
    pub fn as_str(self) -> &'static str {
        match self {
            InternalPath::Enroll => ENROLL_PATH,
            InternalPath::ServerKeyGen => SERVERKEYGEN_PATH,
            InternalPath::CaCerts => CACERTS_PATH,
            InternalPath::CsrAttrs => CSRATTRS_PATH,
            InternalPath::BrskiRequestVoucher => BRSKI_REQUESTVOUCHER_PATH,
            InternalPath::BrskiVoucherStatus => BRSKI_VOUCHER_STATUS_PATH,
            InternalPath::BrskiEnrollStatus => BRSKI_ENROLLSTATUS_PATH,
            InternalPath::BrskiRequestAuditLog => BRSKI_REQUESTAUDITLOG_PATH,
        }
    }

    /// The internal path `path` is (exact; no query), if any.
    pub fn parse(path: &str) -> Option<InternalPath> {
        InternalPath::ALL.into_iter().find(|p| p.as_str() == path)
    }

    /// The methods the control plane accepts on this path.
    pub fn methods(self) -> &'static [Method] {
        match self {
            InternalPath::CaCerts | InternalPath::CsrAttrs => &[Method::Get],
            InternalPath::BrskiRequestAuditLog => &[Method::Get, Method::Post],
            _ => &[Method::Post],
        }
    }

    /// EST or BRSKI.
    pub fn protocol(self) -> Protocol {
        match self {
            InternalPath::Enroll
            | InternalPath::ServerKeyGen
            | InternalPath::CaCerts
            | InternalPath::CsrAttrs => Protocol::Est,
            _ => Protocol::Brski,
        }
    }
}

impl fmt::Display for InternalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InternalPath {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        InternalPath::parse(s).ok_or_else(|| UnknownName(s.to_string()))
    }
}

/// How the filter reads a control-plane answer to one [`Operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerClass {
    /// No `:status`: the call failed or timed out.
    NoAnswer,
    /// 200: the body is the answer.
    Ok,
    /// 202 + `retry-after`: accepted and pending (enrolment only).
    Pending,
    /// 307 + `location`: go to the owner's registrar (requestvoucher only).
    Redirect,
    /// 429 + `retry-after` + a reason: the caller's own limit.
    TooManyRequests,
    /// 503 + `retry-after`: busy or a dependency unavailable.
    Busy,
    /// Another 4xx with a `text/plain` reason that may be passed on.
    ClientError(u32),
    /// 500: an internal error, detail for the log only.
    InternalError,
    /// Anything else (502, 504, 1xx, other 2xx and 3xx, 202 or 307 where the operation does
    /// not take them): the control plane failed; detail for the log only.
    Unexpected(u32),
}

/// The `:status` of an answer as a number, if it is one.
pub fn parse_status(status: Option<&[u8]>) -> Option<u32> {
    status
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
}

/// The class of the answer `status` (the raw `:status`, `None` when the call got none) to `op`.
pub fn classify(op: Operation, status: Option<&[u8]>) -> AnswerClass {
    match parse_status(status) {
        None => AnswerClass::NoAnswer,
        Some(200) => AnswerClass::Ok,
        Some(202) if op.may_be_pending() => AnswerClass::Pending,
        Some(307) if op.may_redirect() => AnswerClass::Redirect,
        Some(429) => AnswerClass::TooManyRequests,
        Some(503) => AnswerClass::Busy,
        Some(s @ 400..=499) => AnswerClass::ClientError(s),
        Some(500) => AnswerClass::InternalError,
        Some(s) => AnswerClass::Unexpected(s),
    }
}

/// `retry-after` as delay-seconds (RFC 9110 §10.2.3), clamped to 1 ..= [`MAX_RETRY_AFTER_S`];
/// anything else (absent, an HTTP date, garbage) gives [`DEFAULT_RETRY_AFTER_S`].
pub fn retry_after_seconds(value: Option<&[u8]>) -> u32 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|s| s.clamp(1, MAX_RETRY_AFTER_S))
        .unwrap_or(DEFAULT_RETRY_AFTER_S)
}

/// A `text/plain` reason fit to pass on to a client: UTF-8, not empty once trimmed, at most
/// [`MAX_REASON_BYTES`], no control characters but `\n` (and `\t` for EST, as the EST edge
/// has always let through).
pub fn client_reason(protocol: Protocol, body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let allowed =
        |c: char| !c.is_control() || c == '\n' || (c == '\t' && protocol == Protocol::Est);
    (!text.is_empty() && text.len() <= MAX_REASON_BYTES && text.chars().all(allowed))
        .then_some(text)
}

/// A 307 `location` fit to pass on to a pledge: an absolute `https://` URL with a non-empty
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

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_that_are_passed_on_and_those_that_are_not() {
        use super::request_id_ok;
        assert!(request_id_ok("3f2c8a1e-6b1d-4c6a-9d55-0c8f2b7e9a10"));
        assert!(request_id_ok("trace:abc.DEF_1"));
        assert!(!request_id_ok(""));
        assert!(!request_id_ok("has space"));
        assert!(!request_id_ok("line\nbreak"));
        assert!(!request_id_ok("quote\"json"));
        assert!(!request_id_ok(&"a".repeat(129)));
        assert!(request_id_ok(&"a".repeat(128)));
    }

    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
            assert_eq!(op.to_string().parse::<Operation>(), Ok(op));
            assert_eq!(op.path().protocol(), op.protocol());
            assert!(op.path().methods().contains(&op.method()), "{op}");
        }
        for p in InternalPath::ALL {
            assert_eq!(InternalPath::parse(p.as_str()), Some(p));
            assert!(p.as_str().starts_with("/estuary/v1/"));
        }
        assert_eq!(Operation::parse("SimpleEnroll"), None);
        assert!("nope".parse::<Operation>().is_err());
        assert_eq!(InternalPath::parse("/estuary/v1/enroll?x"), None);
        assert_eq!(
            Operation::parse_enroll_header(OP_SIMPLEREENROLL),
            Some(Operation::SimpleReenroll)
        );
        assert_eq!(Operation::parse_enroll_header("cacerts"), None);
        assert_eq!(
            Operation::RequestVoucher.path().as_str(),
            "/estuary/v1/brski/requestvoucher"
        );
        assert!(!Operation::RequestAuditLog.has_body());
        assert_eq!(Operation::CsrAttrs.method().as_str(), "GET");
        for est in EstOperation::ALL {
            match Operation::from_est(est) {
                Some(op) => assert_eq!(op.est_operation(), Some(est)),
                None => assert_eq!(est, EstOperation::FullCmc),
            }
        }
        assert_eq!(Operation::RequestVoucher.est_operation(), None);
    }

    #[test]
    fn answer_classes() {
        use AnswerClass::*;
        let c = |op, s: &str| classify(op, Some(s.as_bytes()));
        assert_eq!(classify(Operation::CaCerts, None), NoAnswer);
        assert_eq!(c(Operation::CaCerts, "abc"), NoAnswer);
        assert_eq!(c(Operation::CaCerts, " 200 "), Ok);
        assert_eq!(c(Operation::SimpleEnroll, "202"), Pending);
        assert_eq!(c(Operation::ServerKeyGen, "202"), Pending);
        assert_eq!(c(Operation::CaCerts, "202"), Unexpected(202));
        assert_eq!(c(Operation::RequestVoucher, "307"), Redirect);
        assert_eq!(c(Operation::VoucherStatus, "307"), Unexpected(307));
        assert_eq!(c(Operation::SimpleEnroll, "307"), Unexpected(307));
        assert_eq!(c(Operation::RequestVoucher, "429"), TooManyRequests);
        assert_eq!(c(Operation::RequestVoucher, "503"), Busy);
        assert_eq!(c(Operation::RequestVoucher, "404"), ClientError(404));
        assert_eq!(c(Operation::RequestVoucher, "500"), InternalError);
        assert_eq!(c(Operation::RequestVoucher, "504"), Unexpected(504));
    }

    #[test]
    fn retry_after_reasons_and_locations() {
        assert_eq!(retry_after_seconds(Some(b" 42 ")), 42);
        assert_eq!(retry_after_seconds(Some(b"0")), 1);
        assert_eq!(retry_after_seconds(Some(b"999999")), MAX_RETRY_AFTER_S);
        assert_eq!(
            retry_after_seconds(Some(b"Wed, 21 Oct 2015")),
            DEFAULT_RETRY_AFTER_S
        );
        assert_eq!(retry_after_seconds(None), DEFAULT_RETRY_AFTER_S);
        assert_eq!(client_reason(Protocol::Est, b" no\n"), Some("no"));
        assert_eq!(client_reason(Protocol::Est, b"a\tb"), Some("a\tb"));
        assert_eq!(client_reason(Protocol::Brski, b"a\tb"), None);
        assert_eq!(client_reason(Protocol::Brski, b"\x00x"), None);
        assert_eq!(client_reason(Protocol::Brski, b"  "), None);
        assert_eq!(client_reason(Protocol::Brski, &[b'a'; 1025]), None);
        assert_eq!(
            redirect_location(Some(b"https://r.example/x")),
            Some("https://r.example/x")
        );
        assert_eq!(redirect_location(Some(b"http://r.example/x")), None);
        assert_eq!(redirect_location(Some(b"https:///x")), None);
    }
}
