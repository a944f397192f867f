"""``toposched serve``: run in a cluster as a secondary scheduler (``--mode scheduler``) or as kube-scheduler's HTTP extender (``--mode extender``)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from models.spec import validate_model
from scheduler.extender.cli import add_extender_arguments, run_extender
from scheduler.serve_config import ServeConfig, load_serve_config

NAME = "serve"
MODES = ("scheduler", "extender")

log = logging.getLogger("toposched.serve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME, help="run in a cluster (secondary scheduler or scheduler extender)",
        description="Place the pods whose spec.schedulerName is ours: watch nodes and pods, decide with the "
                    "placement engine, bind, report; leader election on a Lease; metrics and health endpoints.")
    p.add_argument("--mode", choices=MODES, default="scheduler",
                   help="scheduler: own pods with our schedulerName; extender: kube-scheduler's HTTP extender")
    p.add_argument("--scheduler-name", help="the spec.schedulerName we own (overrides the config's)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: the in-cluster service account)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--config", help="serve configuration (YAML); see docs/deploy.md")
    p.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz (overrides the config's)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="overrides the config's")
    add_extender_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.mode == "extender":
        return run_extender(args)
    from scheduler.adapters.kube import load_configuration
    from scheduler.logs import setup_logging
    from scheduler.serve import SchedulerService, ServiceOptions

    config = serve_config_from_args(args)
    setup_logging(config.log_level)
    configuration = load_configuration(args.kubeconfig, pool_size=config.bind_workers + 8, context=args.context)
    return serve_until_signalled(SchedulerService(config, configuration, ServiceOptions()), log)


def serve_config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The ``--config`` file with ``--scheduler-name``, ``--log-level`` and ``--metrics-port`` laid over it."""
    config = load_serve_config(args.config)
    updates = {}
    if args.scheduler_name:
        updates["scheduler_name"] = args.scheduler_name
    if args.log_level:
        updates["log_level"] = args.log_level
    if args.metrics_port is not None:
        updates["metrics_port"] = args.metrics_port
    # validated as if written in the file (model_copy would take any value)
    return validate_model(ServeConfig, {**config.model_dump(), **updates}, "command line")


def serve_until_signalled(service: Any, logger: logging.Logger) -> int:
    """Start ``service``, run it until SIGTERM/SIGINT, then stop it; exit status 0."""
    stopping = threading.Event()

    def _terminate(signum: int, _frame: object) -> None:
        logger.info("signal %d: shutting down", signum)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _terminate)
    service.start()
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        service.stop()
    return 0
