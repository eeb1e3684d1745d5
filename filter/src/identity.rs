//! Who is asking: the TLS client certificate, typed as IDevID or LDevID.
//!
//! Envoy verifies the chain during the TLS handshake and, with `SANITIZE_SET`, is the only writer of
//! `x-forwarded-client-cert`. The filter therefore trusts `connection.mtls` together with the XFCC
//! `Cert` and decides only which KIND of certificate it is:
//! - an **LDevID** is a certificate Estuary issued: a dNSName SAN `<serial>.<parent_domain>`;
//! - an **IDevID** is a manufacturer certificate: a subject serialNumber and no such SAN.
//!
//! For an IDevID the filter also keeps the other certificates of the XFCC `Chain` (the chain the
//! client presented, leaf first), so that the manufacturer policy can accept an IDevID issued by
//! an intermediate CA under a configured manufacturer CA.

use estuary_proto::cert::CertSummary;
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};

use crate::error::EdgeError;
use crate::xfcc::{self, XfccError};

/// At most this many certificates of the XFCC `Chain` (the leaf not counted) are kept; the rest
/// are ignored. It bounds the signature checks the manufacturer policy makes per request.
pub const MAX_CHAIN_CERTS: usize = 4;

/// What the operation needs from the client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `simpleenroll`: the manufacturer IDevID.
    IDevId,
    /// `simplereenroll`: the LDevID Estuary issued (RFC 7030 §4.2.2).
    LDevId,
    /// `csrattrs`: either kind; the device serial is what matters.
    Any,
}

/// An authenticated device.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A manufacturer certificate whose subject serialNumber names the device.
    IDevId {
        /// The device serial from the subject serialNumber.
        serial: DeviceSerial,
        /// The certificate itself (the manufacturer policy verifies its issuer).
        cert: Box<CertSummary>,
        /// DER of the other certificates of the XFCC `Chain`, in order, the leaf left out, at
        /// most [`MAX_CHAIN_CERTS`]; empty when the chain is absent or unreadable. Envoy verified
        /// the chain; the manufacturer policy looks here for an intermediate CA.
        intermediates: Vec<Vec<u8>>,
    },
    /// A certificate Estuary issued to this device.
    LDevId {
        /// The device's name under the parent domain.
        name: DeviceName,
        /// The certificate itself (re-enrolment compares the CSR against it).
        cert: Box<CertSummary>,
    },
}

impl Identity {
    /// The device serial, whichever kind of certificate it came from.
    pub fn serial(&self) -> &DeviceSerial {
        match self {
            Identity::IDevId { serial, .. } => serial,
            Identity::LDevId { name, .. } => name.serial(),
        }
    }
}

/// Why a readable certificate is the wrong kind for the operation (all answered with 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertKindError {
    /// simpleenroll with an LDevID.
    #[error("simpleenroll needs the manufacturer certificate (IDevID); this is an Estuary-issued certificate for {0}: use simplereenroll")]
    LDevIdForEnroll(String),
    /// simplereenroll with anything but an LDevID.
    #[error("simplereenroll needs the certificate Estuary issued (a dNSName SAN under {0}); this client certificate is not one")]
    NotLDevId(String),
    /// An IDevID without subject serialNumber.
    #[error("the client certificate has no subject serialNumber, so it names no device")]
    NoSerialNumber,
    /// A subject serialNumber that cannot be a DNS label.
    #[error("the client certificate's subject serialNumber cannot be used as a device name: {0}")]
    BadSerialNumber(String),
}

/// Decide who the client is, from `connection.mtls` and the Envoy-set XFCC header.
pub fn authenticate(
    mtls: bool,
    xfcc_header: Option<&[u8]>,
    need: Need,
    parent: &ParentDomain,
) -> Result<Identity, EdgeError> {
    if !mtls {
        return Err(EdgeError::NoClientCertificate);
    }
    let Some(raw) = xfcc_header else {
        return Err(EdgeError::NoClientCertificate);
    };
    let header = std::str::from_utf8(raw)
        .map_err(|_| EdgeError::UnreadableClientCertificate(XfccError::HeaderNotUtf8))?;
    let pem = xfcc::client_cert_pem(header)
        .map_err(EdgeError::UnreadableClientCertificate)?
        .ok_or(EdgeError::NoClientCertificate)?;
    let ders = estuary_proto::pem::decode_certs(&pem)
        .map_err(|_| EdgeError::UnreadableClientCertificate(XfccError::BadPem))?;
    let der = ders
        .first()
        .ok_or(EdgeError::UnreadableClientCertificate(XfccError::BadPem))?;
    let cert = CertSummary::from_der(der)
        .map_err(|_| EdgeError::UnreadableClientCertificate(XfccError::BadCertificate))?;
    classify(cert, need, parent).map_err(EdgeError::WrongCertificate)
}

