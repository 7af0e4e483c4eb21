"""Discovered units: the targets of HuBERT-style masked prediction (``lowres adapt --objective hubert``).

features of every piece → k-means (scikit-learn's MiniBatchKMeans, fit on a bounded, seeded sample of
frames, a capped number of passes) → each frame's nearest centroid, assigned in torch in batches.

Two kinds of features (``units.targets``):

- ``mfcc``: 13 Kaldi-compatible cepstra without energy + deltas + delta-deltas (39 dims) at 100 Hz, as
  HuBERT's first iteration; a 50 Hz model frame t takes the label of MFCC frame 2t (fairseq's
  ``feat2tar_ratio``);
- ``layer:N``: the output of transformer layer N of the base (HuBERT's second iteration: layer 6 of 12 of the
  first iteration's model), at the model's own 50 Hz.

Stored in ``RUN/units/`` without pickle: ``centroids.safetensors`` (K × D), ``units.safetensors`` (every
piece's units, concatenated int16, with offsets), ``units.json`` (the pieces in order, the settings, the
report: clusters used, frames sampled, inertia, seconds). ``adapt --units DIR`` reuses such a folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowres import LowresError
from lowres.audiotime import FRAME_RATE, SAMPLE_RATE, STANDARD_CONV, WHISPER_STACK, frames

MFCC_HZ = 100  # Kaldi MFCC frames (10 ms shift)
CENTROIDS = "centroids.safetensors"
UNITS = "units.safetensors"
INDEX = "units.json"


def parse_targets(targets: str, num_layers: int, pretrained: bool) -> tuple[str, int]:
    """``("mfcc", 0)`` or ``("layer", N)`` from ``units.targets`` (``auto``: MFCC for a random-init base, the
    middle layer of a pretrained one)."""
    if targets == "auto":
        return ("layer", max(1, num_layers // 2)) if pretrained else ("mfcc", 0)
    if targets == "mfcc":
        return "mfcc", 0
    if targets.startswith("layer:"):
        try:
            n = int(targets.split(":", 1)[1])
        except ValueError:
            n = -1
        if not 1 <= n <= num_layers:
            raise LowresError(f"--targets {targets}: the base has transformer layers 1 to {num_layers}; give "
                              f"layer:N with N in that range (HuBERT's second iteration uses the middle one, "
                              f"layer:{max(1, num_layers // 2)}).")
        return "layer", n
    raise LowresError(f"--targets {targets!r}: use mfcc, layer:N (a transformer layer of the base) or auto.")


def default_clusters(kind: str) -> int:
    """HuBERT's K: MFCC_CLUSTERS (100) in iteration 1, LAYER_CLUSTERS (500) afterwards (lowres.config)."""
    from lowres.config import LAYER_CLUSTERS, MFCC_CLUSTERS

    return MFCC_CLUSTERS if kind == "mfcc" else LAYER_CLUSTERS


class FeatureSource:
    """Frame features of one waveform (1-D float32 at 16 kHz) → (frames at 50 Hz, D) float32."""

    def __init__(self, kind: str, conv_stack, layer: int = 0, loaded=None, device="cpu"):
        if tuple(tuple(c) for c in conv_stack) not in (STANDARD_CONV, WHISPER_STACK):
            raise LowresError("--objective hubert needs the standard 20 ms frames (conv kernels 10,3,3,3,3,2,2 and "
                              "strides 5,2,2,2,2,2,2): MFCC labels at 100 Hz map onto them two to one.")
        self.kind, self.layer, self.loaded, self.device = kind, layer, loaded, torch.device(device)
        if kind == "layer":
            self.model = loaded.model.to(self.device).eval()

    @property
    def label(self) -> str:
        """What the features are, in words (the units report and the log)."""
        return "39-dim MFCC (+delta, delta-delta)" if self.kind == "mfcc" else f"layer {self.layer} of the base"

    @torch.no_grad()
    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        n = frames(len(wave))
        if self.kind == "mfcc":
            mfcc = mfcc_features(torch.from_numpy(wave))
            idx = torch.clamp(torch.arange(n) * 2, max=max(len(mfcc) - 1, 0))  # frame t takes MFCC frame 2t
            return mfcc[idx] if len(mfcc) else torch.zeros(n, 39)
        from lowres.model.backbone import (
            WHISPER,
            encoder_input,
            encoder_states,
            front_end,
            normalize_waveform,
        )

        x = torch.from_numpy(wave)[None].to(self.device)
        spec = self.loaded.spec
        if spec.family == WHISPER:  # Whisper's frames come from its log-mel front end, at the same 50 Hz
            lengths = torch.tensor([x.shape[1]], device=self.device)
            feats, counts = front_end(self.model, spec, x, lengths)
            states = encoder_states(self.model, spec, *encoder_input(self.model, spec, feats, counts), keep_all=True)
            out = states[self.layer][0].float().cpu()
            return torch.cat([out, out[-1:].expand(max(0, n - len(out)), -1)])[:n]
        if spec.normalize_waveform:
            x = normalize_waveform(x, None)
        outs, _ = self.model.extract_features(x, None, num_layers=self.layer)
        return outs[-1][0].float().cpu()[:n]


