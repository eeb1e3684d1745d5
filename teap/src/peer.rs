//! A TEAP peer that is also its own NAS: it sends RADIUS Access-Requests carrying EAP to a
//! TEAP server, drives a rustls client through the tunnel, answers the server's
//! Request-Action for a PKCS#10 with a CSR built from the CSR-Attributes and bound to the tunnel
//! (the tunnel's `tls-exporter` channel binding in the CSR's challengePassword, RFC 9930
//! §3.8.2), receives the PKCS#7, checks the Crypto-Binding, optionally asks for the server's
//! trust anchors with a Trusted-Server-Root TLV (§4.2.18), and at the end compares the MS-MPPE
//! keys in the Access-Accept with the MSK it derived itself.
//!
//! The pledge CLI's `teap` subcommand is a thin wrapper around [`run`].
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use estuary_proto::csrattrs::CsrAttrs;
use estuary_proto::eap::{EapCode, EapPacket, EapType, TeapFrame, TEAP_VERSION};
use estuary_proto::radius::{self, AttrType, Code, Packet};
use estuary_proto::teap::{
    self, Action, CbSubType, CredentialFormat, CryptoBinding, ErrorCode, Status, TeapKeys, Tlv,
    TlvType, CHANNEL_BINDING_LEN,
};
use rand::RngCore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConnection;
use tokio::net::UdpSocket;

use crate::tunnel::{Incoming, Tunnel, TunnelError};

/// What a CSR is made from.
#[derive(Clone, Copy, Debug)]
pub struct CsrInput<'a> {
    /// The server's CSR-Attributes (DER; `None` when the server sent none).
    pub attrs: Option<&'a [u8]>,
    /// This tunnel's channel binding ([`Tunnel::channel_binding`]), to be put, base64, in
    /// the CSR's challengePassword ([`csr_from_attrs`] does).
    pub channel_binding: &'a [u8],
}

/// Builds a CSR (DER) when the server asks for one.
pub type CsrMaker = Box<dyn FnMut(CsrInput<'_>) -> Result<Vec<u8>, String> + Send>;

/// How to reach the server and who we are.
pub struct PeerConfig {
    /// The TEAP server's RADIUS address.
    pub server: SocketAddr,
    /// The RADIUS shared secret.
    pub secret: Vec<u8>,
    /// The outer EAP identity (User-Name).
    pub identity: String,
    /// Client certificate chain (IDevID or LDevID), leaf first, and its private key. `None`
    /// sends no certificate (the server then rejects).
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Trust anchors for the TEAP server's certificate.
    pub server_roots: rustls::RootCertStore,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
    /// TLS octets per EAP-Response.
    pub fragment_size: usize,
    /// Offer TLS 1.3 as well as 1.2.
    pub tls13: bool,
    /// Seconds to wait for each RADIUS reply before retransmitting (3 tries).
    pub radius_timeout: Duration,
    /// Ask the server for its trust anchors (a Trusted-Server-Root TLV, RFC 9930 §4.2.18)
    /// once the Crypto-Binding has verified.
    pub request_trusted_roots: bool,
    /// Test knob: replaces the first phase-2 reply with these raw octets (to send malformed
    /// or unknown TLVs on purpose).
    pub dangerous_first_phase2_reply: Option<Vec<u8>>,
}

/// A completed authentication. Its `Debug` leaves the MSK out.
pub struct PeerOutcome {
    /// The MSK this peer derived.
    pub msk: Box<[u8; 64]>,
    /// The MS-MPPE-Recv/Send keys of the Access-Accept equal MSK[0..32] / MSK[32..64].
    pub mppe_keys_match: bool,
    /// The PKCS#7 TLV's content, when the server sent one.
    pub pkcs7: Option<Vec<u8>>,
    /// The CSR-Attributes TLV's content, when the server sent one.
    pub csr_attrs: Option<Vec<u8>>,
    /// The PKCS#7 (certs-only DER) of a Trusted-Server-Root TLV, when the server answered
    /// [`PeerConfig::request_trusted_roots`]: the ACME CA's trust anchor(s) for Estuary.
    pub trusted_server_roots: Option<Vec<u8>>,
}

impl std::fmt::Debug for PeerOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerOutcome")
            .field("mppe_keys_match", &self.mppe_keys_match)
            .field("pkcs7_len", &self.pkcs7.as_ref().map(Vec::len))
            .field("csr_attrs_len", &self.csr_attrs.as_ref().map(Vec::len))
            .field(
                "trusted_server_roots_len",
                &self.trusted_server_roots.as_ref().map(Vec::len),
            )
            .finish_non_exhaustive()
    }
}

