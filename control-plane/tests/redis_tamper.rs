//! Redis is not trusted (issue 12, item 6): whoever can write to it must not make Estuary hand a
//! device another device's (or an expired, or a garbage) certificate, nor make it send requests
//! signed with the ACME account key to another server. Against real Redis, Pebble and BIND9,
//! with the control plane as a real process; Redis is written directly, as an attacker would.
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use estuary_tests::acme_ca::{CaOptions, TestAcmeCa};
use estuary_tests::util::TempDir;
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

/// The harness's control planes use the default `redis.key_prefix`.
const PREFIX: &str = "estuary";

fn serial(tag: &str) -> String {
    // Unique per run so that nothing is shared between tests or runs.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

/// The Redis key of a CSR's entry of `kind` (`cert`, `order`): `<prefix>:<kind>:{<hex SHA-256 of
/// the whole CSR DER>}` (`{…}` is the Cluster hash tag), as the README and store.rs describe it.
fn redis_key(kind: &str, csr_der: &[u8]) -> String {
    format!(
        "{PREFIX}:{kind}:{{{}}}",
        hex::encode(Sha256::digest(csr_der))
    )
}

/// A TCP listener on 127.0.0.1 that counts the connections it gets: (port, count).
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, connections)
}

async fn redis(stack: &Stack) -> redis::aio::MultiplexedConnection {
    redis::Client::open(stack.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// What a device sees in its leaf certificate: (public key PEM, subjectAltName text).
fn leaf_of_pem(dir: &TempDir, chain_pem: &str) -> (String, String) {
    let leaf = dir.path().join("leaf.pem");
    let first = pem_blocks(chain_pem)
        .into_iter()
        .next()
        .expect("a certificate");
    std::fs::write(&leaf, first).expect("write leaf");
    let pubkey = sh(Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&leaf));
    let san = sh(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf));
    (pubkey.trim().to_string(), san)
}

/// The leaf of an enrolment answer (PKCS#7).
fn leaf_of(dir: &TempDir, r: &Resp) -> (String, String) {
    leaf_of_pem(dir, &pkcs7_to_pem(dir.path(), &r.body))
}

/// A CSR for `name` (P-256, CN = SAN = name) and a self-signed certificate for the same key and
/// name that expired on 2021-01-01.
fn csr_and_expired_cert(name: &str) -> (Vec<u8>, String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key).expect("csr");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&key).expect("self-signed");
    (csr.der().to_vec(), key.public_key_pem(), expired.pem())
}

const VALID_ORDERS: &str = "estuary_acme_orders_total{result=\"valid\"}";
const REJECTED: &str = "estuary_cache_rejected_total";

/// Device Y's cache entry overwritten with device X's chain: Y gets a fresh certificate with its
/// own key and name, never X's, and the cache then holds Y's.
#[tokio::test(flavor = "multi_thread")]
async fn another_devices_chain_in_the_cache_is_dropped_and_a_fresh_certificate_issued() {
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let tmp = TempDir::new("tamper-a").expect("tmp");
    let (sn_x, sn_y) = (serial("sn-x"), serial("sn-y"));
    let (name_x, name_y) = (format!("{sn_x}.{PARENT}"), format!("{sn_y}.{PARENT}"));
    let (csr_a, _) = csr_for(&name_x);
    let (csr_b, pub_b) = csr_for(&name_y);
    let first_a = cp.enroll(&sn_x, &csr_a).await;
    assert_eq!(first_a.status, 200, "{}\n{}", first_a.text(), cp.log_text());
    let first_b = cp.enroll(&sn_y, &csr_b).await;
    assert_eq!(first_b.status, 200, "{}\n{}", first_b.text(), cp.log_text());

    let mut r = redis(&stack).await;
    let chain_a: String = r.get(redis_key("cert", &csr_a)).await.expect("A cached");
    let _: () = r
        .set(redis_key("cert", &csr_b), &chain_a)
        .await
        .expect("tamper");
    let orders_before = cp.metric(VALID_ORDERS).await;

    let again = cp.enroll(&sn_y, &csr_b).await;
    assert_eq!(again.status, 200, "{}\n{}", again.text(), cp.log_text());
    assert!(
        again.body != first_a.body,
        "device Y was handed device X's chain"
    );
    assert!(
        again.body != first_b.body,
        "a fresh certificate was expected"
    );
    let (leaf_key, leaf_san) = leaf_of(&tmp, &again);
    assert_eq!(leaf_key, pub_b.trim(), "the leaf holds B's key");
    assert!(leaf_san.contains(&format!("DNS:{name_y}")), "{leaf_san}");
    assert!(!leaf_san.contains(&name_x), "{leaf_san}");

    assert_eq!(cp.metric(REJECTED).await, 1.0);
    assert_eq!(cp.metric(VALID_ORDERS).await, orders_before + 1.0);
    assert_eq!(
        cp.metric("estuary_enrollments_total{protocol=\"est\",result=\"cached\"}")
            .await,
        0.0
    );
    // The tampered entry is replaced by B's own chain, which the next identical CSR gets.
    let stored: String = r.get(redis_key("cert", &csr_b)).await.expect("B cached");
    assert_ne!(stored, chain_a);
    assert_eq!(leaf_of_pem(&tmp, &stored).0, pub_b.trim());
    let cached = cp.enroll(&sn_y, &csr_b).await;
    assert_eq!(cached.status, 200, "{}", cached.text());
    assert!(
        cached.body == again.body,
        "the cache serves B's fresh chain"
    );
    assert_eq!(cp.metric("estuary_cache_hits_total").await, 1.0);
    assert_eq!(cp.metric(REJECTED).await, 1.0);
    // The warning names the reason, not the certificate.
    let log = cp.log_text();
    assert!(log.contains("does not hold the CSR's public key"), "{log}");
    assert!(!log.contains("BEGIN CERTIFICATE"), "{log}");
}

