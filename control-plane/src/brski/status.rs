//! `voucher_status` and `enrollstatus` (RFC 8995 §5.7, §5.9.4): the pledge's reports, logged and
//! kept in Redis with a TTL (`<prefix>:brski:<kind>:<serial>`).
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tracing::info;

use crate::brski::answer::{authorized, client_cert, count, error_response, failure_label, text};
use crate::brski::error::{BadRequest, BrskiError, Refusal};
use crate::brski::registrar::Registrar;
use crate::support::clock::now_unix;

#[derive(Clone, Copy)]
enum StatusKind {
    Voucher,
    Enroll,
}

pub async fn voucher_status(
    State(reg): State<Arc<Registrar>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    status_report(&reg, &headers, &body, StatusKind::Voucher).await
}

pub async fn enrollstatus(
    State(reg): State<Arc<Registrar>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    status_report(&reg, &headers, &body, StatusKind::Enroll).await
}

/// RFC 8995 §5.7 / §5.9.4: `{"version": 1, "status": bool, "reason": "...", ...}`.
async fn status_report(
    reg: &Registrar,
    headers: &HeaderMap,
    body: &[u8],
    kind: StatusKind,
) -> Response {
    if let Some(r) = authorized(&reg.token, headers) {
        return r;
    }
    let result = async {
        let (_, cert) = client_cert(headers)?;
        let serial = cert
            .subject_serial_number()
            .or_else(|| cert.dns_names().first().and_then(|n| n.split('.').next()))
            .ok_or(Refusal::NoDeviceName)?
            .to_string();
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(BadRequest::StatusNotJson)?;
        let ok = v
            .get("status")
            .and_then(serde_json::Value::as_bool)
            .ok_or(BadRequest::StatusWithoutVerdict)?;
        let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
        let name = match kind {
            StatusKind::Voucher => "voucher_status",
            StatusKind::Enroll => "enrollstatus",
        };
        info!(serial = %serial, status = ok, reason = %reason.escape_debug(), "BRSKI {name} report");
        let stored = serde_json::json!({"at": now_unix(), "report": v}).to_string();
        reg.store
            .put_expiring(
                &format!("brski:{name}"),
                &serial,
                &stored,
                Duration::from_secs(reg.status_ttl_s),
            )
            .await
            ?;
        Ok::<bool, BrskiError>(ok)
    }
    .await;
    let op = match kind {
        StatusKind::Voucher => "voucher_status",
        StatusKind::Enroll => "enrollstatus",
    };
    match result {
        Ok(ok) => {
            // The pledge's own verdict (RFC 8995 §5.7 `status`).
            count(&reg.metrics, op, if ok { "success" } else { "failure" });
            text(StatusCode::OK, "status recorded".into())
        }
        Err(e) => {
            count(&reg.metrics, op, failure_label(&e));
            error_response(reg.retry_after_s, &e)
        }
    }
}
