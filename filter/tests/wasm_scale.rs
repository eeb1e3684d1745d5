//! The filter's memory as the number of devices grows, measured on the in-repo proxy-wasm host
//! (wasmtime), not in Envoy: N distinct devices each ask `GET /.well-known/est/csrattrs` once,
//! the control plane's answer (the device's CSR-attributes template) is delivered, and the
//! filter keeps it in proxy-wasm shared data, in the bounded buckets of `csrattrs_cache`
//! (`estuary.attrs/<index>`, at most `max_entries` answers, the oldest evicted). Reported:
//! the shared-data keys and bytes (keys + values) and the VM's linear memory, before, at
//! checkpoints, and after. `cargo xtask bench --scale` runs it and reads the last stdout line
//! (`ESTUARY-SCALE-JSON {…}`); by hand:
//!
//! `ESTUARY_SCALE_DEVICES=2000 cargo test -p estuary-filter --test wasm_scale -- --ignored --nocapture`
//!
//! Build the wasm first: `cargo build -p estuary-filter --target wasm32-wasip1 --profile wasm-release`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod host;

use std::time::Instant;

use host::{url_encode, Filter, Request};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, DnValue, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};

const PARENT: &str = "iot.example.test";
/// The dev stack's `cache_ttl_s` (tests/src/dev_stack.rs).
const CACHE_TTL_S: u64 = 300;

/// Shared-data keys under `prefix` and their bytes (key + value), and all keys and bytes.
fn shared_usage(f: &Filter, prefix: &str) -> (usize, usize, usize, usize) {
    let shared = &f.store.data().shared;
    let (mut n, mut bytes, mut all_bytes) = (0, 0, 0);
    for (k, (v, _)) in shared {
        let b = k.len() + v.len();
        all_bytes += b;
        if k.starts_with(prefix) {
            n += 1;
            bytes += b;
        }
    }
    (n, bytes, shared.len(), all_bytes)
}

#[test]
#[ignore = "a measurement for cargo xtask bench --scale, not a check: run by hand"]
fn csrattrs_entries_for_distinct_devices() {
    let devices: usize = std::env::var("ESTUARY_SCALE_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let checkpoints = 10usize;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Scale Manufacturer CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    // The ACME CA that issues LDevIDs: another CA, so the IDevIDs are not taken for LDevIDs.
    let acme_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut acme_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    acme_params
        .distinguished_name
        .push(DnType::CommonName, "Scale ACME CA");
    acme_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let acme_cert = acme_params.self_signed(&acme_key).unwrap();
    let device_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let config = serde_json::json!({
        "control_plane": {"cluster": "estuary_cp", "authority": "control-plane",
                          "token": "scale-token", "timeout_ms": 1500},
        "parent_domain": PARENT,
        "max_body_bytes": 16384,
        "cache_ttl_s": CACHE_TTL_S,
        "manufacturers": [{"name": "scale", "ca_pem": ca_cert.pem()}],
        "acme_ca_pem": acme_cert.pem(),
    });
    let mut f = Filter::new(&config.to_string()).unwrap();
    assert!(f.configured, "logs: {:?}", f.logs());

    let prefix = "estuary.attrs/";
    let point = |f: &mut Filter, done: usize, t: &Instant| {
        let (n, bytes, keys, all_bytes) = shared_usage(f, prefix);
        serde_json::json!({
            "devices": done, "csrattrs_keys": n, "csrattrs_bytes": bytes,
            "shared_keys": keys, "shared_bytes": all_bytes,
            "wasm_memory_bytes": f.memory_bytes(), "elapsed_s": t.elapsed().as_secs_f64(),
        })
    };
    let t0 = Instant::now();
    let mut points = vec![point(&mut f, 0, &t0)];
    let mut answer_bytes = 0;
    for i in 0..devices {
        let serial = format!("SC-{i:06}");
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(serial.as_str().try_into().unwrap()),
        );
        p.distinguished_name.push(DnType::CommonName, "pledge");
        let cert = p.signed_by(&device_key, &issuer).unwrap();
        let xfcc = format!(
            r#"By=spiffe://est.example.test;Hash=00;Cert="{}";Subject="serialNumber={serial},CN=pledge";URI=;DNS="#,
            url_encode(&cert.pem())
        );
        let o = f
            .request(
                Request::new("GET", "/.well-known/est/csrattrs")
                    .mtls(true)
                    .header("x-forwarded-client-cert", xfcc),
            )
            .unwrap();
        assert_eq!(
            o.calls.len(),
            1,
            "device {i}: {:?}",
            o.local.as_ref().map(|l| l.text())
        );
        let name = format!("{}.{PARENT}", serial.to_ascii_lowercase());
        let name =
            estuary_proto::names::DeviceName::parse_under(&name, &PARENT.parse().unwrap()).unwrap();
        let attrs = estuary_proto::csrattrs::device_template(
            &name,
            &estuary_proto::policy::KeyPolicy::default(),
        )
        .to_der()
        .unwrap();
        answer_bytes = attrs.len();
        let r = f.answer(&o, Some(200), &[], &attrs).unwrap().unwrap();
        assert_eq!(r.status, 200);
        f.finish(&o).unwrap();
        // One second of the filter's clock per 1,000 devices: entries age as in a real run.
        if i % 1000 == 999 {
            f.store.data_mut().now_ns += 1_000_000_000;
        }
        let done = i + 1;
        if done % (devices / checkpoints).max(1) == 0 || done == devices {
            let p = point(&mut f, done, &t0);
            eprintln!("wasm_scale: {p}");
            points.push(p);
        }
    }
    // Past the TTL: the entries are stale; they are dropped when their bucket is next written
    // (Envoy's shared data has no delete); count them again.
    f.store.data_mut().now_ns += (CACHE_TTL_S + 1) * 1_000_000_000;
    let after_ttl = point(&mut f, devices, &t0);
    let last = points.last().cloned().unwrap();
    let per = |k: &str| {
        let a = points[0][k].as_f64().unwrap();
        let b = last[k].as_f64().unwrap();
        (b - a) / devices.max(1) as f64
    };
    let doc = serde_json::json!({
        "method": "wasmtime host (filter/tests/host), release estuary_filter.wasm, not Envoy",
        "devices": devices,
        "cache_ttl_s": CACHE_TTL_S,
        "csrattrs_answer_der_bytes": answer_bytes,
        // The filter's default `csrattrs_cache.max_entries` (not set in the config above).
        "csrattrs_bound": 4096,
        "points": points,
        "after_ttl": after_ttl,
        "csrattrs_bytes_per_device": per("csrattrs_bytes"),
        "wasm_memory_bytes_per_device": per("wasm_memory_bytes"),
        "elapsed_s": t0.elapsed().as_secs_f64(),
    });
    println!("ESTUARY-SCALE-JSON {doc}");
}
