//! Pre-authorisation of the parent domain (seed step 1): `newAuthz` (RFC 8555 §7.4.1) with
//! `subdomainAuthAllowed` (RFC 9444 §4.2) and one DNS-01, then device orders that name the
//! parent as `ancestorDomain` (RFC 9444 §4.3) and come back ready with no challenge.
//!
//! - The CA's directory decides: pre-authorisation is used only when it has `newAuthz` and
//!   announces `meta.subdomainAuthAllowed` (RFC 9444 §4.4).
//! - The authorisation URL and expiry are kept in Redis for all replicas. Shortly before expiry
//!   (`acme.preauth_renew_margin_s`) one replica, holding a Redis lock, authorises again;
//!   the others wait for its result. A stored authorisation whose URL is not on the ACME
//!   directory's origin is not ours: it is logged, deleted and the parent authorised afresh.
//! - A CA that refuses `subdomainAuthAllowed` or `ancestorDomain` (or ignores the former) makes
//!   this process fall back to per-name DNS-01 for good: logged once, counted in
//!   `estuary_acme_preauth_fallbacks_total{reason}`.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_proto::names::DeviceName;
use estuary_proto::time::parse_rfc3339;
use instant_acme::{Account, Order, OrderStatus};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::metrics::{FallbackReason, Metrics, OrderResult};
use crate::ra::acme::client::{Acme, Published};
use crate::ra::acme::jws::{dns01_value, DirectoryExt, JwsClient};
use crate::ra::acme::problem::{from_acme, IssueError, ProblemType};
use crate::ra::dns::update::TxtRecord;
use crate::ra::store::{CsrKey, Preauthorization, Store};
use crate::support::clock::now_unix;

/// Either fall back (the CA does not do RFC 9444) or a real failure.
enum Step {
    Fallback(FallbackReason, String),
    Failed(IssueError),
}

impl From<IssueError> for Step {
    fn from(e: IssueError) -> Self {
        Step::Failed(e)
    }
}

/// Problems by which a CA says it will not do what RFC 9444 asks.
fn is_refusal(e: &IssueError) -> bool {
    matches!(
        e,
        IssueError::CaRejected {
            problem: ProblemType::RejectedIdentifier,
            ..
        }
    ) || matches!(
        e,
        IssueError::CaRejected { problem: ProblemType::Other(p), .. }
            if p == "malformed" || p == "unsupportedIdentifier"
    )
}

