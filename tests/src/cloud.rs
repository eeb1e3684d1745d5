//! The manufacturer's side of draft-ietf-anima-brski-cloud on loopback: a second Estuary
//! deployment next to a [`DevStack`] (the owner's local RA). It has its own control plane (with
//! `[brski.cloud]` and no EST sections: a cloud registrar alone, with no ACME CA or DNS primary
//! of its own), its own Redis and its own Envoy (filter role `cloud-registrar`), and a TLS
//! certificate from its own "cloud" CA — the implicit trust anchor pledges are built with. It
//! signs registrar voucher requests with that certificate; the dev stack's test MASA is told to
//! trust it to name a pinned domain and an `est-domain`. It serves the dev stack's manufacturers:
//! [`DEV_MANUFACTURER`], and [`SECOND_MANUFACTURER`] when the dev stack has one; owners are
//! found by (manufacturer, serial).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::dev_stack::{workspace_bin, DevStack, CP_CLUSTER};
use crate::envoy::{Envoy, EnvoySettings};
use crate::pki::{Ca, Issued};
use crate::redis::Redis;
use crate::stack::{ControlPlane, CpOptions, DEV_TOKEN};
use crate::util::find_program;

/// The Redis key prefix of the cloud deployment.
pub const CLOUD_PREFIX: &str = "estuary-cloud";

/// The cloud registrar's `[[brski.manufacturers]]` name for the dev manufacturer CA (the name
/// the dev stack gives it too).
pub const DEV_MANUFACTURER: &str = "estuary-dev";

/// Its name for the dev stack's second manufacturer CA
/// ([`crate::dev_stack::DevStackOptions::second_manufacturer`]), served when there is one.
pub const SECOND_MANUFACTURER: &str = "mfr-b";

/// What the cloud registrar does for an owner's pledges.
#[derive(Clone, Debug)]
pub enum OwnerPath {
    /// (a) 307 to the owner's registrar: its `/.well-known/brski` base URL.
    Redirect(String),
    /// (b) a voucher naming the owner's EST server (`est-domain`) and pinning `pinned` (PEM).
    Est {
        /// The EST base URL.
        url: String,
        /// The trust anchor that authenticates it.
        pinned: PathBuf,
    },
}

/// One owner in `[[brski.cloud.owners]]`.
#[derive(Clone, Debug)]
pub struct Owner {
    /// Its name.
    pub name: String,
    /// Whose IDevIDs carry `serials`; `None`: the only manufacturer (required when the cloud
    /// registrar serves two).
    pub manufacturer: Option<String>,
    /// Serials listed in the configuration (more can be assigned in Redis).
    pub serials: Vec<String>,
    /// Redirect or EST.
    pub path: OwnerPath,
}

