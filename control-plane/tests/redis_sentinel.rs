//! Redis through Sentinel (issue 17): a control plane whose `redis.url` is
//! `redis+sentinel://…` enrols through a real master/replica pair watched by three real
//! Sentinels; the test SIGKILLs the master while pledges enrol. The Sentinels promote the
//! replica; the control plane answers 503 + Retry-After meanwhile, finds the new master by
//! itself (no restart), every pledge ends with a certificate for its own name and key, and no
//! lock is left on the new master.
mod common;

use std::time::{Duration, Instant};

use common::*;
use estuary_tests::redis::SentinelSet;

const BEFORE: usize = 4;
const DURING: usize = 12;
const PLEDGE_WITHIN: Duration = Duration::from_secs(120);

async fn enrol_one(
    cp_url: String,
    idevid: String,
    serial: String,
    csr: Vec<u8>,
) -> (Resp, Vec<u16>) {
    enrol_riding_out(cp_url, idevid, serial, csr, PLEDGE_WITHIN).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolments_ride_out_a_sentinel_failover() {
    let stack = stack();
    let mut set = SentinelSet::start().expect("start Redis with Sentinel");
    let first_master = set.master().expect("the master");
    let mut o = CpOptions::default();
    o.extra_env.extend([
        (
            "ESTUARY_REDIS__URL".to_string(),
            format!("\"{}\"", set.url()),
        ),
        (
            "ESTUARY_ENROLL__UNAVAILABLE_RETRY_AFTER_S".to_string(),
            "1".to_string(),
        ),
        ("ESTUARY_ENROLL__LOCK_TTL_S".to_string(), "5".to_string()),
    ]);
    let cp = ControlPlane::start(&stack, &o);
    let base = cp.url("");
    let pid = std::process::id();

    let pledge = |i: usize| {
        let serial = format!("SEN-{pid}-{i}");
        let name = format!("{}.{PARENT}", serial.to_ascii_lowercase());
        let (csr, pubkey) = csr_for(&name);
        (serial, name, csr, pubkey)
    };
    let mut all = Vec::new();
    // Before the failover: the master Sentinel names serves.
    for i in 0..BEFORE {
        let (serial, name, csr, pubkey) = pledge(i);
        let (r, seen) =
            enrol_one(base.clone(), cp.idevid_header(&serial), serial.clone(), csr).await;
        assert_eq!(
            r.status,
            200,
            "{serial}: {} (saw {seen:?})\n{}",
            r.text(),
            cp.log_text()
        );
        all.push((serial, name, pubkey, r));
    }

    // Pledges enrol while the master dies and the Sentinels elect the replica.
    let mut tasks = Vec::new();
    for i in BEFORE..BEFORE + DURING {
        let (serial, name, csr, pubkey) = pledge(i);
        let idevid = cp.idevid_header(&serial);
        let url = base.clone();
        let s = serial.clone();
        tasks.push((
            serial,
            name,
            pubkey,
            tokio::spawn(async move { enrol_one(url, idevid, s, csr).await }),
        ));
        if i == BEFORE + 2 {
            set.kill(first_master);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut saw_unavailable = 0;
    for (serial, name, pubkey, t) in tasks {
        let (r, seen) = t.await.expect("pledge task");
        if seen.contains(&503) {
            saw_unavailable += 1;
        }
        assert_eq!(
            r.status,
            200,
            "{serial}: {} (saw {seen:?})\n{}\n{}",
            r.text(),
            cp.log_text(),
            set.logs()
        );
        all.push((serial, name, pubkey, r));
    }
    let new_master = set.master().expect("a master after the failover");
    assert_ne!(
        new_master,
        first_master,
        "the Sentinels promoted the replica\n{}",
        set.logs()
    );
    eprintln!("{saw_unavailable} pledges heard 503 during the failover; new master {new_master}");

    // Every pledge has a certificate for its own name and key.
    let tmp = estuary_tests::util::TempDir::new("sentinel").expect("tmp");
    for (serial, name, pubkey, r) in &all {
        let certs = estuary_proto::pkcs7::decode_certs_only(&r.body).expect("PKCS#7");
        let leaf = estuary_proto::cert::CertSummary::from_der(&certs[0]).expect("leaf");
        assert_eq!(leaf.dns_names(), std::slice::from_ref(name), "{serial}");
        let leaf_pem = tmp.path().join("leaf.pem");
        std::fs::write(&leaf_pem, estuary_proto::pem::encode_certs(&certs[..1])).expect("write");
        let leaf_pub = sh(std::process::Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&leaf_pem));
        assert_eq!(leaf_pub.trim(), pubkey.trim(), "{serial}: leaf key");
    }

    // The control plane found the new master by itself, and left no lock there.
    let log = cp.log_text();
    assert!(
        log.contains(&new_master.to_string()),
        "the control plane never named the new master {new_master}:\n{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let locks = set
            .cli(new_master, &["--scan", "--pattern", "estuary:lock:*"])
            .expect("scan");
        if locks.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "locks left on the new master: {locks}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!log.contains("panicked"), "{log}");
}
