"""``run_selftrain()``: rounds of self-training, each ``lowres pseudolabel`` with the last round's run as the
teacher, then ``lowres finetune --pseudo`` again **from the base** (Xu et al. 2021; fairseq's advice: fine-tuning
the fine-tuned model again did not help).

Every student trains with the first teacher's own fine-tuning configuration (its base, prepared folder, split,
method, recipe values, updates and seed: the same budget as the teacher), with only its ``pseudo`` settings
replaced: the round's pseudo-labels, all of those ``pseudolabel`` kept (its ``--keep`` chose them), at ``weight``
(the command's, else the teacher's). So a round's student and the teacher differ in one thing, the
pseudo-labelled audio.

Files in OUT (the folder layout is this module's):

* ``round-N/pl``: round N's ``lowres pseudolabel`` folder (its teacher: ``--model`` for round 1, round N-1's
  student after);
* ``round-N/run``: round N's student, a normal run folder (``lowres eval --model OUT/round-N/run``);
* ``selftrain.json``: the settings and, per finished round, its teacher, the pseudo-labels kept and the
  student's best dev CER and WER beside the first teacher's.

``--resume`` goes on where a stop left it, to the rounds the folder was started with: finished rounds are kept as
they are, a round's pseudolabel and fine-tune resume from their own files; a larger ``--rounds`` adds rounds. The
settings (teacher, unlabeled audio, decoder, pseudolabel's filters, the weight) must be the same.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lowres import LowresError
from lowres.config import DecodeOptions, PseudoLabelConfig

REPORT = "selftrain.json"
PL, RUN = "pl", "run"


def round_dir(out: Path, n: int) -> Path:
    return Path(out) / f"round-{n}"


def run_selftrain(model_dir: Path, unlabeled: Path, out: Path, *, rounds: int | None = None,
                  pl_cfg: PseudoLabelConfig = PseudoLabelConfig(), options: DecodeOptions | None = None,
                  weight: float | None = None, device_name: str = "auto",
                  resume: bool = False, overwrite: bool = False, console=None) -> dict:
    """``rounds`` rounds into OUT (module docstring; default 1, or on ``resume`` the rounds the folder was
    started with); returns the report written to OUT/selftrain.json."""
    import dataclasses
    import json
    import shutil

    from lowres.data.unlabeled import check_unlabeled_source
    from lowres.decode import BeamSearch
    from lowres.fsutil import atomic_write_json, claim_folder, remove_outputs
    from lowres.progress import say
    from lowres.pseudolabel import REPORT as PL_REPORT
    from lowres.pseudolabel import SETTINGS as PL_SETTINGS
    from lowres.pseudolabel import run_pseudolabel
    from lowres.runs import RUN_SUMMARY, is_run
    from lowres.runtime import resolve_device

    if rounds is not None and rounds < 1:
        raise LowresError(f"--rounds {rounds}: give 1 or more rounds.")
    model_dir, out = Path(model_dir), Path(out)
    options = options if options is not None else DecodeOptions()
    # the mistakes a user makes, said before OUT is touched
    check_unlabeled_source(Path(unlabeled))
    search = BeamSearch.from_options(options)
    resolve_device(device_name)
    student_cfg = _student_config(model_dir, weight, device_name)
    settings = {"model": str(model_dir.resolve()), "unlabeled": str(Path(unlabeled).resolve()),
                "pseudolabel": dataclasses.asdict(pl_cfg), "pseudo_weight": student_cfg.pseudo.weight,
                "decoder": search.settings() if search is not None else {"name": "greedy"}}

    def claim(check_only: bool) -> str:
        rounds_there = [d.name for d in out.glob("round-*") if d.is_dir()]
        return claim_folder(out, what="self-training", overwrite=overwrite, resume=resume,
                            clear=remove_outputs(REPORT, *rounds_there), is_ours=lambda p: (p / REPORT).is_file(),
                            not_ours=f"no {REPORT}", check_only=check_only,
                            hint="Pass --resume to go on with the rounds there, --overwrite to start them again, or "
                                 "choose another --out.")

    claim(check_only=True)
    report = json.loads((out / REPORT).read_text(encoding="utf-8")) if resume and (out / REPORT).is_file() else {}
    differ = [k for k in settings if report and report.get(k) != settings[k]]
    if differ:
        raise LowresError(f"--resume: {out} was started with other settings ({', '.join(differ)}: "
                          f"{', '.join(str(report.get(k)) for k in differ)}); a resume goes on with the same --model, "
                          "--unlabeled, --lm, --keep, --min-confidence, --max-hours and --pseudo-weight. Pass "
                          "--overwrite to start again, or choose another --out.")
    rounds = rounds or report.get("rounds") or 1
    mode = claim(check_only=False)
    report = {**settings, "rounds": max(rounds, report.get("rounds", 0)), "teacher": _scores(model_dir),
              "round": report.get("round", [])}
    atomic_write_json(out / REPORT, report)
    teacher = model_dir
    for n in range(1, rounds + 1):
        pl, run = round_dir(out, n) / PL, round_dir(out, n) / RUN
        if (run / RUN_SUMMARY).is_file() and (pl / PL_REPORT).is_file():  # a finished round stays as it is
            kept = json.loads((pl / PL_REPORT).read_text(encoding="utf-8"))
        else:
            say(console, ("self-training", "bold"), f" round {n} of {rounds}: pseudo-labels from {teacher}")
            try:
                kept = run_pseudolabel(teacher, unlabeled, pl, pl_cfg, options=options, device_name=device_name,
                                       resume=(pl / PL_SETTINGS).is_file(), console=console)
            except LowresError:
                if mode == "new" and n == 1:  # nothing made yet: no half-made OUT left behind
                    shutil.rmtree(out, ignore_errors=True)
                raise
            if not kept["kept"]:
                raise LowresError(f"Round {n}: no pseudo-label was kept ({pl / PL_REPORT} says why), so there is "
                                  "nothing to train on. Lower --min-confidence, or start from a better teacher.")
            from lowres.train.finetune import run_finetune

            cfg = replace(student_cfg, pseudo=replace(student_cfg.pseudo, manifest=str(pl.resolve())))
            run_finetune(cfg, run, resume=is_run(run), console=console)
        row = {"round": n, "teacher": str(teacher.resolve()), "pseudo": str(pl.resolve()), "run": str(run.resolve()),
               "kept": kept["kept"], "kept_hours": kept["kept_hours"], **_scores(run)}
        report["round"] = sorted([r for r in report["round"] if r["round"] != n] + [row], key=lambda r: r["round"])
        atomic_write_json(out / REPORT, report)
        teacher = run
    if console is not None:
        _print(report, console)
    return report


def _student_config(model_dir: Path, weight: float | None, device_name: str):
    """The first teacher's own fine-tuning configuration, its base as a path where it was one, ready for a
    round's pseudo-labels."""
    from lowres.config import FinetuneConfig
    from lowres.runs import is_run, read_run, recorded_base_path

    if not is_run(model_dir):
        raise LowresError(f"--model {model_dir}: not a lowres run folder. Give the --out folder of `lowres finetune` "
                          "(the first teacher).")
    record = read_run(model_dir)
    if record.kind != "finetune":
        raise LowresError(f"--model {model_dir} is a lowres {record.kind} run; self-training starts from a fine-tuned "
                          "run (`lowres finetune`).")
    cfg = record.typed_config(FinetuneConfig)
    base = recorded_base_path(cfg.base, model_dir)
    if base is not None and not base.is_dir():
        raise LowresError(f"{model_dir} was fine-tuned from {base}, which is not there any more: the students start "
                          "from the same base. Put it back, or fine-tune a new first teacher.")
    try:
        pseudo = replace(cfg.pseudo, keep=1.0, weight=cfg.pseudo.weight if weight is None else weight)
        train = cfg.train if device_name == "auto" else replace(cfg.train, device=device_name)
        return replace(cfg, base=str(base) if base is not None else cfg.base, pseudo=pseudo, train=train)
    except ValueError as exc:
        raise LowresError(f"Invalid setting: {exc}") from None


