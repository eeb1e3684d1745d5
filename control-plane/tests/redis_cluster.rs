//! Redis Cluster (issue 17): a control plane whose `redis.url` is `redis+cluster://…` enrols
//! through a real cluster of three masters with one replica each. The test SIGKILLs the master
//! that holds an in-flight enrolment's keys while more pledges enrol; the replica takes over,
//! the control plane answers 503 + Retry-After meanwhile and recovers by itself (no restart).
//! Every pledge ends with a certificate for its own name and key, no lock is left on any
//! master, a cached certificate is served again after the failover, and the per-device order
//! limit (a Lua script over two keys) and the DNS ledger and its sweeper (another script, a
//! `MULTI`, and the move of an earlier version's ledger) work on the cluster.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use estuary_tests::redis::ClusterSet;
use sha2::{Digest, Sha256};

const BEFORE: usize = 3;
const DURING: usize = 9;
const PLEDGE_WITHIN: Duration = Duration::from_secs(60);
const PREFIX: &str = "estuary";
/// `acme.order_timeout_s`: short, so that a DNS ledger note whose removal could not be noted
/// during the failover is due for the sweeper (`order_timeout_s` + 10 s after its publish)
/// within the test.
const ORDER_TIMEOUT_S: u64 = 8;
/// The DNS ledger and, in versions before hash tags, its untagged key (store.rs).
const LEDGER: &str = "estuary:dns:{ledger}";
const OLD_LEDGER: &str = "estuary:dns:ledger";

/// `<prefix>:<kind>:{<sha256(csr)>}` (store.rs).
fn csr_key(kind: &str, csr_der: &[u8]) -> String {
    format!(
        "{PREFIX}:{kind}:{{{}}}",
        hex::encode(Sha256::digest(csr_der))
    )
}

