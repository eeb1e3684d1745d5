//! The internal EST API that the edge filter calls (`/metrics` and the health checks are
//! [`crate::http::health`]'s).
//!
//! | method, path | request | answers |
//! |---|---|---|
//! | `POST /estuary/v1/enroll` | body: the DER PKCS#10 (`content-type: application/pkcs10`); headers `estuary-device-serial` (the device label the edge derived), `estuary-client-cert` (base64 DER of the TLS client certificate), optional `estuary-client-chain` (the other certificates the client presented, base64 DER, comma-separated), `estuary-operation` (`simpleenroll` or `simplereenroll`), optional `estuary-label` | 200 DER PKCS#7 certs-only holding the end-entity certificate only (`application/pkcs7-mime; smime-type=certs-only`, binary: the filter base64-encodes; draft-ietf-acme-integrations-17: the rest of the chain is in `cacerts`); 202 + `retry-after`; 400/403/415 text reason; 503 + `retry-after` (Redis, CA or DNS unavailable); 502 text (the CA or DNS refused: operator's problem) |
//! | `POST /estuary/v1/serverkeygen` | as `enroll` (`estuary-operation` is not read): the device's PKCS#10, signed by any key; it names the device, the RA makes the key (RFC 7030 §4.4, [`crate::ra::keygen`]) | 200 `multipart/mixed; boundary=…` ([`estuary_proto::serverkeygen`]): the private key (`application/pkcs8`) and the end-entity certificate (PKCS#7 certs-only), both base64, passed on by the filter unchanged; 202 + `retry-after` (the key is held in this process for the retry, see [`crate::ra::keygen`]); 400 when the CSR asks for an encrypted key (DecryptKeyIdentifier / AsymmetricDecryptKeyIdentifier: not offered); otherwise as `enroll` |
//! | `GET /estuary/v1/cacerts` | optional `estuary-label` | 200 DER PKCS#7 certs-only of the label's CA (no label: `[acme]`): the intermediates learned from that CA's issued chains (newest first, read from Redis at most [`crate::ra::chains::REFRESH`] ago), then the certificates of its `ca_certs_file` (`est.ca_certs_file`, or the `[[acme.labels]]` entry's) not already listed; before any issuance the file alone ([`crate::ra::chains`]) |
//! | `GET /estuary/v1/csrattrs` | headers `estuary-device-serial`, `estuary-client-cert`, optional `estuary-client-chain`, optional `estuary-label` | 200 DER CSR attributes (`application/csrattrs`) naming `<serial>.<parent domain>` (the same under every label) |
//! | `GET /metrics` | — | Prometheus text |
//! | `GET /healthz` | — | 200 while the process runs |
//! | `GET /readyz` | — | 200 when Redis answers, else 503 |
//!
//! **Authentication.** Only the proxy may call `/estuary/v1/*`: it sends
//! `authorization: Bearer <server.api_token>`, compared in constant time; anything else gets
//! 401. mTLS between proxy and control plane is not implemented: run the API on loopback or a
//! network only the proxy reaches (a Kubernetes NetworkPolicy, or a mesh that adds mTLS).
//! `/metrics`, `/healthz` and `/readyz` need no token and reveal no device data.
//!
//! **The token is not enough.** On `enroll` and `csrattrs` the control plane re-derives the
//! device from the forwarded client certificate with [`estuary_proto::identity`] and its own
//! copy of the trusted CAs (`[[est.manufacturers]]`, `est.ca_certs_file`): a certificate that
//! none of them issued, one of the wrong kind for the operation, or an `estuary-device-serial`
//! that disagrees with the certificate gets 403 (the CSR policy runs again too, and for
//! `simplereenroll` the CSR must keep the certificate's subject and names). Whoever holds the
//! token can therefore obtain only names that some trusted certificate already proves.
//!
//! **A cloud registrar alone** (`[brski.cloud]` without `[est]`, `[acme]` and `[dns]`, see
//! [`crate::config`]) serves no EST: after the token check, the EST `/estuary/v1/*` paths
//! above answer 404 `text/plain` "this control plane serves no EST (cloud registrar only)"
//! ([`NO_EST`]). `/metrics`, `/healthz`, `/readyz` and the BRSKI paths ([`crate::brski::registrar`]) work
//! as always.
//!
//! **Labels.** `estuary-label` (RFC 7030 §3.2.2) selects the CA: absent, `[acme]`; else the
//! `[[acme.labels]]` entry of that name. On every EST path a header that is not a label gets
//! 400 and a label no entry configures gets 404 "the EST label … is not configured on this
//! server".
//!
//! All non-200 bodies are `text/plain` and say what was wrong. The control plane never
//! answers 5xx for a client's mistake.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use estuary_proto::csrattrs;
use estuary_proto::est::{EstLabel, EstOperation, CT_CSRATTRS, CT_PKCS10, CT_PKCS7_CERTS_ONLY};
use estuary_proto::identity::{self, Identity, Need, TrustPolicy};
use estuary_proto::internal_api::{
    Operation, CACERTS_PATH, CSRATTRS_PATH, ENROLL_PATH, HDR_CLIENT_CERT, HDR_CLIENT_CHAIN,
    HDR_DEVICE_SERIAL, HDR_LABEL, HDR_OPERATION, SERVERKEYGEN_PATH,
};
use estuary_proto::names::{DeviceName, DeviceSerial};
use estuary_proto::pkcs7;
use estuary_proto::policy::KeyPolicy;
use estuary_proto::policy::PolicyError;
use estuary_proto::serverkeygen as skg;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::http::auth::bearer_ok;
use crate::metrics::{EnrollResult, Metrics, Protocol};
use crate::ra::engine::{Engine, EnrollRequest, Outcome};
use crate::ra::error::RaError;
use crate::ra::failure::FailureKind;
use crate::ra::keygen::{GeneratedKey, HeldKeys, KeyChoice, KeyGenError, RequestId};
use crate::support::secret::Secret;

