//! What can go wrong in a BRSKI exchange, typed by cause, and its one map to the internal API's
//! HTTP status ([`BrskiError::status`]; the answer's body and Retry-After are
//! [`crate::brski::answer`]'s).
use axum::http::StatusCode;
use estuary_proto::cms_signed::CmsError;
use estuary_proto::identity::ManufacturerName;
use estuary_proto::voucher::{VerifyError, VoucherError};

use crate::ra::store::StoreError;

/// Why a BRSKI request failed.
#[derive(Debug, thiserror::Error)]
pub enum BrskiError {
    /// No (readable) client certificate came from the edge.
    #[error("no client certificate")]
    NoClientCert,
    /// The body is not what RFC 8995 asks for (§5.5: 400).
    #[error("voucher request: {0}")]
    BadRequest(#[from] BadRequest),
    /// Well formed, but refused by policy (§5.5: 403).
    #[error("{0}")]
    Forbidden(#[from] Refusal),
    /// The MASA could not be reached or is busy (503 + Retry-After).
    #[error("MASA unavailable: {0}")]
    MasaUnavailable(#[from] MasaUnavailable),
    /// The MASA refused (its 4xx, relayed).
    #[error("the MASA refused the voucher request (HTTP {status}): {reason}")]
    MasaRefused {
        /// Its status.
        status: u16,
        /// Its reason, if printable.
        reason: String,
    },
    /// The MASA answered something we must not hand to a pledge (502).
    #[error("bad voucher from the MASA: {0}")]
    BadVoucher(#[from] BadVoucher),
    /// Cloud registrar: no owner claims this pledge (draft-ietf-anima-brski-cloud §3.2: 404).
    #[error("no owner is known for serial {serial:?} of manufacturer \"{manufacturer}\"")]
    UnknownOwner {
        /// The `[[brski.manufacturers]]` entry that issued the IDevID.
        manufacturer: ManufacturerName,
        /// The IDevID's serialNumber.
        serial: String,
    },
    /// The pledge has made `limit` voucher requests in the window (RFC 6585 §4: 429).
    #[error("this pledge has made {limit} voucher requests within {window_s} s, the most allowed; retry after {retry_after_s} s")]
    TooManyRequests {
        /// `brski.voucher_requests_per_pledge`.
        limit: u32,
        /// `brski.voucher_window_s`.
        window_s: u64,
        /// Seconds until the window ends.
        retry_after_s: u64,
    },
    /// Redis failed.
    #[error("status store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The registrar could not build or sign its own request.
    #[error("internal: {0}")]
    Internal(#[from] Internal),
}

/// A request body that is not what RFC 8995 asks for.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    /// Not a CMS SignedData of a voucher request whose signature verifies (§5.5).
    #[error("{0}")]
    Cms(CmsError),
    /// The signed content is not voucher-request JSON.
    #[error("{0}")]
    Json(VoucherError),
    /// §3.3: a pledge voucher request asserts proximity.
    #[error("assertion must be \"proximity\" (RFC 8995 §3.3)")]
    NotProximity,
    /// The proximity-registrar-cert is not base64 of a certificate.
    #[error("{0}")]
    ProximityCert(VoucherError),
    /// A status report (§5.7, §5.9.4) that is not JSON.
    #[error("status is not JSON: {0}")]
    StatusNotJson(serde_json::Error),
    /// A status report without its boolean `status`.
    #[error("status report needs a boolean \"status\"")]
    StatusWithoutVerdict,
}

/// A well-formed request the registrar refuses (403).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// §5.5: the voucher request must be signed by the IDevID of the TLS connection.
    #[error("the voucher request is not signed by the certificate this TLS connection authenticated with")]
    NotSignedByClient,
    /// No `[[brski.manufacturers]]` CA issued the IDevID.
    #[error("unknown manufacturer: the IDevID's issuer is not accepted by this registrar")]
    UnknownManufacturer,
    /// The pledge meant another registrar.
    #[error("proximity-registrar-cert is not this registrar's certificate")]
    NotThisRegistrar,
    /// The IDevID carries no subject serialNumber.
    #[error("the IDevID has no subject serialNumber")]
    NoSerial,
    /// The request's serial-number is not the IDevID's.
    #[error("serial-number does not match the IDevID's serialNumber {0:?}")]
    SerialMismatch(String),
    /// Neither id-pe-masa-url nor a configured `masa_url`.
    #[error("no MASA known for this pledge (no id-pe-masa-url and no configured masa_url)")]
    NoMasa,
    /// The MASA URL cannot be requested.
    #[error("MASA URL {url:?} is unusable: {detail}")]
    MasaUrl {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// A status report from a certificate that names no device.
    #[error("the client certificate names no device")]
    NoDeviceName,
}

/// Why the MASA could not be used now.
#[derive(Debug, thiserror::Error)]
pub enum MasaUnavailable {
    /// It answered 503 or 429.
    #[error("MASA answered {0}")]
    Busy(u16),
    /// No connection, or the request failed.
    #[error("{url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the HTTP client said.
        detail: String,
    },
    /// The answer's body could not be read (or was too large).
    #[error("reading {url}: {detail}")]
    Unreadable {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// No complete answer within the deadline.
    #[error("{0}: no complete answer in time")]
    Timeout(String),
}

/// A MASA answer the registrar must not hand to a pledge.
#[derive(Debug, thiserror::Error)]
pub enum BadVoucher {
    /// An answer other than 200, 4xx, 429 or 503.
    #[error("MASA answered {status}: {reason}")]
    Status {
        /// Its status.
        status: u16,
        /// Its reason, if printable.
        reason: String,
    },
    /// The voucher does not verify or is not the one asked for (RFC 8995 §5.6).
    #[error("{0}")]
    Voucher(VerifyError),
    /// The audit log (§5.8) is not JSON.
    #[error("audit log is not JSON")]
    AuditLogNotJson,
}

/// The registrar's own failure.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// A cloud registrar's manufacturer without a name (refused at start-up; never expected).
    #[error("a cloud registrar's manufacturer has no name")]
    UnnamedManufacturer,
    /// The registrar voucher request could not be encoded.
    #[error("{0}")]
    Encode(VoucherError),
    /// It could not be signed.
    #[error("{0}")]
    Sign(CmsError),
}

impl BrskiError {
    /// The internal API status (RFC 8995 §5.5, §5.6).
    pub fn status(&self) -> StatusCode {
        match self {
            BrskiError::NoClientCert => StatusCode::UNAUTHORIZED,
            BrskiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            BrskiError::Forbidden(_) => StatusCode::FORBIDDEN,
            BrskiError::MasaUnavailable(_) | BrskiError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            BrskiError::MasaRefused { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN)
            }
            BrskiError::BadVoucher(_) => StatusCode::BAD_GATEWAY,
            BrskiError::UnknownOwner { .. } => StatusCode::NOT_FOUND,
            BrskiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            BrskiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
