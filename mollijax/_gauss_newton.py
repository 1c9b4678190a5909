"""Levenberg-Marquardt fits: damped Gauss-Newton steps with the dense Jacobian, for problems
with few parameters (a 1-D coefficient on a grid, a few hundred network weights).

A `Problem`'s loss is `L(theta) = |rho(theta)|^2 + P(theta)`: the data, residual and
condition terms are means of squares (`rho`: their whitened residual vector) and `P` the
weighted regularisers. Each step solves

    (H + mu diag(H)) delta = -g,    H = 2 J^T J + P''_+,    g = 2 J^T rho + P',

with `J = d rho / d theta` (forward mode: one tangent per parameter) and `P''_+` the positive
part of the regularisers' Hessian (exact for the quadratic penalties `H1` and `Curvature`
of a free grid coefficient), accepts the step where the loss falls (then `mu` shrinks by
the gain ratio's rule of Nielsen) and otherwise raises `mu` and tries again. Near the
minimum the steps are Gauss-Newton's (quadratic convergence for small residuals, linear
with a rate set by the residual's curvature otherwise), so a fit ends on its convergence
test in tens of steps where a first-order method needs thousands of evaluations; that
makes the fit a function of the data and weights alone (not of where an iteration count
ran out), which is what a weight criterion (`gcv`, `evidence`) assumes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from ._errors import MollijaxError
from ._fit import FitResult, _final_values
from ._problem import Problem
from ._result import Status
from ._terms import Evaluation, _Penalty

GN_MAX_PARAMETERS = 4096
"""`gauss_newton` refuses more parameters than this: the dense `J^T J` and its Cholesky
factor grow as the square and cube of the count."""


def _split(unknowns):
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return flat, params, static, unravel


def _penalty(problem: Problem, u, dtype):
    ev = Evaluation(problem.grid, u, {}, problem.data, problem.masks, _no_residual,
                    problem.domain, problem.band)
    total = jnp.zeros((), dtype)
    for t in problem.active_terms(u):
        if isinstance(t, _Penalty):
            total = total + t.weight.astype(dtype) * t(ev)
    return total


def _no_residual(fn):
    raise MollijaxError("internal: a regulariser asked for a PDE residual.")


@eqx.filter_jit
def _linearise(problem: Problem, unknowns):
    """`(rho, J, P, P', P'')` at the unknowns' own parameters, `rho` and `J` by term name.

    `J` is built one parameter array (leaf) at a time, the others held fixed: forward mode
    then carries no tangent into the parts of the model a leaf does not reach (an evolved
    state's initial values do not enter its propagator's exponential), which halves the
    cost of an evolved fit's Jacobian (ad hoc, heat1d 101 x 101)."""
    from ._uncertainty import _whitened

    flat, params, static, _ = _split(unknowns)
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def with_leaf(i, x):
        new = list(leaves)
        new[i] = x
        return eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)

    blocks = []
    for i, leaf in enumerate(leaves):
        jac = jax.jacfwd(lambda x, i=i: _whitened(problem, with_leaf(i, x)))(leaf)
        blocks.append({k: v.reshape(v.shape[0], -1) for k, v in jac.items()})
    jac = {k: jnp.concatenate([b[k] for b in blocks], axis=1) for k in blocks[0]}
    return (_whitened(problem, unknowns), jac, *_penalty_quadratic(problem, unknowns))


def _penalty_quadratic(problem: Problem, unknowns):
    """`(P, P', P'')`: the weighted regularisers, their gradient and Hessian in the flat
    parameters of `unknowns`."""
    flat, _, static, unravel = _split(unknowns)

    def pen(theta):
        return _penalty(problem, eqx.combine(unravel(theta), static), flat.dtype)

    return pen(flat), jax.grad(pen)(flat), jax.hessian(pen)(flat)


_penalty_quadratic_jit = eqx.filter_jit(_penalty_quadratic)


