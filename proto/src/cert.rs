//! X.509 certificate summary (RFC 5280): the fields Estuary needs, read from DER.
//!
//! This does NOT verify signatures or chains (Envoy verifies TLS peers; the ACME CA is trusted
//! for what it issues).

use const_oid::AssociatedOid;
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoRef;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use crate::csr::{self, KeyKind};
use crate::derutil::{self, NameReadError};
use crate::oids;

/// Why a certificate could not be summarised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not a DER Certificate (or bytes follow it).
    #[error("certificate is not valid DER: {0}")]
    Malformed(der::Error),
    /// A subject attribute uses a string type other than UTF8String, PrintableString, IA5String.
    #[error("subject attribute uses unsupported string type {tag}")]
    UnsupportedSubjectString {
        /// The ASN.1 tag found.
        tag: der::Tag,
    },
    /// An extension appears more than once.
    #[error("an extension appears more than once")]
    DuplicateExtension,
    /// The subjectAltName extension is malformed.
    #[error("subjectAltName extension is malformed")]
    BadSubjectAltName,
}

impl From<NameReadError> for CertError {
    fn from(e: NameReadError) -> Self {
        match e {
            NameReadError::UnsupportedString { tag } => CertError::UnsupportedSubjectString { tag },
            NameReadError::DuplicateSan | NameReadError::DuplicateExtension => {
                CertError::DuplicateExtension
            }
            NameReadError::BadSan(_) | NameReadError::BadDnsName => CertError::BadSubjectAltName,
        }
    }
}

/// The fields of a certificate that Estuary reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    common_names: Vec<String>,
    serial_numbers: Vec<String>,
    dns_names: Vec<String>,
    non_dns_sans: bool,
    not_before_unix: i64,
    not_after_unix: i64,
    spki_der: Vec<u8>,
    key: Option<KeyKind>,
    serial_der: Vec<u8>,
    is_ca: bool,
}

fn unix(t: x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

impl CertSummary {
    /// Reads one DER certificate (no trailing bytes).
    pub fn from_der(der: &[u8]) -> Result<CertSummary, CertError> {
        let cert = Certificate::from_der(der).map_err(CertError::Malformed)?;
        let tbs = &cert.tbs_certificate;
        let subject_der = tbs.subject.to_der().map_err(CertError::Malformed)?;
        let issuer_der = tbs.issuer.to_der().map_err(CertError::Malformed)?;
        let spki_der = tbs
            .subject_public_key_info
            .to_der()
            .map_err(CertError::Malformed)?;
        let key = SubjectPublicKeyInfoRef::from_der(&spki_der)
            .ok()
            .and_then(|spki| csr::public_key(&spki).ok())
            .map(|k| k.kind());
        let exts = tbs.extensions.as_deref().unwrap_or_default();
        let sans = derutil::sans_of(exts)?;
        // basicConstraints cA (RFC 5280 §4.2.1.9); an undecodable one counts as not a CA.
        let is_ca = exts
            .iter()
            .find(|e| e.extn_id == <BasicConstraints as AssociatedOid>::OID)
            .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|bc| bc.ca);
        Ok(CertSummary {
            der: der.to_vec(),
            common_names: derutil::name_values(&tbs.subject, oids::COMMON_NAME)?,
            serial_numbers: derutil::name_values(&tbs.subject, oids::SERIAL_NUMBER)?,
            subject_der,
            issuer_der,
            dns_names: sans.dns,
            non_dns_sans: sans.non_dns,
            not_before_unix: unix(tbs.validity.not_before),
            not_after_unix: unix(tbs.validity.not_after),
            spki_der,
            key,
            serial_der: tbs.serial_number.as_bytes().to_vec(),
            is_ca,
        })
    }

    /// The certificate's DER, as given.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// DER of the subject Name.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
    /// DER of the issuer Name.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }
    /// The first subject serialNumber attribute (2.5.4.5), if any.
    pub fn subject_serial_number(&self) -> Option<&str> {
        self.serial_numbers.first().map(String::as_str)
    }
    /// The first subject commonName, if any.
    pub fn subject_common_name(&self) -> Option<&str> {
        self.common_names.first().map(String::as_str)
    }
    /// SAN dNSNames, in order, as written.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
    /// Whether the SAN holds any name that is not a dNSName.
    pub fn has_non_dns_sans(&self) -> bool {
        self.non_dns_sans
    }
    /// notBefore as seconds since the Unix epoch.
    pub fn not_before_unix(&self) -> i64 {
        self.not_before_unix
    }
    /// notAfter as seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after_unix
    }
    /// DER of the SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
    /// The key kind, or `None` for keys Estuary does not accept in CSRs.
    pub fn key(&self) -> Option<KeyKind> {
        self.key
    }
    /// Whether basicConstraints says cA TRUE (a certificate that may issue others).
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }
    /// The certificate serial number (big-endian content octets of the INTEGER).
    pub fn serial_number_bytes(&self) -> &[u8] {
        &self.serial_der
    }
}
