"""benchmarks/time_to_accuracy.py's report arithmetic, on hand-written metrics rows (no training).

Contract: a side's training clock at an evaluation is its ``elapsed_s`` minus the ``eval_s`` of the evaluations
before it; the CER shown at time t is the latest evaluation at or before t; the time to a target is the first
evaluation at or below it; the goal of #17 is met only when lowres reaches the HF side's final CER in at most
two thirds of the HF side's time, ends no worse, and the HF side left the all-blank phase.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
_spec = importlib.util.spec_from_file_location("time_to_accuracy", _PATH)
tta = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tta)

DEV = 10


def rows(evals: list[tuple[int, float, float, float]], steps: int, s_per_update: float, empty: int = 0) -> list[dict]:
    """metrics.jsonl rows as the loop writes them: a training row per update, an evaluation row
    (step, elapsed at its start, its duration, CER) right after its update's row."""
    out, spent = [], 0.0
    by_step = {e[0]: e for e in evals}
    for step in range(1, steps + 1):
        out.append({"step": step, "loss": 1.0, "epoch": 0, "elapsed_s": step * s_per_update + spent})
        if step in by_step:
            _, _, eval_s, cer = by_step[step]
            out.append({"step": step, "dev_cer": cer, "dev_wer": 1.0, "dev_empty_hypotheses": empty,
                        "elapsed_s": step * s_per_update + spent, "eval_s": eval_s})
            spent += eval_s
    return out


def test_the_training_clock_leaves_every_evaluation_out():
    line = tta.timeline(rows([(2, 0, 5.0, 0.9), (4, 0, 7.0, 0.6), (6, 0, 3.0, 0.4)], steps=6, s_per_update=10.0))
    assert [p["train_s"] for p in line["points"]] == pytest.approx([20.0, 40.0, 60.0])
    assert [p["cer"] for p in line["points"]] == [0.9, 0.6, 0.4]
    assert line["end_s"] == pytest.approx(60.0) and line["steps"] == 6


def test_cer_at_a_time_is_the_latest_evaluation_by_then_and_reaching_is_the_first_at_or_below():
    line = tta.timeline(rows([(2, 0, 1.0, 0.9), (4, 0, 1.0, 0.5), (6, 0, 1.0, 0.6)], steps=6, s_per_update=10.0))
    pts = line["points"]
    assert tta.cer_at(pts, 19.0) is None
    assert tta.cer_at(pts, 20.0) == 0.9 and tta.cer_at(pts, 59.0) == 0.5 and tta.cer_at(pts, 1e9) == 0.6
    assert tta.first_reach(pts, 0.55) == pytest.approx(40.0)
    assert tta.first_reach(pts, 0.5) == pytest.approx(40.0)  # at the target counts
    assert tta.first_reach(pts, 0.4) is None


def test_the_goal_needs_one_and_a_half_times_faster_and_a_final_cer_not_worse():
    hf = tta.timeline(rows([(5, 0, 1.0, 0.8), (10, 0, 1.0, 0.5)], steps=10, s_per_update=30.0))  # 0.5 at 300 s
    fast = tta.timeline(rows([(4, 0, 2.0, 0.5), (10, 0, 2.0, 0.3)], steps=10, s_per_update=20.0))  # 0.5 at 80 s
    out = tta.compare({"lowres": fast, "hf": hf}, DEV)
    goal = out["goal"]
    assert goal["ours_reaches_peer_final_at_s"] == pytest.approx(80.0)
    assert goal["speedup"] == pytest.approx(300 / 80, abs=1e-3) and goal["final_not_worse"] and goal["met"]
    assert out["equal_time_s"] == pytest.approx(200.0)  # the shorter side's training time
    assert out["sides"]["hf"]["cer_at_equal_time"] == 0.8 and out["sides"]["lowres"]["cer_at_equal_time"] == 0.3
    assert out["slowest"] == {"side": "hf", "best_cer": 0.5}
    assert out["sides"]["lowres"]["reaches_slowest_best_at_s"] == pytest.approx(80.0)

    slow = tta.timeline(rows([(9, 0, 1.0, 0.5), (10, 0, 1.0, 0.45)], steps=10, s_per_update=25.0))  # 225 s: 1.33x
    assert not tta.compare({"lowres": slow, "hf": hf}, DEV)["goal"]["met"]
    worse = tta.timeline(rows([(2, 0, 1.0, 0.5), (10, 0, 1.0, 0.55)], steps=10, s_per_update=10.0))
    goal = tta.compare({"lowres": worse, "hf": hf}, DEV)["goal"]
    assert goal["speedup"] > 1.5 and not goal["final_not_worse"] and not goal["met"]


def test_an_all_blank_peer_is_no_goal_to_reach():
    blank = tta.timeline(rows([(10, 0, 1.0, 1.0)], steps=10, s_per_update=30.0, empty=DEV))
    ours = tta.timeline(rows([(1, 0, 1.0, 1.0)], steps=10, s_per_update=3.0, empty=DEV))
    goal = tta.compare({"lowres": ours, "hf": blank}, DEV)["goal"]
    assert goal["speedup"] == pytest.approx(100.0) and not goal["met"] and "empty transcript" in goal["note"]


def test_the_grid_table_reads_every_side_at_every_interval():
    a = tta.timeline(rows([(1, 0, 1.0, 0.9), (3, 0, 1.0, 0.5)], steps=3, s_per_update=40.0))  # 40 s, 120 s
    b = tta.timeline(rows([(2, 0, 1.0, 0.7)], steps=2, s_per_update=45.0))  # 90 s
    table = tta.grid_table({"lowres": a, "hf": b}, every_s=60.0)
    assert table[0].startswith("| training time") and len(table) == 2 + 2
    assert table[2] == "| 1:00 | 90.0% | — |"
    assert table[3] == "| 2:00 | 50.0% | 70.0% |"
    assert tta.clock(3725) == "1:02:05" and tta.clock(59.6) == "1:00"


def test_a_pilot_fit_separates_the_first_epoch_from_the_cached_updates():
    rows_ = [{"step": s, "loss": 1.0, "epoch": e, "elapsed_s": t}
             for s, e, t in ((1, 0, 14.0), (2, 0, 28.0), (3, 1, 40.0), (4, 1, 48.0), (5, 1, 56.0))]
    fit = tta.pilot_fit(rows_)
    assert fit["s_per_update"] == pytest.approx(8.0)  # the gaps after an update that ended in epoch >= 1
    assert fit["overhead_s"] == pytest.approx(56.0 - 5 * 8.0)


def test_the_goal_is_checked_for_the_frozen_upstream_side_against_the_same_peer():
    hf = tta.timeline(rows([(5, 0, 1.0, 0.8), (10, 0, 1.0, 0.5)], steps=10, s_per_update=30.0))
    worse = tta.timeline(rows([(2, 0, 1.0, 0.5), (10, 0, 1.0, 0.55)], steps=10, s_per_update=10.0))
    fast = tta.timeline(rows([(4, 0, 2.0, 0.5), (10, 0, 2.0, 0.3)], steps=10, s_per_update=20.0))
    lines = {"lowres": worse, "hf": hf, "weighted": fast}
    out = tta.compare(lines, DEV)
    assert not out["goal"]["met"]
    goal = out["goal_weighted"]
    assert goal["ours"] == "weighted" and goal["met"] and goal["ours_final_cer"] == 0.3
