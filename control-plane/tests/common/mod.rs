//! Shared pieces of the control plane's integration tests: a real stack (BIND9, Redis,
//! Pebble), the control plane as a real process, an HTTP client, CSRs made by rcgen (an
//! implementation independent of ours) and checks made with the openssl CLI.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub use estuary_tests::stack::{ControlPlane as Process, CpOptions, Stack};

pub const TOKEN: &str = estuary_tests::stack::DEV_TOKEN;
pub const PARENT: &str = estuary_tests::stack::DEV_PARENT;

/// Starts the BIND9 + Redis + Pebble stack.
pub fn stack() -> Stack {
    Stack::start().expect("start BIND9, Redis and Pebble")
}

/// The control plane of this package, as a real process, with test helpers.
pub struct ControlPlane(pub Process);

impl std::ops::Deref for ControlPlane {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for ControlPlane {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl ControlPlane {
    pub fn start(stack: &Stack, opts: &CpOptions) -> ControlPlane {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_estuary-control-plane"));
        ControlPlane(Process::start(bin, stack, opts).expect("start the control plane"))
    }

    /// A counter or sample value from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let r = http(&self.url("/metrics"), "GET", &[], Vec::new()).await;
        estuary_tests::stack::metric_value(&String::from_utf8_lossy(&r.body), series)
    }

    /// [`ControlPlane::metric`] once it reads `value`, or what it reads after `within` (for
    /// counters moved by work that goes on after the answer, such as the removal of DNS-01
    /// records).
    pub async fn metric_settled(&self, series: &str, value: f64, within: Duration) -> f64 {
        let deadline = std::time::Instant::now() + within;
        loop {
            let v = self.metric(series).await;
            if v == value || std::time::Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An IDevID of the stack's test manufacturer for `serial`, as the edge forwards it
    /// (`estuary-client-cert`: base64 DER on one line).
    pub fn idevid_header(&self, serial: &str) -> String {
        idevid_header(&self.stack_manufacturer, serial)
    }

    /// POST /estuary/v1/enroll, as the edge sends it for an IDevID with subject serialNumber
    /// `serial` from the stack's test manufacturer.
    pub async fn enroll(&self, serial: &str, csr_der: &[u8]) -> Resp {
        let cert = self.idevid_header(serial);
        enroll_at(&self.url(""), serial, &cert, csr_der).await
    }

    /// Enrols following only 202 + Retry-After: returns the first final answer, 503 included
    /// (for tests that expect to see the "retry later").
    pub async fn enroll_past_pending(
        &self,
        serial: &str,
        csr_der: &[u8],
        within: Duration,
    ) -> Resp {
        let deadline = Instant::now() + within;
        loop {
            let r = self.enroll(serial, csr_der).await;
            if r.status != 202 || Instant::now() > deadline {
                return r;
            }
            let wait = r
                .header("retry-after")
                .and_then(|v| v.parse::<u64>().ok())
                .expect("202 carries Retry-After");
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    /// Enrols as an RFC 7030 client does: follows 202 + Retry-After, and 503 + Retry-After
    /// (the CA or DNS was briefly unavailable, e.g. Pebble's deliberate badNonce answers
    /// outlasting the retries), until a final answer or `within` has passed.
    pub async fn enroll_until_done(&self, serial: &str, csr_der: &[u8], within: Duration) -> Resp {
        let deadline = Instant::now() + within;
        loop {
            let r = self.enroll(serial, csr_der).await;
            let retry = match r.status {
                202 => Some(
                    r.header("retry-after")
                        .and_then(|v| v.parse::<u64>().ok())
                        .expect("202 carries Retry-After"),
                ),
                503 => r.header("retry-after").and_then(|v| v.parse::<u64>().ok()),
                _ => None,
            };
            match retry {
                Some(wait) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                _ => return r,
            }
        }
    }
}

/// An IDevID of `manufacturer` for `serial`, as the edge forwards it (`estuary-client-cert`:
/// base64 DER on one line).
pub fn idevid_header(manufacturer: &estuary_tests::pki::Ca, serial: &str) -> String {
    let der = manufacturer.idevid_der(serial).expect("mint an IDevID");
    let mut b64 = estuary_proto::base64::encode(&der);
    b64.retain(|c| !c.is_ascii_whitespace());
    b64
}

/// POST `<base>/estuary/v1/enroll` (`base`: `http://host:port`), as the edge sends it for the
/// device `serial` with the IDevID header `idevid_b64` (see [`idevid_header`]).
pub async fn enroll_at(base: &str, serial: &str, idevid_b64: &str, csr_der: &[u8]) -> Resp {
    http(
        &format!("{base}/estuary/v1/enroll"),
        "POST",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/pkcs10"),
            ("estuary-device-serial", &serial.to_ascii_lowercase()),
            ("estuary-client-cert", idevid_b64),
            ("estuary-operation", "simpleenroll"),
        ],
        csr_der.to_vec(),
    )
    .await
}

/// Enrols at `base` as a device does through a Redis failover: follows 202 and 503 with their
/// Retry-After until a final answer or `within` has passed; returns it and every status seen.
/// A 202 or 503 without Retry-After fails the test.
pub async fn enrol_riding_out(
    base: String,
    idevid: String,
    serial: String,
    csr: Vec<u8>,
    within: Duration,
) -> (Resp, Vec<u16>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let r = enroll_at(&base, &serial, &idevid, &csr).await;
        seen.push(r.status);
        let wait = match r.status {
            202 | 503 => r
                .header("retry-after")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{serial}: {} without Retry-After", r.status)),
            _ => return (r, seen),
        };
        if Instant::now() > deadline {
            return (r, seen);
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// An HTTP answer.
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// One HTTP/1.1 request; a connection failure becomes status 0.
pub async fn http(url: &str, method: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    match tokio::time::timeout(Duration::from_secs(60), client.request(req)).await {
        Ok(Ok(rsp)) => {
            let status = rsp.status().as_u16();
            let headers = rsp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            Resp {
                status,
                headers,
                body,
            }
        }
        _ => Resp {
            status: 0,
            headers: HashMap::new(),
            body: Vec::new(),
        },
    }
}

/// A CSR made by rcgen for `name` with a fresh P-256 key: (DER, public key PEM).
pub fn csr_for(name: &str) -> (Vec<u8>, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key).expect("csr");
    (csr.der().to_vec(), key.public_key_pem())
}

/// Runs a command and returns its stdout; panics with stderr on failure.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Writes the certificates of a DER PKCS#7 as PEM files via `openssl pkcs7 -print_certs`
/// and returns the PEM text.
pub fn pkcs7_to_pem(dir: &Path, p7_der: &[u8]) -> String {
    let p7 = dir.join("chain.p7");
    std::fs::write(&p7, p7_der).expect("write p7");
    sh(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&p7))
}

/// Splits a PEM text into its CERTIFICATE blocks.
pub fn pem_blocks(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inside = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            inside = true;
            cur.clear();
        }
        if inside {
            cur.push_str(line);
            cur.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            inside = false;
            out.push(cur.clone());
        }
    }
    out
}
