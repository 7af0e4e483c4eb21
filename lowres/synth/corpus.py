"""``build_corpus()``: a synthetic speech corpus spoken by eSpeak NG, in a layout ``lowres prepare`` reads.

What ``out`` holds::

    labeled/corpus.tsv       columns id, audio, text, speaker, split (train / dev / test); audio paths are
                             relative to the table (prepare's ``table`` format honours the split column)
    labeled/wavs/{id}.wav    16 kHz mono PCM_16, one sentence each
    unlabeled/{id}.wav       16 kHz mono PCM_16, 3-8 sentences each with pauses (about 10-60 s): the audio
                             for ``prepare --unlabeled``, which cuts it into training-sized pieces
    synth_report.json        language, seed, lexicon source and licence, the speakers, hours per split

How it is drawn (everything from ``seed``: the same seed gives byte-identical files, whatever the number of
worker processes, because every utterance is planned in this process with its own seed and only rendered
by the workers):

- speakers are eSpeak voice variants (m1..m8, f1..f5 and other natural-sounding ones; whisper, croak, the
  robots and echoes are left out), each with its own base speaking rate, pitch, pitch range and word gap;
  the first speakers (alternately female and male) are the dev speakers, the next the test speakers, the
  rest train speakers. Dev and test voices are never reused; with more speakers than voices, train
  speakers share voices (with different rate and pitch). The unlabeled audio is spoken by train speakers;
- each sentence is 3-12 words drawn uniformly from the lexicon, spoken at the speaker's rate and pitch
  varied per utterance (rate ±10 %, pitch ±8, range ±10);
- no sentence is spoken twice in the whole corpus, so dev and test sentences appear nowhere else;
- optional background noise (audiomentations ``AddColorNoise``, 10-30 dB SNR, with probability ``noise``)
  and a random gain (``Gain``, -10..+4 dB) per file;
- each split is the shortest run of its planned utterances that reaches its target duration.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lowres import LowresError, __version__
from lowres.audiotime import SAMPLE_RATE
from lowres.config import SynthConfig
from lowres.fsutil import atomic_write_json, atomic_write_lines, claim_folder

# (variant, gender): eSpeak NG voice variants that sound like plausible (if synthetic) human speakers.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("f1", "f"), ("f2", "f"), ("f3", "f"), ("f4", "f"), ("f5", "f"), ("Annie", "f"), ("Andrea", "f"),
    ("belinda", "f"), ("linda", "f"), ("steph", "f"), ("shelby", "f"), ("aunty", "f"), ("grandma", "f"),
    ("anika", "f"),
    ("m1", "m"), ("m2", "m"), ("m3", "m"), ("m4", "m"), ("m5", "m"), ("m6", "m"), ("m7", "m"), ("m8", "m"),
    ("Alex", "m"), ("Andy", "m"), ("Denis", "m"), ("Gene", "m"), ("Jacky", "m"), ("Mario", "m"),
    ("gustave", "m"), ("marcelo", "m"), ("pedro", "m"), ("travis", "m"), ("victor", "m"), ("edward", "m"),
    ("quincy", "m"), ("robert", "m"), ("ed", "m"), ("paul", "m"), ("iven3", "m"), ("Lee", "m"),
    ("michel", "m"), ("Storm", "m"), ("antonio", "m"), ("kaukovalta", "m"),
)
SENTENCE_WORDS = (3, 12)
UNLABELED_SENTENCES = (3, 8)
HELDOUT_SPEAKER_FRACTION = 0.1  # of the speakers, for dev and for test each (at least one each)
DEFAULT_HELDOUT_FRACTION = 0.1  # dev and test hours, each, as a fraction of the training hours
NOISE_SNR_DB = (10.0, 30.0)
GAIN_DB = (-10.0, 4.0)
OUTPUT_NAMES = ("labeled", "unlabeled", "synth_report.json")


@dataclass(frozen=True, slots=True)
class Speaker:
    id: str  # e.g. "spk03-f2"
    variant: str  # eSpeak voice variant
    gender: str  # "f" | "m" (the variant's)
    rate_wpm: float  # base speaking rate
    pitch: float  # base pitch, eSpeak's 0-100 scale (50 = the variant's own)
    pitch_range: float  # base intonation range, 0-100
    word_gap: int  # extra pause between words, in 10 ms units
    split: str  # train | dev | test


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    rate_wpm: int
    pitch: int
    pitch_range: int


@dataclass(frozen=True, slots=True)
class Job:
    """One output file: sentences spoken by one voice, with pauses (before, between and after them)."""

    path: str
    voice: str  # eSpeak voice name: "{language identifier}+{variant}"
    word_gap: int
    sentences: tuple[Sentence, ...]
    pauses_s: tuple[float, ...]  # len(sentences) + 1
    seed: int  # noise, gain and the noise floor
    noise_prob: float


@dataclass
class SynthResult:
    out: Path
    corpus: Path  # labeled/corpus.tsv: give it to `lowres prepare`
    unlabeled: Path | None  # unlabeled/: give it to `lowres prepare --unlabeled`
    report: dict
    wall_s: float = 0.0
    audio_s: float = 0.0  # audio written (labeled + unlabeled)
    workers: int = 1
    rows: list[dict] = field(default_factory=list, repr=False)


def list_languages() -> list[tuple[str, str]]:
    """(code, name) of every language eSpeak NG speaks."""
    from lowres.synth.espeak import engine

    return [(code, lang.name) for code, lang in engine().languages().items()]


def build_corpus(
    out: str | os.PathLike,
    lang: str = SynthConfig.lang,
    hours: float = SynthConfig.hours,
    unlabeled_hours: float = SynthConfig.unlabeled_hours,
    seed: int = SynthConfig.seed,
    words: str | os.PathLike | None = None,
    speakers: int = SynthConfig.speakers,
    dev_hours: float | None = None,
    test_hours: float | None = None,
    noise: float = SynthConfig.noise,
    workers: int = SynthConfig.workers,
    overwrite: bool = False,
    console=None,
) -> SynthResult:
    """Write a synthetic corpus into ``out`` (see the module docstring for the layout and the draws).

    ``hours``: training audio; ``dev_hours``/``test_hours``: held-out audio (default: 10 % of ``hours``
    each); ``unlabeled_hours``: unlabeled recordings (0: none). ``words``: a word list or text file for
    languages without a shipped lexicon. ``speakers``: voices in all, at least 3. ``noise``: probability of
    background noise per file. ``workers``: processes (0: one per CPU core, at most 8; 1: in this process).
    """
    from lowres.progress import progress_bar
    from lowres.synth.espeak import engine
    from lowres.synth.lexicon import load_lexicon

    t0 = time.perf_counter()
    out = Path(out)
    dev_hours = DEFAULT_HELDOUT_FRACTION * hours if dev_hours is None else dev_hours
    test_hours = DEFAULT_HELDOUT_FRACTION * hours if test_hours is None else test_hours
    _check_numbers(hours, unlabeled_hours, dev_hours, test_hours, speakers, noise, workers)
    language = engine().language(lang)
    lexicon = load_lexicon(lang, words)
    claim_folder(out, what="synthetic corpus", overwrite=overwrite, clear=_clear_outputs,
                 hint="Pass --overwrite to replace the synthetic corpus in it (other files are left alone), "
                      "or choose another --out.")
    workers = _auto_workers(workers)

    cast = make_speakers(speakers, seed)
    by_split = {s: [sp for sp in cast if sp.split == s] for s in ("train", "dev", "test")}
    wav_dir, unl_dir = out / "labeled" / "wavs", out / "unlabeled"
    wav_dir.mkdir(parents=True, exist_ok=True)
    if unlabeled_hours > 0:
        unl_dir.mkdir(parents=True, exist_ok=True)
    targets = {"dev": dev_hours * 3600, "test": test_hours * 3600, "train": hours * 3600,
               "unlabeled": unlabeled_hours * 3600}
    used: set[str] = set()  # every sentence spoken so far: no sentence is spoken twice
    rows: dict[str, list[dict]] = {}
    with progress_bar(console) as progress, _Executor(workers) as submit:
        task = progress.add_task("speaking", total=round(sum(targets.values())), unit="s audio")
        for stream in ("dev", "test", "train", "unlabeled"):
            if targets[stream] <= 0:
                rows[stream] = []
                continue
            spk = by_split["train" if stream == "unlabeled" else stream]
            folder = unl_dir if stream == "unlabeled" else wav_dir
            plan = _plan(stream, spk, lexicon.words, seed, used, folder, language.identifier, noise)
            rows[stream] = _render_until(plan, targets[stream], submit, 2 * workers,
                                         lambda s: progress.advance(task, s))
            used.update(r["text"] for r in rows[stream] if "sentences" not in r)
            used.update(t for r in rows[stream] for t in r.get("sentences", ()))

    table = ["id\taudio\ttext\tspeaker\tsplit"]
    for split in ("train", "dev", "test"):
        table += [f"{r['id']}\twavs/{r['id']}.wav\t{r['text']}\t{r['speaker']}\t{split}" for r in rows[split]]
    atomic_write_lines(out / "labeled" / "corpus.tsv", table)
    report = _report(language, lang, seed, lexicon, cast, rows, noise, targets)
    atomic_write_json(out / "synth_report.json", report)
    audio_s = sum(r["duration_s"] for rs in rows.values() for r in rs)
    return SynthResult(out=out, corpus=out / "labeled" / "corpus.tsv",
                       unlabeled=unl_dir if unlabeled_hours > 0 else None, report=report,
                       wall_s=time.perf_counter() - t0, audio_s=audio_s, workers=workers,
                       rows=[dict(r, split=s) for s, rs in rows.items() for r in rs])


def speak_sentences(out: str | os.PathLike, lang: str, sentences: Sequence[str], hours: float, *,
                    seed: int = SynthConfig.seed, speakers: int = SynthConfig.speakers,
                    workers: int = SynthConfig.workers, progress=None) -> list[dict]:
    """``hours`` of ``sentences`` (the user's text, one sentence each) spoken by eSpeak NG into ``out/{id}.wav``
    (16 kHz mono PCM_16), for mixing synthetic in-language speech into fine-tuning.

    The sentences go in a seeded random order, each spoken by the next of ``speakers`` voices (every voice
    of :func:`make_speakers`, with its own rate, pitch and word gap; rate and pitch varied per sentence as in
    a corpus), and again in a new order with other voices when the hours need more than the text holds.
    Returns one row per file, in order: ``id``, ``text``, ``speaker``, ``duration_s``. Same seed, same files."""
    from lowres.synth.espeak import engine

    if not sentences:
        raise LowresError("No sentences to speak: the text holds none that the vocabulary can spell.")
    if not hours > 0:
        raise LowresError(f"The hours of synthetic speech must be more than 0, not {hours}.")
    language = engine().language(lang)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cast = make_speakers(max(speakers, 3), seed)
    rng = random.Random(f"lowres-synth:{seed}:text")

    def plan() -> Iterator[tuple[Job, dict]]:
        j = 0
        while True:
            order = list(sentences)
            rng.shuffle(order)
            for text in order:
                spk = cast[j % len(cast)]
                sentence = Sentence(text, rate_wpm=round(spk.rate_wpm * rng.uniform(0.9, 1.1)),
                                    pitch=round(spk.pitch + rng.uniform(-8, 8)),
                                    pitch_range=round(spk.pitch_range + rng.uniform(-10, 10)))
                uid = f"{spk.id}_text{j:06d}"
                job = Job(path=str(out / f"{uid}.wav"), voice=f"{language.identifier}+{spk.variant}",
                          word_gap=spk.word_gap, sentences=(sentence,),
                          pauses_s=(round(rng.uniform(0.05, 0.4), 3), round(rng.uniform(0.05, 0.4), 3)),
                          seed=rng.getrandbits(32), noise_prob=0.0)
                yield job, {"id": uid, "speaker": spk.id, "text": text}
                j += 1

    workers = _auto_workers(workers)
    task = progress.add_task("speaking the text", total=round(hours * 3600), unit="s audio") \
        if progress is not None else None
    with _Executor(workers) as submit:
        return _render_until(plan(), hours * 3600, submit, 2 * workers,
                             lambda sec: progress.advance(task, sec) if task is not None else None)


def _check_numbers(hours, unlabeled_hours, dev_hours, test_hours, speakers, noise, workers) -> None:
    if not hours > 0:
        raise LowresError(f"--hours must be more than 0 (hours of transcribed training audio), not {hours}.")
    for name, value in (("--unlabeled-hours", unlabeled_hours), ("--dev-hours", dev_hours),
                        ("--test-hours", test_hours)):
        if not value >= 0:
            raise LowresError(f"{name} must be 0 or more, not {value}.")
    if not dev_hours > 0 or not test_hours > 0:
        raise LowresError("--dev-hours and --test-hours must be more than 0: the held-out sets are what a "
                          "recogniser trained on the corpus is measured on.")
    if speakers < 3:
        raise LowresError(f"--speakers must be at least 3 (one each for train, dev and test), not {speakers}.")
    if not 0.0 <= noise <= 1.0:
        raise LowresError(f"--noise is a probability between 0 and 1, not {noise}.")
    if workers < 0:
        raise LowresError(f"--workers must be 0 (one per CPU core) or more, not {workers}.")


def _auto_workers(requested: int) -> int:
    if requested > 0:
        return requested
    return max(1, min(8, os.cpu_count() or 1))


def _clear_outputs(out: Path) -> None:
    """What --overwrite removes: only the files synth writes (other files are left alone)."""
    for folder in (out / "labeled" / "wavs", out / "unlabeled"):
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_file() and child.suffix == ".wav":
                    child.unlink()
    for name in ("labeled/corpus.tsv", "synth_report.json"):
        (out / name).unlink(missing_ok=True)


def make_speakers(n: int, seed: int) -> list[Speaker]:
    """``n`` speakers: variants shuffled, alternately female and male; dev first, then test, then train."""
    rng = random.Random(f"lowres-synth:{seed}:speakers")
    female = [v for v, g in VARIANTS if g == "f"]
    male = [v for v, g in VARIANTS if g == "m"]
    rng.shuffle(female)
    rng.shuffle(male)
    order: list[tuple[str, str]] = []
    while female or male:
        for pool, gender in ((female, "f"), (male, "m")):
            if pool:
                order.append((pool.pop(0), gender))
    n_held = max(1, round(n * HELDOUT_SPEAKER_FRACTION))
    n_held = min(n_held, (n - 1) // 2, (len(order) - 1) // 2)
    # held-out speakers get voices of their own; train speakers share the rest (with their own rate and
    # pitch) when there are more speakers than voices, so no dev or test voice is ever heard in training
    heldout_voices, train_voices = order[: 2 * n_held], order[2 * n_held:]
    cast = []
    for k in range(n):
        if k < 2 * n_held:
            variant, gender = heldout_voices[k]
        else:
            variant, gender = train_voices[(k - 2 * n_held) % len(train_voices)]
        split = "dev" if k < n_held else "test" if k < 2 * n_held else "train"
        cast.append(Speaker(id=f"spk{k + 1:02d}-{variant.lower()}", variant=variant, gender=gender,
                            rate_wpm=round(rng.uniform(140, 190), 1), pitch=round(rng.uniform(30, 70), 1),
                            pitch_range=round(rng.uniform(35, 80), 1), word_gap=rng.choice((0, 0, 0, 1, 2)),
                            split=split))
    return cast


def _plan(stream: str, cast: list[Speaker], words: tuple[str, ...], seed: int, used: set[str], folder: Path,
          identifier: str, noise: float) -> Iterator[tuple[Job, dict]]:
    """An endless, seeded sequence of files for ``stream``: speakers in turn, sentences never seen before."""
    rng = random.Random(f"lowres-synth:{seed}:{stream}")
    seen: set[str] = set()

    def sentence() -> str:
        for _ in range(10_000):
            text = " ".join(rng.choices(words, k=rng.randint(*SENTENCE_WORDS)))
            if text not in used and text not in seen:
                seen.add(text)
                return text
        raise LowresError(f"Could not draw a new sentence from {len(words)} words: the word list is too small "
                          "for this many hours. Give a longer --words list or fewer hours.")

    def spoken(spk: Speaker, text: str) -> Sentence:
        return Sentence(text, rate_wpm=round(spk.rate_wpm * rng.uniform(0.9, 1.1)),
                        pitch=round(spk.pitch + rng.uniform(-8, 8)),
                        pitch_range=round(spk.pitch_range + rng.uniform(-10, 10)))

    j = 0
    while True:
        spk = cast[j % len(cast)]
        if stream == "unlabeled":
            k = rng.randint(*UNLABELED_SENTENCES)
            sentences = tuple(spoken(spk, sentence()) for _ in range(k))
            pauses = (rng.uniform(0.2, 0.6), *(rng.uniform(0.4, 1.5) for _ in range(k - 1)), rng.uniform(0.2, 0.6))
            uid = f"{spk.id}_unl{j:05d}"
        else:
            sentences = (spoken(spk, sentence()),)
            pauses = (rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4))
            uid = f"{spk.id}_{stream}{j:05d}"
        job = Job(path=str(folder / f"{uid}.wav"), voice=f"{identifier}+{spk.variant}", word_gap=spk.word_gap,
                  sentences=sentences, pauses_s=tuple(round(p, 3) for p in pauses), seed=rng.getrandbits(32),
                  noise_prob=noise)
        meta = {"id": uid, "speaker": spk.id, "text": " ".join(s.text for s in sentences)}
        if stream == "unlabeled":
            meta["sentences"] = [s.text for s in sentences]
        yield job, meta
        j += 1


def _render_until(plan: Iterator[tuple[Job, dict]], target_s: float, submit: Callable[[Job], Future],
                  inflight: int, advance: Callable[[float], None]) -> list[dict]:
    """Render planned files in order until their total duration reaches ``target_s``; files rendered
    beyond that (by workers running ahead) are deleted, so the result does not depend on the worker count."""
    kept: list[dict] = []
    total = 0.0
    pending: deque[tuple[Job, dict, Future]] = deque()
    try:
        while total < target_s:
            while len(pending) < inflight:
                job, meta = next(plan)
                pending.append((job, meta, submit(job)))
            job, meta, fut = pending.popleft()
            duration = fut.result() / SAMPLE_RATE
            meta["duration_s"] = round(duration, 3)
            kept.append(meta)
            advance(min(duration, target_s - total))
            total += duration
    finally:
        for job, _, fut in pending:
            if not fut.cancel():
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - the file is thrown away anyway
                    pass
            Path(job.path).unlink(missing_ok=True)
    return kept


class _Inline:
    """``submit`` that renders at once in this process (``workers=1``)."""

    def __call__(self, job: Job) -> Future:
        fut: Future = Future()
        fut.set_result(render(job))
        return fut


class _Executor:
    """Context manager giving ``submit(job) -> Future``: in this process, or on a pool of processes."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None

    def __enter__(self) -> Callable[[Job], Future]:
        if self.workers <= 1 or not _main_importable():
            return _Inline()
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: eSpeak and torch keep process-global state that a fork would share badly
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                        initializer=_init_worker)
        pool = self.pool
        return lambda job: pool.submit(render, job)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _main_importable() -> bool:
    """Spawned workers re-import the main script; one read from stdin (``python - <<EOF``) cannot be."""
    import sys

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.exists(path)


