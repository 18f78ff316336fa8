"""``icnn_cli.init``: the ``icnn init`` pipeline in process, for notebooks and training scripts.

It is :func:`icnn_cli.pipeline.run_init`, the very call ``icnn init`` makes (one init plan:
output and memory checked first, the compile cache and the cached exported init, the
seed's init, an atomic write with the spec embedded), so the variables are bit-identical
to what ``icnn init`` writes for the same config and seed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.config import IcnnConfig, validate_seed
from icnn_cli.errors import IcnnError, UsageError
from icnn_cli.jitted_init import PLATFORMS
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
    from icnn_cli.pipeline import InitRequest, run_init

    validated, config_dir = resolve_config(config)
    if seed is not None:
        try:
            validated = validated.with_seed(validate_seed(seed))
        except ValueError as error:
            raise UsageError(str(error), "seed", seed) from None
    if platform is not None and platform not in PLATFORMS:
        raise UsageError(f"expected one of {', '.join(PLATFORMS)}", "platform", platform)
    request = InitRequest(
        config=validated,
        config_dir=config_dir,
        output=storage_path(out) if out is not None else None,
        force=force,
        platform=platform,
    )
    result = run_init(request)
    return result.module(), result.variables