/// A running cloud registrar deployment.
pub struct CloudRegistrar {
    /// Its Envoy (filter role `cloud-registrar`).
    pub envoy: Envoy,
    /// Its control plane.
    pub control_plane: ControlPlane,
    /// Its own Redis (the serial -> owner map lives here).
    pub redis: Redis,
    /// The cloud CA: issues the registrar's TLS certificate; pledges hold it as their implicit
    /// trust anchor (`--cloud-ca`). Tests use it to stand up other "authenticated" registrars.
    pub ca: Ca,
    /// The cloud registrar's certificate (serverAuth + id-kp-cmcRA) and key.
    pub registrar: Issued,
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

fn owners_toml(owners: &[Owner]) -> String {
    let items: Vec<String> = owners
        .iter()
        .map(|o| {
            let serials: Vec<String> = o.serials.iter().map(|s| toml_str(s)).collect();
            let path = match &o.path {
                OwnerPath::Redirect(url) => format!("redirect_url = {}", toml_str(url)),
                OwnerPath::Est { url, pinned } => format!(
                    "est_url = {}, pinned_domain_cert_file = {}",
                    toml_str(url),
                    toml_str(&pinned.display().to_string())
                ),
            };
            let manufacturer = o.manufacturer.as_ref().map_or(String::new(), |m| {
                format!("manufacturer = {}, ", toml_str(m))
            });
            format!(
                "{{ name = {}, {manufacturer}serials = [{}], {path} }}",
                toml_str(&o.name),
                serials.join(", ")
            )
        })
        .collect();
    format!("{{ owners = [{}] }}", items.join(", "))
}

impl CloudRegistrar {
    /// Starts the cloud deployment for `local`'s manufacturers (its MASA must be running:
    /// `DevStackOptions { brski: true, .. }`; it is the MASA of both). Files go to `dir`.
    pub fn start(
        local: &DevStack,
        owners: &[Owner],
        cp_binary: &Path,
        filter_wasm: &Path,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let masa = local
            .masa
            .as_ref()
            .context("the cloud registrar needs the dev stack's MASA (brski: true)")?;
        let ca = Ca::create(dir, "cloud-ca", "Estuary dev cloud registrar CA")?;
        let registrar = ca.issue_registrar(dir, "cloud-registrar")?;
        masa.trust_cloud_registrar(&registrar.cert_path)
            .context("telling the MASA about the cloud registrar")?;
        let redis = Redis::start().context("starting the cloud registrar's Redis")?;
        let q = |p: &Path| toml_str(&p.display().to_string());
        let mut makers = vec![(DEV_MANUFACTURER, &local.pki.manufacturer.cert_path)];
        if let Some(ca) = &local.second_manufacturer {
            makers.push((SECOND_MANUFACTURER, &ca.cert_path));
        }
        let manufacturers: Vec<String> = makers
            .iter()
            .map(|(name, ca)| {
                format!(
                    "{{ name = {}, idevid_ca_file = {}, masa_ca_file = {}, masa_url = {} }}",
                    toml_str(name),
                    q(ca),
                    q(&masa.anchor_pem),
                    toml_str(&masa.url)
                )
            })
            .collect();
        // Only the manufacturers' pledges may talk to their cloud registrar.
        let client_ca_bundle = dir.join("idevid-cas.pem");
        let mut bundle = String::new();
        for (_, ca) in &makers {
            bundle.push_str(&std::fs::read_to_string(ca)?);
        }
        std::fs::write(&client_ca_bundle, bundle)?;
        let cp = CpOptions {
            extra_env: vec![
                ("ESTUARY_REDIS__URL".to_string(), toml_str(&redis.url())),
                ("ESTUARY_REDIS__KEY_PREFIX".into(), toml_str(CLOUD_PREFIX)),
                (
                    "ESTUARY_BRSKI__REGISTRAR_CERT_FILE".into(),
                    q(&registrar.cert_path),
                ),
                (
                    "ESTUARY_BRSKI__REGISTRAR_KEY_FILE".into(),
                    q(&registrar.key_path),
                ),
                (
                    "ESTUARY_BRSKI__MANUFACTURERS".into(),
                    format!("[{}]", manufacturers.join(", ")),
                ),
                ("ESTUARY_BRSKI__CLOUD".into(), owners_toml(owners)),
            ],
            // The manufacturer's cloud registrar serves no EST: no ACME CA, no DNS primary.
            cloud_only: true,
            ..CpOptions::default()
        };
        let control_plane = ControlPlane::start(cp_binary, &local.stack, &cp)
            .context("starting the cloud control plane")?;
        let envoy = Envoy::start(&EnvoySettings {
            server_cert: registrar.cert_path.clone(),
            server_key: registrar.key_path.clone(),
            client_ca_bundle,
            filter_wasm: filter_wasm.to_path_buf(),
            filter_config: serde_json::json!({
                "role": "cloud-registrar",
                "control_plane": {
                    "cluster": CP_CLUSTER,
                    "authority": "estuary-cloud-registrar",
                    "token": DEV_TOKEN,
                    "timeout_ms": 15000
                },
                "max_body_bytes": 16384
            }),
            control_planes: vec![control_plane.addr],
            est_port: None,
            admin_port: None,
            dangerous_xfcc_mode: None,
        })
        .context("starting the cloud registrar's Envoy")?;
        Ok(Self {
            envoy,
            control_plane,
            redis,
            ca,
            registrar,
        })
    }

