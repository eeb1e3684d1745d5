//! estuary-pledge: an EST (RFC 7030) client that device makers and operators use to test an
//! Estuary deployment — `cacerts`, `csrattrs`, `simpleenroll` (following `202 Retry-After`)
//! and `simplereenroll`, over TLS with a client certificate.
//!
//! The pure parts (CSR building, answer decoding, `Retry-After`) are in [`csr`] and [`est`];
//! [`transport`] does TLS (rustls, ring provider) and HTTP/1.1 (hyper), one connection per
//! request or kept alive in a [`transport::EstSession`] (which `cargo xtask bench` enrols with);
//! [`flow`] runs the commands; [`teap`] enrols over EAP-TEAP (RFC 9930) through RADIUS; [`brski`] gets a voucher
//! first (RFC 8995) and [`cloud`] gets it through a BRSKI cloud registrar
//! (draft-ietf-anima-brski-cloud), with the TLS trust decisions in [`trust`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod brski;
pub mod cloud;
pub mod csr;
pub mod error;
pub mod est;
pub mod flow;
pub mod keys;
pub mod teap;
pub mod transport;
pub mod trust;

pub use error::{Exchange, PledgeError};
