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
    // The CSR was bound to the tunnel, and the device asked for the ACME trust anchor
    // (Trusted-Server-Root, RFC 9930 §4.2.18): it wrote Pebble's root, and the chain it got
    // (end entity + intermediate, draft-17's full chain) verifies up to that anchor alone.
    assert!(stderr.contains("bound to the tunnel"), "{stderr}");
    assert!(
        stderr.contains("Trusted-Server-Root: 1 ACME trust anchor"),
        "{stderr}"
    );
    let anchor = std::fs::read_to_string(out.join("acme-roots.pem")).expect("acme-roots.pem");
    let pebble_root =
        std::fs::read_to_string(&stack.stack.pebble.issuer_root_pem).expect("pebble root");
    let body = |pem: &str| -> String {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    assert_eq!(body(&anchor), body(&pebble_root));
    let chain = std::fs::read_to_string(out.join("chain.pem")).expect("chain.pem");
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(out.join("acme-roots.pem"))
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
