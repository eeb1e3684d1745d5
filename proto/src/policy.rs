//! Pure EST enrolment policy, used by both the edge filter and the control plane.
//!
//! A CSR may ask for a device certificate for its own name and nothing more:
//! - subjectAltName: exactly one dNSName, the device's name;
//! - subject: empty, or only commonName(s) equal to that name;
//! - optionally keyUsage with only [`ALLOWED_KEY_USAGE`] bits, extKeyUsage with only
//!   [`ALLOWED_EXTENDED_KEY_USAGE`] purposes, and basicConstraints with cA FALSE and no
//!   pathLenConstraint (some device TLS stacks add it; it asks for nothing more);
//! - no other extension, critical or not, whatever it is (nameConstraints, certificatePolicies,
//!   subjectKeyIdentifier, ...: the CA sets what it needs itself), and no Microsoft extension
//!   request attribute (OpenSSL-based CAs read extensions from it too).
//!
//! An ACME CA finalizes the CSR as received (RFC 8555 §7.4), and one that honours requested
//! extensions would otherwise issue, say, a CA certificate. Other CSR attributes, such as
//! challengePassword, ask the CA for nothing and are left alone.

use const_oid::ObjectIdentifier;

use crate::cert::CertSummary;
use crate::csr::{ExtensionValue, KeyKind, KeyUsageBit, VerifiedCsr};
use crate::names::DeviceName;
use crate::oids;

/// The keyUsage bits a CSR may ask for (RFC 5280 §4.2.1.3): what a device's TLS key does.
pub const ALLOWED_KEY_USAGE: &[KeyUsageBit] = &[
    KeyUsageBit::DIGITAL_SIGNATURE,
    KeyUsageBit::KEY_ENCIPHERMENT,
];

/// The extKeyUsage purposes a CSR may ask for (RFC 5280 §4.2.1.12): TLS client and server.
pub const ALLOWED_EXTENDED_KEY_USAGE: &[ObjectIdentifier] =
    &[oids::KP_CLIENT_AUTH, oids::KP_SERVER_AUTH];

/// RSA below this is refused whatever the configuration says.
pub const RSA_FLOOR_BITS: u32 = 2048;

/// Which keys a CSR may carry. Also the `keys` configuration of the filter and the control
/// plane (every field optional, defaults as [`KeyPolicy::default`]); check it with
/// [`KeyPolicy::problems`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyPolicy {
    /// Smallest RSA modulus accepted, in bits.
    pub rsa_min_bits: u32,
    /// Largest RSA modulus accepted, in bits.
    pub rsa_max_bits: u32,
    /// Whether ECDSA P-256 keys are accepted.
    pub allow_p256: bool,
    /// Whether ECDSA P-384 keys are accepted.
    pub allow_p384: bool,
    /// Whether Ed25519 keys are accepted.
    pub allow_ed25519: bool,
}

impl Default for KeyPolicy {
    /// RSA 2048..=4096, P-256, P-384 and Ed25519.
    fn default() -> Self {
        KeyPolicy {
            rsa_min_bits: 2048,
            rsa_max_bits: 4096,
            allow_p256: true,
            allow_p384: true,
            allow_ed25519: true,
        }
    }
}

impl KeyPolicy {
    /// What is wrong with a configured policy, as (field, rule) pairs; empty when usable.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut p = Vec::new();
        if self.rsa_min_bits < RSA_FLOOR_BITS {
            p.push(("rsa_min_bits", "must be at least 2048"));
        }
        if self.rsa_max_bits < self.rsa_min_bits {
            p.push(("rsa_max_bits", "must be at least keys.rsa_min_bits"));
        }
        p
    }

    /// Whether a key of this kind is accepted.
    pub fn allows(&self, key: KeyKind) -> bool {
        match key {
            KeyKind::Rsa { bits } => (self.rsa_min_bits..=self.rsa_max_bits).contains(&bits),
            KeyKind::EcdsaP256 => self.allow_p256,
            KeyKind::EcdsaP384 => self.allow_p384,
            KeyKind::Ed25519 => self.allow_ed25519,
        }
    }

    /// Whether any RSA size is accepted at all.
    pub fn allows_rsa(&self) -> bool {
        self.rsa_min_bits <= self.rsa_max_bits
    }
}