/// Largest CSR body accepted (the filter enforces a smaller limit at the edge).
pub const MAX_BODY: usize = 64 * 1024;

/// The 404 body of the EST paths in a control plane that serves no EST.
pub const NO_EST: &str = "this control plane serves no EST (cloud registrar only)";

/// Shared state of the handlers.
pub struct AppState {
    /// The bearer token the proxy presents.
    pub token: Secret,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The EST service; `None` in a cloud registrar alone.
    pub est: Option<EstService>,
}

/// What the EST paths need.
pub struct EstService {
    /// The RA engine.
    pub engine: Arc<Engine>,
    /// Who may get which name (the parent domain, the manufacturer CAs, the ACME CA).
    pub trust: TrustPolicy,
    /// Accepted keys, told in `/csrattrs`.
    pub keys: KeyPolicy,
    /// serverkeygen: keys waiting for their certificates (this process's memory only).
    pub held_keys: Arc<HeldKeys>,
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(ENROLL_PATH, post(enroll))
        .route(SERVERKEYGEN_PATH, post(serverkeygen))
        .route(CACERTS_PATH, get(cacerts))
        .route(CSRATTRS_PATH, get(csr_attrs))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Why an EST path is not served; [`Refusal::response`] is its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Missing or wrong bearer token: 401.
    Token,
    /// A cloud registrar alone serves no EST: 404 [`NO_EST`].
    NoEst,
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Refusal::Token => text(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: only the Estuary proxy may call this API",
            ),
            Refusal::NoEst => text(StatusCode::NOT_FOUND, NO_EST),
        }
    }
}

/// The EST service, once the proxy's bearer token is checked (first, in constant time).
fn est_service<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a EstService, Refusal> {
    if !bearer_ok(headers, &state.token) {
        warn!("internal API call without a valid bearer token refused");
        return Err(Refusal::Token);
    }
    state.est.as_ref().ok_or(Refusal::NoEst)
}