def _init_worker() -> None:
    import signal

    import torch

    torch.set_num_threads(1)  # one core per worker process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent, which shuts the pool


def render(job: Job) -> int:
    """Speak ``job`` and write its file; returns the number of samples written (16 kHz)."""
    from lowres.data.audio import resample, write
    from lowres.synth.espeak import engine

    eng = engine()
    eng.reset(job.seed)  # eSpeak carries state between utterances: start every file from the same state
    sr = eng.sample_rate
    parts = []
    for pause, s in zip(job.pauses_s, job.sentences, strict=False):
        parts.append(np.zeros(int(round(pause * sr)), dtype=np.float32))
        parts.append(eng.synth(s.text, job.voice, s.rate_wpm, s.pitch, s.pitch_range, job.word_gap))
    parts.append(np.zeros(int(round(job.pauses_s[-1] * sr)), dtype=np.float32))
    wave = resample(np.concatenate(parts), sr, SAMPLE_RATE)
    wave = finish(wave, job.seed, job.noise_prob)
    write(job.path, wave, SAMPLE_RATE, subtype="PCM_16")
    return int(wave.size)


_TRANSFORMS: dict[float, object] = {}


def finish(wave: np.ndarray, seed: int, noise_prob: float) -> np.ndarray:
    """Level, a faint noise floor, then (seeded) background noise and gain. ``(T,)`` float32 in."""
    import audiomentations as A

    wave = np.asarray(wave, dtype=np.float32)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 0:
        wave = wave * np.float32(0.5 / peak)
    # a floor about 74 dB below full scale: real recordings are never digital silence
    wave = wave + np.random.default_rng(seed).standard_normal(wave.size, dtype=np.float32) * np.float32(2e-4)
    if noise_prob not in _TRANSFORMS:
        steps = [A.Gain(min_gain_db=GAIN_DB[0], max_gain_db=GAIN_DB[1], p=1.0)]
        if noise_prob > 0:
            steps.insert(0, A.AddColorNoise(min_snr_db=NOISE_SNR_DB[0], max_snr_db=NOISE_SNR_DB[1], p=noise_prob))
        _TRANSFORMS[noise_prob] = A.Compose(steps)
    # audiomentations draws from the global generators: seed them for this file
    random.seed(seed)
    np.random.seed(seed)
    wave = _TRANSFORMS[noise_prob](samples=wave.astype(np.float32), sample_rate=SAMPLE_RATE)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 0.99:
        wave = wave * (0.99 / peak)
    return np.ascontiguousarray(wave, dtype=np.float32)


