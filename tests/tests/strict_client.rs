//! Clients stricter than curl: some EST clients in the field look up `Content-Type` and
//! `Retry-After` case-sensitively. Envoy writes HTTP/1 header names in lower case unless told
//! otherwise; `envoy/envoy.yaml` tells it `proper_case_words`. These tests read the raw bytes
//! Envoy sends with `openssl s_client`: no HTTP library, which would normalise the case.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use estuary_tests::curl::{enrol_until_done, openssl_csr};
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::stack::{CpOptions, DEV_PARENT};
use estuary_tests::util::TempDir;

/// Sends `request` over TLS to Envoy's EST listener (optionally with a client certificate) and
/// returns every byte of the answer, up to the server closing the connection.
fn raw_exchange(stack: &DevStack, cert: Option<(&Path, &Path)>, request: &[u8]) -> String {
    let url = stack.est_url();
    let host_port = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .expect("host:port")
        .to_string();
    let mut cmd = Command::new("timeout");
    cmd.args([
        "60", "openssl", "s_client", "-quiet", "-ign_eof", "-connect",
    ])
    .arg(&host_port)
    .arg("-CAfile")
    .arg(&stack.pki.server_ca.cert_path);
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request)
        .expect("send the request");
    let out = child.wait_with_output().expect("openssl s_client output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 "),
        "no HTTP answer:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The header section of a raw answer, lines as sent.
fn head(raw: &str) -> Vec<&str> {
    raw.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .collect()
}

#[test]
fn envoy_names_est_headers_in_conventional_case() {
    let stack = DevStack::start_built(&DevStackOptions {
        cp: CpOptions {
            // Every enrolment answers 202 first, with Retry-After.
            budget_ms: 1,
            retry_after_s: 1,
            ..CpOptions::default()
        },
        ..DevStackOptions::default()
    })
    .expect("start the dev stack");
    let url = stack.est_url();
    let path = url.split_once("//").map(|(_, r)| r).unwrap_or("");
    let path = &path[path.find('/').unwrap_or(path.len())..];
    let authority = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("");

    // cacerts needs no client certificate (RFC 7030 §4.1.1).
    let raw = raw_exchange(
        &stack,
        None,
        format!("GET {path}/cacerts HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let lines = head(&raw);
    assert!(lines[0].starts_with("HTTP/1.1 200"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Content-Type: application/pkcs7-mime")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"Content-Transfer-Encoding: base64"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("content-type:")),
        "{lines:?}"
    );

    // simpleenroll: 202 with Retry-After.
    let tmp = TempDir::new("strict-client").expect("tmp");
    let serial = format!("STRICT-{}", std::process::id());
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(tmp.path(), "strict-idevid", &serial)
        .expect("idevid");
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    let csr = openssl_csr(tmp.path(), &format!("/CN={name}"), &name, &[]);
    let body = base64_lines(&csr);
    let request = format!(
        "POST {path}/simpleenroll HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/pkcs10\r\nContent-Transfer-Encoding: base64\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let raw = raw_exchange(
        &stack,
        Some((&id.cert_path, &id.key_path)),
        request.as_bytes(),
    );
    let lines = head(&raw);
    assert!(lines[0].starts_with("HTTP/1.1 202"), "{lines:?}");
    assert!(lines.contains(&"Retry-After: 1"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("retry-after:")),
        "{lines:?}"
    );
}

/// RFC 7030 §4 base64 of `der`, in lines of 64.
fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// curl, returning (status, body).
fn curl_enrol(
    stack: &DevStack,
    dir: &Path,
    op: &str,
    cert: &Path,
    key: &Path,
    csr: &[u8],
) -> (u16, String) {
    let a = enrol_until_done(
        stack,
        dir,
        op,
        (cert, key),
        &base64_lines(csr),
        "application/pkcs10",
        None,
        std::time::Duration::from_secs(60),
    );
    (a.status, a.body)
}

/// Most devices present only their end-entity certificate. The EST listener trusts the ACME
/// issuing intermediate next to the root, so an LDevID alone (no chain) re-enrols.
#[test]
fn a_device_presenting_only_its_end_entity_ldevid_reenrols() {
    let stack = DevStack::start_built(&DevStackOptions::default()).expect("start the dev stack");
    let tmp = TempDir::new("leaf-only").expect("tmp");
    let dir = tmp.path();
    let serial = format!("LEAF-{}", std::process::id());
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(dir, "idevid", &serial)
        .expect("idevid");
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    let csr = openssl_csr(dir, &format!("/CN={name}"), &name, &[]);
    let key = dir.join("csr.key");
    let ldevid_key = dir.join("ldevid.key");
    std::fs::copy(&key, &ldevid_key).expect("keep the key");
    let (status, body) = curl_enrol(
        &stack,
        dir,
        "simpleenroll",
        &id.cert_path,
        &id.key_path,
        &csr,
    );
    assert_eq!(status, 200, "{body}");
    // The certificate whose key is ours: the end entity.
    let p7 = dir.join("issued.p7");
    std::fs::write(dir.join("issued.b64"), &body).expect("write");
    sh(Command::new("openssl")
        .args(["base64", "-d", "-in"])
        .arg(dir.join("issued.b64"))
        .arg("-out")
        .arg(&p7));
    let certs = sh(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&p7));
    let pubkey = sh(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&ldevid_key));
    let leaf = certs
        .split_inclusive("-----END CERTIFICATE-----")
        .map(|c| c.trim_start().to_string())
        .find(|c| {
            let f = dir.join("candidate.pem");
            std::fs::write(&f, c).expect("write");
            sh(Command::new("openssl")
                .args(["x509", "-noout", "-pubkey", "-in"])
                .arg(&f))
                == pubkey
        })
        .expect("the end-entity certificate");
    let leaf_path = dir.join("ldevid-leaf-only.pem");
    std::fs::write(&leaf_path, format!("{leaf}\n")).expect("write");
    assert_eq!(leaf.matches("BEGIN CERTIFICATE").count(), 1);

    let csr2 = openssl_csr(dir, &format!("/CN={name}"), &name, &[]);
    let (status, body) = curl_enrol(
        &stack,
        dir,
        "simplereenroll",
        &leaf_path,
        &ldevid_key,
        &csr2,
    );
    assert_eq!(
        status, 200,
        "re-enrolment with the end-entity LDevID alone: {body}"
    );
}

/// Whether a TLS client presenting `cert` alone (no chain) gets through Envoy's handshake and
/// a 200 for `/cacerts`.
fn connects_with(stack: &DevStack, cert: &Path, key: &Path) -> bool {
    Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "--fail",
            "--cacert",
        ])
        .arg(&stack.pki.server_ca.cert_path)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg(format!("{}/cacerts", stack.est_url()))
        .output()
        .expect("curl")
        .status
        .success()
}

