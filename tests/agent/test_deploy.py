"""deploy/agent/: the DaemonSet, its minimal RBAC and the own-node policy agree with each other and the CLI."""

from __future__ import annotations

import yaml

from scheduler.agent.discover import GPU_CLIQUE_LABEL, GPU_COUNT_LABEL
from scheduler.cli import build_parser
from tests.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "agent"


def docs(name: str) -> dict[str, dict]:
    """The documents of one manifest file, by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d}


def test_daemonset_runs_discover_publish_on_an_interval_on_gpu_nodes_only():
    ds = docs("daemonset.yaml")["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])  # flags the CLI knows
    assert args.command == "discover" and args.publish and args.interval == 600
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "nvidia.com/gpu" not in str(container.get("resources"))  # takes no GPU from workloads
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_rbac_grants_get_and_patch_on_nodes_and_nothing_else():
    rbac = docs("rbac.yaml")
    assert rbac["ClusterRole"]["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    sa = rbac["ServiceAccount"]["metadata"]
    (subject,) = rbac["ClusterRoleBinding"]["subjects"]
    assert (subject["name"], subject["namespace"]) == (sa["name"], sa["namespace"])
    ds = docs("daemonset.yaml")["DaemonSet"]
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    assert ds["metadata"]["namespace"] == sa["namespace"]


def test_own_node_policy_names_the_agent_and_its_labels():
    policy = docs("own-node-policy.yaml")
    sa = docs("rbac.yaml")["ServiceAccount"]["metadata"]
    spec = policy["ValidatingAdmissionPolicy"]["spec"]
    assert f"system:serviceaccount:{sa['namespace']}:{sa['name']}" in spec["matchConditions"][0]["expression"]
    own = spec["variables"][0]["expression"]
    for label in ("nvidia.com/gpu.product", GPU_COUNT_LABEL, "nvidia.com/gpu.memory", GPU_CLIQUE_LABEL):
        assert f"'{label}'" in own
    binding = policy["ValidatingAdmissionPolicyBinding"]["spec"]
    assert binding["policyName"] == policy["ValidatingAdmissionPolicy"]["metadata"]["name"]
