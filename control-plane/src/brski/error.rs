//! What can go wrong in a BRSKI exchange, and its one map to the internal API's HTTP status.
use axum::http::StatusCode;
use estuary_proto::identity::ManufacturerName;

/// Why a BRSKI request failed; [`BrskiError::status`] is the one map to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum BrskiError {
    /// No client certificate came from the edge.
    #[error("no client certificate")]
    NoClientCert,
    /// The body is not a verifiable CMS voucher request (RFC 8995 §5.5: 400).
    #[error("voucher request: {0}")]
    BadRequest(String),
    /// The request is well formed but refused by policy (§5.5: 403).
    #[error("{0}")]
    Forbidden(String),
    /// The MASA could not be reached (503 + Retry-After).
    #[error("MASA unavailable: {0}")]
    MasaUnavailable(String),
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
    BadVoucher(String),
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
    Store(String),
    /// Internal (signing) failure.
    #[error("internal: {0}")]
    Internal(String),
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
