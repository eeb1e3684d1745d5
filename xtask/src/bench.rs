//! `cargo xtask bench`: Estuary's numbers, all from one run on loopback, side by side.
//!
//! 1. **Envoy requests/s** — one Envoy (`--concurrency 1`) with three TLS listeners that differ
//!    only in their HTTP filters (`envoy/bench-envoy.yaml`): the Estuary filter, a no-op wasm
//!    filter (`bench/noop-filter`), and no wasm filter at all (`direct_response`). wrk (one
//!    thread, fixed connections and duration) sends
//!    - `GET /.well-known/est/cacerts`, which the Estuary filter answers from its cache, and
//!    - `POST /.well-known/est/simpleenroll` without a client certificate, which it refuses
//!      with 401 before any control-plane call.
//!
//!    The noop/direct listeners answer the same paths with `direct_response` carrying the same
//!    status, headers and body.
//! 2. **Enrolments/s** — N distinct pledges (IDevIDs from the dev manufacturer CA, CSRs made
//!    with rcgen) enrol at C concurrent through Envoy, the release control plane, Pebble
//!    (`PEBBLE_VA_NOSLEEP`) and BIND9, following `202 Retry-After`; against a bare
//!    instant-acme loop on the same Pebble and BIND (same concurrency, same count, the control
//!    plane's `RetryPolicy`: 20 ms, backoff 1.5).
//! 3. **Identical-CSR re-enrolment** — every pledge posts its CSR again (cache hit), on its
//!    kept-alive connection and on a new TLS connection each time: rate and p99.
//! 4. **DNS UPDATE messages per enrolment** — `estuary_dns_updates_total` over issued
//!    enrolments, from the control plane's `/metrics`.
//!
//! Prints a table and writes `target/bench/latest.json` (and a timestamped copy).
//! Bounded loads only, 127.0.0.1 only. Not run by CI: it reports numbers, it does not pass or fail
//! on them (it fails only when an answer is wrong).
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use estuary_control_plane::config::dns::{DnsConfig, TsigAlgorithmName, TsigSecret};
use estuary_control_plane::ra::dns::update::{DnsUpdater, TxtRecord};
use estuary_tests::dev_stack::{filter_config, DevStack, DevStackOptions};
use estuary_tests::pki::Ca;
use estuary_tests::stack::{metric_value, DEV_PARENT};
use estuary_tests::util::{find_program, free_port, tail, KillOnDrop, TempDir};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::Request;
use hyper_util::rt::TokioIo;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{build_wasm, cargo, install, root, run, WASM_TARGET};

/// Knobs (`cargo xtask bench --help`).
#[derive(Clone, Debug)]
struct Opts {
    duration_s: u64,
    connections: u32,
    rounds: u32,
    pledges: usize,
    concurrency: usize,
    repeats: usize,
    skip_envoy: bool,
    skip_enrol: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            duration_s: 5,
            connections: 32,
            rounds: 2,
            pledges: 200,
            concurrency: 50,
            repeats: 5,
            skip_envoy: false,
            skip_enrol: false,
        }
    }
}

const USAGE: &str = "usage: cargo xtask bench [--duration S] [--connections N] [--rounds N] \
[--pledges N] [--concurrency N] [--repeats N] [--skip-envoy] [--skip-enrol]\n\n  \
--duration S     seconds per wrk run (default 5)\n  \
--connections N  wrk connections (default 32)\n  \
--rounds N       wrk runs per variant, averaged; variants alternate (default 2)\n  \
--pledges N      distinct pledges that enrol (default 200)\n  \
--concurrency N  enrolments in flight (default 50)\n  \
--repeats N      identical-CSR posts per pledge on a kept-alive connection (default 5)";

