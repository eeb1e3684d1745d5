//! Server-side key generation (RFC 7030 §4.4) through the real Envoy, filter and control plane,
//! Pebble, BIND9 and Redis, with curl as the client, python3's `email` parser to split the
//! `multipart/mixed` answer, and openssl to check what a device would check: the key belongs
//! to the certificate, the certificate names the device, a repeated request gets a new key,
//! and nobody gets a key for another device's name. No key material is ever printed.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use estuary_proto::internal_api::{
    HDR_AUTHORIZATION, HDR_CLIENT_CERT, HDR_DEVICE_SERIAL, SERVERKEYGEN_PATH,
};
use estuary_tests::curl::{curl, metric_sum, openssl_csr, sh, side_effects};
use estuary_tests::dev_stack::{workspace_bin, DevStack, DevStackOptions};
use estuary_tests::pki::Issued;
use estuary_tests::stack::{DEV_PARENT, DEV_TOKEN};
use estuary_tests::util::TempDir;

/// Splits a multipart answer (`ct`, `body` files) into `key.der` and `cert.p7` with python3's
/// `email` package, and prints each part's content type and transfer encoding, one per line.
const SPLIT: &str = r#"
import email, sys
d = sys.argv[1]
ct = open(d + "/ct").read().strip()
body = open(d + "/body", "rb").read()
msg = email.message_from_bytes(b"Content-Type: " + ct.encode() + b"\r\n\r\n" + body)
assert msg.is_multipart(), "not multipart"
for part in msg.get_payload():
    t = part.get_content_type()
    print(t + "|" + part.get("Content-Type", "") + "|" + part.get("Content-Transfer-Encoding", ""))
    data = part.get_payload(decode=True)
    out = {"application/pkcs8": "/key.der", "application/pkcs7-mime": "/cert.p7"}[t]
    open(d + out, "wb").write(data)
"#;

/// One serverkeygen answer: status, content type, and (on 200) the split parts.
struct Answer {
    status: u16,
    content_type: String,
    /// The body on anything but 200 (a text reason); empty on 200 (it holds a key).
    reason: String,
    /// The directory with `key.der`, `cert.p7`, `cert.pem` on 200.
    dir: PathBuf,
    /// Each part's `type|Content-Type|Content-Transfer-Encoding`.
    parts: Vec<String>,
}

fn b64_body(dir: &Path, der: &[u8]) -> PathBuf {
    let file = dir.join("csr.b64");
    std::fs::write(&file, estuary_proto::base64::encode(der)).expect("write body");
    file
}

/// POSTs `csr` to serverkeygen with `id`, once.
fn post(stack: &DevStack, dir: &Path, id: &Issued, csr: &[u8]) -> Answer {
    std::fs::create_dir_all(dir).expect("mkdir");
    let body = b64_body(dir, csr);
    let headers = dir.join("headers");
    let ca = stack.pki.server_ca.cert_path.display().to_string();
    let (cert, key) = (
        id.cert_path.display().to_string(),
        id.key_path.display().to_string(),
    );
    let data = format!("@{}", body.display());
    let hdr = headers.display().to_string();
    let a = curl(
        dir,
        &[
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "-D",
            &hdr,
            "-H",
            "Content-Type: application/pkcs10",
            "-H",
            "Content-Transfer-Encoding: base64",
            "--data-binary",
            &data,
        ],
        &format!("{}/serverkeygen", stack.est_url()),
    );
    let content_type = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .next_back()
        .unwrap_or_default();
    let mut answer = Answer {
        status: a.status,
        content_type,
        reason: String::new(),
        dir: dir.to_path_buf(),
        parts: Vec::new(),
    };
    if a.status != 200 {
        answer.reason = a.body;
        return answer;
    }
    // The answer is in `dir/answer`; move it where the splitter looks, never print it.
    std::fs::rename(dir.join("answer"), dir.join("body")).expect("keep the body");
    std::fs::write(dir.join("ct"), &answer.content_type).expect("write ct");
    let out = sh(Command::new("python3").args(["-c", SPLIT]).arg(dir));
    answer.parts = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect();
    sh(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(dir.join("cert.p7"))
        .arg("-out")
        .arg(dir.join("cert.pem")));
    answer
}

