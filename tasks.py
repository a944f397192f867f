#!/usr/bin/env python3
"""The README's two commands, with nothing but Python 3.11 needed.

    python3 tasks.py run    # create .venv, install toposched, simulate the bundled openb trace
    python3 tasks.py test   # create .venv, install toposched[dev], run the whole test suite

Extra arguments after ``test`` go to pytest (``python3 tasks.py test -m "not slow"``).
The virtual environment is made once and refreshed when pyproject.toml changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".toposched-installed"

QUICKSTART = ["simulate", "openb", "--pods", "default", "--policy", "BestFit,FGD,toposched",
              "--seeds", "42", "--bound", "--out", "out/quickstart"]


def _run(cmd: list[str]) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT)


def ensure_venv() -> None:
    """Create .venv and install the package with its dev extra, unless already current."""
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py may be started by an older python3
        sys.exit(f"toposched needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    pyproject = ROOT / "pyproject.toml"
    if STAMP.exists() and STAMP.stat().st_mtime >= pyproject.stat().st_mtime and PY.exists():
        return
    if not PY.exists():
        print(f"creating {VENV.relative_to(ROOT)}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    steps = [[PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
             [PY, "-m", "pip", "install", "--quiet", "-e", ".[dev]"]]
    for step in steps:
        if _run(step) != 0:
            sys.exit("installing toposched failed (see the pip output above)")
    STAMP.touch()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__.strip())
        return 2
    ensure_venv()
    if argv[0] == "run":
        return _run([BIN / "toposched", *QUICKSTART, *argv[1:]])
    rc = _run([PY, "-m", "pytest", "-q", *argv[1:]])
    if rc == 5:
        print("pytest collected no tests: that is a failure here", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
