//! A real Prometheus (Debian's `prometheus` package) on loopback: it scrapes the control
//! planes every second and loads rule files, so the dashboard's and the alerts' expressions are
//! evaluated by the program operators run, not by a parser of ours.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::util::{find_program, free_port, tail, wait_tcp, KillOnDrop, TempDir, STARTUP_DEADLINE};

/// One Prometheus server and its scratch directory.
pub struct Prometheus {
    /// `127.0.0.1:P`, its HTTP API.
    pub addr: SocketAddr,
    log: PathBuf,
    child: KillOnDrop,
    dir: TempDir,
}

/// `promtool check rules FILE`: Ok with promtool's report, or Err with it.
pub fn check_rules(file: &Path) -> anyhow::Result<String> {
    let promtool = find_program("promtool", "prometheus")?;
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .context("running promtool")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("promtool check rules {}:\n{report}", file.display());
    }
    Ok(report)
}

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of every `target` each second (job `estuary`) and
    /// evaluating `rule_files` each second.
    pub fn start(targets: &[SocketAddr], rule_files: &[PathBuf]) -> anyhow::Result<Self> {
        let binary = find_program("prometheus", "prometheus")?;
        let dir = TempDir::new("prometheus")?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|f| format!("\"{}\"", f.display()))
            .collect();
        // YAML flow style: the strings are socket addresses and paths, nothing to escape.
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: estuary\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = dir.path().join("prometheus.log");
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path());
        let child = KillOnDrop::spawn(cmd, &log)?;
        let mut p = Prometheus {
            addr,
            log,
            child,
            dir,
        };
        wait_tcp(addr, STARTUP_DEADLINE, "prometheus").map_err(|e| p.with_log(e))?;
        p.wait_until(STARTUP_DEADLINE, "ready", |p| {
            Ok(p.get("/-/ready").map(|_| true).unwrap_or(false))
        })?;
        Ok(p)
    }

    /// Where its files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn with_log(&mut self, e: anyhow::Error) -> anyhow::Error {
        let running = self.child.is_running();
        anyhow::anyhow!(
            "{e}\nprometheus {}; its log:\n{}",
            if running { "runs" } else { "exited" },
            tail(&self.log, 20)
        )
    }

    fn get(&self, path_and_query: &str) -> anyhow::Result<String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--max-time", "10"])
            .arg(format!("http://{}{path_and_query}", self.addr))
            .output()
            .context("running curl")?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "GET {path_and_query}: {}{body}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(body)
    }

    /// An instant query (`/api/v1/query`): the result vector, or the error Prometheus gave.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-G", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(format!("http://{}/api/v1/query", self.addr))
            .output()
            .context("running curl")?;
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "query {expr}: not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        if v["status"] != "success" {
            bail!(
                "query {expr}: {} {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or("?")
            );
        }
        match &v["data"]["result"] {
            Value::Array(a) => Ok(a.clone()),
            // A scalar or string result: one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The value of a one-series query, as a number.
    pub fn value(&self, expr: &str) -> anyhow::Result<f64> {
        let r = self.query(expr)?;
        let [series] = r.as_slice() else {
            bail!("query {expr}: {} series, want 1: {r:?}", r.len());
        };
        series["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("query {expr}: no value in {series}"))
    }

    /// The loaded rules (`/api/v1/rules`), each as Prometheus reports it: `name`, `query`,
    /// `health`, `lastError`, …
    pub fn rules(&self) -> anyhow::Result<Vec<Value>> {
        let v: Value = serde_json::from_str(&self.get("/api/v1/rules")?)?;
        let mut rules = Vec::new();
        for g in v["data"]["groups"].as_array().into_iter().flatten() {
            rules.extend(g["rules"].as_array().into_iter().flatten().cloned());
        }
        Ok(rules)
    }

    /// Polls `ok` every 250 ms until it holds, or fails after `within` with Prometheus's log.
    pub fn wait_until(
        &mut self,
        within: Duration,
        what: &str,
        mut ok: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            match ok(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = Some(e),
            }
            if Instant::now() > deadline {
                let e = anyhow::anyhow!(
                    "prometheus: not {what} within {within:?} (last error: {last:?})"
                );
                return Err(self.with_log(e));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
