"""deploy/extender/: the kube-scheduler configuration and the Deployment agree with each other and with the server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scheduler.cli import build_parser
from scheduler.extender.http import VERBS, normalize_prefix, parse_listen

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "extender"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


@pytest.fixture(scope="module")
def config() -> dict:
    (doc,) = docs("kube-scheduler-config.yaml")
    return doc


@pytest.fixture(scope="module")
def pod_spec() -> dict:
    deployment = next(d for d in docs("deployment.yaml") if d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]


def container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def toposched_args(pod_spec: dict):
    c = container(pod_spec, "toposched")
    return build_parser().parse_args(c["args"])


def test_configuration_is_kube_scheduler_v1_with_every_node_scored(config):
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert config["percentageOfNodesToScore"] == 100


def test_extender_stanza(config):
    (ext,) = config["extenders"]
    assert {ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"], ext["preemptVerb"]} == set(VERBS)
    # one step of our 0..10 scale (weight * 10) outweighs the default score plugins (12 weights x 100)
    assert ext["weight"] * 10 > 12 * 100
    assert ext["nodeCacheCapable"] is True
    assert ext["ignorable"] is False
    assert ext["managedResources"] == [{"name": "nvidia.com/gpu", "ignoredByScheduler": True}]
    seconds = float(re.fullmatch(r"(\d+(?:\.\d+)?)s", ext["httpTimeout"]).group(1))
    assert 0 < seconds <= 5


def test_url_prefix_points_at_the_sidecar(config, pod_spec):
    args = toposched_args(pod_spec)
    assert args.mode == "extender"
    host, port = parse_listen(args.listen)
    assert config["extenders"][0]["urlPrefix"] == f"http://{host}:{port}{normalize_prefix(args.url_prefix)}"
    assert host == "127.0.0.1"  # loopback: same pod, no Service


def test_profile_name_is_the_one_toposched_follows(config, pod_spec):
    (profile,) = config["profiles"]
    assert profile["schedulerName"] == toposched_args(pod_spec).scheduler_name == "toposched"


def test_kube_scheduler_image_and_config_mount(pod_spec):
    ks = container(pod_spec, "kube-scheduler")
    assert re.fullmatch(r"registry\.k8s\.io/kube-scheduler:v1\.31\.\d+", ks["image"])
    flag = next(a for a in ks["command"] if a.startswith("--config="))
    mount = next(m for m in ks["volumeMounts"] if flag.split("=", 1)[1].startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    (kustomization,) = docs("kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    assert volume["configMap"]["name"] == generator["name"]
    assert Path(flag).name == generator["files"][0] == "kube-scheduler-config.yaml"


def test_service_account_and_lease_rights_match(config, pod_spec):
    rbac = docs("rbac.yaml")
    sa = pod_spec["serviceAccountName"]
    assert any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == sa for d in rbac)
    lease = config["leaderElection"]
    role = next(d for d in rbac if d["kind"] == "Role" and d["metadata"]["name"].endswith("-lease"))
    assert role["metadata"]["namespace"] == lease["resourceNamespace"]
    assert any(lease["resourceName"] in r.get("resourceNames", []) for r in role["rules"])
    extender_role = next(d for d in rbac if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "toposched-extender")
    granted = {(res, verb) for r in extender_role["rules"] for res in r["resources"] for verb in r["verbs"]}
    assert {("pods/binding", "create"), ("nodes", "watch"), ("pods", "watch"), ("events", "create"),
            ("poddisruptionbudgets", "list"), ("poddisruptionbudgets", "watch")} <= granted
