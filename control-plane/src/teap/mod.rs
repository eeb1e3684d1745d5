//! TEAP enrolment (RFC 9930) over RADIUS (RFC 2865 + RFC 3579): a network access server
//! relays EAP-TEAP to this server (configured by [`crate::config::teap`]); inside the tunnel the device sends a CSR and gets its
//! certificate from the same RA [`crate::ra::engine::Engine`] that EST uses.
//!
//! - [`server`]: the RADIUS/UDP listener, conversation table, duplicate cache, engine calls;
//! - the `estuary-teap` crate: the TLS tunnel over EAP ([`estuary_teap::tunnel`]), the
//!   server's EAP-TEAP state machine without I/O ([`estuary_teap::session`]) that [`server`]
//!   drives, and the TEAP peer the pledge CLI and the tests use ([`estuary_teap::peer`]).
pub mod server;
