"""Does lowres' pretraining objective learn as fast as transformers' Wav2Vec2ForPreTraining? One loop, two models.

    python benchmarks/adapt_learning.py --unlabeled /tmp/quality/prepared/unlabeled.jsonl --steps 300 \
        --threads 1 --json /tmp/adapt_learning.json

Figures, machine and commands: benchmarks/README.md ("Does adapt help?").

Both sides start from the same random checkpoint written by transformers (the architecture of lowres'
``tiny``: 7 conv layers of 64 channels, 4 transformer layers of 144, pre-LayerNorm; G=2 x V=320 quantizer,
256-dim targets; its dropouts: 0.1 on the hidden states, the projected features and the quantizer input) and
see the same batches: pieces of the manifest drawn at random (seeded), each normalised, cropped to 15.6 s,
up to 30 s of padded audio per batch. Each side trains for ``--steps`` updates with the same AdamW
(0.9, 0.98, eps 1e-6, wd 0.01), 10% linear warm-up then linear decay from ``--lr``, clipping at 10, the Gumbel
temperature 2 -> 0.5 over the run, 20 negatives, the conv encoder trained, no layerdrop:

- transformers: ``Wav2Vec2ForPreTraining``; masks from ``_compute_mask_indices`` (p 0.65, span 10, >= 2
  spans), negatives from ``_sample_negative_indices``; loss = its ``loss`` / masked frames.
- lowres: ``load_base(folder)`` (which imports the heads) + ``Wav2Vec2Pretrainer`` (masks and negatives
  drawn inside); loss = its ``loss`` (already per masked frame).

Reported per window of 10 updates: contrastive accuracy (positive ranked first among it and its negatives,
an identical negative ignored) and contrastive loss per masked frame (chance: ln 21 = 3.04); the last
``--tail`` windows are averaged for the summary. The two sides use different random streams for masks,
negatives, Gumbel noise and dropout, so single windows differ by noise; compare the averages.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 16000


def tiny_config():
    import transformers

    return transformers.Wav2Vec2Config(
        conv_dim=[64] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2], conv_bias=True,
        feat_extract_norm="layer", do_stable_layer_norm=True, hidden_size=144, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=576, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8,
        hidden_dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.1,
        feat_quantizer_dropout=0.1, layerdrop=0.0, num_codevector_groups=2, num_codevectors_per_group=320,
        codevector_dim=256, proj_codevector_dim=256, num_negatives=20, mask_time_prob=0.65, mask_time_length=10,
        diversity_loss_weight=0.1, vocab_size=32)


def batches(manifest: Path, steps: int, seed: int, max_seconds: float = 30.0):
    """``steps`` lists of normalised waveforms (the same for both sides)."""
    from lowres.data import audio as audio_mod
    from lowres.data.manifest import read_manifest

    rows = list(read_manifest(manifest))
    rng = random.Random(seed)
    out, pending = [], None
    crop = int(15.6 * SR)
    while len(out) < steps:
        waves = [pending] if pending is not None else []
        pending = None
        while True:
            u = rng.choice(rows)
            w = audio_mod.load(u.audio_filepath, u.offset, u.duration)
            if len(w) < 2 * SR:
                continue
            if len(w) > crop:
                s = rng.randrange(len(w) - crop)
                w = w[s:s + crop]
            w = (w - w.mean()) / (w.std() + 1e-7)
            if waves and (len(waves) + 1) * max(max(len(x) for x in waves), len(w)) / SR > max_seconds:
                pending = w
                break
            waves.append(w)
        out.append(waves)
    return out


def pad(waves):
    length = max(len(w) for w in waves)
    x = torch.zeros(len(waves), length)
    for i, w in enumerate(waves):
        x[i, :len(w)] = torch.from_numpy(w)
    return x, torch.tensor([len(w) for w in waves])


def schedule(step: int, steps: int, lr: float) -> float:
    warm = max(1, int(0.1 * steps))
    return lr * min((step + 1) / warm, max(0.0, (steps - step) / max(steps - warm, 1)))


def hf_step(model, x, lengths, step, steps):
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    b, n = x.shape
    am = (torch.arange(n)[None] < lengths[:, None]).long()
    frames = int(model._get_feat_extract_output_lengths(n))
    sub = model._get_feature_vector_attention_mask(frames, am)
    mask = _compute_mask_indices((b, frames), 0.65, 10, attention_mask=sub, min_masks=2)
    neg = _sample_negative_indices((b, frames), 20, mask)
    mask = torch.tensor(mask, dtype=torch.bool)
    neg = torch.tensor(neg, dtype=torch.long)
    model.set_gumbel_temperature(max(2.0 * 0.25 ** (step / steps), 0.5))
    out = model(x, attention_mask=am, mask_time_indices=mask, sampled_negative_indices=neg)
    masked = int(mask.sum())
    with torch.no_grad():
        q = out.projected_quantized_states
        f = q.shape[-1]
        negs = q.reshape(-1, f)[neg.view(-1)].view(b, frames, -1, f)
        logits = torch.cosine_similarity(out.projected_states[:, :, None].float(),
                                         torch.cat([q[:, :, None], negs], 2).float(), dim=-1)
        logits[:, :, 1:] = logits[:, :, 1:].masked_fill((negs == q[:, :, None]).all(-1), float("-inf"))
        acc = float((logits.argmax(-1) == 0)[mask].float().mean())
    return out.loss / masked, acc, float(out.contrastive_loss.detach()) / masked


def lowres_step(model, x, lengths, step, steps, gen):
    from lowres.model.pretrain import temperature_at

    out = model(x, lengths, temperature_at(step, 2.0, 0.5, 0.0, steps), gen)
    return out.loss, out.accuracy, out.contrastive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unlabeled", type=Path, required=True, help="an unlabeled.jsonl (lowres prepare / synth)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tail", type=int, default=10, help="windows of 10 updates averaged for the summary")
    ap.add_argument("--work", type=Path, default=Path("/tmp/adapt_learning"), help="where the checkpoint goes")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import transformers

    from lowres.bases import load_base
    from lowres.model.pretrain import PretrainHeads, Wav2Vec2Pretrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    hf = transformers.Wav2Vec2ForPreTraining(tiny_config())
    args.work.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(args.work / "init")
    loaded = load_base(str(args.work / "init"))
    heads = PretrainHeads.from_state(loaded.pretrain_heads, 64, 144, 2)
    ours = Wav2Vec2Pretrainer(loaded.model, loaded.spec, heads, loaded.mask_embedding, num_negatives=20,
                              layerdrop=0.0, feature_penalty=0.0, feature_dropout=0.1)
    ours.freeze_feature_encoder = False
    data = batches(args.unlabeled, args.steps, args.seed)
    print(f"{args.steps} batches, {sum(len(w) for b in data for w in b) / SR / 3600:.2f} h of audio", flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    np.random.seed(args.seed)
    report = {"steps": args.steps, "lr": args.lr, "threads": args.threads, "torch": torch.__version__,
              "transformers": transformers.__version__, "sides": {}}
    for side, model in (("transformers", hf), ("lowres", ours)):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
        windows, accs, losses = [], [], []
        started = time.perf_counter()
        for step, waves in enumerate(data):
            for g in opt.param_groups:
                g["lr"] = schedule(step, args.steps, args.lr)
            x, lengths = pad(waves)
            if side == "transformers":
                loss, acc, contrastive = hf_step(model, x, lengths, step, args.steps)
            else:
                loss, acc, contrastive = lowres_step(model, x, lengths, step, args.steps, gen)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            accs.append(acc)
            losses.append(contrastive)
            if (step + 1) % 10 == 0:
                windows.append({"step": step + 1, "accuracy": sum(accs[-10:]) / 10,
                                "contrastive": sum(losses[-10:]) / 10})
                print(f"{side:12s} update {step + 1:4d}  accuracy {windows[-1]['accuracy']:.3f}  contrastive "
                      f"{windows[-1]['contrastive']:.3f}  {time.perf_counter() - started:.0f} s", flush=True)
        tail = windows[-args.tail:]
        report["sides"][side] = {"windows": windows, "seconds": time.perf_counter() - started,
                                 "tail_accuracy": sum(w["accuracy"] for w in tail) / len(tail),
                                 "tail_contrastive": sum(w["contrastive"] for w in tail) / len(tail)}
    for side, r in report["sides"].items():
        print(f"{side}: last {len(tail) * 10} updates: accuracy {r['tail_accuracy']:.3f}, contrastive "
              f"{r['tail_contrastive']:.3f}, {r['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
