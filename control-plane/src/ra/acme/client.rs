//! ACME (RFC 8555) issuance with instant-acme: one persisted account, one order per CSR,
//! DNS-01 through RFC 2136, the CSR finalized exactly as the device sent it.
//!
//! Redis is not trusted: a URL read back from it is used with the account key only when its
//! [`Origin`] is the configured directory's. A stored order URL on another origin is logged,
//! cleared and replaced by a new order; stored account credentials naming another origin are
//! refused.
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use estuary_proto::names::DeviceName;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use std::sync::OnceLock;

use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use crate::config::AcmeConfig;
use crate::metrics::{FallbackReason, Metrics};
use crate::ra::acme::jws::{AcmeHttp, DirectoryExt, JwsClient};
use crate::ra::acme::problem::{from_acme, whole_seconds, IssueError, ProblemType};
use crate::ra::dns::batch::DnsBatcher;
use crate::ra::dns::ledger::LedgeredDns;
use crate::ra::dns::update::{DnsUpdater, TxtRecord};
use crate::ra::store::{CsrKey, Store, StoreError};

/// The origin of an absolute `http` or `https` URL (RFC 6454 §4): scheme, host and port, the
/// scheme and host in lower case and the scheme's default port filled in.
///
/// Read with `hyper::Uri`, the parser that the ACME requests themselves go through, so that this
/// check and the connection cannot read one URL two ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// `None` unless `url` is an absolute `http` or `https` URL with a host, no user information
    /// (in `https://ca.example@evil.example/` the host is `evil.example`, refused all the same)
    /// and, if given, a decimal port from 0 to 65535.
    pub fn of(url: &str) -> Option<Origin> {
        let uri: hyper::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let authority = uri.authority()?.as_str();
        if authority.contains('@') {
            return None;
        }
        let host = uri.host()?.to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        // `Uri::port` drops a port it cannot read; such a port must not become the default.
        let port_text = match authority.rfind(']') {
            Some(i) => authority.get(i + 1..)?.strip_prefix(':'),
            None => authority.rsplit_once(':').map(|(_, p)| p),
        };
        let port = match port_text {
            None | Some("") => default_port,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        Some(Origin { scheme, host, port })
    }

    /// Whether `a` and `b` are both readable URLs of one origin.
    pub fn same(a: &str, b: &str) -> bool {
        matches!((Origin::of(a), Origin::of(b)), (Some(x), Some(y)) if x == y)
    }
}

/// Whether stored account credentials (instant-acme's JSON) lead only to the directory's
/// origin: their `directory`, which instant-acme fetches, or, without one, the directory URLs
/// that credentials of older versions carry (`urls`).
fn account_on_origin(creds_json: &str, directory_url: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(creds_json) else {
        return false;
    };
    match (v.get("directory"), v.get("urls")) {
        (Some(serde_json::Value::String(d)), _) => Origin::same(d, directory_url),
        (None | Some(serde_json::Value::Null), Some(serde_json::Value::Object(urls))) => urls
            .values()
            .filter_map(serde_json::Value::as_str)
            .all(|u| Origin::same(u, directory_url)),
        _ => false,
    }
}

/// At most 120 characters of a URL read from Redis, for a log line.
pub(super) fn loggable(url: &str) -> String {
    url.chars().take(120).collect()
}

/// DNS-01 records that may be in the zone. [`Published::remove`] removes them; if the
/// issuance is cancelled first (its deadline, or a panic), dropping this spawns the removal.
pub(crate) struct Published {
    dns: LedgeredDns,
    records: Vec<TxtRecord>,
}

impl Published {
    pub(crate) fn new(dns: &LedgeredDns, records: Vec<TxtRecord>) -> Self {
        Self {
            dns: dns.clone(),
            records,
        }
    }

    pub(crate) fn records(&self) -> &[TxtRecord] {
        &self.records
    }

    /// Removes the records in the background, off the enrolment's path: the device gets its
    /// answer without waiting for the DNS UPDATE, and the batcher may carry the deletion in a
    /// later message with other orders' additions ([`crate::ra::dns::batch`]). A failure is
    /// logged (`owner` names what they were for) and the records stay in the DNS ledger for the
    /// sweeper ([`crate::ra::dns::ledger`]), as they do if the process stops first.
    pub(crate) fn remove(mut self, owner: &str) {
        self.spawn_removal(owner);
    }

