//! Redis: the certificate cache (seed §8.1), pending orders, per-CSR locks, the ACME account.
//!
//! Keys (all under `<prefix>:`). `{…}` is a Redis Cluster hash tag: keys with the same tag live
//! in one slot, so every script, `MULTI` or multi-key command below touches one slot and works
//! on a Cluster as on one node ([`crate::support::redis_topology`]). `<csr key>` is the
//! [`CsrKey`]: `<sha256(csr)>`, or `<label>:<sha256(csr)>` for a labelled CA.
//! - `cert:{<csr key>}` — PEM chain of the issued certificate; expires at the leaf's notAfter (EXAT).
//!   Not trusted when read back: the engine serves it only if its leaf fits the CSR
//!   ([`crate::ra::engine::chain_fits`]) and deletes it otherwise. A miss also reads the key of
//!   earlier versions, `cert:<csr key>` (untagged), so certificates cached before the upgrade are
//!   still served until they expire.
//! - `ca-chain:<ca id>` — PEM of the ACME CA's intermediates learned from issued chains (the
//!   certificates after the end-entity one), newest first; served by `/cacerts` before the
//!   anchors of `est.ca_certs_file` ([`crate::ra::chains`]). The CA id is `default` today.
//! - `lock:{<csr key>}` — random token of the task issuing for that CSR; PX lock, refreshed.
//! - `order:{<csr key>}` — URL of the ACME order in progress, so another replica can resume it
//!   (only if it is on the ACME directory's origin, [`crate::ra::acme::client::Origin`]).
//! - `fail:{<csr key>}` — JSON of a failed issuance ([`Failure`]: its
//!   [`crate::ra::failure::FailureKind`] and reason), kept briefly so the device's retry learns why.
//! - `<kind>:{<id>}` and `<kind>-counted:{<id>}` — a fixed-window rate limit and the members
//!   already counted in its window ([`Store::take_window_slot`]): `orders:{<device name>}` (one
//!   use per distinct CSR) and `brski:vr:{<sha256(IDevID)>}` (every voucher request).
//! - `acme-account:<sha256(directory url)>` — the ACME account credentials (JSON, holds the key);
//!   refused if they name URLs outside the directory's origin. Only without
//!   `acme.account_key_file` (the dev default): with it Redis holds no key material.
//! - `preauth:{<sha256(directory url)>:<parent>}` — the parent domain's pre-authorisation (URL and
//!   expiry, JSON), expiring with it (EXAT); ignored and deleted if the URL is on another origin.
//! - `preauth-lock:{<sha256(directory url)>:<parent>}` — token of the replica (re)authorising it.
//! - `ca-backoff:<sha256(directory url)>` — set when the CA answered `rateLimited`: no replica
//!   places a new order while it lives (PX, read with PTTL, so only Redis's clock counts); its
//!   value is the Unix time it ends, for operators. One without expiry is not ours and ignored.
//! - `dns:{ledger}` — every DNS-01 TXT record we may have written and not yet seen removed (issue
//!   13): a sorted set, member `<name> <value>`, score the Unix time after which any replica's
//!   sweeper removes the record ([`crate::ra::dns::ledger`]). Noted before the UPDATE that adds it,
//!   dropped once a delete is confirmed. The sweeper moves the members of earlier versions'
//!   `dns:ledger` and `dns:ledger-tries` (untagged) into the tagged keys.
//! - `dns:{ledger}-tries` — hash, member → failed sweeper removals so far (the back-off).
//! - Written elsewhere, one key per command: `brski:<status kind>:<serial>`
//!   ([`Store::put_expiring`]) and `brski:owner:<manufacturer>:<serial>` (read by the cloud
//!   registrar).
//!
//! Upgrading from a version without hash tags: cached certificates and the DNS ledger carry
//! over as said above; an order in progress, its lock, a remembered failure, a rate-limit
//! window and a pre-authorisation's cached URL are under the old names and are not read again
//! (an enrolment in flight during the upgrade places a new order; the old keys expire by
//! themselves).
use crate::ra::failure::Failure;
use crate::support::clock::now_unix;
use std::time::Duration;