@eqx.filter_jit
def _loss(problem: Problem, unknowns):
    return problem.loss(unknowns)[0]


def _as_numpy(lin):
    r, jac, pen, g_pen, h_pen = lin
    names = list(r)
    return ({k: np.asarray(r[k], np.float64) for k in names},
            {k: np.asarray(jac[k], np.float64) for k in names},
            float(pen), np.asarray(g_pen, np.float64), np.asarray(h_pen, np.float64))


def gn_hessian(lin, terms=None, positive=None) -> np.ndarray:
    """`H = 2 sum_t J_t^T J_t + P''_+` of a linearisation (`_linearise`), over the terms
    named in `terms` (default: all); `positive`: `P''_+` where the caller has it."""
    from ._auto import _positive_part

    _, jac, _, _, h_pen = lin
    h = _positive_part(h_pen) if positive is None else positive
    for name in jac if terms is None else terms:
        h = h + 2.0 * jac[name].T @ jac[name]
    return h


class _PositivePart:
    """`_positive_part` that reuses its last answer while the Hessian it is given stays the
    same: a quadratic penalty's (`H1`, `Curvature` of a grid coefficient) is the same at
    every Levenberg-Marquardt step, and its test (a Cholesky factor, else an eigenvalue
    solve) costs as much as a step's own solve."""

    def __init__(self):
        self.h = self.positive = None

    def __call__(self, h: np.ndarray) -> np.ndarray:
        from ._auto import _positive_part

        if self.h is None or self.h.shape != h.shape or not np.array_equal(self.h, h):
            self.h, self.positive = h, _positive_part(h)
        return self.positive


def influence_trace(lin, data_terms) -> float:
    """The effective number of parameters `p = 2 sum_f tr(J_f H^+ J_f^T)` of a
    linearisation (`_linearise`) over the data terms named in `data_terms`, with
    `H = 2 sum_f J_f^T J_f + P''_+` (residual and condition terms left out, as in
    `effective_parameters`, which this equals with whitened Jacobians)."""
    from ._auto import _trace_influence

    return _trace_influence(gn_hessian(lin, data_terms),
                            [(2.0, lin[1][name]) for name in data_terms])


def gauss_newton(
    problem: Problem,
    unknowns: Mapping,
    *,
    steps: int = 100,
    tol: float = 1e-10,
    damping: float = 1e-3,
    max_parameters: int = GN_MAX_PARAMETERS,
) -> FitResult:
    """Fit `unknowns` by Levenberg-Marquardt (module docstring).

    **Arguments:**

    - `problem`, `unknowns`: as for `fit`; every loss term must be a mean of squares (data,
      residual, condition) or a regulariser.
    - `steps`: the most Jacobians (accepted steps).
    - `tol`: stop when an accepted step lowers the loss by less than `tol` relative to it,
      or when no step lowers it at all (the damping past `1e12`: the minimum at working
      precision).
    - `damping`: the first `mu`.
    - `max_parameters`: refuse more parameters (the dense `J^T J` and its factorisation
      grow as their square and cube).

    **Returns:** a `FitResult`; `steps` counts accepted steps, `history["total"]` holds the
    loss after each.
    """
    return _lm(problem, unknowns, steps=steps, tol=tol, damping=damping,
               max_parameters=max_parameters)[0]


