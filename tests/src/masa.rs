//! A test MASA (Manufacturer Authorized Signing Authority, RFC 8995 §5.5–5.8): no package
//! provides one. It is strict: it issues a voucher only for a registrar voucher request that
//! - is a CMS SignedData (id-ct-animaJSONVoucher) whose signature verifies, signed by a
//!   certificate carrying id-kp-cmcRA (§5.5, RFC 6402);
//! - carries a `prior-signed-voucher-request` that verifies, is signed by an IDevID issued by
//!   this manufacturer's CA, and names as `proximity-registrar-cert` the very certificate that
//!   signed the registrar voucher request (§5.5.5);
//! - agrees with it on `serial-number` (= the IDevID's serialNumber) and `nonce`, names the
//!   IDevID's issuer in `idevid-issuer`, and the serial is in the MASA's device records.
//!
//! The voucher (RFC 8366) is signed by the MASA's signing certificate, issued by the MASA CA
//! (the trust anchor pledges and registrars hold), and pins the domain CA that the registrar
//! included in its CMS (or the registrar certificate when it sent no chain). Each voucher is
//! recorded in an audit log served at `requestauditlog` (§5.8).
//!
//! Cloud registrars (draft-ietf-anima-brski-cloud §3.2): a registrar voucher request may name
//! the domain to pin itself, with the RFC 8366bis leaves `pinned-domain-cert` (base64 DER) and
//! `est-domain` (the owner's EST URL). Only a registrar whose signing certificate was made
//! known with [`TestMasa::trust_cloud_registrar`] may do so (else 403, as a MASA must not let
//! any registrar choose whom a pledge trusts); `est-domain` must be an `https` URL and
//! `pinned-domain-cert` a certificate (else 400). Every check above still applies. The voucher
//! then pins the requested certificate (instead of the CMS-chain rule) and carries
//! `est-domain` (RFC 8366bis), so the pledge enrols directly at the owner's EST server.
//!
//! Runs HTTPS on 127.0.0.1 on its own thread; its TLS certificate is issued by the MASA CA.
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use der::Decode;
use estuary_proto::cert::CertSummary;
use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::voucher::{self, Assertion, Voucher, VoucherRequest, CT_VOUCHER_CMS_JSON};

use crate::pki::Ca;
use crate::util::TempDir;

/// id-kp-cmcRA (RFC 6402 §2.10).
pub const ID_KP_CMC_RA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 28];

/// How long a voucher is valid.
pub const VOUCHER_LIFETIME_S: i64 = 3600;

/// What the MASA knows and where it listens.
#[derive(Clone, Debug)]
pub struct MasaOptions {
    /// PEM of the manufacturer CA whose IDevIDs this MASA vouches for.
    pub manufacturer_ca: PathBuf,
    /// Device records: serials it vouches for; `None` = every IDevID of the manufacturer CA.
    pub devices: Option<BTreeSet<String>>,
    /// Fixed listen port, or `None`.
    pub port: Option<u16>,
}

/// One audit-log entry (RFC 8995 §5.8.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The pledge.
    pub serial: String,
    /// Base64 DER of the pinned domain certificate.
    pub domain_cert: String,
    /// The nonce, if any.
    pub nonce: Option<String>,
    /// When the voucher was made.
    pub created_on: String,
}

struct Inner {
    manufacturer_ca: Vec<u8>,
    devices: Option<BTreeSet<String>>,
    signer_cert: Vec<u8>,
    key: p256::ecdsa::SigningKey,
    tamper: AtomicBool,
    log: Mutex<Vec<AuditEntry>>,
    /// DER of the cloud registrar certificates that may name `pinned-domain-cert`/`est-domain`.
    cloud_registrars: Mutex<Vec<Vec<u8>>>,
}

/// A running test MASA (stopped on drop).
pub struct TestMasa {
    /// `https://127.0.0.1:P` (the MASA URL an IDevID carries).
    pub url: String,
    /// PEM of the MASA CA: the trust anchor for its vouchers and its TLS certificate.
    pub anchor_pem: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: Option<TempDir>,
}