use estuary_proto::est::EstLabel;
use redis::{AsyncCommands, Script, SetExpiry, SetOptions};

use crate::support::redis_topology::RedisConn;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// SHA-256 of the whole CSR DER, hex: the cache key (seed §8.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CsrKey(String);

impl CsrKey {
    /// Hashes the CSR exactly as received (the unlabelled CA's key).
    pub fn of(csr_der: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(csr_der)))
    }

    /// The key of a CSR sent to the CA of `label`: `<label>:<sha256>`, so that one CSR under
    /// two labels is two certificates from two CAs. The unlabelled CA's key is [`CsrKey::of`]
    /// as before labels existed, so its cache survives an upgrade. A label never contains `:`
    /// and a hex digest never does, so no labelled key equals an unlabelled one.
    pub fn for_ca(label: Option<&EstLabel>, csr_der: &[u8]) -> Self {
        let k = Self::of(csr_der);
        match label {
            None => k,
            Some(l) => Self(format!("{l}:{}", k.0)),
        }
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Redis could not be used.
#[derive(Debug, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct StoreError(String);

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        // The error's Display names the kind and the server's message, not the URL.
        Self(format!("{:?}: {}", e.kind(), e.detail().unwrap_or("")))
    }
}

/// Redis refused our credentials at start-up: the server's message (never the password).
#[derive(Debug, thiserror::Error)]
#[error(
    "Redis refused to authenticate the control plane ({0}): check redis.username and \
     redis.password (ESTUARY_REDIS__PASSWORD), or the password in redis.url"
)]
pub struct CredentialsRefused(String);

/// A valid authorisation of a parent domain with RFC 9444 `subdomainAuthAllowed`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Preauthorization {
    /// The authorisation URL.
    pub url: String,
    /// Its expiry, Unix seconds.
    pub expires: i64,
}

/// The names of Estuary's keys (the layout at the top of this module): no I/O.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    /// `<prefix>:<kind>:<id>`.
    fn plain(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    /// `<prefix>:<kind>:{<id>}`: keys with the same `id` share a Cluster slot.
    fn tagged(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{{{id}}}", self.prefix)
    }

    fn cert(&self, k: &CsrKey) -> String {
        self.tagged("cert", k.as_str())
    }

    /// Where versions without hash tags cached the certificate.
    fn old_cert(&self, k: &CsrKey) -> String {
        self.plain("cert", k.as_str())
    }

    fn lock(&self, k: &CsrKey) -> String {
        self.tagged("lock", k.as_str())
    }

    fn order(&self, k: &CsrKey) -> String {
        self.tagged("order", k.as_str())
    }

    fn fail(&self, k: &CsrKey) -> String {
        self.tagged("fail", k.as_str())
    }

    /// A rate-limit window and the set of members it counted.
    fn window(&self, kind: &str, id: &str) -> (String, String) {
        (
            self.tagged(kind, id),
            self.tagged(&format!("{kind}-counted"), id),
        )
    }

    /// `preauth:` or `preauth-lock:` of a parent at a CA.
    fn preauth(&self, kind: &str, directory_url: &str, parent: &str) -> String {
        let dir = hex::encode(Sha256::digest(directory_url.as_bytes()));
        self.tagged(kind, &format!("{dir}:{parent}"))
    }

    fn dns_ledger(&self) -> String {
        format!("{}:dns:{{ledger}}", self.prefix)
    }

    fn dns_tries(&self) -> String {
        format!("{}:dns:{{ledger}}-tries", self.prefix)
    }

    /// The ledger and its tries as versions without hash tags named them.
    fn old_dns(&self) -> (String, String) {
        (
            self.plain("dns", "ledger"),
            self.plain("dns", "ledger-tries"),
        )
    }
}

/// The Redis side of the engine.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    keys: Keys,
    refresh: Script,
    release: Script,
    window_slot: Script,
    cache_first: Script,
    /// Replicas that must confirm a cached certificate, and how long to wait for them.
    replica_acks: Option<(u32, Duration)>,
}

