//! The performance goals of issue 15 (P1–P4), judged from the run's JSON only when the machine
//! was quiet: on a busy machine every ratio is skewed, so no verdict is printed at all.
use serde_json::{json, Value};

/// One goal: its name, the JSON path of the number, the bound, and whether more is better.
struct Goal {
    name: &'static str,
    path: &'static [&'static str],
    bound: f64,
    at_least: bool,
}

/// P1 for each `envoy.<case>`, then P2–P4.
fn goals(json: &Value) -> Vec<(String, Vec<String>, f64, bool)> {
    let mut out = Vec::new();
    if let Some(cases) = json["envoy"].as_object() {
        for case in cases.keys() {
            out.push((
                format!("P1 {case}: Estuary filter / no-op filter"),
                vec!["envoy".into(), case.clone(), "estuary_over_noop".into()],
                0.90,
                true,
            ));
        }
    }
    let fixed = [
        Goal {
            name: "P2 enrolments: through Envoy / bare ACME loop",
            path: &["enrolment", "miss_over_baseline"],
            bound: 0.80,
            at_least: true,
        },
        Goal {
            name: "P3 identical-CSR re-posts / misses",
            path: &["enrolment", "hit_keepalive", "over_miss_rate"],
            bound: 20.0,
            at_least: true,
        },
        Goal {
            name: "P3 identical-CSR re-post p99 (ms)",
            path: &["enrolment", "hit_keepalive", "latency", "p99_ms"],
            bound: 10.0,
            at_least: false,
        },
        Goal {
            name: "P4 DNS UPDATE messages per enrolment",
            path: &["enrolment", "dns_updates_per_enrolment"],
            bound: 0.10,
            at_least: false,
        },
    ];
    for g in fixed {
        out.push((
            g.name.to_string(),
            g.path.iter().map(|s| s.to_string()).collect(),
            g.bound,
            g.at_least,
        ));
    }
    out
}

/// The least Envoy CPU (% of its one worker, median of the rounds) under which a P1 ratio is
/// judged: below it Envoy was not the bottleneck (wrk, TLS handshakes, or a throttled machine
/// was), and the ratio does not measure the filter.
const P1_MIN_ENVOY_CPU: f64 = 90.0;