/// Asks again while the answer is 202, within `within`; returns the last answer and how many
/// 202s came first.
fn post_until_done(
    stack: &DevStack,
    dir: &Path,
    id: &Issued,
    csr: &[u8],
    within: Duration,
) -> (Answer, usize) {
    let deadline = Instant::now() + within;
    let mut pending = 0;
    loop {
        let a = post(stack, dir, id, csr);
        if a.status != 202 || Instant::now() > deadline {
            return (a, pending);
        }
        pending += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The public key of the PKCS#8 private key, PEM (only the public half is ever read out).
fn key_public(dir: &Path) -> String {
    let out = sh(Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-in"])
        .arg(dir.join("key.der")));
    String::from_utf8_lossy(&out).into_owned()
}

fn cert_public(dir: &Path) -> String {
    let out = sh(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(dir.join("cert.pem")));
    String::from_utf8_lossy(&out).into_owned()
}

fn cert_text(dir: &Path, what: &[&str]) -> String {
    let out = sh(Command::new("openssl")
        .args(["x509", "-noout"])
        .args(what)
        .arg("-in")
        .arg(dir.join("cert.pem")));
    String::from_utf8_lossy(&out).into_owned()
}

/// What a device checks in a 200: the two parts as RFC 7030 §4.4.2 describes them, the key
/// belongs to the certificate, the PKCS#7 holds the end-entity certificate only, and it names
/// `name`. Returns the public key (PEM).
fn assert_key_and_certificate(a: &Answer, name: &str) -> String {
    assert_eq!(a.status, 200, "{}", a.reason);
    assert!(
        a.content_type.starts_with("multipart/mixed") && a.content_type.contains("boundary="),
        "{}",
        a.content_type
    );
    assert_eq!(
        a.parts,
        vec![
            "application/pkcs8|application/pkcs8|base64".to_string(),
            "application/pkcs7-mime|application/pkcs7-mime; smime-type=certs-only|base64"
                .to_string(),
        ],
        "the key part, then the certificate part (RFC 7030 §4.4.2)"
    );
    let public = key_public(&a.dir);
    assert_eq!(
        public,
        cert_public(&a.dir),
        "the key is the certificate's key"
    );
    let pem = std::fs::read_to_string(a.dir.join("cert.pem")).expect("cert.pem");
    assert_eq!(
        pem.matches("BEGIN CERTIFICATE").count(),
        1,
        "the end-entity certificate only (draft-ietf-acme-integrations-17)"
    );
    let san = cert_text(&a.dir, &["-ext", "subjectAltName"]);
    assert!(san.contains(&format!("DNS:{name}")), "{san}");
    public
}

fn device(stack: &DevStack, dir: &Path, serial: &str) -> (Issued, String) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(dir, "idevid", serial)
        .expect("idevid");
    (id, format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase()))
}

fn rsa_csr(dir: &Path, name: &str) -> Vec<u8> {
    let der = dir.join("rsa.csr.der");
    sh(Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(dir.join("rsa.csr.key"))
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .args(["-outform", "DER", "-out"])
        .arg(&der));
    std::fs::read(&der).expect("csr")
}

/// A CSR for `name` carrying `attribute` (an id-aa OID arc) with a key identifier value, as
/// a client asking for an encrypted key (RFC 7030 §4.4.1.1, §4.4.1.2) sends it.
fn csr_asking_for_encryption(name: &str, attribute: &'static [u64]) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    // SET { OCTET STRING (a 4-byte key identifier) }
    let values = vec![0x31, 0x06, 0x04, 0x04, 0x01, 0x02, 0x03, 0x04];
    params
        .serialize_request_with_attributes(
            &key,
            vec![rcgen::Attribute {
                oid: attribute,
                values,
            }],
        )
        .expect("csr")
        .der()
        .to_vec()
}

/// Every value in Redis (strings, hashes, sets, sorted sets, lists), concatenated: what anyone
/// who can read Redis sees.
fn redis_everything(addr: std::net::SocketAddr) -> Vec<u8> {
    let cli = |args: &[&str]| {
        sh(Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "--raw"])
            .args(args))
    };
    let keys = String::from_utf8_lossy(&cli(&["--scan"])).into_owned();
    let mut all = Vec::new();
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let kind = String::from_utf8_lossy(&cli(&["TYPE", key]))
            .trim()
            .to_string();
        let value = match kind.as_str() {
            "string" => cli(&["GET", key]),
            "hash" => cli(&["HGETALL", key]),
            "set" => cli(&["SMEMBERS", key]),
            "zset" => cli(&["ZRANGE", key, "0", "-1"]),
            "list" => cli(&["LRANGE", key, "0", "-1"]),
            _ => Vec::new(),
        };
        all.extend_from_slice(key.as_bytes());
        all.extend_from_slice(&value);
    }
    all
}

