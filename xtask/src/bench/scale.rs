//! `cargo xtask bench --scale`: what each cost is per device as the numbers grow.
//!
//! 1. **Replicas** — for R = 1..=`--replicas`, a FRESH dev stack with R control-plane replicas
//!    behind the one Envoy (fresh BIND, Redis and Pebble each time, so no run inherits the
//!    previous one's orders or cache): `--pledges` distinct pledges enrol at `--concurrency`
//!    through Envoy, as in the plain bench. Reported: enrolments/s, p50/p99, and the CPU of
//!    Pebble next to the control planes' (the CA every replica shares).
//! 2. **Redis per cached certificate** — in each of those runs, `INFO memory` `used_memory` before
//!    and after the enrolments, divided by the new certificate keys (`*cert*`, so both the
//!    `<prefix>:cert:<sha>` and hash-tagged layouts match); `MEMORY USAGE` of a few of them is
//!    the certificate entry alone (the delta also holds the other keys an enrolment leaves).
//! 3. **Pending orders** — one control plane on the strict test CA (`tests/src/acme_ca.rs`)
//!    with per-name DNS-01 (`acme.preauthorize = false`) and `Fault::NeverValidate`, so every
//!    order stays pending; `enroll.budget_ms` 200 so each device is answered 202 while its order
//!    goes on, `acme.order_timeout_s` 900 and `enroll.max_inflight_orders` above the count so none
//!    is refused or given up. VmRSS/VmHWM of the control plane from /proc before and with
//!    `--pending` orders in flight.
//!
//!    In the 1-replica stack, afterwards: `--edge-devices` distinct devices each ask
//!    `GET csrattrs` through the real Envoy once; Envoy's VmRSS before and after.
//! 4. **The filter's csrattrs cache** — `filter/tests/wasm_scale.rs` (ignored test) on the
//!    wasmtime host: `--devices` distinct devices each get their csrattrs answer cached in
//!    proxy-wasm shared data; its keys, bytes and the VM's linear memory. wasmtime, not Envoy.
//!
//! Writes `target/bench/scale.json`.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use estuary_pledge::transport::ConnectionUse;
use estuary_tests::acme_ca::Fault;
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::stack::CpOptions;
use estuary_tests::util::TempDir;
use serde_json::{json, Value};
use tokio::runtime::Runtime;

use super::enrol::{enrol, enrol_all, get_csrattrs, make_pledge, mint, pool, post_csr, Pledge};
use super::opts::Opts;
use super::probe::{
    control_plane_pids, count_kinds, counters, diff, pid_by_cmdline, rss_hwm, CpuProbe, RedisCli,
};
use super::report::{latency_stats, Report};

/// How many certificate keys `MEMORY USAGE` looks at.
const SAMPLED_KEYS: usize = 5;
/// `enroll.budget_ms` of the pending-orders stack: every device is answered 202 quickly.
const PENDING_BUDGET_MS: u64 = 200;

/// Runs the `--scale` phases; each fills `report` (rows and `report.json`).
pub(super) fn scale_bench(
    rt: &Runtime,
    cp_bin: &Path,
    filter: &Path,
    opts: &Opts,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for replicas in 1..=opts.scale_replicas {
        eprintln!("xtask: scale: a fresh dev stack with {replicas} control-plane replica(s) …");
        let dev = DevStack::start(
            &DevStackOptions {
                replicas,
                ..DevStackOptions::default()
            },
            cp_bin,
            filter,
            None,
        )?;
        let work = TempDir::new("bench-scale")?;
        let run = rt.block_on(replica_run(&dev, work.path(), replicas, opts))?;
        replica_rows(&run, opts, report);
        runs.push(run);
        // Kept as each run ends, so a later failure still leaves it in scale.json.
        report.json["replicas"] = Value::Array(runs.clone());
        if replicas == 1 {
            eprintln!(
                "xtask: scale: {} distinct devices ask csrattrs through Envoy …",
                opts.scale_edge_devices
            );
            let edge = rt.block_on(envoy_csrattrs(&dev, work.path(), opts))?;
            envoy_rows(&edge, report);
            report.json["envoy_csrattrs"] = edge;
        }
    }
    let rate = |i: usize| {
        runs.get(i).map_or(f64::NAN, |r: &Value| {
            r["rate_per_s"].as_f64().unwrap_or(f64::NAN)
        })
    };
    if runs.len() > 1 {
        let gain = rate(runs.len() - 1) / rate(0);
        report.row(
            format!("enrolments/s, {} replicas / 1", runs.len()),
            format!("{gain:.2}x"),
            if gain < 1.25 {
                "more replicas do not raise the rate: the bound is outside the control planes (the CA they share: see Pebble's CPU and the orders it serialises)"
            } else {
                "the rate grows with replicas"
            },
        );
    }

    eprintln!(
        "xtask: scale: {} pending ACME orders on one control plane …",
        opts.scale_pending
    );
    let pending = pending_orders(rt, cp_bin, filter, opts)?;
    pending_rows(&pending, report);
    report.json["pending_orders"] = pending;

    eprintln!(
        "xtask: scale: the filter's csrattrs cache with {} devices (wasmtime host) …",
        opts.scale_devices
    );
    let edge = csrattrs_cache(opts.scale_devices)?;
    edge_rows(&edge, report);
    report.json["filter_csrattrs"] = edge;
    Ok(())
}

