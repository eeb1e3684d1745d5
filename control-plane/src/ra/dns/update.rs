//! DNS-01 record publishing by RFC 2136 UPDATE signed with TSIG (RFC 8945).
//!
//! [`DnsUpdater::publish`] adds TXT records and [`DnsUpdater::remove`] deletes exactly those
//! records, each call sending ONE UPDATE message to the zone's primary, however many records it
//! carries (a later stage coalesces many orders into one message).
//!
//! Messages are built and signed with `hickory-proto` (through `hickory_net::proto`). The
//! exchange itself (UDP, with TCP when the message is large or the answer is truncated) is done
//! here rather than through `hickory_net`'s `UdpClientStream`, because that stream reduces a
//! TSIG failure answer (BADSIG, BADKEY: unsigned per RFC 8945 §5.3.2) to a misleading
//! "truncated HMACs" error string. Here the TSIG error field of the answer is read first, so a
//! wrong secret is reported as [`DnsError::BadSig`] and an unknown key as [`DnsError::BadKey`].
//!
//! No secret ever reaches a log line, an error or a `Debug` output: [`crate::config::dns::TsigSecret`] prints
//! `<redacted>`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_net::proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_net::proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::dns::{check_domain_name, DnsConfig, TsigAlgorithmName};

/// TSIG fudge (RFC 8945 §5.2.3): accepted clock difference with the server, in seconds.
const TSIG_FUDGE: u16 = 300;
/// Largest message sent over UDP; larger batches go over TCP (RFC 1035 §4.2.2 framing).
/// 1232 is the DNS Flag Day 2020 size that avoids IP fragmentation on common paths.
const MAX_UDP_MESSAGE: usize = 1232;
/// Largest TXT value accepted per record (bytes). ACME DNS-01 values are 43 bytes.
const MAX_TXT_VALUE: usize = 4096;

/// The hickory algorithm of a configured TSIG algorithm name.
fn to_hickory(a: TsigAlgorithmName) -> TsigAlgorithm {
    match a {
        TsigAlgorithmName::HmacSha256 => TsigAlgorithm::HmacSha256,
        TsigAlgorithmName::HmacSha384 => TsigAlgorithm::HmacSha384,
        TsigAlgorithmName::HmacSha512 => TsigAlgorithm::HmacSha512,
    }
}

fn parse_fqdn(name: &str) -> Result<Name, &'static str> {
    check_domain_name(name)?;
    let mut parsed = Name::from_ascii(name).map_err(|_| "not a domain name")?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// One TXT record: owner name and value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxtRecord {
    /// Fully qualified owner name, e.g. `_acme-challenge.sn1.iot.example.test` (final dot optional).
    pub name: String,
    /// The TXT value (split into 255-byte character-strings on the wire).
    pub value: String,
}

