//! DNS hygiene (issue 13): every DNS-01 TXT record we write is in a Redis ledger until its
//! removal is confirmed, and a sweeper in every replica removes the ones left behind.
//!
//! [`LedgeredDns`] is the one way records are published and removed: it notes each record in
//! `<prefix>:dns:{ledger}` ([`crate::ra::store`]) BEFORE the UPDATE that adds it (if Redis cannot take
//! the note, nothing is published: a record missing from the ledger could stay forever), and
//! drops the note only after an UPDATE that deletes it was answered with a verified success. A
//! failed or forged answer (an unsigned REFUSED or BADTIME, a timeout) therefore leaves the note
//! in place. Each note is due at publish time + `acme.order_timeout_s` + [`GRACE`]: by then the
//! issuance that needed the record has ended or been abandoned.
//!
//! [`sweep`] runs in every replica every `dns.sweep_interval_s`: it takes due notes, claims each
//! atomically (only one replica works on a note; a replica that dies holding one only delays it),
//! deletes exactly that RR (RFC 2136 §2.5.4) and drops the note; on failure the note comes due
//! again after `dns.sweep_interval_s` × 2^(failures − 1), at most [`MAX_BACKOFF`]. This also
//! cleans up after a crash between publish and cleanup, and after a failed removal.
//!
//! A record that is re-published while due (a retry resuming the same order) keeps the later of
//! the two due times.
//!
//! **An add that was not confirmed is not a failed add.** Over UDP, an UPDATE that timed out (a
//! frozen or slow primary) may still be applied later — after the delete that we sent and saw
//! confirmed (seen in the chaos test: BIND applied the delete, then the stale add). So a record
//! whose add was ever left unconfirmed keeps its note when its delete succeeds, due again one
//! `hold` later, and the sweeper deletes it once more then.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::ra::dns::batch::DnsBatcher;
use crate::ra::dns::update::{DnsError, DnsUpdater, TxtRecord};
use crate::ra::store::{Store, StoreError};
use crate::support::clock::now_unix;

/// Time after `acme.order_timeout_s` before a note is due: the abandoned issuance's own removal
/// goes first.
pub const GRACE: Duration = Duration::from_secs(10);
/// Longest wait between two sweeper attempts at one record.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Most notes one sweep takes.
const SWEEP_BATCH: usize = 100;

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The record could not be noted in Redis; nothing was sent (transient).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The UPDATE failed; the note stays until a removal is confirmed.
    #[error(transparent)]
    Dns(#[from] DnsError),
}

impl From<LedgerError> for crate::ra::acme::problem::IssueError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Store(e) => Self::Store(e),
            LedgerError::Dns(e) => Self::Dns(e),
        }
    }
}

/// The ledger member of a record: `<name> <value>` (names hold no space).
pub fn member(r: &TxtRecord) -> String {
    format!("{} {}", r.name, r.value)
}

/// The record of a ledger member; `None` for one that is not ours.
pub fn record(member: &str) -> Option<TxtRecord> {
    let (name, value) = member.split_once(' ')?;
    (!name.is_empty() && !value.is_empty()).then(|| TxtRecord::new(name, value))
}

/// Publishes and removes TXT records through a [`DnsBatcher`], keeping the ledger. Cheap to
/// clone.
#[derive(Clone)]
pub struct LedgeredDns {
    batcher: DnsBatcher,
    store: Store,
    hold: Duration,
    /// Members whose add UPDATE failed or timed out in this process: a copy may still land.
    unconfirmed: Arc<Mutex<HashSet<String>>>,
}

impl LedgeredDns {
    /// Notes are due `hold` after the publish (`acme.order_timeout_s` + [`GRACE`]).
    pub fn new(batcher: DnsBatcher, store: Store, hold: Duration) -> Self {
        Self {
            batcher,
            store,
            hold,
            unconfirmed: Arc::default(),
        }
    }

    fn due(&self) -> i64 {
        now_unix().saturating_add(i64::try_from(self.hold.as_secs()).unwrap_or(0))
    }

