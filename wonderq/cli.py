"""The command line: ``wonderq serve [flags]`` (also ``python -m wonderq serve``).

Mistakes get one line on stderr and a non-zero exit, never a traceback: 2 for a bad flag or
value (as argparse does), 1 when the server cannot start (address in use, engine missing, a
data directory it cannot write or a log it cannot read).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from . import __version__
from .config import FIELDS, ConfigError, Settings, settings_from

__all__ = ["main"]

_DESCRIPTION = "WonderQ, a work queue over plain HTTP: publish, lease, process, delete."
_SERVE_EPILOG = (
    "Every flag can also be given as an environment variable WONDERQ_<NAME> "
    "(e.g. WONDERQ_MAX_BATCH=100, WONDERQ_ACCESS_LOG=1); a flag wins over the environment. "
    "Everything is held in memory; with --data-dir every change is also logged to disk and "
    "replayed at start-up, so messages survive restarts and crashes (--fsync says how safely). "
    "SIGTERM or SIGINT stops the server gracefully."
)


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line, not the usage block."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``wonderq``: subcommand ``serve`` with one flag per Settings field."""
    parser = _Parser(prog="wonderq", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"wonderq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the WonderQ server (by default on 127.0.0.1:8080).",
        epilog=_SERVE_EPILOG,
    )
    for field in FIELDS:
        help_text = f"{field.help} [env {field.env}]"
        if field.switch:
            serve.add_argument(
                field.flag, dest=field.name, action="store_const", const="1", help=help_text
            )
        else:
            serve.add_argument(field.flag, dest=field.name, metavar=field.metavar, help=help_text)
    return parser


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``--log-level``; the access log (``wonderq.access``) only if asked."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    access = logging.getLogger("wonderq.access")
    access.setLevel(logging.INFO if settings.access_log else logging.CRITICAL + 1)


def serve(args: argparse.Namespace) -> int:
    """``wonderq serve``: read the settings, bind the port, run until a signal."""
    flags = {field.name: getattr(args, field.name) for field in FIELDS}
    try:
        settings = settings_from(flags, os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"wonderq serve: error: {exc}\n")
        return 2
    try:
        from .server import Server, ServerError, bind
    except ImportError as exc:  # the compiled engine is not built
        sys.stderr.write(
            f"wonderq serve: error: cannot load the engine ({exc}); "
            "install with `pip install -e .` or run `python setup.py build_ext --inplace`\n"
        )
        return 1
    configure_logging(settings)
    server = Server(settings)
    try:
        server.open()  # with --data-dir: recovery, before the port is bound
        sock = bind(settings.host, settings.port)
    except ServerError as exc:
        sys.stderr.write(f"wonderq serve: error: {exc}\n")
        return 1
    return server.run(sock)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wonderq`` console script and of ``python -m wonderq``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return serve(args)
    except KeyboardInterrupt:  # Ctrl-C before the loop installed its handler
        return 130
