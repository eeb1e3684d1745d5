//! `[brski]` and `[brski.cloud]`: the registrar ([`crate::brski::registrar`]) and the cloud
//! registrar's owners ([`crate::brski::cloud`]), with every check made at start-up.
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use estuary_proto::identity::ManufacturerName;
use estuary_proto::url::{HttpsUrl, UrlError};
use serde::Deserialize;

use crate::support::pem_file::{first_cert, PemFileError};

/// `[brski]`: the registrar.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrskiConfig {
    /// The registrar certificate (PEM, first certificate): id-kp-cmcRA, issued by the domain CA.
    /// The pledge sees it as the TLS server certificate, so it is the proxy's certificate.
    pub registrar_cert_file: PathBuf,
    /// Its PKCS#8 P-256 private key (PEM).
    pub registrar_key_file: PathBuf,
    /// The domain CA (PEM), included in registrar voucher requests so the MASA can pin it.
    #[serde(default)]
    pub domain_ca_file: Option<PathBuf>,
    /// The manufacturers whose pledges may join (the allow-list of IDevID issuers).
    #[serde(default)]
    pub manufacturers: Vec<ManufacturerConfig>,
    /// How long voucher_status and enrollstatus reports are kept in Redis.
    #[serde(default = "default_status_ttl_s")]
    pub status_ttl_s: u64,
    /// `Retry-After` when the MASA cannot be reached.
    #[serde(default = "default_retry_after_s")]
    pub masa_retry_after_s: u64,
    /// `[brski.cloud]`: act as a cloud registrar (draft-ietf-anima-brski-cloud).
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
    /// Voucher requests one pledge (one IDevID) may make per `voucher_window_s`; each may cost
    /// a MASA call. Past it: 429 + Retry-After. 0: no limit.
    #[serde(default = "default_voucher_requests_per_pledge")]
    pub voucher_requests_per_pledge: u32,
    /// The window of `voucher_requests_per_pledge`, in seconds.
    #[serde(default = "default_voucher_window_s")]
    pub voucher_window_s: u64,
}

fn default_voucher_requests_per_pledge() -> u32 {
    10
}
fn default_voucher_window_s() -> u64 {
    3600
}

fn default_status_ttl_s() -> u64 {
    7 * 86_400
}
fn default_retry_after_s() -> u64 {
    30
}

/// One manufacturer: who issues its IDevIDs and how to reach and trust its MASA.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManufacturerConfig {
    /// 1 to 64 of `A-Z a-z 0-9 - _`, unique. Required with `[brski.cloud]`, which finds owners
    /// by (manufacturer, serial); optional for a plain registrar.
    #[serde(default)]
    pub name: Option<String>,
    /// PEM of the CA that issues this manufacturer's IDevIDs.
    pub idevid_ca_file: PathBuf,
    /// PEM trust anchor for the MASA: its vouchers' signer and its TLS server certificate.
    pub masa_ca_file: PathBuf,
    /// MASA base URL, overriding the IDevID's id-pe-masa-url extension.
    #[serde(default)]
    pub masa_url: Option<String>,
}

impl BrskiConfig {
    /// Problems with the section, one per line.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut file = |what: &str, f: &PathBuf| {
            if !f.is_file() {
                p.push(format!(
                    "brski.{what}: {} is not a readable file",
                    f.display()
                ));
            }
        };
        file("registrar_cert_file", &self.registrar_cert_file);
        file("registrar_key_file", &self.registrar_key_file);
        if let Some(d) = &self.domain_ca_file {
            file("domain_ca_file", d);
        }
        for m in &self.manufacturers {
            file("manufacturers.idevid_ca_file", &m.idevid_ca_file);
            file("manufacturers.masa_ca_file", &m.masa_ca_file);
        }
        for m in &self.manufacturers {
            if let Some(u) = &m.masa_url {
                if !u.starts_with("https://") {
                    p.push(format!(
                        "brski.manufacturers.masa_url: {u} is not an https URL"
                    ));
                }
            }
        }
        if self.manufacturers.is_empty() {
            p.push("brski.manufacturers: give at least one manufacturer".into());
        }
        for (i, m) in self.manufacturers.iter().enumerate() {
            let at = format!("brski.manufacturers[{i}].name");
            match &m.name {
                Some(n) if ManufacturerName::parse(n).is_none() => p.push(format!(
                    "{at}: {n:?} is not 1 to 64 of A-Z a-z 0-9 - _"
                )),
                Some(n) => {
                    let first = self
                        .manufacturers
                        .iter()
                        .take(i)
                        .position(|o| o.name.as_ref() == Some(n));
                    if let Some(first) = first {
                        p.push(format!(
                            "{at}: {n:?} is already the name of brski.manufacturers[{first}]"
                        ));
                    }
                }
                None if self.cloud.is_some() => p.push(format!(
                    "{at}: required with [brski.cloud] (owners are found by manufacturer and serial)"
                )),
                None => {}
            }
        }
        if let Some(c) = &self.cloud {
            p.extend(c.validate(&self.manufacturer_names()));
        }
        p
    }

    /// The `[[brski.manufacturers]]` names in order (`None` where left out).
    pub fn manufacturer_names(&self) -> Vec<Option<&str>> {
        self.manufacturers
            .iter()
            .map(|m| m.name.as_deref())
            .collect()
    }
}

