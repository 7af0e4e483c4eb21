"""lowres export --format onnx and transcribe through ONNX Runtime: every kind of run exports and passes the parity
gate on tiny models; a broken graph fails it; int8's verdict; tokens.txt and the graph's metadata; the message
when the onnx extra is missing."""

from __future__ import annotations

import json
from pathlib import Path

import factory
import pytest
from factory import FAST, invoke

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tone corpus and a short run of each kind: LoRA (merged at export), no LoRA, the weighted head, and the
    Whisper encoder with LoRA."""
    root = tmp_path_factory.mktemp("deploy")
    factory.tone_table(root / "c.csv", n=16)
    res = invoke("prepare", root / "c.csv", "--out", root / "prep", "-q", "--dev-fraction", 0.25,
                 "--test-fraction", 0)
    assert res.exit_code == 0, res.output
    hf = factory.hf_base(root / "hf")
    common = ["--data", root / "prep", "--split", "full", "--eval-every", 0, "--lr", 3e-3, *FAST]
    kinds = {"lora": ["--base", hf, "--max-steps", 12],
             "nolora": ["--base", "tiny", "--no-lora", "--max-steps", 12],
             "weighted": ["--base", hf, "--head", "weighted", "--set", "head.lstm_hidden=16", "--max-steps", 6],
             "whisper": ["--base", factory.tiny_whisper(root / "whisper-hf"), "--max-steps", 3]}
    out = {}
    for name, args in kinds.items():
        res = invoke("finetune", *common, *args, "--out", root / name)
        assert res.exit_code == 0, res.output
        out[name] = root / name
    out["dev"] = root / "prep" / "manifests" / "dev.jsonl"
    return out


@pytest.mark.parametrize("kind", ["lora", "nolora", "weighted", "whisper"])
def test_every_kind_of_run_exports_and_transcribes_as_the_run_does(runs, kind, tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort
    import soundfile as sf

    out = tmp_path / "deploy"
    res = invoke("export", "--model", runs[kind], "--format", "onnx", "--int8", "--out", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "export_report.json").read_text())
    assert report["failed"] == "" and report["fp32"]["same_transcripts"] >= 0.99
    assert abs(report["fp32"]["cer"] - report["torch"]["cer"]) <= 0.1
    assert "int8" in report and report["deliverable"] in ("model.onnx", "model.int8.onnx")
    graph = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in graph.metadata_props}
    vocab = json.loads((runs[kind] / "vocab.json").read_text())
    assert int(meta["vocab_size"]) == len(vocab) and meta["sample_rate"] == "16000" and meta["model_type"] == "ctc"
    assert meta["normalize"] in ("in_graph", "none") and meta["lowres_version"] and len(meta["run_weights_sha256"]) == 64
    assert not [n for n in graph.graph.node if n.op_type == "Dropout"]  # exported in eval mode
    convs = sum(n.op_type == "Conv" for n in graph.graph.node)
    convs_int8 = sum(n.op_type == "Conv" for n in onnx.load(str(out / "model.int8.onnx")).graph.node)
    assert convs_int8 < convs if kind != "whisper" else convs_int8 == convs  # wav2vec 2.0's as quantised MatMul
    tokens = (out / "tokens.txt").read_text().splitlines()
    assert tokens[0] == "<blk> 0" and len(tokens) == len(vocab) and tokens[2] == "▁ 2"
    # onnxruntime and numpy alone: dynamic length, one utterance per call
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for seconds in (0.7, 2.3):
        x = np.random.default_rng(0).standard_normal((1, int(16000 * seconds))).astype(np.float32) * 0.1
        (logits,) = session.run(["logits"], {"x": x})
        assert logits.shape[0] == 1 and logits.shape[2] == len(vocab) and abs(logits.shape[1] - 50 * seconds) <= 2
    # lowres transcribe through ONNX Runtime gives the run's own transcripts
    clips = [json.loads(line) for line in runs["dev"].read_text().splitlines()][:3]
    files = [str((runs["dev"].parent / c["audio_filepath"]).resolve()) for c in clips]
    assert all(sf.info(f).duration > 0 for f in files)
    by_run = invoke("transcribe", "--model", runs[kind], *files)
    by_onnx = invoke("transcribe", "--model", out / "model.onnx", *files)
    assert by_run.exit_code == by_onnx.exit_code == 0, by_onnx.output
    assert by_onnx.output == by_run.output


def test_a_graph_that_reads_differently_fails_the_gate(runs, tmp_path, monkeypatch):
    import lowres.deploy

    real = lowres.deploy._logits_module

    def broken(model):
        import torch

        inner = real(model)

        class Shifted(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return torch.roll(self.inner(x), 3, dims=-1)  # every unit read as another (blank as a letter)

        return Shifted().eval()

    monkeypatch.setattr(lowres.deploy, "_logits_module", broken)
    res = invoke("export", "--model", runs["nolora"], "--format", "onnx", "--out", tmp_path / "bad")
    assert res.exit_code == 2 and "does not transcribe like the run" in res.output and "Traceback" not in res.output
    report = json.loads((tmp_path / "bad" / "export_report.json").read_text())
    assert report["failed"] and report["fp32"]["same_transcripts"] < 0.99


def test_an_int8_model_that_reads_worse_is_not_the_deliverable_and_strict_refuses_it(runs, tmp_path, monkeypatch):
    import lowres.deploy

    monkeypatch.setattr(lowres.deploy, "INT8_CER_POINTS", -1.0)  # any int8 model is "worse" now
    res = invoke("export", "--model", runs["nolora"], "--format", "onnx", "--int8", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "a" / "export_report.json").read_text())
    assert report["deliverable"] == "model.onnx" and "int8_warning" in report and "warning" in res.output
    res = invoke("export", "--model", runs["nolora"], "--format", "onnx", "--int8", "--strict", "--out", tmp_path / "b")
    assert res.exit_code == 2 and "--strict" in res.output


def test_mistakes_and_a_missing_extra_get_a_message(runs, tmp_path, monkeypatch):
    res = invoke("export", "--model", runs["nolora"], "--int8", "--out", tmp_path / "hf")
    assert res.exit_code == 2 and "--format onnx" in res.output
    res = invoke("export", "--model", runs["nolora"], "--format", "onnx", "--check-manifest", tmp_path / "none.jsonl",
                 "--out", tmp_path / "x")
    assert res.exit_code == 2 and "none.jsonl" in res.output and not (tmp_path / "x").exists()
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.startswith("onnxruntime"):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    res = invoke("export", "--model", runs["nolora"], "--format", "onnx", "--out", tmp_path / "y")
    assert res.exit_code == 2 and "onnx extra" in res.output and "Traceback" not in res.output


def test_the_readmes_onnxruntime_example_runs_as_written(runs, tmp_path, monkeypatch):
    """The README's Python example, run as written in a folder laid out as the tour's, prints what `lowres
    transcribe` prints for the clip."""
    import re

    import numpy as np
    import soundfile as sf

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(import wave.*?)```", readme, re.S).group(1)
    clip = tmp_path / "tour/synth/labeled/wavs/spk03-annie_test00000.wav"
    clip.parent.mkdir(parents=True)
    dev = [json.loads(line) for line in runs["dev"].read_text().splitlines()][0]
    wave, _ = sf.read(runs["dev"].parent / dev["audio_filepath"], dtype="float32")
    sf.write(clip, np.clip(wave, -1, 32767 / 32768), 16000, subtype="PCM_16")
    res = invoke("export", "--model", runs["lora"], "--format", "onnx", "--int8", "--out", tmp_path / "tour/deploy",
                 "-q")
    assert res.exit_code == 0, res.output
    expected = invoke("transcribe", "--model", tmp_path / "tour/deploy/model.int8.onnx", clip).output.split("\t")[1]
    monkeypatch.chdir(tmp_path)
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    assert printed.getvalue().strip() == expected.strip()


def test_sherpa_onnx_reads_the_export_as_it_is(runs, tmp_path):
    """sherpa-onnx's wav2vec 2.0 CTC front (Omnilingual's) takes model.onnx and tokens.txt unchanged and prints
    lowres's transcript (not in the dev extra: skipped where sherpa-onnx is not installed)."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    import soundfile as sf

    out = tmp_path / "deploy"
    assert invoke("export", "--model", runs["lora"], "--format", "onnx", "--out", out, "-q").exit_code == 0
    recognizer = sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc(model=str(out / "model.onnx"),
                                                                        tokens=str(out / "tokens.txt"))
    dev = [json.loads(line) for line in runs["dev"].read_text().splitlines()]
    for row in dev[:3]:
        path = runs["dev"].parent / row["audio_filepath"]
        wave, rate = sf.read(path, dtype="float32")
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, wave)
        recognizer.decode_stream(stream)
        ours = invoke("transcribe", "--model", out / "model.onnx", path).output.split("\t")[1].strip()
        assert " ".join(stream.result.text.replace("<unk>", "").split()) == ours  # sherpa prints <unk>, lowres drops it


