//! Which manufacturers' IDevIDs this registration authority accepts for plain EST (pure).
//!
//! A pledge that got a voucher from a BRSKI cloud registrar carrying `est-domain`
//! (draft-ietf-anima-brski-cloud, "voucher with EST server") enrols with plain EST (RFC 7030),
//! authenticated by its IDevID alone. Envoy has checked the TLS chain against its trust store;
//! this policy narrows that down: the IDevID must be issued by one of the configured manufacturer
//! CAs, and its subject serialNumber must match that manufacturer's serial pattern. Certificates
//! Estuary issued (LDevIDs) are not subject to it.
//!
//! "Issued by" means name and signature (`estuary_proto::cms_signed::verify_issued_by`), either
//! directly, or through ONE intermediate: a certificate C of the XFCC `Chain` (the leaf left
//! out, at most [`crate::identity::MAX_CHAIN_CERTS`] considered) such that the configured CA
//! issued C and C issued the IDevID. Deeper chains are not followed. Path validation itself
//! (validity, basicConstraints, key usage) is Envoy's, done during the TLS handshake.

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
    /// DER of this manufacturer's CA: it issues the IDevIDs, or the intermediate CA that does.
    pub ca_der: Vec<u8>,
    /// The device serials (subject serialNumber, as written) this manufacturer may present.
    pub serial_pattern: SerialPattern,
}

/// Why an IDevID is not accepted (answered with 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManufacturerError {
    /// No configured CA issued the certificate, directly or through one intermediate.
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
/// An empty list accepts every IDevID (the policy is off); LDevIDs always pass. An entry's CA
/// counts as the issuer when it issued the IDevID directly or issued one of the IDevID's
/// `intermediates` that issued it. With several entries for one CA, any one whose pattern matches
/// admits the device; a refusal names the first.
pub fn admit(manufacturers: &[Manufacturer], identity: &Identity) -> Result<(), ManufacturerError> {
    let Identity::IDevId {
        cert,
        intermediates,
        ..
    } = identity
    else {
        return Ok(());
    };
    if manufacturers.is_empty() {
        return Ok(());
    }
    // `classify` refuses an IDevID without serialNumber before this runs.
    let serial = cert.subject_serial_number().unwrap_or_default();
    // The chain certificates that issued the leaf: worked out (once, for all entries) only when
    // some entry's CA did not issue the leaf directly, the common case costing no extra check.
    let leaf_issuers: std::cell::OnceCell<Vec<&[u8]>> = std::cell::OnceCell::new();
    let issued_by = |ca: &[u8]| {
        cms_signed::verify_issued_by(cert.der(), ca).is_ok()
            || leaf_issuers
                .get_or_init(|| {
                    intermediates
                        .iter()
                        .map(Vec::as_slice)
                        .filter(|c| cms_signed::verify_issued_by(cert.der(), c).is_ok())
                        .collect()
                })
                .iter()
                .any(|c| cms_signed::verify_issued_by(c, ca).is_ok())
    };
    let mut issuers = manufacturers
        .iter()
        .filter(|m| issued_by(&m.ca_der))
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

    /// An intermediate CA `cn` issued by `parent`.
    fn sub_ca(parent: &Ca, cn: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = p.signed_by(&key, &parent.issuer).unwrap().der().to_vec();
        Ca {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    /// `device` with these XFCC `Chain` certificates besides the leaf.
    fn with_chain(mut identity: Identity, chain: &[&Ca]) -> Identity {
        if let Identity::IDevId { intermediates, .. } = &mut identity {
            *intermediates = chain.iter().map(|c| c.der.clone()).collect();
        }
        identity
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
    fn an_intermediate_in_the_chain_links_the_idevid_to_the_ca() {
        let acme = ca("Acme IDevID CA");
        let sub = sub_ca(&acme, "Acme IDevID Issuing CA 1");
        let list = [entry("acme", &acme, "DEMO-*")];
        // Directly issued, with or without a chain.
        assert_eq!(admit(&list, &device(&acme, "DEMO-0001", &[])), Ok(()));
        assert_eq!(
            admit(&list, &with_chain(device(&acme, "DEMO-0001", &[]), &[&sub])),
            Ok(())
        );
        // Under the intermediate: accepted when it is in the chain, wherever.
        let other = ca("Other");
        let leaf = device(&sub, "DEMO-0002", &[]);
        assert_eq!(admit(&list, &with_chain(leaf.clone(), &[&sub])), Ok(()));
        assert_eq!(
            admit(&list, &with_chain(leaf.clone(), &[&other, &acme, &sub])),
            Ok(())
        );
        // The serial pattern still applies.
        assert!(matches!(
            admit(&list, &with_chain(device(&sub, "PROD-1", &[]), &[&sub])),
            Err(ManufacturerError::SerialNotAccepted { manufacturer, .. }) if manufacturer == "acme"
        ));
        // Missing from the chain: refused.
        assert_eq!(admit(&list, &leaf), Err(ManufacturerError::UnknownIssuer));
        assert_eq!(
            admit(&list, &with_chain(leaf, &[&acme, &other])),
            Err(ManufacturerError::UnknownIssuer)
        );
    }

    #[test]
    fn an_intermediate_of_another_ca_does_not_link() {
        let acme = ca("Acme IDevID CA");
        // Same name as the configured CA, another key: the signature decides.
        let impostor = ca("Acme IDevID CA");
        let sub = sub_ca(&impostor, "Acme IDevID Issuing CA 1");
        let list = [entry("acme", &acme, "DEMO-*")];
        let leaf = device(&sub, "DEMO-0003", &[]);
        assert_eq!(
            admit(&list, &with_chain(leaf.clone(), &[&sub])),
            Err(ManufacturerError::UnknownIssuer)
        );
        assert_eq!(
            admit(&list, &with_chain(leaf, &[&sub, &impostor])),
            Err(ManufacturerError::UnknownIssuer)
        );
        // An acme intermediate that did not issue the leaf does not help either.
        let acme_sub = sub_ca(&acme, "Acme IDevID Issuing CA 1");
        let leaf = device(&sub, "DEMO-0004", &[]);
        assert_eq!(
            admit(&list, &with_chain(leaf, &[&acme_sub, &sub])),
            Err(ManufacturerError::UnknownIssuer)
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
