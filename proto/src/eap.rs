//! EAP packets (RFC 3748 §4) and the EAP-TEAP framing (RFC 9930 §4.1): flags, version,
//! Message Length, Outer TLV Length, TLS data and outer TLVs.
//!
//! Pure codecs; fragmentation state machines live with the I/O (control plane, peer).
use thiserror::Error;

/// EAP Code (RFC 3748 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EapCode(pub u8);

impl EapCode {
    /// 1, Request.
    pub const REQUEST: Self = Self(1);
    /// 2, Response.
    pub const RESPONSE: Self = Self(2);
    /// 3, Success.
    pub const SUCCESS: Self = Self(3);
    /// 4, Failure.
    pub const FAILURE: Self = Self(4);
}

/// EAP method Type (RFC 3748 §5, IANA "EAP Method Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EapType(pub u8);

impl EapType {
    /// 1, Identity.
    pub const IDENTITY: Self = Self(1);
    /// 2, Notification.
    pub const NOTIFICATION: Self = Self(2);
    /// 3, Legacy Nak (RFC 3748 §5.3.1).
    pub const NAK: Self = Self(3);
    /// 55, TEAP (RFC 9930).
    pub const TEAP: Self = Self(55);
}

/// Why bytes are not an EAP or TEAP packet.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum EapError {
    /// Shorter than its header or its Length field.
    #[error("EAP packet truncated")]
    Truncated,
    /// The Length field disagrees with the bytes received.
    #[error("EAP Length field {field} does not match {actual} bytes received")]
    BadLength {
        /// Length field.
        field: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Request/Response without a Type, or Success/Failure with data.
    #[error("EAP {0:?} packet of a malformed shape")]
    Shape(EapCode),
    /// Unknown EAP code.
    #[error("unknown EAP code {0}")]
    UnknownCode(u8),
    /// The TEAP header claims more than is there, or lengths disagree.
    #[error("TEAP header malformed: {0}")]
    TeapHeader(&'static str),
    /// A packet too large to encode (Length is 16 bits).
    #[error("EAP packet too large ({0} bytes)")]
    TooLarge(usize),
}

/// One EAP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EapPacket {
    /// Request, Response, Success or Failure.
    pub code: EapCode,
    /// Matches a Response to its Request.
    pub identifier: u8,
    /// The method type (Request/Response only).
    pub typ: Option<EapType>,
    /// The type-data.
    pub data: Vec<u8>,
}

impl EapPacket {
    /// A Request or Response of `typ`.
    pub fn new(code: EapCode, identifier: u8, typ: EapType, data: Vec<u8>) -> Self {
        Self {
            code,
            identifier,
            typ: Some(typ),
            data,
        }
    }

    /// EAP-Success or EAP-Failure.
    pub fn outcome(code: EapCode, identifier: u8) -> Self {
        Self {
            code,
            identifier,
            typ: None,
            data: Vec::new(),
        }
    }

