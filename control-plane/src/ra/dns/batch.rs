//! Coalescing of DNS-01 records from concurrent ACME orders into few RFC 2136 UPDATE messages.
//!
//! One UPDATE message can carry many RRs (RFC 2136 §2.5). [`DnsBatcher`] runs one worker per
//! action (add, delete). A worker sends at once when no message of its kind went out during
//! the last `window` (so a lone enrolment waits for nothing); otherwise it collects every
//! request that arrives until `window` after the previous message, or until `max_records`
//! records are waiting, and sends them all in ONE message. Every waiter gets the outcome of
//! the message that carried its records.
//!
//! When a message carrying several requests fails permanently (REFUSED, a record outside the
//! zone, ...), the cause may be one request's names only: each request is then sent alone, so
//! that the others still succeed and each gets its own error. A transient failure (timeout,
//! network) is given to every waiter; the caller's retry sends the records again.
//!
//! Each worker's queue is bounded (`max_queue` requests, `acme.dns_batch_max_queue`): when the
//! DNS primary falls behind, a request beyond it fails at once with [`DnsError::QueueFull`], a
//! transient error (the device hears 503 + Retry-After), instead of memory growing without end.
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
/// requests. Cheap to clone; the workers stop when the last clone is dropped.
#[derive(Clone)]
pub struct DnsBatcher {
    add: mpsc::Sender<Job>,
    delete: mpsc::Sender<Job>,
    max_queue: usize,
    on_full: Option<UpdateCounter>,
}

impl DnsBatcher {
    /// Starts the two workers on the current tokio runtime; each queues at most `max_queue`
    /// requests (at least 1).
    pub fn spawn(
        updater: Arc<DnsUpdater>,
        window: Duration,
        max_records: usize,
        max_queue: usize,
    ) -> Self {
        let max_records = max_records.max(1);
        let max_queue = max_queue.max(1);
        let (add, add_rx) = mpsc::channel(max_queue);
        let (delete, delete_rx) = mpsc::channel(max_queue);
        tokio::spawn(worker(
            Arc::clone(&updater),
            Kind::Add,
            add_rx,
            window,
            max_records,
        ));
        tokio::spawn(worker(
            updater,
            Kind::Delete,
            delete_rx,
            window,
            max_records,
        ));
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

async fn worker(
    updater: Arc<DnsUpdater>,
    kind: Kind,
    mut rx: mpsc::Receiver<Job>,
    window: Duration,
    max_records: usize,
) {
    let mut last_sent: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut count = first.records.len();
        let mut jobs = vec![first];
        let now = Instant::now();
        let send_at = match last_sent {
            Some(t) if t + window > now => t + window,
            _ => now,
        };
        loop {
            while count < max_records {
                match rx.try_recv() {
                    Ok(j) => {
                        count += j.records.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            if count >= max_records || Instant::now() >= send_at {
                break;
            }
            match tokio::time::timeout_at(send_at, rx.recv()).await {
                Ok(Some(j)) => {
                    count += j.records.len();
                    jobs.push(j);
                }
                Ok(None) | Err(_) => break,
            }
        }
        last_sent = Some(Instant::now());
        send(&updater, kind, jobs).await;
    }
}

async fn send(updater: &DnsUpdater, kind: Kind, jobs: Vec<Job>) {
    let records: Vec<TxtRecord> = jobs.iter().flat_map(|j| j.records.clone()).collect();
    let result = apply(updater, kind, &records).await;
    match result {
        Ok(()) => {
            for j in jobs {
                let _ = j.reply.send(Ok(()));
            }
        }
        Err(e) if e.is_permanent() && jobs.len() > 1 => {
            tracing::warn!(error = %e, requests = jobs.len(), "a coalesced DNS UPDATE failed; sending each request alone");
            for j in jobs {
                let r = apply(updater, kind, &j.records).await;
                let _ = j.reply.send(r);
            }
        }
        Err(e) => {
            for j in jobs {
                let _ = j.reply.send(Err(copy_error(&e)));
            }
        }
    }
}

async fn apply(updater: &DnsUpdater, kind: Kind, records: &[TxtRecord]) -> Result<(), DnsError> {
    match kind {
        Kind::Add => updater.publish(records).await,
        Kind::Delete => updater.remove(records).await,
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