/// `[brski.cloud]`: act as a cloud registrar.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// The owners pledges are sent to.
    #[serde(default)]
    pub owners: Vec<OwnerConfig>,
}

/// `[[brski.cloud.owners]]`: one owner and where its pledges go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    /// 1..=64 characters of `A-Za-z0-9-_`; unique. The value stored in Redis.
    pub name: String,
    /// The `[[brski.manufacturers]]` `name` whose IDevIDs carry `serials`; may be left out when
    /// exactly one manufacturer is configured.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Serials (IDevID serialNumber) of this owner's pledges from `manufacturer`, besides those
    /// in Redis.
    #[serde(default)]
    pub serials: Vec<String>,
    /// Path (a): the owner registrar's BRSKI base URL (`https://…/.well-known/brski`).
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Path (b): the owner's EST server URL, sent as the voucher's `est-domain`.
    #[serde(default)]
    pub est_url: Option<String>,
    /// Path (b): PEM whose first certificate authenticates `est_url` (`pinned-domain-cert`).
    #[serde(default)]
    pub pinned_domain_cert_file: Option<PathBuf>,
}

/// An owner's name: 1..=64 characters of `A-Za-z0-9-_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerName(String);

/// Why a string is not an [`OwnerName`].
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not 1 to 64 characters of A-Z, a-z, 0-9, - and _")]
pub struct BadOwnerName(String);

impl FromStr for OwnerName {
    type Err = BadOwnerName;
    fn from_str(s: &str) -> Result<Self, BadOwnerName> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(BadOwnerName(s.to_string()))
        }
    }
}

impl OwnerName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a configured URL is not one a pledge may be sent to, worded with the URL.
pub fn url_problem(s: &str, e: &UrlError) -> String {
    match e {
        UrlError::NotHttps(_) => format!("{s:?} is not an https URL"),
        UrlError::UserInfo => format!("{s:?} must not carry user-info"),
        UrlError::QueryOrFragment => format!("{s:?} must not have a query or fragment"),
        UrlError::NotAUrl => format!("{s:?} is not a URL"),
        UrlError::NoHost | UrlError::BadPort | UrlError::BadHost => {
            format!("{s:?} is not a usable URL: {e}")
        }
    }
}

/// The manufacturer whose IDevIDs carry `owner.serials`: its `manufacturer`, else the only
/// `[[brski.manufacturers]]` entry. `manufacturers` are those entries' names in order (`None`
/// where the name is missing, which the `[brski]` checks report). `Ok(None)`: the owner lists
/// no serials, or the only entry has no name.
pub(crate) fn serials_manufacturer(
    owner: &OwnerConfig,
    manufacturers: &[Option<&str>],
) -> Result<Option<ManufacturerName>, String> {
    match &owner.manufacturer {
        Some(n) => {
            let name = ManufacturerName::parse(n)
                .ok_or_else(|| format!("{n:?} is not 1 to 64 of A-Z a-z 0-9 - _"))?;
            if !manufacturers.contains(&Some(n.as_str())) {
                return Err(format!(
                    "{n:?} is the name of no [[brski.manufacturers]] entry"
                ));
            }
            if owner.serials.is_empty() {
                return Err(
                    "only qualifies serials; remove it or list serials (Redis keys name their own manufacturer)"
                        .into(),
                );
            }
            Ok(Some(name))
        }
        None if owner.serials.is_empty() => Ok(None),
        None => match manufacturers {
            [only] => Ok(only.and_then(ManufacturerName::parse)),
            [] => Ok(None),
            _ => Err(
                "required with serials when several [[brski.manufacturers]] are configured: name the one whose IDevIDs carry these serials"
                    .into(),
            ),
        },
    }
}

