"""Every fact the text header shows is in `--json` and in `icnn_cli.inspect()`.

The header lines above the tree are worded by the renderer from the summary's typed
fields, so a JSON or Python user loses nothing: each label the text shows is checked
here against the JSON document of the same summary, for every golden checkpoint (icnn's
own layouts and the other Orbax releases'), a dry run and an init.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

import icnn_cli
from icnn_cli.checkpoint.provenance import provenance_of
from icnn_cli.checkpoint.spec import CheckpointSpec, SampleSpec
from icnn_cli.records import Summary
from icnn_cli.units import format_bytes
from tests.helpers import ALL_GOLDEN, FOREIGN, GOLDEN, plain_text, tiny_model
from tests.helpers import FOREIGN_MANIFEST as MANIFEST

FIXTURES = [GOLDEN / name for name in ALL_GOLDEN] + [FOREIGN / name for name in MANIFEST]
LABEL_AND_TEXT = re.compile(r"^(\S+(?: \S+)*) {2,}(.*?)\s*$")


def header_of(text: str) -> dict[str, str]:
    """The ``label  text`` lines above the tree, a wrapped text joined again."""
    facts: dict[str, str] = {}
    label = ""
    for line in text.split("\n\n", 1)[0].splitlines():
        if line.startswith(" "):
            facts[label] += " " + line.strip()
            continue
        match = LABEL_AND_TEXT.match(line)
        assert match, f"not a header line: {line!r}"
        label, value = match.groups()
        assert label not in facts, f"{label} shown twice"
        facts[label] = value
    return facts


def utc(moment: str) -> str:
    return moment.replace("T", " ").replace("Z", " UTC")


def _step(text: str, report: dict[str, Any]) -> None:
    manager = report["checkpoint_manager"]
    latest = " (latest)" if manager["step"] == manager["steps"][-1] else ""
    steps = ", ".join(map(str, manager["steps"]))
    assert text == f"{manager['step']}{latest} of steps {steps}"


def _items(text: str, report: dict[str, Any]) -> None:
    items = report["orbax"]["items"]
    assert text == ", ".join(f"{item['name'] or '(top level)'}: {item['kind']}" for item in items)


def _streams(text: str, report: dict[str, Any]) -> None:
    streams = report["provenance"]["streams"]
    assert text == ", ".join(
        f"{s['name']}={'derive' if s['rule'] == 'derive' else s['seed']}" for s in streams
    )


def _versions(text: str, report: dict[str, Any]) -> None:
    provenance = report["provenance"]
    installed = provenance["installed_versions"]
    assert text == ", ".join(
        f"{package} {version}"
        + (
            f" (installed {installed[package]})"
            if installed.get(package, version) != version
            else ""
        )
        for package, version in provenance["versions"].items()
    )


def _fingerprint(text: str, report: dict[str, Any]) -> None:
    provenance = report["provenance"]
    digits = provenance["fingerprint"].removeprefix("sha256:")
    assert text.split()[0] == digits[:16]
    assert ("(checked" in text) == (provenance["fingerprint_check"] != "not checked")
    assert ("every leaf read" in text) == (provenance["fingerprint_check"] == "checked, filtered")


def _sample(role: str) -> Callable[[str, dict[str, Any]], None]:
    def check(text: str, report: dict[str, Any]) -> None:
        provenance = report["provenance"]
        samples = [*provenance["gaussian_map_samples"], *provenance["init_samples"]]
        (sample,) = [s for s in samples if s["role"] == role]
        assert text == f"sha256 {sample['sha256'][:16]}  {sample['path']}"

    return check


def _equals(value: Callable[[dict[str, Any]], Any]) -> Callable[[str, dict[str, Any]], None]:
    def check(text: str, report: dict[str, Any]) -> None:
        assert text == value(report)

    return check


def _json_of(value: Callable[[dict[str, Any]], Any]) -> Callable[[str, dict[str, Any]], None]:
    def check(text: str, report: dict[str, Any]) -> None:
        assert json.loads(text) == value(report)

    return check


def _figures(key: str, where: str) -> Callable[[str, dict[str, Any]], None]:
    def check(text: str, report: dict[str, Any]) -> None:
        figures = report["resources"]
        assert text.startswith(f"~{format_bytes(figures[key])}") and figures[where] in text

    return check


# Each label the header may show, and how its text follows from the JSON document.
FACTS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "path": _equals(lambda report: report["path"]),
    "manager root": _equals(lambda report: report["checkpoint_manager"]["root"]),
    "step": _step,
    "layout": _equals(lambda report: report["orbax"]["layout"]),
    "items": _items,
    "started": _equals(lambda report: utc(report["orbax"]["started_at"])),
    "custom metadata": _json_of(lambda report: report["orbax"]["custom_metadata"]),
    "metrics": _json_of(lambda report: report["orbax"]["metrics"]),
    "written by": _equals(
        lambda report: "not icnn (no embedded spec)" if report["provenance"] is None else None
    ),
    "written": _equals(lambda report: utc(report["written_at"])),
    "seed": _equals(lambda report: str((report["provenance"] or report["dry_run"])["seed"])),
    "streams": _streams,
    "rng impl": _equals(lambda report: report["provenance"]["rng_impl"]),
    "threefry partitionable": _equals(
        lambda report: "on" if report["provenance"]["threefry_partitionable"] else "off"
    ),
    "versions": _versions,
    "device": _equals(lambda report: (report["provenance"] or report["dry_run"])["device"]),
    "fingerprint": _fingerprint,
    "init recipe": _json_of(lambda report: report["provenance"]["init_recipe"]),
    "source sample": _sample("source"),
    "target sample": _sample("target"),
    "probe sample": _sample("probe"),
    "peak memory": _figures("peak_memory_bytes", "memory_of"),
    "checkpoint": _figures("checkpoint_bytes", "disk_of"),
}


def assert_every_shown_fact_is_in(text: str, report: dict[str, Any]) -> set[str]:
    shown = header_of(text)
    for label, value in shown.items():
        assert label in FACTS, f"the header shows {label!r}, which no JSON field is checked for"
        FACTS[label](value, report)
    return set(shown)


@pytest.mark.parametrize("args", [(), ("--stats",)], ids=["metadata", "stats"])
def test_every_header_line_of_every_golden_checkpoint_is_in_its_json(icnn, args):
    shown: set[str] = set()
    for path in FIXTURES:
        text = icnn("inspect", path, *args)
        report = icnn("inspect", path, *args, "--json")
        assert text.exit_code == report.exit_code == 0, text.stderr
        shown |= assert_every_shown_fact_is_in(text.stdout, json.loads(report.stdout))

    # The walk met the labels of icnn's spec and of Orbax's own metadata alike.
    assert shown >= {"manager root", "custom metadata", "metrics", "versions", "fingerprint"}


def test_gaussian_map_samples_are_in_the_json_whole():
    summary = icnn_cli.inspect(GOLDEN / "icnn_tiny")
    assert summary.provenance is not None
    samples = [
        SampleSpec(role="source", path="s.npy", sha256="ab" * 32, shape=[9, 2]),
        SampleSpec(role="target", path="t.npy", sha256="cd" * 32, shape=[9, 2]),
    ]
    spec = CheckpointSpec.model_validate(summary.spec).model_copy(
        update={"gaussian_map_samples": samples}
    )
    with_samples = Summary(
        path=summary.path,
        leaves=summary.leaves,
        spec=spec.model_dump(mode="json"),
        orbax=summary.orbax,
        provenance=provenance_of(spec),
    )

    shown = assert_every_shown_fact_is_in(
        plain_text(with_samples, width=200), with_samples.as_json()
    )

    assert {"source sample", "target sample"} <= shown
    assert with_samples.as_json()["provenance"]["gaussian_map_samples"][1] == {
        "role": "target",
        "path": "t.npy",
        "sha256": "cd" * 32,
    }


def test_a_dry_run_header_is_in_its_json(icnn, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv("ICNN_TEST_AVAILABLE_MEMORY", str(8 << 30))
    monkeypatch.setenv("ICNN_TEST_FREE_DISK", str(100 << 30))
    config = write_config({"model": tiny_model()})
    args = ("init", "-c", config, "--out", tmp_path / "ckpt", "--seed", 3, "--dry-run")

    text = icnn(*args).stdout
    report = json.loads(icnn(*args, "--json").stdout)

    shown = assert_every_shown_fact_is_in(text, report)
    assert shown == {"path", "seed", "device", "peak memory", "checkpoint"}
    assert report["path"] == f"{tmp_path / 'ckpt'} (dry run: nothing written)"  # as before
    assert report["dry_run"] == {
        "output": str(tmp_path / "ckpt"),
        "seed": 3,
        "device": report["dry_run"]["device"],
    }
    assert report["dry_run"]["device"].startswith("cpu")


def test_init_json_has_the_write_time_and_the_facts_inspect_gives(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"

    written = json.loads(icnn("init", "-c", config, "--out", out, "--json").stdout)
    inspected = json.loads(icnn("inspect", out, "--json").stdout)

    assert written["written_at"] is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", written["written_at"])
    for key in ("written_at", "orbax", "provenance", "spec", "leaves"):
        assert written[key] == inspected[key], key


def test_the_python_api_carries_the_typed_facts():
    manager = icnn_cli.inspect(FOREIGN / "0.12.8/custom_metadata_manager")
    icnn_tiny = icnn_cli.inspect(GOLDEN / "icnn_tiny", stats=True)

    assert manager.manager_step is not None and manager.orbax is not None
    assert (manager.manager_step.step, manager.manager_step.steps) == (5, (0, 5))
    assert manager.manager_step.latest
    assert manager.orbax.layout == "step with items (CheckpointManager / Composite)"
    assert [(item.name, item.kind) for item in manager.orbax.items] == [
        ("meta", "json"),
        ("state", "pytree"),
    ]
    assert manager.orbax.started_at == "2026-11-26T08:45:32Z"
    assert manager.orbax.custom_metadata == {
        "icnn_spec": {"seed": 0, "dim_data": 2},
        "note": "custom metadata",
        "step": 5,
    }
    assert manager.provenance is None and manager.written_at == "2026-11-26T08:45:32Z"

    provenance = icnn_tiny.provenance
    assert provenance is not None and icnn_tiny.spec is not None
    assert (provenance.seed, provenance.rng_impl, provenance.threefry_partitionable) == (
        7,
        "threefry2x32",
        True,
    )
    assert [(stream.name, stream.rule, stream.seed) for stream in provenance.streams] == [
        ("params", "master", 7)
    ]
    assert provenance.fingerprint == icnn_tiny.spec["fingerprint"]
    assert provenance.fingerprint_check == "checked"
    assert provenance.versions == icnn_tiny.spec["versions"]
    assert provenance.device == "cpu:0 (cpu)"


def test_the_v1_metrics_item_is_the_steps_metrics():
    training = icnn_cli.inspect(FOREIGN / "0.12.8/v1_training")

    assert training.orbax is not None
    assert training.orbax.metrics == {"loss": 0.16666666666666666, "accuracy": 0.5}
    assert training.as_json()["orbax"]["metrics"] == training.orbax.metrics
