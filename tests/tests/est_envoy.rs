//! RFC 7030 end to end through a real Envoy with the Estuary filter, a real control plane,
//! Pebble, BIND9 and Redis — driven with curl and openssl exactly as RFC 7030's recipes go,
//! so that the client is code we did not write.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use estuary_tests::dev_stack::{workspace_bin, DevStack, DevStackOptions};
use estuary_tests::pki::Ca;
use estuary_tests::stack::{metric_value, CpOptions, DEV_PARENT};
use estuary_tests::util::TempDir;

fn start(opts: DevStackOptions) -> DevStack {
    DevStack::start_built(&opts).expect("start the dev stack")
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

/// One curl call: status, headers (lower-cased names), body.
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    curl_exit: i32,
    stderr: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

struct Client<'a> {
    stack: &'a DevStack,
    cert: Option<(PathBuf, PathBuf)>,
    extra_headers: Vec<String>,
}

impl<'a> Client<'a> {
    fn anonymous(stack: &'a DevStack) -> Self {
        Self {
            stack,
            cert: None,
            extra_headers: Vec::new(),
        }
    }
    fn with_cert(stack: &'a DevStack, cert: &Path, key: &Path) -> Self {
        Self {
            stack,
            cert: Some((cert.to_path_buf(), key.to_path_buf())),
            extra_headers: Vec::new(),
        }
    }
    fn header(mut self, h: &str) -> Self {
        self.extra_headers.push(h.to_string());
        self
    }

    fn call(&self, method: &str, op: &str, body: Option<&[u8]>, content_type: &str) -> Http {
        let tmp = TempDir::new("curl").expect("tmp");
        let hdr = tmp.path().join("headers");
        let out = tmp.path().join("body");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "60", "-X", method])
            .arg("--cacert")
            .arg(&self.stack.pki.server_ca.cert_path)
            .arg("-D")
            .arg(&hdr)
            .arg("-o")
            .arg(&out);
        if let Some((c, k)) = &self.cert {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        for h in &self.extra_headers {
            cmd.arg("-H").arg(h);
        }
        if let Some(b) = body {
            let f = tmp.path().join("req");
            std::fs::write(&f, b).expect("write body");
            cmd.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .arg("-H")
                .arg("Content-Transfer-Encoding: base64")
                .arg("--data-binary")
                .arg(format!("@{}", f.display()));
        }
        cmd.arg(format!("{}/{op}", self.stack.est_url()));
        let o: Output = cmd.output().expect("run curl");
        let head = std::fs::read_to_string(&hdr).unwrap_or_default();
        let mut status = 0;
        let mut headers = Vec::new();
        for line in head.lines() {
            if line.starts_with("HTTP/") {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                headers.clear();
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Http {
            status,
            headers,
            body: std::fs::read(&out).unwrap_or_default(),
            curl_exit: o.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&o.stderr).to_string(),
        }
    }

    fn get(&self, op: &str) -> Http {
        self.call("GET", op, None, "")
    }

    fn post_csr(&self, op: &str, csr_b64: &[u8]) -> Http {
        self.call("POST", op, Some(csr_b64), "application/pkcs10")
    }
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `openssl req` makes a P-256 key and a base64 DER CSR for `name`: (key path, base64 CSR).
fn openssl_csr(dir: &Path, stem: &str, name: &str) -> (PathBuf, Vec<u8>) {
    openssl_csr_with_subject(dir, stem, name, &format!("/CN={name}"))
}

/// The same with a given subject (`/CN=…` form; empty for an empty subject).
fn openssl_csr_with_subject(
    dir: &Path,
    stem: &str,
    name: &str,
    subject: &str,
) -> (PathBuf, Vec<u8>) {
    let subject = if subject.is_empty() { "/" } else { subject };
    let key = dir.join(format!("{stem}.key"));
    let der = dir.join(format!("{stem}.csr.der"));
    sh(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .args(["-subj", subject])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .args(["-outform", "DER", "-out"])
        .arg(&der));
    let b64 = sh(Command::new("openssl").args(["base64", "-in"]).arg(&der));
    (key, b64.into_bytes())
}

/// base64 PKCS#7 body → PEM certificates via `openssl base64 -d | openssl pkcs7 -print_certs`.
fn p7_b64_to_pem(dir: &Path, stem: &str, body: &[u8]) -> String {
    let b64 = dir.join(format!("{stem}.p7.b64"));
    let der = dir.join(format!("{stem}.p7"));
    std::fs::write(&b64, body).expect("write");
    sh(Command::new("openssl")
        .args(["base64", "-d", "-in"])
        .arg(&b64)
        .arg("-out")
        .arg(&der));
    sh(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&der))
}

