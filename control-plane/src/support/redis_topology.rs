//! Where Redis is: one node (`redis://`, `rediss://`), or a master found through Redis Sentinel
//! (`redis+sentinel://`, `rediss+sentinel://`).
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
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

/// How long one Sentinel may take to answer (connect + query).
const SENTINEL_DEADLINE: Duration = Duration::from_millis(1000);

/// A Redis connection: lazily made, remade after Redis restarts, with deadlines on connecting
/// (1 s) and on every command (2 s), to one node or to the master Sentinel names.
#[derive(Clone)]
pub enum RedisConn {
    /// One node.
    Single(ConnectionManager),
    /// The master of a Sentinel-monitored service.
    Sentinel(Arc<SentinelConn>),
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
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h.rsplit_once(':').ok_or(bad("a Sentinel without :PORT"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("a Sentinel is not HOST:PORT"));
            }
            sentinels.push(h.to_string());
        }
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

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(m) => m.req_packed_command(cmd),
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
}
