//! What the machine and the stack's processes did meanwhile: CPU per process (/proc), the
//! load average, Envoy admin counters, the control planes' `/metrics`.
use std::process::Command;
use std::time::Instant;

use anyhow::bail;
use estuary_tests::dev_stack::DevStack;
use estuary_tests::stack::metric_value;
use serde_json::{json, Value};

/// Linux USER_HZ (the unit of utime/stime in /proc/PID/stat) on x86-64.
pub(super) const TICKS_PER_S: f64 = 100.0;

pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
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
pub(super) struct CpuProbe {
    procs: Vec<(String, u32)>,
}

impl CpuProbe {
    pub(super) fn find(dev: &DevStack) -> Self {
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

    pub(super) fn snapshot(&self) -> (Instant, Vec<u64>) {
        let t = self
            .procs
            .iter()
            .map(|(_, pid)| cpu_ticks(*pid).unwrap_or(0))
            .collect();
        (Instant::now(), t)
    }

    /// CPU use between two snapshots, in % of one core: a note and JSON.
    pub(super) fn since(&self, before: &(Instant, Vec<u64>)) -> (String, Value) {
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

/// The first three fields of /proc/loadavg.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The 1-minute load average.
pub(super) fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn admin_stat(admin: &str, name: &str) -> f64 {
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
pub(super) struct Counters {
    pub(super) issued: f64,
    pub(super) cached: f64,
    pub(super) pending: f64,
    pub(super) failed: f64,
    pub(super) dns_updates: f64,
    pub(super) orders_valid: f64,
}

pub(super) fn counters(dev: &DevStack) -> anyhow::Result<Counters> {
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

pub(super) fn diff(a: Counters, b: Counters) -> Counters {
    Counters {
        issued: b.issued - a.issued,
        cached: b.cached - a.cached,
        pending: b.pending - a.pending,
        failed: b.failed - a.failed,
        dns_updates: b.dns_updates - a.dns_updates,
        orders_valid: b.orders_valid - a.orders_valid,
    }
}
