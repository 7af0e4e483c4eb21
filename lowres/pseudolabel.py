"""``run_pseudolabel()``: transcripts for untranscribed audio from a fine-tuned run, for self-training.

Xu et al. (2021, "Self-training and pre-training are complementary") label the unlabeled audio with the
fine-tuned model and an LM, then fine-tune again *from the pretrained base* on labels + pseudo-labels
(``lowres finetune --pseudo``); fine-tuning the fine-tuned model again did not help them.

The run decodes every piece of ``--unlabeled`` (the ``unlabeled.jsonl`` of ``prepare --unlabeled``, or a
folder of audio cut the same way into ``OUT/data/``): greedy, or by beam search with ``--lm`` (the weights
``eval --tune-lm`` stored in the LM folder, where it did). Each piece gets a **confidence**: the mean
posterior probability, over the frames that the transcript's best CTC alignment gives to its characters, of
those characters (:func:`lowres.decode.path_confidence`; blank frames are left out, since a model is sure of
silence). It is length-normalised (a mean over frames), from 0 to 1.

**Whisper's decoder as the teacher** (``--whisper whisper-base --language nl --data prepared/nl``, instead of
``--model``; :class:`WhisperTeacher`): greedy, as ``eval --whisper``; the confidence is the mean probability
the decoder gave the tokens it chose, its end of text included (:func:`lowres.zeroshot.transcribe_scored`),
also from 0 to 1 but not on the CTC scale, so a ``--min-confidence`` does not carry over between the two.
This is distillation rather than self-training: it helps only for a language Whisper was trained on.

Then, in this order, a piece is dropped when it could not be decoded (``not_decoded``), its audio is part of
the teacher run's own labeled training clips (``labeled_audio``: the student has their true transcripts, and
a teacher is most confident there, so they would crowd ``--keep``'s share), its transcript is empty
(``empty``), it has a character outside the vocabulary (``outside_vocabulary``: only a Whisper teacher
writes such, e.g. digits or a foreign letter), its characters per second lie outside the labeled data's
range widened by ``cps_margin`` (``too_slow`` / ``too_fast``: :func:`lowres.data.pseudo.plausible_cps`; the
labeled data is the run's own training manifest, for a Whisper teacher the prepared folder's labeled pool),
its confidence is below ``--min-confidence`` (``low_confidence``), or it is not among the ``--keep`` most
confident share of what is left (``below_keep``).

Files in OUT (the folder layout is this module's):

* ``pseudo.jsonl``: the kept pieces, a manifest with ``"pseudo": true`` and ``"confidence"``
  (:mod:`lowres.data.pseudo`), in the unlabeled manifest's order: what ``finetune --pseudo OUT`` reads;
* ``rejects.jsonl``: the dropped ones, with their transcript, confidence and reason;
* ``pseudolabel_report.json``: counts and hours kept and dropped by reason, the range, the confidence's
  quartiles, the settings;
* ``decoded.jsonl``: every piece as it was decoded, appended batch by batch: ``--resume`` continues from it
  after a stop, and a change of ``--keep`` / ``--min-confidence`` refilters it without decoding again;
* ``pseudolabel.json``: what the decoding depended on (the run, the unlabeled manifest, the decoder): a
  ``--resume`` with another one is refused.

Deterministic: decoding has no randomness; ``--seed`` only draws the ``--max-hours`` subset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lowres import LowresError
from lowres.config import DecodeOptions, PseudoLabelConfig

SETTINGS = "pseudolabel.json"
DECODED = "decoded.jsonl"
REPORT = "pseudolabel_report.json"
REJECTS = "rejects.jsonl"
DATA_DIR = "data"  # where a folder of audio given to --unlabeled is indexed and cut
OUTPUTS = (SETTINGS, DECODED, REPORT, REJECTS, DATA_DIR)  # what --overwrite removes (pseudo.jsonl too)
LABELED_POOLS = ("full", "10h", "1h", "10min")  # a Whisper teacher's characters-per-second range: the first found
REASONS = ("not_decoded", "heldout_audio", "labeled_audio", "empty", "outside_vocabulary", "too_slow", "too_fast",
           "low_confidence", "below_keep")


@dataclass(frozen=True)
class WhisperTeacher:
    """``--whisper NAME --language CODE --data PREPARED``: Whisper's own decoder as the teacher (greedy, as ``eval
    --whisper``) instead of a fine-tuned run. Its transcripts are normalised with the prepared folder's text rules;
    a piece whose transcript has a character outside the prepared vocabulary is dropped
    (``outside_vocabulary``); the characters-per-second range comes from the prepared folder's labeled data."""

    source: str  # whisper-base, a Hugging Face or CTranslate2 Whisper folder
    language: str  # ISO 639-1, as Whisper's language token
    data: Path  # the prepared folder the students train on


