//! The control plane's configuration: one TOML file, overridable from the environment.
//!
//! # Sections
//! | section | needed | what |
//! |---|---|---|
//! | `[server]` | always | the internal API's listen address and bearer token |
//! | `[redis]` | always | the shared store |
//! | `[est]`, `[acme]`, `[dns]` | yes, except for a cloud registrar alone (below) | the EST service: device names and keys, the ACME CA, the DNS primary for DNS-01 |
//! | `[enroll]` | optional (defaults) | how enrolment waits and retries; only with `[est]` |
//! | `[teap]` | optional | the RADIUS/EAP-TEAP listener; it enrols through EST, so it needs `[est]`, `[acme]` and `[dns]` |
//! | `[brski]` | optional | the BRSKI registrar; with `[brski.cloud]` a cloud registrar |
//!
//! **A cloud registrar alone.** With `[brski.cloud]` the EST sections are optional as a group:
//! give all of `[est]`, `[acme]` and `[dns]` (the process serves EST as well, as without
//! `[brski.cloud]`) or none of them (it plays the manufacturer's cloud registrar only: no ACME
//! account, no DNS updates, and the internal API's EST paths answer 404). Some but not all is
//! a problem that names the missing ones; so is `[enroll]` or `[teap]` without them. Without
//! `[brski.cloud]` each of `[est]`, `[acme]` and `[dns]` is required.
//!
//! # Environment
//! Every key can be overridden by an environment variable named
//! `ESTUARY_<SECTION>__<KEY>` (upper case, double underscore between section and key), e.g.
//! `ESTUARY_ACME__DIRECTORY_URL=https://…` or `ESTUARY_DNS__SECRET=…`. The value is read as a
//! TOML value when it parses as one (numbers, booleans, arrays), else as a string. This is the
//! way to keep secrets (`server.api_token`, `dns.secret`, `acme.eab_hmac_key`) out of the file.
//! An override creates its section when the file has none: a cloud registrar alone must not
//! be given `ESTUARY_DNS__SECRET` (or any `ESTUARY_EST__*`, `ESTUARY_ACME__*`, `ESTUARY_DNS__*`).
//!
//! Loading collects every problem it can find (unknown keys, wrong types, bad values in any
//! section, missing sections) and reports them together, so an operator fixes a config in one
//! pass.
pub mod brski;
pub mod dns;
pub mod teap;

use crate::support::pem_file::read_certs;
use crate::support::redis_topology::{ClusterTarget, SentinelTarget};
use crate::support::secret::Secret;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use estuary_proto::est::EstLabel;
use estuary_proto::identity::{
    check_namespaces, name_prefix_or_none, serial_pattern_or_any, Manufacturer, ManufacturerName,
    TrustPolicy, NAME_RULE,
};
use estuary_proto::names::ParentDomain;
use estuary_proto::policy::KeyPolicy;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::dns::DnsConfig;

/// The whole configuration.
#[derive(Debug)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[redis]`
    pub redis: RedisConfig,
    /// The EST service and what hangs off it. `None` only for a cloud registrar alone
    /// (`[brski.cloud]` without `[est]`, `[acme]` and `[dns]`).
    pub enrolment: Option<Enrolment>,
    /// `[brski]`: the BRSKI registrar, when present.
    pub brski: Option<crate::config::brski::BrskiConfig>,
}

/// The sections of the EST service: all present together.
#[derive(Debug)]
pub struct Enrolment {
    /// `[est]`
    pub est: EstConfig,
    /// `[acme]`
    pub acme: AcmeConfig,
    /// `[dns]`
    pub dns: DnsConfig,
    /// `[enroll]` (defaults when absent).
    pub enroll: EnrollConfig,
    /// `est.parent_domain`, checked.
    pub parent: ParentDomain,
    /// Who may get which name: `est.manufacturers` (IDevID issuers, read from their files) and
    /// the certificates of `est.ca_certs_file` (the ACME CA, which issues LDevIDs).
    pub trust: TrustPolicy,
    /// `[teap]`: the RADIUS/EAP-TEAP listener, when present. It enrols through EST.
    pub teap: Option<crate::config::teap::TeapConfig>,
}

impl Config {
    /// True when `[brski.cloud]` is configured.
    pub fn is_cloud_registrar(&self) -> bool {
        self.brski.as_ref().is_some_and(|b| b.cloud.is_some())
    }
}

/// `[server]`: the internal HTTP API that the edge filter calls.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, e.g. `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// The bearer token the proxy presents (`authorization: Bearer …`). At least 16 characters.
    pub api_token: Secret,
}

/// `[est]`: what devices may ask for. Required, except for a cloud registrar alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstConfig {
    /// Devices are named `<serial>.<parent_domain>`.
    pub parent_domain: String,
    /// PEM file with the ACME CA's trust anchor(s) (its root(s); an intermediate may be added):
    /// `/cacerts` serves them after the intermediates learned from issued chains
    /// ([`crate::ra::chains`]), and they are the only issuers of LDevIDs.
    pub ca_certs_file: PathBuf,
    /// Optional: a PEM file the control plane (re)writes, through a temporary file and a rename,
    /// whenever it changes: the learned intermediates, `ca_certs_file`, then the manufacturers'
    /// IDevID CAs — the client trust store of an Envoy EST listener whose `validation_context`
    /// watches it (SDS `path_config_source` with `watched_directory`). Its directory must exist.
    #[serde(default)]
    pub trust_bundle_file: Option<PathBuf>,
    /// Accepted key types and sizes.
    #[serde(default)]
    pub keys: KeyPolicy,
    /// `[[est.manufacturers]]`: whose IDevIDs are accepted (at least one). The same list the
    /// edge filter has: the control plane checks every forwarded client certificate again.
    #[serde(default)]
    pub manufacturers: Vec<ManufacturerConfig>,
}

/// One `[[est.manufacturers]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManufacturerConfig {
    /// Unique name (1 to 64 of `A-Z a-z 0-9 - _`), used in refusals and logs.
    pub name: String,
    /// PEM file with exactly one certificate: the CA that issues this manufacturer's IDevIDs
    /// (directly, or through one intermediate the device presents).
    pub idevid_ca_file: PathBuf,
    /// Glob over the subject serialNumber (`*`, `?`; case-sensitive); default `*`.
    #[serde(default)]
    pub serial_pattern: Option<String>,
    /// Put in front of the lower-cased serial in device names (1 to 32 of `a-z 0-9 -`).
    #[serde(default)]
    pub name_prefix: Option<String>,
}

/// Checks `[[est.manufacturers]]` and reads the CA files; every problem goes to `errors`.
fn manufacturers(list: &[ManufacturerConfig], errors: &mut Vec<String>) -> Vec<Manufacturer> {
    if list.is_empty() {
        errors.push(
            "est.manufacturers: at least one [[est.manufacturers]] entry is needed (the CAs \
             that issue IDevIDs); the TLS trust store alone does not say who may get which name"
                .into(),
        );
    }
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("est.manufacturers[{i}]");
        let name = ManufacturerName::parse(&m.name);
        if name.is_none() {
            errors.push(format!("{at}.name: {NAME_RULE}"));
        }
        if list.iter().take(i).any(|o| o.name == m.name) {
            errors.push(format!("{at}.name: {:?} is listed twice", m.name));
        }
        let ca_der = match read_certs(&m.idevid_ca_file) {
            Ok(ders) if ders.len() == 1 => ders.into_iter().next(),
            Ok(ders) => {
                errors.push(format!(
                    "{at}.idevid_ca_file: {} holds {} certificates; exactly one (the IDevID CA) is needed",
                    m.idevid_ca_file.display(),
                    ders.len()
                ));
                None
            }
            Err(e) => {
                errors.push(format!("{at}.idevid_ca_file: {e}"));
                None
            }
        };
        let serial_pattern = serial_pattern_or_any(m.serial_pattern.as_deref())
            .map_err(|rule| errors.push(format!("{at}.serial_pattern: {rule}")))
            .ok();
        let name_prefix = name_prefix_or_none(m.name_prefix.as_deref())
            .map_err(|rule| errors.push(format!("{at}.name_prefix: {rule}")))
            .ok();
        if let (Some(name), Some(ca_der), Some(serial_pattern), Some(name_prefix)) =
            (name, ca_der, serial_pattern, name_prefix)
        {
            out.push(Manufacturer {
                name,
                ca_der,
                serial_pattern,
                name_prefix,
            });
        }
    }
    errors.extend(
        check_namespaces(&out)
            .into_iter()
            .map(|o| format!("est.manufacturers: {o}")),
    );
    out
}

