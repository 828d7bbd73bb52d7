"""The benchmark's report: medians over runs, the tables, the ratios, the goals checklist, and
the generated region of bench/RESULTS.md. It reads only the results the workloads recorded
(the same dicts that go to bench/results/run-<time>.json), so a report can be rendered again
from a saved JSON file.

The generator-bound rule: a row whose load generator used GENERATOR_BOUND (90%) or more of its
core measured the generator, not the server. The table marks it, and a goal that would read
it is "not counted" rather than met or not met.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import GENERATOR_BOUND
from workloads import HTTP_WORKLOADS, INSTRUCTIONS

BEGIN = "<!-- BEGIN bench/run.py: generated, do not edit by hand -->"
END = "<!-- END bench/run.py -->"
NONE = "-"  # a figure that was not measured

SERVERS = {  # result group -> row label, for the HTTP servers
    "wonderq": "WonderQ",
    "ceiling": "Python ceiling",
    "reading": "Python reading ceiling",
    "nginx": "nginx, 1 worker",
}
CEILINGS = [g for g in SERVERS if g != "wonderq"]  # every HTTP row's rate is divided by theirs
REDIS_PY = "peers/redis_queue.py (Python client)"
BEANSTALK_PY = "peers/beanstalk_queue.py (Python client)"
PEER_ROWS = [  # (group, key, server, workload, load)
    ("redis", "lpush_p1", "Redis", "LPUSH 200 B", "redis-benchmark"),
    ("redis", "lpush_p16", "Redis", "LPUSH 200 B, 16 pipelined", "redis-benchmark -P 16"),
    ("redis", "reliable_p1", "Redis", "LMOVE + LREM (reliable queue)", REDIS_PY),
    ("redis", "reliable_p16", "Redis", "LMOVE + LREM, 16 pipelined", REDIS_PY),
    ("beanstalkd", "put_p1", "beanstalkd", "put 200 B", BEANSTALK_PY),
    ("beanstalkd", "put_p16", "beanstalkd", "put 200 B, 16 pipelined", BEANSTALK_PY),
    ("beanstalkd", "work_p1", "beanstalkd", "reserve + delete", BEANSTALK_PY),
    ("beanstalkd", "work_p16", "beanstalkd", "reserve + delete, 16 pipelined", BEANSTALK_PY),
]


def med(values: list[Any]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def fmt_rate(v: float | None) -> str:
    if v is None:
        return NONE
    if v >= 100_000:
        return f"{v / 1000:,.0f}k"
    if v >= 10_000:
        return f"{v / 1000:,.1f}k"
    return f"{v:,.0f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return NONE
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_x(v: float | None) -> str:
    return NONE if v is None else f"{v:.2f}x"


def fmt_pct(v: float | None) -> str:
    return NONE if v is None else f"{100 * v:.0f}%"


def fmt_mb(v: float | None) -> str:
    """MB = 10**6 bytes (the goals' unit, read strictly)."""
    return NONE if v is None else f"{v / 1e6:,.1f} MB"


@dataclass
class Row:
    """One workload on one server, across the runs."""

    group: str  # result group: wonderq, ceiling, reading, nginx, redis, beanstalkd, depth
    key: str  # workload key inside the group
    server: str
    workload: str
    cells: list[dict]  # this row's result in each run
    how: str = ""

    @classmethod
    def of(cls, runs: list[dict], group: str, key: str, server: str = "", label: str = "") -> Row:
        return cls(group, key, server, label, [r.get(group, {}).get(key, {}) for r in runs])

    def na(self) -> str | None:
        """Why there is no figure: only when no run produced one."""
        if any("requests" in c for c in self.cells):
            return None
        for c in self.cells:
            if c.get("na"):
                return c["na"]
        return "not run"

    def partial(self) -> str:
        """ "2 of 3 runs" when some runs failed (the median is over the others)."""
        good = sum(1 for c in self.cells if "requests" in c)
        return f"{good} of {len(self.cells)} runs" if good < len(self.cells) else ""

    def m(self, metric: str) -> float | None:
        if metric in ("p50", "p99"):
            return med([c.get("latency_ms", {}).get(metric) for c in self.cells])
        return med([c.get(metric) for c in self.cells])

    def generator_bound(self) -> bool:
        """The load generator used GENERATOR_BOUND of its core or more (median over runs)."""
        gen = self.m("loadgen_cpu")
        return gen is not None and gen >= GENERATOR_BOUND

    def gen_cell(self) -> str:
        gen = self.m("loadgen_cpu")
        return f"**{fmt_pct(gen)}** generator-bound" if self.generator_bound() else fmt_pct(gen)


def ratio(num: Row, den: Row, metric: str = "rps") -> float | None:
    """Median over runs of ``num``'s figure divided by ``den``'s in the same run."""
    vals = []
    for a, b in zip(num.cells, den.cells, strict=True):
        x, y = a.get(metric), b.get(metric)
        if x and y:
            vals.append(x / y)
    return med(vals)


def instructions(meta: dict, group: str, key: str) -> str:
    name = INSTRUCTIONS.get((group, key))
    per = (meta.get("instructions") or {}).get("per_request", {})
    if name is None or name not in per:
        return NONE
    return f"{per[name]:,} ({name})"


# ============================================================================================
# Sections


def header(meta: dict, n: int) -> list[str]:
    out = [
        f"_Generated by `{meta['command']}` on {meta['date']}; medians of {n} run(s), "
        f"{meta['duration']:g} s per workload, {meta['connections']} connections, "
        f"{meta['pinning']}; HTTP load from {meta.get('generator', 'wrk')}._",
        "",
        "### Machine",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in meta["machine"].items()]
    return [*out, ""]


THROUGHPUT_INTRO = (
    "Requests/s and messages/s are medians over the runs; p50/p99 are per request (per round "
    "of 16 when pipelined) in milliseconds. *instr/req*: instructions per request counted by "
    "`bench/instructions.py` (callgrind, in-process, user space only; per message on batch "
    "rows; the name is its workload), which noise does not move. *x ceiling*, *x reading* and "
    "*x nginx* divide requests/s by the same workload's requests/s on the Python ceiling, the "
    "Python reading ceiling and nginx in the same run, then take the median. *srv CPU* / "
    "*gen CPU*: share of one core used by the server and by the load generator during the run "
    "(100% = that side is the bottleneck). A row whose generator used "
    f"{GENERATOR_BOUND:.0%} or more is **generator-bound**: it measured the generator, so it "
    "counts toward no goal. *other CPU*: what the rest of the machine used meanwhile (out of "
    "200% on 2 cores); when it is high, both sides were starved and the absolute rates are "
    "low, while the ratios, taken seconds apart, still compare like with like."
)


def throughput(runs: list[dict], meta: dict) -> list[str]:
    out = ["### Throughput and latency", "", THROUGHPUT_INTRO, ""]
    out.append(
        "| server | workload | requests/s | messages/s | instr/req | p50 ms | p99 ms | x ceiling "
        "| x reading | x nginx | srv CPU | gen CPU | other CPU | load |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    rows = [
        (Row.of(runs, g, w.key, name, w.label), f"{meta.get('generator', 'wrk')} {w.key}")
        for g, name in SERVERS.items()
        for w in HTTP_WORKLOADS
    ]
    rows += [(Row.of(runs, g, k, s, label), how) for g, k, s, label, how in PEER_ROWS]
    for row, how in rows:
        na = row.na()
        if na:
            out.append(f"| {row.server} | {row.workload} | {na} |{' |' * 10} {how} |")
            continue
        xs = [
            fmt_x(ratio(row, Row.of(runs, base, row.key)))
            if row.group in SERVERS and row.group != base
            else NONE
            for base in CEILINGS
        ]
        notes = [row.partial()] if row.partial() else []
        empties = med([c.get("empty") for c in row.cells])
        if empties and row.group == "wonderq":
            notes.append(f"{empties:,.0f} empty receives")
        out.append(
            f"| {row.server} | {row.workload} | {fmt_rate(row.m('rps'))} | "
            f"{fmt_rate(row.m('mps'))} | {instructions(meta, row.group, row.key)} | "
            f"{fmt_ms(row.m('p50'))} | {fmt_ms(row.m('p99'))} | {' | '.join(xs)} | "
            f"{fmt_pct(row.m('server_cpu'))} | {row.gen_cell()} | {fmt_pct(row.m('other_cpu'))} "
            f"| {'; '.join([how, *notes])} |"
        )
    out += [
        "",
        "The ceilings and nginx answer every request with the same fixed 200 whatever the route; "
        "on the receive rows the generator, finding no id in that answer, deletes or acks id 1, "
        "so they get the same mix of requests as WonderQ (and count no messages).",
        "",
    ]
    return out


def memory(runs: list[dict]) -> list[str]:
    out = ["### Resident memory with 1,000,000 messages of 200 B", ""]
    out += ["| server | resident (VmRSS) | empty | per message | how |", "|---|--:|--:|--:|---|"]
    wq = [r.get("depth", {}).get("depth_1000000", {}) for r in runs]
    wq_mem = [c.get("memory") or {} for c in wq]
    wq_na = next((c.get("na") for c in wq if c.get("na")), None)
    if wq_na or not any(wq_mem):
        out.append(f"| WonderQ | {wq_na or 'not run'} | | | |")
    else:
        rss = med([m.get("vmrss") for m in wq_mem])
        empty = med([m.get("vmrss_empty") for m in wq_mem])
        prom = med([m.get("process_resident_memory_bytes") for m in wq_mem])
        per = (rss - empty) / 1e6 if rss and empty else None
        extra = f"; /metrics process_resident_memory_bytes {fmt_mb(prom)}" if prom else ""
        per_msg = NONE if per is None else f"{per:.0f} B"
        out.append(f"| WonderQ | {fmt_mb(rss)} | {fmt_mb(empty)} | {per_msg} | VmRSS{extra} |")
    for group, name in (("redis", "Redis"), ("beanstalkd", "beanstalkd")):
        cells = [r.get(group, {}).get("memory", {}) for r in runs]
        na = next((c.get("na") for c in cells if c.get("na")), None)
        if na:
            out.append(f"| {name} | {na} | | | |")
            continue
        rss = med([c.get("vmrss") for c in cells])
        per_msg = NONE if not rss else f"{rss / 1e6:.0f} B"
        out.append(f"| {name} | {fmt_mb(rss)} | | {per_msg} | 1M unique values, VmRSS |")
    sizing = runs[0].get("sizing") if runs else None
    if sizing:
        out.append("")
        if sizing.get("na"):
            out.append(f"Locust sizing scenario: {sizing['na']}.")
        else:
            status = "passed" if sizing.get("exit") == 0 else f"FAILED (exit {sizing.get('exit')})"
            out.append(
                f"Locust sizing scenario ({status}, {sizing.get('seconds')} s, "
                f"`{sizing.get('command')}`):"
            )
            out.append("")
            line = sizing.get("line") or "no sizing line printed: see bench/results/sizing.log"
            out.append(f"**{line}**")
    return [*out, ""]


def depth_sweep(runs: list[dict], meta: dict) -> list[str]:
    out = ["### Depth sweep: publish + receive + delete on each connection", ""]
    out.append(
        "| depth | messages/s (full lives) | requests/s | p50 ms | p99 ms | x depth 0 | srv CPU "
        "| gen CPU |"
    )
    out.append("|--:|--:|--:|--:|--:|--:|--:|--:|")
    base = Row.of(runs, "depth", "depth_0")
    for depth in meta["depths"]:
        row = Row.of(runs, "depth", f"depth_{depth}")
        na = row.na()
        if na:
            out.append(f"| {depth:,} | {na} | | | | | | |")
            continue
        out.append(
            f"| {depth:,} | {fmt_rate(row.m('mps'))} | {fmt_rate(row.m('rps'))} | "
            f"{fmt_ms(row.m('p50'))} | {fmt_ms(row.m('p99'))} | "
            f"{fmt_x(ratio(row, base, 'mps'))} | {fmt_pct(row.m('server_cpu'))} | "
            f"{row.gen_cell()} |"
        )
    return [*out, ""]


def longpoll(runs: list[dict]) -> list[str]:
    out = ["### Long polling: 1,000 parked waiters (bench/httpload.py longpoll)", ""]
    lp = [r.get("longpoll", {}) for r in runs]
    lp_na = next((c.get("na") for c in lp if c.get("na")), None)
    if lp_na or not any("idle_cpu_s" in c for c in lp):
        return [*out, f"{lp_na or 'not run'}", ""]
    idle = med([c.get("idle_cpu_s") for c in lp])
    idle_s = med([c.get("idle_s") for c in lp])

    def wake(p: str) -> str:
        return fmt_ms(med([c.get("wake_ms", {}).get(p) for c in lp]))

    lost = sum(c.get("wakes_lost", 0) for c in lp)
    out += ["| figure | value | goal |", "|---|--:|---|"]
    out.append(
        f"| server CPU over {idle_s or 0:.0f} idle s, 1,000 parked | "
        f"{NONE if idle is None else idle} s | ~0 |"
    )
    out.append(f"| publish -> parked waiter answered, p50 | {wake('p50')} ms | |")
    out.append(f"| publish -> parked waiter answered, p99 | {wake('p99')} ms | <= 5 ms |")
    out.append(f"| publish -> parked waiter answered, max | {wake('max')} ms | |")
    out.append(f"| wakes lost (no answer within 2 s) | {lost} | 0 |")
    bursts = [c.get("burst") for c in lp if c.get("burst")]
    if bursts:
        last = med([b.get("last_after_publish_ms") for b in bursts])
        got = med([b.get("answered") for b in bursts]) or 0
        out.append(
            f"| batch of 1,000 -> last of {got:,.0f} waiters answered | {fmt_ms(last)} ms | |"
        )
    return [*out, ""]


COMPARISONS = [  # (WonderQ key, peer group, peer key, label)
    ("publish", "redis", "lpush_p1", "publish 200 B | Redis LPUSH"),
    ("publish", "beanstalkd", "put_p1", "publish 200 B | beanstalkd put"),
    ("recv_delete", "redis", "reliable_p1", "receive + delete | Redis LMOVE + LREM"),
    ("recv_delete", "beanstalkd", "work_p1", "receive + delete | beanstalkd reserve + delete"),
    ("pipeline_publish", "redis", "lpush_p16", "publish, 16 pipelined | Redis LPUSH, 16 pipelined"),
    ("pipeline_publish", "beanstalkd", "put_p16", "publish, 16 pipelined | beanstalkd put x16"),
    ("batch_publish", "redis", "lpush_p16", "batch publish 100 | Redis LPUSH, 16 pipelined"),
    ("batch_recv_ack", "redis", "reliable_p16", "batch receive + ack | Redis LMOVE + LREM x16"),
    (
        "batch_recv_ack",
        "beanstalkd",
        "work_p16",
        "batch receive + ack | beanstalkd reserve + delete x16",
    ),
]


def peers(runs: list[dict]) -> list[str]:
    out = ["### WonderQ against the peers (messages/s, medians)", ""]
    out.append("| WonderQ workload | peer workload | WonderQ | peer | WonderQ / peer | sides |")
    out.append("|---|---|--:|--:|--:|---|")
    for wq_key, group, key, label in COMPARISONS:
        wq, peer = Row.of(runs, "wonderq", wq_key), Row.of(runs, group, key)
        wq_rate, peer_rate = wq.m("mps"), peer.m("mps")
        r = wq_rate / peer_rate if wq_rate and peer_rate else None
        sides = [
            f"{name} generator-bound ({fmt_pct(row.m('loadgen_cpu'))}): it can do more"
            for name, row in (("WonderQ", wq), ("peer", peer))
            if row.generator_bound()
        ]
        if not sides and peer.m("server_cpu") is not None:
            sides.append(
                f"peer server {fmt_pct(peer.m('server_cpu'))}, "
                f"client {fmt_pct(peer.m('loadgen_cpu'))}"
            )
        out.append(
            f"| {label} | {fmt_rate(wq_rate)} | {fmt_rate(peer_rate)} | {fmt_x(r)} | "
            f"{'; '.join(sides)} |"
        )
    return [*out, ""]


@dataclass
class Goal:
    text: str
    value: str
    met: bool | None  # None: not measured
    rows: list[Row]  # the rows it reads: a generator-bound one means it is not counted

    def verdict(self) -> str:
        bound = [f"{r.group} {r.key}" for r in self.rows if r.generator_bound()]
        if bound:
            return f"not counted: generator-bound ({', '.join(bound)})"
        return NONE if self.met is None else ("met" if self.met else "**not met**")


def goals(runs: list[dict]) -> list[Goal]:
    res: list[Goal] = []

    def at_least(text: str, value: float | None, goal: float, shown: str, rows: list[Row]) -> None:
        res.append(Goal(text, shown, None if value is None else value >= goal, rows))

    def vs_ceiling(text: str, key: str, base: str, goal: float) -> None:
        wq, ceiling = Row.of(runs, "wonderq", key), Row.of(runs, base, key)
        r = ratio(wq, ceiling)
        at_least(text, r, goal, fmt_x(r), [wq, ceiling])

    vs_ceiling("publish >= 0.8x ceiling", "publish", "ceiling", 0.8)
    vs_ceiling("receive + delete >= 0.7x ceiling", "recv_delete", "ceiling", 0.7)
    vs_ceiling(
        "16 pipelined publish >= 0.7x pipelined reading ceiling", "pipeline_publish", "reading", 0.7
    )
    deep, empty = Row.of(runs, "depth", "depth_1000000"), Row.of(runs, "depth", "depth_0")
    d = ratio(deep, empty, "mps")
    at_least("rate at 1M deep >= 0.8x empty", d, 0.8, fmt_x(d), [deep, empty])
    batch = Row.of(runs, "wonderq", "batch_publish")
    bp = batch.m("mps")
    at_least("batch publish >= 1,000,000 msg/s", bp, 1e6, fmt_rate(bp), [batch])
    lpush = Row.of(runs, "redis", "lpush_p16")
    rl = lpush.m("mps")
    beats = None if bp is None or rl is None else bp > rl
    shown = f"{fmt_rate(bp)} vs {fmt_rate(rl)}"
    res.append(Goal("batch publish > Redis LPUSH x16 (msg/s)", shown, beats, [batch, lpush]))
    ack = Row.of(runs, "wonderq", "batch_recv_ack")
    br = ack.m("mps")
    at_least("batch receive + ack >= 500,000 msg/s", br, 5e5, fmt_rate(br), [ack])
    lp = [r.get("longpoll", {}) for r in runs if not r.get("longpoll", {}).get("na")]
    p99 = med([c.get("wake_ms", {}).get("p99") for c in lp])
    text = "long poll: answered within 5 ms of a publish (p99)"
    res.append(Goal(text, f"{fmt_ms(p99)} ms", None if p99 is None else p99 <= 5, []))
    m = med([(c.get("memory") or {}).get("vmrss") for c in deep.cells])
    text = "1,000,000 x 200 B resident <= 260 MB"
    res.append(Goal(text, fmt_mb(m), None if m is None else m <= 260e6, []))
    return res


def render(runs: list[dict], meta: dict) -> str:
    """The generated region of bench/RESULTS.md."""
    out = header(meta, len(runs))
    out += throughput(runs, meta)
    out += memory(runs)
    out += depth_sweep(runs, meta)
    out += longpoll(runs)
    out += peers(runs)
    out += ["### Goals (issues 3, 4, 5)", "", "| goal | measured | |", "|---|--:|---|"]
    out += [f"| {g.text} | {g.value} | {g.verdict()} |" for g in goals(runs)]
    out.append("")
    out.append(
        "Every command this run executed is in the run's JSON file "
        f"(`{meta['json']}`), with the raw figures of every run."
    )
    return "\n".join(out)


def write_results_md(region: str, path: Path) -> None:
    """Replace the generated region of ``path`` (bench/RESULTS.md); everything else stays byte
    for byte (the "## Engine" section and hand-written notes belong to others)."""
    block = f"{BEGIN}\n{region}\n{END}"
    if path.exists():
        with open(path, encoding="utf-8", newline="") as f:  # newline="": \r\n stays \r\n
            text = f.read()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            text = head + block + tail
        else:
            # first time: put the generated section before the first "## " heading
            m = re.search(r"^## ", text, re.MULTILINE)
            section = f"## Side by side (bench/run.py)\n\n{block}\n\n"
            text = (
                (text[: m.start()] + section + text[m.start() :])
                if m
                else (text.rstrip("\n") + "\n\n" + section)
            )
    else:
        text = (
            "# WonderQ benchmark results\n\n"
            "How to reproduce and what each number means: bench/README.md.\n\n"
            f"## Side by side (bench/run.py)\n\n{block}\n"
        )
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
