//! `cargo xtask up`: the whole dev stack on 127.0.0.1.
//!
//! Installs what is missing, builds, creates a dev PKI under `target/dev/`, starts Redis,
//! BIND9, Pebble, the control plane and Envoy (with the filter), the test MASA, a BRSKI cloud
//! registrar (a second control plane, Redis and Envoy), enrols the demo pledge once,
//! writes `target/dev/stack.env`, prints how to enrol with curl + openssl, and stays in the
//! foreground until Ctrl-C or SIGTERM, then stops everything it started.
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use estuary_tests::cloud::{CloudRegistrar, Owner, OwnerPath, CLOUD_PREFIX, DEV_MANUFACTURER};
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::stack::{HaRedis, DEV_PARENT};

use crate::{build_wasm, cargo, install, root, run};

pub fn up(args: &[String]) -> anyhow::Result<()> {
    let mut opts = DevStackOptions {
        teap: true,
        brski: true,
        ..DevStackOptions::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--replicas" => {
                opts.replicas = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--replicas needs a number")?;
            }
            "--envoys" => {
                opts.envoys = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .context("--envoys needs a positive number")?;
            }
            "--budget-ms" => {
                opts.cp.budget_ms = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--budget-ms needs a number")?;
            }
            "--redis" => {
                opts.redis = it
                    .next()
                    .context("--redis needs single, sentinel or cluster")?
                    .parse()?;
            }
            "--ca" => match it.next().map(String::as_str) {
                Some("pebble") => opts.rfc9444_ca = false,
                Some("rfc9444") => opts.rfc9444_ca = true,
                _ => anyhow::bail!("--ca takes pebble (default) or rfc9444"),
            },
            other => anyhow::bail!(
                "unknown option {other} (known: --replicas N, --envoys M, --budget-ms MS, --ca pebble|rfc9444, --redis single|sentinel|cluster)"
            ),
        }
    }
    install()?;
    let wasm = build_wasm()?;
    let mut bins = cargo();
    bins.args(["build", "--workspace", "--bins"]);
    run(bins)?;
    let dev = root().join("target/dev");
    let _ = std::fs::remove_dir_all(&dev);
    std::fs::create_dir_all(&dev)?;
    let cp_bin = root().join("target/debug/estuary-control-plane");
    eprintln!("xtask: starting Redis, BIND9, Pebble, the control plane and Envoy …");
    let stack = DevStack::start(&opts, &cp_bin, &wasm, Some(&dev.join("pki")))?;
    eprintln!(
        "xtask: starting the BRSKI cloud registrar (its own control plane, Redis and Envoy) …"
    );
    let cloud = CloudRegistrar::start(
        &stack,
        &dev_owners(&stack),
        &cp_bin,
        &wasm,
        &dev.join("cloud"),
    )
    .context("starting the cloud registrar")?;

    let pledge = root().join("target/debug/estuary-pledge");
    let demo_out = dev.join("demo-pledge");
    let mut env = stack_env(&stack, &cloud, &pledge, &demo_out)?;
    // Every Envoy's EST URL, and every Redis node of the main stack (not the Sentinels, not
    // the cloud registrar's).
    let redis_addrs: Vec<String> = stack
        .stack
        .redis_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    env.push_str(&format!(
        "ESTUARY_EST_URLS={}\nESTUARY_REDIS_ADDRS={}\n",
        stack.est_urls().join(","),
        redis_addrs.join(",")
    ));
    if let Some(HaRedis::Sentinel(set)) = &stack.stack.ha {
        let s: Vec<String> = set.sentinels.iter().map(|a| a.to_string()).collect();
        env.push_str(&format!("ESTUARY_REDIS_SENTINELS={}\n", s.join(",")));
    }
    let env_path = dev.join("stack.env");
    std::fs::write(&env_path, &env)?;

    // Enrol the demo pledge once, as a device would.
    if pledge.is_file() {
        let mut enroll = Command::new(&pledge);
        enroll
            .arg("enroll")
            .arg("--est-url")
            .arg(stack.est_url())
            .arg("--server-ca")
            .arg(&stack.pki.server_ca.cert_path)
            .arg("--cert")
            .arg(&stack.pki.demo.cert_path)
            .arg("--key")
            .arg(&stack.pki.demo.key_path)
            .arg("--out-dir")
            .arg(&demo_out);
        run(enroll).context("enrolling the demo pledge")?;
    } else {
        eprintln!(
            "xtask: {} is not built; skipping the demo enrolment",
            pledge.display()
        );
    }

    println!("\n{}", howto(&stack, &cloud, &env_path));
    println!("Estuary dev stack is up. Ctrl-C stops it.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        anyhow::Ok(())
    })?;
    eprintln!("xtask: stopping the dev stack");
    drop(cloud);
    drop(stack);
    Ok(())
}

