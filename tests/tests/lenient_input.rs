//! RFC 8951 leniency: the body and header variants that EST clients in the field send, each
//! enrolling through the real Envoy, filter and control plane with curl. A body that is neither
//! base64 DER nor PEM still gets 400.
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use estuary_tests::curl::{enrol_until_done, new_device, side_effects, Answer};
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::util::TempDir;

/// One way of sending the CSR.
struct Variant {
    what: &'static str,
    body: fn(&[u8]) -> String,
    /// Extra curl arguments (headers); the Content-Type is always given by `content_type`.
    content_type: &'static str,
    transfer_encoding: Option<&'static str>,
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn lines(der: &[u8], eol: &str) -> String {
    b64(der)
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}{eol}", String::from_utf8_lossy(c)))
        .collect()
}

const VARIANTS: &[Variant] = &[
    Variant {
        what: "base64 in one line, no line break at all",
        body: b64,
        content_type: "application/pkcs10",
        transfer_encoding: Some("base64"),
    },
    Variant {
        what: "base64 in LF-terminated lines",
        body: |d| lines(d, "\n"),
        content_type: "application/pkcs10",
        transfer_encoding: Some("base64"),
    },
    Variant {
        what: "no Content-Transfer-Encoding header",
        body: |d| lines(d, "\r\n"),
        content_type: "application/pkcs10",
        transfer_encoding: None,
    },
    Variant {
        what: "Content-Transfer-Encoding in another case",
        body: |d| lines(d, "\r\n"),
        content_type: "application/pkcs10",
        transfer_encoding: Some("BASE64"),
    },
    Variant {
        what: "Content-Type with a parameter, in another case",
        body: |d| lines(d, "\r\n"),
        content_type: "Application/PKCS10; name=device.p10",
        transfer_encoding: Some("base64"),
    },
    Variant {
        what: "a PEM-armoured CSR (as Azure IoT Edge sends)",
        body: |d| {
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{}-----END CERTIFICATE REQUEST-----\n",
                lines(d, "\n")
            )
        },
        content_type: "application/pkcs10",
        transfer_encoding: None,
    },
];

fn post(
    stack: &DevStack,
    dir: &Path,
    id: (&Path, &Path),
    body: &str,
    ct: &str,
    cte: Option<&str>,
) -> Answer {
    enrol_until_done(
        stack,
        dir,
        "simpleenroll",
        id,
        body,
        ct,
        cte,
        Duration::from_secs(90),
    )
}

#[test]
fn every_body_variant_real_clients_send_enrols() {
    let stack = DevStack::start_built(&DevStackOptions::default()).expect("start the dev stack");
    let tmp = TempDir::new("lenient").expect("tmp");
    for (i, v) in VARIANTS.iter().enumerate() {
        let dir = tmp.path().join(format!("v{i}"));
        // One device per variant: each is a new CSR, and a device may order only a few.
        let serial = format!("LENIENT-{i}-{}", std::process::id());
        let (id, _, csr) = new_device(&stack, &dir, &serial);
        let body = (v.body)(&csr);
        let answer = post(
            &stack,
            &dir,
            (&id.cert_path, &id.key_path),
            &body,
            v.content_type,
            v.transfer_encoding,
        );
        assert_eq!(answer.status, 200, "{}: {}", v.what, answer.body);
        assert!(
            answer.body.trim_start().starts_with("MII"),
            "{}: not a base64 PKCS#7: {}",
            v.what,
            answer.body
        );
    }

    // Neither base64 DER nor PEM: 400 with a reason, and nothing ordered.
    let dir = tmp.path().join("bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(
            &dir,
            "idevid",
            &format!("LENIENT-BAD-{}", std::process::id()),
        )
        .expect("idevid");
    let before = side_effects(&stack, &dir);
    for body in [
        "this is not a CSR",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ] {
        let a = post(
            &stack,
            &dir,
            (&id.cert_path, &id.key_path),
            body,
            "application/pkcs10",
            Some("base64"),
        );
        assert_eq!(a.status, 400, "{body:?}: {}", a.body);
        assert!(
            a.body.contains("not valid base64, nor a PEM CSR"),
            "{}",
            a.body
        );
    }
    assert_eq!(
        side_effects(&stack, &dir),
        before,
        "a refused body ordered something"
    );
}