    /// The removal of [`Published::remove`] and of a dropped (abandoned) issuance: spawned on
    /// the current runtime; without one, the records are left to the sweeper.
    fn spawn_removal(&mut self, owner: &str) {
        if self.records.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.records);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            warn!(
                owner,
                "no runtime to remove DNS-01 records on; they stay in the DNS ledger for the sweeper"
            );
            return;
        };
        let dns = self.dns.clone();
        let owner = owner.to_owned();
        rt.spawn(async move {
            if let Err(e) = dns.remove(&records).await {
                warn!(owner, error = %e, "could not remove DNS-01 records");
            }
        });
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        if !self.records.is_empty() {
            warn!(
                records = self.records.len(),
                "issuance abandoned with DNS-01 records published; removing them"
            );
        }
        self.spawn_removal("an abandoned issuance");
    }
}

/// Per-process pre-authorisation state, used by [`super::preauth`].
#[derive(Default)]
pub struct PreauthState {
    pub(super) directory: OnceCell<DirectoryExt>,
    pub(super) jws: OnceCell<Arc<JwsClient>>,
    pub(super) fallback: OnceLock<FallbackReason>,
    pub(super) logged: AtomicBool,
}

/// The ACME side of the engine.
pub struct Acme {
    pub(crate) cfg: AcmeConfig,
    pub(crate) store: Store,
    dns: Arc<DnsUpdater>,
    batcher: OnceLock<LedgeredDns>,
    account: OnceCell<Account>,
    /// The account key (PKCS#8 DER) for our own JWS requests ([`crate::ra::acme::jws`]).
    pub(crate) account_key: OnceLock<Vec<u8>>,
    pub(super) on_order: Arc<dyn Fn(bool) + Send + Sync>,
    /// Pre-authorisation state ([`crate::ra::acme::preauth`]).
    pub(crate) preauth: PreauthState,
    /// The engine's metrics, once attached ([`Acme::attach_metrics`]).
    pub(crate) metrics: OnceLock<Arc<Metrics>>,
}

impl Acme {
    /// `on_order(valid)` is called once per ACME order placed, when it ends.
    pub fn new(
        cfg: AcmeConfig,
        store: Store,
        dns: Arc<DnsUpdater>,
        on_order: Arc<dyn Fn(bool) + Send + Sync>,
    ) -> Self {
        Self {
            cfg,
            store,
            dns,
            batcher: OnceLock::new(),
            account: OnceCell::new(),
            account_key: OnceLock::new(),
            preauth: PreauthState::default(),
            metrics: OnceLock::new(),
            on_order,
        }
    }

    /// The coalescing DNS sender that keeps the DNS ledger, started on first use (inside the
    /// runtime). Every DNS-01 record is published and removed through it.
    pub(crate) fn dns(&self) -> &LedgeredDns {
        self.batcher.get_or_init(|| {
            let batcher = DnsBatcher::spawn(
                Arc::clone(&self.dns),
                Duration::from_millis(self.cfg.dns_batch_window_ms),
                self.cfg.dns_batch_max_records,
                self.cfg.dns_batch_max_queue,
            );
            let batcher = match self.metrics.get() {
                Some(m) => {
                    let m = Arc::clone(m);
                    batcher.with_full_counter(Arc::new(move || {
                        m.dns_queue_full.inc();
                    }))
                }
                None => batcher,
            };
            let hold =
                Duration::from_secs(self.cfg.order_timeout_s) + crate::ra::dns::ledger::GRACE;
            LedgeredDns::new(batcher, self.store.clone(), hold)
        })
    }

    /// The time a back-off after `rateLimited` still runs at this CA, shared by every replica
    /// through Redis; `None` when none holds.
    pub async fn ca_backoff(&self) -> Result<Option<Duration>, StoreError> {
        self.store.ca_backoff(&self.cfg.directory_url).await
    }

