"""OpenAI Whisper's audio encoder as a lowres backbone: log-mel front end, two convolutions, sinusoidal positions,
pre-LN transformer layers, a final layer norm. Padding-exact: a padded batch gives each clip what the clip gives
alone.

The parameters are named as transformers' ``WhisperEncoder`` names them (``conv1``, ``conv2``,
``embed_positions``, ``layers.N.self_attn.q_proj``, ``fc1``, ``fc2``, ``layer_norm``, ...), so a Hugging Face
checkpoint's encoder loads as it is; lowres/bases/whisper.py maps the openai-whisper and CTranslate2 names onto
them. Whisper was trained on 30-second windows (its position table has 1,500 entries, 50 a second); a clip is
encoded at its own length with the table's first positions (``pad_to_window=False``, lowres's default) or, as
Whisper itself does, padded with silence to the whole window (``pad_to_window=True``).

Shapes: waveforms (B, T) float32 at 16 kHz with lengths (B,) -> log-mel (B, 80, M) at 100 Hz -> frames
(B, T', D) at 50 Hz with frame lengths (B,).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lowres.audiotime import WHISPER_STACK, frame_lengths

N_FFT = 400  # 25 ms windows
HOP = WHISPER_STACK[0][1]  # every 10 ms (160 samples): 100 mel frames a second
WINDOW_S = 30.0  # what Whisper reads at once: its position table covers this much
LOG_FLOOR_DB = 8.0  # log10 units below the clip's loudest mel value that are kept (Whisper's dynamic range)



def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> Tensor:
    """Whisper's sinusoidal position table (length, channels): sines then cosines."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def mel_filters(n_mels: int) -> Tensor:
    """(n_mels, N_FFT // 2 + 1): librosa's Slaney-scale, Slaney-normalised mel filter bank, which Whisper uses."""
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, 8000.0, n_mels, 16_000, norm="slaney",
                                               mel_scale="slaney")
    return fb.T.contiguous()


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram of each clip: log10 of the mel power, floored at ``LOG_FLOOR_DB`` below the
    clip's maximum, scaled by (x + 4) / 4. Over the clip's own samples (frames beyond its length are zero), or,
    with ``window`` samples, over the clip padded with silence to the window, as Whisper computes it."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", mel_filters(n_mels), persistent=False)

    def forward(self, waves: Tensor, lengths: Tensor, window: int | None = None) -> tuple[Tensor, Tensor]:
        """(B, T), lengths (B,) -> (B, n_mels, M), the clips' mel lengths (B,) (length // HOP)."""
        frames = torch.div(lengths, HOP, rounding_mode="floor")
        if torch.jit.is_tracing():  # the ONNX export: one unpadded clip, no loop over clips and no complex STFT
            return self._traced(waves, window), frames
        width = window // HOP if window else int(frames.max())
        out = []
        for wave, n in zip(waves, lengths.tolist(), strict=True):
            clip = wave[: int(n)].float()  # alone: the STFT's reflection at the clip's end reads the clip
            if window:
                clip = F.pad(clip, (0, window - int(n)))
            spec = torch.stft(clip, N_FFT, HOP, window=self.window, return_complex=True)
            power = spec[..., :-1].abs() ** 2
            mel = torch.clamp(self.filters @ power, min=1e-10).log10()
            if mel.numel():
                mel = torch.maximum(mel, mel.max() - LOG_FLOOR_DB)
            out.append(F.pad((mel + 4.0) / 4.0, (0, width - mel.shape[-1])))
        return torch.stack(out), frames

    def _traced(self, waves: Tensor, window: int | None) -> Tensor:
        """:meth:`forward` of one unpadded clip (1, T) with the STFT as a convolution by the windowed DFT's cosines
        and sines (the TorchScript ONNX exporter has no complex numbers): the same frames as ``torch.stft``
        (centred, reflection-padded), to float rounding."""
        x = waves.float()
        if window:
            x = F.pad(x, (0, window - x.shape[1]))
        x = F.pad(x[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")  # (1, 1, T + N_FFT)
        k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None]
        n = torch.arange(N_FFT, dtype=torch.float64)[None, :]
        angle = 2 * torch.pi * k * n / N_FFT
        w = self.window.double()
        basis = torch.cat([torch.cos(angle) * w, -torch.sin(angle) * w]).float()[:, None]  # (2F, 1, N_FFT)
        spec = F.conv1d(x, basis, stride=HOP)[..., :-1]  # (1, 2F, M): the last frame dropped, as forward does
        real, imag = spec.chunk(2, dim=1)
        mel = torch.clamp(self.filters @ (real * real + imag * imag), min=1e-10).log10()
        mel = torch.maximum(mel, mel.max() - LOG_FLOOR_DB)
        return (mel + 4.0) / 4.0


class WhisperAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pad: Tensor | None) -> Tensor:
        """(B, T, D) with a padding mask (B, T) (True at padding) -> (B, T, D)."""
        b, t, d = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        mask = None if pad is None else ~pad[:, None, None, :]
        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class WhisperLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn = WhisperAttention(dim, heads)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ff)
        self.fc2 = nn.Linear(ff, dim)
        self.dropout = nn.Dropout(dropout)  # on each residual branch (Whisper trained without; 0 by default)

    def forward(self, x: Tensor, pad: Tensor | None) -> Tensor:
        x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), pad))
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.final_layer_norm(x)))))