/// Why the forwarded EST label selects no CA.
#[derive(Debug, thiserror::Error)]
enum LabelRefusal {
    /// The header is not a label: 400.
    #[error("{HDR_LABEL}: {}", EstLabel::RULE)]
    Malformed,
    /// No `[[acme.labels]]` entry has it: 404, as a path this server does not have.
    #[error("the EST label {0:?} is not configured on this server")]
    Unknown(String),
}

impl LabelRefusal {
    fn response(&self) -> Response {
        let status = match self {
            LabelRefusal::Malformed => StatusCode::BAD_REQUEST,
            LabelRefusal::Unknown(_) => StatusCode::NOT_FOUND,
        };
        info!(error = %self, "EST request under an unusable label refused");
        text(status, self.to_string())
    }
}

/// The EST label the proxy forwarded ([`HDR_LABEL`]; absent: the unlabelled path, `[acme]`).
/// RFC 7030 §3.2.2: the label selects a CA.
fn label_from(est: &EstService, headers: &HeaderMap) -> Result<Option<EstLabel>, LabelRefusal> {
    let Some(raw) = headers.get(HDR_LABEL) else {
        return Ok(None);
    };
    let label = raw
        .to_str()
        .ok()
        .and_then(EstLabel::parse)
        .ok_or(LabelRefusal::Malformed)?;
    if est.engine.chains(Some(&label)).is_none() {
        return Err(LabelRefusal::Unknown(label.to_string()));
    }
    Ok(Some(label))
}

/// The device serial the proxy authenticated, or the reason it is unusable (a 400).
fn serial_from(headers: &HeaderMap) -> Result<DeviceSerial, String> {
    let raw = headers
        .get(HDR_DEVICE_SERIAL)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("missing header {HDR_DEVICE_SERIAL}"))?;
    DeviceSerial::parse(raw).map_err(|e| format!("{HDR_DEVICE_SERIAL}: {e}"))
}

