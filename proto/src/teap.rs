//! TEAP version 1 TLVs and key derivation (RFC 9930, which obsoletes RFC 7170).
//!
//! TLV wire form (RFC 9930 §4.2): `M(1) R(1) Type(14) | Length(16) | Value`. Unknown types are
//! kept ([`TlvType`] is an open newtype); [`first_unknown_mandatory`] finds the TLV a receiver
//! must NAK. Typed bodies for the TLVs Estuary uses: Result, NAK, Error, Request-Action,
//! Intermediate-Result, Crypto-Binding; PKCS#7, PKCS#10 and CSR-Attributes carry raw DER.
//!
//! Key derivation (RFC 9930 §6; hostapd 2.10 does the same for a peer authenticated by its
//! certificate alone): `session_key_seed` = TLS exporter "EXPORTER: teap session key seed"
//! (40 octets, no context) = S-IMCK\[0\]. Without an inner method, CMK comes from
//! IMCK = TLS-PRF(S-IMCK\[0\], "Inner Methods Compound Keys", 32 zero octets, 60), last 20
//! octets; MSK/EMSK = TLS-PRF(S-IMCK\[0\], "\[Extended \]Session Key Generating Function", 64).
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384};
use thiserror::Error;

/// A TEAP TLV type (14 bits). Unknown values are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlvType(pub u16);

impl TlvType {
    /// 1, RFC 9930 §4.2.2.
    pub const AUTHORITY_ID: Self = Self(1);
    /// 2, §4.2.3.
    pub const IDENTITY_TYPE: Self = Self(2);
    /// 3, §4.2.4.
    pub const RESULT: Self = Self(3);
    /// 4, §4.2.5.
    pub const NAK: Self = Self(4);
    /// 5, §4.2.6.
    pub const ERROR: Self = Self(5);
    /// 6, §4.2.7.
    pub const CHANNEL_BINDING: Self = Self(6);
    /// 7, §4.2.8.
    pub const VENDOR_SPECIFIC: Self = Self(7);
    /// 8, §4.2.9.
    pub const REQUEST_ACTION: Self = Self(8);
    /// 9, §4.2.10.
    pub const EAP_PAYLOAD: Self = Self(9);
    /// 10, §4.2.11.
    pub const INTERMEDIATE_RESULT: Self = Self(10);
    /// 11 (PAC, deprecated by RFC 9930).
    pub const PAC: Self = Self(11);
    /// 12, §4.2.13.
    pub const CRYPTO_BINDING: Self = Self(12);
    /// 13, §4.2.14.
    pub const BASIC_PASSWORD_AUTH_REQ: Self = Self(13);
    /// 14, §4.2.15.
    pub const BASIC_PASSWORD_AUTH_RESP: Self = Self(14);
    /// 15, §4.2.16: certificates-only PKCS#7 (DER).
    pub const PKCS7: Self = Self(15);
    /// 16, §4.2.17: a PKCS#10 CSR (DER).
    pub const PKCS10: Self = Self(16);
    /// 17, §4.2.18.
    pub const TRUSTED_SERVER_ROOT: Self = Self(17);
    /// 18, §4.2.19: CsrAttrs DER (RFC 9908), not base64.
    pub const CSR_ATTRIBUTES: Self = Self(18);
    /// 19, §4.2.20.
    pub const IDENTITY_HINT: Self = Self(19);

    /// Types defined by RFC 9930 (the ones a conforming implementation recognises).
    pub fn is_defined(self) -> bool {
        (1..=19).contains(&self.0)
    }
}

/// Status values of Result, Intermediate-Result (16 bits) and Request-Action (8 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

impl Status {
    /// 1
    pub const SUCCESS: Self = Self(1);
    /// 2
    pub const FAILURE: Self = Self(2);
}

