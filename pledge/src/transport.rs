//! HTTPS to an EST server: rustls (ring provider) with a client certificate, server verified
//! against `--server-ca`; hyper 1 HTTP/1.1. [`EstClient`] opens one connection per request;
//! an [`EstSession`] keeps one open between requests, or opens a new one for a request when
//! asked ([`ConnectionUse`]), and times each exchange ([`Reply`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use estuary_proto::est::{
    EstOperation, CTE_BASE64, CT_PKCS10, EST_PREFIX, HDR_CONTENT_TRANSFER_ENCODING,
};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::error::{Exchange, PledgeError};
use crate::est::Answer;

/// Largest answer body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Where the TLS identity comes from.
#[derive(Clone, Debug)]
pub struct Identity {
    /// PEM file: the client certificate first, optionally followed by intermediates.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Extra certificates to send after those of `cert` (e.g. a chain.pem's intermediates).
    pub extra_chain: Vec<CertificateDer<'static>>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PledgeError> {
    std::fs::read(path).map_err(|source| PledgeError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads every CERTIFICATE block of a PEM file (at least one).
pub fn read_pem_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PledgeError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PledgeError::BadPemFile {
            what,
            path: path.to_owned(),
            reason: format!("not a PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(PledgeError::BadPemFile {
            what,
            path: path.to_owned(),
            reason: "holds no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a PEM file of trust anchors (`what` names the option in errors).
pub fn root_store(what: &'static str, path: &Path) -> Result<RootCertStore, PledgeError> {
    let mut roots = RootCertStore::empty();
    for cert in read_pem_certs(what, path)? {
        roots.add(cert).map_err(|e| PledgeError::BadPemFile {
            what,
            path: path.to_owned(),
            reason: format!("unusable trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

fn client_chain_and_key(
    id: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PledgeError> {
    let mut chain = read_pem_certs("--cert", &id.cert)?;
    chain.extend(id.extra_chain.iter().cloned());
    let key_pem = read("--key", &id.key)?;
    // The decoder's error never quotes key bytes.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| PledgeError::BadPemFile {
        what: "--key",
        path: id.key.clone(),
        reason: format!("no usable private key ({e})"),
    })?;
    Ok((chain, key))
}

/// Builds the rustls client configuration: ring provider, roots from `server_ca` only (no
/// system roots), and the client certificate when `identity` is given.
pub fn client_config(
    server_ca: &Path,
    identity: Option<&Identity>,
) -> Result<ClientConfig, PledgeError> {
    let roots = root_store("--server-ca", server_ca)?;
    let builder = ClientConfig::builder_with_provider(crate::trust::provider())
        .with_safe_default_protocol_versions()
        .map_err(PledgeError::TlsSetup)?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (chain, key) = client_chain_and_key(id)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(PledgeError::TlsSetup)?
        }
    };
    Ok(config)
}

/// A client configuration whose server check is `verifier` (see [`crate::trust`]), with
/// `identity` as the client certificate.
pub fn client_config_verified_by(
    verifier: Arc<dyn ServerCertVerifier>,
    identity: &Identity,
) -> Result<ClientConfig, PledgeError> {
    let (chain, key) = client_chain_and_key(identity)?;
    ClientConfig::builder_with_provider(crate::trust::provider())
        .with_safe_default_protocol_versions()
        .map_err(PledgeError::TlsSetup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(PledgeError::TlsSetup)
}

/// An EST server: base URL (with optional label) and TLS settings.
#[derive(Clone)]
pub struct EstClient {
    host: String,
    port: u16,
    authority: String,
    base_path: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    timeout: Duration,
    sent_cert: bool,
}

impl std::fmt::Debug for EstClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstClient")
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

/// Checks an RFC 7030 §3.2.2 label.
fn check_label(label: &str) -> Result<(), PledgeError> {
    let ok = (1..=estuary_proto::est::MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PledgeError::BadLabel(label.to_owned()))
    }
}

impl EstClient {
    /// `url` is the EST base (`https://host:port/.well-known/est`; a bare `https://host:port`
    /// means that path). `tls_name` overrides the name the server certificate must carry.
    pub fn new(
        url: &str,
        label: Option<&str>,
        tls_name: Option<&str>,
        config: ClientConfig,
        timeout: Duration,
    ) -> Result<EstClient, PledgeError> {
        let bad = |reason| PledgeError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let authority = uri.authority().ok_or(bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(443);
        let mut base_path = uri.path().trim_end_matches('/').to_owned();
        if base_path.is_empty() {
            base_path = EST_PREFIX.to_owned();
        }
        if let Some(label) = label {
            check_label(label)?;
            base_path.push('/');
            base_path.push_str(label);
        }
        let name = tls_name.unwrap_or(&host).to_owned();
        let sent_cert = config.client_auth_cert_resolver.has_certs();
        let server_name = ServerName::try_from(name)
            .map_err(|_| bad("the host is not a valid TLS server name"))?;
        Ok(EstClient {
            host,
            port,
            authority: authority.as_str().to_owned(),
            base_path,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            timeout,
            sent_cert,
        })
    }

    /// The full path of an operation, e.g. `/.well-known/est/simpleenroll`.
    pub fn path_of(&self, op: EstOperation) -> String {
        format!("{}/{}", self.base_path, op.as_str())
    }

    /// `GET` an operation.
    pub async fn get(&self, exchange: Exchange, op: EstOperation) -> Result<Answer, PledgeError> {
        let req = self.get_request(op)?;
        self.send(exchange, req).await
    }

    /// `POST` a PKCS#10 request (RFC 7030 §4.2.1: `application/pkcs10`, base64 body).
    pub async fn post_csr(
        &self,
        exchange: Exchange,
        op: EstOperation,
        csr_der: &[u8],
    ) -> Result<Answer, PledgeError> {
        let req = self.csr_request(op, &CsrBody::new(csr_der))?;
        self.send(exchange, req).await
    }

    fn get_request(&self, op: EstOperation) -> Result<Request<Full<Bytes>>, PledgeError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.path_of(op))
            .header(HOST, &self.authority)
            .body(Full::new(Bytes::new()));
        self.built(req)
    }

    fn csr_request(
        &self,
        op: EstOperation,
        csr: &CsrBody,
    ) -> Result<Request<Full<Bytes>>, PledgeError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.path_of(op))
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, CT_PKCS10)
            .header(HDR_CONTENT_TRANSFER_ENCODING, CTE_BASE64)
            .body(Full::new(csr.0.clone()));
        self.built(req)
    }

    fn built(
        &self,
        req: Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Request<Full<Bytes>>, PledgeError> {
        // The parts are fixed and checked at construction; a builder error cannot happen, but
        // is reported as a URL problem rather than a panic.
        req.map_err(|_| PledgeError::BadUrl {
            url: self.authority.clone(),
            reason: "cannot form a request for this URL",
        })
    }

    fn timed_out(&self, exchange: Exchange) -> PledgeError {
        PledgeError::Timeout {
            exchange,
            secs: self.timeout.as_secs(),
        }
    }

    /// One request on a connection of its own, closed after the answer.
    async fn send(
        &self,
        exchange: Exchange,
        req: Request<Full<Bytes>>,
    ) -> Result<Answer, PledgeError> {
        let once = async {
            let mut conn = self.open(exchange).await?;
            conn.round_trip(exchange, req).await
        };
        tokio::time::timeout(self.timeout, once)
            .await
            .map_err(|_| self.timed_out(exchange))?
    }

    /// TCP, TLS and the HTTP/1.1 handshake.
    async fn open(&self, exchange: Exchange) -> Result<Connection, PledgeError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| PledgeError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Requests are small writes; do not let Nagle hold them back on a kept-alive connection.
        tcp.set_nodelay(true)
            .map_err(|source| PledgeError::Connect { addr, source })?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                classify(exchange, self.sent_cert, &e)
                    .unwrap_or_else(|| PledgeError::Tls(rustls::Error::General(e.to_string())))
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| http_error(exchange, self.sent_cert, source))?;
        Ok(Connection {
            sender,
            driver: Some(tokio::spawn(conn)),
            sent_cert: self.sent_cert,
        })
    }
}

/// One open TLS connection with HTTP/1.1 on it. Dropping it closes the connection.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// The task driving the connection; taken when a request failed (the connection is then
    /// not used again).
    driver: Option<JoinHandle<Result<(), hyper::Error>>>,
    sent_cert: bool,
}

