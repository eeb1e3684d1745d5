//! Test harness for Estuary: real services on loopback.
pub mod bind;
pub mod pebble;
pub mod redis;
