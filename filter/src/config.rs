//! Plugin configuration: JSON, parsed once in `on_configure`.
//!
//! Every field is read with serde on its own, so that ALL problems are found in one pass (an unknown
//! field is an error, as with `#[serde(deny_unknown_fields)]`), then the filter refuses to start with
//! one log line naming each bad field. Example:
//!
//! ```json
//! {
//!   "role": "registrar",
//!   "control_plane": {"cluster": "estuary_cp", "authority": "control-plane",
//!                     "token": "…", "timeout_ms": 5000},
//!   "parent_domain": "iot.example.test",
//!   "keys": {"rsa_min_bits": 2048, "rsa_max_bits": 4096,
//!            "allow_p256": true, "allow_p384": true, "allow_ed25519": true},
//!   "max_body_bytes": 16384,
//!   "labels": {"arbitrary-label": "default"},
//!   "cache_ttl_s": 300,
//!   "learn_interval_s": 30,
//!   "csr_signature_cache": {"max_entries": 4096, "ttl_s": 3600},
//!   "csrattrs_cache": {"max_entries": 4096},
//!   "enroll_answer_cache": {"max_entries": 4096, "ttl_s": 60},
//!   "manufacturers": [{"name": "acme", "ca_pem": "-----BEGIN CERTIFICATE-----\n…",
//!                      "serial_pattern": "DEMO-*"}]
//! }
//! ```
//!
//! - `control_plane.token` or `control_plane.token_env` (exactly one): the bearer token itself, or
//!   the name of an environment variable of the Wasm VM that holds it, read here, in
//!   `on_configure` (Envoy: `vm_config.environment_variables`, e.g. `host_env_keys` to pass on
//!   the proxy's own variable; Istio: WasmPlugin `vmConfig.env` with `valueFrom: HOST`). An unset
//!   or empty variable is a configuration problem that names the variable, never its value.
//! - `authorities` (optional, both roles): the hosts this server answers for, each a DNS name or
//!   an IP address (e.g. `["est.example.com"]`). When given, a request on an EST or BRSKI path
//!   whose `:authority` host (port dropped, case ignored) is not listed gets 421 Misdirected
//!   Request at the edge; other paths pass untouched. Absent: no check. See [`crate::authority`].
//! - `role`: `"registrar"` (the default: EST and BRSKI for the domain, `parent_domain` required)
//!   or `"cloud-registrar"` (a BRSKI cloud registrar, draft-ietf-anima-brski-cloud: BRSKI only,
//!   every `/.well-known/est/…` request is answered 404 at the edge; `parent_domain` optional,
//!   `labels` and `manufacturers` not allowed).
//! - `manufacturers` (registrar role, **required**, at least one): whose IDevIDs are accepted.
//!   An IDevID client certificate is accepted only if one of these CAs issued it (directly, or
//!   through one intermediate CA that Envoy reports in the XFCC `Chain`, so Envoy needs
//!   `set_current_client_cert_details: {cert: true, chain: true}`) and its subject serialNumber
//!   matches that entry's `serial_pattern` (default `"*"`). The device is then named
//!   `<name_prefix><serial, lower-cased>.<parent_domain>`; `name_prefix` (optional, 1 to 32 of
//!   `a-z 0-9 -`) keeps manufacturers apart. Two entries whose prefixed serial patterns can
//!   produce the same name are a configuration problem. See [`estuary_proto::identity`].
//! - `csr_signature_cache` (optional): remembers, in the proxy's shared data, the SHA-256 of each
//!   exact CSR whose signature verified, so that the same bytes sent again skip the signature
//!   check (identical bytes verify identically), and of each exact client certificate with the
//!   CA whose signature on it verified
//!   ([`estuary_proto::cms_signed::issued_by_digest`]). Only the signature checks are skipped:
//!   which CA issued the client certificate, the name, key and content policy are checked on
//!   every request. `max_entries`
//!   (default 4096, at most 65536; 40 bytes each) bounds it, the oldest entries are evicted
//!   first, and each entry expires after `ttl_s` seconds (default 3600, at most 86400). Either at
//!   0 turns the cache off. The shared data is shared by every plugin with the same `vm_id`:
//!   give this filter a `vm_id` no untrusted plugin uses. See [`crate::cache`].
//! - `csrattrs_cache` (optional): how many devices' `/csrattrs` answers the proxy's shared data
//!   keeps, each for `cache_ttl_s`: `max_entries` (default 4096, at most 65536; about 180 bytes
//!   each), in a fixed set of keys, the oldest evicted first, so the memory stays bounded
//!   however many devices ask. 0 turns it off (every request then reaches the control plane).
//! - `enroll_answer_cache` (optional): remembers the control plane's `200` answer (the issued
//!   certificate, certs-only PKCS#7) to a `simpleenroll` or `simplereenroll`, keyed by the
//!   SHA-256 of the operation, the EST label, the exact client certificate and the exact CSR
//!   ([`crate::cache::enrolled_digest`]). The same client certificate posting the same CSR
//!   again within `ttl_s` (default 60, at most 3600) gets that answer from the edge, after every
//!   check the edge makes (who the client is, the CSR's signature, name, key and content
//!   policy): it receives the certificate it was already given, nothing more. `max_entries`
//!   (default 4096, at most 65536; about 1.3 KB each with a one-certificate answer) in a fixed
//!   set of keys, the oldest evicted first. Either at 0 turns it off. `serverkeygen` answers
//!   (they carry a private key) and every other status are never cached.
//! - `acme_ca_pem` (registrar role, **required**): PEM of the ACME CA's certificates that issue
//!   LDevIDs (its root(s) and/or issuing intermediate(s)). A client certificate is an LDevID
//!   (for `simplereenroll`) only if one of these issued it, directly or through one CA of the
//!   XFCC `Chain`, and it names exactly one device under `parent_domain`.
//! - `learn_interval_s` (registrar role, default 30, 0 = off, at most 86400): every so often the
//!   filter fetches `/cacerts` (unlabelled and each label) from the control plane and keeps the
//!   certificates; when a client certificate's issuer is unknown, they may build the path from
//!   the leaf to `acme_ca_pem` (a device that presents its end-entity certificate alone after
//!   the ACME CA moved to a new intermediate). They are not trusted themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use estuary_proto::cert::CertSummary;
use estuary_proto::est::EstLabel;
use estuary_proto::names::ParentDomain;
use estuary_proto::policy::KeyPolicy;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::authority::ServerHost;
use estuary_proto::identity::{
    check_namespaces, name_prefix_or_none, serial_pattern_or_any, Manufacturer, ManufacturerName,
    NamePrefix, SerialPattern, TrustPolicy, NAME_RULE,
};

