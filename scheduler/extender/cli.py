"""The extender's part of ``toposched serve``: its flags and ``--mode extender``."""

from __future__ import annotations

import argparse
import logging

from models.errors import ToposchedError

log = logging.getLogger("toposched.extender")


def add_extender_arguments(p: argparse.ArgumentParser) -> None:
    """Flags that only ``--mode extender`` reads."""
    g = p.add_argument_group("extender mode (--mode extender)")
    g.add_argument("--listen", default="127.0.0.1:8888", metavar="HOST:PORT",
                   help="address of the extender verbs (default 127.0.0.1:8888: a sidecar of kube-scheduler)")
    g.add_argument("--url-prefix", default="/toposched",
                   help="path before /filter, /prioritize, /bind, /preempt (default /toposched)")
    g.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain)")
    g.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    g.add_argument("--max-body-mib", type=float, default=64.0,
                   help="largest request body accepted, MiB (default 64; a 413 above it)")
    g.add_argument("--no-bind", action="store_true",
                   help="kube-scheduler binds (no bindVerb configured); the bind verb then refuses")


def run_extender(args: argparse.Namespace) -> int:
    """``toposched serve --mode extender``: serve until SIGTERM/SIGINT."""
    from scheduler.adapters.kube import load_configuration
    from scheduler.cli_serve import serve_config_from_args, serve_until_signalled
    from scheduler.extender.http import normalize_prefix, parse_listen, tls_context
    from scheduler.extender.service import ExtenderOptions, ExtenderService
    from scheduler.logs import setup_logging

    config = serve_config_from_args(args)
    host, port = parse_listen(args.listen)
    prefix = normalize_prefix(args.url_prefix)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ToposchedError("--tls-cert and --tls-key go together")
    ctx = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    if not args.max_body_mib > 0:
        raise ToposchedError(f"--max-body-mib {args.max_body_mib}: must be positive")
    setup_logging(config.log_level)
    configuration = load_configuration(args.kubeconfig, pool_size=16, context=args.context)
    opts = ExtenderOptions(host=host, port=port, url_prefix=prefix, ssl_context=ctx,
                           max_body_bytes=int(args.max_body_mib * 1024 * 1024), bind=not args.no_bind)
    return serve_until_signalled(ExtenderService(config, configuration, opts), log)