/// Why the peer did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Socket trouble.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// No valid RADIUS reply after all retransmissions.
    #[error("no valid RADIUS reply from {0} (wrong secret, or server down)")]
    NoReply(SocketAddr),
    /// The server rejected us; the last phase-2 TLVs it sent say why.
    #[error("Access-Reject (server TLVs: {server_tlvs:?})")]
    Rejected {
        /// The last phase-2 TLVs received (Error, NAK, Result…).
        server_tlvs: Vec<Tlv>,
    },
    /// The TLS tunnel failed.
    #[error("tunnel: {0}")]
    Tunnel(#[from] TunnelError),
    /// The server broke the protocol.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// Building the CSR failed.
    #[error("CSR: {0}")]
    Csr(String),
}

struct PeerState {
    tunnel: Option<Tunnel<ClientConnection>>,
    server_outer: Vec<u8>,
    keys: Option<TeapKeys>,
    pkcs7: Option<Vec<u8>>,
    csr_attrs: Option<Vec<u8>>,
    last_tlvs: Vec<Tlv>,
    override_reply: Option<Vec<u8>>,
    csr: Option<CsrMaker>,
    channel_binding: Option<[u8; CHANNEL_BINDING_LEN]>,
    request_roots: bool,
    trusted_roots: Option<Vec<u8>>,
}

/// Runs one TEAP authentication (and enrolment, if `csr` is given and the server asks).
pub async fn run(cfg: &PeerConfig, csr: Option<CsrMaker>) -> Result<PeerOutcome, PeerError> {
    let tls = client_config(cfg)?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut st = PeerState {
        tunnel: None,
        server_outer: Vec::new(),
        keys: None,
        pkcs7: None,
        csr_attrs: None,
        last_tlvs: Vec::new(),
        override_reply: cfg.dangerous_first_phase2_reply.clone(),
        csr,
        channel_binding: None,
        request_roots: cfg.request_trusted_roots,
        trusted_roots: None,
    };
    let mut radius_id: u8 = rand::rng().next_u32() as u8;
    let mut state_attr: Option<Vec<u8>> = None;
    let mut eap_out = EapPacket::new(
        EapCode::RESPONSE,
        0,
        EapType::IDENTITY,
        cfg.identity.as_bytes().to_vec(),
    );
    // Bounded: a conversation that does not end in 2000 round trips is broken.
    for _ in 0..2000 {
        radius_id = radius_id.wrapping_add(1);
        let mut auth = [0u8; 16];
        rand::rng().fill_bytes(&mut auth);
        let mut req = Packet::new(Code::ACCESS_REQUEST, radius_id, auth);
        req.push(AttrType::USER_NAME, cfg.identity.as_bytes().to_vec());
        req.push(AttrType::NAS_IDENTIFIER, b"estuary-teap-peer".to_vec());
        req.push(AttrType::FRAMED_MTU, 1400u32.to_be_bytes().to_vec());
        let eap_bytes = eap_out
            .encode()
            .map_err(|_| PeerError::Protocol("EAP response too large"))?;
        req.push_eap_message(&eap_bytes);
        if let Some(s) = &state_attr {
            req.push(AttrType::STATE, s.clone());
        }
        let wire = req
            .encode_request(&cfg.secret)
            .map_err(|_| PeerError::Protocol("RADIUS request too large"))?;
        let reply = exchange(&socket, cfg, &wire, &auth).await?;
        let eap_in = reply.eap_message().and_then(|b| EapPacket::decode(&b).ok());
        match reply.code {
            Code::ACCESS_CHALLENGE => {
                state_attr = reply.attr(AttrType::STATE).map(<[u8]>::to_vec);
                let eap_in = eap_in.ok_or(PeerError::Protocol("challenge without EAP"))?;
                eap_out = step(&mut st, cfg, &tls, &eap_in)?;
            }
            Code::ACCESS_ACCEPT => {
                if eap_in.map(|e| e.code) != Some(EapCode::SUCCESS) {
                    return Err(PeerError::Protocol("Access-Accept without EAP-Success"));
                }
                let keys = st
                    .keys
                    .as_ref()
                    .ok_or(PeerError::Protocol("success before the tunnel was up"))?;
                let recv =
                    radius::find_vendor(&reply, radius::VENDOR_MICROSOFT, radius::MS_MPPE_RECV_KEY)
                        .and_then(|v| radius::mppe_decrypt(&cfg.secret, &auth, &v).ok());
                let send =
                    radius::find_vendor(&reply, radius::VENDOR_MICROSOFT, radius::MS_MPPE_SEND_KEY)
                        .and_then(|v| radius::mppe_decrypt(&cfg.secret, &auth, &v).ok());
                let mppe_keys_match = recv.as_deref() == Some(&keys.msk[..32])
                    && send.as_deref() == Some(&keys.msk[32..]);
                return Ok(PeerOutcome {
                    msk: Box::new(keys.msk),
                    mppe_keys_match,
                    pkcs7: st.pkcs7,
                    csr_attrs: st.csr_attrs,
                    trusted_server_roots: st.trusted_roots,
                });
            }
            Code::ACCESS_REJECT => {
                return Err(PeerError::Rejected {
                    server_tlvs: st.last_tlvs,
                })
            }
            _ => return Err(PeerError::Protocol("unexpected RADIUS code")),
        }
    }
    Err(PeerError::Protocol("conversation did not end"))
}

