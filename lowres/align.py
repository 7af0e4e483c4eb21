"""``run_align()``: long recordings and their transcripts cut into training utterances (``lowres align``).

Each pair is a recording and its text: one utterance per non-blank text line (or per sentence with
``split_sentences``). The text is normalised with the model's own rules (the ones ``prepare`` used for the
data it was trained on) and spelled with its units; a character the model lacks becomes a star, which
matches any audio (counted in the report). The recording's frame log-probabilities are computed in
overlapping windows and every line is placed by CTC forced alignment over the whole file at once, with a
star between lines for audio the text does not mention (:mod:`lowres.ctc_align`). A line scoring below
``min_score`` (text that is not in the audio, or a stretch the model cannot read) is taken out and the rest
aligned again, up to ``passes`` times, so it does not drag its neighbours; it is rejected as ``low_score``.
Which lines of a run of low ones to take out is searched (:func:`_lines_not_in_audio`): the smallest block
of consecutive lines without which the others read well.

Files in OUT (the folder layout is this module's):

* ``segments.jsonl``: a table corpus ``lowres prepare`` reads (``prepare OUT/segments.jsonl ...``): per kept
  line ``id``, ``audio`` (absolute path), ``offset`` and ``duration`` (seconds: the line's speech with
  ``pad_s`` on either side), ``text`` (the line as written), ``score``, ``start`` / ``end`` (its first and last
  character, seconds), ``file`` and ``line`` (1-based line number in the text file);
* ``rejects.jsonl``: lines and pairs that gave no segment, with the reason: ``low_score``, ``too_long``,
  ``empty`` (a line with nothing to say after normalisation), ``no_text`` (an audio file without a text, or an empty text), ``no_audio`` (a text without audio),
  ``bad_audio``, ``text_too_long`` (more characters than the recording has frames for);
* ``align_report.json``: per file and in total: lines, kept, rejected by reason, hours, characters outside the
  model's vocabulary, mean score, seconds spent and the real-time factor, peak memory; with ``compare`` the
  differences from an earlier pass of the same pairs (``align`` -> ``prepare`` -> ``finetune`` -> ``align`` again
  with the better model).
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lowres import LowresError
from lowres.config import AlignConfig, DecodeOptions

SEGMENTS = "segments.jsonl"
REJECTS = "rejects.jsonl"
REPORT = "align_report.json"
OUTPUTS = (SEGMENTS, REJECTS, REPORT)
TEXT_ENDING = ".txt"


@dataclass(frozen=True)
class Pair:
    """A recording and its text; either may be missing (a pair found in a folder with one half)."""

    name: str
    audio: Path | None
    text: Path | None


@dataclass
class FileResult:
    segments: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def find_pairs(folder: Path) -> list[Pair]:
    """``NAME.(wav|flac|mp3|ogg|...)`` + ``NAME.txt`` in ``folder`` (not below it), by name; a name with only
    one of the two is a pair with the other missing (a reject), two audio files of one name are refused."""
    from lowres.data.audio import AUDIO_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise LowresError(f"--pairs {folder}: no such folder. Give a folder of NAME.wav + NAME.txt pairs.")
    audio: dict[str, Path] = {}
    texts: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.suffix.lower() == TEXT_ENDING:
            texts[p.stem] = p
        elif p.suffix.lower() in AUDIO_EXTENSIONS:
            if p.stem in audio:
                raise LowresError(f"--pairs {folder}: two recordings are named {p.stem} ({audio[p.stem].name} and "
                                  f"{p.name}); which one {p.stem}.txt belongs to is unclear. Rename one.")
            audio[p.stem] = p
    names = sorted(set(audio) | set(texts))
    if not names:
        raise LowresError(f"--pairs {folder}: no audio (.wav, .flac, .mp3, .ogg) or .txt files in it. Put each "
                          "recording beside its text with the same name: chapter1.wav + chapter1.txt.")
    return [Pair(n, audio.get(n), texts.get(n)) for n in names]


def read_lines(path: Path, split_sentences: bool) -> list[tuple[int, str]]:
    """(1-based line number, text) of each utterance of a text file: its non-blank lines, or their sentences."""
    from lowres.data.text import sentences_of

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LowresError(f"{path}: not UTF-8 text (byte {exc.start}). Save it as UTF-8.") from None
    except OSError as exc:
        raise LowresError(f"{path}: cannot be read ({exc.strerror}).") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        for piece in (sentences_of(line) if split_sentences else [line.strip()]):
            if piece:
                out.append((number, piece))
    return out


def run_align(model_dir: Path, pairs: list[Pair], out: Path, cfg: AlignConfig = AlignConfig(), *,
              options: DecodeOptions | None = None, device_name: str = "auto", compare: Path | None = None,
              overwrite: bool = False, console=None) -> dict:
    """Align every pair with the fine-tuned run ``model_dir`` and write OUT's files (module docstring);
    returns the report. A pair that cannot be aligned is a reject, and the others go on; nothing kept at all
    is an error."""
    from lowres.bases import load_run
    from lowres.fsutil import atomic_write_json, atomic_write_lines, claim_folder, remove_outputs
    from lowres.progress import progress_bar
    from lowres.runtime import resolve_device

    if not pairs:
        raise LowresError("Nothing to align: give AUDIO TEXT or --pairs DIR.")
    if compare is not None and not (Path(compare) / SEGMENTS).is_file():
        raise LowresError(f"--compare {compare}: no {SEGMENTS} there. Give the --out folder of an earlier "
                          "`lowres align` of the same recordings.")
    out = Path(out)

    def claim(check_only: bool) -> str:
        return claim_folder(out, what="aligned segments", overwrite=overwrite, clear=remove_outputs(*OUTPUTS),
                            check_only=check_only,
                            hint="Pass --overwrite to align into it again, or choose another --out.")

    claim(check_only=True)
    options = options if options is not None else DecodeOptions()
    device = resolve_device(device_name)
    run = load_run(model_dir, device=device)
    if options.precision is None:
        import dataclasses

        options = dataclasses.replace(options, precision=run.config.train.precision)
    window_s = min(cfg.window_s, run.model.spec.max_seconds)
    if window_s <= 2 * cfg.context_s + 1:
        raise LowresError(f"align.context_s {cfg.context_s} leaves nothing of the {window_s:g}-s windows the model "
                          "reads; lower it.")
    claim(check_only=False)
    results: list[FileResult] = []
    started = time.perf_counter()
    with progress_bar(console) as progress:
        files = progress.add_task("aligning", total=len(pairs), unit="file")
        for pair in pairs:
            results.append(_align_pair(run, pair, cfg, window_s, options, device, progress))
            progress.advance(files)
    segments = [s for r in results for s in r.segments]
    rejects = [x for r in results for x in r.rejects]
    report = _report(results, cfg, model_dir, time.perf_counter() - started)
    if compare is not None:
        report["compared_to"] = compare_passes(_read_jsonl(Path(compare) / SEGMENTS), segments, str(compare))
    from lowres.data.manifest import json_line

    atomic_write_lines(out / SEGMENTS, (json_line(s) for s in segments))
    atomic_write_lines(out / REJECTS, (json_line(r) for r in rejects))
    atomic_write_json(out / REPORT, report)
    if console is not None:
        _print(report, out, console)
    if not segments:
        reasons = ", ".join(f"{n} {r}" for r, n in report["rejected"].items()) or "none"
        raise LowresError(f"No line could be aligned (rejected: {reasons}); the reasons per line are in "
                          f"{out / REJECTS}. Check that each text belongs to its recording and the model reads the "
                          "language (a run fine-tuned on it).")
    return report


def _align_pair(run, pair: Pair, cfg: AlignConfig, window_s: float, options, device, progress) -> FileResult:
    """One pair: its segments, its rejects and its part of the report."""
    from lowres.data import audio

    res = FileResult(report={"file": pair.name, "audio": str(pair.audio) if pair.audio else None,
                             "text": str(pair.text) if pair.text else None})

    def refuse(reason: str, detail: str) -> FileResult:
        res.rejects.append({"file": pair.name, "reason": reason, "detail": detail})
        res.report.update(lines=0, kept=0, rejected={reason: 1}, duration_s=res.report.get("duration_s", 0.0))
        return res

    if pair.audio is None:
        return refuse("no_audio", f"{pair.text}: no recording of the same name beside it")
    if pair.text is None:
        return refuse("no_text", f"{pair.audio}: no {pair.name}{TEXT_ENDING} beside it")
    try:
        info = audio.probe(pair.audio)
    except audio.AudioError as exc:
        return refuse("bad_audio", f"{pair.audio}: {exc.detail}")
    res.report["duration_s"] = round(info.duration_s, 3)
    try:
        lines = read_lines(pair.text, cfg.split_sentences)
    except LowresError as exc:
        return refuse("no_text", str(exc))
    if not lines:
        return refuse("no_text", f"{pair.text}: no text in it")
    try:
        return _align_lines(run, pair, info, lines, cfg, window_s, options, device, progress, res)
    except LowresError as exc:  # a recording that stops decoding part-way: this pair is a reject, the others go on
        res.segments.clear()
        return refuse("bad_audio", str(exc))


def _align_lines(run, pair: Pair, info, lines, cfg: AlignConfig, window_s: float, options, device, progress,
                 res: FileResult) -> FileResult:
    from lowres.audiotime import FRAME_S, SAMPLE_RATE
    from lowres.ctc_align import file_emissions, frames_for_lines, place_lines
    from lowres.data.text import normalize
    from lowres.evaluate import text_config_of

    text_cfg = text_config_of(run.meta)
    outside: Counter = Counter()
    ids = []
    for _, raw in lines:
        norm = normalize(raw, text_cfg)
        outside.update(run.vocab.outside(norm)[0])
        ids.append(run.vocab.encode(norm))
    t0 = time.perf_counter()
    num_samples = int(round(info.frames * SAMPLE_RATE / info.sample_rate))
    log_probs = file_emissions(run.model, pair.audio.resolve(), num_samples, device, window_s=window_s,
                               context_s=cfg.context_s, options=options, progress=progress, label=pair.name)
    t1 = time.perf_counter()
    units = sum(len(i) for i in ids)
    need = frames_for_lines(ids)
    report = res.report
    report.update(lines=len(lines), empty_lines=sum(1 for i in ids if not i), characters=units,
                  outside_vocabulary=dict(outside.most_common()), frames=int(log_probs.shape[0]))
    if need > log_probs.shape[0]:
        return _refuse_all(res, pair, lines, "text_too_long",
                           f"{units} characters need at least {need * FRAME_S:.0f} s of audio and {pair.audio} "
                           f"has {info.duration_s:.0f} s: is {pair.text.name} the text of this recording?")
    active = [k for k, i in enumerate(ids) if i]
    low: dict[int, float] = {}
    passes = 0
    while True:
        passes += 1
        placed = dict(zip(active, place_lines(log_probs, [ids[k] for k in active], direct_mb=cfg.direct_mb,
                                                     star_score=cfg.star_score),
                          strict=True))
        runs = _low_runs(active, placed, cfg.min_score)
        if not runs or passes >= cfg.passes:
            break
        for low_run in runs:
            for k in _lines_not_in_audio(log_probs, ids, active, placed, low_run, cfg):
                low[k] = placed[k].score
        active = [k for k in active if k not in low]
        if not active:
            break
    for k, p in placed.items():  # what is still below the line after the last pass
        if k in active and p.score < cfg.min_score:
            low[k] = p.score
    report.update(passes=passes, emissions_s=round(t1 - t0, 2), align_s=round(time.perf_counter() - t1, 2))
    kept = {k: p for k, p in placed.items() if k in active and k not in low}
    spans = _snap([kept[k] for k in sorted(kept)], pair.audio, cfg)
    _segments(res, pair, lines, ids, kept, dict(zip(sorted(kept), spans, strict=True)), low, cfg, info.duration_s)
    return res


def _snap(placed: list, path: Path, cfg: AlignConfig) -> list[tuple[float, float]]:
    """Each line's (start, end) in seconds: its first and last character's frames, moved outward (at most
    ``snap_s``, never into a neighbouring line) to where its sound starts and stops, that is to the first
    stretch of more than 0.1 s (a stop consonant's closure is shorter) below ``silence_db`` under the line's
    loudest frame. A CTC model marks a character with a spike anywhere inside its sound, and some (Whisper's
    encoder fine-tuned on ten minutes) spike early throughout a line: without this, a clip would lose the end
    of its last word. ``placed``: the kept lines' placements in order."""
    import numpy as np

    from lowres.audiotime import FRAME_S
    from lowres.data.audio import frame_rms

    spans = [(p.start * FRAME_S, p.end * FRAME_S) for p in placed]
    if cfg.snap_s <= 0 or not placed:
        return spans
    rms, hop = frame_rms(path)
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    n = len(db)
    gap, reach = int(round(0.1 / hop)), int(round(cfg.snap_s / hop))
    out = []
    prev_end = 0
    for i, (start_s, end_s) in enumerate(spans):
        a, b = min(n - 1, int(start_s / hop)), min(n, max(int(start_s / hop) + 1, int(np.ceil(end_s / hop))))
        floor = db[a:b].max() - cfg.silence_db
        next_start = min(n, int(spans[i + 1][0] / hop)) if i + 1 < len(spans) else n
        end = _loud_until(db, b, min(n, b + reach, next_start), floor, gap, step=1)
        start = _loud_until(db, a - 1, max(prev_end, a - reach) - 1, floor, gap, step=-1)
        start, end = min(start, a), max(end, b)
        out.append((start * hop, end * hop))
        prev_end = end
    return out


def _loud_until(db, first: int, stop: int, floor: float, gap: int, step: int) -> int:
    """Walking from frame ``first`` towards ``stop`` (exclusive) by ``step``: the boundary just past the last
    frame above ``floor`` before more than ``gap`` quiet frames in a row (``first`` itself, backwards: + 1)."""
    edge = first if step > 0 else first + 1
    quiet = 0
    t = first
    while (t < stop) if step > 0 else (t > stop):
        if db[t] > floor:
            edge = t + 1 if step > 0 else t
            quiet = 0
        else:
            quiet += 1
            if quiet > gap:
                break
        t += step
    return edge


def _low_runs(active: list[int], placed: dict, min_score: float, bridge: int = 2) -> list[list[int]]:
    """Runs of consecutive lines (in ``active`` order) scoring below ``min_score``; two runs with at most
    ``bridge`` good lines between them are one run, those lines included (pushed aside by the same intruder,
    they are placed again with it)."""
    runs: list[list[int]] = []
    current: list[int] = []
    good: list[int] = []
    for k in [*active, None]:
        if k is not None and placed[k].score < min_score:
            if current and len(good) <= bridge:
                current += good
            elif current:
                runs.append(current)
                current = []
            current.append(k)
            good = []
        elif k is not None:
            good.append(k)
    if current:
        runs.append(current)
    return runs


MAX_RUN_SEARCH = 40  # longer runs of low lines are not searched (quadratic): the worst of them go, pass by pass


def _lines_not_in_audio(log_probs, ids, active: list[int], placed: dict, run: list[int], cfg: AlignConfig) -> list[int]:
    """Which lines of a low-scoring ``run`` to take out. Text that is not in the audio squeezes itself and its
    neighbours into the neighbours' audio, so every line of the run scores low and the scores do not say which
    is the intruder. So the run's stretch of audio (between the good lines around it) is aligned again without
    each block of consecutive lines, smallest blocks first: the first size at which some block leaves every
    other line of the run scoring at least ``min_score`` wins (the best mean score among those blocks). A
    whole run is taken out when no smaller block does it (its lines may be in the audio but unreadable to this
    model: they would be rejected anyway)."""
    from lowres.ctc_align import place_lines

    where = active.index(run[0]), active.index(run[-1])
    start = placed[active[where[0] - 1]].end if where[0] > 0 else 0
    end = placed[active[where[1] + 1]].start if where[1] + 1 < len(active) else log_probs.shape[0]
    if len(run) > MAX_RUN_SEARCH:
        worst = min(placed[k].score for k in run)
        return [k for k in run if placed[k].score <= worst / 2]
    stretch = log_probs[start:end]
    for size in range(1, len(run)):
        best, best_mean = None, -float("inf")
        for first in range(len(run) - size + 1):
            keep = run[:first] + run[first + size:]
            try:
                again = place_lines(stretch, [ids[k] for k in keep], direct_mb=cfg.direct_mb,
                                    star_score=cfg.star_score)
            except ValueError:  # the rest does not fit either
                continue
            scores = [p.score for p in again]
            if min(scores) >= cfg.min_score and sum(scores) / len(scores) > best_mean:
                best, best_mean = run[first:first + size], sum(scores) / len(scores)
        if best is not None:
            return best
    return list(run)


def _segments(res: FileResult, pair: Pair, lines, ids, kept: dict, spans: dict, low: dict[int, float],
              cfg: AlignConfig, duration_s: float) -> None:
    order = sorted(kept)
    rejected: Counter = Counter()
    for k, unit_ids in enumerate(ids):
        if not unit_ids:
            res.rejects.append({"file": pair.name, "line": lines[k][0], "text": lines[k][1], "reason": "empty",
                                "detail": "nothing left of it after normalisation"})
            rejected["empty"] += 1
    for k, score in low.items():
        res.rejects.append({"file": pair.name, "line": lines[k][0], "text": lines[k][1], "reason": "low_score",
                            "score": round(score, 4)})
        rejected["low_score"] += 1
    scores = []
    for n, k in enumerate(order):
        p = kept[k]
        start, end = spans[k]
        prev_end = spans[order[n - 1]][1] if n else 0.0
        next_start = spans[order[n + 1]][0] if n + 1 < len(order) else duration_s
        offset = max(start - cfg.pad_s, (prev_end + start) / 2 if n else 0.0)
        stop = min(end + cfg.pad_s, (end + next_start) / 2 if n + 1 < len(order) else duration_s)
        row = {"file": pair.name, "line": lines[k][0], "text": lines[k][1], "score": round(p.score, 4),
               "start": round(start, 3), "end": round(end, 3)}
        if stop - offset > cfg.max_segment_s:
            res.rejects.append({**row, "reason": "too_long"})
            rejected["too_long"] += 1
            continue
        scores.append(p.score)
        res.segments.append({"id": f"{pair.name}_{lines[k][0]:05d}_{n:05d}", "audio": str(pair.audio.resolve()),
                             "offset": round(offset, 3), "duration": round(stop - offset, 3), **row})
    res.report.update(kept=len(res.segments), rejected=dict(rejected),
                      kept_s=round(sum(s["duration"] for s in res.segments), 2),
                      mean_score=round(statistics.fmean(scores), 4) if scores else None)


def _refuse_all(res: FileResult, pair: Pair, lines, reason: str, detail: str) -> FileResult:
    res.rejects.append({"file": pair.name, "reason": reason, "detail": detail})
    res.report.update(kept=0, rejected={reason: len(lines)}, detail=detail)
    return res


def compare_passes(before: list[dict], now: list[dict], before_name: str) -> dict:
    """How this pass differs from an earlier one of the same recordings: lines kept by both, by one only, and
    how far the kept lines' first and last characters moved (median and 95th percentile, seconds)."""
    def key(s: dict) -> tuple:
        return s.get("audio"), s.get("line"), s.get("text")

    old = {key(s): s for s in before}
    new = {key(s): s for s in now}
    both = [k for k in new if k in old]
    moves = sorted(max(abs(new[k]["start"] - old[k]["start"]), abs(new[k]["end"] - old[k]["end"])) for k in both)

    def pct(q: float):
        return round(moves[min(len(moves) - 1, int(q * len(moves)))], 3) if moves else None

    return {"earlier": before_name, "kept_by_both": len(both), "kept_now_only": len(new) - len(both),
            "kept_before_only": len(old) - len(both), "boundary_shift_median_s": pct(0.5),
            "boundary_shift_p95_s": pct(0.95),
            "mean_score_before": round(statistics.fmean(old[k]["score"] for k in both), 4) if both else None,
            "mean_score_now": round(statistics.fmean(new[k]["score"] for k in both), 4) if both else None,
            "kept_hours_before": round(sum(s["duration"] for s in before) / 3600, 4),
            "kept_hours_now": round(sum(s["duration"] for s in now) / 3600, 4)}


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _report(results: list[FileResult], cfg: AlignConfig, model_dir: Path, seconds: float) -> dict:
    from dataclasses import asdict

    rejected: Counter = Counter()
    outside: Counter = Counter()
    for r in results:
        rejected.update(r.report.get("rejected", {}))
        outside.update(r.report.get("outside_vocabulary", {}))
    audio_s = sum(r.report.get("duration_s", 0.0) for r in results)
    kept_s = sum(r.report.get("kept_s", 0.0) for r in results)
    lines = sum(r.report.get("lines", 0) for r in results)
    kept = sum(r.report.get("kept", 0) for r in results)
    return {"model": str(Path(model_dir).resolve()), "files": len(results), "lines": lines, "kept": kept,
            "kept_share_of_lines": round(kept / lines, 4) if lines else 0.0,
            "rejected": dict(rejected.most_common()), "audio_hours": round(audio_s / 3600, 4),
            "kept_hours": round(kept_s / 3600, 4), "outside_vocabulary": dict(outside.most_common()),
            "seconds": round(seconds, 1), "real_time_factor": round(seconds / audio_s, 4) if audio_s else None,
            "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "settings": asdict(cfg), "per_file": [r.report for r in results]}


def _print(report: dict, out: Path, console) -> None:
    from lowres.progress import say

    rejected = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in report["rejected"].items()) or "none"
    console.print(f"aligned: kept {report['kept']} of {report['lines']} lines ({60 * report['kept_hours']:.1f} min of "
                  f"{60 * report['audio_hours']:.1f} min of audio) from {report['files']} file(s); rejected: {rejected}")
    if report["outside_vocabulary"]:
        chars = " ".join(list(report["outside_vocabulary"])[:12])
        n = sum(report["outside_vocabulary"].values())
        say(console, ("note:", "yellow"), f" {n} character(s) of the text are not in the model's vocabulary ({chars}): "
            "they were aligned as a wildcard.")
    if report["lines"] and report["kept_share_of_lines"] < 0.5:
        say(console, ("warning:", "yellow"), f" only {100 * report['kept_share_of_lines']:.0f}% of the lines were kept; "
            f"the reasons are in {out / REJECTS}. A model that reads the language better (fine-tune on more, then "
            "align again) or a lower --min-score keeps more.")
    if "compared_to" in report:
        c = report["compared_to"]
        console.print(f"against {c['earlier']}: {c['kept_by_both']} lines kept by both ({c['kept_now_only']} now only, "
                      f"{c['kept_before_only']} before only); boundaries moved {c['boundary_shift_median_s']} s "
                      f"(median), {c['boundary_shift_p95_s']} s (95th percentile)")
    console.print(f"wrote {out / SEGMENTS}: prepare it with lowres prepare {out / SEGMENTS} --out prepared/NAME ...")
