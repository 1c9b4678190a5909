"""Helpers shared by the shipped problems: parameter checking and observation noise.

Public API only. A problem file of your own does not need this module: it is a convenience
of the files in this folder (imported as `from ._common import ...`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

import mollijax as mj


class ProblemSpecError(mj.MollijaxError):
    """A shipped problem was given a parameter it does not know, or a bad value."""


def _kind(default) -> str | None:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, numbers.Integral):
        return "int"
    if isinstance(default, numbers.Real):
        return "float"
    if isinstance(default, str):
        return "str"
    return None


def resolve_params(name: str, defaults: Mapping[str, object], params: Mapping[str, object]) -> dict:
    """`defaults` updated with `params`, each of the default's type.

    An unknown parameter, or a value of another type than its default (`nx = 41.5` where the
    default is an integer, a number where it is a string), is a `ProblemSpecError` naming the
    problem and the parameter. An integer is accepted for a float parameter. A string
    parameter (a named truth variant) may also be given a Python callable.
    """
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ProblemSpecError(
            f"Problem {name!r} has no simulation parameter(s) {unknown}; expected some of "
            f"{sorted(defaults)}."
        )
    out = dict(defaults)
    for key, value in params.items():
        kind = _kind(defaults[key])
        ok = {
            "bool": isinstance(value, bool),
            "int": isinstance(value, numbers.Integral) and not isinstance(value, bool),
            "float": isinstance(value, numbers.Real) and not isinstance(value, bool),
            "str": isinstance(value, str) or callable(value),
            None: True,
        }[kind]
        if not ok:
            raise ProblemSpecError(
                f"Problem {name!r}: parameter `{key}` must be a{'n' if kind == 'int' else ''} "
                f"{kind} like its default {defaults[key]!r}, got {value!r}."
            )
        if kind == "float":
            value = float(value)
            if not math.isfinite(value):
                raise ProblemSpecError(f"Problem {name!r}: parameter `{key}` must be finite.")
        out[key] = value
    return out


def pick_variant(name: str, param: str, value, table: Mapping[str, object]):
    """`table[value]` for a named truth variant; a callable `value` passes through."""
    if callable(value):
        return value
    if value not in table:
        raise ProblemSpecError(
            f"Problem {name!r}: `{param}` must be one of {sorted(table)}, got {value!r}."
        )
    return table[value]


def require(condition: bool, name: str, message: str) -> None:
    """A `ProblemSpecError` `"<name> needs <message>"` unless `condition` holds."""
    if not condition:
        raise ProblemSpecError(f"{name} needs {message}.")


def add_noise(clean: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """`clean + noise * std(clean) * N(0, 1)`: Gaussian noise of relative level `noise`."""
    if (
        isinstance(noise, bool)
        or not isinstance(noise, numbers.Real)
        or not (math.isfinite(noise) and noise >= 0)
    ):
        raise ProblemSpecError(f"`noise` must be a non-negative number, got {noise!r}.")
    clean = np.asarray(clean, dtype=np.float64)
    if noise == 0:
        return clean.copy()
    return clean + noise * clean.std() * rng.standard_normal(clean.shape)


def observe(clean: Mapping[str, np.ndarray], noise: float, seed: int) -> dict[str, np.ndarray]:
    """Noisy copies of every clean field, one seeded generator for all (in key order)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ProblemSpecError(f"`seed` must be an integer >= 0, got {seed!r}.")
    rng = np.random.default_rng(seed)
    return {k: add_noise(v, noise, rng) for k, v in clean.items()}
