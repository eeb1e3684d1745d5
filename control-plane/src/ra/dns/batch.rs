//! Coalescing of DNS-01 records from concurrent ACME orders into few RFC 2136 UPDATE messages.
//!
//! One UPDATE message can carry many RRs, additions and deletions together (RFC 2136 §2.5,
//! §3.4.2). [`DnsBatcher`] runs ONE worker that sends one message at a time:
//!
//! - **Additions** hold up an enrolment (the CA cannot validate before the record is there). The
//!   worker sends them at once when no message went out during the last `window`, so a lone
//!   enrolment waits for nothing; otherwise it collects every request that arrives until
//!   `window` after the previous message (or until `max_records` records are waiting) and sends
//!   them all in ONE message. Under load a message goes out at most every `window` and carries
//!   whatever arrived meanwhile: the batches grow with the load, the message rate does not.
//! - **Deletions** hold up nobody (the device already has its answer, and the DNS ledger keeps
//!   every record until it is confirmed removed, see [`crate::ra::dns::ledger`]). They ride in
//!   the next message that carries additions; when none comes they go alone at most
//!   [`delete_hold`]`(window)` after the first one waiting (ten windows, at most one second).
//!
//! Every waiter gets the outcome of the message that carried its records. A message never
//! holds one record both to add and to delete: a request that would (an order adding a record
//! whose removal by an earlier attempt still waits, say) closes the message before it and goes
//! in the next one, so the changes reach the zone in the order the worker took them. The two
//! queues do not keep an order between them: when a deletion and an addition of one record
//! are both waiting, the deletion is taken first (the addition of a retried order must end
//! up last). In a message, deletions are written before additions.
//!
//! When a message carrying several requests fails permanently (REFUSED, a record outside the
//! zone, ...), the cause may be one request's names only: each request is then sent alone, so
//! that the others still succeed and each gets its own error. A transient failure (timeout,
//! network) is given to every waiter; the caller's retry sends the records again.
//!
//! The queues of additions and of deletions are bounded apart (`max_queue` requests each,
//! `acme.dns_batch_max_queue`): when the DNS primary falls behind, a request beyond it fails at
//! once with [`DnsError::QueueFull`], a transient error (the device hears 503 + Retry-After),
//! instead of memory growing without end.
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::ra::dns::update::{DnsError, DnsUpdater, TxtRecord, UpdateCounter};

/// Default collection window.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// Default largest number of records in one message.
pub const DEFAULT_MAX_RECORDS: usize = 100;

/// The longest a deletion waits for a message with additions to ride in: ten `window`s, at
/// most one second (a `window` of 0: none).
pub fn delete_hold(window: Duration) -> Duration {
    window.saturating_mul(10).min(Duration::from_secs(1))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Add,
    Delete,
}

struct Job {
    records: Vec<TxtRecord>,
    reply: oneshot::Sender<Result<(), DnsError>>,
}

/// Publishes and removes TXT records through a shared [`DnsUpdater`], coalescing concurrent
/// requests. Cheap to clone; the worker stops when the last clone is dropped, after sending
/// what it holds.
#[derive(Clone)]
pub struct DnsBatcher {
    add: mpsc::Sender<Job>,
    delete: mpsc::Sender<Job>,
    max_queue: usize,
    on_full: Option<UpdateCounter>,
}

impl DnsBatcher {
    /// Starts the worker on the current tokio runtime; additions and deletions each queue at
    /// most `max_queue` requests (at least 1).
    pub fn spawn(
        updater: Arc<DnsUpdater>,
        window: Duration,
        max_records: usize,
        max_queue: usize,
    ) -> Self {
        let max_queue = max_queue.max(1);
        let (add, add_rx) = mpsc::channel(max_queue);
        let (delete, delete_rx) = mpsc::channel(max_queue);
        let worker = Worker {
            updater,
            window,
            max_records: max_records.max(1),
            add_rx: Some(add_rx),
            delete_rx: Some(delete_rx),
            jobs: Vec::new(),
            next: std::collections::VecDeque::new(),
            records: 0,
            first_delete: None,
            last_sent: None,
        };
        tokio::spawn(worker.run());
        Self {
            add,
            delete,
            max_queue,
            on_full: None,
        }
    }
    /// Registers a callback run once per request refused because its queue was full, e.g. to
    /// increment `estuary_dns_queue_full_total`.
    pub fn with_full_counter(mut self, counter: UpdateCounter) -> Self {
        self.on_full = Some(counter);
        self
    }

