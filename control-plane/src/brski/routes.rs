//! The BRSKI internal API paths and their handlers.
use std::sync::Arc;

use axum::routing::post;
use axum::Router;

use estuary_proto::internal_api::{
    BRSKI_ENROLLSTATUS_PATH, BRSKI_REQUESTAUDITLOG_PATH, BRSKI_REQUESTVOUCHER_PATH,
    BRSKI_VOUCHER_STATUS_PATH,
};

use crate::brski::registrar::{requestauditlog, requestvoucher, Registrar};
use crate::brski::status::{enrollstatus, voucher_status};

/// The router for the BRSKI internal API paths.
pub fn router(registrar: Arc<Registrar>) -> Router {
    Router::new()
        .route(BRSKI_REQUESTVOUCHER_PATH, post(requestvoucher))
        .route(BRSKI_VOUCHER_STATUS_PATH, post(voucher_status))
        .route(BRSKI_ENROLLSTATUS_PATH, post(enrollstatus))
        .route(
            BRSKI_REQUESTAUDITLOG_PATH,
            post(requestauditlog).get(requestauditlog),
        )
        .with_state(registrar)
}
