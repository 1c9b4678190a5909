"""The state as the solution of an evolution equation: `u_t = F(u, unknowns)`, integrated in time.

A residual `u_t - F` evaluated on a fitted or mollified state only asks the PDE to hold
approximately; an `Evolution` makes it hold by construction. The state fields are integrated
along the grid's time axis from their initial values (unknowns on the spatial axes).

`Evolution` is the equation only (the "what"): `F` is a plain function of a `Scope` on the
spatial sub-grid, written like the maths, `lambda s: s.d(s.D * s.d(s.u, "x"), "x")`, and its
spatial derivatives turn it into a system of ordinary differential equations on the spatial
nodes (the method of lines, a `SemiDiscrete`):

    du/dt = F_k(u)   on [t_k, t_{k+1}],

with coefficients that depend on time (and known fields) held at their value at the start
`t_k` of each grid interval. Conditions of the `Problem` on an evolved field whose position
does not involve the time axis (`Condition("u", {"x": 0}, 0.0)`) are imposed exactly: those
nodes are reset to their prescribed value at every node `t_k` and their rate of change is
zero.

The integrator (the "how", `mollijax._integrators`) maps that system to the state at every
time node: `RK4` (classical fourth-order Runge-Kutta, fixed substeps per interval chosen from
the stiffness of `F`; the default) or `Diffrax` (any diffrax solver, adaptive by default).

The data misfit of the integrated state is then the whole fit: the output-error (maximum
likelihood, for Gaussian noise) estimator, whose derivatives are never taken of noisy data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _cache
from ._differentiators import AbstractDifferentiator, FiniteDifference, differentiator_on
from ._errors import MollijaxError
from ._grid import Grid
from ._integrators import RK4, RK4_STABILITY, AbstractIntegrator, SemiDiscrete
from ._scope import Scope, UnknownFieldError

__all__ = ["RK4_STABILITY", "Evolution"]


class Evolution(eqx.Module):
    """Integrate the named state fields in time instead of fitting them freely.

    **Arguments:**

    - `rhs`: `{field: F}` with `F(s)` the time derivative of `field` as a function of a
      `Scope` on the spatial sub-grid (a single function means `{"u": F}`).
    - `time`: the name of the time axis of the problem's grid.
    - `derivatives`: the spatial differentiator: `None` (second-order `FiniteDifference`),
      a differentiator built on the spatial sub-grid, or a function `grid -> differentiator`.
    - `integrator`: how the semi-discrete system is integrated in time, an
      `AbstractIntegrator`; `None` is `RK4(substeps, safety)`.
    - `substeps`, `safety`: shorthand for `integrator=RK4(substeps, safety)`: Runge-Kutta
      steps per grid interval (`None`: chosen by `prepare` from the stiffness of `F` at the
      initial unknowns) and the factor over the stability limit that choice keeps.

    **Example** (the integrator is a separate object; the equation does not change):

    ```python
    heat = Evolution(lambda s: s.d(s.D * s.d(s.u, "x"), "x"))           # RK4, auto substeps
    heat = Evolution(lambda s: s.d(s.D * s.d(s.u, "x"), "x"), integrator=Diffrax(rtol=1e-8))
    ```
    """

    rhs: tuple[tuple[str, Callable], ...] = eqx.field(static=True)
    time: str = eqx.field(static=True)
    derivatives: object = eqx.field(static=True)
    integrator: AbstractIntegrator = eqx.field(static=True)

    def __init__(
        self,
        rhs: Callable | Mapping[str, Callable],
        time: str = "t",
        derivatives: AbstractDifferentiator | Callable | None = None,
        integrator: AbstractIntegrator | None = None,
        *,
        substeps: int | None = None,
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
        self.derivatives = derivatives
        if integrator is None:
            try:
                integrator = RK4(substeps, safety)
            except MollijaxError as e:
                raise MollijaxError(f"Evolution: {e}") from None
        elif substeps is not None or safety != 2.0:
            raise MollijaxError(
                "Evolution takes either `integrator` or its RK4 shorthand `substeps`/`safety`, "
                f"not both: got integrator={type(integrator).__name__}, substeps={substeps!r}, "
                f"safety={safety!r}."
            )
        if not isinstance(integrator, AbstractIntegrator):
            raise MollijaxError(
                "Evolution `integrator` must be a mollijax integrator (RK4, Diffrax or an "
                f"AbstractIntegrator), got {type(integrator).__name__}."
            )
        self.integrator = integrator

    @property
    def names(self) -> tuple[str, ...]:
        """The evolved fields, in the order of `rhs`."""
        return tuple(n for n, _ in self.rhs)

    @property
    def substeps(self) -> int | None:
        """The RK4 substeps per grid interval (`None` if not chosen yet or not RK4)."""
        return self.integrator.substeps if isinstance(self.integrator, RK4) else None

    @property
    def safety(self) -> float | None:
        """The RK4 safety factor over its stability limit (`None` if not RK4)."""
        return self.integrator.safety if isinstance(self.integrator, RK4) else None

    def with_integrator(self, integrator: AbstractIntegrator) -> Evolution:
        """The same equation, integrated by `integrator`."""
        return Evolution(dict(self.rhs), self.time, self.derivatives, integrator)

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
        """The spatial differentiator, on the grid without the time axis."""
        where = f"the spatial grid (the problem's grid without {self.time!r})"
        return differentiator_on(self.derivatives, self.spatial_grid(grid), FiniteDifference,
                                 "Evolution", where)

    # ------------------------------------------------------------- the system
    def semi_discrete(
        self,
        grid: Grid,
        unknowns: Mapping,
        known: Mapping,
        conditions=(),
        used: set | None = None,
        arrays: tuple | None = None,
    ) -> SemiDiscrete:
        """The semi-discrete system `du/dt = F_k(u)` of this evolution on `grid`.

        **Arguments:**

        - `grid`: the problem's grid (time axis `self.time` and the spatial axes).
        - `unknowns`: `{name: field}`; each evolved field gives its initial values on the
          spatial axes, the others are coefficients (on the spatial axes, or on the full grid
          and then read at `t_k` on `[t_k, t_{k+1}]`).
        - `known`: `{name: array of the grid's shape}`, read at `t_k` as well.
        - `conditions`: the problem's conditions; those on an evolved field whose position
          does not involve the time axis are pinned exactly.
        - `used`: if given, collects the names of the fields `F` reads (when traced).
        - `arrays`: the system's `(initial, args)` if already computed (`_arrays`).
        """
        t_axis = grid.axis_index(self.time)
        space = self.spatial_grid(grid)
        diff = self.differentiator(grid)
        names = self.names
        self._check_initial(space, unknowns)
        initial, args = (self._arrays(grid, unknowns, known, conditions) if arrays is None
                         else arrays)
        free = {n: ~np.take(_pinned(conditions, n, grid, self.time, False)[0], 0,
                            axis=t_axis) for n in names}
        rhs = self.rhs

        def rates(state, k, a):
            def lookup(name):
                if name in state:
                    return state[name]
                if name in a["static"]:
                    return a["static"][name]
                if name in a["timed"]:
                    return _at_time(a["timed"][name], t_axis, k)
                if name in a["known"]:
                    return _at_time(a["known"][name], t_axis, k)
                raise UnknownFieldError(
                    f"The evolution of {list(names)} uses field {name!r}, which is not an "
                    f"unknown or a known field; available: {sorted(set(unknowns) | set(known))}."
                )

            out = {}
            for name, fn in rhs:
                scope = Scope(space, lookup, diff, "grid")
                rate = jnp.broadcast_to(fn(scope), space.shape)
                out[name] = jnp.where(free[name], rate, 0.0)
                if used is not None:
                    used.update(scope.used)
            return out

        def pin(state, k, a):
            return {n: jnp.where(free[n], v, _at_time(a["pins"][n], t_axis, k))
                    for n, v in state.items()}

        return SemiDiscrete(initial, args, rates, pin, grid.shape[t_axis], grid.spacing[t_axis])

    def _check_initial(self, space: Grid, unknowns: Mapping):
        for name in self.names:
            if name not in unknowns:
                raise UnknownFieldError(
                    f"Evolved field {name!r} needs an unknown with its initial values; unknowns "
                    f"are {sorted(unknowns)}."
                )
            if self.time in unknowns[name].axes:
                raise MollijaxError(
                    f"Evolved field {name!r} must be given by its initial values, a field on the "
                    f"spatial axes {space.axes}; it has axes {unknowns[name].axes}."
                )

    def _arrays(self, grid: Grid, unknowns: Mapping, known: Mapping, conditions=()):
        """`(initial, args)` of `semi_discrete`'s system: the evolved fields' initial values
        and the coefficients, known fields and pinned values `F` reads (traceable)."""
        space = self.spatial_grid(grid)
        initial = {n: unknowns[n].on_grid(space) for n in self.names}
        args = {"static": {}, "timed": {}, "known": dict(known), "pins": {}}
        for name, field in unknowns.items():
            if name in self.names:
                continue
            if self.time in field.axes:
                args["timed"][name] = field.on_grid(grid)
            else:
                args["static"][name] = field.on_grid(space)
        for n in self.names:
            args["pins"][n] = _pinned(conditions, n, grid, self.time)[1]
        return initial, args

    def prepare(self, grid: Grid, unknowns: Mapping, known: Mapping, conditions=()) -> Evolution:
        """This evolution with every choice that depends on the initial unknowns made (the
        RK4 substeps from the stiffness of `F`); `self` when nothing is left to choose.
        Runs once per fit, outside any trace; the system's arrays come from one compiled
        function (evaluated eagerly, a network coefficient compiled each primitive on its
        own: about half a second of a 1-D heat fit)."""
        self._check_initial(self.spatial_grid(grid), unknowns)  # before anything is traced
        arrays = _compiled_arrays(self, grid, unknowns, known, tuple(conditions))
        system = self.semi_discrete(grid, unknowns, known, conditions, arrays=arrays)
        integrator = self.integrator.prepare(system)
        return self if integrator is self.integrator else self.with_integrator(integrator)

    def traceable(self) -> Evolution:
        """A stand-in for checking shapes and names abstractly without `prepare` (RK4 with
        one substep when its substeps are not chosen yet); `self` when already traceable."""
        integrator = self.integrator.traceable()
        return self if integrator is self.integrator else self.with_integrator(integrator)

    def integrate(
        self,
        grid: Grid,
        unknowns: Mapping,
        known: Mapping,
        conditions=(),
        used: set | None = None,
    ) -> dict[str, Float[Array, "*grid"]]:
        """`{field: values on the full grid}`, each evolved field integrated from its initial
        unknown (arguments as `semi_discrete`)."""
        system = self.semi_discrete(grid, unknowns, known, conditions, used)
        history = self.integrator(system)
        t_axis = grid.axis_index(self.time)
        return {n: jnp.moveaxis(history[n], 0, t_axis) for n in self.names}

    def describe(self, grid: Grid) -> dict:
        """The evolution's settings, JSON-able: fields, time axis, spatial differentiator and
        the integrator with its settings (`substeps` is the RK4 one, or None)."""
        return {
            "fields": list(self.names),
            "time": self.time,
            "differentiator": repr(self.differentiator(grid)),
            "substeps": self.substeps,
            **self.integrator.describe(),
        }

    def divergence_hint(self) -> str:
        """The sentence appended to the message of a fit that diverged."""
        return self.integrator.divergence_hint()


@_cache.quick_jit  # runs once
def _compiled_arrays(evolution: Evolution, grid: Grid, unknowns, known, conditions):
    return evolution._arrays(grid, unknowns, known, conditions)


def _pinned(conditions, name: str, grid: Grid, time: str, with_values: bool = True):
    """`(mask, values)` on the full grid of the conditions that fix nodes of `name` exactly
    (`values` None unless `with_values`: the mask alone needs no array operation)."""
    mask = np.zeros(grid.shape, bool)
    values = jnp.zeros(grid.shape) if with_values else None
    for c in conditions:
        if c.field != name or c.mask is not None or any(a == time for a, _ in c.index):
            continue
        c.select(mask, grid)  # names an index out of range
        idx: list = [slice(None)] * grid.ndim
        for axis, i in c.index:
            idx[grid.axis_index(axis)] = i
        mask[tuple(idx)] = True
        if with_values:
            values = values.at[tuple(idx)].set(jnp.broadcast_to(c.value, values[tuple(idx)].shape))
    return mask, values


def _at_time(arr, t_axis: int, k):
    return jax.lax.dynamic_index_in_dim(arr, k, axis=t_axis, keepdims=False)
