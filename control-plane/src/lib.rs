//! Estuary's control plane: the registration authority between devices and an ACME CA.
//!
//! The edge filter (in Envoy) authenticates the device and checks its CSR, then calls this
//! service's internal API ([`api`]). The [`engine`] turns the CSR into a certificate through
//! an ACME order ([`acme`]), proving the name with a DNS-01 record published by RFC 2136
//! UPDATE signed with TSIG ([`dns`]), and caches the chain in Redis keyed by the SHA-256 of
//! the whole CSR until the certificate's notAfter ([`store`]).
#![forbid(unsafe_code)]

pub mod acme;
pub mod acme_jws;
pub mod api;
pub mod brski;
pub mod cloud;
pub mod config;
pub mod dns;
pub mod dns_batch;
pub mod dns_ledger;
pub mod engine;
pub mod limits;
pub mod metrics;
pub mod preauth;
pub mod server;
pub mod store;
pub mod teap;
