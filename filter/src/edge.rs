//! The proxy-wasm glue: host calls in, pure decisions from the other modules, host calls out.
//!
//! Only host calls that return `Result` are used (the SDK's `Context` helpers `unwrap()`), header
//! values are read as bytes (the SDK's `String` getters panic on non-UTF-8), and every decision is
//! made by a pure, host-tested function.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use estuary_proto::est;
use estuary_proto::internal_api;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use zeroize::Zeroize;

use crate::brski;
use crate::cache;
use crate::config::{self, CacheBounds, Config, EstService, Role};
use crate::enroll;
use crate::error::EdgeError;
use crate::identity::{self, Client};
use crate::reply::Reply;
use crate::route::{self, EnrollKind, Route};
use crate::upstream::{self, Upstream};
use estuary_proto::csr::{CsrDigest, SignatureMemo};
use estuary_proto::identity::Need;
use estuary_proto::internal_api::Operation;

/// Register the root context with the SDK (called from `_initialize`).
pub fn start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| {
        Box::new(EdgeRoot {
            config: None,
            learning: HashMap::new(),
            enroll_cache_hits: None,
        })
    });
}

fn log(level: LogLevel, message: &str) {
    // A failed log call is nothing to act on.
    let _ = hostcalls::log(level, message);
}

/// How many [`debug`] lines go by before the proxy's log level is asked again.
const LOG_LEVEL_EVERY: u32 = 64;

/// A VM-local copy of cached answers: shared-data key -> (expiry, body).
type LocalAnswers = std::cell::RefCell<HashMap<String, (u64, Rc<Vec<u8>>)>>;

thread_local! {
    /// Whether the proxy logs at debug level, as last asked, and how many [`debug`] calls ago.
    static DEBUG_ON: std::cell::Cell<(bool, u32)> = const { std::cell::Cell::new((false, 0)) };
    /// This VM's copy of the cacerts answers it took from shared data: label -> (expiry, base64
    /// body). Each worker has its own VM, so a hit costs no host call; shared data stays the
    /// cache every worker fills and reads on a miss.
    static CACERTS: LocalAnswers = std::cell::RefCell::new(HashMap::new());
}

/// A debug line, built and sent only when the proxy logs at debug level or finer: a refusal
/// is answered without formatting a line nobody reads. The level is asked again every
/// [`LOG_LEVEL_EVERY`] calls (a change at run time shows within that many refusals), so most
/// refusals cost no host call for it.
fn debug(message: impl FnOnce() -> String) {
    let on = DEBUG_ON.with(|c| {
        let (mut on, n) = c.get();
        if n == 0 {
            on = matches!(
                hostcalls::get_log_level(),
                Ok(LogLevel::Trace | LogLevel::Debug)
            );
        }
        c.set((on, (n + 1) % LOG_LEVEL_EVERY));
        on
    });
    if on {
        log(LogLevel::Debug, &message());
    }
}

struct EdgeRoot {
    config: Option<Rc<Config>>,
    /// `/cacerts` fetches out (call token -> EST label), see [`EdgeRoot::learn`].
    learning: HashMap<u32, Option<String>>,
    /// The counter [`ENROLL_CACHE_HITS`], once defined.
    enroll_cache_hits: Option<u32>,
}

/// Enrolments answered from `enroll_answer_cache` without a control-plane call: a proxy
/// counter (Envoy: `wasmcustom.estuary_filter_enroll_answer_cache_hits` in `/stats`,
/// `envoy_wasmcustom_estuary_filter_enroll_answer_cache_hits` in Prometheus format). The control
/// plane never sees these requests, so its `estuary_cache_hits_total` does not count them.
pub const ENROLL_CACHE_HITS: &str = "estuary_filter_enroll_answer_cache_hits";

