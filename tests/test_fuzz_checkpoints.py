"""A seeded fuzzer: hostile checkpoints never crash, hang, leak or blow up a reading command.

Each example copies a golden checkpoint (``tests/data/golden``: icnn's own layouts,
Orbax 0.4 to 0.11 foreign ones, a step with items) or a single weights file, applies one
to three mutations drawn from what an attacker or a broken disk does (truncate, flip,
zero, delete, retype a JSON value, nest it deep, make a number huge, rename, link a
file out of the checkpoint or to ``/dev/zero``, replace it by a FIFO, make it a sparse
giant) and runs ``inspect``, ``inspect --stats``, ``inspect --json``, ``verify`` and
``diff`` in-process. Whatever it is given, each command must end in exit 0, 1 or 2 with
at most one ``icnn: error:`` line, never a traceback nor an "unexpected failure", never
show the secret planted outside the checkpoint, never print a raw control character,
and never block. Memory: :data:`AVAILABLE_MEMORY` stands in for the machine's, so a
declared size over it is refused, and the growth of the peak resident memory over the
whole run is bounded (``test_memory_bombs_stay_bounded`` measures a fresh process).

``ICNN_FUZZ_EXAMPLES=2000`` fuzzes longer, with fresh random draws (not part of make test);
``ICNN_FUZZ_SEED=N`` starts the draws at seed ``N`` (a failure names its seed).
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import invoke_unblocked as invoke

GOLDEN = Path(__file__).parent / "data" / "golden"
CHECKPOINTS = [
    "icnn_tiny",
    "per_leaf",
    "zarr3",
    "foreign/0.11.40/manager/5",
    "foreign/0.11.40/scalars",
    "foreign/0.4.8/pytree_no_ocdbt",
    "foreign/0.4.8/pytree_aggregate",
]
SINGLE_FILES = ["weights.npz", "weights.msgpack"]
SECRET = "HUNTER2-outside-the-checkpoint"
COMMANDS = [["inspect"], ["inspect", "--stats"], ["inspect", "--json"], ["verify"], ["diff"]]
AVAILABLE_MEMORY = 512 << 20  # what the commands are told this machine has
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")

LONG_RUN = os.environ.get("ICNN_FUZZ_EXAMPLES")
EXAMPLES = int(LONG_RUN or 12)  # ~5 s in the fast loop; the long runs found the rest
# ICNN_FUZZ_SEED=N replays a long run's draws from seed N (its failures name their seed).
FIRST_SEED = int(
    os.environ.get("ICNN_FUZZ_SEED")
    or (random.SystemRandom().randrange(1 << 30) if LONG_RUN else 0)
)

RETYPED: list[Any] = ["x", "", [], {}, None, True, -1, 0, 1.5, 10**30, -(10**30), 1e308, "../x"]


# --- mutations ------------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def _small_files(root: Path) -> list[Path]:
    # What a mutation reads or rewrites: never a sparse giant left by an earlier one.
    return [path for path in _files(root) if path.stat().st_size <= 1 << 20]


def _json_files(root: Path) -> list[Path]:
    found = []
    for path in _small_files(root):
        try:
            json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        found.append(path)
    return found


def _pick(rng: random.Random, paths: list[Path]) -> Path | None:
    return rng.choice(paths) if paths else None


def truncate(rng: random.Random, root: Path, outside: Path) -> str:
    file = _pick(rng, _files(root))
    if file is None:
        return "nothing to truncate"
    size = file.stat().st_size
    os.truncate(file, rng.randrange(size + 1) if size else 0)
    return f"truncate {file.name}"


def flip(rng: random.Random, root: Path, outside: Path) -> str:
    file = _pick(rng, _small_files(root))
    if file is None or not file.stat().st_size:
        return "nothing to flip"
    content = bytearray(file.read_bytes())
    for _ in range(rng.randint(1, 8)):
        content[rng.randrange(len(content))] ^= 1 << rng.randrange(8)
    file.write_bytes(bytes(content))
    return f"flip {file.name}"


def zero(rng: random.Random, root: Path, outside: Path) -> str:
    file = _pick(rng, _small_files(root))
    if file is None:
        return "nothing to zero"
    file.write_bytes(bytes(file.stat().st_size))
    return f"zero {file.name}"


def delete(rng: random.Random, root: Path, outside: Path) -> str:
    file = _pick(rng, _files(root))
    if file is None or file == root:
        return "nothing to delete"
    file.unlink()
    return f"delete {file.name}"


def _json_nodes(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    nodes = [path]
    if isinstance(document, dict):
        for key, value in document.items():
            nodes += _json_nodes(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            nodes += _json_nodes(value, (*path, index))
    return nodes


def _replace_json_value(rng: random.Random, root: Path, make: Callable[[], Any]) -> str:
    file = _pick(rng, _json_files(root))
    if file is None:
        return "no JSON file"
    document = json.loads(file.read_bytes())
    node = rng.choice(_json_nodes(document))
    marker = "\x00MARK\x00"
    if not node:
        document = marker
    else:
        parent = document
        for key in node[:-1]:
            parent = parent[key]
        parent[node[-1]] = marker
    replacement = make()
    text = replacement if isinstance(replacement, str) and replacement.startswith("RAW:") else None
    raw = text[4:] if text else json.dumps(replacement)
    file.write_text(json.dumps(document).replace(json.dumps(marker), raw))
    return f"retype {file.name} at {node[:4]}"


def retype(rng: random.Random, root: Path, outside: Path) -> str:
    return _replace_json_value(rng, root, lambda: rng.choice(RETYPED))


def deep_nesting(rng: random.Random, root: Path, outside: Path) -> str:
    depth = rng.choice([200, 5_000, 50_000])
    opening, closing = rng.choice([("[", "]"), ('{"a":', "}")])
    return _replace_json_value(rng, root, lambda: "RAW:" + opening * depth + "1" + closing * depth)


def huge_number(rng: random.Random, root: Path, outside: Path) -> str:
    numbers = ["1e30", "1e400", "-1e400", "1" + "0" * 4000, "-" + "9" * 50, "NaN", "Infinity"]
    return _replace_json_value(rng, root, lambda: "RAW:" + rng.choice(numbers))


def rename(rng: random.Random, root: Path, outside: Path) -> str:
    files = [file for file in _files(root) if file != root]
    if len(files) < 2:
        return "nothing to rename"
    first, second = rng.sample(files, 2)
    swap = first.with_name(first.name + ".swap")
    first.rename(swap)
    second.rename(first)
    swap.rename(second)
    return f"swap {first.name} {second.name}"


def _replace_by(rng: random.Random, root: Path, make: Callable[[Path], None], what: str) -> str:
    file = _pick(rng, [file for file in _files(root) if file != root])
    if file is None:
        return f"nothing to {what}"
    file.unlink()
    make(file)
    return f"{what} {file.name}"


def link_out(rng: random.Random, root: Path, outside: Path) -> str:
    target = rng.choice([outside / "secret.json", outside / "secret.txt", outside])
    return _replace_by(rng, root, lambda file: file.symlink_to(target), "link out")


def link_to_dev_zero(rng: random.Random, root: Path, outside: Path) -> str:
    return _replace_by(rng, root, lambda file: file.symlink_to("/dev/zero"), "/dev/zero")


def fifo(rng: random.Random, root: Path, outside: Path) -> str:
    return _replace_by(rng, root, os.mkfifo, "fifo")


def sparse_giant(rng: random.Random, root: Path, outside: Path) -> str:
    file = _pick(rng, _files(root))
    if file is None:
        return "nothing to grow"
    os.truncate(file, rng.choice([3 << 30, 1 << 40]))
    return f"sparse giant {file.name}"


MUTATIONS = [
    truncate,
    flip,
    zero,
    delete,
    retype,
    deep_nesting,
    huge_number,
    rename,
    link_out,
    link_to_dev_zero,
    fifo,
    sparse_giant,
]


# --- running ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The goldens, and one weights file of each single-file format, with a secret beside."""
    from flax.serialization import msgpack_serialize

    base = tmp_path_factory.mktemp("pristine")
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3)}}
    np.savez(base / "weights.npz", **{"params/w": tree["params"]["w"], "params/b": np.ones(3)})
    (base / "weights.msgpack").write_bytes(msgpack_serialize(tree))
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(json.dumps({"password": SECRET}))
    (outside / "secret.txt").write_text(SECRET)
    (outside / "metadata").write_text(json.dumps({"password": SECRET}))
    return base


