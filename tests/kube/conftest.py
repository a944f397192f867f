"""Fixtures: a fresh test apiserver per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .apiserver import ApiServer, running_apiserver
from .store import ApiStore


@pytest.fixture
def apiserver() -> Iterator[ApiServer]:
    """A running test apiserver on 127.0.0.1 with an empty store and short bookmark interval."""
    store = ApiStore(history_window=1000, bookmark_interval_s=0.2)
    with running_apiserver(store) as server:
        yield server