impl EdgeRoot {
    /// Fetches `/cacerts` of the unlabelled CA and of each label from the control plane; the
    /// answers land in shared data ([`cache::learned_key`]) for [`EdgeStream::identity`].
    fn learn(&mut self) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        if cfg.est().is_none() {
            return;
        }
        let cp = &cfg.control_plane;
        let auth = format!("Bearer {}", cp.token.expose());
        let op = Operation::CaCerts;
        let labels = std::iter::once(None).chain(cfg.labels.keys().map(|l| Some(l.clone())));
        for label in labels {
            if self.learning.values().any(|l| *l == label) {
                continue; // the last fetch for it is still out
            }
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", op.method().as_str()),
                (":path", op.path().as_str()),
                (":authority", cp.authority.as_str()),
                (internal_api::HDR_AUTHORIZATION, auth.as_str()),
            ];
            if let Some(l) = label.as_deref() {
                headers.push((internal_api::HDR_LABEL, l));
            }
            match hostcalls::dispatch_http_call(&cp.cluster, headers, None, vec![], cp.timeout) {
                Ok(token) => {
                    self.learning.insert(token, label);
                }
                Err(status) => log(
                    LogLevel::Debug,
                    &format!(
                        "estuary-filter: cannot fetch cacerts to learn intermediates: {status:?}"
                    ),
                ),
            }
        }
    }
}

impl Context for EdgeRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(label) = self.learning.remove(&token_id) else {
            return;
        };
        let ok = call_response_header(":status").as_deref() == Some(b"200");
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        // Only a readable certs-only PKCS#7 is kept; anything else leaves the last one.
        if ok && estuary_proto::pkcs7::decode_certs_only(&body).is_ok() {
            let key = cache::learned_key(label.as_deref());
            if hostcalls::set_shared_data(&key, Some(&body), None).is_err() {
                log(
                    LogLevel::Warn,
                    "estuary-filter: could not keep the learned CA certificates",
                );
            }
        }
    }
}

