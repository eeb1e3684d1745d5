//! A strict test ACME CA (RFC 8555) with pre-authorisation (`newAuthz`, §7.4.1) and ACME for
//! Subdomains (RFC 9444), because no CA that installs here offers them (Pebble 2.4 and Boulder
//! have no `newAuthz`).
//!
//! It is strict so that client code is really exercised: every POST must be a flattened JWS
//! (`application/jose+json`) signed with ES256, carry a nonce this server issued and has not
//! seen used, and a `url` equal to the request URL; `jwk` only for newAccount, `kid` for the
//! rest. Errors are RFC 8555 §6.7 problem documents (`application/problem+json`). DNS-01 is
//! validated by asking the real BIND9 for the TXT record over UDP; certificates are signed by
//! the CA's own root (rcgen) with the CSR's public key once the CSR's signature verified and its
//! names equal the order's.
//!
//! RFC 9444: the directory's `meta.subdomainAuthAllowed` is true; a newAuthz identifier may
//! carry `subdomainAuthAllowed: true` (the authorisation then also covers names below it, and
//! says so with `subdomainAuthAllowed: true`); a newOrder identifier may carry
//! `ancestorDomain`, and the order is then satisfied by the account's valid ancestor
//! authorisation, with no challenge. [`CaOptions`] turns each of these off, and shortens the
//! authorisation lifetime, for fallback and renewal tests.
//!
//! ACME profiles (draft-ietf-acme-profiles): the directory's `meta.profiles` maps each offered
//! profile's name to a description ([`CaOptions::profiles`]; the member is left out when none is
//! offered); a newOrder may carry `"profile": "<name>"`, which must be a string naming an
//! offered profile, else the CA answers 400 `invalidProfile`; the order object echoes the
//! profile. [`TestAcmeCa::order_profiles`] tells which profile each order used.
//!
//! Runs on its own thread and tokio runtime, serving HTTPS on 127.0.0.1 with a throw-away TLS
//! certificate; stops on drop.
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::util::TempDir;

/// What the CA offers and how it misbehaves.
#[derive(Clone, Debug)]
pub struct CaOptions {
    /// DNS server asked for `_acme-challenge` TXT records (the BIND9 primary).
    pub dns_server: SocketAddr,
    /// Offer `newAuthz` in the directory (RFC 8555 §7.4.1).
    pub new_authz: bool,
    /// Accept `subdomainAuthAllowed` in newAuthz (RFC 9444 §4.2).
    pub subdomain_auth: bool,
    /// Announce `meta.subdomainAuthAllowed` in the directory (RFC 9444 §4.4). With
    /// `subdomain_auth` false this makes a CA that announces but then refuses.
    pub advertise_subdomain_auth: bool,
    /// Accept `ancestorDomain` in newOrder (RFC 9444 §4.3).
    pub ancestor_domain: bool,
    /// Lifetime of a valid authorisation.
    pub authz_lifetime: Duration,
    /// Validity of issued certificates.
    pub cert_validity: Duration,
    /// Fault injection for client error tests.
    pub fault: Fault,
    /// ACME profiles offered (draft-ietf-acme-profiles): name and description, advertised in
    /// the directory's `meta.profiles`. Empty: the CA has no profiles (no `meta.profiles`).
    pub profiles: Vec<(String, String)>,
}

impl CaOptions {
    /// Everything offered, authorisations valid one day.
    pub fn rfc9444(dns_server: SocketAddr) -> Self {
        Self {
            dns_server,
            new_authz: true,
            subdomain_auth: true,
            advertise_subdomain_auth: true,
            ancestor_domain: true,
            authz_lifetime: Duration::from_secs(24 * 3600),
            cert_validity: Duration::from_secs(7 * 24 * 3600),
            fault: Fault::None,
            profiles: Vec::new(),
        }
    }
}

/// A deliberate misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// None.
    None,
    /// newOrder answers this problem type (e.g. `serverInternal`, `rejectedIdentifier`) with
    /// this HTTP status.
    NewOrderProblem(&'static str, u16),
    /// Order objects are sent without their `finalize` field.
    OrderWithoutFinalize,
    /// Challenges are accepted but never validated: orders never become ready.
    NeverValidate,
    /// newAuthz and newOrder answer a hostile problem document (RFC 7807 §3, RFC 8555 §6.7):
    /// `application/problem+json` with this HTTP status, `type` the raw JSON text given (an
    /// unknown URN, a URN with bidirectional-override characters, or not a string at all), a
    /// `detail` of about 140 KB of multi-byte text with NUL and control characters, and a
    /// `Retry-After` that is neither a number nor an HTTP date.
    HostileProblem {
        /// HTTP status.
        status: u16,
        /// The `type` member, as JSON text (e.g. `42` or `"urn:…"`).
        type_json: &'static str,
    },
    /// Every `expires` in authorisation and order objects (RFC 8555 §7.1.3, §7.1.4) is
    /// [`MALFORMED_DATE`]: not RFC 3339, with a multi-byte character where the offset's
    /// colon belongs.
    MalformedDates,
    /// newOrder answers HTTP 429 with a `urn:ietf:params:acme:error:rateLimited` problem
    /// (RFC 8555 §6.7, `application/problem+json`) and `Retry-After: N` when given
    /// (RFC 9110 §10.2.3), as a CA whose per-account order limit is used up.
    RateLimited {
        /// `Retry-After` in seconds; `None`: no header.
        retry_after_s: Option<u64>,
    },
    /// The directory still advertises [`CaOptions::profiles`], but newOrder no longer offers
    /// any: a named profile gets 400 `invalidProfile` (a CA that withdrew its profiles after the
    /// client read the directory).
    ProfilesWithdrawn,
}

/// The `expires` sent under [`Fault::MalformedDates`].
pub const MALFORMED_DATE: &str = "2030-01-01T00:00:00+0\u{e9}00";

