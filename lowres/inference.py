"""Using a fine-tuned run: ``transcribe`` (audio files of any length) and ``export`` (a Hugging Face folder)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lowres import LowresError
from lowres.config import TRANSCRIBE_CHUNK_S

if TYPE_CHECKING:  # decode imports the LM package (numpy): kept out of `import lowres.inference`
    from lowres.decode import DecodeOptions


def plan_chunks(path: Path, chunk_s: float) -> list[tuple[float, float]]:
    """Pieces (offset, duration) of at most ``chunk_s`` seconds, cut at quiet points."""
    from lowres.data import audio
    from lowres.data.segment import plan_cuts

    try:
        info = audio.probe(path, check_samples=False)
    except audio.AudioError as exc:
        raise LowresError(f"{path}: cannot be read as audio ({exc.detail}). Give a wav, flac, ogg or mp3 "
                          "file.") from None
    total = info.frames / info.sample_rate
    if total <= chunk_s:
        return [(0.0, total)]
    rms, hop = audio.frame_rms(path)
    return plan_cuts(rms, hop, total, min_s=min(5.0, chunk_s / 4), max_s=chunk_s)


def transcribe_files(run_dir: Path, files: Sequence[Path], device_name: str = "auto", chunk_s: float = TRANSCRIBE_CHUNK_S,
                     *, options: DecodeOptions | None = None, progress=None,
                     on_error: Callable[[Path, str], None] | None = None) -> Iterator[tuple[Path, str]]:
    """(file, transcript) in input order. Long files are cut into ≤ ``chunk_s`` pieces at quiet points (at most
    the 30 s a Whisper backbone reads),
    decoded in batches and joined with spaces; memory holds a batch's audio and a file's frame scores (about
    20 MB an hour with 27 symbols), not the file's audio. An ONNX model (``deploy/x/model.onnx`` or its folder)
    works on as many files at once as its session runs utterances (:class:`lowres.deploy.OnnxRecogniser`);
    results still come in input order, and the search (greedy or beam) runs here, one file after the other.

    ``options``: how to decode (:class:`lowres.decode.DecodeOptions`: greedy by default, beam search with
    ``options.lm``). The audio is always loaded in-process (``workers`` does not apply): each file's pieces
    are decoded on their own, too few for worker processes to pay for their start.
    ``progress``: a rich ``Progress``; a file of more than one piece gets a bar over its pieces (hidden
    when the file is done). ``on_error(file, reason)``: a file that cannot be transcribed (missing, not
    audio, a piece that does not decode) is reported there and skipped, and the others go on; without it
    the first such file raises :class:`LowresError`. Files that are all missing are refused before the
    model is loaded either way."""
    from lowres.bases import load_run
    from lowres.decode import BeamSearch, DecodeOptions
    from lowres.runtime import resolve_device

    options = dataclasses.replace(options if options is not None else DecodeOptions(), workers=0)
    search = BeamSearch.from_options(options)  # the LM files are checked before the model is loaded
    if chunk_s < 4:
        raise LowresError("--chunk must be at least 4 seconds.")
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing and (on_error is None or len(missing) == len(files)):
        raise LowresError(f"Audio file(s) not found: {', '.join(missing[:5])}. Check the paths.")
    from lowres.deploy import is_onnx

    if is_onnx(Path(run_dir)):  # an exported model: ONNX Runtime on the CPU
        from lowres.deploy import load_onnx

        if device_name not in ("auto", "cpu"):
            raise LowresError(f"{run_dir} is an ONNX model: it runs on the CPU through ONNX Runtime. Leave out "
                              f"--device {device_name}, or give the run folder it was exported from.")
        run, device = load_onnx(Path(run_dir)), resolve_device("cpu")
        options = dataclasses.replace(options, precision="fp32")
        lanes = run.model.threads  # files read and run side by side, as many as the session runs at once
    else:
        device = resolve_device(device_name)
        run, lanes = load_run(run_dir, device=device), 1  # torch spreads one file's work over its threads
    chunk_s = min(chunk_s, run.model.spec.max_seconds)  # Whisper reads 30 s at most: longer pieces are cut
    if options.precision is None:
        options = dataclasses.replace(options, precision=run.config.train.precision)
    decoder = search.make_decoder(run.vocab) if search is not None else None

    def forward(f: Path):
        if not f.is_file():
            raise LowresError(f"{f}: {'a folder, not an audio file' if f.is_dir() else 'no such file'}.")
        return _file_logits(run, f, device, chunk_s, options, progress)

    held = []  # with lanes, what on_error would say waits for the end: a lane opening audio may have the
    #            process's stderr silenced (lowres.data.audio.quiet_stderr) at the moment it would be printed
    for f, result in _in_order(forward, [Path(f) for f in files], lanes):
        try:
            if isinstance(result, BaseException):
                raise result
            text = _spell(run.vocab, decoder, result)
        except LowresError as exc:
            if on_error is None:
                raise
            if lanes > 1:
                held.append((f, str(exc)))
            else:
                on_error(f, str(exc))
            continue
        yield f, text
    for f, why in held:
        on_error(f, why)


def _in_order(work: Callable, items: list, lanes: int) -> Iterator[tuple]:
    """``(item, work(item) or the LowresError it raised)`` in input order; with ``lanes`` > 1 that many items
    are worked on at once (threads), at most twice as many ahead of the one yielded, so memory stays bounded."""
    def safe(item):
        try:
            return work(item)
        except LowresError as exc:
            return exc

    if lanes <= 1 or len(items) < 2:
        for item in items:
            yield item, safe(item)
        return
    import collections
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(lanes, thread_name_prefix="lowres-file")
    try:
        ahead = collections.deque()
        todo = iter(items)
        for item in todo:
            ahead.append((item, pool.submit(safe, item)))
            if len(ahead) >= 2 * lanes:
                break
        while ahead:
            item, future = ahead.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append((nxt, pool.submit(safe, nxt)))
            yield item, future.result()
    finally:  # an error, a stop or a caller that stops reading: the files queued are not started
        pool.shutdown(wait=False, cancel_futures=True)


def _file_logits(run, path: Path, device, chunk_s: float, options: DecodeOptions, progress) -> list[tuple]:
    """One file's pieces through the model, batch by batch: ``[(piece indices, logits (B, T, V), frame lengths
    (B,))]``; a piece that does not decode raises :class:`LowresError`."""
    from lowres.data.manifest import Utterance
    from lowres.decode import forward_batches

    pieces = plan_chunks(path, chunk_s)
    utts = [Utterance(id=f"{i}", audio_filepath=str(path.resolve()), duration=d, offset=o)
            for i, (o, d) in enumerate(pieces)]
    task = None
    if progress is not None and len(pieces) > 1:
        task = progress.add_task(path.name, total=len(pieces), unit="chunk")
    batches = []
    try:
        for indices, logits, frames, errors in forward_batches(run.model, utts, device, options=options):
            if errors:
                raise LowresError(f"{path}: {errors[0]}")
            batches.append((indices, logits, frames))
            if task is not None:
                progress.advance(task, len(indices))
    finally:
        if task is not None:
            progress.update(task, visible=False)
    return batches


def _spell(vocab, decoder, batches: list[tuple]) -> str:
    """A file's text: its pieces' (batched by length) decoded, greedy or with ``decoder``, joined in order."""
    from lowres.decode import batch_texts

    texts = {}
    for indices, logits, frames in batches:
        texts.update(zip(indices, batch_texts(logits, frames, vocab, decoder), strict=True))
    return " ".join(texts[i] for i in sorted(texts) if texts[i])


def export_run(run_dir: Path, out: Path, overwrite: bool = False) -> Path:
    """LoRA merged into the base; written as a Hugging Face ``*ForCTC`` folder with a ``Wav2Vec2Processor``.
    A ``--head weighted`` run and a Whisper-encoder run are refused (LowresError): no transformers class holds
    them."""
    from functools import partial

    from lowres.bases import load_run
    from lowres.fsutil import claim_folder
    from lowres.model.hf_convert import save_hf_directory, to_hf_ctc

    out = Path(out)
    claim = partial(claim_folder, out, what="exported model", overwrite=overwrite, clear=_write_over,
                    hint="Choose a new folder, or pass --overwrite to write the export into it.")
    _refuse_weighted_head(Path(run_dir))
    claim(check_only=True)  # refuse before the run is read, touching nothing
    run = load_run(run_dir, device="cpu", merge=True)
    spec = run.model.spec
    hf = to_hf_ctc(run.model.backbone, run.model.head, spec.family, spec.arch, len(run.vocab),
                   spec.normalize_waveform, mask_embedding=run.model.mask_emb.detach())
    claim()
    save_hf_directory(out, hf, run.vocab.token_to_id(), spec.normalize_waveform)
    return out


def _refuse_weighted_head(run_dir: Path) -> None:
    """A ``--head weighted`` run and a Whisper-encoder run have no Hugging Face form: say so, and what to use
    instead."""
    from lowres.runs import is_run, read_run

    if not is_run(run_dir):  # not a run folder: load_run says so
        return
    record = read_run(run_dir)
    if record.kind == "finetune" and record.backbone.get("family") == "whisper":
        raise LowresError(
            f"{run_dir} is a CTC recogniser on Whisper's encoder, and no transformers class holds that: Whisper's "
            "classes pair its encoder with its own decoder (WhisperForConditionalGeneration) or a classifier "
            "(WhisperForAudioClassification), none with a CTC layer, so there is no Hugging Face folder to export "
            f"that loads with the same transcripts. Use the run folder itself with `lowres eval --model {run_dir}` "
            f"and `lowres transcribe --model {run_dir}`.")
    head = record.config.get("head")
    if record.kind == "finetune" and isinstance(head, dict) and head.get("kind") == "weighted":
        raise LowresError(
            f"{run_dir} was fine-tuned with --head weighted (a frozen backbone whose hidden layers are mixed by "
            "learned weights and read by a BiLSTM CTC downstream), and no transformers class holds that head: "
            "Wav2Vec2ForCTC and its kin have one linear layer on the last layer, so there is no Hugging Face "
            f"folder to export. Use the run folder itself with `lowres eval --model {run_dir}` and `lowres "
            f"transcribe --model {run_dir}`, or fine-tune with --head ctc (the default) for a model that exports.")


def _write_over(out: Path) -> None:
    """--overwrite on export removes nothing: the new files replace the old ones of the same name, and files
    that are not the export's are left alone."""
