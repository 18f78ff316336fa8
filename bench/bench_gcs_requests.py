"""Requests to object storage: icnn against plain Orbax, on the local GCS emulator.

Each command runs in a fresh process (credentials and file-system caches cold, as a
user pays them) against ``tests/gcs_emulator.py``, which counts the requests it
answers. Prints a Markdown section for BENCHMARKS.md (``bench/run.py --only 6``).

    python bench/bench_gcs_requests.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from tests.gcs_emulator import VARIABLES_TO_UNSET, running_emulator  # noqa: E402

ICNN = str(Path(sys.executable).parent / "icnn")
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"

PLAIN_TREE = """
import sys, numpy as np, orbax.checkpoint as ocp
rng = np.random.default_rng(0)
tree = {f"layer_{i:02d}": {"kernel": rng.standard_normal((i + 2, 3)).astype(np.float32),
        "bias": rng.standard_normal(3).astype(np.float16), "steps": np.array([i, -i], np.int32),
        "mask": rng.integers(0, 255, size=4, dtype=np.uint8)} for i in range(25)}
with ocp.StandardCheckpointer() as c:
    c.save(sys.argv[1], tree); c.wait_until_finished()
"""
PLAIN_METADATA = (
    "import sys, orbax.checkpoint as ocp; ocp.StandardCheckpointer().metadata(sys.argv[1])"
)
PLAIN_RESTORE = (
    "import sys, orbax.checkpoint as ocp; ocp.StandardCheckpointer().restore(sys.argv[1])"
)
PLAIN_SAVE_OF = """
import sys, orbax.checkpoint as ocp
tree = ocp.StandardCheckpointer().restore(sys.argv[2])
with ocp.StandardCheckpointer() as c:
    c.save(sys.argv[1], tree); c.wait_until_finished()
"""


def counted(emulator, argv: list[str], env: dict[str, str]) -> int:
    emulator.reset_counts()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{argv}: exit {result.returncode}: {result.stderr[-2000:]}")
    return emulator.request_counts().total()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="icnn-bench-gcs-") as directory:
        work = Path(directory)
        with running_emulator(work / "emulator") as emulator:
            env = {**os.environ, **emulator.env, "NO_COLOR": "1"}
            for name in VARIABLES_TO_UNSET:
                env.pop(name, None)
            bucket = emulator.bucket("bench")
            python = [sys.executable, "-c"]
            tree = f"{bucket}/tree-100"
            counted(emulator, [*python, PLAIN_TREE, tree], env)
            local = work / "icnn-local"
            subprocess.run(
                [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", str(local)],
                env=env,
                check=True,
                capture_output=True,
            )
            rows = [
                (
                    "read the 100-leaf tree's structure",
                    counted(emulator, [*python, PLAIN_METADATA, tree], env),
                    "`icnn inspect`",
                    counted(emulator, [ICNN, "inspect", tree], env),
                ),
                (
                    "read the 100-leaf tree's arrays",
                    counted(emulator, [*python, PLAIN_RESTORE, tree], env),
                    "`icnn inspect --stats`",
                    counted(emulator, [ICNN, "inspect", tree, "--stats"], env),
                ),
                (
                    "write configs/default.yaml's init (18 leaves)",
                    counted(emulator, [*python, PLAIN_SAVE_OF, f"{bucket}/plain", str(local)], env),
                    "`icnn init --out gs://...`",
                    counted(
                        emulator,
                        [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", f"{bucket}/icnn"],
                        env,
                    ),
                ),
                (
                    "replace it (plain: `save(force=True)`, deletes first)",
                    None,
                    "`icnn init --out gs://... --force`",
                    counted(
                        emulator,
                        [ICNN, "init", "-c", str(DEFAULT_CONFIG), "--out", f"{bucket}/icnn"]
                        + ["--seed", "1", "--force"],
                        env,
                    ),
                ),
            ]
    lines = [
        "## 6. Requests to object storage (`gs://`), against plain Orbax",
        "",
        "`bench/bench_gcs_requests.py`: each command in a fresh process against the local GCS "
        "emulator of the test suite (`tests/gcs_emulator.py`), which counts the requests it "
        "answers. icnn lists a checkpoint once and answers its file checks from that listing; "
        "the one extra request is a probe of the bucket with few retries, so a network failure "
        "is reported in a second rather than after gcsfs's ~33 s of retries.",
        "",
        "| operation | plain Orbax | icnn command | icnn |",
        "|---|---:|---|---:|",
        *[
            f"| {what} | {plain if plain is not None else '-'} | {command} | {ours} |"
            for what, plain, command, ours in rows
        ],
        "",
        f"**Goal `icnn inspect` makes no more requests than Orbax's `metadata()` "
        f"({rows[0][3]} vs {rows[0][1]}): {'met' if rows[0][3] <= rows[0][1] else 'not met'}.**",
        "",
    ]
    print(json.dumps({row[2]: row[3] for row in rows}), file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
