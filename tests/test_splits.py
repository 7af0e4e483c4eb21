import random
from collections import defaultdict

import numpy as np
import pytest

from lowres import LowresError
from lowres.data.segment import plan_cuts
from lowres.data.splits import MIN_HELDOUT_VOICES, Item, balanced_order, carve_heldout, nested_splits


def make_pool(hours: float, speakers: int, seed: int = 0, lo: float = 2.0, hi: float = 15.0) -> list[Item]:
    rng = random.Random(seed)
    items, total, i = [], 0.0, 0
    while total < hours * 3600:
        d = rng.uniform(lo, hi)
        items.append(Item(f"u{i:06d}", f"s{rng.randrange(speakers):03d}", d))
        total += d
        i += 1
    return items


@pytest.fixture(scope="module")
def pool():
    return make_pool(12, 40)


def test_nested_and_within_tolerance(pool):
    draws = nested_splits(pool, seed=1)
    ten, one, ten_h = (set(draws[k].ids) for k in ("10min", "1h", "10h"))
    assert ten < one < ten_h
    by_id = {it.id: it for it in pool}
    for name, draw in draws.items():
        seconds = sum(by_id[i].duration for i in draw.ids)
        assert seconds == pytest.approx(draw.seconds)
        assert abs(seconds - draw.target) <= 0.02 * draw.target, name
        assert not draw.flag


def test_deterministic_and_seed_dependent(pool):
    a = nested_splits(pool, seed=3)
    b = nested_splits(list(reversed(pool)), seed=3)  # input order does not matter
    c = nested_splits(pool, seed=4)
    assert all(a[k].ids == b[k].ids for k in a)
    assert a["1h"].ids != c["1h"].ids


def test_balanced_across_speakers(pool):
    draw = nested_splits(pool, seed=0)["1h"]
    by_id = {it.id: it for it in pool}
    per_speaker = defaultdict(float)
    for i in draw.ids:
        per_speaker[by_id[i].speaker] += by_id[i].duration
    assert len(per_speaker) == 40
    # every speaker within one utterance (<= 15 s) of the mean share
    mean = sum(per_speaker.values()) / len(per_speaker)
    assert max(per_speaker.values()) - mean < 16 and mean - min(per_speaker.values()) < 16


def test_balanced_order_prefix_balance():
    items = [Item(f"a{i}", "a", 1.0) for i in range(10)] + [Item(f"b{i}", "b", 5.0) for i in range(10)]
    order = balanced_order(items, 0)
    first = order[:8]
    a = sum(it.duration for it in first if it.speaker == "a")
    b = sum(it.duration for it in first if it.speaker == "b")
    assert abs(a - b) <= 5.0


def test_small_pool_flagged():
    pool = make_pool(0.5, 5)
    draws = nested_splits(pool, seed=0)
    assert not draws["10min"].flag
    assert "whole pool" in draws["1h"].flag and "whole pool" in draws["10h"].flag
    assert set(draws["1h"].ids) == {it.id for it in pool}


def test_unknown_speakers_count_as_their_own():
    pool = [Item(f"u{i}", "", 3.0) for i in range(400)]
    draws = nested_splits(pool, seed=0)
    assert abs(draws["10min"].seconds - 600) <= 12


def _shares(pool, held):
    total = sum(it.duration for it in pool)
    return [sum(it.duration for it in pool if it.id in ids) / total for ids in (held.dev, held.test)]


def test_carve_heldout_speaker_disjoint(pool):
    held = carve_heldout(pool, 0, 0.1, 0.1)
    assert held.by == "speaker" and not held.note and held.dev and held.test and not held.dev & held.test
    spk = {it.id: it.speaker for it in pool}
    dev_spk, test_spk = {spk[i] for i in held.dev}, {spk[i] for i in held.test}
    train_spk = {spk[i] for i in spk if i not in held.dev and i not in held.test}
    assert not dev_spk & test_spk and not dev_spk & train_spk and not test_spk & train_spk
    assert len(dev_spk) >= MIN_HELDOUT_VOICES and len(test_spk) >= MIN_HELDOUT_VOICES
    assert all(0.05 < share < 0.17 for share in _shares(pool, held))
    assert carve_heldout(pool, 0, 0.1, 0.1) == held


