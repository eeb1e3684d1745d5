//! Estuary's edge filter: EST (RFC 7030) in a proxy-wasm HTTP filter for Envoy / Istio.
//!
//! The filter terminates
//! `/.well-known/est/[label/]{cacerts,csrattrs,simpleenroll,simplereenroll,serverkeygen}`,
//! checks the TLS client certificate and the CSR at the edge (with `estuary-proto`, the same code the
//! control plane uses), and forwards only requests that pass to the control plane with
//! `dispatch_http_call`. Every other path is passed through untouched after reading `:path` only.
//!
//! # Answers
//! | request | answer |
//! |---|---|
//! | not under `/.well-known/est` | pass-through (no body buffering) |
//! | unknown operation or label | 404 |
//! | `fullcmc` | 501 |
//! | wrong method | 405 + `Allow` |
//! | no client certificate, or the XFCC certificate is not the connection's peer certificate | 401 |
//! | client certificate issued by neither the ACME CA (`acme_ca_pem`) nor a manufacturer CA | 403 |
//! | wrong kind of certificate for the operation (IDevID vs LDevID) | 403 |
//! | IDevID serial outside its manufacturer's pattern | 403 |
//! | Content-Type not `application/pkcs10` | 415 |
//! | body over `max_body_bytes` (Content-Length or actual) | 413 |
//! | bad base64 / DER / signature | 400 |
//! | CSR refused by policy | 403 |
//! | `serverkeygen`: CSR asks for an encrypted key (DecryptKeyIdentifier / AsymmetricDecryptKeyIdentifier, RFC 7030 §4.4.1) | 400, the reason names the attribute |
//! | `serverkeygen`: control plane 200 | 200 `multipart/mixed` passed on byte for byte with the control plane's `content-type` (its boundary); the VM's copies are wiped after sending |
//! | control plane 200 / 202 / 4xx | 200 base64 PKCS#7 / 202 + `Retry-After` / same 4xx |
//! | control plane 429 (the device's own limit) | 429 + `Retry-After` + its reason |
//! | control plane 503, timeout, unreachable | 503 + `Retry-After` |
//! | control plane other 5xx | 500 / 502, generic body (detail only in the log) |
//! | any EST path, role `cloud-registrar` | 404 (draft-ietf-anima-brski-cloud), no control-plane call |
//! | EST or BRSKI path whose `:authority` is not in `authorities` (when configured) | 421, no control-plane call |
//!
//! BRSKI (`/.well-known/brski/…`, RFC 8995) is served in both roles; see [`brski`]. A control-plane
//! 307 to `requestvoucher` whose `location` is an absolute `https://` URL (at most 2048 visible
//! ASCII bytes) reaches the pledge as 307 with that `Location` (the cloud registrar's redirect to
//! the owner's registrar); any other 3xx is 502.
//!
//! All error bodies are `text/plain`. `cacerts` and `csrattrs` answers are cached in proxy-wasm
//! shared data for `cache_ttl_s`, and so are the digests of CSRs and client certificates whose
//! signature verified (`csr_signature_cache`: the same bytes again skip the signature check,
//! nothing else).
//!
//! # Envoy configuration this filter needs
//! - `allow_on_headers_stop_iteration: true` in the `envoy.filters.http.wasm` plugin config: the
//!   filter returns `Pause` from the request headers and wants the body; without it the body
//!   callback never comes and enrolments hang until the stream idle timeout.
//! - On the HttpConnectionManager: `forward_client_cert_details: SANITIZE_SET` and
//!   `set_current_client_cert_details: {subject: true, cert: true, chain: true, dns: true, uri: true}`
//!   (the filter reads the client certificate from `x-forwarded-client-cert`), and a TLS context
//!   that requires and verifies client certificates (never `ACCEPT_UNTRUSTED`).
//! - A cluster for the control plane, named by `control_plane.cluster`.
//!
//! The plugin configuration (incl. `role` and `manufacturers`) is described in [`config`].
//!
//! # Build
//! `cargo build -p estuary-filter --target wasm32-wasip1 --profile wasm-release`
//! gives `target/wasm32-wasip1/wasm-release/estuary_filter.wasm`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Nothing reachable from input may panic: a trap kills the VM for every stream sharing it.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod authority;
pub mod brski;
pub mod cache;
pub mod config;
pub mod enroll;
pub mod error;
pub mod identity;
pub mod reply;
pub mod route;
pub mod upstream;
pub mod xfcc;

#[cfg(target_arch = "wasm32")]
mod edge;

/// The module's `_initialize` export (proxy-wasm entry point).
#[cfg(target_arch = "wasm32")]
mod entry {
    proxy_wasm::main! {{
        super::edge::start();
    }}
}
