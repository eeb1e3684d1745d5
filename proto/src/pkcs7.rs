//! CMS certs-only SignedData ("degenerate PKCS#7"), RFC 7030 §4.1.3 and RFC 5652 §5.
//!
//! ```text
//! ContentInfo ::= SEQUENCE { contentType id-signedData, content [0] EXPLICIT SignedData }
//! SignedData ::= SEQUENCE {
//!   version 1, digestAlgorithms SET {} (empty),
//!   encapContentInfo SEQUENCE { eContentType id-data } (no eContent),
//!   certificates [0] IMPLICIT CertificateSet, -- in the caller's order
//!   signerInfos SET {} (empty) }
//! ```
//!
//! Certificates are kept in the order given (leaf first, then the chain), as OpenSSL does,
//! rather than re-sorted as a DER SET OF would be; decoding accepts any order.

use der::asn1::AnyRef;
use der::{Reader, SliceReader, Tag, TagNumber, Tagged};

use crate::derutil::{self, tag};
use crate::oids;

/// Why a certs-only PKCS#7 could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs7Error {
    /// Not valid DER.
    #[error("PKCS#7 is not valid DER: {0}")]
    Malformed(der::Error),
    /// Bytes follow the ContentInfo.
    #[error("PKCS#7 is followed by trailing data")]
    TrailingData,
    /// The content type is not id-signedData.
    #[error("PKCS#7 content type {oid} is not signedData")]
    NotSignedData {
        /// The contentType found.
        oid: const_oid::ObjectIdentifier,
    },
    /// The encapsulated content type is not id-data.
    #[error("encapsulated content type {oid} is not id-data")]
    UnexpectedContentType {
        /// The eContentType found.
        oid: const_oid::ObjectIdentifier,
    },
    /// The encapsulated content is present (certs-only has none).
    #[error("certs-only PKCS#7 must not carry content")]
    HasContent,
    /// A structural element is missing or has the wrong tag.
    #[error("PKCS#7 field {field} is missing or has the wrong type")]
    BadField {
        /// Name of the field in RFC 5652.
        field: &'static str,
    },
    /// A CertificateChoices entry that is not a plain X.509 certificate.
    #[error("certificate {index} is not an X.509 certificate")]
    NotACertificate {
        /// Index in the certificate set.
        index: usize,
    },
    /// There are no certificates.
    #[error("PKCS#7 carries no certificates")]
    NoCertificates,
}

/// Builds a certs-only SignedData holding `certs` (each one DER Certificate) in order.
pub fn encode_certs_only(certs: &[Vec<u8>]) -> Result<Vec<u8>, Pkcs7Error> {
    if certs.is_empty() {
        return Err(Pkcs7Error::NoCertificates);
    }
    let mut cert_set = Vec::new();
    for (index, cert) in certs.iter().enumerate() {
        match derutil::one_tlv(cert) {
            Ok(any) if any.tag() == Tag::Sequence => cert_set.extend_from_slice(cert),
            _ => return Err(Pkcs7Error::NotACertificate { index }),
        }
    }
    let mut sd = Vec::new();
    sd.extend(derutil::tlv(tag::INTEGER, &[1]));
    sd.extend(derutil::tlv(tag::SET, &[]));
    sd.extend(derutil::tlv(tag::SEQUENCE, &derutil::oid_der(&oids::DATA)));
    sd.extend(derutil::tlv(tag::CONTEXT_0_CONSTRUCTED, &cert_set));
    sd.extend(derutil::tlv(tag::SET, &[]));
    let sd = derutil::tlv(tag::SEQUENCE, &sd);

    let mut ci = derutil::oid_der(&oids::SIGNED_DATA);
    ci.extend(derutil::tlv(tag::CONTEXT_0_CONSTRUCTED, &sd));
    Ok(derutil::tlv(tag::SEQUENCE, &ci))
}

fn context(number: TagNumber) -> Tag {
    Tag::ContextSpecific {
        constructed: true,
        number,
    }
}

fn expect<'a>(
    item: Option<&AnyRef<'a>>,
    want: Tag,
    field: &'static str,
) -> Result<AnyRef<'a>, Pkcs7Error> {
    match item {
        Some(any) if any.tag() == want => Ok(*any),
        _ => Err(Pkcs7Error::BadField { field }),
    }
}

/// Reads the certificates (in order) out of a certs-only SignedData.
pub fn decode_certs_only(der: &[u8]) -> Result<Vec<Vec<u8>>, Pkcs7Error> {
    let mut reader = SliceReader::new(der).map_err(Pkcs7Error::Malformed)?;
    let outer: AnyRef<'_> = reader.decode().map_err(Pkcs7Error::Malformed)?;
    if !reader.is_finished() {
        return Err(Pkcs7Error::TrailingData);
    }
    let outer = expect(Some(&outer), Tag::Sequence, "ContentInfo")?;
    let ci = derutil::tlvs(outer.value()).map_err(Pkcs7Error::Malformed)?;
    if ci.len() != 2 {
        return Err(Pkcs7Error::BadField {
            field: "ContentInfo",
        });
    }
    let ct = expect(ci.first(), Tag::ObjectIdentifier, "contentType")?;
    let ct: const_oid::ObjectIdentifier = ct.decode_as().map_err(Pkcs7Error::Malformed)?;
    if ct != oids::SIGNED_DATA {
        return Err(Pkcs7Error::NotSignedData { oid: ct });
    }
    let content = expect(ci.get(1), context(TagNumber::N0), "content")?;
    let sd = derutil::one_tlv(content.value()).map_err(Pkcs7Error::Malformed)?;
    let sd = expect(Some(&sd), Tag::Sequence, "SignedData")?;
    let fields = derutil::tlvs(sd.value()).map_err(Pkcs7Error::Malformed)?;
    let mut fields = fields.iter().peekable();

    let version = expect(fields.next(), Tag::Integer, "version")?;
    let _: u8 = version.decode_as().map_err(Pkcs7Error::Malformed)?;
    expect(fields.next(), Tag::Set, "digestAlgorithms")?;
    let eci = expect(fields.next(), Tag::Sequence, "encapContentInfo")?;
    let eci = derutil::tlvs(eci.value()).map_err(Pkcs7Error::Malformed)?;
    let ect = expect(eci.first(), Tag::ObjectIdentifier, "eContentType")?;
    let ect: const_oid::ObjectIdentifier = ect.decode_as().map_err(Pkcs7Error::Malformed)?;
    if ect != oids::DATA {
        return Err(Pkcs7Error::UnexpectedContentType { oid: ect });
    }
    if eci.len() > 1 {
        return Err(Pkcs7Error::HasContent);
    }

    let mut certs = Vec::new();
    if let Some(set) = fields.next_if(|f| f.tag() == context(TagNumber::N0)) {
        let entries = derutil::tlvs(set.value()).map_err(Pkcs7Error::Malformed)?;
        for (index, entry) in entries.iter().enumerate() {
            if entry.tag() != Tag::Sequence {
                return Err(Pkcs7Error::NotACertificate { index });
            }
            certs.push(derutil::tlv_der(entry).map_err(Pkcs7Error::Malformed)?);
        }
    }
    // CRLs ([1]) are allowed and ignored.
    let _ = fields.next_if(|f| f.tag() == context(TagNumber::N1));
    expect(fields.next(), Tag::Set, "signerInfos")?;
    if fields.next().is_some() {
        return Err(Pkcs7Error::BadField {
            field: "SignedData",
        });
    }
    if certs.is_empty() {
        return Err(Pkcs7Error::NoCertificates);
    }
    Ok(certs)
}