    fn unconfirmed(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A poisoned set is still a set of names: keep using it.
        self.unconfirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes the records, then adds them. Without the note nothing is sent.
    pub async fn publish(&self, records: &[TxtRecord]) -> Result<(), LedgerError> {
        let members: Vec<String> = records.iter().map(member).collect();
        self.store.note_dns(&members, self.due()).await?;
        let sent = self.batcher.publish(records).await;
        if sent.is_err() {
            self.unconfirmed().extend(members);
        }
        Ok(sent?)
    }

    /// Deletes the records; once the primary confirms, drops their notes. On failure the
    /// notes stay, for the sweeper.
    pub async fn remove(&self, records: &[TxtRecord]) -> Result<(), DnsError> {
        self.batcher.remove(records).await?;
        let (members, late): (Vec<String>, Vec<String>) = {
            let mut unconfirmed = self.unconfirmed();
            records
                .iter()
                .map(member)
                .partition(|m| !unconfirmed.remove(m))
        };
        if !late.is_empty() {
            // A stale copy of their add may still arrive: the sweeper deletes them again later.
            info!(
                records = late.len(),
                "DNS-01 records whose add went unconfirmed stay in the ledger for a second removal"
            );
            if let Err(e) = self.store.note_dns(&late, self.due()).await {
                warn!(error = %e, "could not push back the ledger notes of unconfirmed records");
            }
        }
        if members.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.forget_dns(&members).await {
            // The sweeper will delete them again, which is harmless.
            warn!(error = %e, records = members.len(), "removed DNS-01 records but could not drop their ledger notes");
        }
        Ok(())
    }
}

/// One sweep: removes the due records this replica claims. Returns (removed, failed).
pub async fn sweep_once(
    dns: &DnsUpdater,
    store: &Store,
    retry_base: Duration,
    metrics: Option<&Metrics>,
) -> Result<(usize, usize), StoreError> {
    let moved = store.migrate_old_dns(SWEEP_BATCH).await?;
    if moved > 0 {
        info!(
            moved,
            "moved DNS ledger notes of an earlier version into the current keys"
        );
    }
    let now = now_unix();
    let due = store.due_dns(now, SWEEP_BATCH).await?;
    let (mut removed, mut failed) = (0, 0);
    // While we work on a note, no other replica does: until our retry time would be.
    let lease = now
        .saturating_add(i64::try_from(retry_base.as_secs().max(1)).unwrap_or(1))
        .saturating_add(i64::try_from(dns.timeout().as_secs() + 1).unwrap_or(1));
    for m in due {
        if !store.claim_dns(&m, now, lease).await? {
            continue;
        }
        let Some(r) = record(&m) else {
            warn!(
                member = m.chars().take(120).collect::<String>(),
                "dropping a DNS ledger note that is not a record"
            );
            store.forget_dns(std::slice::from_ref(&m)).await?;
            continue;
        };
        match dns.remove(std::slice::from_ref(&r)).await {
            Ok(()) => {
                store.forget_dns(std::slice::from_ref(&m)).await?;
                removed += 1;
                if let Some(mx) = metrics {
                    mx.dns_swept.inc();
                }
                info!(name = %r.name, "swept a leftover DNS-01 record");
            }
            Err(e) => {
                failed += 1;
                if let Some(mx) = metrics {
                    mx.dns_sweep_failures.inc();
                }
                let again = store
                    .retry_dns(&m, now_unix(), retry_base.as_secs(), MAX_BACKOFF.as_secs())
                    .await?;
                warn!(name = %r.name, error = %e, retry_in_s = again, "could not sweep a leftover DNS-01 record");
            }
        }
    }
    Ok((removed, failed))
}

/// The sweeper of one replica: [`sweep_once`] every `interval`, for ever.
pub async fn sweep(dns: Arc<DnsUpdater>, store: Store, interval: Duration, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_once(&dns, &store, interval, Some(&metrics)).await {
            warn!(error = %e, "DNS ledger sweep skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip() {
        let r = TxtRecord::new("_acme-challenge.sn-1.iot.example.test", "abc-DEF_123");
        assert_eq!(
            member(&r),
            "_acme-challenge.sn-1.iot.example.test abc-DEF_123"
        );
        assert_eq!(record(&member(&r)), Some(r));
        assert_eq!(record("no-space"), None);
        assert_eq!(record(" v"), None);
        assert_eq!(record("n "), None);
    }
}
