//! Tests against the committed fixtures in `proto/testdata/` (made by `testdata/regen.sh`
//! with the openssl CLI).

use estuary_proto::cert::CertSummary;
use estuary_proto::csr::{parse_and_verify, CsrError, KeyKind};
use estuary_proto::names::{DeviceName, ParentDomain};
use estuary_proto::policy::{check_enroll, check_reenroll, KeyPolicy, PolicyError};
use estuary_proto::{pem, pkcs7};

const NAME: &str = "dev1.iot.example.test";

fn fixture(rel: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e} (run testdata/regen.sh)"))
}

fn csr(name: &str) -> Vec<u8> {
    fixture(&format!("csr/{name}.der"))
}

fn device() -> DeviceName {
    DeviceName::parse_under(NAME, &ParentDomain::parse("iot.example.test").unwrap()).unwrap()
}

const GOOD: &[(&str, KeyKind, bool)] = &[
    ("rsa2048-sha256-san", KeyKind::Rsa { bits: 2048 }, true),
    ("rsa2048-sha384-san", KeyKind::Rsa { bits: 2048 }, true),
    ("rsa3072-sha512-san", KeyKind::Rsa { bits: 3072 }, true),
    ("rsa4096-sha256-nosan", KeyKind::Rsa { bits: 4096 }, false),
    ("p256-sha256-san", KeyKind::EcdsaP256, true),
    ("p256-sha384-san", KeyKind::EcdsaP256, true),
    ("p256-sha256-nosan", KeyKind::EcdsaP256, false),
    ("p384-sha384-san", KeyKind::EcdsaP384, true),
    ("p384-sha256-san", KeyKind::EcdsaP384, true),
    ("ed25519-san", KeyKind::Ed25519, true),
    ("ed25519-nosan", KeyKind::Ed25519, false),
];

#[test]
fn good_csrs_verify_and_read() {
    for (name, kind, san) in GOOD {
        let der = csr(name);
        let v = parse_and_verify(&der).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.key(), *kind, "{name}");
        assert_eq!(v.der(), der.as_slice());
        assert_eq!(v.subject_common_name(), Some(NAME), "{name}");
        if *san {
            assert_eq!(v.dns_names(), [NAME.to_owned()], "{name}");
            assert_eq!(v.subject_serial_number(), Some("DEV1"), "{name}");
        } else {
            assert!(v.dns_names().is_empty(), "{name}");
            assert_eq!(v.subject_serial_number(), None, "{name}");
        }
        assert!(!v.has_non_dns_sans());
        // The SPKI is a SEQUENCE inside the request.
        assert_eq!(v.spki_der().first(), Some(&0x30));
        assert!(der.windows(v.spki_der().len()).any(|w| w == v.spki_der()));
        assert!(der
            .windows(v.subject_der().len())
            .any(|w| w == v.subject_der()));
    }
}

#[test]
fn key_kind_display() {
    assert_eq!(KeyKind::Rsa { bits: 2048 }.to_string(), "RSA-2048");
    assert_eq!(KeyKind::EcdsaP256.to_string(), "P-256");
    assert_eq!(KeyKind::EcdsaP384.to_string(), "P-384");
    assert_eq!(KeyKind::Ed25519.to_string(), "Ed25519");
}

#[test]
fn small_rsa_and_other_curves_refused() {
    assert_eq!(
        parse_and_verify(&csr("rsa1024-sha256-san")),
        Err(CsrError::RsaKeyTooSmall { bits: 1024 })
    );
    match parse_and_verify(&csr("k256-sha256-san")) {
        Err(CsrError::UnsupportedCurve { oid }) => assert_eq!(oid.to_string(), "1.3.132.0.10"),
        other => panic!("secp256k1 gave {other:?}"),
    }
}

#[test]
fn flipped_signature_byte_is_bad_signature() {
    for (name, _, _) in GOOD {
        let mut der = csr(name);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let got = parse_and_verify(&der);
        // An ECDSA signature is DER inside the BIT STRING: a flipped last byte still parses
        // as DER (it is inside the INTEGER s), so every kind must answer BadSignature.
        assert_eq!(got, Err(CsrError::BadSignature), "{name}");
    }
}