/// Error-Code of the Error TLV (RFC 9930 §4.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// 1001
    pub const INNER_METHOD_ERROR: Self = Self(1001);
    /// 1002
    pub const UNSPECIFIED_INFRASTRUCTURE_PROBLEM: Self = Self(1002);
    /// 1003
    pub const UNSPECIFIED_AUTHENTICATION_FAILURE: Self = Self(1003);
    /// 1004
    pub const UNSPECIFIED_AUTHORIZATION_FAILURE: Self = Self(1004);
    /// 1009
    pub const INFRASTRUCTURE_UNAVAILABLE: Self = Self(1009);
    /// 1019
    pub const CLIENT_CERTIFICATE_NOT_SUPPLIED: Self = Self(1019);
    /// 1020
    pub const CLIENT_CERTIFICATE_REJECTED: Self = Self(1020);
    /// 1022
    pub const UNSUPPORTED_ALGORITHM_IN_CSR: Self = Self(1022);
    /// 1023
    pub const UNSUPPORTED_EXTENSION_IN_CSR: Self = Self(1023);
    /// 1024
    pub const BAD_IDENTITY_IN_CSR: Self = Self(1024);
    /// 1025
    pub const BAD_CSR: Self = Self(1025);
    /// 1026
    pub const INTERNAL_CA_ERROR: Self = Self(1026);
    /// 1027
    pub const GENERAL_PKI_ERROR: Self = Self(1027);
    /// 2001: fatal, the tunnel is compromised (e.g. a Crypto-Binding that does not verify).
    pub const TUNNEL_COMPROMISE: Self = Self(2001);
    /// 2002: fatal, unexpected or malformed TLVs.
    pub const UNEXPECTED_TLVS: Self = Self(2002);
}

/// Request-Action actions (RFC 9930 §4.2.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Action(pub u8);

impl Action {
    /// 1: process the TLVs carried in the Request-Action.
    pub const PROCESS_TLV: Self = Self(1);
    /// 2: negotiate another inner EAP method.
    pub const NEGOTIATE_EAP: Self = Self(2);
}

/// Why bytes are not valid TEAP TLVs.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum TlvError {
    /// A TLV header or value runs past the end of the data.
    #[error("TLV truncated at offset {0}")]
    Truncated(usize),
    /// A TLV's value has the wrong size or shape for its type.
    #[error("TLV {0:?} malformed")]
    Malformed(TlvType),
    /// A value too long for the 16-bit Length field.
    #[error("TLV value too long ({0} octets)")]
    TooLong(usize),
}

/// One TLV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv {
    /// The M bit: the receiver must understand this TLV or NAK it.
    pub mandatory: bool,
    /// The type (R bit dropped on receipt, sent as zero).
    pub typ: TlvType,
    /// The value.
    pub value: Vec<u8>,
}

impl Tlv {
    /// A TLV.
    pub fn new(mandatory: bool, typ: TlvType, value: Vec<u8>) -> Self {
        Self {
            mandatory,
            typ,
            value,
        }
    }

    /// Result TLV (mandatory).
    pub fn result(s: Status) -> Self {
        Self::new(true, TlvType::RESULT, s.0.to_be_bytes().to_vec())
    }

    /// Intermediate-Result TLV without inner TLVs.
    pub fn intermediate_result(s: Status) -> Self {
        Self::new(
            true,
            TlvType::INTERMEDIATE_RESULT,
            s.0.to_be_bytes().to_vec(),
        )
    }

    /// Error TLV (mandatory).
    pub fn error(code: ErrorCode) -> Self {
        Self::new(true, TlvType::ERROR, code.0.to_be_bytes().to_vec())
    }

    /// NAK TLV naming an unsupported TLV type (Vendor-Id 0), RFC 9930 §4.2.5.
    pub fn nak(of: TlvType) -> Self {
        let mut v = 0u32.to_be_bytes().to_vec();
        v.extend_from_slice(&of.0.to_be_bytes());
        Self::new(true, TlvType::NAK, v)
    }

    /// Request-Action TLV carrying TLVs for the other side to process.
    pub fn request_action(status: u8, action: Action, tlvs: &[Tlv]) -> Result<Self, TlvError> {
        let mut v = vec![status, action.0];
        v.extend_from_slice(&encode(tlvs)?);
        Ok(Self::new(true, TlvType::REQUEST_ACTION, v))
    }

    /// The 2-octet status of a Result or Intermediate-Result TLV.
    pub fn status(&self) -> Result<Status, TlvError> {
        match self.value.as_slice() {
            [a, b, ..] if self.typ == TlvType::INTERMEDIATE_RESULT => {
                Ok(Status(u16::from_be_bytes([*a, *b])))
            }
            [a, b] => Ok(Status(u16::from_be_bytes([*a, *b]))),
            _ => Err(TlvError::Malformed(self.typ)),
        }
    }

