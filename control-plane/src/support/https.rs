//! The one HTTPS client builder: HTTP/1.1 over rustls (ring), `https` URLs only, trusting either
//! the roots in a PEM file or the platform's.
use std::path::Path;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// An HTTPS client sending buffered bodies.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Whom the client trusts.
#[derive(Clone, Copy, Debug)]
pub enum Roots<'a> {
    /// Only the certificates in this PEM file.
    PemFile(&'a Path),
    /// The platform's trust store.
    Platform,
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The roots file is unreadable or holds a bad certificate.
    #[error("{}: {detail}", .path.display())]
    Roots {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The platform's roots could not be loaded.
    #[error("the platform's TLS roots: {0}")]
    Platform(String),
}

/// Builds the client.
pub fn client(roots: Roots<'_>) -> Result<HttpsClient, HttpsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match roots {
        Roots::PemFile(path) => {
            let bad = |detail: String| HttpsError::Roots {
                path: path.to_path_buf(),
                detail,
            };
            let mut store = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                let c = c.map_err(|e| bad(e.to_string()))?;
                store.add(c).map_err(|e| bad(e.to_string()))?;
            }
            builder.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(store)
                    .with_no_client_auth(),
            )
        }
        Roots::Platform => builder
            .try_with_platform_verifier()
            .map_err(|e| HttpsError::Platform(e.to_string()))?,
    };
    let https = builder.https_only().enable_http1().build();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}