/// Phases 1 and 2 on one stack with `replicas` control planes.
async fn replica_run(
    dev: &DevStack,
    work: &Path,
    replicas: usize,
    opts: &Opts,
) -> anyhow::Result<Value> {
    let run_id = format!("{:x}", std::process::id() & 0xffff);
    // Warm-up: the ACME account and each replica's first order are not what is measured.
    let warm = mint(dev, work, &format!("WARM{replicas}-{run_id}"), 2 * replicas)?;
    enrol_all(&warm, warm.len())
        .await
        .context("warm-up enrolment")?;
    let pledges = mint(
        dev,
        work,
        &format!("SCALE{replicas}-{run_id}"),
        opts.pledges,
    )?;
    let redis = RedisCli::of(dev);
    let certs_before = redis.keys("*cert*")?.len();
    let keys_before = redis.dbsize()?;
    let kinds_before = count_kinds(&redis.keys("*")?);
    let mem_before = redis.used_memory()?;

    eprintln!(
        "xtask: scale: {} enrolments at {} concurrent, {replicas} replica(s) …",
        opts.pledges, opts.concurrency
    );
    let probe = CpuProbe::find(dev);
    let c0 = counters(dev)?;
    let cpu0 = probe.snapshot();
    let (wall, lat, accepted) = enrol_all(&pledges, opts.concurrency).await?;
    let (cpu_note, cpu) = probe.since(&cpu0);
    let d = diff(c0, counters(dev)?);

    // The certificate is cached before the 200 is sent; a moment for anything still in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mem_after = redis.used_memory()?;
    let cert_keys = redis.keys("*cert*")?;
    let keys_after = redis.dbsize()?;
    let kinds_after = count_kinds(&redis.keys("*")?);
    let new_certs = cert_keys.len().saturating_sub(certs_before);
    let mut sampled = Vec::new();
    for k in cert_keys.iter().take(SAMPLED_KEYS) {
        sampled.push(redis.memory_usage(k)?);
    }
    let sampled_avg = sampled.iter().sum::<u64>() as f64 / sampled.len().max(1) as f64;
    let per_cert = mem_after.saturating_sub(mem_before) as f64 / new_certs.max(1) as f64;

    let pct = |k: &str| cpu[k].as_f64().unwrap_or(0.0);
    let cps: f64 = (0..replicas)
        .map(|i| pct(&format!("control plane {i}")))
        .sum();
    Ok(json!({
        "replicas": replicas,
        "pledges": opts.pledges,
        "concurrency": opts.concurrency,
        "rate_per_s": opts.pledges as f64 / wall.as_secs_f64(),
        "wall_s": wall.as_secs_f64(),
        "latency": latency_stats(lat),
        "answers_202": accepted,
        "cpu_pct": cpu,
        "cpu_note": cpu_note,
        "cpu_pebble_pct": pct("pebble"),
        "cpu_control_planes_pct": cps,
        "metrics_delta": {"issued": d.issued, "cached": d.cached, "pending": d.pending,
            "failed": d.failed, "orders_valid": d.orders_valid},
        "redis": {
            "used_memory_before": mem_before,
            "used_memory_after": mem_after,
            "keys_before": keys_before,
            "keys_after": keys_after,
            "keys_by_kind_before": kinds_before,
            "keys_by_kind_after": kinds_after,
            "new_cert_keys": new_certs,
            "bytes_per_cert": per_cert,
            "memory_usage_sampled_cert_keys": sampled,
            "memory_usage_cert_key_avg": sampled_avg,
        },
    }))
}