/// Fills an IDevID's `intermediates` from the XFCC `Chain` (only the manufacturer policy needs
/// them, so the per-request path reads the chain only when that policy is on).
pub fn attach_chain(identity: &mut Identity, xfcc_header: &[u8]) {
    let Identity::IDevId {
        cert,
        intermediates,
        ..
    } = identity
    else {
        return;
    };
    if let Ok(header) = std::str::from_utf8(xfcc_header) {
        *intermediates = chain_intermediates(header, cert.der());
    }
}

/// The XFCC `Chain` certificates other than `leaf`, at most [`MAX_CHAIN_CERTS`]. A missing or
/// unreadable `Chain` means none: the leaf alone is then judged.
fn chain_intermediates(header: &str, leaf: &[u8]) -> Vec<Vec<u8>> {
    let Ok(Some(pem)) = xfcc::client_chain_pem(header) else {
        return Vec::new();
    };
    let Ok(ders) = estuary_proto::pem::decode_certs(&pem) else {
        return Vec::new();
    };
    ders.into_iter()
        .filter(|d| d.as_slice() != leaf)
        .take(MAX_CHAIN_CERTS)
        .collect()
}

/// The kind rules, on a parsed certificate.
pub fn classify(
    cert: CertSummary,
    need: Need,
    parent: &ParentDomain,
) -> Result<Identity, CertKindError> {
    let ldevid_name = cert
        .dns_names()
        .iter()
        .find_map(|n| DeviceName::parse_under(n, parent).ok());
    match (need, ldevid_name) {
        (Need::IDevId, Some(name)) => Err(CertKindError::LDevIdForEnroll(name.to_string())),
        (Need::LDevId | Need::Any, Some(name)) => Ok(Identity::LDevId {
            name,
            cert: Box::new(cert),
        }),
        (Need::LDevId, None) => Err(CertKindError::NotLDevId(parent.to_string())),
        (Need::IDevId | Need::Any, None) => {
            let sn = cert
                .subject_serial_number()
                .ok_or(CertKindError::NoSerialNumber)?;
            let serial = DeviceSerial::parse(sn)
                .map_err(|e| CertKindError::BadSerialNumber(e.to_string()))?;
            Ok(Identity::IDevId {
                serial,
                cert: Box::new(cert),
                intermediates: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    // Tests: a panic here is a failed test.
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn parent() -> ParentDomain {
        "iot.example.test".parse().unwrap()
    }

    fn cert(sans: &[&str], serial: Option<&str>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(s) = serial {
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 5]), s);
        }
        p.distinguished_name.push(DnType::CommonName, "device");
        p.self_signed(&key).unwrap().pem()
    }

    fn url_encode(pem: &str) -> String {
        let mut enc = String::new();
        for b in pem.bytes() {
            if b.is_ascii_alphanumeric() {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02x}"));
            }
        }
        enc
    }

    fn xfcc(pem: &str) -> Vec<u8> {
        let enc = url_encode(pem);
        format!("By=spiffe://x;Hash=00;Cert=\"{enc}\";Subject=\"CN=device\";URI=;DNS=").into_bytes()
    }

    #[test]
    fn idevid_and_ldevid_are_told_apart() {
        let idevid = xfcc(&cert(&[], Some("ABC-1")));
        let ldevid = xfcc(&cert(&["abc-1.iot.example.test"], Some("ABC-1")));
        let p = parent();
        match authenticate(true, Some(&idevid), Need::IDevId, &p).unwrap() {
            Identity::IDevId { serial, .. } => assert_eq!(serial.as_str(), "abc-1"),
            other => panic!("{other:?}"),
        }
        match authenticate(true, Some(&ldevid), Need::LDevId, &p).unwrap() {
            Identity::LDevId { name, .. } => assert_eq!(name.as_str(), "abc-1.iot.example.test"),
            other => panic!("{other:?}"),
        }
        let any = authenticate(true, Some(&idevid), Need::Any, &p).unwrap();
        assert_eq!(any.serial().as_str(), "abc-1");
        let any = authenticate(true, Some(&ldevid), Need::Any, &p).unwrap();
        assert_eq!(any.serial().as_str(), "abc-1");
    }

    fn der(pem: &str) -> Vec<u8> {
        estuary_proto::pem::decode_certs(pem).unwrap().remove(0)
    }

    fn with_chain(cert_pem: &str, chain: &str) -> Vec<u8> {
        let mut h = xfcc(cert_pem);
        h.extend_from_slice(format!(";Chain=\"{}\"", url_encode(chain)).as_bytes());
        h
    }

    fn intermediates_of(header: &[u8]) -> Vec<Vec<u8>> {
        let mut identity = authenticate(true, Some(header), Need::Any, &parent()).unwrap();
        assert!(
            matches!(&identity, Identity::IDevId { intermediates, .. } if intermediates.is_empty()),
            "authenticate alone reads no chain"
        );
        attach_chain(&mut identity, header);
        match identity {
            Identity::IDevId { intermediates, .. } => intermediates,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chain_certificates_other_than_the_leaf_are_kept_up_to_the_limit() {
        let leaf = cert(&[], Some("ABC-1"));
        let others: Vec<String> = (0..6).map(|_| cert(&[], None)).collect();
        let chain = format!("{leaf}{}", others.concat());
        let kept = intermediates_of(&with_chain(&leaf, &chain));
        assert_eq!(kept.len(), MAX_CHAIN_CERTS);
        for (k, o) in kept.iter().zip(&others) {
            assert_eq!(k, &der(o));
        }
        // No Chain, an unreadable one, or one with only the leaf: no intermediates.
        assert!(intermediates_of(&xfcc(&leaf)).is_empty());
        assert!(intermediates_of(&with_chain(&leaf, "junk")).is_empty());
        assert!(intermediates_of(&with_chain(&leaf, &leaf)).is_empty());
        let mut bad_escape = xfcc(&leaf);
        bad_escape.extend_from_slice(b";Chain=%zz");
        assert!(intermediates_of(&bad_escape).is_empty());
    }

    #[test]
    fn wrong_kind_is_403_missing_is_401() {
        let p = parent();
        let idevid = xfcc(&cert(&[], Some("ABC-1")));
        let ldevid = xfcc(&cert(&["abc-1.iot.example.test"], None));
        let other_domain = xfcc(&cert(&["abc-1.elsewhere.test"], None));
        let status = |r: Result<Identity, EdgeError>| r.map(|_| 200).unwrap_or_else(|e| e.status());
        assert_eq!(
            status(authenticate(true, Some(&ldevid), Need::IDevId, &p)),
            403
        );
        assert_eq!(
            status(authenticate(true, Some(&idevid), Need::LDevId, &p)),
            403
        );
        assert_eq!(
            status(authenticate(true, Some(&other_domain), Need::IDevId, &p)),
            403
        );
        assert_eq!(
            status(authenticate(true, Some(&other_domain), Need::LDevId, &p)),
            403
        );
        assert_eq!(
            status(authenticate(false, Some(&idevid), Need::IDevId, &p)),
            401
        );
        assert_eq!(status(authenticate(true, None, Need::IDevId, &p)), 401);
        assert_eq!(
            status(authenticate(true, Some(b"By=x"), Need::Any, &p)),
            401
        );
        assert_eq!(
            status(authenticate(true, Some(b"Cert=\"junk\""), Need::Any, &p)),
            401
        );
        assert_eq!(
            status(authenticate(true, Some(b"\xff"), Need::Any, &p)),
            401
        );
        let bad_serial = xfcc(&cert(&[], Some("not a label!")));
        assert_eq!(
            status(authenticate(true, Some(&bad_serial), Need::IDevId, &p)),
            403
        );
    }
}
