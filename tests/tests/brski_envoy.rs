//! BRSKI (RFC 8995) end to end through a real Envoy with the Estuary filter, the registrar in a
//! real control plane, the strict test MASA, Pebble, BIND9 and Redis. The pledge side is
//! curl + openssl: `openssl cms -sign` makes the pledge voucher request and `openssl cms -verify`
//! checks the voucher, so our CMS is checked by code we did not write.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use estuary_tests::curl::sh;
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::stack::{metric_value, DEV_PARENT};
use estuary_tests::util::TempDir;

fn start() -> DevStack {
    DevStack::start_built(&DevStackOptions {
        brski: true,
        ..DevStackOptions::default()
    })
    .expect("start the dev stack")
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

enum Trust<'a> {
    /// Provisional TLS: accept any server certificate (RFC 8995 §5.1).
    Provisional,
    /// Verify the server against this PEM (the pinned domain certificate).
    Pinned(&'a Path),
}

/// curl with the client certificate `id` (cert, key).
fn curl(
    url: &str,
    method: &str,
    id: (&Path, &Path),
    trust: Trust<'_>,
    body: Option<(&[u8], &str)>,
) -> Reply {
    let tmp = TempDir::new("brski-curl").expect("tmp");
    let hdr = tmp.path().join("h");
    let out = tmp.path().join("b");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-X", method])
        .arg("--cert")
        .arg(id.0)
        .arg("--key")
        .arg(id.1)
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&out);
    match trust {
        Trust::Provisional => {
            cmd.arg("-k");
        }
        Trust::Pinned(ca) => {
            cmd.arg("--cacert").arg(ca);
        }
    }
    if let Some((b, ct)) = body {
        let f = tmp.path().join("req");
        std::fs::write(&f, b).expect("write");
        cmd.arg("-H")
            .arg(format!("Content-Type: {ct}"))
            .arg("--data-binary")
            .arg(format!("@{}", f.display()));
    }
    cmd.arg(url);
    let o = cmd.output().expect("curl");
    assert!(
        o.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
    let status = headers
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        headers,
        body: std::fs::read(&out).unwrap_or_default(),
    }
}

