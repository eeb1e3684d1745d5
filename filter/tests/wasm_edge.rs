//! The release `estuary_filter.wasm` driven by an in-repo proxy-wasm host on wasmtime, the way
//! Envoy drives it. Build the wasm first:
//! `cargo build -p estuary-filter --target wasm32-wasip1 --profile wasm-release`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod host;

use std::sync::OnceLock;

use estuary_proto::internal_api;
use host::{url_encode, Filter, LocalResponse, Outcome, Request};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};

const TOKEN: &str = "cp-token-DO-NOT-LOG-7f3a";
const PARENT: &str = "iot.example.test";
const SERIAL: &str = "SN-0001";
const NAME: &str = "sn-0001.iot.example.test";

fn config() -> String {
    let manufacturers = serde_json::json!([{"name": "test", "ca_pem": pki().ca_pem}]);
    let acme = serde_json::json!(pki().acme_ca_pem);
    format!(
        r#"{{"control_plane": {{"cluster": "estuary_cp", "authority": "control-plane", "token": "{TOKEN}", "timeout_ms": 1500}},
            "parent_domain": "{PARENT}",
            "max_body_bytes": 4096,
            "labels": {{"fleet-a": "default"}},
            "cache_ttl_s": 60,
            "manufacturers": {manufacturers},
            "acme_ca_pem": {acme}}}"#
    )
}

struct Pki {
    ca_der: Vec<u8>,
    ca_pem: String,
    acme_ca_pem: String,
    /// A certificate the MANUFACTURER CA issued carrying the device's name: not an LDevID.
    forged_ldevid_pem: String,
    idevid_pem: String,
    /// Another device of the same manufacturer: SN-0002.
    other_idevid_pem: String,
    idevid_no_serial_pem: String,
    ldevid_pem: String,
    ldevid_der: Vec<u8>,
    enroll_csr: Vec<u8>,
    reenroll_csr: Vec<u8>,
    wrong_name_csr: Vec<u8>,
    /// The manufacturer CA, to issue more IDevIDs.
    issuer: Issuer<'static, KeyPair>,
}

fn dn_with_serial(params: &mut CertificateParams, serial: &str, cn: &str) {
    params
        .distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
    params.distinguished_name.push(DnType::CommonName, cn);
}

fn csr_for(names: &[&str], cn: &str) -> Vec<u8> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serialize_request(&key).unwrap().der().to_vec()
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Test Manufacturer CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        // The ACME CA that issues LDevIDs.
        let acme_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut acme_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        acme_params
            .distinguished_name
            .push(DnType::CommonName, "Test ACME CA");
        acme_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let acme_cert = acme_params.self_signed(&acme_key).unwrap();
        let acme_issuer = Issuer::new(acme_params, acme_key);

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        dn_with_serial(&mut p, SERIAL, "pledge");
        let idevid = p.signed_by(&key, &issuer).unwrap();

        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        dn_with_serial(&mut p, "SN-0002", "pledge");
        let other_idevid = p.signed_by(&key, &issuer).unwrap();

        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "no serial");
        let no_serial = p.signed_by(&key, &issuer).unwrap();

        // The LDevID and a re-enrolment CSR with the same subject and SAN.
        let mut p = CertificateParams::new(vec![NAME.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, NAME);
        let ldevid = p.signed_by(&key, &acme_issuer).unwrap();
        let forged = p.signed_by(&key, &issuer).unwrap();
        let reenroll_csr = p.serialize_request(&key).unwrap().der().to_vec();

        Pki {
            ca_der: ca_cert.der().to_vec(),
            ca_pem: ca_cert.pem(),
            acme_ca_pem: acme_cert.pem(),
            forged_ldevid_pem: forged.pem(),
            idevid_pem: idevid.pem(),
            other_idevid_pem: other_idevid.pem(),
            idevid_no_serial_pem: no_serial.pem(),
            ldevid_pem: ldevid.pem(),
            ldevid_der: ldevid.der().to_vec(),
            enroll_csr: csr_for(&[NAME], NAME),
            reenroll_csr,
            wrong_name_csr: csr_for(&["other.iot.example.test"], "other.iot.example.test"),
            issuer,
        }
    })
}

/// The control plane's csrattrs answer for the device `name` (DER).
fn attrs_for(name: &str) -> Vec<u8> {
    let name =
        estuary_proto::names::DeviceName::parse_under(name, &PARENT.parse().unwrap()).unwrap();
    estuary_proto::csrattrs::device_template(&name, &estuary_proto::policy::KeyPolicy::default())
        .to_der()
        .unwrap()
}

/// An XFCC header as Envoy writes it with SANITIZE_SET.
fn xfcc(pem: &str) -> String {
    format!(
        r#"By=spiffe://est.example.test;Hash=0123abcd;Cert="{}";Chain="{}";Subject="serialNumber=SN-0001,CN=pledge";URI=;DNS="#,
        url_encode(pem),
        url_encode(pem)
    )
}

fn b64(der: &[u8]) -> String {
    estuary_proto::base64::encode(der)
}

fn pkcs7() -> Vec<u8> {
    estuary_proto::pkcs7::encode_certs_only(&[pki().ldevid_der.clone(), pki().ca_der.clone()])
        .unwrap()
}

/// [`config`] with `edit` applied to its JSON.
fn config_edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut c: serde_json::Value = serde_json::from_str(&config()).unwrap();
    edit(&mut c);
    c.to_string()
}

fn filter() -> Filter {
    let f = Filter::new(&config()).unwrap();
    assert!(f.configured, "logs: {:?}", f.logs());
    f
}

/// A configured filter with [`config`] edited by `edit`.
fn filter_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Filter {
    let f = Filter::new(&config_edited(edit)).unwrap();
    assert!(f.configured, "logs: {:?}", f.logs());
    f
}

fn enroll_req(path: &str, cert_pem: &str, body: &str) -> Request {
    Request::new("POST", path)
        .mtls(true)
        .header("x-forwarded-client-cert", xfcc(cert_pem))
        .header("content-type", "application/pkcs10")
        .body(body)
}

fn local(o: &Outcome) -> &LocalResponse {
    o.local.as_ref().expect("the filter answered locally")
}

fn assert_error(o: &Outcome, status: u32, needle: &str) {
    let r = local(o);
    assert_eq!(r.status, status, "body: {}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    assert!(
        r.text().to_lowercase().contains(&needle.to_lowercase()),
        "{:?} not in {:?}",
        needle,
        r.text()
    );
    assert!(
        o.calls.is_empty(),
        "refused at the edge: no control-plane call"
    );
}

mod routes {
    use super::*;

    #[test]
    fn other_paths_pass_through_untouched() {
        let mut f = filter();
        let o = f.request(Request::new("GET", "/healthz")).unwrap();
        assert_eq!(o.headers_action, 0, "Continue");
        assert!(o.local.is_none() && o.calls.is_empty());
        let o = f
            .request(Request::new("POST", "/upload").body(vec![0u8; 100_000]))
            .unwrap();
        assert_eq!(o.headers_action, 0);
        assert_eq!(o.body_actions, vec![0], "body not buffered");
        assert!(o.local.is_none());
        let o = f
            .request(Request::new("GET", "/.well-known/estuary/cacerts"))
            .unwrap();
        assert_eq!(o.headers_action, 0);
    }

    #[test]
    fn unknown_operation_label_and_shape_are_404() {
        let mut f = filter();
        let o = f
            .request(Request::new("GET", "/.well-known/est/nope"))
            .unwrap();
        assert_error(&o, 404, "no such EST operation: nope");
        let o = f
            .request(Request::new("GET", "/.well-known/est/fleet-b/cacerts"))
            .unwrap();
        assert_error(&o, 404, "unknown EST label: fleet-b");
        let o = f
            .request(Request::new("GET", "/.well-known/est/a/b/cacerts"))
            .unwrap();
        assert_error(&o, 404, "not an EST path");
        let o = f.request(Request::new("GET", "/.well-known/est")).unwrap();
        assert_eq!(local(&o).status, 404);
    }

