//! The registration authority's engine: a checked CSR becomes a certificate.
//!
//! For each enrolment: verify the CSR and the device's name, look in the cache (SHA-256 of the
//! whole CSR), and otherwise make sure exactly one ACME order runs for that CSR across all
//! replicas (a Redis lock with expiry, refreshed while the order runs). The request waits up
//! to `enroll.budget_ms`; past that it answers "pending, retry after N s" while the order
//! goes on. A retry on any replica finds the certificate in the cache, or, if the replica that
//! held the lock died, takes the lock over once it expires and resumes the stored order.
//!
//! Redis is not trusted: a cached chain is served only if [`chain_fits`] the CSR (the leaf holds
//! the CSR's key and the device's name and has not expired); otherwise it is logged, counted in
//! `estuary_cache_rejected_total`, deleted, and the look-up is a miss, so a fresh order is placed.
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::csr;
use estuary_proto::est::{EstLabel, EstOperation};
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
use estuary_proto::policy::{self, KeyPolicy};
use estuary_proto::{cert, pem, pkcs7};
use tokio::sync::watch;
use tracing::{error, info, warn, Instrument};

use crate::config::EnrollConfig;
use crate::metrics::{EnrollResult, IssuanceFailure, Metrics, Protocol};
use crate::ra::acme::client::Acme;
use crate::ra::acme::problem::{whole_seconds, IssueError};
use crate::ra::chains::{CaChains, Learned};
use crate::ra::error::RaError;
use crate::ra::failure::{Failure, FailureKind};
use crate::ra::limits::{Admitted, IssuanceSlots};
use crate::ra::store::{Cached, CsrKey, Store, StoreError};
use crate::support::clock::now_unix;

/// One enrolment request, as the edge filter forwards it.
pub struct EnrollRequest {
    /// The CSR, DER, exactly as the device sent it.
    pub csr_der: Vec<u8>,
    /// The device serial the edge authenticated (from the IDevID or the LDevID).
    pub serial: DeviceSerial,
    /// simpleenroll or simplereenroll.
    pub operation: EstOperation,
    /// The EST label (RFC 7030 §3.2.2) that chooses the CA; `None`: `[acme]`.
    pub label: Option<EstLabel>,
}

/// The ACME CAs the engine orders from: `[acme]` for the unlabelled path and one per
/// `[[acme.labels]]` entry, by label.
pub struct Cas {
    default: Arc<Ca>,
    labels: BTreeMap<EstLabel, Arc<Ca>>,
}

/// One ACME CA: the client that orders from it, and the chain learned from what it issued
/// (its `/cacerts`, draft-ietf-acme-integrations-17).
pub struct Ca {
    /// The ACME client.
    pub acme: Arc<Acme>,
    /// The learned chain, fed by every fresh issuance from this CA.
    pub chains: Arc<CaChains>,
}

impl Cas {
    /// The unlabelled CA and the labelled ones.
    pub fn new(default: Ca, labels: BTreeMap<EstLabel, Ca>) -> Self {
        Self {
            default: Arc::new(default),
            labels: labels
                .into_iter()
                .map(|(l, ca)| (l, Arc::new(ca)))
                .collect(),
        }
    }

