"""`lowres demo --quick` end to end: synth → prepare → adapt → finetune (with and without adapt) → eval.

What the demo promises (lowres/demo.py): one row per fine-tuning run with its split, start, updates and test
WER/CER, those numbers the ones its eval folder holds, a table with those columns, and every step's folder a
normal lowres output that a second run reuses.
"""

from __future__ import annotations

import json
import re

import pytest
from factory import read_jsonl, runner

from lowres.cli import app
from lowres.demo import QUICK


def _has_lm_extra() -> bool:
    from lowres import LowresError
    from lowres.decode import require_lm_extra

    try:
        require_lm_extra()
    except LowresError:
        return False
    return True


def invoke(*args):
    # a wide console, so rich draws the whole table on one line per row
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_demo_says_how_to_add_the_lm_rows(tmp_path, monkeypatch):
    """Without the lm extra the demo decodes greedily and says how to install it (the brackets survive rich's
    markup)."""
    from rich.console import Console

    import lowres.decode
    from lowres import LowresError
    from lowres.demo import _demo_lm
    from lowres.progress import say

    def missing():
        raise LowresError("the lm extra is not installed")

    monkeypatch.setattr(lowres.decode, "require_lm_extra", missing)
    console = Console(record=True, width=200)
    assert _demo_lm(tmp_path, tmp_path, lambda *parts: say(console, *parts)) is None
    from lowres.runtime import install_hint

    assert install_hint("lm") in console.export_text()
    assert not (tmp_path / "lm").exists()


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    # two runs at a time, each in a process of its own (the full demo's way on 2 cores); the rerun below
    # reuses them one at a time (--quick's default)
    res = invoke("demo", "--quick", "--out", out, "--jobs", "2")
    assert res.exit_code == 0, res.output
    assert "4 training runs, 2 at a time" in res.output
    result = json.loads((out / "demo_results.json").read_text())
    rows = result["rows"]
    assert [(r["split"], r["adapt"]) for r in rows] == [("10min", False), ("10min", False), ("10min", True)]
    assert [r["start"] for r in rows] == ["tiny (random init)", "tiny-ssl (shipped)", "tiny-ssl + adapt"]
    assert [r["base"] for r in rows] == ["tiny", "tiny-ssl", "adapt"]
    assert result["quick"] is True and result["seed"] == 0
    text = " ".join(res.output.split())
    for r in rows:
        assert r["updates"] == QUICK.steps_10min
        run = out / r["run"].split("/")[-1]
        assert run.name == {"tiny": "finetune-10min-random", "tiny-ssl": "finetune-10min",
                            "adapt": "finetune-10min-adapted"}[r["base"]]
        # the row's numbers are the run's own eval of the test set, and they add up from its hypotheses
        metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
        assert (r["wer"], r["cer"]) == (metrics["wer"], metrics["cer"])
        hyps = read_jsonl(run / "eval-test" / "hyps.jsonl")
        assert len(hyps) == metrics["num_utterances"] == len(read_jsonl(out / "prepared" / "manifests" / "test.jsonl"))
        assert r["wer"] == pytest.approx(sum(h["word_errors"] for h in hyps) / sum(h["words"] for h in hyps), abs=1e-6)
        assert r["cer"] == pytest.approx(sum(h["char_errors"] for h in hyps) / sum(h["chars"] for h in hyps), abs=1e-6)
        assert r["wer"] > 0.0 and r["cer"] > 0.0  # eight updates of a tiny model cannot be perfect
        assert r["minutes"] > 0 and r["train_seconds"] > 0 and not r["reused"]
        # the run trained for the plan's updates, the same method on both sides (the whole model, no LoRA)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == QUICK.steps_10min
        config = json.loads((run / "config.json").read_text())["config"]
        assert config["lora"]["enabled"] is False and config["train"]["max_steps"] == QUICK.steps_10min
        # and the console says it: the per-run line and the table row with the same percentages
        assert f"test WER {100 * r['wer']:.1f}% CER {100 * r['cer']:.1f}%" in text
        wer, cer = f"{100 * r['wer']:.1f}%", f"{100 * r['cer']:.1f}%"
        assert re.search(rf"{re.escape(r['start'])}\W+(yes|no)\W+{r['updates']}\W+{re.escape(wer)}\W+{re.escape(cer)}",
                         text), text
    # with the lm extra, every row also has the word 3-gram LM's figures, from the run's own eval-test-lm
    for r in rows:
        run = out / r["run"].split("/")[-1]
        assert ("lm_cer" in r) == _has_lm_extra() == (run / "eval-test-lm" / "metrics.json").is_file()
        if "lm_cer" in r:
            lm = json.loads((run / "eval-test-lm" / "metrics.json").read_text())
            assert (r["lm_wer"], r["lm_cer"]) == (lm["wer"], lm["cer"]) and "CER+LM" in text
    for column in ("split", "start", "adapt", "updates", "WER", "CER", "minutes"):
        assert column in text, column
    minutes = result["minutes"]
    assert set(minutes) == {"synth", "prepare", "adapt", "total"}
    assert minutes["total"] >= max(minutes["synth"], minutes["prepare"], minutes["adapt"]) >= 0
    # every intermediate folder is a normal lowres output
    assert (out / "synth" / "labeled" / "corpus.tsv").is_file()
    assert (out / "prepared" / "manifests" / "10min.jsonl").is_file()
    adapt = json.loads((out / "adapt" / "config.json").read_text())
    assert adapt["lowres_run"] == "adapt" and adapt["config"]["train"]["max_steps"] == QUICK.adapt_steps
    # the adapt step continues the shipped base with its own objective
    assert adapt["base"] == "tiny-ssl" and adapt["config"]["objective"] == "hubert"
    # the adapt run lives beside the fine-tuning run: recorded relative to it, so demo/ can be moved whole
    assert json.loads((out / "finetune-10min-adapted" / "config.json").read_text())["base"] == "../adapt"
    assert json.loads((out / "finetune-10min" / "config.json").read_text())["base"] == "tiny-ssl"
    assert json.loads((out / "finetune-10min-random" / "config.json").read_text())["base"] == "tiny"
    # the method: every conv encoder trains above its lowest 3 layers, frozen (and cached) on every start,
    # speed perturbation in 5 steps on every row; the adapt step predicts units of the base's layer 2
    for name, frozen in (("finetune-10min-random", 3), ("finetune-10min", 3), ("finetune-10min-adapted", 3)):
        cfg = json.loads((out / name / "config.json").read_text())["config"]
        assert cfg["model"]["freeze_feature_encoder"] is False and cfg["model"]["frozen_conv_layers"] == frozen
        assert cfg["augment"]["speed_steps"] == 5 and cfg["augment"]["speed_prob"] > 0
    assert adapt["config"]["units"]["targets"] == "layer:2"
    assert not (out / "finetune-1h").exists()  # the quick plan has no 1h run
    # a second run reuses what finished and prints the same table
    again = invoke("demo", "--quick", "--out", out)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "demo_results.json").read_text())["rows"][0]["cer"] == rows[0]["cer"]
    assert json.loads((out / "demo_results.json").read_text())["rows"][1]["wer"] == rows[1]["wer"]
    # ... with each reused step's minutes from when it ran (they were 0.0), marked reused
    second = json.loads((out / "demo_results.json").read_text())
    assert [r["minutes"] for r in second["rows"]] == [r["minutes"] for r in rows] and all(r["reused"] for r in second["rows"])
    assert {k: second["minutes"][k] for k in ("synth", "prepare", "adapt")} == {
        k: minutes[k] for k in ("synth", "prepare", "adapt")}
    assert set(second["reused"]) >= {"synth", "prepared", "adapt"} and "(reused)" in again.output


