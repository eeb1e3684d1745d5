//! RFC 2136 UPDATE + TSIG (RFC 8945) against a real BIND9 `named`, checked with `dig`.
//!
//! Each test starts its own `named` (zone `example.test`, key allowed TXT below
//! `iot.example.test` only). Needs `apt-get install bind9 bind9-dnsutils`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_control_plane::config::dns::{DnsConfig, TsigAlgorithmName, TsigSecret};
use estuary_control_plane::ra::dns::update::{DnsError, DnsUpdater, TxtRecord};
use estuary_tests::bind::Bind;

fn config(bind: &Bind) -> DnsConfig {
    DnsConfig {
        server: bind.addr,
        zone: bind.zone.clone(),
        key_name: bind.key_name.clone(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret: TsigSecret::from_base64(&bind.secret_b64).expect("tsig-keygen wrote base64"),
        timeout_ms: 3000,
        ttl: 60,
        sweep_interval_s: 30,
    }
}

fn counted(cfg: DnsConfig) -> (DnsUpdater, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let updater = DnsUpdater::new(cfg)
        .expect("valid config")
        .with_update_counter(Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
    (updater, count)
}

/// UPDATE messages BIND applied: it bumps the SOA serial once per message that changed the
/// zone (the zone file starts at serial 1).
fn applied_updates(bind: &Bind) -> u32 {
    bind.soa_serial().expect("SOA serial") - 1
}

const A: &str = "_acme-challenge.sn1.iot.example.test";
const B: &str = "_acme-challenge.sn2.iot.example.test";

/// RFC 2136 §2.5.1 (add, two RRs in one message) and §2.5.4 (delete one RR by rdata).
#[tokio::test]
async fn publish_two_in_one_message_then_remove_each_exactly() {
    let bind = Bind::start().expect("start named");
    let (dns, sent) = counted(config(&bind));
    // Two devices, and a second value at the same name as the first (two orders in flight).
    let a1 = TxtRecord::new(A, "ZmlfgchdiT6m0yq0bY9G3Bm3aP2SBqFvI8oROmQPtPg");
    let a2 = TxtRecord::new(A, "second-value-at-the-same-name");
    let b = TxtRecord::new(B, "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0");

    dns.publish(&[a1.clone(), a2.clone(), b.clone()])
        .await
        .expect("publish");
    assert_eq!(sent.load(Ordering::SeqCst), 1, "one message for the batch");
    let mut both = vec![a1.value.clone(), a2.value.clone()];
    both.sort();
    assert_eq!(bind.dig_txt(A).unwrap(), both);
    assert_eq!(bind.dig_txt(B).unwrap(), vec![b.value.clone()]);

    dns.remove(std::slice::from_ref(&a1))
        .await
        .expect("remove a1");
    assert_eq!(
        bind.dig_txt(A).unwrap(),
        vec![a2.value.clone()],
        "only a1 deleted"
    );
    assert_eq!(
        bind.dig_txt(B).unwrap(),
        vec![b.value.clone()],
        "b untouched"
    );

    dns.remove(&[a2, b]).await.expect("remove the rest");
    assert!(bind.dig_txt(A).unwrap().is_empty());
    assert!(bind.dig_txt(B).unwrap().is_empty());

    // Removing what is not there is not an error (RFC 2136 §2.5.4: silently ignored).
    dns.remove(&[a1]).await.expect("remove absent record");

    assert_eq!(sent.load(Ordering::SeqCst), 4);
    // The last message changed nothing, so BIND applied 3.
    assert_eq!(applied_updates(&bind), 3);
}

#[tokio::test]
async fn publishing_again_is_idempotent_and_empty_batches_send_nothing() {
    let bind = Bind::start().expect("start named");
    let (dns, sent) = counted(config(&bind));
    let r = TxtRecord::new(A, "same");
    dns.publish(std::slice::from_ref(&r)).await.unwrap();
    dns.publish(std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(bind.dig_txt(A).unwrap(), vec!["same".to_owned()]);
    dns.publish(&[]).await.unwrap();
    dns.remove(&[]).await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 2);
}

/// A batch too large for one UDP datagram goes over TCP, still as one message.
#[tokio::test]
async fn a_large_batch_goes_over_tcp_in_one_message() {
    let bind = Bind::start().expect("start named");
    let (dns, sent) = counted(config(&bind));
    let records: Vec<TxtRecord> = (0..40)
        .map(|i| {
            TxtRecord::new(
                format!("_acme-challenge.device-{i:03}.iot.example.test"),
                format!("{i:03}-{}", "k".repeat(40)),
            )
        })
        .collect();
    dns.publish(&records).await.expect("publish 40");
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert_eq!(applied_updates(&bind), 1, "40 RRs, one message");
    for r in [&records[0], &records[17], &records[39]] {
        assert_eq!(bind.dig_txt(&r.name).unwrap(), vec![r.value.clone()]);
    }
    dns.remove(&records).await.expect("remove 40");
    assert!(bind.dig_txt(&records[39].name).unwrap().is_empty());
}

/// Values longer than 255 bytes are split into character-strings and read back whole.
#[tokio::test]
async fn a_long_value_round_trips() {
    let bind = Bind::start().expect("start named");
    let (dns, _) = counted(config(&bind));
    let value: String = (0..600)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    dns.publish(&[TxtRecord::new(A, value.clone())])
        .await
        .unwrap();
    assert_eq!(bind.dig_txt(A).unwrap(), vec![value]);
}

/// Inside the zone but outside `*.iot.example.test`: BIND's update-policy says REFUSED.
#[tokio::test]
async fn a_name_outside_the_key_scope_is_refused() {
    let bind = Bind::start().expect("start named");
    let (dns, sent) = counted(config(&bind));
    let name = "_acme-challenge.x.lab.example.test";
    let err = dns
        .publish(&[TxtRecord::new(name, "v")])
        .await
        .expect_err("must be refused");
    assert!(matches!(err, DnsError::Refused { .. }), "{err:?}");
    assert!(err.is_permanent());
    let text = err.to_string();
    assert!(text.contains(name) && text.contains("REFUSED"), "{text}");
    assert!(bind.dig_txt(name).unwrap().is_empty());
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    // One refused name spoils the whole message: nothing of it is applied (RFC 2136 §3.7).
    let err = dns
        .publish(&[TxtRecord::new(A, "ok"), TxtRecord::new(name, "v")])
        .await
        .expect_err("must be refused");
    assert!(matches!(err, DnsError::Refused { .. }), "{err:?}");
    assert!(bind.dig_txt(A).unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_is_badsig_and_never_printed() {
    let bind = Bind::start().expect("start named");
    let wrong_b64 = "V3JvbmdTZWNyZXRXcm9uZ1NlY3JldFdyb25nU2VjcmV0ISE=";
    let mut cfg = config(&bind);
    cfg.secret = TsigSecret::from_base64(wrong_b64).unwrap();
    let (dns, _) = counted(cfg);
    let err = dns
        .publish(&[TxtRecord::new(A, "v")])
        .await
        .expect_err("wrong secret must fail");
    assert!(matches!(err, DnsError::BadSig { .. }), "{err:?}");
    assert!(err.is_permanent());
    let shown = format!("{err} {err:?} {dns:?}");
    for secret in [
        wrong_b64,
        bind.secret_b64.as_str(),
        "V3JvbmdTZWNyZXQ",
        "WrongSecret",
    ] {
        // Do not print `shown`: on failure it would put the secret in the test output.
        assert!(
            !shown.contains(secret),
            "a secret leaked into Display/Debug"
        );
    }
    assert!(bind.dig_txt(A).unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_key_name_is_badkey() {
    let bind = Bind::start().expect("start named");
    let mut cfg = config(&bind);
    cfg.key_name = "no-such-key".into();
    let (dns, _) = counted(cfg);
    let err = dns
        .publish(&[TxtRecord::new(A, "v")])
        .await
        .expect_err("unknown key must fail");
    assert!(matches!(err, DnsError::BadKey { .. }), "{err:?}");
    assert!(err.is_permanent());
    assert!(err.to_string().contains("no-such-key"), "{err}");
    assert!(bind.dig_txt(A).unwrap().is_empty());
}

#[tokio::test]
async fn a_record_outside_the_zone_is_rejected_without_sending() {
    let bind = Bind::start().expect("start named");
    let (dns, sent) = counted(config(&bind));
    for name in ["_acme-challenge.sn1.example.org", "notexample.test"] {
        let err = dns
            .publish(&[TxtRecord::new(A, "v"), TxtRecord::new(name, "v")])
            .await
            .expect_err("outside zone");
        assert!(
            matches!(err, DnsError::OutsideZone { name: ref n, .. } if n == name),
            "{err:?}"
        );
        assert!(err.is_permanent());
    }
    assert_eq!(sent.load(Ordering::SeqCst), 0, "nothing sent");
    assert!(!bind.log().contains("updating zone"), "BIND saw an UPDATE");
    assert_eq!(applied_updates(&bind), 0);
    assert!(bind.dig_txt(A).unwrap().is_empty());
}

/// Nothing listens: the kernel's ICMP port unreachable gives a transport error at once.
#[tokio::test]
async fn a_closed_port_fails_fast_and_transient() {
    let port = {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.local_addr().unwrap().port()
    };
    let dns = DnsUpdater::new(DnsConfig {
        server: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        zone: "example.test".into(),
        key_name: "k".into(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret: TsigSecret::from_bytes(vec![7; 32]),
        timeout_ms: 500,
        ttl: 60,
        sweep_interval_s: 30,
    })
    .unwrap();
    let started = Instant::now();
    let err = dns
        .publish(&[TxtRecord::new(A, "v")])
        .await
        .expect_err("closed port");
    assert!(
        matches!(err, DnsError::Transport { .. } | DnsError::Timeout { .. }),
        "{err:?}"
    );
    assert!(!err.is_permanent());
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

/// A server that swallows datagrams: the configured timeout bounds the call.
#[tokio::test]
async fn a_silent_server_times_out_on_time() {
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let dns = DnsUpdater::new(DnsConfig {
        server: silent.local_addr().unwrap(),
        zone: "example.test".into(),
        key_name: "k".into(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret: TsigSecret::from_bytes(vec![7; 32]),
        timeout_ms: 300,
        ttl: 60,
        sweep_interval_s: 30,
    })
    .unwrap();
    let started = Instant::now();
    let err = dns
        .remove(&[TxtRecord::new(A, "v")])
        .await
        .expect_err("no answer");
    assert!(
        matches!(err, DnsError::Timeout { after_ms: 300, .. }),
        "{err:?}"
    );
    assert!(!err.is_permanent());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(800),
        "{took:?}"
    );
    // It retransmitted the same message while waiting.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut datagrams = 0;
    while silent.recv(&mut buf).is_ok() {
        datagrams += 1;
    }
    assert!(datagrams >= 2, "{datagrams} datagram(s)");
}
