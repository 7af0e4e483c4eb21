"""Progress display shared by every long-running command: a rich bar with a rate and an ETA on a terminal,
plain periodic lines where the output is not one (a log file, a pipe, a batch scheduler)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

_clock = time.monotonic  # one name, so tests can move time
LINE_EVERY_S = 30.0  # seconds between two lines of one task in a log file


def plain(*parts: str | Text | tuple[str, str]) -> Text:
    """Text printed as written: never read as rich markup (``[/x]`` in a path) or emoji codes (``:-1:`` in
    ``layer:-1:``). Every value lowres echoes (paths, flags, transcripts, notes) reaches a console through it;
    a part may be ``(text, style)``."""
    return Text.assemble(*parts)


def say(console: Console | None, *parts: str | Text | tuple[str, str], style: str | None = None) -> None:
    """Print ``parts`` (see :func:`plain`) on ``console``; nothing when it is None."""
    if console is not None:
        console.print(plain(*parts), style=style)


class RateColumn(ProgressColumn):
    """Items per second, with the unit of the task (``task.fields['unit']``)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if speed is None:
            return Text(f"? {unit}/s", style="progress.data.speed")
        return Text(f"{_rate(speed)} {unit}/s", style="progress.data.speed")


class NullProgress:
    """Stands in for a rich Progress when output is off (library calls, tests)."""

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        pass

    def advance(self, *args, **kwargs) -> None:
        pass


@dataclass
class _LineTask:
    description: str
    total: float | None
    completed: float
    unit: str
    started: float  # clock time and count when the task began: the rate is over this run, not a resume
    start_count: float
    last_line: float
    said: tuple | None = field(default=None)  # (description, completed) of the last line printed


class LineProgress:
    """Progress as whole lines for a console that is not a terminal: the same calls as rich's Progress
    (``add_task``, ``update``, ``advance``), one line per task at most every ``every_s`` seconds, one when
    the task completes, and one at the end for each task whose last state was not printed yet."""

    def __init__(self, console: Console, every_s: float = LINE_EVERY_S):
        self.console = console
        self.every_s = every_s
        self.tasks: list[_LineTask] = []
        self.lock = threading.Lock()

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: float = 0,
                 visible: bool = True, **fields) -> int:
        now = _clock()
        with self.lock:
            self.tasks.append(_LineTask(description, total or None, completed, fields.get("unit", "it"),
                                        now, completed, now))
            return len(self.tasks) - 1

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        with self.lock:
            task = self.tasks[task_id]
            if total is not None:
                task.total = total or None
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            if description is not None:
                task.description = description
            if "unit" in fields:
                task.unit = fields["unit"]
            now = _clock()
            finished = task.total is not None and task.completed >= task.total
            if finished or now - task.last_line >= self.every_s:
                self._say(task, now)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def close(self) -> None:
        with self.lock:
            now = _clock()
            for task in self.tasks:
                self._say(task, now)

    def _say(self, task: _LineTask, now: float) -> None:
        if task.said == (task.description, task.completed):
            return
        task.said, task.last_line = (task.description, task.completed), now
        self.console.print(plain(progress_line(task, now)), highlight=False, soft_wrap=True)


def progress_line(task: _LineTask, now: float) -> str:
    """``description: 150/300 upd (50%)  2.0 upd/s  elapsed 0:01:15  eta 0:01:15``."""
    count = _number(task.completed)
    if task.total is not None:
        count += f"/{_number(task.total)} {task.unit} ({100 * task.completed / task.total:.0f}%)"
    else:
        count += f" {task.unit}"
    parts = [f"{task.description}: {count}"]
    elapsed = now - task.started
    rate = (task.completed - task.start_count) / elapsed if elapsed > 0 else None
    if rate:
        parts.append(f"{_rate(rate)} {task.unit}/s")
    parts.append(f"elapsed {_clock_time(elapsed)}")
    if rate and task.total is not None and task.completed < task.total:
        parts.append(f"eta {_clock_time((task.total - task.completed) / rate)}")
    return "  ".join(parts)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def _rate(speed: float) -> str:
    return f"{speed:,.1f}" if speed < 100 else f"{speed:,.0f}"


def _clock_time(seconds: float) -> str:
    s = max(int(round(seconds)), 0)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _is_live(console: Console) -> bool:
    """Whether rich can redraw a bar in place on ``console`` (a terminal or a notebook)."""
    return console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)


@contextlib.contextmanager
def progress_bar(console: Console | None, *extra_columns: ProgressColumn,
                 every_s: float = LINE_EVERY_S) -> Iterator[Progress | LineProgress | NullProgress]:
    """A progress display on ``console``: a bar on a terminal, a line per task every ``every_s`` seconds
    (and when it ends) elsewhere, nothing when ``console`` is None."""
    if console is None:
        yield NullProgress()
        return
    if not _is_live(console):
        lines = LineProgress(console, every_s)
        try:
            yield lines
        finally:
            lines.close()
        return
    columns = [
        TextColumn("{task.description}", markup=False, style="progress.description"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra_columns,
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress
