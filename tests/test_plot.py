"""`icnn plot`: the image is written, has the promised size and is not blank."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib import image

from tests.helpers import REPO

README_IMAGE = REPO / "tests" / "data" / "plot-default.png"


def distinct_colours(path) -> int:
    pixels = image.imread(path)
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


@pytest.mark.slow  # 5.5 s of CPU on a warm cache (--cpu-durations)
def test_two_dimensional_plot_has_the_contour_and_a_histogram_per_leaf(
    icnn, gaussian_map_checkpoint, tmp_path
):
    out = gaussian_map_checkpoint
    figure = tmp_path / "fig.png"

    result = icnn("plot", out, "--out", figure, "--json")

    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    leaves = json.loads(icnn("inspect", out, "--json").stdout)["leaves"]
    assert written["panels"] == ["potential", "signal"] + [leaf["path"] for leaf in leaves]
    pixels = image.imread(figure)
    assert pixels.shape[:2] == (written["height"], written["width"])
    assert written["width"] >= 800 and written["height"] > written["width"]
    assert figure.stat().st_size > 50_000
    assert distinct_colours(figure) > 1000  # a contour fill, not an empty canvas
    assert list(tmp_path.glob(".fig.png*")) == []  # no staging file left behind
    # The README picture (configs/default.yaml: the same [64, 64] leaves, so the same layout),
    # made by tests/data/make_plot_default.py: a layout change shows up here.
    assert "tests/data/plot-default.png" in (REPO / "README.md").read_text()
    assert image.imread(README_IMAGE).shape[:2] == pixels.shape[:2]


@pytest.mark.slow  # 3.3 s of CPU on a warm cache (--cpu-durations)
def test_higher_dimensional_plot_has_only_histograms(icnn, write_config, tmp_path):
    out = tmp_path / "ckpt"
    config = write_config({"model": {"dim_data": 5, "dim_hidden": [8]}})
    assert icnn("init", "-c", config, "--out", out).exit_code == 0
    figure = tmp_path / "weights.svg"

    result = icnn("plot", out, "--out", figure)

    assert result.exit_code == 0, result.stderr
    leaves = json.loads(icnn("inspect", out, "--json").stdout)["leaves"]
    assert result.stdout.startswith(f"wrote {figure} (960x")
    # the signal panel and the histograms, no potential panel
    assert result.stdout.endswith(f"px, {len(leaves) + 1} panels)\n")
    text = figure.read_text()
    assert text.lstrip().startswith("<?xml") and "w_zs_0: kernel" in text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fig.nope", "unknown image format '.nope'"),
        ("missing/fig.png", "does not exist"),
    ],
)
def test_bad_out_exits_2_before_any_work(icnn, tmp_path, name, message):
    result = icnn("plot", tmp_path / "no-checkpoint-needed", "--out", tmp_path / name)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: --out {tmp_path / name}: ")
    assert message in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow  # 9.1 s of CPU on a warm cache (--cpu-durations)
def test_compare_draws_both_checkpoints_signal_per_layer(icnn, write_config, tmp_path):
    model = {"dim_data": 3, "dim_hidden": [16, 16, 16], "pos_weights": True}
    for recipe in ("ott", "data-dependent"):
        config = write_config(
            {"model": model, "init": {"recipe": {"name": recipe}}}, f"{recipe}.yaml"
        )
        assert icnn("init", "-c", config, "--out", tmp_path / recipe).exit_code == 0
    figure = tmp_path / "signal.svg"

    result = icnn(
        "plot", tmp_path / "ott", "--compare", tmp_path / "data-dependent", "--out", figure
    )

    assert result.exit_code == 0, result.stderr
    text = figure.read_text()
    assert "pre-activation variance per layer" in text
    assert "correlation between inputs per layer" in text
    assert str(tmp_path / "ott") in text and str(tmp_path / "data-dependent") in text
