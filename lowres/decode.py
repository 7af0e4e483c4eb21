"""Beam-search CTC decoding with an n-gram language model (torchaudio's flashlight ``ctc_decoder``).

Needs the ``lm`` extra (``pip install ".[lm]"`` / ``pip install 'lowres[lm]'``: flashlight-text, kenlm). ``--lm`` is the folder written
by ``lowres lm`` (or a bare ARPA / binary KenLM file):

* lexicon-constrained (the default): the beam only forms words of ``lexicon.txt`` and scores them with the
  word model ``lm.arpa``. The lexicon is checked against the run's vocabulary; when the run spells with
  other units, it is rebuilt from the ARPA unigrams (words the run cannot spell are left out and counted).
* lexicon-free (``--lexicon-free``): any unit sequence, scored unit by unit by ``units.arpa`` (flashlight's
  lexicon-free decoder takes a unit-level model); ``word_score`` is then the score of each ``|``.

Weights: a value given by the user wins; else the value ``lowres eval --tune-lm`` stored in
``LM_DIR/tuned.json`` for the decoding mode; else ``DEFAULT_LM_WEIGHT`` / ``DEFAULT_WORD_SCORE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from lowres import LowresError

DEFAULT_LM_WEIGHT = 0.5
DEFAULT_WORD_SCORE = 0.0
DEFAULT_BEAM = 50
LEXICON_MODE, LEXICON_FREE_MODE = "lexicon", "lexicon_free"
_EXTRA = "pip install 'lowres[lm]' (or \".[lm]\" in a checkout: flashlight-text and kenlm)"

Decoder = Callable  # (logits (B, T, V) float32 CPU, frame lengths (B,)) -> list[str]


def arpa_unigrams(path: Path) -> list[str]:
    """The words of an ARPA file's unigram section, without ``<s>``, ``</s>``, ``<unk>``."""
    words: list[str] = []
    inside = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
                continue
            if inside:
                if not line:
                    continue
                if line.startswith("\\"):
                    break
                parts = line.split()
                if len(parts) >= 2:
                    words.append(parts[1])
    if not inside:
        raise LowresError(f"{path} is not an ARPA file (no \\1-grams: section). Give the folder written by "
                          "`lowres lm`, an ARPA file, or a binary KenLM file together with --lexicon.")
    return [w for w in words if w not in ("<s>", "</s>", "<unk>")]


def require_lm_extra() -> None:
    """A clear error when flashlight-text (and its KenLM) is not installed."""
    try:
        from flashlight.lib.text.decoder.kenlm import KenLM  # noqa: F401
        from torchaudio.models.decoder import CTCDecoder  # noqa: F401
    except Exception as exc:  # ImportError, or a broken binary wheel
        raise LowresError(f"Beam search with a language model (--lm) needs the lm extra: {_EXTRA}. "
                          f"({type(exc).__name__}: {exc})") from None


