//! Voucher (RFC 8366 §5.3) and voucher-request (RFC 8995 §3) JSON, as carried in CMS
//! ([`crate::cms_signed`], eContentType id-ct-animaJSONVoucher).
//!
//! ```text
//! {"ietf-voucher-request:voucher": {"assertion": "proximity", "nonce": "...",
//!   "serial-number": "...", "created-on": "2026-11-28T19:00:00Z",
//!   "proximity-registrar-cert": "<base64 DER>", "idevid-issuer": "<base64 DER Name>",
//!   "prior-signed-voucher-request": "<base64 CMS>"}}
//! {"ietf-voucher:voucher": {"assertion": "logged", "serial-number": "...", "nonce": "...",
//!   "pinned-domain-cert": "<base64 DER>", "created-on": "...", "expires-on": "..."}}
//! ```
//!
//! Binary leaves are base64 (RFC 7951 §6.6, `binary` type: standard alphabet with padding).
//! Unknown members are ignored (RFC 8366bis adds some); known ones must have the right type.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Content type of a CMS-signed voucher or voucher request (RFC 8366 §8.3.2).
pub const CT_VOUCHER_CMS_JSON: &str = "application/voucher-cms+json";
/// The registrar's BRSKI path prefix (RFC 8995 §5).
pub const BRSKI_PREFIX: &str = "/.well-known/brski";

/// What the voucher (request) asserts about ownership (RFC 8366 §5.3 `assertion`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assertion {
    /// The MASA verified the owner through its records.
    Verified,
    /// The MASA logged the claim without verifying it.
    Logged,
    /// The pledge was in proximity of the registrar (RFC 8995 §3.3).
    Proximity,
}

/// Why voucher JSON could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VoucherError {
    /// Not the JSON RFC 8366 / RFC 8995 describes.
    #[error("voucher JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
    /// A base64 leaf does not decode.
    #[error("field {0} is not valid base64")]
    BadBase64(&'static str),
    /// A required field is absent.
    #[error("field {0} is missing")]
    Missing(&'static str),
}

/// The inner object of a voucher request (RFC 8995 §3.2, §5.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VoucherRequest {
    /// `proximity` from a pledge; the registrar's own assertion in its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<Assertion>,
    /// The pledge's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The pledge's serial number (its IDevID subject serialNumber).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// RFC 3339 time of creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
    /// The registrar's TLS certificate as the pledge saw it (base64 DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proximity_registrar_cert: Option<String>,
    /// The issuer of the pledge's IDevID: base64 of the DER Name (registrar request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idevid_issuer: Option<String>,
    /// The pledge's signed voucher request: base64 of the CMS (registrar request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_signed_voucher_request: Option<String>,
    /// The domain certificate the registrar asks the MASA to pin (base64 DER). RFC 8366bis
    /// voucher requests share the voucher's leaves; a BRSKI cloud registrar sends the owner's
    /// EST trust anchor here (draft-ietf-anima-brski-cloud §3.2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_domain_cert: Option<String>,
    /// The owner's EST server URL the registrar asks the MASA to put in the voucher
    /// (RFC 8366bis `est-domain`, draft-ietf-anima-brski-cloud §3.2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub est_domain: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct VoucherRequestDoc {
    #[serde(rename = "ietf-voucher-request:voucher")]
    voucher: VoucherRequest,
}

/// The inner object of a voucher (RFC 8366 §5.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Voucher {
    /// What the MASA asserts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<Assertion>,
    /// The pledge this voucher is for.
    #[serde(default)]
    pub serial_number: String,
    /// Echo of the pledge's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The domain certificate the pledge must trust (base64 DER).
    #[serde(default)]
    pub pinned_domain_cert: String,
    /// RFC 3339 time of creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
    /// RFC 3339 end of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    /// RFC 8366bis `est-domain`: the URL of the EST server the pledge continues with instead
    /// of the cloud registrar; `pinned-domain-cert` authenticates that server
    /// (draft-ietf-anima-brski-cloud §3.3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub est_domain: Option<String>,
    /// RFC 8366bis `additional-configuration-url`: manufacturer-specific configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_configuration_url: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct VoucherDoc {
    #[serde(rename = "ietf-voucher:voucher")]
    voucher: Voucher,
}

