"""bench/report.py: the generator-bound rule and the generated region of RESULTS.md, on
hand-made results (the shape bench/workloads.py records)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import report


def cell(rps: float, gen: float, mps: float | None = None) -> dict:
    return {
        "requests": int(rps),
        "rps": rps,
        "mps": rps if mps is None else mps,
        "loadgen_cpu": gen,
        "server_cpu": 1.0,
        "latency_ms": {"p50": 1.0, "p99": 2.0},
    }


def runs(wq_gen: float, ceiling_gen: float) -> list[dict]:
    return [
        {
            "wonderq": {"publish": cell(90_000, wq_gen)},
            "ceiling": {"publish": cell(100_000 + i, ceiling_gen)},
        }
        for i in range(3)
    ]


def verdict(results: list[dict], text: str) -> str:
    (goal,) = [g for g in report.goals(results) if g.text == text]
    return goal.verdict()


def test_a_ratio_counts_when_neither_generator_is_bound() -> None:
    assert verdict(runs(0.5, report.GENERATOR_BOUND - 0.01), "publish >= 0.8x ceiling") == "met"


@pytest.mark.parametrize(
    ("wq_gen", "ceiling_gen", "bound"),
    [(0.95, 0.5, "wonderq publish"), (0.5, 0.90, "ceiling publish")],
)
def test_a_generator_bound_row_counts_toward_no_goal(
    wq_gen: float, ceiling_gen: float, bound: str
) -> None:
    shown = verdict(runs(wq_gen, ceiling_gen), "publish >= 0.8x ceiling")
    assert shown == f"not counted: generator-bound ({bound})"


def test_an_absolute_goal_reads_its_row_too() -> None:
    results = [{"wonderq": {"batch_publish": cell(20_000, 0.97, mps=2e6)}}]
    assert verdict(results, "batch publish >= 1,000,000 msg/s").startswith("not counted")
    results[0]["wonderq"]["batch_publish"]["loadgen_cpu"] = 0.3
    assert verdict(results, "batch publish >= 1,000,000 msg/s") == "met"


def test_the_table_marks_the_row_and_shows_both_ratios() -> None:
    results = runs(0.93, 0.4)
    meta = {"instructions": {"per_request": {"publish": 12_345}}}
    lines = report.throughput(results, meta)
    (wq,) = [x for x in lines if x.startswith("| WonderQ | publish 200 B |")]
    assert "**93%** generator-bound" in wq
    assert "12,345 (publish)" in wq
    assert "| 0.90x |" in wq  # x ceiling: 90,000 / 100,001 in the median run
    (ceiling,) = [x for x in lines if x.startswith("| Python ceiling | publish 200 B |")]
    assert "generator-bound" not in ceiling and "| 40% |" in ceiling


def test_the_region_is_replaced_and_the_rest_kept_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    head, tail = "# R\n\nnotes  \n", "\n\n## Engine\n\nkept\r\n"
    path.write_bytes(f"{head}{report.BEGIN}\nold\n{report.END}{tail}".encode())
    report.write_results_md("new", path)
    assert path.read_bytes() == f"{head}{report.BEGIN}\nnew\n{report.END}{tail}".encode()