    /// Parses exactly one packet; trailing bytes beyond Length are refused.
    pub fn decode(b: &[u8]) -> Result<Self, EapError> {
        if b.len() < 4 {
            return Err(EapError::Truncated);
        }
        let code = EapCode(b[0]);
        let identifier = b[1];
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if len != b.len() {
            return Err(EapError::BadLength {
                field: len,
                actual: b.len(),
            });
        }
        match code {
            EapCode::REQUEST | EapCode::RESPONSE => {
                if len < 5 {
                    return Err(EapError::Shape(code));
                }
                Ok(Self {
                    code,
                    identifier,
                    typ: Some(EapType(b[4])),
                    data: b[5..].to_vec(),
                })
            }
            EapCode::SUCCESS | EapCode::FAILURE => {
                if len != 4 {
                    return Err(EapError::Shape(code));
                }
                Ok(Self::outcome(code, identifier))
            }
            EapCode(c) => Err(EapError::UnknownCode(c)),
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Result<Vec<u8>, EapError> {
        let len = 4 + usize::from(self.typ.is_some()) + self.data.len();
        let len16 = u16::try_from(len).map_err(|_| EapError::TooLarge(len))?;
        let mut out = Vec::with_capacity(len);
        out.push(self.code.0);
        out.push(self.identifier);
        out.extend_from_slice(&len16.to_be_bytes());
        if let Some(t) = self.typ {
            out.push(t.0);
        }
        out.extend_from_slice(&self.data);
        Ok(out)
    }
}

/// TEAP flags octet bits (RFC 9930 §4.1): L, M, S, O; the low three bits are the version.
pub mod flags {
    /// Length included: a 4-octet Message Length follows.
    pub const L: u8 = 0x80;
    /// More fragments follow.
    pub const M: u8 = 0x40;
    /// TEAP Start.
    pub const S: u8 = 0x20;
    /// Outer TLV Length included.
    pub const O: u8 = 0x10;
    /// The version bits.
    pub const VERSION_MASK: u8 = 0x07;
}

/// The TEAP version this code speaks.
pub const TEAP_VERSION: u8 = 1;

/// The type-data of one EAP-TEAP packet (one fragment).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TeapFrame {
    /// L: total length of the TLS data of the whole (reassembled) message.
    pub message_length: Option<u32>,
    /// M: more fragments follow.
    pub more: bool,
    /// S: TEAP/Start.
    pub start: bool,
    /// Version bits (1 for TEAP v1).
    pub version: u8,
    /// TLS records (or a fragment of them).
    pub tls_data: Vec<u8>,
    /// Outer TLVs (only in the first messages; O flag), raw.
    pub outer_tlvs: Vec<u8>,
}

impl TeapFrame {
    /// Parses EAP type-data of type TEAP.
    ///
    /// With O set, the Outer TLV Length counts the octets at the end of the packet that are
    /// outer TLVs; the rest is TLS data.
    pub fn decode(data: &[u8]) -> Result<Self, EapError> {
        let (&fl, mut rest) = data
            .split_first()
            .ok_or(EapError::TeapHeader("no flags octet"))?;
        let mut frame = Self {
            more: fl & flags::M != 0,
            start: fl & flags::S != 0,
            version: fl & flags::VERSION_MASK,
            ..Self::default()
        };
        if fl & flags::L != 0 {
            let (n, r) = take_u32(rest).ok_or(EapError::TeapHeader("Message Length cut"))?;
            frame.message_length = Some(n);
            rest = r;
        }
        let mut outer_len = 0usize;
        if fl & flags::O != 0 {
            let (n, r) = take_u32(rest).ok_or(EapError::TeapHeader("Outer TLV Length cut"))?;
            outer_len = usize::try_from(n).map_err(|_| EapError::TeapHeader("Outer TLV Length"))?;
            rest = r;
        }
        if outer_len > rest.len() {
            return Err(EapError::TeapHeader("Outer TLV Length beyond the packet"));
        }
        let split = rest.len() - outer_len;
        frame.tls_data = rest[..split].to_vec();
        frame.outer_tlvs = rest[split..].to_vec();
        if let Some(total) = frame.message_length {
            if (total as usize) < frame.tls_data.len() {
                return Err(EapError::TeapHeader(
                    "Message Length below the fragment's size",
                ));
            }
        }
        Ok(frame)
    }