impl RootContext for EdgeRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        match config::parse(&bytes) {
            Ok(cfg) => {
                let role = match &cfg.role {
                    Role::Registrar(est) => format!(
                        "registrar: parent domain {}, {} label(s), {} manufacturer(s)",
                        est.trust.parent,
                        cfg.labels.len(),
                        est.trust.manufacturers.len()
                    ),
                    Role::CloudRegistrar { parent_domain } => format!(
                        "BRSKI cloud registrar (EST answered 404){}",
                        parent_domain
                            .as_ref()
                            .map(|p| format!(", parent domain {p}"))
                            .unwrap_or_default()
                    ),
                };
                log(
                    LogLevel::Info,
                    &format!(
                        "estuary-filter: configured: {role}, control plane cluster {}",
                        cfg.control_plane.cluster
                    ),
                );
                let learn = cfg.learn_interval_s;
                let registrar = cfg.est().is_some();
                if self.enroll_cache_hits.is_none() {
                    self.enroll_cache_hits =
                        hostcalls::define_metric(MetricType::Counter, ENROLL_CACHE_HITS).ok();
                }
                self.config = Some(Rc::new(cfg));
                if registrar && learn > 0 {
                    if let Err(status) = hostcalls::set_tick_period(Duration::from_secs(learn)) {
                        log(
                            LogLevel::Warn,
                            &format!("estuary-filter: no timer to learn intermediates: {status:?}"),
                        );
                    }
                }
                true
            }
            Err(errors) => {
                log(
                    LogLevel::Error,
                    &format!("estuary-filter: refusing to start: bad configuration: {errors}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.learn();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EdgeStream {
            config: self.config.clone(),
            state: State::Idle,
            headers: Headers::default(),
            enroll_cache_hits: self.enroll_cache_hits,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

enum State {
    /// Nothing to do (yet, or ever: pass-through).
    Idle,
    /// Headers checked; waiting for the whole body of `op`.
    Collecting { op: Operation, caller: Caller },
    /// A control-plane call for `op` is out.
    Waiting {
        token: u32,
        op: Operation,
        cache_key: Option<CacheKey>,
    },
    /// A local answer was sent.
    Done,
}

/// Where a control-plane answer is cached.
enum CacheKey {
    /// One shared-data key per answer (`cacerts`, one per label), kept as the base64 body.
    Answer(String),
    /// A device's csrattrs answer, by [`cache::csrattrs_digest`], in the bounded buckets.
    Attrs([u8; 32]),
    /// An enrolment answer, by [`cache::enrolled_digest`], in the bounded buckets of
    /// `enroll_answer_cache`.
    Enrolled([u8; 32]),
}

/// Who sent the body being collected, as far as the edge checked it.
enum Caller {
    /// An EST device (enrolment): its verified certificate and the EST label.
    Device {
        client: Client,
        label: Option<String>,
    },
    /// A BRSKI pledge: its TLS client certificate, base64 DER on one line.
    Pledge { cert_b64: String },
}

struct EdgeStream {
    config: Option<Rc<Config>>,
    state: State,
    /// Read at `on_http_request_headers`.
    headers: Headers,
    /// The root's [`ENROLL_CACHE_HITS`] counter.
    enroll_cache_hits: Option<u32>,
}

/// The verified-CSR-signature cache in shared data (layout and eviction in [`cache`]).
struct SharedSignatures {
    config: CacheBounds,
    now: u64,
    /// The bucket read by the last lookup, with its CAS, for the insert that follows a miss.
    read: Option<(cache::SigBucket, Vec<u8>, Option<u32>)>,
}

impl SharedSignatures {
    fn new(config: CacheBounds) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        Some(SharedSignatures {
            config,
            now: now_unix_s()?,
            read: None,
        })
    }
}

impl SignatureMemo for SharedSignatures {
    fn verified(&mut self, digest: &CsrDigest) -> bool {
        let Some(bucket) = cache::sig_bucket(digest, self.config.max_entries) else {
            return false;
        };
        let (value, cas) = hostcalls::get_shared_data(&bucket.key).unwrap_or((None, None));
        let value = value.unwrap_or_default();
        let hit = cache::sig_contains(&value, digest, self.now);
        self.read = Some((bucket, value, cas));
        hit
    }

    fn remember(&mut self, digest: &CsrDigest) {
        let Some((bucket, value, cas)) = self.read.take() else {
            return;
        };
        let expires_at = self.now.saturating_add(self.config.ttl_s);
        let entry = cache::sig_insert(&value, digest, self.now, expires_at, bucket.capacity);
        // With the CAS of the read, a bucket another worker changed meanwhile is left alone
        // (CasMismatch): this digest is then simply verified again next time.
        let _ = hostcalls::set_shared_data(&bucket.key, Some(&entry), cas);
    }
}

/// The headers of an EST or BRSKI request, read from the proxy in ONE host call (each call
/// across the Wasm boundary costs more than the lookups here). Other requests never read them.
#[derive(Default)]
struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    fn read() -> Headers {
        Headers(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default())
    }

    /// The first value of `name` (lower case, as the proxy gives names).
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The request's `x-request-id` (set by Envoy), if it is one that may be passed on and
    /// logged ([`internal_api::request_id_ok`]).
    fn request_id(&self) -> Option<String> {
        let id = std::str::from_utf8(self.get(internal_api::HDR_REQUEST_ID)?).ok()?;
        internal_api::request_id_ok(id).then(|| id.to_string())
    }

    /// ` request_id=<id>` for a log line, or nothing.
    fn request_id_note(&self) -> String {
        self.request_id()
            .map(|id| format!(" request_id={id}"))
            .unwrap_or_default()
    }
}

/// The certificates the root context last fetched from the control plane's `/cacerts`
/// (unlabelled and every label), each once.
fn learned_certificates(cfg: &Config) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let labels = std::iter::once(None).chain(cfg.labels.keys().map(|l| Some(l.as_str())));
    for label in labels {
        let Ok((Some(der), _)) = hostcalls::get_shared_data(&cache::learned_key(label)) else {
            continue;
        };
        for cert in estuary_proto::pkcs7::decode_certs_only(&der).unwrap_or_default() {
            if !out.contains(&cert) {
                out.push(cert);
            }
        }
    }
    out
}

fn call_response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
        .ok()
        .flatten()
}

