//! RFC 7030 §3.2.2 EST labels choose the CA and the ACME profile, end to end: a real Envoy with
//! the filter, a control plane whose unlabelled path (`[acme]`) issues from Pebble and whose
//! labels (`[[acme.labels]]`) issue from the strict test CA (tests/src/acme_ca.rs), which
//! advertises ACME profiles (draft-ietf-acme-profiles). Driven with curl and openssl.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use estuary_tests::acme_ca::Fault;
use estuary_tests::curl::{curl, enrol_until_done, openssl_csr, sh, Answer};
use estuary_tests::dev_stack::{DevStack, DevStackOptions, Label, LabelCa};
use estuary_tests::stack::DEV_PARENT;
use estuary_tests::util::TempDir;

/// Advertised by the label CA, and asked for by `factory-b`.
const PROFILE: &str = "shortlived";
/// Asked for by `factory-x`, not advertised by the CA.
const MISSING_PROFILE: &str = "tlsserver";

fn start() -> DevStack {
    DevStack::start_built(&DevStackOptions {
        label_ca: Some(LabelCa {
            labels: vec![
                Label::new("factory-b", Some(PROFILE)),
                Label::new("factory-x", Some(MISSING_PROFILE)),
                // Ordered through instant-acme's newOrder rather than the RFC 9444 path.
                Label {
                    preauthorize: false,
                    ..Label::new("factory-c", Some("classic"))
                },
            ],
            offered_profiles: vec![
                ("classic".into(), "the default".into()),
                (PROFILE.into(), "certificates of a few days".into()),
            ],
            filter_only: vec!["edge-only".into()],
        }),
        ..DevStackOptions::default()
    })
    .expect("start the dev stack with a labelled CA")
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

/// An IDevID for `serial`, its device name and a base64 DER CSR (fresh key) for `name`.
struct Device {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    name: String,
}

fn device(stack: &DevStack, dir: &Path, serial: &str) -> Device {
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(dir, serial, serial)
        .expect("IDevID");
    Device {
        cert: id.cert_path,
        key: id.key_path,
        name: format!("{}.{DEV_PARENT}", serial.to_lowercase()),
    }
}

/// A base64 DER CSR for `name` (subject `CN=<name>`, SAN `name`) with a fresh key, and the key.
fn csr_with_key(dir: &Path, name: &str) -> (String, PathBuf) {
    let der = openssl_csr(dir, &format!("/CN={name}"), name, &[]);
    let key = dir.join(format!("{}.key", unique("csr")));
    std::fs::copy(dir.join("csr.key"), &key).expect("keep the CSR's key");
    let f = dir.join("csr.for-b64");
    std::fs::write(&f, der).expect("write CSR");
    let b64 = sh(Command::new("openssl").args(["base64", "-in"]).arg(&f));
    (String::from_utf8(b64).expect("utf8"), key)
}

fn csr_b64(dir: &Path, name: &str) -> String {
    csr_with_key(dir, name).0
}

/// The first PEM certificate of `text`.
fn first_pem(text: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let stop = text[start..].find(end).expect("its end") + start + end.len();
    format!("{}\n", &text[start..stop])
}

/// `<label>/<op>` or `<op>`.
fn op_path(dir: &Path, label: Option<&str>, op: &str) -> String {
    match label {
        Some(l) => {
            // enrol_until_done keeps the body in `<dir>/<op>.body`.
            std::fs::create_dir_all(dir.join(l)).expect("mkdir");
            format!("{l}/{op}")
        }
        None => op.to_string(),
    }
}

fn enrol(stack: &DevStack, dir: &Path, label: Option<&str>, d: &Device, csr: &str) -> Answer {
    enrol_until_done(
        stack,
        dir,
        &op_path(dir, label, "simpleenroll"),
        (&d.cert, &d.key),
        csr,
        "application/pkcs10",
        Some("base64"),
        Duration::from_secs(60),
    )
}

/// `openssl pkcs7 -print_certs` of a base64 PKCS#7 body: (subject, issuer) of each certificate
/// and the PEM text.
fn certs_of(dir: &Path, body: &str) -> (Vec<(String, String)>, String) {
    let b64 = dir.join("p7.b64");
    let der = dir.join("p7.der");
    std::fs::write(&b64, body).expect("write");
    sh(Command::new("openssl")
        .args(["base64", "-d", "-in"])
        .arg(&b64)
        .arg("-out")
        .arg(&der));
    let text = String::from_utf8(sh(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&der)))
    .expect("utf8");
    let mut out = Vec::new();
    let mut subject = None;
    for line in text.lines() {
        if let Some(s) = line.strip_prefix("subject=") {
            subject = Some(s.trim().to_string());
        } else if let Some(i) = line.strip_prefix("issuer=") {
            out.push((subject.take().unwrap_or_default(), i.trim().to_string()));
        }
    }
    (out, text)
}

