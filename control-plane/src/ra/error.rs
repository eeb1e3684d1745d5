//! Why an enrolment got no certificate: the RA core's one error type. It speaks no protocol;
//! each front end owns one exhaustive map from it to its wire answer (`est::api`,
//! `teap::server`).
use estuary_proto::csr::CsrError;
use estuary_proto::names::NameError;
use estuary_proto::policy::PolicyError;

use crate::config::EnrollConfig;
use crate::ra::acme::problem::{whole_seconds, IssueError};
use crate::ra::failure::{Failure, FailureKind};
use crate::ra::keygen::KeyGenError;
use crate::ra::store::StoreError;

/// Why an enrolment got no certificate.
#[derive(Debug, thiserror::Error)]
pub enum RaError {
    /// The CSR is not a valid, correctly self-signed PKCS#10 of a supported key.
    #[error("bad CSR: {0}")]
    BadCsr(#[from] CsrError),
    /// The device may not ask for this.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The serial does not make a valid name under the parent domain.
    #[error("bad device name: {0}")]
    Name(#[from] NameError),
    /// Redis is down.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ACME issuance failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// A failure recorded by the replica that ran the order.
    #[error("{}", .0.reason)]
    Remembered(Failure),
    /// The device has caused `limit` new orders in the current window (seed §8.1).
    #[error("this device has requested {limit} new certificates within {window_s} s, the most allowed; send the same CSR again, or a new one after {retry_after_s} s")]
    DeviceLimit {
        /// The configured limit.
        limit: u32,
        /// The window, in seconds.
        window_s: u64,
        /// Seconds until the window ends.
        retry_after_s: u64,
    },
    /// This replica runs `enroll.max_inflight_orders` issuances and `enroll.max_queued_orders`
    /// more wait for a turn (seed §8.1), or the wait for a turn outlasted `acme.order_timeout_s`.
    #[error("too many certificate orders in progress; retry later")]
    Busy,
    /// The EST label names no configured CA (`[[acme.labels]]`).
    #[error("the EST label {0:?} is not configured on this server")]
    UnknownLabel(String),
    /// Server-side key generation: the RA could not make the key or its CSR (names no key
    /// material).
    #[error(transparent)]
    KeyGen(#[from] KeyGenError),
}

impl RaError {
    /// The kind of a failed issuance (live or remembered); `None` for errors before any order.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            Self::Issue(e) => Some(e.failure_kind()),
            Self::Remembered(f) => Some(f.kind),
            Self::BadCsr(_)
            | Self::Policy(_)
            | Self::Name(_)
            | Self::Store(_)
            | Self::DeviceLimit { .. }
            | Self::Busy
            | Self::UnknownLabel(_)
            | Self::KeyGen(_) => None,
        }
    }

    /// A condition that passes: the same request may well succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(_) | Self::Busy => true,
            Self::Issue(_) | Self::Remembered(_) => {
                self.failure_kind().is_some_and(FailureKind::is_transient)
            }
            Self::BadCsr(_)
            | Self::Policy(_)
            | Self::Name(_)
            | Self::DeviceLimit { .. }
            | Self::UnknownLabel(_)
            | Self::KeyGen(_) => false,
        }
    }

    /// The request itself was refused (its CSR, its name, or the device's rate), rather than
    /// the RA or the CA failing: counted as `rejected`, not `failed`.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::BadCsr(_)
            | Self::Policy(_)
            | Self::Name(_)
            | Self::DeviceLimit { .. }
            | Self::UnknownLabel(_) => true,
            Self::Store(_) | Self::Busy | Self::KeyGen(_) => false,
            Self::Issue(_) | Self::Remembered(_) => matches!(
                self.failure_kind(),
                Some(
                    FailureKind::CsrRefused
                        | FailureKind::IdentifierRefused
                        | FailureKind::CaaForbids
                )
            ),
        }
    }

    /// Seconds the device should wait before it tries again, if waiting helps.
    pub fn retry_after(&self, cfg: &EnrollConfig) -> Option<u64> {
        match self {
            Self::Issue(IssueError::CaUnavailable {
                retry_after: Some(d),
                ..
            }) => Some(d.as_secs().max(1)),
            Self::Issue(
                IssueError::CaBackoff { remaining: d }
                | IssueError::CaRateLimited {
                    retry_after: Some(d),
                    ..
                },
            ) => Some(whole_seconds(*d)),
            Self::DeviceLimit { retry_after_s, .. } => Some(*retry_after_s),
            _ if self.is_transient() => Some(cfg.unavailable_retry_after_s),
            _ => None,
        }
    }
}
