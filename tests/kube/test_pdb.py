"""policy/v1 PodDisruptionBudgets on the test apiserver, through the official client's PolicyV1Api."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from .apiserver import ApiServer

NS = "ml"


def make_pdb(name: str, *, ns: str = NS, selector: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": selector if selector is not None else {"matchLabels": {"app": name}}, **spec}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": ns},
            "spec": body}


@pytest.fixture
def policy(apiserver: ApiServer) -> Iterator[client.PolicyV1Api]:
    api_client = apiserver.api_client()
    yield client.PolicyV1Api(api_client)
    api_client.close()


def test_create_resets_the_status_and_the_controller_writes_it_through_the_subresource(policy):
    sent = {**make_pdb("db", maxUnavailable=1), "status": {"disruptionsAllowed": 5}}
    made = policy.create_namespaced_pod_disruption_budget(NS, sent, _preload_content=False)
    obj = json.loads(made.data)
    assert obj["status"] == {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
    assert obj["metadata"]["generation"] == 1
    obj["status"]["disruptionsAllowed"] = 1
    policy.replace_namespaced_pod_disruption_budget_status("db", NS, obj)
    got = policy.read_namespaced_pod_disruption_budget("db", NS)
    assert got.status.disruptions_allowed == 1
    assert got.metadata.generation == 1  # a status write does not bump the generation


def test_listed_and_watched_across_namespaces(apiserver, policy):
    apiserver.store.create("poddisruptionbudgets", make_pdb("a", ns="ml", minAvailable=1))
    apiserver.store.create("poddisruptionbudgets.policy", make_pdb("b", ns="web", minAvailable="50%"))
    listed = policy.list_pod_disruption_budget_for_all_namespaces()
    assert sorted((p.metadata.namespace, p.metadata.name) for p in listed.items) == [("ml", "a"), ("web", "b")]
    stream = watch.Watch().stream(policy.list_pod_disruption_budget_for_all_namespaces,
                                  resource_version=listed.metadata.resource_version, timeout_seconds=5)
    apiserver.store.mutate("poddisruptionbudgets", "a", "ml",
                           lambda p: p["status"].update(disruptionsAllowed=2))
    event = next(stream)
    assert event["type"] == "MODIFIED" and event["object"].status.disruptions_allowed == 2


@pytest.mark.parametrize("spec,field", [
    ({"minAvailable": 1, "maxUnavailable": 1}, "spec"),
    ({"maxUnavailable": -1}, "spec.maxUnavailable"),
    ({"minAvailable": "150%"}, "spec.minAvailable"),
    ({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}, "spec.selector.matchExpressions[0].values"),
    ({"selector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}},
     "spec.selector.matchExpressions[0].operator"),
    ({"unhealthyPodEvictionPolicy": "Sometimes"}, "spec.unhealthyPodEvictionPolicy"),
])
def test_invalid_specs_are_422_naming_the_field(policy, spec, field):
    body = make_pdb("bad", **({"selector": spec.pop("selector")} if "selector" in spec else {}), **spec)
    with pytest.raises(client.ApiException) as err:
        policy.create_namespaced_pod_disruption_budget(NS, body)
    assert err.value.status == 422
    causes = json.loads(err.value.body)["details"]["causes"]
    assert field in [c["field"] for c in causes]


def test_served_in_discovery(apiserver):
    api_client = apiserver.api_client()
    try:
        resources = client.PolicyV1Api(api_client).get_api_resources()
    finally:
        api_client.close()
    pdb = next(r for r in resources.resources if r.name == "poddisruptionbudgets")
    assert pdb.namespaced and pdb.kind == "PodDisruptionBudget" and "watch" in pdb.verbs
    assert any(r.name == "poddisruptionbudgets/status" for r in resources.resources)
