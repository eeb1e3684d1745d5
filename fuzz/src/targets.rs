//! One function per target. Each panics when a property fails and returns whether the parser
//! under test accepted the input.

use estuary_filter::xfcc::{self, XfccElement};
use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::csrattrs::CsrAttrs;
use estuary_proto::eap::{self, EapPacket, EapType, TeapFrame};
use estuary_proto::est::parse_est_path;
use estuary_proto::identity::{
    self, globs_intersect, Manufacturer, ManufacturerName, NamePrefix, Need, SerialPattern,
    TrustPolicy,
};
use estuary_proto::names::{glob_match, DeviceName, DeviceSerial, ParentDomain};
use estuary_proto::pkcs7::{decode_certs_only, encode_certs_only};
use estuary_proto::policy::{check_enroll, KeyPolicy};
use estuary_proto::radius::{self, AttrType, Packet};
use estuary_proto::teap::{self, CryptoBinding, PrfHash, TeapKeys, Tlv, TlvType};
use estuary_proto::time::{self, parse_rfc3339};
use estuary_proto::voucher::{masa_url, Voucher, VoucherRequest};
use estuary_proto::{base64, pem, CertSummary};
use sha2::{Digest, Sha256};

/// Text targets read the input as UTF-8; other bytes become U+FFFD, which still reaches the
/// multi-byte paths.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// EST base64 (RFC 7030 §4): encode → decode is the identity; decode → encode → decode is
/// stable. A CSR body (base64 or PEM, RFC 8951) never panics, and a base64 body decodes to the
/// same bytes either way.
pub fn base64(data: &[u8]) -> bool {
    assert_eq!(
        base64::decode(base64::encode(data).as_bytes()).as_deref(),
        Ok(data)
    );
    let as_body = base64::decode_csr_body(data);
    let Ok(bytes) = base64::decode(data) else {
        return false;
    };
    assert_eq!(as_body.as_deref(), Ok(bytes.as_slice()));
    let again = base64::encode(&bytes);
    assert_eq!(
        base64::decode(again.as_bytes()).as_deref(),
        Ok(bytes.as_slice())
    );
    true
}

/// The serverkeygen answer (RFC 7030 §4.4.2): the first line is the content type, the rest the
/// `multipart/mixed` body. Never panics; what parses is built again (ours) and parses back to
/// the same key and certificate parts.
pub fn serverkeygen(data: &[u8]) -> bool {
    use estuary_proto::serverkeygen as skg;
    let (ct, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            data.get(..i).unwrap_or_default(),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (data, &[][..]),
    };
    let _ = skg::boundary(&text(ct));
    let Ok(parsed) = skg::parse(&text(ct), body) else {
        return false;
    };
    let mut again = Vec::new();
    skg::build(&parsed.pkcs8, &parsed.pkcs7, &mut again);
    assert_eq!(
        again.len(),
        skg::built_len(parsed.pkcs8.len(), parsed.pkcs7.len())
    );
    let back = skg::parse(&skg::content_type(), &again).expect("our own answer parses");
    assert_eq!(back.pkcs8.as_slice(), parsed.pkcs8.as_slice());
    assert_eq!(back.pkcs7, parsed.pkcs7);
    true
}

/// X.509 certificate summary: never panics; keeps the input as its DER; reads back the same.
pub fn cert(data: &[u8]) -> bool {
    let _ = masa_url(data);
    let Ok(c) = CertSummary::from_der(data) else {
        return false;
    };
    assert_eq!(c.der(), data);
    assert_eq!(CertSummary::from_der(c.der()).ok().as_ref(), Some(&c));
    let _ = (c.subject_common_name(), c.subject_serial_number(), c.key());
    true
}