def run_pseudolabel(model_dir: Path | WhisperTeacher, unlabeled: Path, out: Path,
                    cfg: PseudoLabelConfig = PseudoLabelConfig(), *, options: DecodeOptions | None = None,
                    device_name: str = "auto", resume: bool = False, overwrite: bool = False, console=None) -> dict:
    """Decode ``unlabeled`` with the run ``model_dir`` (or Whisper's decoder: :class:`WhisperTeacher`), keep
    what ``cfg`` says, write OUT's files (module docstring); returns the report. ``resume``: continue (or
    refilter) the pseudolabel already in ``out``."""
    from lowres.data.pseudo import PSEUDO_MANIFEST
    from lowres.data.unlabeled import check_unlabeled_source, unlabeled_manifest
    from lowres.decode import BeamSearch
    from lowres.fsutil import claim_folder, remove_outputs
    from lowres.runtime import resolve_device

    options = options if options is not None else DecodeOptions()
    if isinstance(model_dir, WhisperTeacher) and options.lm is not None:
        raise LowresError("--lm goes with --model: Whisper's decoder has its own language model.")
    search = BeamSearch.from_options(options)  # the LM files are checked before anything is decoded
    check_unlabeled_source(Path(unlabeled))
    out = Path(out)

    clear = remove_outputs(*OUTPUTS, PSEUDO_MANIFEST)

    def claim(check_only: bool) -> str:
        return claim_folder(out, what="pseudo-labels", overwrite=overwrite, resume=resume, clear=clear,
                            is_ours=lambda p: (p / SETTINGS).is_file(), not_ours=f"no {SETTINGS}",
                            check_only=check_only,
                            hint="Pass --resume to continue (or refilter) the pseudo-labels there, --overwrite to start "
                                 "them again, or choose another --out.")

    claim(check_only=True)  # refused before anything is read, touching nothing
    device = resolve_device(device_name)
    # a folder that is no fine-tuned run (or an unknown Whisper language) is said before --out is made
    teacher = _WhisperDecoder(model_dir, options, device) if isinstance(model_dir, WhisperTeacher) \
        else _RunDecoder(Path(model_dir), options, search, device)
    pieces = _pieces(Path(unlabeled), cfg) if Path(unlabeled).is_file() else None
    mode = claim(check_only=False)
    try:  # a start that fails before decoding leaves nothing half-made
        manifest = unlabeled_manifest(Path(unlabeled), out / DATA_DIR, console)
        pieces = pieces if pieces is not None else _pieces(manifest, cfg)
        settings = {**teacher.stamp(), "unlabeled": str(Path(manifest).resolve()), "pieces": len(pieces),
                    "pieces_sha1": hashlib.sha1("\n".join(u.id for u in pieces).encode()).hexdigest(),
                    "max_hours": cfg.max_hours, "seed": cfg.seed, "decoder": teacher.decoder_settings()}
        _check_settings(out, settings, resume)
    except BaseException:
        if mode == "new":
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        elif mode == "replaced":
            clear(out)
        raise
    done, failed = _decode(teacher, pieces, out, console)
    return _filter_and_write(teacher, pieces, done, out, cfg, settings, console, failed)


class _RunDecoder:
    """A fine-tuned run as the teacher: greedy or beam search, the confidence of the CTC path."""

    drops_labeled_audio = True  # its pieces of its own training clips are not pseudo-labels
    lm_hint = True  # the low-share warning may suggest --lm

    def __init__(self, model_dir: Path, options: DecodeOptions, search, device):
        import dataclasses

        from lowres.bases import load_run
        from lowres.evaluate import text_config_of

        self.model_dir, self.search, self.device = model_dir, search, device
        self.run = load_run(model_dir, device=device)
        self.options = options if options.precision is not None else \
            dataclasses.replace(options, precision=self.run.config.train.precision)
        self.vocab, self.text_config = self.run.vocab, text_config_of(self.run.meta)
        self.labeled_manifest = self.run.record.extras.get("train_manifest")
        self.heldout = [m for m in (self.run.record.extras.get("dev_manifest"),) if m]  # never trained on

    def stamp(self) -> dict:
        return {"model": str(self.model_dir.resolve()), "model_weights": _weights_stamp(self.model_dir)}

    def decoder_settings(self) -> dict:
        return self.search.settings() if self.search is not None else {"name": "greedy"}

    def batches(self, subset: list, console, progress):
        """``(indices into subset, [(transcript, confidence, extra fields)], errors)`` batch by batch."""
        from lowres.data.text import normalize
        from lowres.decode import batch_texts, forward_batches, path_confidence
        from lowres.progress import say

        decoder = None
        if self.search is not None:
            from lowres.evaluate import lexicon_warning

            loaded = self.search.load(self.vocab)
            warning = lexicon_warning(loaded.coverage)
            if warning:
                say(console, ("warning:", "yellow"), f" {warning}")
            decoder = self.search.decoder(loaded)
        for indices, logits, frames, errors in forward_batches(self.run.model, subset, self.device,
                                                               options=self.options, progress=progress):
            if not indices:
                yield [], [], errors
                continue
            texts = [normalize(t, self.text_config) for t in batch_texts(logits, frames, self.vocab, decoder)]
            yield indices, [(t, path_confidence(logits[k, :int(frames[k])], self.vocab.encode(t)),
                             {"frames": int(frames[k])}) for k, t in enumerate(texts)], errors


