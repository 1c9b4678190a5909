"""How an `Evolution` is integrated in time: the integrators of its semi-discrete system.

An `Evolution` (the "what") turns `u_t = F(u, unknowns)` into a system of ordinary
differential equations on the spatial nodes, one per evolved field (the method of lines):

    du/dt = F_k(u)   on [t_k, t_{k+1}],   k = 0, ..., nt - 2,

where `F_k` reads time-dependent coefficients and known fields at the node `t_k` (they are
piecewise constant in time) and is zero on the nodes pinned by exact Dirichlet conditions,
which are reset to their prescribed values at every node `t_k`. That system is a
`SemiDiscrete`; an integrator (the "how") maps it to the state at every node `t_k`:

- `RK4`: classical fourth-order Runge-Kutta with a fixed number of steps per interval, in
  `lax.scan` (fast, explicit: stable only below the limit `tau |lambda| < 2.78`);
- `Diffrax`: any `diffrax` solver, adaptive (Tsit5 with a PID controller by default) or
  fixed-step, differentiated by recursive checkpointing;
- `Propagator`: for a right-hand side that is affine in the state with coefficients constant
  in time, `du/dt = A u + b`, the exact propagator `exp(dt A)` of one grid interval (no time
  stepping error, no stability limit); where that does not apply it falls back to another
  integrator (`RK4` by default).

Write an integrator of your own by subclassing `AbstractIntegrator` (its four methods).
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from . import _cache
from ._errors import MollijaxError

RK4_STABILITY = 2.78  # |tau lambda| limit of classical RK4 on the negative real axis

State = dict[str, Float[Array, "*space"]]
History = dict[str, Float[Array, " nt *space"]]


class SemiDiscrete(eqx.Module):
    """The semi-discrete system `du/dt = F_k(u)` that an integrator integrates.

    **Fields:**

    - `initial`: `{field: values on the spatial grid}`, the state at the first node `t_0`.
    - `args`: every array `rates` and `pin` read (coefficients, known fields, pinned values),
      passed explicitly so that integrators differentiate with respect to them without
      closing over traced values.
    - `rates`: `rates(state, k, args) -> {field: du/dt}`, the right-hand side on the
      interval `[t_k, t_{k+1}]` (zero on pinned nodes); `k` may be traced.
    - `pin`: `pin(state, k, args) -> state` with the pinned nodes set to their values at
      `t_k`.
    - `nt`: the number of time nodes; `dt`: their spacing.

    An integrator returns `{field: array of shape (nt, *space)}`: row `k` is `pin(u(t_k), k)`.
    """

    initial: State
    args: dict
    rates: Callable = eqx.field(static=True)
    pin: Callable = eqx.field(static=True)
    nt: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)

    def rates_at(self, state: State, k: int | Int[Array, ""]) -> State:
        """`F_k(state)`."""
        return self.rates(state, k, self.args)

    def pin_at(self, state: State, k: int | Int[Array, ""]) -> State:
        """`state` with its pinned nodes set to their values at `t_k`."""
        return self.pin(state, k, self.args)


def _stack(history, last):
    """Rows `0..nt-2` (scanned) and the last row, stacked on a leading time axis."""
    return {n: jnp.concatenate([history[n], last[n][None]], axis=0) for n in history}


class AbstractIntegrator(eqx.Module):
    """Integrates a `SemiDiscrete` system over the time nodes of a grid.

    The interface an `Evolution` uses: `prepare` (make every choice that depends on the
    initial state once, outside the loss), `__call__` (the integration, traced inside the
    loss and differentiated by reverse mode), `describe` and `divergence_hint` (reports).
    """

    @abc.abstractmethod
    def prepare(self, system: SemiDiscrete) -> AbstractIntegrator:
        """This integrator with every choice that depends on the initial state made.

        Runs eagerly on concrete values, once per fit; returns `self` when nothing is left
        to choose.
        """

    @abc.abstractmethod
    def __call__(self, system: SemiDiscrete) -> History:
        """`{field: array (nt, *space)}`, the state at every time node."""

    def traceable(self) -> AbstractIntegrator:
        """A stand-in that integrates without `prepare`, with the same output shapes (for
        checking a problem abstractly, without the eager work `prepare` does)."""
        return self

    @abc.abstractmethod
    def describe(self) -> dict:
        """The integrator's name and settings, JSON-able (for metrics files)."""

    @abc.abstractmethod
    def divergence_hint(self) -> str:
        """A sentence on what to change when a fit through this integrator diverges."""


