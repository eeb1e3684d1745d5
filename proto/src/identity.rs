//! Who may get which name: a client certificate becomes a device identity, decided by **who
//! issued it** (pure; the edge filter, the control plane and the TEAP server all use this).
//!
//! - An **LDevID** is a certificate issued by the ACME CA Estuary enrols from: one of
//!   [`TrustPolicy::acme_issuers`] (its roots and/or issuing intermediates) signed it, directly
//!   or through one CA certificate of the chain the client presented. It must carry exactly one
//!   device name `<label>.<parent domain>` as dNSName.
//! - An **IDevID** is a certificate issued, directly or through one CA certificate of the
//!   presented chain, by a configured [`Manufacturer`]'s CA. Its subject serialNumber must match
//!   that manufacturer's [`SerialPattern`]; the device's name is then
//!   `<name_prefix><serial, lower-cased>.<parent domain>` ([`Manufacturer::label_for`]).
//! - Anything else is refused: what a certificate merely *says* (a dNSName, a serialNumber)
//!   never suffices.
//!
//! "Issued by" is name and signature ([`cms_signed::verify_issued_by`]); an intermediate taken
//! from the presented chain must also say cA TRUE. Path validation itself (validity dates, key
//! usage, the rest of basicConstraints) is the TLS layer's: Envoy's handshake, or rustls in TEAP.
//!
//! **One namespace, no collisions.** A device name is derived from (manufacturer, serial) by
//! prefixing the lower-cased serial with the manufacturer's `name_prefix` (empty by default).
//! [`check_namespaces`] refuses, at start-up, two manufacturers whose prefixed, lower-cased
//! serial patterns can produce the same label, so two devices of different manufacturers never
//! meet on one name. Within one manufacturer, serials that differ only in letter case name the
//! same device (the manufacturer's CA is the authority over its own serials and could issue the
//! same serial twice anyway); serials that differ otherwise never share a name.

use core::fmt;

use crate::cert::CertSummary;
use crate::cms_signed;
use crate::csr::SignatureMemo;
use crate::names::{glob_match, DeviceName, DeviceSerial, ParentDomain};

/// At most this many certificates of the presented chain (the leaf not counted) are
/// considered; the rest are ignored. It bounds the signature checks made per request.
pub const MAX_CHAIN_CERTS: usize = 4;

/// Longest serial pattern accepted in a configuration.
pub const MAX_PATTERN_CHARS: usize = 128;

/// Longest name prefix accepted in a configuration.
pub const MAX_PREFIX_CHARS: usize = 32;

/// A manufacturer's name: 1 to 64 of `A-Z a-z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// A glob over device serials ([`glob_match`]: `*` any run, `?` one character, the rest
/// literal, case-sensitive, whole string): 1 to 128 visible ASCII characters.
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

/// What goes in front of a manufacturer's serials in device names: 1 to 32 of `a-z 0-9 -`,
/// not starting with `-` (e.g. `acme-`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamePrefix(String);

impl NamePrefix {
    /// Checks a prefix (lower case only, so that names need no folding); `None` if it does
    /// not fit. The empty prefix is [`NamePrefix::default`].
    pub fn parse(s: &str) -> Option<NamePrefix> {
        let ok = (1..=MAX_PREFIX_CHARS).contains(&s.len())
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| NamePrefix(s.to_string()))
    }

    /// The prefix ("" when none).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a configuration says when a manufacturer's name is unusable.
pub const NAME_RULE: &str = "a manufacturer name is 1 to 64 of A-Z a-z 0-9 - _";
/// What a configuration says when a serial pattern is unusable.
pub const PATTERN_RULE: &str =
    "must be 1 to 128 visible ASCII characters (* any run, ? one character, the rest literal)";
/// What a configuration says when a name prefix is unusable.
pub const PREFIX_RULE: &str = "must be 1 to 32 of a-z 0-9 - (lower case), not starting with -";

/// A configured `serial_pattern`, `*` when absent; the rule it breaks otherwise.
pub fn serial_pattern_or_any(s: Option<&str>) -> Result<SerialPattern, &'static str> {
    s.map_or(Some(SerialPattern::any()), SerialPattern::parse)
        .ok_or(PATTERN_RULE)
}