/// Why the forwarded client certificate does not back the request (400 or 403).
#[derive(Debug, thiserror::Error)]
enum DeviceRefusal {
    /// The serial header is missing or not a label: 400.
    #[error("{0}")]
    BadSerialHeader(String),
    /// A certificate header that does not decode: 400.
    #[error("{HDR_CLIENT_CERT} / {HDR_CLIENT_CHAIN}: not base64 DER")]
    BadCertificateHeader,
    /// No client certificate forwarded: 403, the call proves no device.
    #[error("no client certificate was forwarded ({HDR_CLIENT_CERT}): the bearer token alone names no device")]
    NoCertificate,
    /// The certificate authenticates no device for this operation: 403.
    #[error("{0}")]
    Identity(#[from] identity::IdentityError),
    /// The serial header names another device than the certificate: 403.
    #[error("{HDR_DEVICE_SERIAL} {header:?} disagrees with the client certificate, which names {certificate:?}")]
    SerialMismatch {
        /// The header.
        header: String,
        /// The certificate's device label.
        certificate: String,
    },
}

impl DeviceRefusal {
    fn response(&self) -> Response {
        let status = match self {
            DeviceRefusal::BadSerialHeader(_) | DeviceRefusal::BadCertificateHeader => {
                StatusCode::BAD_REQUEST
            }
            DeviceRefusal::NoCertificate
            | DeviceRefusal::Identity(_)
            | DeviceRefusal::SerialMismatch { .. } => StatusCode::FORBIDDEN,
        };
        warn!(error = %self, "internal API call refused: the forwarded client certificate does not back it");
        text(status, self.to_string())
    }
}

/// The device, re-derived from the forwarded client certificate with this process's own
/// trusted CAs; the serial header must name the same device.
/// [`device_from`], and for a certificate whose issuer is unknown and that is not needed as an
/// IDevID, once more with the intermediates learned from the ACME CAs' issued chains
/// ([`crate::ra::chains`]): after a CA moves to a new intermediate, a device presenting its
/// end-entity certificate alone is still recognised. The learned certificates only build the
/// path; trust still ends in `est.ca_certs_file` ([`identity::authenticate_with_known`]).
async fn device_of(
    est: &EstService,
    headers: &HeaderMap,
    need: Need,
) -> Result<Identity, DeviceRefusal> {
    match device_from(est, headers, need, &[]) {
        Err(DeviceRefusal::Identity(identity::IdentityError::UnknownIssuer))
            if need != Need::IDevId =>
        {
            let mut known: Vec<Vec<u8>> = Vec::new();
            for chains in est.engine.all_chains() {
                for der in chains.cacerts().await {
                    if !known.contains(&der) {
                        known.push(der);
                    }
                }
            }
            device_from(est, headers, need, &known)
        }
        other => other,
    }
}

fn device_from(
    est: &EstService,
    headers: &HeaderMap,
    need: Need,
    known: &[Vec<u8>],
) -> Result<Identity, DeviceRefusal> {
    let serial = serial_from(headers).map_err(DeviceRefusal::BadSerialHeader)?;
    let decode = |s: &str| {
        estuary_proto::base64::decode(s.trim().as_bytes())
            .map_err(|_| DeviceRefusal::BadCertificateHeader)
    };
    let leaf = match headers.get(HDR_CLIENT_CERT) {
        None => return Err(DeviceRefusal::NoCertificate),
        Some(v) => decode(
            v.to_str()
                .map_err(|_| DeviceRefusal::BadCertificateHeader)?,
        )?,
    };
    let chain = match headers.get(HDR_CLIENT_CHAIN) {
        None => Vec::new(),
        Some(v) => v
            .to_str()
            .map_err(|_| DeviceRefusal::BadCertificateHeader)?
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .take(identity::MAX_CHAIN_CERTS)
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?,
    };
    let device = identity::authenticate_with_known(&est.trust, &leaf, &chain, known, need)?;
    if device.label() != &serial {
        return Err(DeviceRefusal::SerialMismatch {
            header: serial.to_string(),
            certificate: device.label().to_string(),
        });
    }
    Ok(device)
}

async fn enroll(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let est = match est_service(&state, &headers) {
        Ok(e) => e,
        Err(r) => return r.response(),
    };
    if let Err(reason) = serial_from(&headers) {
        return text(StatusCode::BAD_REQUEST, reason);
    }
    let label = match label_from(est, &headers) {
        Ok(l) => l,
        Err(r) => return r.response(),
    };
    let operation = match headers
        .get(HDR_OPERATION)
        .and_then(|v| v.to_str().ok())
        .and_then(Operation::parse_enroll_header)
        .and_then(Operation::est_operation)
    {
        Some(op) => op,
        None => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{HDR_OPERATION} must be simpleenroll or simplereenroll"),
            )
        }
    };
    if let Some(r) = pkcs10_content_type(&headers) {
        return r;
    }
    let need = match operation {
        EstOperation::SimpleReenroll => Need::LDevId,
        _ => Need::IDevId,
    };
    let device = match device_of(est, &headers, need).await {
        Ok(d) => d,
        Err(refusal) => {
            state
                .metrics
                .enrollment(Protocol::est, EnrollResult::rejected);
            return refusal.response();
        }
    };
    // RFC 7030 §4.2.2: a re-enrolment keeps the current certificate's subject and names.
    if let Identity::LDevId { cert, .. } = &device {
        let checked = estuary_proto::csr::parse_and_verify(&body)
            .map_err(RaError::from)
            .and_then(|csr| {
                estuary_proto::policy::check_reenroll(&csr, cert, &est.keys).map_err(RaError::from)
            });
        if let Err(e) = checked {
            state
                .metrics
                .enrollment(Protocol::est, EnrollResult::rejected);
            return error_response(est, &e);
        }
    }
    let req = EnrollRequest {
        csr_der: body.to_vec(),
        serial: device.label().clone(),
        operation,
        label,
    };
    match est.engine.enroll(req).await {
        // draft-ietf-acme-integrations-17 "Certificate Chains and Trust Anchors": the
        // end-entity certificate only; the rest of the chain is in /cacerts.
        Ok(Outcome::Issued { ee_pkcs7, .. }) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CT_PKCS7_CERTS_ONLY)],
            ee_pkcs7,
        )
            .into_response(),
        Ok(Outcome::Pending { retry_after }) => with_retry_after(
            text(
                StatusCode::ACCEPTED,
                format!("enrolment in progress; retry after {retry_after} s"),
            ),
            retry_after,
        ),
        Err(e) => error_response(est, &e),
    }
}

