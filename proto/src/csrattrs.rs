//! CSR attributes (RFC 7030 §4.5.2, as clarified by RFC 9908).
//!
//! ```text
//! CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
//! AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
//! Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET SIZE(1..MAX) OF ANY }
//! ```
//!
//! The codec keeps every value as its DER and keeps the order of values as received, so
//! `from_der` followed by `to_der` gives back the same bytes.
//!
//! [`device_template`] uses the RFC 9908 reading of an `extensionRequest` attribute: its value
//! is an `Extensions` whose subjectAltName carries the exact dNSName the device must request.
//! Key types follow RFC 9908 §3.2: one `id-ecPublicKey` attribute per accepted curve (value: the
//! curve OID, as in the RFC 7030 §4.5.2 example), an `rsaEncryption` attribute whose value is
//! the smallest accepted modulus size (INTEGER), Ed25519 as a bare OID. The device may use any
//! of the listed key types.
//!
//! The same request is also given as an RFC 9908 §3.4 `CertificationRequestInfoTemplate`
//! (`id-aa-certificationRequestInfoTemplate`), which is the only way to prescribe the subject
//! `CN=<name>`. The enrolment policy accepts an absent CN or one equal to the name.
//! challengePassword is not requested.

use const_oid::ObjectIdentifier;
use der::asn1::AnyRef;
use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
use x509_cert::ext::Extensions;

use crate::derutil::{self, tag};
use crate::names::DeviceName;
use crate::oids;
use crate::policy::KeyPolicy;

/// One entry of a CSR attributes answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttrOrOid {
    /// A bare OID: "include this attribute (or use this algorithm)".
    Oid(ObjectIdentifier),
    /// An attribute with values, each kept as its DER encoding.
    Attribute {
        /// The attribute type.
        oid: ObjectIdentifier,
        /// DER of each value, in order.
        values: Vec<Vec<u8>>,
    },
}

/// A CSR attributes answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CsrAttrs(pub Vec<AttrOrOid>);

/// Why CSR attributes could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrAttrsError {
    /// Not valid DER.
    #[error("CSR attributes are not valid DER: {0}")]
    Malformed(der::Error),
    /// Bytes follow the CsrAttrs SEQUENCE.
    #[error("CSR attributes are followed by trailing data")]
    TrailingData,
    /// The outer element is not a SEQUENCE.
    #[error("CSR attributes are not a SEQUENCE")]
    NotASequence,
    /// An entry is neither an OID nor an Attribute.
    #[error("CSR attributes entry {index} is neither an OID nor an Attribute")]
    BadEntry {
        /// Index of the entry.
        index: usize,
    },
    /// An attribute has no values (values is SET SIZE(1..MAX)).
    #[error("CSR attributes entry {index} has no values")]
    EmptyValues {
        /// Index of the entry.
        index: usize,
    },
    /// An OID shorter than 3 content octets (e.g. `1.2.3`): the DER decoder used here cannot
    /// read those back, so they are refused on encoding too.
    #[error("CSR attributes entry {index} has an OID too short to round-trip")]
    OidTooShort {
        /// Index of the entry.
        index: usize,
    },
    /// A value is not exactly one DER TLV.
    #[error("CSR attributes entry {index} has a value that is not one DER element")]
    BadValue {
        /// Index of the entry.
        index: usize,
    },
}