/// The certificate the TLS server presents, as the pledge records it (DER), read with
/// `openssl s_client` without verifying anything (provisional TLS).
fn server_cert_der(stack: &DevStack, dir: &Path, id: (&Path, &Path)) -> Vec<u8> {
    let host = stack
        .envoy
        .base_url
        .trim_start_matches("https://")
        .to_string();
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &host])
        .arg("-cert")
        .arg(id.0)
        .arg("-key")
        .arg(id.1)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("server cert");
    let end = text.find("-----END CERTIFICATE-----").expect("end") + 25;
    let pem = dir.join("seen-registrar.pem");
    std::fs::write(&pem, &text[begin..end]).expect("write");
    sh(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&pem))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64d(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// A pledge voucher request (RFC 8995 §3.2) signed by `openssl cms -sign` with `id`.
fn openssl_pvr(
    dir: &Path,
    id: (&Path, &Path),
    serial: &str,
    nonce: &str,
    registrar_der: &[u8],
) -> Vec<u8> {
    let json = serde_json::json!({"ietf-voucher-request:voucher": {
        "assertion": "proximity",
        "nonce": nonce,
        "serial-number": serial,
        "created-on": "2026-11-28T19:00:00Z",
        "proximity-registrar-cert": b64(registrar_der),
    }});
    let input = dir.join(format!("pvr-{nonce}.json"));
    let output = dir.join(format!("pvr-{nonce}.der"));
    std::fs::write(&input, json.to_string()).expect("write");
    sh(Command::new("openssl")
        .args(["cms", "-sign", "-binary", "-nodetach"])
        .args(["-econtent_type", "1.2.840.113549.1.9.16.1.40"])
        .arg("-signer")
        .arg(id.0)
        .arg("-inkey")
        .arg(id.1)
        .args(["-outform", "DER", "-in"])
        .arg(&input)
        .arg("-out")
        .arg(&output));
    std::fs::read(&output).expect("read")
}

/// `openssl cms -verify` against the MASA anchor; the voucher JSON.
fn openssl_verify_voucher(dir: &Path, voucher: &[u8], anchor: &Path) -> serde_json::Value {
    let input = dir.join("voucher.der");
    std::fs::write(&input, voucher).expect("write");
    let json = sh(Command::new("openssl")
        .args([
            "cms", "-verify", "-inform", "DER", "-purpose", "any", "-CAfile",
        ])
        .arg(anchor)
        .arg("-in")
        .arg(&input));
    serde_json::from_slice(&json).expect("voucher JSON")
}

fn idevid(stack: &DevStack, dir: &Path, serial: &str) -> (PathBuf, PathBuf) {
    let masa = stack.masa.as_ref().expect("MASA running");
    let i = stack
        .pki
        .manufacturer
        .issue_idevid_with_masa(dir, serial, serial, Some(&masa.url))
        .expect("IDevID");
    (i.cert_path, i.key_path)
}

/// EST simpleenroll with curl over TLS verified against `ca`; follows 202. (key, PEM: the
/// issued certificate, then the /cacerts certificates).
fn est_enroll(
    stack: &DevStack,
    dir: &Path,
    id: (&Path, &Path),
    ca: &Path,
    serial: &str,
) -> (PathBuf, String) {
    let name = format!("{serial}.{DEV_PARENT}");
    let key = dir.join(format!("{serial}-ldevid.key"));
    let csr = dir.join(format!("{serial}.csr"));
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
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .args(["-outform", "DER", "-out"])
        .arg(&csr));
    let body = b64(&std::fs::read(&csr).expect("csr"));
    let url = format!("{}/simpleenroll", stack.est_url());
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = curl(
            &url,
            "POST",
            id,
            Trust::Pinned(ca),
            Some((body.as_bytes(), "application/pkcs10")),
        );
        if r.status != 202 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(r.status, 200, "simpleenroll: {}", r.text());
    let to_pem = |stem: &str, reply: &Reply| {
        let p7 = dir.join(format!("{serial}-{stem}.p7"));
        std::fs::write(&p7, b64d(&reply.text().replace(['\r', '\n'], ""))).expect("write");
        String::from_utf8(sh(Command::new("openssl")
            .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
            .arg(&p7)))
        .expect("utf8")
    };
    // RFC 8995 §5.9.3 enrols with EST: the end-entity certificate alone
    // (draft-ietf-acme-integrations-17), the rest of the chain from /cacerts.
    let leaf = to_pem("issued", &r);
    assert_eq!(
        leaf.matches("-----BEGIN CERTIFICATE-----").count(),
        1,
        "{leaf}"
    );
    let cacerts = curl(
        &format!("{}/cacerts", stack.est_url()),
        "GET",
        id,
        Trust::Pinned(ca),
        None,
    );
    assert_eq!(cacerts.status, 200, "cacerts: {}", cacerts.text());
    let rest = to_pem("cacerts", &cacerts);
    (key, format!("{leaf}{rest}"))
}