def test_demo_refuses_a_folder_of_another_demo(tmp_path):
    """Finished steps are reused by name, so a demo folder of other settings (here: an older demo from the
    random-init tiny, the full plan) is not continued: one message, the folder as it was."""
    out = tmp_path / "demo"
    out.mkdir()
    old = {"quick": False, "seed": 0, "plan": {"hours": 1.0, "unlabeled_hours": 0.5, "adapt_steps": 60,
                                              "steps_10min": 150, "steps_1h": 1100}}
    (out / "demo.json").write_text(json.dumps(old) + "\n")
    (out / "finetune-10min").mkdir()
    res = invoke("demo", "--quick", "--out", out)
    assert res.exit_code == 2 and "Traceback" not in res.output
    text = " ".join(res.output.split())
    assert "holds a demo made with other settings" in text and "--overwrite" in text
    assert json.loads((out / "demo.json").read_text()) == old
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "finetune-10min"]


def test_demo_trains_a_run_more_than_cores_one_thread_each(monkeypatch):
    """On a CPU the demo trains one run more than it has cores, one thread each where there are fewer cores than
    runs (up to the number of runs); --jobs N asks for N at a time, sharing the cores among them."""
    import os

    from lowres.demo import demo_lanes

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert demo_lanes(6) == (3, 1)
    assert demo_lanes(6, jobs=1) == (1, 2)
    assert demo_lanes(6, jobs=2) == (2, 1)
    assert demo_lanes(1) == (1, 2)
    assert demo_lanes(4, spare=0) == (2, 1)  # the real demo: one long run, one run per core
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert demo_lanes(6) == (6, 2)
    assert demo_lanes(4, jobs=2) == (2, 8)


