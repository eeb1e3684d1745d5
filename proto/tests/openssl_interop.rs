//! Interoperability with the openssl CLI, an independent implementation.
//!
//! These tests need `openssl` on PATH and FAIL (they do not skip) when it is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use estuary_proto::csr::{parse_and_verify, KeyKind};
use estuary_proto::csrattrs::{device_template, CsrAttrs};
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
use estuary_proto::policy::{check_enroll, KeyPolicy};
use estuary_proto::{base64, pem, pkcs7};

fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("the openssl CLI is required for this test but could not be run ({e}); install it (apt-get install openssl)")
        });
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write to openssl");
    drop(input);
    let out = child.wait_with_output().expect("openssl output");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "estuary-proto-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(rel),
    )
    .expect("fixture (run testdata/regen.sh)")
}

#[test]
fn openssl_decodes_our_base64() {
    for len in [0usize, 1, 2, 3, 47, 48, 49, 100, 1000, 4097] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let text = base64::encode(&data);
        assert_eq!(
            openssl(&["base64", "-d"], text.as_bytes()),
            data,
            "len {len}"
        );
    }
}

#[test]
fn we_decode_openssl_base64() {
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let text = openssl(&["base64", "-e"], &data);
    assert_eq!(base64::decode(&text).unwrap(), data);
}

#[test]
fn openssl_reads_our_pkcs7() {
    let leaf = fixture("cert/leaf.der");
    let ca = fixture("cert/ca.der");
    let p7 = pkcs7::encode_certs_only(&[leaf.clone(), ca.clone()]).unwrap();
    let printed = openssl(&["pkcs7", "-inform", "DER", "-print_certs"], &p7);
    let printed = String::from_utf8(printed).unwrap();
    let leaf_at = printed
        .find("subject=serialNumber = DEV1, CN = dev1.iot.example.test")
        .expect("leaf subject printed");
    let ca_at = printed
        .find("subject=CN = Estuary Test Root")
        .expect("CA subject printed");
    assert!(leaf_at < ca_at, "order kept: {printed}");
    // The certificates openssl prints are ours, byte for byte.
    assert_eq!(pem::decode_certs(&printed).unwrap(), vec![leaf, ca]);
    // And the base64 body an EST client gets decodes through openssl too.
    let der = openssl(&["base64", "-d"], base64::encode(&p7).as_bytes());
    let again = openssl(&["pkcs7", "-inform", "DER", "-print_certs"], &der);
    assert_eq!(again, printed.as_bytes());
}

#[test]
fn openssl_parses_our_csrattrs() {
    let parent = ParentDomain::parse("iot.example.test").unwrap();
    let name = DeviceName::new(&DeviceSerial::parse("dev7").unwrap(), &parent).unwrap();
    let der = device_template(&name, &KeyPolicy::default())
        .to_der()
        .unwrap();
    let text = String::from_utf8(openssl(&["asn1parse", "-inform", "DER", "-i"], &der)).unwrap();
    for want in [
        "rsaEncryption",
        "id-ecPublicKey",
        "prime256v1",
        "secp384r1",
        "ED25519",
        "Extension Request",
    ] {
        assert!(text.contains(want), "asn1parse lacks {want}:\n{text}");
    }
    assert!(!text.contains("challengePassword"));
    // The RFC 9908 template attribute (openssl has no name for the OID).
    assert!(text.contains("1.2.840.113549.1.9.16.2.61"), "{text}");
    // The SAN extension inside decodes in openssl as well.
    let dump = String::from_utf8(openssl(
        &["asn1parse", "-inform", "DER", "-i", "-dump"],
        &der,
    ))
    .unwrap();
    assert!(dump.contains("X509v3 Subject Alternative Name"), "{dump}");
}

