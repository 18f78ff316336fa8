"""`icnn config new`: a commented config from the schema, accepted by `icnn init` unchanged."""

from __future__ import annotations

import json
import re
import typing

import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from icnn_cli.config import IcnnConfig
from icnn_cli.config_template import EXAMPLE_VALUES, config_template, starter_config


def _models_of(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every pydantic model reachable from ``root``'s fields (``X``, ``X | None``, ``list[X]``)."""
    found: list[type[BaseModel]] = []
    pending: list[typing.Any] = [root]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                pending += [field.annotation for field in annotation.model_fields.values()]
        else:
            pending += list(typing.get_args(annotation))
    return found


MODELS = _models_of(IcnnConfig)
KEY_LINE = re.compile(r"^\s*(?:#\s+)?(?:-\s+)?([a-z_]+):", re.MULTILINE)


def test_the_schema_walk_finds_every_section():
    names = {model.__name__ for model in MODELS}

    assert names == {
        "IcnnConfig",
        "ModelConfig",
        "InitConfig",
        "InitOverride",
        "GaussianMapSamples",
        "ShardingConfig",
        "ShardingRule",
    }


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_field_of_every_model_is_in_the_all_output(icnn, model):
    text = icnn("config", "new", "--all").stdout
    keys = set(KEY_LINE.findall(text))

    missing = set(model.model_fields) - keys
    assert not missing, f"icnn config new --all leaves out {model.__name__}: {sorted(missing)}"


def test_every_field_has_its_description_type_and_default(icnn):
    text = icnn("config", "new", "--all").stdout
    for model in MODELS:
        for name, field in model.model_fields.items():
            if field.description:
                first_words = " ".join(field.description.split()[:3])
                assert first_words in text, f"{model.__name__}.{name}: description missing"
    assert "# type: int > 0; required\n  dim_data: 2" in text
    assert "# type: one of threefry2x32, rbg, unsafe_rbg; default: threefry2x32" in text
    assert "# type: int >= 0; default: 1048576\n  min_bytes: 1048576" in text


@pytest.mark.parametrize("every_key", [False, True], ids=["plain", "all"])
def test_the_output_validates_to_the_config_it_was_made_from(icnn, every_key):
    flags = ["--dim-data", "3", "--dim-hidden", "16,8,4", "--pos-weights", "--seed", "7"]
    text = icnn("config", "new", *flags, *(["--all"] if every_key else [])).stdout

    parsed = IcnnConfig.model_validate(yaml.safe_load(text))

    expected = starter_config(dim_data=3, dim_hidden=[16, 8, 4], pos_weights=True, seed=7)
    assert parsed.model.model_dump() == expected.model.model_dump()
    assert parsed.init.model_dump() == expected.init.model_dump()
    assert parsed.output == expected.output
    # The fields OTT gets are the same, so the init is the same.
    assert parsed.model.icnn_fields() == expected.model.icnn_fields()


def test_without_all_only_the_common_keys_are_written(icnn):
    document = yaml.safe_load(icnn("config", "new").stdout)

    assert document == {
        "model": {"dim_data": 2, "dim_hidden": [64, 64]},
        "init": {"seed": 0},
        "output": "ckpt",
    }


def test_options_set_their_fields(icnn):
    text = icnn("config", "new", "--no-pos-weights", "--gaussian-map", "src.npy", "tgt.npy").stdout
    model = yaml.safe_load(text)["model"]

    assert model["pos_weights"] is False
    assert model["gaussian_map_samples"] == {"source": "src.npy", "target": "tgt.npy"}


def test_commented_examples_become_valid_when_uncommented(icnn):
    """The sections with required keys (Gaussian-map samples, init overrides, sharding rules)
    are shown as commented-out examples; uncommenting them gives a valid config."""
    text = icnn("config", "new", "--all").stdout
    uncommented = "\n".join(re.sub(r"^(\s*)# (?=\s)", r"\1", line) for line in text.splitlines())
    uncommented = uncommented.replace("rules: []", "rules:")
    uncommented = uncommented.replace("overrides: []", "overrides:")

    config = IcnnConfig.model_validate(yaml.safe_load(uncommented))

    assert config.model.gaussian_map_samples is not None
    assert config.sharding is not None and len(config.sharding.rules) == 1
    assert [rule.path for rule in config.init.overrides] == ["params/w_zs_*/kernel"]


def test_every_example_value_belongs_to_a_field():
    for (model, name), value in EXAMPLE_VALUES.items():
        assert name in model.model_fields
        model.model_validate({key: EXAMPLE_VALUES[(model, key)] for key in model.model_fields})
        assert value is not None


def test_config_template_round_trips_a_full_config():
    config = IcnnConfig.model_validate(
        {
            "model": {
                "dim_data": 2,
                "dim_hidden": [8],
                "ranks": [1, 2, 1],
                "init_fn": {"name": "normal", "stddev": 0.01},
                "act_fn": {"name": "leaky_relu", "negative_slope": 0.1},
            },
            "init": {"seed": 5, "rngs": {"params": "derive"}, "input_shape": [4, 2]},
            "sharding": {"mesh": [1], "rules": [{"path": "params/*", "spec": [None, "x"]}]},
        }
    )

    text = config_template(config)

    assert IcnnConfig.model_validate(yaml.safe_load(text)) == config


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dim-data", "0"], "--dim-data: "),
        (["--dim-hidden", "64,x"], "--dim-hidden"),
        (["--dim-hidden", "64,0"], "--dim-hidden: "),
        (["--seed", "-1"], "--seed: seed must be in 0..4294967295"),
    ],
)
def test_bad_values_are_one_line_errors(icnn, flags, message):
    result = icnn("config", "new", *flags)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr


def test_icnn_init_accepts_the_output_unchanged(icnn, tmp_path):
    """What `config new` prints (every key, Gaussian map included) runs through `icnn init`."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "src.npy", rng.normal(size=(64, 3)).astype(np.float32))
    np.save(tmp_path / "tgt.npy", rng.normal(size=(64, 3)).astype(np.float32) + 1.0)
    text = icnn(
        "config",
        "new",
        "--all",
        "--dim-data",
        "3",
        "--dim-hidden",
        "8,8",
        "--pos-weights",
        "--gaussian-map",
        "src.npy",
        "tgt.npy",
    ).stdout
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(text)

    result = icnn("init", "-c", config_path, "--out", tmp_path / "ckpt", "--json")

    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total_params"] > 0
    assert summary["spec"]["config"]["model"]["pos_weights"] is True
