"""The state as the solution of an evolution equation: `u_t = F(u, unknowns)`, integrated in time.

A residual `u_t - F` evaluated on a fitted or mollified state only asks the PDE to hold
approximately; an `Evolution` makes it hold by construction. The state fields are integrated
along the grid's time axis from their initial values (unknowns on the spatial axes), by the
classical fourth-order Runge-Kutta method with `substeps` steps per grid interval:

    k1 = F(u),  k2 = F(u + tau/2 k1),  k3 = F(u + tau/2 k2),  k4 = F(u + tau k3),
    u <- u + tau/6 (k1 + 2 k2 + 2 k3 + k4),          tau = dt / substeps.

`F` is a plain function of a `Scope` on the spatial sub-grid, written like the maths:
`lambda s: s.d(s.D * s.d(s.u, "x"), "x")`. Coefficients that depend on time are held at their
value at the start of each grid interval. Conditions of the `Problem` on an evolved field
whose position does not involve the time axis (`Condition("u", {"x": 0}, 0.0)`) are imposed
exactly: those nodes keep their prescribed value and their rate of change is zero.

The data misfit of the integrated state is then the whole fit: the output-error (maximum
likelihood, for Gaussian noise) estimator, whose derivatives are never taken of noisy data.
Explicit steps are stable only for `tau |lambda| < 2.78`, `lambda` the largest eigenvalue of
the Jacobian of `F`; `substeps=None` estimates `|lambda|` by power iteration at the initial
unknowns and takes `safety` times the number of steps that requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._differentiators import AbstractDifferentiator, FiniteDifference
from ._errors import MollijaxError
from ._grid import Grid
from ._scope import Scope, UnknownFieldError

RK4_STABILITY = 2.78  # |tau lambda| limit of classical RK4 on the negative real axis


class Evolution(eqx.Module):
    """Integrate the named state fields in time instead of fitting them freely.

    **Arguments:**

    - `rhs`: `{field: F}` with `F(s)` the time derivative of `field` as a function of a
      `Scope` on the spatial sub-grid (a single function means `{"u": F}`).
    - `time`: the name of the time axis of the problem's grid.
    - `substeps`: Runge-Kutta steps per grid interval of the time axis; `None` chooses them
      from the stiffness of `F` at the initial unknowns (see `safety`).
    - `derivatives`: the spatial differentiator: `None` (second-order `FiniteDifference`),
      a differentiator built on the spatial sub-grid, or a function `grid -> differentiator`.
    - `safety`: factor over the stability limit when `substeps=None` (the coefficients move
      during a fit; a run that still goes unstable stops as `diverged`).
    """

    rhs: tuple[tuple[str, Callable], ...] = eqx.field(static=True)
    time: str = eqx.field(static=True)
    substeps: int | None = eqx.field(static=True)
    derivatives: object = eqx.field(static=True)
    safety: float = eqx.field(static=True)

    def __init__(
        self,
        rhs: Callable | Mapping[str, Callable],
        *,
        time: str = "t",
        substeps: int | None = None,
        derivatives: AbstractDifferentiator | Callable | None = None,
        safety: float = 2.0,
    ):
        if callable(rhs):
            rhs = {"u": rhs}
        if not isinstance(rhs, Mapping) or not rhs or not all(callable(f) for f in rhs.values()):
            raise MollijaxError(
                "Evolution `rhs` must be a function or a non-empty dict of field -> function."
            )
        self.rhs = tuple((str(k), f) for k, f in rhs.items())
        self.time = str(time)
        if substeps is not None and (int(substeps) != substeps or substeps < 1):
            raise MollijaxError(
                f"Evolution `substeps` must be a positive integer or None, got {substeps!r}."
            )
        self.substeps = None if substeps is None else int(substeps)
        self.derivatives = derivatives
        if not safety >= 1.0:
            raise MollijaxError(f"Evolution `safety` must be >= 1, got {safety!r}.")
        self.safety = float(safety)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.rhs)

    # ------------------------------------------------------------------ grids
    def check_grid(self, grid: Grid) -> None:
        if self.time not in grid.axes:
            raise MollijaxError(
                f"Evolution time axis {self.time!r} is not an axis of the grid {grid.axes}."
            )
        if grid.ndim < 2:
            raise MollijaxError(
                "An Evolution needs a grid with a time axis and at least one spatial axis."
            )
        self.differentiator(grid)

    def spatial_grid(self, grid: Grid) -> Grid:
        """The grid without its time axis."""
        keep = [a for a in range(grid.ndim) if grid.axes[a] != self.time]
        return Grid(
            tuple(grid.shape[a] for a in keep),
            tuple(grid.spacing[a] for a in keep),
            tuple(grid.origin[a] for a in keep),
            tuple(grid.axes[a] for a in keep),
        )

    def differentiator(self, grid: Grid) -> AbstractDifferentiator:
        space = self.spatial_grid(grid)
        d = self.derivatives
        if d is None:
            return FiniteDifference(space)
        if not isinstance(d, AbstractDifferentiator) and callable(d):
            d = d(space)
        if not isinstance(d, AbstractDifferentiator):
            raise MollijaxError(
                "Evolution `derivatives` must be None, a differentiator on the spatial grid or "
                f"a function grid -> differentiator, got {type(d).__name__}."
            )
        if d.grid != space:
            raise MollijaxError(
                f"Evolution `derivatives` was built for {d.grid}; the spatial grid is {space} "
                f"(the problem's grid without {self.time!r})."
            )
        return d


def _pinned(conditions, name: str, grid: Grid, time: str):
    """`(mask, values)` on the full grid of the conditions that fix nodes of `name` exactly."""
    mask = np.zeros(grid.shape, bool)
    values = jnp.zeros(grid.shape)
    for c in conditions:
        if c.field != name or c.mask is not None or any(a == time for a, _ in c.index):
            continue
        c.select(values, grid)  # names an index out of range
        idx: list = [slice(None)] * grid.ndim
        for axis, i in c.index:
            idx[grid.axis_index(axis)] = i
        mask[tuple(idx)] = True
        values = values.at[tuple(idx)].set(jnp.broadcast_to(c.value, values[tuple(idx)].shape))
    return mask, values


def _at_time(arr, t_axis: int, k):
    return jax.lax.dynamic_index_in_dim(arr, k, axis=t_axis, keepdims=False)


def _system(evolution: Evolution, grid: Grid, unknowns: Mapping, known: Mapping, conditions,
            used: set | None):
    """`(initial state, rates(state, k), pin(state, k))` of the evolution on `grid`."""
    t_axis = grid.axis_index(evolution.time)
    space = evolution.spatial_grid(grid)
    diff = evolution.differentiator(grid)
    names = evolution.names
    for name in names:
        if name not in unknowns:
            raise UnknownFieldError(
                f"Evolved field {name!r} needs an unknown with its initial values; unknowns are "
                f"{sorted(unknowns)}."
            )
        if evolution.time in unknowns[name].axes:
            raise MollijaxError(
                f"Evolved field {name!r} must be given by its initial values, a field on the "
                f"spatial axes {space.axes}; it has axes {unknowns[name].axes}."
            )
    initial = {n: unknowns[n].on_grid(space) for n in names}
    coeffs_static, coeffs_timed = {}, {}
    for name, field in unknowns.items():
        if name in names:
            continue
        if evolution.time in field.axes:
            coeffs_timed[name] = field.on_grid(grid)
        else:
            coeffs_static[name] = field.on_grid(space)
    pins = {n: _pinned(conditions, n, grid, evolution.time) for n in names}
    free = {n: jnp.asarray(~np.take(m, 0, axis=t_axis)) for n, (m, _) in pins.items()}

    def rates(state, k):
        def lookup(name):
            if name in state:
                return state[name]
            if name in coeffs_static:
                return coeffs_static[name]
            if name in coeffs_timed:
                return _at_time(coeffs_timed[name], t_axis, k)
            if name in known:
                return _at_time(known[name], t_axis, k)
            raise UnknownFieldError(
                f"The evolution of {list(names)} uses field {name!r}, which is not an unknown "
                f"or a known field; available: {sorted(set(unknowns) | set(known))}."
            )

        out = {}
        for name, fn in evolution.rhs:
            scope = Scope(space, lookup, diff, "grid")
            rate = jnp.broadcast_to(fn(scope), space.shape)
            out[name] = jnp.where(free[name], rate, 0.0)
            if used is not None:
                used.update(scope.used)
        return out

    def pin(state, k):
        return {n: jnp.where(free[n], v, _at_time(pins[n][1], t_axis, k)) for n, v in state.items()}

    return initial, rates, pin


def integrate(
    evolution: Evolution,
    grid: Grid,
    unknowns: Mapping,
    known: Mapping[str, jax.Array],
    conditions=(),
    used: set | None = None,
) -> dict[str, jax.Array]:
    """The evolved fields on the full grid, integrated from their initial unknowns."""
    if evolution.substeps is None:
        raise MollijaxError(
            "This Evolution chooses its substeps from the initial unknowns: call "
            "`problem.prepare(unknowns)` first (`fit` does), or give `substeps`."
        )
    t_axis = grid.axis_index(evolution.time)
    nt, dt = grid.shape[t_axis], grid.spacing[t_axis]
    initial, rates, pin = _system(evolution, grid, unknowns, known, conditions, used)
    tau = dt / evolution.substeps

    def axpy(a, x, y):
        return {n: y[n] + a * x[n] for n in y}

    def interval(state, k):
        def rk4(u, _):
            k1 = rates(u, k)
            k2 = rates(axpy(tau / 2, k1, u), k)
            k3 = rates(axpy(tau / 2, k2, u), k)
            k4 = rates(axpy(tau, k3, u), k)
            return {n: u[n] + tau / 6 * (k1[n] + 2 * k2[n] + 2 * k3[n] + k4[n]) for n in u}, None

        state = pin(state, k)
        new, _ = jax.lax.scan(rk4, state, None, length=evolution.substeps)
        return new, state

    last, history = jax.lax.scan(interval, initial, jnp.arange(nt - 1))
    last = pin(last, nt - 1)
    return {
        n: jnp.moveaxis(jnp.concatenate([history[n], last[n][None]], axis=0), 0, t_axis)
        for n in evolution.names
    }


def stable_substeps(
    evolution: Evolution, grid: Grid, unknowns: Mapping, known: Mapping, conditions=(),
    iterations: int = 60,
) -> int:
    """Runge-Kutta steps per grid interval that keep `safety * tau * |lambda| <= 2.78`.

    `|lambda|` is the spectral radius of the Jacobian of the (pinned) right-hand side at the
    initial state and coefficients, estimated by power iteration from a random start.
    """
    initial, rates, pin = _system(evolution, grid, unknowns, known, conditions, None)
    state0 = pin(initial, 0)
    names = evolution.names
    keys = jax.random.split(jax.random.PRNGKey(0), len(names))
    v = {n: jax.random.normal(k, state0[n].shape, state0[n].dtype)
         for n, k in zip(names, keys, strict=True)}
    jvp = jax.jit(lambda s, v: jax.jvp(lambda q: rates(q, 0), (s,), (v,))[1])
    lam = 0.0
    for _ in range(iterations):
        norm = math.sqrt(sum(float(jnp.sum(x**2)) for x in v.values()))
        if norm == 0.0:
            break
        v = {n: x / norm for n, x in v.items()}
        v = jvp(state0, v)
        lam = math.sqrt(sum(float(jnp.sum(x**2)) for x in v.values()))
    dt = grid.spacing[grid.axis_index(evolution.time)]
    return max(1, math.ceil(evolution.safety * dt * lam / RK4_STABILITY))


def with_substeps(evolution: Evolution, substeps: int) -> Evolution:
    """A copy of `evolution` with fixed `substeps`."""
    return Evolution(
        dict(evolution.rhs), time=evolution.time, substeps=substeps,
        derivatives=evolution.derivatives, safety=evolution.safety,
    )
