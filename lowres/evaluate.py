"""``run_eval()``: WER/CER (jiwer), per-utterance hypotheses, error analysis, real-time factor.

References and hypotheses go through the same normalisation as ``prepare`` (the run records its settings).
CER counts the vocabulary's units (grapheme clusters by default, spaces included, as jiwer's CER counts
spaces). Decoding streams batch by batch: only counts and the per-utterance strings are kept, never the
logits of the whole set.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jiwer

from lowres import LowresError
from lowres.data.manifest import Utterance
from lowres.data.vocab import WORD_DELIMITER, tokenize

_SPACE = "\u2581"  # stands for a space among character tokens (a symbol, never left by normalisation)


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
        item = (w.errors, c.errors, uid, row)
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
        return [row for *_, row in sorted(self._worst, key=lambda t: (-t[0], -t[1], t[2]))]

    def top_confusions(self, n: int = 10) -> list[dict]:
        return [{"reference": r, "hypothesis": h, "count": k}
                for (r, h), k in sorted(self.confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


# ---------------------------------------------------------------------------------------------------
# decoding a set of utterances


def decode_utterances(model, utts: Sequence[Utterance], vocab, device, batch_seconds: float = 120.0,
                      workers: int = -1, decoder=None, precision: str = "auto", progress=None
                      ) -> Iterator[tuple[int, str | None, str]]:
    """``(index, hypothesis or None, error)`` for each utterance, batch by batch (duration-sorted).

    ``decoder`` maps (logits (B, T, V) float32 CPU, frame lengths (B,)) to lists of texts; greedy by default.
    """
    import torch

    from lowres.data.batching import UtteranceDataset, eval_batches, loader
    from lowres.model.ctc import greedy_ids
    from lowres.runtime import autocast

    dataset = UtteranceDataset(utts)
    batches = eval_batches(utts, batch_seconds)
    task = progress.add_task("decoding", total=len(utts), unit="utt") if progress is not None else None
    was_training = model.training
    model.eval()
    try:
        for batch in loader(dataset, batches, workers):
            for err in batch.errors or []:
                yield -1, None, err
            if not batch.indices:
                continue
            with torch.inference_mode(), autocast(device, precision):
                logits, frames = model(batch.waves.to(device), batch.lengths.to(device))
            logits = logits.float().cpu()
            if decoder is None:
                texts = [vocab.decode(ids) for ids in greedy_ids(logits, frames)]
            else:
                texts = decoder(logits, frames.cpu())
            for idx, text in zip(batch.indices, texts, strict=True):
                yield idx, text, ""
            if task is not None:
                progress.advance(task, len(batch.indices) + len(batch.errors or []))
    finally:
        model.train(was_training)


def evaluate_utterances(model, utts: Sequence[Utterance], vocab, device, text_config, batch_seconds: float = 120.0,
                        workers: int = -1, decoder=None, precision: str = "auto", progress=None,
                        on_row=None) -> tuple[Scorer, dict]:
    """Decode and score ``utts``; ``on_row(row)`` receives each utterance's result (in decoding order)."""
    from lowres.data.text import normalize

    scorer = Scorer(units=vocab.units)
    failed: list[str] = []
    audio_s = 0.0
    t0 = time.perf_counter()
    for idx, hyp, err in decode_utterances(model, utts, vocab, device, batch_seconds, workers, decoder, precision,
                                           progress):
        if hyp is None:
            failed.append(err)
            continue
        u = utts[idx]
        audio_s += u.duration
        row = scorer.add(u.id, normalize(u.text, text_config), normalize(hyp, text_config))
        row["duration"] = round(u.duration, 3)
        if on_row is not None:
            on_row(row)
    seconds = time.perf_counter() - t0
    return scorer, {"audio_seconds": audio_s, "decode_seconds": seconds, "failed": failed,
                    "rtf": seconds / audio_s if audio_s else 0.0}


# ---------------------------------------------------------------------------------------------------
# the eval command


