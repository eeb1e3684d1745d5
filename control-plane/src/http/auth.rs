//! The one check of the internal API's caller: the edge proxy's bearer token (RFC 6750 §2.1),
//! compared in constant time.
use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::support::secret::Secret;

/// Whether `Authorization: Bearer <token>` carries exactly the configured token.
pub fn bearer_ok(headers: &HeaderMap, token: &Secret) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(a).expect("value"),
            );
        }
        h
    }

    #[test]
    fn only_the_exact_token_passes() {
        let token: Secret = serde_json::from_str("\"0123456789abcdef0123\"").expect("secret");
        assert!(bearer_ok(
            &with(Some("Bearer 0123456789abcdef0123")),
            &token
        ));
        for wrong in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Bearer 0123456789abcdef012"),
            Some("Bearer 0123456789abcdef01234"),
            Some("bearer 0123456789abcdef0123"),
            Some("Basic 0123456789abcdef0123"),
            Some("0123456789abcdef0123"),
        ] {
            assert!(!bearer_ok(&with(wrong), &token), "{wrong:?}");
        }
    }
}
