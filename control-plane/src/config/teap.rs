//! `[teap]`: the RADIUS/EAP-TEAP listener ([`crate::teap`]).
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::support::secret::Secret;

/// `[teap]`: the RADIUS/EAP-TEAP listener. Absent: no RADIUS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeapConfig {
    /// UDP address for RADIUS authentication, e.g. `0.0.0.0:1812`.
    pub listen: SocketAddr,
    /// PEM certificate chain of the TEAP server (the outer TLS).
    pub cert_file: PathBuf,
    /// PEM private key of the TEAP server.
    pub key_file: PathBuf,
    /// PEM CA certificates that devices' client certificates chain to: the manufacturer
    /// (IDevID) CA and the ACME CA root(s) (LDevID, for renewal).
    pub client_ca_file: PathBuf,
    /// The NASes allowed to talk to this server, each with its shared secret.
    pub clients: Vec<RadiusClient>,
    /// Authority-ID in TEAP/Start.
    #[serde(default = "default_authority_id")]
    pub authority_id: String,
    /// TLS octets per EAP-Request (RFC 9930 §3.7); keep the RADIUS packet under the path MTU.
    #[serde(default = "default_fragment_size")]
    pub fragment_size: usize,
    /// Offer TLS 1.3 as well as TLS 1.2.
    #[serde(default = "default_true")]
    pub tls13: bool,
    /// Ask every device for a CSR in phase 2.
    #[serde(default = "default_true")]
    pub request_csr: bool,
    /// Accept a device with a valid certificate that answers the CSR request with nothing
    /// (an already-enrolled device). When false, such a device is rejected.
    #[serde(default = "default_true")]
    pub allow_without_csr: bool,
    /// A conversation idle this long is dropped.
    #[serde(default = "default_session_timeout_s")]
    pub session_timeout_s: u64,
    /// Most conversations kept at once; beyond this, new ones are rejected.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Most Access-Requests processed at once; beyond this, requests are dropped (the NAS
    /// retransmits).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// How long one Access-Request may wait for an enrolment (keep it under the NAS's RADIUS
    /// timeout × retries).
    #[serde(default = "default_enroll_timeout_ms")]
    pub enroll_timeout_ms: u64,
}

/// One RADIUS client (NAS).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusClient {
    /// Its source address.
    pub address: IpAddr,
    /// The shared secret (at least 16 characters).
    pub secret: Secret,
}

fn default_authority_id() -> String {
    "estuary".into()
}
fn default_fragment_size() -> usize {
    1000
}
fn default_true() -> bool {
    true
}
fn default_session_timeout_s() -> u64 {
    30
}
fn default_max_sessions() -> usize {
    4096
}
fn default_max_inflight() -> usize {
    64
}
fn default_enroll_timeout_ms() -> u64 {
    20_000
}

impl TeapConfig {
    /// Every problem with the section, as `teap.key: reason` lines.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (k, f) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("client_ca_file", &self.client_ca_file),
        ] {
            if !f.is_file() {
                errors.push(format!("teap.{k}: {} is not a readable file", f.display()));
            }
        }
        if self.clients.is_empty() {
            errors.push("teap.clients: at least one RADIUS client is needed".into());
        }
        for c in &self.clients {
            if c.secret.expose().len() < 16 {
                errors.push(format!(
                    "teap.clients: the secret for {} must be at least 16 characters",
                    c.address
                ));
            }
        }
        if !(64..=4000).contains(&self.fragment_size) {
            errors.push("teap.fragment_size: must be between 64 and 4000".into());
        }
        if self.authority_id.is_empty() || self.authority_id.len() > 255 {
            errors.push("teap.authority_id: 1 to 255 characters".into());
        }
        if self.max_sessions == 0 || self.max_inflight == 0 {
            errors.push("teap.max_sessions and teap.max_inflight: must be at least 1".into());
        }
        if self.session_timeout_s == 0 {
            errors.push("teap.session_timeout_s: must be at least 1".into());
        }
        errors
    }
}
