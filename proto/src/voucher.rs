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

/// What the party checking a voucher expects of it (RFC 8995 §5.6.1 for a pledge, §5.6 for a
/// registrar relaying it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The pledge's serial-number: the voucher's must be exactly this.
    pub serial: &'a str,
    /// The nonce of the voucher request: the voucher's must be exactly this; `None` when the
    /// request carried none, and then the voucher must carry none either.
    pub nonce: Option<&'a str>,
    /// The pinned-domain-cert (DER) the voucher must carry exactly, when the caller asked the
    /// MASA for one (a cloud registrar pinning the owner's EST trust anchor). `None`: any
    /// certificate (it must still be present and be one); the caller decides what it covers,
    /// e.g. with [`check_pin`].
    pub pin: Option<&'a [u8]>,
    /// The est-domain the voucher must carry exactly, when the caller asked for one. `None`:
    /// a voucher may carry one or not, but one it carries must be an `https` base URL.
    pub est_domain: Option<&'a str>,
    /// Now, in seconds since the Unix epoch: a voucher with `expires-on` must not have expired.
    pub now: i64,
}

/// A voucher that passed [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The voucher.
    pub voucher: Voucher,
    /// Its pinned-domain-cert (DER).
    pub pinned_domain_cert: Vec<u8>,
    /// Its est-domain, parsed, when it has one.
    pub est_domain: Option<crate::url::HttpsUrl>,
    /// DER of the certificate that signed it.
    pub signer_cert: Vec<u8>,
}

