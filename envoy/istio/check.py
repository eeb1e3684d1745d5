#!/usr/bin/env python3
"""Checks the Istio/Kubernetes manifests in this directory as far as offline tools allow.

- yamllint (relaxed) on every file;
- kubernetes-validate --strict on the core Kubernetes kinds (bundled schemas);
- check-jsonschema on the Istio kinds, against the hand-written schemas in schemas/;
- the Estuary filter configuration embedded in the WasmPlugin and the EnvoyFilter against
  schemas/estuary-filter-config.json.
Exits non-zero on the first class of failure, printing every problem found.
"""
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
ISTIO = {
    "Gateway": "gateway.json",
    "VirtualService": "virtualservice.json",
    "WasmPlugin": "wasmplugin.json",
    "EnvoyFilter": "envoyfilter.json",
}
CORE_API = ("v1", "apps/v1", "networking.k8s.io/v1")


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
    if not files:
        print("no manifests found", file=sys.stderr)
        return 1
    problems = []
    code, out = run([sys.executable, "-m", "yamllint", "-d", "{extends: relaxed, rules: {line-length: {max: 120}}}", "--strict", *map(str, files)])
    if code != 0:
        problems.append(f"yamllint:\n{out}")
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for f in files:
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
                    for cfg in embedded_filter_configs(doc):
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
    print(f"checked {checked} manifests in {len(files)} files: {len(problems)} problem(s)")
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


if __name__ == "__main__":
    sys.exit(main())
