//! The smallest extension of instant-acme that pre-authorisation needs: JWS-signed POSTs of
//! our own for the requests instant-acme has no API for (`newAuthz`, RFC 8555 §7.4.1, and
//! `newOrder` with RFC 9444's `ancestorDomain`), and a directory read that keeps the fields
//! instant-acme drops (`newAuthz`, `meta.subdomainAuthAllowed`).
//!
//! Requests are flattened JWS (RFC 8555 §6.2) signed ES256 with the account key that
//! instant-acme created (its [`instant_acme::AccountCredentials`] serialize the PKCS#8 key) and
//! `kid` = [`instant_acme::Account::id`]. Nonces come from the last answer or from `newNonce`;
//! a `badNonce` problem is retried with the nonce it carries (RFC 8555 §6.5), twice at most.
//! Everything else (orders once placed, finalize, certificate) goes through instant-acme.
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::ra::acme::problem::{
    bounded, problem_error, IssueError, NoAnswer, ProblemType, RateLimitedAnswer,
};
use crate::support::https::{self, HttpsClient, HttpsError, Roots};

/// Largest ACME answer read (bytes); directories, orders, authorisations and certificate
/// chains are small.
const MAX_BODY: usize = 256 * 1024;

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an IMF-fixdate HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) read as the time from `now` (Unix seconds; zero if
/// past). `None` for anything else, the obsolete date formats included.
pub fn retry_after(value: &str, now: i64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let rest = value.get(5..)?;
    let mut parts = rest.split(' ');
    let (day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    if parts.next().is_some() || zone != "GMT" || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let at = estuary_proto::time::parse_rfc3339(&format!("{year}-{month:02}-{day}T{time}Z"))?;
    Some(Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
}

/// The `rateLimited` problem in a failed answer, if that is what it is.
fn rate_limited(status: u16, retry: Option<&str>, body: &[u8]) -> Option<RateLimitedAnswer> {
    if status < 400 {
        return None;
    }
    let doc: Value = serde_json::from_slice(body).ok()?;
    let kind = ProblemType::parse(doc.get("type").and_then(Value::as_str));
    (kind == ProblemType::RateLimited).then(|| RateLimitedAnswer {
        detail: bounded(doc.get("detail").and_then(Value::as_str).unwrap_or("")),
        retry_after: retry.and_then(|r| retry_after(r, crate::support::clock::now_unix())),
    })
}

/// The one HTTPS client for the CA: instant-acme's requests ([`instant_acme::HttpClient`]) and
/// our own JWS POSTs. Trusts `root` only when given, else the platform's roots. Every exchange,
/// the body included, ends within its timeout ([`NoAnswer`]): a CA that accepts TCP and never
/// answers cannot hold an issuance.
#[derive(Clone)]
pub struct AcmeHttp {
    client: HttpsClient,
    timeout: Duration,
}

fn unavailable(detail: impl Into<String>) -> IssueError {
    IssueError::CaUnavailable {
        detail: detail.into(),
        retry_after: None,
    }
}

fn protocol(detail: impl Into<String>) -> IssueError {
    IssueError::CaProtocol(detail.into())
}

impl AcmeHttp {
    /// Builds the client; `timeout` bounds each exchange, body included.
    pub fn new(root: Option<&Path>, timeout: Duration) -> Result<Self, IssueError> {
        let roots = match root {
            Some(path) => Roots::PemFile(path),
            None => Roots::Platform,
        };
        let client = https::client(roots).map_err(|e| match e {
            HttpsError::Roots { detail, .. } => {
                unavailable(format!("acme.tls_root_file: {detail}"))
            }
            other => unavailable(other.to_string()),
        })?;
        Ok(Self { client, timeout })
    }

    /// One exchange, the body read within the same timeout.
    async fn exchange(&self, req: hyper::Request<Full<Bytes>>) -> Result<AcmeResponse, IssueError> {
        tokio::time::timeout(self.timeout, self.exchange_untimed(req))
            .await
            .map_err(|_| IssueError::CaNoAnswer(NoAnswer(self.timeout)))?
    }

    async fn exchange_untimed(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<AcmeResponse, IssueError> {
        let rsp = self
            .client
            .request(req)
            .await
            .map_err(|e| unavailable(format!("cannot reach the ACME CA: {e}")))?;
        let status = rsp.status().as_u16();
        let header = |n: &str| {
            rsp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header("location");
        let nonce = header("replay-nonce");
        let content_type = header("content-type").unwrap_or_default();
        let retry_after =
            header("retry-after").and_then(|v| retry_after(&v, crate::support::clock::now_unix()));
        let body = http_body_util::Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| unavailable(format!("reading the ACME answer: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(AcmeResponse {
            status,
            location,
            nonce,
            content_type,
            retry_after,
            body,
        })
    }

    /// GET of a JSON resource (the directory).
    pub async fn get_json(&self, url: &str) -> Result<Value, IssueError> {
        let req = hyper::Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| protocol(format!("bad URL {url:?}: {e}")))?;
        let rsp = self.exchange(req).await?;
        if rsp.status != 200 {
            return Err(unavailable(format!("GET {url}: HTTP {}", rsp.status)));
        }
        serde_json::from_slice(&rsp.body).map_err(|e| protocol(format!("GET {url}: not JSON: {e}")))
    }
}

type InstantAcmeFuture =
    Pin<Box<dyn Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>> + Send>>;

/// instant-acme's requests go through the same client and the same per-exchange timeout; the
/// body is read (at most `MAX_BODY`, 256 KiB) before the answer is handed over. A `rateLimited`
/// problem becomes [`RateLimitedAnswer`], so that its `Retry-After` is kept.
impl instant_acme::HttpClient for AcmeHttp {
    fn request(&self, req: hyper::Request<instant_acme::BodyWrapper<Bytes>>) -> InstantAcmeFuture {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let req = hyper::Request::from_parts(parts, Full::new(body));
            let exchange = async {
                let rsp = this
                    .client
                    .request(req)
                    .await
                    .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
                let (parts, body) = rsp.into_parts();
                let body = http_body_util::Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(instant_acme::Error::Other)?
                    .to_bytes();
                let retry = parts
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok());
                if let Some(r) = rate_limited(parts.status.as_u16(), retry, &body) {
                    return Err(instant_acme::Error::Other(Box::new(r)));
                }
                Ok(instant_acme::BytesResponse {
                    parts,
                    body: Box::new(body),
                })
            };
            tokio::time::timeout(this.timeout, exchange)
                .await
                .map_err(|_| instant_acme::Error::Other(Box::new(NoAnswer(this.timeout))))?
        })
    }
}

/// An answer from the CA.
#[derive(Debug)]
pub struct AcmeResponse {
    /// HTTP status.
    pub status: u16,
    /// `Location`, for created resources.
    pub location: Option<String>,
    nonce: Option<String>,
    content_type: String,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: Vec<u8>,
}

impl AcmeResponse {
    /// The body as a JSON object.
    pub fn json(&self) -> Result<Value, IssueError> {
        let v: Value = serde_json::from_slice(&self.body)
            .map_err(|e| protocol(format!("answer is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(protocol("answer is not a JSON object"));
        }
        Ok(v)
    }
}

/// The directory fields that instant-acme does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryExt {
    /// `newNonce`.
    pub new_nonce: String,
    /// `newOrder`.
    pub new_order: String,
    /// `newAuthz`, if the CA offers pre-authorisation (RFC 8555 §7.4.1).
    pub new_authz: Option<String>,
    /// `meta.subdomainAuthAllowed` (RFC 9444 §4.4).
    pub subdomain_auth_allowed: bool,
}

impl DirectoryExt {
    /// Reads the fields from a directory object.
    pub fn from_json(v: &Value) -> Result<Self, IssueError> {
        let url = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            new_nonce: url("newNonce").ok_or_else(|| protocol("directory has no newNonce"))?,
            new_order: url("newOrder").ok_or_else(|| protocol("directory has no newOrder"))?,
            new_authz: url("newAuthz"),
            subdomain_auth_allowed: v
                .pointer("/meta/subdomainAuthAllowed")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// Signs and sends POSTs with the account key.
pub struct JwsClient {
    http: AcmeHttp,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    new_nonce: String,
    nonce: Mutex<Option<String>>,
}

impl std::fmt::Debug for JwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwsClient")
            .field("kid", &self.kid)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl JwsClient {
    /// `pkcs8` is the account's P-256 key (PKCS#8 DER), `kid` its account URL.
    pub fn new(
        http: AcmeHttp,
        pkcs8: &[u8],
        kid: String,
        new_nonce: String,
    ) -> Result<Self, IssueError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| protocol("the ACME account key is not a P-256 PKCS#8 key"))?;
        Ok(Self {
            http,
            key,
            rng,
            kid,
            new_nonce,
            nonce: Mutex::new(None),
        })
    }

    /// The account's public key as a JWK (RFC 7518 §6.2.1), members in lexicographic order
    /// as the thumbprint wants them (RFC 7638 §3).
    fn jwk(&self) -> Value {
        use ring::signature::KeyPair as _;
        // Uncompressed point: 0x04 ‖ x ‖ y, 32 bytes each for P-256.
        let point = self.key.public_key().as_ref();
        let coords = point.get(1..).unwrap_or_default();
        let (x, y) = coords.split_at(coords.len() / 2);
        json!({"crv": "P-256", "kty": "EC", "x": B64.encode(x), "y": B64.encode(y)})
    }

    fn take_saved_nonce(&self) -> Option<String> {
        self.nonce.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn save_nonce(&self, n: Option<String>) {
        if let Some(n) = n {
            *self.nonce.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
        }
    }

    async fn fresh_nonce(&self) -> Result<String, IssueError> {
        if let Some(n) = self.take_saved_nonce() {
            return Ok(n);
        }
        let req = hyper::Request::head(&self.new_nonce)
            .body(Full::new(Bytes::new()))
            .map_err(|e| protocol(format!("bad newNonce URL: {e}")))?;
        let rsp = self.http.exchange(req).await?;
        rsp.nonce
            .ok_or_else(|| protocol("newNonce answered without Replay-Nonce"))
    }

    /// The flattened JWS body for `url` (RFC 8555 §6.2); `payload` `None` is POST-as-GET.
    pub fn sign(
        &self,
        url: &str,
        nonce: &str,
        payload: Option<&Value>,
    ) -> Result<Vec<u8>, IssueError> {
        // Without a kid (newAccount, RFC 8555 §6.2) the header carries the public key.
        let protected = if self.kid.is_empty() {
            json!({"alg": "ES256", "jwk": self.jwk(), "nonce": nonce, "url": url})
        } else {
            json!({"alg": "ES256", "kid": self.kid, "nonce": nonce, "url": url})
        };
        let protected = B64.encode(protected.to_string());
        let payload = match payload {
            Some(p) => B64.encode(p.to_string()),
            None => String::new(),
        };
        let input = format!("{protected}.{payload}");
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| protocol("signing with the account key failed"))?;
        let body = json!({
            "protected": protected,
            "payload": payload,
            "signature": B64.encode(sig.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }

    /// POSTs `payload` (or POST-as-GET) to `url`. A problem document becomes a typed error.
    pub async fn post(
        &self,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<AcmeResponse, IssueError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let nonce = self.fresh_nonce().await?;
            let body = self.sign(url, &nonce, payload)?;
            let req = hyper::Request::post(url)
                .header("content-type", "application/jose+json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| protocol(format!("bad URL {url:?}: {e}")))?;
            let rsp = self.http.exchange(req).await?;
            self.save_nonce(rsp.nonce.clone());
            if rsp.status < 400 {
                return Ok(rsp);
            }
            let err = problem_of(&rsp);
            if matches!(&err, IssueError::CaUnavailable { detail, .. } if detail.starts_with("BadNonce"))
                && attempt < 3
            {
                continue;
            }
            return Err(err);
        }
    }
}

/// Creates the account of a given key (RFC 8555 §7.3): `newAccount` signed with the key
/// itself (`jwk`), with the contacts and, when the CA requires it, the external account
/// binding (§7.3.4: a JWS of the account's JWK, HS256 with the EAB key). instant-acme creates
/// accounts of given keys only without contacts or EAB. Returns the account URL (`kid`).
pub async fn new_account(
    http: AcmeHttp,
    directory_url: &str,
    pkcs8: &[u8],
    contact: &[String],
    eab: Option<(&str, &[u8])>,
) -> Result<String, IssueError> {
    let dir = http.get_json(directory_url).await?;
    let url = |k: &str| {
        dir.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| protocol(format!("directory has no {k}")))
    };
    let (new_nonce, new_account) = (url("newNonce")?, url("newAccount")?);
    let client = JwsClient::new(http, pkcs8, String::new(), new_nonce)?;
    let mut payload = json!({"termsOfServiceAgreed": true, "contact": contact});
    if let Some((kid, hmac_key)) = eab {
        let protected =
            B64.encode(json!({"alg": "HS256", "kid": kid, "url": new_account}).to_string());
        let jwk = B64.encode(client.jwk().to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hmac_key);
        let tag = ring::hmac::sign(&key, format!("{protected}.{jwk}").as_bytes());
        payload["externalAccountBinding"] = json!({
            "protected": protected,
            "payload": jwk,
            "signature": B64.encode(tag.as_ref()),
        });
    }
    let rsp = client.post(&new_account, Some(&payload)).await?;
    rsp.location
        .ok_or_else(|| protocol("newAccount answered without Location"))
}

/// The typed error for a failed answer: its problem document (RFC 8555 §6.7), or the status.
fn problem_of(rsp: &AcmeResponse) -> IssueError {
    let is_problem = rsp.content_type.starts_with("application/problem+json");
    let doc: Option<Value> = serde_json::from_slice(&rsp.body).ok();
    match doc {
        Some(doc) if is_problem || doc.get("type").is_some() => {
            let kind = ProblemType::parse(doc.get("type").and_then(Value::as_str));
            let detail = bounded(doc.get("detail").and_then(Value::as_str).unwrap_or(""));
            let mut e = problem_error(kind, detail, String::new());
            if let (
                IssueError::CaUnavailable { retry_after, .. }
                | IssueError::CaRateLimited { retry_after, .. },
                Some(r),
            ) = (&mut e, rsp.retry_after)
            {
                *retry_after = Some(r);
            }
            e
        }
        _ if rsp.status >= 500 => unavailable(format!("ACME CA answered HTTP {}", rsp.status)),
        _ => protocol(format!(
            "ACME CA answered HTTP {} without a problem document",
            rsp.status
        )),
    }
}

/// RFC 8555 §8.4: the DNS-01 TXT value, base64url(SHA-256(token "." thumbprint)).
pub fn dns01_value(token: &str, thumbprint: &str) -> String {
    use sha2::Digest;
    B64.encode(sha2::Sha256::digest(
        format!("{token}.{thumbprint}").as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns01_value_is_the_rfc8555_digest() {
        // base64url(SHA-256("a.b")), computed with `printf a.b | openssl dgst -sha256 -binary | basenc --base64url`.
        assert_eq!(
            dns01_value("a", "b"),
            "LnM23I66h-9HLfVow1SCq_JXXcPl6sDFxiuP-urCyTQ"
        );
    }

    /// RFC 9110 §10.2.3: delay-seconds or an HTTP-date (§5.6.7, the IMF-fixdate example).
    #[test]
    fn retry_after_is_seconds_or_a_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        let now = 784_111_777 - 90;
        assert_eq!(retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(90))
        );
        // A date already past: come back now.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 1000),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "soon",
            "-5",
            "5s",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sün, 06 Nov 1994 08:49:37 GMT",
            "99999999999999999999999",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    /// RFC 8555 §6.7: only a failed answer of type rateLimited is one.
    #[test]
    fn rate_limited_answers_are_recognised() {
        let doc = br#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders","status":429}"#;
        let r = rate_limited(429, Some("7"), doc).expect("rateLimited");
        assert_eq!(r.detail, "too many new orders");
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        let r = rate_limited(429, Some("soon"), doc).expect("rateLimited");
        assert_eq!(r.retry_after, None);
        assert!(rate_limited(200, Some("7"), doc).is_none());
        let other = br#"{"type":"urn:ietf:params:acme:error:serverInternal"}"#;
        assert!(rate_limited(500, Some("7"), other).is_none());
        assert!(rate_limited(429, None, b"not json").is_none());
    }

    #[test]
    fn directory_fields() {
        let d = DirectoryExt::from_json(&json!({
            "newNonce": "https://ca/nonce", "newOrder": "https://ca/order",
            "newAuthz": "https://ca/authz", "meta": {"subdomainAuthAllowed": true}
        }))
        .unwrap();
        assert_eq!(d.new_authz.as_deref(), Some("https://ca/authz"));
        assert!(d.subdomain_auth_allowed);
        let pebble = DirectoryExt::from_json(&json!({
            "newNonce": "n", "newOrder": "o", "meta": {"externalAccountRequired": false}
        }))
        .unwrap();
        assert_eq!(pebble.new_authz, None);
        assert!(!pebble.subdomain_auth_allowed);
        assert!(matches!(
            DirectoryExt::from_json(&json!({"newOrder": "o"})),
            Err(IssueError::CaProtocol(_))
        ));
    }
}