    /// The type-data bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut fl = self.version & flags::VERSION_MASK;
        if self.message_length.is_some() {
            fl |= flags::L;
        }
        if self.more {
            fl |= flags::M;
        }
        if self.start {
            fl |= flags::S;
        }
        if !self.outer_tlvs.is_empty() {
            fl |= flags::O;
        }
        let mut out = Vec::with_capacity(9 + self.tls_data.len() + self.outer_tlvs.len());
        out.push(fl);
        if let Some(n) = self.message_length {
            out.extend_from_slice(&n.to_be_bytes());
        }
        if !self.outer_tlvs.is_empty() {
            out.extend_from_slice(&(self.outer_tlvs.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(&self.tls_data);
        out.extend_from_slice(&self.outer_tlvs);
        out
    }

    /// An acknowledgement of a fragment: no data, no flags but the version (RFC 9930 §3.7).
    pub fn ack() -> Self {
        Self {
            version: TEAP_VERSION,
            ..Self::default()
        }
    }
}

fn take_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    if b.len() < 4 {
        return None;
    }
    Some((u32::from_be_bytes([b[0], b[1], b[2], b[3]]), &b[4..]))
}

/// Splits one TLS message into TEAP frames of at most `max_tls` TLS octets each. The first
/// carries L (the total length) when there is more than one; all but the last carry M.
pub fn fragment(tls: &[u8], max_tls: usize, outer_tlvs: &[u8]) -> Vec<TeapFrame> {
    let max_tls = max_tls.max(1);
    if tls.len() <= max_tls {
        return vec![TeapFrame {
            version: TEAP_VERSION,
            tls_data: tls.to_vec(),
            outer_tlvs: outer_tlvs.to_vec(),
            ..TeapFrame::default()
        }];
    }
    let chunks: Vec<&[u8]> = tls.chunks(max_tls).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| TeapFrame {
            message_length: (i == 0).then_some(tls.len() as u32),
            more: i + 1 < n,
            version: TEAP_VERSION,
            tls_data: c.to_vec(),
            outer_tlvs: if i == 0 {
                outer_tlvs.to_vec()
            } else {
                Vec::new()
            },
            ..TeapFrame::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identity_response_round_trips() {
        let p = EapPacket::new(EapCode::RESPONSE, 7, EapType::IDENTITY, b"pledge".to_vec());
        let b = p.encode().expect("encode");
        assert_eq!(b, [2, 7, 0, 11, 1, b'p', b'l', b'e', b'd', b'g', b'e']);
        assert_eq!(EapPacket::decode(&b).expect("decode"), p);
    }

    #[test]
    fn success_has_no_type() {
        let b = [3u8, 9, 0, 4];
        let p = EapPacket::decode(&b).expect("decode");
        assert_eq!(p.code, EapCode::SUCCESS);
        assert_eq!(p.encode().expect("encode"), b);
        assert!(EapPacket::decode(&[3, 9, 0, 5, 1]).is_err());
    }

    #[test]
    fn every_prefix_of_a_packet_is_refused_without_panic() {
        let p = EapPacket::new(
            EapCode::REQUEST,
            1,
            EapType::TEAP,
            vec![0x81, 0, 0, 0, 3, 1, 2, 3],
        );
        let b = p.encode().expect("encode");
        for i in 0..b.len() {
            assert!(EapPacket::decode(&b[..i]).is_err(), "prefix {i}");
        }
    }

    #[test]
    fn teap_start_with_outer_tlv() {
        // RFC 9930 §4.1: S and O set, version 1, Outer TLV Length, Authority-ID TLV.
        let f = TeapFrame {
            start: true,
            version: 1,
            outer_tlvs: vec![0, 1, 0, 2, 0xab, 0xcd],
            ..TeapFrame::default()
        };
        let b = f.encode();
        assert_eq!(b, [0x31, 0, 0, 0, 6, 0, 1, 0, 2, 0xab, 0xcd]);
        assert_eq!(TeapFrame::decode(&b).expect("decode"), f);
    }

    #[test]
    fn teap_header_lies_are_refused() {
        assert!(TeapFrame::decode(&[]).is_err());
        assert!(TeapFrame::decode(&[0x81, 0, 0]).is_err());
        assert!(TeapFrame::decode(&[0x11, 0, 0, 0, 9, 1]).is_err());
        // Message Length smaller than this fragment.
        assert!(TeapFrame::decode(&[0x81, 0, 0, 0, 1, 1, 2]).is_err());
    }

    #[test]
    fn fragments_carry_l_on_the_first_and_m_on_all_but_the_last() {
        let tls: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let frames = fragment(&tls, 300, &[]);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].message_length, Some(1000));
        assert!(frames[1].message_length.is_none());
        assert!(frames[..3].iter().all(|f| f.more));
        assert!(!frames[3].more);
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.tls_data.clone()).collect();
        assert_eq!(joined, tls);
    }

    proptest! {
        #[test]
        fn teap_frames_round_trip(
            l in proptest::option::of(any::<u32>()),
            more in any::<bool>(), start in any::<bool>(), v in 0u8..8,
            tls in proptest::collection::vec(any::<u8>(), 0..64),
            outer in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let l = l.map(|n| n.max(tls.len() as u32));
            let f = TeapFrame { message_length: l, more, start, version: v, tls_data: tls, outer_tlvs: outer };
            prop_assert_eq!(TeapFrame::decode(&f.encode()).expect("decode"), f);
        }

        #[test]
        fn eap_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = EapPacket::decode(&b) {
                prop_assert_eq!(p.encode().expect("encode"), b);
            }
        }
    }
}
