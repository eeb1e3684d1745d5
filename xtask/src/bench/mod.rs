//! `cargo xtask bench`: Estuary's numbers, all from one run on loopback, side by side.
//!
//! 1. **Envoy requests/s** — one Envoy (`--concurrency 1`) with three TLS listeners that differ
//!    only in their HTTP filters (`envoy/bench-envoy.yaml`): the Estuary filter, a no-op wasm
//!    filter (`bench/noop-filter`), and no wasm filter at all (`direct_response`). wrk (one
//!    thread, fixed connections and duration) sends
//!    - `GET /.well-known/est/cacerts`, which the Estuary filter answers from its cache, and
//!    - `POST /.well-known/est/simpleenroll` without a client certificate, which it refuses
//!      with 401 before any control-plane call.
//!
//!    The noop/direct listeners answer the same paths with `direct_response` carrying the same
//!    status, headers and body.
//! 2. **Enrolments/s** — N distinct pledges (IDevIDs from the dev manufacturer CA, CSRs made
//!    with rcgen) enrol at C concurrent through Envoy, the release control plane, Pebble
//!    (`PEBBLE_VA_NOSLEEP`) and BIND9, following `202 Retry-After`; against a bare
//!    instant-acme loop on the same Pebble and BIND (same concurrency, same count, the control
//!    plane's `RetryPolicy` in the dev stack: 150 ms, backoff 1.5).
//! 3. **Identical-CSR re-enrolment** — every pledge posts its CSR again (cache hit), on its
//!    kept-alive connection and on a new TLS connection each time: rate and p99.
//! 4. **DNS UPDATE messages per enrolment** — `estuary_dns_updates_total` over issued
//!    enrolments, from the control plane's `/metrics`; Redis commands per enrolment (`INFO
//!    stats`); the control plane's peak RSS (`VmHWM`).
//! 5. **How cost grows** — new pledges at each `--levels` concurrency (10, 50, 200), each on a
//!    fresh dev stack: rate and p99 per level.
//!
//! Prints a table and writes `target/bench/latest.json` (and a timestamped copy).
//!
//! `--scale` runs another set of phases instead ([`scale`]): what each cost is per device as the
//! numbers grow (replicas, Redis per certificate, RSS per pending order, the filter's csrattrs
//! cache), written to `target/bench/scale.json`.
//! Bounded loads only, 127.0.0.1 only. Not run by CI: it reports numbers, it does not pass or fail
//! on them (it fails only when an answer is wrong). It judges the goals P1–P4 ([`goals`]) only
//! when the machine was quiet (the 1-minute load average at most half a core per core before the
//! phases, waited for up to 90 s); otherwise it warns and prints "not judged".
//!
//! Layout: [`scale`] (the `--scale` phases), [`envoy`] (wrk against the three Envoy listeners), [`enrol`] (enrolments through
//! Envoy and identical-CSR re-posts with the pledge library's EST client, the bare instant-acme
//! baseline), [`probe`] (CPU per process, load average, Envoy admin stats, control-plane
//! metrics), [`report`] (the table, the JSON document, latency percentiles), [`goals`] (the
//! verdicts) and [`opts`] (the command line); each imports only those after it. This file runs the phases.
mod enrol;
mod envoy;
mod goals;
mod opts;
mod probe;
mod report;
mod scale;

use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::util::{find_program, TempDir};
use serde_json::json;

use crate::{build_wasm, cargo, install, root, run};
use enrol::{enrol_bench, level_bench, levels_verdict};
use envoy::{build_noop_wasm, envoy_bench};
use opts::parse_opts;
use probe::{load1, loadavg};
use report::Report;

