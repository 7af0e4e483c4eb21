"""The ``lowres`` command line: a thin Typer layer over the library functions.

Each command parses its arguments, resolves the configuration and calls one library function. Heavy
imports (torch, torchaudio, peft) happen inside the commands, so ``lowres --help`` is instant. A
:class:`lowres.LowresError` ends the command with its message and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from enum import StrEnum
from pathlib import Path

import typer

from lowres import LowresError

app = typer.Typer(
    name="lowres",
    help=(
        "Speech recognition for languages with almost no transcribed audio, the wav2vec 2.0 way: "
        "prepare corpora, adapt a self-supervised model to unlabeled in-language audio, fine-tune LoRA + CTC "
        "on 10 minutes to 10 hours of transcripts, evaluate.\n\n"
        "Start with:  lowres demo        (the whole pipeline on a synthetic Swahili corpus, CPU, no downloads)"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout():
    from rich.console import Console

    return Console(highlight=False)


def friendly(fn):
    """User mistakes (LowresError) end in one clear paragraph and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LowresError as exc:
            _stderr().print(f"[bold red]error:[/bold red] {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _stderr().print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper


def main() -> None:
    app()


def _version(value: bool):
    if value:
        from lowres import __version__

        typer.echo(f"lowres {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    """Speech recognition for languages with almost no transcribed audio."""


# ---------------------------------------------------------------------------------------------------
# prepare


class Format(StrEnum):
    librispeech = "librispeech"
    commonvoice = "commonvoice"
    kaldi = "kaldi"
    table = "table"


class Emit(StrEnum):
    fairseq = "fairseq"


@app.command(no_args_is_help=True)
@friendly
def prepare(
    corpus: Path | None = typer.Argument(None, help="Corpus folder (or table file). Optional with --unlabeled."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must be empty or new, unless --overwrite)."),
    format: Format | None = typer.Option(None, "--format", "-f", help="Corpus layout; detected when unambiguous."),
    unlabeled: Path | None = typer.Option(None, help="Folder of unlabeled audio for `lowres adapt`."),
    seed: int = typer.Option(0, help="Seed for the split draws (same seed, same splits)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace lowres's outputs in a non-empty --out."),
    emit: list[Emit] = typer.Option([], metavar="FORMAT", help="Also write another tool's files: fairseq (.tsv/.ltr/.wrd)."),
    dev: list[Path] = typer.Option([], metavar="DIR", help="LibriSpeech: a dev folder (repeatable), e.g. LibriSpeech/dev-clean."),
    test: list[Path] = typer.Option([], metavar="DIR", help="LibriSpeech: a test folder (repeatable)."),
    audio_column: str | None = typer.Option(None, help="Table: the audio path column."),
    text_column: str | None = typer.Option(None, help="Table: the transcript column."),
    speaker_column: str | None = typer.Option(None, help="Table: the speaker column."),
    cv_pool: str = typer.Option("train", help="Common Voice training pool: train, or validated minus dev/test."),
    lang: str | None = typer.Option(None, help="Shipped per-language text rules, e.g. haw, tr, sw."),
    text_rules: Path | None = typer.Option(None, help="Your own text rules (TOML; see README)."),
    keep_case: bool = typer.Option(False, "--keep-case", help="Do not lower-case transcripts."),
    unicode: str = typer.Option("NFKC", help="Unicode normal form: NFKC or NFC."),
    digits: str = typer.Option("keep", help="Digits in transcripts: keep or drop (always reported)."),
    no_apostrophes: bool = typer.Option(False, "--no-apostrophes", help="Remove apostrophes inside words too."),
    min_char_count: int = typer.Option(2, help="Symbols seen fewer times in training become <unk>."),
    units: str = typer.Option("grapheme", help="Vocabulary symbols: grapheme (clusters) or codepoint."),
    min_duration: float = typer.Option(0.25, help="Reject labeled clips shorter than this (s)."),
    max_duration: float = typer.Option(40.0, help="Reject labeled clips longer than this (s)."),
    min_segment: float = typer.Option(2.0, help="Unlabeled: shortest piece (s)."),
    max_segment: float = typer.Option(15.6, help="Unlabeled: longest piece (s); longer recordings are cut."),
    dev_fraction: float = typer.Option(0.1, help="Share of the pool carved out as dev when the corpus has none."),
    test_fraction: float = typer.Option(0.1, help="Share carved out as test when the corpus has none."),
    workers: int = typer.Option(0, help="Threads probing audio (0 = automatic)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no table."),
):
    """Corpus → manifests, character vocabulary and nested 10min ⊂ 1h ⊂ 10h ⊂ full splits.

    Example:  lowres prepare corpora/cv-sw --out prepared/sw --unlabeled radio/

    Writes OUT/manifests/{10min,1h,10h,full,dev,test}.jsonl, OUT/unlabeled.jsonl, OUT/vocab.json,
    OUT/dict.ltr.txt, OUT/rejects.jsonl and OUT/prepare_report.json.
    """
    from lowres.config import PrepareConfig
    from lowres.data.corpora import CorpusOptions
    from lowres.data.prepare import prepare as run_prepare
    from lowres.data.prepare import print_summary
    from lowres.data.text import LanguageRules, load_rules

    if lang and text_rules:
        raise LowresError("Give --lang or --text-rules, not both.")
    rules = load_rules(text_rules) if text_rules else load_rules(lang) if lang else LanguageRules()
    try:
        cfg = PrepareConfig(
            seed=seed, min_duration_s=min_duration, max_duration_s=max_duration, segment_min_s=min_segment,
            segment_max_s=max_segment, dev_fraction=dev_fraction, test_fraction=test_fraction,
            min_char_count=min_char_count, units=units, unicode_form=unicode.upper(), lowercase=not keep_case,
            keep_apostrophes=not no_apostrophes, digits=digits, workers=workers,
            emit=tuple(e.value for e in emit),
        )
    except ValueError as exc:
        raise LowresError(str(exc)) from None
    opts = CorpusOptions(dev_dirs=tuple(dev), test_dirs=tuple(test), audio_column=audio_column,
                         text_column=text_column, speaker_column=speaker_column, cv_pool=cv_pool)
    console = None if quiet else _stdout()
    result = run_prepare(corpus, out, cfg, fmt=format.value if format else None, unlabeled=unlabeled,
                         corpus_opts=opts, rules=rules, overwrite=overwrite, console=console)
    if console is not None:
        print_summary(result, console)



# ---------------------------------------------------------------------------------------------------
# finetune / eval / transcribe / export


@app.command(no_args_is_help=True)
@friendly
def finetune(
    data: Path = typer.Option(..., "--data", "-d", help="Folder written by `lowres prepare`."),
    split: str = typer.Option("1h", "--split", "-s", help="Labeled split: 10min, 1h, 10h or full (also picks the recipe)."),
    base: str | None = typer.Option(None, "--base", "-b", help="Backbone: a name (wav2vec2-base, xls-r-300m, "
                                    "hubert-base, wavlm-base-plus, tiny, ...), a Hugging Face folder or a lowres run folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (new or empty, unless --resume / --overwrite)."),
    recipe: str | None = typer.Option(None, "--recipe", help="TOML file merged over the split's shipped recipe."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override one setting, e.g. "
                                   "--set optim.lr=1e-4 --set model.mask_prob=0.5 (repeatable)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer updates (train.max_steps)."),
    no_lora: bool = typer.Option(False, "--no-lora", help="Fine-tune the whole transformer (the baseline) instead of LoRA."),
    lora_rank: int | None = typer.Option(None, "--lora-rank", help="LoRA rank (lora.rank, default 8)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (optim.lr)."),
    batch_seconds: float | None = typer.Option(None, "--batch-seconds", help="Audio seconds per micro-batch."),
    accumulate: int | None = typer.Option(None, "--accumulate", help="Micro-batches per update."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Dev WER every N updates (0 = at the end)."),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed (train.seed)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the lowres run already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """LoRA adapters + a CTC head on a labeled split (the wav2vec 2.0 fine-tuning recipe).

    Example:  lowres finetune --data prepared/sw --split 1h --base xls-r-300m --out runs/sw-1h

    Writes OUT/model.safetensors (LoRA + head, best by dev WER), OUT/config.json, OUT/vocab.json,
    OUT/metrics.jsonl, OUT/learning_curve.png and OUT/checkpoints/ for --resume.
    """
    from lowres.config import resolve_finetune
    from lowres.train.finetune import run_finetune

    if not resume and not base:
        raise LowresError("--base is required: a backbone name (e.g. xls-r-300m, wav2vec2-base, tiny), a Hugging "
                          "Face model folder or a lowres run folder.")
    flags = {"data": str(data), "base": base, "train.max_steps": max_steps, "lora.rank": lora_rank,
             "optim.lr": lr, "train.batch_seconds": batch_seconds, "train.accumulate": accumulate,
             "train.eval_every": eval_every, "train.device": device, "train.seed": seed}
    if no_lora:
        flags["lora.enabled"] = False
    try:
        cfg = resolve_finetune(split, recipe, tuple(set_), flags)
    except ValueError as exc:
        raise LowresError(f"Invalid setting: {exc}") from None
    console = None if quiet else _stdout()
    run_finetune(cfg, out, resume=resume, overwrite=overwrite, console=console,
                 max_steps_override=max_steps if resume else None)


def _load_lm(lm: Path | None, lexicon: Path | None, lm_weight: float, word_score: float, beam: int):
    if lm is None:
        if lexicon is not None:
            raise LowresError("--lexicon needs --lm.")
        return None
    from lowres.decode import LMDecoding

    return LMDecoding(lm, lexicon=lexicon, lm_weight=lm_weight, word_score=word_score, beam_size=beam)


@app.command("eval", no_args_is_help=True)
@friendly
def eval_(
    model: Path = typer.Option(..., "--model", "-m", help="A run folder written by `lowres finetune`."),
    data: Path | None = typer.Option(None, "--data", "-d", help="A prepared folder (with --split)."),
    split: str = typer.Option("test", "--split", "-s", help="With --data: test, dev, or any manifest name there."),
    manifest: Path | None = typer.Option(None, "--manifest", help="A manifest file (instead of --data/--split)."),
    lm: Path | None = typer.Option(None, "--lm", help="KenLM model (.arpa or .bin) for beam search; needs the lm extra."),
    lexicon: Path | None = typer.Option(None, "--lexicon", help="Word lexicon for the LM decoder (default: lexicon-free)."),
    lm_weight: float = typer.Option(0.5, "--lm-weight", help="LM weight in beam search."),
    word_score: float = typer.Option(0.0, "--word-score", help="Per-word bonus in beam search."),
    beam: int = typer.Option(50, "--beam", help="Beam size."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where hyps.jsonl and metrics.json go (default RUN/eval-NAME)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_seconds: float = typer.Option(120.0, "--batch-seconds", help="Audio seconds per decoding batch."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print only the metrics line."),
):
    """WER and CER of a fine-tuned run (greedy CTC, or beam search with a KenLM model).

    Example:  lowres eval --model runs/sw-1h --data prepared/sw --split test

    Writes hyps.jsonl (reference, hypothesis, errors per utterance) and metrics.json (wer, cer,
    num_utterances, rtf, worst utterances, character confusions).
    """
    from lowres.evaluate import run_eval

    if manifest is None and data is None:
        raise LowresError("Say what to evaluate on: --data PREPARED --split test, or --manifest FILE.")
    if manifest is not None and data is not None:
        raise LowresError("Give --manifest or --data/--split, not both.")
    if manifest is None:
        manifest = Path(data) / "manifests" / f"{split}.jsonl"
        if not manifest.is_file():
            names = sorted(p.stem for p in (Path(data) / "manifests").glob("*.jsonl"))
            raise LowresError(f"No split {split!r} in {data} (no {manifest}). Available: {', '.join(names) or 'none'}.")
    elif not manifest.is_file():
        raise LowresError(f"--manifest {manifest}: file not found.")
    decoder = _load_lm(lm, lexicon, lm_weight, word_score, beam)
    console = _stdout()
    metrics = run_eval(model, manifest, out, device, batch_seconds, lm=decoder, console=None if quiet else console)
    if quiet:
        console.print(f"WER {100 * metrics['wer']:.2f}%  CER {100 * metrics['cer']:.2f}%  "
                      f"({metrics['num_utterances']} utterances, RTF {metrics['rtf']:.3f})")


@app.command(no_args_is_help=True)
@friendly
def transcribe(
    audio: list[Path] = typer.Argument(..., help="Audio files (wav, flac, ogg, mp3), any length."),
    model: Path = typer.Option(..., "--model", "-m", help="A run folder written by `lowres finetune`."),
    lm: Path | None = typer.Option(None, "--lm", help="KenLM model for beam search (needs the lm extra)."),
    lexicon: Path | None = typer.Option(None, "--lexicon", help="Word lexicon for the LM decoder."),
    lm_weight: float = typer.Option(0.5, "--lm-weight"),
    word_score: float = typer.Option(0.0, "--word-score"),
    beam: int = typer.Option(50, "--beam"),
    chunk: float = typer.Option(30.0, "--chunk", help="Longest piece decoded at once (s); long files are cut at quiet points."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per file instead of 'file<TAB>text'."),
):
    """Text for new audio files, from a fine-tuned run.

    Example:  lowres transcribe --model runs/sw-1h interview.wav radio/*.flac
    """
    import json

    from lowres.inference import transcribe_files

    decoder = _load_lm(lm, lexicon, lm_weight, word_score, beam)
    for path, text in transcribe_files(model, audio, device, chunk, lm=decoder):
        if json_lines:
            typer.echo(json.dumps({"audio": str(path), "text": text}, ensure_ascii=False))
        else:
            typer.echo(f"{path}\t{text}")


@app.command(no_args_is_help=True)
@friendly
def export(
    model: Path = typer.Option(..., "--model", "-m", help="A run folder written by `lowres finetune`."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the Hugging Face model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out."),
):
    """LoRA merged into the base, written as a Hugging Face *ForCTC folder + Wav2Vec2Processor.

    Example:  lowres export --model runs/sw-1h --out hf/sw-1h
              then in Python: Wav2Vec2ForCTC.from_pretrained("hf/sw-1h"), Wav2Vec2Processor.from_pretrained("hf/sw-1h")
    """
    from lowres.inference import export_run

    path = export_run(model, out, overwrite=overwrite)
    _stdout().print(f"exported to {path} (load with transformers' AutoModelForCTC and Wav2Vec2Processor)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
