//! Test harness for Estuary: starts real services (Redis, BIND9, Pebble, Envoy, the control
//! plane) on loopback, each on a free port and in a fresh temporary directory, and stops them
//! on drop. `cargo xtask up` uses the same code for the dev stack.
//!
//! Every starter fails with a message that says what to install when a program is missing;
//! nothing here is skipped silently.
pub mod acme_ca;
pub mod bind;
pub mod cloud;
pub mod curl;
pub mod dev_stack;
pub mod envoy;
pub mod hostapd;
pub mod https;
pub mod masa;
pub mod pebble;
pub mod pki;
pub mod prometheus;
pub mod redis;
pub mod stack;
pub mod util;