/// Why a CSR is refused by policy. `Display` is fit for a 4xx body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The CSR has no subjectAltName dNSName.
    #[error("CSR asks for no DNS name; this device may only ask for {expected}")]
    NoDnsName {
        /// The name the device may ask for.
        expected: String,
    },
    /// The CSR asks for another name.
    #[error("CSR asks for name {asked}, this device may only ask for {expected}")]
    WrongDnsName {
        /// The first name asked for that is not allowed.
        asked: String,
        /// The name the device may ask for.
        expected: String,
    },
    /// The CSR asks for more than one DNS name.
    #[error("CSR asks for {count} DNS names; this device may only ask for {expected}")]
    TooManyDnsNames {
        /// How many were asked for.
        count: usize,
        /// The name the device may ask for.
        expected: String,
    },
    /// The SAN holds IP addresses, URIs, e-mail addresses or other non-DNS names.
    #[error("CSR asks for subjectAltName entries other than DNS names; only dNSName is allowed")]
    NonDnsSan,
    /// The subject commonName differs from the allowed name. (The CN is quoted and escaped:
    /// unlike SAN dNSNames it may hold any Unicode, control characters included.)
    #[error("CSR subject commonName {asked:?} differs from the allowed name {expected}")]
    WrongCommonName {
        /// The commonName in the CSR.
        asked: String,
        /// The name the device may ask for.
        expected: String,
    },
    /// The key type or size is not accepted.
    #[error("{key} keys are not accepted here")]
    KeyNotAllowed {
        /// The key kind in the CSR.
        key: KeyKind,
    },
    /// The subject holds an attribute other than commonName (O, OU, serialNumber, C, ...).
    #[error(
        "CSR subject holds {}, which is not allowed: the subject must be empty or hold only \
         commonName (CN) set to the device's name",
        oids::Named(*.attribute)
    )]
    SubjectAttributeNotAllowed {
        /// The first attribute type that is not commonName.
        attribute: ObjectIdentifier,
    },
    /// The extensionRequest holds an extension that a device certificate does not need.
    #[error(
        "CSR asks for the {} extension {}, which is not allowed: a CSR may only ask for \
         subjectAltName, keyUsage, extKeyUsage and basicConstraints without cA",
        criticality(*.critical),
        oids::Named(*.oid)
    )]
    ExtensionNotAllowed {
        /// The extension.
        oid: ObjectIdentifier,
        /// Whether it was marked critical.
        critical: bool,
    },
    /// keyUsage holds a bit other than digitalSignature and keyEncipherment.
    #[error(
        "CSR asks for keyUsage {bit}, which is not allowed: only digitalSignature and \
         keyEncipherment may be asked for"
    )]
    KeyUsageNotAllowed {
        /// The first bit not allowed.
        bit: KeyUsageBit,
    },
    /// extKeyUsage holds a purpose other than clientAuth and serverAuth.
    #[error(
        "CSR asks for extKeyUsage {}, which is not allowed: only clientAuth and serverAuth may \
         be asked for",
        oids::Named(*.purpose)
    )]
    ExtendedKeyUsageNotAllowed {
        /// The first purpose not allowed.
        purpose: ObjectIdentifier,
    },
    /// basicConstraints says cA TRUE: the CSR asks for a CA certificate.
    #[error(
        "CSR asks for basicConstraints cA TRUE, a CA certificate, which is not allowed: only a \
         device certificate is issued (basicConstraints, if present, must say cA FALSE)"
    )]
    CaRequested,
    /// basicConstraints has a pathLenConstraint (meaningful only for a CA).
    #[error(
        "CSR asks for basicConstraints pathLenConstraint {path_len}, which is not allowed: \
         basicConstraints, if present, must say cA FALSE without a path length"
    )]
    PathLenConstraintRequested {
        /// The path length asked for.
        path_len: u8,
    },
    /// The CSR carries Microsoft's extension request attribute (1.3.6.1.4.1.311.2.1.14).
    #[error(
        "CSR carries a Microsoft extension request attribute (1.3.6.1.4.1.311.2.1.14), which \
         is not allowed: put requested extensions in the PKCS#9 extensionRequest attribute"
    )]
    MsExtensionRequest,
    /// serverkeygen (RFC 7030 §4.4.1.1, §4.4.1.2): the CSR asks for the returned private key to
    /// be encrypted (CMS EnvelopedData) to a key this server does not hold.
    #[error(
        "serverkeygen: the CSR carries {}, asking for the private key to be encrypted to a key \
         this server does not hold (RFC 7030 §4.4.1); this server returns the key protected by \
         TLS only: send the request without that attribute",
        oids::Named(*.attribute)
    )]
    KeyEncryptionNotSupported {
        /// DecryptKeyIdentifier or AsymmetricDecryptKeyIdentifier.
        attribute: ObjectIdentifier,
    },
    /// Re-enrolment: the subject differs from the current certificate's (RFC 7030 §4.2.2).
    #[error("re-enrolment CSR subject differs from the current certificate's subject")]
    SubjectChanged,
    /// Re-enrolment: the DNS names differ from the current certificate's (RFC 7030 §4.2.2).
    #[error(
        "re-enrolment CSR asks for DNS names {asked:?}, the current certificate has {current:?}"
    )]
    DnsNamesChanged {
        /// Names in the CSR.
        asked: Vec<String>,
        /// Names in the current certificate.
        current: Vec<String>,
    },
}

