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

/// Prints, as one JSON list, every Estuary filter configuration in the manifests given as
/// arguments: the EnvoyFilter's `configuration.value` (JSON text) and the WasmPlugin's
/// `pluginConfig` (YAML).
const EXTRACT: &str = r#"
import json, sys, yaml
found = []
def walk(node):
    if isinstance(node, dict):
        conf = node.get("configuration")
        if isinstance(conf, dict) and isinstance(conf.get("value"), str):
            found.append(json.loads(conf["value"]))
        if node.get("kind") == "WasmPlugin":
            found.append(node["spec"]["pluginConfig"])
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        walk(doc)
print(json.dumps(found))
"#;

fn ca_pem(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).expect("self-signed").pem()
}

/// The filter configurations shipped in the Istio manifests are ones the filter itself accepts
/// once the operator has put in the certificates (and, as shipped, it refuses them naming the
/// placeholders' fields rather than starting without a trust policy).
#[test]
fn the_istio_filter_configurations_are_accepted_by_the_filter() {
    let dir = workspace_root().join("envoy/istio");
    let out = Command::new("python3")
        .args(["-c", EXTRACT])
        .arg(dir.join("envoyfilter.yaml"))
        .arg(dir.join("wasmplugin.yaml"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let configs: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("extracted JSON");
    assert_eq!(configs.len(), 2, "EnvoyFilter and WasmPlugin: {configs:?}");
    let token = "t".repeat(32);
    let env = |name: &str| {
        if name == "ESTUARY_API_TOKEN" {
            Ok(token.clone())
        } else {
            Err(std::env::VarError::NotPresent)
        }
    };
    for shipped in configs {
        let e = estuary_filter::config::parse_with_env(shipped.to_string().as_bytes(), &env)
            .expect_err("the PEM placeholders are refused");
        let fields: Vec<&str> = e.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["manufacturers[0].ca_pem", "acme_ca_pem"], "{e}");

        let mut filled = shipped.clone();
        for m in filled["manufacturers"]
            .as_array_mut()
            .expect("manufacturers")
        {
            m["ca_pem"] = ca_pem("IDevID CA").into();
        }
        filled["acme_ca_pem"] = format!("{}{}", ca_pem("ACME root"), ca_pem("ACME int")).into();
        let cfg = estuary_filter::config::parse_with_env(filled.to_string().as_bytes(), &env)
            .unwrap_or_else(|e| panic!("{e}\n{filled}"));
        let est = cfg.est().expect("registrar role");
        assert_eq!(est.trust.parent.as_str(), "iot.example.com");
        assert_eq!(est.trust.acme_issuers.len(), 2);
    }
}