class _WhisperDecoder:
    """Whisper's own decoder as the teacher (:class:`WhisperTeacher`)."""

    drops_labeled_audio = False  # Whisper never saw the prepared folder's clips
    lm_hint = False  # --lm is refused with --whisper

    def __init__(self, spec: WhisperTeacher, options: DecodeOptions, device):
        from lowres.bases.whisper import load_generator
        from lowres.data.prepared import PreparedDir

        prepared = PreparedDir.open(spec.data, need_vocab=False)
        if not prepared.has_vocab:
            raise LowresError(f"--data {spec.data} has no vocabulary (vocab.json): --whisper needs the prepared "
                              "folder of a corpus with transcripts, whose characters and text rules the "
                              "pseudo-labels must follow (the folder that `lowres finetune --data` trains on).")
        self.vocab, self.text_config = prepared.load_vocab(), prepared.text_config()
        self.heldout = [str(p) for p in (prepared.manifest("dev"), prepared.manifest("test")) if p.is_file()]
        self.labeled_manifest = next((str(p) for p in (prepared.manifest(s) for s in LABELED_POOLS)
                                      if p.is_file() and p.stat().st_size > 0), None)
        self.spec, self.device, self.batch_seconds = spec, device, options.batch_seconds
        self.gen = load_generator(spec.source)
        self.gen.language(spec.language)  # an unknown language is refused before --out is made
        self.gen.model.to(device)

    def stamp(self) -> dict:
        source = Path(self.spec.source)
        return {"model": str(source.resolve()) if source.exists() else self.spec.source,
                "model_weights": f"whisper:{self.gen.name}", "data": str(Path(self.spec.data).resolve())}

    def decoder_settings(self) -> dict:
        return {"name": "whisper-greedy", "language": self.spec.language}

    def batches(self, subset: list, console, progress):
        from lowres.data.text import normalize
        from lowres.zeroshot import decode_batches

        for indices, texts, confidences, errors in decode_batches(self.gen, subset, self.spec.language, self.device,
                                                                  self.batch_seconds, progress):
            yield indices, [(normalize(t, self.text_config), c, {"raw_hypothesis": t})
                            for t, c in zip(texts, confidences, strict=True)], errors


def _pieces(manifest: Path, cfg: PseudoLabelConfig) -> list:
    """The unlabeled pieces to decode: all of them, or a seeded random ``max_hours`` of them (in manifest order)."""
    from lowres.data.manifest import read_manifest

    pieces = list(read_manifest(manifest))
    if not pieces:
        raise LowresError(f"{manifest} holds no audio pieces to pseudo-label. Give the unlabeled.jsonl of `lowres "
                          "prepare --unlabeled` or a folder of audio recordings.")
    if cfg.max_hours and sum(u.duration for u in pieces) > cfg.max_hours * 3600:
        order = list(range(len(pieces)))
        random.Random(cfg.seed).shuffle(order)
        chosen, total = [], 0.0
        for i in order:
            if total >= cfg.max_hours * 3600:
                break
            chosen.append(i)
            total += pieces[i].duration
        pieces = [pieces[i] for i in sorted(chosen)]
    return pieces


def _weights_stamp(model_dir: Path) -> str:
    """Size and modification time of the run's weights: a run trained further is another model."""
    from lowres.runs import RUN_WEIGHTS

    with contextlib.suppress(OSError):
        st = (model_dir / RUN_WEIGHTS).stat()
        return f"{st.st_size}:{int(st.st_mtime)}"
    return ""


