"""``lowres export --format onnx``: a fine-tuned run as an ONNX model that runs without PyTorch (ONNX Runtime,
sherpa-onnx), checked against lowres's own transcripts before it is handed over; and the ONNX recogniser that
``lowres transcribe --model deploy/x/model.onnx`` runs.

Files in OUT (the folder layout is this module's):

* ``model.onnx``: input ``x`` (N, samples) float32, 16 kHz mono in [-1, 1]; output ``logits`` (N, frames, V)
  float32, 50 frames a second, blank = id 0. Batch and length are dynamic; one utterance per call is exact (a
  padded batch is not: the graph has no lengths input, as sherpa-onnx's wav2vec 2.0 CTC models). Exported with
  the TorchScript exporter (``dynamo=False``: the dynamo exporter fails on torchaudio's wav2vec 2.0 and ignores
  ``dynamic_axes``), opset 17, from the model in eval mode (no Dropout node is left). **The waveform
  normalisation lives in the graph**: a backbone that wants zero mean and unit variance per utterance (XLS-R,
  LARGE models) normalises inside ``model.onnx``, so every runtime feeds raw samples. Whisper's log-mel is in
  the graph too. LoRA is merged; ``--head weighted`` runs export their layer mix and BiLSTM downstream.
* ``model.int8.onnx`` (``--int8``): the MatMul weights dynamically quantised to int8 (ONNX Runtime's
  ``quantize_dynamic``, MatMul only, as sherpa-onnx does); convolutions stay float32.
* ``tokens.txt``: ``token id`` per line, the blank as ``<blk>`` and the word boundary as ``▁`` (sherpa-onnx:
  ``sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc`` reads the export as it is); ``vocab.txt``: the same
  with the Hugging Face names (``<pad>`` for the blank, ``|`` between words).
* ``lowres_onnx.json``: what lowres needs to use it (the vocabulary's units, the text rules, the frame rate,
  the longest input, the run and its weights' sha256).
* ``export_report.json``: the parity gate's figures.

The parity gate: greedy transcripts of the ONNX model(s) against ``lowres eval``'s greedy transcripts of the
run on its dev set (or ``--check-manifest``): fp32 must give the same transcript for at least 99% of the
utterances and a CER within 0.1 point, or the export fails; int8 must stay within 1 point of CER of fp32, or
the export says so and names model.onnx the deliverable (``--strict``: fails).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import threading
import time
from pathlib import Path

from lowres import LowresError
from lowres.audiotime import FRAME_RATE, SAMPLE_RATE

MODEL = "model.onnx"
MODEL_INT8 = "model.int8.onnx"
TOKENS = "tokens.txt"
VOCAB_TXT = "vocab.txt"
META = "lowres_onnx.json"
REPORT = "export_report.json"
OUTPUTS = (MODEL, MODEL_INT8, TOKENS, VOCAB_TXT, META, REPORT)
OPSET = 17
SHERPA_SPACE = "\u2581"  # tokens.txt's word boundary: sherpa-onnx prints it as a space (lowres's "|")
SAME_TRANSCRIPTS = 0.99  # the share of identical transcripts fp32 must reach
FP32_CER_POINTS = 0.1  # fp32's CER within this many points of the run's
INT8_CER_POINTS = 1.0  # int8's CER within this many points of fp32's


def require_onnx_extra() -> None:
    """A clear error when onnx and onnxruntime are not installed."""
    from lowres.runtime import install_hint

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception as exc:  # ImportError, or a broken binary wheel
        raise LowresError(f"ONNX export and ONNX models need the onnx extra (onnx, onnxruntime): "
                          f"{install_hint('onnx')} ({type(exc).__name__}: {exc})") from None


def _logits_module(model):
    """The recogniser as the graph computes it: samples (N, S) -> logits (N, T, V), every sample valid."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            # the lengths as a computation on x, not torch.full(..., x.shape[1]): traced, that would freeze the
            # example's length into the graph (the weighted head's BiLSTM reverses each sequence within it)
            logits, _ = self.inner(x, torch.ones_like(x, dtype=torch.long).sum(dim=1))
            return logits

    return Logits(model).eval()


