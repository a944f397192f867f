"""What the e2e tests read from (and finish on) a real cluster, for one test namespace."""

from __future__ import annotations

import time
from typing import Any


def now() -> str:
    """An RFC 3339 timestamp (seconds), as node conditions carry."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class PodReads:
    """Pods, bindings and events of ``namespace`` through a ``KubeApi``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def pods(self, api: Any) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p
                for p in api.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")["items"]}

    def alive(self, api: Any) -> dict[str, dict[str, Any]]:
        """Pods not being deleted (a deleted pod on a fake node stays Terminating: no kubelet confirms)."""
        return {n: p for n, p in self.pods(api).items() if not p["metadata"].get("deletionTimestamp")}

    def bound(self, api: Any) -> dict[str, str]:
        return {n: p["spec"]["nodeName"] for n, p in self.alive(api).items() if p["spec"].get("nodeName")}

    def events(self, api: Any, name: str, reason: str, namespace: str | None = None) -> list[str]:
        """Notes of ``name``'s events with ``reason``; ``namespace`` for other objects' (a Node's: ``default``)."""
        items = api.request("GET", f"/api/v1/namespaces/{namespace or self.namespace}/events",
                            query=[("fieldSelector", f"involvedObject.name={name},reason={reason}")])["items"]
        return [e.get("message") or e.get("note") or "" for e in items]

    def force_delete(self, api: Any, name: str) -> None:
        """What the kubelet (absent on fake nodes) and the pod garbage collector finish for a deleted pod."""
        from scheduler.ports import KubeApiError

        try:
            api.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{name}",
                        body={"gracePeriodSeconds": 0})
        except KubeApiError as exc:
            if not exc.is_not_found:
                raise
