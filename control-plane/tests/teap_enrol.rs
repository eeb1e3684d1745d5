//! TEAP (RFC 9930) over RADIUS against the real control plane process, with the real stack
//! behind it (Pebble issues, BIND9 holds the DNS-01 records, Redis caches). The device side is
//! Estuary's own TEAP peer; certificates are checked with the openssl CLI.
mod common;
mod teap_support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pem_blocks, pkcs7_to_pem, sh, PARENT};
use estuary_proto::eap::{EapCode, EapPacket, EapType};
use estuary_proto::radius::{self, AttrType, Code, Packet};
use estuary_proto::teap::{ErrorCode, Status, Tlv, TlvType};
use estuary_teap::peer::{self, CsrMaker, PeerError};
use teap_support::*;

fn csr_maker(key_out: Arc<Mutex<Option<String>>>) -> CsrMaker {
    Box::new(move |input| {
        let (csr, key) = peer::csr_from_attrs(input.attrs, Some(input.channel_binding))?;
        *key_out.lock().map_err(|_| "poisoned")? = Some(key);
        Ok(csr)
    })
}

/// Enrols `sn` through TEAP and checks the certificate with openssl against Pebble's root.
async fn enrol_and_verify(t: &Teap, sn: &str, fragment: usize) {
    let dev = t.idevid(sn);
    let mut cfg = t.peer(Some(&dev));
    cfg.fragment_size = fragment;
    let key = Arc::new(Mutex::new(None));
    let out = peer::run(&cfg, Some(csr_maker(Arc::clone(&key))))
        .await
        .unwrap_or_else(|e| panic!("TEAP failed: {e}\n{}", t.cp.log_text()));
    assert!(out.mppe_keys_match, "MS-MPPE keys differ from our MSK");
    let attrs = out.csr_attrs.expect("CSR-Attributes TLV");
    let attrs = estuary_proto::csrattrs::CsrAttrs::from_der(&attrs).expect("attrs parse");
    let name = format!("{sn}.{PARENT}");
    assert_eq!(attrs.requested_dns_names(), vec![name.clone()]);

    let p7 = out.pkcs7.expect("PKCS#7 TLV");
    let tmp = estuary_tests::util::TempDir::new("teap-check").expect("tmp");
    let certs = pem_blocks(&pkcs7_to_pem(tmp.path(), &p7));
    // draft-ietf-acme-integrations-17: the TEAP server "MUST return the full ACME client
    // certificate chain in the PKCS#7" (EST's /simpleenroll returns the end entity alone;
    // TEAP does not): the end entity and Pebble's issuing intermediate, and no root.
    assert_eq!(
        certs.len(),
        2,
        "end entity + intermediate expected: {certs:?}"
    );
    let pebble_intermediate = pebble_intermediate(t);
    assert_eq!(
        b64(&certs[1]),
        b64(&pebble_intermediate),
        "the second certificate is Pebble's issuing intermediate"
    );
    let leaf = tmp.path().join("leaf.pem");
    let inter = tmp.path().join("inter.pem");
    std::fs::write(&leaf, &certs[0]).expect("write");
    std::fs::write(&inter, certs[1..].concat()).expect("write");
    let verify = sh(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&t.stack.pebble.issuer_root_pem)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf));
    assert!(verify.contains(": OK"), "{verify}");
    let san = sh(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf));
    assert!(san.contains(&format!("DNS:{name}")), "{san}");
    // The leaf certifies the key the peer generated.
    let key_pem = key.lock().expect("lock").clone().expect("key made");
    let key_file = tmp.path().join("key.pem");
    std::fs::write(&key_file, key_pem).expect("write");
    let from_key = sh(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key_file));
    let from_cert = sh(Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&leaf));
    assert_eq!(from_key.trim(), from_cert.trim());
}

