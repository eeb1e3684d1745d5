//! The one error type of the pledge CLI, and its exit codes.
//!
//! Messages never carry key material; server reasons are sanitised (control characters
//! dropped, length bounded) before they are shown.
use std::path::PathBuf;

use estuary_proto::base64::Base64Error;
use estuary_proto::cert::CertError;
use estuary_proto::csrattrs::CsrAttrsError;
use estuary_proto::pem::PemError;
use estuary_proto::pkcs7::Pkcs7Error;

/// The EST exchange an error belongs to, as shown to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// `GET /cacerts` (RFC 7030 §4.1).
    CaCerts,
    /// `GET /csrattrs` (RFC 7030 §4.5).
    CsrAttrs,
    /// `POST /simpleenroll` (RFC 7030 §4.2.1).
    Enroll,
    /// `POST /simplereenroll` (RFC 7030 §4.2.2).
    Reenroll,
    /// `POST /serverkeygen` (RFC 7030 §4.4).
    ServerKeyGen,
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exchange::CaCerts => "cacerts request",
            Exchange::CsrAttrs => "csrattrs request",
            Exchange::Enroll => "enrolment",
            Exchange::Reenroll => "re-enrolment",
            Exchange::ServerKeyGen => "server-side key generation",
        })
    }
}

/// Everything that can go wrong in the pledge CLI.
#[derive(Debug, thiserror::Error)]
pub enum PledgeError {
    /// A local file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// What the file is for (e.g. "--server-ca").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A local PEM file holds nothing usable.
    #[error("{what} {path}: {reason}")]
    BadPemFile {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong (no key material is quoted).
        reason: String,
    },
    /// An output file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The EST URL is unusable.
    #[error("invalid EST URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// The `--label` is not an RFC 7030 §3.2.2 label.
    #[error("invalid EST label {0:?}: use 1 to 64 characters of A-Z a-z 0-9 - _")]
    BadLabel(String),
    /// The TLS client configuration could not be built (bad key, key/cert mismatch …).
    #[error("TLS client setup failed: {0}")]
    TlsSetup(rustls::Error),
    /// TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server sent a TLS alert that means it refused our client certificate.
    #[error("the server refused our client certificate (TLS alert {alert:?})")]
    ClientCertRefused {
        /// The alert received.
        alert: rustls::AlertDescription,
    },
    /// The server requires a client certificate and we sent none.
    #[error("the server requires a client certificate (TLS alert CertificateRequired); pass --cert and --key")]
    ClientCertRequired,
    /// The server's certificate did not verify against `--server-ca`.
    #[error("the server's certificate did not verify against --server-ca: {0}")]
    ServerCertInvalid(rustls::CertificateError),
    /// Any other TLS failure.
    #[error("TLS failed: {0}")]
    Tls(rustls::Error),
    /// The connection broke right after the handshake; with TLS 1.3 this is how a server
    /// that drops a refused client certificate without an alert looks.
    #[error("{exchange}: connection closed by the server during the exchange ({detail}); the server may have refused our client certificate")]
    ConnectionClosed {
        /// The exchange.
        exchange: Exchange,
        /// The transport's words.
        detail: String,
    },
    /// An HTTP-level failure (malformed response, …).
    #[error("{exchange}: HTTP exchange failed: {source}")]
    Http {
        /// The exchange.
        exchange: Exchange,
        /// hyper's error.
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("{exchange}: no answer within {secs} s")]
    Timeout {
        /// The exchange.
        exchange: Exchange,
        /// The limit.
        secs: u64,
    },
    /// The answer body is larger than we accept.
    #[error("{exchange}: answer body larger than {limit} bytes")]
    BodyTooLarge {
        /// The exchange.
        exchange: Exchange,
        /// The limit in bytes.
        limit: usize,
    },
    /// A 4xx answer: the server refused the request (RFC 7030 §4.2.3: text reason).
    #[error("{exchange} refused ({status}): {reason}")]
    Refused {
        /// The exchange.
        exchange: Exchange,
        /// HTTP status.
        status: u16,
        /// The server's reason (sanitised).
        reason: String,
    },
    /// A 5xx answer.
    #[error("{exchange} failed, server error ({status}): {reason}")]
    ServerError {
        /// The exchange.
        exchange: Exchange,
        /// HTTP status.
        status: u16,
        /// The server's reason (sanitised).
        reason: String,
    },
    /// A status EST does not use for this exchange (1xx, 3xx, other 2xx).
    #[error("{exchange}: unexpected HTTP status {status}")]
    UnexpectedStatus {
        /// The exchange.
        exchange: Exchange,
        /// HTTP status.
        status: u16,
    },
    /// A 200 answer with the wrong content type.
    #[error("{exchange}: answer has content type {found:?}, expected {expected}")]
    ContentType {
        /// The exchange.
        exchange: Exchange,
        /// The content type received (or empty).
        found: String,
        /// The content type RFC 7030 prescribes.
        expected: &'static str,
    },
    /// The body is not base64.
    #[error("{exchange}: answer body is not base64: {source}")]
    Base64 {
        /// The exchange.
        exchange: Exchange,
        /// Why.
        source: Base64Error,
    },
    /// The body is not a certs-only PKCS#7.
    #[error("{exchange}: answer is not a certs-only PKCS#7: {source}")]
    Pkcs7 {
        /// The exchange.
        exchange: Exchange,
        /// Why.
        source: Pkcs7Error,
    },
    /// A serverkeygen 200 that is not the multipart answer of RFC 7030 §4.4.2.
    #[error("{exchange}: answer is not a serverkeygen multipart/mixed answer: {source}")]
    Multipart {
        /// The exchange.
        exchange: Exchange,
        /// Why (names no key material).
        source: estuary_proto::serverkeygen::MultipartError,
    },
    /// The private key the server generated cannot be read.
    #[error("{exchange}: the server's private key (PKCS#8) cannot be used: {reason}")]
    ServerKey {
        /// The exchange.
        exchange: Exchange,
        /// Why (names no key material).
        reason: String,
    },
    /// The csrattrs body is not a CsrAttrs.
    #[error("csrattrs answer is not a CsrAttrs: {0}")]
    CsrAttrs(CsrAttrsError),
    /// A certificate cannot be read.
    #[error("{origin}: certificate {index} cannot be read: {source}")]
    Cert {
        /// Where it came from.
        origin: String,
        /// Its index there.
        index: usize,
        /// Why.
        source: CertError,
    },
    /// A PEM certificate file cannot be read.
    #[error("{what} {path}: {source}")]
    PemCerts {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: PemError,
    },
    /// No certificate in the answer holds the key we generated.
    #[error("{exchange}: no certificate in the answer holds our public key")]
    LeafKeyMismatch {
        /// The exchange.
        exchange: Exchange,
    },
    /// The issued certificate's names are not the ones we asked for.
    #[error("{exchange}: the issued certificate names {found:?}, we asked for {expected:?}")]
    LeafNameMismatch {
        /// The exchange.
        exchange: Exchange,
        /// dNSNames in the certificate.
        found: Vec<String>,
        /// dNSNames in our CSR.
        expected: Vec<String>,
    },
    /// The re-enrolment certificate has a different subject.
    #[error("re-enrolment: the issued certificate's subject differs from the current one")]
    SubjectChanged,
    /// csrattrs names no DNS name and none was given.
    #[error("the server names no DNS name in /csrattrs; pass --dns-name NAME")]
    NoNameRequested,
    /// A DNS name is not an IA5String.
    #[error("DNS name {0:?} is not ASCII")]
    BadDnsName(String),
    /// The server kept answering 202 past `--max-wait`.
    #[error("{exchange}: still pending after {waited} s (--max-wait {max_wait} s)")]
    StillPending {
        /// The exchange.
        exchange: Exchange,
        /// Seconds waited so far.
        waited: u64,
        /// The limit.
        max_wait: u64,
    },
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    KeyGen(String),
    /// The current certificate's key type cannot be generated here.
    #[error("the current certificate's key type is not one of p256, p384, ed25519, rsa2048; pass --key-type")]
    UnknownKeyType,
    /// DER encoding of the CSR failed.
    #[error("CSR encoding failed: {0}")]
    CsrEncode(der::Error),
    /// Signing the CSR failed.
    #[error("signing the CSR failed: {0}")]
    CsrSign(rcgen::Error),
}

impl PledgeError {
    /// The process exit code for this error: 3 the server refused (4xx), 4 transport or TLS,
    /// 5 still pending at `--max-wait`, 1 anything else. (clap uses 2 for usage errors.)
    pub fn exit_code(&self) -> u8 {
        match self {
            PledgeError::Refused { .. } => 3,
            PledgeError::Connect { .. }
            | PledgeError::ClientCertRefused { .. }
            | PledgeError::ClientCertRequired
            | PledgeError::ServerCertInvalid(_)
            | PledgeError::Tls(_)
            | PledgeError::ConnectionClosed { .. }
            | PledgeError::Timeout { .. } => 4,
            PledgeError::StillPending { .. } => 5,
            _ => 1,
        }
    }
}