/// The media type of a request body must be `application/pkcs10` (parameters tolerated);
/// otherwise the 415 answer.
fn pkcs10_content_type(headers: &HeaderMap) -> Option<Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    (!media.eq_ignore_ascii_case(CT_PKCS10)).then(|| {
        text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type must be {CT_PKCS10} (DER), got {ct:?}"),
        )
    })
}

/// Server-side key generation (RFC 7030 §4.4): the device's CSR names it (same identity and
/// name policy as simpleenroll, its key ignored but its signature verified); the RA makes the
/// key and the CSR for it and orders through the same engine; the answer is the key and the
/// end-entity certificate in `multipart/mixed` (§4.4.2). See [`crate::ra::keygen`] for the
/// key types and for what happens on 202.
async fn serverkeygen(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let est = match est_service(&state, &headers) {
        Ok(e) => e,
        Err(r) => return r.response(),
    };
    let rejected = || {
        state
            .metrics
            .enrollment(Protocol::est, EnrollResult::rejected);
        state.metrics.enrollment_operation(
            Protocol::est,
            EstOperation::ServerKeyGen,
            EnrollResult::rejected,
        );
    };
    if let Err(reason) = serial_from(&headers) {
        return text(StatusCode::BAD_REQUEST, reason);
    }
    if let Some(r) = pkcs10_content_type(&headers) {
        return r;
    }
    let label = match label_from(est, &headers) {
        Ok(l) => l,
        Err(r) => {
            rejected();
            return r.response();
        }
    };
    let device = match device_of(est, &headers, Need::IDevId).await {
        Ok(d) => d,
        Err(refusal) => {
            rejected();
            return refusal.response();
        }
    };
    // Hostile until checked: the signature (proof that the client made the request), then
    // the names and content; the request's key is not held to the key policy.
    let checked = DeviceName::new(device.label(), &est.trust.parent)
        .map_err(RaError::from)
        .and_then(|name| {
            let csr = estuary_proto::csr::parse_and_verify(&body)?;
            estuary_proto::policy::check_serverkeygen(&csr, &name)?;
            Ok((name, csr))
        });
    let (name, request) = match checked {
        Ok(c) => c,
        Err(e) => {
            rejected();
            return error_response(est, &e);
        }
    };
    let cert = headers
        .get(HDR_CLIENT_CERT)
        .map(|v| v.as_bytes().trim_ascii())
        .unwrap_or_default();
    let id = RequestId::under(label.as_ref().map(EstLabel::as_str), cert, &body);
    let held = match est.held_keys.get(&id) {
        Some(h) => h,
        None => {
            let made = make_key(est, &name, &request)
                .await
                .and_then(|(key, csr)| est.held_keys.hold(id, key, csr).map_err(|_| RaError::Busy));
            match made {
                Ok(h) => h,
                Err(e) => return error_response(est, &e),
            }
        }
    };
    let req = EnrollRequest {
        csr_der: held.csr_der.clone(),
        serial: device.label().clone(),
        operation: EstOperation::ServerKeyGen,
        label,
    };
    match est.engine.enroll(req).await {
        Ok(Outcome::Issued { ee_pkcs7, .. }) => {
            // Handed over now: no later request gets this key.
            est.held_keys.release(&id);
            match multipart_answer(&held.key, &ee_pkcs7) {
                Ok(r) => {
                    info!(device = %name.as_str(), "serverkeygen: key and certificate handed over");
                    r
                }
                Err(e) => error_response(est, &e),
            }
        }
        Ok(Outcome::Pending { retry_after }) => with_retry_after(
            text(
                StatusCode::ACCEPTED,
                format!(
                    "key generated and certificate being issued; send the same request again \
                     with the same client certificate after {retry_after} s"
                ),
            ),
            retry_after,
        ),
        Err(e) => {
            est.held_keys.release(&id);
            error_response(est, &e)
        }
    }
}