fn pem_to_der(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    estuary_proto::pem::decode_certs(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .into_iter()
        .next()
        .with_context(|| format!("{}: no certificate", path.display()))
}

/// A free port to start the MASA on later (so IDevIDs can name it before it runs).
pub fn reserve_port() -> anyhow::Result<u16> {
    crate::util::free_port()
}

impl TestMasa {
    /// Creates the MASA CA, TLS and signing certificates under `dir` (temp when `None`), starts.
    pub fn start(opts: &MasaOptions, dir: Option<&Path>) -> anyhow::Result<Self> {
        let (tmp, dir) = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.to_path_buf())
            }
            None => {
                let t = TempDir::new("masa")?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let ca = Ca::create(&dir, "masa-ca", "Estuary test MASA CA")?;
        let tls = ca.issue_server(&dir, "masa-tls")?;
        let signer = ca.issue_named(&dir, "masa-signer", "Estuary test MASA voucher signer")?;
        let key_pem = std::fs::read_to_string(&signer.key_path)?;
        let key_der = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())?
        };
        let key = cms_signed::signing_key_from_pkcs8_der(key_der.secret_pkcs8_der())?;
        let inner = Arc::new(Inner {
            manufacturer_ca: pem_to_der(&opts.manufacturer_ca)?,
            devices: opts.devices.clone(),
            signer_cert: pem_to_der(&signer.cert_path)?,
            key,
            tamper: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            cloud_registrars: Mutex::new(Vec::new()),
        });
        let tls_cfg = crate::https::server_config(
            &std::fs::read(&tls.cert_path)?,
            &std::fs::read(&tls.key_path)?,
        )?;
        let listener = std::net::TcpListener::bind(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            opts.port.unwrap_or(0),
        )))
        .context("binding the test MASA")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let st = Arc::clone(&inner);
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                tokio::select! {
                    _ = crate::https::serve(listener, tls_cfg, router(st)) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            url: format!("https://{addr}"),
            anchor_pem: ca.cert_path.clone(),
            addr,
            inner,
            stop: Some(stop),
            thread: Some(thread),
            _tmp: tmp,
        })
    }

    /// From now on, flip one byte of every voucher after signing it (a tampering path).
    pub fn set_tamper(&self, on: bool) {
        self.inner.tamper.store(on, Ordering::SeqCst);
    }

    /// Trusts the registrar certificate in `cert_pem` (its first certificate) as a cloud
    /// registrar: its voucher requests may name `pinned-domain-cert` and `est-domain`. May be
    /// called while the MASA runs.
    pub fn trust_cloud_registrar(&self, cert_pem: &Path) -> anyhow::Result<()> {
        let der = pem_to_der(cert_pem)?;
        let mut trusted = self
            .inner
            .cloud_registrars
            .lock()
            .map_err(|_| anyhow::anyhow!("the test MASA's cloud registrar list is poisoned"))?;
        if !trusted.contains(&der) {
            trusted.push(der);
        }
        Ok(())
    }

    /// The audit log so far.
    pub fn audit_log(&self) -> Vec<AuditEntry> {
        self.inner.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for TestMasa {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn router(st: Arc<Inner>) -> Router {
    Router::new()
        .route("/.well-known/brski/requestvoucher", post(requestvoucher))
        .route("/.well-known/brski/requestauditlog", post(requestauditlog))
        .with_state(st)
}

/// A refusal: status and a plain reason.
struct Refusal(StatusCode, String);

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal(status, reason.into())
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.1),
        )
            .into_response()
    }
}

fn has_cmc_ra(cert_der: &[u8]) -> bool {
    let Ok(cert) = x509_cert::Certificate::from_der(cert_der) else {
        return false;
    };
    let want = const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.28");
    cert.tbs_certificate
        .extensions
        .unwrap_or_default()
        .iter()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE)
        .any(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes())
                .is_ok_and(|eku| eku.0.contains(&want))
        })
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct Checked {
    serial: String,
    nonce: Option<String>,
    domain_cert: Vec<u8>,
    est_domain: Option<String>,
}

