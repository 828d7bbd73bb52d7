"""The command line: ``wonderq serve [flags]`` (also ``python -m wonderq serve``).

Mistakes get one line on stderr and a non-zero exit, never a traceback: 2 for a bad flag or
value (as argparse does), 1 when the server cannot start (address in use, engine missing, a
data directory it cannot write or a log it cannot read).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Mapping
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


# glibc's malloc backs its heap with transparent huge pages under this tunable (glibc 2.35+).
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_page_env(
    environ: Mapping[str, str], thp_mode_file: str = THP_MODE_FILE
) -> dict[str, str] | None:
    """The environment to re-execute the server under so that the engine's heap gets
    transparent huge pages, or None when that would change nothing.

    A queue that grows stores every body in memory the kernel must first fault in and zero:
    with 4 KiB pages that is one fault per 4 KiB, with huge pages one per 2 MiB, and a growing
    queue of big messages publishes ~40% faster (bench/RESULTS.md, "Big messages"). The kernel
    gives huge pages to a heap only when asked (THP mode ``madvise``, the common default), and
    glibc asks only under ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, read when the process
    starts. So ``wonderq serve`` re-executes itself once with it, when: the C library is glibc
    2.35 or later, the kernel's mode is ``madvise`` (``always`` gives huge pages anyway,
    ``never`` none), and ``GLIBC_TUNABLES`` does not already set it (set
    ``glibc.malloc.hugetlb=0`` there to keep 4 KiB pages)."""
    if sys.platform != "linux" or HUGE_PAGES_TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return None
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        with open(thp_mode_file) as f:
            mode = f.read()
    except (OSError, ValueError):
        return None
    name, _, version = libc.partition(" ")
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return None
    if name != "glibc" or (major, minor) < (2, 35) or "[madvise]" not in mode:
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    env = dict(environ)
    env["GLIBC_TUNABLES"] = (
        f"{tunables}:{HUGE_PAGES_TUNABLE}=1" if tunables else f"{HUGE_PAGES_TUNABLE}=1"
    )
    return env


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wonderq`` console script and of ``python -m wonderq``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if argv is None:  # the process's own command line: it may be run again under huge pages
        env = huge_page_env(os.environ)
        if env is not None and sys.executable:
            # Nothing is lost if it cannot: the server then runs with 4 KiB pages.
            with contextlib.suppress(OSError):
                os.execve(sys.executable, sys.orig_argv, env)
    try:
        return serve(args)
    except KeyboardInterrupt:  # Ctrl-C before the loop installed its handler
        return 130