/// Counters of what the CA did, for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaStats {
    /// newAuthz requests that created an authorisation.
    pub new_authz: u64,
    /// Orders created.
    pub orders: u64,
    /// Orders created ready, through an ancestor authorisation (RFC 9444).
    pub orders_via_ancestor: u64,
    /// DNS-01 validations performed (one DNS query each).
    pub dns_validations: u64,
    /// Certificates issued.
    pub certificates: u64,
    /// Problem documents sent, any type.
    pub problems: u64,
    /// badNonce problems sent.
    pub bad_nonces: u64,
    /// newOrder requests received, answered or refused (before any check).
    pub new_order_requests: u64,
}

/// A running test CA.
pub struct TestAcmeCa {
    /// `https://127.0.0.1:P/directory`
    pub directory_url: String,
    /// PEM of the CA that signed the server's TLS certificate.
    pub tls_ca_pem: PathBuf,
    /// PEM of the root that signs issued certificates.
    pub issuer_root_pem: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Ca>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl TestAcmeCa {
    /// Starts the CA on a free port of 127.0.0.1, on its own thread.
    pub fn start(opts: CaOptions) -> anyhow::Result<Self> {
        Self::start_on(opts, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None)
    }

    /// Starts on `listen`, writing its PEM files into `dir` (a fresh temp dir if `None`).
    pub fn start_on(
        opts: CaOptions,
        listen: SocketAddr,
        dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let tmp = TempDir::new("acme-ca")?;
        let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
        std::fs::create_dir_all(&dir)?;
        let (tls_ca, tls_cert, tls_key) =
            crate::https::tls_material("Estuary test ACME CA TLS root")?;
        let tls_ca_pem = dir.join("tls-ca.pem");
        std::fs::write(&tls_ca_pem, tls_ca)?;
        let (issuer, root_pem) = issuer()?;
        let issuer_root_pem = dir.join("issuer-root.pem");
        std::fs::write(&issuer_root_pem, &root_pem)?;

        let listener = std::net::TcpListener::bind(listen).context("binding the test CA")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let base = format!("https://{addr}");
        let state = Arc::new(Ca {
            base: base.clone(),
            opts,
            issuer,
            root_pem,
            inner: Mutex::new(Inner::default()),
            seq: AtomicU64::new(1),
            stats: Mutex::new(CaStats::default()),
        });
        let tls = crate::https::server_config(tls_cert.as_bytes(), tls_key.as_bytes())?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let st = Arc::clone(&state);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                tokio::select! {
                    _ = crate::https::serve(listener, tls, router(st)) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            directory_url: format!("{base}/directory"),
            tls_ca_pem,
            issuer_root_pem,
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
            _dir: tmp,
        })
    }

    /// What the CA did so far.
    pub fn stats(&self) -> CaStats {
        *lock(&self.state.stats)
    }

    /// The profile of every order created so far, in creation order (`None`: the newOrder
    /// named none).
    pub fn order_profiles(&self) -> Vec<Option<String>> {
        lock(&self.state.inner).order_profiles.clone()
    }

    /// Changes the fault injected from now on.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.state.inner).fault_override = Some(fault);
    }

    /// From now on, issues from a new intermediate CA under the root (named `name`) and
    /// returns end-entity + intermediate + root as its chain, as a CA that rolls its issuing
    /// intermediate does. Returns the intermediate's PEM.
    pub fn rotate_intermediate(&self, name: &str) -> anyhow::Result<String> {
        let (issuer, pem) = intermediate(&self.state.issuer, name)?;
        let mut inner = lock(&self.state.inner);
        inner.intermediate = Some((Arc::new(issuer), pem.clone()));
        inner.wrong_intermediate = None;
        Ok(pem)
    }

    /// From now on, the chain names an intermediate that did not issue the end-entity
    /// certificate: a CA certificate with the issuing intermediate's name (`name`, as given to
    /// [`Self::rotate_intermediate`]) but another key, under the same root. Returns its PEM.
    pub fn send_wrong_intermediate(&self, name: &str) -> anyhow::Result<String> {
        let (_, pem) = intermediate(&self.state.issuer, name)?;
        lock(&self.state.inner).wrong_intermediate = Some(pem.clone());
        Ok(pem)
    }
}

impl Drop for TestAcmeCa {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// State

struct Ca {
    base: String,
    opts: CaOptions,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root_pem: String,
    inner: Mutex<Inner>,
    seq: AtomicU64,
    stats: Mutex<CaStats>,
}

#[derive(Default)]
struct Inner {
    nonces: HashSet<String>,
    /// account id -> JWK thumbprint; thumbprint -> account id.
    accounts: HashMap<String, Account>,
    by_thumbprint: HashMap<String, String>,
    authzs: HashMap<String, Authz>,
    challenges: HashMap<String, String>,
    orders: HashMap<String, Order>,
    certs: HashMap<String, (String, String)>,
    fault_override: Option<Fault>,
    /// The profile of each order created, in order.
    order_profiles: Vec<Option<String>>,
    /// The intermediate that signs issued certificates ([`TestAcmeCa::rotate_intermediate`]);
    /// `None`: the root signs them.
    intermediate: Option<(Arc<rcgen::Issuer<'static, rcgen::KeyPair>>, String)>,
    /// PEM sent in the chain in place of the issuing intermediate.
    wrong_intermediate: Option<String>,
}

struct Account {
    key: p256::ecdsa::VerifyingKey,
    thumbprint: String,
    jwk: Value,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Pending,
    Processing,
    Ready,
    Valid,
    Invalid,
    Expired,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Ready => "ready",
            Status::Valid => "valid",
            Status::Invalid => "invalid",
            Status::Expired => "expired",
        }
    }
}

struct Authz {
    account: String,
    value: String,
    subdomains: bool,
    status: Status,
    expires: u64,
    challenge_id: String,
    challenge_status: Status,
    token: String,
    error: Option<Value>,
}