def _check_settings(out: Path, settings: dict, resume: bool) -> None:
    from lowres.fsutil import atomic_write_json

    path = out / SETTINGS
    if resume and path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in settings if before.get(k) != settings[k]]
        if changed:
            raise LowresError(f"--resume: the pseudo-labels in {out} were decoded with another {', '.join(changed)} "
                              f"(before: {', '.join(f'{k}={before.get(k)!r}' for k in changed)}). Pass --overwrite "
                              "to decode again with these, or choose another --out.")
        return
    atomic_write_json(path, settings)


def _read_decoded(path: Path) -> tuple[dict[int, dict], int]:
    """The rows of ``decoded.jsonl`` by piece index, and the byte length of its complete lines (a line cut off
    by a stop is dropped, and decoded again)."""
    rows: dict[int, dict] = {}
    good = 0
    if not path.is_file():
        return rows, 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                row = json.loads(raw)
                rows[int(row["index"])] = row
            except (ValueError, KeyError, TypeError):
                break
            good += len(raw)
    return rows, good


def _decode(teacher, pieces: list, out: Path, console) -> tuple[dict[int, dict], list[str]]:
    """Decode the pieces not yet in ``decoded.jsonl``, appending each batch's rows as it is done; returns every
    decoded row by piece index and why pieces could not be decoded (``path: reason``)."""
    from lowres.data.manifest import json_line
    from lowres.progress import progress_bar

    path = out / DECODED
    done, good = _read_decoded(path)
    todo = [i for i in range(len(pieces)) if i not in done]
    failed: list[str] = []
    if not todo:
        return done, failed
    subset = [pieces[i] for i in todo]
    with open(path, "ab") as f, progress_bar(console) as progress:
        f.truncate(good)
        # a piece that failed gets no row: it is "not_decoded", and tried again by --resume
        for indices, decoded, errors in teacher.batches(subset, console, progress):
            failed += errors or []
            rows = [{"index": todo[idx], "id": subset[idx].id, "hypothesis": text,
                     "confidence": round(float(confidence), 6), **extra}
                    for idx, (text, confidence, extra) in zip(indices, decoded, strict=True)]
            for r in rows:
                done[r["index"]] = r
            f.write("".join(json_line(r) + "\n" for r in rows).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    return done, failed


def _filter_and_write(teacher, pieces: list, done: dict[int, dict], out: Path, cfg: PseudoLabelConfig, settings: dict,
                      console, failed: list[str] = ()) -> dict:
    """Apply the rules of the module docstring to the decoded pieces; write pseudo.jsonl, rejects.jsonl and
    the report."""
    from dataclasses import replace

    from lowres.data.manifest import json_line, read_manifest
    from lowres.data.pseudo import (
        PSEUDO_MANIFEST,
        PseudoPiece,
        chars_per_second,
        most_confident,
        overlaps,
        plausible_cps,
        write_pseudo,
    )
    from lowres.fsutil import atomic_write_json, atomic_write_lines

    labeled_path = teacher.labeled_manifest
    labeled = list(read_manifest(labeled_path, require_text=True)) \
        if labeled_path and Path(labeled_path).is_file() else []
    cps = plausible_cps(labeled, cfg.cps_margin)
    as_pieces = [PseudoPiece(u, 0.0) for u in pieces]
    in_labeled = overlaps(as_pieces, labeled) if teacher.drops_labeled_audio and labeled else [False] * len(pieces)
    heldout = [u for m in teacher.heldout if Path(m).is_file() for u in read_manifest(m)]
    in_heldout = overlaps(as_pieces, heldout) if heldout else [False] * len(pieces)
    rejects: list[dict] = []
    candidates: list[PseudoPiece] = []
    index_of: dict[int, int] = {}  # id(candidate) -> piece index (piece ids need not be unique)

    def reject(i: int, reason: str, row: dict | None) -> None:
        u = pieces[i]
        rejects.append({"id": u.id, "index": i, "duration": round(u.duration, 3), "reason": reason,
                        **({k: row[k] for k in ("hypothesis", "confidence") if k in row} if row else {})})

    for i, u in enumerate(pieces):
        row = done.get(i)
        rate = chars_per_second(row["hypothesis"], u.duration) if row is not None else 0.0
        if row is None:
            reject(i, "not_decoded", None)
        elif in_heldout[i]:
            reject(i, "heldout_audio", row)
        elif in_labeled[i]:
            reject(i, "labeled_audio", row)
        elif not row["hypothesis"]:
            reject(i, "empty", row)
        elif teacher.vocab.outside(row["hypothesis"])[0]:
            reject(i, "outside_vocabulary", row)
        elif cps is not None and rate < cps[0]:
            reject(i, "too_slow", row)
        elif cps is not None and rate > cps[1]:
            reject(i, "too_fast", row)
        elif row["confidence"] < cfg.min_confidence:
            reject(i, "low_confidence", row)
        else:
            candidates.append(PseudoPiece(replace(u, text=row["hypothesis"]), float(row["confidence"])))
            index_of[id(candidates[-1])] = i
    kept = most_confident(candidates, cfg.keep)
    kept_ids = {id(p) for p in kept}
    for p in candidates:
        if id(p) not in kept_ids:
            reject(index_of[id(p)], "below_keep", {"hypothesis": p.utt.text, "confidence": p.confidence})
    write_pseudo(out / PSEUDO_MANIFEST, kept)
    atomic_write_lines(out / REJECTS, (json_line(r) for r in rejects))
    report = _report(pieces, kept, rejects, cps, cfg, settings, labeled_path if labeled else None)
    report["not_decoded_why"] = list(failed[:5])
    report["lm_hint"] = teacher.lm_hint
    atomic_write_json(out / REPORT, report)
    if console is not None:
        _print(report, out, console)
    return report


def _report(pieces, kept, rejects, cps, cfg, settings, labeled_path) -> dict:
    dropped = Counter(r["reason"] for r in rejects)
    dropped_s = Counter()
    for r in rejects:
        dropped_s[r["reason"]] += pieces[r["index"]].duration
    confs = sorted(p.confidence for p in kept)

    def q(f):
        return round(confs[round(f * (len(confs) - 1))], 4) if confs else None

    total_s = sum(u.duration for u in pieces)
    new_s = total_s - dropped_s["labeled_audio"] - dropped_s["heldout_audio"]
    kept_s = sum(p.utt.duration for p in kept)
    return {
        "pieces": len(pieces), "hours": round(total_s / 3600, 4),
        "kept": len(kept), "kept_hours": round(kept_s / 3600, 4),
        "kept_share_of_audio": round(kept_s / total_s, 4) if total_s else 0.0,
        # of the audio the teacher did not train on (the share the warning below judges)
        "kept_share_of_new_audio": round(kept_s / new_s, 4) if new_s else 0.0,
        "new_hours": round(new_s / 3600, 4),
        "dropped": {r: dropped[r] for r in REASONS if dropped[r]},
        "dropped_hours": {r: round(dropped_s[r] / 3600, 4) for r in REASONS if dropped[r]},
        "chars_per_second_range": [round(cps[0], 3), round(cps[1], 3)] if cps else None,
        "chars_per_second_from": labeled_path,
        "confidence_quartiles": [q(0.25), q(0.5), q(0.75)],
        "keep": cfg.keep, "min_confidence": cfg.min_confidence, "cps_margin": cfg.cps_margin,
        "settings": settings,
    }


def _hours(h: float) -> str:
    return f"{h:.2f} h" if h >= 1 else f"{60 * h:.1f} min"


def _print(report: dict, out: Path, console) -> None:
    from lowres.progress import say

    dropped = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in report["dropped"].items()) or "none"
    console.print(f"pseudo-labels: kept {report['kept']} of {report['pieces']} pieces "
                  f"({_hours(report['kept_hours'])} of {_hours(report['hours'])}); dropped: {dropped}")
    if report["chars_per_second_range"] is None:
        say(console, ("note:", "yellow"), " no labeled manifest was found (the run's training manifest, or the "
            "prepared folder's for --whisper), so implausibly fast or slow transcripts were not filtered out.")
    why = report.get("not_decoded_why") or []
    if why:
        say(console, ("warning:", "yellow"), f" {report['dropped'].get('not_decoded', len(why))} pieces could not be "
            f"decoded, e.g. {why[0]}")
    share, keep = report["kept_share_of_new_audio"], report["keep"]
    if report["pieces"] and report["new_hours"] <= 0:
        say(console, ("warning:", "yellow"), " every piece is audio the teacher trained on, or dev/test audio: there "
            "is nothing new to pseudo-label. Give --unlabeled audio that has no transcripts in the training data.")
    elif report["pieces"] and share < 0.5 * keep:
        better = "A better model (more labels, an LM: --lm) or a" if report.get("lm_hint") else "A"
        say(console, ("warning:", "yellow"), f" only {100 * share:.0f}% of the audio the teacher did not train on "
            f"was kept (--keep {keep:g} keeps up to {100 * keep:.0f}%); the reasons are in {out / REJECTS}. "
            f"{better} lower --min-confidence keeps more.")
    from lowres.data.pseudo import PSEUDO_MANIFEST

    console.print(f"wrote {out / PSEUDO_MANIFEST}: train on it with lowres finetune ... --pseudo {out}")
