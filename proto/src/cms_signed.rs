//! CMS SignedData with one signer and encapsulated content (RFC 5652 §5), as BRSKI uses it for
//! voucher requests and vouchers (RFC 8995 §3.3, RFC 8366 §6.3: eContentType
//! id-ct-animaJSONVoucher, the JSON as eContent, the signer certificate included).
//!
//! Signing is ECDSA P-256 with SHA-256, deterministic (RFC 6979), so no RNG is needed. The
//! signer is identified by issuerAndSerialNumber; `signedAttrs` carry contentType and
//! messageDigest (RFC 5652 §5.3 requires them when the content is not id-data).
//!
//! Verification accepts what OpenSSL's `cms -sign` produces: issuerAndSerialNumber or
//! subjectKeyIdentifier, signed attributes present or absent, RSA, ECDSA or Ed25519 keys. It
//! checks the signature with the included signer certificate only: whether that certificate is
//! the one the caller expects (the TLS IDevID, a MASA anchor) is the caller's decision, helped by
//! [`verify_issued_by`] and [`chains_to`].

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier as Oid;
use der::asn1::{Any, OctetString, OctetStringRef, SetOfVec};
use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use crate::csr;
use crate::oids;

/// id-ct-animaJSONVoucher (RFC 8366 §8.3): eContentType of vouchers and voucher requests.
pub const ANIMA_JSON_VOUCHER: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.40");
/// id-contentType attribute (RFC 5652 §11.1).
pub const ATTR_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
/// id-messageDigest attribute (RFC 5652 §11.2).
pub const ATTR_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
/// id-sha256 (RFC 5754 §2.2).
pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-sha384 (RFC 5754 §2.3).
pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
/// id-sha512 (RFC 5754 §2.4).
pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Why a signed object could not be built, read or verified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmsError {
    /// Not valid DER, or not the structure RFC 5652 describes.
    #[error("CMS is not valid DER: {0}")]
    Malformed(der::Error),
    /// The ContentInfo is not id-signedData.
    #[error("CMS content type {0} is not signedData")]
    NotSignedData(Oid),
    /// The eContentType is not the one expected.
    #[error("CMS eContentType {found} is not the expected {expected}")]
    WrongContentType {
        /// Found.
        found: Oid,
        /// Expected.
        expected: Oid,
    },
    /// The content is detached (not in the SignedData).
    #[error("CMS has no encapsulated content (detached signatures are not accepted)")]
    NoContent,
    /// Not exactly one SignerInfo.
    #[error("CMS must have exactly one signer, it has {0}")]
    SignerCount(usize),
    /// The signer's certificate is not in the SignedData.
    #[error("the signer's certificate is not included in the CMS")]
    SignerCertificateMissing,
    /// A certificate in the set does not decode.
    #[error("a certificate in the CMS is malformed")]
    BadCertificate,
    /// The digest algorithm is not SHA-2.
    #[error("unsupported digest algorithm {0}")]
    UnsupportedDigest(Oid),
    /// The signed attributes lack contentType or messageDigest, or they disagree.
    #[error("CMS signed attributes are missing or inconsistent: {0}")]
    BadSignedAttributes(&'static str),
    /// The signature does not verify with the signer certificate's key (or uses an unsupported
    /// algorithm or key).
    #[error("CMS signature does not verify: {0}")]
    BadSignature(String),
    /// The signing key is not a usable P-256 key.
    #[error("signing key is not a PKCS#8 P-256 private key")]
    BadSigningKey,
    /// The certificate is not issued by the given issuer (name or signature).
    #[error("certificate is not issued by the trust anchor")]
    NotIssuedBy,
}

/// The content of a SignedData and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedContent {
    /// eContentType.
    pub content_type: Oid,
    /// The encapsulated content (the voucher JSON).
    pub content: Vec<u8>,
    /// DER of the signer's certificate (from the certificate set).
    pub signer_cert: Vec<u8>,
    /// DER of every certificate in the set, in order (signer included).
    pub certs: Vec<Vec<u8>>,
}

fn malformed(e: der::Error) -> CmsError {
    CmsError::Malformed(e)
}