/// CMS SignedData (RFC 5652) carrying a voucher(-request): what verifies also parses, to the
/// same content; the signer is in the certificate set; the content goes on to the voucher
/// readers.
pub fn cms_signed(data: &[u8]) -> bool {
    let parsed = cms_signed::parse_unverified(data, ANIMA_JSON_VOUCHER).ok();
    let verified = cms_signed::verify(data, ANIMA_JSON_VOUCHER).ok();
    if let Some(v) = &verified {
        assert_eq!(
            parsed.as_ref(),
            Some(v),
            "verified but does not parse the same"
        );
    }
    let Some(p) = parsed else {
        return false;
    };
    assert_eq!(p.content_type, ANIMA_JSON_VOUCHER);
    assert!(p.certs.contains(&p.signer_cert), "signer not in the set");
    let _ = VoucherRequest::from_json(&p.content);
    let _ = Voucher::from_json(&p.content);
    let _ = cms_signed::verify_issued_by(&p.signer_cert, &p.signer_cert);
    let _ = cms_signed::chains_to(&p.signer_cert, &p.certs, &p.signer_cert);
    true
}

/// PKCS#10: parse_and_verify never panics; what verifies re-verifies identically; the enrolment
/// policy never panics on it.
pub fn csr(data: &[u8]) -> bool {
    let Ok(csr) = estuary_proto::parse_and_verify(data) else {
        return false;
    };
    assert_eq!(csr.der(), data);
    // RFC 9930 §3.8.2: the TEAP CSR channel binding is read from challengePassword.
    let _ = estuary_proto::teap::check_csr_binding(&csr, &[0u8; 32]);
    assert_eq!(
        estuary_proto::parse_and_verify(csr.der()).as_ref(),
        Ok(&csr)
    );
    if let Ok(parent) = ParentDomain::parse("iot.example.test") {
        if let Ok(name) = DeviceName::parse_under("dev1.iot.example.test", &parent) {
            let _ = check_enroll(&csr, &name, &KeyPolicy::default());
        }
    }
    true
}

/// CSR attributes (RFC 7030 §4.5, RFC 9908): DER in, the same DER out, the same value back.
pub fn csrattrs(data: &[u8]) -> bool {
    let Ok(attrs) = CsrAttrs::from_der(data) else {
        return false;
    };
    let der = attrs.to_der().expect("a decoded CsrAttrs encodes");
    assert_eq!(der, data, "DER in, same DER out");
    let again = CsrAttrs::from_der(&der).expect("our own encoding decodes");
    assert_eq!(again, attrs);
    let _ = again.requested_dns_names();
    let _ = again.requested_common_name();
    let _ = again.requested_curves();
    let _ = again.requested_rsa_bits();
    true
}

/// EAP (RFC 3748) and EAP-TEAP framing (RFC 9930 §4.1): a packet encodes back to its bytes; a
/// TEAP frame decodes back from its encoding; fragmenting and reassembling gives the TLS data
/// back.
pub fn eap(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(p) = EapPacket::decode(data) {
        assert_eq!(p.encode().as_deref(), Ok(data), "EAP packet re-encodes");
        if p.typ == Some(EapType::TEAP) {
            teap_frame(&p.data);
        }
        accepted = true;
    }
    accepted |= teap_frame(data);
    // Fragmentation: first octet picks the fragment size, second the outer TLVs' share.
    if let [size, outer, rest @ ..] = data {
        let split = usize::from(*outer).min(rest.len());
        let (outer_tlvs, tls) = rest.split_at(split);
        let max = usize::from(*size) + 1;
        let frames = eap::fragment(tls, max, outer_tlvs);
        let mut joined = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            assert!(f.tls_data.len() <= max);
            assert_eq!(f.more, i + 1 < frames.len());
            assert_eq!(TeapFrame::decode(&f.encode()).as_ref(), Ok(f));
            joined.extend_from_slice(&f.tls_data);
        }
        assert_eq!(joined, tls, "fragments reassemble");
        assert_eq!(frames[0].outer_tlvs, outer_tlvs);
        if frames.len() > 1 {
            assert_eq!(frames[0].message_length, Some(tls.len() as u32));
        }
    }
    accepted
}