def check(result: Any, story: str, differences_exit_1: bool = False) -> None:
    stderr, stdout = result.stderr, result.stdout
    assert result.exit_code in (0, 1, 2), (story, result.exit_code, stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (story, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("icnn: error: ")]
    if result.exit_code == 0 or (result.exit_code == 1 and differences_exit_1):
        assert len(errors) <= (1 if result.exit_code else 0), (story, stderr)  # diff: differ
    else:
        assert len(errors) == 1, (story, stderr)
    assert "Traceback" not in stderr + stdout, story
    assert "unexpected failure" not in stderr, (story, stderr)
    assert SECRET not in stderr + stdout, story
    assert not CONTROL.search(stderr + stdout), (story, stderr + stdout)


def fuzz_one(seed: int, pristine: Path, work: Path) -> None:
    rng = random.Random(seed)
    source = rng.choice(CHECKPOINTS + SINGLE_FILES)
    original = pristine / source if source in SINGLE_FILES else GOLDEN / source
    target = work / "mutated" / original.name
    target.parent.mkdir(parents=True)
    if original.is_dir():
        shutil.copytree(original, target, symlinks=True)
    else:
        shutil.copy(original, target)
    steps = [rng.choice(MUTATIONS) for _ in range(rng.randint(1, 3))]
    story = f"seed {seed}: {source}: " + "; ".join(
        mutation(rng, target, pristine / "outside") for mutation in steps
    )
    for command in COMMANDS:
        others = [original] if command == ["diff"] else []
        result = invoke(*command, target, *others)
        check(result, f"{story}: {' '.join(command)}", differences_exit_1=command == ["diff"])


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + EXAMPLES))
def test_a_mutated_checkpoint_never_crashes_a_reading_command(
    seed, pristine, tmp_path, monkeypatch
):
    monkeypatch.setenv("ICNN_TEST_AVAILABLE_MEMORY", str(AVAILABLE_MEMORY))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fuzz_one(seed, pristine, tmp_path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 2 * AVAILABLE_MEMORY // 1024, f"seed {seed}: peak grew {grown_kib} KiB"


MEMORY_BOMBS = """
import json, os, resource, shutil, sys
from pathlib import Path
from typer.testing import CliRunner
from icnn_cli.cli import app
golden, work = Path(sys.argv[1]), Path(sys.argv[2])
cases = []
for name in ("_METADATA", "_sharding", "array_metadatas/process_0"):
    for how in ("dev-zero", "sparse"):
        target = work / f"{how}-{name.replace('/', '-')}"
        shutil.copytree(golden / "per_leaf", target)
        if how == "dev-zero":
            (target / name).unlink()
            (target / name).symlink_to("/dev/zero")
        else:
            os.truncate(target / name, 3 << 30)
        cases.append(target)
target = work / "huge-shape"
shutil.copytree(golden / "per_leaf", target)
array = target / "params.dense_0.kernel"
header = json.loads((array / ".zarray").read_text())
header.update(shape=[2**31], chunks=[2**31], dtype="<f8")
[chunk.unlink() for chunk in array.iterdir()]
(array / ".zarray").write_text(json.dumps(header))
cases.append(target)
codes = []
for case in cases:
    for command in (["inspect"], ["inspect", "--stats"], ["verify"]):
        codes.append(CliRunner().invoke(app, [*command, str(case)]).exit_code)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"codes": codes, "max_rss_kib": peak}))
"""


@pytest.mark.slow
def test_memory_bombs_stay_bounded(tmp_path):
    """/dev/zero links, sparse 3 GiB metadata and a 16 GiB declared array, in a fresh
    process whose peak resident memory is measured (each once read 3 GiB or more)."""
    environment = {**os.environ, "ICNN_TEST_AVAILABLE_MEMORY": str(4 << 30)}
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_BOMBS, str(GOLDEN), str(tmp_path)],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(report["codes"][1::3]) == {2}, report  # every --stats refused
    assert report["max_rss_kib"] < 1 << 20, report  # under 1 GiB, imports included