def _convs_as_matmuls(module):
    """A copy of ``module`` whose plain 1-D convolutions (no groups, padding or dilation: wav2vec 2.0's feature
    encoder) compute as one matrix product per kernel tap over strided slices, the same sum in another order.
    Dynamic int8 quantises MatMul, not Conv: measured on a BASE wav2vec 2.0 at one thread, the feature encoder's
    float convolutions were 60% of the int8 graph's time."""
    import copy

    import torch

    class ConvAsMatMul(torch.nn.Module):
        def __init__(self, conv: torch.nn.Conv1d):
            super().__init__()
            self.k, self.s = conv.kernel_size[0], conv.stride[0]
            w = conv.weight.detach()
            for j in range(self.k):
                self.register_buffer(f"w{j}", w[:, :, j].t().contiguous())  # (in, out)
            self.register_buffer("b", conv.bias.detach() if conv.bias is not None else None)

        def forward(self, x):  # (N, in, T) -> (N, out, (T - k) // s + 1), as the convolution
            xt = x.transpose(1, 2)
            y = None
            for j in range(self.k):
                end = j - (self.k - 1)  # tap j reads frames j, j + s, ...: as many as the output has
                part = xt[:, j: end if end else None: self.s] @ getattr(self, f"w{j}")
                y = part if y is None else y + part
            if self.b is not None:
                y = y + self.b
            return y.transpose(1, 2)

    module = copy.deepcopy(module)
    for name, child in list(module.named_modules()):
        if (isinstance(child, torch.nn.Conv1d) and child.groups == 1 and child.padding in ((0,), "valid")
                and child.dilation == (1,) and child.in_channels > 1):
            parent_name, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, attr, ConvAsMatMul(child))
    return module


def export_onnx(run_dir: Path, out: Path, *, int8: bool = False, check_manifest: Path | None = None,
                strict: bool = False, overwrite: bool = False, console=None) -> dict:
    """Write OUT's files (module docstring) and run the parity gate; returns the report. LowresError when fp32
    fails the gate (or int8 does, with ``strict``): the files stay in OUT for a look, the report says why."""
    import torch

    from lowres.bases import load_run
    from lowres.fsutil import atomic_write_json, claim_folder, remove_outputs

    require_onnx_extra()
    run_dir, out = Path(run_dir), Path(out)

    def claim(check_only: bool) -> str:
        return claim_folder(out, what="exported model", overwrite=overwrite, clear=remove_outputs(*OUTPUTS),
                            check_only=check_only,
                            hint="Choose a new folder, or pass --overwrite to write the export into it.")

    claim(check_only=True)
    run = load_run(run_dir, device="cpu", merge=True)
    manifest = _check_manifest(run, check_manifest)
    claim(check_only=False)
    t0 = time.perf_counter()
    wrapper = _logits_module(run.model)
    example = torch.zeros(1, SAMPLE_RATE)  # a second of silence: batch and length are dynamic in the graph
    import warnings

    def trace(module, path: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's notes on traced branches and its deprecation
            torch.onnx.export(module, (example,), str(path), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "N", 1: "samples"}, "logits": {0: "N", 1: "frames"}},
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)

    trace(wrapper, out / MODEL)
    meta = _metadata(run, run_dir)
    _add_metadata(out / MODEL, meta)
    if int8:  # from a graph whose plain convolutions are matrix products, so that they are quantised too
        unquantised = out / f".{MODEL_INT8}.fp32"
        try:
            trace(_convs_as_matmuls(wrapper), unquantised)
            _quantise(unquantised, out / MODEL_INT8)
        finally:
            unquantised.unlink(missing_ok=True)
        _add_metadata(out / MODEL_INT8, {**meta, "quantisation": "int8 MatMul (dynamic; the feature encoder's "
                                                                 "convolutions as MatMul)"})
    _write_tokens(out, run.vocab)
    atomic_write_json(out / META, meta)
    export_s = time.perf_counter() - t0
    report = parity_gate(run, out, manifest, int8=int8, strict=strict)
    report.update(export_seconds=round(export_s, 1),
                  sizes_mb={p.name: round(p.stat().st_size / 2**20, 2) for p in (out / MODEL, out / MODEL_INT8)
                            if p.is_file()})
    atomic_write_json(out / REPORT, report)
    if console is not None:
        _print(report, out, console)
    if report["failed"]:
        raise LowresError(report["failed"])
    return report


