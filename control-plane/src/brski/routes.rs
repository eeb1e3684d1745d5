//! The BRSKI internal API paths and their handlers.
use std::sync::Arc;

use axum::routing::post;
use axum::Router;

use crate::brski::registrar::{
    requestauditlog, requestvoucher, Registrar, ENROLLSTATUS_PATH, REQUESTAUDITLOG_PATH,
    REQUESTVOUCHER_PATH, VOUCHER_STATUS_PATH,
};
use crate::brski::status::{enrollstatus, voucher_status};

/// The router for the BRSKI internal API paths.
pub fn router(registrar: Arc<Registrar>) -> Router {
    Router::new()
        .route(REQUESTVOUCHER_PATH, post(requestvoucher))
        .route(VOUCHER_STATUS_PATH, post(voucher_status))
        .route(ENROLLSTATUS_PATH, post(enrollstatus))
        .route(
            REQUESTAUDITLOG_PATH,
            post(requestauditlog).get(requestauditlog),
        )
        .with_state(registrar)
}