class RK4(AbstractIntegrator):
    """Classical fourth-order Runge-Kutta, `substeps` fixed steps per grid interval.

    With `tau = dt / substeps` and `F = F_k` on the interval `[t_k, t_{k+1}]`:

        k1 = F(u),  k2 = F(u + tau/2 k1),  k3 = F(u + tau/2 k2),  k4 = F(u + tau k3),
        u <- u + tau/6 (k1 + 2 k2 + 2 k3 + k4).

    Global error `O(tau^4)`. The steps are one `lax.scan` inside a `lax.scan` over the
    intervals; reverse mode stores the stage values of every step (memory grows with
    `nt * substeps`). Explicit: stable only for `tau |lambda| < 2.78` with `lambda` the
    eigenvalues of the Jacobian of `F` (the limit of RK4 on the negative real axis).

    **Arguments:**

    - `substeps`: steps per grid interval; `None` chooses them in `prepare` from the
      stiffness of `F` at the initial state: the spectral radius `|lambda|` of its Jacobian,
      estimated by power iteration, gives `substeps = ceil(safety * dt * |lambda| / 2.78)`.
    - `safety`: factor `>= 1` over that stability limit (the coefficients move during a fit;
      a run that still goes unstable stops as `diverged`).
    """

    substeps: int | None = eqx.field(static=True)
    safety: float = eqx.field(static=True)

    def __init__(self, substeps: int | None = None, safety: float = 2.0):
        if substeps is not None and (
            isinstance(substeps, bool) or int(substeps) != substeps or substeps < 1
        ):
            raise MollijaxError(
                f"RK4 `substeps` must be a positive integer or None, got {substeps!r}."
            )
        self.substeps = None if substeps is None else int(substeps)
        if not safety >= 1.0:
            raise MollijaxError(f"RK4 `safety` must be >= 1, got {safety!r}.")
        self.safety = float(safety)

    def prepare(self, system: SemiDiscrete) -> RK4:
        if self.substeps is not None:
            return self
        return RK4(stable_substeps(system, self.safety), self.safety)

    def traceable(self) -> RK4:
        return self if self.substeps is not None else RK4(1, self.safety)

    def __call__(self, system: SemiDiscrete) -> History:
        if self.substeps is None:
            raise MollijaxError(
                "This Evolution chooses its substeps from the initial unknowns: call "
                "`problem.prepare(unknowns)` first (`fit` does), or give `substeps`."
            )
        tau = system.dt / self.substeps

        def axpy(a, x, y):
            return {n: y[n] + a * x[n] for n in y}

        # the four stages are one `lax.scan` over (a_i, b_i), so that `F` is traced (and
        # compiled) once per step, not four times: stage i evaluates
        # k_i = F(u + a_i tau k_{i-1}) and adds b_i tau k_i to the update
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(system.initial))
        ab = jnp.asarray([[0.0, 1 / 6], [0.5, 1 / 3], [0.5, 1 / 3], [1.0, 1 / 6]], dtype)

        def interval(state, k):
            def step(u, _):
                def stage(carry, row):
                    prev, acc = carry
                    ki = system.rates_at(axpy(row[0] * tau, prev, u), k)
                    return (ki, axpy(row[1] * tau, ki, acc)), None

                zero = jax.tree_util.tree_map(jnp.zeros_like, u)
                (_, new), _ = jax.lax.scan(stage, (zero, u), ab)
                return new, None

            state = system.pin_at(state, k)
            new, _ = jax.lax.scan(step, state, None, length=self.substeps)
            return new, state

        last, history = jax.lax.scan(interval, system.initial, jnp.arange(system.nt - 1))
        return _stack(history, system.pin_at(last, system.nt - 1))

    def describe(self) -> dict:
        return {"integrator": "RK4", "substeps": self.substeps, "safety": self.safety}

    def divergence_hint(self) -> str:
        return (
            f"The evolution takes {self.substeps} explicit Runge-Kutta substeps per time "
            "interval: coefficients that grew past their stability limit blow the state up; "
            "raise `substeps` (or `safety`) of the Evolution, or integrate it with an implicit "
            "solver (`Diffrax(diffrax.Kvaerno5())`)."
        )


