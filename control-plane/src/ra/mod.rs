//! The RA core: everything between "this device may have this name" and "here is its
//! certificate", with no HTTP in it.
//!
//! - [`engine`] turns an authorised CSR into a certificate: cache, lock, per-device limits, the
//!   issuance deadline, and what is remembered when it fails.
//! - [`acme`] is the ACME client (RFC 8555) with RFC 9444 pre-authorisation of the parent domain.
//! - [`dns`] publishes DNS-01 records by RFC 2136 UPDATE signed with TSIG, batched, and keeps the
//!   ledger that a sweeper uses to remove leftovers.
//! - [`chains`] learns the ACME CA's intermediates from issued chains for `/cacerts` and the
//!   trust bundle file.
//! - [`store`] is the Redis state shared by every replica.
//! - [`keygen`] makes keys for server-side key generation (RFC 7030 §4.4) and holds them,
//!   in memory only, while their orders run.
//! - [`limits`] bounds the work in flight.
//! - [`error`] and [`failure`] say what went wrong in no protocol's terms; each front end maps
//!   them to its own wire answer.

pub mod acme;
pub mod chains;
pub mod dns;
pub mod engine;
pub mod error;
pub mod failure;
pub mod keygen;
pub mod limits;
pub mod store;