    /// The CA of `label`; `None` when the label is not configured.
    pub fn get(&self, label: Option<&EstLabel>) -> Option<&Arc<Ca>> {
        match label {
            None => Some(&self.default),
            Some(l) => self.labels.get(l),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Ca>> {
        std::iter::once(&self.default).chain(self.labels.values())
    }
}

/// A successful answer.
#[derive(Debug)]
pub enum Outcome {
    /// The certificate, as PKCS#7 certs-only DER.
    Issued {
        /// PKCS#7 certs-only of the whole chain the CA returned, end-entity first (TEAP's
        /// PKCS#7 TLV, RFC 9930).
        pkcs7: Vec<u8>,
        /// PKCS#7 certs-only of the end-entity certificate alone: EST's `/simpleenroll` and
        /// `/simplereenroll` answer (draft-ietf-acme-integrations-17 "Certificate Chains and
        /// Trust Anchors"; the rest of the chain is in `/cacerts`).
        ee_pkcs7: Vec<u8>,
        /// Whether it came from the cache.
        cached: bool,
    },
    /// Still in progress: retry after this many seconds (RFC 7030 §4.2.3, 202).
    Pending {
        /// Seconds.
        retry_after: u64,
    },
}

type Waiter = watch::Receiver<Option<Result<String, Failure>>>;
type Inflight = Arc<Mutex<HashMap<CsrKey, Waiter>>>;

/// The engine. Cheap to share (`Arc`).
pub struct Engine {
    parent: ParentDomain,
    keys: KeyPolicy,
    cfg: EnrollConfig,
    store: Store,
    cas: Cas,
    metrics: Arc<Metrics>,
    inflight: Inflight,
    /// The fleet-wide cap, per replica ([`crate::ra::limits`]).
    slots: IssuanceSlots,
}

impl Engine {
    /// Builds the engine.
    pub fn new(
        parent: ParentDomain,
        keys: KeyPolicy,
        cfg: EnrollConfig,
        store: Store,
        cas: Cas,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        for ca in cas.all() {
            ca.acme.attach_metrics(Arc::clone(&metrics));
        }
        let slots = IssuanceSlots::new(cfg.max_inflight_orders, cfg.max_queued_orders);
        Arc::new(Self {
            parent,
            keys,
            cfg,
            store,
            cas,
            metrics,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            slots,
        })
    }

    /// The learned chain of the CA that `label` enrols from (`/cacerts`); `None` when the label
    /// is not configured.
    pub fn chains(&self, label: Option<&EstLabel>) -> Option<&Arc<CaChains>> {
        self.cas.get(label).map(|ca| &ca.chains)
    }

    /// Every CA's learned chain (the unlabelled CA's first).
    pub fn all_chains(&self) -> impl Iterator<Item = &Arc<CaChains>> {
        self.cas.all().map(|ca| &ca.chains)
    }

    /// The enrol configuration.
    pub fn config(&self) -> &EnrollConfig {
        &self.cfg
    }

    /// Enrols one CSR; counts the result.
    pub async fn enroll(self: &Arc<Self>, req: EnrollRequest) -> Result<Outcome, RaError> {
        self.enroll_as(Protocol::est, req).await
    }

    /// Enrols one CSR for `protocol`; counts the result under that protocol label.
    pub async fn enroll_as(
        self: &Arc<Self>,
        protocol: Protocol,
        req: EnrollRequest,
    ) -> Result<Outcome, RaError> {
        let operation = req.operation;
        let result = self.enroll_inner(req).await;
        let label = match &result {
            Ok(Outcome::Issued { cached: true, .. }) => EnrollResult::cached,
            Ok(Outcome::Issued { cached: false, .. }) => EnrollResult::issued,
            Ok(Outcome::Pending { .. }) => EnrollResult::pending,
            Err(e) if e.is_refusal() => EnrollResult::rejected,
            Err(_) => EnrollResult::failed,
        };
        self.metrics.enrollment(protocol, label);
        self.metrics
            .enrollment_operation(protocol, operation, label);
        result
    }

    /// The longest an issuance runs (the longest `acme.order_timeout_s` of every CA).
    pub fn order_timeout(&self) -> Duration {
        let longest = self
            .cas
            .all()
            .map(|ca| ca.acme.cfg.order_timeout_s)
            .max()
            .unwrap_or(0);
        Duration::from_secs(longest)
    }

    async fn enroll_inner(self: &Arc<Self>, req: EnrollRequest) -> Result<Outcome, RaError> {
        // Hostile until checked: the signature first, then the fields, then the policy.
        let csr = csr::parse_and_verify(&req.csr_der)?;
        let name = DeviceName::new(&req.serial, &self.parent)?;
        policy::check_enroll(&csr, &name, &self.keys)?;
        let ca = match self.cas.get(req.label.as_ref()) {
            Some(ca) => Arc::clone(ca),
            None => {
                return Err(RaError::UnknownLabel(
                    req.label.map(|l| l.to_string()).unwrap_or_default(),
                ))
            }
        };
        let key = CsrKey::for_ca(req.label.as_ref(), &req.csr_der);

        if let Some(chain) = self.cached(&key, csr.spki_der(), &name).await? {
            self.metrics.cache_hits.inc();
            info!(device = %name.as_str(), op = req.operation.as_str(), "certificate from cache");
            let (pkcs7, ee_pkcs7) = chain_to_pkcs7(&chain)?;
            return Ok(Outcome::Issued {
                pkcs7,
                ee_pkcs7,
                cached: true,
            });
        }
        self.metrics.cache_misses.inc();
        if let Some(f) = self.store.take_failure(&key).await? {
            return Err(RaError::Remembered(f));
        }

        let waiter = self
            .waiter_for(&ca, &key, &req.csr_der, csr.spki_der(), &name)
            .await?;
        let deadline = Instant::now() + Duration::from_millis(self.cfg.budget_ms);
        let done = match waiter {
            Some(mut rx) => {
                let r = tokio::time::timeout_at(deadline.into(), rx.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|v| v.clone());
                r
            }
            None => {
                self.poll_store(&key, csr.spki_der(), &name, deadline)
                    .await?
            }
        };
        match done {
            Some(Ok(chain)) => {
                let (pkcs7, ee_pkcs7) = chain_to_pkcs7(&chain)?;
                Ok(Outcome::Issued {
                    pkcs7,
                    ee_pkcs7,
                    cached: false,
                })
            }
            Some(Err(f)) => {
                if f.kind.is_transient() {
                    // Told now: the record kept for a later retry (see `run_issuance`) is spent.
                    let _ = self.store.take_failure(&key).await;
                    // The CA answered rateLimited (here or elsewhere): the device comes back
                    // when the back-off ends.
                    if let Ok(Some(remaining)) = ca.acme.ca_backoff().await {
                        return Err(IssueError::CaBackoff { remaining }.into());
                    }
                }
                Err(RaError::Remembered(f))
            }
            None => {
                info!(device = %name.as_str(), "issuance still in progress; answering 202");
                Ok(Outcome::Pending {
                    retry_after: self.cfg.retry_after_s,
                })
            }
        }
    }

    /// A local waiter if this process runs (or just started) the issuance; `None` if another
    /// replica holds the lock.
    async fn waiter_for(
        self: &Arc<Self>,
        ca: &Arc<Ca>,
        key: &CsrKey,
        csr_der: &[u8],
        spki_der: &[u8],
        name: &DeviceName,
    ) -> Result<Option<Waiter>, RaError> {
        let local = self.lock_inflight().get(key).cloned();
        if let Some(rx) = local {
            return Ok(Some(rx));
        }
        let token = crate::support::token::random_token();
        let ttl = Duration::from_secs(self.cfg.lock_ttl_s);
        if !self.store.try_lock(key, &token, ttl).await? {
            return Ok(None);
        }
        // Someone may have finished between our cache look-up and the lock.
        let cached = match self.cached(key, spki_der, name).await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.store.release_lock(key, &token).await;
                return Err(e.into());
            }
        };
        if let Some(chain) = cached {
            let _ = self.store.release_lock(key, &token).await;
            let (_tx, rx) = watch::channel(Some(Ok(chain)));
            return Ok(Some(rx));
        }
        let admitted = match self.admit(&ca.acme).await {
            Ok(a) => a,
            Err(e) => {
                let _ = self.store.release_lock(key, &token).await;
                return Err(e);
            }
        };
        if let Err(e) = self.take_order_slot(key, name).await {
            let _ = self.store.release_lock(key, &token).await;
            return Err(e);
        }
        let (tx, rx) = watch::channel(None);
        let raced = {
            let mut map = self.lock_inflight();
            match map.get(key) {
                Some(existing) => Some(existing.clone()),
                None => {
                    map.insert(key.clone(), rx.clone());
                    None
                }
            }
        };
        if let Some(existing) = raced {
            // Another request of ours won the race in between; give our lock back.
            let _ = self.store.release_lock(key, &token).await;
            return Ok(Some(existing));
        }
        let ttl = Duration::from_secs(self.cfg.lock_ttl_s);
        let refresher = spawn_refresher(self.store.clone(), key.clone(), token.clone(), ttl);
        let release = {
            let store = self.store.clone();
            let key = key.clone();
            async move {
                if let Err(e) = store.release_lock(&key, &token).await {
                    warn!(error = %e, "could not release the issuance lock (it expires by itself)");
                }
            }
        };
        let guard = IssuanceGuard::new(
            key.clone(),
            Arc::clone(&self.inflight),
            tx,
            refresher.abort_handle(),
            Box::pin(release),
        );
        let engine = Arc::clone(self);
        let ca = Arc::clone(ca);
        let key = key.clone();
        let csr_der = csr_der.to_vec();
        let name = name.clone();
        // The issuance keeps the span of the request that started it (its request id).
        tokio::spawn(
            async move {
                let result = engine
                    .run_admitted(&ca, admitted, &key, &csr_der, &name)
                    .await;
                guard.finish(result).await;
            }
            .instrument(tracing::Span::current()),
        );
        Ok(Some(rx))
    }

