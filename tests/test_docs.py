"""Every ``lowres`` command line in the README and in docs/ is one the command-line parser accepts.

Contract: each line of a fenced ``bash`` block that starts with ``lowres`` (or ``torchrun ... -m lowres``), its
continuation lines joined, is split like a shell would and parsed by the real Typer/Click command without
running it: an unknown command, a flag that does not exist, a bad choice or a value of the wrong type fails
here. Example values (folders, files) need not exist: they are the user's.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer.main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def command_lines(page: Path) -> list[str]:
    lines, out = page.read_text(encoding="utf-8").splitlines(), []
    in_bash = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_bash = line.strip() == "```bash" and not in_bash
            continue
        if not in_bash:
            continue
        text = line.split(" #", 1)[0].strip()  # a trailing comment
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i].split(" #", 1)[0].strip()
        found = re.search(r"(?:^|-m )lowres (.*)$", text)
        if found and not text.startswith("#"):
            out.append(found.group(1))
    return out


CASES = [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for line in command_lines(page)]


def test_the_pages_hold_command_lines():
    assert len(CASES) > 30 and {p for p, _ in CASES} >= {"README.md", "docs/prepare.md", "docs/finetune.md"}


@pytest.mark.parametrize("page,line", CASES, ids=[f"{p}: {c[:60]}" for p, c in CASES])
def test_command_line_parses(page, line):
    from lowres.cli import app

    group = typer.main.get_command(app)
    args = shlex.split(line.split("|")[0].split(">")[0])  # a pipe or a redirection ends the command
    name, rest = args[0], args[1:]
    command = group.get_command(click.Context(group), name)
    assert command is not None, f"{page}: `lowres {name}` is no lowres command"
    try:
        command.make_context(name, rest, resilient_parsing=False)
    except click.exceptions.Exit:  # --help, --version, --list-languages-style eager options
        pass
    except click.UsageError as exc:
        pytest.fail(f"{page}: `lowres {line}` does not parse: {exc.format_message()}")
