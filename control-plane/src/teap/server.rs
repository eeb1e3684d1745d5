//! The RADIUS listener for EAP-TEAP (RFC 2865, RFC 3579).
//!
//! - A datagram from an unknown address, with a bad or missing Message-Authenticator, or that
//!   is not an Access-Request is silently dropped (RFC 3579 §3.2).
//! - Retransmissions (same source, Identifier and Request Authenticator) get the cached reply;
//!   while the first copy is still being processed, they are dropped.
//! - Conversations are keyed by the State attribute, expire after `session_timeout_s`, and are
//!   capped at `max_sessions`; at most `max_inflight` requests are processed at once, so a
//!   flood of Access-Requests costs bounded memory and leaves the rest of the service alone.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::csrattrs;
use estuary_proto::eap::{EapCode, EapPacket, EapType};
use estuary_proto::identity::TrustPolicy;
use estuary_proto::policy::KeyPolicy;
use estuary_proto::radius::{self, AttrType, Code, Packet};
use estuary_proto::teap::ErrorCode;
use estuary_teap::session::{Enrolled, ServerSession, SessionConfig, Step};
use rand::RngCore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::teap::TeapConfig;
use crate::metrics::{EnrollResult, Metrics, Protocol};
use crate::ra::engine::{Engine, EnrollRequest, Outcome};
use crate::ra::error::RaError;
use crate::ra::failure::FailureKind;

type SessionRef = Arc<tokio::sync::Mutex<ServerSession>>;

struct Conversation {
    last: Instant,
    session: SessionRef,
}

type DupKey = (SocketAddr, u8, [u8; 16]);
/// When a request was first seen, and the reply once there is one.
type DupEntry = (Instant, Option<Vec<u8>>);

/// The RADIUS/EAP-TEAP server.
pub struct TeapServer {
    socket: Arc<UdpSocket>,
    secrets: HashMap<IpAddr, Vec<u8>>,
    session_cfg: Arc<SessionConfig>,
    sessions: Mutex<HashMap<[u8; 16], Conversation>>,
    dups: Mutex<HashMap<DupKey, DupEntry>>,
    permits: Arc<Semaphore>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    max_sessions: usize,
    enroll_timeout: Duration,
}

