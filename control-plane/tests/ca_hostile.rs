//! A hostile ACME CA (issue 13, "No path leaves state behind"): the strict test CA
//! (`estuary_tests::acme_ca`) answers problem documents with odd `type`s, a huge multi-byte
//! `detail` and a malformed `Retry-After`, or objects whose `expires` is not RFC 3339. Each
//! enrolment gets a clean failure answer with a bounded reason, no issuance task is left
//! behind (no lock, no TXT record), and the control plane keeps serving. Both of our ACME
//! clients are exercised: instant-acme (a CA without `newAuthz`) and our own JWS requests
//! (RFC 9444 pre-authorisation).
mod common;

use std::time::Duration;

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

fn start_cp(stack: &Stack, ca: &TestAcmeCa) -> ControlPlane {
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
        ("ESTUARY_ACME__ORDER_TIMEOUT_S", "10".to_string()),
    ];
    ControlPlane::start(
        stack,
        &CpOptions {
            budget_ms: 8000,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..CpOptions::default()
        },
    )
}

/// The odd `type`s: an unknown URN with bidirectional-override characters, a URN that is not
/// ACME's, and a number where a string belongs.
const ODD_TYPES: [(u16, &str); 3] = [
    (400, r#""urn:ietf:params:acme:error:\u202eevil\u0000""#),
    (500, r#""about:blank""#),
    (403, "42"),
];

/// Enrols a new device under the current fault; asserts a clean failure answer and returns it.
async fn fails_cleanly(cp: &ControlPlane, tag: &str) -> Resp {
    let sn = serial(tag);
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(30))
        .await;
    assert!(
        (400..600).contains(&r.status),
        "{tag}: {} {}\n{}",
        r.status,
        r.text(),
        cp.log_text()
    );
    assert!(!r.text().trim().is_empty(), "{tag}: a reason");
    assert!(
        !r.text().contains(['\u{0}', '\u{7}', '\u{202e}']),
        "{tag}: control characters passed on: {:?}",
        r.text()
    );
    assert!(
        r.body.len() < 4096,
        "{tag}: the CA's detail is bounded, got {} bytes",
        r.body.len()
    );
    assert!(
        !cp.log_text().contains("panicked"),
        "{tag}: a panic\n{}",
        cp.log_text()
    );
    r
}

/// After the faults: a fresh device enrols, and no lock or TXT record is left.
async fn still_serves_and_left_nothing(stack: &Stack, ca: &TestAcmeCa, cp: &ControlPlane) {
    ca.set_fault(Fault::None);
    let sn = serial("sn-after");
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(60))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
    let mut conn = redis::Client::open(stack.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let locks: Vec<String> = conn.keys("estuary:lock:*").await.expect("KEYS");
    assert!(locks.is_empty(), "locks left: {locks:?}");
    let txt = stack
        .bind
        .txt_after_removal(&format!("_acme-challenge.{PARENT}"), Duration::from_secs(5))
        .expect("dig");
    assert!(txt.is_empty(), "the parent's TXT record left: {txt:?}");
}

/// instant-acme's path (the CA has no newAuthz): newOrder answers hostile problems.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_problem_documents_through_instant_acme_fail_cleanly() {
    let stack = stack();
    let mut opts = CaOptions::rfc9444(stack.bind.addr);
    opts.new_authz = false;
    let ca = TestAcmeCa::start(opts).expect("test CA");
    let cp = start_cp(&stack, &ca);
    for (status, type_json) in ODD_TYPES {
        ca.set_fault(Fault::HostileProblem { status, type_json });
        let r = fails_cleanly(&cp, "sn-ia").await;
        // The CA refused or spoke no ACME: the device's request is not at fault, nor is a
        // retry going to help.
        assert_eq!(r.status, 502, "{type_json}: {}", r.text());
    }
    still_serves_and_left_nothing(&stack, &ca, &cp).await;
}

/// Our own JWS path (RFC 9444 pre-authorisation): newAuthz answers hostile problems, then the
/// authorisation's `expires` is malformed (read after its DNS-01 record was published).
#[tokio::test(flavor = "multi_thread")]
async fn hostile_problems_and_malformed_dates_through_our_jws_client_fail_cleanly() {
    let stack = stack();
    let ca = TestAcmeCa::start(CaOptions::rfc9444(stack.bind.addr)).expect("test CA");
    let cp = start_cp(&stack, &ca);
    for (status, type_json) in ODD_TYPES {
        ca.set_fault(Fault::HostileProblem { status, type_json });
        let r = fails_cleanly(&cp, "sn-jws").await;
        assert_eq!(r.status, 502, "{type_json}: {}", r.text());
    }
    ca.set_fault(Fault::MalformedDates);
    let r = fails_cleanly(&cp, "sn-date").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("not RFC 3339"), "{}", r.text());
    still_serves_and_left_nothing(&stack, &ca, &cp).await;
}
