//! The trust model end to end through a real Envoy with the Estuary filter, a real control
//! plane, Pebble, BIND9 and Redis: what a device, or a caller of the internal API, may obtain.
//! One module per rule; the clients are curl and openssl.

/// A CSR may ask for a device certificate for the device's own name and nothing more
/// (estuary_proto::policy): every other request is refused at the edge and again by the
/// control plane, before any ACME order or DNS UPDATE.
mod csr_content {
    use std::time::{Duration, Instant};

    use estuary_tests::curl::{curl, openssl_csr, side_effects};

    use estuary_proto::est::CT_PKCS10;
    use estuary_proto::internal_api::{
        ENROLL_PATH, HDR_AUTHORIZATION, HDR_CLIENT_CERT, HDR_DEVICE_SERIAL, HDR_OPERATION,
        OP_SIMPLEENROLL,
    };
    use estuary_tests::dev_stack::{DevStack, DevStackOptions};
    use estuary_tests::stack::DEV_TOKEN;
    use estuary_tests::util::TempDir;

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

/// Who may get which name is decided by who issued the client certificate (estuary_proto::
/// identity): a certificate that merely carries a device's name, or a serial equal to another
/// manufacturer's device, obtains nothing. Each refusal is a 4xx with the reason, with no ACME
/// order and no DNS UPDATE.
mod device_identity {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use estuary_tests::dev_stack::{DevStack, DevStackOptions, SecondManufacturer};
    use estuary_tests::pki::Issued;
    use estuary_tests::stack::DEV_PARENT;
    use estuary_tests::util::TempDir;

    use estuary_tests::curl::{curl, openssl_csr, side_effects, Answer};

    fn unique(tag: &str) -> String {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{tag}-{n:X}")
    }

    struct Client<'a> {
        stack: &'a DevStack,
        dir: &'a Path,
        cert: &'a Issued,
    }

    impl Client<'_> {
        fn tls(&self) -> Vec<String> {
            vec![
                "--cacert".into(),
                self.stack.pki.server_ca.cert_path.display().to_string(),
                "--cert".into(),
                self.cert.cert_path.display().to_string(),
                "--key".into(),
                self.cert.key_path.display().to_string(),
            ]
        }

        fn get(&self, op: &str) -> Answer {
            let args = self.tls();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(self.dir, &args, &format!("{}/{op}", self.stack.est_url()))
        }

        /// The device's name as `/csrattrs` tells it.
        fn csrattrs_name(&self) -> String {
            let r = self.get("csrattrs");
            assert_eq!(r.status, 200, "{}", r.body);
            let der = estuary_proto::base64::decode(r.body.as_bytes()).expect("base64");
            let names = estuary_proto::CsrAttrs::from_der(&der)
                .expect("CsrAttrs")
                .requested_dns_names();
            assert_eq!(names.len(), 1, "{names:?}");
            names[0].clone()
        }

