//! Pure EST enrolment policy, used by both the edge filter and the control plane.

use crate::cert::CertSummary;
use crate::csr::{KeyKind, VerifiedCsr};
use crate::names::DeviceName;

/// Which keys a CSR may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

fn check_key(csr: &VerifiedCsr, keys: &KeyPolicy) -> Result<(), PolicyError> {
    if keys.allows(csr.key()) {
        Ok(())
    } else {
        Err(PolicyError::KeyNotAllowed { key: csr.key() })
    }
}

/// First enrolment: the SAN must be exactly one dNSName equal to `expected` (case-insensitive),
/// with no other kind of SAN; every subject commonName must equal it too; the key must be
/// allowed.
pub fn check_enroll(
    csr: &VerifiedCsr,
    expected: &DeviceName,
    keys: &KeyPolicy,
) -> Result<(), PolicyError> {
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
    check_key(csr, keys)
}

/// Re-enrolment (RFC 7030 §4.2.2): the subject (DER) and the SAN dNSNames (case-insensitive, in
/// order) must equal those of the current certificate, no non-DNS SAN, and the key must be
/// allowed.
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
    check_key(csr, keys)
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