/// An `https://host…` URL, as `est-domain` must be.
/// The cloud-registrar leaves of a registrar voucher request (draft-ietf-anima-brski-cloud
/// §3.2): `(pinned-domain-cert DER, est-domain)`, both optional; only a trusted cloud
/// registrar may send them.
fn cloud_leaves(
    st: &Inner,
    rvr: &VoucherRequest,
    signer_cert: &[u8],
) -> Result<(Option<Vec<u8>>, Option<String>), Refusal> {
    if rvr.pinned_domain_cert.is_none() && rvr.est_domain.is_none() {
        return Ok((None, None));
    }
    let trusted = st
        .cloud_registrars
        .lock()
        .map(|t| t.iter().any(|c| c.as_slice() == signer_cert))
        .unwrap_or(false);
    if !trusted {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "only a cloud registrar this MASA trusts may name the pinned domain or est-domain",
        ));
    }
    if let Some(e) = &rvr.est_domain {
        if estuary_proto::url::HttpsUrl::parse_base(e).is_err() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("est-domain {e:?} is not an https URL without query or fragment"),
            ));
        }
    }
    let pin = match &rvr.pinned_domain_cert {
        None => None,
        Some(_) => {
            let der = rvr
                .pinned_domain_cert_der()
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("pinned-domain-cert: {e}")))?;
            if x509_cert::Certificate::from_der(&der).is_err() {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "pinned-domain-cert is not a DER certificate",
                ));
            }
            Some(der)
        }
    };
    Ok((pin, rvr.est_domain.clone()))
}

/// §5.5: every check on a registrar voucher request.
fn check_rvr(st: &Inner, headers: &HeaderMap, body: &[u8]) -> Result<Checked, Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.eq_ignore_ascii_case(CT_VOUCHER_CMS_JSON) {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type must be {CT_VOUCHER_CMS_JSON}"),
        ));
    }
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        refuse(StatusCode::BAD_REQUEST, format!("{what}: {e}"))
    };
    let rvr_cms = cms_signed::verify(body, ANIMA_JSON_VOUCHER)
        .map_err(|e| bad("registrar voucher request", &e))?;
    if !has_cmc_ra(&rvr_cms.signer_cert) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the registrar voucher request is not signed by a certificate with id-kp-cmcRA",
        ));
    }
    let rvr = VoucherRequest::from_json(&rvr_cms.content)
        .map_err(|e| bad("registrar voucher request", &e))?;
    let (requested_pin, est_domain) = cloud_leaves(st, &rvr, &rvr_cms.signer_cert)?;
    let prior = rvr
        .prior_signed_voucher_request_der()
        .map_err(|e| bad("registrar voucher request", &e))?;
    let pvr_cms = cms_signed::verify(&prior, ANIMA_JSON_VOUCHER)
        .map_err(|e| bad("prior-signed-voucher-request", &e))?;
    if cms_signed::verify_issued_by(&pvr_cms.signer_cert, &st.manufacturer_ca).is_err() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the pledge's voucher request is not signed by an IDevID of this manufacturer",
        ));
    }
    let idevid = CertSummary::from_der(&pvr_cms.signer_cert).map_err(|e| bad("IDevID", &e))?;
    let pvr = VoucherRequest::from_json(&pvr_cms.content)
        .map_err(|e| bad("prior-signed-voucher-request", &e))?;
    let serial = idevid
        .subject_serial_number()
        .ok_or_else(|| refuse(StatusCode::FORBIDDEN, "IDevID without serialNumber"))?
        .to_string();
    if pvr.serial_number.as_deref() != Some(&serial)
        || rvr.serial_number.as_deref() != Some(&serial)
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "serial-number differs between the IDevID and the voucher requests",
        ));
    }
    if pvr.nonce != rvr.nonce {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "nonce differs from the pledge's",
        ));
    }
    match rvr.idevid_issuer_der() {
        Ok(i) if i == idevid.issuer_der() => {}
        _ => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "idevid-issuer is not the IDevID's issuer",
            ))
        }
    }
    match pvr.proximity_registrar_cert_der() {
        Ok(p) if p == rvr_cms.signer_cert => {}
        _ => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "the pledge saw another registrar (proximity-registrar-cert) than the one signing",
            ))
        }
    }
    if let Some(devices) = &st.devices {
        if !devices.contains(&serial) {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("no device record for serial {serial:?}"),
            ));
        }
    }
    // A trusted cloud registrar's requested pin; else the domain CA the registrar sent along;
    // else the registrar certificate itself.
    let domain_cert = match requested_pin {
        Some(pin) => pin,
        None => rvr_cms
            .certs
            .iter()
            .rev()
            .find(|c| **c != rvr_cms.signer_cert)
            .cloned()
            .unwrap_or(rvr_cms.signer_cert),
    };
    Ok(Checked {
        serial,
        nonce: pvr.nonce,
        domain_cert,
        est_domain,
    })
}

