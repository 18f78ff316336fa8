"""Shell completion: Typer's --show-completion script and completed option values."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ICNN as INSTALLED_ICNN
from tests.helpers import REPO

ICNN = [sys.executable, "-m", "icnn_cli"]


def _complete(words: str) -> list[str]:
    """What bash's completion function gets for the command line ``words`` (cursor at the end).

    This is the protocol of the script ``icnn --show-completion bash`` prints: the words
    and the cursor index in the environment, ``_ICNN_COMPLETE=complete_bash``.
    """
    parts = words.split(" ")
    env = {
        **os.environ,
        "_ICNN_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
    }
    result = subprocess.run(
        [*ICNN[:-2], "-c", "from icnn_cli.cli import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_show_completion_prints_a_bash_script():
    result = subprocess.run(
        [*ICNN, "--show-completion", "bash"],
        env={**os.environ, "SHELL": "/bin/bash"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "_ICNN_COMPLETE=complete_bash" in result.stdout
    assert "complete -o default -F _icnn_completion icnn" in result.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_the_bash_script_is_valid_bash():
    script = subprocess.run(
        [*ICNN, "--show-completion", "bash"],
        env={**os.environ, "SHELL": "/bin/bash"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)

    assert checked.returncode == 0, checked.stderr


# /bin/sh is where a Dockerfile RUN or a Makefile recipe starts icnn (dash on Debian and
# Ubuntu); Typer's own options detected that shell ("Shell sh not supported") and
# ignored the one named.
SHELLS = [shell for shell in ("sh", "dash", "bash") if shutil.which(shell)]
SCRIPT_OF = {
    "bash": "complete -o default -F _icnn_completion icnn",
    "zsh": "#compdef icnn",
    "fish": "complete --command icnn",
    "powershell": "Register-ArgumentCompleter -Native -CommandName icnn",
}


def _from_shell(shell: str, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shell, "-c", command],
        env={**os.environ, "ICNN": str(INSTALLED_ICNN), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("named", list(SCRIPT_OF))
def test_show_completion_prints_the_script_of_the_shell_named(shell, named):
    result = _from_shell(shell, f'"$ICNN" --show-completion {named}')

    assert result.returncode == 0, result.stderr
    assert SCRIPT_OF[named] in result.stdout
    others = [marker for other, marker in SCRIPT_OF.items() if other != named]
    assert not any(marker in result.stdout for marker in others)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("named", "installed"),
    [("bash", ".bash_completions/icnn.sh"), ("fish", ".config/fish/completions/icnn.fish")],
)
def test_install_completion_installs_for_the_shell_named(shell, named, installed, tmp_path):
    result = _from_shell(shell, f'"$ICNN" --install-completion {named}', HOME=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert SCRIPT_OF[named] in (tmp_path / installed).read_text()


def test_a_shell_icnn_has_no_script_for_is_one_line():
    result = _from_shell("sh", '"$ICNN" --show-completion sh')

    assert result.returncode == 2
    assert result.stderr == (
        "icnn: error: Invalid value for '--show-completion': 'sh' is not one of "
        "'bash', 'zsh', 'fish', 'powershell'. (see 'icnn --help')\n"
    )


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("icnn inspect ckpt --format ", ["text", "md", "json"]),
        ("icnn inspect ckpt --format m", ["md"]),
        ("icnn init -c cfg.yaml --platform ", ["cpu", "gpu", "tpu"]),
        ("icnn con", ["config"]),
        ("icnn config ", ["new"]),
    ],
)
def test_option_values_and_commands_are_completed(words, expected):
    assert _complete(words) == expected


def test_checkpoint_arguments_fall_back_to_path_completion():
    """No candidates from icnn, so the script's ``complete -o default`` completes paths."""
    assert _complete("icnn inspect ") == []
    assert _complete("icnn verify ") == []


def test_completion_imports_no_jax():
    probe = (
        "import sys\n"
        "from icnn_cli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n"
    )
    env = {
        **os.environ,
        "_ICNN_COMPLETE": "complete_bash",
        "COMP_WORDS": "icnn inspect ckpt --format ",
        "COMP_CWORD": "4",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )

    assert "jax" not in result.stderr and "orbax" not in result.stderr


MANAGER = REPO / "tests" / "data" / "golden" / "foreign" / "0.12.8" / "manager"


def test_item_names_come_from_the_checkpoint_at_path():
    from icnn_cli.cli.completion import complete_item_names

    class Context:  # the part of typer.Context a completion callback reads
        params = {"path": MANAGER, "step": None}

    assert complete_item_names(Context(), "") == ["meta", "state"]
    assert complete_item_names(Context(), "st") == ["state"]
    Context.params = {"path": MANAGER / "no-such-thing", "step": None}
    assert complete_item_names(Context(), "") == []


def test_item_values_are_completed_once_wired_to_item():
    if "complete_item_names" not in (REPO / "icnn_cli/cli/inspect_command.py").read_text():
        pytest.skip("icnn inspect --item has no autocompletion= yet")
    assert _complete(f"icnn inspect {MANAGER} --item ") == ["meta", "state"]