def test_demo_starts_the_longest_runs_and_adapt_first():
    """Free lanes take the 1h rows first and the adapt step as soon as one is free (the adapted rows wait on
    it), the 10min rows last, so that the lanes end close together."""
    from lowres.demo import Job, _start_order

    jobs = [Job("adapt", "", None, 40, kind="adapt")]
    for name, split, needs in (("finetune-10min-random", "10min", None), ("finetune-10min", "10min", None),
                               ("finetune-10min-adapted", "10min", "adapt"), ("finetune-1h", "1h", None),
                               ("finetune-1h-adapted", "1h", "adapt")):
        jobs.append(Job(name, "", None, 900, needs=needs, row={"split": split}))
    assert [j.name for j in sorted(jobs, key=_start_order)] == [
        "finetune-1h", "adapt", "finetune-1h-adapted", "finetune-10min-random", "finetune-10min",
        "finetune-10min-adapted"]


def test_a_demo_worker_error_reaches_the_user_as_it_was(tmp_path):
    """A run that fails in its worker process: a user-facing error is raised as it was (one paragraph, no
    traceback); a worker that dies without a word gives a message that says what to do; another error keeps
    the worker's traceback."""
    import multiprocessing

    from lowres import LowresError
    from lowres.demo import Job, _received

    class Exited:
        exitcode = -9

        def join(self):
            pass

    job = Job("finetune-10min", "", None, 900)
    receive, send = multiprocessing.Pipe(duplex=False)
    send.send((False, LowresError("the data folder is gone"), "Traceback ..."))
    with pytest.raises(LowresError, match="the data folder is gone"):
        _received(job, Exited(), receive)
    send.close()
    with pytest.raises(LowresError, match=r"finetune-10min stopped \(its process exited with code -9\).*--jobs 1"):
        _received(job, Exited(), receive)
    receive, send = multiprocessing.Pipe(duplex=False)
    send.send((False, ValueError("bad shape"), "Traceback (most recent call last): ... ValueError: bad shape"))
    with pytest.raises(RuntimeError, match="failed in its worker process:\nTraceback"):
        _received(job, Exited(), receive)
    receive, send = multiprocessing.Pipe(duplex=False)
    send.send((False, KeyboardInterrupt(), ""))  # a worker that saw Ctrl-C first: the demo stops as for Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        _received(job, Exited(), receive)
    receive, send = multiprocessing.Pipe(duplex=False)
    send.send((True, {"cer": 0.5, "minutes": 1.0}, ""))
    assert _received(job, Exited(), receive) == {"cer": 0.5, "minutes": 1.0}


def test_last_step_reads_the_runs_metrics(tmp_path):
    from lowres.demo import _last_step

    assert _last_step(tmp_path) == 0
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "event": "start"}\n{"step": 25, "loss": 3.0}\n'
                                            '{"step": 50, "dev_cer": 0.9}\n{"step": 5')  # a line being written
    assert _last_step(tmp_path) == 50