class LMDecoding:
    """What ``--lm`` and its options ask for; :meth:`make_decoder` builds the decoder for a run's vocabulary.

    ``lm``: the folder written by ``lowres lm``, or an ARPA (.arpa) / KenLM binary (.bin) file (with
    ``lexicon_free`` a bare file must be a unit-level model). ``lexicon``: overrides the folder's lexicon.
    ``lm_weight`` / ``word_score``: None means the tuned value, else the default.
    """

    def __init__(self, lm: Path, lexicon: Path | None = None, lm_weight: float | None = None,
                 word_score: float | None = None, beam_size: int = DEFAULT_BEAM, lexicon_free: bool = False):
        from lowres.lm.build import ARPA, LEXICON, TUNED, UNITS_ARPA

        lm = Path(lm)
        self.mode = LEXICON_FREE_MODE if lexicon_free else LEXICON_MODE
        if beam_size < 1:
            raise LowresError(f"--beam must be at least 1, not {beam_size}.")
        if lexicon is not None and lexicon_free:
            raise LowresError("--lexicon and --lexicon-free contradict each other: choose one.")
        if lexicon is not None and not Path(lexicon).is_file():
            raise LowresError(f"--lexicon {lexicon}: file not found.")
        if lm.is_dir():
            self.folder: Path | None = lm
            self.arpa = lm / (UNITS_ARPA if lexicon_free else ARPA)
            if not self.arpa.is_file():
                if lexicon_free and (lm / ARPA).is_file():
                    raise LowresError(f"{lm} has no {UNITS_ARPA}, the unit-level model that lexicon-free decoding "
                                      "scores with. Rebuild the folder with `lowres lm ... --data PREPARED` (and "
                                      "--unit-order > 0), or decode with the lexicon (drop --lexicon-free).")
                raise LowresError(f"{lm} holds no {self.arpa.name}. Give the folder written by `lowres lm`, or an "
                                  "ARPA file.")
            if lexicon is None and not lexicon_free and (lm / LEXICON).is_file():
                lexicon = lm / LEXICON
            self.tuned_path: Path | None = lm / TUNED
        elif lm.is_file():
            self.folder, self.arpa, self.tuned_path = None, lm, None
            if lm.suffix != ".arpa" and lexicon is None and not lexicon_free:
                raise LowresError(f"--lm {lm} is not an .arpa file: a binary KenLM model needs --lexicon (its words "
                                  "cannot be read back), or use the folder written by `lowres lm`.")
        else:
            raise LowresError(f"--lm {lm}: no such folder or file. Build one with `lowres lm --text FILE --data "
                              "PREPARED --out LM_DIR`.")
        self.lexicon = Path(lexicon) if lexicon is not None else None
        self.beam_size = beam_size
        tuned = self.tuned()
        self.weights_from = {}
        for name, given, default in (("lm_weight", lm_weight, DEFAULT_LM_WEIGHT),
                                     ("word_score", word_score, DEFAULT_WORD_SCORE)):
            if given is not None:
                value, source = float(given), "given"
            elif tuned and name in tuned:
                value, source = float(tuned[name]), "tuned"
            else:
                value, source = default, "default"
            setattr(self, name, value)
            self.weights_from[name] = source
        require_lm_extra()

    # -- tuned weights -----------------------------------------------------------------------------------
    def tuned(self) -> dict | None:
        """The weights ``--tune-lm`` stored for this decoding mode, or None."""
        if self.tuned_path is None or not self.tuned_path.is_file():
            return None
        try:
            data = json.loads(self.tuned_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LowresError(f"{self.tuned_path} is not valid JSON ({exc}). Delete it and run `lowres eval "
                              "--tune-lm` again.") from None
        entry = data.get(self.mode) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    def store_tuned(self, entry: dict) -> Path:
        """Save ``entry`` (lm_weight, word_score, and how they were found) as this mode's tuned weights."""
        from lowres.fsutil import atomic_write_json

        if self.tuned_path is None:
            raise LowresError("--tune-lm stores the weights it finds in the LM folder; give --lm the folder "
                              "written by `lowres lm`, not a bare model file.")
        data = {}
        if self.tuned_path.is_file():
            try:
                data = json.loads(self.tuned_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = {}
        data = data if isinstance(data, dict) else {}
        data[self.mode] = entry
        try:
            atomic_write_json(self.tuned_path, data)
        except OSError as exc:
            raise LowresError(f"Could not write {self.tuned_path}: {exc}. The LM folder must be writable for "
                              "--tune-lm.") from None
        self.lm_weight, self.word_score = float(entry["lm_weight"]), float(entry["word_score"])
        self.weights_from = {"lm_weight": "tuned", "word_score": "tuned"}
        return self.tuned_path

    # -- decoders ----------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """What metrics.json records about the decoder."""
        return {"lm": str(self.folder or self.arpa), "model_file": str(self.arpa), "mode": self.mode,
                "lexicon": str(self.lexicon) if self.lexicon else None, "beam": self.beam_size,
                "lm_weight": self.lm_weight, "word_score": self.word_score, "weights_from": dict(self.weights_from)}

    def name(self, lm_weight: float | None = None, word_score: float | None = None) -> str:
        lm_weight = self.lm_weight if lm_weight is None else lm_weight
        word_score = self.word_score if word_score is None else word_score
        mode = "lexicon" if self.mode == LEXICON_MODE else "lexicon-free"
        return (f"beam {self.beam_size}, {mode}, {self.arpa.name} (lm weight {lm_weight:g}, "
                f"word score {word_score:g})")

    def decoder_factory(self, vocab) -> Callable[[float, float], Decoder]:
        """Load the model once; return ``with_weights(lm_weight, word_score) -> decoder`` (for tuning)."""
        require_lm_extra()
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        tokens = list(vocab.tokens)
        for special in ("<pad>", "|"):
            if special not in tokens:
                raise LowresError(f"The run's vocabulary has no {special!r} token; it was not written by lowres.")
        tokens_dict = Dictionary(tokens)
        word_dict = Dictionary()
        word_dict.add_entry("<unk>")
        lexicon_map = None
        if self.mode == LEXICON_MODE:
            lexicon_map = self._lexicon_for(vocab)
            for word in lexicon_map:
                if word != "<unk>":
                    word_dict.add_entry(word)
        else:
            for t in tokens:
                if t != "<unk>":
                    word_dict.add_entry(t)
        word_dict.set_default_index(0)
        try:
            with _quiet_stderr():  # KenLM prints a progress bar and a tip about binary files
                kenlm = KenLM(str(self.arpa), word_dict)
        except Exception as exc:  # a file KenLM cannot read
            raise LowresError(f"KenLM could not load {self.arpa}: {exc}. Rebuild it with `lowres lm`.") from None
        mode, beam_size = self.mode, self.beam_size

        def with_weights(lm_weight: float, word_score: float) -> Decoder:
            return _flashlight_decoder(vocab, tokens_dict, word_dict, lexicon_map, kenlm, mode, beam_size,
                                       lm_weight, word_score)

        return with_weights

    def make_decoder(self, vocab) -> tuple[Decoder, str]:
        """(decoder(logits (B, T, V), frames (B,)) → texts, a name for metrics.json) for a run's vocabulary."""
        return self.decoder_factory(vocab)(self.lm_weight, self.word_score), self.name()

    def _lexicon_for(self, vocab) -> dict[str, list[list[str]]]:
        """{word: [spelling]} in the run's units, from the lexicon file when the run can spell it, else from
        the ARPA unigrams."""
        from lowres.lm.lexicon import read_lexicon, spell

        tokens = set(vocab.tokens)
        entries = read_lexicon(self.lexicon) if self.lexicon is not None else None
        if entries is not None and all(u in tokens for _, units in entries for u in units):
            lexicon = {w: [[*units, "|"]] for w, units in entries}
        elif self.arpa.suffix == ".arpa":
            lexicon = {}
            for w in arpa_unigrams(self.arpa):
                units = spell(w, vocab)
                if units is not None:
                    lexicon[w] = [[*units, "|"]]
        else:  # a binary model with a lexicon in other units: keep the entries the run can spell
            lexicon = {w: [[*units, "|"]] for w, units in entries if all(u in tokens for u in units)}
        if not lexicon:
            raise LowresError(f"None of the words of {self.lexicon or self.arpa} can be spelled with the run's "
                              "vocabulary: was the LM built from text normalised like the training transcripts "
                              "(`lowres lm --data` with the run's prepared folder)?")
        return lexicon


def _flashlight_decoder(vocab, tokens_dict, word_dict, lexicon_map, kenlm, mode: str, beam_size: int,
                        lm_weight: float, word_score: float) -> Decoder:
    """One flashlight beam-search decoder over an already loaded KenLM model (torchaudio's ``CTCDecoder``
    built from its parts, as its ``ctc_decoder`` factory does, so that tuning does not reload the model)."""
    import torch
    from flashlight.lib.text.decoder import CriterionType, LexiconDecoderOptions, LexiconFreeDecoderOptions
    from torchaudio.models.decoder import CTCDecoder

    n_tokens = tokens_dict.index_size()
    if mode == LEXICON_MODE:
        options = LexiconDecoderOptions(beam_size=beam_size, beam_size_token=n_tokens, beam_threshold=50.0,
                                        lm_weight=lm_weight, word_score=word_score, unk_score=float("-inf"),
                                        sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC)
    else:  # the unit model scores every unit; the word score is the score of each word delimiter
        options = LexiconFreeDecoderOptions(beam_size=beam_size, beam_size_token=n_tokens, beam_threshold=50.0,
                                            lm_weight=lm_weight, sil_score=word_score, log_add=False,
                                            criterion_type=CriterionType.CTC)
    beam = CTCDecoder(nbest=1, lexicon=lexicon_map, word_dict=word_dict, tokens_dict=tokens_dict, lm=kenlm,
                      decoder_options=options, blank_token="<pad>", sil_token="|", unk_word="<unk>")

    def decode(logits, frames) -> list[str]:
        emissions = torch.log_softmax(logits.float(), dim=-1).cpu().contiguous()  # (B, T, V)
        lengths = frames.to(torch.int32).cpu()
        if emissions.shape[1] == 0:
            return [""] * emissions.shape[0]
        results = beam(emissions, lengths)
        if mode == LEXICON_MODE:
            return [" ".join(w for w in r[0].words if w != "<unk>") if r else "" for r in results]
        return [vocab.decode(r[0].tokens.tolist()) if r else "" for r in results]

    return decode


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what C++ code writes to file descriptor 2 (Python's own stderr is unaffected after)."""
    fd = 2  # C++ writes to the process's descriptor 2, whatever Python's sys.stderr is now
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)
