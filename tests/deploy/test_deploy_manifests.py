"""Kustomize base + overlays: they render, every object validates against the Kubernetes schemas
(kubernetes-validate ships them: offline), and the invariants the deployment relies on hold."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
from deploy_support import (
    DEPLOY,
    KUSTOMIZATIONS,
    OVERLAYS,
    of_kind,
    only,
    pod_spec,
    render,
    server_container,
    settings_env,
)

# The oldest cluster the manifests support (lifecycle.preStop.sleep is on by default from 1.30; gRPC
# probes are GA since 1.27) and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def _labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are used here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pod_labels(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(kustomization: str, version: str) -> None:
    objects = render(kustomization)
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= {
        o["kind"] for o in objects}
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            pytest.fail(f"{kustomization}: {obj['kind']}/{obj['metadata']['name']} at {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{kustomization}: no schema to validate against: {e.message}")


def test_schema_validation_rejects_what_a_cluster_would() -> None:
    """The validator is strict: a misspelt field or a named port in a gRPC probe fails here."""
    deployment = only(render("overlays/prod"), "Deployment")
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError, match="'replica' was unexpected"):
        kubernetes_validate.validate(typo, "1.30", strict=True)
    container = {**server_container(render("overlays/prod")), "readinessProbe": {"grpc": {"port": "grpc"}}}
    spec = {**pod_spec(render("overlays/prod")), "containers": [container]}
    named = {**deployment, "spec": {**deployment["spec"], "template": {"spec": spec}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="'grpc' is not of type 'integer'"):
        kubernetes_validate.validate(named, "1.30", strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_are_native_grpc_on_the_health_port(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    container = server_container(objects)
    env = settings_env(objects)
    health_port = int(env.get("HEALTHAI_HEALTH_PORT") or env["HEALTHAI_PORT"])
    container_ports = {p["containerPort"] for p in container["ports"]}
    for name in PROBES:
        probe = container[name]
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{name}: {probe}"
        assert probe["grpc"]["port"] == health_port, f"{name} probes {probe['grpc']['port']}"
    assert health_port in container_ports
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    assert grpc_port == int(env["HEALTHAI_PORT"])
    assert env["HEALTHAI_HOST"] == "0.0.0.0", "the server must listen on the pod IP, not loopback"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_never_target_the_main_port(overlay: str) -> None:
    """The main port sheds load (gRPC core's pending-call limit, max_concurrent_rpcs): a probe there
    could fail on a busy pod and get it restarted mid-load. Every overlay probes the health-only port."""
    objects = render(f"overlays/{overlay}")
    env = settings_env(objects)
    assert env.get("HEALTHAI_HEALTH_PORT"), "HEALTHAI_HEALTH_PORT unset: the probes would hit the main port"
    assert int(env["HEALTHAI_HEALTH_PORT"]) != int(env["HEALTHAI_PORT"])
    container = server_container(objects)
    health = [p for p in container["ports"] if p["containerPort"] == int(env["HEALTHAI_HEALTH_PORT"])]
    assert [p["name"] for p in health] == ["grpc-health"]
    for name in PROBES:
        assert container[name]["grpc"]["port"] == int(env["HEALTHAI_HEALTH_PORT"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_port_is_exposed_where_prometheus_looks(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    env = settings_env(objects)
    port = int(env["HEALTHAI_OBSERVABILITY__METRICS_PORT"])
    assert env["HEALTHAI_OBSERVABILITY__METRICS_HOST"] == "0.0.0.0"
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in server_container(objects)["ports"]
    annotations = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_with_a_locked_down_container(overlay: str) -> None:
    spec = pod_spec(render(f"overlays/{overlay}"))
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] > 0 and pod_sc["runAsGroup"] > 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "runAsUser" not in sc or sc["runAsUser"] > 0, container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_is_headless_and_selects_the_pods(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    service = only(objects, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert _labels_match({"matchLabels": service["spec"]["selector"]}, _pod_labels(objects))
    names = {p["name"] for p in server_container(objects)["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in names, f"Service port {port['name']} targets a missing container port"


@pytest.mark.parametrize("kustomization", ["base", "overlays/prod"])
def test_hpa_targets_the_deployment_which_leaves_replicas_to_it(kustomization: str) -> None:
    objects = render(kustomization)
    hpa, deployment = only(objects, "HorizontalPodAutoscaler"), only(objects, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "a fixed replicas field fights the HPA on every apply"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Utilization targets are a fraction of the CPU request: it must be set.
    assert server_container(objects)["resources"]["requests"]["cpu"]


def test_dev_runs_one_replica_without_an_autoscaler() -> None:
    objects = render("overlays/dev")
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    assert only(objects, "Deployment")["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_and_networkpolicy_select_the_pods(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    labels = _pod_labels(objects)
    assert _labels_match(only(objects, "PodDisruptionBudget")["spec"]["selector"], labels)
    policy = only(objects, "NetworkPolicy")
    assert _labels_match(policy["spec"]["podSelector"], labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    port_names = {p["name"] for p in server_container(objects)["ports"]}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in port_names, f"NetworkPolicy opens unknown port {port['port']}"
    deployment_selector = only(objects, "Deployment")["spec"]["selector"]
    assert _labels_match(deployment_selector, labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_set_and_limits_cover_requests(overlay: str) -> None:
    quantity = re.compile(r"^(\d+)(m|Mi|Gi)?$")
    scale = {None: 1, "m": 1e-3, "Mi": 2**20, "Gi": 2**30}
    for container in [*pod_spec(render(f"overlays/{overlay}")).get("initContainers", []),
                      *pod_spec(render(f"overlays/{overlay}"))["containers"]]:
        res = container["resources"]
        for kind in ("cpu", "memory"):
            req, lim = (quantity.match(str(res[side][kind])) for side in ("requests", "limits"))
            assert req and lim, f"{container['name']} {kind}: {res}"
            assert int(lim[1]) * scale[lim[2]] >= int(req[1]) * scale[req[2]], container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_mount_has_a_volume_and_every_reference_resolves(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    spec = pod_spec(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounted = set()
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']} mounts missing volume {mount['name']}"
            mounted.add(mount["name"])
    assert mounted == set(volumes), f"unused volumes: {set(volumes) - mounted}"
    pvcs = {o["metadata"]["name"] for o in of_kind(objects, "PersistentVolumeClaim")}
    configmaps = {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")}
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in pvcs
    for source in server_container(objects)["envFrom"]:
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in configmaps
    assert len({o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}) == 1


def _secret_names(objects: tuple[dict[str, Any], ...]) -> set[str]:
    spec = pod_spec(objects)
    names = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    names |= {s["secretRef"]["name"] for s in server_container(objects)["envFrom"] if "secretRef" in s}
    return names


def test_prod_commits_no_secret_and_documents_how_to_create_each() -> None:
    objects = render("overlays/prod")
    assert of_kind(objects, "Secret") == [], "prod secrets are created outside the repository"
    readme = (DEPLOY / "README.md").read_text()
    names = _secret_names(objects)
    assert {"healthai-pseudonym-key", "healthai-tls", "healthai-api-keys", "healthai-object-store"} <= names
    for name in names:
        assert re.search(rf"kubectl -n healthai create secret \w+ {name}\b", readme), (
            f"deploy/README.md shows no `kubectl -n healthai create secret ... {name}`")


def test_dev_generates_only_labelled_placeholder_secrets() -> None:
    objects = render("overlays/dev")
    generated = {o["metadata"]["name"]: o for o in of_kind(objects, "Secret")}
    assert _secret_names(objects) <= set(generated), "dev must render every secret it mounts"
    for secret in generated.values():
        assert secret["metadata"]["labels"]["healthai.io/placeholder"] == "true"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_pin_one_image_tag_for_every_container(overlay: str) -> None:
    spec = pod_spec(render(f"overlays/{overlay}"))
    images = {c["image"] for c in [*spec.get("initContainers", []), *spec["containers"]]}
    assert len(images) == 1, images
    name, _, tag = images.pop().rpartition(":")
    assert name and tag and tag != "latest"
