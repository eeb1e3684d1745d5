//! The ACME CA hangs (issue 13, "CA frozen"): Pebble under SIGSTOP keeps its listening socket,
//! so connections succeed and requests wait with no answer. Against real Pebble, BIND9 and
//! Redis, with the control plane as a real process and short, test-set deadlines
//! (`acme.order_timeout_s`, `acme.request_timeout_ms`).
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use estuary_tests::pebble::Pebble;
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

/// The harness's control planes use the default `redis.key_prefix`.
const PREFIX: &str = "estuary";
/// `acme.order_timeout_s` of these tests.
const ORDER_TIMEOUT_S: u64 = 6;
/// `enroll.budget_ms` of these tests.
const BUDGET_MS: u64 = 1000;

fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

/// `<prefix>:<kind>:{<hex SHA-256 of the whole CSR DER>}` (store.rs; `{…}` is the Cluster hash tag).
fn redis_key(kind: &str, csr_der: &[u8]) -> String {
    format!(
        "{PREFIX}:{kind}:{{{}}}",
        hex::encode(Sha256::digest(csr_der))
    )
}

async fn redis(stack: &Stack) -> redis::aio::MultiplexedConnection {
    redis::Client::open(stack.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    conn.exists(key).await.expect("EXISTS")
}

/// The TXT values at `_acme-challenge.<name>` in BIND (dig), without blocking other tasks.
fn txt(stack: &Stack, name: &str) -> Vec<String> {
    tokio::task::block_in_place(|| {
        stack
            .bind
            .dig_txt(&format!("_acme-challenge.{name}"))
            .expect("dig")
    })
}

/// Waits until `_acme-challenge.<name>` has no TXT record; false if one is still there at `within`.
async fn txt_gone(stack: &Stack, name: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if txt(stack, name).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cacerts(cp: &ControlPlane) -> Resp {
    http(
        &cp.url("/estuary/v1/cacerts"),
        "GET",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        Vec::new(),
    )
    .await
}

/// SIGSTOP on Pebble while one order waits on its DNS-01 validation: the device gets 202 at
/// once and, once `acme.order_timeout_s` has passed, 503 + Retry-After; cacerts and a cached
/// enrolment keep working throughout; the abandoned issuance leaves no lock and no TXT record
/// (its order URL stays for the retry); after SIGCONT the same CSR is issued and nothing is
/// left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_ca_means_202_then_503_and_leaves_nothing_behind() {
    let stack = stack();
    // Our own Pebble WITH its validation sleeps, so that an order stays pending (its TXT record
    // published) long enough to freeze the CA in the middle of it.
    let pebble = Pebble::start_with(stack.bind.addr, &[("PEBBLE_VA_NOSLEEP", "0")])
        .expect("start Pebble with validation sleeps");
    let env = [
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
    ];
    let cp = Arc::new(ControlPlane::start(
        &stack,
        &CpOptions {
            budget_ms: BUDGET_MS,
            retry_after_s: 1,
            lock_ttl_s: 3,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..CpOptions::default()
        },
    ));
    let mut conn = redis(&stack).await;

    // A device enrolled before the freeze: its identical retry is a cache hit.
    let cached_sn = serial("sn-cached");
    let (cached_csr, _) = csr_for(&format!("{cached_sn}.{PARENT}"));
    let t = Instant::now();
    let r = cp
        .enroll_until_done(&cached_sn, &cached_csr, Duration::from_secs(90))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
    eprintln!("issuance before the freeze: {:?}", t.elapsed());

    // A new device; Pebble is frozen once its DNS-01 record is in the zone.
    let sn = serial("sn-frozen");
    let name = format!("{sn}.{PARENT}");
    let (csr, _) = csr_for(&name);
    let first = {
        let cp = Arc::clone(&cp);
        let (sn, csr) = (sn.clone(), csr.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = cp.enroll(&sn, &csr).await;
            (r, t.elapsed())
        })
    };
    let started = Instant::now();
    while txt(&stack, &name).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the DNS-01 record never appeared\n{}",
            cp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pebble.freeze().expect("SIGSTOP Pebble");
    eprintln!(
        "froze Pebble {:?} after the first request",
        started.elapsed()
    );

    let (r, took) = first.await.expect("first request");
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(
        took < Duration::from_millis(BUDGET_MS + 1000),
        "202 within the budget, took {took:?}"
    );
    assert_eq!(r.header("retry-after"), Some("1"));

    // The device retries as told; meanwhile cacerts and the cached enrolment keep working.
    let answer = loop {
        let c = cacerts(&cp).await;
        assert_eq!(c.status, 200, "cacerts while the CA is frozen");
        let t = Instant::now();
        let c = cp.enroll(&cached_sn, &cached_csr).await;
        assert_eq!(c.status, 200, "cached enrolment: {}", c.text());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let r = cp.enroll(&sn, &csr).await;
        if r.status != 202 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(ORDER_TIMEOUT_S + 20),
            "still 202 long after acme.order_timeout_s\n{}",
            cp.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let gave_up = started.elapsed();
    eprintln!("503 {gave_up:?} after the first request");
    assert_eq!(answer.status, 503, "{}\n{}", answer.text(), cp.log_text());
    assert_eq!(
        answer.header("retry-after"),
        Some("2"),
        "unavailable_retry_after_s"
    );
    assert!(
        answer.text().contains(&format!(
            "did not complete the issuance within {ORDER_TIMEOUT_S} s"
        )),
        "{}",
        answer.text()
    );
    assert!(
        gave_up >= Duration::from_secs(ORDER_TIMEOUT_S)
            && gave_up < Duration::from_secs(ORDER_TIMEOUT_S + 4),
        "gave up after {gave_up:?}"
    );
    assert_eq!(cacerts(&cp).await.status, 200, "still serving");

    // Abandoned cleanly: lock released, TXT record removed, the order URL kept for the retry.
    assert!(
        !exists(&mut conn, &redis_key("lock", &csr)).await,
        "lock left behind"
    );
    assert!(
        exists(&mut conn, &redis_key("order", &csr)).await,
        "the order URL is kept for the retry"
    );
    assert!(
        txt_gone(&stack, &name, Duration::from_secs(5)).await,
        "TXT record left behind: {:?}",
        txt(&stack, &name)
    );

    // The CA is back: the same CSR is issued.
    pebble.thaw().expect("SIGCONT Pebble");
    let t = Instant::now();
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(90))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
    eprintln!("issued {:?} after SIGCONT", t.elapsed());
    let tmp = estuary_tests::util::TempDir::new("frozen").expect("tmp");
    let pem = pkcs7_to_pem(tmp.path(), &r.body);
    assert!(!pem_blocks(&pem).is_empty(), "a certificate chain");

    // Nothing left behind.
    for c in [&csr, &cached_csr] {
        for kind in ["lock", "order", "fail"] {
            assert!(
                !exists(&mut conn, &redis_key(kind, c)).await,
                "{kind} left behind"
            );
        }
    }
    let locks: Vec<String> = conn.keys(format!("{PREFIX}:lock:*")).await.expect("KEYS");
    assert!(locks.is_empty(), "{locks:?}");
    assert!(txt_gone(&stack, &name, Duration::from_secs(5)).await);
    assert!(txt(&stack, &format!("{cached_sn}.{PARENT}")).is_empty());
}

