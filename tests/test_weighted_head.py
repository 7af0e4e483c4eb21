"""``lowres finetune --head weighted``: ML-SUPERB's frozen upstream (issue #17 item 2).

The contract:

- the backbone is frozen: it runs without autograd and in eval mode, its weights never change and get no
  gradient; only the layer weights (softmax of learned logits, equal at the start) and the BiLSTM CTC downstream
  train, and the deliverable holds only those (the base is rebuilt from the recorded base, as for LoRA);
- the weighted sum covers every hidden layer: the transformer's input and each layer's output, the last one
  being what the CTC head of ``--head ctc`` reads; a padded batch equals one utterance at a time;
- a run trains (train loss falls on tone "speech"), logs the delivered layer weights in train.log,
  metrics.jsonl and summary.json, draws layer_weights.png, and resumes exactly;
- eval and transcribe load the run; export refuses it with one paragraph (exit 2); ``--head bogus`` too.
"""

from __future__ import annotations

import json
from pathlib import Path

import factory
import pytest
import torch
from factory import invoke, read_jsonl
from safetensors.torch import load_file

FAST = ["--set", "train.num_workers=0", "--set", "train.log_every=1", "--set", "head.lstm_hidden=32", "--quiet"]


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared tone corpus whose dev set is its training set, a tiny pretrained-looking HF base)."""
    root = tmp_path_factory.mktemp("tones")
    factory.tone_table(root / "c.csv", n=12)
    res = invoke("prepare", root / "c.csv", "--out", root / "prep", "-q", "--dev-fraction", 0, "--test-fraction", 0)
    assert res.exit_code == 0, res.output
    return root / "prep", factory.hf_base(root / "hf")


def _args(prep: Path, base: Path | str, steps: int) -> list:
    full = prep / "manifests" / "full.jsonl"
    return ["--data", prep, "--split", "full", "--base", base, "--head", "weighted", "--max-steps", steps,
            "--lr", 3e-3, "--set", "train.batch_seconds=12", "--set", "train.accumulate=1",
            "--set", f"dev_manifest={full}", *FAST]


@pytest.fixture(scope="module")
def trained(tones, tmp_path_factory):
    """A finished weighted run, and its model as training left it (captured at the task's finish)."""
    from lowres.train.tasks.ctc import CTCTask

    prep, base = tones
    run = tmp_path_factory.mktemp("run") / "run"
    seen = {}
    real = CTCTask.finish

    def finish(self, final):
        seen["model"] = self.model
        return real(self, final)

    CTCTask.finish = finish
    try:
        res = invoke("finetune", *_args(prep, base, 24), "--eval-every", 12, "--out", run)
    finally:
        CTCTask.finish = real
    assert res.exit_code == 0, res.output
    return run, seen["model"]


def test_backbone_is_frozen_and_only_the_downstream_trains(tones, trained):
    from lowres.bases import load_base

    _, base = tones
    run, model = trained
    before = load_base(str(base)).model.state_dict()
    after = model.backbone.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0, msg=f"{k} changed")
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    assert not model.backbone.training  # its dropout stayed off
    assert float(model.layer_weights.detach().abs().max()) > 0  # the layer weights trained (zeros at the start)
    saved = load_file(str(run / "model.safetensors"))
    assert {k.split(".")[0] for k in saved} == {"layer_weights", "lstm", "head"}  # the base is rebuilt, not stored
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["head"]["kind"] == "weighted" and meta["build"]["head"] == "weighted"
    assert meta["build"]["lora"] is False and meta["build"]["head_only_steps"] == 0
    log = (run / "train.log").read_text()
    assert "--head weighted: the whole backbone is frozen" in log and "updates 1-" not in log  # no head-only phase


