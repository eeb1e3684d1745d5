//! BRSKI cloud registrar (draft-ietf-anima-brski-cloud) in the release `estuary_filter.wasm`,
//! under the in-repo proxy-wasm host (wasmtime): the cloud-registrar role answers EST with 404
//! and never calls the control plane, a 307 redirect to requestvoucher reaches the pledge, and
//! the manufacturer policy that admits IDevIDs to plain EST ("voucher with EST server").
//! Build the wasm first: `cargo xtask build-wasm`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod host;

use std::sync::OnceLock;

use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::internal_api;
use host::{url_encode, Filter, Outcome, Request};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};

const TOKEN: &str = "cp-token-cloud-0123456789";
const VOUCHER_PATH: &str = "/.well-known/brski/requestvoucher";
const CT_VOUCHER: &str = "application/voucher-cms+json";
const OWNER: &str = "https://registrar.owner.example:8443/.well-known/brski/requestvoucher";

/// An XFCC header as Envoy writes it with SANITIZE_SET.
fn xfcc(pem: &str) -> String {
    format!(
        r#"By=spiffe://est.example.test;Hash=0123abcd;Cert="{}";Subject="CN=pledge";URI=;DNS="#,
        url_encode(pem)
    )
}

/// The same with `chain: true`: `Chain` holds the presented chain, leaf first.
fn xfcc_with_chain(pem: &str, chain: &[&str]) -> String {
    format!(
        r#"{};Chain="{}""#,
        xfcc(pem),
        url_encode(&format!("{pem}{}", chain.concat()))
    )
}

struct Device {
    pem: String,
    der: Vec<u8>,
    key: KeyPair,
    /// A CSR with the certificate's own subject and SAN (base64), for re-enrolment.
    same_csr: String,
}

struct Pki {
    acme_ca_pem: String,
    /// Issued by the acme CA, serial DEMO-0001: accepted.
    demo: Device,
    /// Issued by the acme CA, serial PROD-0001: outside the pattern.
    prod: Device,
    /// Issued by another CA, serial DEMO-0002: unknown issuer.
    stranger: Device,
    /// An intermediate CA issued by the acme CA.
    acme_sub_pem: String,
    /// Issued by that intermediate, serial DEMO-0005: accepted when the chain carries it.
    under_sub: Device,
    /// The ACME CA Estuary enrols from (the filter's `acme_ca_pem`).
    estuary_acme_pem: String,
    /// An LDevID the ACME CA issued to demo-0001.
    ldevid: Device,
    /// Voucher request signed by `demo`.
    pvr: Vec<u8>,
}

fn ca(cn: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = p.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(p, key))
}

fn sub_ca(parent: &Issuer<'static, KeyPair>, cn: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = p.signed_by(&key, parent).unwrap().pem();
    (pem, Issuer::new(p, key))
}

fn device(issuer: &Issuer<'static, KeyPair>, serial: &str, sans: &[&str]) -> Device {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
    p.distinguished_name.push(DnType::CommonName, "pledge");
    let cert = p.signed_by(&key, issuer).unwrap();
    let same_csr = estuary_proto::base64::encode(p.serialize_request(&key).unwrap().der());
    Device {
        pem: cert.pem(),
        der: cert.der().to_vec(),
        key,
        same_csr,
    }
}

/// An LDevID as an ACME CA issues it: the name in the SAN and the CN, nothing else.
fn ldevid(issuer: &Issuer<'static, KeyPair>, name: &str) -> Device {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.signed_by(&key, issuer).unwrap();
    let same_csr = estuary_proto::base64::encode(p.serialize_request(&key).unwrap().der());
    Device {
        pem: cert.pem(),
        der: cert.der().to_vec(),
        key,
        same_csr,
    }
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let (acme_ca_pem, acme) = ca("Acme IDevID CA");
        let (_, other) = ca("Other CA");
        let (estuary_acme_pem, estuary_acme) = ca("Estuary ACME CA");
        let (acme_sub_pem, acme_sub) = sub_ca(&acme, "Acme IDevID Issuing CA 1");
        let demo = device(&acme, "DEMO-0001", &[]);
        let sk = cms_signed::signing_key_from_pkcs8_der(&demo.key.serialize_der()).unwrap();
        let json = br#"{"ietf-voucher-request:voucher":{"assertion":"proximity","nonce":"n","serial-number":"DEMO-0001"}}"#;
        let pvr = cms_signed::sign(ANIMA_JSON_VOUCHER, json, &demo.der, &[], &sk).unwrap();
        Pki {
            acme_ca_pem,
            prod: device(&acme, "PROD-0001", &[]),
            stranger: device(&other, "DEMO-0002", &[]),
            acme_sub_pem,
            under_sub: device(&acme_sub, "DEMO-0005", &[]),
            ldevid: ldevid(&estuary_acme, "demo-0001.iot.example.test"),
            estuary_acme_pem,
            demo,
            pvr,
        }
    })
}

