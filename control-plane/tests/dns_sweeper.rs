//! DNS hygiene (issue 13): every DNS-01 TXT record is in the Redis ledger until its removal is
//! confirmed, and the sweeper of any replica removes leftovers, also after a crash (SIGKILL)
//! between publish and cleanup. Against real BIND9, Redis and Pebble; `dig` checks the zone.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use estuary_control_plane::config::dns::{DnsConfig, TsigAlgorithmName, TsigSecret};
use estuary_control_plane::ra::dns::batch::DnsBatcher;
use estuary_control_plane::ra::dns::ledger::{self, LedgerError, LedgeredDns};
use estuary_control_plane::ra::dns::update::{DnsUpdater, TxtRecord};
use estuary_control_plane::ra::store::Store;
use estuary_control_plane::support::clock::now_unix;
use estuary_tests::bind::Bind;
use estuary_tests::pebble::Pebble;
use estuary_tests::redis::Redis;
use redis::AsyncCommands;

/// The harness's control planes use the default `redis.key_prefix`.
const LEDGER: &str = "estuary:dns:{ledger}";
const TRIES: &str = "estuary:dns:{ledger}-tries";
/// The ledger's keys in versions before the Cluster hash tags.
const OLD_LEDGER: &str = "estuary:dns:ledger";
const OLD_TRIES: &str = "estuary:dns:ledger-tries";
/// `acme.order_timeout_s` of the crash test.
const ORDER_TIMEOUT_S: u64 = 4;

fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

