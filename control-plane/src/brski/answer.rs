//! BRSKI's internal API answers: the one map from [`BrskiError`] to an HTTP answer (status in
//! [`BrskiError::status`], body and Retry-After here), the caller check, and the client
//! certificate the edge forwarded.
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use estuary_proto::cert::CertSummary;
use estuary_proto::internal_api::HDR_CLIENT_CERT;
use tracing::{info, warn};

use crate::brski::error::BrskiError;
use crate::http::auth::bearer_ok;
use crate::metrics::Metrics;
use crate::support::secret::Secret;

pub fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

pub fn error_response(retry_after_s: u64, e: &BrskiError) -> Response {
    let status = e.status();
    if status.is_server_error() {
        warn!(status = status.as_u16(), error = %e, "BRSKI request failed");
    } else {
        info!(status = status.as_u16(), error = %e, "BRSKI request refused");
    }
    let body = match e {
        BrskiError::MasaUnavailable(_) => "the MASA is unavailable; retry later".to_string(),
        BrskiError::Store(_) => "status store unavailable; retry later".to_string(),
        BrskiError::BadVoucher(_) => "the MASA returned an invalid voucher".to_string(),
        BrskiError::Internal(_) => "internal error".to_string(),
        other => other.to_string(),
    };
    let mut r = text(status, body);
    if let BrskiError::TooManyRequests { retry_after_s, .. } = e {
        if let Ok(v) = retry_after_s.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        if let Ok(v) = retry_after_s.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// Counts one request in `estuary_brski_requests_total{op,result}`.
pub fn count(metrics: &Metrics, op: &str, result: &str) {
    metrics
        .brski
        .get_or_create(&vec![
            ("op".to_string(), op.to_string()),
            ("result".to_string(), result.to_string()),
        ])
        .inc();
}

/// Creates the registrar's `estuary_brski_requests_total{op,result}` series at zero, so a
/// dashboard shows them (and can divide by them) before the first pledge arrives.
pub fn create_series(metrics: &Metrics) {
    const FAILURES: [&str; 3] = ["rejected", "unavailable", "failed"];
    let series = [
        ("requestvoucher", &["voucher", "redirect"][..]),
        ("requestauditlog", &["ok"][..]),
        ("voucher_status", &["success", "failure"][..]),
        ("enrollstatus", &["success", "failure"][..]),
    ];
    for (op, outcomes) in series {
        for result in outcomes.iter().chain(FAILURES.iter()) {
            metrics
                .brski
                .get_or_create(&vec![
                    ("op".to_string(), op.to_string()),
                    ("result".to_string(), result.to_string()),
                ])
                .inc_by(0);
        }
    }
}

/// The `result` label of a failure: unknown (cloud registrar, no owner), rejected (other 4xx),
/// unavailable (503), failed (other 5xx).
pub fn failure_label(e: &BrskiError) -> &'static str {
    let s = e.status();
    if matches!(e, BrskiError::UnknownOwner { .. }) {
        "unknown"
    } else if s.is_client_error() {
        "rejected"
    } else if s == StatusCode::SERVICE_UNAVAILABLE {
        "unavailable"
    } else {
        "failed"
    }
}

pub fn authorized(token: &Secret, headers: &HeaderMap) -> Option<Response> {
    if bearer_ok(headers, token) {
        None
    } else {
        Some(text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: only the Estuary proxy may call this API".into(),
        ))
    }
}

pub fn client_cert(headers: &HeaderMap) -> Result<(Vec<u8>, CertSummary), BrskiError> {
    let raw = headers
        .get(HDR_CLIENT_CERT)
        .and_then(|v| v.to_str().ok())
        .ok_or(BrskiError::NoClientCert)?;
    let der = STANDARD
        .decode(raw.trim())
        .map_err(|_| BrskiError::NoClientCert)?;
    let summary = CertSummary::from_der(&der).map_err(|_| BrskiError::NoClientCert)?;
    Ok((der, summary))
}

/// `307 Temporary Redirect` to `location`, with a short text body.
pub fn redirect_response(location: HeaderValue) -> Response {
    let body = format!(
        "this pledge's owner runs its own registrar: {}\n",
        location.to_str().unwrap_or("see Location")
    );
    (
        StatusCode::TEMPORARY_REDIRECT,
        [
            (header::LOCATION, location),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        body,
    )
        .into_response()
}