def mfcc_features(wave: torch.Tensor) -> torch.Tensor:
    """(T,) float32 → (frames at 100 Hz, 39): fairseq's HuBERT MFCC features."""
    import torchaudio

    if len(wave) < 400:
        return torch.zeros(0, 39)
    mfcc = torchaudio.compliance.kaldi.mfcc(wave[None].float(), sample_frequency=SAMPLE_RATE, use_energy=False)
    mfcc = mfcc.transpose(0, 1)  # (13, T)
    deltas = torchaudio.functional.compute_deltas(mfcc)
    ddeltas = torchaudio.functional.compute_deltas(deltas)
    return torch.cat([mfcc, deltas, ddeltas], dim=0).transpose(0, 1).contiguous()


@dataclass(frozen=True)
class Units:
    """Per-piece units of an unlabeled manifest (rows in the manifest's order)."""

    ids: list[str]
    offsets: torch.Tensor  # (n + 1,) int64 into ``flat``
    flat: torch.Tensor  # (total frames,) int16
    clusters: int
    info: dict  # how they were made and the k-means report

    def of(self, index: int) -> torch.Tensor:
        return self.flat[int(self.offsets[index]): int(self.offsets[index + 1])].long()

    def save(self, folder: Path, centroids: torch.Tensor) -> None:
        from lowres.fsutil import atomic_write_json, save_safetensors

        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors(folder / CENTROIDS, {"centroids": centroids.float()})
        save_safetensors(folder / UNITS, {"units": self.flat, "offsets": self.offsets})
        atomic_write_json(folder / INDEX, {**self.info, "clusters": self.clusters, "pieces": self.ids})

    @classmethod
    def load(cls, folder: Path) -> Units:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / INDEX).is_file() or not (folder / UNITS).is_file():
            raise LowresError(f"{folder} holds no units ({INDEX} and {UNITS} are written by `lowres adapt "
                              "--objective hubert` into RUN/units/). Give that folder, or drop --units to make them.")
        meta = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / UNITS))
        ids = list(meta.pop("pieces"))
        clusters = int(meta.pop("clusters"))
        return cls(ids, tensors["offsets"], tensors["units"], clusters, meta)


