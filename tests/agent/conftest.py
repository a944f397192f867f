"""Fixtures for the node agent tests: a fake sysfs and the test apiserver (from tests/kube)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.records import fake_sysfs
from tests.kube.conftest import apiserver  # noqa: F401 - the test apiserver fixture, shared


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """An empty-of-GPUs sysfs (a CPU-only machine's PCI bus)."""
    return fake_sysfs(tmp_path / "sys")
