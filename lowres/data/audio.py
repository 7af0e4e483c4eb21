"""The only module that decodes (and writes) audio.

Everything goes through soundfile (libsndfile ships in its wheel: wav, flac, ogg/vorbis/opus, mp3, aiff, ...).
``torchaudio.load`` is not used: it needs TorchCodec and FFmpeg. Any sample rate and channel count is
accepted; :func:`load` returns float32 mono at 16 kHz (the rate every wav2vec 2.0 model expects).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lowres.audiotime import SAMPLE_RATE

# File endings treated as audio when a folder is indexed (``prepare --unlabeled``).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".w64", ".rf64", ".caf"}
)

# Subtypes whose samples are IEEE floats and can therefore hold NaN or inf.
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_TAIL_FRAMES = 2048


class AudioError(Exception):
    """A file that cannot be used as audio. ``reason`` is a short code used in rejects reports."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[sf.SoundFile]:
    """The open file, checked first (missing, not a regular file, empty), closed when the block ends. Inside
    the block of an MPEG file, mpg123's notes are kept off stderr (:func:`quiet_stderr`)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError("unreadable_audio", f"{path} is a symbolic link loop") from None
        if path.is_symlink():
            raise AudioError("missing_audio", f"{path} is a symbolic link to {os.readlink(path)}, which does "
                             "not exist") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise AudioError("missing_audio", f"audio file not found: {path}") from None
        raise AudioError("unreadable_audio", f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO (opening it would block), a device
        raise AudioError("unreadable_audio", f"not a regular file: {path}")
    if st.st_size == 0:
        raise AudioError("empty_audio", f"{path.name} is an empty (zero-byte) file")
    try:
        with quiet_stderr():  # libsndfile tries its mpg123 decoder on what may be MPEG, which prints notes
            # bytes, so that a file name that is not valid UTF-8 (os.walk gives it surrogate escapes) still opens
            f = sf.SoundFile(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as exc:
        if isinstance(exc, sf.LibsndfileError) and (exc.error_string or "").strip() in _NOT_AUDIO:
            raise AudioError("unreadable_audio", _not_audio(path)) from None
        raise AudioError("unreadable_audio", f"cannot decode {path.name}: {_short(exc)}") from None
    with f, (quiet_stderr() if str(f.format) == "MPEG" else contextlib.nullcontext()):
        yield f


# What libsndfile says when no decoder recognises a regular, non-empty file. The second is its mpg123
# decoder's failure on a file named .mp3 that holds no MPEG audio: the file exists (checked above), so the
# truth is "not audio", and the message would send the user looking for a missing file.
_NOT_AUDIO = frozenset({"Format not recognised.",
                        "File does not exist or is not a regular file (possibly a pipe?)."})


def _not_audio(path: Path) -> str:
    """Why a regular file is not audio, from its first bytes: text (a transcript, an HTML error page saved
    under an audio name) or something else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        head = b""
    try:
        text = head.decode("utf-8") if b"\x00" not in head else None
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the 512 bytes is still text
        text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is not None and text.strip():
        start = " ".join(text.split())[:40]
        what = f"it holds text (it starts {start!r})"
    else:
        what = f"its content is in no audio format lowres reads (it starts with the bytes {head[:8].hex(' ')})"
    return (f"{path.name} is not audio: {what}. lowres decodes wav, flac, ogg/vorbis/opus, mp3, aiff and the "
            "other formats libsndfile reads, whatever the file ending says")


# ---------------------------------------------------------------------------------------------------
# mpg123's notes on stderr
#
# libsndfile's MPEG decoder (libmpg123) prints "Note: Illegal Audio-MPEG-Header ..." and "Note: Trying to
# resync..." to file descriptor 2 from C, where sys.stderr cannot catch them, whenever it meets bytes that are
# not MPEG frames (a file that is not audio, junk after the last frame). lowres reports such files itself, so
# file descriptor 2 points at /dev/null while libsndfile opens a file, and while an MPEG file is open.
# The redirection is counted across threads (prepare probes files in parallel): the first decode in makes it,
# the last one out undoes it. Python's own stderr is flushed first, so nothing written before is lost.

_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_stderr: int | None = None


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 goes to /dev/null inside the block (see above); the block's errors still raise."""
    global _quiet_depth, _saved_stderr
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_stderr = _redirect_stderr()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            if _quiet_depth:  # 0 in a child forked inside the block (reset below)
                _quiet_depth -= 1
                if _quiet_depth == 0:
                    _restore_stderr()


def _restore_stderr() -> None:
    global _saved_stderr
    if _saved_stderr is None:
        return
    try:
        os.dup2(_saved_stderr, 2)
    finally:
        os.close(_saved_stderr)
        _saved_stderr = None


