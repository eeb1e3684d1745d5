//! `[dns]`: where and how DNS-01 records are written (RFC 2136 UPDATE signed with TSIG, RFC
//! 8945). The secret never reaches a log line, an error or a `Debug` output: [`TsigSecret`]
//! prints `<redacted>`.
use std::fmt;
use std::net::SocketAddr;

use base64::Engine as _;
use serde::Deserialize;

/// TSIG MAC algorithm, named as in BIND's `key` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TsigAlgorithmName {
    /// `hmac-sha256` (RFC 8945 §6), the default.
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// `hmac-sha384`.
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    /// `hmac-sha512`.
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl TsigAlgorithmName {
    /// The algorithm's name as BIND writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithmName::HmacSha256 => "hmac-sha256",
            TsigAlgorithmName::HmacSha384 => "hmac-sha384",
            TsigAlgorithmName::HmacSha512 => "hmac-sha512",
        }
    }
}

impl fmt::Display for TsigAlgorithmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TSIG shared secret (raw key bytes). Written base64 in configuration; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigSecret(Vec<u8>);

impl TsigSecret {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        TsigSecret(bytes)
    }

    /// The key bytes, for the signer only.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Decodes a base64 secret (standard alphabet, padded, as `tsig-keygen` writes it).
    /// The error does not contain the input.
    pub fn from_base64(text: &str) -> Result<Self, InvalidSecret> {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(TsigSecret)
            .map_err(|_| InvalidSecret)
    }

    /// Whether the secret has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length of the secret in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A TSIG secret that is not valid base64. Says nothing about the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TSIG secret is not valid base64")]
pub struct InvalidSecret;

impl fmt::Debug for TsigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for TsigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for TsigSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = TsigSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 TSIG secret")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TsigSecret, E> {
                TsigSecret::from_base64(v).map_err(E::custom)
            }
        }
        // Only strings are accepted; any other type is reported by its kind, and the only way
        // to print the value would be for it to be a string, which is handled above.
        deserializer.deserialize_str(SecretVisitor)
    }
}

fn default_algorithm() -> TsigAlgorithmName {
    TsigAlgorithmName::HmacSha256
}
fn default_timeout_ms() -> u64 {
    3000
}
fn default_ttl() -> u32 {
    60
}
fn default_sweep_interval_s() -> u64 {
    30
}

/// Where and how to send DNS UPDATEs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The zone's primary server (UDP and TCP).
    pub server: SocketAddr,
    /// The zone to update, e.g. `example.test`.
    pub zone: String,
    /// Name of the TSIG key as the server knows it.
    pub key_name: String,
    /// TSIG algorithm (default `hmac-sha256`).
    #[serde(default = "default_algorithm")]
    pub algorithm: TsigAlgorithmName,
    /// TSIG secret, base64 in configuration.
    pub secret: TsigSecret,
    /// Upper bound for one UPDATE exchange, retransmissions included (default 3000 ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// TTL of published TXT records (default 60 s).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Seconds between two sweeps of the DNS-01 ledger for leftover records
    /// ([`crate::ra::dns::ledger`]; default 30, 1 to 3600). Also the first retry delay of a failed
    /// sweep removal, doubled per failure.
    #[serde(default = "default_sweep_interval_s")]
    pub sweep_interval_s: u64,
}

