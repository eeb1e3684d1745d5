//! Shared pieces of the control plane's integration tests: a real stack (BIND9, Redis,
//! Pebble), the control plane as a real process, an HTTP client, CSRs made by rcgen (an
//! implementation independent of ours) and checks made with the openssl CLI.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use estuary_tests::bind::Bind;
use estuary_tests::pebble::Pebble;
use estuary_tests::redis::Redis;
use estuary_tests::util::{free_port, tail, wait_tcp, KillOnDrop, TempDir};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const PARENT: &str = "iot.example.test";

/// BIND9 + Redis + Pebble on loopback.
pub struct Stack {
    pub bind: Bind,
    pub redis: Redis,
    pub pebble: Pebble,
}

impl Stack {
    pub fn start() -> Stack {
        let bind = Bind::start().expect("start BIND9");
        let redis = Redis::start().expect("start Redis");
        let pebble = Pebble::start(bind.addr).expect("start Pebble");
        Stack {
            bind,
            redis,
            pebble,
        }
    }
}

/// Knobs for one control-plane process.
#[derive(Clone)]
pub struct CpOptions {
    pub parent: String,
    pub budget_ms: u64,
    pub retry_after_s: u64,
    pub lock_ttl_s: u64,
    pub extra_env: Vec<(String, String)>,
}

impl Default for CpOptions {
    fn default() -> Self {
        Self {
            parent: PARENT.into(),
            budget_ms: 5000,
            retry_after_s: 1,
            lock_ttl_s: 15,
            extra_env: Vec::new(),
        }
    }
}

/// The control plane, as a real process.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub config: PathBuf,
    child: KillOnDrop,
    _dir: TempDir,
}

impl ControlPlane {
    pub fn start(stack: &Stack, opts: &CpOptions) -> ControlPlane {
        let dir = TempDir::new("cp").expect("temp dir");
        let port = free_port().expect("port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.path().join("estuary.toml");
        let text = format!(
            r#"
[server]
listen = "{addr}"
api_token = "{TOKEN}"

[est]
parent_domain = "{parent}"
ca_certs_file = "{roots}"

[acme]
directory_url = "{dir_url}"
tls_root_file = "{tls_root}"
poll_initial_ms = 20
order_timeout_s = 30

[dns]
server = "{dns}"
zone = "{zone}"
key_name = "{key_name}"
algorithm = "hmac-sha256"
timeout_ms = 2000

[redis]
url = "{redis}"

[enroll]
budget_ms = {budget}
retry_after_s = {retry}
lock_ttl_s = {lock}
unavailable_retry_after_s = 2
"#,
            parent = opts.parent,
            roots = stack.pebble.issuer_root_pem.display(),
            dir_url = stack.pebble.directory_url,
            tls_root = stack.pebble.tls_ca_pem.display(),
            dns = stack.bind.addr,
            zone = stack.bind.zone,
            key_name = stack.bind.key_name,
            redis = stack.redis.url(),
            budget = opts.budget_ms,
            retry = opts.retry_after_s,
            lock = opts.lock_ttl_s,
        );
        std::fs::write(&config, text).expect("write config");
        Self::spawn(dir, addr, config, stack, opts)
    }

    fn spawn(dir: TempDir, addr: SocketAddr, config: PathBuf, stack: &Stack, opts: &CpOptions) -> ControlPlane {
        let log = dir.path().join(format!("cp-{}.log", addr.port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_estuary-control-plane"));
        cmd.arg("--config")
            .arg(&config)
            // The TSIG secret comes from the environment, as an operator would pass it.
            .env("ESTUARY_DNS__SECRET", &stack.bind.secret_b64)
            .env("RUST_LOG", "info,estuary_control_plane=debug");
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let child = KillOnDrop::spawn(cmd, &log).expect("spawn control plane");
        wait_tcp(addr, Duration::from_secs(20), "control plane")
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log, 40)));
        ControlPlane {
            addr,
            log,
            config,
            child,
            _dir: dir,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A counter or sample value from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let r = http(&self.url("/metrics"), "GET", &[], Vec::new()).await;
        let text = String::from_utf8_lossy(&r.body).to_string();
        text.lines()
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse::<f64>().ok())?
            })
            .unwrap_or(0.0)
    }

    /// POST /estuary/v1/enroll.
    pub async fn enroll(&self, serial: &str, csr_der: &[u8]) -> Resp {
        http(
            &self.url("/estuary/v1/enroll"),
            "POST",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/pkcs10"),
                ("estuary-device-serial", serial),
                ("estuary-operation", "simpleenroll"),
            ],
            csr_der.to_vec(),
        )
        .await
    }

    /// Enrols, following 202 + Retry-After, until a final answer or `deadline`.
    pub async fn enroll_until_done(&self, serial: &str, csr_der: &[u8], within: Duration) -> Resp {
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
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
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