/// The certificates of `est.ca_certs_file` (the ACME CA's, which issue LDevIDs).
fn acme_issuers(path: &Path, errors: &mut Vec<String>) -> Vec<Vec<u8>> {
    read_certs(path).unwrap_or_else(|e| {
        errors.push(format!("est.ca_certs_file: {e}"));
        Vec::new()
    })
}

/// Why `est.trust_bundle_file` cannot be written where it is, if so: it needs a file name in an
/// existing directory, and must not be a directory itself.
fn bundle_file_problem(f: &Path) -> Option<String> {
    if f.file_name().is_none() || f.is_dir() {
        return Some(format!("{} is not a file name", f.display()));
    }
    let dir = match f.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    (!dir.is_dir()).then(|| {
        format!(
            "{}: the directory {} does not exist",
            f.display(),
            dir.display()
        )
    })
}

/// `[acme]`: the ACME CA. Required, except for a cloud registrar alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory_url: String,
    /// PEM file of the root that signs the ACME server's TLS certificate. Without it the
    /// usual web PKI roots are used.
    #[serde(default)]
    pub tls_root_file: Option<PathBuf>,
    /// Contact URIs for the account (`mailto:…`).
    #[serde(default)]
    pub contact: Vec<String>,
    /// PEM file with the account's private key (PKCS#8 `PRIVATE KEY`, P-256), e.g. a mounted
    /// Kubernetes Secret. The account is looked up at the CA with `onlyReturnExisting`
    /// (RFC 8555 §7.3.1) and created only if the CA has none for this key; Redis then holds no
    /// key material. Without it the account key is generated and kept in Redis (dev only).
    #[serde(default)]
    pub account_key_file: Option<PathBuf>,
    /// External account binding key id, when the CA requires EAB (RFC 8555 §7.3.4).
    #[serde(default)]
    pub eab_kid: Option<String>,
    /// External account binding HMAC key, base64url as CAs hand it out.
    #[serde(default)]
    pub eab_hmac_key: Option<Secret>,
    /// First delay when polling an order, in milliseconds (doubles each time).
    #[serde(default = "default_poll_initial_ms")]
    pub poll_initial_ms: u64,
    /// The whole issuance, from the account to the certificate download, is abandoned after
    /// this many seconds (the lock is released, the device gets 503 + Retry-After and its
    /// retry resumes the stored order or places a new one).
    #[serde(default = "default_order_timeout_s")]
    pub order_timeout_s: u64,
    /// Each HTTP exchange with the CA, the answer's body included, must end within this many
    /// milliseconds; else it counts as the CA being unavailable.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Attempts per issuance for transient CA errors (badNonce, connection reset).
    #[serde(default = "default_order_attempts")]
    pub order_attempts: u32,
    /// Pre-authorise the parent domain (`newAuthz` with RFC 9444 `subdomainAuthAllowed`) when
    /// the CA offers it, so device orders need no DNS-01 of their own. Default true; a CA
    /// without it is used with per-name DNS-01 either way.
    #[serde(default = "default_true")]
    pub preauthorize: bool,
    /// Pre-authorise again when the parent's authorisation has less than this many seconds left.
    #[serde(default = "default_preauth_renew_margin_s")]
    pub preauth_renew_margin_s: u64,
    /// DNS-01 records of concurrent orders are sent together: at most one UPDATE message of a
    /// kind (add, delete) per this many milliseconds; a lone request is sent at once.
    #[serde(default = "default_dns_batch_window_ms")]
    pub dns_batch_window_ms: u64,
    /// Largest number of records in one coalesced UPDATE message.
    #[serde(default = "default_dns_batch_max_records")]
    pub dns_batch_max_records: usize,
    /// DNS-01 requests that may wait for the DNS primary, per kind (add, delete); beyond it a
    /// request fails at once as a transient DNS error (the device gets 503 + Retry-After).
    #[serde(default = "default_dns_batch_max_queue")]
    pub dns_batch_max_queue: usize,
    /// Back-off after the CA answers `rateLimited` (RFC 8555 §6.7) without `Retry-After`, in
    /// seconds: no replica sends a new order to the CA until it ends (shared through Redis).
    #[serde(default = "default_rate_limit_backoff_s")]
    pub rate_limit_backoff_s: u64,
    /// The longest back-off after `rateLimited`, in seconds, whatever `Retry-After` said.
    #[serde(default = "default_rate_limit_backoff_max_s")]
    pub rate_limit_backoff_max_s: u64,
    /// The ACME profile (draft-ietf-acme-profiles) asked for in every newOrder to this CA. It
    /// is sent only if the directory's `meta.profiles` advertises it; if it does not, no order
    /// is placed and the device gets 502 naming the profile (checked at order time, not at
    /// start-up, so that a CA that is down does not keep the RA from starting).
    #[serde(default)]
    pub profile: Option<String>,
    /// `[[acme.labels]]`: the CA (and profile) of each EST label (RFC 7030 §3.2.2). Only in
    /// `[acme]` itself, not inside a label.
    #[serde(default)]
    pub labels: Vec<LabelConfig>,
}

/// One `[[acme.labels]]` entry: the EST label `name` enrols from its own ACME CA. Every key of
/// `[acme]` may be given (`directory_url` is required; the others take the same defaults as in
/// `[acme]`, not the values of `[acme]`), plus `name` and `ca_certs_file`. The DNS primary
/// (`[dns]`) and the parent domain are shared: every CA validates the same device names.
#[derive(Debug)]
pub struct LabelConfig {
    /// The label (see [`EstLabel`]); `default` is reserved for the unlabelled CA.
    pub name: String,
    /// PEM file with this CA's certificates: served by `/.well-known/est/<name>/cacerts`, and
    /// issuers of LDevIDs for `simplereenroll` (like `est.ca_certs_file`).
    pub ca_certs_file: PathBuf,
    /// The CA: directory, account, DNS-01 batching, pre-authorisation, profile, deadlines.
    pub acme: AcmeConfig,
}

impl<'de> Deserialize<'de> for LabelConfig {
    /// `name` and `ca_certs_file` are taken out; the rest must be a valid `[acme]` (unknown
    /// keys refused there).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let mut take = |key: &'static str| match t.remove(key) {
            Some(toml::Value::String(s)) => Ok(s),
            Some(_) => Err(D::Error::custom(format!("`{key}` must be a string"))),
            None => Err(D::Error::missing_field(key)),
        };
        let name = take("name")?;
        let ca_certs_file = PathBuf::from(take("ca_certs_file")?);
        let acme = toml::Value::Table(t)
            .try_into::<AcmeConfig>()
            .map_err(|e| D::Error::custom(format!("label {name:?}: {}", e.message())))?;
        Ok(Self {
            name,
            ca_certs_file,
            acme,
        })
    }
}

/// The CA id of the unlabelled path (`[acme]`); a label's CA id is the label itself.
pub const DEFAULT_CA_ID: &str = "default";