#[test]
fn flipped_body_byte_is_bad_signature() {
    for (name, _, _) in GOOD {
        let mut der = csr(name);
        let at = der
            .windows(NAME.len())
            .position(|w| w == NAME.as_bytes())
            .expect("name in CSR");
        der[at] = b'x';
        assert_eq!(
            parse_and_verify(&der),
            Err(CsrError::BadSignature),
            "{name}"
        );
    }
}

#[test]
fn signature_algorithm_swapped_is_refused() {
    // ecdsa-with-SHA256 -> ecdsa-with-SHA384 in the outer signatureAlgorithm: same length,
    // wrong hash, so the signature must not verify.
    let mut der = csr("p256-sha256-san");
    let sha256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let at = der.windows(8).rposition(|w| w == sha256).unwrap();
    der[at + 7] = 0x03;
    assert_eq!(parse_and_verify(&der), Err(CsrError::BadSignature));
    // Ed25519 -> Ed448 (1.3.101.113) as signature algorithm: unsupported.
    let mut der = csr("ed25519-san");
    let at = der
        .windows(3)
        .rposition(|w| w == [0x2b, 0x65, 0x70])
        .unwrap();
    der[at + 2] = 0x71;
    assert!(matches!(
        parse_and_verify(&der),
        Err(CsrError::UnsupportedSignatureAlgorithm { .. })
    ));
    // sha256WithRSAEncryption -> RSASSA-PSS (1.2.840.113549.1.1.10): unsupported here.
    let mut der = csr("rsa2048-sha256-san");
    let oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    let at = der.windows(9).rposition(|w| w == oid).unwrap();
    der[at + 8] = 0x0a;
    assert!(matches!(
        parse_and_verify(&der),
        Err(CsrError::UnsupportedSignatureAlgorithm { .. })
    ));
}

#[test]
fn every_prefix_is_an_error() {
    for name in GOOD.iter().map(|g| g.0).chain(["rsa1024-sha256-san"]) {
        let der = csr(name);
        for len in 0..der.len() {
            assert!(
                parse_and_verify(&der[..len]).is_err(),
                "{name} prefix {len}"
            );
        }
    }
}

#[test]
fn trailing_data_and_garbage() {
    let mut der = csr("p256-sha256-san");
    der.push(0);
    assert_eq!(parse_and_verify(&der), Err(CsrError::TrailingData));
    der.pop();
    der.extend_from_slice(&der.clone());
    assert_eq!(parse_and_verify(&der), Err(CsrError::TrailingData));
    for garbage in [
        &b""[..],
        b"\x30",
        b"\x30\x80\x00\x00",
        b"-----BEGIN CERTIFICATE REQUEST-----",
        &[0xff; 64],
    ] {
        assert!(matches!(
            parse_and_verify(garbage),
            Err(CsrError::Malformed(_))
        ));
    }
    // A certificate is not a CSR.
    assert!(parse_and_verify(&fixture("cert/leaf.der")).is_err());
}

#[test]
fn enroll_policy() {
    let keys = KeyPolicy::default();
    let dev = device();
    for ok in ["p256-upper-dns", "p256-empty-subject"] {
        let v = parse_and_verify(&csr(ok)).unwrap();
        assert_eq!(check_enroll(&v, &dev, &keys), Ok(()), "{ok}");
    }
    // These carry the right name and key, but also a subject serialNumber: a device asks for
    // CN and SAN only.
    for extra in [
        "p256-sha256-san",
        "p384-sha384-san",
        "ed25519-san",
        "rsa2048-sha256-san",
        "rsa3072-sha512-san",
    ] {
        let v = parse_and_verify(&csr(extra)).unwrap();
        assert_eq!(
            check_enroll(&v, &dev, &keys),
            Err(PolicyError::SubjectAttributeNotAllowed {
                attribute: estuary_proto::oids::SERIAL_NUMBER
            }),
            "{extra}"
        );
    }
    let check = |name: &str| check_enroll(&parse_and_verify(&csr(name)).unwrap(), &dev, &keys);
    assert_eq!(
        check("p256-sha256-nosan"),
        Err(PolicyError::NoDnsName {
            expected: NAME.into()
        })
    );
    assert_eq!(
        check("p256-two-dns"),
        Err(PolicyError::WrongDnsName {
            asked: "other.iot.example.test".into(),
            expected: NAME.into()
        })
    );
    let e = check("p256-other-dns").unwrap_err();
    assert_eq!(
        e.to_string(),
        "CSR asks for name dev2.iot.example.test, this device may only ask for dev1.iot.example.test"
    );
    assert_eq!(check("p256-ip-san"), Err(PolicyError::NonDnsSan));
    let e = check("p256-wrong-cn").unwrap_err();
    assert_eq!(
        e,
        PolicyError::WrongCommonName {
            asked: "someone-else".into(),
            expected: NAME.into()
        }
    );
    assert_eq!(
        e.to_string(),
        "CSR subject commonName \"someone-else\" differs from the allowed name dev1.iot.example.test"
    );
    let only_rsa = KeyPolicy {
        allow_p256: false,
        allow_p384: false,
        allow_ed25519: false,
        ..KeyPolicy::default()
    };
    let v = parse_and_verify(&csr("p256-sha256-san")).unwrap();
    assert_eq!(
        check_enroll(&v, &dev, &only_rsa),
        Err(PolicyError::KeyNotAllowed {
            key: KeyKind::EcdsaP256
        })
    );
    let rsa_3072 = KeyPolicy {
        rsa_min_bits: 3072,
        ..KeyPolicy::default()
    };
    let v = parse_and_verify(&csr("rsa2048-sha256-san")).unwrap();
    assert_eq!(
        check_enroll(&v, &dev, &rsa_3072).unwrap_err().to_string(),
        "RSA-2048 keys are not accepted here"
    );
}

