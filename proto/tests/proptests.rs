//! Property tests: no decoder panics on any input; encoders and decoders round-trip.

use estuary_proto::cert::CertSummary;
use estuary_proto::csr::parse_and_verify;
use estuary_proto::csrattrs::{AttrOrOid, CsrAttrs};
use estuary_proto::est::parse_est_path;
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
use estuary_proto::{base64, pem, pkcs7};
use proptest::prelude::*;

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{rel}", env!("CARGO_MANIFEST_DIR")))
        .expect("fixture (run testdata/regen.sh)")
}

/// OIDs of at least four arcs (the codec refuses OIDs under 3 content octets).
fn oid() -> impl Strategy<Value = const_oid::ObjectIdentifier> {
    (
        0u32..=2,
        0u32..=39,
        proptest::collection::vec(0u32..100_000, 2..6),
    )
        .prop_map(|(a, b, rest)| {
            let mut s = format!("{a}.{b}");
            for r in rest {
                s.push_str(&format!(".{r}"));
            }
            const_oid::ObjectIdentifier::new(&s).expect("valid OID")
        })
}

/// One DER value: an OCTET STRING, an INTEGER-like primitive or an OID.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|v| {
            let mut out = vec![0x04];
            if v.len() < 128 {
                out.push(v.len() as u8);
            } else if v.len() < 256 {
                out.extend([0x81, v.len() as u8]);
            } else {
                out.extend([0x82, (v.len() >> 8) as u8, v.len() as u8]);
            }
            out.extend(v);
            out
        }),
        oid().prop_map(|o| {
            let mut out = vec![0x06, o.as_bytes().len() as u8];
            out.extend_from_slice(o.as_bytes());
            out
        }),
    ]
}

fn attr_or_oid() -> impl Strategy<Value = AttrOrOid> {
    prop_oneof![
        oid().prop_map(AttrOrOid::Oid),
        (oid(), proptest::collection::vec(value(), 1..4))
            .prop_map(|(oid, values)| AttrOrOid::Attribute { oid, values }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_and_verify(&bytes);
        let _ = CertSummary::from_der(&bytes);
        let _ = pkcs7::decode_certs_only(&bytes);
        let _ = CsrAttrs::from_der(&bytes);
        let _ = base64::decode(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = pem::decode_certs(&text);
        let _ = parse_est_path(&text);
        let _ = DeviceSerial::parse(&text);
        let _ = ParentDomain::parse(&text);
        let _ = DeviceName::parse(&text);
    }

    #[test]
    fn mutated_csrs_never_panic_or_verify_wrongly(
        idx in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
    ) {
        let name = ["p256-sha256-san", "rsa2048-sha256-san", "ed25519-san", "p384-sha384-san"][idx];
        let original = fixture(&format!("csr/{name}.der"));
        let mut der = original.clone();
        for (at, x) in flips {
            let at = at % der.len();
            der[at] ^= x;
        }
        // If a damaged request still verifies, it must say exactly what the original said.
        if let Ok(v) = parse_and_verify(&der) {
            let o = parse_and_verify(&original).unwrap();
            prop_assert_eq!(v.subject_der(), o.subject_der());
            prop_assert_eq!(v.dns_names(), o.dns_names());
            prop_assert_eq!(v.spki_der(), o.spki_der());
        }
    }

    #[test]
    fn base64_round_trip(data in proptest::collection::vec(any::<u8>(), 0..1000)) {
        let text = base64::encode(&data);
        prop_assert_eq!(base64::decode(text.as_bytes()).unwrap(), data.clone());
        for line in text.split_terminator("\r\n") {
            prop_assert!(line.len() <= 64);
        }
        // Without padding and line breaks it still decodes.
        let bare: String = text.chars().filter(|c| *c != '=' && *c != '\r' && *c != '\n').collect();
        prop_assert_eq!(base64::decode(bare.as_bytes()).unwrap(), data);
    }

    #[test]
    fn csrattrs_round_trip(entries in proptest::collection::vec(attr_or_oid(), 0..8)) {
        let attrs = CsrAttrs(entries);
        let der = attrs.to_der().unwrap();
        let back = CsrAttrs::from_der(&der).unwrap();
        prop_assert_eq!(&back, &attrs);
        prop_assert_eq!(back.to_der().unwrap(), der);
    }

    #[test]
    fn pkcs7_round_trip(order in proptest::collection::vec(0usize..2, 1..6)) {
        let pool = [fixture("cert/leaf.der"), fixture("cert/ca.der")];
        let certs: Vec<Vec<u8>> = order.iter().map(|i| pool[*i].clone()).collect();
        let der = pkcs7::encode_certs_only(&certs).unwrap();
        prop_assert_eq!(pkcs7::decode_certs_only(&der).unwrap(), certs);
    }

    #[test]
    fn pkcs7_of_any_sequences_round_trips(
        contents in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..5)
    ) {
        // Each "certificate" is any SEQUENCE TLV: the codec is structural.
        let certs: Vec<Vec<u8>> = contents
            .iter()
            .map(|c| {
                let mut t = vec![0x30];
                if c.len() < 128 { t.push(c.len() as u8) } else { t.extend([0x81, c.len() as u8]) }
                t.extend(c);
                t
            })
            .collect();
        let der = pkcs7::encode_certs_only(&certs).unwrap();
        prop_assert_eq!(pkcs7::decode_certs_only(&der).unwrap(), certs);
    }

    #[test]
    fn device_names_round_trip(serial in "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?") {
        let parent = ParentDomain::parse("iot.example.test").unwrap();
        let s = DeviceSerial::parse(&serial).unwrap();
        let n = DeviceName::new(&s, &parent).unwrap();
        prop_assert_eq!(DeviceName::parse_under(&n.as_str().to_uppercase(), &parent).unwrap(), n.clone());
        prop_assert_eq!(n.as_str().parse::<DeviceName>().unwrap(), n);
    }
}
