"""The compiled extensions are built from the sources beside them. setup.py compiles
_core.pyx, protocol.py and api.py in Cython's pure-Python mode (types in their .pxd), and the
SQS face's sqs/_digest.pyx and sqs/_fast.pyx. A build older than its source would run old
code without a word: `make build` refreshes it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("module", "sources"),
    [
        ("wonderq._core", ["_core.pyx", "_core.pxd", "engine/*.pxi", "queuenames.pxd"]),
        ("wonderq.request", ["request.py", "request.pxd"]),
        ("wonderq.protocol", ["protocol.py", "protocol.pxd", "queuenames.pxd"]),
        ("wonderq.params", ["params.py", "params.pxd"]),
        (
            "wonderq.routing",
            ["routing.py", "routing.pxd", "pathscan.pxd", "queuenames.pxd", "params.pxd"],
        ),
        ("wonderq.pathscan", ["pathscan.pyx", "pathscan.pxd"]),
        ("wonderq.queuenames", ["queuenames.pyx", "queuenames.pxd"]),
        ("wonderq.api", ["api.py", "api.pxd"]),
        ("wonderq.deferred", ["deferred.py", "deferred.pxd"]),
        ("wonderq.store", ["store.py", "store.pxd", "deferred.pxd"]),
        ("wonderq.tls", ["tls.py", "tls.pxd", "protocol.pxd"]),
        ("wonderq.wal.log", ["log.py", "log.pxd", "../store.pxd"]),
        ("wonderq.sqs._digest", ["_digest.pyx", "digest.h"]),
        ("wonderq.sqs._fast", ["_fast.pyx", "fast_json.pxi", "digest.h"]),
    ],
)
def test_compiled_module_is_not_stale(module: str, sources: list[str]) -> None:
    built = Path(importlib.import_module(module).__file__ or "")
    if built.suffix == ".py":
        pytest.skip(f"{built.name} runs uncompiled")
    here = built.parent
    newest = max(path.stat().st_mtime for name in sources for path in here.glob(name))
    assert built.stat().st_mtime >= newest, (
        f"{built.name} is older than {' / '.join(sources)}: run `make build`"
    )


def test_make_annotate_covers_every_compiled_module() -> None:
    """`make annotate` (the Makefile's COMPILED list) names every source setup.py compiles,
    so a new compiled module cannot be left out of the annotation."""
    import re

    root = Path(__file__).resolve().parent.parent
    compiled = set(
        re.findall(r'Extension\(\s*"[\w.]+",\s*\["([^"]+)"', (root / "setup.py").read_text())
    )
    makefile = (root / "Makefile").read_text().replace("\\\n", " ")
    line = re.search(r"^COMPILED = (.*)$", makefile, re.M)
    assert line is not None
    assert compiled and compiled == set(line.group(1).split())