#[test]
fn key_policy_default() {
    let p = KeyPolicy::default();
    assert!(p.allows(KeyKind::Rsa { bits: 2048 }));
    assert!(p.allows(KeyKind::Rsa { bits: 4096 }));
    assert!(!p.allows(KeyKind::Rsa { bits: 2047 }));
    assert!(!p.allows(KeyKind::Rsa { bits: 8192 }));
    assert!(p.allows(KeyKind::EcdsaP256));
    assert!(p.allows(KeyKind::EcdsaP384));
    assert!(p.allows(KeyKind::Ed25519));
}

#[test]
fn reenroll_policy() {
    let keys = KeyPolicy::default();
    let leaf = CertSummary::from_der(&fixture("cert/leaf.der")).unwrap();
    // The same subject and name as the leaf, but that subject holds a serialNumber, which no
    // CSR may ask for (policy::content_tests re-enrols with an acceptable subject).
    let same = parse_and_verify(&csr("reenroll-same")).unwrap();
    assert_eq!(
        check_reenroll(&same, &leaf, &keys),
        Err(PolicyError::SubjectAttributeNotAllowed {
            attribute: estuary_proto::oids::SERIAL_NUMBER
        })
    );
    let changed = parse_and_verify(&csr("reenroll-new-subject")).unwrap();
    assert_eq!(
        check_reenroll(&changed, &leaf, &keys),
        Err(PolicyError::SubjectChanged)
    );
    let nosan = parse_and_verify(&csr("p256-two-dns")).unwrap();
    assert!(matches!(
        check_reenroll(&nosan, &leaf, &keys),
        Err(PolicyError::DnsNamesChanged { .. })
    ));
}

#[test]
fn certificate_summary() {
    let leaf = CertSummary::from_der(&fixture("cert/leaf.der")).unwrap();
    let ca = CertSummary::from_der(&fixture("cert/ca.der")).unwrap();
    assert_eq!(leaf.subject_serial_number(), Some("DEV1"));
    assert_eq!(leaf.subject_common_name(), Some(NAME));
    assert_eq!(leaf.dns_names(), [NAME.to_owned()]);
    assert_eq!(leaf.key(), Some(KeyKind::EcdsaP256));
    assert_eq!(leaf.issuer_der(), ca.subject_der());
    assert_eq!(ca.subject_common_name(), Some("Estuary Test Root"));
    assert!(ca.dns_names().is_empty());
    // Validity of 36500 days from generation.
    assert!(leaf.not_after_unix() - leaf.not_before_unix() >= 36_500 * 86_400 - 1);
    assert!(leaf.not_before_unix() > 1_700_000_000);
    // The SPKI of the leaf is that of the CSR made with the same key.
    let csr = parse_and_verify(&csr("p256-sha256-san")).unwrap();
    assert_eq!(leaf.spki_der(), csr.spki_der());
    // Every prefix fails; trailing data fails.
    let der = fixture("cert/leaf.der");
    for len in 0..der.len() {
        assert!(CertSummary::from_der(&der[..len]).is_err(), "prefix {len}");
    }
    let mut long = der.clone();
    long.push(0);
    assert!(CertSummary::from_der(&long).is_err());
}

