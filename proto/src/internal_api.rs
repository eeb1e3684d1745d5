//! The control plane's internal HTTP API that the edge filter calls.
//!
//! Constants only, so both sides agree on the wire. The caller authenticates with
//! `authorization: Bearer <token>`.
//!
//! - [`ENROLL_PATH`]: `POST`, body = raw DER PKCS#10 ([`crate::est::CT_PKCS10`]), headers
//!   [`HDR_DEVICE_SERIAL`], [`HDR_OPERATION`] ([`OP_SIMPLEENROLL`] or [`OP_SIMPLEREENROLL`]) and
//!   optionally [`HDR_LABEL`]. Answers: 200 with raw DER PKCS#7 certs-only
//!   ([`crate::est::CT_PKCS7_CERTS_ONLY`], not base64: the filter encodes); 202 with
//!   `retry-after: <seconds>`; 400 bad CSR, 403 policy, 409 conflict (text/plain reason, may be
//!   forwarded); 429/503 with `retry-after` (try later); 500/502 text/plain internal detail (the
//!   filter must not forward it).
//!
//!   Enrolment and [`CSRATTRS_PATH`] calls also carry the client certificate the edge verified:
//!   [`HDR_CLIENT_CERT`] (base64 DER, one line) and, when the client presented more,
//!   [`HDR_CLIENT_CHAIN`]. The control plane re-derives the device from them with
//!   [`crate::identity`] and its own copy of the trusted CAs, and answers 403 when the
//!   serial header disagrees, the issuer is not trusted, or the CSR is outside policy — a valid
//!   token alone obtains nothing.
//! - [`CACERTS_PATH`]: `GET` -> 200 raw DER PKCS#7 certs-only.
//! - [`CSRATTRS_PATH`]: `GET` with [`HDR_DEVICE_SERIAL`] -> 200 raw DER CsrAttrs
//!   ([`crate::est::CT_CSRATTRS`]).

/// Enrolment (simpleenroll and simplereenroll): `POST` a raw DER PKCS#10.
pub const ENROLL_PATH: &str = "/estuary/v1/enroll";
/// CA certificates: `GET` -> raw DER PKCS#7 certs-only.
pub const CACERTS_PATH: &str = "/estuary/v1/cacerts";
/// CSR attributes for one device: `GET` with [`HDR_DEVICE_SERIAL`] -> raw DER CsrAttrs.
pub const CSRATTRS_PATH: &str = "/estuary/v1/csrattrs";

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

/// [`HDR_OPERATION`] value for a first enrolment.
pub const OP_SIMPLEENROLL: &str = "simpleenroll";
/// [`HDR_OPERATION`] value for a re-enrolment.
pub const OP_SIMPLEREENROLL: &str = "simplereenroll";

/// Content type of the plain-text reasons in 4xx/5xx answers.
pub const CT_TEXT_PLAIN: &str = "text/plain; charset=utf-8";