    #[test]
    fn fullcmc_is_501() {
        let mut f = filter();
        let o = f
            .request(Request::new("POST", "/.well-known/est/fleet-a/fullcmc"))
            .unwrap();
        assert_error(&o, 501, "fullcmc");
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let mut f = filter();
        let o = f
            .request(Request::new("GET", "/.well-known/est/simpleenroll"))
            .unwrap();
        assert_error(&o, 405, "use POST");
        assert_eq!(local(&o).header("allow"), Some("POST"));
        let o = f
            .request(Request::new("POST", "/.well-known/est/cacerts").body("x"))
            .unwrap();
        assert_error(&o, 405, "use GET");
        assert_eq!(local(&o).header("allow"), Some("GET"));
    }
}

mod client_auth {
    use super::*;

    #[test]
    fn no_client_certificate_is_401() {
        let mut f = filter();
        let body = b64(&pki().enroll_csr);
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .mtls(false)
                    .header("x-forwarded-client-cert", xfcc(&pki().idevid_pem))
                    .header("content-type", "application/pkcs10")
                    .body(&body),
            )
            .unwrap();
        assert_error(&o, 401, "client certificate is required");
        // mTLS but Envoy passed on no certificate.
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .mtls(true)
                    .header("content-type", "application/pkcs10")
                    .body(&body),
            )
            .unwrap();
        assert_error(&o, 401, "client certificate is required");
        // The last XFCC element (this hop) has no Cert.
        let spoof = format!("{},By=spiffe://envoy;Hash=00", xfcc(&pki().idevid_pem));
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .mtls(true)
                    .header("x-forwarded-client-cert", spoof)
                    .header("content-type", "application/pkcs10")
                    .body(&body),
            )
            .unwrap();
        assert_error(&o, 401, "client certificate is required");
        // Garbage in Cert.
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .mtls(true)
                    .header("x-forwarded-client-cert", "Cert=\"%zz\"")
                    .header("content-type", "application/pkcs10")
                    .body(&body),
            )
            .unwrap();
        assert_error(&o, 401, "could not be read");
    }

    #[test]
    fn wrong_kind_of_certificate_is_403() {
        let mut f = filter();
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                &pki().ldevid_pem,
                &b64(&pki().enroll_csr),
            ))
            .unwrap();
        assert_error(&o, 403, "use simplereenroll");
        let o = f
            .request(enroll_req(
                "/.well-known/est/simplereenroll",
                &pki().idevid_pem,
                &b64(&pki().reenroll_csr),
            ))
            .unwrap();
        assert_error(
            &o,
            403,
            "simplereenroll needs the certificate the ACME CA issued",
        );
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                &pki().idevid_no_serial_pem,
                &b64(&pki().enroll_csr),
            ))
            .unwrap();
        assert_error(&o, 403, "no subject serialNumber");
    }

    /// Issue 12: a certificate from a trusted MANUFACTURER CA that carries a device's name is
    /// not that device's LDevID; re-enrolment with it is refused at the edge, before any call.
    #[test]
    fn a_manufacturer_issued_certificate_with_a_device_name_cannot_reenrol() {
        let mut f = filter();
        let o = f
            .request(enroll_req(
                "/.well-known/est/simplereenroll",
                &pki().forged_ldevid_pem,
                &b64(&pki().reenroll_csr),
            ))
            .unwrap();
        assert_error(
            &o,
            403,
            "simplereenroll needs the certificate the ACME CA issued",
        );
        assert!(o.calls.is_empty(), "no control-plane call");
        // The real LDevID (issued by the ACME CA) is accepted.
        let o = f
            .request(enroll_req(
                "/.well-known/est/simplereenroll",
                &pki().ldevid_pem,
                &b64(&pki().reenroll_csr),
            ))
            .unwrap();
        assert_eq!(o.calls.len(), 1, "{:?}", o.local);
    }

    /// A client certificate from a CA that is neither a manufacturer nor the ACME CA names no
    /// device, whatever it says.
    #[test]
    fn a_certificate_from_an_unknown_issuer_is_403() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec![NAME.to_string()]).unwrap();
        dn_with_serial(&mut p, SERIAL, "pledge");
        let rogue = p.self_signed(&key).unwrap();
        let mut f = filter();
        for path in [
            "/.well-known/est/simpleenroll",
            "/.well-known/est/simplereenroll",
        ] {
            let o = f
                .request(enroll_req(path, &rogue.pem(), &b64(&pki().enroll_csr)))
                .unwrap();
            assert_error(&o, 403, "issued neither by the ACME CA");
            assert!(o.calls.is_empty());
        }
    }

    /// The XFCC certificate must be the connection's peer certificate (Envoy's
    /// `connection.sha256_peer_certificate_digest`), else 401: a proxy that lets a client's
    /// own XFCC through fails closed.
    #[test]
    fn an_xfcc_certificate_that_is_not_the_peer_certificate_is_401() {
        let mut f = filter();
        for peer in [
            host::PeerCert::Der(pki().ca_der.clone()),
            host::PeerCert::Absent,
        ] {
            let o = f
                .request(
                    enroll_req(
                        "/.well-known/est/simpleenroll",
                        &pki().idevid_pem,
                        &b64(&pki().enroll_csr),
                    )
                    .peer_cert(peer),
                )
                .unwrap();
            assert_error(&o, 401, "not the one this TLS connection presented");
            assert!(o.calls.is_empty());
            let o = f
                .request(
                    Request::new("GET", "/.well-known/est/csrattrs")
                        .mtls(true)
                        .header("x-forwarded-client-cert", xfcc(&pki().idevid_pem))
                        .peer_cert(host::PeerCert::Absent),
                )
                .unwrap();
            assert_error(&o, 401, "not the one this TLS connection presented");
        }
    }
}

mod body_checks {
    use super::*;

    #[test]
    fn wrong_content_type_is_415() {
        let mut f = filter();
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .mtls(true)
                    .header("x-forwarded-client-cert", xfcc(&pki().idevid_pem))
                    .header("content-type", "application/json")
                    .body(b64(&pki().enroll_csr)),
            )
            .unwrap();
        assert_error(&o, 415, "application/pkcs10");
        // Parameters are tolerated.
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .mtls(true)
                    .header("x-forwarded-client-cert", xfcc(&pki().idevid_pem))
                    .header("content-type", "application/pkcs10; charset=us-ascii")
                    .body(b64(&pki().enroll_csr)),
            )
            .unwrap();
        assert!(o.local.is_none(), "{:?}", o.local);
        assert_eq!(o.calls.len(), 1);
    }

    #[test]
    fn too_large_is_413_by_header_and_by_body() {
        let mut f = filter();
        let big = "A".repeat(5000);
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                &pki().idevid_pem,
                &big,
            ))
            .unwrap();
        assert_eq!(o.headers_action, 1);
        assert_error(&o, 413, "larger than 4096 bytes");
        assert!(
            o.body_actions.is_empty(),
            "refused from Content-Length alone"
        );
        // No Content-Length: the accumulated body decides, chunk by chunk.
        let mut req = Request::new("POST", "/.well-known/est/simpleenroll")
            .mtls(true)
            .header("x-forwarded-client-cert", xfcc(&pki().idevid_pem))
            .header("content-type", "application/pkcs10");
        req.body = Some(big.into_bytes());
        req.chunks = 10;
        let o = f.request(req).unwrap();
        assert_eq!(o.headers_action, 1);
        assert_error(&o, 413, "larger than 4096 bytes");
        assert!(
            o.body_actions.len() == 9,
            "stopped early: {:?}",
            o.body_actions
        );
    }

    #[test]
    fn bad_base64_der_and_signature_are_400() {
        let mut f = filter();
        let idevid = &pki().idevid_pem;
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                idevid,
                "!!! not base64 !!!",
            ))
            .unwrap();
        assert_error(&o, 400, "not valid base64");
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                idevid,
                &b64(b"definitely not DER"),
            ))
            .unwrap();
        assert_error(&o, 400, "bad CSR");
        let mut tampered = pki().enroll_csr.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                idevid,
                &b64(&tampered),
            ))
            .unwrap();
        assert_error(&o, 400, "bad CSR");
        let o = f
            .request(enroll_req("/.well-known/est/simpleenroll", idevid, "\r\n"))
            .unwrap();
        assert_error(&o, 400, "empty");
    }

    #[test]
    fn csr_for_another_name_is_refused_at_the_edge() {
        let mut f = filter();
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                &pki().idevid_pem,
                &b64(&pki().wrong_name_csr),
            ))
            .unwrap();
        assert_error(&o, 403, "CSR refused");
    }
}

