//! Who is asking: the TLS client certificate Envoy verified, bound to the connection, judged by
//! who issued it ([`estuary_proto::identity`]).
//!
//! Envoy verifies the chain during the TLS handshake and, with `SANITIZE_SET`, is the only writer
//! of `x-forwarded-client-cert`. The filter still checks that the XFCC `Cert` IS the
//! connection's peer certificate: its SHA-256 must equal Envoy's
//! `connection.sha256_peer_certificate_digest`, otherwise the request gets 401. A listener whose
//! `forward_client_cert_details` lets a client's own XFCC through thus fails closed.
//!
//! Then [`estuary_proto::identity::authenticate`] decides, from the leaf and the XFCC `Chain`,
//! whether this is an LDevID (issued by the ACME CA), an IDevID (issued by a configured
//! manufacturer CA) or nobody.

use estuary_proto::csr::SignatureMemo;
use estuary_proto::identity::{self, Identity, Need, TrustPolicy, MAX_CHAIN_CERTS};
use sha2::{Digest, Sha256};

use crate::error::EdgeError;
use crate::xfcc::{self, XfccElement, XfccError};

/// The authenticated client: who it is, and the certificates to forward to the control plane
/// (which checks them again).
#[derive(Debug, Clone)]
pub struct Client {
    /// The device.
    pub identity: Identity,
    /// DER of the leaf certificate.
    pub leaf: Vec<u8>,
    /// DER of the other XFCC `Chain` certificates, at most [`MAX_CHAIN_CERTS`].
    pub chain: Vec<Vec<u8>>,
}

/// The leaf certificate (DER) from the Envoy-set XFCC header, bound to the connection: 401 for
/// no TLS client certificate, an unreadable one, or one that is not the connection's peer
/// certificate (`peer_sha256_hex`: Envoy's `connection.sha256_peer_certificate_digest`). The
/// header is parsed once; its last element (the one Envoy wrote) comes back for the `Chain`.
pub fn leaf_from_xfcc(
    mtls: bool,
    xfcc_header: Option<&[u8]>,
    peer_sha256_hex: Option<&[u8]>,
) -> Result<(Vec<u8>, XfccElement), EdgeError> {
    if !mtls {
        return Err(EdgeError::NoClientCertificate);
    }
    let Some(raw) = xfcc_header else {
        return Err(EdgeError::NoClientCertificate);
    };
    let header = std::str::from_utf8(raw)
        .map_err(|_| EdgeError::UnreadableClientCertificate(XfccError::HeaderNotUtf8))?;
    let element = xfcc::last_element(header)
        .map_err(EdgeError::UnreadableClientCertificate)?
        .ok_or(EdgeError::NoClientCertificate)?;
    let pem = xfcc::pem_of(&element, "Cert")
        .map_err(EdgeError::UnreadableClientCertificate)?
        .ok_or(EdgeError::NoClientCertificate)?;
    let der = estuary_proto::pem::decode_certs(&pem)
        .ok()
        .and_then(|d| d.into_iter().next())
        .ok_or(EdgeError::UnreadableClientCertificate(XfccError::BadPem))?;
    let digest = hex_lower(&Sha256::digest(&der));
    let bound = peer_sha256_hex
        .map(|p| p.trim_ascii())
        .is_some_and(|p| p.eq_ignore_ascii_case(digest.as_bytes()));
    if !bound {
        return Err(EdgeError::ClientCertificateNotBound);
    }
    Ok((der, element))
}

/// Decide who the client is, from `connection.mtls`, the XFCC header and the peer digest.
pub fn authenticate(
    mtls: bool,
    xfcc_header: Option<&[u8]>,
    peer_sha256_hex: Option<&[u8]>,
    need: Need,
    policy: &TrustPolicy,
) -> Result<Client, EdgeError> {
    authenticate_with_known(
        mtls,
        xfcc_header,
        peer_sha256_hex,
        need,
        policy,
        Vec::new,
        None,
    )
}

