"""``run_eval()``: WER/CER (jiwer), per-utterance hypotheses, error analysis, real-time factor.

References and hypotheses go through the same normalisation as ``prepare`` (the run records its settings).
CER counts the vocabulary's units (grapheme clusters by default, spaces included, as jiwer's CER counts
spaces). Decoding (:mod:`lowres.decode`) streams batch by batch: only counts and the per-utterance strings are
kept, never the logits of the whole set, so memory stays flat over any number of utterances.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jiwer

from lowres import LowresError
from lowres.data.manifest import Utterance
from lowres.data.vocab import WORD_DELIMITER, tokenize
from lowres.decode import BeamSearch, DecodeOptions, decode_batches, forward_batches, greedy_texts

_SPACE = "\u2581"  # stands for a space among character tokens (a symbol, never left by normalisation)
BOUNDARY_SYMBOL = "\u2423"  # ␣: how the printed confusions show the word boundary (a bare space is invisible)
OOV_WARN_SHARE = 0.01  # warn when more than this share of the reference characters is outside the model's
#                        vocabulary: the model can never output them, so the scores measure another language
#                        or spelling (a Swahili model on Guarani data), not the model
EVAL_OUTPUTS = ("hyps.jsonl", "metrics.json")  # what an eval writes into its folder (and --overwrite replaces)


@dataclass
class ErrorCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    def add(self, other: ErrorCounts) -> None:
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.hits += other.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def rate(self) -> float:
        n = self.reference_length
        return self.errors / n if n else (0.0 if self.errors == 0 else 1.0)

    def to_dict(self) -> dict:
        return {"substitutions": self.substitutions, "deletions": self.deletions, "insertions": self.insertions,
                "hits": self.hits, "reference_length": self.reference_length}


def _counts(out) -> ErrorCounts:
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)


def char_string(text: str, units: str = "grapheme") -> str:
    return " ".join(_SPACE if t == WORD_DELIMITER else t for t in tokenize(text, units))


def score_pair(ref: str, hyp: str, units: str = "grapheme") -> tuple[ErrorCounts, ErrorCounts, list[tuple[str, str]]]:
    """Word and character error counts of one utterance, plus its character substitutions (ref, hyp)."""
    words = jiwer.process_words(ref, hyp) if ref or hyp else None
    w = _counts(words) if words else ErrorCounts()
    ref_c, hyp_c = char_string(ref, units), char_string(hyp, units)
    if not ref_c and not hyp_c:
        return w, ErrorCounts(), []
    chars = jiwer.process_words(ref_c, hyp_c)
    pairs = []
    r_tokens, h_tokens = chars.references[0], chars.hypotheses[0]
    for chunk in chars.alignments[0]:
        if chunk.type == "substitute":
            for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx),
                            range(chunk.hyp_start_idx, chunk.hyp_end_idx), strict=False):
                pairs.append((r_tokens[i].replace(_SPACE, " "), h_tokens[j].replace(_SPACE, " ")))
    return w, _counts(chars), pairs


@dataclass
class Scorer:
    """Accumulates corpus-level WER/CER, the worst utterances and the most frequent confusions."""

    units: str = "grapheme"
    keep_worst: int = 10
    words: ErrorCounts = field(default_factory=ErrorCounts)
    chars: ErrorCounts = field(default_factory=ErrorCounts)
    confusions: Counter = field(default_factory=Counter)
    count: int = 0
    empty_hypotheses: int = 0
    _worst: list = field(default_factory=list)

    def add(self, uid: str, ref: str, hyp: str) -> dict:
        w, c, pairs = score_pair(ref, hyp, self.units)
        self.words.add(w)
        self.chars.add(c)
        self.confusions.update(pairs)
        self.count += 1
        self.empty_hypotheses += not hyp.strip()
        row = {"id": uid, "reference": ref, "hypothesis": hyp, "word_errors": w.errors, "words": w.reference_length,
               "char_errors": c.errors, "chars": c.reference_length, "wer": round(w.rate, 6),
               "cer": round(c.rate, 6)}
        item = (w.errors, c.errors, uid, self.count, row)  # the count breaks ties (ids may repeat)
        if len(self._worst) < self.keep_worst:
            heapq.heappush(self._worst, item)
        else:
            heapq.heappushpop(self._worst, item)
        return row

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate

    def worst(self) -> list[dict]:
        return [row for *_, row in sorted(self._worst, key=lambda t: (-t[0], -t[1], t[2], t[3]))]

    def top_confusions(self, n: int = 10) -> list[dict]:
        return [{"reference": r, "hypothesis": h, "count": k}
                for (r, h), k in sorted(self.confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def outside_vocabulary(texts: Sequence[str], vocab, examples: int = 10) -> dict:
    """How much of ``texts`` (normalised references) the model's ``vocab`` cannot spell: ``{"share", "count",
    "chars", "symbols": [[symbol, count], ...]}`` over the characters (units, word boundaries excluded), the
    most frequent outside symbols first. A symbol counts as known when :meth:`Vocab.encode` can spell it
    (itself, or all of its code points)."""
    from lowres.data.vocab import tokenize

    outside: Counter = Counter()
    total = 0
    for text in texts:
        for unit in tokenize(text, vocab.units):
            if unit == WORD_DELIMITER:
                continue
            total += 1
            if unit not in vocab and not (len(unit) > 1 and all(c in vocab for c in unit)):
                outside[unit] += 1
    count = sum(outside.values())
    return {"share": round(count / total, 6) if total else 0.0, "count": count, "chars": total,
            "symbols": [[u, k] for u, k in sorted(outside.items(), key=lambda kv: (-kv[1], kv[0]))[:examples]]}


def _oov_warning(oov: dict, manifest: Path) -> str | None:
    if oov["share"] <= OOV_WARN_SHARE:
        return None
    symbols = ", ".join(f"{u} ×{k}" for u, k in oov["symbols"][:6])
    return (f"{100 * oov['share']:.1f}% of the reference characters of {manifest} ({oov['count']} of "
            f"{oov['chars']}) are not in the model's vocabulary ({symbols}): the model can never output them, so "
            "these scores say little about it. Check that the manifest is in the language (and spelling) the run "
            "was trained on, prepared with the same text rules.")


def lexicon_warning(coverage: dict | None) -> str | None:
    """A warning when the LM's lexicon (or its words) cannot be spelled with the model's units."""
    if not coverage or not coverage["outside"]:
        return None
    units = ", ".join(coverage["units"][:8])
    if coverage["source"] == "lexicon":
        if coverage["used"] == "lexicon entries":  # a binary model: the spellable entries are kept
            then = f"only its {coverage['kept']} other words can be recognised"
        else:
            then = (f"the beam search spells the ARPA's words itself instead ({coverage['kept']} of them can be "
                    "spelled)")
        return (f"The lexicon {coverage['path']} spells {coverage['outside']} of its {coverage['words']} words with "
                f"units the model does not have ({units}): it was not written for this run's vocabulary, so "
                f"{then}. Build the LM for the run (`lowres lm --data` with the run's prepared folder).")
    if coverage["outside"] / max(coverage["words"], 1) <= OOV_WARN_SHARE:
        return None
    return (f"{coverage['outside']} of the {coverage['words']} words of {coverage['path']} use units the model "
            f"does not have ({units}) and can never be recognised: was the LM built from text in the run's "
            "language, normalised like its transcripts (`lowres lm --data` with the run's prepared folder)?")


# ---------------------------------------------------------------------------------------------------
# scoring a set of utterances


def evaluate_utterances(model, utts: Sequence[Utterance], vocab, device, text_config, *,
                        options: DecodeOptions = DecodeOptions(), decoder=None, progress=None, on_row=None
                        ) -> tuple[Scorer, dict]:
    """Decode and score ``utts`` as ``options`` say (greedy, or ``decoder``: see :mod:`lowres.decode`);
    ``on_row(row)`` receives each utterance's result (in decoding order). Returns ``(scorer, timing)``.

    With a ``decoder``, greedy decoding is scored too (``info["greedy"]``, a :class:`Scorer`; rows get
    ``greedy_hypothesis``), so an LM run always shows what the LM changed."""
    from lowres.data.text import normalize

    scorer = Scorer(units=vocab.units)
    greedy_scorer = Scorer(units=vocab.units) if decoder is not None else None
    failed: list[str] = []
    audio_s = 0.0
    t0 = time.perf_counter()
    for idx, hyp, greedy, err in decode_batches(model, utts, vocab, device, options=options, decoder=decoder,
                                                progress=progress, greedy_too=decoder is not None):
        if hyp is None:
            failed.append(err)
            continue
        u = utts[idx]
        audio_s += u.duration
        ref = normalize(u.text, text_config)
        row = scorer.add(u.id, ref, normalize(hyp, text_config))
        if greedy_scorer is not None and greedy is not None:
            g = greedy_scorer.add(u.id, ref, normalize(greedy, text_config))
            row["greedy_hypothesis"], row["greedy_wer"] = g["hypothesis"], g["wer"]
        row["duration"] = round(u.duration, 3)
        if on_row is not None:
            on_row(row)
    seconds = time.perf_counter() - t0
    return scorer, {"audio_seconds": audio_s, "decode_seconds": seconds, "failed": failed,
                    "rtf": seconds / audio_s if audio_s else 0.0, "greedy": greedy_scorer}


# ---------------------------------------------------------------------------------------------------
# the eval command


def eval_manifests(data: Path | None, split: str, manifest: Path | None, *, tune_lm: bool = False,
                   lm: Path | None = None, fixed_weights: bool = False) -> tuple[Path, Path | None]:
    """What ``lowres eval`` scores and, with ``tune_lm``, where it tunes the LM weights: ``--data``'s ``--split``
    manifest (and its dev manifest), or ``--manifest`` (and the ``dev.jsonl`` beside it)."""
    from lowres.data.prepared import PreparedDir

    if manifest is None and data is None:
        raise LowresError("Say what to evaluate on: --data PREPARED --split test, or --manifest FILE.")
    if manifest is not None and data is not None:
        raise LowresError("Give --manifest or --data/--split, not both.")
    prepared = None
    if manifest is None:
        prepared = PreparedDir.open(data, need_vocab=False)  # eval needs the manifest, the run has its vocabulary
        manifest = prepared.require(split)
    elif not Path(manifest).is_file():
        raise LowresError(f"--manifest {manifest}: file not found.")
    if not tune_lm:
        return Path(manifest), None
    if lm is None:
        raise LowresError("--tune-lm needs --lm LM_DIR (the folder written by `lowres lm`).")
    if fixed_weights:
        raise LowresError("Give --tune-lm or fixed --lm-weight/--word-score, not both: tuning searches them.")
    tune_on = prepared.manifest("dev") if prepared is not None else Path(manifest).parent / "dev.jsonl"
    if not tune_on.is_file():
        raise LowresError(f"--tune-lm tunes on the dev split, and there is no {tune_on}. Pass --data PREPARED "
                          "(its manifests/dev.jsonl is used) or a --manifest that has a dev.jsonl beside it.")
    return Path(manifest), tune_on


def run_eval(model_dir: Path, manifest: Path, out: Path | None = None, device_name: str = "auto",
             *, options: DecodeOptions | None = None, console=None, tune_on: Path | None = None,
             overwrite: bool = False) -> dict:
    """Evaluate a fine-tuned run on a manifest: ``hyps.jsonl``, ``metrics.json`` and a printed summary.

    ``out``: the folder for them (default ``RUN/eval-NAME``, NAME the manifest's file name without ``.jsonl``).
    It is claimed with :func:`lowres.fsutil.claim_folder` before the model is loaded: an earlier eval's
    results there are replaced only with ``overwrite`` (and only its two files), a folder of other files
    never, an unwritable location is refused in one paragraph.
    ``options``: how to decode (:class:`lowres.decode.DecodeOptions`; greedy by default, beam search with
    ``options.lm``); with an LM the greedy scores are reported beside the LM ones. ``tune_on``: a dev
    manifest on which :func:`tune_lm` first searches the LM weight and word score, stores them in the LM
    folder and evaluates with them.

    ``metrics["oov_chars"]``: the share of reference characters outside the model's vocabulary
    (:func:`outside_vocabulary`); ``metrics["warnings"]``: what the summary warns of (more than
    ``OOV_WARN_SHARE`` of them outside; an LM lexicon spelled with other units)."""
    from lowres.bases import load_run
    from lowres.data.manifest import json_line, read_manifest
    from lowres.data.text import normalize
    from lowres.fsutil import atomic_write_json, atomic_write_lines
    from lowres.progress import progress_bar
    from lowres.runtime import resolve_device

    options = options if options is not None else DecodeOptions()
    if tune_on is not None and options.lm is None:
        raise LowresError("--tune-lm needs --lm LM_DIR (the folder written by `lowres lm`).")
    search = BeamSearch.from_options(options)  # the LM files are checked before the model is loaded
    if tune_on is not None and search.folder is None:
        raise LowresError("--tune-lm stores the weights it finds in the LM folder; give --lm the folder "
                          "written by `lowres lm`, not a bare model file.")
    device = resolve_device(device_name)
    manifest = Path(manifest)
    utts = list(read_manifest(manifest, require_text=True))
    if not utts:
        raise LowresError(f"{manifest} holds no utterances.")
    claim = _eval_folder(Path(out) if out else None, Path(model_dir), manifest, overwrite)
    out = claim(check_only=True)  # refused before the model is loaded, touching nothing
    run = load_run(model_dir, device=device)
    if options.precision is None:
        options = dataclasses.replace(options, precision=run.config.train.precision)
    text_config = text_config_of(run.meta)
    oov = outside_vocabulary([normalize(u.text, text_config) for u in utts], run.vocab)
    warnings = [w for w in (_oov_warning(oov, manifest),) if w]
    decoder, decoder_name = (None, "greedy")
    tuning = None
    rows: list[dict] = []
    with progress_bar(console) as progress:
        if search is not None:
            loaded = search.load(run.vocab)  # the model is read once, for tuning and decoding
            lexicon_note = lexicon_warning(loaded.coverage)
            if lexicon_note:
                warnings.append(lexicon_note)
            if tune_on is not None:
                tuning = tune_lm(run, search, tune_on, device, options=options, loaded=loaded, progress=progress)
                tuning["model"] = str(model_dir)
                stored = search.folder.store_tuned(search.mode, tuning)
                search = search.with_weights(stored.lm_weight, stored.word_score, source="tuned")
            decoder, decoder_name = search.decoder(loaded), search.name
        scorer, timing = evaluate_utterances(run.model, utts, run.vocab, device, text_config, options=options,
                                             decoder=decoder, progress=progress, on_row=rows.append)
    if not scorer.count:  # else the metrics would say WER 0% for a set of which nothing was heard
        raise LowresError(f"None of the {len(utts)} utterances of {manifest} could be decoded, e.g. "
                          f"{timing['failed'][0] if timing['failed'] else 'no audio'}. Audio paths in a manifest are "
                          "relative to the manifest's folder; check that the audio is there and readable.")
    order = {u.id: i for i, u in enumerate(utts)}
    rows.sort(key=lambda r: order[r["id"]])
    claim()  # now the earlier results (with --overwrite) give way, and a new folder is made
    atomic_write_lines(out / "hyps.jsonl", (json_line(r) for r in rows))
    metrics = {
        "wer": round(scorer.wer, 6), "cer": round(scorer.cer, 6), "num_utterances": scorer.count,
        "failed_utterances": len(timing["failed"]), "hours": round(timing["audio_seconds"] / 3600, 4),
        "rtf": round(timing["rtf"], 6), "decoder": decoder_name, "model": str(model_dir), "manifest": str(manifest),
        "device": str(device), "words": scorer.words.to_dict(), "chars": scorer.chars.to_dict(),
        "char_units": run.vocab.units, "oov_chars": oov, "worst": scorer.worst()[:5],
        "confusions": scorer.top_confusions(10),
    }
    greedy = timing.get("greedy")
    if search is not None:
        metrics["lm"] = search.settings()
        if loaded.coverage is not None:
            metrics["lm"]["lexicon_coverage"] = loaded.coverage
        if greedy is not None:
            metrics["greedy"] = {"wer": round(greedy.wer, 6), "cer": round(greedy.cer, 6),
                                 "words": greedy.words.to_dict(), "chars": greedy.chars.to_dict()}
    if tuning is not None:
        metrics["lm_tuning"] = {k: v for k, v in tuning.items() if k != "grid"}
        if Path(tune_on).resolve() == manifest.resolve():
            metrics["lm_tuning"]["note"] = "tuned and evaluated on the same manifest: the WER is optimistic"
    if timing["failed"]:
        metrics["failures"] = timing["failed"][:20]
    metrics["warnings"] = warnings
    atomic_write_json(out / "metrics.json", metrics)
    if console is not None:
        print_eval(metrics, out, console)
    return metrics


def _eval_folder(out: Path | None, model_dir: Path, manifest: Path, overwrite: bool):
    """``claim(check_only=False) -> out``: :func:`lowres.fsutil.claim_folder` for an eval's folder (``out``, or
    the default ``RUN/eval-NAME``), with messages that say which earlier results are there."""
    from lowres.fsutil import claim_folder

    default = out is None
    folder = model_dir / f"eval-{manifest.stem}" if default else out
    hint = (f"An eval writes {' and '.join(EVAL_OUTPUTS)} into a folder of its own: choose another --out.")
    if (folder / "metrics.json").is_file():
        earlier = ""
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
            before = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            earlier = f" of {before['manifest']} (WER {100 * before['wer']:.2f}%)"
        hint = (f"They are the results of an earlier eval{earlier}. Pass --overwrite to replace them, or --out to "
                "write these somewhere else.")

    def clear(path: Path) -> None:
        for name in EVAL_OUTPUTS:
            (path / name).unlink(missing_ok=True)

    def claim(check_only: bool = False) -> Path:
        try:
            claim_folder(folder, what="eval results", overwrite=overwrite, hint=hint,
                         is_ours=lambda p: (p / "metrics.json").is_file(), not_ours="no metrics.json of an eval",
                         clear=clear, check_only=check_only)
        except LowresError as exc:
            if default:  # the user gave no --out: say where eval writes by default
                raise LowresError(f"eval writes its results into {folder} when no --out is given. {exc}") from None
            raise
        return folder

    return claim


# ---------------------------------------------------------------------------------------------------
# LM weight tuning

TUNE_LM_WEIGHTS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
TUNE_WORD_SCORES = (-2.0, -1.0, 0.0, 1.0, 2.0)
TUNE_CACHE_BYTES = 512 * 2**20  # dev log-probs held in memory while tuning; a larger dev set is subsampled
TUNE_FRAMES_PER_SECOND = 50  # wav2vec 2.0 / HuBERT / WavLM frame rate, to size the cache before decoding


def tune_lm(run, search: BeamSearch, dev_manifest: Path, device, *, options: DecodeOptions = DecodeOptions(),
            loaded=None, progress=None, lm_weights=None, word_scores=None) -> dict:
    """Grid search of LM weight × word score (default ``TUNE_LM_WEIGHTS`` × ``TUNE_WORD_SCORES``) by dev WER
    (then CER, then the smaller weight and score) with ``search``'s beam search; ``loaded``: its
    :meth:`~lowres.decode.BeamSearch.load` for ``run``'s vocabulary, when the caller has it already.

    The model runs once over the dev set; its logits are kept (at most ``TUNE_CACHE_BYTES``: a larger dev
    set is tuned on a seeded random subset that fits, and the result says so) and decoded once per grid
    point. Returns the tuned.json entry: best ``lm_weight`` and ``word_score``, their dev WER/CER, the
    greedy dev WER, the grid and what it was tuned on. ``search`` itself is left as it is."""
    import random

    from lowres.data.manifest import read_manifest
    from lowres.data.text import normalize

    lm_weights = TUNE_LM_WEIGHTS if lm_weights is None else lm_weights
    word_scores = TUNE_WORD_SCORES if word_scores is None else word_scores
    dev_manifest = Path(dev_manifest)
    utts = list(read_manifest(dev_manifest, require_text=True))
    if not utts:
        raise LowresError(f"{dev_manifest} holds no utterances to tune the LM weights on.")
    vocab = run.vocab
    text_config = text_config_of(run.meta)
    bytes_per_s = TUNE_FRAMES_PER_SECOND * len(vocab) * 4
    total = len(utts)
    if sum(u.duration for u in utts) * bytes_per_s > TUNE_CACHE_BYTES:
        order = list(range(total))
        random.Random(0).shuffle(order)
        keep, used = [], 0.0
        for i in order:
            cost = utts[i].duration * bytes_per_s
            if used + cost <= TUNE_CACHE_BYTES:
                keep.append(i)
                used += cost
        utts = [utts[i] for i in sorted(keep)]
    loaded = loaded if loaded is not None else search.load(vocab)
    if options.precision is None:
        options = dataclasses.replace(options, precision=run.config.train.precision)
    cache: list[tuple[int, object]] = []  # (utterance index, logits (T, V) float32)
    greedy = Scorer(units=vocab.units)
    refs = [normalize(u.text, text_config) for u in utts]
    for indices, logits, frames, _errors in forward_batches(run.model, utts, device, options=options,
                                                            progress=progress):
        if not indices:
            continue
        for k, text in enumerate(greedy_texts(logits, frames, vocab)):
            greedy.add(utts[indices[k]].id, refs[indices[k]], normalize(text, text_config))
        for k, idx in enumerate(indices):
            cache.append((idx, logits[k, : int(frames[k])].clone()))
    if not cache:
        raise LowresError(f"None of the utterances of {dev_manifest} could be decoded to tune the LM weights.")
    import torch

    grid: list[dict] = []
    task = progress.add_task("tuning LM weights", total=len(lm_weights) * len(word_scores), unit="points") \
        if progress is not None else None
    for w in lm_weights:
        for ws in word_scores:
            decode = search.with_weights(w, ws).decoder(loaded)
            scorer = Scorer(units=vocab.units)
            for idx, logits in cache:
                hyp = decode(logits[None], torch.tensor([logits.shape[0]]))[0]
                scorer.add(utts[idx].id, refs[idx], normalize(hyp, text_config))
            grid.append({"lm_weight": w, "word_score": ws, "wer": round(scorer.wer, 6), "cer": round(scorer.cer, 6)})
            if task is not None:
                progress.advance(task)
    best = min(grid, key=lambda g: (g["wer"], g["cer"], g["lm_weight"], abs(g["word_score"])))
    return {
        "lm_weight": best["lm_weight"], "word_score": best["word_score"], "dev_wer": best["wer"],
        "dev_cer": best["cer"], "greedy_dev_wer": round(greedy.wer, 6), "greedy_dev_cer": round(greedy.cer, 6),
        "mode": search.mode, "beam": search.beam_size, "model": None,  # run_eval fills in the run folder
        "dev_manifest": str(dev_manifest), "utterances": len(cache), "dev_utterances": total,
        "note": None if len(utts) == total else f"tuned on a random {len(cache)} of {total} dev utterances (the "
                f"cached log-probabilities are capped at {TUNE_CACHE_BYTES // 2**20} MiB)",
        "grid": grid,
    }


def text_config_of(meta: dict):
    """The normalisation a run's data was prepared with (saved in its config.json)."""
    from lowres.data.text import text_config_from_dict

    return text_config_from_dict(meta.get("text"))