fn teap_frame(data: &[u8]) -> bool {
    let Ok(f) = TeapFrame::decode(data) else {
        return false;
    };
    assert_eq!(TeapFrame::decode(&f.encode()).as_ref(), Ok(&f));
    if let Ok(tlvs) = teap::decode(&f.outer_tlvs) {
        let _ = teap::first_unknown_mandatory(&tlvs, TlvType::is_defined);
    }
    true
}

/// Splits concatenated DER values (short or long definite lengths); stops at the first that
/// does not fit.
fn split_der(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let (len, hdr) = match b[1] {
            n if n < 0x80 => (usize::from(n), 2),
            0x81 => (usize::from(b.get(2).copied().unwrap_or(0)), 3),
            0x82 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            _ => break,
        };
        let Some(one) = b.get(..hdr + len) else {
            break;
        };
        out.push(one);
        b = &b[hdr + len..];
    }
    out
}

/// The test root of proto/testdata, as a manufacturer CA and as the ACME CA.
fn policies() -> &'static [TrustPolicy; 2] {
    static P: std::sync::OnceLock<[TrustPolicy; 2]> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let ca = include_bytes!("../../proto/testdata/cert/ca.der").to_vec();
        let parent = ParentDomain::parse("iot.example.test").expect("a valid parent");
        let manufacturer = Manufacturer {
            name: ManufacturerName::parse("fuzz").expect("a valid name"),
            ca_der: ca.clone(),
            serial_pattern: SerialPattern::parse("DEV*").expect("a valid pattern"),
            name_prefix: NamePrefix::parse("m-").expect("a valid prefix"),
        };
        [
            TrustPolicy {
                parent: parent.clone(),
                manufacturers: vec![manufacturer],
                acme_issuers: Vec::new(),
            },
            TrustPolicy {
                parent,
                manufacturers: Vec::new(),
                acme_issuers: vec![ca],
            },
        ]
    })
}

/// Who a client certificate is (proto `identity::authenticate`, from the XFCC leaf and chain):
/// never panics; an accepted identity holds the leaf as given; `Need::Any` accepts exactly what
/// `IDevId` or `LDevId` accepts, as the same identity.
pub fn identity(data: &[u8]) -> bool {
    let ders = split_der(data);
    let Some((leaf, chain)) = ders.split_first() else {
        return false;
    };
    let chain: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
    let mut accepted = false;
    for policy in policies() {
        let any = identity::authenticate(policy, leaf, &chain, Need::Any);
        let idevid = identity::authenticate(policy, leaf, &chain, Need::IDevId);
        let ldevid = identity::authenticate(policy, leaf, &chain, Need::LDevId);
        let specific = idevid.as_ref().ok().or(ldevid.as_ref().ok());
        assert_eq!(
            any.as_ref().ok(),
            specific,
            "Need::Any agrees with the specific needs"
        );
        if let Ok(id) = &any {
            assert_eq!(id.cert().der(), *leaf);
            let _ = id.name(&policy.parent);
            accepted = true;
        }
    }
    accepted
}

