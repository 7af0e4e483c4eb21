"""Decoding: CTC logits -> text, greedy or by beam search with an n-gram LM, and the batched forward passes
that produce the logits. ``eval``, ``transcribe`` and the fine-tuning trainer's dev pass all decode here.

* :class:`DecodeOptions`: what the user asked for (frozen; built once by the CLI, shared by eval and
  transcribe). The defaults live in its fields.
* :func:`greedy_ids`: best path, repeats collapsed, blanks removed.
* :class:`BeamSearch`: ``--lm`` resolved against the LM folder (files, mode, weights and where each weight
  came from). Immutable: tuning gives a new one (:meth:`BeamSearch.with_weights`). :meth:`BeamSearch.load`
  reads the KenLM model once for a run's vocabulary; :meth:`BeamSearch.decoder` turns it into a decoder.
* :func:`forward_batches` / :func:`decode_utterances`: a model over utterances, batch by batch.

Beam search needs the ``lm`` extra (flashlight-text; :func:`lowres.runtime.install_hint` says how to add it)
and uses torchaudio's flashlight ``CTCDecoder``. ``--lm`` is the folder written by ``lowres lm`` (its
layout: :mod:`lowres.lm.folder`) or a bare ARPA / binary KenLM file:

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
import dataclasses
import functools
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowres import LowresError
from lowres.config import DEFAULT_LM_WEIGHT, DEFAULT_WORD_SCORE, DecodeOptions  # noqa: F401 (re-exported)
from lowres.data.vocab import BLANK_ID
from lowres.lm.folder import LEXICON_FREE_MODE, LEXICON_MODE, UNITS_ARPA, LMFolder
from lowres.runtime import install_hint

Decoder = Callable  # (logits (B, T, V) float32 CPU, frame lengths (B,)) -> list[str]


# ---------------------------------------------------------------------------------------------------
# greedy


def greedy_ids(logits, frame_lengths) -> list[list[int]]:
    """Best path per utterance of logits (B, T, V) with frame lengths (B,): argmax per frame, repeats
    collapsed, blanks removed. Only repeated frames collapse: a doubled letter survives when the model puts
    a blank between its two frames."""
    import torch

    best = logits.argmax(dim=-1).cpu()
    out = []
    for row, n in zip(best, frame_lengths.cpu().tolist(), strict=True):
        ids = torch.unique_consecutive(row[:n]).tolist()
        out.append([i for i in ids if i != BLANK_ID])
    return out


def greedy_texts(logits, frame_lengths, vocab) -> list[str]:
    """:func:`greedy_ids` spelled with ``vocab``: one text per utterance."""
    return [vocab.decode(ids) for ids in greedy_ids(logits, frame_lengths)]


def path_confidence(logits, ids: Sequence[int]) -> float:
    """How sure the model is of a transcript: the mean posterior probability of the transcript's units over
    the frames its best CTC alignment gives them (torchaudio's ``forced_align``), from 0 to 1. ``logits``
    (T, V): one utterance's valid frames; ``ids``: the transcript's unit ids (no blank). Frames aligned to the
    blank are left out (a model is sure of silence, which says nothing of the words). 0 for an empty transcript
    or one that cannot fit in T frames."""
    import torch
    from torchaudio.functional import forced_align

    from lowres.data.vocab import ctc_frames_needed

    ids = list(ids)
    if not ids or logits.shape[0] < ctc_frames_needed(ids):
        return 0.0
    log_probs = logits.float().log_softmax(dim=-1)[None]
    path, scores = forced_align(log_probs, torch.tensor([ids], dtype=torch.int32), blank=BLANK_ID)
    units = path[0] != BLANK_ID
    return float(scores[0][units].exp().mean())


# ---------------------------------------------------------------------------------------------------
# beam search with an n-gram LM


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
        raise LowresError(f"Beam search with a language model (--lm) needs the lm extra (flashlight-text): "
                          f"{install_hint('lm')} ({type(exc).__name__}: {exc})") from None



@dataclass(frozen=True, kw_only=True)
class BeamSearch:
    """``--lm`` and its options resolved against the files: what to load, how to search, which weights.

    ``folder``: the LM folder (None for a bare model file); ``model_file``: the ARPA / KenLM file the beam
    scores with; ``lexicon``: the word lexicon (None: lexicon-free, or spelled from the ARPA unigrams);
    ``lm_weight_from`` / ``word_score_from``: "given", "tuned" or "default". Immutable:
    :meth:`with_weights` returns a new search."""

    folder: LMFolder | None
    model_file: Path
    lexicon: Path | None
    mode: str
    beam_size: int
    lm_weight: float
    word_score: float
    lm_weight_from: str = "default"
    word_score_from: str = "default"

    @classmethod
    def from_options(cls, options: DecodeOptions) -> BeamSearch | None:
        """The search ``options`` ask for (None: greedy). Checks the files, reads the tuned weights and
        that the lm extra is installed, so that mistakes surface before any model is loaded."""
        if options.lm is None:
            return None
        lm, lexicon, mode = options.lm, options.lexicon, options.mode
        if lexicon is not None and not lexicon.is_file():
            raise LowresError(f"--lexicon {lexicon}: file not found.")
        folder = None
        if lm.is_dir():
            folder = LMFolder(lm)
            model_file = folder.model_file(mode)
            if not model_file.is_file():
                if mode == LEXICON_FREE_MODE and folder.arpa.is_file():
                    raise LowresError(f"{lm} has no {UNITS_ARPA}, the unit-level model that lexicon-free decoding "
                                      "scores with. Rebuild the folder with `lowres lm ... --data PREPARED` (and "
                                      "--unit-order > 0), or decode with the lexicon (drop --lexicon-free).")
                raise LowresError(f"{lm} holds no {model_file.name}. Give the folder written by `lowres lm`, or an "
                                  "ARPA file.")
            if lexicon is None and mode == LEXICON_MODE and folder.lexicon.is_file():
                lexicon = folder.lexicon
        elif lm.is_file():
            model_file = lm
            if lm.suffix != ".arpa" and lexicon is None and mode == LEXICON_MODE:
                raise LowresError(f"--lm {lm} is not an .arpa file: a binary KenLM model needs --lexicon (its words "
                                  "cannot be read back), or use the folder written by `lowres lm`.")
        else:
            raise LowresError(f"--lm {lm}: no such folder or file. Build one with `lowres lm --text FILE --data "
                              "PREPARED --out LM_DIR`.")
        tuned = folder.read_tuned(mode) if folder is not None else None
        weights: dict[str, Any] = {}
        for name, given, default in (("lm_weight", options.lm_weight, DEFAULT_LM_WEIGHT),
                                     ("word_score", options.word_score, DEFAULT_WORD_SCORE)):
            stored = getattr(tuned, name) if tuned is not None else None
            if given is not None:
                weights[name], weights[f"{name}_from"] = float(given), "given"
            elif stored is not None:
                weights[name], weights[f"{name}_from"] = stored, "tuned"
            else:
                weights[name], weights[f"{name}_from"] = default, "default"
        require_lm_extra()
        return cls(folder=folder, model_file=model_file, lexicon=lexicon, mode=mode, beam_size=options.beam_size,
                   **weights)

    def with_weights(self, lm_weight: float, word_score: float, source: str = "tuned") -> BeamSearch:
        """The same search with other weights (both marked as coming from ``source``)."""
        return dataclasses.replace(self, lm_weight=float(lm_weight), word_score=float(word_score),
                                   lm_weight_from=source, word_score_from=source)

    @property
    def name(self) -> str:
        """The decoder as metrics.json and the eval table name it."""
        mode = "lexicon" if self.mode == LEXICON_MODE else "lexicon-free"
        return (f"beam {self.beam_size}, {mode}, {self.model_file.name} (lm weight {self.lm_weight:g}, "
                f"word score {self.word_score:g})")

    def settings(self) -> dict:
        """What metrics.json records about the decoder."""
        return {"lm": str(self.folder.path if self.folder is not None else self.model_file),
                "model_file": str(self.model_file), "mode": self.mode,
                "lexicon": str(self.lexicon) if self.lexicon else None, "beam": self.beam_size,
                "lm_weight": self.lm_weight, "word_score": self.word_score,
                "weights_from": {"lm_weight": self.lm_weight_from, "word_score": self.word_score_from}}

    def load(self, vocab) -> LoadedLM:
        """Read the KenLM model (and the lexicon, spelled in ``vocab``'s units) once; the result makes
        decoders for any weights without reloading (tuning decodes the dev set once per grid point)."""
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
        lexicon_map = coverage = None
        if self.mode == LEXICON_MODE:
            lexicon_map, coverage = self.lexicon_and_coverage(vocab)
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
                kenlm = KenLM(str(self.model_file), word_dict)
        except Exception as exc:  # a file KenLM cannot read
            raise LowresError(f"KenLM could not load {self.model_file}: {exc}. Rebuild it with `lowres lm`.") from None
        return LoadedLM(vocab=vocab, mode=self.mode, tokens_dict=tokens_dict, word_dict=word_dict,
                        lexicon_map=lexicon_map, kenlm=kenlm, coverage=coverage)

    def decoder(self, loaded: LoadedLM) -> Decoder:
        """``decoder(logits (B, T, V), frames (B,)) -> texts`` with this search's beam and weights."""
        if loaded.mode != self.mode:
            raise ValueError(f"the LM was loaded for {loaded.mode} decoding, not {self.mode}")
        return _flashlight_decoder(loaded, beam_size=self.beam_size, lm_weight=self.lm_weight,
                                   word_score=self.word_score)

    def make_decoder(self, vocab) -> Decoder:
        """:meth:`load` then :meth:`decoder`, for one set of weights."""
        return self.decoder(self.load(vocab))

    def lexicon_for(self, vocab) -> dict[str, list[list[str]]]:
        """{word: [spelling]} in the run's units, from the lexicon file when the run can spell it, else from
        the ARPA unigrams."""
        return self.lexicon_and_coverage(vocab)[0]

    def lexicon_and_coverage(self, vocab) -> tuple[dict[str, list[list[str]]], dict]:
        """:meth:`lexicon_for` and how well the run's vocabulary covers the words it was made from:
        ``{"source": "lexicon" | "arpa", "path", "words", "outside", "units", "used", "kept"}`` (``outside``:
        words spelled with, or needing, units the run does not have; ``units``: those units, most frequent
        first; ``used``: where the beam's words come from, "lexicon", "arpa" (the unigrams, spelled in the
        run's units) or "lexicon entries" (those the run can spell); ``kept``: how many words it uses)."""
        from lowres.lm.lexicon import read_lexicon, spell

        tokens = set(vocab.tokens)
        entries = read_lexicon(self.lexicon) if self.lexicon is not None else None
        missing: Counter = Counter()
        outside = 0
        coverage: dict = {"source": "arpa", "path": str(self.model_file), "words": 0}
        if entries is not None:
            for _, units in entries:
                foreign = [u for u in units if u not in tokens]
                outside += bool(foreign)
                missing.update(foreign)
            coverage = {"source": "lexicon", "path": str(self.lexicon), "words": len(entries)}
        if entries is not None and not outside:
            lexicon = {w: [[*units, "|"]] for w, units in entries}
            used = "lexicon"
        elif self.model_file.suffix == ".arpa":
            lexicon = {}
            used = "arpa"
            words = arpa_unigrams(self.model_file)
            unspellable = 0
            for w in words:
                units = spell(w, vocab)
                if units is not None:
                    lexicon[w] = [[*units, "|"]]
                else:
                    unspellable += 1
                    if entries is None:
                        missing.update(_foreign_units(w, vocab))
            if entries is None:
                coverage = {"source": "arpa", "path": str(self.model_file), "words": len(words)}
                outside = unspellable
        else:  # a binary model with a lexicon in other units: keep the entries the run can spell
            lexicon = {w: [[*units, "|"]] for w, units in entries if all(u in tokens for u in units)}
            used = "lexicon entries"
        coverage.update(outside=outside, units=[u for u, _ in missing.most_common()], used=used, kept=len(lexicon))
        if not lexicon:
            raise LowresError(f"None of the words of {self.lexicon or self.model_file} can be spelled with the "
                              "run's vocabulary: was the LM built from text normalised like the training "
                              "transcripts (`lowres lm --data` with the run's prepared folder)?")
        return lexicon, coverage


def _foreign_units(word: str, vocab) -> list[str]:
    """The units of ``word`` that ``vocab`` cannot spell (not even by their code points)."""
    from lowres.data.vocab import split_units

    return [u for u in split_units(word, vocab.units)
            if u not in vocab and not (len(u) > 1 and all(c in vocab for c in u))]


@dataclass(frozen=True, kw_only=True)
class LoadedLM:
    """A KenLM model read for one vocabulary and decoding mode, with flashlight's dictionaries (the parts
    torchaudio's ``ctc_decoder`` factory builds, kept so that other weights need no reload)."""

    vocab: Any
    mode: str
    tokens_dict: Any
    word_dict: Any
    lexicon_map: dict | None
    kenlm: Any
    coverage: dict | None = None  # lexicon mode: BeamSearch.lexicon_and_coverage's report


def _flashlight_decoder(loaded: LoadedLM, *, beam_size: int, lm_weight: float, word_score: float) -> Decoder:
    """One flashlight beam-search decoder over an already loaded KenLM model (torchaudio's ``CTCDecoder``
    built from its parts, as its ``ctc_decoder`` factory does, so that tuning does not reload the model)."""
    import torch
    from flashlight.lib.text.decoder import CriterionType, LexiconDecoderOptions, LexiconFreeDecoderOptions
    from torchaudio.models.decoder import CTCDecoder

    vocab, mode = loaded.vocab, loaded.mode
    n_tokens = loaded.tokens_dict.index_size()
    if mode == LEXICON_MODE:
        options = LexiconDecoderOptions(beam_size=beam_size, beam_size_token=n_tokens, beam_threshold=50.0,
                                        lm_weight=lm_weight, word_score=word_score, unk_score=float("-inf"),
                                        sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC)
    else:  # the unit model scores every unit; the word score is the score of each word delimiter
        options = LexiconFreeDecoderOptions(beam_size=beam_size, beam_size_token=n_tokens, beam_threshold=50.0,
                                            lm_weight=lm_weight, sil_score=word_score, log_add=False,
                                            criterion_type=CriterionType.CTC)
    beam = CTCDecoder(nbest=1, lexicon=loaded.lexicon_map, word_dict=loaded.word_dict,
                      tokens_dict=loaded.tokens_dict, lm=loaded.kenlm, decoder_options=options,
                      blank_token="<pad>", sil_token="|", unk_word="<unk>")

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


# ---------------------------------------------------------------------------------------------------
# forward passes over a set of utterances


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _release_freed_memory() -> None:
    """Hand the memory freed by the last batch back to the system (glibc only; elsewhere nothing happens).

    Each batch allocates and frees a few hundred MB of activations, in tensors whose sizes change from batch
    to batch (batches go by duration). glibc keeps freed memory in its heap, and that heap grew batch after
    batch while live memory stayed flat: peak RSS 1.46 GB at 1,000 utterances, 1.97 GB at 3,000, 2.20 GB at
    10,000 (CPU, tiny model, 120 s batches); 1.18, 1.24, 1.26 GB with this. The price: the next batch faults
    its pages in again, which made the tiny model's decoding on CPU about 18% slower (benchmarks/README.md,
    "Memory")."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def forward_batches(model, utts: Sequence, device, *, options: DecodeOptions = DecodeOptions(), progress=None
                    ) -> Iterator[tuple[list[int], Any, Any, list[str]]]:
    """The model's output batch by batch (duration-sorted, ``options.batch_seconds`` of audio each):
    ``(utterance indices, logits (B, T, V) float32 CPU, frame lengths (B,) CPU, errors)``; logits and frames
    are None when no utterance of the batch loaded. Only ``batch_seconds``, ``workers`` and ``precision``
    of ``options`` matter here."""
    import torch

    from lowres.data.batching import UtteranceDataset, eval_batches, loader
    from lowres.runtime import autocast

    dataset = UtteranceDataset(utts)
    limit = getattr(getattr(model, "spec", None), "max_seconds", math.inf)  # Whisper reads 30 s at most
    batches = [b for b in ([i for i in batch if utts[i].duration <= limit]
                           for batch in eval_batches(utts, options.batch_seconds)) if b]
    shortest = samples_for_one_frame(model)
    task = progress.add_task("decoding", total=len(utts), unit="utt") if progress is not None else None
    was_training = model.training
    model.eval()
    try:
        too_long = [f"{u.audio_filepath}: {u.duration:.1f} s is longer than the {limit:g} s the backbone reads at "
                    "once (lowres transcribe cuts long files into pieces)" for u in utts if u.duration > limit]
        if too_long:
            yield [], None, None, too_long
            if task is not None:
                progress.advance(task, len(too_long))
        for batch in loader(dataset, batches, options.workers):
            errors = list(batch.errors or [])
            if not batch.indices:
                yield [], None, None, errors
                continue
            waves = batch.waves
            if waves.shape[1] < shortest:  # a batch of clips shorter than one frame: padded, it gives 0 frames
                waves = torch.nn.functional.pad(waves, (0, shortest - waves.shape[1]))
            with torch.inference_mode(), autocast(device, options.precision or "auto"):
                logits, frames = model(waves.to(device), batch.lengths.to(device))
            logits, frames = logits.float().cpu(), frames.cpu()
            _release_freed_memory()  # the forward's activations are freed by now
            yield list(batch.indices), logits, frames, errors
            if task is not None:
                progress.advance(task, len(batch.indices) + len(errors))
    finally:
        model.train(was_training)


def samples_for_one_frame(model) -> int:
    """The fewest samples the model's convolutional feature encoder turns into one frame (400 for wav2vec 2.0,
    HuBERT and WavLM); 1 for a model without a ``spec.conv_stack``. A shorter batch would make the first
    convolution fail (kernel larger than its input)."""
    stack = getattr(getattr(model, "spec", None), "conv_stack", None)
    need = 1
    for kernel, stride, *padding in reversed(tuple(stack or ())):
        need = max(1, (need - 1) * stride + kernel - 2 * (padding[0] if padding else 0))
    return need


def batch_texts(logits, frames, vocab, decoder: Decoder | None = None) -> list[str]:
    """One batch's texts: ``decoder``'s (beam search) where given, else greedy."""
    return greedy_texts(logits, frames, vocab) if decoder is None else decoder(logits, frames)


def decode_batches(model, utts: Sequence, vocab, device, *, options: DecodeOptions = DecodeOptions(),
                   decoder: Decoder | None = None, progress=None, greedy_too: bool = False
                   ) -> Iterator[tuple[int, str | None, str | None, str]]:
    """``(index, hypothesis or None, greedy hypothesis or None, error)`` per utterance: ``decoder`` (greedy
    without one) over :func:`forward_batches`. The greedy hypothesis only with a ``decoder`` and
    ``greedy_too`` (it costs an argmax over logits already computed)."""
    for indices, logits, frames, errors in forward_batches(model, utts, device, options=options, progress=progress):
        for err in errors:
            yield -1, None, None, err
        if not indices:
            continue
        greedy = None
        if decoder is None or greedy_too:
            greedy = greedy_texts(logits, frames, vocab)
        texts = greedy if decoder is None else decoder(logits, frames)
        for k, (idx, text) in enumerate(zip(indices, texts, strict=True)):
            yield idx, text, (greedy[k] if decoder is not None and greedy is not None else None), ""


def decode_utterances(model, utts: Sequence, vocab, device, *, options: DecodeOptions = DecodeOptions(),
                      decoder: Decoder | None = None, progress=None) -> Iterator[tuple[int, str | None, str]]:
    """``(index, hypothesis or None, error)`` for each utterance, batch by batch (duration-sorted).

    ``decoder`` maps (logits (B, T, V) float32 CPU, frame lengths (B,)) to lists of texts; greedy by default.
    """
    for idx, text, _, err in decode_batches(model, utts, vocab, device, options=options, decoder=decoder,
                                            progress=progress):
        yield idx, text, err


# ---------------------------------------------------------------------------------------------------
# helpers


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