def _check_manifest(run, given: Path | None) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise LowresError(f"--check-manifest {given}: no such manifest file.")
        return Path(given)
    dev = run.record.extras.get("dev_manifest")
    if dev and Path(dev).is_file():
        return Path(dev)
    raise LowresError(f"The run's dev manifest ({dev or 'not recorded'}) is not there to check the export against. "
                      "Give a manifest of a few dozen utterances with --check-manifest.")


def _metadata(run, run_dir: Path) -> dict:
    from lowres import __version__
    from lowres.data.vocab import BLANK_ID
    from lowres.runs import RUN_WEIGHTS

    sha = hashlib.sha256((run_dir / RUN_WEIGHTS).read_bytes()).hexdigest()
    spec = run.model.spec
    return {"model_type": "ctc", "backbone": spec.family, "head": getattr(run.config.head, "kind", "ctc"),
            "vocab_size": len(run.vocab), "blank_id": BLANK_ID, "sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE,
            "normalize": "in_graph" if spec.normalize_waveform else "none",
            "max_seconds": spec.max_seconds if spec.max_seconds != float("inf") else 0,
            "vocab_units": run.vocab.units, "text": run.record.text or {},
            "lowres_version": __version__, "run": str(run_dir.resolve()), "run_weights_sha256": sha,
            "input": "x: (N, samples) float32 16 kHz mono in [-1, 1], one utterance per call for exact results",
            "output": "logits: (N, frames, vocab_size) float32; greedy: argmax, collapse repeats, drop blank (0)"}


