//! A real `redis-server` on 127.0.0.1, without persistence unless asked for (AOF), optionally
//! with `requirepass`.
use std::net::SocketAddr;
use std::process::Command;

use crate::util::{find_program, free_port, tail, wait_tcp, KillOnDrop, TempDir, STARTUP_DEADLINE};

/// A running Redis. It can be stopped and started again on the same port (to test recovery).
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    dir: TempDir,
    child: Option<KillOnDrop>,
    requirepass: Option<String>,
    aof: bool,
}

impl Redis {
    /// Starts `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None, false)
    }

    /// Starts it with `--requirepass PASSWORD`: clients must `AUTH` first.
    pub fn start_with_password(password: &str) -> anyhow::Result<Self> {
        Self::start_with(Some(password.to_string()), false)
    }

    /// Starts it with persistence: `--appendonly yes` (fsync every second) in its own
    /// directory, so [`Redis::start_again`] finds the data again.
    pub fn start_with_aof() -> anyhow::Result<Self> {
        Self::start_with(None, true)
    }

    fn start_with(requirepass: Option<String>, aof: bool) -> anyhow::Result<Self> {
        let dir = TempDir::new("redis")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut redis = Self {
            addr,
            dir,
            child: None,
            requirepass,
            aof,
        };
        redis.start_again()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:P/`
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// `redis-cli -h 127.0.0.1 -p P [-a PASSWORD] ARGS…`: its standard output, one line per
    /// reply element.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let bin = find_program("redis-cli", "redis-tools")?;
        let mut cmd = Command::new(bin);
        cmd.args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()]);
        if let Some(p) = &self.requirepass {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server (SIGKILL): every connection to it breaks.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// A crash and a restart: SIGKILL if it runs, then the server again on the same port and
    /// directory. Without AOF it starts empty; with AOF every write it acknowledged is back
    /// (Redis writes the AOF before it replies, so a killed process loses nothing the kernel
    /// already has).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let bin = find_program("redis-server", "redis-server")?;
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--dir", &self.dir.path().display().to_string()]);
        if let Some(p) = &self.requirepass {
            cmd.args(["--requirepass", p]);
        }
        let child = KillOnDrop::spawn(cmd, &log)?;
        self.child = Some(child);
        wait_tcp(self.addr, STARTUP_DEADLINE, "redis-server")
            .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 20)))?;
        Ok(())
    }
}

/// The Sentinel service name the harness's Sentinels monitor.
pub const SENTINEL_SERVICE: &str = "estuary";

/// A real Redis Sentinel setup on loopback: one master, one replica and three Sentinels
/// (`redis-server --sentinel`), quorum 2, a master judged down after 1 s.
pub struct SentinelSet {
    /// The two data nodes (the master first, at start), with their processes.
    nodes: Vec<(std::net::SocketAddr, Option<KillOnDrop>)>,
    /// The three Sentinels.
    pub sentinels: Vec<std::net::SocketAddr>,
    _sentinel_children: Vec<KillOnDrop>,
    dir: TempDir,
}

impl SentinelSet {
    /// Starts the master, its replica and three Sentinels, and waits until the replica is in
    /// sync and every Sentinel knows the replica and the two other Sentinels (so that a
    /// failover can be voted).
    pub fn start() -> anyhow::Result<Self> {
        let bin = find_program("redis-server", "redis-server")?;
        let dir = TempDir::new("redis-sentinel")?;
        let mut nodes = Vec::new();
        for i in 0..2 {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--port", &addr.port().to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--dir", &node_dir.display().to_string()]);
            if let Some((master, _)) = nodes.first() {
                let master: &std::net::SocketAddr = master;
                cmd.args(["--replicaof", "127.0.0.1", &master.port().to_string()]);
            }
            let log = node_dir.join("redis.log");
            let child = KillOnDrop::spawn(cmd, &log)?;
            wait_tcp(addr, STARTUP_DEADLINE, "redis-server")
                .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 20)))?;
            nodes.push((addr, Some(child)));
        }
        let master = nodes[0].0;
        let mut sentinels = Vec::new();
        let mut children = Vec::new();
        for i in 0..3 {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let s_dir = dir.path().join(format!("sentinel{i}"));
            std::fs::create_dir_all(&s_dir)?;
            let conf = s_dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {mport} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                    port = addr.port(),
                    dir = s_dir.display(),
                    mport = master.port()
                ),
            )?;
            let mut cmd = Command::new(&bin);
            cmd.arg(&conf).arg("--sentinel");
            let log = s_dir.join("sentinel.log");
            children.push(KillOnDrop::spawn(cmd, &log)?);
            wait_tcp(addr, STARTUP_DEADLINE, "redis sentinel")
                .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 20)))?;
            sentinels.push(addr);
        }
        let set = SentinelSet {
            nodes,
            sentinels,
            _sentinel_children: children,
            dir,
        };
        let deadline = std::time::Instant::now() + STARTUP_DEADLINE;
        loop {
            let synced = set
                .cli(set.nodes[1].0, &["INFO", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"));
            let known = set.sentinels.iter().all(|s| {
                let replicas = set
                    .cli(*s, &["SENTINEL", "replicas", SENTINEL_SERVICE])
                    .unwrap_or_default();
                let others = set
                    .cli(*s, &["SENTINEL", "sentinels", SENTINEL_SERVICE])
                    .unwrap_or_default();
                replicas.contains(&set.nodes[1].0.port().to_string())
                    && set
                        .sentinels
                        .iter()
                        .filter(|o| *o != s)
                        .all(|o| others.contains(&o.port().to_string()))
            });
            if synced && known {
                return Ok(set);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the Sentinel setup did not settle (replica in sync: {synced}, Sentinels know each other and the replica: {known})"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The data nodes (master and replica), whichever is the master now.
    pub fn nodes(&self) -> Vec<std::net::SocketAddr> {
        self.nodes.iter().map(|(a, _)| *a).collect()
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/estuary`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| s.to_string()).collect();
        format!("redis+sentinel://{}/{SENTINEL_SERVICE}", hosts.join(","))
    }

    /// `redis-cli -h 127.0.0.1 -p PORT ARGS…` against any node or Sentinel of the set.
    pub fn cli(&self, at: std::net::SocketAddr, args: &[&str]) -> anyhow::Result<String> {
        let bin = find_program("redis-cli", "redis-tools")?;
        let out = Command::new(bin)
            .args(["-h", "127.0.0.1", "-p", &at.port().to_string()])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The master's address as the first Sentinel that answers reports it.
    pub fn master(&self) -> anyhow::Result<std::net::SocketAddr> {
        for s in &self.sentinels {
            let Ok(out) = self.cli(
                *s,
                &["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE],
            ) else {
                continue;
            };
            let mut lines = out.lines();
            if let (Some(host), Some(port)) = (lines.next(), lines.next()) {
                return Ok(format!("{}:{}", host.trim(), port.trim()).parse()?);
            }
        }
        anyhow::bail!("no Sentinel names a master")
    }

    /// SIGKILLs the data node at `addr` (e.g. the master): every connection to it breaks.
    pub fn kill(&mut self, addr: std::net::SocketAddr) {
        for (a, child) in &mut self.nodes {
            if *a == addr {
                if let Some(mut c) = child.take() {
                    c.kill();
                }
            }
        }
    }

    /// The Sentinels' and nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in [
            "node0/redis.log",
            "node1/redis.log",
            "sentinel0/sentinel.log",
        ] {
            out.push_str(&format!(
                "--- {name}\n{}\n",
                tail(&self.dir.path().join(name), 15)
            ));
        }
        out
    }
}