/// A new key of the type [`KeyChoice::for_request`] picks, and the CSR for `name` signed
/// with it (commonName kept if the request had one).
async fn make_key(
    est: &EstService,
    name: &DeviceName,
    request: &estuary_proto::VerifiedCsr,
) -> Result<(GeneratedKey, Vec<u8>), RaError> {
    let choice = KeyChoice::for_request(request.key(), &est.keys).ok_or(KeyGenError::NoKeyType)?;
    // RSA generation takes a while: off the async threads.
    let key = tokio::task::spawn_blocking(move || GeneratedKey::generate(choice))
        .await
        .map_err(|e| KeyGenError::Task(e.to_string()))??;
    let csr = key.csr_for(name, request.subject_common_name().is_some())?;
    Ok((key, csr))
}

/// The 200 answer: `multipart/mixed` with the key and `ee_pkcs7`, the engine's PKCS#7 of the
/// end-entity certificate only (draft-ietf-acme-integrations-17: the chain is `/cacerts`'
/// business). The body's buffer is wiped when the HTTP stack drops it.
fn multipart_answer(key: &GeneratedKey, ee_pkcs7: &[u8]) -> Result<Response, RaError> {
    let pkcs8 = key.pkcs8_der()?;
    let mut body = Zeroizing::new(Vec::new());
    skg::build(&pkcs8, ee_pkcs7, &mut body);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, skg::content_type())],
        axum::body::Body::from(Bytes::from_owner(body)),
    )
        .into_response())
}

