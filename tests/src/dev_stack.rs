//! The whole EST path on loopback: dev PKI, BIND9, Redis, Pebble, control-plane replicas and
//! a real Envoy with the Estuary filter in front of them. `cargo xtask up` runs this; the
//! end-to-end tests start one each.
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::envoy::{Envoy, EnvoySettings};
use crate::masa::{MasaOptions, TestMasa};
use crate::pki::{Ca, DevPki};
use crate::stack::{
    ControlPlane, CpManufacturer, CpOptions, RedisTopology, Stack, StackOptions, DEV_PARENT,
    DEV_TOKEN,
};
use crate::util::{TempDir, STARTUP_DEADLINE};

/// The RADIUS shared secret of the dev stack's TEAP server (dev only).
pub const DEV_RADIUS_SECRET: &str = "dev-radius-secret-0123456789";

/// The name of the control-plane cluster in envoy/envoy.yaml.
pub const CP_CLUSTER: &str = "estuary_control_plane";

/// Knobs for a dev stack.
#[derive(Clone, Debug)]
pub struct DevStackOptions {
    /// Control-plane replicas behind Envoy's cluster.
    pub replicas: usize,
    /// Envoys in front, each with the filter and every replica in its cluster (at least one).
    pub envoys: usize,
    /// The Redis the control planes share.
    pub redis: RedisTopology,
    /// Options for every replica (a fixed `port` is used for the first one only).
    pub cp: CpOptions,
    /// Fixed EST listener port, or `None`.
    pub est_port: Option<u16>,
    /// Fixed Envoy admin port, or `None`.
    pub admin_port: Option<u16>,
    /// `cache_ttl_s` of the filter.
    pub filter_cache_ttl_s: u64,
    /// Run the TEAP (RADIUS) server in the first replica.
    pub teap: bool,
    /// Run a test MASA, give the demo IDevID its URL, and enable the BRSKI registrar
    /// (`[brski]`) in every replica.
    pub brski: bool,
    /// Issue from the strict RFC 8555 + RFC 9444 test CA (tests/src/acme_ca.rs) instead of
    /// Pebble: the control planes pre-authorise the parent domain.
    pub rfc9444_ca: bool,
    /// The serial pattern of the dev manufacturer (`estuary-dev`, the dev manufacturer CA);
    /// `None`: every serial.
    pub idevid_serial_pattern: Option<String>,
    /// A second manufacturer, `mfr-b`, with its own CA (which Envoy trusts too): for tests of
    /// who may get which name across manufacturers.
    pub second_manufacturer: Option<SecondManufacturer>,
    /// Replaces Envoy's `forward_client_cert_details: SANITIZE_SET` (see
    /// [`EnvoySettings::dangerous_xfcc_mode`]).
    pub dangerous_xfcc_mode: Option<String>,
    /// EST labels served by a second CA (the strict test CA), next to the stack's own.
    pub label_ca: Option<LabelCa>,
}

/// One `[[acme.labels]]` entry of a [`LabelCa`].
#[derive(Clone, Debug)]
pub struct Label {
    /// The EST label.
    pub name: String,
    /// Its `profile`, if any.
    pub profile: Option<String>,
    /// Its `preauthorize` (RFC 9444; false: instant-acme's own newOrder, per-name DNS-01).
    pub preauthorize: bool,
}

impl Label {
    /// A label with `profile`, pre-authorising.
    pub fn new(name: &str, profile: Option<&str>) -> Self {
        Self {
            name: name.into(),
            profile: profile.map(str::to_string),
            preauthorize: true,
        }
    }
}

/// A strict test CA ([`crate::acme_ca`]) behind EST labels: every replica gets one
/// `[[acme.labels]]` entry per label, all with this CA's directory (and its root as their
/// `ca_certs_file`); the filter serves the labels; Envoy and the filter trust the CA's root for
/// LDevIDs.
#[derive(Clone, Debug, Default)]
pub struct LabelCa {
    /// The labels, each an `[[acme.labels]]` entry on this CA.
    pub labels: Vec<Label>,
    /// The profiles the CA advertises in `meta.profiles` (name, description).
    pub offered_profiles: Vec<(String, String)>,
    /// Labels the filter serves but no control plane configures (an operator's mismatch).
    pub filter_only: Vec<String>,
}

