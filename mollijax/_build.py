"""From a problem file, a data set and typed run options to `(Problem, unknowns)` for `fit`.

The options are the typed tables of a run configuration (`mollijax.config`: `derivatives`,
`unknowns`, `state`, `regularisers`, `weights`, `optimiser.seed`), already validated; every
name in them (kernel, boundary, derivative method, network, regulariser) is turned into an
object through the one table of names, `mollijax._names`. Nothing here names a ready problem:
the problem comes in as a module that follows the contract of `mollijax._problem_files`.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import numpy as np

from . import _driver
from ._dataset import Dataset
from ._differentiators import FiniteDifference
from ._eps import estimate_noise, suggest_widths
from ._errors import MollijaxError
from ._evolution import Evolution
from ._fields import AbstractField, Constant, GridField, NetworkField, as_constraint
from ._grid import Grid
from ._inclusion import INCLUSION_COUNTS, INCLUSION_HARMONICS, choose_inclusion
from ._integrators import RK4, Propagator
from ._lbfgs import lbfgs as trial_lbfgs
from ._names import from_name, se_key
from ._networks import PirateNet, SequentialResidual, pirate_init
from ._problem import Problem
from ._problem_files import problem_name
from ._steady import Steady
from ._terms import regulariser_from_key
from .config import (
    EVOLVE_STEPS,
    PROPAGATOR_NODES,
    SEQUENCE_NETWORKS,
    TRIAL_STEPS,
    UnknownConfig,
    auto_integrator,
    auto_weights,
)

GRID_REPRESENTATIONS = ("grid", "constant")  # besides the networks of the table of names
NETWORK_OPTIONS = ("width", "depth", "features", "scale", "blocks", "d_model", "heads", "seq_len",
                   "delta")


class BuildError(MollijaxError):
    """Run options that do not fit the problem or the data (known only once both are)."""


auto_eps = suggest_widths  # the rule of `eps = "auto"` (mollijax._eps)


def _network_options(options) -> dict:
    return {
        k: getattr(options, k) for k in NETWORK_OPTIONS if getattr(options, k, None) is not None
    }


def _network(kind: str, in_size: int, key, options, where: str, axes: tuple[str, ...] = ()):
    opts = _network_options(options)
    if kind in SEQUENCE_NETWORKS and "t" in axes:  # the pseudo-sequence runs in time
        opts["time"] = axes.index("t")
    try:
        return from_name("network", kind, in_size, key=key, **opts)
    except TypeError as e:  # an option the network does not take
        raise BuildError(f"{where}: network {kind!r} does not take these options: {e}") from None
    except MollijaxError as e:  # options the network refuses
        raise BuildError(f"{where}: {e}") from None


def _pirate_start(field: NetworkField, grid: Grid, values, mask) -> NetworkField:
    """A PirateNet state with its output layer fitted to the observed values by least
    squares (`pirate_init`, the paper's physics-informed start); other networks as they
    are. (A state field is free, offset 0, scale 1: the network's output is the value.)"""
    if not isinstance(field.net, PirateNet):
        return field
    xi = np.asarray(field._scaled(grid, grid.points()))  # the points as the network sees them
    keep = np.ravel(np.asarray(mask, dtype=bool))
    v = np.ravel(np.asarray(values, dtype=np.float64))
    net = pirate_init(field.net, xi[keep], v[keep])
    return eqx.tree_at(lambda f: f.net, field, net)


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
    net = _network(rep, len(axes), key, options, where, axes)
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


def _differentiator(options, grid: Grid, order: int, data, domain=None):
    method = options.method
    boundary = options.boundary if isinstance(options.boundary, str) else tuple(options.boundary)
    if method == "mollifier":
        eps = options.eps
        if eps == "auto":
            eps = auto_eps(grid, order, data, domain)
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


def _regularisers(spec: Mapping[str, Mapping[str, float | str]]) -> list:
    """The configured regularisers; an `"auto"` weight is 0 here until `build` sets it."""
    return [
        (regulariser_from_key(u, kind), 0.0 if w == "auto" else float(w))
        for u, kinds in spec.items() for kind, w in kinds.items()
    ]


def _refuse_auto_weights(options, state: str) -> None:
    auto = auto_weights(options.regularisers)
    if auto:
        raise BuildError(
            f'[regularisers] weight(s) {auto} = "auto" are set relative to the equation '
            f"residual at the initial guess, which the output-error state {state!r} does not "
            "have: give a number, or run the automatic estimator (only [problem] and [data]), "
            "which chooses the output-error weight by the discrepancy principle."
        )


def _residuals(module) -> dict:
    res = module.residuals
    return {"pde": res} if callable(res) else dict(res)


def _conditions(module, dataset: Dataset, fields) -> list:
    if not hasattr(module, "conditions"):
        return []
    return [c for c in module.conditions(dataset) if c.field in fields]


def build(
    module: types.ModuleType, dataset: Dataset, options, *, log=None
) -> tuple[Problem, dict[str, AbstractField]]:
    """The inverse `Problem` of a problem file on `dataset`, and its initial unknowns.

    **Arguments:**

    - `module`: a problem file (`load_problem`); `dataset`: its data (simulated or read).
    - `options`: a parsed run configuration (`mollijax.config.Config`), of which `derivatives`
      (method, kernel, eps, boundary), `unknowns` (per-unknown representation, constraint,
      init, axes, network options over the file's `UNKNOWNS` hints), `state` (how the observed
      fields enter the residuals: `"data"`, a network fitted to the data, or `"evolve"`),
      `regularisers`, `weights` and `optimiser.seed` (network initialisation) are used. A
      regulariser weight `"auto"` is set by `auto_smooth_weights` at the initial unknowns.
    - `log`: a function of one string (e.g. `print`) told the weights chosen for `"auto"`.

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
    if state.representation == "solve":
        return _build_steady(module, dataset, options, pointwise, key, default)
    if state.representation == "auto":
        raise BuildError(
            '[state] representation = "auto" is a sequence of fits, not one problem: run it '
            "with `auto_run` (what `mollijax run` does)."
        )
    if pointwise and state.representation == "data":
        raise BuildError(
            f"[derivatives] method {method!r} differentiates fields pointwise: the observed "
            f"fields {tuple(module.STATE)} need a network [state] representation, not 'data'."
        )
    keys = jax.random.split(key, len(module.UNKNOWNS) + len(module.STATE))
    fields = _coefficients(module, options.unknowns, grid, pointwise, keys, default)
    terms = []
    if state.representation != "data":
        for k, name in zip(keys[len(module.UNKNOWNS) :], module.STATE, strict=True):
            net = _network(state.representation, grid.ndim, k, state, "[state]", grid.axes)
            fields[name] = NetworkField(net, grid.axes)
            if name in dataset.data:
                mask = dataset.mask(name)
                if dataset.domain is not None:
                    mask = mask & np.asarray(dataset.domain, dtype=bool)
                fields[name] = _pirate_start(fields[name], grid, dataset.data[name], mask)
        if state.sequential:  # PINNsFormer's sequential loss
            terms = [SequentialResidual(fn, tuple(module.STATE), label)
                     for label, fn in _residuals(module).items()]
    problem = Problem(
        grid,
        _residuals(module),
        data=dataset.data,
        masks=dataset.masks or None,
        known=dataset.known,
        conditions=_conditions(module, dataset, fields),
        regularisers=_regularisers(options.regularisers),
        weights=options.weights or None,
        derivatives=_differentiator(options.derivatives, grid, module.ORDER, dataset.data,
                                    dataset.domain),
        domain=dataset.domain,
        mollified_data=bool(state.mollified_data),
        terms=terms,
    )
    auto = auto_weights(options.regularisers)
    if auto:
        names = [term.split(":")[1] for term in auto]
        chosen = auto_smooth_weights(problem, fields, names)
        problem = problem.with_weights({f"reg:{k}:smooth": w for k, w in chosen.items()})
        if log is not None:
            log(f"auto: smoothness weight {', '.join(f'{k} {w:.3g}' for k, w in chosen.items())} "
                f"({AUTO_SMOOTH:g} x the residual loss at the initial guess x length^2 / c0^2)")
    return problem, fields


def regulariser_weights(options, problem: Problem) -> dict[str, float]:
    """`{term: weight}` of the regularisers configured `"auto"`, as `build` set them."""
    auto = set(auto_weights(options.regularisers))
    return {t.name: float(t.weight) for t in problem.terms if t.name in auto}


@functools.cache
def _finite_differences(accuracy: int):
    """One factory per order, so that fits of rebuilt problems reuse compiled code."""

    def make(grid: Grid) -> FiniteDifference:
        return FiniteDifference(grid, accuracy=accuracy)

    return make


def _build_evolution(module, dataset, options, pointwise, key, default):
    grid = dataset.grid
    name = problem_name(module)
    _refuse_auto_weights(options, "evolve")
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
    if dataset.domain is not None:
        raise BuildError(
            "The 'evolve' state is integrated on the whole rectangle; data with a `domain` "
            "need [state] representation = \"data\" or a network (equation error)."
        )
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
    if state.integrator == "propagator":
        how = {"integrator": Propagator(RK4(state.substeps), max_nodes=PROPAGATOR_NODES)}
    else:
        how = {"substeps": state.substeps}
    evolution = Evolution(
        dict(module.EVOLUTION), time="t", derivatives=_finite_differences(accuracy), **how
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


def steady_residual(module):
    """The residual a solved steady state solves: the problem file's only one, or the one
    named `"pde"`."""
    res = _residuals(module)
    if len(res) == 1:
        return next(iter(res.values()))
    if "pde" in res:
        return res["pde"]
    raise BuildError(
        f"Problem {problem_name(module)!r} has residuals {sorted(res)}; a solved steady state "
        'solves one: name it "pde".'
    )


def _build_steady(module, dataset, options, pointwise, key, default):
    from .config import steady_refusal

    grid = dataset.grid
    why = steady_refusal(module)
    if why:
        raise BuildError(f'[state] representation = "solve": {why}')
    _refuse_auto_weights(options, "solve")
    if "t" in grid.axes:
        raise BuildError(
            f'[state] representation = "solve": the grid has a time axis {grid.axes}; a '
            'steady state has none (for u_t = F(u) use representation = "evolve").'
        )
    if pointwise:
        raise BuildError(
            'The "solve" state exists only on the grid; use [derivatives] method '
            "'mollifier' or 'finite_difference', not pointwise ones."
        )
    if dataset.domain is not None:
        raise BuildError(
            'The "solve" state is solved on the whole rectangle; data with a `domain` need '
            '[state] representation = "data" or a network (equation error).'
        )
    state = options.state
    accuracy = 2 if state.accuracy is None else state.accuracy
    keys = jax.random.split(key, len(module.UNKNOWNS))
    fields = _coefficients(module, options.unknowns, grid, False, keys, default)
    steady = Steady(
        steady_residual(module),
        fields=tuple(module.STATE),
        derivatives=_finite_differences(accuracy),
        solver=state.solver or "auto",
    )
    problem = Problem(
        dataset,
        None,
        conditions=[c for c in module.conditions(dataset) if c.field in module.STATE],
        regularisers=_regularisers(options.regularisers),
        weights=options.weights or None,
        steady=steady,
    )
    return problem, fields


def initial_values(fields: Mapping[str, AbstractField], grid: Grid) -> dict[str, np.ndarray]:
    """Each unknown on its own sub-grid, as NumPy (the starting guess, for reporting)."""
    return {k: np.asarray(f.on_subgrid(grid)) for k, f in fields.items()}


# ----------------------------------------------------------------------------- the default

AUTO_SMOOTH = 1e-3
"""Equation-error stage of `auto_run` and `smooth = "auto"`: the smoothness weight, relative
to the residual at the initial guess (`AUTO_SMOOTH * L_res(c0) * length^2 / c0^2`, so
units-free; `auto_smooth_weights`)."""
WIDTH_FACTORS = tuple(0.7**j for j in range(7))
"""Equation-error-only estimates of `auto_run` with automatic widths: the factors of the
rule's widths (`auto_eps`) scanned from wide to narrow, down to the rule's floor, for the
quasi-optimality criterion (`quasi_optimal`)."""
AUTO_REGULARISER = "curvature"
"""Output-error stage of `auto_run`: the regulariser of each grid unknown, `Curvature`
(squared second derivatives along each axis). Tuning draws 0-2 at 5 % noise (ad hoc scripts
while designing; the measured claim is the accuracy suite's table), against `H1` at GCV's
weight: darcy2d smooth 4.4 -> 2.2-2.5 %, plate 4.1 -> 2.7 %, diffusion_reaction 14-21 %
-> 7-11 % on two draws of three (33 % on the third, where GCV took a weight ten times too
small), darcy2d inclusion 24 -> 22 %: its null space holds linear trends, so a smooth
coefficient is less biased at the same variance."""
AUTO_WEIGHTS = tuple(float(w) for w in np.geomspace(1e1, 1e-8, 10))
"""Output-error stage of `auto_run`: the units-free regulariser weights generalised
cross-validation scans (from large to small, stopping one past the first minimum),
multiplied by `length^4 / c^2` of each unknown (the curvature penalty's units)."""
EVIDENCE_START = 5
"""The evidence's scan of the curvature weight (an evolved state on the grid path) begins at
`AUTO_WEIGHTS[EVIDENCE_START]` (1e-4 units-free) and goes down, or up where that start is
the best (`evidence`'s `start`), instead of down from the largest weight. On heat1d's noisy
tuning draws (sine and bump, 1-10 % noise) the maximum lies near 1e-6, and the five
converged Levenberg-Marquardt fits above 1e-4 cost more than half of a default fit's CPU
(ad hoc, draws 0-2, one core: 35-54 s -> 13-24 s, the same weight, prior and error to the
digit on all six; noise-free data, whose maximum lies near 1e-1, scan all ten either way)."""
GCV_GAMMA = 1.4
"""Output-error stage of `auto_run`: the factor of modified generalised cross-validation,
`V = chi2 / (1 - gamma p / n)^2` (`gcv`; 1 is the classical criterion, 1.4 the common
choice of smoothing-spline practice). Classical GCV undersmoothed on some draws (its first
minimum a decade or two below the best weight). Chosen on tuning draws 0-4 (ad hoc runs,
the truth used only to score them; the measured claim is the accuracy suite's table on
draws that chose nothing): diffusion_reaction mean error 12.7 -> 8.6 % at 5 % noise (draw
0: 34 -> 13 %), 4.6 -> 3.3 % at 1 %, unchanged at 10 %; plate 2.43 -> 1.90 % at 5 %; darcy2d
smooth unchanged at 5 % (2.22 %); but darcy2d's inclusion (a discontinuous coefficient,
which the curvature prior misdescribes) 22.3 -> 26.9 %, every draw choosing a ten times
larger weight (gamma 1.2 moved the inclusion as far and left diffusion_reaction's outlier
in place). Taken for the smooth coefficients the prior is meant for. Noisy data only: on
noise-free data (`CONTINUATION_BELOW`) the classical criterion (gamma 1), since the
undersmoothing it counters is a noise draw's; decided after the noise-free evaluation row
(one draw: no tuning draws exist without noise), where gamma 1.4 took the inclusion from
14.0 to 19.6 % and changed no other case by more than 0.01 point."""
CONTINUATION_BELOW = 1e-3
"""Output-error stage of `auto_run`: generalised cross-validation's trial fits continue from
the previous weight's fit (rather than each starting from the equation-error estimate) when
the estimated relative noise of every solved field is below this (noise-free data, to a
tenth of a percent). Without noise the best weight is small, and a fit at a small weight from
the equation-error start does not converge within its trial budget, so GCV's minimum fell a
decade too high (diffusion_reaction noise-free 0.18 % where a converged fit reaches 0.07 %).
With noise, continuation let GCV pick far smaller weights on diffusion_reaction (tuning
draws 0-4 at 5 % 12.4 -> 14.6 %, at 10 % 17.0 -> 18.5 %), so it is kept to noise-free data.
The threshold sits between the estimates of noise-free data (relative 1e-7 to 1e-4 on the
shipped simulators) and of 1 % noise (about 1e-2); design.md section 10."""
EVOLVE_GAUSS_NEWTON_MAX = 512
"""`auto_run(evolved="grid")` (and `"auto"` where the exact propagator advances the state):
where an evolved fit's parameters (the grid coefficients and the state's initial values)
number at most this, the coefficients stay grid fields under the curvature prior, its weight
of largest marginal likelihood (`evidence`, over `AUTO_WEIGHTS`), every trial fitted to
convergence by Levenberg-Marquardt (`gauss_newton`) from the previous weight's fit, then the
prior mix (`PRIOR_MIX`). The bound is the cost of the dense Jacobian (one forward pass per
parameter): heat1d at 101 nodes has 202. A solved state whose coefficients lie on one axis
and number at most this (diffusion_reaction's 101) follows its GCV weight choice with the same
prior choice (`PRIOR_MIX`, `PRIOR_SE_LENGTHS`), fitted by Levenberg-Marquardt (design.md
section 12). Not on two axes: there each Jacobian column is a 2-D solve (the plate at 21 x 21:
74 s per default fit against about 10 s), and the choice was measured in 1-D only.

History. With the curvature prior alone (its weight refined at quarter decades) this was not
the default on noisy data: on tuning draws 0-4 at 5 % noise, 101 x 101 (ad hoc runs, the
truth only to score), against the networks it took heat1d's narrow bump (`diffusivity =
"bump"`, t in [0, 4]) from 3.01 % to 1.87 % mean D error but heat1d's sine from 0.76 % to
0.88 %; the evaluation draws (100-104, accuracy suite, `--evolved grid`) confirmed both: the
bump 3.93 -> 2.05 % (oracle ratio 1.70 -> 1.05), the sine 0.93 -> 1.10 % (ratio 1.10 ->
1.69), CPU 45-47 s mean per fit against 10-21 s (docs/benchmarks.md). On the sine the
evidence took the same units-free weight on every draw, one to one and a half decades below
the best: a prior (the curvature penalty, a cubic-spline prior) much rougher than the truth
is where the marginal likelihood is known to undersmooth (Wahba 1985); the prior mix is the
answer. It was taken over GCV because, on the tuning draws' full weight curves, classical
GCV with converged trials did worse still (0.93 % mean on four sine draws on the decade
grid, the best weight 0.78 %): its `V` is flat where the initial profile's hundred
parameters dominate the effective ones."""
PRIOR_MIX_TERM = "third"
PRIOR_MIX = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
"""`auto_run`'s grid path for an evolved state (`EVOLVE_GAUSS_NEWTON_MAX`): after the
evidence's choice of the curvature weight `w`, the prior `w (Curvature + a length^2
ThirdDerivative)` of the lead coefficient, `a` over these units-free ratios and `w` over
`PRIOR_MIX_OFFSETS` decades around the choice, by the marginal likelihood (`mix_evidence`:
candidates scored in the model linearised at the fit, the best refitted by
Levenberg-Marquardt and kept only where its exact evidence is larger). Every `a >= 0` keeps
the curvature prior's null space (the affine functions), so the evidence compares these
priors on equal terms; a larger `a` is a smoother prior, and the data choose.

Why, and why it made the grid path the default wherever the exact propagator applies:
tuning draws 0-4 of heat1d 101 x 101 (ad hoc runs, the truth only to score), mean D error
of the curvature prior's evidence choice (decade grid) -> the mix: the sine at 5 % noise
1.05 -> 0.78 % (per draw 0.82 / 0.64 / 0.91 / 0.76 / 0.77 %; the evidence took a = 0.1 on
every draw), at 1 % 0.38 -> 0.18 %, at 10 % 1.71 -> 1.49 % (per draw 1.64 / 1.21 / 1.68 /
1.48 / 1.44 %); the narrow bump at 5 % 1.94 -> 1.87 % (1.45 / 1.17 / 2.60 / 2.76 / 1.37 %;
a = 0 to 1e-3: the data ask for the rougher prior). The networks on the same 5 % draws:
the sine 0.76 %, the bump 3.01 %. CPU 38-49 s per fit on one core (networks 10-21 s)."""
PRIOR_MIX_OFFSETS = tuple(float(o) for o in np.arange(-3.0, 1.51, 0.25))
"""Decades of the lead weight around the evidence's curvature choice that `PRIOR_MIX`'s
search scores (quarter decades: with `a` the curvature weight the evidence prefers falls, a
decade for each decade of `a` above about 0.03)."""
PRIOR_SE_LENGTHS = (0.2, 0.3, 0.5, 0.8)
"""Beside `PRIOR_MIX`: squared-exponential priors (`SquaredExponential`, a Gaussian process
about an unpenalised affine trend, with analytic sample paths) of the lead coefficient at
these correlation lengths (fractions of its axes' largest extent), each over
`PRIOR_MIX_OFFSETS` decades around the weight at which its penalty at the fit equals the
curvature choice's (extended past an edge maximum); the marginal likelihood chooses among
them and the mix (`mix_evidence`'s `alternatives`: every prior keeps the affine null space,
so the evidences compare). Tuning draws 0-4 (ad hoc, the truth only to score): with lengths
from 0.03 the evidence took 0.08-0.12 for heat1d's narrow bump, 1.87 -> 2.35 % mean D error
at 5 % noise; from 0.2 the bump keeps the mix (unchanged) and the sine takes 0.3 (0.78 ->
0.79 % at 5 %, 0.18 -> 0.19 % at 1 %); diffusion_reaction (solved state) 3.28 -> 2.08 % at
1 %, 8.5 -> 5.5 % at 5 %, 16.7 -> 10.3 % at 10 % against GCV's curvature weight alone."""
EVOLVE_GN_TRIAL_STEPS = 50
"""The most Levenberg-Marquardt steps (Jacobians) of each weight's fit in the evolved state's
generalised cross-validation (`EVOLVE_GAUSS_NEWTON_MAX`); from the previous weight's fit
they converge (relative loss change below 1e-10) in a few."""
EVOLVE_START = 10.0
"""Equation-error stage of `auto_run` when an evolved state follows: its smoothness weights
are `EVOLVE_START` times `auto_smooth_weights`' (a smoother start, to which the evolved fit's
small networks are first fitted; the output-error fit adds no penalty). Chosen on tuning draws
0-4 of heat1d 101 x 101 at 5 % noise (ad hoc runs; the measured claim is the accuracy
suite's table): mean D error 0.78 % at factor 10, 0.81 % at 100 (five draws); at factor 1
0.87 % on four (the fifth not run). An H1 penalty in the output-error fit did not help
(units-free weight 1e-4 x length^2 / c^2 at factor 10: 0.74 -> 0.78 % on four draws; at
factor 1, 0.89 % at 1e-4 on four draws, 2.4 % at 1e-2 on three)."""


def _prior_family(grid: Grid, fields: Mapping, grid_unknowns: Sequence[str]) -> dict:
    """`[regularisers]` of `auto_run`'s prior choice, every weight 0 until chosen: the
    curvature prior of each grid unknown, and for the lead one the third-derivative term of
    `PRIOR_MIX` and the squared-exponential priors of `PRIOR_SE_LENGTHS`."""
    regs = {k: {AUTO_REGULARISER: 0.0} for k in grid_unknowns}
    lead = grid_unknowns[0]
    length = _length(grid, fields[lead].axes)
    regs[lead][PRIOR_MIX_TERM] = 0.0
    for f in PRIOR_SE_LENGTHS:
        regs[lead][se_key(f * length)] = 0.0
    return regs


class AutoRun(NamedTuple):
    """What `auto_run` returns.

    - `result`: the final `FitResult` (of the output-error fit where the problem allows one,
      else of the equation-error fit);
    - `problem`, `unknowns`: the problem and initial unknowns of that final fit;
    - `initial`: the very first guess (the problem file's hints), as `{name: values}`;
    - `stages`: `{stage: FitResult}` in the order run (`"equation error"`, then
      `"output error"` where it ran; `"equation error, the rule's widths"` beside the first
      where the widths were chosen by quasi-optimality and differ from the rule's;
      `"inclusion M"` / `"K inclusions M"` for each inclusion weighed against the smooth
      output-error fit, its values the posterior mean);
    - `record`: what was chosen and why (JSON-able; `metrics.json`'s `"auto"`);
    - `choice`: the weight criterion's `Choice` (every trial's weight, misfit and unknowns'
      values), or None where no weight was chosen.
    """

    result: object
    problem: Problem
    unknowns: dict
    initial: dict
    stages: dict
    record: dict
    choice: object = None


def output_error_kind(module, grid: Grid) -> tuple[str | None, str]:
    """`(state, why)`: `"evolve"` for a problem with `EVOLUTION` and a time axis, `"solve"` for
    one without a time axis whose one observed field has `conditions`, else `None`."""
    from .config import steady_refusal

    if getattr(module, "EVOLUTION", None) is not None:
        if "t" in grid.axes:
            return "evolve", "the problem has an evolution form u_t = F(u) (EVOLUTION) and " \
                "the data a time axis: the state is integrated in time (output error)"
        return None, "EVOLUTION is defined but the data have no time axis 't'"
    if "t" in grid.axes:
        return None, "the data have a time axis but the problem no EVOLUTION"
    why = steady_refusal(module)
    if why:
        return None, why
    return "solve", "no time axis and boundary conditions given: the state is the solution " \
        "of the residual with its conditions imposed exactly (output error)"


def _discrepancy_api():
    """`(noise_sigma, scaled, discrepancy, gcv)` from `mollijax._auto`, or None where it is
    not part of this installation (the output-error stage then keeps a fixed weight)."""
    try:
        from . import _auto
    except ImportError:
        return None
    fns = tuple(getattr(_auto, n, None)
                for n in ("noise_sigma", "scaled", "discrepancy", "gcv"))
    return fns if all(fns) else None


def _sigma(dataset: Dataset, api) -> dict[str, float]:
    masks = dataset.masks or None
    if dataset.domain is not None:  # the noise inside the domain
        masks = {k: dataset.mask(k) & dataset.domain for k in dataset.data}
    if api is not None:
        return {k: float(v) for k, v in api[0](dataset.data, masks).items()}
    out = {}
    for k, v in dataset.data.items():
        v = np.asarray(v, dtype=np.float64)
        m = None if masks is None else masks.get(k)
        scale = float(np.std(v if m is None else v[m]))
        out[k] = max(estimate_noise(v, mask=m) * scale, 1e-8 * (scale or 1.0))
    return out


def _length(grid: Grid, axes) -> float:
    sizes = [grid.shape[grid.axis_index(a)] * grid.spacing[grid.axis_index(a)] for a in axes]
    return float(max(sizes)) if sizes else 1.0


def _scale(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    s = float(np.sqrt(np.mean(v**2))) if v.size else 0.0
    return s if s > 0 and np.isfinite(s) else 1.0


def auto_smooth_weights(problem: Problem, fields: Mapping[str, AbstractField], names=None
                        ) -> dict[str, float]:
    """The smoothness weight of each unknown in `names`, from the data, not the truth.

    `w_c = AUTO_SMOOTH * L_res(c0) * length_c^2 / c0^2` with `AUTO_SMOOTH = 1e-3`: `L_res(c0)`
    is the sum of the problem's (unweighted) residual terms at the initial unknowns `fields`,
    `length_c` the largest extent of c's axes (1 for a constant) and `c0` the root mean
    square of c's initial values (1 where they are all 0). The smoothness penalty
    `mean |grad c|^2` of a variation of relative size `a` over the length scale of the domain
    is then `AUTO_SMOOTH * a^2` times the initial residual, whatever the units of the data
    and of `c`. The rule of `auto_run`'s equation-error stage and of a configuration's
    `smooth = "auto"`.

    **Arguments:**

    - `problem`: the `Problem` (an equation-error one: its residual terms are evaluated).
    - `fields`: the initial unknowns, `{name: AbstractField}`.
    - `names`: the unknowns to weigh (default: all of `fields`).

    **Returns:** `{name: weight}`, for `problem.with_weights({"reg:<name>:smooth": weight})`:

    ```python
    w = mj.auto_smooth_weights(problem, unknowns, ["D"])["D"]
    problem = problem.with_weights({"reg:D:smooth": w})
    ```
    """
    names = list(fields) if names is None else [names] if isinstance(names, str) else names
    grid = problem.grid
    res0 = float(sum(v for k, v in problem.loss_terms(fields).items()
                     if k.startswith("residual:")))
    initial = initial_values({k: fields[k] for k in names}, grid)
    return {
        name: AUTO_SMOOTH * max(res0, 1e-300) * _length(grid, fields[name].axes) ** 2
        / _scale(initial[name]) ** 2
        for name in names
    }


def _carry(fields: Mapping[str, AbstractField], values: Mapping[str, np.ndarray], names):
    """`fields` with the coefficient unknowns `names` started from `values`."""
    out = dict(fields)
    for name in names:
        f = fields[name]
        v = np.asarray(values[name], dtype=np.float64)
        if isinstance(f, Constant):
            out[name] = Constant(float(v), f.constraint)
        elif isinstance(f, GridField):
            lo, hi = f.constraint.lower, f.constraint.upper
            kind = f.constraint.kind
            if kind == "positive":
                v = np.maximum(v, 1e-3 * _scale(v))
            elif kind == "negative":
                v = np.minimum(v, -1e-3 * _scale(v))
            elif kind == "bounded":
                pad = 1e-6 * (hi - lo)
                v = np.clip(v, lo + pad, hi - pad)
            out[name] = GridField(v, f.axes, f.constraint)
    return out


_TRIAL_LBFGS = trial_lbfgs()  # one object, so that repeated runs reuse the compiled fits


def _networks_like(fields, values, names, grid: Grid, opt, seed: int):
    """`fields` with each grid coefficient in `names` replaced by an MLP (width 16, depth 2)
    fitted by L-BFGS to its values (offset: their mean, output scale: their spread)."""
    from ._fit import fit

    out, fits = dict(fields), {}
    for i, name in enumerate(names):
        f = fields[name]
        v = np.asarray(values[name], dtype=np.float64)
        mean, spread = float(np.mean(v)), float(np.std(v))
        spread = max(spread, 1e-2 * abs(mean), 1e-12)
        net = from_name("network", "mlp", len(f.axes), key=jax.random.PRNGKey(seed + i),
                        width=16, depth=2)
        field = NetworkField(net, f.axes, f.constraint, init=mean, scale=spread)
        sub = Grid.from_bounds(
            v.shape,
            tuple(grid.origin[grid.axis_index(a)] for a in f.axes),
            tuple(grid.origin[grid.axis_index(a)]
                  + (grid.shape[grid.axis_index(a)] - 1) * grid.spacing[grid.axis_index(a)]
                  for a in f.axes),
            axes=f.axes,
        )
        problem = Problem(sub, None, data={name: v})
        res = fit(problem, {name: field}, _TRIAL_LBFGS, steps=TRIAL_STEPS * opt.steps,
                  chunk=TRIAL_STEPS * 50, tol=opt.tol, progress=False)
        out[name] = res.unknowns[name]
        fits[name] = {"network": "mlp", "width": 16, "depth": 2, "init": mean, "scale": spread,
                      "fit_to_equation_error": res.message,
                      "rel_misfit": float(np.linalg.norm(res.values[name] - v)
                                          / max(np.linalg.norm(v), 1e-300))}
    return out, fits


def _identifiability(problem: Problem, result, names, log) -> dict:
    """`identifiability` of each grid unknown at the equation-error fit, each poorly
    identified region named once: a line through `log` where the run has a log, else an
    `IdentifiabilityWarning` (pointing at the caller's line); the record for metrics.json."""
    from ._auto import IdentifiabilityWarning, identifiability

    out = {}
    if not result.ok:
        return out
    for name in names:
        try:
            ident = identifiability(problem, result.unknowns, name)
        except MollijaxError as error:
            out[name] = {"analysed": False, "why": str(error)}
            continue
        out[name] = {"analysed": True, "poor_nodes": int(ident.poor.sum()),
                     "nodes": int(ident.poor.size),
                     "regions": [{a: list(b) for a, b in r.items()} for r in ident.regions],
                     "message": ident.message}
        if ident.message and log is not None:
            log(f"auto: warning: {ident.message}")
        elif ident.message:
            _warn_at_caller(ident.message, IdentifiabilityWarning)
    return out


def _warn_at_caller(message: str, category: type[Warning]) -> None:
    """`warnings.warn` pointed at the first frame outside the mollijax package (and the
    run-time type checkers that may wrap its functions): the user's line, however many of
    the library's own calls lie between (`auto_run` calls itself once to set up its run)."""
    import sys
    import warnings

    library = ("mollijax", "jaxtyping", "typeguard", "beartype")
    frame, level = sys._getframe(0), 1  # level 1: this function, which calls `warn`
    while frame is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] in library:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def quasi_optimal(values: Sequence[Mapping[str, np.ndarray]]) -> tuple[int, list[float]]:
    """The quasi-optimality criterion over a sequence of estimates `c_0, c_1, ...` (one per
    setting, ordered from most to least regularised):

        d_j = |c_{j+1} - c_j| / |c_j|   (all unknowns together),
        j* = the first local minimum of d (the first j with d_j <= d_{j+1}), else the last,

    and `c_{j*}` is chosen. Where the estimates settle (the bias of the wider settings gone,
    the noise of the narrower ones not yet grown) consecutive estimates differ least. The
    first local minimum (not the global one) keeps the choice from wandering into the
    noise-dominated end, where differences can dip by chance. Needs no noise level.

    **Returns:** `(j*, [d_0, d_1, ...])`.
    """
    for j, v in enumerate(values[1:], start=1):
        if set(v) != set(values[0]):
            raise MollijaxError(f"quasi_optimal: estimate {j} has the unknowns {sorted(v)}, "
                                f"estimate 0 {sorted(values[0])}.")
        bad = [k for k in v if np.shape(v[k]) != np.shape(values[0][k])]
        if bad:
            raise MollijaxError(f"quasi_optimal: estimate {j} differs from estimate 0 in the "
                                f"shape of {bad}.")
    if len(values) < 2:
        return 0, []
    diffs = []
    for a, b in zip(values, values[1:], strict=False):
        num = sum(float(np.sum((np.asarray(b[k]) - np.asarray(a[k])) ** 2)) for k in a)
        den = sum(float(np.sum(np.asarray(a[k]) ** 2)) for k in a)
        diffs.append(float(np.sqrt(num / den)) if den > 0 else float("inf"))
    for j in range(len(diffs) - 1):
        if diffs[j] <= diffs[j + 1]:
            return j, diffs
    return len(diffs) - 1, diffs


def _width_scan(module, dataset, options_a, grid_unknowns, first, fit_one, say):
    """Equation error with automatic widths and no output-error stage: refit at narrower
    widths (`WIDTH_FACTORS` of the rule's, never below its floor of `ORDER // 2 + 3` steps)
    while the quasi-optimality differences fall, each with its own automatic smoothness
    weights (`auto_smooth_weights`); returns `(j*, problems, fields, results, weights,
    record)`. Each fit starts from the previous width's coefficients."""
    import dataclasses

    grid = dataset.grid
    problem0, fields0, result0 = first
    base = [float(e) for e in np.atleast_1d(problem0.derivatives.eps)]
    if len(base) == 1:
        base = base * grid.ndim
    floors = [(module.ORDER // 2 + 3) * h for h in grid.spacing]
    problems, fields, results, widths = [problem0], [fields0], [result0], [base]
    weights = [{k: float(w["smooth"]) for k, w in options_a.regularisers.items()}]
    values = [{k: np.asarray(v) for k, v in result0.values.items()}]
    j, diffs = 0, []
    for factor in WIDTH_FACTORS[1:]:
        eps = [max(factor * e, f) for e, f in zip(base, floors, strict=True)]
        if np.allclose(eps, widths[-1]):
            break  # at the floor on every axis
        options = dataclasses.replace(
            options_a, derivatives=dataclasses.replace(options_a.derivatives, eps=eps),
            regularisers={},
        )
        problem, fresh = build(module, dataset, options)
        w = auto_smooth_weights(problem, fresh, grid_unknowns)
        options = dataclasses.replace(options, regularisers={k: {"smooth": v}
                                                             for k, v in w.items()})
        problem, fresh = build(module, dataset, options)
        start = _carry(fresh, results[-1].values, list(module.UNKNOWNS))
        result = fit_one(problem, start)
        if not result.ok:
            break
        problems.append(problem)
        fields.append(start)
        results.append(result)
        widths.append(eps)
        weights.append(w)
        values.append({k: np.asarray(v) for k, v in result.values.items()})
        j, diffs = quasi_optimal(values)
        if j < len(diffs) - 1:
            break  # the differences rose again: the first local minimum is found
    record = {
        "criterion": "quasi-optimality (first local minimum of |c_j+1 - c_j| / |c_j|)",
        "widths": widths, "differences": diffs, "chosen": int(j), "eps": widths[j],
    }
    say(f"auto: widths by quasi-optimality over {len(widths)} fits (factors of the rule's "
        f"{[round(e, 4) for e in base]}): differences {[round(d, 4) for d in diffs]}, chose "
        f"{[round(e, 4) for e in widths[j]]}")
    return j, problems, fields, results, weights[j], record


def auto_run(
    module: types.ModuleType,
    dataset: Dataset,
    options=None,
    *,
    steps: int | None = None,
    tol: float | None = None,
    log=None,
    progress: bool = False,
    x64: bool = True,
    evolved: str = "auto",
) -> AutoRun:
    """The default estimator: an equation-error fit, refined by output error where possible.

    1. **Equation error** (fast): the observed fields are mollified data (kernel widths from
       `auto_eps`: the noise of the data and the problem's `ORDER`), the unknowns grid fields
       (or constants), a smoothness penalty on each grid unknown (the configuration's
       `[regularisers]`, else `AUTO_SMOOTH` relative to the residual at the first guess:
       `auto_smooth_weights`, times `EVOLVE_START` where an evolved state follows), L-BFGS
       until the relative loss change over a chunk is below `tol`.
    2. **Output error** where the problem allows it (`output_error_kind`): an `EVOLUTION`
       and a time axis give the evolved state (with one spatial axis, advanced by the exact
       propagator where the evolution is linear with coefficients constant in time,
       `[state] integrator = "propagator"`, and then allowed `EVOLVE_STEPS` times the step
       cap; RK4 elsewhere or when the configuration names an integrator or substeps), no
       time axis and
       `conditions` the solved steady state. Started from step 1's coefficients, with the
       data terms divided by the estimated noise variance (`noise_sigma`, `scaled`:
       chi-square per node), a curvature penalty (`AUTO_REGULARISER`: `Curvature`) on each
       grid unknown for the solved state (and for the evolved state with `evolved="grid"`,
       or `"auto"` where the exact propagator advances it, where its fitted parameters
       number at most `EVOLVE_GAUSS_NEWTON_MAX`: the weight then of largest marginal
       likelihood, `evidence`, every trial fitted to convergence by Levenberg-Marquardt,
       `gauss_newton`, from the previous weight's fit, then the mix with a
       third-derivative prior of largest evidence, `PRIOR_MIX`; otherwise each coefficient
       of an evolved state is a small network and no weight is scanned), its weight chosen by
       generalised cross-validation over `AUTO_WEIGHTS`
       (`gcv`: scanned from large to small, 100 L-BFGS steps per weight, stopping one
       weight past the first minimum of `V = chi2 / (1 - p / n)^2`), then refined at that
       weight by L-BFGS until `tol` (at most `steps` steps). Both output-error states run
       the one-evaluation L-BFGS (`mollijax.lbfgs`) for `TRIAL_STEPS` times those steps
       (a step of optax's L-BFGS, which step 1 uses, is about two evaluations). A solved
       state with one positive grid coefficient on two axes then weighs star-shaped
       inclusions in its place (`choose_inclusion`: two values, `INCLUSION_COUNTS` curves
       of `INCLUSION_HARMONICS` harmonics, by the same GCV; a chosen one is reported as the
       posterior mean of the two-value field, `inclusion_posterior`).
    3. Otherwise step 1's fit is the result; with automatic widths (`eps = "auto"`) and
       weights, refitted first at narrower widths (`WIDTH_FACTORS` of the rule's, down to
       its floor), each from the previous fit and with its own `auto_smooth_weights`,
       while consecutive coefficients keep getting closer, and the widths chosen by the
       quasi-optimality criterion (`quasi_optimal`): there is no output-error stage to
       correct the bias of too wide a kernel, which the rule's assumption (a field varying
       on the scale of the domain) makes for fields with finer structure.

    **Arguments:**

    - `module`: a problem file (`load_problem`); `dataset`: its data.
    - `options`: a parsed configuration (`mollijax.config.Config`; default: the defaults of
      a configuration with only `[problem]`), of which `derivatives` (kernel, boundary, eps),
      `unknowns` (constraint, init, axes; representations stay grid or constant),
      `regularisers` (fixed weights: no discrepancy scan; all `"auto"`: as if none),
      `state` (`accuracy`, `solver`, `substeps`) and `optimiser` (`steps`: the cap per fit,
      `tol`, `chunk`) are used.
    - `steps`, `tol`: override the configuration's (`tol` default 1e-9).
    - `log`: a function of one string (e.g. `print`) told what is chosen and why.
    - `evolved`: how an evolved state's coefficients are fitted. `"network"`: each a small
      network fitted to the equation-error profile, then by L-BFGS; no weight is chosen,
      the network's smoothness and where the fit stops regularise. `"grid"`: each stays a
      grid field under the curvature prior, its weight of largest marginal likelihood
      (`evidence`), every trial fitted to convergence by Levenberg-Marquardt
      (`gauss_newton`), then the lead coefficient's prior mixed with a third-derivative
      one by the evidence (`PRIOR_MIX`, `mix_evidence`), where the fitted parameters
      number at most `EVOLVE_GAUSS_NEWTON_MAX` (else `"network"`, and the record says
      so). `"auto"` (the default): `"grid"` where the evolution is advanced by the exact
      propagator (cheap Jacobian columns), `"network"` otherwise (each Jacobian column
      would cost a whole integration). See `EVOLVE_GAUSS_NEWTON_MAX` and `PRIOR_MIX` for
      what each gives and costs.
    - `x64`: run in float64 whatever JAX's global setting (`jax.enable_x64(True)` as a
      context, for this call only; `mollijax run` enables it globally). In float32 the
      evolved fit of heat1d (101 x 101, 5 % noise, evaluation draws 100-104) ended 1.22 %
      from the truth on average against 0.93 % (per draw 0.4-2.3x; the 1 % target holds in
      float64 only), diffusion_reaction's solved fit the same in both
      (`benchmarks/auto_precision.py`). The returned problem and unknowns then hold float64
      arrays, which JAX truncates (with a warning) in later float32 work: enable x64 globally
      (`jax.config.update("jax_enable_x64", True)`) to keep working on them. `False`: the
      global setting.

    **Interrupting.** Ctrl-C (or SIGTERM) stops the whole sequence: the fit it lands in
    stops cleanly and `KeyboardInterrupt` propagates, where a single `fit` returns an
    interrupted result; no later stage starts, and nothing is kept (`auto_run` writes no
    checkpoint: run it again).

    **Returns:** an `AutoRun`; `record` holds the estimator, the noise estimate, the kernel
    widths, the weights and the criterion's curve.
    """
    import dataclasses

    from ._fit import fit
    from ._names import from_name
    from .config import from_dict

    if (x64 and not jax.config.jax_enable_x64) or not _driver.interrupts_propagating():
        # once, around the whole sequence of fits: float64 (where asked) and Ctrl-C ending
        # the sequence, not only the fit it lands in
        precision = jax.enable_x64(True) if x64 else contextlib.nullcontext()
        with precision, _driver.interrupts_propagate():
            return auto_run(module, dataset, options, steps=steps, tol=tol, log=log,
                            progress=progress, evolved=evolved, x64=x64)

    if evolved not in ("auto", "network", "grid"):
        raise MollijaxError(
            f"auto_run `evolved` must be 'auto', 'network' or 'grid', got {evolved!r}.")
    if options is None:
        options = from_dict({"problem": {"file": str(module.__file__)}})
    regs = options.regularisers
    if regs and len(auto_weights(regs)) == sum(len(kinds) for kinds in regs.values()):
        # every weight "auto": this estimator's own choice at each stage
        options = dataclasses.replace(options, regularisers={})
    say = log or (lambda message: None)
    grid = dataset.grid
    opt = dataclasses.replace(
        options.optimiser, name="lbfgs", steps=steps or options.optimiser.steps,
        tol=tol if tol is not None else (options.optimiser.tol or 1e-9),
    )
    lbfgs = from_name("optimiser", "lbfgs", steps=opt.steps, learning_rate=opt.learning_rate)
    chunk = min(opt.chunk, 50)
    unknowns_cfg = {
        k: dataclasses.replace(u, representation=None) for k, u in options.unknowns.items()
    }
    grid_unknowns = [
        k for k, h in module.UNKNOWNS.items()
        if (unknowns_cfg.get(k, UnknownConfig()).axes or h.get("axes"))
    ]
    api = _discrepancy_api()
    sigma = _sigma(dataset, api)
    kind, why = output_error_kind(module, grid)
    if kind is not None and dataset.domain is not None:
        kind, why = None, ("the data have a `domain`: the evolved or solved state is computed "
                           "on the whole rectangle, not on the domain")
    record: dict = {
        "estimator": kind or "equation error",
        "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
        "why": why if kind else f"equation error only: {why}",
        "noise": {"sigma": sigma, "relative": {
            k: sigma[k] / (float(np.std(np.asarray(v))) or 1.0) for k, v in dataset.data.items()
        }},
        "tol": opt.tol,
        "steps_cap": opt.steps,
        "stages": [],
    }

    # 1. equation error: mollified data, grid unknowns
    derivatives = dataclasses.replace(options.derivatives, method="mollifier")
    options_a = dataclasses.replace(
        options, derivatives=derivatives, unknowns=unknowns_cfg,
        state=dataclasses.replace(options.state, representation="data", accuracy=None,
                                  solver=None),
        optimiser=opt,
    )
    problem_a, fields_a = build(module, dataset, options_a)
    initial = initial_values(fields_a, grid)
    eps = problem_a.derivatives.eps
    weights_a: dict = {}
    if not options.regularisers and grid_unknowns:
        weights_a = auto_smooth_weights(problem_a, fields_a, grid_unknowns)
        if kind == "evolve":  # a smoother start for the evolved fit's networks
            weights_a = {k: EVOLVE_START * w for k, w in weights_a.items()}
        options_a = dataclasses.replace(
            options_a, regularisers={k: {"smooth": w} for k, w in weights_a.items()}
        )
        problem_a, fields_a = build(module, dataset, options_a)
    eps_list = [float(e) for e in np.atleast_1d(eps)]
    say(f"auto: noise estimate {', '.join(f'{k} {v:.3g}' for k, v in sigma.items())}; "
        f"equation-error fit with mollified data, eps [{', '.join(f'{e:.4g}' for e in eps_list)}], "
        f"L-BFGS to tol {opt.tol:g}")
    if problem_a.domain is not None:  # how much of the domain the residuals see
        band = int(np.asarray(problem_a.prepare(fields_a).band).sum())
        nodes = int(np.asarray(problem_a.domain).sum())
        record["domain"] = {"nodes": nodes, "band": band}
        say(f"auto: domain of {nodes} nodes, {band} of them in the residuals' band (the rest "
            "within the kernel's reach of its edge: set by the regulariser alone)")
    result_a = fit(problem_a, fields_a, lbfgs, steps=opt.steps, chunk=chunk, tol=opt.tol,
                   progress=progress)
    say(f"auto: equation error: {result_a.message}")
    rule_fit = None
    if (kind is None and options.derivatives.eps == "auto" and grid_unknowns
            and result_a.ok and not options.regularisers):
        # no output-error stage to correct the widths' bias: choose them from the data
        def fit_one(problem, start):
            return fit(problem, start, lbfgs, steps=opt.steps, chunk=chunk, tol=opt.tol,
                       progress=progress)

        j, problems, fields, results, weights_a, widths = _width_scan(
            module, dataset, options_a, grid_unknowns, (problem_a, fields_a, result_a),
            fit_one, say)
        problem_a, fields_a, result_a = problems[j], fields[j], results[j]
        if j > 0:
            rule_fit = results[0]  # kept beside the chosen one, for comparison
        eps_list = [float(e) for e in widths["eps"]]
        record["width_choice"] = widths
        say(f"auto: equation error at the chosen widths: {result_a.message}")
    record["eps"] = eps_list
    record["stages"].append({
        "stage": "equation error", "state": "data", "eps": eps_list,
        # what ran, whatever [optimiser] says (metrics.json's "config" holds the configuration)
        "optimiser": "L-BFGS (optax, zoom line search)",
        "weights": {f"reg:{k}:smooth": w for k, w in weights_a.items()} or (
            "configured" if options.regularisers else "none"),
        "status": result_a.status.value, "steps": int(result_a.steps),
        "message": result_a.message, "final_loss": float(result_a.final_loss),
    })
    stages = {"equation error": result_a}
    if rule_fit is not None:
        stages["equation error, the rule's widths"] = rule_fit
    record["identifiability"] = _identifiability(problem_a, result_a, grid_unknowns, log)
    if kind is None or not result_a.ok:
        if kind is not None:
            record["why"] = f"the equation-error fit did not complete ({result_a.message})"
            record["estimator"] = "equation error"
        say(f"auto: estimator: {record['estimator']} ({record['why']})")
        return AutoRun(result_a, problem_a, fields_a, initial, stages, record)

    # 2. output error from the equation-error coefficients
    scan_weights = not options.regularisers and bool(grid_unknowns)
    options_b = dataclasses.replace(
        options_a, state=dataclasses.replace(options.state, representation=kind),
        derivatives=dataclasses.replace(options.derivatives, method="finite_difference"),
        regularisers=({k: {AUTO_REGULARISER: 0.0} for k in grid_unknowns} if scan_weights
                      else options.regularisers),
    )
    gauss = False
    if kind == "evolve":
        state_b = dataclasses.replace(
            options_b.state, integrator=auto_integrator(options_b.state, grid.axes))
        options_b = dataclasses.replace(options_b, state=state_b)
    problem_b, fields_b = build(module, dataset, options_b)
    fields_b = _carry(fields_b, result_a.values, list(module.UNKNOWNS))
    if kind == "evolve" and scan_weights and evolved == "auto":
        # the grid path where each Jacobian column is cheap (the exact propagator: one
        # matrix-vector product per interval and tangent)
        integrator = problem_b.prepare(fields_b).evolution.integrator
        if not isinstance(integrator, Propagator):
            say("auto: the evolved state is not advanced by the exact propagator: networks "
                "(the grid path's Jacobians would cost a whole integration per parameter)")
            evolved = "network"
    if kind == "evolve" and scan_weights and evolved in ("grid", "auto"):
        count = sum(int(np.size(a)) for a in
                    jax.tree_util.tree_leaves(eqx.filter(fields_b, eqx.is_inexact_array)))
        gauss = count <= EVOLVE_GAUSS_NEWTON_MAX
        record["parameters"] = count
        if not gauss:
            say(f"auto: evolved = 'grid' asked for, but the evolved fit has {count} "
                f"parameters (more than EVOLVE_GAUSS_NEWTON_MAX = {EVOLVE_GAUSS_NEWTON_MAX}):"
                " networks instead")
    prior_choice = gauss
    if kind == "solve" and scan_weights and api is not None:
        count = sum(int(np.size(fields_b[k].raw)) for k in grid_unknowns)
        record["parameters"] = count
        # coefficients on one axis: where it was measured (diffusion_reaction); on a 2-D
        # grid each Jacobian column is a 2-D solve (plate 21 x 21: 74 s against 10 s)
        prior_choice = (count <= EVOLVE_GAUSS_NEWTON_MAX
                        and all(len(fields_b[k].axes) == 1 for k in grid_unknowns))
    if prior_choice:  # the lead coefficient's other priors, weighed by the evidence later
        options_b = dataclasses.replace(
            options_b, regularisers=_prior_family(grid, fields_b, grid_unknowns))
        problem_b, fields_b = build(module, dataset, options_b)
        fields_b = _carry(fields_b, result_a.values, list(module.UNKNOWNS))
    record["prior_choice"] = prior_choice
    record["evolved"] = ("grid" if gauss else "network") if kind == "evolve" else None
    if kind == "evolve" and not gauss:
        # a small network per coefficient, fitted first to the equation-error profile: its
        # smoothness is the regulariser (L-BFGS on a grid coefficient under an integrated
        # state is poorly scaled against the initial profile), so no weight is scanned
        scan_weights = False
        options_b = dataclasses.replace(options_b, regularisers=options.regularisers)
        problem_b, fields_b = build(module, dataset, options_b)
        fields_b = _carry(fields_b, result_a.values, list(module.UNKNOWNS))
        fields_b, fits = _networks_like(fields_b, result_a.values, grid_unknowns, grid, opt,
                                        options.optimiser.seed)
        record["networks"] = fits
        record["criterion"] = ("no weight to choose: each coefficient is a small network "
                               "fitted to the equation-error profile, whose smoothness "
                               "regularises the output-error fit")
        say(f"auto: {record['criterion']}")
    say(f"auto: estimator: {kind} ({why})")
    solved = problem_b.solved_names()
    data_sigma = {k: sigma[k] for k in solved if k in sigma}
    record["weights"] = {}
    if api is not None:
        problem_b = api[1](problem_b, data_sigma)
    else:
        problem_b = problem_b.with_weights(
            {f"data:{k}": 1.0 / s**2 for k, s in data_sigma.items()}
        )
    record["scaling"] = "data terms divided by the estimated noise variance (chi-square/node)"
    chosen = choice = None
    if scan_weights:
        # one curvature term per grid unknown, units-free through length^4 / c^2
        factors = {
            k: _length(grid, fields_b[k].axes) ** 4 / _scale(result_a.values[k]) ** 2
            for k in grid_unknowns
        }
        lead = grid_unknowns[0]
        term = f"reg:{lead}:{AUTO_REGULARISER}"
        scan = [w * factors[lead] for w in AUTO_WEIGHTS]
        # the other unknowns' weights follow the lead's in units-free terms
        problem_b = problem_b.with_weights({
            f"reg:{k}:{AUTO_REGULARISER}": scan[-1] * factors[k] / factors[lead]
            for k in grid_unknowns[1:]
        })
        # (the solved state, and the evolved one by Gauss-Newton; an evolved state's
        # initial values are fitted beside the coefficients and count in the effective
        # parameters, as they should: they are fitted to the same data)
        if api is not None:
            # generalised cross-validation, not the discrepancy principle: it needs no noise
            # level, and the discrepancy principle moved by one or two decades of weight on
            # a noise estimate a few percent off (tuning draws of plate and
            # diffusion_reaction; `gcv`'s docstring)
            # the one-evaluation L-BFGS, its steps counting evaluations (`TRIAL_STEPS`);
            # each weight's fit from the equation-error start, or on noise-free data from
            # the previous weight's fit (`CONTINUATION_BELOW`)
            relative = record["noise"]["relative"]
            continuation = gauss or (bool(data_sigma) and all(
                relative[k] < CONTINUATION_BELOW for k in data_sigma))
            record["gcv_continuation"] = continuation
            record["gcv_gamma"] = None if gauss else 1.0 if continuation else GCV_GAMMA
            record["gcv_optimiser"] = "gauss_newton" if gauss else "lbfgs"
            if gauss:
                start = ("each fitted to convergence by Levenberg-Marquardt from the previous "
                         "weight's fit: the largest marginal likelihood (evidence), not GCV")
            elif continuation:
                start = ("each from the previous weight's fit, classical GCV (noise-free "
                         f"data: estimated relative noise below {CONTINUATION_BELOW:g})")
            else:
                start = (f"each from the equation-error estimate, modified GCV (gamma "
                         f"{GCV_GAMMA:g})")
            say(f"auto: {'evidence' if gauss else 'generalised cross-validation'} over up "
                f"to {len(scan)} weights of {term!r} (from large to small, stopping one past "
                f"the first optimum), {start}")
            if gauss:
                from ._auto import evidence

                choice = evidence(problem_b, fields_b, term=term, sigma=data_sigma,
                                  weights=scan, steps=EVOLVE_GN_TRIAL_STEPS, stop_early=True,
                                  start=EVIDENCE_START)
            else:
                choice = api[3](problem_b, fields_b, term=term, sigma=data_sigma,
                                weights=scan, optimiser=_TRIAL_LBFGS,
                                steps=TRIAL_STEPS * min(opt.steps, 100),
                                chunk=TRIAL_STEPS * chunk, stop_early=True,
                                continuation=continuation, gamma=record["gcv_gamma"])
            if prior_choice:
                from ._auto import mix_evidence

                length = _length(grid, fields_b[lead].axes)
                alternatives = [f"reg:{lead}:{se_key(f * length)}" for f in PRIOR_SE_LENGTHS]
                say(f"auto: then the marginal likelihood over the prior of {lead!r}: the "
                    f"curvature + third-derivative mix ({len(PRIOR_MIX)} ratios) and "
                    f"{len(alternatives)} squared-exponential priors, each at "
                    f"{len(PRIOR_MIX_OFFSETS)} weights")
                mix = mix_evidence(
                    problem_b.with_weights({term: float(choice.weight)}), choice.result,
                    lead=term, extra=f"reg:{lead}:{PRIOR_MIX_TERM}", sigma=data_sigma,
                    ratios=[a * length**2 for a in PRIOR_MIX],
                    offsets=PRIOR_MIX_OFFSETS, steps=EVOLVE_GN_TRIAL_STEPS,
                    alternatives=alternatives)
                record["prior_mix"] = {
                    **mix.as_dict(),
                    "mix": None if mix.ratio is None else mix.ratio / length**2,
                    "length_squared": length**2, "mixes": list(PRIOR_MIX),
                    "offsets": list(PRIOR_MIX_OFFSETS),
                    "se_lengths": [f * length for f in PRIOR_SE_LENGTHS]}
            chosen = float(choice.weight)
            record["weight_choice"] = choice.as_dict()
            record["criterion"] = choice.message
            stages["weight choice"] = choice.result
            fields_b = dict(choice.result.unknowns)
            say(f"auto: {choice.message}")
            if prior_choice:
                # the other unknowns keep following the curvature weight (an alternative
                # prior of the lead sets the lead's curvature weight to 0)
                chosen = float(mix.weights[term]) if mix.prior == "mix" else chosen
                record["criterion"] = f"{choice.message}; then {mix.message}"
                stages["prior mix"] = mix.result
                fields_b = dict(mix.result.unknowns)
                say(f"auto: {mix.message}")
        else:
            chosen = scan[len(scan) // 2]
            record["criterion"] = ("mollijax._auto is not available: a fixed units-free "
                                   f"weight {AUTO_WEIGHTS[len(scan) // 2]:g} x length^4/c^2")
            say(f"auto: {record['criterion']}")
        problem_b = problem_b.with_weights({
            f"reg:{k}:{AUTO_REGULARISER}": chosen * factors[k] / factors[lead]
            for k in grid_unknowns
        })
        record["weights"] = {f"reg:{k}:{AUTO_REGULARISER}": chosen * factors[k] / factors[lead]
                             for k in grid_unknowns}
        if prior_choice:  # the lead's own prior as chosen
            problem_b = problem_b.with_weights(mix.weights)
            record["weights"].update(mix.weights)
    # the data terms are chi-square per node: a chunk that lowers the total chi-square by
    # less than a tenth of one unit has converged statistically
    n_obs = sum(int(np.asarray(dataset.mask(k)).sum()) for k in data_sigma)
    tol_b = max(opt.tol, 0.1 / max(n_obs, 1))
    record["tol_output_error"] = tol_b
    # (the discrepancy principle as a stopping rule for the evolved fit, tau = 1 - p / n +
    # 2 sqrt(2 / n), was measured and rejected: on heat1d 101 x 101 at 5 % noise it stopped
    # at step 70 with D 4.3 % off where running to `tol_b` reached 1.0 %; on 31 x 31 it
    # helped a little, 5.4 -> 4.5 %. A chi-square within its noise of the truth's does not
    # pin D down on a fine grid.)
    steps_b, optimiser_b = opt.steps, lbfgs
    if kind == "solve":
        optimiser_b, steps_b, chunk = _TRIAL_LBFGS, TRIAL_STEPS * steps_b, TRIAL_STEPS * chunk
    if kind == "evolve" and not gauss:
        problem_b = problem_b.prepare(fields_b)
        record["integrator"] = problem_b.evolution.integrator.describe()
        if isinstance(problem_b.evolution.integrator, Propagator):
            steps_b = EVOLVE_STEPS * opt.steps
        # the one-evaluation L-BFGS (`mollijax.lbfgs`): less CPU, mostly the compilation of
        # optax's line search; its steps and chunks count evaluations, so `TRIAL_STEPS` times
        # as many (`docs/design.md` section 10)
        optimiser_b, steps_b, chunk = _TRIAL_LBFGS, TRIAL_STEPS * steps_b, TRIAL_STEPS * chunk
        say(f"auto: evolved by {record['integrator']['integrator']}, at most {steps_b} steps "
            "of the one-evaluation L-BFGS")
    if prior_choice:
        # the chosen prior's fit is converged (Levenberg-Marquardt to a relative loss
        # change below 1e-10): it is the result, polished
        from ._gauss_newton import _lm

        problem_b = problem_b.prepare(fields_b)
        if gauss:
            record["integrator"] = problem_b.evolution.integrator.describe()
        say(f"auto: {kind}d state; Levenberg-Marquardt at the chosen prior, from its fit")
        record["steps_output_error"] = opt.steps
        result_b = _lm(problem_b, fields_b, steps=opt.steps, tol=opt.tol, prepared=True)[0]
    else:
        record["steps_output_error"] = steps_b
        result_b = fit(problem_b, fields_b, optimiser_b, steps=steps_b, chunk=chunk, tol=tol_b,
                       progress=progress)
    say(f"auto: output error: {result_b.message}")
    record["stages"].append({
        "stage": "output error", "state": kind,
        "optimiser": ("Levenberg-Marquardt (mollijax.gauss_newton)" if prior_choice
                      else "L-BFGS, one evaluation per step (mollijax.lbfgs)"),
        "weights": record["weights"] or ("configured" if options.regularisers else "none"),
        "status": result_b.status.value, "steps": int(result_b.steps),
        "message": result_b.message, "final_loss": float(result_b.final_loss),
    })
    stages["output error"] = result_b
    inclusion_case = (kind == "solve" and api is not None and len(grid_unknowns) == 1
                      and len(fields_b[grid_unknowns[0]].axes) == 2
                      and fields_b[grid_unknowns[0]].constraint.kind == "positive")
    if inclusion_case and not scan_weights:
        # the model choice weighs the smooth fit at GCV's weight: configured weights skip it
        record["model_choice"] = None
        say(f"auto: no inclusion model tried for {grid_unknowns[0]!r}: the regulariser "
            "weights are configured, and the smooth-or-inclusion choice needs the weight "
            "chosen by GCV (leave [regularisers] out, or set them to \"auto\")")
    if inclusion_case and scan_weights and result_b.ok:
        # a coefficient that jumps: two values and an interface, where GCV prefers them
        lead = grid_unknowns[0]
        say(f"auto: then an inclusion in place of the smooth {lead!r} (two values; "
            f"{list(INCLUSION_COUNTS)} star-shaped curves of {list(INCLUSION_HARMONICS)} "
            "harmonics), by GCV")
        gamma = record.get("gcv_gamma") or 1.0
        trial = min(choice.curve, key=lambda t: t.score)  # GCV's choice: its chi2 and p
        if record.get("gcv_continuation"):
            # noise-free data: the classical choice lets the smooth field absorb the
            # discretisation error with most nodes as parameters (chi2 near 0); the models
            # are compared as on noisy data, the smooth field at modified GCV's trial, and
            # a smooth win keeps the classical fit
            from ._auto import _rescored

            gamma, trial = GCV_GAMMA, _rescored(choice.curve, GCV_GAMMA)
        model = choose_inclusion(problem_b, result_b, lead, data_sigma, gamma=gamma,
                                 smooth_trial=trial, say=say)
        record["model_choice"] = {**model.as_dict(), "gamma": gamma}
        record["model"] = model.model
        stages.update(model.results)
        say(f"auto: {model.message}")
        if model.model != "smooth":
            record["smooth_weights"] = record["weights"]
            record["weights"] = {k: 0.0 for k in record["weights"]}
            record["criterion"] = f"{record['criterion']}; then {model.message}"
            fields_b = model.start
            problem_b, result_b = model.problem, model.result
            record["stages"].append({
                "stage": model.model, "state": kind,
                "optimiser": "Levenberg-Marquardt (mollijax.gauss_newton)",
                "weights": "none (two values and an interface: no prior)",
                "status": result_b.status.value, "steps": int(result_b.steps),
                "message": result_b.message, "final_loss": float(result_b.final_loss),
            })
    return AutoRun(result_b, problem_b, fields_b, initial, stages, record, choice)