    /// Adds the records (RFC 2136 §2.5.1), possibly in one message with other orders' records.
    pub async fn publish(&self, records: &[TxtRecord]) -> Result<(), DnsError> {
        self.submit(&self.add, records).await
    }

    /// Deletes exactly these records (RFC 2136 §2.5.4), possibly together with others.
    pub async fn remove(&self, records: &[TxtRecord]) -> Result<(), DnsError> {
        self.submit(&self.delete, records).await
    }

    async fn submit(
        &self,
        queue: &mpsc::Sender<Job>,
        records: &[TxtRecord],
    ) -> Result<(), DnsError> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            records: records.to_vec(),
            reply,
        };
        let gone = || DnsError::Transport {
            server: ([127, 0, 0, 1], 0).into(),
            source: io::Error::other("the DNS batcher stopped"),
        };
        queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                if let Some(count) = &self.on_full {
                    count();
                }
                DnsError::QueueFull {
                    limit: self.max_queue,
                }
            }
            mpsc::error::TrySendError::Closed(_) => gone(),
        })?;
        answer.await.map_err(|_| gone())?
    }
}

/// The one sender: the requests waiting, in the order they arrived.
struct Worker {
    updater: Arc<DnsUpdater>,
    window: Duration,
    max_records: usize,
    /// `None` once every sender of that kind is gone.
    add_rx: Option<mpsc::Receiver<Job>>,
    delete_rx: Option<mpsc::Receiver<Job>>,
    jobs: Vec<(Kind, Job)>,
    /// Requests that touch a record of `jobs` the other way (and any taken after them): they go
    /// in the next message,
    /// and nothing more is taken from the queues until then.
    next: std::collections::VecDeque<(Kind, Job)>,
    /// Records in `jobs`.
    records: usize,
    /// When the oldest waiting deletion arrived.
    first_delete: Option<Instant>,
    /// When the last message with additions went out (a deletion alone does not hold up the
    /// next additions).
    last_sent: Option<Instant>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            self.take_waiting();
            let now = Instant::now();
            match self.due(now) {
                Some(at) if at <= now => {
                    self.send_all().await;
                    continue;
                }
                _ => {}
            }
            if self.add_rx.is_none() && self.delete_rx.is_none() {
                // Every sender is gone: send what is left, then stop.
                while !self.jobs.is_empty() {
                    self.send_all().await;
                }
                return;
            }
            let due = self.due(now);
            let wait = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                job = recv(&mut self.add_rx) => self.arrived(Kind::Add, job),
                job = recv(&mut self.delete_rx) => self.arrived(Kind::Delete, job),
                () = wait => {}
            }
        }
    }

    /// When the waiting requests must go: additions at once unless a message with additions
    /// went out in the last `window` (then when it ends); deletions alone [`delete_hold`]
    /// after the first of them; anything when `max_records` are waiting. `None`: nothing waits.
    fn due(&self, now: Instant) -> Option<Instant> {
        if self.jobs.is_empty() {
            return None;
        }
        if self.records >= self.max_records || !self.next.is_empty() {
            return Some(now);
        }
        if self.jobs.iter().any(|(k, _)| *k == Kind::Add) {
            return Some(match self.last_sent {
                Some(t) if t + self.window > now => t + self.window,
                _ => now,
            });
        }
        Some(
            self.first_delete
                .map_or(now, |t| t + delete_hold(self.window)),
        )
    }

    /// Moves every request already queued into `jobs`, up to `max_records` or a conflict.
    fn take_waiting(&mut self) {
        while self.records < self.max_records && self.next.is_empty() {
            let mut got = false;
            // Deletions first: the two queues do not say which of a deletion and an addition
            // of one record came first, and the one that matters is a retry re-adding a record
            // whose earlier removal still waits (the addition must end up last). The other
            // order (an abandoned issuance's removal) then at worst leaves a record to the
            // sweeper, which has its note.
            for kind in [Kind::Delete, Kind::Add] {
                let rx = match kind {
                    Kind::Add => &mut self.add_rx,
                    Kind::Delete => &mut self.delete_rx,
                };
                let job = match rx.as_mut().map(mpsc::Receiver::try_recv) {
                    Some(Ok(j)) => Some(j),
                    Some(Err(mpsc::error::TryRecvError::Disconnected)) => {
                        *rx = None;
                        None
                    }
                    _ => None,
                };
                if let Some(j) = job {
                    self.push(kind, j);
                    got = true;
                }
            }
            if !got {
                return;
            }
        }
    }

    fn arrived(&mut self, kind: Kind, job: Option<Job>) {
        match job {
            Some(j) => self.push(kind, j),
            None => match kind {
                Kind::Add => self.add_rx = None,
                Kind::Delete => self.delete_rx = None,
            },
        }
    }

    fn push(&mut self, kind: Kind, job: Job) {
        if !self.next.is_empty() || conflicts(&self.jobs, kind, &job.records) {
            // take_waiting stops and the message goes first; nothing is dropped.
            self.next.push_back((kind, job));
            return;
        }
        if kind == Kind::Delete && self.first_delete.is_none() {
            self.first_delete = Some(Instant::now());
        }
        self.records += job.records.len();
        self.jobs.push((kind, job));
    }

    async fn send_all(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.jobs);
        self.records = 0;
        self.first_delete = None;
        if jobs.iter().any(|(k, _)| *k == Kind::Add) {
            self.last_sent = Some(Instant::now());
        }
        send(&self.updater, jobs).await;
        for (kind, job) in std::mem::take(&mut self.next) {
            self.push(kind, job);
        }
    }
}