/// Names from outside: EST paths (RFC 7030 §3.2.2), device names and serials, the identity
/// config's checked strings, and the serial glob (checked against the glob-intersection search
/// when the text has no wildcard).
pub fn names(data: &[u8]) -> bool {
    let s = text(data);
    let mut accepted = false;
    if let Some(p) = parse_est_path(&s) {
        let label = p
            .label
            .as_deref()
            .map(|l| format!("{l}/"))
            .unwrap_or_default();
        let again = parse_est_path(&format!("/.well-known/est/{label}{}", p.op_segment));
        assert_eq!(again, Some(p.clone()));
        if let Some(op) = p.op {
            assert_eq!(op.as_str(), p.op_segment);
        }
        accepted = true;
    }
    if let Ok(n) = DeviceName::parse(&s) {
        assert_eq!(DeviceName::parse(n.as_str()).as_ref(), Ok(&n));
        assert_eq!(
            DeviceName::parse_under(n.as_str(), &n.parent()).as_ref(),
            Ok(&n)
        );
        assert_eq!(DeviceName::new(n.serial(), &n.parent()).as_ref(), Ok(&n));
        accepted = true;
    }
    if let Ok(d) = ParentDomain::parse(&s) {
        assert_eq!(ParentDomain::parse(d.as_str()).as_ref(), Ok(&d));
        accepted = true;
    }
    if let Ok(serial) = DeviceSerial::parse(&s) {
        assert_eq!(DeviceSerial::parse(serial.as_str()).as_ref(), Ok(&serial));
        accepted = true;
    }
    if let Some(m) = ManufacturerName::parse(&s) {
        assert_eq!(ManufacturerName::parse(m.as_str()), Some(m.clone()));
    }
    if let Some(p) = NamePrefix::parse(&s) {
        assert_eq!(NamePrefix::parse(p.as_str()), Some(p.clone()));
    }
    // "pattern\ntext": glob_match against the intersection search, on bounded lengths.
    if let Some((pattern, serial)) = s.split_once('\n') {
        let pattern: String = pattern.chars().take(64).collect();
        let serial: String = serial.chars().take(64).collect();
        let matched = glob_match(&pattern, &serial);
        if !serial.contains(['*', '?']) {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = serial.chars().collect();
            assert_eq!(
                matched,
                globs_intersect(&p, &t),
                "glob {pattern:?} on {serial:?}"
            );
        }
        if let Some(sp) = SerialPattern::parse(&pattern) {
            assert_eq!(sp.matches(&serial), matched);
        }
    }
    accepted
}

