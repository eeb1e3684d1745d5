//! Estuary's control plane: the registration authority between devices and an ACME CA.
//!
//! The edge filter (in Envoy) authenticates the device and checks its CSR, then calls this
//! service's internal API. The folders are the layers:
//!
//! - [`ra`]: the RA core, no HTTP in it. The [`ra::engine`] turns the CSR into a certificate
//!   through an ACME order ([`ra::acme`]), proving the name with a DNS-01 record published by
//!   RFC 2136 UPDATE signed with TSIG ([`ra::dns`]), and caches the chain in Redis keyed by the
//!   SHA-256 of the whole CSR until the certificate's notAfter ([`ra::store`]).
//! - One front end per protocol, each mapping the core's answers to its own wire: [`est`] (the
//!   internal EST API), [`brski`] (registrar and cloud registrar), [`teap`] (RADIUS/EAP-TEAP).
//! - [`http`]: the server that wires the front ends' routers, health and metrics.
//! - [`config`]: every configuration section; [`metrics`]: the Prometheus registry.
#![forbid(unsafe_code)]

pub mod brski;
pub mod config;
pub mod est;
pub mod http;
pub mod metrics;
pub mod ra;
pub mod support;
pub mod teap;
