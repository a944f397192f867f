"""Paths shared by tests: the repo root and the read-only reference folder next to it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT / ".." / "shared"


def shared_or_skip(rel: str) -> Path:
    """``SHARED / rel``, or skip the calling test when the reference folder is absent."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"reference data ../shared/{rel} is not available")
    return path