    /// [`CloudRegistrar::start`] with the workspace's built control plane and filter, in
    /// `<local.dir>/cloud`.
    pub fn start_built(local: &DevStack, owners: &[Owner]) -> anyhow::Result<Self> {
        let cp = workspace_bin("estuary-control-plane", "ESTUARY_CONTROL_PLANE_BIN")?;
        let wasm = crate::envoy::filter_wasm()?;
        Self::start(local, owners, &cp, &wasm, &local.dir.join("cloud"))
    }

    /// `https://127.0.0.1:P/.well-known/brski`: the URL a pledge is built with.
    pub fn url(&self) -> String {
        format!("{}/.well-known/brski", self.envoy.base_url)
    }

    /// PEM of the pledges' implicit trust anchor for this cloud registrar.
    pub fn anchor_pem(&self) -> &Path {
        &self.ca.cert_path
    }

    /// Assigns `manufacturer`'s pledge `serial` to `owner` in Redis, as an operator would with
    /// `redis-cli SET estuary-cloud:brski:owner:<manufacturer>:<serial> <owner>`.
    pub fn assign(&self, manufacturer: &str, serial: &str, owner: &str) -> anyhow::Result<()> {
        let cli = find_program("redis-cli", "redis-tools")?;
        let out = Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &self.redis.addr.port().to_string()])
            .args([
                "SET",
                &format!("{CLOUD_PREFIX}:brski:owner:{manufacturer}:{serial}"),
                owner,
            ])
            .output()
            .context("running redis-cli")?;
        let said = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success() && said.trim() == "OK",
            "redis-cli SET failed: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// A test-only HTTPS server standing in for another registrar in a redirect chain (a VAR's
/// cloud registrar, or a rogue one): every `POST <prefix>/.well-known/brski/requestvoucher`
/// it knows is answered `307` with a fixed `Location`; anything else 404.
pub struct Redirector {
    /// `https://127.0.0.1:P`
    pub base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Redirector {
    /// Serves with `cert_pem`/`key_pem` on `port`; `routes` maps a path prefix (e.g. `/var`)
    /// to the `Location` its requestvoucher answers with.
    pub fn start(
        cert_pem: &[u8],
        key_pem: &[u8],
        port: u16,
        routes: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        use axum::http::{header, StatusCode};
        use axum::response::IntoResponse;
        let tls = crate::https::server_config(cert_pem, key_pem)?;
        let listener =
            std::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .context("binding the redirector")?;
        listener.set_nonblocking(true)?;
        let mut app = axum::Router::new();
        for (prefix, location) in routes {
            app = app.route(
                &format!("{prefix}/.well-known/brski/requestvoucher"),
                axum::routing::post(move || {
                    let location = location.clone();
                    async move {
                        (
                            StatusCode::TEMPORARY_REDIRECT,
                            [(header::LOCATION, location)],
                            "redirected\n",
                        )
                            .into_response()
                    }
                }),
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                tokio::select! {
                    _ = crate::https::serve(listener, tls, app) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            base_url: format!("https://127.0.0.1:{port}"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_become_one_inline_toml_table() {
        let t = owners_toml(&[
            Owner {
                name: "a".into(),
                manufacturer: Some("m".into()),
                serials: vec!["SN-1".into(), "SN-2".into()],
                path: OwnerPath::Redirect("https://r.example/.well-known/brski".into()),
            },
            Owner {
                name: "b".into(),
                manufacturer: None,
                serials: vec![],
                path: OwnerPath::Est {
                    url: "https://e.example/.well-known/est".into(),
                    pinned: PathBuf::from("/x/ca.pem"),
                },
            },
        ]);
        assert_eq!(
            t,
            r#"{ owners = [{ name = "a", manufacturer = "m", serials = ["SN-1", "SN-2"], redirect_url = "https://r.example/.well-known/brski" }, { name = "b", serials = [], est_url = "https://e.example/.well-known/est", pinned_domain_cert_file = "/x/ca.pem" }] }"#
        );
    }
}
