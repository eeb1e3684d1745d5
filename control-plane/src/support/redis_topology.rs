//! Where Redis is: one node (`redis://`, `rediss://`), a master found through Redis Sentinel
//! (`redis+sentinel://`, `rediss+sentinel://`), or a Redis Cluster (`redis+cluster://`,
//! `rediss+cluster://`).
//!
//! A Sentinel URL names the Sentinels and the master's service name, and may carry the
//! master's credentials and database:
//! `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]`. The credentials are
//! the master's (`requirepass`, ACL user); the Sentinels are asked without them.
//!
//! The connection follows the Sentinel client spec: ask each Sentinel in turn for the master's
//! address (`SENTINEL get-master-addr-by-name`), check that the node there says it is a master
//! (`ROLE`), and use it. A command that fails because the node went away, stopped being the
//! master (`READONLY`) or is cut off (`MASTERDOWN`) makes the next command ask the Sentinels
//! again. The failing command itself fails — fast, like any Redis error, so the device hears
//! 503 + Retry-After — and nothing waits for the election: the first command after it goes to
//! the new master, with no restart and no lock left behind (locks expire by themselves).
//!
//! A Cluster URL names some of the cluster's nodes (any, masters or replicas; the client learns
//! the rest from `CLUSTER SLOTS`) and may carry credentials, the same on every node:
//! `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/`. It has no database: a cluster
//! serves database 0 only. The connection is made by the first command (not at start-up, so the
//! process starts while Redis is down), within [`CLUSTER_CONNECT_DEADLINE`]; the redis crate
//! routes each command to the master of its key's slot and follows `MOVED`/`ASK`. Each command
//! has [`CLUSTER_COMMAND_DEADLINE`] in all, the crate's own retries included. A command that
//! fails because a node went away makes the next command build the connection and slot map
//! anew from the configured nodes, so after a failover the promoted replica is found without
//! a restart. Every multi-key command Estuary sends (scripts, `MULTI`) names keys that share a
//! hash tag, so they live in one slot ([`crate::ra::store`]).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

/// How long one Sentinel may take to answer (connect + query).
const SENTINEL_DEADLINE: Duration = Duration::from_millis(1000);

/// How long making the Cluster connection may take: connecting to the configured nodes (1 s
/// each, in parallel) and reading the slot map.
pub const CLUSTER_CONNECT_DEADLINE: Duration = Duration::from_millis(1500);

/// How long one command may take on a Cluster, the redis crate's retries and redirections
/// included.
pub const CLUSTER_COMMAND_DEADLINE: Duration = Duration::from_millis(2000);

/// A Redis connection: lazily made, remade after Redis restarts, with deadlines on connecting
/// (1 s) and on every command (2 s), to one node, to the master Sentinel names, or to a Cluster.
#[derive(Clone)]
pub enum RedisConn {
    /// One node.
    Single(ConnectionManager),
    /// The master of a Sentinel-monitored service.
    Sentinel(Arc<SentinelConn>),
    /// A Redis Cluster.
    Cluster(Arc<ClusterConn>),
}

/// A Redis Cluster connection, made by the first command and made anew after a node is lost.
pub struct ClusterConn {
    client: ClusterClient,
    /// The configured nodes' URLs (they may hold the password: never logged).
    node_urls: Vec<String>,
    /// The connection in use (with its generation), or `None` when it must be made.
    current: Mutex<Option<(u64, ClusterConnection)>>,
    /// Counts the connections made, so that an error on an old one does not drop a newer one.
    generation: AtomicU64,
}

/// A parsed `redis+cluster://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    /// `rediss+cluster`: TLS to every node.
    pub tls: bool,
    /// `USER:PASSWORD@` (kept percent-encoded, as written), for every node.
    pub userinfo: Option<String>,
    /// The nodes to start from, `host:port`.
    pub nodes: Vec<String>,
}

/// The master of a Sentinel-monitored service, found again after a failover.
pub struct SentinelConn {
    target: SentinelTarget,
    /// The master's connection, or `None` when it must be looked up again.
    current: Mutex<Option<ConnectionManager>>,
}

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `rediss+sentinel`: TLS to the master.
    pub tls: bool,
    /// `USER:PASSWORD@` (kept percent-encoded, as written), for the master.
    pub userinfo: Option<String>,
    /// The Sentinels, `host:port`.
    pub sentinels: Vec<String>,
    /// The service name Sentinel monitors.
    pub service: String,
    /// The database number, if given.
    pub db: Option<u32>,
}