/// Entry point of `cargo xtask bench`.
pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse_opts(args)? else {
        return Ok(());
    };
    // The bench client itself (TLS, hyper, instant-acme) must not be a debug build: re-run
    // this command from a release build of xtask.
    if cfg!(debug_assertions) && std::env::var_os("ESTUARY_BENCH_DEBUG").is_none() {
        let mut c = cargo();
        c.args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench"])
            .args(args);
        return run(c);
    }
    install()?;
    let filter = build_wasm()?;
    let mut cp = cargo();
    cp.args(["build", "--release", "-p", "estuary-control-plane"]);
    run(cp)?;
    let cp_bin = root().join("target/release/estuary-control-plane");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if opts.scale {
        return scale_run(&rt, &cp_bin, &filter, &opts);
    }
    find_program("wrk", "wrk")?;
    let noop = build_noop_wasm()?;

    eprintln!("xtask: starting the dev stack (release control plane) …");
    let dev = DevStack::start(&DevStackOptions::default(), &cp_bin, &filter, None)?;
    let work = TempDir::new("bench")?;
    let mut report = Report::default();
    // Quiet: the 1-minute load average falls to half a core per core or less with the stack
    // idle (the release builds just before are still in it: wait up to 90 s). Otherwise the
    // run still measures, but no goal is judged.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let quiet = loop {
        match load1() {
            Some(l) if l <= 0.5 * cores => break true,
            _ if std::time::Instant::now() >= settle => break false,
            _ => std::thread::sleep(std::time::Duration::from_secs(5)),
        }
    };
    if !quiet {
        eprintln!(
            "xtask: bench: WARNING the machine is not quiet (load average {}): numbers are skewed and no goal will be judged",
            loadavg()
        );
    }
    let load_start = loadavg();
    report.json["settings"] = json!({
        "envoy_concurrency": 1,
        "wrk_threads": 1,
        "wrk_connections": opts.connections,
        "wrk_duration_s": opts.duration_s,
        "wrk_rounds": opts.rounds,
        "pledges": opts.pledges,
        "concurrency": opts.concurrency,
        "repeats": opts.repeats,
        "levels": opts.levels,
        "control_plane": cp_bin.display().to_string(),
        "acme_poll": {"initial_ms": 150, "backoff": 1.5},
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });

    // A failing phase keeps what the others measured: the table and JSON are written anyway.
    let mut outcome = Ok(());
    if !opts.skip_envoy {
        outcome = envoy_bench(&dev, &filter, &noop, work.path(), &opts, &mut report);
    }
    if !opts.skip_enrol && outcome.is_ok() {
        outcome = rt.block_on(enrol_bench(&dev, work.path(), &opts, &mut report));
    }
    drop(dev);
    if !opts.skip_enrol && outcome.is_ok() && !opts.levels.is_empty() {
        // How cost grows: a fresh stack per level, so that no level inherits another's orders.
        let mut rows = Vec::new();
        for &level in &opts.levels {
            let fresh = DevStack::start(&DevStackOptions::default(), &cp_bin, &filter, None);
            let row = fresh.and_then(|fresh| {
                rt.block_on(level_bench(&fresh, work.path(), level, &opts, &mut report))
            });
            match row {
                Ok(row) => rows.push(row),
                Err(e) => {
                    outcome = Err(e.context(format!("the enrolment level {level}")));
                    break;
                }
            }
        }
        levels_verdict(&rows, &mut report);
        report.json["enrolment_levels"] = json!(rows);
    }
    if let Err(e) = &outcome {
        report.row("FAILED", "", format!("{e:#}"));
        report.json["error"] = json!(format!("{e:#}"));
    }

    let load_end = loadavg();
    report.row(
        "load average (1/5/15 min), start / end",
        "",
        format!(
            "{load_start} / {load_end} on {} cores: other work on the machine skews every number",
            report.json["settings"]["machine_cores"]
        ),
    );
    report.json["load_average"] = json!({"start": load_start, "end": load_end});
    report.json["quiet"] = json!(quiet);
    let (goal_rows, goals_json) = goals::judge(&report.json, quiet);
    for (what, value, verdict) in goal_rows {
        report.row(what, value, verdict);
    }
    report.json["goals"] = goals_json;
    println!("\n{}", report.table());
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = serde_json::to_string_pretty(&report.json)?;
    std::fs::write(out_dir.join(format!("bench-{stamp}.json")), &text)?;
    std::fs::write(out_dir.join("latest.json"), &text)?;
    println!("written: {}", out_dir.join("latest.json").display());
    outcome
}

/// `--scale`: the cost-per-device phases alone; the table, then `target/bench/scale.json`.
fn scale_run(
    rt: &tokio::runtime::Runtime,
    cp_bin: &std::path::Path,
    filter: &std::path::Path,
    opts: &opts::Opts,
) -> anyhow::Result<()> {
    let mut report = Report::default();
    let started = std::time::Instant::now();
    let load_start = loadavg();
    report.json["settings"] = json!({
        "pledges": opts.pledges,
        "concurrency": opts.concurrency,
        "replicas": opts.scale_replicas,
        "pending_orders": opts.scale_pending,
        "csrattrs_devices": opts.scale_devices,
        "control_plane": cp_bin.display().to_string(),
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    let outcome = scale::scale_bench(rt, cp_bin, filter, opts, &mut report);
    if let Err(e) = &outcome {
        report.row("FAILED", "", format!("{e:#}"));
        report.json["error"] = json!(format!("{e:#}"));
    }
    let load_end = loadavg();
    report.row(
        "load average (1/5/15 min), start / end",
        "",
        format!(
            "{load_start} / {load_end} on {} cores: other work on the machine skews every number",
            report.json["settings"]["machine_cores"]
        ),
    );
    report.json["load_average"] = json!({"start": load_start, "end": load_end});
    report.json["wall_s"] = json!(started.elapsed().as_secs_f64());
    println!("\n{}", report.table());
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join("scale.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report.json)?)?;
    println!("written: {}", path.display());
    outcome
}
