//! Limits that keep one device from burning the fleet's CA limits (seed §8.1: "it is prudent not
//! to request identical certificates too often"), end to end through a real Envoy with the
//! Estuary filter, the control plane, Pebble, BIND9 and Redis; the client is curl + openssl.

/// `enroll.max_orders_per_device` (default 5 per hour): a device that generates fresh keys in a
/// loop gets 429 + Retry-After once it has caused its 5 orders; its identical retries are still
/// served from the cache, and other devices are not affected.
mod per_device {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use estuary_tests::curl::{curl, metric_sum, openssl_csr, Answer};
    use estuary_tests::dev_stack::{DevStack, DevStackOptions};
    use estuary_tests::pki::Issued;
    use estuary_tests::stack::DEV_PARENT;
    use estuary_tests::util::TempDir;

    /// simpleenroll of `csr` (DER) with `cert`, following 202 + Retry-After for up to 60 s.
    fn enroll(stack: &DevStack, dir: &Path, cert: &Issued, csr: &[u8]) -> (Answer, Option<u64>) {
        let body = dir.join("csr.b64");
        std::fs::write(&body, estuary_proto::base64::encode(csr)).expect("write");
        let headers = dir.join("headers");
        let (ca, crt, key) = (
            stack.pki.server_ca.cert_path.display().to_string(),
            cert.cert_path.display().to_string(),
            cert.key_path.display().to_string(),
        );
        let data = format!("@{}", body.display());
        let dump = headers.display().to_string();
        let args = [
            "--cacert",
            &ca,
            "--cert",
            &crt,
            "--key",
            &key,
            "-D",
            &dump,
            "-H",
            "Content-Type: application/pkcs10",
            "-H",
            "Content-Transfer-Encoding: base64",
            "--data-binary",
            &data,
        ];
        let url = format!("{}/simpleenroll", stack.est_url());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = curl(dir, &args, &url);
            let retry_after = std::fs::read_to_string(&headers)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("retry-after")
                        .then(|| v.trim().parse().ok())?
                });
            if r.status != 202 || Instant::now() > deadline {
                return (r, retry_after);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn orders(stack: &DevStack, dir: &Path) -> f64 {
        metric_sum(stack, dir, "estuary_acme_orders_total")
    }

    #[test]
    fn fifteen_fresh_keys_from_one_device_place_five_orders() {
        let stack = DevStack::start_built(&DevStackOptions::default()).expect("dev stack");
        let tmp = TempDir::new("limits").expect("tmp");
        let dir = tmp.path();
        let serial = "LOOPING-1";
        let name = format!("{}.{DEV_PARENT}", serial.to_lowercase());
        let cert = stack
            .pki
            .manufacturer
            .issue_idevid(dir, "looping", serial)
            .expect("IDevID");
        let cn = format!("/CN={name}");

        let mut first_csr = None;
        let mut refused = 0;
        for i in 0..15 {
            let csr = openssl_csr(dir, &cn, &name, &[]);
            let (r, retry_after) = enroll(&stack, dir, &cert, &csr);
            if i < 5 {
                assert_eq!(r.status, 200, "key {i}: {}", r.body);
            } else {
                assert_eq!(r.status, 429, "key {i}: {}", r.body);
                assert!(r.body.contains("new certificates"), "{}", r.body);
                let secs = retry_after.expect("429 carries Retry-After");
                assert!((1..=3600).contains(&secs), "Retry-After {secs}");
                refused += 1;
            }
            first_csr.get_or_insert(csr);
        }
        assert_eq!(refused, 10);
        assert_eq!(orders(&stack, dir), 5.0, "at most the limit reached the CA");
        assert_eq!(
            metric_sum(&stack, dir, "estuary_device_limited_total"),
            10.0
        );

        // The identical CSR again: served from the cache, never limited.
        let (r, _) = enroll(
            &stack,
            dir,
            &cert,
            first_csr.as_deref().expect("a first CSR"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(orders(&stack, dir), 5.0);

        // Another device is not affected.
        let other = stack
            .pki
            .manufacturer
            .issue_idevid(dir, "other", "QUIET-1")
            .expect("IDevID");
        let other_name = format!("quiet-1.{DEV_PARENT}");
        let csr = openssl_csr(dir, &format!("/CN={other_name}"), &other_name, &[]);
        let (r, _) = enroll(&stack, dir, &other, &csr);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(orders(&stack, dir), 6.0);
    }
}