struct Order {
    account: String,
    identifiers: Vec<Value>,
    names: Vec<String>,
    authzs: Vec<String>,
    status: Status,
    expires: u64,
    cert: Option<String>,
    /// draft-ietf-acme-profiles: the profile the newOrder named.
    profile: Option<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Ca {
    fn id(&self) -> String {
        use rand::RngCore;
        let mut b = [0u8; 8];
        rand::rng().fill_bytes(&mut b);
        format!("{}{}", self.seq.fetch_add(1, Ordering::Relaxed), hex(&b))
    }

    fn nonce(&self) -> String {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        let n = B64.encode(b);
        lock(&self.inner).nonces.insert(n.clone());
        n
    }

    fn fault(&self) -> Fault {
        lock(&self.inner)
            .fault_override
            .clone()
            .unwrap_or_else(|| self.opts.fault.clone())
    }

    fn count(&self, f: impl FnOnce(&mut CaStats)) {
        f(&mut lock(&self.stats));
    }

    fn authz_status(a: &Authz) -> Status {
        if a.status == Status::Valid && now() >= a.expires {
            Status::Expired
        } else {
            a.status
        }
    }

    fn authz_json(&self, id: &str, a: &Authz) -> Value {
        let mut v = json!({
            "identifier": {"type": "dns", "value": a.value},
            "status": Self::authz_status(a).as_str(),
            "expires": rfc3339(a.expires),
            "challenges": [{
                "type": "dns-01",
                "url": format!("{}/chall/{}", self.base, a.challenge_id),
                "token": a.token,
                "status": a.challenge_status.as_str(),
            }],
        });
        if a.subdomains {
            v["subdomainAuthAllowed"] = json!(true);
        }
        if let Some(e) = &a.error {
            v["challenges"][0]["error"] = e.clone();
        }
        let _ = id;
        v
    }

    /// Brings an order's status up to date from its authorisations.
    fn refresh_order(inner: &mut Inner, order_id: &str) {
        let Some(o) = inner.orders.get(order_id) else {
            return;
        };
        if o.status != Status::Pending && o.status != Status::Ready {
            return;
        }
        let statuses: Vec<Status> = o
            .authzs
            .iter()
            .map(|a| {
                inner
                    .authzs
                    .get(a)
                    .map(Self::authz_status)
                    .unwrap_or(Status::Invalid)
            })
            .collect();
        let new = if statuses.iter().all(|s| *s == Status::Valid) {
            Status::Ready
        } else if statuses
            .iter()
            .any(|s| matches!(s, Status::Invalid | Status::Expired))
        {
            Status::Invalid
        } else {
            Status::Pending
        };
        if let Some(o) = inner.orders.get_mut(order_id) {
            o.status = new;
        }
    }

    fn order_json(&self, o: &Order) -> Value {
        let mut v = json!({
            "status": o.status.as_str(),
            "expires": rfc3339(o.expires),
            "identifiers": o.identifiers,
            "authorizations": o.authzs.iter().map(|a| format!("{}/authz/{a}", self.base)).collect::<Vec<_>>(),
            "finalize": "",
        });
        if let Some(c) = &o.cert {
            v["certificate"] = json!(format!("{}/cert/{c}", self.base));
        }
        if let Some(p) = &o.profile {
            v["profile"] = json!(p);
        }
        v
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Problems (RFC 8555 §6.7)

struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    extra: Option<(&'static str, Value)>,
}

fn problem(status: u16, kind: &'static str, detail: impl Into<String>) -> Problem {
    Problem {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        kind,
        detail: detail.into(),
        extra: None,
    }
}

fn malformed(detail: impl Into<String>) -> Problem {
    problem(400, "malformed", detail)
}

fn respond_problem(ca: &Ca, p: Problem) -> Response {
    ca.count(|s| {
        s.problems += 1;
        if p.kind == "badNonce" {
            s.bad_nonces += 1;
        }
    });
    let mut body = json!({
        "type": format!("urn:ietf:params:acme:error:{}", p.kind),
        "detail": p.detail,
        "status": p.status.as_u16(),
    });
    if let Some((k, v)) = p.extra {
        body[k] = v;
    }
    let mut r = (p.status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    if let Ok(n) = HeaderValue::from_str(&ca.nonce()) {
        h.insert("replay-nonce", n);
    }
    r
}

/// The answer under [`Fault::HostileProblem`].
fn respond_hostile_problem(ca: &Ca, status: u16, type_json: &str) -> Response {
    ca.count(|s| s.problems += 1);
    let kind: Value = serde_json::from_str(type_json).unwrap_or(Value::Null);
    let body = json!({
        "type": kind,
        "detail": "\u{e4}\u{0}\u{202e}\u{1c5}\u{7} ".repeat(10_000),
        "status": status,
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert("retry-after", HeaderValue::from_static("soon"));
    if let Ok(n) = HeaderValue::from_str(&ca.nonce()) {
        h.insert("replay-nonce", n);
    }
    r
}

fn respond(ca: &Ca, status: StatusCode, mut body: Value, location: Option<String>) -> Response {
    if ca.fault() == Fault::MalformedDates {
        if let Some(e) = body.get_mut("expires") {
            *e = json!(MALFORMED_DATE);
        }
    }
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(n) = HeaderValue::from_str(&ca.nonce()) {
        h.insert("replay-nonce", n);
    }
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert("location", l);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// JWS (RFC 8555 §6.2, RFC 7515 flattened JSON)

struct Verified {
    /// The account id (for kid requests) or None for newAccount.
    account: Option<String>,
    /// The JWK (for newAccount).
    jwk: Option<Value>,
    /// `None` for POST-as-GET (empty payload).
    payload: Option<Value>,
}

fn b64_json(s: &str) -> Result<Value, Problem> {
    let raw = B64
        .decode(s)
        .map_err(|_| malformed("not base64url (without padding)"))?;
    serde_json::from_slice(&raw).map_err(|_| malformed("not JSON"))
}

fn jwk_key(jwk: &Value) -> Result<(p256::ecdsa::VerifyingKey, String), Problem> {
    let kty = jwk.get("kty").and_then(Value::as_str);
    let crv = jwk.get("crv").and_then(Value::as_str);
    let (Some("EC"), Some("P-256")) = (kty, crv) else {
        return Err(problem(
            400,
            "badPublicKey",
            "only EC P-256 account keys are accepted",
        ));
    };
    let coord = |k: &str| -> Result<String, Problem> {
        jwk.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| malformed(format!("jwk has no {k}")))
    };
    let (x, y) = (coord("x")?, coord("y")?);
    let xb = B64.decode(&x).map_err(|_| malformed("jwk.x"))?;
    let yb = B64.decode(&y).map_err(|_| malformed("jwk.y"))?;
    if xb.len() != 32 || yb.len() != 32 {
        return Err(problem(
            400,
            "badPublicKey",
            "P-256 coordinates are 32 bytes",
        ));
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&xb);
    sec1.extend_from_slice(&yb);
    let point = p256::EncodedPoint::from_bytes(&sec1)
        .map_err(|_| problem(400, "badPublicKey", "not a P-256 point"))?;
    let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
        .map_err(|_| problem(400, "badPublicKey", "not a point on P-256"))?;
    // RFC 7638 thumbprint: the required members in lexicographic order, no whitespace.
    let canon = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let thumbprint = B64.encode(Sha256::digest(canon.as_bytes()));
    Ok((key, thumbprint))
}

fn verify(ca: &Ca, headers: &HeaderMap, path: &str, body: &[u8]) -> Result<Verified, Problem> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/jose+json" {
        return Err(Problem {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "malformed",
            detail: format!("Content-Type must be application/jose+json, not {ct:?}"),
            extra: None,
        });
    }
    let jws: Value = serde_json::from_slice(body).map_err(|_| malformed("body is not JSON"))?;
    let field = |k: &str| -> Result<String, Problem> {
        jws.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| malformed(format!("JWS has no {k}")))
    };
    let (prot_b64, payload_b64, sig_b64) =
        (field("protected")?, field("payload")?, field("signature")?);
    if jws.as_object().is_some_and(|o| o.contains_key("header")) {
        return Err(malformed("unprotected JWS header is not allowed"));
    }
    let prot = b64_json(&prot_b64)?;
    let alg = prot.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "ES256" {
        return Err(Problem {
            status: StatusCode::BAD_REQUEST,
            kind: "badSignatureAlgorithm",
            detail: format!("alg {alg:?} is not supported"),
            extra: Some(("algorithms", json!(["ES256"]))),
        });
    }
    let url = prot.get("url").and_then(Value::as_str).unwrap_or("");
    let expected = format!("{}{path}", ca.base);
    if url != expected {
        return Err(problem(
            401,
            "unauthorized",
            format!("JWS url {url:?} is not the request URL {expected:?}"),
        ));
    }
    let nonce = prot.get("nonce").and_then(Value::as_str).unwrap_or("");
    if nonce.is_empty() || !lock(&ca.inner).nonces.remove(nonce) {
        return Err(problem(400, "badNonce", "unknown or used nonce"));
    }
    let (key, account, jwk) = match (prot.get("jwk"), prot.get("kid")) {
        (Some(jwk), None) => {
            if !path.ends_with("/new-account") {
                return Err(malformed("jwk is only for newAccount; use kid"));
            }
            let (key, _) = jwk_key(jwk)?;
            (key, None, Some(jwk.clone()))
        }
        (None, Some(kid)) => {
            let kid = kid.as_str().unwrap_or("");
            let id = kid
                .strip_prefix(&format!("{}/acct/", ca.base))
                .ok_or_else(|| problem(400, "accountDoesNotExist", "unknown kid"))?;
            let inner = lock(&ca.inner);
            let acct = inner
                .accounts
                .get(id)
                .ok_or_else(|| problem(400, "accountDoesNotExist", "unknown kid"))?;
            (acct.key, Some(id.to_string()), None)
        }
        _ => return Err(malformed("exactly one of jwk and kid")),
    };
    let sig = B64
        .decode(&sig_b64)
        .map_err(|_| malformed("signature is not base64url"))?;
    let sig = p256::ecdsa::Signature::from_slice(&sig)
        .map_err(|_| malformed("ES256 signature must be 64 bytes (r || s)"))?;
    use p256::ecdsa::signature::Verifier;
    key.verify(format!("{prot_b64}.{payload_b64}").as_bytes(), &sig)
        .map_err(|_| problem(401, "unauthorized", "JWS signature does not verify"))?;
    let payload = if payload_b64.is_empty() {
        None
    } else {
        Some(b64_json(&payload_b64)?)
    };
    Ok(Verified {
        account,
        jwk,
        payload,
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

type S = State<Arc<Ca>>;

fn router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route("/directory", get(directory))
        .route("/new-nonce", get(new_nonce).head(new_nonce))
        .route("/new-account", post(new_account))
        .route("/new-authz", post(new_authz))
        .route("/new-order", post(new_order))
        .route("/acct/{id}", post(account))
        .route("/authz/{id}", post(authz))
        .route("/chall/{id}", post(challenge))
        .route("/order/{id}", post(order))
        .route("/order/{id}/finalize", post(finalize))
        .route("/cert/{id}", post(cert))
        .with_state(ca)
}

async fn directory(State(ca): S) -> Response {
    let b = &ca.base;
    let mut d = json!({
        "newNonce": format!("{b}/new-nonce"),
        "newAccount": format!("{b}/new-account"),
        "newOrder": format!("{b}/new-order"),
        "revokeCert": format!("{b}/revoke-cert"),
        "keyChange": format!("{b}/key-change"),
        "meta": {},
    });
    if ca.opts.new_authz {
        d["newAuthz"] = json!(format!("{b}/new-authz"));
    }
    if ca.opts.advertise_subdomain_auth {
        d["meta"]["subdomainAuthAllowed"] = json!(true);
    }
    if !ca.opts.profiles.is_empty() {
        let profiles: serde_json::Map<String, Value> = ca
            .opts
            .profiles
            .iter()
            .map(|(name, description)| (name.clone(), json!(description)))
            .collect();
        d["meta"]["profiles"] = Value::Object(profiles);
    }
    let mut r = (StatusCode::OK, d.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

async fn new_nonce(State(ca): S, method: axum::http::Method) -> Response {
    // RFC 8555 §7.2: 200 for HEAD, 204 for GET.
    let status = if method == axum::http::Method::HEAD {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    let mut r = status.into_response();
    if let Ok(n) = HeaderValue::from_str(&ca.nonce()) {
        r.headers_mut().insert("replay-nonce", n);
    }
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

macro_rules! try_p {
    ($ca:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(p) => return respond_problem(&$ca, p),
        }
    };
}

async fn new_account(State(ca): S, headers: HeaderMap, body: Bytes) -> Response {
    let v = try_p!(ca, verify(&ca, &headers, "/new-account", &body));
    let jwk = v.jwk.unwrap_or(Value::Null);
    let payload = v.payload.unwrap_or(Value::Null);
    let (key, thumbprint) = try_p!(ca, jwk_key(&jwk));
    let existing = lock(&ca.inner).by_thumbprint.get(&thumbprint).cloned();
    if let Some(id) = existing {
        let url = format!("{}/acct/{id}", ca.base);
        return respond(&ca, StatusCode::OK, json!({"status": "valid"}), Some(url));
    }
    if payload.get("onlyReturnExisting").and_then(Value::as_bool) == Some(true) {
        return respond_problem(&ca, problem(400, "accountDoesNotExist", "no such account"));
    }
    if payload.get("termsOfServiceAgreed").and_then(Value::as_bool) != Some(true) {
        return respond_problem(&ca, malformed("termsOfServiceAgreed must be true"));
    }
    let id = ca.id();
    {
        let mut inner = lock(&ca.inner);
        inner.by_thumbprint.insert(thumbprint.clone(), id.clone());
        inner.accounts.insert(
            id.clone(),
            Account {
                key,
                thumbprint,
                jwk,
            },
        );
    }
    let url = format!("{}/acct/{id}", ca.base);
    let body = json!({"status": "valid", "contact": payload.get("contact").cloned().unwrap_or(json!([])), "orders": format!("{url}/orders")});
    respond(&ca, StatusCode::CREATED, body, Some(url))
}

async fn account(
    State(ca): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = try_p!(ca, verify(&ca, &headers, &format!("/acct/{id}"), &body));
    if v.account.as_deref() != Some(id.as_str()) {
        return respond_problem(&ca, problem(403, "unauthorized", "not your account"));
    }
    let has = lock(&ca.inner).accounts.get(&id).map(|a| a.jwk.clone());
    respond(
        &ca,
        StatusCode::OK,
        json!({"status": "valid", "key": has}),
        None,
    )
}

/// A DNS identifier value: lower-case LDH labels.
fn dns_value(v: &str) -> Result<String, Problem> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(problem(
            400,
            "rejectedIdentifier",
            format!("{v:?} is not a DNS name this CA issues for"),
        ))
    }
}

fn identifier(v: &Value) -> Result<String, Problem> {
    if v.get("type").and_then(Value::as_str) != Some("dns") {
        return Err(problem(
            400,
            "unsupportedIdentifier",
            "only dns identifiers",
        ));
    }
    dns_value(v.get("value").and_then(Value::as_str).unwrap_or(""))
}

fn new_authz_record(ca: &Ca, account: &str, value: String, subdomains: bool) -> String {
    let id = ca.id();
    let chall = ca.id();
    let mut token = [0u8; 32];
    use rand::RngCore;
    rand::rng().fill_bytes(&mut token);
    let mut inner = lock(&ca.inner);
    inner.challenges.insert(chall.clone(), id.clone());
    inner.authzs.insert(
        id.clone(),
        Authz {
            account: account.to_string(),
            value,
            subdomains,
            status: Status::Pending,
            expires: now() + 7 * 24 * 3600,
            challenge_id: chall,
            challenge_status: Status::Pending,
            token: B64.encode(token),
            error: None,
        },
    );
    id
}

async fn new_authz(State(ca): S, headers: HeaderMap, body: Bytes) -> Response {
    if !ca.opts.new_authz {
        return respond_problem(&ca, malformed("this CA has no newAuthz"));
    }
    let v = try_p!(ca, verify(&ca, &headers, "/new-authz", &body));
    if let Fault::HostileProblem { status, type_json } = ca.fault() {
        return respond_hostile_problem(&ca, status, type_json);
    }
    let account = v.account.unwrap_or_default();
    let Some(payload) = v.payload else {
        return respond_problem(&ca, malformed("newAuthz needs a payload"));
    };
    let Some(ident) = payload.get("identifier") else {
        return respond_problem(&ca, malformed("newAuthz payload has no identifier"));
    };
    let value = try_p!(ca, identifier(ident));
    let sub = ident
        .get("subdomainAuthAllowed")
        .map(|b| b.as_bool().ok_or(()))
        .transpose();
    let sub = match sub {
        Ok(s) => s.unwrap_or(false),
        Err(()) => {
            return respond_problem(&ca, malformed("subdomainAuthAllowed must be a boolean"))
        }
    };
    if sub && !ca.opts.subdomain_auth {
        return respond_problem(
            &ca,
            problem(
                400,
                "rejectedIdentifier",
                "this CA does not issue subdomain authorizations",
            ),
        );
    }
    let id = new_authz_record(&ca, &account, value, sub);
    ca.count(|s| s.new_authz += 1);
    let inner = lock(&ca.inner);
    let Some(a) = inner.authzs.get(&id) else {
        return respond_problem(&ca, problem(500, "serverInternal", "lost"));
    };
    let body = ca.authz_json(&id, a);
    drop(inner);
    respond(
        &ca,
        StatusCode::CREATED,
        body,
        Some(format!("{}/authz/{id}", ca.base)),
    )
}

/// Whether `name` is strictly below `ancestor` on a label boundary.
fn is_below(name: &str, ancestor: &str) -> bool {
    name.len() > ancestor.len() + 1
        && name.ends_with(ancestor)
        && name.as_bytes()[name.len() - ancestor.len() - 1] == b'.'
}

async fn new_order(State(ca): S, headers: HeaderMap, body: Bytes) -> Response {
    ca.count(|s| s.new_order_requests += 1);
    let v = try_p!(ca, verify(&ca, &headers, "/new-order", &body));
    let fault = ca.fault();
    if let Fault::RateLimited { retry_after_s } = fault {
        let mut r = respond_problem(
            &ca,
            problem(
                429,
                "rateLimited",
                "too many new orders for this account (injected fault)",
            ),
        );
        if let Some(n) = retry_after_s {
            r.headers_mut().insert("retry-after", HeaderValue::from(n));
        }
        return r;
    }
    if let Fault::NewOrderProblem(kind, status) = fault {
        return respond_problem(&ca, problem(status, kind, "injected fault"));
    }
    if let Fault::HostileProblem { status, type_json } = fault {
        return respond_hostile_problem(&ca, status, type_json);
    }
    let account = v.account.unwrap_or_default();
    let Some(payload) = v.payload else {
        return respond_problem(&ca, malformed("newOrder needs a payload"));
    };
    let Some(ids) = payload.get("identifiers").and_then(Value::as_array) else {
        return respond_problem(&ca, malformed("newOrder payload has no identifiers array"));
    };
    if ids.is_empty() || ids.len() > 10 {
        return respond_problem(&ca, malformed("1 to 10 identifiers"));
    }
    // draft-ietf-acme-profiles: `profile` names one of the directory's `meta.profiles`.
    let offered = fault != Fault::ProfilesWithdrawn;
    let profile = match payload.get("profile") {
        None => None,
        Some(Value::String(p)) if offered && ca.opts.profiles.iter().any(|(n, _)| n == p) => {
            Some(p.clone())
        }
        Some(Value::String(p)) => {
            return respond_problem(
                &ca,
                problem(
                    400,
                    "invalidProfile",
                    format!("this CA does not offer the profile {p:?}"),
                ),
            )
        }
        Some(_) => return respond_problem(&ca, malformed("profile must be a string")),
    };
    let mut names = Vec::new();
    let mut authzs = Vec::new();
    let mut via_ancestor = 0;
    for ident in ids {
        let value = try_p!(ca, identifier(ident));
        if let Some(anc) = ident.get("ancestorDomain") {
            if !ca.opts.ancestor_domain {
                return respond_problem(
                    &ca,
                    problem(
                        400,
                        "rejectedIdentifier",
                        "this CA does not accept ancestorDomain",
                    ),
                );
            }
            let anc = try_p!(ca, dns_value(anc.as_str().unwrap_or("")));
            if !is_below(&value, &anc) {
                return respond_problem(
                    &ca,
                    malformed(format!(
                        "ancestorDomain {anc} is not an ancestor of {value}"
                    )),
                );
            }
            // RFC 9444 §4.3: the account's valid authorisation of the ancestor with
            // subdomainAuthAllowed satisfies this identifier.
            let found = {
                let inner = lock(&ca.inner);
                inner
                    .authzs
                    .iter()
                    .find(|(_, a)| {
                        a.account == account
                            && a.value == anc
                            && a.subdomains
                            && Ca::authz_status(a) == Status::Valid
                    })
                    .map(|(id, _)| id.clone())
            };
            match found {
                Some(id) => {
                    via_ancestor += 1;
                    authzs.push(id);
                }
                None => authzs.push(new_authz_record(&ca, &account, anc, true)),
            }
        } else {
            authzs.push(new_authz_record(&ca, &account, value.clone(), false));
        }
        names.push(value);
    }
    let id = ca.id();
    let o = Order {
        account,
        identifiers: ids
            .iter()
            .map(|i| json!({"type": "dns", "value": i.get("value")}))
            .collect(),
        names,
        authzs,
        status: Status::Pending,
        expires: now() + 3600,
        cert: None,
        profile: profile.clone(),
    };
    let mut inner = lock(&ca.inner);
    inner.orders.insert(id.clone(), o);
    inner.order_profiles.push(profile);
    Ca::refresh_order(&mut inner, &id);
    let body = inner
        .orders
        .get(&id)
        .map(|o| order_body(&ca, &fault, &id, o))
        .unwrap_or(Value::Null);
    drop(inner);
    ca.count(|s| {
        s.orders += 1;
        if via_ancestor == ids.len() {
            s.orders_via_ancestor += 1;
        }
    });
    respond(
        &ca,
        StatusCode::CREATED,
        body,
        Some(format!("{}/order/{id}", ca.base)),
    )
}

/// The order object; `fault` is read before `inner` is locked (the mutex is not reentrant).
fn order_body(ca: &Ca, fault: &Fault, id: &str, o: &Order) -> Value {
    let mut v = ca.order_json(o);
    if *fault == Fault::OrderWithoutFinalize {
        if let Some(m) = v.as_object_mut() {
            m.remove("finalize");
        }
    } else {
        v["finalize"] = json!(format!("{}/order/{id}/finalize", ca.base));
    }
    v
}

async fn authz(State(ca): S, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let v = try_p!(ca, verify(&ca, &headers, &format!("/authz/{id}"), &body));
    let inner = lock(&ca.inner);
    let Some(a) = inner.authzs.get(&id) else {
        drop(inner);
        return respond_problem(&ca, problem(404, "malformed", "no such authorization"));
    };
    if Some(&a.account) != v.account.as_ref() {
        drop(inner);
        return respond_problem(&ca, problem(403, "unauthorized", "not your authorization"));
    }
    let mut body = ca.authz_json(&id, a);
    drop(inner);
    if v.payload
        .as_ref()
        .and_then(|p| p.get("status"))
        .and_then(Value::as_str)
        == Some("deactivated")
    {
        if let Some(a) = lock(&ca.inner).authzs.get_mut(&id) {
            a.status = Status::Invalid;
        }
        body["status"] = json!("deactivated");
    }
    respond(&ca, StatusCode::OK, body, None)
}

async fn challenge(
    State(ca): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = try_p!(ca, verify(&ca, &headers, &format!("/chall/{id}"), &body));
    let mut inner = lock(&ca.inner);
    let Some(authz_id) = inner.challenges.get(&id).cloned() else {
        drop(inner);
        return respond_problem(&ca, problem(404, "malformed", "no such challenge"));
    };
    let thumbprint = v
        .account
        .as_ref()
        .and_then(|acc| inner.accounts.get(acc))
        .map(|a| a.thumbprint.clone())
        .unwrap_or_default();
    let Some(a) = inner.authzs.get_mut(&authz_id) else {
        drop(inner);
        return respond_problem(&ca, problem(404, "malformed", "no such authorization"));
    };
    if Some(&a.account) != v.account.as_ref() {
        drop(inner);
        return respond_problem(&ca, problem(403, "unauthorized", "not your challenge"));
    }
    // A POST with payload `{}` asks for validation (RFC 8555 §7.5.1); POST-as-GET only reads.
    let start = v.payload.is_some() && a.challenge_status == Status::Pending;
    if v.payload.as_ref().is_some_and(|p| !p.is_object()) {
        drop(inner);
        return respond_problem(&ca, malformed("challenge response payload must be {}"));
    }
    if start {
        a.challenge_status = Status::Processing;
    }
    let record = format!("_acme-challenge.{}", a.value);
    let key_auth = format!("{}.{thumbprint}", a.token);
    let body = json!({
        "type": "dns-01",
        "url": format!("{}/chall/{id}", ca.base),
        "token": a.token,
        "status": a.challenge_status.as_str(),
    });
    drop(inner);
    let up = format!("<{}/authz/{authz_id}>;rel=\"up\"", ca.base);
    if start && ca.fault() != Fault::NeverValidate {
        let ca2 = Arc::clone(&ca);
        tokio::spawn(async move {
            let expected = B64.encode(Sha256::digest(key_auth.as_bytes()));
            let found = query_txt(ca2.opts.dns_server, &record).await;
            ca2.count(|s| s.dns_validations += 1);
            let mut inner = lock(&ca2.inner);
            let lifetime = ca2.opts.authz_lifetime.as_secs();
            if let Some(a) = inner.authzs.get_mut(&authz_id) {
                match found {
                    Ok(values) if values.contains(&expected) => {
                        a.challenge_status = Status::Valid;
                        a.status = Status::Valid;
                        a.expires = now() + lifetime;
                    }
                    Ok(values) => {
                        a.challenge_status = Status::Invalid;
                        a.status = Status::Invalid;
                        a.error = Some(json!({
                            "type": "urn:ietf:params:acme:error:incorrectResponse",
                            "detail": format!("{record}: {} TXT record(s), none matches", values.len()),
                        }));
                    }
                    Err(e) => {
                        a.challenge_status = Status::Invalid;
                        a.status = Status::Invalid;
                        a.error = Some(json!({
                            "type": "urn:ietf:params:acme:error:dns",
                            "detail": format!("{record}: {e}"),
                        }));
                    }
                }
            }
        });
    }
    let mut r = respond(&ca, StatusCode::OK, body, None);
    if let Ok(l) = HeaderValue::from_str(&up) {
        r.headers_mut().insert("link", l);
    }
    r
}

async fn order(State(ca): S, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let v = try_p!(ca, verify(&ca, &headers, &format!("/order/{id}"), &body));
    let fault = ca.fault();
    let mut inner = lock(&ca.inner);
    Ca::refresh_order(&mut inner, &id);
    let Some(o) = inner.orders.get(&id) else {
        drop(inner);
        return respond_problem(&ca, problem(404, "malformed", "no such order"));
    };
    if Some(&o.account) != v.account.as_ref() {
        drop(inner);
        return respond_problem(&ca, problem(403, "unauthorized", "not your order"));
    }
    let body = order_body(&ca, &fault, &id, o);
    drop(inner);
    respond(&ca, StatusCode::OK, body, None)
}

async fn finalize(
    State(ca): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = try_p!(
        ca,
        verify(&ca, &headers, &format!("/order/{id}/finalize"), &body)
    );
    let (names, status, owner) = {
        let mut inner = lock(&ca.inner);
        Ca::refresh_order(&mut inner, &id);
        match inner.orders.get(&id) {
            Some(o) => (o.names.clone(), o.status, o.account.clone()),
            None => {
                drop(inner);
                return respond_problem(&ca, problem(404, "malformed", "no such order"));
            }
        }
    };
    if Some(&owner) != v.account.as_ref() {
        return respond_problem(&ca, problem(403, "unauthorized", "not your order"));
    }
    if status != Status::Ready {
        return respond_problem(
            &ca,
            problem(
                403,
                "orderNotReady",
                format!("order is {}", status.as_str()),
            ),
        );
    }
    let csr_b64 = v
        .payload
        .as_ref()
        .and_then(|p| p.get("csr"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let chain = try_p!(ca, issue(&ca, csr_b64, &names));
    let fault = ca.fault();
    let cert_id = ca.id();
    let mut inner = lock(&ca.inner);
    inner.certs.insert(cert_id.clone(), (owner, chain));
    let body = match inner.orders.get_mut(&id) {
        Some(o) => {
            o.status = Status::Valid;
            o.cert = Some(cert_id);
            order_body(&ca, &fault, &id, o)
        }
        None => Value::Null,
    };
    drop(inner);
    ca.count(|s| s.certificates += 1);
    respond(
        &ca,
        StatusCode::OK,
        body,
        Some(format!("{}/order/{id}", ca.base)),
    )
}

fn issue(ca: &Ca, csr_b64: &str, names: &[String]) -> Result<String, Problem> {
    let der = B64
        .decode(csr_b64)
        .map_err(|_| problem(400, "badCSR", "csr is not base64url DER"))?;
    let csr = rcgen::CertificateSigningRequestParams::from_der(&der.into())
        .map_err(|e| problem(400, "badCSR", format!("CSR rejected: {e}")))?;
    let mut asked: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|s| match s {
            rcgen::SanType::DnsName(n) => Some(n.as_str().to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if asked.len() != csr.params.subject_alt_names.len() {
        return Err(problem(400, "badCSR", "only DNS names may be requested"));
    }
    asked.sort();
    asked.dedup();
    let mut want = names.to_vec();
    want.sort();
    want.dedup();
    if asked != want {
        return Err(problem(
            400,
            "badCSR",
            format!("CSR names {asked:?} differ from the order's {want:?}"),
        ));
    }
    let mut params = rcgen::CertificateParams::new(want.clone())
        .map_err(|e| problem(400, "badCSR", format!("bad name: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, want[0].clone());
    let t = time::OffsetDateTime::now_utc();
    params.not_before = t - time::Duration::minutes(1);
    params.not_after = t + time::Duration::seconds(ca.opts.cert_validity.as_secs() as i64);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let mut serial = [0u8; 16];
    use rand::RngCore;
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let (via, wrong) = {
        let inner = lock(&ca.inner);
        (inner.intermediate.clone(), inner.wrong_intermediate.clone())
    };
    let csr = rcgen::CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    };
    let signed = match &via {
        Some((issuer, _)) => csr.signed_by(issuer),
        None => csr.signed_by(&ca.issuer),
    };
    let leaf =
        signed.map_err(|e| problem(500, "serverInternal", format!("signing failed: {e}")))?;
    let middle = match (&via, wrong) {
        (_, Some(wrong)) => wrong,
        (Some((_, pem)), None) => pem.clone(),
        (None, None) => String::new(),
    };
    Ok(format!("{}{middle}{}", leaf.pem(), ca.root_pem))
}

async fn cert(State(ca): S, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let v = try_p!(ca, verify(&ca, &headers, &format!("/cert/{id}"), &body));
    let found = lock(&ca.inner).certs.get(&id).cloned();
    let Some((owner, chain)) = found else {
        return respond_problem(&ca, problem(404, "malformed", "no such certificate"));
    };
    if Some(&owner) != v.account.as_ref() {
        return respond_problem(&ca, problem(403, "unauthorized", "not your certificate"));
    }
    let mut r = (StatusCode::OK, chain).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/pem-certificate-chain"),
    );
    if let Ok(n) = HeaderValue::from_str(&ca.nonce()) {
        r.headers_mut().insert("replay-nonce", n);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// DNS-01 look-up: one TXT query over UDP to the DNS server.

async fn query_txt(server: SocketAddr, name: &str) -> anyhow::Result<Vec<String>> {
    use hickory_net::proto::op::{Message, Query};
    use hickory_net::proto::rr::{Name, RData, RecordType};
    let mut msg = Message::query();
    let qname = Name::from_ascii(format!("{name}."))?;
    msg.add_query(Query::query(qname, RecordType::TXT));
    let id = msg.metadata.id;
    let bytes = msg.to_vec()?;
    let sock = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    sock.connect(server).await?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        sock.send(&bytes).await?;
        let Ok(n) = tokio::time::timeout(Duration::from_millis(700), sock.recv(&mut buf)).await
        else {
            continue;
        };
        let n = n?;
        let answer = Message::from_vec(&buf[..n])?;
        if answer.metadata.id != id {
            continue;
        }
        let mut out = Vec::new();
        for rr in &answer.answers {
            if let RData::TXT(txt) = &rr.data {
                let joined: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                out.push(String::from_utf8_lossy(&joined).into_owned());
            }
        }
        return Ok(out);
    }
    anyhow::bail!("no answer from {server}")
}

// ---------------------------------------------------------------------------------------------
// TLS and keys

/// The issuing root: (issuer, root PEM).
fn issuer() -> anyhow::Result<(rcgen::Issuer<'static, rcgen::KeyPair>, String)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Estuary test ACME CA root");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = p.self_signed(&key)?;
    Ok((rcgen::Issuer::new(p, key), root.pem()))
}

/// A new intermediate CA named `name` under `root`: (issuer, PEM).
fn intermediate(
    root: &rcgen::Issuer<'static, rcgen::KeyPair>,
    name: &str,
) -> anyhow::Result<(rcgen::Issuer<'static, rcgen::KeyPair>, String)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.signed_by(&key, root)?;
    Ok((rcgen::Issuer::new(p, key), cert.pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestor_check_is_on_label_boundaries() {
        assert!(is_below("sn1.iot.example.test", "iot.example.test"));
        assert!(is_below("a.b.iot.example.test", "iot.example.test"));
        assert!(!is_below("iot.example.test", "iot.example.test"));
        assert!(!is_below("xiot.example.test", "iot.example.test"));
    }

    #[test]
    fn dns_values_are_checked() {
        assert!(dns_value("sn1.iot.example.test").is_ok());
        assert!(dns_value("bad_name.test").is_err());
        assert!(dns_value("").is_err());
        assert!(dns_value("-a.test").is_err());
    }
}
