//! BRSKI registrar (RFC 8995 §5): voucher requests from pledges, relayed to their MASA.
//!
//! The edge filter has checked that the TLS client presented a certificate and that the body
//! is CMS; it forwards the body and the client certificate (base64 DER in
//! [`estuary_proto::internal_api::HDR_CLIENT_CERT`]). The registrar then, per RFC 8995 §5.5:
//! 1. verifies the pledge voucher request's CMS signature, and that its signer is the very
//!    IDevID of the TLS connection (same certificate);
//! 2. checks `proximity-registrar-cert` is our registrar certificate and `serial-number` is the
//!    IDevID's subject serialNumber;
//! 3. finds the manufacturer: the IDevID must be issued by one of `[[brski.manufacturers]]`'s CA;
//! 4. builds and signs the registrar voucher request (nonce, serial-number, idevid-issuer,
//!    prior-signed-voucher-request, created-on, assertion) with the registrar key;
//! 5. POSTs it to the MASA (the IDevID's id-pe-masa-url, or the manufacturer's `masa_url`);
//! 6. checks the voucher's signature against the manufacturer's MASA anchor, its serial and
//!    nonce, and hands it to the pledge unchanged.
//!
//! `voucher_status` and `enrollstatus` (RFC 8995 §5.7, §5.9.4) are stored in Redis with a TTL
//! and logged; `requestauditlog` (§5.8) is relayed to the MASA.
//!
//! With `[brski.cloud]` this is a cloud registrar (draft-ietf-anima-brski-cloud, see
//! [`crate::brski::cloud`]): after steps 1–3 it looks up the pledge's owner by (the `name` of the
//! manufacturer found in step 3, the serialNumber) and either answers `307` to the owner's
//! registrar (no MASA call), or does steps 4–6 with `pinned-domain-cert` and `est-domain` added
//! to the registrar voucher request and required in the voucher, or answers `404` for a pledge
//! no owner claims.
use crate::support::clock::now_unix;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::identity::ManufacturerName;
use estuary_proto::voucher::{self, Assertion, Expected, VoucherRequest, CT_VOUCHER_CMS_JSON};
use tracing::info;

use crate::brski::answer::{
    authorized, client_cert, count, error_response, failure_label, redirect_response,
};
use crate::brski::cloud::{Cloud, OwnerPath};
use crate::brski::error::{BadRequest, BadVoucher, BrskiError, Internal, Refusal};
use crate::brski::masa_client::{masa_status_error, MasaClient};
use crate::config::brski::BrskiConfig;
use crate::metrics::Metrics;
use crate::support::pem_file::{first_cert, read_certs};
use crate::support::secret::Secret;

struct Manufacturer {
    /// Its `name`; always set with `[brski.cloud]`.
    name: Option<ManufacturerName>,
    idevid_ca: Vec<u8>,
    masa_anchor: Vec<u8>,
    masa_url: Option<String>,
    masa: MasaClient,
}

/// The registrar: keys, manufacturers, Redis.
pub struct Registrar {
    cert: Vec<u8>,
    chain: Vec<Vec<u8>>,
    key: p256::ecdsa::SigningKey,
    manufacturers: Vec<Manufacturer>,
    /// Status reports and the voucher request limit (Redis, with deadlines).
    pub(super) store: crate::ra::store::Store,
    pub(super) status_ttl_s: u64,
    pub(super) retry_after_s: u64,
    pub(super) token: Secret,
    pub(super) metrics: Arc<Metrics>,
    cloud: Option<Cloud>,
    /// `voucher_requests_per_pledge`, `voucher_window_s`.
    voucher_limit: (u32, u64),
}