/// Full BRSKI: voucher through the registrar and the MASA, checked by openssl; the pinned
/// domain certificate then verifies the EST server; the certificate comes from Pebble; the
/// pledge reports voucher_status and enrollstatus and the audit log shows the voucher.
#[test]
fn brski_voucher_then_est_enrolment_from_the_acme_ca() {
    let stack = start();
    let tmp = TempDir::new("brski").expect("tmp");
    let dir = tmp.path();
    let serial = unique("bk");
    let (cert, key) = idevid(&stack, dir, &serial);
    let id = (cert.as_path(), key.as_path());
    let registrar = server_cert_der(&stack, dir, id);
    let nonce = unique("nonce");
    let pvr = openssl_pvr(dir, id, &serial, &nonce, &registrar);

    let url = format!("{}/requestvoucher", stack.brski_url());
    let r = curl(
        &url,
        "POST",
        id,
        Trust::Provisional,
        Some((&pvr, "application/voucher-cms+json")),
    );
    assert_eq!(
        r.status,
        200,
        "requestvoucher: {}\n--- control plane:\n{}\n--- envoy:\n{}",
        r.text(),
        stack.control_planes[0].log_text(),
        stack.envoy.log_text()
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/voucher-cms+json")
    );
    let masa = stack.masa.as_ref().expect("MASA");
    let v = openssl_verify_voucher(dir, &r.body, &masa.anchor_pem);
    let v = &v["ietf-voucher:voucher"];
    assert_eq!(v["serial-number"], serial.as_str());
    assert_eq!(v["nonce"], nonce.as_str());
    assert!(
        v["created-on"].is_string() && v["expires-on"].is_string(),
        "{v}"
    );
    // The pinned domain certificate is the dev domain CA, which signs the registrar's TLS cert.
    let pinned = b64d(
        v["pinned-domain-cert"]
            .as_str()
            .expect("pinned-domain-cert"),
    );
    let pinned_pem = dir.join("pinned.pem");
    std::fs::write(
        &pinned_pem,
        estuary_proto::pem::encode_certs(std::slice::from_ref(&pinned)),
    )
    .expect("write");
    let domain_ca = estuary_proto::pem::decode_certs(
        &std::fs::read_to_string(&stack.pki.server_ca.cert_path).expect("read"),
    )
    .expect("pem");
    assert_eq!(pinned, domain_ca[0]);

    // voucher_status over TLS now verified against the pinned certificate.
    let st = curl(
        &format!("{}/voucher_status", stack.brski_url()),
        "POST",
        id,
        Trust::Pinned(&pinned_pem),
        Some((
            br#"{"version":1,"status":true,"reason":"voucher accepted"}"#,
            "application/json",
        )),
    );
    assert_eq!(st.status, 200, "voucher_status: {}", st.text());

    // EST as before, the server verified with the pinned domain certificate.
    let (_, ldevid_pem) = est_enroll(&stack, dir, id, &pinned_pem, &serial);
    let leaf = dir.join("ldevid.pem");
    let chain = dir.join("ldevid-chain.pem");
    let end = ldevid_pem.find("-----END CERTIFICATE-----").expect("cert") + 25;
    std::fs::write(&leaf, &ldevid_pem[..end]).expect("write");
    std::fs::write(&chain, &ldevid_pem).expect("write");
    let subject = String::from_utf8(sh(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf)))
    .expect("utf8");
    assert!(
        subject.contains(&format!("DNS:{serial}.{DEV_PARENT}")),
        "{subject}"
    );
    // It chains to the ACME CA (Pebble's root), not to any dev CA.
    let chain_ok = Command::new("openssl")
        .args(["verify", "-partial_chain", "-CAfile"])
        .arg(&stack.stack.pebble.issuer_root_pem)
        .arg("-untrusted")
        .arg(&chain)
        .arg(&leaf)
        .output()
        .expect("openssl verify");
    assert!(
        chain_ok.status.success(),
        "LDevID does not chain to Pebble's root: {}",
        String::from_utf8_lossy(&chain_ok.stdout)
    );

    let st = curl(
        &format!("{}/enrollstatus", stack.brski_url()),
        "POST",
        id,
        Trust::Pinned(&pinned_pem),
        Some((br#"{"version":1,"status":true}"#, "application/json")),
    );
    assert_eq!(st.status, 200, "enrollstatus: {}", st.text());

    let log = curl(
        &format!("{}/requestauditlog", stack.brski_url()),
        "GET",
        id,
        Trust::Pinned(&pinned_pem),
        None,
    );
    assert_eq!(log.status, 200, "requestauditlog: {}", log.text());
    let log: serde_json::Value = serde_json::from_slice(&log.body).expect("JSON audit log");
    let events = log["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{log}");
    assert_eq!(events[0]["nonce"], nonce.as_str());
    assert_eq!(masa.audit_log().len(), 1);

    // Status reports are kept in Redis (with a TTL) and counted.
    let redis = stack.stack.redis.addr;
    let key = format!("estuary:brski:voucher_status:{serial}");
    let stored = sh(Command::new("redis-cli").args([
        "-h",
        "127.0.0.1",
        "-p",
        &redis.port().to_string(),
        "GET",
        &key,
    ]));
    assert!(
        String::from_utf8_lossy(&stored).contains("voucher accepted"),
        "{key}: {}",
        String::from_utf8_lossy(&stored)
    );
    let ttl = sh(Command::new("redis-cli").args([
        "-h",
        "127.0.0.1",
        "-p",
        &redis.port().to_string(),
        "TTL",
        &key,
    ]));
    let ttl: i64 = String::from_utf8_lossy(&ttl).trim().parse().expect("TTL");
    assert!(ttl > 0, "no TTL on {key}");
    let m = metrics(&stack);
    for (op, result) in [
        ("requestvoucher", "voucher"),
        ("voucher_status", "success"),
        ("enrollstatus", "success"),
        ("requestauditlog", "ok"),
    ] {
        assert_eq!(
            metric_value(
                &m,
                &format!("estuary_brski_requests_total{{op=\"{op}\",result=\"{result}\"}}")
            ),
            1.0,
            "{op} {result}:\n{m}"
        );
    }
}

fn metrics(stack: &DevStack) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}/metrics", stack.control_planes[0].addr))
        .output()
        .expect("curl metrics");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What the registrar and the edge refuse, and how.
