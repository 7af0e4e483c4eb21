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

from lowres import LowresError, __version__
from lowres.config import PrepareConfig, to_dict
from lowres.data import audio as audio_mod
from lowres.data.corpora import CorpusOptions, Record, Reject, detect_format, get_parser, walk_files
from lowres.data.manifest import Utterance, json_line, write_manifest
from lowres.data.segment import plan_cuts
from lowres.data.splits import HELDOUT_SPLITS, LABELED_SPLITS, Item, carve_heldout, nested_splits
from lowres.data.text import LanguageRules, TextConfig, has_digit, normalize, text_config_dict
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
                    "text": text_config_dict(text_cfg), "notes": []}
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
            files = sorted({r.audio for r in records})
            probes = parallel_map(_probe_one, files, workers, progress, "probing audio")
            rows = _check_records(records, probes, cfg, text_cfg, rejects)
            del records, files, probes  # the rows hold all that is used from here on (these were ~30% of the peak)
            counts = _labeled(result, rows, cfg, format_name, rejects, report)
        if unlabeled is not None:
            heldout_files = {os.path.realpath(r.utt.audio_filepath) for r in rows if r.split in HELDOUT_SPLITS}
            pieces = _unlabeled(Path(unlabeled), cfg, heldout_files, workers, progress, rejects, report)
            result.splits["unlabeled"] = pieces

    rejects.sort(key=lambda r: (r.reason, r.source, r.id))
    by_reason = Counter(r.reason for r in rejects)
    report["rejects"] = {"total": len(rejects), "by_reason": dict(sorted(by_reason.items()))}
    if not rows and not pieces:
        raise LowresError(_nothing_usable(corpus, Path(unlabeled) if unlabeled is not None else None, rejects,
                                          report))
    if corpus is not None and not rows:  # the unlabeled part is usable: say loudly what the labeled part is not
        report["notes"].append(f"{corpus} gave no usable utterance (every item is in rejects.jsonl): only the "
                               "unlabeled audio was prepared")
    if unlabeled is not None and not pieces:
        report["notes"].append(f"--unlabeled {unlabeled} gave no usable piece of audio: `lowres adapt` has "
                               "nothing to train on from it")

    claim()
    if corpus is not None:
        _write_labeled(result, rows, counts, cfg, report)
    if unlabeled is not None:
        write_manifest(out / "unlabeled.jsonl", pieces)
    atomic_write_lines(out / "rejects.jsonl", (json_line(r.to_dict()) for r in rejects))
    atomic_write_json(out / "prepare_report.json", report)
    return result


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
                   rejects: list[Reject]) -> list[_Row]:
    """Records → usable rows; everything else → rejects with a reason."""
    rows: list[_Row] = []
    first_seen: dict[str, str] = {}
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
        if rec.offset + duration > file_s + 0.05:
            reject("segment_out_of_range",
                   f"segment ends at {rec.offset + duration:.3f}s, after the end of {rec.audio} ({file_s:.3f}s)")
            continue
        duration = min(duration, file_s - rec.offset)
        if duration < cfg.min_duration_s:
            reject("too_short", f"{duration:.3f}s is shorter than min_duration_s={cfg.min_duration_s}")
            continue
        if duration > cfg.max_duration_s:
            reject("too_long", f"{duration:.1f}s is longer than max_duration_s={cfg.max_duration_s} "
                               "(cut it, or raise --max-duration)")
            continue
        text = normalize(rec.text, text_cfg)
        if not text:
            reject("empty_transcript", f"nothing is left after normalisation of {rec.text[:80]!r}")
            continue
        needed = ctc_frames_needed(tokenize(text, cfg.units))
        frames = audio_mod.encoder_frames(int(round(duration * audio_mod.TARGET_SAMPLE_RATE)))
        if needed > frames:
            reject("transcript_too_long",
                   f"{needed} symbols (with blanks between repeats) for {frames} frames of 20 ms: "
                   "the transcript cannot be aligned to this audio")
            continue
        utt = Utterance(id=rec.id, audio_filepath=str(rec.audio), duration=duration, text=text, offset=rec.offset,
                        speaker=rec.speaker, sample_rate=info.sample_rate, raw_text=rec.text)
        rows.append(_Row(utt, rec.split, rec.group, rec.tags, info.frames, rec.source))
    return rows