impl Connection {
    /// Whether the server closed the connection or a request on it failed.
    fn is_closed(&self) -> bool {
        self.driver.is_none() || self.sender.is_closed()
    }

    /// Sends `req` and reads the whole answer.
    async fn round_trip(
        &mut self,
        exchange: Exchange,
        req: Request<Full<Bytes>>,
    ) -> Result<Answer, PledgeError> {
        let sent_cert = self.sent_cert;
        let sender = &mut self.sender;
        let result = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY).collect().await;
            Ok::<_, RequestError>((parts, body))
        }
        .await;
        let (parts, body) = match result {
            Ok(ok) => ok,
            Err(RequestError(e)) => {
                // The connection task may hold the real cause (a TLS alert read after a
                // TLS 1.3 handshake completed on our side).
                let conn_err = match self.driver.take() {
                    Some(driver) => {
                        match tokio::time::timeout(Duration::from_secs(1), driver).await {
                            Ok(Ok(Err(ce))) => Some(ce),
                            _ => None,
                        }
                    }
                    None => None,
                };
                if let Some(found) = conn_err
                    .as_ref()
                    .and_then(|ce| classify(exchange, sent_cert, ce))
                {
                    return Err(found);
                }
                return Err(http_error(exchange, sent_cert, e));
            }
        };
        let body = match body {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e) => {
                // A half-read answer leaves the connection unusable.
                self.driver = None;
                return Err(match e.downcast::<hyper::Error>() {
                    Ok(he) => http_error(exchange, sent_cert, *he),
                    Err(_) => PledgeError::BodyTooLarge {
                        exchange,
                        limit: MAX_BODY,
                    },
                });
            }
        };
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Answer {
            status: parts.status.as_u16(),
            content_type: header(CONTENT_TYPE),
            retry_after: header(RETRY_AFTER),
            body,
        })
    }
}