impl VoucherRequest {
    /// Reads `{"ietf-voucher-request:voucher": {...}}`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, VoucherError> {
        let doc: VoucherRequestDoc = serde_json::from_slice(bytes)?;
        Ok(doc.voucher)
    }

    /// Writes `{"ietf-voucher-request:voucher": {...}}`.
    pub fn to_json(&self) -> Result<Vec<u8>, VoucherError> {
        Ok(serde_json::to_vec(&VoucherRequestDoc {
            voucher: self.clone(),
        })?)
    }

    /// The proximity-registrar-cert, decoded.
    pub fn proximity_registrar_cert_der(&self) -> Result<Vec<u8>, VoucherError> {
        decode_field(
            self.proximity_registrar_cert.as_deref(),
            "proximity-registrar-cert",
        )
    }

    /// The prior-signed-voucher-request, decoded.
    pub fn prior_signed_voucher_request_der(&self) -> Result<Vec<u8>, VoucherError> {
        decode_field(
            self.prior_signed_voucher_request.as_deref(),
            "prior-signed-voucher-request",
        )
    }

    /// The idevid-issuer, decoded.
    pub fn idevid_issuer_der(&self) -> Result<Vec<u8>, VoucherError> {
        decode_field(self.idevid_issuer.as_deref(), "idevid-issuer")
    }

    /// The pinned-domain-cert the registrar asks for, decoded.
    pub fn pinned_domain_cert_der(&self) -> Result<Vec<u8>, VoucherError> {
        decode_field(self.pinned_domain_cert.as_deref(), "pinned-domain-cert")
    }
}

impl Voucher {
    /// Reads `{"ietf-voucher:voucher": {...}}`; serial-number and pinned-domain-cert must be set.
    pub fn from_json(bytes: &[u8]) -> Result<Self, VoucherError> {
        let doc: VoucherDoc = serde_json::from_slice(bytes)?;
        if doc.voucher.serial_number.is_empty() {
            return Err(VoucherError::Missing("serial-number"));
        }
        if doc.voucher.pinned_domain_cert.is_empty() {
            return Err(VoucherError::Missing("pinned-domain-cert"));
        }
        Ok(doc.voucher)
    }

    /// Writes `{"ietf-voucher:voucher": {...}}`.
    pub fn to_json(&self) -> Result<Vec<u8>, VoucherError> {
        Ok(serde_json::to_vec(&VoucherDoc {
            voucher: self.clone(),
        })?)
    }

    /// The pinned-domain-cert, decoded.
    pub fn pinned_domain_cert_der(&self) -> Result<Vec<u8>, VoucherError> {
        decode_field(Some(&self.pinned_domain_cert), "pinned-domain-cert")
    }
}

/// id-pe-masa-url (RFC 8995 §2.3.2): the certificate extension naming the pledge's MASA.
pub const ID_PE_MASA_URL: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.32");

/// The MASA URI of an IDevID (`MASAURLSyntax ::= IA5String`, RFC 8995 §2.3.2), if it has one.
/// A malformed extension counts as none.
pub fn masa_url(cert_der: &[u8]) -> Option<String> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let exts = cert.tbs_certificate.extensions?;
    let ext = exts.iter().find(|e| e.extn_id == ID_PE_MASA_URL)?;
    let s = der::asn1::Ia5StringRef::from_der(ext.extn_value.as_bytes()).ok()?;
    Some(s.as_str().to_string())
}

fn decode_field(value: Option<&str>, name: &'static str) -> Result<Vec<u8>, VoucherError> {
    let v = value.ok_or(VoucherError::Missing(name))?;
    STANDARD
        .decode(v.as_bytes())
        .map_err(|_| VoucherError::BadBase64(name))
}