class WhisperEncoder(nn.Module):
    """Whisper's encoder. ``arch``: ``n_mels``, ``encoder_embed_dim``, ``encoder_num_heads``,
    ``encoder_num_layers``, ``encoder_ff_interm_features``, ``max_source_positions`` (1500), ``pad_to_window``."""

    def __init__(self, arch: dict):
        super().__init__()
        dim, self.positions = int(arch["encoder_embed_dim"]), int(arch["max_source_positions"])
        self.pad_to_window = bool(arch.get("pad_to_window", False))
        self.mel = LogMel(int(arch["n_mels"]))
        self.conv1 = nn.Conv1d(int(arch["n_mels"]), dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("embed_positions", sinusoids(self.positions, dim))
        self.layers = nn.ModuleList(
            WhisperLayer(dim, int(arch["encoder_num_heads"]), int(arch["encoder_ff_interm_features"]))
            for _ in range(int(arch["encoder_num_layers"])))
        self.layer_norm = nn.LayerNorm(dim)
        self.gradient_checkpointing = False

    @property
    def conv_layers(self) -> list[nn.Conv1d]:
        """The front end's layers that hold weights (what ``model.frozen_conv_layers`` counts)."""
        return [self.conv1, self.conv2]

    def max_samples(self) -> int:
        """The longest clip the position table covers (30 s)."""
        return self.positions * 2 * HOP

    def features(self, waves: Tensor, lengths: Tensor, *, start: int = 0, stop: int | None = None, mel_mask=None
                 ) -> tuple[Tensor, Tensor]:
        """The front end from layer ``start`` to ``stop`` (layer 0: waveforms -> log-mel; 1: conv1; 2: conv2).
        Input and output are (B, C, T), but for waveforms (B, T); returned with the clips' own lengths. At a clip's
        own length every layer reads zeros past its end, what the clip alone meets there (padding-exact);
        ``pad_to_window`` reads Whisper's silence there instead, over the whole window. ``mel_mask(mel (B, M,
        n_mels), lengths) -> mel`` masks the log-mel (SpecAugment) before the convolutions."""
        stop = 3 if stop is None else stop
        x = waves
        if start == 0 and stop > 0:
            if int(lengths.max()) > self.max_samples():
                raise ValueError(f"Whisper's encoder reads at most {WINDOW_S:g} s; got {int(lengths.max())} samples")
            x, lengths = self.mel(waves, lengths, self.max_samples() if self.pad_to_window else None)
            if mel_mask is not None:
                x = mel_mask(x.transpose(1, 2), lengths).transpose(1, 2)
        for i, conv in ((1, self.conv1), (2, self.conv2)):
            if start <= i < stop:
                x = F.gelu(conv(self._clip(x, lengths)))
                lengths = frame_lengths(lengths, WHISPER_STACK[i:i + 1])
        return (self._clip(x, lengths) if stop > 0 else x), lengths

    def _clip(self, x: Tensor, lengths: Tensor) -> Tensor:
        return x if self.pad_to_window else _zero_padding(x, lengths)

    def encoder_input(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor | None]:
        """conv2's output (B, D, T') -> the first layer's input (B, T', D) with positions, and its padding mask
        (None under ``pad_to_window``: every frame of the window is attended to, as in Whisper)."""
        x = feats.transpose(1, 2)
        x = x + self.embed_positions[: x.shape[1]].to(x.dtype)
        pad = None if self.pad_to_window else _padding_mask(frames, x.shape[1])
        return (x if pad is None else x.masked_fill(pad[..., None], 0.0)), pad

    def states(self, x: Tensor, pad: Tensor | None, *, keep_all: bool, layer_drop: float = 0.0,
               generator: torch.Generator | None = None) -> list[Tensor]:
        """The layers over the encoder input: every hidden layer as Hugging Face counts them (the input, each
        layer's output, the last one after the final layer norm) with ``keep_all``, else the output alone.
        Layerdrop is drawn from ``generator``; each layer runs under a gradient checkpoint when
        ``gradient_checkpointing`` is on, in training, with gradients."""
        states = [x] if keep_all else []
        drops = None
        if layer_drop > 0 and self.training:
            drops = torch.rand(len(self.layers), generator=generator) < layer_drop
        checkpointed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if drops is not None and bool(drops[i]):
                continue
            x = (functools.partial(checkpoint, layer, use_reentrant=False) if checkpointed else layer)(x, pad)
            if keep_all:
                states.append(x)
        x = self.layer_norm(x)
        if keep_all:
            states[-1] = x
        else:
            states.append(x)
        return states

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T), lengths (B,) -> the encoder's output (B, T', D) and frame lengths (B,)."""
        feats, frames = self.features(waves, lengths)
        x, pad = self.encoder_input(feats, frames)
        return self.states(x, pad, keep_all=False)[-1], frames


def _padding_mask(lengths: Tensor, max_len: int) -> Tensor | None:
    mask = torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
    return mask if bool(mask.any()) else None


def _zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, C, T) with the frames at and beyond each length set to zero."""
    mask = _padding_mask(lengths, x.shape[-1])
    return x if mask is None else x.masked_fill(mask[:, None, :], 0.0)
