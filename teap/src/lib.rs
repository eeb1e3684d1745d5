//! EAP-TEAP (RFC 9930) for Estuary, without the registration authority around it.
//!
//! - [`tunnel`]: rustls driven over in-memory buffers and carried in EAP, with TEAP
//!   fragmentation and reassembly; shared by both sides;
//! - [`session`]: the server's EAP-TEAP state machine. It does no I/O: it takes EAP-Responses
//!   and says what to do next (challenge, enrol a CSR, accept, reject); the control plane's
//!   RADIUS listener feeds it and runs the enrolments it asks for;
//! - [`peer`]: a TEAP peer that is its own NAS, sending RADIUS Access-Requests over UDP to a
//!   TEAP server (the pledge CLI's `teap` command, and the control plane's tests).
//!
//! What the server supports in phase 2 (details in [`session`]): CSR-Attributes and a
//! Request-Action for a PKCS#10, the PKCS#7 of the full chain the RA returns, the
//! Trusted-Server-Root TLV (RFC 9930 §4.2.18) answered with the ACME trust anchors, and the
//! CSR channel binding (§3.8.2) checked against the tunnel's `tls-exporter` (RFC 9266; rustls
//! has no `tls-unique`): a CSR bound to another tunnel gets Error 1025, an unbound CSR is
//! enrolled. The peer binds its CSRs and can ask for the trust anchors.
//!
//! The wire formats (EAP, TEAP frames and TLVs, Crypto-Binding, RADIUS, MS-MPPE) are
//! `estuary_proto`'s.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod peer;
pub mod session;
pub mod tunnel;
