"""Structured JSON logs: one object per line with ``ts``, ``level``, ``logger``, ``msg`` and context keys.

Context travels in ``extra``: ``log.info("bound", extra={"pod": "ml/w-0", "gang": "ml/llm"})``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# keys a record may carry in ``extra`` that end up in the JSON object
CONTEXT_KEYS = ("pod", "gang", "node", "gpus", "identity", "resource", "reason", "attempts", "count", "error")


class JsonFormatter(logging.Formatter):
    """``{"ts": "...", "level": "info", "logger": "toposched.loop", "msg": "...", "pod": "ns/p"}``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(level: str = "info", stream: Any = None) -> None:
    """Send the ``toposched`` loggers to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("toposched")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