def make_units(utts, source: FeatureSource, clusters: int, *, max_frames: int, passes: int, batch_frames: int,
               seed: int, memory_mb: float = 0.0, progress=None, log=None) -> tuple[Units, torch.Tensor]:
    """k-means units of every piece of ``utts``: (units, centroids (K, D)).

    The features are computed while sampling and kept in memory up to ``memory_mb``, so that labelling reads
    them instead of running the model over the audio a second time; a piece beyond that is computed again
    (the same function of the same audio: the same features on a CPU, so there the units do not depend on the
    budget; a GPU's nondeterministic kernels may round a recomputed piece differently)."""
    from sklearn.cluster import MiniBatchKMeans

    from lowres.data import audio as audio_mod

    started = time.perf_counter()
    total = sum(frames(int(u.duration * SAMPLE_RATE)) for u in utts)
    if total < clusters:
        raise LowresError(f"The unlabeled audio has {total} frames (20 ms each), fewer than --clusters {clusters}: "
                          "give more audio, or fewer clusters.")
    share = min(1.0, max_frames / max(total, 1))
    rng = np.random.default_rng(seed)

    def features(u):
        try:
            wave = audio_mod.load(u.audio_filepath, u.offset, u.duration)
        except audio_mod.AudioError as exc:
            raise LowresError(f"{u.audio_filepath}: cannot be read to make units ({exc.detail}).") from None
        return source(wave)

    # 1. a seeded sample of frames (memory: max_frames × D whatever the corpus size)
    sample, kept, kept_bytes = [], {}, 0
    task = progress.add_task("units: features", total=len(utts)) if progress else None
    for i, u in enumerate(utts):
        feats = features(u)
        size = feats.numel() * feats.element_size()
        if kept_bytes + size <= memory_mb * 2**20:
            kept[i] = feats
            kept_bytes += size
        f = feats.numpy()
        keep = rng.random(len(f)) < share
        if keep.any():
            sample.append(f[keep])
        if progress:
            progress.advance(task)
    x = np.concatenate(sample).astype(np.float32) if sample else np.zeros((0, 1), np.float32)
    if len(x) < clusters:
        raise LowresError(f"Only {len(x)} frames could be sampled for {clusters} clusters: give more unlabeled "
                          "audio, or fewer --clusters.")
    # 2. MiniBatchKMeans on the sample, a capped number of passes (its defaults can take hours)
    km = MiniBatchKMeans(n_clusters=clusters, batch_size=min(batch_frames, len(x)), random_state=seed, n_init=1,
                         init="k-means++", reassignment_ratio=0.0, compute_labels=False)
    order_rng = np.random.default_rng(seed + 1)
    steps = passes * math.ceil(len(x) / km.batch_size)
    task = progress.add_task("units: k-means", total=steps) if progress else None
    for _ in range(passes):
        order = order_rng.permutation(len(x))
        for start in range(0, len(x), km.batch_size):
            km.partial_fit(x[order[start:start + km.batch_size]])
            if progress:
                progress.advance(task)
    centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))
    inertia = float(assign(torch.from_numpy(x), centroids)[1].sum())
    # 3. every frame's nearest centroid
    flat, offsets = [], [0]
    task = progress.add_task("units: labelling", total=len(utts)) if progress else None
    recomputed = 0
    for i, u in enumerate(utts):
        feats = kept.pop(i, None)
        if feats is None:
            feats, recomputed = features(u), recomputed + 1
        labels, _ = assign(feats, centroids)
        flat.append(labels.to(torch.int16))
        offsets.append(offsets[-1] + len(labels))
        if progress:
            progress.advance(task)
    flat_t = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.int16)
    used = int(torch.unique(flat_t).numel())
    info = {"targets": source.label, "kind": source.kind, "layer": source.layer, "frame_hz": FRAME_RATE,
            "frames": int(len(flat_t)), "frames_sampled": int(len(x)),
            "pieces_computed_twice": recomputed, "clusters_used": used,
            "inertia_per_frame": inertia / len(x), "passes": passes, "seed": seed,
            "seconds": round(time.perf_counter() - started, 1)}
    if log is not None:
        log(f"units: {clusters} clusters of {source.label} fit on {len(x):,} sampled frames ({passes} passes, "
            f"{info['seconds']:.0f} s); {used} clusters used over {len(flat_t):,} frames")
    units = Units([u.id for u in utts], torch.tensor(offsets, dtype=torch.long), flat_t, clusters, info)
    return units, centroids


def assign(x: torch.Tensor, centroids: torch.Tensor, batch: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row of ``x`` (N, D): (labels (N,) int64, squared distances (N,))."""
    labels, dists = [], []
    c2 = (centroids * centroids).sum(dim=1)
    for start in range(0, len(x), batch):
        xb = x[start:start + batch].float()
        d = (xb * xb).sum(dim=1, keepdim=True) - 2.0 * xb @ centroids.T + c2[None, :]
        best, idx = d.min(dim=1)
        labels.append(idx)
        dists.append(best.clamp_min(0))
    if not labels:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(labels), torch.cat(dists)
