"""`icnn verify`: integrity against the recorded fingerprint, reproducibility by re-running init."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orbax.checkpoint as ocp
import pytest

from icnn_cli.fingerprint import fingerprint
from tests.helpers import CONFIGS, flip_bytes, tiny_model

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
    errors = [line for line in result.stderr.splitlines() if line.startswith("icnn: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"icnn: error: {changed}: not verified: reproducibility differs")


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
    from icnn_cli.errors import DamagedCheckpoint, IcnnError

    rewrite_spec(original, lambda spec: spec["config"]["model"].update(act_fn="os.system"))

    result, report = verify_json(icnn, original)
    with pytest.raises(IcnnError) as raised:
        load(original)

    assert result.exit_code == 1
    reproducibility = report["checkpoints"][0]["reproducibility"]
    assert reproducibility["status"] == "skipped"
    assert "embedded config is invalid: model.act_fn" in reproducibility["detail"]
    assert isinstance(raised.value, DamagedCheckpoint)
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


# --- many checkpoints: one prepared init per architecture -------------------------------------


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    """Two sweeps of two architectures, interleaved with a damaged and a changed checkpoint.

    Data files are large enough (hidden 64) that flipped bytes land outside the CRC-checked
    b-tree nodes, so the damage is a fingerprint mismatch, not an unreadable file.
    """
    import yaml
    from typer.testing import CliRunner

    from icnn_cli.cli import app

    base = tmp_path_factory.mktemp("mixed_runs")
    for name, model in (
        ("a", tiny_model(dim_hidden=[64, 64])),
        ("b", tiny_model(dim_hidden=[16], act_fn="softplus")),
    ):
        (base / f"{name}.yaml").write_text(yaml.safe_dump({"model": model}))
        config, out = str(base / f"{name}.yaml"), str(base / name)
        result = CliRunner().invoke(app, ["init", "-c", config, "--seeds", "0:3", "--out", out])
        assert result.exit_code == 0, result.stderr
    damaged = Path(shutil.copytree(base / "a" / "seed-1", base / "damaged"))
    flip_bytes(damaged)
    changed = base / "changed"
    resave_with(base / "a" / "seed-2", changed, lambda kernel: kernel.at[0, 0].add(0.5))
    return [
        base / "a" / "seed-0",
        base / "b" / "seed-0",
        damaged,
        base / "a" / "seed-1",
        changed,
        base / "b" / "seed-2",
        base / "a" / "seed-2",
    ]


@pytest.mark.slow  # with `mixed_runs`, 2.2 s of CPU on a warm cache (--cpu-durations)
def test_many_checkpoints_give_the_reports_of_one_by_one(icnn, mixed_runs, monkeypatch):
    from icnn_cli import pipeline
    from icnn_cli.analysis import verify

    prepared = []
    prepare = pipeline.prepare_init_with_samples

    def counted(config, *rest):
        result = prepare(config, *rest)
        prepared.append((config.model.dim_hidden, result.exported))
        return result

    monkeypatch.setattr(pipeline, "prepare_init_with_samples", counted)

    result, report = verify_json(icnn, *mixed_runs)
    alone = [verify_json(icnn, path)[1]["checkpoints"][0] for path in mixed_runs]
    monkeypatch.setattr(verify, "READ_AHEAD_BYTES", 0)  # none read ahead: each streamed
    streamed = verify_json(icnn, *mixed_runs)[1]

    assert result.exit_code == 1
    assert report["checkpoints"] == alone == streamed["checkpoints"]
    assert [checkpoint["path"] for checkpoint in report["checkpoints"]] == list(
        map(str, mixed_runs)
    )
    assert [
        (checkpoint["integrity"]["status"], checkpoint["reproducibility"]["status"])
        for checkpoint in report["checkpoints"]
    ] == [
        ("ok", "bit-identical"),
        ("ok", "bit-identical"),
        ("damaged", "differs"),
        ("ok", "bit-identical"),
        ("ok", "differs"),
        ("ok", "bit-identical"),
        ("ok", "bit-identical"),
    ]
    # one init per architecture for the seven together, then one for each alone; each the
    # program the sweep exported into the compile cache
    assert prepared[:2] == [([64, 64], "loaded"), ([16], "loaded")]
    assert len(prepared) == 2 + len(mixed_runs) + 2


def test_progress_and_summary_go_to_stderr_and_json_stays_one_document(icnn, mixed_runs):
    result, report = verify_json(icnn, *mixed_runs)

    lines = result.stderr.splitlines()
    progress = [line for line in lines if line.startswith("icnn: [")]
    assert len(progress) == len(mixed_runs)
    assert progress[0] == f"icnn: [1/7] {mixed_runs[0]}: verified"
    # group by group: the first architecture's five, then the other's two
    assert progress[1] == f"icnn: [2/7] {mixed_runs[2]}: not verified"
    assert progress[5] == f"icnn: [6/7] {mixed_runs[1]}: verified"
    assert lines[-1] == (
        "icnn: 7 checkpoints: 5 verified; 6 intact, 1 damaged; 5 reproducible, 2 not reproducible"
    )
    assert report["summary"] == {
        "checkpoints": 7,
        "verified": 5,
        "intact": 6,
        "damaged": 1,
        "reproducible": 5,
        "not_reproducible": 2,
        "not_checked": 0,
    }
    assert report["not_checked"] == []


def test_fail_fast_stops_at_the_first_checkpoint_not_verified(icnn, mixed_runs):
    first, second, damaged = mixed_runs[:3]

    result, report = verify_json(icnn, first, damaged, second, "--fail-fast")

    assert result.exit_code == 1
    checked = [checkpoint["path"] for checkpoint in report["checkpoints"]]
    assert checked == [str(first), str(damaged)]
    assert report["not_checked"] == [str(second)]
    assert not report["ok"]
    assert result.stderr.splitlines()[-1].endswith("1 not checked")


@pytest.mark.slow  # with `mixed_runs`, 2.7 s of CPU on a warm cache (--cpu-durations)
def test_a_bad_path_among_many_is_refused_before_any_rerun(icnn, mixed_runs, tmp_path):
    result = icnn("verify", *mixed_runs, tmp_path / "missing", "--json")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(tmp_path / "missing") in result.stderr
