//! The CA's rate limit (issue 13, "Limits", per account): when the ACME CA answers
//! `urn:ietf:params:acme:error:rateLimited` (RFC 8555 §6.7), with or without `Retry-After`
//! (RFC 9110 §10.2.3), no replica sends it a new order until the back-off ends, every device
//! gets 503 + Retry-After meanwhile, and enrolment resumes afterwards. Real parts: the strict
//! test CA (`estuary_tests::acme_ca`, `Fault::RateLimited`), BIND9, Redis, and the control
//! plane as two processes sharing that Redis.
mod common;

use std::time::{Duration, Instant};

use common::*;
use estuary_tests::acme_ca::{CaOptions, Fault, TestAcmeCa};
use redis::AsyncCommands;

fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

fn start_cp(stack: &Stack, ca: &TestAcmeCa, extra: &[(&str, &str)]) -> ControlPlane {
    let mut env = vec![
        (
            "ESTUARY_ACME__DIRECTORY_URL".to_string(),
            ca.directory_url.clone(),
        ),
        (
            "ESTUARY_ACME__TLS_ROOT_FILE".to_string(),
            ca.tls_ca_pem.display().to_string(),
        ),
        (
            "ESTUARY_EST__CA_CERTS_FILE".to_string(),
            ca.issuer_root_pem.display().to_string(),
        ),
        (
            "ESTUARY_ACME__ORDER_TIMEOUT_S".to_string(),
            "20".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ControlPlane::start(
        stack,
        &CpOptions {
            budget_ms: 8000,
            extra_env: env,
            ..CpOptions::default()
        },
    )
}

async fn redis(stack: &Stack) -> redis::aio::MultiplexedConnection {
    redis::Client::open(stack.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// The back-off keys in Redis and their PTTLs (ms).
async fn backoffs(stack: &Stack) -> Vec<(String, i64)> {
    let mut conn = redis(stack).await;
    let keys: Vec<String> = conn.keys("estuary:ca-backoff:*").await.expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let t: i64 = conn.pttl(&k).await.expect("PTTL");
        out.push((k, t));
    }
    out
}

/// A 503 with a Retry-After of 1 to `max` seconds; returns it.
#[track_caller]
fn unavailable_for_at_most(r: &Resp, max: u64, what: &str, log: &str) -> u64 {
    assert_eq!(r.status, 503, "{what}: {}\n{log}", r.text());
    let after = r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{what}: 503 without a numeric Retry-After: {:?}", r.headers));
    assert!(
        (1..=max).contains(&after),
        "{what}: Retry-After {after} not within 1..={max}"
    );
    after
}

/// Retry-After 5 on newOrder through instant-acme (a CA without newAuthz): the device that met
/// the limit and every later one, on both replicas, get 503 + Retry-After for about 5 s, and
/// the CA gets no newOrder meanwhile although it would accept one again; afterwards both
/// devices enrol.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_with_retry_after_stops_new_orders_on_every_replica() {
    let stack = stack();
    let mut opts = CaOptions::rfc9444(stack.bind.addr);
    opts.new_authz = false;
    let ca = TestAcmeCa::start(opts).expect("test CA");
    let a = start_cp(&stack, &ca, &[]);
    let b = start_cp(&stack, &ca, &[]);
    let logs = || format!("A:\n{}\nB:\n{}", a.log_text(), b.log_text());

    // Both replicas work (the account exists, the CA issues).
    for (cp, tag) in [(&a, "sn-warm-a"), (&b, "sn-warm-b")] {
        let sn = serial(tag);
        let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
        let r = cp
            .enroll_until_done(&sn, &csr, Duration::from_secs(60))
            .await;
        assert_eq!(r.status, 200, "{tag}: {}\n{}", r.text(), logs());
    }
    let before = ca.stats().new_order_requests;

    ca.set_fault(Fault::RateLimited {
        retry_after_s: Some(5),
    });
    let first = serial("sn-first");
    let (first_csr, _) = csr_for(&format!("{first}.{PARENT}"));
    let started = Instant::now();
    let r = a.enroll(&first, &first_csr).await;
    unavailable_for_at_most(&r, 5, "the device that met the limit", &logs());
    assert_eq!(ca.stats().new_order_requests, before + 1);
    // From here the CA would take orders again: only the back-off keeps them away.
    ca.set_fault(Fault::None);

    let held = backoffs(&stack).await;
    assert_eq!(held.len(), 1, "one back-off for the one CA: {held:?}");
    assert!(
        held[0].1 > 0 && held[0].1 <= 5000,
        "it runs Retry-After: {held:?}"
    );

    // Devices on both replicas, and the first device's retry, within the back-off.
    for i in 0..4 {
        let cp = if i % 2 == 0 { &b } else { &a };
        let sn = serial(&format!("sn-during-{i}"));
        let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
        let r = cp.enroll(&sn, &csr).await;
        unavailable_for_at_most(&r, 5, &format!("device {i}"), &logs());
    }
    let r = a.enroll(&first, &first_csr).await;
    let last_wait = unavailable_for_at_most(&r, 5, "the first device's retry", &logs());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the refusals came at once: {:?}",
        started.elapsed()
    );
    assert_eq!(
        ca.stats().new_order_requests,
        before + 1,
        "no newOrder reached the CA during the back-off"
    );
    assert_eq!(a.metric("estuary_ca_backoffs_total").await, 1.0);
    assert_eq!(b.metric("estuary_ca_backoffs_total").await, 0.0);
    assert_eq!(a.metric("estuary_ca_backoff_refused_total").await, 3.0);
    assert_eq!(b.metric("estuary_ca_backoff_refused_total").await, 2.0);

    // Once it has run out, as the Retry-After said, devices enrol again on either replica.
    tokio::time::sleep(Duration::from_secs(last_wait) + Duration::from_millis(300)).await;
    assert!(
        backoffs(&stack).await.is_empty(),
        "the back-off ended by itself"
    );
    let r = a
        .enroll_until_done(&first, &first_csr, Duration::from_secs(60))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), logs());
    let sn = serial("sn-after");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = b
        .enroll_until_done(&sn, &csr, Duration::from_secs(60))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), logs());
    assert_eq!(ca.stats().new_order_requests, before + 3);
}

