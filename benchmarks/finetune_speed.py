"""Training speed of `lowres finetune` against transformers' Wav2Vec2ForCTC + peft LoRA, in one run.

    python benchmarks/finetune_speed.py --size base --batch 4 --steps 4 --threads 1 --work /tmp/ftb
    python benchmarks/finetune_speed.py --size small --batch 4 --steps 8 --json small.json
    python benchmarks/finetune_speed.py --device cuda --size base --batch 8 --steps 40 --pool 64   # on a GPU

Figures, machine and the exact commands behind them: benchmarks/README.md.

Both sides start from the same random *base-sized* wav2vec 2.0 checkpoint, written once by transformers
(``Wav2Vec2ForPreTraining`` + a ``Wav2Vec2FeatureExtractor``, group-norm conv encoder like
facebook/wav2vec2-base), and train the same thing: LoRA r=8, alpha=16 on q/k/v/out_proj and both
feed-forward linears, a new CTC head, conv encoder frozen, time masking 0.65/10, channel masking 0.25/64,
the same layerdrop (``--layerdrop``, default 0), the checkpoint's dropouts, AdamW on the trainable
parameters, gradient clipping at 1.0. Both keep the checkpoint's mask embedding frozen under LoRA.

- lowres: ``load_base(folder)`` + ``build_ctc_model(FinetuneConfig(...), V, loaded)``, one step = what
  ``run_finetune``'s ``compute`` does (``model(waves, lengths, gen)`` under ``lowres.runtime.autocast``,
  per-utterance ``ctc_loss``, sum / utterances, backward) + clip + ``optimizer.step()``.
- transformers: ``Wav2Vec2ForCTC.from_pretrained(folder, mask_time_prob=0.65, ...)``,
  ``freeze_feature_encoder()``, ``get_peft_model(LoraConfig(r=8, lora_alpha=16, target_modules=[...],
  modules_to_save=["lm_head"]))``, one step = ``model(input_values, labels=labels).loss.backward()`` + clip +
  ``optimizer.step()`` (on CUDA: fp16 autocast + GradScaler, as the Hugging Face CTC example's ``--fp16``).

Inputs: the HF side gets what its feature extractor gives (per-utterance normalised, zero padded, no
``attention_mask``: wav2vec2-base's processor returns none because its group norm would see padding anyway;
``--hf-attention-mask`` passes one). The extractor runs outside the timed step (the HF example applies it
in ``dataset.map``); lowres normalises inside its forward, so that cost is in lowres's time.

Timing: warm-up steps on each side, then ``--rounds`` rounds (default: one step per side per round),
alternating which side goes first, in one process with the same batches and threads. Figures: audio
seconds trained per wall second for each side and their ratio (lowres / HF; > 1 means lowres is faster),
plus the median of the per-round ratios, which a round slowed down by another process barely moves.

Peak memory: on CPU each side runs again in a fresh subprocess: build the model and the batches, reset
the kernel's RSS high-water mark (VmHWM, through /proc/self/clear_refs, so checkpoint loading does not
count), run ``--memory-steps`` steps, read VmHWM, with glibc's mmap threshold fixed so that RSS follows
live memory. Reported: that peak, the RSS before training (Python, torch, the model, the batches) and the
difference. On CUDA:
``torch.cuda.max_memory_allocated`` per side, in process.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load reports for the unused pretraining heads

SAMPLE_RATE = 16000
VOCAB_SIZE = 32  # id 0 = CTC blank (= HF pad token id), labels drawn from 1..31
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"]

# wav2vec2-base (facebook/wav2vec2-base config.json), and a smaller model with the same 20 ms frames
_CONV = dict(conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=False,
             feat_extract_norm="group", do_stable_layer_norm=False, feat_extract_activation="gelu")
SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, **_CONV),
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                  conv_dim=(256,) * 7, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16, **_CONV),
}


# ---------------------------------------------------------------------------------------------------
# the shared checkpoint and data


def write_checkpoint(folder: Path, size: str, seed: int = 0) -> Path:
    """A random wav2vec 2.0 checkpoint of ``size`` written by transformers (reused when present)."""
    import transformers

    marker = folder / f".complete-{size}-{seed}"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = transformers.Wav2Vec2Config(vocab_size=VOCAB_SIZE, **SIZES[size])
    transformers.Wav2Vec2ForPreTraining(cfg).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                          do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    marker.write_text("ok")
    return folder


def speechlike(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced harmonics with a wandering pitch, syllable-rate amplitude modulation, pauses and noise."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(90, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    x = 0.1 * voiced * envelope + 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


def make_pool(n: int, seconds: tuple[float, float], seed: int) -> list[dict]:
    """``n`` utterances of uniform random duration with random label sequences (≈ 12 symbols per second,
    well under the 50 frames per second CTC needs)."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(n):
        dur = float(rng.uniform(*seconds))
        labels = rng.integers(1, VOCAB_SIZE, size=max(1, int(12 * dur))).tolist()
        pool.append({"wave": speechlike(dur, rng), "labels": labels, "seconds": dur})
    return pool


