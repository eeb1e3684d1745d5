//! The BRSKI cloud registrar (draft-ietf-anima-brski-cloud) end to end: two Estuary
//! deployments on loopback, each behind its own real Envoy —
//! - the manufacturer's **cloud registrar** (control plane with `[brski.cloud]`, its own Redis,
//!   Envoy with the filter in role `cloud-registrar`, TLS certificate from the "cloud" CA that
//!   pledges hold as their implicit trust anchor);
//! - the owner's **local RA** (the dev stack: BRSKI registrar + EST, ACME via Pebble, DNS-01
//!   via BIND9), whose filter accepts plain EST only from the dev manufacturer's IDevIDs with
//!   serials `CLOUD-*`.
//!
//! The pledge is `estuary-pledge cloud`, which knows only the cloud registrar's URL, its
//! implicit trust anchor and the MASA's anchor. The cloud registrar finds owners by
//! (manufacturer, serial): one test gives it a second manufacturer whose IDevIDs carry the
//! same serials as the dev manufacturer's.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use estuary_tests::cloud::{
    CloudRegistrar, Owner, OwnerPath, Redirector, DEV_MANUFACTURER, SECOND_MANUFACTURER,
};
use estuary_tests::dev_stack::{workspace_bin, DevStack, DevStackOptions, SecondManufacturer};
use estuary_tests::pki::{Ca, Issued};
use estuary_tests::stack::{metric_value, DEV_PARENT};
use estuary_tests::util::{free_port, TempDir};

struct Pair {
    cloud: CloudRegistrar,
    local: DevStack,
}

/// The local RA, then the cloud registrar with `owners(&local)`.
fn start(owners: impl FnOnce(&DevStack) -> Vec<Owner>) -> Pair {
    start_with(None, owners)
}

/// As [`start`]; with `second`, the local RA has a second manufacturer (`mfr-b`, its own CA),
/// which the cloud registrar serves too.
fn start_with(
    second: Option<SecondManufacturer>,
    owners: impl FnOnce(&DevStack) -> Vec<Owner>,
) -> Pair {
    let local = DevStack::start_built(&DevStackOptions {
        brski: true,
        idevid_serial_pattern: Some("CLOUD-*".into()),
        second_manufacturer: second,
        ..DevStackOptions::default()
    })
    .expect("start the local RA");
    let o = owners(&local);
    let cloud = CloudRegistrar::start_built(&local, &o).expect("start the cloud registrar");
    Pair { cloud, local }
}

/// A new IDevID of the dev manufacturer, naming the dev MASA.
fn idevid(local: &DevStack, dir: &Path, serial: &str) -> Issued {
    let masa = local.masa.as_ref().expect("MASA");
    local
        .pki
        .manufacturer
        .issue_idevid_with_masa(dir, &serial.to_ascii_lowercase(), serial, Some(&masa.url))
        .expect("issue IDevID")
}