fn decode_entry(index: usize, entry: &AnyRef<'_>) -> Result<AttrOrOid, CsrAttrsError> {
    let bad = CsrAttrsError::BadEntry { index };
    match entry.tag() {
        Tag::ObjectIdentifier => entry
            .decode_as::<ObjectIdentifier>()
            .map(AttrOrOid::Oid)
            .map_err(CsrAttrsError::Malformed),
        Tag::Sequence => {
            let parts = derutil::tlvs(entry.value()).map_err(CsrAttrsError::Malformed)?;
            let [oid, set] = parts.as_slice() else {
                return Err(bad);
            };
            if oid.tag() != Tag::ObjectIdentifier || set.tag() != Tag::Set {
                return Err(bad);
            }
            let oid: ObjectIdentifier = oid.decode_as().map_err(CsrAttrsError::Malformed)?;
            let values = derutil::tlvs(set.value())
                .map_err(CsrAttrsError::Malformed)?
                .iter()
                .map(derutil::tlv_der)
                .collect::<Result<Vec<_>, _>>()
                .map_err(CsrAttrsError::Malformed)?;
            if values.is_empty() {
                return Err(CsrAttrsError::EmptyValues { index });
            }
            Ok(AttrOrOid::Attribute { oid, values })
        }
        _ => Err(bad),
    }
}

impl CsrAttrs {
    /// Decodes a DER CsrAttrs (no trailing bytes).
    pub fn from_der(der: &[u8]) -> Result<CsrAttrs, CsrAttrsError> {
        let mut reader = SliceReader::new(der).map_err(CsrAttrsError::Malformed)?;
        let outer: AnyRef<'_> = reader.decode().map_err(CsrAttrsError::Malformed)?;
        if !reader.is_finished() {
            return Err(CsrAttrsError::TrailingData);
        }
        if outer.tag() != Tag::Sequence {
            return Err(CsrAttrsError::NotASequence);
        }
        let entries = derutil::tlvs(outer.value()).map_err(CsrAttrsError::Malformed)?;
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| decode_entry(i, e))
            .collect::<Result<Vec<_>, _>>()
            .map(CsrAttrs)
    }

    /// Encodes to DER. Attribute values are written in the order held (callers that build
    /// several values should give them in DER SET OF order).
    pub fn to_der(&self) -> Result<Vec<u8>, CsrAttrsError> {
        let mut body = Vec::new();
        for (index, entry) in self.0.iter().enumerate() {
            let (AttrOrOid::Oid(oid) | AttrOrOid::Attribute { oid, .. }) = entry;
            if oid.as_bytes().len() < 3 {
                return Err(CsrAttrsError::OidTooShort { index });
            }
            match entry {
                AttrOrOid::Oid(oid) => body.extend(derutil::oid_der(oid)),
                AttrOrOid::Attribute { oid, values } => {
                    if values.is_empty() {
                        return Err(CsrAttrsError::EmptyValues { index });
                    }
                    let mut set = Vec::new();
                    for v in values {
                        if derutil::one_tlv(v).is_err() {
                            return Err(CsrAttrsError::BadValue { index });
                        }
                        set.extend_from_slice(v);
                    }
                    let mut attr = derutil::oid_der(oid);
                    attr.extend(derutil::tlv(tag::SET, &set));
                    body.extend(derutil::tlv(tag::SEQUENCE, &attr));
                }
            }
        }
        Ok(derutil::tlv(tag::SEQUENCE, &body))
    }

    /// Whether a bare OID or an attribute of this type is present.
    pub fn mentions(&self, oid: ObjectIdentifier) -> bool {
        self.0.iter().any(|e| match e {
            AttrOrOid::Oid(o) => *o == oid,
            AttrOrOid::Attribute { oid: o, .. } => *o == oid,
        })
    }

    /// The values of the first attribute of this type, if present.
    pub fn attribute_values(&self, oid: ObjectIdentifier) -> Option<&[Vec<u8>]> {
        self.0.iter().find_map(|e| match e {
            AttrOrOid::Attribute { oid: o, values } if *o == oid => Some(values.as_slice()),
            _ => None,
        })
    }

    /// The dNSNames the server asks for: the subjectAltName inside every `extensionRequest`
    /// attribute value (RFC 9908), including one inside a CertificationRequestInfoTemplate.
    /// Undecodable values are skipped (a client ignores what it does not understand).
    pub fn requested_dns_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in &self.0 {
            let AttrOrOid::Attribute { oid, values } = entry else {
                continue;
            };
            for value in values {
                if *oid == oids::EXTENSION_REQUEST {
                    push_sans(value, &mut out);
                } else if *oid == oids::CERTIFICATION_REQUEST_INFO_TEMPLATE {
                    template_sans(value, &mut out);
                }
            }
        }
        // The same name may be given both ways (plain attribute and template): list it once.
        let mut unique: Vec<String> = Vec::with_capacity(out.len());
        for name in out {
            if !unique.iter().any(|u| u.eq_ignore_ascii_case(&name)) {
                unique.push(name);
            }
        }
        unique
    }

    /// The subject commonName value prescribed by a CertificationRequestInfoTemplate
    /// (RFC 9908 §3.4), if any: the first commonName with a UTF8String, PrintableString or
    /// IA5String value in the template's subject.
    pub fn requested_common_name(&self) -> Option<String> {
        self.0.iter().find_map(|e| match e {
            AttrOrOid::Attribute { oid, values }
                if *oid == oids::CERTIFICATION_REQUEST_INFO_TEMPLATE =>
            {
                values.iter().find_map(|v| template_common_name(v))
            }
            _ => None,
        })
    }

    /// The elliptic curves the server accepts (values of an `id-ecPublicKey` attribute).
    pub fn requested_curves(&self) -> Vec<ObjectIdentifier> {
        self.0
            .iter()
            .filter_map(|e| match e {
                AttrOrOid::Attribute { oid, values } if *oid == oids::EC_PUBLIC_KEY => Some(values),
                _ => None,
            })
            .flatten()
            .filter_map(|v| ObjectIdentifier::from_der(v).ok())
            .collect()
    }

    /// The smallest RSA modulus the server asks for (an `rsaEncryption` attribute whose value
    /// is an INTEGER, RFC 9908 §3.2), if any.
    pub fn requested_rsa_bits(&self) -> Option<u32> {
        let value = self.attribute_values(oids::RSA_ENCRYPTION)?.first()?;
        u32::from_der(value).ok()
    }
}

