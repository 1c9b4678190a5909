"""The contract of a ready problem, and the generic builder every problem shares.

A ready problem is a module in `mollijax.problems` with

- `NAME`: registry key (str); `DESCRIPTION`: one line; `ORDER`: highest derivative order of
  its residuals (used to choose `eps`);
- `DEFAULTS`: `{param: default}` of its simulation parameters (grid sizes, physics constants,
  truth variant). `simulate` rejects any other parameter, naming it;
- `UNKNOWNS`: `{name: {"axes": ..., "constraint": ..., "init": ...}}`, the default
  representation hints of the fields to recover (`axes=()` for a constant);
- `STATE`: tuple of the observed field names, e.g. `("u",)`;
- `simulate(*, noise=0.0, seed=0, **params) -> Simulation`: the forward model with a known
  truth, observations with relative Gaussian noise (`add_noise`);
- `residuals`: `{name: r(s)}`, functions of the `Scope` `s`, written like the maths;
- optionally `conditions(sim) -> list[Condition]` (boundary or initial conditions of the
  state, used when the state is represented by a network), and `CONFIG`: a dict with the
  tables of a run configuration (`derivatives`, `unknowns`, `state`, `regularisers`,
  `weights`, `optimiser`), the problem's default run (`mollijax.config.default_config`).

`build(module, sim, ...)` turns a simulation into `(Problem, unknowns)` for `fit`, and
`errors(values, sim)` scores the recovered unknowns against the truth.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from .._differentiators import FiniteDifference, Mollifier
from .._evolution import Evolution
from .._eps import estimate_noise, suggest_eps
from .._errors import MollijaxError
from .._fit import FitResult
from .._fields import AbstractField, Constant, GridField, NetworkField, as_constraint
from .._grid import Grid
from .._kernels import AbstractKernel, Bump, Polynomial, TruncatedGaussian
from .._networks import MLP, FourierMLP, PirateNet
from .._problem import Condition, Problem, Regulariser

REPRESENTATIONS = ("grid", "constant", "mlp", "fourier", "pirate")
STATE_REPRESENTATIONS = ("data", "mlp", "fourier", "pirate", "evolve")
EVOLVE_OPTIONS = ("accuracy", "substeps")
DERIVATIVES = ("mollifier", "finite_difference", "autodiff", "taylor")
KERNELS = ("bump", "polynomial", "gaussian")
NETWORK_OPTIONS = ("width", "depth", "features", "scale", "blocks")


class ProblemSpecError(MollijaxError):
    """A ready problem was given a parameter or representation it does not know."""


@dataclasses.dataclass(frozen=True)
class Simulation:
    """What a ready problem's `simulate` returns.

    - `grid`: the `Grid` of the observations;
    - `data`: `{field: array of grid shape}`, the noisy observations of the `STATE` fields;
    - `clean`: the same fields without noise;
    - `truth`: `{unknown: array}` on the unknown's own sub-grid (shape of the grid restricted
      to its axes), or 0-d for constants; may be empty for user data;
    - `known`: `{field: array of grid shape}`, given fields (a source term);
    - `masks`: `{field: bool array of grid shape}`, True where observed (optional);
    - `params`: the simulation parameters used (defaults merged with overrides).
    """

    grid: Grid
    data: dict[str, np.ndarray]
    clean: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    known: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    masks: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    params: dict[str, object] = dataclasses.field(default_factory=dict)


def resolve_params(name: str, defaults: Mapping[str, object], params: Mapping[str, object]) -> dict:
    """`defaults` updated with `params`; an unknown parameter is an error naming it."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ProblemSpecError(
            f"Problem {name!r} has no simulation parameter(s) {unknown}; expected some of "
            f"{sorted(defaults)}."
        )
    return {**defaults, **params}


