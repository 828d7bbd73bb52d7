"""RedisStore: the :class:`~wonderq.store.Store` on Redis/Valkey (the package docstring of
:mod:`wonderq.redis` says how it works and where it differs from the engine)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from functools import partial
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from .._core import (
    MAX_DELAY_MS,
    MAX_ID,
    MAX_QUEUES,
    MAX_VISIBILITY_MS,
    QueueNotFound,
    batch_ids_json,
)
from ..deferred import Deferred, Listener
from ..errors import BackendUnavailable, StoreError
from ..store import Store
from . import sqs
from .answers import _drained, _pass_on, _wait
from .checks import (
    _append_body,
    _BadBody,
    _check_int,
    _error_of,
    _int_arg,
    _Refusal,
    validated_attributes,
)
from .coalesce import Coalescer
from .connection import Address, Backend, ReplyError, encode, parse_url
from .keys import HANDLE_KEY, LOCK_KEY, REG_KEYS, QueueKeys, _id_arg, _tag_of, key_slot
from .lua import load_scripts
from .sqs import outbox_extras
from .stats import info_dict, metric_rows, read_figures, refresh_loop

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["RedisStore", "StartError"]

log = logging.getLogger("wonderq.redis")

EMPTY_MESSAGES = b'{"messages":[]}'


class StartError(StoreError):
    """The store must not start: Redis unreachable, too old, or evicting keys."""

    status = 503
    code = "backend_unavailable"


class RedisStore(Store):
    """The store on Redis/Valkey (``--backend redis://...``). See the package docstring."""

    kind = "redis"

    def __init__(self, settings: Settings, *, test_clock: bool = False) -> None:
        super().__init__()
        self.settings = settings
        self.target = parse_url(settings.backend)  # type: ignore[arg-type]
        self.test_clock = test_clock
        self.scripts = load_scripts(test_clock)
        self.cluster = self.target.mode == "cluster"
        self.max_batch = settings.max_batch
        self.max_message_bytes = settings.max_message_bytes
        self.visibility_ms = settings.visibility_timeout_ms
        self.redis_wait = getattr(settings, "redis_wait", 0)
        self.timeout_s = getattr(settings, "redis_timeout_s", 2.0)
        # WAIT blocks the connection: it must end well before the answer timeout breaks it.
        wait_s = min(getattr(settings, "redis_wait_timeout_s", 1.0), self.timeout_s * 0.8)
        self.redis_wait_timeout_ms = max(1, int(wait_s * 1000))
        self.connect_timeout_s = getattr(settings, "redis_connect_timeout_s", 1.0)
        self.pool = getattr(settings, "redis_pool", 1)
        self.keys: dict[str, QueueKeys] = {}
        self.backend: Backend | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.me = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stats: list[tuple[Any, ...]] = []
        self._memory = 0
        self._memory_limit = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self.sweeper: Any = None
        self.subscriber: Any = None
        self.dead_letter_moves = 0
        self.wait_failures = 0
        self.handle_key = b""  # 32 bytes shared by the deployment, once open() ran
        self._asked = time.monotonic()  # when stats() or the memory figures were last read
        self._expired_retention: dict[str, int] = {}  # per queue, from the last queue_info
        # The single publishes, receives and deletes of this loop turn (coalesce.py).
        self.coalescer = Coalescer(self)

    # ---- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Check the deployment before serving: reachable, Redis >= 7, eviction off (and
        ``--max-memory`` applied as ``maxmemory``); create ``default``. Raises StartError."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._prepare(loop))
        finally:
            loop.close()

    async def _prepare(self, loop: asyncio.AbstractEventLoop) -> None:
        backend = self._make_backend(loop)
        try:
            try:
                await backend.refresh()
                primaries = backend.primaries()
                if not primaries:
                    raise StartError("no Redis primary is known")
                for address in primaries:
                    await self._check_node(backend, address)
            except StartError:
                raise
            except Exception as exc:  # refused, timed out, not Redis at all
                raise StartError(f"cannot use Redis at {self.settings.backend}: {exc}") from None
            self.backend = backend
            self.loop = loop
            await self.reconcile()
            await self._load_handle_key()
        finally:
            self.backend = None
            self.loop = None
            tasks = backend.close()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _check_node(self, backend: Backend, address: Address) -> None:
        async def call(*args: Any) -> Any:
            reply = await asyncio.wait_for(
                backend.call_node(address, encode(args)), self.timeout_s + 1
            )
            if isinstance(reply, (ReplyError, Exception)):
                raise StartError(f"Redis at {address[0]}:{address[1]} refused {args[0]}: {reply}")
            return reply

        info = (await call("INFO", "server")).decode()
        version = next(
            (line.split(":", 1)[1] for line in info.splitlines() if "_version:" in line), "0"
        )
        major = int(version.split(".")[0] or 0)
        if major < 7:
            raise StartError(f"Redis at {address[0]}:{address[1]} is {version}; WonderQ needs 7+")
        policy = await call("CONFIG", "GET", "maxmemory-policy")
        if len(policy) == 2 and policy[1] != b"noeviction":
            raise StartError(
                f"Redis at {address[0]}:{address[1]} evicts keys (maxmemory-policy "
                f"{policy[1].decode()}), which would lose messages: set it to noeviction"
            )
        if self.settings.max_memory:
            await call("CONFIG", "SET", "maxmemory", str(self.settings.max_memory))
            memory = (await call("INFO", "memory")).decode()
            used = int(next(ln for ln in memory.splitlines() if ln.startswith("used_memory:"))[12:])
            if used >= self.settings.max_memory:
                log.warning(
                    "Redis at %s:%d already uses %d bytes, more than --max-memory %d (its "
                    "maxmemory counts all of Redis's data): every publish will be refused",
                    address[0], address[1], used, self.settings.max_memory,
                )  # fmt: skip

    def _make_backend(self, loop: asyncio.AbstractEventLoop) -> Backend:
        return Backend(
            loop,
            self.target,
            pool=self.pool,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
        )

    def start(self, loop: asyncio.AbstractEventLoop, listener: Listener) -> Any:
        self.listener = listener
        self._waiting = listener.waiting
        return self._start(loop)

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        from .sweeper import Subscriber, Sweeper

        self.loop = loop
        self.backend = self._make_backend(loop)
        self.backend.start()
        await self.backend.refresh()
        self.subscriber = Subscriber(self)
        self.sweeper = Sweeper(self)
        self.sweeper.start()
        try:  # the first /metrics already knows the queues and the memory limit
            await asyncio.wait_for(self.refresh_stats(), self.timeout_s)
        except Exception as exc:
            log.warning("reading the queues' counters at start failed: %s", exc)
        self._tasks.append(loop.create_task(self._refresh_loop()))

    async def start_bare(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connections only: no sweeper, no pub/sub, no stats refresh (in-process tests
        that drive every step themselves)."""
        self.loop = loop
        self.backend = self._make_backend(loop)
        self.backend.start()
        await self.backend.refresh()

    def kill_for_tests(self) -> None:
        """Die as a crashed server would: every task and connection gone at once, the
        sweeper lease left to run out."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self.sweeper is not None and self.sweeper.task is not None:
            self.sweeper.task.cancel()
            self.sweeper.task = None
            self.sweeper.holder = False
        if self.subscriber is not None:
            self.subscriber.close()
        if self.backend is not None:
            self.backend.close()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self.sweeper is not None:
            await self.sweeper.stop()
        if self.subscriber is not None:
            self.subscriber.close()
        if self.backend is not None:
            tasks = self.backend.close()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> Any:
        return self._close()

    # ---- plumbing -------------------------------------------------------------------------
    def queue_keys(self, name: str) -> QueueKeys:
        keys = self.keys.get(name)
        if keys is None:
            keys = QueueKeys(name, self.cluster, self.test_clock)
            if len(self.keys) > 100_000:
                self.keys.clear()
            self.keys[name] = keys
        return keys

    def _send(
        self,
        slot: int,
        payload: bytes,
        alt: bytes | Callable[[], bytes],
        on_reply: Callable[[Any], None],
    ) -> Any:
        backend = self.backend
        if backend is None:
            raise BackendUnavailable("the Redis store is not started")
        if self.coalescer.pending:
            self.coalescer.flush()  # what was asked for before this request goes first
        return backend.execute(slot, payload, on_reply, alt=alt)

    def script(
        self,
        name: str,
        queue: str,
        args: list[bytes],
        parse: Callable[[Any], Any] | None = None,
        deferred: Deferred | None = None,
    ) -> Deferred:
        """Run data script ``name`` on ``queue``'s keys; the Deferred gets ``parse(reply)``
        (or the reply), or the error the reply stands for."""
        script = self.scripts[name]
        keys = self.queue_keys(queue)
        fragment, nargs = keys.fragment(script.keys)
        body = b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])
        count = b"*%d\r\n" % (nargs + len(args))
        payload = count + script.head + fragment + body
        d = Deferred() if deferred is None else deferred

        def on_reply(reply: Any) -> None:
            if isinstance(reply, (ReplyError, Exception)):
                d.fail(_error_of(reply))
                return
            if parse is None:
                d.resolve(reply)
                return
            try:
                value = parse(reply)
            except Exception as exc:
                d.fail(exc)
                return
            if type(value) is Deferred:
                value.add(lambda inner: _pass_on(inner, d))
            else:
                d.resolve(value)

        # The EVAL form, built only after a NOSCRIPT (a flushed script cache, a new node).
        alt = partial(_join, count, script.eval_head, fragment, body)
        self._send(keys.slot, payload, alt, on_reply)
        return d

    def registry(self, name: str, args: list[Any]) -> Deferred:
        """Run a registry script (``wq:{reg}:*``)."""
        script = self.scripts[name]
        keys: tuple[str, ...] = REG_KEYS if name != "lock" else (LOCK_KEY,)
        if name == "reg_delete":
            keys = (REG_KEYS[0], REG_KEYS[1], REG_KEYS[3])
        elif name == "reg_put":
            keys = REG_KEYS[:3]
        return self.command_on(
            keys[0],
            ["EVALSHA", script.sha, len(keys), *keys, *args],
            alt=["EVAL", script.source, len(keys), *keys, *args],
        )

    def command_on(self, key: str, args: list[Any], alt: list[Any] | None = None) -> Deferred:
        """A plain command routed by ``key``'s slot; the Deferred gets the raw reply."""
        slot = key_slot(_tag_of(key).encode()) if self.cluster else 0
        d = Deferred()

        def on_reply(reply: Any) -> None:
            if isinstance(reply, (ReplyError, Exception)):
                d.fail(_error_of(reply))
            else:
                d.resolve(reply)

        self._send(slot, encode(args), encode(alt) if alt else b"", on_reply)
        return d

    def _refuse(self, queue: str, refusal: _Refusal) -> Deferred:
        """A bad argument, reported as the engine would: 404 first if the queue is missing."""
        return self.script("check", queue, [refusal.wire.encode(), b"0"])

    def _after_moves(self, queue: str, moves: int, value: Any) -> Any:
        """``value``, once the dead-letter moves a script just made have been delivered
        (best effort: a failure leaves them to the sweeper)."""
        if not moves:
            return value
        self.dead_letter_moves += moves
        d = Deferred()
        task = self.loop.create_task(self.drain_outbox(queue))  # type: ignore[union-attr]
        task.add_done_callback(partial(_drained, d, value))
        return d

    def _confirmed(self, queue: str, value: Any) -> Any:
        """With ``--redis-wait N``: ``value`` once N replicas have the write (WAIT on the
        node of the queue's slot), else 503 (stored but unconfirmed)."""
        if not self.redis_wait:
            return value
        d = Deferred()
        keys = self.queue_keys(queue)

        def on_reply(reply: Any) -> None:
            if isinstance(reply, int) and reply >= self.redis_wait:
                d.resolve(value)
                return
            self.wait_failures += 1
            d.fail(
                BackendUnavailable(
                    f"the message was stored but {self.redis_wait} replica(s) did not confirm "
                    f"it within {self.redis_wait_timeout_ms} ms (got {reply!r}); it may be "
                    "delivered if it survived, so a retry can duplicate it"
                )
            )

        payload = encode([b"WAIT", self.redis_wait, self.redis_wait_timeout_ms])
        self._send(keys.slot, payload, b"", on_reply)
        return d

    # ---- queues ---------------------------------------------------------------------------
    def put_queue(self, name: str, attributes: dict[str, Any] | None) -> Any:
        pairs = validated_attributes(attributes, self.max_message_bytes)
        defaults = "|".join([str(self.visibility_ms), "0", "", "", str(self.max_message_bytes), ""])
        d = Deferred()
        reg = self.registry("reg_put", [name, MAX_QUEUES, defaults, *pairs])

        def registered(r: Deferred) -> None:
            if r.error is not None:
                d.fail(r.error)
                return
            created, packed = r.value
            inner = self._write_attrs(name, bool(created), packed.decode())
            inner.add(lambda i: d.fail(i.error) if i.error else d.resolve(bool(created)))

        reg.add(registered)
        return d

    def _write_attrs(self, name: str, created: bool, packed: str) -> Deferred:
        vis, delay, maxr, dlq, mmb, ret, ver, *meta = packed.split("|", 7)
        args = [b"1" if created else b"0", ver, vis, delay, maxr, dlq, mmb, ret, *meta]
        return self.script(
            "setattrs", name, [a if isinstance(a, bytes) else a.encode() for a in args]
        )

    def delete_queue(self, name: str) -> Any:
        d = Deferred()
        reg = self.registry("reg_delete", [name])

        def removed(r: Deferred) -> None:
            if r.error is not None:
                d.fail(r.error)
                return
            ver = r.value if isinstance(r.value, bytes) else str(r.value).encode()
            dropped = self.script("drop", name, [ver], parse=int)

            def finished(x: Deferred) -> None:
                if x.error is not None:
                    d.fail(x.error)  # the tombstone stays: the sweeper drops it later
                    return
                self.command_on(REG_KEYS[3], ["HDEL", REG_KEYS[3], name])
                d.resolve(x.value)

            dropped.add(finished)

        reg.add(removed)
        return d

    def purge(self, name: str) -> Any:
        return self.script("purge", name, [], parse=int)

    def queue_info(self, name: str) -> Any:
        return self.script("info", name, [], parse=lambda r: self._info(name, r))

    def _info(self, name: str, reply: list[Any]) -> Any:
        info = info_dict(name, reply)
        totals = reply[4]
        self._expired_retention[name] = 0  # a queue deleted and made again starts at 0
        for i in range(0, len(totals), 2):
            if totals[i] == b"expired_retention":  # in stats() only, as the engine has it
                self._expired_retention[name] = int(totals[i + 1])
        return self._after_moves(name, int(reply[6]), info)

    def list_queues(self, prefix: str, after: str, limit: int) -> Any:
        d = Deferred()
        names_d = self.command_on(REG_KEYS[0], ["HKEYS", REG_KEYS[0]])

        def got_names(r: Deferred) -> None:
            if r.error is not None:
                d.fail(r.error)
                return
            names = sorted(n.decode() for n in r.value)
            names = [n for n in names if n.startswith(prefix) and n > after]
            page, more = names[:limit], len(names) > limit
            infos: list[Any] = [None] * len(page)
            remaining = [len(page)]
            if not page:
                d.resolve(([], None))
                return

            def one(i: int, x: Deferred) -> None:
                if x.error is None:
                    infos[i] = x.value
                elif not isinstance(x.error, QueueNotFound):
                    d.fail(x.error)
                remaining[0] -= 1
                if remaining[0] == 0 and not d.done:
                    found = [info for info in infos if info is not None]
                    d.resolve((found, page[-1] if more else None))

            for i, qname in enumerate(page):
                self.queue_info(qname).add(lambda x, i=i: one(i, x))

        names_d.add(got_names)
        return d

    async def reconcile(self) -> None:
        """Make ``default`` exist and every queue's copy of its attributes current (after an
        interrupted put), and finish interrupted deletes (tombstones)."""
        await _wait(self.put_queue("default", None))
        registry = await _wait(self.command_on(REG_KEYS[0], ["HGETALL", REG_KEYS[0]]))
        for i in range(0, len(registry), 2):
            name, packed = registry[i].decode(), registry[i + 1].decode()
            await _wait(self._write_attrs(name, False, packed))
        await self.finish_deletes()

    async def _load_handle_key(self) -> None:
        """The deployment's secret for lease handles (the SQS receipt handle): made once by
        whichever server starts first, read by all, so a handle issued through one server
        verifies on every other (and a foreign or forged one on none)."""
        key = HANDLE_KEY
        # A script with allow-oom: a Redis already past maxmemory must not stop the start.
        make = (
            "#!lua flags=allow-oom\n"
            "redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])"
        )
        value = await _wait(self.command_on(key, ["EVAL", make, 1, key, os.urandom(32).hex()]))
        self.handle_key = bytes.fromhex(value.decode())

    async def finish_deletes(self) -> None:
        dead = await _wait(self.command_on(REG_KEYS[3], ["HGETALL", REG_KEYS[3]]))
        for i in range(0, len(dead), 2):
            name, ver = dead[i].decode(), dead[i + 1]
            await _wait(self.script("drop", name, [ver]))
            await _wait(self.command_on(REG_KEYS[3], ["HDEL", REG_KEYS[3], name]))

    # ---- messages -------------------------------------------------------------------------
    def publish(self, queue: str, body: bytes, delay_ms: int) -> Any:
        """One message; the single publishes of a loop turn to a queue share one script
        (coalesce.py), each still answered on its own."""
        args: list[bytes] = []
        try:
            if not _int_arg(delay_ms, -1, MAX_DELAY_MS):
                raise _Refusal(
                    "invalid_delay", f"delay_ms must be an integer in -1..{MAX_DELAY_MS}"
                )
            _append_body(args, delay_ms, body)
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        except _BadBody:
            return self._check_bodies(queue, "", [body], [delay_ms])
        if self.loop is None:
            return self.script("publish", queue, [b"1", *args])  # fails: not started
        return self.coalescer.add("publish", queue, args)

    def publish_batch(self, queue: str, bodies: list[bytes], delays: list[int] | None) -> Any:
        batch_error = ""
        seq: list[Any] = []
        if isinstance(bodies, (bytes, bytearray, memoryview, str)):
            batch_error = "invalid_batch bodies must be a sequence of bodies"
        else:
            seq = list(bodies)
            if not 1 <= len(seq) <= self.max_batch:
                batch_error = f"invalid_batch a batch holds 1..{self.max_batch} messages"
            elif any(not isinstance(b, (bytes, bytearray, memoryview)) for b in seq):
                batch_error = "invalid_body body must be bytes"
            elif delays is not None:
                if isinstance(delays, (bytes, bytearray, memoryview, str)):
                    batch_error = "invalid_delay delays must be a sequence of integers"
                else:
                    delays = list(delays)
                    if len(delays) != len(seq):
                        batch_error = "invalid_delay delays must have one entry per body"
        if batch_error:
            code, message = batch_error.split(" ", 1)
            return self._refuse(queue, _Refusal(code, message))
        delay_list = list(delays) if delays is not None else [-1] * len(seq)
        args: list[bytes] = [b"%d" % len(seq)]
        try:
            for body, delay in zip(seq, delay_list, strict=False):
                if not _int_arg(delay, -1, MAX_DELAY_MS):
                    raise _BadBody
                _append_body(args, delay, body)
        except (_BadBody, _Refusal):
            return self._check_bodies(queue, "", seq, delay_list)
        return self.script("publish", queue, args, parse=lambda r: self._published(queue, int(r)))

    def publish_batch_json(self, queue: str, data: bytes) -> Any:
        try:
            items = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if (
            type(items) is not list
            or not 1 <= len(items) <= self.max_batch
            or any(type(s) is not str or not s for s in items)
        ):
            return None
        args: list[bytes] = [b"%d" % len(items)]
        try:
            for text in items:
                raw = text.encode()
                args += [b"-1", b"%d" % len(raw), encode_basestring(text)[1:-1].encode()]
        except UnicodeEncodeError:
            return None  # a lone surrogate: the general path names the error
        n = len(items)
        return self.script(
            "publish",
            queue,
            args,
            parse=lambda r: self._published(queue, batch_ids_json(int(r), n)),
        )

    def _check_bodies(
        self, queue: str, batch_error: str, bodies: list[Any], delays: list[Any]
    ) -> Deferred:
        """Find the first bad item in the engine's order (queue, then per item: delay,
        empty, size, UTF-8) and fail with it; the size check needs Redis."""
        args: list[bytes] = [batch_error.encode(), b"%d" % len(bodies)]
        for body, delay in zip(bodies, delays, strict=False):
            before = after = ""
            raw = bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else b""
            if not _int_arg(delay, -1, MAX_DELAY_MS):
                before = f"invalid_delay delay_ms must be an integer in -1..{MAX_DELAY_MS}"
            elif not isinstance(body, (bytes, bytearray, memoryview)):
                before = "invalid_body body must be bytes"
            elif not raw:
                before = "invalid_body body must not be empty"
            else:
                try:
                    raw.decode()
                except UnicodeDecodeError:
                    after = "invalid_body body must be valid UTF-8"
            args += [before.encode(), b"%d" % len(raw), after.encode()]
        return self.script("check", queue, args)

    def receive(self, queue: str, cid: int, limit: int, visibility_ms: int) -> Any:
        try:
            _check_int(cid, 0, MAX_ID, "invalid_cid", "cid")
            _check_int(limit, 1, self.max_batch, "invalid_limit", "limit")
            _check_int(visibility_ms, -1, MAX_VISIBILITY_MS, "invalid_visibility", "visibility_ms")
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        args = [b"%d" % cid, b"%d" % limit, b"%d" % visibility_ms]
        if self.loop is None:
            return self.script("receive", queue, args)  # fails: not started
        return self.coalescer.add("receive", queue, args)

    def _received(self, queue: str, reply: list[Any]) -> Any:
        answer = reply[0]
        if answer == EMPTY_MESSAGES:
            answer = EMPTY_MESSAGES
            if self.subscriber is not None:
                self.subscriber.want(queue)
        return self._after_moves(queue, reply[1], answer)

    def peek(self, queue: str, limit: int) -> Any:
        try:
            _check_int(limit, 1, self.max_batch, "invalid_limit", "limit")
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        return self.script(
            "peek", queue, [b"%d" % limit], parse=lambda r: self._after_moves(queue, r[1], r[0])
        )

    def delete(self, queue: str, cid: int, msg_id: int) -> Any:
        try:
            _check_int(cid, 0, MAX_ID, "invalid_cid", "cid")
            _check_int(msg_id, 1, MAX_ID, "invalid_id", "id")
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        if self.loop is None:
            return self.script("delete", queue, [b"c", b"%d" % cid, _id_arg(msg_id)])
        return self.coalescer.add("delete", queue, [_id_arg(msg_id), b"%d" % cid])

    def _deleted(self, queue: str, value: Any, any_deleted: bool | None = None) -> Any:
        """A delete is answered once replicated too (with --redis-wait), so an acknowledged
        delete does not come back after a failover."""
        if any_deleted is None:
            any_deleted = bool(value)
        return self._confirmed(queue, value) if any_deleted else value

    def delete_token(self, queue: str, msg_id: int, receives: int) -> Any:
        """Delete by lease token ``(id, receives)``: the same rule as by cid."""
        try:
            _check_int(msg_id, 1, MAX_ID, "invalid_id", "id")
            _check_int(receives, 0, 2**32 - 1, "invalid_receives", "receives")
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        args = [b"t", _id_arg(msg_id), b"%d" % receives]
        return self.script("delete", queue, args, parse=lambda r: self._deleted(queue, r[0] == 1))

    def delete_batch(self, queue: str, cid: int, ids: list[Any]) -> Any:
        try:
            _check_int(cid, 0, MAX_ID, "invalid_cid", "cid")
            if isinstance(ids, (bytes, bytearray, memoryview, str)):
                raise _Refusal("invalid_batch", "ids must be a sequence of integers")
            ids = list(ids)
            if len(ids) > self.max_batch:
                raise _Refusal("invalid_batch", f"at most {self.max_batch} ids")
            for msg_id in ids:
                _check_int(msg_id, 1, MAX_ID, "invalid_id", "id")
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        args = [b"c", b"%d" % cid, *[_id_arg(i) for i in ids]]

        def split(reply: list[int]) -> tuple[list[int], list[int]]:
            deleted = [i for i, ok in zip(ids, reply, strict=False) if ok == 1]
            failed = [i for i, ok in zip(ids, reply, strict=False) if ok != 1]
            return self._deleted(queue, (deleted, failed), bool(deleted))

        return self.script("delete", queue, args, parse=split)

    def ack_json(self, queue: str, data: bytes) -> Any:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if type(doc) is not dict or set(doc) != {"cid", "ids"}:
            return None
        cid, ids = doc["cid"], doc["ids"]
        if (
            not _int_arg(cid, 0, MAX_ID)
            or type(ids) is not list
            or not 1 <= len(ids) <= self.max_batch
            or not all(_int_arg(i, 1, MAX_ID) for i in ids)
        ):
            return None
        d = self.delete_batch(queue, cid, ids)
        out = Deferred()

        def answered(x: Deferred) -> None:
            if x.error is not None:
                out.fail(x.error)
                return
            deleted, failed = x.value
            out.resolve(
                json.dumps({"deleted": deleted, "failed": failed}, separators=(",", ":")).encode()
            )

        d.add(answered)
        return out

    def change_lease(self, queue: str, cid: int, msg_id: int, timeout_ms: int) -> Any:
        try:
            _check_int(cid, 0, MAX_ID, "invalid_cid", "cid")
            _check_int(msg_id, 1, MAX_ID, "invalid_id", "id")
            _check_int(timeout_ms, 0, MAX_VISIBILITY_MS, "invalid_timeout", "timeout_ms")
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        args = [b"c", b"%d" % cid, _id_arg(msg_id), b"%d" % timeout_ms]
        return self.script("lease", queue, args, parse=lambda r: self._leased(queue, r))

    def change_lease_token(self, queue: str, msg_id: int, receives: int, timeout_ms: int) -> Any:
        """Change a lease by token ``(id, receives)``: the same rule as by cid."""
        try:
            _check_int(msg_id, 1, MAX_ID, "invalid_id", "id")
            _check_int(receives, 0, 2**32 - 1, "invalid_receives", "receives")
            _check_int(timeout_ms, 0, MAX_VISIBILITY_MS, "invalid_timeout", "timeout_ms")
        except _Refusal as refusal:
            return self._refuse(queue, refusal)
        args = [b"t", b"%d" % receives, _id_arg(msg_id), b"%d" % timeout_ms]
        return self.script("lease", queue, args, parse=lambda r: self._leased(queue, r))

    def _published(self, queue: str, value: Any) -> Any:
        """After a publish: this server's parked receives on the queue try again at once, in
        this turn, before the publisher hears back (other servers hear it by pub/sub)."""
        waiting = self.listener.waiting
        if waiting and queue in waiting:
            self.listener.available(queue)
        return self._confirmed(queue, value)

    # ---- the SQS face (Store's section; wonderq/redis/sqs.py) -------------------------------
    def send(self, queue: str, body: bytes, delay_ms: int, attributes: bytes | None) -> Any:
        return sqs.send(self, queue, body, delay_ms, attributes)

    def receive_messages(self, queue: str, limit: int, visibility_ms: int) -> Any:
        return sqs.receive_messages(self, queue, limit, visibility_ms)

    def token_key(self) -> bytes:
        """The deployment's secret for receipt handles (see ``handle_key``)."""
        return self.handle_key

    def delete_by_token(self, queue: str, msg_id: int, receives: int) -> Any:
        return self.delete_token(queue, msg_id, receives)

    def change_lease_by_token(self, queue: str, msg_id: int, receives: int, timeout_ms: int) -> Any:
        return self.change_lease_token(queue, msg_id, receives, timeout_ms)

    def _leased(self, queue: str, reply: list[int]) -> Any:
        if reply[0] == 1 and queue in self.listener.waiting:
            self.listener.available(queue)  # a release: this server's waiters first
        return self._after_moves(queue, reply[1], reply[0] == 1)

    # ---- dead letters ---------------------------------------------------------------------
    async def drain_outbox(self, queue: str) -> int:
        """Deliver the queue's outbox to the dead-letter queues (steps 2-4 of a move; see
        scripts/import.lua). Safe to run twice at once and to repeat after any failure."""
        moved = 0
        keys = self.queue_keys(queue)
        outbox = f"wq:{keys.tag}:o"
        for _ in range(100):
            entries = await _wait(self.command_on(outbox, ["HSCAN", outbox, "0", "COUNT", "200"]))
            flat = entries[1]
            if not flat:
                return moved
            for i in range(0, len(flat), 2):
                msg_id, entry = flat[i], flat[i + 1]
                parts = entry.split(b"\n", 4)  # dlq, token, body[, SQS extras]
                dlq, token, body = parts[:3]
                args = [msg_id, token, body, *outbox_extras(parts)]
                outcome = await _wait(self.script("import", dlq.decode(), args))
                if outcome == b"ok":
                    # With --redis-wait, the copy is replicated before the original goes.
                    await _wait(self._confirmed(dlq.decode(), outcome))
                    if dlq.decode() in self.listener.waiting:
                        self.listener.available(dlq.decode())
                await _wait(self.script("unout", queue, [msg_id, token, outcome]))
                if outcome != b"gone":
                    await _wait(self.script("forget", dlq.decode(), [msg_id, token]))
                moved += 1
        return moved

    # ---- operations -----------------------------------------------------------------------
    def health(self) -> Any:
        backend = self.backend
        if backend is None:
            return False
        addresses = backend.primaries()
        if not addresses:
            return False
        d = Deferred()
        left = [len(addresses)]
        ok = [True]

        def one(reply: Any) -> None:
            if isinstance(reply, (ReplyError, Exception)) or reply != b"PONG":
                ok[0] = False
            left[0] -= 1
            if left[0] == 0:
                d.resolve(ok[0])

        for address in addresses:
            backend.node(address).send(b"*1\r\n$4\r\nPING\r\n", one)
        return d

    def stats(self) -> list[tuple[Any, ...]]:
        self._asked = time.monotonic()
        return self._stats

    def memory_bytes(self) -> int:
        self._asked = time.monotonic()
        return self._memory

    def memory_limit(self) -> int:
        self._asked = time.monotonic()
        return self._memory_limit

    def metrics(self) -> list[tuple[str, str, str, float]]:
        return metric_rows(self)

    async def _refresh_loop(self) -> None:
        await refresh_loop(self)

    async def refresh_stats(self) -> None:
        await read_figures(self)

    # ---- tests ----------------------------------------------------------------------------
    def set_test_clock(self, queues: list[str], now_ms: int) -> Deferred:
        """With ``test_clock``: the time every script on these queues reads."""
        assert self.test_clock
        last = Deferred()
        for name in queues:
            last = self.command_on(f"wq:{{{name}}}:clock", ["SET", f"wq:{{{name}}}:clock", now_ms])
        return last


def _join(*parts: bytes) -> bytes:
    return b"".join(parts)