fn dns_config(bind: &Bind) -> DnsConfig {
    DnsConfig {
        server: bind.addr,
        zone: bind.zone.clone(),
        key_name: bind.key_name.clone(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret: TsigSecret::from_base64(&bind.secret_b64).expect("tsig-keygen wrote base64"),
        timeout_ms: 2000,
        ttl: 60,
        sweep_interval_s: 1,
    }
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

async fn ledger(c: &mut redis::aio::MultiplexedConnection) -> Vec<(String, i64)> {
    c.zrange_withscores(LEDGER, 0, -1).await.expect("ZRANGE")
}

fn dig(bind: &Bind, name: &str) -> Vec<String> {
    tokio::task::block_in_place(|| bind.dig_txt(name).expect("dig"))
}

/// The ledger on its own: a publish is noted before it is sent and forgotten once removed; no
/// Redis means no publish; the sweeper removes a due leftover and drops its note, and a
/// removal that fails stays noted, due again after the back-off.
#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_notes_every_record_and_the_sweeper_removes_due_ones() {
    let bind = Bind::start().expect("start named");
    let redis = Redis::start().expect("start redis");
    let store = Store::new(&redis.url(), "estuary").expect("store");
    let mut c = conn(&redis.url()).await;
    let updater = Arc::new(DnsUpdater::new(dns_config(&bind)).expect("updater"));
    let batcher = DnsBatcher::spawn(Arc::clone(&updater), Duration::ZERO, 100, 100);
    let hold = Duration::from_secs(30);
    let dns = LedgeredDns::new(batcher.clone(), store.clone(), hold);

    // Publish: noted, due after `hold`; remove: gone from the zone and the ledger.
    let a = TxtRecord::new("_acme-challenge.sn-a.iot.example.test", "value-a");
    let before = now_unix();
    dns.publish(std::slice::from_ref(&a))
        .await
        .expect("publish");
    assert_eq!(dig(&bind, &a.name), vec!["value-a".to_string()]);
    let l = ledger(&mut c).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].0, ledger::member(&a));
    assert!(l[0].1 >= before + 30 && l[0].1 <= now_unix() + 30, "{l:?}");
    dns.remove(std::slice::from_ref(&a)).await.expect("remove");
    assert!(dig(&bind, &a.name).is_empty());
    assert!(ledger(&mut c).await.is_empty());

    // Redis down: nothing is published (a transient store error).
    let dead = Store::new("redis://127.0.0.1:1/", "estuary").expect("store");
    let no_redis = LedgeredDns::new(batcher, dead, hold);
    let b = TxtRecord::new("_acme-challenge.sn-b.iot.example.test", "value-b");
    let e = no_redis
        .publish(std::slice::from_ref(&b))
        .await
        .expect_err("no ledger, no publish");
    assert!(matches!(e, LedgerError::Store(_)), "{e:?}");
    assert!(dig(&bind, &b.name).is_empty(), "published without a note");

    // A leftover (published, noted, never removed) that is due: swept.
    dns.publish(std::slice::from_ref(&b))
        .await
        .expect("publish");
    let _: i64 = c
        .zadd(LEDGER, ledger::member(&b), now_unix() - 1)
        .await
        .expect("ZADD");
    // One not due yet stays, in the zone and in the ledger.
    let d = TxtRecord::new("_acme-challenge.sn-d.iot.example.test", "value-d");
    dns.publish(std::slice::from_ref(&d))
        .await
        .expect("publish");
    let (removed, failed) = ledger::sweep_once(&updater, &store, Duration::from_secs(2), None)
        .await
        .expect("sweep");
    assert_eq!((removed, failed), (1, 0));
    assert!(
        dig(&bind, &b.name).is_empty(),
        "the leftover is still there"
    );
    assert_eq!(dig(&bind, &d.name), vec!["value-d".to_string()]);
    let l = ledger(&mut c).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].0, ledger::member(&d));

    // A removal that fails (the key may not write outside the zone): kept, retried later with
    // a growing delay.
    let outside = "_acme-challenge.elsewhere.test outside-value";
    let _: i64 = c.zadd(LEDGER, outside, now_unix() - 1).await.expect("ZADD");
    let (removed, failed) = ledger::sweep_once(&updater, &store, Duration::from_secs(2), None)
        .await
        .expect("sweep");
    assert_eq!((removed, failed), (0, 1));
    let score: Option<i64> = c.zscore(LEDGER, outside).await.expect("ZSCORE");
    let first = score.expect("still noted") - now_unix();
    assert!((1..=2).contains(&first), "due again in {first} s");
    let _: i64 = c.zadd(LEDGER, outside, now_unix() - 1).await.expect("ZADD");
    ledger::sweep_once(&updater, &store, Duration::from_secs(2), None)
        .await
        .expect("sweep");
    let score: Option<i64> = c.zscore(LEDGER, outside).await.expect("ZSCORE");
    let second = score.expect("still noted") - now_unix();
    assert!(
        (3..=4).contains(&second),
        "due again in {second} s (doubled)"
    );
    // Not due: nothing happens.
    assert_eq!(
        ledger::sweep_once(&updater, &store, Duration::from_secs(2), None)
            .await
            .expect("sweep"),
        (0, 0)
    );

    // Upgrade: notes in the ledger of versions before hash tags (`dns:ledger`,
    // `dns:ledger-tries`) move into today's keys with their due time and failure count; a
    // due one is then swept as any other.
    let old = TxtRecord::new("_acme-challenge.sn-old.iot.example.test", "value-old");
    dns.publish(std::slice::from_ref(&old))
        .await
        .expect("publish");
    let later = "_acme-challenge.sn-later.iot.example.test value-later";
    let due_later = now_unix() + 600;
    // As an earlier version would have noted it: only in the old ledger.
    let _: () = redis::pipe()
        .zrem(LEDGER, ledger::member(&old))
        .zadd(OLD_LEDGER, ledger::member(&old), now_unix() - 1)
        .zadd(OLD_LEDGER, later, due_later)
        .hset(OLD_TRIES, later, 3)
        .query_async(&mut c)
        .await
        .expect("plant the old ledger");
    let (removed, failed) = ledger::sweep_once(&updater, &store, Duration::from_secs(2), None)
        .await
        .expect("sweep");
    assert_eq!((removed, failed), (1, 0));
    assert!(
        dig(&bind, &old.name).is_empty(),
        "the old note was not swept"
    );
    let left: i64 = c.exists(&[OLD_LEDGER, OLD_TRIES]).await.expect("EXISTS");
    assert_eq!(left, 0, "the old keys were not drained");
    let score: Option<i64> = c.zscore(LEDGER, later).await.expect("ZSCORE");
    assert_eq!(score, Some(due_later), "the due time moved with the note");
    let tries: Option<i64> = c.hget(TRIES, later).await.expect("HGET");
    assert_eq!(tries, Some(3), "the failure count moved with the note");
}