def _labeled(result: PrepareResult, rows: list[_Row], cfg: PrepareConfig, format_name: str,
             rejects: list[Reject], report: dict) -> Counter:
    """Held-out sets, nested splits, vocabulary and coverage of the checked rows, into ``result`` and ``report``;
    writes nothing (:func:`_write_labeled` does). Returns the training pool's symbol counts."""
    notes: list[str] = report["notes"]
    official = any(r.tags for r in rows)
    by_split: dict[str, list[_Row]] = defaultdict(list)
    for r in rows:
        by_split[r.split].append(r)

    # held-out sets: the corpus's own, else carved out speaker-disjoint (never for LibriSpeech layouts,
    # whose dev/test are the official folders)
    missing = [s for s in HELDOUT_SPLITS if not by_split.get(s)]
    if missing and format_name == "librispeech":
        notes.append(f"no {' and no '.join(missing)} set found: put LibriSpeech dev-*/test-* folders beside the "
                     "corpus or name them with --dev/--test")
    elif missing:
        train_items = [Item(r.utt.id, r.utt.speaker, r.utt.duration) for r in by_split["train"]]
        dev_ids, test_ids, note = carve_heldout(train_items, cfg.seed, cfg.dev_fraction if "dev" in missing else 0.0,
                                                cfg.test_fraction if "test" in missing else 0.0)
        if note:
            notes.append(note)
        kept = []
        for r in by_split["train"]:
            if r.utt.id in dev_ids:
                r.split, r.group = "dev", "carved"
                by_split["dev"].append(r)
            elif r.utt.id in test_ids:
                r.split, r.group = "test", "carved"
                by_split["test"].append(r)
            else:
                kept.append(r)
        by_split["train"] = kept
        notes.append(f"{' and '.join(missing)} carved out of the training pool (speaker-disjoint, seed {cfg.seed})")

    # training pool: never a dev/test speaker (official Libri-light subsets are used as they are)
    heldout_speakers = {r.utt.speaker for s in HELDOUT_SPLITS for r in by_split.get(s, []) if r.utt.speaker}
    pool: list[_Row] = []
    for r in by_split.get("train", []):
        if not official and r.utt.speaker and r.utt.speaker in heldout_speakers:
            rejects.append(Reject(r.source, "heldout_speaker",
                                  f"speaker {r.utt.speaker!r} is in dev/test; kept out of training", id=r.utt.id))
            continue
        pool.append(r)

    # nested splits
    pool_by_id = {r.utt.id: r for r in pool}
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
    split_ids["full"] = sorted(pool_by_id)

    # vocabulary from the training pool only
    counts = count_symbols((r.utt.text for r in pool), cfg.units)
    vocab, rare = build_vocab(counts, cfg.min_char_count, cfg.units)
    if not pool and rows:  # (no rows at all: prepare() says so)
        notes.append("the training pool is empty: no vocabulary was written (the dev/test manifests can be "
                     "evaluated on with `lowres eval --data`, but nothing can be fine-tuned on this folder)")
    result.vocab = vocab

    # the manifests
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
        if len(groups) > 1:  # e.g. dev-clean and dev-other: one manifest each as well
            for g in groups:
                gname = re.sub(r"[^\w.-]+", "_", g).strip("._") or name
                if gname in LABELED_SPLITS + HELDOUT_SPLITS:
                    gname = f"{name}-{gname}"
                gutts = [r.utt for r in held if r.group == g]
                result.splits[gname] = gutts
                splits_report[gname] = {**_stats(gutts), "part_of": name}

    # coverage of dev/test by the vocabulary
    coverage = {}
    for name in HELDOUT_SPLITS:
        unk = total = 0
        oov: Counter = Counter()
        for u in result.splits[name]:
            for tok in tokenize(u.text, cfg.units):
                if tok == "|":
                    continue
                total += 1
                if tok not in vocab and not (len(tok) > 1 and all(c in vocab for c in tok)):
                    unk += 1
                    oov[tok] += 1
        coverage[name] = {"symbols": total, "outside_vocabulary": unk,
                          "oov_share": round(unk / total, 6) if total else 0.0,
                          "oov_symbols": dict(sorted(oov.most_common(20)))}
    report.update({
        "splits": splits_report,
        "vocabulary": {"size": len(vocab), "symbols": len(vocab.symbols), "units": cfg.units,
                       "min_char_count": cfg.min_char_count, "rare_to_unk": rare},
        "coverage": coverage,
        "digits": {"utterances_with_digits": sum(1 for r in rows if has_digit(r.utt.text)),
                   "policy": cfg.digits},
    })
    return counts


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
    for path in files:
        info = probes[path]
        if isinstance(info, audio_mod.AudioError):
            rejects.append(Reject(str(path), info.reason, info.detail, id=_unlabeled_id(root, path)))
        elif info.duration_s < cfg.segment_min_s:
            rejects.append(Reject(str(path), "too_short",
                                  f"{info.duration_s:.2f}s is shorter than segment_min_s={cfg.segment_min_s}",
                                  id=_unlabeled_id(root, path)))
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
        "heldout_files_excluded": excluded,
    }
    if excluded:
        report["notes"].append(f"{excluded} unlabeled file(s) are dev/test audio and were left out")
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
            if u.sample_rate != audio_mod.TARGET_SAMPLE_RATE:
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
    from rich.markup import escape  # paths and notes are text, not markup: "[/x]" in a folder name is fine
    from rich.table import Table

    report = result.report
    splits = report.get("splits", {})
    if splits:
        table = Table(title=escape(f"prepared {result.out}"), show_lines=False)
        for col in ("split", "hours", "utterances", "speakers", "note"):
            table.add_column(col, justify="right" if col in ("hours", "utterances", "speakers") else "left")
        for name, s in splits.items():
            note = s.get("flag") or s.get("source") or (f"part of {s['part_of']}" if "part_of" in s else "")
            table.add_row(escape(name), f"{s['hours']:.3f}", str(s["utterances"]), str(s["speakers"]), escape(note))
        console.print(table)
    un = report.get("unlabeled")
    if un:
        console.print(f"unlabeled: {un['hours']:.3f} h in {un['pieces']} pieces from {un['files']} files "
                      f"({un['cut_files']} long files cut at quiet points)")
    vocab = report.get("vocabulary")
    if vocab:
        console.print(f"vocabulary: {vocab['symbols']} symbols ({vocab['units']}s) + <pad>/<unk>/| ; "
                      f"{len(vocab['rare_to_unk'])} rarer than {vocab['min_char_count']} mapped to <unk>")
        cov = report.get("coverage", {})
        parts = [f"{k} {100 * v['oov_share']:.2f}%" for k, v in cov.items() if v["symbols"]]
        if parts:
            console.print("characters outside the vocabulary: " + ", ".join(parts))
    rej = report.get("rejects", {})
    if rej.get("total"):
        reasons = ", ".join(f"{k} {v}" for k, v in rej["by_reason"].items())
        console.print(f"[yellow]rejected {rej['total']}[/yellow] ({reasons}); see "
                      + escape(str(result.out / "rejects.jsonl")))
    else:
        console.print("rejected 0")
    for note in report.get("notes", []):
        console.print(escape(f"note: {note}"))