fn parse_opts(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> anyhow::Result<u64> {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .with_context(|| format!("{what} needs a positive number"))
        };
        match a.as_str() {
            "--duration" => o.duration_s = num("--duration")?,
            "--connections" => o.connections = u32::try_from(num("--connections")?)?,
            "--rounds" => o.rounds = u32::try_from(num("--rounds")?)?,
            "--pledges" => o.pledges = usize::try_from(num("--pledges")?)?,
            "--concurrency" => o.concurrency = usize::try_from(num("--concurrency")?)?,
            "--repeats" => o.repeats = usize::try_from(num("--repeats")?)?,
            "--skip-envoy" => o.skip_envoy = true,
            "--skip-enrol" => o.skip_enrol = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    Ok(Some(o))
}

/// Entry point of `cargo xtask bench`.
pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse_opts(args)? else {
        return Ok(());
    };
    // The bench client itself (TLS, hyper, instant-acme) must not be a debug build: re-run
    // this command from a release build of xtask.
    if cfg!(debug_assertions) && std::env::var_os("ESTUARY_BENCH_DEBUG").is_none() {
        let mut c = cargo();
        c.args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench"])
            .args(args);
        return run(c);
    }
    install()?;
    find_program("wrk", "wrk")?;
    let filter = build_wasm()?;
    let noop = build_noop_wasm()?;
    let mut cp = cargo();
    cp.args(["build", "--release", "-p", "estuary-control-plane"]);
    run(cp)?;
    let cp_bin = root().join("target/release/estuary-control-plane");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    eprintln!("xtask: starting the dev stack (release control plane) …");
    let dev = DevStack::start(&DevStackOptions::default(), &cp_bin, &filter, None)?;
    let work = TempDir::new("bench")?;
    let mut report = Report::default();
    let load_start = loadavg();
    report.json["settings"] = json!({
        "envoy_concurrency": 1,
        "wrk_threads": 1,
        "wrk_connections": opts.connections,
        "wrk_duration_s": opts.duration_s,
        "wrk_rounds": opts.rounds,
        "pledges": opts.pledges,
        "concurrency": opts.concurrency,
        "repeats": opts.repeats,
        "control_plane": cp_bin.display().to_string(),
        "acme_poll": {"initial_ms": 20, "backoff": 1.5},
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });

    // A failing phase keeps what the others measured: the table and JSON are written anyway.
    let mut outcome = Ok(());
    if !opts.skip_envoy {
        outcome = envoy_bench(&dev, &filter, &noop, work.path(), &opts, &mut report);
    }
    if !opts.skip_enrol && outcome.is_ok() {
        outcome = rt.block_on(enrol_bench(&dev, work.path(), &opts, &mut report));
    }
    if let Err(e) = &outcome {
        report.row("FAILED", "", format!("{e:#}"));
        report.json["error"] = json!(format!("{e:#}"));
    }

    let load_end = loadavg();
    report.row(
        "load average (1/5/15 min), start / end",
        "",
        format!(
            "{load_start} / {load_end} on {} cores: other work on the machine skews every number",
            report.json["settings"]["machine_cores"]
        ),
    );
    report.json["load_average"] = json!({"start": load_start, "end": load_end});
    println!("\n{}", report.table());
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = serde_json::to_string_pretty(&report.json)?;
    std::fs::write(out_dir.join(format!("bench-{stamp}.json")), &text)?;
    std::fs::write(out_dir.join("latest.json"), &text)?;
    println!("written: {}", out_dir.join("latest.json").display());
    outcome
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Builds `target/wasm32-wasip1/wasm-release/estuary_bench_noop_filter.wasm`.
fn build_noop_wasm() -> anyhow::Result<PathBuf> {
    let mut c = cargo();
    c.args([
        "build",
        "-p",
        "estuary-bench-noop-filter",
        "--target",
        WASM_TARGET,
        "--profile",
        "wasm-release",
    ]);
    run(c)?;
    let p = root().join("target/wasm32-wasip1/wasm-release/estuary_bench_noop_filter.wasm");
    if !p.is_file() {
        bail!("{} was not built", p.display());
    }
    Ok(p)
}

/// What the run found: table rows and the JSON document.
#[derive(Default)]
struct Report {
    rows: Vec<(String, String, String)>,
    json: Value,
}

impl Report {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>, note: impl Into<String>) {
        let row = (what.into(), value.into(), note.into());
        eprintln!("xtask: bench: {}  {}  {}", row.0, row.1, row.2);
        self.rows.push(row);
    }

    fn table(&self) -> String {
        let w0 = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let mut s = String::new();
        for (a, b, c) in &self.rows {
            s.push_str(&format!("{a:<w0$}  {b:>w1$}  {c}\n"));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy requests/s

/// One HTTP answer seen by curl: status, content-type, content-transfer-encoding, body.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    content_type: String,
    cte: String,
    body: Vec<u8>,
}

fn curl(url: &str, server_ca: &Path, post_body: Option<&Path>) -> anyhow::Result<Seen> {
    let tmp = TempDir::new("bench-curl")?;
    let hdr = tmp.path().join("h");
    let out = tmp.path().join("b");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(server_ca)
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&out);
    if let Some(b) = post_body {
        cmd.args([
            "-H",
            "Content-Type: application/pkcs10",
            "-H",
            "Content-Transfer-Encoding: base64",
            "--data-binary",
        ])
        .arg(format!("@{}", b.display()));
    }
    let o = cmd.arg(url).output().context("running curl")?;
    if !o.status.success() {
        bail!("curl {url}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let head = std::fs::read_to_string(&hdr)?;
    let mut seen = Seen {
        status: 0,
        content_type: String::new(),
        cte: String::new(),
        body: std::fs::read(&out).unwrap_or_default(),
    };
    for line in head.lines() {
        if line.starts_with("HTTP/") {
            seen.status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        } else if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => seen.content_type = v.trim().to_string(),
                "content-transfer-encoding" => seen.cte = v.trim().to_string(),
                _ => {}
            }
        }
    }
    Ok(seen)
}

/// One wrk run's outcome.
#[derive(Debug, Clone, Copy, Default)]
struct WrkRun {
    rps: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    connections_opened: f64,
    /// CPU of the whole Envoy process (worker + main thread), % of one core.
    envoy_cpu_pct: f64,
}

fn parse_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Some(x) = v.strip_suffix("us") {
        x.parse::<f64>().ok().map(|n| n / 1000.0)
    } else if let Some(x) = v.strip_suffix("ms") {
        x.parse().ok()
    } else if let Some(x) = v.strip_suffix('s') {
        x.parse::<f64>().ok().map(|n| n * 1000.0)
    } else {
        None
    }
}

fn parse_wrk(out: &str) -> anyhow::Result<WrkRun> {
    let mut r = WrkRun::default();
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().context("Requests/sec")?;
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_ms(v).context("99% latency")?;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().context("Non-2xx")?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            r.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if t.contains("requests in") {
            r.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .context("requests in")?;
        }
    }
    if r.rps <= 0.0 {
        bail!("wrk printed no rate:\n{out}");
    }
    Ok(r)
}

fn admin_stat(admin: &str, name: &str) -> f64 {
    Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("{admin}/stats?filter=^{name}$"))
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok()))
                .unwrap_or(0.0)
        })
        .unwrap_or(0.0)
}

fn wrk(
    url: &str,
    script: Option<&Path>,
    opts: &Opts,
    envoy: &BenchEnvoy,
    stat_prefix: &str,
) -> anyhow::Result<WrkRun> {
    let admin = envoy.admin.as_str();
    let cx = format!("http.{stat_prefix}.downstream_cx_total");
    let before = admin_stat(admin, &cx);
    let cpu_before = cpu_ticks(envoy.pid).unwrap_or(0);
    let started = Instant::now();
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "--latency"])
        .arg(format!("-c{}", opts.connections))
        .arg(format!("-d{}s", opts.duration_s));
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let o = cmd.arg(url).output().context("running wrk")?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    if !o.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut r = parse_wrk(&text)?;
    let cpu = cpu_ticks(envoy.pid).unwrap_or(0).saturating_sub(cpu_before) as f64 / TICKS_PER_S;
    r.envoy_cpu_pct = 100.0 * cpu / started.elapsed().as_secs_f64().max(1e-3);
    r.connections_opened = admin_stat(admin, &cx) - before;
    Ok(r)
}

