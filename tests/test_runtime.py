"""lowres.runtime: the install hint that messages give (it must work the way lowres is installed)."""

from __future__ import annotations

from pathlib import Path

from lowres.runtime import _install_command, install_hint


def test_the_hint_from_a_checkout_names_the_checkout():
    root = Path(__file__).resolve().parent.parent  # the tests run from a checkout (editable or PYTHONPATH)
    assert install_hint("lm") == f'pip install -e "{root}[lm]"'
    assert install_hint(reinstall=True) == f"git -C {root} checkout -- lowres"


def test_the_hint_follows_where_pip_installed_lowres_from():
    wheel = "file:///home/me/dl/lowres-0.1.0-py3-none-any.whl"
    assert _install_command("lm", False, None, wheel) == f'pip install "lowres[lm] @ {wheel}"'
    assert _install_command(None, True, None, wheel) == f'pip install --force-reinstall "lowres @ {wheel}"'
    assert _install_command("lm", False, None, "file:///home/me/lowres%20src") == 'pip install "/home/me/lowres src[lm]"'
    assert _install_command("lm", False, None, "") == "pip install 'lowres[lm]'"
    assert _install_command(None, False, Path("/src/lowres"), "") == 'pip install -e "/src/lowres"'
