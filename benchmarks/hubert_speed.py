"""HuBERT pretraining throughput: lowres's objective against torchaudio's ``HuBERTPretrainModel``, the same
architecture, weights, batch, masks and labels, measured alternately in one process.

- torchaudio: ``hubert_pretrain_model(...)`` forward (waveforms, labels, lengths) → masked logits, the
  examples/hubert loss (masked CE + 10 × feature penalty × masked frames), backward, Adam step;
- lowres: ``HubertPretrainer`` on the very same ``Wav2Vec2Model`` weights (copied), forward → loss, backward,
  Adam step; masks drawn by each (same p = 0.8, span 10).

    python benchmarks/hubert_speed.py --size small --batch 4 --seconds 8 --steps 6
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
import torch.nn.functional as F

SIZES = {  # conv channels, dim, layers, heads, ff
    "small": (256, 384, 8, 6, 1536),
    "base": (512, 768, 12, 12, 3072),
}


def build(size: str, num_classes: int):
    from torchaudio.models import hubert_pretrain_model

    from lowres.model.backbone import BackboneSpec
    from lowres.model.hubert import HubertHeads, HubertPretrainer

    ch, dim, layers, heads, ff = SIZES[size]
    conv = [(ch, 10, 5)] + [(ch, 3, 2)] * 4 + [(ch, 2, 2)] * 2
    torch.manual_seed(0)
    theirs = hubert_pretrain_model(
        extractor_mode="group_norm", extractor_conv_layer_config=conv, extractor_conv_bias=False,
        encoder_embed_dim=dim, encoder_projection_dropout=0.1, encoder_pos_conv_kernel=128, encoder_pos_conv_groups=16,
        encoder_num_layers=layers, encoder_num_heads=heads, encoder_attention_dropout=0.1,
        encoder_ff_interm_features=ff, encoder_ff_interm_dropout=0.0, encoder_dropout=0.1,
        encoder_layer_norm_first=False, encoder_layer_drop=0.05, mask_prob=0.8, mask_selection="static",
        mask_other=0.0, mask_length=10, no_mask_overlap=False, mask_min_space=1, mask_channel_prob=0.0,
        mask_channel_selection="static", mask_channel_other=0.0, mask_channel_length=10,
        no_mask_channel_overlap=False, mask_channel_min_space=1, skip_masked=False, skip_nomask=True,
        num_classes=num_classes, final_dim=256, feature_grad_mult=0.1)
    arch = {"extractor_mode": "group_norm", "extractor_conv_layer_config": conv, "extractor_conv_bias": False,
            "encoder_embed_dim": dim, "encoder_num_layers": layers}
    spec = BackboneSpec("hubert", arch, False, True, f"bench-{size}")
    h = HubertHeads(dim, num_classes, 256)
    h.final_proj.load_state_dict(theirs.logit_generator.final_proj.state_dict())
    h.label_embeddings.data.copy_(theirs.logit_generator.label_embeddings.data)
    ours = HubertPretrainer(copy.deepcopy(theirs.wav2vec2), spec, h, theirs.mask_generator.mask_embedding.data,
                            mask_prob=0.8, layerdrop=0.05, feature_penalty=10.0, feature_grad_mult=0.1)
    ours.freeze_feature_encoder = False
    return theirs.train(), ours.train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--classes", type=int, default=100)
    args = ap.parse_args()
    theirs, ours = build(args.size, args.classes)
    n = int(args.seconds * 16000)
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(args.batch, n, generator=g) * 0.1
    lengths = torch.full((args.batch,), n)
    frames = theirs.wav2vec2.feature_extractor(waves[:1], None)[0].shape[1]
    labels = torch.randint(0, args.classes, (args.batch, frames), generator=g)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-5)
    opt_o = torch.optim.Adam(ours.parameters(), lr=1e-5)

    def step_theirs():
        logit_m, _, pen = theirs(waves, labels, lengths)
        k = logit_m.shape[0]
        loss = (F.cross_entropy(logit_m, torch.zeros(k, dtype=torch.long), reduction="sum") + 10.0 * pen * k) / k
        loss.backward()
        opt_t.step()
        opt_t.zero_grad(set_to_none=True)

    def step_ours(i):
        out = ours(waves, lengths, labels, torch.Generator().manual_seed(i))
        out.loss.backward()
        opt_o.step()
        opt_o.zero_grad(set_to_none=True)

    step_theirs()
    step_ours(0)  # warm-up
    times = {"torchaudio": [], "lowres": []}
    for i in range(args.steps):
        t = time.perf_counter()
        step_theirs()
        times["torchaudio"].append(time.perf_counter() - t)
        t = time.perf_counter()
        step_ours(i + 1)
        times["lowres"].append(time.perf_counter() - t)
    audio = args.batch * args.seconds
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"size {args.size}, batch {args.batch} x {args.seconds:g} s, {args.steps} steps each, threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    for k, v in med.items():
        print(f"  {k:10s} median {v:.3f} s/update  {audio / v:.1f} audio-s/s")
    print(f"  ratio lowres / torchaudio throughput: {med['torchaudio'] / med['lowres']:.2f}x")


if __name__ == "__main__":
    main()