/// A configured `name_prefix`, none when absent; the rule it breaks otherwise.
pub fn name_prefix_or_none(s: Option<&str>) -> Result<NamePrefix, &'static str> {
    s.map_or(Some(NamePrefix::default()), NamePrefix::parse)
        .ok_or(PREFIX_RULE)
}

/// One manufacturer whose IDevIDs this registration authority accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manufacturer {
    /// Unique name, used in refusals and logs.
    pub name: ManufacturerName,
    /// DER of this manufacturer's CA: it issues the IDevIDs, or the intermediate CA that does.
    pub ca_der: Vec<u8>,
    /// The device serials (subject serialNumber, as written) this manufacturer may present.
    pub serial_pattern: SerialPattern,
    /// Put in front of the lower-cased serial in the device's name.
    pub name_prefix: NamePrefix,
}

impl Manufacturer {
    /// The DNS label of this manufacturer's device `serial`: prefix + lower-cased serial.
    pub fn label_for(&self, serial: &str) -> Result<DeviceSerial, IdentityError> {
        let label = format!("{}{}", self.name_prefix.as_str(), serial);
        DeviceSerial::parse(&label).map_err(|e| IdentityError::BadSerialNumber {
            serial: serial.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Who may be a client, and what they may be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Devices are named `<label>.<parent>`.
    pub parent: ParentDomain,
    /// Whose IDevIDs are accepted.
    pub manufacturers: Vec<Manufacturer>,
    /// DER of the ACME CA's certificates that issue LDevIDs (roots and/or intermediates).
    pub acme_issuers: Vec<Vec<u8>>,
}

/// What the operation needs from the client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A first enrolment: the manufacturer IDevID.
    IDevId,
    /// A re-enrolment: the LDevID Estuary had issued (RFC 7030 §4.2.2).
    LDevId,
    /// Either kind (csrattrs, TEAP): the device is what matters.
    Any,
}

/// An authenticated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A manufacturer certificate.
    IDevId {
        /// The manufacturer whose CA issued it.
        manufacturer: ManufacturerName,
        /// The subject serialNumber, as written in the certificate.
        serial: String,
        /// The device's label (prefix + lower-cased serial).
        label: DeviceSerial,
        /// The certificate.
        cert: Box<CertSummary>,
    },
    /// A certificate the ACME CA issued to this device.
    LDevId {
        /// The device's name under the parent domain.
        name: DeviceName,
        /// The certificate (re-enrolment compares the CSR against it).
        cert: Box<CertSummary>,
    },
}

impl Identity {
    /// The device's label (the first DNS label of its name).
    pub fn label(&self) -> &DeviceSerial {
        match self {
            Identity::IDevId { label, .. } => label,
            Identity::LDevId { name, .. } => name.serial(),
        }
    }

    /// The client certificate.
    pub fn cert(&self) -> &CertSummary {
        match self {
            Identity::IDevId { cert, .. } | Identity::LDevId { cert, .. } => cert,
        }
    }

    /// The device's name under `parent`.
    pub fn name(&self, parent: &ParentDomain) -> Result<DeviceName, crate::names::NameError> {
        DeviceName::new(self.label(), parent)
    }
}

/// Why a client certificate does not authenticate a device. Every variant is the client's
/// problem (answered 403 by EST, a TEAP Error TLV, …); the text is fit for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not issued by the ACME CA nor by any configured manufacturer CA.
    #[error("the client certificate is issued neither by the ACME CA this registration authority enrols from nor by a manufacturer it accepts")]
    UnknownIssuer,
    /// Issued by the ACME CA but naming no single device under the parent domain.
    #[error("the client certificate was issued by the ACME CA but does not name exactly one device under {parent}")]
    LDevIdWithoutDeviceName {
        /// The parent domain.
        parent: String,
    },
    /// A first enrolment with an LDevID.
    #[error("simpleenroll needs the manufacturer certificate (IDevID); this is an Estuary-issued certificate for {0}: use simplereenroll")]
    LDevIdForEnroll(String),
    /// A re-enrolment with an IDevID.
    #[error("simplereenroll needs the certificate the ACME CA issued to this device (LDevID); this client certificate is a manufacturer certificate")]
    NotLDevId,
    /// An IDevID without subject serialNumber.
    #[error("the client certificate has no subject serialNumber, so it names no device")]
    NoSerialNumber,
    /// A serialNumber that cannot make a DNS label.
    #[error("the client certificate's subject serialNumber {serial:?} cannot be used as a device name: {reason}")]
    BadSerialNumber {
        /// The serialNumber as written.
        serial: String,
        /// Why.
        reason: String,
    },
    /// The manufacturer is known, but the serial is not one of its accepted serials.
    #[error(
        "serial {serial:?} is not accepted for manufacturer {manufacturer} (pattern {pattern:?})"
    )]
    SerialNotAccepted {
        /// The subject serialNumber.
        serial: String,
        /// The manufacturer that issued it.
        manufacturer: String,
        /// Its pattern.
        pattern: String,
    },
    /// The client certificate could not be read.
    #[error("the client certificate is not a readable X.509 certificate")]
    Unreadable,
}

