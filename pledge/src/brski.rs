//! BRSKI (RFC 8995) as a pledge: voucher first, then EST.
//!
//! 1. Provisional TLS to the registrar (§5.1): any server certificate is accepted for this one
//!    connection, but the TLS handshake still proves the server holds its key, and the
//!    certificate is recorded as `proximity-registrar-cert` ([`crate::trust::Recording`]).
//! 2. The pledge voucher request (§3.2: assertion proximity, nonce, serial-number, created-on,
//!    proximity-registrar-cert) is CMS-signed with the IDevID key and POSTed to
//!    `requestvoucher` on that same connection.
//! 3. The voucher is verified against the manufacturer's MASA anchor (`--masa-ca`), its
//!    serial-number, nonce and expiry checked ([`estuary_proto::voucher::verify`]), and the
//!    registrar's provisional certificate must be the pinned-domain-cert or issued by it
//!    (§5.6.2, [`estuary_proto::voucher::check_pin`]).
//! 4. `voucher_status` is posted, then EST runs as before over TLS verified against the pinned
//!    domain certificate ([`crate::trust::Pinned`]), then `enrollstatus` is posted (§5.7,
//!    §5.9.4).
//!
//! The steps are public to the crate so that [`crate::cloud`] runs the same ones.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estuary_proto::cert::CertSummary;
use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::url::{HttpsUrl, UrlError};
use estuary_proto::voucher::{
    self, check_pin, Assertion, Expected, NotCoveredByPin, VerifyError, Voucher, VoucherRequest,
    CT_VOUCHER_CMS_JSON,
};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cloud::RedirectRefused;
use crate::error::PledgeError;
use crate::est::reason_text;
use crate::flow::{self, EnrollOptions, Summary};
use crate::transport::{self, EstClient, Identity};
use crate::trust::{self, Pinned, Recording};

const MAX_BODY: usize = 256 * 1024;