def spectral_radius(system: SemiDiscrete, iterations: int = 60) -> float:
    """`|lambda|`, the largest eigenvalue magnitude of the Jacobian of `F_0` at the initial
    (pinned) state, by power iteration from a random start (`iterations` Jacobian-vector
    products in one compiled loop)."""
    return float(_power_iteration(system, iterations))


@eqx.filter_jit
def _power_iteration(system: SemiDiscrete, iterations: int) -> Float[Array, ""]:
    state0 = system.pin_at(system.initial, 0)
    names = tuple(state0)
    keys = jax.random.split(jax.random.PRNGKey(0), len(names))
    v0 = {n: jax.random.normal(k, state0[n].shape, state0[n].dtype)
          for n, k in zip(names, keys, strict=True)}

    def norm(v):
        return jnp.sqrt(sum(jnp.sum(x**2) for x in v.values()))

    def body(_, carry):
        v, lam = carry
        size = norm(v)
        # a zero vector (F constant in the state) stays zero: |lambda| = 0
        v = {n: x / jnp.where(size > 0, size, 1.0) for n, x in v.items()}
        v = jax.jvp(lambda q: system.rates(q, 0, system.args), (state0,), (v,))[1]
        return v, norm(v)

    lam0 = jnp.zeros((), jnp.result_type(*v0.values()))
    return jax.lax.fori_loop(0, iterations, body, (v0, lam0))[1]


def stable_substeps(system: SemiDiscrete, safety: float = 2.0, iterations: int = 60) -> int:
    """RK4 steps per grid interval that keep `safety * tau * |lambda| <= 2.78`
    (`tau = dt / substeps`, `|lambda|` from `spectral_radius`)."""
    lam = spectral_radius(system, iterations)
    return max(1, math.ceil(safety * system.dt * lam / RK4_STABILITY))


def _diffrax():
    try:
        import diffrax
    except ImportError:  # pragma: no cover - diffrax is installed with the test extras
        raise MollijaxError(
            "The `Diffrax` integrator needs the `diffrax` package (`pip install diffrax`)."
        ) from None
    return diffrax