impl TxtRecord {
    /// A TXT record at `name` with `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        TxtRecord {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Why an UPDATE did not take effect. No variant carries the TSIG secret.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configuration is unusable; every problem is listed.
    #[error("invalid DNS configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// A record name is not inside the configured zone; nothing was sent.
    #[error("{name} is outside the zone {zone}; nothing was sent")]
    OutsideZone {
        /// The record's name.
        name: String,
        /// The configured zone.
        zone: String,
    },
    /// A record is malformed (name syntax, value too long); nothing was sent.
    #[error("invalid TXT record {name:?}: {reason}; nothing was sent")]
    InvalidRecord {
        /// The record's name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// RCODE REFUSED (RFC 2136 §3.3): the key is not allowed to write these names or types.
    #[error("DNS primary refused the update for {names}: the TSIG key may not write there (REFUSED, zone {zone})")]
    Refused {
        /// The zone updated.
        zone: String,
        /// The record names in the message, comma-separated.
        names: String,
    },
    /// RCODE NOTAUTH without a TSIG error (RFC 2136 §3.1.1): the server is not authoritative
    /// (or not the primary) for the zone.
    #[error("DNS server is not authoritative for zone {zone} (NOTAUTH)")]
    NotAuth {
        /// The zone updated.
        zone: String,
    },
    /// TSIG error BADSIG (RFC 8945 §5.2.2): the server knows the key but the MAC did not
    /// verify, i.e. the secret (or algorithm) is wrong.
    #[error("DNS server rejected the TSIG signature of key {key_name}: wrong secret (BADSIG)")]
    BadSig {
        /// The key name used.
        key_name: String,
    },
    /// TSIG error BADKEY (RFC 8945 §5.2.1): the server does not know this key name with this
    /// algorithm.
    #[error("DNS server does not know TSIG key {key_name} with algorithm {algorithm} (BADKEY)")]
    BadKey {
        /// The key name used.
        key_name: String,
        /// The algorithm used.
        algorithm: TsigAlgorithmName,
    },
    /// TSIG error BADTIME (RFC 8945 §5.2.3): our clock and the server's differ by more than the
    /// fudge (300 s).
    #[error("DNS server rejected the TSIG time of key {key_name}: clocks differ by more than {TSIG_FUDGE} s (BADTIME)")]
    BadTime {
        /// The key name used.
        key_name: String,
    },
    /// Any other failing RCODE (SERVFAIL, FORMERR, NOTIMP, NOTZONE, ...) or TSIG error.
    #[error("DNS server failed the update for {names}: {rcode}")]
    ServerFailure {
        /// The RCODE (or TSIG error) as text.
        rcode: String,
        /// The record names in the message, comma-separated.
        names: String,
    },
    /// The answer could not be trusted: it claims success without a valid TSIG signature, or
    /// its signature does not verify with our key.
    #[error("DNS answer from {server} is not authenticated: {reason}")]
    Unauthenticated {
        /// The server asked.
        server: SocketAddr,
        /// Why the answer was rejected.
        reason: String,
    },
    /// The answer could not be parsed, or the message could not be built.
    #[error("DNS protocol error with {server}: {reason}")]
    Protocol {
        /// The server asked.
        server: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// No answer within the configured timeout.
    #[error("no answer from DNS server {server} within {after_ms} ms")]
    Timeout {
        /// The server asked.
        server: SocketAddr,
        /// The timeout that elapsed.
        after_ms: u64,
    },
    /// A socket error (e.g. connection refused: nothing listens on the server port).
    #[error("network error talking to DNS server {server}: {source}")]
    Transport {
        /// The server asked.
        server: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Nothing was sent: `limit` requests already wait for the DNS primary
    /// (`acme.dns_batch_max_queue`). Transient: the DNS primary is slow or a burst came.
    #[error("too many DNS updates waiting ({limit}); nothing was sent, retry later")]
    QueueFull {
        /// The queue bound.
        limit: usize,
    },
}

impl DnsError {
    /// Whether retrying the same update later cannot help without a change of configuration or
    /// input (refused, bad key or signature, wrong clock, not authoritative, invalid input).
    /// Timeouts, network errors, server failures and unauthenticated answers are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            DnsError::InvalidConfig { .. }
            | DnsError::OutsideZone { .. }
            | DnsError::InvalidRecord { .. }
            | DnsError::Refused { .. }
            | DnsError::NotAuth { .. }
            | DnsError::BadSig { .. }
            | DnsError::BadKey { .. }
            | DnsError::BadTime { .. } => true,
            DnsError::ServerFailure { .. }
            | DnsError::Unauthenticated { .. }
            | DnsError::Protocol { .. }
            | DnsError::Timeout { .. }
            | DnsError::Transport { .. }
            | DnsError::QueueFull { .. } => false,
        }
    }
}

/// What one UPDATE message does to its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// RFC 2136 §2.5.1 Add To An RRset.
    Add,
    /// RFC 2136 §2.5.4 Delete An RR From An RRset.
    Delete,
}

/// Callback run once per UPDATE message sent.
pub type UpdateCounter = Arc<dyn Fn() + Send + Sync>;

/// Sends TSIG-signed RFC 2136 UPDATEs for TXT records to one zone's primary.
#[derive(Clone)]
pub struct DnsUpdater {
    server: SocketAddr,
    zone: Name,
    zone_text: String,
    key_name: String,
    algorithm: TsigAlgorithmName,
    signer: TSigner,
    timeout: Duration,
    ttl: u32,
    counter: Option<UpdateCounter>,
    failure_counter: Option<UpdateCounter>,
}

