"""Publish a discovery on the agent's own Node: the topology annotation and missing GFD labels.

The only module of the agent that imports ``kubernetes``. One read and one JSON merge
patch per round: annotations are always written; a GPU Feature Discovery label is
written only when the node lacks it, or when this agent wrote it before and nobody has
changed it since (the ``toposched.io/labels`` annotation lists ``key=value`` as written),
so labels set by GFD or by hand are never touched, even after the agent wrote them first.
Each call is bounded by ``timeout_s``; API failures become ``KubeApiError`` naming the node.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from models.errors import KubeApiError, ToposchedError
from scheduler.adapters.kube import bound_retries

OWNED_LABELS_ANNOTATION = "toposched.io/labels"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class PublishResult:
    """What one patch changed on the node."""

    node: str
    annotations: tuple[str, ...]
    labels_written: dict[str, str]
    labels_kept: dict[str, str]  # present on the node and not ours: left as they were
    changed: bool = True  # False: the node already said all this, nothing was patched


def core_api(kubeconfig: str | None = None, configuration: Any = None) -> client.CoreV1Api:
    """A CoreV1Api: the given configuration, a kubeconfig file, in-cluster, else the default kubeconfig."""
    if configuration is None:
        configuration = client.Configuration()
        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(client_configuration=configuration)
        except (ConfigException, OSError) as exc:
            where = kubeconfig or ("in-cluster service account" if os.environ.get("KUBERNETES_SERVICE_HOST")
                                   else "the default kubeconfig")
            raise ToposchedError(f"cannot configure the Kubernetes client from {where}: {exc}") from None
    bound_retries(configuration)  # a timed-out read is the next round's to retry
    return client.CoreV1Api(client.ApiClient(configuration))


def _api_error(exc: ApiException, node: str, verb: str) -> KubeApiError:
    hint = {
        404: f"node {node!r} does not exist: set NODE_NAME from the downward API (spec.nodeName) or pass --node-name",
        403: "the agent's service account may not do this: apply deploy/agent/rbac.yaml",
        401: "the agent's credentials were refused",
    }.get(exc.status or 0, "")
    message = f"{verb} node {node}" + (f": {hint}" if hint else "")
    return KubeApiError(exc.status or 0, exc.reason or "Error", message)


def _equal(old: str | None, new: str) -> bool:
    return old == new


def _owned(text: str) -> dict[str, str | None]:
    """The labels this agent wrote, with the value written (None: not recorded, an older agent)."""
    out: dict[str, str | None] = {}
    for item in (t for t in text.split(",") if t):
        key, sep, value = item.partition("=")
        out[key] = value if sep else None
    return out


def publish(api: client.CoreV1Api, node: str, annotations: Mapping[str, str], labels: Mapping[str, str], *,
            same: Mapping[str, Callable[[str | None, str], bool]] | None = None,
            timeout_s: float = 30.0) -> PublishResult:
    """Patch ``node``: set ``annotations``; set each of ``labels`` that is missing or ours.

    ``same[key](old, new)`` says whether an annotation already on the node is as good as
    the new value (default: equal text); when every annotation and label is, nothing is patched.
    """
    try:
        current = api.read_node(node, _request_timeout=timeout_s)
    except ApiException as exc:
        raise _api_error(exc, node, "read") from None
    except urllib3.exceptions.HTTPError as exc:
        raise KubeApiError(0, "Unreachable", f"read node {node}: {exc}") from None
    have = dict(current.metadata.labels or {})
    have_annotations = dict(current.metadata.annotations or {})
    owned = _owned(have_annotations.get(OWNED_LABELS_ANNOTATION, ""))
    # still ours: present and as we wrote it (GFD or a person may have set it since)
    ours = {k for k, v in owned.items() if k in have and (v is None or have[k] == v)}
    write = {k: v for k, v in labels.items() if k not in have or k in ours}
    kept = {k: have[k] for k in labels if k in have and k not in ours}
    patch_labels: dict[str, str | None] = dict(write)
    # a label we wrote earlier that this round has no value for (GPUs gone) is removed
    for k in ours - set(labels):
        patch_labels[k] = None
    owned_text = ",".join(f"{k}={v}" for k, v in sorted(write.items()))
    body_annotations = {**annotations, OWNED_LABELS_ANNOTATION: owned_text or None}
    equal = same or {}
    unchanged = all(equal.get(k, _equal)(have_annotations.get(k), v) if v is not None else k not in have_annotations
                    for k, v in body_annotations.items()) and all(have.get(k) == v for k, v in patch_labels.items())
    if unchanged:
        return PublishResult(node=node, annotations=tuple(annotations), labels_written={}, labels_kept=kept,
                             changed=False)
    body: dict[str, Any] = {"metadata": {"annotations": body_annotations}}
    if patch_labels:
        body["metadata"]["labels"] = patch_labels
    try:
        api.patch_node(node, body, _content_type=MERGE_PATCH, _request_timeout=timeout_s)
    except ApiException as exc:
        raise _api_error(exc, node, "patch") from None
    except urllib3.exceptions.HTTPError as exc:
        raise KubeApiError(0, "Unreachable", f"patch node {node}: {exc}") from None
    return PublishResult(node=node, annotations=tuple(annotations), labels_written=write, labels_kept=kept)