#[test]
fn pem_bundle() {
    let text = String::from_utf8(fixture("cert/chain.pem")).unwrap();
    let ders = pem::decode_certs(&text).unwrap();
    assert_eq!(ders, vec![fixture("cert/leaf.der"), fixture("cert/ca.der")]);
    assert_eq!(pem::decode_certs(&pem::encode_certs(&ders)).unwrap(), ders);
    assert_eq!(
        pem::decode_certs("no pem here"),
        Err(pem::PemError::NoCertificates)
    );
    let cut = &text[..text.len() - 30];
    assert!(pem::decode_certs(cut).is_err());
    // Other block types are skipped; explanatory text is allowed between blocks.
    let mixed =
        format!("subject=x\n-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n{text}");
    assert_eq!(pem::decode_certs(&mixed).unwrap(), ders);
}

#[test]
fn pkcs7_matches_openssl() {
    let leaf = fixture("cert/leaf.der");
    let ca = fixture("cert/ca.der");
    let theirs = fixture("cert/chain-openssl.p7b");
    assert_eq!(
        pkcs7::decode_certs_only(&theirs).unwrap(),
        vec![leaf.clone(), ca.clone()]
    );
    let ours = pkcs7::encode_certs_only(&[leaf.clone(), ca.clone()]).unwrap();
    assert_eq!(ours, theirs, "same bytes as openssl crl2pkcs7");
    // Order is kept, not sorted.
    let reversed = pkcs7::encode_certs_only(&[ca.clone(), leaf.clone()]).unwrap();
    assert_eq!(
        pkcs7::decode_certs_only(&reversed).unwrap(),
        vec![ca.clone(), leaf.clone()]
    );
    for len in 0..ours.len() {
        assert!(
            pkcs7::decode_certs_only(&ours[..len]).is_err(),
            "prefix {len}"
        );
    }
    let mut long = ours.clone();
    long.push(0);
    assert_eq!(
        pkcs7::decode_certs_only(&long),
        Err(pkcs7::Pkcs7Error::TrailingData)
    );
    assert_eq!(
        pkcs7::encode_certs_only(&[]),
        Err(pkcs7::Pkcs7Error::NoCertificates)
    );
    assert_eq!(
        pkcs7::encode_certs_only(&[leaf, b"junk".to_vec()]),
        Err(pkcs7::Pkcs7Error::NotACertificate { index: 1 })
    );
    // A CSR is a SEQUENCE but not a PKCS#7.
    assert!(pkcs7::decode_certs_only(&csr("p256-sha256-san")).is_err());
}

/// A memo that records what it was asked and told.
#[derive(Default)]
struct Memo {
    known: Vec<estuary_proto::csr::CsrDigest>,
    asked: usize,
}

impl estuary_proto::csr::SignatureMemo for Memo {
    fn verified(&mut self, digest: &estuary_proto::csr::CsrDigest) -> bool {
        self.asked += 1;
        self.known.contains(digest)
    }
    fn remember(&mut self, digest: &estuary_proto::csr::CsrDigest) {
        self.known.push(*digest);
    }
}

#[test]
fn signature_memo_learns_only_good_signatures_and_keys_on_the_exact_bytes() {
    use estuary_proto::csr::parse_and_verify_memo;
    use sha2::{Digest, Sha256};
    let good = csr("p256-sha256-san");
    let mut memo = Memo::default();
    let first = parse_and_verify_memo(&good, Some(&mut memo)).unwrap();
    assert_eq!(memo.known, vec![<[u8; 32]>::from(Sha256::digest(&good))]);
    // A hit reads the same fields as a full verification.
    assert_eq!(
        parse_and_verify_memo(&good, Some(&mut memo)).unwrap(),
        first
    );
    assert_eq!(memo.known.len(), 1);

    // The same request with a flipped signature byte has another digest: verified, refused,
    // not remembered.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    assert_eq!(
        parse_and_verify_memo(&bad, Some(&mut memo)),
        Err(CsrError::BadSignature)
    );
    assert_eq!(memo.known.len(), 1);
    assert_eq!(memo.asked, 3);
}
