"""The Lua scripts of the Redis store: loaded from ``scripts/*.lua`` with the shared prelude,
each kept with its SHA1 and the RESP head of its EVALSHA (docs/SCALEOUT.md lists them)."""

from __future__ import annotations

import hashlib
import re
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


def prelude_chunks(prelude: str) -> list[tuple[list[str], str]]:
    """The prelude cut at its top-level ``local`` statements: (names it declares, text)."""
    chunks: list[tuple[list[str], str]] = []
    lines: list[str] = []
    names: list[str] = []
    for line in prelude.splitlines(keepends=True):
        if line.startswith("local "):
            if names:
                chunks.append((names, "".join(lines)))
                lines = []
            m = re.match(r"local function (\w+)", line)
            if m:
                names = [m.group(1)]
            else:
                names = [n.strip() for n in line[6:].split("=", 1)[0].split(",")]
        lines.append(line)
    if names:
        chunks.append((names, "".join(lines)))
    return chunks


def with_prelude(body: str, chunks: list[tuple[list[str], str]]) -> str:
    """Only the parts of the prelude ``body`` uses (directly or through them), in the
    prelude's order: every statement of a script runs on every call, and defining the
    helpers a script never calls cost ~3 µs of Redis CPU per call."""
    used = [False] * len(chunks)
    text = _code(body)
    changed = True
    while changed:
        changed = False
        for i, (names, chunk) in enumerate(chunks):
            if not used[i] and any(re.search(rf"\b{n}\b", text) for n in names):
                used[i] = True
                text += _code(chunk)
                changed = True
    return "".join(chunk for i, (_, chunk) in enumerate(chunks) if used[i])


def _code(text: str) -> str:
    """Lua without its comments (a name in a comment is no use)."""
    return re.sub(r"--[^\n]*", "", text)


def load_scripts(test_clock: bool = False) -> dict[str, Script]:
    """The scripts, each with the parts of the prelude it uses after its shebang line (data
    scripts)."""
    prelude = (SCRIPTS_DIR / "prelude.lua").read_text()
    if test_clock:
        start = prelude.index("--@clock")
        end = prelude.index("end\n", start) + 4
        prelude = prelude[:start] + _TEST_CLOCK + prelude[end:]
    chunks = prelude_chunks(prelude)
    scripts = {}
    for name in DATA_SCRIPTS + REGISTRY_SCRIPTS:
        text = (SCRIPTS_DIR / f"{name}.lua").read_text()
        if name in DATA_SCRIPTS:
            shebang, _, rest = text.partition("\n")
            text = f"{shebang}\n{with_prelude(rest, chunks)}\n{rest}"
        scripts[name] = Script(name, text)
    return scripts
