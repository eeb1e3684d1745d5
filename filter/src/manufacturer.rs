//! Which manufacturers' IDevIDs this registration authority accepts for plain EST (pure).
//!
//! A pledge that got a voucher from a BRSKI cloud registrar carrying `est-domain`
//! (draft-ietf-anima-brski-cloud, "voucher with EST server") enrols with plain EST (RFC 7030),
//! authenticated by its IDevID alone. Envoy has checked the TLS chain against its trust store;
//! this policy narrows that down: the IDevID must be issued directly by one of the configured
//! manufacturer CAs, and its subject serialNumber must match that manufacturer's serial pattern.
//! Certificates Estuary issued (LDevIDs) are not subject to it.

use core::fmt;

use estuary_proto::cms_signed;
use estuary_proto::names::glob_match;

use crate::identity::Identity;

/// Longest serial pattern accepted in the configuration.
pub const MAX_PATTERN_CHARS: usize = 128;

/// A manufacturer's name: 1 to 64 of `A-Z a-z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManufacturerName(String);

impl ManufacturerName {
    /// Checks a name; `None` if it does not fit.
    pub fn parse(s: &str) -> Option<ManufacturerName> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| ManufacturerName(s.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ManufacturerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A glob over device serials (`estuary_proto::names::glob_match`: `*` any run, `?` one
/// character, the rest literal, case-sensitive, whole string): 1 to 128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPattern(String);

impl SerialPattern {
    /// Matches every serial.
    pub fn any() -> SerialPattern {
        SerialPattern("*".to_string())
    }

    /// Checks a pattern; `None` if it does not fit.
    pub fn parse(s: &str) -> Option<SerialPattern> {
        let ok =
            (1..=MAX_PATTERN_CHARS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| SerialPattern(s.to_string()))
    }

    /// Whether `serial` matches the whole pattern.
    pub fn matches(&self, serial: &str) -> bool {
        glob_match(&self.0, serial)
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One accepted manufacturer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manufacturer {
    /// Unique name, used in refusals and logs.
    pub name: ManufacturerName,
    /// DER of the CA certificate that issues this manufacturer's IDevIDs.
    pub ca_der: Vec<u8>,
    /// The device serials (subject serialNumber, as written) this manufacturer may present.
    pub serial_pattern: SerialPattern,
}

/// Why an IDevID is not accepted (answered with 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManufacturerError {
    /// No configured CA issued the certificate.
    #[error("the client certificate is not issued by a manufacturer this registration authority accepts")]
    UnknownIssuer,
    /// The issuer is known, but the serial is not one of its accepted serials.
    #[error(
        "serial {serial:?} is not accepted for manufacturer {manufacturer} (pattern {pattern:?})"
    )]
    SerialNotAccepted {
        /// The subject serialNumber of the client certificate.
        serial: String,
        /// The manufacturer that issued it.
        manufacturer: String,
        /// Its pattern.
        pattern: String,
    },
}

/// Decide whether `identity` may use plain EST under `manufacturers`.
///
/// An empty list accepts every IDevID (the policy is off); LDevIDs always pass. With several
/// entries for one CA, any one whose pattern matches admits the device; a refusal names the first.
pub fn admit(manufacturers: &[Manufacturer], identity: &Identity) -> Result<(), ManufacturerError> {
    let Identity::IDevId { cert, .. } = identity else {
        return Ok(());
    };
    if manufacturers.is_empty() {
        return Ok(());
    }
    // `classify` refuses an IDevID without serialNumber before this runs.
    let serial = cert.subject_serial_number().unwrap_or_default();
    let mut issuers = manufacturers
        .iter()
        .filter(|m| cms_signed::verify_issued_by(cert.der(), &m.ca_der).is_ok())
        .peekable();
    let first = issuers.peek().cloned();
    if issuers.any(|m| m.serial_pattern.matches(serial)) {
        return Ok(());
    }
    match first {
        None => Err(ManufacturerError::UnknownIssuer),
        Some(m) => Err(ManufacturerError::SerialNotAccepted {
            serial: serial.to_string(),
            manufacturer: m.name.to_string(),
            pattern: m.serial_pattern.as_str().to_string(),
        }),
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
    use crate::identity::{classify, Need};
    use estuary_proto::cert::CertSummary;
    use estuary_proto::names::ParentDomain;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };

    struct Ca {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = p.self_signed(&key).unwrap().der().to_vec();
        Ca {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    fn parent() -> ParentDomain {
        "iot.example.test".parse().unwrap()
    }

    fn device(ca: &Ca, serial: &str, sans: &[&str]) -> Identity {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        let summary = CertSummary::from_der(cert.der()).unwrap();
        classify(summary, Need::Any, &parent()).unwrap()
    }

    fn entry(name: &str, ca: &Ca, pattern: &str) -> Manufacturer {
        Manufacturer {
            name: ManufacturerName::parse(name).unwrap(),
            ca_der: ca.der.clone(),
            serial_pattern: SerialPattern::parse(pattern).unwrap(),
        }
    }

    #[test]
    fn issuer_and_serial_decide() {
        let acme = ca("Acme IDevID CA");
        let other = ca("Other IDevID CA");
        let list = [entry("acme", &acme, "DEMO-*")];
        assert_eq!(admit(&list, &device(&acme, "DEMO-0001", &[])), Ok(()));
        assert_eq!(
            admit(&list, &device(&other, "DEMO-0001", &[])),
            Err(ManufacturerError::UnknownIssuer)
        );
        let e = admit(&list, &device(&acme, "demo-0001", &[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "serial \"demo-0001\" is not accepted for manufacturer acme (pattern \"DEMO-*\")"
        );
    }

    #[test]
    fn same_ca_twice_any_pattern_admits() {
        let acme = ca("Acme IDevID CA");
        let list = [
            entry("acme-demo", &acme, "DEMO-*"),
            entry("acme-lab", &acme, "LAB-??"),
        ];
        assert_eq!(admit(&list, &device(&acme, "LAB-01", &[])), Ok(()));
        assert_eq!(admit(&list, &device(&acme, "DEMO-9", &[])), Ok(()));
        assert!(matches!(
            admit(&list, &device(&acme, "LAB-001", &[])),
            Err(ManufacturerError::SerialNotAccepted { manufacturer, .. }) if manufacturer == "acme-demo"
        ));
    }

    #[test]
    fn no_policy_and_ldevids_pass() {
        let acme = ca("Acme IDevID CA");
        let other = ca("Estuary CA");
        assert_eq!(admit(&[], &device(&other, "X-1", &[])), Ok(()));
        let list = [entry("acme", &acme, "DEMO-*")];
        let ldevid = device(&other, "X-1", &["x-1.iot.example.test"]);
        assert!(matches!(ldevid, Identity::LDevId { .. }));
        assert_eq!(admit(&list, &ldevid), Ok(()));
    }

    #[test]
    fn names_and_patterns_are_checked() {
        assert!(ManufacturerName::parse("acme_Co-1").is_some());
        assert!(ManufacturerName::parse("").is_none());
        assert!(ManufacturerName::parse("a b").is_none());
        assert!(ManufacturerName::parse(&"a".repeat(64)).is_some());
        assert!(ManufacturerName::parse(&"a".repeat(65)).is_none());
        assert!(SerialPattern::parse("DEMO-*").is_some());
        assert!(SerialPattern::parse("").is_none());
        assert!(SerialPattern::parse("a b").is_none());
        assert!(SerialPattern::parse("a\n").is_none());
        assert!(SerialPattern::parse(&"*".repeat(129)).is_none());
        assert!(SerialPattern::any().matches("anything"));
    }
}