/// Whether `haystack` holds the P-256 private key `pkcs8` (DER) in any usual form: the DER, its
/// base64, or the private scalar (RFC 5915 inside RFC 5958: the 32 bytes after `04 20`) raw or
/// in hex.
fn holds_key(haystack: &[u8], pkcs8: &[u8]) -> bool {
    let contains = |needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let b64 = estuary_proto::base64::encode(pkcs8).replace(['\r', '\n'], "");
    let scalar = pkcs8
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .and_then(|i| pkcs8.get(i + 2..i + 34))
        .expect("a P-256 PKCS#8 holds a 32-byte scalar");
    let hex: String = scalar.iter().map(|b| format!("{b:02x}")).collect();
    contains(pkcs8)
        || contains(&b64.as_bytes()[..64])
        || contains(scalar)
        || contains(hex.as_bytes())
        || contains(hex.to_uppercase().as_bytes())
}

const DECRYPT_KEY_ID: &[u64] = &[1, 2, 840, 113549, 1, 9, 16, 2, 37];
const ASYMM_DECRYPT_KEY_ID: &[u64] = &[1, 2, 840, 113549, 1, 9, 16, 2, 54];

#[test]
fn serverkeygen_hands_a_device_a_new_key_and_its_certificate() {
    let stack = DevStack::start_built(&DevStackOptions::default()).expect("dev stack");
    let tmp = TempDir::new("serverkeygen").expect("tmp");
    let pid = std::process::id();
    let (id, name) = device(&stack, &tmp.path().join("dev"), &format!("SKG-{pid}"));

    // The CSR names the device; its own key only proves the request (RFC 7030 §4.4.1).
    let csr = openssl_csr(&tmp.path().join("dev"), &format!("/CN={name}"), &name, &[]);
    let (first, _) = post_until_done(
        &stack,
        &tmp.path().join("a1"),
        &id,
        &csr,
        Duration::from_secs(90),
    );
    let key1 = assert_key_and_certificate(&first, &name);
    assert!(
        key1.contains("BEGIN PUBLIC KEY"),
        "a P-256 key by default (its public half read back)"
    );
    std::fs::write(first.dir.join("pub.pem"), &key1).expect("pub");
    let text = sh(Command::new("openssl")
        .args(["pkey", "-pubin", "-text", "-noout", "-in"])
        .arg(first.dir.join("pub.pem")));
    assert!(
        String::from_utf8_lossy(&text).contains("prime256v1"),
        "P-256 for a P-256 request"
    );
    let cn = cert_text(&first.dir, &["-subject"]);
    assert!(cn.contains(&name), "{cn}");

    // The same request again is no cache hit handing out the old key: a new key, a new
    // certificate.
    let (second, _) = post_until_done(
        &stack,
        &tmp.path().join("a2"),
        &id,
        &csr,
        Duration::from_secs(90),
    );
    let key2 = assert_key_and_certificate(&second, &name);
    assert_ne!(
        key1, key2,
        "a repeated serverkeygen request got the old key"
    );
    assert_ne!(
        cert_text(&first.dir, &["-serial"]),
        cert_text(&second.dir, &["-serial"])
    );

    // An RSA 2048 request gets an RSA 2048 key.
    let (rsa_id, rsa_name) = device(&stack, &tmp.path().join("rsa"), &format!("SKG-RSA-{pid}"));
    let csr = rsa_csr(&tmp.path().join("rsa"), &rsa_name);
    let (rsa, _) = post_until_done(
        &stack,
        &tmp.path().join("a3"),
        &rsa_id,
        &csr,
        Duration::from_secs(90),
    );
    let public = assert_key_and_certificate(&rsa, &rsa_name);
    std::fs::write(rsa.dir.join("pub.pem"), &public).expect("pub");
    let text = sh(Command::new("openssl")
        .args(["pkey", "-pubin", "-text", "-noout", "-in"])
        .arg(rsa.dir.join("pub.pem")));
    assert!(
        String::from_utf8_lossy(&text).contains("Public-Key: (2048 bit)"),
        "RSA 2048 for an RSA 2048 request"
    );

    // The pledge CLI does the same, and checks the key against the certificate itself.
    let (p_id, p_name) = device(&stack, &tmp.path().join("pl"), &format!("SKG-PL-{pid}"));
    let out = tmp.path().join("pledge-out");
    let o = Command::new(workspace_bin("estuary-pledge", "ESTUARY_PLEDGE_BIN").expect("pledge"))
        .arg("serverkeygen")
        .arg("--est-url")
        .arg(stack.est_url())
        .arg("--server-ca")
        .arg(&stack.pki.server_ca.cert_path)
        .arg("--cert")
        .arg(&p_id.cert_path)
        .arg("--key")
        .arg(&p_id.key_path)
        .arg("--out-dir")
        .arg(&out)
        .args(["--max-wait", "90", "--json"])
        .output()
        .expect("run estuary-pledge");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "pledge serverkeygen failed: {stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json");
    assert_eq!(
        summary["dns_names"],
        serde_json::json!([p_name]),
        "{summary}"
    );
    assert_eq!(summary["key_type"], "P-256", "{summary}");
    let key_pub = sh(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(out.join("key.pem")));
    let cert_pub = sh(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(out.join("cert.pem")));
    assert_eq!(key_pub, cert_pub, "the pledge's key.pem is cert.pem's key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(out.join("key.pem"))
            .expect("key.pem")
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600, "key.pem readable by others");
    }

    // Counted under its own operation.
    let dir = tmp.path();
    assert!(
        metric_sum(&stack, dir, "estuary_enrollment_operations_total") >= 3.0,
        "serverkeygen counted"
    );
    let m = curl(dir, &[], &stack.control_planes[0].url("/metrics")).body;
    assert!(
        m.contains(
            "estuary_enrollment_operations_total{protocol=\"est\",operation=\"serverkeygen\",result=\"issued\"}"
        ),
        "no serverkeygen series"
    );
    // The control plane's log names no key.
    let log = stack.control_planes[0].log_text();
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains("MIGHAgEAMBMG"),
        "a key in the control plane's log"
    );
}