fn client_config(cfg: &PeerConfig) -> Result<Arc<rustls::ClientConfig>, PeerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if cfg.tls13 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12]
    };
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| PeerError::Tunnel(e.into()))?
        .with_root_certificates(cfg.server_roots.clone());
    let mut c = match &cfg.client {
        Some((chain, key)) => b
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| PeerError::Tunnel(e.into()))?,
        None => b.with_no_client_auth(),
    };
    c.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(c))
}

async fn exchange(
    socket: &UdpSocket,
    cfg: &PeerConfig,
    wire: &[u8],
    auth: &[u8; 16],
) -> Result<Packet, PeerError> {
    let mut buf = vec![0u8; radius::MAX_LEN];
    for _ in 0..3 {
        socket.send_to(wire, cfg.server).await?;
        let deadline = tokio::time::Instant::now() + cfg.radius_timeout;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok((n, from))) => {
                    if from != cfg.server || buf[1] != wire[1] {
                        continue;
                    }
                    if let Ok(p) = radius::verify_response(&buf[..n], &cfg.secret, auth) {
                        return Ok(p);
                    }
                }
            }
        }
    }
    Err(PeerError::NoReply(cfg.server))
}

fn step(
    st: &mut PeerState,
    cfg: &PeerConfig,
    tls: &Arc<rustls::ClientConfig>,
    eap: &EapPacket,
) -> Result<EapPacket, PeerError> {
    let respond = |frame: TeapFrame| {
        EapPacket::new(
            EapCode::RESPONSE,
            eap.identifier,
            EapType::TEAP,
            frame.encode(),
        )
    };
    if eap.code != EapCode::REQUEST {
        return Err(PeerError::Protocol("expected an EAP-Request"));
    }
    if eap.typ == Some(EapType::IDENTITY) {
        return Ok(EapPacket::new(
            EapCode::RESPONSE,
            eap.identifier,
            EapType::IDENTITY,
            cfg.identity.as_bytes().to_vec(),
        ));
    }
    if eap.typ != Some(EapType::TEAP) {
        // Legacy Nak proposing TEAP (RFC 3748 §5.3.1).
        return Ok(EapPacket::new(
            EapCode::RESPONSE,
            eap.identifier,
            EapType::NAK,
            vec![EapType::TEAP.0],
        ));
    }
    let frame = TeapFrame::decode(&eap.data).map_err(|_| PeerError::Protocol("bad TEAP header"))?;
    if frame.start {
        if frame.version < TEAP_VERSION {
            return Err(PeerError::Protocol("server offers TEAP version 0"));
        }
        st.server_outer = frame.outer_tlvs.clone();
        let conn = ClientConnection::new(Arc::clone(tls), cfg.server_name.clone())
            .map_err(TunnelError::from)?;
        let mut t = Tunnel::new(conn, cfg.fragment_size);
        t.flush(&[])?;
        let f = t.next_frame();
        st.tunnel = Some(t);
        return Ok(respond(f));
    }
    let t = st
        .tunnel
        .as_mut()
        .ok_or(PeerError::Protocol("TEAP data before TEAP/Start"))?;
    match t.receive(&frame)? {
        Incoming::NeedAck => return Ok(respond(TeapFrame::ack())),
        Incoming::SendNext => return Ok(respond(t.next_frame())),
        Incoming::Message => {}
    }
    if !t.conn.is_handshaking() {
        if st.keys.is_none() {
            st.keys = Some(t.keys()?);
            st.channel_binding = Some(t.channel_binding()?);
        }
        let plain = t.read_plain()?;
        if !plain.is_empty() {
            let reply = match st.override_reply.take() {
                Some(raw) => raw,
                None => {
                    let tlvs = phase2(st, &plain)?;
                    teap::encode(&tlvs).map_err(|_| PeerError::Protocol("TLV too long"))?
                }
            };
            let t = st.tunnel.as_mut().ok_or(PeerError::Protocol("no tunnel"))?;
            t.write_plain(&reply)?;
        }
    }
    let t = st.tunnel.as_mut().ok_or(PeerError::Protocol("no tunnel"))?;
    t.flush(&[])?;
    Ok(respond(t.next_frame()))
}

