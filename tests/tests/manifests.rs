//! Deployment files are code: the dev Envoy config is checked by `envoy --mode validate` (in
//! est_envoy.rs, on the rendered file), and the Istio/Kubernetes manifests by the offline
//! validators that PyPI offers (envoy/istio/check.py: kubernetes-validate for core kinds,
//! check-jsonschema with the schemas in envoy/istio/schemas for Istio kinds, yamllint).
use std::process::Command;

use estuary_tests::envoy::workspace_root;

#[test]
fn istio_and_kubernetes_manifests_validate() {
    let script = workspace_root().join("envoy/istio/check.py");
    let out = Command::new("python3")
        .arg(&script)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("0 problem(s)"), "{summary}");
    assert!(!summary.contains("checked 0 manifests"), "{summary}");
}