    /// Records a back-off after `rateLimited` for every replica: the CA's `Retry-After`, or
    /// `acme.rate_limit_backoff_s` without one, at most `acme.rate_limit_backoff_max_s` and at
    /// least 1 s; a longer one already recorded is kept. Returns the time it runs.
    pub(super) async fn back_off(&self, retry_after: Option<Duration>) -> Duration {
        let wanted = retry_after
            .unwrap_or(Duration::from_secs(self.cfg.rate_limit_backoff_s))
            .min(Duration::from_secs(self.cfg.rate_limit_backoff_max_s))
            .max(Duration::from_secs(1));
        if let Some(m) = self.metrics.get() {
            m.ca_backoffs.inc();
        }
        let runs = match self
            .store
            .extend_ca_backoff(&self.cfg.directory_url, wanted)
            .await
        {
            Ok(runs) => runs,
            Err(e) => {
                warn!(error = %e, "could not record the CA back-off in Redis; other replicas may still order");
                wanted
            }
        };
        warn!(
            directory = %self.cfg.directory_url,
            retry_after_s = retry_after.map(|d| d.as_secs()),
            backoff_s = whole_seconds(runs),
            "the ACME CA answered rateLimited; no new orders to it until the back-off ends"
        );
        runs
    }

    /// Whether `url` is on the ACME directory's origin, so that it may be used with the
    /// account key.
    pub(crate) fn on_ca_origin(&self, url: &str) -> bool {
        Origin::same(url, &self.cfg.directory_url)
    }

    /// Refuses stored account credentials that lead elsewhere than the directory's origin.
    fn check_stored_account(&self, json: &str) -> Result<(), IssueError> {
        if account_on_origin(json, &self.cfg.directory_url) {
            return Ok(());
        }
        warn!(
            directory = %self.cfg.directory_url,
            "the ACME account stored in Redis names URLs outside the directory's origin; \
             refusing it (delete it from Redis to create a new account)"
        );
        Err(IssueError::BadChain(
            "the stored ACME account names URLs outside the directory's origin".into(),
        ))
    }