/// Builds the rustls server configuration: our certificate, client certificates required
/// and verified against `client_ca_file`.
pub fn tls_config(cfg: &TeapConfig) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .map_err(|e| anyhow::anyhow!("teap.cert_file: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("teap.cert_file: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|_| anyhow::anyhow!("teap.key_file: no readable private key"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cfg.client_ca_file)
        .map_err(|e| anyhow::anyhow!("teap.client_ca_file: {e}"))?
    {
        let c = c.map_err(|e| anyhow::anyhow!("teap.client_ca_file: {e}"))?;
        roots
            .add(c)
            .map_err(|e| anyhow::anyhow!("teap.client_ca_file: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| anyhow::anyhow!("teap.client_ca_file: {e}"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if cfg.tls13 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12]
    };
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("teap.cert_file/key_file: {e}"))?;
    // No resumption state to keep per device, and no tickets inside the EAP exchange.
    sc.send_tls13_tickets = 0;
    Ok(Arc::new(sc))
}

impl TeapServer {
    /// Binds the UDP socket. `trusted_server_roots` is the PKCS#7 answered to a
    /// Trusted-Server-Root request ([`trust_anchors_pkcs7`]).
    pub async fn bind(
        cfg: &TeapConfig,
        engine: Arc<Engine>,
        trust: TrustPolicy,
        keys: KeyPolicy,
        trusted_server_roots: Option<Vec<u8>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let tls = tls_config(cfg)?;
        let socket = UdpSocket::bind(cfg.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding teap.listen {}: {e}", cfg.listen))?;
        let session_cfg = Arc::new(SessionConfig {
            tls,
            authority_id: cfg.authority_id.as_bytes().to_vec(),
            fragment_size: cfg.fragment_size,
            request_csr: cfg.request_csr,
            allow_without_csr: cfg.allow_without_csr,
            trust,
            csr_attrs: Arc::new(move |name| csrattrs::device_template(name, &keys).to_der().ok()),
            trusted_server_roots,
        });
        Ok(Arc::new(Self {
            socket: Arc::new(socket),
            secrets: cfg
                .clients
                .iter()
                .map(|c| (c.address, c.secret.expose().as_bytes().to_vec()))
                .collect(),
            session_cfg,
            sessions: Mutex::new(HashMap::new()),
            dups: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(cfg.max_inflight)),
            engine,
            metrics,
            timeout: Duration::from_secs(cfg.session_timeout_s),
            max_sessions: cfg.max_sessions,
            enroll_timeout: Duration::from_millis(cfg.enroll_timeout_ms),
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Conversations held now.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Serves forever.
    pub async fn run(self: Arc<Self>) {
        let sweeper = Arc::clone(&self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                sweeper.sweep();
            }
        });
        let mut buf = vec![0u8; radius::MAX_LEN];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "RADIUS receive failed");
                    continue;
                }
            };
            let datagram = buf[..n].to_vec();
            self.datagram(datagram, from);
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.sessions).retain(|_, c| now.duration_since(c.last) < self.timeout);
        lock(&self.dups).retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(30));
        self.metrics.teap_sessions.set(self.session_count() as i64);
    }

    fn datagram(self: &Arc<Self>, datagram: Vec<u8>, from: SocketAddr) {
        let Some(secret) = self.secrets.get(&from.ip()).cloned() else {
            debug!(%from, "RADIUS packet from an unknown client dropped");
            return;
        };
        let req = match radius::verify_request(&datagram, &secret) {
            Ok(p) if p.code == Code::ACCESS_REQUEST => p,
            Ok(_) => return,
            Err(e) => {
                // RFC 3579 §3.2: silently discard.
                info!(%from, error = %e, "RADIUS packet dropped");
                return;
            }
        };
        let key = (from, req.identifier, req.authenticator);
        {
            let mut dups = lock(&self.dups);
            match dups.get(&key) {
                Some((_, Some(reply))) => {
                    let reply = reply.clone();
                    let socket = Arc::clone(&self.socket);
                    tokio::spawn(async move {
                        let _ = socket.send_to(&reply, from).await;
                    });
                    return;
                }
                Some((_, None)) => return,
                None => {}
            }
            if dups.len() >= self.max_sessions.saturating_mul(4).max(1024) {
                return;
            }
            dups.insert(key, (Instant::now(), None));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            lock(&self.dups).remove(&key);
            debug!(%from, "busy: Access-Request dropped");
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let reply = this.answer(&req, &secret).await;
            drop(permit);
            match reply.and_then(|p| p.encode_response(&secret, &req.authenticator).ok()) {
                Some(wire) => {
                    lock(&this.dups).insert(key, (Instant::now(), Some(wire.clone())));
                    if let Err(e) = this.socket.send_to(&wire, from).await {
                        warn!(error = %e, "RADIUS send failed");
                    }
                }
                None => {
                    lock(&this.dups).remove(&key);
                }
            }
        });
    }

    /// The reply to one verified Access-Request (None: send nothing).
    async fn answer(&self, req: &Packet, secret: &[u8]) -> Option<Packet> {
        let eap = match req.eap_message().map(|b| EapPacket::decode(&b)) {
            Some(Ok(e)) => e,
            _ => return Some(reject(req.identifier, 0)),
        };
        let state = req
            .attr(AttrType::STATE)
            .and_then(|s| <[u8; 16]>::try_from(s).ok());
        let (sid, session) = match state {
            None => {
                if eap.code != EapCode::RESPONSE || eap.typ != Some(EapType::IDENTITY) {
                    return Some(reject(req.identifier, eap.identifier));
                }
                if self.session_count() >= self.max_sessions {
                    self.sweep();
                    if self.session_count() >= self.max_sessions {
                        warn!("TEAP conversation table full; rejecting");
                        return Some(reject(req.identifier, eap.identifier));
                    }
                }
                let mut nonce = [0u8; 32];
                rand::rng().fill_bytes(&mut nonce);
                let (session, start) = match ServerSession::start(
                    Arc::clone(&self.session_cfg),
                    eap.identifier,
                    nonce,
                ) {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "cannot start a TEAP conversation");
                        return Some(reject(req.identifier, eap.identifier));
                    }
                };
                let mut sid = [0u8; 16];
                rand::rng().fill_bytes(&mut sid);
                lock(&self.sessions).insert(
                    sid,
                    Conversation {
                        last: Instant::now(),
                        session: Arc::new(tokio::sync::Mutex::new(session)),
                    },
                );
                self.metrics.teap_sessions.set(self.session_count() as i64);
                return Some(challenge(req.identifier, &start, &sid));
            }
            Some(sid) => {
                let found = lock(&self.sessions).get_mut(&sid).map(|c| {
                    c.last = Instant::now();
                    Arc::clone(&c.session)
                });
                match found {
                    Some(s) => (sid, s),
                    None => return Some(reject(req.identifier, eap.identifier)),
                }
            }
        };
        let mut s = session.lock().await;
        let mut step = s.handle(&eap);
        if s.take_csr_refusal() {
            // Refused in the tunnel (channel binding), before the engine: counted as its
            // refusals are.
            self.metrics
                .enrollment(Protocol::teap, EnrollResult::rejected);
        }
        if let Step::Enroll {
            csr_der,
            serial,
            operation,
        } = step
        {
            let result = self.enroll(csr_der, serial, operation).await;
            step = s.enrolled(result);
        }
        drop(s);
        match step {
            Step::Challenge(p) => {
                if let Some(c) = lock(&self.sessions).get_mut(&sid) {
                    c.last = Instant::now();
                }
                Some(challenge(req.identifier, &p, &sid))
            }
            Step::Accept { eap, msk } => {
                lock(&self.sessions).remove(&sid);
                let mut p = Packet::new(Code::ACCESS_ACCEPT, req.identifier, [0; 16]);
                p.push_eap_message(&eap.encode().ok()?);
                if let Some(u) = req.attr(AttrType::USER_NAME) {
                    p.push(AttrType::USER_NAME, u.to_vec());
                }
                // RFC 2548 §2.4: Recv-Key = MSK[0..32], Send-Key = MSK[32..64] (RFC 5216 §2.3).
                for (vtype, key) in [
                    (radius::MS_MPPE_RECV_KEY, &msk[..32]),
                    (radius::MS_MPPE_SEND_KEY, &msk[32..]),
                ] {
                    let mut salt = [0u8; 2];
                    rand::rng().fill_bytes(&mut salt);
                    salt[0] |= 0x80;
                    let v = radius::mppe_encrypt(secret, &req.authenticator, salt, key);
                    p.push(
                        AttrType::VENDOR_SPECIFIC,
                        radius::vendor_specific(radius::VENDOR_MICROSOFT, vtype, &v),
                    );
                }
                info!("TEAP authentication succeeded: Access-Accept");
                Some(p)
            }
            Step::Reject(eap) => {
                lock(&self.sessions).remove(&sid);
                info!("TEAP authentication failed: Access-Reject");
                Some(reject(req.identifier, eap.identifier))
            }
            Step::Enroll { .. } => {
                lock(&self.sessions).remove(&sid);
                Some(reject(req.identifier, eap.identifier))
            }
        }
    }

    /// One enrolment through the RA engine; pending answers are retried until the deadline.
    async fn enroll(
        &self,
        csr_der: Vec<u8>,
        serial: estuary_proto::names::DeviceSerial,
        operation: estuary_proto::est::EstOperation,
    ) -> Enrolled {
        let deadline = Instant::now() + self.enroll_timeout;
        loop {
            let req = EnrollRequest {
                csr_der: csr_der.clone(),
                serial: serial.clone(),
                operation,
                label: None,
            };
            match self.engine.enroll_as(Protocol::teap, req).await {
                Ok(Outcome::Issued { pkcs7, .. }) => return Enrolled::Issued(pkcs7),
                Ok(Outcome::Pending { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Outcome::Pending { .. }) => {
                    return Enrolled::Failed(ErrorCode::INFRASTRUCTURE_UNAVAILABLE)
                }
                Err(e) => {
                    info!(error = %e, "TEAP enrolment refused");
                    return Enrolled::Failed(error_code(&e));
                }
            }
        }
    }
}

