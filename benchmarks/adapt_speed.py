"""Throughput of `lowres adapt`'s objective against transformers' Wav2Vec2ForPreTraining, in one run.

    python benchmarks/adapt_speed.py --size small --batch 4 --seconds 4 --rounds 6 --work /tmp/adb
    python benchmarks/adapt_speed.py --size base --batch 4 --seconds 4 --rounds 4 --work /tmp/adb
    python benchmarks/adapt_speed.py --device cuda --size base --batch 8 --seconds 10 --rounds 20   # on a GPU

Figures, machine and commands: benchmarks/README.md.

Both sides start from the same random wav2vec 2.0 checkpoint written by transformers
(``Wav2Vec2ForPreTraining``, see finetune_speed.py for the sizes) and train the same thing: the whole
transformer and the pretraining heads (quantizer, project_q, project_hid), conv encoder frozen, span
masking p = 0.65 / length 10, 100 negatives, Gumbel temperature 2, contrastive + 0.1 × diversity loss
normalised by the number of masked frames, AdamW, clipping at 1.0, the checkpoint's dropouts and layerdrop.

- lowres: ``load_base(folder)`` (which imports the heads) + ``Wav2Vec2Pretrainer``; one step = what
  ``run_adapt``'s ``compute`` does: masks and negatives drawn inside the forward, the loss, backward,
  clip, ``optimizer.step()``. lowres also computes the feature penalty (β = 10 on a group-norm conv
  encoder, as fairseq); transformers has none.
- transformers: ``Wav2Vec2ForPreTraining.from_pretrained(folder)``, ``freeze_feature_encoder()``,
  ``set_gumbel_temperature(2)``; its example script draws ``mask_time_indices`` and
  ``sampled_negative_indices`` with numpy in the data collator, so that happens outside the timed step
  here; one step = ``model(input_values, mask_time_indices=..., sampled_negative_indices=...).loss /
  masked frames``, backward, clip, ``optimizer.step()``.

Timing: warm-up steps on each side, then ``--rounds`` rounds of one step per side, alternating which side
goes first, same batches and threads. Reported: audio seconds per wall second for each side, their ratio
(lowres / transformers; > 1 means lowres is faster) and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_speed import SAMPLE_RATE, speechlike, write_checkpoint  # noqa: E402

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
NEGATIVES, MASK_PROB, MASK_LEN, TAU, DIVERSITY = 100, 0.65, 10, 2.0, 0.1


def make_batches(n: int, batch: int, seconds: float, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[speechlike(seconds * rng.uniform(0.8, 1.0), rng) for _ in range(batch)] for _ in range(n)]


def lowres_side(folder: Path, device):
    from lowres.bases import load_base
    from lowres.model.pretrain import PretrainHeads, Wav2Vec2Pretrainer

    loaded = load_base(str(folder))
    conv_dim = loaded.spec.arch["extractor_conv_layer_config"][-1][0]
    heads = PretrainHeads.from_state(loaded.pretrain_heads, conv_dim, loaded.spec.embed_dim, 2)
    model = Wav2Vec2Pretrainer(loaded.model, loaded.spec, heads, loaded.mask_embedding, mask_prob=MASK_PROB,
                               mask_length=MASK_LEN, num_negatives=NEGATIVES, diversity_weight=DIVERSITY,
                               layerdrop=loaded.spec.arch.get("encoder_layer_drop", 0.0),
                               feature_penalty=10.0 if loaded.spec.arch.get("extractor_mode") == "group_norm"
                               else 0.0)
    model.freeze_feature_encoder = True
    model.backbone.feature_extractor.requires_grad_(False)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def prepare(waves: list[np.ndarray]):
        x = torch.zeros(len(waves), max(len(w) for w in waves))
        for i, w in enumerate(waves):
            x[i, : len(w)] = torch.from_numpy(w)
        return x.to(device), torch.tensor([len(w) for w in waves], device=device)

    def step(batch, seed: int) -> None:
        from lowres.runtime import autocast

        x, lengths = batch
        gen = torch.Generator().manual_seed(seed)
        with autocast(device, "auto"):
            res = model(x, lengths, TAU, gen)
        (res.loss * res.n_masked).backward()
        for p in params:
            if p.grad is not None:
                p.grad.div_(max(res.n_masked, 1))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return prepare, step


def hf_side(folder: Path, device):
    import transformers
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    model = transformers.Wav2Vec2ForPreTraining.from_pretrained(
        folder, mask_time_prob=MASK_PROB, mask_time_length=MASK_LEN, num_negatives=NEGATIVES,
        diversity_loss_weight=DIVERSITY)
    model.freeze_feature_encoder()
    model.set_gumbel_temperature(TAU)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)

    def prepare(waves: list[np.ndarray]):
        # what the example's DataCollatorForWav2Vec2Pretraining does, outside the timed step
        feats = extractor(waves, sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt")
        x = feats["input_values"]
        frames = int(model._get_feat_extract_output_lengths(x.shape[1]))
        mask = _compute_mask_indices((x.shape[0], frames), MASK_PROB, MASK_LEN, min_masks=2)
        neg = _sample_negative_indices((x.shape[0], frames), NEGATIVES, mask)
        return (x.to(device), torch.tensor(mask, dtype=torch.bool, device=device),
                torch.tensor(neg, dtype=torch.long, device=device))

    def step(batch, seed: int) -> None:
        x, mask, neg = batch
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
        with ctx:
            out = model(x, mask_time_indices=mask, sampled_negative_indices=neg)
        (out.loss / mask.sum()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return prepare, step


def _null():
    import contextlib

    return contextlib.nullcontext()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lowres-adapt-speed"))
    ap.add_argument("--size", choices=["small", "base"], default="small")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0, help="longest utterance (others 80-100%% of it)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device here.", file=sys.stderr)  # as finetune_speed.py
        raise SystemExit(2)
    folder = write_checkpoint(args.work / f"ckpt-{args.size}", args.size)
    raw = make_batches(args.rounds + args.warmup, args.batch, args.seconds, seed=0)
    seconds = [sum(len(w) for w in b) / SAMPLE_RATE for b in raw]
    sides = {"lowres": lowres_side(folder, device), "transformers": hf_side(folder, device)}
    prepared = {name: [prep(b) for b in raw] for name, (prep, _) in sides.items()}

    def timed(name: str, i: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        sides[name][1](prepared[name][i], seed=i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for i in range(args.warmup):
        for name in sides:
            timed(name, i)
    totals = {name: 0.0 for name in sides}
    ratios = []
    for r in range(args.rounds):
        i = args.warmup + r
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        t = {name: timed(name, i) for name in order}
        for name in sides:
            totals[name] += t[name]
        ratios.append(t["transformers"] / t["lowres"])
    audio = sum(seconds[args.warmup:])
    result = {
        "size": args.size, "batch": args.batch, "seconds": args.seconds, "rounds": args.rounds,
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "lowres_audio_s_per_s": audio / totals["lowres"],
        "transformers_audio_s_per_s": audio / totals["transformers"],
        "ratio": totals["transformers"] / totals["lowres"], "median_round_ratio": statistics.median(ratios),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
