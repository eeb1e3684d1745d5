//! Chaos under load (issue 13): 100 distinct pledges, 25 at a time, enrol through two control
//! planes on one Redis (real Pebble, BIND9 and Redis on loopback) while the test
//! - SIGKILLs replica B once 10 pledges are done, and starts it again on the same port while
//!   BIND9 is frozen,
//! - SIGKILLs Redis once 20 are done and starts it again with its AOF (same port and
//!   directory),
//! - freezes BIND9 for 5 s (SIGSTOP, then SIGCONT) once 30 are done.
//!
//! Each pledge behaves as an RFC 7030 client (§4.2.3): it follows 202 and 503 with
//! Retry-After, and goes to the other replica when its own refuses connections. Every pledge
//! must end with a certificate for its own name and key; afterwards Redis holds no lock, no
//! order in progress and no DNS ledger note, and BIND no `_acme-challenge` TXT record.
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use estuary_control_plane::ra::dns::ledger::GRACE;
use estuary_tests::stack::StackOptions;
use estuary_tests::util::TempDir;

const PLEDGES: usize = 100;
const CONCURRENCY: usize = 25;
/// How long one pledge may take, retries included.
const PLEDGE_WITHIN: Duration = Duration::from_secs(90);
const LOCK_TTL_S: u64 = 5;
/// `acme.order_timeout_s`: a leftover TXT record is due for the sweeper this long (plus
/// [`GRACE`]) after its publish.
const ORDER_TIMEOUT_S: u64 = 15;
/// `dns.sweep_interval_s`.
const SWEEP_INTERVAL_S: u64 = 1;
/// How long leftovers may take to go after the last pledge ended: the killed replica's
/// locks expire within `lock_ttl_s`; its TXT records, and any whose removal met the frozen
/// BIND9, are due for the sweeper `acme.order_timeout_s` + GRACE after their publish — or
/// after their removal, for a record whose add went unconfirmed (noted again then). A removal
/// runs after the answer and may wait up to a second to ride with additions, plus the DNS
/// timeout if it meets the frozen primary: 5 s more.
const CLEANUP_WITHIN: Duration =
    Duration::from_secs(ORDER_TIMEOUT_S + 4 * SWEEP_INTERVAL_S + 10).saturating_add(GRACE);

/// One pledge's end: its last answer and the statuses it saw on the way.
struct Ended {
    serial: String,
    name: String,
    pubkey_pem: String,
    last: Resp,
    seen: Vec<u16>,
}

/// Enrols as a pledge would: follows 202/503 + Retry-After, and on a refused connection
/// (status 0) tries the other replica.
async fn pledge(
    bases: Arc<[String; 2]>,
    first: usize,
    serial: String,
    idevid: String,
    csr: Vec<u8>,
) -> (Resp, Vec<u16>) {
    let deadline = Instant::now() + PLEDGE_WITHIN;
    let mut at = first;
    let mut seen = Vec::new();
    loop {
        let r = enroll_at(&bases[at], &serial, &idevid, &csr).await;
        seen.push(r.status);
        let wait = match r.status {
            0 => {
                at = 1 - at;
                Some(Duration::from_millis(200))
            }
            202 | 503 => r
                .header("retry-after")
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs),
            _ => None,
        };
        match wait {
            Some(w) if Instant::now() + w < deadline => tokio::time::sleep(w).await,
            _ => return (r, seen),
        }
    }
}

