//! The back half of an Estuary deployment on loopback: BIND9, Redis, Pebble, and control-plane
//! processes configured against them.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;

use crate::bind::Bind;
use crate::pebble::Pebble;
use crate::redis::{ClusterSet, Redis, SentinelSet};
use crate::util::{free_port, tail, wait_tcp, KillOnDrop, TempDir, STARTUP_DEADLINE};

/// The bearer token the test/dev proxies and control planes share.
pub const DEV_TOKEN: &str = "dev-token-not-for-production-0123";
/// The dev stack's parent domain (the BIND key may write TXT below it).
pub const DEV_PARENT: &str = "iot.example.test";

/// BIND9 + Redis + Pebble on loopback.
pub struct Stack {
    /// DNS primary.
    pub bind: Bind,
    /// The single Redis node: what control planes use unless [`StackOptions::redis`] asked
    /// for a replicated topology ([`Stack::ha`]); then it runs but no control plane uses it.
    pub redis: Redis,
    /// The replicated Redis the control planes use, when [`StackOptions::redis`] asked for one.
    pub ha: Option<HaRedis>,
    /// ACME CA.
    pub pebble: Pebble,
    /// A test manufacturer CA: the `[[est.manufacturers]]` of control planes started against
    /// this stack, unless [`CpOptions::manufacturers`] names others.
    pub manufacturer: Arc<crate::pki::Ca>,
    _dir: TempDir,
}

impl Stack {
    /// Starts all three.
    pub fn start() -> anyhow::Result<Stack> {
        Self::start_with(&StackOptions::default())
    }

    /// Starts all three with `opts`.
    pub fn start_with(opts: &StackOptions) -> anyhow::Result<Stack> {
        let bind = Bind::start().context("starting BIND9")?;
        let redis = if opts.redis_aof {
            Redis::start_with_aof()
        } else {
            Redis::start()
        }
        .context("starting Redis")?;
        let ha = match opts.redis {
            RedisTopology::Single => None,
            RedisTopology::Sentinel => Some(HaRedis::Sentinel(
                SentinelSet::start().context("starting Redis with Sentinel")?,
            )),
            RedisTopology::Cluster => Some(HaRedis::Cluster(
                ClusterSet::start().context("starting a Redis Cluster")?,
            )),
        };
        let pebble = Pebble::start(bind.addr).context("starting Pebble")?;
        let dir = TempDir::new("stack-pki")?;
        let manufacturer = Arc::new(crate::pki::Ca::create(
            dir.path(),
            "test-manufacturer-ca",
            "Estuary test manufacturer CA",
        )?);
        Ok(Stack {
            bind,
            redis,
            ha,
            pebble,
            manufacturer,
            _dir: dir,
        })
    }

    /// The `redis.url` control planes started against this stack use.
    pub fn redis_url(&self) -> String {
        match &self.ha {
            None => self.redis.url(),
            Some(HaRedis::Sentinel(s)) => s.url(),
            Some(HaRedis::Cluster(c)) => c.url(),
        }
    }

    /// Every Redis data node the control planes may use, `host:port` (not the Sentinels).
    pub fn redis_addrs(&self) -> Vec<SocketAddr> {
        match &self.ha {
            None => vec![self.redis.addr],
            Some(HaRedis::Sentinel(s)) => s.nodes(),
            Some(HaRedis::Cluster(c)) => c.nodes(),
        }
    }
}

/// Which Redis the control planes of a [`Stack`] use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisTopology {
    /// One node ([`Redis`]).
    #[default]
    Single,
    /// A master, a replica and three Sentinels ([`SentinelSet`]).
    Sentinel,
    /// A Redis Cluster of three masters and three replicas ([`ClusterSet`]).
    Cluster,
}

impl std::str::FromStr for RedisTopology {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "single" => Ok(Self::Single),
            "sentinel" => Ok(Self::Sentinel),
            "cluster" => Ok(Self::Cluster),
            other => {
                anyhow::bail!("unknown Redis topology {other:?} (single, sentinel or cluster)")
            }
        }
    }
}

/// A replicated Redis of a [`Stack`].
pub enum HaRedis {
    /// Master + replica + three Sentinels.
    Sentinel(SentinelSet),
    /// Three masters + three replicas.
    Cluster(ClusterSet),
}