fn push_sans(extensions_der: &[u8], out: &mut Vec<String>) {
    if let Ok(exts) = Extensions::from_der(extensions_der) {
        if let Ok(sans) = derutil::sans_of(&exts) {
            out.extend(sans.dns);
        }
    }
}

/// RFC 9908 §3.4: CertificationRequestInfoTemplate ::= SEQUENCE { version, subject
/// NameTemplate OPTIONAL, subjectPKInfo [0] ... OPTIONAL, attributes [1] Attributes }.
fn template_sans(template_der: &[u8], out: &mut Vec<String>) {
    let Ok(t) = derutil::one_tlv(template_der) else {
        return;
    };
    let Ok(fields) = derutil::tlvs(t.value()) else {
        return;
    };
    let attrs_tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N1,
    };
    for f in fields.iter().filter(|f| f.tag() == attrs_tag) {
        let Ok(attrs) = derutil::tlvs(f.value()) else {
            continue;
        };
        for (i, a) in attrs.iter().enumerate() {
            if let Ok(AttrOrOid::Attribute { oid, values }) = decode_entry(i, a) {
                if oid == oids::EXTENSION_REQUEST {
                    for v in &values {
                        push_sans(v, out);
                    }
                }
            }
        }
    }
}

/// The commonName value in a template's NameTemplate:
/// `SEQUENCE OF SET OF SEQUENCE { type OID, value ANY OPTIONAL }`.
fn template_common_name(template_der: &[u8]) -> Option<String> {
    let t = derutil::one_tlv(template_der).ok()?;
    let fields = derutil::tlvs(t.value()).ok()?;
    let subject = fields.iter().find(|f| f.tag() == Tag::Sequence)?;
    for rdn in derutil::tlvs(subject.value()).ok()? {
        for atv in derutil::tlvs(rdn.value()).ok()? {
            let parts = derutil::tlvs(atv.value()).ok()?;
            let (Some(ty), Some(value)) = (parts.first(), parts.get(1)) else {
                continue;
            };
            if ty.decode_as::<ObjectIdentifier>().ok() != Some(oids::COMMON_NAME) {
                continue;
            }
            let any = der::Any::from(*value);
            if let Ok(cn) = derutil::directory_string(&any) {
                return Some(cn);
            }
        }
    }
    None
}

