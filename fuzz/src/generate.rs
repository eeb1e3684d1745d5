//! The generated part of the seed corpus (`smoke --write-seeds`, run by `seeds/regen.sh`):
//! protocol messages built with estuary-proto's own encoders, RFC examples, and copies of the
//! fixtures in `proto/testdata`. The CMS seeds come from openssl (see `seeds/regen.sh`).

use std::path::Path;

use estuary_proto::csrattrs::device_template;
use estuary_proto::eap::{self, EapCode, EapPacket, EapType, TeapFrame};
use estuary_proto::names::{DeviceName, ParentDomain};
use estuary_proto::radius::{self, AttrType, Code, Packet};
use estuary_proto::teap::{
    self, Action, CbSubType, CryptoBinding, ErrorCode, PrfHash, Status, TeapKeys, Tlv, TlvType,
};
use estuary_proto::voucher::{b64, Assertion, Voucher, VoucherRequest};
use estuary_proto::{base64, pem, pkcs7, KeyPolicy};

type Seeds = Vec<(&'static str, String, Vec<u8>)>;

fn testdata(rel: &str) -> Result<Vec<u8>, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/testdata")
        .join(rel);
    std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Writes every generated seed; returns how many.
pub fn write_all(dir: &Path) -> Result<usize, String> {
    let seeds = all()?;
    for (target, name, data) in &seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let f = d.join(name);
        std::fs::write(&f, data).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(seeds.len())
}

fn all() -> Result<Seeds, String> {
    let mut s: Seeds = Vec::new();
    let mut add = |t: &'static str, n: &str, d: Vec<u8>| s.push((t, n.to_string(), d));

    // Certificates and CSRs from proto/testdata.
    let leaf = testdata("cert/leaf.der")?;
    let ca = testdata("cert/ca.der")?;
    let chain_pem = testdata("cert/chain.pem")?;
    add("cert", "leaf.der", leaf.clone());
    add("cert", "ca.der", ca.clone());
    add(
        "identity",
        "leaf-ca.der",
        [leaf.clone(), ca.clone()].concat(),
    );
    add("identity", "leaf.der", leaf.clone());
    add("pem", "chain.pem", chain_pem.clone());
    add("pem", "ca.pem", testdata("cert/ca.pem")?);
    add(
        "pkcs7",
        "chain-openssl.p7b",
        testdata("cert/chain-openssl.p7b")?,
    );
    let ours = pkcs7::encode_certs_only(&[leaf.clone(), ca.clone()]).map_err(|e| e.to_string())?;
    add("pkcs7", "chain-ours.p7b", ours.clone());
    add(
        "base64",
        "chain.p7b.b64",
        base64::encode(&ours).into_bytes(),
    );
    add("base64", "short.b64", b"MAA=\r\nTWFu\n".to_vec());
    // A serverkeygen answer (RFC 7030 §4.4.2) as Estuary builds it: content type, newline, body
    // (the "key" is not one: the parser does not read inside the parts).
    let mut answer = format!("{}\n", estuary_proto::serverkeygen::content_type()).into_bytes();
    estuary_proto::serverkeygen::build(b"not a key", &ours, &mut answer);
    add("serverkeygen", "estuary.txt", answer);
    add(
        "serverkeygen",
        "rfc7030-layout.txt",
        b"multipart/mixed ; boundary=est\n--est\nContent-Type: application/pkcs8\n\nAQID\n--est\nContent-Type: application/pkcs7-mime; smime-type=certs-only\n\nBAUG\n--est--\n".to_vec(),
    );
    for csr in [
        "p256-sha256-san",
        "ed25519-san",
        "rsa2048-sha256-san",
        "p384-sha384-san",
    ] {
        let der = testdata(&format!("csr/{csr}.der"))?;
        add("csr", &format!("{csr}.der"), der.clone());
        if csr == "p256-sha256-san" {
            add("base64", "csr.b64", base64::encode(&der).into_bytes());
        }
    }

    // CSR attributes: RFC 7030 §4.5.2's example, and the template Estuary sends.
    let rfc7030 = b"MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw==";
    add(
        "csrattrs",
        "rfc7030-4.5.2.der",
        base64::decode(rfc7030).map_err(|e| e.to_string())?,
    );
    let parent = ParentDomain::parse("iot.example.test").map_err(|e| e.to_string())?;
    let name =
        DeviceName::parse_under("dev1.iot.example.test", &parent).map_err(|e| e.to_string())?;
    let template = device_template(&name, &KeyPolicy::default())
        .to_der()
        .map_err(|e| e.to_string())?;
    add("csrattrs", "device-template.der", template);

    // RFC 3339 (RFC 3339 §5.8 examples, RFC 8555 §7.1.4, voucher dates).
    for (i, d) in [
        "1985-04-12T23:20:50.52Z",
        "1996-12-19T16:39:57-08:00",
        "1990-12-31T23:59:60Z",
        "1937-01-01T12:00:27.87+00:20",
        "2016-01-02T14:09:30Z",
        "2016-10-07T19:31:42Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        // Found by fuzzing: a day beyond the month (now refused).
        "9999-02-31T23:59:59Z",
    ]
    .iter()
    .enumerate()
    {
        add("rfc3339", &format!("date-{i}"), d.as_bytes().to_vec());
    }

    // Voucher and voucher request JSON (RFC 8366 §5.3, RFC 8995 §3.3).
    let v = Voucher {
        assertion: Some(Assertion::Logged),
        serial_number: "JADA123456789".into(),
        nonce: Some("62a2e7693d82fcda2624de58fb6722e5".into()),
        pinned_domain_cert: b64(&ca),
        created_on: Some("2016-10-07T19:31:42Z".into()),
        expires_on: Some("2016-10-21T19:31:42Z".into()),
        est_domain: Some("https://est.example.com/.well-known/est".into()),
        additional_configuration_url: None,
    };
    add(
        "voucher",
        "voucher.json",
        v.to_json().map_err(|e| e.to_string())?,
    );
    let r = VoucherRequest {
        assertion: Some(Assertion::Proximity),
        nonce: Some("eDs++/FuDHGUnRxN3E14CQ==".into()),
        serial_number: Some("JADA123456789".into()),
        created_on: Some("2017-09-01T00:00:00.000Z".into()),
        proximity_registrar_cert: Some(b64(&leaf)),
        ..Default::default()
    };
    add(
        "voucher",
        "request.json",
        r.to_json().map_err(|e| e.to_string())?,
    );
    let rr = VoucherRequest {
        assertion: Some(Assertion::Proximity),
        serial_number: Some("JADA123456789".into()),
        idevid_issuer: Some(b64(b"\x30\x00")),
        prior_signed_voucher_request: Some(b64(b"\x30\x03\x02\x01\x00")),
        pinned_domain_cert: Some(b64(&ca)),
        ..Default::default()
    };
    add(
        "voucher",
        "registrar-request.json",
        rr.to_json().map_err(|e| e.to_string())?,
    );

    // XFCC (Envoy docs' shapes; a real Cert/Chain as Envoy URL-encodes them).
    let url = |s: &[u8]| -> String {
        s.iter()
            .map(|b| match b {
                b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'+'
                | b'/'
                | b'=' => char::from(*b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let leaf_pem = pem::encode_certs(std::slice::from_ref(&leaf));
    add(
        "xfcc",
        "envoy-doc",
        br#"By=spiffe://lyft.com/frontend;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=spiffe://lyft.com/test"#.to_vec(),
    );
    add(
        "xfcc",
        "two-elements",
        br#"By=spoofed;Cert="evil",By=http://frontend.lyft.com;Hash=ab;Subject="CN=a\"b, O=x;y\\z";DNS=a.example;DNS=b.example"#.to_vec(),
    );
    add(
        "xfcc",
        "cert-chain",
        format!(
            "Hash=00;Cert=\"{}\";Chain=\"{}\";Subject=\"serialNumber=SN1,CN=pledge\";DNS=sn1.iot.example.test",
            url(leaf_pem.as_bytes()),
            url(&chain_pem)
        )
        .into_bytes(),
    );

    // Names: EST paths (RFC 7030 §3.2.2), device names, "pattern\nserial" globs.
    for (i, n) in [
        "/.well-known/est/simpleenroll",
        "/.well-known/est/arbitraryLabel1/cacerts?x=1",
        "/.well-known/est/csrattrs",
        "dev1.iot.example.test",
        "SN-0042.IoT.Example.Test.",
        "acme-\nacme-*",
        "SN??-*-x\nSN12-abc-x",
        "*a*b*c*d*e*f\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ]
    .iter()
    .enumerate()
    {
        add("names", &format!("name-{i}"), n.as_bytes().to_vec());
    }

    // TEAP TLVs (RFC 9930 §4.2) and a signed Crypto-Binding.
    let keys = TeapKeys::without_inner_method(PrfHash::Sha256, &[0x5a; 40]);
    let mut cb = CryptoBinding {
        version: 1,
        received_version: 1,
        flags: teap::CB_FLAG_MSK,
        sub_type: CbSubType::Request,
        nonce: [0x42; 32],
        emsk_mac: [0; 20],
        msk_mac: [0; 20],
    };
    keys.sign(&mut cb, b"server", b"peer");
    let enc = |tlvs: &[Tlv]| teap::encode(tlvs).map_err(|e| e.to_string());
    add(
        "teap",
        "crypto-binding",
        enc(&[cb.to_tlv(), Tlv::intermediate_result(Status::SUCCESS)])?,
    );
    add("teap", "crypto-binding-value", cb.encode());
    add(
        "teap",
        "result-error-nak",
        enc(&[
            Tlv::result(Status::FAILURE),
            Tlv::error(ErrorCode::BAD_CSR),
            Tlv::nak(TlvType::PAC),
        ])?,
    );
    let pkcs10 = Tlv::new(true, TlvType::PKCS10, testdata("csr/p256-sha256-san.der")?);
    add(
        "teap",
        "request-action",
        enc(&[
            Tlv::request_action(2, Action::PROCESS_TLV, std::slice::from_ref(&pkcs10))
                .map_err(|e| e.to_string())?,
        ])?,
    );
    add(
        "teap",
        "pkcs7-identity",
        enc(&[
            Tlv::new(true, TlvType::PKCS7, ours.clone()),
            Tlv::new(false, TlvType::IDENTITY_TYPE, vec![0, 2]),
            Tlv::new(false, TlvType::AUTHORITY_ID, vec![0x11; 16]),
        ])?,
    );

    // EAP and TEAP frames (RFC 3748 §4, RFC 9930 §4.1).
    let outer = enc(&[Tlv::new(false, TlvType::AUTHORITY_ID, vec![0x11; 16])])?;
    let start = TeapFrame {
        start: true,
        version: eap::TEAP_VERSION,
        outer_tlvs: outer.clone(),
        ..TeapFrame::default()
    };
    let frames = eap::fragment(&[0x16; 600], 250, &outer);
    let ident = EapPacket::new(
        EapCode::RESPONSE,
        1,
        EapType::IDENTITY,
        b"anonymous".to_vec(),
    );
    let eap_enc = |p: EapPacket| p.encode().map_err(|e| e.to_string());
    add("eap", "identity", eap_enc(ident.clone())?);
    add(
        "eap",
        "teap-start",
        eap_enc(EapPacket::new(
            EapCode::REQUEST,
            2,
            EapType::TEAP,
            start.encode(),
        ))?,
    );
    for (i, f) in frames.iter().enumerate() {
        add(
            "eap",
            &format!("teap-fragment-{i}"),
            eap_enc(EapPacket::new(
                EapCode::RESPONSE,
                3,
                EapType::TEAP,
                f.encode(),
            ))?,
        );
    }
    add(
        "eap",
        "teap-ack",
        eap_enc(EapPacket::new(
            EapCode::RESPONSE,
            4,
            EapType::TEAP,
            TeapFrame::ack().encode(),
        ))?,
    );
    add(
        "eap",
        "success",
        eap_enc(EapPacket::outcome(EapCode::SUCCESS, 5))?,
    );
    add(
        "eap",
        "fragment-input",
        [vec![99, 18], outer.clone(), vec![0x16; 300]].concat(),
    );

    // RADIUS (RFC 2865 §3, RFC 3579 §3) with EAP-Message, Message-Authenticator and MS-MPPE keys.
    let secret = b"testing123";
    let request_auth = [0x21; 16];
    let mut req = Packet::new(Code::ACCESS_REQUEST, 7, request_auth);
    req.push(AttrType::USER_NAME, b"anonymous".to_vec());
    req.push(AttrType::CALLING_STATION_ID, b"02-00-00-00-00-01".to_vec());
    req.push_eap_message(&eap_enc(ident)?);
    let rad = |r: Result<Vec<u8>, radius::RadiusError>| r.map_err(|e| e.to_string());
    add("radius", "access-request", rad(req.encode_request(secret))?);
    let mut chal = Packet::new(Code::ACCESS_CHALLENGE, 7, [0; 16]);
    chal.push(AttrType::STATE, vec![1, 2, 3, 4]);
    let big = eap_enc(EapPacket::new(
        EapCode::REQUEST,
        3,
        EapType::TEAP,
        frames[0].encode(),
    ))?;
    chal.push_eap_message(&big);
    add(
        "radius",
        "access-challenge",
        rad(chal.encode_response(secret, &request_auth))?,
    );
    let mut acc = Packet::new(Code::ACCESS_ACCEPT, 7, [0; 16]);
    for (vt, salt) in [
        (radius::MS_MPPE_RECV_KEY, [0x80, 1]),
        (radius::MS_MPPE_SEND_KEY, [0x80, 2]),
    ] {
        let sealed = radius::mppe_encrypt(secret, &request_auth, salt, &[0x33; 32]);
        acc.push(
            AttrType::VENDOR_SPECIFIC,
            radius::vendor_specific(radius::VENDOR_MICROSOFT, vt, &sealed),
        );
    }
    acc.push_eap_message(&eap_enc(EapPacket::outcome(EapCode::SUCCESS, 8))?);
    add(
        "radius",
        "access-accept-mppe",
        rad(acc.encode_response(secret, &request_auth))?,
    );
    add(
        "radius",
        "access-reject",
        rad(Packet::new(Code::ACCESS_REJECT, 7, [0; 16]).encode_response(secret, &request_auth))?,
    );

    Ok(s)
}
