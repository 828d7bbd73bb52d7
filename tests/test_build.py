"""The compiled extensions are built from the sources beside them. setup.py compiles
_core.pyx, and protocol.py and api.py in Cython's pure-Python mode (types in their .pxd). A
build older than its source would run old code without a word: `make build` refreshes it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("module", "sources"),
    [
        ("wonderq._core", ["_core.pyx", "_core.pxd", "engine/*.pxi"]),
        ("wonderq.request", ["request.py", "request.pxd"]),
        ("wonderq.protocol", ["protocol.py", "protocol.pxd"]),
        ("wonderq.params", ["params.py", "params.pxd"]),
        ("wonderq.routing", ["routing.py", "routing.pxd"]),
        ("wonderq.api", ["api.py", "api.pxd"]),
        ("wonderq.deferred", ["deferred.py", "deferred.pxd"]),
        ("wonderq.store", ["store.py", "store.pxd", "deferred.pxd"]),
        ("wonderq.tls", ["tls.py", "tls.pxd", "protocol.pxd"]),
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