impl Registrar {
    /// Loads keys and certificates. With `[brski.cloud]` it must run inside a Tokio runtime.
    pub fn new(
        cfg: &BrskiConfig,
        redis_url: &str,
        prefix: &str,
        token: Secret,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        let cert = first_cert(&cfg.registrar_cert_file)?;
        let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(&cfg.registrar_key_file)
            .map_err(|e| {
                anyhow::anyhow!(
                    "brski.registrar_key_file {}: not a PKCS#8 PEM key: {e}",
                    cfg.registrar_key_file.display()
                )
            })?;
        let key = cms_signed::signing_key_from_pkcs8_der(key_der.secret_pkcs8_der())
            .map_err(|e| anyhow::anyhow!("brski.registrar_key_file: {e}"))?;
        let chain = match &cfg.domain_ca_file {
            Some(f) => read_certs(f)?,
            None => Vec::new(),
        };
        let mut manufacturers = Vec::new();
        for (i, m) in cfg.manufacturers.iter().enumerate() {
            let name = match &m.name {
                Some(n) => Some(ManufacturerName::parse(n).ok_or_else(|| {
                    anyhow::anyhow!("brski.manufacturers[{i}].name: {n:?} is not a name")
                })?),
                None if cfg.cloud.is_some() => {
                    anyhow::bail!("brski.manufacturers[{i}].name: required with [brski.cloud]")
                }
                None => None,
            };
            manufacturers.push(Manufacturer {
                name,
                idevid_ca: first_cert(&m.idevid_ca_file)?,
                masa_anchor: first_cert(&m.masa_ca_file)?,
                masa_url: m.masa_url.clone(),
                masa: MasaClient::new(&m.masa_ca_file)?,
            });
        }
        // Prove the key matches the certificate now rather than on the first pledge.
        cms_signed::sign(ANIMA_JSON_VOUCHER, b"{}", &cert, &[], &key)
            .map_err(|e| anyhow::anyhow!("brski: registrar key and certificate: {e}"))?;
        let cloud = match &cfg.cloud {
            Some(c) => Some(Cloud::new(c, &cfg.manufacturer_names(), redis_url, prefix)?),
            None => None,
        };
        super::answer::create_series(&metrics);
        Ok(Self {
            cert,
            chain,
            key,
            manufacturers,
            store: crate::ra::store::Store::new(redis_url, prefix)
                .map_err(|e| anyhow::anyhow!("redis: {e}"))?,
            status_ttl_s: cfg.status_ttl_s,
            voucher_limit: (cfg.voucher_requests_per_pledge, cfg.voucher_window_s.max(1)),
            retry_after_s: cfg.masa_retry_after_s,
            token,
            metrics,
            cloud,
        })
    }
}

pub async fn requestvoucher(
    State(reg): State<Arc<Registrar>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = authorized(&reg.token, &headers) {
        return r;
    }
    match handle_requestvoucher(&reg, &headers, &body).await {
        Ok(VoucherAnswer::Voucher(cms)) => {
            count(&reg.metrics, "requestvoucher", "voucher");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, CT_VOUCHER_CMS_JSON)],
                cms,
            )
                .into_response()
        }
        Ok(VoucherAnswer::Redirect(location)) => {
            count(&reg.metrics, "requestvoucher", "redirect");
            redirect_response(location)
        }
        Err(e) => {
            count(&reg.metrics, "requestvoucher", failure_label(&e));
            error_response(reg.retry_after_s, &e)
        }
    }
}

/// What requestvoucher hands back to the edge.
enum VoucherAnswer {
    /// 200: the MASA's CMS voucher.
    Voucher(Vec<u8>),
    /// 307 (cloud registrar, draft-ietf-anima-brski-cloud §3.2): the owner registrar's
    /// requestvoucher URL.
    Redirect(HeaderValue),
}

/// Counts one voucher request of the pledge with this IDevID against
/// `brski.voucher_requests_per_pledge` (a pledge is its IDevID: manufacturer and serial).
async fn take_voucher_slot(reg: &Registrar, idevid_der: &[u8]) -> Result<(), BrskiError> {
    use sha2::Digest;
    let (limit, window_s) = reg.voucher_limit;
    if limit == 0 {
        return Ok(());
    }
    let id: String = sha2::Sha256::digest(idevid_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let window = Duration::from_secs(window_s);
    match reg
        .store
        .take_window_slot("brski:vr", &id, None, limit, window)
        .await?
    {
        None => Ok(()),
        Some(retry_after_s) => Err(BrskiError::TooManyRequests {
            limit,
            window_s,
            retry_after_s,
        }),
    }
}

/// Which manufacturer issued this IDevID (signature checked), if any we know.
fn manufacturer_of<'a>(reg: &'a Registrar, idevid: &[u8]) -> Option<&'a Manufacturer> {
    reg.manufacturers
        .iter()
        .find(|m| cms_signed::verify_issued_by(idevid, &m.idevid_ca).is_ok())
}