async fn enrol_one(
    cp_url: String,
    idevid: String,
    serial: String,
    csr: Vec<u8>,
) -> (Resp, Vec<u16>) {
    enrol_riding_out(cp_url, idevid, serial, csr, PLEDGE_WITHIN).await
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Waits (up to `within`) until `check` holds.
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match blocking(&mut check) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolments_ride_out_a_cluster_failover() {
    let stack = stack();
    let mut set = blocking(ClusterSet::start).expect("start a Redis Cluster");
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
        (
            "ESTUARY_ENROLL__MAX_ORDERS_PER_DEVICE".to_string(),
            "2".to_string(),
        ),
        ("ESTUARY_DNS__SWEEP_INTERVAL_S".to_string(), "1".to_string()),
        (
            "ESTUARY_ACME__ORDER_TIMEOUT_S".to_string(),
            ORDER_TIMEOUT_S.to_string(),
        ),
    ]);
    let cp = ControlPlane::start(&stack, &o);
    let base = cp.url("");
    let pid = std::process::id();

    let pledge = |i: usize| {
        let serial = format!("CLU-{pid}-{i}");
        let name = format!("{}.{PARENT}", serial.to_ascii_lowercase());
        let (csr, pubkey) = csr_for(&name);
        (serial, name, csr, pubkey)
    };
    let mut all = Vec::new();
    // Before the failover.
    for i in 0..BEFORE {
        let (serial, name, csr, pubkey) = pledge(i);
        let (r, seen) = enrol_one(
            base.clone(),
            cp.idevid_header(&serial),
            serial.clone(),
            csr.clone(),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{serial}: {} (saw {seen:?})\n{}",
            r.text(),
            cp.log_text()
        );
        all.push((serial, name, csr, pubkey, r));
    }

    // The per-device order limit (2 here) on the cluster: a third distinct CSR of one device
    // in the window is refused; the window and its set of counted CSRs share a slot.
    {
        let (serial, name, _, _, _) = &all[0];
        let idevid = cp.idevid_header(serial);
        let (second, _) = csr_for(name);
        let (r, seen) = enrol_one(base.clone(), idevid.clone(), serial.clone(), second).await;
        assert_eq!(r.status, 200, "second CSR: {} (saw {seen:?})", r.text());
        let (third, _) = csr_for(name);
        let r = enroll_at(&base, serial, &idevid, &third).await;
        assert_eq!(r.status, 429, "third CSR: {}", r.text());
        let window = format!("{PREFIX}:orders:{{{name}}}");
        let counted = format!("{PREFIX}:orders-counted:{{{name}}}");
        let at = blocking(|| set.master_of_key(&window)).expect("master of the window");
        assert_eq!(
            blocking(|| set.master_of_key(&counted)).expect("master of the set"),
            at
        );
        let n = blocking(|| set.cli(at, &["SCARD", &counted])).expect("SCARD");
        assert_eq!(n.trim(), "2", "two CSRs counted in the window");
    }

    // Probe CSRs, so that one whose keys live on the master about to die can be sent right
    // after the kill.
    let probes: Vec<_> = (0..12).map(|i| pledge(100 + i)).collect();

    // Pledges enrol while the master holding an in-flight enrolment's keys dies.
    let mut tasks = Vec::new();
    let mut victim: Option<SocketAddr> = None;
    let mut probe = None;
    for i in BEFORE..BEFORE + DURING {
        let (serial, name, csr, pubkey) = pledge(i);
        let idevid = cp.idevid_header(&serial);
        let url = base.clone();
        let s = serial.clone();
        let c = csr.clone();
        tasks.push((
            serial.clone(),
            name,
            csr.clone(),
            pubkey,
            tokio::spawn(async move { enrol_one(url, idevid, s, c).await }),
        ));
        if i == BEFORE + 2 {
            // Its lock (or order) key, as the control plane writes it: wait until it is there.
            let lock = csr_key("lock", &csr);
            let order = csr_key("order", &csr);
            let master = blocking(|| set.master_of_key(&lock)).expect("master of the lock");
            let deadline = Instant::now() + Duration::from_secs(5);
            let in_flight = loop {
                let there =
                    blocking(|| set.cli(master, &["EXISTS", &lock, &order])).expect("EXISTS");
                if there.trim() != "0" {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert!(
                in_flight,
                "{serial}: never saw its lock or order key on {master}\n{}",
                cp.log_text()
            );
            blocking(|| set.kill(master)).expect("kill the master");
            victim = Some(master);
            eprintln!("killed master {master}, which held {lock}");
            // A new enrolment whose keys are on the dead master: told to come back.
            let (serial, name, csr, pubkey) = blocking(|| {
                probes.iter().find(|(_, _, csr, _)| {
                    set.master_of_key(&csr_key("cert", csr))
                        .is_ok_and(|m| m == master)
                })
            })
            .cloned()
            .expect("a probe CSR on the dead master's slots");
            let idevid = cp.idevid_header(&serial);
            let r = enroll_at(&base, &serial, &idevid, &csr).await;
            eprintln!(
                "right after the kill, {serial} heard {} (Retry-After {:?})",
                r.status,
                r.header("retry-after")
            );
            if r.status == 503 {
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
            }
            probe = Some((serial, name, csr, pubkey, idevid, r.status));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let victim = victim.expect("a master was killed");
    let new_master = blocking(|| set.wait_for_failover(victim)).expect("the replica took over");
    eprintln!("replica {new_master} took over from {victim}");

    let (p_serial, p_name, p_csr, p_pubkey, p_idevid, p_first) = probe.expect("the probe");
    let (r, mut seen) = enrol_one(base.clone(), p_idevid, p_serial.clone(), p_csr.clone()).await;
    seen.insert(0, p_first);
    assert_eq!(
        r.status,
        200,
        "{p_serial}: {} (saw {seen:?})\n{}",
        r.text(),
        cp.log_text()
    );
    assert!(
        seen.contains(&503),
        "{p_serial}, whose keys were on the dead master, never heard 503 (saw {seen:?})"
    );
    all.push((p_serial, p_name, p_csr, p_pubkey, r));

    let mut saw_unavailable = 0;
    for (serial, name, csr, pubkey, t) in tasks {
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
        all.push((serial, name, csr, pubkey, r));
    }
    eprintln!("{saw_unavailable} concurrent pledges heard 503 during the failover");

    // Every pledge has a certificate for its own name and key.
    let tmp = estuary_tests::util::TempDir::new("cluster").expect("tmp");
    for (serial, name, _, pubkey, r) in &all {
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

    // A certificate cached on the promoted master is served from the cache again.
    let hits_before = cp.metric("estuary_cache_hits_total").await;
    let mut served_from_new_master = 0;
    for (serial, _, csr, _, first) in &all {
        let cert = csr_key("cert", csr);
        let at = blocking(|| set.master_of_key(&cert)).expect("master of the cert");
        // Only what the promoted master holds (a write just before the kill may not have
        // reached the replica).
        let cached = blocking(|| set.cli(new_master, &["EXISTS", &cert])).expect("EXISTS");
        if at != new_master || cached.trim() != "1" {
            continue;
        }
        let r = cp.enroll(serial, csr).await;
        assert_eq!(r.status, 200, "{serial} again: {}", r.text());
        assert_eq!(r.body, first.body, "{serial}: the same certificate again");
        served_from_new_master += 1;
    }
    assert!(served_from_new_master > 0, "no certificate on {new_master}");
    let hits = cp.metric("estuary_cache_hits_total").await - hits_before;
    assert_eq!(
        hits, served_from_new_master as f64,
        "cache hits after the failover"
    );

    // No lock is left on any master.
    eventually("locks left on a master", Duration::from_secs(15), || {
        for m in set.masters().map_err(|e| e.to_string())? {
            let locks = set
                .cli(m, &["--scan", "--pattern", &format!("{PREFIX}:lock:*")])
                .map_err(|e| e.to_string())?;
            if !locks.trim().is_empty() {
                return Err(format!("{m}: {locks}"));
            }
        }
        Ok(())
    })
    .await;

    // The DNS ledger empties after the enrolments; a note in an earlier version's untagged
    // ledger (another slot, maybe another master) is moved and swept too. A removal that could
    // not be noted while the ledger's master was down leaves its note until it is due
    // (ORDER_TIMEOUT_S + 10 s after the publish), when the sweeper removes it.
    let ledger_at = blocking(|| set.master_of_key(LEDGER)).expect("master of the ledger");
    let old_at = blocking(|| set.master_of_key(OLD_LEDGER)).expect("master of the old ledger");
    let due = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 1;
    let leftover = format!("_acme-challenge.old-{pid}.{PARENT} value-old");
    blocking(|| set.cli(old_at, &["ZADD", OLD_LEDGER, &due.to_string(), &leftover]))
        .expect("plant an old ledger note");
    let within = Duration::from_secs(ORDER_TIMEOUT_S + 10 + 12);
    eventually("the DNS ledger did not empty", within, || {
        let new = set
            .cli(ledger_at, &["ZRANGE", LEDGER, "0", "-1"])
            .map_err(|e| e.to_string())?;
        let old = set
            .cli(old_at, &["ZRANGE", OLD_LEDGER, "0", "-1"])
            .map_err(|e| e.to_string())?;
        if new.trim().is_empty() && old.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("{LEDGER}: {new:?}; {OLD_LEDGER}: {old:?}"))
        }
    })
    .await;
    // The ledger empties when Redis applies the sweeper's ZREM; the sweeper counts the note
    // once Redis has answered, which on a loaded machine can be a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let swept = cp.metric("estuary_dns_swept_total").await;
        if swept >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old note was not swept ({swept})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let log = cp.log_text();
    assert!(!log.contains("panicked"), "{log}");
    drop(set);
}

/// The control plane starts while no node of its cluster answers: `/healthz` is 200, `/readyz`
/// 503, and an enrolment hears 503 + Retry-After within the deadlines (connect 1.5 s, command
/// 2 s), each time (a failed connect is tried again by the next command).
#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_starts_while_its_cluster_is_down() {
    let stack = stack();
    let down: Vec<String> = (0..2)
        .map(|_| {
            let port = estuary_tests::util::free_port().expect("port");
            format!("127.0.0.1:{port}")
        })
        .collect();
    let mut o = CpOptions::default();
    o.extra_env.extend([
        (
            "ESTUARY_REDIS__URL".to_string(),
            format!("\"redis+cluster://{}/\"", down.join(",")),
        ),
        (
            "ESTUARY_ENROLL__UNAVAILABLE_RETRY_AFTER_S".to_string(),
            "1".to_string(),
        ),
    ]);
    let cp = ControlPlane::start(&stack, &o);
    let health = http(&cp.url("/healthz"), "GET", &[], Vec::new()).await;
    assert_eq!(health.status, 200, "{}", cp.log_text());
    let ready = http(&cp.url("/readyz"), "GET", &[], Vec::new()).await;
    assert_eq!(ready.status, 503, "{}", cp.log_text());
    let serial = format!("CLD-{}", std::process::id());
    let (csr, _) = csr_for(&format!("{}.{PARENT}", serial.to_ascii_lowercase()));
    for _ in 0..2 {
        let started = Instant::now();
        let r = cp.enroll(&serial, &csr).await;
        assert_eq!(r.status, 503, "{}\n{}", r.text(), cp.log_text());
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "503 after {:?}",
            started.elapsed()
        );
    }
    let log = cp.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