/// A PKCS#10 request as EST posts it (RFC 7030 §4.2.1: the DER in base64), encoded once so
/// that it can be posted many times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrBody(Bytes);

impl CsrBody {
    /// Encodes `csr_der`.
    pub fn new(csr_der: &[u8]) -> CsrBody {
        CsrBody(Bytes::from(estuary_proto::base64::encode(csr_der)))
    }

    /// The body as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Which connection an [`EstSession`] request goes out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionUse {
    /// The session's open connection. When there is none, or the server closed it, a new one
    /// is opened and kept for the next request.
    KeepAlive,
    /// A new TLS connection (TCP, full handshake with the client certificate) for this request
    /// alone, closed after the answer. It replaces the session's open connection, if any.
    New,
}

/// An answer with what it took.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The answer.
    pub answer: Answer,
    /// From the call until the whole body was read; it includes opening the connection when
    /// `new_connection` is set.
    pub elapsed: Duration,
    /// Whether a connection was opened for this request.
    pub new_connection: bool,
}

/// An [`EstClient`] with a connection kept open between requests (HTTP/1.1, one request at a
/// time). Every request can instead go out on a new connection ([`ConnectionUse::New`]).
/// A failed or timed-out request closes the connection; the next one opens another.
#[derive(Debug)]
pub struct EstSession {
    client: EstClient,
    conn: Option<Connection>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl EstSession {
    /// A session of `client`'s server and TLS settings; no connection is opened yet. The
    /// client's timeout applies to each request, opening its connection included.
    pub fn new(client: EstClient) -> EstSession {
        EstSession { client, conn: None }
    }

    /// The client the session was made from.
    pub fn client(&self) -> &EstClient {
        &self.client
    }

    /// Whether a connection is open for the next [`ConnectionUse::KeepAlive`] request.
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Closes the open connection, if any.
    pub fn close(&mut self) {
        self.conn = None;
    }

    /// `GET` an operation.
    pub async fn get(
        &mut self,
        exchange: Exchange,
        op: EstOperation,
        how: ConnectionUse,
    ) -> Result<Reply, PledgeError> {
        let req = self.client.get_request(op)?;
        self.send(exchange, req, how).await
    }

    /// `POST` a PKCS#10 request (RFC 7030 §4.2.1), as [`EstClient::post_csr`] does.
    pub async fn post_csr(
        &mut self,
        exchange: Exchange,
        op: EstOperation,
        csr: &CsrBody,
        how: ConnectionUse,
    ) -> Result<Reply, PledgeError> {
        let req = self.client.csr_request(op, csr)?;
        self.send(exchange, req, how).await
    }

    async fn send(
        &mut self,
        exchange: Exchange,
        req: Request<Full<Bytes>>,
        how: ConnectionUse,
    ) -> Result<Reply, PledgeError> {
        let started = Instant::now();
        let timeout = self.client.timeout;
        let (answer, new_connection) =
            match tokio::time::timeout(timeout, self.exchange(exchange, req, how)).await {
                Ok(result) => result?,
                Err(_) => return Err(self.client.timed_out(exchange)),
            };
        Ok(Reply {
            answer,
            elapsed: started.elapsed(),
            new_connection,
        })
    }

    /// The connection is out of `self.conn` while in use: a request that fails or is cancelled
    /// leaves the session without one.
    async fn exchange(
        &mut self,
        exchange: Exchange,
        req: Request<Full<Bytes>>,
        how: ConnectionUse,
    ) -> Result<(Answer, bool), PledgeError> {
        let (mut conn, opened) = match self.conn.take() {
            Some(open) if how == ConnectionUse::KeepAlive && !open.is_closed() => (open, false),
            previous => {
                let conn = self.client.open(exchange).await?;
                drop(previous);
                (conn, true)
            }
        };
        let answer = conn.round_trip(exchange, req).await?;
        if how == ConnectionUse::KeepAlive {
            self.conn = Some(conn);
        }
        Ok((answer, opened))
    }
}

struct RequestError(hyper::Error);

impl From<hyper::Error> for RequestError {
    fn from(e: hyper::Error) -> Self {
        RequestError(e)
    }
}

fn http_error(exchange: Exchange, sent_cert: bool, source: hyper::Error) -> PledgeError {
    if let Some(found) = classify(exchange, sent_cert, &source) {
        return found;
    }
    if source.is_incomplete_message() || source.is_canceled() {
        return PledgeError::ConnectionClosed {
            exchange,
            detail: source.to_string(),
        };
    }
    PledgeError::Http { exchange, source }
}

/// Alerts a server sends when it does not accept the client certificate (RFC 8446 §6.2).
fn refuses_client_cert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
}

/// Maps a rustls error to ours.
pub fn tls_error(err: &rustls::Error, sent_cert: bool) -> PledgeError {
    match err {
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) if !sent_cert => {
            PledgeError::ClientCertRequired
        }
        rustls::Error::AlertReceived(alert) if refuses_client_cert(*alert) => {
            PledgeError::ClientCertRefused { alert: *alert }
        }
        rustls::Error::InvalidCertificate(e) => PledgeError::ServerCertInvalid(e.clone()),
        other => PledgeError::Tls(other.clone()),
    }
}

/// Looks through an error's causes (including the payload of `io::Error`s, which
/// `source()` skips) for a rustls error or a reset connection.
fn classify(
    exchange: Exchange,
    sent_cert: bool,
    err: &(dyn std::error::Error + 'static),
) -> Option<PledgeError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(tls_error(t, sent_cert));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = classify(exchange, sent_cert, inner) {
                    return Some(found);
                }
            }
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return Some(PledgeError::ConnectionClosed {
                    exchange,
                    detail: io.to_string(),
                });
            }
        }
        next = e.source();
    }
    None
}
