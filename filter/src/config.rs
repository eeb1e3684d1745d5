//! Plugin configuration: JSON, parsed once in `on_configure`.
//!
//! Every field is read with serde on its own, so that ALL problems are found in one pass (an unknown
//! field is an error, as with `#[serde(deny_unknown_fields)]`), then the filter refuses to start with
//! one log line naming each bad field. Example:
//!
//! ```json
//! {
//!   "control_plane": {"cluster": "estuary_cp", "authority": "control-plane",
//!                     "token": "…", "timeout_ms": 5000},
//!   "parent_domain": "iot.example.test",
//!   "keys": {"rsa_min_bits": 2048, "rsa_max_bits": 4096,
//!            "allow_p256": true, "allow_p384": true, "allow_ed25519": true},
//!   "max_body_bytes": 16384,
//!   "labels": {"arbitrary-label": "default"},
//!   "cache_ttl_s": 300
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use estuary_proto::names::ParentDomain;
use estuary_proto::policy::KeyPolicy;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Default control-plane call timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16384;
/// Default cache lifetime for cacerts / csrattrs.
pub const DEFAULT_CACHE_TTL_S: u64 = 300;
/// Envoy's default buffer limit; a larger body never reaches the filter.
pub const MAX_MAX_BODY_BYTES: u64 = 1 << 20;
/// RSA below this is refused whatever the configuration says.
pub const RSA_FLOOR_BITS: u32 = 2048;

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

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The control plane.
    pub control_plane: ControlPlane,
    /// Devices are named `<serial>.<parent_domain>`.
    pub parent_domain: ParentDomain,
    /// Accepted CSR keys.
    pub keys: KeyPolicy,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// EST label -> profile.
    pub labels: BTreeMap<String, String>,
    /// Lifetime of cached cacerts / csrattrs answers, in seconds (0: no caching).
    pub cache_ttl_s: u64,
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

fn is_label(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Operation names may not be labels: `/.well-known/est/cacerts` must stay unambiguous.
const OPERATION_NAMES: [&str; 6] = [
    "cacerts",
    "csrattrs",
    "simpleenroll",
    "simplereenroll",
    "serverkeygen",
    "fullcmc",
];

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// Parse and check the plugin configuration, collecting every problem.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigErrors> {
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

    let control_plane = read_control_plane(&mut r, &mut obj);

    let parent_domain = r
        .required::<String>(&mut obj, "", "parent_domain", false)
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
        if !is_label(label) {
            r.problem(&field, "an EST label is 1 to 64 of A-Z a-z 0-9 - _");
        } else if OPERATION_NAMES.contains(&label.as_str()) {
            r.problem(&field, "an EST operation name cannot be a label");
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

    r.no_leftovers(obj, "");

    match (control_plane, parent_domain, keys) {
        (Some(control_plane), Some(parent_domain), Some(keys)) if r.problems.is_empty() => {
            Ok(Config {
                control_plane,
                parent_domain,
                keys,
                max_body_bytes,
                labels,
                cache_ttl_s,
            })
        }
        _ => Err(ConfigErrors(r.problems)),
    }
}

fn read_control_plane(r: &mut Reader, obj: &mut Map<String, Value>) -> Option<ControlPlane> {
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
    let token = r.required::<String>(&mut cp, P, "token", true);
    if token.as_deref().is_some_and(|t| !header_safe(t)) {
        r.problem(
            "control_plane.token",
            "must be non-empty printable ASCII without spaces",
        );
    }
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
    if policy.rsa_min_bits < RSA_FLOOR_BITS {
        r.problem("keys.rsa_min_bits", "must be at least 2048");
    }
    if policy.rsa_max_bits < policy.rsa_min_bits {
        r.problem("keys.rsa_max_bits", "must be at least keys.rsa_min_bits");
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
        assert_eq!(c.keys, KeyPolicy::default());
        assert!(c.labels.is_empty());
        assert_eq!(c.parent_domain.as_str(), "iot.example.test");
        assert!(!format!("{c:?}").contains("s3cr3t"), "Debug shows no token");
    }

    #[test]
    fn full_config() {
        let c = parse(
            br#"{"control_plane": {"cluster": "cp", "authority": "cp:8080", "token": "t", "timeout_ms": 250},
                 "parent_domain": "IoT.Example.Test",
                 "keys": {"rsa_min_bits": 3072, "rsa_max_bits": 4096, "allow_p256": true, "allow_p384": false, "allow_ed25519": false},
                 "max_body_bytes": 8192, "labels": {"arbitrary-label": "devices"}, "cache_ttl_s": 0}"#,
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
}