/// Signs a registrar voucher request with the registrar key and POSTs it to
/// `<masa>/.well-known/brski/<op>` (RFC 8995 §5.5, §5.8); the body of a 200, else the MASA's
/// refusal as an error.
async fn signed_to_masa(
    reg: &Registrar,
    m: &Manufacturer,
    masa: &str,
    op: &str,
    rvr: &VoucherRequest,
) -> Result<Vec<u8>, BrskiError> {
    let json = rvr.to_json().map_err(Internal::Encode)?;
    let signed = cms_signed::sign(ANIMA_JSON_VOUCHER, &json, &reg.cert, &reg.chain, &reg.key)
        .map_err(Internal::Sign)?;
    let url = format!("{}/.well-known/brski/{op}", masa.trim_end_matches('/'));
    let (status, body) = m.masa.post(&url, CT_VOUCHER_CMS_JSON, signed).await?;
    if status != 200 {
        return Err(masa_status_error(status, &body));
    }
    Ok(body)
}

async fn handle_requestvoucher(
    reg: &Registrar,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<VoucherAnswer, BrskiError> {
    let (idevid_der, idevid) = client_cert(headers)?;
    // §5.5: the voucher request must be signed by the IDevID of the TLS connection.
    let pvr = cms_signed::verify(body, ANIMA_JSON_VOUCHER).map_err(BadRequest::Cms)?;
    if pvr.signer_cert != idevid_der {
        return Err(Refusal::NotSignedByClient.into());
    }
    let m = manufacturer_of(reg, &idevid_der).ok_or(Refusal::UnknownManufacturer)?;
    let req = VoucherRequest::from_json(&pvr.content).map_err(BadRequest::Json)?;
    if req.assertion != Some(Assertion::Proximity) {
        return Err(BadRequest::NotProximity.into());
    }
    let prox = req
        .proximity_registrar_cert_der()
        .map_err(BadRequest::ProximityCert)?;
    if prox != reg.cert {
        return Err(Refusal::NotThisRegistrar.into());
    }
    let serial = idevid
        .subject_serial_number()
        .ok_or(Refusal::NoSerial)?
        .to_string();
    if req.serial_number.as_deref() != Some(serial.as_str()) {
        return Err(Refusal::SerialMismatch(serial).into());
    }
    take_voucher_slot(reg, &idevid_der).await?;
    // Cloud registrar: the owner decides the path (draft-ietf-anima-brski-cloud §3.2).
    // Serials are unique only within a manufacturer: the owner map is keyed by (the
    // manufacturer whose CA issued the IDevID, serial).
    let mut est_owner = None;
    if let Some(cloud) = &reg.cloud {
        let Some(maker) = &m.name else {
            return Err(Internal::UnnamedManufacturer.into());
        };
        let owner = cloud.owner_of(maker, &serial).await?;
        let owner = owner.ok_or_else(|| BrskiError::UnknownOwner {
            manufacturer: maker.clone(),
            serial: serial.clone(),
        })?;
        match &owner.path {
            OwnerPath::Redirect { location } => {
                info!(
                    manufacturer = %maker,
                    serial = %serial.escape_debug(),
                    owner = %owner.name,
                    path = "redirect",
                    location = location.to_str().unwrap_or(""),
                    "cloud registrar: redirecting the pledge to its owner's registrar"
                );
                return Ok(VoucherAnswer::Redirect(location.clone()));
            }
            OwnerPath::Est {
                est_url,
                pinned_cert,
            } => est_owner = Some((maker, owner, est_url, pinned_cert)),
        }
    }
    let masa = m
        .masa_url
        .clone()
        .or_else(|| voucher::masa_url(&idevid_der))
        .ok_or(Refusal::NoMasa)?;
    let nonce = req.nonce.clone();
    let mut rvr = VoucherRequest {
        assertion: Some(Assertion::Proximity),
        nonce: nonce.clone(),
        serial_number: Some(serial.clone()),
        created_on: Some(voucher::rfc3339(now_unix())),
        proximity_registrar_cert: None,
        idevid_issuer: Some(voucher::b64(idevid.issuer_der())),
        prior_signed_voucher_request: Some(voucher::b64(body)),
        ..Default::default()
    };
    if let Some((_, _, est_url, pin)) = est_owner {
        // draft-ietf-anima-brski-cloud §3.2: ask the MASA to pin the owner's EST trust anchor
        // and to name its EST server (RFC 8366bis est-domain).
        rvr.pinned_domain_cert = Some(voucher::b64(pin));
        rvr.est_domain = Some(est_url.as_written().to_string());
    }
    let rbody = signed_to_masa(reg, m, &masa, "requestvoucher", &rvr).await?;
    // §5.6: check the voucher before handing it on; on the cloud registrar's EST path it must
    // name the owner's EST server and pin the owner's trust anchor.
    let (pin, est_domain) = match &est_owner {
        Some((_, _, est_url, pin)) => (Some(pin.as_slice()), Some(est_url.as_written())),
        None => (None, None),
    };
    voucher::verify(
        &rbody,
        &m.masa_anchor,
        &Expected {
            serial: &serial,
            nonce: nonce.as_deref(),
            pin,
            est_domain,
            now: now_unix(),
        },
    )
    .map_err(BadVoucher::Voucher)?;
    if let Some((maker, owner, est_url, _)) = est_owner {
        // The pledge goes on to est-domain and trusts only pinned-domain-cert there.
        info!(
            manufacturer = %maker,
            serial = %serial.escape_debug(),
            owner = %owner.name,
            path = "est",
            est_domain = %est_url.as_written(),
            masa = %masa,
            "cloud registrar: voucher naming the owner's EST server obtained from the MASA"
        );
        return Ok(VoucherAnswer::Voucher(rbody));
    }
    info!(serial = %serial, masa = %masa, "voucher obtained from the MASA");
    Ok(VoucherAnswer::Voucher(rbody))
}

pub async fn requestauditlog(State(reg): State<Arc<Registrar>>, headers: HeaderMap) -> Response {
    if let Some(r) = authorized(&reg.token, &headers) {
        return r;
    }
    let result = async {
        let (der, cert) = client_cert(&headers)?;
        let serial = cert
            .subject_serial_number()
            .ok_or(Refusal::NoSerial)?
            .to_string();
        let m = manufacturer_of(&reg, &der).ok_or(Refusal::UnknownManufacturer)?;
        let masa = m
            .masa_url
            .clone()
            .or_else(|| voucher::masa_url(&der))
            .ok_or(Refusal::NoMasa)?;
        let rvr = VoucherRequest {
            serial_number: Some(serial),
            created_on: Some(voucher::rfc3339(now_unix())),
            idevid_issuer: Some(voucher::b64(cert.issuer_der())),
            ..Default::default()
        };
        let body = signed_to_masa(&reg, m, &masa, "requestauditlog", &rvr).await?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|_| BadVoucher::AuditLogNotJson)?;
        Ok(body)
    }
    .await;
    match result {
        Ok(body) => {
            count(&reg.metrics, "requestauditlog", "ok");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Err(e) => {
            count(&reg.metrics, "requestauditlog", failure_label(&e));
            error_response(reg.retry_after_s, &e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brski::error::MasaUnavailable;

    #[test]
    fn errors_map_to_rfc_8995_statuses() {
        assert_eq!(BrskiError::NoClientCert.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            BrskiError::from(BadRequest::NotProximity).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            BrskiError::from(Refusal::NoSerial).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            BrskiError::from(MasaUnavailable::Timeout("u".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            BrskiError::from(BadVoucher::AuditLogNotJson).status(),
            StatusCode::BAD_GATEWAY
        );
        let unknown = BrskiError::UnknownOwner {
            manufacturer: ManufacturerName::parse("acme-devices").expect("name"),
            serial: "SN-9".into(),
        };
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            unknown.to_string(),
            "no owner is known for serial \"SN-9\" of manufacturer \"acme-devices\""
        );
        assert_eq!(failure_label(&unknown), "unknown");
        assert_eq!(
            failure_label(&BrskiError::from(Refusal::NoMasa)),
            "rejected"
        );
        assert_eq!(
            failure_label(&BrskiError::Store(
                redis::RedisError::from((redis::ErrorKind::Io, "down")).into()
            )),
            "unavailable"
        );
        assert!(matches!(
            masa_status_error(404, b"no device record"),
            BrskiError::MasaRefused { status: 404, .. }
        ));
        assert!(matches!(
            masa_status_error(503, b""),
            BrskiError::MasaUnavailable(_)
        ));
        assert!(matches!(
            masa_status_error(500, b""),
            BrskiError::BadVoucher(_)
        ));
    }

    #[test]
    fn a_redirect_is_a_307_with_the_location() {
        let loc = HeaderValue::from_static(
            "https://registrar.acme.example:8443/.well-known/brski/requestvoucher",
        );
        let r = redirect_response(loc.clone());
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(r.headers().get(header::LOCATION), Some(&loc));
        assert_eq!(
            r.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("text/plain; charset=utf-8"))
        );
    }
}
