"""The numbers every layer agrees on, defined once.

The engine's bounds come from the engine itself (``wonderq/_core.pyx`` is where they are
enforced); everything else that more than one module needs is defined here, and every other
module imports it from here.
"""

from __future__ import annotations

import re

from ._core import MAX_DELAY_MS, MAX_ID, MAX_QUEUES, MAX_VISIBILITY_MS

__all__ = [
    "DEFAULT_QUEUE",
    "FSYNC_MODES",
    "MAX_DELAY_MS",
    "MAX_ID",
    "MAX_QUEUES",
    "MAX_VISIBILITY_MS",
    "MAX_WAIT_MS",
    "QUEUE_NAME",
    "QUEUE_NAME_RULE",
]

#: The queue the seed routes use; always present, cannot be deleted.
DEFAULT_QUEUE = "default"
#: Longest long poll (``wait``), ms: 20 s, as Amazon SQS.
MAX_WAIT_MS = 20_000
#: A queue name, whole (use ``fullmatch``).
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
#: The same rule in words, for error messages.
QUEUE_NAME_RULE = "1 to 80 characters of A-Z a-z 0-9 _ -"
#: ``--fsync`` values of the durable store (docs/DURABILITY.md).
FSYNC_MODES = ("always", "everysec", "never")