/// The dev cloud registrar's owners: `dev-est` (path (b): a voucher naming the local RA's EST
/// URL and pinning its CA; the demo pledge belongs to it) and `dev-redirect` (path (a): 307 to
/// the local registrar). More serials are assigned in its Redis, keyed by manufacturer and serial.
fn dev_owners(stack: &DevStack) -> Vec<Owner> {
    vec![
        Owner {
            name: "dev-est".into(),
            manufacturer: Some(DEV_MANUFACTURER.into()),
            serials: vec![stack.pki.demo_serial.clone()],
            path: OwnerPath::Est {
                url: stack.est_url(),
                pinned: stack.pki.server_ca.cert_path.clone(),
            },
        },
        Owner {
            name: "dev-redirect".into(),
            manufacturer: None,
            serials: Vec::new(),
            path: OwnerPath::Redirect(stack.brski_url()),
        },
    ]
}

fn stack_env(
    stack: &DevStack,
    cloud: &CloudRegistrar,
    pledge: &Path,
    demo_out: &Path,
) -> anyhow::Result<String> {
    let mut s = String::from("# Written by `cargo xtask up`; valid while it runs.\n");
    let cp = stack.control_planes.first().context("no control plane")?;
    let kv = [
        ("ESTUARY_EST_URL", stack.est_url()),
        (
            "ESTUARY_SERVER_CA",
            stack.pki.server_ca.cert_path.display().to_string(),
        ),
        (
            "ESTUARY_IDEVID_CA_CERT",
            stack.pki.manufacturer.cert_path.display().to_string(),
        ),
        (
            "ESTUARY_IDEVID_CA_KEY",
            stack.pki.manufacturer.key_path.display().to_string(),
        ),
        (
            "ESTUARY_DEMO_CERT",
            stack.pki.demo.cert_path.display().to_string(),
        ),
        (
            "ESTUARY_DEMO_KEY",
            stack.pki.demo.key_path.display().to_string(),
        ),
        ("ESTUARY_DEMO_SERIAL", stack.pki.demo_serial.clone()),
        ("ESTUARY_DEMO_OUT", demo_out.display().to_string()),
        ("ESTUARY_PARENT_DOMAIN", DEV_PARENT.to_string()),
        ("ESTUARY_ACME_ROOTS", stack.acme_roots.display().to_string()),
        ("ESTUARY_DNS_ADDR", stack.stack.bind.addr.to_string()),
        ("ESTUARY_METRICS_URL", format!("http://{}/metrics", cp.addr)),
        ("ESTUARY_ENVOY_ADMIN", stack.envoy.admin_url.clone()),
        ("ESTUARY_PLEDGE", pledge.display().to_string()),
        ("ESTUARY_BRSKI_URL", stack.brski_url()),
        ("ESTUARY_CLOUD_URL", cloud.url()),
        ("ESTUARY_CLOUD_CA", cloud.anchor_pem().display().to_string()),
        (
            "ESTUARY_CLOUD_REDIS_PORT",
            cloud.redis.addr.port().to_string(),
        ),
        (
            "ESTUARY_MASA_URL",
            stack
                .masa
                .as_ref()
                .map(|m| m.url.clone())
                .unwrap_or_default(),
        ),
        (
            "ESTUARY_MASA_CA",
            stack
                .masa
                .as_ref()
                .map(|m| m.anchor_pem.display().to_string())
                .unwrap_or_default(),
        ),
    ];
    for (k, v) in kv {
        writeln!(s, "{k}={v}")?;
    }
    if let Some((addr, secret)) = &stack.radius {
        writeln!(s, "ESTUARY_RADIUS_ADDR={addr}")?;
        // A dev-only secret, generated for this stack's loopback RADIUS server.
        writeln!(s, "ESTUARY_RADIUS_SECRET={secret}")?;
    }
    Ok(s)
}