/// A fresh CSR for every supported key type, made by openssl at test time from what
/// `/csrattrs` tells the device, passes verification and the enrolment policy.
#[test]
fn fresh_openssl_csrs_from_the_template() {
    let dir = TempDir::new("fresh");
    let parent = ParentDomain::parse("iot.example.test").unwrap();
    let name = DeviceName::new(&DeviceSerial::parse("Fresh-9").unwrap(), &parent).unwrap();
    let attrs = CsrAttrs::from_der(
        &device_template(&name, &KeyPolicy::default())
            .to_der()
            .unwrap(),
    )
    .unwrap();
    let dns = attrs.requested_dns_names();
    assert_eq!(dns, vec!["fresh-9.iot.example.test"]);
    let san = format!("subjectAltName=DNS:{}", dns[0]);
    let cn = attrs
        .requested_common_name()
        .expect("template prescribes a CN");
    assert_eq!(cn, dns[0]);
    let subj = format!("/CN={cn}");
    let cases: &[(&[&str], KeyKind)] = &[
        (
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyKind::Rsa { bits: 2048 },
        ),
        (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyKind::EcdsaP256,
        ),
        (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyKind::EcdsaP384,
        ),
        (&["-algorithm", "ED25519"], KeyKind::Ed25519),
    ];
    for (i, (genargs, kind)) in cases.iter().enumerate() {
        let key = dir.path(&format!("k{i}.pem"));
        let out = dir.path(&format!("r{i}.der"));
        let mut args = vec!["genpkey"];
        args.extend_from_slice(genargs);
        args.extend_from_slice(&["-out", &key]);
        openssl(&args, b"");
        openssl(
            &[
                "req", "-new", "-key", &key, "-subj", &subj, "-addext", &san, "-outform", "DER",
                "-out", &out,
            ],
            b"",
        );
        let der = std::fs::read(&out).unwrap();
        let csr = parse_and_verify(&der).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(csr.key(), *kind);
        assert_eq!(csr.subject_common_names(), std::slice::from_ref(&cn));
        check_enroll(&csr, &name, &KeyPolicy::default()).unwrap();
        // openssl agrees the request verifies, and we agree about what it holds.
        let text = String::from_utf8(openssl(
            &["req", "-inform", "DER", "-noout", "-verify", "-text"],
            &der,
        ))
        .unwrap();
        assert!(text.contains(&format!("DNS:{}", dns[0])), "{text}");
    }
}

/// CSRs made by `openssl req -addext …` that ask for more than a device certificate are refused
/// by the enrolment policy, naming what they ask for; the plain one (and one with the key
/// usages a device may ask for) is accepted.
#[test]
fn openssl_csrs_asking_for_more_than_a_device_certificate_are_refused() {
    use estuary_proto::csr::KeyUsageBit;
    use estuary_proto::oids;
    use estuary_proto::policy::PolicyError;

    let dir = TempDir::new("content");
    let parent = ParentDomain::parse("iot.example.test").unwrap();
    let name = DeviceName::new(&DeviceSerial::parse("Dev-3").unwrap(), &parent).unwrap();
    let key = dir.path("k.pem");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
        b"",
    );
    let cn = format!("/CN={}", name.as_str());
    let san = format!("subjectAltName=DNS:{}", name.as_str());
    let check = |subj: &str, extra: &[&str]| {
        let out = dir.path("r.der");
        let mut args = vec!["req", "-new", "-key", &key, "-subj", subj, "-addext", &san];
        for e in extra {
            args.extend_from_slice(&["-addext", e]);
        }
        args.extend_from_slice(&["-outform", "DER", "-out", &out]);
        openssl(&args, b"");
        let csr = parse_and_verify(&std::fs::read(&out).unwrap()).unwrap();
        check_enroll(&csr, &name, &KeyPolicy::default())
    };

    assert_eq!(check(&cn, &[]), Ok(()));
    assert_eq!(
        check(
            &cn,
            &[
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=clientAuth,serverAuth",
                "basicConstraints=critical,CA:FALSE",
            ]
        ),
        Ok(())
    );
    let e = check(&cn, &["basicConstraints=critical,CA:TRUE"]).unwrap_err();
    assert_eq!(e, PolicyError::CaRequested);
    assert!(e.to_string().contains("basicConstraints cA TRUE"), "{e}");
    let e = check(&cn, &["keyUsage=keyCertSign"]).unwrap_err();
    assert_eq!(
        e,
        PolicyError::KeyUsageNotAllowed {
            bit: KeyUsageBit::KEY_CERT_SIGN
        }
    );
    assert!(e.to_string().contains("keyCertSign"), "{e}");
    assert_eq!(
        check(
            &cn,
            &["nameConstraints=critical,permitted;DNS:.example.com"]
        ),
        Err(PolicyError::ExtensionNotAllowed {
            oid: oids::NAME_CONSTRAINTS,
            critical: true
        })
    );
    let e = check(&cn, &["1.3.6.1.4.1.55555.1=critical,ASN1:NULL"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("critical extension 1.3.6.1.4.1.55555.1"),
        "{e}"
    );
    assert_eq!(
        check(&format!("{cn}/O=Evil"), &[]),
        Err(PolicyError::SubjectAttributeNotAllowed {
            attribute: oids::ORGANIZATION_NAME
        })
    );
}
