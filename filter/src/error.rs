//! The filter's one error enum and its one exhaustive map to an EST HTTP answer.

use estuary_proto::base64::Base64Error;
use estuary_proto::csr::CsrError;
use estuary_proto::policy::PolicyError;

use crate::reply::Reply;
use crate::xfcc::XfccError;
use estuary_proto::identity::IdentityError;

/// Seconds a client is told to wait when the control plane cannot be reached.
pub use estuary_proto::internal_api::DEFAULT_RETRY_AFTER_S;

/// Everything the edge can refuse a request for.
///
/// Each variant maps to exactly one HTTP status in [`EdgeError::reply`]; the `Display` text is the
/// `text/plain` body, so it says plainly what was wrong and never carries internal detail or secrets.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A path under `/.well-known/est/` that names no EST operation.
    #[error("no such EST operation: {0}")]
    UnknownOperation(String),
    /// A path under `/.well-known/est/` that is not of the form `[label/]operation`.
    #[error("not an EST path: expected /.well-known/est/[label/]operation")]
    MalformedEstPath,
    /// An EST label (RFC 7030 §3.2.2) that this server does not serve.
    #[error("unknown EST label: {0}")]
    UnknownLabel(String),
    /// An optional EST operation this server does not offer.
    #[error("{0} is not offered by this EST server")]
    NotImplemented(&'static str),
    /// The HTTP method does not fit the operation.
    #[error("method not allowed for {op}; use {allow}")]
    MethodNotAllowed {
        /// The EST operation.
        op: &'static str,
        /// The one method that is allowed.
        allow: &'static str,
    },
    /// The request's Content-Type is not `application/pkcs10` (RFC 7030 §4.2.1, §4.4.1).
    #[error("Content-Type must be application/pkcs10")]
    UnsupportedMediaType,
    /// The request body is larger than the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// A POST without a body.
    #[error("request body is empty: expected a base64-encoded PKCS#10 CSR")]
    EmptyBody,
    /// The body is neither valid base64 (RFC 7030 §4.2.1 uses base64 transfer encoding) nor
    /// one PEM `CERTIFICATE REQUEST` block (RFC 8951 leniency).
    #[error("request body is not valid base64, nor a PEM CSR: {0}")]
    BadBase64(#[source] Base64Error),
    /// The body decodes but is not a CSR whose self-signature verifies.
    #[error("bad CSR: {0}")]
    BadCsr(#[source] CsrError),
    /// The CSR is well-formed but asks for something this device may not have.
    #[error("CSR refused: {0}")]
    Policy(#[source] PolicyError),
    /// No TLS client certificate was presented.
    #[error("a TLS client certificate is required for this operation")]
    NoClientCertificate,
    /// The client certificate passed on by Envoy could not be read.
    #[error("the TLS client certificate could not be read: {0}")]
    UnreadableClientCertificate(#[source] XfccError),
    /// The `x-forwarded-client-cert` certificate is not the connection's peer certificate
    /// (its SHA-256 differs from `connection.sha256_peer_certificate_digest`, or Envoy gave none).
    #[error("the forwarded client certificate is not the one this TLS connection presented")]
    ClientCertificateNotBound,
    /// The client certificate does not authenticate a device for this operation: unknown
    /// issuer, wrong kind, serial outside its manufacturer's pattern, …
    #[error("{0}")]
    Identity(#[source] IdentityError),
    /// An EST or BRSKI request whose `:authority` names a host this server is not configured for.
    #[error("misdirected request: EST/BRSKI is not served here for the host in :authority")]
    MisdirectedRequest,
    /// An EST request to a BRSKI cloud registrar.
    #[error("this is a BRSKI cloud registrar, not an EST server: enrol with the registrar or EST server that your redirect or voucher names")]
    NotAnEstServer,
    /// The control plane could not be reached or did not answer in time.
    #[error("control plane unavailable, retry later")]
    ControlPlaneUnavailable,
}

impl EdgeError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u32 {
        match self {
            // RFC 7030 §3.2.2: an unknown label or operation is simply a resource that does not exist.
            EdgeError::UnknownOperation(_)
            | EdgeError::MalformedEstPath
            | EdgeError::UnknownLabel(_) => 404,
            // draft-ietf-anima-brski-cloud: the cloud registrar answers csrattrs (and every other
            // EST request) with 404; the pledge enrols where the redirect or voucher points.
            EdgeError::NotAnEstServer => 404,
            // RFC 9110 §15.5.20: the request reached a server that does not serve its authority.
            EdgeError::MisdirectedRequest => 421,
            // RFC 7030 §4.3 (fullcmc) is optional.
            EdgeError::NotImplemented(_) => 501,
            // RFC 9110 §15.5.6: 405 carries Allow.
            EdgeError::MethodNotAllowed { .. } => 405,
            EdgeError::UnsupportedMediaType => 415,
            EdgeError::PayloadTooLarge { .. } => 413,
            // RFC 7030 §4.2.3: a malformed request is a 4xx, 400 for a body we cannot use.
            EdgeError::EmptyBody | EdgeError::BadBase64(_) | EdgeError::BadCsr(_) => 400,
            // RFC 7030 §4.4.1.1, §4.4.1.2: asked to encrypt the key to a key this server does
            // not hold, the server "terminates the request with an error": the request asks
            // for something this server cannot do, and says why.
            EdgeError::Policy(PolicyError::KeyEncryptionNotSupported { .. }) => 400,
            // The request is understood and authenticated, but not allowed.
            EdgeError::Policy(_) | EdgeError::Identity(_) => 403,
            // RFC 7030 §3.3.2: the client authenticates with TLS; without it, 401.
            EdgeError::NoClientCertificate
            | EdgeError::UnreadableClientCertificate(_)
            | EdgeError::ClientCertificateNotBound => 401,
            // RFC 7030 §4.2.3: 503 with Retry-After when the server cannot answer now.
            EdgeError::ControlPlaneUnavailable => 503,
        }
    }

    /// The complete local answer: status, headers, `text/plain` body.
    pub fn reply(&self) -> Reply {
        let mut reply = Reply::text(self.status(), &self.to_string());
        match self {
            EdgeError::MethodNotAllowed { allow, .. } => {
                reply.headers.push(("allow", (*allow).to_string()));
            }
            EdgeError::ControlPlaneUnavailable => {
                reply
                    .headers
                    .push(("retry-after", DEFAULT_RETRY_AFTER_S.to_string()));
            }
            _ => {}
        }
        reply
    }
}