/// The PKCS#7 certs-only a Trusted-Server-Root request is answered with (RFC 9930 §4.2.18):
/// the ACME CA's trust anchors, which draft-ietf-acme-integrations-17 says the TEAP server
/// MUST return. They are taken from `est.ca_certs_file` (the ACME CA certificates `/cacerts`
/// serves and LDevIDs are checked against): its self-issued certificates (subject =
/// issuer), or every certificate in it when none is self-issued. `acme.tls_root_file` is not
/// used: it anchors the ACME server's HTTPS certificate, not the certificates the CA issues.
pub fn trust_anchors_pkcs7(ca_ders: &[Vec<u8>]) -> anyhow::Result<Vec<u8>> {
    let self_issued: Vec<Vec<u8>> = ca_ders
        .iter()
        .filter(|d| {
            estuary_proto::cert::CertSummary::from_der(d)
                .is_ok_and(|c| c.subject_der() == c.issuer_der())
        })
        .cloned()
        .collect();
    let anchors = if self_issued.is_empty() {
        ca_ders
    } else {
        &self_issued[..]
    };
    estuary_proto::pkcs7::encode_certs_only(anchors)
        .map_err(|e| anyhow::anyhow!("est.ca_certs_file: {e}"))
}

/// The one map from an enrolment error to the TEAP Error TLV (RFC 9930 §4.2.6).
pub fn error_code(e: &RaError) -> ErrorCode {
    match e {
        // RFC 9930 §4.2.6 1025 Bad CSR.
        RaError::BadCsr(_) => ErrorCode::BAD_CSR,
        // 1024 Bad Identity in CSR: a name or content the device may not have.
        RaError::Policy(_) | RaError::Name(_) => ErrorCode::BAD_IDENTITY_IN_CSR,
        // 1009 Infrastructure Unavailable: Redis, or no turn to issue.
        RaError::Store(_) | RaError::Busy => ErrorCode::INFRASTRUCTURE_UNAVAILABLE,
        // The device's own order limit: TEAP has no "too many requests"; the CA side refuses.
        RaError::DeviceLimit { .. } => ErrorCode::INTERNAL_CA_ERROR,
        // TEAP has no EST labels; the engine is never asked for one from here.
        RaError::UnknownLabel(_) => ErrorCode::INTERNAL_CA_ERROR,
        RaError::Issue(i) => failure_code(i.failure_kind()),
        RaError::Remembered(f) => failure_code(f.kind),
        // The RA could not make a key (serverkeygen only; TEAP never asks for one).
        RaError::KeyGen(_) => ErrorCode::INTERNAL_CA_ERROR,
    }
}

