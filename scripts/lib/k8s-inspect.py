#!/usr/bin/env python3
"""Checks a rendered kustomize overlay (multi-document YAML) for what a fleet of sluice pods needs, beyond schema
validity. Run by scripts/lib/lint-deploy.sh for every overlay; prints each failure and exits 1 on any.

- The Deployment has no replica count when an HPA scales it (an apply would reset the HPA's count).
- Startup and liveness probes use /v2/health/live (or gRPC health 'liveness'); readiness uses /v2/health/ready (or
  gRPC health 'inference.GRPCInferenceService') with at least 3 failures and a
  timeout of at least 2 s, so one slow answer does not take a pod out of the Service.
- The PodDisruptionBudget allows one pod down at a time (maxUnavailable: 1, not minAvailable) and lets unhealthy
  pods be evicted (unhealthyPodEvictionPolicy: AlwaysAllow).
- Every emptyDir has a sizeLimit, and the serving container requests ephemeral storage for them.
- Pods spread over nodes and zones (topologySpreadConstraints on kubernetes.io/hostname and
  topology.kubernetes.io/zone).
- Every container requests what it is limited to, CPU and memory (Guaranteed QoS: the last pods evicted).
- The shipped sluice.toml fits the serving container's memory limit: the memory budget sluice derives from it (the
  limit, less a fifth or 64 MiB and an allowance for what is resident) holds at least four of the largest requests
  (4x server.max_body_bytes each), and limits.max_inflight_bytes is derived (0) or within that budget.
- Exposure: a NetworkPolicy selects the server pods and admits each of their ports (inference, metrics, management)
  only from chosen peers; the management API has its own port (admin.port in sluice.toml, a container port named
  admin) that the Service does not expose; no secret reaches a container as an environment variable (but an object
  store's static keys, sluice-bucket-credentials, which the S3 client reads from the environment only), and the
  admin token file lies in a mounted Secret.
- The server configuration (read at start only) is a ConfigMap whose name carries a content hash, so an edit rolls
  the pods; the routing policy (re-read live) is a separate ConfigMap with a stable name.
"""
import sys
import tomllib

import yaml

MIB = 1 << 20
# What a request holds per body byte before sluice has learned better (memory::footprint), and what the inspection
# allows for the process and loaded models at start.
PER_BODY_BYTE = 4
RESIDENT_ALLOWANCE = 128 * MIB

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
failures = []


def one(kind):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        failures.append(f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


deployment = one("Deployment")
hpa = one("HorizontalPodAutoscaler")
pdb = one("PodDisruptionBudget")
spec = deployment.get("spec", {})
pod = spec.get("template", {}).get("spec", {})
server = next((c for c in pod.get("containers", []) if c["name"] == "sluice"), {})

if hpa.get("spec", {}).get("scaleTargetRef", {}).get("name") == deployment.get("metadata", {}).get("name"):
    if "replicas" in spec:
        failures.append("Deployment sets replicas although an HPA scales it")

# Each probe over HTTP (the path) or gRPC (the grpc.health.v1 service name that answers the same question).
for probe, path, service in (("startupProbe", "/v2/health/live", "liveness"),
                             ("livenessProbe", "/v2/health/live", "liveness"),
                             ("readinessProbe", "/v2/health/ready", "inference.GRPCInferenceService")):
    checks = server.get(probe, {})
    if "grpc" in checks:
        got = checks["grpc"].get("service", "")
        if got != service:
            failures.append(f"{probe} asks gRPC health for '{got}', not '{service}'")
    else:
        got = checks.get("httpGet", {}).get("path")
        if got != path:
            failures.append(f"{probe} checks {got}, not {path}")
readiness = server.get("readinessProbe", {})
if readiness.get("failureThreshold", 3) < 3:
    failures.append(f"readinessProbe failureThreshold {readiness.get('failureThreshold')} < 3")
if readiness.get("timeoutSeconds", 1) < 2:
    failures.append(f"readinessProbe timeoutSeconds {readiness.get('timeoutSeconds', 1)} < 2")

budget = pdb.get("spec", {})
if "minAvailable" in budget or budget.get("maxUnavailable") != 1:
    failures.append(f"PodDisruptionBudget should be maxUnavailable: 1, is {budget}")
if budget.get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
    failures.append("PodDisruptionBudget lacks unhealthyPodEvictionPolicy: AlwaysAllow")

for volume in pod.get("volumes", []):
    if "emptyDir" in volume and not (volume["emptyDir"] or {}).get("sizeLimit"):
        failures.append(f"emptyDir volume {volume['name']} has no sizeLimit")
if "ephemeral-storage" not in server.get("resources", {}).get("requests", {}):
    failures.append("the sluice container requests no ephemeral-storage for its emptyDirs")

keys = {c.get("topologyKey") for c in pod.get("topologySpreadConstraints", [])}
for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
    if key not in keys:
        failures.append(f"no topologySpreadConstraint on {key}")

maps = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
configs = [m for m in maps if m.startswith("sluice-config-")]
if len(configs) != 1:
    failures.append(f"the server configuration should be one hashed ConfigMap sluice-config-<hash>, found {maps}")
if "sluice-routing" not in maps:
    failures.append(f"no ConfigMap sluice-routing (the routing policy, stable name) among {maps}")
mounted = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
if not set(configs) <= mounted or "sluice-routing" not in mounted:
    failures.append(f"the pod mounts {sorted(mounted)}, not the hashed config and sluice-routing")

def quantity(text):
    """A Kubernetes quantity (as these manifests write them) in its base unit."""
    text = str(text)
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("m", 0.001)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


for container in pod.get("initContainers", []) + pod.get("containers", []):
    resources = container.get("resources", {})
    for resource in ("cpu", "memory"):
        request = resources.get("requests", {}).get(resource)
        limit = resources.get("limits", {}).get(resource)
        if request is None or limit is None or quantity(request) != quantity(limit):
            failures.append(f"container {container['name']}: {resource} request {request} is not its limit {limit}")

config_map = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("sluice-config-")),
                  None)
