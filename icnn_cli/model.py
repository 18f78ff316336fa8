"""Config -> ``ott.neural.networks.icnn.ICNN``: the only module that knows OTT.

Everything OTT-specific (the import, the field names, the Gaussian-map samples)
lives here, so a later Flax NNX model is a new module beside this one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Literal

from icnn_cli import registry
from icnn_cli.config import ModelConfig
from icnn_cli.errors import IcnnError

MIN_SAMPLES = 2  # a covariance needs at least two points
NPY_MAGIC = b"\x93NUMPY"  # first bytes of every .npy file (numpy.lib.format)


@dataclasses.dataclass(frozen=True)
class SampleFile:
    """A sample file as loaded (Gaussian-map source/target, or a recipe's probe points):
    where it is, its digest and shape."""

    role: Literal["source", "target", "probe"]
    path: Path
    sha256: str
    shape: tuple[int, ...]


def load_sample_file(
    path: Path,
    role: Literal["source", "target", "probe"],
    dim_data: int,
    field: str | None = None,
) -> tuple[Any, SampleFile]:
    """Load one ``.npy`` sample array, refusing anything but finite 2-D float data.

    Args:
      field: the config key that named the file, for messages; default
        ``model.gaussian_map_samples.<role>``.
    """
    import numpy as np

    field = field or f"model.gaussian_map_samples.{role}"
    if not path.is_file():
        problem = "not found" if not path.exists() else "not a regular file"
        raise IcnnError(f"{path}: {field}: sample file {problem}")
    raw = path.read_bytes()
    if not raw.startswith(NPY_MAGIC):
        # np.load falls back to unpickling anything that is not .npy/.npz, so a
        # text or CSV file would be reported as "pickled data": say what it is.
        raise IcnnError(f"{path}: {field}: not a .npy file (write it with numpy.save)")
    try:
        import io

        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise IcnnError(
                f"{path}: {field}: holds pickled Python objects, which are refused; save a plain "
                "float array with numpy.save"
            ) from None
        raise IcnnError(f"{path}: {field}: not a .npy array ({error})") from None
    except (OSError, EOFError) as error:
        raise IcnnError(f"{path}: {field}: not a .npy array ({error})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise IcnnError(
            f"{path}: {field}: expected a 2-D array [n, {dim_data}], got shape "
            f"{getattr(array, 'shape', None)}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise IcnnError(f"{path}: {field}: expected a float array, got dtype {array.dtype}")
    if array.shape[1] != dim_data:
        raise IcnnError(
            f"{path}: {field}: has {array.shape[1]} features per point, "
            f"but model.dim_data is {dim_data}"
        )
    if array.shape[0] < MIN_SAMPLES:
        raise IcnnError(
            f"{path}: {field}: needs at least {MIN_SAMPLES} points for a covariance, "
            f"got {array.shape[0]}"
        )
    if not np.all(np.isfinite(array)):
        raise IcnnError(f"{path}: {field}: contains NaN or inf")
    record = SampleFile(role, path.resolve(), hashlib.sha256(raw).hexdigest(), array.shape)
    return array, record


def load_gaussian_map_samples(
    model: ModelConfig, base_dir: Path
) -> tuple[tuple[Any, Any] | None, list[SampleFile]]:
    """Load the source/target arrays named in the config, paths relative to ``base_dir``."""
    if model.gaussian_map_samples is None:
        return None, []
    arrays, records = [], []
    for role in ("source", "target"):
        path = base_dir / getattr(model.gaussian_map_samples, role)
        array, record = load_sample_file(path, role, model.dim_data)
        arrays.append(array)
        records.append(record)
    return (arrays[0], arrays[1]), records


def build_icnn(model: ModelConfig, gaussian_map_samples: tuple[Any, Any] | None = None) -> Any:
    """The OTT ICNN for a validated config; fields the YAML leaves out are not passed."""
    import jax.numpy as jnp
    from ott.neural.networks.icnn import ICNN

    fields: dict[str, Any] = {}
    for name, value in model.icnn_fields().items():
        if name in ("act_fn", "rectifier_fn"):
            value = registry.resolve_activation(value["name"], _arguments(value))
        elif name == "init_fn":
            value = registry.resolve_initializer(value["name"], _arguments(value))
        elif name == "dim_hidden":
            value = list(value)
        elif name == "ranks" and isinstance(value, list):
            value = tuple(value)
        elif name == "gaussian_map_samples":
            if gaussian_map_samples is None:
                raise ValueError("gaussian_map_samples is configured but no arrays were given")
            value = tuple(jnp.asarray(array) for array in gaussian_map_samples)
        fields[name] = value
    return ICNN(**fields)


def check_method(module: Any, method: str | None) -> None:
    """Refuse an ``init.method`` that the module does not have."""
    if method is not None and not callable(getattr(type(module), method, None)):
        raise IcnnError(f"init.method: {type(module).__name__} has no method '{method}'")


def _arguments(spec: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if key != "name"}


# --- what OTT's parameters mean for convexity -------------------------------------------
#
# ott.neural.networks.icnn.ICNN (0.6.0) computes
#   z_0 = act(w_xs_0(x)),  z_k = act(w_zs_{k-1}(z_{k-1}) + w_xs_k(x)),  f = z_L + pos_def(x)
# where each w_xs_k / pos_def is a PosDefPotentials layer: 0.5 x^T (A A^T + diag(d)) x + b^T x + c
# with d = rectifier(diag_kernel). f is convex in x when act is convex and non-decreasing, every
# effective w_zs weight is >= 0, and every d >= 0 (A A^T is PSD by construction).

OTT_DEFAULT_ACTIVATION = "relu"  # ICNN.act_fn's default
OTT_DEFAULT_RECTIFIER = "relu"  # ICNN.rectifier_fn's default
# OTT hard-codes the diagonal rectifiers: jax.nn.softplus in ICNN._get_wx, and
# PosDefPotentials' default (relu) for the final potential.
WX_DIAG_RECTIFIER = "softplus"
POTENTIAL_DIAG_RECTIFIER = "relu"

WEIGHT_ROLE = "w_zs weights"  # must be >= 0 as used
DIAGONAL_ROLE = "quadratic diagonal"  # must be >= 0 after its rectifier
LOW_RANK_ROLE = "low-rank factor"  # enters as A A^T: PSD whatever its sign
AFFINE_ROLE = "affine"  # linear terms and biases: any sign keeps convexity


@dataclasses.dataclass(frozen=True)
class EffectiveParameter:
    """One parameter leaf as the forward pass uses it.

    ``values`` is the array after the rectifier the module applies (``transform``),
    or the raw array when none applies. ``must_be_non_negative`` marks the leaves
    whose sign decides convexity: the ``w_zs`` kernels and the quadratic diagonals.
    """

    path: tuple[str, ...]
    transform: str | None
    values: Any
    must_be_non_negative: bool
    role: str

    @property
    def path_string(self) -> str:
        return "/".join(self.path)

    @property
    def expression(self) -> str:
        name = self.path[-1]
        return f"{self.transform}({name})" if self.transform else name


def activation_name(model: ModelConfig) -> str:
    return model.act_fn["name"] if model.act_fn else OTT_DEFAULT_ACTIVATION


def activation_problem(model: ModelConfig) -> str | None:
    """Why ``act_fn`` breaks convexity, or ``None`` when it is convex and non-decreasing."""
    spec = model.act_fn or {"name": OTT_DEFAULT_ACTIVATION}
    try:
        registry.check_activation(spec["name"], _arguments(spec), "act_fn")
    except ValueError as error:
        return str(error)
    return None


def _rectifier(name: str, arguments: dict[str, Any]) -> Any:
    return registry.resolve_activation(name, arguments)


def effective_parameters(model: ModelConfig, params: Any) -> list[EffectiveParameter]:
    """Every leaf of ``params`` (the ``'params'`` collection), as the forward pass sees it."""
    import numpy as np

    from icnn_cli.tree_paths import flatten_with_paths

    rectifier_spec = model.rectifier_fn or {"name": OTT_DEFAULT_RECTIFIER}
    parameters = []
    for parts, leaf in flatten_with_paths(params):
        name = parts[-1]
        layer = parts[-2] if len(parts) > 1 else ""
        values = np.asarray(leaf, dtype=np.float32)
        transform, constrained, role = None, False, AFFINE_ROLE
        if layer.startswith("w_zs_") and name == "kernel":
            constrained, role = True, WEIGHT_ROLE
            if model.pos_weights:
                transform = rectifier_spec["name"]
                values = _rectifier(transform, _arguments(rectifier_spec))(values)
        elif name == "diag_kernel":
            constrained, role = True, DIAGONAL_ROLE
            transform = WX_DIAG_RECTIFIER if layer.startswith("w_xs_") else POTENTIAL_DIAG_RECTIFIER
            values = _rectifier(transform, {})(values)
        elif name == "quad_kernel":
            role = LOW_RANK_ROLE
        parameters.append(
            EffectiveParameter(parts, transform, np.asarray(values), constrained, role)
        )
    return parameters


@dataclasses.dataclass(frozen=True)
class LayerLeaves:
    """The parameter leaves of one ICNN layer's pre-activation, by their role.

    Layer ``k``'s pre-activation is ``w_zs_{k-1}(z) + w_xs_k(x)`` (layer 0: ``w_xs_0(x)``),
    with ``w_xs_k(x) = 0.5 x^T (A A^T + diag(softplus(d))) x + lin^T x + bias``. Shapes:
    ``weights`` ``[fan_in, units]`` (used through ``weight_rectifier`` when it is set),
    ``diagonal`` and ``linear`` ``[dim_data, units]``, ``low_rank`` ``[units, dim_data, rank]``
    (absent at rank 0), ``bias`` ``[units]``.
    """

    index: int
    weights: tuple[str, ...] | None
    diagonal: tuple[str, ...]
    low_rank: tuple[str, ...]
    linear: tuple[str, ...]
    bias: tuple[str, ...]
    weight_rectifier: Any = None  # the module's rectifier_fn when pos_weights, else None


def icnn_layers(module: Any) -> list[LayerLeaves]:
    """One :class:`LayerLeaves` per layer of OTT's ICNN, the output layer last."""
    rectifier = module.rectifier_fn if module.pos_weights else None
    layers = []
    for index in range(len(module.dim_hidden) + 1):
        potential = ("params", f"w_xs_{index}")
        layers.append(
            LayerLeaves(
                index=index,
                weights=("params", f"w_zs_{index - 1}", "kernel") if index else None,
                diagonal=(*potential, "diag_kernel"),
                low_rank=(*potential, "quad_kernel"),
                linear=(*potential, "lin_kernel"),
                bias=(*potential, "bias"),
                weight_rectifier=rectifier,
            )
        )
    return layers


def diagonal_rectifier() -> Any:
    """What OTT's ``ICNN._get_wx`` applies to every ``w_xs_k/diag_kernel``."""
    import jax

    return jax.nn.softplus


def pre_activations(module: Any, variables: Any, points: Any) -> list[Any]:
    """Each layer's pre-activation ``[n, units]`` at ``points``, the output layer last.

    OTT applies ``act_fn`` inline in ``ICNN.__call__``, so these are rebuilt from the
    Dense / PosDefPotentials outputs that ``capture_intermediates`` records.
    """
    _, captured = module.apply(
        variables, points, capture_intermediates=True, mutable=["intermediates"]
    )

    def output(name: str) -> Any:
        return captured["intermediates"][name]["__call__"][0]

    count = len(module.dim_hidden) + 1
    layers = [output("w_xs_0")]
    for index in range(1, count):
        layers.append(output(f"w_zs_{index - 1}") + output(f"w_xs_{index}"))
    return layers


def layer_outputs(
    module: Any, variables: Any, points: Any
) -> tuple[Any, list[tuple[str, str, Any]]]:
    """``f(points)`` and ``(name, formula, activations [n, units])`` per layer of the ICNN.

    OTT applies ``act_fn`` inline in ``ICNN.__call__``, so ``capture_intermediates``
    records only the Dense / PosDefPotentials outputs; the activations are rebuilt
    from those with the module's own ``act_fn``. Jitted because a Gaussian-map
    ICNN's ``setup`` recomputes the Bures map (matrix square roots) on every call.
    """
    import functools

    import jax

    apply = functools.partial(module.apply, capture_intermediates=True, mutable=["intermediates"])
    values, state = jax.jit(apply)(variables, points)
    captured = state["intermediates"]

    def output(name: str) -> Any:
        return captured[name]["__call__"][0]

    count = len(module.dim_hidden) + 1
    layers = [("hidden 0", "act(w_xs_0(x))", module.act_fn(output("w_xs_0")))]
    for index in range(1, count):
        name = "output" if index == count - 1 else f"hidden {index}"
        formula = f"act(w_zs_{index - 1}(z) + w_xs_{index}(x))"
        pre_activation = output(f"w_zs_{index - 1}") + output(f"w_xs_{index}")
        layers.append((name, formula, module.act_fn(pre_activation)))
    return values, layers


def bures_map(source: Any, target: Any) -> tuple[Any, Any]:
    """``(M, b)`` of the Gaussian (Bures) map ``x -> M x + b`` between the samples' fits.

    The same map OTT's ``PosDefPotentials.init_from_samples`` builds the
    Gaussian-map init from, so a fresh checkpoint's ``grad f`` starts near it.
    """
    import jax
    import jax.numpy as jnp
    from ott.tools.gaussian_mixture.gaussian import Gaussian

    # jitted: OTT's matrix square roots run op by op (seconds on CPU) otherwise
    @jax.jit
    def fit(source: Any, target: Any) -> tuple[Any, Any]:
        source_fit = Gaussian.from_samples(source)
        target_fit = Gaussian.from_samples(target)
        matrix = source_fit.scale.gaussian_map(target_fit.scale)
        return matrix, jnp.squeeze(target_fit.loc) - matrix @ jnp.squeeze(source_fit.loc)

    return fit(jnp.asarray(source, jnp.float32), jnp.asarray(target, jnp.float32))