impl fmt::Debug for DnsUpdater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsUpdater")
            .field("server", &self.server)
            .field("zone", &self.zone_text)
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl DnsUpdater {
    /// Checks the configuration ([`DnsConfig::validate`]) and prepares the TSIG signer.
    pub fn new(cfg: DnsConfig) -> Result<Self, DnsError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(DnsError::InvalidConfig { problems });
        }
        let invalid = |what: &str| DnsError::InvalidConfig {
            problems: vec![what.to_owned()],
        };
        let zone = parse_fqdn(&cfg.zone).map_err(|_| invalid("dns.zone is not a domain name"))?;
        let key =
            parse_fqdn(&cfg.key_name).map_err(|_| invalid("dns.key_name is not a domain name"))?;
        let signer = TSigner::new(
            cfg.secret.into_bytes(),
            to_hickory(cfg.algorithm),
            key,
            TSIG_FUDGE,
        )
        .map_err(|_| invalid("dns.algorithm is not supported by the TSIG implementation"))?;
        Ok(DnsUpdater {
            server: cfg.server,
            zone_text: zone.to_string().trim_end_matches('.').to_owned(),
            zone,
            key_name: cfg.key_name,
            algorithm: cfg.algorithm,
            signer,
            timeout: Duration::from_millis(cfg.timeout_ms),
            ttl: cfg.ttl,
            counter: None,
            failure_counter: None,
        })
    }

    /// Registers a callback run once per UPDATE message sent (not per record, not per
    /// retransmission), e.g. to increment `estuary_dns_updates_total`.
    pub fn with_update_counter(mut self, counter: UpdateCounter) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Registers a callback run once per UPDATE message that failed: refused, unanswered within
    /// `dns.timeout_ms`, or answered with something that is not a valid reply. E.g. to increment
    /// `estuary_dns_update_failures_total`.
    pub fn with_failure_counter(mut self, counter: UpdateCounter) -> Self {
        self.failure_counter = Some(counter);
        self
    }

    /// The zone updated, without final dot.
    pub fn zone(&self) -> &str {
        &self.zone_text
    }

    /// The upper bound of one UPDATE exchange (`dns.timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Adds all `records` in ONE UPDATE message (RFC 2136 §2.5.1, no prerequisites: a record
    /// already present is silently kept, as the RFC says). An empty slice sends nothing.
    pub async fn publish(&self, records: &[TxtRecord]) -> Result<(), DnsError> {
        self.apply(records, &[]).await
    }

    /// Deletes exactly `records` (name AND value) in ONE UPDATE message (RFC 2136 §2.5.4:
    /// class NONE, TTL 0, the rdata), so other TXT values at the same name stay. Deleting a
    /// record that does not exist is not an error. An empty slice sends nothing.
    pub async fn remove(&self, records: &[TxtRecord]) -> Result<(), DnsError> {
        self.apply(&[], records).await
    }

    /// Deletes exactly `deletes` and adds `adds`, in ONE UPDATE message: the deletions first,
    /// then the additions (RFC 2136 §3.4.2 applies the update section's RRs in order). A record
    /// should not be in both lists (the batcher keeps only its latest action). Nothing to do
    /// sends nothing.
    pub async fn apply(&self, adds: &[TxtRecord], deletes: &[TxtRecord]) -> Result<(), DnsError> {
        if adds.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        let mut message = self.build(adds, deletes)?;
        let records: Vec<TxtRecord> = deletes.iter().chain(adds).cloned().collect();
        let names = names_of(&records);
        let action = match (adds.is_empty(), deletes.is_empty()) {
            (false, true) => "add",
            (true, false) => "delete",
            _ => "delete+add",
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let verifier = message
            .finalize(&self.signer, now)
            .map_err(|e| self.protocol(format!("cannot sign the UPDATE: {e}")))?;
        let request = message
            .to_vec()
            .map_err(|e| self.protocol(format!("cannot encode the UPDATE: {e}")))?;

        if let Some(count) = &self.counter {
            count();
        }
        let started = Instant::now();
        let mut transport = "none";
        let result =
            match tokio::time::timeout(self.timeout, self.exchange(&request, message.id)).await {
                Ok(Ok((answer, via))) => {
                    transport = via;
                    self.interpret(&answer, verifier, &names)
                }
                Ok(Err(e)) => Err(DnsError::Transport {
                    server: self.server,
                    source: e,
                }),
                Err(_) => Err(DnsError::Timeout {
                    server: self.server,
                    after_ms: self.timeout.as_millis() as u64,
                }),
            };
        let outcome = match &result {
            Ok(()) => "NOERROR".to_owned(),
            Err(e) => {
                if let Some(count) = &self.failure_counter {
                    count();
                }
                e.to_string()
            }
        };
        tracing::debug!(
            action,
            adds = adds.len(),
            zone = %self.zone_text,
            records = records.len(),
            names = %names,
            bytes = request.len(),
            transport,
            elapsed_ms = started.elapsed().as_millis() as u64,
            outcome = %outcome,
            "DNS UPDATE"
        );
        result
    }

    fn protocol(&self, reason: String) -> DnsError {
        DnsError::Protocol {
            server: self.server,
            reason,
        }
    }

    /// Builds the unsigned UPDATE: zone section = (zone, IN, SOA), no prerequisites, one update
    /// RR per record. Every name is checked to be inside the zone first.
    fn build(&self, adds: &[TxtRecord], deletes: &[TxtRecord]) -> Result<Message, DnsError> {
        let mut updates = Vec::with_capacity(adds.len() + deletes.len());
        let actions = deletes
            .iter()
            .map(|r| (Action::Delete, r))
            .chain(adds.iter().map(|r| (Action::Add, r)));
        for (action, rec) in actions {
            let name = parse_fqdn(&rec.name).map_err(|reason| DnsError::InvalidRecord {
                name: rec.name.clone(),
                reason,
            })?;
            if !self.zone.zone_of(&name) {
                return Err(DnsError::OutsideZone {
                    name: rec.name.clone(),
                    zone: self.zone_text.clone(),
                });
            }
            if rec.value.len() > MAX_TXT_VALUE {
                return Err(DnsError::InvalidRecord {
                    name: rec.name.clone(),
                    reason: "TXT value longer than 4096 bytes",
                });
            }
            let mut record = Record::from_rdata(name, 0, RData::TXT(txt_rdata(&rec.value)));
            match action {
                Action::Add => record.ttl = self.ttl,
                Action::Delete => {
                    record.ttl = 0;
                    record.dns_class = DNSClass::NONE;
                }
            }
            updates.push(record);
        }

        let mut zone = Query::query(self.zone.clone(), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        message.add_zone(zone);
        message.add_updates(updates);
        Ok(message)
    }

    /// Sends the signed message and returns the raw answer with the same ID.
    /// Says which transport carried the answer ("udp" or "tcp").
    async fn exchange(&self, request: &[u8], id: u16) -> io::Result<(Vec<u8>, &'static str)> {
        if request.len() > MAX_UDP_MESSAGE {
            return Ok((self.exchange_tcp(request).await?, "tcp"));
        }
        let answer = self.exchange_udp(request, id).await?;
        // TC bit: the answer did not fit; ask again over TCP (RFC 1035 §4.2.1).
        if answer.get(2).is_some_and(|flags| flags & 0x02 != 0) {
            return Ok((self.exchange_tcp(request).await?, "tcp"));
        }
        Ok((answer, "udp"))
    }

    async fn exchange_udp(&self, request: &[u8], id: u16) -> io::Result<Vec<u8>> {
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await?;
        // connect(): the kernel drops datagrams from other sources, and ICMP port unreachable
        // comes back as ECONNREFUSED instead of a silent timeout.
        socket.connect(self.server).await?;
        // Retransmit the same signed bytes (UPDATE adds and deletes are idempotent) until an
        // answer comes; the caller's timeout bounds the whole exchange.
        let resend_every = (self.timeout / 3).max(Duration::from_millis(100));
        let mut buf = vec![0u8; 65535];
        loop {
            socket.send(request).await?;
            let deadline = tokio::time::Instant::now() + resend_every;
            loop {
                match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) => break, // resend
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(n)) => {
                        let answer = &buf[..n];
                        // Same ID and QR=1, else ignore (RFC 5452 §9.1 style screening).
                        if n >= 12 && answer[..2] == id.to_be_bytes() && answer[2] & 0x80 != 0 {
                            return Ok(answer.to_vec());
                        }
                    }
                }
            }
        }
    }

    async fn exchange_tcp(&self, request: &[u8]) -> io::Result<Vec<u8>> {
        let len = u16::try_from(request.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "UPDATE exceeds 65535 bytes")
        })?;
        let mut stream = TcpStream::connect(self.server).await?;
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(request);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    /// Maps the answer to a result. Order matters:
    /// 1. a TSIG error (BADSIG, BADKEY, BADTIME) is read from the answer first: such answers
    ///    are unsigned by design (RFC 8945 §5.3.2), so they are reported as they are, unverified
    ///    (a forged one can only make an update fail, never succeed);
    /// 2. an answer without TSIG is trusted only to report failure;
    /// 3. a signed answer must verify with our key (RFC 8945 §5.3) before its RCODE counts.
    fn interpret(
        &self,
        answer: &[u8],
        verifier: Option<TSigVerifier>,
        names: &str,
    ) -> Result<(), DnsError> {
        let parsed = Message::from_vec(answer)
            .map_err(|e| self.protocol(format!("malformed answer: {e}")))?;
        if parsed.metadata.message_type != MessageType::Response
            || parsed.metadata.op_code != OpCode::Update
        {
            return Err(self.protocol("answer is not an UPDATE response".to_owned()));
        }
        let rcode = parsed.metadata.response_code;
        let tsig_error = parsed.signature().and_then(|sig| sig.data.error);
        match tsig_error {
            Some(TsigError::BadSig) => {
                return Err(DnsError::BadSig {
                    key_name: self.key_name.clone(),
                })
            }
            Some(TsigError::BadKey) => {
                return Err(DnsError::BadKey {
                    key_name: self.key_name.clone(),
                    algorithm: self.algorithm,
                })
            }
            Some(TsigError::BadTime) => {
                return Err(DnsError::BadTime {
                    key_name: self.key_name.clone(),
                })
            }
            Some(other) => {
                return Err(DnsError::ServerFailure {
                    rcode: format!("{rcode} with TSIG error {other:?}"),
                    names: names.to_owned(),
                })
            }
            None => {}
        }
        if parsed.signature().is_none() {
            if rcode == ResponseCode::NoError {
                return Err(DnsError::Unauthenticated {
                    server: self.server,
                    reason: "NOERROR answer without TSIG signature".to_owned(),
                });
            }
            return Err(self.rcode_error(rcode, names));
        }
        let Some(mut verifier) = verifier else {
            return Err(self.protocol("no TSIG verifier for a signed request".to_owned()));
        };
        verifier
            .verify(answer)
            .map_err(|e| DnsError::Unauthenticated {
                server: self.server,
                reason: format!("TSIG of the answer does not verify: {e}"),
            })?;
        if rcode == ResponseCode::NoError {
            Ok(())
        } else {
            Err(self.rcode_error(rcode, names))
        }
    }

    /// RCODE → error (RFC 2136 §2.2, RFC 6895 §2.3).
    fn rcode_error(&self, rcode: ResponseCode, names: &str) -> DnsError {
        match rcode {
            ResponseCode::Refused => DnsError::Refused {
                zone: self.zone_text.clone(),
                names: names.to_owned(),
            },
            ResponseCode::NotAuth => DnsError::NotAuth {
                zone: self.zone_text.clone(),
            },
            ResponseCode::BADSIG => DnsError::BadSig {
                key_name: self.key_name.clone(),
            },
            ResponseCode::BADKEY => DnsError::BadKey {
                key_name: self.key_name.clone(),
                algorithm: self.algorithm,
            },
            ResponseCode::BADTIME => DnsError::BadTime {
                key_name: self.key_name.clone(),
            },
            other => DnsError::ServerFailure {
                rcode: other.to_string(),
                names: names.to_owned(),
            },
        }
    }
}