/// Enrols a new device with curl; (its end-entity certificate alone, PEM file; its key).
fn enrol_new_device(
    stack: &DevStack,
    dir: &Path,
    tag: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let serial = format!("{tag}-{}", std::process::id());
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(dir, &format!("{tag}-idevid"), &serial)
        .expect("idevid");
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    let csr = openssl_csr(dir, &format!("/CN={name}"), &name, &[]);
    let key = dir.join(format!("{tag}.key"));
    std::fs::copy(dir.join("csr.key"), &key).expect("keep the key");
    let (status, body) = curl_enrol(
        stack,
        dir,
        "simpleenroll",
        &id.cert_path,
        &id.key_path,
        &csr,
    );
    assert_eq!(status, 200, "{body}");
    std::fs::write(dir.join("issued.b64"), &body).expect("write");
    let p7 = dir.join("issued.p7");
    sh(Command::new("openssl")
        .args(["base64", "-d", "-in"])
        .arg(dir.join("issued.b64"))
        .arg("-out")
        .arg(&p7));
    let pem = sh(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&p7));
    assert_eq!(
        pem.matches("BEGIN CERTIFICATE").count(),
        1,
        "the end-entity certificate only"
    );
    let leaf = dir.join(format!("{tag}.pem"));
    std::fs::write(&leaf, pem).expect("write");
    (leaf, key)
}

/// Envoy's client trust store is the control plane's `est.trust_bundle_file` (SDS from a file):
/// when the ACME CA starts issuing from a new intermediate, the control plane learns it from the
/// issuance and rewrites the file, and Envoy — not restarted — accepts a device presenting its
/// new certificate alone. An intermediate the CA misreports (it did not sign the certificate)
/// is not learned, so such a device still fails the handshake.
#[test]
fn envoy_trusts_a_new_acme_intermediate_without_a_restart() {
    let stack = DevStack::start_built(&DevStackOptions {
        rfc9444_ca: true,
        ..DevStackOptions::default()
    })
    .expect("start the dev stack");
    let ca = stack.test_ca().expect("the strict test CA");
    let tmp = TempDir::new("trust-bundle").expect("tmp");
    let dir = tmp.path();
    let within = |what: &str, cert: &Path, key: &Path| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !connects_with(&stack, cert, key) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: the handshake still fails\n{}",
                stack.envoy.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };

    ca.rotate_intermediate("Estuary test ACME intermediate 1")
        .expect("intermediate 1");
    let (a, a_key) = enrol_new_device(&stack, dir, "chain-a");
    within("a certificate from intermediate 1", &a, &a_key);

    ca.rotate_intermediate("Estuary test ACME intermediate 2")
        .expect("intermediate 2");
    let (b, b_key) = enrol_new_device(&stack, dir, "chain-b");
    within("a certificate from intermediate 2", &b, &b_key);
    assert!(
        connects_with(&stack, &a, &a_key),
        "intermediate 1 is still trusted"
    );
    // Past the handshake: presenting only its certificate from intermediate 2 (which no
    // configuration names), device b re-enrols. The filter and the control plane use the
    // intermediates learned from the CA's issued chains to build the path to the ACME root.
    let name_b = format!("chain-b-{}.{DEV_PARENT}", std::process::id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let csr = openssl_csr(dir, &format!("/CN={name_b}"), &name_b, &[]);
        let (status, body) = curl_enrol(&stack, dir, "simplereenroll", &b, &b_key, &csr);
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a leaf-only re-enrolment from a learned intermediate: {status} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    ca.rotate_intermediate("Estuary test ACME intermediate 3")
        .expect("intermediate 3");
    ca.send_wrong_intermediate("Estuary test ACME intermediate 3")
        .expect("a wrong intermediate");
    let (c, c_key) = enrol_new_device(&stack, dir, "chain-c");
    // Longer than the control planes' Redis refresh and Envoy's reload.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(
        !connects_with(&stack, &c, &c_key),
        "a certificate from an intermediate that was never learned got through"
    );
}
