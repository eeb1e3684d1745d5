//! Deployment files are code: the dev Envoy config is checked by `envoy --mode validate` (in
//! est_envoy.rs, on the rendered file), and the Istio/Kubernetes manifests by the offline
//! validators that PyPI offers (envoy/istio/check.py: kubernetes-validate for core kinds,
//! check-jsonschema with the schemas in envoy/istio/schemas for Istio kinds, yamllint, and the
//! deployment rules in check.py's `policy_problems`).
use std::path::Path;
use std::process::{Command, Output};

use estuary_tests::envoy::workspace_root;
use estuary_tests::util::TempDir;

fn check_py(dir: Option<&Path>) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(workspace_root().join("envoy/istio/check.py"));
    if let Some(d) = dir {
        cmd.arg(d);
    }
    cmd.output().expect("run python3")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read manifest");
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in {}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).expect("write manifest");
}

#[test]
fn istio_and_kubernetes_manifests_validate() {
    let out = check_py(None);
    assert!(
        out.status.success(),
        "envoy/istio/check.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("0 problem(s)"), "{summary}");
    assert!(!summary.contains("checked 0 manifests"), "{summary}");
}

/// The deployment rules bite: in a copy of the manifests with the API token written into the
/// WasmPlugin and the EnvoyFilter matching any listener port, check.py names both problems.
#[test]
fn check_py_refuses_an_inline_token_and_an_envoyfilter_without_a_port() {
    let dir = TempDir::new("istio-manifests").expect("temp dir");
    copy_dir(&workspace_root().join("envoy/istio"), dir.path()).expect("copy the manifests");
    replace_in(
        &dir.path().join("wasmplugin.yaml"),
        "token_env: ESTUARY_API_TOKEN",
        "token: not-a-real-token",
    );
    replace_in(
        &dir.path().join("envoyfilter.yaml"),
        "portNumber: 8443",
        "name: 0.0.0.0_8443",
    );
    let out = check_py(Some(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{stderr}");
    assert!(
        stderr.contains("wasmplugin.yaml (WasmPlugin): inline `token` value"),
        "{stderr}"
    );
    assert!(
        stderr.contains("envoyfilter.yaml configPatches[0]: match.listener.portNumber missing"),
        "{stderr}"
    );
}
