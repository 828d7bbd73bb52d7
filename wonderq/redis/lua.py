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


# A queue's keys, in the order a script declares the ones it uses (keys.py builds them).
KEY_NAMES = ("A", "R", "L", "D", "B", "S", "T", "O", "I", "W", "V", "X")


class Script:
    """One Lua script: its source as loaded, its SHA1, the RESP head of an EVALSHA, and the
    queue keys it declares (data scripts: a subset of KEY_NAMES, in that order)."""

    def __init__(self, name: str, source: str, keys: tuple[str, ...] = ()) -> None:
        self.name = name
        self.source = source.encode()
        self.keys = keys
        self.sha = hashlib.sha1(self.source).hexdigest().encode()
        self.head = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha + b"\r\n"
        self.eval_head = b"$4\r\nEVAL\r\n$%d\r\n%s\r\n" % (len(self.source), self.source)


def prelude_chunks(prelude: str) -> list[tuple[list[str], str]]:
    """The prelude cut at its top-level ``local`` statements: (names it declares, text).
    The lines that name the queue's keys are left out: each script gets its own."""
    chunks: list[tuple[list[str], str]] = []
    lines: list[str] = []
    names: list[str] = []
    for line in prelude.splitlines(keepends=True):
        if line.startswith("local "):
            if names:
                chunks.append((names, "".join(lines)))
            lines = []
            m = re.match(r"local function (\w+)", line)
            declared = line[6:].split("=", 1)[0].split(",")
            names = [m.group(1)] if m else [n.strip() for n in declared]
        if names and all(n in KEY_NAMES for n in names):
            continue  # a key line (local A, R, L, D = KEYS[1], ...)
        lines.append(line)
    if names:
        chunks.append((names, "".join(lines)))
    return [(names, text) for names, text in chunks if text]


def with_prelude(body: str, chunks: list[tuple[list[str], str]]) -> tuple[str, tuple[str, ...]]:
    """The parts of the prelude ``body`` uses (directly or through them), in the prelude's
    order, after a line naming just the keys they all use; and those keys. Every statement
    of a script runs on every call: defining helpers it never calls cost ~3 µs of Redis CPU,
    and each key declared ~1,100 instructions (callgrind, bench/redis_instructions.py)."""
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
    keys = tuple(k for k in KEY_NAMES if re.search(rf"\b{k}\b", text))
    head = ""
    if keys:
        head = f"local {', '.join(keys)} = " + ", ".join(f"KEYS[{i + 1}]" for i in range(len(keys)))
        head += "  -- the queue's keys this script uses (prelude.lua names them all)\n"
    return head + "".join(chunk for i, (_, chunk) in enumerate(chunks) if used[i]), keys


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
        keys: tuple[str, ...] = ()
        if name in DATA_SCRIPTS:
            shebang, _, rest = text.partition("\n")
            head, keys = with_prelude(rest, chunks)
            text = f"{shebang}\n{head}\n{rest}"
        scripts[name] = Script(name, text, keys)
    return scripts