async fn requestvoucher(State(st): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let c = match check_rvr(&st, &headers, &body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let now = now_unix();
    let v = Voucher {
        assertion: Some(Assertion::Logged),
        serial_number: c.serial.clone(),
        nonce: c.nonce.clone(),
        pinned_domain_cert: voucher::b64(&c.domain_cert),
        created_on: Some(voucher::rfc3339(now)),
        expires_on: Some(voucher::rfc3339(now + VOUCHER_LIFETIME_S)),
        est_domain: c.est_domain.clone(),
        ..Default::default()
    };
    let signed = v.to_json().map_err(|e| e.to_string()).and_then(|json| {
        cms_signed::sign(ANIMA_JSON_VOUCHER, &json, &st.signer_cert, &[], &st.key)
            .map_err(|e| e.to_string())
    });
    let mut cms = match signed {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    if st.tamper.load(Ordering::SeqCst) {
        // Flip a byte inside the JSON: the signature no longer matches the content.
        let json = v.to_json().unwrap_or_default();
        if let Some(pos) = cms
            .windows(json.len().min(16))
            .position(|w| json.starts_with(w))
        {
            if let Some(b) = cms.get_mut(pos + 5) {
                *b ^= 0x01;
            }
        }
    }
    if let Ok(mut log) = st.log.lock() {
        log.push(AuditEntry {
            serial: c.serial,
            domain_cert: voucher::b64(&c.domain_cert),
            nonce: c.nonce,
            created_on: voucher::rfc3339(now),
        });
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CT_VOUCHER_CMS_JSON)],
        cms,
    )
        .into_response()
}

