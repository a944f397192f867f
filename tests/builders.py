"""Small builders for cluster specs in tests: each states only what the test cares about.

They return plain spec dicts (what a YAML file would hold); ``build`` validates one and
returns the ``Cluster``::

    cluster = build(make_cluster(make_node("n1", rack="r1"), make_node("n2", gpus=4, rack="r2")))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from models.cluster import Cluster, cluster_from_data


def make_topology(
    gpus: int = 8,
    model: str = "A100",
    *,
    nvswitch: int | None = None,
    nvlinks: Iterable[tuple[int, int, int]] = (),
    numa: Iterable[int] | None = None,
    pcie: Iterable[dict[str, Any]] | None = None,
    nics: Iterable[dict[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A ``topology`` mapping: ``nvlinks`` as ``(gpu_a, gpu_b, links)``, ``nvswitch`` as links per GPU."""
    topo: dict[str, Any] = {"gpus": {"count": gpus, "model": model}}
    if nvswitch is not None:
        topo["nvswitch"] = {"links_per_gpu": nvswitch}
    links = [{"gpus": [a, b], "links": k} for a, b, k in nvlinks]
    if links:
        topo["nvlinks"] = links
    if numa is not None:
        topo["numa"] = list(numa)
    if pcie is not None:
        topo["pcie"] = list(pcie)
    nic_list = list(nics)
    if nic_list:
        topo["nics"] = nic_list
    topo.update(extra)
    return topo


def make_node(
    name: str,
    gpus: int = 8,
    *,
    type: str | None = None,  # noqa: A002 - the spec's key
    topology: dict[str, Any] | None = None,
    clique: str | None = None,
    **levels: str,
) -> dict[str, Any]:
    """A ``nodes[]`` entry; level values as keyword arguments (``rack="r1"``).

    Without ``type`` or ``topology`` the node gets ``gpus`` GPUs on NVSwitch (12 links).
    """
    node: dict[str, Any] = {"name": name}
    if type is not None:
        node["type"] = type
    else:
        node["topology"] = topology if topology is not None else make_topology(gpus, nvswitch=12)
    if levels:
        node["levels"] = dict(levels)
    if clique is not None:
        node["clique"] = clique
    return node


def make_group(name: str, count: int, *, type: str = "dgx-h100", **levels: Any) -> dict[str, Any]:  # noqa: A002
    """A ``groups[]`` entry; a level value may be a string or a pattern dict (``{"every": 2}``)."""
    group: dict[str, Any] = {"name": name, "count": count, "type": type}
    if levels:
        group["levels"] = dict(levels)
    return group


def make_cluster(
    *nodes: dict[str, Any],
    levels: Iterable[str | dict[str, Any]] | None = None,
    groups: Iterable[dict[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A cluster spec dict. ``levels`` defaults to the level keys the nodes use, in first-seen order."""
    group_list = list(groups)
    if levels is None:
        seen: list[str] = []
        for item in [*nodes, *group_list]:
            for key in item.get("levels", {}):
                if key not in seen:
                    seen.append(key)
        levels = seen
    spec: dict[str, Any] = {"name": extra.pop("name", "test"), "levels": [
        lv if isinstance(lv, dict) else {"name": lv} for lv in levels
    ]}
    if nodes:
        spec["nodes"] = list(nodes)
    if group_list:
        spec["groups"] = group_list
    spec.update(extra)
    return spec


def build(spec: dict[str, Any], source: str = "test.yaml") -> Cluster:
    """Validate and expand a spec dict."""
    return cluster_from_data(spec, source)
