//! The dashboard (deploy/grafana/estuary.json) and the alert rules (deploy/prometheus/alerts.yaml)
//! that operators run Estuary with, checked with the real tools: `promtool check rules`, then a
//! real Prometheus that scrapes the dev stack after enrolments through Envoy (a CA refusal, two
//! issued certificates, a cache hit) and evaluates every expression.
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use estuary_tests::acme_ca::Fault;
use estuary_tests::curl::{enrol_until_done, new_device, Answer};
use estuary_tests::dev_stack::{DevStack, DevStackOptions};
use estuary_tests::prometheus::{check_rules, Prometheus};
use estuary_tests::util::TempDir;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Enrols device `tag` with a CSR made once and kept in its directory, so a second call with
/// the same tag posts the identical CSR (a cache hit).
fn enrol(stack: &DevStack, tmp: &TempDir, tag: &str) -> Answer {
    let dir = tmp.path().join(tag);
    let serial = format!("OBS-{tag}-{}", std::process::id());
    let (cert, key) = (dir.join("idevid.pem"), dir.join("idevid.key"));
    let body = dir.join("csr.b64");
    if !body.exists() {
        let (id, _, csr) = new_device(stack, &dir, &serial);
        assert_eq!((&id.cert_path, &id.key_path), (&cert, &key));
        std::fs::write(
            &body,
            base64::engine::general_purpose::STANDARD.encode(&csr),
        )
        .expect("write csr");
    }
    let b64 = std::fs::read_to_string(&body).expect("read csr");
    enrol_until_done(
        stack,
        &dir,
        "simpleenroll",
        (&cert, &key),
        &b64,
        "application/pkcs10",
        Some("base64"),
        Duration::from_secs(120),
    )
}

/// Every `expr` of the dashboard's panels, with the panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_file("deploy/grafana/estuary.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("a panel title").to_string();
        for t in panel["targets"].as_array().expect("targets") {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// The metric names an expression reads (`estuary_…`), each once.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("estuary_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = expr[start..end].to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        i = end;
    }
    names
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let report = check_rules(&repo_file("deploy/prometheus/alerts.yaml")).expect("promtool");
    assert!(report.contains("SUCCESS"), "{report}");
}