/// SIGKILL between publish and cleanup: Pebble is frozen while the order waits on its DNS-01
/// validation, so the record stays published; the control plane is killed. A fresh control
/// plane on the same Redis sweeps the record once its note is due (publish +
/// `acme.order_timeout_s` + grace) and empties the ledger. A normal enrolment leaves an empty
/// ledger too.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_left_by_a_killed_control_plane_is_swept_after_restart() {
    let stack = stack();
    // Our own Pebble WITH its validation sleeps, so an order stays pending with its record.
    let pebble = Pebble::start_with(stack.bind.addr, &[("PEBBLE_VA_NOSLEEP", "0")])
        .expect("start Pebble with validation sleeps");
    let env: Vec<(String, String)> = [
        ("ESTUARY_ACME__DIRECTORY_URL", pebble.directory_url.clone()),
        (
            "ESTUARY_ACME__TLS_ROOT_FILE",
            pebble.tls_ca_pem.display().to_string(),
        ),
        (
            "ESTUARY_EST__CA_CERTS_FILE",
            pebble.issuer_root_pem.display().to_string(),
        ),
        ("ESTUARY_ACME__ORDER_TIMEOUT_S", ORDER_TIMEOUT_S.to_string()),
        ("ESTUARY_ACME__REQUEST_TIMEOUT_MS", "1500".to_string()),
        ("ESTUARY_DNS__SWEEP_INTERVAL_S", "1".to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    let opts = CpOptions {
        budget_ms: 1000,
        retry_after_s: 1,
        lock_ttl_s: 3,
        extra_env: env,
        ..CpOptions::default()
    };
    let mut c = conn(&stack.redis.url()).await;
    let mut cp = ControlPlane::start(&stack, &opts);

    // A normal enrolment: its record is removed and its note dropped.
    let sn = serial("sn-normal");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(90))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
    let t = Instant::now();
    while !ledger(&mut c).await.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a normal enrolment left {:?}",
            ledger(&mut c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A device whose order is pending when Pebble freezes and the control plane dies. Pebble
    // sleeps a random time before it validates, now and then none at all: a device whose
    // certificate came within the budget is not the case wanted, the next device is tried.
    let mut pending = None;
    for attempt in 0..5 {
        let sn = serial(&format!("sn-crash{attempt}"));
        let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
        let r = cp.enroll(&sn, &csr).await;
        match r.status {
            202 => {
                pending = Some(sn);
                break;
            }
            200 => continue,
            other => panic!("{other}: {}", r.text()),
        }
    }
    let sn = pending.expect("one of 5 devices still pending after the budget");
    let name = format!("_acme-challenge.{sn}.{PARENT}");
    let t = Instant::now();
    while dig(&stack.bind, &name).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the DNS-01 record never appeared\n{}",
            cp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let published = Instant::now();
    pebble.freeze().expect("SIGSTOP Pebble");
    cp.kill();
    assert_eq!(
        dig(&stack.bind, &name).len(),
        1,
        "the record outlives the crash"
    );
    let l = ledger(&mut c).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(l[0].0.starts_with(&format!("{name} ")), "{l:?}");

    // A fresh replica on the same Redis; the CA is back.
    let cp2 = ControlPlane::start(&stack, &opts);
    pebble.thaw().expect("SIGCONT Pebble");
    let bound = Duration::from_secs(ORDER_TIMEOUT_S) + ledger::GRACE + Duration::from_secs(1 + 5);
    while !dig(&stack.bind, &name).is_empty() {
        assert!(
            published.elapsed() < bound,
            "the record is still there {:?} after it was published\n{}",
            published.elapsed(),
            cp2.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("swept {:?} after the publish", published.elapsed());
    assert!(
        published.elapsed() >= Duration::from_secs(ORDER_TIMEOUT_S),
        "swept before the order's deadline"
    );
    let t = Instant::now();
    while !ledger(&mut c).await.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{:?}",
            ledger(&mut c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cp2.metric("estuary_dns_swept_total").await, 1.0);
    assert_eq!(cp2.metric("estuary_dns_sweep_failures_total").await, 0.0);
    assert!(cp2.log_text().contains("swept a leftover DNS-01 record"));
}
