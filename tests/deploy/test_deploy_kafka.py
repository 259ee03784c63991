"""deploy/k8s/kafka: the consumer Deployment and Strimzi KafkaTopics render; Kubernetes objects
validate against the Kubernetes schemas; the KafkaTopics are checked against the fields of Strimzi's
v1beta2 KafkaTopic spec written out below (the CRD's OpenAPI schema is not available offline here,
so they are not validated against the CRD itself); the settings are real Settings fields."""

from __future__ import annotations

import kubernetes_validate
import pytest
from deploy_support import of_kind, only, render

from healthai.app.settings import load_settings
from healthai.ingest.kafka.settings import KafkaSettings

K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
# Strimzi 0.4x KafkaTopic (kafka.strimzi.io/v1beta2) spec fields and their types
TOPIC_SPEC = {"topicName": str, "partitions": int, "replicas": int, "config": dict}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_objects_validate(version: str) -> None:
    objects = render("kafka")
    assert {"Deployment", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= {
        o["kind"] for o in objects}
    for obj in objects:
        if obj["apiVersion"].startswith("kafka.strimzi.io/"):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {list(e.path)}: {e.message}")
        assert obj["metadata"].get("namespace") == "healthai", obj["kind"]


def test_kafka_topics_match_the_strimzi_spec_and_the_dlq_is_wide_enough() -> None:
    topics = {t["spec"]["topicName"]: t for t in of_kind(render("kafka"), "KafkaTopic")}
    assert set(topics) == {"health-events", "health-events.dlq"}
    for t in topics.values():
        assert t["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert t["metadata"]["labels"]["strimzi.io/cluster"] and t["metadata"]["namespace"] == "kafka"
        assert set(t["spec"]) <= set(TOPIC_SPEC), set(t["spec"]) - set(TOPIC_SPEC)
        for name, typ in TOPIC_SPEC.items():
            assert isinstance(t["spec"][name], typ), name
        assert t["spec"]["partitions"] >= 1 and 1 <= t["spec"]["replicas"] <= 32767
        assert all(isinstance(v, str | int) for v in t["spec"]["config"].values())
    assert topics["health-events.dlq"]["spec"]["partitions"] >= topics["health-events"]["spec"]["partitions"]


def test_consumer_settings_load_and_name_mounted_files(tmp_path) -> None:
    objects = render("kafka")
    deployment = only(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["healthai", "ingest-kafka"]
    env = only(objects, "ConfigMap")["data"]
    settings = load_settings(environ=env)
    assert settings.kafka.topic == "health-events" and settings.kafka.security_protocol == "SSL"
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for path in (settings.kafka.ssl_ca_location, settings.kafka.ssl_certificate_location,
                 settings.kafka.ssl_key_location, settings.pseudonym_key_file):
        assert any(str(path).startswith(m + "/") for m in mounts), path
    assert deployment["spec"]["replicas"] <= min(
        t["spec"]["partitions"] for t in of_kind(objects, "KafkaTopic"))
    # every HEALTHAI_KAFKA__* name is a field (unknown names would be skipped silently)
    for name in env:
        if name.startswith("HEALTHAI_KAFKA__"):
            assert name.removeprefix("HEALTHAI_KAFKA__").lower() in KafkaSettings.model_fields, name