struct Parsed {
    sd: SignedData,
    signer: SignerInfo,
    content: Vec<u8>,
    certs: Vec<(Certificate, Vec<u8>)>,
    signer_index: usize,
}

fn parse_inner(der: &[u8], expected: Oid) -> Result<Parsed, CmsError> {
    let ci = ContentInfo::from_der(der).map_err(malformed)?;
    if ci.content_type != oids::SIGNED_DATA {
        return Err(CmsError::NotSignedData(ci.content_type));
    }
    let sd: SignedData = ci.content.decode_as().map_err(malformed)?;
    let eci = &sd.encap_content_info;
    if eci.econtent_type != expected {
        return Err(CmsError::WrongContentType {
            found: eci.econtent_type,
            expected,
        });
    }
    let content = match &eci.econtent {
        Some(any) => any
            .decode_as::<OctetStringRef<'_>>()
            .map_err(malformed)?
            .as_bytes()
            .to_vec(),
        None => return Err(CmsError::NoContent),
    };
    let signers = sd.signer_infos.0.as_slice();
    let signer = match signers {
        [one] => one.clone(),
        other => return Err(CmsError::SignerCount(other.len())),
    };
    let mut certs = Vec::new();
    if let Some(set) = &sd.certificates {
        for choice in set.0.iter() {
            if let CertificateChoices::Certificate(c) = choice {
                let d = c.to_der().map_err(|_| CmsError::BadCertificate)?;
                certs.push((c.clone(), d));
            }
        }
    }
    let signer_index = certs
        .iter()
        .position(|(c, _)| identifies(&signer.sid, c))
        .ok_or(CmsError::SignerCertificateMissing)?;
    Ok(Parsed {
        sd,
        signer,
        content,
        certs,
        signer_index,
    })
}

fn identifies(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = &cert.tbs_certificate;
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == tbs.issuer && ias.serial_number == tbs.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(skid) => tbs
            .extensions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|e| {
                e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER
                    && SubjectKeyIdentifier::from_der(e.extn_value.as_bytes())
                        .is_ok_and(|k| k.0 == skid.0)
            }),
    }
}

fn digest(alg: Oid, msg: &[u8]) -> Result<Vec<u8>, CmsError> {
    match alg {
        SHA256 => Ok(Sha256::digest(msg).to_vec()),
        SHA384 => Ok(Sha384::digest(msg).to_vec()),
        SHA512 => Ok(Sha512::digest(msg).to_vec()),
        other => Err(CmsError::UnsupportedDigest(other)),
    }
}

/// Reads a SignedData of eContentType `expected` WITHOUT checking its signature: for the edge,
/// which only refuses what cannot be a voucher request. Never trust the result.
pub fn parse_unverified(der: &[u8], expected: Oid) -> Result<SignedContent, CmsError> {
    let p = parse_inner(der, expected)?;
    Ok(content_of(p))
}

fn content_of(p: Parsed) -> SignedContent {
    let signer_cert = p
        .certs
        .get(p.signer_index)
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    SignedContent {
        content_type: p.sd.encap_content_info.econtent_type,
        content: p.content,
        signer_cert,
        certs: p.certs.into_iter().map(|(_, d)| d).collect(),
    }
}

