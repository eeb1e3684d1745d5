//! One EAP-TEAP conversation on the server side (RFC 9930), without I/O.
//!
//! Phase 1: TEAP/Start with an Authority-ID outer TLV, then the TLS handshake; the peer must
//! present a client certificate (IDevID, or the LDevID Estuary issued). Phase 2 (inside TLS):
//!
//! ```text
//! server: CSR-Attributes, Request-Action(Process-TLV, [PKCS#10]), Crypto-Binding, Result(Success)
//! peer:   PKCS#10, [Trusted-Server-Root request], Crypto-Binding, Result
//!         (a peer that ignores the request: no PKCS#10 -> Accept)
//! server: PKCS#7, [Trusted-Server-Root(PKCS#7)], Crypto-Binding, Result(Success)
//!         | Error, Result(Failure)
//! peer:   Crypto-Binding, Result(Success)
//! server: EAP-Success (RADIUS Access-Accept with the MSK)
//! ```
//!
//! - **PKCS#7** (RFC 9930 §4.2.16): what the enrolment returns, the whole chain the ACME CA
//!   gave (end entity and intermediates), as draft-ietf-acme-integrations-17 requires for TEAP.
//! - **Trusted-Server-Root** (§4.2.18): a peer that asks for it (Credential-Format 1,
//!   PKCS#7-Server-Certificate-Root) after it has checked the Crypto-Binding gets
//!   [`SessionConfig::trusted_server_roots`] in a PKCS#7 TLV inside a Trusted-Server-Root TLV,
//!   with the PKCS#7 TLV of an enrolment or on its own (a peer that sent no CSR). A server
//!   without roots configured ignores the request, which RFC 9930 allows.
//! - **CSR channel binding** (§3.8.2, draft-17 "TLS Channel Bindings"): a CSR whose
//!   challengePassword holds a value is checked against this tunnel's channel binding
//!   ([`Tunnel::channel_binding`]: `tls-exporter`, RFC 9266, base64); a mismatch (a CSR made
//!   in another TLS session) is refused with Error 1025 Bad CSR and Result(Failure) before
//!   anything is enrolled. A CSR without a challengePassword (or an empty one) is enrolled:
//!   the binding is a SHOULD in RFC 9930 and RECOMMENDED in draft-17.
use std::sync::Arc;

use estuary_proto::csr;
use estuary_proto::eap::{EapCode, EapPacket, EapType, TeapFrame, TEAP_VERSION};
use estuary_proto::est::EstOperation;
use estuary_proto::identity::{self, Identity, Need, TrustPolicy};
use estuary_proto::names::{DeviceName, DeviceSerial};
use estuary_proto::teap::{
    self, Action, CbSubType, CredentialFormat, CryptoBinding, CsrBinding, ErrorCode, Status,
    TeapKeys, Tlv, TlvType, CHANNEL_BINDING_LEN,
};
use rustls::ServerConnection;

use crate::tunnel::{Incoming, Tunnel, TunnelError};

/// What the RADIUS layer does next.
pub enum Step {
    /// Send this EAP-Request in an Access-Challenge.
    Challenge(EapPacket),
    /// Run an enrolment, then call [`ServerSession::enrolled`].
    Enroll {
        /// The CSR from the PKCS#10 TLV.
        csr_der: Vec<u8>,
        /// The serial from the client certificate.
        serial: DeviceSerial,
        /// Enrol with the IDevID, re-enrol with the LDevID.
        operation: EstOperation,
    },
    /// Access-Accept with EAP-Success and the MSK.
    Accept {
        /// EAP-Success.
        eap: EapPacket,
        /// MSK (MS-MPPE keys).
        msk: Box<[u8; 64]>,
    },
    /// Access-Reject with EAP-Failure.
    Reject(EapPacket),
}

/// How the enrolment ended, as the session needs it.
pub enum Enrolled {
    /// PKCS#7 certs-only.
    Issued(Vec<u8>),
    /// Failed with this Error TLV code.
    Failed(ErrorCode),
}

/// The DER CSR attributes for a device name (`None`: cannot be built).
pub type CsrAttrsFor = Arc<dyn Fn(&DeviceName) -> Option<Vec<u8>> + Send + Sync>;