/// RFC 7030 §4.4: serverkeygen takes the simpleenroll checks (the request key aside) and
/// passes the control plane's multipart answer on byte for byte.
mod serverkeygen {
    use super::*;
    use estuary_proto::serverkeygen as skg;

    const PATH: &str = "/.well-known/est/fleet-a/serverkeygen";

    #[test]
    fn forwards_the_checked_csr_and_passes_the_multipart_answer_on_unchanged() {
        let mut f = filter();
        let o = f
            .request(enroll_req(PATH, &pki().idevid_pem, &b64(&pki().enroll_csr)))
            .unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        let call = &o.calls[0];
        assert_eq!(call.header(":path"), Some(internal_api::SERVERKEYGEN_PATH));
        assert_eq!(
            call.header(internal_api::HDR_DEVICE_SERIAL),
            Some("sn-0001")
        );
        assert_eq!(call.header(internal_api::HDR_LABEL), Some("fleet-a"));
        assert_eq!(call.body, pki().enroll_csr, "raw DER CSR");

        let mut body = Vec::new();
        skg::build(b"not a real key", &pkcs7(), &mut body);
        let ct = skg::content_type();
        let r = f
            .answer(&o, Some(200), &[("content-type", ct.as_str())], &body)
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(ct.as_str()));
        assert_eq!(r.header("content-transfer-encoding"), None);
        assert_eq!(r.body, body, "byte for byte");
        f.finish(&o).unwrap();
        assert!(
            f.logs().iter().all(|l| !l.contains("bm90IGEgcmVhbCBrZXk")),
            "the key part never logged"
        );
    }

    #[test]
    fn a_202_is_passed_on_with_retry_after() {
        let mut f = filter();
        let o = f
            .request(enroll_req(PATH, &pki().idevid_pem, &b64(&pki().enroll_csr)))
            .unwrap();
        let r = f
            .answer(&o, Some(202), &[("retry-after", "7")], b"")
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.header("retry-after")), (202, Some("7")));
    }

    #[test]
    fn refusals_are_those_of_simpleenroll() {
        let mut f = filter();
        // Another device's name: 403 at the edge, no call.
        let o = f
            .request(enroll_req(
                PATH,
                &pki().idevid_pem,
                &b64(&pki().wrong_name_csr),
            ))
            .unwrap();
        assert_error(&o, 403, "may only ask for sn-0001.iot.example.test");
        // An LDevID: serverkeygen needs the IDevID.
        let o = f
            .request(enroll_req(PATH, &pki().ldevid_pem, &b64(&pki().enroll_csr)))
            .unwrap();
        assert_eq!(local(&o).status, 403, "{}", local(&o).text());
        assert!(o.calls.is_empty());
        // GET: 405 + Allow: POST.
        let o = f.request(Request::new("GET", PATH)).unwrap();
        assert_eq!(local(&o).status, 405);
        assert_eq!(local(&o).header("allow"), Some("POST"));
    }

    #[test]
    fn an_encrypted_key_request_is_400_naming_the_attribute() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec![NAME.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, NAME);
        let attr = rcgen::Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 16, 2, 54],
            values: vec![0x31, 0x06, 0x04, 0x04, 1, 2, 3, 4],
        };
        let csr = p
            .serialize_request_with_attributes(&key, vec![attr])
            .unwrap()
            .der()
            .to_vec();
        let mut f = filter();
        let o = f
            .request(enroll_req(PATH, &pki().idevid_pem, &b64(&csr)))
            .unwrap();
        assert_error(&o, 400, "AsymmetricDecryptKeyIdentifier");
    }
}

mod enroll {
    use super::*;

    fn enroll(f: &mut Filter, path: &str) -> Outcome {
        let o = f
            .request(enroll_req(path, &pki().idevid_pem, &b64(&pki().enroll_csr)))
            .unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        assert_eq!(o.headers_action, 1, "Pause for the body");
        assert_eq!(o.body_actions, vec![1]);
        assert_eq!(o.calls.len(), 1);
        o
    }

    #[test]
    fn simpleenroll_forwards_the_checked_csr_and_returns_base64_pkcs7() {
        let mut f = filter();
        let o = enroll(&mut f, "/.well-known/est/fleet-a/simpleenroll");
        let call = &o.calls[0];
        assert_eq!(call.upstream, "estuary_cp");
        assert_eq!(call.timeout_ms, 1500);
        assert_eq!(call.header(":method"), Some("POST"));
        assert_eq!(call.header(":path"), Some(internal_api::ENROLL_PATH));
        assert_eq!(call.header(":authority"), Some("control-plane"));
        assert_eq!(
            call.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(call.header("content-type"), Some("application/pkcs10"));
        assert_eq!(
            call.header(internal_api::HDR_DEVICE_SERIAL),
            Some("sn-0001")
        );
        assert_eq!(
            call.header(internal_api::HDR_OPERATION),
            Some("simpleenroll")
        );
        assert_eq!(call.header(internal_api::HDR_LABEL), Some("fleet-a"));
        // The verified certificate goes along, one line of base64 DER, for the control plane
        // to check again; the XFCC Chain (here the leaf again) adds nothing new.
        let idevid_der = estuary_proto::pem::decode_certs(&pki().idevid_pem).unwrap()[0].clone();
        let sent = call
            .header(internal_api::HDR_CLIENT_CERT)
            .expect("client cert header");
        assert!(!sent.contains('\n'));
        assert_eq!(
            estuary_proto::base64::decode(sent.as_bytes()).unwrap(),
            idevid_der
        );
        assert_eq!(call.header(internal_api::HDR_CLIENT_CHAIN), None);
        assert_eq!(call.body, pki().enroll_csr, "raw DER CSR");

        let p7 = pkcs7();
        let r = f
            .answer(
                &o,
                Some(200),
                &[("content-type", estuary_proto::est::CT_PKCS7_CERTS_ONLY)],
                &p7,
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/pkcs7-mime; smime-type=certs-only")
        );
        assert_eq!(r.header("content-transfer-encoding"), Some("base64"));
        assert_eq!(estuary_proto::base64::decode(&r.body).unwrap(), p7);
        let certs = estuary_proto::pkcs7::decode_certs_only(
            &estuary_proto::base64::decode(&r.body).unwrap(),
        )
        .unwrap();
        assert_eq!(certs[0], pki().ldevid_der);
        f.finish(&o).unwrap();
        assert!(
            f.logs().iter().all(|l| !l.contains(TOKEN)),
            "token never logged"
        );
    }

    #[test]
    fn simplereenroll_with_the_ldevid() {
        let mut f = filter();
        let o = f
            .request(enroll_req(
                "/.well-known/est/simplereenroll",
                &pki().ldevid_pem,
                &b64(&pki().reenroll_csr),
            ))
            .unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        let call = &o.calls[0];
        assert_eq!(
            call.header(internal_api::HDR_OPERATION),
            Some("simplereenroll")
        );
        assert_eq!(
            call.header(internal_api::HDR_DEVICE_SERIAL),
            Some("sn-0001")
        );
        assert_eq!(call.header(internal_api::HDR_LABEL), None);
        let r = f.answer(&o, Some(200), &[], &pkcs7()).unwrap().unwrap();
        assert_eq!(r.status, 200);
        // A re-enrolment CSR with another subject is refused (RFC 7030 §4.2.2).
        let o = f
            .request(enroll_req(
                "/.well-known/est/simplereenroll",
                &pki().ldevid_pem,
                &b64(&pki().wrong_name_csr),
            ))
            .unwrap();
        assert_error(&o, 403, "CSR refused");
    }

    #[test]
    fn pending_is_202_with_retry_after() {
        let mut f = filter();
        let o = enroll(&mut f, "/.well-known/est/simpleenroll");
        let r = f
            .answer(&o, Some(202), &[("retry-after", "30")], b"")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 202);
        assert_eq!(r.header("retry-after"), Some("30"));
        assert!(r.text().contains("pending"));
        let o = enroll(&mut f, "/.well-known/est/simpleenroll");
        let r = f.answer(&o, Some(202), &[], b"").unwrap().unwrap();
        assert_eq!(r.header("retry-after"), Some("10"));
    }