def fixed_batches(pool: list[dict], batch: int) -> list[list[int]]:
    return [list(range(i, i + batch)) for i in range(0, len(pool) - batch + 1, batch)]


def lowres_batch(items: list[dict], device):
    from lowres.data.batching import Batch

    waves = torch.zeros(len(items), max(len(it["wave"]) for it in items))
    lengths = torch.tensor([len(it["wave"]) for it in items])
    for i, it in enumerate(items):
        waves[i, : len(it["wave"])] = torch.from_numpy(it["wave"])
    targets = torch.tensor([t for it in items for t in it["labels"]])
    b = Batch(waves, lengths, list(range(len(items))), targets, torch.tensor([len(it["labels"]) for it in items]))
    return b.to(device)


def hf_batch(items: list[dict], extractor, attention_mask: bool, device) -> dict:
    feats = extractor([it["wave"] for it in items], sampling_rate=SAMPLE_RATE, padding=True,
                      return_attention_mask=attention_mask, return_tensors="pt")
    longest = max(len(it["labels"]) for it in items)
    labels = torch.full((len(items), longest), -100, dtype=torch.long)
    for i, it in enumerate(items):
        labels[i, : len(it["labels"])] = torch.tensor(it["labels"])
    out = {"input_values": feats["input_values"].to(device), "labels": labels.to(device)}
    if attention_mask:
        out["attention_mask"] = feats["attention_mask"].to(device)
    return out


# ---------------------------------------------------------------------------------------------------
# the two trainers


class LayerCounter:
    """Counts transformer layers actually run (layerdrop skips some), to show both sides did equal work."""

    def __init__(self, layers):
        self.count = 0
        for layer in layers:
            layer.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.count += 1


class LowresSide:
    name = "lowres"

    def __init__(self, folder: Path, args, device):
        from lowres.bases import load_base
        from lowres.config import FinetuneConfig, LoraSettings, ModelConfig
        from lowres.model.build import build_ctc_model

        cfg = FinetuneConfig(model=ModelConfig(layerdrop=args.layerdrop, mask_prob=0.65, mask_length=10,
                                               mask_channel_prob=0.25, mask_channel_length=64),
                             lora=LoraSettings(rank=8, alpha=16.0, dropout=0.0))
        loaded = load_base(str(folder), seed=0)
        self.model, info = build_ctc_model(cfg, VOCAB_SIZE, loaded)
        assert info.lora and not info.feature_encoder_trained
        self.model.to(device).train()
        self.model.transformer_frozen = False  # the LoRA phase, not the head-only phase
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=5e-4, betas=(0.9, 0.98), eps=1e-8)
        self.device = device
        self.layers = LayerCounter(self.model.backbone.encoder.transformer.layers)
        self.batches: list = []
        self.step_no = 0

    def prepare(self, pool, batches):
        self.batches = [lowres_batch([pool[i] for i in idx], self.device) for idx in batches]

    def step(self, k: int) -> float:
        from lowres.model.ctc import ctc_loss
        from lowres.runtime import autocast, step_seed

        b = self.batches[k % len(self.batches)]
        self.step_no += 1
        torch.manual_seed(step_seed(0, self.step_no))
        gen = torch.Generator().manual_seed(step_seed(0, self.step_no, salt=1))
        with autocast(self.device, "auto"):
            logits, frames = self.model(b.waves, b.lengths, gen)
        losses = ctc_loss(logits, frames, b.targets.to(self.device), b.target_lengths.to(self.device))
        (losses.sum() / b.size).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(b.lengths.sum()) / SAMPLE_RATE


class HFSide:
    name = "transformers+peft"

    def __init__(self, folder: Path, args, device):
        import transformers
        from peft import LoraConfig, get_peft_model

        model = transformers.Wav2Vec2ForCTC.from_pretrained(
            str(folder), vocab_size=VOCAB_SIZE, pad_token_id=0, mask_time_prob=0.65, mask_time_length=10,
            mask_feature_prob=0.25, mask_feature_length=64, layerdrop=args.layerdrop, final_dropout=0.0,
            ctc_loss_reduction="mean", ctc_zero_infinity=True)
        model.freeze_feature_encoder()
        self.attn_implementation = model.config._attn_implementation
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                            modules_to_save=["lm_head"])
        self.model = get_peft_model(model, config)
        self.model.to(device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=5e-4, betas=(0.9, 0.98), eps=1e-8)
        self.device = device
        self.fp16 = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.fp16 else None
        self.extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(folder))
        self.attention_mask = args.hf_attention_mask
        self.layers = LayerCounter(model.wav2vec2.encoder.layers)
        self.batches: list = []

    def prepare(self, pool, batches):
        self.batches = [hf_batch([pool[i] for i in idx], self.extractor, self.attention_mask, self.device)
                        for idx in batches]
        self.seconds = [sum(len(pool[i]["wave"]) for i in idx) / SAMPLE_RATE for idx in batches]

    def step(self, k: int) -> float:
        b = self.batches[k % len(self.batches)]
        amp = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with amp:
            loss = self.model(**b).loss
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.seconds[k % len(self.batches)]