/// Checks one CA's settings (`[acme]` or a `[[acme.labels]]` entry, named `at`).
fn check_acme(at: &str, a: &AcmeConfig, errors: &mut Vec<String>) {
    if !(a.directory_url.starts_with("https://") || a.directory_url.starts_with("http://")) {
        errors.push(format!("{at}.directory_url: must be an http(s) URL"));
    }
    if let Some(f) = &a.tls_root_file {
        if !f.is_file() {
            errors.push(format!(
                "{at}.tls_root_file: {} is not a readable file",
                f.display()
            ));
        }
    }
    if let Some(f) = &a.account_key_file {
        if let Err(e) = read_account_key(f) {
            errors.push(format!("{at}.account_key_file: {e}"));
        }
    }
    if a.eab_kid.is_some() != a.eab_hmac_key.is_some() {
        errors.push(format!(
            "{at}.eab_kid and {at}.eab_hmac_key: give both or neither"
        ));
    }
    if a.order_attempts == 0 {
        errors.push(format!("{at}.order_attempts: must be at least 1"));
    }
    if a.order_timeout_s == 0 {
        errors.push(format!("{at}.order_timeout_s: must be at least 1"));
    }
    if a.request_timeout_ms == 0 {
        errors.push(format!("{at}.request_timeout_ms: must be greater than 0"));
    }
    if a.dns_batch_max_queue == 0 {
        errors.push(format!("{at}.dns_batch_max_queue: must be at least 1"));
    }
    if a.rate_limit_backoff_s == 0 {
        errors.push(format!("{at}.rate_limit_backoff_s: must be at least 1"));
    }
    if a.rate_limit_backoff_max_s < a.rate_limit_backoff_s {
        errors.push(format!(
            "{at}.rate_limit_backoff_max_s: must not be below rate_limit_backoff_s"
        ));
    }
    if let Some(p) = &a.profile {
        if p.is_empty() || p.len() > 255 || p.chars().any(|c| c.is_control()) {
            errors.push(format!(
                "{at}.profile: must be 1 to 255 characters without control characters"
            ));
        }
    }
}

/// Checks `[[acme.labels]]`: valid, unique names other than [`DEFAULT_CA_ID`], readable
/// `ca_certs_file`s, each CA's settings, no labels inside a label.
fn check_labels(labels: &[LabelConfig]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let at = format!("acme.labels[{i}]");
        if EstLabel::parse(&l.name).is_none() {
            errors.push(format!("{at}.name: {}", EstLabel::RULE));
        } else if l.name == DEFAULT_CA_ID {
            errors.push(format!(
                "{at}.name: {DEFAULT_CA_ID:?} is reserved for the unlabelled CA ([acme])"
            ));
        }
        if labels.iter().take(i).any(|o| o.name == l.name) {
            errors.push(format!("{at}.name: {:?} is listed twice", l.name));
        }
        if let Err(e) = read_certs(&l.ca_certs_file) {
            errors.push(format!("{at}.ca_certs_file: {e}"));
        }
        check_acme(&at, &l.acme, &mut errors);
        if !l.acme.labels.is_empty() {
            errors.push(format!("{at}.labels: labels cannot be nested"));
        }
    }
    errors
}

/// Default of `acme.dns_batch_max_queue`: requests waiting per DNS batch worker (add, delete).
pub const DEFAULT_DNS_BATCH_MAX_QUEUE: usize = 1000;

fn default_dns_batch_max_queue() -> usize {
    DEFAULT_DNS_BATCH_MAX_QUEUE
}
fn default_rate_limit_backoff_s() -> u64 {
    300
}
fn default_rate_limit_backoff_max_s() -> u64 {
    3600
}

impl AcmeConfig {
    /// The key of `acme.account_key_file` (PKCS#8 DER), when configured.
    pub fn account_key(&self) -> Result<Option<Vec<u8>>, String> {
        self.account_key_file
            .as_deref()
            .map(read_account_key)
            .transpose()
    }
}

/// Reads a PEM `PRIVATE KEY` (PKCS#8) and checks that it is a P-256 key, the only account key
/// type instant-acme signs with. Errors name the problem, never the key.
fn read_account_key(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    let key = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{} holds no PKCS#8 `PRIVATE KEY` PEM block (convert with `openssl pkcs8 -topk8 -nocrypt`)",
            path.display()
        ),
        e => format!("cannot read {}: {e}", path.display()),
    })?;
    let der = key.secret_pkcs8_der().to_vec();
    ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| format!("{} is not a P-256 (prime256v1) key", path.display()))?;
    Ok(der)
}

fn default_true() -> bool {
    true
}
fn default_preauth_renew_margin_s() -> u64 {
    3600
}
fn default_dns_batch_window_ms() -> u64 {
    100
}
fn default_dns_batch_max_records() -> usize {
    100
}

fn default_poll_initial_ms() -> u64 {
    50
}
fn default_order_timeout_s() -> u64 {
    90
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_order_attempts() -> u32 {
    3
}

/// `[redis]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://…` for TLS (rustls; the system's roots, or the
    /// file named by `SSL_CERT_FILE`).
    pub url: Secret,
    /// The ACL user for `AUTH` (Redis 6+); without it `AUTH` uses the password alone
    /// (`requirepass`). Needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// The password for `AUTH`, best from `ESTUARY_REDIS__PASSWORD`. Give it here or in
    /// `url`, not both.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Prefix of every key Estuary writes.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// How many replicas must confirm an issued certificate in the cache (`WAIT`) before the
    /// device gets it, so that a failover cannot lose a certificate a device already holds
    /// (its retry would get a second one). Default: 1 for Sentinel and Cluster URLs, 0 for one
    /// node.
    #[serde(default)]
    pub replica_acks: Option<u32>,
    /// How long to wait for those confirmations (at most 1000, within the 2 s command deadline). When they do not come in time
    /// (a replica is down or lagging) the device still gets its certificate and
    /// `estuary_redis_unreplicated_total` counts it; when the master is lost meanwhile the device
    /// hears 503 + Retry-After and its retry finds the certificate or gets a new one.
    #[serde(default = "default_replica_ack_timeout_ms")]
    pub replica_ack_timeout_ms: u64,
}

fn default_prefix() -> String {
    "estuary".into()
}

fn default_replica_ack_timeout_ms() -> u64 {
    100
}

/// Largest `redis.replica_ack_timeout_ms`.
pub const MAX_REPLICA_ACK_TIMEOUT_MS: u64 = 1000;

/// Every byte but ASCII letters and digits as `%XX`: the redis crate percent-decodes the URL's
/// user information, and `url` leaves `%` itself unencoded there.
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

impl RedisConfig {
    /// `replica_acks`, or its default: 1 for a Sentinel or Cluster URL, 0 for one node.
    pub fn replicas_to_wait(&self) -> u32 {
        self.replica_acks
            .unwrap_or_else(|| u32::from(self.replicated_scheme().is_some()))
    }

    /// The scheme and the rest of `url` when it names Sentinel or a Cluster.
    fn replicated_scheme(&self) -> Option<(&str, &str)> {
        self.url
            .expose()
            .split_once("://")
            .filter(|(s, _)| s.ends_with("+sentinel") || s.ends_with("+cluster"))
    }

    /// `url` with `username` and `password` put in (percent-encoded), for the Redis client.
    pub fn connection_url(&self) -> Result<Secret, String> {
        let written = self.url.expose();
        if let Some((scheme, rest)) = self.replicated_scheme() {
            if scheme.ends_with("+cluster") {
                ClusterTarget::parse(written).map_err(|e| e.to_string())?;
                if self.key_prefix.contains(['{', '}']) {
                    return Err(
                        "redis.key_prefix: must not contain { or } with Redis Cluster \
                                (Estuary puts its own hash tags into the keys)"
                            .into(),
                    );
                }
            } else {
                SentinelTarget::parse(written).map_err(|e| e.to_string())?;
            }
            let has_userinfo = rest.split('/').next().is_some_and(|a| a.contains('@'));
            return match &self.password {
                Some(_) if has_userinfo => {
                    Err("redis.password: the password is also in redis.url; give one".into())
                }
                Some(p) => {
                    let user = self
                        .username
                        .as_deref()
                        .map(percent_encoded)
                        .unwrap_or_default();
                    Ok(Secret::new(format!(
                        "{scheme}://{user}:{}@{rest}",
                        percent_encoded(p.expose())
                    )))
                }
                None if self.username.is_some() => {
                    Err("redis.username: needs redis.password".into())
                }
                None => Ok(Secret::new(written.to_string())),
            };
        }
        let mut url = url::Url::parse(self.url.expose())
            .map_err(|e| format!("redis.url: not a URL ({e})"))?;
        if let Some(p) = &self.password {
            if url.password().is_some() {
                return Err("redis.password: the password is also in redis.url; give one".into());
            }
            url.set_password(Some(&percent_encoded(p.expose())))
                .map_err(|()| "redis.url: cannot carry a password".to_string())?;
            if let Some(u) = &self.username {
                url.set_username(&percent_encoded(u))
                    .map_err(|()| "redis.url: cannot carry a username".to_string())?;
            }
        } else if self.username.is_some() {
            return Err("redis.username: needs redis.password".into());
        }
        Ok(Secret::new(url.into()))
    }
}

