"""Where the Redis store's data lives: the registry's keys, a queue's keys (all tagged
``{queue}`` so a queue lives in one cluster slot) and the cluster slot of a key."""

from __future__ import annotations

from pathlib import Path

REG_KEYS = ("wq:{reg}:q", "wq:{reg}:refs", "wq:{reg}:ver", "wq:{reg}:dead")
LOCK_KEY = "wq:{sweep}:lock"
HANDLE_KEY = "wq:{reg}:handle-key"


def key_slot(key: bytes) -> int:
    """The cluster slot of a key (CRC16 of its hash tag, as Redis computes it)."""
    from redis.crc import key_slot as crc_slot

    return int(crc_slot(key))


_SLOT_TAGS: list[str] = []


def slot_tag(slot: int) -> str:
    """A hash tag that lands in ``slot`` (for the per-slot id counter). Found by search once
    and shipped as ``slot_tags.txt`` (one tag per slot, in slot order): the search costs
    seconds of pure-Python CRC16, too long for the first request to a new slot."""
    if not _SLOT_TAGS:
        _SLOT_TAGS.extend(Path(__file__).with_name("slot_tags.txt").read_text().split())
    return _SLOT_TAGS[slot]


class QueueKeys:
    """A queue's slot and, per script, the RESP fragment ``numkeys key... slot`` it takes:
    the queue's keys that script uses (``Script.keys``), built once per queue and script."""

    __slots__ = ("by_name", "extra", "fragments", "name", "slot", "tag")

    def __init__(self, name: str, cluster: bool, test_clock: bool) -> None:
        self.name = name
        tag = "{" + name + "}"
        self.tag = tag
        self.slot = key_slot(tag.encode()) if cluster else 0
        counter = f"wq:{{{slot_tag(self.slot)}}}:v" if cluster else "wq:{s0}:v"
        self.by_name = {k.upper(): f"wq:{tag}:{k}" for k in "arldbstoiwx"}
        self.by_name["V"] = counter
        # The test clock's key is read through A's name; declared so a cluster allows it.
        self.extra = [f"wq:{tag}:clock"] if test_clock else []
        self.fragments: dict[tuple[str, ...], tuple[bytes, int]] = {}

    def fragment(self, names: tuple[str, ...]) -> tuple[bytes, int]:
        """The fragment for a script that declares the keys ``names``, and how many RESP
        arguments the command has before the script's own (command, sha, numkeys, keys,
        slot)."""
        found = self.fragments.get(names)
        if found is None:
            keys = [self.by_name[n] for n in names] + self.extra
            parts = [b"$%d\r\n%d\r\n" % (len(str(len(keys))), len(keys))]
            parts += [b"$%d\r\n%s\r\n" % (len(k), k.encode()) for k in keys]
            slot = str(self.slot).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(slot), slot))
            found = self.fragments[names] = (b"".join(parts), 3 + len(keys) + 1)
        return found


def _id_arg(msg_id: int) -> bytes:
    return b"%019d" % msg_id


def _tag_of(key: str) -> str:
    start = key.find("{")
    end = key.find("}", start + 1)
    if start >= 0 and end > start + 1:
        return key[start + 1 : end]
    return key