/// Reads a SignedData of eContentType `expected` and verifies its one signature with the
/// signer certificate it includes (RFC 5652 §5.4, §5.6).
pub fn verify(der: &[u8], expected: Oid) -> Result<SignedContent, CmsError> {
    let p = parse_inner(der, expected)?;
    let signer = &p.signer;
    let content_digest = digest(signer.digest_alg.oid, &p.content)?;
    let signed_bytes = match &signer.signed_attrs {
        None => p.content.clone(),
        Some(attrs) => {
            let mut ct_ok = false;
            let mut md_ok = false;
            for a in attrs.iter() {
                let mut values = a.values.iter();
                let (Some(v), None) = (values.next(), values.next()) else {
                    return Err(CmsError::BadSignedAttributes("attribute without one value"));
                };
                if a.oid == ATTR_CONTENT_TYPE {
                    let oid: Oid = v
                        .decode_as()
                        .map_err(|_| CmsError::BadSignedAttributes("contentType"))?;
                    if oid != p.sd.encap_content_info.econtent_type || ct_ok {
                        return Err(CmsError::BadSignedAttributes("contentType"));
                    }
                    ct_ok = true;
                } else if a.oid == ATTR_MESSAGE_DIGEST {
                    let md: OctetStringRef<'_> = v
                        .decode_as()
                        .map_err(|_| CmsError::BadSignedAttributes("messageDigest"))?;
                    if md.as_bytes() != content_digest.as_slice() || md_ok {
                        return Err(CmsError::BadSignedAttributes(
                            "messageDigest does not match the content",
                        ));
                    }
                    md_ok = true;
                }
            }
            if !(ct_ok && md_ok) {
                return Err(CmsError::BadSignedAttributes(
                    "contentType and messageDigest are required",
                ));
            }
            // The signature covers the DER of the SET OF (tag 0x31), RFC 5652 §5.4.
            attrs.to_der().map_err(malformed)?
        }
    };
    let (cert, _) = p
        .certs
        .get(p.signer_index)
        .ok_or(CmsError::SignerCertificateMissing)?;
    check_signature(
        cert,
        &signer.signature_algorithm,
        Some(signer.digest_alg.oid),
        &signed_bytes,
        signer.signature.as_bytes(),
    )?;
    Ok(content_of(p))
}

fn check_signature(
    signer: &Certificate,
    alg: &AlgorithmIdentifierOwned,
    digest_alg: Option<Oid>,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), CmsError> {
    let spki_der = signer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(malformed)?;
    let spki = SubjectPublicKeyInfoRef::from_der(&spki_der).map_err(malformed)?;
    let key = csr::public_key(&spki).map_err(|e| CmsError::BadSignature(e.to_string()))?;
    // Some signers name the key algorithm (id-ecPublicKey) as signatureAlgorithm; RFC 5753 §2.1.1
    // then takes the hash from digestAlgorithm.
    let oid = match (alg.oid, digest_alg) {
        (oids::EC_PUBLIC_KEY, Some(SHA256)) => oids::ECDSA_WITH_SHA256,
        (oids::EC_PUBLIC_KEY, Some(SHA384)) => oids::ECDSA_WITH_SHA384,
        (oid, _) => oid,
    };
    let params_der = match &alg.parameters {
        Some(p) if oid == alg.oid => Some(p.to_der().map_err(malformed)?),
        _ => None,
    };
    let params = match &params_der {
        Some(d) => Some(der::asn1::AnyRef::from_der(d).map_err(malformed)?),
        None => None,
    };
    let alg_ref = AlgorithmIdentifierRef {
        oid,
        parameters: params,
    };
    csr::verify(&key, &alg_ref, msg, sig).map_err(|e| CmsError::BadSignature(e.to_string()))
}

/// Checks that `cert_der` names `issuer_der`'s subject as issuer and carries its signature.
pub fn verify_issued_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<(), CmsError> {
    let cert = Certificate::from_der(cert_der).map_err(|_| CmsError::BadCertificate)?;
    let issuer = Certificate::from_der(issuer_der).map_err(|_| CmsError::BadCertificate)?;
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(CmsError::NotIssuedBy);
    }
    let tbs = cert.tbs_certificate.to_der().map_err(malformed)?;
    let sig = cert.signature.as_bytes().ok_or(CmsError::NotIssuedBy)?;
    check_signature(&issuer, &cert.signature_algorithm, None, &tbs, sig)
        .map_err(|_| CmsError::NotIssuedBy)
}