impl HaRedis {
    /// The keys matching `pattern` (`SCAN MATCH`) on every master that is up.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.masters() {
            if let Ok(text) = self.cli(m, &["--scan", "--pattern", pattern]) {
                out.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
            }
        }
        out
    }

    /// The masters as the topology reports them now.
    pub fn masters(&self) -> Vec<SocketAddr> {
        match self {
            HaRedis::Sentinel(s) => s.master().into_iter().collect(),
            HaRedis::Cluster(c) => c.masters().unwrap_or_default(),
        }
    }

    /// `redis-cli` against the node at `at`.
    pub fn cli(&self, at: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
        match self {
            HaRedis::Sentinel(s) => s.cli(at, args),
            HaRedis::Cluster(c) => c.cli(at, args),
        }
    }

    /// SIGKILLs the master that holds the most keys matching `pattern` (the first master when
    /// none does) and waits until its replica has taken over; returns the killed master.
    pub fn kill_master_holding(&mut self, pattern: &str) -> anyhow::Result<SocketAddr> {
        let busiest = self
            .masters()
            .into_iter()
            .max_by_key(|m| {
                self.cli(*m, &["--scan", "--pattern", pattern])
                    .map(|t| t.lines().filter(|l| !l.is_empty()).count())
                    .unwrap_or(0)
            })
            .context("no master is up")?;
        match self {
            HaRedis::Sentinel(s) => {
                s.kill(busiest);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                loop {
                    if s.master().is_ok_and(|m| m != busiest) {
                        break;
                    }
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "the Sentinels did not promote the replica within 60 s\n{}",
                        s.logs()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            HaRedis::Cluster(c) => {
                c.kill(busiest)?;
                c.wait_for_failover(busiest)?;
            }
        }
        Ok(busiest)
    }
}

/// Knobs for the stack.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    /// Redis with AOF persistence (`--appendonly yes`), so a restart keeps the data (the
    /// single node only).
    pub redis_aof: bool,
    /// The Redis the control planes use.
    pub redis: RedisTopology,
}

/// Knobs for one control-plane process.
#[derive(Clone, Debug)]
pub struct CpOptions {
    /// `est.parent_domain`.
    pub parent: String,
    /// `enroll.budget_ms`.
    pub budget_ms: u64,
    /// `enroll.retry_after_s`.
    pub retry_after_s: u64,
    /// `enroll.lock_ttl_s`.
    pub lock_ttl_s: u64,
    /// A fixed listen port, or `None` for a free one.
    pub port: Option<u16>,
    /// Extra environment (e.g. `ESTUARY_*` overrides).
    pub extra_env: Vec<(String, String)>,
    /// A BRSKI cloud registrar alone: the config has no `[est]`, `[acme]`, `[dns]` or
    /// `[enroll]` and the process gets no `ESTUARY_DNS__SECRET`, so `[brski]` with
    /// `[brski.cloud]` must come from `extra_env`. `parent`, `budget_ms`, `retry_after_s` and
    /// `lock_ttl_s` are then unused, and so are the stack's BIND and Pebble.
    pub cloud_only: bool,
    /// The `[[est.manufacturers]]` entries; empty: one, `test-mfr`, the stack's
    /// [`Stack::manufacturer`] for every serial.
    pub manufacturers: Vec<CpManufacturer>,
}

/// One `[[est.manufacturers]]` entry of a test control plane.
#[derive(Clone, Debug)]
pub struct CpManufacturer {
    /// `name`.
    pub name: String,
    /// `idevid_ca_file`.
    pub ca_file: PathBuf,
    /// `serial_pattern`, if any.
    pub serial_pattern: Option<String>,
    /// `name_prefix`, if any.
    pub name_prefix: Option<String>,
}

impl CpManufacturer {
    fn toml(&self) -> String {
        let mut t = format!(
            "[[est.manufacturers]]\nname = {:?}\nidevid_ca_file = {:?}\n",
            self.name,
            self.ca_file.display().to_string()
        );
        if let Some(p) = &self.serial_pattern {
            t.push_str(&format!("serial_pattern = {p:?}\n"));
        }
        if let Some(p) = &self.name_prefix {
            t.push_str(&format!("name_prefix = {p:?}\n"));
        }
        t
    }
}

impl Default for CpOptions {
    fn default() -> Self {
        Self {
            parent: DEV_PARENT.into(),
            budget_ms: 5000,
            retry_after_s: 1,
            lock_ttl_s: 15,
            port: None,
            extra_env: Vec::new(),
            cloud_only: false,
            manufacturers: Vec::new(),
        }
    }
}

/// The control plane, as a real process (killed on drop).
pub struct ControlPlane {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// The stack's test manufacturer CA (see [`Stack::manufacturer`]), to mint the IDevIDs
    /// that back direct calls to the internal API.
    pub stack_manufacturer: Arc<crate::pki::Ca>,
    child: KillOnDrop,
    binary: PathBuf,
    env: Vec<(String, String)>,
    _dir: TempDir,
}

