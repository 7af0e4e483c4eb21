"""Held-out sets and the nested labeled splits 10min ⊂ 1h ⊂ 10h ⊂ full. Pure and seeded.

How the nested splits are drawn (``data_manifests/README.md`` says the same for users):

1. The training pool is sorted by id, each speaker's utterances are shuffled with ``random.Random(seed)``
   and the speakers are put in a shuffled order.
2. One ordering of the whole pool is made by always taking the next utterance of the speaker with the
   least audio so far: the prefix of any length is balanced across speakers by duration.
3. Each split is grown from the previous one (so 10min ⊂ 1h ⊂ 10h) by walking that ordering and adding
   every utterance that keeps the total within ``target × (1 + tolerance)``, until the total reaches
   ``target × (1 − tolerance)``. A pool smaller than a target gives the whole pool, flagged.

Utterances with unknown speakers count as speakers of their own.
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

# the split names are declared once, in lowres/config.py (the bottom layer: finetune's --split checks them there)
from lowres.config import DEFAULT_TARGETS, HELDOUT_SPLITS, LABELED_SPLITS  # noqa: F401 (re-exported)


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    speaker: str  # "" = unknown
    duration: float


@dataclass
class SplitDraw:
    ids: list[str]
    seconds: float
    target: float
    flag: str = ""  # why the split is not within tolerance of its target, "" when it is


def _speaker_key(item: Item) -> str:
    return item.speaker if item.speaker else f"\x00{item.id}"


def balanced_order(pool: Sequence[Item], seed: int) -> list[Item]:
    """All of ``pool`` in an order whose every prefix is balanced across speakers by duration."""
    rng = random.Random(seed)
    by_speaker: dict[str, list[Item]] = defaultdict(list)
    for item in sorted(pool, key=lambda it: it.id):
        by_speaker[_speaker_key(item)].append(item)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    for spk in speakers:
        rng.shuffle(by_speaker[spk])
    heap = [(0.0, rank, spk) for rank, spk in enumerate(speakers)]
    heapq.heapify(heap)
    position = dict.fromkeys(speakers, 0)
    order: list[Item] = []
    while heap:
        seconds, rank, spk = heapq.heappop(heap)
        items = by_speaker[spk]
        item = items[position[spk]]
        position[spk] += 1
        order.append(item)
        if position[spk] < len(items):
            heapq.heappush(heap, (seconds + item.duration, rank, spk))
    return order


def nested_splits(
    pool: Sequence[Item],
    seed: int,
    targets: Sequence[tuple[str, float]] = DEFAULT_TARGETS,
    tolerance: float = 0.02,
) -> dict[str, SplitDraw]:
    """Nested splits drawn from ``pool`` (targets in increasing order, in seconds)."""
    order = balanced_order(pool, seed)
    total = sum(it.duration for it in order)
    chosen: set[str] = set()
    seconds = 0.0
    out: dict[str, SplitDraw] = {}
    for name, target in sorted(targets, key=lambda t: t[1]):
        lo, hi = target * (1 - tolerance), target * (1 + tolerance)
        flag = ""
        if total < lo:
            chosen = {it.id for it in order}
            seconds = total
            flag = (f"pool has only {total / 3600:.2f} h: the whole pool is used" if order
                    else "the training pool is empty: no utterance to draw")
        else:
            for it in order:
                if seconds >= lo:
                    break
                if it.id in chosen or seconds + it.duration > hi:
                    continue
                chosen.add(it.id)
                seconds += it.duration
            if seconds < lo:
                flag = f"could not reach within {tolerance:.0%} of the target with these utterance lengths"
        out[name] = SplitDraw(ids=sorted(chosen), seconds=seconds, target=target, flag=flag)
    return out


@dataclass(frozen=True)
class Heldout:
    """Dev and test ids drawn out of a training pool, and how they were drawn."""

    dev: frozenset[str]
    test: frozenset[str]
    by: str  # "speaker": no voice of dev or test speaks in training; "utterance": they may
    note: str = ""  # why it was drawn this way, for the report ("" when by speaker as usual)


# A speaker-disjoint dev or test set is drawn only where it gets at least MIN_HELDOUT_VOICES voices and about its
# share of the audio (half to one and a half times), from a corpus of at least MIN_EFFECTIVE_VOICES effective
# voices (the inverse of the sum of the voices' squared shares of the audio: 40 equal voices are 40, two voices
# speaking 80% beside eighteen minor ones about 3). A speaker-disjoint hold-out from one to a handful of voices
# would take whole voices, most of the audio, out of training, or leave dev/test to the minor voices: there,
# utterances are drawn instead.
MIN_HELDOUT_VOICES = 2
MIN_EFFECTIVE_VOICES = 8.0


def carve_heldout(pool: Sequence[Item], seed: int, dev_fraction: float, test_fraction: float,
                  speaker_disjoint: bool = False) -> Heldout:
    """Dev and test ids drawn from ``pool``, each about its fraction of the duration.

    By speaker (no dev or test voice speaks in training) where the pool has the voices for it (see
    :data:`MIN_HELDOUT_VOICES`), else by utterance (dev and test hear
    the training voices: a speaker-dependent evaluation), with a note saying why. ``speaker_disjoint``
    draws by speaker whenever three voices at least allow it (the note says what the sets got) and raises a
    :class:`LowresError` where they do not. Utterances without a speaker count as voices of their own.
    """
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in sorted(pool, key=lambda it: it.id):
        groups[_speaker_key(item)].append(item)
    known = sorted(g for g in groups if not g.startswith("\x00"))
    total = sum(it.duration for it in pool)
    want = {"test": total * test_fraction, "dev": total * dev_fraction}
    wanted = [s for s in ("dev", "test") if want[s] > 0]
    if not wanted:
        return Heldout(frozenset(), frozenset(), "speaker")
    if known:
        picked, have = _draw_groups(groups, want, total, seed)
        voices = {s: len(picked[s]) for s in wanted}
        effective = total ** 2 / sum(sum(it.duration for it in g) ** 2 for g in groups.values()) if total else 0.0
        fits = effective >= MIN_EFFECTIVE_VOICES and all(
            voices[s] >= MIN_HELDOUT_VOICES and 0.5 * want[s] <= have[s] <= 1.5 * want[s] for s in wanted)
        got = ", ".join(f"{s} {voices[s]} voice(s), {100 * have[s] / total:.0f}% of the audio" for s in wanted)
        if fits or (speaker_disjoint and len(known) >= 3 and all(picked[s] for s in wanted)):
            note = "" if fits else (f"drawn by speaker as asked (--speaker-disjoint): {got}, from {len(known)} "
                                    "voices")
            return Heldout(*_ids(picked, groups), "speaker", note)
        if speaker_disjoint:
            from lowres import LowresError

            raise LowresError(
                f"A speaker-disjoint dev/test cannot be drawn from this corpus: its training pool has "
                f"{len(known)} voice(s) ({_voice_shares(groups, known, total)}), and dev, test and training need "
                "one voice each at least. Drop --speaker-disjoint (dev and test are then drawn by utterance and "
                "hear the training voices), or give dev/test sets of other speakers (a split column, --dev/--test).")
        why = (f"{len(known)} voice(s) ({_voice_shares(groups, known, total)}; {effective:.1f} effective): too few "
               f"for a speaker-disjoint dev/test (it needs {MIN_EFFECTIVE_VOICES:g} effective voices, and "
               f"{MIN_HELDOUT_VOICES} voices and about its share of the audio in each set)")
    else:
        why = "no speaker labels"
    singles = {f"\x00{it.id}": [it] for it in pool}
    picked, _ = _draw_groups(singles, want, total, seed)
    note = (f"{why}: dev and test were drawn by utterance, so they hear the training voices (a speaker-dependent "
            "evaluation)" + ("; --speaker-disjoint draws them by speaker" if len(known) >= 3 else ""))
    return Heldout(*_ids(picked, singles), "utterance", note)


def _draw_groups(groups: dict[str, list[Item]], want: dict[str, float], total: float,
                 seed: int) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Whole groups (speakers, or single utterances) for test, then dev, in a seeded order: each group goes
    to the first set it fits, never past 1.5 times what the set still needs. Where that leaves a set empty (a
    pool of a few large groups), a set's first group may be larger: anything up to half the pool where there are
    more than two groups."""
    rng = random.Random(seed + 7919)
    names = sorted(groups)
    rng.shuffle(names)
    seconds = {name: sum(it.duration for it in groups[name]) for name in names}
    for lenient in (False, True):
        have = {"test": 0.0, "dev": 0.0}
        picked: dict[str, list[str]] = {"test": [], "dev": []}
        for name in names:
            for split in ("test", "dev"):
                remaining = want[split] - have[split]
                if remaining <= 0:
                    continue
                if seconds[name] > 1.5 * remaining and (picked[split] or not lenient):
                    continue  # would overshoot its target by far: leave it to another set
                if seconds[name] > 0.5 * total and len(names) > 2:
                    continue
                picked[split].append(name)
                have[split] += seconds[name]
                break
        if all(picked[s] for s in want if want[s] > 0):
            break
    return picked, have


def _ids(picked: dict[str, list[str]], groups: dict[str, list[Item]]) -> tuple[frozenset[str], frozenset[str]]:
    return tuple(frozenset(it.id for g in picked[s] for it in groups[g]) for s in ("dev", "test"))


def _voice_shares(groups: dict[str, list[Item]], known: list[str], total: float, top: int = 3) -> str:
    """"a 62%, b 30%, 3 more 8%": the largest voices' shares of the audio."""
    shares = sorted(((sum(it.duration for it in groups[g]) / total, g) for g in known), reverse=True)
    parts = [f"{g} {100 * s:.0f}%" for s, g in shares[:top]]
    if len(shares) > top:
        parts.append(f"{len(shares) - top} more {100 * sum(s for s, _ in shares[top:]):.0f}%")
    return ", ".join(parts)
