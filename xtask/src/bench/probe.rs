//! What the machine and the stack's processes did meanwhile: CPU and memory per process
//! (/proc), the load average, Envoy admin counters, the control planes' `/metrics`, Redis memory
//! (`INFO memory`, `MEMORY USAGE` through redis-cli).
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
pub(super) fn pid_by_cmdline(needle: &str) -> Option<u32> {
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

/// The control planes' process ids, in the stack's order (one per replica found).
pub(super) fn control_plane_pids(dev: &DevStack) -> Vec<u32> {
    dev.control_planes
        .iter()
        .filter_map(|cp| pid_by_cmdline(&cp.config.display().to_string()))
        .collect()
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, …) in bytes.
pub(super) fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name != field {
            return None;
        }
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// VmRSS and VmHWM (peak RSS) of a process, in bytes.
pub(super) fn rss_hwm(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((
        status_field_bytes(&status, "VmRSS")?,
        status_field_bytes(&status, "VmHWM")?,
    ))
}

/// One numeric field (`used_memory`, …) of a Redis `INFO` answer.
pub(super) fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        let (name, value) = l.trim_end_matches('\r').split_once(':')?;
        (name == field).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The kind of a control-plane Redis key: the segment after the prefix (`<prefix>:cert:<sha>`,
/// `<prefix>:cert:{<sha>}` → `cert`); a key with no `:` is its own kind.
pub(super) fn key_kind(key: &str) -> &str {
    let mut parts = key.split(':');
    let first = parts.next().unwrap_or(key);
    parts.next().unwrap_or(first)
}

/// How many keys of each [`key_kind`].
pub(super) fn count_kinds(keys: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for k in keys {
        *m.entry(key_kind(k).to_string()).or_default() += 1;
    }
    m
}

/// The stack's Redis through redis-cli (loopback, no password in the dev stack).
pub(super) struct RedisCli {
    port: u16,
}

impl RedisCli {
    pub(super) fn of(dev: &DevStack) -> Self {
        Self {
            port: dev.stack.redis.addr.port(),
        }
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()?;
        if !o.status.success() {
            bail!(
                "redis-cli {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `INFO memory` `used_memory`, in bytes.
    pub(super) fn used_memory(&self) -> anyhow::Result<u64> {
        let info = self.run(&["INFO", "memory"])?;
        info_field(&info, "used_memory")
            .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO memory"))
    }

    /// `INFO stats` `total_commands_processed`: every command Redis ran (a script counts as
    /// one, each command inside it too; a pipeline as its commands; the redis-cli `INFO` that
    /// reads it as one).
    pub(super) fn commands_processed(&self) -> anyhow::Result<u64> {
        let info = self.run(&["INFO", "stats"])?;
        info_field(&info, "total_commands_processed")
            .ok_or_else(|| anyhow::anyhow!("no total_commands_processed in INFO stats"))
    }

    /// Every key matching `pattern` (SCAN, so it works while the stack runs).
    pub(super) fn keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .run(&["--scan", "--pattern", pattern])?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// `DBSIZE`.
    pub(super) fn dbsize(&self) -> anyhow::Result<u64> {
        self.run(&["DBSIZE"])?
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("DBSIZE is not a number"))
    }

    /// `MEMORY USAGE key SAMPLES 0` (the whole value), in bytes.
    pub(super) fn memory_usage(&self, key: &str) -> anyhow::Result<u64> {
        self.run(&["MEMORY", "USAGE", key, "SAMPLES", "0"])?
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("MEMORY USAGE {key}: not a number"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_fields_in_bytes() {
        let status = "Name:\testuary-control\nVmPeak:\t  812340 kB\nVmHWM:\t   61236 kB\n\
                      VmRSS:\t   48120 kB\nThreads:\t5\n";
        assert_eq!(status_field_bytes(status, "VmRSS"), Some(48120 * 1024));
        assert_eq!(status_field_bytes(status, "VmHWM"), Some(61236 * 1024));
        // No unit: the number itself.
        assert_eq!(status_field_bytes(status, "Threads"), Some(5));
        // A field whose name only starts the same is not the field.
        assert_eq!(status_field_bytes(status, "VmRS"), None);
        assert_eq!(status_field_bytes(status, "VmSwap"), None);
        assert_eq!(status_field_bytes("VmRSS:\tmany kB\n", "VmRSS"), None);
        assert_eq!(status_field_bytes("VmRSS:\t12 MB\n", "VmRSS"), None);
    }

    #[test]
    fn redis_key_kinds_in_both_layouts() {
        assert_eq!(key_kind("estuary:cert:ab12"), "cert");
        assert_eq!(key_kind("estuary:cert:{ab12}"), "cert");
        assert_eq!(key_kind("estuary:cert:fleet-a:ab12"), "cert");
        assert_eq!(key_kind("estuary:dns:ledger"), "dns");
        assert_eq!(key_kind("plain"), "plain");
        let keys: Vec<String> = ["e:cert:1", "e:cert:{2}", "e:lock:1", "e:device-counted:x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let kinds = count_kinds(&keys);
        assert_eq!(kinds["cert"], 2);
        assert_eq!(kinds["lock"], 1);
        assert_eq!(kinds["device-counted"], 1);
    }

    #[test]
    fn redis_info_fields() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    used_memory_rss:7340032\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1_048_576));
        assert_eq!(info_field(info, "used_memory_rss"), Some(7_340_032));
        assert_eq!(info_field(info, "used_memory_human"), None);
        assert_eq!(info_field(info, "used_mem"), None);
        assert_eq!(info_field("", "used_memory"), None);
    }
}
