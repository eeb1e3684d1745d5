//! The dev stack with the RFC 9444 test CA (`cargo xtask up --ca rfc9444`): devices enrol
//! through real Envoy with the pledge CLI, and only the parent domain ever gets a DNS-01
//! record — per-device DNS traffic is zero.
use std::process::Command;

use estuary_tests::dev_stack::{workspace_bin, DevStack, DevStackOptions};
use estuary_tests::stack::metric_value;
use estuary_tests::util::TempDir;

#[test]
fn devices_enrol_through_envoy_with_one_parent_preauthorisation() {
    let pledge = workspace_bin("estuary-pledge", "ESTUARY_PLEDGE_BIN").expect("pledge");
    let stack = DevStack::start_built(&DevStackOptions {
        rfc9444_ca: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack with the RFC 9444 CA");
    let tmp = TempDir::new("rfc9444-envoy").expect("tmp");
    for serial in ["PRE-1", "PRE-2", "PRE-3"] {
        let id = stack
            .pki
            .manufacturer
            .issue_idevid(tmp.path(), serial, serial)
            .expect("idevid");
        let out = tmp.path().join(serial);
        let o = Command::new(&pledge)
            .arg("enroll")
            .arg("--est-url")
            .arg(stack.est_url())
            .arg("--server-ca")
            .arg(&stack.pki.server_ca.cert_path)
            .arg("--cert")
            .arg(&id.cert_path)
            .arg("--key")
            .arg(&id.key_path)
            .arg("--out-dir")
            .arg(&out)
            .output()
            .expect("run pledge");
        assert!(
            o.status.success(),
            "{serial}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&stack.acme_roots)
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
    }
    // The parent's record is removed after the answers (within seconds), then counted.
    let txt = stack
        .stack
        .bind
        .txt_after_removal(
            "_acme-challenge.iot.example.test",
            std::time::Duration::from_secs(5),
        )
        .expect("dig");
    assert!(txt.is_empty(), "{txt:?}");
    let metrics = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}/metrics", stack.control_planes[0].addr))
        .output()
        .expect("curl");
    let m = String::from_utf8_lossy(&metrics.stdout);
    // One add and one delete for _acme-challenge.<parent>, whatever the number of devices.
    assert_eq!(metric_value(&m, "estuary_dns_updates_total"), 2.0, "{m}");
    assert_eq!(
        metric_value(
            &m,
            "estuary_enrollments_total{protocol=\"est\",result=\"issued\"}"
        ),
        3.0
    );
    let txt = stack
        .stack
        .bind
        .dig_txt("_acme-challenge.pre-1.iot.example.test")
        .expect("dig");
    assert!(txt.is_empty(), "{txt:?}");
}