#[test]
fn every_dashboard_and_alert_expression_evaluates_against_the_scraped_dev_stack() {
    let stack = DevStack::start_built(&DevStackOptions {
        rfc9444_ca: true,
        brski: true,
        ..DevStackOptions::default()
    })
    .expect("start the dev stack");
    let ca = stack.test_ca().expect("the strict test CA");
    let tmp = TempDir::new("observability").expect("tmp");

    // A CA refusal, two issued certificates, and the first one asked again (a cache hit).
    ca.set_fault(Fault::NewOrderProblem("badCSR", 400));
    let refused = enrol(&stack, &tmp, "refused");
    assert_eq!(refused.status, 400, "{}", refused.body);
    ca.set_fault(Fault::None);
    for tag in ["one", "two"] {
        let a = enrol(&stack, &tmp, tag);
        assert_eq!(a.status, 200, "{tag}: {}", a.body);
    }
    // The first device again with the same CSR but a new IDevID for its serial: the edge's
    // enroll_answer_cache holds answers per exact client certificate, so this one reaches the
    // control plane, whose certificate cache (keyed by the CSR) answers it.
    stack
        .pki
        .manufacturer
        .issue_idevid(
            &tmp.path().join("one"),
            "idevid",
            &format!("OBS-one-{}", std::process::id()),
        )
        .expect("a second IDevID");
    let again = enrol(&stack, &tmp, "one");
    assert_eq!(again.status, 200, "one again: {}", again.body);

    let targets: Vec<_> = stack.control_planes.iter().map(|c| c.addr).collect();
    let rules_file = repo_file("deploy/prometheus/alerts.yaml");
    let mut prom = Prometheus::start(&targets, &[rules_file]).expect("start prometheus");
    // Two scrapes of every control plane, so rate() has two samples.
    let want = targets.len() as f64;
    prom.wait_until(Duration::from_secs(60), "scraping", |p| {
        Ok(p.value("sum(up{job=\"estuary\"})")? == want
            && p.value("min(count_over_time(up{job=\"estuary\"}[1m]))")? >= 2.0)
    })
    .expect("prometheus scrapes the control planes");

    // What happened is what the series say.
    assert_eq!(
        prom.value("sum(estuary_acme_problems_total{type=\"badCSR\"})")
            .unwrap(),
        1.0
    );
    assert_eq!(
        prom.value("sum(estuary_issuance_failures_total{cause=\"ca_rejected\"})")
            .unwrap(),
        1.0
    );
    assert!(prom.value("sum(estuary_cache_hits_total)").unwrap() >= 1.0);
    assert_eq!(prom.value("min(estuary_redis_up)").unwrap(), 1.0);
    assert!(
        prom.value("sum(estuary_cache_hit_remaining_seconds_count)")
            .unwrap()
            >= 1.0
    );

    // Every panel's query evaluates and has series to draw.
    let panels = dashboard_queries();
    assert!(panels.len() >= 13, "{} panel queries", panels.len());
    let mut failures = Vec::new();
    for (title, expr) in &panels {
        match prom.query(expr) {
            Ok(r) if r.is_empty() => failures.push(format!("{title}: {expr}: no series")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{title}: {e}")),
        }
    }

    // Every alert rule is loaded, evaluates without error, and reads only series that exist.
    prom.wait_until(Duration::from_secs(30), "evaluating the rules", |p| {
        let rules = p.rules()?;
        Ok(!rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown"))
    })
    .expect("the rules are evaluated");
    let rules = prom.rules().expect("rules");
    assert_eq!(rules.len(), 8, "{rules:?}");
    for r in &rules {
        let name = r["name"].as_str().unwrap_or("?");
        if r["health"] != "ok" {
            failures.push(format!("alert {name}: {} {}", r["health"], r["lastError"]));
        }
        let expr = r["query"].as_str().expect("query");
        if let Err(e) = prom.query(expr) {
            failures.push(format!("alert {name}: {e}"));
        }
        for metric in metric_names(expr) {
            match prom.query(&format!("count({metric})")) {
                Ok(r) if r.is_empty() => {
                    failures.push(format!("alert {name}: no series named {metric}"))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("alert {name}: {e}")),
            }
        }
    }
    // A healthy stack fires none of them (the one refusal above is a device's, not the CA's
    // health, and the failure ratio counts 5xx only).
    let firing = prom.query("ALERTS{alertstate=\"firing\"}").expect("ALERTS");
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy stack: {firing:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(prom);
}

#[test]
fn one_enrolment_is_followed_from_envoy_to_the_control_planes_json_log_by_its_request_id() {
    let mut opts = DevStackOptions::default();
    opts.cp
        .extra_env
        .push(("ESTUARY_LOG_FORMAT".to_string(), "json".to_string()));
    let stack = DevStack::start_built(&opts).expect("start the dev stack");
    let tmp = TempDir::new("request-id").expect("tmp");
    let dir = tmp.path();
    let serial = format!("RID-{}", std::process::id());
    let (id, name, csr) = new_device(&stack, dir, &serial);
    std::fs::write(
        dir.join("csr.b64"),
        base64::engine::general_purpose::STANDARD.encode(&csr),
    )
    .expect("write csr");
    let headers = dir.join("headers");
    let (server_ca, cert, key) = (
        stack.pki.server_ca.cert_path.display().to_string(),
        id.cert_path.display().to_string(),
        id.key_path.display().to_string(),
    );
    let data = format!("@{}", dir.join("csr.b64").display());
    let dump = headers.display().to_string();
    let a = estuary_tests::curl::curl(
        dir,
        &[
            "--cacert",
            &server_ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &data,
            "-D",
            &dump,
        ],
        &format!("{}/simpleenroll", stack.est_url()),
    );
    assert!(
        a.status == 200 || a.status == 202,
        "{} {}",
        a.status,
        a.body
    );
    // The id Envoy gave the request, as the device sees it.
    let head = std::fs::read_to_string(&headers).expect("headers");
    let rid = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-request-id")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no x-request-id in the answer:\n{head}"));

    // Every line of the control plane's log is one JSON object, and the request's lines carry
    // the id the edge passed on (the control plane would otherwise have made up its own).
    let cp = &stack.control_planes[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&cp.log).expect("control plane log");
        let mut mine = Vec::new();
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if v["span"]["request_id"] == rid.as_str() {
                mine.push(v);
            }
        }
        let device_lines = mine
            .iter()
            .filter(|v| v["fields"]["device"] == name.as_str())
            .count();
        if device_lines > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line of device {name} with request_id {rid}; lines with the id: {mine:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_metric_name_reader_finds_each_name_once() {
    assert_eq!(
        metric_names(
            "sum(rate(estuary_a_total[5m])) / clamp_min(sum(rate(estuary_a_total[5m])) + estuary_b_bucket{le=\"1\"}, 1)"
        ),
        vec!["estuary_a_total".to_string(), "estuary_b_bucket".to_string()]
    );
}
