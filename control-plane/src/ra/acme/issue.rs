//! One issuance, start to end: resume the CSR's stored order, or order under the pre-authorised
//! parent ([`super::preauth`]), or place a new order; retry transient failures with a fresh
//! order; all of it within `acme.order_timeout_s`.
use std::time::Duration;

use estuary_proto::names::DeviceName;
use instant_acme::OrderStatus;
use tracing::{info, warn};

use crate::ra::acme::client::{loggable, Acme};
use crate::ra::acme::problem::{IssueError, ProblemType};
use crate::ra::store::CsrKey;

impl Acme {
    /// Issues a certificate for the CSR: returns the PEM chain. Transient CA failures are
    /// retried with a fresh order, up to `acme.order_attempts` times. Everything, from the
    /// account to the certificate download, ends within `acme.order_timeout_s`
    /// ([`IssueError::Deadline`]); DNS-01 records published meanwhile are removed all the same
    /// and the stored order URL is kept, so that a retry resumes the order.
    pub async fn issue(
        &self,
        key: &CsrKey,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<String, IssueError> {
        let limit = Duration::from_secs(self.cfg.order_timeout_s);
        match tokio::time::timeout(limit, self.issue_attempts(key, csr_der, name)).await {
            // RFC 8555 §6.7: rateLimited, from any request of the issuance.
            Ok(Err(IssueError::CaRateLimited {
                detail,
                retry_after,
            })) => Err(IssueError::CaRateLimited {
                detail,
                retry_after: Some(self.back_off(retry_after).await),
            }),
            Ok(result) => result,
            Err(_) => {
                warn!(
                    csr = key.as_str(),
                    device = %name.as_str(),
                    after_s = limit.as_secs(),
                    "abandoning the issuance at acme.order_timeout_s; a stored order is kept for the retry"
                );
                Err(IssueError::Deadline { after: limit })
            }
        }
    }

    async fn issue_attempts(
        &self,
        key: &CsrKey,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<String, IssueError> {
        let mut attempt = 1;
        loop {
            match self.issue_once(key, csr_der, name).await {
                Err(e) if e.is_transient() && attempt < self.cfg.order_attempts => {
                    warn!(device = %name.as_str(), attempt, error = %e, "ACME attempt failed; retrying");
                    // A half-done order may be the cause: start afresh. A CA that did not
                    // answer says nothing about the order: resume it.
                    if !matches!(e, IssueError::CaNoAnswer(_)) {
                        let _ = self.store.clear_order_url(key).await;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn issue_once(
        &self,
        key: &CsrKey,
        csr_der: &[u8],
        name: &DeviceName,
    ) -> Result<String, IssueError> {
        // Also between attempts and after a wait for a turn: another replica may have been
        // told rateLimited meanwhile.
        if let Some(remaining) = self.ca_backoff().await? {
            return Err(IssueError::CaBackoff { remaining });
        }
        let account = self.account().await?;
        let resumed = match self.store.order_url(key).await? {
            Some(url) if !self.on_ca_origin(&url) => {
                warn!(
                    csr = key.as_str(),
                    device = %name.as_str(),
                    order_url = ?loggable(&url),
                    "the stored order URL is not on the ACME directory's origin; \
                     not fetching it, placing a new order"
                );
                let _ = self.store.clear_order_url(key).await;
                None
            }
            Some(url) => match account.order(url.clone()).await {
                Ok(mut o) => {
                    if o.state().status == OrderStatus::Invalid {
                        None
                    } else {
                        info!(order_url = %url, device = %name.as_str(), "resuming ACME order");
                        Some(o)
                    }
                }
                Err(e) => {
                    warn!(order_url = %url, error = %e, "cannot resume the stored order; placing a new one");
                    None
                }
            },
            None => None,
        };
        let mut via_preauth = false;
        let mut order = match resumed {
            Some(o) => o,
            None => {
                let profile = self.order_profile(&account)?;
                match self
                    .preauthorized_order(&account, key, name, profile)
                    .await?
                {
                    Some(o) => {
                        via_preauth = true;
                        o
                    }
                    None => self.new_order(&account, key, name, profile).await?,
                }
            }
        };
        let order_url = order.url().to_string();
        let mut result = self.drive(&mut order, csr_der, name).await;
        if via_preauth {
            if let Err(
                IssueError::ChallengeFailed { .. }
                | IssueError::CaRejected {
                    problem: ProblemType::OrderNotReady,
                    ..
                },
            ) = &result
            {
                // The parent's authorisation lapsed while the order was in flight; the retry
                // in `issue` finds it (nearly) expired and authorises the parent again, once
                // across replicas.
                warn!(order_url = %order_url, device = %name.as_str(), "order under the pre-authorised parent became invalid; retrying");
                result = Err(IssueError::CaUnavailable {
                    detail: "the order under the pre-authorised parent became invalid".into(),
                    retry_after: None,
                });
            }
        }
        (self.on_order)(result.is_ok());
        match &result {
            Ok(_) => {
                info!(order_url = %order_url, device = %name.as_str(), "ACME order valid");
                let _ = self.store.clear_order_url(key).await;
            }
            Err(e) => {
                warn!(order_url = %order_url, device = %name.as_str(), error = %e, "ACME order failed");
                if !e.is_transient() {
                    let _ = self.store.clear_order_url(key).await;
                }
            }
        }
        result
    }
}
