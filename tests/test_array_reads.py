"""Arrays read straight from their zarr arrays equal what an Orbax restore gives, every layout."""

from __future__ import annotations

import numpy as np
import pytest

from icnn_cli.checkpoint import metadata_files
from icnn_cli.checkpoint.reader import CheckpointReader
from tests.helpers import ALL_GOLDEN, GOLDEN


def read_all(path) -> dict:
    reader = CheckpointReader.open(path)
    return {leaf.path_string: array for leaf, array in reader.verified_arrays()}


def refuse_layout(path):
    raise metadata_files.UnexpectedLayout("test: use Orbax")


@pytest.mark.parametrize("name", ALL_GOLDEN)
def test_direct_reads_equal_orbax_partial_restores(name, monkeypatch):
    direct = read_all(GOLDEN / name)
    monkeypatch.setattr(metadata_files, "array_reader", refuse_layout)

    through_orbax = read_all(GOLDEN / name)

    assert list(direct) == list(through_orbax)
    for path, value in direct.items():
        array, expected = np.asarray(value), np.asarray(through_orbax[path])
        assert (array.dtype, array.shape) == (expected.dtype, expected.shape), path
        assert array.tobytes() == expected.tobytes(), path
