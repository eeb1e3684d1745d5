//! PKCS#10 certification requests (RFC 2986) built for EST.
//!
//! The request is assembled with x509-cert's types so that a re-enrolment can copy the current
//! certificate's subject byte for byte (RFC 7030 §4.2.2), and signed with the rcgen key.
use der::asn1::{BitString, Ia5String, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Tag};
use estuary_proto::oids;
use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

use crate::error::PledgeError;

const ECDSA_WITH_SHA256: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SHA256_WITH_RSA: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// The subject of a first enrolment: one RDN, commonName = `cn` (UTF8String).
pub fn common_name_subject(cn: &str) -> Result<Name, PledgeError> {
    let value = Any::new(Tag::Utf8String, cn.as_bytes()).map_err(PledgeError::CsrEncode)?;
    let atv = AttributeTypeAndValue {
        oid: oids::COMMON_NAME,
        value,
    };
    let rdn = RelativeDistinguishedName::from(
        SetOfVec::try_from(vec![atv]).map_err(PledgeError::CsrEncode)?,
    );
    Ok(RdnSequence(vec![rdn]))
}

/// A subject Name from its DER (e.g. a current certificate's), kept exactly.
pub fn subject_from_der(der: &[u8]) -> Result<Name, PledgeError> {
    Name::from_der(der).map_err(PledgeError::CsrEncode)
}

/// The signatureAlgorithm rcgen signs with for this key (RFC 5758 §3.2, RFC 8410 §3,
/// RFC 4055 §5: sha256WithRSAEncryption has NULL parameters).
fn signature_algorithm(key: &KeyPair) -> AlgorithmIdentifierOwned {
    let alg = key.algorithm();
    let (oid, null_params) = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        (ECDSA_WITH_SHA256, false)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        (ECDSA_WITH_SHA384, false)
    } else if alg == &rcgen::PKCS_ED25519 {
        (oids::ED25519, false)
    } else {
        (SHA256_WITH_RSA, true)
    };
    AlgorithmIdentifierOwned {
        oid,
        parameters: null_params.then(|| Any::from(der::asn1::Null)),
    }
}