fn criticality(critical: bool) -> &'static str {
    if critical {
        "critical"
    } else {
        "non-critical"
    }
}

/// The content rules shared by enrolment and re-enrolment (see the module documentation);
/// the names themselves are checked by the callers.
fn check_content(csr: &VerifiedCsr) -> Result<(), PolicyError> {
    if let Some(t) = csr
        .subject_attribute_types()
        .iter()
        .find(|t| **t != oids::COMMON_NAME)
    {
        return Err(PolicyError::SubjectAttributeNotAllowed { attribute: *t });
    }
    if csr.attribute_types().contains(&oids::MS_EXTENSION_REQUEST) {
        return Err(PolicyError::MsExtensionRequest);
    }
    for ext in csr.extensions() {
        match &ext.value {
            ExtensionValue::SubjectAltName => {}
            ExtensionValue::KeyUsage(bits) => {
                if let Some(bit) = bits.iter().find(|b| !ALLOWED_KEY_USAGE.contains(b)) {
                    return Err(PolicyError::KeyUsageNotAllowed { bit: *bit });
                }
            }
            ExtensionValue::ExtendedKeyUsage(purposes) => {
                if let Some(p) = purposes
                    .iter()
                    .find(|p| !ALLOWED_EXTENDED_KEY_USAGE.contains(p))
                {
                    return Err(PolicyError::ExtendedKeyUsageNotAllowed { purpose: *p });
                }
            }
            ExtensionValue::BasicConstraints { ca, path_len } => {
                if *ca {
                    return Err(PolicyError::CaRequested);
                }
                if let Some(path_len) = path_len {
                    return Err(PolicyError::PathLenConstraintRequested {
                        path_len: *path_len,
                    });
                }
            }
            ExtensionValue::Other => {
                return Err(PolicyError::ExtensionNotAllowed {
                    oid: ext.oid,
                    critical: ext.critical,
                })
            }
        }
    }
    Ok(())
}

fn check_key(csr: &VerifiedCsr, keys: &KeyPolicy) -> Result<(), PolicyError> {
    if keys.allows(csr.key()) {
        Ok(())
    } else {
        Err(PolicyError::KeyNotAllowed { key: csr.key() })
    }
}

/// First enrolment: the SAN must be exactly one dNSName equal to `expected` (case-insensitive),
/// with no other kind of SAN; every subject commonName must equal it too; the key must be
/// allowed; and the CSR may ask for nothing else (the module's content rules).
pub fn check_enroll(
    csr: &VerifiedCsr,
    expected: &DeviceName,
    keys: &KeyPolicy,
) -> Result<(), PolicyError> {
    check_names(csr, expected)?;
    check_key(csr, keys)?;
    check_content(csr)
}

/// Server-side key generation (RFC 7030 §4.4.1): the names and content rules of
/// [`check_enroll`], but not its key rule — the server generates the key, so the CSR's key
/// only proves (by its verified signature) that the client made the request. A CSR asking for
/// the returned key to be encrypted (DecryptKeyIdentifier, AsymmetricDecryptKeyIdentifier) is
/// refused first with [`PolicyError::KeyEncryptionNotSupported`]: this server holds no key to
/// encrypt to (§4.4.1.1, §4.4.1.2: it then terminates the request with an error).
pub fn check_serverkeygen(csr: &VerifiedCsr, expected: &DeviceName) -> Result<(), PolicyError> {
    if let Some(attribute) = csr
        .attribute_types()
        .iter()
        .find(|t| **t == oids::DECRYPT_KEY_ID || **t == oids::ASYMM_DECRYPT_KEY_ID)
    {
        return Err(PolicyError::KeyEncryptionNotSupported {
            attribute: *attribute,
        });
    }
    check_names(csr, expected)?;
    check_content(csr)
}