/// A CA that accepts the parent's DNS-01 challenge and never validates it (the strict test CA,
/// RFC 9444 pre-authorisation): the issuance is abandoned at `acme.order_timeout_s` in the middle
/// of pre-authorising the parent; the device gets 503 + Retry-After, and neither the issuance
/// lock, nor the pre-authorisation lock, nor the parent's TXT record is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn an_issuance_abandoned_during_pre_authorisation_leaves_nothing_behind() {
    use estuary_tests::acme_ca::{CaOptions, Fault, TestAcmeCa};
    let stack = stack();
    let mut opts = CaOptions::rfc9444(stack.bind.addr);
    opts.fault = Fault::NeverValidate;
    let ca = TestAcmeCa::start(opts).expect("test CA");
    let env = [
        ("ESTUARY_ACME__DIRECTORY_URL", ca.directory_url.clone()),
        (
            "ESTUARY_ACME__TLS_ROOT_FILE",
            ca.tls_ca_pem.display().to_string(),
        ),
        (
            "ESTUARY_EST__CA_CERTS_FILE",
            ca.issuer_root_pem.display().to_string(),
        ),
        ("ESTUARY_ACME__ORDER_TIMEOUT_S", "3".to_string()),
    ];
    let cp = ControlPlane::start(
        &stack,
        &CpOptions {
            budget_ms: BUDGET_MS,
            retry_after_s: 1,
            lock_ttl_s: 3,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..CpOptions::default()
        },
    );
    let sn = serial("sn-preauth");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let started = Instant::now();
    let r = cp.enroll(&sn, &csr).await;
    assert_eq!(r.status, 202, "{}\n{}", r.text(), cp.log_text());
    assert_eq!(
        txt(&stack, PARENT).len(),
        1,
        "the parent's DNS-01 record is published"
    );
    let r = cp
        .enroll_past_pending(&sn, &csr, Duration::from_secs(20))
        .await;
    assert_eq!(r.status, 503, "{}\n{}", r.text(), cp.log_text());
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(
        r.text()
            .contains("did not complete the issuance within 3 s"),
        "{}",
        r.text()
    );
    eprintln!("503 {:?} after the first request", started.elapsed());
    let mut conn = redis(&stack).await;
    for pattern in [
        format!("{PREFIX}:lock:*"),
        format!("{PREFIX}:preauth-lock:*"),
    ] {
        let left: Vec<String> = conn.keys(&pattern).await.expect("KEYS");
        assert!(left.is_empty(), "{left:?}");
    }
    assert!(
        txt_gone(&stack, PARENT, Duration::from_secs(5)).await,
        "the parent's TXT record left behind: {:?}",
        txt(&stack, PARENT)
    );
    assert!(!cp.log_text().contains("panicked"));
}