def pick_variant(name: str, param: str, value, table: Mapping[str, object]):
    """`table[value]` for a named truth variant; a callable `value` passes through."""
    if callable(value):
        return value
    if value not in table:
        raise ProblemSpecError(
            f"Problem {name!r}: `{param}` must be one of {sorted(table)}, got {value!r}."
        )
    return table[value]


def add_noise(clean: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """`clean + noise * std(clean) * N(0, 1)`: Gaussian noise of relative level `noise`."""
    if not (np.isfinite(noise) and noise >= 0):
        raise ProblemSpecError(f"`noise` must be a non-negative number, got {noise!r}.")
    clean = np.asarray(clean, dtype=np.float64)
    if noise == 0:
        return clean.copy()
    return clean + noise * clean.std() * rng.standard_normal(clean.shape)


def observe(
    clean: Mapping[str, np.ndarray], noise: float, seed: int
) -> dict[str, np.ndarray]:
    """Noisy copies of every clean field, one seeded generator for all (in key order)."""
    rng = np.random.default_rng(seed)
    return {k: add_noise(v, noise, rng) for k, v in clean.items()}


# ----------------------------------------------------------------------------- builder
def make_kernel(name: str | AbstractKernel) -> AbstractKernel:
    """`"bump"` -> `Bump()`, `"polynomial"` -> `Polynomial(6)`, `"gaussian"` ->
    `TruncatedGaussian()`; a kernel object passes through."""
    if isinstance(name, AbstractKernel):
        return name
    table = {"bump": Bump, "polynomial": Polynomial, "gaussian": TruncatedGaussian}
    if name not in table:
        raise ProblemSpecError(f"Unknown kernel {name!r}; expected one of {KERNELS}.")
    return table[name]()


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


def make_network(kind: str, in_size: int, key: PRNGKeyArray, options: Mapping) -> object:
    """A coordinate network `R^in_size -> R`: `"mlp"`, `"fourier"` or `"pirate"`."""
    opts = {k: v for k, v in options.items() if k in NETWORK_OPTIONS and v is not None}
    allowed = {"mlp": ("width", "depth"), "fourier": ("features", "scale", "width", "depth"),
               "pirate": ("features", "scale", "width", "blocks")}
    if kind not in allowed:
        raise ProblemSpecError(f"Unknown network {kind!r}; expected one of {tuple(allowed)}.")
    extra = sorted(set(opts) - set(allowed[kind]))
    if extra:
        raise ProblemSpecError(
            f"Network {kind!r} takes options {allowed[kind]}, got unexpected {extra}."
        )
    cls = {"mlp": MLP, "fourier": FourierMLP, "pirate": PirateNet}[kind]
    return cls(in_size, key=key, **opts)


def _spec(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"representation": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ProblemSpecError(f"A representation spec must be a name or a dict, got {value!r}.")


def make_unknown(
    name: str, spec: Mapping, hint: Mapping, grid: Grid, mode: str, key: PRNGKeyArray
) -> AbstractField:
    """One unknown field from its representation `spec` over the problem's `hint`.

    `spec`/`hint` keys: `representation`, `axes`, `constraint` (`"free"`, `"positive"`, ... or
    `["bounded", lo, hi]`), `init` (starting value), network options, and `output_scale`
    (the `NetworkField` multiplier of the network's output, default 1).
    """
    merged = {**dict(hint), **dict(spec)}
    axes = tuple(merged.get("axes", ()))
    default = "constant" if not axes else ("grid" if mode == "grid" else "mlp")
    rep = merged.get("representation", default)
    if rep not in REPRESENTATIONS:
        raise ProblemSpecError(
            f"Unknown {name!r}: representation {rep!r} is not one of {REPRESENTATIONS}."
        )
    constraint = merged.get("constraint", "free")
    if isinstance(constraint, Sequence) and not isinstance(constraint, str):
        constraint = tuple(constraint)
    constraint = as_constraint(constraint)
    init = merged.get("init")
    if init is None:
        init = {"free": 0.0, "positive": 1.0, "negative": -1.0}.get(
            constraint.kind, 0.5 * (constraint.lower + constraint.upper)
        )
    if rep == "constant" or not axes:
        if rep not in ("constant", "grid"):
            raise ProblemSpecError(f"Unknown {name!r} has no axes: use 'constant', not {rep!r}.")
        return Constant(float(init), constraint)
    if rep == "constant":
        raise ProblemSpecError(
            f"Unknown {name!r} depends on axes {axes}; 'constant' would drop them."
        )
    if rep == "grid":
        if mode != "grid":
            raise ProblemSpecError(
                f"Unknown {name!r}: a 'grid' representation cannot be differentiated in "
                f"{mode!r} mode; use 'mlp', 'fourier' or 'pirate'."
            )
        shape = tuple(grid.shape[grid.axis_index(a)] for a in axes)
        return GridField(np.full(shape, float(init)), axes, constraint)
    net = make_network(rep, len(axes), key, merged)
    out_scale = merged.get("output_scale")
    out_scale = 1.0 if out_scale is None else float(out_scale)
    return NetworkField(net, axes, constraint, init=float(init), scale=out_scale)


def make_regularisers(spec) -> list[tuple[Regulariser, float]]:
    """`{unknown: {kind: weight}}` (or a list of `(unknown, kind, weight)`) -> regularisers."""
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        out = []
        for unknown, kinds in spec.items():
            if not isinstance(kinds, Mapping):
                raise ProblemSpecError(
                    f"Regularisers of {unknown!r} must be a table {{kind = weight}}, got "
                    f"{kinds!r}."
                )
            out += [(Regulariser(unknown, kind), float(w)) for kind, w in kinds.items()]
        return out
    return [(Regulariser(u, k), float(w)) for u, k, w in spec]


def build(
    module: types.ModuleType,
    sim: Simulation,
    *,
    derivatives: str = "mollifier",
    eps: float | Sequence[float] | None = None,
    kernel: str | AbstractKernel = "bump",
    boundary: str | Sequence[str] = "odd",
    state: str | Mapping = "data",
    unknowns: Mapping[str, object] | None = None,
    regularisers=None,
    weights: Mapping[str, float] | None = None,
    key: PRNGKeyArray | None = None,
) -> tuple[Problem, dict[str, AbstractField]]:
    """Build the inverse `Problem` of a ready problem and its initial unknowns.

    **Arguments:**

    - `module`: the ready problem module; `sim`: its `Simulation` (or user data in one).
    - `derivatives`: `"mollifier"` (grid derivatives of the mollified fields),
      `"finite_difference"`, or `"autodiff"` / `"taylor"` (pointwise; needs network state
      and smooth unknowns).
    - `eps`: mollifier half-width, one value or one per axis; `None` uses `auto_eps` (from
      `suggest_eps`, the module's `ORDER` and `estimate_noise` of the data).
    - `kernel`: `"bump"`, `"polynomial"`, `"gaussian"` or a kernel; `boundary`: as `Mollifier`.
    - `state`: how observed fields enter the residuals: `"data"` (the data itself, so
      derivatives are those of the mollified data), or a network (`"mlp"`, `"fourier"`,
      `"pirate"`, or a dict with `representation` and network options) fitted to the data
      by a `data:<field>` term, or `"evolve"` (problems with an `EVOLUTION`: the state is
      integrated in time from fitted initial values, an `Evolution` with finite differences
      of order `accuracy` (default 4) and `substeps` (default: from the stiffness); the
      residuals then hold by construction and the data terms are the whole fit).
    - `unknowns`: `{name: spec}` overriding the module's `UNKNOWNS` hints; a spec is a
      representation name or a dict (`representation`, `constraint`, `init`, network
      options).
    - `regularisers`: `{unknown: {kind: weight}}`; `weights`: loss weights as in `Problem`.
    - `key`: PRNG key for network initialisation (default `PRNGKey(0)`).

    **Returns:** `(problem, unknowns)`, ready for `fit(problem, unknowns, ...)`.
    """
    grid = sim.grid
    key = jax.random.PRNGKey(0) if key is None else key
    if derivatives not in DERIVATIVES:
        raise ProblemSpecError(
            f"`derivatives` must be one of {DERIVATIVES}, got {derivatives!r}."
        )
    mode = "grid" if derivatives in ("mollifier", "finite_difference") else derivatives
    state_spec = _spec(state)
    state_rep = state_spec.pop("representation", "data")
    if state_rep not in STATE_REPRESENTATIONS:
        raise ProblemSpecError(
            f"`state` representation {state_rep!r} is not one of {STATE_REPRESENTATIONS}."
        )
    if state_rep == "evolve":
        return _build_evolution(module, sim, state_spec, mode, unknowns, regularisers,
                                weights, key)
    if mode != "grid" and state_rep == "data":
        raise ProblemSpecError(
            f"`derivatives={derivatives!r}` differentiates fields pointwise: the observed "
            f"fields {tuple(module.STATE)} need a network state ('mlp', 'fourier' or "
            "'pirate'), not 'data'."
        )
    keys = jax.random.split(key, len(module.UNKNOWNS) + len(module.STATE))
    fields = _coefficients(module, unknowns, grid, mode, keys)
    if state_rep != "data":
        for k, name in zip(keys[len(module.UNKNOWNS):], module.STATE, strict=True):
            spec = dict(state_spec, representation=state_rep, axes=grid.axes)
            fields[name] = make_unknown(name, spec, {}, grid, mode, k)

    if derivatives == "mollifier":
        if eps is None or eps == "auto":
            eps = auto_eps(grid, module.ORDER, sim.data)
        diff = Mollifier(grid, eps, kernel=make_kernel(kernel), boundary=boundary)
    elif derivatives == "finite_difference":
        diff = FiniteDifference(grid, boundary=boundary)
    else:
        diff = derivatives
    conditions: list[Condition] = []
    if hasattr(module, "conditions"):
        conditions = [c for c in module.conditions(sim) if c.field in fields]
    problem = Problem(
        grid,
        dict(module.residuals),
        data=sim.data,
        masks=sim.masks or None,
        known=sim.known,
        conditions=conditions,
        regularisers=make_regularisers(regularisers),
        weights=weights,
        derivatives=diff,
    )
    return problem, fields


def _coefficients(module, unknowns, grid, mode, keys) -> dict[str, AbstractField]:
    """The module's `UNKNOWNS` as fields, from the user's `unknowns` specs (one key each)."""
    given = dict(unknowns or {})
    extra = sorted(set(given) - set(module.UNKNOWNS))
    if extra:
        raise ProblemSpecError(
            f"Problem {module.NAME!r} has no unknown(s) {extra}; its unknowns are "
            f"{sorted(module.UNKNOWNS)}."
        )
    return {
        name: make_unknown(name, _spec(given.get(name)), hint, grid, mode, k)
        for k, (name, hint) in zip(keys, module.UNKNOWNS.items(), strict=False)
    }


@functools.lru_cache(maxsize=None)
def _finite_differences(accuracy: int):
    """One factory per order, so that fits of rebuilt problems reuse compiled code."""

    def make(grid: Grid) -> FiniteDifference:
        return FiniteDifference(grid, accuracy=accuracy)

    return make


def _build_evolution(module, sim, spec, mode, unknowns, regularisers, weights, key):
    grid = sim.grid
    if not hasattr(module, "EVOLUTION"):
        raise ProblemSpecError(
            f"Problem {module.NAME!r} has no evolution form u_t = F(u); use a state "
            f"representation among {[r for r in STATE_REPRESENTATIONS if r != 'evolve']}."
        )
    if mode != "grid":
        raise ProblemSpecError(
            "The 'evolve' state exists only on the grid; use derivatives 'mollifier' or "
            "'finite_difference', not pointwise ones."
        )
    extra = sorted(set(spec) - set(EVOLVE_OPTIONS))
    if extra:
        raise ProblemSpecError(
            f"The 'evolve' state takes only {EVOLVE_OPTIONS}; got {extra}."
        )
    accuracy = int(spec.get("accuracy", 4))
    keys = jax.random.split(key, len(module.UNKNOWNS))
    fields = _coefficients(module, unknowns, grid, mode, keys)
    t = grid.axis_index("t")
    space_axes = tuple(a for a in grid.axes if a != "t")
    for name in module.EVOLUTION:
        first = np.take(np.asarray(sim.data[name], dtype=np.float64), 0, axis=t)
        if sim.masks and name in sim.masks:
            first = np.where(np.take(sim.masks[name], 0, axis=t), first, 0.0)
        fields[name] = GridField(np.nan_to_num(first), space_axes)
    evolution = Evolution(
        dict(module.EVOLUTION), time="t", substeps=spec.get("substeps"),
        derivatives=_finite_differences(accuracy),
    )
    conditions = list(module.conditions(sim)) if hasattr(module, "conditions") else []
    problem = Problem(
        grid, None, data=sim.data, masks=sim.masks or None, known=sim.known,
        conditions=[c for c in conditions if c.field in fields],
        regularisers=make_regularisers(regularisers), weights=weights, evolution=evolution,
    )
    return problem, fields


# ------------------------------------------------------------------------------ scoring
def _interior(shape: tuple[int, ...], margin: int | None) -> tuple[slice, ...]:
    out = []
    for n in shape:
        m = max(1, n // 10) if margin is None else int(margin)
        out.append(slice(m, n - m) if n > 2 * m else slice(None))
    return tuple(out)


def errors(
    values: Mapping[str, np.ndarray], sim: Simulation, margin: int | None = None
) -> dict[str, dict[str, float]]:
    """Relative L2 error and correlation of each recovered unknown against its truth.

    For an unknown with truth `c` and recovery `c_hat` on its sub-grid, on the interior
    (`margin` nodes dropped from each end of every axis; default a tenth of the axis):

        rel_l2 = |c_hat - c|_2 / |c|_2,   corr = Pearson correlation of c_hat and c,
        max_abs = max |c_hat - c|.

    Constants report `value`, `truth` and `rel_error = |c_hat - c| / |c|`. `values` is a
    `FitResult.values`-like dict (a `FitResult` works too); unknowns without truth are
    skipped.
    """
    if isinstance(values, FitResult):
        values = values.values
    out: dict[str, dict[str, float]] = {}
    for name, truth in sim.truth.items():
        if name not in values:
            continue
        est = np.asarray(values[name], dtype=np.float64)
        truth = np.asarray(truth, dtype=np.float64)
        if est.shape != truth.shape:
            raise ProblemSpecError(
                f"Recovered {name!r} has shape {est.shape}, its truth {truth.shape}."
            )
        if truth.ndim == 0:
            out[name] = {
                "value": float(est),
                "truth": float(truth),
                "rel_error": float(abs(est - truth) / max(abs(truth), 1e-300)),
            }
            continue
        cut = _interior(truth.shape, margin)
        e, t = est[cut].ravel(), truth[cut].ravel()
        corr = float(np.corrcoef(e, t)[0, 1]) if e.std() > 0 and t.std() > 0 else float("nan")
        out[name] = {
            "rel_l2": float(np.linalg.norm(e - t) / max(np.linalg.norm(t), 1e-300)),
            "corr": corr,
            "max_abs": float(np.max(np.abs(e - t))),
        }
    return out


def initial_values(fields: Mapping[str, AbstractField], grid: Grid) -> dict[str, np.ndarray]:
    """Each unknown on its own sub-grid, as NumPy (the starting guess, for reporting)."""
    return {k: np.asarray(f.on_subgrid(grid)) for k, f in fields.items()}

