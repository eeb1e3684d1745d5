//! The pledge CLI's `teap` command against the dev stack's TEAP server (RADIUS on loopback):
//! a device with an IDevID ends up with an ACME-issued certificate, verified with openssl.
use std::process::Command;

use estuary_tests::dev_stack::{workspace_bin, DevStack, DevStackOptions};
use estuary_tests::stack::DEV_PARENT;
use estuary_tests::util::TempDir;

#[test]
fn the_pledge_cli_enrols_over_teap() {
    let pledge = workspace_bin("estuary-pledge", "ESTUARY_PLEDGE_BIN").expect("pledge");
    let stack = DevStack::start_built(&DevStackOptions {
        teap: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let (radius, secret) = stack.radius.clone().expect("TEAP server");
    let tmp = TempDir::new("teap-pledge").expect("tmp");
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(tmp.path(), "idevid", "TEAP-7")
        .expect("idevid");
    let out = tmp.path().join("out");
    let run = Command::new(&pledge)
        .arg("teap")
        .arg("--radius")
        .arg(radius.to_string())
        .arg("--cert")
        .arg(&id.cert_path)
        .arg("--key")
        .arg(&id.key_path)
        .arg("--server-ca")
        .arg(&stack.pki.server_ca.cert_path)
        .arg("--fragment-size")
        .arg("300")
        .arg("--out-dir")
        .arg(&out)
        .env("ESTUARY_RADIUS_SECRET", &secret)
        .output()
        .expect("run pledge");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "{}{stderr}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(stderr.contains("MS-MPPE keys match"), "{stderr}");
    assert!(!stderr.contains(&secret), "the secret must not be printed");
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&stack.stack.pebble.issuer_root_pem)
        .arg("-untrusted")
        .arg(out.join("chain.pem"))
        .arg(out.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let san = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(out.join("cert.pem"))
        .output()
        .expect("openssl");
    let san = String::from_utf8_lossy(&san.stdout);
    assert!(san.contains(&format!("DNS:teap-7.{DEV_PARENT}")), "{san}");

    // A wrong secret: the server drops the packets silently (RFC 3579), the peer gives up.
    let bad = Command::new(&pledge)
        .arg("teap")
        .arg("--radius")
        .arg(radius.to_string())
        .arg("--cert")
        .arg(&id.cert_path)
        .arg("--key")
        .arg(&id.key_path)
        .arg("--server-ca")
        .arg(&stack.pki.server_ca.cert_path)
        .arg("--out-dir")
        .arg(tmp.path().join("bad"))
        .env("ESTUARY_RADIUS_SECRET", "not-the-secret-0123456789")
        .output()
        .expect("run pledge");
    assert_eq!(
        bad.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