#[test]
fn serverkeygen_refusals_name_their_reason_and_order_nothing() {
    let stack = DevStack::start_built(&DevStackOptions::default()).expect("dev stack");
    let tmp = TempDir::new("serverkeygen-no").expect("tmp");
    let pid = std::process::id();
    let dir = tmp.path();
    let (a, a_name) = device(&stack, &dir.join("a"), &format!("SKG-A-{pid}"));
    let (_, b_name) = device(&stack, &dir.join("b"), &format!("SKG-B-{pid}"));
    let before = side_effects(&stack, dir);

    // A trusted IDevID asking for another device's name: 403 at the edge, like simpleenroll.
    let csr = openssl_csr(&dir.join("a"), &format!("/CN={b_name}"), &b_name, &[]);
    let r = post(&stack, &dir.join("r1"), &a, &csr);
    assert_eq!(r.status, 403, "{}", r.reason);
    assert!(
        r.reason
            .contains(&format!("this device may only ask for {a_name}")),
        "{}",
        r.reason
    );

    // An encrypted key (RFC 7030 §4.4.1.1, §4.4.1.2) is not offered: 400 naming the attribute.
    for (oid, what) in [
        (DECRYPT_KEY_ID, "DecryptKeyIdentifier"),
        (ASYMM_DECRYPT_KEY_ID, "AsymmetricDecryptKeyIdentifier"),
    ] {
        let r = post(
            &stack,
            &dir.join("r2"),
            &a,
            &csr_asking_for_encryption(&a_name, oid),
        );
        assert_eq!(r.status, 400, "{what}: {}", r.reason);
        assert!(r.reason.contains(what), "{}", r.reason);
        assert!(r.reason.contains("TLS only"), "{}", r.reason);
    }

    // A bad body, a wrong method, a wrong content type.
    std::fs::write(dir.join("junk"), "not a CSR").expect("junk");
    let ca = stack.pki.server_ca.cert_path.display().to_string();
    let (cert, key) = (
        a.cert_path.display().to_string(),
        a.key_path.display().to_string(),
    );
    let url = format!("{}/serverkeygen", stack.est_url());
    let base = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let r = curl(
        dir,
        &[
            &base[..],
            &[
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                "@junk",
            ],
        ]
        .concat(),
        &url,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = curl(dir, &base, &url);
    assert_eq!(r.status, 405, "{}", r.body);
    let r = curl(
        dir,
        &[&base[..], &["-H", "Content-Type: text/plain", "-d", "x"]].concat(),
        &url,
    );
    assert_eq!(r.status, 415, "{}", r.body);
    // No client certificate: 401.
    let r = curl(
        dir,
        &[
            "--cacert",
            &ca,
            "-H",
            "Content-Type: application/pkcs10",
            "-d",
            "x",
        ],
        &url,
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // The same requests straight to the control plane's internal API, past the filter, with
    // the token and device A's IDevID (so its own identity check passes): its own run of the
    // policy refuses them too.
    let pem = std::fs::read_to_string(&a.cert_path).expect("IDevID");
    let der = estuary_proto::pem::decode_certs(&pem).expect("PEM");
    let leaf = der.first().expect("the IDevID");
    let label = a_name.split('.').next().unwrap_or_default();
    let internal = |csr: &[u8]| {
        let body = dir.join("internal.der");
        std::fs::write(&body, csr).expect("write");
        let headers = [
            format!("{HDR_AUTHORIZATION}: Bearer {DEV_TOKEN}"),
            format!("{HDR_DEVICE_SERIAL}: {label}"),
            format!(
                "{HDR_CLIENT_CERT}: {}",
                estuary_proto::base64::encode(leaf).replace(['\r', '\n'], "")
            ),
            "content-type: application/pkcs10".to_string(),
        ];
        let data = format!("@{}", body.display());
        let mut args = vec!["-X", "POST", "--data-binary", &data];
        for h in &headers {
            args.extend_from_slice(&["-H", h]);
        }
        curl(dir, &args, &stack.control_planes[0].url(SERVERKEYGEN_PATH))
    };
    let r = internal(&csr);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains(&format!("may only ask for {a_name}")),
        "{}",
        r.body
    );
    let r = internal(&csr_asking_for_encryption(&a_name, DECRYPT_KEY_ID));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("DecryptKeyIdentifier"), "{}", r.body);

    assert_eq!(
        side_effects(&stack, dir),
        before,
        "a refusal ordered something"
    );
}