    /// The code of an Error TLV.
    pub fn error_code(&self) -> Result<ErrorCode, TlvError> {
        match self.value.as_slice() {
            [a, b, c, d] => Ok(ErrorCode(u32::from_be_bytes([*a, *b, *c, *d]))),
            _ => Err(TlvError::Malformed(self.typ)),
        }
    }

    /// (status, action, inner TLVs) of a Request-Action TLV.
    pub fn request_action_parts(&self) -> Result<(u8, Action, Vec<Tlv>), TlvError> {
        match self.value.as_slice() {
            [s, a, rest @ ..] => Ok((*s, Action(*a), decode(rest)?)),
            _ => Err(TlvError::Malformed(self.typ)),
        }
    }

    /// (Vendor-Id, NAK-Type) of a NAK TLV.
    pub fn nak_parts(&self) -> Result<(u32, TlvType), TlvError> {
        match self.value.as_slice() {
            [a, b, c, d, e, f, ..] => Ok((
                u32::from_be_bytes([*a, *b, *c, *d]),
                TlvType(u16::from_be_bytes([*e, *f])),
            )),
            _ => Err(TlvError::Malformed(self.typ)),
        }
    }
}

/// Credential-Format of the Trusted-Server-Root TLV (RFC 9930 §4.2.18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CredentialFormat(pub u16);

impl CredentialFormat {
    /// 1: PKCS#7-Server-Certificate-Root (the Cred TLVs hold a PKCS#7 TLV).
    pub const PKCS7_SERVER_CERTIFICATE_ROOT: Self = Self(1);
}

impl Tlv {
    /// Trusted-Server-Root TLV (RFC 9930 §4.2.18, always optional): a peer's request leaves
    /// `cred_tlvs` empty; the server's answer carries one PKCS#7 TLV of the roots.
    pub fn trusted_server_root(
        format: CredentialFormat,
        cred_tlvs: &[Tlv],
    ) -> Result<Self, TlvError> {
        let mut v = format.0.to_be_bytes().to_vec();
        v.extend_from_slice(&encode(cred_tlvs)?);
        Ok(Self::new(false, TlvType::TRUSTED_SERVER_ROOT, v))
    }

    /// (Credential-Format, Cred TLVs) of a Trusted-Server-Root TLV (at least 2 octets).
    pub fn trusted_server_root_parts(&self) -> Result<(CredentialFormat, Vec<Tlv>), TlvError> {
        match self.value.as_slice() {
            [a, b, rest @ ..] if self.typ == TlvType::TRUSTED_SERVER_ROOT => Ok((
                CredentialFormat(u16::from_be_bytes([*a, *b])),
                decode(rest)?,
            )),
            _ => Err(TlvError::Malformed(self.typ)),
        }
    }
}

/// The TLS exporter label of the `tls-exporter` channel binding (RFC 9266 §2): 32 octets,
/// empty context.
pub const TLS_EXPORTER_CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// Length of the `tls-exporter` channel binding (RFC 9266 §2).
pub const CHANNEL_BINDING_LEN: usize = 32;

/// The challengePassword text that binds a CSR to the tunnel it is sent in (RFC 9930 §3.8.2):
/// the channel binding in base64 (RFC 4648 §4, padded).
pub fn csr_binding_text(channel_binding: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(channel_binding)
}

/// The values SET of a challengePassword attribute (RFC 2985 §5.4.1) holding `text` as a
/// PrintableString (the base64 alphabet is printable): DER, for a CSR builder that takes raw
/// attribute values. `None` when `text` is empty, over 127 octets or not printable.
pub fn challenge_password_values(text: &str) -> Option<Vec<u8>> {
    let printable = |c: u8| c.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&c);
    let len = u8::try_from(text.len())
        .ok()
        .filter(|n| (1..128).contains(n))?;
    if !text.bytes().all(printable) {
        return None;
    }
    // SET { PrintableString }: both lengths fit the short form.
    let mut out = vec![0x31, len + 2, 0x13, len];
    out.extend_from_slice(text.as_bytes());
    Some(out)
}