/// Longest serial accepted in `serials` (X.520 serialNumber upper bound).
const MAX_SERIAL_LEN: usize = 64;

impl CloudConfig {
    /// Problems with `[brski.cloud]`, one per line, each naming its field. `manufacturers` are
    /// the names of the `[[brski.manufacturers]]` entries in order (`None` where missing).
    pub fn validate(&self, manufacturers: &[Option<&str>]) -> Vec<String> {
        let mut p = Vec::new();
        if self.owners.is_empty() {
            p.push("brski.cloud.owners: give at least one owner".into());
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        // The same serial under two manufacturers is two pledges; under one, a conflict.
        let mut serials: HashMap<(Option<ManufacturerName>, &str), usize> = HashMap::new();
        for (i, o) in self.owners.iter().enumerate() {
            let at = format!("brski.cloud.owners[{i}]");
            match o.name.parse::<OwnerName>() {
                Err(e) => p.push(format!("{at}.name: {e}")),
                Ok(_) => {
                    if let Some(first) = names.insert(o.name.as_str(), i) {
                        p.push(format!(
                            "{at}.name: {:?} is already the name of brski.cloud.owners[{first}]",
                            o.name
                        ));
                        names.insert(o.name.as_str(), first);
                    }
                }
            }
            let manufacturer = serials_manufacturer(o, manufacturers).unwrap_or_else(|e| {
                p.push(format!("{at}.manufacturer: {e}"));
                None
            });
            let of = manufacturer.as_ref().map_or(String::new(), |m| {
                format!(" for manufacturer {:?}", m.as_str())
            });
            for (j, s) in o.serials.iter().enumerate() {
                if s.is_empty() || s.len() > MAX_SERIAL_LEN || s.chars().any(char::is_control) {
                    p.push(format!(
                        "{at}.serials[{j}]: {s:?} is not 1 to {MAX_SERIAL_LEN} printable characters"
                    ));
                    continue;
                }
                match serials.get(&(manufacturer.clone(), s.as_str())) {
                    Some(&other) if other != i => p.push(format!(
                        "{at}.serials[{j}]: {s:?} is also listed under brski.cloud.owners[{other}] ({:?}){of}",
                        self.owners.get(other).map_or("", |x| x.name.as_str())
                    )),
                    Some(_) => {}
                    None => {
                        serials.insert((manufacturer.clone(), s.as_str()), i);
                    }
                }
            }
            for (field, url) in [("redirect_url", &o.redirect_url), ("est_url", &o.est_url)] {
                if let Some(u) = url {
                    if let Err(e) = HttpsUrl::parse_base(u) {
                        p.push(format!("{at}.{field}: {}", url_problem(u, &e)));
                    }
                }
            }
            match (&o.redirect_url, &o.est_url) {
                (Some(_), Some(_)) | (None, None) => p.push(format!(
                    "{at}: give exactly one of redirect_url (redirect to the owner's registrar) and est_url (voucher naming the owner's EST server)"
                )),
                _ => {}
            }
            match (&o.est_url, &o.pinned_domain_cert_file) {
                (Some(_), None) => p.push(format!(
                    "{at}.pinned_domain_cert_file: required with est_url (the trust anchor of the owner's EST server)"
                )),
                (None, Some(_)) => p.push(format!(
                    "{at}.pinned_domain_cert_file: only used with est_url; remove it"
                )),
                (Some(_), Some(f)) => {
                    if let Err(e) = pinned_cert(f) {
                        p.push(format!("{at}.pinned_domain_cert_file: {e}"));
                    }
                }
                (None, None) => {}
            }
        }
        p
    }
}

/// The first certificate of a PEM file, checked to parse as X.509.
pub(crate) fn pinned_cert(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let der = first_cert(path).map_err(|e| match e {
        PemFileError::Unreadable { source, .. } => {
            format!("{} is not a readable file: {source}", path.display())
        }
        other => other.to_string(),
    })?;
    estuary_proto::cert::CertSummary::from_der(&der)
        .map_err(|e| format!("{}: first certificate: {e}", path.display()))?;
    Ok(der)
}

/// What the tests of `[brski]` and of the cloud registrar share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::CloudConfig;