/// Garbage, then an expired certificate with the device's own key and name, in the cache: each
/// time a fresh certificate that has not expired.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_or_garbage_cached_chain_is_replaced_by_a_fresh_certificate() {
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let tmp = TempDir::new("tamper-b").expect("tmp");
    let sn = serial("sn-exp");
    let name = format!("{sn}.{PARENT}");
    let (csr, pubkey, expired) = csr_and_expired_cert(&name);
    let first = cp.enroll(&sn, &csr).await;
    assert_eq!(first.status, 200, "{}\n{}", first.text(), cp.log_text());
    let mut r = redis(&stack).await;
    let garbage = "tampered-garbage-7f3a9c";

    let mut previous = first.body.clone();
    for (n, planted) in [garbage, expired.as_str()].into_iter().enumerate() {
        let _: () = r
            .set(redis_key("cert", &csr), planted)
            .await
            .expect("tamper");
        let again = cp.enroll(&sn, &csr).await;
        assert_eq!(again.status, 200, "{}\n{}", again.text(), cp.log_text());
        assert!(again.body != previous, "a fresh certificate was expected");
        let (leaf_key, leaf_san) = leaf_of(&tmp, &again);
        assert_eq!(leaf_key, pubkey.trim());
        assert!(leaf_san.contains(&format!("DNS:{name}")), "{leaf_san}");
        // Not the planted certificate: it verifies against Pebble's root and has not expired.
        let leaf = tmp.path().join("leaf.pem");
        sh(Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "0", "-in"])
            .arg(&leaf));
        let issuer = sh(Command::new("openssl")
            .args(["x509", "-noout", "-issuer", "-in"])
            .arg(&leaf));
        assert!(
            !issuer.contains(&name),
            "self-signed planted leaf served: {issuer}"
        );
        assert_eq!(cp.metric(REJECTED).await, (n + 1) as f64);
        previous = again.body;
    }
    assert_eq!(cp.metric(VALID_ORDERS).await, 3.0);
    let log = cp.log_text();
    assert!(log.contains("the chain is not PEM certificates"), "{log}");
    assert!(log.contains("the leaf certificate has expired"), "{log}");
    assert!(!log.contains(garbage), "cache content in the log");
}

