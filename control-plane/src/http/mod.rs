//! The HTTP server: wiring the routers of every front end, health and metrics.

pub mod auth;
pub mod health;
pub mod request_id;
pub mod server;
