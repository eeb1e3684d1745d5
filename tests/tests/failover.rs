//! A fleet rides out failures (issue 17): 300 distinct pledges enrol at 60 concurrent through
//! two Envoys in front of three control planes sharing a replicated Redis, while the test
//! SIGKILLs the Redis master that holds in-flight keys (its replica takes over), SIGKILLs one
//! control plane and starts it again, and restarts one Envoy.
//!
//! What a fleet operator checks afterwards: every pledge has a certificate that verifies to the
//! ACME root, for its own name and its own key (0 lost); posting the same CSR again gives the
//! very same certificate (no device is issued two for one CSR); no DNS-01 TXT record and no
//! per-CSR lock is left behind.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use estuary_pledge::est::certs_only_body;
use estuary_pledge::transport::{
    client_config, ConnectionUse, CsrBody, EstClient, EstSession, Identity,
};
use estuary_pledge::Exchange;
use estuary_proto::cert::CertSummary;
use estuary_proto::est::EstOperation;
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::stack::{CpOptions, RedisTopology, DEV_PARENT};
use estuary_tests::util::TempDir;

const PLEDGES: usize = 300;
const CONCURRENT: usize = 60;
/// A pledge that has no certificate by then is lost.
const PLEDGE_WITHIN: Duration = Duration::from_secs(300);
/// One request, its connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The control planes' lock TTL: a lock of a killed replica expires within it.
const LOCK_TTL_S: u64 = 5;

/// One device: a fresh IDevID and a CSR for its own name.
struct Device {
    serial: String,
    name: String,
    idevid: Identity,
    csr: Vec<u8>,
    /// DER of the CSR's SubjectPublicKeyInfo.
    spki: Vec<u8>,
}

/// What one device saw.
struct Outcome {
    /// The certificate (DER) of the first 200, if any.
    cert: Option<Vec<u8>>,
    /// Every status it got, in order; transport errors as 0.
    seen: Vec<u16>,
    last_error: String,
}

fn devices(dir: &Path, stack: &DevStack, tag: &str) -> Vec<Device> {
    (0..PLEDGES)
        .map(|i| {
            let serial = format!("FO-{tag}-{i}");
            let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
            let id = stack
                .pki
                .manufacturer
                .issue_idevid(dir, &serial, &serial)
                .expect("issue an IDevID");
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(vec![name.clone()]).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name.as_str());
            let csr = params.serialize_request(&key).expect("CSR").der().to_vec();
            let spki = estuary_proto::csr::parse_and_verify(&csr)
                .expect("our own CSR")
                .spki_der()
                .to_vec();
            Device {
                serial,
                name,
                idevid: Identity {
                    cert: id.cert_path.clone(),
                    key: id.key_path.clone(),
                    extra_chain: Vec::new(),
                },
                csr,
                spki,
            }
        })
        .collect()
}

fn session(url: &str, server_ca: &Path, d: &Device) -> EstSession {
    let config = client_config(server_ca, Some(&d.idevid)).expect("client config");
    EstSession::new(EstClient::new(url, None, None, config, REQUEST_TIMEOUT).expect("client"))
}

/// Posts the device's CSR until 200 (following 202 and 503 Retry-After, retrying transport
/// errors — an Envoy restarting — after half a second) or until [`PLEDGE_WITHIN`].
async fn enrol(s: &mut EstSession, d: &Device) -> Outcome {
    let started = Instant::now();
    let body = CsrBody::new(&d.csr);
    let mut out = Outcome {
        cert: None,
        seen: Vec::new(),
        last_error: String::new(),
    };
    while started.elapsed() < PLEDGE_WITHIN {
        let reply = s
            .post_csr(
                Exchange::Enroll,
                EstOperation::SimpleEnroll,
                &body,
                ConnectionUse::KeepAlive,
            )
            .await;
        let wait = match reply {
            Ok(r) => {
                let a = r.answer;
                out.seen.push(a.status);
                match a.status {
                    200 => {
                        let certs = certs_only_body(Exchange::Enroll, &a).expect("a PKCS#7");
                        out.cert = certs.into_iter().next();
                        return out;
                    }
                    202 | 503 => a
                        .retry_after_delay(SystemTime::now())
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(5)),
                    _ => {
                        out.last_error = String::from_utf8_lossy(&a.body).into_owned();
                        return out;
                    }
                }
            }
            Err(e) => {
                out.seen.push(0);
                out.last_error = e.to_string();
                s.close();
                Duration::from_millis(500)
            }
        };
        tokio::time::sleep(wait).await;
    }
    out
}