/// Server-side knobs shared by every session.
pub struct SessionConfig {
    /// rustls server config (client certificate required).
    pub tls: Arc<rustls::ServerConfig>,
    /// Authority-ID sent in TEAP/Start.
    pub authority_id: Vec<u8>,
    /// TLS octets per EAP packet.
    pub fragment_size: usize,
    /// Ask for a CSR in phase 2.
    pub request_csr: bool,
    /// Accept a device that answers the CSR request with nothing (already enrolled).
    pub allow_without_csr: bool,
    /// Who may get which name (the same policy as EST's): the client certificate is an IDevID
    /// of a configured manufacturer or an LDevID of the ACME CA, or it is refused.
    pub trust: TrustPolicy,
    /// CSR attributes for a device name.
    pub csr_attrs: CsrAttrsFor,
    /// PKCS#7 certs-only (DER) of the ACME CA's trust anchor(s), sent to a peer that asks
    /// with a Trusted-Server-Root TLV (draft-ietf-acme-integrations-17: "MUST return the ACME
    /// server trust anchor"). `None`: such requests are ignored.
    pub trusted_server_roots: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    AwaitCsr,
    Enrolling,
    AwaitBinding,
    FailureSent,
}

/// The device, as its client certificate names it.
struct Device {
    serial: DeviceSerial,
    operation: EstOperation,
}

/// One conversation.
pub struct ServerSession {
    cfg: Arc<SessionConfig>,
    tunnel: Tunnel<ServerConnection>,
    state: State,
    eap_id: u8,
    server_outer: Vec<u8>,
    peer_outer: Option<Vec<u8>>,
    keys: Option<TeapKeys>,
    nonce: [u8; 32],
    device: Option<Device>,
    channel_binding: Option<[u8; CHANNEL_BINDING_LEN]>,
    roots_wanted: bool,
    roots_sent: bool,
    csr_refused: bool,
}

impl ServerSession {
    /// Starts a conversation after EAP-Response/Identity: returns the session and TEAP/Start.
    pub fn start(
        cfg: Arc<SessionConfig>,
        identity_id: u8,
        nonce: [u8; 32],
    ) -> Result<(Self, EapPacket), TunnelError> {
        let conn = ServerConnection::new(Arc::clone(&cfg.tls))?;
        let server_outer = teap::encode(&[Tlv::new(
            false,
            TlvType::AUTHORITY_ID,
            cfg.authority_id.clone(),
        )])
        .map_err(|_| TunnelError::Fragment("Authority-ID too long"))?;
        let mut nonce = nonce;
        nonce[31] &= 0xfe;
        let mut s = Self {
            tunnel: Tunnel::new(conn, cfg.fragment_size),
            cfg,
            state: State::Handshake,
            eap_id: identity_id,
            server_outer,
            peer_outer: None,
            keys: None,
            nonce,
            device: None,
            channel_binding: None,
            roots_wanted: false,
            roots_sent: false,
            csr_refused: false,
        };
        let start = TeapFrame {
            start: true,
            version: TEAP_VERSION,
            outer_tlvs: s.server_outer.clone(),
            ..TeapFrame::default()
        };
        let pkt = s.request(start);
        Ok((s, pkt))
    }

    fn request(&mut self, frame: TeapFrame) -> EapPacket {
        self.eap_id = self.eap_id.wrapping_add(1);
        EapPacket::new(EapCode::REQUEST, self.eap_id, EapType::TEAP, frame.encode())
    }

    fn reject(&self, id: u8) -> Step {
        Step::Reject(EapPacket::outcome(EapCode::FAILURE, id))
    }

