"""`lowres demo --real --quick` end to end, on a hand-made stand-in for the Debian package's layout (no download)
and a small random Whisper (no weights fetched): fetch → table corpus → prepare → three fine-tuning runs side by
side (Whisper's encoder with LoRA + CTC, its frozen encoder under the weighted head, tiny-ssl: each with the
method lowres picks for its base) → Whisper's own decoder → one table whose figures are each run's own eval.
"""

from __future__ import annotations

import json
import random

import soundfile as sf
from factory import WORDS, runner, signal, tiny_whisper

import lowres.data.debian
from lowres.cli import app


def fillets_root(root, n: int = 40):
    """The two packages unpacked: script/LEVEL/dialogs_nl.lua (dialogId + dialogStr) and sound/LEVEL/nl/ID.ogg."""
    base = root / "usr/share/games/fillets-ng"
    rng = random.Random(0)
    lua = []
    for k in range(n):
        uid = f"lvl-{'vm'[k % 2]}-{k:02d}"
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        lua.append(f'dialogId("{uid}", "font_{["small", "big"][k % 2]}", "English")\ndialogStr("{text}")\n')
        audio = base / "sound" / "level1" / "nl" / f"{uid}.ogg"
        audio.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(audio), signal(1.5, 22050, seed=k), 22050, format="OGG", subtype="VORBIS")
    script = base / "script" / "level1" / "dialogs_nl.lua"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("".join(lua), encoding="utf-8")
    return root


def test_real_demo_quick_end_to_end(tmp_path, monkeypatch):
    from lowres.demo_real import QUICK_STEPS, run_real_demo

    root = fillets_root(tmp_path / "debian")
    fetched = []
    monkeypatch.setattr(lowres.data.debian, "fetch", lambda cache, packages, say=print: fetched.append(packages) or root)
    whisper = tiny_whisper(tmp_path / "whisper", tokenizer=True)
    out = tmp_path / "demo-real"
    rows = run_real_demo(out, quick=True, jobs=2, whisper=str(whisper))
    assert fetched == [("fillets-ng-data", "fillets-ng-data-nl")]
    assert [r["method"] for r in rows] == ["whisper", "whisper", "tiny_ssl", "zero-shot"]
    assert [r["updates"] for r in rows] == [QUICK_STEPS] * 3 + [0]
    test = [json.loads(line) for line in (out / "test-quick.jsonl").read_text().splitlines()]
    assert 1 <= len(test) <= 20
    for r, name in zip(rows, ("finetune-whisper", "finetune-whisper-weighted", "finetune-tiny-ssl", "whisper-zeroshot"), strict=True):
        metrics = json.loads((out / name / "eval-test" / "metrics.json").read_text())
        assert (r["wer"], r["cer"]) == (metrics["wer"], metrics["cer"]) and metrics["num_utterances"] == len(test)
        assert r["minutes"] > 0 and not r["reused"]
    weighted = json.loads((out / "finetune-whisper-weighted" / "config.json").read_text())["config"]
    assert weighted["head"]["kind"] == "weighted" and weighted["train"]["max_steps"] == QUICK_STEPS
    # the corpus as the benchmark writes it, prepared with Dutch rules and nothing of it lost
    report = json.loads((out / "prepared" / "prepare_report.json").read_text())
    assert report["kept"]["utterances_listed"] == report["kept"]["utterances_kept"] == 40
    assert report["text_rules"] == "nl"
    result = json.loads((out / "demo_results.json").read_text())
    assert result["rows"] == rows and result["labeled_minutes"] > 0
    # a second run reuses everything; another demo's settings in the same folder are refused
    again = run_real_demo(out, quick=True, jobs=1, whisper=str(whisper))
    assert [r["cer"] for r in again] == [r["cer"] for r in rows] and all(r["reused"] for r in again)
    res = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 2 and "other settings" in res.output and "Traceback" not in res.output