/// [`authenticate`]; when the issuer is unknown and the operation does not need an IDevID, once
/// more with the intermediates `known()` gives (those the control plane learned from the ACME
/// CA's issued chains: a device presenting its end-entity certificate alone after the CA moved
/// to a new intermediate). They only build the path: trust still ends in `acme_ca_pem`
/// ([`identity::authenticate_with_known`]). `known` is called only then. `memo` may vouch for
/// an issuer's signature on these exact certificates ([`identity::authenticate_memo`]).
pub fn authenticate_with_known(
    mtls: bool,
    xfcc_header: Option<&[u8]>,
    peer_sha256_hex: Option<&[u8]>,
    need: Need,
    policy: &TrustPolicy,
    known: impl FnOnce() -> Vec<Vec<u8>>,
    mut memo: Option<&mut dyn SignatureMemo>,
) -> Result<Client, EdgeError> {
    let (leaf, element) = leaf_from_xfcc(mtls, xfcc_header, peer_sha256_hex)?;
    let chain = chain_certs(&element, &leaf);
    let again: Option<&mut dyn SignatureMemo> = match memo.as_mut() {
        Some(m) => Some(&mut **m),
        None => None,
    };
    let first = identity::authenticate_memo(policy, &leaf, &chain, &[], need, again);
    let judged = match first {
        Err(identity::IdentityError::UnknownIssuer) if need != Need::IDevId => {
            identity::authenticate_memo(policy, &leaf, &chain, &known(), need, memo)
        }
        other => other,
    };
    let identity = judged.map_err(|e| match e {
        identity::IdentityError::Unreadable => {
            EdgeError::UnreadableClientCertificate(XfccError::BadCertificate)
        }
        other => EdgeError::Identity(other),
    })?;
    Ok(Client {
        identity,
        leaf,
        chain,
    })
}