/// The peer's answer to the server's phase-2 TLVs.
fn phase2(st: &mut PeerState, plain: &[u8]) -> Result<Vec<Tlv>, PeerError> {
    let tlvs = match teap::decode(plain) {
        Ok(t) => t,
        Err(_) => {
            return Ok(vec![
                Tlv::error(ErrorCode::UNEXPECTED_TLVS),
                Tlv::result(Status::FAILURE),
            ])
        }
    };
    st.last_tlvs = tlvs.clone();
    if let Some(t) = teap::first_unknown_mandatory(&tlvs, TlvType::is_defined) {
        return Ok(vec![Tlv::nak(t)]);
    }
    let find = |t: TlvType| tlvs.iter().find(|x| x.typ == t);
    if find(TlvType::ERROR).is_some()
        || find(TlvType::RESULT).and_then(|r| r.status().ok()) == Some(Status::FAILURE)
    {
        return Ok(vec![Tlv::result(Status::FAILURE)]);
    }
    if let Some(a) = find(TlvType::CSR_ATTRIBUTES) {
        st.csr_attrs = Some(a.value.clone());
    }
    if let Some(p) = find(TlvType::PKCS7) {
        st.pkcs7 = Some(p.value.clone());
    }
    // §4.2.18: the roots come as a PKCS#7 TLV inside the Trusted-Server-Root TLV; another
    // Credential-Format is ignored.
    if let Some(Ok((CredentialFormat::PKCS7_SERVER_CERTIFICATE_ROOT, inner))) =
        find(TlvType::TRUSTED_SERVER_ROOT).map(Tlv::trusted_server_root_parts)
    {
        if let Some(p) = inner.into_iter().find(|t| t.typ == TlvType::PKCS7) {
            st.trusted_roots = Some(p.value);
        }
    }
    let mut out = Vec::new();
    if let Some(ra) = find(TlvType::REQUEST_ACTION) {
        let wants_csr = matches!(
            ra.request_action_parts(),
            Ok((_, Action::PROCESS_TLV, inner)) if inner.iter().any(|t| t.typ == TlvType::PKCS10)
        );
        if wants_csr {
            if let Some(make) = st.csr.as_mut() {
                let channel_binding = st
                    .channel_binding
                    .ok_or(PeerError::Protocol("CSR request before the tunnel was up"))?;
                let csr = make(CsrInput {
                    attrs: st.csr_attrs.as_deref(),
                    channel_binding: &channel_binding,
                })
                .map_err(PeerError::Csr)?;
                out.push(Tlv::new(false, TlvType::PKCS10, csr));
            }
        }
    }
    if let Some(cb) = find(TlvType::CRYPTO_BINDING) {
        let keys = st
            .keys
            .as_ref()
            .ok_or(PeerError::Protocol("Crypto-Binding before keys"))?;
        let ok_result = find(TlvType::RESULT).and_then(|r| r.status().ok())
            == Some(Status::SUCCESS)
            || find(TlvType::INTERMEDIATE_RESULT).and_then(|r| r.status().ok())
                == Some(Status::SUCCESS);
        let req = CryptoBinding::decode(&cb.value).ok().filter(|c| {
            ok_result
                && c.sub_type == CbSubType::Request
                && c.nonce[31] & 1 == 0
                && keys.verify(c, &st.server_outer, &[])
        });
        let Some(req) = req else {
            return Ok(vec![
                Tlv::error(ErrorCode::TUNNEL_COMPROMISE),
                Tlv::result(Status::FAILURE),
            ]);
        };
        let mut resp = CryptoBinding {
            sub_type: CbSubType::Response,
            ..req
        };
        resp.nonce[31] |= 1;
        keys.sign(&mut resp, &st.server_outer, &[]);
        // §4.2.18: the server is authenticated and the Crypto-Binding verified: ask for its
        // trust roots now (once).
        if st.request_roots {
            st.request_roots = false;
            out.push(
                Tlv::trusted_server_root(CredentialFormat::PKCS7_SERVER_CERTIFICATE_ROOT, &[])
                    .map_err(|_| PeerError::Protocol("TLV too long"))?,
            );
        }
        out.push(resp.to_tlv());
        out.push(Tlv::result(Status::SUCCESS));
    }
    Ok(out)
}