    /// `[brski.cloud]` from TOML.
    pub(crate) fn parse(text: &str) -> CloudConfig {
        toml::from_str(text).expect("parses")
    }

    /// One configured manufacturer, `m`.
    pub(crate) const ONE: &[Option<&str>] = &[Some("m")];

    /// A self-signed certificate (PEM), e.g. an owner's pinned EST trust anchor.
    pub(crate) fn self_signed_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        rcgen::CertificateParams::new(vec!["est.globex.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert")
            .pem()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{parse, self_signed_pem, ONE};
    use super::*;

    #[test]
    fn owner_names_and_urls_are_checked_types() {
        assert!("acme".parse::<OwnerName>().is_ok());
        assert!("a-B_9".parse::<OwnerName>().is_ok());
        assert!("x".repeat(64).parse::<OwnerName>().is_ok());
        for bad in ["", "a b", "a.b", "ä", &"x".repeat(65)] {
            assert!(bad.parse::<OwnerName>().is_err(), "{bad:?}");
        }
        assert!(
            HttpsUrl::parse_base("https://registrar.acme.example:8443/.well-known/brski").is_ok()
        );
        assert!(HttpsUrl::parse_base("https://[::1]:8443/x").is_ok());
        let err = |s: &str| HttpsUrl::parse_base(s).expect_err(s);
        assert!(matches!(
            err("http://registrar.acme.example/"),
            UrlError::NotHttps(_)
        ));
        assert!(matches!(err("ftp://x/"), UrlError::NotHttps(_)));
        // No scheme at all: not a URL (the old type called it "not https").
        assert!(matches!(err("registrar.acme.example"), UrlError::NotAUrl));
        assert!(matches!(err("https://"), UrlError::NoHost));
        assert!(matches!(err("https://a b/"), UrlError::BadHost));
        assert!(matches!(err("https://u:p@host/"), UrlError::UserInfo));
        assert!(matches!(
            err("https://host/?a=1"),
            UrlError::QueryOrFragment
        ));
        assert!(matches!(err("https://host/#f"), UrlError::QueryOrFragment));
    }

    #[test]
    fn the_cloud_section_reports_every_problem() {
        let cfg = parse(
            r#"
[[owners]]
name = "acme"
serials = ["SN-1", "SN-2"]
redirect_url = "http://registrar.acme.example/.well-known/brski"
[[owners]]
name = "acme"
serials = ["SN-2", ""]
est_url = "https://est.globex.example/.well-known/est"
[[owners]]
name = "bad name"
redirect_url = "https://r.example/.well-known/brski"
est_url = "https://est.example/"
[[owners]]
name = "initech"
[[owners]]
name = "hooli"
redirect_url = "https://r.example/.well-known/brski"
pinned_domain_cert_file = "/nonexistent/x.pem"
[[owners]]
name = "umbrella"
est_url = "https://est.umbrella.example/"
pinned_domain_cert_file = "/nonexistent/umbrella.pem"
"#,
        );
        let problems = cfg.validate(ONE);
        let all = problems.join("\n");
        for needle in [
            "brski.cloud.owners[0].redirect_url: \"http://registrar.acme.example/.well-known/brski\" is not an https URL",
            "brski.cloud.owners[1].name: \"acme\" is already the name of brski.cloud.owners[0]",
            "brski.cloud.owners[1].serials[0]: \"SN-2\" is also listed under brski.cloud.owners[0] (\"acme\")",
            "brski.cloud.owners[1].serials[1]: \"\" is not 1 to 64 printable characters",
            "brski.cloud.owners[1].pinned_domain_cert_file: required with est_url",
            "brski.cloud.owners[2].name: \"bad name\" is not",
            "brski.cloud.owners[2]: give exactly one of redirect_url",
            "brski.cloud.owners[3]: give exactly one of redirect_url",
            "brski.cloud.owners[4].pinned_domain_cert_file: only used with est_url",
            "brski.cloud.owners[5].pinned_domain_cert_file: /nonexistent/umbrella.pem is not a readable file",
        ] {
            assert!(all.contains(needle), "{needle:?} not in:\n{all}");
        }
        // owners[2] also lacks the pin its est_url needs.
        assert_eq!(problems.len(), 11, "{all}");

        assert!(parse("owners = []")
            .validate(ONE)
            .iter()
            .any(|p| p.contains("at least one owner")));
        assert!(toml::from_str::<CloudConfig>("[[owners]]\nname = \"a\"\nbogus = 1\n").is_err());
        assert!(toml::from_str::<CloudConfig>("bogus = 1\n").is_err());
    }

    #[test]
    fn a_pinned_cert_file_must_hold_a_certificate() {
        let dir = estuary_tests::util::TempDir::new("cloud-cfg").expect("tmp");
        let good = dir.path().join("good.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&good, self_signed_pem()).expect("write");
        std::fs::write(&empty, "no PEM here\n").expect("write");
        let cfg = parse(&format!(
            "[[owners]]\nname = \"globex\"\nest_url = \"https://est.globex.example/.well-known/est\"\npinned_domain_cert_file = {:?}\n[[owners]]\nname = \"other\"\nest_url = \"https://est.other.example/\"\npinned_domain_cert_file = {:?}\n",
            good.display().to_string(),
            empty.display().to_string()
        ));
        let problems = cfg.validate(ONE);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("brski.cloud.owners[1].pinned_domain_cert_file: ")
                && problems[0].contains("empty.pem"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_brski_section_reports_every_problem() {
        let cfg: BrskiConfig = toml::from_str(
            r#"
registrar_cert_file = "/nonexistent/registrar.pem"
registrar_key_file = "/nonexistent/registrar.key"
[[manufacturers]]
idevid_ca_file = "/nonexistent/m.pem"
masa_ca_file = "/nonexistent/masa.pem"
masa_url = "http://masa.example"
"#,
        )
        .expect("parses");
        assert_eq!(cfg.status_ttl_s, 7 * 86_400);
        let problems = cfg.validate().join("\n");
        for needle in [
            "brski.registrar_cert_file",
            "brski.registrar_key_file",
            "brski.manufacturers.idevid_ca_file",
            "brski.manufacturers.masa_ca_file",
            "not an https URL",
        ] {
            assert!(problems.contains(needle), "{needle} in {problems}");
        }
        // A plain registrar may leave its manufacturers unnamed.
        assert!(!problems.contains(".name"), "{problems}");
        let none: BrskiConfig =
            toml::from_str("registrar_cert_file = \"a\"\nregistrar_key_file = \"b\"\n")
                .expect("parses");
        assert!(none
            .validate()
            .iter()
            .any(|p| p.contains("at least one manufacturer")));
        assert!(toml::from_str::<BrskiConfig>(
            "registrar_cert_file = \"a\"\nregistrar_key_file = \"b\"\nbogus = 1\n"
        )
        .is_err());
    }

    #[test]
    fn the_cloud_section_parses_under_brski() {
        let cfg: BrskiConfig = toml::from_str(
            r#"
registrar_cert_file = "/nonexistent/cloud-registrar.pem"
registrar_key_file = "/nonexistent/cloud-registrar.key"
[[manufacturers]]
name = "acme-devices"
idevid_ca_file = "/nonexistent/m.pem"
masa_ca_file = "/nonexistent/masa.pem"
[cloud]
[[cloud.owners]]
name = "acme"
serials = ["SN-1", "SN-2"]
redirect_url = "https://registrar.acme.example:8443/.well-known/brski"
[[cloud.owners]]
name = "globex"
est_url = "http://est.globex.example/.well-known/est"
"#,
        )
        .expect("parses");
        let problems = cfg.validate().join("\n");
        for needle in [
            "brski.cloud.owners[1].est_url: \"http://est.globex.example/.well-known/est\" is not an https URL",
            "brski.cloud.owners[1].pinned_domain_cert_file: required with est_url",
            "brski.registrar_cert_file",
        ] {
            assert!(problems.contains(needle), "{needle} in {problems}");
        }
        assert!(!problems.contains("owners[0]"), "{problems}");
        assert!(
            !problems.contains("brski.manufacturers[0].name"),
            "{problems}"
        );
        assert!(toml::from_str::<BrskiConfig>(
            "registrar_cert_file = \"a\"\nregistrar_key_file = \"b\"\n[cloud]\nowner = []\n"
        )
        .is_err());
    }

    /// Issue 12: serials are unique only within a manufacturer, so with `[brski.cloud]` every
    /// manufacturer is named and every owner's `serials` say whose they are.
    #[test]
    fn a_cloud_registrar_names_its_manufacturers_and_qualifies_owner_serials() {
        let cfg: BrskiConfig = toml::from_str(
            r#"
registrar_cert_file = "/nonexistent/cloud-registrar.pem"
registrar_key_file = "/nonexistent/cloud-registrar.key"
[[manufacturers]]
name = "acme-devices"
idevid_ca_file = "/nonexistent/a.pem"
masa_ca_file = "/nonexistent/masa.pem"
[[manufacturers]]
name = "globex-devices"
idevid_ca_file = "/nonexistent/b.pem"
masa_ca_file = "/nonexistent/masa.pem"
[[manufacturers]]
name = "acme-devices"
idevid_ca_file = "/nonexistent/c.pem"
masa_ca_file = "/nonexistent/masa.pem"
[[manufacturers]]
idevid_ca_file = "/nonexistent/d.pem"
masa_ca_file = "/nonexistent/masa.pem"
[[manufacturers]]
name = "bad name"
idevid_ca_file = "/nonexistent/e.pem"
masa_ca_file = "/nonexistent/masa.pem"
[cloud]
[[cloud.owners]]
name = "initech"
manufacturer = "acme-devices"
serials = ["AD-0001"]
redirect_url = "https://registrar.initech.example/.well-known/brski"
[[cloud.owners]]
name = "hooli"
manufacturer = "globex-devices"
serials = ["AD-0001"]
redirect_url = "https://registrar.hooli.example/.well-known/brski"
[[cloud.owners]]
name = "umbrella"
manufacturer = "acme-devices"
serials = ["AD-0001"]
redirect_url = "https://registrar.umbrella.example/.well-known/brski"
[[cloud.owners]]
name = "globex"
serials = ["AD-0002"]
redirect_url = "https://registrar.globex.example/.well-known/brski"
[[cloud.owners]]
name = "wayne"
manufacturer = "wayne-devices"
serials = ["AD-0003"]
redirect_url = "https://registrar.wayne.example/.well-known/brski"
[[cloud.owners]]
name = "stark"
manufacturer = "acme-devices"
redirect_url = "https://registrar.stark.example/.well-known/brski"
[[cloud.owners]]
name = "redis-only"
redirect_url = "https://registrar.redis-only.example/.well-known/brski"
"#,
        )
        .expect("parses");
        let problems: Vec<String> = cfg
            .validate()
            .into_iter()
            // The files do not exist; everything else is in question here.
            .filter(|p| !p.ends_with("is not a readable file"))
            .collect();
        let all = problems.join("\n");
        for needle in [
            "brski.manufacturers[2].name: \"acme-devices\" is already the name of brski.manufacturers[0]",
            "brski.manufacturers[3].name: required with [brski.cloud]",
            "brski.manufacturers[4].name: \"bad name\" is not 1 to 64 of A-Z a-z 0-9 - _",
            // The same serial under the same manufacturer for two owners.
            "brski.cloud.owners[2].serials[0]: \"AD-0001\" is also listed under brski.cloud.owners[0] (\"initech\") for manufacturer \"acme-devices\"",
            "brski.cloud.owners[3].manufacturer: required with serials when several [[brski.manufacturers]] are configured",
            "brski.cloud.owners[4].manufacturer: \"wayne-devices\" is the name of no [[brski.manufacturers]] entry",
            "brski.cloud.owners[5].manufacturer: only qualifies serials",
        ] {
            assert!(all.contains(needle), "{needle:?} not in:\n{all}");
        }
        // The same serial under another manufacturer (owners[1]) is another pledge; an owner
        // served from Redis only (owners[6]) needs no manufacturer.
        assert_eq!(problems.len(), 7, "{all}");

        // With one manufacturer, owners' serials are its serials; its name is still required.
        let one = |name: &str| -> Vec<String> {
            let cfg: BrskiConfig = toml::from_str(&format!(
                r#"
registrar_cert_file = "/nonexistent/cloud-registrar.pem"
registrar_key_file = "/nonexistent/cloud-registrar.key"
[[manufacturers]]
{name}
idevid_ca_file = "/nonexistent/a.pem"
masa_ca_file = "/nonexistent/masa.pem"
[cloud]
[[cloud.owners]]
name = "initech"
serials = ["AD-0001"]
redirect_url = "https://registrar.initech.example/.well-known/brski"
"#
            ))
            .expect("parses");
            cfg.validate()
                .into_iter()
                .filter(|p| !p.ends_with("is not a readable file"))
                .collect()
        };
        assert_eq!(one("name = \"acme-devices\""), Vec::<String>::new());
        assert_eq!(
            one(""),
            ["brski.manufacturers[0].name: required with [brski.cloud] (owners are found by manufacturer and serial)"]
        );
    }
}
