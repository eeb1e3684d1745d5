//! BRSKI cloud registrar (draft-ietf-anima-brski-cloud §3): the manufacturer's registrar that a
//! pledge reaches when it finds no registrar on its own network.
//!
//! With `[brski.cloud]` the registrar of [`crate::brski::registrar`] still checks the pledge's voucher
//! request exactly as an RFC 8995 registrar does, finds the `[[brski.manufacturers]]` entry whose
//! IDevID CA issued the pledge's certificate, then looks up the pledge's owner by (that
//! manufacturer's `name`, the IDevID serialNumber) and answers one of (§3.2):
//! - (a) **redirect**: `307 Temporary Redirect` with `Location: <redirect_url>/requestvoucher`;
//!   the pledge starts BRSKI again at its owner's registrar. No MASA is asked.
//! - (b) **EST**: a registrar voucher request that also carries `pinned-domain-cert` (the owner's
//!   EST trust anchor) and `est-domain` (the owner's EST URL, RFC 8366bis), sent to the MASA; the
//!   MASA-signed voucher must echo both, and is handed to the pledge, which then enrols directly
//!   at `est-domain`.
//! - an unknown pledge gets `404`.
//!
//! ```toml
//! [[brski.manufacturers]]
//! name = "acme-devices"            # required with [brski.cloud]
//! idevid_ca_file = "acme-devices-idevid-ca.pem"
//! masa_ca_file = "acme-devices-masa-ca.pem"
//! [brski.cloud]
//! [[brski.cloud.owners]]
//! name = "acme"
//! manufacturer = "acme-devices"    # whose serials these are; optional with one manufacturer
//! serials = ["SN-1", "SN-2"]
//! redirect_url = "https://registrar.acme.example:8443/.well-known/brski"
//! [[brski.cloud.owners]]
//! name = "globex"
//! est_url = "https://est.globex.example/.well-known/est"
//! pinned_domain_cert_file = "globex-est-ca.pem"
//! ```
//!
//! # Owner lookup
//! Serials are unique only within a manufacturer, so the owner is found by (manufacturer,
//! serial): manufacturer B's `SN-1` is not manufacturer A's. The fleet-sized map lives in Redis:
//! the string key `<redis.key_prefix>:brski:owner:<manufacturer>:<serial>` holds the owner's
//! `name` (`<manufacturer>` is the `[[brski.manufacturers]]` `name`, which holds no `:`; the
//! serial is the IDevID subject serialNumber, exactly, case included), e.g.
//! `redis-cli SET estuary:brski:owner:acme-devices:SN-1 acme`. Redis is asked first; without a
//! key there, the owners' `serials` lists decide. An owner's `serials` belong to its
//! `manufacturer`, which may be left out when there is exactly one `[[brski.manufacturers]]`.
//! A Redis value that names no configured owner is logged as a warning and the pledge is
//! treated as unknown (it does not fall back to the `serials` lists). Redis unreachable: 503
//! with `Retry-After`.
use std::collections::HashMap;

use axum::http::HeaderValue;
use estuary_proto::identity::ManufacturerName;
use estuary_proto::url::HttpsUrl;
use tracing::warn;

use crate::brski::error::BrskiError;
use crate::config::brski::{
    pinned_cert, serials_manufacturer, url_problem, CloudConfig, OwnerName,
};

/// The `Location` of a redirect: the owner registrar's `requestvoucher` (RFC 8995 §5.2 path
/// under the configured BRSKI base, one `/` between them).
pub fn requestvoucher_location(redirect_url: &HttpsUrl) -> String {
    format!(
        "{}/requestvoucher",
        redirect_url.as_written().trim_end_matches('/')
    )
}

/// The Redis key holding the owner name of `manufacturer`'s pledge `serial`. A manufacturer
/// name holds no `:`, so no two (manufacturer, serial) pairs share a key.
pub fn owner_key(prefix: &str, manufacturer: &ManufacturerName, serial: &str) -> String {
    format!("{prefix}:brski:owner:{manufacturer}:{serial}")
}

/// What the cloud registrar does with an owner's pledges.
#[derive(Clone, Debug)]
pub enum OwnerPath {
    /// (a) `307` to the owner's registrar.
    Redirect {
        /// The `Location` value ([`requestvoucher_location`]).
        location: HeaderValue,
    },
    /// (b) A voucher naming the owner's EST server.
    Est {
        /// `est-domain`.
        est_url: HttpsUrl,
        /// `pinned-domain-cert` (DER).
        pinned_cert: Vec<u8>,
    },
}

