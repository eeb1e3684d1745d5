//! How the BRSKI commands decide whether to trust a TLS server (rustls verifiers, no I/O):
//!
//! - [`Recording`] keeps the server's end-entity certificate (it becomes the voucher request's
//!   `proximity-registrar-cert`) and whether it validates against a set of trust anchors with
//!   the name check of RFC 9525. With no anchors it is RFC 8995 §5.1 provisional TLS; with the
//!   implicit trust anchors of draft-ietf-anima-brski-cloud it either requires them (the cloud
//!   registrar) or only records the verdict (a registrar the cloud redirected to).
//! - [`Pinned`] accepts a server authenticated by a voucher's `pinned-domain-cert` (RFC 8366
//!   §5.3, RFC 8995 §5.6.2): its certificate is the pinned one, or chains to it alone as the
//!   root with the URL's host as DNS-ID or IP address.
//!
//! Both still verify the TLS handshake signature with the server's key.
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The crypto provider every pledge connection uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What [`Recording`] does when the server does not validate against its anchors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorPolicy {
    /// Refuse the handshake (the cloud registrar: never provisional).
    Required,
    /// Accept it for this connection only and record that it is unauthenticated.
    Recorded,
}

/// The server certificate a [`Recording`] verifier saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The end-entity certificate (DER).
    pub cert: Vec<u8>,
    /// Whether it validated against the anchors, name included.
    pub authenticated: bool,
    /// Why it did not, if it did not.
    pub why_not: Option<String>,
}

/// Records the server certificate and the anchors' verdict; see the module documentation.
/// Use one per connection.
#[derive(Debug)]
pub struct Recording {
    anchors: Option<Arc<WebPkiServerVerifier>>,
    policy: AnchorPolicy,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Seen>>,
}

impl Recording {
    /// RFC 8995 §5.1 provisional TLS: any certificate, recorded as unauthenticated.
    pub fn provisional(provider: Arc<CryptoProvider>) -> Arc<Recording> {
        Arc::new(Recording {
            anchors: None,
            policy: AnchorPolicy::Recorded,
            provider,
            seen: Mutex::new(None),
        })
    }

    /// Checks against `anchors` (non-empty) with `policy`.
    pub fn with_anchors(
        anchors: Arc<RootCertStore>,
        policy: AnchorPolicy,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Recording>, rustls::Error> {
        let v = WebPkiServerVerifier::builder_with_provider(anchors, Arc::clone(&provider))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Arc::new(Recording {
            anchors: Some(v),
            policy,
            provider,
            seen: Mutex::new(None),
        }))
    }

