"""Kustomize manifests of a federation: the coordinator (SuperLink) Deployment + Service and the site
component render, validate against the Kubernetes schema and run the documented commands."""

from __future__ import annotations

import kubernetes_validate
import pytest
from deploy_support import only, render

VERSION = kubernetes_validate.utils.latest_version()


@pytest.mark.parametrize("kustomization", ["federated/coordinator", "federated/site-example"])
def test_federation_manifests_validate(kustomization: str) -> None:
    for obj in render(kustomization):
        kubernetes_validate.validate(obj, VERSION, strict=True)


def test_coordinator_service_reaches_the_superlink_port() -> None:
    objects = render("federated/coordinator")
    deployment, service = only(objects, "Deployment"), only(objects, "Service")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["healthai", "federate", "coordinator"]
    assert "--secagg" in container["args"] and any(a.startswith("--tls-cert=") for a in container["args"])
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_site_component_names_its_site_and_coordinator() -> None:
    site = only(render("federated/site-example"), "Deployment")
    assert site["metadata"]["namespace"] == "hospital-north"
    container = site["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"SUPERLINK": "federation.example.org:9092", "SITE_NAME": "north"}
    assert container["command"] == ["healthai", "federate", "site"]
    assert any(a.startswith("--auth-key=") for a in container["args"])
