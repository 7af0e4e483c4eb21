"""``lowres demo``: the whole pipeline on a synthetic Swahili corpus, on a CPU, with no downloads.

synth (eSpeak NG) → prepare → adapt (continued HuBERT pretraining of the shipped self-supervised base
``tiny-ssl`` on the Swahili unlabeled audio) → finetune on the 10min and 1h splits from the shipped base and
from its adapted version, and on the 10min split from a random-init ``tiny`` for contrast (the same
fine-tuning method and budget on every side) → eval on the test set (greedy, and with a word 3-gram LM from
text alone where the ``lm`` extra is installed) → one table.

Every step writes a normal lowres folder inside ``--out`` (``synth/``, ``prepared/``, ``adapt/``,
``finetune-*/``), so the results can be inspected and reused with the other commands. Re-running the demo
in the same folder reuses the steps that already finished.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lowres.bases.shipped import RELEASED
from lowres.fsutil import atomic_write_text, claim_folder
from lowres.progress import plain
from lowres.progress import say as print_plain


@dataclass(frozen=True)
class DemoPlan:
    hours: float  # labeled training audio synthesised
    unlabeled_hours: float
    adapt_steps: int
    steps_10min: int
    steps_1h: int


SHIPPED = RELEASED[0]  # the self-supervised base lowres ships (lowres/bases, scripts/build_base.py)
# updates: the 10min rows' dev CER still falls fast at 600 (test CER from the shipped base, seeds 0/1: 25.3/23.0%
# at 600, 23.9/22.2% at 900, 20.3% at 1200); 900 on both splits: 14.0 min on 2 idle cores (15.5 and 16.2 when the
# shared machine was slower). 700 on the 1h rows (13.7 min) left them no better than 10min: 22.9 / 22.8% CER
FULL = DemoPlan(hours=1.0, unlabeled_hours=0.5, adapt_steps=40, steps_10min=900, steps_1h=900)
# what the fine-tuning rows share (demo.json records it: a folder of an older method is not continued)
METHOD = ("whole model, no LoRA, no head-only phase, speed perturbation in 5 steps; conv encoder trained but "
          "for its lowest 3 layers, frozen and cached, on every start")
FROZEN_CONV_LAYERS = 3  # of the 7 conv layers: their output is cached, the 4 above train


def finetune_flags(prepared: str, base: str, steps: int, seed: int) -> dict:
    """The settings of a demo fine-tuning row (over recipes/demo_finetune.toml, which adds speed perturbation
    in 5 steps). The same flags on every start: the whole model trains (a random-init base cannot use LoRA),
    with no head-only phase, conv encoder included but for its lowest 3 layers. Those stay frozen (generic
    filters in a pretrained start, random ones in the random init) and their output is computed once per clip
    and speed and cached, which makes an update about twice as fast. Measured on 10 minutes of synthetic
    Swahili, 600 updates from the shipped base (benchmarks/README.md, "The shipped base"): test CER 25.3% this
    way, 32.9% with the whole conv encoder frozen as fairseq and Hugging Face fine-tune. A random init with all
    7 layers training takes twice as long per update; its results were mixed against frozen-3 across seeds
    and not measured at equal updates (benchmarks/README.md, "Longer 10min rows")."""
    return {"data": prepared, "base": base, "method": "none", "train.max_steps": steps, "train.seed": seed,
            "lora.enabled": False,
            "train.head_only_steps": 0, "model.freeze_feature_encoder": False,
            "model.frozen_conv_layers": FROZEN_CONV_LAYERS}
QUICK = DemoPlan(hours=0.2, unlabeled_hours=0.05, adapt_steps=6, steps_10min=8, steps_1h=0)


STEP_FOLDERS = {"synth": "synth", "prepare": "prepared", "adapt": "adapt"}  # the steps before fine-tuning


@dataclass(frozen=True)
class Job:
    """A run of a demo: the adapt step (``kind`` adapt, ``row`` None), a fine-tuning row of the table, or a row
    of Whisper's own decoder (``kind`` zeroshot: ``cfg`` holds source, language, data and threads)."""

    name: str  # its folder in the demo's --out
    title: str
    cfg: object  # AdaptConfig, FinetuneConfig, or the zero-shot row's settings
    steps: int
    needs: str | None = None  # the job whose run it starts from
    row: dict | None = None  # split, start, base, adapt, updates
    kind: str = "finetune"  # finetune | adapt | zeroshot
    order: int = 0  # free lanes take the ready job of the lowest order first


