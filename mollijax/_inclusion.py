"""A star-shaped inclusion: a coefficient of one value inside a closed curve, another outside.

A coefficient that jumps (a stiff particle in a matrix, a lesion in tissue) is poorly served
by nodal values under a smoothness prior: the prior smears the jump over several nodes, and
the nodes of that band carry most of the error. Where the data say the coefficient has two
values, a model with two values and an interface has a handful of parameters, fits the data
as well, and places the interface to a fraction of a grid step.

    Inclusion               the field: two positive values and star-shaped interfaces
    inclusion_posterior     the posterior mean and std of the coefficient at each node
    inclusion_start         the two-value reading of a smooth estimate (the start of a fit)
    choose_inclusion        smooth field or inclusion, and how many harmonics, by GCV
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
from jaxtyping import Array, Float

from ._errors import GridMismatchError, MollijaxError
from ._fields import AbstractField, Constraint, _axes_tuple, _broadcast, check_axes
from ._grid import Grid

INCLUSION_SOFTNESS = 0.25
"""The interface's width in the smallest grid step: the logistic blend `S(d / (s h))`."""

INCLUSION_HARMONICS = (1, 3, 5)
"""`auto_run`'s candidate shapes: the highest harmonic `M` of the log-radius (1: a circle;
3: harmonics 2 and 3; 5: harmonics 2 to 5), each nested in the next."""

INCLUSION_COUNTS = (1, 2)
"""`auto_run`'s candidate numbers of separate curves (one inside value in all of them)."""

INCLUSION_LEVELS = (0.5, 0.6, 0.7, 0.8)
"""`inclusion_start`'s levels, from the majority's value (0) to the minority's (1), at which
it looks for `count` separate regions (the first level that has them)."""

INCLUSION_MIN_NODES = 4
"""`inclusion_start` refuses a two-value reading with fewer nodes on the minority side."""

INCLUSION_HOPELESS = 1e3
"""`choose_inclusion` fits no further candidate once the first (one circle) scores a GCV `V`
this many times the smooth field's: a smooth coefficient. Seen: a smooth `k` or plate
stiffness 1e4 to 2e6 times (noise-free) and 1.6 to 2.9 times (5 % noise); the extra
harmonics and the second curve lowered `V` by at most a factor 11 below the circle's, and
an inclusion that won had a circle below the smooth field's `V` already. It saves the
candidates' Levenberg-Marquardt fits (25 s of the noise-free plate's 64 s at 33 x 33)."""


def inclusion_margin(count: float) -> float:
    """The relative margin by which an inclusion's GCV `V` must undercut the smooth field's
    to replace it: `sqrt(2 / n)`, `n` the observed nodes, the relative standard deviation
    of a chi-square per node (`V`'s numerator) from `n` noisy values. A two-value field is a
    strong assumption; below that margin the two scores are not told apart by the data, and
    the smooth field, the assumption-free default, stays. (Measured on tuning draws 0-4,
    ad hoc: a smooth bump in a plate's stiffness, 41 x 41 at 5 %, had an inclusion win by
    0.9-1.3 % with errors 5.6-5.7 % against the smooth field's 3.2-4.6 %; true inclusions in
    `darcy2d` at 33 x 33 won by 16-19 % at 5 % noise and 54-56 % at 1 %.)"""
    return math.sqrt(2.0 / max(count, 1.0))


