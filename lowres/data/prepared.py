"""A folder written by ``lowres prepare``, as the other commands read it: the one place that knows its layout.

::

    manifests/{10min,1h,10h,full,dev,test}.jsonl   one per split (lowres.data.splits names them)
    vocab.json                                     the character vocabulary
    prepare_report.json                            what prepare did: config (units, ...), text rules, counts
    unlabeled.jsonl                                with --unlabeled

``PreparedDir.open(path)`` checks the folder and says what to do when it is not one (naming the flag that
gave it); ``manifest(split)`` is the one split -> file mapping that finetune, eval, lm and the demo use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from lowres import LowresError
from lowres.data.splits import HELDOUT_SPLITS, LABELED_SPLITS

MANIFESTS = "manifests"
VOCAB = "vocab.json"
REPORT = "prepare_report.json"
UNLABELED = "unlabeled.jsonl"


def _prepared_target(corpus: Path) -> Path:
    """Where to suggest preparing ``corpus``: ``prepared/NAME``, a folder of its own beside the corpus, never
    inside it (when the corpus is the working folder or holds it, beside it instead)."""
    here, resolved = Path.cwd().resolve(), corpus.resolve()
    name = resolved.name or "corpus"
    if here == resolved or resolved in here.parents:
        return resolved.parent / "prepared" / name
    return Path("prepared") / name


@dataclass(frozen=True)
class PreparedDir:
    root: Path
    flag: str = "--data"  # the command-line flag that named the folder, for messages

    @classmethod
    def open(cls, path: str | Path, *, flag: str = "--data", need_vocab: bool = True) -> PreparedDir:
        """The prepared folder at ``path``, checked: it exists and has ``manifests/`` (and ``vocab.json`` unless
        ``need_vocab`` is False: eval and lm can do without it)."""
        root = Path(path)
        if not root.is_dir():
            raise LowresError(f"{flag} {root}: no such folder. Give the --out folder of `lowres prepare`.")
        missing = [VOCAB] if need_vocab and not (root / VOCAB).is_file() else []
        if not (root / MANIFESTS).is_dir():
            missing.append(f"{MANIFESTS}/")
        if missing:
            what = (" It holds a model (config.json: a lowres run or a Hugging Face folder): pass it as --base "
                    "(finetune) or --model (eval, transcribe, export)." if (root / "config.json").is_file() else "")
            target = _prepared_target(root)
            raise LowresError(f"{flag} {root} is not a prepared folder (no {' or '.join(missing)}).{what} "
                              f"{flag} takes the --out folder of `lowres prepare`: for a corpus, run "
                              f"`lowres prepare {root} --out {target}` and pass {flag} {target}.")
        return cls(root, flag)

    # -- manifests

    @property
    def manifests_dir(self) -> Path:
        return self.root / MANIFESTS

    def manifest(self, split: str) -> Path:
        """The manifest file of ``split`` (any name prepare wrote: 10min, 1h, 10h, full, dev, test); it may not
        exist (see :meth:`require`)."""
        return self.manifests_dir / f"{split}.jsonl"

    def available(self) -> list[str]:
        """The splits that have a manifest here, sorted."""
        return sorted(p.stem for p in self.manifests_dir.glob("*.jsonl"))

    def require(self, split: str) -> Path:
        """The manifest of ``split``, which must exist (else a message listing the splits that do)."""
        path = self.manifest(split)
        if not path.is_file():
            names = ", ".join(self.available()) or "none"
            hint = (f" `lowres prepare` writes manifests/{{{','.join(LABELED_SPLITS + HELDOUT_SPLITS)}}}.jsonl; "
                    f"check {self.flag} and --split.")
            raise LowresError(f"No split {split!r} in {self.root} (no {path}). Available: {names}.{hint}")
        return path

    def dev_manifest(self) -> Path | None:
        """``manifests/dev.jsonl``, or None when it is missing or empty (the corpus had no dev set and none was
        carved: training then runs without dev evaluation)."""
        path = self.manifest("dev")
        return path if path.is_file() and path.stat().st_size > 0 else None

    @property
    def unlabeled_path(self) -> Path:
        return self.root / UNLABELED

    # -- vocabulary and report

    @property
    def vocab_path(self) -> Path:
        return self.root / VOCAB

    @property
    def has_vocab(self) -> bool:
        return self.vocab_path.is_file()

    @property
    def report_path(self) -> Path:
        return self.root / REPORT

    @cached_property
    def report(self) -> dict:
        """``prepare_report.json`` as a dict ({} when there is none: folders made by hand or by old versions)."""
        if not self.report_path.is_file():
            return {}
        try:
            report = json.loads(self.report_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LowresError(f"{self.report_path} is not a valid prepare report: {exc}. Run `lowres prepare` "
                              f"again into {self.root}.") from None
        if not isinstance(report, dict):
            raise LowresError(f"{self.report_path} is not a valid prepare report (not a JSON object). Run "
                              f"`lowres prepare` again into {self.root}.")
        return report

    @property
    def units(self) -> str:
        """The vocabulary's units (grapheme | codepoint) as prepare recorded them; grapheme when unrecorded."""
        report = self.report
        config = report.get("config") if isinstance(report.get("config"), dict) else {}
        vocabulary = report.get("vocabulary") if isinstance(report.get("vocabulary"), dict) else {}
        return str(config.get("units") or vocabulary.get("units") or "grapheme")

    @property
    def text_settings(self) -> dict | None:
        """The text normalisation prepare used (``report["text"]``, for text_config_from_dict), None if unrecorded."""
        text = self.report.get("text")
        return text if isinstance(text, dict) else None

    def text_config(self):
        """The text normalisation prepare used (language rules included), as a
        :class:`lowres.data.text.TextConfig`: what later commands normalise with."""
        from lowres.data.text import text_config_from_dict

        if not self.report_path.is_file():
            raise LowresError(f"{self.root} has no {REPORT}. Pass the folder written by `lowres prepare`.")
        if self.text_settings is None:
            raise LowresError(f"{self.report_path} has no 'text' settings (it was written by an older lowres). Run "
                              "`lowres prepare` again so that later commands see the same spellings.")
        try:
            return text_config_from_dict(self.text_settings)
        except (TypeError, KeyError) as exc:
            raise LowresError(f"{self.report_path}: unexpected text settings: {exc}") from None

    def load_vocab(self):
        """The folder's :class:`lowres.data.vocab.Vocab`, in the units the report names."""
        from lowres.data.vocab import Vocab

        return Vocab.load(self.vocab_path, units=self.units)


__all__ = ["MANIFESTS", "REPORT", "UNLABELED", "VOCAB", "PreparedDir"]