impl OwnerPath {
    /// `redirect` or `est`, for logs.
    pub fn label(&self) -> &'static str {
        match self {
            OwnerPath::Redirect { .. } => "redirect",
            OwnerPath::Est { .. } => "est",
        }
    }
}

/// One owner, checked.
#[derive(Clone, Debug)]
pub struct Owner {
    /// Its name.
    pub name: OwnerName,
    /// Where its pledges go.
    pub path: OwnerPath,
}

/// The configured owners, by name and by listed (manufacturer, serial).
#[derive(Debug)]
pub struct Owners {
    list: Vec<Owner>,
    by_name: HashMap<String, usize>,
    by_serial: HashMap<ManufacturerName, HashMap<String, usize>>,
}

impl Owners {
    /// Builds from a validated section (reads the pinned certificates); `manufacturers` as for
    /// [`CloudConfig::validate`].
    pub fn from_config(cfg: &CloudConfig, manufacturers: &[Option<&str>]) -> anyhow::Result<Self> {
        let mut o = Owners {
            list: Vec::new(),
            by_name: HashMap::new(),
            by_serial: HashMap::new(),
        };
        for (i, c) in cfg.owners.iter().enumerate() {
            let at = format!("brski.cloud.owners[{i}]");
            let name: OwnerName = c
                .name
                .parse()
                .map_err(|e| anyhow::anyhow!("{at}.name: {e}"))?;
            let path = match (&c.redirect_url, &c.est_url, &c.pinned_domain_cert_file) {
                (Some(r), None, None) => {
                    let url = HttpsUrl::parse_base(r).map_err(|e| {
                        anyhow::anyhow!("{at}.redirect_url: {}", url_problem(r, &e))
                    })?;
                    let location = HeaderValue::from_str(&requestvoucher_location(&url))
                        .map_err(|e| anyhow::anyhow!("{at}.redirect_url: {e}"))?;
                    OwnerPath::Redirect { location }
                }
                (None, Some(e), Some(f)) => OwnerPath::Est {
                    est_url: HttpsUrl::parse_base(e)
                        .map_err(|err| anyhow::anyhow!("{at}.est_url: {}", url_problem(e, &err)))?,
                    pinned_cert: pinned_cert(f)
                        .map_err(|e| anyhow::anyhow!("{at}.pinned_domain_cert_file: {e}"))?,
                },
                _ => anyhow::bail!(
                    "{at}: give redirect_url, or est_url with pinned_domain_cert_file"
                ),
            };
            let idx = o.list.len();
            if o.by_name.insert(name.as_str().to_string(), idx).is_some() {
                anyhow::bail!("{at}.name: {name:?} is used twice");
            }
            if !c.serials.is_empty() {
                let m = serials_manufacturer(c, manufacturers)
                    .map_err(|e| anyhow::anyhow!("{at}.manufacturer: {e}"))?
                    .ok_or_else(|| {
                        anyhow::anyhow!("{at}.manufacturer: no named manufacturer for serials")
                    })?;
                let of_m = o.by_serial.entry(m.clone()).or_default();
                for s in &c.serials {
                    if let Some(prev) = of_m.insert(s.clone(), idx) {
                        if prev != idx {
                            anyhow::bail!(
                                "{at}.serials: {s:?} of manufacturer {:?} is listed under two owners",
                                m.as_str()
                            );
                        }
                    }
                }
            }
            o.list.push(Owner { name, path });
        }
        Ok(o)
    }

    /// The owner of `manufacturer`'s pledge `serial`, given what Redis holds for the pair
    /// (`stored`): Redis decides when it has a value, else the `serials` lists.
    pub fn resolve(
        &self,
        manufacturer: &ManufacturerName,
        serial: &str,
        stored: Option<&[u8]>,
    ) -> Option<&Owner> {
        match stored {
            Some(raw) => {
                let found = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|name| self.by_name.get(name))
                    .and_then(|&i| self.list.get(i));
                if found.is_none() {
                    warn!(
                        manufacturer = %manufacturer,
                        serial = %serial.escape_debug(),
                        owner = %String::from_utf8_lossy(raw).escape_debug(),
                        "the owner stored in Redis for this serial is not configured in [[brski.cloud.owners]]; treating the pledge as unknown"
                    );
                }
                found
            }
            None => self
                .by_serial
                .get(manufacturer)
                .and_then(|of_m| of_m.get(serial))
                .and_then(|&i| self.list.get(i)),
        }
    }
}