class Diffrax(AbstractIntegrator):
    """Integrate with `diffrax.diffeqsolve`, one solve per grid interval `[t_k, t_{k+1}]`.

    Each interval starts from the pinned state at `t_k`, with `F_k` (coefficients and known
    fields read at `t_k`, as `RK4` reads them: no interpolation in time), and saves only its
    end point; a `lax.scan` runs the intervals. So the discontinuities of the piecewise
    constant coefficients fall on solve boundaries and an adaptive solver never steps
    across them.

    Reverse mode differentiates the discrete solution ("discretise, then optimise"): the
    default adjoint `diffrax.RecursiveCheckpointAdjoint(checkpoints=16)` keeps 16
    checkpoints of the state per interval and recomputes the steps between them
    (binomial checkpointing), so memory stays small whatever the number of steps. (Diffrax's
    own default keeps up to `max_steps` checkpoints: 776 MiB instead of 156 MiB for the
    2-D heat loss at 129^2 x 33 frames, `benchmarks/evolve_cost.py`.)

    A solve that fails (more than `max_steps` steps in one interval, or a step size that
    underflows) does not raise inside the loss and does not return its unfinished state:
    from that interval on, the state is NaN, so that a fit stops as `diverged` with its last
    finite parameters.

    **Arguments:**

    - `solver`: a `diffrax` solver; `None` is `diffrax.Tsit5()` (explicit 5th-order
      Runge-Kutta with an embedded 4th-order error estimate). A stiff problem wants an
      implicit one, e.g. `diffrax.Kvaerno5()`.
    - `rtol`, `atol`: tolerances of the `diffrax.PIDController` of an adaptive solver
      (local error per step `<= atol + rtol |u|`, in the RMS norm over nodes).
    - `dt0`: the initial step of an adaptive solver (`None`: diffrax's heuristic, per
      interval); required for a fixed-step solver (e.g. `diffrax.Euler()`), whose interval
      `dt` is then cut into `ceil(dt / dt0)` equal steps.
    - `max_steps`: the most steps (accepted or rejected) one interval may take.
    - `adjoint`: a `diffrax` adjoint; `None` is
      `diffrax.RecursiveCheckpointAdjoint(checkpoints=16)`.
    """

    solver: object = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    adjoint: object = eqx.field(static=True)

    def __init__(
        self,
        solver=None,
        rtol: float = 1e-6,
        atol: float = 1e-8,
        dt0: float | None = None,
        max_steps: int = 4096,
        adjoint=None,
    ):
        dfx = _diffrax()
        solver = dfx.Tsit5() if solver is None else solver
        if not isinstance(solver, dfx.AbstractSolver):
            raise MollijaxError(
                f"Diffrax `solver` must be a diffrax solver (e.g. diffrax.Tsit5()), got "
                f"{type(solver).__name__}."
            )
        self.solver = solver
        if not (rtol > 0 and atol >= 0):
            raise MollijaxError(
                f"Diffrax `rtol` must be > 0 and `atol` >= 0, got rtol={rtol!r}, atol={atol!r}."
            )
        self.rtol, self.atol = float(rtol), float(atol)
        if dt0 is not None and not dt0 > 0:
            raise MollijaxError(f"Diffrax `dt0` must be positive or None, got {dt0!r}.")
        if dt0 is None and not self.adaptive:
            raise MollijaxError(
                f"Diffrax: the fixed-step solver {type(solver).__name__} needs `dt0`, the "
                "largest step size."
            )
        self.dt0 = None if dt0 is None else float(dt0)
        if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
            raise MollijaxError(f"Diffrax `max_steps` must be a positive integer, got "
                                f"{max_steps!r}.")
        self.max_steps = int(max_steps)
        adjoint = dfx.RecursiveCheckpointAdjoint(checkpoints=16) if adjoint is None else adjoint
        if not isinstance(adjoint, dfx.AbstractAdjoint):
            raise MollijaxError(
                f"Diffrax `adjoint` must be a diffrax adjoint (e.g. "
                f"diffrax.RecursiveCheckpointAdjoint()), got {type(adjoint).__name__}."
            )
        self.adjoint = adjoint

    @property
    def adaptive(self) -> bool:
        """Whether the solver estimates its local error (and so steps adaptively)."""
        return isinstance(self.solver, _diffrax().AbstractAdaptiveSolver)

    def prepare(self, system: SemiDiscrete) -> Diffrax:
        return self

    def _steps(self, dt: float):
        """`(dt0, step size controller)` for an interval of length `dt`."""
        dfx = _diffrax()
        if self.adaptive:
            return self.dt0, dfx.PIDController(rtol=self.rtol, atol=self.atol)
        n = max(1, math.ceil(dt / self.dt0 - 1e-9))
        return dt / n, dfx.ConstantStepSize()

    def __call__(self, system: SemiDiscrete) -> History:
        dfx = _diffrax()
        dt = system.dt
        dt0, controller = self._steps(dt)
        term = dfx.ODETerm(lambda t, y, a: system.rates(y, a[0], a[1]))
        saveat = dfx.SaveAt(t1=True)

        def interval(carry, k):
            state, ok = carry
            state = system.pin_at(state, k)
            sol = dfx.diffeqsolve(
                term, self.solver, 0.0, dt, dt0, state, (k, system.args), saveat=saveat,
                stepsize_controller=controller, adjoint=self.adjoint,
                max_steps=self.max_steps, throw=False,
            )
            good = ok & (sol.result == dfx.RESULTS.successful)
            # after a failure, carry a finite (zero) state so that the remaining solves end
            # quickly; every row from the failed interval on is NaN
            new = {n: jnp.where(good, y[0], 0.0) for n, y in sol.ys.items()}
            row = {n: jnp.where(ok, v, jnp.nan) for n, v in state.items()}
            return (new, good), row

        (last, ok), history = jax.lax.scan(
            interval, (system.initial, jnp.array(True)), jnp.arange(system.nt - 1)
        )
        last = {n: jnp.where(ok, v, jnp.nan)
                for n, v in system.pin_at(last, system.nt - 1).items()}
        return _stack(history, last)

    def describe(self) -> dict:
        return {
            "integrator": "Diffrax",
            "solver": type(self.solver).__name__,
            "adaptive": self.adaptive,
            "rtol": self.rtol if self.adaptive else None,
            "atol": self.atol if self.adaptive else None,
            "dt0": self.dt0,
            "max_steps": self.max_steps,
            "adjoint": type(self.adjoint).__name__,
        }

    def divergence_hint(self) -> str:
        what = (f"{type(self.solver).__name__}, rtol={self.rtol:g}, atol={self.atol:g}"
                if self.adaptive else f"{type(self.solver).__name__}, dt0={self.dt0:g}")
        return (
            f"The evolution is integrated by diffrax ({what}) with at most "
            f"max_steps={self.max_steps} steps per time interval; a solve that needs more "
            "(a stiff or blown-up state) makes the state NaN: raise `max_steps`, loosen "
            "`rtol`/`atol`, or use an implicit solver (`diffrax.Kvaerno5()`)."
        )


