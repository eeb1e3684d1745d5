//! RFC 7030 §4.4.1: a serverkeygen CSR names the device like a simpleenroll one, its key is not
//! held to the key policy, and a request for an encrypted key (§4.4.1.1, §4.4.1.2) is refused
//! with a reason naming the attribute.
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
use estuary_proto::oids;
use estuary_proto::policy::{check_enroll, check_serverkeygen, KeyPolicy, PolicyError};

fn device() -> DeviceName {
    DeviceName::new(
        &DeviceSerial::parse("SN1").expect("serial"),
        &ParentDomain::parse("iot.example.test").expect("parent"),
    )
    .expect("name")
}

fn csr(name: &str, key: &rcgen::KeyPair, attrs: Vec<rcgen::Attribute>) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .serialize_request_with_attributes(key, attrs)
        .expect("csr")
        .der()
        .to_vec()
}

/// SET { OCTET STRING } holding a 4-byte key identifier.
fn key_id_values() -> Vec<u8> {
    vec![0x31, 0x06, 0x04, 0x04, 0xde, 0xad, 0xbe, 0xef]
}

#[test]
fn the_request_key_is_not_held_to_the_key_policy() {
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let der = csr(device().as_str(), &key, vec![]);
    let v = estuary_proto::parse_and_verify(&der).expect("verifies");
    let no_p256 = KeyPolicy {
        allow_p256: false,
        ..KeyPolicy::default()
    };
    assert!(matches!(
        check_enroll(&v, &device(), &no_p256),
        Err(PolicyError::KeyNotAllowed { .. })
    ));
    assert_eq!(check_serverkeygen(&v, &device()), Ok(()));
}

#[test]
fn names_and_content_are_checked_as_for_simpleenroll() {
    let key = rcgen::KeyPair::generate().expect("key");
    let der = csr("sn2.iot.example.test", &key, vec![]);
    let v = estuary_proto::parse_and_verify(&der).expect("verifies");
    let err = check_serverkeygen(&v, &device()).expect_err("another device's name");
    assert!(matches!(err, PolicyError::WrongDnsName { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("may only ask for sn1.iot.example.test"));
}

#[test]
fn an_encrypted_key_request_is_refused_naming_the_attribute() {
    let key = rcgen::KeyPair::generate().expect("key");
    for (arc, oid, name) in [
        (
            &[1u64, 2, 840, 113549, 1, 9, 16, 2, 37][..],
            oids::DECRYPT_KEY_ID,
            "DecryptKeyIdentifier",
        ),
        (
            &[1, 2, 840, 113549, 1, 9, 16, 2, 54][..],
            oids::ASYMM_DECRYPT_KEY_ID,
            "AsymmetricDecryptKeyIdentifier",
        ),
    ] {
        let attr = rcgen::Attribute {
            oid: arc,
            values: key_id_values(),
        };
        let der = csr(device().as_str(), &key, vec![attr]);
        let v = estuary_proto::parse_and_verify(&der).expect("verifies");
        let err = check_serverkeygen(&v, &device()).expect_err("refused");
        assert_eq!(
            err,
            PolicyError::KeyEncryptionNotSupported { attribute: oid },
            "{name}"
        );
        let text = err.to_string();
        assert!(text.contains(name), "{text}");
        assert!(text.contains("RFC 7030 §4.4.1"), "{text}");
    }
}