/// `[enroll]`: how long a request waits, and how pending work is shared between replicas.
/// Optional; only with `[est]`, `[acme]` and `[dns]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// How long an enrolment request waits for issuance before answering 202.
    #[serde(default = "default_budget_ms")]
    pub budget_ms: u64,
    /// The `Retry-After` given with a 202.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// The `Retry-After` given when the CA or Redis is unavailable.
    #[serde(default = "default_unavailable_retry_after_s")]
    pub unavailable_retry_after_s: u64,
    /// Lifetime of the per-CSR issuance lock; the holder refreshes it at a third of this.
    /// A crashed replica's lock frees itself after this long.
    #[serde(default = "default_lock_ttl_s")]
    pub lock_ttl_s: u64,
    /// How long a failed issuance is remembered, so the device's retry learns why.
    #[serde(default = "default_failure_ttl_s")]
    pub failure_ttl_s: u64,
    /// New ACME orders one device may cause per `device_window_s` (seed §8.1); 0: no limit.
    /// An identical CSR is served from the cache and never counts.
    #[serde(default = "default_max_orders_per_device")]
    pub max_orders_per_device: u32,
    /// The window of `max_orders_per_device`, in seconds.
    #[serde(default = "default_device_window_s")]
    pub device_window_s: u64,
    /// Issuances that run at once in this replica (fleet-wide cap, seed §8.1); at least 1.
    #[serde(default = "default_max_inflight_orders")]
    pub max_inflight_orders: usize,
    /// Issuances that may wait for one of `max_inflight_orders` in this replica (each waits at
    /// most `acme.order_timeout_s`); beyond it a new issuance is refused with 503 + Retry-After.
    #[serde(default = "default_max_queued_orders")]
    pub max_queued_orders: usize,
}

fn default_max_inflight_orders() -> usize {
    100
}
fn default_max_queued_orders() -> usize {
    400
}

fn default_max_orders_per_device() -> u32 {
    5
}
fn default_device_window_s() -> u64 {
    3600
}

fn default_budget_ms() -> u64 {
    2000
}
fn default_retry_after_s() -> u64 {
    5
}
fn default_unavailable_retry_after_s() -> u64 {
    30
}
fn default_lock_ttl_s() -> u64 {
    15
}
fn default_failure_ttl_s() -> u64 {
    300
}

impl Default for EnrollConfig {
    fn default() -> Self {
        Self {
            budget_ms: default_budget_ms(),
            retry_after_s: default_retry_after_s(),
            unavailable_retry_after_s: default_unavailable_retry_after_s(),
            lock_ttl_s: default_lock_ttl_s(),
            failure_ttl_s: default_failure_ttl_s(),
            max_orders_per_device: default_max_orders_per_device(),
            device_window_s: default_device_window_s(),
            max_inflight_orders: default_max_inflight_orders(),
            max_queued_orders: default_max_queued_orders(),
        }
    }
}

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const SECTIONS: [&str; 8] = [
    "server", "est", "acme", "dns", "redis", "enroll", "teap", "brski",
];

impl Config {
    /// Reads `path`, applies `ESTUARY_*` overrides from the process environment, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
        Self::from_toml(&text, std::env::vars())
    }

    /// Parses TOML text with the given environment (`ESTUARY_SECTION__KEY=value` pairs).
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut root: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => return Err(ConfigErrors(vec![format!("not valid TOML: {e}")])),
        };
        let in_file: Vec<String> = root.keys().cloned().collect();
        apply_env(&mut root, env, &mut errors);
        for key in root.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                errors.push(format!(
                    "unknown section `{key}` (known: {})",
                    SECTIONS.join(", ")
                ));
            }
        }
        // With [brski.cloud] the EST sections may all be left out (a cloud registrar alone).
        // Looked up in the raw table, so a malformed [brski] section still counts.
        let cloud = root
            .get("brski")
            .and_then(toml::Value::as_table)
            .is_some_and(|b| b.contains_key("cloud"));
        let server: Option<ServerConfig> = section(&root, "server", false, &mut errors);
        let est: Option<EstConfig> = section(&root, "est", cloud, &mut errors);
        let acme: Option<AcmeConfig> = section(&root, "acme", cloud, &mut errors);
        let dns: Option<DnsConfig> = section(&root, "dns", cloud, &mut errors);
        let redis: Option<RedisConfig> = section(&root, "redis", false, &mut errors);
        let enroll: Option<EnrollConfig> = section(&root, "enroll", true, &mut errors);
        let teap: Option<crate::config::teap::TeapConfig> =
            section(&root, "teap", true, &mut errors);
        if let Some(t) = &teap {
            errors.extend(t.validate());
        }
        let brski: Option<crate::config::brski::BrskiConfig> =
            section(&root, "brski", true, &mut errors);
        if let Some(b) = &brski {
            errors.extend(b.validate());
        }
        let serves_est = if cloud {
            cloud_enrolment_sections(&root, &in_file, &mut errors)
        } else {
            true
        };

        if let Some(s) = &server {
            if s.api_token.expose().len() < 16 {
                errors.push("server.api_token: must be at least 16 characters".into());
            }
        }
        let mut parent = None;
        let mut trust_parts = None;
        if let Some(e) = &est {
            match e.parent_domain.parse::<ParentDomain>() {
                Ok(p) => parent = Some(p),
                Err(err) => errors.push(format!("est.parent_domain: {err}")),
            }
            if !e.ca_certs_file.is_file() {
                errors.push(format!(
                    "est.ca_certs_file: {} is not a readable file",
                    e.ca_certs_file.display()
                ));
            } else {
                let issuers = acme_issuers(&e.ca_certs_file, &mut errors);
                trust_parts = Some((manufacturers(&e.manufacturers, &mut errors), issuers));
            }
            if let Some(f) = &e.trust_bundle_file {
                if let Some(problem) = bundle_file_problem(f) {
                    errors.push(format!("est.trust_bundle_file: {problem}"));
                }
            }
            let k = &e.keys;
            for (field, rule) in k.problems() {
                errors.push(format!("est.keys.{field}: {rule}"));
            }
        }
        if let Some(a) = &acme {
            check_acme("acme", a, &mut errors);
            errors.extend(check_labels(&a.labels));
        }
        if let Some(d) = &dns {
            errors.extend(d.validate().into_iter().map(|p| format!("dns: {p}")));
        }
        if let Some(r) = &redis {
            let url = r.url.expose();
            if ![
                "redis://",
                "rediss://",
                "redis+sentinel://",
                "rediss+sentinel://",
                "redis+cluster://",
                "rediss+cluster://",
            ]
            .iter()
            .any(|scheme| url.starts_with(scheme))
            {
                errors.push(
                    "redis.url: must start with redis://, rediss://, redis+sentinel://, \
                     rediss+sentinel://, redis+cluster:// or rediss+cluster://"
                        .into(),
                );
            }
            if let Err(e) = r.connection_url() {
                errors.push(e);
            }
            if r.replica_ack_timeout_ms > MAX_REPLICA_ACK_TIMEOUT_MS {
                errors.push(format!(
                    "redis.replica_ack_timeout_ms: at most {MAX_REPLICA_ACK_TIMEOUT_MS}"
                ));
            }
        }
        if let Some(e) = &enroll {
            if e.lock_ttl_s < 3 {
                errors.push("enroll.lock_ttl_s: must be at least 3".into());
            }
            if e.retry_after_s == 0 {
                errors.push("enroll.retry_after_s: must be at least 1".into());
            }
            if e.max_inflight_orders == 0 {
                errors.push("enroll.max_inflight_orders: must be at least 1".into());
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let enrolment = match (est, acme, dns, enroll, parent, trust_parts) {
            (
                Some(est),
                Some(acme),
                Some(dns),
                Some(enroll),
                Some(parent),
                Some((manufacturers, mut acme_issuers)),
            ) => Some(Enrolment {
                trust: TrustPolicy {
                    parent: parent.clone(),
                    manufacturers,
                    acme_issuers: {
                        // A label's CA issues LDevIDs too: re-enrolment accepts them under
                        // any path (the name is the device's whatever CA issued it).
                        for l in &acme.labels {
                            acme_issuers.extend(read_certs(&l.ca_certs_file).unwrap_or_default());
                        }
                        acme_issuers
                    },
                },
                est,
                acme,
                dns,
                enroll,
                parent,
                teap,
            }),
            _ => None,
        };
        match (server, redis, enrolment) {
            (Some(server), Some(redis), enrolment) if enrolment.is_some() || !serves_est => {
                Ok(Config {
                    server,
                    redis,
                    enrolment,
                    brski,
                })
            }
            // Every way to get here has pushed a problem above; say so rather than fail silently.
            _ => Err(ConfigErrors(vec![
                "incomplete configuration (a required section is missing)".into(),
            ])),
        }
    }
}

