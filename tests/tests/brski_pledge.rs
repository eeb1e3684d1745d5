//! `estuary-pledge brski` through the real dev stack (Envoy, registrar, test MASA, Pebble):
//! voucher, then EST over the pinned domain certificate; and a tampered voucher is refused by
//! the pledge's side too (the registrar already refuses it: the pledge gets an error, no files).
use std::path::Path;
use std::process::{Command, Output};

use estuary_tests::dev_stack::{workspace_bin, DevStack, DevStackOptions};
use estuary_tests::stack::DEV_PARENT;
use estuary_tests::util::TempDir;

fn start() -> DevStack {
    DevStack::start_built(&DevStackOptions {
        brski: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack")
}

fn pledge_brski(stack: &DevStack, cert: &Path, key: &Path, out: &Path) -> Output {
    let pledge = workspace_bin("estuary-pledge", "ESTUARY_PLEDGE_BIN").expect("pledge binary");
    let masa = stack.masa.as_ref().expect("MASA");
    Command::new(pledge)
        .arg("brski")
        .arg("--brski-url")
        .arg(stack.brski_url())
        .arg("--est-url")
        .arg(stack.est_url())
        .arg("--masa-ca")
        .arg(&masa.anchor_pem)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--out-dir")
        .arg(out)
        .arg("--max-wait")
        .arg("60")
        .arg("--json")
        .output()
        .expect("run estuary-pledge")
}

#[test]
fn the_pledge_cli_gets_a_voucher_then_a_certificate() {
    let stack = start();
    let tmp = TempDir::new("brski-pledge").expect("tmp");
    let out = tmp.path().join("out");
    let o = pledge_brski(
        &stack,
        &stack.pki.demo.cert_path,
        &stack.pki.demo.key_path,
        &out,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "pledge failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    assert_eq!(summary["voucher"]["serial"], stack.pki.demo_serial.as_str());
    let name = format!(
        "{}.{DEV_PARENT}",
        stack.pki.demo_serial.to_ascii_lowercase()
    );
    let names = summary["dns_names"].to_string().to_ascii_lowercase();
    assert!(names.contains(&name), "{summary}");
    // The pinned domain certificate is the dev domain CA; the voucher verifies with openssl.
    let pinned = std::fs::read_to_string(out.join("pinned-domain.pem")).expect("pinned");
    let domain_ca = std::fs::read_to_string(&stack.pki.server_ca.cert_path).expect("ca");
    assert_eq!(
        estuary_proto::pem::decode_certs(&pinned).expect("pem"),
        estuary_proto::pem::decode_certs(&domain_ca).expect("pem")
    );
    let v = Command::new("openssl")
        .args([
            "cms", "-verify", "-inform", "DER", "-purpose", "any", "-CAfile",
        ])
        .arg(&stack.masa.as_ref().expect("MASA").anchor_pem)
        .arg("-in")
        .arg(out.join("voucher.cms"))
        .output()
        .expect("openssl");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(out.join("cert.pem").is_file());
    assert_eq!(stack.masa.as_ref().expect("MASA").audit_log().len(), 1);
}

#[test]
fn the_pledge_cli_gets_no_certificate_from_a_tampered_voucher() {
    let stack = start();
    let masa = stack.masa.as_ref().expect("MASA");
    masa.set_tamper(true);
    let tmp = TempDir::new("brski-pledge-t").expect("tmp");
    let out = tmp.path().join("out");
    let o = pledge_brski(
        &stack,
        &stack.pki.demo.cert_path,
        &stack.pki.demo.key_path,
        &out,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "pledge accepted a tampered voucher");
    assert!(
        stderr.contains("requestvoucher failed (HTTP 502)"),
        "{stderr}"
    );
    assert!(!out.join("voucher.cms").exists());
    assert!(!out.join("cert.pem").exists());
}
