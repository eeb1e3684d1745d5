//! Estuary's edge filter (proxy-wasm).
#![forbid(unsafe_code)]
