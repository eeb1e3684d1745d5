//! The registration authority's engine: a checked CSR becomes a certificate.
//!
//! For each enrolment: verify the CSR and the device's name, look in the cache (SHA-256 of the
//! whole CSR), and otherwise make sure exactly one ACME order runs for that CSR across all
//! replicas (a Redis lock with expiry, refreshed while the order runs). The request waits up
//! to `enroll.budget_ms`; past that it answers "pending, retry after N s" while the order
//! goes on. A retry on any replica finds the certificate in the cache, or, if the replica that
//! held the lock died, takes the lock over once it expires and resumes the stored order.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::csr::{self, CsrError};
use estuary_proto::est::EstOperation;
use estuary_proto::names::{DeviceName, DeviceSerial, NameError, ParentDomain};
use estuary_proto::policy::{self, KeyPolicy, PolicyError};
use estuary_proto::{cert, pem, pkcs7};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::acme::{Acme, IssueError};
use crate::config::EnrollConfig;
use crate::metrics::{EnrollResult, Metrics, Protocol};
use crate::store::{CsrKey, Failure, Store, StoreError};

/// One enrolment request, as the edge filter forwards it.
pub struct EnrollRequest {
    /// The CSR, DER, exactly as the device sent it.
    pub csr_der: Vec<u8>,
    /// The device serial the edge authenticated (from the IDevID or the LDevID).
    pub serial: DeviceSerial,
    /// simpleenroll or simplereenroll.
    pub operation: EstOperation,
}

/// A successful answer.
#[derive(Debug)]
pub enum Outcome {
    /// The chain, as a PKCS#7 certs-only DER.
    Issued {
        /// PKCS#7 certs-only (RFC 7030 §4.2.3).
        pkcs7: Vec<u8>,
        /// Whether it came from the cache.
        cached: bool,
    },
    /// Still in progress: retry after this many seconds (RFC 7030 §4.2.3, 202).
    Pending {
        /// Seconds.
        retry_after: u64,
    },
}