/// Why a Redis URL is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    /// The Sentinel URL does not have the documented shape.
    #[error("redis.url: a Sentinel URL is redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]: {0}")]
    BadSentinelUrl(&'static str),
    /// The Cluster URL does not have the documented shape.
    #[error(
        "redis.url: a Cluster URL is redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/: {0}"
    )]
    BadClusterUrl(&'static str),
}

/// Splits `[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]` into the user information and the checked
/// `host:port` list.
fn userinfo_and_hosts(
    authority: &str,
    bad: fn(&'static str) -> TopologyError,
    what: &'static str,
) -> Result<(Option<String>, Vec<String>), TopologyError> {
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let mut list = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = h.rsplit_once(':').ok_or(bad(what))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad(what));
        }
        list.push(h.to_string());
    }
    Ok((userinfo, list))
}

impl ClusterTarget {
    /// Parses a `redis+cluster://` or `rediss+cluster://` URL; `Ok(None)` for any other.
    pub fn parse(url: &str) -> Result<Option<ClusterTarget>, TopologyError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis+cluster://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss+cluster://") {
            (true, r)
        } else {
            return Ok(None);
        };
        let bad = TopologyError::BadClusterUrl;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !path.is_empty() {
            return Err(bad(
                "nothing may follow the last /: a Redis Cluster has only database 0",
            ));
        }
        let (userinfo, nodes) = userinfo_and_hosts(authority, bad, "a node is not HOST:PORT")?;
        Ok(Some(ClusterTarget {
            tls,
            userinfo,
            nodes,
        }))
    }

    /// The URL of each configured node, with the credentials.
    fn node_urls(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = self
            .userinfo
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://{auth}{n}/"))
            .collect()
    }
}

impl SentinelTarget {
    /// Parses a `redis+sentinel://` or `rediss+sentinel://` URL; `Ok(None)` for any other.
    pub fn parse(url: &str) -> Result<Option<SentinelTarget>, TopologyError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
            (true, r)
        } else {
            return Ok(None);
        };
        let bad = TopologyError::BadSentinelUrl;
        let (authority, path) = rest.split_once('/').ok_or(bad("no /SERVICE"))?;
        let (userinfo, sentinels) =
            userinfo_and_hosts(authority, bad, "a Sentinel is not HOST:PORT")?;
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let service = parts.next().ok_or(bad("no SERVICE"))?.to_string();
        if !service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad("SERVICE is not a plain name"));
        }
        let db = match parts.next() {
            Some(d) => Some(d.parse::<u32>().map_err(|_| bad("DB is not a number"))?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(bad("more than /SERVICE/DB"));
        }
        Ok(Some(SentinelTarget {
            tls,
            userinfo,
            sentinels,
            service,
            db,
        }))
    }

    /// The URL of the master at `host:port`, with the credentials and database.
    fn master_url(&self, host: &str, port: u16) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = self
            .userinfo
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let db = self.db.map(|d| d.to_string()).unwrap_or_default();
        format!("{scheme}://{auth}{host}:{port}/{db}")
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(1000)))
        .set_response_timeout(Some(Duration::from_millis(2000)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

impl RedisConn {
    /// The connection `url` names; made lazily (this never fails because Redis is down).
    pub fn open(url: &str) -> RedisResult<RedisConn> {
        match ClusterTarget::parse(url) {
            Ok(Some(target)) => {
                return ClusterConn::new(&target).map(|c| RedisConn::Cluster(Arc::new(c)))
            }
            Ok(None) => {}
            // The message names the shape, never the URL (it may hold a password).
            Err(e) => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "bad Cluster URL",
                    e.to_string(),
                )))
            }
        }
        match SentinelTarget::parse(url) {
            Ok(Some(target)) => Ok(RedisConn::Sentinel(Arc::new(SentinelConn {
                target,
                current: Mutex::new(None),
            }))),
            Ok(None) => {
                let client = redis::Client::open(url)?;
                Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
                    client,
                    manager_config(),
                )?))
            }
            Err(e) => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "bad Sentinel URL",
                e.to_string(),
            ))),
        }
    }
}