/// Default control-plane call timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16384;
/// Default period of the root context's `/cacerts` fetches that learn the ACME CA's new
/// intermediates (`learn_interval_s`).
pub const DEFAULT_LEARN_INTERVAL_S: u64 = 30;

/// Default cache lifetime for cacerts / csrattrs.
pub const DEFAULT_CACHE_TTL_S: u64 = 300;
/// Default most entries of the verified-CSR-signature cache.
pub const DEFAULT_CSR_CACHE_MAX_ENTRIES: u32 = 4096;
/// Largest accepted `csr_signature_cache.max_entries`.
pub const MAX_CSR_CACHE_MAX_ENTRIES: u32 = 65536;
/// Default lifetime of a verified-CSR-signature entry, in seconds.
pub const DEFAULT_CSR_CACHE_TTL_S: u64 = 3600;
/// Default most enrolment answers cached at the edge (`enroll_answer_cache.max_entries`).
pub const DEFAULT_ENROLL_CACHE_MAX_ENTRIES: u32 = 4096;
/// Default lifetime of a cached enrolment answer, in seconds (`enroll_answer_cache.ttl_s`).
pub const DEFAULT_ENROLL_CACHE_TTL_S: u64 = 60;
/// Longest accepted `enroll_answer_cache.ttl_s`.
pub const MAX_ENROLL_CACHE_TTL_S: u64 = 3600;
/// Default most devices whose csrattrs answer is cached (`csrattrs_cache.max_entries`).
pub const DEFAULT_CSRATTRS_CACHE_MAX_ENTRIES: u32 = 4096;
/// Largest accepted `csrattrs_cache.max_entries`.
pub const MAX_CSRATTRS_CACHE_MAX_ENTRIES: u32 = 65536;
/// Envoy's default buffer limit; a larger body never reaches the filter.
pub const MAX_MAX_BODY_BYTES: u64 = 1 << 20;

/// The bearer credential for the control plane. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The secret itself, for the `authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Where and how to call the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Envoy cluster name for `dispatch_http_call`.
    pub cluster: String,
    /// `:authority` of the calls.
    pub authority: String,
    /// Bearer credential.
    pub token: BearerToken,
    /// Call timeout.
    pub timeout: Duration,
}

/// How large a shared-data cache may grow and how long its entries live
/// (`csr_signature_cache`, `enroll_answer_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBounds {
    /// Most entries kept (0: no cache).
    pub max_entries: u32,
    /// Lifetime of an entry, in seconds (0: no cache).
    pub ttl_s: u64,
}

impl CacheBounds {
    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.ttl_s > 0
    }
}

impl CacheBounds {
    /// The defaults of `csr_signature_cache`.
    pub const CSR_SIGNATURES: CacheBounds = CacheBounds {
        max_entries: DEFAULT_CSR_CACHE_MAX_ENTRIES,
        ttl_s: DEFAULT_CSR_CACHE_TTL_S,
    };
    /// The defaults of `enroll_answer_cache`.
    pub const ENROLL_ANSWERS: CacheBounds = CacheBounds {
        max_entries: DEFAULT_ENROLL_CACHE_MAX_ENTRIES,
        ttl_s: DEFAULT_ENROLL_CACHE_TTL_S,
    };
}

/// What the registrar role needs to serve EST.
#[derive(Debug, Clone)]
pub struct EstService {
    /// Who may be a client and what it is called: the parent domain, the manufacturers whose
    /// IDevIDs are accepted, the ACME CA certificates that issue LDevIDs.
    pub trust: TrustPolicy,
}

/// What this filter is, with what each role needs.
#[derive(Debug, Clone)]
pub enum Role {
    /// `"registrar"`: EST (RFC 7030) and BRSKI (RFC 8995) for the domain.
    Registrar(EstService),
    /// `"cloud-registrar"`: a BRSKI cloud registrar (draft-ietf-anima-brski-cloud). BRSKI only;
    /// it is not an EST server, so every EST request is 404.
    CloudRegistrar {
        /// Checked if given, shown in the start-up log; nothing else uses it.
        parent_domain: Option<ParentDomain>,
    },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The control plane.
    pub control_plane: ControlPlane,
    /// Registrar or cloud registrar.
    pub role: Role,
    /// Accepted CSR keys.
    pub keys: KeyPolicy,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// EST label -> profile.
    pub labels: BTreeMap<String, String>,
    /// Lifetime of cached cacerts / csrattrs answers, in seconds (0: no caching).
    pub cache_ttl_s: u64,
    /// Period of the `/cacerts` fetches that learn the ACME CA's intermediates, in seconds
    /// (0: never; re-enrolment then trusts `acme_ca_pem` and the presented chain only).
    pub learn_interval_s: u64,
    /// The cache of verified CSR signatures.
    pub csr_signature_cache: CacheBounds,
    /// The cache of the control plane's `200` answers to `simpleenroll`/`simplereenroll`.
    pub enroll_answer_cache: CacheBounds,
    /// Most devices whose csrattrs answer is cached (0: none), each for `cache_ttl_s`.
    pub csrattrs_max_entries: u32,
    /// Hosts EST and BRSKI are served for; `None`: any `:authority`.
    pub authorities: Option<Vec<ServerHost>>,
}

impl Config {
    /// The EST service, in the registrar role; `None` for a cloud registrar.
    pub fn est(&self) -> Option<&EstService> {
        match &self.role {
            Role::Registrar(est) => Some(est),
            Role::CloudRegistrar { .. } => None,
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the field, e.g. `control_plane.timeout_ms`.
    pub field: String,
    /// What is wrong with it (never the value of a secret).
    pub problem: String,
}

/// All the problems found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.field, p.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

struct Reader {
    problems: Vec<ConfigProblem>,
}

impl Reader {
    fn problem(&mut self, field: &str, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            field: field.to_string(),
            problem: problem.into(),
        });
    }