/// Base64 (standard alphabet, padded) of binary data, for the JSON leaves.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Voucher dates are RFC 3339 (RFC 8366 §5.3 `yang:date-and-time`); the codec lives in [`crate::time`].
pub use crate::time::{parse_rfc3339, rfc3339};

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8366 §5.3 example shape (values shortened).
    #[test]
    fn voucher_json_round_trips() {
        let text = br#"{"ietf-voucher:voucher":{"created-on":"2016-10-07T19:31:42Z","expires-on":"2016-10-21T19:31:42Z","assertion":"verified","serial-number":"JADA123456789","pinned-domain-cert":"MIIC","nonce":"base64encodedvalue==","extra":1}}"#;
        let v = Voucher::from_json(text).unwrap();
        assert_eq!(v.assertion, Some(Assertion::Verified));
        assert_eq!(v.serial_number, "JADA123456789");
        assert_eq!(Voucher::from_json(&v.to_json().unwrap()).unwrap(), v);
        assert!(Voucher::from_json(br#"{"ietf-voucher:voucher":{"serial-number":"x"}}"#).is_err());
        assert!(Voucher::from_json(br#"{"ietf-voucher:voucher":{"assertion":"bogus","serial-number":"x","pinned-domain-cert":"AA=="}}"#).is_err());
        assert!(Voucher::from_json(b"[]").is_err());
    }

    /// RFC 8366bis leaves used by draft-ietf-anima-brski-cloud: est-domain and
    /// additional-configuration-url in the voucher; pinned-domain-cert and est-domain in the
    /// registrar's request.
    #[test]
    fn rfc8366bis_cloud_leaves() {
        let text = br#"{"ietf-voucher:voucher":{"assertion":"logged","serial-number":"SN1","pinned-domain-cert":"MAA=","est-domain":"https://est.example.com/.well-known/est","additional-configuration-url":"https://cfg.example.com/SN1"}}"#;
        let v = Voucher::from_json(text).unwrap();
        assert_eq!(
            v.est_domain.as_deref(),
            Some("https://est.example.com/.well-known/est")
        );
        assert_eq!(
            v.additional_configuration_url.as_deref(),
            Some("https://cfg.example.com/SN1")
        );
        let s = String::from_utf8(v.to_json().unwrap()).unwrap();
        assert!(
            s.contains(r#""est-domain":"https://est.example.com/.well-known/est""#),
            "{s}"
        );
        let r = VoucherRequest {
            serial_number: Some("SN1".into()),
            pinned_domain_cert: Some(b64(b"\x30\x00")),
            est_domain: Some("https://est.example.com".into()),
            ..Default::default()
        };
        let back = VoucherRequest::from_json(&r.to_json().unwrap()).unwrap();
        assert_eq!(back.pinned_domain_cert_der().unwrap(), b"\x30\x00");
        assert_eq!(back.est_domain.as_deref(), Some("https://est.example.com"));
        // Without them, nothing is written: RFC 8995 registrars and MASAs see what they did.
        let plain = VoucherRequest::default().to_json().unwrap();
        assert!(!String::from_utf8(plain).unwrap().contains("est-domain"));
    }

    #[test]
    fn voucher_request_json_round_trips() {
        let r = VoucherRequest {
            assertion: Some(Assertion::Proximity),
            nonce: Some("n".into()),
            serial_number: Some("SN1".into()),
            created_on: Some(rfc3339(0)),
            proximity_registrar_cert: Some(b64(b"\x30\x00")),
            ..Default::default()
        };
        let json = r.to_json().unwrap();
        let s = String::from_utf8(json.clone()).unwrap();
        assert!(
            s.starts_with(r#"{"ietf-voucher-request:voucher":{"assertion":"proximity""#),
            "{s}"
        );
        assert!(s.contains(r#""proximity-registrar-cert":"MAA=""#), "{s}");
        let back = VoucherRequest::from_json(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.proximity_registrar_cert_der().unwrap(), b"\x30\x00");
        assert!(matches!(
            back.prior_signed_voucher_request_der(),
            Err(VoucherError::Missing("prior-signed-voucher-request"))
        ));
    }
}