fn subject_of(pem: &Path) -> String {
    let out = String::from_utf8(sh(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(pem)))
    .expect("utf8");
    out.trim()
        .strip_prefix("subject=")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn get(stack: &DevStack, dir: &Path, path: &str, client: Option<&Device>) -> Answer {
    let ca = stack.pki.server_ca.cert_path.display().to_string();
    let mut args = vec!["--cacert".to_string(), ca];
    if let Some(d) = client {
        args.extend([
            "--cert".into(),
            d.cert.display().to_string(),
            "--key".into(),
            d.key.display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(dir, &args, &format!("{}/{path}", stack.est_url()))
}

#[test]
fn labels_choose_the_ca_and_the_profile() {
    let stack = start();
    let tmp = TempDir::new("labels").expect("tmp");
    let dir = tmp.path();
    let label_ca = stack.label_ca().expect("label CA");
    let label_root = subject_of(&label_ca.issuer_root_pem);

    // One device, one CSR, two paths: two certificates from two CAs.
    let d = device(&stack, dir, &unique("LBL"));
    let (csr, csr_key) = csr_with_key(dir, &d.name);
    let plain = enrol(&stack, dir, None, &d, &csr);
    assert_eq!(plain.status, 200, "unlabelled enrolment: {}", plain.body);
    let (plain_certs, plain_pem) = certs_of(dir, &plain.body);
    let labelled = enrol(&stack, dir, Some("factory-b"), &d, &csr);
    assert_eq!(
        labelled.status, 200,
        "labelled enrolment: {}",
        labelled.body
    );
    let (label_certs, label_pem) = certs_of(dir, &labelled.body);
    let (plain_leaf, label_leaf) = (&plain_certs[0], &label_certs[0]);
    assert!(
        plain_leaf.1.contains("Pebble"),
        "the unlabelled path issues from Pebble: {plain_leaf:?}"
    );
    assert_eq!(
        label_leaf.1, label_root,
        "factory-b issues from the label's CA"
    );
    assert_ne!(plain_leaf.1, label_leaf.1);
    assert!(plain_leaf.0.contains(&d.name) && label_leaf.0.contains(&d.name));

    // draft-ietf-acme-profiles: the advertised profile was asked for, in the one order placed.
    assert_eq!(label_ca.order_profiles(), vec![Some(PROFILE.to_string())]);

    // The cache is per label: the same CSR again gets each path's own certificate back.
    let again = enrol(&stack, dir, Some("factory-b"), &d, &csr);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(certs_of(dir, &again.body).1, label_pem);
    let again = enrol(&stack, dir, None, &d, &csr);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(certs_of(dir, &again.body).1, plain_pem);
    assert_eq!(
        label_ca.stats().orders,
        1,
        "the cached answer placed no order"
    );

    // /cacerts per label: each label's CA.
    let cacerts = get(&stack, dir, "factory-b/cacerts", None);
    assert_eq!(cacerts.status, 200, "{}", cacerts.body);
    let (label_anchors, _) = certs_of(dir, &cacerts.body);
    assert_eq!(
        label_anchors,
        vec![(label_root.clone(), label_root.clone())]
    );
    let cacerts = get(&stack, dir, "cacerts", None);
    assert_eq!(cacerts.status, 200, "{}", cacerts.body);
    let (plain_anchors, _) = certs_of(dir, &cacerts.body);
    assert!(
        plain_anchors.iter().all(|(s, _)| s != &label_root),
        "the unlabelled /cacerts does not serve the label's CA: {plain_anchors:?}"
    );
    assert!(plain_anchors.iter().any(|(s, _)| s.contains("Pebble")));

    // /csrattrs under the label: the device's name, as on the unlabelled path.
    let attrs = get(&stack, dir, "factory-b/csrattrs", Some(&d));
    assert_eq!(attrs.status, 200, "{}", attrs.body);
    assert_eq!(
        attrs.body,
        get(&stack, dir, "csrattrs", Some(&d)).body,
        "the same attributes under every label"
    );

    // Re-enrolment with the LDevID the label's CA issued (RFC 7030 §4.2.2: same subject and
    // name, a new key): under the label it comes from the label's CA again.
    let ldevid = Device {
        cert: dir.join("label-ldevid.pem"),
        key: csr_key,
        name: d.name.clone(),
    };
    std::fs::write(&ldevid.cert, first_pem(&label_pem)).expect("write the LDevID");
    let re_csr = csr_b64(dir, &d.name);
    let re = enrol_until_done(
        &stack,
        dir,
        &op_path(dir, Some("factory-b"), "simplereenroll"),
        (&ldevid.cert, &ldevid.key),
        &re_csr,
        "application/pkcs10",
        Some("base64"),
        Duration::from_secs(60),
    );
    assert_eq!(re.status, 200, "labelled re-enrolment: {}", re.body);
    assert_eq!(certs_of(dir, &re.body).0[0].1, label_root);
    // The same LDevID re-enrols on the unlabelled path too, from Pebble: the name is the
    // device's whichever CA issued its certificate.
    let re = enrol_until_done(
        &stack,
        dir,
        "simplereenroll",
        (&ldevid.cert, &ldevid.key),
        &re_csr,
        "application/pkcs10",
        Some("base64"),
        Duration::from_secs(60),
    );
    assert_eq!(re.status, 200, "unlabelled re-enrolment: {}", re.body);
    assert!(certs_of(dir, &re.body).0[0].1.contains("Pebble"));

    // Without pre-authorisation the profile goes in instant-acme's newOrder just the same.
    let d3 = device(&stack, dir, &unique("LBC"));
    let c = enrol(&stack, dir, Some("factory-c"), &d3, &csr_b64(dir, &d3.name));
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(certs_of(dir, &c.body).0[0].1, label_root);
    assert_eq!(
        label_ca.order_profiles().last(),
        Some(&Some("classic".to_string()))
    );

    // A label the filter does not serve: 404 at the edge; one that the filter serves but the
    // control plane does not configure: 404 from the control plane, naming the label.
    let unknown = enrol(&stack, dir, Some("nope"), &d, &csr);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let unknown = get(&stack, dir, "edge-only/cacerts", None);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body.contains("edge-only"), "{}", unknown.body);
    let unknown = enrol(&stack, dir, Some("edge-only"), &d, &csr);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body.contains("not configured"), "{}", unknown.body);

    // A configured profile the CA does not advertise: no order is sent, the device gets a
    // server error, the operator's log names the profile.
    let requests = label_ca.stats().new_order_requests;
    let d2 = device(&stack, dir, &unique("LBX"));
    let refused = enrol(&stack, dir, Some("factory-x"), &d2, &csr_b64(dir, &d2.name));
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(
        label_ca.stats().new_order_requests,
        requests,
        "no newOrder reached the CA"
    );
    let log = stack.control_planes[0].log_text();
    assert!(
        log.contains("not advertised") && log.contains(MISSING_PROFILE),
        "the log names the profile"
    );

    // A CA that refuses an advertised profile (invalidProfile, e.g. withdrawn since the
    // directory was read): a server error, no certificate, and the label's next device is
    // served again once the CA offers it.
    label_ca.set_fault(Fault::ProfilesWithdrawn);
    let problems = label_ca.stats().problems;
    let d4 = device(&stack, dir, &unique("LBW"));
    let refused = enrol(&stack, dir, Some("factory-b"), &d4, &csr_b64(dir, &d4.name));
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert!(
        label_ca.stats().problems > problems,
        "the CA answered a problem"
    );
    assert!(
        stack.control_planes[0]
            .log_text()
            .contains("InvalidProfile"),
        "the log names the CA's problem"
    );
    label_ca.set_fault(Fault::None);
    let d5 = device(&stack, dir, &unique("LBV"));
    let ok = enrol(&stack, dir, Some("factory-b"), &d5, &csr_b64(dir, &d5.name));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// The label does not widen who may get which name: what a device is refused on the
/// unlabelled path it is refused, for the same reason, under a label.
#[test]
fn a_label_does_not_widen_who_may_get_which_name() {
    let stack = start();
    let tmp = TempDir::new("labels-attacker").expect("tmp");
    let dir = tmp.path();
    let victim = device(&stack, dir, &unique("VIC"));
    let attacker = device(&stack, dir, &unique("ATK"));
    let csr = csr_b64(dir, &victim.name);
    let plain = enrol(&stack, dir, None, &attacker, &csr);
    assert_eq!(plain.status, 403, "{}", plain.body);
    for label in ["factory-b", "factory-c", "factory-x"] {
        let labelled = enrol(&stack, dir, Some(label), &attacker, &csr);
        assert_eq!(labelled.status, 403, "{label}: {}", labelled.body);
        assert_eq!(labelled.body, plain.body, "{label}: the same refusal");
    }
    let label_ca = stack.label_ca().expect("label CA");
    assert_eq!(
        label_ca.stats().new_order_requests,
        0,
        "nothing reached the CA"
    );
}