def run_eval(model_dir: Path, manifest: Path, out: Path | None = None, device_name: str = "auto",
             batch_seconds: float = 120.0, workers: int = -1, lm=None, console=None) -> dict:
    """Evaluate a fine-tuned run on a manifest: ``hyps.jsonl``, ``metrics.json`` and a printed summary."""
    from lowres.data.manifest import read_manifest
    from lowres.fsutil import atomic_write_json, atomic_write_lines
    from lowres.model.build import load_run
    from lowres.progress import progress_bar
    from lowres.runtime import resolve_device

    device = resolve_device(device_name)
    manifest = Path(manifest)
    utts = list(read_manifest(manifest, require_text=True))
    if not utts:
        raise LowresError(f"{manifest} holds no utterances.")
    run = load_run(model_dir, device=device)
    text_config = text_config_of(run.meta)
    out = Path(out) if out else Path(model_dir) / f"eval-{manifest.stem}"
    out.mkdir(parents=True, exist_ok=True)
    decoder, decoder_name = (None, "greedy")
    if lm is not None:
        decoder, decoder_name = lm.make_decoder(run.vocab)
    rows: list[dict] = []
    with progress_bar(console) as progress:
        scorer, timing = evaluate_utterances(run.model, utts, run.vocab, device, text_config, batch_seconds, workers,
                                             decoder, run.config.train.precision, progress, rows.append)
    order = {u.id: i for i, u in enumerate(utts)}
    rows.sort(key=lambda r: order[r["id"]])
    atomic_write_lines(out / "hyps.jsonl", (json.dumps(r, ensure_ascii=False) for r in rows))
    metrics = {
        "wer": round(scorer.wer, 6), "cer": round(scorer.cer, 6), "num_utterances": scorer.count,
        "failed_utterances": len(timing["failed"]), "hours": round(timing["audio_seconds"] / 3600, 4),
        "rtf": round(timing["rtf"], 6), "decoder": decoder_name, "model": str(model_dir), "manifest": str(manifest),
        "device": str(device), "words": scorer.words.to_dict(), "chars": scorer.chars.to_dict(),
        "char_units": run.vocab.units, "worst": scorer.worst()[:5], "confusions": scorer.top_confusions(10),
    }
    if timing["failed"]:
        metrics["failures"] = timing["failed"][:20]
    atomic_write_json(out / "metrics.json", metrics)
    if console is not None:
        print_eval(metrics, out, console)
    return metrics


def text_config_of(meta: dict):
    """The normalisation a run's data was prepared with (saved in its config.json)."""
    from lowres.data.text import text_config_from_dict

    return text_config_from_dict(meta.get("text"))


def print_eval(metrics: dict, out: Path, console) -> None:
    from rich.table import Table

    table = Table(title=f"eval: {metrics['manifest']}")
    for col in ("WER", "CER", "utterances", "hours", "RTF", "decoder"):
        table.add_column(col, justify="right")
    table.add_row(f"{100 * metrics['wer']:.2f}%", f"{100 * metrics['cer']:.2f}%", str(metrics["num_utterances"]),
                  f"{metrics['hours']:.3f}", f"{metrics['rtf']:.3f}", metrics["decoder"])
    console.print(table)
    if metrics["worst"]:
        worst = Table(title="worst utterances", show_lines=False)
        for col in ("id", "WER", "reference", "hypothesis"):
            worst.add_column(col, overflow="fold")
        for row in metrics["worst"]:
            worst.add_row(row["id"], f"{100 * row['wer']:.0f}%", row["reference"], row["hypothesis"] or "∅")
        console.print(worst)
    if metrics["confusions"]:
        conf = ", ".join(f"{c['reference']}→{c['hypothesis']} ×{c['count']}" for c in metrics["confusions"])
        console.print(f"most frequent character confusions: {conf}")
    if metrics.get("failed_utterances"):
        console.print(f"[yellow]{metrics['failed_utterances']} utterance(s) could not be decoded[/yellow] "
                      "(see metrics.json)")
    console.print(f"hypotheses: {out / 'hyps.jsonl'}   metrics: {out / 'metrics.json'}")
