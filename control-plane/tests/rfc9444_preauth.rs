//! Seed step 1 against the strict test ACME CA (`estuary_tests::acme_ca`, RFC 8555 + RFC 9444),
//! real BIND9 and Redis, and the control plane as a real process: the parent domain is
//! pre-authorised once (newAuthz + one DNS-01), device orders name it as `ancestorDomain` and
//! need no DNS of their own; renewal before expiry; fall-back when the CA refuses; typed errors
//! for bad answers.
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use estuary_tests::acme_ca::{CaOptions, Fault, TestAcmeCa};
use estuary_tests::util::TempDir;

fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

fn opts_for(ca: &TestAcmeCa, extra: &[(&str, &str)]) -> CpOptions {
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
    ];
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    CpOptions {
        budget_ms: 8000,
        extra_env: env,
        ..CpOptions::default()
    }
}

/// Enrols `n` new devices at once (spread over the given control planes); returns failures.
async fn enrol_many(cps: &[Arc<ControlPlane>], tag: &str, n: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let cp = Arc::clone(&cps[i % cps.len()]);
        let sn = serial(&format!("{tag}{i}"));
        tasks.push(tokio::spawn(async move {
            let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
            let r = cp
                .enroll_until_done(&sn, &csr, Duration::from_secs(120))
                .await;
            (sn, r.status, r.text(), r.body)
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        let (sn, status, text, _) = t.await.expect("task");
        if status != 200 {
            failures.push(format!("{sn}: {status} {text}"));
        }
    }
    failures
}

fn bind_adds(bind: &estuary_tests::bind::Bind) -> Vec<String> {
    bind.log()
        .lines()
        .filter(|l| l.contains("updating zone") && l.contains("adding an RR"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_enrolments_need_one_parent_validation_and_no_device_dns() {
    let stack = stack();
    let ca = TestAcmeCa::start(CaOptions::rfc9444(stack.bind.addr)).expect("test CA");
    let serial_before = stack.bind.soa_serial().expect("SOA");
    let cp = Arc::new(ControlPlane::start(&stack, &opts_for(&ca, &[])));

    let failures = enrol_many(&[Arc::clone(&cp)], "p", 100).await;
    assert!(
        failures.is_empty(),
        "not issued:\n{}\n{}",
        failures.join("\n"),
        cp.log_text()
    );
    let s = ca.stats();
    println!("RFC 9444 CA after 100 enrolments: {s:?}");
    assert_eq!(s.new_authz, 1, "one pre-authorisation of the parent");
    assert_eq!(s.dns_validations, 1, "exactly one DNS-01 validation");
    assert_eq!(
        s.orders_via_ancestor, 100,
        "every order satisfied by the parent"
    );
    assert_eq!(s.certificates, 100);
    // Our count and BIND's agree: one add and one delete, both for the parent only (the
    // delete goes after the answers: waited for).
    let left = stack
        .bind
        .txt_after_removal(&format!("_acme-challenge.{PARENT}"), Duration::from_secs(5))
        .expect("dig");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(cp.metric("estuary_dns_updates_total").await, 2.0);
    assert_eq!(stack.bind.soa_serial().expect("SOA") - serial_before, 2);
    let adds = bind_adds(&stack.bind);
    assert_eq!(adds.len(), 1, "{adds:?}");
    assert!(
        adds[0].contains(&format!("_acme-challenge.{PARENT}")),
        "{adds:?}"
    );
    assert_eq!(
        cp.metric("estuary_acme_preauthorizations_total{result=\"valid\"}")
            .await,
        1.0
    );
    assert_eq!(
        cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        100.0
    );
    assert!(
        !cp.log_text().contains("does not offer pre-authorisation"),
        "no fall-back expected"
    );

    // openssl, independently: a device certificate chains to the CA's root and names the device.
    let sn = serial("check");
    let name = format!("{sn}.{PARENT}");
    let (csr, pubkey) = csr_for(&name);
    let r = cp.enroll(&sn, &csr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tmp = TempDir::new("rfc9444").expect("tmp");
    let certs = pem_blocks(&pkcs7_to_pem(tmp.path(), &r.body));
    let leaf = tmp.path().join("leaf.pem");
    std::fs::write(&leaf, &certs[0]).expect("write");
    let verify = sh(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca.issuer_root_pem)
        .arg(&leaf));
    assert!(verify.contains(": OK"), "{verify}");
    let leaf_pub = sh(Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&leaf));
    assert_eq!(leaf_pub.trim(), pubkey.trim());
    assert_eq!(ca.stats().dns_validations, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_preauthorisation_and_renew_it_once_before_expiry() {
    let stack = stack();
    let mut opts = CaOptions::rfc9444(stack.bind.addr);
    opts.authz_lifetime = Duration::from_secs(6);
    let ca = TestAcmeCa::start(opts).expect("test CA");
    let env = [("ESTUARY_ACME__PREAUTH_RENEW_MARGIN_S", "2")];
    let a = Arc::new(ControlPlane::start(&stack, &opts_for(&ca, &env)));
    let b = Arc::new(ControlPlane::start(&stack, &opts_for(&ca, &env)));
    let started = Instant::now();
    let failures = enrol_many(&[Arc::clone(&a), Arc::clone(&b)], "r", 20).await;
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        a.log_text()
    );
    assert_eq!(
        ca.stats().new_authz,
        1,
        "one pre-authorisation for both replicas"
    );
    assert_eq!(ca.stats().dns_validations, 1);

    // Past the renewal point (lifetime 6 s, margin 2 s): the next orders renew it, once.
    let wait = Duration::from_secs(5).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let failures = enrol_many(&[Arc::clone(&a), Arc::clone(&b)], "s", 20).await;
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        b.log_text()
    );
    let s = ca.stats();
    println!("after renewal: {s:?}");
    assert_eq!(s.new_authz, 2, "renewed once across both replicas");
    assert_eq!(s.dns_validations, 2);
    assert_eq!(s.certificates, 40);
    // The last removal may still be on its way (it goes after the answers).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let total =
        a.metric("estuary_dns_updates_total").await + b.metric("estuary_dns_updates_total").await;
    assert_eq!(total, 4.0, "only the parent's two DNS-01 rounds");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_that_refuses_subdomain_authorisation_falls_back_to_per_name_dns01() {
    let stack = stack();
    let mut opts = CaOptions::rfc9444(stack.bind.addr);
    opts.subdomain_auth = false; // announced in the directory, refused in newAuthz
    let ca = TestAcmeCa::start(opts).expect("test CA");
    let cp = Arc::new(ControlPlane::start(&stack, &opts_for(&ca, &[])));
    let failures = enrol_many(&[Arc::clone(&cp)], "f", 10).await;
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        cp.log_text()
    );
    let s = ca.stats();
    assert_eq!(s.new_authz, 0);
    assert_eq!(s.dns_validations, 10, "one DNS-01 per device");
    assert_eq!(s.certificates, 10);
    assert_eq!(
        cp.metric("estuary_acme_preauth_fallbacks_total{reason=\"subdomain_refused\"}")
            .await,
        1.0
    );
    let log = cp.log_text();
    assert_eq!(
        log.matches("does not offer pre-authorisation").count(),
        1,
        "the fall-back is logged once"
    );
    let adds = bind_adds(&stack.bind);
    assert_eq!(adds.len(), 10, "{adds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_without_new_authz_falls_back_and_ancestor_refusal_too() {
    let stack = stack();
    let mut opts = CaOptions::rfc9444(stack.bind.addr);
    opts.new_authz = false;
    let ca = TestAcmeCa::start(opts).expect("test CA");
    let cp = Arc::new(ControlPlane::start(&stack, &opts_for(&ca, &[])));
    let failures = enrol_many(&[Arc::clone(&cp)], "n", 3).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        cp.metric("estuary_acme_preauth_fallbacks_total{reason=\"no_new_authz\"}")
            .await,
        1.0
    );
    assert_eq!(ca.stats().dns_validations, 3);

    let mut opts = CaOptions::rfc9444(stack.bind.addr);
    opts.ancestor_domain = false;
    let ca2 = TestAcmeCa::start(opts).expect("test CA");
    let cp2 = Arc::new(ControlPlane::start(&stack, &opts_for(&ca2, &[])));
    let failures = enrol_many(&[Arc::clone(&cp2)], "m", 3).await;
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        cp2.log_text()
    );
    assert_eq!(
        cp2.metric("estuary_acme_preauth_fallbacks_total{reason=\"ancestor_refused\"}")
            .await,
        1.0
    );
    assert_eq!(ca2.stats().certificates, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_answers_from_the_ca_get_typed_errors_and_nothing_stays_stuck() {
    let stack = stack();
    let ca = TestAcmeCa::start(CaOptions::rfc9444(stack.bind.addr)).expect("test CA");
    let cp = ControlPlane::start(
        &stack,
        &opts_for(
            &ca,
            &[
                ("ESTUARY_ACME__ORDER_TIMEOUT_S", "3"),
                ("ESTUARY_ENROLL__FAILURE_TTL_S", "1"),
            ],
        ),
    );

    // 1. The parent's challenge is never validated: a timeout, not a hang.
    ca.set_fault(Fault::NeverValidate);
    let sn = serial("t");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let t = Instant::now();
    let r = cp
        .enroll_past_pending(&sn, &csr, Duration::from_secs(40))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());

    // The CA recovers: the same device enrols (the lock of the timed-out attempt is gone).
    ca.set_fault(Fault::None);
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(40))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());

    // 2. A problem document on newOrder: its type decides the answer.
    ca.set_fault(Fault::NewOrderProblem("caa", 403));
    let sn = serial("c");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(20))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("Caa"), "{}", r.text());

    // 3. An order without its `finalize` field: a typed protocol error (502), no panic.
    ca.set_fault(Fault::OrderWithoutFinalize);
    let sn = serial("m");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(20))
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("not valid ACME"), "{}", r.text());

    ca.set_fault(Fault::None);
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(20))
        .await;
    // The failure was remembered for 1 s; after it, the same CSR is issued.
    let r = if r.status == 502 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        cp.enroll_until_done(&sn, &csr, Duration::from_secs(20))
            .await
    } else {
        r
    };
    assert_eq!(r.status, 200, "{}", r.text());
}