/// The policy of [`DevStackOptions::second_manufacturer`].
#[derive(Clone, Debug, Default)]
pub struct SecondManufacturer {
    /// Its serial pattern (`None`: every serial).
    pub serial_pattern: Option<String>,
    /// Its name prefix.
    pub name_prefix: Option<String>,
}

impl Default for DevStackOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            envoys: 1,
            redis: RedisTopology::Single,
            cp: CpOptions::default(),
            est_port: None,
            admin_port: None,
            filter_cache_ttl_s: 300,
            teap: false,
            brski: false,
            rfc9444_ca: false,
            idevid_serial_pattern: None,
            second_manufacturer: None,
            dangerous_xfcc_mode: None,
            label_ca: None,
        }
    }
}

/// A running dev stack.
pub struct DevStack {
    /// Envoy, in front (the first one, when there are several).
    pub envoy: Envoy,
    /// The other Envoys of [`DevStackOptions::envoys`], in the same configuration.
    pub more_envoys: Vec<Envoy>,
    /// Control-plane replicas.
    pub control_planes: Vec<ControlPlane>,
    /// BIND9, Redis, Pebble.
    pub stack: Stack,
    /// The dev PKI.
    pub pki: DevPki,
    /// Manufacturer CA + ACME root: what Envoy accepts client certificates from.
    pub client_ca_bundle: PathBuf,
    /// Where the PKI and bundle live.
    pub dir: PathBuf,
    /// The TEAP server's RADIUS address and shared secret, when `teap` was asked for.
    pub radius: Option<(std::net::SocketAddr, String)>,
    /// The test MASA, when `brski` was asked for.
    pub masa: Option<TestMasa>,
    /// PEM of the root the ACME CA in use issues from (Pebble's, or the RFC 9444 test CA's).
    pub acme_roots: PathBuf,
    /// The second manufacturer's CA, when [`DevStackOptions::second_manufacturer`] asked for it.
    pub second_manufacturer: Option<Ca>,
    _test_ca: Option<crate::acme_ca::TestAcmeCa>,
    label_ca: Option<crate::acme_ca::TestAcmeCa>,
    _tmp: Option<TempDir>,
}

/// One entry of the filter's `manufacturers`.
pub fn manufacturer_json(m: &CpManufacturer) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::json!({
        "name": m.name,
        "ca_pem": std::fs::read_to_string(&m.ca_file)
            .with_context(|| format!("reading {}", m.ca_file.display()))?,
    });
    if let Some(p) = &m.serial_pattern {
        v["serial_pattern"] = p.clone().into();
    }
    if let Some(p) = &m.name_prefix {
        v["name_prefix"] = p.clone().into();
    }
    Ok(v)
}

/// The dev manufacturer (`estuary-dev`): the dev PKI's manufacturer CA, serials matching
/// `serial_pattern` (every serial when `None`), no name prefix.
pub fn dev_manufacturer(pki: &DevPki, serial_pattern: Option<&str>) -> CpManufacturer {
    CpManufacturer {
        name: "estuary-dev".into(),
        ca_file: pki.manufacturer.cert_path.clone(),
        serial_pattern: serial_pattern.map(str::to_string),
        name_prefix: None,
    }
}

/// The filter configuration the dev stack uses: IDevIDs from `manufacturers`, LDevIDs from the
/// ACME CA whose root(s) and intermediate(s) are in `acme_ca_pem`.
pub fn filter_config(
    cache_ttl_s: u64,
    manufacturers: &[CpManufacturer],
    acme_ca_pem: &Path,
) -> anyhow::Result<serde_json::Value> {
    let manufacturers = manufacturers
        .iter()
        .map(manufacturer_json)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(serde_json::json!({
        "control_plane": {
            "cluster": CP_CLUSTER,
            "authority": "estuary-control-plane",
            "token": DEV_TOKEN,
            "timeout_ms": 10000
        },
        "parent_domain": DEV_PARENT,
        "max_body_bytes": 16384,
        "cache_ttl_s": cache_ttl_s,
        // Short, so that the tests see a new ACME intermediate learned within seconds.
        "learn_interval_s": 2,
        "manufacturers": manufacturers,
        "acme_ca_pem": std::fs::read_to_string(acme_ca_pem)
            .with_context(|| format!("reading {}", acme_ca_pem.display()))?,
    }))
}

