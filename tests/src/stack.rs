//! The back half of an Estuary deployment on loopback: BIND9, Redis, Pebble, and control-plane
//! processes configured against them.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;

use crate::bind::Bind;
use crate::pebble::Pebble;
use crate::redis::Redis;
use crate::util::{free_port, tail, wait_tcp, KillOnDrop, TempDir, STARTUP_DEADLINE};

/// The bearer token the test/dev proxies and control planes share.
pub const DEV_TOKEN: &str = "dev-token-not-for-production-0123";
/// The dev stack's parent domain (the BIND key may write TXT below it).
pub const DEV_PARENT: &str = "iot.example.test";

/// BIND9 + Redis + Pebble on loopback.
pub struct Stack {
    /// DNS primary.
    pub bind: Bind,
    /// Redis.
    pub redis: Redis,
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
            pebble,
            manufacturer,
            _dir: dir,
        })
    }
}

/// Knobs for the stack.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    /// Redis with AOF persistence (`--appendonly yes`), so a restart keeps the data.
    pub redis_aof: bool,
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
    _dir: TempDir,
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
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,estuary_control_plane=debug");
        if !opts.cloud_only {
            // The TSIG secret comes from the environment, as an operator would pass it.
            cmd.env("ESTUARY_DNS__SECRET", &stack.bind.secret_b64);
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let child = KillOnDrop::spawn(cmd, &log)?;
        wait_tcp(addr, STARTUP_DEADLINE, "control plane")
            .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 40)))?;
        Ok(ControlPlane {
            addr,
            log,
            config,
            stack_manufacturer: Arc::clone(&stack.manufacturer),
            child,
            _dir: dir,
        })
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
        redis = stack.redis.url(),
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