/// The one map from an enrolment error to the internal API's status. The edge filter passes
/// 4xx reasons and 503/429 with their Retry-After to the device (RFC 7030 §4.2.3, RFC 6585 §4);
/// a 5xx other than 503 reaches it as a bare server error.
fn est_status(e: &RaError) -> StatusCode {
    match e {
        // RFC 7030 §4.2.3: the request is malformed; the body says why.
        RaError::BadCsr(_) | RaError::Name(_) => StatusCode::BAD_REQUEST,
        // RFC 7030 §4.4.1.1, §4.4.1.2: an encrypted key was asked for, to a key this server
        // does not hold; the server "terminates the request with an error".
        RaError::Policy(PolicyError::KeyEncryptionNotSupported { .. }) => StatusCode::BAD_REQUEST,
        // The device may not ask for this (identity, CSR content policy).
        RaError::Policy(_) => StatusCode::FORBIDDEN,
        // RFC 6585 §4, with Retry-After: the window's end.
        RaError::DeviceLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
        // RFC 7030 §4.2.3: 503 + Retry-After.
        RaError::Store(_) | RaError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        // The label selects a CA this server does not have (as an unknown path).
        RaError::UnknownLabel(_) => StatusCode::NOT_FOUND,
        RaError::Issue(i) => failure_status(i.failure_kind()),
        RaError::Remembered(f) => failure_status(f.kind),
        // serverkeygen: the RA could not make the key (a bug, or `keys` allowing no type).
        RaError::KeyGen(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a failed issuance (draft-ietf-acme-integrations-17 "Error Handling": the CA's
/// refusal of the CSR or the identifier is the client's; everything else is the RA's).
fn failure_status(k: FailureKind) -> StatusCode {
    match k {
        // ACME badCSR.
        FailureKind::CsrRefused => StatusCode::BAD_REQUEST,
        // ACME rejectedIdentifier, caa.
        FailureKind::IdentifierRefused | FailureKind::CaaForbids => StatusCode::FORBIDDEN,
        // The CA or DNS refused otherwise: the operator's problem.
        FailureKind::Issuance => StatusCode::BAD_GATEWAY,
        // RFC 7030 §4.2.3: 503 + Retry-After.
        FailureKind::Unavailable | FailureKind::Deadline | FailureKind::Abandoned => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The CMCFailInfo (RFC 5272 §6.1.4) that draft-ietf-acme-integrations-17 "Error Handling"
/// gives a failed issuance; the EST error body starts with it. `None` for a transient
/// condition, which is not a failure of the request.
fn cmc_fail_info(k: FailureKind) -> Option<&'static str> {
    match k {
        // -17: badCSR, caa → badRequest.
        FailureKind::CsrRefused | FailureKind::CaaForbids => Some("badRequest"),
        // -17: rejectedIdentifier → badIdentity.
        FailureKind::IdentifierRefused => Some("badIdentity"),
        // -17: everything else → internalCAError.
        FailureKind::Issuance | FailureKind::Internal => Some("internalCAError"),
        FailureKind::Unavailable | FailureKind::Deadline | FailureKind::Abandoned => None,
    }
}

/// The internal API's answer to an enrolment error.
fn error_response(est: &EstService, e: &RaError) -> Response {
    let status = est_status(e);
    let body = match e {
        RaError::Store(_) => "certificate store unavailable; retry later".to_string(),
        other => match other.failure_kind().and_then(cmc_fail_info) {
            Some(info) => format!("{info}: {other}"),
            None => other.to_string(),
        },
    };
    if status.is_server_error() {
        warn!(status = status.as_u16(), error = %e, "enrolment failed");
    } else {
        info!(status = status.as_u16(), error = %e, "enrolment refused");
    }
    let r = text(status, body);
    match e.retry_after(est.engine.config()) {
        Some(s) => with_retry_after(r, s),
        None => r,
    }
}

async fn cacerts(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let est = match est_service(&state, &headers) {
        Ok(e) => e,
        Err(r) => return r.response(),
    };
    let label = match label_from(est, &headers) {
        Ok(l) => l,
        Err(r) => return r.response(),
    };
    // label_from checked the label; kept for the day the two disagree.
    let Some(chains) = est.engine.chains(label.as_ref()) else {
        return text(StatusCode::NOT_FOUND, "no CA certificates for this label");
    };
    let certs = chains.cacerts().await;
    match pkcs7::encode_certs_only(&certs) {
        Ok(der) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CT_PKCS7_CERTS_ONLY)],
            der,
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "cannot encode the /cacerts PKCS#7");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the CA certificates",
            )
        }
    }
}