/// What a CSR says about the tunnel it was made in (RFC 9930 §3.8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrBinding {
    /// No challengePassword, or an empty one: the peer sent no channel binding (allowed: the
    /// binding is a SHOULD).
    Unbound,
    /// The challengePassword is this tunnel's channel binding.
    Matches,
    /// A challengePassword that is not this tunnel's channel binding: a CSR made in another
    /// TLS session (replayed), or a binding this server cannot check.
    Mismatch,
    /// The challengePassword attribute is malformed.
    Malformed,
}

/// Compares a verified CSR's challengePassword with this tunnel's channel binding. "Any
/// value submitted is verified by the server" (RFC 9930 §3.8.2): a value that is not the
/// base64 of `channel_binding` is a [`CsrBinding::Mismatch`].
pub fn check_csr_binding(csr: &crate::csr::VerifiedCsr, channel_binding: &[u8]) -> CsrBinding {
    use base64::Engine as _;
    let text = match csr.challenge_password() {
        Ok(None) => return CsrBinding::Unbound,
        Ok(Some(t)) => t,
        Err(_) => return CsrBinding::Malformed,
    };
    let Ok(got) = base64::engine::general_purpose::STANDARD.decode(text.trim()) else {
        return CsrBinding::Mismatch;
    };
    let same = got.len() == channel_binding.len()
        && got
            .iter()
            .zip(channel_binding)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        CsrBinding::Matches
    } else {
        CsrBinding::Mismatch
    }
}

/// Parses a sequence of TLVs; anything left over that is not a whole TLV is an error.
pub fn decode(mut b: &[u8]) -> Result<Vec<Tlv>, TlvError> {
    let total = b.len();
    let mut out = Vec::new();
    while !b.is_empty() {
        let off = total - b.len();
        if b.len() < 4 {
            return Err(TlvError::Truncated(off));
        }
        let t = u16::from_be_bytes([b[0], b[1]]);
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if b.len() - 4 < len {
            return Err(TlvError::Truncated(off));
        }
        out.push(Tlv {
            mandatory: t & 0x8000 != 0,
            typ: TlvType(t & 0x3fff),
            value: b[4..4 + len].to_vec(),
        });
        b = &b[4 + len..];
    }
    Ok(out)
}

/// Encodes TLVs.
pub fn encode(tlvs: &[Tlv]) -> Result<Vec<u8>, TlvError> {
    let mut out = Vec::new();
    for t in tlvs {
        let len = u16::try_from(t.value.len()).map_err(|_| TlvError::TooLong(t.value.len()))?;
        let ty = (t.typ.0 & 0x3fff) | if t.mandatory { 0x8000 } else { 0 };
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&t.value);
    }
    Ok(out)
}

/// The first TLV with M set whose type `known` does not recognise: RFC 9930 §4.2 says the
/// receiver answers it with a NAK TLV naming that type.
pub fn first_unknown_mandatory(tlvs: &[Tlv], known: impl Fn(TlvType) -> bool) -> Option<TlvType> {
    tlvs.iter()
        .find(|t| t.mandatory && !known(t.typ))
        .map(|t| t.typ)
}

/// Crypto-Binding Sub-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CbSubType {
    /// 0, sent by the server.
    Request,
    /// 1, the peer's answer.
    Response,
}

/// Length of the Crypto-Binding TLV's value (RFC 9930 §4.2.13).
pub const CRYPTO_BINDING_LEN: usize = 76;
/// Flags: EMSK Compound MAC present.
pub const CB_FLAG_EMSK: u8 = 1;
/// Flags: MSK Compound MAC present.
pub const CB_FLAG_MSK: u8 = 2;

/// The Crypto-Binding TLV's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoBinding {
    /// Version (1).
    pub version: u8,
    /// The version received in the TEAP/Start (1).
    pub received_version: u8,
    /// 1 EMSK, 2 MSK, 3 both.
    pub flags: u8,
    /// Request or Response.
    pub sub_type: CbSubType,
    /// Server nonce has its last bit 0; the peer answers with it plus one.
    pub nonce: [u8; 32],
    /// EMSK Compound MAC.
    pub emsk_mac: [u8; 20],
    /// MSK Compound MAC.
    pub msk_mac: [u8; 20],
}