/// Who issued a leaf: a CA directly, or through one CA certificate of the presented chain. The
/// chain is read, and its certificates checked as the leaf's issuer, at most once and only when
/// some CA did not issue the leaf directly (the common case costs one signature check, or none
/// when a memo vouches for the pair).
struct LeafIssuers<'a, 'm> {
    leaf: &'a [u8],
    chain: &'a [Vec<u8>],
    /// Intermediates the server knows (see [`authenticate_with_known`]): path-building only.
    known: &'a [Vec<u8>],
    /// The chain's CA certificates that issued the leaf.
    parents: core::cell::OnceCell<Vec<Vec<u8>>>,
    /// Remembers pairs whose signature verified ([`cms_signed::verify_issued_by_memo`]).
    memo: core::cell::RefCell<Option<&'m mut dyn SignatureMemo>>,
}

impl<'a, 'm> LeafIssuers<'a, 'm> {
    fn new(
        leaf: &'a [u8],
        chain: &'a [Vec<u8>],
        known: &'a [Vec<u8>],
        memo: Option<&'m mut dyn SignatureMemo>,
    ) -> Self {
        Self {
            leaf,
            chain,
            known,
            parents: core::cell::OnceCell::new(),
            memo: core::cell::RefCell::new(memo),
        }
    }

    /// Whether `ca` signed `cert`.
    fn signed(&self, cert: &[u8], ca: &[u8]) -> bool {
        let mut memo = self.memo.borrow_mut();
        let memo: Option<&mut dyn SignatureMemo> = match memo.as_mut() {
            Some(m) => Some(&mut **m),
            None => None,
        };
        cms_signed::verify_issued_by_memo(cert, ca, memo).is_ok()
    }

    fn parents(&self) -> &[Vec<u8>] {
        self.parents.get_or_init(|| {
            self.chain
                .iter()
                .filter(|d| d.as_slice() != self.leaf)
                .take(MAX_CHAIN_CERTS)
                .chain(self.known.iter().take(MAX_KNOWN_INTERMEDIATES))
                .filter(|d| CertSummary::from_der(d).is_ok_and(|c| c.is_ca()))
                .filter(|d| self.signed(self.leaf, d))
                .cloned()
                .collect()
        })
    }

    /// Whether `ca` issued the leaf, directly or through one of [`Self::parents`].
    fn by(&self, ca: &[u8]) -> bool {
        self.signed(self.leaf, ca) || self.parents().iter().any(|p| self.signed(p, ca))
    }
}

/// Decide who the client is: `leaf` is its certificate (DER), `chain` what it presented besides
/// (DER, in any order; at most [`MAX_CHAIN_CERTS`] are looked at, unreadable ones skipped).
pub fn authenticate(
    policy: &TrustPolicy,
    leaf: &[u8],
    chain: &[Vec<u8>],
    need: Need,
) -> Result<Identity, IdentityError> {
    authenticate_with_known(policy, leaf, chain, &[], need)
}

/// The most server-known intermediates [`authenticate_with_known`] looks at.
pub const MAX_KNOWN_INTERMEDIATES: usize = 32;

/// [`authenticate`], with `known` intermediates added to what the client presented: the ACME
/// CA's intermediates the server learned from issued chains (draft-ietf-acme-integrations-17
/// `/cacerts`), so that a device presenting its end-entity certificate alone is recognised after
/// the CA moved to a new intermediate. They are not trusted: like a presented chain, one counts
/// only if it signed the leaf and was itself signed by a trusted issuer
/// ([`TrustPolicy::acme_issuers`] or a manufacturer CA). At most [`MAX_KNOWN_INTERMEDIATES`].
pub fn authenticate_with_known(
    policy: &TrustPolicy,
    leaf: &[u8],
    chain: &[Vec<u8>],
    known: &[Vec<u8>],
    need: Need,
) -> Result<Identity, IdentityError> {
    authenticate_memo(policy, leaf, chain, known, need, None)
}