    /// Take `key` out of `obj` and deserialize it. `secret` hides serde's message (it may quote the value).
    fn take<T: DeserializeOwned>(
        &mut self,
        obj: &mut Map<String, Value>,
        prefix: &str,
        key: &str,
        secret: bool,
    ) -> Option<T> {
        let value = obj.remove(key)?;
        match serde_json::from_value::<T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let what = if secret {
                    "has the wrong type".to_string()
                } else {
                    e.to_string()
                };
                self.problem(&join(prefix, key), what);
                None
            }
        }
    }

    fn required<T: DeserializeOwned>(
        &mut self,
        obj: &mut Map<String, Value>,
        prefix: &str,
        key: &str,
        secret: bool,
    ) -> Option<T> {
        if !obj.contains_key(key) {
            self.problem(&join(prefix, key), "missing");
            return None;
        }
        self.take(obj, prefix, key, secret)
    }

    fn no_leftovers(&mut self, obj: Map<String, Value>, prefix: &str) {
        for key in obj.keys() {
            self.problem(&join(prefix, key), "unknown field");
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// Parse and check the plugin configuration, collecting every problem; `control_plane.token_env`
/// is read from the process (Wasm VM) environment.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigErrors> {
    parse_with_env(bytes, &|name: &str| std::env::var(name))
}

/// [`parse`], with `env` in place of the process environment.
pub fn parse_with_env(bytes: &[u8], env: &EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    let mut r = Reader {
        problems: Vec::new(),
    };
    let root: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            r.problem(
                "<configuration>",
                format!("not valid JSON (line {}, column {})", e.line(), e.column()),
            );
            return Err(ConfigErrors(r.problems));
        }
    };
    let Value::Object(mut obj) = root else {
        r.problem("<configuration>", "must be a JSON object");
        return Err(ConfigErrors(r.problems));
    };

    let control_plane = read_control_plane(&mut r, &mut obj, env);

    let cloud = match r.take::<String>(&mut obj, "", "role", false).as_deref() {
        None | Some("registrar") => false,
        Some("cloud-registrar") => true,
        Some(_) => {
            r.problem("role", "must be \"registrar\" or \"cloud-registrar\"");
            false
        }
    };

    let parent_domain = if cloud {
        r.take::<String>(&mut obj, "", "parent_domain", false)
    } else {
        r.required::<String>(&mut obj, "", "parent_domain", false)
    }
    .and_then(|s| match s.parse::<ParentDomain>() {
        Ok(p) => Some(p),
        Err(e) => {
            r.problem("parent_domain", e.to_string());
            None
        }
    });

    let keys = read_keys(&mut r, &mut obj);

    let max_body_bytes = r
        .take::<u64>(&mut obj, "", "max_body_bytes", false)
        .unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 || max_body_bytes > MAX_MAX_BODY_BYTES {
        r.problem(
            "max_body_bytes",
            format!("must be between 1 and {MAX_MAX_BODY_BYTES}"),
        );
    }

    let labels = r
        .take::<BTreeMap<String, String>>(&mut obj, "", "labels", false)
        .unwrap_or_default();
    for (label, profile) in &labels {
        let field = format!("labels.{label}");
        // The rule the control plane applies to `[[acme.labels]]` too.
        if EstLabel::parse(label).is_none() {
            r.problem(&field, EstLabel::RULE);
        }
        if profile.is_empty() {
            r.problem(&field, "profile must not be empty");
        }
    }

    let cache_ttl_s = r
        .take::<u64>(&mut obj, "", "cache_ttl_s", false)
        .unwrap_or(DEFAULT_CACHE_TTL_S);
    if cache_ttl_s > 86_400 {
        r.problem("cache_ttl_s", "must be at most 86400 (one day)");
    }

    let learn_interval_s = r
        .take::<u64>(&mut obj, "", "learn_interval_s", false)
        .unwrap_or(DEFAULT_LEARN_INTERVAL_S);
    if learn_interval_s > 86_400 {
        r.problem("learn_interval_s", "must be at most 86400 (one day)");
    }

    let csr_signature_cache = read_cache_bounds(
        &mut r,
        &mut obj,
        "csr_signature_cache",
        CacheBounds::CSR_SIGNATURES,
        86_400,
    );
    let enroll_answer_cache = read_cache_bounds(
        &mut r,
        &mut obj,
        "enroll_answer_cache",
        CacheBounds::ENROLL_ANSWERS,
        MAX_ENROLL_CACHE_TTL_S,
    );
    let csrattrs_max_entries = read_csrattrs_cache(&mut r, &mut obj);
    let authorities = read_authorities(&mut r, &mut obj);

    // Judged on what was written, not on the entries that survived checking.
    let manufacturers_listed =
        matches!(obj.get("manufacturers"), Some(Value::Array(a)) if !a.is_empty());
    let manufacturers = read_manufacturers(&mut r, &mut obj);
    let acme_issuers = read_acme_issuers(&mut r, &mut obj, !cloud);
    if !cloud && !obj_had_problem(&r, "manufacturers") && manufacturers.is_empty() {
        r.problem(
            "manufacturers",
            "missing: the registrar role needs at least one manufacturer (the CAs that issue \
             IDevIDs); Envoy's trusted CAs alone do not say who may get which name",
        );
    }
    for overlap in check_namespaces(&manufacturers) {
        r.problem("manufacturers", overlap.to_string());
    }

    if cloud {
        if !labels.is_empty() {
            r.problem(
                "labels",
                "not allowed in the cloud-registrar role: it serves no EST",
            );
        }
        if manufacturers_listed {
            r.problem(
                "manufacturers",
                "not allowed in the cloud-registrar role: it serves no EST",
            );
        }
        if !acme_issuers.is_empty() {
            r.problem(
                "acme_ca_pem",
                "not allowed in the cloud-registrar role: it serves no EST",
            );
        }
    }

    r.no_leftovers(obj, "");

    let role = if cloud {
        Some(Role::CloudRegistrar { parent_domain })
    } else {
        parent_domain.map(|parent| {
            Role::Registrar(EstService {
                trust: TrustPolicy {
                    parent,
                    manufacturers,
                    acme_issuers,
                },
            })
        })
    };

    match (control_plane, role, keys) {
        (Some(control_plane), Some(role), Some(keys)) if r.problems.is_empty() => Ok(Config {
            control_plane,
            role,
            keys,
            max_body_bytes,
            labels,
            cache_ttl_s,
            learn_interval_s,
            csr_signature_cache,
            enroll_answer_cache,
            csrattrs_max_entries,
            authorities,
        }),
        _ => Err(ConfigErrors(r.problems)),
    }
}