async fn csr_attrs(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let est = match est_service(&state, &headers) {
        Ok(e) => e,
        Err(r) => return r.response(),
    };
    // The same attributes under every label: the name is the device's, whichever CA issues.
    if let Err(r) = label_from(est, &headers) {
        return r.response();
    }
    let device = match device_of(est, &headers, Need::Any).await {
        Ok(d) => d,
        Err(refusal) => return refusal.response(),
    };
    let name = match DeviceName::new(device.label(), &est.trust.parent) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("device name: {e}")),
    };
    match csrattrs::device_template(&name, &est.keys).to_der() {
        Ok(der) => (StatusCode::OK, [(header::CONTENT_TYPE, CT_CSRATTRS)], der).into_response(),
        Err(e) => {
            warn!(error = %e, "cannot encode CSR attributes");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode CSR attributes",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ra::acme::problem::{IssueError, ProblemType};
    use crate::ra::failure::Failure;

    fn rejected(problem: ProblemType) -> RaError {
        RaError::Issue(IssueError::CaRejected {
            problem,
            detail: "d".into(),
        })
    }

    /// draft-ietf-acme-integrations-17 "Error Handling": the CA refusing the CSR or the name is
    /// the client's (4xx); anything else the CA does is the RA's (502), or passes (503).
    #[test]
    fn ca_problems_map_to_the_client_or_the_ra() {
        for (e, want) in [
            (rejected(ProblemType::BadCsr), 400),
            (rejected(ProblemType::RejectedIdentifier), 403),
            (rejected(ProblemType::Caa), 403),
            (rejected(ProblemType::Unauthorized), 502),
            (rejected(ProblemType::Other("x".into())), 502),
            (
                RaError::Issue(IssueError::CaUnavailable {
                    detail: "d".into(),
                    retry_after: None,
                }),
                503,
            ),
            (
                RaError::Issue(IssueError::Deadline {
                    after: std::time::Duration::from_secs(1),
                }),
                503,
            ),
            (
                RaError::Issue(IssueError::ChallengeFailed {
                    name: "n".into(),
                    detail: "d".into(),
                    unreachable: true,
                }),
                503,
            ),
            (
                RaError::Issue(IssueError::ChallengeFailed {
                    name: "n".into(),
                    detail: "d".into(),
                    unreachable: false,
                }),
                502,
            ),
            (RaError::Busy, 503),
            (RaError::UnknownLabel("x".into()), 404),
            (
                RaError::DeviceLimit {
                    limit: 5,
                    window_s: 60,
                    retry_after_s: 7,
                },
                429,
            ),
        ] {
            assert_eq!(est_status(&e).as_u16(), want, "{e:?}");
        }
    }

    /// RFC 7030 §4.4.1.1, §4.4.1.2: a serverkeygen request for an encrypted key is the client
    /// asking for what this server cannot do: 400, not the 403 of other policy refusals.
    #[test]
    fn an_encrypted_key_request_is_400_other_policy_refusals_403() {
        let e = RaError::Policy(PolicyError::KeyEncryptionNotSupported {
            attribute: estuary_proto::oids::DECRYPT_KEY_ID,
        });
        assert_eq!(est_status(&e).as_u16(), 400);
        assert!(e.to_string().contains("DecryptKeyIdentifier"), "{e}");
        assert_eq!(
            est_status(&RaError::Policy(PolicyError::CaRequested)).as_u16(),
            403
        );
    }

    /// draft-17 "Error Handling": the CMCFailInfo each CA refusal names in the EST body.
    #[test]
    fn ca_refusals_name_their_cmc_fail_info() {
        for (problem, want) in [
            (ProblemType::BadCsr, Some("badRequest")),
            (ProblemType::Caa, Some("badRequest")),
            (ProblemType::RejectedIdentifier, Some("badIdentity")),
            (ProblemType::Unauthorized, Some("internalCAError")),
            (ProblemType::ServerInternal, Some("internalCAError")),
        ] {
            let kind = rejected(problem.clone()).failure_kind().expect("a kind");
            assert_eq!(cmc_fail_info(kind), want, "{problem:?}");
        }
        assert_eq!(cmc_fail_info(FailureKind::Unavailable), None);
    }

    /// A failure remembered by another replica answers as the live one did.
    #[test]
    fn a_remembered_failure_answers_as_the_live_one() {
        for (kind, want) in [
            (FailureKind::CsrRefused, 400),
            (FailureKind::IdentifierRefused, 403),
            (FailureKind::CaaForbids, 403),
            (FailureKind::Issuance, 502),
            (FailureKind::Unavailable, 503),
            (FailureKind::Deadline, 503),
            (FailureKind::Abandoned, 503),
            (FailureKind::Internal, 500),
        ] {
            let e = RaError::Remembered(Failure {
                kind,
                reason: "r".into(),
            });
            assert_eq!(est_status(&e).as_u16(), want, "{kind:?}");
        }
        let live = rejected(ProblemType::BadCsr);
        let kind = live.failure_kind().expect("a kind");
        let remembered = RaError::Remembered(Failure {
            kind,
            reason: live.to_string(),
        });
        assert_eq!(est_status(&live), est_status(&remembered));
    }
}
