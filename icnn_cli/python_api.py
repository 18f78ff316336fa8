"""``icnn_cli.init``: the ``icnn init`` pipeline in process, for notebooks and training scripts.

The steps are those of :func:`icnn_cli.pipeline.run_init` (prepare once, initialise the
seed, write atomically with the spec embedded), so the variables are bit-identical to
what ``icnn init`` writes for the same config and seed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.config import IcnnConfig, validate_seed
from icnn_cli.errors import IcnnError
from icnn_cli.validation_errors import config_error

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | IcnnConfig
"""A config file path, YAML text (a ``str`` with a newline), a mapping, or a validated config."""

YAML_TEXT_NAME = "<yaml text>"
MAPPING_NAME = "<mapping>"


def resolve_config(config: ConfigSource) -> tuple[IcnnConfig, Path]:
    """The validated config and the directory its relative sample paths are read from.

    A path's samples are relative to the file, as with ``icnn init -c``; YAML text, a
    mapping or an :class:`IcnnConfig` have no file, so theirs are relative to the current
    directory.

    Raises:
      IcnnError: the file is missing or unreadable, or the config does not validate.
    """
    from pydantic import ValidationError

    from icnn_cli.config import load_config

    if isinstance(config, IcnnConfig):
        return config, Path.cwd()
    if isinstance(config, Mapping):
        data = dict(config)
        try:
            return IcnnConfig.model_validate(data), Path.cwd()
        except ValidationError as error:
            raise config_error(error, IcnnConfig, source=MAPPING_NAME, data=data) from None
    if isinstance(config, str) and "\n" in config:
        from icnn_cli import yaml_source

        document = yaml_source.parse_yaml_mapping(config, YAML_TEXT_NAME)
        return document.validate(IcnnConfig), Path.cwd()
    if isinstance(config, str | os.PathLike):
        path = Path(config)
        return load_config(path), path.parent
    raise IcnnError(
        f"config: expected a path, YAML text, a mapping or an IcnnConfig, "
        f"got {type(config).__name__}"
    )


def init_in_process(
    config: ConfigSource,
    seed: int | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    platform: str | None = None,
) -> tuple[Any, Any]:
    """See :func:`icnn_cli.init`."""
    from icnn_cli.pipeline import initialize_seed, prepare_init, write_seed_checkpoint

    validated, config_dir = resolve_config(config)
    if seed is not None:
        try:
            validated = validated.with_seed(validate_seed(seed))
        except ValueError as error:
            raise IcnnError(f"seed: {error}") from None
    if platform is not None and platform not in ("cpu", "gpu", "tpu"):
        raise IcnnError(f"platform: expected cpu, gpu or tpu, got {platform!r}")
    output = storage_path(out) if out is not None else None
    if output is not None:
        from icnn_cli.checkpoint.writing import check_output_path

        check_output_path(output, force)
    prepared = prepare_init(validated, config_dir, platform)
    variables, spec = initialize_seed(prepared, validated.init.seed)
    if output is not None:
        write_seed_checkpoint(output, variables, spec, force)
    return prepared.module, variables