/// `manufacturers`: a list of `{name, ca_pem, serial_pattern?}`; each bad field named by index.
fn read_manufacturers(r: &mut Reader, obj: &mut Map<String, Value>) -> Vec<Manufacturer> {
    const P: &str = "manufacturers";
    let Some(value) = r.take::<Value>(obj, "", P, false) else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        r.problem(
            P,
            "must be a list of {name, ca_pem, serial_pattern} objects",
        );
        return Vec::new();
    };
    let mut out: Vec<Manufacturer> = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("{P}[{i}]");
        let Value::Object(mut m) = item else {
            r.problem(&prefix, "must be an object");
            continue;
        };
        let name = r
            .required::<String>(&mut m, &prefix, "name", false)
            .and_then(|s| {
                let field = join(&prefix, "name");
                if let Some((_, j)) = seen.iter().find(|(n, _)| *n == s) {
                    r.problem(&field, format!("duplicate of {P}[{j}].name"));
                    return None;
                }
                seen.push((s.clone(), i));
                let name = ManufacturerName::parse(&s);
                if name.is_none() {
                    r.problem(&field, NAME_RULE);
                }
                name
            });
        let ca_der = r
            .required::<String>(&mut m, &prefix, "ca_pem", false)
            .and_then(|pem| match one_certificate(&pem) {
                Ok(der) => Some(der),
                Err(problem) => {
                    r.problem(&join(&prefix, "ca_pem"), problem);
                    None
                }
            });
        let serial_pattern = r
            .take::<String>(&mut m, &prefix, "serial_pattern", false)
            .map_or(Ok(SerialPattern::any()), |s| {
                serial_pattern_or_any(Some(&s))
            })
            .map_err(|rule| r.problem(&join(&prefix, "serial_pattern"), rule))
            .ok();
        let name_prefix = r
            .take::<String>(&mut m, &prefix, "name_prefix", false)
            .map_or(Ok(NamePrefix::default()), |s| name_prefix_or_none(Some(&s)))
            .map_err(|rule| r.problem(&join(&prefix, "name_prefix"), rule))
            .ok();
        r.no_leftovers(m, &prefix);
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
    out
}

/// A cache's `{max_entries?, ttl_s?}` under `name`, each bounded (`max_entries` by
/// [`MAX_CSR_CACHE_MAX_ENTRIES`], `ttl_s` by `max_ttl_s`); absent: `default`.
fn read_cache_bounds(
    r: &mut Reader,
    obj: &mut Map<String, Value>,
    name: &str,
    default: CacheBounds,
    max_ttl_s: u64,
) -> CacheBounds {
    let Some(value) = r.take::<Value>(obj, "", name, false) else {
        return default;
    };
    let Value::Object(mut m) = value else {
        r.problem(name, "must be an object {max_entries, ttl_s}");
        return default;
    };
    let max_entries = r
        .take::<u32>(&mut m, name, "max_entries", false)
        .unwrap_or(default.max_entries);
    if max_entries > MAX_CSR_CACHE_MAX_ENTRIES {
        r.problem(
            &join(name, "max_entries"),
            format!("must be at most {MAX_CSR_CACHE_MAX_ENTRIES} (0 turns the cache off)"),
        );
    }
    let ttl_s = r
        .take::<u64>(&mut m, name, "ttl_s", false)
        .unwrap_or(default.ttl_s);
    if ttl_s > max_ttl_s {
        r.problem(
            &join(name, "ttl_s"),
            format!("must be at most {max_ttl_s} (0 turns the cache off)"),
        );
    }
    r.no_leftovers(m, name);
    CacheBounds { max_entries, ttl_s }
}

/// `csrattrs_cache`: `{max_entries?}`, bounded; absent: the default.
fn read_csrattrs_cache(r: &mut Reader, obj: &mut Map<String, Value>) -> u32 {
    const P: &str = "csrattrs_cache";
    let Some(value) = r.take::<Value>(obj, "", P, false) else {
        return DEFAULT_CSRATTRS_CACHE_MAX_ENTRIES;
    };
    let Value::Object(mut m) = value else {
        r.problem(P, "must be an object {max_entries}");
        return DEFAULT_CSRATTRS_CACHE_MAX_ENTRIES;
    };
    let max_entries = r
        .take::<u32>(&mut m, P, "max_entries", false)
        .unwrap_or(DEFAULT_CSRATTRS_CACHE_MAX_ENTRIES);
    if max_entries > MAX_CSRATTRS_CACHE_MAX_ENTRIES {
        r.problem(
            &join(P, "max_entries"),
            format!("must be at most {MAX_CSRATTRS_CACHE_MAX_ENTRIES} (0 turns the cache off)"),
        );
    }
    r.no_leftovers(m, P);
    max_entries
}

/// `authorities`: a non-empty list of DNS names or IP addresses; each bad entry named by index.
fn read_authorities(r: &mut Reader, obj: &mut Map<String, Value>) -> Option<Vec<ServerHost>> {
    const P: &str = "authorities";
    let list = r.take::<Vec<String>>(obj, "", P, false)?;
    if list.is_empty() {
        r.problem(P, "must name at least one host (leave it out for no check)");
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        match ServerHost::parse(s) {
            Some(h) => out.push(h),
            None => r.problem(
                &format!("{P}[{i}]"),
                "must be a DNS name or an IP address, without port or wildcard",
            ),
        }
    }
    Some(out)
}

/// Whether a problem was already recorded for `field` (or one of its parts).
fn obj_had_problem(r: &Reader, field: &str) -> bool {
    r.problems
        .iter()
        .any(|p| p.field == field || p.field.starts_with(&format!("{field}[")))
}

/// `acme_ca_pem`: one or more PEM certificates that parse, as DER; required when `required`.
fn read_acme_issuers(r: &mut Reader, obj: &mut Map<String, Value>, required: bool) -> Vec<Vec<u8>> {
    const P: &str = "acme_ca_pem";
    let pem = if required {
        r.required::<String>(obj, "", P, false)
    } else {
        r.take::<String>(obj, "", P, false)
    };
    let Some(pem) = pem else {
        return Vec::new();
    };
    let ders = match estuary_proto::pem::decode_certs(&pem) {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => {
            r.problem(P, "holds no PEM CERTIFICATE block");
            return Vec::new();
        }
        Err(e) => {
            r.problem(P, format!("must be PEM CERTIFICATE blocks: {e}"));
            return Vec::new();
        }
    };
    for (i, der) in ders.iter().enumerate() {
        if let Err(e) = CertSummary::from_der(der) {
            r.problem(
                P,
                format!("certificate {i} is not a readable X.509 certificate: {e}"),
            );
        }
    }
    ders
}

