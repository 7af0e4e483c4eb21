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
    decoded in batches and joined with spaces; memory stays bounded by the batch, not by the file.

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
    device = resolve_device(device_name)
    from lowres.deploy import is_onnx

    if is_onnx(Path(run_dir)):  # an exported model: ONNX Runtime on the CPU
        from lowres.deploy import load_onnx

        run, device = load_onnx(Path(run_dir)), resolve_device("cpu")
        options = dataclasses.replace(options, precision="fp32")
    else:
        run = load_run(run_dir, device=device)
    chunk_s = min(chunk_s, run.model.spec.max_seconds)  # Whisper reads 30 s at most: longer pieces are cut
    if options.precision is None:
        options = dataclasses.replace(options, precision=run.config.train.precision)
    decoder = search.make_decoder(run.vocab) if search is not None else None
    for f in files:
        f = Path(f)
        try:
            if not f.is_file():
                raise LowresError(f"{f}: {'a folder, not an audio file' if f.is_dir() else 'no such file'}.")
            text = _transcribe_one(run, f, device, chunk_s, options, decoder, progress)
        except LowresError as exc:
            if on_error is None:
                raise
            on_error(f, str(exc))
            continue
        yield f, text


def _transcribe_one(run, path: Path, device, chunk_s: float, options: DecodeOptions, decoder, progress) -> str:
    """One file's transcript: its pieces decoded in batches, joined with spaces."""
    from lowres.data.manifest import Utterance
    from lowres.decode import decode_utterances

    pieces = plan_chunks(path, chunk_s)
    utts = [Utterance(id=f"{i}", audio_filepath=str(path.resolve()), duration=d, offset=o)
            for i, (o, d) in enumerate(pieces)]
    task = None
    if progress is not None and len(pieces) > 1:
        task = progress.add_task(path.name, total=len(pieces), unit="chunk")
    texts = [""] * len(utts)
    try:
        for idx, hyp, err in decode_utterances(run.model, utts, run.vocab, device, options=options, decoder=decoder):
            if hyp is None:
                raise LowresError(f"{path}: {err}")
            texts[idx] = hyp
            if task is not None:
                progress.advance(task)
    finally:
        if task is not None:
            progress.update(task, visible=False)
    return " ".join(t for t in texts if t)


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