/// rateLimited without Retry-After on newOrder through our own JWS client (RFC 9444, the
/// parent pre-authorised): the back-off is `acme.rate_limit_backoff_s`.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_without_retry_after_backs_off_for_the_configured_time() {
    let stack = stack();
    let ca = TestAcmeCa::start(CaOptions::rfc9444(stack.bind.addr)).expect("test CA");
    let cp = start_cp(&stack, &ca, &[("ESTUARY_ACME__RATE_LIMIT_BACKOFF_S", "3")]);

    ca.set_fault(Fault::RateLimited {
        retry_after_s: None,
    });
    let sn = serial("sn-first");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_past_pending(&sn, &csr, Duration::from_secs(30))
        .await;
    unavailable_for_at_most(&r, 3, "the device that met the limit", &cp.log_text());
    let orders = ca.stats().new_order_requests;
    assert_eq!(orders, 1, "one newOrder, refused");
    assert_eq!(ca.stats().new_authz, 1, "the parent was pre-authorised");
    ca.set_fault(Fault::None);

    let other = serial("sn-other");
    let (other_csr, _) = csr_for(&format!("{other}.{PARENT}"));
    let r = cp.enroll(&other, &other_csr).await;
    let wait = unavailable_for_at_most(&r, 3, "another device", &cp.log_text());
    assert_eq!(ca.stats().new_order_requests, orders);

    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(300)).await;
    let r = cp
        .enroll_until_done(&other, &other_csr, Duration::from_secs(60))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
    assert_eq!(ca.stats().new_order_requests, orders + 1);
    assert!(!cp.log_text().contains("panicked"), "{}", cp.log_text());
}
