"""NetworkPolicy rule peers as rendered: exactly the documented ones (deploy/README.md, "NetworkPolicy";
kafka/networkpolicy.yaml). Kustomize `labels` with `includeSelectors: true` writes its labels into the
podSelector of every ingress/egress peer too, which silently narrowed the clients to healthai-labelled
pods and DNS to kube-dns pods that never carry healthai's labels; the policies' own selectors are
checked in test_deploy_manifests.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deploy_support import K8S, KUSTOMIZATIONS, of_kind, only, render

SERVER_LABELS = {
    "app.kubernetes.io/name": "healthai",
    "app.kubernetes.io/part-of": "healthai",
    "app.kubernetes.io/component": "server",
}
KAFKA_LABELS = {
    "app.kubernetes.io/name": "healthai-ingest-kafka",
    "app.kubernetes.io/part-of": "healthai",
    "app.kubernetes.io/component": "kafka-consumer",
}

CLIENTS = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"healthai.io/client": "true"}}}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
KUBE_DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]

SERVER_INGRESS = [
    {"from": [CLIENTS], "ports": [{"port": "grpc", "protocol": "TCP"}]},
    {"from": [MONITORING], "ports": [{"port": "metrics", "protocol": "TCP"}]},
]
SERVER_DNS = {"to": [KUBE_DNS], "ports": DNS_PORTS}
HTTPS_ANYWHERE = {"ports": [{"port": 443, "protocol": "TCP"}]}

# kustomization -> (the policy's pod labels, ingress rules, egress rules), as documented.
EXPECTED: dict[str, tuple[dict[str, str], list[Any], list[Any]]] = {
    "base": (SERVER_LABELS, SERVER_INGRESS, [SERVER_DNS]),
    "overlays/dev": (SERVER_LABELS, SERVER_INGRESS, [SERVER_DNS]),
    "overlays/prod": (SERVER_LABELS, SERVER_INGRESS, [SERVER_DNS, HTTPS_ANYWHERE]),
    "kafka": (
        KAFKA_LABELS,
        [{"from": [MONITORING], "ports": [{"port": 9464, "protocol": "TCP"}]}],
        [{"ports": DNS_PORTS},
         {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}],
          "ports": [{"port": 9093, "protocol": "TCP"}]},
         HTTPS_ANYWHERE],
    ),
}


def _kustomizations() -> list[str]:
    """Every directory under deploy/k8s that `kubectl kustomize` renders (Components excluded)."""
    found = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent.relative_to(K8S).as_posix())
    return found


def test_every_kustomization_with_a_networkpolicy_is_checked_here() -> None:
    assert set(KUSTOMIZATIONS) <= set(_kustomizations())
    with_policy = {k for k in _kustomizations() if of_kind(render(k), "NetworkPolicy")}
    assert with_policy == set(EXPECTED)


@pytest.mark.parametrize("kustomization", sorted(EXPECTED))
def test_networkpolicy_rule_peers_are_exactly_the_documented_ones(kustomization: str) -> None:
    pod_labels, ingress, egress = EXPECTED[kustomization]
    policy = only(render(kustomization), "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": pod_labels}
    assert policy["spec"]["ingress"] == ingress
    assert policy["spec"]["egress"] == egress
    # The bug class on its own: no peer selects by the policy's own (app.kubernetes.io/*) labels.
    for rule in [*policy["spec"]["ingress"], *policy["spec"]["egress"]]:
        for peer in [*rule.get("from", []), *rule.get("to", [])]:
            for selector in (peer.get("podSelector", {}), peer.get("namespaceSelector", {})):
                leaked = set(selector.get("matchLabels", {})) & set(pod_labels)
                assert not leaked, f"{kustomization}: rule peer {peer} selects on {sorted(leaked)}"


@pytest.mark.parametrize("kustomization", sorted(EXPECTED))
def test_workload_selectors_are_unchanged(kustomization: str) -> None:
    """A Deployment's selector is immutable: changing it breaks `kubectl apply` on a live cluster."""
    pod_labels = EXPECTED[kustomization][0]
    objects = render(kustomization)
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["selector"] == {"matchLabels": pod_labels}
    assert pod_labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert only(objects, "PodDisruptionBudget")["spec"]["selector"] == {"matchLabels": pod_labels}
    for service in of_kind(objects, "Service"):
        assert service["spec"]["selector"] == pod_labels
    for constraint in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        spread = constraint["labelSelector"]["matchLabels"]  # counts this Deployment's pods, no others
        assert spread.items() <= pod_labels.items() and "app.kubernetes.io/component" in spread