        /// simpleenroll / simplereenroll with a fresh CSR for `name` (CN and SAN).
        fn enroll(&self, op: &str, name: &str) -> Answer {
            let csr = openssl_csr(self.dir, &format!("/CN={name}"), name, &[]);
            let body = self.dir.join("csr.b64");
            std::fs::write(&body, estuary_proto::base64::encode(&csr)).expect("write");
            let data = format!("@{}", body.display());
            let mut args = self.tls();
            args.extend(
                [
                    "-H",
                    "Content-Type: application/pkcs10",
                    "-H",
                    "Content-Transfer-Encoding: base64",
                    "--data-binary",
                    &data,
                ]
                .map(String::from),
            );
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let url = format!("{}/{op}", self.stack.est_url());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = curl(self.dir, &args, &url);
                if r.status != 202 || Instant::now() > deadline {
                    return r;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// The attacks of issue 12 against one stack with two manufacturers: the dev manufacturer
    /// (serials `TM-*`, no prefix) and `mfr-b` (every serial, names prefixed `mfr-b-`).
    #[test]
    fn certificates_that_merely_say_a_name_obtain_nothing() {
        let stack = DevStack::start_built(&DevStackOptions {
            idevid_serial_pattern: Some("TM-*".into()),
            second_manufacturer: Some(SecondManufacturer {
                serial_pattern: None,
                name_prefix: Some("mfr-b-".into()),
            }),
            ..DevStackOptions::default()
        })
        .expect("dev stack");
        let tmp = TempDir::new("trust-identity").expect("tmp");
        let dir = tmp.path();
        let mfr_a = &stack.pki.manufacturer;
        let mfr_b = stack.second_manufacturer.as_ref().expect("manufacturer B");

        // The victim enrols with its IDevID and gets its name.
        let victim_serial = unique("TM-VICTIM");
        let victim_name = format!("{}.{DEV_PARENT}", victim_serial.to_lowercase());
        let victim_cert = mfr_a
            .issue_idevid(dir, "victim", &victim_serial)
            .expect("victim IDevID");
        let victim = Client {
            stack: &stack,
            dir,
            cert: &victim_cert,
        };
        assert_eq!(victim.csrattrs_name(), victim_name);
        let r = victim.enroll("simpleenroll", &victim_name);
        assert_eq!(r.status, 200, "the victim enrols: {}", r.body);

        let before = side_effects(&stack, dir);
        let refused = |what: &str, r: Answer, reason: &str| {
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
        };

        // 1. A certificate the manufacturer CA issued with the victim's dNSName re-enrols as
        //    the victim: refused, it is not an LDevID.
        let forged = mfr_a
            .issue_client(dir, "forged", None, &[&victim_name])
            .expect("forged");
        let attacker = Client {
            stack: &stack,
            dir,
            cert: &forged,
        };
        refused(
            "manufacturer-issued certificate with the victim's name",
            attacker.enroll("simplereenroll", &victim_name),
            "simplereenroll needs the certificate the ACME CA issued",
        );
        // As an IDevID it names nobody (no serialNumber).
        refused(
            "the same, simpleenroll",
            attacker.enroll("simpleenroll", &victim_name),
            "no subject serialNumber",
        );

        // 2. The same with the attacker's own serialNumber added.
        let attacker_serial = unique("TM-ATTACKER");
        let forged = mfr_a
            .issue_client(dir, "forged2", Some(&attacker_serial), &[&victim_name])
            .expect("forged");
        let attacker = Client {
            stack: &stack,
            dir,
            cert: &forged,
        };
        refused(
            "manufacturer-issued certificate with the victim's name and the attacker's serial",
            attacker.enroll("simplereenroll", &victim_name),
            "simplereenroll needs the certificate the ACME CA issued",
        );
        refused(
            "the same, simpleenroll for the victim's name",
            attacker.enroll("simpleenroll", &victim_name),
            &format!(
                "this device may only ask for {}",
                attacker_serial.to_lowercase()
            ),
        );

        // 3. Manufacturer B's IDevID with the victim's serial, and with it lower-cased: B's
        //    devices are named apart, so the victim's name is refused.
        for (stem, serial) in [
            ("b-same", victim_serial.clone()),
            ("b-folded", victim_serial.to_lowercase()),
        ] {
            let cert = mfr_b.issue_idevid(dir, stem, &serial).expect("B IDevID");
            let b = Client {
                stack: &stack,
                dir,
                cert: &cert,
            };
            let own = format!("mfr-b-{}.{DEV_PARENT}", serial.to_lowercase());
            assert_eq!(b.csrattrs_name(), own, "{stem}");
            refused(
                &format!("manufacturer B's {stem} asks for the victim's name"),
                b.enroll("simpleenroll", &victim_name),
                &format!("this device may only ask for {own}"),
            );
        }
        // Manufacturer A's pattern still applies to A: a serial outside TM-* is refused.
        let outside = mfr_a
            .issue_idevid(dir, "outside", &unique("XX"))
            .expect("IDevID");
        let outside = Client {
            stack: &stack,
            dir,
            cert: &outside,
        };
        refused(
            "a serial outside the manufacturer's pattern",
            outside.get("csrattrs"),
            "is not accepted for manufacturer estuary-dev",
        );

        // B's device does get its own, prefixed name.
        let cert = mfr_b
            .issue_idevid(dir, "b-own", &victim_serial)
            .expect("B IDevID");
        let b = Client {
            stack: &stack,
            dir,
            cert: &cert,
        };
        let own = format!("mfr-b-{}.{DEV_PARENT}", victim_serial.to_lowercase());
        let r = b.enroll("simpleenroll", &own);
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// A proxy misconfigured to pass the client's own `x-forwarded-client-cert` through
    /// (FORWARD_ONLY instead of SANITIZE_SET) fails closed: the XFCC certificate is not the
    /// connection's peer certificate, so the filter answers 401.
    #[test]
    fn a_forwarded_xfcc_that_is_not_the_peer_certificate_is_401() {
        let stack = DevStack::start_built(&DevStackOptions {
            dangerous_xfcc_mode: Some("FORWARD_ONLY".into()),
            ..DevStackOptions::default()
        })
        .expect("dev stack");
        let tmp = TempDir::new("trust-xfcc").expect("tmp");
        let dir = tmp.path();
        let victim = stack
            .pki
            .manufacturer
            .issue_idevid(dir, "victim", &unique("VICTIM"))
            .expect("IDevID");
        let pem = std::fs::read_to_string(&victim.cert_path).expect("pem");
        let enc: String = pem
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let spoof = format!("x-forwarded-client-cert: Hash=00;Cert=\"{enc}\"");
        let ca = stack.pki.server_ca.cert_path.display().to_string();
        let cert = stack.pki.demo.cert_path.display().to_string();
        let key = stack.pki.demo.key_path.display().to_string();
        let url = format!("{}/csrattrs", stack.est_url());
        let before = side_effects(&stack, dir);
        // The attacker's own valid IDevID on the TLS connection, the victim's in the header.
        let r = curl(
            dir,
            &[
                "--cacert", &ca, "--cert", &cert, "--key", &key, "-H", &spoof,
            ],
            &url,
        );
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(
            r.body.contains("not the one this TLS connection presented"),
            "{}",
            r.body
        );
        // With no header at all (FORWARD_ONLY writes none): 401 too.
        let r = curl(
            dir,
            &["--cacert", &ca, "--cert", &cert, "--key", &key],
            &url,
        );
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(side_effects(&stack, dir), before);
    }
}