fn replica_rows(run: &Value, opts: &Opts, report: &mut Report) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let r = &run["replicas"];
    let pebble = f(&run["cpu_pebble_pct"]);
    let cps = f(&run["cpu_control_planes_pct"]);
    report.row(
        format!("enrolments/s, {r} control plane(s)"),
        format!("{:.1}/s", f(&run["rate_per_s"])),
        format!(
            "{} pledges at {}, fresh stack; p50 {:.0} ms, p99 {:.0} ms; {} answers were 202",
            opts.pledges,
            opts.concurrency,
            f(&run["latency"]["p50_ms"]),
            f(&run["latency"]["p99_ms"]),
            run["answers_202"]
        ),
    );
    let verdict = if pebble > cps {
        "Pebble, which every replica shares, uses more CPU than all control planes together: the CA is the shared bottleneck"
    } else {
        "the control planes use more CPU than the CA"
    };
    report.row(
        "  CPU, Pebble vs the control planes",
        format!("{pebble:.0}% / {cps:.0}%"),
        format!("% of one core; {verdict}"),
    );
    report.row("  ", "", run["cpu_note"].as_str().unwrap_or_default());
    let redis = &run["redis"];
    let before = &redis["keys_by_kind_before"];
    let grown: Vec<String> = redis["keys_by_kind_after"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let d = v.as_i64()? - before[k].as_i64().unwrap_or(0);
                    (d != 0).then(|| format!("{k} {d:+}"))
                })
                .collect()
        })
        .unwrap_or_default();
    report.row(
        "  Redis bytes per cached certificate",
        format!("{:.0} B", f(&redis["bytes_per_cert"])),
        format!(
            "used_memory {} -> {} over {} new cert keys (all keys {} -> {}: {}); MEMORY USAGE of a cert key: {:.0} B (avg of {})",
            redis["used_memory_before"],
            redis["used_memory_after"],
            redis["new_cert_keys"],
            redis["keys_before"],
            redis["keys_after"],
            grown.join(", "),
            f(&redis["memory_usage_cert_key_avg"]),
            redis["memory_usage_sampled_cert_keys"].as_array().map_or(0, Vec::len)
        ),
    );
}

/// Envoy's RSS before and after `opts.scale_edge_devices` distinct devices each asked
/// `GET csrattrs` once (each on a new TLS connection), so the filter caches one entry per device.
async fn envoy_csrattrs(dev: &DevStack, work: &Path, opts: &Opts) -> anyhow::Result<Value> {
    let n = opts.scale_edge_devices;
    let pid = pid_by_cmdline(&dev.envoy.config_path.display().to_string())
        .context("no Envoy process found")?;
    let run_id = format!("{:x}", std::process::id() & 0xffff);
    let pledges = mint(dev, work, &format!("EDGE-{run_id}"), n)?;
    let (rss0, hwm0) = rss_hwm(pid).context("reading Envoy's /proc/PID/status")?;
    let t0 = Instant::now();
    let answers = {
        let pledges = Arc::clone(&pledges);
        pool(n, opts.concurrency, move |i| {
            let pledges = Arc::clone(&pledges);
            async move { get_csrattrs(&mut *pledges[i].lock().await).await }
        })
        .await?
    };
    let wall = t0.elapsed();
    let mut ok = 0usize;
    for a in answers {
        if a? == 200 {
            ok += 1;
        }
    }
    // Closed connections are freed on Envoy's next loop turns.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, hwm1) = rss_hwm(pid).context("reading Envoy's /proc/PID/status")?;
    if ok < n {
        bail!("only {ok} of {n} csrattrs requests got 200");
    }
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n.max(1) as f64;
    Ok(json!({
        "method": "real Envoy (V8), one GET csrattrs per distinct IDevID on a new TLS connection each; VmRSS/VmHWM from /proc",
        "devices": n,
        "concurrency": opts.concurrency,
        "wall_s": wall.as_secs_f64(),
        "rate_per_s": n as f64 / wall.as_secs_f64(),
        "rss_before_bytes": rss0,
        "rss_after_bytes": rss1,
        "hwm_before_bytes": hwm0,
        "hwm_after_bytes": hwm1,
        "rss_bytes_per_device": per(rss0, rss1),
    }))
}

fn envoy_rows(doc: &Value, report: &mut Report) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mib = |v: &Value| f(v) / (1024.0 * 1024.0);
    report.row(
        format!("Envoy RSS per csrattrs device ({} devices)", doc["devices"]),
        format!("{:.0} B", f(&doc["rss_bytes_per_device"])),
        format!(
            "real Envoy: VmRSS {:.1} -> {:.1} MiB, VmHWM {:.1} -> {:.1} MiB; {:.0} requests/s, each a new TLS connection; includes allocator growth, not only the cache",
            mib(&doc["rss_before_bytes"]),
            mib(&doc["rss_after_bytes"]),
            mib(&doc["hwm_before_bytes"]),
            mib(&doc["hwm_after_bytes"]),
            f(&doc["rate_per_s"]),
        ),
    );
}

