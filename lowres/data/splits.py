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

# the one definition of the split names: prepare writes manifests/{name}.jsonl for each, finetune --split takes a
# labeled one, eval --split any of them (lowres.data.prepared.PreparedDir maps a name to its file)
DEFAULT_TARGETS: tuple[tuple[str, float], ...] = (("10min", 600.0), ("1h", 3600.0), ("10h", 36000.0))
LABELED_SPLITS: tuple[str, ...] = (*(name for name, _ in DEFAULT_TARGETS), "full")  # nested, smallest first
HELDOUT_SPLITS: tuple[str, ...] = ("dev", "test")  # speaker-disjoint from the labeled pool


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
            flag = f"pool has only {total / 3600:.2f} h: the whole pool is used"
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


def carve_heldout(
    pool: Sequence[Item], seed: int, dev_fraction: float, test_fraction: float
) -> tuple[set[str], set[str], str]:
    """Speaker-disjoint dev and test ids drawn from ``pool`` (each about its fraction of the duration).

    Returns ``(dev_ids, test_ids, note)``; the note says when speakers are too few to be disjoint.
    """
    rng = random.Random(seed + 7919)
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in sorted(pool, key=lambda it: it.id):
        groups[_speaker_key(item)].append(item)
    note = ""
    known = [g for g in groups if not g.startswith("\x00")]
    if 0 < len(known) < 3:
        # too few speakers to hold any out: split their utterances instead
        groups = {f"\x00{it.id}": [it] for it in pool}
        note = (f"only {len(known)} speaker(s): dev/test could not be speaker-disjoint and were drawn "
                "from the same speakers' utterances")
    names = sorted(groups)
    rng.shuffle(names)
    total = sum(it.duration for it in pool)
    want = {"test": total * test_fraction, "dev": total * dev_fraction}
    have = {"test": 0.0, "dev": 0.0}
    picked: dict[str, set[str]] = {"test": set(), "dev": set()}
    for name in names:
        seconds = sum(it.duration for it in groups[name])
        for split in ("test", "dev"):
            remaining = want[split] - have[split]
            if remaining <= 0:
                continue
            if picked[split] and seconds > 1.5 * remaining:
                continue  # would overshoot its target by far: leave it to another set
            if seconds > 0.5 * total and len(names) > 2:
                continue  # never hand half the pool to a held-out set
            picked[split].update(it.id for it in groups[name])
            have[split] += seconds
            break
    return picked["dev"], picked["test"], note
