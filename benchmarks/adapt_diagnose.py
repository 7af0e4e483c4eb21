"""What has an adapt run learned, frame by frame? And can its targets be learned at all?

    python benchmarks/adapt_diagnose.py --unlabeled /tmp/quality/prepared/unlabeled.jsonl \
        --model tiny --model runs/adapt --model runs/finetune-10min

Figures, machine and commands: benchmarks/README.md ("Does adapt help?").

For each ``--model`` (a random-init name, a lowres adapt or finetune run folder, a Hugging Face folder) on the
same pieces of the manifest (seeded, normalised, cropped to 15.6 s; frames 30 dB or more below the piece's
loudest frame count as silence):

- **coherence of the quantizer's input**: the mean cosine similarity between the LayerNorm'd conv features
  (what the quantizer reads) of adjacent speech frames, and of random pairs of speech frames of the same
  piece. The targets of the contrastive task are quantized conv features, so when adjacent frames of one
  sound are no more alike than two random frames, a masked frame's target cannot be predicted from its
  neighbours, whatever the context network learns.
- for adapt runs (they have pretraining heads): **contrastive accuracy in evaluation mode** (argmax codes, no
  dropout; a span mask and negatives drawn as in training), split into silent and speech frames and by the
  distance in frames from the masked frame to the nearest unmasked one (1 = at the edge of a span). Chance
  is 1 / (negatives + 1).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapt_learning import batches, pad  # noqa: E402

HOP = 320  # samples per frame


def speech_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T) True where a frame is within 30 dB of its piece's loudest frame."""
    energy = x[:, :frames * HOP].reshape(x.shape[0], frames, HOP).pow(2).mean(-1)
    return energy > 1e-3 * energy.amax(dim=1, keepdim=True)


def edge_distance(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) for masked frames, the distance to the nearest unmasked frame (1 = next to one)."""
    b, t = mask.shape
    big = t + 1
    left = torch.full((b, t), big, dtype=torch.long)
    right = torch.full((b, t), big, dtype=torch.long)
    run_l = torch.full((b,), big, dtype=torch.long)
    run_r = torch.full((b,), big, dtype=torch.long)
    for i in range(t):
        run_l = torch.where(mask[:, i], run_l + 1, torch.zeros_like(run_l))
        left[:, i] = run_l
        j = t - 1 - i
        run_r = torch.where(mask[:, j], run_r + 1, torch.zeros_like(run_r))
        right[:, j] = run_r
    return torch.minimum(left, right)


def coherence(backbone, data) -> tuple[float, float]:
    from lowres.model.backbone import conv_features

    adjacent, random_pairs = [], []
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for waves in data:
            x, lengths = pad(waves)
            feats, _ = conv_features(backbone.feature_extractor, x, lengths)
            normed = backbone.encoder.feature_projection.layer_norm(feats)
            speech = speech_frames(x, feats.shape[1])
            for i in range(x.shape[0]):
                keep = speech[i].clone()
                keep[int(lengths[i]) // HOP - 1:] = False  # no frame reaching into the padding
                v = normed[i][keep]
                adjacent.append(torch.cosine_similarity(v[1:], v[:-1], dim=-1).mean())
                perm = torch.randperm(len(v), generator=gen)
                random_pairs.append(torch.cosine_similarity(v, v[perm], dim=-1).mean())
    return float(sum(adjacent) / len(adjacent)), float(sum(random_pairs) / len(random_pairs))


BANDS = ((1, "1"), (2, "2"), (3, "3"), (5, "4-5"), (10**9, "6+"))


def frame_accuracy(loaded, data, negatives: int, mask_length: int) -> dict:
    from lowres.model.pretrain import PretrainHeads, Wav2Vec2Pretrainer

    conv_dim = loaded.spec.arch["extractor_conv_layer_config"][-1][0]
    heads = PretrainHeads.from_state(loaded.pretrain_heads, conv_dim, loaded.spec.embed_dim, 2)
    model = Wav2Vec2Pretrainer(loaded.model, loaded.spec, heads, loaded.mask_embedding, num_negatives=negatives,
                               mask_length=mask_length, layerdrop=0.0).eval()
    hits, total = collections.Counter(), collections.Counter()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for waves in data:
            x, lengths = pad(waves)
            out = model(x, lengths, 0.5, gen, keep=True)
            speech = speech_frames(x, out.mask.shape[1])[out.mask]
            dist = edge_distance(out.mask)[out.mask]
            right = out.logits.argmax(-1) == 0
            for s, d, r in zip(speech.tolist(), dist.tolist(), right.tolist(), strict=True):
                band = next(name for top, name in BANDS if d <= top)
                key = ("speech" if s else "silence", band)
                total[key] += 1
                hits[key] += int(r)
    rows = {f"{kind} {band}": (hits[(kind, band)] / total[(kind, band)], total[(kind, band)])
            for kind in ("silence", "speech") for _, band in BANDS if total[(kind, band)]}
    for kind in ("silence", "speech"):
        n = sum(v for k, v in total.items() if k[0] == kind)
        if n:
            rows[f"{kind} all"] = (sum(v for k, v in hits.items() if k[0] == kind) / n, n)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unlabeled", type=Path, required=True, help="an unlabeled.jsonl (lowres prepare / synth)")
    ap.add_argument("--model", action="append", required=True, help="a --base: name, run folder or HF folder")
    ap.add_argument("--batches", type=int, default=4, help="batches of up to 30 s")
    ap.add_argument("--negatives", type=int, default=20)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()

    from lowres.bases import load_base

    data = batches(args.unlabeled, args.batches, args.seed)
    for name in args.model:
        loaded = load_base(name, seed=0)  # a name, a Hugging Face folder or a lowres run folder
        adj, rnd = coherence(loaded.model, data)
        print(f"{name}: quantizer-input cosine, adjacent speech frames {adj:.3f}, random pairs {rnd:.3f} "
              f"(difference {adj - rnd:+.3f})")
        if loaded.pretrain_heads:
            mask_length = 10
            config = Path(name) / "config.json"
            if config.is_file():
                mask_length = json.loads(config.read_text()).get("config", {}).get("model", {}).get("mask_length", 10)
            rows = frame_accuracy(loaded, data, args.negatives, mask_length)
            print(f"  contrastive accuracy in evaluation mode (chance {1 / (args.negatives + 1):.3f}), by frames "
                  "to the nearest unmasked frame:")
            for key, (acc, n) in rows.items():
                print(f"    {key:12s} {acc:.3f}  ({n} frames)")


if __name__ == "__main__":
    main()
