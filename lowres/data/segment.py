"""Cutting long recordings into training-sized pieces at low-energy points. Pure functions.

Used by ``prepare --unlabeled`` (pieces stored as offset + duration, the audio is never rewritten) and by
``transcribe`` (long files decoded piece by piece).
"""

from __future__ import annotations

import numpy as np


def smooth(energy: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` frames (same length as the input)."""
    if width <= 1 or energy.size == 0:
        return energy.astype(np.float64)
    kernel = np.ones(width) / width
    return np.convolve(energy.astype(np.float64), kernel, mode="same")


def plan_cuts(
    energy: np.ndarray, hop_s: float, total_s: float, min_s: float, max_s: float, smooth_s: float = 0.1
) -> list[tuple[float, float]]:
    """Pieces ``(offset_s, duration_s)`` covering ``[0, total_s)``, each between ``min_s`` and ``max_s``.

    ``energy`` holds one value per ``hop_s`` frame (e.g. RMS). Each cut goes to the quietest point of the
    window that keeps both the current piece and the rest at least ``min_s`` long. Among comparably quiet
    points the later one wins (a small cost for short pieces), so pieces come out long. A recording
    shorter than ``min_s`` gives no piece.
    """
    if max_s < 2 * min_s:
        raise ValueError(f"max_s ({max_s}) must be at least twice min_s ({min_s})")
    if total_s < min_s:
        return []
    if total_s <= max_s:
        return [(0.0, total_s)]
    level = smooth(energy, max(1, int(round(smooth_s / hop_s))))
    pieces: list[tuple[float, float]] = []
    start = 0.0
    while total_s - start > max_s:
        lo = start + min_s
        hi = min(start + max_s, total_s - min_s)
        i_lo = int(np.ceil(lo / hop_s))
        i_hi = int(np.floor(hi / hop_s))
        window = level[i_lo: i_hi + 1]
        if window.size == 0:
            cut = hi
        else:
            # energy relative to the window's typical level, plus up to 0.2 for cutting early
            scale = float(np.median(window)) + 1e-12
            times = (i_lo + np.arange(window.size)) * hop_s
            cost = window / scale + 0.2 * (1.0 - (times - start) / max_s)
            cut = float(times[int(np.argmin(cost))])
            cut = min(max(cut, lo), hi)
        pieces.append((start, cut - start))
        start = cut
    pieces.append((start, total_s - start))
    return pieces