fn connection_is_mtls() -> bool {
    matches!(
        hostcalls::get_property(vec!["connection", "mtls"]),
        Ok(Some(v)) if v.as_slice() == [1]
    )
}

/// Envoy's SHA-256 of the connection's peer certificate (lower-case hex), if any.
fn peer_certificate_digest() -> Option<Vec<u8>> {
    hostcalls::get_property(vec!["connection", "sha256_peer_certificate_digest"])
        .ok()
        .flatten()
}

fn now_unix_s() -> Option<u64> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

impl EdgeStream {
    fn send(&mut self, reply: &Reply) -> Action {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        if hostcalls::send_http_response(reply.status, headers, Some(&reply.body)).is_err() {
            log(
                LogLevel::Error,
                "estuary-filter: could not send a local reply",
            );
        }
        self.state = State::Done;
        Action::Pause
    }

    fn fail(&mut self, error: &EdgeError) -> Action {
        if error.status() >= 500 {
            let rid = self.headers.request_id_note();
            log(LogLevel::Warn, &format!("estuary-filter: {error}{rid}"));
        } else {
            debug(|| {
                format!(
                    "estuary-filter: refused: {error}{}",
                    self.headers.request_id_note()
                )
            });
        }
        self.send(&error.reply())
    }

    /// Who the client is: the XFCC certificate, bound to the connection, judged by its issuer.
    /// The issuer's signature on the exact certificates is remembered in the same shared-data
    /// cache as CSR signatures (`csr_signature_cache`), so a device's next request skips it;
    /// who issued it and everything that follows is decided again.
    fn identity(&self, cfg: &Config, est: &EstService, need: Need) -> Result<Client, EdgeError> {
        // No client certificate: refused before asking the proxy anything (the common
        // refusal, kept cheap). Without an XFCC there is nothing to judge, mTLS or not.
        let Some(xfcc) = self.headers.get("x-forwarded-client-cert") else {
            return Err(EdgeError::NoClientCertificate);
        };
        if !connection_is_mtls() {
            return Err(EdgeError::NoClientCertificate);
        }
        let mut memo = SharedSignatures::new(cfg.csr_signature_cache);
        identity::authenticate_with_known(
            true,
            Some(xfcc),
            peer_certificate_digest().as_deref(),
            need,
            &est.trust,
            || learned_certificates(cfg),
            memo.as_mut().map(|m| m as &mut dyn SignatureMemo),
        )
    }

    /// The client certificate headers for the control plane, which checks them again.
    fn client_headers(client: &Client) -> (String, String) {
        let chain: Vec<String> = client
            .chain
            .iter()
            .map(|d| identity::b64_one_line(d))
            .collect();
        (identity::b64_one_line(&client.leaf), chain.join(","))
    }

    /// A cached cacerts answer (its base64 body), fresh at `now`: this VM's copy, else shared
    /// data (then copied here with the same expiry).
    fn cache_get(cfg: &Config, key: &str) -> Option<Rc<Vec<u8>>> {
        if cfg.cache_ttl_s == 0 {
            return None;
        }
        let now = now_unix_s()?;
        let local = CACERTS.with(|c| {
            c.borrow()
                .get(key)
                .filter(|(expires_at, _)| now < *expires_at)
                .map(|(_, body)| Rc::clone(body))
        });
        if local.is_some() {
            return local;
        }
        let (value, _) = hostcalls::get_shared_data(key).ok()?;
        let value = value?;
        let (expires_at, body) = cache::fresh(&value, now)?;
        let body = Rc::new(body.to_vec());
        CACERTS.with(|c| {
            c.borrow_mut()
                .insert(key.to_string(), (expires_at, Rc::clone(&body)))
        });
        Some(body)
    }