#[test]
fn brski_refusals() {
    let mut stack = start();
    let tmp = TempDir::new("brski-no").expect("tmp");
    let dir = tmp.path();
    let url = format!("{}/requestvoucher", stack.brski_url());
    let serial = unique("bn");
    let (cert, key) = idevid(&stack, dir, &serial);
    let id = (cert.as_path(), key.as_path());
    let registrar = server_cert_der(&stack, dir, id);
    let post = |id: (&Path, &Path), body: &[u8]| {
        curl(
            &url,
            "POST",
            id,
            Trust::Provisional,
            Some((body, "application/voucher-cms+json")),
        )
    };

    // Garbage bodies: 400 from the edge, never a crash.
    for junk in [
        &b"garbage"[..],
        b"\x30\x03\x02\x01\x01",
        b"{\"a\":1}",
        &[0x30, 0x80],
    ] {
        let r = post(id, junk);
        assert_eq!(r.status, 400, "{:?}: {}", junk, r.text());
    }
    // Wrong content type: 415.
    let r = curl(
        &url,
        "POST",
        id,
        Trust::Provisional,
        Some((b"x", "application/json")),
    );
    assert_eq!(r.status, 415);

    // Signed by another key than the TLS IDevID: another pledge's IDevID signs it.
    let other_serial = unique("bo");
    let (ocert, okey) = idevid(&stack, dir, &other_serial);
    let pvr = openssl_pvr(dir, (&ocert, &okey), &serial, "n1", &registrar);
    let r = post(id, &pvr);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("not signed by the certificate"),
        "{}",
        r.text()
    );

    // Another registrar certificate in proximity-registrar-cert.
    let other_reg = stack
        .pki
        .server_ca
        .issue_registrar(dir, "other-registrar")
        .expect("cert");
    let other_reg_der = estuary_proto::pem::decode_certs(
        &std::fs::read_to_string(&other_reg.cert_path).expect("read"),
    )
    .expect("pem")
    .remove(0);
    let pvr = openssl_pvr(dir, id, &serial, "n2", &other_reg_der);
    let r = post(id, &pvr);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("proximity-registrar-cert"),
        "{}",
        r.text()
    );

    // A client certificate Envoy accepts (issued by the ACME CA through EST) that no
    // manufacturer in the registrar's allow-list issued: unknown manufacturer, 403.
    let server_ca = stack.pki.server_ca.cert_path.clone();
    let (lkey, lpem) = est_enroll(&stack, dir, id, &server_ca, &serial);
    let lcert = dir.join("ldevid-only.pem");
    let lchain = dir.join("ldevid-with-chain.pem");
    let end = lpem.find("-----END CERTIFICATE-----").expect("cert") + 25;
    std::fs::write(&lcert, &lpem[..end]).expect("write");
    std::fs::write(&lchain, &lpem).expect("write");
    let pvr = openssl_pvr(dir, (&lcert, &lkey), &serial, "n3", &registrar);
    let r = post((&lchain, &lkey), &pvr);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("unknown manufacturer"), "{}", r.text());

    // A voucher tampered with on the way back: refused, the pledge gets no voucher.
    let masa = stack.masa.as_ref().expect("MASA");
    masa.set_tamper(true);
    let pvr = openssl_pvr(dir, id, &serial, "n4", &registrar);
    let r = post(id, &pvr);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        !r.body.windows(4).any(|w| w == b"n4\"}") && !r.text().contains("voucher\":"),
        "a voucher leaked: {}",
        r.text()
    );
    masa.set_tamper(false);
    let r = post(id, &pvr);
    assert_eq!(r.status, 200, "after tampering stops: {}", r.text());

    // The MASA unreachable: 503 + Retry-After.
    drop(stack.masa.take());
    let pvr = openssl_pvr(dir, id, &serial, "n5", &registrar);
    let r = post(id, &pvr);
    assert_eq!(r.status, 503, "{}", r.text());
    let ra: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(ra >= 1);
    let m = metrics(&stack);
    let series = |r: &str| {
        metric_value(
            &m,
            &format!("estuary_brski_requests_total{{op=\"requestvoucher\",result=\"{r}\"}}"),
        )
    };
    // other signer, other registrar, unknown manufacturer; tampered; MASA down; one voucher.
    assert_eq!(series("rejected"), 3.0, "{m}");
    assert_eq!(series("failed"), 1.0, "{m}");
    assert_eq!(series("unavailable"), 1.0, "{m}");
    assert_eq!(series("voucher"), 1.0, "{m}");
}