class Inclusion(AbstractField):
    """A coefficient with the value `inside` within a star-shaped curve and `outside` beyond.

    In the coordinates of the two axes, with `theta` and `rho` the polar angle and radius
    about the `centre`,

        r(theta) = exp(a_0 + sum_{m=2}^{M} a_m cos(m theta) + b_m sin(m theta)),
        d(x) = r(theta(x)) - rho(x)            (> 0 inside),
        1 / k(x) = 1 / k_out + (1 / k_in - 1 / k_out) S(d(x) / (s h)),

    `S` the logistic function, `h` the smallest grid step and `s` the `softness`. The first
    harmonic is left out: it would move the curve as the centre does. The values blend
    harmonically, as resistances in series do: a flux across the interface sees the harmonic
    mean of the two sides (a finite-volume scheme's edge value), and with it a fitted disk's
    radius agrees with the simulator's (ad hoc, darcy2d 33 x 33 without noise: 0.200 for the
    truth's 0.2, against 0.191 with an arithmetic blend). `k_in` and `k_out` are positive
    (softplus of raw parameters). With several curves (`count` of them, one inside value) a
    node is inside where it is inside any: `S` above becomes `1 - prod_j (1 - S(d_j /
    (s h)))`, and `distance` is `max_j d_j`.

    **Arguments:**

    - `centre`: the curve's centre, one coordinate per axis; or one row of two per curve.
    - `radius`: its mean radius (> 0), in the axes' units; or one per curve.
    - `inside`, `outside`: the two values (> 0).
    - `axes`: the two grid axes it lives on (default `("x", "y")`).
    - `harmonics`: `M` above (an integer >= 1; 1 is a circle).
    - `softness`: `s` above (> 0).
    """

    params: Float[Array, " c"]
    constraint: Constraint
    axes: tuple[str, ...] = eqx.field(static=True)
    harmonics: int = eqx.field(static=True)
    softness: float = eqx.field(static=True)
    count: int = eqx.field(static=True)
    smooth: ClassVar[bool] = False

    def __init__(self, centre, radius, inside: float, outside: float,
                 axes: str | Sequence[str] = ("x", "y"), harmonics: int = 1,
                 softness: float = INCLUSION_SOFTNESS):
        self.axes = _axes_tuple(axes)
        if len(self.axes) != 2:
            raise MollijaxError(f"Inclusion lives on two axes, got `axes` = {self.axes}.")
        if isinstance(harmonics, bool) or not isinstance(harmonics, int) or harmonics < 1:
            raise MollijaxError(
                f"Inclusion `harmonics` must be an integer >= 1 (1: a circle), got {harmonics!r}.")
        centre = np.asarray(centre, dtype=np.float64)
        centres = centre[None] if centre.ndim == 1 else centre
        if centres.ndim != 2 or centres.shape[1] != 2 or not np.all(np.isfinite(centres)):
            raise MollijaxError(
                "Inclusion `centre` must be two finite coordinates (or one row of two per "
                f"curve), got {centre.tolist()!r}.")
        radii = np.atleast_1d(np.asarray(radius, dtype=np.float64))
        if radii.shape != (len(centres),):
            raise MollijaxError(
                f"Inclusion `radius` must give one radius per centre ({len(centres)}), got "
                f"{radii.tolist()!r}.")
        for name, v in (("radius", float(radii.min())), ("inside", inside),
                        ("outside", outside), ("softness", softness)):
            if isinstance(v, bool) or not np.isfinite(v) or not v > 0:
                raise MollijaxError(f"Inclusion `{name}` must be a finite number > 0, got {v!r}.")
        self.harmonics = harmonics
        self.softness = float(softness)
        self.count = len(centres)
        self.constraint = Constraint("positive")
        # one array (one leaf: a Jacobian by forward mode is one pass over the model): per
        # curve its centre (2) and log-radius a_0, a_2..a_M, b_2..b_M; then raw inside, raw
        # outside
        blocks = []
        for c, r in zip(centres, radii, strict=True):
            shape = np.zeros(1 + 2 * (harmonics - 1))
            shape[0] = np.log(float(r))
            blocks.append(np.concatenate([c, shape]))
        self.params = jnp.asarray(np.concatenate(
            [*blocks, self.constraint.inverse([float(inside), float(outside)])]))

    @property
    def _blocks(self) -> Float[Array, "k b"]:
        return self.params[:-2].reshape(self.count, -1)

    @property
    def centre(self) -> Array:
        """The centre (2,), or one row per curve (count, 2) where there are several."""
        c = self._blocks[:, :2]
        return c[0] if self.count == 1 else c

    @property
    def shape(self) -> Array:
        """The log-radius coefficients `a_0, a_2..a_M, b_2..b_M` (one row per curve where
        there are several)."""
        s = self._blocks[:, 2:]
        return s[0] if self.count == 1 else s

    @property
    def inside(self) -> Float[Array, ""]:
        return self.constraint(self.params[-2])

    @property
    def outside(self) -> Float[Array, ""]:
        return self.constraint(self.params[-1])

    def _coordinates(self, grid: Grid):
        check_axes(self.axes, grid, "Inclusion")
        i, j = (grid.axis_index(a) for a in self.axes)
        dtype = self.params.dtype
        x, y = (jnp.asarray(grid.coords(a), dtype=dtype) for a in self.axes)
        return x, y, min(grid.spacing[i], grid.spacing[j])

    def distances(self, grid: Grid) -> Float[Array, "k nx ny"]:
        """`d_j = r_j(theta_j) - rho_j` of each curve at each node (> 0 inside it)."""
        x, y, _ = self._coordinates(grid)
        m = self.harmonics - 1
        out = []
        for block in self._blocks:
            dx, dy = x[:, None] - block[0], y[None, :] - block[1]
            rho = jnp.sqrt(dx**2 + dy**2 + jnp.finfo(dx.dtype).tiny)
            theta = jnp.arctan2(dy, dx)
            log_r = jnp.full(theta.shape, block[2])
            if m:
                orders = jnp.arange(2, self.harmonics + 1, dtype=theta.dtype)
                angle = orders * theta[..., None]
                log_r = log_r + jnp.cos(angle) @ block[3:3 + m] \
                    + jnp.sin(angle) @ block[3 + m:]
            out.append(jnp.exp(log_r) - rho)
        return jnp.stack(out)

    def distance(self, grid: Grid) -> Float[Array, "nx ny"]:
        """`d = max_j d_j` at each node of the two axes' sub-grid: > 0 inside some curve."""
        return jnp.max(self.distances(grid), axis=0)

    def inside_weight(self, grid: Grid) -> Float[Array, "nx ny"]:
        """`1 - prod_j (1 - S(d_j / (s h)))`: 1 well inside a curve, 0 well outside all."""
        step = self._coordinates(grid)[2]
        outside = jnp.prod(jax.nn.sigmoid(-self.distances(grid) / (self.softness * step)),
                           axis=0)
        return 1.0 - outside

    def on_subgrid(self, grid: Grid) -> Array:
        s = self.inside_weight(grid)
        return 1.0 / (1.0 / self.outside + (1.0 / self.inside - 1.0 / self.outside) * s)

    def at_point(self, grid, index, x):
        return self.on_grid(grid).reshape(-1)[index]


