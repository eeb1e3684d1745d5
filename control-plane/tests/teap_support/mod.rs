//! Shared setup of the TEAP tests: the real stack (BIND9, Redis, Pebble), the control plane as a
//! real process with a `[teap]` section (given through `ESTUARY_TEAP__*` environment
//! overrides), a dev PKI (server certificate, manufacturer CA, IDevIDs) and peer configs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use estuary_teap::peer::PeerConfig;
use estuary_tests::pki::{DevPki, Issued};
use estuary_tests::stack::CpOptions;
use estuary_tests::util::{free_port, TempDir};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common::{stack, ControlPlane, Stack};

pub const SECRET: &str = "radius-secret-0123456789";

pub struct Teap {
    pub cp: ControlPlane,
    pub radius: SocketAddr,
    pub pki: DevPki,
    pub dir: TempDir,
    pub stack: Stack,
}

/// Starts everything with the given extra `[teap]` keys (TOML values).
pub fn start(extra: &[(&str, &str)]) -> Teap {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stack = stack();
    let dir = TempDir::new("teap").expect("tmp");
    let pki = DevPki::create(&dir.path().join("pki")).expect("pki");
    // Devices chain to the manufacturer CA (IDevID) or to the ACME CA (LDevID).
    let cas = dir.path().join("client-cas.pem");
    let mut pem = std::fs::read_to_string(&pki.manufacturer.cert_path).expect("ca");
    pem.push_str(&std::fs::read_to_string(&stack.pebble.issuer_root_pem).expect("roots"));
    std::fs::write(&cas, pem).expect("write cas");
    let radius = SocketAddr::from(([127, 0, 0, 1], free_port().expect("port")));
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let mut env = vec![
        ("ESTUARY_TEAP__LISTEN".to_string(), format!("\"{radius}\"")),
        ("ESTUARY_TEAP__CERT_FILE".into(), q(&pki.server.cert_path)),
        ("ESTUARY_TEAP__KEY_FILE".into(), q(&pki.server.key_path)),
        ("ESTUARY_TEAP__CLIENT_CA_FILE".into(), q(&cas)),
        (
            "ESTUARY_TEAP__CLIENTS".into(),
            format!("[{{ address = \"127.0.0.1\", secret = \"{SECRET}\" }}]"),
        ),
    ];
    for (k, v) in extra {
        env.push((
            format!("ESTUARY_TEAP__{}", k.to_ascii_uppercase()),
            v.to_string(),
        ));
    }
    let opts = CpOptions {
        budget_ms: 10_000,
        extra_env: env,
        // The same manufacturer the TLS trust store holds: the TEAP server decides who may
        // get which name by issuer, exactly as EST does.
        manufacturers: vec![estuary_tests::stack::CpManufacturer {
            name: "estuary-dev".into(),
            ca_file: pki.manufacturer.cert_path.clone(),
            serial_pattern: None,
            name_prefix: None,
        }],
        ..CpOptions::default()
    };
    let cp = ControlPlane::start(&stack, &opts);
    Teap {
        cp,
        radius,
        pki,
        dir,
        stack,
    }
}

/// A unique device serial.
pub fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

impl Teap {
    /// A fresh IDevID for `serial`.
    pub fn idevid(&self, serial: &str) -> Issued {
        self.pki
            .manufacturer
            .issue_idevid(self.dir.path(), &format!("idevid-{serial}"), serial)
            .unwrap_or_else(|e| panic!("idevid for {serial}: {e:#}"))
    }

    /// A peer config for this server with the given device certificate.
    pub fn peer(&self, device: Option<&Issued>) -> PeerConfig {
        peer_config(
            self.radius,
            SECRET,
            &self.pki.server_ca.cert_path,
            device.map(|d| (d.cert_path.as_path(), d.key_path.as_path())),
        )
    }
}

pub fn peer_config(
    server: SocketAddr,
    secret: &str,
    server_ca: &Path,
    device: Option<(&Path, &Path)>,
) -> PeerConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(server_ca).expect("ca") {
        roots.add(c.expect("ca pem")).expect("add root");
    }
    let client = device.map(|(cert, key)| {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("cert pem");
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        (chain, key)
    });
    PeerConfig {
        server,
        secret: secret.as_bytes().to_vec(),
        identity: "pledge@teap.example.test".into(),
        client,
        server_roots: roots,
        server_name: ServerName::try_from("localhost").expect("name"),
        fragment_size: 1000,
        tls13: true,
        radius_timeout: Duration::from_secs(3),
        request_trusted_roots: false,
        dangerous_first_phase2_reply: None,
    }
}
