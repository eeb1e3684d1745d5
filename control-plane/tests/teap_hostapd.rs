//! Interoperability with code we did not write: hostapd 2.10's own TEAP peer (`eapol_test`)
//! and TEAP RADIUS server, built from Debian's `wpa` source package by the harness
//! (`estuary_tests::hostapd::build`, cached under target/hostapd/).
mod common;
mod teap_support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use estuary_teap::peer;
use estuary_tests::util::{free_port, KillOnDrop, TempDir};
use teap_support::*;

/// (i) eapol_test with eap=TEAP and a client certificate against Estuary's server: the device
/// is already enrolled (hostapd's peer ignores the PKCS#10 request), so it is accepted, and the
/// MPPE keys match eapol_test's own MSK.
#[tokio::test(flavor = "multi_thread")]
async fn hostapd_eapol_test_authenticates_against_estuary() {
    let bins = estuary_tests::hostapd::build().expect("build hostapd's eapol_test");
    let t = start(&[("tls13", "false")]);
    let sn = serial("teap-hi");
    let dev = t.idevid(&sn);
    let dir = TempDir::new("eapol").expect("tmp");
    let conf = dir.path().join("eapol.conf");
    std::fs::write(
        &conf,
        format!(
            "network={{\n  key_mgmt=WPA-EAP\n  eap=TEAP\n  identity=\"{sn}\"\n  ca_cert=\"{ca}\"\n  \
             client_cert=\"{cert}\"\n  private_key=\"{key}\"\n  phase2=\"auth=MSCHAPV2\"\n  \
             pac_file=\"{pac}\"\n}}\n",
            ca = t.pki.server_ca.cert_path.display(),
            cert = dev.cert_path.display(),
            key = dev.key_path.display(),
            pac = dir.path().join("pac").display(),
        ),
    )
    .expect("write conf");
    let out = tokio::task::spawn_blocking({
        let bin = bins.eapol_test.clone();
        let radius = t.radius;
        move || {
            Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &radius.port().to_string(),
                    "-s",
                    SECRET,
                ])
                .args(["-r", "0", "-t", "20"])
                .output()
                .expect("run eapol_test")
        }
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    let tail: String = text.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        out.status.success() && text.contains("SUCCESS"),
        "eapol_test failed:\n{tail}\n--- server log ---\n{}",
        t.cp.log_text()
    );
    assert!(text.contains("MPPE keys OK: 1  mismatch: 0"), "{tail}");
    assert!(
        text.contains("RADIUS message: code=2"),
        "no Access-Accept:\n{tail}"
    );
}

/// (ii) Estuary's TEAP peer against hostapd's TEAP server (eap_teap_auth=2: a client
/// certificate is enough): Access-Accept, and hostapd's MS-MPPE keys equal our MSK.
#[tokio::test(flavor = "multi_thread")]
async fn estuary_peer_authenticates_against_hostapd_and_derives_the_same_msk() {
    let bins = estuary_tests::hostapd::build().expect("build hostapd");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("hostapd").expect("tmp");
    let pki = estuary_tests::pki::DevPki::create(&dir.path().join("pki")).expect("pki");
    let sn = serial("teap-hs");
    let dev = pki
        .manufacturer
        .issue_idevid(dir.path(), "dev", &sn)
        .expect("idevid");
    let port = free_port().expect("port");
    std::fs::write(
        dir.path().join("clients"),
        format!("127.0.0.1/32 {SECRET}\n"),
    )
    .expect("clients");
    std::fs::write(
        dir.path().join("users"),
        "* TEAP\n\"pledge@teap.example.test\" TEAP\n".to_string()
            + &format!("\"/CN=Estuary dev pledge {sn}/serialNumber={sn}\" MSCHAPV2 \"x\" [2]\n"),
    )
    .expect("users");
    let conf = dir.path().join("hostapd.conf");
    std::fs::write(
        &conf,
        format!(
            "driver=none\ninterface=estuary0\nlogger_stdout=-1\nlogger_stdout_level=0\n\
             eap_server=1\neap_user_file={users}\nca_cert={ca}\nserver_cert={cert}\n\
             private_key={key}\nradius_server_clients={clients}\nradius_server_auth_port={port}\n\
             eap_teap_auth=2\npac_opaque_encr_key=000102030405060708090a0b0c0d0e0f\n\
             eap_fast_a_id=101112131415161718191a1b1c1d1e1f\neap_fast_a_id_info=estuary-test\n",
            users = dir.path().join("users").display(),
            ca = pki.manufacturer.cert_path.display(),
            cert = pki.server.cert_path.display(),
            key = pki.server.key_path.display(),
            clients = dir.path().join("clients").display(),
        ),
    )
    .expect("conf");
    let log = dir.path().join("hostapd.log");
    let mut cmd = Command::new(&bins.hostapd);
    cmd.arg("-dd").arg(&conf);
    let mut child = KillOnDrop::spawn(cmd, &log).expect("spawn hostapd");
    // hostapd binds its RADIUS port during start-up; give it a moment and check it lives.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        child.is_running(),
        "hostapd exited:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cfg = peer_config(
        server,
        SECRET,
        &pki.server_ca.cert_path,
        Some((dev.cert_path.as_path(), dev.key_path.as_path())),
    );
    cfg.tls13 = false;
    // Asking for the trust roots (RFC 9930 §4.2.18): hostapd 2.10's server does not answer a
    // Trusted-Server-Root request (the TLV is optional, so it is ignored) and still accepts.
    cfg.request_trusted_roots = true;
    let out = peer::run(&cfg, None).await.unwrap_or_else(|e| {
        panic!(
            "against hostapd: {e}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(
        out.mppe_keys_match,
        "hostapd's MS-MPPE keys differ from our MSK"
    );
    assert!(out.trusted_server_roots.is_none());
    child.kill();
}