/// RFC 9908 §3.4 CertificationRequestInfoTemplate for one device: version v1(0), subject
/// `CN=<name>`, no subjectPKInfo (several key types are allowed), attributes `[1]` holding an
/// extensionRequest with the subjectAltName (all values given, so the plain extensionRequest
/// rather than id-aa-extensionReqTemplate).
fn cri_template(name: &str) -> Vec<u8> {
    let mut atv = derutil::oid_der(&oids::COMMON_NAME);
    atv.extend(derutil::tlv(0x0c, name.as_bytes())); // UTF8String
    let rdn = derutil::tlv(tag::SET, &derutil::tlv(tag::SEQUENCE, &atv));
    let subject = derutil::tlv(tag::SEQUENCE, &rdn);

    let mut ext_req = derutil::oid_der(&oids::EXTENSION_REQUEST);
    ext_req.extend(derutil::tlv(tag::SET, &san_extensions(name)));
    let attributes = derutil::tlv(0xa1, &derutil::tlv(tag::SEQUENCE, &ext_req));

    let mut body = derutil::tlv(tag::INTEGER, &[0]);
    body.extend(subject);
    body.extend(attributes);
    derutil::tlv(tag::SEQUENCE, &body)
}

/// DER of `Extensions` holding one non-critical subjectAltName with one dNSName.
fn san_extensions(name: &str) -> Vec<u8> {
    // GeneralName dNSName is [2] IMPLICIT IA5String.
    let general_names = derutil::tlv(tag::SEQUENCE, &derutil::tlv(0x82, name.as_bytes()));
    let mut ext = derutil::oid_der(&oids::SUBJECT_ALT_NAME);
    ext.extend(derutil::tlv(0x04, &general_names));
    derutil::tlv(tag::SEQUENCE, &derutil::tlv(tag::SEQUENCE, &ext))
}

