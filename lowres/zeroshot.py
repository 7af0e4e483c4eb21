"""Whisper without fine-tuning: its own decoder transcribes a manifest (``lowres eval --whisper NAME --language
CODE``), scored through the same normalisation and metrics as a fine-tuned run, so the real-speech tables can set
"Whisper, no fine-tuning" beside lowres's rows.

Decoding is greedy, as Whisper's own ``temperature=0`` first pass: the prompt ``<|startoftranscript|>
<|LANG|> <|transcribe|> <|notimestamps|>`` (English-only models: ``<|startoftranscript|> <|notimestamps|>``), each
clip's log-mel over Whisper's 30-s window, special and timestamp tokens and Whisper's suppressed tokens never
emitted, at most 224 tokens a clip. Clips longer than 30 s are reported as failures, as Whisper reads 30 s at a time.
"""

from __future__ import annotations

import time
from pathlib import Path

from lowres import LowresError

MAX_TOKENS = 224  # Whisper's sample_len: half its 448-token context


def transcribe_batch(gen, waves, lengths, language: str, device) -> list[str]:
    """Greedy transcripts of a padded batch (B, T) at 16 kHz with lengths (B,)."""
    return transcribe_scored(gen, waves, lengths, language, device)[0]


def transcribe_scored(gen, waves, lengths, language: str, device) -> tuple[list[str], list[float]]:
    """Greedy transcripts of a padded batch and each one's confidence: the mean probability the decoder gave
    the tokens it chose, the end-of-text token included (0-1, length-normalised; a transcript cut at
    ``MAX_TOKENS`` without an end scores only its tokens)."""
    import inspect

    import torch

    from lowres.audiotime import FRAME_SAMPLES
    from lowres.model.whisper import LogMel

    model = gen.model
    # the decoder's key/value cache: ``cache`` since transformers 5, ``past_key_values`` before
    cache = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    mel_of = LogMel(model.config.num_mel_bins).to(device)
    window = model.config.max_source_positions * FRAME_SAMPLES
    with torch.inference_mode():
        mel, _ = mel_of(waves.to(device), lengths.to(device), window)
        encoded = model.model.encoder(input_features=mel).last_hidden_state
        lang = gen.language(language)
        prompt = [gen.sot] + ([lang, gen.transcribe] if lang is not None else []) + [gen.no_timestamps]
        b = len(waves)
        tokens = torch.tensor([prompt] * b, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        prob_sum = torch.zeros(b, dtype=torch.float64, device=device)
        count = torch.zeros(b, dtype=torch.float64, device=device)
        past, new = None, tokens
        for step in range(MAX_TOKENS):
            out = model(encoder_outputs=(encoded,), decoder_input_ids=new, use_cache=True, **{cache: past})
            logits, past = out.logits[:, -1].float(), out[cache]
            logits[:, gen.eot + 1:] = -torch.inf  # special and timestamp tokens
            if gen.suppress:
                logits[:, list(gen.suppress)] = -torch.inf
            if step == 0 and gen.suppress_begin:
                logits[:, list(gen.suppress_begin)] = -torch.inf
            nxt = logits.argmax(dim=-1)
            chosen = logits.softmax(dim=-1).gather(1, nxt[:, None])[:, 0].double()
            prob_sum += torch.where(done, 0.0, chosen)
            count += (~done).double()
            nxt[done] = gen.eot
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == gen.eot
            new = nxt[:, None]
            if bool(done.all()):
                break
    texts = []
    for row in tokens[:, len(prompt):].tolist():
        ids = row[: row.index(gen.eot)] if gen.eot in row else row
        texts.append(gen.tokenizer.decode(ids).strip())
    return texts, (prob_sum / count.clamp(min=1)).tolist()


def decode_batches(gen, utts, language: str, device, batch_seconds: float, progress=None):
    """Whisper's greedy transcripts of ``utts`` batch by batch (duration-sorted, ``batch_seconds`` of audio
    each): ``(utterance indices, texts, confidences, errors)``; a clip longer than Whisper's 30-s window or one
    that could not be read is an error, not decoded."""
    from lowres.audiotime import FRAME_S
    from lowres.data.batching import UtteranceDataset, eval_batches, loader

    limit = gen.model.config.max_source_positions * FRAME_S
    batches = [[i for i in batch if utts[i].duration <= limit] for batch in eval_batches(utts, batch_seconds)]
    task = progress.add_task(f"Whisper ({gen.name}) decoding", total=len(utts), unit="utt") \
        if progress is not None else None
    too_long = [f"{u.audio_filepath}: {u.duration:.1f} s is longer than Whisper's {limit:g}-s window" for u in utts
                if u.duration > limit]
    if too_long:
        yield [], [], [], too_long
        if task is not None:
            progress.advance(task, len(too_long))
    for batch in loader(UtteranceDataset(utts), [b for b in batches if b], 0):
        texts, confidences = transcribe_scored(gen, batch.waves, batch.lengths, language, device) \
            if batch.indices else ([], [])
        yield list(batch.indices), texts, confidences, list(batch.errors or [])
        if task is not None:
            progress.advance(task, len(batch.indices) + len(batch.errors or []))


def run_whisper_eval(source: str, manifest: Path, out: Path, language: str, text_config, *, device_name: str = "auto",
                     batch_seconds: float = 120.0, overwrite: bool = False, console=None) -> dict:
    """Whisper's zero-shot transcripts of ``manifest`` scored like ``lowres eval``: ``out/hyps.jsonl`` and
    ``out/metrics.json`` (decoder ``whisper-greedy``); returns the metrics."""
    from lowres.bases.whisper import load_generator
    from lowres.data.manifest import json_line, read_manifest
    from lowres.data.text import normalize
    from lowres.evaluate import Scorer, _eval_folder, print_eval
    from lowres.fsutil import atomic_write_json, atomic_write_lines
    from lowres.progress import progress_bar
    from lowres.runtime import resolve_device

    manifest = Path(manifest)
    utts = list(read_manifest(manifest, require_text=True))
    if not utts:
        raise LowresError(f"{manifest} holds no utterances.")
    claim = _eval_folder(Path(out), Path(out), manifest, overwrite)
    claim(check_only=True)
    device = resolve_device(device_name)
    gen = load_generator(source)
    gen.language(language)  # an unknown language is refused before any decoding
    gen.model.to(device)
    scorer, rows, failed = Scorer(), [], []
    audio_s, t0 = 0.0, time.perf_counter()
    with progress_bar(console) as progress:
        for indices, texts, _confidences, errors in decode_batches(gen, utts, language, device, batch_seconds,
                                                                   progress):
            failed += errors
            for i, hyp in zip(indices, texts, strict=True):
                u = utts[i]
                audio_s += u.duration
                row = scorer.add(u.id, normalize(u.text, text_config), normalize(hyp, text_config))
                row["raw_hypothesis"], row["duration"] = hyp, round(u.duration, 3)
                rows.append(row)
    if not scorer.count:
        raise LowresError(f"None of the {len(utts)} utterances of {manifest} could be decoded, e.g. "
                          f"{failed[0] if failed else 'no audio'}.")
    seconds = time.perf_counter() - t0
    order = {u.id: i for i, u in enumerate(utts)}
    rows.sort(key=lambda r: order[r["id"]])
    out = claim()
    atomic_write_lines(out / "hyps.jsonl", (json_line(r) for r in rows))
    metrics = {"wer": round(scorer.wer, 6), "cer": round(scorer.cer, 6), "num_utterances": scorer.count,
               "failed_utterances": len(failed), "hours": round(audio_s / 3600, 4),
               "rtf": round(seconds / audio_s, 6) if audio_s else 0.0, "decoder": "whisper-greedy",
               "model": gen.name, "language": language, "manifest": str(manifest), "device": str(device),
               "words": scorer.words.to_dict(), "chars": scorer.chars.to_dict(), "worst": scorer.worst()[:5],
               "confusions": scorer.top_confusions(10), "warnings": []}
    if failed:
        metrics["failures"] = failed[:20]
    atomic_write_json(out / "metrics.json", metrics)
    if console is not None:
        print_eval(metrics, out, console)
    return metrics