/// For a P1 goal (`envoy.<case>....`): why it cannot be judged — Envoy was not CPU-bound in the
/// Estuary or the no-op runs — or `None`.
fn p1_unjudgeable(json: &Value, path: &[String]) -> Option<String> {
    let [first, case, ..] = path else { return None };
    if first != "envoy" {
        return None;
    }
    let cpu = |variant: &str| {
        let runs = json["envoy"][case.as_str()][variant]["runs"].as_array()?;
        let mut v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r["envoy_cpu_pct"].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    match (cpu("estuary"), cpu("noop")) {
        (Some(e), Some(n)) if e >= P1_MIN_ENVOY_CPU && n >= P1_MIN_ENVOY_CPU => None,
        (Some(e), Some(n)) => Some(format!(
            "not judged: Envoy was not CPU-bound (Estuary {e:.0} %, no-op {n:.0} %), so the ratio does not measure the filter"
        )),
        // Older JSON without per-run CPU: judged as before.
        _ => None,
    }
}

/// Table rows (what, value, verdict) and the JSON `goals` object. With `quiet` false every goal
/// is "not judged"; a number the run did not produce is "not measured".
pub(super) fn judge(json: &Value, quiet: bool) -> (Vec<(String, String, String)>, Value) {
    let mut rows = Vec::new();
    let mut js = serde_json::Map::new();
    for (name, path, bound, at_least) in goals(json) {
        let mut v = json;
        for p in &path {
            v = &v[p.as_str()];
        }
        let value = v.as_f64().filter(|x| x.is_finite());
        let bound_text = format!("{} {bound}", if at_least { "≥" } else { "≤" });
        let unjudgeable = p1_unjudgeable(json, &path);
        let (shown, verdict, met) = match (value, quiet) {
            (None, _) => ("—".to_string(), "not measured".to_string(), Value::Null),
            (Some(x), true) if unjudgeable.is_some() => (
                format!("{x:.2}"),
                format!("{} (goal {bound_text})", unjudgeable.unwrap_or_default()),
                Value::Null,
            ),
            (Some(x), false) => (
                format!("{x:.2}"),
                format!("not judged: the machine was not quiet (goal {bound_text})"),
                Value::Null,
            ),
            (Some(x), true) => {
                let ok = if at_least { x >= bound } else { x <= bound };
                (
                    format!("{x:.2}"),
                    format!(
                        "{} (goal {bound_text})",
                        if ok { "meets" } else { "MISSES" }
                    ),
                    json!(ok),
                )
            }
        };
        js.insert(
            name.clone(),
            json!({"path": path.join("."), "value": value, "bound": bound, "at_least": at_least, "met": met}),
        );
        rows.push((name, shown, verdict));
    }
    (rows, json!({"judged": quiet, "goals": Value::Object(js)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Value {
        json!({
            "envoy": {"cacerts": {"estuary_over_noop": 0.95}, "401": {"estuary_over_noop": 0.70}},
            "enrolment": {
                "miss_over_baseline": 0.85,
                "hit_keepalive": {"over_miss_rate": 25.0, "latency": {"p99_ms": 12.0}},
                "dns_updates_per_enrolment": 0.05
            }
        })
    }

    #[test]
    fn a_quiet_run_is_judged_goal_by_goal() {
        let (rows, js) = judge(&run(), true);
        let verdict = |name: &str| {
            rows.iter()
                .find(|r| r.0.starts_with(name))
                .map(|r| r.2.clone())
                .unwrap_or_default()
        };
        assert!(verdict("P1 cacerts").starts_with("meets"));
        assert!(verdict("P1 401").starts_with("MISSES"));
        assert!(verdict("P2").starts_with("meets"));
        assert!(verdict("P3 identical-CSR re-posts").starts_with("meets"));
        assert!(verdict("P3 identical-CSR re-post p99").starts_with("MISSES"));
        assert!(verdict("P4").starts_with("meets"));
        assert_eq!(js["judged"], true);
    }

    #[test]
    fn a_p1_ratio_with_envoy_not_cpu_bound_is_not_judged() {
        let runs = |cpus: &[f64]| json!({"runs": cpus.iter().map(|c| json!({"envoy_cpu_pct": c})).collect::<Vec<_>>()});
        let mut j = run();
        j["envoy"]["cacerts"]["estuary"] = runs(&[97.0, 98.0, 60.0]);
        j["envoy"]["cacerts"]["noop"] = runs(&[98.0, 97.0, 99.0]);
        j["envoy"]["401"]["estuary"] = runs(&[68.0, 55.0, 80.0]);
        j["envoy"]["401"]["noop"] = runs(&[97.0, 98.0, 99.0]);
        let (rows, js) = judge(&j, true);
        let verdict = |name: &str| {
            rows.iter()
                .find(|r| r.0.starts_with(name))
                .map(|r| r.2.clone())
                .unwrap_or_default()
        };
        assert!(
            verdict("P1 cacerts").starts_with("meets"),
            "median 97 % is CPU-bound"
        );
        assert!(
            verdict("P1 401").starts_with("not judged: Envoy was not CPU-bound"),
            "{rows:?}"
        );
        assert!(js["goals"]["P1 401: Estuary filter / no-op filter"]["met"].is_null());
    }

    #[test]
    fn a_busy_machine_gets_no_verdict_and_a_missing_number_is_not_measured() {
        let (rows, js) = judge(&run(), false);
        assert!(
            rows.iter().all(|r| r.2.starts_with("not judged")),
            "{rows:?}"
        );
        assert_eq!(js["judged"], false);
        assert!(js["goals"]
            .as_object()
            .unwrap()
            .values()
            .all(|g| g["met"].is_null()));
        let (rows, _) = judge(&json!({}), true);
        assert!(rows.iter().all(|r| r.2 == "not measured"), "{rows:?}");
    }
}
