"""Which experimental setting a training run belongs to, read from its saved resolved config (``config.yaml``).

Runs are grouped by the config keys whose values differ between them (the sweep's axes), never by folder names:
a setting is one combination of values of the varying keys other than the swept stride and the keys that do not
change what is trained (:data:`NOT_A_SETTING`: output folder, process layout, logging).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mgfusion.utils.config_keys import NON_RESULT_KEYS

__all__ = ["ABSENT", "NOT_A_SETTING", "describe", "flatten_config", "format_value", "varying_keys"]

#: config keys that differ between runs without changing what is trained or evaluated (a run folder, resumption,
#: the process layout, logging). They never define a setting (the keys the trainer lets differ when a run is resumed).
NOT_A_SETTING = NON_RESULT_KEYS


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


#: the value of a key that one config has and another lacks.
ABSENT: Any = _Absent()


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, Mapping):  # an empty mapping (non-empty ones are flattened)
        return tuple(sorted((str(k), _hashable(x)) for k, x in v.items()))
    return v


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"backbone.fusion.stride": 16, ...}``: dotted keys of every leaf; lists become tuples (hashable)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, key))
        else:
            out[key] = _hashable(v)
    return out


def varying_keys(configs: Iterable[Mapping[str, Any]], *, exclude: Iterable[str] = ()) -> list[str]:
    """Sorted dotted keys whose value is not the same in every flattened config (a missing key counts as a value).

    ``exclude``: keys to leave out (exact keys, or prefixes ending in ``.``, e.g. ``"runtime."``).
    """
    configs = list(configs)
    skip = set(exclude)
    prefixes = tuple(k for k in skip if k.endswith("."))
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys
            if k not in skip and not k.startswith(prefixes) and len({_key(c.get(k, ABSENT)) for c in configs}) > 1]


def _key(v: Any) -> str:
    return "(absent)" if v is ABSENT else json.dumps(v, sort_keys=True, default=str)


def format_value(v: Any) -> str:
    """A config value as a person reads it: ``true``, ``null``, ``[32,64]``, ``(absent)``."""
    if v is ABSENT:
        return "(absent)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    return str(v)


def describe(values: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """``"backbone.train_master=false, seed=1"`` for the given keys (default: all) of a setting's values."""
    keys = list(values) if keys is None else keys
    return ", ".join(f"{k}={format_value(values.get(k, ABSENT))}" for k in keys) or "(no differences)"
