#!/usr/bin/env bash
# Lints the Dockerfile (hadolint), renders every kustomize overlay and validates it (kubernetes-validate --strict),
# inspects it for what a fleet needs (scripts/lib/k8s-inspect.py: no replica count beside an HPA, probes, disruption
# budget, bounded emptyDirs, spread, requests = limits, a sluice.toml that fits the memory limit), checks the Prometheus alert rules (promtool) and checks the routing policy
# against the example models (sluice check) and the shipped sluice.toml with `sluice --check-config`. Installs what it needs: a venv for the Python tools, Debian's prometheus package for promtool.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

venv="$root/.venv-tools"
want="$(sha256sum deploy/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt
  echo "$want" > "$venv/.requirements.sha256"
fi
scripts/lib/debian-install.sh promtool=prometheus

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl (with its built-in kustomize v4 or later) is needed to render k8s/; it is on the CI machine." >&2
  echo "Install it from https://kubernetes.io/docs/tasks/tools/ (Debian's kubernetes-client 1.20 is too old)." >&2
  exit 1
fi

echo "hadolint Dockerfile" >&2
"$venv/bin/hadolint" Dockerfile

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for overlay in base overlays/production overlays/canary overlays/autoscale-inflight overlays/grpc-probes overlays/bucket; do
  echo "kustomize + kubernetes-validate --strict: k8s/$overlay" >&2
  kubectl kustomize "k8s/$overlay" > "$tmp/rendered.yaml"
  "$venv/bin/kubernetes-validate" --strict --quiet "$tmp/rendered.yaml"
  # The alert rules (PrometheusRule spec) and the routing policy each overlay ships.
  "$venv/bin/python" - "$tmp/rendered.yaml" "$tmp" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rule = next(d for d in docs if d["kind"] == "PrometheusRule")
yaml.safe_dump(rule["spec"], open(f"{sys.argv[2]}/rules.yml", "w"))
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("sluice-config"))
routing = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sluice-routing")
open(f"{sys.argv[2]}/routing.toml", "w").write(routing["data"]["routing.toml"])
open(f"{sys.argv[2]}/sluice.toml", "w").write(config["data"]["sluice.toml"])
PY
  "$venv/bin/python" scripts/lib/k8s-inspect.py "$tmp/rendered.yaml" || { echo "k8s/$overlay: fleet checks failed" >&2; exit 1; }
  promtool check rules "$tmp/rules.yml"
  cp deploy/alert-tests.yml "$tmp/alert-tests.yml"
  promtool test rules "$tmp/alert-tests.yml"
  target/debug/sluice check models --routing "$tmp/routing.toml" > "$tmp/check.log" || { cat "$tmp/check.log"; exit 1; }
  # The configuration the overlay ships, as sluice itself reads it: a bad key or value fails here, not in the pods.
  # The admin token file is a mounted Secret in the pod; a stand-in here.
  echo "lint-token" > "$tmp/admin-token"
  SLUICE__ADMIN__TOKEN_FILE="$tmp/admin-token" target/debug/sluice --config "$tmp/sluice.toml" --check-config >/dev/null
done
echo "Grafana dashboard: every query parses (promtool) and names only metrics sluice exports" >&2
"$venv/bin/python" - deploy/grafana/sluice-dashboard.json src/metrics "$tmp/dashboard-rules.yml" <<'PY'
import json, pathlib, re, sys, yaml
dashboard = json.load(open(sys.argv[1]))
sources = "".join(f.read_text() for f in sorted(pathlib.Path(sys.argv[2]).glob("*.rs")))
exported = set(re.findall(r'"(sluice_[a-z_]+)"', sources))
assert len(exported) > 20, f"found only {sorted(exported)} in {sys.argv[2]}"
exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
for expr in exprs:
    for name in re.findall(r"sluice_[a-z_]+", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base not in exported:
            sys.exit(f"dashboard query uses {name}, which sluice does not export: {expr}")
rules = [{"record": f"dashboard:query_{i}", "expr": e.replace("$model", ".*")} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[3], "w"))
PY
promtool check rules "$tmp/dashboard-rules.yml" >/dev/null

echo "deployment files OK" >&2