def _scores(run: Path) -> dict:
    """The run's dev CER and WER at its best update (summary.json's, metrics.jsonl's row), where it has them."""
    import json

    from lowres.runs import RUN_METRICS, RUN_SUMMARY

    try:
        summary = json.loads((Path(run) / RUN_SUMMARY).read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (Path(run) / RUN_METRICS).read_text(encoding="utf-8").splitlines() if line]
    except (OSError, ValueError):
        return {}
    best = [r for r in rows if r.get("step") == summary.get("best_step") and "dev_cer" in r]
    return {"best_step": summary.get("best_step"), **({k: best[-1][k] for k in ("dev_cer", "dev_wer") if k in best[-1]}
                                                      if best else {})}


def _print(report: dict, console) -> None:
    from rich.table import Table

    table = Table(title="self-training", show_edge=False)
    for col in ("round", "pseudo-labels kept", "best dev CER", "best dev WER", "run"):
        table.add_column(col)

    def pct(x):
        return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"

    t = report.get("teacher", {})
    table.add_row("teacher", "-", pct(t.get("dev_cer")), pct(t.get("dev_wer")), report["model"])
    for r in report["round"]:
        table.add_row(str(r["round"]), f"{r['kept']} ({60 * r['kept_hours']:.1f} min)", pct(r.get("dev_cer")),
                      pct(r.get("dev_wer")), r["run"])
    console.print(table)
