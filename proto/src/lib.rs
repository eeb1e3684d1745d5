//! Estuary's protocol code: codecs and policy with no I/O, shared by the edge filter
//! (wasm32-wasip1) and the control plane (host).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
