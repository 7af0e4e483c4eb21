"""CTC forced alignment of long recordings: emissions in overlapping windows, and a Viterbi that holds an hour.

Three pieces, each usable alone (``lowres align``, :mod:`lowres.align`, puts them together):

* :func:`window_plan` / :func:`file_emissions`: a recording's frame log-probabilities, computed in overlapping
  windows of at most what the backbone reads at once (Whisper: 30 s). Each window is read with ``context``
  seconds of audio on either side, and only its middle frames are kept, so the windows join without a seam:
  every frame of the file comes from exactly one window, where it had at least ``context`` seconds of audio
  around it (fewer at the file's ends). Memory: the frames (T x V floats: 36 MB for an hour and 50 units)
  plus one batch of windows.
* :func:`viterbi`: the best CTC path of a target sequence through (T, V) log-probabilities, as torchaudio's
  ``forced_align`` computes it, but in bounded memory. torchaudio keeps a T x S table of back-pointers
  (S = 2 x targets + 1): an hour of reading (180,000 frames, ~55,000 characters) would need ~20 GB. Here the
  forward pass keeps only the scores of every K-th frame (K ~ sqrt(T)), and the back-pointers are recomputed
  block by block from those checkpoints while backtracking: two forward passes of vector operations, and
  memory of (T/K + K) x S numbers (~250 MB for that hour). Where the T x S table is small (under
  ``direct_mb``), torchaudio's ``forced_align`` (C++, faster) is used: both give a path of the same score.
* :func:`place_lines`: text lines on the frames. A **star** unit, whose log-probability is 0 in every frame,
  stands between the lines, at both ends and for every character the model lacks (MMS's ``<star>``,
  fairseq examples/mms/data_prep): audio the text does not mention is absorbed by a star instead of being
  forced onto a neighbouring line. Each line gets its first and last frame and a length-normalised score
  (the mean log-probability of its path's frames, from its first to its last character). A line whose
  text is not in the audio cannot hide: it is squeezed somewhere at a very low score; it is then taken out
  and the rest aligned again (``passes``), so it does not drag its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lowres import LowresError
from lowres.audiotime import FRAME_SAMPLES, SAMPLE_RATE
from lowres.data.vocab import BLANK_ID, UNK_ID, ctc_frames_needed

# ---------------------------------------------------------------------------------------------------
# emissions in windows


@dataclass(frozen=True)
class Window:
    """One forward pass: audio ``[read_start, read_end)`` (samples), of which frames ``[keep_start, keep_end)``
    (file frames) are kept."""

    read_start: int
    read_end: int
    keep_start: int
    keep_end: int


def window_plan(num_samples: int, window_s: float, context_s: float, frame_samples: int = FRAME_SAMPLES,
                sample_rate: int = SAMPLE_RATE) -> list[Window]:
    """The windows that cover a file of ``num_samples``: each reads at most ``window_s`` seconds and keeps the
    frames that have ``context_s`` seconds of its audio on both sides (or the file's start or end);
    consecutive windows' kept frames touch. Window starts are whole frames, so a window's frame i is file
    frame ``read_start / frame_samples + i``."""
    if window_s <= 2 * context_s:
        raise ValueError(f"window {window_s} s must be longer than twice the context {context_s} s")
    total_frames = max(1, num_samples // frame_samples)
    ctx = int(round(context_s * sample_rate / frame_samples))  # frames
    window = int(window_s * sample_rate / frame_samples) * frame_samples  # samples
    out = []
    keep = 0
    while keep < total_frames:
        read_start = max(0, keep - ctx) * frame_samples
        read_end = min(num_samples, read_start + window)
        keep_end = total_frames if read_end == num_samples else read_end // frame_samples - ctx
        out.append(Window(read_start, read_end, keep, keep_end))
        keep = keep_end
    return out


def stitch(windows: Sequence[Window], outputs: Sequence, frame_samples: int = FRAME_SAMPLES):
    """The file's (T, V) frames from each window's (T_w, V) output, in ``windows`` order: the kept frames of each.
    A window whose output is a frame or two short of its kept range (the conv stack's last frame needs a whole
    receptive field) repeats its last frame."""
    import torch

    parts = []
    for w, out in zip(windows, outputs, strict=True):
        first = w.keep_start - w.read_start // frame_samples
        need = w.keep_end - w.keep_start
        piece = out[first:first + need]
        if piece.shape[0] < need:
            if piece.shape[0] == 0 or need - piece.shape[0] > 2:
                raise ValueError(f"a window gave {out.shape[0]} frames, {need} were needed from frame {first}")
            piece = torch.cat([piece, piece[-1:].expand(need - piece.shape[0], -1)])
        parts.append(piece)
    return torch.cat(parts)


def file_emissions(model, path, num_samples: int, device, *, window_s: float, context_s: float, options,
                   progress=None, label: str = ""):
    """Log-probabilities (T, V) float32 CPU of a whole audio file, computed window by window (see the module
    docstring). ``options``: a :class:`lowres.config.DecodeOptions` (batch seconds, precision)."""
    from lowres.data.manifest import Utterance
    from lowres.decode import forward_batches

    windows = window_plan(num_samples, window_s, context_s, FRAME_SAMPLES, SAMPLE_RATE)
    utts = [Utterance(id=str(i), audio_filepath=str(path), offset=w.read_start / SAMPLE_RATE,
                      duration=(w.read_end - w.read_start) / SAMPLE_RATE) for i, w in enumerate(windows)]
    outputs: list = [None] * len(windows)
    task = progress.add_task(label or "emissions", total=len(windows), unit="window") if progress is not None else None
    try:
        for indices, logits, frames, errors in forward_batches(model, utts, device, options=options):
            if errors:
                raise LowresError(f"{path}: {errors[0]}")
            log_probs = logits.log_softmax(dim=-1)
            for k, i in enumerate(indices):
                outputs[i] = log_probs[k, : int(frames[k])].clone()
            if task is not None:
                progress.advance(task, len(indices))
    finally:
        if task is not None:
            progress.update(task, visible=False)
    return stitch(windows, outputs, FRAME_SAMPLES)


# ---------------------------------------------------------------------------------------------------
# Viterbi


def viterbi(log_probs, targets: Sequence[int], *, direct_mb: float = 256.0):
    """The best CTC path of ``targets`` (ids, no blank) through ``log_probs`` (T, V'): per frame the unit id on
    the path (blank included), a (T,) int64 tensor. torchaudio's ``forced_align`` when its T x S back-pointer
    table fits in ``direct_mb``, else the checkpointed Viterbi (module docstring). ValueError when the targets
    need more frames than there are."""
    import torch

    T = log_probs.shape[0]
    need = ctc_frames_needed(targets)
    if need > T:
        raise ValueError(f"{len(targets)} units need {need} frames, the audio has {T}")
    S = 2 * len(targets) + 1
    if T * S / 2**20 <= direct_mb:
        from torchaudio.functional import forced_align

        path, _ = forced_align(log_probs[None].float(), torch.tensor([list(targets)], dtype=torch.int32),
                               blank=BLANK_ID)
        return path[0].long()
    return _checkpointed_viterbi(log_probs.float(), targets)


def _checkpointed_viterbi(log_probs, targets: Sequence[int]):
    import torch

    T = log_probs.shape[0]
    tg = torch.tensor(list(targets), dtype=torch.long)
    S = 2 * len(tg) + 1
    ext = torch.full((S,), BLANK_ID, dtype=torch.long)
    ext[1::2] = tg
    skip_add = torch.full((S,), -math.inf)  # 0 where s may come from s - 2: a unit unlike the one two back
    skip_add[3::2].masked_fill_(tg[1:] != tg[:-1], 0.0)
    block = max(64, int(math.ceil(math.sqrt(T))))
    stay_or_next = torch.empty(S)
    two_back = torch.empty(S)
    moved = torch.empty(S, dtype=torch.bool)

    def first() -> torch.Tensor:
        d = torch.full((S,), -math.inf)
        d[:2] = log_probs[0, ext[:2]]
        return d

    def step(prev: torch.Tensor, emit: torch.Tensor, back: torch.Tensor | None) -> torch.Tensor:
        stay_or_next[0] = prev[0]
        torch.maximum(prev[1:], prev[:-1], out=stay_or_next[1:])
        two_back[:2] = -math.inf
        torch.add(prev[:-2], skip_add[2:], out=two_back[2:])
        best = torch.maximum(stay_or_next, two_back)
        if back is not None:  # 0: stay, 1: from s - 1, 2: from s - 2
            back[0] = 0
            torch.gt(prev[:-1], prev[1:], out=moved[1:])
            back[1:] = moved[1:]
            back.masked_fill_(two_back > stay_or_next, 2)
        return best.add_(emit)

    def emissions(a: int, b: int) -> torch.Tensor:  # (b - a, S): a block's frames spread over the states
        return log_probs[a:b].index_select(1, ext)

    checkpoints = {}
    d = first()
    for a in range(1, T, block):
        emit = emissions(a, min(T, a + block))
        for k in range(emit.shape[0]):
            if (a + k) % block == 0:
                checkpoints[a + k] = d.clone()  # the scores of the frame before
            d = step(d, emit[k], None)
    state = S - 1 if d[S - 1] >= d[S - 2] else S - 2
    if not math.isfinite(float(d[state])):
        raise ValueError("no CTC path spells the targets in these frames")
    path = torch.empty(T, dtype=torch.long)
    end = T
    for start in [*sorted(checkpoints, reverse=True), 0]:
        back = torch.zeros(end - start, S, dtype=torch.int8)  # back[t - start]: frame t's step from t - 1
        d = checkpoints[start] if start else first()
        emit = emissions(max(start, 1), end)
        for t in range(max(start, 1), end):
            d = step(d, emit[t - max(start, 1)], back[t - start])
        for t in range(end - 1, start - 1, -1):
            path[t] = ext[state]
            if t > 0:
                state -= int(back[t - start, state])
        end = start
    return path


# ---------------------------------------------------------------------------------------------------
# lines on frames


@dataclass(frozen=True)
class Placement:
    """Where a line's characters are: frames ``[start, end)`` (end exclusive) and the mean log-probability of
    the path over them (0 is certain; about -0.1 to -1 for a line spoken as written, far lower when it is not
    in the audio)."""

    start: int
    end: int
    score: float


def place_lines(log_probs, lines: Sequence[Sequence[int]], *, direct_mb: float = 256.0, star_score: float = 0.0
                ) -> list[Placement | None]:
    """Align ``lines`` (unit ids each; ``<unk>`` for a character the model lacks) in order through a file's
    ``log_probs`` (T, V) with a star unit between lines and at both ends (module docstring); an empty line gets
    None. ValueError when the text needs more frames than the audio has."""
    import torch

    T, V = log_probs.shape
    lp = torch.cat([log_probs.float(), torch.full((T, 1), star_score)], dim=1)
    targets, spans = line_targets(lines, star=V)
    path = viterbi(lp, targets, direct_mb=direct_mb)
    # which target each frame emits: a new unit starts where the path leaves a blank or changes unit
    token_of_frame = _target_index(path.tolist(), targets)
    first_frame: dict[int, int] = {}
    last_frame: dict[int, int] = {}
    for t, k in enumerate(token_of_frame):
        if k < 0:
            continue
        first_frame.setdefault(k, t)
        last_frame[k] = t
    out: list[Placement | None] = []
    for span in spans:
        if span is None:
            out.append(None)
            continue
        a, b = first_frame[span[0]], last_frame[span[1]] + 1
        out.append(Placement(a, b, float(lp[torch.arange(a, b), path[a:b]].mean())))
    return out


def line_targets(lines: Sequence[Sequence[int]], star: int) -> tuple[list[int], list[tuple[int, int] | None]]:
    """The target sequence :func:`place_lines` aligns: ``star``, then each non-empty line (``<unk>`` as ``star``)
    followed by ``star``; and each line's first and last index in it (None for an empty line)."""
    targets: list[int] = [star]
    spans: list[tuple[int, int] | None] = []
    for line in lines:
        ids = [star if i == UNK_ID else int(i) for i in line]
        if not ids:
            spans.append(None)
            continue
        spans.append((len(targets), len(targets) + len(ids) - 1))
        targets.extend(ids)
        targets.append(star)
    return targets, spans


def frames_for_lines(lines: Sequence[Sequence[int]]) -> int:
    """Fewest frames :func:`place_lines` needs for ``lines``: too few, and the text cannot be in the audio."""
    return ctc_frames_needed(line_targets(lines, star=-1)[0])


def _target_index(path: list[int], targets: list[int]) -> list[int]:
    """For each frame of a CTC path, the index in ``targets`` of the unit it emits (-1 for blank)."""
    out = []
    k = -1
    prev = BLANK_ID
    for unit in path:
        if unit == BLANK_ID:
            out.append(-1)
        else:
            if unit != prev:
                k += 1
                if k >= len(targets) or targets[k] != unit:
                    raise AssertionError("the path does not spell the targets")
            out.append(k)
        prev = unit
    return out
