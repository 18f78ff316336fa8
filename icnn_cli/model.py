"""Config -> ``ott.neural.networks.icnn.ICNN``: the only module that knows OTT.

Everything OTT-specific (the import, the field names, the Gaussian-map samples)
lives here, so a later Flax NNX model is a new module beside this one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from icnn_cli import registry
from icnn_cli.config import ModelConfig
from icnn_cli.errors import IcnnError

MIN_SAMPLES = 2  # a covariance needs at least two points


@dataclasses.dataclass(frozen=True)
class SampleFile:
    """A Gaussian-map sample file as loaded: where it is, its digest and shape."""

    role: str
    path: Path
    sha256: str
    shape: tuple[int, ...]


def load_sample_file(path: Path, role: str, dim_data: int) -> tuple[Any, SampleFile]:
    """Load one ``.npy`` sample array, refusing anything but finite 2-D float data."""
    import numpy as np

    field = f"model.gaussian_map_samples.{role}"
    if not path.is_file():
        problem = "not found" if not path.exists() else "not a regular file"
        raise IcnnError(f"{path}: {field}: sample file {problem}")
    raw = path.read_bytes()
    try:
        import io

        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise IcnnError(
                f"{path}: {field}: holds pickled Python objects, which are refused; save a plain "
                "float array with numpy.save"
            ) from None
        raise IcnnError(f"{path}: {field}: not a .npy array ({error})") from None
    except (OSError, EOFError) as error:
        raise IcnnError(f"{path}: {field}: not a .npy array ({error})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise IcnnError(
            f"{path}: {field}: expected a 2-D array [n, {dim_data}], got shape "
            f"{getattr(array, 'shape', None)}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise IcnnError(f"{path}: {field}: expected a float array, got dtype {array.dtype}")
    if array.shape[1] != dim_data:
        raise IcnnError(
            f"{path}: {field}: has {array.shape[1]} features per point, "
            f"but model.dim_data is {dim_data}"
        )
    if array.shape[0] < MIN_SAMPLES:
        raise IcnnError(
            f"{path}: {field}: needs at least {MIN_SAMPLES} points for a covariance, "
            f"got {array.shape[0]}"
        )
    if not np.all(np.isfinite(array)):
        raise IcnnError(f"{path}: {field}: contains NaN or inf")
    record = SampleFile(role, path.resolve(), hashlib.sha256(raw).hexdigest(), array.shape)
    return array, record


def load_gaussian_map_samples(
    model: ModelConfig, base_dir: Path
) -> tuple[tuple[Any, Any] | None, list[SampleFile]]:
    """Load the source/target arrays named in the config, paths relative to ``base_dir``."""
    if model.gaussian_map_samples is None:
        return None, []
    arrays, records = [], []
    for role in ("source", "target"):
        path = base_dir / getattr(model.gaussian_map_samples, role)
        array, record = load_sample_file(path, role, model.dim_data)
        arrays.append(array)
        records.append(record)
    return (arrays[0], arrays[1]), records


def build_icnn(model: ModelConfig, gaussian_map_samples: tuple[Any, Any] | None = None) -> Any:
    """The OTT ICNN for a validated config; fields the YAML leaves out are not passed."""
    import jax.numpy as jnp
    from ott.neural.networks.icnn import ICNN

    fields: dict[str, Any] = {}
    for name, value in model.icnn_fields().items():
        if name in ("act_fn", "rectifier_fn"):
            value = registry.resolve_activation(value["name"], _arguments(value))
        elif name == "init_fn":
            value = registry.resolve_initializer(value["name"], _arguments(value))
        elif name == "dim_hidden":
            value = list(value)
        elif name == "ranks" and isinstance(value, list):
            value = tuple(value)
        elif name == "gaussian_map_samples":
            if gaussian_map_samples is None:
                raise ValueError("gaussian_map_samples is configured but no arrays were given")
            value = tuple(jnp.asarray(array) for array in gaussian_map_samples)
        fields[name] = value
    return ICNN(**fields)


def check_method(module: Any, method: str | None) -> None:
    """Refuse an ``init.method`` that the module does not have."""
    if method is not None and not callable(getattr(type(module), method, None)):
        raise IcnnError(f"init.method: {type(module).__name__} has no method '{method}'")


def _arguments(spec: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if key != "name"}