def demo_lanes(runs: int, jobs: int = 0, spare: int = 1) -> tuple[int, int]:
    """How many training runs a demo trains at once, and on how many threads each: ``spare`` more than the CPU
    cores (at most ``runs``), each on cores // runs threads (at least one), unless ``--jobs`` says how many.
    The demo's model is small, and one thread per run uses a core better than two threads on one run: on 2 idle
    cores, 150 demo updates from the shipped base took 32.4 s on 2 threads, 47.0 s on 1 thread, and 47.0 and
    49.7 s for two such runs at the same time (1.3 times the throughput). The runs differ in length (adapt 40
    updates, the 1h rows longer than the 10min ones), and with one run per core one core idles while the last
    run finishes; a third run sharing the two cores keeps both busy to the end: the whole demo took 13.2 min
    with 2 at a time, 12.7 min with 3 (2026-12-07, 2 idle cores, the same figures to the last digit). Where one
    run is much longer than the others (``lowres demo --real``: Whisper's LoRA), a spare run only slows it
    (``spare`` 0)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    lanes = max(1, min(runs, jobs if jobs > 0 else cores + spare))
    return lanes, max(1, cores // lanes)


class _StepClock:
    """Each step's minutes, kept in OUT/demo_steps.json: a rerun that reuses a finished step reports the minutes
    it took when it ran (None where no earlier run recorded them), and marks it reused."""

    FILE = "demo_steps.json"

    def __init__(self, out: Path):
        self.path = out / self.FILE
        self.minutes: dict[str, float | None] = {}
        try:
            self.recorded = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.recorded = {}
        self.reused: set[str] = set()

    def run(self, name: str, done: bool, work) -> None:
        if done:
            self.reuse(name)
            return
        t = time.perf_counter()
        work()
        self.record(name, (time.perf_counter() - t) / 60)

    def reuse(self, name: str) -> None:
        self.reused.add(name)
        self.minutes[name] = self.recorded.get(name)

    def record(self, name: str, minutes: float) -> None:
        self.minutes[name] = self.recorded[name] = round(minutes, 2)
        atomic_write_text(self.path, json.dumps(self.recorded, indent=1) + "\n")


def _done(folder: Path, marker: str | Path) -> bool:
    return (folder / marker).is_file()


def open_demo(out: Path, record: dict, overwrite: bool) -> _StepClock:
    """Claim a demo's folder and record what demo it holds; its step clock. A demo folder is continued as it
    is (done steps are skipped) by the same demo only; --overwrite empties it first, and only it: a folder the
    demo did not write may hold the user's files."""
    claim_folder(out, what="demo", overwrite=overwrite, is_ours=lambda folder: _done(folder, "demo.json"),
                 not_ours="no demo.json", continue_ours=True,
                 hint="The demo did not write them (no demo.json). Choose a new folder.")
    _same_demo(out, record)
    atomic_write_text(out / "demo.json", json.dumps(record) + "\n")
    return _StepClock(out)


def run_jobs(work: list[Job], out: Path, test: Path, lm_dir: Path | None, clock: _StepClock, lanes: int,
             threads: int, say, console) -> list[dict]:
    """A demo's runs, side by side (``lanes`` > 1) or one after the other on every core with their own progress
    bars; the rows of the table: each row job's figures, minutes, whether it was reused, and its folder."""
    if lanes > 1:
        results = _in_parallel(work, out, test, lm_dir, clock, lanes, threads, say, console)
    else:
        results = {}
        for job in work:
            say("\n", (f"── {job.title}", "bold"))
            results[job.name] = _job(job, out, test, lm_dir, console)
            _said(job, results[job.name], clock, say)
    return [{**job.row, **{k: v for k, v in results[job.name].items() if k != "minutes"},
             "minutes": clock.minutes.get(job.name), "reused": job.name in clock.reused, "run": str(out / job.name)}
            for job in work if job.row is not None]


