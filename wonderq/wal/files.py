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


#: With ``--fsync always`` a segment is kept zero-filled this far past its last frame. An
#: append then lands in blocks the file system has already allocated and written, so its
#: fdatasync writes the data and nothing else: no new size or extents to commit to the
#: journal (on ext4 here, 42-44 us instead of 64-86 us per 14 KB append; bench/RESULTS.md,
#: "Durability"), as PostgreSQL zero-fills its WAL segments. Recovery reads the zeros as the
#: end of the segment (format.FrameScan's "zeros") and a segment left behind is trimmed.
ZERO_AHEAD = 1024 * 1024
_ZEROS = bytes(ZERO_AHEAD)


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
    written again.
    """

    def __init__(
        self, path: str, fd: int, size: int, keep_unsynced: bool, zero_ahead: bool = False
    ) -> None:
        self.path = path
        self.fd = fd
        self.good = size
        self.synced = size
        self.pending: collections.deque[bytes | bytearray] = collections.deque()
        self.unsynced: list[bytes | bytearray] = []
        self.keep_unsynced = keep_unsynced
        self.dirty = False
        # ZERO_AHEAD: the file is zero-filled up to ``zeroed`` (>= good) when zero_ahead is on.
        self.zero_ahead = zero_ahead
        self.zeroed = size

    def write(self, sync: bool) -> tuple[int, float]:
        """Write what is pending, then fsync if asked; returns (bytes written, fsync seconds
        or -1). Raises OSError, leaving state ready for a retry."""
        if self.dirty:
            os.ftruncate(self.fd, self.good)
            self.zeroed = self.good
            self.dirty = False
        written = 0
        if self.pending:
            bufs = list(self.pending)
            total = sum(map(len, bufs))
            ahead = self.zero_ahead and self.good + total > self.zeroed
            try:
                if ahead:
                    ahead = self._write_ahead(bufs, total)
                else:
                    pwrite_all(self.fd, bufs, self.good, total)
            except OSError:
                self.dirty = True
                raise
            self.pending.clear()
            self.good += total
            self.zeroed = self.good + ZERO_AHEAD if ahead else max(self.zeroed, self.good)
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

    def _write_ahead(self, bufs: list[bytes | bytearray], total: int) -> bool:
        """Write ``bufs`` at ``good`` followed by ZERO_AHEAD zero bytes, in one pwritev (the
        fdatasync after it covers both). On a disk too full for the zeros, the data alone
        may still fit: it is written as a plain append. True if the zeros went out."""
        try:
            pwrite_all(self.fd, [*bufs, _ZEROS], self.good, total + ZERO_AHEAD)
            return True
        except OSError:
            os.ftruncate(self.fd, self.good)
        pwrite_all(self.fd, bufs, self.good, total)
        return False

    def trim(self) -> None:
        """Cut the zeros after the last frame off and make that durable (a segment left
        behind, or the last one at a clean shutdown)."""
        if self.zeroed > self.good:
            os.ftruncate(self.fd, self.good)
            os.fdatasync(self.fd)
            self.zeroed = self.good

    def close(self) -> None:
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
            old.trim()
            old.close()
            self.closing.pop(0)
        self._write(self.current, sync)

    def _write(self, f: LogFile, sync: bool) -> None:
        written, took = f.write(sync)
        self.bytes_written += written
        if took >= 0:
            self.fsyncs += 1
            self.last_fsync_s = took

    def close(self) -> None:
        for f in [*self.closing, self.current]:
            with contextlib.suppress(OSError):
                if not f.pending and not f.dirty:
                    f.trim()  # else recovery trims the zeros
                f.close()