/// Exactly one PEM certificate that parses, as DER.
fn one_certificate(pem: &str) -> Result<Vec<u8>, String> {
    let ders = estuary_proto::pem::decode_certs(pem)
        .map_err(|e| format!("must be one PEM CERTIFICATE block: {e}"))?;
    let mut ders = ders.into_iter();
    let (Some(der), None) = (ders.next(), ders.next()) else {
        return Err(
            "must be exactly one PEM CERTIFICATE block (the CA that issues the IDevIDs)".into(),
        );
    };
    CertSummary::from_der(&der)
        .map_err(|e| format!("the PEM block is not a readable X.509 certificate: {e}"))?;
    Ok(der)
}

/// How `control_plane.token_env` is looked up: `std::env::var`, or a stand-in for tests.
pub type EnvLookup<'a> = dyn Fn(&str) -> Result<String, std::env::VarError> + 'a;

/// An environment variable name: 1 to 256 of A-Z a-z 0-9 _, not starting with a digit.
fn is_env_name(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The token, from `token` or from the variable `token_env` names (exactly one of the two).
fn read_token(r: &mut Reader, cp: &mut Map<String, Value>, env: &EnvLookup<'_>) -> Option<String> {
    const P: &str = "control_plane";
    match (cp.contains_key("token"), cp.contains_key("token_env")) {
        (true, true) => {
            cp.remove("token");
            cp.remove("token_env");
            r.problem(
                "control_plane.token_env",
                "give control_plane.token or control_plane.token_env, not both",
            );
            None
        }
        (false, false) => {
            r.problem(
                "control_plane.token",
                "missing (or give control_plane.token_env, the name of an environment variable that holds it)",
            );
            None
        }
        (true, false) => {
            let token = r.take::<String>(cp, P, "token", true);
            if token.as_deref().is_some_and(|t| !header_safe(t)) {
                r.problem(
                    "control_plane.token",
                    "must be non-empty printable ASCII without spaces",
                );
                return None;
            }
            token
        }
        (false, true) => {
            const F: &str = "control_plane.token_env";
            let name = r.take::<String>(cp, P, "token_env", false)?;
            if !is_env_name(&name) {
                r.problem(
                    F,
                    "must be an environment variable name: 1 to 256 of A-Z a-z 0-9 _, not starting with a digit",
                );
                return None;
            }
            // Problems name the variable, never its value.
            let problem = match env(&name) {
                Ok(v) if header_safe(&v) => return Some(v),
                Ok(v) if v.is_empty() => format!("environment variable {name} is empty"),
                Ok(_) => format!(
                    "environment variable {name} must hold printable ASCII without spaces or \
                     line breaks (a trailing newline from a file?)"
                ),
                Err(std::env::VarError::NotPresent) => format!(
                    "environment variable {name} is not set in the Wasm VM (Envoy: \
                     vm_config.environment_variables; Istio: WasmPlugin vmConfig.env)"
                ),
                Err(std::env::VarError::NotUnicode(_)) => {
                    format!("environment variable {name} is not valid UTF-8")
                }
            };
            r.problem(F, problem);
            None
        }
    }
}

fn read_control_plane(
    r: &mut Reader,
    obj: &mut Map<String, Value>,
    env: &EnvLookup<'_>,
) -> Option<ControlPlane> {
    const P: &str = "control_plane";
    let mut cp = match r.required::<Value>(obj, "", P, false)? {
        Value::Object(m) => m,
        _ => {
            r.problem(P, "must be an object");
            return None;
        }
    };
    let cluster = r.required::<String>(&mut cp, P, "cluster", false);
    if cluster.as_deref().is_some_and(str::is_empty) {
        r.problem("control_plane.cluster", "must not be empty");
    }
    let authority = r.required::<String>(&mut cp, P, "authority", false);
    if authority.as_deref().is_some_and(|a| !header_safe(a)) {
        r.problem(
            "control_plane.authority",
            "must be a non-empty host[:port] without spaces",
        );
    }
    let token = read_token(r, &mut cp, env);
    let timeout_ms = r
        .take::<u64>(&mut cp, P, "timeout_ms", false)
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=300_000).contains(&timeout_ms) {
        r.problem("control_plane.timeout_ms", "must be between 1 and 300000");
    }
    r.no_leftovers(cp, P);
    Some(ControlPlane {
        cluster: cluster?,
        authority: authority?,
        token: BearerToken(token?),
        timeout: Duration::from_millis(timeout_ms),
    })
}

fn read_keys(r: &mut Reader, obj: &mut Map<String, Value>) -> Option<KeyPolicy> {
    const P: &str = "keys";
    let default = KeyPolicy::default();
    let Some(value) = r.take::<Value>(obj, "", P, false) else {
        return Some(default);
    };
    let Value::Object(mut k) = value else {
        r.problem(P, "must be an object");
        return None;
    };
    let policy = KeyPolicy {
        rsa_min_bits: r
            .take(&mut k, P, "rsa_min_bits", false)
            .unwrap_or(default.rsa_min_bits),
        rsa_max_bits: r
            .take(&mut k, P, "rsa_max_bits", false)
            .unwrap_or(default.rsa_max_bits),
        allow_p256: r
            .take(&mut k, P, "allow_p256", false)
            .unwrap_or(default.allow_p256),
        allow_p384: r
            .take(&mut k, P, "allow_p384", false)
            .unwrap_or(default.allow_p384),
        allow_ed25519: r
            .take(&mut k, P, "allow_ed25519", false)
            .unwrap_or(default.allow_ed25519),
    };
    for (field, rule) in policy.problems() {
        r.problem(&format!("keys.{field}"), rule);
    }
    r.no_leftovers(k, P);
    Some(policy)
}