fn first_cert(pem: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let stop = pem[start..].find(end).expect("end") + start + end.len();
    format!("{}\n", &pem[start..stop])
}

fn metrics(stack: &DevStack, i: usize) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}/metrics", stack.control_planes[i].addr))
        .output()
        .expect("curl metrics");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn enrolments_seen(stack: &DevStack) -> f64 {
    (0..stack.control_planes.len())
        .map(|i| {
            let m = metrics(stack, i);
            ["issued", "cached", "pending", "rejected", "failed"]
                .iter()
                .map(|r| {
                    metric_value(
                        &m,
                        &format!("estuary_enrollments_total{{protocol=\"est\",result=\"{r}\"}}"),
                    )
                })
                .sum::<f64>()
        })
        .sum()
}

/// Enrols with curl, following 202 + Retry-After.
fn enroll_until_done(client: &Client<'_>, op: &str, csr: &[u8], within: Duration) -> Http {
    let deadline = Instant::now() + within;
    loop {
        let r = client.post_csr(op, csr);
        // 202 + Retry-After: pending; 503 + Retry-After: briefly unavailable (RFC 7030 §4.2.3).
        let wait: Option<u64> = match r.status {
            202 => Some(
                r.header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("202 carries Retry-After"),
            ),
            503 => r.header("retry-after").and_then(|v| v.parse().ok()),
            _ => None,
        };
        match wait {
            Some(w) if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(w)),
            _ => return r,
        }
    }
}

#[test]
fn the_dev_envoy_config_passes_envoy_validate() {
    // DevStack::start renders envoy/envoy.yaml and runs `envoy --mode validate` before
    // starting it; a broken template fails here with Envoy's own message.
    let stack = start(DevStackOptions::default());
    estuary_tests::envoy::validate(&stack.envoy.config_path).expect("valid");
}

/// cacerts, csrattrs, simpleenroll, then simplereenroll with the LDevID, with curl + openssl.
#[test]
fn est_enrolment_and_reenrolment_with_curl_and_openssl() {
    let stack = start(DevStackOptions::default());
    let tmp = TempDir::new("e2e").expect("tmp");
    let dir = tmp.path();

    // cacerts: no client certificate needed (RFC 7030 §4.1.1).
    let r = Client::anonymous(&stack).get("cacerts");
    assert_eq!(r.status, 200, "{} {}", r.text(), r.stderr);
    assert_eq!(
        r.header("content-type"),
        Some("application/pkcs7-mime; smime-type=certs-only")
    );
    let cacerts = p7_b64_to_pem(dir, "cacerts", &r.body);
    let root = std::fs::read_to_string(&stack.stack.pebble.issuer_root_pem).expect("root");
    assert_eq!(first_cert(&cacerts), first_cert(&root));

    // csrattrs names the device.
    let serial = stack.pki.demo_serial.to_ascii_lowercase();
    let name = format!("{serial}.{DEV_PARENT}");
    let idevid = Client::with_cert(&stack, &stack.pki.demo.cert_path, &stack.pki.demo.key_path);
    let r = idevid.get("csrattrs");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/csrattrs"));
    let attrs_der = dir.join("attrs.der");
    std::fs::write(dir.join("attrs.b64"), &r.body).expect("write");
    sh(Command::new("openssl")
        .args(["base64", "-d", "-in"])
        .arg(dir.join("attrs.b64"))
        .arg("-out")
        .arg(&attrs_der));
    let parsed = sh(Command::new("openssl")
        .args(["asn1parse", "-inform", "DER", "-in"])
        .arg(&attrs_der));
    let attrs =
        estuary_proto::csrattrs::CsrAttrs::from_der(&std::fs::read(&attrs_der).expect("read"))
            .expect("CsrAttrs DER");
    assert_eq!(attrs.requested_dns_names(), vec![name.clone()], "{parsed}");

    // simpleenroll with the IDevID.
    let (key, csr) = openssl_csr(dir, "ldevid", &name);
    let r = enroll_until_done(&idevid, "simpleenroll", &csr, Duration::from_secs(60));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-transfer-encoding"), Some("base64"));
    // draft-ietf-acme-integrations-17: the answer holds the end-entity certificate alone ...
    let issued = p7_b64_to_pem(dir, "issued", &r.body);
    assert_eq!(
        issued.matches("-----BEGIN CERTIFICATE-----").count(),
        1,
        "simpleenroll answers exactly one certificate:\n{issued}"
    );
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, first_cert(&issued)).expect("write");
    let san = sh(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf));
    assert!(san.contains(&format!("DNS:{name}")), "{san}");
    // ... and /cacerts the rest of the chain plus the anchor: it is the only trust store needed.
    let r = Client::anonymous(&stack).get("cacerts");
    assert_eq!(r.status, 200, "{}", r.text());
    let cacerts_path = dir.join("cacerts.pem");
    std::fs::write(&cacerts_path, p7_b64_to_pem(dir, "cacerts-after", &r.body)).expect("write");
    let verify = sh(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&cacerts_path)
        .arg(&leaf));
    assert!(verify.contains("OK"), "{verify}");
    // The check can fail: Pebble's root alone does not verify the leaf (the intermediate is
    // in /cacerts, not in the simpleenroll answer).
    let alone = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&stack.stack.pebble.issuer_root_pem)
        .arg(&leaf)
        .output()
        .expect("openssl");
    assert!(!alone.status.success(), "the root alone verified the leaf");

    // simplereenroll with the LDevID just issued, presented with /cacerts' certificates so that
    // Envoy can build the path; the CSR keeps the current certificate's subject and name
    // (RFC 7030 §4.2.2).
    let chain = format!(
        "{}{}",
        first_cert(&issued),
        std::fs::read_to_string(&cacerts_path).expect("cacerts")
    );
    let chain_path = dir.join("chain.pem");
    std::fs::write(&chain_path, &chain).expect("write");
    let ldevid = Client::with_cert(&stack, &chain_path, &key);
    let subject = sh(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "compat", "-in"])
        .arg(&leaf));
    let subject = subject
        .trim()
        .trim_start_matches("subject=")
        .trim()
        .to_string();
    let (_key2, csr2) = openssl_csr_with_subject(dir, "ldevid2", &name, &subject);
    let r = enroll_until_done(&ldevid, "simplereenroll", &csr2, Duration::from_secs(60));
    assert_eq!(r.status, 200, "{}", r.text());
    let chain2 = p7_b64_to_pem(dir, "reissued", &r.body);
    assert_ne!(first_cert(&chain2), first_cert(&chain));

    // The IDevID may not re-enrol, the LDevID may not enrol.
    let r = idevid.post_csr("simplereenroll", &csr2);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = ldevid.post_csr("simpleenroll", &csr2);
    assert_eq!(r.status, 403, "{}", r.text());
}