/// What [`Store::cache_chain`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Stored; `replicated` is false when fewer replicas than asked confirmed it in time.
    Stored {
        /// All asked replicas confirmed it (always true when none are asked).
        replicated: bool,
    },
    /// A chain was cached for the CSR already: this one.
    First(String),
    /// Not cached: the certificate has expired already.
    Expired,
}

/// The one way this process connects to Redis: lazily, remade after Redis restarts, with a
/// deadline on connecting (1 s) and on every command (2 s), so a hanging Redis is an error
/// rather than a stuck task (on a Cluster: 1.5 s to connect and read the slot map); to one
/// node, to the master Redis Sentinel names, or to a Redis Cluster
/// ([`crate::support::redis_topology`]).
pub fn lazy_connection(url: &str) -> Result<RedisConn, StoreError> {
    Ok(RedisConn::open(url)?)
}

impl Store {
    /// Prepares a connection that is made lazily and remade after Redis restarts; this never
    /// fails because Redis is down.
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let conn = lazy_connection(url)?;
        Ok(Self {
            conn,
            keys: Keys {
                prefix: prefix.to_string(),
            },
            refresh: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
            ),
            release: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            ),
            // SET NX with EXAT that returns the value already there (SET … NX GET needs 7.0).
            replica_acks: None,
            cache_first: Script::new(
                "local v = redis.call('GET', KEYS[1]) if v then return v end \
                 redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2]) return false",
            ),
            // A fixed window per key: the first use sets its expiry; past the limit the answer
            // is minus the seconds the window still runs (at least 1). With a member (ARGV[3]),
            // a member already counted in this window (the set KEYS[2]) costs nothing again.
            window_slot: Script::new(
                "if ARGV[3] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return 0 end \
                 local n = redis.call('INCR', KEYS[1]) \
                 if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end \
                 if n > tonumber(ARGV[1]) then \
                   local t = redis.call('TTL', KEYS[1]) \
                   if t < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) t = tonumber(ARGV[2]) end \
                   if t < 1 then t = 1 end \
                   return -t \
                 end \
                 if ARGV[3] ~= '' then \
                   redis.call('SADD', KEYS[2], ARGV[3]) \
                   if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end \
                 end \
                 return n",
            ),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        self.keys.plain(kind, id)
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// The start-up check: `Err` when Redis refuses our credentials (`WRONGPASS`, `NOAUTH`,
    /// `NOPERM`), a configuration error. Redis being unreachable is not: the control plane
    /// starts and `/readyz` answers 503 until Redis is back.
    pub async fn check_credentials(&self, within: Duration) -> Result<(), CredentialsRefused> {
        let mut c = self.conn.clone();
        let answer =
            tokio::time::timeout(within, redis::cmd("PING").query_async::<String>(&mut c)).await;
        let e = match answer {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => {
                tracing::warn!("Redis did not answer at start-up; starting without it");
                return Ok(());
            }
        };
        let refused = e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
        if refused {
            return Err(CredentialsRefused(
                e.detail()
                    .or(e.code())
                    .unwrap_or("authentication failed")
                    .to_string(),
            ));
        }
        tracing::warn!(error = %StoreError::from(e), "Redis unavailable at start-up; starting without it");
        Ok(())
    }

