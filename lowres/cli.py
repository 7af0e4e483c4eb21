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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