/// [`authenticate_with_known`], where `memo` may vouch for a signature between these exact
/// certificates (it is then not verified again) and learns of every one that verifies
/// ([`cms_signed::verify_issued_by_memo`]). Everything else — which CA, the serial pattern, the
/// name, what the operation needs — is decided again every time.
pub fn authenticate_memo(
    policy: &TrustPolicy,
    leaf: &[u8],
    chain: &[Vec<u8>],
    known: &[Vec<u8>],
    need: Need,
    memo: Option<&mut dyn SignatureMemo>,
) -> Result<Identity, IdentityError> {
    let cert = CertSummary::from_der(leaf).map_err(|_| IdentityError::Unreadable)?;
    let leaf_issuers = LeafIssuers::new(leaf, chain, known, memo);

    if policy.acme_issuers.iter().any(|ca| leaf_issuers.by(ca)) {
        let mut names = cert
            .dns_names()
            .iter()
            .filter_map(|n| DeviceName::parse_under(n, &policy.parent).ok());
        let (Some(name), None, 1) = (names.next(), names.next(), cert.dns_names().len()) else {
            return Err(IdentityError::LDevIdWithoutDeviceName {
                parent: policy.parent.to_string(),
            });
        };
        return match need {
            Need::IDevId => Err(IdentityError::LDevIdForEnroll(name.to_string())),
            Need::LDevId | Need::Any => Ok(Identity::LDevId {
                name,
                cert: Box::new(cert),
            }),
        };
    }

    let mut issuers = policy
        .manufacturers
        .iter()
        .filter(|m| leaf_issuers.by(&m.ca_der))
        .peekable();
    let Some(first) = issuers.peek().cloned() else {
        return Err(IdentityError::UnknownIssuer);
    };
    if need == Need::LDevId {
        return Err(IdentityError::NotLDevId);
    }
    let serial = cert
        .subject_serial_number()
        .ok_or(IdentityError::NoSerialNumber)?
        .to_string();
    let Some(m) = issuers.find(|m| m.serial_pattern.matches(&serial)) else {
        return Err(IdentityError::SerialNotAccepted {
            serial,
            manufacturer: first.name.to_string(),
            pattern: first.serial_pattern.as_str().to_string(),
        });
    };
    let label = m.label_for(&serial)?;
    Ok(Identity::IDevId {
        manufacturer: m.name.clone(),
        serial,
        label,
        cert: Box::new(cert),
    })
}

/// Two manufacturers that could give two devices the same name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manufacturers {first} and {second} can name the same device (prefix {first_prefix:?} + serials {first_pattern:?} and prefix {second_prefix:?} + serials {second_pattern:?} overlap after lower-casing): give them distinct name_prefix values or serial patterns that cannot meet")]
pub struct NamespaceOverlap {
    /// The earlier entry.
    pub first: String,
    /// Its prefix.
    pub first_prefix: String,
    /// Its pattern.
    pub first_pattern: String,
    /// The later entry.
    pub second: String,
    /// Its prefix.
    pub second_prefix: String,
    /// Its pattern.
    pub second_pattern: String,
}

/// Every pair of manufacturers whose device labels can coincide. Two entries with the same CA
/// and the same prefix are one namespace (a device matching both gets one name) and are not
/// reported.
pub fn check_namespaces(manufacturers: &[Manufacturer]) -> Vec<NamespaceOverlap> {
    let mut out = Vec::new();
    for (i, a) in manufacturers.iter().enumerate() {
        for b in manufacturers.iter().skip(i + 1) {
            if a.ca_der == b.ca_der && a.name_prefix == b.name_prefix {
                continue;
            }
            let la = label_glob(a);
            let lb = label_glob(b);
            if globs_intersect(&la, &lb) {
                out.push(NamespaceOverlap {
                    first: a.name.to_string(),
                    first_prefix: a.name_prefix.as_str().to_string(),
                    first_pattern: a.serial_pattern.as_str().to_string(),
                    second: b.name.to_string(),
                    second_prefix: b.name_prefix.as_str().to_string(),
                    second_pattern: b.serial_pattern.as_str().to_string(),
                });
            }
        }
    }
    out
}

