//! The baseline for `cargo xtask bench`: a proxy-wasm HTTP filter that does nothing. Every
//! callback keeps the SDK's default (`Continue`), so what Envoy spends on this filter is the
//! cost of running *a* wasm filter at all — the floor under Estuary's own filter.
//!
//! Build: `cargo build -p estuary-bench-noop-filter --target wasm32-wasip1 --profile wasm-release`
//! (the same profile as the Estuary filter).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use proxy_wasm::traits::{Context, HttpContext};

/// One stream's context: no state, no host calls.
struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}

/// The module's `_initialize` export (proxy-wasm entry point).
mod entry {
    use super::{HttpContext, Noop};

    proxy_wasm::main! {{
        proxy_wasm::set_http_context(|_context_id, _root_context_id| -> Box<dyn HttpContext> {
            Box::new(Noop)
        });
    }}
}