@pytest.mark.parametrize("voices", [1, 2, 5])
def test_carve_heldout_from_a_handful_of_voices_draws_utterances(voices):
    """One to a handful of voices: a speaker-disjoint hold-out would take whole voices (most of the audio) from
    training, or leave none, so utterances are drawn, each voice keeps training, and the note says so."""
    pool = make_pool(0.5, voices)
    held = carve_heldout(pool, 0, 0.1, 0.1)
    assert held.by == "utterance" and held.dev and held.test and not held.dev & held.test
    assert f"{voices} voice(s)" in held.note and "drawn by utterance" in held.note
    assert all(0.07 < share < 0.13 for share in _shares(pool, held))
    train_spk = {it.speaker for it in pool if it.id not in held.dev | held.test}
    assert train_spk == {it.speaker for it in pool}


def test_carve_heldout_two_main_voices_and_minor_ones():
    """A dialogue corpus: two voices speak 80%, eighteen minor ones the rest. Whatever the draw, no held-out
    set is a main voice (a 40% test set) and each is near its share."""
    rng = random.Random(0)
    pool = [Item(f"u{i:05d}", rng.choice("ab") if rng.random() < 0.8 else f"minor{rng.randrange(18)}",
                 rng.uniform(1, 6)) for i in range(1500)]
    for seed in range(5):
        held = carve_heldout(pool, seed, 0.1, 0.1)
        assert all(0.05 <= share <= 0.15 for share in _shares(pool, held)), (seed, held.by)
        heldout_spk = {it.speaker for it in pool if it.id in held.dev | held.test}
        if held.by == "speaker":
            assert not heldout_spk & {"a", "b"}


def test_carve_heldout_speaker_disjoint_when_asked():
    few = make_pool(0.5, 5)
    held = carve_heldout(few, 0, 0.1, 0.1, speaker_disjoint=True)
    assert held.by == "speaker" and "as asked" in held.note
    spk = {it.id: it.speaker for it in few}
    train_spk = {spk[i] for i in spk if i not in held.dev | held.test}
    assert not train_spk & {spk[i] for i in held.dev | held.test}
    with pytest.raises(LowresError, match="2 voice.*Drop --speaker-disjoint"):
        carve_heldout(make_pool(0.5, 2), 0, 0.1, 0.1, speaker_disjoint=True)


def test_carve_heldout_without_speakers():
    pool = [Item(f"u{i}", "", 3.0) for i in range(200)]
    held = carve_heldout(pool, 0, 0.1, 0.1)
    assert held.by == "utterance" and "no speaker labels" in held.note
    assert all(0.08 < share < 0.12 for share in _shares(pool, held))


def test_plan_cuts_properties():
    rng = np.random.default_rng(0)
    hop = 0.02
    total = 100.0
    energy = rng.uniform(0.5, 1.0, int(total / hop))
    quiet = [7.0, 19.0, 33.0, 41.5, 55.0, 70.0, 83.0, 95.0]
    for q in quiet:
        energy[int(q / hop) - 3: int(q / hop) + 3] = 0.0
    pieces = plan_cuts(energy, hop, total, 2.0, 15.6)
    assert pieces[0][0] == 0.0
    assert sum(d for _, d in pieces) == pytest.approx(total)
    for (o1, d1), (o2, _) in zip(pieces, pieces[1:], strict=False):
        assert o1 + d1 == pytest.approx(o2)
    assert all(2.0 - 1e-9 <= d <= 15.6 + 1e-9 for _, d in pieces)
    # every cut lands on a quiet stretch
    for offset, _ in pieces[1:]:
        assert min(abs(offset - q) for q in quiet) < 0.1


def test_plan_cuts_short_and_edge_cases():
    assert plan_cuts(np.zeros(50), 0.02, 1.0, 2.0, 15.6) == []
    assert plan_cuts(np.zeros(500), 0.02, 10.0, 2.0, 15.6) == [(0.0, 10.0)]
    flat = np.ones(int(16.0 / 0.02))
    pieces = plan_cuts(flat, 0.02, 16.0, 2.0, 15.6)
    assert len(pieces) == 2 and all(d >= 2.0 for _, d in pieces)
    with pytest.raises(ValueError):
        plan_cuts(flat, 0.02, 16.0, 10.0, 15.6)
