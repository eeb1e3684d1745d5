//! The fleet-wide cap on issuances (seed §8.1, issue 13): at most `enroll.max_inflight_orders`
//! issuances run at once in a replica, at most `enroll.max_queued_orders` more wait for a turn,
//! and one beyond both is refused at once (the device gets 503 + Retry-After).
//!
//! The cap is per replica: with R replicas the fleet runs at most R × `max_inflight_orders`
//! issuances. A replica-wide count needs no Redis round trip and frees itself when a replica
//! dies; the per-account CA back-off (shared through Redis) covers what the CA itself limits.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The running and waiting places of one replica. Cheap to share (`Arc` inside).
#[derive(Clone, Debug)]
pub struct IssuanceSlots {
    /// Running plus waiting issuances.
    admitted: Arc<Semaphore>,
    /// Running issuances.
    running: Arc<Semaphore>,
    max_inflight: usize,
    max_queued: usize,
}

/// An issuance admitted: it runs, or waits in the bounded queue for its turn ([`Admitted::run_within`]).
/// Dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted {
    _place: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
}

/// An issuance running; dropping it lets the next waiting one run.
#[derive(Debug)]
pub struct Running {
    _place: OwnedSemaphorePermit,
    _turn: OwnedSemaphorePermit,
}

impl IssuanceSlots {
    /// `max_inflight` running (at least 1) and `max_queued` waiting.
    pub fn new(max_inflight: usize, max_queued: usize) -> Self {
        let max_inflight = max_inflight.clamp(1, Semaphore::MAX_PERMITS / 2);
        let max_queued = max_queued.min(Semaphore::MAX_PERMITS / 2);
        Self {
            admitted: Arc::new(Semaphore::new(max_inflight + max_queued)),
            running: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            max_queued,
        }
    }

    /// A place for one more issuance, or `None` when `max_inflight` run and `max_queued` wait.
    pub fn try_admit(&self) -> Option<Admitted> {
        let place = Arc::clone(&self.admitted).try_acquire_owned().ok()?;
        Some(Admitted {
            _place: place,
            running: Arc::clone(&self.running),
        })
    }

    /// `enroll.max_inflight_orders`.
    pub fn max_inflight(&self) -> usize {
        self.max_inflight
    }

    /// `enroll.max_queued_orders`.
    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// Issuances admitted now (running and waiting).
    pub fn admitted(&self) -> usize {
        self.max_inflight + self.max_queued - self.admitted.available_permits()
    }
}

impl Admitted {
    /// Waits for a turn to run, at most `wait`; `None` if none came in time (the place is
    /// given back).
    pub async fn run_within(self, wait: Duration) -> Option<Running> {
        let turn = tokio::time::timeout(wait, Arc::clone(&self.running).acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(Running {
            _place: self._place,
            _turn: turn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_the_cap_runs_and_the_queue_is_bounded() {
        let slots = IssuanceSlots::new(2, 1);
        let long = Duration::from_secs(5);
        let a = slots.try_admit().expect("1st").run_within(long).await;
        let b = slots.try_admit().expect("2nd").run_within(long).await;
        assert!(a.is_some() && b.is_some());
        // The third is admitted but waits: both turns are taken.
        let queued = slots.try_admit().expect("3rd waits in the queue");
        assert_eq!(slots.admitted(), 3);
        // Cap and queue are full: the fourth is refused at once.
        assert!(slots.try_admit().is_none());
        let waiting = tokio::spawn(queued.run_within(long));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no turn while two run");
        // One ends: the waiting one runs, and a place is free again.
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("its turn came")
            .expect("task");
        assert!(c.is_some());
        assert_eq!(slots.admitted(), 2);
        let d = slots.try_admit().expect("a free place");
        assert!(slots.try_admit().is_none());
        drop((b, c, d));
        assert_eq!(slots.admitted(), 0);
    }

    #[tokio::test]
    async fn a_wait_past_its_deadline_gives_the_place_back() {
        let slots = IssuanceSlots::new(1, 1);
        let _running = slots
            .try_admit()
            .expect("1st")
            .run_within(Duration::from_secs(1))
            .await
            .expect("runs");
        let queued = slots.try_admit().expect("2nd waits");
        assert!(slots.try_admit().is_none());
        assert!(queued.run_within(Duration::from_millis(50)).await.is_none());
        assert_eq!(slots.admitted(), 1);
        assert!(slots.try_admit().is_some());
    }

    #[test]
    fn the_cap_is_at_least_one() {
        let slots = IssuanceSlots::new(0, 0);
        assert_eq!(slots.max_inflight(), 1);
        assert!(slots.try_admit().is_some());
    }
}
