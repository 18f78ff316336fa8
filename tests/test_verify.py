"""`icnn verify`: integrity against the recorded fingerprint, reproducibility by re-running init."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orbax.checkpoint as ocp
import pytest

from icnn_cli.fingerprint import fingerprint
from tests.helpers import CONFIGS, tiny_model

CONFIG_VARIANTS = {
    "plain": {"model": tiny_model()},
    "bfloat16, streams, intermediates": {
        "model": tiny_model(act_fn="softplus", pos_weights=True),
        "init": {
            "seed": 5,
            "dtype": "bfloat16",
            "rngs": {"params": 7, "dropout": "derive"},
            "capture_intermediates": True,
        },
    },
}


def verify_json(icnn, *args):
    result = icnn("verify", *args, "--json")
    return result, json.loads(result.stdout)


@pytest.mark.parametrize("variant", sorted(CONFIG_VARIANTS))
def test_fresh_checkpoint_is_intact_and_reproduces_bit_for_bit(
    variant, icnn, write_config, tmp_path
):
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", write_config(CONFIG_VARIANTS[variant]), "--out", out).exit_code == 0

    result, report = verify_json(icnn, out)

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    (checkpoint,) = report["checkpoints"]
    assert report["ok"] and checkpoint["ok"]
    assert checkpoint["integrity"]["status"] == "ok"
    assert checkpoint["reproducibility"]["status"] == "bit-identical"
    assert checkpoint["computed_fingerprint"] == checkpoint["recorded_fingerprint"]
    assert checkpoint["differing_leaves"] == []


def resave_with(source, target, change_leaf):
    """Save ``source``'s arrays with one leaf changed and a fingerprint that matches them.

    Integrity then holds, so only the re-run can notice that the numbers are not
    what the spec gives.
    """
    checkpointer = ocp.StandardCheckpointer()
    variables = checkpointer.restore(source.absolute())
    metadata = checkpointer.metadata(source.absolute()).custom_metadata
    kernel = variables["params"]["w_zs_0"]["kernel"]
    variables["params"]["w_zs_0"]["kernel"] = change_leaf(kernel)
    metadata["icnn"]["fingerprint"] = fingerprint(variables)
    checkpointer.save(target.absolute(), variables, custom_metadata=metadata)
    checkpointer.wait_until_finished()


@pytest.fixture(scope="module")
def written_once(tiny_checkpoint):
    """``icnn init`` of ``tiny_model()`` at seed 0: the session's shared, read-only one."""
    return tiny_checkpoint


@pytest.fixture
def original(written_once, tmp_path):
    """A fresh copy of one tiny icnn checkpoint (tests may damage their copy)."""
    return Path(shutil.copytree(written_once, tmp_path / "ckpt"))


def test_arrays_the_spec_does_not_give_are_named(icnn, original, tmp_path):
    changed = tmp_path / "changed"
    resave_with(original, changed, lambda kernel: kernel.at[0, 0].add(0.5))

    result, report = verify_json(icnn, original, changed)

    assert result.exit_code == 1
    first, second = report["checkpoints"]
    assert first["ok"] and not second["ok"] and not report["ok"]
    assert second["integrity"]["status"] == "ok"
    assert second["reproducibility"]["status"] == "differs"
    assert second["differing_leaves"] == [
        {"path": "params/w_zs_0/kernel", "reason": "values differ", "max_abs_diff": 0.5}
    ]
    assert result.stderr.startswith(
        f"icnn: error: {changed}: not verified: reproducibility differs"
    )
    assert result.stderr.count("\n") == 1


def test_atol_accepts_small_cross_platform_differences(icnn, original, tmp_path):
    nudged = tmp_path / "nudged"
    resave_with(original, nudged, lambda kernel: kernel + 1e-6)

    strict, strict_report = verify_json(icnn, nudged)
    tolerant, tolerant_report = verify_json(icnn, nudged, "--atol", "1e-4")

    assert strict.exit_code == 1
    assert strict_report["checkpoints"][0]["reproducibility"]["status"] == "differs"
    assert tolerant.exit_code == 0
    assert tolerant_report["checkpoints"][0]["reproducibility"]["status"] == "within atol"


def test_foreign_checkpoint_has_nothing_recorded_and_is_not_verified(icnn, tmp_path):
    import numpy as np

    path = tmp_path / "foreign"
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, {"w": np.ones((3, 2), np.float32)})

    result, report = verify_json(icnn, path)

    assert result.exit_code == 1
    (checkpoint,) = report["checkpoints"]
    assert checkpoint["integrity"]["status"] == "not recorded"
    assert checkpoint["reproducibility"]["status"] == "skipped"
    assert "no embedded icnn spec" in checkpoint["reproducibility"]["detail"]