fn cloud() -> Filter {
    let f = Filter::new(&format!(
        r#"{{"role": "cloud-registrar",
            "control_plane": {{"cluster": "estuary_cp", "authority": "control-plane", "token": "{TOKEN}"}}}}"#
    ))
    .unwrap();
    assert!(f.configured, "logs: {:?}", f.logs());
    f
}

fn registrar_with_policy() -> Filter {
    let manufacturers = serde_json::json!([
        {"name": "acme", "ca_pem": pki().acme_ca_pem, "serial_pattern": "DEMO-*"}
    ]);
    let estuary_acme = serde_json::json!(pki().estuary_acme_pem);
    let f = Filter::new(&format!(
        r#"{{"control_plane": {{"cluster": "estuary_cp", "authority": "control-plane", "token": "{TOKEN}"}},
            "parent_domain": "iot.example.test", "cache_ttl_s": 0,
            "manufacturers": {manufacturers}, "acme_ca_pem": {estuary_acme}}}"#
    ))
    .unwrap();
    assert!(f.configured, "logs: {:?}", f.logs());
    f
}

fn voucher_request() -> Request {
    Request::new("POST", VOUCHER_PATH)
        .mtls(true)
        .header("x-forwarded-client-cert", xfcc(&pki().demo.pem))
        .header("content-type", CT_VOUCHER)
        .body(&pki().pvr)
}

fn csr(key: &KeyPair, name: &str) -> String {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    estuary_proto::base64::encode(p.serialize_request(key).unwrap().der())
}

fn enroll(path: &str, dev: &Device, name: &str) -> Request {
    Request::new("POST", path)
        .mtls(true)
        .header("x-forwarded-client-cert", xfcc(&dev.pem))
        .header("content-type", "application/pkcs10")
        .body(csr(&dev.key, name))
}

fn csrattrs(dev: &Device) -> Request {
    Request::new("GET", "/.well-known/est/csrattrs")
        .mtls(true)
        .header("x-forwarded-client-cert", xfcc(&dev.pem))
}

fn refused(o: &Outcome, status: u32, text: &str) {
    let l = o.local.as_ref().expect("answered at the edge");
    assert_eq!(l.status, status, "{}", l.text());
    assert!(
        l.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        l.headers
    );
    assert_eq!(l.text().trim_end(), text);
    assert!(o.calls.is_empty(), "no control-plane call");
}

mod cloud_role {
    use super::*;

    const NOT_EST: &str = "this is a BRSKI cloud registrar, not an EST server: enrol with the \
                           registrar or EST server that your redirect or voucher names";

    #[test]
    fn every_est_request_is_404_without_a_call() {
        let mut f = cloud();
        for req in [
            csrattrs(&pki().demo),
            Request::new("GET", "/.well-known/est/csrattrs"),
            Request::new("GET", "/.well-known/est/cacerts"),
            Request::new("GET", "/.well-known/est/fleet/cacerts"),
            Request::new("DELETE", "/.well-known/est/csrattrs"),
            Request::new("GET", "/.well-known/est/serverkeygen"),
            Request::new("GET", "/.well-known/est"),
            enroll(
                "/.well-known/est/simpleenroll",
                &pki().demo,
                "demo-0001.iot.example.test",
            ),
        ] {
            let o = f.request(req).unwrap();
            refused(&o, 404, NOT_EST);
            assert!(o.body_actions.is_empty(), "the body is not waited for");
            f.finish(&o).unwrap();
        }
        assert!(f.store.data().http_calls.is_empty());
        // Everything else still passes through untouched.
        let o = f.request(Request::new("GET", "/healthz")).unwrap();
        assert_eq!(o.headers_action, 0);
        assert!(o.local.is_none() && o.calls.is_empty());
    }

    #[test]
    fn a_307_with_an_https_location_reaches_the_pledge() {
        let mut f = cloud();
        let o = f.request(voucher_request()).unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        assert_eq!(o.calls.len(), 1);
        assert_eq!(
            o.calls[0].header(":path"),
            Some("/estuary/v1/brski/requestvoucher")
        );
        let r = f
            .answer(
                &o,
                Some(307),
                &[("location", OWNER), ("content-type", "text/plain")],
                b"owner of DEMO-0001 is owner.example",
            )
            .unwrap()
            .expect("reply");
        assert_eq!(r.status, 307);
        assert_eq!(r.header("location"), Some(OWNER));
        assert_eq!(r.text().trim_end(), "redirected to the owner's registrar");
        f.finish(&o).unwrap();
    }

