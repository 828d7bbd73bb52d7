"""protocol.Deadlines against what its connections are owed, driven by Hypothesis.

Connections set deadlines (earlier or later than the one armed, as HttpProtocol's
_set_deadline does), are disarmed (closed), and the clock moves, with a loop that runs a
timer up to half a millisecond early (libuv rounds to milliseconds) and always moves on.
After every step: a connection timed out no earlier than its deadline and no later than the
tick after it; none is late; a disarmed one is never called; and none was called more than
twice per deadline it was given (once early, when its deadline had moved later, then once
on time), so no fire spins.

Plain Python (Deadlines takes any object with ``_tick``, ``peer`` and ``_on_timer``); the
compiled module is the same source, and tests/test_protocol.py runs it with real
connections.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_protocol import ManualLoop, _source_protocol

MODULE = _source_protocol()
TICK = 1 / MODULE.TICKS_PER_S
EARLY = 0.0005  # how early the loop may run a timer (libuv rounds to milliseconds)
STEP = 0.0001  # how long a loop turn takes at least
LATE = TICK + 0.002  # how late a timeout may come


class Conn:
    """What Deadlines uses of a connection, timing out at ``deadline`` as _on_timer does."""

    def __init__(self, deadlines: Any, clock: ManualLoop) -> None:
        self._tick = 0
        self.peer = "-"
        self.deadlines, self.clock = deadlines, clock
        self.deadline: float | None = None  # None: disarmed, or timed out
        self.given = 0  # deadlines set
        self.calls = 0
        self.calls_disarmed = 0
        self.timeouts: list[tuple[float, float]] = []  # (deadline, when it timed out)

    def _on_timer(self) -> None:
        self.calls += 1
        if self.deadline is None:
            self.calls_disarmed += 1
        elif self.clock.time() < self.deadline:
            self.deadlines.arm(self, self.deadline)
        else:
            self.timeouts.append((self.deadline, self.clock.time()))
            self.deadline = None


class DeadlinesVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualLoop(EARLY, STEP)
        self.deadlines = MODULE.Deadlines(self.clock)
        self.conns = [Conn(self.deadlines, self.clock) for _ in range(5)]

    @rule(k=st.integers(0, 4), ahead=st.floats(0.0001, 2.0))
    def set_deadline(self, k: int, ahead: float) -> None:
        conn = self.conns[k]
        conn.deadline = self.clock.now + ahead
        conn.given += 1
        self.deadlines.arm(conn, conn.deadline)

    @rule(k=st.integers(0, 4))
    def disarm(self, k: int) -> None:
        self.conns[k].deadline = None
        self.deadlines.disarm(self.conns[k])

    @rule(dt=st.one_of(st.floats(0.0, 0.05), st.floats(0.0, 1.0), st.sampled_from([TICK])))
    def advance(self, dt: float) -> None:
        self.clock.run_until(self.clock.now + dt)

    @invariant()
    def owed(self) -> None:
        for conn in self.conns:
            for deadline, at in conn.timeouts:
                assert deadline <= at <= deadline + LATE, (deadline, at)
            if conn.deadline is not None:
                assert self.clock.now < conn.deadline + LATE, "a timeout is late"
            assert conn.calls_disarmed == 0, "a disarmed connection was called"
            assert conn.calls <= 2 * conn.given, "called again and again"
        # Nothing but the armed connections is held, and every armed one in the tick it has.
        held = {id(c) for bucket in self.deadlines._buckets.values() for c in bucket}
        for conn in self.conns:
            assert (id(conn) in held) == bool(conn._tick)
        assert sorted(self.deadlines._ticks) == sorted(self.deadlines._buckets)


DeadlinesVsModel.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
test_deadlines_vs_model = DeadlinesVsModel.TestCase
