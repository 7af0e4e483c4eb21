"""Beam-search CTC decoding with a word-level KenLM model (torchaudio's flashlight decoder).

Needs the ``lm`` extra (``pip install 'lowres[lm]'``: flashlight-text, kenlm). The lexicon maps every word
the LM knows to the run's vocabulary symbols; without ``--lexicon`` it is built from the unigrams of an ARPA
file (a binary KenLM file needs ``--lexicon``). Words the vocabulary cannot spell are left out and counted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lowres import LowresError


def arpa_unigrams(path: Path) -> list[str]:
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
                parts = line.split("\t")
                if len(parts) >= 2:
                    words.append(parts[1])
    if not inside:
        raise LowresError(f"{path} is not an ARPA file (no \\1-grams: section). Give an ARPA file, or a binary "
                          "KenLM file together with --lexicon.")
    return [w for w in words if w not in ("<s>", "</s>", "<unk>")]


def write_lexicon(words: list[str], vocab, path: Path) -> tuple[int, int]:
    """``word t o k e n s |`` lines for the words the vocabulary spells completely; (kept, skipped)."""
    from lowres.data.vocab import split_units

    kept = skipped = 0
    with open(path, "w", encoding="utf-8") as f:
        for w in dict.fromkeys(words):
            units = split_units(w, vocab.units)
            if not units or not all(u in vocab for u in units):
                skipped += 1
                continue
            f.write(f"{w}\t{' '.join(units)} |\n")
            kept += 1
    return kept, skipped


class LMDecoding:
    def __init__(self, lm: Path, lexicon: Path | None = None, lm_weight: float = 0.5, word_score: float = 0.0,
                 beam_size: int = 50):
        self.lm = Path(lm)
        if not self.lm.is_file():
            raise LowresError(f"--lm {lm}: file not found.")
        if lexicon is not None and not Path(lexicon).is_file():
            raise LowresError(f"--lexicon {lexicon}: file not found.")
        self.lexicon = Path(lexicon) if lexicon else None
        self.lm_weight, self.word_score, self.beam_size = lm_weight, word_score, beam_size
        try:
            from torchaudio.models.decoder import ctc_decoder  # noqa: F401
        except Exception as exc:  # flashlight-text missing
            raise LowresError(f"LM decoding needs the lm extra: pip install 'lowres[lm]' (flashlight-text, kenlm). "
                              f"({type(exc).__name__}: {exc})") from None

    def make_decoder(self, vocab):
        """(decoder(logits (B,T,V), frames (B,)) → texts, name)."""
        import torch
        from torchaudio.models.decoder import ctc_decoder

        tmp = None
        lexicon = self.lexicon
        if lexicon is None:
            tmp = tempfile.NamedTemporaryFile("w", suffix=".lexicon.txt", delete=False)
            tmp.close()
            kept, _skipped = write_lexicon(arpa_unigrams(self.lm), vocab, Path(tmp.name))
            if not kept:
                raise LowresError(f"None of the words of {self.lm} can be spelled with the run's vocabulary: was the "
                                  "LM built from text normalised like the training transcripts?")
            lexicon = Path(tmp.name)
        tokens = list(vocab.tokens)
        beam = ctc_decoder(lexicon=str(lexicon), tokens=tokens, lm=str(self.lm), lm_weight=self.lm_weight,
                           word_score=self.word_score, beam_size=self.beam_size, blank_token=tokens[0],
                           sil_token="|", unk_word="<unk>")

        def decode(logits, frames):
            emissions = torch.log_softmax(logits.float(), dim=-1).cpu().contiguous()
            results = beam(emissions, frames.to(torch.int32).cpu())
            return [" ".join(r[0].words).strip() if r else "" for r in results]

        return decode, f"beam {self.beam_size} + {self.lm.name} (weight {self.lm_weight})"
