"""Error bars on fitted unknowns: a Laplace (Gauss-Newton) posterior and noise-redraw ensembles.

    laplace(problem, fitted)      the Gaussian posterior at the fit: a low-rank, prior-
                                  preconditioned Gauss-Newton Hessian (matrix-free)
    ensemble(problem, fitted)     parametric bootstrap: refits on the fitted prediction plus
                                  fresh noise, through `fit_batch`
    Uncertainty                   what both return: pointwise `std` of every unknown, samples,
                                  the spectrum, the noise level with its own uncertainty

**The posterior of a loss.** A `Problem`'s loss is `L(theta) = L_gn(theta) + L_reg(theta)`:
the data, residual and condition terms are means of squares (`L_gn = |rho(theta)|^2`, a
whitened residual vector), the regularisers (`Tikhonov`, `H1`, `TV`) the rest. Read as a
negative log posterior at a temperature `T`,

    p(theta | data)  ~  exp(-L(theta) / T),

the data term `w_f mean_obs (f - f_obs)^2` of a field with noise `sigma_f` is the Gaussian
likelihood `sum (f - f_obs)^2 / (2 sigma_f^2)` when `T = 2 w_f sigma_f^2 / n_f` (`n_f`
observed nodes). For a loss scaled by `scaled(problem, sigma)` (`w_f = 1 / sigma_f^2`) this
is `T = 2 / n_f`: the loss is already in the noise's units. The regularisers then act as the
prior, `exp(-L_reg / T)`. The Laplace approximation at the fitted `theta*` is

    theta ~ N(theta*, T H^-1),   H = H_gn + H_reg + delta I,

with `H_gn = 2 J^T J` the Gauss-Newton Hessian of `L_gn` (`J` the Jacobian of `rho`),
`H_reg = Q^T (d^2 L_reg / dv^2) Q` the regularisers' Hessian in the unknowns' values `v`
(convex there: PSD) pulled back through `Q = dv/dtheta` (a constraint's transform or a
network), and `delta` the nugget (below).

**Low rank (hIPPYlib's approach).** With the prior precision `P = H_reg + delta I = L L^T`
(a dense Cholesky factor), the prior-preconditioned misfit Hessian
`Ht = L^-1 H_gn L^-T` has a fast-decaying spectrum (the data inform a few directions); a
randomized double-pass eigendecomposition with `rank + oversampling` Gaussian probes gives
`Ht ~ U diag(lambda) U^T`, and

    H^-1 = P^-1 - (L^-T U) diag(lambda / (1 + lambda)) (L^-T U)^T     (Sherman-Morrison-Woodbury).

Each application of `H_gn` is one forward (jvp) and one reverse (vjp) pass through the
model, batched over the probes, so the cost is about `2 (rank + oversampling)` of them,
whatever the number of unknowns. With `rank + oversampling >= n` (or `rank="full"`) the
probes are the identity and the result is exact. The dense `P` needs memory `n^2`: this is
for up to a few thousand parameters.

**The nugget.** A regulariser may not bound every direction: `H1` has the constants in its
null space, and an unknown without any regulariser (a network's weights, an evolved initial
state) has no prior at all. `delta` makes `P` positive definite: on the parameters of
regularised unknowns `delta = nugget * mean diag(H_reg)` over them; on the others `delta =
nugget * mean diag(H_gn)` over them (exact, or a Hutchinson estimate: one extra batch of
probes), and at least the former (free parameters that the data do not see at these values,
e.g. the weights of a network whose units are all dead, would otherwise get `delta = 0`).
Where
the data inform a direction (the mean value of a coefficient, usually) the nugget does not
matter; where they do not, the std it gives is the nugget's and grows as `nugget^-1/2`:
read such a std as "not determined by the data". `nugget=0` is allowed when the
regularisers alone bound every parameter (e.g. `Tikhonov`).

**Posterior, mean square error, spread.** The Laplace std (`kind="posterior"`) is
Bayesian: it includes the prior's own uncertainty and is largest where the regulariser, not
the data, sets the value. The default `kind="mse"` is the estimator's root mean square
error: its spread under new noise (the sandwich `T H^-1 H_gn H^-1`) plus the square of its
bias, the regularisers' linearised pull on the fit (estimated from the fit itself, with one
twicing step). The ensemble std is the spread from refits: no prior variance, no bias. All
three agree where the data dominate. The bias estimate sees only what the data resolve: a
bias in directions the data do not see (a jump smoothed by `H1`) is continued from the
spectrum of those they do (self-similarity; `laplace(unresolved=...)`), and the
error bars are only as good as the regulariser weight behind them (a weight far too small
or too large gives an estimate whose own error the bars do not describe). Coverage of the
truth is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import NamedTuple

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ._auto import noise_sigma
from ._errors import MollijaxError
from ._fields import GridField
from ._fit import FitResult
from ._problem import Problem
from ._terms import Condition, DataMisfit, Evaluation, Residual, _Penalty, domain_on_axes


class UncertaintyError(MollijaxError):
    """An uncertainty estimate cannot be made from these arguments."""


class NoiseLevel(NamedTuple):
    """The noise level of one observed field, with its own uncertainty.

    - `sigma`: the standard deviation used (absolute, the data's units);
    - `source`: where it came from (`"given"`, `"data"`: `noise_sigma` of the observations,
      `"residual"`: the fit's residual, `"redraws"`: the ensemble's);
    - `estimate`, `std`: an estimate of the noise level and its standard deviation. Laplace:
      from the fit's residual, `estimate^2 = sum_obs r^2 / (n - p)` with `p` the effective
      number of parameters (`sum lambda / (1 + lambda)`), and `std = estimate /
      sqrt(2 (n - p))` (chi-square). Ensemble: the mean and spread of `noise_sigma` over the
      redrawn data sets;
    - `dof`: the degrees of freedom `n - p` of the residual estimate (NaN for the ensemble).
    """

    sigma: float
    source: str
    estimate: float
    std: float
    dof: float

    def as_dict(self) -> dict:
        return {k: (v if isinstance(v, str) else float(v)) for k, v in self._asdict().items()}


class Uncertainty(NamedTuple):
    """What `laplace` and `ensemble` return.

    - `method`: `"laplace"` or `"ensemble"`;
    - `mean`: `{unknown: values on its sub-grid}` (Laplace: the fit itself, the posterior's
      mode; ensemble: the mean of the refits);
    - `std`: `{unknown: pointwise standard deviation}`, same shapes;
    - `samples`: `{unknown: (S, *shape)}` posterior samples (Laplace, pushed through the
      unknowns' own maps) or the refits (ensemble); None when none were asked for;
    - `rank`: eigenpairs kept (Laplace) or completed refits (ensemble);
    - `eigenvalues`: the kept eigenvalues `lambda` of the prior-preconditioned misfit
      Hessian, descending (empty for the ensemble). `lambda_i >> 1`: a direction the data
      determine; the last kept one says how much a larger rank could still change;
    - `noise`: `{observed field: NoiseLevel}`;
    - `temperature`: `T` (Laplace; see the module docstring; NaN for the ensemble);
    - `prior_scale`: the factor `s` on the prior precision (Laplace: 1 is the fit's own
      regularisers, `laplace(prior_scale="evidence")` chooses it; NaN for the ensemble);
    - `newton_step`: how far the given unknowns are from an optimum of the loss: the length
      of one Newton step `-H^-1 grad L` in posterior standard deviations,
      `sqrt(grad L . H^-1 grad L / T)` (Laplace; small at a converged fit, and above 2 the
      message warns; NaN for the ensemble);
    - `cost`: `{"seconds": ..., "products": Gauss-Newton products or "fits": refits}`;
    - `message`: what was done, and warnings (a truncated spectrum, failed refits).
    """

    method: str
    mean: dict
    std: dict
    samples: dict | None
    rank: int
    eigenvalues: np.ndarray
    noise: dict
    temperature: float
    cost: dict
    message: str
    prior_scale: float = 1.0
    newton_step: float = float("nan")

    def arrays(self) -> dict[str, np.ndarray]:
        """`{"<unknown>_std": std}` (as written beside `<unknown>` in `fields.npz`)."""
        return {f"{k}_std": np.asarray(v) for k, v in self.std.items()}

    def as_dict(self) -> dict:
        """A JSON-ready summary (no arrays but the eigenvalues)."""
        return {
            "method": self.method,
            "rank": int(self.rank),
            "eigenvalues": [float(v) for v in np.asarray(self.eigenvalues)],
            "noise": {k: v.as_dict() for k, v in self.noise.items()},
            "temperature": float(self.temperature),
            "prior_scale": float(self.prior_scale),
            "newton_step": float(self.newton_step),
            "cost": {k: float(v) for k, v in self.cost.items()},
            "mean_std": {k: float(np.mean(v)) for k, v in self.std.items()},
            "message": self.message,
        }


def _holds_float64(tree) -> bool:
    """Whether any array of `tree` is float64 (NumPy's or a JAX array made with x64 on)."""
    return any(getattr(x, "dtype", None) == np.float64 for x in jax.tree_util.tree_leaves(
        eqx.filter(tree, eqx.is_inexact_array)))


NEWTON_LIMIT = 2.0
"""A Laplace posterior whose `newton_step` exceeds this many posterior standard deviations
is centred on a point that is not an optimum of the loss: its message warns, and the
automatic error bars of `mollijax run` are withheld."""


# ----------------------------------------------------------------------------- arguments
def _solve_triangular(a, b, lower: bool):
    """SciPy's triangular solve, imported on first use (SciPy adds ~0.1 s to `import
    mollijax` otherwise, and most runs never draw error bars)."""
    import scipy.linalg

    return scipy.linalg.solve_triangular(a, b, lower=lower)


def _unknowns_of(fitted, where: str) -> dict:
    if isinstance(fitted, FitResult):
        if fitted.batched:
            raise UncertaintyError(
                f"{where}: `fitted` is a batch result; pass one item's unknowns "
                "(`result.item(b)`)."
            )
        if fitted.unknowns is None:
            raise UncertaintyError(f"{where}: `fitted` holds no unknowns (load it with `like=`).")
        return dict(fitted.unknowns)
    if isinstance(fitted, Mapping):
        bad = {k: type(v).__name__ for k, v in fitted.items()
               if isinstance(v, np.ndarray | jax.Array | list | tuple | float | int)}
        if bad:
            raise UncertaintyError(
                f"{where}: `fitted` holds arrays, not unknowns ({bad}): pass the FitResult "
                "itself or its `result.unknowns` (the fields with their axes and constraints), "
                "not `result.values`."
            )
        return dict(fitted)
    raise UncertaintyError(
        f"{where}: `fitted` must be a FitResult or a dict of fitted unknowns, got "
        f"{type(fitted).__name__}."
    )


def _check_problem(problem, where: str) -> None:
    if not isinstance(problem, Problem):
        raise UncertaintyError(
            f"{where}: `problem` must be a mollijax.Problem, got {type(problem).__name__}."
        )


def _int_at_least(value, low: int, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise UncertaintyError(f"{where}: `{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


def _observed(problem: Problem, unknowns) -> list[str]:
    """The output-error data fields: observed and fitted, evolved or solved."""
    solved = problem.solved_names()
    return [f for f in problem.data if f in unknowns or f in solved]


def _sigmas(problem: Problem, fields: list[str], sigma, where: str) -> tuple[dict, str]:
    """`({field: sigma_f}, source)` for the output-error fields."""
    if sigma is None:
        data = {f: problem.data[f] for f in fields}
        masks = {f: problem.masks[f] for f in fields}
        return noise_sigma(data, masks), "data"
    if isinstance(sigma, Mapping):
        table = dict(sigma)
    else:
        table = dict.fromkeys(fields, sigma)
    missing = sorted(set(fields) - set(table))
    extra = sorted(set(table) - set(fields))
    if missing or extra:
        raise UncertaintyError(
            f"{where}: `sigma` must give one value per observed output-error field "
            f"{fields}; missing {missing}, not such fields {extra}."
        )
    out = {}
    for f, s in table.items():
        try:
            s = float(s)
        except (TypeError, ValueError):
            raise UncertaintyError(
                f"{where}: `sigma` of {f!r} must be a number > 0, got {s!r}."
            ) from None
        if not (math.isfinite(s) and s > 0):
            raise UncertaintyError(f"{where}: `sigma` of {f!r} must be a number > 0, got {s!r}.")
        out[f] = s
    return out, "given"


# ----------------------------------------------------------------------------- the model
def _gn_terms(problem: Problem, unknowns) -> tuple:
    """The active terms that are means of squares (everything but the regularisers)."""
    out = []
    for t in problem.active_terms(unknowns):
        if isinstance(t, _Penalty):
            continue
        if not isinstance(t, DataMisfit | Residual | Condition):
            raise UncertaintyError(
                f"laplace: loss term {t.name!r} ({type(t).__name__}) is not a mean of squares "
                "(DataMisfit, Residual, Condition) nor a regulariser (Tikhonov, H1, TV); its "
                "curvature is not known."
            )
        out.append(t)
    return tuple(out)


def _term_residual(t, ev: Evaluation, grid) -> tuple[jax.Array, jax.Array]:
    """`(r, count)` with the term's unweighted value `L_k = sum r^2 / count`."""
    if isinstance(t, DataMisfit):
        return t.misfit(ev)
    if isinstance(t, Residual):
        return ev.residual_in_band(t.fn)
    selected, mask = t.select(ev.values[t.field], grid)
    err = selected - t.value.astype(selected.dtype)
    if mask is None:
        return err, jnp.asarray(float(err.size), err.dtype)
    err = jnp.where(mask, err, 0.0)
    return err, jnp.maximum(jnp.sum(mask.astype(err.dtype)), 1.0)


def _split(unknowns):
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return flat, (lambda theta: eqx.combine(unravel(theta), static))


def _whitened(problem: Problem, u) -> dict[str, jax.Array]:
    """Each mean-of-squares term's whitened residual `sqrt(w / count) r` (flat), by name:
    `|rho|^2` summed over them is that part of the loss."""
    ev = problem._evaluation(u, problem.grid_values(u))
    out = {}
    for t in _gn_terms(problem, u):
        r, count = _term_residual(t, ev, problem.grid)
        out[t.name] = (jnp.sqrt(t.weight.astype(r.dtype) / count) * r).ravel()
    return out


def _rho(problem: Problem, u) -> jax.Array:
    """The whitened residual vector: `L_gn = |rho|^2`."""
    return jnp.concatenate(list(_whitened(problem, u).values()))


@eqx.filter_jit
def _gn_apply(problem: Problem, unknowns, block):
    """`H_gn @ block` (`block`: `(n, b)`): one linearisation, `b` jvp and vjp passes."""
    flat, rebuild = _split(unknowns)

    def rho(theta):
        return _rho(problem, rebuild(theta))

    _, jvp = jax.linearize(rho, flat)
    _, vjp = jax.vjp(rho, flat)

    def one(v):
        return 2.0 * vjp(jvp(v.astype(flat.dtype)))[0]

    return jax.vmap(one, in_axes=1, out_axes=1)(block)


@eqx.filter_jit
def _misfit_grad(problem: Problem, unknowns):
    """`d L_gn / d theta` (`L_gn = |rho|^2`) at the unknowns' own parameters."""
    flat, rebuild = _split(unknowns)
    return jax.grad(lambda theta: jnp.sum(_rho(problem, rebuild(theta)) ** 2))(flat)


@eqx.filter_jit
def _rho_value(problem: Problem, unknowns):
    """`(L_gn, N, {field: sum_obs r^2})`: the misfit part of the loss, its number of squares
    and each data term's unweighted sum of squares."""
    u = unknowns
    ev = problem._evaluation(u, problem.grid_values(u))
    sums, total, count = {}, 0.0, 0.0
    for t in _gn_terms(problem, u):
        r, c = _term_residual(t, ev, problem.grid)
        total = total + t.weight.astype(r.dtype) * jnp.sum(r**2) / c
        count = count + c
        if isinstance(t, DataMisfit):
            sums[t.field] = jnp.sum(r**2)
    return total, count, sums


def _observed_count(problem: Problem, term: DataMisfit) -> float:
    """How many nodes a data term counts: its observed nodes, or for a mollified one those
    on the residuals' interior (and the domain's band)."""
    mask = np.asarray(problem.masks[term.field])
    if term.mollified:
        crop = tuple(slice(m, n - m) for m, n in zip(problem.margin, problem.grid.shape,
                                                      strict=True))
        mask = mask[crop]
        if problem.band is not None:
            mask = mask & np.asarray(problem.band)
    return float(max(mask.sum(), 1))


def _names_order(unknowns) -> tuple[str, ...]:
    return tuple(sorted(unknowns))


@eqx.filter_jit
def _values_and_jacobian(problem: Problem, unknowns):
    """`(v, Q)`: every unknown's values on its sub-grid, flattened in sorted-name order, and
    `Q = dv / dtheta`."""
    flat, rebuild = _split(unknowns)
    names = _names_order(unknowns)

    def values(theta):
        u = rebuild(theta)
        return jnp.concatenate([jnp.ravel(u[n].on_subgrid(problem.grid)) for n in names])

    return values(flat), jax.jacfwd(values)(flat)


@eqx.filter_jit
def _values_of(problem: Problem, unknowns, thetas):
    """Every unknown on its sub-grid for each row of `thetas` `(S, n)`."""
    _, rebuild = _split(unknowns)

    def one(theta):
        u = rebuild(theta)
        return {n: u[n].on_subgrid(problem.grid) for n in _names_order(unknowns)}

    return jax.vmap(one)(thetas)


def _no_residual(fn):
    raise MollijaxError("internal: a regulariser does not evaluate residuals.")


def _penalty_total(problem: Problem, unknowns, shapes):
    """`z -> L_reg` with `z` every unknown's values on its sub-grid, flattened in order."""
    names = _names_order(unknowns)
    penalties = [t for t in problem.active_terms(unknowns) if isinstance(t, _Penalty)]

    def total(z):
        fields, start = {}, 0
        for n, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            template = GridField(np.zeros(shape), unknowns[n].axes)
            fields[n] = eqx.tree_at(lambda f: f.raw, template, z[start:start + size].reshape(shape))
            start += size
        ev = Evaluation(problem.grid, fields, {}, problem.data, problem.masks, _no_residual,
                        problem.domain, problem.band)
        out = jnp.zeros((), z.dtype)
        for t in penalties:
            out = out + t.weight.astype(z.dtype) * t(ev)
        return out

    return total


@eqx.filter_jit
def _penalty_hessian(problem: Problem, unknowns, v, shapes):
    """`(d^2 L_reg / dv^2, v . dL_reg/dv / 2, dL_reg/dv)` at the values `v`: the Hessian
    (PSD: the regularisers are convex in the values), the energy of the regularisers' local
    quadratic model (`L_reg` itself for Tikhonov and H1, which are quadratic forms; half
    the total variation for TV, which is homogeneous of degree one) and the gradient."""
    total = _penalty_total(problem, unknowns, shapes)
    grad = jax.grad(total)(v)
    return jax.hessian(total)(v), 0.5 * jnp.dot(v, grad), grad


class _Model:
    """The pieces of the Laplace approximation shared by its steps."""

    def __init__(self, problem: Problem, unknowns: dict, chunk: int):
        self.problem, self.unknowns = problem, unknowns
        native = _split(unknowns)[0]
        self.dtype = native.dtype  # the model's own precision (float32 without x64)
        self.flat = np.asarray(native, dtype=np.float64)
        self.n = self.flat.size
        self.names = _names_order(unknowns)
        self.shapes = tuple(
            tuple(np.shape(unknowns[k].on_subgrid(problem.grid))) for k in self.names
        )
        self.chunk = max(1, min(chunk, self.n))
        self.products = 0

    def gn(self, block: np.ndarray) -> np.ndarray:
        """`H_gn @ block`, in chunks of one compiled width (the last one padded)."""
        b = block.shape[1]
        out = np.empty_like(block)
        dtype = self.dtype
        for start in range(0, b, self.chunk):
            part = block[:, start:start + self.chunk]
            width = part.shape[1]
            if width < self.chunk:
                part = np.concatenate([part, np.zeros((self.n, self.chunk - width))], axis=1)
            res = _gn_apply(self.problem, self.unknowns, jnp.asarray(part, dtype))
            out[:, start:start + width] = np.asarray(res, dtype=np.float64)[:, :width]
        self.products += b
        return out


# ----------------------------------------------------------------------------- laplace
def _rng(key) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key (raw or typed)."""
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key).ravel().astype(np.uint32))


def _randomized_eig(apply, n: int, rank: int, oversampling: int, power: int, rng):
    """Top `rank` eigenpairs of the symmetric PSD operator `apply` (on `(n, b)` blocks): a
    randomized double pass (Halko, Martinsson & Tropp, alg. 5.3 with 4.4), exact when
    `rank + oversampling >= n` (the probes are then the identity)."""
    b = rank + oversampling
    if b >= n:
        y = apply(np.eye(n))
        vals, vecs = np.linalg.eigh(0.5 * (y + y.T))
    else:
        y = apply(rng.standard_normal((n, b)))
        for _ in range(power):
            y = apply(np.linalg.qr(y)[0])
        q = np.linalg.qr(y)[0]
        t = q.T @ apply(q)
        vals, small = np.linalg.eigh(0.5 * (t + t.T))
        vecs = q @ small
    order = np.argsort(vals)[::-1][: min(rank, n)]
    return np.maximum(vals[order], 0.0), vecs[:, order]


def laplace(
    problem: Problem,
    fitted,
    *,
    rank: int | str = "auto",
    oversampling: int = 10,
    power: int = 0,
    sigma=None,
    nugget: float = 1e-6,
    prior_scale: float | str = 1.0,
    kind: str = "mse",
    bias_steps: int = 2,
    unresolved=True,
    samples: int = 0,
    key: jax.Array | None = None,
    chunk: int = 64,
) -> Uncertainty:
    """The Laplace (Gauss-Newton) posterior of the unknowns at a fit, and its pointwise std.

    With `T` the loss's temperature (the module docstring: `T = 2 w_f sigma_f^2 / n_f` from
    the data terms) and `H = H_gn + H_reg + delta I` the loss's Gauss-Newton Hessian in the
    flat parameters `theta` (`jax.flatten_util.ravel_pytree` of the unknowns' arrays),

        std(v_i) = sqrt(T [Q H^-1 Q^T]_ii),   Q = dv / dtheta,

    for every value `v_i` of every unknown on its sub-grid (a grid unknown's nodes, a
    network evaluated on its axes' nodes, a constant): through the linearisation of the
    unknown's map (a constraint's transform, the network). `H^-1` is the low-rank update of
    the prior's inverse (Sherman-Morrison-Woodbury) from a randomized eigendecomposition of
    the prior-preconditioned misfit Hessian; see the module docstring for the model, the
    nugget and the cost.

    **Arguments:**

    - `problem`: the problem that was fitted (its weights as in the fit: a problem scaled
      by `scaled(problem, sigma)` and a weight chosen by `discrepancy` included).
    - `fitted`: its `FitResult` (`fit`, `auto_run(...).result`) or the fitted unknowns.
    - `rank`: eigenpairs kept (an integer >= 1), `"full"` (every direction: exact, `n`
      products) or `"auto"` (default): `"full"` up to `FULL_RANK_LIMIT` (1500) parameters,
      else `AUTO_RANK` (200). The posterior's std errs wide when the rank is short (the
      prior's variance stays in the missing directions), the `"mse"` one narrow (directions
      with `lambda` near 1 add `lambda / (1 + lambda)^2` each to the spread).
      `oversampling`: extra probes (hIPPYlib's default 10); `power`: power
      iterations (0: the double pass).
    - `sigma`: the noise standard deviation of the output-error data fields: a number, a
      dict `{field: sigma_f}`, `None` (default: `noise_sigma` of the observations; pass the
      value given to `scaled` if it was another one) or `"residual"` (from the fit's own
      residual, `2 L_gn / (N - p)`; the only choice when the loss has no output-error data
      term, e.g. an equation-error fit, where it assumes the residuals are independent).
    - `nugget`: the prior's regularisation of directions no regulariser bounds (>= 0).
    - `prior_scale`: the factor `s` on the prior precision, `H = H_gn + s (H_reg + delta I)`:
      a number > 0 (default 1: the fit's own regularisers), or `"evidence"`: the `s` that
      maximises the Laplace evidence `p(data | s)` (MacKay's fixed point
      `2 s E / T = sum lambda_i / (s + lambda_i)`, `E` the prior's energy at the fit) without
      refitting.
    - `kind`: `"mse"` (default): the root mean square error of the estimator itself,
      `sqrt(var + bias^2)`, with the sandwich variance `T Q H^-1 H_gn H^-1 Q^T` (how the fit
      moves when the noise is redrawn: the linearised parametric bootstrap) and the bias
      `-Q H^-1 grad L_reg` (how far the regularisers pull the estimate, linearised; `s = 1`)
      evaluated, by default, with one step of twicing (`bias_steps`): at the fit minus its
      own first bias estimate, since the fit is itself pulled. `"posterior"`: the Laplace
      posterior's std above. The posterior counts the prior's full variance in every
      direction the data do not determine; the estimator is not that rough where the truth
      is smooth.
    - `bias_steps`: evaluations of the pull for `kind="mse"`, `b_1 = -H^-1 grad L_reg(fit)`,
      `b_(k+1) = b_1 + H^-1 H_reg b_k` (the pull at the fit minus the previous estimate,
      linearised): a direction of eigenvalue `lambda` recovers `1 - 1/(1 + lambda)^k` of its
      bias. 1: the plain plug-in; 2 (default): one twicing step. More steps recover more
      of the weakly determined directions' bias and add more of their noise
      (docs/benchmarks.md, "Error bars: calibration", has the design study).
    - `unresolved`: for `kind="mse"`, add the expected squared bias of the directions the
      data do not resolve, whose bias no plug-in sees (a jump smoothed by `H1`): the
      truth's whitened spectrum is estimated from the directions the data do resolve and
      continued past them (`_unresolved_spectrum`; nothing is added when fewer than three
      groups of directions are resolved, as for a smooth truth). Default True; it assumes
      the truth is as rough beyond the data's resolution as within it. Only the kept
      eigenpairs count (every direction with `rank="auto"` up to 1500 parameters).
    - `samples`: number of posterior draws (0: none), pushed through the unknowns' own maps;
      `key`: a `jax.random.PRNGKey` for the probes and the draws (default `PRNGKey(0)`).
    - `chunk`: probes per compiled batch of Gauss-Newton products.

    **Returns:** an `Uncertainty` with `method="laplace"`.

    **Cost.** About `2 (rank + oversampling)` Gauss-Newton products (a jvp and a vjp each,
    `rank + oversampling` of them batched at once, `chunk` at a time), one more pass when
    some unknown has no regulariser, a dense Cholesky factorisation of the `n x n` prior
    precision and a dense value Jacobian (`jax.jacfwd`, `n` forward passes of the unknowns'
    maps only, not of the model).
    """
    where = "laplace"
    start_time = time.perf_counter()
    _check_problem(problem, where)
    unknowns = _unknowns_of(fitted, where)
    if not jax.config.jax_enable_x64 and _holds_float64((problem, unknowns)):
        # a float64 fit (`auto_run` computes in float64 whatever the global setting): its
        # posterior in float64 too, as the fit was (in float32 its arrays were truncated and
        # the factorisation failed on the result)
        with jax.enable_x64(True):
            return laplace(problem, fitted, rank=rank, oversampling=oversampling, power=power,
                           sigma=sigma, nugget=nugget, prior_scale=prior_scale, kind=kind,
                           bias_steps=bias_steps, unresolved=unresolved, samples=samples,
                           key=key, chunk=chunk)
    if rank not in ("full", "auto"):
        rank = _int_at_least(rank, 1, "rank", where)
    oversampling = _int_at_least(oversampling, 0, "oversampling", where)
    power = _int_at_least(power, 0, "power", where)
    samples = _int_at_least(samples, 0, "samples", where)
    chunk = _int_at_least(chunk, 1, "chunk", where)
    prior_scale, bias_steps = _check_kind(kind, prior_scale, bias_steps, where)
    if not isinstance(unresolved, bool):
        raise UncertaintyError(f"{where}: `unresolved` must be True or False, got "
                               f"{unresolved!r}.")
    bad_nugget = f"{where}: `nugget` must be a number >= 0, got {nugget!r}."
    try:
        nugget = float(nugget)
    except (TypeError, ValueError):
        raise UncertaintyError(bad_nugget) from None
    if not (math.isfinite(nugget) and nugget >= 0):
        raise UncertaintyError(bad_nugget)
    problem.check(unknowns)
    problem = problem.prepare(unknowns)
    gn_terms = _gn_terms(problem, unknowns)
    if not gn_terms:
        raise UncertaintyError(
            f"{where}: the loss has no data, residual or condition term for these unknowns: "
            "nothing informs them."
        )
    fields = _observed(problem, unknowns)
    residual_mode = isinstance(sigma, str)
    if residual_mode and sigma != "residual":
        raise UncertaintyError(
            f"{where}: `sigma` must be a number, a dict, None or 'residual', got {sigma!r}."
        )
    if not fields and not residual_mode:
        if sigma is not None:
            raise UncertaintyError(
                f"{where}: `sigma` is given but the loss has no output-error data term (the "
                f"data {sorted(problem.data)} are used directly); use sigma='residual'."
            )
        residual_mode = True
    sig, source = ({}, "residual") if residual_mode else _sigmas(problem, fields, sigma, where)
    key = jax.random.PRNGKey(0) if key is None else key
    rng = _rng(key)

    model = _Model(problem, unknowns, chunk)
    n = model.n
    if n == 0:
        raise UncertaintyError(f"{where}: the unknowns have no parameters to be uncertain about.")
    v, q = _values_and_jacobian(problem, unknowns)
    v, q = np.asarray(v, np.float64), np.asarray(q, np.float64).reshape(-1, n)
    hv, reg_energy, reg_grad = _penalty_hessian(problem, unknowns, jnp.asarray(v), model.shapes)
    hv, reg_energy = np.asarray(hv, np.float64), float(reg_energy)
    h_reg = q.T @ hv @ q
    h_reg = 0.5 * (h_reg + h_reg.T)

    # the nugget: per parameter, relative to the curvature that bounds it
    diag = np.diag(h_reg)
    scale_reg = np.abs(diag).max() if diag.size else 0.0
    bounded = diag > 1e-12 * max(scale_reg, 1e-300)
    delta = np.zeros(n)
    reg_scale = float(np.mean(diag[bounded])) if bounded.any() else 0.0
    delta[bounded] = nugget * reg_scale
    free = ~bounded
    if free.any() and nugget > 0:
        # the mean diagonal of H_gn over the free parameters: exact (unit probes) when they
        # fit in one compiled batch, else a Hutchinson estimate (Rademacher probes)
        idx = np.flatnonzero(free)
        probes = np.zeros((n, model.chunk))
        if idx.size <= model.chunk:
            probes[idx, np.arange(idx.size)] = 1.0
            count = 1.0
        else:
            probes[idx] = rng.choice([-1.0, 1.0], size=(idx.size, model.chunk))
            count = float(model.chunk)
        trace = float(np.sum(probes * model.gn(probes))) / count
        # free parameters that the data do not see at these values (a network whose units
        # are all dead) get at least the regularised parameters' scale
        delta[free] = nugget * max(trace / idx.size, reg_scale)
    precision = h_reg + np.diag(delta)
    try:
        chol = np.linalg.cholesky(precision)
    except np.linalg.LinAlgError:
        raise UncertaintyError(
            f"{where}: the prior precision (the regularisers' Hessian plus the nugget "
            f"{nugget:g}) is not positive definite: some parameters are bounded by no "
            "regulariser; give `nugget` > 0."
        ) from None

    def apply(block):
        z = _solve_triangular(chol.T, block, lower=False)
        return _solve_triangular(chol, model.gn(z), lower=True)

    rank = _resolved_rank(rank, n)
    k = n if rank == "full" else min(rank, n)
    lam, u = _randomized_eig(apply, n, k, 0 if rank == "full" else oversampling, power, rng)
    lt_u = _solve_triangular(chol.T, u, lower=False)

    # the temperature (from the residual, it depends on the effective parameter count)
    l_gn, big_n, sums = _rho_value(problem, unknowns)
    sums = {f: float(s) for f, s in sums.items()}
    weights = {t.field: float(t.weight) for t in gn_terms if isinstance(t, DataMisfit)}
    counts = {t.field: _observed_count(problem, t)
              for t in gn_terms if isinstance(t, DataMisfit) and t.field in fields}
    n_obs = sum(counts.values())

    def temperature_at(p_eff: float) -> float:
        if residual_mode:
            return 2.0 * float(l_gn) / max(float(big_n) - p_eff, 1.0)
        temps = {f: 2.0 * weights[f] * sig[f] ** 2 / max(counts[f], 1.0) for f in fields}
        return float(sum(counts[f] * temps[f] for f in fields) / max(n_obs, 1.0))

    # the prior's scale: as fitted, or the evidence's choice (MacKay's fixed point)
    if kind == "mse":  # the estimator that was fitted: its own regularisers, s = 1
        scale, scale_note = 1.0, "; root-mean-square error (estimator spread and bias)"
    else:
        energy = reg_energy + 0.5 * float(np.sum(delta * model.flat**2))
        scale, scale_note = _prior_scale(prior_scale, lam, energy, temperature_at)
    d = lam / (scale + lam)
    p_eff = float(np.sum(d))
    temperature = temperature_at(p_eff)
    noise = {}
    for f in fields:
        if residual_mode:
            s2 = temperature * counts[f] / (2.0 * weights[f])
            noise[f] = _residual_noise(f, math.sqrt(s2), "residual", sums[f], counts[f], p_eff,
                                       n_obs)
        else:
            noise[f] = _residual_noise(f, sig[f], source, sums[f], counts[f], p_eff, n_obs)
    variance = temperature / scale
    d1 = lam / (1.0 + lam)

    def h_inv(vec):  # the loss's H^-1 = L^-T (I - U diag(lambda / (1 + lambda)) U^T) L^-1
        z = _solve_triangular(chol, vec, lower=True)
        return _solve_triangular(chol.T, z - u @ (d1 * (u.T @ z)), lower=False)

    # is the point an optimum? One Newton step's length in posterior standard deviations
    # (the Mahalanobis norm sqrt(g . H^-1 g / T) of the step -H^-1 g): small at a converged
    # fit, whose tolerance still leaves a little; above 2 the message warns
    grad_reg = q.T @ np.asarray(reg_grad, np.float64)  # d L_reg / d theta
    grad = np.asarray(_misfit_grad(problem, unknowns), np.float64) + grad_reg
    newton = math.sqrt(max(float(grad @ h_inv(grad)), 0.0) / max(temperature, 1e-300))
    if kind == "mse":
        # the regularisers' pull on the estimate (its bias), linearised: -H^-1 grad L_reg at
        # the truth. The fit stands in for the truth, and is itself pulled: each further
        # evaluation is at the fit minus the previous estimate, b_(k+1) = b_1 + H^-1 H_reg b_k
        # with b_1 = -H^-1 grad L_reg(fit); after k of them a direction of eigenvalue lambda
        # has 1 - 1/(1 + lambda)^k of its bias (k = bias_steps; 2 is one twicing step).
        first = -h_inv(grad_reg)
        bias = first
        for _ in range(bias_steps - 1):
            bias = first + h_inv(h_reg @ bias)
        pull = q @ bias
        # the bias in the directions the data do not resolve, from the truth's spectrum
        # continued past the directions that they do (zero for a smooth truth)
        unseen, unseen_note = (_unresolved_spectrum(lam, u.T @ _solve_triangular(
            chol, grad_reg, lower=True), temperature) if unresolved else (None, ""))
        scale_note += unseen_note

    # pointwise std of every unknown
    mean, std, start = {}, {}, 0
    flat = jnp.asarray(model.flat[None], model.dtype)
    values = {k: v[0] for k, v in _values_of(problem, unknowns, flat)
              .items()}
    for name, shape in zip(model.names, model.shapes, strict=True):
        size = int(np.prod(shape))
        rows = q[start:start + size]
        w = _solve_triangular(chol, rows.T, lower=True)
        prior_var = np.sum(w**2, axis=0)
        b = rows @ lt_u
        if kind == "mse":  # the sandwich T H^-1 H_gn H^-1 plus the squared bias
            var = temperature * (b**2) @ (lam / (1.0 + lam) ** 2) + pull[start:start + size] ** 2
            if unseen is not None:
                var = var + (b**2) @ (unseen / (1.0 + lam) ** 2)
        else:
            var = variance * (prior_var - (b**2) @ d)
        std[name] = _outside_nan(problem, unknowns[name],
                                 np.sqrt(np.maximum(var, 0.0)).reshape(shape))
        mean[name] = np.asarray(values[name], np.float64).reshape(shape)
        start += size

    draws = None
    if samples:
        z = rng.standard_normal((n, samples))
        shrink = 1.0 - np.sqrt(scale / (scale + lam))
        z = z - u @ (shrink[:, None] * (u.T @ z))
        theta = model.flat[:, None] + math.sqrt(variance) * _solve_triangular(
            chol.T, z, lower=False)
        out = _values_of(problem, unknowns, jnp.asarray(theta.T, model.dtype))
        draws = {name: np.asarray(out[name]) for name in model.names}

    message = (f"Laplace: {len(lam)} eigenpairs of {n} parameters ({model.products} "
               f"Gauss-Newton products), effective parameters {p_eff:.1f}{scale_note}")
    if rank != "full" and k + oversampling < n and len(lam) and lam[-1] > 0.1:
        message += (f"; the smallest kept eigenvalue {lam[-1]:.3g} > 0.1: a larger rank "
                    "would still change the std")
    if newton > NEWTON_LIMIT:
        message += (
            f"; the unknowns are not at an optimum of the loss: one Newton step would move "
            f"them by {newton:.3g} posterior standard deviations, so the error bars are "
            "centred on the wrong point (fit first, or fit to a tighter `tol`)"
        )
    for f, level in noise.items():
        if level.source != "residual" and abs(level.estimate - level.sigma) > 3.0 * level.std:
            message += (
                f"; the fit's residual says the noise of {f!r} is {level.estimate:.3g}, not the "
                f"{level.sigma:.3g} used ({level.source}; more than 3 of the estimate's std "
                f"{level.std:.2g} apart): the error bars scale with it, and a weight chosen "
                "from that noise level may be off too"
            )
    cost = {"seconds": time.perf_counter() - start_time, "products": float(model.products)}
    return Uncertainty("laplace", mean, std, draws, len(lam), lam, noise, temperature, cost,
                       message, scale, newton)


UNRESOLVED_GROUP = 20
"""Directions per group when the truth's spectrum is estimated (`_unresolved_spectrum`)."""
UNRESOLVED_SIGNIFICANCE = 2.0
"""A group counts as resolved when its noise-corrected power exceeds this many standard
errors."""
UNRESOLVED_MIN_GROUPS = 3
"""Fewer resolved groups than this: no spectrum is fitted (the plug-in bias stands)."""


def _unresolved_spectrum(lam: np.ndarray, r: np.ndarray, temperature: float):
    """The expected squared size of the truth's component in each direction the data do
    not resolve, continued from those they do.

    In the prior-whitened eigenbasis of the misfit Hessian (eigenvalues `lam`), the fit's
    component is `w_hat_i = lam_i / (1 + lam_i) (w_i + n_i)` with `n_i ~ N(0, T / lam_i)`,
    and the estimator's bias there is `-w_i / (1 + lam_i)`. `r_i` (the whitened gradient
    of the regularisers at the fit) stands for `w_hat_i`, so `d_i = r_i (1 + lam_i) /
    lam_i` is the data's own estimate of `w_i`, with `E d_i^2 = w_i^2 + T / lam_i`.

    The directions, by decreasing `lam`, are taken in groups of `UNRESOLVED_GROUP`; a group
    whose noise-corrected power `m = mean(d^2) - mean(T / lam)` exceeds
    `UNRESOLVED_SIGNIFICANCE` of its standard error `sqrt(2 / G) (mean(T / lam) + m)`
    (chi-square) is resolved. With at least `UNRESOLVED_MIN_GROUPS` of them, a power law
    `log m = a + g log lam` is fitted to the resolved groups and continued to the
    directions below the smallest resolved `lam` (held at its level there when it would
    grow: the spectrum is not extrapolated upwards); directions no data see at all
    (`lam <= 1e-12 max lam`, the nugget's) and the resolved ones (whose bias the plug-in
    estimates) get 0. This is a self-similarity assumption: the truth's unresolved part is
    as rough as its resolved part says. A smooth truth's power falls below the noise within
    a group or two, and nothing is added.

    **Returns:** `(W, note)`: `W` per direction (`None` when no spectrum was fitted) and a
    phrase for the message.
    """
    order = np.argsort(-lam)
    big = float(lam.max()) if lam.size else 0.0
    seen = order[lam[order] > 1e-12 * big]
    if seen.size < UNRESOLVED_GROUP * UNRESOLVED_MIN_GROUPS:
        return None, ""
    ls, rs = lam[seen], r[seen]
    power = (rs * (1.0 + ls) / ls) ** 2
    noise = temperature / ls
    xs, ys, lows = [], [], []
    g = UNRESOLVED_GROUP
    for i in range(0, seen.size - g + 1, g):
        m = float(power[i:i + g].mean() - noise[i:i + g].mean())
        se = math.sqrt(2.0 / g) * (float(noise[i:i + g].mean()) + max(m, 0.0))
        if m > UNRESOLVED_SIGNIFICANCE * se:
            xs.append(float(np.log(ls[i:i + g]).mean()))
            ys.append(math.log(m))
            lows.append(float(ls[i:i + g].min()))
    if len(xs) < UNRESOLVED_MIN_GROUPS:
        return None, ""
    slope, level = np.polyfit(xs, ys, 1)
    lowest = min(lows)
    x = np.log(np.maximum(lam, 1e-300))
    if slope < 0:
        x = np.maximum(x, min(xs))
    spectrum = np.exp(level + slope * x)
    spectrum[(lam >= lowest) | (lam <= 1e-12 * big)] = 0.0
    note = (f"; the bias of {int(np.count_nonzero(spectrum))} unresolved directions "
            f"continued from {len(xs)} resolved groups (spectrum slope {slope:.2f})")
    return spectrum, note


def _outside_nan(problem: Problem, field, std: np.ndarray) -> np.ndarray:
    """`std` with NaN where the unknown's sub-grid lies outside the problem's domain: no
    term of the loss sees those values, so they have no error bar."""
    if problem.domain is None or not field.axes:
        return std
    inside = np.asarray(domain_on_axes(problem.domain, problem.grid, field.axes))
    return np.where(inside, std, np.nan)


def _check_kind(kind: str, prior_scale, bias_steps, where: str) -> tuple[float | str, int]:
    """`kind` and the options that apply to one kind only, checked (named errors):
    `prior_scale` (a float > 0 or `"evidence"`; the posterior's) and `bias_steps` (an
    integer >= 1; the mse bar's)."""
    if kind not in ("posterior", "mse"):
        raise UncertaintyError(f"{where}: `kind` must be 'posterior' or 'mse', got {kind!r}.")
    bad = f"{where}: `prior_scale` must be a number > 0 or 'evidence', got {prior_scale!r}."
    if isinstance(prior_scale, str):
        if prior_scale != "evidence":
            raise UncertaintyError(bad)
        value = prior_scale
    else:
        try:
            value = float(prior_scale)
        except (TypeError, ValueError):
            raise UncertaintyError(bad) from None
        if not (math.isfinite(value) and value > 0):
            raise UncertaintyError(bad)
    if kind == "mse" and value != 1.0:
        raise UncertaintyError(
            f"{where}: `prior_scale` {prior_scale!r} applies to kind='posterior'; the 'mse' "
            "error bar is that of the estimator that was fitted, with its own regularisers."
        )
    bias_steps = _int_at_least(bias_steps, 1, "bias_steps", where)
    if kind == "posterior" and bias_steps != 2:
        raise UncertaintyError(
            f"{where}: `bias_steps` applies to kind='mse' (the estimator's bias), not to the "
            f"posterior; got bias_steps={bias_steps} with kind='posterior'."
        )
    return value, bias_steps


def _resolved_rank(rank: int | str, n: int) -> int | str:
    """`rank="auto"`: every direction (`"full"`) up to `FULL_RANK_LIMIT` parameters, else
    `AUTO_RANK`; any other rank as given."""
    if rank == "auto":
        return "full" if n <= FULL_RANK_LIMIT else AUTO_RANK
    return rank


def _prior_scale(prior_scale: float | str, lam, energy: float, temperature_at):
    """`(s, note)`: the factor on the prior precision (`prior_scale` checked already).

    A number is used as given. `"evidence"` maximises the Laplace evidence of the prior
    `exp(-s E / T)` over `s`, with `E` the prior's energy at the fit (the regularisers'
    quadratic model plus the nugget's): its stationary point is MacKay's fixed point
    `2 s E / T = gamma(s) = sum lambda_i / (s + lambda_i)`, the number of directions the data
    determine. The eigenvalues are those of the fit's prior (`s = 1`); the fit itself is not
    redone."""
    if prior_scale == "evidence":
        if not (energy > 0 and math.isfinite(energy)) or not np.any(lam > 0):
            return 1.0, "; prior scale 1 (the evidence has no maximum: zero prior energy)"
        scale = 1.0
        for _ in range(100):
            gamma = float(np.sum(lam / (scale + lam)))
            new = min(max(gamma * temperature_at(gamma) / (2.0 * energy), 1e-8), 1e8)
            done = abs(math.log(new / scale)) < 1e-8
            scale = new
            if done:
                break
        return scale, f"; prior scale {scale:.3g} (evidence)"
    return prior_scale, "" if prior_scale == 1.0 else f"; prior scale {prior_scale:.3g}"


def _residual_noise(field, sigma, source, sum_sq, count, p_eff, n_obs) -> NoiseLevel:
    p_f = p_eff * count / max(n_obs, 1.0)
    dof = max(count - p_f, 1.0)
    est = math.sqrt(sum_sq / dof)
    return NoiseLevel(float(sigma), source, est, est / math.sqrt(2.0 * dof), dof)


# ----------------------------------------------------------------------------- ensemble
_LBFGS = optax.lbfgs()  # one object: repeated ensembles reuse the compiled batch


def ensemble(
    problem: Problem,
    fitted,
    sigma=None,
    *,
    draws: int = 20,
    key: jax.Array | None = None,
    optimiser: optax.GradientTransformation | None = None,
    steps: int = 300,
    chunk: int = 50,
    tol: float | None = 1e-8,
    batch: int = 10,
) -> Uncertainty:
    """A parametric bootstrap: refit on the fitted model's prediction plus fresh noise.

    For draws `b = 1..B`, each output-error data field `f` (fitted, evolved or solved) is
    replaced by `F_f(theta*) + sigma_f z_b` (`z_b` standard normal at every node, the masks
    kept), and the problem is refitted from `theta*` with the same weights (`fit_batch`:
    all draws at once, one compiled batch). The spread of the refits,

        std(v_i) = std over b of v_i(theta_b),

    estimates the estimator's sampling error at the noise level `sigma`: the frequentist
    counterpart of `laplace`. It excludes the estimator's bias and the prior's own variance
    (see the module docstring), and the weights are not chosen again for each draw.

    **Arguments:**

    - `problem`, `fitted`: as in `laplace`. The problem needs an output-error data term.
    - `sigma`: the noise standard deviation (a number, `{field: sigma_f}`, or None:
      `noise_sigma` of the observations).
    - `draws`: number of redraws `B` (>= 2); `key`: a `jax.random.PRNGKey` (default 0).
    - `optimiser` (default `optax.lbfgs()`), `steps`, `chunk`, `tol`: of each refit (as in
      `fit_batch`); `batch`: refits per `fit_batch` call (one compiled width; bounds the
      memory of the batch).

    **Returns:** an `Uncertainty` with `method="ensemble"`: `mean` and `std` over the
    completed refits, `samples` the refits, `rank` their number, the noise level with the
    mean and spread of `noise_sigma` over the redrawn data as its own estimate.
    """
    from ._batch import fit_batch

    where = "ensemble"
    start_time = time.perf_counter()
    _check_problem(problem, where)
    unknowns = _unknowns_of(fitted, where)
    draws = _int_at_least(draws, 2, "draws", where)
    batch = _int_at_least(batch, 1, "batch", where)
    problem.check(unknowns)
    prepared = problem.prepare(unknowns)
    fields = _observed(prepared, unknowns)
    if not fields:
        raise UncertaintyError(
            f"{where}: needs an output-error data term (a field that is fitted, evolved or "
            f"solved) to redraw; the data {sorted(problem.data)} are used directly."
        )
    sig, source = _sigmas(prepared, fields, sigma, where)
    key = jax.random.PRNGKey(0) if key is None else key
    predicted = prepared.grid_values(unknowns)
    stack, redrawn_sigma = {}, {f: [] for f in fields}
    keys = jax.random.split(key, len(fields))
    for f, k in zip(fields, keys, strict=True):
        pred = np.asarray(predicted[f], np.float64)
        z = np.asarray(jax.random.normal(k, (draws, *pred.shape), jnp.float64))
        mask = np.asarray(prepared.masks[f])
        data = np.where(mask, pred[None] + sig[f] * z, np.asarray(prepared.data[f])[None])
        stack[f] = data
        for b in range(draws):
            redrawn_sigma[f].append(noise_sigma({f: data[b]}, {f: mask})[f])
    opt = _LBFGS if optimiser is None else optimiser
    refits, ok, notes = [], [], []
    for first in range(0, draws, batch):
        part = {f: v[first:first + batch] for f, v in stack.items()}
        if len(next(iter(part.values()))) < batch:  # pad: one compiled batch width
            part = {f: np.concatenate([v, v[-1:].repeat(batch - len(v), 0)]) for f, v in
                    part.items()}
        res = fit_batch(problem, part, unknowns, opt, steps=steps, chunk=chunk, tol=tol)
        size = min(batch, draws - first)
        refits.append({k: np.asarray(v)[:size] for k, v in res.values.items()})
        ok.append(np.asarray(res.ok)[:size])
        if not np.all(ok[-1]):
            notes.append(res.summary())
    ok = np.concatenate(ok)
    values = {k: np.concatenate([r[k] for r in refits]) for k in refits[0]}
    if ok.sum() < 2:
        raise UncertaintyError(f"{where}: only {int(ok.sum())} of {draws} refits completed.")
    mean = {k: np.mean(v[ok], axis=0) for k, v in values.items()}
    std = {k: _outside_nan(problem, unknowns[k], np.std(v[ok], axis=0, ddof=1))
           if k in unknowns else np.std(v[ok], axis=0, ddof=1) for k, v in values.items()}
    samples = {k: np.asarray(v[ok]) for k, v in values.items()}
    noise = {
        f: NoiseLevel(sig[f], source, float(np.mean(redrawn_sigma[f])),
                      float(np.std(redrawn_sigma[f], ddof=1)), float("nan"))
        for f in fields
    }
    message = f"ensemble: {int(ok.sum())} of {draws} refits completed"
    if ok.sum() < draws:
        message += f" ({draws - int(ok.sum())} left out: {'; '.join(notes)})"
    cost = {"seconds": time.perf_counter() - start_time, "fits": float(draws)}
    return Uncertainty("ensemble", mean, std, samples, int(ok.sum()), np.zeros(0), noise,
                       float("nan"), cost, message, float("nan"))


# ----------------------------------------------------------------------------- command line
DENSE_LIMIT = 6000
FULL_RANK_LIMIT = 1500  # rank="auto": every direction up to this many parameters
AUTO_RANK = 200  # rank="auto" above it
"""Above this many parameters `run_outputs` does not run the Laplace approximation by
default (its prior precision is a dense `n x n` matrix)."""


def _count(unknowns) -> int:
    return sum(int(np.size(x)) for x in
               jax.tree_util.tree_leaves(eqx.filter(unknowns, eqx.is_inexact_array)))


def run_outputs(config, problem: Problem, result: FitResult, dataset,
                steps: int | None = None, *, folder):
    """The error bars of a `mollijax run`: `({"<unknown>_std": array}, figures, brief)`, the
    arrays for `fields.npz`, the figures as `(file name, draw(path))` pairs to draw later
    (one per unknown, `<unknown>_std.png`: the estimate with a 2-std band in 1-D, the std map
    beside the estimate in 2-D), and `brief`, what metrics.json says of them (`written`: the
    arrays' names; `note`: why there are none, or what to distrust); and, in `folder`,
    `uncertainty.json` (what was done, or why not).

    `config.uncertainty.method`: `"laplace"` or `"ensemble"` (on request), `"none"`, or
    `"auto"` (the default): Laplace when it costs less than the fit, counted in evaluations
    so that the same configuration and data always give the same outputs (a price in
    seconds would depend on the machine's load and on a warm compilation cache): its
    Gauss-Newton products (`n` with every direction kept, else `2 (rank + oversampling)`),
    each priced at one optimiser step, number fewer than `steps` (the run's optimiser
    steps: every stage and weight trial of an automatic run; default the final fit's), and
    the parameters number at most `DENSE_LIMIT`.
    Error bars are only as good as the point they are centred on: where Laplace finds the
    fit off an optimum of the loss (a Newton step longer than `NEWTON_LIMIT` posterior
    standard deviations, e.g. a fit stopped at its step cap), `"auto"` writes none and says
    why, and a requested `"laplace"` writes them marked untrusted (`"trusted": false`).
    A refusal of the estimate (an unsupported loss term, a singular prior) is recorded, not
    raised: the run's other outputs stand.
    """
    import json
    import pathlib

    options = getattr(config, "uncertainty", None)
    method = getattr(options, "method", "auto")
    asked = method
    rank = getattr(options, "rank", "auto")
    kind = getattr(options, "kind", "mse")
    draws = int(getattr(options, "draws", 20))
    folder = pathlib.Path(folder)
    record: dict = {"method": method}
    n = _count(result.unknowns) if result.unknowns is not None else 0
    rank = _resolved_rank(rank, n)
    # identity probes when every direction is kept, else a double pass
    products = n if rank == "full" or rank + 10 >= n else 2 * (rank + 10)
    budget = int(result.steps if steps is None else steps)
    record["products"], record["budget_steps"] = products, budget
    if method == "auto":
        if n == 0 or n > DENSE_LIMIT or products >= budget:
            record["skipped"] = (
                f"auto: {n} parameters (at most {DENSE_LIMIT}); Laplace's {products} "
                f"Gauss-Newton products, each about one optimiser step, not fewer than the "
                f"run's {budget} steps. "
                'Ask for it with [uncertainty] method = "laplace".'
            )
            method = "none"
        else:
            method = "laplace"
    arrays: dict = {}
    figures: list = []
    if method == "none" and asked == "none":
        record["skipped"] = 'none: [uncertainty] method = "none"'
    if method != "none":
        try:
            if method == "laplace":
                unc = laplace(problem, result, rank=rank, kind=kind)
            else:
                unc = ensemble(problem, result, draws=draws)
        except MollijaxError as e:
            record["skipped"] = f"{method}: {e}"
        else:
            record.update(unc.as_dict())
            record["fit_seconds"] = float(result.wall_time)
            off = bool(unc.newton_step > NEWTON_LIMIT)  # NaN (an ensemble): False
            record["trusted"] = not off
            if off and asked == "auto":
                record["skipped"] = (
                    f"auto: the fit is not at an optimum of its loss (one Newton step would "
                    f"move it by {unc.newton_step:.3g} posterior standard deviations, more "
                    f"than {NEWTON_LIMIT:g}; {result.message}): error bars about that point "
                    "would be centred on the wrong values. Fit longer or to a tighter tol, "
                    'or ask for them anyway with [uncertainty] method = "laplace".')
            else:
                mean, std = dict(unc.mean), dict(unc.std)
                _inclusions(problem, result, mean, std, record)
                arrays = {f"{k}_std": np.asarray(v) for k, v in std.items()}
                figures = [
                    (f"{name}_std.png", lambda path, name=name: _plot_std(
                        name, result.unknowns[name].axes, problem.grid, mean[name],
                        std[name], dataset.truth.get(name), path))
                    for name in std
                ]
    from ._run_folder import strict_json

    notes: dict = {}
    data = strict_json(record, "", notes)  # strict JSON, as metrics.json
    if notes:
        data["non_finite"] = notes
    (folder / "uncertainty.json").write_text(json.dumps(data, indent=2, allow_nan=False))
    if arrays:
        note = record["message"]  # with its warnings (a truncated spectrum, the noise)
        if not record["trusted"]:
            note = (f"NOT TRUSTED: the fit is not at an optimum (Newton step "
                    f"{record['newton_step']:.3g} posterior stds); {note}")
    else:
        note = record.get("skipped", "none")
    brief = {"method": record["method"] if arrays else "none", "written": sorted(arrays),
             "note": note}
    return arrays, figures, brief


def _inclusions(problem, result, mean: dict, std: dict, record: dict) -> None:
    """An `Inclusion` unknown's values are the posterior mean of its two-value field
    (`inclusion_posterior`), not the fitted field: its mean and std replace the Laplace
    ones of the fitted (blended) field, and the record says so."""
    from ._inclusion import Inclusion, inclusion_posterior

    for name, field in (result.unknowns or {}).items():
        if isinstance(field, Inclusion):
            mean[name], std[name] = inclusion_posterior(problem, result, name)
            why = ("the posterior mean and std of the two-value field at each node (each "
                   "value's spread, and near the interface the side's), in place of the "
                   "fitted field's")
            record.setdefault("inclusion", {})[name] = why
            record.setdefault("mean_std", {})[name] = float(np.mean(std[name]))
            record["message"] = f"{record.get('message', '')}; {name}: {why}"


def _plot_std(name, axes, grid, estimate, std, truth, path):
    """The estimate with its 2-std band (1-D), or the estimate beside its std map (2-D)."""
    from matplotlib.figure import Figure

    estimate, std = np.asarray(estimate), np.asarray(std)
    if estimate.ndim not in (1, 2):
        return None
    coords = [grid.coords(a) for a in axes]
    if estimate.ndim == 1:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.fill_between(coords[0], estimate - 2 * std, estimate + 2 * std, color="C0",
                        alpha=0.25, label="+- 2 std")
        ax.plot(coords[0], estimate, "C0-", label="recovered")
        if truth is not None:
            ax.plot(coords[0], truth, "k--", label="truth")
        ax.set_xlabel(axes[0])
        ax.set_ylabel(name)
        ax.legend()
    else:
        fig = Figure(figsize=(8.4, 3.6))
        ax = fig.subplots(1, 2)
        # the orientation of the run's other figures (`_plots.py`): values[i, j] sits at
        # (x_i, y_j), transposed so that the first axis runs right and the second up
        extent = [coords[0][0], coords[0][-1], coords[1][0], coords[1][-1]]
        for a, (title, values) in zip(ax, (("recovered", estimate), ("std", std)), strict=True):
            # a node no datum or regulariser reaches has the nugget's std: clip the scale
            top = float(np.percentile(values, 99)) if title == "std" else None
            im = a.imshow(values.T, origin="lower", extent=extent, aspect="auto", vmax=top)
            a.set_title(f"{name}: {title}")
            a.set_xlabel(axes[0])
            a.set_ylabel(axes[1])
            fig.colorbar(im, ax=a)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
