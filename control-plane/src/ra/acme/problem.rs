//! What can go wrong between us and the ACME CA, typed: RFC 8555 §6.7 problem types and the
//! failures of an issuance, with instant-acme's errors mapped onto them.
use std::time::Duration;

use crate::ra::dns::update::DnsError;
use crate::ra::failure::FailureKind;
use crate::ra::store::StoreError;

/// ACME problem types (RFC 8555 §6.7), typed; unknown ones are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemType {
    /// `badNonce`: retry with a fresh nonce.
    BadNonce,
    /// `rateLimited`
    RateLimited,
    /// `badCSR`: the CSR is unacceptable.
    BadCsr,
    /// `rejectedIdentifier`: the CA will not issue for this name.
    RejectedIdentifier,
    /// `unauthorized`
    Unauthorized,
    /// `caa`
    Caa,
    /// `dns`: the CA could not resolve the challenge record.
    Dns,
    /// `incorrectResponse`: the TXT value did not match.
    IncorrectResponse,
    /// `serverInternal`
    ServerInternal,
    /// `orderNotReady`: the order was not ready to finalize (e.g. an authorisation it relied
    /// on expired meanwhile); a fresh order may succeed.
    OrderNotReady,
    /// `connection`
    Connection,
    /// `accountDoesNotExist`: no account for this key (RFC 8555 §7.3.1, `onlyReturnExisting`).
    AccountDoesNotExist,
    /// `invalidProfile` (draft-ietf-acme-profiles): the newOrder named a profile the CA does
    /// not offer.
    InvalidProfile,
    /// Any other type, as given.
    Other(String),
}

impl ProblemType {
    /// Parses `urn:ietf:params:acme:error:<name>`.
    pub fn parse(urn: Option<&str>) -> Self {
        let name = urn
            .and_then(|u| u.strip_prefix("urn:ietf:params:acme:error:"))
            .unwrap_or_else(|| urn.unwrap_or(""));
        match name {
            "badNonce" => Self::BadNonce,
            "rateLimited" => Self::RateLimited,
            "badCSR" => Self::BadCsr,
            "rejectedIdentifier" => Self::RejectedIdentifier,
            "unauthorized" => Self::Unauthorized,
            "caa" => Self::Caa,
            "dns" => Self::Dns,
            "incorrectResponse" => Self::IncorrectResponse,
            "serverInternal" => Self::ServerInternal,
            "orderNotReady" => Self::OrderNotReady,
            "connection" => Self::Connection,
            "accountDoesNotExist" => Self::AccountDoesNotExist,
            "invalidProfile" => Self::InvalidProfile,
            other => Self::Other(other.to_string()),
        }
    }

    /// The type's name after `urn:ietf:params:acme:error:` (`badCSR`, …), as the CA wrote it.
    pub fn short_name(&self) -> &str {
        match self {
            Self::BadNonce => "badNonce",
            Self::RateLimited => "rateLimited",
            Self::BadCsr => "badCSR",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::Unauthorized => "unauthorized",
            Self::Caa => "caa",
            Self::Dns => "dns",
            Self::IncorrectResponse => "incorrectResponse",
            Self::ServerInternal => "serverInternal",
            Self::OrderNotReady => "orderNotReady",
            Self::Connection => "connection",
            Self::AccountDoesNotExist => "accountDoesNotExist",
            Self::InvalidProfile => "invalidProfile",
            Self::Other(name) => name,
        }
    }
}

