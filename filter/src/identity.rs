//! Who is asking: the TLS client certificate, typed as IDevID or LDevID.
//!
//! Envoy verifies the chain during the TLS handshake and, with `SANITIZE_SET`, is the only writer of
//! `x-forwarded-client-cert`. The filter therefore trusts `connection.mtls` together with the XFCC
//! `Cert` and decides only which KIND of certificate it is:
//! - an **LDevID** is a certificate Estuary issued: a dNSName SAN `<serial>.<parent_domain>`;
//! - an **IDevID** is a manufacturer certificate: a subject serialNumber and no such SAN.

use estuary_proto::cert::CertSummary;
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};

use crate::error::EdgeError;
use crate::xfcc::{self, XfccError};

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
            Identity::IDevId { serial } => serial,
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
            Ok(Identity::IDevId { serial })
        }
    }
}