    #[test]
    fn control_plane_4xx_reason_is_passed_on() {
        let mut f = filter();
        let o = enroll(&mut f, "/.well-known/est/simpleenroll");
        let r = f
            .answer(
                &o,
                Some(409),
                &[("content-type", "text/plain")],
                b"a certificate for this device is being issued",
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(
            r.text().trim(),
            "a certificate for this device is being issued"
        );
    }

    #[test]
    fn control_plane_5xx_detail_stays_internal() {
        let mut f = filter();
        for (status, expected) in [(500u16, 500u32), (502, 502), (504, 502)] {
            let o = enroll(&mut f, "/.well-known/est/simpleenroll");
            let r = f
                .answer(
                    &o,
                    Some(status),
                    &[],
                    b"redis 10.1.2.3:6379 refused; acme order 77 failed",
                )
                .unwrap()
                .unwrap();
            assert_eq!(r.status, expected);
            assert!(
                !r.text().contains("redis") && !r.text().contains("10.1.2.3"),
                "{}",
                r.text()
            );
            assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        }
        // 200 with something that is not PKCS#7: not forwarded either.
        let o = enroll(&mut f, "/.well-known/est/simpleenroll");
        let r = f.answer(&o, Some(200), &[], b"oops").unwrap().unwrap();
        assert_eq!(r.status, 502);
    }

    #[test]
    fn busy_timeout_and_dispatch_failure_are_503_with_retry_after() {
        let mut f = filter();
        let o = enroll(&mut f, "/.well-known/est/simpleenroll");
        let r = f
            .answer(&o, Some(503), &[("retry-after", "7")], b"busy")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("7"));
        // 429 is the device's own limit: it reaches the device with its reason.
        let o = enroll(&mut f, "/.well-known/est/simpleenroll");
        let r = f
            .answer(
                &o,
                Some(429),
                &[("retry-after", "7")],
                b"this device has requested 5 new certificates",
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert!(r.text().contains("requested 5 new certificates"));
        let o = enroll(&mut f, "/.well-known/est/simpleenroll");
        let r = f.answer(&o, None, &[], b"").unwrap().unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("10"));
        assert!(r.text().contains("control plane unavailable"));

        f.store.data_mut().fail_http_call = true;
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                &pki().idevid_pem,
                &b64(&pki().enroll_csr),
            ))
            .unwrap();
        let r = local(&o);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("10"));
        assert!(r.text().contains("control plane unavailable"));
    }
}

mod cached_gets {
    use super::*;

    #[test]
    fn cacerts_needs_no_client_cert_and_is_cached() {
        let mut f = filter();
        let o = f
            .request(Request::new("GET", "/.well-known/est/cacerts"))
            .unwrap();
        assert!(o.local.is_none());
        assert_eq!(o.calls.len(), 1);
        let call = &o.calls[0];
        assert_eq!(call.header(":method"), Some("GET"));
        assert_eq!(call.header(":path"), Some(internal_api::CACERTS_PATH));
        assert_eq!(
            call.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        let p7 = estuary_proto::pkcs7::encode_certs_only(&[pki().ca_der.clone()]).unwrap();
        let r = f.answer(&o, Some(200), &[], &p7).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/pkcs7-mime; smime-type=certs-only")
        );
        assert_eq!(r.header("content-transfer-encoding"), Some("base64"));
        assert_eq!(estuary_proto::base64::decode(&r.body).unwrap(), p7);

        // Second request: from the cache, no call.
        let o2 = f
            .request(Request::new("GET", "/.well-known/est/cacerts"))
            .unwrap();
        assert!(o2.calls.is_empty());
        assert_eq!(local(&o2).status, 200);
        assert_eq!(local(&o2).body, r.body);
        // Third: from the VM's own copy of that entry, the same answer.
        let o2b = f
            .request(Request::new("GET", "/.well-known/est/cacerts"))
            .unwrap();
        assert!(o2b.calls.is_empty());
        assert_eq!(local(&o2b).body, r.body);
        assert_eq!(
            local(&o2b).header("content-transfer-encoding"),
            Some("base64")
        );
        // Another label has its own entry.
        let o3 = f
            .request(Request::new("GET", "/.well-known/est/fleet-a/cacerts"))
            .unwrap();
        assert_eq!(o3.calls.len(), 1);
        assert_eq!(o3.calls[0].header(internal_api::HDR_LABEL), Some("fleet-a"));
        // After the TTL (60 s) the control plane is asked again.
        f.store.data_mut().now_ns += 61 * 1_000_000_000;
        let o4 = f
            .request(Request::new("GET", "/.well-known/est/cacerts"))
            .unwrap();
        assert_eq!(o4.calls.len(), 1);
    }

    #[test]
    fn csrattrs_needs_a_client_cert_and_is_cached_per_device() {
        let mut f = filter();
        let o = f
            .request(Request::new("GET", "/.well-known/est/csrattrs"))
            .unwrap();
        assert_error(&o, 401, "client certificate is required");

        let req = || {
            Request::new("GET", "/.well-known/est/csrattrs")
                .mtls(true)
                .header("x-forwarded-client-cert", xfcc(&pki().idevid_pem))
        };
        let o = f.request(req()).unwrap();
        assert!(
            o.local.is_none(),
            "{:?}",
            o.local.as_ref().map(|l| l.text())
        );
        let call = &o.calls[0];
        assert_eq!(call.header(":path"), Some(internal_api::CSRATTRS_PATH));
        assert_eq!(
            call.header(internal_api::HDR_DEVICE_SERIAL),
            Some("sn-0001")
        );
        let attrs = attrs_for(NAME);
        let r = f.answer(&o, Some(200), &[], &attrs).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/csrattrs"));
        assert_eq!(r.header("content-transfer-encoding"), Some("base64"));
        assert_eq!(estuary_proto::base64::decode(&r.body).unwrap(), attrs);

        let o2 = f.request(req()).unwrap();
        assert!(o2.calls.is_empty());
        assert_eq!(local(&o2).body, r.body);

        // The LDevID of the same device is served the same way.
        let o3 = f
            .request(
                Request::new("GET", "/.well-known/est/csrattrs")
                    .mtls(true)
                    .header("x-forwarded-client-cert", xfcc(&pki().ldevid_pem)),
            )
            .unwrap();
        assert_eq!(local(&o3).status, 200);
    }
}

/// The csrattrs cache (`csrattrs_cache`) is bounded however many devices ask.
mod csrattrs_cache {
    use super::*;