SIDES = {"lowres": LowresSide, "hf": HFSide}


def own_batches(pool: list[dict], batch: int, side: str, seed: int) -> list[list[int]]:
    """Each side's own length grouping (GPU comparison): transformers' LengthGroupedSampler with ``batch``
    utterances (``--group_by_length``), lowres's duration-bucketed sampler with the same padded-seconds
    budget as a batch of the longest utterances."""
    if side == "hf":
        from transformers.trainer_pt_utils import LengthGroupedSampler

        g = torch.Generator().manual_seed(seed)
        order = list(LengthGroupedSampler(batch, lengths=[len(it["wave"]) for it in pool], generator=g))
        return [order[i: i + batch] for i in range(0, len(order) - batch + 1, batch)]
    from lowres.data.batching import BucketBatchSampler

    budget = batch * max(it["seconds"] for it in pool)
    return BucketBatchSampler([it["seconds"] for it in pool], budget, seed=seed).epoch_batches(0)


# ---------------------------------------------------------------------------------------------------
# measurement


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_block(side, device, first: int, steps: int) -> tuple[float, float]:
    sync(device)
    t0 = time.perf_counter()
    audio = sum(side.step(first + k) for k in range(steps))
    sync(device)
    return audio, time.perf_counter() - t0


def _status_kb(key: str) -> int:
    m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) if m else 0


def memory_probe(args) -> dict:
    """(in a fresh subprocess) RSS once the model is built and the batches made, then the peak RSS over
    ``--memory-steps`` training steps (the first step included: it is when the memory is first taken)."""
    device = torch.device("cpu")
    pool = make_pool(args.pool, (args.min_seconds, args.seconds), args.seed)
    side = SIDES[args.memory_probe](Path(args.folder), args, device)
    side.prepare(pool, fixed_batches(pool, args.batch))
    gc.collect()
    built_mb = _status_kb("VmRSS") / 1024
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS: loading does not count
        resettable = True
    except OSError:
        resettable = False
    for k in range(args.memory_steps):
        side.step(k)
    peak_mb = _status_kb("VmHWM") / 1024
    return {"peak_rss_mb": round(peak_mb, 1), "rss_before_training_mb": round(built_mb, 1),
            "training_increment_mb": round(peak_mb - built_mb, 1), "peak_reset_after_build": resettable}