impl CryptoBinding {
    /// Parses the value of a Crypto-Binding TLV.
    pub fn decode(v: &[u8]) -> Result<Self, TlvError> {
        if v.len() != CRYPTO_BINDING_LEN {
            return Err(TlvError::Malformed(TlvType::CRYPTO_BINDING));
        }
        let sub_type = match v[3] & 0x0f {
            0 => CbSubType::Request,
            1 => CbSubType::Response,
            _ => return Err(TlvError::Malformed(TlvType::CRYPTO_BINDING)),
        };
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&v[4..36]);
        let mut emsk_mac = [0u8; 20];
        emsk_mac.copy_from_slice(&v[36..56]);
        let mut msk_mac = [0u8; 20];
        msk_mac.copy_from_slice(&v[56..76]);
        Ok(Self {
            version: v[1],
            received_version: v[2],
            flags: v[3] >> 4,
            sub_type,
            nonce,
            emsk_mac,
            msk_mac,
        })
    }

    /// The value octets.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CRYPTO_BINDING_LEN);
        v.push(0);
        v.push(self.version);
        v.push(self.received_version);
        let st = match self.sub_type {
            CbSubType::Request => 0,
            CbSubType::Response => 1,
        };
        v.push((self.flags << 4) | st);
        v.extend_from_slice(&self.nonce);
        v.extend_from_slice(&self.emsk_mac);
        v.extend_from_slice(&self.msk_mac);
        v
    }

    /// As a (mandatory) TLV.
    pub fn to_tlv(&self) -> Tlv {
        Tlv::new(true, TlvType::CRYPTO_BINDING, self.encode())
    }

    /// The Compound MAC input (RFC 9930 §6.3): this Crypto-Binding TLV with both MACs zeroed,
    /// the EAP type (55), the outer TLVs of the server's first message, then those of the
    /// peer's first message.
    pub fn mac_input(&self, server_outer: &[u8], peer_outer: &[u8]) -> Vec<u8> {
        let zeroed = Self {
            emsk_mac: [0; 20],
            msk_mac: [0; 20],
            ..self.clone()
        };
        // Infallible: 76 octets.
        let mut buf = encode(&[zeroed.to_tlv()]).unwrap_or_default();
        buf.push(crate::eap::EapType::TEAP.0);
        buf.extend_from_slice(server_outer);
        buf.extend_from_slice(peer_outer);
        buf
    }
}

/// The hash of the TLS PRF (the cipher suite's hash; RFC 9930 uses the TLS 1.2 PRF form with
/// it for TLS 1.3 too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrfHash {
    /// SHA-256 suites.
    Sha256,
    /// SHA-384 suites.
    Sha384,
}