    #[test]
    fn a_307_without_a_usable_location_is_502() {
        let mut f = cloud();
        for headers in [
            &[][..],
            &[(
                "location",
                "http://registrar.owner.example/.well-known/brski/requestvoucher",
            )][..],
            &[("location", "/.well-known/brski/requestvoucher")][..],
        ] {
            let o = f.request(voucher_request()).unwrap();
            let r = f
                .answer(&o, Some(307), headers, b"")
                .unwrap()
                .expect("reply");
            assert_eq!(r.status, 502, "{headers:?}");
            assert_eq!(r.header("location"), None);
            f.finish(&o).unwrap();
        }
        assert!(f.logs().iter().any(|l| l.contains("307")), "{:?}", f.logs());
        // Other BRSKI answers are unchanged: the voucher itself.
        let o = f.request(voucher_request()).unwrap();
        let r = f
            .answer(&o, Some(200), &[("content-type", CT_VOUCHER)], &pki().pvr)
            .unwrap()
            .expect("reply");
        assert_eq!((r.status, r.body.as_slice()), (200, pki().pvr.as_slice()));
        assert!(f.logs().iter().all(|l| !l.contains(TOKEN)));
    }
}

mod manufacturer_policy {
    use super::*;

    #[test]
    fn an_idevid_of_an_accepted_manufacturer_enrols() {
        let mut f = registrar_with_policy();
        let o = f
            .request(enroll(
                "/.well-known/est/simpleenroll",
                &pki().demo,
                "demo-0001.iot.example.test",
            ))
            .unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        assert_eq!(o.calls.len(), 1);
        assert_eq!(
            o.calls[0].header(internal_api::HDR_DEVICE_SERIAL),
            Some("demo-0001")
        );
        f.finish(&o).unwrap();
        let o = f.request(csrattrs(&pki().demo)).unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        assert_eq!(o.calls.len(), 1);
        assert_eq!(
            o.calls[0].header(":path"),
            Some(internal_api::CSRATTRS_PATH)
        );
    }

    #[test]
    fn an_idevid_under_an_intermediate_in_the_chain_enrols() {
        let mut f = registrar_with_policy();
        let dev = &pki().under_sub;
        let header = xfcc_with_chain(&dev.pem, &[&pki().acme_sub_pem, &pki().acme_ca_pem]);
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .mtls(true)
                    .header("x-forwarded-client-cert", header)
                    .header("content-type", "application/pkcs10")
                    .body(csr(&dev.key, "demo-0005.iot.example.test")),
            )
            .unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        assert_eq!(o.calls.len(), 1);
        assert_eq!(
            o.calls[0].header(internal_api::HDR_DEVICE_SERIAL),
            Some("demo-0005")
        );
        // Without the intermediate in the chain nothing links it to the acme CA.
        let o = f.request(csrattrs(dev)).unwrap();
        refused(
            &o,
            403,
            "the client certificate is issued neither by the ACME CA this registration authority \
             enrols from nor by a manufacturer it accepts",
        );
    }

    #[test]
    fn an_idevid_of_another_issuer_is_403() {
        let mut f = registrar_with_policy();
        let text = "the client certificate is issued neither by the ACME CA this registration \
                    authority enrols from nor by a manufacturer it accepts";
        let o = f
            .request(enroll(
                "/.well-known/est/simpleenroll",
                &pki().stranger,
                "demo-0002.iot.example.test",
            ))
            .unwrap();
        refused(&o, 403, text);
        let o = f.request(csrattrs(&pki().stranger)).unwrap();
        refused(&o, 403, text);
    }

    #[test]
    fn a_serial_outside_the_pattern_is_403() {
        let mut f = registrar_with_policy();
        let text =
            "serial \"PROD-0001\" is not accepted for manufacturer acme (pattern \"DEMO-*\")";
        let o = f
            .request(enroll(
                "/.well-known/est/simpleenroll",
                &pki().prod,
                "prod-0001.iot.example.test",
            ))
            .unwrap();
        refused(&o, 403, text);
        let o = f.request(csrattrs(&pki().prod)).unwrap();
        refused(&o, 403, text);
    }

    #[test]
    fn ldevid_reenrolment_is_not_subject_to_it() {
        let mut f = registrar_with_policy();
        let ldevid = &pki().ldevid;
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simplereenroll")
                    .mtls(true)
                    .header("x-forwarded-client-cert", xfcc(&ldevid.pem))
                    .header("content-type", "application/pkcs10")
                    .body(&ldevid.same_csr),
            )
            .unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        assert_eq!(o.calls.len(), 1);
        assert_eq!(
            o.calls[0].header(internal_api::HDR_OPERATION),
            Some("simplereenroll")
        );
    }

    #[test]
    fn a_bad_manufacturer_entry_refuses_to_start() {
        let f = Filter::new(&format!(
            r#"{{"control_plane": {{"cluster": "c", "authority": "a", "token": "{TOKEN}"}},
                "parent_domain": "iot.example.test",
                "manufacturers": [{{"name": "acme", "ca_pem": "not pem", "serial_pattern": "DEMO-*"}}]}}"#
        ))
        .unwrap();
        assert!(!f.configured);
        let logs = f.logs().join("\n");
        assert!(logs.contains("manufacturers[0].ca_pem"), "{logs}");
        assert!(!logs.contains(TOKEN));
    }
}