/// TXT RDATA for `value`: character-strings of at most 255 bytes (RFC 1035 §3.3.14).
fn txt_rdata(value: &str) -> TXT {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return TXT::from_bytes(vec![&[][..]]);
    }
    TXT::from_bytes(bytes.chunks(255).collect())
}

fn names_of(records: &[TxtRecord]) -> String {
    let mut names: Vec<&str> = records
        .iter()
        .map(|r| r.name.trim_end_matches('.'))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dns::TsigSecret;

    fn config(secret: &[u8]) -> DnsConfig {
        DnsConfig {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "example.test".into(),
            key_name: "k".into(),
            algorithm: TsigAlgorithmName::HmacSha256,
            secret: TsigSecret::from_bytes(secret.to_vec()),
            timeout_ms: 3000,
            ttl: 60,
            sweep_interval_s: 30,
        }
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut cfg = config(b"");
        cfg.zone = "bad zone..".into();
        cfg.key_name = "".into();
        cfg.server = "0.0.0.0:0".parse().unwrap();
        cfg.timeout_ms = 0;
        cfg.sweep_interval_s = 0;
        let problems = cfg.validate();
        assert_eq!(problems.len(), 7, "{problems:?}");
        let err = DnsUpdater::new(cfg).unwrap_err();
        assert!(matches!(err, DnsError::InvalidConfig { ref problems } if problems.len() == 7));
        assert!(err.is_permanent());
    }

    #[test]
    fn build_add_and_delete_messages() {
        let up = DnsUpdater::new(config(b"0123456789abcdef")).unwrap();
        let recs = [
            TxtRecord::new("_acme-challenge.a.iot.example.test", "v1"),
            TxtRecord::new("_acme-challenge.b.iot.example.test.", "v2"),
        ];
        let add = up.build(&recs, &[]).unwrap();
        assert_eq!(add.metadata.op_code, OpCode::Update);
        assert_eq!(add.zones().len(), 1);
        assert_eq!(add.zones()[0].query_type(), RecordType::SOA);
        assert!(add.prerequisites().is_empty());
        assert_eq!(add.updates().len(), 2);
        assert!(add
            .updates()
            .iter()
            .all(|r| r.dns_class == DNSClass::IN && r.ttl == 60));
        let del = up.build(&[], &recs).unwrap();
        assert!(del
            .updates()
            .iter()
            .all(|r| r.dns_class == DNSClass::NONE && r.ttl == 0));
        // The value is carried, so the delete removes only this RR (RFC 2136 §2.5.4).
        assert_eq!(del.updates()[0].data, RData::TXT(txt_rdata("v1")));
        // Both in one message: the deletions first, then the additions.
        let both = up.build(&recs[..1], &recs[1..]).unwrap();
        let classes: Vec<(DNSClass, u32)> = both
            .updates()
            .iter()
            .map(|r| (r.dns_class, r.ttl))
            .collect();
        assert_eq!(classes, [(DNSClass::NONE, 0), (DNSClass::IN, 60)]);
        assert_eq!(both.updates()[0].data, RData::TXT(txt_rdata("v2")));
    }

    #[test]
    fn long_values_split_into_255_byte_strings() {
        let v = "x".repeat(600);
        let txt = txt_rdata(&v);
        let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lens, [255, 255, 90]);
    }

    #[test]
    fn outside_zone_and_bad_names_are_rejected_before_sending() {
        let up = DnsUpdater::new(config(b"0123456789abcdef")).unwrap();
        let err = up
            .build(&[TxtRecord::new("_acme-challenge.example.org", "v")], &[])
            .unwrap_err();
        assert!(matches!(err, DnsError::OutsideZone { .. }), "{err}");
        // A suffix match on text is not a zone match.
        let err = up
            .build(&[TxtRecord::new("notexample.test", "v")], &[])
            .unwrap_err();
        assert!(matches!(err, DnsError::OutsideZone { .. }), "{err}");
        let err = up
            .build(&[TxtRecord::new("a b.example.test", "v")], &[])
            .unwrap_err();
        assert!(matches!(err, DnsError::InvalidRecord { .. }), "{err}");
        let err = up
            .build(&[TxtRecord::new("a.example.test", "x".repeat(5000))], &[])
            .unwrap_err();
        assert!(matches!(err, DnsError::InvalidRecord { .. }), "{err}");
    }
}