class Propagator(AbstractIntegrator):
    """The exact propagator of a linear system with coefficients constant in time.

    When `F_k(u) = A u + b` is affine in the state and the same on every interval (it reads
    no time-dependent coefficient or known field), one interval advances the state exactly:

        u(t_{k+1}) = Phi u(t_k) + g,   [[Phi, g], [0, 1]] = exp(dt [[A, b], [0, 0]]),

    with `A` the Jacobian of `F` (built by forward mode, one column per node) and the matrix
    exponential by scaling and squaring: the [6/6] Pade approximant of `exp(dt A / 2^s)`
    squared `s` times, `s` chosen by `prepare` so that `|dt A / 2^s|_1 <= 0.25` at the
    initial coefficients (error about 1e-16 per interval there; the approximant is
    A-stable, so coefficients that grow during a fit cost accuracy, never stability).
    Every interval then costs one matrix-vector product, with a time error at round-off
    level (at the initial coefficients) and no stability limit; reverse mode differentiates
    through the exponential. `A` is dense: `n^2` numbers for `n` evolved nodes, so this is
    for one-dimensional (or small) spatial grids.

    `prepare` checks, eagerly at the initial unknowns, that the propagator applies: at most
    `max_nodes` evolved nodes, `F_k` equal on every interval, and `F` affine (checked at
    random states, at the initial coefficients and at randomly perturbed ones). Where it does
    not apply, `prepare` returns `fallback` (prepared), so `Propagator()` can be given to any
    evolution and is used only where it is exact.

    **Arguments:**

    - `fallback`: the integrator used where the propagator does not apply (`None`: `RK4()`,
      substeps chosen from the stiffness).
    - `max_nodes`: the most evolved nodes for which the dense `A` is built.
    - `squarings`: `s` above; `None` chooses it in `prepare`.
    """

    fallback: AbstractIntegrator = eqx.field(static=True)
    max_nodes: int = eqx.field(static=True)
    squarings: int | None = eqx.field(static=True)

    def __init__(self, fallback: object = None, max_nodes: int = 4096,
                 squarings: int | None = None):
        fallback = RK4() if fallback is None else fallback
        if not isinstance(fallback, AbstractIntegrator) or isinstance(fallback, Propagator):
            raise MollijaxError(
                "Propagator `fallback` must be another mollijax integrator (RK4, Diffrax), got "
                f"{type(fallback).__name__}."
            )
        self.fallback = fallback
        if isinstance(max_nodes, bool) or int(max_nodes) != max_nodes or max_nodes < 1:
            raise MollijaxError(
                f"Propagator `max_nodes` must be a positive integer, got {max_nodes!r}."
            )
        self.max_nodes = int(max_nodes)
        if squarings is not None and (isinstance(squarings, bool) or int(squarings) != squarings
                                      or squarings < 0):
            raise MollijaxError(
                f"Propagator `squarings` must be a non-negative integer or None, got "
                f"{squarings!r}."
            )
        self.squarings = None if squarings is None else int(squarings)

    def prepare(self, system: SemiDiscrete) -> AbstractIntegrator:
        why, norm = _linearity(system, self.max_nodes)
        if why is not None:
            return self.fallback.prepare(system)
        if self.squarings is not None:
            return self
        return Propagator(self.fallback, self.max_nodes, _squarings(system.dt * norm))

    def traceable(self) -> AbstractIntegrator:
        return self if self.squarings is not None else Propagator(self.fallback,
                                                                  self.max_nodes, 0)

    def __call__(self, system: SemiDiscrete) -> History:
        if self.squarings is None:
            raise MollijaxError(
                "The Propagator checks that the evolution is linear with coefficients constant "
                "in time at the initial unknowns: call `problem.prepare(unknowns)` first (`fit` "
                "does)."
            )
        phi, g, unravel, ravel = propagator(system, self.squarings)

        def interval(v, k):
            row = ravel(system.pin_at(unravel(v), k))
            return phi @ row + g, unravel(row)

        start = ravel(system.initial)
        last, history = jax.lax.scan(interval, start, jnp.arange(system.nt - 1))
        return _stack(history, system.pin_at(unravel(last), system.nt - 1))

    def describe(self) -> dict:
        return {"integrator": "Propagator", "max_nodes": self.max_nodes,
                "squarings": self.squarings, "fallback": self.fallback.describe()}

    def divergence_hint(self) -> str:
        return (
            "The evolution is advanced by the exact propagator exp(dt A) of its linear system; "
            "a coefficient that makes A strongly unstable (growth exp(dt |lambda|)) overflows: "
            "constrain the coefficients' sign (e.g. a positive parametrisation)."
        )


