"""Ready inverse problems from the mollifier paper's suite, each with a forward simulator and a
known truth.

Every module here follows the contract written down in `mollijax/problems/_base.py`:
`NAME`, `DESCRIPTION`, `ORDER`, `DEFAULTS`, `UNKNOWNS`, `STATE`, `residuals`,
`simulate(*, noise=0.0, seed=0, **params) -> Simulation`, optionally `conditions(sim)` and
`CONFIG` (its default run). Modules are found by scanning this package: a new problem needs
no registration beyond its file.

    >>> from mollijax import problems
    >>> module = problems.get("heat1d")
    >>> sim = module.simulate(noise=0.01, nx=41, nt=41)
    >>> problem, unknowns = problems.build(module, sim)
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import types

from ._base import (
    ProblemSpecError as ProblemSpecError,
    Simulation as Simulation,
    add_noise as add_noise,
    build as build,
    errors as errors,
    observe as observe,
    resolve_params as resolve_params,
)

CONTRACT = ("NAME", "DESCRIPTION", "ORDER", "DEFAULTS", "UNKNOWNS", "STATE", "residuals",
            "simulate")


@functools.cache
def registry() -> dict[str, types.ModuleType]:
    """`{NAME: module}` of every module in this package that follows the contract."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if all(hasattr(module, a) for a in CONTRACT):
            found[module.NAME] = module
    return dict(sorted(found.items()))


def names() -> list[str]:
    """The registry keys of the ready problems."""
    return list(registry())


def get(name: str) -> types.ModuleType:
    """The ready problem module registered as `name`."""
    table = registry()
    if name not in table:
        raise ProblemSpecError(f"Unknown problem {name!r}; ready problems are {sorted(table)}.")
    return table[name]