/// Whether `e` means the node we talk to is gone or no longer the master.
fn lost_master(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl SentinelConn {
    /// The master's connection: the one in use, or a new one to the master the Sentinels name.
    async fn master(&self) -> RedisResult<ConnectionManager> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let c = self.discover().await?;
        *current = Some(c.clone());
        Ok(c)
    }

    /// Forgets the master after `e`, if `e` says it is gone.
    async fn after_error(&self, e: &RedisError) {
        if lost_master(e) {
            *self.current.lock().await = None;
        }
    }

    /// Asks each Sentinel in turn for the master and checks the node there is one.
    async fn discover(&self) -> RedisResult<ConnectionManager> {
        let mut last: Option<String> = None;
        for sentinel in &self.target.sentinels {
            let asked = tokio::time::timeout(SENTINEL_DEADLINE, async {
                let client = redis::Client::open(format!("redis://{sentinel}/"))?;
                let mut c = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.target.service)
                    .query_async::<Option<(String, u16)>>(&mut c)
                    .await
            })
            .await;
            let (host, port) = match asked {
                Ok(Ok(Some(addr))) => addr,
                Ok(Ok(None)) => {
                    last = Some(format!(
                        "Sentinel {sentinel} knows no service {:?}",
                        self.target.service
                    ));
                    continue;
                }
                Ok(Err(e)) => {
                    last = Some(format!("Sentinel {sentinel}: {e}"));
                    continue;
                }
                Err(_) => {
                    last = Some(format!("Sentinel {sentinel}: no answer within 1 s"));
                    continue;
                }
            };
            let client = redis::Client::open(self.target.master_url(&host, port))?;
            let mut m = ConnectionManager::new_lazy_with_config(client, manager_config())?;
            // The spec's step 3: a node Sentinel still names after it was demoted says so.
            let role = tokio::time::timeout(
                SENTINEL_DEADLINE,
                redis::cmd("ROLE").query_async::<Vec<Value>>(&mut m),
            )
            .await;
            match role {
                Ok(Ok(r)) if matches!(r.first(), Some(Value::BulkString(b)) if b == b"master") => {
                    tracing::info!(master = %format!("{host}:{port}"), service = %self.target.service, "Redis master found through Sentinel");
                    return Ok(m);
                }
                Ok(Ok(_)) => last = Some(format!("{host}:{port} is not a master (yet)")),
                Ok(Err(e)) => last = Some(format!("{host}:{port}: {e}")),
                Err(_) => last = Some(format!("{host}:{port}: no answer within 1 s")),
            }
        }
        Err(RedisError::from((
            redis::ErrorKind::Io,
            "no Redis master found through Sentinel",
            last.unwrap_or_else(|| "no Sentinel configured".to_string()),
        )))
    }
}

/// Whether `e` means a Cluster node is gone, or the connection cannot reach the cluster.
fn lost_cluster_node(e: &RedisError) -> bool {
    lost_master(e)
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
        )
}