def cpu_memory(side: str, args, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--memory-probe", side, "--folder", str(folder), "--size", args.size,
           "--batch", str(args.batch), "--seconds", str(args.seconds), "--min-seconds", str(args.min_seconds),
           "--threads", str(args.threads), "--layerdrop", str(args.layerdrop), "--pool", str(args.pool),
           "--seed", str(args.seed), "--memory-steps", str(args.memory_steps)]
    if args.hf_attention_mask:
        cmd.append("--hf-attention-mask")
    # glibc's malloc raises its mmap threshold as large blocks are freed and then keeps freed memory in its
    # heap, so RSS would remember checkpoint loading and lag behind what is alive; a fixed threshold puts
    # every block over 128 KiB in its own mapping, returned on free, so RSS follows live memory
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine(device) -> dict:
    import peft
    import torchaudio
    import transformers

    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else ""
    info = {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--batch", type=int, default=4, help="utterances per step (both sides)")
    ap.add_argument("--seconds", type=float, default=8.0, help="longest utterance; durations are uniform in "
                    "[--min-seconds, --seconds]")
    ap.add_argument("--min-seconds", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per side")
    ap.add_argument("--rounds", type=int, default=0, help="alternating blocks per side (default: --steps, "
                    "i.e. one step per block: the finest interleaving, best on a shared machine)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = all cores)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast for lowres, fp16 + GradScaler "
                    "for transformers)")
    ap.add_argument("--layerdrop", type=float, default=0.0, help="both sides (default 0: identical work per "
                    "step; at lowres's 0.1 each side skips layers at random and the ratio also measures luck, "
                    "see layers_run_per_step)")
    ap.add_argument("--hf-attention-mask", action="store_true", help="give HF the attention mask too")
    ap.add_argument("--grouping", choices=["same", "own"], default=None,
                    help="same: identical fixed batches for both sides (default on CPU); own: each side's own "
                    "length grouping over the pool (default on CUDA: HF's group_by_length vs lowres's buckets)")
    ap.add_argument("--pool", type=int, default=0, help="utterances generated (default: 4 batches' worth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for the checkpoint (default: a temp dir)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses (CPU)")
    ap.add_argument("--memory-steps", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    ap.add_argument("--memory-probe", choices=sorted(SIDES), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.pool = args.pool or 4 * args.batch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    args.threads = threads
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return 0

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device here.", file=sys.stderr)
        return 2
    grouping = args.grouping or ("own" if device.type == "cuda" else "same")
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lowres-ft-bench-")))
        folder = write_checkpoint(work / f"w2v2-{args.size}", args.size, args.seed)
        pool = make_pool(args.pool, (args.min_seconds, args.seconds), args.seed)
        sides = {}
        for key, cls in SIDES.items():
            torch.manual_seed(args.seed)
            sides[key] = cls(folder, args, device)
            batches = own_batches(pool, args.batch, key, args.seed) if grouping == "own" else \
                fixed_batches(pool, args.batch)
            sides[key].prepare(pool, batches)

        for side in sides.values():  # warm-up (allocator, thread pools, kernels)
            for k in range(args.warmup):
                side.step(k)
        totals = {k: [0.0, 0.0] for k in sides}
        blocks: dict[str, list[float]] = {k: [] for k in sides}  # audio-s/s of each block
        peaks = {k: 0 for k in sides}
        load_before = os.getloadavg()
        rounds = max(1, min(args.rounds or args.steps, args.steps))
        per_round = [args.steps // rounds + (1 if r < args.steps % rounds else 0) for r in range(rounds)]
        done = 0
        for side in sides.values():
            side.layers.count = 0
        for r, n in enumerate(per_round):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for key in order:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                audio, seconds = timed_block(sides[key], device, args.warmup + done, n)
                totals[key][0] += audio
                totals[key][1] += seconds
                blocks[key].append(audio / seconds)
                if device.type == "cuda":
                    peaks[key] = max(peaks[key], torch.cuda.max_memory_allocated(device))
                print(f"round {r + 1}/{rounds} {key:7s} {n} steps {seconds:7.2f}s  {audio / seconds:6.2f} audio-s/s",
                      file=sys.stderr)
            done += n

        result: dict = {"size": args.size, "batch": args.batch, "seconds": [args.min_seconds, args.seconds],
                        "device": str(device), "threads": threads, "steps": args.steps, "warmup": args.warmup,
                        "rounds": rounds, "layerdrop": args.layerdrop, "grouping": grouping,
                        "hf_attention_mask": args.hf_attention_mask,
                        "hf_attn_implementation": sides["hf"].attn_implementation,
                        "precision": {"lowres": "bf16 autocast" if device.type == "cuda" else "fp32",
                                      "hf": "fp16 autocast + GradScaler" if device.type == "cuda" else "fp32"},
                        "machine": machine(device),
                        "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                        "sides": {}}
        n_layers = SIZES[args.size]["num_hidden_layers"]
        for key, side in sides.items():
            audio, seconds = totals[key]
            result["sides"][key] = {
                "audio_seconds": round(audio, 2), "wall_seconds": round(seconds, 2),
                "audio_s_per_s": round(audio / seconds, 3),
                "trainable_parameters": sum(p.numel() for p in side.params),
                "layers_run_per_step": round(side.layers.count / max(args.steps, 1), 2),
                "layers": n_layers}
            if device.type == "cuda":
                result["sides"][key]["peak_memory_mb"] = round(peaks[key] / 2**20, 1)
                result["sides"][key]["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
        del sides
        gc.collect()
        if device.type == "cpu" and not args.no_memory:
            for key in SIDES:
                mem = cpu_memory(key, args, folder)
                result["sides"][key].update(mem)
                result["sides"][key]["peak_memory_mb"] = mem["peak_rss_mb"]
                result["sides"][key]["peak_memory_kind"] = "peak RSS of training steps (fresh process)"
        lo, hf = result["sides"]["lowres"]["audio_s_per_s"], result["sides"]["hf"]["audio_s_per_s"]
        result["ratio_lowres_over_hf"] = round(lo / hf, 3) if hf > 0 and math.isfinite(hf) else None
        # the same ratio per round (each round runs both sides back to back): its median shrugs off a
        # round that another process on the machine slowed down
        pairs = [a / b for a, b in zip(blocks["lowres"], blocks["hf"], strict=True)]
        result["ratio_median_of_rounds"] = round(statistics.median(pairs), 3)

    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
