//! The trust model end to end through a real Envoy with the Estuary filter, a real control
//! plane, Pebble, BIND9 and Redis: what a device, or a caller of the internal API, may obtain.
//! One module per rule; the clients are curl and openssl.

/// A CSR may ask for a device certificate for the device's own name and nothing more
/// (estuary_proto::policy): every other request is refused at the edge and again by the
/// control plane, before any ACME order or DNS UPDATE.
mod csr_content {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use estuary_proto::est::CT_PKCS10;
    use estuary_proto::internal_api::{
        ENROLL_PATH, HDR_AUTHORIZATION, HDR_CLIENT_CERT, HDR_DEVICE_SERIAL, HDR_OPERATION,
        OP_SIMPLEENROLL,
    };
    use estuary_tests::dev_stack::{DevStack, DevStackOptions};
    use estuary_tests::stack::DEV_TOKEN;
    use estuary_tests::util::TempDir;

    /// An HTTP answer: status and body.
    struct Answer {
        status: u16,
        body: String,
    }

    fn sh(cmd: &mut Command) -> Vec<u8> {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// curl with `args` and the URL; the body goes through a file so the status is alone on
    /// stdout.
    fn curl(dir: &Path, args: &[&str], url: &str) -> Answer {
        let body = dir.join("answer");
        let _ = std::fs::remove_file(&body);
        let status = sh(Command::new("curl")
            .args(["-sS", "--max-time", "60", "-w", "%{http_code}", "-o"])
            .arg(&body)
            .args(args)
            .arg(url));
        Answer {
            status: String::from_utf8_lossy(&status).trim().parse().unwrap_or(0),
            body: String::from_utf8_lossy(&std::fs::read(&body).unwrap_or_default()).into_owned(),
        }
    }

    /// A DER CSR by `openssl req` with a fresh P-256 key: `subject`, a SAN for `name`, and one
    /// `-addext` per `extra`.
    fn openssl_csr(dir: &Path, subject: &str, name: &str, extra: &[&str]) -> Vec<u8> {
        let key = dir.join("csr.key");
        let der = dir.join("csr.der");
        let mut cmd = Command::new("openssl");
        cmd.args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-keyout"])
        .arg(&key)
        .args(["-subj", subject])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")]);
        for e in extra {
            cmd.args(["-addext", e]);
        }
        sh(cmd.args(["-outform", "DER", "-out"]).arg(&der));
        std::fs::read(&der).expect("read CSR")
    }

    /// Sum of every series of `family` (any labels) over all control planes.
    fn metric_sum(stack: &DevStack, dir: &Path, family: &str) -> f64 {
        stack
            .control_planes
            .iter()
            .map(|cp| {
                curl(dir, &[], &cp.url("/metrics"))
                    .body
                    .lines()
                    .filter(|l| {
                        l.strip_prefix(family)
                            .is_some_and(|rest| rest.starts_with(['{', ' ']))
                    })
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .sum()
    }

    /// (ACME orders, DNS UPDATEs) so far.
    fn side_effects(stack: &DevStack, dir: &Path) -> (f64, f64) {
        (
            metric_sum(stack, dir, "estuary_acme_orders_total"),
            metric_sum(stack, dir, "estuary_dns_updates_total"),
        )
    }

    #[test]
    fn csrs_asking_for_more_than_a_device_certificate_are_refused_at_the_edge_and_in_the_control_plane(
    ) {
        let stack = DevStack::start_built(&DevStackOptions::default()).expect("dev stack");
        let tmp = TempDir::new("trust-csr").expect("tmp");
        let dir = tmp.path();
        let ca = stack.pki.server_ca.cert_path.to_string_lossy().into_owned();
        let cert = stack.pki.demo.cert_path.to_string_lossy().into_owned();
        let key = stack.pki.demo.key_path.to_string_lossy().into_owned();
        let idevid = ["--cacert", &ca, "--cert", &cert, "--key", &key];

        // The device's name, as /csrattrs tells it.
        let r = curl(dir, &idevid, &format!("{}/csrattrs", stack.est_url()));
        assert_eq!(r.status, 200, "{}", r.body);
        let attrs = estuary_proto::base64::decode(r.body.as_bytes()).expect("base64");
        let names = estuary_proto::CsrAttrs::from_der(&attrs)
            .expect("CsrAttrs")
            .requested_dns_names();
        let [name] = names.as_slice() else {
            panic!("csrattrs names {names:?}")
        };
        let cn = format!("/CN={name}");

        // simpleenroll through Envoy with the IDevID; base64 body (RFC 7030 §4.2.1).
        let enroll = |der: &[u8]| {
            let body = dir.join("csr.b64");
            std::fs::write(&body, estuary_proto::base64::encode(der)).expect("write");
            let data = format!("@{}", body.display());
            let mut args = idevid.to_vec();
            args.extend_from_slice(&[
                "-H",
                "Content-Type: application/pkcs10",
                "-H",
                "Content-Transfer-Encoding: base64",
                "--data-binary",
                &data,
            ]);
            curl(dir, &args, &format!("{}/simpleenroll", stack.est_url()))
        };

        let before = side_effects(&stack, dir);
        let bad: &[(&str, &str, &[&str], &str)] = &[
            (
                "CA:TRUE",
                &cn,
                &["basicConstraints=critical,CA:TRUE"],
                "basicConstraints cA TRUE",
            ),
            (
                "keyCertSign",
                &cn,
                &["keyUsage=critical,digitalSignature,keyCertSign"],
                "keyUsage keyCertSign",
            ),
            (
                "nameConstraints",
                &cn,
                &["nameConstraints=critical,permitted;DNS:.example.com"],
                "critical extension nameConstraints (2.5.29.30)",
            ),
            (
                "an unknown critical extension",
                &cn,
                &["1.3.6.1.4.1.55555.1=critical,ASN1:NULL"],
                "critical extension 1.3.6.1.4.1.55555.1",
            ),
            (
                "an extra subject RDN",
                &format!("{cn}/O=Evil"),
                &[],
                "subject holds O (2.5.4.10)",
            ),
        ];
        for (what, subject, extra, reason) in bad {
            let csr = openssl_csr(dir, subject, name, extra);
            let r = enroll(&csr);
            assert_eq!(r.status, 403, "{what}: {}", r.body);
            assert!(
                r.body.contains(reason),
                "{what}: {:?} lacks {reason:?}",
                r.body
            );
            assert_eq!(
                side_effects(&stack, dir),
                before,
                "{what}: ACME order or DNS UPDATE"
            );
        }

        // The same CSR straight to the control plane's internal API, past the filter, with the
        // token and headers that name this device and carry its IDevID (so the control plane's
        // own identity check passes): its own run of the CSR policy refuses it.
        let csr = openssl_csr(dir, &cn, name, &["basicConstraints=critical,CA:TRUE"]);
        let body = dir.join("csr.der");
        std::fs::write(&body, &csr).expect("write");
        let pem = std::fs::read_to_string(&stack.pki.demo.cert_path).expect("IDevID");
        let der = estuary_proto::pem::decode_certs(&pem).expect("PEM");
        let leaf = der.first().expect("the IDevID");
        let label = name.split('.').next().unwrap_or_default();
        let headers = [
            format!("{HDR_AUTHORIZATION}: Bearer {DEV_TOKEN}"),
            format!("{HDR_DEVICE_SERIAL}: {label}"),
            format!("{HDR_OPERATION}: {OP_SIMPLEENROLL}"),
            format!(
                "{HDR_CLIENT_CERT}: {}",
                estuary_proto::base64::encode(leaf).replace(['\r', '\n'], "")
            ),
            format!("content-type: {CT_PKCS10}"),
        ];
        let data = format!("@{}", body.display());
        let mut args = vec!["-X", "POST", "--data-binary", &data];
        for h in &headers {
            args.extend_from_slice(&["-H", h]);
        }
        let r = curl(dir, &args, &stack.control_planes[0].url(ENROLL_PATH));
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("basicConstraints cA TRUE"), "{}", r.body);
        assert_eq!(
            side_effects(&stack, dir),
            before,
            "ACME order or DNS UPDATE"
        );

        // A device certificate request still enrols (following 202 + Retry-After).
        let csr = openssl_csr(dir, &cn, name, &[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let r = loop {
            let r = enroll(&csr);
            if r.status != 202 || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        assert_eq!(r.status, 200, "{}", r.body);
        let (orders, _) = side_effects(&stack, dir);
        assert!(orders > before.0, "the good CSR was ordered");
    }
}