    /// Handles one EAP-Response. Never panics; every failure ends in a Reject or a
    /// Result(Failure) inside the tunnel.
    pub fn handle(&mut self, eap: &EapPacket) -> Step {
        if eap.code != EapCode::RESPONSE || eap.identifier != self.eap_id {
            return self.reject(eap.identifier);
        }
        if eap.typ != Some(EapType::TEAP) {
            // Legacy Nak (the peer does not do TEAP) or anything else.
            return self.reject(eap.identifier);
        }
        let frame = match TeapFrame::decode(&eap.data) {
            Ok(f) => f,
            Err(_) => return self.reject(eap.identifier),
        };
        if self.peer_outer.is_none() {
            self.peer_outer = Some(frame.outer_tlvs.clone());
        }
        match self.step(&frame) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %e, "TEAP tunnel failed");
                self.reject(eap.identifier)
            }
        }
    }

    fn step(&mut self, frame: &TeapFrame) -> Result<Step, TunnelError> {
        match self.tunnel.receive(frame)? {
            Incoming::NeedAck => return Ok(Step::Challenge(self.request(TeapFrame::ack()))),
            Incoming::SendNext => {
                let f = self.tunnel.next_frame();
                return Ok(Step::Challenge(self.request(f)));
            }
            Incoming::Message => {}
        }
        match self.state {
            State::Handshake => {
                if self.tunnel.conn.is_handshaking() {
                    self.tunnel.flush(&[])?;
                    let f = self.tunnel.next_frame();
                    return Ok(Step::Challenge(self.request(f)));
                }
                self.keys = Some(self.tunnel.keys()?);
                self.channel_binding = Some(self.tunnel.channel_binding()?);
                let tlvs = self.phase2_start();
                self.send_tlvs(&tlvs)
            }
            State::AwaitCsr | State::AwaitBinding | State::FailureSent | State::Enrolling => {
                let plain = self.tunnel.read_plain()?;
                if plain.is_empty() && self.tunnel.conn.is_handshaking() {
                    return Err(TunnelError::Fragment("handshake data after the handshake"));
                }
                self.phase2(&plain)
            }
        }
    }

    fn send_tlvs(&mut self, tlvs: &[Tlv]) -> Result<Step, TunnelError> {
        let bytes =
            teap::encode(tlvs).map_err(|_| TunnelError::Fragment("phase 2 TLV too long"))?;
        self.tunnel.write_plain(&bytes)?;
        self.tunnel.flush(&[])?;
        let f = self.tunnel.next_frame();
        Ok(Step::Challenge(self.request(f)))
    }

    fn fail(&mut self, code: ErrorCode) -> Result<Step, TunnelError> {
        self.state = State::FailureSent;
        self.send_tlvs(&[Tlv::error(code), Tlv::result(Status::FAILURE)])
    }

    /// The device identity from the verified client certificate, decided by who issued it
    /// ([`estuary_proto::identity`]); `None` (refused) for anyone else.
    fn identify(&self) -> Option<Device> {
        let certs = self.tunnel.conn.peer_certificates()?;
        let (leaf, rest) = certs.split_first()?;
        let chain: Vec<Vec<u8>> = rest.iter().map(|c| c.as_ref().to_vec()).collect();
        match identity::authenticate(&self.cfg.trust, leaf.as_ref(), &chain, Need::Any) {
            Ok(Identity::IDevId { label, .. }) => Some(Device {
                serial: label,
                operation: EstOperation::SimpleEnroll,
            }),
            Ok(Identity::LDevId { name, .. }) => Some(Device {
                serial: name.serial().clone(),
                operation: EstOperation::SimpleReenroll,
            }),
            Err(e) => {
                tracing::info!(error = %e, "TEAP client certificate refused");
                None
            }
        }
    }

    fn binding(&self) -> Vec<Tlv> {
        let mut cb = CryptoBinding {
            version: TEAP_VERSION,
            received_version: TEAP_VERSION,
            flags: 0,
            sub_type: CbSubType::Request,
            nonce: self.nonce,
            emsk_mac: [0; 20],
            msk_mac: [0; 20],
        };
        if let Some(k) = &self.keys {
            k.sign(
                &mut cb,
                &self.server_outer,
                self.peer_outer.as_deref().unwrap_or_default(),
            );
        }
        vec![cb.to_tlv(), Tlv::result(Status::SUCCESS)]
    }

    fn phase2_start(&mut self) -> Vec<Tlv> {
        let Some(device) = self.identify() else {
            self.state = State::FailureSent;
            return vec![
                Tlv::error(ErrorCode::CLIENT_CERTIFICATE_REJECTED),
                Tlv::result(Status::FAILURE),
            ];
        };
        let name = DeviceName::new(&device.serial, &self.cfg.trust.parent).ok();
        self.device = Some(device);
        if !self.cfg.request_csr {
            self.state = State::AwaitBinding;
            return self.binding();
        }
        let attrs = name.as_ref().and_then(|n| (self.cfg.csr_attrs)(n));
        let Some(attrs) = attrs else {
            self.state = State::FailureSent;
            return vec![
                Tlv::error(ErrorCode::BAD_IDENTITY_IN_CSR),
                Tlv::result(Status::FAILURE),
            ];
        };
        self.state = State::AwaitCsr;
        let request = Tlv::new(false, TlvType::PKCS10, Vec::new());
        // The Crypto-Binding and Result go along: a peer that ignores the CSR request (hostapd
        // 2.10 does; it cannot even send an empty reply) answers them and is done.
        match Tlv::request_action(1, Action::PROCESS_TLV, &[request]) {
            Ok(ra) => {
                let mut tlvs = vec![Tlv::new(false, TlvType::CSR_ATTRIBUTES, attrs), ra];
                tlvs.extend(self.binding());
                tlvs
            }
            Err(_) => {
                self.state = State::FailureSent;
                vec![
                    Tlv::error(ErrorCode::UNSPECIFIED_INFRASTRUCTURE_PROBLEM),
                    Tlv::result(Status::FAILURE),
                ]
            }
        }
    }

    fn phase2(&mut self, plain: &[u8]) -> Result<Step, TunnelError> {
        let id = self.eap_id;
        if self.state == State::FailureSent {
            // Whatever the peer says now (its Result(Failure), ideally), it is over.
            return Ok(self.reject(id));
        }
        let tlvs = match teap::decode(plain) {
            Ok(t) => t,
            Err(_) => return self.fail(ErrorCode::UNEXPECTED_TLVS),
        };
        // RFC 9930 §4.2: an unknown TLV with M set is answered with a NAK naming it; this
        // conversation cannot go on without it, so it fails.
        if let Some(t) = teap::first_unknown_mandatory(&tlvs, TlvType::is_defined) {
            self.state = State::FailureSent;
            return self.send_tlvs(&[Tlv::nak(t), Tlv::result(Status::FAILURE)]);
        }
        let find = |t: TlvType| tlvs.iter().find(|x| x.typ == t);
        if let Some(r) = find(TlvType::RESULT) {
            match r.status() {
                Ok(Status::SUCCESS) => {}
                Ok(_) => return Ok(self.reject(id)),
                Err(_) => return self.fail(ErrorCode::UNEXPECTED_TLVS),
            }
        }
        if find(TlvType::ERROR).is_some() {
            self.state = State::FailureSent;
            return self.send_tlvs(&[Tlv::result(Status::FAILURE)]);
        }
        match self.state {
            State::AwaitCsr => match find(TlvType::PKCS10) {
                _ if find(TlvType::CRYPTO_BINDING)
                    .is_some_and(|cb| !self.check_binding(&cb.value)) =>
                {
                    self.fail(ErrorCode::TUNNEL_COMPROMISE)
                }
                Some(t) if !t.value.is_empty() => {
                    let Some(d) = &self.device else {
                        return self.fail(ErrorCode::CLIENT_CERTIFICATE_REJECTED);
                    };
                    let (serial, operation) = (d.serial.clone(), d.operation);
                    if !self.csr_bound_here(&t.value) {
                        self.csr_refused = true;
                        return self.fail(ErrorCode::BAD_CSR);
                    }
                    self.roots_wanted = wants_roots(&tlvs);
                    self.state = State::Enrolling;
                    Ok(Step::Enroll {
                        csr_der: t.value.clone(),
                        serial,
                        operation,
                    })
                }
                Some(_) => self.fail(ErrorCode::BAD_CSR),
                None if self.cfg.allow_without_csr => {
                    // Already enrolled: the Crypto-Binding (checked above) and Result end it.
                    match (
                        &self.keys,
                        find(TlvType::CRYPTO_BINDING),
                        find(TlvType::RESULT),
                    ) {
                        (Some(keys), Some(_), Some(_)) => {
                            let msk = keys.msk;
                            if let Some(roots) = self.roots_for(&tlvs) {
                                // The trust anchors first; the peer's next Crypto-Binding and
                                // Result end it.
                                self.state = State::AwaitBinding;
                                let mut out = vec![roots];
                                out.extend(self.binding());
                                return self.send_tlvs(&out);
                            }
                            Ok(Step::Accept {
                                eap: EapPacket::outcome(EapCode::SUCCESS, id),
                                msk: Box::new(msk),
                            })
                        }
                        _ => self.fail(ErrorCode::TUNNEL_COMPROMISE),
                    }
                }
                None => self.fail(ErrorCode::UNSPECIFIED_AUTHORIZATION_FAILURE),
            },
            State::AwaitBinding => {
                let ok = match (find(TlvType::CRYPTO_BINDING), find(TlvType::RESULT)) {
                    (Some(cb), Some(_)) => self.check_binding(&cb.value),
                    _ => false,
                };
                if !ok {
                    return self.fail(ErrorCode::TUNNEL_COMPROMISE);
                }
                let Some(msk) = self.keys.as_ref().map(|k| k.msk) else {
                    return self.fail(ErrorCode::TUNNEL_COMPROMISE);
                };
                if let Some(roots) = self.roots_for(&tlvs) {
                    let mut out = vec![roots];
                    out.extend(self.binding());
                    return self.send_tlvs(&out);
                }
                Ok(Step::Accept {
                    eap: EapPacket::outcome(EapCode::SUCCESS, id),
                    msk: Box::new(msk),
                })
            }
            _ => self.fail(ErrorCode::UNEXPECTED_TLVS),
        }
    }

    /// RFC 9930 §3.8.2: a CSR that carries a channel binding must carry this tunnel's. A CSR
    /// that does not verify is left to the enrolment, which refuses it with its own error.
    fn csr_bound_here(&self, csr_der: &[u8]) -> bool {
        let Ok(csr) = csr::parse_and_verify(csr_der) else {
            return true;
        };
        let Some(ours) = &self.channel_binding else {
            return false;
        };
        match teap::check_csr_binding(&csr, ours) {
            CsrBinding::Matches => {
                tracing::debug!("TEAP CSR is bound to this tunnel (tls-exporter)");
                true
            }
            CsrBinding::Unbound => {
                tracing::info!("TEAP CSR carries no channel binding (allowed: RFC 9930 SHOULD)");
                true
            }
            CsrBinding::Mismatch => {
                tracing::warn!(
                    "TEAP CSR refused: its channel binding (challengePassword) is not this \
                     tunnel's, so it was made in another TLS session (replayed?): Error 1025"
                );
                false
            }
            CsrBinding::Malformed => {
                tracing::info!("TEAP CSR refused: malformed challengePassword: Error 1025");
                false
            }
        }
    }

    /// The Trusted-Server-Root answer, once, when the peer asked in `tlvs` and roots are
    /// configured.
    fn roots_for(&mut self, tlvs: &[Tlv]) -> Option<Tlv> {
        if !(self.roots_wanted || wants_roots(tlvs)) || self.roots_sent {
            return None;
        }
        self.roots_wanted = false;
        let p7 = self.cfg.trusted_server_roots.as_ref()?;
        let inner = Tlv::new(false, TlvType::PKCS7, p7.clone());
        match Tlv::trusted_server_root(CredentialFormat::PKCS7_SERVER_CERTIFICATE_ROOT, &[inner]) {
            Ok(t) => {
                self.roots_sent = true;
                tracing::info!("TEAP Trusted-Server-Root: sending the ACME trust anchor(s)");
                Some(t)
            }
            Err(e) => {
                tracing::warn!(error = %e, "TEAP Trusted-Server-Root: roots too large for a TLV");
                None
            }
        }
    }

    fn check_binding(&self, value: &[u8]) -> bool {
        let Ok(cb) = CryptoBinding::decode(value) else {
            return false;
        };
        let mut want_nonce = self.nonce;
        want_nonce[31] |= 1;
        let Some(keys) = &self.keys else {
            return false;
        };
        cb.version == TEAP_VERSION
            && cb.sub_type == CbSubType::Response
            && cb.nonce == want_nonce
            && keys.verify(
                &cb,
                &self.server_outer,
                self.peer_outer.as_deref().unwrap_or_default(),
            )
    }

    /// True once after the session itself refused the peer's CSR (a channel binding that is
    /// not this tunnel's), so that the caller can count it with the RA's refusals.
    pub fn take_csr_refusal(&mut self) -> bool {
        std::mem::take(&mut self.csr_refused)
    }

    /// Continues after the enrolment the last [`Step::Enroll`] asked for.
    pub fn enrolled(&mut self, result: Enrolled) -> Step {
        if self.state != State::Enrolling {
            return self.reject(self.eap_id);
        }
        let r = match result {
            Enrolled::Issued(p7) => {
                self.state = State::AwaitBinding;
                let mut tlvs = vec![Tlv::new(false, TlvType::PKCS7, p7)];
                tlvs.extend(self.roots_for(&[]));
                tlvs.extend(self.binding());
                self.send_tlvs(&tlvs)
            }
            Enrolled::Failed(code) => self.fail(code),
        };
        r.unwrap_or_else(|e| {
            tracing::info!(error = %e, "TEAP tunnel failed");
            self.reject(self.eap_id)
        })
    }
}

/// Whether the peer asks for the server's trust roots: a Trusted-Server-Root TLV with
/// Credential-Format PKCS#7-Server-Certificate-Root (RFC 9930 §4.2.18); any other format is
/// ignored.
fn wants_roots(tlvs: &[Tlv]) -> bool {
    tlvs.iter().any(|t| {
        matches!(
            t.trusted_server_root_parts(),
            Ok((CredentialFormat::PKCS7_SERVER_CERTIFICATE_ROOT, _))
        )
    })
}
