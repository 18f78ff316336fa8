"""The core's errors speak no CLI: flags are spelled at the edge, by each edge.

A core message that names ``--out`` reads wrong from Python (``icnn_cli.init(cfg,
out=...)``); the core names parameters (``parameter="out"``, ``param("force")``) and the
CLI and the Python API each spell them their own way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import icnn_cli
from icnn_cli import errors
from icnn_cli.cli.errors import cli_message, exit_code_of

PACKAGE = Path(icnn_cli.__file__).parent
EDGES = {"cli", "python_api.py", "__init__.py", "__main__.py"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
ERROR_CLASSES = {
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.IcnnError)
}


def core_modules() -> list[Path]:
    return sorted(
        path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] not in EDGES
    )


def error_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """The string pieces of every error the module builds (``raise X(...)``, ``X(...)``)."""
    texts = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        if name not in ERROR_CLASSES and not name.endswith("Failure"):
            continue
        for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
            for piece in ast.walk(argument):
                if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                    texts.append((piece.lineno, piece.value))
    return texts


def test_no_core_error_names_a_cli_flag():
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {text!r}"
        for path in core_modules()
        for line, text in error_texts(ast.parse(path.read_text()))
        if FLAG.search(text)
    ]
    assert found == []


def test_the_scan_sees_core_errors():
    # The rule above is only as good as its reach: it must find the core's messages.
    writing = (PACKAGE / "checkpoint" / "writing.py").read_text()
    assert any("already exists" in text for _, text in error_texts(ast.parse(writing)))


def test_one_error_two_wordings():
    error = errors.OutputExists(
        f"already exists (pass {errors.param('force')} to replace it)", "out", "ckpt"
    )
    assert cli_message(error) == "--out ckpt: already exists (pass --force to replace it)"
    assert str(error) == "out='ckpt': already exists (pass force=True to replace it)"


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (errors.UsageError, 2),
        (errors.ConfigError, 2),
        (errors.OutputExists, 2),
        (errors.ResourcesExceeded, 2),
        (errors.NotACheckpoint, 2),
        (errors.CheckpointRefused, 2),
        (errors.UnsupportedStorage, 2),
        (errors.RuntimeFailure, 1),
        (errors.DamagedCheckpoint, 1),
        (errors.NotCommitted, 1),
        (errors.StorageFailure, 1),
    ],
)
def test_the_cli_maps_each_class_to_its_exit_code(error_class, code):
    assert exit_code_of(error_class("x")) == code
