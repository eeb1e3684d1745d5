//! The RA engine against real parts: Pebble (ACME, RFC 8555), BIND9 (RFC 2136 UPDATE + TSIG),
//! Redis, and the control plane as a real process. Checks are made the way an operator would:
//! `openssl verify`, `dig`, `/metrics`.
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use estuary_tests::util::TempDir;

fn serial(tag: &str) -> String {
    // Unique per run so that nothing is shared between tests or runs.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

/// (a) (b) (c): issuance, openssl verification, DNS cleanup, identical CSR from the cache.
#[tokio::test(flavor = "multi_thread")]
async fn a_csr_becomes_a_chain_that_openssl_verifies_and_is_cached() {
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let sn = serial("sn-a");
    let name = format!("{sn}.{PARENT}");
    let (csr, pubkey_pem) = csr_for(&name);

    let r = cp.enroll(&sn, &csr).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
    assert_eq!(
        r.header("content-type"),
        Some("application/pkcs7-mime; smime-type=certs-only")
    );

    // (a) openssl reads the PKCS#7: the end-entity certificate alone (draft-17); with the
    // intermediates of /cacerts it verifies against Pebble's /roots/0.
    let tmp = TempDir::new("a").expect("tmp");
    let pem = pkcs7_to_pem(tmp.path(), &r.body);
    let certs = pem_blocks(&pem);
    assert_eq!(certs.len(), 1, "the end-entity certificate only");
    let leaf = tmp.path().join("leaf.pem");
    let inter = tmp.path().join("inter.pem");
    std::fs::write(&leaf, &certs[0]).expect("write");
    let cacerts = http(
        &cp.url("/estuary/v1/cacerts"),
        "GET",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(cacerts.status, 200);
    let ca_dir = TempDir::new("a-cacerts").expect("tmp");
    std::fs::write(&inter, pkcs7_to_pem(ca_dir.path(), &cacerts.body)).expect("write");
    let verify = sh(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&stack.pebble.issuer_root_pem)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf));
    assert!(verify.contains(": OK"), "{verify}");
    // The leaf holds the CSR's public key and name.
    let leaf_pub = sh(Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&leaf));
    assert_eq!(leaf_pub.trim(), pubkey_pem.trim());
    let san = sh(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf));
    assert!(san.contains(&format!("DNS:{name}")), "{san}");

    // (b) the TXT record is gone afterwards (removed after the answer, within seconds).
    let txt = stack
        .bind
        .txt_after_removal(&format!("_acme-challenge.{name}"), Duration::from_secs(5))
        .expect("dig");
    assert!(txt.is_empty(), "challenge record left behind: {txt:?}");
    assert_eq!(
        cp.metric_settled("estuary_dns_updates_total", 2.0, Duration::from_secs(5))
            .await,
        2.0
    );

    // (c) the same CSR again: byte-identical chain, no new order.
    let orders_before = cp
        .metric("estuary_acme_orders_total{result=\"valid\"}")
        .await;
    let pebble_orders_before = stack.pebble.orders_logged();
    let again = cp.enroll(&sn, &csr).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body, r.body, "a cached answer must be byte-identical");
    assert_eq!(
        cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        orders_before
    );
    assert_eq!(stack.pebble.orders_logged(), pebble_orders_before);
    assert_eq!(cp.metric("estuary_cache_hits_total").await, 1.0);
    assert_eq!(
        cp.metric("estuary_enrollments_total{protocol=\"est\",result=\"cached\"}")
            .await,
        1.0
    );

    // A new key for the same name is a new CSR: a new certificate.
    let (csr2, _) = csr_for(&name);
    let third = cp.enroll(&sn, &csr2).await;
    assert_eq!(third.status, 200, "{}", third.text());
    assert_ne!(third.body, r.body);
    assert_eq!(
        cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        orders_before + 1.0
    );
}

