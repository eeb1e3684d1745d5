//! A real Pebble ACME CA (Debian package `pebble`) on 127.0.0.1.
//!
//! Debian ships no TLS certificate for Pebble, so each start makes a throw-away CA and a
//! `localhost`/`127.0.0.1` server certificate. Pebble asks the given DNS server directly for
//! DNS-01 TXT records (`-dnsserver`). `PEBBLE_VA_NOSLEEP=1` removes its random validation
//! sleeps; its default 5 % nonce rejection is left ON, so clients must cope with badNonce.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::util::{find_program, free_port, tail, wait_tcp, KillOnDrop, TempDir, STARTUP_DEADLINE};

/// A running Pebble.
pub struct Pebble {
    /// ACME directory URL (`https://127.0.0.1:P/dir`).
    pub directory_url: String,
    /// The management interface (`https://127.0.0.1:M`), which serves `/roots/0`.
    pub management_url: String,
    /// PEM of the CA that signed Pebble's TLS certificate: trust it to talk ACME.
    pub tls_ca_pem: PathBuf,
    /// PEM of Pebble's issuing root, fetched from `/roots/0` after start.
    pub issuer_root_pem: PathBuf,
    /// PEM of the root and the issuing intermediate (`/intermediates/0`): what an EST server's
    /// trust store and `/cacerts` hold so that a device presenting only its end-entity
    /// certificate still chains (draft-ietf-acme-integrations-17).
    pub issuer_chain_pem: PathBuf,
    /// Pebble's log file.
    pub log: PathBuf,
    dir: TempDir,
    child: KillOnDrop,
}

impl Pebble {
    /// Starts Pebble validating DNS-01 against `dns_server`.
    pub fn start(dns_server: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(dns_server, &[])
    }

    /// Starts Pebble with extra environment variables (e.g. `PEBBLE_AUTHZREUSE`).
    pub fn start_with(dns_server: SocketAddr, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bin = find_program("pebble", "pebble")?;
        let dir = TempDir::new("pebble")?;
        let (ca_pem, cert_pem, key_pem) = crate::https::tls_material("Estuary test Pebble TLS CA")?;
        let tls_ca_pem = dir.path().join("tls-ca.pem");
        std::fs::write(&tls_ca_pem, ca_pem)?;
        std::fs::write(dir.path().join("cert.pem"), cert_pem)?;
        std::fs::write(dir.path().join("key.pem"), key_pem)?;
        let acme_port = free_port()?;
        let mgmt_port = free_port()?;
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": free_port()?,
                "tlsPort": free_port()?,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let log = dir.path().join("pebble.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns_server.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .current_dir(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = KillOnDrop::spawn(cmd, &log)?;
        let acme_addr = SocketAddr::from(([127, 0, 0, 1], acme_port));
        let mgmt_addr = SocketAddr::from(([127, 0, 0, 1], mgmt_port));
        wait_tcp(acme_addr, STARTUP_DEADLINE, "pebble")
            .and_then(|()| wait_tcp(mgmt_addr, STARTUP_DEADLINE, "pebble management"))
            .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 30)))?;
        let management_url = format!("https://127.0.0.1:{mgmt_port}");
        let issuer_root_pem = dir.path().join("issuer-root.pem");
        fetch_root(&management_url, &tls_ca_pem, &issuer_root_pem, "roots/0")?;
        let intermediate_pem = dir.path().join("issuer-intermediate.pem");
        fetch_root(
            &management_url,
            &tls_ca_pem,
            &intermediate_pem,
            "intermediates/0",
        )?;
        let issuer_chain_pem = dir.path().join("issuer-chain.pem");
        std::fs::write(
            &issuer_chain_pem,
            format!(
                "{}{}",
                std::fs::read_to_string(&issuer_root_pem)?,
                std::fs::read_to_string(&intermediate_pem)?
            ),
        )?;
        Ok(Self {
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            management_url,
            tls_ca_pem,
            issuer_root_pem,
            issuer_chain_pem,
            log,
            dir,
            child,
        })
    }

    /// The scratch directory of this instance.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Pebble's process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGSTOP: the realistic "CA hangs" fault. Its listening sockets stay open, so TCP
    /// connections still succeed, and requests wait with no answer until [`Pebble::thaw`].
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT: Pebble answers again (requests that waited meanwhile included).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        crate::util::send_signal(self.pid(), sig)
    }

    /// Number of new-order requests Pebble has logged so far.
    pub fn orders_logged(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("POST /order-plz") || l.contains("POST /new-order"))
            .count()
    }
}

/// Fetches one of Pebble's issuing certificates (`roots/0`, `intermediates/0`) with curl (an
/// independent HTTPS client).
fn fetch_root(
    mgmt: &str,
    tls_ca: &std::path::Path,
    out: &std::path::Path,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        let res = Command::new(find_program("curl", "curl")?)
            .args(["-sS", "--fail", "--cacert"])
            .arg(tls_ca)
            .arg(format!("{mgmt}/{what}"))
            .arg("-o")
            .arg(out)
            .output()
            .context("running curl")?;
        if res.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "could not fetch Pebble's {what} from {mgmt}: {}",
                String::from_utf8_lossy(&res.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