/// The enrolment sections of a config with `[brski.cloud]`: all of `[est]`, `[acme]` and
/// `[dns]` (true: EST is served too) or none of them and no `[enroll]` or `[teap]` (false: a
/// cloud registrar alone). Anything in between is a problem pushed to `errors`.
fn cloud_enrolment_sections(
    root: &toml::Table,
    in_file: &[String],
    errors: &mut Vec<String>,
) -> bool {
    let named = |n: &str| {
        if in_file.iter().any(|f| f == n) {
            format!("[{n}]")
        } else {
            format!(
                "[{n}] (from ESTUARY_{}__* in the environment)",
                n.to_ascii_uppercase()
            )
        }
    };
    let (given, missing): (Vec<&str>, Vec<&str>) = ENROLMENT_SECTIONS
        .iter()
        .copied()
        .partition(|n| root.contains_key(*n));
    if given.is_empty() {
        for dependent in ["enroll", "teap"] {
            if root.contains_key(dependent) {
                errors.push(format!(
                    "{} needs [est], [acme] and [dns], which a cloud registrar alone leaves out: \
                     add them to serve EST too, or remove {}",
                    named(dependent),
                    named(dependent),
                ));
            }
        }
        return false;
    }
    if !missing.is_empty() {
        let missing: Vec<String> = missing.iter().map(|n| format!("[{n}]")).collect();
        let given: Vec<String> = given.iter().map(|n| named(n)).collect();
        errors.push(format!(
            "missing section(s) {}: with [brski.cloud] give all of [est], [acme] and [dns] \
             (to serve EST too) or none of them (cloud registrar only); given: {}",
            missing.join(", "),
            given.join(", "),
        ));
    }
    true
}

/// The sections of the EST service that a cloud registrar alone leaves out together.
const ENROLMENT_SECTIONS: [&str; 3] = ["est", "acme", "dns"];

/// Deserializes one section; a missing optional section takes its `Default`.
fn section<T: DeserializeOwned + DefaultIfOptional>(
    root: &toml::Table,
    name: &str,
    optional: bool,
    errors: &mut Vec<String>,
) -> Option<T> {
    match root.get(name) {
        None if optional => T::default_value(),
        None => {
            errors.push(format!("missing section [{name}]"));
            None
        }
        Some(v) => match T::deserialize(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(format!("[{name}]: {}", e.message()));
                None
            }
        },
    }
}

/// Sections that may be left out entirely.
trait DefaultIfOptional: Sized {
    fn default_value() -> Option<Self> {
        None
    }
}
impl DefaultIfOptional for ServerConfig {}
impl DefaultIfOptional for EstConfig {}
impl DefaultIfOptional for AcmeConfig {}
impl DefaultIfOptional for DnsConfig {}
impl DefaultIfOptional for RedisConfig {}
impl DefaultIfOptional for crate::config::teap::TeapConfig {}
impl DefaultIfOptional for crate::config::brski::BrskiConfig {}
impl DefaultIfOptional for EnrollConfig {
    fn default_value() -> Option<Self> {
        Some(Self::default())
    }
}

/// Applies `ESTUARY_SECTION__KEY[__SUBKEY]=value` overrides.
fn apply_env(
    root: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<String>,
) {
    let mut overrides = BTreeMap::new();
    for (k, v) in env {
        if let Some(rest) = k.strip_prefix("ESTUARY_") {
            if rest.contains("__") {
                overrides.insert(rest.to_ascii_lowercase(), v);
            }
        }
    }
    for (path, raw) in overrides {
        let parts: Vec<&str> = path.split("__").collect();
        if let Err(p) = set_path(root, &parts, parse_env_value(&raw)) {
            errors.push(format!(
                "environment override ESTUARY_{}: `{p}` is not a table",
                path.to_ascii_uppercase()
            ));
        }
    }
}

