//! RADIUS packets for EAP (RFC 2865, RFC 3579): codes, attributes, the Request and Response
//! Authenticators, Message-Authenticator (HMAC-MD5), EAP-Message splitting, and the
//! MS-MPPE-Send/Recv-Key salted encryption (RFC 2548 §2.4.2).
//!
//! No I/O and no randomness: the caller brings the Request Authenticator and the salt.
use thiserror::Error;

/// RADIUS packet Code (RFC 2865 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

impl Code {
    /// 1
    pub const ACCESS_REQUEST: Self = Self(1);
    /// 2
    pub const ACCESS_ACCEPT: Self = Self(2);
    /// 3
    pub const ACCESS_REJECT: Self = Self(3);
    /// 11
    pub const ACCESS_CHALLENGE: Self = Self(11);
}

/// RADIUS attribute Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttrType(pub u8);

impl AttrType {
    /// 1, RFC 2865 §5.1.
    pub const USER_NAME: Self = Self(1);
    /// 4, RFC 2865 §5.4.
    pub const NAS_IP_ADDRESS: Self = Self(4);
    /// 12, RFC 2865 §5.12.
    pub const FRAMED_MTU: Self = Self(12);
    /// 18, RFC 2865 §5.18.
    pub const REPLY_MESSAGE: Self = Self(18);
    /// 24, RFC 2865 §5.24.
    pub const STATE: Self = Self(24);
    /// 26, RFC 2865 §5.26.
    pub const VENDOR_SPECIFIC: Self = Self(26);
    /// 31, RFC 2865 §5.31.
    pub const CALLING_STATION_ID: Self = Self(31);
    /// 32, RFC 2865 §5.32.
    pub const NAS_IDENTIFIER: Self = Self(32);
    /// 79, RFC 3579 §3.1.
    pub const EAP_MESSAGE: Self = Self(79);
    /// 80, RFC 3579 §3.2.
    pub const MESSAGE_AUTHENTICATOR: Self = Self(80);
}

/// Microsoft's vendor id (RFC 2548).
pub const VENDOR_MICROSOFT: u32 = 311;
/// MS-MPPE-Send-Key vendor type (RFC 2548 §2.4.2).
pub const MS_MPPE_SEND_KEY: u8 = 16;
/// MS-MPPE-Recv-Key vendor type (RFC 2548 §2.4.3).
pub const MS_MPPE_RECV_KEY: u8 = 17;

/// Smallest and largest RADIUS packets (RFC 2865 §3).
pub const MIN_LEN: usize = 20;
/// RFC 2865 §3: 4096.
pub const MAX_LEN: usize = 4096;

/// Why bytes are not an acceptable RADIUS packet.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum RadiusError {
    /// Under 20 bytes, over 4096, or the Length field beyond the datagram.
    #[error("RADIUS packet length invalid")]
    BadLength,
    /// An attribute's length runs past the packet or is below 2.
    #[error("RADIUS attribute malformed")]
    BadAttribute,
    /// The Message-Authenticator is missing (RFC 3579 §3.2 requires it with EAP-Message).
    #[error("Message-Authenticator missing")]
    NoMessageAuthenticator,
    /// The Message-Authenticator or Response Authenticator does not verify.
    #[error("authenticator does not verify (wrong shared secret?)")]
    BadAuthenticator,
    /// More attributes than fit in one packet.
    #[error("RADIUS packet would exceed 4096 bytes")]
    TooLarge,
    /// An MS-MPPE key attribute that does not decrypt.
    #[error("MS-MPPE key attribute malformed")]
    BadMppe,
}

/// A RADIUS packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Access-Request, -Accept, -Reject, -Challenge.
    pub code: Code,
    /// Matches replies to requests.
    pub identifier: u8,
    /// Request Authenticator (requests) or Response Authenticator (replies).
    pub authenticator: [u8; 16],
    /// Attributes in order.
    pub attributes: Vec<(AttrType, Vec<u8>)>,
}

impl Packet {
    /// A packet with no attributes.
    pub fn new(code: Code, identifier: u8, authenticator: [u8; 16]) -> Self {
        Self {
            code,
            identifier,
            authenticator,
            attributes: Vec::new(),
        }
    }