/// Why an issuance did not produce a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA could not be reached, answered 5xx, rate-limited us, or kept refusing our nonces.
    #[error("ACME CA unavailable: {detail}")]
    CaUnavailable {
        /// What happened.
        detail: String,
        /// When the CA said to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// The CA answered `rateLimited` (RFC 8555 §6.7). [`crate::ra::acme::client::Acme::issue`] records a back-off that
    /// keeps every replica from sending the CA new orders until it ends, and puts its length
    /// in `retry_after`.
    #[error("the ACME CA rate-limited this account: {detail}")]
    CaRateLimited {
        /// The CA's detail.
        detail: String,
        /// The CA's `Retry-After` (or, from [`crate::ra::acme::client::Acme::issue`], the back-off recorded).
        retry_after: Option<Duration>,
    },
    /// A back-off after `rateLimited` holds at this CA (recorded by any replica): nothing was
    /// sent to the CA.
    #[error("the ACME CA rate-limited this account; no new orders for {} s", whole_seconds(*.remaining))]
    CaBackoff {
        /// The time the back-off still runs.
        remaining: Duration,
    },
    /// The CA refused the CSR or the name.
    #[error("ACME CA refused the request ({problem:?}): {detail}")]
    CaRejected {
        /// The problem type.
        problem: ProblemType,
        /// The CA's detail.
        detail: String,
    },
    /// The CA could not validate the DNS-01 record.
    #[error("ACME CA could not validate DNS-01 for {name}: {detail}")]
    ChallengeFailed {
        /// The identifier.
        name: String,
        /// The CA's detail.
        detail: String,
        /// The CA could not query our DNS (RFC 8555 `dns` or `connection` problem: a timeout,
        /// SERVFAIL — our primary was briefly unavailable), rather than finding a wrong record:
        /// transient, a fresh order may succeed.
        unreachable: bool,
    },
    /// The order did not complete within `acme.order_timeout_s`.
    #[error("ACME order {order_url} did not complete in time")]
    OrderTimeout {
        /// The order.
        order_url: String,
    },
    /// One HTTP exchange with the CA got no (complete) answer within `acme.request_timeout_ms`.
    #[error(transparent)]
    CaNoAnswer(#[from] NoAnswer),
    /// The whole issuance did not finish within `acme.order_timeout_s` and was abandoned; a
    /// stored order is kept for the retry to resume.
    #[error("the ACME CA did not complete the issuance within {} s; retry later", .after.as_secs())]
    Deadline {
        /// `acme.order_timeout_s`.
        after: Duration,
    },
    /// The DNS primary refused or did not answer the UPDATE.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The CA returned a chain that does not fit the CSR.
    #[error("ACME CA returned an unusable certificate: {0}")]
    BadChain(String),
    /// The CA offered no dns-01 challenge for a name.
    #[error("ACME CA offers no dns-01 challenge for {0}")]
    NoDnsChallenge(String),
    /// Redis failed while the order was in progress.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA's answer is not valid ACME (a required field missing, not JSON, no Location).
    #[error("the ACME CA's answer is not valid ACME: {0}")]
    CaProtocol(String),
    /// The configured profile is not in the directory's `meta.profiles`
    /// (draft-ietf-acme-profiles): no order was placed. The operator's to fix.
    #[error("the ACME CA does not advertise the configured profile {profile:?} (it offers: {offered}); no order placed")]
    ProfileNotOffered {
        /// `acme.profile` (or the label's).
        profile: String,
        /// The profiles the directory advertises, comma-separated (`none` if none).
        offered: String,
    },
}

impl IssueError {
    /// What the failure means, in no protocol's terms ([`FailureKind`]); each front end maps
    /// that to its wire answer.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            // The CA being slow or silent is not the device's fault: retry later.
            Self::CaUnavailable { .. }
            | Self::OrderTimeout { .. }
            | Self::CaNoAnswer(_)
            // RFC 8555 §6.7 rateLimited: the account's limit, not the device's doing.
            | Self::CaRateLimited { .. }
            | Self::CaBackoff { .. }
            | Self::Store(_) => FailureKind::Unavailable,
            Self::Deadline { .. } => FailureKind::Deadline,
            Self::CaRejected { problem, .. } => match problem {
                ProblemType::BadCsr => FailureKind::CsrRefused,
                ProblemType::RejectedIdentifier => FailureKind::IdentifierRefused,
                ProblemType::Caa => FailureKind::CaaForbids,
                ProblemType::BadNonce
                | ProblemType::RateLimited
                | ProblemType::Unauthorized
                | ProblemType::Dns
                | ProblemType::IncorrectResponse
                | ProblemType::ServerInternal
                | ProblemType::OrderNotReady
                | ProblemType::Connection
                | ProblemType::AccountDoesNotExist
                | ProblemType::InvalidProfile
                | ProblemType::Other(_) => FailureKind::Issuance,
            },
            Self::Dns(d) if !d.is_permanent() => FailureKind::Unavailable,
            // The CA could not query our DNS primary: not the device's doing, retry later.
            Self::ChallengeFailed {
                unreachable: true, ..
            } => FailureKind::Unavailable,
            Self::Dns(_)
            | Self::CaProtocol(_)
            | Self::ChallengeFailed { .. }
            | Self::BadChain(_)
            | Self::NoDnsChallenge(_)
            | Self::ProfileNotOffered { .. } => FailureKind::Issuance,
        }
    }

    /// Worth another attempt at once (a fresh order).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::CaUnavailable { retry_after, .. } => retry_after.is_none(),
            Self::CaNoAnswer(_) => true,
            Self::Dns(e) => !e.is_permanent(),
            // The CA could not reach our DNS primary: a fresh order may well succeed.
            Self::ChallengeFailed {
                unreachable: true, ..
            } => true,
            // The order went stale under us (e.g. the parent's pre-authorisation expired
            // between newOrder and finalize): place a fresh one.
            Self::CaRejected {
                problem: ProblemType::OrderNotReady,
                ..
            } => true,
            _ => false,
        }
    }
}