def inclusion_start(values, grid: Grid, axes=("x", "y"), harmonics: int = 1,
                    count: int = 1) -> Inclusion:
    """The two-value reading of a smooth estimate `values` (on the sub-grid of `axes`): nodes
    above the midpoint of its 5 % and 95 % quantiles on one side, below on the other; the
    smaller side is the inclusion. With `count = 1` its centroid is the centre and the
    radius that of a disk of its area; with `count = K` the `K` largest connected regions
    (4-neighbours) beyond the first of `INCLUSION_LEVELS` that has `K` each give a curve so
    (smoothing joins nearby inclusions at the midpoint). The two values are each side's mean. A
    `MollijaxError` where the smaller side (or one of the `K` regions) has fewer than
    `INCLUSION_MIN_NODES` nodes or a value is not positive."""
    from scipy import ndimage

    axes = _axes_tuple(axes)
    check_axes(axes, grid, "inclusion_start")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise MollijaxError(f"inclusion_start: `count` must be an integer >= 1, got {count!r}.")
    v = np.asarray(values, dtype=np.float64)
    i, j = (grid.axis_index(a) for a in axes)
    expected = (grid.shape[i], grid.shape[j])
    if v.shape != expected:
        raise GridMismatchError(
            f"inclusion_start: `values` has shape {v.shape}; the axes {axes} need {expected}.")
    if not np.all(np.isfinite(v)):
        raise MollijaxError("inclusion_start: `values` contains NaN or inf.")
    lo, hi = np.quantile(v, [0.05, 0.95])
    above = v > 0.5 * (lo + hi)
    inside = above if above.sum() <= (~above).sum() else ~above
    if inside.sum() < INCLUSION_MIN_NODES or (~inside).sum() < INCLUSION_MIN_NODES:
        raise MollijaxError(
            f"inclusion_start: the two-value reading of `values` puts {int(inside.sum())} "
            f"nodes on its smaller side (at least {INCLUSION_MIN_NODES} needed): no inclusion "
            "to start from.")
    k_in, k_out = float(v[inside].mean()), float(v[~inside].mean())
    if not (k_in > 0 and k_out > 0):
        raise MollijaxError(
            f"inclusion_start: the two sides' means ({k_in:.3g} inside, {k_out:.3g} outside) "
            "must be positive.")
    if count == 1:
        regions = [inside]
    else:
        # separate regions: at the midpoint, or, where smoothing has joined them, at a
        # level nearer the inclusion's value
        minority, majority = (hi, lo) if inside is above else (lo, hi)
        found = 0
        for level in INCLUSION_LEVELS:
            t = majority + level * (minority - majority)
            side = v > t if inside is above else v < t
            labels, _ = ndimage.label(side)
            sizes = np.bincount(labels.ravel())[1:]
            order = [r + 1 for r in np.argsort(sizes)[::-1]
                     if sizes[r] >= INCLUSION_MIN_NODES]
            found = max(found, len(order))
            if len(order) >= count:
                break
        if found < count:
            raise MollijaxError(
                f"inclusion_start: the two-value reading of `values` has at most {found} "
                f"separate region(s) of at least {INCLUSION_MIN_NODES} nodes (levels "
                f"{list(INCLUSION_LEVELS)} of the way to the inclusion's value); `count` = "
                f"{count} needs as many.")
        regions = [labels == r for r in order[:count]]
    X, Y = np.meshgrid(grid.coords(i), grid.coords(j), indexing="ij")
    cell = grid.spacing[i] * grid.spacing[j]
    centres = [(X[r].mean(), Y[r].mean()) for r in regions]
    radii = [np.sqrt(float(r.sum()) * cell / np.pi) for r in regions]
    if count == 1:
        return Inclusion(centres[0], radii[0], k_in, k_out, axes, harmonics)
    return Inclusion(centres, radii, k_in, k_out, axes, harmonics)


