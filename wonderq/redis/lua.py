"""The Lua scripts of the Redis store: loaded from ``scripts/*.lua`` with the shared prelude,
each kept with its SHA1 and the RESP head of its EVALSHA (docs/SCALEOUT.md lists them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

SCRIPTS_DIR = Path(__file__).with_name("scripts")
DATA_SCRIPTS = (
    "publish",
    "check",
    "receive",
    "peek",
    "delete",
    "lease",
    "info",
    "sweep",
    "purge",
    "setattrs",
    "drop",
    "import",
    "unout",
    "forget",
    "send",
    "take",
)
REGISTRY_SCRIPTS = ("reg_put", "reg_delete", "lock")
_TEST_CLOCK = (
    "local function clock()\n"
    "  return tonumber(CALL('GET', string.sub(A, 1, -2) .. 'clock') or '0')\n"
    "end\n"
)


class Script:
    """One Lua script: its source as loaded, its SHA1, and the RESP head of an EVALSHA."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()
        self.head = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha + b"\r\n"
        self.eval_head = b"$4\r\nEVAL\r\n$%d\r\n%s\r\n" % (len(self.source), self.source)


def load_scripts(test_clock: bool = False) -> dict[str, Script]:
    """The scripts, each with the prelude after its shebang line (data scripts)."""
    prelude = (SCRIPTS_DIR / "prelude.lua").read_text()
    if test_clock:
        start = prelude.index("--@clock")
        end = prelude.index("end\n", start) + 4
        prelude = prelude[:start] + _TEST_CLOCK + prelude[end:]
    scripts = {}
    for name in DATA_SCRIPTS + REGISTRY_SCRIPTS:
        text = (SCRIPTS_DIR / f"{name}.lua").read_text()
        if name in DATA_SCRIPTS:
            shebang, _, rest = text.partition("\n")
            text = f"{shebang}\n{prelude}\n{rest}"
        scripts[name] = Script(name, text)
    return scripts