/// PEM certificate bundles (RFC 7468), as read from XFCC and from an ACME CA's chain:
/// decode → encode → decode is stable, and encode → decode is the identity.
pub fn pem(data: &[u8]) -> bool {
    // The encoder side: the input's 0xff-separated pieces as DER blobs.
    let ders: Vec<Vec<u8>> = data
        .split(|b| *b == 0xff)
        .filter(|d| !d.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if !ders.is_empty() {
        assert_eq!(pem::decode_certs(&pem::encode_certs(&ders)), Ok(ders));
    }
    let Ok(ders) = pem::decode_certs(&text(data)) else {
        return false;
    };
    assert_eq!(
        pem::decode_certs(&pem::encode_certs(&ders)).as_ref(),
        Ok(&ders)
    );
    true
}

/// Certs-only PKCS#7 (RFC 7030 §4.1.3): decode → encode → decode gives the same certificates
/// in order, and our encoding is canonical.
pub fn pkcs7(data: &[u8]) -> bool {
    let Ok(certs) = decode_certs_only(data) else {
        return false;
    };
    let der = encode_certs_only(&certs).expect("decoded certificates re-encode");
    let again = decode_certs_only(&der).expect("our own encoding decodes");
    assert_eq!(again, certs);
    assert_eq!(encode_certs_only(&again).as_ref(), Ok(&der));
    true
}

const SECRET: &[u8] = b"testing123";

/// RADIUS (RFC 2865, RFC 3579) and MS-MPPE keys (RFC 2548): a packet encodes back to its
/// Length's bytes; verification never panics; what we sign verifies; MPPE encrypt → decrypt
/// is the identity.
pub fn radius(data: &[u8]) -> bool {
    let request_auth: [u8; 16] = data
        .get(4..20)
        .and_then(|a| a.try_into().ok())
        .unwrap_or([7; 16]);
    let _ = radius::verify_request(data, SECRET);
    let _ = radius::verify_response(data, SECRET, &request_auth);
    // MPPE on the raw input, both ways.
    let key = &data[..data.len().min(255)];
    let salt = [0x80 | data.first().copied().unwrap_or(0), 1];
    let sealed = radius::mppe_encrypt(SECRET, &request_auth, salt, key);
    assert_eq!(
        radius::mppe_decrypt(SECRET, &request_auth, &sealed).as_deref(),
        Ok(key)
    );
    let _ = radius::mppe_decrypt(SECRET, &request_auth, data);
    // EAP-Message splitting.
    let mut carrier = Packet::new(radius::Code::ACCESS_REQUEST, 0, request_auth);
    carrier.push_eap_message(data);
    assert_eq!(
        carrier.eap_message(),
        (!data.is_empty()).then(|| data.to_vec())
    );

    let Ok(p) = Packet::decode(data) else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let wire = p.encode().expect("a decoded packet re-encodes");
    assert_eq!(
        wire,
        &data[..len],
        "packet re-encodes to its Length's bytes"
    );
    assert_eq!(Packet::decode(&wire).as_ref(), Ok(&p));
    if let Some(m) = p.eap_message() {
        let _ = EapPacket::decode(&m);
    }
    for vtype in [radius::MS_MPPE_SEND_KEY, radius::MS_MPPE_RECV_KEY] {
        if let Some(v) = radius::find_vendor(&p, radius::VENDOR_MICROSOFT, vtype) {
            let _ = radius::mppe_decrypt(SECRET, &p.authenticator, &v);
        }
    }
    // Signing: what we encode verifies, with the same attributes but the authenticator.
    let strip = |q: &Packet| -> Vec<(AttrType, Vec<u8>)> {
        q.attributes
            .iter()
            .filter(|(t, _)| *t != AttrType::MESSAGE_AUTHENTICATOR)
            .cloned()
            .collect()
    };
    if let Ok(signed) = p.encode_request(SECRET) {
        let back = radius::verify_request(&signed, SECRET).expect("our own request verifies");
        assert_eq!(strip(&back), strip(&p));
    }
    if let Ok(signed) = p.encode_response(SECRET, &request_auth) {
        let back = radius::verify_response(&signed, SECRET, &request_auth)
            .expect("our own response verifies");
        assert_eq!(strip(&back), strip(&p));
    }
    true
}

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range four-digit years can write.
const YEAR_0: i64 = -62_167_219_200;
const YEAR_9999_END: i64 = 253_402_300_799;

/// RFC 3339 (voucher dates, ACME `expires`): never panics (multi-byte characters included);
/// what parses and can be written parses back to the same instant; a canonical
/// `YYYY-MM-DDTHH:MM:SSZ` string is written back exactly.
pub fn rfc3339(data: &[u8]) -> bool {
    if let Some(raw) = data.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        let t = i64::from_le_bytes(raw);
        let s = time::rfc3339(t);
        if (YEAR_0..=YEAR_9999_END).contains(&t) {
            assert_eq!(parse_rfc3339(&s), Some(t), "{s}");
        }
    }
    let s = text(data);
    let Some(t) = parse_rfc3339(&s) else {
        return false;
    };
    if (YEAR_0..=YEAR_9999_END).contains(&t) {
        assert_eq!(parse_rfc3339(&time::rfc3339(t)), Some(t));
    }
    let canonical = s.len() == 20
        && s.ends_with('Z')
        && s.as_bytes().get(10) == Some(&b'T')
        && s.get(17..19).is_some_and(|sec| sec < "60");
    if canonical {
        assert_eq!(
            time::rfc3339(t),
            s,
            "a canonical date-time is written back as read"
        );
    }
    true
}

/// TEAP TLVs (RFC 9930 §4.2): decode → encode → decode is stable; the typed accessors never
/// panic; Crypto-Binding decode → encode → decode is stable, and what we sign verifies.
pub fn teap(data: &[u8]) -> bool {
    crypto_binding(data);
    let Ok(tlvs) = teap::decode(data) else {
        return false;
    };
    let wire = teap::encode(&tlvs).expect("decoded TLVs re-encode");
    assert_eq!(wire.len(), data.len());
    assert_eq!(teap::decode(&wire).as_ref(), Ok(&tlvs));
    let _ = teap::first_unknown_mandatory(&tlvs, TlvType::is_defined);
    for t in &tlvs {
        let _ = (t.status(), t.error_code(), t.nak_parts());
        if let Ok((status, action, inner)) = t.request_action_parts() {
            let again = Tlv::request_action(status, action, &inner).expect("re-encodes");
            assert_eq!(again.request_action_parts(), Ok((status, action, inner)));
        }
        if let Ok((format, inner)) = t.trusted_server_root_parts() {
            let again = Tlv::trusted_server_root(format, &inner).expect("re-encodes");
            assert_eq!(again.trusted_server_root_parts(), Ok((format, inner)));
        }
        if t.typ == TlvType::CRYPTO_BINDING {
            crypto_binding(&t.value);
        }
    }
    true
}

