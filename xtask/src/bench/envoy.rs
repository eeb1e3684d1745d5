//! Envoy requests/s: wrk against three listeners of one Envoy (the Estuary filter, the no-op
//! wasm filter, no wasm filter), checked first to answer alike.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use estuary_tests::dev_stack::{filter_config, DevStack};
use estuary_tests::stack::DEV_PARENT;
use estuary_tests::util::{free_port, tail, KillOnDrop, TempDir};
use serde_json::{json, Value};

use super::enrol::make_csr;
use super::opts::Opts;
use super::probe::{admin_stat, cpu_ticks, TICKS_PER_S};
use super::report::{median, Report};
use crate::{cargo, root, run, WASM_TARGET};

/// Builds `target/wasm32-wasip1/wasm-release/estuary_bench_noop_filter.wasm`.
pub(super) fn build_noop_wasm() -> anyhow::Result<PathBuf> {
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

pub(super) fn envoy_bench(
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
        // The median of the rounds: one disturbed round does not move it.
        let rps: Vec<f64> = sums
            .iter()
            .map(|v| median(v.iter().map(|r| r.rps)))
            .collect();
        let p99: Vec<f64> = sums
            .iter()
            .map(|v| median(v.iter().map(|r| r.p99_ms)))
            .collect();
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
                    "rps_median": rps[i],
                    "p99_ms_median": p99[i],
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