fn pledge_cloud(pair: &Pair, id: &Issued, out: &Path) -> Output {
    let pledge = workspace_bin("estuary-pledge", "ESTUARY_PLEDGE_BIN").expect("pledge binary");
    Command::new(pledge)
        .arg("cloud")
        .arg("--cloud-url")
        .arg(pair.cloud.url())
        .arg("--cloud-ca")
        .arg(pair.cloud.anchor_pem())
        .arg("--masa-ca")
        .arg(&pair.local.masa.as_ref().expect("MASA").anchor_pem)
        .arg("--cert")
        .arg(&id.cert_path)
        .arg("--key")
        .arg(&id.key_path)
        .arg("--out-dir")
        .arg(out)
        .arg("--max-wait")
        .arg("90")
        .arg("--json")
        .output()
        .expect("run estuary-pledge")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The pledge's final `error: …` line (its progress lines come before).
fn error_line(o: &Output) -> String {
    stderr(o)
        .lines()
        .rfind(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_string()
}

/// The issued chain verifies against the ACME CA's root and names `<serial>.<parent>`.
fn assert_acme_issued(local: &DevStack, out: &Path, serial: &str) {
    let cert = out.join("cert.pem");
    assert!(cert.is_file(), "no certificate in {}", out.display());
    let chain = out.join("chain.pem");
    let untrusted = if chain.is_file() { &chain } else { &cert };
    let v = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&local.acme_roots)
        .arg("-untrusted")
        .arg(untrusted)
        .arg(&cert)
        .output()
        .expect("openssl verify");
    assert!(
        v.status.success(),
        "the certificate does not chain to the ACME CA: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    let sans = String::from_utf8_lossy(&text.stdout).to_ascii_lowercase();
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    assert!(sans.contains(&format!("dns:{name}")), "{sans}");
}

fn metrics(url: &str) -> String {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn a_pledge_that_knows_only_the_cloud_url_enrols_at_the_local_ra_on_both_paths() {
    let pair = start(|local| {
        vec![
            Owner {
                name: "owner-redirect".into(),
                manufacturer: None,
                // Listed in the configuration.
                serials: vec!["CLOUD-R-1".into()],
                path: OwnerPath::Redirect(local.brski_url()),
            },
            Owner {
                name: "owner-est".into(),
                manufacturer: None,
                // Assigned in Redis below.
                serials: vec![],
                path: OwnerPath::Est {
                    url: local.est_url(),
                    pinned: local.pki.server_ca.cert_path.clone(),
                },
            },
        ]
    });
    pair.cloud
        .assign(DEV_MANUFACTURER, "CLOUD-E-1", "owner-est")
        .expect("assign in Redis");
    let tmp = TempDir::new("cloud-ok").expect("tmp");

    // (a) 307 to the owner's registrar, then BRSKI + EST there.
    let id = idevid(&pair.local, tmp.path(), "CLOUD-R-1");
    let out = tmp.path().join("r");
    let o = pledge_cloud(&pair, &id, &out);
    assert!(o.status.success(), "redirect path failed: {}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    assert_eq!(s["path"], "redirect", "{s}");
    let followed = s["redirects"].to_string();
    assert!(
        followed.contains(&format!("{}/requestvoucher", pair.local.brski_url())),
        "{s}"
    );
    assert_acme_issued(&pair.local, &out, "CLOUD-R-1");
    // The voucher came from the MASA through the local registrar and pins the local domain CA.
    let pinned = std::fs::read_to_string(out.join("pinned-domain.pem")).expect("pinned");
    let domain_ca = std::fs::read_to_string(&pair.local.pki.server_ca.cert_path).expect("ca");
    assert_eq!(
        estuary_proto::pem::decode_certs(&pinned).expect("pem"),
        estuary_proto::pem::decode_certs(&domain_ca).expect("pem")
    );

    // (b) a voucher with est-domain from the cloud registrar, then plain EST at the local RA.
    let id = idevid(&pair.local, tmp.path(), "CLOUD-E-1");
    let out = tmp.path().join("e");
    let o = pledge_cloud(&pair, &id, &out);
    assert!(o.status.success(), "est-domain path failed: {}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    assert_eq!(s["path"], "est-domain", "{s}");
    assert_eq!(s["est_url"], pair.local.est_url().as_str(), "{s}");
    assert_acme_issued(&pair.local, &out, "CLOUD-E-1");
    // The voucher is the MASA's (checked by openssl, not our code) and carries est-domain.
    let v = Command::new("openssl")
        .args([
            "cms", "-verify", "-inform", "DER", "-purpose", "any", "-CAfile",
        ])
        .arg(&pair.local.masa.as_ref().expect("MASA").anchor_pem)
        .arg("-in")
        .arg(out.join("voucher.cms"))
        .output()
        .expect("openssl cms");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let json: serde_json::Value = serde_json::from_slice(&v.stdout).expect("voucher JSON");
    assert_eq!(
        json["ietf-voucher:voucher"]["est-domain"],
        pair.local.est_url().as_str(),
        "{json}"
    );
    // The MASA logged both vouchers: one via the local registrar, one via the cloud registrar.
    let log = pair.local.masa.as_ref().expect("MASA").audit_log();
    for serial in ["CLOUD-R-1", "CLOUD-E-1"] {
        assert!(log.iter().any(|e| e.serial == serial), "{serial}: {log:?}");
    }
    // The cloud registrar heard back from the est-domain pledge.
    let m = metrics(&pair.cloud.control_plane.url("/metrics"));
    assert_eq!(
        metric_value(
            &m,
            "estuary_brski_requests_total{op=\"requestvoucher\",result=\"redirect\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "estuary_brski_requests_total{op=\"voucher_status\",result=\"success\"}"
        ),
        1.0,
        "{m}"
    );
}

/// Starts a redirector on `port` with a certificate from `ca`.
fn redirector(
    ca: &Ca,
    dir: &Path,
    stem: &str,
    port: u16,
    routes: Vec<(String, String)>,
) -> Redirector {
    let tls = ca.issue_server(dir, stem).expect("server cert");
    Redirector::start(
        &std::fs::read(&tls.cert_path).expect("cert"),
        &std::fs::read(&tls.key_path).expect("key"),
        port,
        routes,
    )
    .expect("redirector")
}

#[test]
fn the_pledge_refuses_what_it_cannot_authenticate() {
    let tmp = TempDir::new("cloud-refuse").expect("tmp");
    let other_ca = Ca::create(tmp.path(), "other-ca", "Not the local RA's CA").expect("CA");
    let var_port = free_port().expect("port");
    let rogue_port = free_port().expect("port");
    let var = format!("https://127.0.0.1:{var_port}");
    let rogue = format!("https://127.0.0.1:{rogue_port}");
    let pair = start(|local| {
        vec![
            Owner {
                name: "owner-wrong-pin".into(),
                manufacturer: None,
                serials: vec!["CLOUD-W-1".into()],
                path: OwnerPath::Est {
                    url: local.est_url(),
                    pinned: other_ca.cert_path.clone(),
                },
            },
            Owner {
                name: "owner-est".into(),
                manufacturer: None,
                serials: vec!["OTHER-1".into()],
                path: OwnerPath::Est {
                    url: local.est_url(),
                    pinned: local.pki.server_ca.cert_path.clone(),
                },
            },
            Owner {
                name: "owner-rogue".into(),
                manufacturer: None,
                serials: vec!["CLOUD-X-1".into()],
                path: OwnerPath::Redirect(format!("{rogue}/rogue/.well-known/brski")),
            },
            Owner {
                name: "owner-var-downgrade".into(),
                manufacturer: None,
                serials: vec!["CLOUD-D-1".into()],
                path: OwnerPath::Redirect(format!("{var}/downgrade/.well-known/brski")),
            },
            Owner {
                name: "owner-var-loop".into(),
                manufacturer: None,
                serials: vec!["CLOUD-L-1".into()],
                path: OwnerPath::Redirect(format!("{var}/loop/.well-known/brski")),
            },
        ]
    });
    let local_brski = pair.local.brski_url();
    let local_http = local_brski.replacen("https://", "http://", 1);
    // A VAR's cloud registrar: its certificate is from the pledges' implicit trust anchor.
    let _var = redirector(
        &pair.cloud.ca,
        tmp.path(),
        "var",
        var_port,
        vec![
            ("/downgrade".into(), format!("{local_http}/requestvoucher")),
            (
                "/loop".into(),
                format!("{}/requestvoucher", pair.cloud.url()),
            ),
        ],
    );
    // A registrar nobody vouches for, sending the pledge on to the (real) local registrar.
    let _rogue = redirector(
        &other_ca,
        tmp.path(),
        "rogue",
        rogue_port,
        vec![("/rogue".into(), format!("{local_brski}/requestvoucher"))],
    );
    // Every enrolment the local control plane saw, whatever its result.
    let enrolled = |m: &str| -> f64 {
        ["issued", "cached", "pending", "rejected", "failed"]
            .iter()
            .map(|r| {
                metric_value(
                    m,
                    &format!("estuary_enrollments_total{{protocol=\"est\",result=\"{r}\"}}"),
                )
            })
            .sum()
    };
    let local_metrics = pair.local.control_planes[0].url("/metrics");
    let before = metrics(&local_metrics);

    let run = |serial: &str| -> (Output, PathBuf) {
        let id = idevid(&pair.local, tmp.path(), serial);
        let out = tmp.path().join(serial);
        (pledge_cloud(&pair, &id, &out), out)
    };

    // Unknown serial: the cloud registrar answers 404 and the pledge says so.
    let (o, out) = run("CLOUD-U-1");
    assert!(!o.status.success());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = error_line(&o);
    assert!(
        e.contains("404") && e.contains("\"CLOUD-U-1\""),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("cert.pem").exists());

    // A voucher pinning a CA that did not issue the local RA's certificate: no EST at all.
    let (o, out) = run("CLOUD-W-1");
    assert!(
        !o.status.success(),
        "enrolled against an unpinned EST server"
    );
    assert!(
        error_line(&o).contains("not authenticated by the voucher's pinned-domain-cert"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("cert.pem").exists());
    let cloud_m = metrics(&pair.cloud.control_plane.url("/metrics"));
    assert_eq!(
        metric_value(
            &cloud_m,
            "estuary_brski_requests_total{op=\"voucher_status\",result=\"failure\"}"
        ),
        1.0,
        "the pledge reports its failed TLS check to the cloud registrar: {cloud_m}"
    );

    // A 307 from a registrar the pledge cannot authenticate is not followed.
    let (o, out) = run("CLOUD-X-1");
    assert!(!o.status.success(), "followed an unauthenticated redirect");
    let e = error_line(&o);
    assert!(
        e.contains("redirect from") && e.contains("provisional TLS may not redirect"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("cert.pem").exists());

    // An authenticated VAR registrar redirecting to plain http: a downgrade, refused.
    let (o, out) = run("CLOUD-D-1");
    assert!(!o.status.success(), "followed a downgrade");
    assert!(
        stderr(&o).to_ascii_lowercase().contains("downgrade"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("cert.pem").exists());

    // A VAR sending the pledge back where it started: a loop, refused.
    let (o, out) = run("CLOUD-L-1");
    assert!(!o.status.success(), "followed a redirect loop");
    assert!(error_line(&o).contains("redirect loop"), "{}", stderr(&o));
    assert!(!out.join("cert.pem").exists());

    // A serial outside the local RA's manufacturer policy: vouched for, but EST says 403.
    let (o, out) = run("OTHER-1");
    assert!(
        !o.status.success(),
        "the local RA enrolled a serial outside its policy"
    );
    let e = error_line(&o);
    assert!(
        e.contains("403") && e.contains("\"OTHER-1\""),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("cert.pem").exists());

    // None of the above reached the local RA's control plane with a CSR.
    assert_eq!(enrolled(&metrics(&local_metrics)), enrolled(&before));
}

struct Reply {
    status: u16,
    /// `Location` of a redirect (not followed), else empty.
    location: String,
    body: String,
}

/// curl to the cloud registrar with `id` as the TLS client certificate (or none).
fn curl(
    pair: &Pair,
    path: &str,
    method: &str,
    id: Option<&Issued>,
    body: Option<(&[u8], &str)>,
) -> Reply {
    let tmp = TempDir::new("cloud-curl").expect("tmp");
    let out = tmp.path().join("b");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-X", method, "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}\n%{redirect_url}", "--cacert"])
        .arg(pair.cloud.anchor_pem());
    if let Some(id) = id {
        cmd.arg("--cert")
            .arg(&id.cert_path)
            .arg("--key")
            .arg(&id.key_path);
    }
    if let Some((b, ct)) = body {
        let f = tmp.path().join("req");
        std::fs::write(&f, b).expect("write");
        cmd.arg("-H")
            .arg(format!("Content-Type: {ct}"))
            .arg("--data-binary")
            .arg(format!("@{}", f.display()));
    }
    cmd.arg(format!("{}{path}", pair.cloud.envoy.base_url));
    let o = cmd.output().expect("curl");
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stdout);
    let mut lines = said.lines();
    Reply {
        status: lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0),
        location: lines.next().unwrap_or_default().trim().to_string(),
        body: std::fs::read_to_string(&out).unwrap_or_default(),
    }
}

/// A pledge voucher request signed by `signer` (P-256 IDevID), naming the cloud registrar.
fn voucher_request(pair: &Pair, signer: &Issued, serial: &str) -> Vec<u8> {
    use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
    use estuary_proto::voucher::{self, Assertion, VoucherRequest};
    use rustls::pki_types::pem::PemObject;
    let der = |p: &Path| {
        estuary_proto::pem::decode_certs(&std::fs::read_to_string(p).expect("read"))
            .expect("pem")
            .remove(0)
    };
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(&signer.key_path).expect("key");
    let key = cms_signed::signing_key_from_pkcs8_der(key.secret_pkcs8_der()).expect("p256");
    let vr = VoucherRequest {
        assertion: Some(Assertion::Proximity),
        nonce: Some(voucher::b64(b"0123456789abcdef")),
        serial_number: Some(serial.into()),
        created_on: Some(voucher::rfc3339(0)),
        proximity_registrar_cert: Some(voucher::b64(&der(&pair.cloud.registrar.cert_path))),
        ..Default::default()
    };
    cms_signed::sign(
        ANIMA_JSON_VOUCHER,
        &vr.to_json().expect("json"),
        &der(&signer.cert_path),
        &[],
        &key,
    )
    .expect("sign")
}

#[test]
fn malformed_input_at_the_cloud_registrar_gets_4xx() {
    // A second manufacturer (B) whose IDevIDs carry the same serials as the dev manufacturer's
    // (A), named apart at the local RA by its prefix.
    let b = SecondManufacturer {
        serial_pattern: None,
        name_prefix: Some("mfr-b-".into()),
    };
    let mut pair = start_with(Some(b), |local| {
        vec![
            Owner {
                name: "owner-est".into(),
                // With two manufacturers an owner's serials must say whose they are.
                manufacturer: Some(DEV_MANUFACTURER.into()),
                serials: vec!["CLOUD-M-1".into(), "CLOUD-M-2".into()],
                path: OwnerPath::Est {
                    url: local.est_url(),
                    pinned: local.pki.server_ca.cert_path.clone(),
                },
            },
            Owner {
                name: "owner-b".into(),
                manufacturer: Some(SECOND_MANUFACTURER.into()),
                serials: vec!["CLOUD-M-2".into()],
                path: OwnerPath::Redirect(
                    "https://registrar.owner-b.example/.well-known/brski".into(),
                ),
            },
        ]
    });
    let tmp = TempDir::new("cloud-bad").expect("tmp");
    let a = idevid(&pair.local, tmp.path(), "CLOUD-M-1");
    let b = idevid(&pair.local, tmp.path(), "CLOUD-M-2");
    let rv = "/.well-known/brski/requestvoucher";
    const CT: &str = "application/voucher-cms+json";

    let cases: Vec<(&str, Reply, u16)> = vec![
        (
            "no client certificate",
            curl(&pair, rv, "POST", None, Some((b"x", CT))),
            401,
        ),
        ("GET", curl(&pair, rv, "GET", Some(&a), None), 405),
        (
            "wrong content type",
            curl(
                &pair,
                rv,
                "POST",
                Some(&a),
                Some((b"{}", "application/json")),
            ),
            415,
        ),
        (
            "not CMS",
            curl(&pair, rv, "POST", Some(&a), Some((b"\x30\x03garbage", CT))),
            400,
        ),
        (
            "truncated CMS",
            curl(
                &pair,
                rv,
                "POST",
                Some(&a),
                Some((&voucher_request(&pair, &a, "CLOUD-M-1")[..200], CT)),
            ),
            400,
        ),
        (
            "signed by another pledge than the TLS client",
            curl(
                &pair,
                rv,
                "POST",
                Some(&a),
                Some((&voucher_request(&pair, &b, "CLOUD-M-2"), CT)),
            ),
            403,
        ),
        (
            "serial-number not the IDevID's",
            curl(
                &pair,
                rv,
                "POST",
                Some(&a),
                Some((&voucher_request(&pair, &a, "CLOUD-M-2"), CT)),
            ),
            403,
        ),
        (
            "csrattrs at the cloud registrar",
            curl(&pair, "/.well-known/est/csrattrs", "GET", Some(&a), None),
            404,
        ),
        (
            "simpleenroll at the cloud registrar",
            curl(
                &pair,
                "/.well-known/est/simpleenroll",
                "POST",
                Some(&a),
                Some((b"MIIB", "application/pkcs10")),
            ),
            404,
        ),
        (
            "unknown BRSKI operation",
            curl(&pair, "/.well-known/brski/nope", "POST", Some(&a), None),
            404,
        ),
    ];
    for (what, reply, want) in &cases {
        assert_eq!(reply.status, *want, "{what}: {}", reply.body);
        assert!(
            !reply.body.trim().is_empty(),
            "{what}: a 4xx needs a reason"
        );
    }
    // A well-formed request still gets its voucher: nothing above hurt the registrar.
    let ok = curl(
        &pair,
        rv,
        "POST",
        Some(&a),
        Some((&voucher_request(&pair, &a, "CLOUD-M-1"), CT)),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Attacker side (issue 12): an IDevID from manufacturer B whose serial A's owner map names
    // (in the configuration, CLOUD-M-1; in Redis, CLOUD-M-3) is not A's pledge: 404, never A's
    // owner. B's own map (CLOUD-M-2 in the configuration, CLOUD-M-4 in Redis) sends B's pledges
    // to B's owner, and B's Redis entry gives nothing to A's CLOUD-M-4.
    pair.cloud
        .assign(DEV_MANUFACTURER, "CLOUD-M-3", "owner-est")
        .expect("assign in Redis");
    pair.cloud
        .assign(SECOND_MANUFACTURER, "CLOUD-M-4", "owner-b")
        .expect("assign in Redis");
    let second = pair
        .local
        .second_manufacturer
        .as_ref()
        .expect("the second manufacturer's CA");
    let of_b = |serial: &str| {
        second
            .issue_idevid(
                tmp.path(),
                &format!("b-{}", serial.to_ascii_lowercase()),
                serial,
            )
            .expect("issue B's IDevID")
    };
    let ask = |id: &Issued, serial: &str| {
        curl(
            &pair,
            rv,
            "POST",
            Some(id),
            Some((&voucher_request(&pair, id, serial), CT)),
        )
    };
    let unknown = |reply: &Reply, serial: &str, maker: &str| {
        assert_eq!(reply.status, 404, "{serial} of {maker}: {}", reply.body);
        let want = format!("no owner is known for serial \"{serial}\" of manufacturer \"{maker}\"");
        assert!(
            reply.body.contains(&want),
            "{serial} of {maker}: {}",
            reply.body
        );
    };
    for serial in ["CLOUD-M-1", "CLOUD-M-3"] {
        unknown(&ask(&of_b(serial), serial), serial, SECOND_MANUFACTURER);
    }
    for serial in ["CLOUD-M-2", "CLOUD-M-4"] {
        let r = ask(&of_b(serial), serial);
        assert_eq!(
            r.status, 307,
            "{serial} of {SECOND_MANUFACTURER}: {}",
            r.body
        );
        assert_eq!(
            r.location, "https://registrar.owner-b.example/.well-known/brski/requestvoucher",
            "{serial} of {SECOND_MANUFACTURER}: {}",
            r.body
        );
    }
    let a4 = idevid(&pair.local, tmp.path(), "CLOUD-M-4");
    unknown(&ask(&a4, "CLOUD-M-4"), "CLOUD-M-4", DEV_MANUFACTURER);
    let m = metrics(&pair.cloud.control_plane.url("/metrics"));
    for (result, n) in [("unknown", 3.0), ("redirect", 2.0)] {
        assert_eq!(
            metric_value(
                &m,
                &format!(
                    "estuary_brski_requests_total{{op=\"requestvoucher\",result=\"{result}\"}}"
                )
            ),
            n,
            "{m}"
        );
    }

    assert!(pair.cloud.control_plane.is_running());
    let log = pair.cloud.control_plane.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