impl ClusterConn {
    fn new(target: &ClusterTarget) -> RedisResult<ClusterConn> {
        let node_urls = target.node_urls();
        let client = ClusterClientBuilder::new(node_urls.clone())
            .connection_timeout(Duration::from_millis(1000))
            .response_timeout(CLUSTER_COMMAND_DEADLINE)
            .overall_response_timeout(Some(CLUSTER_COMMAND_DEADLINE))
            // A few quick retries (MOVED, TRYAGAIN, a reconnect) within the command's deadline;
            // the crate's default (16, up to seconds apart) would outlast it.
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(300)
            // A node that stays unreachable is dropped until the next slot map names it.
            .max_connection_attempts(std::num::NonZeroUsize::MIN.saturating_add(2))
            .build()?;
        Ok(ClusterConn {
            client,
            node_urls,
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// The connection in use, or a new one (within [`CLUSTER_CONNECT_DEADLINE`]).
    async fn connection(&self) -> RedisResult<(u64, ClusterConnection)> {
        let mut current = self.current.lock().await;
        if let Some((g, c)) = current.as_ref() {
            return Ok((*g, c.clone()));
        }
        let made = tokio::time::timeout(CLUSTER_CONNECT_DEADLINE, async {
            match self.client.get_async_connection().await {
                Ok(c) => Ok(c),
                Err(e) => Err(self.refusal().await.unwrap_or(e)),
            }
        })
        .await
        .map_err(|_| {
            RedisError::from((
                redis::ErrorKind::Io,
                "no Redis Cluster connection",
                format!(
                    "the configured nodes gave no slot map within {} ms",
                    CLUSTER_CONNECT_DEADLINE.as_millis()
                ),
            ))
        })??;
        let g = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(generation = g, "Redis Cluster connection made");
        *current = Some((g, made.clone()));
        Ok((g, made))
    }

    /// The error of a configured node that refuses our credentials, if one does: the cluster
    /// client reports every failed connect as I/O, which would hide a configuration error
    /// behind "Redis unavailable" ([`crate::ra::store::Store::check_credentials`]).
    async fn refusal(&self) -> Option<RedisError> {
        for url in &self.node_urls {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                continue;
            };
            if let Err(e) = client.get_multiplexed_async_connection().await {
                if e.kind() == redis::ErrorKind::AuthenticationFailed
                    || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
                {
                    return Some(e);
                }
            }
        }
        None
    }

    /// Forgets connection `generation` after `e`, if `e` says a node is lost: the next command
    /// makes a new one, with a fresh slot map.
    async fn after_error(&self, generation: u64, e: &RedisError) {
        if !lost_cluster_node(e) {
            return;
        }
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(kind = ?e.kind(), "Redis Cluster node lost; the next command reconnects");
            *current = None;
        }
    }

    /// Runs `f` on the connection (made first if need be; one connect at a time, the other
    /// commands wait for it), within [`CLUSTER_CONNECT_DEADLINE`] + [`CLUSTER_COMMAND_DEADLINE`]
    /// in all.
    async fn run<T, F>(&self, f: F) -> RedisResult<T>
    where
        F: AsyncFnOnce(&mut ClusterConnection) -> RedisResult<T>,
    {
        let work = async {
            let (g, mut c) = self.connection().await?;
            let r = f(&mut c).await;
            if let Err(e) = &r {
                self.after_error(g, e).await;
            }
            r
        };
        // The crate bounds each command; this bounds waiting for the connection as well.
        tokio::time::timeout(CLUSTER_CONNECT_DEADLINE + CLUSTER_COMMAND_DEADLINE, work)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "Redis Cluster command timed out",
                )))
            })
    }
}

