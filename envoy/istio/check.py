#!/usr/bin/env python3
"""Checks the Istio/Kubernetes manifests in this directory as far as offline tools allow.

- yamllint (relaxed) on every file;
- kubernetes-validate --strict on the core Kubernetes kinds (bundled schemas);
- check-jsonschema on the Istio kinds, against the hand-written schemas in schemas/;
- the Estuary filter configuration embedded in the WasmPlugin and the EnvoyFilter against
  schemas/estuary-filter-config.json;
- the deployment rules of `policy_problems` (no secret value in any manifest, the filter confined
  to the EST server, the API token from a Secret, the control plane reachable only from the
  gateway), across the manifests and the patches in patches/.
Usage: check.py [DIR] (default: this file's directory). Prints every problem found; exits non-zero
if there is any.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
ISTIO = {
    "Gateway": "gateway.json",
    "VirtualService": "virtualservice.json",
    "WasmPlugin": "wasmplugin.json",
    "EnvoyFilter": "envoyfilter.json",
}
CORE_API = ("v1", "apps/v1", "networking.k8s.io/v1", "policy/v1")


def tool(name):
    """A console script of the Python that runs this file, else one on PATH."""
    beside = pathlib.Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{name} is not installed: run `cargo xtask install` "
                 f"(pip install kubernetes-validate check-jsonschema yamllint)")
    return found


def run(cmd):
    cmd = [tool(cmd[0]) if cmd[0] in ("kubernetes-validate", "check-jsonschema") else cmd[0], *cmd[1:]]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, (p.stdout + p.stderr).strip()


def main():
    files = sorted(HERE.glob("*.yaml"))
    # Drop-in replacements for a file of HERE (e.g. Redis with Sentinel for redis.yaml): checked
    # with the same tools and rules, each alternative in place of the file it replaces.
    alternatives = sorted((HERE / "alternatives").glob("*.yaml"))
    patches = sorted((HERE / "patches").glob("*.yaml"))
    if not files:
        print("no manifests found", file=sys.stderr)
        return 1
    problems = []
    code, out = run([sys.executable, "-m", "yamllint", "-d", "{extends: relaxed, rules: {line-length: {max: 120}}}", "--strict", *map(str, files + alternatives + patches)])
    if code != 0:
        problems.append(f"yamllint:\n{out}")
    checked = 0
    docs = [(f.name, d) for f in files for d in yaml.safe_load_all(f.read_text()) if d is not None]
    patch_docs = [(f"patches/{f.name}", yaml.safe_load(f.read_text())) for f in patches]
    problems += policy_problems(docs, patch_docs)
    for alt in alternatives:
        # alternatives/redis-sentinel.yaml replaces redis.yaml: the rules hold for that set too.
        replaced = alt.stem.split("-")[0] + ".yaml"
        alt_docs = [(f"alternatives/{alt.name}", d) for d in yaml.safe_load_all(alt.read_text()) if d is not None]
        problems += policy_problems([d for d in docs if d[0] != replaced] + alt_docs, patch_docs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for f in files + alternatives:
            for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
                if doc is None:
                    continue
                kind, api = doc.get("kind"), doc.get("apiVersion")
                where = f"{f.name} document {i + 1} ({kind})"
                if api in CORE_API:
                    path = tmp / f"{f.stem}-{i}.yaml"
                    path.write_text(yaml.safe_dump(doc))
                    code, out = run(["kubernetes-validate", "--strict", "--quiet", str(path)])
                    if code != 0:
                        problems.append(f"{where}: kubernetes-validate:\n{out}")
                elif kind in ISTIO:
                    path = tmp / f"{f.stem}-{i}.json"
                    path.write_text(json.dumps(doc))
                    code, out = run(["check-jsonschema", "--schemafile", str(SCHEMAS / ISTIO[kind]), str(path)])
                    if code != 0:
                        problems.append(f"{where}: check-jsonschema:\n{out}")
                    for cfg in filter_configs(doc):
                        cpath = tmp / f"{f.stem}-{i}-filter.json"
                        cpath.write_text(json.dumps(cfg))
                        code, out = run(["check-jsonschema", "--schemafile",
                                         str(SCHEMAS / "estuary-filter-config.json"), str(cpath)])
                        if code != 0:
                            problems.append(f"{where}: embedded filter config:\n{out}")
                else:
                    problems.append(f"{where}: no validator for apiVersion {api}")
                checked += 1
    for p in problems:
        print(p, file=sys.stderr)
    print(f"checked {checked} manifests in {len(files) + len(alternatives)} files: {len(problems)} problem(s)")
    return 1 if problems else 0


def embedded_filter_configs(doc):
    """The Estuary plugin configuration carried by an EnvoyFilter (JSON string)."""
    if doc.get("kind") != "EnvoyFilter":
        return []
    out = []
    for patch in doc["spec"].get("configPatches", []):
        value = patch.get("patch", {}).get("value", {})
        cfg = value.get("typed_config", {}).get("config", {}).get("configuration", {})
        if "value" in cfg:
            out.append(json.loads(cfg["value"]))
    return out


def filter_configs(doc):
    """Every Estuary plugin configuration in a document: EnvoyFilter JSON or WasmPlugin pluginConfig."""
    if doc.get("kind") == "WasmPlugin":
        return [doc["spec"].get("pluginConfig", {})]
    return embedded_filter_configs(doc)


# Keys and environment variable names that hold secrets; their values come from Secrets only.
SECRET_KEYS = {"token", "api_token", "api-token", "secret", "tsig-secret", "eab_hmac_key", "password"}
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|HMAC|PRIVATE", re.IGNORECASE)
SECRET_TOML = re.compile(r"^\s*(api_token|secret|eab_hmac_key)\s*=", re.MULTILINE)


def walk(node, path=""):
    """(path, key, value) for every mapping entry, depth first."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def container_env(doc):
    """(container name, env entry) of a Deployment, or of a Deployment patch."""
    spec = (doc.get("spec") or {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []):
        for e in c.get("env", []):
            yield c.get("name"), e


def policy_problems(docs, patch_docs):
    """The deployment rules that schemas cannot express. Returns a list of problems."""
    problems = []
    everything = docs + patch_docs

    # 1. No secret value in any manifest: no Secret objects, no inline token / secret keys (also
    #    inside the filter configurations), secret-looking env vars only from a secretKeyRef, no
    #    secret in a TOML ConfigMap.
    for where, doc in everything:
        kind = doc.get("kind", "patch")
        if kind == "Secret":
            problems.append(f"{where}: a Secret manifest carries secret values; create it with kubectl instead")
        for tree in [doc] + embedded_filter_configs(doc):
            for path, key, value in walk(tree):
                if key in SECRET_KEYS and isinstance(value, str) and value:
                    problems.append(f"{where} ({kind}): inline `{key}` value at {path or '.'}; "
                                    f"take it from a Secret (the filter: control_plane.token_env)")
        for cname, e in container_env(doc):
            if SECRET_ENV.search(e.get("name", "")) and "secretKeyRef" not in (e.get("valueFrom") or {}):
                problems.append(f"{where}: env {e.get('name')} of container {cname} must come from a secretKeyRef")
        if kind == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if SECRET_TOML.search(text):
                    problems.append(f"{where}: ConfigMap key {key} sets a secret in the file; "
                                    f"use the ESTUARY_<SECTION>__<KEY> variable from a Secret")

    by_kind = {}
    for where, doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append((where, doc))
    gateway_hosts = {h for _, g in by_kind.get("Gateway", []) for s in g["spec"]["servers"] for h in s["hosts"]}
    gateway_selectors = [g["spec"]["selector"] for _, g in by_kind.get("Gateway", [])]
    gateway_namespaces = [{"kubernetes.io/metadata.name": g["metadata"]["namespace"]} for _, g in by_kind.get("Gateway", [])]
    gw_env = {e["name"]: (e.get("valueFrom") or {}).get("secretKeyRef")
              for _, p in patch_docs for c, e in container_env(p) if c == "istio-proxy"}
    envoyfilter_ports = set()

    # 2. Every filter configuration reads its token from the proxy's environment, which the gateway
    #    patch fills from a Secret, and names the hosts it serves.
    def token_env_of(where, cfg):
        name = (cfg.get("control_plane") or {}).get("token_env")
        if not name:
            problems.append(f"{where}: filter configuration without control_plane.token_env")
        elif not gw_env.get(name):
            problems.append(f"{where}: token_env {name} is not set from a Secret by any patch in patches/")
        if not cfg.get("authorities"):
            problems.append(f"{where}: filter configuration without `authorities`")
        return name

    # 3. The EnvoyFilter patches only the EST server: a listener port and the SNI of a Gateway host.
    for where, doc in by_kind.get("EnvoyFilter", []):
        for i, patch in enumerate(doc["spec"]["configPatches"]):
            if patch.get("applyTo") != "HTTP_FILTER":
                continue
            at = f"{where} configPatches[{i}]"
            listener = (patch.get("match") or {}).get("listener") or {}
            sni = (listener.get("filterChain") or {}).get("sni")
            if listener.get("portNumber"):
                envoyfilter_ports.add(listener["portNumber"])
            else:
                problems.append(f"{at}: match.listener.portNumber missing: the filter would patch every listener")
            if not sni:
                problems.append(f"{at}: match.listener.filterChain.sni missing: the filter would patch every server")
            elif sni not in gateway_hosts:
                problems.append(f"{at}: SNI {sni} is not a host of any Gateway server {sorted(gateway_hosts)}")
            config = patch["patch"].get("value", {}).get("typed_config", {}).get("config", {})
            host_keys = config.get("vm_config", {}).get("environment_variables", {}).get("host_env_keys", [])
            for cfg in embedded_filter_configs({"kind": "EnvoyFilter", "spec": {"configPatches": [patch]}}):
                name = token_env_of(at, cfg)
                if name and name not in host_keys:
                    problems.append(f"{at}: token_env {name} is not in vm_config.environment_variables.host_env_keys")
                if sni and sni not in cfg.get("authorities", []):
                    problems.append(f"{at}: SNI {sni} is not in the filter's authorities")

    # 4. The WasmPlugin: on the gateway, narrowed to the EnvoyFilter's port, token from the host env.
    for where, doc in by_kind.get("WasmPlugin", []):
        spec = doc["spec"]
        ports = {p.get("number") for m in spec.get("match", []) for p in m.get("ports", [])}
        if not ports:
            problems.append(f"{where}: match.ports missing: the plugin would run on every gateway listener")
        elif envoyfilter_ports and ports != envoyfilter_ports:
            problems.append(f"{where}: match ports {sorted(ports)} differ from the EnvoyFilter's {sorted(envoyfilter_ports)}")
        if (spec.get("selector") or {}).get("matchLabels") not in gateway_selectors:
            problems.append(f"{where}: selector is not a Gateway's selector")
        name = token_env_of(where, spec.get("pluginConfig", {}))
        host_env = {e["name"] for e in (spec.get("vmConfig") or {}).get("env", []) if e.get("valueFrom") == "HOST"}
        if name and name not in host_env:
            problems.append(f"{where}: token_env {name} is not in vmConfig.env with valueFrom: HOST")

    # 5. The control plane's token comes from the same Secret as the gateway's, and only the
    #    gateway's pods may reach its port.
    gw_refs = [ref for ref in gw_env.values() if ref]
    for where, doc in by_kind.get("Deployment", []):
        for cname, e in container_env(doc):
            if e.get("name") == "ESTUARY_SERVER__API_TOKEN":
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref not in gw_refs:
                    problems.append(f"{where}: ESTUARY_SERVER__API_TOKEN comes from {ref}, the gateway's token from {gw_refs}")
    cp = [d for _, d in by_kind.get("Deployment", []) if any(e.get("name") == "ESTUARY_SERVER__API_TOKEN" for _, e in container_env(d))]
    for d in cp:
        labels = d["spec"]["template"]["metadata"]["labels"]
        ns = d["metadata"]["namespace"]
        policies = [p for _, p in by_kind.get("NetworkPolicy", [])
                    if p["metadata"]["namespace"] == ns
                    and p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
        if not policies:
            problems.append(f"{d['metadata']['name']}: no NetworkPolicy selects the control plane's pods")
        for p in policies:
            if "Ingress" not in p["spec"].get("policyTypes", ["Ingress"]):
                problems.append(f"NetworkPolicy {p['metadata']['name']}: not an Ingress policy")
            for rule in p["spec"].get("ingress", []):
                peers = rule.get("from", [])
                if not peers:
                    problems.append(f"NetworkPolicy {p['metadata']['name']}: an ingress rule without `from` admits everyone")
                for peer in peers:
                    if (peer.get("podSelector", {}).get("matchLabels") not in gateway_selectors
                            or peer.get("namespaceSelector", {}).get("matchLabels") not in gateway_namespaces):
                        problems.append(f"NetworkPolicy {p['metadata']['name']}: admits {peer}, not only the gateway's pods")
    return problems


if __name__ == "__main__":
    sys.exit(main())
