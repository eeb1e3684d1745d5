//! Estuary's protocol code: codecs and policy with no I/O, shared by the edge filter
//! (wasm32-wasip1) and the control plane (host).
//!
//! Every decoder here treats its input as hostile: bad input gives a typed error, never a panic.
//! Nothing here reads clocks, files, sockets or random numbers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod base64;
pub mod cert;
pub mod cms_signed;
pub mod csr;
pub mod csrattrs;
mod derutil;
pub mod eap;
pub mod est;
pub mod identity;
pub mod internal_api;
pub mod names;
pub mod oids;
pub mod pem;
pub mod pkcs7;
pub mod policy;
pub mod radius;
pub mod serverkeygen;
pub mod teap;
pub mod time;
pub mod url;
pub mod voucher;

pub use cert::{CertError, CertSummary};
pub use csr::{parse_and_verify, CsrError, KeyKind, VerifiedCsr};
pub use csrattrs::{AttrOrOid, CsrAttrs, CsrAttrsError};
pub use names::{DeviceName, DeviceSerial, NameError, ParentDomain};
pub use policy::{check_enroll, check_reenroll, check_serverkeygen, KeyPolicy, PolicyError};
