//! Test harness for Estuary: starts real services (Redis, BIND9, Pebble, the control plane) on
//! loopback, each on a free port and in a fresh temporary directory, and stops them on drop.
//!
//! Every starter fails with a message that says which Debian package to install when the
//! program is missing; nothing here is skipped silently.
pub mod bind;
pub mod pebble;
pub mod redis;
pub mod util;
