"""The learning-curve picture written at the end of a run (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    rows = []
    if Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def learning_curve(metrics: Path, out: Path, title: str = "", extra: tuple[str, ...] = ("dev_wer", "dev_cer")) -> bool:
    """Training loss (left axis) and dev metrics (right axis, %) against updates. False when there is nothing
    to draw or matplotlib is missing (the run goes on; the numbers are in metrics.jsonl)."""
    rows = read_metrics(metrics)
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r and r.get("step")]
    if not loss:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    # a lone point is a line of length zero, which matplotlib draws as nothing: give it a dot
    ax.plot([s for s, _ in loss], [v for _, v in loss], "o-" if len(loss) == 1 else "-", color="tab:blue",
            label="train loss")
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    shown = False
    ax2 = None
    for key, colour in zip(extra, ("tab:red", "tab:orange", "tab:green"), strict=False):
        pts = [(r["step"], 100 * r[key]) for r in rows if key in r and r[key] is not None]
        if pts:
            ax2 = ax2 or ax.twinx()
            # hollow: a loss point at the same place (a one-point run) still shows through
            ax2.plot([s for s, _ in pts], [v for _, v in pts], "o-", color=colour,
                     markerfacecolor="none", markeredgewidth=1.5, label=key.replace("_", " ") + " %")
            shown = True
    if shown and ax2 is not None:
        ax2.set_ylabel("%")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper right")
    else:
        ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    _save(fig, out)
    return True


def _save(fig, out: Path) -> None:
    """Write ``fig`` as a PNG at ``out`` atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    from lowres.fsutil import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def layer_weights_chart(weights: list[float], out: Path, title: str = "") -> bool:
    """A bar chart of a weighted head's layer weights (softmax; layer 0 is the transformer's input), with the
    equal share 1/(L + 1) they started from as a dashed line. False when matplotlib is missing."""
    if not weights:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(weights) + 2), 3.5), dpi=110)
    layers = list(range(len(weights)))
    ax.bar(layers, weights, color="tab:blue")
    ax.axhline(1.0 / len(weights), color="tab:gray", linestyle="--", linewidth=1, label="initial (equal)")
    ax.set_xlabel("layer (0 = transformer input)")
    ax.set_ylabel("weight (softmax)")
    ax.set_xticks(layers)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, out)
    return True
