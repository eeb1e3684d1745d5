//! A real `redis-server` on 127.0.0.1, without persistence unless asked for (AOF), optionally
//! with `requirepass`; and the replicated topologies: a master, a replica and three Sentinels
//! ([`SentinelSet`]), or a Redis Cluster of three masters with a replica each ([`ClusterSet`]).
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
        cli_at(at, args)
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

/// How long [`ClusterSet::wait_for_failover`] waits for a replica to take over. With
/// `--cluster-node-timeout 1000` Redis promotes one in 2–3 s; this leaves room for a busy machine.
const CLUSTER_FAILOVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A real Redis Cluster on loopback: three masters and one replica each, from `redis-server
/// --cluster-enabled yes` (node timeout 1 s, no persistence), made with `redis-cli --cluster
/// create`.
pub struct ClusterSet {
    /// Every node with its process (`None` once killed).
    nodes: Vec<(SocketAddr, Option<KillOnDrop>)>,
    /// The masters when the cluster was made: the URL names them.
    first_masters: Vec<SocketAddr>,
    /// The replicas of each killed master, as they were just before the kill.
    replicas_of_killed: std::sync::Mutex<std::collections::HashMap<SocketAddr, Vec<SocketAddr>>>,
    dir: TempDir,
}

/// One line of `CLUSTER NODES`.
struct ClusterNode {
    id: String,
    addr: SocketAddr,
    master: bool,
    failing: bool,
    /// The master's id, for a replica.
    master_id: Option<String>,
    /// Slot ranges served, inclusive.
    slots: Vec<(u16, u16)>,
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let addr = f[1].split('@').next()?.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterNode {
                id: f[0].to_string(),
                addr,
                master: flags.contains(&"master"),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// Runs `cmd` to its end (output into `log`), killing it after `within`.
fn run_with_deadline(
    cmd: Command,
    within: std::time::Duration,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    let mut child = KillOnDrop::spawn(cmd, log)?;
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait()? {
            anyhow::ensure!(status.success(), "{status}\n{}", tail(log, 20));
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no end within {within:?}\n{}",
            tail(log, 20)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl ClusterSet {
    /// Starts six nodes, makes them a cluster of three masters with one replica each, and waits
    /// until every node says `cluster_state:ok`, knows all six, and every replica's link to its
    /// master is up.
    pub fn start() -> anyhow::Result<Self> {
        let bin = find_program("redis-server", "redis-server")?;
        let dir = TempDir::new("redis-cluster")?;
        let mut nodes = Vec::new();
        for i in 0..6 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--port", &addr.port().to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--cluster-enabled", "yes"])
                // Relative to --dir: a path here fails with "Can't open … nodes.conf".
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "1000"])
                // Its own free bus port (the default, port + 10000, may be taken or too high).
                .args(["--cluster-port", &free_port()?.to_string()])
                .args(["--dir", &node_dir.display().to_string()]);
            let log = node_dir.join("redis.log");
            let child = KillOnDrop::spawn(cmd, &log)?;
            wait_tcp(addr, STARTUP_DEADLINE, "redis-server (cluster node)")
                .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 20)))?;
            nodes.push((addr, Some(child)));
        }
        let mut create = Command::new(find_program("redis-cli", "redis-tools")?);
        create.arg("--cluster").arg("create");
        for (a, _) in &nodes {
            create.arg(a.to_string());
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        run_with_deadline(create, STARTUP_DEADLINE, &dir.path().join("create.log"))
            .map_err(|e| anyhow::anyhow!("redis-cli --cluster create: {e}"))?;
        let mut set = ClusterSet {
            nodes,
            first_masters: Vec::new(),
            replicas_of_killed: Default::default(),
            dir,
        };
        let deadline = std::time::Instant::now() + STARTUP_DEADLINE;
        loop {
            let all_ok = set.nodes().iter().all(|a| {
                set.cli(*a, &["CLUSTER", "INFO"]).is_ok_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_known_nodes:6")
                })
            });
            let table = set.cluster_nodes().unwrap_or_default();
            let replicas: Vec<SocketAddr> =
                table.iter().filter(|n| !n.master).map(|n| n.addr).collect();
            let synced = replicas.len() == 3
                && replicas.iter().all(|r| {
                    set.cli(*r, &["INFO", "replication"])
                        .is_ok_and(|i| i.contains("master_link_status:up"))
                });
            if all_ok && synced {
                set.first_masters = set.masters()?;
                return Ok(set);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the Redis Cluster did not settle (cluster_state:ok on all six: {all_ok}, \
                 three replicas in sync: {synced})\n{}",
                set.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// `redis+cluster://127.0.0.1:M1,127.0.0.1:M2,127.0.0.1:M3/`: the masters the cluster was
    /// made with (the client learns the replicas from them).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.first_masters.iter().map(|a| a.to_string()).collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }

    /// Every node, masters and replicas, killed ones included.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|(a, _)| *a).collect()
    }

    /// The nodes still running.
    fn live(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(a, _)| *a)
            .collect()
    }

    /// `CLUSTER NODES` as the first live node that answers sees it.
    fn cluster_nodes(&self) -> anyhow::Result<Vec<ClusterNode>> {
        for a in self.live() {
            if let Ok(text) = self.cli(a, &["CLUSTER", "NODES"]) {
                return Ok(parse_cluster_nodes(&text));
            }
        }
        anyhow::bail!("no live cluster node answers CLUSTER NODES")
    }

    /// The masters serving slots now (not failing).
    pub fn masters(&self) -> anyhow::Result<Vec<SocketAddr>> {
        Ok(self
            .cluster_nodes()?
            .into_iter()
            .filter(|n| n.master && !n.failing && !n.slots.is_empty())
            .map(|n| n.addr)
            .collect())
    }

    /// The master serving `key`'s slot (`CLUSTER KEYSLOT`, then `CLUSTER NODES`).
    pub fn master_of_key(&self, key: &str) -> anyhow::Result<SocketAddr> {
        let at = *self
            .live()
            .first()
            .ok_or_else(|| anyhow::anyhow!("no live cluster node"))?;
        let slot: u16 = self.cli(at, &["CLUSTER", "KEYSLOT", key])?.trim().parse()?;
        self.cluster_nodes()?
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|n| n.addr)
            .ok_or_else(|| anyhow::anyhow!("no master serves slot {slot}"))
    }

    /// SIGKILLs the node at `addr` (e.g. a master): every connection to it breaks.
    pub fn kill(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let table = self.cluster_nodes()?;
        let id = table.iter().find(|n| n.addr == addr).map(|n| n.id.clone());
        let replicas = table
            .iter()
            .filter(|n| id.is_some() && n.master_id == id)
            .map(|n| n.addr)
            .collect();
        if let Ok(mut r) = self.replicas_of_killed.lock() {
            r.insert(addr, replicas);
        }
        for (a, child) in &mut self.nodes {
            if *a == addr {
                if let Some(mut c) = child.take() {
                    c.kill();
                }
            }
        }
        Ok(())
    }

    /// Waits until a replica of the killed master `of` is a master and every live node says
    /// `cluster_state:ok`; returns the new master.
    pub fn wait_for_failover(&self, of: SocketAddr) -> anyhow::Result<SocketAddr> {
        let replicas = self
            .replicas_of_killed
            .lock()
            .ok()
            .and_then(|r| r.get(&of).cloned())
            .ok_or_else(|| anyhow::anyhow!("{of} was not killed through ClusterSet::kill"))?;
        anyhow::ensure!(!replicas.is_empty(), "{of} had no replica to take over");
        let deadline = std::time::Instant::now() + CLUSTER_FAILOVER_DEADLINE;
        loop {
            let promoted = replicas.iter().copied().find(|r| {
                self.cli(*r, &["ROLE"])
                    .is_ok_and(|role| role.lines().next() == Some("master"))
            });
            let ok = self.live().iter().all(|a| {
                self.cli(*a, &["CLUSTER", "INFO"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            });
            if let (Some(new), true) = (promoted, ok) {
                return Ok(new);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no replica of {of} took over within {CLUSTER_FAILOVER_DEADLINE:?} \
                 (promoted: {promoted:?}, cluster_state:ok everywhere: {ok})\n{}",
                self.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `redis-cli -h 127.0.0.1 -p PORT ARGS…` against one node (no redirection following).
    pub fn cli(&self, at: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
        cli_at(at, args)
    }

    /// The nodes' logs and `redis-cli --cluster create`'s, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- create.log\n{}\n",
            tail(&self.dir.path().join("create.log"), 10)
        );
        for (i, (a, _)) in self.nodes.iter().enumerate() {
            out.push_str(&format!(
                "--- node{i} ({a})\n{}\n",
                tail(&self.dir.path().join(format!("node{i}/redis.log")), 10)
            ));
        }
        out
    }
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS…` against the node or Sentinel at `at` (no password, no
/// redirection following): its standard output, one line per reply element.
fn cli_at(at: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
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