impl DevStack {
    /// Starts everything. `dir` keeps the PKI (a fresh temp dir when `None`).
    pub fn start(
        opts: &DevStackOptions,
        cp_binary: &Path,
        filter_wasm: &Path,
        dir: Option<&Path>,
    ) -> anyhow::Result<DevStack> {
        let (tmp, dir) = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.to_path_buf())
            }
            None => {
                let t = TempDir::new("dev")?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let masa_port = if opts.brski {
            Some(crate::masa::reserve_port()?)
        } else {
            None
        };
        let masa_url = masa_port.map(|p| format!("https://127.0.0.1:{p}"));
        let pki =
            DevPki::create_with_masa(&dir, masa_url.as_deref()).context("creating the dev PKI")?;
        let masa = match masa_port {
            Some(port) => Some(
                TestMasa::start(
                    &MasaOptions {
                        manufacturer_ca: pki.manufacturer.cert_path.clone(),
                        devices: None,
                        port: Some(port),
                    },
                    Some(&dir.join("masa")),
                )
                .context("starting the test MASA")?,
            ),
            None => None,
        };
        let stack = Stack::start_with(&StackOptions {
            redis: opts.redis,
            ..StackOptions::default()
        })?;
        let test_ca = if opts.rfc9444_ca {
            Some(
                crate::acme_ca::TestAcmeCa::start(crate::acme_ca::CaOptions::rfc9444(
                    stack.bind.addr,
                ))
                .context("starting the RFC 9444 test CA")?,
            )
        } else {
            None
        };
        let acme_roots = match &test_ca {
            Some(ca) => ca.issuer_root_pem.clone(),
            None => stack.pebble.issuer_chain_pem.clone(),
        };
        let label_ca = match &opts.label_ca {
            Some(l) => {
                let mut o = crate::acme_ca::CaOptions::rfc9444(stack.bind.addr);
                o.profiles = l.offered_profiles.clone();
                Some(
                    crate::acme_ca::TestAcmeCa::start(o)
                        .context("starting the test CA behind the EST labels")?,
                )
            }
            None => None,
        };
        // What the filter (LDevIDs) and Envoy (client certificates) trust from the ACME side.
        let acme_trust = match &label_ca {
            Some(ca) => {
                let both = dir.join("acme-trust.pem");
                std::fs::write(
                    &both,
                    format!(
                        "{}{}",
                        std::fs::read_to_string(&acme_roots)?,
                        std::fs::read_to_string(&ca.issuer_root_pem)?
                    ),
                )?;
                both
            }
            None => acme_roots.clone(),
        };
        let second = match &opts.second_manufacturer {
            Some(policy) => {
                let ca = Ca::create(&dir, "mfr-b-ca", "Estuary test manufacturer B CA")?;
                let m = CpManufacturer {
                    name: "mfr-b".into(),
                    ca_file: ca.cert_path.clone(),
                    serial_pattern: policy.serial_pattern.clone(),
                    name_prefix: policy.name_prefix.clone(),
                };
                Some((ca, m))
            }
            None => None,
        };
        let mut manufacturers = vec![dev_manufacturer(
            &pki,
            opts.idevid_serial_pattern.as_deref(),
        )];
        manufacturers.extend(second.as_ref().map(|(_, m)| m.clone()));
        let client_ca_bundle = dir.join("client-ca-bundle.pem");
        let mut bundle = format!(
            "{}{}",
            std::fs::read_to_string(&pki.manufacturer.cert_path)?,
            std::fs::read_to_string(&acme_trust)?
        );
        if let Some((ca, _)) = &second {
            bundle.push_str(&std::fs::read_to_string(&ca.cert_path)?);
        }
        std::fs::write(&client_ca_bundle, bundle)?;
        let radius = if opts.teap {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], crate::util::free_port()?));
            Some((addr, DEV_RADIUS_SECRET.to_string()))
        } else {
            None
        };
        // Envoy's client trust store: written by the control planes (est.trust_bundle_file:
        // learned ACME intermediates, the ACME roots, the IDevID CAs) and reloaded by Envoy.
        let trust_dir = dir.join("trust");
        std::fs::create_dir_all(&trust_dir)?;
        let trust_bundle = trust_dir.join("client-ca.pem");
        let _ = std::fs::remove_file(&trust_bundle);
        let mut control_planes = Vec::new();
        for i in 0..opts.replicas.max(1) {
            let mut o = opts.cp.clone();
            if i > 0 {
                o.port = None;
            }
            o.manufacturers = manufacturers.clone();
            o.extra_env.push((
                "ESTUARY_EST__TRUST_BUNDLE_FILE".to_string(),
                trust_bundle.display().to_string(),
            ));
            if let (0, Some((addr, secret))) = (i, &radius) {
                let q = |p: &Path| format!("{:?}", p.display().to_string());
                o.extra_env.extend([
                    ("ESTUARY_TEAP__LISTEN".to_string(), format!("\"{addr}\"")),
                    ("ESTUARY_TEAP__CERT_FILE".into(), q(&pki.server.cert_path)),
                    ("ESTUARY_TEAP__KEY_FILE".into(), q(&pki.server.key_path)),
                    ("ESTUARY_TEAP__CLIENT_CA_FILE".into(), q(&client_ca_bundle)),
                    (
                        "ESTUARY_TEAP__CLIENTS".into(),
                        format!("[{{ address = \"127.0.0.1\", secret = \"{secret}\" }}]"),
                    ),
                ]);
            }
            if let Some(m) = &masa {
                o.extra_env.extend(brski_env(&pki, &m.anchor_pem));
            }
            if let Some(ca) = &test_ca {
                o.extra_env.extend([
                    (
                        "ESTUARY_ACME__DIRECTORY_URL".to_string(),
                        ca.directory_url.clone(),
                    ),
                    (
                        "ESTUARY_ACME__TLS_ROOT_FILE".to_string(),
                        ca.tls_ca_pem.display().to_string(),
                    ),
                    (
                        "ESTUARY_EST__CA_CERTS_FILE".to_string(),
                        ca.issuer_root_pem.display().to_string(),
                    ),
                ]);
            }
            if let (Some(ca), Some(l)) = (&label_ca, &opts.label_ca) {
                o.extra_env
                    .push(("ESTUARY_ACME__LABELS".to_string(), labels_toml(ca, l)));
            }
            control_planes.push(ControlPlane::start(cp_binary, &stack, &o)?);
        }
        let mut filter_config =
            filter_config(opts.filter_cache_ttl_s, &manufacturers, &acme_trust)?;
        if let Some(l) = &opts.label_ca {
            let labels: serde_json::Map<String, serde_json::Value> = l
                .labels
                .iter()
                .map(|label| &label.name)
                .chain(&l.filter_only)
                .map(|name| (name.clone(), serde_json::json!(name)))
                .collect();
            filter_config["labels"] = serde_json::Value::Object(labels);
        }
        let deadline = std::time::Instant::now() + STARTUP_DEADLINE;
        while !trust_bundle.is_file() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "no control plane wrote est.trust_bundle_file {}",
                    trust_bundle.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut settings = EnvoySettings {
            server_cert: pki.server.cert_path.clone(),
            server_key: pki.server.key_path.clone(),
            client_ca_bundle: trust_bundle.clone(),
            filter_wasm: filter_wasm.to_path_buf(),
            filter_config,
            control_planes: control_planes.iter().map(|c| c.addr).collect(),
            est_port: opts.est_port,
            admin_port: opts.admin_port,
            dangerous_xfcc_mode: opts.dangerous_xfcc_mode.clone(),
        };
        let envoy = Envoy::start(&settings)?;
        // The fixed ports are the first Envoy's.
        (settings.est_port, settings.admin_port) = (None, None);
        let more_envoys = (1..opts.envoys.max(1))
            .map(|_| Envoy::start(&settings))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(DevStack {
            envoy,
            more_envoys,
            control_planes,
            stack,
            pki,
            client_ca_bundle,
            dir,
            radius,
            masa,
            acme_roots,
            second_manufacturer: second.map(|(ca, _)| ca),
            _test_ca: test_ca,
            label_ca,
            _tmp: tmp,
        })
    }

    /// `https://127.0.0.1:P/.well-known/brski`
    pub fn brski_url(&self) -> String {
        format!("{}/.well-known/brski", self.envoy.base_url)
    }

    /// The strict RFC 9444 test CA, when the stack runs on it (`rfc9444_ca`).
    pub fn test_ca(&self) -> Option<&crate::acme_ca::TestAcmeCa> {
        self._test_ca.as_ref()
    }

    /// The test CA behind the EST labels, when [`DevStackOptions::label_ca`] asked for it.
    pub fn label_ca(&self) -> Option<&crate::acme_ca::TestAcmeCa> {
        self.label_ca.as_ref()
    }

    /// `https://127.0.0.1:P/.well-known/est` of the first Envoy.
    pub fn est_url(&self) -> String {
        format!("{}/.well-known/est", self.envoy.base_url)
    }

    /// Every Envoy, the first one first.
    pub fn envoys(&self) -> impl Iterator<Item = &Envoy> {
        std::iter::once(&self.envoy).chain(&self.more_envoys)
    }

    /// The EST URL of every Envoy, the first one first.
    pub fn est_urls(&self) -> Vec<String> {
        self.envoys()
            .map(|e| format!("{}/.well-known/est", e.base_url))
            .collect()
    }
}