impl RedisConn {
    /// `WAIT replicas timeout` on the node that holds `key`, over the connection that wrote to
    /// it: how many replicas have every write this connection sent that node so far (at least
    /// the caller's last one), waiting at most `timeout`. On a Cluster it goes to the master of
    /// `key`'s slot only (the crate would send a bare WAIT to every master, and one whose
    /// replica is gone would hold up writes to every other).
    pub async fn wait_replicated(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let acked: i64 = match self {
            RedisConn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let v = c.run(async |k| k.route_command(wait, route).await).await?;
                redis::from_redis_value(v)?
            }
            _ => wait.query_async(self).await?,
        };
        Ok(u32::try_from(acked).unwrap_or(0))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(m) => m.req_packed_command(cmd),
            RedisConn::Cluster(c) => {
                Box::pin(async move { c.run(async |k| k.req_packed_command(cmd).await).await })
            }
            RedisConn::Sentinel(s) => Box::pin(async move {
                let mut m = s.master().await?;
                let r = m.req_packed_command(cmd).await;
                if let Err(e) = &r {
                    s.after_error(e).await;
                }
                r
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(m) => m.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => Box::pin(async move {
                c.run(async |k| k.req_packed_commands(pipeline, offset, count).await)
                    .await
            }),
            RedisConn::Sentinel(s) => Box::pin(async move {
                let mut m = s.master().await?;
                let r = m.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &r {
                    s.after_error(e).await;
                }
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(m) => m.get_db(),
            RedisConn::Sentinel(s) => s.target.db.map(i64::from).unwrap_or(0),
            // A cluster serves database 0 only.
            RedisConn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse_as_documented() {
        let t = SentinelTarget::parse(
            "redis+sentinel://:pa%40ss@127.0.0.1:26379,127.0.0.1:26380/mymaster/2",
        )
        .unwrap()
        .unwrap();
        assert!(!t.tls);
        assert_eq!(t.userinfo.as_deref(), Some(":pa%40ss"));
        assert_eq!(t.sentinels, ["127.0.0.1:26379", "127.0.0.1:26380"]);
        assert_eq!(t.service, "mymaster");
        assert_eq!(t.db, Some(2));
        assert_eq!(
            t.master_url("10.0.0.5", 6380),
            "redis://:pa%40ss@10.0.0.5:6380/2"
        );
        let t = SentinelTarget::parse("rediss+sentinel://s1:26379/svc")
            .unwrap()
            .unwrap();
        assert!(t.tls && t.userinfo.is_none() && t.db.is_none());
        assert_eq!(t.master_url("::1", 6379), "rediss://[::1]:6379/");
        assert_eq!(SentinelTarget::parse("redis://127.0.0.1:6379/"), Ok(None));
    }

    #[test]
    fn a_malformed_sentinel_url_is_refused_with_the_shape() {
        for bad in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1/mymaster",
            "redis+sentinel://127.0.0.1:99999/mymaster",
            "redis+sentinel://:1/mymaster",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1:26379/my master",
            "redis+sentinel://127.0.0.1:26379/mymaster/x",
            "redis+sentinel://127.0.0.1:26379/mymaster/1/2",
        ] {
            let e = SentinelTarget::parse(bad).unwrap_err();
            assert!(e.to_string().contains("HOST:PORT"), "{bad}: {e}");
        }
        assert!(RedisConn::open("redis+sentinel://nope").is_err());
    }

    #[test]
    fn cluster_urls_parse_as_documented() {
        let t = ClusterTarget::parse("redis+cluster://u:pa%40ss@10.0.0.1:7000,10.0.0.2:7001/")
            .unwrap()
            .unwrap();
        assert!(!t.tls);
        assert_eq!(t.userinfo.as_deref(), Some("u:pa%40ss"));
        assert_eq!(t.nodes, ["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert_eq!(
            t.node_urls(),
            [
                "redis://u:pa%40ss@10.0.0.1:7000/",
                "redis://u:pa%40ss@10.0.0.2:7001/"
            ]
        );
        let t = ClusterTarget::parse("rediss+cluster://redis-0.redis:6379")
            .unwrap()
            .unwrap();
        assert!(t.tls && t.userinfo.is_none());
        assert_eq!(t.node_urls(), ["rediss://redis-0.redis:6379/"]);
        let t = ClusterTarget::parse("redis+cluster://[::1]:7000/")
            .unwrap()
            .unwrap();
        assert_eq!(t.node_urls(), ["redis://[::1]:7000/"]);
        assert_eq!(ClusterTarget::parse("redis://127.0.0.1:6379/"), Ok(None));
        assert_eq!(
            ClusterTarget::parse("redis+sentinel://127.0.0.1:26379/m"),
            Ok(None)
        );
    }

    #[test]
    fn a_malformed_cluster_url_is_refused_with_the_shape() {
        for bad in [
            "redis+cluster://",
            "redis+cluster:///",
            "redis+cluster://127.0.0.1/",
            "redis+cluster://127.0.0.1:70000/",
            "redis+cluster://:7000/",
            "redis+cluster://127.0.0.1:7000,/",
            "redis+cluster://u:p@/",
        ] {
            let e = ClusterTarget::parse(bad).unwrap_err();
            assert!(e.to_string().contains("HOST:PORT"), "{bad}: {e}");
        }
        for with_db in [
            "redis+cluster://127.0.0.1:7000/0",
            "rediss+cluster://127.0.0.1:7000/3",
            "redis+cluster://127.0.0.1:7000//",
        ] {
            let e = ClusterTarget::parse(with_db).unwrap_err();
            assert!(e.to_string().contains("only database 0"), "{with_db}: {e}");
        }
        // The password never reaches the error.
        let e = match RedisConn::open("redis+cluster://u:s3cret@h:1/2") {
            Err(e) => e,
            Ok(_) => panic!("a Cluster URL with a DB is refused"),
        };
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[tokio::test]
    async fn a_cluster_connection_is_made_lazily_and_fails_fast_while_redis_is_down() {
        // Nothing listens on port 1.
        let mut c = RedisConn::open("redis+cluster://127.0.0.1:1/").unwrap();
        let started = std::time::Instant::now();
        let r = redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut c)
            .await;
        assert!(r.is_err());
        assert!(started.elapsed() < CLUSTER_CONNECT_DEADLINE + CLUSTER_COMMAND_DEADLINE);
        // The failed connect is tried again by the next command.
        assert!(redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_err());
    }
}