def _same_demo(out: Path, record: dict) -> None:
    """A demo folder is continued only by the same demo: its finished steps are reused by name, so a folder
    of another plan, seed or base (a --quick one, or one from an older lowres) would mix its runs into this
    table."""
    from lowres import LowresError

    path = out / "demo.json"
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        before = None
    if before != record:
        raise LowresError(
            f"{out} holds a demo made with other settings ({path}: {json.dumps(before)}; this one: "
            f"{json.dumps(record)}). Its finished steps cannot be reused for this demo. Pass --overwrite to "
            "start it again there, or choose another --out.")


def run_demo(out: Path, quick: bool = False, seed: int = 0, overwrite: bool = False, console=None,
             jobs: int = 0) -> list[dict]:
    from lowres.config import PrepareConfig, resolve_adapt, resolve_finetune
    from lowres.data.prepare import prepare
    from lowres.data.prepared import REPORT, PreparedDir
    from lowres.data.text import load_rules
    from lowres.synth.corpus import build_corpus

    plan = QUICK if quick else FULL
    out = Path(out)
    from lowres.bases import shipped_info

    record = {"quick": quick, "seed": seed, "base": SHIPPED, "base_fingerprint": shipped_info(SHIPPED)["fingerprint"],
              "method": METHOD, "plan": plan.__dict__}
    clock = open_demo(out, record, overwrite)
    t_all = time.perf_counter()

    def say(*parts):
        print_plain(console, *parts)

    def step(name: str, folder: Path, marker: str, work) -> None:
        """Run one step, unless an earlier run of this demo finished it: then its minutes are that run's."""
        say("\n", (f"── {name}", "bold"))
        clock.run(folder.name, _done(folder, marker), work)
        if folder.name in clock.reused:
            say(f"(done by an earlier run of this demo in {folder}: reused)")

    synth_dir, prepared, adapt_dir = (out / STEP_FOLDERS[k] for k in ("synth", "prepare", "adapt"))
    step(f"synth: {plan.hours:g} h of transcribed + {plan.unlabeled_hours:g} h of unlabeled Swahili (eSpeak NG)",
         synth_dir, "synth_report.json",
         lambda: build_corpus(synth_dir, lang="sw", hours=plan.hours, unlabeled_hours=plan.unlabeled_hours,
                              seed=seed, overwrite=True, console=console))

    prepared_dir = PreparedDir(prepared)  # where the later steps find its manifests
    step("prepare: manifests, vocabulary, 10min ⊂ 1h splits", prepared, REPORT,
         lambda: prepare(synth_dir / "labeled" / "corpus.tsv", prepared, PrepareConfig(seed=seed),
                         unlabeled=synth_dir / "unlabeled", rules=load_rules("sw"), overwrite=True, console=console))

    lm_dir = _demo_lm(out, prepared, say)
    # (split, row label, base, folder name, updates): every start gets the same fine-tuning for its split
    runs = [("10min", "tiny (random init)", "tiny", "finetune-10min-random", plan.steps_10min),
            ("10min", f"{SHIPPED} (shipped)", SHIPPED, "finetune-10min", plan.steps_10min),
            ("10min", f"{SHIPPED} + adapt", str(adapt_dir), "finetune-10min-adapted", plan.steps_10min)]
    if plan.steps_1h:
        runs += [("1h", f"{SHIPPED} (shipped)", SHIPPED, "finetune-1h", plan.steps_1h),
                 ("1h", f"{SHIPPED} + adapt", str(adapt_dir), "finetune-1h-adapted", plan.steps_1h)]
    # --quick: one run at a time unless --jobs says otherwise (its runs are shorter than a worker's start-up)
    lanes, threads = demo_lanes(len(runs) + 1, jobs or (1 if quick else 0))
    sets = {"train.threads": threads} if lanes > 1 else {}
    adapt_cfg = resolve_adapt("demo_adapt", flags={"unlabeled": str(prepared_dir.unlabeled_path), "base": SHIPPED,
                                                   "objective": "hubert", "train.max_steps": plan.adapt_steps,
                                                   "train.seed": seed, **sets})
    work = [Job("adapt", f"adapt: continued HuBERT pretraining of the shipped base {SHIPPED} on the unlabeled "
                f"Swahili, {plan.adapt_steps} updates", adapt_cfg, plan.adapt_steps, kind="adapt")]
    for split, label, base, name, steps in runs:
        cfg = resolve_finetune(split, "demo_finetune", flags={**finetune_flags(str(prepared), base, steps, seed), **sets})
        work.append(Job(name, f"finetune --split {split} from {label}: {steps} updates", cfg, steps,
                        needs="adapt" if base == str(adapt_dir) else None,
                        row={"split": split, "start": label, "base": base if base in ("tiny", SHIPPED) else "adapt",
                             "adapt": base == str(adapt_dir), "updates": steps}))
    work = [replace(job, order=_start_order(job)) for job in work]
    test = prepared_dir.manifest("test")
    rows = run_jobs(work, out, test, lm_dir, clock, lanes, threads, say, console)
    total = (time.perf_counter() - t_all) / 60
    result = {"rows": rows, "minutes": {**{k: clock.minutes.get(v) for k, v in STEP_FOLDERS.items()},
                                        "total": round(total, 2)},
              "reused": sorted(clock.reused), "quick": quick, "seed": seed}
    atomic_write_text(out / "demo_results.json", json.dumps(result, indent=1) + "\n")
    if console is not None:
        print_table(result, console)
    return rows