/// draft-ietf-acme-integrations-17 "Error Handling": ACME badCSR and caa → 1025, rejectedIdentifier
/// → 1024, anything else the CA or DNS did → 1026 Internal CA Error; a transient condition → 1009.
fn failure_code(k: FailureKind) -> ErrorCode {
    match k {
        FailureKind::CsrRefused | FailureKind::CaaForbids => ErrorCode::BAD_CSR,
        FailureKind::IdentifierRefused => ErrorCode::BAD_IDENTITY_IN_CSR,
        FailureKind::Issuance | FailureKind::Internal => ErrorCode::INTERNAL_CA_ERROR,
        FailureKind::Unavailable | FailureKind::Deadline | FailureKind::Abandoned => {
            ErrorCode::INFRASTRUCTURE_UNAVAILABLE
        }
    }
}

fn challenge(radius_id: u8, eap: &EapPacket, sid: &[u8; 16]) -> Packet {
    let mut p = Packet::new(Code::ACCESS_CHALLENGE, radius_id, [0; 16]);
    if let Ok(b) = eap.encode() {
        p.push_eap_message(&b);
    }
    p.push(AttrType::STATE, sid.to_vec());
    p
}

fn reject(radius_id: u8, eap_id: u8) -> Packet {
    let mut p = Packet::new(Code::ACCESS_REJECT, radius_id, [0; 16]);
    if let Ok(b) = EapPacket::outcome(EapCode::FAILURE, eap_id).encode() {
        p.push_eap_message(&b);
    }
    p
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod error_map_tests {
    use super::*;
    use crate::ra::acme::problem::{IssueError, ProblemType};

    /// draft-ietf-acme-integrations-17 "Error Handling" table, TEAP column.
    #[test]
    fn ca_problems_map_to_the_draft_17_teap_errors() {
        let rejected = |problem| {
            RaError::Issue(IssueError::CaRejected {
                problem,
                detail: "d".into(),
            })
        };
        for (e, want) in [
            (rejected(ProblemType::BadCsr), ErrorCode::BAD_CSR),
            (rejected(ProblemType::Caa), ErrorCode::BAD_CSR),
            (
                rejected(ProblemType::RejectedIdentifier),
                ErrorCode::BAD_IDENTITY_IN_CSR,
            ),
            (
                rejected(ProblemType::Unauthorized),
                ErrorCode::INTERNAL_CA_ERROR,
            ),
            (
                rejected(ProblemType::Other("x".into())),
                ErrorCode::INTERNAL_CA_ERROR,
            ),
            (
                RaError::Issue(IssueError::CaUnavailable {
                    detail: "d".into(),
                    retry_after: None,
                }),
                ErrorCode::INFRASTRUCTURE_UNAVAILABLE,
            ),
            (RaError::Busy, ErrorCode::INFRASTRUCTURE_UNAVAILABLE),
        ] {
            assert_eq!(error_code(&e), want, "{e:?}");
        }
    }
}

#[cfg(test)]
mod anchor_tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca(
        cn: &str,
        parent: Option<&Issuer<'static, KeyPair>>,
    ) -> (Vec<u8>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = match parent {
            None => p.self_signed(&key),
            Some(i) => p.signed_by(&key, i),
        }
        .expect("cert")
        .der()
        .to_vec();
        (der, Issuer::new(p, key))
    }

    /// Trusted-Server-Root answers with the anchors of `est.ca_certs_file`: its self-issued
    /// certificates when it also holds intermediates (draft-17 `/cacerts`), else all of it.
    #[test]
    fn trust_anchors_are_the_self_issued_ca_certificates() {
        let (root, root_issuer) = ca("ACME root", None);
        let (inter, _) = ca("ACME intermediate", Some(&root_issuer));
        let p7 = trust_anchors_pkcs7(&[inter.clone(), root.clone()]).expect("p7");
        assert_eq!(
            estuary_proto::pkcs7::decode_certs_only(&p7).expect("decode"),
            vec![root]
        );
        let p7 = trust_anchors_pkcs7(std::slice::from_ref(&inter)).expect("p7");
        assert_eq!(
            estuary_proto::pkcs7::decode_certs_only(&p7).expect("decode"),
            vec![inter]
        );
    }
}
