"""Write the Gaussian-map sample files used by configs/gaussian_map.yaml.

Run from the repository root: ``.venv/bin/python configs/samples/make_samples.py``.
Source: 512 points of a standard normal; target: a stretched, rotated, shifted normal.
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
rng = np.random.default_rng(20261125)
source = rng.standard_normal((512, 2))
rotation = np.array([[np.cos(0.6), -np.sin(0.6)], [np.sin(0.6), np.cos(0.6)]])
target = (rng.standard_normal((512, 2)) * np.array([2.0, 0.5])) @ rotation.T + np.array([3.0, -1.0])
np.save(HERE / "source.npy", source.astype(np.float32))
np.save(HERE / "target.npy", target.astype(np.float32))