def _job(job: Job, out: Path, test: Path, lm_dir: Path | None, console=None) -> dict:
    """Train ``job`` unless an earlier run of this demo finished it (``minutes`` None then), and score a
    fine-tuning run on the test set, greedy and with the LM where there is one: its row's figures. Runs in a
    worker process where the demo trains several runs at once (``console`` None there)."""
    from lowres.decode import DecodeOptions
    from lowres.evaluate import run_eval
    from lowres.runs import RUN_SUMMARY
    from lowres.train.adapt import run_adapt
    from lowres.train.finetune import run_finetune

    if job.kind == "zeroshot":
        return _zero_shot(job, out, test, console)
    run = out / job.name
    result: dict = {"minutes": None}
    if not finished(job, out):
        t = time.perf_counter()
        train = run_finetune if job.kind == "finetune" else run_adapt
        train(job.cfg, run, overwrite=True, console=console)
        result["minutes"] = (time.perf_counter() - t) / 60
    if job.kind == "adapt":
        return result
    metrics = run_eval(run, test, run / "eval-test", console=None, overwrite=True)  # a re-run scores it again
    summary = json.loads((run / RUN_SUMMARY).read_text(encoding="utf-8"))
    result.update(wer=metrics["wer"], cer=metrics["cer"], train_seconds=summary["wall_seconds"])
    if lm_dir is not None:
        with_lm = run_eval(run, test, run / "eval-test-lm", console=None, options=DecodeOptions(lm=lm_dir),
                           overwrite=True)
        result.update(lm_wer=with_lm["wer"], lm_cer=with_lm["cer"])
    return result


ZERO_SHOT_METRICS = Path("eval-test") / "metrics.json"  # in a zero-shot job's folder


def finished(job: Job, out: Path) -> bool:
    """Whether an earlier run of this demo finished ``job`` (its run's summary, or a zero-shot job's metrics)."""
    from lowres.runs import RUN_SUMMARY

    return _done(out / job.name, ZERO_SHOT_METRICS if job.kind == "zeroshot" else RUN_SUMMARY)


