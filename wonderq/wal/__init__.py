"""Durability: the write-ahead log, crash recovery and compaction (docs/DURABILITY.md).

One module per concept: ``format`` (the bytes: frames, sections, records), ``files`` (the
directory, the open segment, the writer thread's side), ``recovery`` (replay and repair),
``runs`` (the replayed messages, the replay's fast paths), ``snapshot`` (what compaction
writes and recovery starts from) and ``log`` (``Wal``, the event-loop side). Only the server
with ``--data-dir`` imports this package: the in-memory server never does.
"""

from ..limits import FSYNC_MODES
from .format import (
    Chunk,
    DeadLetter,
    Delete,
    End,
    FirstReceives,
    NextId,
    Publish,
    Purge,
    QueueDelete,
    QueuePut,
    Receive,
    WalCorruptError,
    decode_payload,
    encode_frame,
    read_file,
)
from .log import Wal, WalError
from .recovery import RecoveredState, RecoveryReport, recover
from .snapshot import BrokerSnapshotSource, SnapshotSource

__all__ = [
    "FSYNC_MODES",
    "BrokerSnapshotSource",
    "Chunk",
    "DeadLetter",
    "Delete",
    "End",
    "FirstReceives",
    "NextId",
    "Publish",
    "Purge",
    "QueueDelete",
    "QueuePut",
    "Receive",
    "RecoveredState",
    "RecoveryReport",
    "SnapshotSource",
    "Wal",
    "WalCorruptError",
    "WalError",
    "decode_payload",
    "encode_frame",
    "read_file",
    "recover",
]