/// The cloud registrar's owner directory: configured owners plus the Redis map.
pub struct Cloud {
    owners: Owners,
    redis: crate::support::redis_topology::RedisConn,
    prefix: String,
}

impl Cloud {
    /// Reads the pinned certificates and prepares a lazy Redis connection (never fails because
    /// Redis is down); `manufacturers` as for [`CloudConfig::validate`]. Must run inside a
    /// Tokio runtime.
    pub fn new(
        cfg: &CloudConfig,
        manufacturers: &[Option<&str>],
        redis_url: &str,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let owners = Owners::from_config(cfg, manufacturers)?;
        let redis = crate::ra::store::lazy_connection(redis_url)
            .map_err(|e| anyhow::anyhow!("redis: {e}"))?;
        Ok(Self {
            owners,
            redis,
            prefix: prefix.to_string(),
        })
    }

    /// The owner of `manufacturer`'s pledge `serial` (Redis first, then the configured
    /// `serials`); `None` = unknown.
    pub async fn owner_of(
        &self,
        manufacturer: &ManufacturerName,
        serial: &str,
    ) -> Result<Option<&Owner>, BrskiError> {
        let mut conn = self.redis.clone();
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(owner_key(&self.prefix, manufacturer, serial))
            .query_async(&mut conn)
            .await
            .map_err(|e| BrskiError::Store(e.into()))?;
        Ok(self.owners.resolve(manufacturer, serial, stored.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::brski::test_support::{parse, self_signed_pem, ONE};

    fn maker(name: &str) -> ManufacturerName {
        ManufacturerName::parse(name).expect("manufacturer name")
    }

    #[test]
    fn the_location_is_the_owner_registrars_requestvoucher() {
        let loc = |s: &str| requestvoucher_location(&s.parse().expect("url"));
        assert_eq!(
            loc("https://registrar.acme.example:8443/.well-known/brski"),
            "https://registrar.acme.example:8443/.well-known/brski/requestvoucher"
        );
        assert_eq!(
            loc("https://registrar.acme.example:8443/.well-known/brski/"),
            "https://registrar.acme.example:8443/.well-known/brski/requestvoucher"
        );
        assert_eq!(loc("https://r.example"), "https://r.example/requestvoucher");
        assert_eq!(
            owner_key("estuary", &maker("acme-devices"), "SN-1"),
            "estuary:brski:owner:acme-devices:SN-1"
        );
        // A manufacturer name holds no `:`, so (manufacturer, serial) -> key is one-to-one.
        assert!(ManufacturerName::parse("acme:SN").is_none());
    }

    #[test]
    fn redis_decides_first_then_the_serials_lists() {
        let dir = estuary_tests::util::TempDir::new("cloud-owners").expect("tmp");
        let pem = dir.path().join("globex.pem");
        std::fs::write(&pem, self_signed_pem()).expect("write");
        let cfg = parse(&format!(
            r#"
[[owners]]
name = "acme"
serials = ["SN-1"]
redirect_url = "https://registrar.acme.example:8443/.well-known/brski/"
[[owners]]
name = "globex"
serials = ["SN-2"]
est_url = "https://est.globex.example/.well-known/est"
pinned_domain_cert_file = {:?}
"#,
            pem.display().to_string()
        ));
        assert!(cfg.validate(ONE).is_empty(), "{:?}", cfg.validate(ONE));
        let owners = Owners::from_config(&cfg, ONE).expect("owners");
        let m = maker("m");
        let name = |o: Option<&Owner>| o.map(|o| o.name.as_str().to_string());
        assert_eq!(
            name(owners.resolve(&m, "SN-1", None)).as_deref(),
            Some("acme")
        );
        assert_eq!(
            name(owners.resolve(&m, "SN-2", None)).as_deref(),
            Some("globex")
        );
        assert_eq!(
            name(owners.resolve(&m, "sn-1", None)),
            None,
            "serials are exact"
        );
        assert_eq!(name(owners.resolve(&m, "SN-9", None)), None);
        // Redis overrides the lists, and an unconfigured owner there means unknown.
        assert_eq!(
            name(owners.resolve(&m, "SN-1", Some(b"globex"))).as_deref(),
            Some("globex")
        );
        assert_eq!(
            name(owners.resolve(&m, "SN-9", Some(b"acme"))).as_deref(),
            Some("acme")
        );
        assert_eq!(name(owners.resolve(&m, "SN-1", Some(b"initech"))), None);
        assert_eq!(name(owners.resolve(&m, "SN-1", Some(b"\xff"))), None);
        match owners.resolve(&m, "SN-1", None).map(|o| &o.path) {
            Some(OwnerPath::Redirect { location }) => assert_eq!(
                location.to_str().ok(),
                Some("https://registrar.acme.example:8443/.well-known/brski/requestvoucher")
            ),
            other => panic!("{other:?}"),
        }
        match owners.resolve(&m, "SN-2", None).map(|o| &o.path) {
            Some(OwnerPath::Est {
                est_url,
                pinned_cert,
            }) => {
                assert_eq!(
                    est_url.as_written(),
                    "https://est.globex.example/.well-known/est"
                );
                assert!(estuary_proto::cert::CertSummary::from_der(pinned_cert).is_ok());
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 12: manufacturer B's pledge whose serial equals one of manufacturer A's gets B's
    /// owner, or none — never A's — from the `serials` lists and from Redis alike.
    #[test]
    fn the_same_serial_from_two_manufacturers_has_two_owners() {
        let two: &[Option<&str>] = &[Some("mfr-a"), Some("mfr-b")];
        let cfg = parse(
            r#"
[[owners]]
name = "initech"
manufacturer = "mfr-a"
serials = ["AD-0001", "AD-0002"]
redirect_url = "https://registrar.initech.example/.well-known/brski"
[[owners]]
name = "hooli"
manufacturer = "mfr-b"
serials = ["AD-0001"]
redirect_url = "https://registrar.hooli.example/.well-known/brski"
[[owners]]
name = "globex"
redirect_url = "https://registrar.globex.example/.well-known/brski"
"#,
        );
        assert!(cfg.validate(two).is_empty(), "{:?}", cfg.validate(two));
        let owners = Owners::from_config(&cfg, two).expect("owners");
        let (a, b) = (maker("mfr-a"), maker("mfr-b"));
        // What an operator stored with redis-cli SET, keyed as Cloud::owner_of reads it.
        let redis: HashMap<String, &[u8]> = [
            (owner_key("estuary", &a, "AD-0003"), &b"globex"[..]),
            (owner_key("estuary", &b, "AD-0004"), &b"globex"[..]),
            (owner_key("estuary", &a, "AD-0004"), &b"initech"[..]),
        ]
        .into_iter()
        .collect();
        let owner = |m: &ManufacturerName, serial: &str| {
            let stored = redis.get(&owner_key("estuary", m, serial)).copied();
            owners
                .resolve(m, serial, stored)
                .map(|o| o.name.as_str().to_string())
        };
        // The `serials` lists.
        assert_eq!(owner(&a, "AD-0001").as_deref(), Some("initech"));
        assert_eq!(owner(&b, "AD-0001").as_deref(), Some("hooli"));
        assert_eq!(owner(&a, "AD-0002").as_deref(), Some("initech"));
        assert_eq!(owner(&b, "AD-0002"), None, "A's serial is not B's");
        // Redis.
        assert_eq!(owner(&a, "AD-0003").as_deref(), Some("globex"));
        assert_eq!(owner(&b, "AD-0003"), None, "A's Redis entry is not B's");
        assert_eq!(owner(&a, "AD-0004").as_deref(), Some("initech"));
        assert_eq!(owner(&b, "AD-0004").as_deref(), Some("globex"));
        // A manufacturer the lists do not mention.
        assert_eq!(owner(&maker("mfr-c"), "AD-0001"), None);

        // Without `manufacturer`, serials are ambiguous among several manufacturers.
        let bare = parse(
            r#"
[[owners]]
name = "initech"
serials = ["AD-0001"]
redirect_url = "https://registrar.initech.example/.well-known/brski"
"#,
        );
        assert_eq!(
            bare.validate(two),
            ["brski.cloud.owners[0].manufacturer: required with serials when several [[brski.manufacturers]] are configured: name the one whose IDevIDs carry these serials"]
        );
        assert!(Owners::from_config(&bare, two).is_err());
        // With exactly one, they are that one's.
        let owners = Owners::from_config(&bare, &[Some("mfr-a")]).expect("owners");
        assert!(owners.resolve(&a, "AD-0001", None).is_some());
        assert!(owners.resolve(&b, "AD-0001", None).is_none());
    }
}