    fn cache_put(cfg: &Config, key: &CacheKey, der: &[u8]) {
        let ttl_s = match key {
            CacheKey::Answer(_) | CacheKey::Attrs(_) => cfg.cache_ttl_s,
            CacheKey::Enrolled(_) => cfg.enroll_answer_cache.ttl_s,
        };
        if ttl_s == 0 {
            return;
        }
        let Some(now) = now_unix_s() else { return };
        let expires_at = now.saturating_add(ttl_s);
        let (bucket, digest) = match key {
            CacheKey::Answer(key) => {
                // Kept as the reply body (base64): a hit sends it as it is.
                let body = estuary_proto::base64::encode(der);
                let entry = cache::encode(expires_at, body.as_bytes());
                if hostcalls::set_shared_data(key, Some(&entry), None).is_err() {
                    log(
                        LogLevel::Warn,
                        "estuary-filter: could not store a cache entry",
                    );
                }
                return;
            }
            CacheKey::Attrs(d) => (cache::attrs_bucket(d, cfg.csrattrs_max_entries), d),
            CacheKey::Enrolled(d) => (
                cache::enrolled_bucket(d, cfg.enroll_answer_cache.max_entries),
                d,
            ),
        };
        let Some(bucket) = bucket else { return };
        let (value, cas) = hostcalls::get_shared_data(&bucket.key).unwrap_or((None, None));
        let Some(value) = cache::answer_insert(
            &value.unwrap_or_default(),
            digest,
            der,
            now,
            expires_at,
            bucket.capacity,
        ) else {
            return;
        };
        // A bucket another worker changed meanwhile is left alone (CasMismatch): the answer is
        // then simply asked for again next time.
        match hostcalls::set_shared_data(&bucket.key, Some(&value), cas) {
            Ok(()) | Err(Status::CasMismatch) => {}
            Err(_) => log(
                LogLevel::Warn,
                "estuary-filter: could not store a cache entry",
            ),
        }
    }

    /// The answer in the bucket `bucket` names for `digest`, if cached and fresh.
    fn bucket_get(bucket: Option<cache::SigBucket>, digest: &[u8; 32]) -> Option<Vec<u8>> {
        let bucket = bucket?;
        let now = now_unix_s()?;
        let (value, _) = hostcalls::get_shared_data(&bucket.key).ok()?;
        cache::answer_get(&value?, digest, now).map(<[u8]>::to_vec)
    }

    /// A device's csrattrs answer from the bounded buckets, if cached and fresh.
    fn attrs_get(cfg: &Config, digest: &[u8; 32]) -> Option<Vec<u8>> {
        if cfg.cache_ttl_s == 0 {
            return None;
        }
        Self::bucket_get(
            cache::attrs_bucket(digest, cfg.csrattrs_max_entries),
            digest,
        )
    }

    /// The answer the control plane gave this client certificate for this exact CSR, operation
    /// and label, if `enroll_answer_cache` holds it and it is fresh.
    fn enrolled_get(cfg: &Config, digest: &[u8; 32]) -> Option<Vec<u8>> {
        if !cfg.enroll_answer_cache.enabled() {
            return None;
        }
        Self::bucket_get(
            cache::enrolled_bucket(digest, cfg.enroll_answer_cache.max_entries),
            digest,
        )
    }

