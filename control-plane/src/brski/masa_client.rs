//! The MASA client (RFC 8995 §5.5, §5.8): HTTPS to the manufacturer's MASA, trusting only its
//! configured anchor, every exchange (the body included) within one deadline.
use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header;
use estuary_proto::voucher::CT_VOUCHER_CMS_JSON;
use http_body_util::{BodyExt, Full};

use crate::brski::error::{BadVoucher, BrskiError, MasaUnavailable, Refusal};
use crate::support::https::{self, HttpsClient, Roots};

const MASA_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MASA_BODY: usize = 256 * 1024;

/// One manufacturer's MASA, as an HTTPS client.
pub struct MasaClient {
    client: HttpsClient,
}

impl MasaClient {
    /// A client that trusts only the certificates in `anchor` (PEM).
    pub fn new(anchor: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            client: https::client(Roots::PemFile(anchor))?,
        })
    }

    /// POSTs `body` to `url`: the status and body of the answer, all within one deadline.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), BrskiError> {
        let req = hyper::Request::post(url)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, CT_VOUCHER_CMS_JSON)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Refusal::MasaUrl {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        // One deadline for the whole exchange, the body included: a MASA that sends its headers
        // and then stalls must not hold the pledge (or this task) forever.
        let exchange = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| MasaUnavailable::Unreachable {
                    url: url.to_string(),
                    detail: e.to_string(),
                })?;
            let status = rsp.status().as_u16();
            let body = http_body_util::Limited::new(rsp.into_body(), MAX_MASA_BODY)
                .collect()
                .await
                .map_err(|e| MasaUnavailable::Unreadable {
                    url: url.to_string(),
                    detail: e.to_string(),
                })?
                .to_bytes()
                .to_vec();
            Ok((status, body))
        };
        tokio::time::timeout(MASA_TIMEOUT, exchange)
            .await
            .map_err(|_| BrskiError::from(MasaUnavailable::Timeout(url.to_string())))?
    }
}

/// The error for a MASA answer other than 200.
pub fn masa_status_error(status: u16, body: &[u8]) -> BrskiError {
    let reason = std::str::from_utf8(body)
        .ok()
        .map(str::trim)
        .filter(|t| t.len() <= 512 && t.chars().all(|c| !c.is_control()))
        .unwrap_or("")
        .to_string();
    match status {
        503 | 429 => MasaUnavailable::Busy(status).into(),
        400..=499 => BrskiError::MasaRefused { status, reason },
        _ => BadVoucher::Status { status, reason }.into(),
    }
}
