"""From a problem file, a data set and typed run options to `(Problem, unknowns)` for `fit`.

The options are the typed tables of a run configuration (`mollijax.config`: `derivatives`,
`unknowns`, `state`, `regularisers`, `weights`, `optimiser.seed`), already validated; every
name in them (kernel, boundary, derivative method, network, regulariser) is turned into an
object through the one table of names, `mollijax._names`. Nothing here names a ready problem:
the problem comes in as a module that follows the contract of `mollijax._problem_files`.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping

import jax
import numpy as np

from ._dataset import Dataset
from ._differentiators import FiniteDifference
from ._eps import estimate_noise, suggest_eps
from ._errors import MollijaxError
from ._evolution import Evolution
from ._fields import AbstractField, Constant, GridField, NetworkField, as_constraint
from ._grid import Grid
from ._names import from_name
from ._problem import Problem
from ._problem_files import problem_name
from ._terms import Regulariser
from .config import UnknownConfig

GRID_REPRESENTATIONS = ("grid", "constant")  # besides the networks of the table of names
NETWORK_OPTIONS = ("width", "depth", "features", "scale", "blocks")


class BuildError(MollijaxError):
    """Run options that do not fit the problem or the data (known only once both are)."""


def auto_eps(grid: Grid, order: int, data: Mapping[str, np.ndarray]) -> tuple[float, ...]:
    """Per-axis kernel half-widths from `suggest_eps` and the noise of the data.

    `suggest_eps(grid, order, noise)` gives a width for the shortest axis of length `L`; each
    axis `a` gets the same fraction of its own length `L_a = n_a h_a`, and never fewer than
    `order // 2 + 3` of its own steps `h_a` (which is all it gets when the suggestion sits at
    `suggest_eps`'s floor, e.g. for clean data: that floor is set by the coarsest axis).
    """
    noise = max((estimate_noise(v) for v in data.values()), default=0.0)
    eps = suggest_eps(grid, order, noise)
    floors = [(order // 2 + 3) * h for h in grid.spacing]
    if eps <= max(floors) * (1 + 1e-12):
        return tuple(floors)
    lengths = [n * h for n, h in zip(grid.shape, grid.spacing, strict=True)]
    base = min(lengths)
    return tuple(max(eps * length / base, f) for length, f in zip(lengths, floors, strict=True))


def _network_options(options) -> dict:
    return {
        k: getattr(options, k) for k in NETWORK_OPTIONS if getattr(options, k, None) is not None
    }


def _network(kind: str, in_size: int, key, options, where: str):
    try:
        return from_name("network", kind, in_size, key=key, **_network_options(options))
    except TypeError as e:  # an option the network does not take
        raise BuildError(f"{where}: network {kind!r} does not take these options: {e}") from None


def make_unknown(
    name: str, options, hint: Mapping, grid: Grid, pointwise: bool, key
) -> AbstractField:
    """One unknown field from its typed `options` (`UnknownConfig`) over the problem's `hint`.

    A field left unset in `options` (None) takes the hint's value; the representation
    defaults to `"constant"` for an unknown without axes, `"grid"` with grid derivatives and
    `"mlp"` with pointwise (autodiff, taylor) ones.
    """
    where = f"[unknowns.{name}]"
    axes = tuple(options.axes if options.axes is not None else hint.get("axes", ()))
    rep = options.representation or ("constant" if not axes else ("mlp" if pointwise else "grid"))
    constraint = (
        options.constraint if options.constraint is not None else hint.get("constraint", "free")
    )
    if not isinstance(constraint, str):
        constraint = tuple(constraint)
    constraint = as_constraint(constraint)
    init = options.init if options.init is not None else hint.get("init")
    if init is None:
        init = {"free": 0.0, "positive": 1.0, "negative": -1.0}.get(
            constraint.kind, 0.5 * (constraint.lower + constraint.upper)
        )
    if not axes:
        if rep not in GRID_REPRESENTATIONS:
            raise BuildError(f"{where}: {name!r} has no axes: use 'constant', not {rep!r}.")
        return Constant(float(init), constraint)
    if rep == "constant":
        raise BuildError(f"{where}: {name!r} depends on axes {axes}; 'constant' would drop them.")
    for a in axes:
        if a not in grid.axes:
            raise BuildError(f"{where}: axis {a!r} is not an axis of the data's grid {grid.axes}.")
    if rep == "grid":
        if pointwise:
            raise BuildError(
                f"{where}: a 'grid' representation cannot be differentiated pointwise; use a "
                "network, or grid derivatives (mollifier, finite_difference, spectral)."
            )
        shape = tuple(grid.shape[grid.axis_index(a)] for a in axes)
        return GridField(np.full(shape, float(init)), axes, constraint)
    net = _network(rep, len(axes), key, options, where)
    scale = 1.0 if getattr(options, "output_scale", None) is None else float(options.output_scale)
    return NetworkField(net, axes, constraint, init=float(init), scale=scale)


def _coefficients(module, unknowns: Mapping, grid: Grid, pointwise: bool, keys, default):
    extra = sorted(set(unknowns) - set(module.UNKNOWNS))
    if extra:
        raise BuildError(
            f"Problem {problem_name(module)!r} has no unknown(s) {extra}; its unknowns are "
            f"{sorted(module.UNKNOWNS)}."
        )
    return {
        name: make_unknown(name, unknowns.get(name, default), hint, grid, pointwise, k)
        for k, (name, hint) in zip(keys, module.UNKNOWNS.items(), strict=False)
    }


def _differentiator(options, grid: Grid, order: int, data):
    method = options.method
    boundary = options.boundary if isinstance(options.boundary, str) else tuple(options.boundary)
    if method == "mollifier":
        eps = options.eps
        if eps == "auto":
            eps = auto_eps(grid, order, data)
        elif not isinstance(eps, int | float):
            eps = tuple(float(e) for e in eps)
            if len(eps) != grid.ndim:
                raise BuildError(
                    f"[derivatives] eps gives {len(eps)} widths; the grid has {grid.ndim} axes "
                    f"{grid.axes}: give one per axis or a single number."
                )
        kernel = from_name("kernel", options.kernel)
        return from_name("derivatives", method, grid, eps, kernel=kernel, boundary=boundary)
    if method == "finite_difference":
        return from_name("derivatives", method, grid, boundary=boundary)
    return from_name("derivatives", method, grid)


def _regularisers(spec: Mapping[str, Mapping[str, float]]) -> list:
    return [
        (Regulariser(u, kind), float(w)) for u, kinds in spec.items() for kind, w in kinds.items()
    ]


def _residuals(module) -> dict:
    res = module.residuals
    return {"pde": res} if callable(res) else dict(res)


def _conditions(module, dataset: Dataset, fields) -> list:
    if not hasattr(module, "conditions"):
        return []
    return [c for c in module.conditions(dataset) if c.field in fields]


def build(
    module: types.ModuleType, dataset: Dataset, options
) -> tuple[Problem, dict[str, AbstractField]]:
    """The inverse `Problem` of a problem file on `dataset`, and its initial unknowns.

    **Arguments:**

    - `module`: a problem file (`load_problem`); `dataset`: its data (simulated or read).
    - `options`: a parsed run configuration (`mollijax.config.Config`), of which `derivatives`
      (method, kernel, eps, boundary), `unknowns` (per-unknown representation, constraint,
      init, axes, network options over the file's `UNKNOWNS` hints), `state` (how the observed
      fields enter the residuals: `"data"`, a network fitted to the data, or `"evolve"`),
      `regularisers`, `weights` and `optimiser.seed` (network initialisation) are used.

    **Returns:** `(problem, unknowns)`, ready for `fit(problem, unknowns, ...)`.
    """
    grid = dataset.grid
    key = jax.random.PRNGKey(options.optimiser.seed)
    method = options.derivatives.method
    pointwise = method in ("autodiff", "taylor")
    state = options.state
    default = UnknownConfig()
    if state.representation == "evolve":
        return _build_evolution(module, dataset, options, pointwise, key, default)
    if pointwise and state.representation == "data":
        raise BuildError(
            f"[derivatives] method {method!r} differentiates fields pointwise: the observed "
            f"fields {tuple(module.STATE)} need a network [state] representation, not 'data'."
        )
    keys = jax.random.split(key, len(module.UNKNOWNS) + len(module.STATE))
    fields = _coefficients(module, options.unknowns, grid, pointwise, keys, default)
    if state.representation != "data":
        for k, name in zip(keys[len(module.UNKNOWNS) :], module.STATE, strict=True):
            net = _network(state.representation, grid.ndim, k, state, "[state]")
            fields[name] = NetworkField(net, grid.axes)
    problem = Problem(
        grid,
        _residuals(module),
        data=dataset.data,
        masks=dataset.masks or None,
        known=dataset.known,
        conditions=_conditions(module, dataset, fields),
        regularisers=_regularisers(options.regularisers),
        weights=options.weights or None,
        derivatives=_differentiator(options.derivatives, grid, module.ORDER, dataset.data),
    )
    return problem, fields


@functools.cache
def _finite_differences(accuracy: int):
    """One factory per order, so that fits of rebuilt problems reuse compiled code."""

    def make(grid: Grid) -> FiniteDifference:
        return FiniteDifference(grid, accuracy=accuracy)

    return make


def _build_evolution(module, dataset, options, pointwise, key, default):
    grid = dataset.grid
    name = problem_name(module)
    if not hasattr(module, "EVOLUTION"):
        raise BuildError(
            f"Problem {name!r} has no evolution form u_t = F(u) (`EVOLUTION`); use a [state] "
            "representation other than 'evolve'."
        )
    if pointwise:
        raise BuildError(
            "The 'evolve' state exists only on the grid; use [derivatives] method "
            "'mollifier' or 'finite_difference', not pointwise ones."
        )
    if "t" not in grid.axes:
        raise BuildError(f"The 'evolve' state needs a time axis 't'; the grid has {grid.axes}.")
    state = options.state
    accuracy = 4 if state.accuracy is None else state.accuracy
    keys = jax.random.split(key, len(module.UNKNOWNS))
    fields = _coefficients(module, options.unknowns, grid, False, keys, default)
    t = grid.axis_index("t")
    space_axes = tuple(a for a in grid.axes if a != "t")
    for field in module.EVOLUTION:
        first = np.take(np.asarray(dataset.data[field], dtype=np.float64), 0, axis=t)
        first = np.where(np.take(dataset.mask(field), 0, axis=t), first, 0.0)
        fields[field] = GridField(first, space_axes)
    evolution = Evolution(
        dict(module.EVOLUTION),
        time="t",
        substeps=state.substeps,
        derivatives=_finite_differences(accuracy),
    )
    problem = Problem(
        grid,
        None,
        data=dataset.data,
        masks=dataset.masks or None,
        known=dataset.known,
        conditions=_conditions(module, dataset, fields),
        regularisers=_regularisers(options.regularisers),
        weights=options.weights or None,
        evolution=evolution,
    )
    return problem, fields


def initial_values(fields: Mapping[str, AbstractField], grid: Grid) -> dict[str, np.ndarray]:
    """Each unknown on its own sub-grid, as NumPy (the starting guess, for reporting)."""
    return {k: np.asarray(f.on_subgrid(grid)) for k, f in fields.items()}