/// (d) 50 distinct CSRs in flight at once are all issued.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_enrolments_are_all_issued() {
    let stack = stack();
    let cp = std::sync::Arc::new(ControlPlane::start(
        &stack,
        &CpOptions {
            budget_ms: 2000,
            ..CpOptions::default()
        },
    ));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let cp = std::sync::Arc::clone(&cp);
        tasks.push(tokio::spawn(async move {
            let sn = serial(&format!("d{i}"));
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
}

/// (e) A name outside the TSIG key's scope: a clear error, and nothing left in DNS.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_outside_the_keys_scope_fails_clearly_and_leaves_nothing() {
    let stack = stack();
    // The key may write TXT only below iot.example.test; this RA is misconfigured for lab.
    let cp = ControlPlane::start(
        &stack,
        &CpOptions {
            parent: "lab.example.test".into(),
            ..CpOptions::default()
        },
    );
    let sn = serial("sn-e");
    let name = format!("{sn}.lab.example.test");
    let (csr, _) = csr_for(&name);
    let r = cp.enroll(&sn, &csr).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let body = r.text();
    assert!(
        body.contains("REFUSED"),
        "the reason names the cause: {body}"
    );
    assert!(
        !body.contains(&stack.bind.secret_b64),
        "secret leaked: {body}"
    );
    assert!(
        !cp.log_text().contains(&stack.bind.secret_b64),
        "secret in the log"
    );
    let txt = stack
        .bind
        .txt_after_removal(&format!("_acme-challenge.{name}"), Duration::from_secs(5))
        .expect("dig");
    assert!(txt.is_empty(), "{txt:?}");
    assert_eq!(
        cp.metric("estuary_enrollments_total{protocol=\"est\",result=\"failed\"}")
            .await,
        1.0
    );
    // The retry learns the same reason (remembered), it does not hang.
    let again = cp.enroll(&sn, &csr).await;
    assert_eq!(again.status, 502, "{}", again.text());
}

/// One certificate per CSR: when another replica cached a certificate for the CSR while this
/// one was issuing (both held the lock, e.g. after a Redis failover lost it), the device gets
/// the one cached first, not a second one.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_issuance_for_one_csr_answers_with_the_certificate_cached_first() {
    use sha2::{Digest, Sha256};
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let sn = serial("sn-first");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let first = cp.enroll(&sn, &csr).await;
    assert_eq!(first.status, 200, "{}\n{}", first.text(), cp.log_text());

    // The cached chain, found by the CSR's digest whatever the key layout.
    let digest = hex::encode(Sha256::digest(&csr));
    let key_of = |kind: &str| -> Option<String> {
        let keys = stack
            .redis
            .cli(&["KEYS", &format!("*{digest}*")])
            .expect("KEYS");
        keys.lines()
            .find(|k| k.contains(&format!(":{kind}:")))
            .map(str::to_string)
    };
    let cert_key = key_of("cert").expect("the certificate is cached");
    let cached = stack.redis.cli(&["GET", &cert_key]).expect("GET");
    stack.redis.cli(&["DEL", &cert_key]).expect("DEL");

    // The same CSR again misses the cache and orders anew; while that order runs, "another
    // replica" caches the first certificate.
    let orders_before = stack.pebble.orders_logged();
    let again = {
        let (url, idevid, sn, csr) = (cp.url(""), cp.idevid_header(&sn), sn.clone(), csr.clone());
        tokio::spawn(async move { enroll_at(&url, &sn, &idevid, &csr).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while key_of("order").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no second order was placed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack
        .redis
        .cli(&[
            "SET",
            &cert_key,
            cached.strip_suffix('\n').unwrap_or(&cached),
            "EX",
            "3600",
        ])
        .expect("SET");
    let again = again.await.expect("the request");
    assert_eq!(again.status, 200, "{}\n{}", again.text(), cp.log_text());
    assert_eq!(
        stack.pebble.orders_logged(),
        orders_before + 1,
        "a second order ran"
    );
    assert_eq!(
        again.body, first.body,
        "the device must get the certificate cached first, not the second one"
    );
    assert!(cp
        .log_text()
        .contains("another replica cached a certificate for this CSR first"));
}

/// (f) The process is killed after it answered "pending"; a fresh one finishes the enrolment.
#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_process_completes_what_a_killed_one_left_pending() {
    let stack = stack();
    let opts = CpOptions {
        budget_ms: 1,
        retry_after_s: 1,
        lock_ttl_s: 3,
        ..CpOptions::default()
    };
    let mut first = ControlPlane::start(&stack, &opts);
    let sn = serial("sn-f");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = first.enroll(&sn, &csr).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    first.kill();
    assert!(!first.is_running());

    let second = ControlPlane::start(
        &stack,
        &CpOptions {
            budget_ms: 3000,
            ..opts
        },
    );
    let done = second
        .enroll_until_done(&sn, &csr, Duration::from_secs(60))
        .await;
    assert_eq!(done.status, 200, "{}\n{}", done.text(), second.log_text());
    let tmp = TempDir::new("f").expect("tmp");
    let certs = pem_blocks(&pkcs7_to_pem(tmp.path(), &done.body));
    assert!(!certs.is_empty());
    // No challenge record is left behind by the killed process either.
    let txt = stack
        .bind
        .txt_after_removal(
            &format!("_acme-challenge.{sn}.{PARENT}"),
            Duration::from_secs(5),
        )
        .expect("dig");
    assert!(txt.is_empty(), "{txt:?}");
}

/// (g) Redis restarts mid-run: 503 + Retry-After while it is down, recovery without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_rides_out_a_redis_restart() {
    let mut stack = stack();
    let mut cp = ControlPlane::start(&stack, &CpOptions::default());
    let sn = serial("sn-g1");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    assert_eq!(cp.enroll(&sn, &csr).await.status, 200);

    stack.redis.stop();
    let sn2 = serial("sn-g2");
    let (csr2, _) = csr_for(&format!("{sn2}.{PARENT}"));
    let down = cp.enroll(&sn2, &csr2).await;
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(down.header("retry-after").is_some());
    let ready = http(&cp.url("/readyz"), "GET", &[], Vec::new()).await;
    assert_eq!(ready.status, 503);
    assert!(cp.is_running(), "the control plane crashed without Redis");

    stack.redis.start_again().expect("restart redis");
    // An empty Redis: the account is created again, the cache is cold.
    let mut status = 0;
    for _ in 0..20 {
        let r = cp.enroll(&sn2, &csr2).await;
        status = r.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status, 200, "{}", cp.log_text());
    let ready = http(&cp.url("/readyz"), "GET", &[], Vec::new()).await;
    assert_eq!(ready.status, 200);
}

/// (h) Garbage, truncated and wrongly-signed CSRs get typed 4xx errors; the process lives on.
#[tokio::test(flavor = "multi_thread")]
async fn bad_csrs_get_typed_errors_never_a_crash() {
    let stack = stack();
    let mut cp = ControlPlane::start(&stack, &CpOptions::default());
    let sn = serial("sn-h");
    let (good, _) = csr_for(&format!("{sn}.{PARENT}"));

    let garbage = cp.enroll(&sn, b"this is not DER at all").await;
    assert_eq!(garbage.status, 400, "{}", garbage.text());
    assert!(garbage.text().starts_with("bad CSR"), "{}", garbage.text());

    for cut in [1, good.len() / 2, good.len() - 1] {
        let r = cp.enroll(&sn, &good[..cut]).await;
        assert_eq!(r.status, 400, "truncated at {cut}: {}", r.text());
    }

    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    let r = cp.enroll(&sn, &bad_sig).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().to_lowercase().contains("signature"),
        "{}",
        r.text()
    );

    // Another device's name: refused by policy, not sent to the CA.
    let (other, _) = csr_for(&format!("someone-else.{PARENT}"));
    let r = cp.enroll(&sn, &other).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Bad serial header, missing token, wrong content type.
    let r = http(
        &cp.url("/estuary/v1/enroll"),
        "POST",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/pkcs10"),
            ("estuary-device-serial", "not a label!"),
            ("estuary-operation", "simpleenroll"),
        ],
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http(
        &cp.url("/estuary/v1/enroll"),
        "POST",
        &[("content-type", "application/pkcs10")],
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http(
        &cp.url("/estuary/v1/enroll"),
        "POST",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "text/plain"),
            ("estuary-device-serial", &sn),
            ("estuary-operation", "simpleenroll"),
        ],
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 415);

    assert!(cp.is_running());
    assert_eq!(
        cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        0.0
    );
    assert_eq!(cp.metric("estuary_dns_updates_total").await, 0.0);
    assert_eq!(
        cp.metric("estuary_enrollments_total{protocol=\"est\",result=\"rejected\"}")
            .await,
        6.0
    );
}