struct BenchEnvoy {
    admin: String,
    pid: u32,
    ports: [(&'static str, u16); 3],
    _child: KillOnDrop,
    _dir: TempDir,
}

fn start_bench_envoy(
    dev: &DevStack,
    filter: &Path,
    noop: &Path,
    cacerts_body: &Path,
    reject_body: &Path,
) -> anyhow::Result<BenchEnvoy> {
    let dir = TempDir::new("bench-envoy")?;
    let template = std::fs::read_to_string(root().join("envoy/bench-envoy.yaml"))?;
    let admin_port = free_port()?;
    let ports = [
        ("estuary", free_port()?),
        ("noop", free_port()?),
        ("direct", free_port()?),
    ];
    let endpoints: Vec<String> = dev
        .control_planes
        .iter()
        .map(|c| {
            format!(
                "{{endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}}}",
                c.addr.ip(),
                c.addr.port()
            )
        })
        .collect();
    let yaml = template
        .replace("{{ADMIN_PORT}}", &admin_port.to_string())
        .replace("{{EST_PORT}}", &ports[0].1.to_string())
        .replace("{{NOOP_PORT}}", &ports[1].1.to_string())
        .replace("{{DIRECT_PORT}}", &ports[2].1.to_string())
        .replace(
            "{{SERVER_CERT}}",
            &dev.pki.server.cert_path.display().to_string(),
        )
        .replace(
            "{{SERVER_KEY}}",
            &dev.pki.server.key_path.display().to_string(),
        )
        .replace(
            "{{CLIENT_CA_BUNDLE}}",
            &dev.client_ca_bundle.display().to_string(),
        )
        .replace("{{FILTER_WASM}}", &filter.display().to_string())
        .replace("{{NOOP_WASM}}", &noop.display().to_string())
        .replace(
            "{{FILTER_CONFIG_JSON}}",
            &serde_json::to_string(&filter_config(
                300,
                &[estuary_tests::dev_stack::dev_manufacturer(&dev.pki, None)],
                &dev.acme_roots,
            )?)?,
        )
        .replace(
            "{{CP_LB_ENDPOINTS}}",
            &format!("[{}]", endpoints.join(", ")),
        )
        .replace("{{CACERTS_BODY_FILE}}", &cacerts_body.display().to_string())
        .replace("{{REJECT_BODY_FILE}}", &reject_body.display().to_string());
    if let Some(i) = yaml.find("{{") {
        bail!(
            "unrendered placeholder in bench-envoy.yaml near {}",
            &yaml[i..(i + 40).min(yaml.len())]
        );
    }
    let config = dir.path().join("bench-envoy.yaml");
    std::fs::write(&config, yaml)?;
    estuary_tests::envoy::validate(&config)?;
    let log = dir.path().join("envoy.log");
    let mut cmd = Command::new(estuary_tests::envoy::envoy_binary()?);
    cmd.args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "-l",
        "warning",
        "-c",
    ])
    .arg(&config);
    let child = KillOnDrop::spawn(cmd, &log)?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "1"])
            .arg(format!("{admin}/ready"))
            .output();
        if matches!(&o, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "LIVE") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the bench Envoy did not become ready:\n{}", tail(&log, 40));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(BenchEnvoy {
        pid: child.0.id(),
        admin,
        ports,
        _child: child,
        _dir: dir,
    })
}