/// `redis-cli --scan` for `pattern`.
fn redis_keys(stack: &Stack, pattern: &str) -> Vec<String> {
    stack
        .redis
        .cli(&["--scan", "--pattern", pattern])
        .expect("redis-cli --scan")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The `_acme-challenge` owner names among `names` (and the parent's) that still have TXT.
fn challenge_txt_left(stack: &Stack, names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(String::as_str)
        .chain([PARENT])
        .filter_map(|n| {
            let owner = format!("_acme-challenge.{n}");
            let values = stack.bind.dig_txt(&owner).expect("dig TXT");
            (!values.is_empty()).then(|| format!("{owner} {values:?}"))
        })
        .collect()
}

/// Waits up to [`CLEANUP_WITHIN`] for `left` to return nothing; returns what is left then.
async fn left_after_wait(mut left: impl FnMut() -> Vec<String>) -> (Vec<String>, Duration) {
    let started = Instant::now();
    loop {
        let now = left();
        if now.is_empty() || started.elapsed() > CLEANUP_WITHIN {
            return (now, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_pledge_enrols_through_a_replica_crash_a_redis_restart_and_a_frozen_dns() {
    let mut stack = Stack::start_with(&StackOptions {
        redis_aof: true,
        ..StackOptions::default()
    })
    .expect("start the stack");
    let opts = |port: u16| CpOptions {
        budget_ms: 2000,
        retry_after_s: 1,
        lock_ttl_s: LOCK_TTL_S,
        port: Some(port),
        extra_env: vec![
            (
                "ESTUARY_ACME__ORDER_TIMEOUT_S".into(),
                ORDER_TIMEOUT_S.to_string(),
            ),
            (
                "ESTUARY_DNS__SWEEP_INTERVAL_S".into(),
                SWEEP_INTERVAL_S.to_string(),
            ),
        ],
        ..CpOptions::default()
    };
    let ports = [
        estuary_tests::util::free_port().expect("port"),
        estuary_tests::util::free_port().expect("port"),
    ];
    let mut a = ControlPlane::start(&stack, &opts(ports[0]));
    let mut b = ControlPlane::start(&stack, &opts(ports[1]));
    let bases = Arc::new([a.url(""), b.url("")]);

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::new();
    for i in 0..PLEDGES {
        let serial = format!("sn-chaos-{i:03}");
        let name = format!("{serial}.{PARENT}");
        let (csr, pubkey_pem) = csr_for(&name);
        let idevid = idevid_header(&stack.manufacturer, &serial);
        let (bases, done, slots) = (Arc::clone(&bases), Arc::clone(&done), Arc::clone(&slots));
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore");
            let (last, seen) = pledge(bases, i % 2, serial.clone(), idevid, csr).await;
            done.fetch_add(1, Ordering::SeqCst);
            Ended {
                serial,
                name,
                pubkey_pem,
                last,
                seen,
            }
        }));
    }

    // The faults, each once a share of the pledges is done, so that the rest meet it.
    let when_done = |n: usize, what: &'static str| {
        let done = Arc::clone(&done);
        async move {
            let waited = Instant::now();
            while done.load(Ordering::SeqCst) < n {
                assert!(
                    waited.elapsed() < PLEDGE_WITHIN,
                    "{n} pledges never got done before: {what}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            eprintln!(
                "{:>5.1} s  {what} ({} pledges done)",
                started.elapsed().as_secs_f64(),
                done.load(Ordering::SeqCst)
            );
        }
    };
    when_done(10, "SIGKILL replica B").await;
    b.kill();
    when_done(20, "SIGKILL Redis, start it again with its AOF").await;
    tokio::task::block_in_place(|| stack.redis.start_again()).expect("restart Redis");
    when_done(30, "SIGSTOP BIND9 for 5 s").await;
    stack.bind.freeze().expect("freeze BIND9");
    let frozen = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    when_done(0, "replica B started again on its port").await;
    let b_log_before_kill = b.log_text();
    b = tokio::task::block_in_place(|| ControlPlane::start(&stack, &opts(ports[1])));
    tokio::time::sleep_until((frozen + Duration::from_secs(5)).into()).await;
    when_done(0, "SIGCONT BIND9").await;
    stack.bind.thaw().expect("thaw BIND9");
    assert!(
        done.load(Ordering::SeqCst) < PLEDGES,
        "every pledge was done before BIND9 thawed: the faults met no load"
    );

    let mut ended = Vec::new();
    for t in tasks {
        ended.push(t.await.expect("pledge task"));
    }
    let load_took = started.elapsed();
    eprintln!("all {PLEDGES} pledges ended after {load_took:.1?}");

    // 0 lost: each pledge has a certificate for its own name and key.
    let logs = || logs(&stack, &a, &b_log_before_kill, &b);
    let failed: Vec<String> = ended
        .iter()
        .filter(|e| e.last.status != 200)
        .map(|e| {
            format!(
                "{}: {} {} (saw {:?})",
                e.serial,
                e.last.status,
                e.last.text(),
                e.seen
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {PLEDGES} pledges lost:\n{}\n{}",
        failed.len(),
        failed.join("\n"),
        logs()
    );
    let tmp = TempDir::new("chaos").expect("tmp");
    for e in &ended {
        let certs = estuary_proto::pkcs7::decode_certs_only(&e.last.body).expect("PKCS#7");
        let leaf = estuary_proto::cert::CertSummary::from_der(&certs[0]).expect("leaf");
        assert_eq!(
            leaf.dns_names(),
            std::slice::from_ref(&e.name),
            "{}",
            e.serial
        );
        let leaf_pem = tmp.path().join("leaf.pem");
        std::fs::write(&leaf_pem, estuary_proto::pem::encode_certs(&certs[..1])).expect("write");
        let leaf_pub = sh(Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&leaf_pem));
        assert_eq!(
            leaf_pub.trim(),
            e.pubkey_pem.trim(),
            "{}: leaf key",
            e.serial
        );
    }
    let retried = ended.iter().filter(|e| e.seen.len() > 1).count();
    let failed_over = ended.iter().filter(|e| e.seen.contains(&0)).count();
    eprintln!("{retried} pledges retried, {failed_over} went to the other replica");

    // Nothing left behind: no lock, no order in progress (the killed replica's locks expire
    // within lock_ttl_s), no challenge TXT (the records the killed replica published are
    // the DNS ledger's sweeper's to remove) and no note in the ledger. Each gets a bounded
    // wait.
    let (locks, locks_waited) = left_after_wait(|| redis_keys(&stack, "estuary:lock:*")).await;
    let (orders, orders_waited) = left_after_wait(|| redis_keys(&stack, "estuary:order:*")).await;
    let names: Vec<String> = ended.iter().map(|e| e.name.clone()).collect();
    let (txt, txt_waited) = left_after_wait(|| challenge_txt_left(&stack, &names)).await;
    let (ledger, ledger_waited) =
        left_after_wait(|| redis_keys(&stack, "estuary:dns:*ledger*")).await;
    assert!(
        locks.is_empty() && orders.is_empty() && txt.is_empty() && ledger.is_empty(),
        "left behind:\nlocks after {locks_waited:?}: {locks:?}\norders after {orders_waited:?}: \
         {orders:?}\nTXT after {txt_waited:?}: {txt:?}\nDNS ledger after {ledger_waited:?}: \
         {ledger:?} {:?}\n{}",
        stack
            .redis
            .cli(&["ZRANGE", "estuary:dns:{ledger}", "0", "-1"]),
        logs()
    );
    eprintln!(
        "nothing left: locks gone after {locks_waited:.1?}, orders after {orders_waited:.1?}, \
         TXT after {txt_waited:.1?}, ledger notes after a further {ledger_waited:.1?}"
    );

    // Both replicas still run, and none panicked.
    for log in [a.log_text(), b_log_before_kill.clone(), b.log_text()] {
        assert!(!log.contains("panicked"), "{}", logs());
    }
    let all_logs = logs();
    assert!(a.is_running() && b.is_running(), "{all_logs}");
    eprintln!("whole test {:.1?}", started.elapsed());
}

/// For a failure message: the replicas' whole logs, kept in a directory it names, and
/// their ends.
fn logs(stack: &Stack, a: &ControlPlane, b_before_kill: &str, b: &ControlPlane) -> String {
    let dir = std::env::temp_dir().join(format!("estuary-chaos-{}", std::process::id()));
    let logs = [
        ("replica-a.log", a.log_text()),
        ("replica-b-before-kill.log", b_before_kill.to_string()),
        ("replica-b.log", b.log_text()),
        ("named.log", stack.bind.log()),
    ];
    let mut out = match std::fs::create_dir_all(&dir) {
        Ok(()) => format!("whole logs in {}\n", dir.display()),
        Err(e) => format!("cannot keep the logs in {}: {e}\n", dir.display()),
    };
    for (file, text) in &logs {
        let _ = std::fs::write(dir.join(file), text);
        out.push_str(&format!("--- {file} ---\n{}\n", tail(text)));
    }
    out
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