def _zero_shot(job: Job, out: Path, test: Path, console=None) -> dict:
    """Whisper's own decoder over the test set (``lowres eval --whisper``), scored with the prepared folder's
    normalisation; reused where an earlier run of the demo wrote its metrics."""
    from lowres.data.prepared import PreparedDir
    from lowres.runtime import configure_threads
    from lowres.zeroshot import run_whisper_eval

    cfg, run = job.cfg, out / job.name
    result: dict = {"minutes": None, "train_seconds": 0.0}
    if finished(job, out):
        metrics = json.loads((run / ZERO_SHOT_METRICS).read_text(encoding="utf-8"))
    else:
        configure_threads(cfg["threads"])
        t = time.perf_counter()
        text = PreparedDir.open(Path(cfg["data"]), need_vocab=False).text_config()
        run.mkdir(parents=True, exist_ok=True)
        metrics = run_whisper_eval(cfg["source"], test, run / ZERO_SHOT_METRICS.parent, cfg["language"], text,
                                   overwrite=True, console=console)
        result["minutes"] = (time.perf_counter() - t) / 60
    return {**result, "wer": metrics["wer"], "cer": metrics["cer"]}


def _said(job: Job, result: dict, clock: _StepClock, say) -> None:
    """A finished job on the console (its test figures for a row) and its minutes in the clock."""
    if result["minutes"] is None:
        clock.reuse(job.name)
        say(f"{job.name}: done by an earlier run of this demo in its folder: reused")
    else:
        clock.record(job.name, result["minutes"])
    if "cer" in result:
        say(f"{job.name}: test WER {100 * result['wer']:.1f}%  CER {100 * result['cer']:.1f}%")
    if "lm_cer" in result:
        say(f"{job.name}: with the 3-gram LM: test WER {100 * result['lm_wer']:.1f}%  CER "
            f"{100 * result['lm_cer']:.1f}%")


def _start_order(job: Job) -> int:
    """Which ready job a free lane takes first: the longest rows (1h) first, then adapt, which the adapted rows
    wait for, as soon as a lane is free, so that the lanes end close together."""
    if job.kind == "adapt":
        return 1
    return (0 if job.needs is None else 2) if job.row["split"] != "10min" else 3


def _in_parallel(work: list[Job], out: Path, test: Path, lm_dir: Path | None, clock: _StepClock, lanes: int,
                 threads: int, say, console) -> dict[str, dict]:
    """Train the jobs ``lanes`` at a time, each in a process of its own on ``threads`` threads (a run's random
    numbers come from the process's torch generator, so runs cannot share one), a bar per running job."""
    import multiprocessing

    from lowres.progress import progress_bar

    say("\n", (f"── {len(work)} training runs, {lanes} at a time on {threads} thread{'s' * (threads > 1)} each "
               "(--jobs); each run's train.log is in its folder", "bold"))
    for job in work:
        say(f"{job.name}: {job.title}")
    waiting = sorted(work, key=lambda job: job.order)
    running: dict[str, tuple] = {}
    results: dict[str, dict] = {}
    context = multiprocessing.get_context("spawn")
    try:
        with progress_bar(console) as bars:
            while waiting or running:
                for job in list(waiting):
                    if len(running) < lanes and (job.needs is None or job.needs in results):
                        waiting.remove(job)
                        receive, send = context.Pipe(duplex=False)
                        worker = context.Process(target=_job_in_process, args=(send, job, out, test, lm_dir),
                                                 name=f"lowres-demo-{job.name}")
                        worker.start()
                        send.close()
                        bar = None if finished(job, out) else bars.add_task(job.name, total=job.steps)
                        running[job.name] = (job, worker, receive, bar)
                for name, (job, worker, receive, task) in list(running.items()):
                    if receive.poll() or not worker.is_alive():
                        results[name] = _received(job, worker, receive)
                        del running[name]
                        if task is not None:  # (a reused run has no bar)
                            bars.update(task, completed=job.steps)
                        _said(job, results[name], clock, say)
                    elif task is not None:
                        bars.update(task, completed=_last_step(out / name))
                if running:
                    time.sleep(1.0)
    except KeyboardInterrupt:
        say(f"Stopped: {', '.join(running)} did not finish (started again on the next run). The finished runs are "
            f"kept in {out}: run the same command again to continue, reusing them.")
        raise
    finally:
        for _, worker, _, _ in running.values():  # after an error or Ctrl-C: the other runs stop too
            worker.terminate()
            worker.join()
    return results


