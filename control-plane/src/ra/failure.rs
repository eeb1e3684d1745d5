//! What an issuance that ended without a certificate means, in no protocol's terms: the kind
//! each front end maps to its own wire answer (`est::api`, `teap::server`), and what is kept in
//! Redis (`fail:<sha256(csr)>`) so that a retry on any replica hears the same.
use serde::{Deserialize, Serialize};

/// Why an issuance ended without a certificate.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The CA refused the CSR itself (RFC 8555 §6.7 `badCSR`).
    CsrRefused,
    /// The CA refused to issue for the name (`rejectedIdentifier`).
    IdentifierRefused,
    /// A CAA record forbids the CA to issue for the name (`caa`, RFC 8659).
    CaaForbids,
    /// The CA or the DNS primary refused otherwise, or the CA's answer was unusable: the
    /// operator's problem, not the device's.
    #[default]
    Issuance,
    /// The CA or the DNS primary was unavailable, or no turn to issue came in time: transient.
    Unavailable,
    /// Not finished within `acme.order_timeout_s`: abandoned, its order kept for the retry.
    Deadline,
    /// The issuance task ended without a result (a panic, or the runtime shutting down).
    Abandoned,
    /// The RA could not encode what the CA issued.
    Internal,
}

impl FailureKind {
    /// A condition that passes: the same request may well succeed later.
    pub fn is_transient(self) -> bool {
        match self {
            Self::Unavailable | Self::Deadline | Self::Abandoned => true,
            Self::CsrRefused
            | Self::IdentifierRefused
            | Self::CaaForbids
            | Self::Issuance
            | Self::Internal => false,
        }
    }
}

/// A failure remembered for a CSR.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "StoredFailure")]
pub struct Failure {
    /// Which kind of failure.
    pub kind: FailureKind,
    /// What went wrong, for the operator and (for the device's own mistakes) the device.
    pub reason: String,
}

/// A failure as found in Redis. Records written before the kind was typed carry the internal
/// API's `status` instead (400, 403, 500, 502, 503) and at most a coarse `kind`.
#[derive(Deserialize)]
struct StoredFailure {
    #[serde(default)]
    status: Option<u16>,
    reason: String,
    #[serde(default)]
    kind: FailureKind,
}

impl From<StoredFailure> for Failure {
    fn from(s: StoredFailure) -> Self {
        let kind = match (s.kind, s.status) {
            (FailureKind::Issuance, Some(400)) => FailureKind::CsrRefused,
            (FailureKind::Issuance, Some(403)) => FailureKind::IdentifierRefused,
            (FailureKind::Issuance, Some(500)) => FailureKind::Internal,
            (FailureKind::Issuance, Some(503)) => FailureKind::Unavailable,
            (kind, _) => kind,
        };
        Failure {
            kind,
            reason: s.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_round_trips_through_its_stored_json() {
        let f = Failure {
            kind: FailureKind::CaaForbids,
            reason: "CAA forbids".into(),
        };
        let json = serde_json::to_string(&f).expect("json");
        assert_eq!(json, r#"{"kind":"caa_forbids","reason":"CAA forbids"}"#);
        assert_eq!(serde_json::from_str::<Failure>(&json).expect("back"), f);
    }

    /// A record of the previous version (an HTTP status and a coarse kind) keeps its meaning.
    #[test]
    fn records_of_the_previous_version_keep_their_meaning() {
        for (json, kind) in [
            (
                r#"{"status":400,"reason":"r","kind":"issuance"}"#,
                FailureKind::CsrRefused,
            ),
            (
                r#"{"status":403,"reason":"r","kind":"issuance"}"#,
                FailureKind::IdentifierRefused,
            ),
            (
                r#"{"status":502,"reason":"r","kind":"issuance"}"#,
                FailureKind::Issuance,
            ),
            (
                r#"{"status":500,"reason":"r","kind":"issuance"}"#,
                FailureKind::Internal,
            ),
            (
                r#"{"status":503,"reason":"r","kind":"unavailable"}"#,
                FailureKind::Unavailable,
            ),
            (
                r#"{"status":503,"reason":"r","kind":"deadline"}"#,
                FailureKind::Deadline,
            ),
            (
                r#"{"status":503,"reason":"r","kind":"abandoned"}"#,
                FailureKind::Abandoned,
            ),
            (r#"{"status":502,"reason":"r"}"#, FailureKind::Issuance),
        ] {
            let f: Failure = serde_json::from_str(json).expect(json);
            assert_eq!(f.kind, kind, "{json}");
            assert_eq!(f.reason, "r");
        }
    }
}
