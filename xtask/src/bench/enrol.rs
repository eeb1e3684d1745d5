//! Enrolments/s through Envoy, identical-CSR re-posts (kept-alive and new TLS connections),
//! and the bare instant-acme baseline on the same Pebble and BIND. Each pledge talks EST through
//! the pledge library (`estuary_pledge::transport::EstSession`); this file only decides what to
//! post, how often, on which connection, and what counts as right.
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use estuary_control_plane::config::dns::{DnsConfig, TsigAlgorithmName, TsigSecret};
use estuary_control_plane::ra::dns::update::{DnsUpdater, TxtRecord};
use estuary_pledge::transport::{
    client_config, ConnectionUse, CsrBody, EstClient, EstSession, Identity, Reply,
};
use estuary_pledge::Exchange;
use estuary_proto::est::EstOperation;
use estuary_tests::dev_stack::DevStack;
use estuary_tests::pki::Ca;
use estuary_tests::stack::DEV_PARENT;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde_json::{json, Value};

use super::opts::Opts;
use super::probe::{control_plane_pids, counters, diff, rss_hwm, CpuProbe, RedisCli};
use super::report::{latency_stats, ms, Report};

/// A P-256 key and a DER CSR for `name` (subject CN and DNS SAN = name).
pub(super) fn make_csr(name: &str) -> anyhow::Result<(rcgen::KeyPair, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// One simulated device: its IDevID's session with the EST server (estuary-pledge) and its CSR.
pub(super) struct Pledge {
    pub(super) name: String,
    /// One client configuration per pledge, kept for all its connections, as a device would.
    session: EstSession,
    csr: CsrBody,
    /// The first 200 answer's body, to compare the cached ones with.
    issued: Option<Vec<u8>>,
}

/// A limit on one request, its connection included; an enrolment gives up after 180 s anyway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);

/// One POST of the pledge's CSR to `simpleenroll`, on its kept-alive connection or on a new TLS
/// connection.
pub(super) async fn post_csr(p: &mut Pledge, how: ConnectionUse) -> anyhow::Result<Reply> {
    let reply = p
        .session
        .post_csr(Exchange::Enroll, EstOperation::SimpleEnroll, &p.csr, how)
        .await?;
    Ok(reply)
}

/// One `GET csrattrs` as the pledge, on a new TLS connection; the HTTP status.
pub(super) async fn get_csrattrs(p: &mut Pledge) -> anyhow::Result<u16> {
    let reply = p
        .session
        .get(
            Exchange::CsrAttrs,
            EstOperation::CsrAttrs,
            ConnectionUse::New,
        )
        .await?;
    Ok(reply.answer.status)
}

/// Outcome of one pledge's enrolment.
pub(super) struct Enrolled {
    pub(super) latency: Duration,
    pub(super) accepted_202: u32,
}

/// Enrols until 200, following 202 and 503 Retry-After on the kept-alive connection; transport
/// errors are retried (3 times).
pub(super) async fn enrol(p: &mut Pledge) -> anyhow::Result<Enrolled> {
    let start = Instant::now();
    let mut accepted_202 = 0;
    let mut transport_errors = 0;
    loop {
        if start.elapsed() > Duration::from_secs(180) {
            bail!("{}: no certificate within 180 s", p.name);
        }
        let answer = post_csr(p, ConnectionUse::KeepAlive)
            .await
            .map(|r| r.answer);
        match answer {
            Ok(answer) if answer.status == 200 => {
                p.issued = Some(answer.body);
                return Ok(Enrolled {
                    latency: start.elapsed(),
                    accepted_202,
                });
            }
            // 503 + Retry-After is "come back later" too (RFC 7030 §4.2.3, e.g. the CA's
            // deliberate badNonce answers outlasting the retries): counted with the 202s.
            Ok(answer) if matches!(answer.status, 202 | 503) => {
                accepted_202 += 1;
                let wait = answer
                    .retry_after_delay(SystemTime::now())
                    .with_context(|| {
                        format!("{}: {} without Retry-After", p.name, answer.status)
                    })?;
                tokio::time::sleep(wait).await;
            }
            Ok(answer) => {
                bail!(
                    "{}: HTTP {}: {}",
                    p.name,
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                );
            }
            Err(e) if transport_errors < 3 => {
                transport_errors += 1;
                eprintln!("xtask: {}: {e:#}; retrying", p.name);
            }
            Err(e) => return Err(e.context(format!("{}: enrolment", p.name))),
        }
    }
}

/// Runs `f(i)` for i in 0..n with `workers` tasks; results in index order.
pub(super) async fn pool<R, F, Fut>(n: usize, workers: usize, f: F) -> anyhow::Result<Vec<R>>
where
    R: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.min(n).max(1) {
        let f = Arc::clone(&f);
        let next = Arc::clone(&next);
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                out.push((i, f(i).await));
            }
            out
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

pub(super) async fn enrol_bench(
    dev: &DevStack,
    work: &Path,
    opts: &Opts,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Envoy's EST base, https://127.0.0.1:<port>/.well-known/est.
    let est_url = dev.est_url();
    let ca = dev.pki.server_ca.cert_path.clone();
    let run_id = format!(
        "{:06x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() & 0xff_ffff)
            .unwrap_or(0)
    );

    // Warm-up: the control plane creates its ACME account on the first enrolment; that is
    // not what is measured.
    eprintln!("xtask: warm-up enrolment (ACME account creation) …");
    let mut warm = make_pledge(
        &dev.pki.manufacturer,
        work,
        &est_url,
        &ca,
        &format!("WARM-{run_id}"),
    )?;
    enrol(&mut warm).await.context("warm-up enrolment")?;

    eprintln!("xtask: minting {} IDevIDs and CSRs …", opts.pledges);
    let pledges = mint(dev, work, &format!("BENCH-{run_id}"), opts.pledges)?;

    // --- first enrolments (cache misses) ---
    eprintln!(
        "xtask: {} enrolments at {} concurrent through Envoy …",
        opts.pledges, opts.concurrency
    );
    let probe = CpuProbe::find(dev);
    let redis = RedisCli::of(dev);
    let cp_pid = control_plane_pids(dev).first().copied();
    let rss_before = cp_pid.and_then(rss_hwm).map(|(rss, _)| rss);
    let c0 = counters(dev)?;
    let cmds0 = redis.commands_processed()?;
    let cpu0 = probe.snapshot();
    let (miss_wall, miss_ms, accepted) = enrol_all(&pledges, opts.concurrency).await?;
    let (miss_cpu, miss_cpu_json) = probe.since(&cpu0);
    let cp_hwm = cp_pid.and_then(rss_hwm).map(|(_, hwm)| hwm);
    // The DNS-01 records are removed after the answers (a deletion waits up to a second for a
    // message to ride in): let those UPDATEs land before counting, so that they are this
    // phase's and not the re-posts'.
    let c1 = settled_counters(dev).await?;
    let cmds1 = redis.commands_processed()?;
    let miss_rate = opts.pledges as f64 / miss_wall.as_secs_f64();
    let miss_lat = latency_stats(miss_ms);
    let d1 = diff(c0, c1);

    // --- identical CSR again, kept-alive connection (cache hits) ---
    eprintln!(
        "xtask: identical-CSR re-posts ({} per pledge) …",
        opts.repeats
    );
    let n_hits = opts.pledges * opts.repeats;
    let cpu1 = probe.snapshot();
    let t1 = Instant::now();
    let hits = {
        let pledges = Arc::clone(&pledges);
        let n = opts.pledges;
        pool(n_hits, opts.concurrency, move |i| {
            let pledges = Arc::clone(&pledges);
            async move { repost(&pledges[i % n], ConnectionUse::KeepAlive).await }
        })
        .await?
    };
    let hit_wall = t1.elapsed();
    let (hit_cpu, hit_cpu_json) = probe.since(&cpu1);
    let c2 = counters(dev)?;
    let hit_ms: Vec<f64> = hits.into_iter().collect::<anyhow::Result<_>>()?;
    let hit_rate = n_hits as f64 / hit_wall.as_secs_f64();
    let hit_lat = latency_stats(hit_ms);
    let d2 = diff(c1, c2);

    // --- identical CSR again, a new TLS connection per request ---
    eprintln!("xtask: identical-CSR re-posts on new TLS connections …");
    let cpu2 = probe.snapshot();
    let t2 = Instant::now();
    let fresh = {
        let pledges = Arc::clone(&pledges);
        pool(opts.pledges, opts.concurrency, move |i| {
            let pledges = Arc::clone(&pledges);
            async move { repost(&pledges[i], ConnectionUse::New).await }
        })
        .await?
    };
    let fresh_wall = t2.elapsed();
    let (fresh_cpu, fresh_cpu_json) = probe.since(&cpu2);
    let fresh_ms: Vec<f64> = fresh.into_iter().collect::<anyhow::Result<_>>()?;
    let fresh_rate = opts.pledges as f64 / fresh_wall.as_secs_f64();
    let fresh_lat = latency_stats(fresh_ms);
    drop(pledges);

    // --- the bare instant-acme loop on the same Pebble and BIND ---
    eprintln!(
        "xtask: bare instant-acme loop: {} certificates at {} concurrent …",
        opts.pledges, opts.concurrency
    );
    let stack = &dev.stack;
    let cpu3 = probe.snapshot();
    let mut base = baseline(
        dev,
        &stack.pebble.directory_url,
        &stack.pebble.tls_ca_pem,
        &format!("{run_id}a"),
        opts,
    )
    .await;
    let mut fresh_pebble_note = "";
    let _fresh_pebble;
    if let Err(e) = &base {
        // Pebble 2.4's in-memory store can deadlock under concurrent orders (seen here: every
        // handler waiting on its RWMutex). Measure the baseline on a fresh Pebble then, and say so.
        eprintln!("xtask: the baseline on the dev stack's Pebble failed ({e:#}); retrying on a fresh Pebble");
        let pebble = estuary_tests::pebble::Pebble::start(stack.bind.addr)?;
        base = baseline(
            dev,
            &pebble.directory_url,
            &pebble.tls_ca_pem,
            &format!("{run_id}b"),
            opts,
        )
        .await;
        _fresh_pebble = pebble;
        fresh_pebble_note = " [on a FRESH Pebble: the dev stack's Pebble stalled]";
    }
    let base = base?;
    let (base_cpu, base_cpu_json) = probe.since(&cpu3);

    let p = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let dns_per = d1.dns_updates / d1.issued.max(1.0);
    // The INFO that read the second count is one of them.
    let redis_per = cmds1.saturating_sub(cmds0).saturating_sub(1) as f64 / d1.issued.max(1.0);
    let at_edge = (n_hits as f64 - d2.cached).max(0.0);
    report.row(
        "enrolments/s through Envoy (cache miss)",
        format!("{miss_rate:.1}/s"),
        format!(
            "{} pledges at {}; p50 {:.0} ms, p99 {:.0} ms; {accepted} answers were 202 or 503",
            opts.pledges,
            opts.concurrency,
            p(&miss_lat, "p50_ms"),
            p(&miss_lat, "p99_ms")
        ),
    );
    report.row(
        "bare instant-acme issuance/s",
        format!("{:.1}/s", base.rate),
        format!(
            "p50 {:.0} ms, p99 {:.0} ms; {} DNS UPDATEs, {} order retries{fresh_pebble_note}",
            p(&base.latency, "p50_ms"),
            p(&base.latency, "p99_ms"),
            base.dns_updates,
            base.retries
        ),
    );
    report.row("  during the enrolments", "", miss_cpu);
    report.row("  during the bare loop", "", base_cpu);
    report.row(
        "enrolments / bare loop",
        format!("{:.2}x", miss_rate / base.rate),
        "goal >= 0.80x",
    );
    report.row(
        "identical CSR, kept-alive conn (cache hit)",
        format!("{hit_rate:.0}/s"),
        format!(
            "{:.0}x the miss rate (goal >= 20x); p50 {:.2} ms, p99 {:.2} ms (goal < 10 ms)",
            hit_rate / miss_rate,
            p(&hit_lat, "p50_ms"),
            p(&hit_lat, "p99_ms")
        ),
    );
    report.row(
        "  answered by the edge (enroll_answer_cache)",
        format!("{at_edge:.0} of {n_hits}"),
        format!(
            "the control plane counted {:.0} cache hits: the rest never reached it",
            d2.cached
        ),
    );
    report.row("  during the kept-alive re-posts", "", hit_cpu);
    report.row(
        "identical CSR, new TLS conn each (cache hit)",
        format!("{fresh_rate:.0}/s"),
        format!(
            "{:.0}x the miss rate; p50 {:.2} ms, p99 {:.2} ms",
            fresh_rate / miss_rate,
            p(&fresh_lat, "p50_ms"),
            p(&fresh_lat, "p99_ms")
        ),
    );
    report.row("  during the new-connection re-posts", "", fresh_cpu);
    report.row(
        "DNS UPDATE messages per enrolment",
        format!("{dns_per:.3}"),
        format!(
            "{} UPDATEs / {} issued (metrics: {} cached, {} pending, {} failed, {} valid orders)",
            d1.dns_updates, d1.issued, d1.cached, d1.pending, d1.failed, d1.orders_valid
        ),
    );
    report.row(
        "Redis commands per enrolment",
        format!("{redis_per:.1}"),
        format!(
            "INFO stats total_commands_processed over the first enrolments / {} issued (background work of the control plane included)",
            d1.issued
        ),
    );
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let (rss_row, rss_json) = match (rss_before, cp_hwm) {
        (Some(before), Some(peak)) => (
            format!(
                "VmRSS {:.1} MiB before, VmHWM {:.1} MiB after (the peak since start)",
                mib(before),
                mib(peak)
            ),
            json!({"rss_before_bytes": before, "peak_bytes": peak}),
        ),
        _ => ("not found in /proc".to_string(), Value::Null),
    };
    report.row(
        format!("control plane peak RSS, {} enrolments", opts.pledges),
        cp_hwm.map_or("?".to_string(), |b| format!("{:.1} MiB", mib(b))),
        rss_row,
    );
    report.json["enrolment"] = json!({
        "miss": {
            "rate_per_s": miss_rate, "wall_s": miss_wall.as_secs_f64(), "latency": miss_lat,
            "answers_202": accepted, "cpu_pct": miss_cpu_json,
            "metrics_delta": {"issued": d1.issued, "cached": d1.cached, "pending": d1.pending,
                "failed": d1.failed, "dns_updates": d1.dns_updates, "orders_valid": d1.orders_valid},
        },
        "baseline_instant_acme": {
            "rate_per_s": base.rate, "wall_s": base.wall_s, "latency": base.latency,
            "dns_updates": base.dns_updates, "order_retries": base.retries,
            "fresh_pebble": !fresh_pebble_note.is_empty(), "cpu_pct": base_cpu_json,
        },
        "miss_over_baseline": miss_rate / base.rate,
        "hit_keepalive": {
            "requests": n_hits, "rate_per_s": hit_rate, "latency": hit_lat, "cpu_pct": hit_cpu_json,
            "over_miss_rate": hit_rate / miss_rate,
            "metrics_delta": {"cached": d2.cached, "issued": d2.issued, "dns_updates": d2.dns_updates},
        },
        "hit_new_connection": {
            "requests": opts.pledges, "rate_per_s": fresh_rate, "latency": fresh_lat, "cpu_pct": fresh_cpu_json,
            "over_miss_rate": fresh_rate / miss_rate,
        },
        "dns_updates_per_enrolment": dns_per,
        "redis_commands_per_enrolment": redis_per,
        "control_plane_memory": rss_json,
        "hit_answered_at_edge": at_edge,
    });
    if d2.issued > 0.0 || d2.dns_updates > 0.0 {
        bail!(
            "identical CSRs caused {} issuances and {} DNS UPDATEs: not cache hits",
            d2.issued,
            d2.dns_updates
        );
    }
    Ok(())
}

pub(super) type Pledges = Arc<Vec<tokio::sync::Mutex<Pledge>>>;

/// `n` devices, each with a fresh IDevID (serial `<prefix>-<i>`) and CSR, enrolling through
/// the stack's Envoy.
pub(super) fn mint(dev: &DevStack, work: &Path, prefix: &str, n: usize) -> anyhow::Result<Pledges> {
    let est_url = dev.est_url();
    let ca = dev.pki.server_ca.cert_path.clone();
    let mut pledges = Vec::with_capacity(n);
    for i in 0..n {
        pledges.push(tokio::sync::Mutex::new(make_pledge(
            &dev.pki.manufacturer,
            work,
            &est_url,
            &ca,
            &format!("{prefix}-{i:04}"),
        )?));
    }
    Ok(Arc::new(pledges))
}

/// Every pledge enrols once, `concurrency` at a time: the wall time, each pledge's latency in
/// ms, and how many 202/503 answers they followed.
pub(super) async fn enrol_all(
    pledges: &Pledges,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<f64>, u32)> {
    let t = Instant::now();
    let results = {
        let pledges = Arc::clone(pledges);
        pool(pledges.len(), concurrency, move |i| {
            let pledges = Arc::clone(&pledges);
            async move {
                let mut p = pledges[i].lock().await;
                enrol(&mut p).await
            }
        })
        .await?
    };
    let wall = t.elapsed();
    let mut lat = Vec::new();
    let mut retried = 0;
    for r in results {
        let e = r?;
        lat.push(ms(e.latency));
        retried += e.accepted_202;
    }
    Ok((wall, lat, retried))
}

/// The control planes' counters once `estuary_dns_updates_total` has not moved for 1.5 s (at
/// most 6 s): the removals that follow the answers have been sent.
async fn settled_counters(dev: &DevStack) -> anyhow::Result<super::probe::Counters> {
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = counters(dev)?;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = counters(dev)?;
        if now.dns_updates == last.dns_updates || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// "How cost grows", one level: after a warm-up enrolment (the ACME account), `opts.pledges`
/// new pledges enrol at `level` concurrent. Its rows, and its JSON (rate, latency, CPU).
/// Run on a fresh stack per level ([`super`]): Pebble 2.4's in-memory store has been seen to
/// wedge after some hundreds of concurrent orders, and each level should start alike.
pub(super) async fn level_bench(
    dev: &DevStack,
    work: &Path,
    level: usize,
    opts: &Opts,
    report: &mut Report,
) -> anyhow::Result<Value> {
    let run_id = format!(
        "{:06x}",
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() & 0xff_ffff)
            .unwrap_or(0)
    );
    let warm = mint(dev, work, &format!("W{level}-{run_id}"), 1)?;
    enrol_all(&warm, 1).await.context("warm-up enrolment")?;
    eprintln!(
        "xtask: {} new pledges at {level} concurrent …",
        opts.pledges
    );
    let pledges = mint(dev, work, &format!("L{level}-{run_id}"), opts.pledges)?;
    let probe = CpuProbe::find(dev);
    let cpu = probe.snapshot();
    let (wall, lat, retried) = enrol_all(&pledges, level).await?;
    let (cpu_row, cpu_json) = probe.since(&cpu);
    let rate = opts.pledges as f64 / wall.as_secs_f64();
    let stats = latency_stats(lat);
    report.row(
        format!("enrolments/s at {level} concurrent"),
        format!("{rate:.1}/s"),
        format!(
            "{} new pledges, fresh stack; p50 {:.0} ms, p99 {:.0} ms; {retried} answers were 202 or 503",
            opts.pledges,
            stats["p50_ms"].as_f64().unwrap_or(f64::NAN),
            stats["p99_ms"].as_f64().unwrap_or(f64::NAN)
        ),
    );
    report.row(format!("  during {level} concurrent"), "", cpu_row);
    Ok(json!({
        "concurrency": level, "rate_per_s": rate, "latency": stats,
        "answers_202_or_503": retried, "cpu_pct": cpu_json,
    }))
}

/// The verdict row over the levels' rates: the highest concurrency against the best rate.
pub(super) fn levels_verdict(rows: &[Value], report: &mut Report) {
    let rates: Vec<f64> = rows
        .iter()
        .filter_map(|r| r["rate_per_s"].as_f64())
        .collect();
    if let (Some(first), Some(best), Some(last)) = (
        rates.first(),
        rates.iter().copied().reduce(f64::max),
        rates.last(),
    ) {
        report.row(
            "  highest concurrency / best rate",
            format!("{:.2}x", last / best),
            format!(
                "{:.2}x the lowest level's rate; below ~0.9x would be a collapse under load, not a plateau",
                last / first
            ),
        );
    }
}

/// A device with a fresh IDevID (serial `serial`) and a CSR for its name, enrolling at `est_url`.
pub(super) fn make_pledge(
    ca: &Ca,
    dir: &Path,
    est_url: &str,
    server_ca: &Path,
    serial: &str,
) -> anyhow::Result<Pledge> {
    let id = ca.issue_idevid(dir, serial, serial)?;
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    let (_key, der) = make_csr(&name)?;
    let identity = Identity {
        cert: id.cert_path.clone(),
        key: id.key_path.clone(),
        extra_chain: Vec::new(),
    };
    let client = EstClient::new(
        est_url,
        None,
        None,
        client_config(server_ca, Some(&identity))?,
        REQUEST_TIMEOUT,
    )?;
    Ok(Pledge {
        name,
        session: EstSession::new(client),
        csr: CsrBody::new(&der),
        issued: None,
    })
}

/// Posts the pledge's CSR once more; expects 200 with the certificate of the first enrolment.
/// Returns the request's time in ms (with the TLS handshake when `how` is a new connection).
async fn repost(p: &tokio::sync::Mutex<Pledge>, how: ConnectionUse) -> anyhow::Result<f64> {
    let mut p = p.lock().await;
    let reply = post_csr(&mut p, how).await?;
    let took = ms(reply.elapsed);
    let (status, body) = (reply.answer.status, reply.answer.body);
    if status != 200 {
        bail!(
            "{}: identical CSR got HTTP {status}: {}",
            p.name,
            String::from_utf8_lossy(&body).trim()
        );
    }
    if p.issued.as_ref() != Some(&body) {
        bail!(
            "{}: identical CSR got a different answer than the first time",
            p.name
        );
    }
    Ok(took)
}

struct Baseline {
    rate: f64,
    wall_s: f64,
    latency: Value,
    dns_updates: u64,
    retries: u64,
}

/// The bare loop: instant-acme + RFC 2136 through the control plane's own `DnsUpdater`, one
/// order per certificate, the control plane's retry policy, no Redis, no Envoy, no EST.
async fn baseline(
    dev: &DevStack,
    directory_url: &str,
    tls_ca: &Path,
    run_id: &str,
    opts: &Opts,
) -> anyhow::Result<Baseline> {
    let stack = &dev.stack;
    let updates = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&updates);
    let dns = DnsUpdater::new(DnsConfig {
        server: stack.bind.addr,
        zone: stack.bind.zone.clone(),
        key_name: stack.bind.key_name.clone(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret: TsigSecret::from_base64(&stack.bind.secret_b64)
            .map_err(|_| anyhow::anyhow!("the BIND key is not base64"))?,
        timeout_ms: 2000,
        ttl: 60,
        sweep_interval_s: 30,
    })?
    .with_update_counter(Arc::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    let (account, _creds) = Account::builder_with_root(tls_ca)?
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.to_string(),
            None,
        )
        .await?;
    let mut csrs = Vec::with_capacity(opts.pledges);
    for i in 0..opts.pledges {
        let name = format!("base-{run_id}-{i:04}.{DEV_PARENT}");
        let (_k, der) = make_csr(&name)?;
        csrs.push((name, der));
    }
    let shared = Arc::new((account, dns, csrs));
    let retries = Arc::new(AtomicU64::new(0));
    // Set when one issuance took longer than any healthy one could: the CA has stalled, and
    // the remaining issuances are skipped instead of each waiting out its own timeout.
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let results = {
        let shared = Arc::clone(&shared);
        let retries = Arc::clone(&retries);
        let stalled = Arc::clone(&stalled);
        pool(opts.pledges, opts.concurrency, move |i| {
            let shared = Arc::clone(&shared);
            let retries = Arc::clone(&retries);
            let stalled = Arc::clone(&stalled);
            async move {
                let (account, dns, csrs) = &*shared;
                let (name, der) = &csrs[i];
                let start = Instant::now();
                let mut attempt = 1;
                loop {
                    if stalled.load(Ordering::Relaxed) {
                        bail!("skipped: the ACME CA stalled");
                    }
                    let once = tokio::time::timeout(
                        Duration::from_secs(60),
                        issue_bare(account, dns, name, der),
                    )
                    .await;
                    let Ok(once) = once else {
                        stalled.store(true, Ordering::Relaxed);
                        bail!("{name}: no certificate within 60 s: the ACME CA stalled");
                    };
                    match once {
                        Ok(()) => return Ok(ms(start.elapsed())),
                        Err(e) if attempt < 3 => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            eprintln!("xtask: baseline {name}: {e:#}; new order");
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                            attempt += 1;
                        }
                        Err(e) => return Err(e.context(format!("baseline {name}"))),
                    }
                }
            }
        })
        .await?
    };
    let wall = t0.elapsed();
    let lat: Vec<f64> = results.into_iter().collect::<anyhow::Result<_>>()?;
    Ok(Baseline {
        rate: opts.pledges as f64 / wall.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        latency: latency_stats(lat),
        dns_updates: updates.load(Ordering::Relaxed),
        retries: retries.load(Ordering::Relaxed),
    })
}

