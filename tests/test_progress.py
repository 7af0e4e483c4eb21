"""Progress display, the one helper every long-running command uses (prepare, synth, lm, eval, training).

Contract: on a terminal it is a rich bar with a rate and an ETA. Where the output is not a terminal (a log
file, a pipe, ``nohup``, a batch scheduler) it is plain whole lines, one per task at most every ``every_s``
seconds and one when the task ends, each with the description, the count out of the total, the rate, the
elapsed time and the ETA; never the bar's columns cut to fit ("150/…", "0:0…"). Without a console it is silent.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from lowres import progress as progress_mod
from lowres.progress import NullProgress, progress_bar


def log_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, highlight=False), buf  # a file: not a terminal, 80 columns


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_mod, "_clock", c)
    return c


def test_a_log_file_gets_whole_lines_not_cut_columns(clock):
    console, buf = log_console()
    with progress_bar(console) as progress:
        task = progress.add_task("training loss 2.345 lr 1.00e-04 12.3 audio-s/s", total=300, unit="upd")
        for _ in range(150):
            clock.now += 0.5
            progress.advance(task)
    text = buf.getvalue()
    assert "…" not in text and "━" not in text
    lines = text.splitlines()
    assert lines, text
    for line in lines:
        assert line.startswith("training loss 2.345 lr 1.00e-04 12.3 audio-s/s: ")
    last = lines[-1]
    assert "150/300 upd (50%)" in last and "2.0 upd/s" in last and "elapsed 0:01:15" in last \
        and "eta 0:01:15" in last, last


def test_lines_are_periodic_and_the_end_is_always_shown(clock):
    console, buf = log_console()
    with progress_bar(console, every_s=30) as progress:
        task = progress.add_task("probing audio", total=1000, unit="files")
        for _ in range(1000):
            clock.now += 0.1  # 100 s in all: a line at 30, 60 and 90 s, and the end
            progress.advance(task)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[-1].startswith("probing audio: 1000/1000 files (100%)"), lines
    assert "eta" not in lines[-1]  # finished: the elapsed time is what is left to say


def test_every_task_ends_with_a_line_even_unfinished_or_without_a_total(clock):
    console, buf = log_console()
    with progress_bar(console) as progress:
        reading = progress.add_task("reading text", total=0, unit="MB")  # a total too small to count
        progress.advance(reading, 0.25)
        decoding = progress.add_task("decoding", total=10, unit="utt")
        progress.advance(decoding, 4)
        progress.update(decoding, description="decoding (beam)")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("reading text: 0.25 MB"), lines
    assert lines[1].startswith("decoding (beam): 4/10 utt (40%)"), lines
    assert len(lines) == 2


def test_a_resumed_task_counts_from_where_it_started(clock):
    console, buf = log_console()
    with progress_bar(console) as progress:
        task = progress.add_task("training", total=100, completed=60, unit="upd")
        for step in range(61, 71):
            clock.now += 1
            progress.update(task, completed=step)
    last = buf.getvalue().splitlines()[-1]
    assert "70/100 upd (70%)" in last and "1.0 upd/s" in last and "eta 0:00:30" in last, last


def test_markup_in_a_description_is_printed_as_is(clock):
    console, buf = log_console()
    with progress_bar(console) as progress:
        task = progress.add_task("reading [bold]x[/bold].txt", total=1, unit="MB")
        progress.advance(task)
    assert buf.getvalue().startswith("reading [bold]x[/bold].txt: 1/1 MB")


def test_a_terminal_gets_the_bar():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with progress_bar(console) as progress:
        task = progress.add_task("probing audio", total=4, unit="files")
        progress.advance(task, 4)
    assert "━" in buf.getvalue() and "4/4" in buf.getvalue()


def test_no_console_no_output():
    with progress_bar(None) as progress:
        assert isinstance(progress, NullProgress)
        task = progress.add_task("x", total=3)
        progress.advance(task)
        progress.update(task, completed=3)


def test_echoed_values_are_text_not_markup_or_emoji():
    """`--targets layer:-1:` once printed as `layer👎`, and "[/x]" in a path breaks rich's markup: every value
    lowres echoes goes through progress.plain / say, on any console."""
    from lowres.progress import plain, say

    console = Console(record=True, width=200)  # rich's defaults: markup and emoji codes on
    say(console, ("warning:", "yellow"), " --targets layer:-1: in [bold]runs/[/x]:smile:")
    console.print(plain("id [red]a[/red]"))
    assert console.export_text() == "warning: --targets layer:-1: in [bold]runs/[/x]:smile:\nid [red]a[/red]\n"


def test_an_error_message_is_printed_as_written(capsys):
    import typer

    from lowres import LowresError
    from lowres.cli import friendly

    @friendly
    def command():
        raise LowresError("--targets layer:-1: is not a layer of runs/[/x] :smile:")

    with pytest.raises(typer.Exit):
        command()
    err = capsys.readouterr().err
    assert "error: --targets layer:-1: is not a layer of runs/[/x] :smile:" in err and "👎" not in err