/// The name rules of first enrolment: one SAN dNSName equal to `expected`, no other SAN, every
/// subject commonName equal to it.
fn check_names(csr: &VerifiedCsr, expected: &DeviceName) -> Result<(), PolicyError> {
    let want = expected.as_str();
    // Exact text up to ASCII case: a trailing dot is refused here because an ACME CA would
    // refuse it at finalize time.
    let same = |s: &str| s.eq_ignore_ascii_case(want);
    if csr.has_non_dns_sans() {
        return Err(PolicyError::NonDnsSan);
    }
    match csr.dns_names() {
        [] => {
            return Err(PolicyError::NoDnsName {
                expected: want.to_owned(),
            })
        }
        [one] if same(one) => {}
        [one] => {
            return Err(PolicyError::WrongDnsName {
                asked: one.clone(),
                expected: want.to_owned(),
            })
        }
        many => {
            return Err(match many.iter().find(|n| !same(n)) {
                Some(other) => PolicyError::WrongDnsName {
                    asked: other.clone(),
                    expected: want.to_owned(),
                },
                None => PolicyError::TooManyDnsNames {
                    count: many.len(),
                    expected: want.to_owned(),
                },
            })
        }
    }
    if let Some(cn) = csr.subject_common_names().iter().find(|cn| !same(cn)) {
        return Err(PolicyError::WrongCommonName {
            asked: cn.clone(),
            expected: want.to_owned(),
        });
    }
    Ok(())
}

/// Re-enrolment (RFC 7030 §4.2.2): the subject (DER) and the SAN dNSNames (case-insensitive, in
/// order) must equal those of the current certificate, no non-DNS SAN, and the key must be
/// allowed; and the content rules of first enrolment hold as well: every subject commonName is
/// one of those dNSNames, and the CSR asks for nothing else (the module's content rules).
pub fn check_reenroll(
    csr: &VerifiedCsr,
    current: &CertSummary,
    keys: &KeyPolicy,
) -> Result<(), PolicyError> {
    if !same_name(csr.subject_der(), current.subject_der()) {
        return Err(PolicyError::SubjectChanged);
    }
    if csr.has_non_dns_sans() {
        return Err(PolicyError::NonDnsSan);
    }
    let equal = csr.dns_names().len() == current.dns_names().len()
        && csr
            .dns_names()
            .iter()
            .zip(current.dns_names())
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    if !equal {
        return Err(PolicyError::DnsNamesChanged {
            asked: csr.dns_names().to_vec(),
            current: current.dns_names().to_vec(),
        });
    }
    let named = |cn: &str| csr.dns_names().iter().any(|n| n.eq_ignore_ascii_case(cn));
    if let Some(cn) = csr.subject_common_names().iter().find(|cn| !named(cn)) {
        return Err(PolicyError::WrongCommonName {
            asked: cn.clone(),
            expected: csr.dns_names().join(", "),
        });
    }
    check_key(csr, keys)?;
    check_content(csr)
}

/// Whether two DER-encoded X.501 Names are the same name (RFC 5280 §7.1, simplified): the same
/// RDNs with the same attribute types in the same order, and each value equal — directory
/// strings compared as text, ignoring case, the string type (a CA may re-encode a UTF8String
/// as PrintableString) and leading, trailing and repeated white space; any other value
/// compared byte for byte. Undecodable input is never the same as anything.
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    use der::Decode;
    if a == b {
        return true;
    }
    let (Ok(a), Ok(b)) = (
        x509_cert::name::Name::from_der(a),
        x509_cert::name::Name::from_der(b),
    ) else {
        return false;
    };
    a.0.len() == b.0.len()
        && a.0.iter().zip(b.0.iter()).all(|(ra, rb)| {
            let (ra, rb) = (ra.0.as_slice(), rb.0.as_slice());
            ra.len() == rb.len()
                && ra.iter().zip(rb.iter()).all(|(x, y)| {
                    x.oid == y.oid
                        && match (directory_text(&x.value), directory_text(&y.value)) {
                            (Some(tx), Some(ty)) => tx == ty,
                            _ => x.value == y.value,
                        }
                })
        })
}