def _after_fork_in_child() -> None:
    """A process forked while another thread decodes gets its stderr back (and a lock nobody holds)."""
    global _quiet_lock, _quiet_depth
    _quiet_lock = threading.Lock()
    _quiet_depth = 0
    with contextlib.suppress(OSError):
        _restore_stderr()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _redirect_stderr() -> int | None:
    """Point fd 2 at /dev/null; returns a copy of what it was (None: no fd 2 to quiet, or it cannot be done,
    and the decode goes on unquieted)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        return None
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return None
    return saved


def _short(exc: Exception) -> str:
    if isinstance(exc, sf.LibsndfileError) and exc.error_string:
        return exc.error_string.strip()  # without "Error opening <the path>", which the caller names
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def probe(path: str | os.PathLike, check_samples: bool = True) -> AudioInfo:
    """Duration, sample rate and channels of an audio file, checked for use.

    With ``check_samples``, the last block is decoded (a truncated file fails here, not in training)
    and float files are scanned for NaN/inf. Raises :class:`AudioError`.
    """
    with _open(path) as f:
        info = AudioInfo(sample_rate=int(f.samplerate), frames=int(f.frames), channels=int(f.channels),
                         subtype=str(f.subtype))
        if info.sample_rate <= 0:
            raise AudioError("unreadable_audio", f"invalid sample rate {info.sample_rate}")
        if info.frames <= 0:
            raise AudioError("empty_audio", "the file holds no samples")
        if not check_samples:
            return info
        if info.subtype.startswith("PCM") and str(f.format) in ("WAV", "WAVEX"):
            _check_wav_length(Path(path))
        try:
            if info.subtype in _FLOAT_SUBTYPES:
                for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                    if not np.isfinite(block).all():
                        raise AudioError("non_finite_audio", "the audio holds NaN or infinite samples")
                read = f.tell()
            else:
                want = min(_TAIL_FRAMES, info.frames)
                if f.seekable():
                    f.seek(info.frames - want)
                tail = f.read(want, dtype="float32", always_2d=True)
                read = info.frames - want + len(tail)
        except AudioError:
            raise
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise AudioError("truncated_audio", f"decoding failed: {_short(exc)}") from None
        if read < info.frames:
            raise AudioError(
                "truncated_audio",
                f"the header promises {info.frames} frames but only {read} could be decoded",
            )
    return info


def _check_wav_length(path: Path) -> None:
    """libsndfile quietly shortens a WAV whose data chunk is cut off; a cut file is a broken file."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos: pos + 4], struct.unpack("<I", head[pos + 4: pos + 8])[0]
        if chunk == b"data":
            if length != 0xFFFFFFFF and pos + 8 + length > size:
                raise AudioError("truncated_audio",
                                 f"the WAV header promises {length} bytes of samples but the file ends after "
                                 f"{size - pos - 8}")
            return
        pos += 8 + length + (length & 1)


def load(
    path: str | os.PathLike,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Decode ``[offset_s, offset_s + duration_s)`` of a file as float32 mono at ``sample_rate``.

    Returns shape ``(T,)``. Channels are averaged. Raises :class:`AudioError`.
    """
    with _open(path) as f:
        sr = int(f.samplerate)
        start = int(round(offset_s * sr))
        frames = -1 if duration_s is None else int(round(duration_s * sr))
        try:
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)  # (T, C)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise AudioError("unreadable_audio", f"decoding {Path(path).name} failed: {_short(exc)}") from None
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if wave.size == 0:
        raise AudioError("empty_audio", f"no samples in {Path(path).name} at offset {offset_s:.3f}s")
    if not np.isfinite(wave).all():
        raise AudioError("non_finite_audio", f"{Path(path).name} holds NaN or infinite samples")
    if sr != sample_rate:
        wave = resample(wave, sr, sample_rate)
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited (windowed sinc) resampling of a mono float32 signal, shape ``(T,)``."""
    if orig_sr == new_sr:
        return wave
    import torch

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    with torch.no_grad():
        return _resampler(int(orig_sr), int(new_sr))(x).numpy()


@functools.lru_cache(maxsize=64)  # speed perturbation uses up to ~40 rates (lowres/data/augment.py)
def _resampler(orig_sr: int, new_sr: int):
    """torchaudio's Resample keeps the sinc kernel (building it costs more than applying it to a sentence);
    the output equals ``torchaudio.functional.resample``'s."""
    import torch
    import torchaudio.transforms as T

    return T.Resample(orig_sr, new_sr, dtype=torch.float32)


def frame_rms(path: str | os.PathLike, hop_s: float = 0.02) -> tuple[np.ndarray, float]:
    """RMS energy of consecutive ``hop_s`` frames of the mono mix, decoded block by block.

    Memory stays proportional to the number of frames, not samples, so hour-long recordings are fine.
    Returns ``(rms, hop_seconds_actual)`` with ``rms`` of shape ``(N,)``.
    """
    with _open(path) as f:
        sr = int(f.samplerate)
        hop = max(1, int(round(hop_s * sr)))
        out: list[np.ndarray] = []
        carry = np.zeros(0, dtype=np.float32)
        try:
            for block in f.blocks(blocksize=hop * 512, dtype="float32", always_2d=True):
                mono = block.mean(axis=1, dtype=np.float32)
                if carry.size:
                    mono = np.concatenate([carry, mono])
                n = mono.size // hop
                if n:
                    frames = mono[: n * hop].reshape(n, hop)
                    out.append(np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)))
                carry = mono[n * hop:]
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise AudioError("truncated_audio", f"decoding failed: {_short(exc)}") from None
        if carry.size:
            out.append(np.sqrt(np.mean(np.square(carry, dtype=np.float64), keepdims=True)))
    rms = np.concatenate(out) if out else np.zeros(0)
    return np.nan_to_num(rms, nan=0.0, posinf=0.0), hop / sr


def write(path: str | os.PathLike, wave: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write audio (format from the file ending). ``wave`` is ``(T,)`` or ``(T, C)`` float in [-1, 1]."""
    sf.write(str(path), wave, sample_rate, subtype=subtype)