def visible(unit: str) -> str:
    """A unit as the printed tables show it: the word boundary (a space) as ``BOUNDARY_SYMBOL``."""
    return BOUNDARY_SYMBOL if unit == " " else unit


def print_eval(metrics: dict, out: Path, console) -> None:
    from rich.table import Table

    from lowres.progress import plain, say  # ids, paths and transcripts are text, not markup

    table = Table(title=plain(f"eval: {metrics['manifest']}"))
    for col in ("WER", "CER", "utterances", "hours", "RTF", "decoder"):
        table.add_column(col, justify="right")
    table.add_row(f"{100 * metrics['wer']:.2f}%", f"{100 * metrics['cer']:.2f}%", str(metrics["num_utterances"]),
                  f"{metrics['hours']:.3f}", f"{metrics['rtf']:.3f}", metrics["decoder"])
    console.print(table)
    if metrics.get("greedy"):
        g = metrics["greedy"]
        say(console, f"greedy decoding of the same outputs: WER {100 * g['wer']:.2f}%  CER {100 * g['cer']:.2f}%")
    if metrics.get("lm_tuning"):
        t = metrics["lm_tuning"]
        say(console, f"LM weights tuned on {t['dev_manifest']} ({t['utterances']} utterances): lm weight "
                     f"{t['lm_weight']:g}, word score {t['word_score']:g} (dev WER {100 * t['dev_wer']:.2f}%, "
                     f"greedy {100 * t['greedy_dev_wer']:.2f}%); stored in the LM folder")
        for note in (t.get("note"),):
            if note:
                say(console, f"note: {note}")
    if metrics["worst"]:
        worst = Table(title="worst utterances", show_lines=False)
        for col in ("id", "WER", "reference", "hypothesis"):
            worst.add_column(col, overflow="fold")
        for row in metrics["worst"]:
            worst.add_row(plain(row["id"]), f"{100 * row['wer']:.0f}%", plain(row["reference"]),
                          plain(row["hypothesis"] or "∅"))
        console.print(worst)
    if metrics["confusions"]:
        conf = ", ".join(f"{visible(c['reference'])}→{visible(c['hypothesis'])} ×{c['count']}"
                         for c in metrics["confusions"])
        say(console, f"most frequent character confusions ({BOUNDARY_SYMBOL} is the word boundary): {conf}")
    oov = metrics.get("oov_chars")
    if oov is not None:
        say(console, f"reference characters outside the model's vocabulary: {100 * oov['share']:.2f}%")
    for warning in metrics.get("warnings", ()):
        say(console, ("warning:", "yellow"), f" {warning}")
    if metrics.get("failed_utterances"):
        say(console, (f"{metrics['failed_utterances']} utterance(s) could not be decoded", "yellow"),
            " (see metrics.json)")
    say(console, f"hypotheses: {out / 'hyps.jsonl'}   metrics: {out / 'metrics.json'}")
