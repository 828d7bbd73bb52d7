"""The log's files on disk: names, the open segment, writing it, and the writer thread's side.

The log is a directory of files. ``wal-<seq>.log`` segments hold frames appended in order;
``snapshot-<seq>.snap`` holds the live state as of the start of segment ``<seq>``. A file that
exists under one of these names has its header on disk (it was created, written and fsynced,
directory entry included, before anything refers to it); ``*.tmp`` files are unfinished.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import re
import time

from .format import HEADER_SIZE, file_header

# The open segment is grown by writing zeros ahead of its frames, this many bytes at a time,
# when an fsync is to follow. A frame then lands in blocks that are already allocated, with a
# file size that is already durable, so its fdatasync flushes data only, with no metadata (the
# size, new extents) to write and wait for. On this project's ext4 that is 1.6x the fsyncs per
# second of a plain append (docs/DURABILITY.md). A zero-filled tail reads as the end of the
# segment (format.FrameScan).
PREALLOC_BYTES = 1 << 20
_zeros = b""

_SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log$")
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})\.snap$")


def segment_name(seq: int) -> str:
    return f"wal-{seq:020d}.log"


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def list_files(directory: str) -> tuple[dict[int, str], dict[int, str], list[str]]:
    """``(segments, snapshots, unfinished)``: segment and snapshot names by sequence number,
    and the names of unfinished (``.tmp``) files."""
    segments: dict[int, str] = {}
    snapshots: dict[int, str] = {}
    unfinished: list[str] = []
    for name in os.listdir(directory):
        if name.endswith(".tmp"):
            unfinished.append(name)
        elif m := _SEGMENT_RE.match(name):
            segments[int(m.group(1))] = name
        elif m := _SNAPSHOT_RE.match(name):
            snapshots[int(m.group(1))] = name
    return segments, snapshots, unfinished


def truncate(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make the directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, bufs: list[bytes | bytearray], offset: int, total: int) -> None:
    """Write ``bufs`` (``total`` bytes) at ``offset``, going on after short writes."""
    done = 0
    while done < total:
        n = os.pwritev(fd, bufs, offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        done += n
        if done < total:
            # A short write: drop what went out and continue with the rest.
            rest: list[bytes | bytearray | memoryview] = []
            skip = n
            for b in bufs:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                rest.append(memoryview(b)[skip:] if skip else b)
                skip = 0
            bufs = rest  # type: ignore[assignment]


def create_file(directory: str, name: str, magic: bytes, seq: int) -> tuple[str, int]:
    """Create a file holding only its header, fsynced with its directory entry."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, [file_header(magic, seq)], 0, HEADER_SIZE)
        os.fsync(fd)
        fsync_dir(directory)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path, fd


class LogFile:
    """One open segment, owned by the writer thread.

    Invariants: bytes [0, good) are on disk as we wrote them; [good, synced) never happens -
    synced <= good; ``pending`` holds data not yet written (including data whose write failed),
    to be written at ``good`` in order; ``dirty`` means bytes past ``good`` may be on disk from
    a failed write and must be truncated before anything else is written, so that a torn
    frame is never followed by a valid one. ``unsynced`` keeps the bytes in [synced, good)
    when fsync matters: after a failed fsync the kernel may have dropped them, so they are
    written again. ``allocated`` is how far the file holds zeros we wrote ahead: [good,
    allocated) is zeros, where the next frames go.
    """

    def __init__(self, path: str, fd: int, size: int, keep_unsynced: bool) -> None:
        self.path = path
        self.fd = fd
        self.good = size
        self.synced = size
        self.pending: collections.deque[bytes | bytearray] = collections.deque()
        self.unsynced: list[bytes | bytearray] = []
        self.keep_unsynced = keep_unsynced
        self.dirty = False
        self.allocated = size

    def write(self, sync: bool) -> tuple[int, float]:
        """Write what is pending, then fsync if asked; returns (bytes written, fsync seconds
        or -1). Raises OSError, leaving state ready for a retry."""
        if self.dirty:
            os.ftruncate(self.fd, self.good)
            self.allocated = self.good
            self.dirty = False
        written = 0
        if self.pending:
            bufs = list(self.pending)
            total = sum(map(len, bufs))
            if sync and self.keep_unsynced and self.good + total > self.allocated:
                self._grow(self.good + total)
            try:
                pwrite_all(self.fd, bufs, self.good, total)
            except OSError:
                self.dirty = True
                raise
            self.pending.clear()
            self.good += total
            self.allocated = max(self.allocated, self.good)
            written = total
            if self.keep_unsynced:
                self.unsynced.extend(bufs)
        took = -1.0
        if sync and self.synced < self.good:
            t0 = time.perf_counter()
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                exc.wal_fsync = True  # type: ignore[attr-defined]
                # Linux may have marked the failed pages clean: what was not known to be
                # synced must be written again, from our copy, after truncating to it.
                if self.keep_unsynced:
                    self.pending.extendleft(reversed(self.unsynced))
                    self.unsynced = []
                    self.good = self.synced
                    self.dirty = True
                raise
            took = time.perf_counter() - t0
            self.synced = self.good
            self.unsynced = []
        return written, took

    def _grow(self, need: int) -> None:
        """Write zeros from ``allocated`` to the chunk boundary past ``need``. Best effort: if
        that fails (a full disk), the frames are written as a plain append and meet the error
        themselves, so a failure is reported as it always was."""
        global _zeros
        if not _zeros:
            _zeros = bytes(PREALLOC_BYTES)
        end = need + PREALLOC_BYTES - need % PREALLOC_BYTES
        start = self.allocated
        bufs: list[bytes | bytearray] = [_zeros] * ((end - start) // PREALLOC_BYTES)
        rest = (end - start) % PREALLOC_BYTES
        if rest:
            bufs.append(memoryview(_zeros)[:rest])  # type: ignore[arg-type]
        try:
            pwrite_all(self.fd, bufs, start, end - start)
        except OSError:
            return
        self.allocated = end

    def close(self) -> None:
        """Cut the zeros written ahead (best effort: a zero tail reads as the end anyway)."""
        if self.allocated > self.good and not self.dirty:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.good)
                os.fsync(self.fd)
        os.close(self.fd)


class Writer:
    """The writer thread's state: the current segment, and older ones still to be finished
    (written, fsynced, closed) before anything of the current one is written."""

    def __init__(self, current: LogFile) -> None:
        self.current = current
        self.closing: list[LogFile] = []
        self.bytes_written = 0
        self.fsyncs = 0
        self.last_fsync_s = 0.0
        self.fsync_s_total = 0.0

    def run(self, data: bytes | bytearray, sync: bool, rotate_to: LogFile | None) -> None:
        """One write (on the writer thread): ``data`` goes to the current segment, or to the
        one being left when ``rotate_to`` starts a new one."""
        if data:
            self.current.pending.append(data)
        if rotate_to is not None:
            self.closing.append(self.current)
            self.current = rotate_to
        while self.closing:
            old = self.closing[0]
            self._write(old, True)
            old.close()
            self.closing.pop(0)
        self._write(self.current, sync)

    def _write(self, f: LogFile, sync: bool) -> None:
        written, took = f.write(sync)
        self.bytes_written += written
        if took >= 0:
            self.fsyncs += 1
            self.last_fsync_s = took
            self.fsync_s_total += took

    def close(self) -> None:
        for f in [*self.closing, self.current]:
            with contextlib.suppress(OSError):
                f.close()