def _lm(problem, unknowns, *, steps, tol, damping=1e-3, max_parameters=GN_MAX_PARAMETERS,
        prepared=False, free=None):
    """`gauss_newton`'s fit and its last linearisation (NumPy; at the last point where the
    Jacobian was taken: the result's, or the one before its final step). `prepared`: the
    problem is already prepared (a weight scan prepares once, at its start: an evolved
    state's propagator checks its linearity there, 0.2 s per call, and keeps the same
    compiled functions from weight to weight). `free`: a boolean mask over the flat
    parameters; the others keep their values (nested models of one structure then share
    the compiled linearisation: `choose_inclusion`'s shapes)."""
    start = time.perf_counter()
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MollijaxError(f"gauss_newton `steps` must be a positive integer, got {steps!r}.")
    if not prepared:
        problem = problem.prepare(unknowns)
    flat, params, static, unravel = _split(dict(unknowns))
    n = int(flat.size)
    if n > max_parameters:
        raise MollijaxError(
            f"gauss_newton: {n} parameters, more than `max_parameters` ({max_parameters}; "
            f"default GN_MAX_PARAMETERS = {GN_MAX_PARAMETERS}): the dense Jacobian does not "
            "pay; use `fit` with L-BFGS.")
    def rebuild(theta):
        return eqx.combine(unravel(jnp.asarray(theta, flat.dtype)), static)

    theta = np.asarray(flat, dtype=np.float64)
    free = np.ones(n, bool) if free is None else np.asarray(free, bool)
    if free.shape != (n,):
        raise MollijaxError(f"internal: `free` has shape {free.shape}, the parameters ({n},).")
    u = rebuild(theta)
    lin = _as_numpy(_linearise(problem, u))
    r, jac, pen, g_pen, _ = lin
    loss = float(sum(v @ v for v in r.values()) + pen)
    history = [loss]
    mu, nu = damping, 2.0
    status, message, taken = Status.completed, "", 0
    if not np.isfinite(loss):
        status = Status.diverged
        message = "the loss at the start is not finite; the start is returned"
    positive = _PositivePart()
    while status == Status.completed and taken < steps:
        h = gn_hessian(lin, positive=positive(lin[4]))[np.ix_(free, free)]
        g = (g_pen + sum(2.0 * jac[k].T @ r[k] for k in r))[free]
        if not (np.all(np.isfinite(h)) and np.all(np.isfinite(g))):
            status = Status.diverged
            message = (f"the Jacobian or the regularisers' Hessian is not finite at step "
                       f"{taken}; returning the last point with a finite loss")
            break
        scale = np.maximum(np.diag(h), 1e-12 * max(float(np.max(np.diag(h))), 1e-300))
        accepted = False
        while mu < 1e12:
            try:
                delta = -np.linalg.solve(h + mu * np.diag(scale), g)
            except np.linalg.LinAlgError:
                mu, nu = mu * nu, 2.0 * nu
                continue
            trial = theta.copy()
            trial[free] += delta
            new = float(_loss(problem, rebuild(trial)))
            if np.isfinite(new) and new < loss:
                predicted = -(g @ delta + 0.5 * delta @ h @ delta)
                gain = (loss - new) / max(predicted, 1e-300)
                mu *= max(1.0 / 3.0, 1.0 - (2.0 * min(gain, 1.0) - 1.0) ** 3)
                nu = 2.0
                accepted = True
                break
            mu, nu = mu * nu, 2.0 * nu
        if not accepted:
            message = (f"converged at step {taken} (no step lowers the loss, damping "
                       f"{mu:.3g}; gradient norm {np.linalg.norm(g):.3g})")
            break
        change = (loss - new) / max(abs(loss), 1e-300)
        theta, loss, taken = trial, new, taken + 1
        history.append(loss)
        u = rebuild(theta)
        if change < tol:
            message = (f"converged at step {taken} (relative loss change {change:.3g} < "
                       f"tol {tol:g})")
            break
        lin = _as_numpy(_linearise(problem, u))
        r, jac, pen, g_pen, _ = lin
    if status == Status.completed and not message:
        message = f"completed {taken} steps without meeting tol {tol:g}"
    p2, s2 = eqx.partition(u, eqx.is_inexact_array)
    values, fields = _final_values(problem, p2, s2)
    result = FitResult(
        unknowns=u,
        values={k: np.asarray(v) for k, v in values.items()},
        fields={k: np.asarray(v) for k, v in fields.items()},
        history={"total": np.asarray(history[1:])},
        status=status,
        steps=taken,
        wall_time=time.perf_counter() - start,
        message=message,
        final_loss=loss,
    )
    return result, lin
