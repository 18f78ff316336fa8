"""`icnn init --platform gpu` end to end, parity on the GPU, and GPU timings, in one run.

Run on a machine with an NVIDIA GPU and a CUDA jax (the device machine of this workplace):

    python bench/gpu_check.py OUT_DIR

It writes OUT_DIR/gpu_check.json and prints a summary. What it checks and times:

1. ``icnn init --platform gpu`` of configs/default.yaml and configs/large.yaml in a
   subprocess (exit 0, ``inspect --json`` reads it, ``verify`` reproduces it bit for bit on
   the GPU);
2. parity: the checkpoint against the direct call ``ICNN(...).init(jax.random.key(seed),
   jnp.ones((1, dim_data)))`` jitted on the same GPU (expected: bit for bit), and against the
   same call on the CPU (kernels differ between backends: the largest absolute difference
   is recorded, not asserted);
3. timings, side by side in this one run: icnn init cold and warm (compile cache in a fresh
   directory) against bench/plain_init.py, the plain hand-written script, both on the GPU;
   a 64-seed ``--seeds`` sweep; the large config on GPU against CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ICNN = [sys.executable, "-m", "icnn_cli"]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env})
    return time.perf_counter() - start, done


def icnn_init(
    config: Path, platform: str, out: Path, env: dict[str, str], *extra: str
) -> tuple[float, subprocess.CompletedProcess]:
    """``icnn init -c CONFIG --platform PLATFORM --out OUT [EXTRA]``, timed."""
    argv = [*ICNN, "init", "-c", str(config), "--platform", platform, "--out", str(out)]
    return timed([*argv, *extra], env)


def must(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def parity(checkpoint: Path, config_path: Path) -> dict[str, object]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp
    import yaml
    from ott.neural.networks.icnn import ICNN

    config = yaml.safe_load(config_path.read_text())
    model = config["model"]
    seed = config.get("init", {}).get("seed", 0)
    with ocp.StandardCheckpointer() as checkpointer:
        stored = checkpointer.restore(checkpoint.absolute())
    result: dict[str, object] = {}
    for platform in ("gpu", "cpu"):
        device = jax.devices(platform)[0]
        with jax.default_device(device):
            module = ICNN(**model)
            direct = jax.jit(module.init)(jax.random.key(seed), jnp.ones((1, model["dim_data"])))
        pairs = zip(
            jax.tree.leaves(jax.device_get(stored)),
            jax.tree.leaves(jax.device_get(direct)),
            strict=True,
        )
        identical, largest = True, 0.0
        for a, b in pairs:
            a, b = np.asarray(a), np.asarray(b)
            identical &= a.tobytes() == b.tobytes()
            largest = max(largest, float(np.max(np.abs(a - b))) if a.size else 0.0)
        result[f"vs_direct_{platform}"] = {"bit_identical": identical, "max_abs_diff": largest}
    return result


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    import jax

    report: dict[str, object] = {
        "jax": jax.__version__,
        "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()],
    }
    default = ROOT / "configs/default.yaml"
    large = ROOT / "configs/large.yaml"
    cache = {"ICNN_COMPILE_CACHE_DIR": str(work / "cache")}

    # 1. end to end on the GPU
    ckpt = work / "gpu-default"
    cold, done = icnn_init(default, "gpu", ckpt, {**env, **cache}, "--json")
    init_json = json.loads(must(done, "icnn init --platform gpu").stdout)
    warm, _ = icnn_init(default, "gpu", work / "gpu-default-2", {**env, **cache}, "--json")
    inspected = json.loads(
        must(timed([*ICNN, "inspect", str(ckpt), "--json"], env)[1], "icnn inspect").stdout
    )
    verify_seconds, verified = timed([*ICNN, "verify", str(ckpt), "--json"], {**env, **cache})
    report["end_to_end"] = {
        "device_recorded": init_json["spec"]["device"],
        "inspect_leaves": len(inspected["leaves"]),
        "verify_exit": verified.returncode,
        "verify": json.loads(verified.stdout) if verified.stdout else verified.stderr[-500:],
        "verify_seconds": verify_seconds,
    }
    report["parity_default"] = parity(ckpt, default)

    # 2b. the init recipes on the GPU: deep ICNN with pos_weights, each recipe verified there
    recipes = {}
    for name in ("principled", "data-dependent"):
        config = work / f"{name}.yaml"
        config.write_text(
            "model: {dim_data: 2, dim_hidden: [256, 256, 256, 256, 256, 256], pos_weights: true}\n"
            f"init: {{recipe: {{name: {name}}}}}\n"
        )
        out = work / f"recipe-{name}"
        seconds, done = icnn_init(config, "gpu", out, {**env, **cache}, "--json")
        must(done, f"icnn init recipe {name}")
        checked = timed([*ICNN, "verify", str(out), "--json"], {**env, **cache})[1]
        health = timed([*ICNN, "inspect", str(out), "--health", "--json"], env)[1]
        recipes[name] = {
            "init_seconds": seconds,
            "verify": json.loads(checked.stdout)["checkpoints"][0]["reproducibility"]
            if checked.stdout
            else checked.stderr[-500:],
            "health_verdict": json.loads(health.stdout)["health"].get("verdict")
            if health.stdout
            else health.stderr[-500:],
        }
    report["recipes"] = recipes

    # 3. timings side by side: plain script vs icnn, both on the GPU
    plain_times, icnn_cold, icnn_warm = [], [cold], [warm]
    for index in range(3):
        seconds, done = timed(
            [
                sys.executable,
                str(ROOT / "bench/plain_init.py"),
                str(work / f"plain-{index}"),
                "--dim-hidden",
                "64,64",
            ],
            {**env, "JAX_PLATFORMS": "cuda"},
        )
        must(done, "plain_init.py")
        plain_times.append(seconds)
        fresh = {"ICNN_COMPILE_CACHE_DIR": str(work / f"cold-cache-{index}")}
        seconds, done = icnn_init(default, "gpu", work / f"cold-{index}", {**env, **fresh})
        icnn_cold.append(seconds)
        seconds, done = icnn_init(default, "gpu", work / f"warm-{index}", {**env, **cache})
        icnn_warm.append(seconds)
    sweep_seconds, done = icnn_init(
        default, "gpu", work / "sweep", {**env, **cache}, "--seeds", "0:64"
    )
    must(done, "sweep")
    large_gpu, done = icnn_init(large, "gpu", work / "large-gpu", {**env, **cache}, "--json")
    must(done, "large gpu")
    large_cpu, done = icnn_init(large, "cpu", work / "large-cpu", {**env, **cache}, "--json")
    must(done, "large cpu")
    report["parity_large"] = parity(work / "large-gpu", large)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    report["timings_seconds"] = {
        "plain_script_median": median(plain_times),
        "icnn_cold_median": median(icnn_cold),
        "icnn_warm_median": median(icnn_warm),
        "sweep_64_seeds": sweep_seconds,
        "large_gpu": large_gpu,
        "large_cpu": large_cpu,
        "all": {"plain": plain_times, "cold": icnn_cold, "warm": icnn_warm},
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