/// The XFCC `Chain` certificates other than `leaf`, at most [`MAX_CHAIN_CERTS`]. A missing or
/// unreadable `Chain` means none: the leaf alone is then judged.
fn chain_certs(element: &XfccElement, leaf: &[u8]) -> Vec<Vec<u8>> {
    let Ok(Some(pem)) = xfcc::pem_of(element, "Chain") else {
        return Vec::new();
    };
    let Ok(ders) = estuary_proto::pem::decode_certs(&pem) else {
        return Vec::new();
    };
    ders.into_iter()
        .filter(|d| d.as_slice() != leaf)
        .take(MAX_CHAIN_CERTS)
        .collect()
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Base64 (no line breaks) of DER, for the one-line headers to the control plane.
pub fn b64_one_line(der: &[u8]) -> String {
    let mut b64 = estuary_proto::base64::encode(der);
    b64.retain(|c| !c.is_ascii_whitespace());
    b64
}

#[cfg(test)]
mod tests {
    // Tests: a panic here is a failed test.
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;
    use estuary_proto::identity::{Manufacturer, ManufacturerName, NamePrefix, SerialPattern};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };

    struct Ca {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = p.self_signed(&key).unwrap().der().to_vec();
        Ca {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    fn cert(ca: &Ca, sans: &[&str], serial: Option<&str>) -> (String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(s) = serial {
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 5]), s);
        }
        p.distinguished_name.push(DnType::CommonName, "device");
        let c = p.signed_by(&key, &ca.issuer).unwrap();
        (c.pem(), c.der().to_vec())
    }

    fn url_encode(pem: &str) -> String {
        let mut enc = String::new();
        for b in pem.bytes() {
            if b.is_ascii_alphanumeric() {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02x}"));
            }
        }
        enc
    }

    fn xfcc(pem: &str) -> Vec<u8> {
        let enc = url_encode(pem);
        format!("By=spiffe://x;Hash=00;Cert=\"{enc}\";Subject=\"CN=device\";URI=;DNS=").into_bytes()
    }

    fn digest(der: &[u8]) -> Vec<u8> {
        hex_lower(&Sha256::digest(der)).into_bytes()
    }

    struct World {
        mfr: Ca,
        acme: Ca,
        policy: TrustPolicy,
    }

    fn world() -> World {
        let mfr = ca("Manufacturer CA");
        let acme = ca("ACME CA");
        let policy = TrustPolicy {
            parent: "iot.example.test".parse().unwrap(),
            manufacturers: vec![Manufacturer {
                name: ManufacturerName::parse("dev").unwrap(),
                ca_der: mfr.der.clone(),
                serial_pattern: SerialPattern::any(),
                name_prefix: NamePrefix::default(),
            }],
            acme_issuers: vec![acme.der.clone()],
        };
        World { mfr, acme, policy }
    }

    #[test]
    fn idevid_and_ldevid_are_told_apart_by_issuer() {
        let w = world();
        let (ipem, ider) = cert(&w.mfr, &[], Some("ABC-1"));
        let (lpem, lder) = cert(&w.acme, &["abc-1.iot.example.test"], None);
        let c = authenticate(
            true,
            Some(&xfcc(&ipem)),
            Some(&digest(&ider)),
            Need::IDevId,
            &w.policy,
        )
        .unwrap();
        assert!(matches!(c.identity, Identity::IDevId { .. }));
        assert_eq!(c.identity.label().as_str(), "abc-1");
        assert_eq!(c.leaf, ider);
        let c = authenticate(
            true,
            Some(&xfcc(&lpem)),
            Some(&digest(&lder)),
            Need::LDevId,
            &w.policy,
        )
        .unwrap();
        assert!(matches!(c.identity, Identity::LDevId { .. }));
        assert_eq!(c.identity.label().as_str(), "abc-1");
    }

    #[test]
    fn the_xfcc_certificate_must_be_the_connection_peer_certificate() {
        let w = world();
        let (pem, der) = cert(&w.mfr, &[], Some("ABC-1"));
        let (_, other_der) = cert(&w.mfr, &[], Some("ABC-2"));
        let status = |r: Result<Client, EdgeError>| r.map(|_| 200).unwrap_or_else(|e| e.status());
        let h = xfcc(&pem);
        assert_eq!(
            status(authenticate(
                true,
                Some(&h),
                Some(&digest(&der)),
                Need::Any,
                &w.policy
            )),
            200
        );
        assert_eq!(
            status(authenticate(
                true,
                Some(&h),
                Some(&digest(&other_der)),
                Need::Any,
                &w.policy
            )),
            401
        );
        assert_eq!(
            status(authenticate(true, Some(&h), None, Need::Any, &w.policy)),
            401
        );
        assert_eq!(
            status(authenticate(
                true,
                Some(&h),
                Some(b""),
                Need::Any,
                &w.policy
            )),
            401
        );
        // Envoy writes lower-case hex; upper case is the same digest.
        let upper = String::from_utf8(digest(&der)).unwrap().to_uppercase();
        assert_eq!(
            status(authenticate(
                true,
                Some(&h),
                Some(upper.as_bytes()),
                Need::Any,
                &w.policy
            )),
            200
        );
    }

    #[test]
    fn wrong_issuer_or_kind_is_403_missing_is_401() {
        let w = world();
        let status = |r: Result<Client, EdgeError>| r.map(|_| 200).unwrap_or_else(|e| e.status());
        let go = |pem: &str, der: &[u8], need: Need| {
            status(authenticate(
                true,
                Some(&xfcc(pem)),
                Some(&digest(der)),
                need,
                &w.policy,
            ))
        };
        // The attack: a manufacturer certificate carrying a victim's name re-enrols. Refused.
        let (p, d) = cert(&w.mfr, &["victim.iot.example.test"], None);
        assert_eq!(go(&p, &d, Need::LDevId), 403);
        let (p, d) = cert(&w.mfr, &["victim.iot.example.test"], Some("ATTACKER"));
        assert_eq!(go(&p, &d, Need::LDevId), 403);
        // An unknown CA: nobody at all.
        let other = ca("Other CA");
        let (p, d) = cert(&other, &["victim.iot.example.test"], Some("X"));
        assert_eq!(go(&p, &d, Need::Any), 403);
        // Kinds.
        let (p, d) = cert(&w.acme, &["abc-1.iot.example.test"], None);
        assert_eq!(go(&p, &d, Need::IDevId), 403);
        let (p, d) = cert(&w.mfr, &[], Some("not a label!"));
        assert_eq!(go(&p, &d, Need::IDevId), 403);
        // No certificate.
        let (p, d) = cert(&w.mfr, &[], Some("ABC-1"));
        assert_eq!(
            status(authenticate(
                false,
                Some(&xfcc(&p)),
                Some(&digest(&d)),
                Need::Any,
                &w.policy
            )),
            401
        );
        assert_eq!(
            status(authenticate(true, None, None, Need::IDevId, &w.policy)),
            401
        );
        for junk in [&b"By=x"[..], b"Cert=\"junk\"", b"\xff"] {
            assert_eq!(
                status(authenticate(true, Some(junk), None, Need::Any, &w.policy)),
                401
            );
        }
    }

    #[test]
    fn chain_certificates_other_than_the_leaf_are_kept_up_to_the_limit() {
        let w = world();
        let (leaf_pem, leaf_der) = cert(&w.mfr, &[], Some("ABC-1"));
        let others: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| cert(&w.mfr, &[], Some(&format!("O-{i}"))))
            .collect();
        let chain: String = std::iter::once(leaf_pem.clone())
            .chain(others.iter().map(|(p, _)| p.clone()))
            .collect();
        let mut h = xfcc(&leaf_pem);
        h.extend_from_slice(format!(";Chain=\"{}\"", url_encode(&chain)).as_bytes());
        let c = authenticate(
            true,
            Some(&h),
            Some(&digest(&leaf_der)),
            Need::Any,
            &w.policy,
        )
        .unwrap();
        assert_eq!(c.chain.len(), MAX_CHAIN_CERTS);
        for (k, (_, o)) in c.chain.iter().zip(&others) {
            assert_eq!(k, o);
        }
    }
}