fn hmac(h: PrfHash, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match h {
        PrfHash::Sha256 => {
            let mut m =
                <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        PrfHash::Sha384 => {
            let mut m =
                <Hmac<Sha384> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
    }
}

// HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
fn unreachable_hmac<T>() -> T {
    unreachable!("HMAC takes keys of any length")
}

/// TLS 1.2 PRF (RFC 5246 §5): P_hash(secret, label ‖ seed) truncated to `len`.
pub fn tls_prf(h: PrfHash, secret: &[u8], label: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 48);
    let mut a = hmac(h, secret, &[label, seed]);
    while out.len() < len {
        out.extend_from_slice(&hmac(h, secret, &[&a, label, seed]));
        a = hmac(h, secret, &[&a]);
    }
    out.truncate(len);
    out
}

/// The label of the TLS exporter that gives `session_key_seed` (40 octets, no context).
pub const SESSION_KEY_SEED_LABEL: &[u8] = b"EXPORTER: teap session key seed";

/// Keys of a TEAP session where the peer authenticated by certificate and no inner method ran.
#[derive(Clone)]
pub struct TeapKeys {
    /// The PRF's hash.
    pub hash: PrfHash,
    /// CMK for the MSK Compound MAC.
    pub cmk_msk: [u8; 20],
    /// MSK (RFC 9930 §6.4).
    pub msk: [u8; 64],
    /// EMSK.
    pub emsk: [u8; 64],
}

impl std::fmt::Debug for TeapKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeapKeys")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl TeapKeys {
    /// Derives the keys from the 40-octet `session_key_seed`.
    pub fn without_inner_method(hash: PrfHash, session_key_seed: &[u8; 40]) -> Self {
        let imck = tls_prf(
            hash,
            session_key_seed,
            b"Inner Methods Compound Keys",
            &[0u8; 32],
            60,
        );
        let mut cmk_msk = [0u8; 20];
        cmk_msk.copy_from_slice(&imck[40..60]);
        let mut msk = [0u8; 64];
        msk.copy_from_slice(&tls_prf(
            hash,
            session_key_seed,
            b"Session Key Generating Function",
            &[],
            64,
        ));
        let mut emsk = [0u8; 64];
        emsk.copy_from_slice(&tls_prf(
            hash,
            session_key_seed,
            b"Extended Session Key Generating Function",
            &[],
            64,
        ));
        Self {
            hash,
            cmk_msk,
            msk,
            emsk,
        }
    }

    /// Compound MAC = first 20 octets of HMAC(CMK, BUFFER) with the PRF's hash.
    pub fn compound_mac(&self, buffer: &[u8]) -> [u8; 20] {
        let full = hmac(self.hash, &self.cmk_msk, &[buffer]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&full[..20]);
        out
    }

    /// Fills in the MSK Compound MAC of `cb` (flags = MSK only).
    pub fn sign(&self, cb: &mut CryptoBinding, server_outer: &[u8], peer_outer: &[u8]) {
        cb.flags = CB_FLAG_MSK;
        cb.emsk_mac = [0; 20];
        cb.msk_mac = [0; 20];
        cb.msk_mac = self.compound_mac(&cb.mac_input(server_outer, peer_outer));
    }

    /// Checks the MSK Compound MAC of a received Crypto-Binding (constant time).
    pub fn verify(&self, cb: &CryptoBinding, server_outer: &[u8], peer_outer: &[u8]) -> bool {
        if cb.flags & CB_FLAG_MSK == 0 {
            return false;
        }
        let want = self.compound_mac(&cb.mac_input(server_outer, peer_outer));
        want.iter()
            .zip(cb.msk_mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn result_tlv_wire_form() {
        // RFC 9930 §4.2.4: M=1, Type 3, Length 2, Status 1 (Success).
        let b = encode(&[Tlv::result(Status::SUCCESS)]).expect("encode");
        assert_eq!(b, [0x80, 0x03, 0x00, 0x02, 0x00, 0x01]);
        let back = decode(&b).expect("decode");
        assert_eq!(back[0].status(), Ok(Status::SUCCESS));
        assert!(back[0].mandatory);
    }

    #[test]
    fn nak_and_error_wire_forms() {
        let b = encode(&[
            Tlv::nak(TlvType(0x1234)),
            Tlv::error(ErrorCode::UNEXPECTED_TLVS),
        ])
        .expect("encode");
        assert_eq!(
            b,
            [
                0x80, 0x04, 0x00, 0x06, 0, 0, 0, 0, 0x12, 0x34, // NAK
                0x80, 0x05, 0x00, 0x04, 0, 0, 0x07, 0xd2, // Error 2002
            ]
        );
        let t = decode(&b).expect("decode");
        assert_eq!(t[0].nak_parts(), Ok((0, TlvType(0x1234))));
        assert_eq!(t[1].error_code(), Ok(ErrorCode::UNEXPECTED_TLVS));
    }

    /// A P-256 CSR for `dev.iot.example.test`, with these raw attributes.
    fn csr_with(attrs: Vec<rcgen::Attribute>) -> crate::csr::VerifiedCsr {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["dev.iot.example.test".into()]).expect("params");
        let der = params
            .serialize_request_with_attributes(&key, attrs)
            .expect("csr")
            .der()
            .to_vec();
        crate::csr::parse_and_verify(&der).expect("verifies")
    }

    const CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];

    fn cp(values: Vec<u8>) -> rcgen::Attribute {
        rcgen::Attribute {
            oid: CHALLENGE_PASSWORD,
            values,
        }
    }

    /// RFC 9930 §3.8.2: the binding is the base64 channel binding in challengePassword; a
    /// CSR without one is unbound, one from another tunnel is a mismatch.
    #[test]
    fn csr_channel_binding_matches_only_its_own_tunnel() {
        let ours = [7u8; CHANNEL_BINDING_LEN];
        let theirs = [8u8; CHANNEL_BINDING_LEN];
        let text = csr_binding_text(&ours);
        assert_eq!(text.len(), 44);
        let values = challenge_password_values(&text).expect("printable");
        let bound = csr_with(vec![cp(values)]);
        assert_eq!(bound.challenge_password(), Ok(Some(text.as_str())));
        assert_eq!(check_csr_binding(&bound, &ours), CsrBinding::Matches);
        assert_eq!(check_csr_binding(&bound, &theirs), CsrBinding::Mismatch);
        // A tls-unique-sized value (12 octets) is no binding of ours either.
        let short = challenge_password_values(&csr_binding_text(&[7u8; 12])).expect("ok");
        assert_eq!(
            check_csr_binding(&csr_with(vec![cp(short)]), &ours),
            CsrBinding::Mismatch
        );
        // Not base64 at all.
        let junk = challenge_password_values("not-base64?").expect("printable");
        assert_eq!(
            check_csr_binding(&csr_with(vec![cp(junk)]), &ours),
            CsrBinding::Mismatch
        );
        assert_eq!(
            check_csr_binding(&csr_with(vec![]), &ours),
            CsrBinding::Unbound
        );
        // "the challengePassword field MUST be empty" when there is no binding.
        let empty = vec![0x31, 0x02, 0x13, 0x00];
        assert_eq!(
            check_csr_binding(&csr_with(vec![cp(empty)]), &ours),
            CsrBinding::Unbound
        );
    }

    #[test]
    fn malformed_challenge_passwords_are_errors_not_panics() {
        let ours = [7u8; CHANNEL_BINDING_LEN];
        let t = csr_binding_text(&ours);
        let one = challenge_password_values(&t).expect("ok");
        let other = challenge_password_values("other").expect("ok");
        // Two (different: DER sets hold no duplicates) values in the SET.
        let mut two = vec![0x31, t.len() as u8 + 2 + 7, 0x13, 5];
        two.extend_from_slice(b"other");
        two.extend_from_slice(&[0x13, t.len() as u8]);
        two.extend_from_slice(t.as_bytes());
        // An INTEGER, and a BMPString: not strings Estuary reads.
        let int = vec![0x31, 0x03, 0x02, 0x01, 0x05];
        let bmp = vec![0x31, 0x04, 0x1e, 0x02, 0x00, 0x41];
        for attrs in [
            vec![cp(two)],
            vec![cp(int)],
            vec![cp(bmp)],
            vec![cp(one), cp(other)],
        ] {
            let csr = csr_with(attrs);
            assert_eq!(
                csr.challenge_password(),
                Err(crate::csr::CsrError::BadChallengePassword)
            );
            assert_eq!(check_csr_binding(&csr, &ours), CsrBinding::Malformed);
        }
        assert_eq!(challenge_password_values(""), None);
        assert_eq!(challenge_password_values("a\u{e9}"), None);
        assert_eq!(challenge_password_values(&"a".repeat(128)), None);
    }

    /// RFC 9930 §4.2.18: Credential-Format (2 octets) then Cred TLVs; a request may be empty.
    #[test]
    fn trusted_server_root_wire_form() {
        let req = Tlv::trusted_server_root(CredentialFormat::PKCS7_SERVER_CERTIFICATE_ROOT, &[])
            .expect("tlv");
        assert_eq!(
            encode(std::slice::from_ref(&req)).expect("encode"),
            [0x00, 0x11, 0x00, 0x02, 0x00, 0x01]
        );
        assert!(!req.mandatory);
        let p7 = Tlv::new(false, TlvType::PKCS7, vec![0x30, 0x00]);
        let resp = Tlv::trusted_server_root(
            CredentialFormat::PKCS7_SERVER_CERTIFICATE_ROOT,
            std::slice::from_ref(&p7),
        )
        .expect("tlv");
        assert_eq!(
            resp.trusted_server_root_parts(),
            Ok((CredentialFormat::PKCS7_SERVER_CERTIFICATE_ROOT, vec![p7]))
        );
        for bad in [vec![], vec![0x00], vec![0x00, 0x01, 0x80]] {
            let t = Tlv::new(false, TlvType::TRUSTED_SERVER_ROOT, bad);
            assert!(t.trusted_server_root_parts().is_err());
        }
    }

    #[test]
    fn request_action_carries_inner_tlvs() {
        let inner = [Tlv::new(false, TlvType::PKCS10, Vec::new())];
        let ra = Tlv::request_action(1, Action::PROCESS_TLV, &inner).expect("tlv");
        let (s, a, tlvs) = ra.request_action_parts().expect("parts");
        assert_eq!((s, a), (1, Action::PROCESS_TLV));
        assert_eq!(tlvs, inner);
    }

    #[test]
    fn the_r_bit_is_ignored_and_the_m_bit_kept() {
        let t = decode(&[0xc0, 0x10, 0, 1, 9]).expect("decode");
        assert_eq!(t[0].typ, TlvType::PKCS10);
        assert!(t[0].mandatory);
    }

    #[test]
    fn unknown_mandatory_is_found_and_unknown_optional_is_not() {
        let tlvs = [
            Tlv::new(false, TlvType(999), vec![]),
            Tlv::result(Status::SUCCESS),
            Tlv::new(true, TlvType(1000), vec![1]),
        ];
        assert_eq!(
            first_unknown_mandatory(&tlvs, TlvType::is_defined),
            Some(TlvType(1000))
        );
        assert_eq!(
            first_unknown_mandatory(&tlvs[..2], TlvType::is_defined),
            None
        );
    }

    #[test]
    fn every_prefix_of_tlvs_is_an_error_or_fewer_tlvs() {
        let b = encode(&[
            Tlv::result(Status::FAILURE),
            Tlv::new(false, TlvType::PKCS7, vec![7; 40]),
        ])
        .expect("encode");
        for i in 0..b.len() {
            match decode(&b[..i]) {
                Ok(t) => assert!(t.len() < 2, "prefix {i}"),
                Err(TlvError::Truncated(_)) => {}
                Err(e) => panic!("prefix {i}: {e}"),
            }
        }
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert!(Tlv::new(true, TlvType::RESULT, vec![1]).status().is_err());
        assert!(Tlv::new(true, TlvType::ERROR, vec![1, 2])
            .error_code()
            .is_err());
        assert!(CryptoBinding::decode(&[0; 75]).is_err());
        let mut v = [0u8; 76];
        v[3] = 0x25;
        assert!(CryptoBinding::decode(&v).is_err());
    }

    #[test]
    fn tls12_prf_sha256_known_answer() {
        // The widely published TLS 1.2 PRF (SHA-256) test vector (IETF TLS WG mailing list,
        // used by many TLS test suites): secret 9bbe436b..., label "test label".
        let secret = hex::decode("9bbe436ba940f017b17652849a71db35").expect("hex");
        let seed = hex::decode("a0ba9f936cda311827a6f796ffd5198c").expect("hex");
        let out = tls_prf(PrfHash::Sha256, &secret, b"test label", &seed, 100);
        assert_eq!(hex::encode(&out[..16]), "e3f229ba727be17b8d122620557cd453");
    }

    #[test]
    fn crypto_binding_signs_and_verifies_and_detects_change() {
        let keys = TeapKeys::without_inner_method(PrfHash::Sha256, &[5u8; 40]);
        let mut cb = CryptoBinding {
            version: 1,
            received_version: 1,
            flags: 0,
            sub_type: CbSubType::Request,
            nonce: [2; 32],
            emsk_mac: [0; 20],
            msk_mac: [0; 20],
        };
        let outer =
            encode(&[Tlv::new(false, TlvType::AUTHORITY_ID, b"estuary".to_vec())]).expect("encode");
        keys.sign(&mut cb, &outer, &[]);
        assert!(keys.verify(&cb, &outer, &[]));
        assert!(!keys.verify(&cb, &[], &[]));
        let mut other = cb.clone();
        other.nonce[0] ^= 1;
        assert!(!keys.verify(&other, &outer, &[]));
        let back = CryptoBinding::decode(&cb.encode()).expect("decode");
        assert_eq!(back, cb);
    }

    proptest! {
        #[test]
        fn tlvs_round_trip(items in proptest::collection::vec(
            (any::<bool>(), 0u16..0x4000, proptest::collection::vec(any::<u8>(), 0..40)), 0..6)) {
            let tlvs: Vec<Tlv> = items.into_iter().map(|(m, t, v)| Tlv::new(m, TlvType(t), v)).collect();
            let b = encode(&tlvs).expect("encode");
            prop_assert_eq!(decode(&b).expect("decode"), tlvs);
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(tlvs) = decode(&b) {
                for t in &tlvs {
                    let _ = t.status();
                    let _ = t.error_code();
                    let _ = t.request_action_parts();
                    let _ = t.nak_parts();
                    let _ = CryptoBinding::decode(&t.value);
                }
            }
        }
    }
}
