//! The crates depend on each other the way the README's architecture section says, checked on
//! what Cargo actually resolves (`cargo metadata`, normal dependencies, transitively).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Package name → the names of every package it needs at run time (normal dependencies,
/// transitively), for this machine's target.
fn runtime_closure() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    // id → ids of its normal (not dev, not build) dependencies.
    let mut direct: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_str().expect("id");
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .is_some_and(|ks| ks.iter().any(|k| k["kind"].is_null()))
            })
            .map(|d| d["pkg"].as_str().expect("pkg"))
            .collect();
        direct.insert(id, deps);
    }
    let mut out = BTreeMap::new();
    for &id in direct.keys() {
        let mut seen = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(i) = todo.pop() {
            for &d in direct.get(i).into_iter().flatten() {
                if seen.insert(d) {
                    todo.push(d);
                }
            }
        }
        out.insert(
            name_of[id].to_string(),
            seen.iter().map(|i| name_of[i].to_string()).collect(),
        );
    }
    out
}

fn assert_free_of(closure: &BTreeMap<String, BTreeSet<String>>, krate: &str, banned: &[&str]) {
    let deps = closure
        .get(krate)
        .unwrap_or_else(|| panic!("{krate} is not in the workspace"));
    let found: Vec<&&str> = banned.iter().filter(|b| deps.contains(**b)).collect();
    assert!(found.is_empty(), "{krate} depends on {found:?}");
}

#[test]
fn each_crate_depends_only_on_its_layer() {
    let c = runtime_closure();
    // The device CLI is a client: no server, no Redis, no ACME.
    assert_free_of(
        &c,
        "estuary-pledge",
        &["estuary-control-plane", "axum", "redis", "instant-acme"],
    );
    // The TEAP core is shared by the server and the pledge.
    assert_free_of(
        &c,
        "estuary-teap",
        &[
            "estuary-control-plane",
            "axum",
            "redis",
            "instant-acme",
            "hyper",
        ],
    );
    // What runs inside Envoy, and the codec it shares, do no I/O of their own.
    for krate in ["estuary-filter", "estuary-proto"] {
        assert_free_of(&c, krate, &["tokio", "axum", "redis", "hyper"]);
    }
    // And the checks above look at real edges: the control plane has all of these.
    let cp = &c["estuary-control-plane"];
    for dep in [
        "estuary-proto",
        "estuary-teap",
        "axum",
        "redis",
        "instant-acme",
        "tokio",
    ] {
        assert!(cp.contains(dep), "estuary-control-plane lacks {dep}");
    }
    assert!(c["estuary-pledge"].contains("estuary-teap"));
    // The bench enrols through the device library, not a client of its own.
    assert!(
        c["xtask"].contains("estuary-pledge"),
        "xtask does not use estuary-pledge"
    );
}