#[test]
fn no_client_certificate_is_401_and_an_unknown_ca_fails_the_handshake() {
    let stack = start(DevStackOptions::default());
    let tmp = TempDir::new("auth").expect("tmp");
    let name = format!("demo-0001.{DEV_PARENT}");
    let (_k, csr) = openssl_csr(tmp.path(), "c", &name);

    let r = Client::anonymous(&stack).post_csr("simpleenroll", &csr);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(!r.text().is_empty());

    // An IDevID from a manufacturer Envoy does not trust.
    let rogue = Ca::create(tmp.path(), "rogue-ca", "Rogue manufacturer").expect("ca");
    let id = rogue
        .issue_idevid(tmp.path(), "rogue-idevid", "DEMO-0001")
        .expect("idevid");
    let r = Client::with_cert(&stack, &id.cert_path, &id.key_path).post_csr("simpleenroll", &csr);
    assert_eq!(
        r.status, 0,
        "the handshake must fail, got HTTP {}",
        r.status
    );
    assert_ne!(r.curl_exit, 0);
    assert_eq!(enrolments_seen(&stack), 0.0);
}

#[test]
fn another_devices_name_dies_at_the_edge_and_never_reaches_the_control_plane() {
    let stack = start(DevStackOptions::default());
    let tmp = TempDir::new("edge").expect("tmp");
    let (_k, csr) = openssl_csr(tmp.path(), "other", &format!("someone-else.{DEV_PARENT}"));
    let idevid = Client::with_cert(&stack, &stack.pki.demo.cert_path, &stack.pki.demo.key_path);
    let r = idevid.post_csr("simpleenroll", &csr);
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    assert_eq!(
        enrolments_seen(&stack),
        0.0,
        "the control plane saw the request"
    );
}

#[test]
fn a_spoofed_xfcc_header_from_the_client_is_ignored() {
    let stack = start(DevStackOptions::default());
    let tmp = TempDir::new("xfcc").expect("tmp");
    // Claim to be device VICTIM-1 via a hand-made XFCC carrying a real manufacturer-issued
    // certificate, while presenting no client certificate at all.
    let victim = stack
        .pki
        .manufacturer
        .issue_idevid(tmp.path(), "victim", "VICTIM-1")
        .expect("idevid");
    let pem = std::fs::read_to_string(&victim.cert_path).expect("read");
    let encoded: String = pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_k, csr) = openssl_csr(tmp.path(), "v", &format!("victim-1.{DEV_PARENT}"));
    let r = Client::anonymous(&stack)
        .header(&format!(
            "x-forwarded-client-cert: Hash=00;Cert=\"{encoded}\""
        ))
        .post_csr("simpleenroll", &csr);
    assert_eq!(r.status, 401, "{}", r.text());
    // With the demo IDevID plus the spoofed header, the identity is the demo device's.
    let r = Client::with_cert(&stack, &stack.pki.demo.cert_path, &stack.pki.demo.key_path)
        .header(&format!(
            "x-forwarded-client-cert: Hash=00;Cert=\"{encoded}\""
        ))
        .post_csr("simpleenroll", &csr);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(enrolments_seen(&stack), 0.0);
}

