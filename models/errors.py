"""Error types shared by every package.

One base class, ``ToposchedError``; families by what the caller does with them.
"Does not fit" is never an exception: it is a reason inside a ``Decision``.
"""

from __future__ import annotations

from typing import Any


class ToposchedError(Exception):
    """Base class of every error toposched raises on purpose."""


class SpecError(ToposchedError):
    """A cluster spec, request or state file is malformed.

    The message names the file, the path inside it, the offending value and what to do:
    ``cluster.yaml: nodes[3].topology.nvlinks[0].gpus: GPU 9 out of range (node has 0-7)``.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        path: str | None = None,
        value: Any = None,
        fix: str | None = None,
        has_value: bool = False,
    ) -> None:
        self.problem = problem
        self.source = source
        self.path = path
        self.value = value
        self.fix = fix
        where = ": ".join(p for p in (source, path) if p)
        text = f"{where}: {problem}" if where else problem
        if has_value or value is not None:
            shown = repr(value)
            text += f" (got {shown if len(shown) <= 300 else shown[:300] + ' ...'})"  # a value can be huge
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class TraceRowError(ToposchedError):
    """A row of a trace file cannot be read; names the file and the 1-based line."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source}:{line}: {problem}")


class RequestError(SpecError):
    """A placement request is malformed (not: does not fit)."""


class KubeApiError(ToposchedError):
    """A Kubernetes API call failed; mapped once, in scheduler/adapters."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"Kubernetes API {status} {reason}: {message}".rstrip(": "))
