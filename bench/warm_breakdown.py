"""Where a warm ``icnn init`` spends its time, phase by phase (``bench/run.py`` item 1b).

    python bench/warm_breakdown.py CONFIG OUT export|jit [fill]

Runs the steps of ``icnn init`` (:func:`icnn_cli.pipeline.run_init`) one by one with a
clock between them, against a compile cache that an earlier run filled (set
``ICNN_COMPILE_CACHE_DIR``). ``export`` is today's warm path (the cached ``jax.export``
program); ``jit`` is the path before it: build the OTT module and jit its init, the compiled
program from JAX's persistent cache. Prints one JSON object of seconds per phase. The
imports come first, explicitly, so the later phases hold no import time. ``fill``: a
first run that may find the cache empty (and fills it).
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()

# ruff: noqa: E402 (the clock starts before the imports it measures)
from pathlib import Path

config_path, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
filling = sys.argv[4:] == ["fill"]
phases: dict[str, float] = {}


def lap(name: str) -> None:
    global started
    now = time.perf_counter()
    phases[name] = phases.get(name, 0.0) + now - started
    started = now


import jax  # noqa: F401
import orbax.checkpoint  # noqa: F401

from icnn_cli.cli import app  # noqa: F401  (what the CLI imports before a command runs)
from icnn_cli.compile_cache import configure_compile_cache
from icnn_cli.config import config_directory, load_config
from icnn_cli.pipeline import initialize_seed, prepare_init, write_seed_checkpoint

if mode == "jit":
    import ott.neural.networks.icnn  # noqa: F401
lap("imports")

config = load_config(config_path)
cache = configure_compile_cache(enabled=True)
lap("config")
prepared = prepare_init(
    config, config_directory(config_path), None, cache if mode == "export" else None
)
if not filling:
    assert prepared.exported == ("loaded" if mode == "export" else None), prepared.exported
lap("prepare")
if mode == "export":
    # prepare_init read and deserialized the export, then lowered it and loaded the compiled
    # program from JAX's cache; the first part again on its own, to split the two.
    from icnn_cli import export_cache
    from icnn_cli.checkpoint.spec import installed_versions

    key = export_cache.export_key(cache, config, [], installed_versions(), jax.local_devices()[0])
    _, payload = export_cache._parse_entry(key.path.read_bytes(), key)
    jax.export.deserialize(bytearray(payload))
    deserialize = time.perf_counter() - started
    phases["read + deserialize the export"] = deserialize
    phases["lower + compile-cache load"] = phases.pop("prepare") - deserialize
    started = time.perf_counter()
else:
    phases["build the OTT module"] = phases.pop("prepare")
initialize_seed(prepared, 0)
lap("first call (stream keys, init, fingerprint; before: + trace, lower, compile-cache load)")
variables, spec = initialize_seed(prepared, 0)
lap("second call (stream keys, init, fingerprint)")
write_seed_checkpoint(out, variables, spec, force=True)
lap("save")
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"ott", "flax", "optax"})
print(json.dumps({"phases": phases, "heavy_imports": heavy}))