/// Two replicas behind Envoy; the first answers 202, a retry served by the other finishes.
#[test]
fn a_202_started_on_one_replica_finishes_on_the_other() {
    let stack = start(DevStackOptions {
        replicas: 2,
        cp: CpOptions {
            budget_ms: 1,
            retry_after_s: 1,
            ..CpOptions::default()
        },
        ..DevStackOptions::default()
    });
    let tmp = TempDir::new("replicas").expect("tmp");
    let serial = unique("rep");
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(tmp.path(), "rep-idevid", &serial)
        .expect("idevid");
    let name = format!("{serial}.{DEV_PARENT}");
    let (_k, csr) = openssl_csr(tmp.path(), "rep", &name);
    let client = Client::with_cert(&stack, &id.cert_path, &id.key_path);
    let first = client.post_csr("simpleenroll", &csr);
    assert_eq!(first.status, 202, "{} {}", first.text(), first.stderr);
    assert_eq!(first.header("retry-after"), Some("1"));
    let done = enroll_until_done(&client, "simpleenroll", &csr, Duration::from_secs(60));
    assert_eq!(done.status, 200, "{}", done.text());
    let per_replica: Vec<f64> = (0..2)
        .map(|i| {
            let m = metrics(&stack, i);
            ["issued", "cached", "pending"]
                .iter()
                .map(|r| {
                    metric_value(
                        &m,
                        &format!("estuary_enrollments_total{{protocol=\"est\",result=\"{r}\"}}"),
                    )
                })
                .sum()
        })
        .collect();
    assert!(
        per_replica.iter().all(|n| *n >= 1.0),
        "both replicas must have served the device: {per_replica:?}"
    );
    let orders: f64 = (0..2)
        .map(|i| {
            metric_value(
                &metrics(&stack, i),
                "estuary_acme_orders_total{result=\"valid\"}",
            )
        })
        .sum();
    assert_eq!(orders, 1.0, "exactly one ACME order for the CSR");
}

/// The pledge CLI (our own EST client) against the same real stack: enrol, then re-enrol.
#[test]
fn the_pledge_cli_enrols_and_reenrols_through_envoy() {
    let stack = start(DevStackOptions::default());
    let pledge = workspace_bin("estuary-pledge", "ESTUARY_PLEDGE_BIN").expect("pledge binary");
    let tmp = TempDir::new("pledge").expect("tmp");
    let serial = unique("pl");
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(tmp.path(), "idevid", &serial)
        .expect("idevid");
    let out1 = tmp.path().join("first");
    let run = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(&pledge)
            .args(args)
            .output()
            .expect("run pledge");
        assert!(
            o.status.success(),
            "estuary-pledge {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let url = stack.est_url();
    let ca = stack.pki.server_ca.cert_path.clone();
    let progress = run(&[
        "enroll".as_ref(),
        "--est-url".as_ref(),
        url.as_ref(),
        "--server-ca".as_ref(),
        ca.as_os_str(),
        "--cert".as_ref(),
        id.cert_path.as_os_str(),
        "--key".as_ref(),
        id.key_path.as_os_str(),
        "--out-dir".as_ref(),
        out1.as_os_str(),
    ]);
    assert!(progress.contains("cacerts"), "{progress}");
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    let cert1 = out1.join("cert.pem");
    let san = sh(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert1));
    assert!(san.contains(&format!("DNS:{name}")), "{san}");
    let verify = sh(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&stack.stack.pebble.issuer_root_pem)
        .arg("-untrusted")
        .arg(out1.join("chain.pem"))
        .arg(&cert1));
    assert!(verify.contains("OK"), "{verify}");

    let out2 = tmp.path().join("second");
    run(&[
        "reenroll".as_ref(),
        "--est-url".as_ref(),
        url.as_ref(),
        "--server-ca".as_ref(),
        ca.as_os_str(),
        "--cert".as_ref(),
        cert1.as_os_str(),
        "--key".as_ref(),
        out1.join("key.pem").as_os_str(),
        "--out-dir".as_ref(),
        out2.as_os_str(),
    ]);
    let cert2 = std::fs::read_to_string(out2.join("cert.pem")).expect("new cert");
    assert_ne!(cert2, std::fs::read_to_string(&cert1).expect("old cert"));
}