/// DER of a non-negative INTEGER.
fn integer_der(v: u32) -> Vec<u8> {
    let be = v.to_be_bytes();
    let skip = be.iter().take_while(|b| **b == 0).count().min(3);
    let mut content: Vec<u8> = be.get(skip..).unwrap_or_default().to_vec();
    if content.first().is_some_and(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    derutil::tlv(tag::INTEGER, &content)
}

/// What Estuary tells one device at `/csrattrs`: the one dNSName it must put in its
/// subjectAltName (an `extensionRequest` attribute with the value filled in, RFC 9908 §3.3),
/// the key types `keys` accepts, and the same name as an RFC 9908 §3.4
/// CertificationRequestInfoTemplate (subject `CN=<name>` plus the subjectAltName) for clients
/// that understand templates; clients that do not ignore that attribute. challengePassword is
/// not requested.
pub fn device_template(name: &DeviceName, keys: &KeyPolicy) -> CsrAttrs {
    let mut entries = Vec::new();
    if keys.allows_rsa() {
        entries.push(AttrOrOid::Attribute {
            oid: oids::RSA_ENCRYPTION,
            values: vec![integer_der(keys.rsa_min_bits)],
        });
    }
    // RFC 9908 §3.2: an id-ecPublicKey attribute names one curve; one attribute per
    // accepted curve, the device picks any.
    for (allowed, curve) in [
        (keys.allow_p256, oids::SECP256R1),
        (keys.allow_p384, oids::SECP384R1),
    ] {
        if allowed {
            entries.push(AttrOrOid::Attribute {
                oid: oids::EC_PUBLIC_KEY,
                values: vec![derutil::oid_der(&curve)],
            });
        }
    }
    if keys.allow_ed25519 {
        entries.push(AttrOrOid::Oid(oids::ED25519));
    }
    entries.push(AttrOrOid::Attribute {
        oid: oids::EXTENSION_REQUEST,
        values: vec![san_extensions(name.as_str())],
    });
    entries.push(AttrOrOid::Attribute {
        oid: oids::CERTIFICATION_REQUEST_INFO_TEMPLATE,
        values: vec![cri_template(name.as_str())],
    });
    CsrAttrs(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{DeviceSerial, ParentDomain};

    /// RFC 7030 §4.5.2, the example CsrAttrs: challengePassword, an ecPublicKey attribute with
    /// secp384r1, an extensionRequest attribute with macAddress (1.3.6.1.1.1.1.22), and
    /// ecdsa-with-SHA384. <https://www.rfc-editor.org/rfc/rfc7030#section-4.5.2>
    const RFC7030_EXAMPLE: &str = "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw==";

    fn oid(s: &str) -> ObjectIdentifier {
        ObjectIdentifier::new(s).unwrap()
    }

    #[test]
    fn rfc7030_section_4_5_2_example() {
        let der = crate::base64::decode(RFC7030_EXAMPLE.as_bytes()).unwrap();
        let attrs = CsrAttrs::from_der(&der).unwrap();
        assert_eq!(
            attrs.0,
            vec![
                AttrOrOid::Oid(oid("1.2.840.113549.1.9.7")),
                AttrOrOid::Attribute {
                    oid: oid("1.2.840.10045.2.1"),
                    values: vec![derutil::oid_der(&oid("1.3.132.0.34"))],
                },
                AttrOrOid::Attribute {
                    oid: oid("1.2.840.113549.1.9.14"),
                    values: vec![derutil::oid_der(&oid("1.3.6.1.1.1.1.22"))],
                },
                AttrOrOid::Oid(oid("1.2.840.10045.4.3.3")),
            ]
        );
        assert!(attrs.mentions(oids::CHALLENGE_PASSWORD));
        assert_eq!(attrs.requested_curves(), vec![oids::SECP384R1]);
        // The extensionRequest value here is a bare OID, not Extensions: no names.
        assert!(attrs.requested_dns_names().is_empty());
        assert_eq!(attrs.to_der().unwrap(), der);
        assert_eq!(
            crate::base64::encode(&der).replace("\r\n", ""),
            RFC7030_EXAMPLE
        );
    }

    #[test]
    fn every_prefix_and_trailing() {
        let der = crate::base64::decode(RFC7030_EXAMPLE.as_bytes()).unwrap();
        for len in 0..der.len() {
            assert!(CsrAttrs::from_der(&der[..len]).is_err(), "prefix {len}");
        }
        let mut long = der.clone();
        long.push(0);
        assert_eq!(CsrAttrs::from_der(&long), Err(CsrAttrsError::TrailingData));
    }

    #[test]
    fn empty_and_bad_entries() {
        assert_eq!(CsrAttrs::from_der(&[0x30, 0]).unwrap(), CsrAttrs(vec![]));
        assert_eq!(CsrAttrs(vec![]).to_der().unwrap(), vec![0x30, 0]);
        assert_eq!(
            CsrAttrs::from_der(&[0x31, 0]),
            Err(CsrAttrsError::NotASequence)
        );
        // SEQUENCE { INTEGER 1 }
        assert_eq!(
            CsrAttrs::from_der(&[0x30, 3, 2, 1, 1]),
            Err(CsrAttrsError::BadEntry { index: 0 })
        );
        // SEQUENCE { SEQUENCE { OID 2.5.4.3, SET {} } }
        let empty_set = [0x30, 9, 0x30, 7, 6, 3, 0x55, 4, 3, 0x31, 0];
        assert_eq!(
            CsrAttrs::from_der(&empty_set),
            Err(CsrAttrsError::EmptyValues { index: 0 })
        );
        let bad = CsrAttrs(vec![AttrOrOid::Attribute {
            oid: oids::COMMON_NAME,
            values: vec![vec![0x04, 5, 1]],
        }]);
        assert_eq!(bad.to_der(), Err(CsrAttrsError::BadValue { index: 0 }));
        let none = CsrAttrs(vec![AttrOrOid::Attribute {
            oid: oids::COMMON_NAME,
            values: vec![],
        }]);
        assert_eq!(none.to_der(), Err(CsrAttrsError::EmptyValues { index: 0 }));
        let short = CsrAttrs(vec![AttrOrOid::Oid(ObjectIdentifier::new_unwrap("1.2.3"))]);
        assert_eq!(short.to_der(), Err(CsrAttrsError::OidTooShort { index: 0 }));
    }

    #[test]
    fn device_template_names_the_device() {
        let parent = ParentDomain::parse("iot.example.test").unwrap();
        let name = DeviceName::new(&DeviceSerial::parse("Dev1").unwrap(), &parent).unwrap();
        let attrs = device_template(&name, &KeyPolicy::default());
        let der = attrs.to_der().unwrap();
        let back = CsrAttrs::from_der(&der).unwrap();
        assert_eq!(back, attrs);
        assert_eq!(back.requested_dns_names(), vec!["dev1.iot.example.test"]);
        assert_eq!(
            back.requested_curves(),
            vec![oids::SECP256R1, oids::SECP384R1]
        );
        assert_eq!(back.requested_rsa_bits(), Some(2048));
        assert!(back.mentions(oids::ED25519));
        assert!(!back.mentions(oids::CHALLENGE_PASSWORD));
        assert_eq!(
            back.requested_common_name().as_deref(),
            Some("dev1.iot.example.test")
        );
        // The template alone also yields the name.
        let only_template = CsrAttrs(
            back.0
                .iter()
                .filter(|e| matches!(e, AttrOrOid::Attribute { oid, .. } if *oid == oids::CERTIFICATION_REQUEST_INFO_TEMPLATE))
                .cloned()
                .collect(),
        );
        assert_eq!(only_template.0.len(), 1);
        assert_eq!(
            only_template.requested_dns_names(),
            vec!["dev1.iot.example.test"]
        );
        // The extensionRequest value is an Extensions that x509-cert reads as one SAN.
        let ext = back.attribute_values(oids::EXTENSION_REQUEST).unwrap();
        let exts = Extensions::from_der(&ext[0]).unwrap();
        assert_eq!(exts.len(), 1);
        assert_eq!(exts[0].extn_id, oids::SUBJECT_ALT_NAME);
        assert!(!exts[0].critical);

        let ec_only = KeyPolicy {
            rsa_min_bits: 1,
            rsa_max_bits: 0,
            allow_p256: true,
            allow_p384: false,
            allow_ed25519: false,
        };
        let attrs = device_template(&name, &ec_only);
        assert_eq!(attrs.requested_rsa_bits(), None);
        assert!(!attrs.mentions(oids::RSA_ENCRYPTION));
        assert_eq!(attrs.requested_curves(), vec![oids::SECP256R1]);
        assert!(!attrs.mentions(oids::ED25519));
    }

    #[test]
    fn integers() {
        assert_eq!(integer_der(0), vec![2, 1, 0]);
        assert_eq!(integer_der(127), vec![2, 1, 127]);
        assert_eq!(integer_der(128), vec![2, 2, 0, 128]);
        assert_eq!(integer_der(2048), vec![2, 2, 8, 0]);
        assert_eq!(u32::from_der(&integer_der(4096)).unwrap(), 4096);
    }
}