    /// Parses a datagram (trailing octets after Length are ignored, RFC 2865 §3).
    pub fn decode(b: &[u8]) -> Result<Self, RadiusError> {
        if b.len() < MIN_LEN {
            return Err(RadiusError::BadLength);
        }
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if !(MIN_LEN..=MAX_LEN).contains(&len) || len > b.len() {
            return Err(RadiusError::BadLength);
        }
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&b[4..20]);
        let mut attributes = Vec::new();
        let mut rest = &b[20..len];
        while !rest.is_empty() {
            if rest.len() < 2 {
                return Err(RadiusError::BadAttribute);
            }
            let alen = usize::from(rest[1]);
            if alen < 2 || alen > rest.len() {
                return Err(RadiusError::BadAttribute);
            }
            attributes.push((AttrType(rest[0]), rest[2..alen].to_vec()));
            rest = &rest[alen..];
        }
        Ok(Self {
            code: Code(b[0]),
            identifier: b[1],
            authenticator,
            attributes,
        })
    }

    /// The wire form with the authenticator field as it is.
    pub fn encode(&self) -> Result<Vec<u8>, RadiusError> {
        let mut out = Vec::with_capacity(256);
        out.push(self.code.0);
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.authenticator);
        for (t, v) in &self.attributes {
            if v.len() > 253 {
                return Err(RadiusError::BadAttribute);
            }
            out.push(t.0);
            out.push(v.len() as u8 + 2);
            out.extend_from_slice(v);
        }
        if out.len() > MAX_LEN {
            return Err(RadiusError::TooLarge);
        }
        let len = (out.len() as u16).to_be_bytes();
        out[2..4].copy_from_slice(&len);
        Ok(out)
    }

    /// The first value of an attribute.
    pub fn attr(&self, t: AttrType) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|(a, _)| *a == t)
            .map(|(_, v)| v.as_slice())
    }

    /// Appends an attribute.
    pub fn push(&mut self, t: AttrType, v: impl Into<Vec<u8>>) {
        self.attributes.push((t, v.into()));
    }

    /// The EAP packet: all EAP-Message attributes concatenated (RFC 3579 §3.1).
    pub fn eap_message(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut any = false;
        for (t, v) in &self.attributes {
            if *t == AttrType::EAP_MESSAGE {
                any = true;
                out.extend_from_slice(v);
            }
        }
        any.then_some(out)
    }

    /// Adds an EAP packet as EAP-Message attributes of at most 253 octets.
    pub fn push_eap_message(&mut self, eap: &[u8]) {
        for c in eap.chunks(253) {
            self.push(AttrType::EAP_MESSAGE, c.to_vec());
        }
    }

    /// Encodes an Access-Request with a Message-Authenticator (RFC 3579 §3.2): HMAC-MD5 over
    /// the packet with the Request Authenticator and a zeroed Message-Authenticator.
    pub fn encode_request(&self, secret: &[u8]) -> Result<Vec<u8>, RadiusError> {
        let mut p = self.without_message_authenticator();
        p.push(AttrType::MESSAGE_AUTHENTICATOR, vec![0u8; 16]);
        let mut wire = p.encode()?;
        let mac = hmac_md5(secret, &wire);
        let at = wire.len() - 16;
        wire[at..].copy_from_slice(&mac);
        Ok(wire)
    }

    /// Encodes a reply to a request whose Request Authenticator was `request_auth`:
    /// Message-Authenticator first (computed with the Request Authenticator in place), then the
    /// Response Authenticator MD5(Code+ID+Length+RequestAuth+Attributes+Secret) (RFC 2865 §3).
    pub fn encode_response(
        &self,
        secret: &[u8],
        request_auth: &[u8; 16],
    ) -> Result<Vec<u8>, RadiusError> {
        let mut p = self.without_message_authenticator();
        p.authenticator = *request_auth;
        p.push(AttrType::MESSAGE_AUTHENTICATOR, vec![0u8; 16]);
        let mut wire = p.encode()?;
        let mac = hmac_md5(secret, &wire);
        let at = wire.len() - 16;
        wire[at..].copy_from_slice(&mac);
        let mut h = Md5::new();
        h.update(&wire);
        h.update(secret);
        let resp = h.finalize();
        wire[4..20].copy_from_slice(&resp);
        Ok(wire)
    }

    fn without_message_authenticator(&self) -> Packet {
        let mut p = self.clone();
        p.attributes
            .retain(|(t, _)| *t != AttrType::MESSAGE_AUTHENTICATOR);
        p
    }
}

