//! The edge checks of an enrolment or serverkeygen body (pure): base64, PKCS#10 signature,
//! policy.

use estuary_proto::csr::SignatureMemo;
use estuary_proto::names::DeviceName;
use estuary_proto::policy::{self, KeyPolicy};

use estuary_proto::identity::Identity;
use estuary_proto::internal_api::Operation;

use crate::error::EdgeError;

/// Check a `simpleenroll` / `simplereenroll` / `serverkeygen` body and return the DER CSR to
/// forward.
///
/// Order matters (style: input is hostile until checked): decode, verify the self-signature
/// (inside `parse_and_verify_memo`, before any field is read; `memo` may vouch for these exact
/// bytes instead), then apply policy for this identity, always. For `serverkeygen` the CSR's
/// key is not held to the key policy (the server makes the key; the signature still proves
/// the client made the request), and a request for an encrypted key is refused
/// ([`policy::check_serverkeygen`]).
pub fn check_body(
    op: Operation,
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
            if op == Operation::ServerKeyGen {
                policy::check_serverkeygen(&csr, &expected).map_err(EdgeError::Policy)?;
            } else {
                policy::check_enroll(&csr, &expected, keys).map_err(EdgeError::Policy)?;
            }
        }
        // serverkeygen is authenticated with an IDevID only (the route asks for one).
        Identity::LDevId { name, .. } if op == Operation::ServerKeyGen => {
            return Err(EdgeError::Identity(
                estuary_proto::identity::IdentityError::LDevIdForEnroll(name.as_str().to_string()),
            ));
        }
        Identity::LDevId { cert, .. } => {
            policy::check_reenroll(&csr, cert, keys).map_err(EdgeError::Policy)?;
        }
    }
    Ok(der)
}
