"""The one command, shortcut-search, and its subcommands."""
import os
import shutil
import subprocess

import pytest

import commands as cli


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_subcommand_has_its_modules_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: shortcut-search {name} ")
    assert "-q, --quiet" in help_text and "-v, --verbose" in help_text


def test_the_installed_command_lists_its_subcommands_and_refuses_unknown_ones():
    command = shutil.which("shortcut-search")
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("shortcut-search is not on PATH: pip install -e . installs it")
        pytest.skip("the project is not installed")
    done = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and all(f"\n  {name} " in done.stdout for name in cli.COMMANDS)
    wrong = subprocess.run([command, "serch"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: unknown command 'serch'")