/// A stored order URL on another origin (another port; a user-information trick naming the CA
/// before the `@`) is never fetched: the enrolment places a fresh order and succeeds, and a
/// listener on that other origin sees no connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_order_url_on_another_origin_is_never_fetched() {
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let tmp = TempDir::new("tamper-c").expect("tmp");
    let (port, connections) = counting_listener().await;

    let ca_authority = stack
        .pebble
        .directory_url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .expect("authority")
        .to_string();
    let evil = [
        format!("https://127.0.0.1:{port}/my-order/evil"),
        format!("https://{ca_authority}@127.0.0.1:{port}/my-order/evil"),
    ];
    let mut r = redis(&stack).await;
    for (i, url) in evil.iter().enumerate() {
        let sn = serial(&format!("sn-order{i}"));
        let name = format!("{sn}.{PARENT}");
        let (csr, pubkey) = csr_for(&name);
        let _: () = r
            .set_ex(redis_key("order", &csr), url, 300)
            .await
            .expect("plant the order URL");
        let done = cp
            .enroll_until_done(&sn, &csr, Duration::from_secs(60))
            .await;
        assert_eq!(
            done.status,
            200,
            "{url}: {}\n{}",
            done.text(),
            cp.log_text()
        );
        let (leaf_key, leaf_san) = leaf_of(&tmp, &done);
        assert_eq!(leaf_key, pubkey.trim());
        assert!(leaf_san.contains(&format!("DNS:{name}")), "{leaf_san}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the control plane connected to the planted origin\n{}",
        cp.log_text()
    );
    assert_eq!(cp.metric(VALID_ORDERS).await, 2.0);
    let log = cp.log_text();
    assert_eq!(
        log.matches("not on the ACME directory's origin").count(),
        2,
        "{log}"
    );
    // The listener would have seen a connection.
    let _probe = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// A stored RFC 9444 pre-authorisation of the parent whose URL is on another origin is not the
/// CA's: it is deleted and the parent authorised afresh (one newAuthz at the strict test CA),
/// and the other origin is never contacted.
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_preauthorisation_on_another_origin_is_replaced() {
    let stack = stack();
    let ca = TestAcmeCa::start(CaOptions::rfc9444(stack.bind.addr)).expect("test CA");
    let cp = ControlPlane::start(
        &stack,
        &CpOptions {
            budget_ms: 8000,
            extra_env: vec![
                (
                    "ESTUARY_ACME__DIRECTORY_URL".into(),
                    ca.directory_url.clone(),
                ),
                (
                    "ESTUARY_ACME__TLS_ROOT_FILE".into(),
                    ca.tls_ca_pem.display().to_string(),
                ),
                (
                    "ESTUARY_EST__CA_CERTS_FILE".into(),
                    ca.issuer_root_pem.display().to_string(),
                ),
            ],
            ..CpOptions::default()
        },
    );
    let (port, connections) = counting_listener().await;
    // store.rs: `<prefix>:preauth:{<hex SHA-256 of the directory URL>:<parent>}`, JSON.
    let key = format!(
        "{PREFIX}:preauth:{{{}:{PARENT}}}",
        hex::encode(Sha256::digest(ca.directory_url.as_bytes()))
    );
    let week = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 7 * 86_400;
    let planted = format!(r#"{{"url":"https://127.0.0.1:{port}/authz/evil","expires":{week}}}"#);
    let mut r = redis(&stack).await;
    let _: () = r.set(&key, &planted).await.expect("plant");

    let sn = serial("sn-pre");
    let (csr, pubkey) = csr_for(&format!("{sn}.{PARENT}"));
    let done = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(60))
        .await;
    assert_eq!(done.status, 200, "{}\n{}", done.text(), cp.log_text());
    let tmp = TempDir::new("tamper-d").expect("tmp");
    assert_eq!(leaf_of(&tmp, &done).0, pubkey.trim());
    let stats = ca.stats();
    assert_eq!(stats.new_authz, 1, "the parent was authorised afresh");
    assert_eq!(stats.orders_via_ancestor, 1, "{stats:?}");
    let stored: String = r.get(&key).await.expect("a pre-authorisation is stored");
    assert_ne!(stored, planted);
    let ca_origin = ca.directory_url.trim_end_matches("/directory");
    assert!(
        stored.contains(&format!("\"url\":\"{ca_origin}/")),
        "{stored} is not on {ca_origin}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// Upgrade from a version without Cluster hash tags: a chain cached under the old untagged key
/// `<prefix>:cert:<sha256>` is still served (a cache hit, no new order), and it is checked like
/// any cached chain: another device's chain planted there is dropped, never served.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_cached_under_the_untagged_key_of_earlier_versions_is_served_if_it_fits() {
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let tmp = TempDir::new("tamper-old").expect("tmp");
    let (sn_x, sn_y) = (serial("sn-ox"), serial("sn-oy"));
    let (name_x, name_y) = (format!("{sn_x}.{PARENT}"), format!("{sn_y}.{PARENT}"));
    let (csr_a, _) = csr_for(&name_x);
    let (csr_b, pub_b) = csr_for(&name_y);
    let old_key = |csr: &[u8]| format!("{PREFIX}:cert:{}", hex::encode(Sha256::digest(csr)));
    let first_a = cp.enroll(&sn_x, &csr_a).await;
    assert_eq!(first_a.status, 200, "{}\n{}", first_a.text(), cp.log_text());

    // As an earlier version left it: only under the untagged key.
    let mut r = redis(&stack).await;
    let chain_a: String = r
        .get_del(redis_key("cert", &csr_a))
        .await
        .expect("A cached");
    let _: () = r.set(old_key(&csr_a), &chain_a).await.expect("old layout");
    let orders_before = cp.metric(VALID_ORDERS).await;
    let again = cp.enroll(&sn_x, &csr_a).await;
    assert_eq!(again.status, 200, "{}\n{}", again.text(), cp.log_text());
    assert!(again.body == first_a.body, "the old entry was not served");
    assert_eq!(cp.metric("estuary_cache_hits_total").await, 1.0);
    assert_eq!(cp.metric(VALID_ORDERS).await, orders_before);

    // Device X's chain under Y's old key: Y gets its own fresh certificate.
    let _: () = r.set(old_key(&csr_b), &chain_a).await.expect("tamper");
    let b = cp.enroll(&sn_y, &csr_b).await;
    assert_eq!(b.status, 200, "{}\n{}", b.text(), cp.log_text());
    assert!(
        b.body != first_a.body,
        "device Y was handed device X's chain"
    );
    let (leaf_key, leaf_san) = leaf_of(&tmp, &b);
    assert_eq!(leaf_key, pub_b.trim(), "the leaf holds B's key");
    assert!(leaf_san.contains(&format!("DNS:{name_y}")), "{leaf_san}");
    assert_eq!(cp.metric(REJECTED).await, 1.0);
    let left: Option<String> = r.get(old_key(&csr_b)).await.expect("GET");
    assert!(left.is_none(), "the misfitting old entry was not dropped");
}