/// [`verify_issued_by`], where `memo` may vouch for this exact pair of certificates (the
/// signature is then not verified again) and learns of every pair that verifies. The pair is
/// named by [`issued_by_digest`]; the names are compared before, so that a certificate from
/// another issuer costs neither a digest nor a memo lookup.
pub fn verify_issued_by_memo(
    cert_der: &[u8],
    issuer_der: &[u8],
    memo: Option<&mut dyn crate::csr::SignatureMemo>,
) -> Result<(), CmsError> {
    let Some(memo) = memo else {
        return verify_issued_by(cert_der, issuer_der);
    };
    let cert = Certificate::from_der(cert_der).map_err(|_| CmsError::BadCertificate)?;
    let issuer = Certificate::from_der(issuer_der).map_err(|_| CmsError::BadCertificate)?;
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(CmsError::NotIssuedBy);
    }
    let digest = issued_by_digest(cert_der, issuer_der);
    if memo.verified(&digest) {
        return Ok(());
    }
    let tbs = cert.tbs_certificate.to_der().map_err(malformed)?;
    let sig = cert.signature.as_bytes().ok_or(CmsError::NotIssuedBy)?;
    check_signature(&issuer, &cert.signature_algorithm, None, &tbs, sig)
        .map_err(|_| CmsError::NotIssuedBy)?;
    memo.remember(&digest);
    Ok(())
}

/// The name under which "`issuer_der` signed `cert_der`" is remembered: SHA-256 of a domain
/// label, the certificate's length (4 bytes, big-endian), the certificate and the issuer, so that
/// it never equals a CSR's digest (SHA-256 of a DER SEQUENCE) nor another pair's.
pub fn issued_by_digest(cert_der: &[u8], issuer_der: &[u8]) -> [u8; 32] {
    let len = u32::try_from(cert_der.len()).unwrap_or(u32::MAX);
    Sha256::new()
        .chain_update(b"estuary issued-by v1\0")
        .chain_update(len.to_be_bytes())
        .chain_update(cert_der)
        .chain_update(issuer_der)
        .finalize()
        .into()
}

/// True when `signer` is `anchor` itself, is issued by it, or is issued by one of
/// `intermediates` that is issued by it (one intermediate at most).
pub fn chains_to(signer: &[u8], intermediates: &[Vec<u8>], anchor: &[u8]) -> bool {
    if signer == anchor || verify_issued_by(signer, anchor).is_ok() {
        return true;
    }
    intermediates.iter().any(|i| {
        i.as_slice() != signer
            && verify_issued_by(signer, i).is_ok()
            && verify_issued_by(i, anchor).is_ok()
    })
}

/// A P-256 signing key read from PKCS#8 DER (what rcgen and `openssl genpkey` write).
pub fn signing_key_from_pkcs8_der(der: &[u8]) -> Result<p256::ecdsa::SigningKey, CmsError> {
    use p256::pkcs8::DecodePrivateKey;
    p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| CmsError::BadSigningKey)
}