/// Sets `root.a.b.c = value`, creating tables on the way; Err names a non-table in the way.
fn set_path(table: &mut toml::Table, parts: &[&str], value: toml::Value) -> Result<(), String> {
    match parts {
        [] => Ok(()),
        [last] => {
            table.insert((*last).to_string(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry((*first).to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err((*first).to_string()),
            }
        }
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // `x = <raw>` parses when raw is a TOML literal (number, bool, array, quoted string).
    match format!("x = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_REDIS: &str = r#"
[server]
listen = "127.0.0.1:8081"
api_token = "0123456789abcdef0123"

[redis]
url = "redis://127.0.0.1:6379/"
"#;

    fn est(ca: &Path) -> String {
        format!(
            r#"
[est]
parent_domain = "iot.example.test"
ca_certs_file = "{0}"
[[est.manufacturers]]
name = "test-mfr"
idevid_ca_file = "{0}"
"#,
            ca.display()
        )
    }

    const ACME: &str = r#"
[acme]
directory_url = "https://127.0.0.1:14000/dir"
"#;

    const DNS: &str = r#"
[dns]
server = "127.0.0.1:5353"
zone = "example.test"
key_name = "estuary-key"
secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
"#;

    fn sample(ca: &Path) -> String {
        format!("{SERVER_REDIS}{}{ACME}{DNS}", est(ca))
    }

    /// `[brski]` with `[brski.cloud]`; every file is `any` (validation only checks they exist).
    fn cloud(any: &Path) -> String {
        let f = format!("{:?}", any.display().to_string());
        format!(
            r#"
[brski]
registrar_cert_file = {f}
registrar_key_file = {f}
[[brski.manufacturers]]
name = "acme-devices"
idevid_ca_file = {f}
masa_ca_file = {f}
[brski.cloud]
[[brski.cloud.owners]]
name = "acme"
serials = ["SN-1"]
redirect_url = "https://registrar.acme.example/.well-known/brski"
"#
        )
    }

    fn teap(any: &Path) -> String {
        let f = format!("{:?}", any.display().to_string());
        format!(
            r#"
[teap]
listen = "127.0.0.1:1812"
cert_file = {f}
key_file = {f}
client_ca_file = {f}
clients = [{{ address = "127.0.0.1", secret = "radius-secret-0123456789" }}]
"#
        )
    }

    fn enrolment(cfg: &Config) -> &Enrolment {
        cfg.enrolment.as_ref().expect("the EST sections")
    }

    fn ca_file() -> tempfile_path::Path {
        tempfile_path::Path::new()
    }

    mod tempfile_path {
        pub struct Path(pub std::path::PathBuf);
        impl Path {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "estuary-config-test-{}-{:?}.pem",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let key = rcgen::KeyPair::generate().expect("key");
                let pem = rcgen::CertificateParams::new(Vec::<String>::new())
                    .expect("params")
                    .self_signed(&key)
                    .expect("self-signed")
                    .pem();
                std::fs::write(&p, pem).expect("write temp file");
                Self(p)
            }
        }
        impl Drop for Path {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn manufacturers_are_required_checked_and_kept_apart() {
        let ca = ca_file();
        let other = tempfile_path::Path(ca.0.with_extension("other.pem"));
        let key = rcgen::KeyPair::generate().expect("key");
        let pem = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("self-signed")
            .pem();
        std::fs::write(&other.0, pem).expect("write");
        let base = |manufacturers: &str| {
            format!(
                "{SERVER_REDIS}\n[est]\nparent_domain = \"iot.example.test\"\nca_certs_file = {:?}\n{manufacturers}{ACME}{DNS}",
                ca.0.display().to_string()
            )
        };
        let problems = |text: String| match Config::from_toml(&text, Vec::new()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        let p = problems(base(""));
        assert!(
            p.iter()
                .any(|m| m.starts_with("est.manufacturers: at least one")),
            "{p:?}"
        );
        let f = |p: &tempfile_path::Path| format!("{:?}", p.0.display().to_string());
        let p = problems(base(&format!(
            "[[est.manufacturers]]\nname = \"a\"\nidevid_ca_file = {}\nserial_pattern = \"AD-*\"\n\
             [[est.manufacturers]]\nname = \"b\"\nidevid_ca_file = {}\n",
            f(&ca),
            f(&other)
        )));
        assert!(
            p.iter()
                .any(|m| m.contains("manufacturers a and b can name the same device")),
            "{p:?}"
        );
        let p = problems(base(&format!(
            "[[est.manufacturers]]\nname = \"a\"\nidevid_ca_file = {}\nserial_pattern = \"AD-*\"\n\
             [[est.manufacturers]]\nname = \"b\"\nidevid_ca_file = {}\nname_prefix = \"b-\"\n",
            f(&ca),
            f(&other)
        )));
        assert!(p.is_empty(), "{p:?}");
        let p = problems(base(
            "[[est.manufacturers]]\nname = \"bad name\"\nidevid_ca_file = \"/nonexistent.pem\"\nname_prefix = \"UP\"\n",
        ));
        for want in [
            "est.manufacturers[0].name:",
            "est.manufacturers[0].idevid_ca_file: cannot read /nonexistent.pem",
            "est.manufacturers[0].name_prefix:",
        ] {
            assert!(p.iter().any(|m| m.starts_with(want)), "{want}: {p:?}");
        }
    }

    #[test]
    fn a_complete_file_loads_with_defaults() {
        let ca = ca_file();
        let cfg = Config::from_toml(&sample(&ca.0), Vec::new()).expect("valid config");
        let e = enrolment(&cfg);
        assert_eq!(e.enroll.budget_ms, 2000);
        assert_eq!(e.acme.order_attempts, 3);
        // Within about two minutes a device hears that the CA is stuck (503 + Retry-After).
        assert_eq!(e.acme.order_timeout_s, 90);
        assert_eq!(e.acme.request_timeout_ms, 10_000);
        // Limits (seed §8.1).
        assert_eq!(e.acme.dns_batch_max_queue, 1000);
        assert_eq!(e.acme.rate_limit_backoff_s, 300);
        assert_eq!(e.acme.rate_limit_backoff_max_s, 3600);
        assert_eq!(e.enroll.max_inflight_orders, 100);
        assert_eq!(e.enroll.max_queued_orders, 400);
        assert_eq!(e.parent.as_str(), "iot.example.test");
        assert!(e.teap.is_none());
        assert_eq!(cfg.redis.key_prefix, "estuary");
        assert!(!cfg.is_cloud_registrar());
    }

    fn with_labels(ca: &Path, labels: &str) -> String {
        format!("{SERVER_REDIS}{}{ACME}{labels}{DNS}", est(ca))
    }

    /// `[[acme.labels]]`: each label an `[acme]` of its own, with `name` and `ca_certs_file`.
    #[test]
    fn labels_are_acme_sections_of_their_own() {
        let ca = ca_file();
        let text = with_labels(
            &ca.0,
            &format!(
                r#"profile = "classic"
[[acme.labels]]
name = "factory-a"
ca_certs_file = {:?}
directory_url = "https://127.0.0.1:15000/directory"
profile = "shortlived"
order_timeout_s = 30
preauthorize = false
"#,
                ca.0
            ),
        );
        let cfg = Config::from_toml(&text, Vec::new()).expect("valid config");
        let e = enrolment(&cfg);
        assert_eq!(e.acme.profile.as_deref(), Some("classic"));
        let [l] = e.acme.labels.as_slice() else {
            panic!("one label")
        };
        assert_eq!(l.name, "factory-a");
        assert_eq!(l.acme.directory_url, "https://127.0.0.1:15000/directory");
        assert_eq!(l.acme.profile.as_deref(), Some("shortlived"));
        assert_eq!(l.acme.order_timeout_s, 30);
        assert!(!l.acme.preauthorize);
        // Defaults are [acme]'s defaults, not [acme]'s values.
        assert_eq!(l.acme.order_attempts, 3);
        // The label's CA issues LDevIDs too.
        assert_eq!(e.trust.acme_issuers.len(), 2);
    }

    #[test]
    fn bad_labels_are_refused_with_their_field() {
        let ca = ca_file();
        let entry = |name: &str, extra: &str| {
            format!(
                "[[acme.labels]]\nname = {name:?}\nca_certs_file = {:?}\ndirectory_url = \"https://127.0.0.1:1/d\"\n{extra}\n",
                ca.0
            )
        };
        for (labels, want) in [
            (
                entry("default", ""),
                "acme.labels[0].name: \"default\" is reserved",
            ),
            (entry("cacerts", ""), "acme.labels[0].name: an EST label"),
            (entry("a/b", ""), "acme.labels[0].name: an EST label"),
            (
                format!("{}{}", entry("a", ""), entry("a", "")),
                "acme.labels[1].name: \"a\" is listed twice",
            ),
            (
                entry("a", "order_attempts = 0"),
                "acme.labels[0].order_attempts",
            ),
            (entry("a", "profile = \"\""), "acme.labels[0].profile"),
            (entry("a", "colour = \"blue\""), "unknown field `colour`"),
            (
                "[[acme.labels]]\nname = \"a\"\ndirectory_url = \"https://x/d\"\n".into(),
                "missing field `ca_certs_file`",
            ),
            (
                entry("a", "ca_certs_file = 1").replacen(
                    &format!("ca_certs_file = {:?}\n", ca.0),
                    "",
                    1,
                ),
                "`ca_certs_file` must be a string",
            ),
            (
                entry("a", "").replace(&format!("{:?}", ca.0), "\"/nonexistent/ca.pem\""),
                "acme.labels[0].ca_certs_file",
            ),
        ] {
            let err = Config::from_toml(&with_labels(&ca.0, &labels), Vec::new())
                .expect_err(&labels)
                .to_string();
            assert!(err.contains(want), "{labels}\n→ {err}");
        }
    }

    #[test]
    fn the_trust_bundle_file_is_optional_and_needs_an_existing_directory() {
        let ca = ca_file();
        let cfg = Config::from_toml(&sample(&ca.0), Vec::new()).expect("valid config");
        assert_eq!(enrolment(&cfg).est.trust_bundle_file, None);
        let with = |path: &str| {
            sample(&ca.0).replace(
                "\n[[est.manufacturers]]",
                &format!("\ntrust_bundle_file = {path:?}\n[[est.manufacturers]]"),
            )
        };
        let dir = std::env::temp_dir();
        let good = dir.join("estuary-trust-bundle.pem");
        let cfg = Config::from_toml(&with(&good.display().to_string()), Vec::new())
            .expect("valid config");
        assert_eq!(enrolment(&cfg).est.trust_bundle_file, Some(good));
        for bad in [
            "/nonexistent-estuary-dir/bundle.pem".to_string(),
            dir.display().to_string(),
        ] {
            let err = Config::from_toml(&with(&bad), Vec::new()).expect_err("refused");
            assert!(
                err.to_string().contains("est.trust_bundle_file"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let ca = ca_file();
        let text = sample(&ca.0)
            .replace("iot.example.test", "-bad-.example.test")
            .replace("0123456789abcdef0123", "short")
            .replace("redis://127.0.0.1:6379/", "http://nope")
            + "\n[enroll]\nbudget_ms = 10\nfrobnicate = true\n[extra]\nx = 1\n";
        let err = Config::from_toml(&text, Vec::new()).expect_err("invalid");
        let all = err.to_string();
        for needle in [
            "est.parent_domain",
            "server.api_token",
            "redis.url",
            "frobnicate",
            "unknown section `extra`",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(err.0.len() >= 5, "{all}");
    }

    #[test]
    fn limits_are_checked() {
        let ca = ca_file();
        let env = vec![
            (
                "ESTUARY_ACME__DNS_BATCH_MAX_QUEUE".to_string(),
                "0".to_string(),
            ),
            ("ESTUARY_ACME__RATE_LIMIT_BACKOFF_S".into(), "600".into()),
            ("ESTUARY_ACME__RATE_LIMIT_BACKOFF_MAX_S".into(), "60".into()),
            ("ESTUARY_ENROLL__MAX_INFLIGHT_ORDERS".into(), "0".into()),
        ];
        let err = Config::from_toml(&sample(&ca.0), env).expect_err("invalid limits");
        for want in [
            "acme.dns_batch_max_queue: must be at least 1",
            "acme.rate_limit_backoff_max_s: must not be below rate_limit_backoff_s",
            "enroll.max_inflight_orders: must be at least 1",
        ] {
            assert!(err.0.iter().any(|p| p == want), "{want}: {err}");
        }
        // No queue at all is allowed: past the cap, refuse at once.
        let env = vec![(
            "ESTUARY_ENROLL__MAX_QUEUED_ORDERS".to_string(),
            "0".to_string(),
        )];
        let cfg = Config::from_toml(&sample(&ca.0), env).expect("valid");
        assert_eq!(enrolment(&cfg).enroll.max_queued_orders, 0);
    }

    #[test]
    fn environment_overrides_keys_and_types() {
        let ca = ca_file();
        let env = vec![
            ("ESTUARY_ENROLL__BUDGET_MS".to_string(), "250".to_string()),
            (
                "ESTUARY_SERVER__API_TOKEN".to_string(),
                "from-the-environment-123".to_string(),
            ),
            ("ESTUARY_EST__KEYS__ALLOW_ED25519".into(), "false".into()),
            ("UNRELATED".into(), "x".into()),
        ];
        let cfg = Config::from_toml(&sample(&ca.0), env).expect("valid");
        assert_eq!(enrolment(&cfg).enroll.budget_ms, 250);
        assert_eq!(cfg.server.api_token.expose(), "from-the-environment-123");
        assert!(!enrolment(&cfg).est.keys.allow_ed25519);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let ca = ca_file();
        let cfg = Config::from_toml(&sample(&ca.0), Vec::new()).expect("valid");
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
        assert!(!dbg.contains("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"), "{dbg}");
    }

    #[test]
    fn a_missing_section_is_named() {
        let err = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:1\"\napi_token = \"0123456789abcdef0\"\n",
            Vec::new(),
        )
        .expect_err("incomplete");
        let all = err.to_string();
        for s in ["[est]", "[acme]", "[dns]", "[redis]"] {
            assert!(all.contains(s), "{all}");
        }
    }

    /// Without `[brski.cloud]` (a plain registrar here) each EST section is required, one
    /// problem per missing section as always.
    #[test]
    fn without_a_cloud_registrar_each_est_section_is_required() {
        let any = ca_file();
        let brski = cloud(&any.0);
        let plain = &brski[..brski.find("[brski.cloud]").expect("cloud part")];
        let text = format!("{SERVER_REDIS}{ACME}{plain}");
        let err = Config::from_toml(&text, Vec::new()).expect_err("incomplete");
        assert_eq!(
            err.0,
            ["missing section [est]", "missing section [dns]"],
            "{err}"
        );
    }

    #[test]
    fn a_cloud_registrar_alone_needs_no_est_sections() {
        let any = ca_file();
        let text = format!("{SERVER_REDIS}{}", cloud(&any.0));
        let cfg = Config::from_toml(&text, Vec::new()).expect("valid cloud-only config");
        assert!(cfg.enrolment.is_none());
        assert!(cfg.is_cloud_registrar());
        assert_eq!(cfg.redis.url.expose(), "redis://127.0.0.1:6379/");
    }

    #[test]
    fn a_cloud_registrar_may_serve_est_too() {
        let any = ca_file();
        let text = format!("{}{}{}", sample(&any.0), cloud(&any.0), teap(&any.0));
        let cfg = Config::from_toml(&text, Vec::new()).expect("valid");
        assert!(cfg.is_cloud_registrar());
        let e = enrolment(&cfg);
        assert_eq!(e.parent.as_str(), "iot.example.test");
        assert!(e.teap.is_some());
    }

    #[test]
    fn a_cloud_registrar_with_some_est_sections_names_the_missing_ones() {
        let any = ca_file();
        let text = format!("{SERVER_REDIS}{}{ACME}{}", est(&any.0), cloud(&any.0));
        let err = Config::from_toml(&text, Vec::new()).expect_err("partial");
        assert_eq!(err.0.len(), 1, "{err}");
        let p = &err.0[0];
        assert!(p.starts_with("missing section(s) [dns]:"), "{p}");
        assert!(p.contains("given: [est], [acme]"), "{p}");

        // An environment override creates its section; the problem says where it came from.
        let env = vec![("ESTUARY_DNS__SECRET".to_string(), "c2VjcmV0".to_string())];
        let text = format!("{SERVER_REDIS}{}", cloud(&any.0));
        let err = Config::from_toml(&text, env).expect_err("partial");
        let all = err.to_string();
        assert!(all.contains("missing section(s) [est], [acme]:"), "{all}");
        assert!(
            all.contains("given: [dns] (from ESTUARY_DNS__* in the environment)"),
            "{all}"
        );
    }

    #[test]
    fn a_cloud_registrar_alone_refuses_teap_and_enroll() {
        let any = ca_file();
        let text = format!(
            "{SERVER_REDIS}{}{}[enroll]\nbudget_ms = 100\n",
            cloud(&any.0),
            teap(&any.0)
        );
        let err = Config::from_toml(&text, Vec::new()).expect_err("teap without EST");
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(
            err.0
                .iter()
                .any(|p| p.starts_with("[teap] needs [est], [acme] and [dns]")),
            "{err}"
        );
        assert!(
            err.0
                .iter()
                .any(|p| p.starts_with("[enroll] needs [est], [acme] and [dns]")),
            "{err}"
        );
    }

    /// Problems in the other sections are still reported with the cloud-only ones.
    #[test]
    fn a_cloud_registrar_reports_every_problem_at_once() {
        let any = ca_file();
        let text = format!("{SERVER_REDIS}{ACME}{}{}", cloud(&any.0), teap(&any.0))
            .replace("0123456789abcdef0123", "short")
            .replace("https://127.0.0.1:14000/dir", "ftp://ca");
        let err = Config::from_toml(&text, Vec::new()).expect_err("invalid");
        let all = err.to_string();
        for needle in [
            "server.api_token",
            "acme.directory_url",
            "missing section(s) [est], [dns]",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn replicas_confirm_cached_certificates_by_default_only_on_replicated_topologies() {
        let cfg = |url: &str, acks: Option<u32>| RedisConfig {
            url: Secret::new(url.into()),
            username: None,
            password: None,
            key_prefix: default_prefix(),
            replica_acks: acks,
            replica_ack_timeout_ms: default_replica_ack_timeout_ms(),
        };
        assert_eq!(cfg("redis://redis:6379/", None).replicas_to_wait(), 0);
        assert_eq!(cfg("rediss://redis:6380/", None).replicas_to_wait(), 0);
        assert_eq!(
            cfg("redis+sentinel://s1:26379/m", None).replicas_to_wait(),
            1
        );
        assert_eq!(
            cfg("rediss+cluster://n1:7000,n2:7001/", None).replicas_to_wait(),
            1
        );
        assert_eq!(
            cfg("redis+cluster://n1:7000/", Some(0)).replicas_to_wait(),
            0
        );
        assert_eq!(cfg("redis://redis:6379/", Some(2)).replicas_to_wait(), 2);
    }

    #[test]
    fn redis_credentials_go_into_the_url_percent_encoded() {
        let cfg = |url: &str, username: Option<&str>, password: Option<&str>| RedisConfig {
            url: Secret::new(url.into()),
            username: username.map(str::to_owned),
            password: password.map(|p| Secret::new(p.into())),
            key_prefix: default_prefix(),
            replica_acks: None,
            replica_ack_timeout_ms: default_replica_ack_timeout_ms(),
        };
        let c = cfg(
            "rediss://redis:6380/2",
            Some("estuary"),
            Some("p@ss:w/rd%41"),
        );
        let url = c.connection_url().expect("url");
        assert_eq!(
            url.expose(),
            "rediss://estuary:p%40ss%3Aw%2Frd%2541@redis:6380/2"
        );
        assert!(!format!("{c:?}").contains("p@ss"), "{c:?}");
        // What the redis crate reads back.
        let info = redis::IntoConnectionInfo::into_connection_info(url.expose()).expect("info");
        assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd%41"));
        assert_eq!(info.redis_settings().username(), Some("estuary"));
        // The password alone (requirepass), or only in the URL.
        let plain = cfg("redis://redis:6379/", None, Some("pw")).connection_url();
        assert_eq!(plain.expect("url").expose(), "redis://:pw@redis:6379/");
        let in_url = cfg("redis://:pw@redis:6379/", None, None).connection_url();
        assert_eq!(in_url.expect("url").expose(), "redis://:pw@redis:6379/");
        // Both, or a username alone, are problems that name the keys.
        let both = cfg("redis://:a@redis/", None, Some("b")).connection_url();
        assert!(both.expect_err("both").starts_with("redis.password:"));
        let alone = cfg("redis://redis/", Some("u"), None).connection_url();
        assert!(alone
            .expect_err("username alone")
            .starts_with("redis.username:"));

        // Through Sentinel: the credentials are the master's, put before the Sentinel list.
        let s = cfg(
            "redis+sentinel://s1:26379,s2:26379/mymaster/1",
            Some("estuary"),
            Some("p@ss"),
        )
        .connection_url()
        .expect("sentinel url");
        assert_eq!(
            s.expose(),
            "redis+sentinel://estuary:p%40ss@s1:26379,s2:26379/mymaster/1"
        );
        let t = crate::support::redis_topology::SentinelTarget::parse(s.expose())
            .expect("parses")
            .expect("a Sentinel URL");
        assert_eq!(t.userinfo.as_deref(), Some("estuary:p%40ss"));
        let both = cfg("redis+sentinel://:a@s1:26379/m", None, Some("b")).connection_url();
        assert!(both.expect_err("both").starts_with("redis.password:"));
        let bad = cfg("redis+sentinel://s1/m", None, None).connection_url();
        assert!(bad.expect_err("no port").contains("HOST:PORT"));

        // Redis Cluster: the same credentials for every node, and no database.
        let c = cfg("redis+cluster://n1:7000,n2:7000/", None, Some("p@ss"))
            .connection_url()
            .expect("cluster url");
        assert_eq!(c.expose(), "redis+cluster://:p%40ss@n1:7000,n2:7000/");
        let t = crate::support::redis_topology::ClusterTarget::parse(c.expose())
            .expect("parses")
            .expect("a Cluster URL");
        assert_eq!(t.userinfo.as_deref(), Some(":p%40ss"));
        let db = cfg("redis+cluster://n1:7000/1", None, None).connection_url();
        assert!(db.expect_err("a DB").contains("only database 0"));
        let mut braces = cfg("redis+cluster://n1:7000/", None, None);
        braces.key_prefix = "estuary{a}".into();
        let braces = braces.connection_url().expect_err("braces");
        assert!(braces.starts_with("redis.key_prefix:"), "{braces}");
    }

    #[test]
    fn the_account_key_file_must_be_a_p256_pkcs8_key() {
        let ca = ca_file();
        let key_file = tempfile_path::Path(ca.0.with_extension("account.pem"));
        let with_key = |path: &Path| {
            let env = vec![(
                "ESTUARY_ACME__ACCOUNT_KEY_FILE".to_string(),
                path.display().to_string(),
            )];
            Config::from_toml(&sample(&ca.0), env)
        };
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        std::fs::write(&key_file.0, p256.serialize_pem()).expect("write");
        let cfg = with_key(&key_file.0).expect("a P-256 PKCS#8 key");
        let der = enrolment(&cfg).acme.account_key().expect("read");
        assert_eq!(der, Some(p256.serialize_der()));
        for (pem, problem) in [
            (
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
                    .expect("key")
                    .serialize_pem(),
                "is not a P-256",
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".into(),
                "holds no PKCS#8",
            ),
        ] {
            std::fs::write(&key_file.0, pem).expect("write");
            let all = with_key(&key_file.0).expect_err("refused").to_string();
            assert!(
                all.contains("acme.account_key_file:") && all.contains(problem),
                "{all}"
            );
            assert!(!all.contains("AAAA"), "{all}");
        }
        let all = with_key(Path::new("/nonexistent/key.pem"))
            .expect_err("missing")
            .to_string();
        assert!(
            all.contains("acme.account_key_file: cannot read /nonexistent/key.pem"),
            "{all}"
        );
    }

    /// `ESTUARY_BRSKI__CLOUD` takes a TOML inline table (config.rs reads override values as TOML).
    #[test]
    fn the_cloud_section_can_come_from_the_environment() {
        let dir = estuary_tests::util::TempDir::new("cloud-env").expect("tmp");
        let file = |n: &str, body: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, body).expect("write");
            format!("{:?}", p.display().to_string())
        };
        let any = "placeholder\n";
        let pin = file(
            "globex.pem",
            &crate::config::brski::test_support::self_signed_pem(),
        );
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:8081"
api_token = "0123456789abcdef0123"
[est]
parent_domain = "iot.example.test"
ca_certs_file = {}
[[est.manufacturers]]
name = "m"
idevid_ca_file = {}
[acme]
directory_url = "https://127.0.0.1:14000/dir"
[dns]
server = "127.0.0.1:5353"
zone = "example.test"
key_name = "estuary-key"
secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
[redis]
url = "redis://127.0.0.1:6379/"
[brski]
registrar_cert_file = {}
registrar_key_file = {}
[[brski.manufacturers]]
name = "m"
idevid_ca_file = {}
masa_ca_file = {}
"#,
            file(
                "ca.pem",
                &crate::config::brski::test_support::self_signed_pem()
            ),
            file(
                "m-ca.pem",
                &crate::config::brski::test_support::self_signed_pem()
            ),
            file("reg.pem", any),
            file("reg.key", any),
            file("m.pem", any),
            file("masa.pem", any),
        );
        let cloud = format!(
            r#"{{ owners = [ {{ name = "acme", serials = ["SN-1"], redirect_url = "https://registrar.acme.example:8443/.well-known/brski" }}, {{ name = "globex", est_url = "https://est.globex.example/.well-known/est", pinned_domain_cert_file = {pin} }} ] }}"#
        );
        let env = vec![("ESTUARY_BRSKI__CLOUD".to_string(), cloud)];
        let cfg = Config::from_toml(&text, env).expect("valid");
        let owners = cfg
            .brski
            .and_then(|b| b.cloud)
            .map(|c| c.owners)
            .unwrap_or_default();
        let names: Vec<&str> = owners.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["acme", "globex"]);
        assert_eq!(owners[0].serials, ["SN-1"]);
        assert!(owners[1].pinned_domain_cert_file.is_some());

        // A bad inline table is reported like a bad file.
        let env = vec![(
            "ESTUARY_BRSKI__CLOUD".to_string(),
            r#"{ owners = [ { name = "acme", redirect_url = "http://r.example/" } ] }"#.to_string(),
        )];
        let err = Config::from_toml(&text, env).expect_err("invalid");
        assert!(
            err.to_string().contains(
                "brski.cloud.owners[0].redirect_url: \"http://r.example/\" is not an https URL"
            ),
            "{err}"
        );
    }
}