    fn idevid(serial: &str) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        dn_with_serial(&mut p, serial, "pledge");
        p.signed_by(&key, &pki().issuer).unwrap().pem()
    }

    fn ask(f: &mut Filter, cert_pem: &str, serial: &str) -> Outcome {
        let o = f
            .request(
                Request::new("GET", "/.well-known/est/csrattrs")
                    .mtls(true)
                    .header("x-forwarded-client-cert", xfcc(cert_pem)),
            )
            .unwrap();
        if !o.calls.is_empty() {
            let attrs = attrs_for(&format!("{}.{PARENT}", serial.to_ascii_lowercase()));
            let r = f.answer(&o, Some(200), &[], &attrs).unwrap().unwrap();
            assert_eq!(r.status, 200);
            f.finish(&o).unwrap();
        }
        o
    }

    fn attrs_keys(f: &Filter) -> Vec<(String, usize)> {
        f.store
            .data()
            .shared
            .iter()
            .filter(|(k, _)| k.starts_with("estuary.attrs/") || k.starts_with("estuary.csrattrs"))
            .map(|(k, (v, _))| (k.clone(), v.len()))
            .collect()
    }

    #[test]
    fn many_devices_fill_a_fixed_set_of_keys_and_the_oldest_are_asked_again() {
        let cfg = config_edited(|c| c["csrattrs_cache"] = serde_json::json!({"max_entries": 6}));
        let mut f = Filter::new(&cfg).unwrap();
        assert!(f.configured, "{:?}", f.logs());
        let devices: Vec<(String, String)> = (0..30)
            .map(|i| {
                let serial = format!("SN-B{i:03}");
                (idevid(&serial), serial)
            })
            .collect();
        for (pem, serial) in &devices {
            assert_eq!(
                ask(&mut f, pem, serial).calls.len(),
                1,
                "{serial}: first ask"
            );
            // Asked again at once: from the cache.
            let again = ask(&mut f, pem, serial);
            assert!(
                again.calls.is_empty(),
                "{serial}: the newest answer is cached"
            );
            assert_eq!(local(&again).status, 200);
            let keys = attrs_keys(&f);
            assert!(keys.len() <= 2, "6 entries are two keys: {keys:?}");
            assert!(keys.iter().all(|(k, _)| k.starts_with("estuary.attrs/")));
        }
        // The first devices were evicted: they reach the control plane again.
        let evicted = devices
            .iter()
            .take(10)
            .filter(|(pem, _)| {
                let o = f
                    .request(
                        Request::new("GET", "/.well-known/est/csrattrs")
                            .mtls(true)
                            .header("x-forwarded-client-cert", xfcc(pem)),
                    )
                    .unwrap();
                !o.calls.is_empty()
            })
            .count();
        assert!(evicted >= 4, "only {evicted} of the first 10 were evicted");
    }

    #[test]
    fn max_entries_0_caches_nothing_and_a_bad_bound_is_refused() {
        let cfg = config_edited(|c| c["csrattrs_cache"] = serde_json::json!({"max_entries": 0}));
        let mut f = Filter::new(&cfg).unwrap();
        assert!(f.configured, "{:?}", f.logs());
        for _ in 0..2 {
            assert_eq!(ask(&mut f, &pki().idevid_pem, "SN-0001").calls.len(), 1);
        }
        assert!(attrs_keys(&f).is_empty());
        for bad in [
            serde_json::json!({"max_entries": 65537}),
            serde_json::json!({"max_entries": 4, "ttl_s": 1}),
            serde_json::json!(4096),
        ] {
            let f = Filter::new(&config_edited(|c| c["csrattrs_cache"] = bad.clone())).unwrap();
            assert!(!f.configured, "{bad} was accepted");
            assert!(
                f.logs().iter().any(|l| l.contains("csrattrs_cache")),
                "{bad}: {:?}",
                f.logs()
            );
        }
    }
}

mod configuration {
    use super::*;

    #[test]
    fn bad_configuration_refuses_to_start_and_names_the_fields() {
        let f = Filter::new(
            r#"{"control_plane": {"cluster": "cp", "authority": "cp", "token": "hunter2-secret", "timeout_ms": 0},
                "parent_domain": "iot.example.test", "keys": {"rsa_min_bits": 1024}, "colour": "blue"}"#,
        )
        .unwrap();
        assert!(!f.configured);
        let logs = f.logs().join("\n");
        for field in ["control_plane.timeout_ms", "keys.rsa_min_bits", "colour"] {
            assert!(logs.contains(field), "{field} not named in {logs}");
        }
        assert!(!logs.contains("hunter2"), "token logged: {logs}");
        let f = Filter::new("not json").unwrap();
        assert!(!f.configured);
        assert!(f.logs().join("\n").contains("not valid JSON"));
    }

    #[test]
    fn release_wasm_is_under_one_mebibyte() {
        let size = host::wasm_size();
        assert!(size > 0 && size < 1024 * 1024, "wasm is {size} bytes");
        eprintln!("estuary_filter.wasm: {size} bytes");
    }

    fn config_with_token_env() -> String {
        config_edited(|c| {
            let cp = c["control_plane"].as_object_mut().unwrap();
            cp.remove("token");
            cp.insert("token_env".into(), "ESTUARY_API_TOKEN".into());
        })
    }

    #[test]
    fn token_env_is_read_from_the_vm_environment() {
        let secret = "from-the-proxy-env-5b1e";
        let mut f = Filter::with_env(
            &config_with_token_env(),
            &[("HOME", "/"), ("ESTUARY_API_TOKEN", secret)],
        )
        .unwrap();
        assert!(f.configured, "logs: {:?}", f.logs());
        assert!(!f.logs().join("\n").contains(secret), "token logged");
        let o = f
            .request(Request::new("GET", "/.well-known/est/cacerts"))
            .unwrap();
        assert_eq!(o.calls.len(), 1);
        assert_eq!(
            o.calls[0].header("authorization"),
            Some(format!("Bearer {secret}").as_str())
        );
    }

    #[test]
    fn token_env_unset_refuses_to_start_naming_the_variable() {
        let f = Filter::new(&config_with_token_env()).unwrap();
        assert!(!f.configured);
        let logs = f.logs().join("\n");
        assert!(
            logs.contains(
                "control_plane.token_env: environment variable ESTUARY_API_TOKEN is not set"
            ),
            "{logs}"
        );
        let f = Filter::with_env(&config_with_token_env(), &[("ESTUARY_API_TOKEN", "")]).unwrap();
        assert!(!f.configured);
        assert!(
            f.logs()
                .join("\n")
                .contains("environment variable ESTUARY_API_TOKEN is empty"),
            "{:?}",
            f.logs()
        );
    }
}

mod authorities {
    use super::*;

    fn filter_for(hosts: &[&str]) -> Filter {
        let f = Filter::new(&config_edited(|c| {
            c["authorities"] = serde_json::json!(hosts)
        }))
        .unwrap();
        assert!(f.configured, "logs: {:?}", f.logs());
        f
    }

    fn with_authority(mut req: Request, authority: Option<&str>) -> Request {
        req.headers.retain(|(n, _)| n != ":authority");
        if let Some(a) = authority {
            req = req.header(":authority", a);
        }
        req
    }

    #[test]
    fn est_and_brski_for_another_host_are_421_at_the_edge() {
        let mut f = filter_for(&["est.example.test", "192.0.2.10"]);
        for authority in [
            Some("other.example.test"),
            Some("est.example.test.evil"),
            None,
        ] {
            let o = f
                .request(with_authority(
                    Request::new("GET", "/.well-known/est/cacerts"),
                    authority,
                ))
                .unwrap();
            assert_error(&o, 421, "misdirected request");
            let o = f
                .request(with_authority(
                    enroll_req(
                        "/.well-known/est/simpleenroll",
                        &pki().idevid_pem,
                        &b64(&pki().enroll_csr),
                    ),
                    authority,
                ))
                .unwrap();
            assert_error(&o, 421, "misdirected request");
            assert!(o.body_actions.is_empty(), "no body read");
            let o = f
                .request(with_authority(
                    Request::new("POST", "/.well-known/brski/requestvoucher").mtls(true),
                    authority,
                ))
                .unwrap();
            assert_error(&o, 421, "misdirected request");
        }
    }

    #[test]
    fn listed_hosts_go_on_and_other_paths_pass_untouched() {
        let mut f = filter_for(&["est.example.test", "192.0.2.10"]);
        for authority in [
            "est.example.test",
            "EST.Example.Test:8443",
            "192.0.2.10:443",
        ] {
            let o = f
                .request(with_authority(
                    Request::new("GET", "/.well-known/est/cacerts"),
                    Some(authority),
                ))
                .unwrap();
            assert!(o.local.is_none(), "{authority}: {:?}", o.local);
            assert_eq!(o.calls.len(), 1, "{authority}");
        }
        let o = f
            .request(with_authority(
                Request::new("GET", "/healthz"),
                Some("other.example.test"),
            ))
            .unwrap();
        assert_eq!(o.headers_action, 0, "Continue");
        assert!(o.local.is_none() && o.calls.is_empty());
    }