async fn issue_bare(
    account: &Account,
    dns: &DnsUpdater,
    name: &str,
    csr_der: &[u8],
) -> anyhow::Result<()> {
    // The control plane's policy (acme.rs `retry_policy`, poll_initial_ms = 150 in the dev config).
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(150))
        .backoff(1.5)
        .timeout(Duration::from_secs(30));
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut records = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a?;
            if a.status != AuthorizationStatus::Pending {
                continue;
            }
            let ident = a.identifier().to_string();
            let mut ch = a
                .challenge(ChallengeType::Dns01)
                .with_context(|| format!("no dns-01 challenge for {ident}"))?;
            let rec = TxtRecord::new(
                format!("_acme-challenge.{ident}"),
                ch.key_authorization().dns_value(),
            );
            dns.publish(std::slice::from_ref(&rec)).await?;
            records.push(rec);
            ch.set_ready().await?;
        }
    }
    let ready = order.poll_ready(&retry).await;
    let cleanup = async {
        if let Err(e) = dns.remove(&records).await {
            eprintln!("xtask: baseline: removing {name}'s record: {e}");
        }
    };
    let status = match ready {
        Ok(s) => s,
        Err(e) => {
            cleanup.await;
            return Err(e.into());
        }
    };
    if status != OrderStatus::Ready {
        cleanup.await;
        bail!("order for {name} is {status:?}");
    }
    // As the control plane does: remove the record while the CA finalizes.
    let (issued, ()) = tokio::join!(
        async {
            order.finalize_csr(csr_der).await?;
            order.poll_certificate(&retry).await
        },
        cleanup
    );
    let chain = issued?;
    if !chain.contains("BEGIN CERTIFICATE") {
        bail!("no certificate for {name}");
    }
    Ok(())
}