/// `d` in whole seconds, rounded up, at least 1: a `Retry-After` that does not come back early.
pub fn whole_seconds(d: Duration) -> u64 {
    d.as_secs()
        .saturating_add(u64::from(d.subsec_nanos() > 0))
        .max(1)
}

/// The typed error for an ACME problem document (RFC 8555 §6.7). `identifier` names the
/// subproblem's identifier when there is one.
pub(crate) fn problem_error(
    problem: ProblemType,
    detail: String,
    identifier: String,
) -> IssueError {
    match problem {
        ProblemType::BadNonce | ProblemType::ServerInternal => IssueError::CaUnavailable {
            detail: format!("{problem:?}: {detail}"),
            retry_after: None,
        },
        ProblemType::RateLimited => IssueError::CaRateLimited {
            detail,
            retry_after: None,
        },
        ProblemType::Dns
        | ProblemType::IncorrectResponse
        | ProblemType::Unauthorized
        | ProblemType::Connection => IssueError::ChallengeFailed {
            name: identifier,
            detail,
            unreachable: matches!(problem, ProblemType::Dns | ProblemType::Connection),
        },
        problem => IssueError::CaRejected { problem, detail },
    }
}

/// At most 500 characters of a text the CA chose (a problem's detail), for errors, logs and
/// the device: control and bidirectional-formatting characters become U+FFFD.
pub(crate) fn bounded(text: &str) -> String {
    text.chars()
        .take(500)
        .map(|c| match c {
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

pub(crate) fn from_acme(e: instant_acme::Error) -> IssueError {
    match e {
        instant_acme::Error::Api(p) => {
            let problem = ProblemType::parse(p.r#type.as_deref());
            let detail = bounded(p.detail.as_deref().unwrap_or_default());
            let identifier = p
                .subproblems
                .first()
                .and_then(|s| s.identifier.as_ref())
                .map(|i| bounded(&format!("{i:?}")))
                .unwrap_or_default();
            problem_error(problem, detail, identifier)
        }
        // A rateLimited problem, with its Retry-After, as our HTTP client hands it over.
        instant_acme::Error::Other(e) if e.is::<RateLimitedAnswer>() => {
            match e.downcast::<RateLimitedAnswer>() {
                Ok(r) => IssueError::CaRateLimited {
                    detail: r.detail,
                    retry_after: r.retry_after,
                },
                Err(e) => IssueError::CaUnavailable {
                    detail: e.to_string(),
                    retry_after: None,
                },
            }
        }
        // Our HTTP client's per-exchange timeout (acme_jws::AcmeHttp).
        instant_acme::Error::Other(e) if e.is::<NoAnswer>() => match e.downcast::<NoAnswer>() {
            Ok(n) => IssueError::CaNoAnswer(*n),
            Err(e) => IssueError::CaUnavailable {
                detail: e.to_string(),
                retry_after: None,
            },
        },
        instant_acme::Error::Timeout(_) => IssueError::CaUnavailable {
            detail: "timed out waiting for the CA".into(),
            retry_after: None,
        },
        // serde_json's error names what is missing or mistyped in the CA's answer.
        instant_acme::Error::Json(e) => {
            IssueError::CaProtocol(format!("the CA's answer does not parse: {e}"))
        }
        instant_acme::Error::Str(s) => IssueError::CaProtocol(s.to_string()),
        other => IssueError::CaUnavailable {
            detail: other.to_string(),
            retry_after: None,
        },
    }
}

/// The CA did not answer one HTTP exchange, body included, within `acme.request_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the ACME CA did not answer within {} ms", .0.as_millis())]
pub struct NoAnswer(pub Duration);

/// The CA answered `rateLimited` (RFC 8555 §6.7) to one of instant-acme's requests: the
/// problem's detail (bounded) and its `Retry-After`, which instant-acme's own error drops.
#[derive(Debug, thiserror::Error)]
#[error("rate limited: {detail}")]
pub struct RateLimitedAnswer {
    /// The problem's detail, bounded (`bounded`: at most 500 characters).
    pub detail: String,
    /// `Retry-After`, when given and readable.
    pub retry_after: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_are_bounded() {
        let huge = "ü\u{202e}\u{0}".repeat(100_000);
        let b = bounded(&huge);
        assert_eq!(b.chars().count(), 500);
        assert!(b.starts_with("ü\u{fffd}\u{fffd}ü"), "{b:?}");
        assert_eq!(bounded("short détail"), "short détail");
    }

    /// draft-ietf-acme-profiles: `invalidProfile` is the operator's problem (502), not the
    /// device's, and not worth an immediate retry.
    #[test]
    fn an_invalid_profile_is_an_issuance_failure() {
        let p = ProblemType::parse(Some("urn:ietf:params:acme:error:invalidProfile"));
        assert_eq!(p, ProblemType::InvalidProfile);
        let e = problem_error(p, "no such profile".into(), String::new());
        assert_eq!(e.failure_kind(), FailureKind::Issuance);
        assert!(!e.is_transient());
        let e = IssueError::ProfileNotOffered {
            profile: "tlsserver".into(),
            offered: "classic, shortlived".into(),
        };
        assert_eq!(e.failure_kind(), FailureKind::Issuance);
        assert!(e.to_string().contains("\"tlsserver\""), "{e}");
    }

    #[test]
    fn problem_types_parse_from_rfc8555_urns() {
        // RFC 8555 §6.7 table.
        assert_eq!(
            ProblemType::parse(Some("urn:ietf:params:acme:error:badNonce")),
            ProblemType::BadNonce
        );
        assert_eq!(
            ProblemType::parse(Some("urn:ietf:params:acme:error:rateLimited")),
            ProblemType::RateLimited
        );
        assert_eq!(
            ProblemType::parse(Some("urn:ietf:params:acme:error:badCSR")),
            ProblemType::BadCsr
        );
        assert_eq!(
            ProblemType::parse(Some("urn:ietf:params:acme:error:userActionRequired")),
            ProblemType::Other("userActionRequired".into())
        );
        assert_eq!(ProblemType::parse(None), ProblemType::Other(String::new()));
    }
}