    #[test]
    fn without_authorities_any_host_is_served() {
        let mut f = filter();
        let o = f
            .request(with_authority(
                Request::new("GET", "/.well-known/est/cacerts"),
                Some("anything.example"),
            ))
            .unwrap();
        assert!(o.local.is_none());
        assert_eq!(o.calls.len(), 1);
    }
}

mod randomized {
    use super::*;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/.well-known/est/simpleenroll".to_string()),
            Just("/.well-known/est/simplereenroll".to_string()),
            Just("/.well-known/est/cacerts".to_string()),
            Just("/.well-known/est/csrattrs".to_string()),
            Just("/.well-known/est/fleet-a/simpleenroll".to_string()),
            "/\\.well-known/est/[a-z%/?.-]{0,20}",
            ".{0,40}",
        ]
    }

    fn xfcc_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(xfcc(&pki().idevid_pem).into_bytes()),
            Just(xfcc(&pki().ldevid_pem).into_bytes()),
            "[A-Za-z=;,\"\\\\% ]{0,80}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..120),
            // A real header with random damage.
            (0usize..2000, any::<u8>()).prop_map(|(at, b)| {
                let mut v = xfcc(&pki().idevid_pem).into_bytes();
                let i = at % v.len();
                v[i] = b;
                v
            }),
        ]
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b64(&pki().enroll_csr).into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..600),
            "[A-Za-z0-9+/=\r\n]{0,600}".prop_map(String::into_bytes),
            (0usize..4000, any::<u8>()).prop_map(|(at, b)| {
                let mut der = pki().enroll_csr.clone();
                let i = at % der.len();
                der[i] = b;
                b64(&der).into_bytes()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn random_requests_never_trap(
            method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), Just("PUT".to_string()), "[A-Z]{0,6}"],
            path in path(),
            mtls in proptest::option::of(any::<bool>()),
            xfcc in proptest::option::of(xfcc_value()),
            content_type in proptest::option::of(prop_oneof![Just(b"application/pkcs10".to_vec()), proptest::collection::vec(any::<u8>(), 0..30)]),
            content_length in proptest::option::of(prop_oneof![Just(b"12".to_vec()), proptest::collection::vec(any::<u8>(), 0..12)]),
            body in proptest::option::of(body()),
            chunks in 1usize..4,
            answer_status in proptest::option::of(100u16..600),
            answer_body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            thread_local! {
                static F: std::cell::RefCell<Option<Filter>> = const { std::cell::RefCell::new(None) };
            }
            F.with(|cell| {
                let mut slot = cell.borrow_mut();
                let f = slot.get_or_insert_with(filter);
                let mut req = Request::new(&method, &path);
                req.mtls = mtls;
                if let Some(x) = &xfcc { req = req.header("x-forwarded-client-cert", x); }
                if let Some(ct) = &content_type { req = req.header("content-type", ct); }
                if let Some(cl) = &content_length { req = req.header("content-length", cl); }
                req.body = body.clone();
                req.chunks = chunks;
                let o = f.request(req).expect("the filter never traps on a request");
                if o.local.is_none() && !o.calls.is_empty() {
                    let r = f
                        .answer(&o, answer_status, &[("retry-after", "x")], &answer_body)
                        .expect("the filter never traps on an answer");
                    let r = r.expect("every control-plane answer gets a reply");
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

/// The verified-CSR-signature cache (`csr_signature_cache`): it skips the signature check for
/// bytes seen before, and nothing else.
mod csr_signature_cache {
    use super::*;
    use sha2::Digest;

    fn digest(der: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(der).into()
    }

    /// The digests held in the filter's shared data, per bucket key.
    fn buckets(f: &Filter) -> Vec<(String, Vec<[u8; 32]>)> {
        let mut out: Vec<(String, Vec<[u8; 32]>)> = f
            .store
            .data()
            .shared
            .iter()
            .filter(|(k, _)| k.starts_with("estuary.csrsig/"))
            .map(|(k, (v, _))| {
                assert_eq!(v.len() % 40, 0, "whole entries only");
                let ds = v
                    .chunks_exact(40)
                    .map(|e| e[8..].try_into().unwrap())
                    .collect();
                (k.clone(), ds)
            })
            .collect();
        out.sort();
        out
    }

    fn cached(f: &Filter, der: &[u8]) -> bool {
        let d = digest(der);
        buckets(f).iter().any(|(_, ds)| ds.contains(&d))
    }

    fn enroll_with(f: &mut Filter, cert_pem: &str, csr: &[u8]) -> Outcome {
        let o = f
            .request(enroll_req(
                "/.well-known/est/simpleenroll",
                cert_pem,
                &b64(csr),
            ))
            .unwrap();
        f.finish(&o).unwrap();
        o
    }

    #[test]
    fn a_tampered_signature_is_refused_after_the_untampered_csr_was_cached() {
        let mut f = filter();
        let good = &pki().enroll_csr;
        let o = enroll_with(&mut f, &pki().idevid_pem, good);
        assert_eq!(o.calls.len(), 1, "{:?}", o.local.as_ref().map(|l| l.text()));
        assert!(cached(&f, good), "the verified CSR is remembered");
        // Accepted again from the cache.
        assert_eq!(enroll_with(&mut f, &pki().idevid_pem, good).calls.len(), 1);

        // Same request, last signature byte flipped (inside the INTEGER s: still DER).
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 0x01;
        let o = enroll_with(&mut f, &pki().idevid_pem, &tampered);
        assert_error(&o, 400, "signature");
        assert!(
            !cached(&f, &tampered),
            "a bad signature is never remembered"
        );
        assert!(cached(&f, good));
    }

    #[test]
    fn a_cached_signature_does_not_excuse_any_other_check() {
        let mut f = filter();
        let good = &pki().enroll_csr;
        assert_eq!(enroll_with(&mut f, &pki().idevid_pem, good).calls.len(), 1);
        assert!(cached(&f, good));
        // The same CSR bytes (for sn-0001) from another device: the name policy still applies.
        let o = enroll_with(&mut f, &pki().other_idevid_pem, good);
        assert_error(&o, 403, "sn-0002");
        // ... and so does the client certificate check.
        let o = f
            .request(
                Request::new("POST", "/.well-known/est/simpleenroll")
                    .header("content-type", "application/pkcs10")
                    .body(b64(good)),
            )
            .unwrap();
        assert_error(&o, 401, "client certificate");

        // A CSR with a good signature for the wrong name: its signature is remembered, its
        // name refused every time.
        let wrong = &pki().wrong_name_csr;
        for _ in 0..2 {
            let o = enroll_with(&mut f, &pki().idevid_pem, wrong);
            assert_error(&o, 403, "other.iot.example.test");
        }
        assert!(cached(&f, wrong));
    }

    #[test]
    fn the_cache_stays_within_max_entries_and_evicts() {
        let cfg =
            config_edited(|c| c["csr_signature_cache"] = serde_json::json!({"max_entries": 6}));
        let mut f = Filter::new(&cfg).unwrap();
        assert!(f.configured, "{:?}", f.logs());
        let csrs: Vec<Vec<u8>> = (0..30).map(|_| csr_for(&[NAME], NAME)).collect();
        for csr in &csrs {
            let o = enroll_with(&mut f, &pki().idevid_pem, csr);
            assert_eq!(o.calls.len(), 1);
            let b = buckets(&f);
            // 6 entries: two buckets, of 4 and 2.
            assert!(
                b.len() <= 2,
                "{:?}",
                b.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
            let total: usize = b.iter().map(|(_, ds)| ds.len()).sum();
            assert!(total <= 6, "{total} entries");
            for (key, ds) in &b {
                let cap = if key == "estuary.csrsig/0" { 4 } else { 2 };
                assert!(ds.len() <= cap, "{key}: {} entries", ds.len());
            }
            assert!(cached(&f, csr), "the newest is kept");
        }
        let kept = csrs.iter().filter(|c| cached(&f, c)).count();
        assert!((2..=6).contains(&kept), "{kept} kept");
        assert!(!cached(&f, &csrs[0]), "the oldest was evicted");

        // Expired entries are no hit and make room: after the TTL (default 3600 s) the bucket a
        // new CSR lands in holds that CSR alone (and the IDevID's issuer signature, remembered
        // again by the same request, if it lands there too).
        f.store.data_mut().now_ns += 3601 * 1_000_000_000;
        let fresh = csr_for(&[NAME], NAME);
        assert_eq!(
            enroll_with(&mut f, &pki().idevid_pem, &fresh).calls.len(),
            1
        );
        let d = digest(&fresh);
        let idevid_der = estuary_proto::pem::decode_certs(&pki().idevid_pem).unwrap()[0].clone();
        let pair = estuary_proto::cms_signed::issued_by_digest(&idevid_der, &pki().ca_der);
        let (_, ds) = buckets(&f)
            .into_iter()
            .find(|(_, ds)| ds.contains(&d))
            .unwrap();
        assert!(
            ds.iter().all(|x| *x == d || *x == pair),
            "{} entries",
            ds.len()
        );
    }

    /// The issuer's signature on a client certificate is remembered in the same cache, under
    /// the digest of the exact certificate and CA: after the genuine IDevID was accepted, a
    /// forgery for the same serial from a rogue CA with the manufacturer CA's very name, and
    /// the genuine certificate with a damaged signature, are still refused.
    #[test]
    fn a_forged_client_certificate_is_refused_after_the_genuine_one_was_cached() {
        let mut f = filter();
        let idevid_der = estuary_proto::pem::decode_certs(&pki().idevid_pem).unwrap()[0].clone();
        let pair = estuary_proto::cms_signed::issued_by_digest(&idevid_der, &pki().ca_der);
        let o = enroll_with(&mut f, &pki().idevid_pem, &pki().enroll_csr);
        assert_eq!(o.calls.len(), 1, "{:?}", o.local.as_ref().map(|l| l.text()));
        assert!(
            buckets(&f).iter().any(|(_, ds)| ds.contains(&pair)),
            "the IDevID's issuer signature is remembered"
        );
        assert_eq!(
            enroll_with(&mut f, &pki().idevid_pem, &pki().enroll_csr)
                .calls
                .len(),
            1,
            "accepted again with the remembered signature"
        );

        let rogue_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut rogue = CertificateParams::new(Vec::<String>::new()).unwrap();
        rogue
            .distinguished_name
            .push(DnType::CommonName, "Test Manufacturer CA");
        rogue.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let rogue_issuer = Issuer::new(rogue, rogue_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        dn_with_serial(&mut p, SERIAL, "pledge");
        let forged = p.signed_by(&key, &rogue_issuer).unwrap();
        let o = enroll_with(&mut f, &forged.pem(), &pki().enroll_csr);
        assert_error(&o, 403, "issued neither by the ACME CA");
        assert!(o.calls.is_empty());

        let mut damaged = idevid_der.clone();
        *damaged.last_mut().unwrap() ^= 0x01;
        let damaged_pem = estuary_proto::pem::encode_certs(&[damaged]);
        let o = enroll_with(&mut f, &damaged_pem, &pki().enroll_csr);
        assert!(o.calls.is_empty(), "a damaged signature is never forwarded");
        assert_eq!(local(&o).status, 403, "{}", local(&o).text());
    }

    #[test]
    fn max_entries_0_turns_it_off() {
        let cfg =
            config_edited(|c| c["csr_signature_cache"] = serde_json::json!({"max_entries": 0}));
        let mut f = Filter::new(&cfg).unwrap();
        assert!(f.configured, "{:?}", f.logs());
        assert_eq!(
            enroll_with(&mut f, &pki().idevid_pem, &pki().enroll_csr)
                .calls
                .len(),
            1
        );
        assert!(buckets(&f).is_empty());
    }
}

/// Per-request cost of the edge hot path under wasmtime (NOT Envoy: V8 and Envoy's own work are
/// not in these numbers). Run with
/// `cargo test -p estuary-filter --test wasm_edge -- --ignored --nocapture hot_path_timing`.
mod hot_path_timing {
    use super::*;
    use std::time::Instant;

    const N: usize = 200;

    /// One simpleenroll through headers and body up to the control-plane call; ns per request.
    fn run(f: &mut Filter, csrs: &[Vec<u8>]) -> u128 {
        let bodies: Vec<String> = csrs.iter().map(|c| b64(c)).collect();
        let start = Instant::now();
        for body in &bodies {
            let o = f
                .request(enroll_req(
                    "/.well-known/est/simpleenroll",
                    &pki().idevid_pem,
                    body,
                ))
                .unwrap();
            assert_eq!(o.calls.len(), 1, "{:?}", o.local.as_ref().map(|l| l.text()));
            f.finish(&o).unwrap();
        }
        start.elapsed().as_nanos() / bodies.len() as u128
    }

    #[test]
    #[ignore = "timing, not a check: run by hand"]
    fn simpleenroll_per_request() {
        const ROUNDS: usize = 5;
        let mut f = filter();
        // Warm up the VM (allocator, lazy statics) with requests that are not measured.
        let warm: Vec<Vec<u8>> = (0..50).map(|_| csr_for(&[NAME], NAME)).collect();
        run(&mut f, &warm);
        let same: Vec<Vec<u8>> = vec![pki().enroll_csr.clone(); N];
        // The fastest of interleaved rounds: the machine is shared, slow rounds are others' load.
        let (mut cold, mut cached) = (u128::MAX, u128::MAX);
        for _ in 0..ROUNDS {
            let distinct: Vec<Vec<u8>> = (0..N).map(|_| csr_for(&[NAME], NAME)).collect();
            cold = cold.min(run(&mut f, &distinct));
            cached = cached.min(run(&mut f, &same));
        }
        let cacerts = {
            let start = Instant::now();
            for _ in 0..N {
                let o = f
                    .request(Request::new("GET", "/.well-known/est/cacerts"))
                    .unwrap();
                f.finish(&o).unwrap();
            }
            start.elapsed().as_nanos() / N as u128
        };
        eprintln!(
            "wasmtime, {} bytes of wasm, best of {ROUNDS} rounds of {N} requests: simpleenroll cold (new CSR each) \
             {cold} ns/request, repeated CSR {cached} ns/request; cacerts (uncached) {cacerts} ns/request",
            host::wasm_size()
        );
    }
}

/// The enrolment-answer cache (`enroll_answer_cache`): the same client certificate posting the
/// same CSR again gets the control plane's earlier answer from the edge; anything else, and
/// anyone else, still goes through every check and to the control plane.
mod enroll_answer_cache {
    use super::*;

    const ENROLL: &str = "/.well-known/est/simpleenroll";

    fn post(f: &mut Filter, path: &str, cert_pem: &str, csr: &[u8]) -> Outcome {
        f.request(enroll_req(path, cert_pem, &b64(csr))).unwrap()
    }

    /// Posts, lets the control plane answer `status` with `body`, ends the stream; the reply.
    fn post_answered(f: &mut Filter, cert_pem: &str, csr: &[u8], status: u16, body: &[u8]) {
        let o = post(f, ENROLL, cert_pem, csr);
        assert_eq!(
            o.calls.len(),
            1,
            "reaches the control plane: {:?}",
            o.local.as_ref().map(|l| l.text())
        );
        let r = f.answer(&o, Some(status), &[], body).unwrap().unwrap();
        assert_eq!(r.status, u32::from(status), "{}", r.text());
        f.finish(&o).unwrap();
    }

    /// The reply the edge gave without calling the control plane.
    fn answered_at_edge(f: &mut Filter, path: &str, cert_pem: &str, csr: &[u8]) -> LocalResponse {
        let o = post(f, path, cert_pem, csr);
        assert!(o.calls.is_empty(), "no control-plane call");
        let r = local(&o).clone();
        f.finish(&o).unwrap();
        r
    }

    /// Whether the request went on to the control plane (the call is then left unanswered).
    fn reaches_control_plane(f: &mut Filter, path: &str, cert_pem: &str, csr: &[u8]) -> bool {
        let o = post(f, path, cert_pem, csr);
        let called = o.calls.len() == 1 && o.local.is_none();
        f.finish(&o).unwrap();
        called
    }

    /// The device's own IDevID with its own CSR goes on to the control plane.
    fn genuine_pair_reaches_control_plane(f: &mut Filter) -> bool {
        reaches_control_plane(f, ENROLL, &pki().idevid_pem, &pki().enroll_csr)
    }

    fn enrolled_keys(f: &Filter) -> Vec<(String, usize)> {
        let mut keys: Vec<(String, usize)> = f
            .store
            .data()
            .shared
            .iter()
            .filter(|(k, _)| k.starts_with("estuary.enrolled/"))
            .map(|(k, (v, _))| (k.clone(), v.len()))
            .collect();
        keys.sort();
        keys
    }

    /// Another IDevID of the same manufacturer for the same serial, with its own key.
    fn second_idevid_same_serial() -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        dn_with_serial(&mut p, SERIAL, "pledge");
        p.signed_by(&key, &pki().issuer).unwrap().pem()
    }

    #[test]
    fn the_same_certificate_and_csr_again_get_the_same_answer_from_the_edge() {
        let mut f = filter();
        let p7 = pkcs7();
        post_answered(&mut f, &pki().idevid_pem, &pki().enroll_csr, 200, &p7);
        assert_eq!(enrolled_keys(&f).len(), 1, "one answer stored");

        let counted = |f: &Filter| {
            f.store
                .data()
                .stub_calls
                .iter()
                .filter(|c| *c == "proxy_increment_metric")
                .count()
        };
        assert_eq!(counted(&f), 0, "a control-plane answer is not an edge hit");
        let r = answered_at_edge(&mut f, ENROLL, &pki().idevid_pem, &pki().enroll_csr);
        assert_eq!(counted(&f), 1, "the edge hit is counted for the operator");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some(estuary_proto::est::CT_PKCS7_CERTS_ONLY)
        );
        assert_eq!(r.header("content-transfer-encoding"), Some("base64"));
        assert_eq!(estuary_proto::base64::decode(&r.body).unwrap(), p7);
    }

    #[test]
    fn a_trusted_but_different_credential_never_gets_the_cached_answer() {
        let mut f = filter();
        post_answered(&mut f, &pki().idevid_pem, &pki().enroll_csr, 200, &pkcs7());

        // Another device of the same manufacturer posts the cached CSR: its name is not this
        // device's, refused at the edge.
        let o = post(&mut f, ENROLL, &pki().other_idevid_pem, &pki().enroll_csr);
        assert_error(&o, 403, "CSR refused");
        f.finish(&o).unwrap();

        // A second genuine IDevID for the same serial: not the certificate the answer was given
        // to, so the control plane decides.
        assert!(reaches_control_plane(
            &mut f,
            ENROLL,
            &second_idevid_same_serial(),
            &pki().enroll_csr
        ));

        // The device's certificate re-signed by a look-alike CA: refused before any cache.
        let rogue_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut rogue = CertificateParams::new(Vec::<String>::new()).unwrap();
        rogue
            .distinguished_name
            .push(DnType::CommonName, "Test Manufacturer CA");
        rogue.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let rogue_issuer = Issuer::new(rogue, rogue_key);
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        dn_with_serial(&mut p, SERIAL, "pledge");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let forged = p.signed_by(&key, &rogue_issuer).unwrap().pem();
        let o = post(&mut f, ENROLL, &forged, &pki().enroll_csr);
        assert_error(&o, 403, "issued neither by the ACME CA");
        f.finish(&o).unwrap();

        // The cached CSR with its signature damaged: another digest, and refused.
        let mut tampered = pki().enroll_csr.clone();
        *tampered.last_mut().unwrap() ^= 0x01;
        let o = post(&mut f, ENROLL, &pki().idevid_pem, &tampered);
        assert!(o.calls.is_empty(), "a damaged CSR is never forwarded");
        assert_ne!(local(&o).status, 200, "{}", local(&o).text());
        f.finish(&o).unwrap();

        // The same device and CSR under an EST label, or as a re-enrolment with its LDevID:
        // another operation, another answer.
        assert!(reaches_control_plane(
            &mut f,
            "/.well-known/est/fleet-a/simpleenroll",
            &pki().idevid_pem,
            &pki().enroll_csr
        ));
        assert!(reaches_control_plane(
            &mut f,
            "/.well-known/est/simplereenroll",
            &pki().ldevid_pem,
            &pki().reenroll_csr
        ));

        // The genuine pair still gets its answer.
        let r = answered_at_edge(&mut f, ENROLL, &pki().idevid_pem, &pki().enroll_csr);
        assert_eq!(r.status, 200);
    }

    #[test]
    fn only_a_certificate_is_kept_never_a_pending_or_refused_answer() {
        let mut f = filter();
        post_answered(&mut f, &pki().idevid_pem, &pki().enroll_csr, 202, b"");
        post_answered(
            &mut f,
            &pki().idevid_pem,
            &pki().enroll_csr,
            403,
            b"policy says no",
        );
        post_answered(&mut f, &pki().idevid_pem, &pki().enroll_csr, 503, b"");
        assert!(enrolled_keys(&f).is_empty());
        // A 200 that is not a PKCS#7 is a 502 for the device and is not kept either.
        let o = post(&mut f, ENROLL, &pki().idevid_pem, &pki().enroll_csr);
        let r = f
            .answer(&o, Some(200), &[], b"not a pkcs7")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 502);
        f.finish(&o).unwrap();
        assert!(enrolled_keys(&f).is_empty());
        assert!(genuine_pair_reaches_control_plane(&mut f));
    }

    #[test]
    fn an_answer_expires_after_ttl_s() {
        let mut f = filter_edited(|c| {
            c["enroll_answer_cache"] = serde_json::json!({"max_entries": 16, "ttl_s": 30})
        });
        post_answered(&mut f, &pki().idevid_pem, &pki().enroll_csr, 200, &pkcs7());
        f.store.data_mut().now_ns += 29 * 1_000_000_000;
        assert_eq!(
            answered_at_edge(&mut f, ENROLL, &pki().idevid_pem, &pki().enroll_csr).status,
            200
        );
        f.store.data_mut().now_ns += 2 * 1_000_000_000;
        assert!(genuine_pair_reaches_control_plane(&mut f));
    }

    #[test]
    fn max_entries_or_ttl_0_turns_it_off() {
        for off in [
            serde_json::json!({"max_entries": 0}),
            serde_json::json!({"ttl_s": 0}),
        ] {
            let mut f = filter_edited(|c| c["enroll_answer_cache"] = off);
            post_answered(&mut f, &pki().idevid_pem, &pki().enroll_csr, 200, &pkcs7());
            assert!(enrolled_keys(&f).is_empty());
            assert!(genuine_pair_reaches_control_plane(&mut f));
        }
    }

    #[test]
    fn it_stays_within_max_entries_however_many_devices_enrol() {
        let mut f = filter_edited(|c| {
            c["enroll_answer_cache"] = serde_json::json!({"max_entries": 8, "ttl_s": 60})
        });
        let p7 = pkcs7();
        for _ in 0..40 {
            let csr = csr_for(&[NAME], NAME);
            post_answered(&mut f, &pki().idevid_pem, &csr, 200, &p7);
        }
        let keys = enrolled_keys(&f);
        assert!(keys.len() <= 2, "ceil(8 / 4) keys: {keys:?}");
        let per_answer = 8 + 32 + 2 + p7.len();
        let stored: usize = keys.iter().map(|(_, n)| n).sum();
        assert!(
            stored <= 8 * per_answer,
            "{stored} bytes for at most 8 answers"
        );
        assert!(stored >= per_answer, "the latest answers are kept");
    }
}