    /// The certificate of the last handshake, if one got that far.
    pub fn seen(&self) -> Option<Seen> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.anchors {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::General("provisional TLS".into())),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Seen {
                cert: end_entity.to_vec(),
                authenticated: verdict.is_ok(),
                why_not: verdict.as_ref().err().map(|e| e.to_string()),
            });
        }
        match (self.policy, verdict) {
            (AnchorPolicy::Required, Err(e)) => Err(e),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

/// Trusts what a voucher's `pinned-domain-cert` authenticates; see the module documentation.
#[derive(Debug)]
pub struct Pinned {
    pinned: Vec<u8>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    rejected: Mutex<Option<String>>,
}

impl Pinned {
    /// A verifier for `pinned` (DER). A certificate webpki cannot use as a trust anchor can
    /// still match as the server's own certificate.
    pub fn new(pinned: &[u8], provider: Arc<CryptoProvider>) -> Arc<Pinned> {
        let mut roots = RootCertStore::empty();
        let chain = roots
            .add(CertificateDer::from(pinned.to_vec()))
            .ok()
            .and_then(|()| {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .ok()
            });
        Arc::new(Pinned {
            pinned: pinned.to_vec(),
            chain,
            provider,
            rejected: Mutex::new(None),
        })
    }

    /// Why the last server certificate was refused, if it was.
    pub fn rejection(&self) -> Option<String> {
        self.rejected.lock().ok().and_then(|r| r.clone())
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_slice() {
            return Ok(ServerCertVerified::assertion());
        }
        let verdict = match &self.chain {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        if let (Err(e), Ok(mut r)) = (&verdict, self.rejected.lock()) {
            *r = Some(e.to_string());
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

fn tls12_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca(cn: &str) -> (Vec<u8>, Issuer<'static, KeyPair>) {
        let kp = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let c = p.self_signed(&kp).expect("self-signed");
        (c.der().to_vec(), Issuer::new(p, kp))
    }

    fn server(names: &[&str], by: &Issuer<'static, KeyPair>) -> Vec<u8> {
        let kp = KeyPair::generate().expect("key");
        let p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.signed_by(&kp, by).expect("signed").der().to_vec()
    }

    fn name(s: &str) -> ServerName<'static> {
        ServerName::try_from(s.to_owned()).expect("name")
    }

    fn check(v: &dyn ServerCertVerifier, ee: &[u8], host: &str) -> bool {
        v.verify_server_cert(
            &CertificateDer::from(ee.to_vec()),
            &[],
            &name(host),
            &[],
            UnixTime::now(),
        )
        .is_ok()
    }

    /// The pinned-domain-cert rule (RFC 8995 §5.6.2, RFC 9525 name check): the pinned
    /// certificate itself, or a chain to it with the right name; nothing else.
    #[test]
    fn pinned_accepts_the_pin_or_a_chain_to_it() {
        let (domain_ca, dca) = ca("owner domain CA");
        let est = server(&["est.owner.example", "192.0.2.7"], &dca);
        let v = Pinned::new(&domain_ca, provider());
        assert!(check(v.as_ref(), &est, "est.owner.example"));
        assert!(check(v.as_ref(), &est, "192.0.2.7"));
        assert!(v.rejection().is_none());
        // Chains to the pin, but the name is not the URL's host.
        assert!(!check(v.as_ref(), &est, "other.example"));
        assert!(v.rejection().is_some());
        // Neither the pin nor issued under it.
        let (_, other_ca) = ca("someone else");
        let stranger = server(&["est.owner.example"], &other_ca);
        assert!(!check(v.as_ref(), &stranger, "est.owner.example"));
        // The pin is the server's own certificate: accepted whatever the name.
        let v = Pinned::new(&est, provider());
        assert!(check(v.as_ref(), &est, "anything.example"));
        assert!(!check(v.as_ref(), &stranger, "est.owner.example"));
        // A pin webpki cannot parse still matches byte for byte, and only so.
        let v = Pinned::new(b"not a certificate", provider());
        assert!(!check(v.as_ref(), &est, "est.owner.example"));
    }

    /// draft-ietf-anima-brski-cloud §3.1: the cloud registrar must validate against the
    /// implicit trust anchors; a redirect target is only recorded as (un)authenticated.
    #[test]
    fn recording_required_recorded_and_provisional() {
        let (anchor, cloud_ca) = ca("manufacturer cloud CA");
        let cloud = server(&["cloud.example"], &cloud_ca);
        let (_, other_ca) = ca("owner CA");
        let owner = server(&["registrar.owner.example"], &other_ca);
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(anchor)).expect("anchor");
        let roots = Arc::new(roots);

        let v = Recording::with_anchors(Arc::clone(&roots), AnchorPolicy::Required, provider())
            .expect("verifier");
        assert!(check(v.as_ref(), &cloud, "cloud.example"));
        assert!(v.seen().is_some_and(|s| s.authenticated && s.cert == cloud));
        assert!(!check(v.as_ref(), &cloud, "evil.example"));
        assert!(!check(v.as_ref(), &owner, "registrar.owner.example"));
        assert!(v
            .seen()
            .is_some_and(|s| !s.authenticated && s.why_not.is_some()));

        let v = Recording::with_anchors(roots, AnchorPolicy::Recorded, provider()).expect("v");
        assert!(check(v.as_ref(), &owner, "registrar.owner.example"));
        assert!(v
            .seen()
            .is_some_and(|s| !s.authenticated && s.cert == owner));
        assert!(check(v.as_ref(), &cloud, "cloud.example"));
        assert!(v.seen().is_some_and(|s| s.authenticated));

        let v = Recording::provisional(provider());
        assert!(check(v.as_ref(), &cloud, "cloud.example"));
        assert!(v
            .seen()
            .is_some_and(|s| !s.authenticated && s.cert == cloud));
    }
}