/// The next request from `rx`; never ready once `rx` is gone.
async fn recv(rx: &mut Option<mpsc::Receiver<Job>>) -> Option<Job> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether `records` asked for as `kind` touch a record that `jobs` asks for the other way.
fn conflicts(jobs: &[(Kind, Job)], kind: Kind, records: &[TxtRecord]) -> bool {
    jobs.iter()
        .filter(|(k, _)| *k != kind)
        .any(|(_, j)| j.records.iter().any(|r| records.contains(r)))
}

/// The records to add and to delete, each once (a batch holds no record both ways, see
/// [`conflicts`]).
fn actions(jobs: &[(Kind, Job)]) -> (Vec<TxtRecord>, Vec<TxtRecord>) {
    let (mut adds, mut deletes): (Vec<TxtRecord>, Vec<TxtRecord>) = (Vec::new(), Vec::new());
    for (kind, job) in jobs {
        let list = match kind {
            Kind::Add => &mut adds,
            Kind::Delete => &mut deletes,
        };
        for r in &job.records {
            if !list.contains(r) {
                list.push(r.clone());
            }
        }
    }
    (adds, deletes)
}

async fn send(updater: &DnsUpdater, jobs: Vec<(Kind, Job)>) {
    let (adds, deletes) = actions(&jobs);
    let result = updater.apply(&adds, &deletes).await;
    match result {
        Ok(()) => {
            for (_, j) in jobs {
                let _ = j.reply.send(Ok(()));
            }
        }
        Err(e) if e.is_permanent() && jobs.len() > 1 => {
            tracing::warn!(error = %e, requests = jobs.len(), "a coalesced DNS UPDATE failed; sending each request alone");
            for (kind, j) in jobs {
                let r = match kind {
                    Kind::Add => updater.publish(&j.records).await,
                    Kind::Delete => updater.remove(&j.records).await,
                };
                let _ = j.reply.send(r);
            }
        }
        Err(e) => {
            for (_, j) in jobs {
                let _ = j.reply.send(Err(copy_error(&e)));
            }
        }
    }
}