#[cfg(test)]
mod tests {
    // Tests: a panic here is a failed test.
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    /// A manufacturer CA and an ACME CA for the registrar role's required trust fields.
    fn trust_pems() -> &'static (String, String) {
        static PEMS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
        PEMS.get_or_init(|| (ca_pem("Test Manufacturer CA"), ca_pem("Test ACME CA")))
    }

    /// Fills in the registrar role's required `manufacturers` and `acme_ca_pem` when a test's
    /// configuration leaves them out, so that each test states only what it is about; tests of
    /// those two fields write them (or call [`super::parse`] directly).
    fn with_trust(bytes: &[u8]) -> Vec<u8> {
        let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(bytes) else {
            return bytes.to_vec();
        };
        if o.get("role").and_then(Value::as_str) == Some("cloud-registrar") {
            return bytes.to_vec();
        }
        let (mfr, acme) = trust_pems();
        o.entry("manufacturers")
            .or_insert_with(|| serde_json::json!([{"name": "test-mfr", "ca_pem": mfr}]));
        o.entry("acme_ca_pem")
            .or_insert_with(|| Value::String(acme.clone()));
        serde_json::to_vec(&Value::Object(o)).unwrap()
    }

    fn parse(bytes: &[u8]) -> Result<Config, ConfigErrors> {
        super::parse(&with_trust(bytes))
    }

    fn parse_with_env(bytes: &[u8], env: &EnvLookup<'_>) -> Result<Config, ConfigErrors> {
        super::parse_with_env(&with_trust(bytes), env)
    }

    #[test]
    fn the_registrar_role_needs_manufacturers_and_the_acme_ca() {
        let e = super::parse(GOOD.as_bytes()).unwrap_err();
        assert_eq!(fields(&e), ["acme_ca_pem", "manufacturers"], "{e}");
        assert!(e.to_string().contains("at least one manufacturer"), "{e}");
        let (mfr, acme) = trust_pems();
        let e = super::parse(&with(&format!(
            r#", "parent_domain": "iot.example.test", "manufacturers": [], "acme_ca_pem": {}"#,
            serde_json::json!(acme)
        )))
        .unwrap_err();
        assert_eq!(fields(&e), ["manufacturers"], "{e}");
        for bad in [
            "",
            "junk",
            "-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n",
        ] {
            let e = super::parse(&with(&format!(
                r#", "parent_domain": "iot.example.test", "manufacturers": [{{"name": "m", "ca_pem": {}}}], "acme_ca_pem": "{bad}""#,
                serde_json::json!(mfr)
            )))
            .unwrap_err();
            assert_eq!(fields(&e), ["acme_ca_pem"], "{bad}: {e}");
        }
        // Roots and intermediates: every certificate counts.
        let two = format!("{acme}{mfr}");
        let c = super::parse(&with(&format!(
            r#", "parent_domain": "iot.example.test", "manufacturers": [{{"name": "m", "ca_pem": {}}}], "acme_ca_pem": {}"#,
            serde_json::json!(mfr),
            serde_json::json!(two)
        )))
        .unwrap();
        assert_eq!(c.est().unwrap().trust.acme_issuers.len(), 2);
    }

    #[test]
    fn manufacturers_that_can_name_the_same_device_are_refused() {
        let (a, b) = (ca_pem("A"), ca_pem("B"));
        let cfg = |list: serde_json::Value| {
            parse(&with(&format!(
                r#", "parent_domain": "iot.example.test", "manufacturers": {list}"#
            )))
        };
        let e = cfg(serde_json::json!([
            {"name": "a", "ca_pem": a, "serial_pattern": "AD-*"},
            {"name": "b", "ca_pem": b},
        ]))
        .unwrap_err();
        assert_eq!(fields(&e), ["manufacturers"], "{e}");
        assert!(
            e.to_string()
                .contains("manufacturers a and b can name the same device"),
            "{e}"
        );
        let c = cfg(serde_json::json!([
            {"name": "a", "ca_pem": a, "serial_pattern": "AD-*"},
            {"name": "b", "ca_pem": b, "name_prefix": "b--"},
        ]))
        .unwrap();
        let m = &c.est().unwrap().trust.manufacturers;
        assert_eq!(m[1].name_prefix.as_str(), "b--");
        let e =
            cfg(serde_json::json!([{"name": "a", "ca_pem": a, "name_prefix": "B-"}])).unwrap_err();
        assert_eq!(fields(&e), ["manufacturers[0].name_prefix"], "{e}");
    }

    const GOOD: &str = r#"{
        "control_plane": {"cluster": "cp", "authority": "control-plane", "token": "s3cr3t-token"},
        "parent_domain": "iot.example.test"
    }"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(c.control_plane.timeout, Duration::from_millis(5000));
        assert_eq!(c.max_body_bytes, 16384);
        assert_eq!(c.cache_ttl_s, 300);
        assert_eq!(c.learn_interval_s, 30);
        assert_eq!(c.csr_signature_cache.max_entries, 4096);
        assert_eq!(c.csr_signature_cache.ttl_s, 3600);
        assert!(c.csr_signature_cache.enabled());
        assert_eq!(
            (
                c.enroll_answer_cache.max_entries,
                c.enroll_answer_cache.ttl_s
            ),
            (4096, 60)
        );
        assert_eq!(c.keys, KeyPolicy::default());
        assert!(c.labels.is_empty());
        let est = c.est().expect("the registrar role is the default");
        assert_eq!(est.trust.parent.as_str(), "iot.example.test");
        assert_eq!(est.trust.manufacturers.len(), 1);
        assert!(!format!("{c:?}").contains("s3cr3t"), "Debug shows no token");
    }

    #[test]
    fn full_config() {
        let c = parse(
            br#"{"control_plane": {"cluster": "cp", "authority": "cp:8080", "token": "t", "timeout_ms": 250},
                 "parent_domain": "IoT.Example.Test",
                 "keys": {"rsa_min_bits": 3072, "rsa_max_bits": 4096, "allow_p256": true, "allow_p384": false, "allow_ed25519": false},
                 "max_body_bytes": 8192, "labels": {"arbitrary-label": "devices"}, "cache_ttl_s": 0,
                 "csr_signature_cache": {"max_entries": 0, "ttl_s": 60},
                 "enroll_answer_cache": {"max_entries": 16, "ttl_s": 0}}"#,
        )
        .unwrap();
        assert_eq!(c.control_plane.timeout, Duration::from_millis(250));
        assert_eq!(c.keys.rsa_min_bits, 3072);
        assert!(!c.keys.allow_p384);
        assert_eq!(
            c.labels.get("arbitrary-label").map(String::as_str),
            Some("devices")
        );
        assert_eq!(c.cache_ttl_s, 0);
        assert!(!c.csr_signature_cache.enabled());
        assert_eq!(c.enroll_answer_cache.max_entries, 16);
        assert!(!c.enroll_answer_cache.enabled(), "ttl_s 0 turns it off");
    }

    #[test]
    fn all_problems_at_once() {
        let e = parse(
            br#"{"control_plane": {"cluster": "", "token": 42, "timeout_ms": 0, "retries": 3},
                 "parent_domain": "localhost",
                 "keys": {"rsa_min_bits": 1024, "allow_p521": true},
                 "max_body_bytes": 0,
                 "labels": {"bad label": "x", "cacerts": "y"},
                 "cache_ttl_s": "soon",
                 "learn_interval_s": 90000,
                 "csr_signature_cache": {"max_entries": 65537, "ttl_s": 86401, "lru": true},
                 "enroll_answer_cache": {"max_entries": 65537, "ttl_s": 3601, "lru": true},
                 "extra": true}"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|p| p.field.as_str()).collect();
        for expected in [
            "control_plane.cluster",
            "control_plane.authority",
            "control_plane.token",
            "control_plane.timeout_ms",
            "control_plane.retries",
            "parent_domain",
            "keys.rsa_min_bits",
            "keys.allow_p521",
            "max_body_bytes",
            "labels.bad label",
            "labels.cacerts",
            "cache_ttl_s",
            "learn_interval_s",
            "csr_signature_cache.max_entries",
            "csr_signature_cache.ttl_s",
            "csr_signature_cache.lru",
            "enroll_answer_cache.max_entries",
            "enroll_answer_cache.ttl_s",
            "enroll_answer_cache.lru",
            "extra",
        ] {
            assert!(fields.contains(&expected), "{expected} missing from {e}");
        }
        assert!(!e.to_string().contains("42"), "token value not echoed: {e}");
    }

    #[test]
    fn token_never_in_errors() {
        let e = parse(
            br#"{"control_plane": {"cluster": "cp", "authority": "a", "token": "sec ret"}, "parent_domain": "x.test"}"#,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].field, "control_plane.token");
        assert!(!e.to_string().contains("sec ret"));
    }

    /// A stand-in environment: `ESTUARY_API_TOKEN` and a few bad values.
    fn env(name: &str) -> Result<String, std::env::VarError> {
        match name {
            "ESTUARY_API_TOKEN" => Ok("from-the-env-0123456789".into()),
            "EMPTY" => Ok(String::new()),
            "WITH_NEWLINE" => Ok("secret-value-xyz\n".into()),
            "NOT_UTF8" => Err(std::env::VarError::NotUnicode("x".into())),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    fn with_cp(cp: &str) -> Vec<u8> {
        format!(
            r#"{{"control_plane": {{"cluster": "cp", "authority": "control-plane"{cp}}},
                 "parent_domain": "iot.example.test"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn token_from_the_environment() {
        let c = parse_with_env(&with_cp(r#", "token_env": "ESTUARY_API_TOKEN""#), &env).unwrap();
        assert_eq!(c.control_plane.token.expose(), "from-the-env-0123456789");
        assert!(
            !format!("{c:?}").contains("from-the-env"),
            "Debug shows no token"
        );
        // The real process environment: no such variable here.
        let e = parse(&with_cp(
            r#", "token_env": "ESTUARY_TEST_SURELY_UNSET_VARIABLE""#,
        ))
        .unwrap_err();
        assert_eq!(fields(&e), ["control_plane.token_env"]);
    }

    #[test]
    fn token_and_token_env_both_or_neither() {
        let e = parse_with_env(
            &with_cp(r#", "token": "inline-secret", "token_env": "ESTUARY_API_TOKEN""#),
            &env,
        )
        .unwrap_err();
        assert_eq!(fields(&e), ["control_plane.token_env"], "{e}");
        assert!(e.to_string().contains("not both"), "{e}");
        assert!(!e.to_string().contains("inline-secret"), "{e}");
        let e = parse_with_env(&with_cp(""), &env).unwrap_err();
        assert_eq!(fields(&e), ["control_plane.token"], "{e}");
        assert!(e.to_string().contains("token_env"), "{e}");
    }

    #[test]
    fn token_env_unset_empty_or_unreadable_names_the_variable_not_the_value() {
        for (name, says) in [
            ("UNSET_VAR", "UNSET_VAR is not set in the Wasm VM"),
            ("EMPTY", "EMPTY is empty"),
            ("WITH_NEWLINE", "WITH_NEWLINE must hold printable ASCII"),
            ("NOT_UTF8", "NOT_UTF8 is not valid UTF-8"),
        ] {
            let e =
                parse_with_env(&with_cp(&format!(r#", "token_env": "{name}""#)), &env).unwrap_err();
            assert_eq!(fields(&e), ["control_plane.token_env"], "{e}");
            assert!(e.to_string().contains(says), "{e}");
            assert!(!e.to_string().contains("secret-value"), "{e}");
        }
        for bad in [r#""""#, r#""1ABC""#, r#""A-B""#, r#""A B""#, "7"] {
            let e =
                parse_with_env(&with_cp(&format!(r#", "token_env": {bad}"#)), &env).unwrap_err();
            assert_eq!(fields(&e), ["control_plane.token_env"], "{bad}: {e}");
        }
    }

    #[test]
    fn authorities() {
        let c = parse(&with(r#", "parent_domain": "iot.example.test""#)).unwrap();
        assert!(c.authorities.is_none(), "absent: no check");
        let c = parse(&with(
            r#", "parent_domain": "iot.example.test", "authorities": ["EST.Example.Com", "192.0.2.1", "[2001:db8::1]"]"#,
        ))
        .unwrap();
        let hosts: Vec<&str> = c
            .authorities
            .as_deref()
            .unwrap()
            .iter()
            .map(|h| h.as_str())
            .collect();
        assert_eq!(hosts, ["est.example.com", "192.0.2.1", "2001:db8::1"]);
        let c = parse(&with(
            r#", "role": "cloud-registrar", "authorities": ["cloud.example.com"]"#,
        ))
        .unwrap();
        assert_eq!(c.authorities.unwrap().len(), 1, "the cloud registrar too");
        let e = parse(&with(
            r#", "parent_domain": "iot.example.test", "authorities": ["ok.example.com", "", "est.example.com:443", "*.example.com", 5]"#,
        ))
        .unwrap_err();
        assert_eq!(
            fields(&e),
            ["authorities"],
            "a non-string: the list's type: {e}"
        );
        let e = parse(&with(
            r#", "parent_domain": "iot.example.test", "authorities": ["ok.example.com", "", "est.example.com:443", "*.example.com"]"#,
        ))
        .unwrap_err();
        assert_eq!(
            fields(&e),
            ["authorities[1]", "authorities[2]", "authorities[3]"],
            "{e}"
        );
        let e = parse(&with(
            r#", "parent_domain": "iot.example.test", "authorities": []"#,
        ))
        .unwrap_err();
        assert_eq!(fields(&e), ["authorities"], "{e}");
        let e = parse(&with(
            r#", "parent_domain": "iot.example.test", "authorities": "est.example.com""#,
        ))
        .unwrap_err();
        assert_eq!(fields(&e), ["authorities"], "{e}");
    }

    #[test]
    fn missing_everything_and_not_json() {
        let e = parse(b"{}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "control_plane: missing; parent_domain: missing"
        );
        let e = parse(b"[1]").unwrap_err();
        assert_eq!(e.0[0].field, "<configuration>");
        let e = parse(b"{\"control_plane\":").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"));
        let e = parse(b"").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"));
    }

    fn ca_pem(cn: &str) -> String {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    }

    fn with(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"control_plane": {{"cluster": "cp", "authority": "control-plane", "token": "t"}}{extra}}}"#
        )
        .into_bytes()
    }

    fn fields(e: &ConfigErrors) -> Vec<&str> {
        e.0.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn roles() {
        let c = parse(&with(
            r#", "role": "registrar", "parent_domain": "iot.example.test""#,
        ))
        .unwrap();
        assert!(matches!(c.role, Role::Registrar(_)));
        let c = parse(&with(r#", "role": "cloud-registrar""#)).unwrap();
        assert!(matches!(
            c.role,
            Role::CloudRegistrar {
                parent_domain: None
            }
        ));
        assert!(c.est().is_none());
        let c = parse(&with(
            r#", "role": "cloud-registrar", "parent_domain": "Cloud.Example.Test""#,
        ))
        .unwrap();
        match c.role {
            Role::CloudRegistrar {
                parent_domain: Some(p),
            } => assert_eq!(p.as_str(), "cloud.example.test"),
            other => panic!("{other:?}"),
        }
        // The registrar role still needs its parent domain.
        let e = parse(&with(r#", "role": "registrar""#)).unwrap_err();
        assert_eq!(e.to_string(), "parent_domain: missing");
        let e = parse(&with(
            r#", "role": "Cloud-Registrar", "parent_domain": "a.test""#,
        ))
        .unwrap_err();
        assert_eq!(fields(&e), ["role"]);
        let e = parse(&with(r#", "role": 7, "parent_domain": "a.test""#)).unwrap_err();
        assert_eq!(fields(&e), ["role"]);
        let e = parse(&with(
            r#", "role": "cloud-registrar", "parent_domain": "localhost", "labels": {"a": "b"},
               "manufacturers": [{"name": "m", "ca_pem": "x"}]"#,
        ))
        .unwrap_err();
        assert_eq!(
            fields(&e),
            [
                "parent_domain",
                "manufacturers[0].ca_pem",
                "labels",
                "manufacturers"
            ],
            "{e}"
        );
    }

    #[test]
    fn manufacturers_parse() {
        let acme = ca_pem("Acme IDevID CA");
        let other = ca_pem("Other IDevID CA");
        let json = serde_json::json!([
            {"name": "acme", "ca_pem": acme, "serial_pattern": "DEMO-*"},
            {"name": "other_2", "ca_pem": other, "name_prefix": "o-"},
        ]);
        let c = parse(&with(&format!(
            r#", "parent_domain": "iot.example.test", "manufacturers": {json}"#
        )))
        .unwrap();
        let m = &c.est().unwrap().trust.manufacturers;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name.as_str(), "acme");
        assert_eq!(m[0].serial_pattern.as_str(), "DEMO-*");
        assert_eq!(
            m[0].ca_der,
            estuary_proto::pem::decode_certs(&acme).unwrap()[0]
        );
        assert_eq!(m[1].serial_pattern.as_str(), "*", "default pattern");
        assert_eq!(m[0].name_prefix.as_str(), "", "no prefix by default");
        assert_eq!(m[1].name_prefix.as_str(), "o-");
        let e = parse(&with(
            r#", "parent_domain": "iot.example.test", "manufacturers": []"#,
        ))
        .unwrap_err();
        assert_eq!(
            fields(&e),
            ["manufacturers"],
            "an empty list is no policy: {e}"
        );
    }

    #[test]
    fn every_bad_manufacturer_field_is_named() {
        let acme = ca_pem("Acme IDevID CA");
        let two = format!("{acme}{}", ca_pem("Second"));
        let key_only = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let not_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let json = serde_json::json!([
            "acme",
            {"ca_pem": acme},
            {"name": "bad name!", "ca_pem": acme},
            {"name": "dup", "ca_pem": acme},
            {"name": "dup", "ca_pem": acme},
            {"name": "m5", "ca_pem": two},
            {"name": "m6", "ca_pem": key_only},
            {"name": "m7", "ca_pem": not_der},
            {"name": "m8"},
            {"name": "m9", "ca_pem": acme, "serial_pattern": ""},
            {"name": "m10", "ca_pem": acme, "serial_pattern": "A B"},
            {"name": "m11", "ca_pem": acme, "serial_pattern": 5},
            {"name": "m12", "ca_pem": acme, "serial": "x"},
            {"name": "a".repeat(65), "ca_pem": acme},
        ]);
        let e = parse(&with(&format!(
            r#", "parent_domain": "iot.example.test", "manufacturers": {json}"#
        )))
        .unwrap_err();
        assert_eq!(
            fields(&e),
            [
                "manufacturers[0]",
                "manufacturers[1].name",
                "manufacturers[2].name",
                "manufacturers[4].name",
                "manufacturers[5].ca_pem",
                "manufacturers[6].ca_pem",
                "manufacturers[7].ca_pem",
                "manufacturers[8].ca_pem",
                "manufacturers[9].serial_pattern",
                "manufacturers[10].serial_pattern",
                "manufacturers[11].serial_pattern",
                "manufacturers[12].serial",
                "manufacturers[13].name",
            ],
            "{e}"
        );
        assert!(
            e.to_string().contains("duplicate of manufacturers[3].name"),
            "{e}"
        );
        let e = parse(&with(
            r#", "parent_domain": "iot.example.test", "manufacturers": {"name": "acme"}"#,
        ))
        .unwrap_err();
        assert_eq!(fields(&e), ["manufacturers"]);
    }
}