/// Why a voucher is refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not a CMS SignedData of id-ct-animaJSONVoucher whose signature verifies.
    #[error("the voucher's CMS does not verify: {0}")]
    Cms(#[source] crate::cms_signed::CmsError),
    /// Signed, but not by a certificate that chains to the MASA trust anchor.
    #[error("the voucher is not signed by the MASA (its signer does not chain to the MASA trust anchor)")]
    UntrustedSigner,
    /// The signed content is not voucher JSON (or lacks serial-number).
    #[error("the voucher content is not a voucher: {0}")]
    NotAVoucher(#[source] VoucherError),
    /// No pinned-domain-cert.
    #[error("the voucher has no pinned-domain-cert")]
    MissingPin,
    /// pinned-domain-cert is not base64 of a DER certificate.
    #[error("the voucher's pinned-domain-cert is not a certificate")]
    BadPin,
    /// For another pledge.
    #[error("the voucher is for serial-number {found:?}, not {expected:?}")]
    WrongSerial {
        /// In the voucher.
        found: String,
        /// Expected.
        expected: String,
    },
    /// The nonce is not the request's (or one is missing on either side).
    #[error("the voucher's nonce is not the voucher request's")]
    WrongNonce,
    /// `expires-on` is in the past (or now).
    #[error("the voucher expired at {0}")]
    Expired(String),
    /// `expires-on` is not an RFC 3339 time.
    #[error("the voucher's expires-on {0:?} is not an RFC 3339 time")]
    BadExpiry(String),
    /// Not the pinned-domain-cert the caller asked for.
    #[error("the voucher's pinned-domain-cert is not the one requested")]
    WrongPin,
    /// An est-domain that is not an `https` base URL.
    #[error("the voucher's est-domain {0:?} is not an https URL without query or fragment: {1}")]
    BadEstDomain(String, #[source] crate::url::UrlError),
    /// Not the est-domain the caller asked for (`None`: the voucher has none).
    #[error("the voucher's est-domain {found:?} is not the one requested, {expected:?}")]
    WrongEstDomain {
        /// In the voucher.
        found: Option<String>,
        /// Expected.
        expected: String,
    },
}

/// Verifies a CMS-signed voucher (RFC 8366, RFC 8995 §5.6) against the MASA trust anchor
/// `anchor` (DER) and what the caller expects, in this order: the CMS signature; the signer
/// chains to `anchor`; the content is a voucher with a pinned-domain-cert that is a
/// certificate; serial-number; nonce; expires-on; the requested pin; est-domain.
///
/// The checks a registrar and a pledge both need; what the pin covers (RFC 8995 §5.6.2) is
/// [`check_pin`]'s.
pub fn verify(
    cms_der: &[u8],
    anchor: &[u8],
    expected: &Expected<'_>,
) -> Result<Verified, VerifyError> {
    use crate::cms_signed::{self, ANIMA_JSON_VOUCHER};
    let signed = cms_signed::verify(cms_der, ANIMA_JSON_VOUCHER).map_err(VerifyError::Cms)?;
    if !cms_signed::chains_to(&signed.signer_cert, &signed.certs, anchor) {
        return Err(VerifyError::UntrustedSigner);
    }
    let voucher = Voucher::from_json(&signed.content).map_err(|e| match e {
        VoucherError::Missing("pinned-domain-cert") => VerifyError::MissingPin,
        other => VerifyError::NotAVoucher(other),
    })?;
    let pinned_domain_cert = voucher
        .pinned_domain_cert_der()
        .map_err(|_| VerifyError::BadPin)?;
    {
        use der::Decode;
        x509_cert::Certificate::from_der(&pinned_domain_cert).map_err(|_| VerifyError::BadPin)?;
    }
    if voucher.serial_number != expected.serial {
        return Err(VerifyError::WrongSerial {
            found: voucher.serial_number.clone(),
            expected: expected.serial.to_string(),
        });
    }
    if voucher.nonce.as_deref() != expected.nonce {
        return Err(VerifyError::WrongNonce);
    }
    if let Some(exp) = &voucher.expires_on {
        match parse_rfc3339(exp) {
            Some(t) if t > expected.now => {}
            Some(_) => return Err(VerifyError::Expired(exp.clone())),
            None => return Err(VerifyError::BadExpiry(exp.clone())),
        }
    }
    if let Some(pin) = expected.pin {
        if pinned_domain_cert != pin {
            return Err(VerifyError::WrongPin);
        }
    }
    let est_domain = match &voucher.est_domain {
        None => None,
        Some(d) => Some(
            crate::url::HttpsUrl::parse_base(d)
                .map_err(|e| VerifyError::BadEstDomain(d.clone(), e))?,
        ),
    };
    if let Some(want) = expected.est_domain {
        if voucher.est_domain.as_deref() != Some(want) {
            return Err(VerifyError::WrongEstDomain {
                found: voucher.est_domain.clone(),
                expected: want.to_string(),
            });
        }
    }
    Ok(Verified {
        voucher,
        pinned_domain_cert,
        est_domain,
        signer_cert: signed.signer_cert,
    })
}

/// Why [`check_pin`] refuses a registrar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the registrar's TLS certificate is not vouched for by pinned-domain-cert")]
pub struct NotCoveredByPin;

/// RFC 8995 §5.6.2: the registrar's (provisional) TLS certificate must be the
/// pinned-domain-cert or be issued by it.
pub fn check_pin(pinned: &[u8], registrar_cert: &[u8]) -> Result<(), NotCoveredByPin> {
    if registrar_cert == pinned
        || crate::cms_signed::verify_issued_by(registrar_cert, pinned).is_ok()
    {
        Ok(())
    } else {
        Err(NotCoveredByPin)
    }
}

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

    /// RFC 8995-style vouchers signed in the test: a MASA CA, its voucher signer, a domain CA.
    mod verification {
        use super::super::*;
        use crate::cms_signed::{self, ANIMA_JSON_VOUCHER};
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

        struct Pki {
            anchor: Vec<u8>,
            signer: Vec<u8>,
            signer_key: Vec<u8>,
            domain_ca: Vec<u8>,
            registrar: Vec<u8>,
        }

        fn ca(cn: &str) -> (Vec<u8>, Issuer<'static, KeyPair>) {
            let kp = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let c = p.self_signed(&kp).unwrap();
            (c.der().to_vec(), Issuer::new(p, kp))
        }

        fn leaf(cn: &str, by: &Issuer<'static, KeyPair>) -> (Vec<u8>, Vec<u8>) {
            let kp = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            (
                p.signed_by(&kp, by).unwrap().der().to_vec(),
                kp.serialize_der(),
            )
        }

        fn pki() -> Pki {
            let (anchor, masa_ca) = ca("MASA CA");
            let (signer, signer_key) = leaf("MASA voucher signer", &masa_ca);
            let (domain_ca, dca) = ca("domain CA");
            let (registrar, _) = leaf("registrar", &dca);
            Pki {
                anchor,
                signer,
                signer_key,
                domain_ca,
                registrar,
            }
        }

        fn good(p: &Pki) -> Voucher {
            Voucher {
                assertion: Some(Assertion::Logged),
                serial_number: "SN-1".into(),
                nonce: Some("n0nce".into()),
                pinned_domain_cert: b64(&p.domain_ca),
                created_on: Some(rfc3339(0)),
                expires_on: Some(rfc3339(1000)),
                ..Default::default()
            }
        }

        fn sign_json(p: &Pki, json: &[u8]) -> Vec<u8> {
            let key = cms_signed::signing_key_from_pkcs8_der(&p.signer_key).unwrap();
            cms_signed::sign(ANIMA_JSON_VOUCHER, json, &p.signer, &[], &key).unwrap()
        }

        fn signed(p: &Pki, v: &Voucher) -> Vec<u8> {
            sign_json(p, &v.to_json().unwrap())
        }

        fn expect(now: i64) -> Expected<'static> {
            Expected {
                serial: "SN-1",
                nonce: Some("n0nce"),
                pin: None,
                est_domain: None,
                now,
            }
        }

        #[test]
        fn a_good_voucher_verifies() {
            let p = pki();
            let ok = verify(&signed(&p, &good(&p)), &p.anchor, &expect(10)).unwrap();
            assert_eq!(ok.voucher.serial_number, "SN-1");
            assert_eq!(ok.pinned_domain_cert, p.domain_ca);
            assert_eq!(ok.signer_cert, p.signer);
            assert_eq!(ok.est_domain, None);
            check_pin(&ok.pinned_domain_cert, &p.registrar).unwrap();
            check_pin(&p.registrar, &p.registrar).unwrap();
            // The anchor may sign itself, or through an intermediate carried in the CMS.
            let (anchor, root) = ca("MASA root");
            let (inter, inter_issuer) = {
                let kp = KeyPair::generate().unwrap();
                let mut ip = CertificateParams::new(Vec::<String>::new()).unwrap();
                ip.distinguished_name
                    .push(DnType::CommonName, "MASA intermediate");
                ip.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                let c = ip.signed_by(&kp, &root).unwrap();
                (c.der().to_vec(), Issuer::new(ip, kp))
            };
            let (signer, signer_key) = leaf("signer", &inter_issuer);
            let key = cms_signed::signing_key_from_pkcs8_der(&signer_key).unwrap();
            let json = good(&p).to_json().unwrap();
            let cms = cms_signed::sign(
                ANIMA_JSON_VOUCHER,
                &json,
                &signer,
                std::slice::from_ref(&inter),
                &key,
            )
            .unwrap();
            verify(&cms, &anchor, &expect(10)).unwrap();
            assert!(matches!(
                verify(&cms, &p.anchor, &expect(10)),
                Err(VerifyError::UntrustedSigner)
            ));
        }

        #[test]
        fn attacker_vouchers_are_refused() {
            let p = pki();
            let cms = signed(&p, &good(&p));
            // Signed by another MASA (a voucher signer the anchor did not issue).
            let other = pki();
            assert!(matches!(
                verify(&signed(&other, &good(&p)), &p.anchor, &expect(10)),
                Err(VerifyError::UntrustedSigner)
            ));
            assert!(matches!(
                verify(&cms, &other.anchor, &expect(10)),
                Err(VerifyError::UntrustedSigner)
            ));
            // Another pledge's voucher.
            let e = Expected {
                serial: "SN-2",
                ..expect(10)
            };
            assert!(matches!(
                verify(&cms, &p.anchor, &e),
                Err(VerifyError::WrongSerial { ref found, .. }) if found == "SN-1"
            ));
            // A replayed voucher: another nonce, or none where one was asked for.
            let e = Expected {
                nonce: Some("other"),
                ..expect(10)
            };
            assert!(matches!(
                verify(&cms, &p.anchor, &e),
                Err(VerifyError::WrongNonce)
            ));
            let e = Expected {
                nonce: None,
                ..expect(10)
            };
            assert!(matches!(
                verify(&cms, &p.anchor, &e),
                Err(VerifyError::WrongNonce)
            ));
            let nonceless = signed(
                &p,
                &Voucher {
                    nonce: None,
                    ..good(&p)
                },
            );
            assert!(matches!(
                verify(&nonceless, &p.anchor, &expect(10)),
                Err(VerifyError::WrongNonce)
            ));
            let e = Expected {
                nonce: None,
                ..expect(10)
            };
            verify(&nonceless, &p.anchor, &e).unwrap();
            // Expired: at and after expires-on; an unreadable date is no date.
            assert!(matches!(
                verify(&cms, &p.anchor, &expect(1000)),
                Err(VerifyError::Expired(_))
            ));
            assert!(matches!(
                verify(&cms, &p.anchor, &expect(5000)),
                Err(VerifyError::Expired(_))
            ));
            let unreadable = signed(
                &p,
                &Voucher {
                    expires_on: Some("tomorrow".into()),
                    ..good(&p)
                },
            );
            assert!(matches!(
                verify(&unreadable, &p.anchor, &expect(10)),
                Err(VerifyError::BadExpiry(_))
            ));
            // Tampered content: the signature no longer verifies.
            let mut bad = cms.clone();
            let json = good(&p).to_json().unwrap();
            let at = bad.windows(8).position(|w| w == &json[..8]).unwrap();
            bad[at + 30] ^= 0x01;
            assert!(matches!(
                verify(&bad, &p.anchor, &expect(10)),
                Err(VerifyError::Cms(_))
            ));
            assert!(matches!(
                verify(b"not cms", &p.anchor, &expect(10)),
                Err(VerifyError::Cms(_))
            ));
        }

        #[test]
        fn the_pin_must_be_present_a_certificate_and_the_one_asked_for() {
            let p = pki();
            let missing = signed(
                &p,
                &Voucher {
                    pinned_domain_cert: String::new(),
                    ..good(&p)
                },
            );
            assert!(matches!(
                verify(&missing, &p.anchor, &expect(10)),
                Err(VerifyError::MissingPin)
            ));
            let absent = sign_json(
                &p,
                br#"{"ietf-voucher:voucher":{"serial-number":"SN-1","nonce":"n0nce"}}"#,
            );
            assert!(matches!(
                verify(&absent, &p.anchor, &expect(10)),
                Err(VerifyError::MissingPin)
            ));
            for pin in [b64(b"not a certificate"), "%%%".to_string()] {
                let cms = signed(
                    &p,
                    &Voucher {
                        pinned_domain_cert: pin,
                        ..good(&p)
                    },
                );
                assert!(matches!(
                    verify(&cms, &p.anchor, &expect(10)),
                    Err(VerifyError::BadPin)
                ));
            }
            let cms = signed(&p, &good(&p));
            let e = Expected {
                pin: Some(&p.domain_ca),
                ..expect(10)
            };
            verify(&cms, &p.anchor, &e).unwrap();
            let e = Expected {
                pin: Some(&p.registrar),
                ..expect(10)
            };
            assert!(matches!(
                verify(&cms, &p.anchor, &e),
                Err(VerifyError::WrongPin)
            ));
            // The pin covers the registrar that issued it, not another domain's.
            assert_eq!(
                check_pin(&p.domain_ca, &pki().registrar),
                Err(NotCoveredByPin)
            );
            assert_eq!(check_pin(&p.domain_ca, &p.anchor), Err(NotCoveredByPin));
            let not_a_voucher = sign_json(&p, b"[]");
            assert!(matches!(
                verify(&not_a_voucher, &p.anchor, &expect(10)),
                Err(VerifyError::NotAVoucher(_))
            ));
        }

        /// draft-ietf-anima-brski-cloud: est-domain is an https URL, and the one a cloud
        /// registrar asked for when it asked for one.
        #[test]
        fn est_domain() {
            let p = pki();
            let url = "https://est.owner.example/.well-known/est";
            let cms = signed(
                &p,
                &Voucher {
                    est_domain: Some(url.into()),
                    ..good(&p)
                },
            );
            let ok = verify(&cms, &p.anchor, &expect(10)).unwrap();
            assert_eq!(
                ok.est_domain.map(|u| u.host().to_string()).as_deref(),
                Some("est.owner.example")
            );
            let e = Expected {
                est_domain: Some(url),
                pin: Some(&p.domain_ca),
                ..expect(10)
            };
            verify(&cms, &p.anchor, &e).unwrap();
            let e = Expected {
                est_domain: Some("https://est.attacker.example/.well-known/est"),
                ..expect(10)
            };
            assert!(matches!(
                verify(&cms, &p.anchor, &e),
                Err(VerifyError::WrongEstDomain { found: Some(_), .. })
            ));
            let plain = signed(&p, &good(&p));
            let e = Expected {
                est_domain: Some(url),
                ..expect(10)
            };
            assert!(matches!(
                verify(&plain, &p.anchor, &e),
                Err(VerifyError::WrongEstDomain { found: None, .. })
            ));
            for bad in [
                "http://est.owner.example/",
                "https://est.owner.example/?q=1",
                "est",
            ] {
                let cms = signed(
                    &p,
                    &Voucher {
                        est_domain: Some(bad.into()),
                        ..good(&p)
                    },
                );
                assert!(
                    matches!(
                        verify(&cms, &p.anchor, &expect(10)),
                        Err(VerifyError::BadEstDomain(..))
                    ),
                    "{bad}"
                );
            }
        }
    }
}