def test_onnx_transcription_side_by_side_keeps_order_and_reports_bad_files(runs, tmp_path):
    """With two threads, ONNX Runtime runs two utterances at once (each on one thread) and transcribe works on two
    files at once: the transcripts are those of one thread, in input order, a long file's pieces joined in order,
    and a file that cannot be read is reported while the others go on."""
    import numpy as np
    import soundfile as sf
    import torch

    from lowres.deploy import OnnxRecogniser
    from lowres.inference import transcribe_files

    out = tmp_path / "deploy"
    assert invoke("export", "--model", runs["nolora"], "--format", "onnx", "--out", out, "-q").exit_code == 0
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (4000, 16000, 7000, 12000, 400)]
    alone, two = OnnxRecogniser(out / "model.onnx", threads=1), OnnxRecogniser(out / "model.onnx", threads=2)
    for a, b in zip(alone.run_many(waves), two.run_many(waves), strict=True):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    # a clip shorter than one frame's samples comes padded (as decoding pads it for torch): one frame, not an error
    _, frames = two(torch.zeros(2, 400), torch.tensor([150, 400]))
    assert frames.tolist() == [1, 1]
    two.close()

    dev = [json.loads(line) for line in runs["dev"].read_text().splitlines()]
    files = [(runs["dev"].parent / row["audio_filepath"]).resolve() for row in dev]
    long = tmp_path / "long.wav"  # every dev clip one after the other, with a pause between: several pieces
    parts = [sf.read(f, dtype="float32")[0] for f in files]
    sf.write(long, np.concatenate([np.concatenate([p, np.zeros(8000, np.float32)]) for p in parts * 3]), 16000)
    (tmp_path / "not_audio.wav").write_text("not audio")
    asked = [files[0], tmp_path / "missing.wav", long, tmp_path / "not_audio.wav", *files[1:]]
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            failed = []
            results[threads] = list(transcribe_files(out, asked, chunk_s=4.0,
                                                     on_error=lambda f, why, failed=failed: failed.append(f)))
            assert failed == [tmp_path / "missing.wav", tmp_path / "not_audio.wav"]
    finally:
        torch.set_num_threads(before)
    assert results[1] == results[2] and [f for f, _ in results[2]] == [f for f in asked if f not in failed]
    # a file's pieces come back from the model in batches by length; they are spelled in the file's order
    from lowres.data.vocab import Vocab
    from lowres.inference import _spell

    vocab = Vocab(tuple("abc"))
    def batch(indices, words):
        ids = [[vocab.encode(w)[0], 0] for w in words]  # a letter then a blank, one utterance each
        return indices, torch.nn.functional.one_hot(torch.tensor(ids), len(vocab)).float(), torch.tensor([2] * len(ids))
    assert _spell(vocab, None, [batch([2, 0], ["c", "a"]), batch([1], ["b"])]) == "a b c"
    res = invoke("transcribe", "--model", out / "model.onnx", "--device", "cuda", files[0])
    assert res.exit_code == 2 and "ONNX model" in res.output and "--device" in res.output


def test_convolutions_as_matrix_products_compute_the_same():
    import torch

    from lowres.deploy import _convs_as_matmuls

    torch.manual_seed(0)
    for k, stride, bias in ((3, 2, False), (2, 2, True), (10, 5, True), (3, 1, False)):
        model = torch.nn.Sequential(torch.nn.Conv1d(4, 6, k, stride, bias=bias), torch.nn.GELU(),
                                    torch.nn.Conv1d(6, 6, 3, 1, padding=1), torch.nn.Conv1d(6, 6, 3, padding=1, groups=2))
        changed = _convs_as_matmuls(model)
        assert not isinstance(changed[0], torch.nn.Conv1d) and isinstance(model[0], torch.nn.Conv1d)  # a copy
        assert isinstance(changed[2], torch.nn.Conv1d) and isinstance(changed[3], torch.nn.Conv1d)  # padded, grouped
        for length in (k, k + 1, 37, 40):
            x = torch.randn(2, 4, length)
            assert torch.allclose(model(x), changed(x), atol=1e-5)
