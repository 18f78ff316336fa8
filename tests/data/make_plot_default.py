"""Regenerate tests/data/plot-default.png, the picture the README shows.

It is ``icnn plot`` of ``configs/default.yaml`` at seed 0, quantised to 256 colours
with Pillow (matplotlib's own dependency) so the repository stays small. It lives
beside the test data because tests/test_plot.py checks that a fresh plot still has
its dimensions (a layout change shows up there, and the README picture is redrawn).

    .venv/bin/python tests/data/make_plot_default.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def main() -> None:
    icnn = Path(sys.executable).parent / "icnn"
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint, figure = Path(scratch) / "ckpt", Path(scratch) / "fig.png"
        config = REPO / "configs" / "default.yaml"
        subprocess.run(
            [icnn, "init", "-c", config, "--seed", "0", "--out", checkpoint],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # run where the checkpoint is, so the legend names it "ckpt", not a temporary path
        subprocess.run([icnn, "plot", "ckpt", "--out", figure], check=True, cwd=scratch)
        image = Image.open(figure).convert("RGB").quantize(256)
        image.save(HERE / "plot-default.png", optimize=True)


if __name__ == "__main__":
    main()