#[tokio::test(flavor = "multi_thread")]
async fn teap_enrolment_ends_with_an_acme_certificate_from_pebble() {
    let t = start(&[]);
    enrol_and_verify(&t, &serial("teap-a"), 1000).await;
    assert_eq!(
        t.cp.metric("estuary_enrollments_total{protocol=\"teap\",result=\"issued\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn teap_enrolment_with_300_byte_fragments_on_both_sides() {
    let t = start(&[("fragment_size", "300")]);
    enrol_and_verify(&t, &serial("teap-f"), 300).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn teap_over_tls12_only_also_enrols() {
    let t = start(&[("tls13", "false")]);
    enrol_and_verify(&t, &serial("teap-12"), 1000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secret_and_bad_message_authenticator_are_silently_dropped() {
    let t = start(&[]);
    let dev = t.idevid(&serial("teap-s"));
    let mut cfg = t.peer(Some(&dev));
    cfg.secret = b"not-the-secret-0123456789".to_vec();
    cfg.radius_timeout = Duration::from_millis(400);
    match peer::run(&cfg, None).await {
        Err(PeerError::NoReply(_)) => {}
        other => panic!("expected silence, got {other:?}"),
    }

    // A well-formed Access-Request whose Message-Authenticator is wrong: no answer at all,
    // while the same request correctly signed gets its Access-Challenge.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut p = Packet::new(Code::ACCESS_REQUEST, 42, [9u8; 16]);
    p.push(AttrType::USER_NAME, b"x".to_vec());
    let eap = EapPacket::new(EapCode::RESPONSE, 1, EapType::IDENTITY, b"x".to_vec());
    p.push_eap_message(&eap.encode().expect("eap"));
    let good = p.encode_request(SECRET.as_bytes()).expect("encode");
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    let no_ma = p.encode().expect("encode");
    let mut buf = vec![0u8; 4096];
    for dgram in [&bad, &no_ma] {
        sock.send_to(dgram, t.radius).await.expect("send");
        let r = tokio::time::timeout(Duration::from_millis(700), sock.recv_from(&mut buf)).await;
        assert!(r.is_err(), "a reply came to a badly authenticated request");
    }
    sock.send_to(&good, t.radius).await.expect("send");
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("reply in time")
        .expect("recv");
    let reply = radius::verify_response(&buf[..n], SECRET.as_bytes(), &[9u8; 16]).expect("valid");
    assert_eq!(reply.code, Code::ACCESS_CHALLENGE);
    // A retransmission of the same request gets the same answer (duplicate detection).
    sock.send_to(&good, t.radius).await.expect("send");
    let (n2, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("reply in time")
        .expect("recv");
    let again = radius::verify_response(&buf[..n2], SECRET.as_bytes(), &[9u8; 16]).expect("ok");
    assert_eq!(again.attr(AttrType::STATE), reply.attr(AttrType::STATE));
    assert!(t.cp.log_text().contains("RADIUS packet dropped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_without_a_client_certificate_is_rejected() {
    let t = start(&[]);
    let cfg = t.peer(None);
    match peer::run(&cfg, None).await {
        Err(PeerError::Rejected { .. }) | Err(PeerError::Tunnel(_)) => {}
        other => panic!("expected Access-Reject, got {other:?}"),
    }
}

/// TEAP decides who the device is by who issued its certificate, as EST does: a certificate
/// the manufacturer CA issued with another device's dNSName (trusted by the TLS layer, so the
/// tunnel comes up) is no LDevID, and names no device without a serialNumber: refused with
/// CLIENT_CERTIFICATE_REJECTED, and nothing is enrolled.
#[tokio::test(flavor = "multi_thread")]
async fn a_manufacturer_certificate_with_a_device_name_is_refused() {
    let t = start(&[]);
    let victim = format!("{}.{PARENT}", serial("teap-victim"));
    let forged = t
        .pki
        .manufacturer
        .issue_client(t.dir.path(), "forged", None, &[&victim])
        .expect("forged certificate");
    let cfg = t.peer(Some(&forged));
    let key = Arc::new(Mutex::new(None));
    match peer::run(&cfg, Some(csr_maker(Arc::clone(&key)))).await {
        Err(PeerError::Rejected { server_tlvs }) => assert!(
            has_error(&server_tlvs, ErrorCode::CLIENT_CERTIFICATE_REJECTED),
            "{server_tlvs:?}"
        ),
        other => panic!("expected Access-Reject, got {other:?}"),
    }
    assert!(
        t.cp.log_text().contains("TEAP client certificate refused"),
        "{}",
        t.cp.log_text()
    );
    assert_eq!(
        t.cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        0.0
    );
}

/// Pebble's issuing intermediate (PEM), from the root + intermediate file the stack fetched.
fn pebble_intermediate(t: &Teap) -> String {
    let root = std::fs::read_to_string(&t.stack.pebble.issuer_root_pem).expect("root");
    let chain = std::fs::read_to_string(&t.stack.pebble.issuer_chain_pem).expect("chain");
    pem_blocks(&chain)
        .into_iter()
        .find(|b| b64(b) != b64(&root))
        .expect("an intermediate beside the root")
}

/// The base64 body of one PEM block, whitespace dropped (to compare certificates).
fn b64(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .split_whitespace()
        .collect()
}

/// RFC 9930 §4.2.18 and draft-17 ("MUST return the ACME server trust anchor in a PKCS#7
/// response to a Trusted-Server-Root TLV request"): a peer that asks gets Pebble's root in a
/// PKCS#7 inside a Trusted-Server-Root TLV, beside the chain, and that anchor is the one the
/// chain verifies to. An enrolled device that sends no CSR gets it too.
#[tokio::test(flavor = "multi_thread")]
async fn trusted_server_root_request_returns_the_acme_trust_anchor() {
    let t = start(&[]);
    let sn = serial("teap-r");
    let mut cfg = t.peer(Some(&t.idevid(&sn)));
    cfg.request_trusted_roots = true;
    let key = Arc::new(Mutex::new(None));
    let out = peer::run(&cfg, Some(csr_maker(key)))
        .await
        .unwrap_or_else(|e| panic!("TEAP failed: {e}\n{}", t.cp.log_text()));
    assert!(out.mppe_keys_match);
    let tmp = estuary_tests::util::TempDir::new("teap-roots").expect("tmp");
    let roots_p7 = out
        .trusted_server_roots
        .expect("Trusted-Server-Root answer");
    let roots = pem_blocks(&pkcs7_to_pem(tmp.path(), &roots_p7));
    let pebble_root = std::fs::read_to_string(&t.stack.pebble.issuer_root_pem).expect("root");
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert_eq!(
        b64(&roots[0]),
        b64(&pebble_root),
        "the anchor is Pebble's root"
    );
    // The peer can use it: the enrolled chain verifies up to the anchor it was given.
    let certs = pem_blocks(&pkcs7_to_pem(tmp.path(), &out.pkcs7.expect("PKCS#7 TLV")));
    let (anchor, leaf, inter) = (
        tmp.path().join("anchor.pem"),
        tmp.path().join("leaf.pem"),
        tmp.path().join("inter.pem"),
    );
    std::fs::write(&anchor, &roots[0]).expect("write");
    std::fs::write(&leaf, &certs[0]).expect("write");
    std::fs::write(&inter, certs[1..].concat()).expect("write");
    let verify = sh(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&anchor)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf));
    assert!(verify.contains(": OK"), "{verify}");
    assert!(t
        .cp
        .log_text()
        .contains("Trusted-Server-Root: sending the ACME trust anchor"));

    // No CSR (an enrolled device): the anchor still comes, then the Access-Accept.
    let out = peer::run(&cfg, None).await.expect("no-CSR run");
    assert!(out.mppe_keys_match);
    assert!(out.pkcs7.is_none());
    let again = out
        .trusted_server_roots
        .expect("Trusted-Server-Root answer");
    assert_eq!(again, roots_p7);
    // A peer that does not ask gets none.
    cfg.request_trusted_roots = false;
    let out = peer::run(&cfg, None).await.expect("plain run");
    assert!(out.trusted_server_roots.is_none());
}

/// RFC 9930 §3.8.2 and draft-17 "TLS Channel Bindings": the peer binds its CSR to the tunnel
/// (tls-exporter in challengePassword). An attacker who captured a CSR the device made in one
/// TEAP session and replays it in another session gets Error 1025 (Bad CSR) and nothing is
/// issued, although the CSR's signature is good and the same CSR was enrolled before.
#[tokio::test(flavor = "multi_thread")]
async fn a_csr_replayed_from_another_tunnel_is_refused_with_bad_csr() {
    let t = start(&[]);
    let dev = t.idevid(&serial("teap-b"));
    let cfg = t.peer(Some(&dev));
    let captured: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&captured);
    let first: CsrMaker = Box::new(move |input| {
        let (csr, _key) = peer::csr_from_attrs(input.attrs, Some(input.channel_binding))?;
        *slot.lock().map_err(|_| "poisoned")? = Some(csr.clone());
        Ok(csr)
    });
    let out = peer::run(&cfg, Some(first))
        .await
        .unwrap_or_else(|e| panic!("first session: {e}\n{}", t.cp.log_text()));
    assert!(
        out.pkcs7.is_some(),
        "the bound CSR enrols in its own tunnel"
    );
    let csr = captured.lock().expect("lock").clone().expect("captured");
    // The binding is in the CSR, covered by its signature.
    let v = estuary_proto::csr::parse_and_verify(&csr).expect("csr");
    assert_eq!(
        v.challenge_password().expect("readable").map(str::len),
        Some(44)
    );

    let replay: CsrMaker = Box::new(move |_input| Ok(csr.clone()));
    match peer::run(&cfg, Some(replay)).await {
        Err(PeerError::Rejected { server_tlvs }) => {
            assert!(
                has_error(&server_tlvs, ErrorCode::BAD_CSR),
                "{server_tlvs:?}"
            );
            assert!(has_failure(&server_tlvs), "{server_tlvs:?}");
            assert!(
                !server_tlvs.iter().any(|t| t.typ == TlvType::PKCS7),
                "no certificate for a replayed CSR"
            );
        }
        other => panic!("expected Access-Reject, got {other:?}"),
    }
    let log = t.cp.log_text();
    assert!(
        log.contains("channel binding (challengePassword) is not this"),
        "{log}"
    );
    assert_eq!(
        t.cp.metric("estuary_enrollments_total{protocol=\"teap\",result=\"issued\"}")
            .await,
        1.0
    );
    assert_eq!(
        t.cp.metric("estuary_enrollments_total{protocol=\"teap\",result=\"cached\"}")
            .await,
        0.0,
        "the replayed CSR never reached the engine (its cache would have answered)"
    );
    assert_eq!(
        t.cp.metric("estuary_enrollments_total{protocol=\"teap\",result=\"rejected\"}")
            .await,
        1.0
    );
}

/// The binding is RECOMMENDED, not required: a CSR without a challengePassword still enrols
/// (over TLS 1.2 here; the bound case runs over both versions in the tests above).
#[tokio::test(flavor = "multi_thread")]
async fn a_csr_without_channel_binding_still_enrols() {
    let t = start(&[("tls13", "false")]);
    let dev = t.idevid(&serial("teap-u"));
    let unbound: CsrMaker = Box::new(|input| {
        let (csr, _key) = peer::csr_from_attrs(input.attrs, None)?;
        Ok(csr)
    });
    let out = peer::run(&t.peer(Some(&dev)), Some(unbound))
        .await
        .unwrap_or_else(|e| panic!("TEAP failed: {e}\n{}", t.cp.log_text()));
    assert!(out.pkcs7.is_some());
    assert!(t.cp.log_text().contains("carries no channel binding"));
}

fn has_error(tlvs: &[Tlv], code: ErrorCode) -> bool {
    tlvs.iter()
        .any(|t| t.typ == TlvType::ERROR && t.error_code() == Ok(code))
}

fn has_failure(tlvs: &[Tlv]) -> bool {
    tlvs.iter()
        .any(|t| t.typ == TlvType::RESULT && t.status() == Ok(Status::FAILURE))
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_truncated_and_unknown_mandatory_tlvs_get_error_or_nak_then_reject() {
    let t = start(&[]);
    let dev = t.idevid(&serial("teap-m"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Header says 80 octets, 2 follow.
        ("truncated", vec![0x80, 0x10, 0x00, 0x50, 1, 2]),
        // Three octets: not even a TLV header.
        ("short header", vec![0x80, 0x03, 0x00]),
        // A Result TLV of the wrong size.
        ("malformed Result", vec![0x80, 0x03, 0x00, 0x01, 0x01]),
        (
            "unknown mandatory",
            estuary_proto::teap::encode(&[Tlv::new(true, TlvType(0x3ff0), vec![1, 2])])
                .expect("encode"),
        ),
    ];
    for (what, raw) in cases {
        let mut cfg = t.peer(Some(&dev));
        cfg.dangerous_first_phase2_reply = Some(raw);
        let tlvs = match peer::run(&cfg, None).await {
            Err(PeerError::Rejected { server_tlvs }) => server_tlvs,
            other => panic!("{what}: expected Access-Reject, got {other:?}"),
        };
        assert!(has_failure(&tlvs), "{what}: no Result(Failure) in {tlvs:?}");
        if what == "unknown mandatory" {
            let nak = tlvs
                .iter()
                .find(|t| t.typ == TlvType::NAK)
                .unwrap_or_else(|| panic!("no NAK in {tlvs:?}"));
            assert_eq!(nak.nak_parts(), Ok((0, TlvType(0x3ff0))));
        } else {
            assert!(
                has_error(&tlvs, ErrorCode::UNEXPECTED_TLVS),
                "{what}: no Error 2002 in {tlvs:?}"
            );
        }
    }
    // The server is still fine: a normal conversation succeeds (no CSR: already enrolled).
    let out = peer::run(&t.peer(Some(&dev)), None)
        .await
        .expect("still serving");
    assert!(out.mppe_keys_match);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_half_open_conversations_are_bounded_and_expire() {
    let t = start(&[("max_sessions", "400"), ("session_timeout_s", "2")]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut buf = vec![0u8; 4096];
    let (mut challenges, mut rejects) = (0, 0);
    for batch in 0..20u32 {
        let mut auths = std::collections::HashMap::new();
        for i in 0..50u32 {
            let id = (batch * 50 + i) as u8;
            let mut auth = [0u8; 16];
            auth[..4].copy_from_slice(&(batch * 50 + i).to_be_bytes());
            let mut p = Packet::new(Code::ACCESS_REQUEST, id, auth);
            let eap = EapPacket::new(EapCode::RESPONSE, 1, EapType::IDENTITY, b"flood".to_vec());
            p.push_eap_message(&eap.encode().expect("eap"));
            auths.insert(id, auth);
            sock.send_to(&p.encode_request(SECRET.as_bytes()).expect("enc"), t.radius)
                .await
                .expect("send");
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = 0;
        while got < 50 && Instant::now() < deadline {
            let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
            else {
                continue;
            };
            let Some(auth) = auths.get(&buf[1]) else {
                continue;
            };
            let r = radius::verify_response(&buf[..n], SECRET.as_bytes(), auth).expect("valid");
            got += 1;
            match r.code {
                Code::ACCESS_CHALLENGE => challenges += 1,
                Code::ACCESS_REJECT => rejects += 1,
                c => panic!("unexpected {c:?}"),
            }
        }
    }
    // Some requests of a batch may be dropped when the server is busy (the NAS would
    // retransmit); what is held never exceeds the cap.
    assert!(
        challenges <= 400,
        "{challenges} conversations held (cap 400)"
    );
    assert!(challenges >= 300, "only {challenges} conversations started");
    assert!(rejects > 0, "the table never filled");
    let held = t.cp.metric("estuary_teap_sessions").await;
    assert!(held <= 400.0 && held > 0.0, "sessions gauge {held}");
    // The HTTP side kept serving throughout (metric() above), and the table drains.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(t.cp.metric("estuary_teap_sessions").await, 0.0);
    // And a real device still gets through.
    let dev = t.idevid(&serial("teap-h"));
    let out = peer::run(&t.peer(Some(&dev)), None)
        .await
        .expect("after the flood");
    assert!(out.mppe_keys_match);
}