/// Phase 3: a stack whose CA never validates, `opts.scale_pending` devices each answered 202.
fn pending_orders(
    rt: &Runtime,
    cp_bin: &Path,
    filter: &Path,
    opts: &Opts,
) -> anyhow::Result<Value> {
    let n = opts.scale_pending;
    let env = |k: &str, v: String| (k.to_string(), v);
    let cp = CpOptions {
        budget_ms: PENDING_BUDGET_MS,
        extra_env: vec![
            env("ESTUARY_ACME__PREAUTHORIZE", "false".into()),
            env("ESTUARY_ACME__ORDER_TIMEOUT_S", "900".into()),
            env("ESTUARY_ENROLL__MAX_INFLIGHT_ORDERS", (n + 100).to_string()),
            env("ESTUARY_ENROLL__MAX_QUEUED_ORDERS", (n + 100).to_string()),
        ],
        ..CpOptions::default()
    };
    let dev = DevStack::start(
        &DevStackOptions {
            replicas: 1,
            rfc9444_ca: true,
            cp,
            ..DevStackOptions::default()
        },
        cp_bin,
        filter,
        None,
    )?;
    let test_ca = dev
        .test_ca()
        .context("the pending-orders stack runs on the test CA")?;
    let work = TempDir::new("bench-pending")?;
    let pid = *control_plane_pids(&dev)
        .first()
        .context("no control-plane process found")?;
    let redis = RedisCli::of(&dev);
    rt.block_on(async {
        let est_url = dev.est_url();
        let ca = dev.pki.server_ca.cert_path.clone();
        let run_id = format!("{:x}", std::process::id() & 0xffff);
        // Warm-up with a CA that validates: account, first order, TLS to the CA.
        let mut warm = make_pledge(
            &dev.pki.manufacturer,
            work.path(),
            &est_url,
            &ca,
            &format!("PWARM-{run_id}"),
        )?;
        enrol(&mut warm).await.context("warm-up enrolment")?;
        eprintln!("xtask: scale: minting {n} IDevIDs and CSRs …");
        let mut pledges = Vec::with_capacity(n);
        for i in 0..n {
            pledges.push(tokio::sync::Mutex::new(make_pledge(
                &dev.pki.manufacturer,
                work.path(),
                &est_url,
                &ca,
                &format!("PEND-{run_id}-{i:05}"),
            )?));
        }
        let pledges = Arc::new(pledges);
        // Idle: a few seconds after the warm-up, nothing in flight.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss0, hwm0) = rss_hwm(pid).context("reading /proc/PID/status")?;
        let mem0 = redis.used_memory()?;
        let orders0 = test_ca.stats().orders;
        test_ca.set_fault(Fault::NeverValidate);

        let t0 = Instant::now();
        let answers = {
            let pledges = Arc::clone(&pledges);
            pool(n, opts.concurrency, move |i| {
                let pledges = Arc::clone(&pledges);
                async move { post_once(&pledges[i]).await }
            })
            .await?
        };
        let post_wall = t0.elapsed();
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for a in answers {
            *statuses.entry(a?).or_default() += 1;
        }
        // Every order placed at the CA (the 202 may come before newOrder for the last ones).
        let deadline = Instant::now() + Duration::from_secs(60);
        while test_ca.stats().orders - orders0 < n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let orders = test_ca.stats().orders - orders0;
        // Let the pollers settle into their back-off, then read.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss1, hwm1) = rss_hwm(pid).context("reading /proc/PID/status")?;
        let mem1 = redis.used_memory()?;
        let still = test_ca.stats().certificates;
        let per = |a: u64, b: u64| (b as f64 - a as f64) / orders.max(1) as f64;
        let doc = json!({
            "method": "one control plane on the strict test CA (tests/src/acme_ca.rs), per-name DNS-01, Fault::NeverValidate; enroll.budget_ms 200, acme.order_timeout_s 900",
            "devices": n,
            "concurrency": opts.concurrency,
            "post_wall_s": post_wall.as_secs_f64(),
            "answers": statuses.iter().map(|(s, c)| (s.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "orders_pending_at_ca": orders,
            "certificates_issued_total": still,
            "rss_idle_bytes": rss0,
            "hwm_idle_bytes": hwm0,
            "rss_pending_bytes": rss1,
            "hwm_pending_bytes": hwm1,
            "rss_bytes_per_pending_order": per(rss0, rss1),
            "hwm_bytes_per_pending_order": per(hwm0, hwm1),
            "redis_used_memory_idle": mem0,
            "redis_used_memory_pending": mem1,
            "redis_bytes_per_pending_order": per(mem0, mem1),
        });
        if orders < n as u64 {
            eprintln!("xtask: scale: only {orders} of {n} orders reached the CA within 60 s");
        }
        Ok::<_, anyhow::Error>(doc)
    })
}

/// One POST of the pledge's CSR; its HTTP status (202 expected: the order goes on).
async fn post_once(p: &tokio::sync::Mutex<Pledge>) -> anyhow::Result<u16> {
    let mut p = p.lock().await;
    let reply = post_csr(&mut p, ConnectionUse::KeepAlive).await?;
    Ok(reply.answer.status)
}

fn pending_rows(doc: &Value, report: &mut Report) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mib = |v: &Value| f(v) / (1024.0 * 1024.0);
    report.row(
        format!(
            "control-plane RSS per pending order ({} in flight)",
            doc["orders_pending_at_ca"]
        ),
        format!("{:.0} B", f(&doc["rss_bytes_per_pending_order"])),
        format!(
            "VmRSS {:.1} -> {:.1} MiB, VmHWM {:.1} -> {:.1} MiB ({:.0} B/order); answers {}; Redis +{:.0} B/order",
            mib(&doc["rss_idle_bytes"]),
            mib(&doc["rss_pending_bytes"]),
            mib(&doc["hwm_idle_bytes"]),
            mib(&doc["hwm_pending_bytes"]),
            f(&doc["hwm_bytes_per_pending_order"]),
            doc["answers"],
            f(&doc["redis_bytes_per_pending_order"]),
        ),
    );
}

/// Phase 4: `filter/tests/wasm_scale.rs` on the wasmtime host; its `ESTUARY-SCALE-JSON` line.
fn csrattrs_cache(devices: usize) -> anyhow::Result<Value> {
    let mut c = crate::cargo();
    c.args([
        "test",
        "--quiet",
        "-p",
        "estuary-filter",
        "--test",
        "wasm_scale",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("ESTUARY_SCALE_DEVICES", devices.to_string())
    .env("CARGO_INCREMENTAL", "0")
    .stderr(std::process::Stdio::inherit());
    let out = c.output().context("running the wasm_scale test")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the wasm_scale test failed:\n{stdout}");
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ESTUARY-SCALE-JSON "))
        .context("the wasm_scale test printed no ESTUARY-SCALE-JSON line")?;
    Ok(serde_json::from_str(line)?)
}

fn edge_rows(doc: &Value, report: &mut Report) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let first = &doc["points"][0];
    let last = doc["points"]
        .as_array()
        .and_then(|p| p.last())
        .cloned()
        .unwrap_or(Value::Null);
    // Bounded: fewer keys than devices, and no more bytes than `csrattrs_bound` answers
    // (42 bytes of entry header each) plus the keys.
    let bound = f(&doc["csrattrs_bound"]);
    let most_bytes =
        bound * (42.0 + f(&doc["csrattrs_answer_der_bytes"])) + f(&last["csrattrs_keys"]) * 32.0;
    let bounded =
        f(&last["csrattrs_keys"]) < f(&doc["devices"]) && f(&last["csrattrs_bytes"]) <= most_bytes;
    report.row(
        format!(
            "filter csrattrs cache, {} devices (wasmtime)",
            doc["devices"]
        ),
        format!("{:.0} B/entry", f(&doc["csrattrs_bytes_per_device"])),
        format!(
            "shared data {} -> {} keys, {} -> {} bytes (keys+values; answer DER {} B); after the TTL still {} keys; VM memory {} -> {} bytes",
            first["shared_keys"],
            last["shared_keys"],
            first["shared_bytes"],
            last["shared_bytes"],
            doc["csrattrs_answer_der_bytes"],
            doc["after_ttl"]["csrattrs_keys"],
            first["wasm_memory_bytes"],
            last["wasm_memory_bytes"],
        ),
    );
    report.row(
        "  csrattrs entries bounded?",
        if bounded { "yes" } else { "NO" },
        if bounded {
            format!(
                "at most {bound} answers (csrattrs_cache.max_entries) in {} keys, {} bytes: the oldest are evicted",
                last["csrattrs_keys"], last["csrattrs_bytes"]
            )
        } else {
            format!(
                "{} keys, {} bytes for {} devices: more than csrattrs_cache.max_entries ({bound}) allows",
                last["csrattrs_keys"], last["csrattrs_bytes"], doc["devices"]
            )
        },
    );
}
