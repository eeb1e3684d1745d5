//! BRSKI (RFC 8995) as a pledge: voucher first, then EST.
//!
//! 1. Provisional TLS to the registrar (§5.1): any server certificate is accepted for this one
//!    connection, but the TLS handshake still proves the server holds its key, and the
//!    certificate is recorded as `proximity-registrar-cert`.
//! 2. The pledge voucher request (§3.2: assertion proximity, nonce, serial-number, created-on,
//!    proximity-registrar-cert) is CMS-signed with the IDevID key and POSTed to
//!    `requestvoucher` on that same connection.
//! 3. The voucher is verified against the manufacturer's MASA anchor (`--masa-ca`), its
//!    serial-number and nonce checked, and the registrar's provisional certificate must be the
//!    pinned-domain-cert or issued by it (§5.6.2).
//! 4. `voucher_status` is posted, then EST runs as before over TLS verified against the pinned
//!    domain certificate, then `enrollstatus` is posted (§5.7, §5.9.4).
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use estuary_proto::cert::CertSummary;
use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::voucher::{self, Assertion, Voucher, VoucherRequest, CT_VOUCHER_CMS_JSON};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::PledgeError;
use crate::flow::{self, EnrollOptions, Summary};
use crate::transport::{self, EstClient, Identity};

const MAX_BODY: usize = 256 * 1024;