/// Starts the control plane `binary --config config` with `env`; waits until `addr` listens.
fn spawn_cp(
    binary: &std::path::Path,
    config: &std::path::Path,
    env: &[(String, String)],
    addr: SocketAddr,
    log: &std::path::Path,
) -> anyhow::Result<KillOnDrop> {
    let mut cmd = Command::new(binary);
    cmd.arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = KillOnDrop::spawn(cmd, log)?;
    wait_tcp(addr, STARTUP_DEADLINE, "control plane")
        .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(log, 40)))?;
    Ok(child)
}

impl ControlPlane {
    /// Writes a config for `stack` and starts `binary` with it; waits until it listens.
    pub fn start(
        binary: &std::path::Path,
        stack: &Stack,
        opts: &CpOptions,
    ) -> anyhow::Result<ControlPlane> {
        let dir = TempDir::new("cp")?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.path().join("estuary.toml");
        std::fs::write(&config, config_text(addr, stack, opts))?;
        let log = dir.path().join(format!("cp-{port}.log"));
        let mut env = vec![(
            "RUST_LOG".to_string(),
            "info,estuary_control_plane=debug".to_string(),
        )];
        if !opts.cloud_only {
            // The TSIG secret comes from the environment, as an operator would pass it.
            env.push((
                "ESTUARY_DNS__SECRET".to_string(),
                stack.bind.secret_b64.clone(),
            ));
        }
        env.extend(opts.extra_env.iter().cloned());
        let child = spawn_cp(binary, &config, &env, addr, &log)?;
        Ok(ControlPlane {
            addr,
            log,
            config,
            stack_manufacturer: Arc::clone(&stack.manufacturer),
            child,
            binary: binary.to_path_buf(),
            env,
            _dir: dir,
        })
    }

    /// A crash and a restart: SIGKILL, then the same binary with the same config and
    /// environment on the same port; waits until it listens. Its log goes on in the same file
    /// (the earlier lines are kept in `<log>.<n>`).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill();
        crate::util::keep_log(&self.log)?;
        self.child = spawn_cp(&self.binary, &self.config, &self.env, self.addr, &self.log)?;
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// `http://addr<path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The config file of one control plane: `[server]` and `[redis]`, plus the EST sections
/// against `stack` unless `opts.cloud_only`.
fn config_text(addr: SocketAddr, stack: &Stack, opts: &CpOptions) -> String {
    let mut text = format!(
        r#"# Written by the Estuary test harness.
[server]
listen = "{addr}"
api_token = "{DEV_TOKEN}"

[redis]
url = "{redis}"
"#,
        redis = stack.redis_url(),
    );
    if opts.cloud_only {
        text.push_str("# A BRSKI cloud registrar alone: no [est], [acme], [dns] or [enroll].\n");
        return text;
    }
    text.push_str(&format!(
        r#"
[est]
parent_domain = "{parent}"
ca_certs_file = "{roots}"
{manufacturers}
[acme]
directory_url = "{dir_url}"
tls_root_file = "{tls_root}"
# Not less: Pebble 2.4 can wedge its whole store when an order is read while it is being
# completed (letsencrypt/pebble#554), and 50 concurrent orders polled every 20 ms made that
# likely enough to fail a CI run.
poll_initial_ms = 150
order_timeout_s = 30

[dns]
server = "{dns}"
zone = "{zone}"
key_name = "{key_name}"
algorithm = "hmac-sha256"
timeout_ms = 2000
# secret: from ESTUARY_DNS__SECRET

[enroll]
budget_ms = {budget}
retry_after_s = {retry}
lock_ttl_s = {lock}
unavailable_retry_after_s = 2
"#,
        parent = opts.parent,
        roots = stack.pebble.issuer_chain_pem.display(),
        manufacturers = if opts.manufacturers.is_empty() {
            CpManufacturer {
                name: "test-mfr".into(),
                ca_file: stack.manufacturer.cert_path.clone(),
                serial_pattern: None,
                name_prefix: None,
            }
            .toml()
        } else {
            opts.manufacturers
                .iter()
                .map(CpManufacturer::toml)
                .collect()
        },
        dir_url = stack.pebble.directory_url,
        tls_root = stack.pebble.tls_ca_pem.display(),
        dns = stack.bind.addr,
        zone = stack.bind.zone,
        key_name = stack.bind.key_name,
        budget = opts.budget_ms,
        retry = opts.retry_after_s,
        lock = opts.lock_ttl_s,
    ));
    text
}

/// A value from a Prometheus text exposition (`series` is the name with labels, exactly as
/// printed); 0 when absent.
pub fn metric_value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}