/// The normalised text of a directory-string value (PrintableString, UTF8String, IA5String,
/// TeletexString), or `None` for other types.
fn directory_text(v: &der::Any) -> Option<String> {
    use der::{Tag, Tagged};
    match v.tag() {
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String | Tag::TeletexString => {
            let s = core::str::from_utf8(v.value()).ok()?;
            Some(
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase(),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod same_name_tests {
    use super::same_name;
    use der::asn1::{PrintableStringRef, Utf8StringRef};
    use der::{Encode, Tag};

    /// `SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, <value> } } }` by hand.
    fn cn_name(value_der: &[u8]) -> Vec<u8> {
        let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
        let mut atv = vec![0x30, (oid.len() + value_der.len()) as u8];
        atv.extend_from_slice(&oid);
        atv.extend_from_slice(value_der);
        let mut set = vec![0x31, atv.len() as u8];
        set.extend_from_slice(&atv);
        let mut name = vec![0x30, set.len() as u8];
        name.extend_from_slice(&set);
        name
    }

    #[test]
    fn printable_and_utf8_with_the_same_text_are_the_same_name() {
        let p = PrintableStringRef::new("Device 1.iot.example.test")
            .and_then(|s| s.to_der())
            .expect("printable");
        let u = Utf8StringRef::new("device  1.IOT.example.test ")
            .and_then(|s| s.to_der())
            .expect("utf8");
        assert_eq!(p.first().copied(), Some(Tag::PrintableString.octet()));
        assert!(same_name(&cn_name(&p), &cn_name(&u)));
    }

    #[test]
    fn different_text_or_shape_is_a_different_name() {
        let a = Utf8StringRef::new("a.example")
            .and_then(|s| s.to_der())
            .expect("a");
        let b = Utf8StringRef::new("b.example")
            .and_then(|s| s.to_der())
            .expect("b");
        assert!(!same_name(&cn_name(&a), &cn_name(&b)));
        // An empty name against a one-RDN name.
        assert!(!same_name(&[0x30, 0x00], &cn_name(&a)));
        assert!(same_name(&[0x30, 0x00], &[0x30, 0x00]));
        // Garbage is never the same as anything, not even itself unless byte-equal.
        assert!(!same_name(&[0x30, 0x05, 0x01], &[0x30, 0x05, 0x02]));
    }
}

/// The CSR content rules, with CSRs made by rcgen (and hand-made extension values where rcgen
/// has no builder). RFC 5280 §4.2.1 defines the extensions.
#[cfg(test)]
mod content_tests {
    use super::*;
    use crate::csr::{parse_and_verify, CsrError};
    use crate::names::ParentDomain;
    use rcgen::{
        Attribute, BasicConstraints, CertificateParams, CustomExtension, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };

    const NAME: &str = "dev1.iot.example.test";
    /// An OID no one assigned to anything we know (a private enterprise arc).
    const UNKNOWN: &[u64] = &[1, 3, 6, 1, 4, 1, 55555, 1];

    fn device() -> DeviceName {
        DeviceName::parse_under(NAME, &ParentDomain::parse("iot.example.test").unwrap()).unwrap()
    }

    /// SAN = NAME, subject CN = NAME; `edit` adds the rest.
    fn params(edit: impl FnOnce(&mut CertificateParams)) -> CertificateParams {
        let mut p = CertificateParams::new(vec![NAME.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, NAME);
        edit(&mut p);
        p
    }

    fn csr_with(p: &CertificateParams, attrs: Vec<Attribute>) -> Result<VerifiedCsr, CsrError> {
        let key = KeyPair::generate().unwrap();
        let der = p.serialize_request_with_attributes(&key, attrs).unwrap();
        parse_and_verify(der.der())
    }

    fn csr(edit: impl FnOnce(&mut CertificateParams)) -> VerifiedCsr {
        csr_with(&params(edit), Vec::new()).unwrap()
    }

    fn enroll(edit: impl FnOnce(&mut CertificateParams)) -> Result<(), PolicyError> {
        check_enroll(&csr(edit), &device(), &KeyPolicy::default())
    }

    fn custom(oid: &[u64], critical: bool, value: &[u8]) -> CustomExtension {
        let mut e = CustomExtension::from_oid_content(oid, value.to_vec());
        e.set_criticality(critical);
        e
    }

    fn oid(s: &str) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(s)
    }

    #[test]
    fn a_device_certificate_request_is_accepted() {
        // SAN only.
        assert_eq!(
            enroll(|p| p.distinguished_name = rcgen::DistinguishedName::new()),
            Ok(())
        );
        // SAN + CN.
        assert_eq!(enroll(|_| {}), Ok(()));
        // Empty subject with a critical SAN, as RFC 5280 §4.2.1.6 asks then.
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        let san = [0x30, 0x17, 0x82, 0x15];
        let mut value = san.to_vec();
        value.extend_from_slice(NAME.as_bytes());
        p.custom_extensions = vec![custom(&[2, 5, 29, 17], true, &value)];
        let v = csr_with(&p, Vec::new()).unwrap();
        assert!(v.subject_attribute_types().is_empty());
        assert_eq!(v.dns_names(), [NAME.to_owned()]);
        assert_eq!(check_enroll(&v, &device(), &KeyPolicy::default()), Ok(()));
        // keyUsage digitalSignature, and digitalSignature + keyEncipherment.
        assert_eq!(
            enroll(|p| p.key_usages = vec![KeyUsagePurpose::DigitalSignature]),
            Ok(())
        );
        assert_eq!(
            enroll(|p| p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment
            ]),
            Ok(())
        );
        // extKeyUsage clientAuth + serverAuth.
        assert_eq!(
            enroll(|p| p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth
            ]),
            Ok(())
        );
        // basicConstraints cA FALSE (rcgen writes it critical, with an empty SEQUENCE).
        assert_eq!(enroll(|p| p.is_ca = IsCa::ExplicitNoCa), Ok(()));
        // ... and with cA FALSE written out, as some encoders do although DER omits defaults.
        assert_eq!(
            enroll(
                |p| p.custom_extensions = vec![custom(&[2, 5, 29, 19], false, &[0x30, 3, 1, 1, 0])]
            ),
            Ok(())
        );
        // Everything allowed at once, plus a challengePassword attribute, which is left alone.
        let p = params(|p| {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p.is_ca = IsCa::ExplicitNoCa;
        });
        let challenge = Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 7],
            values: vec![0x31, 0x03, 0x0c, 0x01, b'x'],
        };
        let v = csr_with(&p, vec![challenge]).unwrap();
        assert_eq!(
            v.attribute_types(),
            [oids::CHALLENGE_PASSWORD, oids::EXTENSION_REQUEST]
        );
        assert_eq!(v.extensions().len(), 4);
        assert_eq!(check_enroll(&v, &device(), &KeyPolicy::default()), Ok(()));
    }

    #[test]
    fn extension_values_are_read() {
        let v = csr(|p| {
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(2));
            p.custom_extensions = vec![custom(UNKNOWN, true, &[0x05, 0x00])];
        });
        let by_oid = |o: ObjectIdentifier| v.extensions().iter().find(|e| e.oid == o).unwrap();
        assert_eq!(
            by_oid(oids::KEY_USAGE).value,
            ExtensionValue::KeyUsage(vec![KeyUsageBit::KEY_CERT_SIGN, KeyUsageBit::CRL_SIGN])
        );
        assert!(by_oid(oids::KEY_USAGE).critical);
        assert_eq!(
            by_oid(oids::EXT_KEY_USAGE).value,
            ExtensionValue::ExtendedKeyUsage(vec![oids::KP_CODE_SIGNING])
        );
        assert_eq!(
            by_oid(oids::BASIC_CONSTRAINTS).value,
            ExtensionValue::BasicConstraints {
                ca: true,
                path_len: Some(2)
            }
        );
        let unknown = by_oid(oid("1.3.6.1.4.1.55555.1"));
        assert_eq!(unknown.value, ExtensionValue::Other);
        assert!(unknown.critical);
        assert_eq!(
            by_oid(oids::SUBJECT_ALT_NAME).value,
            ExtensionValue::SubjectAltName
        );
    }

    #[test]
    fn ca_true_is_refused() {
        let e = enroll(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)).unwrap_err();
        assert_eq!(e, PolicyError::CaRequested);
        assert!(e.to_string().contains("basicConstraints cA TRUE"), "{e}");
        // cA FALSE with a path length asks for something only a CA has.
        let v =
            csr(|p| p.custom_extensions = vec![custom(&[2, 5, 29, 19], true, &[0x30, 3, 2, 1, 0])]);
        assert_eq!(
            check_enroll(&v, &device(), &KeyPolicy::default()),
            Err(PolicyError::PathLenConstraintRequested { path_len: 0 })
        );
    }

    #[test]
    fn key_usage_beyond_a_device_key_is_refused() {
        let e = enroll(|p| {
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ]
        })
        .unwrap_err();
        assert_eq!(
            e,
            PolicyError::KeyUsageNotAllowed {
                bit: KeyUsageBit::KEY_CERT_SIGN
            }
        );
        assert_eq!(
            e.to_string(),
            "CSR asks for keyUsage keyCertSign, which is not allowed: only digitalSignature and \
             keyEncipherment may be asked for"
        );
        assert_eq!(
            enroll(|p| p.key_usages = vec![KeyUsagePurpose::CrlSign]),
            Err(PolicyError::KeyUsageNotAllowed {
                bit: KeyUsageBit::CRL_SIGN
            })
        );
        assert_eq!(
            enroll(|p| p.key_usages = vec![KeyUsagePurpose::KeyAgreement]),
            Err(PolicyError::KeyUsageNotAllowed {
                bit: KeyUsageBit::KEY_AGREEMENT
            })
        );
        // A bit RFC 5280 does not name: BIT STRING 0000 0000 01 (bit 9).
        let v =
            csr(|p| p.custom_extensions = vec![custom(&[2, 5, 29, 15], true, &[3, 3, 6, 0, 0x40])]);
        let e = check_enroll(&v, &device(), &KeyPolicy::default()).unwrap_err();
        assert_eq!(
            e,
            PolicyError::KeyUsageNotAllowed {
                bit: KeyUsageBit(9)
            }
        );
        assert!(e.to_string().contains("keyUsage bit 9"), "{e}");
    }

    #[test]
    fn other_key_purposes_are_refused() {
        let e = enroll(|p| {
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::CodeSigning,
            ]
        })
        .unwrap_err();
        assert_eq!(
            e,
            PolicyError::ExtendedKeyUsageNotAllowed {
                purpose: oids::KP_CODE_SIGNING
            }
        );
        assert!(
            e.to_string()
                .contains("extKeyUsage codeSigning (1.3.6.1.5.5.7.3.3)"),
            "{e}"
        );
        assert_eq!(
            enroll(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any]),
            Err(PolicyError::ExtendedKeyUsageNotAllowed {
                purpose: oids::ANY_EXTENDED_KEY_USAGE
            })
        );
    }

    #[test]
    fn other_extensions_are_refused_named_and_with_their_criticality() {
        // nameConstraints: permittedSubtrees { dNSName ".example.com" }.
        let mut nc = vec![0x30, 0x12, 0xa0, 0x10, 0x30, 0x0e, 0x82, 0x0c];
        nc.extend_from_slice(b".example.com");
        let e =
            enroll(|p| p.custom_extensions = vec![custom(&[2, 5, 29, 30], true, &nc)]).unwrap_err();
        assert_eq!(
            e,
            PolicyError::ExtensionNotAllowed {
                oid: oids::NAME_CONSTRAINTS,
                critical: true
            }
        );
        assert_eq!(
            e.to_string(),
            "CSR asks for the critical extension nameConstraints (2.5.29.30), which is not \
             allowed: a CSR may only ask for subjectAltName, keyUsage, extKeyUsage and \
             basicConstraints without cA"
        );
        let e = enroll(|p| p.custom_extensions = vec![custom(UNKNOWN, true, &[0x05, 0x00])])
            .unwrap_err();
        assert_eq!(
            e,
            PolicyError::ExtensionNotAllowed {
                oid: oid("1.3.6.1.4.1.55555.1"),
                critical: true
            }
        );
        assert!(
            e.to_string()
                .contains("the critical extension 1.3.6.1.4.1.55555.1,"),
            "{e}"
        );
        let e = enroll(|p| p.custom_extensions = vec![custom(UNKNOWN, false, &[0x05, 0x00])])
            .unwrap_err();
        assert_eq!(
            e,
            PolicyError::ExtensionNotAllowed {
                oid: oid("1.3.6.1.4.1.55555.1"),
                critical: false
            }
        );
        assert!(e.to_string().contains("the non-critical extension"), "{e}");
        // Harmless ones too: the CA sets its own key identifiers.
        assert_eq!(
            enroll(|p| p.custom_extensions = vec![custom(&[2, 5, 29, 14], false, &[0x04, 2, 1, 2])]),
            Err(PolicyError::ExtensionNotAllowed {
                oid: oids::SUBJECT_KEY_IDENTIFIER,
                critical: false
            })
        );
    }

    #[test]
    fn subject_attributes_other_than_cn_are_refused() {
        let e =
            enroll(|p| p.distinguished_name.push(DnType::OrganizationName, "Evil")).unwrap_err();
        assert_eq!(
            e,
            PolicyError::SubjectAttributeNotAllowed {
                attribute: oids::ORGANIZATION_NAME
            }
        );
        assert_eq!(
            e.to_string(),
            "CSR subject holds O (2.5.4.10), which is not allowed: the subject must be empty or \
             hold only commonName (CN) set to the device's name"
        );
        let e = enroll(|p| {
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 5]), "DEV1");
            p.distinguished_name.push(DnType::CommonName, NAME);
        })
        .unwrap_err();
        assert_eq!(
            e,
            PolicyError::SubjectAttributeNotAllowed {
                attribute: oids::SERIAL_NUMBER
            }
        );
        assert!(e.to_string().contains("serialNumber (2.5.4.5)"), "{e}");
        assert_eq!(
            enroll(|p| p
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 97]), "x")),
            Err(PolicyError::SubjectAttributeNotAllowed {
                attribute: oids::ORGANIZATION_IDENTIFIER
            })
        );
    }

    #[test]
    fn a_repeated_or_malformed_extension_is_a_bad_csr() {
        let p = params(|p| {
            p.custom_extensions = vec![
                custom(UNKNOWN, false, &[0x05, 0x00]),
                custom(&[2, 5, 29, 19], false, &[0x30, 0]),
                custom(UNKNOWN, false, &[0x05, 0x00]),
            ]
        });
        let e = csr_with(&p, Vec::new()).unwrap_err();
        assert_eq!(
            e,
            CsrError::DuplicateExtension {
                oid: oid("1.3.6.1.4.1.55555.1")
            }
        );
        assert_eq!(
            e.to_string(),
            "the 1.3.6.1.4.1.55555.1 extension appears more than once in the CSR"
        );
        // A second subjectAltName.
        let mut san = vec![0x30, 0x17, 0x82, 0x15];
        san.extend_from_slice(NAME.as_bytes());
        let p = params(|p| p.custom_extensions = vec![custom(&[2, 5, 29, 17], false, &san)]);
        assert_eq!(
            csr_with(&p, Vec::new()),
            Err(CsrError::DuplicateExtension {
                oid: oids::SUBJECT_ALT_NAME
            })
        );
        // keyUsage that is not a BIT STRING, or has no bit set; extKeyUsage that is empty;
        // basicConstraints that is not a SEQUENCE.
        for (ext, value) in [
            (&[2u64, 5, 29, 15][..], &[0x04, 0x01, 0x80][..]),
            (&[2, 5, 29, 15], &[0x03, 0x01, 0x00]),
            (&[2, 5, 29, 15], &[0x03, 0x02, 0x00, 0x00]),
            (&[2, 5, 29, 37], &[0x30, 0x00]),
            (&[2, 5, 29, 19], &[0x05, 0x00]),
        ] {
            let p = params(|p| p.custom_extensions = vec![custom(ext, true, value)]);
            let e = csr_with(&p, Vec::new()).unwrap_err();
            assert!(
                matches!(e, CsrError::BadExtensionValue { .. }),
                "{ext:?}: {e}"
            );
        }
        let p = params(|p| p.custom_extensions = vec![custom(&[2, 5, 29, 15], true, &[0x01])]);
        assert_eq!(
            csr_with(&p, Vec::new()).unwrap_err().to_string(),
            "the keyUsage (2.5.29.15) extension in the CSR is malformed"
        );
    }

    #[test]
    fn a_microsoft_extension_request_is_refused() {
        let ms = Attribute {
            oid: &[1, 3, 6, 1, 4, 1, 311, 2, 1, 14],
            values: vec![0x31, 0x02, 0x30, 0x00],
        };
        let v = csr_with(&params(|_| {}), vec![ms]).unwrap();
        assert_eq!(
            check_enroll(&v, &device(), &KeyPolicy::default()),
            Err(PolicyError::MsExtensionRequest)
        );
    }

    /// Re-enrolment applies the same content rules on top of "same subject and names".
    #[test]
    fn reenrolment_checks_content_too() {
        let key = KeyPair::generate().unwrap();
        let current = params(|_| {});
        let cert = current.self_signed(&key).unwrap();
        let summary = CertSummary::from_der(cert.der()).unwrap();
        let keys = KeyPolicy::default();
        let reenroll = |p: &CertificateParams| {
            let v = csr_with(p, Vec::new()).unwrap();
            check_reenroll(&v, &summary, &keys)
        };
        assert_eq!(reenroll(&current), Ok(()));
        assert_eq!(
            reenroll(&params(
                |p| p.key_usages = vec![KeyUsagePurpose::DigitalSignature]
            )),
            Ok(())
        );
        assert_eq!(
            reenroll(&params(
                |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
            )),
            Err(PolicyError::CaRequested)
        );
        assert_eq!(
            reenroll(&params(
                |p| p.key_usages = vec![KeyUsagePurpose::KeyCertSign]
            )),
            Err(PolicyError::KeyUsageNotAllowed {
                bit: KeyUsageBit::KEY_CERT_SIGN
            })
        );
        assert_eq!(
            reenroll(&params(
                |p| p.custom_extensions = vec![custom(UNKNOWN, true, &[0x05, 0x00])]
            )),
            Err(PolicyError::ExtensionNotAllowed {
                oid: oid("1.3.6.1.4.1.55555.1"),
                critical: true
            })
        );
        // A current certificate whose subject holds O: the unchanged subject is still refused,
        // and so is a CN that is not the certificate's name.
        let key = KeyPair::generate().unwrap();
        let with_o = params(|p| p.distinguished_name.push(DnType::OrganizationName, "Acme"));
        let summary_o = CertSummary::from_der(with_o.self_signed(&key).unwrap().der()).unwrap();
        let v = csr_with(&with_o, Vec::new()).unwrap();
        assert_eq!(
            check_reenroll(&v, &summary_o, &keys),
            Err(PolicyError::SubjectAttributeNotAllowed {
                attribute: oids::ORGANIZATION_NAME
            })
        );
        let mut other_cn = CertificateParams::new(vec![NAME.to_owned()]).unwrap();
        other_cn
            .distinguished_name
            .push(DnType::CommonName, "pledge");
        let summary_cn = CertSummary::from_der(other_cn.self_signed(&key).unwrap().der()).unwrap();
        let v = csr_with(&other_cn, Vec::new()).unwrap();
        assert_eq!(
            check_reenroll(&v, &summary_cn, &keys),
            Err(PolicyError::WrongCommonName {
                asked: "pledge".into(),
                expected: NAME.into()
            })
        );
    }
}