def _job_in_process(send, job: Job, out: Path, test: Path, lm_dir: Path | None) -> None:
    """A worker process of the demo: the job's result, or its error with the traceback, sent back. Ctrl-C is
    the demo's process's to handle: it stops every worker."""
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        send.send((True, _job(job, out, test, lm_dir), ""))
    except BaseException as err:  # noqa: BLE001 - whatever happened goes to the demo's process
        send.send((False, err, traceback.format_exc()))
    finally:
        send.close()


def _received(job: Job, worker, receive) -> dict:
    """What a worker sent: its result, or its error raised here (a user-facing one as it was)."""
    from lowres import LowresError

    try:
        ok, value, trace = receive.recv()
    except EOFError:  # it died without a word (killed, out of memory)
        worker.join()
        raise LowresError(f"The demo's run {job.name} stopped (its process exited with code {worker.exitcode}) "
                          f"without a result. Its log is in {job.name}/train.log of the demo folder; run the "
                          "demo again in the same folder to continue, or with --jobs 1 to train one run at a "
                          "time.") from None
    worker.join()
    if ok:
        return value
    if isinstance(value, (LowresError, KeyboardInterrupt)):
        raise value
    raise RuntimeError(f"the demo's run {job.name} failed in its worker process:\n{trace}") from value


def _last_step(run: Path) -> int:
    """The last update a run logged in its metrics.jsonl (0 before the first)."""
    from lowres.runs import RUN_METRICS

    try:
        lines = (run / RUN_METRICS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            continue
    return 0


def _demo_lm(out: Path, prepared: Path, say) -> Path | None:
    """A word 3-gram LM from the shipped Swahili word list (text alone: no dev or test sentence), where the
    ``lm`` extra is installed; None (and a note) where it is not."""
    from importlib import resources

    from lowres import LowresError
    from lowres.decode import require_lm_extra
    from lowres.lm.build import build_lm

    try:
        require_lm_extra()
    except LowresError:
        from lowres.runtime import install_hint

        say(f"(the lm extra is not installed: greedy decoding only; `{install_hint('lm')}` adds the LM rows)")
        return None
    lm_dir = out / "lm"
    if not _done(lm_dir, "lm_report.json"):
        with resources.as_file(resources.files("lowres.data.lang") / "sw_words.txt") as words:
            build_lm([words], lm_dir, order=3, data=prepared, overwrite=True)
    return lm_dir


def print_table(result: dict, console) -> None:
    from rich.table import Table

    with_lm = any("lm_cer" in r for r in result["rows"])
    table = Table(title="lowres demo: synthetic Swahili, test set")
    cols = ["split", "start", "adapt", "updates", "WER", "CER"] + (["WER+LM", "CER+LM"] if with_lm else []) + ["minutes"]
    for col in cols:
        table.add_column(col, justify="right" if col not in ("split", "start") else "left")
    for r in result["rows"]:
        lm = [f"{100 * r['lm_wer']:.1f}%", f"{100 * r['lm_cer']:.1f}%"] if "lm_cer" in r else (["-", "-"] if with_lm else [])
        table.add_row(plain(r["split"]), plain(r["start"]), "yes" if r["adapt"] else "no", str(r["updates"]),
                      f"{100 * r['wer']:.1f}%", f"{100 * r['cer']:.1f}%", *lm,
                      _minutes(r["minutes"], r.get("reused", False)))
    console.print(table)
    m = result["minutes"]
    steps = ", ".join(f"{k} {_minutes(m[k], v in result.get('reused', ()))}" for k, v in STEP_FOLDERS.items())
    again = " this run" if result.get("reused") else ""
    print_plain(console, f"total {m['total']:.1f} min{again} ({steps}). Every step's folder is in the --out folder; "
                f"try e.g. lowres transcribe --model {result['rows'][-1]['run']} some.wav")


def _minutes(value: float | None, reused: bool) -> str:
    """A step's minutes in the table: ``3.2``, or ``3.2 (reused)`` for a step an earlier run did."""
    shown = "?" if value is None else f"{value:.1f}"
    return f"{shown} (reused)" if reused else shown