/// Builds and signs a CSR: `subject`, the key's public key, and (when `dns_names` is not empty)
/// an extensionRequest attribute with one non-critical subjectAltName holding `dns_names` as
/// dNSNames in order. Returns the DER.
pub fn build_csr(
    key: &KeyPair,
    subject: &Name,
    dns_names: &[String],
) -> Result<Vec<u8>, PledgeError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(&key.subject_public_key_info())
        .map_err(PledgeError::CsrEncode)?;
    let mut attributes = SetOfVec::new();
    if !dns_names.is_empty() {
        let names = dns_names
            .iter()
            .map(|n| {
                Ia5String::new(n)
                    .map(GeneralName::DnsName)
                    .map_err(|_| PledgeError::BadDnsName(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let san = SubjectAltName(names)
            .to_der()
            .map_err(PledgeError::CsrEncode)?;
        let ext = Extension {
            extn_id: oids::SUBJECT_ALT_NAME,
            critical: false,
            extn_value: OctetString::new(san).map_err(PledgeError::CsrEncode)?,
        };
        let attr = ExtensionReq(vec![ext])
            .try_into()
            .map_err(PledgeError::CsrEncode)?;
        attributes.insert(attr).map_err(PledgeError::CsrEncode)?;
    }
    let info = CertReqInfo {
        version: Version::V1,
        subject: subject.clone(),
        public_key: spki,
        attributes,
    };
    let tbs = info.to_der().map_err(PledgeError::CsrEncode)?;
    let signature = key.sign(&tbs).map_err(PledgeError::CsrSign)?;
    let req = CertReq {
        info,
        algorithm: signature_algorithm(key),
        signature: BitString::from_bytes(&signature).map_err(PledgeError::CsrEncode)?,
    };
    req.to_der().map_err(PledgeError::CsrEncode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyType;
    use estuary_proto::csrattrs::device_template;
    use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
    use estuary_proto::{KeyKind, KeyPolicy};

    fn device() -> DeviceName {
        DeviceName::new(
            &DeviceSerial::parse("Pledge-7").unwrap(),
            &ParentDomain::parse("iot.example.test").unwrap(),
        )
        .unwrap()
    }

    /// The CSR built from what `/csrattrs` names (proto's device_template) carries exactly
    /// that name, passes proto's signature check and the edge's enrolment policy.
    #[test]
    fn csr_from_device_template_holds_exactly_the_requested_name() {
        let name = device();
        let attrs = device_template(&name, &KeyPolicy::default());
        let attrs = estuary_proto::CsrAttrs::from_der(&attrs.to_der().unwrap()).unwrap();
        let names = attrs.requested_dns_names();
        assert_eq!(names, vec!["pledge-7.iot.example.test".to_owned()]);
        for (key_type, kind) in [
            (KeyType::P256, KeyKind::EcdsaP256),
            (KeyType::P384, KeyKind::EcdsaP384),
            (KeyType::Ed25519, KeyKind::Ed25519),
        ] {
            let key = key_type.generate().unwrap();
            let der = build_csr(&key, &common_name_subject(&names[0]).unwrap(), &names).unwrap();
            let csr = estuary_proto::parse_and_verify(&der).unwrap();
            assert_eq!(csr.dns_names(), names.as_slice());
            assert!(!csr.has_non_dns_sans());
            assert_eq!(csr.subject_common_names(), names.as_slice());
            assert_eq!(csr.key(), kind);
            assert_eq!(csr.spki_der(), key.subject_public_key_info().as_slice());
            estuary_proto::check_enroll(&csr, &name, &KeyPolicy::default()).unwrap();
        }
    }

    #[test]
    fn rsa2048_csr_verifies() {
        let key = KeyType::Rsa2048.generate().unwrap();
        let names = vec!["r.iot.example.test".to_owned()];
        let der = build_csr(&key, &common_name_subject(&names[0]).unwrap(), &names).unwrap();
        let csr = estuary_proto::parse_and_verify(&der).unwrap();
        assert_eq!(csr.key(), KeyKind::Rsa { bits: 2048 });
        assert_eq!(csr.dns_names(), names.as_slice());
    }

    /// RFC 7030 §4.2.2: the re-enrolment CSR keeps the subject bytes, including string types
    /// and attribute order that a re-encoding could change.
    #[test]
    fn reenroll_subject_is_copied_byte_for_byte() {
        // SEQUENCE { SET { serialNumber PrintableString "SN1" } SET { CN UTF8String "x.example" } }
        let mut subject = vec![0x30, 0];
        let rdn1 = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x05, 0x13, 0x03, b'S', b'N', b'1',
        ];
        let mut rdn2 = vec![
            0x31, 0x12, 0x30, 0x10, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x09,
        ];
        rdn2.extend_from_slice(b"x.example");
        subject.extend_from_slice(&rdn1);
        subject.extend_from_slice(&rdn2);
        subject[1] = (subject.len() - 2) as u8;
        let name = subject_from_der(&subject).unwrap();
        let key = KeyType::P256.generate().unwrap();
        let names = vec!["x.example".to_owned()];
        let der = build_csr(&key, &name, &names).unwrap();
        let csr = estuary_proto::parse_and_verify(&der).unwrap();
        assert_eq!(csr.subject_der(), subject.as_slice());
        assert_eq!(csr.subject_serial_number(), Some("SN1"));
    }

    #[test]
    fn no_names_means_no_extension_request_and_non_ascii_is_refused() {
        let key = KeyType::P256.generate().unwrap();
        let der = build_csr(&key, &common_name_subject("dev").unwrap(), &[]).unwrap();
        let csr = estuary_proto::parse_and_verify(&der).unwrap();
        assert!(csr.dns_names().is_empty());
        let err = build_csr(
            &key,
            &common_name_subject("dev").unwrap(),
            &["ü.example".to_owned()],
        );
        assert!(matches!(err, Err(PledgeError::BadDnsName(n)) if n == "ü.example"));
    }
}
