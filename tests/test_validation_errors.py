"""Pydantic's errors in the user's words, the same at every edge (icnn_cli/validation_errors.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from icnn_cli.config import IcnnConfig
from icnn_cli.errors import ConfigError
from icnn_cli.python_api import resolve_config
from icnn_cli.validation_errors import describe_validation_error, problems_of
from icnn_cli.yaml_source import parse_yaml_mapping


def validation_error(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        IcnnConfig.model_validate(data)
    return caught.value


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"dim_data": "two", "dim_hidden": [8]}, "expected a whole number, got 'two'"),
        ({"dim_data": 2, "dim_hidden": 8}, "expected a list, got 8"),
        ({"dim_data": 0, "dim_hidden": [8]}, "must be greater than 0, got 0"),
        ({"dim_data": 2, "dim_hidden": []}, "needs at least 1 item, got []"),
        ({"dim_data": 2, "dim_hidden": [8], "act_fn": "tanh"}, "'tanh' is not convex"),
    ],
)
def test_each_problem_is_worded_for_the_user(model, expected):
    (problem,) = problems_of(validation_error({"model": model}), IcnnConfig)

    assert problem.text.startswith(expected)
    for library_wording in ("Input should", "Value error, ", "List should", "unable to parse"):
        assert library_wording not in problem.text


def test_a_literal_names_the_values_it_accepts():
    error = validation_error({"model": {"dim_data": 2, "dim_hidden": [8]}, "init": {"dtype": "x"}})

    (problem,) = problems_of(error, IcnnConfig)

    assert problem.field == "init.dtype"
    assert problem.text == "expected one of 'float32', 'bfloat16' or 'float16', got 'x'"


def test_every_problem_is_listed_not_counted():
    error = validation_error({"model": {"dim_data": "two", "dim_hidden": [0]}, "output": 3})

    message = describe_validation_error(error, IcnnConfig, source="<mapping>")

    assert message == (
        "<mapping>: model.dim_data: expected a whole number, got 'two'; "
        "<mapping>: model.dim_hidden.0: must be greater than 0, got 0; "
        "<mapping>: output: expected text, got 3"
    )


def test_past_a_few_problems_the_rest_are_counted():
    error = validation_error({"model": {"dim_data": "a", "dim_hidden": ["b", "c", "d", "e"]}})

    message = describe_validation_error(error, IcnnConfig)

    assert message.count("expected a whole number") == 3
    assert message.endswith("(and 2 more problems)")


def test_a_typo_is_one_problem_with_a_suggestion_not_a_missing_key_too():
    error = validation_error({"model": {"dim_data": 2, "dim_hiden": [8]}})

    assert describe_validation_error(error, IcnnConfig, source="<mapping>") == (
        "<mapping>: model: unknown key 'dim_hiden' (did you mean 'dim_hidden'?)"
    )


def test_the_python_api_gives_the_hint_the_cli_gives():
    with pytest.raises(ConfigError) as caught:
        resolve_config({"model": {"dim_data": 2, "dim_hiden": [8]}})

    assert str(caught.value) == (
        "<mapping>: model: unknown key 'dim_hiden' (did you mean 'dim_hidden'?)"
    )


def test_yaml_text_places_each_problem_at_its_line():
    document = parse_yaml_mapping("model:\n  dim_data: two\n  dim_hidden: [0]\n", "cfg.yaml")

    with pytest.raises(ConfigError) as caught:
        document.validate(IcnnConfig)

    assert str(caught.value) == (
        "cfg.yaml:2:3: model.dim_data: expected a whole number, got 'two'; "
        "cfg.yaml:3:16: model.dim_hidden.0: must be greater than 0, got 0"
    )