/// A CSR for the names the CSR-Attributes ask for, with a fresh P-256 key: (CSR DER, key PEM).
/// With `channel_binding`, its base64 goes in the challengePassword attribute (RFC 9930
/// §3.8.2), so that the CSR is good in this tunnel only.
pub fn csr_from_attrs(
    attrs_der: Option<&[u8]>,
    channel_binding: Option<&[u8]>,
) -> Result<(Vec<u8>, String), String> {
    let attrs = CsrAttrs::from_der(attrs_der.ok_or("the server sent no CSR-Attributes")?)
        .map_err(|e| format!("CSR-Attributes: {e}"))?;
    let names = attrs.requested_dns_names();
    let first = names
        .first()
        .ok_or("the CSR-Attributes name no DNS name")?
        .clone();
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, first);
    let mut extra = Vec::new();
    if let Some(cb) = channel_binding {
        extra.push(rcgen::Attribute {
            oid: CHALLENGE_PASSWORD_ARCS,
            values: teap::challenge_password_values(&teap::csr_binding_text(cb))
                .ok_or("channel binding too long for challengePassword")?,
        });
    }
    let csr = params
        .serialize_request_with_attributes(&key, extra)
        .map_err(|e| e.to_string())?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}

/// pkcs-9-at-challengePassword, 1.2.840.113549.1.9.7 (RFC 2985 §5.4.1), as rcgen takes it.
const CHALLENGE_PASSWORD_ARCS: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];