fn crypto_binding(value: &[u8]) {
    let Ok(cb) = CryptoBinding::decode(value) else {
        return;
    };
    assert_eq!(CryptoBinding::decode(&cb.encode()).as_ref(), Ok(&cb));
    let keys = TeapKeys::without_inner_method(PrfHash::Sha256, &[0x5a; 40]);
    let _ = keys.verify(&cb, b"server", b"peer");
    let mut signed = cb.clone();
    keys.sign(&mut signed, b"server", b"peer");
    assert!(
        keys.verify(&signed, b"server", b"peer"),
        "what we sign verifies"
    );
}

/// Voucher and voucher-request JSON (RFC 8366 §5.3, RFC 8995 §3): parse → write → parse gives
/// the same value; the base64 leaves and dates never panic.
pub fn voucher(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(v) = Voucher::from_json(data) {
        let json = v.to_json().expect("a voucher writes");
        assert_eq!(Voucher::from_json(&json).ok().as_ref(), Some(&v));
        let _ = v.pinned_domain_cert_der();
        for d in [&v.created_on, &v.expires_on].into_iter().flatten() {
            let _ = parse_rfc3339(d);
        }
        accepted = true;
    }
    if let Ok(r) = VoucherRequest::from_json(data) {
        let json = r.to_json().expect("a voucher request writes");
        assert_eq!(VoucherRequest::from_json(&json).ok().as_ref(), Some(&r));
        let _ = r.proximity_registrar_cert_der();
        let _ = r.prior_signed_voucher_request_der();
        let _ = r.idevid_issuer_der();
        let _ = r.pinned_domain_cert_der();
        if let Some(d) = &r.created_on {
            let _ = parse_rfc3339(d);
        }
        accepted = true;
    }
    accepted
}

/// Writes elements back in Envoy's syntax, every value quoted.
fn xfcc_encode(elements: &[XfccElement]) -> String {
    elements
        .iter()
        .map(|e| {
            e.pairs()
                .iter()
                .map(|(k, v)| {
                    let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("{k}=\"{v}\"")
                })
                .collect::<Vec<_>>()
                .join(";")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Envoy's `x-forwarded-client-cert` (the filter's reader): parse → write → parse gives the
/// same elements; the last element is the one read; the leaf read from it is bound to the
/// connection exactly when the peer digest is its SHA-256.
pub fn xfcc(data: &[u8]) -> bool {
    let Ok(header) = std::str::from_utf8(data) else {
        let r = estuary_filter::identity::leaf_from_xfcc(true, Some(data), None);
        assert!(r.is_err(), "a non-UTF-8 header is refused");
        return false;
    };
    let _ = xfcc::client_chain_pem(header);
    let Ok(elements) = xfcc::parse(header) else {
        return false;
    };
    let again = xfcc::parse(&xfcc_encode(&elements));
    assert_eq!(again.as_ref(), Ok(&elements), "XFCC round trip");
    assert_eq!(xfcc::last_element(header), Ok(elements.last().cloned()));
    for e in &elements {
        for (_, v) in e.pairs() {
            let _ = xfcc::percent_decode(v);
        }
    }
    if let Ok(Some(pem_text)) = xfcc::client_cert_pem(header) {
        if let Some(der) = pem::decode_certs(&pem_text)
            .ok()
            .and_then(|d| d.into_iter().next())
        {
            let digest: String = Sha256::digest(&der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let bound =
                estuary_filter::identity::leaf_from_xfcc(true, Some(data), Some(digest.as_bytes()));
            assert_eq!(bound.ok().map(|(d, _)| d), Some(der), "bound leaf is read");
            let unbound = estuary_filter::identity::leaf_from_xfcc(true, Some(data), Some(b"00"));
            assert!(unbound.is_err(), "a leaf with another digest is refused");
        }
    }
    true
}