    /// Send one call for `op` to the control plane and wait for it.
    fn call(
        &mut self,
        cfg: &Config,
        op: Operation,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
        cache_key: Option<CacheKey>,
    ) -> Action {
        let cp = &cfg.control_plane;
        let auth = format!("Bearer {}", cp.token.expose());
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", op.method().as_str()),
            (":path", op.path().as_str()),
            (":authority", cp.authority.as_str()),
            (internal_api::HDR_AUTHORIZATION, auth.as_str()),
        ];
        headers.extend_from_slice(extra);
        let request_id = self.headers.request_id();
        if let Some(id) = &request_id {
            headers.push((internal_api::HDR_REQUEST_ID, id.as_str()));
        }
        match hostcalls::dispatch_http_call(&cp.cluster, headers, body, vec![], cp.timeout) {
            Ok(token) => {
                self.state = State::Waiting {
                    token,
                    op,
                    cache_key,
                };
                Action::Pause
            }
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "estuary-filter: dispatch of {op} to cluster {} failed: {status:?}{}",
                        cp.cluster,
                        self.headers.request_id_note()
                    ),
                );
                self.fail(&EdgeError::ControlPlaneUnavailable)
            }
        }
    }

    /// The TLS client certificate as base64 DER, for the registrar (RFC 8995 §5.5).
    fn client_cert_b64(&self) -> Result<String, EdgeError> {
        if !connection_is_mtls() {
            return Err(EdgeError::NoClientCertificate);
        }
        let xfcc = self.headers.get("x-forwarded-client-cert");
        let (der, _) = identity::leaf_from_xfcc(true, xfcc, peer_certificate_digest().as_deref())?;
        // One header line: the EST encoder wraps lines, a header value must not.
        Ok(identity::b64_one_line(&der))
    }

    fn start_brski(&mut self, cfg: &Config, path: &[u8], end_of_stream: bool) -> Action {
        let op = match brski::route(path, self.headers.get(":method")) {
            Ok(op) => op,
            Err(e) => return self.send(&e.reply()),
        };
        let cert_b64 = match self.client_cert_b64() {
            Ok(c) => c,
            Err(e) => return self.fail(&e),
        };
        if let Err(e) = brski::check_content_type(op, self.headers.get("content-type")) {
            return self.send(&e.reply());
        }
        if let Err(e) =
            route::check_content_length(self.headers.get("content-length"), cfg.max_body_bytes)
        {
            return self.fail(&e);
        }
        if end_of_stream {
            return self.finish_brski(cfg, op, cert_b64, &[]);
        }
        self.state = State::Collecting {
            op,
            caller: Caller::Pledge { cert_b64 },
        };
        Action::Pause
    }

    fn finish_brski(
        &mut self,
        cfg: &Config,
        op: Operation,
        cert_b64: String,
        body: &[u8],
    ) -> Action {
        if let Err(e) = brski::check_body(op, body) {
            return self.send(&e.reply());
        }
        let mut extra: Vec<(&str, &str)> = vec![(internal_api::HDR_CLIENT_CERT, cert_b64.as_str())];
        if let Some(ct) = op.request_content_type() {
            extra.push((internal_api::HDR_CONTENT_TYPE, ct));
        }
        let body = if op.has_body() { Some(body) } else { None };
        self.call(cfg, op, &extra, body, None)
    }

    /// The whole body has arrived (size already checked): check it and forward it.
    fn body_done(&mut self, cfg: &Config, body_size: usize) -> Action {
        let State::Collecting { op, caller } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Action::Continue;
        };
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match caller {
            Caller::Device { client, label } => self.finish_enroll(cfg, op, client, label, &body),
            Caller::Pledge { cert_b64 } => self.finish_brski(cfg, op, cert_b64, &body),
        }
    }

    fn cacerts(&mut self, cfg: &Config, label: Option<String>) -> Action {
        let key = cache::cacerts_key(label.as_deref());
        if let Some(body) = Self::cache_get(cfg, &key) {
            return self.send(&Reply::base64_body(
                est::CT_PKCS7_CERTS_ONLY,
                body.as_ref().clone(),
            ));
        }
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let Some(l) = label.as_deref() {
            extra.push((internal_api::HDR_LABEL, l));
        }
        self.call(
            cfg,
            Operation::CaCerts,
            &extra,
            None,
            Some(CacheKey::Answer(key)),
        )
    }

    fn csrattrs(&mut self, cfg: &Config, est: &EstService, label: Option<String>) -> Action {
        let client = match self.identity(cfg, est, Need::Any) {
            Ok(c) => c,
            Err(e) => return self.fail(&e),
        };
        let serial = client.identity.label();
        let key = cache::csrattrs_digest(label.as_deref(), serial);
        if let Some(der) = Self::attrs_get(cfg, &key) {
            return self.send(&Reply::base64_der(est::CT_CSRATTRS, &der));
        }
        let (cert_b64, chain_b64) = Self::client_headers(&client);
        let mut extra: Vec<(&str, &str)> = vec![
            (internal_api::HDR_DEVICE_SERIAL, serial.as_str()),
            (internal_api::HDR_CLIENT_CERT, cert_b64.as_str()),
        ];
        if !chain_b64.is_empty() {
            extra.push((internal_api::HDR_CLIENT_CHAIN, chain_b64.as_str()));
        }
        if let Some(l) = label.as_deref() {
            extra.push((internal_api::HDR_LABEL, l));
        }
        self.call(
            cfg,
            Operation::CsrAttrs,
            &extra,
            None,
            Some(CacheKey::Attrs(key)),
        )
    }

    fn start_enroll(
        &mut self,
        cfg: &Config,
        est: &EstService,
        kind: EnrollKind,
        label: Option<String>,
        end_of_stream: bool,
    ) -> Action {
        let need = match kind {
            EnrollKind::Enroll | EnrollKind::ServerKeyGen => Need::IDevId,
            EnrollKind::Reenroll => Need::LDevId,
        };
        let checked = self.identity(cfg, est, need).and_then(|client| {
            route::check_content_type(self.headers.get("content-type"))?;
            route::check_content_length(self.headers.get("content-length"), cfg.max_body_bytes)?;
            if end_of_stream {
                return Err(EdgeError::EmptyBody);
            }
            Ok(client)
        });
        match checked {
            Ok(client) => {
                self.state = State::Collecting {
                    op: kind.operation(),
                    caller: Caller::Device { client, label },
                };
                // Needs `allow_on_headers_stop_iteration: true` in Envoy (see the crate docs).
                Action::Pause
            }
            Err(e) => self.fail(&e),
        }
    }

    fn finish_enroll(
        &mut self,
        cfg: &Config,
        op: Operation,
        client: Client,
        label: Option<String>,
        body: &[u8],
    ) -> Action {
        // A device body is only collected in the registrar role.
        let Some(est) = cfg.est() else {
            return self.fail(&EdgeError::NotAnEstServer);
        };
        let mut memo = SharedSignatures::new(cfg.csr_signature_cache);
        let der = match enroll::check_body(
            op,
            body,
            &client.identity,
            &est.trust.parent,
            &cfg.keys,
            memo.as_mut().map(|m| m as &mut dyn SignatureMemo),
        ) {
            Ok(der) => der,
            Err(e) => return self.fail(&e),
        };
        // The same client certificate with the same CSR, after every check above: the
        // certificate the control plane already gave it, if the edge still holds that answer.
        let cache_key = match op {
            Operation::SimpleEnroll | Operation::SimpleReenroll
                if cfg.enroll_answer_cache.enabled() =>
            {
                let digest =
                    cache::enrolled_digest(op.as_str(), label.as_deref(), &client.leaf, &der);
                if let Some(p7) = Self::enrolled_get(cfg, &digest) {
                    if let Some(id) = self.enroll_cache_hits {
                        let _ = hostcalls::increment_metric(id, 1);
                    }
                    debug(|| {
                        format!(
                            "estuary-filter: {op} answered from enroll_answer_cache{}",
                            self.headers.request_id_note()
                        )
                    });
                    return self.send(&Reply::base64_der(est::CT_PKCS7_CERTS_ONLY, &p7));
                }
                Some(CacheKey::Enrolled(digest))
            }
            _ => None,
        };
        let (cert_b64, chain_b64) = Self::client_headers(&client);
        let mut extra: Vec<(&str, &str)> = vec![
            ("content-type", est::CT_PKCS10),
            (
                internal_api::HDR_DEVICE_SERIAL,
                client.identity.label().as_str(),
            ),
            (internal_api::HDR_OPERATION, op.as_str()),
            (internal_api::HDR_CLIENT_CERT, cert_b64.as_str()),
        ];
        if !chain_b64.is_empty() {
            extra.push((internal_api::HDR_CLIENT_CHAIN, chain_b64.as_str()));
        }
        if let Some(l) = label.as_deref() {
            extra.push((internal_api::HDR_LABEL, l));
        }
        self.call(cfg, op, &extra, Some(&der), cache_key)
    }
}

