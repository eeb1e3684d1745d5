//! HTTPS to an EST server: rustls (ring provider) with a client certificate, server verified
//! against `--server-ca`; hyper 1 HTTP/1.1, one connection per request.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estuary_proto::est::{
    EstOperation, CTE_BASE64, CT_PKCS10, EST_PREFIX, HDR_CONTENT_TRANSFER_ENCODING,
};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
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
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.path_of(op))
            .header(HOST, &self.authority)
            .body(Full::new(Bytes::new()));
        self.send(exchange, req).await
    }

    /// `POST` a PKCS#10 request (RFC 7030 §4.2.1: `application/pkcs10`, base64 body).
    pub async fn post_csr(
        &self,
        exchange: Exchange,
        op: EstOperation,
        csr_der: &[u8],
    ) -> Result<Answer, PledgeError> {
        let body = estuary_proto::base64::encode(csr_der);
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.path_of(op))
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, CT_PKCS10)
            .header(HDR_CONTENT_TRANSFER_ENCODING, CTE_BASE64)
            .body(Full::new(Bytes::from(body)));
        self.send(exchange, req).await
    }

    async fn send(
        &self,
        exchange: Exchange,
        req: Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Answer, PledgeError> {
        // The parts are fixed and checked at construction; a builder error cannot happen, but
        // is reported as a URL problem rather than a panic.
        let req = req.map_err(|_| PledgeError::BadUrl {
            url: self.authority.clone(),
            reason: "cannot form a request for this URL",
        })?;
        let secs = self.timeout.as_secs();
        tokio::time::timeout(self.timeout, self.exchange(exchange, req))
            .await
            .map_err(|_| PledgeError::Timeout { exchange, secs })?
    }

    async fn exchange(
        &self,
        exchange: Exchange,
        req: Request<Full<Bytes>>,
    ) -> Result<Answer, PledgeError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| PledgeError::Connect { addr, source })?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                classify(exchange, self.sent_cert, &e)
                    .unwrap_or_else(|| PledgeError::Tls(rustls::Error::General(e.to_string())))
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| http_error(exchange, self.sent_cert, source))?;
        let conn = tokio::spawn(conn);
        let result = async {
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
                let conn_err = match tokio::time::timeout(Duration::from_secs(1), conn).await {
                    Ok(Ok(Err(ce))) => Some(ce),
                    _ => None,
                };
                if let Some(found) = conn_err
                    .as_ref()
                    .and_then(|ce| classify(exchange, self.sent_cert, ce))
                {
                    return Err(found);
                }
                return Err(http_error(exchange, self.sent_cert, e));
            }
        };
        let body = body
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(he) => http_error(exchange, self.sent_cert, *he),
                Err(_) => PledgeError::BodyTooLarge {
                    exchange,
                    limit: MAX_BODY,
                },
            })?
            .to_bytes()
            .to_vec();
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
