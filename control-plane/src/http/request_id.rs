//! One id per request in every log line: the `x-request-id` the edge passes on (Envoy sets it on
//! the device's request), or a fresh one when there is none or it is not a plain token
//! ([`estuary_proto::internal_api::request_id_ok`]). Each request runs in a `request` span with
//! that `request_id`, issuances it starts keep the span, and the answer carries the id back.
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use estuary_proto::internal_api::{request_id_ok, HDR_REQUEST_ID};
use tracing::Instrument;

use crate::support::token::random_token;

/// The request's id: the caller's if it is a plain token, else a new random one.
pub fn request_id_of(req: &Request) -> String {
    req.headers()
        .get(HDR_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| request_id_ok(id))
        .map(str::to_owned)
        .unwrap_or_else(random_token)
}

/// Middleware: runs the rest of the request in a `request{request_id, method, path}` span and
/// sets `x-request-id` on the answer.
pub async fn with_request_id(req: Request, next: Next) -> Response {
    let id = request_id_of(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let mut answer = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        answer.headers_mut().insert(HDR_REQUEST_ID, v);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn with(id: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri("/estuary/v1/enroll");
        if let Some(id) = id {
            b = b.header(HDR_REQUEST_ID, id);
        }
        b.body(Body::empty()).expect("request")
    }

    #[test]
    fn the_edges_id_is_kept_and_a_hostile_one_replaced() {
        assert_eq!(request_id_of(&with(Some("abc-123"))), "abc-123");
        let fresh = request_id_of(&with(Some("bad id\"}")));
        assert_ne!(fresh, "bad id\"}");
        assert!(request_id_ok(&fresh), "{fresh}");
        let none = request_id_of(&with(None));
        assert!(request_id_ok(&none), "{none}");
        assert_ne!(none, request_id_of(&with(None)), "ids are not reused");
    }
}
