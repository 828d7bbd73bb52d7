"""RedisStore: the queues in Redis/Valkey, behind any number of WonderQ servers.

Every operation is one Lua script (``scripts/*.lua``) over one queue's keys, all tagged
``{queue}`` so a queue lives in one cluster slot; the script reads Redis's own clock
(``TIME``) and checks the fencing rule itself, so no front-end's state or clock matters.
Queue attributes are authoritative in a small registry (``wq:{reg}:*``) that serialises
creates, updates, deletes and dead-letter references; each queue's slot holds a versioned
copy for its scripts. Layout, ids and costs: docs/SCALEOUT.md and research/scaleout.md.

Where this store differs from the engine (docs/SCALEOUT.md says it for users):

* Ids are ``slot * 2**49 + v`` with ``v`` a per-slot counter kept at or above the clock
  (512 per ms since 2025), so they are unique per deployment, strictly increasing per queue,
  consecutive within a batch, and never reused after a failover that lost writes; they are
  not small and (in a cluster) not ordered across queues of different slots.
* Leases follow the primary's wall clock. An expired lease is made available by the next
  receive, peek or info on its queue (lazily) or by the sweeper, never later: the engine's
  "an unexpired entry still blocks" window does not exist here.
* A dead-letter move goes through an outbox (the queue and its dead-letter queue can live in
  different slots): for a few milliseconds the message is in neither queue.
* The SQS face's extras (attribute blob, first receive) live apart from the body
  (``wq:{q}:x``, only where there are any; :mod:`wonderq.redis.sqs`): a message first
  received through the own API shows its first SQS receive as ApproximateFirstReceiveTimestamp.
"""

from .answers import wait
from .keys import HANDLE_KEY, LOCK_KEY, REG_KEYS, QueueKeys, key_slot, slot_tag
from .lua import Script, load_scripts
from .stats import info_dict
from .store import RedisStore, StartError

__all__ = [
    "HANDLE_KEY",
    "LOCK_KEY",
    "REG_KEYS",
    "QueueKeys",
    "RedisStore",
    "Script",
    "StartError",
    "info_dict",
    "key_slot",
    "load_scripts",
    "slot_tag",
    "wait",
]