def _layout(old: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
    """Index of each parameter of a field of `new = (curves, harmonics)` among those of a
    field of `old = (curves, harmonics)`: -1 for a log-radius coefficient the old field does
    not have, -2 for the parameters of a curve beyond its own (to be parked)."""
    (c_old, h_old), (c_new, h_new) = old, new
    m_old, m_new = h_old - 1, h_new - 1
    b_old, b_new = 3 + 2 * m_old, 3 + 2 * m_new
    index = []
    for j in range(c_new):
        if j >= c_old:
            index += [-2] * b_new
            continue
        index += [j * b_old + q for q in range(3)]
        for part in range(2):  # cosines, then sines
            index += [j * b_old + 3 + part * m_old + q if q < m_old else -1
                      for q in range(m_new)]
    n_old = c_old * b_old
    return np.array(index + [n_old, n_old + 1])


def with_harmonics(field: Inclusion, harmonics: int, count: int | None = None,
                   grid: Grid | None = None) -> Inclusion:
    """`field` with its log-radius extended to `harmonics` (new coefficients 0: the same
    curves), or cut to it; with `count`, its first `count` curves, and curves it lacks
    parked far outside `grid` (a radius of a millionth of a step, a thousand extents away:
    no node sees them, so nested models of fewer curves share one structure)."""
    count = field.count if count is None else count
    new = Inclusion(np.zeros((count, 2)) if count > 1 else (0.0, 0.0),
                    np.ones(count) if count > 1 else 1.0, 1.0, 1.0, field.axes, harmonics,
                    field.softness)
    index = _layout((field.count, field.harmonics), (count, harmonics))
    old = np.asarray(field.params)
    params = np.where(index >= 0, old[np.maximum(index, 0)], 0.0)
    if np.any(index == -2):
        if grid is None:
            raise MollijaxError("internal: parking a curve needs the grid.")
        i, j = (grid.axis_index(a) for a in field.axes)
        extent = max(grid.shape[i] * grid.spacing[i], grid.shape[j] * grid.spacing[j])
        far = (grid.origin[i] - 1e3 * extent, grid.origin[j] - 1e3 * extent)
        block = 3 + 2 * (harmonics - 1)
        for c in range(field.count, count):
            params[c * block:c * block + 3] = (*far, np.log(1e-6 * min(grid.spacing)))
    return eqx.tree_at(lambda f: f.params, new, jnp.asarray(params))


def _temperature(problem, sigma: Mapping[str, float]) -> float:
    """`T = 2 w_f sigma_f^2 / n_f`, the same for every data term (module docstring of
    `mollijax._uncertainty`)."""
    from ._terms import DataMisfit
    from ._uncertainty import _observed_count

    temps = {}
    for t in problem.terms:
        if isinstance(t, DataMisfit):
            if t.field not in sigma:
                raise MollijaxError(
                    f"inclusion_posterior: `sigma` has no value for the data field {t.field!r}.")
            temps[t.name] = (2.0 * float(t.weight) * float(sigma[t.field]) ** 2
                             / _observed_count(problem, t))
    if not temps:
        raise MollijaxError("inclusion_posterior: the problem has no data term.")
    values = np.array(list(temps.values()))
    if np.ptp(values) > 1e-6 * values.max():
        raise MollijaxError(
            f"inclusion_posterior: the data terms read as likelihoods at different "
            f"temperatures 2 w sigma^2 / n {temps}; one temperature is needed (`mj.scaled` "
            "gives 2 / n: equal where the fields have the same number of observed nodes).")
    return float(values[0])


def inclusion_posterior(problem, fitted, name: str, sigma: Mapping[str, float] | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The posterior mean and standard deviation of an `Inclusion` unknown at each node.

    With the Laplace posterior `theta ~ N(theta*, T H^-1)` of every fitted parameter at the
    fit (`H` the Gauss-Newton Hessian, `T` the loss's temperature: `mollijax._uncertainty`)
    and the interface's signed distance linearised, `d_i ~ N(d_i*, s_i^2)` with
    `s_i^2 = T g_i^T H^-1 g_i`, `g_i = dd_i / dtheta`, the node lies inside with probability
    `p_i = Phi(d_i* / s_i)` and the coefficient's posterior mean and std there are

        E k_i = k_out + (k_in - k_out) p_i,
        var k_i = p_i var(k_in) + (1 - p_i) var(k_out) + p_i (1 - p_i) (k_in - k_out)^2,

    the variance by the law of total variance over the node's side, `var(k_in)` and
    `var(k_out)` from the same posterior (the side and the values taken as independent).
    The mean is the estimate that minimises the expected squared error at each node (the
    Bayes estimate), where the fitted field itself puts every node on one side or blends
    it by the fixed softness: at a node a fraction of a step from the curve the side is
    uncertain, and the mean hedges. Away from the interface the std is the value's own;
    near it the jump's. Both are the model's: a shape the harmonics cannot follow, or the
    discretisation's error, is not in them (on another simulator's finite-element data at
    3 % noise the +- 2 std band held the truth at only 9-12 % of the nodes: the values were
    biased by the solved state's discretisation error, more than by the noise).

    **Arguments:** `problem` as fitted (scaled by the noise, or `sigma` given); `fitted` a
    `FitResult` or the unknowns; `name` the `Inclusion` unknown; `sigma`: `{field: noise
    std}` of the data fields (default: `noise_sigma` of the observations).

    **Returns:** `(mean, std)`, NumPy arrays on the unknown's two-axis sub-grid.
    """
    from ._auto import noise_sigma
    from ._gauss_newton import _as_numpy, _linearise

    unknowns = dict(getattr(fitted, "unknowns", fitted))
    field = unknowns.get(name)
    if not isinstance(field, Inclusion):
        raise MollijaxError(
            f"inclusion_posterior: unknown {name!r} is {type(field).__name__}, not an Inclusion.")
    if sigma is None:
        sigma = noise_sigma(problem.data, problem.masks)
    lin = _as_numpy(_linearise(problem.prepare(unknowns), unknowns))
    return _posterior(problem, unknowns, name, lin, _temperature(problem, sigma))


@eqx.filter_jit
def _jacobians(unknowns, name: str, grid: Grid):
    """`d(d_i)/dtheta` at every node and `d(k_in, k_out)/dtheta`, in the flat parameters."""
    from ._gauss_newton import _split

    flat, _, static, unravel = _split(unknowns)

    def of(t):
        field = eqx.combine(unravel(t), static)[name]
        return field.distance(grid).ravel(), jnp.stack([field.inside, field.outside])

    return jax.jacfwd(of)(flat)


def _free_mask(unknowns, name: str, harmonics: int, count: int) -> np.ndarray:
    """Over the flat parameters of `unknowns`: every parameter, except the log-radius
    coefficients of `name` (an `Inclusion`) above `harmonics` and its curves beyond the
    first `count` (parked)."""
    field = unknowns[name]
    # the candidate's own parameters are those its layout in the field's finds
    own = (_layout((count, harmonics), (field.count, field.harmonics)) >= 0).astype(float)
    params, _ = eqx.partition(unknowns, eqx.is_inexact_array)
    ones = jax.tree_util.tree_map(lambda a: np.ones(np.shape(a)), params)
    ones = eqx.tree_at(lambda t: t[name].params, ones, own)
    return np.asarray(jax.flatten_util.ravel_pytree(ones)[0]) > 0.5


def _restrict(lin, free: np.ndarray):
    """A linearisation (`_linearise`, NumPy) in the parameters `free` only."""
    r, jac, pen, g_pen, h_pen = lin
    return (r, {k: j[:, free] for k, j in jac.items()}, pen, g_pen[free],
            h_pen[np.ix_(free, free)])


def _posterior(problem, unknowns, name: str, lin, temperature: float, free=None):
    """`inclusion_posterior` from a linearisation `lin` (`_linearise`, NumPy) at `unknowns`,
    in the parameters `free` (a boolean mask; default all) where `lin` is restricted to them
    (`_restrict`): the others are held, without spread."""
    from ._gauss_newton import gn_hessian

    field, grid = unknowns[name], problem.grid
    g, q = (np.asarray(a, dtype=np.float64) for a in _jacobians(unknowns, name, grid))
    if free is not None:
        g, q = g[:, free], q[:, free]
    cov = temperature * np.linalg.pinv(gn_hessian(lin), hermitian=True)
    s = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, cov, g), 0.0))
    var_in, var_out = np.maximum(np.einsum("ij,jk,ik->i", q, cov, q), 0.0)
    d = np.asarray(field.distance(grid), dtype=np.float64)
    z = np.where(s > 0, d.ravel() / np.where(s > 0, s, 1.0), np.sign(d.ravel()) * np.inf)
    p = np.asarray(jax.scipy.special.ndtr(z), dtype=np.float64).reshape(d.shape)
    k_in, k_out = float(field.inside), float(field.outside)
    # the law of total variance over the side: each side's value spread, and the jump
    var = p * var_in + (1.0 - p) * var_out + p * (1.0 - p) * (k_in - k_out) ** 2
    return k_out + (k_in - k_out) * p, np.sqrt(var)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """`choose_inclusion`'s choice: `model` (`"smooth"`, `"inclusion M"` or `"K inclusions
    M"`), the `result` of the chosen model (for an inclusion, its `values` the posterior
    mean), the `problem` it was fitted on, every `candidate` as `{model, chi2, p, V, status,
    message}` (and, for an inclusion, `results[model]`: its fit with the posterior mean as
    values), the chosen inclusion's `start` unknowns (None for the smooth field), and the
    `margin` an inclusion had to win by (`inclusion_margin`)."""

    model: str
    result: object
    problem: object
    candidates: tuple[dict, ...]
    results: dict
    gamma: float
    message: str
    start: dict | None = None
    margin: float = 0.0

    def as_dict(self) -> dict:
        return {"criterion": f"gcv (gamma {self.gamma:g})", "model": self.model,
                "candidates": list(self.candidates), "message": self.message,
                "margin": self.margin}


def _label(count: int, harmonics: int) -> str:
    return f"inclusion {harmonics}" if count == 1 else f"{count} inclusions {harmonics}"


def choose_inclusion(problem, smooth, name: str, sigma: Mapping[str, float], *,
                     gamma: float = 1.0, harmonics: Sequence[int] = INCLUSION_HARMONICS,
                     counts: Sequence[int] = INCLUSION_COUNTS, steps: int = 100,
                     smooth_trial=None, say=None) -> ModelChoice:
    """A smooth fit of the grid unknown `name`, or an `Inclusion` in its place, by GCV.

    Each candidate is scored as `gcv` scores weights,

        V = chi2 / (1 - gamma p / n)^2,

    `chi2` the chi-square per observed node of its fit, `p` its effective number of
    parameters (the trace of the influence matrix: about 5 for a circle, `K (1 + 2 M) + 2`
    for `K` curves of `M` harmonics), `n` the observed nodes; the smallest `V` wins. For
    each count of curves in `counts` the inclusions start from the two-value reading of the
    smooth fit (`inclusion_start`; a count its reading has too few separate regions for is
    skipped) and are fitted by Levenberg-Marquardt in turn, each harmonic count from the
    previous one's fit, with `name`'s regularisers at weight 0 (they were priors for nodal
    values). A candidate whose fit fails is scored `inf` and said so. Candidates are labelled
    `"inclusion M"` (one curve) and `"K inclusions M"`.

    **Arguments:** `problem`: the scaled output-error problem of the smooth fit (its weights
    as fitted); `smooth`: that fit (`FitResult`); `sigma`: the noise std of each observed
    field; `gamma`: GCV's factor (as the weight's choice used); `harmonics`, `counts`: the
    shapes tried; `steps`: Levenberg-Marquardt's cap per fit; `smooth_trial`: the `Trial`
    of `gcv`'s curve that chose the smooth fit's weight, whose `chi2` and `p` (from its
    `threshold`, `1 - p / n`) then score the smooth field without another influence trace
    (about 10 s at 4225 coefficient nodes); `say`: a logger.
    """
    from ._auto import _chi2, _effective_parameters, _gcv_value, _observed
    from ._gauss_newton import _lm, influence_trace

    say = say or (lambda _msg: None)
    names = _observed(problem, smooth.unknowns)
    count = float(sum(np.asarray(problem.masks[f]).sum() for f in names))
    if smooth_trial is not None:
        chi2, p = float(smooth_trial.misfit), count * (1.0 - float(smooth_trial.threshold))
    else:
        chi2 = _chi2(problem, problem.grid_values(smooth.unknowns), sigma, names)
        p = _effective_parameters(problem.prepare(smooth.unknowns), smooth.unknowns,
                                  tuple(names))
    candidates = [{"model": "smooth", "chi2": chi2, "p": p,
                   "V": _gcv_value(chi2, p / count, gamma), "status": "completed",
                   "message": "the smooth fit"}]
    results: dict = {}
    starts: dict = {}
    fields = dict(smooth.unknowns)
    own = [t.name for t in problem.terms if t.name.startswith(f"reg:{name}:")]
    bare = problem.with_weights({t: 0.0 for t in own})
    temperature = _temperature(bare, sigma)
    top, most, grid = max(harmonics), max(counts), problem.grid
    hopeless = False
    for curves in sorted(counts):
        try:
            start = inclusion_start(smooth.values[name], grid, fields[name].axes,
                                    count=curves)
        except MollijaxError as error:
            say(f"auto: no inclusion of {curves} curve(s) tried: {error}")
            continue
        # one structure for every candidate (the most curves and harmonics), the higher
        # harmonics held at 0 and the missing curves parked outside the grid where a
        # candidate has fewer: one compiled linearisation serves them all
        current = {**fields, name: with_harmonics(start, top, most, grid)}
        for m in sorted(harmonics):
            label = _label(curves, m)
            free = _free_mask(current, name, m, curves)
            try:
                res, lin = _lm(bare, current, steps=steps, tol=1e-10, free=free)
            except MollijaxError as error:
                candidates.append({"model": label, "chi2": float("nan"), "p": float("nan"),
                                   "V": float("inf"), "status": "failed",
                                   "message": str(error)})
                break
            if not res.ok or not np.isfinite(res.final_loss):
                candidates.append({"model": label, "chi2": float("nan"), "p": float("nan"),
                                   "V": float("inf"), "status": res.status.value,
                                   "message": res.message})
                break
            current = res.unknowns
            field = current[name]
            lin = _restrict(lin, free)
            c2 = _chi2(bare, bare.grid_values(current), sigma, names)
            pm = influence_trace(lin, [f"data:{f}" for f in names])
            mean, std = _posterior(bare, current, name, lin, temperature, free)
            own_field = with_harmonics(field, m, curves)
            results[label] = dataclasses.replace(
                res, unknowns={**current, name: own_field},
                values={**res.values, name: mean},
                fields={**res.fields, name: np.asarray(_broadcast(
                    jnp.asarray(mean), bare.grid, field.axes))})
            starts[label] = {**fields, name: with_harmonics(start, m)}
            centre = np.asarray(own_field.centre, dtype=np.float64)
            radius = np.exp(np.asarray(own_field.shape, dtype=np.float64)[..., 0])
            candidates.append({"model": label, "chi2": c2, "p": pm,
                               "V": _gcv_value(c2, pm / count, gamma),
                               "status": res.status.value, "message": res.message,
                               "inside": float(field.inside), "outside": float(field.outside),
                               "centre": centre.tolist(), "radius": radius.tolist(),
                               "max_std": float(std.max())})
            first, smooth_v = candidates[-1]["V"], candidates[0]["V"]
            if len(candidates) == 2 and first > INCLUSION_HOPELESS * smooth_v:
                hopeless = True
                say(f"auto: no further inclusion fitted: {label}'s V {first:.4g} is more than "
                    f"{INCLUSION_HOPELESS:g} times the smooth field's {smooth_v:.4g}")
                break
        if hopeless:
            break
    best = min(candidates, key=lambda c: c["V"])
    scores = ", ".join(f"{c['model']} {c['V']:.4g}" for c in candidates)
    margin = inclusion_margin(count)
    if best["model"] == "smooth" or not best["V"] < (1.0 - margin) * candidates[0]["V"]:
        why = ("smallest" if best["model"] == "smooth" else
               f"not the smallest: {best['model']}'s is, but not below the smooth field's by "
               f"the margin sqrt(2 / n) = {margin:.3g} that tells them apart")
        msg = f"the smooth field kept: GCV V = chi2 / (1 - {gamma:g} p / n)^2 {why} ({scores})"
        return ModelChoice("smooth", smooth, problem, tuple(candidates), results, gamma, msg,
                           None, margin)
    msg = (f"{best['model']} (curves, harmonics) in place of the smooth field: GCV V = chi2 / "
           f"(1 - {gamma:g} p / n)^2 smallest ({scores}); inside {best['inside']:.4g}, "
           f"outside {best['outside']:.4g}, reported as the posterior mean at each node")
    return ModelChoice(best["model"], results[best["model"]], bare, tuple(candidates), results,
                       gamma, msg, starts[best["model"]], margin)
