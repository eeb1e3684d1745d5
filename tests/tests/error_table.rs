//! draft-ietf-acme-integrations-17 "Error Handling", end to end: the strict test CA refuses
//! newOrder with an ACME problem, and the device, enrolling with curl through Envoy, gets the
//! EST answer the table gives (status, and the CMCFailInfo first in the body).
use std::time::Duration;

use estuary_tests::acme_ca::Fault;
use estuary_tests::curl::{enrol_until_done, new_device, Answer};
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::util::TempDir;

fn enrol(stack: &DevStack, tag: &str, tmp: &TempDir) -> Answer {
    let dir = tmp.path().join(tag);
    let serial = format!("ERR-{tag}-{}", std::process::id());
    let (id, _, csr) = new_device(stack, &dir, &serial);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&csr);
    enrol_until_done(
        stack,
        &dir,
        "simpleenroll",
        (&id.cert_path, &id.key_path),
        &b64,
        "application/pkcs10",
        Some("base64"),
        Duration::from_secs(120),
    )
}

#[test]
fn ca_problems_reach_the_device_as_the_draft_17_table_says() {
    let stack = DevStack::start_built(&DevStackOptions {
        rfc9444_ca: true,
        ..DevStackOptions::default()
    })
    .expect("start the dev stack");
    let ca = stack.test_ca().expect("the strict test CA");
    let tmp = TempDir::new("error-table").expect("tmp");
    for (problem, http, want_status, want_prefix) in [
        ("badCSR", 400, 400, Some("badRequest: ")),
        ("caa", 403, 403, Some("badRequest: ")),
        ("rejectedIdentifier", 403, 403, Some("badIdentity: ")),
        // A CA that fails internally: the device is told to come back (RFC 7030 §4.2.3).
        ("serverInternal", 500, 503, None),
    ] {
        ca.set_fault(Fault::NewOrderProblem(problem, http));
        let a = enrol(&stack, problem, &tmp);
        assert_eq!(a.status, want_status, "{problem}: {}", a.body);
        if let Some(prefix) = want_prefix {
            assert!(
                a.body.starts_with(prefix),
                "{problem}: {prefix:?} does not start {:?}",
                a.body
            );
        }
    }
    // And with the CA healthy again, a device enrols.
    ca.set_fault(Fault::None);
    let a = enrol(&stack, "healthy", &tmp);
    assert_eq!(a.status, 200, "{}", a.body);
}
