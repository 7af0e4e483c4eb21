"""The learning-curve picture (learning_curve.png at the end of a run).

Contract: every logged training loss and every dev metric is drawn as a visible mark, including a run that
logged once (a short run, or ``log_every`` above ``max_steps``): a lone point is a dot, not an invisible
line of length zero. Nothing to draw (no loss logged) writes nothing and says so (False).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from lowres.train.plot import learning_curve  # noqa: E402

LOSS_RGB = (0x1F, 0x77, 0xB4)  # tab:blue, the loss colour
DEV_RGB = (0xFF, 0x7F, 0x0E)  # tab:orange, dev_cer (the second of the default metrics)


def write_metrics(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def coloured_pixels(png: Path, rgb: tuple[int, int, int], box=(0.3, 0.7)) -> int:
    """Pixels of colour ``rgb`` inside the middle of the picture (where a lone point lands; away from the
    legend in the upper right corner, whose line samples have the same colours)."""
    import matplotlib.image

    img = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)
    h, w = img.shape[:2]
    lo, hi = box
    middle = img[int(h * lo):int(h * hi), int(w * lo):int(w * hi)]
    return int((np.abs(middle - np.array(rgb)).sum(axis=-1) < 30).sum())


def test_a_one_point_curve_shows_its_point(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", [{"step": 5, "loss": 2.5}])
    assert learning_curve(metrics, tmp_path / "curve.png")
    assert coloured_pixels(tmp_path / "curve.png", LOSS_RGB) > 10


def test_one_loss_and_one_dev_point_both_show(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", [{"step": 5, "loss": 2.5}, {"step": 5, "dev_cer": 0.4}])
    assert learning_curve(metrics, tmp_path / "curve.png")
    assert coloured_pixels(tmp_path / "curve.png", LOSS_RGB) > 10
    assert coloured_pixels(tmp_path / "curve.png", DEV_RGB) > 10


def test_a_long_curve_is_drawn(tmp_path):
    rows = [{"step": s, "loss": 3.0 - s / 100} for s in range(1, 200)]
    metrics = write_metrics(tmp_path / "metrics.jsonl", rows)
    assert learning_curve(metrics, tmp_path / "curve.png")
    assert coloured_pixels(tmp_path / "curve.png", LOSS_RGB, box=(0.1, 0.9)) > 50


def test_nothing_to_draw_writes_nothing(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", [{"step": 5, "dev_cer": 0.4}])
    assert not learning_curve(metrics, tmp_path / "curve.png")
    assert not (tmp_path / "curve.png").exists()