/// `acme.labels` as a TOML inline array (for `ESTUARY_ACME__LABELS`): one entry per label of
/// `l`, each with the test CA's directory, TLS root and issuing root.
fn labels_toml(ca: &crate::acme_ca::TestAcmeCa, l: &LabelCa) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let entries: Vec<String> = l
        .labels
        .iter()
        .map(|label| {
            let mut e = format!(
                "{{ name = {:?}, ca_certs_file = {}, directory_url = {:?}, tls_root_file = {}, poll_initial_ms = 50, preauthorize = {}",
                label.name,
                q(&ca.issuer_root_pem),
                ca.directory_url,
                q(&ca.tls_ca_pem),
                label.preauthorize
            );
            if let Some(p) = &label.profile {
                e.push_str(&format!(", profile = {p:?}"));
            }
            e.push_str(" }");
            e
        })
        .collect();
    format!("[{}]", entries.join(", "))
}

/// The `[brski]` section as `ESTUARY_BRSKI__*` overrides: Envoy's listener certificate is the
/// registrar certificate, the server CA is the domain CA, the dev manufacturer is the one
/// accepted, trusting `masa_anchor` (its MASA URL comes from the IDevID).
pub fn brski_env(pki: &DevPki, masa_anchor: &Path) -> Vec<(String, String)> {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    vec![
        (
            "ESTUARY_BRSKI__REGISTRAR_CERT_FILE".to_string(),
            q(&pki.server.cert_path),
        ),
        (
            "ESTUARY_BRSKI__REGISTRAR_KEY_FILE".into(),
            q(&pki.server.key_path),
        ),
        (
            "ESTUARY_BRSKI__DOMAIN_CA_FILE".into(),
            q(&pki.server_ca.cert_path),
        ),
        (
            "ESTUARY_BRSKI__MANUFACTURERS".into(),
            format!(
                "[{{ idevid_ca_file = {}, masa_ca_file = {} }}]",
                q(&pki.manufacturer.cert_path),
                q(masa_anchor)
            ),
        ),
    ]
}

impl DevStack {
    /// Starts a dev stack with the workspace's built control plane (`target/debug`, or
    /// `$ESTUARY_CONTROL_PLANE_BIN`) and release filter — what the end-to-end tests run.
    pub fn start_built(opts: &DevStackOptions) -> anyhow::Result<DevStack> {
        let cp = workspace_bin("estuary-control-plane", "ESTUARY_CONTROL_PLANE_BIN")?;
        let wasm = crate::envoy::filter_wasm()?;
        Self::start(opts, &cp, &wasm, None)
    }
}

/// A binary of this workspace: `$<env_var>`, or `target/debug/<name>`.
pub fn workspace_bin(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::envoy::workspace_root()
                .join("target/debug")
                .join(name)
        });
    if !p.is_file() {
        anyhow::bail!(
            "{} is not built: run `cargo build --workspace --bins` (cargo xtask test does), or set {env_var}",
            p.display()
        );
    }
    Ok(p)
}