impl Context for EdgeStream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let state = std::mem::replace(&mut self.state, State::Done);
        let State::Waiting {
            token,
            op,
            cache_key,
        } = state
        else {
            return;
        };
        if token != token_id {
            self.state = State::Waiting {
                token,
                op,
                cache_key,
            };
            return;
        }
        let status = if num_headers == 0 {
            None
        } else {
            call_response_header(":status")
        };
        let retry_after = call_response_header(internal_api::HDR_RETRY_AFTER);
        let content_type = call_response_header(internal_api::HDR_CONTENT_TYPE);
        let location = call_response_header(internal_api::HDR_LOCATION);
        let body = if body_size == 0 {
            Vec::new()
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let answer = upstream::map_answer(
            op,
            &Upstream {
                status: status.as_deref(),
                retry_after: retry_after.as_deref(),
                content_type: content_type.as_deref(),
                location: location.as_deref(),
                body: &body,
            },
        );
        if let Some(line) = &answer.log {
            log(LogLevel::Warn, &format!("estuary-filter: {line}"));
        }
        if let (Some(key), Some(der), Some(cfg)) = (cache_key, &answer.cache, self.config.clone()) {
            Self::cache_put(&cfg, &key, der);
        }
        self.send(&answer.reply);
        if op == Operation::ServerKeyGen {
            // The answer carries a private key: wipe this VM's copies (Envoy has its own).
            let mut answer = answer;
            answer.reply.body.zeroize();
            let mut body = body;
            body.zeroize();
        }
    }
}

