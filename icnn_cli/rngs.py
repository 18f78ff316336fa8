"""Seed and named streams -> the ``rngs`` argument of ``Module.init``, and their records.

With no ``init.rngs``, the master seed gives one key, passed as is: exactly
``module.init(jax.random.key(seed), x)``, which Flax uses for the ``params``
stream. With ``init.rngs``, each stream gets its own key:

* an integer ``n`` gives ``jax.random.key(n)``;
* ``derive`` gives ``jax.random.fold_in(jax.random.key(seed), crc32(name))``,
  so streams are independent of each other yet fixed by the master seed;
* ``params`` not listed falls back to ``jax.random.key(seed)``;
* the streams of ``init.recipe`` and ``init.overrides`` (``principled``, ``probe``,
  ``override:<path>``), when not listed, are derived; Flax never sees them.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

from icnn_cli.config import DERIVE, InitConfig

PARAMS = "params"


@dataclasses.dataclass(frozen=True)
class StreamRecord:
    """How one stream's key was made, and its raw key data (to re-derive or check it)."""

    name: str
    rule: str  # "master" (key(seed)), "seed" (key(own seed)) or "derive" (fold_in)
    seed: int
    key_data: list[int]


def stream_fold_in_data(name: str) -> int:
    """The 32-bit number folded into the master key for a derived stream."""
    return zlib.crc32(name.encode("utf-8"))


def derive_stream_keys(init: InitConfig) -> tuple[Any, list[StreamRecord]]:
    """The ``rngs`` argument for ``Module.init`` and a record of every stream.

    Returns:
      A single key when ``init.rngs`` is absent (the plain call), otherwise a
      dict mapping stream names to keys; and one :class:`StreamRecord` per stream.
    """
    import jax

    from icnn_cli.recipes import stream_names

    master = jax.random.key(init.seed, impl=init.rng_impl)
    recipe_streams = stream_names(init)
    if init.rngs is None and not recipe_streams:
        return master, [_record(PARAMS, "master", init.seed, master)]

    keys: dict[str, Any] = {}
    records = []
    streams: dict[str, Any] = dict(init.rngs or {})
    streams.setdefault(PARAMS, None)
    for name in recipe_streams:  # the recipe's and overrides' own streams, derived by default
        streams.setdefault(name, DERIVE)
    for name, value in streams.items():
        if value is None:
            key, rule, seed = master, "master", init.seed
        elif isinstance(value, str):  # DERIVE: the one string the config admits
            key = jax.random.fold_in(master, stream_fold_in_data(name))
            rule, seed = DERIVE, init.seed
        else:
            key, rule, seed = jax.random.key(value, impl=init.rng_impl), "seed", value
        keys[name] = key
        records.append(_record(name, rule, seed, key))
    return keys, records


def _record(name: str, rule: str, seed: int, key: Any) -> StreamRecord:
    import jax

    key_data = [int(word) for word in jax.random.key_data(key).ravel().tolist()]
    return StreamRecord(name=name, rule=rule, seed=seed, key_data=key_data)