impl Acme {
    /// Lets the engine's metrics count pre-authorisations and fall-backs.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn fall_back(&self, reason: FallbackReason, why: &str) {
        let _ = self.preauth.fallback.set(reason);
        if !self.preauth.logged.swap(true, Ordering::SeqCst) {
            warn!(
                reason = ?reason,
                detail = why,
                "the ACME CA does not offer pre-authorisation of the parent domain (RFC 9444); \
                 using one DNS-01 per device name"
            );
            if let Some(m) = self.metrics.get() {
                m.preauth_fallback(reason);
            }
        }
    }

    /// Why pre-authorisation is not used, once decided.
    pub fn preauth_fallback(&self) -> Option<FallbackReason> {
        self.preauth.fallback.get().copied()
    }

    async fn directory_ext(&self) -> Result<&DirectoryExt, IssueError> {
        self.preauth
            .directory
            .get_or_try_init(|| async {
                let http = self.http()?;
                DirectoryExt::from_json(&http.get_json(&self.cfg.directory_url).await?)
            })
            .await
    }

    async fn jws(
        &self,
        account: &Account,
        dir: &DirectoryExt,
    ) -> Result<&Arc<JwsClient>, IssueError> {
        self.preauth
            .jws
            .get_or_try_init(|| async {
                let key = self.account_key.get().ok_or_else(|| {
                    IssueError::CaProtocol("the account key is not loaded".into())
                })?;
                let http = self.http()?;
                Ok(Arc::new(JwsClient::new(
                    http,
                    key,
                    account.id().to_string(),
                    dir.new_nonce.clone(),
                )?))
            })
            .await
    }

    /// Places a device order through the pre-authorised parent, when the CA allows it.
    /// `Ok(None)`: use an ordinary order (per-name DNS-01).
    pub(crate) async fn preauthorized_order(
        &self,
        account: &Account,
        key: &CsrKey,
        name: &DeviceName,
        profile: Option<&str>,
    ) -> Result<Option<Order>, IssueError> {
        if self.preauth.fallback.get().is_some() {
            return Ok(None);
        }
        if !self.cfg.preauthorize {
            self.fall_back(FallbackReason::disabled, "acme.preauthorize = false");
            return Ok(None);
        }
        if self.cfg.tls_root_file.is_none() {
            // Our JWS client trusts only the configured root; web PKI roots are not bundled.
            self.fall_back(
                FallbackReason::disabled,
                "pre-authorisation needs acme.tls_root_file (the CA's TLS root)",
            );
            return Ok(None);
        }
        let dir = self.directory_ext().await?.clone();
        let Some(new_authz) = dir.new_authz.clone() else {
            self.fall_back(
                FallbackReason::no_new_authz,
                "the directory has no newAuthz",
            );
            return Ok(None);
        };
        if !dir.subdomain_auth_allowed {
            self.fall_back(
                FallbackReason::no_subdomain_auth,
                "the directory does not announce meta.subdomainAuthAllowed",
            );
            return Ok(None);
        }
        let jws = Arc::clone(self.jws(account, &dir).await?);
        let parent = name.parent();
        let parent = parent.as_str();
        match self
            .order_below(account, &jws, &dir, &new_authz, key, name, parent, profile)
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(Step::Fallback(reason, why)) => {
                self.fall_back(reason, &why);
                Ok(None)
            }
            Err(Step::Failed(e)) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn order_below(
        &self,
        account: &Account,
        jws: &JwsClient,
        dir: &DirectoryExt,
        new_authz: &str,
        key: &CsrKey,
        name: &DeviceName,
        parent: &str,
        profile: Option<&str>,
    ) -> Result<Order, Step> {
        self.parent_authorization(account, jws, new_authz, parent)
            .await?;
        let mut payload = json!({
            "identifiers": [{"type": "dns", "value": name.as_str(), "ancestorDomain": parent}]
        });
        if let Some(p) = profile {
            // draft-ietf-acme-profiles: the newOrder member `profile`.
            payload["profile"] = json!(p);
        }
        let rsp = match jws.post(&dir.new_order, Some(&payload)).await {
            Ok(r) => r,
            Err(e) if is_refusal(&e) => {
                return Err(Step::Fallback(
                    FallbackReason::ancestor_refused,
                    format!("newOrder with ancestorDomain refused: {e}"),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let url = rsp
            .location
            .clone()
            .ok_or_else(|| IssueError::CaProtocol("newOrder answer has no Location".into()))?;
        let body = rsp.json()?;
        body.get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| IssueError::CaProtocol("newOrder answer has no status".into()))?;
        info!(order_url = %url, device = %name.as_str(), ancestor = parent, "placed ACME order under the pre-authorised parent");
        let keep = Duration::from_secs(self.cfg.order_timeout_s.saturating_mul(4).max(60));
        self.store
            .set_order_url(key, &url, keep)
            .await
            .map_err(IssueError::from)?;
        let mut order = account
            .order(url.clone())
            .await
            .map_err(|e| Step::Failed(from_acme(e)))?;
        if order.state().status == OrderStatus::Pending {
            // The CA did not apply the parent's authorisation (expired or revoked): forget it,
            // so that the next order authorises the parent again; this one does its own DNS-01.
            warn!(order_url = %url, "order under the pre-authorised parent is pending; re-authorising the parent next time");
            let _ = self
                .store
                .clear_preauth(&self.cfg.directory_url, parent)
                .await;
        }
        Ok(order)
    }

    /// A valid pre-authorisation of `parent`, from Redis or made now (one replica at a time).
    async fn parent_authorization(
        &self,
        account: &Account,
        jws: &JwsClient,
        new_authz: &str,
        parent: &str,
    ) -> Result<Preauthorization, Step> {
        let dir = &self.cfg.directory_url;
        let margin = i64::try_from(self.cfg.preauth_renew_margin_s).unwrap_or(i64::MAX);
        let deadline = Instant::now() + Duration::from_secs(self.cfg.order_timeout_s);
        loop {
            if let Some(p) = self
                .store
                .preauth(dir, parent)
                .await
                .map_err(IssueError::from)?
            {
                if !self.on_ca_origin(&p.url) {
                    warn!(
                        parent,
                        "the stored pre-authorisation is not on the ACME directory's origin; \
                         deleting it and authorising the parent again"
                    );
                    self.store
                        .clear_preauth(dir, parent)
                        .await
                        .map_err(IssueError::from)?;
                } else if p.expires.saturating_sub(margin) > now_unix() {
                    return Ok(p);
                }
            }
            if self.preauth.fallback.get().is_some() {
                return Err(Step::Fallback(
                    FallbackReason::subdomain_refused,
                    "decided by another request".into(),
                ));
            }
            let token = crate::support::token::random_token();
            let ttl = Duration::from_secs(self.cfg.order_timeout_s + 10);
            if self
                .store
                .try_lock_preauth(dir, parent, &token, ttl)
                .await
                .map_err(IssueError::from)?
            {
                let lock = PreauthLock {
                    store: self.store.clone(),
                    dir: dir.clone(),
                    parent: parent.to_string(),
                    token,
                    held: true,
                };
                let made = self.preauthorize(account, jws, new_authz, parent).await;
                if let Some(m) = self.metrics.get() {
                    m.preauthorization(if made.is_ok() {
                        OrderResult::valid
                    } else {
                        OrderResult::failed
                    });
                }
                if let Ok(p) = &made {
                    if let Err(e) = self.store.set_preauth(dir, parent, p).await {
                        lock.release().await;
                        return Err(IssueError::from(e).into());
                    }
                }
                lock.release().await;
                return made;
            }
            // Another replica (or request) is authorising the parent: wait for its result.
            if Instant::now() > deadline {
                return Err(IssueError::OrderTimeout {
                    order_url: format!("pre-authorisation of {parent}"),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// newAuthz with subdomainAuthAllowed, one DNS-01, wait until valid.
    async fn preauthorize(
        &self,
        account: &Account,
        jws: &JwsClient,
        new_authz: &str,
        parent: &str,
    ) -> Result<Preauthorization, Step> {
        let payload = json!({
            "identifier": {"type": "dns", "value": parent, "subdomainAuthAllowed": true}
        });
        let rsp = match jws.post(new_authz, Some(&payload)).await {
            Ok(r) => r,
            Err(e) if is_refusal(&e) => {
                return Err(Step::Fallback(
                    FallbackReason::subdomain_refused,
                    format!("newAuthz with subdomainAuthAllowed refused: {e}"),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let url = rsp
            .location
            .clone()
            .ok_or_else(|| IssueError::CaProtocol("newAuthz answer has no Location".into()))?;
        let authz = rsp.json()?;
        if authz.get("subdomainAuthAllowed").and_then(Value::as_bool) != Some(true) {
            return Err(Step::Fallback(
                FallbackReason::subdomain_refused,
                "the CA's authorisation does not carry subdomainAuthAllowed".into(),
            ));
        }
        if let Some(p) = valid_until(&url, &authz)? {
            return Ok(p);
        }
        let (chall_url, token) = dns01_challenge(&authz)
            .ok_or_else(|| IssueError::NoDnsChallenge(parent.to_string()))?;
        let record = TxtRecord::new(
            format!("_acme-challenge.{parent}"),
            dns01_value(&token, account.key_thumbprint()),
        );
        // Removed whatever the outcome, also when the issuance is abandoned (dropped) first.
        let published = Published::new(self.dns(), vec![record]);
        if let Err(e) = self.dns().publish(published.records()).await {
            published.remove(parent);
            return Err(IssueError::from(e).into());
        }
        let outcome = self.validate(jws, &url, &chall_url, parent).await;
        published.remove(parent);
        let p = outcome?;
        info!(parent, authz_url = %url, expires = p.expires, "pre-authorised the parent domain (RFC 9444)");
        Ok(p)
    }

    async fn validate(
        &self,
        jws: &JwsClient,
        authz_url: &str,
        chall_url: &str,
        parent: &str,
    ) -> Result<Preauthorization, IssueError> {
        jws.post(chall_url, Some(&json!({}))).await?;
        let deadline = Instant::now() + Duration::from_secs(self.cfg.order_timeout_s);
        let mut delay = Duration::from_millis(self.cfg.poll_initial_ms.max(10));
        loop {
            tokio::time::sleep(delay).await;
            let authz = jws.post(authz_url, None).await?.json()?;
            if let Some(p) = valid_until(authz_url, &authz)? {
                return Ok(p);
            }
            match authz.get("status").and_then(Value::as_str) {
                Some("pending") => {}
                Some(other) => {
                    let detail = authz
                        .pointer("/challenges/0/error/detail")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let kind = crate::ra::acme::problem::ProblemType::parse(
                        authz
                            .pointer("/challenges/0/error/type")
                            .and_then(Value::as_str),
                    );
                    return Err(IssueError::ChallengeFailed {
                        name: parent.to_string(),
                        detail: format!("authorization is {other}: {detail}"),
                        unreachable: matches!(
                            kind,
                            crate::ra::acme::problem::ProblemType::Dns
                                | crate::ra::acme::problem::ProblemType::Connection
                        ),
                    });
                }
                None => return Err(IssueError::CaProtocol("authorization has no status".into())),
            }
            if Instant::now() > deadline {
                return Err(IssueError::OrderTimeout {
                    order_url: authz_url.to_string(),
                });
            }
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }
}

/// The lock that lets one replica (re)authorise a parent, while held: released by
/// [`PreauthLock::release`], or, if the issuance holding it is abandoned (its deadline) or
/// panics first, by a task spawned on drop, so that other replicas need not wait for its expiry.
struct PreauthLock {
    store: Store,
    dir: String,
    parent: String,
    token: String,
    held: bool,
}

impl PreauthLock {
    async fn release(mut self) {
        let _ = self
            .store
            .release_preauth_lock(&self.dir, &self.parent, &self.token)
            .await;
        self.held = false;
    }
}

impl Drop for PreauthLock {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let (store, dir, parent, token) = (
            self.store.clone(),
            std::mem::take(&mut self.dir),
            std::mem::take(&mut self.parent),
            std::mem::take(&mut self.token),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.release_preauth_lock(&dir, &parent, &token).await;
            });
        }
    }
}

/// `Some` when the authorisation is valid (with its expiry).
fn valid_until(url: &str, authz: &Value) -> Result<Option<Preauthorization>, IssueError> {
    if authz.get("status").and_then(Value::as_str) != Some("valid") {
        return Ok(None);
    }
    let expires = authz
        .get("expires")
        .and_then(Value::as_str)
        .ok_or_else(|| IssueError::CaProtocol("valid authorization has no expires".into()))?;
    let expires = parse_rfc3339(expires).ok_or_else(|| {
        IssueError::CaProtocol(format!("authorization expires {expires:?} is not RFC 3339"))
    })?;
    Ok(Some(Preauthorization {
        url: url.to_string(),
        expires,
    }))
}

/// The dns-01 challenge: (url, token).
fn dns01_challenge(authz: &Value) -> Option<(String, String)> {
    authz
        .get("challenges")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("dns-01"))
        .and_then(|c| {
            Some((
                c.get("url")?.as_str()?.to_string(),
                c.get("token")?.as_str()?.to_string(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_fields() {
        let a = json!({
            "status": "valid", "expires": "2030-01-01T00:00:00Z",
            "identifier": {"type": "dns", "value": "iot.example.test"},
            "subdomainAuthAllowed": true,
            "challenges": [{"type": "http-01", "url": "h", "token": "t1"},
                           {"type": "dns-01", "url": "d", "token": "t2"}]
        });
        assert_eq!(
            valid_until("u", &a).unwrap(),
            Some(Preauthorization {
                url: "u".into(),
                expires: 1_893_456_000
            })
        );
        assert_eq!(dns01_challenge(&a), Some(("d".into(), "t2".into())));
        let pending = json!({"status": "pending", "challenges": []});
        assert_eq!(valid_until("u", &pending).unwrap(), None);
        assert_eq!(dns01_challenge(&pending), None);
        let no_expiry = json!({"status": "valid"});
        assert!(matches!(
            valid_until("u", &no_expiry),
            Err(IssueError::CaProtocol(_))
        ));
    }
}