/// Why BRSKI (or the cloud registrar exchange) failed.
#[derive(Debug, thiserror::Error)]
pub enum BrskiError {
    /// EST, files, keys: the shared pledge errors.
    #[error(transparent)]
    Pledge(#[from] PledgeError),
    /// The URL is unusable.
    #[error("bad URL {0}: {1}")]
    BadUrl(String, UrlError),
    /// TCP, TLS or HTTP failed.
    #[error("cannot talk to the registrar at {0}: {1}")]
    Connection(String, String),
    /// The registrar (or the MASA behind it) refused: 4xx.
    #[error("{op} refused (HTTP {status}): {reason}")]
    Refused {
        /// The BRSKI operation.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// Sanitised reason.
        reason: String,
    },
    /// The registrar could not answer now (5xx, or 401 with Retry-After).
    #[error("{op} failed (HTTP {status}){}", retry_after.as_ref().map(|r| format!("; retry after {r} s")).unwrap_or_default())]
    Unavailable {
        /// The BRSKI operation.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// Retry-After, if given.
        retry_after: Option<String>,
    },
    /// A status the operation does not use (1xx, a 3xx other than a followed 307).
    #[error("{op}: unexpected HTTP status {status}")]
    UnexpectedStatus {
        /// The BRSKI operation.
        op: &'static str,
        /// HTTP status.
        status: u16,
    },
    /// The voucher is not one this pledge may accept (RFC 8995 §5.6.1).
    #[error("voucher refused: {0}")]
    BadVoucher(#[from] VerifyError),
    /// The registrar's TLS certificate is not covered by the voucher's pinned-domain-cert
    /// (RFC 8995 §5.6.2).
    #[error("voucher refused: {0}")]
    NotPinned(#[from] NotCoveredByPin),
    /// The voucher's est-domain cannot be an EST base URL.
    #[error("voucher refused: est-domain {0:?} is unusable: {1}")]
    BadEstDomain(String, UrlError),
    /// The IDevID key cannot sign a voucher request.
    #[error("the IDevID key cannot sign the voucher request: {0}")]
    Key(String),
    /// A 307 this pledge does not follow (draft-ietf-anima-brski-cloud).
    #[error(transparent)]
    Redirect(#[from] RedirectRefused),
    /// The EST server named by the voucher's est-domain is not authenticated by its
    /// pinned-domain-cert; nothing was sent to it.
    #[error("the EST server at {est_url} is not authenticated by the voucher's pinned-domain-cert ({why}); no csrattrs or CSR was sent")]
    EstNotAuthenticated {
        /// The EST base URL.
        est_url: String,
        /// The TLS verifier's words.
        why: String,
    },
}

impl BrskiError {
    /// Exit code, as for EST: 1 local or protocol (a voucher or redirect the pledge refuses),
    /// 3 refused by the server (4xx), 4 connection, TLS (an EST server the pin does not
    /// authenticate) or unavailable.
    pub fn exit_code(&self) -> u8 {
        match self {
            BrskiError::Pledge(e) => e.exit_code(),
            BrskiError::Refused { .. } => 3,
            BrskiError::Connection(..)
            | BrskiError::Unavailable { .. }
            | BrskiError::EstNotAuthenticated { .. } => 4,
            BrskiError::BadUrl(..)
            | BrskiError::UnexpectedStatus { .. }
            | BrskiError::BadVoucher(_)
            | BrskiError::NotPinned(_)
            | BrskiError::BadEstDomain(..)
            | BrskiError::Key(_)
            | BrskiError::Redirect(_) => 1,
        }
    }
}

/// What the `brski` command needs.
#[derive(Clone, Debug)]
pub struct BrskiOptions {
    /// `https://host:port/.well-known/brski`
    pub brski_url: String,
    /// `https://host:port/.well-known/est`
    pub est_url: String,
    /// The IDevID (certificate PEM, P-256 PKCS#8 key PEM).
    pub idevid: Identity,
    /// The manufacturer's MASA trust anchor (PEM).
    pub masa_ca: PathBuf,
    /// Output directory (voucher, pinned domain certificate, then EST's files).
    pub out_dir: PathBuf,
    /// Per-exchange timeout.
    pub timeout: Duration,
    /// EST options (key type, 202 loop limit).
    pub enrolment: EnrollOptions,
}

/// What a BRSKI run produced.
#[derive(Debug)]
pub struct BrskiSummary {
    /// The voucher's serial-number.
    pub serial: String,
    /// The pinned domain certificate file.
    pub pinned: PathBuf,
    /// The voucher (CMS, DER) file.
    pub voucher: PathBuf,
    /// The EST result.
    pub est: Summary,
}

/// The pledge as BRSKI sees it: IDevID, its serial-number, its P-256 key, the MASA anchor.
pub struct Pledge {
    idevid: Identity,
    idevid_der: Vec<u8>,
    serial: String,
    key_pkcs8: Vec<u8>,
    masa_anchor: Vec<u8>,
}

impl std::fmt::Debug for Pledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pledge")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// A signed pledge voucher request and the nonce in it.
#[derive(Debug)]
pub struct SignedRequest {
    /// The fresh nonce.
    pub nonce: String,
    /// The CMS SignedData (DER).
    pub cms: Vec<u8>,
}

impl Pledge {
    /// Reads the IDevID (its subject serialNumber is the pledge's serial-number; the key must
    /// be P-256 PKCS#8) and the MASA anchor (first certificate of `masa_ca`).
    pub fn load(idevid: &Identity, masa_ca: &Path) -> Result<Pledge, BrskiError> {
        let ders = transport::read_pem_certs("--cert", &idevid.cert)?;
        let idevid_der = ders.first().map(|c| c.to_vec()).unwrap_or_default();
        let summary = CertSummary::from_der(&idevid_der).map_err(|source| PledgeError::Cert {
            origin: idevid.cert.display().to_string(),
            index: 0,
            source,
        })?;
        let serial = summary
            .subject_serial_number()
            .ok_or_else(|| BrskiError::Key("the IDevID has no subject serialNumber".into()))?
            .to_string();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(&idevid.key)
            .map_err(|e| BrskiError::Key(format!("not a PKCS#8 PEM key ({e})")))?;
        let key_pkcs8 = key.secret_pkcs8_der().to_vec();
        cms_signed::signing_key_from_pkcs8_der(&key_pkcs8)
            .map_err(|e| BrskiError::Key(e.to_string()))?;
        let anchors = transport::read_pem_certs("--masa-ca", masa_ca)?;
        Ok(Pledge {
            idevid: idevid.clone(),
            idevid_der,
            serial,
            key_pkcs8,
            masa_anchor: anchors.first().map(|c| c.to_vec()).unwrap_or_default(),
        })
    }

    /// The pledge's serial-number.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The IDevID, for TLS client authentication.
    pub fn identity(&self) -> &Identity {
        &self.idevid
    }

    /// A pledge voucher request (§3.2: assertion proximity, a fresh nonce, serial-number,
    /// created-on, proximity-registrar-cert = `registrar_cert`), CMS-signed with the IDevID.
    pub fn voucher_request(
        &self,
        registrar_cert: &[u8],
        now: i64,
    ) -> Result<SignedRequest, BrskiError> {
        let nonce = nonce();
        let pvr = VoucherRequest {
            assertion: Some(Assertion::Proximity),
            nonce: Some(nonce.clone()),
            serial_number: Some(self.serial.clone()),
            created_on: Some(voucher::rfc3339(now)),
            proximity_registrar_cert: Some(voucher::b64(registrar_cert)),
            ..Default::default()
        };
        let json = pvr.to_json().map_err(|e| BrskiError::Key(e.to_string()))?;
        let key = cms_signed::signing_key_from_pkcs8_der(&self.key_pkcs8)
            .map_err(|e| BrskiError::Key(e.to_string()))?;
        let cms = cms_signed::sign(ANIMA_JSON_VOUCHER, &json, &self.idevid_der, &[], &key)
            .map_err(|e| BrskiError::Key(e.to_string()))?;
        Ok(SignedRequest { nonce, cms })
    }

    /// The checks of §5.6.1 that do not depend on who relayed the voucher
    /// ([`estuary_proto::voucher::verify`]): signed by a certificate chaining to this pledge's
    /// MASA anchor, for its serial-number, with `nonce`, not expired, with a pinned-domain-cert
    /// (and an https est-domain if any). Returns the voucher and its pinned-domain-cert (DER).
    pub fn verify_voucher(
        &self,
        cms: &[u8],
        nonce: &str,
        now: i64,
    ) -> Result<(Voucher, Vec<u8>), BrskiError> {
        let expected = Expected {
            serial: &self.serial,
            nonce: Some(nonce),
            pin: None,
            est_domain: None,
            now,
        };
        let v = voucher::verify(cms, &self.masa_anchor, &expected)?;
        Ok((v.voucher, v.pinned_domain_cert))
    }
}

/// A TLS connection to a registrar or EST server.
pub(crate) type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// An HTTP answer from a registrar.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// TCP then TLS to `url`'s host, within `timeout`.
pub(crate) async fn connect(
    config: Arc<ClientConfig>,
    url: &HttpsUrl,
    timeout: Duration,
) -> Result<Tls, BrskiError> {
    let conn = |e: String| BrskiError::Connection(url.authority().to_owned(), e);
    // RFC 9525: the certificate must name the URL's host (a DNS-ID or an IP address).
    let name = rustls::pki_types::ServerName::try_from(url.host().to_owned())
        .map_err(|e| conn(format!("the host cannot be a TLS server name: {e}")))?;
    let attempt = async {
        let tcp = TcpStream::connect((url.host(), url.port()))
            .await
            .map_err(|e| conn(e.to_string()))?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| conn(format!("TLS: {e}")))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| conn("timed out".into()))?
}

/// One HTTP/1.1 request to `url` (path and query as given) on `tls`, within `timeout`.
pub(crate) async fn send(
    tls: Tls,
    url: &HttpsUrl,
    method: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, BrskiError> {
    let conn_err = |e: String| BrskiError::Connection(url.authority().to_owned(), e);
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| conn_err(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(url.path_and_query())
            .header(hyper::header::HOST, url.authority());
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| conn_err("cannot form a request for this URL".into()))?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| conn_err(e.to_string()))?;
        let status = rsp.status().as_u16();
        let header = |name| {
            rsp.headers()
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header(hyper::header::RETRY_AFTER);
        let location = header(hyper::header::LOCATION);
        let body = Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| conn_err(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(Answer {
            status,
            retry_after,
            location,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| conn_err("timed out".into()))?
}

/// The error for a BRSKI answer that is not a success (RFC 8995 §5.3, §5.7: 4xx refused,
/// 5xx try later).
pub(crate) fn check_status(op: &'static str, a: &Answer) -> Result<(), BrskiError> {
    match a.status {
        200..=299 => Ok(()),
        400..=499 => Err(BrskiError::Refused {
            op,
            status: a.status,
            reason: reason_text(&a.body),
        }),
        s => Err(BrskiError::Unavailable {
            op,
            status: s,
            retry_after: a.retry_after.clone(),
        }),
    }
}

fn nonce() -> String {
    use rsa::rand_core::RngCore;
    let mut b = [0u8; 16];
    rsa::rand_core::OsRng.fill_bytes(&mut b);
    voucher::b64(&b)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes `voucher.cms` and `pinned-domain.pem` into `out_dir` (created if missing).
pub(crate) fn write_voucher(
    out_dir: &Path,
    cms: &[u8],
    pinned: &[u8],
) -> Result<(PathBuf, PathBuf), BrskiError> {
    std::fs::create_dir_all(out_dir).map_err(|source| PledgeError::WriteFile {
        path: out_dir.to_owned(),
        source,
    })?;
    let voucher_path = out_dir.join("voucher.cms");
    flow::write_file(&voucher_path, cms, false)?;
    let pinned_path = out_dir.join("pinned-domain.pem");
    flow::write_file(
        &pinned_path,
        estuary_proto::pem::encode_certs(&[pinned.to_vec()]).as_bytes(),
        false,
    )?;
    Ok((voucher_path, pinned_path))
}

/// A client configuration that trusts what `pinned` authenticates, with the IDevID.
pub(crate) fn pinned_config(
    pinned: &[u8],
    idevid: &Identity,
) -> Result<(ClientConfig, Arc<Pinned>), BrskiError> {
    let verifier = Pinned::new(pinned, trust::provider());
    let config = transport::client_config_verified_by(verifier.clone(), idevid)?;
    Ok((config, verifier))
}

/// POSTs `{"version":1,"status":ok,"reason":why}` to `<base>/<op>` (§5.7, §5.9.4).
pub(crate) async fn status_post(
    config: Arc<ClientConfig>,
    base: &HttpsUrl,
    op: &'static str,
    ok: bool,
    why: &str,
    timeout: Duration,
) -> Result<(), BrskiError> {
    let body = serde_json::json!({"version": 1, "status": ok, "reason": why}).to_string();
    let url = base.join(op);
    let tls = connect(config, &url, timeout).await?;
    let a = send(
        tls,
        &url,
        "POST",
        Some("application/json"),
        body.into_bytes(),
        timeout,
    )
    .await?;
    check_status(op, &a)
}

/// Whether a failed `voucher_status` stops the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusReport {
    /// RFC 8995: the registrar expects it.
    Required,
    /// A cloud registrar may not record it: warn and go on.
    BestEffort,
}

/// After an accepted voucher: `voucher_status` true to the registrar at `base`, EST with
/// `est`, then `enrollstatus` (always best effort) with the outcome.
pub(crate) async fn enroll_and_report(
    registrar: Arc<ClientConfig>,
    base: &HttpsUrl,
    est: &EstClient,
    report: StatusReport,
    enrolment: &EnrollOptions,
    timeout: Duration,
) -> Result<Summary, BrskiError> {
    let posted = status_post(
        Arc::clone(&registrar),
        base,
        "voucher_status",
        true,
        "voucher accepted",
        timeout,
    )
    .await;
    match (posted, report) {
        (Ok(()), _) => {}
        (Err(e), StatusReport::Required) => return Err(e),
        (Err(e), StatusReport::BestEffort) => {
            eprintln!("warning: voucher_status not recorded: {e}");
        }
    }
    let result = flow::enroll(est, enrolment).await;
    let (ok, why) = match &result {
        Ok(_) => (true, "enrolled".to_string()),
        Err(e) => (false, e.to_string()),
    };
    if let Err(e) = status_post(registrar, base, "enrollstatus", ok, &why, timeout).await {
        eprintln!("warning: enrollstatus not recorded: {e}");
    }
    Ok(result?)
}

/// Runs BRSKI then EST.
pub async fn run(opts: &BrskiOptions) -> Result<BrskiSummary, BrskiError> {
    let base: HttpsUrl = opts
        .brski_url
        .parse()
        .map_err(|e| BrskiError::BadUrl(opts.brski_url.clone(), e))?;
    let pledge = Pledge::load(&opts.idevid, &opts.masa_ca)?;

    flow::step("provisional TLS to the registrar");
    let verifier = Recording::provisional(trust::provider());
    let config = transport::client_config_verified_by(verifier.clone(), &opts.idevid)?;
    let url = base.join("requestvoucher");
    let tls = connect(Arc::new(config), &url, opts.timeout).await?;
    let registrar = verifier
        .seen()
        .ok_or_else(|| {
            BrskiError::Connection(base.authority().to_owned(), "no server certificate".into())
        })?
        .cert;
    flow::done("ok");
    let request = pledge.voucher_request(&registrar, now_unix())?;
    flow::step("requesting a voucher");
    let answer = send(
        tls,
        &url,
        "POST",
        Some(CT_VOUCHER_CMS_JSON),
        request.cms,
        opts.timeout,
    )
    .await?;
    check_status("requestvoucher", &answer)?;
    let (_, pinned) = pledge.verify_voucher(&answer.body, &request.nonce, now_unix())?;
    check_pin(&pinned, &registrar)?;
    flow::done("voucher verified");

    let (voucher_path, pinned_path) = write_voucher(&opts.out_dir, &answer.body, &pinned)?;
    // From here on the registrar and the EST server are verified against the pinned domain
    // certificate.
    let (config, _) = pinned_config(&pinned, &opts.idevid)?;
    let est = EstClient::new(&opts.est_url, None, None, config.clone(), opts.timeout)?;
    let est = enroll_and_report(
        Arc::new(config),
        &base,
        &est,
        StatusReport::Required,
        &opts.enrolment,
        opts.timeout,
    )
    .await?;
    Ok(BrskiSummary {
        serial: pledge.serial().to_owned(),
        pinned: pinned_path,
        voucher: voucher_path,
        est,
    })
}