def test_layer_weights_learn_and_are_logged_and_drawn(trained):
    run, model = trained
    probs = model.layer_distribution().detach()
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
    assert len(probs) == 3  # the transformer's input + 2 layers of the tiny HF base
    assert float((probs - 1 / 3).abs().max()) > 1e-4, "layer weights never moved from equal"
    delivered = [float(w) for w in torch.softmax(load_file(str(run / "model.safetensors"))["layer_weights"], 0)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["layer_weights"] == pytest.approx(delivered) and sum(summary["layer_weights"]) == pytest.approx(1)
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("event") == "layer_weights"]
    assert len(rows) == 1 and rows[0]["layer_weights"] == pytest.approx(delivered) and rows[0]["step"] == 24
    assert "learned layer weights (softmax)" in (run / "train.log").read_text()
    png = run / "layer_weights.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_a_short_run_lowers_the_train_loss(trained):
    run, _ = trained
    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses


def test_eval_and_transcribe_load_the_run(tones, trained):
    from lowres.bases import load_run
    from lowres.model.weighted import WeightedLayerCTC

    prep, _ = tones
    run, model = trained
    loaded = load_run(run)
    assert isinstance(loaded.model, WeightedLayerCTC)
    full = prep / "manifests" / "full.jsonl"
    res = invoke("eval", "--model", run, "--manifest", full, "--out", run / "eval-full", "-q")
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "eval-full" / "metrics.json").read_text())
    assert metrics["num_utterances"] == len(read_jsonl(full)) and 0 <= metrics["cer"]
    row = read_jsonl(full)[0]
    res = invoke("transcribe", "--model", run, "--json", full.parent / row["audio_filepath"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    assert len(lines) == 1
    hyps = {h["id"]: h["hypothesis"] for h in read_jsonl(run / "eval-full" / "hyps.jsonl")}
    assert lines[0]["text"] == hyps[row["id"]]


def test_export_says_why_it_cannot(trained, tmp_path):
    run, _ = trained
    res = invoke("export", "--model", run, "--out", tmp_path / "hf")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "--head weighted" in text and "no transformers class holds that head" in text
    assert "lowres eval" in text and "--head ctc" in text
    assert not (tmp_path / "hf").exists()


def test_resume_after_a_kill_gives_the_same_run(tones, tmp_path):
    prep, base = tones
    args = [*_args(prep, base, 6), "--eval-every", 3, "--set", "train.save_every=2"]
    assert invoke("finetune", *args, "--out", tmp_path / "a").exit_code == 0
    res = factory.invoke_stopped_after(4, "finetune", *args, "--out", tmp_path / "b")
    assert res.exit_code == 130
    res = invoke("finetune", "--resume", "--out", tmp_path / "b", "--head", "weighted", "--quiet")
    assert res.exit_code == 0, res.output
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and "layer_weights" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    ckpt = load_file(str(next((tmp_path / "b" / "checkpoints").glob("step-*/model.safetensors"))))
    assert "layer_weights" in ckpt and not any(k.startswith("backbone.") for k in ckpt)
    strip = ("elapsed_s", "audio_s_per_s", "eval_s")
    ra = [{k: v for k, v in r.items() if k not in strip} for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    rb = [{k: v for k, v in r.items() if k not in strip} for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")]
    assert ra == rb
    # the head is part of the run: a resume cannot change it
    res = invoke("finetune", "--resume", "--out", tmp_path / "b", "--head", "ctc", "--quiet")
    assert res.exit_code == 2 and "head.kind" in res.output


def test_bogus_head_is_one_paragraph(tones, tmp_path):
    prep, base = tones
    res = invoke("finetune", "--data", prep, "--base", base, "--head", "bogus", "--out", tmp_path / "r")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "head.kind (--head) must be ctc" in text and "weighted" in text and "'bogus'" in text
    assert not (tmp_path / "r").exists()


def test_lora_settings_given_with_a_weighted_head_are_named_as_unused(tones, tmp_path):
    from lowres.bases import load_base
    from lowres.config import resolve_finetune
    from lowres.model.build import build_recogniser

    _, base = tones
    cfg = resolve_finetune("1h", flags={"head.kind": "weighted", "lora.rank": 16})
    model, info = build_recogniser(cfg, 8, load_base(str(base)))
    assert not info.lora and any("lora.rank 16" in n and "not used" in n for n in info.notes)
    from lowres.model.lora import has_lora

    assert not has_lora(model)


# --------------------------------------------------------------------------------------------------
# the model itself


def _model(base: Path, **head):
    from lowres.bases import load_base
    from lowres.config import resolve_finetune
    from lowres.model.build import build_recogniser

    sets = tuple(f"head.{k}={v}" for k, v in {"kind": "weighted", "lstm_hidden": 16, **head}.items())
    torch.manual_seed(0)
    return build_recogniser(resolve_finetune("1h", sets=sets), 9, load_base(str(base)))[0]


def test_hidden_states_end_with_what_the_ctc_head_reads(tones):
    from lowres.bases import load_base
    from lowres.model.backbone import conv_features, hidden_states, run_transformer

    _, base = tones
    m = load_base(str(base)).model.eval()
    feats, _ = conv_features(m.feature_extractor, torch.randn(2, 8000) * 0.1, None)
    x = m.encoder.feature_projection(feats)
    with torch.no_grad():
        states = hidden_states(m.encoder.transformer, x, None, "wav2vec2")
        last = run_transformer(m.encoder.transformer, x, None, "wav2vec2")
    assert len(states) == len(m.encoder.transformer.layers) + 1
    torch.testing.assert_close(states[-1], last, rtol=0, atol=0)


def test_a_step_changes_only_the_downstream_and_padding_changes_nothing(tones):
    _, base = tones
    model = _model(base)
    model.train()
    assert not model.backbone.training
    assert torch.allclose(model.layer_distribution(), torch.full((3,), 1 / 3))  # equal at the start
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    waves, lengths = torch.randn(2, 12000) * 0.1, torch.tensor([12000, 7000])
    logits, frames = model(waves, lengths)
    assert logits.shape[:2] == (2, int(frames.max())) and logits.shape[2] == 9
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    opt.step()
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)
    assert float(model.layer_distribution().detach().sum()) == pytest.approx(1.0)
    assert not torch.allclose(model.layer_distribution(), torch.full((3,), 1 / 3))

    model.eval()
    with torch.no_grad():
        both, frames = model(waves, lengths)
        one, _ = model(waves[1:, :7000], lengths[1:])
    torch.testing.assert_close(one[0], both[1, : int(frames[1])], atol=1e-5, rtol=1e-5)


def test_a_random_init_base_keeps_its_frozen_weights_in_the_deliverable(tones, tmp_path):
    """A random initialisation exists nowhere else, so its frozen backbone is saved with the downstream; the
    run says that its features are random."""
    from lowres.bases import load_base, load_run

    prep, _ = tones
    run = tmp_path / "run"
    res = invoke("finetune", *_args(prep, "tiny", 2), "--eval-every", 0, "--out", run)
    assert res.exit_code == 0, res.output
    assert "randomly initialised: its frozen layers give random features" in " ".join(
        (run / "train.log").read_text().split())
    saved = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("backbone.") for k in saved)
    want = load_base("tiny", seed=0).model.state_dict()
    got = load_run(run).model.backbone.state_dict()
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)


def test_the_unpacked_bilstm_equals_a_packed_one_with_the_same_weights():
    """The downstream's BiLSTM runs unpacked (the packed backward pass is slow on CPU) and still equals
    torch's packed bidirectional nn.LSTM, outputs and gradients, at every valid frame; padded frames are 0."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from lowres.model.weighted import PaddedBiLSTM

    torch.manual_seed(0)
    ours = PaddedBiLSTM(6, 5, 2, dropout=0.0)
    ref = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for layer in range(2):
            for direction, module in (("", ours.forward_layers[layer]), ("_reverse", ours.backward_layers[layer])):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{kind}_l{layer}{direction}").copy_(getattr(module, f"{kind}_l0"))
    x = torch.randn(3, 9, 6)
    lengths = torch.tensor([9, 4, 6])
    x_ours, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = ours(x_ours, lengths)
    packed, _ = ref(pack_padded_sequence(x_ref, lengths, batch_first=True, enforce_sorted=False))
    want, _ = pad_packed_sequence(packed, batch_first=True, total_length=9)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(want)
    (y * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    assert float(y.detach()[1, 4:].abs().max()) == 0.0
