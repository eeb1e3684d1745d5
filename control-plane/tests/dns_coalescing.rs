//! Coalescing of DNS-01 records (RFC 2136: one UPDATE carries many RRs) against real Pebble
//! (which has no pre-authorisation, so every device name needs its own DNS-01), BIND9 and
//! Redis. Counted twice: by our `estuary_dns_updates_total` and by BIND itself (the zone's SOA
//! serial goes up once per UPDATE message applied; its `update` log has one line per RR).
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

/// The distinct records BIND logged as `needle` ("adding an RR" / "deleting an RR"): a UDP
/// UPDATE that our client sends again after a late reply is applied twice but changes nothing
/// the second time (RFC 2136 §3.4.2.2), so repeats of one record count once.
fn log_records(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("updating zone"))
        .filter_map(|l| l.split_once(needle).map(|(_, record)| record.trim()))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_enrolments_need_at_most_ten_dns_updates() {
    let stack = stack();
    let serial_before = stack.bind.soa_serial().expect("SOA");
    let cp = Arc::new(ControlPlane::start(
        &stack,
        &CpOptions {
            budget_ms: 5000,
            ..CpOptions::default()
        },
    ));
    let mut tasks = Vec::new();
    let mut names = Vec::new();
    for i in 0..50 {
        let cp = Arc::clone(&cp);
        let sn = serial(&format!("co{i}"));
        names.push(format!("{sn}.{PARENT}"));
        tasks.push(tokio::spawn(async move {
            let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
            let r = cp
                .enroll_until_done(&sn, &csr, Duration::from_secs(120))
                .await;
            (sn, r.status, r.text())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        let (sn, status, text) = t.await.expect("task");
        if status != 200 {
            failures.push(format!("{sn}: {status} {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "not issued:\n{}\n{}",
        failures.join("\n"),
        cp.log_text()
    );
    assert_eq!(
        cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        50.0
    );
    // The records are removed after the answers: wait (bounded) until BIND deleted all 50.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_records(&stack.bind.log(), "deleting an RR") < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ours = cp.metric("estuary_dns_updates_total").await;
    let applied = f64::from(stack.bind.soa_serial().expect("SOA") - serial_before);
    let log = stack.bind.log();
    let adds = log_records(&log, "adding an RR");
    let deletes = log_records(&log, "deleting an RR");
    println!(
        "50 enrolments: {ours} UPDATE messages counted by us, {applied} applied by BIND \
         ({adds} distinct RRs added, {deletes} deleted): {:.2} messages per enrolment",
        ours / 50.0
    );
    assert!(ours <= 10.0, "{ours} UPDATE messages for 50 enrolments");
    // Deletions ride in later messages with additions, but the last orders' deletions have
    // no addition after them: they go in a message of their own.
    assert!(
        ours >= 2.0,
        "{ours}: the last deletions need a message of their own"
    );
    // BIND applied exactly the messages we counted, and every record went in and out.
    assert_eq!(applied, ours, "BIND's SOA serial disagrees with our metric");
    assert_eq!(adds, 50, "BIND log:\n{log}");
    assert_eq!(deletes, 50, "BIND log:\n{log}");
    for name in names.iter().take(5) {
        let txt = stack
            .bind
            .dig_txt(&format!("_acme-challenge.{name}"))
            .expect("dig");
        assert!(txt.is_empty(), "{name}: {txt:?}");
    }
}

/// Sequential single enrolments, each on an idle RA: milliseconds per enrolment.
async fn lone_enrolments(cp: &ControlPlane, tag: &str, n: usize, idle: Duration) -> Vec<u128> {
    let mut out = Vec::new();
    for i in 0..n {
        // Idle long enough that the previous enrolment's messages are outside the window.
        tokio::time::sleep(idle).await;
        let sn = serial(&format!("{tag}{i}"));
        let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
        let t = Instant::now();
        let r = cp.enroll(&sn, &csr).await;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
        out.push(t.elapsed().as_millis());
    }
    out.sort_unstable();
    out
}

/// A lone enrolment is sent at once: the batching window only delays requests that come
/// while another UPDATE of the same kind went out recently. With a 1.5 s window a lone
/// enrolment would take over 1.5 s if it had to wait; it takes well under that.
#[tokio::test(flavor = "multi_thread")]
async fn a_lone_enrolment_does_not_wait_for_the_batching_window() {
    let stack = stack();
    let window = |ms: u64| CpOptions {
        extra_env: vec![("ESTUARY_ACME__DNS_BATCH_WINDOW_MS".into(), ms.to_string())],
        ..CpOptions::default()
    };
    // Warm up Pebble and the account with one enrolment, then measure.
    let unbatched = ControlPlane::start(&stack, &window(0));
    let idle = Duration::from_millis(1600);
    lone_enrolments(&unbatched, "w", 1, idle).await;
    let plain = lone_enrolments(&unbatched, "u", 3, idle).await;
    drop(unbatched);
    let batched = ControlPlane::start(&stack, &window(1500));
    lone_enrolments(&batched, "x", 1, idle).await;
    let slow_window = lone_enrolments(&batched, "b", 3, idle).await;
    println!(
        "single-enrolment latency (ms, sorted): window 0: {plain:?}; window 1500 ms: {slow_window:?}"
    );
    let median = slow_window[slow_window.len() / 2];
    assert!(
        median < 1200,
        "a lone enrolment waited for the window: {slow_window:?}"
    );
    // One add and one delete per enrolment: idle in between, so no deletion found an
    // addition to ride with (the last one goes up to a second after its answer).
    assert_eq!(
        batched
            .metric_settled("estuary_dns_updates_total", 8.0, Duration::from_secs(5))
            .await,
        8.0
    );
}

/// The batcher on its own against BIND: a deletion waits to ride in the next message with
/// additions (one message, BIND's SOA serial +1, both changes applied); a deletion with no
/// addition after it goes alone within `delete_hold`; a burst of additions while one message is
/// out goes in the next message together. No record is lost or left behind.
#[tokio::test(flavor = "multi_thread")]
async fn deletions_ride_with_additions_and_go_alone_when_none_come() {
    use estuary_control_plane::config::dns::{DnsConfig, TsigAlgorithmName, TsigSecret};
    use estuary_control_plane::ra::dns::batch::{delete_hold, DnsBatcher};
    use estuary_control_plane::ra::dns::update::{DnsUpdater, TxtRecord};

    let bind = estuary_tests::bind::Bind::start().expect("start named");
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&counted);
    let updater = DnsUpdater::new(DnsConfig {
        server: bind.addr,
        zone: bind.zone.clone(),
        key_name: bind.key_name.clone(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret: TsigSecret::from_base64(&bind.secret_b64).expect("base64 secret"),
        timeout_ms: 2000,
        ttl: 60,
        sweep_interval_s: 30,
    })
    .expect("updater")
    .with_update_counter(Arc::new(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let window = Duration::from_millis(300);
    let batcher = DnsBatcher::spawn(Arc::new(updater), window, 100, 100);
    let sent = || counted.load(std::sync::atomic::Ordering::SeqCst);
    let dig = |name: &str| tokio::task::block_in_place(|| bind.dig_txt(name).expect("dig"));
    let rec = |i: usize| TxtRecord::new(format!("_acme-challenge.b{i}.iot.example.test"), "v");
    let serial0 = bind.soa_serial().expect("SOA");

    // A lone addition goes at once.
    let t = Instant::now();
    batcher.publish(&[rec(0)]).await.expect("publish 0");
    assert!(t.elapsed() < window, "{:?}", t.elapsed());
    assert_eq!(sent(), 1);

    // Its removal waits; an addition within the window takes it along: ONE message.
    let b = batcher.clone();
    let removal = tokio::spawn(async move { b.remove(&[rec(0)]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!removal.is_finished(), "the deletion waits for a ride");
    batcher.publish(&[rec(1)]).await.expect("publish 1");
    removal.await.expect("task").expect("remove 0");
    assert_eq!(sent(), 2, "deletion of 0 and addition of 1 in one message");
    assert_eq!(bind.soa_serial().expect("SOA") - serial0, 2);
    assert!(dig(&rec(0).name).is_empty());
    assert_eq!(dig(&rec(1).name), vec!["v".to_string()]);

    // Five additions while the window runs: one message for all of them.
    let mut adds = Vec::new();
    for i in 2..7 {
        let b = batcher.clone();
        adds.push(tokio::spawn(async move { b.publish(&[rec(i)]).await }));
    }
    for a in adds {
        a.await.expect("task").expect("publish");
    }
    assert_eq!(sent(), 3, "five additions, one message");

    // A deletion with nothing to ride with goes alone, within delete_hold.
    let t = Instant::now();
    let all: Vec<TxtRecord> = (1..7).map(rec).collect();
    batcher.remove(&all).await.expect("remove all");
    let waited = t.elapsed();
    assert!(
        waited >= delete_hold(window) / 2 && waited < delete_hold(window) + window * 2,
        "{waited:?}"
    );
    assert_eq!(sent(), 4);
    for r in &all {
        assert!(dig(&r.name).is_empty(), "{} left", r.name);
    }
    assert_eq!(bind.soa_serial().expect("SOA") - serial0, 4, "BIND agrees");

    // A record added, then its removal waiting, then the same record added again (a retry of
    // the same order): never one message with both; the removal goes first, the addition
    // after it, and the record is there at the end.
    batcher.publish(&[rec(9)]).await.expect("publish 9");
    assert_eq!(sent(), 5);
    let b = batcher.clone();
    let removal = tokio::spawn(async move { b.remove(&[rec(9)]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    batcher.publish(&[rec(9)]).await.expect("publish 9 again");
    removal.await.expect("task").expect("remove 9");
    assert_eq!(sent(), 7, "add, delete, add: three messages");
    assert_eq!(
        dig(&rec(9).name),
        vec!["v".to_string()],
        "added last, so present"
    );
    assert_eq!(bind.soa_serial().expect("SOA") - serial0, 7, "BIND agrees");
}