settings = tomllib.loads(config_map.get("data", {}).get("sluice.toml", "")) if config_map else {}
memory_limit = server.get("resources", {}).get("limits", {}).get("memory")
if config_map and memory_limit:
    limit = quantity(memory_limit)
    budget = limit - max(limit / 5, 64 * MIB) - RESIDENT_ALLOWANCE
    # sluice's own default when the file does not set it.
    max_body = settings.get("server", {}).get("max_body_bytes", 64 * MIB)
    largest = PER_BODY_BYTE * max_body
    if 4 * largest > budget:
        failures.append(f"server.max_body_bytes {max_body} does not fit a {memory_limit} pod: four of the largest "
                        f"requests need {4 * largest / MIB:.0f} MiB, the memory budget is about {budget / MIB:.0f} MiB")
    configured = settings.get("limits", {}).get("max_inflight_bytes", 0)
    if configured and configured > budget:
        failures.append(f"limits.max_inflight_bytes {configured} is over the memory budget of a {memory_limit} pod "
                        f"(about {budget / MIB:.0f} MiB)")
elif not memory_limit:
    failures.append("the sluice container has no memory limit")

policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
selecting = [p for p in policies
             if p["spec"].get("podSelector", {}).get("matchLabels", {}).items() <= pod_labels.items()
             and "Ingress" in p["spec"].get("policyTypes", [])]
if not selecting:
    failures.append("no NetworkPolicy restricts ingress to the server pods")
else:
    admitted = {port.get("port") for p in selecting for rule in p["spec"].get("ingress", [])
                for port in rule.get("ports", []) if rule.get("from")}
    for port in server.get("ports", []):
        if port.get("name") not in admitted and port.get("containerPort") not in admitted:
            failures.append(f"the NetworkPolicy does not say who may reach port {port.get('name')}")
    if any(not rule.get("from") for p in selecting for rule in p["spec"].get("ingress", [])):
        failures.append("a NetworkPolicy ingress rule admits every peer")

admin_port = settings.get("admin", {}).get("port", 0)
if not admin_port:
    failures.append("sluice.toml serves the management API on the inference port (set admin.port)")
container_ports = {p.get("name"): p.get("containerPort") for p in server.get("ports", [])}
if container_ports.get("admin") != admin_port:
    failures.append(f"the sluice container's port 'admin' is {container_ports.get('admin')}, not admin.port {admin_port}")
service = one("Service")
for port in service.get("spec", {}).get("ports", []):
    if port.get("targetPort") in ("admin", admin_port) or port.get("port") == admin_port:
        failures.append(f"the Service exposes the management API ({port})")
for container in pod.get("initContainers", []) + pod.get("containers", []):
    for variable in container.get("env", []):
        if "secretKeyRef" in variable.get("valueFrom", {}):
            failures.append(f"container {container['name']}: secret in environment variable {variable['name']}")
    # One exception: an object store's static keys (MinIO, SeaweedFS, Ceph), which the S3 client reads from the
    # environment only; cloud buckets use workload identity (a token file) instead.
    for source in container.get("envFrom", []):
        name = source.get("secretRef", {}).get("name")
        if name and name != "sluice-bucket-credentials":
            failures.append(f"container {container['name']}: Secret {name} as environment variables")
token_file = settings.get("admin", {}).get("token_file", "")
secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
secret_mounts = [m["mountPath"] for m in server.get("volumeMounts", []) if m["name"] in secret_volumes]
if not token_file or not any(token_file.startswith(path.rstrip("/") + "/") for path in secret_mounts):
    failures.append(f"admin.token_file {token_file!r} is not in a mounted Secret ({secret_mounts})")

for failure in failures:
    print(f"k8s-inspect: {failure}", file=sys.stderr)
sys.exit(1 if failures else 0)