def propagator(system: SemiDiscrete, squarings: int | None = None):
    """`(Phi, g, unravel, ravel)`: one interval's exact affine map `v -> Phi v + g` on the
    flattened state (`ravel`/`unravel` convert), for `F_0(u) = A u + b`; the exponential by
    `jax.scipy.linalg.expm`, or with `squarings` by `_pade_expm`."""
    _, unravel = ravel_pytree(system.initial)

    def ravel(state):
        return ravel_pytree(state)[0]

    def f(v):
        return ravel(system.rates_at(unravel(v), 0))

    zero = jnp.zeros_like(ravel(system.initial))
    n = zero.size
    b = f(zero)
    a = jax.vmap(lambda e: jax.jvp(f, (zero,), (e,))[1], out_axes=1)(jnp.eye(n, dtype=zero.dtype))
    m = jnp.zeros((n + 1, n + 1), zero.dtype).at[:n, :n].set(a).at[:n, n].set(b)
    if squarings is None:
        e = jax.scipy.linalg.expm(system.dt * m)
    else:
        e = _pade_expm(system.dt / 2.0**squarings * m, squarings)
    return e[:n, :n], e[:n, n], unravel, ravel


_PADE6 = tuple(
    math.factorial(12 - k) * math.factorial(6)
    / (math.factorial(12) * math.factorial(k) * math.factorial(6 - k))
    for k in range(7)
)


def _pade_expm(m, squarings: int):
    """`exp(m)^(2^squarings)` by the diagonal [6/6] Pade approximant of `exp(m)` (error
    ~ `|m|^13 / 1.3e14`, about 1e-16 for `|m|_1 <= 0.5`) and repeated squaring. A-stable: a
    norm that outgrows the scaling chosen for it loses accuracy, not stability."""
    eye = jnp.eye(m.shape[0], dtype=m.dtype)
    powers = [eye, m]
    for _ in range(5):
        powers.append(powers[-1] @ m)
    even = sum(c * p for k, (c, p) in enumerate(zip(_PADE6, powers, strict=True)) if k % 2 == 0)
    odd = sum(c * p for k, (c, p) in enumerate(zip(_PADE6, powers, strict=True)) if k % 2 == 1)
    e = jnp.linalg.solve(even - odd, even + odd)
    return jax.lax.fori_loop(0, squarings, lambda _, x: x @ x, e)


def _squarings(scaled_norm: float) -> int:
    """Squarings `s` that bring a norm `|dt A|_1` to at most 0.25 after scaling by `2^-s`."""
    if not scaled_norm > 0.25:
        return 0
    return math.ceil(math.log2(scaled_norm / 0.25))