/// Signs `content` as a SignedData of eContentType `content_type` with `key`, whose certificate
/// is `signer_cert` (DER); `chain` certificates are included after it.
pub fn sign(
    content_type: Oid,
    content: &[u8],
    signer_cert: &[u8],
    chain: &[Vec<u8>],
    key: &p256::ecdsa::SigningKey,
) -> Result<Vec<u8>, CmsError> {
    use p256::ecdsa::signature::hazmat::PrehashSigner;

    let cert = Certificate::from_der(signer_cert).map_err(|_| CmsError::BadCertificate)?;
    let cert_key = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    let our_key = key.verifying_key().to_encoded_point(false);
    if cert_key != our_key.as_bytes() {
        return Err(CmsError::BadSigningKey);
    }
    let sha256 = AlgorithmIdentifierOwned {
        oid: SHA256,
        parameters: None,
    };
    let attr = |oid: Oid, value: Any| -> Result<Attribute, CmsError> {
        let values = SetOfVec::try_from(vec![value]).map_err(malformed)?;
        Ok(Attribute { oid, values })
    };
    let ct_value = Any::encode_from(&content_type).map_err(malformed)?;
    let md = OctetString::new(Sha256::digest(content).to_vec()).map_err(malformed)?;
    let md_value = Any::encode_from(&md).map_err(malformed)?;
    let attrs = SetOfVec::try_from(vec![
        attr(ATTR_CONTENT_TYPE, ct_value)?,
        attr(ATTR_MESSAGE_DIGEST, md_value)?,
    ])
    .map_err(malformed)?;
    let to_sign = attrs.to_der().map_err(malformed)?;
    let prehash = Sha256::digest(&to_sign);
    let sig: p256::ecdsa::Signature = key
        .sign_prehash(&prehash)
        .map_err(|_| CmsError::BadSigningKey)?;
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs: Some(attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: oids::ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: OctetString::new(sig.to_der().as_bytes().to_vec()).map_err(malformed)?,
        unsigned_attrs: None,
    };
    let mut certs = vec![CertificateChoices::Certificate(cert)];
    for c in chain {
        certs.push(CertificateChoices::Certificate(
            Certificate::from_der(c).map_err(|_| CmsError::BadCertificate)?,
        ));
    }
    let econtent = OctetString::new(content.to_vec()).map_err(malformed)?;
    let sd = SignedData {
        // RFC 5652 §5.1: version 3 when eContentType is not id-data.
        version: CmsVersion::V3,
        digest_algorithms: SetOfVec::try_from(vec![sha256]).map_err(malformed)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: content_type,
            econtent: Some(Any::encode_from(&econtent).map_err(malformed)?),
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(certs).map_err(malformed)?,
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).map_err(malformed)?),
    };
    let ci = ContentInfo {
        content_type: oids::SIGNED_DATA,
        content: Any::encode_from(&sd).map_err(malformed)?,
    };
    ci.to_der().map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_and_cert(
        cn: &str,
    ) -> (
        p256::ecdsa::SigningKey,
        Vec<u8>,
        rcgen::Issuer<'static, rcgen::KeyPair>,
    ) {
        let kp = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&kp).unwrap();
        let sk = signing_key_from_pkcs8_der(&kp.serialize_der()).unwrap();
        (sk, cert.der().to_vec(), rcgen::Issuer::new(params, kp))
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let (sk, cert, _) = key_and_cert("signer");
        let body = br#"{"ietf-voucher:voucher":{"nonce":"x"}}"#;
        let der = sign(ANIMA_JSON_VOUCHER, body, &cert, &[], &sk).unwrap();
        let got = verify(&der, ANIMA_JSON_VOUCHER).unwrap();
        assert_eq!(got.content, body);
        assert_eq!(got.signer_cert, cert);
        assert_eq!(
            verify(&der, oids::DATA).unwrap_err(),
            CmsError::WrongContentType {
                found: ANIMA_JSON_VOUCHER,
                expected: oids::DATA
            }
        );
    }

    #[test]
    fn any_flipped_byte_is_refused_or_harmless() {
        let (sk, cert, _) = key_and_cert("signer");
        let body = b"{\"a\":1}";
        let der = sign(ANIMA_JSON_VOUCHER, body, &cert, &[], &sk).unwrap();
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            if let Ok(got) = verify(&bad, ANIMA_JSON_VOUCHER) {
                // Only bytes outside what is signed may change (e.g. a certificate's
                // signature): the content and its signer key stay the same.
                assert_eq!(got.content, body, "byte {i}");
            }
        }
        for n in 0..der.len() {
            assert!(verify(&der[..n], ANIMA_JSON_VOUCHER).is_err());
        }
    }

    #[test]
    fn wrong_key_for_certificate_is_refused() {
        let (sk, _, _) = key_and_cert("a");
        let (_, other_cert, _) = key_and_cert("b");
        assert_eq!(
            sign(ANIMA_JSON_VOUCHER, b"{}", &other_cert, &[], &sk).unwrap_err(),
            CmsError::BadSigningKey
        );
    }

    #[test]
    fn issued_by_and_chains() {
        let (_, ca_cert, ca) = key_and_cert("ca");
        let (_, other_ca, _) = key_and_cert("other");
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "leaf");
        let leaf = p.signed_by(&leaf_key, &ca).unwrap().der().to_vec();
        assert!(verify_issued_by(&leaf, &ca_cert).is_ok());
        assert_eq!(
            verify_issued_by(&leaf, &other_ca),
            Err(CmsError::NotIssuedBy)
        );
        assert!(chains_to(&leaf, &[], &ca_cert));
        assert!(!chains_to(&leaf, &[], &other_ca));
        assert!(chains_to(&ca_cert, &[], &ca_cert));
    }
}
