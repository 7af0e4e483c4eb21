"""lowres.ctc_align: windows that join without a seam, the checkpointed Viterbi against torchaudio's, and text
lines placed on hand-made emissions whose true path the test knows (missing and extra text included)."""

from __future__ import annotations

import math

import pytest
import torch
from torchaudio.functional import forced_align

from lowres.ctc_align import (
    _checkpointed_viterbi,
    file_emissions,
    place_lines,
    stitch,
    viterbi,
    window_plan,
)
from lowres.data.vocab import UNK_ID, ctc_frames_needed

V = 8  # blank 0, <unk> 1, | 2, letters 3..7


def _emissions(segments: list[tuple[int, list[int]]], total: int, sure: float = 0.9):
    """(T, V) log-probs: blank everywhere, and each ``(start_frame, units)`` spoken from its start, one unit per
    frame with a blank frame between units."""
    p = torch.full((total, V), (1 - sure) / (V - 1))
    p[:, 0] = sure
    for start, units in segments:
        for k, u in enumerate(units):
            t = start + 2 * k
            p[t] = (1 - sure) / (V - 1)
            p[t, u] = sure
    return p.log()


def test_window_plan_covers_every_frame_once_with_context_around_it():
    for n in (1, 319, 320, 16000 * 7 + 5, 16000 * 95 + 123):
        plan = window_plan(n, window_s=10, context_s=2)
        assert plan[0].keep_start == 0 and plan[-1].keep_end == max(1, n // 320)
        assert all(a.keep_end == b.keep_start for a, b in zip(plan, plan[1:], strict=False))
        for w in plan:
            assert w.read_start % 320 == 0 and 0 <= w.read_start < max(w.read_end, 1) <= n or n < 320
            assert (w.read_end - w.read_start) <= 10 * 16000
            if w.keep_start > 0:  # two seconds of audio before the first kept frame
                assert w.keep_start * 320 - w.read_start == 2 * 16000
            if w.keep_end < plan[-1].keep_end:  # and after the last
                assert w.read_end - w.keep_end * 320 == 2 * 16000
            else:
                assert w.read_end == n
    with pytest.raises(ValueError):
        window_plan(16000, window_s=4, context_s=2)


class LocalModel(torch.nn.Module):
    """A stand-in recogniser whose frame t depends only on samples [320 t, 320 t + 400) (the conv stack's
    receptive field): run on windows, it must give exactly what it gives on the whole file."""

    spec = type("Spec", (), {"max_seconds": 30.0, "conv_stack": ((400, 320),)})()

    def forward(self, waves, lengths):
        frames = torch.div(lengths - 400, 320, rounding_mode="floor") + 1
        x = waves.unfold(1, 400, 320)  # (B, T, 400)
        feats = torch.stack([x.mean(-1), x.std(-1), x[..., :200].mean(-1), x.abs().amax(-1)], -1)
        logits = torch.cat([feats * 10, -feats * 7, feats[..., :2] * 3, feats[..., 2:] * -3], -1)[..., :V]
        return logits, frames


def test_file_emissions_in_windows_equal_one_pass_over_the_file(tmp_path):
    import numpy as np
    import soundfile as sf

    from lowres.config import DecodeOptions

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000 * 23 + 77)).astype(np.float32)
    sf.write(tmp_path / "long.wav", wave, 16000, subtype="FLOAT")
    model = LocalModel()
    whole, _ = model(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    whole = whole[0].log_softmax(-1)
    got = file_emissions(model, tmp_path / "long.wav", len(wave), torch.device("cpu"), window_s=6, context_s=1,
                         options=DecodeOptions(batch_seconds=20, workers=0))
    assert got.shape == (len(wave) // 320, V)
    n = whole.shape[0]  # the file's last frame or two lack a whole receptive field: repeated, as stitch says
    assert torch.allclose(got[:n], whole, atol=1e-5)


def test_stitch_refuses_a_window_far_short_of_its_frames():
    plan = window_plan(16000 * 20, window_s=8, context_s=1)
    outputs = [torch.zeros((w.read_end - w.read_start) // 320, 3) for w in plan]
    assert stitch(plan, outputs).shape[0] == plan[-1].keep_end
    outputs[1] = outputs[1][:10]
    with pytest.raises(ValueError):
        stitch(plan, outputs)


@pytest.mark.parametrize("seed", range(6))
def test_checkpointed_viterbi_finds_a_path_as_good_as_torchaudios(seed):
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(20, 400, (), generator=g))
    targets = torch.randint(1, V, (int(torch.randint(1, T // 3, (), generator=g)),), generator=g).tolist()
    targets = [*targets[: len(targets) // 2], 5, 5, *targets[len(targets) // 2:]][: max(1, T // 3)]  # a repeat
    lp = torch.randn(T, V, generator=g).log_softmax(-1)
    ref, _ = forced_align(lp[None], torch.tensor([targets], dtype=torch.int32), blank=0)
    mine = _checkpointed_viterbi(lp, targets)
    score = lp.gather(1, mine[:, None]).sum()
    assert float(score) == pytest.approx(float(lp.gather(1, ref[0].long()[:, None]).sum()), abs=1e-3)
    collapsed = torch.unique_consecutive(mine)
    assert collapsed[collapsed != 0].tolist() != [] and ctc_frames_needed(targets) <= T
    assert _spelled(mine) == targets  # it spells the targets
    # the dispatcher takes torchaudio's table when it is small, the checkpointed one when not: same score
    assert float(lp.gather(1, viterbi(lp, targets, direct_mb=1e-9)[:, None]).sum()) == pytest.approx(float(score),
                                                                                                      abs=1e-3)


def _spelled(path) -> list[int]:
    out, prev = [], 0
    for u in path.tolist():
        if u != 0 and u != prev:
            out.append(u)
        prev = u
    return out


def test_viterbi_refuses_targets_that_need_more_frames_than_there_are():
    assert ctc_frames_needed([3, 3, 4]) == 4
    with pytest.raises(ValueError):
        viterbi(torch.zeros(3, V).log_softmax(-1), [3, 3, 4])


def test_lines_land_where_they_are_spoken_with_a_high_score():
    a, b, c = [3, 4, 5], [6, 2, 7, 3], [5, 5, 4]
    lp = _emissions([(10, a), (40, b), (80, c)], 100)
    placed = place_lines(lp, [a, [], b, c])
    assert placed[1] is None  # an empty line has no place
    assert [(p.start, p.end) for p in (placed[0], placed[2], placed[3])] == [(10, 15), (40, 47), (80, 85)]
    assert all(p.score > math.log(0.85) for p in placed if p is not None)


def test_audio_the_text_does_not_mention_goes_to_the_star_not_to_a_neighbour():
    a, extra, b = [3, 4, 5], [7, 6, 7, 6, 7], [6, 7, 3]
    lp = _emissions([(5, a), (20, extra), (45, b)], 60)  # someone says `extra`; the text lacks it
    pa, pb = place_lines(lp, [a, b])
    assert (pa.start, pa.end) == (5, 10) and (pb.start, pb.end) == (45, 50)


def test_text_missing_from_the_audio_scores_low_and_its_neighbours_stay_put():
    a, missing, b = [3, 4, 5], [7, 6, 7, 6, 7, 6, 7, 6], [6, 4, 3]
    lp = _emissions([(5, a), (40, b)], 60)
    pa, pm, pb = place_lines(lp, [a, missing, b])
    assert pm.score < -2 < max(pa.score, pb.score)
    assert (pa.start, pb.end) == (5, 45)


def test_characters_outside_the_vocabulary_match_anything():
    a = [3, UNK_ID, 5]  # "x?z": the middle character is not one the model has
    lp = _emissions([(10, [3, 6, 5])], 30)  # the audio says 3 6 5
    (p,) = place_lines(lp, [a])
    assert (p.start, p.end) == (10, 15)
