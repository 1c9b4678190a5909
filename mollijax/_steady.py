"""The state as the solution of a steady equation: `R(u; coefficients) = 0`, solved in the loss.

The steady twin of `Evolution`. With equation error the state `u` is the mollified data and
the residual `R(u)` is only asked to be small; with a `Steady` state `u` is *defined* by

    R(u; c) = 0   at every node that no condition pins,
    u = g         at every node a `Condition(field, where, g)` pins,

for the current coefficients `c` (unknowns and known fields), so the data misfit
`|u(c) - u_obs|^2` is measured on the solution (the output-error estimator) and its gradient
with respect to `c` comes from the implicit function theorem: one transposed (adjoint) solve
with `dR/du`, never a backward pass through the iterations.

`R` is written exactly like a problem's residual, a function of a `Scope` on the grid
(`lambda s: s.d(s.k * s.d(s.u, "x"), "x") + s.f`), and its derivatives are taken by a grid
differentiator (second-order `FiniteDifference` by default, with its `"odd"` boundary
padding, `u_{-j} = 2 u_0 - u_j`).

**Boundaries.** Pinned nodes get the row `u = g`; every other node gets the row `R(u) = 0`,
evaluated by the differentiator with its boundary padding. Nested derivatives reach one
padded node beyond a wall; with `"odd"` padding and `u` pinned on the wall this is the
ghost value `u_{-1} = 2 g - u_1`, a second-order closure (zero second normal difference at
the wall). Hence:

- second order (`-div(k grad u) = f`, `nu u'' - k u = f`, non-divergence forms): pin `u` on
  every wall (Dirichlet); the nested central differences of the divergence form then form
  the usual second-order (wide-stencil) scheme up to the walls;
- fourth order, simply supported plate (`Laplacian(D Laplacian w) = q`, `w = 0` and
  `w_nn = 0` on the walls): pin `w = 0` on the walls; the odd padding of the inner
  Laplacian at a wall node gives `Laplacian w = 0` there, so the discrete system is exactly
  the two coupled Dirichlet problems `Laplacian w = M / D`, `Laplacian M = q` (`M = 0` on
  the walls). A clamped plate (`w_n = 0`) is `FiniteDifference(grid, boundary="even")`;
- a wall node that no condition pins keeps the residual row with the padded stencil (for
  `"odd"` padding: zero second normal difference), a closure that is only consistent for
  some equations: pin every wall unless that closure is what you mean.

**Solvers** (`solver`):

- `"direct"`: for a linear residual whose stencil `prepare` has read off (`band`, the
  half-widths per axis; `fit` prepares), on grids of at least `BANDED_MIN_NODES` nodes,
  the operator is assembled by colour probing (one
  jvp per colour, `prod (2 r + 1)` of them) as a block-tridiagonal matrix and solved by
  block LU (`mollijax._banded`): at 33^2 nodes and a nested biharmonic, 25 jvps and 17
  blocks of 66 instead of 1089 jvps and a dense 1089^2 LU. Otherwise the Jacobian `dG/du`
  is materialised (one jvp per node, batched) and factorised densely (LU; a nonlinear
  residual's Newton steps use `lineax.LU`). Linear solves are differentiated implicitly
  (`lax.custom_linear_solve`, one factorisation for every tangent and the adjoint), and
  none of them raises: a singular or unconverged solve gives NaN (a rejected trial of
  `mollijax.lbfgs`; in a batch, a failure of that item alone).
  `"auto"` picks the direct solver up to `DIRECT_MAX_NODES` nodes (all small 1-D problems
  and 2-D grids up to about 32^2);
- `"gmres"` / `"bicgstab"` (`lineax`): Krylov iterations on the operator `v -> dR/du v`, never
  assembled, preconditioned (`preconditioner="dst"`, the default) by the exact inverse of
  the *constant-coefficient* operator: `dR/du` with every coefficient replaced by its grid
  mean, read off as a stencil (its response to a unit impulse at the centre node) and
  diagonalised on the interior nodes by the discrete sine transform (DST-I, by FFT), whose
  modes satisfy the pinned walls (and, for the plate, the odd ghosts). A variable-coefficient
  divergence-form operator with `0 < k_min <= k <= k_max` is spectrally equivalent to its
  constant-coefficient twin (eigenvalues of the preconditioned operator in
  `[k_min, k_max] / mean(k)`), so the number of iterations stays bounded as `h -> 0`;
  `"auto"` picks BiCGStab above `DIRECT_MAX_NODES` nodes (with the preconditioner it
  took 8 iterations on a divergence-form problem at 33^2 to 129^2, about 3x cheaper than
  GMRES, whose lineax implementation tests convergence only once per restart cycle; GMRES
  is the robust choice when BiCGStab breaks down, e.g. for indefinite operators). Pinned
  nodes are identity rows; wall nodes left free are scaled by the stencil's centre weight
  (Jacobi).
- nonlinear residuals (`linear=False`): Newton's method (`optimistix.Newton`) on the
  preconditioned residual `P^{-1} G(u)` (same roots, bounded Krylov iterations per step),
  with the same linear solver inside, differentiated by `optimistix.ImplicitAdjoint`.

`linear=None` decides once per trace whether `R` is linear in `u` (an affine `R`: its
jvp in `u` does not depend on `u`), by a dependency walk of the jvp's jaxpr; `prepare`
decides it numerically on the actual coefficients instead (two jvps at different states).

**Failure.** A solve that does not converge within `max_steps` (Krylov iterations, or Newton
steps) returns NaN everywhere, so a fit's finiteness guard stops the run as diverged, and
`divergence_hint()` names the solver, its tolerances and `max_steps`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jaxtyping import Array, Float

from . import _banded, _cache
from ._differentiators import (
    AbstractDifferentiator,
    FiniteDifference,
    _is_tracer,
    differentiator_on,
)
from ._driver import static_key
from ._errors import GridMismatchError, MollijaxError
from ._grid import Grid
from ._scope import Scope, UnknownFieldError

__all__ = ["DIRECT_MAX_NODES", "Steady"]

# "auto" factorises the dense Jacobian up to this many nodes, and iterates above
DIRECT_MAX_NODES = 1100
# the direct solve is block-tridiagonal from this many nodes (below, a dense LU is as cheap
# and its compiled code is smaller: a 9 x 9 batch test compiled 12 s longer banded)
BANDED_MIN_NODES = 256
SOLVERS = ("auto", "direct", "gmres", "bicgstab")
PRECONDITIONERS = ("dst", None)
_GMRES_RESTART = 20  # lineax tests convergence once per restart cycle
_STENCIL_RADIUS = 6  # largest stencil half-width the DST preconditioner reads


class Steady(eqx.Module):
    """A state field defined as the solution of the steady equation `R(u; c) = 0`.

    **Arguments:**

    - `residual`: `R(s)`, a function of a `Scope` on the problem's grid, written like a
      problem's residual (`lambda s: s.d(s.k * s.d(s.u, "x"), "x") + s.f`); it reads the
      steady field by its name and the coefficients (unknowns, known fields) by theirs.
    - `fields`: the name of the steady field, a 1-tuple (`("u",)`) or a string.
    - `derivatives`: the grid differentiator: `None` (`FiniteDifference(grid, accuracy=2)`,
      odd boundary padding), a differentiator on the grid, or a function
      `grid -> differentiator`.
    - `solver`: `"auto"` (direct up to `DIRECT_MAX_NODES` nodes: block-tridiagonal LU once
      `band` is known, else dense LU; BiCGStab above), `"direct"`,
      `"gmres"` or `"bicgstab"`.
    - `preconditioner`: `"dst"` (the constant-coefficient operator inverted by sine
      transforms; default) or `None` (Krylov solvers only).
    - `linear`: whether `R` is affine in `u` (`None`: detected).
    - `rtol`, `atol`: tolerances of the Krylov and Newton iterations (`None`: 1e-10 and
      1e-12 in float64, 1e-5 and 1e-7 in float32).
    - `max_steps`: most Krylov iterations per linear solve (GMRES: rounded up to whole
      restart cycles of up to 20 iterations) and most Newton steps.
    - `band`: the half-widths of the linear operator's stencil per axis, for the direct
      solver's block-tridiagonal LU; `None` (default): read off the operator by `prepare`
      (which `fit` calls), `()`: no band structure (dense LU).

    **Example** (2-D `-div(k grad u) = f`, `u = 0` on the walls, `k` the unknown):

    ```python
    steady = Steady(lambda s: s.div(s.grad(s.u) * s.k) + s.f)   # fields=("u",)
    u = steady.solve(grid, {"k": k_field}, {"f": f}, walls)["u"]
    ```
    """

    residual: Callable = eqx.field(static=True)
    fields: tuple[str, ...] = eqx.field(static=True)
    derivatives: object = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    preconditioner: str | None = eqx.field(static=True)
    linear: bool | None = eqx.field(static=True)
    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    band: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        residual: Callable,
        fields: str | tuple[str, ...] = ("u",),
        *,
        derivatives: AbstractDifferentiator | Callable | None = None,
        solver: str = "auto",
        preconditioner: str | None = "dst",
        linear: bool | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int = 500,
        band: tuple[int, ...] | None = None,
    ):
        if not callable(residual):
            raise MollijaxError(f"Steady `residual` must be a function R(s), got {residual!r}.")
        fields = (fields,) if isinstance(fields, str) else tuple(fields)
        if len(fields) != 1 or not all(isinstance(f, str) and f for f in fields):
            raise MollijaxError(
                "Steady solves for one field: `fields` must be a name or a 1-tuple of names, "
                f"got {fields!r}."
            )
        if solver not in SOLVERS:
            raise MollijaxError(f"Steady `solver` must be one of {SOLVERS}, got {solver!r}.")
        if preconditioner not in PRECONDITIONERS:
            raise MollijaxError(
                f"Steady `preconditioner` must be one of {PRECONDITIONERS}, got "
                f"{preconditioner!r}."
            )
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if tol is not None and not (isinstance(tol, int | float) and tol >= 0):
                raise MollijaxError(f"Steady `{name}` must be a number >= 0, got {tol!r}.")
        if not (isinstance(max_steps, int) and max_steps >= 1):
            raise MollijaxError(f"Steady `max_steps` must be an integer >= 1, got {max_steps!r}.")
        if linear not in (None, True, False):
            raise MollijaxError(f"Steady `linear` must be None, True or False, got {linear!r}.")
        self.residual = residual
        self.fields = fields
        self.derivatives = derivatives
        self.solver = solver
        self.preconditioner = preconditioner
        self.linear = linear
        self.rtol = None if rtol is None else float(rtol)
        self.atol = None if atol is None else float(atol)
        self.max_steps = max_steps
        if band is not None and not (
            isinstance(band, tuple) and all(isinstance(h, int) and h >= 1 for h in band)
        ):
            raise MollijaxError(
                f"Steady `band` must be None or a tuple of half-widths >= 1, got {band!r}."
            )
        self.band = band

    @property
    def names(self) -> tuple[str, ...]:
        """The steady fields (one)."""
        return self.fields

    def _replace(self, **changes) -> Steady:
        settings = dict(
            fields=self.fields, derivatives=self.derivatives, solver=self.solver,
            preconditioner=self.preconditioner, linear=self.linear, rtol=self.rtol,
            atol=self.atol, max_steps=self.max_steps, band=self.band,
        )
        settings.update(changes)
        return Steady(self.residual, **settings)

    # ------------------------------------------------------------------ grids
    def differentiator(self, grid: Grid) -> AbstractDifferentiator:
        """The differentiator of the residual on the problem's grid."""
        return differentiator_on(self.derivatives, grid,
                                 lambda g: FiniteDifference(g, accuracy=2), "Steady",
                                 "the problem's grid")

    def check_grid(self, grid: Grid) -> None:
        """Raise if this steady state cannot be solved on `grid`."""
        small = [a for a, n in zip(grid.axes, grid.shape, strict=True) if n < 5]
        if small:
            raise GridMismatchError(
                f"A Steady state needs at least 5 nodes along every axis; axes {small} of "
                f"{grid} have fewer."
            )
        if self.band and len(self.band) != grid.ndim:
            raise GridMismatchError(
                f"Steady `band` {self.band} has {len(self.band)} half-widths; the grid {grid} "
                f"has {grid.ndim} axes."
            )
        self.differentiator(grid)

    def choose_solver(self, grid: Grid) -> str:
        """The solver `"auto"` resolves to on `grid`."""
        if self.solver != "auto":
            return self.solver
        return "direct" if grid.size <= DIRECT_MAX_NODES else "bicgstab"

    def tolerances(self, dtype) -> tuple[float, float]:
        """`(rtol, atol)` for a state of `dtype`."""
        single = jnp.finfo(dtype).bits < 64
        rtol = self.rtol if self.rtol is not None else (1e-5 if single else 1e-10)
        atol = self.atol if self.atol is not None else (1e-7 if single else 1e-12)
        return rtol, atol

    # ------------------------------------------------------------- the system
    def _system(self, grid, unknowns, known, conditions, used):
        """`(G, lift, coefficients, pinned, dtype)`: `G(u, c)` is the pinned residual,
        `R(u)` at free nodes and `u - g` at pinned ones; `lift` is the initial state
        (pinned values in place)."""
        (name,) = self.fields
        diff = self.differentiator(grid)
        coefficients = {
            n: jnp.asarray(f.on_grid(grid)) for n, f in unknowns.items() if n not in self.fields
        }
        for n, v in known.items():
            if n not in self.fields and n not in coefficients:
                coefficients[n] = jnp.asarray(v)
        floats = [v.dtype for v in coefficients.values() if jnp.issubdtype(v.dtype, jnp.floating)]
        dtype = floats[0] if floats else jnp.zeros(()).dtype
        pinned, values = _pinned(conditions, name, grid, dtype)
        if not pinned.any():
            raise MollijaxError(
                f"Steady field {name!r} has no Condition pinning any node: its equation has no "
                "boundary values. Add Condition(field, {axis: index}, value) terms for the walls."
            )
        if name in unknowns:
            guess = jnp.asarray(unknowns[name].on_grid(grid), dtype)
        else:
            guess = jnp.zeros(grid.shape, dtype)
        lift = jnp.where(pinned, values, guess)
        residual = self.residual
        available = sorted(set(coefficients) | {name})

        def R(u, c):
            def lookup(field):
                if field == name:
                    return u
                if field in c:
                    return c[field]
                raise UnknownFieldError(
                    f"The steady equation of {name!r} uses field {field!r}, which is not an "
                    f"unknown or a known field; available: {available}."
                )

            scope = Scope(grid, lookup, diff, "grid")
            out = jnp.broadcast_to(residual(scope), grid.shape).astype(dtype)
            if used is not None:
                used.update(scope.used - {name})
            return out

        def G(u, c):
            return jnp.where(pinned, u - values, R(u, c))

        return R, G, lift, coefficients, pinned, dtype

    def _is_linear(self, R, lift, coefficients) -> bool:
        if self.linear is not None:
            return self.linear
        struct = jax.ShapeDtypeStruct(lift.shape, lift.dtype)
        cstruct = {n: jax.ShapeDtypeStruct(v.shape, v.dtype) for n, v in coefficients.items()}
        closed = jax.make_jaxpr(lambda u, v, c: jax.jvp(lambda w: R(w, c), (u,), (v,))[1])(
            struct, struct, cstruct
        )
        n_in = len(closed.jaxpr.invars)
        depends = [True] + [False] * (n_in - 1)
        return not any(_dependent_outputs(closed.jaxpr, depends))

    def prepare(self, grid: Grid, unknowns: Mapping, known: Mapping, conditions=()) -> Steady:
        """This steady state with what is left to choose decided on the actual coefficients
        (eagerly, once per fit): `linear` (two jvps of `R` at different states, compared)
        and, for a linear direct solve, `band` (the stencil's half-widths, read from the
        operator's columns near every wall and at the centre, at the actual coefficients
        and at perturbed ones); `self` when nothing is left to choose."""
        self.check_grid(grid)
        wants_band = (self.band is None and self.choose_solver(grid) == "direct"
                      and grid.size >= BANDED_MIN_NODES)
        if self.linear is not None and (not self.linear or not wants_band):
            return self
        # every array the choice needs comes from one compiled function, cached across
        # calls (eagerly, each operation would compile on its own: hundreds of compiles
        # for a small 3-D grid)
        tree = (unknowns, known, tuple(conditions))
        rng = np.random.default_rng(0)
        v, w = rng.standard_normal((2, *grid.shape))
        coefficients = jax.eval_shape(
            lambda: self._system(grid, unknowns, known, conditions, None)[3])
        # structural zeros of the actual coefficients (a coefficient that is 0 at the
        # initial guess) must not narrow the band: take the union with perturbed ones
        factors = {n: rng.uniform(0.5, 1.5, x.shape) for n, x in coefficients.items()}
        nodes, impulses = _banded.stencil_probes(grid.shape)
        find_linear, find_band = self.linear is None, wants_band
        out = _call_compiled(Steady._probe, (self, grid, find_linear, find_band), tree,
                             v, w, factors, impulses)
        linear = self.linear
        if find_linear:
            difference, size = (float(x) for x in out["linear"])
            linear = bool(difference <= 1e-8 * max(size, 1e-300))
        band = self.band
        if linear and find_band:
            widths = [_banded.halfwidths_from_columns(np.asarray(col), nodes, grid.shape)
                      for col in out["columns"]]
            band = () if None in widths else tuple(max(a, b) for a, b in zip(*widths, strict=True))
        return self._replace(linear=linear, band=band)

    def _probe(self, grid, find_linear, find_band, tree, v, w, factors, impulses) -> dict:
        """The arrays `prepare` decides on: two jvps of `R` at different states (whether it
        is linear) and the operator's columns at `impulses`, at the actual coefficients and
        at ones scaled by `factors` (its band)."""
        R, _, lift, c, pinned, dtype = self._system(grid, *tree, None)
        out = {}
        if find_linear:
            v, w = v.astype(dtype), w.astype(dtype)
            scale = 1.0 + jnp.max(jnp.abs(lift))
            a = jax.jvp(lambda u: R(u, c), (lift,), (v,))[1]
            b = jax.jvp(lambda u: R(u, c), (lift + scale * w,), (v,))[1]
            out["linear"] = (jnp.max(jnp.abs(a - b)), jnp.max(jnp.abs(a)) + jnp.max(jnp.abs(b)))
        if find_band:
            shifted = {
                n: x + (1.0 + jnp.abs(x)) * factors[n].astype(x.dtype)
                if jnp.issubdtype(x.dtype, jnp.floating) else x
                for n, x in c.items()
            }
            out["columns"] = [jax.vmap(_operator(R, lift, cc, ~pinned))(impulses.astype(dtype))
                              for cc in (c, shifted)]
        return out

    # ------------------------------------------------------------- the solve
    def solve(
        self,
        grid: Grid,
        unknowns: Mapping,
        known: Mapping,
        conditions=(),
        used: set | None = None,
    ) -> dict[str, Float[Array, "*grid"]]:
        """`{field: its solution on the grid}` (NaN everywhere if the solve failed).

        **Arguments:**

        - `grid`: the problem's grid.
        - `unknowns`: `{name: AbstractField}`, the coefficient unknowns. The steady field
          need not be among them; if it is, its values are only the initial guess of a
          nonlinear solve (a linear solve ignores them).
        - `known`: `{name: array of the grid's shape}` (known fields such as sources; a
          known value of the steady field itself is ignored).
        - `conditions`: the problem's `Condition`s; those on the steady field (dict or mask
          positions) are imposed exactly and at least one is required.
        - `used`: if given, collects the names of the other fields `R` reads (when traced).
        """
        return self.solve_with_stats(grid, unknowns, known, conditions, used)[0]

    def solve_with_stats(
        self,
        grid: Grid,
        unknowns: Mapping,
        known: Mapping,
        conditions=(),
        used: set | None = None,
    ) -> tuple[dict[str, Float[Array, "*grid"]], dict]:
        """`solve`, and `{"converged": bool array, "num_steps": int array}`: the steps
        of the linear solve as lineax counts them (BiCGStab iterations, GMRES restart cycles
        of up to 20 iterations, 0 for LU), or Newton steps."""
        self.check_grid(grid)
        if used is None and not _traced((unknowns, known, conditions)):
            # called eagerly: one compiled program instead of one per operation; only
            # floating arrays are traced, so masks and indices stay concrete
            return _call_compiled(Steady._solve_tree, (self, grid),
                                  (unknowns, known, tuple(conditions)))
        return self._solve(grid, unknowns, known, conditions, used)

    def _solve_tree(self, grid, tree):
        return self._solve(grid, *tree, None)

    def _solve(self, grid, unknowns, known, conditions, used):
        import optimistix as optx  # on first use: ~0.1 s of `import mollijax` otherwise

        R, G, lift, c, pinned, dtype = self._system(grid, unknowns, known, conditions, used)
        rtol, atol = self.tolerances(dtype)
        solver = self.choose_solver(grid)
        linear = self._is_linear(R, lift, c)
        struct = jax.ShapeDtypeStruct(lift.shape, dtype)
        free = ~pinned
        precondition = self.preconditioner == "dst" and solver != "direct"
        if precondition or not linear:
            pinv = _dst_preconditioner(R, lift, c, pinned, grid, dtype)
        else:
            pinv = None

        if linear:
            # every linear solve is differentiated implicitly and gives NaN where it fails
            operator, rhs = _operator(R, lift, c, free), jnp.where(free, -R(lift, c), 0.0)
            steps = jnp.asarray(0)  # a direct solve takes none
            if solver != "direct":
                x, steps = _krylov_solve(operator, rhs, struct,
                                         _linear_solver(solver, rtol, atol, self.max_steps),
                                         pinv)
            elif self._uses_band(grid):
                x = _banded_solve(operator, rhs, grid.shape, self.band, dtype)
            else:
                x = _dense_solve(operator, rhs, struct)
            u = lift + jnp.where(free, x, 0.0)
            converged = jnp.all(jnp.isfinite(u))
        else:
            def fn(y, args):
                return pinv(G(y, args))

            inner = _linear_solver(solver, rtol, atol, self.max_steps)
            sol = optx.root_find(
                fn, optx.Newton(rtol, atol, linear_solver=inner), lift, c,
                max_steps=self.max_steps, adjoint=optx.ImplicitAdjoint(linear_solver=inner),
                throw=False,
            )
            u = sol.value
            converged = sol.result == optx.RESULTS.successful
            steps = sol.stats.get("num_steps", jnp.asarray(0))
        u = jnp.where(converged, u, jnp.nan)
        return {self.fields[0]: u}, {"converged": converged, "num_steps": steps}

    def _uses_band(self, grid: Grid) -> bool:
        """Whether the direct solve goes by block-tridiagonal LU: a band was found, the grid
        has at least `BANDED_MIN_NODES` nodes and the band leaves at least 3 blocks (below
        either the dense LU costs about as little and compiles faster)."""
        return (bool(self.band) and grid.size >= BANDED_MIN_NODES
                and -(-grid.shape[0] // self.band[0]) >= 3)

    # ------------------------------------------------------------- reporting
    def describe(self, grid: Grid) -> dict:
        """The steady state's settings, JSON-able."""
        rtol, atol = self.tolerances(jnp.zeros(()).dtype)
        return {
            "fields": list(self.fields),
            "kind": "steady",
            "solver": self.choose_solver(grid),
            "preconditioner": self.preconditioner,
            "linear": self.linear,
            "rtol": rtol,
            "atol": atol,
            "max_steps": self.max_steps,
            "band": None if self.band is None else list(self.band),
            "differentiator": repr(self.differentiator(grid)),
        }

    def divergence_hint(self) -> str:
        """The sentence appended to the message of a fit that diverged."""
        rtol, atol = self.tolerances(jnp.zeros(()).dtype)
        kind = {True: "linear", False: "Newton", None: "linear or Newton"}[self.linear]
        return (
            f"The steady solve of {self.fields[0]!r} ({kind}, solver={self.solver!r}, "
            f"preconditioner={self.preconditioner!r}, rtol={rtol:g}, atol={atol:g}, "
            f"max_steps={self.max_steps}) may not have converged: its state is NaN when it "
            "does not. Raise `max_steps`, loosen `rtol`/`atol`, keep the preconditioner, try "
            "solver='gmres' (robust where BiCGStab breaks down), or "
            "check that the coefficients keep the equation well posed (e.g. k > 0)."
        )


# ---------------------------------------------------------------------- helpers
def _pinned(conditions, name: str, grid: Grid, dtype):
    """`(mask, values)` on the grid of the conditions that fix nodes of `name` exactly."""
    mask = np.zeros(grid.shape, bool)
    values = jnp.zeros(grid.shape, dtype)
    for c in conditions:
        if getattr(c, "field", None) != name:
            continue
        c.select(values, grid)  # names an index out of range, or a mask of the wrong shape
        if c.mask is not None:
            where = np.asarray(c.mask)
            value = jnp.broadcast_to(jnp.asarray(c.value, dtype), grid.shape)
            mask |= where
            values = jnp.where(where, value, values)
            continue
        idx: list = [slice(None)] * grid.ndim
        for axis, i in c.index:
            idx[grid.axis_index(axis)] = i
        idx = tuple(idx)
        mask[idx] = True
        values = values.at[idx].set(jnp.broadcast_to(jnp.asarray(c.value, dtype),
                                                     values[idx].shape))
    return mask, values


class _Key:
    """A hashable stand-in for static parts of a call, compared by `_driver.static_key`
    (arrays by content, functions by their code and closed-over values), so `jit` reuses a
    compiled program."""

    def __init__(self, value):
        self.value = value
        self.key = static_key(value)
        self.hash = hash(self.key)

    def __hash__(self):
        return self.hash

    def __eq__(self, other):
        return isinstance(other, _Key) and self.key == other.key


@_cache.quick_jit  # once per fit
def _compiled(key, dynamic, arrays):
    method, head, static = key.value
    return method(*head, eqx.combine(dynamic, static), *arrays)


def _call_compiled(method, head: tuple, tree, *arrays):
    """`method(*head, tree, *arrays)` as one compiled program, its floating arrays traced
    (masks and indices stay concrete), reused across calls with equal static parts; compiled
    afresh where a static part cannot be keyed."""
    dynamic, static = eqx.partition(tree, eqx.is_inexact_array)
    try:
        key = _Key((method, head, static))
    except Exception:  # an unkeyable part (as `_driver.canonical`)
        return jax.jit(lambda d, a: method(*head, eqx.combine(d, static), *a))(dynamic, arrays)
    return _compiled(key, dynamic, arrays)


def _traced(tree) -> bool:
    """Whether any leaf of `tree` is being traced (inside `jit`, `grad`, `vmap`)."""
    return any(_is_tracer(x) for x in jax.tree_util.tree_leaves(tree))


def _operator(R, lift, c, free) -> Callable:
    """`v -> dG/du v`: the linearised residual at free nodes, the identity at pinned ones."""

    def apply(v):
        tangent = jax.jvp(lambda w: R(w, c), (lift,), (jnp.where(free, v, 0.0),))[1]
        return jnp.where(free, tangent, v)

    return apply


def _banded_solve(operator: Callable, rhs, shape, band, dtype):
    """`x` with `operator(x) = rhs` for the linear stencil map `operator` (the linearised
    residual, closing over the coefficients), by the block-tridiagonal LU of `_banded`,
    differentiated implicitly (`lax.custom_linear_solve`: `x' = A^{-1} (rhs' - A' x)`, the
    transposed solve for reverse mode): one factorisation serves the solution and every
    tangent (a `jacfwd` over many coefficients, or the adjoint), and no tangent of the
    assembled blocks is ever formed."""
    layout, blocks = _banded.block_tridiagonal(operator, shape, band, dtype)
    factors = jax.lax.stop_gradient(layout.factor(blocks))

    def solve(_, b):
        return layout.solve(factors, b)

    def transpose_solve(_, b):
        return jax.linear_transpose(lambda v: layout.solve(factors, v), b)(b)[0]

    return jax.lax.custom_linear_solve(operator, rhs, solve, transpose_solve)


def _dense_solve(operator: Callable, rhs, struct):
    """`x` with `operator(x) = rhs` by a dense LU of the assembled operator (small grids),
    differentiated implicitly as `_banded_solve`: one factorisation for the solution, the
    tangents and the adjoint, and a singular operator gives a non-finite `x` (a rejected
    trial, an item of a batch that fails alone) instead of raising."""
    import lineax as lx

    matrix = lx.FunctionLinearOperator(operator, struct).as_matrix()
    factors = jax.lax.stop_gradient(jax.scipy.linalg.lu_factor(matrix))

    def solve(_, b):
        return jax.scipy.linalg.lu_solve(factors, b.ravel()).reshape(b.shape)

    def transpose_solve(_, b):
        return jax.scipy.linalg.lu_solve(factors, b.ravel(), trans=1).reshape(b.shape)

    return jax.lax.custom_linear_solve(operator, rhs, solve, transpose_solve)


def _krylov_solve(operator: Callable, rhs, struct, solver, pinv):
    """`(x, steps)`: `operator(x) = rhs` by the lineax Krylov `solver` (preconditioned by
    `pinv` where given), differentiated implicitly by `lax.custom_linear_solve`
    (`x' = A^{-1} (rhs' - A' x)`, the transposed solve for reverse mode). Every solve, the
    primal one, tangents and the adjoint, reports a failure as NaN (`throw=False`), where
    lineax's own derivative rules raise from their tangent solves: in a batch (`vmap`) one
    item whose operator turned singular then fails alone instead of stopping the batch.
    `pinv` also preconditions the transposed solves (the DST preconditioner is symmetric)."""
    import lineax as lx

    options = {} if pinv is None else {"preconditioner": lx.FunctionLinearOperator(pinv, struct)}

    def run(matvec, b):
        # a zero right-hand side has the solution zero; handed to the Krylov iteration it
        # breaks down (0 / 0) and comes back NaN after `max_steps` iterations: the tangent
        # of a coefficient the residual never reads (a corner node's, when every wall is
        # pinned), so a `jacfwd` over all coefficients was NaN and slow. It is solved with
        # a harmless stand-in and zeroed instead.
        zero = jnp.all(b == 0)
        sol = lx.linear_solve(lx.FunctionLinearOperator(matvec, struct),
                              jnp.where(zero, jnp.ones_like(b), b), solver,
                              options=options, throw=False)
        ok = sol.result == lx.RESULTS.successful
        x = jnp.where(zero, 0.0, jnp.where(ok, sol.value, jnp.nan))
        return x, sol.stats.get("num_steps", jnp.asarray(0))

    return jax.lax.custom_linear_solve(operator, rhs, run, run, has_aux=True)


def _linear_solver(solver: str, rtol: float, atol: float, max_steps: int):
    import lineax as lx

    if solver == "direct":
        return lx.LU()
    if solver == "gmres":  # lineax counts GMRES steps in restart cycles
        restart = min(_GMRES_RESTART, max_steps)
        return lx.GMRES(rtol, atol, max_steps=-(-max_steps // restart), restart=restart)
    return lx.BiCGStab(rtol, atol, max_steps=max_steps)


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is None:
            continue
        sub = getattr(sub, "jaxpr", sub)
        if len(sub.invars) == len(eqn.invars) and len(sub.outvars) == len(eqn.outvars):
            return sub
    return None


def _dependent_outputs(jaxpr, depends: list[bool]) -> list[bool]:
    """Which outputs of `jaxpr` depend on the inputs flagged in `depends` (conservative:
    an equation without a readable sub-jaxpr makes all its outputs depend on any input)."""
    dep = {v for v, d in zip(jaxpr.invars, depends, strict=True) if d}

    def is_dep(v):
        return not isinstance(v, jex_core.Literal) and v in dep

    for eqn in jaxpr.eqns:
        flags = [is_dep(v) for v in eqn.invars]
        if not any(flags):
            continue
        sub = _sub_jaxpr(eqn)
        outs = _dependent_outputs(sub, flags) if sub is not None else [True] * len(eqn.outvars)
        dep.update(v for v, o in zip(eqn.outvars, outs, strict=True) if o)
    return [is_dep(v) for v in jaxpr.outvars]


def _dst1(x, axis: int):
    """DST-I along `axis`: `S_k = sum_{j=1}^{N} x_j sin(pi j k / (N + 1))`, by one FFT of the
    odd extension `(0, x, 0, -reversed x)`."""
    x = jnp.moveaxis(x, axis, -1)
    zero = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    ext = jnp.concatenate([zero, x, zero, -x[..., ::-1]], axis=-1)
    n = x.shape[-1]
    out = -jnp.fft.rfft(ext, axis=-1)[..., 1 : n + 1].imag / 2
    return jnp.moveaxis(out.astype(x.dtype), -1, axis)


def _dst_preconditioner(R, lift, c, pinned, grid: Grid, dtype) -> Callable:
    """`r -> P^{-1} r`: the constant-coefficient linearisation of `R` inverted on the
    interior by sine transforms, identity on pinned nodes, Jacobi on free wall nodes."""
    c_mean = {n: jnp.broadcast_to(jnp.mean(v), v.shape) for n, v in c.items()}
    c_mean = jax.lax.stop_gradient(c_mean)
    u_ref = jax.lax.stop_gradient(jnp.broadcast_to(jnp.mean(lift), lift.shape))
    centre = tuple(n // 2 for n in grid.shape)
    impulse = jnp.zeros(grid.shape, dtype).at[centre].set(1.0)
    response = jax.jvp(lambda w: R(w, c_mean), (u_ref,), (impulse,))[1]
    radius = [min(_STENCIL_RADIUS, n // 2 - 1) for n in grid.shape]
    window = response[tuple(slice(m - r, m + r + 1) for m, r in zip(centre, radius, strict=True))]
    symbol = window
    for r, n in zip(radius, grid.shape, strict=True):
        theta = np.pi * np.arange(1, n - 1) / (n - 1)  # DST-I frequencies of the n - 2 inner nodes
        cosines = jnp.asarray(np.cos(np.outer(np.arange(-r, r + 1), theta)), dtype)
        symbol = jnp.tensordot(symbol, cosines, axes=([0], [0]))
    top = jnp.max(jnp.abs(symbol))
    symbol = jnp.where(jnp.abs(symbol) > 1e-12 * top, symbol, top)
    symbol = jax.lax.stop_gradient(symbol)
    diagonal = jax.lax.stop_gradient(response[centre])
    diagonal = jnp.where(diagonal == 0, 1.0, diagonal)
    inner = tuple(slice(1, n - 1) for n in grid.shape)
    shell = np.ones(grid.shape, bool)
    shell[inner] = False
    norm = float(np.prod([2.0 / (n - 1) for n in grid.shape]))

    def apply(r):
        x = jnp.where(pinned, 0.0, r)[inner]
        for a in range(grid.ndim):
            x = _dst1(x, a)
        x = x / symbol
        for a in range(grid.ndim):
            x = _dst1(x, a)
        out = jnp.zeros_like(r).at[inner].set(norm * x)
        out = jnp.where(shell, r / diagonal, out)
        return jnp.where(pinned, r, out)

    return apply
