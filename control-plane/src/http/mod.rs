//! The HTTP server: wiring the routers of every front end, health and metrics.

pub mod server;