fn howto(stack: &DevStack, cloud: &CloudRegistrar, env_path: &Path) -> String {
    format!(
        r#"Stack description: {env}

Enrol a new device with curl + openssl (RFC 7030):

  set -a; . {env}; set +a
  SN=DEVICE-42
  # an IDevID from the manufacturer CA (subject serialNumber = the serial)
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout idevid.key \
    -subj "/serialNumber=$SN/CN=pledge" -out idevid.csr
  openssl x509 -req -in idevid.csr -CA $ESTUARY_IDEVID_CA_CERT -CAkey $ESTUARY_IDEVID_CA_KEY \
    -CAcreateserial -days 30 -out idevid.pem
  # what the RA wants in the CSR
  curl -s --cacert $ESTUARY_SERVER_CA --cert idevid.pem --key idevid.key \
    $ESTUARY_EST_URL/csrattrs | openssl base64 -d | openssl asn1parse -inform DER
  # the CSR: the name is <serial, lower case>.$ESTUARY_PARENT_DOMAIN
  NAME=$(echo $SN | tr A-Z a-z).$ESTUARY_PARENT_DOMAIN
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key \
    -subj "/CN=$NAME" -addext "subjectAltName=DNS:$NAME" -outform DER | openssl base64 > device.csr.b64
  curl -s --cacert $ESTUARY_SERVER_CA --cert idevid.pem --key idevid.key \
    -H 'Content-Type: application/pkcs10' -H 'Content-Transfer-Encoding: base64' \
    --data-binary @device.csr.b64 $ESTUARY_EST_URL/simpleenroll \
    | openssl base64 -d | openssl pkcs7 -inform DER -print_certs > device.pem
  # simpleenroll answers the certificate alone; /cacerts has the rest of its chain + the root
  curl -s --cacert $ESTUARY_SERVER_CA $ESTUARY_EST_URL/cacerts | openssl base64 -d \
    | openssl pkcs7 -inform DER -print_certs > cacerts.pem
  openssl verify -CAfile cacerts.pem device.pem

Or start from the BRSKI cloud registrar (draft-ietf-anima-brski-cloud), as a pledge that
knows only its manufacturer's cloud URL. The demo pledge belongs to owner dev-est (a voucher
naming this stack's EST server); assign other serials in the cloud registrar's Redis:

  $ESTUARY_PLEDGE cloud --cloud-url $ESTUARY_CLOUD_URL --cloud-ca $ESTUARY_CLOUD_CA \
    --masa-ca $ESTUARY_MASA_CA --cert $ESTUARY_DEMO_CERT --key $ESTUARY_DEMO_KEY --out-dir cloud-out
  # Redis entries (keyed by manufacturer and serial) win over the configuration: now the demo
  # pledge takes the 307 path
  redis-cli -p $ESTUARY_CLOUD_REDIS_PORT SET {prefix}:brski:owner:{maker}:$ESTUARY_DEMO_SERIAL dev-redirect

EST URL:      {url}
Cloud URL:    {cloud}
Envoy admin:  {admin}"#,
        env = env_path.display(),
        url = stack.est_url(),
        cloud = cloud.url(),
        prefix = CLOUD_PREFIX,
        maker = DEV_MANUFACTURER,
        admin = stack.envoy.admin_url,
    )
}