/// Why BRSKI failed.
#[derive(Debug, thiserror::Error)]
pub enum BrskiError {
    /// EST, files, keys: the shared pledge errors.
    #[error(transparent)]
    Pledge(#[from] PledgeError),
    /// The URL is unusable.
    #[error("bad URL {0}: {1}")]
    BadUrl(String, &'static str),
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
    /// The registrar could not answer now (5xx).
    #[error("{op} failed (HTTP {status}){}", retry_after.as_ref().map(|r| format!("; retry after {r} s")).unwrap_or_default())]
    Unavailable {
        /// The BRSKI operation.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// Retry-After, if given.
        retry_after: Option<String>,
    },
    /// The voucher is not one this pledge may accept.
    #[error("voucher refused: {0}")]
    BadVoucher(String),
    /// The IDevID key cannot sign a voucher request.
    #[error("the IDevID key cannot sign the voucher request: {0}")]
    Key(String),
}

impl BrskiError {
    /// Exit code, as for EST: 1 local or protocol, 3 refused, 4 connection or unavailable.
    pub fn exit_code(&self) -> u8 {
        match self {
            BrskiError::Pledge(e) => e.exit_code(),
            BrskiError::Refused { .. } => 3,
            BrskiError::Connection(..) | BrskiError::Unavailable { .. } => 4,
            BrskiError::BadUrl(..) | BrskiError::BadVoucher(_) | BrskiError::Key(_) => 1,
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

/// Accepts any server certificate, records it, and still checks the handshake signature.
#[derive(Debug)]
struct Provisional {
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Provisional {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
    name: ServerName<'static>,
}

fn target(url: &str) -> Result<Target, BrskiError> {
    let bad = |r| BrskiError::BadUrl(url.to_string(), r);
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    let auth = uri.authority().ok_or(bad("no host"))?;
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = ServerName::try_from(host.clone()).map_err(|_| bad("bad host"))?;
    Ok(Target {
        port: auth.port_u16().unwrap_or(443),
        authority: auth.as_str().to_string(),
        path: uri.path().trim_end_matches('/').to_string(),
        host,
        name,
    })
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

fn reason(body: &[u8]) -> String {
    let t: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(300)
        .collect();
    t.trim().to_string()
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(config: Arc<ClientConfig>, t: &Target) -> Result<Tls, BrskiError> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| BrskiError::Connection(t.authority.clone(), e.to_string()))?;
    TlsConnector::from(config)
        .connect(t.name.clone(), tcp)
        .await
        .map_err(|e| BrskiError::Connection(t.authority.clone(), format!("TLS: {e}")))
}

async fn send(
    tls: Tls,
    t: &Target,
    method: &str,
    op: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, BrskiError> {
    let conn_err = |e: hyper::Error| BrskiError::Connection(t.authority.clone(), e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(conn_err)?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}/{op}", t.path))
        .header(hyper::header::HOST, t.authority.as_str());
    if let Some(ct) = content_type {
        req = req.header(hyper::header::CONTENT_TYPE, ct);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| BrskiError::BadUrl(t.authority.clone(), "cannot form a request"))?;
    let rsp = sender.send_request(req).await.map_err(conn_err)?;
    let status = rsp.status().as_u16();
    let retry_after = rsp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(rsp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| BrskiError::Connection(t.authority.clone(), e.to_string()))?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

fn check_status(op: &'static str, a: &Answer) -> Result<(), BrskiError> {
    match a.status {
        200..=299 => Ok(()),
        400..=499 => Err(BrskiError::Refused {
            op,
            status: a.status,
            reason: reason(&a.body),
        }),
        s => Err(BrskiError::Unavailable {
            op,
            status: s,
            retry_after: a.retry_after.clone(),
        }),
    }
}

fn provisional_config(id: &Identity) -> Result<(ClientConfig, Arc<Provisional>), BrskiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Provisional {
        seen: Mutex::new(None),
        provider: Arc::clone(&provider),
    });
    let chain = transport::read_pem_certs("--cert", &id.cert)?;
    let key = PrivateKeyDer::from_pem_file(&id.key).map_err(|e| PledgeError::BadPemFile {
        what: "--key",
        path: id.key.clone(),
        reason: format!("no usable private key ({e})"),
    })?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PledgeError::TlsSetup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(chain, key)
        .map_err(PledgeError::TlsSetup)?;
    Ok((config, verifier))
}

fn nonce() -> String {
    use rsa::rand_core::RngCore;
    let mut b = [0u8; 16];
    rsa::rand_core::OsRng.fill_bytes(&mut b);
    voucher::b64(&b)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks a voucher per §5.6.1–5.6.2; the pinned domain certificate (DER).
pub fn check_voucher(
    cms: &[u8],
    masa_anchor: &[u8],
    serial: &str,
    nonce: &str,
    registrar_cert: &[u8],
    now: i64,
) -> Result<Vec<u8>, BrskiError> {
    let bad = |s: String| BrskiError::BadVoucher(s);
    let signed = cms_signed::verify(cms, ANIMA_JSON_VOUCHER).map_err(|e| bad(e.to_string()))?;
    if !cms_signed::chains_to(&signed.signer_cert, &signed.certs, masa_anchor) {
        return Err(bad(
            "not signed by the manufacturer's MASA (--masa-ca)".into()
        ));
    }
    let v = Voucher::from_json(&signed.content).map_err(|e| bad(e.to_string()))?;
    if v.serial_number != serial {
        return Err(bad(format!("it is for serial {:?}", v.serial_number)));
    }
    if v.nonce.as_deref() != Some(nonce) {
        return Err(bad("its nonce is not ours".into()));
    }
    if let Some(exp) = &v.expires_on {
        match voucher::parse_rfc3339(exp) {
            Some(t) if t > now => {}
            _ => return Err(bad(format!("expired or unreadable expires-on {exp:?}"))),
        }
    }
    let pinned = v.pinned_domain_cert_der().map_err(|e| bad(e.to_string()))?;
    if registrar_cert != pinned.as_slice()
        && cms_signed::verify_issued_by(registrar_cert, &pinned).is_err()
    {
        return Err(bad(
            "the registrar's TLS certificate is not vouched for by pinned-domain-cert".into(),
        ));
    }
    Ok(pinned)
}

async fn status_post(
    config: Arc<ClientConfig>,
    t: &Target,
    op: &'static str,
    ok: bool,
    why: &str,
) -> Result<(), BrskiError> {
    let body = serde_json::json!({"version": 1, "status": ok, "reason": why}).to_string();
    let tls = connect(config, t).await?;
    let a = send(
        tls,
        t,
        "POST",
        op,
        Some("application/json"),
        body.into_bytes(),
    )
    .await?;
    check_status(op, &a)
}

/// Runs BRSKI then EST.
pub async fn run(opts: &BrskiOptions) -> Result<BrskiSummary, BrskiError> {
    let t = target(&opts.brski_url)?;
    let idevid_ders = transport::read_pem_certs("--cert", &opts.idevid.cert)?;
    let idevid_der = idevid_ders.first().map(|c| c.to_vec()).unwrap_or_default();
    let idevid = CertSummary::from_der(&idevid_der).map_err(|source| PledgeError::Cert {
        origin: opts.idevid.cert.display().to_string(),
        index: 0,
        source,
    })?;
    let serial = idevid
        .subject_serial_number()
        .ok_or_else(|| BrskiError::Key("the IDevID has no subject serialNumber".into()))?
        .to_string();
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(&opts.idevid.key)
        .map_err(|e| BrskiError::Key(format!("not a PKCS#8 PEM key ({e})")))?;
    let key = cms_signed::signing_key_from_pkcs8_der(key_der.secret_pkcs8_der())
        .map_err(|e| BrskiError::Key(e.to_string()))?;
    let anchor_ders = transport::read_pem_certs("--masa-ca", &opts.masa_ca)?;
    let anchor = anchor_ders.first().map(|c| c.to_vec()).unwrap_or_default();

    flow::step("provisional TLS to the registrar");
    let (config, verifier) = provisional_config(&opts.idevid)?;
    let tls = tokio::time::timeout(opts.timeout, connect(Arc::new(config), &t))
        .await
        .map_err(|_| BrskiError::Connection(t.authority.clone(), "timed out".into()))??;
    let registrar = verifier
        .seen
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .ok_or_else(|| {
            BrskiError::Connection(t.authority.clone(), "no server certificate".into())
        })?;
    let nonce = nonce();
    let pvr = VoucherRequest {
        assertion: Some(Assertion::Proximity),
        nonce: Some(nonce.clone()),
        serial_number: Some(serial.clone()),
        created_on: Some(voucher::rfc3339(now_unix())),
        proximity_registrar_cert: Some(voucher::b64(&registrar)),
        ..Default::default()
    };
    let json = pvr.to_json().map_err(|e| BrskiError::Key(e.to_string()))?;
    let signed = cms_signed::sign(ANIMA_JSON_VOUCHER, &json, &idevid_der, &[], &key)
        .map_err(|e| BrskiError::Key(e.to_string()))?;
    flow::step("requesting a voucher");
    let answer = tokio::time::timeout(
        opts.timeout,
        send(
            tls,
            &t,
            "POST",
            "requestvoucher",
            Some(CT_VOUCHER_CMS_JSON),
            signed,
        ),
    )
    .await
    .map_err(|_| BrskiError::Connection(t.authority.clone(), "timed out".into()))??;
    check_status("requestvoucher", &answer)?;
    let pinned = check_voucher(
        &answer.body,
        &anchor,
        &serial,
        &nonce,
        &registrar,
        now_unix(),
    )?;
    flow::done("voucher verified");

    std::fs::create_dir_all(&opts.out_dir).map_err(|source| PledgeError::WriteFile {
        path: opts.out_dir.clone(),
        source,
    })?;
    let voucher_path = opts.out_dir.join("voucher.cms");
    flow::write_file(&voucher_path, &answer.body, false)?;
    let pinned_path = opts.out_dir.join("pinned-domain.pem");
    flow::write_file(
        &pinned_path,
        estuary_proto::pem::encode_certs(&[pinned]).as_bytes(),
        false,
    )?;

    // From here on the registrar is verified against the pinned domain certificate.
    let pinned_config = Arc::new(transport::client_config(&pinned_path, Some(&opts.idevid))?);
    status_post(
        Arc::clone(&pinned_config),
        &t,
        "voucher_status",
        true,
        "voucher accepted",
    )
    .await?;
    let est = EstClient::new(
        &opts.est_url,
        None,
        None,
        transport::client_config(&pinned_path, Some(&opts.idevid))?,
        opts.timeout,
    )?;
    let result = flow::enroll(&est, &opts.enrolment).await;
    let (ok, why) = match &result {
        Ok(_) => (true, "enrolled".to_string()),
        Err(e) => (false, e.to_string()),
    };
    if let Err(e) = status_post(pinned_config, &t, "enrollstatus", ok, &why).await {
        eprintln!("warning: enrollstatus not recorded: {e}");
    }
    Ok(BrskiSummary {
        serial,
        pinned: pinned_path,
        voucher: voucher_path,
        est: result?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    struct Pki {
        anchor: Vec<u8>,
        signer: Vec<u8>,
        key_der: Vec<u8>,
        domain_ca: Vec<u8>,
        registrar: Vec<u8>,
    }

    fn ca(cn: &str) -> (Vec<u8>, Issuer<'static, KeyPair>) {
        let kp = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let c = p.self_signed(&kp).expect("self-signed");
        (c.der().to_vec(), Issuer::new(p, kp))
    }

    fn leaf(cn: &str, by: &Issuer<'static, KeyPair>) -> (Vec<u8>, KeyPair) {
        let kp = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        (p.signed_by(&kp, by).expect("signed").der().to_vec(), kp)
    }

    fn pki() -> Pki {
        let (anchor, masa_ca) = ca("MASA CA");
        let (signer, kp) = leaf("MASA signer", &masa_ca);
        let key_der = kp.serialize_der();
        let (domain_ca, dca) = ca("domain CA");
        let (registrar, _) = leaf("registrar", &dca);
        Pki {
            anchor,
            signer,
            key_der,
            domain_ca,
            registrar,
        }
    }

    fn voucher(p: &Pki, serial: &str, nonce: &str, expires: i64) -> Vec<u8> {
        let v = Voucher {
            assertion: Some(Assertion::Logged),
            serial_number: serial.into(),
            nonce: Some(nonce.into()),
            pinned_domain_cert: voucher::b64(&p.domain_ca),
            created_on: Some(voucher::rfc3339(0)),
            expires_on: Some(voucher::rfc3339(expires)),
            ..Default::default()
        };
        cms_signed::sign(
            ANIMA_JSON_VOUCHER,
            &v.to_json().expect("json"),
            &p.signer,
            &[],
            &cms_signed::signing_key_from_pkcs8_der(&p.key_der).expect("p256"),
        )
        .expect("sign")
    }

    /// RFC 8995 §5.6.1: the pledge checks signer, serial, nonce, expiry and the pin.
    #[test]
    fn voucher_checks() {
        let p = pki();
        let good = voucher(&p, "SN1", "n1", 1000);
        let pinned =
            check_voucher(&good, &p.anchor, "SN1", "n1", &p.registrar, 10).expect("valid voucher");
        assert_eq!(pinned, p.domain_ca);
        let refused = |r: Result<Vec<u8>, BrskiError>| matches!(r, Err(BrskiError::BadVoucher(_)));
        assert!(refused(check_voucher(
            &good,
            &p.anchor,
            "SN2",
            "n1",
            &p.registrar,
            10
        )));
        assert!(refused(check_voucher(
            &good,
            &p.anchor,
            "SN1",
            "n2",
            &p.registrar,
            10
        )));
        assert!(refused(check_voucher(
            &good,
            &p.anchor,
            "SN1",
            "n1",
            &p.registrar,
            2000
        )));
        let other = pki();
        assert!(refused(check_voucher(
            &good,
            &other.anchor,
            "SN1",
            "n1",
            &p.registrar,
            10
        )));
        assert!(refused(check_voucher(
            &good,
            &p.anchor,
            "SN1",
            "n1",
            &other.registrar,
            10
        )));
        let mut bad = good.clone();
        let at = bad.len() / 3;
        bad[at] ^= 0x20;
        assert!(check_voucher(&bad, &p.anchor, "SN1", "n1", &p.registrar, 10).is_err());
    }
}