def _add_metadata(path: Path, meta: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    onnx.save(model, str(path))


def _quantise(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to run shape inference first: MatMul-only needs none
    try:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def _write_tokens(out: Path, vocab) -> None:
    from lowres.data.vocab import BLANK_ID, WORD_DELIMITER_ID
    from lowres.fsutil import atomic_write_lines

    tokens = list(vocab.tokens)
    sherpa = {BLANK_ID: "<blk>", WORD_DELIMITER_ID: SHERPA_SPACE}
    atomic_write_lines(out / TOKENS, (f"{sherpa.get(i, t)} {i}" for i, t in enumerate(tokens)))
    atomic_write_lines(out / VOCAB_TXT, (f"{'<pad>' if i == BLANK_ID else t} {i}" for i, t in enumerate(tokens)))


# ---------------------------------------------------------------------------------------------------
# running an exported model


@dataclasses.dataclass
class OnnxSpec:
    """What lowres's decoding helpers read from ``model.spec``."""

    max_seconds: float
    conv_stack: tuple = ((400, 320),)
    family: str = "onnx"


class OnnxRecogniser:
    """An ONNX Runtime session behind the interface lowres's decoding uses: ``model(waves (B, S), lengths (B,))``
    -> ``(logits (B, T, V), frame lengths (B,))`` as torch tensors. Each utterance runs alone at its own length
    (exact; the graph has no lengths input).

    ``threads`` (0: as many as torch uses, ``OMP_NUM_THREADS`` where set): the utterances of a batch run that
    many at a time, each on one thread. ONNX Runtime's intra-op pool barely speeds up one small graph on a second
    core (measured: `whisper-base` int8 8.4 against 9.3 ms a second of audio on 2 threads; `tiny-ssl` not at
    all), while two utterances at once nearly halve the time; one short clip alone therefore runs on one thread.
    ``run_many`` is the same for callers that hold utterances of several files."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        if not threads:
            import torch

            threads = torch.get_num_threads()
        self.threads = max(1, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise LowresError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc}).") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = {k: _maybe_json(v) for k, v in props.items()}
        self.spec = OnnxSpec(max_seconds=float(self.meta.get("max_seconds") or 0) or float("inf"))
        self.training = False
        self._pool = None
        self._lock = threading.Lock()

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def _run(self, wave):
        try:
            return self.session.run(["logits"], {"x": wave})[0][0]
        except Exception as exc:  # onnxruntime's errors (a graph that cannot read this input) as a message
            raise LowresError(f"ONNX Runtime could not run the model on a clip of {wave.shape[-1]} samples "
                              f"({type(exc).__name__}: {str(exc)[:300]}).") from None

    def run_many(self, waves: list) -> list:
        """Logits (T, V) of each float32 wave (S,), ``threads`` at a time (every run goes through one pool, so
        at most ``threads`` run at once whoever calls); ONNX Runtime lets go of Python's lock while it runs."""
        import numpy as np

        waves = [np.ascontiguousarray(w[None, :], dtype=np.float32) for w in waves]
        if self.threads == 1:
            return [self._run(w) for w in waves]
        with self._lock:  # one pool, made on first use
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="lowres-onnx")
        return list(self._pool.map(self._run, waves))

    def close(self) -> None:
        """Let the pool's threads go (also when the recogniser is garbage-collected)."""
        pool, self._pool = getattr(self, "_pool", None), None  # None too when __init__ stopped early
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __del__(self):
        self.close()

    def __call__(self, waves, lengths):
        import torch

        from lowres.decode import samples_for_one_frame

        # at least the samples of one frame: a shorter clip comes padded with zeros to that (as torch reads it)
        shortest = min(waves.shape[1], samples_for_one_frame(self))
        outs = self.run_many([w[: max(n, shortest)]
                              for w, n in zip(waves.cpu().numpy(), lengths.cpu().tolist(), strict=True)])
        frames = torch.tensor([o.shape[0] for o in outs])
        logits = torch.zeros(len(outs), int(frames.max()) if len(outs) else 0, outs[0].shape[1] if outs else 0)
        for i, o in enumerate(outs):
            logits[i, : o.shape[0]] = torch.from_numpy(o)
        return logits, frames


def _maybe_json(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclasses.dataclass
class LoadedOnnx:
    """An exported model as ``transcribe`` uses a run: ``model`` and ``vocab`` (it decodes in float32)."""

    model: OnnxRecogniser
    vocab: object


def is_onnx(path: Path) -> bool:
    """An ``.onnx`` file, or a folder written by ``export --format onnx``."""
    path = Path(path)
    return path.suffix == ".onnx" or (path.is_dir() and (path / MODEL).is_file() and (path / META).is_file())


def load_onnx(path: Path, threads: int = 0) -> LoadedOnnx:
    """The ONNX model at ``path`` (a file; a folder means its model.onnx) with the vocabulary of the tokens.txt
    beside it, checked against the graph's ``vocab_size``."""
    from lowres.data.vocab import SPECIALS, Vocab

    require_onnx_extra()
    path = Path(path)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        raise LowresError(f"{path}: no such ONNX model.")
    model = OnnxRecogniser(path, threads)
    tokens_file = path.parent / TOKENS
    if not tokens_file.is_file():
        raise LowresError(f"{path}: no {TOKENS} beside it; it holds the vocabulary. Export again with `lowres export "
                          "--format onnx`, or copy the export folder whole.")
    tokens = [line.rsplit(" ", 1)[0] for line in tokens_file.read_text(encoding="utf-8").splitlines() if line]
    if tokens[: len(SPECIALS)] != ["<blk>", SPECIALS[1], SHERPA_SPACE]:
        raise LowresError(f"{tokens_file}: not a tokens.txt written by lowres (its first tokens are {tokens[:3]}).")
    vocab = Vocab(tuple(tokens[len(SPECIALS):]), units=model.meta.get("vocab_units", "grapheme"))
    if model.meta.get("vocab_size") not in (None, len(vocab)):
        raise LowresError(f"{tokens_file} has {len(vocab)} tokens and {path.name} outputs {model.meta['vocab_size']}: "
                          "they come from different exports.")
    return LoadedOnnx(model, vocab)


# ---------------------------------------------------------------------------------------------------
# the parity gate


def parity_gate(run, out: Path, manifest: Path, *, int8: bool, strict: bool) -> dict:
    """Greedy transcripts of the run (torch) and of each exported model on ``manifest``, compared (module
    docstring); ``report["failed"]`` is the error message, or empty."""
    import jiwer
    import torch

    from lowres.config import DecodeOptions
    from lowres.data.manifest import read_manifest
    from lowres.decode import decode_utterances

    utts = list(read_manifest(manifest, require_text=True))
    if not utts:
        raise LowresError(f"{manifest}: no utterances to check the export on.")
    options = DecodeOptions(workers=0, precision="fp32", batch_seconds=60)
    refs = [u.text for u in utts]

    def transcripts(model) -> tuple[list[str], float]:
        hyps = [""] * len(utts)
        t0 = time.perf_counter()
        for i, hyp, err in decode_utterances(model, utts, run.vocab, torch.device("cpu"), options=options):
            if hyp is None:
                raise LowresError(f"{manifest}: {err}")
            hyps[i] = hyp
        return hyps, time.perf_counter() - t0

    def cer(hyps: list[str]) -> float:
        return 100 * jiwer.cer(refs, [h or " " for h in hyps])

    audio_s = sum(u.duration for u in utts)
    torch_hyps, torch_s = transcripts(run.model)
    report = {"manifest": str(manifest), "utterances": len(utts), "audio_seconds": round(audio_s, 1),
              "torch": {"cer": round(cer(torch_hyps), 3), "rtf": round(torch_s / audio_s, 4)}, "failed": ""}
    fp32_hyps, fp32_s = transcripts(OnnxRecogniser(out / MODEL))
    same = sum(a == b for a, b in zip(torch_hyps, fp32_hyps, strict=True)) / len(utts)
    report["fp32"] = {"cer": round(cer(fp32_hyps), 3), "same_transcripts": round(same, 4),
                      "rtf": round(fp32_s / audio_s, 4)}
    if same < SAME_TRANSCRIPTS or abs(report["fp32"]["cer"] - report["torch"]["cer"]) > FP32_CER_POINTS:
        report["failed"] = (f"The exported {MODEL} does not transcribe like the run: {100 * same:.1f}% of {len(utts)} "
                            f"utterances the same (at least {100 * SAME_TRANSCRIPTS:g}% needed), CER "
                            f"{report['fp32']['cer']:.2f}% against {report['torch']['cer']:.2f}%. This is a lowres "
                            f"bug: please report it with {out / REPORT}.")
    report["deliverable"] = MODEL
    if int8:
        int8_hyps, int8_s = transcripts(OnnxRecogniser(out / MODEL_INT8))
        report["int8"] = {"cer": round(cer(int8_hyps), 3), "rtf": round(int8_s / audio_s, 4),
                          "same_transcripts": round(sum(a == b for a, b in zip(fp32_hyps, int8_hyps, strict=True))
                                                    / len(utts), 4)}
        worse = report["int8"]["cer"] - report["fp32"]["cer"]
        if worse > INT8_CER_POINTS:
            report["int8_warning"] = (f"{MODEL_INT8} reads worse than {MODEL}: CER {report['int8']['cer']:.2f}% against "
                                      f"{report['fp32']['cer']:.2f}% (more than {INT8_CER_POINTS:g} point), so "
                                      f"{MODEL} is the one to deploy.")
            if strict and not report["failed"]:
                report["failed"] = report["int8_warning"] + " (--strict)"
        else:
            report["deliverable"] = MODEL_INT8
    return report


def _print(report: dict, out: Path, console) -> None:
    from lowres.progress import say

    console.print(f"checked on {report['utterances']} utterances of {report['manifest']}: CER torch "
                  f"{report['torch']['cer']:.2f}%, ONNX fp32 {report['fp32']['cer']:.2f}% "
                  f"({100 * report['fp32']['same_transcripts']:.1f}% the same transcripts)"
                  + (f", int8 {report['int8']['cer']:.2f}%" if "int8" in report else ""))
    if "int8_warning" in report:
        say(console, ("warning:", "yellow"), f" {report['int8_warning']}")
    if not report["failed"]:
        console.print(f"wrote {out}: deploy {out / report['deliverable']} with {out / TOKENS}")