def test_gaussian_map_checkpoint_reproduces_while_its_samples_exist(icnn, tmp_path):
    shutil.copytree(CONFIGS, tmp_path / "configs")
    out = tmp_path / "ckpt"
    assert (
        icnn("init", "-c", tmp_path / "configs" / "gaussian_map.yaml", "--out", out).exit_code == 0
    )

    present, present_report = verify_json(icnn, out)
    shutil.rmtree(tmp_path / "configs")
    gone, gone_report = verify_json(icnn, out)

    assert present.exit_code == 0, present_report
    assert gone.exit_code == 1
    reproducibility = gone_report["checkpoints"][0]["reproducibility"]
    assert reproducibility["status"] == "skipped"
    assert "missing or has changed" in reproducibility["detail"]
    assert gone_report["checkpoints"][0]["integrity"]["status"] == "ok"


def test_human_output_names_both_checks(icnn, original):
    result = icnn("verify", original)

    assert result.exit_code == 0
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == [f"{original}:", "verified"]
    assert lines[1][:2] == ["integrity", "ok"]
    assert lines[2][:2] == ["reproducibility", "bit-identical"]


def rewrite_spec(checkpoint_dir, change):
    """Edit the embedded spec as someone handing over a hostile checkpoint could."""
    path = checkpoint_dir / "_CHECKPOINT_METADATA"
    metadata = json.loads(path.read_text())
    change(metadata["custom_metadata"]["icnn"])
    path.write_text(json.dumps(metadata))


def test_embedded_config_is_validated_before_it_drives_a_rerun(icnn, original):
    from icnn_cli import load
    from icnn_cli.errors import IcnnError

    rewrite_spec(original, lambda spec: spec["config"]["model"].update(act_fn="os.system"))

    result, report = verify_json(icnn, original)
    with pytest.raises(IcnnError) as raised:
        load(original)

    assert result.exit_code == 1
    reproducibility = report["checkpoints"][0]["reproducibility"]
    assert reproducibility["status"] == "skipped"
    assert "embedded config is invalid: model.act_fn" in reproducibility["detail"]
    assert raised.value.exit_code == 1
    assert "embedded config is invalid: model.act_fn" in raised.value.message


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda spec: spec.update(device="x" * (2 << 20)), "not valid JSON or too large"),
        (lambda spec: spec.update(seed=-5), "embedded icnn spec is damaged: seed"),
        (lambda spec: spec.update(fingerprint="md5:0"), "embedded icnn spec is damaged"),
    ],
    ids=["oversized", "negative seed", "bad fingerprint"],
)
def test_malformed_spec_is_refused_by_every_reader(change, expected, icnn, original):
    rewrite_spec(original, change)

    inspected = icnn("inspect", original)
    verified = icnn("verify", original)

    assert inspected.exit_code == 1
    assert (
        inspected.stderr.startswith(f"icnn: error: {original}: ") and expected in inspected.stderr
    )
    assert verified.exit_code == 1
    assert expected in verified.stderr


def test_rerun_says_when_it_is_not_on_the_recorded_platform(icnn, original):
    rewrite_spec(original, lambda spec: spec.update(device="tpu:0 (TPU v4)"))

    result, report = verify_json(icnn, original)

    reproducibility = report["checkpoints"][0]["reproducibility"]
    # No TPU here: the re-run falls back to the CPU and says so.
    assert reproducibility["status"] == "bit-identical"
    assert "on cpu:0, not the recorded tpu" in reproducibility["detail"]
    assert result.exit_code == 0


@pytest.mark.slow  # 2.7 s of CPU on a warm cache (--cpu-durations)
def test_equal_infinities_are_no_difference_for_verify_as_for_diff():
    import numpy as np

    from icnn_cli.analysis.compare import value_differences
    from icnn_cli.analysis.verify import LeafDifference, _compare_leaf

    stored = np.array([np.inf, -np.inf, 1.0], np.float32)
    rerun = np.array([np.inf, -np.inf, 1.0 + 1e-6], np.float32)

    within = _compare_leaf("w", stored, rerun, atol=1e-4)
    flipped = _compare_leaf("w", stored, -rerun, atol=1e-4)

    assert within == value_differences(stored, rerun)[0] == pytest.approx(1e-6, rel=0.2)
    assert isinstance(flipped, LeafDifference) and flipped.max_abs_diff == np.inf
    assert "has another value" in flipped.describe()