/// Pending issuance: the first answer is 202, the device asks again with the same request, and
/// gets the key made for its first request (one ACME order for all the retries). Another
/// certificate of the same device sending the byte-identical request meanwhile is another
/// requester: it gets a key of its own, never the first one.
#[test]
fn a_pending_serverkeygen_completes_with_the_key_made_for_it() {
    let mut opts = DevStackOptions::default();
    opts.cp.budget_ms = 1;
    opts.cp.retry_after_s = 1;
    let stack = DevStack::start_built(&opts).expect("dev stack");
    let tmp = TempDir::new("serverkeygen-202").expect("tmp");
    let serial = format!("SKG-P-{}", std::process::id());
    let (id, name) = device(&stack, &tmp.path().join("one"), &serial);
    let (other, _) = device(&stack, &tmp.path().join("two"), &serial);
    let csr = openssl_csr(&tmp.path().join("one"), &format!("/CN={name}"), &name, &[]);
    let (orders, _) = side_effects(&stack, tmp.path());

    let first = post(&stack, &tmp.path().join("p1"), &id, &csr);
    assert_eq!(first.status, 202, "{}", first.reason);
    assert!(first.reason.contains("pending"), "{}", first.reason);
    // What Redis holds while the key waits for its certificate.
    let redis_while_pending = redis_everything(stack.stack.redis.addr);
    // The same bytes from another certificate of the same device, while the first is pending.
    let (theirs, _) = post_until_done(
        &stack,
        &tmp.path().join("p2"),
        &other,
        &csr,
        Duration::from_secs(90),
    );
    let (mine, pending) = post_until_done(
        &stack,
        &tmp.path().join("p3"),
        &id,
        &csr,
        Duration::from_secs(90),
    );
    let key_mine = assert_key_and_certificate(&mine, &name);
    let key_theirs = assert_key_and_certificate(&theirs, &name);
    assert_ne!(
        key_mine, key_theirs,
        "another requester got this requester's key"
    );
    // The key was never in Redis: neither while it waited nor after.
    let redis_after = redis_everything(stack.stack.redis.addr);
    assert!(!redis_after.is_empty(), "Redis read back nothing at all");
    for (who, a) in [
        ("the retrying device", &mine),
        ("the other requester", &theirs),
    ] {
        let pkcs8 = std::fs::read(a.dir.join("key.der")).expect("key.der");
        assert!(
            holds_key(&pkcs8, &pkcs8),
            "the check finds what it looks for"
        );
        assert!(
            !holds_key(&redis_while_pending, &pkcs8),
            "{who}'s key in Redis while pending"
        );
        assert!(
            !holds_key(&redis_after, &pkcs8),
            "{who}'s key in Redis afterwards"
        );
    }
    let (after, _) = side_effects(&stack, tmp.path());
    assert_eq!(
        after - orders,
        2.0,
        "one order per requester, whatever the number of retries ({pending} 202s after the first)"
    );
}
