"""A ctypes binding to the eSpeak NG library that the ``espeakng-loader`` wheel ships (no apt, no network).

eSpeak NG keeps its state in process globals and is not thread-safe, so there is one engine per process
(:func:`engine`), guarded by a lock; parallel synthesis uses processes, each with its own engine. Speech
comes back at eSpeak's native rate (:attr:`Espeak.sample_rate`, 22050 Hz) as float32 in [-1, 1].

eSpeak's wave generator carries state from one utterance to the next (pitch phase, flutter, echo
buffers), and it seeds its noise generator (breath, aspiration) from the clock, so the same text comes out
different depending on what was spoken before and when. For output that depends only on its inputs,
:meth:`Espeak.reset` unloads the library (``dlclose``), loads it afresh, which puts every static back to its
initial value (a few milliseconds), and seeds the noise generator.
"""

from __future__ import annotations

import ctypes
import difflib
import threading
from dataclasses import dataclass

import numpy as np

from lowres import LowresError

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7

# eSpeak's documented parameter ranges
RATE_WPM = (80, 450)
PITCH = (0, 100)

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


@dataclass(frozen=True, slots=True)
class Language:
    code: str  # e.g. "sw", "en-us" (lower case)
    name: str  # e.g. "Swahili"
    identifier: str  # the voice file inside espeak-ng-data/voices or lang, e.g. "bnt/sw"


class Espeak:
    """The process's eSpeak NG engine. Use :func:`engine` rather than constructing it."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise LowresError(
                "The espeakng-loader package is missing; it ships the eSpeak NG library that `lowres synth` "
                "speaks with. Install it with `pip install espeakng-loader` (it comes with lowres)."
            ) from None
        self._lib_path, self._data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        self._lock = threading.Lock()
        self._languages: dict[str, Language] | None = None
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the engine
        self._lib = None
        self._load()

    def _load(self) -> None:
        lib_path, data_path = self._lib_path, self._data_path
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise LowresError(f"Could not load the eSpeak NG library {lib_path}: {exc}. Reinstall "
                              "espeakng-loader (`pip install --force-reinstall espeakng-loader`).") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.sample_rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0))
        if self.sample_rate <= 0:
            raise LowresError(f"eSpeak NG could not start with its data folder {data_path}. Reinstall "
                              "espeakng-loader (`pip install --force-reinstall espeakng-loader`).")
        try:  # eSpeak NG 1.52 and later
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = None
            self._set_seed = lib.espeak_ng_SetRandSeed
        except AttributeError:
            self._set_seed = None
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def reset(self, seed: int = 0) -> None:
        """Unload and reload the library and seed its random numbers: the next utterance starts from a
        state that depends on ``seed`` only."""
        import _ctypes

        with self._lock:
            lib, self._lib = self._lib, None
            lib.espeak_Terminate()
            handle = lib._handle
            del lib
            _ctypes.dlclose(handle)
            self._load()
            # eSpeak seeds its noise generator (breath, aspiration) from the clock when it starts
            if self._set_seed is not None:
                self._set_seed(seed & 0x7FFFFFFF)
            _libc_srand(seed)

    def _collect(self, wav, n: int, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = go on

    def languages(self) -> dict[str, Language]:
        """Every language code eSpeak NG speaks → its voice (the highest-priority voice per code)."""
        if self._languages is None:
            best: dict[str, tuple[int, Language]] = {}
            voices = self._lib.espeak_ListVoices(None)
            i = 0
            while voices[i]:
                v = voices[i].contents
                name, ident = v.name.decode("utf-8", "replace").strip(), v.identifier.decode("utf-8", "replace")
                p = v.languages
                while p:
                    priority = ctypes.c_ubyte.from_address(p).value
                    if priority == 0:
                        break
                    code = ctypes.string_at(p + 1)
                    p += 2 + len(code)
                    code_s = code.decode("utf-8", "replace").lower()
                    if code_s not in best or priority < best[code_s][0]:
                        best[code_s] = (priority, Language(code_s, name, ident))
                i += 1
            self._languages = {code: lang for code, (_, lang) in sorted(best.items())}
        return self._languages

    def language(self, code: str) -> Language:
        """The eSpeak voice for a language code (``sw``, ``en-us``) or voice identifier (``bnt/sw``)."""
        langs = self.languages()
        key = code.strip().lower()
        if key in langs:
            return langs[key]
        for lang in langs.values():
            if lang.identifier.lower() == key:
                return lang
        close = difflib.get_close_matches(key, list(langs), n=4, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise LowresError(
            f"eSpeak NG has no language {code!r}.{hint} `lowres synth --list-languages` prints the "
            f"{len(langs)} codes it speaks (e.g. sw Swahili, am Amharic, om Oromo, tn Setswana, qu Quechua); pass one with --lang."
        )

    def synth(self, text: str, voice: str, rate_wpm: int = 175, pitch: int = 50, pitch_range: int = 50,
              word_gap: int = 0) -> np.ndarray:
        """Speak ``text`` with ``voice`` (an identifier, optionally ``+variant``: ``bnt/sw+f2``).

        ``rate_wpm``: words per minute (80-450); ``pitch``, ``pitch_range``: 0-100 (50 = the voice's own);
        ``word_gap``: extra pause between words in units of 10 ms. Returns float32 ``(T,)`` at
        :attr:`sample_rate`.
        """
        lib = self._lib
        data = text.encode("utf-8")
        with self._lock:
            err = lib.espeak_SetVoiceByName(voice.encode("utf-8"))
            if err != _EE_OK:
                raise LowresError(f"eSpeak NG has no voice {voice!r}. Pass a language code with --lang "
                                  "(`lowres synth --list-languages` prints them).")
            lib.espeak_SetParameter(_RATE, int(np.clip(rate_wpm, *RATE_WPM)), 0)
            lib.espeak_SetParameter(_PITCH, int(np.clip(pitch, *PITCH)), 0)
            lib.espeak_SetParameter(_RANGE, int(np.clip(pitch_range, *PITCH)), 0)
            lib.espeak_SetParameter(_WORDGAP, max(0, int(word_gap)), 0)
            lib.espeak_SetParameter(_VOLUME, 100, 0)
            self._chunks = []
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            chunks, self._chunks = self._chunks, []
        if err != _EE_OK:
            raise RuntimeError(f"eSpeak NG failed (error {err}) on {text[:60]!r}")
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


_ENGINE: Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def engine() -> Espeak:
    """This process's eSpeak NG engine, started on first use."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = Espeak()
        return _ENGINE


def _libc_srand(seed: int) -> None:
    """Older eSpeak builds draw their noise from the C library's rand(): seed it too."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None)
        _LIBC.srand.argtypes = [ctypes.c_uint]
    _LIBC.srand(seed & 0xFFFFFFFF)


_LIBC: ctypes.CDLL | None = None