    /// The cached chain (PEM) for a CSR.
    /// On a miss it also reads the untagged key of versions before hash tags (one more `GET`,
    /// only on a miss), so certificates cached before an upgrade are still served.
    pub async fn cached_chain(&self, k: &CsrKey) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        let now: Option<String> = c.get(self.keys.cert(k)).await?;
        if now.is_some() {
            return Ok(now);
        }
        Ok(c.get(self.keys.old_cert(k)).await?)
    }

    /// Deletes the cached chain for a CSR if it is still `chain_pem` (a fresh chain another
    /// replica cached meanwhile is kept).
    /// Both the key and the untagged one of earlier versions, which [`Store::cached_chain`] reads.
    pub async fn drop_cached_chain(&self, k: &CsrKey, chain_pem: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        for key in [self.keys.cert(k), self.keys.old_cert(k)] {
            let _: i64 = self
                .release
                .key(key)
                .arg(chain_pem)
                .invoke_async(&mut c)
                .await?;
        }
        Ok(())
    }

    /// Asks `replicas` Redis replicas to confirm each newly cached certificate (`WAIT`,
    /// at most `timeout`) before [`Store::cache_chain`] returns; 0: no confirmation.
    pub fn with_replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_acks = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Caches a chain until `not_after` (Unix seconds) unless a chain is cached for the CSR
    /// already (another replica issued for the same CSR meanwhile, e.g. after a lock was lost
    /// in a Redis failover): then that one is kept and returned, so that every answer for one
    /// CSR is the same certificate. With [`Store::with_replica_acks`], a stored chain is
    /// confirmed by the replicas before this returns; an error (the master lost meanwhile)
    /// means it may not have been kept. A certificate already expired is not cached.
    pub async fn cache_chain(
        &self,
        k: &CsrKey,
        chain_pem: &str,
        not_after: i64,
    ) -> Result<Cached, StoreError> {
        let Ok(exat) = u64::try_from(not_after) else {
            return Ok(Cached::Expired);
        };
        if i64::try_from(exat).unwrap_or(i64::MAX) <= now_unix() {
            return Ok(Cached::Expired);
        }
        let mut c = self.conn.clone();
        let key = self.keys.cert(k);
        let first: Option<String> = self
            .cache_first
            .key(&key)
            .arg(chain_pem)
            .arg(exat)
            .invoke_async(&mut c)
            .await?;
        if let Some(first) = first {
            return Ok(Cached::First(first));
        }
        let replicated = match self.replica_acks {
            None => true,
            Some((n, timeout)) => c.wait_replicated(&key, n, timeout).await? >= n,
        };
        Ok(Cached::Stored { replicated })
    }

    /// Replaces the cached chain of a CSR (one that was there did not fit it).
    pub async fn replace_cached_chain(
        &self,
        k: &CsrKey,
        chain_pem: &str,
        not_after: i64,
    ) -> Result<(), StoreError> {
        let Ok(exat) = u64::try_from(not_after) else {
            return Ok(());
        };
        let mut c = self.conn.clone();
        let opts = SetOptions::default().with_expiration(SetExpiry::EXAT(exat));
        let _: () = c.set_options(self.keys.cert(k), chain_pem, opts).await?;
        Ok(())
    }

    /// The ACME CA's intermediates learned from issuances ([`crate::ra::chains`]), PEM, for the
    /// CA `ca_id` (`"default"` today). Not trusted when read back: every certificate is checked
    /// again against `est.ca_certs_file` before it is served.
    pub async fn ca_chain(&self, ca_id: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        Ok(c.get(self.key("ca-chain", ca_id)).await?)
    }

    /// Replaces the learned intermediates of the CA `ca_id` (PEM, no expiry: each certificate
    /// is dropped when it expires or is pushed out by newer ones).
    pub async fn set_ca_chain(&self, ca_id: &str, pem: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: () = c.set(self.key("ca-chain", ca_id), pem).await?;
        Ok(())
    }

    /// Takes the lock for a CSR if nobody holds it.
    pub async fn try_lock(
        &self,
        k: &CsrKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let opts = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl_ms(ttl)));
        let r: Option<String> = c.set_options(self.keys.lock(k), token, opts).await?;
        Ok(r.is_some())
    }

    /// Extends our lock; false if it is no longer ours.
    pub async fn refresh_lock(
        &self,
        k: &CsrKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = self
            .refresh
            .key(self.keys.lock(k))
            .arg(token)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Releases our lock (never someone else's).
    pub async fn release_lock(&self, k: &CsrKey, token: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.keys.lock(k))
            .arg(token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Takes one of `limit` uses of `<kind>:<id>` in the current fixed `window`: `None` if
    /// taken (or `member` was already counted in this window), `Some(seconds)` until the window
    /// ends if all are used. The per-device order limit (`orders`, one use per distinct CSR,
    /// seed §8.1: it is prudent not to request certificates too often) and the per-pledge
    /// voucher request limit (`brski:vr`, every request) use it.
    pub async fn take_window_slot(
        &self,
        kind: &str,
        id: &str,
        member: Option<&str>,
        limit: u32,
        window: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn.clone();
        let (window_key, counted_key) = self.keys.window(kind, id);
        let n: i64 = self
            .window_slot
            .key(window_key)
            .key(counted_key)
            .arg(limit)
            .arg(window.as_secs().max(1))
            .arg(member.unwrap_or(""))
            .invoke_async(&mut c)
            .await?;
        Ok((n < 0).then(|| n.unsigned_abs()))
    }

    /// `SET <prefix>:<kind>:<id> value EX ttl` (e.g. BRSKI status reports).
    pub async fn put_expiring(
        &self,
        kind: &str,
        id: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let opts = SetOptions::default().with_expiration(SetExpiry::EX(ttl.as_secs().max(1)));
        let _: Option<String> = c.set_options(self.key(kind, id), value, opts).await?;
        Ok(())
    }

    fn ca_backoff_key(&self, directory_url: &str) -> String {
        self.key(
            "ca-backoff",
            &hex::encode(Sha256::digest(directory_url.as_bytes())),
        )
    }

    /// Starts a back-off of `d` for the CA at `directory_url`, or keeps a longer one already
    /// running (it is never shortened); returns the time it runs now.
    pub async fn extend_ca_backoff(
        &self,
        directory_url: &str,
        d: Duration,
    ) -> Result<Duration, StoreError> {
        let mut c = self.conn.clone();
        let ms = ttl_ms(d);
        let until = now_unix().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let runs: i64 = Script::new(
            "local t = redis.call('PTTL', KEYS[1]) \
             if t < tonumber(ARGV[1]) then \
               redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1]) return tonumber(ARGV[1]) \
             end \
             return t",
        )
        .key(self.ca_backoff_key(directory_url))
        .arg(ms)
        .arg(until)
        .invoke_async(&mut c)
        .await?;
        Ok(Duration::from_millis(u64::try_from(runs).unwrap_or(ms)))
    }

    /// The time the back-off for the CA at `directory_url` still runs, if one does.
    pub async fn ca_backoff(&self, directory_url: &str) -> Result<Option<Duration>, StoreError> {
        let mut c = self.conn.clone();
        let left: i64 = c.pttl(self.ca_backoff_key(directory_url)).await?;
        Ok(u64::try_from(left)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis))
    }

    /// The ACME order URL in progress for a CSR.
    pub async fn order_url(&self, k: &CsrKey) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        Ok(c.get(self.keys.order(k)).await?)
    }

    /// Remembers the order URL for a CSR (for `ttl`).
    pub async fn set_order_url(
        &self,
        k: &CsrKey,
        url: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: () = c
            .set_ex(self.keys.order(k), url, ttl.as_secs().max(1))
            .await?;
        Ok(())
    }

    /// Forgets the order URL.
    pub async fn clear_order_url(&self, k: &CsrKey) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: () = c.del(self.keys.order(k)).await?;
        Ok(())
    }

    /// Remembers a failure for `ttl`.
    pub async fn set_failure(
        &self,
        k: &CsrKey,
        f: &Failure,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(f).unwrap_or_default();
        let mut c = self.conn.clone();
        let _: () = c
            .set_ex(self.keys.fail(k), json, ttl.as_secs().max(1))
            .await?;
        Ok(())
    }

    /// Takes (reads and deletes) a remembered failure: it is told once.
    pub async fn take_failure(&self, k: &CsrKey) -> Result<Option<Failure>, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get_del(self.keys.fail(k)).await?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Reads the stored ACME account for a directory.
    pub async fn account(&self, directory_url: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        Ok(c.get(self.account_key(directory_url)).await?)
    }

    /// Stores the ACME account unless one is already there; returns what is stored now.
    pub async fn put_account_if_absent(
        &self,
        directory_url: &str,
        json: &str,
    ) -> Result<String, StoreError> {
        let mut c = self.conn.clone();
        let key = self.account_key(directory_url);
        let _: bool = c.set_nx(&key, json).await?;
        let now: Option<String> = c.get(&key).await?;
        Ok(now.unwrap_or_else(|| json.to_string()))
    }

    fn preauth_key(&self, kind: &str, directory_url: &str, parent: &str) -> String {
        self.keys.preauth(kind, directory_url, parent)
    }

    /// The pre-authorisation of `parent` at this CA, shared by all replicas.
    pub async fn preauth(
        &self,
        directory_url: &str,
        parent: &str,
    ) -> Result<Option<Preauthorization>, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<String> = c
            .get(self.preauth_key("preauth", directory_url, parent))
            .await?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Stores a pre-authorisation until its expiry.
    pub async fn set_preauth(
        &self,
        directory_url: &str,
        parent: &str,
        p: &Preauthorization,
    ) -> Result<(), StoreError> {
        let Ok(exat) = u64::try_from(p.expires) else {
            return Ok(());
        };
        if p.expires <= now_unix() {
            return Ok(());
        }
        let json = serde_json::to_string(p).unwrap_or_default();
        let mut c = self.conn.clone();
        let opts = SetOptions::default().with_expiration(SetExpiry::EXAT(exat));
        let _: () = c
            .set_options(
                self.preauth_key("preauth", directory_url, parent),
                json,
                opts,
            )
            .await?;
        Ok(())
    }

    /// Forgets a pre-authorisation (the CA stopped honouring it).
    pub async fn clear_preauth(&self, directory_url: &str, parent: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: () = c
            .del(self.preauth_key("preauth", directory_url, parent))
            .await?;
        Ok(())
    }

    /// Takes the lock that lets one replica (re)authorise `parent`.
    pub async fn try_lock_preauth(
        &self,
        directory_url: &str,
        parent: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let opts = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl_ms(ttl)));
        let r: Option<String> = c
            .set_options(
                self.preauth_key("preauth-lock", directory_url, parent),
                token,
                opts,
            )
            .await?;
        Ok(r.is_some())
    }

    /// Releases our pre-authorisation lock (never someone else's).
    pub async fn release_preauth_lock(
        &self,
        directory_url: &str,
        parent: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.preauth_key("preauth-lock", directory_url, parent))
            .arg(token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Notes ledger members (`<name> <value>`) due for sweeping at `due` (Unix seconds); an
    /// entry already due later keeps its time (`ZADD GT`).
    pub async fn note_dns(&self, members: &[String], due: i64) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.keys.dns_ledger()).arg("GT");
        for m in members {
            cmd.arg(due).arg(m);
        }
        let mut c = self.conn.clone();
        let _: i64 = cmd.query_async(&mut c).await?;
        Ok(())
    }

    /// Drops ledger members whose removal was confirmed.
    pub async fn forget_dns(&self, members: &[String]) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let _: (i64, i64) = redis::pipe()
            .atomic()
            .zrem(self.keys.dns_ledger(), members)
            .hdel(self.keys.dns_tries(), members)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// At most `limit` ledger members due at `now` (Unix seconds), earliest first.
    pub async fn due_dns(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.dns_ledger())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut c)
            .await?)
    }

    /// Moves up to `limit` members of the ledger of versions before hash tags (`dns:ledger`,
    /// `dns:ledger-tries`) into today's keys, keeping their due times and failure counts;
    /// returns how many were moved. One key per command (the old keys are in other Cluster
    /// slots), so two replicas doing it at once only repeat each other's work.
    pub async fn migrate_old_dns(&self, limit: usize) -> Result<usize, StoreError> {
        let (old_ledger, old_tries) = self.keys.old_dns();
        let mut c = self.conn.clone();
        let stop = isize::try_from(limit.max(1)).unwrap_or(isize::MAX) - 1;
        let old: Vec<(String, f64)> = c.zrange_withscores(&old_ledger, 0, stop).await?;
        if old.is_empty() {
            // A tries hash without a ledger counts nothing any more.
            let _: i64 = c.del(&old_tries).await?;
            return Ok(0);
        }
        let members: Vec<&str> = old.iter().map(|(m, _)| m.as_str()).collect();
        let tries: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(&old_tries)
            .arg(&members)
            .query_async(&mut c)
            .await?;
        let mut add = redis::cmd("ZADD");
        add.arg(self.keys.dns_ledger()).arg("GT");
        for (m, due) in &old {
            // Scores are whole Unix seconds.
            add.arg(due.round()).arg(m);
        }
        let _: i64 = add.query_async(&mut c).await?;
        let counted: Vec<(&str, i64)> = members
            .iter()
            .zip(&tries)
            .filter_map(|(m, n)| n.map(|n| (*m, n)))
            .collect();
        if !counted.is_empty() {
            let _: () = c.hset_multiple(self.keys.dns_tries(), &counted).await?;
        }
        // Only now, so a failure above loses nothing: the next sweep moves them again.
        let _: i64 = c.hdel(&old_tries, &members).await?;
        let _: i64 = c.zrem(&old_ledger, &members).await?;
        Ok(old.len())
    }

    /// Claims a due ledger member for this replica until `until` (Unix seconds): true for
    /// exactly one replica while it is due. A replica that dies holding it only delays it.
    pub async fn claim_dns(&self, member: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = Script::new(
            "local s = redis.call('ZSCORE', KEYS[1], ARGV[1]) \
             if s and tonumber(s) <= tonumber(ARGV[2]) then \
               redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) return 1 \
             end \
             return 0",
        )
        .key(self.keys.dns_ledger())
        .arg(member)
        .arg(now)
        .arg(until)
        .invoke_async(&mut c)
        .await?;
        Ok(n == 1)
    }

    /// After a failed removal: counts the failure and makes the member due again after
    /// `base_s` × 2^(failures - 1) seconds, at most `max_s`. Returns that delay (0 when the
    /// member was dropped meanwhile, e.g. its issuance removed it).
    pub async fn retry_dns(
        &self,
        member: &str,
        now: i64,
        base_s: u64,
        max_s: u64,
    ) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let d: i64 = Script::new(
            "if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then \
               redis.call('HDEL', KEYS[2], ARGV[1]) return 0 \
             end \
             local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1) \
             local d = tonumber(ARGV[3]) * 2 ^ math.min(n - 1, 30) \
             if d > tonumber(ARGV[4]) then d = tonumber(ARGV[4]) end \
             d = math.floor(d) \
             redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + d, ARGV[1]) \
             return d",
        )
        .key(self.keys.dns_ledger())
        .key(self.keys.dns_tries())
        .arg(member)
        .arg(now)
        .arg(base_s.max(1))
        .arg(max_s.max(1))
        .invoke_async(&mut c)
        .await?;
        Ok(u64::try_from(d).unwrap_or(0))
    }

    fn account_key(&self, directory_url: &str) -> String {
        self.key(
            "acme-account",
            &hex::encode(Sha256::digest(directory_url.as_bytes())),
        )
    }
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_part_of_the_cache_key_and_the_default_key_is_unchanged() {
        let csr = b"some csr";
        let plain = CsrKey::of(csr);
        assert_eq!(CsrKey::for_ca(None, csr), plain);
        let a = EstLabel::parse("factory-a").unwrap();
        let b = EstLabel::parse("factory-b").unwrap();
        let ka = CsrKey::for_ca(Some(&a), csr);
        assert_eq!(ka.as_str(), format!("factory-a:{}", plain.as_str()));
        assert_ne!(ka, CsrKey::for_ca(Some(&b), csr));
        assert_ne!(ka, plain);
    }

    /// Redis Cluster's slot of a key: CRC16/XMODEM (polynomial 0x1021, initial 0) of its hash
    /// tag, or of the whole key without one, mod 16384 (Redis Cluster specification, "Keys
    /// distribution model").
    fn cluster_slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        });
        let mut crc: u16 = 0;
        for &b in tagged.unwrap_or(bytes) {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn the_slot_function_matches_the_cluster_specification() {
        // The specification's check value: CRC16/XMODEM("123456789") = 0x31C3 (< 16384).
        assert_eq!(cluster_slot("123456789"), 0x31C3);
        // Its hash tag examples.
        assert_eq!(
            cluster_slot("{user1000}.following"),
            cluster_slot("{user1000}.followers")
        );
        // An empty tag is no tag: the whole key counts.
        assert_ne!(cluster_slot("foo{}{bar}"), cluster_slot("bar"));
        assert_eq!(cluster_slot("foo{{bar}}zap"), cluster_slot("{bar"));
        assert_eq!(cluster_slot("foo{bar}{zap}"), cluster_slot("bar"));
        // `CLUSTER KEYSLOT` answers, seen on Redis 7.0.15.
        for (key, slot) in [
            ("123456789", 12739),
            ("foo", 12182),
            ("bar", 5061),
            ("{user1000}.following", 3443),
            ("foo{}{bar}", 8363),
            ("foo{}{bar}x", 10673),
            ("foo{{bar}}zap", 4015),
        ] {
            assert_eq!(cluster_slot(key), slot, "{key}");
        }
    }

    #[test]
    fn the_keys_of_each_operation_share_a_cluster_slot() {
        let keys = Keys {
            prefix: "estuary".into(),
        };
        let label = EstLabel::parse("factory-a").unwrap();
        let mut spread = std::collections::HashSet::new();
        for csr in [&b"csr one"[..], b"csr two", b"csr three"] {
            for k in [CsrKey::of(csr), CsrKey::for_ca(Some(&label), csr)] {
                let slot = cluster_slot(&keys.cert(&k));
                for other in [keys.lock(&k), keys.order(&k), keys.fail(&k)] {
                    assert_eq!(cluster_slot(&other), slot, "{other}");
                }
                spread.insert(slot);
            }
        }
        // Different CSRs are spread over the cluster, not pinned to one slot.
        assert!(spread.len() > 1);
        for (kind, id) in [("orders", "sn-1.iot.example.test"), ("brski:vr", "ab12")] {
            let (window, counted) = keys.window(kind, id);
            assert_eq!(cluster_slot(&window), cluster_slot(&counted), "{window}");
        }
        let dir = "https://ca.example/dir";
        assert_eq!(
            cluster_slot(&keys.preauth("preauth", dir, "iot.example.test")),
            cluster_slot(&keys.preauth("preauth-lock", dir, "iot.example.test"))
        );
        assert_eq!(
            cluster_slot(&keys.dns_ledger()),
            cluster_slot(&keys.dns_tries())
        );
    }

    #[tokio::test]
    async fn a_cluster_that_refuses_the_password_is_a_configuration_error() {
        let redis = estuary_tests::redis::Redis::start_with_password("right").unwrap();
        let url = format!("redis+cluster://:wrong@{}/", redis.addr);
        let store = Store::new(&url, "estuary").unwrap();
        let e = store
            .check_credentials(Duration::from_secs(5))
            .await
            .expect_err("WRONGPASS is a configuration error");
        assert!(!e.to_string().contains(":wrong"), "{e}");
    }

    #[test]
    fn the_key_names_are_as_documented() {
        let keys = Keys {
            prefix: "estuary".into(),
        };
        let k = CsrKey::of(b"abc");
        let h = k.as_str();
        assert_eq!(keys.cert(&k), format!("estuary:cert:{{{h}}}"));
        assert_eq!(keys.old_cert(&k), format!("estuary:cert:{h}"));
        assert_eq!(keys.lock(&k), format!("estuary:lock:{{{h}}}"));
        assert_eq!(keys.order(&k), format!("estuary:order:{{{h}}}"));
        assert_eq!(keys.fail(&k), format!("estuary:fail:{{{h}}}"));
        let label = EstLabel::parse("factory-a").unwrap();
        let kl = CsrKey::for_ca(Some(&label), b"abc");
        assert_eq!(keys.cert(&kl), format!("estuary:cert:{{factory-a:{h}}}"));
        assert_eq!(
            keys.window("orders", "d.example"),
            (
                "estuary:orders:{d.example}".to_string(),
                "estuary:orders-counted:{d.example}".to_string()
            )
        );
        assert_eq!(keys.dns_ledger(), "estuary:dns:{ledger}");
        assert_eq!(keys.dns_tries(), "estuary:dns:{ledger}-tries");
        assert_eq!(
            keys.old_dns(),
            (
                "estuary:dns:ledger".to_string(),
                "estuary:dns:ledger-tries".to_string()
            )
        );
    }

    #[test]
    fn the_cache_key_is_the_sha256_of_the_whole_csr() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            CsrKey::of(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(CsrKey::of(b"abc"), CsrKey::of(b"abd"));
    }
}