impl HttpContext for EdgeStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // The pass-through path reads `:path` and nothing else: on a shared ingress most
        // requests are not Estuary's, and their headers are not copied into the VM.
        let Some(path) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path")
            .ok()
            .flatten()
        else {
            return Action::Continue;
        };
        let is_brski = brski::is_brski_path(&path);
        if !is_brski && !route::is_est_path(&path) {
            return Action::Continue;
        }
        // An EST or BRSKI request: every header in one more host call.
        self.headers = Headers::read();
        // EST or BRSKI for a host this server is not configured for (a shared gateway listener).
        if let Some(hosts) = self.config.as_ref().and_then(|c| c.authorities.as_deref()) {
            if !crate::authority::admits(hosts, self.headers.get(":authority")) {
                return self.fail(&EdgeError::MisdirectedRequest);
            }
        }
        if is_brski {
            let Some(cfg) = self.config.clone() else {
                return self.send(&Reply::text(503, "BRSKI service not configured"));
            };
            return self.start_brski(&cfg, &path, end_of_stream);
        }
        let Some(cfg) = self.config.clone() else {
            return self.send(&Reply::text(503, "EST service not configured"));
        };
        // A cloud registrar is not an EST server: every EST request ends here, before any call.
        let Some(est) = cfg.est() else {
            return self.fail(&EdgeError::NotAnEstServer);
        };
        match route::route(&path, self.headers.get(":method"), &cfg) {
            Ok(Route::PassThrough) => Action::Continue,
            Ok(Route::CaCerts { label }) => self.cacerts(&cfg, label),
            Ok(Route::CsrAttrs { label }) => self.csrattrs(&cfg, est, label),
            Ok(Route::Enroll { kind, label }) => {
                self.start_enroll(&cfg, est, kind, label, end_of_stream)
            }
            Err(e) => self.fail(&e),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.state {
            State::Collecting { .. } => {}
            State::Idle => return Action::Continue,
            State::Waiting { .. } | State::Done => return Action::Pause,
        }
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        let limit = cfg.max_body_bytes;
        if u64::try_from(body_size).map_or(true, |n| n > limit) {
            return self.fail(&EdgeError::PayloadTooLarge { limit });
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.body_done(&cfg, body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if !matches!(self.state, State::Collecting { .. }) {
            return Action::Continue;
        }
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        // The body ended without end_of_stream because trailers follow: it is all buffered now.
        let size = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX)
            .ok()
            .flatten()
            .map_or(0, |b| b.len());
        let limit = cfg.max_body_bytes;
        if u64::try_from(size).map_or(true, |n| n > limit) {
            return self.fail(&EdgeError::PayloadTooLarge { limit });
        }
        self.body_done(&cfg, size)
    }
}