fn envoy_bench(
    dev: &DevStack,
    filter: &Path,
    noop: &Path,
    work: &Path,
    opts: &Opts,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ca = &dev.pki.server_ca.cert_path;
    // A well-formed CSR body; without a client certificate the filter refuses it before reading.
    let name = format!("bench-anon.{DEV_PARENT}");
    let (_key, csr_der) = make_csr(&name)?;
    let csr_b64 = estuary_proto::base64::encode(&csr_der);
    let csr_file = work.join("anon.csr.b64");
    std::fs::write(&csr_file, &csr_b64)?;
    let empty_file = work.join("empty");
    std::fs::write(&empty_file, "")?;

    // What the Estuary filter answers (through the dev stack's Envoy: same filter, same
    // control plane); the noop/direct listeners are configured to send the same.
    let cacerts = curl(&format!("{}/cacerts", dev.est_url()), ca, None)?;
    let reject = curl(
        &format!("{}/simpleenroll", dev.est_url()),
        ca,
        Some(&csr_file),
    )?;
    if cacerts.status != 200 || reject.status != 401 {
        bail!(
            "unexpected answers from the Estuary filter: cacerts {}, anonymous simpleenroll {}",
            cacerts.status,
            reject.status
        );
    }
    let cacerts_body = work.join("cacerts.body");
    let reject_body = work.join("reject.body");
    std::fs::write(&cacerts_body, &cacerts.body)?;
    std::fs::write(&reject_body, &reject.body)?;
    let envoy = start_bench_envoy(dev, filter, noop, &cacerts_body, &reject_body)?;

    // Every listener must give the same answer to each request, else the rates mean nothing.
    // The first cacerts on the estuary listener fills the filter's cache from the control plane.
    for (label, port) in envoy.ports {
        let base = format!("https://127.0.0.1:{port}/.well-known/est");
        let c = curl(&format!("{base}/cacerts"), ca, None)?;
        let r = curl(&format!("{base}/simpleenroll"), ca, Some(&csr_file))?;
        let e = curl(&format!("{base}/simpleenroll"), ca, Some(&empty_file))?;
        if c != cacerts || r != reject || e != reject {
            bail!(
                "listener {label} answers differently from the Estuary filter:\n  cacerts {c:?}\n  vs {cacerts:?}\n  simpleenroll {r:?}\n  vs {reject:?}"
            );
        }
    }

    // Two POSTs the filter refuses with 401: with a CSR body (Envoy then closes the connection,
    // because the answer goes out before the request body was read: every request pays a TLS
    // handshake), and with an empty body (the connection is kept alive). wrk adds
    // Content-Length itself.
    let lua_body: String = csr_b64
        .chars()
        .map(|c| match c {
            '\r' => "\\r".to_string(),
            '\n' => "\\n".to_string(),
            c => c.to_string(),
        })
        .collect();
    let post_script = |name: &str, body: &str| -> anyhow::Result<PathBuf> {
        let path = work.join(name);
        std::fs::write(
            &path,
            format!(
                "wrk.method = \"POST\"\n\
                 wrk.body = \"{body}\"\n\
                 wrk.headers[\"Content-Type\"] = \"application/pkcs10\"\n\
                 wrk.headers[\"Content-Transfer-Encoding\"] = \"base64\"\n"
            ),
        )?;
        Ok(path)
    };
    let with_body = post_script("post-csr.lua", &lua_body)?;
    let empty_body = post_script("post-empty.lua", "")?;

    let mut json_runs = serde_json::Map::new();
    for (case, key, op, script) in [
        ("cacerts (filter cache)", "cacerts", "cacerts", None),
        (
            "POST simpleenroll + CSR, no client cert (401)",
            "reject_401_with_body",
            "simpleenroll",
            Some(with_body.as_path()),
        ),
        (
            "POST simpleenroll, empty, no client cert (401)",
            "reject_401_empty_body",
            "simpleenroll",
            Some(empty_body.as_path()),
        ),
    ] {
        eprintln!("xtask: wrk {case} …");
        let mut sums: [Vec<WrkRun>; 3] = Default::default();
        for _ in 0..opts.rounds {
            for (i, (label, port)) in envoy.ports.iter().enumerate() {
                let url = format!("https://127.0.0.1:{port}/.well-known/est/{op}");
                let r = wrk(&url, script, opts, &envoy, label)?;
                let expect_non_2xx = op != "cacerts";
                if (r.non_2xx > 0) != expect_non_2xx || (expect_non_2xx && r.non_2xx != r.requests)
                {
                    bail!(
                        "{label} {op}: {} of {} answers had an unexpected status class",
                        r.non_2xx,
                        r.requests
                    );
                }
                sums[i].push(r);
            }
        }
        let mean =
            |v: &[WrkRun], f: fn(&WrkRun) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
        let rps: Vec<f64> = sums.iter().map(|v| mean(v, |r| r.rps)).collect();
        let p99: Vec<f64> = sums.iter().map(|v| mean(v, |r| r.p99_ms)).collect();
        let mut case_json = serde_json::Map::new();
        for (i, (label, _)) in envoy.ports.iter().enumerate() {
            let cx: f64 = sums[i].iter().map(|r| r.connections_opened).sum();
            let reqs: u64 = sums[i].iter().map(|r| r.requests).sum();
            let errs: u64 = sums[i].iter().map(|r| r.socket_errors).sum();
            report.row(
                format!("envoy {case}: {label}"),
                format!("{:.0} req/s", rps[i]),
                format!(
                    "p99 {:.2} ms; Envoy CPU {:.0}%; {reqs} requests on {cx:.0} connections; socket errors {errs}",
                    p99[i],
                    sums[i].iter().map(|r| r.envoy_cpu_pct).sum::<f64>() / sums[i].len() as f64
                ),
            );
            case_json.insert(
                (*label).to_string(),
                json!({
                    "rps_mean": rps[i],
                    "p99_ms_mean": p99[i],
                    "runs": sums[i].iter().map(|r| json!({
                        "rps": r.rps, "p99_ms": r.p99_ms, "requests": r.requests,
                        "connections_opened": r.connections_opened, "socket_errors": r.socket_errors,
                        "envoy_cpu_pct": r.envoy_cpu_pct,
                    })).collect::<Vec<_>>(),
                }),
            );
        }
        let vs_noop = rps[0] / rps[1];
        let vs_direct = rps[0] / rps[2];
        report.row(
            format!("envoy {case}: estuary / noop"),
            format!("{vs_noop:.2}x"),
            format!(
                "goal >= 0.90x; estuary / direct {vs_direct:.2}x; noop / direct {:.2}x",
                rps[1] / rps[2]
            ),
        );
        case_json.insert("estuary_over_noop".into(), json!(vs_noop));
        case_json.insert("estuary_over_direct".into(), json!(vs_direct));
        case_json.insert("noop_over_direct".into(), json!(rps[1] / rps[2]));
        json_runs.insert(key.to_string(), Value::Object(case_json));
    }
    report.json["envoy"] = Value::Object(json_runs);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CPU time per process, to tell which one limits a phase

/// Linux USER_HZ (the unit of utime/stime in /proc/PID/stat) on x86-64.
const TICKS_PER_S: f64 = 100.0;

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The first process whose command line contains `needle`.
fn pid_by_cmdline(needle: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd: String = String::from_utf8_lossy(&cmd).replace('\0', " ");
        cmd.contains(needle).then_some(pid)
    })
}

/// The dev stack's processes (and this one), found by their command lines.
struct CpuProbe {
    procs: Vec<(String, u32)>,
}