/// The same error for another waiter (an `io::Error` is not `Clone`: its kind and text are kept).
fn copy_error(e: &DnsError) -> DnsError {
    match e {
        DnsError::InvalidConfig { problems } => DnsError::InvalidConfig {
            problems: problems.clone(),
        },
        DnsError::OutsideZone { name, zone } => DnsError::OutsideZone {
            name: name.clone(),
            zone: zone.clone(),
        },
        DnsError::InvalidRecord { name, reason } => DnsError::InvalidRecord {
            name: name.clone(),
            reason,
        },
        DnsError::Refused { zone, names } => DnsError::Refused {
            zone: zone.clone(),
            names: names.clone(),
        },
        DnsError::NotAuth { zone } => DnsError::NotAuth { zone: zone.clone() },
        DnsError::BadSig { key_name } => DnsError::BadSig {
            key_name: key_name.clone(),
        },
        DnsError::BadKey {
            key_name,
            algorithm,
        } => DnsError::BadKey {
            key_name: key_name.clone(),
            algorithm: *algorithm,
        },
        DnsError::BadTime { key_name } => DnsError::BadTime {
            key_name: key_name.clone(),
        },
        DnsError::ServerFailure { rcode, names } => DnsError::ServerFailure {
            rcode: rcode.clone(),
            names: names.clone(),
        },
        DnsError::Unauthenticated { server, reason } => DnsError::Unauthenticated {
            server: *server,
            reason: reason.clone(),
        },
        DnsError::Protocol { server, reason } => DnsError::Protocol {
            server: *server,
            reason: reason.clone(),
        },
        DnsError::Timeout { server, after_ms } => DnsError::Timeout {
            server: *server,
            after_ms: *after_ms,
        },
        DnsError::Transport { server, source } => DnsError::Transport {
            server: *server,
            source: io::Error::new(source.kind(), source.to_string()),
        },
        DnsError::QueueFull { limit } => DnsError::QueueFull { limit: *limit },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dns::{DnsConfig, TsigAlgorithmName, TsigSecret};

    /// A DNS primary that takes every UPDATE and never answers: the worker stays on its first
    /// message while the test fills the queue.
    async fn silent_primary() -> (tokio::net::UdpSocket, Arc<DnsUpdater>) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let updater = DnsUpdater::new(DnsConfig {
            server: socket.local_addr().expect("addr"),
            zone: "example.test".into(),
            key_name: "k".into(),
            algorithm: TsigAlgorithmName::HmacSha256,
            secret: TsigSecret::from_bytes(vec![7; 32]),
            timeout_ms: 30_000,
            ttl: 60,
            sweep_interval_s: 30,
        })
        .expect("updater");
        (socket, Arc::new(updater))
    }

    fn record(i: usize) -> Vec<TxtRecord> {
        vec![TxtRecord::new(
            format!("_acme-challenge.sn-{i}.example.test"),
            "v",
        )]
    }

    fn job(records: Vec<TxtRecord>) -> Job {
        let (reply, _) = oneshot::channel();
        Job { records, reply }
    }

    #[test]
    fn a_record_asked_both_ways_never_shares_a_message() {
        let r = |i| record(i).remove(0);
        let jobs = vec![
            (Kind::Add, job(vec![r(1), r(2)])),
            (Kind::Delete, job(vec![r(3)])),
            (Kind::Add, job(vec![r(2), r(4)])),
        ];
        // Deleting 1 or 2, or adding 3, must wait for the next message; the rest may join.
        assert!(conflicts(&jobs, Kind::Delete, &[r(5), r(2)]));
        assert!(conflicts(&jobs, Kind::Add, &[r(3)]));
        assert!(!conflicts(&jobs, Kind::Add, &[r(1), r(5)]));
        assert!(!conflicts(&jobs, Kind::Delete, &[r(3), r(5)]));
        // Each record once per kind.
        let (adds, deletes) = actions(&jobs);
        assert_eq!(adds, vec![r(1), r(2), r(4)]);
        assert_eq!(deletes, vec![r(3)]);
    }

    #[test]
    fn deletions_wait_ten_windows_at_most_a_second() {
        assert_eq!(delete_hold(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            delete_hold(Duration::from_millis(20)),
            Duration::from_millis(200)
        );
        assert_eq!(delete_hold(DEFAULT_WINDOW), Duration::from_secs(1));
        assert_eq!(delete_hold(Duration::from_secs(5)), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn an_overfull_queue_is_a_transient_error_at_once() {
        let (_primary, updater) = silent_primary().await;
        let full = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&full);
        let batcher = DnsBatcher::spawn(updater, Duration::ZERO, 1, 2).with_full_counter(Arc::new(
            move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        ));
        // The first request is taken by the worker, which then waits on the silent primary.
        let mut pending = Vec::new();
        let b = batcher.clone();
        pending.push(tokio::spawn(async move { b.publish(&record(0)).await }));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Two more fill the queue.
        for i in 1..=2 {
            let b = batcher.clone();
            pending.push(tokio::spawn(async move { b.publish(&record(i)).await }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The next is refused at once, without waiting for the primary.
        let started = std::time::Instant::now();
        let e = batcher.publish(&record(3)).await.expect_err("queue full");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(e, DnsError::QueueFull { limit: 2 }), "{e:?}");
        assert!(!e.is_permanent());
        assert_eq!(full.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            e.to_string(),
            "too many DNS updates waiting (2); nothing was sent, retry later"
        );
        // The other worker's queue is its own: a removal is still accepted.
        let b = batcher.clone();
        let removal = tokio::spawn(async move { b.remove(&record(0)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!removal.is_finished(), "the removal waits for the primary");
        for p in pending {
            assert!(!p.is_finished(), "queued requests still wait");
            p.abort();
        }
        removal.abort();
    }
}
