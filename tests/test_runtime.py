"""lowres.runtime: the install hint that messages give (it must work the way lowres is installed)."""

from __future__ import annotations

from pathlib import Path

from lowres.runtime import _install_command, install_hint


def test_the_hint_names_the_checkout_or_the_folder_pip_installed_from():
    """The tests run from a checkout; lowres itself is imported from it (editable, PYTHONPATH) or was installed
    from it by ``pip install .`` (CI): either way the hint names this folder, in the form that works there."""
    import lowres

    root = Path(__file__).resolve().parent.parent
    if Path(lowres.__file__).resolve().is_relative_to(root):
        assert install_hint("lm") == f'pip install -e "{root}[lm]"'
        assert install_hint(reinstall=True) == f"git -C {root} checkout -- lowres"
    else:
        assert install_hint("lm") == f'pip install "{root}[lm]"'
        assert install_hint(reinstall=True) == f'pip install --force-reinstall "{root}"'


def test_the_hint_follows_where_pip_installed_lowres_from():
    wheel = "file:///home/me/dl/lowres-0.1.0-py3-none-any.whl"
    assert _install_command("lm", False, None, wheel) == f'pip install "lowres[lm] @ {wheel}"'
    assert _install_command(None, True, None, wheel) == f'pip install --force-reinstall "lowres @ {wheel}"'
    assert _install_command("lm", False, None, "file:///home/me/lowres%20src") == 'pip install "/home/me/lowres src[lm]"'
    assert _install_command("lm", False, None, "") == "pip install 'lowres[lm]'"
    assert _install_command(None, False, Path("/src/lowres"), "") == 'pip install -e "/src/lowres"'
