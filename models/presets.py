"""Presets shipped with the package: node types and clusters, read from package data.

Node types live in ``models/data/node_types/<name>.yaml`` (a ``NodeTypeSpec``), clusters
in ``models/data/clusters/<name>.yaml`` (a ``ClusterSpec``). The ``openb`` cluster is
built from the bundled Alibaba node list (``models/data/openb/``, see its SOURCE.md).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from models.errors import SpecError
from models.spec import NodeTypeSpec, parse_document, validate_model

_DATA = "models.data"


def _files(folder: str) -> dict[str, Any]:
    root = resources.files(_DATA).joinpath(folder)
    return {p.name.rsplit(".", 1)[0]: p for p in root.iterdir() if p.name.endswith((".yaml", ".yml"))}


def node_type_names() -> list[str]:
    return sorted(_files("node_types"))


def cluster_names() -> list[str]:
    return sorted(set(_files("clusters")) | {"openb"})


@functools.cache
def node_type(name: str) -> NodeTypeSpec:
    """The preset node type ``name``; KeyError if there is none."""
    files = _files("node_types")
    if name not in files:
        raise KeyError(name)
    src = f"preset node type {name}"
    return validate_model(NodeTypeSpec, parse_document(files[name].read_text(), src), src)


@functools.cache
def cluster(name: str):  # -> Cluster (import cycle kept lazy)
    """The preset cluster ``name``."""
    from models.cluster import cluster_from_data

    if name == "openb":
        return cluster_from_data(openb_cluster_data(), "preset cluster openb")
    files = _files("clusters")
    if name not in files:
        raise SpecError(f"unknown preset cluster {name!r}", fix=f"use one of {', '.join(cluster_names())}")
    src = f"preset cluster {name}"
    return cluster_from_data(parse_document(files[name].read_text(), src), src)


OPENB_DESCRIPTION = "Alibaba openb GPU nodes (cluster-trace-gpu-v2023)"


def cluster_description(name: str) -> str:
    """The ``description`` of the preset cluster ``name`` without building it; KeyError if none."""
    if name == "openb":
        return OPENB_DESCRIPTION
    files = _files("clusters")
    if name not in files:
        raise KeyError(name)
    doc = parse_document(files[name].read_text(), f"preset cluster {name}")
    return str(doc.get("description", "")) if isinstance(doc, dict) else ""


def openb_node_csv_text() -> str:
    """The bundled openb GPU node list (``models/data/openb``)."""
    from models.readers.openb import BUNDLED_NODES, bundled_text

    return bundled_text(BUNDLED_NODES)


def openb_cluster_data(text: str | None = None, source: str = "openb_node_list_gpu_node.csv") -> dict[str, Any]:
    """A cluster spec document for an openb node list (CSV ``sn,cpu_milli,memory_mib,gpu,model``).

    openb nodes publish no intra-node topology: GPUs are modelled without NVLink, all on
    one NUMA node (relation NODE). Each node is its own host domain; there are no network levels.
    """
    from models.readers.openb import read_node_list

    rows = read_node_list(text if text is not None else openb_node_csv_text(), source)
    nodes = []
    for r in rows:
        nodes.append({
            "name": r.name,
            "cpu_milli": r.cpu_milli,
            "memory_mib": r.memory_mib,
            "topology": {"gpus": {"count": r.gpus, "model": r.model, "memory_mib": 0}},
        })
    return {"name": "openb", "description": OPENB_DESCRIPTION, "nodes": nodes}