def _report(language, lang: str, seed: int, lexicon, cast: list[Speaker], rows: dict[str, list[dict]],
            noise: float, targets: dict[str, float]) -> dict:
    splits = {}
    for name in ("train", "dev", "test", "unlabeled"):
        rs = rows[name]
        seconds = sum(r["duration_s"] for r in rs)
        splits[name] = {"files": len(rs), "sentences": sum(len(r.get("sentences", (1,))) for r in rs),
                        "hours": round(seconds / 3600, 4), "seconds": round(seconds, 1),
                        "target_hours": round(targets[name] / 3600, 4),
                        "speakers": sorted({r["speaker"] for r in rs})}
    return {
        "lowres_version": __version__,
        "language": {"code": lang, "name": language.name, "espeak_voice": language.identifier},
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "lexicon": {"file": lexicon.path, "words": len(lexicon.words), "source": lexicon.source},
        "synthesiser": "eSpeak NG (espeakng-loader), voice variants as speakers",
        "noise": {"probability": noise, "snr_db": list(NOISE_SNR_DB), "gain_db": list(GAIN_DB)},
        "layout": {"labeled": "labeled/corpus.tsv (id, audio, text, speaker, split) + labeled/wavs/*.wav",
                   "unlabeled": "unlabeled/*.wav" if targets["unlabeled"] > 0 else None},
        "splits": splits,
        "speakers": [{"id": s.id, "split": s.split, "variant": s.variant, "gender": s.gender,
                      "rate_wpm": s.rate_wpm, "pitch": s.pitch, "pitch_range": s.pitch_range,
                      "word_gap": s.word_gap} for s in cast],
        "notes": ["speakers of dev and test speak nowhere else; the unlabeled audio is spoken by train speakers",
                  "no sentence is spoken twice in the whole corpus"],
    }


def print_summary(result: SynthResult, console) -> None:
    """A table of what was written and the command that prepares it."""
    from rich.table import Table

    from lowres.progress import plain, say

    report = result.report
    lang = report["language"]
    table = Table(title=plain(f"synthetic {lang['name']} corpus in {result.out}"))
    for col in ("split", "hours", "files", "sentences", "speakers"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, s in report["splits"].items():
        if s["files"]:
            table.add_row(name, f"{s['hours']:.3f}", str(s["files"]), str(s["sentences"]), str(len(s["speakers"])))
    console.print(table)
    speed = result.audio_s / result.wall_s if result.wall_s > 0 else 0.0
    say(console, f"{result.audio_s / 3600:.2f} h of audio in {result.wall_s:.0f} s ({speed:.0f}x real time, "
                  f"{result.workers} worker{'s' if result.workers != 1 else ''}); words: {report['lexicon']['words']} "
                  f"from {report['lexicon']['file']}")
    unlabeled = f" --unlabeled {result.unlabeled}" if result.unlabeled is not None else ""
    rules = " --lang sw" if lang["code"] == "sw" else ""
    say(console, f"next:  lowres prepare {result.corpus}{unlabeled}{rules} --out prepared/{lang['code']}-synth")
