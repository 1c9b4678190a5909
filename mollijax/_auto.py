"""Settings chosen from the data alone: noise level, units-free losses, regulariser weights
and kernel widths by criteria that never see the true coefficient.

    noise_sigma(data)            sigma_f: absolute noise standard deviation of each field
    scaled(problem, sigma)       data terms divided by sigma_f^2 (chi-square per node)
    discrepancy(problem, ...)    output error: Morozov's discrepancy principle over weights
    gcv(problem, ...)            output error: generalised cross-validation over weights
    cross_validate(build, ...)   equation error: K-fold over held-out nodes, for eps and weight
    lcurve_corner(curve)         the L-curve's corner, a diagnostic

A weight sweep reuses one compiled fit: weights are values (`Problem.with_weights`), the
optimiser object is created once, and each fit starts from the previous one's unknowns
(continuation from large weights to small).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ._batch import fit_batch
from ._eps import difference_noise
from ._errors import MollijaxError
from ._fit import FitResult, fit
from ._gauss_newton import _lm, _penalty, gn_hessian, influence_trace
from ._problem import Problem
from ._terms import DataMisfit, Residual, domain_on_axes

NOISE_FLOOR = 1e-8
"""Relative floor of `noise_sigma`: `sigma_f >= NOISE_FLOOR * scale(f)`."""


# ----------------------------------------------------------------------------- noise
def _field_scale(u: np.ndarray) -> float:
    s = float(np.std(u))
    if s == 0.0:
        s = float(np.max(np.abs(u))) if u.size else 0.0
    return s if s > 0.0 else 1.0


def noise_sigma(
    data: Mapping[str, object], masks: Mapping[str, object] | None = None
) -> dict[str, float]:
    """The absolute noise standard deviation `sigma_f` of each observed field, from the data.

    The estimator is `difference_noise` (the same as `estimate_noise`, in the data's units):

        d_a = Delta_a^4 f / sqrt(70),   s_med = median |d_a| / 0.6745,
        s_a = sqrt(mean(d_a^2 over |d_a| <= 5 s_med))   (each axis a with >= 8 nodes),
        sigma_f = the s_a within 10 % of the smallest, pooled (mean square by window count),

    the trimmed root mean square of the normalised 4th difference, which for white noise
    of standard deviation `sigma` is `sigma` (`1 + 16 + 36 + 16 + 1 = 70`). With a mask,
    only differences of 5 observed neighbours count (at least 8 of them along an axis).

    **Bias.** A smooth field adds `h^4 f^(4) / sqrt(70)` to each `d`, so the estimate is
    exact up to its sampling error (about `1.1 / sqrt(n)` relative for `n` overlapping
    windows) when
    `h^4 |f''''| << sqrt(70) sigma`, and too large when the field is under-resolved or the
    noise is far below the field's 4th-difference scale (noise-free data on a coarse grid
    returns the discretisation's `h^4 |f''''|` level, not 0). Correlated noise is
    underestimated.

    **Floor.** The result is never below `NOISE_FLOOR * scale(f)` (scale: the standard
    deviation, or `max |f|` for a constant field, or 1 for zeros), so that noise-free data
    still gives a finite positive `sigma_f` and the divisions by `sigma_f^2` in `scaled` and
    `discrepancy` are safe.

    **Arguments:**

    - `data`: `{name: array}` of observed fields (any shape with an axis of >= 8 nodes).
    - `masks`: optional `{name: bool array}`, True where observed.

    **Returns:** `{name: sigma_f}` (floats, in the data's units).
    """
    masks = dict(masks or {})
    out = {}
    for name, value in data.items():
        u = np.asarray(value, dtype=np.float64)
        mask = masks.get(name)
        mask = np.ones(u.shape, bool) if mask is None else np.asarray(mask, bool)
        if mask.shape != u.shape:
            raise MollijaxError(
                f"noise_sigma: mask of {name!r} has shape {mask.shape}, its data {u.shape}."
            )
        if not np.all(np.isfinite(u[mask])):
            raise MollijaxError(f"noise_sigma: data {name!r} has NaN or inf at observed nodes.")
        scale = _field_scale(u[mask])
        sigma = difference_noise(u, mask, min_windows=8)
        if sigma is None:
            raise MollijaxError(
                f"noise_sigma: too few observed windows of 5 nodes in {name!r} (shape "
                f"{u.shape}) to estimate its noise (need 8 along an axis of >= 8 nodes)."
            )
        out[name] = float(max(sigma, NOISE_FLOOR * scale))
    return out


# ----------------------------------------------------------------------------- scaling
def scaled(
    problem: Problem, sigma: Mapping[str, float], *, residual: float | None = None
) -> Problem:
    """`problem` with each data term `data:<f>` weighted by an extra `1 / sigma_f^2`.

    The data term becomes a chi-square per observed node,

        w_f L_f / sigma_f^2 = w_f mean_obs (f - f_obs)^2 / sigma_f^2,  ~ w_f at the truth,

    so it no longer carries the data's units. A regulariser weight `lambda` is then read
    relative to a unit-noise misfit: `lambda R(c)` is traded against one chi-square unit per
    node, and the same `lambda` means the same thing for data in metres or millimetres (a
    weight chosen on scaled problems does not change when the data are multiplied by a
    constant; the regulariser itself still carries the coefficient's units).

    `residual`: optionally a scale `s_r` for the residual terms (weights divided by
    `s_r^2`): for an equation-error fit whose residual is linear in the observed field,
    `s_r = sigma_f` makes the residual term units-free the same way.

    Weights are values, so the scaled problem reuses the compiled fit of `problem`.
    """
    names = {t.field: t for t in problem.terms if isinstance(t, DataMisfit)}
    unknown = sorted(set(sigma) - set(names))
    if unknown:
        raise MollijaxError(
            f"scaled: `sigma` names {unknown}, which have no data term; data terms are "
            f"{sorted(names)}."
        )
    weights = {}
    for field, s in sigma.items():
        s = float(s)
        if not (np.isfinite(s) and s > 0):
            raise MollijaxError(f"scaled: sigma of {field!r} must be > 0 and finite, got {s}.")
        weights[names[field].name] = float(names[field].weight) / s**2
    if residual is not None:
        r = float(residual)
        if not (np.isfinite(r) and r > 0):
            raise MollijaxError(f"scaled: `residual` must be > 0 and finite, got {residual!r}.")
        for t in problem.terms:
            if isinstance(t, Residual):
                weights[t.name] = float(t.weight) / r**2
    return problem.with_weights(weights)


# ----------------------------------------------------------------------------- records
@dataclasses.dataclass(frozen=True)
class Trial:
    """One setting on a criterion's curve.

    - `weight`, `eps`: the regulariser weight and kernel width (`eps` None if not scanned);
    - `misfit`: chi-square per observed node of the fit, `sum (f - f_obs)^2 / sigma^2 / n`
      (for cross-validation: of the fit on all data, where known, else NaN);
    - `regulariser`: the unweighted regulariser term of the fit;
    - `score`: the criterion's value (discrepancy: `misfit`; cross-validation: held-out
      chi-square per node);
    - `values`: each unknown on its sub-grid (fit on all data);
    - `threshold`: the discrepancy principle's bound on `misfit` at this weight;
    - `steps`: the optimiser steps its fit took (for cross-validation: the longest fold's).
    """

    weight: float
    eps: float | None
    misfit: float
    regulariser: float
    score: float
    values: dict[str, np.ndarray]
    threshold: float = float("nan")
    steps: int = 0


@dataclasses.dataclass(frozen=True)
class Choice:
    """What a criterion chose: `weight` (and `eps`), the `result` of the fit at that setting,
    the `curve` of every trial (for the record and plots), the `criterion`, the L-curve
    `corner` weight (a diagnostic, None when not computable) and a `message` saying what was
    chosen and why."""

    weight: float
    eps: float | None
    result: FitResult
    curve: tuple[Trial, ...]
    criterion: str
    corner: float | None
    message: str

    def as_dict(self) -> dict:
        """The choice and its curve as plain JSON-ready values (for metrics.json)."""
        return {
            "criterion": self.criterion,
            "weight": self.weight,
            "eps": self.eps,
            "corner": self.corner,
            "message": self.message,
            "curve": [
                {k: getattr(t, k) for k in ("weight", "eps", "misfit", "regulariser", "score")}
                for t in self.curve
            ],
        }


def lcurve_corner(curve: Sequence[Trial]) -> float | None:
    """The weight at the L-curve's corner: the point of largest curvature of
    `(log misfit, log regulariser)` parametrised by `t = log weight`,

        kappa = (x' y'' - x'' y') / (x'^2 + y'^2)^(3/2),   x = log misfit, y = log R,

    by finite differences over the curve sorted by weight (Hansen's sign: positive at the
    corner). A diagnostic only (it needs no noise level, but it is known to over- or
    under-regularise); None with fewer than 4 points or non-positive values.
    """
    pts = sorted((t for t in curve if t.eps == curve[0].eps), key=lambda t: t.weight)
    if len(pts) < 4:
        return None
    w = np.array([p.weight for p in pts])
    m = np.array([p.misfit for p in pts])
    r = np.array([p.regulariser for p in pts])
    if np.any(w <= 0) or np.any(m <= 0) or np.any(r <= 0) or not np.all(np.isfinite(m + r)):
        return None
    t, x, y = np.log(w), np.log(m), np.log(r)
    x1, y1 = np.gradient(x, t), np.gradient(y, t)
    x2, y2 = np.gradient(x1, t), np.gradient(y1, t)
    kappa = (x1 * y2 - x2 * y1) / np.maximum((x1**2 + y1**2) ** 1.5, 1e-300)
    kappa[[0, -1]] = -np.inf  # one-sided differences at the ends
    return float(w[int(np.argmax(kappa))])


# ----------------------------------------------------------------------------- helpers
def _weight_grid(weights) -> np.ndarray:
    if weights is None:
        weights = np.geomspace(1e2, 1e-6, 17)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise MollijaxError(f"`weights` must be positive finite numbers, got {weights!r}.")
    return np.sort(w)[::-1]


def _check_term(problem: Problem, term: str) -> None:
    names = [t.name for t in problem.terms]
    if term not in names:
        raise MollijaxError(f"`term` {term!r} is not a loss term of the problem; terms: {names}.")


@eqx.filter_jit
def _evaluate(problem: Problem, unknowns):
    """Unweighted terms and every field on the grid (compiled once per problem structure)."""
    return problem.loss_terms(unknowns), problem.grid_values(unknowns)


def _observed(problem: Problem, unknowns) -> list[str]:
    solved = problem.solved_names()
    return [f for f in problem.data if f in unknowns or f in solved]


def _chi2(problem: Problem, fields: Mapping, sigma: Mapping[str, float], names) -> float:
    """`sum_f sum_obs (f - f_obs)^2 / sigma_f^2 / sum_f n_f`."""
    total, count = 0.0, 0.0
    for f in names:
        mask = np.asarray(problem.masks[f])
        r = np.asarray(fields[f]) - np.asarray(problem.data[f])
        total += float(np.sum(np.where(mask, r, 0.0) ** 2)) / float(sigma[f]) ** 2
        count += float(mask.sum())
    return total / max(count, 1.0)


@eqx.filter_jit
def _sensitivities(problem: Problem, unknowns, names: tuple[str, ...]):
    """`(J_f, H_reg)`: the Jacobian of each observed field in the flat parameters, and the
    Hessian of the weighted regularisers (`Tikhonov`, `H1`, `TV`)."""
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def fields(theta):
        values = problem.grid_values(eqx.combine(unravel(theta), static))
        return {f: values[f] for f in names}

    def penalty(theta):
        return _penalty(problem, eqx.combine(unravel(theta), static), flat.dtype)

    return jax.jacfwd(fields)(flat), jax.hessian(penalty)(flat)


def effective_parameters(problem: Problem, unknowns, names: Sequence[str]) -> float:
    """The effective number of fitted parameters `p = tr(dF/dd)` over observed nodes: the
    trace of the Gauss-Newton influence matrix of the data on the fitted fields,

        p = sum_f c_f tr(M_f J_f H^{-1} J_f^T M_f),   c_f = 2 w_f / n_f,
        H = sum_f c_f J_f^T M_f J_f + Hess(sum_reg w_r R_r),

    with `J_f` the Jacobian of field `f` in the parameters, `M_f` its mask, `w_f` its data
    weight, `n_f` its observed nodes (residual and condition terms are left out of `H`; the
    regularisers' Hessian enters through its positive semi-definite part, so that
    `0 <= p <= sum_f n_f`). Costs one Jacobian (one linearised solve per parameter: for a
    solved state through its block-tridiagonal LU where it has a band, even where its fits
    iterate, `BANDED_JACOBIAN_MAX_BLOCK`) and dense linear algebra in the number of
    parameters (the negative eigenpairs of the regularisers' Hessian, one Cholesky factor):
    about a second per call at 1089 coefficient nodes, 10-15 s at 4225 (one core; darcy2d
    65 x 65 in `benchmarks/large_grid_default.py`).
    The problem is prepared at `unknowns` first (as `fit` does), so that a solved state's
    direct solve is banded."""
    return _effective_parameters(problem.prepare(unknowns), unknowns, tuple(names))


BANDED_JACOBIAN_MAX_BLOCK = 512
"""`effective_parameters` of a solved state that iterates (BiCGStab or GMRES, above
`DIRECT_MAX_NODES` nodes) takes its Jacobian through the block-tridiagonal LU instead when
the operator has a band whose blocks are at most this large: one factorisation serves every
parameter's tangent, where each tangent iterates on its own. At 65 x 65 (darcy2d, blocks of
130) 1.5 s against 7.4 s per Jacobian (ad hoc); the values agree to the Krylov tolerance."""


def _banded_jacobian(problem: Problem, unknowns) -> Problem:
    """`problem` with its steady state's linear solve direct and block-tridiagonal, where it
    iterates now and such a band exists with blocks of at most `BANDED_JACOBIAN_MAX_BLOCK`
    unknowns (else `problem`): for the Jacobian of the effective parameters only."""
    steady = problem.steady
    grid = problem.grid
    if steady is None or steady.choose_solver(grid) == "direct" or steady.linear is False:
        return problem
    direct = steady._replace(solver="direct", band=None).prepare(
        grid, unknowns, problem.known, problem._conditions())
    if not direct.linear or not direct._uses_band(grid):
        return problem
    if direct.band[0] * int(np.prod(grid.shape[1:])) > BANDED_JACOBIAN_MAX_BLOCK:
        return problem
    return eqx.tree_at(lambda p: p.steady, problem, direct)


def _effective_parameters(problem: Problem, unknowns, names: tuple[str, ...]) -> float:
    """`effective_parameters` of a problem already prepared at `unknowns`."""
    jac, h_reg = _sensitivities(_banded_jacobian(problem, unknowns), unknowns, names)
    weights = {t.field: float(t.weight) for t in problem.terms if isinstance(t, DataMisfit)}
    # the regularisers' Hessian in the fitted parameters is indefinite where a constraint
    # reparametrises them (H1 of exp(theta) has negative curvature away from its minimum):
    # only its positive part is a prior precision, else `H` loses definiteness and `p` can
    # come out negative or above the number of data (seen: p < 0 at small weights, which
    # raised the discrepancy bound above 1)
    h = _positive_part(np.asarray(h_reg, dtype=np.float64))
    rows = []
    for f in names:
        mask = np.asarray(problem.masks[f]).ravel()
        j = np.asarray(jac[f], dtype=np.float64).reshape(mask.size, -1)[mask]
        c = 2.0 * weights[f] / max(mask.sum(), 1)
        h = h + c * j.T @ j
        rows.append((c, j))
    return _trace_influence(h, rows)


def _positive_part(h: np.ndarray) -> np.ndarray:
    """The symmetric `h` with its negative eigenvalues set to zero, `h - V_- L_- V_-^T`:
    only the (few) negative eigenpairs are computed (LAPACK's MRRR on a subset), about 1.5x
    quicker than the full decomposition and its reconstruction at 2401 x 2401, equal to
    round-off."""
    import scipy.linalg

    top = float(np.max(np.abs(np.diag(h)))) if h.size else 0.0
    if top == 0.0 or not np.isfinite(top):
        return h
    # eigenvalues within round-off of zero are left alone: a zero block (parameters no
    # regulariser reaches, e.g. an evolved state's initial values) is one large cluster at
    # zero, on which the subset solver spends 100x the time of the rest (0.45 s at 202 x 202)
    floor = 1e-13 * top
    # the common case first: a positive semi-definite `h` (a quadratic penalty) has no
    # eigenvalue below `-floor` exactly when `h + floor I` has a Cholesky factor, a third of
    # the cost of the eigenvalue solver's reduction alone; where the factorisation fails, the
    # solver finds the negative eigenpairs
    try:
        chol = scipy.linalg.cholesky(h + floor * np.eye(h.shape[0]), lower=True,
                                     check_finite=False)
    except np.linalg.LinAlgError:
        chol = None
    if chol is not None and np.all(np.isfinite(chol)):
        return h
    lam, vec = scipy.linalg.eigh(h, subset_by_value=(-np.inf, -floor), driver="evr",
                                 check_finite=False)
    return h - (vec * lam) @ vec.T if lam.size else h


def _trace_influence(h: np.ndarray, rows) -> float:
    """`sum_f c_f tr(J_f H^+ J_f^T)` for `rows = [(c_f, J_f)]`: by the Cholesky factor `L`
    of `H` as `sum_f c_f |L^{-1} J_f^T|_F^2` (a factorisation and one triangular solve: 0.05 s
    against the pseudo-inverse's 0.25 s at 1089 coefficient nodes, ad hoc), or by the
    pseudo-inverse where `H` is singular to working precision."""
    import scipy.linalg

    try:
        chol = scipy.linalg.cholesky(h, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        chol = None
    if chol is not None and np.all(np.isfinite(chol)):
        total = 0.0
        for c, j in rows:
            z = scipy.linalg.solve_triangular(chol, j.T, lower=True, check_finite=False)
            total += c * float(np.sum(z * z))
        return float(total)
    h_inv = np.linalg.pinv(h, hermitian=True)
    # tr(J H^+ J^T) as one matrix product and an elementwise sum (a three-operand einsum
    # without a contraction order loops in Python-free C but O(n p^2) unblocked: 1.6 s at
    # 1089 x 1089)
    return float(sum(c * np.sum((j @ h_inv) * j) for c, j in rows))


_LBFGS = optax.lbfgs()  # one object, so that repeated calls reuse the compiled fit


def _optimiser(optimiser):
    return _LBFGS if optimiser is None else optimiser


# ----------------------------------------------------------------------------- weight scans
def _scan(problem, unknowns, term, sigma, grid, names, optimiser, steps, chunk, continuation,
          need_dof=True):
    """Fit at each weight of `grid` (large to small); yields `(weight, fit, chi2, p / n, R,
    lin)` per weight: the `FitResult`, the chi-square per observed node, the effective
    parameters per observed node (`effective_parameters`; NaN without `need_dof`), the
    unweighted regulariser and, for `optimiser="gauss_newton"`, the fit's last
    linearisation (else None). The caller stops the scan by leaving the loop."""
    opt = None if optimiser == "gauss_newton" else _optimiser(optimiser)
    chunk = steps if chunk is None else chunk
    count = float(sum(np.asarray(problem.masks[f]).sum() for f in names))
    current = dict(unknowns)
    if optimiser == "gauss_newton":
        problem = problem.prepare(unknowns)  # once: each fit and its evaluation reuse it
    for w in grid:
        p = problem.with_weights({term: float(w)})
        lin = None
        if optimiser == "gauss_newton":
            res, lin = _lm(p, current if continuation else unknowns, steps=steps, tol=1e-10,
                           prepared=True)
            prepared = p
        else:
            res = fit(p, current if continuation else unknowns, opt, steps=steps, chunk=chunk,
                      progress=False)
            # (a solved state's band: its block-tridiagonal solve)
            prepared = p.prepare(res.unknowns)
        current = res.unknowns
        terms, fields = _evaluate(prepared, current)
        chi2 = _chi2(p, fields, sigma, names)
        if not need_dof:
            share = float("nan")
        elif lin is not None:
            share = influence_trace(lin, [f"data:{f}" for f in names]) / count
        else:
            share = _effective_parameters(prepared, current, tuple(names)) / count
        if need_dof and np.isfinite(chi2) and not np.isfinite(share):
            # its score becomes inf: say so rather than let a whole scan choose its first
            # weight in silence
            warnings.warn(
                f"weight {w:.3g} of {term!r}: the fit is finite but its effective number of "
                "parameters is not (a non-finite sensitivity of the solved or evolved "
                "state); this weight is scored as the worst.", RuntimeWarning, stacklevel=3)
        yield float(w), res, chi2, share, float(terms[term]), lin


def _collect(scan, score, stop_early: bool, curve=None, results=None):
    """The `Trial`s and fits of a weight scan (`_scan`), each scored by `score(weight, fit,
    chi2, p / n, lin)` (smaller is better), appended to `curve` and `results`; with
    `stop_early` the scan ends at the first trial scored above the best so far, provided
    that best one's chi-square per node is at most `GCV_STOP_CHI2`."""
    curve = [] if curve is None else curve
    results = [] if results is None else results
    for w, res, chi2, share, reg, lin in scan:
        value = score(w, res, chi2, share, lin)
        curve.append(Trial(w, None, chi2, reg, value, res.values, max(1.0 - share, 0.0),
                           int(res.steps)))
        results.append(res)
        best = min(curve, key=lambda t: t.score)
        if stop_early and value > best.score and best.misfit <= GCV_STOP_CHI2:
            break
    return curve, results


def _check_scan(problem, unknowns, term, sigma, weights, who, optimiser=None):
    if isinstance(optimiser, str) and optimiser != "gauss_newton":
        raise MollijaxError(f"{who} `optimiser`: an optax transformation, None or "
                            f"'gauss_newton', got {optimiser!r}.")
    _check_term(problem, term)
    grid = _weight_grid(weights)
    names = _observed(problem, unknowns)
    if not names:
        raise MollijaxError(
            f"{who} needs an output-error data term (a field that is fitted, evolved or "
            f"solved); the data {sorted(problem.data)} are all used directly."
        )
    missing = sorted(set(names) - set(sigma))
    if missing:
        raise MollijaxError(f"{who}: `sigma` has no value for the data field(s) {missing}.")
    return grid, names


GCV_STOP_CHI2 = 2.0
"""`gcv(stop_early=True)` stops at a local minimum of `V` only once its fit's chi-square per
node is at most this: a factor 2 above the noise level is beyond any plausible error of
the noise estimate, so such a fit underfits and its `V` is no minimum."""


def _gcv_value(chi2: float, share: float, gamma: float) -> float:
    """`V = chi2 / (1 - gamma p / n)^2` from the effective parameters per node `share = p /
    n`; infinite where `gamma p / n >= 1` (no degrees of freedom left)."""
    return chi2 / (1.0 - gamma * share) ** 2 if gamma * share < 1.0 else float("inf")


def _rescored(curve: Sequence[Trial], gamma: float) -> Trial:
    """The trial of a `gcv` curve that GCV with factor `gamma` would choose: each trial's
    `misfit` and `p / n` (its `threshold` is `1 - p / n`) rescored, no new fit."""
    return min(curve, key=lambda t: _gcv_value(float(t.misfit), 1.0 - float(t.threshold),
                                              gamma))


def gcv(
    problem: Problem,
    unknowns: Mapping,
    *,
    term: str,
    sigma: Mapping[str, float],
    weights: Sequence[float] | np.ndarray | None = None,
    optimiser: optax.GradientTransformation | str | None = None,
    steps: int = 300,
    chunk: int | None = None,
    stop_early: bool = False,
    continuation: bool = True,
    gamma: float = 1.0,
) -> Choice:
    """Generalised cross-validation for an output-error fit: the regulariser weight whose
    fit best predicts data it did not see, estimated from the fit to all the data,

        V(lambda) = chi2(lambda) / (1 - gamma p(lambda) / n)^2,    lambda* = argmin V,

    with `chi2` the chi-square per observed node (as in `discrepancy`), `p` the fit's
    effective number of parameters (`effective_parameters`: the trace of the Gauss-Newton
    influence matrix) and `n` the observed nodes. `V` is the leave-one-out prediction error
    with each node's leverage replaced by the mean leverage `p / n` (Craven and Wahba).
    `gamma = 1` is the classical criterion; `gamma > 1` charges each effective parameter
    more (modified GCV, as in smoothing-spline practice, where 1.4 is a common choice),
    which counters GCV's known tendency to undersmooth on some noise draws: since
    `(1 - p / n) / (1 - gamma p / n)` grows with `p`, a larger `gamma` never chooses a
    smaller weight where `p` falls as the weight grows.

    **Why beside the discrepancy principle.** `V` needs no noise level: a common factor of
    `sigma` scales `V` and leaves its minimum in place. The discrepancy principle compares
    `chi2` with a bound near 1 and, where `chi2` is flat in the weight (well-posed
    directions already fitted, the rest regularised), moves by a decade or two when
    `sigma` is off by a few percent; on tuning draws of the plate problem (33 x 33, 5 %
    noise; ad hoc runs while choosing the default) a 3 % low noise estimate moved it from
    the best weight of its grid (4 % error) to one a hundred times smaller (24 %), where
    `V`'s minimum stayed at the best (`docs/benchmarks.md`, "Accuracy without the truth",
    has the evaluation draws).

    Weights are scanned from large to small as in `discrepancy` (the same arguments); with
    `stop_early` the scan ends at the first weight whose `V` is larger than the smallest so
    far (the first local minimum: one fit past the choice), provided that smallest one's
    `chi2` is at most `GCV_STOP_CHI2` (2): at large weights `p / n` is small, `V` is about
    `chi2`, and a fit that misses the data by twice the noise variance sits on the plateau
    of an underfit, where `V` can rise by a fraction of a percent from one weight to the
    next (the optimiser's rounding) without any minimum (seen on diffusion_reaction at
    10 % noise: the scan stopped at its second weight, `chi2` near 4, 45 % error). Without a
    stop the choice is the same argmin of `V` over the weights tried. Each `Trial`'s `score` is `V`,
    its `threshold` the discrepancy principle's bound `1 - p / n` (tau = 1) for comparison.

    `gamma`: the factor above (1, the classical criterion, by default; `auto_run` uses
    `GCV_GAMMA`, 1.4, on noisy data and 1 on noise-free data or fits by Gauss-Newton).
    `optimiser="gauss_newton"` fits each weight by Levenberg-Marquardt (as in
    `discrepancy`).

    **Returns:** a `Choice` with `criterion="gcv"`; its message also names the weight the
    discrepancy principle (tau = 1, with degrees of freedom) would take from the same
    trials, where one of them meets its bound.
    """
    grid, names = _check_scan(problem, unknowns, term, sigma, weights, "gcv", optimiser)
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma >= 1.0 \
            or not np.isfinite(gamma):
        raise MollijaxError(f"gcv `gamma` must be a finite number >= 1, got {gamma!r}.")
    def score(w, res, chi2, share, lin):
        return _gcv_value(chi2, share, gamma)

    curve, results = _collect(_scan(problem, unknowns, term, sigma, grid, names, optimiser,
                                    steps, chunk, continuation), score, stop_early)
    chosen = int(np.argmin([t.score for t in curve]))
    c = curve[chosen]
    factor = "" if gamma == 1.0 else f"{gamma:g} "
    msg = (f"generalised cross-validation: weight {c.weight:.3g} of {term!r}, the smallest "
           f"V = chi2 / (1 - {factor}p / n)^2 = {c.score:.4g} of {len(curve)} weights "
           "scanned")
    if len(curve) > 1 and chosen == len(curve) - 1 and c.weight <= min(grid):
        msg += (" (the smallest weight of the range, V still falling: the minimum may lie "
                "below it)")
    passing = [t for t in curve if t.misfit <= t.threshold]
    msg += (f" (for comparison only: the discrepancy principle would take "
            f"{passing[0].weight:.3g})" if passing
            else " (for comparison only: no weight scanned meets the discrepancy principle's "
                 "bound chi2 <= 1 - p / n, which GCV does not use; a noise estimate a few "
                 "percent low is enough for that)")
    return Choice(c.weight, None, results[chosen], tuple(curve), "gcv", lcurve_corner(curve),
                  msg)


def _in_values(unknowns: Mapping) -> dict:
    """The unknowns with every constrained grid field replaced by a free one of the same
    values: the evidence's Gaussian prior and Laplace integral are over the coefficient's
    values, where a quadratic regulariser is quadratic (in the raw parameters of a
    `positive` field its Hessian gains `g softplus''`, which fills the prior's null space
    and makes its rank, and `log det+`, meaningless)."""
    from ._fields import Constraint

    out = {}
    for k, f in unknowns.items():
        if _constrained(f):
            f = eqx.tree_at(lambda g: (g.raw, g.constraint), f,
                            (f.constraint(f.raw), Constraint("free")))
        out[k] = f
    return out


def _constrained(field) -> bool:
    """A grid field whose values are a map (softplus, ...) of its raw parameters."""
    from ._fields import GridField

    return isinstance(field, GridField) and field.constraint.kind != "free"


def _values_lin(problem: Problem, unknowns: Mapping, lin):
    """`lin` (of `_lm`, in the raw parameters) in the values of the unknowns: linearised
    again at `_in_values` where a grid field is constrained, else `lin` itself."""
    if not any(_constrained(f) for f in unknowns.values()):
        return lin
    from ._gauss_newton import _as_numpy, _linearise

    return _as_numpy(_linearise(problem, _in_values(unknowns)))


def log_evidence(lin, count: float, rank: int | None = None) -> float:
    """The Laplace approximation of the log marginal likelihood of the regularisers' weights,
    up to a constant, with the noise scale profiled out, from a converged fit's linearisation
    (`lin` of `gauss_newton`'s last step: whitened residuals `rho`, their Jacobian `J`, the
    weighted regularisers `P` and their Hessian `P''`). With the loss `L(theta) = |rho|^2 +
    P` in chi-square per observed node (`scaled`), `N = count` observed nodes, the noise
    variance `s` times the estimated one and the prior `exp(-N P / (2 s))` (a Gaussian of
    rank `r`, the rank of `P''`; the parameters it does not reach, e.g. an evolved state's
    initial values, under a flat prior),

        log Z(P, s) = -N L / (2 s) - (N + r - n) / 2 log s + 1/2 log det+ P''_+
                      - 1/2 log det H,

    `H = 2 J^T J + P''_+` over the `n` parameters that the data or the prior reach (the
    others drop out of every trial alike), `det+` the product of the `r` largest eigenvalues,
    maximised over `s` at `s = N L / (N + r - n)`. For one regulariser of weight `w`,
    `log det+ P''_+ = r log w + const`. `rank`: `r` where the caller knows it (a sum of
    regularisers of very different scales, `prior_rank`), else counted above round-off."""
    r_vec, _, penalty, _, h_pen = lin
    positive = _positive_part(h_pen)
    h = gn_hessian(lin, positive=positive)
    keep = _reached(h)
    prior = np.linalg.eigvalsh(positive[np.ix_(keep, keep)])
    if rank is None:
        rank = _rank_above_roundoff(prior)
    loss = float(sum(v @ v for v in r_vec.values())) + float(penalty)
    return _log_z(loss, h[np.ix_(keep, keep)], prior, rank, count)


def _reached(h: np.ndarray) -> np.ndarray:
    """The parameters a Gauss-Newton Hessian reaches (diagonal above round-off)."""
    diag = np.diag(h)
    return diag > 1e-14 * float(np.max(diag))


def _log_z(loss: float, h: np.ndarray, prior: np.ndarray, rank: int, count: float) -> float:
    """`log_evidence` from its parts: the loss at the fit, the posterior Hessian `h` over
    the reached parameters, the prior Hessian's eigenvalues and rank."""
    sign, logdet = np.linalg.slogdet(h)
    if sign <= 0:
        return float("-inf")
    top = np.sort(prior)[prior.size - rank:] if rank > 0 else np.zeros(0)
    if np.any(top <= 0):
        return float("-inf")
    dof = count + rank - h.shape[0]
    if dof <= 0 or not loss > 0:
        return float("-inf")
    scale = count * loss / dof
    return float(-count * loss / (2 * scale) - dof / 2 * np.log(scale)
                 + float(np.sum(np.log(top))) / 2 - logdet / 2)


def prior_rank(hessians: Sequence[np.ndarray]) -> int:
    """The rank of a sum of positive semi-definite regulariser Hessians, each scaled to a
    largest eigenvalue of one first (so that a term many decades smaller than another still
    counts: `Curvature` beside `ThirdDerivative` on 101 nodes differ by up to 1e12)."""
    total = sum(h / max(float(np.max(np.abs(np.diag(h)))), 1e-300) for h in hessians)
    return _rank_above_roundoff(np.linalg.eigvalsh(total))


def _rank_above_roundoff(eig: np.ndarray) -> int:
    """The eigenvalues above round-off: a null space comes out at about n eps of the largest
    eigenvalue, while the smallest true eigenvalues of a k-th difference penalty are (pi
    h)^(2k) of it (1e-11 for third differences on 101 nodes), so the cut sits just above
    round-off, at 100 n eps."""
    cut = 100.0 * eig.size * np.finfo(np.float64).eps
    return int(np.sum(eig > cut * max(float(np.max(eig)), 1e-300))) if eig.size else 0


def evidence(
    problem: Problem,
    unknowns: Mapping,
    *,
    term: str,
    sigma: Mapping[str, float],
    weights: Sequence[float] | np.ndarray | None = None,
    steps: int = 50,
    stop_early: bool = False,
    refine: int = 0,
    start: int | None = None,
) -> Choice:
    """The regulariser weight of largest marginal likelihood (type-II maximum likelihood,
    the evidence): `lambda* = argmax log Z(lambda)` (`log_evidence`), each weight's fit by
    Levenberg-Marquardt to convergence (`gauss_newton`, `steps` its most Jacobians), from
    the previous weight's fit, scanned from large to small weights.

    `start`: with `stop_early`, the index of the weight (in `weights`, sorted from large to
    small) at which the scan begins instead of the largest: from there it goes down to one
    past the first maximum; where the start itself is the best so far when the scan stops,
    it then goes up from the start's fit, again to one past the first maximum. Fewer fits
    where the maximum lies far below the largest weight (each a converged fit); the same
    choice where `log Z` has one maximum along the scan.

    **Why beside GCV.** Both need no noise level (the evidence profiles its scale out).
    `V` of generalised cross-validation is flat near its minimum when a few parameters
    carry the regularised part of the fit (a 1-D coefficient beside an evolved state's
    hundred initial values): its minimum then moves by a decade with the noise draw. The
    evidence also weighs the prior's volume (`log det H` against `r log lambda`) and is
    known to vary less from draw to draw than GCV (Wahba 1985; Wood 2011's REML for
    smoothing parameters). Tuning draws (`EVOLVE_GAUSS_NEWTON_MAX` in `mollijax._build`
    has the numbers).

    With `stop_early` the scan ends one weight past the first local maximum of `log Z`
    whose fit's chi-square per node is at most `GCV_STOP_CHI2` (as `gcv`'s). Each
    `Trial`'s `score` is `-log Z` (smaller is better, as `V`), its `threshold` `1 - p / n`.
    `refine = k > 0` then adds `k` weights on each side of the chosen one, geometrically
    between it and its neighbours in `weights` (a decade grid and `k = 3`: quarter
    decades), each fitted from the chosen weight's fit, and chooses again among all.

    **Returns:** a `Choice` with `criterion="evidence"`.
    """
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise MollijaxError(f"evidence `refine` must be a non-negative integer, got {refine!r}.")
    grid, names = _check_scan(problem, unknowns, term, sigma, weights, "evidence")
    count = float(sum(np.asarray(problem.masks[f]).sum() for f in names))
    def score(w, res, chi2, share, lin):
        if not res.ok:
            return float("inf")
        return -log_evidence(_values_lin(problem.with_weights({term: w}), res.unknowns, lin),
                             count)

    if start is not None and (isinstance(start, bool) or not isinstance(start, int)
                              or not 0 <= start < len(grid)):
        raise MollijaxError(f"evidence `start` must be an index into the {len(grid)} weights "
                            f"(0 to {len(grid) - 1}) or None, got {start!r}.")
    first = 0 if start is None or not stop_early else start
    curve, results = _collect(_scan(problem, unknowns, term, sigma, grid[first:], names,
                                    "gauss_newton", steps, None, True), score, stop_early)
    if first > 0 and int(np.argmin([t.score for t in curve])) == 0:
        # the start is the best so far: the maximum may lie above it
        _collect(_scan(problem, results[0].unknowns, term, sigma, grid[first - 1::-1], names,
                       "gauss_newton", steps, None, True), score, stop_early, curve, results)
        order = np.argsort([-t.weight for t in curve])  # the curve from large to small
        curve = [curve[i] for i in order]
        results = [results[i] for i in order]
    chosen = int(np.argmin([t.score for t in curve]))
    if refine and len(grid) > 1:
        at = int(np.flatnonzero(grid == curve[chosen].weight)[0])
        extra = []
        for other in (at - 1, at + 1):
            if 0 <= other < len(grid):
                steps_between = np.geomspace(curve[chosen].weight, grid[other], refine + 2)
                extra.extend(steps_between[1:-1])
        extra = np.sort(np.asarray(extra))[::-1]
        _collect(_scan(problem, results[chosen].unknowns, term, sigma, extra, names,
                       "gauss_newton", steps, None, False), score, False, curve, results)
        order = np.argsort([-t.weight for t in curve])  # the curve from large to small
        curve = [curve[i] for i in order]
        results = [results[i] for i in order]
        chosen = int(np.argmin([t.score for t in curve]))
    c = curve[chosen]
    msg = (f"marginal likelihood (evidence): weight {c.weight:.3g} of {term!r}, the largest "
           f"log Z = {-c.score:.6g} of {len(curve)} weights scanned, each fitted to "
           "convergence by Levenberg-Marquardt")
    return Choice(c.weight, None, results[chosen], tuple(curve), "evidence",
                  lcurve_corner(curve), msg)


@dataclasses.dataclass(frozen=True)
class MixChoice:
    """What `mix_evidence` chose: the `weights` of the regularisers, the `prior` (`"mix"`,
    or the name of the alternative regulariser taken alone), the mixing `ratio` (`extra`
    weight over `lead` weight, in the caller's units; None for an alternative), the
    converged `result` at them, its `log_z`, every refit's `(weights, log Z)` in `refits`,
    the last round's linearised candidates `(prior, ratio, weights, log Z)` and a
    `message`."""

    weights: dict
    ratio: float | None
    result: FitResult
    log_z: float
    refits: tuple
    candidates: tuple
    message: str
    prior: str = "mix"

    def as_dict(self) -> dict:
        """JSON-ready (metrics.json)."""
        return {"weights": self.weights, "prior": self.prior, "ratio": self.ratio,
                "log_evidence": self.log_z,
                "refits": [{"weights": w, "log_evidence": z} for w, z in self.refits],
                "candidates": [{"prior": k, "ratio": a, "weights": w, "log_evidence": z}
                               for k, a, w, z in self.candidates],
                "message": self.message}


def mix_evidence(
    problem: Problem,
    fit_result: FitResult,
    *,
    lead: str,
    extra: str,
    sigma: Mapping[str, float],
    ratios: Sequence[float] | np.ndarray,
    offsets: Sequence[float] | np.ndarray,
    steps: int = 50,
    rounds: int = 3,
    alternatives: Sequence[str] = (),
) -> MixChoice:
    """The prior `w (R_lead + a R_extra)` of largest marginal likelihood over a grid of
    mixing ratios `a` (`ratios`, which should hold 0) and weights `w = w0 10^o` (`offsets`
    `o`, in decades around the current lead weight `w0`), starting from a converged fit
    (`fit_result`, e.g. `evidence`'s choice) of `problem` at its current weights.
    `alternatives`: further regularisers of the problem (e.g. `SquaredExponential` terms
    at several lengths), each a candidate prior `w_A R_A` alone (lead and extra at weight
    0), at `w_A = v_A 10^o` over the same `offsets`, `v_A` the weight at which `R_A` at the
    starting fit equals the starting prior's penalty (units-free).

    Each round linearises the model at the current fit (the MacKay / evidence-framework
    step): with the residuals' Jacobian `J` and each regulariser's value, gradient and
    Hessian at unit weight, every candidate's minimiser of the quadratic model and its
    `log Z` (`log_evidence`'s formula) cost one dense solve, no fit; the best candidate is
    then fitted to convergence by Levenberg-Marquardt and scored exactly. The round repeats
    from that fit while the best candidate moves and the exact `log Z` grows; a refit whose
    exact `log Z` is below the current one's is not taken. Where every `R` is quadratic (a
    free grid coefficient) the model is exact but for the residuals' curvature.

    All regularisers should share their null space (`Curvature`, `ThirdDerivative` for `a
    >= 0` and `SquaredExponential` do): the evidence of priors with different null spaces
    depends on the flat prior's arbitrary scale there, and is not compared.

    **Returns:** a `MixChoice`.
    """
    from ._gauss_newton import _as_numpy, _linearise, _penalty_quadratic_jit

    _check_term(problem, lead)
    _check_term(problem, extra)
    alternatives = list(alternatives)
    for alt in alternatives:
        _check_term(problem, alt)
    if lead == extra or len({lead, extra, *alternatives}) != 2 + len(alternatives):
        raise MollijaxError(f"mix_evidence: `lead` ({lead!r}), `extra` ({extra!r}) and "
                            f"`alternatives` ({alternatives!r}) must name different "
                            "regularisers.")
    ratios = [float(a) for a in np.atleast_1d(np.asarray(ratios, dtype=np.float64))]
    offsets = [float(o) for o in np.atleast_1d(np.asarray(offsets, dtype=np.float64))]
    if not ratios or not all(np.isfinite(a) and a >= 0 for a in ratios):
        raise MollijaxError(f"mix_evidence `ratios`: finite numbers >= 0, at least one, got "
                            f"{ratios!r}.")
    if not offsets or not all(np.isfinite(o) for o in offsets):
        raise MollijaxError(f"mix_evidence `offsets`: finite numbers (decades), at least one, "
                            f"got {offsets!r}.")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise MollijaxError(f"mix_evidence `rounds` must be a positive integer, got {rounds!r}.")
    names = list(sigma)
    count = float(sum(np.asarray(problem.masks[f]).sum() for f in names))
    penalties = [t.name for t in problem.active_terms(fit_result.unknowns)
                 if t.name.startswith("reg:")]
    mine = [lead, extra, *alternatives]
    base = _weights_of(problem, mine)
    w0 = base[lead]
    if w0 <= 0 or any(base[alt] != 0 for alt in alternatives):
        raise MollijaxError(f"mix_evidence starts from the prior of {lead!r} (weight > 0, got "
                            f"{w0!r}), the `alternatives` at weight 0 (got "
                            f"{ {alt: base[alt] for alt in alternatives} }).")
    a0 = base[extra] / w0
    problem = problem.prepare(fit_result.unknowns)

    def unit(term, unknowns):
        p = problem.with_weights({t: (1.0 if t == term else 0.0) for t in penalties})
        pen, g, h = _penalty_quadratic_jit(p, _in_values(unknowns))
        return float(pen), np.asarray(g, np.float64), _positive_part(np.asarray(h, np.float64))

    def parts_at(unknowns):
        """Each regulariser's value, gradient and Hessian (positive part) at unit weight."""
        return {t: unit(t, unknowns) for t in mine}

    def weights_of(coef, w):
        """Every regulariser's weight for the prior `w sum_t coef[t] R_t`."""
        return {t: float(w * coef.get(t, 0.0)) for t in mine}

    def rank_of(parts, weights):
        """The rank of the prior of `weights` over the parameters it reaches."""
        used = [parts[t][2] for t in mine if weights[t] > 0]
        keep = _reached(sum(used))
        return prior_rank([h[np.ix_(keep, keep)] for h in used])

    weights_now = weights_of({lead: 1.0, extra: a0}, w0)
    lin = _as_numpy(_linearise(problem.with_weights(weights_now),
                               _in_values(fit_result.unknowns)))
    parts = parts_at(fit_result.unknowns)
    start_penalty = w0 * (parts[lead][0] + a0 * parts[extra][0])
    # each alternative's reference weight: its penalty at the start equals the start prior's
    reference = {alt: start_penalty / max(parts[alt][0], 1e-300) for alt in alternatives}
    best_z = log_evidence(lin, count, rank_of(parts, weights_now))
    fit_now, prior_now, a_now = fit_result, "mix", a0
    refits, candidates = [], ()
    for round_ in range(rounds):
        u = fit_now.unknowns
        if round_ > 0:  # the candidates' model at the refit itself
            lin = _as_numpy(_linearise(problem.with_weights(weights_now), _in_values(u)))
        r_vec, jac, _, _, _ = lin
        rho = np.concatenate([r_vec[k] for k in r_vec])
        j = np.concatenate([jac[k] for k in jac])
        jtj, jtr = 2.0 * j.T @ j, 2.0 * j.T @ rho
        keep = _reached(jtj + sum(parts[t][2] for t in mine))
        model = (jtj, jtr, j, rho, keep)
        shapes = [("mix", a, {lead: 1.0, extra: a},
                   weights_now[lead] if prior_now == "mix" else w0) for a in ratios]
        shapes += [(alt, None, {alt: 1.0},
                    weights_now[alt] if prior_now == alt else reference[alt])
                   for alt in alternatives]
        rows = []
        for prior, a, coef, ref in shapes:
            shape = sum(c * parts[t][2] for t, c in coef.items())
            eig = np.linalg.eigvalsh(shape[np.ix_(keep, keep)])
            rank = prior_rank([parts[t][2][np.ix_(keep, keep)] for t, c in coef.items()
                               if c > 0])
            grad = sum(c * parts[t][1] for t, c in coef.items())
            value = sum(c * parts[t][0] for t, c in coef.items())

            def score(o, shape=shape, eig=eig, rank=rank, grad=grad, value=value, ref=ref,
                      model=model):
                return _candidate(ref * 10.0 ** o, shape, eig, rank, grad, value, model, count)

            scored = _extended(score, offsets)
            for o in sorted(scored):
                w, z = scored[o]
                rows.append((prior, None if a is None else float(a), weights_of(coef, w), z))
        candidates = tuple(rows)
        prior_best, a_best, w_best, _ = max(rows, key=lambda r: r[3])
        if _same(w_best, weights_now):
            break
        res, lin = _lm(problem.with_weights(w_best), u, steps=steps, tol=1e-10, prepared=True)
        if not res.ok:
            break
        parts_new = parts_at(res.unknowns)
        lin = _values_lin(problem.with_weights(w_best), res.unknowns, lin)
        z = log_evidence(lin, count, rank_of(parts_new, w_best))
        refits.append((w_best, z))
        if not z > best_z:
            break
        fit_now, weights_now, best_z, parts = res, w_best, z, parts_new
        prior_now, a_now = prior_best, a_best
    chosen = (f"a = {a_now:.3g}" if prior_now == "mix"
              else f"the alternative {prior_now!r} alone")
    msg = (f"marginal likelihood over the prior mix {lead!r} + a x {extra!r}"
           + (f" and {len(alternatives)} alternative(s)" if alternatives else "")
           + f": {chosen}, weights "
           f"{', '.join(f'{k} {v:.3g}' for k, v in weights_now.items() if v > 0)}"
           f" (log Z = {best_z:.6g}; {len(refits)} refit(s) by Levenberg-Marquardt from "
           f"{len(candidates)} linearised candidates)")
    return MixChoice(weights_now, a_now, fit_now, best_z, tuple(refits), candidates, msg,
                     prior_now)


def _candidate(w, shape, eig, rank, grad, value, model, count) -> tuple[float, float]:
    """`(w, log Z)` of the prior `w R` (`R`'s Hessian `shape`, its eigenvalues `eig` over the
    reached parameters and rank, gradient `grad`, value `value`) in the linearised `model`
    `(J^T J, J^T rho, J, rho, reached)`: one dense solve for the quadratic model's minimiser."""
    jtj, jtr, j, rho, keep = model
    hp, gp = w * shape, w * grad
    h = (jtj + hp)[np.ix_(keep, keep)]
    try:
        step = -np.linalg.solve(h, (jtr + gp)[keep])
    except np.linalg.LinAlgError:
        return w, float("-inf")
    delta = np.zeros(j.shape[1])
    delta[keep] = step
    res = rho + j @ delta
    loss = float(res @ res + w * value + gp @ delta + 0.5 * delta @ hp @ delta)
    return w, _log_z(loss, h, w * eig, rank, count)


def _extended(score, offsets) -> dict:
    """`{offset: score(offset)}` over `offsets`, extended past an edge that holds the largest
    `log Z` (the second entry of `score`'s pair) one grid spacing at a time, at most
    `EXTEND_OFFSETS` times, until the maximum is interior: a maximum on the edge is not one."""
    scored = {o: score(o) for o in offsets}
    spacing = float(min(np.diff(sorted(scored)), default=0.5))
    for _ in range(EXTEND_OFFSETS):
        best = max(scored, key=lambda o: scored[o][1])
        if not np.isfinite(scored[best][1]) or min(scored) < best < max(scored):
            break
        o = best + (spacing if best == max(scored) else -spacing)
        scored[o] = score(o)
    return scored


EXTEND_OFFSETS = 12
"""`mix_evidence`: where a prior's best weight lies on the edge of its offsets, up to this many
more offsets (at the grid's spacing) are scored beyond that edge, one at a time until the
maximum is interior (the squared-exponential priors' references, matched to the start's
penalty, sat a decade or more below their maxima on diffusion_reaction)."""


def _weights_of(problem: Problem, terms) -> dict[str, float]:
    """The current weights of the named terms."""
    out = {}
    for t in problem.terms:
        if t.name in terms:
            out[t.name] = float(t.weight)
    return out


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return all(abs(a[k] - b[k]) <= 1e-9 * max(abs(a[k]), abs(b[k]), 1e-300) for k in a)


# ----------------------------------------------------------------------------- discrepancy
def discrepancy(
    problem: Problem,
    unknowns: Mapping,
    *,
    term: str,
    sigma: Mapping[str, float],
    weights: Sequence[float] | np.ndarray | None = None,
    optimiser: optax.GradientTransformation | str | None = None,
    steps: int = 300,
    chunk: int | None = None,
    tau: float = 1.0,
    dof: bool = True,
    stop_early: bool = False,
    continuation: bool = True,
) -> Choice:
    """Morozov's discrepancy principle for an output-error fit (a `Steady` or `Evolution`
    state, or a fitted unknown, with a data term): the largest regulariser weight whose fit
    explains the data to the noise level,

        lambda* = max { lambda in grid : chi2(lambda) <= tau },
        chi2(lambda) = sum_f sum_obs (f_lambda - f_obs)^2 / sigma_f^2 / sum_f n_f,

    i.e. for one field the mean squared misfit over observed nodes `<= tau sigma^2`.

    The weights are scanned from large to small, reusing the compiled fit (weights are
    values; one optimiser object for the whole scan); with `continuation` each fit starts
    from the previous one's unknowns, without it every fit starts from `unknowns` (better
    when `unknowns` is already a good estimate, e.g. an equation-error fit: a heavily
    smoothed start is far from the small weights' solutions and a short fit cannot undo
    it). If no weight reaches its bound, the L-curve corner is chosen where one is
    computable (else the weight of smallest `chi2`) and the message says so.

    **Degrees of freedom and `tau`.** At the truth `E chi2 = 1`, but a fit absorbs part of
    the noise: a least-squares fit with `p` effective parameters leaves
    `E chi2 ~ 1 - p / n`. For a smooth coefficient on a fine grid `p << n` and `tau = 1`
    is right (the principle then slightly over-smooths, its known bias). When a whole
    field is fitted too, e.g. the initial state `u(x, 0)` of an `Evolution` (`p = n_x` of
    `n = n_x n_t` data), use `tau = 1 - n_x / n`; otherwise the principle picks too large
    a weight. `tau` also absorbs a known bias of `sigma` (e.g. `noise_sigma`'s on coarse
    grids).

    **Arguments:**

    - `problem`: the problem; its `term` weight is replaced by each weight of the grid.
      Scale it with `scaled(problem, sigma)` first so the weight grid is units-free.
    - `unknowns`: the initial guess for the largest weight.
    - `term`: the regulariser's name, e.g. `"reg:k:smooth"`.
    - `sigma`: `{field: sigma_f}` for each output-error data field (`noise_sigma`).
    - `weights`: the grid (any order; scanned from large to small); default
      `geomspace(1e2, 1e-6, 17)`.
    - `optimiser`: default `optax.lbfgs()`; `steps`, `chunk`: per weight (as in `fit`).
      `"gauss_newton"`: each weight's fit by Levenberg-Marquardt (`gauss_newton`, `steps`
      its most Jacobians, to a relative loss change of 1e-10), and the effective
      parameters from its last Jacobian (no second one): for problems with few parameters,
      where a converged fit per weight makes the criterion a function of the weight alone.
    - `tau`: the threshold on `chi2` (see above).
    - `dof`: lower each weight's bound to `tau (1 - p / n)` with `p` the fit's own effective
      number of parameters (`effective_parameters`), so that a fit absorbing noise is not
      mistaken for an under-fit. Its risk: a small weight fits more parameters, which lowers
      its own bound, and an underestimated `sigma` then lets a much too small weight pass
      (an over-fitted coefficient); `dof=False` keeps the plain bound `tau` and errs towards
      over-smoothing.
    - `stop_early`: stop at the first weight that satisfies the criterion (the curve then
      ends there and the L-curve corner is computed on what was scanned).
    - `continuation`: start each fit from the previous weight's (True) or from `unknowns`.

    **Returns:** a `Choice` with `criterion="discrepancy"`.
    """
    grid, names = _check_scan(problem, unknowns, term, sigma, weights, "discrepancy",
                              optimiser)
    if not (np.isfinite(tau) and tau > 0):
        raise MollijaxError(f"`tau` must be a positive number, got {tau!r}.")
    curve, results, chosen = [], [], None
    for w, res, chi2, share, reg, _ in _scan(problem, unknowns, term, sigma, grid, names,
                                          optimiser, steps, chunk, continuation, need_dof=dof):
        bound = tau * max(1.0 - share, 0.0) if dof else tau
        curve.append(Trial(w, None, chi2, reg, chi2, res.values, bound, int(res.steps)))
        results.append(res)
        if chosen is None and chi2 <= bound:
            chosen = len(curve) - 1
            if stop_early:
                break
    corner = lcurve_corner(curve)
    if chosen is None:
        best = min(t.misfit for t in curve)
        if corner is not None:
            chosen = [t.weight for t in curve].index(corner)
            why = (f"no weight reached its bound (smallest chi2 {best:.3g}, the noise may be "
                   "underestimated or the model not fit the data); the L-curve corner is chosen")
        else:
            chosen = int(np.argmin([t.misfit for t in curve]))
            why = (f"no weight reached its bound (smallest chi2 {best:.3g}); the weight of "
                   "smallest chi2 is chosen (no L-curve corner)")
    else:
        c = curve[chosen]
        why = f"the largest weight with chi2 = {c.misfit:.3g} <= {c.threshold:.3g}"
        if dof:
            why += f" = tau (1 - p / n), tau = {tau:g}"
    msg = f"discrepancy principle: weight {curve[chosen].weight:.3g} of {term!r}, {why}"
    return Choice(curve[chosen].weight, None, results[chosen], tuple(curve), "discrepancy",
                  corner, msg)


# ----------------------------------------------------------------------------- cross-validation
def fold_index(shape: tuple[int, ...], folds: int) -> np.ndarray:
    """The fold of each node, `(sum_a (a + 1) i_a) mod K`: a regular pattern in which no two
    neighbours along an axis share a fold when `K > ndim`, so every held-out node has
    observed neighbours to be filled from."""
    idx = np.indices(shape)
    return sum((a + 1) * idx[a] for a in range(len(shape))) % folds


def _fill(u: np.ndarray, held: np.ndarray) -> np.ndarray:
    """`u` with the `held` nodes replaced by the mean of their kept axis neighbours."""
    total = np.zeros_like(u)
    count = np.zeros_like(u)
    kept = np.where(held, 0.0, u)
    keep = (~held).astype(u.dtype)
    for a in range(u.ndim):
        for shift in (1, -1):
            v = np.roll(kept, shift, axis=a)
            k = np.roll(keep, shift, axis=a)
            edge = [slice(None)] * u.ndim
            edge[a] = 0 if shift == 1 else -1
            v[tuple(edge)] = 0.0
            k[tuple(edge)] = 0.0
            total += v
            count += k
    return np.where(held, total / np.maximum(count, 1.0), u)


def cross_validate(
    build: Callable[[float], Problem],
    unknowns: Mapping,
    *,
    field: str,
    term: str,
    forward: Problem,
    eps: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    sigma: float | None = None,
    folds: int = 5,
    optimiser: optax.GradientTransformation | None = None,
    steps: int = 300,
    chunk: int | None = None,
) -> Choice:
    """K-fold cross-validation over held-out nodes for an equation-error (mollified
    residual) fit: choose the kernel width `eps` and the regulariser weight `lambda` that
    best predict data the fit never saw,

        CV(eps, lambda) = sum_j sum_{i in fold j} (F(c_{eps,lambda}^{-j})_i - f_obs,i)^2
                          / (sigma^2 n),
        (eps*, lambda*) = argmin CV,

    where `c^{-j}` is the coefficient fitted by equation error on the data with fold `j`
    held out, and `F` is the forward model (`forward`: a problem whose `field` is a solved
    `Steady` or evolved `Evolution` state; it is only evaluated, never fitted).

    **Why predict through the forward model.** The held-out residual cannot choose `eps`: a
    wider kernel lowers the residual's noise while its smoothing bias is absorbed by a
    smooth, wrong coefficient, so the residual keeps falling. The held-out data are
    independent of the training noise, so `E CV = 1 + E (F(c) - f_true)^2 / sigma^2`:
    an unbiased estimate of the prediction risk, which sees both the bias of a wide kernel
    and the noise of a narrow kernel or a small weight. It is blind where the data do not
    depend on the coefficient (the coefficient there is set by the regulariser).

    **Folds.** Node `i` is in fold `(sum_a (a + 1) i_a) mod K` (`fold_index`): a regular
    pattern, no two axis neighbours in the same fold. The mollified data must be complete,
    so held-out nodes are filled with the mean of their kept axis neighbours (an
    interpolation error `~ h^2 f'' / 2`, below the noise on resolved data). The `K` folds
    run as one batch (`fit_batch`); each weight starts from the previous one's fits and
    reuses the compiled code; each `eps` compiles once (`eps` is static).

    **Arguments:**

    - `build(eps) -> Problem`: the equation-error problem with kernel width `eps`, with the
      observed `field` as data used directly (mollified); its loss includes `term`.
    - `unknowns`: the initial guess (for the largest weight at each `eps`).
    - `field`: the observed field; `term`: the regulariser's name (`"reg:k:smooth"`).
    - `forward`: the output-error problem that computes `field` from the unknowns.
    - `eps`: widths to scan; `weights`: as in `discrepancy` (default `geomspace(1e2, 1e-6,
      17)`).
    - `sigma`: the noise level of `field` (default `noise_sigma`); it only scales `CV` to a
      chi-square per node and does not change the choice.
    - `folds`: `K >= 2` (and `> ndim`); `optimiser` (default `optax.lbfgs()`), `steps`,
      `chunk`: per fit.

    **Returns:** a `Choice` with `criterion="cross-validation"`; `result` is the fit on all
    the data at the chosen setting; `corner` is None (no misfit curve of full-data fits).
    Each `Trial`'s `score` is `CV`, its `regulariser` the mean over folds, its `misfit` NaN
    (no full-data fit is made per setting) and its `values` fold 0's coefficients.
    """
    if not isinstance(folds, int) or folds < 2:
        raise MollijaxError(f"`folds` must be an integer >= 2, got {folds!r}.")
    widths = [float(e) for e in eps]
    if not widths or any(not (np.isfinite(e) and e > 0) for e in widths):
        raise MollijaxError(f"`eps` must be positive numbers, got {eps!r}.")
    grid = _weight_grid(weights)
    if field not in forward.data or field not in forward.solved_names():
        raise MollijaxError(
            f"cross_validate: `forward` must compute {field!r} (a Steady or Evolution state) "
            "and hold its data."
        )
    d_obs = np.asarray(forward.data[field], dtype=np.float64)
    if folds <= d_obs.ndim:
        raise MollijaxError(f"`folds` must be > the grid's ndim {d_obs.ndim}, got {folds}.")
    if sigma is None:
        sigma = noise_sigma({field: d_obs})[field]
    fold = fold_index(d_obs.shape, folds)
    stack = np.stack([_fill(d_obs, fold == j) for j in range(folds)])
    opt = _optimiser(optimiser)
    chunk = steps if chunk is None else chunk
    fwd = forward.prepare(dict(unknowns))

    curve = []
    for e in widths:
        problem = build(e)
        _check_term(problem, term)
        if field not in problem.data:
            raise MollijaxError(f"cross_validate: build({e}) has no data {field!r}.")
        current = [dict(unknowns)] * folds
        for w in grid:
            p = problem.with_weights({term: float(w)})
            res = fit_batch(p, {field: stack}, current, opt, steps=steps, chunk=chunk)
            current = [res.item(j) for j in range(folds)]
            total, reg = 0.0, 0.0
            for j in range(folds):
                held = fold == j
                pred = np.asarray(_evaluate(fwd, current[j])[1][field])
                total += float(np.sum((pred[held] - d_obs[held]) ** 2))
                reg += float(_evaluate(p.with_data({field: stack[j]}), current[j])[0][term])
            score = total / (float(sigma) ** 2 * d_obs.size)
            values = {k: v[0] for k, v in res.values.items()}
            curve.append(Trial(float(w), e, float("nan"), reg / folds, score, values,
                               steps=int(np.max(res.steps))))
    best = int(np.argmin([t.score for t in curve]))
    chosen = curve[best]
    problem = build(chosen.eps).with_weights({term: chosen.weight})
    start = dict(unknowns)
    result = fit(problem, start, opt, steps=steps, chunk=chunk, progress=False)
    msg = (f"{folds}-fold cross-validation: eps {chosen.eps:.3g}, weight {chosen.weight:.3g} "
           f"of {term!r} (held-out chi2 per node {chosen.score:.3g}, the smallest of "
           f"{len(curve)} settings)")
    return Choice(chosen.weight, chosen.eps, result, tuple(curve), "cross-validation", None,
                  msg)


# ----------------------------------------------------------------------------- identifiability
class IdentifiabilityWarning(UserWarning):
    """Part of a coefficient is (nearly) not determined by the equation and the data there:
    its recovered values rest on the regulariser or the initial guess."""


@dataclasses.dataclass(frozen=True)
class Identifiability:
    """Where the residuals constrain a grid unknown (`identifiability`).

    - `name`: the unknown; `sensitivity`: on its sub-grid, the norm of the residuals'
      response to a relative change of the unknown at each node, divided by its median;
    - `poor`: boolean mask, `sensitivity < threshold`;
    - `regions`: the poorly identified regions as `{axis: (low, high)}` coordinate boxes of
      connected groups of poor nodes (largest first). Nodes within the residuals' margin of
      the walls (`problem.margin`), which no residual reads, are left out of `poor` and of
      the median;
    - `message`: a sentence naming them ("" when there are none).
    """

    name: str
    sensitivity: np.ndarray
    poor: np.ndarray
    regions: tuple[dict[str, tuple[float, float]], ...]
    message: str


def identifiability(
    problem: Problem, unknowns: Mapping, name: str, *, threshold: float = 0.05,
    max_nodes: int = 5000,
) -> Identifiability:
    """How strongly the problem's residuals determine the grid unknown `name` node by node.

    With `c` the unknown on its sub-grid and `r(c)` all residual fields stacked, the
    sensitivity of node `j` is the norm of the column of the Jacobian with respect to a
    relative change of `c_j`,

        s_j = | dr / d(log c_j) | = | c_j dr / dc_j |,   reported as s_j / median(s),

    computed by forward-mode differentiation (one jvp per node, batched). Where `s_j` is
    below `threshold` of the median, noise in the data moves `c_j` by more than
    `1 / threshold` times as much as at a typical node: the equation barely sees `c` there
    (e.g. `k u` with `u = 0`, or `div(k grad u)` where `grad u` and `lap u` vanish), and the
    recovered values rest on the regulariser. The unknown's current values are used (pass an
    equation-error fit's unknowns).

    **Arguments:** `problem` (with at least one residual), `unknowns` (`{name: field}`),
    `name` (a `GridField` unknown), `threshold` (relative sensitivity below which a node is
    poorly identified), `max_nodes` (larger unknowns are not analysed: a `MollijaxError`).

    **Returns:** an `Identifiability`.
    """
    from ._fields import GridField

    if name not in unknowns or not isinstance(unknowns[name], GridField):
        raise MollijaxError(
            f"identifiability: {name!r} must be a GridField unknown; unknowns are "
            f"{sorted(unknowns)}."
        )
    fns = [t.fn for t in problem.terms if isinstance(t, Residual)]
    if not fns:
        raise MollijaxError("identifiability needs a problem with at least one residual.")
    if not (np.isfinite(threshold) and 0 < threshold < 1):
        raise MollijaxError(f"identifiability: `threshold` must be in (0, 1), got {threshold!r}.")
    field = unknowns[name]
    grid = problem.grid
    c = jnp.asarray(field.on_subgrid(grid))
    if c.size > max_nodes:
        raise MollijaxError(
            f"identifiability: {name!r} has {c.size} nodes, more than max_nodes={max_nodes}."
        )
    free = GridField(np.asarray(c), field.axes)

    def residuals(delta):
        trial = dict(unknowns)
        trial[name] = eqx.tree_at(lambda f: f.raw, free, c * (1.0 + delta))
        ev = problem._evaluation(trial, problem.grid_values(trial))
        return jnp.concatenate([jnp.ravel(ev.residual_in_band(fn)[0]) for fn in fns])

    jac = jax.jacfwd(residuals)(jnp.zeros_like(c))  # (residual nodes, *sub-grid)
    s = np.sqrt(np.sum(np.asarray(jac, dtype=np.float64) ** 2, axis=0))
    # nodes within the residuals' margin of the walls are never read by a residual (the
    # regulariser and the output-error state carry them): not reported, not in the scale
    edge = np.zeros(s.shape, bool)
    for k, axis in enumerate(field.axes):
        m = int(problem.margin[grid.axis_index(axis)])
        if m > 0:
            idx = [slice(None)] * s.ndim
            idx[k] = np.r_[0:m, s.shape[k] - m:s.shape[k]]
            edge[tuple(idx)] = True
    if problem.band is not None:  # with a domain: only the nodes its band reads count
        edge |= ~np.asarray(domain_on_axes(problem.band_on_grid(), grid, field.axes))
    seen = s[~edge]
    med = float(np.median(seen)) if seen.size else 0.0
    s = s / med if med > 0 else np.zeros_like(s)
    poor = (s < threshold) & ~edge
    regions = []
    if poor.any():
        from scipy import ndimage

        labels, count = ndimage.label(poor)
        coords = [grid.coords(a) for a in field.axes]
        boxes = []
        for region in ndimage.find_objects(labels):
            size = int(np.sum(labels[region] > 0))
            boxes.append((size, {a: (float(x[sl.start]), float(x[sl.stop - 1]))
                                 for a, x, sl in zip(field.axes, coords, region, strict=True)}))
        regions = [b for _, b in sorted(boxes, key=lambda t: -t[0])]
    message = ""
    if regions:
        shown = "; ".join(
            ", ".join(f"{a} in [{lo:.3g}, {hi:.3g}]" for a, (lo, hi) in box.items())
            for box in regions[:4]
        )
        more = f" and {len(regions) - 4} more" if len(regions) > 4 else ""
        message = (
            f"{name!r} is poorly identified at {int(poor.sum())} of {poor.size} nodes "
            f"({shown}{more}): the residuals' sensitivity to it there is below "
            f"{threshold:g} of its median (e.g. the solution or its gradient vanishes), so "
            "its values there rest on the regulariser"
        )
    return Identifiability(name, s, poor, tuple(regions), message)
