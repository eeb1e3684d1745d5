//! BRSKI routes of the release `estuary_filter.wasm` under the in-repo proxy-wasm host
//! (wasmtime): what is forwarded to the registrar, what dies at the edge, and random requests
//! never trap the VM. Build the wasm first: `cargo xtask build-wasm`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod host;

use std::sync::OnceLock;

use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use host::{Filter, Request};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

/// The registrar role needs its trust fields; BRSKI itself leaves the IDevID check to the
/// registrar, so any certificate will do for them here.
fn config() -> String {
    let pem = serde_json::json!(fixture().pem);
    format!(
        r#"{{"control_plane": {{"cluster": "estuary_cp", "authority": "control-plane", "token": "cp-token-brski-0123456", "timeout_ms": 1500}},
    "parent_domain": "iot.example.test", "max_body_bytes": 8192, "cache_ttl_s": 0,
    "manufacturers": [{{"name": "test", "ca_pem": {pem}}}], "acme_ca_pem": {pem}}}"#
    )
}
const CT: &str = "application/voucher-cms+json";
const PATH: &str = "/.well-known/brski/requestvoucher";

struct Fixture {
    pem: String,
    der: Vec<u8>,
    pvr: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-0001");
        let cert = p.self_signed(&key).unwrap();
        let sk = cms_signed::signing_key_from_pkcs8_der(&key.serialize_der()).unwrap();
        let json = br#"{"ietf-voucher-request:voucher":{"assertion":"proximity","nonce":"n","serial-number":"SN-0001"}}"#;
        let pvr = cms_signed::sign(ANIMA_JSON_VOUCHER, json, cert.der(), &[], &sk).unwrap();
        Fixture {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            pvr,
        }
    })
}

fn xfcc(pem: &str) -> String {
    let mut enc = String::new();
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!(r#"Hash=00;Cert="{enc}";Subject="serialNumber=SN-0001""#)
}

fn voucher_req(body: &[u8]) -> Request {
    Request::new("POST", PATH)
        .mtls(true)
        .header("x-forwarded-client-cert", xfcc(&fixture().pem))
        .header("content-type", CT)
        .body(body)
}

#[test]
fn a_voucher_request_goes_to_the_registrar_with_the_client_certificate() {
    let mut f = Filter::new(&config()).unwrap();
    let o = f.request(voucher_req(&fixture().pvr)).unwrap();
    assert!(o.local.is_none(), "{:?}", o.local);
    assert_eq!(o.calls.len(), 1);
    let call = &o.calls[0];
    assert_eq!(
        call.header(":path"),
        Some("/estuary/v1/brski/requestvoucher")
    );
    assert_eq!(call.header("content-type"), Some(CT));
    let cert = call
        .header("estuary-client-cert")
        .expect("client cert header");
    assert!(!cert.contains('\n'));
    assert_eq!(
        estuary_proto::base64::decode(cert.as_bytes()).unwrap(),
        fixture().der
    );
    assert_eq!(call.body, fixture().pvr);
    // The voucher comes back unchanged.
    let r = f
        .answer(&o, Some(200), &[("content-type", CT)], &fixture().pvr)
        .unwrap()
        .expect("reply");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CT));
    assert_eq!(r.body, fixture().pvr);
    // The MASA down behind the registrar: 503 + Retry-After.
    let o = f.request(voucher_req(&fixture().pvr)).unwrap();
    let r = f
        .answer(&o, Some(503), &[("retry-after", "30")], b"")
        .unwrap()
        .expect("reply");
    assert_eq!((r.status, r.header("retry-after")), (503, Some("30")));
}

#[test]
fn the_edge_refuses_what_cannot_be_a_voucher_request() {
    let mut f = Filter::new(&config()).unwrap();
    for (req, status) in [
        (voucher_req(b"garbage"), 400),
        (voucher_req(&fixture().pvr[..40]), 400),
        (
            Request::new("POST", PATH)
                .mtls(false)
                .header("content-type", CT)
                .body(&fixture().pvr),
            401,
        ),
        (
            Request::new("POST", PATH)
                .mtls(true)
                .header("x-forwarded-client-cert", xfcc(&fixture().pem))
                .header("content-type", "application/json")
                .body(&fixture().pvr),
            415,
        ),
        (Request::new("GET", PATH).mtls(true), 405),
        (
            Request::new("POST", "/.well-known/brski/nope").mtls(true),
            404,
        ),
    ] {
        let o = f.request(req).unwrap();
        let l = o.local.as_ref().expect("local reply");
        assert_eq!(l.status, status, "{}", l.text());
        assert!(o.calls.is_empty());
    }
}

mod randomized {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(fixture().pvr.clone()),
            proptest::collection::vec(any::<u8>(), 0..400),
            (0usize..4000, any::<u8>()).prop_map(|(at, b)| {
                let mut v = fixture().pvr.clone();
                let i = at % v.len();
                v[i] = b;
                v
            }),
            (0usize..4000).prop_map(|n| fixture().pvr[..n % fixture().pvr.len()].to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn random_brski_requests_never_trap(
            op in prop_oneof![Just("requestvoucher"), Just("voucher_status"), Just("enrollstatus"), Just("requestauditlog"), Just("x")],
            method in prop_oneof![Just("POST"), Just("GET"), Just("PUT")],
            ct in prop_oneof![Just(CT.to_string()), Just("application/json".to_string()), "[ -~]{0,20}"],
            mtls in any::<bool>(),
            body in body(),
            answer_status in proptest::option::of(100u16..600),
            answer_body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            thread_local! {
                static F: std::cell::RefCell<Option<Filter>> = const { std::cell::RefCell::new(None) };
            }
            F.with(|cell| {
                let mut slot = cell.borrow_mut();
                let f = slot.get_or_insert_with(|| Filter::new(&config()).unwrap());
                let req = Request::new(method, &format!("/.well-known/brski/{op}"))
                    .mtls(mtls)
                    .header("x-forwarded-client-cert", xfcc(&fixture().pem))
                    .header("content-type", &ct)
                    .body(&body);
                let o = f.request(req).expect("the filter never traps on a request");
                if o.local.is_none() && !o.calls.is_empty() {
                    let r = f
                        .answer(&o, answer_status, &[("content-type", CT)], &answer_body)
                        .expect("the filter never traps on an answer")
                        .expect("every registrar answer gets a reply");
                    prop_assert!(r.status >= 200 && r.status < 600);
                }
                if let Some(l) = &o.local {
                    prop_assert!(l.status >= 200 && l.status < 600);
                }
                f.finish(&o).expect("stream teardown never traps");
                Ok(())
            })?;
        }
    }
}