/// `brski.voucher_requests_per_pledge` (default 10 per hour): each voucher request may cost a
/// MASA call, so a pledge that keeps asking gets 429 + Retry-After through Envoy once it has
/// made its 10; another pledge is not affected.
#[test]
fn a_pledge_that_keeps_asking_for_vouchers_gets_429() {
    let stack = start();
    let tmp = TempDir::new("brski-limit").expect("tmp");
    let dir = tmp.path();
    let url = format!("{}/requestvoucher", stack.brski_url());
    let post = |id: (&Path, &Path), body: &[u8]| {
        curl(
            &url,
            "POST",
            id,
            Trust::Provisional,
            Some((body, "application/voucher-cms+json")),
        )
    };
    let serial = unique("bl");
    let (cert, key) = idevid(&stack, dir, &serial);
    let id = (cert.as_path(), key.as_path());
    let registrar = server_cert_der(&stack, dir, id);
    for i in 0..10 {
        let pvr = openssl_pvr(dir, id, &serial, &format!("n{i}"), &registrar);
        let r = post(id, &pvr);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let pvr = openssl_pvr(dir, id, &serial, "n10", &registrar);
    let r = post(id, &pvr);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("10 voucher requests"), "{}", r.text());
    let ra: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=3600).contains(&ra), "Retry-After {ra}");
    let audit = stack.masa.as_ref().expect("MASA").audit_log();
    assert_eq!(audit.len(), 10, "the 11th request cost no MASA call");

    let other = unique("bq");
    let (cert, key) = idevid(&stack, dir, &other);
    let id = (cert.as_path(), key.as_path());
    let pvr = openssl_pvr(dir, id, &other, "m0", &registrar);
    let r = post(id, &pvr);
    assert_eq!(r.status, 200, "another pledge: {}", r.text());
}