/// The stack's and the test's shared view of progress.
struct Progress {
    done: AtomicUsize,
}

impl Progress {
    /// Blocks until `n` pledges have their certificate (or 5 minutes passed).
    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + PLEDGE_WITHIN;
        while self.done.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The faults, one after another as the fleet progresses; returns what was done, for the log.
fn chaos(stack: &mut DevStack, progress: &Progress) -> Vec<String> {
    let mut did = Vec::new();
    progress.wait_for(PLEDGES / 5);
    let ha = stack.stack.ha.as_mut().expect("a replicated Redis");
    let t = Instant::now();
    let killed = ha
        .kill_master_holding("*:lock:*")
        .expect("kill the busiest master");
    did.push(format!(
        "SIGKILLed Redis master {killed} at {} done; replica took over in {:?}",
        progress.done.load(Ordering::Relaxed),
        t.elapsed()
    ));
    progress.wait_for(2 * PLEDGES / 5);
    stack.control_planes[1]
        .restart()
        .expect("restart control plane 1");
    did.push(format!(
        "SIGKILLed and restarted control plane 1 at {} done",
        progress.done.load(Ordering::Relaxed)
    ));
    progress.wait_for(3 * PLEDGES / 5);
    stack.more_envoys[0].restart().expect("restart Envoy 2");
    did.push(format!(
        "restarted Envoy 2 at {} done",
        progress.done.load(Ordering::Relaxed)
    ));
    did
}

fn fleet_rides_out_failover(topology: RedisTopology, tag: &str) {
    let mut stack = DevStack::start_built(&DevStackOptions {
        replicas: 3,
        envoys: 2,
        redis: topology,
        cp: CpOptions {
            lock_ttl_s: LOCK_TTL_S,
            extra_env: vec![(
                "ESTUARY_ENROLL__UNAVAILABLE_RETRY_AFTER_S".to_string(),
                "1".to_string(),
            )],
            ..CpOptions::default()
        },
        ..DevStackOptions::default()
    })
    .expect("start the dev stack");
    let dir = TempDir::new("failover").expect("temp dir");
    let devices = Arc::new(devices(dir.path(), &stack, tag));
    let urls = stack.est_urls();
    assert_eq!(urls.len(), 2);
    let server_ca = stack.pki.server_ca.cert_path.clone();
    let progress = Arc::new(Progress {
        done: AtomicUsize::new(0),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fleet = {
        let (devices, urls, server_ca, progress) = (
            Arc::clone(&devices),
            urls.clone(),
            server_ca.clone(),
            Arc::clone(&progress),
        );
        rt.spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..CONCURRENT {
                let (devices, urls, server_ca, progress, next) = (
                    Arc::clone(&devices),
                    urls.clone(),
                    server_ca.clone(),
                    Arc::clone(&progress),
                    Arc::clone(&next),
                );
                workers.spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(d) = devices.get(i) else { break };
                        let mut s = session(&urls[i % urls.len()], &server_ca, d);
                        let o = enrol(&mut s, d).await;
                        if o.cert.is_some() {
                            progress.done.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push((i, o));
                    }
                    mine
                });
            }
            let mut all = Vec::new();
            while let Some(r) = workers.join_next().await {
                all.extend(r.expect("a pledge task"));
            }
            all.sort_by_key(|(i, _)| *i);
            all.into_iter().map(|(_, o)| o).collect::<Vec<Outcome>>()
        })
    };
    let started = Instant::now();
    let did = chaos(&mut stack, &progress);
    let outcomes = rt.block_on(fleet).expect("the fleet");
    let took = started.elapsed();
    eprintln!("{PLEDGES} pledges in {took:?}; {}", did.join("; "));

    // 0 lost: every pledge has a certificate for its own name and key.
    let logs = || {
        let mut s = String::new();
        for cp in &stack.control_planes {
            let text = cp.log_text();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!(
                "--- {}\n{}\n",
                cp.addr,
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        s
    };
    let lost: Vec<String> = outcomes
        .iter()
        .zip(devices.iter())
        .filter(|(o, _)| o.cert.is_none())
        .map(|(o, d)| format!("{}: saw {:?}, last: {}", d.serial, o.seen, o.last_error))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {PLEDGES} pledges lost ({}):\n{}\n{}",
        lost.len(),
        did.join("; "),
        lost[..lost.len().min(10)].join("\n"),
        logs()
    );
    let mut pems = Vec::new();
    for (o, d) in outcomes.iter().zip(devices.iter()) {
        let der = o.cert.as_deref().expect("checked above");
        let c = CertSummary::from_der(der).expect("a certificate");
        assert_eq!(
            c.dns_names(),
            std::slice::from_ref(&d.name),
            "{}: the name",
            d.serial
        );
        assert_eq!(c.spki_der(), d.spki, "{}: the key is the CSR's", d.serial);
        let path = dir.path().join(format!("{}.leaf.pem", d.serial));
        std::fs::write(&path, pem("CERTIFICATE", der)).expect("write");
        pems.push(path);
    }
    openssl_verify(&stack.acme_roots, &pems);
    // The faults really happened in the middle of the run, not after it.
    let statuses: Vec<u16> = outcomes.iter().flat_map(|o| o.seen.clone()).collect();
    eprintln!(
        "answers: {} × 200, {} × 202, {} × 503, {} transport errors",
        statuses.iter().filter(|s| **s == 200).count(),
        statuses.iter().filter(|s| **s == 202).count(),
        statuses.iter().filter(|s| **s == 503).count(),
        statuses.iter().filter(|s| **s == 0).count()
    );

    // One certificate per CSR: the same CSR again, through the other Envoy, is the same one.
    let again = rt.block_on(async {
        let mut out = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            let mut s = session(&urls[(i + 1) % urls.len()], &server_ca, d);
            out.push(enrol(&mut s, d).await);
        }
        out
    });
    for ((a, o), d) in again.iter().zip(outcomes.iter()).zip(devices.iter()) {
        assert!(
            a.cert == o.cert,
            "{}: a second, different certificate for the same CSR (saw {:?})",
            d.serial,
            a.seen
        );
    }

    // Nothing left behind: no per-CSR lock (a killed replica's expires within its TTL) and no
    // DNS-01 TXT record (the sweeper removes what a killed replica left).
    let ha = stack.stack.ha.as_ref().expect("a replicated Redis");
    let deadline = Instant::now() + Duration::from_secs(2 * LOCK_TTL_S + 5);
    loop {
        let locks = ha.keys("*:lock:*");
        if locks.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "locks remain: {locks:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut left: Vec<String>;
    loop {
        left = devices
            .iter()
            .filter(|d| {
                let records = stack
                    .stack
                    .bind
                    .dig_txt(&format!("_acme-challenge.{}", d.name))
                    .expect("dig");
                !records.is_empty()
            })
            .map(|d| d.name.clone())
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        left.is_empty(),
        "TXT records remain for {} names, e.g. {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// `openssl verify -CAfile <roots> leaf…`: an independent check that each certificate chains
/// to the ACME CA's root and is valid now.
fn openssl_verify(roots: &PathBuf, leaves: &[PathBuf]) {
    for batch in leaves.chunks(100) {
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(roots)
            .args(batch)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_fleet_rides_out_a_sentinel_failover_a_control_plane_crash_and_an_envoy_restart() {
    fleet_rides_out_failover(RedisTopology::Sentinel, &format!("S{}", std::process::id()));
}

#[test]
fn a_fleet_rides_out_a_cluster_master_failover_a_control_plane_crash_and_an_envoy_restart() {
    fleet_rides_out_failover(RedisTopology::Cluster, &format!("C{}", std::process::id()));
}