    /// `acme.request_timeout_ms`.
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.request_timeout_ms)
    }

    /// The one HTTPS client for the CA, with the per-exchange timeout.
    pub(crate) fn http(&self) -> Result<AcmeHttp, IssueError> {
        AcmeHttp::new(self.cfg.tls_root_file.as_deref(), self.request_timeout())
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, IssueError> {
        Ok(Account::builder_with_http(Box::new(self.http()?)))
    }

    /// The one ACME account. With `acme.account_key_file`, the CA's account of that key
    /// (`Acme::account_of_key`; nothing in Redis). Without it (dev): loaded from Redis, or
    /// created once and stored there, key included, for every replica (the first writer wins;
    /// a loser adopts the stored one).
    pub async fn account(&self) -> Result<Account, IssueError> {
        self.account
            .get_or_try_init(|| async {
                let dir = &self.cfg.directory_url;
                let file_key = self.cfg.account_key().map_err(|e| IssueError::CaRejected {
                    problem: ProblemType::Other("accountKey".into()),
                    detail: format!("acme.account_key_file: {e}"),
                })?;
                if let Some(pkcs8) = file_key {
                    return self.account_of_key(pkcs8).await;
                }
                if let Some(json) = self.store.account(dir).await? {
                    self.check_stored_account(&json)?;
                    let creds: AccountCredentials = serde_json::from_str(&json).map_err(|e| {
                        IssueError::BadChain(format!("stored ACME account unreadable: {e}"))
                    })?;
                    info!(directory = %dir, "using the stored ACME account");
                    let _ = self
                        .account_key
                        .set(creds.private_key().secret_pkcs8_der().to_vec());
                    return self.builder()?.from_credentials(creds).await.map_err(from_acme);
                }
                let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
                let eab = match (&self.cfg.eab_kid, self.eab_hmac()?) {
                    (Some(kid), Some(raw)) => Some(ExternalAccountKey::new(kid.clone(), &raw)),
                    _ => None,
                };
                let (account, creds) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        dir.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .map_err(from_acme)?;
                let json = serde_json::to_string(&creds).map_err(|e| {
                    IssueError::BadChain(format!("cannot serialize the ACME account: {e}"))
                })?;
                let stored = self.store.put_account_if_absent(dir, &json).await?;
                if stored == json {
                    info!(directory = %dir, account = %account.id(), "created the ACME account");
                    let _ = self
                        .account_key
                        .set(creds.private_key().secret_pkcs8_der().to_vec());
                    Ok(account)
                } else {
                    info!(directory = %dir, "another replica created the ACME account first; using it");
                    self.check_stored_account(&stored)?;
                    let creds: AccountCredentials = serde_json::from_str(&stored).map_err(|e| {
                        IssueError::BadChain(format!("stored ACME account unreadable: {e}"))
                    })?;
                    let _ = self
                        .account_key
                        .set(creds.private_key().secret_pkcs8_der().to_vec());
                    self.builder()?.from_credentials(creds).await.map_err(from_acme)
                }
            })
            .await
            .cloned()
    }

    /// The account of `acme.account_key_file` (`pkcs8`): found at the CA with
    /// `onlyReturnExisting` (RFC 8555 §7.3.1), or created with the contacts and EAB if the CA
    /// has none for this key. Every replica finds the same account; Redis holds nothing of it.
    async fn account_of_key(&self, pkcs8: Vec<u8>) -> Result<Account, IssueError> {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let dir = &self.cfg.directory_url;
        let der = PrivatePkcs8KeyDer::from(pkcs8.clone());
        let key = instant_acme::Key::from_pkcs8_der(der.clone_key()).map_err(from_acme)?;
        let account = match self
            .builder()?
            .from_key((key, PrivateKeyDer::Pkcs8(der.clone_key())), dir.clone())
            .await
            .map_err(from_acme)
        {
            Ok((account, _)) => {
                info!(directory = %dir, account = %account.id(), "found the ACME account of acme.account_key_file");
                account
            }
            Err(IssueError::CaRejected {
                problem: ProblemType::AccountDoesNotExist,
                ..
            }) => {
                let hmac = self.eab_hmac()?;
                let eab = match (&self.cfg.eab_kid, &hmac) {
                    (Some(kid), Some(raw)) => Some((kid.as_str(), raw.as_slice())),
                    _ => None,
                };
                let id = crate::ra::acme::jws::new_account(
                    self.http()?,
                    dir,
                    &pkcs8,
                    &self.cfg.contact,
                    eab,
                )
                .await?;
                info!(directory = %dir, account = %id, "created the ACME account of acme.account_key_file");
                self.builder()?
                    .from_parts(id, der, dir.clone())
                    .await
                    .map_err(from_acme)?
            }
            Err(e) => return Err(e),
        };
        let _ = self.account_key.set(pkcs8);
        Ok(account)
    }

    /// `acme.eab_hmac_key`, decoded.
    fn eab_hmac(&self) -> Result<Option<Vec<u8>>, IssueError> {
        use base64::Engine as _;
        self.cfg
            .eab_hmac_key
            .as_ref()
            .map(|key| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.expose().trim_end_matches('='))
                    .map_err(|_| IssueError::CaRejected {
                        problem: ProblemType::Other("externalAccountRequired".into()),
                        detail: "acme.eab_hmac_key is not base64url".into(),
                    })
            })
            .transpose()
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new()
            .initial_delay(Duration::from_millis(self.cfg.poll_initial_ms))
            .backoff(1.5)
            .timeout(Duration::from_secs(self.cfg.order_timeout_s))
    }

    /// The profile to name in newOrder (draft-ietf-acme-profiles): `acme.profile` (or the
    /// label's) when the directory's `meta.profiles` advertises it; none when none is
    /// configured. A configured profile the CA does not advertise is an error: the order
    /// would come from another profile than the operator chose, or be refused
    /// `invalidProfile`.
    pub(super) fn order_profile(&self, account: &Account) -> Result<Option<&str>, IssueError> {
        let Some(want) = self.cfg.profile.as_deref() else {
            return Ok(None);
        };
        if account.profiles().any(|p| p.name == want) {
            return Ok(Some(want));
        }
        let mut offered: Vec<&str> = account.profiles().map(|p| p.name).collect();
        offered.sort_unstable();
        let offered = if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        };
        warn!(
            directory = %self.cfg.directory_url,
            profile = want,
            %offered,
            "the configured ACME profile is not advertised in the directory's meta.profiles; refusing to order"
        );
        Err(IssueError::ProfileNotOffered {
            profile: want.to_string(),
            offered,
        })
    }

    pub(super) async fn new_order(
        &self,
        account: &Account,
        key: &CsrKey,
        name: &DeviceName,
        profile: Option<&str>,
    ) -> Result<Order, IssueError> {
        let ids = [Identifier::Dns(name.as_str().to_string())];
        let mut new = NewOrder::new(&ids);
        if let Some(p) = profile {
            new = new.profile(p);
        }
        let order = account.new_order(&new).await.map_err(from_acme)?;
        info!(order_url = %order.url(), device = %name.as_str(), profile, "placed ACME order");
        let keep = Duration::from_secs(self.cfg.order_timeout_s.saturating_mul(4).max(60));
        self.store.set_order_url(key, order.url(), keep).await?;
        Ok(order)
    }

    pub(super) async fn drive(
        &self,
        order: &mut Order,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<String, IssueError> {
        let retry = self.retry_policy();
        let status = order.state().status;
        if status != OrderStatus::Pending {
            return self.finish(order, status, csr_der, name, &retry).await;
        }
        let records = self.challenge_records(order).await?;
        // Removed whatever the outcome: below, or on drop if the issuance is abandoned first.
        let published = Published::new(self.dns(), records);
        if let Err(e) = self.dns().publish(published.records()).await {
            // A timed-out UPDATE may still have been applied, and a refusal may be forged.
            published.remove(name.as_str());
            return Err(e.into());
        }
        let outcome = async {
            self.set_ready(order).await?;
            order.poll_ready(&retry).await.map_err(|e| match e {
                instant_acme::Error::Timeout(_) => IssueError::OrderTimeout {
                    order_url: order.url().to_string(),
                },
                e => from_acme(e),
            })
        }
        .await;
        match outcome {
            // The records are no longer needed once the order is ready: removed while the
            // CA finalizes, off the enrolment's critical path.
            Ok(status) => {
                published.remove(name.as_str());
                self.finish(order, status, csr_der, name, &retry).await
            }
            Err(e) => {
                published.remove(name.as_str());
                Err(e)
            }
        }
    }

    /// Finalizes a ready order (or follows one already finalized) to its certificate chain.
    async fn finish(
        &self,
        order: &mut Order,
        status: OrderStatus,
        csr_der: &[u8],
        name: &DeviceName,
        retry: &RetryPolicy,
    ) -> Result<String, IssueError> {
        match status {
            OrderStatus::Ready => order.finalize_csr(csr_der).await.map_err(from_acme)?,
            OrderStatus::Processing | OrderStatus::Valid => {}
            OrderStatus::Invalid | OrderStatus::Pending => {
                let problem = order.state().error.as_ref();
                let detail = problem
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "the order became invalid".into());
                let kind = ProblemType::parse(problem.and_then(|p| p.r#type.as_deref()));
                return Err(IssueError::ChallengeFailed {
                    name: name.as_str().to_string(),
                    detail,
                    unreachable: matches!(kind, ProblemType::Dns | ProblemType::Connection),
                });
            }
        }
        order.poll_certificate(retry).await.map_err(|e| match e {
            instant_acme::Error::Timeout(_) => IssueError::OrderTimeout {
                order_url: order.url().to_string(),
            },
            e => from_acme(e),
        })
    }

    async fn challenge_records(&self, order: &mut Order) -> Result<Vec<TxtRecord>, IssueError> {
        let mut records = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(from_acme)?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    let ident = a.identifier().to_string();
                    return Err(IssueError::ChallengeFailed {
                        name: ident,
                        detail: format!("authorization is {other:?}"),
                        unreachable: false,
                    });
                }
            }
            let ident = a.identifier().to_string();
            let ch = a
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| IssueError::NoDnsChallenge(ident.clone()))?;
            let name = format!("_acme-challenge.{}", ident.trim_start_matches("*."));
            debug!(record = %name, "DNS-01 record to publish");
            records.push(TxtRecord {
                name,
                value: ch.key_authorization().dns_value(),
            });
        }
        Ok(records)
    }

    async fn set_ready(&self, order: &mut Order) -> Result<(), IssueError> {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(from_acme)?;
            if a.status != AuthorizationStatus::Pending {
                continue;
            }
            let ident = a.identifier().to_string();
            let mut ch = a
                .challenge(ChallengeType::Dns01)
                .ok_or(IssueError::NoDnsChallenge(ident))?;
            ch.set_ready().await.map_err(from_acme)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA that accepts TCP and never answers: each exchange ends at the timeout, through our
    /// own requests and through instant-acme's.
    #[tokio::test]
    async fn a_silent_ca_times_out_every_exchange() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let limit = Duration::from_millis(300);
        let http = AcmeHttp::new(None, limit).expect("client");
        let started = std::time::Instant::now();
        let e = http
            .get_json(&format!("https://{addr}/dir"))
            .await
            .expect_err("no answer");
        assert!(matches!(e, IssueError::CaNoAnswer(_)), "{e:?}");
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "the ACME CA did not answer within 300 ms");
        let e = Account::builder_with_http(Box::new(http))
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                format!("https://{addr}/dir"),
                None,
            )
            .await
            .map(|_| ())
            .map_err(from_acme)
            .expect_err("no answer");
        assert!(matches!(e, IssueError::CaNoAnswer(_)), "{e:?}");
        let took = started.elapsed();
        assert!(
            took >= limit * 2 && took < limit * 2 + Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        // RFC 6454 §4: the default port is the scheme's; host and scheme compare in lower case.
        let dir = "https://ca.example/dir";
        for same in [
            "https://ca.example:443/x",
            "https://ca.example/acme/order/1?a=b#c",
            "HTTPS://CA.Example/order",
            "https://ca.example:/order",
            "https://ca.example",
        ] {
            assert!(Origin::same(dir, same), "{same}");
        }
        for other in [
            "http://ca.example/dir",
            "http://ca.example:443/dir",
            "https://evil.example/dir",
            "https://ca.example:8443/dir",
            "https://ca.example./dir",
            "https://sub.ca.example/dir",
            "https://ca.example@evil.example/dir",
            "https://ca.example:443@evil.example/dir",
            "https://user:pw@ca.example/dir",
            "https://ca.example:65536/dir",
            "https://ca.example:+443/dir",
            "https://ca.example:44x/dir",
            "ftp://ca.example/dir",
            "//ca.example/dir",
            "/dir",
            "ca.example",
            "",
        ] {
            assert!(!Origin::same(dir, other), "{other}");
        }
        // IP literals, as Pebble's directory in the tests.
        assert!(Origin::same(
            "https://127.0.0.1:14000/dir",
            "https://127.0.0.1:14000/my-order/x"
        ));
        assert!(!Origin::same(
            "https://127.0.0.1:14000/dir",
            "https://127.0.0.1:1/my-order/x"
        ));
        assert!(Origin::same(
            "https://[::1]:14000/dir",
            "https://[::1]:14000/o"
        ));
        assert!(!Origin::same("https://[::1]:14000/dir", "https://[::1]/o"));
        // Two unreadable URLs are not one origin.
        assert!(!Origin::same("nonsense", "nonsense"));
        for cut in 0..dir.len() {
            let _ = Origin::of(&dir[..cut]);
        }
    }

    #[test]
    fn stored_accounts_must_lead_to_the_directory_origin() {
        let dir = "https://ca.example/dir";
        // What instant-acme 0.8 stores: `directory` and no `urls`.
        let ours = r#"{"id":"https://ca.example/acct/1","key_pkcs8":"AA","directory":"https://ca.example/dir"}"#;
        assert!(account_on_origin(ours, dir));
        let moved = ours.replace(
            "\"directory\":\"https://ca.example/dir",
            "\"directory\":\"https://evil.example/dir",
        );
        assert!(!account_on_origin(&moved, dir));
        // Credentials of older versions: the directory's URLs themselves.
        let old = r#"{"id":"i","key_pkcs8":"AA","urls":{"newNonce":"https://ca.example/n","newAccount":"https://ca.example/a","newOrder":"https://ca.example/o","meta":{}}}"#;
        assert!(account_on_origin(old, dir));
        assert!(!account_on_origin(
            &old.replace("ca.example/o", "evil.example/o"),
            dir
        ));
        assert!(!account_on_origin(r#"{"id":"i","key_pkcs8":"AA"}"#, dir));
        assert!(!account_on_origin("not json", dir));
    }
}