/// Why an enrolment got no certificate.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The CSR is not a valid, correctly self-signed PKCS#10 of a supported key.
    #[error("bad CSR: {0}")]
    BadCsr(#[from] CsrError),
    /// The device may not ask for this.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The serial does not make a valid name under the parent domain.
    #[error("bad device name: {0}")]
    Name(#[from] NameError),
    /// Redis is down.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ACME issuance failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// A failure recorded by the replica that ran the order.
    #[error("{}", .0.reason)]
    Remembered(Failure),
}

impl EnrollError {
    /// The internal API's status for this error (see `api`).
    pub fn status(&self) -> u16 {
        match self {
            Self::BadCsr(_) | Self::Name(_) => 400,
            Self::Policy(_) => 403,
            Self::Store(_) => 503,
            Self::Remembered(f) => f.status,
            Self::Issue(e) => match e {
                IssueError::CaUnavailable { .. } | IssueError::OrderTimeout { .. } => 503,
                IssueError::Store(_) => 503,
                IssueError::CaRejected { problem, .. } => match problem {
                    crate::acme::ProblemType::BadCsr => 400,
                    crate::acme::ProblemType::RejectedIdentifier
                    | crate::acme::ProblemType::Caa => 403,
                    _ => 502,
                },
                IssueError::Dns(d) if !d.is_permanent() => 503,
                IssueError::Dns(_)
                | IssueError::CaProtocol(_)
                | IssueError::ChallengeFailed { .. }
                | IssueError::BadChain(_)
                | IssueError::NoDnsChallenge(_) => 502,
            },
        }
    }

    /// The `Retry-After` to send with a 503, if any.
    pub fn retry_after(&self, cfg: &EnrollConfig) -> Option<u64> {
        match self {
            Self::Issue(IssueError::CaUnavailable {
                retry_after: Some(d),
                ..
            }) => Some(d.as_secs().max(1)),
            _ if self.status() == 503 => Some(cfg.unavailable_retry_after_s),
            _ => None,
        }
    }
}

type Waiter = watch::Receiver<Option<Result<String, Failure>>>;

/// The engine. Cheap to share (`Arc`).
pub struct Engine {
    parent: ParentDomain,
    keys: KeyPolicy,
    cfg: EnrollConfig,
    store: Store,
    acme: Arc<Acme>,
    metrics: Arc<Metrics>,
    inflight: Mutex<HashMap<CsrKey, Waiter>>,
}

impl Engine {
    /// Builds the engine.
    pub fn new(
        parent: ParentDomain,
        keys: KeyPolicy,
        cfg: EnrollConfig,
        store: Store,
        acme: Arc<Acme>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        acme.attach_metrics(Arc::clone(&metrics));
        Arc::new(Self {
            parent,
            keys,
            cfg,
            store,
            acme,
            metrics,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// The enrol configuration.
    pub fn config(&self) -> &EnrollConfig {
        &self.cfg
    }

    /// Enrols one CSR; counts the result.
    pub async fn enroll(self: &Arc<Self>, req: EnrollRequest) -> Result<Outcome, EnrollError> {
        self.enroll_as(Protocol::est, req).await
    }

    /// Enrols one CSR for `protocol`; counts the result under that protocol label.
    pub async fn enroll_as(
        self: &Arc<Self>,
        protocol: Protocol,
        req: EnrollRequest,
    ) -> Result<Outcome, EnrollError> {
        let result = self.enroll_inner(req).await;
        let label = match &result {
            Ok(Outcome::Issued { cached: true, .. }) => EnrollResult::cached,
            Ok(Outcome::Issued { cached: false, .. }) => EnrollResult::issued,
            Ok(Outcome::Pending { .. }) => EnrollResult::pending,
            Err(e) if e.status() < 500 => EnrollResult::rejected,
            Err(_) => EnrollResult::failed,
        };
        self.metrics.enrollment(protocol, label);
        result
    }

    async fn enroll_inner(self: &Arc<Self>, req: EnrollRequest) -> Result<Outcome, EnrollError> {
        // Hostile until checked: the signature first, then the fields, then the policy.
        let csr = csr::parse_and_verify(&req.csr_der)?;
        let name = DeviceName::new(&req.serial, &self.parent)?;
        policy::check_enroll(&csr, &name, &self.keys)?;
        let key = CsrKey::of(&req.csr_der);

        if let Some(chain) = self.store.cached_chain(&key).await? {
            self.metrics.cache_hits.inc();
            info!(device = %name.as_str(), op = req.operation.as_str(), "certificate from cache");
            return Ok(Outcome::Issued {
                pkcs7: chain_to_pkcs7(&chain)?,
                cached: true,
            });
        }
        self.metrics.cache_misses.inc();
        if let Some(f) = self.store.take_failure(&key).await? {
            return Err(EnrollError::Remembered(f));
        }

        let waiter = self.waiter_for(&key, &req.csr_der, &name).await?;
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
            None => self.poll_store(&key, deadline).await?,
        };
        match done {
            Some(Ok(chain)) => Ok(Outcome::Issued {
                pkcs7: chain_to_pkcs7(&chain)?,
                cached: false,
            }),
            Some(Err(f)) => Err(EnrollError::Remembered(f)),
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
        key: &CsrKey,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<Option<Waiter>, EnrollError> {
        let local = self.lock_inflight().get(key).cloned();
        if let Some(rx) = local {
            return Ok(Some(rx));
        }
        let token = random_token();
        let ttl = Duration::from_secs(self.cfg.lock_ttl_s);
        if !self.store.try_lock(key, &token, ttl).await? {
            return Ok(None);
        }
        // Someone may have finished between our cache look-up and the lock.
        if let Some(chain) = self.store.cached_chain(key).await? {
            let _ = self.store.release_lock(key, &token).await;
            let (_tx, rx) = watch::channel(Some(Ok(chain)));
            return Ok(Some(rx));
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
        let engine = Arc::clone(self);
        let key = key.clone();
        let csr_der = csr_der.to_vec();
        let name = name.clone();
        tokio::spawn(async move {
            let result = engine.run_issuance(&key, &token, &csr_der, &name).await;
            let _ = tx.send(Some(result));
            engine.lock_inflight().remove(&key);
        });
        Ok(Some(rx))
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<CsrKey, Waiter>> {
        // A poisoned map only means a panic elsewhere; the data is still a plain map.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one issuance while holding the lock, stores the outcome, releases the lock.
    async fn run_issuance(
        &self,
        key: &CsrKey,
        token: &str,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<String, Failure> {
        let ttl = Duration::from_secs(self.cfg.lock_ttl_s);
        let refresher = {
            let store = self.store.clone();
            let key = key.clone();
            let token = token.to_string();
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
        };
        let started = Instant::now();
        let issued = self.acme.issue(key, csr_der, name).await;
        refresher.abort();
        let result = match issued {
            Ok(chain) => match self.check_chain(&chain, csr_der) {
                Ok(not_after) => {
                    self.metrics
                        .issuance_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if let Err(e) = self.store.cache_chain(key, &chain, not_after).await {
                        warn!(device = %name.as_str(), error = %e, "issued, but could not cache the certificate");
                    }
                    Ok(chain)
                }
                Err(reason) => {
                    error!(device = %name.as_str(), %reason, "the CA's chain does not match the CSR");
                    Err(Failure {
                        status: 502,
                        reason,
                    })
                }
            },
            Err(e) => {
                let err = EnrollError::Issue(e);
                let status = err.status();
                error!(device = %name.as_str(), status, error = %err, "issuance failed");
                let f = Failure {
                    status,
                    reason: err.to_string(),
                };
                // Transient failures are not remembered: the retry starts again.
                if status != 503 {
                    let keep = Duration::from_secs(self.cfg.failure_ttl_s);
                    if let Err(e) = self.store.set_failure(key, &f, keep).await {
                        warn!(error = %e, "could not record the failure");
                    }
                }
                Err(f)
            }
        };
        if let Err(e) = self.store.release_lock(key, token).await {
            warn!(error = %e, "could not release the issuance lock (it expires by itself)");
        }
        result
    }

    /// Checks that the leaf certifies the CSR's key; returns its notAfter.
    fn check_chain(&self, chain_pem: &str, csr_der: &[u8]) -> Result<i64, String> {
        let ders = pem::decode_certs(chain_pem).map_err(|e| format!("chain is not PEM: {e}"))?;
        let leaf_der = ders.first().ok_or("empty chain")?;
        let leaf =
            cert::CertSummary::from_der(leaf_der).map_err(|e| format!("leaf unreadable: {e}"))?;
        let csr = csr::parse_and_verify(csr_der).map_err(|e| e.to_string())?;
        if leaf.spki_der() != csr.spki_der() {
            return Err("the leaf certificate does not hold the CSR's public key".into());
        }
        Ok(leaf.not_after_unix())
    }

    /// Another replica holds the lock: watch Redis until the deadline.
    async fn poll_store(
        &self,
        key: &CsrKey,
        deadline: Instant,
    ) -> Result<Option<Result<String, Failure>>, EnrollError> {
        loop {
            if let Some(chain) = self.store.cached_chain(key).await? {
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

fn chain_to_pkcs7(chain_pem: &str) -> Result<Vec<u8>, EnrollError> {
    let ders = pem::decode_certs(chain_pem).map_err(|e| {
        EnrollError::Remembered(Failure {
            status: 500,
            reason: format!("stored chain unreadable: {e}"),
        })
    })?;
    pkcs7::encode_certs_only(&ders).map_err(|e| {
        EnrollError::Remembered(Failure {
            status: 500,
            reason: format!("cannot encode PKCS#7: {e}"),
        })
    })
}

pub(crate) fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}
