"""``icnn_cli.load``: rebuild the OTT module from an embedded spec and restore its variables."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from icnn_cli import checkpoint, model
from icnn_cli.config import IcnnConfig
from icnn_cli.errors import RUNTIME_ERROR, IcnnError
from icnn_cli.spec import CheckpointSpec, parse_spec


def read_spec(path: Path) -> CheckpointSpec:
    """The embedded spec of an icnn checkpoint; exit 2 for a checkpoint without one."""
    with checkpoint.quiet_absl():
        step = checkpoint.read_step_metadata(path)
    spec = parse_spec(step.custom_metadata, str(path))
    if spec is None:
        raise IcnnError(f"{path}: no embedded icnn spec (not written by icnn init)")
    return spec


def spec_config(spec: CheckpointSpec, path: Path) -> IcnnConfig:
    from pydantic import ValidationError

    try:
        return IcnnConfig.model_validate(spec.config)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(map(str, first["loc"]))
        raise IcnnError(
            f"{path}: embedded config is invalid: {field}: {first['msg']}",
            RUNTIME_ERROR,
        ) from None


def recorded_samples(spec: CheckpointSpec, dim_data: int) -> tuple[Any, Any] | None:
    """The recorded Gaussian-map samples, or stand-ins of the right shape.

    The samples only feed the initializers; ``apply`` needs just the module's
    structure, so when the files moved or changed, random stand-ins will do.
    """
    import numpy as np

    if not spec.gaussian_map_samples:
        return None
    arrays = []
    for record in sorted(spec.gaussian_map_samples, key=lambda r: r.role != "source"):
        path = Path(record.path)
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256:
            arrays.append(np.load(path, allow_pickle=False))
        else:
            arrays.append(np.random.default_rng(0).standard_normal((dim_data + 1, dim_data)))
    return arrays[0], arrays[1]


def verify_fingerprint(path: Path, spec: CheckpointSpec, variables: Any) -> None:
    actual = checkpoint.fingerprint(variables)
    if actual != spec.fingerprint:
        raise IcnnError(
            f"{path}: array data does not match the recorded fingerprint "
            f"(recorded {spec.fingerprint[7:19]}, found {actual[7:19]}): the checkpoint is damaged",
            RUNTIME_ERROR,
        )


def load_checkpoint(path: str | Path) -> tuple[Any, Any]:
    """``(module, variables)`` for an icnn checkpoint, after checking its fingerprint."""
    path = Path(path)
    spec = read_spec(path)
    config = spec_config(spec, path)
    module = model.build_icnn(config.model, recorded_samples(spec, config.model.dim_data))
    with checkpoint.quiet_absl():
        variables = checkpoint.restore_variables(path)
    verify_fingerprint(path, spec, variables)
    return module, variables