/// The glob of a manufacturer's labels: prefix (never holds `*` or `?`) + lower-cased pattern.
fn label_glob(m: &Manufacturer) -> Vec<char> {
    m.name_prefix
        .as_str()
        .chars()
        .chain(m.serial_pattern.as_str().chars())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether some string matches both globs (`*` any run, `?` one character, else literal).
/// A search over position pairs: O(len(a) × len(b)) states, no recursion.
pub fn globs_intersect(a: &[char], b: &[char]) -> bool {
    let (n, m) = (a.len(), b.len());
    let idx = |i: usize, j: usize| i * (m + 1) + j;
    let mut seen = vec![false; (n + 1) * (m + 1)];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        let Some(slot) = seen.get_mut(idx(i, j)) else {
            continue;
        };
        if *slot {
            continue;
        }
        *slot = true;
        if i == n && j == m {
            return true;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        // A star may match nothing.
        if ca == Some('*') {
            stack.push((i + 1, j));
        }
        if cb == Some('*') {
            stack.push((i, j + 1));
        }
        // Both consume one character, if some character fits both.
        if let (Some(x), Some(y)) = (ca, cb) {
            let wild = |c: char| c == '*' || c == '?';
            if wild(x) || wild(y) || x == y {
                let ni = if x == '*' { i } else { i + 1 };
                let nj = if y == '*' { j } else { j + 1 };
                stack.push((ni, nj));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };

    struct Ca {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca_with(cn: &str, parent: Option<&Ca>, is_ca: bool) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if is_ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let der = match parent {
            None => p.self_signed(&key).unwrap().der().to_vec(),
            Some(par) => p.signed_by(&key, &par.issuer).unwrap().der().to_vec(),
        };
        Ca {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    fn ca(cn: &str) -> Ca {
        ca_with(cn, None, true)
    }

    fn leaf(ca: &Ca, serial: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(s) = serial {
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 5]), s);
        }
        p.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    }

    fn maker(name: &str, ca: &Ca, pattern: &str, prefix: &str) -> Manufacturer {
        Manufacturer {
            name: ManufacturerName::parse(name).unwrap(),
            ca_der: ca.der.clone(),
            serial_pattern: SerialPattern::parse(pattern).unwrap(),
            name_prefix: if prefix.is_empty() {
                NamePrefix::default()
            } else {
                NamePrefix::parse(prefix).unwrap()
            },
        }
    }

    fn policy(makers: Vec<Manufacturer>, acme: &[&Ca]) -> TrustPolicy {
        TrustPolicy {
            parent: "iot.example.test".parse().unwrap(),
            manufacturers: makers,
            acme_issuers: acme.iter().map(|c| c.der.clone()).collect(),
        }
    }

    #[test]
    fn idevid_and_ldevid_are_decided_by_issuer() {
        let mfr = ca("Acme IDevID CA");
        let acme = ca("ACME issuing CA");
        let p = policy(vec![maker("acme", &mfr, "*", "")], &[&acme]);
        let idevid = leaf(&mfr, Some("ABC-1"), &[]);
        let ldevid = leaf(&acme, None, &["abc-1.iot.example.test"]);
        let id = authenticate(&p, &idevid, &[], Need::IDevId).unwrap();
        assert_eq!(id.label().as_str(), "abc-1");
        assert!(matches!(&id, Identity::IDevId { manufacturer, serial, .. }
            if manufacturer.as_str() == "acme" && serial == "ABC-1"));
        let id = authenticate(&p, &ldevid, &[], Need::LDevId).unwrap();
        assert_eq!(id.label().as_str(), "abc-1");
        assert!(matches!(id, Identity::LDevId { .. }));
        assert_eq!(
            authenticate(&p, &ldevid, &[], Need::IDevId),
            Err(IdentityError::LDevIdForEnroll(
                "abc-1.iot.example.test".into()
            ))
        );
        assert_eq!(
            authenticate(&p, &idevid, &[], Need::LDevId),
            Err(IdentityError::NotLDevId)
        );
    }

    /// The attack of issue 12: a manufacturer-issued certificate that carries another
    /// device's name is not an LDevID, with or without the attacker's own serial.
    #[test]
    fn a_manufacturer_certificate_with_a_device_name_is_not_an_ldevid() {
        let mfr = ca("Acme IDevID CA");
        let acme = ca("ACME issuing CA");
        let p = policy(vec![maker("acme", &mfr, "*", "")], &[&acme]);
        let forged = leaf(&mfr, None, &["victim.iot.example.test"]);
        assert_eq!(
            authenticate(&p, &forged, &[], Need::LDevId),
            Err(IdentityError::NotLDevId)
        );
        let forged = leaf(&mfr, Some("ATTACKER-1"), &["victim.iot.example.test"]);
        assert_eq!(
            authenticate(&p, &forged, &[], Need::LDevId),
            Err(IdentityError::NotLDevId)
        );
        // As an IDevID it names the attacker, never the victim.
        let id = authenticate(&p, &forged, &[], Need::Any).unwrap();
        assert_eq!(id.label().as_str(), "attacker-1");
        // A self-signed one, or one from an unknown CA: nobody.
        let other = ca("Other CA");
        let rogue = leaf(&other, Some("X"), &["victim.iot.example.test"]);
        assert_eq!(
            authenticate(&p, &rogue, &[], Need::Any),
            Err(IdentityError::UnknownIssuer)
        );
    }

    #[test]
    fn chains_are_followed_one_ca_deep_and_only_through_cas() {
        let mfr = ca("Acme IDevID CA");
        let sub = ca_with("Acme Issuing 1", Some(&mfr), true);
        let acme_root = ca("ACME root");
        let acme_int = ca_with("ACME intermediate", Some(&acme_root), true);
        let p = policy(vec![maker("acme", &mfr, "*", "")], &[&acme_root]);
        let idevid = leaf(&sub, Some("S-1"), &[]);
        assert_eq!(
            authenticate(&p, &idevid, &[], Need::Any),
            Err(IdentityError::UnknownIssuer)
        );
        assert!(authenticate(&p, &idevid, std::slice::from_ref(&sub.der), Need::Any).is_ok());
        let ldevid = leaf(&acme_int, None, &["s-1.iot.example.test"]);
        assert!(authenticate(
            &p,
            &ldevid,
            std::slice::from_ref(&acme_int.der),
            Need::LDevId
        )
        .is_ok());
        // An LDevID (not a CA) cannot vouch for another certificate.
        let holder = ca_with("holder", Some(&acme_root), false);
        let forged = leaf(&holder, None, &["victim.iot.example.test"]);
        assert_eq!(
            authenticate(&p, &forged, std::slice::from_ref(&holder.der), Need::LDevId),
            Err(IdentityError::UnknownIssuer)
        );
        // The intermediate configured directly works without a chain (leaf-only clients).
        let p2 = policy(vec![maker("acme", &mfr, "*", "")], &[&acme_root, &acme_int]);
        assert!(authenticate(&p2, &ldevid, &[], Need::LDevId).is_ok());
    }

    #[test]
    fn known_intermediates_build_the_path_but_trust_nothing_themselves() {
        let mfr = ca("Acme IDevID CA");
        let acme_root = ca("ACME root");
        let new_int = ca_with("ACME intermediate 2", Some(&acme_root), true);
        let p = policy(vec![maker("acme", &mfr, "*", "")], &[&acme_root]);
        let ldevid = leaf(&new_int, None, &["s-2.iot.example.test"]);
        // Leaf alone, intermediate unknown: nobody.
        assert_eq!(
            authenticate(&p, &ldevid, &[], Need::LDevId),
            Err(IdentityError::UnknownIssuer)
        );
        // The server learned the intermediate: the leaf alone is an LDevID.
        let known = std::slice::from_ref(&new_int.der);
        let id = authenticate_with_known(&p, &ldevid, &[], known, Need::LDevId).unwrap();
        assert_eq!(id.label().as_str(), "s-2");
        // An attacker's CA in the known list (e.g. written into Redis) vouches for nothing: it
        // is not signed by a trusted issuer.
        let rogue_root = ca("Rogue root");
        let rogue_int = ca_with("ACME intermediate 2", Some(&rogue_root), true);
        let forged = leaf(&rogue_int, None, &["victim.iot.example.test"]);
        let poisoned = [rogue_int.der.clone(), rogue_root.der.clone()];
        assert_eq!(
            authenticate_with_known(&p, &forged, &[], &poisoned, Need::LDevId),
            Err(IdentityError::UnknownIssuer)
        );
        // A known intermediate signed by a manufacturer does not make an LDevID either.
        let mfr_sub = ca_with("Acme Issuing 2", Some(&mfr), true);
        let mfr_leaf = leaf(&mfr_sub, Some("M-1"), &["victim.iot.example.test"]);
        assert_eq!(
            authenticate_with_known(
                &p,
                &mfr_leaf,
                &[],
                std::slice::from_ref(&mfr_sub.der),
                Need::LDevId
            ),
            Err(IdentityError::NotLDevId)
        );
    }

    #[test]
    fn an_ldevid_must_name_exactly_one_device() {
        let mfr = ca("m");
        let acme = ca("a");
        let p = policy(vec![maker("acme", &mfr, "*", "")], &[&acme]);
        for sans in [
            &[][..],
            &["x.elsewhere.test"][..],
            &["a.iot.example.test", "b.iot.example.test"][..],
            &["a.b.iot.example.test"][..],
        ] {
            assert!(
                matches!(
                    authenticate(&p, &leaf(&acme, None, sans), &[], Need::LDevId),
                    Err(IdentityError::LDevIdWithoutDeviceName { .. })
                ),
                "{sans:?}"
            );
        }
    }

    /// Manufacturer B's serial equal to A's, or equal after case folding: refused, or named
    /// apart.
    #[test]
    fn manufacturers_get_separate_namespaces() {
        let a = ca("A");
        let b = ca("B");
        let acme = ca("acme");
        // B narrowed by pattern: A's serials from B are refused.
        let p = policy(
            vec![maker("a", &a, "AD-*", ""), maker("b", &b, "BX-*", "")],
            &[&acme],
        );
        assert!(check_namespaces(&p.manufacturers).is_empty());
        for s in ["AD-0001", "ad-0001"] {
            assert!(matches!(
                authenticate(&p, &leaf(&b, Some(s), &[]), &[], Need::Any),
                Err(IdentityError::SerialNotAccepted { manufacturer, .. }) if manufacturer == "b"
            ));
        }
        // B with its own prefix: the same serial gets another name.
        let p = policy(
            vec![maker("a", &a, "AD-*", ""), maker("b", &b, "*", "b--")],
            &[&acme],
        );
        assert!(check_namespaces(&p.manufacturers).is_empty());
        let from_a = authenticate(&p, &leaf(&a, Some("AD-0001"), &[]), &[], Need::Any).unwrap();
        let from_b = authenticate(&p, &leaf(&b, Some("AD-0001"), &[]), &[], Need::Any).unwrap();
        let from_b_lc = authenticate(&p, &leaf(&b, Some("ad-0001"), &[]), &[], Need::Any).unwrap();
        assert_eq!(from_a.label().as_str(), "ad-0001");
        assert_eq!(from_b.label().as_str(), "b--ad-0001");
        assert_eq!(from_b_lc.label().as_str(), "b--ad-0001");
        // Without a prefix, overlapping patterns are a configuration error.
        let overlap = check_namespaces(&[maker("a", &a, "AD-*", ""), maker("b", &b, "*", "")]);
        assert_eq!(overlap.len(), 1);
        assert!(overlap[0].to_string().contains("manufacturers a and b"));
        // Case folding counts: "ad-*" and "AD-*" meet.
        assert_eq!(
            check_namespaces(&[maker("a", &a, "AD-*", ""), maker("b", &b, "ad-*", "")]).len(),
            1
        );
        // A prefix that an unprefixed pattern can produce is no separation.
        assert_eq!(
            check_namespaces(&[maker("a", &a, "*", ""), maker("b", &b, "*", "b-")]).len(),
            1
        );
        // The same CA and prefix twice is one namespace.
        assert!(check_namespaces(&[maker("a", &a, "*", ""), maker("a2", &a, "X*", "")]).is_empty());
    }

    #[test]
    fn glob_intersection() {
        let g = |s: &str| s.chars().collect::<Vec<_>>();
        let t = |x: &str, y: &str| globs_intersect(&g(x), &g(y));
        assert!(t("", ""));
        assert!(!t("a", ""));
        assert!(t("*", ""));
        assert!(t("a*", "*b"));
        assert!(!t("a*", "b*"));
        assert!(t("demo-*", "*-0001"));
        assert!(!t("demo-?", "demo-??"));
        assert!(t("demo-??", "demo-*"));
        assert!(!t("x-*", "y-*"));
        assert!(t("a*c", "ab*"));
        assert!(!t("a*c", "ab*d"));
        // Long hostile patterns stay quick (states are bounded by the lengths).
        let long_a = "*a".repeat(60);
        let long_b = "*b".repeat(60);
        assert!(!t(&long_a, &long_b));
    }

    #[test]
    fn names_patterns_and_prefixes_are_checked() {
        assert!(ManufacturerName::parse("acme_Co-1").is_some());
        assert!(ManufacturerName::parse("").is_none());
        assert!(ManufacturerName::parse("a b").is_none());
        assert!(SerialPattern::parse("DEMO-*").is_some());
        assert!(SerialPattern::parse("").is_none());
        assert!(SerialPattern::parse("a b").is_none());
        assert!(NamePrefix::parse("acme-").is_some());
        assert!(NamePrefix::parse("-x").is_none());
        assert!(NamePrefix::parse("Acme").is_none());
        assert!(NamePrefix::parse("a.b").is_none());
        assert!(NamePrefix::parse("").is_none());
    }

    /// A set of digests, counting what it was asked and told.
    #[derive(Default)]
    struct CountingMemo {
        known: std::collections::HashSet<[u8; 32]>,
        hits: usize,
        remembered: usize,
    }

    impl SignatureMemo for CountingMemo {
        fn verified(&mut self, digest: &[u8; 32]) -> bool {
            let hit = self.known.contains(digest);
            self.hits += usize::from(hit);
            hit
        }
        fn remember(&mut self, digest: &[u8; 32]) {
            self.remembered += 1;
            self.known.insert(*digest);
        }
    }

    /// The memo skips the issuer's signature check only for the exact certificate and issuer
    /// that verified: after the genuine IDevID was remembered, a forgery under the same issuer
    /// name and a copy of the genuine certificate with a damaged signature are still refused.
    #[test]
    fn a_remembered_issuer_signature_vouches_for_those_exact_bytes_only() {
        let mfr = ca("Acme IDevID CA");
        let p = policy(vec![maker("acme", &mfr, "*", "")], &[]);
        let genuine = leaf(&mfr, Some("ABC-1"), &[]);
        let mut memo = CountingMemo::default();
        let id = authenticate_memo(&p, &genuine, &[], &[], Need::IDevId, Some(&mut memo));
        assert_eq!(id.unwrap().label().as_str(), "abc-1");
        assert_eq!((memo.hits, memo.remembered), (0, 1));
        let id = authenticate_memo(&p, &genuine, &[], &[], Need::IDevId, Some(&mut memo));
        assert_eq!(id.unwrap().label().as_str(), "abc-1");
        assert_eq!(
            (memo.hits, memo.remembered),
            (1, 1),
            "the second time from the memo"
        );

        // An attacker's CA with the very same name issues a certificate for the same serial.
        let evil = ca("Acme IDevID CA");
        let forged = leaf(&evil, Some("ABC-1"), &[]);
        assert_eq!(
            authenticate_memo(&p, &forged, &[], &[], Need::IDevId, Some(&mut memo)),
            Err(IdentityError::UnknownIssuer)
        );
        // The genuine certificate with its signature's last byte changed.
        let mut damaged = genuine.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x01;
        assert!(matches!(
            authenticate_memo(&p, &damaged, &[], &[], Need::IDevId, Some(&mut memo)),
            Err(IdentityError::UnknownIssuer | IdentityError::Unreadable)
        ));
        assert_eq!(memo.remembered, 1, "nothing else was remembered");
        // And what is remembered is the pair: the same certificate judged against another
        // manufacturer's CA is not vouched for.
        let other = policy(vec![maker("evil", &evil, "*", "")], &[]);
        assert_eq!(
            authenticate_memo(&other, &genuine, &[], &[], Need::IDevId, Some(&mut memo)),
            Err(IdentityError::UnknownIssuer)
        );
    }
}