/// The peer against the server's session in memory (no RADIUS, no sockets): the CSR channel
/// binding and the Trusted-Server-Root exchange, from both sides of the tunnel.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::session::{Enrolled, ServerSession, SessionConfig, Step};
    use estuary_proto::identity::{
        Manufacturer, ManufacturerName, NamePrefix, SerialPattern, TrustPolicy,
    };
    use estuary_proto::policy::KeyPolicy;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    struct Pki {
        server_tls: Arc<rustls::ServerConfig>,
        server_roots: rustls::RootCertStore,
        device: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        manufacturer_der: Vec<u8>,
    }

    fn ca(cn: &str) -> (Vec<u8>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = p.self_signed(&key).unwrap().der().to_vec();
        (der, Issuer::new(p, key))
    }

    fn pki() -> Pki {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (server_ca, server_issuer) = ca("server CA");
        let skey = KeyPair::generate().unwrap();
        let scert = CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&skey, &server_issuer)
            .unwrap();
        let (maker_der, maker) = ca("manufacturer");
        let dkey = KeyPair::generate().unwrap();
        let mut dp = CertificateParams::new(Vec::<String>::new()).unwrap();
        dp.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), "SN42");
        let dcert = dp.signed_by(&dkey, &maker).unwrap();
        let mut client_roots = rustls::RootCertStore::empty();
        client_roots.add(maker_der.clone().into()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server_tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![scert.der().clone()],
                PrivateKeyDer::try_from(skey.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut server_roots = rustls::RootCertStore::empty();
        server_roots.add(server_ca.into()).unwrap();
        Pki {
            server_tls: Arc::new(server_tls),
            server_roots,
            device: (
                vec![dcert.der().clone()],
                PrivateKeyDer::try_from(dkey.serialize_der()).unwrap(),
            ),
            manufacturer_der: maker_der,
        }
    }

    fn session_cfg(pki: &Pki, roots: Option<Vec<u8>>) -> Arc<SessionConfig> {
        let keys = KeyPolicy::default();
        Arc::new(SessionConfig {
            tls: Arc::clone(&pki.server_tls),
            authority_id: b"estuary-test".to_vec(),
            fragment_size: 1000,
            request_csr: true,
            allow_without_csr: true,
            trust: TrustPolicy {
                parent: "iot.example.test".parse().unwrap(),
                manufacturers: vec![Manufacturer {
                    name: ManufacturerName::parse("test").unwrap(),
                    ca_der: pki.manufacturer_der.clone(),
                    serial_pattern: SerialPattern::any(),
                    name_prefix: NamePrefix::default(),
                }],
                acme_issuers: Vec::new(),
            },
            csr_attrs: Arc::new(move |name| {
                estuary_proto::csrattrs::device_template(name, &keys)
                    .to_der()
                    .ok()
            }),
            trusted_server_roots: roots,
        })
    }

    fn peer_cfg(pki: &Pki, tls13: bool, request_roots: bool) -> PeerConfig {
        PeerConfig {
            server: SocketAddr::from(([127, 0, 0, 1], 1812)),
            secret: b"unused-in-memory".to_vec(),
            identity: "anonymous@teap.test".into(),
            client: Some((pki.device.0.clone(), pki.device.1.clone_key())),
            server_roots: pki.server_roots.clone(),
            server_name: ServerName::try_from("localhost").unwrap(),
            fragment_size: 1000,
            tls13,
            radius_timeout: Duration::from_secs(1),
            request_trusted_roots: request_roots,
            dangerous_first_phase2_reply: None,
        }
    }

    /// A CSR the peer made, and the channel binding of the tunnel it was made in.
    type Made = (Vec<u8>, Vec<u8>);

    /// How one in-memory conversation ended.
    struct Run {
        accepted: bool,
        /// The CSR the server asked the RA to enrol, if any.
        enrolled_csr: Option<Vec<u8>>,
        /// The CSR the peer made (and its tunnel's channel binding).
        made: Option<Made>,
        server_tlvs: Vec<Tlv>,
        roots: Option<Vec<u8>>,
        /// The session reported that it refused the CSR itself.
        refused: bool,
    }

    /// Runs one conversation; `csr` decides the CSR from (attrs, this tunnel's binding).
    fn converse(cfg: Arc<SessionConfig>, pcfg: &PeerConfig, csr: Option<CsrMaker>) -> Run {
        let tls = client_config(pcfg).unwrap();
        let made: Arc<std::sync::Mutex<Option<Made>>> = Arc::default();
        let slot = Arc::clone(&made);
        let csr: Option<CsrMaker> = csr.map(|mut inner| {
            Box::new(move |input: CsrInput<'_>| {
                let der = inner(input)?;
                *slot.lock().unwrap() = Some((der.clone(), input.channel_binding.to_vec()));
                Ok(der)
            }) as CsrMaker
        });
        let mut st = PeerState {
            tunnel: None,
            server_outer: Vec::new(),
            keys: None,
            pkcs7: None,
            csr_attrs: None,
            last_tlvs: Vec::new(),
            override_reply: None,
            csr,
            channel_binding: None,
            request_roots: pcfg.request_trusted_roots,
            trusted_roots: None,
        };
        let (mut server, mut req) = ServerSession::start(cfg, 1, [0x42; 32]).unwrap();
        let mut enrolled_csr = None;
        let mut refused = false;
        for _ in 0..200 {
            let resp = step(&mut st, pcfg, &tls, &req).unwrap();
            let mut next = server.handle(&resp);
            refused |= server.take_csr_refusal();
            if let Step::Enroll { csr_der, .. } = next {
                enrolled_csr = Some(csr_der);
                // The RA's answer: any certs-only PKCS#7 will do here.
                let p7 = estuary_proto::pkcs7::encode_certs_only(&[pki_marker()]).unwrap();
                next = server.enrolled(Enrolled::Issued(p7));
            }
            match next {
                Step::Challenge(p) => req = p,
                Step::Accept { .. } | Step::Reject(_) => {
                    return Run {
                        accepted: matches!(next, Step::Accept { .. }),
                        enrolled_csr,
                        made: made.lock().unwrap().clone(),
                        server_tlvs: st.last_tlvs,
                        roots: st.trusted_roots,
                        refused,
                    }
                }
                Step::Enroll { .. } => unreachable!("answered above"),
            }
        }
        panic!("the conversation did not end");
    }

    /// A self-signed certificate standing for what the RA issued.
    fn pki_marker() -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        CertificateParams::new(vec!["x.iot.example.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    fn bound(input: CsrInput<'_>) -> Result<Vec<u8>, String> {
        csr_from_attrs(input.attrs, Some(input.channel_binding)).map(|(c, _)| c)
    }

    /// RFC 9930 §3.8.2 over TLS 1.3 and TLS 1.2: the peer's CSR carries its tunnel's
    /// tls-exporter binding, which both sides compute alike, and the server enrols it.
    #[test]
    fn a_bound_csr_is_enrolled_over_tls13_and_tls12() {
        let pki = pki();
        for tls13 in [true, false] {
            let run = converse(
                session_cfg(&pki, None),
                &peer_cfg(&pki, tls13, false),
                Some(Box::new(bound)),
            );
            assert!(run.accepted, "tls13={tls13}: {:?}", run.server_tlvs);
            let (csr, binding) = run.made.expect("a CSR was made");
            assert_eq!(run.enrolled_csr.as_deref(), Some(&csr[..]));
            let v = estuary_proto::csr::parse_and_verify(&csr).unwrap();
            assert_eq!(
                teap::check_csr_binding(&v, &binding),
                teap::CsrBinding::Matches
            );
        }
    }

    /// The attacker's side: a CSR made (and signed) in one tunnel, replayed in another, is
    /// refused with Error 1025 and Result(Failure), and never reaches the RA.
    #[test]
    fn a_csr_from_another_tunnel_is_refused_with_1025() {
        let pki = pki();
        let first = converse(
            session_cfg(&pki, None),
            &peer_cfg(&pki, true, false),
            Some(Box::new(bound)),
        );
        let (stolen, _) = first.made.expect("made");
        let replay = converse(
            session_cfg(&pki, None),
            &peer_cfg(&pki, true, false),
            Some(Box::new(move |_| Ok(stolen.clone()))),
        );
        assert!(!replay.accepted);
        assert!(replay.enrolled_csr.is_none(), "nothing enrolled");
        assert!(
            replay.refused,
            "the session reports its refusal for the metrics"
        );
        assert!(!first.refused);
        let code = replay
            .server_tlvs
            .iter()
            .find(|t| t.typ == TlvType::ERROR)
            .map(|t| t.error_code());
        assert_eq!(code, Some(Ok(ErrorCode::BAD_CSR)));
        // A CSR without a binding is still enrolled (the binding is a SHOULD).
        let unbound = converse(
            session_cfg(&pki, None),
            &peer_cfg(&pki, false, false),
            Some(Box::new(|i: CsrInput<'_>| {
                csr_from_attrs(i.attrs, None).map(|(c, _)| c)
            })),
        );
        assert!(unbound.accepted);
        assert!(unbound.enrolled_csr.is_some());
    }

    /// RFC 9930 §4.2.18: asked for, the configured roots come back in a Trusted-Server-Root
    /// TLV, with an enrolment or without one; not asked for, or not configured, none.
    #[test]
    fn trusted_server_root_is_answered_when_asked_and_configured() {
        let pki = pki();
        let roots =
            estuary_proto::pkcs7::encode_certs_only(std::slice::from_ref(&pki.manufacturer_der))
                .unwrap();
        let with = |request: bool, configured: bool, enrol: bool| {
            converse(
                session_cfg(&pki, configured.then(|| roots.clone())),
                &peer_cfg(&pki, true, request),
                enrol.then(|| Box::new(bound) as _),
            )
        };
        for enrol in [true, false] {
            let run = with(true, true, enrol);
            assert!(run.accepted);
            assert_eq!(run.roots.as_ref(), Some(&roots), "enrol={enrol}");
            assert_eq!(run.enrolled_csr.is_some(), enrol);
            assert!(with(false, true, enrol).roots.is_none());
            let unconfigured = with(true, false, enrol);
            assert!(unconfigured.accepted);
            assert!(unconfigured.roots.is_none());
        }
    }
}