impl DnsConfig {
    /// Returns every problem in the configuration at once (empty when it is usable).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = check_domain_name(&self.zone) {
            problems.push(format!("dns.zone {:?}: {why}", self.zone));
        } else if self.zone.trim_end_matches('.').is_empty() {
            problems.push("dns.zone: the root zone cannot be updated".to_owned());
        }
        if let Err(why) = check_domain_name(&self.key_name) {
            problems.push(format!("dns.key_name {:?}: {why}", self.key_name));
        }
        if self.secret.is_empty() {
            problems.push("dns.secret is empty".to_owned());
        }
        if self.server.port() == 0 {
            problems.push(format!("dns.server {}: port 0", self.server));
        }
        if self.server.ip().is_unspecified() {
            problems.push(format!("dns.server {}: unspecified address", self.server));
        }
        if self.timeout_ms == 0 {
            problems.push("dns.timeout_ms must be greater than 0".to_owned());
        }
        // RFC 2181 §8: TTLs are 31-bit.
        if self.ttl > i32::MAX as u32 {
            problems.push(format!("dns.ttl {} is above 2^31-1", self.ttl));
        }
        if !(1..=3600).contains(&self.sweep_interval_s) {
            problems.push(format!(
                "dns.sweep_interval_s {} is not between 1 and 3600",
                self.sweep_interval_s
            ));
        }
        problems
    }
}

/// Checks host-name-like syntax: dot-separated labels of letters, digits, `-` and `_`, each 1-63
/// bytes, not starting or ending with `-`, at most 253 bytes without the optional final dot.
pub(crate) fn check_domain_name(name: &str) -> Result<(), &'static str> {
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return if name == "." {
            Ok(())
        } else {
            Err("empty name")
        };
    }
    if body.len() > 253 {
        return Err("longer than 253 bytes");
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed in labels");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        dns: DnsConfig,
    }

    #[test]
    fn config_parses_with_defaults() {
        let w: Wrapper = toml::from_str(
            r#"[dns]
server = "127.0.0.1:5353"
zone = "example.test"
key_name = "estuary"
secret = "c2VjcmV0LWJ5dGVz"
"#,
        )
        .unwrap();
        assert_eq!(w.dns.algorithm, TsigAlgorithmName::HmacSha256);
        assert_eq!(w.dns.timeout_ms, 3000);
        assert_eq!(w.dns.ttl, 60);
        assert_eq!(w.dns.sweep_interval_s, 30);
        assert_eq!(
            w.dns.secret,
            TsigSecret::from_bytes(b"secret-bytes".to_vec())
        );
        assert!(w.dns.validate().is_empty());
        assert_eq!(format!("{:?}", w.dns.secret), "<redacted>");
        assert!(!format!("{:?}", w.dns).contains("c2VjcmV0"));
    }

    #[test]
    fn bad_base64_error_does_not_echo_the_value() {
        let err = toml::from_str::<Wrapper>(
            r#"[dns]
server = "127.0.0.1:53"
zone = "example.test"
key_name = "k"
secret = "not*base64*SECRETVALUE"
"#,
        )
        .err()
        .expect("bad base64 must fail");
        let text = err.to_string();
        assert!(text.contains("not valid base64"), "{text}");
        // toml quotes the offending source line; our own message must not add the value.
        assert!(!err.message().contains("SECRETVALUE"), "{}", err.message());
    }

    #[test]
    fn unknown_field_and_algorithm_are_rejected() {
        let unknown = toml::from_str::<Wrapper>(
            "[dns]\nserver=\"127.0.0.1:53\"\nzone=\"a.test\"\nkey_name=\"k\"\nsecret=\"AA==\"\nport=5\n",
        );
        assert!(unknown.is_err());
        let md5 = toml::from_str::<Wrapper>(
            "[dns]\nserver=\"127.0.0.1:53\"\nzone=\"a.test\"\nkey_name=\"k\"\nsecret=\"AA==\"\nalgorithm=\"hmac-md5\"\n",
        );
        assert!(md5.is_err());
    }

    #[test]
    fn domain_name_syntax() {
        assert!(check_domain_name("_acme-challenge.sn1.iot.example.test.").is_ok());
        assert!(check_domain_name("example.test").is_ok());
        assert!(check_domain_name("a..b").is_err());
        assert!(check_domain_name("a b.test").is_err());
        assert!(check_domain_name("-a.test").is_err());
        assert!(check_domain_name(&"a".repeat(64)).is_err());
        assert!(check_domain_name(&["a"; 128].join(".")).is_err());
        assert!(check_domain_name("").is_err());
    }
}