/// §5.8: the registrar's signed request names the device; the answer is its audit log.
async fn requestauditlog(State(st): State<Arc<Inner>>, body: Bytes) -> Response {
    let Ok(rvr_cms) = cms_signed::verify(&body, ANIMA_JSON_VOUCHER) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "audit-log request is not a valid CMS",
        )
        .into_response();
    };
    if !has_cmc_ra(&rvr_cms.signer_cert) {
        return refuse(
            StatusCode::FORBIDDEN,
            "not signed by a registrar (id-kp-cmcRA)",
        )
        .into_response();
    }
    let Ok(rvr) = VoucherRequest::from_json(&rvr_cms.content) else {
        return refuse(StatusCode::BAD_REQUEST, "audit-log request JSON").into_response();
    };
    let Some(serial) = rvr.serial_number else {
        return refuse(StatusCode::BAD_REQUEST, "serial-number missing").into_response();
    };
    let entries: Vec<serde_json::Value> = st
        .log
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.serial == serial)
        .map(|e| {
            serde_json::json!({"date": e.created_on, "domainID": e.domain_cert, "nonce": e.nonce, "assertion": "logged"})
        })
        .collect();
    let doc = serde_json::json!({
        "version": "1",
        "events": entries,
        "truncation": {}
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        masa: TestMasa,
        registrar_pem: PathBuf,
        registrar_der: Vec<u8>,
        registrar_key: p256::ecdsa::SigningKey,
        domain_ca: Vec<u8>,
        pvr: Vec<u8>,
        issuer: String,
        _dir: TempDir,
    }

    fn key_of(path: &Path) -> p256::ecdsa::SigningKey {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(path).expect("key PEM");
        cms_signed::signing_key_from_pkcs8_der(der.secret_pkcs8_der()).expect("P-256 key")
    }

    /// A MASA, a domain CA with a registrar, and a pledge voucher request of IDevID SN-7.
    fn fixture() -> Fixture {
        let dir = TempDir::new("masa-unit").expect("tmp");
        let d = dir.path();
        let mfg = Ca::create(d, "mfg", "Test manufacturer").expect("ca");
        let domain = Ca::create(d, "domain", "Test domain CA").expect("ca");
        let reg = domain.issue_registrar(d, "registrar").expect("registrar");
        let idevid = mfg.issue_idevid(d, "idevid", "SN-7").expect("idevid");
        let masa = TestMasa::start(
            &MasaOptions {
                manufacturer_ca: mfg.cert_path.clone(),
                devices: None,
                port: None,
            },
            Some(&d.join("masa")),
        )
        .expect("masa");
        let registrar_der = pem_to_der(&reg.cert_path).expect("der");
        let idevid_der = pem_to_der(&idevid.cert_path).expect("der");
        let pvr_json = VoucherRequest {
            assertion: Some(Assertion::Proximity),
            nonce: Some("n0nce".into()),
            serial_number: Some("SN-7".into()),
            proximity_registrar_cert: Some(voucher::b64(&registrar_der)),
            ..Default::default()
        }
        .to_json()
        .expect("json");
        let pvr = cms_signed::sign(
            ANIMA_JSON_VOUCHER,
            &pvr_json,
            &idevid_der,
            &[],
            &key_of(&idevid.key_path),
        )
        .expect("sign pvr");
        let issuer = voucher::b64(
            CertSummary::from_der(&idevid_der)
                .expect("summary")
                .issuer_der(),
        );
        Fixture {
            masa,
            registrar_pem: reg.cert_path.clone(),
            registrar_der,
            registrar_key: key_of(&reg.key_path),
            domain_ca: pem_to_der(&domain.cert_path).expect("der"),
            pvr,
            issuer,
            _dir: dir,
        }
    }

    impl Fixture {
        /// The registrar voucher request, with `cloud` = (pinned-domain-cert, est-domain).
        fn rvr(&self, pin: Option<String>, est: Option<&str>) -> Vec<u8> {
            let json = VoucherRequest {
                assertion: Some(Assertion::Proximity),
                nonce: Some("n0nce".into()),
                serial_number: Some("SN-7".into()),
                idevid_issuer: Some(self.issuer.clone()),
                prior_signed_voucher_request: Some(voucher::b64(&self.pvr)),
                pinned_domain_cert: pin,
                est_domain: est.map(str::to_string),
                ..Default::default()
            }
            .to_json()
            .expect("json");
            cms_signed::sign(
                ANIMA_JSON_VOUCHER,
                &json,
                &self.registrar_der,
                std::slice::from_ref(&self.domain_ca),
                &self.registrar_key,
            )
            .expect("sign rvr")
        }

        fn check(&self, body: &[u8]) -> Result<Checked, (StatusCode, String)> {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(CT_VOUCHER_CMS_JSON),
            );
            check_rvr(&self.masa.inner, &h, body).map_err(|Refusal(s, r)| (s, r))
        }
    }

    #[test]
    fn a_plain_registrar_gets_its_domain_ca_pinned() {
        let f = fixture();
        let c = f.check(&f.rvr(None, None)).expect("voucher");
        assert_eq!(c.serial, "SN-7");
        assert_eq!(c.domain_cert, f.domain_ca);
        assert_eq!(c.est_domain, None);
    }

    /// draft-ietf-anima-brski-cloud §3.2, RFC 8366bis `est-domain`.
    #[test]
    fn only_a_trusted_cloud_registrar_may_name_the_pin_and_est_domain() {
        let f = fixture();
        let owner_ca = f.domain_ca.clone();
        let est = "https://est.owner.example/.well-known/est";
        let body = f.rvr(Some(voucher::b64(&owner_ca)), Some(est));
        let (status, reason) = f.check(&body).err().expect("refused");
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            reason,
            "only a cloud registrar this MASA trusts may name the pinned domain or est-domain"
        );
        // An est-domain alone is a cloud leaf too.
        assert_eq!(
            f.check(&f.rvr(None, Some(est))).err().map(|e| e.0),
            Some(StatusCode::FORBIDDEN)
        );

        f.masa
            .trust_cloud_registrar(&f.registrar_pem)
            .expect("trust");
        let c = f.check(&body).expect("voucher");
        assert_eq!(c.domain_cert, owner_ca);
        assert_eq!(c.est_domain.as_deref(), Some(est));

        let not_https = f.rvr(
            Some(voucher::b64(&owner_ca)),
            Some("http://est.owner.example/"),
        );
        assert_eq!(
            f.check(&not_https).err().map(|e| e.0),
            Some(StatusCode::BAD_REQUEST)
        );
        let not_a_cert = f.rvr(Some(voucher::b64(b"not a certificate")), Some(est));
        assert_eq!(
            f.check(&not_a_cert).err().map(|e| e.0),
            Some(StatusCode::BAD_REQUEST)
        );
        let not_base64 = f.rvr(Some("%%%".into()), Some(est));
        assert_eq!(
            f.check(&not_base64).err().map(|e| e.0),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
