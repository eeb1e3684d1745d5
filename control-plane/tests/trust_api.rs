//! The internal API from the attacker's side: someone who holds the API token (or sits where
//! the proxy sits) tries to get certificates for names their certificates do not prove. The
//! control plane re-derives the device from the forwarded client certificate with its own
//! trusted CAs, so each attempt gets 403 with a reason, no ACME order is placed and nothing is
//! written to DNS. Real control plane, Redis, Pebble and BIND9.
mod common;

use common::*;
use estuary_tests::pki::Ca;
use estuary_tests::util::TempDir;

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

fn b64(der: &[u8]) -> String {
    let mut s = estuary_proto::base64::encode(der);
    s.retain(|c| !c.is_ascii_whitespace());
    s
}

async fn post(cp: &ControlPlane, headers: &[(&str, &str)], csr: &[u8]) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    let mut h: Vec<(&str, &str)> = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/pkcs10"),
    ];
    h.extend_from_slice(headers);
    http(&cp.url("/estuary/v1/enroll"), "POST", &h, csr.to_vec()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_without_a_matching_certificate_obtains_nothing() {
    let stack = stack();
    let mut cp = ControlPlane::start(&stack, &CpOptions::default());
    let victim = unique("victim");
    let attacker = unique("attacker");
    let (victim_csr, _) = csr_for(&format!("{victim}.{PARENT}"));

    // 1. The serial header names the victim; the certificate is the attacker's own IDevID.
    let attacker_cert = cp.idevid_header(&attacker);
    let r = post(
        &cp,
        &[
            ("estuary-device-serial", &victim),
            ("estuary-client-cert", &attacker_cert),
            ("estuary-operation", "simpleenroll"),
        ],
        &victim_csr,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("disagrees with the client certificate"),
        "{}",
        r.text()
    );

    // 2. No certificate at all: the token alone names no device.
    let r = post(
        &cp,
        &[
            ("estuary-device-serial", &victim),
            ("estuary-operation", "simpleenroll"),
        ],
        &victim_csr,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("no client certificate"), "{}", r.text());

    // 3. A certificate with the victim's serial, from a CA the control plane does not trust.
    let tmp = TempDir::new("rogue").expect("tmp");
    let rogue = Ca::create(tmp.path(), "rogue-ca", "Rogue manufacturer").expect("rogue CA");
    let rogue_cert = b64(&rogue.idevid_der(&victim).expect("rogue IDevID"));
    let r = post(
        &cp,
        &[
            ("estuary-device-serial", &victim),
            ("estuary-client-cert", &rogue_cert),
            ("estuary-operation", "simpleenroll"),
        ],
        &victim_csr,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("issued neither by the ACME CA"),
        "{}",
        r.text()
    );

    // 4. A trusted manufacturer's IDevID presented for re-enrolment: not an LDevID.
    let victim_cert = cp.idevid_header(&victim);
    let r = post(
        &cp,
        &[
            ("estuary-device-serial", &victim),
            ("estuary-client-cert", &victim_cert),
            ("estuary-operation", "simplereenroll"),
        ],
        &victim_csr,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("simplereenroll needs"), "{}", r.text());

    // 5. Garbage in the certificate header: 400, not a crash.
    let r = post(
        &cp,
        &[
            ("estuary-device-serial", &victim),
            ("estuary-client-cert", "!!not base64!!"),
            ("estuary-operation", "simpleenroll"),
        ],
        &victim_csr,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // csrattrs too: the header must agree with the certificate.
    let auth = format!("Bearer {TOKEN}");
    let r = http(
        &cp.url("/estuary/v1/csrattrs"),
        "GET",
        &[
            ("authorization", &auth),
            ("estuary-device-serial", &victim),
            ("estuary-client-cert", &attacker_cert),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Nothing reached the CA or the DNS primary.
    assert!(cp.is_running());
    assert_eq!(
        cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        0.0
    );
    assert_eq!(cp.metric("estuary_dns_updates_total").await, 0.0);

    // And the real thing still works: the victim's own IDevID gets the victim's name.
    let r = cp
        .enroll_until_done(&victim, &victim_csr, std::time::Duration::from_secs(60))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// RFC 7030 §3.2.2 labels over the internal API: a header that is no label is 400, a label no
/// `[[acme.labels]]` entry configures is 404 naming it, on every EST path, and nothing is
/// ordered. (Through Envoy the filter answers unknown labels itself: tests/tests/labels.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_malformed_labels_get_a_clear_4xx_and_order_nothing() {
    let stack = stack();
    let cp = ControlPlane::start(&stack, &CpOptions::default());
    let serial = unique("lbl");
    let (csr, _) = csr_for(&format!("{serial}.{PARENT}"));
    let cert = cp.idevid_header(&serial);
    let auth = format!("Bearer {TOKEN}");
    for (label, status, says) in [
        ("factory-z", 404, "\"factory-z\" is not configured"),
        ("a/b", 400, "estuary-label: an EST label is"),
        ("cacerts", 400, "estuary-label: an EST label is"),
    ] {
        let r = post(
            &cp,
            &[
                ("estuary-device-serial", &serial),
                ("estuary-client-cert", &cert),
                ("estuary-operation", "simpleenroll"),
                ("estuary-label", label),
            ],
            &csr,
        )
        .await;
        assert_eq!(r.status, status, "enroll under {label:?}: {}", r.text());
        assert!(r.text().contains(says), "{}", r.text());
        for path in ["/estuary/v1/cacerts", "/estuary/v1/csrattrs"] {
            let h = [
                ("authorization", auth.as_str()),
                ("estuary-device-serial", serial.as_str()),
                ("estuary-client-cert", cert.as_str()),
                ("estuary-label", label),
            ];
            let r = http(&cp.url(path), "GET", &h, Vec::new()).await;
            assert_eq!(r.status, status, "{path} under {label:?}: {}", r.text());
            assert!(r.text().contains(says), "{}", r.text());
        }
    }
    assert_eq!(
        cp.metric("estuary_acme_orders_total{result=\"valid\"}")
            .await,
        0.0
    );
}
