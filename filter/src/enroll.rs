//! The edge checks of an enrolment body (pure): base64, PKCS#10 signature, policy.

use estuary_proto::csr::SignatureMemo;
use estuary_proto::names::DeviceName;
use estuary_proto::policy::{self, KeyPolicy};

use estuary_proto::identity::Identity;

use crate::error::EdgeError;

/// Check a `simpleenroll` / `simplereenroll` body and return the DER CSR to forward.
///
/// Order matters (style: input is hostile until checked): decode, verify the self-signature
/// (inside `parse_and_verify_memo`, before any field is read; `memo` may vouch for these exact
/// bytes instead), then apply policy for this identity, always.
pub fn check_body(
    body: &[u8],
    identity: &Identity,
    parent: &estuary_proto::names::ParentDomain,
    keys: &KeyPolicy,
    memo: Option<&mut dyn SignatureMemo>,
) -> Result<Vec<u8>, EdgeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EdgeError::EmptyBody);
    }
    let der = estuary_proto::base64::decode_csr_body(body).map_err(EdgeError::BadBase64)?;
    let csr = estuary_proto::csr::parse_and_verify_memo(&der, memo).map_err(EdgeError::BadCsr)?;
    match identity {
        Identity::IDevId { label, serial, .. } => {
            let expected = DeviceName::new(label, parent).map_err(|e| {
                EdgeError::Identity(estuary_proto::identity::IdentityError::BadSerialNumber {
                    serial: serial.clone(),
                    reason: e.to_string(),
                })
            })?;
            policy::check_enroll(&csr, &expected, keys).map_err(EdgeError::Policy)?;
        }
        Identity::LDevId { cert, .. } => {
            policy::check_reenroll(&csr, cert, keys).map_err(EdgeError::Policy)?;
        }
    }
    Ok(der)
}