    /// The limits a new issuance passes before it starts (issue 13): no back-off after
    /// `rateLimited` holds at the CA (shared by every replica), and this replica has a place
    /// among its running and waiting issuances.
    async fn admit(&self, acme: &Acme) -> Result<Admitted, RaError> {
        if let Some(remaining) = acme.ca_backoff().await? {
            self.metrics.ca_backoff_refused.inc();
            info!(
                remaining_s = whole_seconds(remaining),
                "the ACME CA rate-limited the account; no new issuance until the back-off ends"
            );
            return Err(IssueError::CaBackoff { remaining }.into());
        }
        self.slots.try_admit().ok_or_else(|| {
            self.metrics.fleet_limited.inc();
            warn!(
                running = self.slots.max_inflight(),
                waiting = self.slots.max_queued(),
                "enroll.max_inflight_orders run and enroll.max_queued_orders wait; refusing a new issuance"
            );
            RaError::Busy
        })
    }

    /// Waits for a turn among `enroll.max_inflight_orders` (at most `acme.order_timeout_s`),
    /// then runs the issuance.
    async fn run_admitted(
        &self,
        ca: &Ca,
        admitted: Admitted,
        key: &CsrKey,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<String, Failure> {
        let wait = Duration::from_secs(ca.acme.cfg.order_timeout_s);
        let Some(_running) = admitted.run_within(wait).await else {
            self.metrics.fleet_limited.inc();
            warn!(device = %name.as_str(), wait_s = wait.as_secs(), "no turn to issue within acme.order_timeout_s; giving up");
            let f = Failure {
                kind: FailureKind::Unavailable,
                reason: RaError::Busy.to_string(),
            };
            // The device has had its 202 by now: its retry hears this, once.
            let keep = Duration::from_secs(self.cfg.failure_ttl_s);
            if let Err(e) = self.store.set_failure(key, &f, keep).await {
                warn!(error = %e, "could not record the failure");
            }
            return Err(f);
        };
        self.run_issuance(ca, key, csr_der, name).await
    }

    /// Seed §8.1: a new CSR counts against the device's `enroll.max_orders_per_device`; an
    /// order being resumed (its URL is in Redis), or a fresh order for a CSR already counted in
    /// the window (its earlier order failed or was abandoned), costs nothing again.
    async fn take_order_slot(&self, key: &CsrKey, name: &DeviceName) -> Result<(), RaError> {
        let limit = self.cfg.max_orders_per_device;
        if limit == 0 || self.store.order_url(key).await?.is_some() {
            return Ok(());
        }
        let window = Duration::from_secs(self.cfg.device_window_s);
        match self
            .store
            .take_window_slot("orders", name.as_str(), Some(key.as_str()), limit, window)
            .await?
        {
            None => Ok(()),
            Some(retry_after_s) => {
                self.metrics.device_limited.inc();
                warn!(device = %name.as_str(), limit, "per-device order limit reached; refusing a new order");
                Err(RaError::DeviceLimit {
                    limit,
                    window_s: self.cfg.device_window_s,
                    retry_after_s,
                })
            }
        }
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<CsrKey, Waiter>> {
        lock_map(&self.inflight)
    }

    /// Caches a newly issued chain, or answers with the one cached for the CSR already (another
    /// replica's issuance won the race, e.g. after a Redis failover lost the lock): a device
    /// gets one certificate per CSR. A cached chain that does not fit the CSR is replaced. When
    /// Redis cannot be shown to keep it (the write failed, or the master was lost before its
    /// replicas confirmed it) the device hears 503 rather than get a certificate its retry
    /// might not find: that retry finds it in the cache, or gets a new one it then keeps.
    async fn keep_first(
        &self,
        key: &CsrKey,
        chain: String,
        csr_der: &[u8],
        name: &DeviceName,
        not_after: i64,
    ) -> Result<String, Failure> {
        match self.store.cache_chain(key, &chain, not_after).await {
            Ok(Cached::Stored { replicated: true } | Cached::Expired) => Ok(chain),
            Ok(Cached::Stored { replicated: false }) => {
                self.metrics.redis_unreplicated.inc();
                warn!(device = %name.as_str(), "issued; fewer Redis replicas than redis.replica_acks confirmed the cached certificate in time (replica down or lagging?)");
                Ok(chain)
            }
            Ok(Cached::First(first)) if first == chain => Ok(chain),
            Ok(Cached::First(first)) => match check_issued(&first, csr_der, name) {
                Ok(_) => {
                    info!(device = %name.as_str(), "another replica cached a certificate for this CSR first; answering with that one");
                    Ok(first)
                }
                Err(reason) => {
                    warn!(device = %name.as_str(), %reason, "the cached chain does not fit the CSR; replacing it");
                    self.store
                        .replace_cached_chain(key, &chain, not_after)
                        .await
                        .map_err(|e| self.not_kept(name, &e))?;
                    Ok(chain)
                }
            },
            Err(e) => Err(self.not_kept(name, &e)),
        }
    }

    /// The failure of an issuance whose certificate Redis could not be shown to keep, counted
    /// as a Redis failure: transient, so it is not remembered and the device's retry starts
    /// again.
    fn not_kept(&self, name: &DeviceName, e: &StoreError) -> Failure {
        warn!(device = %name.as_str(), error = %e, "issued, but Redis did not keep the certificate; the device is told to retry");
        self.metrics.issuance_failure(IssuanceFailure::redis);
        Failure {
            kind: FailureKind::Unavailable,
            reason: format!("the certificate was issued but could not be stored ({e}); retry"),
        }
    }

    /// Runs one issuance (the caller holds the lock) and stores the outcome.    /// Runs one issuance (the caller holds the lock) and stores the outcome.
    async fn run_issuance(
        &self,
        ca: &Ca,
        key: &CsrKey,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<String, Failure> {
        let started = Instant::now();
        let issued = ca.acme.issue(key, csr_der, name).await;
        match issued {
            Ok(chain) => match check_issued(&chain, csr_der, name) {
                Ok(not_after) => {
                    self.metrics
                        .issuance_seconds
                        .observe(started.elapsed().as_secs_f64());
                    let chain = self
                        .keep_first(key, chain, csr_der, name, not_after)
                        .await?;
                    // The rest of the chain is /cacerts' (draft-17); a bad one is logged there.
                    if let Learned::Refused(_) = ca.chains.learn(&chain).await {
                        self.metrics.ca_chain_refused.inc();
                    }
                    Ok(chain)
                }
                Err(reason) => {
                    error!(device = %name.as_str(), %reason, "the CA's chain does not match the CSR");
                    Err(Failure {
                        kind: FailureKind::Issuance,
                        reason,
                    })
                }
            },
            Err(e) => {
                let kind = e.failure_kind();
                error!(device = %name.as_str(), ?kind, error = %e, "issuance failed");
                self.count_failure(&e);
                let f = Failure {
                    kind,
                    reason: e.to_string(),
                };
                // A quick transient failure reaches the waiting request directly and is not
                // remembered: the retry starts again. One that came after the enrolment budget
                // (an abandoned issuance above all) is remembered, once: the device has had its
                // 202, and its retry must hear 503 + Retry-After rather than start a new wait.
                let budget = Duration::from_millis(self.cfg.budget_ms);
                if !kind.is_transient() || started.elapsed() >= budget {
                    let keep = Duration::from_secs(self.cfg.failure_ttl_s);
                    if let Err(e) = self.store.set_failure(key, &f, keep).await {
                        warn!(error = %e, "could not record the failure");
                    }
                }
                Err(f)
            }
        }
    }

    /// Counts a failed issuance by cause, and the CA's problem type when it sent one.
    fn count_failure(&self, e: &IssueError) {
        let cause = match e {
            IssueError::CaUnavailable { .. }
            | IssueError::CaNoAnswer(_)
            | IssueError::CaProtocol(_) => IssuanceFailure::ca_unavailable,
            IssueError::CaRateLimited { .. } | IssueError::CaBackoff { .. } => {
                IssuanceFailure::ca_rate_limited
            }
            IssueError::CaRejected { .. } => IssuanceFailure::ca_rejected,
            IssueError::ChallengeFailed { .. } => IssuanceFailure::challenge_failed,
            IssueError::OrderTimeout { .. } | IssueError::Deadline { .. } => {
                IssuanceFailure::deadline
            }
            IssueError::Dns(_) => IssuanceFailure::dns,
            IssueError::Store(_) => IssuanceFailure::redis,
            IssueError::BadChain(_) | IssueError::NoDnsChallenge(_) => IssuanceFailure::bad_answer,
            IssueError::ProfileNotOffered { .. } => IssuanceFailure::config,
        };
        self.metrics.issuance_failure(cause);
        match e {
            IssueError::CaRejected { problem, .. } => {
                self.metrics.acme_problem(problem.short_name())
            }
            IssueError::CaRateLimited { .. } => self.metrics.acme_problem("rateLimited"),
            _ => {}
        }
    }

    /// The cached chain for a CSR, if there is one that [`chain_fits`] it. One that does not
    /// is logged (by the CSR's hash, never its content), counted, deleted, and is a miss.
    async fn cached(
        &self,
        key: &CsrKey,
        spki_der: &[u8],
        name: &DeviceName,
    ) -> Result<Option<String>, StoreError> {
        let Some(chain) = self.store.cached_chain(key).await? else {
            return Ok(None);
        };
        let now = now_unix();
        match chain_fits(&chain, spki_der, name, now) {
            Ok(not_after) => {
                self.metrics
                    .cache_hit_remaining_seconds
                    .observe(not_after.saturating_sub(now).max(0) as f64);
                Ok(Some(chain))
            }
            Err(why) => {
                warn!(
                    csr = key.as_str(),
                    device = %name.as_str(),
                    reason = %why,
                    "the cached chain does not fit the CSR; dropping it and ordering afresh"
                );
                self.metrics.cache_rejected.inc();
                self.store.drop_cached_chain(key, &chain).await?;
                Ok(None)
            }
        }
    }

    /// Another replica holds the lock: watch Redis until the deadline.
    async fn poll_store(
        &self,
        key: &CsrKey,
        spki_der: &[u8],
        name: &DeviceName,
        deadline: Instant,
    ) -> Result<Option<Result<String, Failure>>, RaError> {
        loop {
            if let Some(chain) = self.cached(key, spki_der, name).await? {
                return Ok(Some(Ok(chain)));
            }
            if let Some(f) = self.store.take_failure(key).await? {
                return Ok(Some(Err(f)));
            }
            if Instant::now() + Duration::from_millis(100) > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Why a chain may not be handed to the device that sent a CSR. `Display` names no certificate
/// content, so it may be logged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainMismatch {
    /// Not one or more PEM CERTIFICATE blocks.
    #[error("the chain is not PEM certificates: {0}")]
    NotPem(#[from] pem::PemError),
    /// The first certificate is not a readable X.509 certificate.
    #[error("the leaf certificate is unreadable: {0}")]
    Unreadable(#[from] cert::CertError),
    /// The leaf certifies another public key.
    #[error("the leaf certificate does not hold the CSR's public key")]
    OtherKey,
    /// The leaf's SAN has no dNSName equal to the device's name.
    #[error("the leaf certificate does not name {0}")]
    OtherName(String),
    /// The leaf's notAfter has passed.
    #[error("the leaf certificate has expired")]
    Expired,
}

/// Whether a chain (PEM, leaf first) may be handed to the device that sent a CSR: the leaf holds
/// exactly the CSR's public key (`spki_der`, the SubjectPublicKeyInfo DER of the verified CSR),
/// carries `name` as a SAN dNSName (RFC 5280 §4.2.1.6; case-insensitive, RFC 4343), and its
/// notAfter is after `now` (Unix seconds). Returns that notAfter. The other certificates need
/// only be PEM; no signature is checked (the CA is trusted for what it issues).
///
/// Used for the CA's answer and for every chain read back from the cache: anyone who can write
/// to Redis could otherwise make Estuary hand a device another device's certificate.
pub fn chain_fits(
    chain_pem: &str,
    spki_der: &[u8],
    name: &DeviceName,
    now: i64,
) -> Result<i64, ChainMismatch> {
    let ders = pem::decode_certs(chain_pem)?;
    let leaf_der = ders
        .first()
        .ok_or(ChainMismatch::NotPem(pem::PemError::NoCertificates))?;
    let leaf = cert::CertSummary::from_der(leaf_der)?;
    if leaf.spki_der() != spki_der {
        return Err(ChainMismatch::OtherKey);
    }
    if !leaf
        .dns_names()
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name.as_str()))
    {
        return Err(ChainMismatch::OtherName(name.as_str().to_string()));
    }
    if leaf.not_after_unix() <= now {
        return Err(ChainMismatch::Expired);
    }
    Ok(leaf.not_after_unix())
}

/// Checks the CA's answer for a CSR ([`chain_fits`]); returns the leaf's notAfter.
fn check_issued(chain_pem: &str, csr_der: &[u8], name: &DeviceName) -> Result<i64, String> {
    let csr = csr::parse_and_verify(csr_der).map_err(|e| e.to_string())?;
    chain_fits(chain_pem, csr.spki_der(), name, now_unix()).map_err(|e| e.to_string())
}

/// PKCS#7 certs-only of the whole chain, and of its end-entity certificate alone.
fn chain_to_pkcs7(chain_pem: &str) -> Result<(Vec<u8>, Vec<u8>), RaError> {
    let ders = pem::decode_certs(chain_pem).map_err(|e| {
        RaError::Remembered(Failure {
            kind: FailureKind::Internal,
            reason: format!("stored chain unreadable: {e}"),
        })
    })?;
    let encode = |certs: &[Vec<u8>]| {
        pkcs7::encode_certs_only(certs).map_err(|e| {
            RaError::Remembered(Failure {
                kind: FailureKind::Internal,
                reason: format!("cannot encode PKCS#7: {e}"),
            })
        })
    };
    let ee: Vec<Vec<u8>> = ders.first().cloned().into_iter().collect();
    Ok((encode(&ders)?, encode(&ee)?))
}

fn lock_map(
    m: &Mutex<HashMap<CsrKey, Waiter>>,
) -> std::sync::MutexGuard<'_, HashMap<CsrKey, Waiter>> {
    // A poisoned map only means a panic elsewhere; the data is still a plain map.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps the issuance lock alive (every third of its TTL) until aborted.
fn spawn_refresher(
    store: Store,
    key: CsrKey,
    token: String,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 3).await;
            match store.refresh_lock(&key, &token, ttl).await {
                Ok(true) => {}
                Ok(false) => warn!(csr = key.as_str(), "lost the issuance lock"),
                Err(e) => {
                    warn!(csr = key.as_str(), error = %e, "cannot refresh the issuance lock")
                }
            }
        }
    })
}

/// What an issuance task holds that must not outlive it: the lock refresher, the Redis lock,
/// the `inflight` entry and the waiters' channel.
///
/// [`IssuanceGuard::finish`] ends an issuance in order: refresher stopped, lock released,
/// result sent, entry removed. If the task panics or is cancelled before that, `Drop` does
/// the same (the lock is released on a spawned task) and the waiters hear a 503
/// ([`FailureKind::Abandoned`]), so no replica answers 202 for a task that no longer runs.
struct IssuanceGuard {
    key: CsrKey,
    inflight: Inflight,
    tx: watch::Sender<Option<Result<String, Failure>>>,
    refresher: tokio::task::AbortHandle,
    release: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl IssuanceGuard {
    fn new(
        key: CsrKey,
        inflight: Inflight,
        tx: watch::Sender<Option<Result<String, Failure>>>,
        refresher: tokio::task::AbortHandle,
        release: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Self {
        Self {
            key,
            inflight,
            tx,
            refresher,
            release: Some(release),
        }
    }

    /// Ends the issuance with `result`.
    async fn finish(mut self, result: Result<String, Failure>) {
        self.refresher.abort();
        if let Some(release) = self.release.as_mut() {
            release.await;
            self.release = None;
        }
        self.tx.send_replace(Some(result));
        // Drop removes the entry.
    }
}

impl Drop for IssuanceGuard {
    fn drop(&mut self) {
        self.refresher.abort();
        if self.tx.borrow().is_none() {
            warn!(
                csr = self.key.as_str(),
                "the issuance task ended without a result; releasing its lock"
            );
            self.tx.send_replace(Some(Err(Failure {
                kind: FailureKind::Abandoned,
                reason: "the issuance was abandoned; retry later".into(),
            })));
        }
        {
            let mut map = lock_map(&self.inflight);
            let ours = map
                .get(&self.key)
                .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()));
            if ours {
                map.remove(&self.key);
            }
        }
        if let Some(release) = self.release.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "sn-1.iot.example.test";

    fn name(s: &str) -> DeviceName {
        DeviceName::parse(s).expect("device name")
    }

    /// A key, the SPKI DER of a CSR made with it (as the engine gets it from the verified CSR),
    /// and a self-signed certificate for `names` with that key, valid until `until` (y, m, d).
    fn key_and_cert(names: &[&str], until: (i32, u8, u8)) -> (Vec<u8>, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        let csr = params.serialize_request(&key).expect("csr");
        let spki = csr::parse_and_verify(csr.der())
            .expect("verified CSR")
            .spki_der()
            .to_vec();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let cert = params.self_signed(&key).expect("cert");
        (spki, cert.pem())
    }

    const FUTURE: (i32, u8, u8) = (2099, 1, 1);

    /// An issuance as `waiter_for` starts one, with stand-ins for Redis: the `inflight` map
    /// with its entry, a waiter, a refresher that counts its rounds, and a lock "release"
    /// that reports on a channel.
    struct Started {
        inflight: Inflight,
        key: CsrKey,
        waiter: Waiter,
        refresher: tokio::task::JoinHandle<()>,
        released: tokio::sync::oneshot::Receiver<()>,
        guard: IssuanceGuard,
    }

    fn started() -> Started {
        let inflight: Inflight = Arc::new(Mutex::new(HashMap::new()));
        let key = CsrKey::of(b"csr");
        let (tx, rx) = watch::channel(None);
        lock_map(&inflight).insert(key.clone(), rx.clone());
        let refresher = tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let (done, released) = tokio::sync::oneshot::channel();
        let release = Box::pin(async move {
            let _ = done.send(());
        });
        let guard = IssuanceGuard::new(
            key.clone(),
            Arc::clone(&inflight),
            tx,
            refresher.abort_handle(),
            release,
        );
        Started {
            inflight,
            key,
            waiter: rx,
            refresher,
            released,
            guard,
        }
    }

    /// After the task ended by `end`: the refresher stopped, the lock released, the entry gone,
    /// and the waiter told `want`.
    async fn assert_cleaned_up(
        s: Started,
        end: impl FnOnce(IssuanceGuard) -> tokio::task::JoinHandle<()>,
        want: Result<String, Failure>,
    ) {
        let Started {
            inflight,
            key,
            mut waiter,
            refresher,
            released,
            guard,
        } = s;
        let _ = end(guard).await;
        let stopped = tokio::time::timeout(Duration::from_secs(5), refresher)
            .await
            .expect("the refresher stops");
        assert!(stopped.expect_err("aborted").is_cancelled());
        tokio::time::timeout(Duration::from_secs(5), released)
            .await
            .expect("the lock is released")
            .expect("release ran");
        assert!(
            lock_map(&inflight).get(&key).is_none(),
            "inflight entry left"
        );
        let told = waiter
            .wait_for(Option::is_some)
            .await
            .expect("a result")
            .clone();
        assert_eq!(told, Some(want));
    }

    fn abandoned() -> Result<String, Failure> {
        Err(Failure {
            kind: FailureKind::Abandoned,
            reason: "the issuance was abandoned; retry later".into(),
        })
    }

    #[tokio::test]
    async fn a_finished_issuance_releases_everything_and_tells_its_result() {
        assert_cleaned_up(
            started(),
            |g| tokio::spawn(g.finish(Ok("chain".into()))),
            Ok("chain".into()),
        )
        .await;
    }

    #[tokio::test]
    async fn a_panicking_issuance_releases_everything_and_answers_503() {
        assert_cleaned_up(
            started(),
            |g| {
                tokio::spawn(async move {
                    let _held = g;
                    tokio::task::yield_now().await;
                    panic!("a bug while the issuance runs");
                })
            },
            abandoned(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_cancelled_issuance_releases_everything_and_answers_503() {
        assert_cleaned_up(
            started(),
            |g| {
                let task = tokio::spawn(async move {
                    let _held = g;
                    std::future::pending::<()>().await;
                });
                task.abort();
                task
            },
            abandoned(),
        )
        .await;
    }

    #[tokio::test]
    async fn the_guard_removes_only_its_own_inflight_entry() {
        let s = started();
        // A later issuance for the same CSR took the slot (after a lock takeover).
        let (_tx, newer) = watch::channel(None);
        lock_map(&s.inflight).insert(s.key.clone(), newer.clone());
        drop(s.guard);
        let map = lock_map(&s.inflight);
        assert!(map.get(&s.key).is_some_and(|rx| rx.same_channel(&newer)));
    }

    #[test]
    fn a_chain_fits_when_the_leaf_has_the_key_and_the_name_and_is_valid() {
        let (spki, leaf) = key_and_cert(&[NAME], FUTURE);
        let (_, other) = key_and_cert(&["intermediate.example"], FUTURE);
        let not_after =
            chain_fits(&format!("{leaf}{other}"), &spki, &name(NAME), now_unix()).expect("fits");
        // 2099-01-01T00:00:00Z
        assert_eq!(not_after, 4_070_908_800);
        // dNSNames compare case-insensitively (RFC 4343); other names beside it do not matter.
        let (spki, upper) = key_and_cert(&["www.example", "SN-1.IOT.Example.Test"], FUTURE);
        assert!(chain_fits(&upper, &spki, &name(NAME), now_unix()).is_ok());
    }

    #[test]
    fn another_key_another_name_or_expiry_does_not_fit() {
        let (spki, leaf) = key_and_cert(&[NAME], FUTURE);
        let (other_spki, other_key) = key_and_cert(&[NAME], FUTURE);
        assert_ne!(spki, other_spki);
        assert_eq!(
            chain_fits(&other_key, &spki, &name(NAME), now_unix()),
            Err(ChainMismatch::OtherKey)
        );
        // Only the first certificate is the leaf.
        assert_eq!(
            chain_fits(
                &format!("{other_key}{leaf}"),
                &spki,
                &name(NAME),
                now_unix()
            ),
            Err(ChainMismatch::OtherKey)
        );
        let (spki, other_name) = key_and_cert(&["sn-2.iot.example.test"], FUTURE);
        assert_eq!(
            chain_fits(&other_name, &spki, &name(NAME), now_unix()),
            Err(ChainMismatch::OtherName(NAME.into()))
        );
        // A name that merely contains the device's name is another name.
        let (spki, longer) = key_and_cert(&["x.sn-1.iot.example.test"], FUTURE);
        assert!(matches!(
            chain_fits(&longer, &spki, &name(NAME), now_unix()),
            Err(ChainMismatch::OtherName(_))
        ));
        let (spki, expired) = key_and_cert(&[NAME], (2020, 1, 1));
        assert_eq!(
            chain_fits(&expired, &spki, &name(NAME), now_unix()),
            Err(ChainMismatch::Expired)
        );
    }

    #[test]
    fn a_leaf_is_expired_from_its_not_after_on() {
        let (spki, leaf) = key_and_cert(&[NAME], FUTURE);
        let not_after = chain_fits(&leaf, &spki, &name(NAME), 0).expect("fits");
        assert_eq!(
            chain_fits(&leaf, &spki, &name(NAME), not_after - 1),
            Ok(not_after)
        );
        assert_eq!(
            chain_fits(&leaf, &spki, &name(NAME), not_after),
            Err(ChainMismatch::Expired)
        );
    }

    #[test]
    fn garbage_does_not_fit() {
        let (spki, leaf) = key_and_cert(&[NAME], FUTURE);
        let n = name(NAME);
        for bad in ["", "not a chain", "-----BEGIN CERTIFICATE-----\nAAAA\n"] {
            assert!(
                matches!(
                    chain_fits(bad, &spki, &n, now_unix()),
                    Err(ChainMismatch::NotPem(_))
                ),
                "{bad:?}"
            );
        }
        let not_x509 = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            chain_fits(not_x509, &spki, &n, now_unix()),
            Err(ChainMismatch::Unreadable(_))
        ));
        // Every prefix of a good chain is refused or, once the leaf is whole, fits.
        for cut in 0..leaf.len() {
            if let Ok(na) = chain_fits(&leaf[..cut], &spki, &n, now_unix()) {
                assert!(
                    leaf[..cut].contains("-----END CERTIFICATE-----"),
                    "{cut}: {na}"
                );
            }
        }
    }
}