impl CpuProbe {
    fn find(dev: &DevStack) -> Self {
        let mut procs = vec![("bench client".to_string(), std::process::id())];
        let wanted = [
            (
                "envoy".to_string(),
                dev.envoy.config_path.display().to_string(),
            ),
            (
                "pebble".to_string(),
                dev.stack.pebble.dir().display().to_string(),
            ),
            (
                "named".to_string(),
                dev.stack.bind.dir().display().to_string(),
            ),
            (
                "redis".to_string(),
                format!("--port {} ", dev.stack.redis.addr.port()),
            ),
        ];
        for (i, cp) in dev.control_planes.iter().enumerate() {
            if let Some(pid) = pid_by_cmdline(&cp.config.display().to_string()) {
                procs.push((format!("control plane {i}"), pid));
            }
        }
        for (name, needle) in wanted {
            if let Some(pid) = pid_by_cmdline(&needle) {
                procs.push((name, pid));
            }
        }
        Self { procs }
    }

    fn snapshot(&self) -> (Instant, Vec<u64>) {
        let t = self
            .procs
            .iter()
            .map(|(_, pid)| cpu_ticks(*pid).unwrap_or(0))
            .collect();
        (Instant::now(), t)
    }

    /// CPU use between two snapshots, in % of one core: a note and JSON.
    fn since(&self, before: &(Instant, Vec<u64>)) -> (String, Value) {
        let (t1, after) = self.snapshot();
        let wall = (t1 - before.0).as_secs_f64().max(1e-3);
        let mut note = Vec::new();
        let mut js = serde_json::Map::new();
        for (i, (name, _)) in self.procs.iter().enumerate() {
            let d = after[i].saturating_sub(before.1[i]) as f64 / TICKS_PER_S;
            let pct = 100.0 * d / wall;
            note.push(format!("{name} {pct:.0}%"));
            js.insert(name.clone(), json!(pct));
        }
        (
            format!("CPU (% of one core): {}", note.join(", ")),
            Value::Object(js),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Enrolments

/// A P-256 key and a DER CSR for `name` (subject CN and DNS SAN = name).
fn make_csr(name: &str) -> anyhow::Result<(rcgen::KeyPair, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// One simulated device.
struct Pledge {
    name: String,
    tls: Arc<ClientConfig>,
    csr_b64: Bytes,
    conn: Option<SendRequest<Full<Bytes>>>,
    /// The first 200 answer, to compare the cached ones with.
    issued: Option<Bytes>,
}

fn tls_config(server_ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(server_ca)? {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}

async fn connect(
    tls: Arc<ClientConfig>,
    addr: SocketAddr,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The EST endpoint being exercised.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    authority: String,
}

/// One POST of the pledge's CSR: (status, Retry-After seconds, body).
async fn post_csr(
    p: &mut Pledge,
    t: &Target,
    fresh: bool,
) -> anyhow::Result<(u16, Option<u64>, Bytes)> {
    if fresh || p.conn.as_ref().is_none_or(|c| c.is_closed()) {
        p.conn = Some(connect(Arc::clone(&p.tls), t.addr).await?);
    }
    let Some(sender) = p.conn.as_mut() else {
        bail!("no connection");
    };
    sender.ready().await?;
    let req = Request::post("/.well-known/est/simpleenroll")
        .header(HOST, &t.authority)
        .header(CONTENT_TYPE, "application/pkcs10")
        .header("content-transfer-encoding", "base64")
        .body(Full::new(p.csr_b64.clone()))?;
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            p.conn = None;
            return Err(e.into());
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let body = resp.into_body().collect().await?.to_bytes();
    if fresh {
        p.conn = None;
    }
    Ok((status, retry_after, body))
}

/// Outcome of one pledge's enrolment.
struct Enrolled {
    latency: Duration,
    accepted_202: u32,
}

/// Enrols until 200, following 202 Retry-After; transport errors are retried (3 times).
async fn enrol(p: &mut Pledge, t: &Target) -> anyhow::Result<Enrolled> {
    let start = Instant::now();
    let mut accepted_202 = 0;
    let mut transport_errors = 0;
    loop {
        if start.elapsed() > Duration::from_secs(180) {
            bail!("{}: no certificate within 180 s", p.name);
        }
        match post_csr(p, t, false).await {
            Ok((200, _, body)) => {
                p.issued = Some(body);
                return Ok(Enrolled {
                    latency: start.elapsed(),
                    accepted_202,
                });
            }
            Ok((202, ra, _)) => {
                accepted_202 += 1;
                let wait = ra.with_context(|| format!("{}: 202 without Retry-After", p.name))?;
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Ok((status, _, body)) => {
                bail!(
                    "{}: HTTP {status}: {}",
                    p.name,
                    String::from_utf8_lossy(&body).trim()
                );
            }
            Err(e) if transport_errors < 3 => {
                transport_errors += 1;
                eprintln!("xtask: {}: {e:#}; retrying", p.name);
            }
            Err(e) => return Err(e.context(format!("{}: enrolment", p.name))),
        }
    }
}

/// Runs `f(i)` for i in 0..n with `workers` tasks; results in index order.
async fn pool<R, F, Fut>(n: usize, workers: usize, f: F) -> anyhow::Result<Vec<R>>
where
    R: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.min(n).max(1) {
        let f = Arc::clone(&f);
        let next = Arc::clone(&next);
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                out.push((i, f(i).await));
            }
            out
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

fn percentile(sorted_ms: &[f64], q: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((q * sorted_ms.len() as f64).ceil() as usize).clamp(1, sorted_ms.len());
    sorted_ms[rank - 1]
}

fn latency_stats(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "p50_ms": percentile(&ms, 0.50),
        "p90_ms": percentile(&ms, 0.90),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn metrics(dev: &DevStack) -> anyhow::Result<String> {
    let mut all = String::new();
    for cp in &dev.control_planes {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(cp.url("/metrics"))
            .output()?;
        if !o.status.success() {
            bail!("metrics: {}", String::from_utf8_lossy(&o.stderr));
        }
        all.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    Ok(all)
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    issued: f64,
    cached: f64,
    pending: f64,
    failed: f64,
    dns_updates: f64,
    orders_valid: f64,
}

fn counters(dev: &DevStack) -> anyhow::Result<Counters> {
    let m = metrics(dev)?;
    let e = |r: &str| {
        metric_value(
            &m,
            &format!("estuary_enrollments_total{{protocol=\"est\",result=\"{r}\"}}"),
        )
    };
    Ok(Counters {
        issued: e("issued"),
        cached: e("cached"),
        pending: e("pending"),
        failed: e("failed"),
        dns_updates: metric_value(&m, "estuary_dns_updates_total"),
        orders_valid: metric_value(&m, "estuary_acme_orders_total{result=\"valid\"}"),
    })
}

fn diff(a: Counters, b: Counters) -> Counters {
    Counters {
        issued: b.issued - a.issued,
        cached: b.cached - a.cached,
        pending: b.pending - a.pending,
        failed: b.failed - a.failed,
        dns_updates: b.dns_updates - a.dns_updates,
        orders_valid: b.orders_valid - a.orders_valid,
    }
}

async fn enrol_bench(
    dev: &DevStack,
    work: &Path,
    opts: &Opts,
    report: &mut Report,
) -> anyhow::Result<()> {
    let base = dev
        .envoy
        .base_url
        .trim_start_matches("https://")
        .to_string();
    let target = Target {
        addr: base.parse().context("the Envoy address")?,
        authority: base,
    };
    let ca = dev.pki.server_ca.cert_path.clone();
    let run_id = format!(
        "{:06x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() & 0xff_ffff)
            .unwrap_or(0)
    );

    // Warm-up: the control plane creates its ACME account on the first enrolment; that is
    // not what is measured.
    eprintln!("xtask: warm-up enrolment (ACME account creation) …");
    let mut warm = make_pledge(&dev.pki.manufacturer, work, &ca, &format!("WARM-{run_id}"))?;
    enrol(&mut warm, &target)
        .await
        .context("warm-up enrolment")?;

    eprintln!("xtask: minting {} IDevIDs and CSRs …", opts.pledges);
    let mut pledges = Vec::with_capacity(opts.pledges);
    for i in 0..opts.pledges {
        pledges.push(tokio::sync::Mutex::new(make_pledge(
            &dev.pki.manufacturer,
            work,
            &ca,
            &format!("BENCH-{run_id}-{i:04}"),
        )?));
    }
    let pledges = Arc::new(pledges);

    // --- first enrolments (cache misses) ---
    eprintln!(
        "xtask: {} enrolments at {} concurrent through Envoy …",
        opts.pledges, opts.concurrency
    );
    let probe = CpuProbe::find(dev);
    let c0 = counters(dev)?;
    let cpu0 = probe.snapshot();
    let t0 = Instant::now();
    let results = {
        let pledges = Arc::clone(&pledges);
        let target = target.clone();
        pool(opts.pledges, opts.concurrency, move |i| {
            let pledges = Arc::clone(&pledges);
            let target = target.clone();
            async move {
                let mut p = pledges[i].lock().await;
                enrol(&mut p, &target).await
            }
        })
        .await?
    };
    let miss_wall = t0.elapsed();
    let (miss_cpu, miss_cpu_json) = probe.since(&cpu0);
    let c1 = counters(dev)?;
    let mut miss_ms = Vec::new();
    let mut accepted = 0;
    for r in results {
        let e = r?;
        miss_ms.push(ms(e.latency));
        accepted += e.accepted_202;
    }
    let miss_rate = opts.pledges as f64 / miss_wall.as_secs_f64();
    let miss_lat = latency_stats(miss_ms);
    let d1 = diff(c0, c1);

    // --- identical CSR again, kept-alive connection (cache hits) ---
    eprintln!(
        "xtask: identical-CSR re-posts ({} per pledge) …",
        opts.repeats
    );
    let n_hits = opts.pledges * opts.repeats;
    let cpu1 = probe.snapshot();
    let t1 = Instant::now();
    let hits = {
        let pledges = Arc::clone(&pledges);
        let target = target.clone();
        let n = opts.pledges;
        pool(n_hits, opts.concurrency, move |i| {
            let pledges = Arc::clone(&pledges);
            let target = target.clone();
            async move { repost(&pledges[i % n], &target, false).await }
        })
        .await?
    };
    let hit_wall = t1.elapsed();
    let (hit_cpu, hit_cpu_json) = probe.since(&cpu1);
    let c2 = counters(dev)?;
    let hit_ms: Vec<f64> = hits.into_iter().collect::<anyhow::Result<_>>()?;
    let hit_rate = n_hits as f64 / hit_wall.as_secs_f64();
    let hit_lat = latency_stats(hit_ms);
    let d2 = diff(c1, c2);

    // --- identical CSR again, a new TLS connection per request ---
    eprintln!("xtask: identical-CSR re-posts on new TLS connections …");
    let cpu2 = probe.snapshot();
    let t2 = Instant::now();
    let fresh = {
        let pledges = Arc::clone(&pledges);
        let target = target.clone();
        pool(opts.pledges, opts.concurrency, move |i| {
            let pledges = Arc::clone(&pledges);
            let target = target.clone();
            async move { repost(&pledges[i], &target, true).await }
        })
        .await?
    };
    let fresh_wall = t2.elapsed();
    let (fresh_cpu, fresh_cpu_json) = probe.since(&cpu2);
    let fresh_ms: Vec<f64> = fresh.into_iter().collect::<anyhow::Result<_>>()?;
    let fresh_rate = opts.pledges as f64 / fresh_wall.as_secs_f64();
    let fresh_lat = latency_stats(fresh_ms);
    drop(pledges);

    // --- the bare instant-acme loop on the same Pebble and BIND ---
    eprintln!(
        "xtask: bare instant-acme loop: {} certificates at {} concurrent …",
        opts.pledges, opts.concurrency
    );
    let stack = &dev.stack;
    let cpu3 = probe.snapshot();
    let mut base = baseline(
        dev,
        &stack.pebble.directory_url,
        &stack.pebble.tls_ca_pem,
        &format!("{run_id}a"),
        opts,
    )
    .await;
    let mut fresh_pebble_note = "";
    let _fresh_pebble;
    if let Err(e) = &base {
        // Pebble 2.4's in-memory store can deadlock under concurrent orders (seen here: every
        // handler waiting on its RWMutex). Measure the baseline on a fresh Pebble then, and say so.
        eprintln!("xtask: the baseline on the dev stack's Pebble failed ({e:#}); retrying on a fresh Pebble");
        let pebble = estuary_tests::pebble::Pebble::start(stack.bind.addr)?;
        base = baseline(
            dev,
            &pebble.directory_url,
            &pebble.tls_ca_pem,
            &format!("{run_id}b"),
            opts,
        )
        .await;
        _fresh_pebble = pebble;
        fresh_pebble_note = " [on a FRESH Pebble: the dev stack's Pebble stalled]";
    }
    let base = base?;
    let (base_cpu, base_cpu_json) = probe.since(&cpu3);

    let p = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let dns_per = d1.dns_updates / d1.issued.max(1.0);
    report.row(
        "enrolments/s through Envoy (cache miss)",
        format!("{miss_rate:.1}/s"),
        format!(
            "{} pledges at {}; p50 {:.0} ms, p99 {:.0} ms; {accepted} answers were 202",
            opts.pledges,
            opts.concurrency,
            p(&miss_lat, "p50_ms"),
            p(&miss_lat, "p99_ms")
        ),
    );
    report.row(
        "bare instant-acme issuance/s",
        format!("{:.1}/s", base.rate),
        format!(
            "p50 {:.0} ms, p99 {:.0} ms; {} DNS UPDATEs, {} order retries{fresh_pebble_note}",
            p(&base.latency, "p50_ms"),
            p(&base.latency, "p99_ms"),
            base.dns_updates,
            base.retries
        ),
    );
    report.row("  during the enrolments", "", miss_cpu);
    report.row("  during the bare loop", "", base_cpu);
    report.row(
        "enrolments / bare loop",
        format!("{:.2}x", miss_rate / base.rate),
        "goal >= 0.80x",
    );
    report.row(
        "identical CSR, kept-alive conn (cache hit)",
        format!("{hit_rate:.0}/s"),
        format!(
            "{:.0}x the miss rate (goal >= 20x); p50 {:.2} ms, p99 {:.2} ms (goal < 10 ms)",
            hit_rate / miss_rate,
            p(&hit_lat, "p50_ms"),
            p(&hit_lat, "p99_ms")
        ),
    );
    report.row("  during the kept-alive re-posts", "", hit_cpu);
    report.row(
        "identical CSR, new TLS conn each (cache hit)",
        format!("{fresh_rate:.0}/s"),
        format!(
            "{:.0}x the miss rate; p50 {:.2} ms, p99 {:.2} ms",
            fresh_rate / miss_rate,
            p(&fresh_lat, "p50_ms"),
            p(&fresh_lat, "p99_ms")
        ),
    );
    report.row("  during the new-connection re-posts", "", fresh_cpu);
    report.row(
        "DNS UPDATE messages per enrolment",
        format!("{dns_per:.3}"),
        format!(
            "{} UPDATEs / {} issued (metrics: {} cached, {} pending, {} failed, {} valid orders)",
            d1.dns_updates, d1.issued, d1.cached, d1.pending, d1.failed, d1.orders_valid
        ),
    );
    report.json["enrolment"] = json!({
        "miss": {
            "rate_per_s": miss_rate, "wall_s": miss_wall.as_secs_f64(), "latency": miss_lat,
            "answers_202": accepted, "cpu_pct": miss_cpu_json,
            "metrics_delta": {"issued": d1.issued, "cached": d1.cached, "pending": d1.pending,
                "failed": d1.failed, "dns_updates": d1.dns_updates, "orders_valid": d1.orders_valid},
        },
        "baseline_instant_acme": {
            "rate_per_s": base.rate, "wall_s": base.wall_s, "latency": base.latency,
            "dns_updates": base.dns_updates, "order_retries": base.retries,
            "fresh_pebble": !fresh_pebble_note.is_empty(), "cpu_pct": base_cpu_json,
        },
        "miss_over_baseline": miss_rate / base.rate,
        "hit_keepalive": {
            "requests": n_hits, "rate_per_s": hit_rate, "latency": hit_lat, "cpu_pct": hit_cpu_json,
            "over_miss_rate": hit_rate / miss_rate,
            "metrics_delta": {"cached": d2.cached, "issued": d2.issued, "dns_updates": d2.dns_updates},
        },
        "hit_new_connection": {
            "requests": opts.pledges, "rate_per_s": fresh_rate, "latency": fresh_lat, "cpu_pct": fresh_cpu_json,
            "over_miss_rate": fresh_rate / miss_rate,
        },
        "dns_updates_per_enrolment": dns_per,
    });
    if d2.issued > 0.0 || d2.dns_updates > 0.0 {
        bail!(
            "identical CSRs caused {} issuances and {} DNS UPDATEs: not cache hits",
            d2.issued,
            d2.dns_updates
        );
    }
    Ok(())
}

fn make_pledge(ca: &Ca, dir: &Path, server_ca: &Path, serial: &str) -> anyhow::Result<Pledge> {
    let id = ca.issue_idevid(dir, serial, serial)?;
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    let (_key, der) = make_csr(&name)?;
    Ok(Pledge {
        tls: tls_config(server_ca, &id.cert_path, &id.key_path)?,
        csr_b64: Bytes::from(estuary_proto::base64::encode(&der)),
        name,
        conn: None,
        issued: None,
    })
}

/// Posts the pledge's CSR once more; expects 200 with the certificate of the first enrolment.
async fn repost(p: &tokio::sync::Mutex<Pledge>, t: &Target, fresh: bool) -> anyhow::Result<f64> {
    let mut p = p.lock().await;
    let start = Instant::now();
    let (status, _, body) = post_csr(&mut p, t, fresh).await?;
    let took = ms(start.elapsed());
    if status != 200 {
        bail!(
            "{}: identical CSR got HTTP {status}: {}",
            p.name,
            String::from_utf8_lossy(&body).trim()
        );
    }
    if p.issued.as_ref() != Some(&body) {
        bail!(
            "{}: identical CSR got a different answer than the first time",
            p.name
        );
    }
    Ok(took)
}

struct Baseline {
    rate: f64,
    wall_s: f64,
    latency: Value,
    dns_updates: u64,
    retries: u64,
}

/// The bare loop: instant-acme + RFC 2136 through the control plane's own `DnsUpdater`, one
/// order per certificate, the control plane's retry policy, no Redis, no Envoy, no EST.
async fn baseline(
    dev: &DevStack,
    directory_url: &str,
    tls_ca: &Path,
    run_id: &str,
    opts: &Opts,
) -> anyhow::Result<Baseline> {
    let stack = &dev.stack;
    let updates = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&updates);
    let dns = DnsUpdater::new(DnsConfig {
        server: stack.bind.addr,
        zone: stack.bind.zone.clone(),
        key_name: stack.bind.key_name.clone(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret: TsigSecret::from_base64(&stack.bind.secret_b64)
            .map_err(|_| anyhow::anyhow!("the BIND key is not base64"))?,
        timeout_ms: 2000,
        ttl: 60,
        sweep_interval_s: 30,
    })?
    .with_update_counter(Arc::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    let (account, _creds) = Account::builder_with_root(tls_ca)?
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.to_string(),
            None,
        )
        .await?;
    let mut csrs = Vec::with_capacity(opts.pledges);
    for i in 0..opts.pledges {
        let name = format!("base-{run_id}-{i:04}.{DEV_PARENT}");
        let (_k, der) = make_csr(&name)?;
        csrs.push((name, der));
    }
    let shared = Arc::new((account, dns, csrs));
    let retries = Arc::new(AtomicU64::new(0));
    // Set when one issuance took longer than any healthy one could: the CA has stalled, and
    // the remaining issuances are skipped instead of each waiting out its own timeout.
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let results = {
        let shared = Arc::clone(&shared);
        let retries = Arc::clone(&retries);
        let stalled = Arc::clone(&stalled);
        pool(opts.pledges, opts.concurrency, move |i| {
            let shared = Arc::clone(&shared);
            let retries = Arc::clone(&retries);
            let stalled = Arc::clone(&stalled);
            async move {
                let (account, dns, csrs) = &*shared;
                let (name, der) = &csrs[i];
                let start = Instant::now();
                let mut attempt = 1;
                loop {
                    if stalled.load(Ordering::Relaxed) {
                        bail!("skipped: the ACME CA stalled");
                    }
                    let once = tokio::time::timeout(
                        Duration::from_secs(60),
                        issue_bare(account, dns, name, der),
                    )
                    .await;
                    let Ok(once) = once else {
                        stalled.store(true, Ordering::Relaxed);
                        bail!("{name}: no certificate within 60 s: the ACME CA stalled");
                    };
                    match once {
                        Ok(()) => return Ok(ms(start.elapsed())),
                        Err(e) if attempt < 3 => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            eprintln!("xtask: baseline {name}: {e:#}; new order");
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                            attempt += 1;
                        }
                        Err(e) => return Err(e.context(format!("baseline {name}"))),
                    }
                }
            }
        })
        .await?
    };
    let wall = t0.elapsed();
    let lat: Vec<f64> = results.into_iter().collect::<anyhow::Result<_>>()?;
    Ok(Baseline {
        rate: opts.pledges as f64 / wall.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        latency: latency_stats(lat),
        dns_updates: updates.load(Ordering::Relaxed),
        retries: retries.load(Ordering::Relaxed),
    })
}

async fn issue_bare(
    account: &Account,
    dns: &DnsUpdater,
    name: &str,
    csr_der: &[u8],
) -> anyhow::Result<()> {
    // The control plane's policy (acme.rs `retry_policy`, poll_initial_ms = 20 in the dev config).
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(20))
        .backoff(1.5)
        .timeout(Duration::from_secs(30));
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut records = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a?;
            if a.status != AuthorizationStatus::Pending {
                continue;
            }
            let ident = a.identifier().to_string();
            let mut ch = a
                .challenge(ChallengeType::Dns01)
                .with_context(|| format!("no dns-01 challenge for {ident}"))?;
            let rec = TxtRecord::new(
                format!("_acme-challenge.{ident}"),
                ch.key_authorization().dns_value(),
            );
            dns.publish(std::slice::from_ref(&rec)).await?;
            records.push(rec);
            ch.set_ready().await?;
        }
    }
    let ready = order.poll_ready(&retry).await;
    let cleanup = async {
        if let Err(e) = dns.remove(&records).await {
            eprintln!("xtask: baseline: removing {name}'s record: {e}");
        }
    };
    let status = match ready {
        Ok(s) => s,
        Err(e) => {
            cleanup.await;
            return Err(e.into());
        }
    };
    if status != OrderStatus::Ready {
        cleanup.await;
        bail!("order for {name} is {status:?}");
    }
    // As the control plane does: remove the record while the CA finalizes.
    let (issued, ()) = tokio::join!(
        async {
            order.finalize_csr(csr_der).await?;
            order.poll_certificate(&retry).await
        },
        cleanup
    );
    let chain = issued?;
    if !chain.contains("BEGIN CERTIFICATE") {
        bail!("no certificate for {name}");
    }
    Ok(())
}