/// cacerts and csrattrs through the internal API.
#[tokio::test(flavor = "multi_thread")]
async fn cacerts_and_csrattrs_describe_the_ca_and_the_device() {
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let auth = format!("Bearer {TOKEN}");
    let r = http(
        &cp.url("/estuary/v1/cacerts"),
        "GET",
        &[("authorization", &auth)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let tmp = TempDir::new("cacerts").expect("tmp");
    let pem = pkcs7_to_pem(tmp.path(), &r.body);
    // Before any issuance, exactly est.ca_certs_file: the harness configures Pebble's root and
    // issuing intermediate.
    let configured = std::fs::read_to_string(&stack.pebble.issuer_chain_pem).expect("chain");
    assert_eq!(pem_blocks(&pem), pem_blocks(&configured));
    let root = std::fs::read_to_string(&stack.pebble.issuer_root_pem).expect("root");
    assert_eq!(
        pem_blocks(&pem)[0],
        pem_blocks(&root)[0],
        "the root comes first"
    );
    // A control plane whose est.ca_certs_file holds Pebble's root alone learns Pebble's
    // intermediate from its first issued chain (draft-17): /cacerts is then the intermediate,
    // then the root.
    let learner = ControlPlane::start(
        &stack,
        &CpOptions {
            extra_env: vec![(
                "ESTUARY_EST__CA_CERTS_FILE".to_string(),
                stack.pebble.issuer_root_pem.display().to_string(),
            )],
            ..CpOptions::default()
        },
    );
    let cacerts_of = |cp: &ControlPlane| {
        let url = cp.url("/estuary/v1/cacerts");
        let auth = auth.clone();
        let dir = tmp.path().to_path_buf();
        async move {
            let r = http(&url, "GET", &[("authorization", &auth)], Vec::new()).await;
            assert_eq!(r.status, 200);
            pem_blocks(&pkcs7_to_pem(&dir, &r.body))
        }
    };
    let file = pem_blocks(&configured);
    assert_eq!(
        cacerts_of(&learner).await,
        vec![file[0].clone()],
        "the root alone"
    );
    let sn = serial("sn-cacerts");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = learner
        .enroll_until_done(&sn, &csr, Duration::from_secs(60))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        cacerts_of(&learner).await,
        vec![file[1].clone(), file[0].clone()],
        "the learned intermediate, then the root\n{}",
        learner.log_text()
    );
    // The other replica (the root and the intermediate in its file) serves each once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        cacerts_of(&cp).await,
        vec![file[1].clone(), file[0].clone()]
    );

    let r = http(
        &cp.url("/estuary/v1/csrattrs"),
        "GET",
        &[
            ("authorization", &auth),
            ("estuary-device-serial", "SN-77"),
            ("estuary-client-cert", &cp.idevid_header("SN-77")),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/csrattrs"));
    let attrs = estuary_proto::csrattrs::CsrAttrs::from_der(&r.body).expect("csrattrs DER");
    assert_eq!(attrs.requested_dns_names(), vec![format!("sn-77.{PARENT}")]);
    let r = http(&cp.url("/estuary/v1/csrattrs"), "GET", &[], Vec::new()).await;
    assert_eq!(r.status, 401);
}
