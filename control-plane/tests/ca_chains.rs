//! draft-ietf-acme-integrations-17 "Certificate Chains and Trust Anchors": the EST answer to an
//! enrolment is the end-entity certificate alone, and `/cacerts` the rest of the chain the ACME
//! CA returned, then the trust anchor. Real parts: the strict test CA
//! (`estuary_tests::acme_ca`, which can roll its issuing intermediate or send a wrong one),
//! BIND9, Redis, and the control plane as two processes sharing that Redis; `openssl verify`
//! checks what a device would.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use estuary_tests::acme_ca::{CaOptions, TestAcmeCa};
use estuary_tests::util::TempDir;
use redis::AsyncCommands;

const CHAIN_KEY: &str = "estuary:ca-chain:default";

fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

fn start_cp(stack: &Stack, ca: &TestAcmeCa, bundle: Option<&Path>) -> ControlPlane {
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
    if let Some(b) = bundle {
        env.push((
            "ESTUARY_EST__TRUST_BUNDLE_FILE".to_string(),
            b.display().to_string(),
        ));
    }
    ControlPlane::start(
        stack,
        &CpOptions {
            budget_ms: 8000,
            extra_env: env,
            ..CpOptions::default()
        },
    )
}

/// `GET /estuary/v1/cacerts`: the certificates, DER, in order.
async fn cacerts(cp: &ControlPlane) -> Vec<Vec<u8>> {
    let r = http(
        &cp.url("/estuary/v1/cacerts"),
        "GET",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    estuary_proto::pkcs7::decode_certs_only(&r.body).expect("PKCS#7 certs-only")
}

/// `/cacerts` of `cp` once it equals `want`, polled for at most 10 s (each replica reads Redis
/// again every few seconds).
async fn cacerts_become(cp: &ControlPlane, want: &[Vec<u8>], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = cacerts(cp).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /cacerts has {} certificates, not the {} expected\n{}",
            got.len(),
            want.len(),
            cp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn der_of(pem: &str) -> Vec<u8> {
    estuary_proto::pem::decode_certs(pem).expect("PEM")[0].clone()
}

/// Enrols a new device on `cp`: the answer's certificates (DER).
async fn enrol(cp: &ControlPlane, tag: &str) -> Vec<Vec<u8>> {
    let sn = serial(tag);
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(60))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
    estuary_proto::pkcs7::decode_certs_only(&r.body).expect("PKCS#7 certs-only")
}

/// `openssl verify -CAfile <cacerts> <leaf>`, /cacerts being the only trust store (its root is
/// the anchor, its intermediates are trusted as part of it as openssl does with -CAfile).
fn openssl_verifies(dir: &Path, tag: &str, cacerts: &[Vec<u8>], leaf: &[u8]) -> bool {
    let ca = dir.join(format!("{tag}-cacerts.pem"));
    std::fs::write(&ca, estuary_proto::pem::encode_certs(cacerts)).expect("write");
    let ee = dir.join(format!("{tag}-leaf.pem"));
    std::fs::write(&ee, estuary_proto::pem::encode_certs(&[leaf.to_vec()])).expect("write");
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg(&ee)
        .output()
        .expect("openssl")
        .status
        .success()
}

/// Before any issuance /cacerts is `est.ca_certs_file`; each issuance answers the end-entity
/// certificate alone; an intermediate the CA starts using shows up in the other replica's
/// /cacerts and trust bundle file without a restart (newest first, the older one kept); a chain
/// whose intermediate did not issue the certificate is not learned. The trust bundle file
/// follows.
#[tokio::test(flavor = "multi_thread")]
async fn cacerts_follows_the_cas_intermediates_across_replicas() {
    let stack = stack();
    let ca = TestAcmeCa::start(CaOptions::rfc9444(stack.bind.addr)).expect("test CA");
    let dir = TempDir::new("cp-ca-chains").expect("tmp");
    let bundle = dir.path().join("trust-bundle.pem");
    let a = start_cp(&stack, &ca, None);
    let b = start_cp(&stack, &ca, Some(&bundle));
    let root = der_of(&std::fs::read_to_string(&ca.issuer_root_pem).expect("root"));
    // The bundle file: /cacerts, then the IDevID CA (the whole client trust store of Envoy).
    let idevid_ca =
        der_of(&std::fs::read_to_string(&stack.manufacturer.cert_path).expect("manufacturer CA"));
    let bundle_is = |cacerts: &[Vec<u8>]| {
        let text = std::fs::read_to_string(&bundle).unwrap_or_default();
        let mut want = cacerts.to_vec();
        want.push(idevid_ca.clone());
        estuary_proto::pem::decode_certs(&text).ok() == Some(want)
    };

    // A fresh deployment: the file's certificates, and the bundle file written at start.
    cacerts_become(&b, std::slice::from_ref(&root), "before any issuance").await;
    assert!(bundle_is(std::slice::from_ref(&root)), "bundle at start");

    // The CA issues from intermediate 1.
    let i1 = der_of(
        &ca.rotate_intermediate("Test ACME intermediate 1")
            .expect("i1"),
    );
    let first = enrol(&a, "sn-i1").await;
    assert_eq!(
        first.len(),
        1,
        "simpleenroll answers the end-entity certificate only"
    );
    let want = vec![i1.clone(), root.clone()];
    cacerts_become(&b, &want, "after the first issuance").await;
    assert!(
        openssl_verifies(dir.path(), "first", &want, &first[0]),
        "the first certificate verifies with /cacerts as the only trust store"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bundle_is(&want) {
        assert!(
            Instant::now() < deadline,
            "bundle file after the first issuance"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It rolls to intermediate 2: served first, intermediate 1 kept for its certificates.
    let i2 = der_of(
        &ca.rotate_intermediate("Test ACME intermediate 2")
            .expect("i2"),
    );
    let second = enrol(&a, "sn-i2").await;
    assert_eq!(second.len(), 1);
    let want = vec![i2.clone(), i1.clone(), root.clone()];
    cacerts_become(&b, &want, "after the CA rolled its intermediate").await;
    assert!(openssl_verifies(dir.path(), "second", &want, &second[0]));
    assert!(openssl_verifies(
        dir.path(),
        "first-again",
        &want,
        &first[0]
    ));
    assert!(
        !openssl_verifies(
            dir.path(),
            "without-i2",
            &[i1.clone(), root.clone()],
            &second[0]
        ),
        "the check can fail: without intermediate 2 the second certificate does not verify"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bundle_is(&want) {
        assert!(Instant::now() < deadline, "bundle file after the roll");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A CA answer whose intermediate did not sign the certificate: the device still gets its
    // certificate, but nothing is learned.
    let stored: Option<String> = redis::Client::open(stack.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
        .get(CHAIN_KEY)
        .await
        .expect("GET");
    ca.rotate_intermediate("Test ACME intermediate 3")
        .expect("i3");
    let wrong = der_of(
        &ca.send_wrong_intermediate("Test ACME intermediate 3")
            .expect("wrong"),
    );
    let third = enrol(&a, "sn-wrong").await;
    assert_eq!(third.len(), 1);
    let after: Option<String> = redis::Client::open(stack.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
        .get(CHAIN_KEY)
        .await
        .expect("GET");
    assert_eq!(after, stored, "the wrong chain is not stored");
    assert_eq!(a.metric("estuary_ca_chain_refused_total").await, 1.0);
    assert!(
        a.log_text()
            .contains("the ACME CA returned a chain that is not the certificate's chain"),
        "{}",
        a.log_text()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now = cacerts(&b).await;
    assert_eq!(now, want, "/cacerts unchanged");
    assert!(!now.contains(&wrong));

    // Redis is not trusted: a CA certificate written there by hand that does not chain to
    // est.ca_certs_file (another root's), and garbage, are not served.
    let stranger = {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).expect("stranger CA").der().to_vec()
    };
    let mut tampered = estuary_proto::pem::encode_certs(&[stranger]);
    tampered.push_str(stored.as_deref().expect("a stored chain"));
    let _: () = redis::Client::open(stack.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
        .set(CHAIN_KEY, tampered)
        .await
        .expect("SET");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        cacerts(&b).await,
        want,
        "the tampered certificate is not served"
    );
    let _: () = redis::Client::open(stack.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
        .set(CHAIN_KEY, "not PEM at all")
        .await
        .expect("SET");
    cacerts_become(
        &b,
        std::slice::from_ref(&root),
        "garbage in Redis: the anchors alone",
    )
    .await;
}
