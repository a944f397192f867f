"""The ``toposched`` command line: one entry point, subcommands registered by module.

Each subcommand lives in its own module (``scheduler/cli_<name>.py``) that exposes
``add_parser(subparsers)`` (adds its parser, named after the command) and
``run(args) -> int`` (the exit status). To add a command, append ``(name, module)`` to
``COMMANDS``; nothing else here changes.

Exit status: 0 success; 2 a user error (bad arguments, a ``ToposchedError`` such as a
malformed spec), printed as ``toposched: error: <message>``; 1 an unexpected error, printed
as one line (set ``TOPOSCHED_DEBUG=1`` to get the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from models.errors import ToposchedError

PROG = "toposched"

# (command name, module exposing add_parser(subparsers) and run(args) -> int), in help order
COMMANDS: list[tuple[str, str]] = [
    ("cluster", "scheduler.cli_cluster"),
    ("place", "scheduler.cli_place"),
    ("discover", "scheduler.cli_discover"),
    ("simulate", "scheduler.cli_simulate"),
    ("serve", "scheduler.cli_serve"),
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Topology-aware GPU batch scheduler for Kubernetes: inspect clusters, place "
                    "workloads, simulate traces.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        module.add_parser(sub)
        if name not in sub.choices:
            raise RuntimeError(f"{module_name}.add_parser did not add a parser named {name!r}")
        sub.choices[name].set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``toposched`` with ``argv`` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    module: ModuleType | None = getattr(args, "_module", None)
    if module is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(module.run(args) or 0)
    except ToposchedError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        _silence_stdout()
        return 1
    except Exception as exc:  # noqa: BLE001 - the top of the program: one line, not a traceback
        if os.environ.get("TOPOSCHED_DEBUG"):
            traceback.print_exc()
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
              "(set TOPOSCHED_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests)
        pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toposched")
    except PackageNotFoundError:  # running from a source tree without metadata
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