def not_linear_reason(system: SemiDiscrete, max_nodes: int = 4096) -> str | None:
    """Why the `Propagator` does not apply to `system` (None when it does): too many nodes,
    a right-hand side that changes between intervals, or one that is not affine in the
    state. Checked eagerly at random states, at the system's coefficients and at randomly
    perturbed ones (a nonlinear term whose coefficient is zero at the start is caught
    there)."""
    return _linearity(system, max_nodes)[0]


def _linearity(system: SemiDiscrete, max_nodes: int) -> tuple[str | None, float]:
    """`(not_linear_reason, |A|_1 at the system's coefficients)`, one compiled check."""
    # shapes only, and arrays built by NumPy: nothing here runs eagerly on jax arrays (each
    # such operation would compile on its own), the check is one compiled function
    initial = jax.tree_util.tree_leaves(system.initial)
    n = sum(int(np.size(v)) for v in initial)
    if n > max_nodes:
        return f"{n} evolved nodes > max_nodes={max_nodes}", float("nan")
    dtype = jnp.result_type(*initial)
    tol = 1e-9 if dtype == jnp.float64 else 1e-3
    # random states and perturbations drawn by NumPy (a check that runs once per fit: jax's
    # random functions would compile once per shape, about a second on a small problem)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(n)
    y = rng.standard_normal(n)

    leaves, treedef = jax.tree_util.tree_flatten(system.args)

    def perturb(leaf):
        # relative and absolute: a coefficient that starts at zero moves too
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return leaf
        v = np.asarray(leaf)
        r1, r2 = rng.uniform(-1.0, 1.0, (2, *v.shape))
        return jnp.asarray(v * (1 + 0.3 * r1) + 0.01 * r2 * (np.mean(np.abs(v)) + 1),
                           jnp.result_type(leaf))

    perturbed = jax.tree_util.tree_unflatten(treedef, [perturb(leaf) for leaf in leaves])

    # every evaluation the check needs, as one batch of (state, interval) pairs: the right-
    # hand side is traced once (`vmap`), so the check compiles about as fast as one `F`
    nt = system.nt - 1
    states = np.concatenate([np.stack([np.zeros(n), x, y, x + y, 2.5 * x]),
                             np.broadcast_to(x, (nt, n)), np.eye(n)]).astype(dtype)
    ks = np.concatenate([np.zeros(5), np.arange(nt), np.zeros(n)]).astype(np.int32)

    @functools.partial(_cache.quick_jit, filtered=False)  # runs twice
    def residuals(args, initial, states, ks):
        unravel = ravel_pytree(initial)[1]
        out = jax.vmap(lambda v, k: ravel_pytree(system.rates(unravel(v), k, args))[0])(
            states, ks)
        f0, fx, fy, fxy, f25 = out[:5]
        over_time, columns = out[5:5 + nt] - fx, out[5 + nt:] - f0
        # |A|_1 from the columns A e_j = F(e_j) - F(0) (row j here; F affine, as the rest
        # checks)
        norm = jnp.max(jnp.sum(jnp.abs(columns), axis=1))
        additive = fxy - fx - fy + f0
        homogeneous = f25 - 2.5 * fx + 1.5 * f0
        scale = jnp.maximum(jnp.max(jnp.abs(jnp.stack([fx, fy, f0]))), jnp.finfo(dtype).tiny)
        return (jnp.max(jnp.abs(additive)) / scale, jnp.max(jnp.abs(homogeneous)) / scale,
                jnp.max(jnp.abs(over_time)) / scale, norm)

    norm0 = float("nan")
    for args in (system.args, perturbed):
        additive, homogeneous, over_time, norm = (
            float(r) for r in residuals(args, system.initial, states, ks))
        norm0 = norm if np.isnan(norm0) else norm0
        if not np.isfinite(additive + homogeneous + over_time):
            return "the right-hand side is not finite at random states", norm0
        if over_time > tol:
            return "the right-hand side changes between time intervals", norm0
        if max(additive, homogeneous) > tol:
            return "the right-hand side is not affine in the state", norm0
    return None, norm0