/// Checks an Access-Request datagram: exactly one Message-Authenticator, and it verifies.
pub fn verify_request(wire: &[u8], secret: &[u8]) -> Result<Packet, RadiusError> {
    let p = Packet::decode(wire)?;
    check_message_authenticator(wire, &p, secret, None)?;
    Ok(p)
}

/// Checks a reply datagram to a request with `request_auth`: Response Authenticator and
/// Message-Authenticator.
pub fn verify_response(
    wire: &[u8],
    secret: &[u8],
    request_auth: &[u8; 16],
) -> Result<Packet, RadiusError> {
    let p = Packet::decode(wire)?;
    let len = usize::from(u16::from_be_bytes([wire[2], wire[3]]));
    let mut copy = wire[..len].to_vec();
    copy[4..20].copy_from_slice(request_auth);
    let mut h = Md5::new();
    h.update(&copy);
    h.update(secret);
    if !ct_eq(&h.finalize(), &p.authenticator) {
        return Err(RadiusError::BadAuthenticator);
    }
    check_message_authenticator(wire, &p, secret, Some(request_auth))?;
    Ok(p)
}

fn check_message_authenticator(
    wire: &[u8],
    p: &Packet,
    secret: &[u8],
    request_auth: Option<&[u8; 16]>,
) -> Result<(), RadiusError> {
    let len = usize::from(u16::from_be_bytes([wire[2], wire[3]]));
    let mut copy = wire[..len].to_vec();
    if let Some(ra) = request_auth {
        copy[4..20].copy_from_slice(ra);
    }
    // Find the attribute's offset to zero it in place.
    let mut off = 20;
    let mut found = None;
    while off + 2 <= len {
        let alen = usize::from(copy[off + 1]);
        if copy[off] == AttrType::MESSAGE_AUTHENTICATOR.0 {
            if alen != 18 || found.is_some() {
                return Err(RadiusError::BadAuthenticator);
            }
            found = Some(off + 2);
        }
        off += alen.max(2);
    }
    let at = found.ok_or(RadiusError::NoMessageAuthenticator)?;
    let given = p
        .attr(AttrType::MESSAGE_AUTHENTICATOR)
        .ok_or(RadiusError::NoMessageAuthenticator)?
        .to_vec();
    copy[at..at + 16].fill(0);
    if !ct_eq(&hmac_md5(secret, &copy), &given) {
        return Err(RadiusError::BadAuthenticator);
    }
    Ok(())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A Vendor-Specific attribute value: Vendor-Id, then one vendor sub-attribute.
pub fn vendor_specific(vendor: u32, vtype: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vendor.to_be_bytes().to_vec();
    v.push(vtype);
    v.push(value.len() as u8 + 2);
    v.extend_from_slice(value);
    v
}

/// Finds a vendor sub-attribute's value in a packet.
pub fn find_vendor(p: &Packet, vendor: u32, vtype: u8) -> Option<Vec<u8>> {
    p.attributes
        .iter()
        .filter(|(t, _)| *t == AttrType::VENDOR_SPECIFIC)
        .find_map(|(_, v)| {
            if v.len() < 6 || v[..4] != vendor.to_be_bytes() || v[4] != vtype {
                return None;
            }
            let l = usize::from(v[5]);
            (l >= 2 && 4 + l <= v.len()).then(|| v[6..4 + l].to_vec())
        })
}

/// Encrypts a key for MS-MPPE-Send/Recv-Key (RFC 2548 §2.4.2): Salt (2 octets, high bit set
/// by the caller), then P = key-length ‖ key ‖ zero padding to a multiple of 16, with
/// b(1) = MD5(secret ‖ Request-Authenticator ‖ Salt), c(i) = p(i) ⊕ b(i),
/// b(i) = MD5(secret ‖ c(i-1)).
pub fn mppe_encrypt(secret: &[u8], request_auth: &[u8; 16], salt: [u8; 2], key: &[u8]) -> Vec<u8> {
    let mut p = vec![key.len() as u8];
    p.extend_from_slice(key);
    while !p.len().is_multiple_of(16) {
        p.push(0);
    }
    let mut out = salt.to_vec();
    let mut prev: Vec<u8> = [request_auth.as_slice(), &salt].concat();
    for block in p.chunks(16) {
        let mut h = Md5::new();
        h.update(secret);
        h.update(&prev);
        let b = h.finalize();
        let c: Vec<u8> = block.iter().zip(b.iter()).map(|(x, y)| x ^ y).collect();
        out.extend_from_slice(&c);
        prev = c;
    }
    out
}

/// Decrypts an MS-MPPE-Send/Recv-Key value made by [`mppe_encrypt`].
pub fn mppe_decrypt(
    secret: &[u8],
    request_auth: &[u8; 16],
    value: &[u8],
) -> Result<Vec<u8>, RadiusError> {
    if value.len() < 18 || !(value.len() - 2).is_multiple_of(16) {
        return Err(RadiusError::BadMppe);
    }
    let salt = &value[..2];
    let mut prev: Vec<u8> = [request_auth.as_slice(), salt].concat();
    let mut plain = Vec::new();
    for c in value[2..].chunks(16) {
        let mut h = Md5::new();
        h.update(secret);
        h.update(&prev);
        let b = h.finalize();
        plain.extend(c.iter().zip(b.iter()).map(|(x, y)| x ^ y));
        prev = c.to_vec();
    }
    let n = usize::from(plain[0]);
    if n + 1 > plain.len() {
        return Err(RadiusError::BadMppe);
    }
    Ok(plain[1..=n].to_vec())
}

/// HMAC-MD5 (RFC 2104), as RFC 3579 §3.2 uses it.
pub fn hmac_md5(key: &[u8], msg: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        let mut h = Md5::new();
        h.update(key);
        k[..16].copy_from_slice(&h.finalize());
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Md5::new();
    inner.update(&k.map(|b| b ^ 0x36));
    inner.update(msg);
    let ih = inner.finalize();
    let mut outer = Md5::new();
    outer.update(&k.map(|b| b ^ 0x5c));
    outer.update(&ih);
    outer.finalize()
}

/// MD5 (RFC 1321). RADIUS needs it; nothing else here should.
pub struct Md5 {
    state: [u32; 4],
    buf: Vec<u8>,
    len: u64,
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

const MD5_S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

impl Md5 {
    /// A fresh hash.
    pub fn new() -> Self {
        Self {
            state: [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476],
            buf: Vec::with_capacity(64),
            len: 0,
        }
    }

    /// Absorbs bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        self.buf.extend_from_slice(data);
        let full = self.buf.len() / 64 * 64;
        let blocks: Vec<u8> = self.buf.drain(..full).collect();
        for b in blocks.chunks(64) {
            self.block(b);
        }
    }

    /// The 16-octet digest.
    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let mut pad = vec![0x80u8];
        while (self.buf.len() + pad.len()) % 64 != 56 {
            pad.push(0);
        }
        pad.extend_from_slice(&bits.to_le_bytes());
        let len = self.len;
        self.update(&pad);
        self.len = len;
        let mut out = [0u8; 16];
        for (i, w) in self.state.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn block(&mut self, b: &[u8]) {
        let mut m = [0u32; 16];
        for (i, w) in m.iter_mut().enumerate() {
            *w = u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        }
        let [mut a, mut bb, mut c, mut d] = self.state;
        for (i, &shift) in MD5_S.iter().enumerate() {
            let (f, g) = match i / 16 {
                0 => ((bb & c) | (!bb & d), i),
                1 => ((d & bb) | (!d & c), (5 * i + 1) % 16),
                2 => (bb ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (bb | !d), (7 * i) % 16),
            };
            // K[i] = floor(|sin(i + 1)| * 2^32), RFC 1321 §3.4.
            let k = ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32;
            let f2 = f.wrapping_add(a).wrapping_add(k).wrapping_add(m[g]);
            a = d;
            d = c;
            c = bb;
            bb = bb.wrapping_add(f2.rotate_left(shift));
        }
        self.state[0] = self.state[0].wrapping_add(a);
        self.state[1] = self.state[1].wrapping_add(bb);
        self.state[2] = self.state[2].wrapping_add(c);
        self.state[3] = self.state[3].wrapping_add(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn md5_hex(s: &[u8]) -> String {
        let mut h = Md5::new();
        h.update(s);
        hex::encode(h.finalize())
    }

    #[test]
    fn md5_matches_rfc_1321_test_suite() {
        // RFC 1321 §A.5.
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(b"abcdefghijklmnopqrstuvwxyz"),
            "c3fcd3d76192e4007dfb496cca67e13b"
        );
        assert_eq!(
            md5_hex(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn hmac_md5_matches_rfc_2104() {
        // RFC 2104 appendix test vector 2.
        assert_eq!(
            hex::encode(hmac_md5(b"Jefe", b"what do ya want for nothing?")),
            "750c783e6ab0b503eaa86e310a5db738"
        );
    }

    #[test]
    fn request_and_response_authenticators_verify_and_detect_tampering() {
        let mut p = Packet::new(Code::ACCESS_REQUEST, 9, [7u8; 16]);
        p.push(AttrType::USER_NAME, b"pledge".to_vec());
        p.push_eap_message(&[2u8; 600]);
        let wire = p.encode_request(b"s3cret").expect("encode");
        let back = verify_request(&wire, b"s3cret").expect("verifies");
        assert_eq!(back.eap_message().expect("eap").len(), 600);
        assert_eq!(
            verify_request(&wire, b"other"),
            Err(RadiusError::BadAuthenticator)
        );
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            verify_request(&bad, b"s3cret"),
            Err(RadiusError::BadAuthenticator)
        );
        // No Message-Authenticator at all.
        assert_eq!(
            verify_request(&p.encode().expect("encode"), b"s3cret"),
            Err(RadiusError::NoMessageAuthenticator)
        );

        let mut r = Packet::new(Code::ACCESS_CHALLENGE, 9, [0u8; 16]);
        r.push(AttrType::STATE, b"abc".to_vec());
        let rw = r.encode_response(b"s3cret", &[7u8; 16]).expect("encode");
        verify_response(&rw, b"s3cret", &[7u8; 16]).expect("verifies");
        assert!(verify_response(&rw, b"s3cret", &[8u8; 16]).is_err());
        assert!(verify_response(&rw, b"nope", &[7u8; 16]).is_err());
    }

    #[test]
    fn mppe_keys_round_trip() {
        let key: Vec<u8> = (0..32).collect();
        let v = mppe_encrypt(b"secret", &[3u8; 16], [0x80, 0x01], &key);
        assert_eq!(v.len(), 2 + 48);
        assert_eq!(
            mppe_decrypt(b"secret", &[3u8; 16], &v).expect("decrypt"),
            key
        );
        let vsa = vendor_specific(VENDOR_MICROSOFT, MS_MPPE_RECV_KEY, &v);
        let mut p = Packet::new(Code::ACCESS_ACCEPT, 1, [0; 16]);
        p.push(AttrType::VENDOR_SPECIFIC, vsa);
        assert_eq!(find_vendor(&p, VENDOR_MICROSOFT, MS_MPPE_RECV_KEY), Some(v));
    }

    #[test]
    fn every_prefix_is_handled() {
        let mut p = Packet::new(Code::ACCESS_REQUEST, 1, [1; 16]);
        p.push_eap_message(&[1, 2, 3, 4, 5]);
        let w = p.encode_request(b"k").expect("encode");
        for i in 0..w.len() {
            let _ = Packet::decode(&w[..i]);
            let _ = verify_request(&w[..i], b"k");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = verify_request(&b, b"x");
            if let Ok(p) = Packet::decode(&b) {
                let again = Packet::decode(&p.encode().expect("encode")).expect("decode");
                prop_assert_eq!(again, p);
            }
        }
    }
}
