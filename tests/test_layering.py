"""Imports go one way: the engine, plugins and models never touch Kubernetes or HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"kubernetes", "urllib3", "http", "requests", "aiohttp", "httpx", "socket"}
# Only these places may speak to the outside world.
ALLOWED_DIRS = {ROOT / "scheduler" / "adapters", ROOT / "scheduler" / "extender", ROOT / "scheduler" / "server",
                ROOT / "scheduler" / "agent"}


def _modules() -> list[Path]:
    out = []
    for pkg in ("models", "plugins", "scheduler", "simulations"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if any(d in path.parents for d in ALLOWED_DIRS):
                continue
            if pkg == "scheduler" and path.name.startswith(("cli", "serve", "discover")):
                continue
            out.append(path)
    return out


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_kubernetes_or_http_outside_adapters(path):
    bad = _imports(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; move that code to scheduler/adapters/"


@pytest.mark.parametrize("path", sorted((ROOT / "plugins").glob("*.py")), ids=lambda p: p.name)
def test_plugins_import_only_models_and_snapshot(path):
    internal = {n for n in _imports(path) if n in {"scheduler", "simulations"}}
    text = path.read_text()
    if "scheduler" in internal:
        for line in text.splitlines():
            if line.startswith(("from scheduler", "import scheduler")):
                assert line.startswith("from scheduler.snapshot import") or line.startswith("from scheduler.workload_mix import"), line
    assert "simulations" not in internal


@pytest.mark.parametrize("path", sorted((ROOT / "models").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_no_other_package_of_ours(path):
    """models/ is the bottom layer: spec, requests, topology and readers stand alone."""
    ours = _imports(path) & {"scheduler", "plugins", "simulations"}
    assert not ours, f"{path.relative_to(ROOT)} imports {sorted(ours)}"
