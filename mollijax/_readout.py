"""Pointwise read-out of a coefficient that enters a residual affinely, with its noise.

Where a residual is affine in a coefficient node by node,

    r(x) = A(x) c(x) + b(x),

the coefficient is read out without a fit, `c = -b / A`, from the problem's own residual
evaluated with `c = 0` (giving `b`) and `c = 1` (giving `A + b`). The read-out is only as good
as its denominator: where `A` is small against the noise that the data carries into `A` and
`b`, it is noise. `readout` propagates the data's noise to the read-out and masks the nodes
where its relative standard deviation is too large, so the threshold comes from the data,
not from a fixed constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._auto import noise_sigma
from ._errors import MollijaxError
from ._fields import AbstractField, Constant, GridField
from ._problem import Problem
from ._terms import Residual

_HINT = "a read-out needs r = A {n} + b node by node; fit {n!r} instead (mj.fit)."


class Readout(NamedTuple):
    """The result of `readout`: a coefficient read out node by node, with its error bar.

    - `values`: the read-out `c = -b / A` on the coefficient's sub-grid (its own axes; a
      0-d array for a `Constant`), NaN where not `valid`;
    - `std`: its standard deviation under the data's noise, to first order, at every node
      the residual reaches (`inf` where `A = 0`), NaN in the residual's margin;
    - `valid`: True where `A != 0` and `std <= max_rel_std * |values|`;
    - `A`, `b`: the residual's coefficient and offset, `r = A c + b`, on the full grid, NaN in
      the residual's margin (`problem.margin`).
    """

    values: Float[Array, "*sub"]
    std: Float[Array, "*sub"]
    valid: Bool[Array, "*sub"]
    A: Float[Array, "*grid"]
    b: Float[Array, "*grid"]


def _pick_residual(problem: Problem, residual: str | None) -> Residual:
    terms = {t.label: t for t in problem.terms if isinstance(t, Residual)}
    if not terms:
        raise MollijaxError("readout needs a problem with a residual; this one has none.")
    if residual is None:
        if len(terms) > 1:
            raise MollijaxError(
                f"readout: the problem has {len(terms)} residuals {sorted(terms)}; say which "
                "one the coefficient is read out of with `residual=`."
            )
        return next(iter(terms.values()))
    if residual not in terms:
        raise MollijaxError(
            f"readout: `residual` {residual!r} is not a residual of the problem; residuals "
            f"are {sorted(terms)}."
        )
    return terms[residual]


def _check_name(problem: Problem, unknowns: Mapping, name: str) -> AbstractField:
    if name not in unknowns:
        kind = ("a known field" if name in problem.known
                else "a data field" if name in problem.data else "not a field of the problem")
        raise MollijaxError(
            f"readout: {name!r} is {kind}, not an unknown; unknowns are {sorted(unknowns)}."
        )
    field = unknowns[name]
    if not isinstance(field, GridField | Constant):
        raise MollijaxError(
            f"readout: unknown {name!r} is a {type(field).__name__}; a read-out needs a "
            f"GridField or Constant unknown (values node by node), e.g. "
            f"mj.GridField(np.ones(shape), {field.axes!r})."
        )
    return field


def _fields_read(problem: Problem, unknowns, fn) -> set[str]:
    """The names the residual `fn` reads from its scope (traced abstractly, not run)."""
    used: set[str] = set()

    def trace(u):
        scope = problem._scope(u, problem.grid_values(u))
        fn(scope)
        used.update(scope.used)
        return 0.0

    eqx.filter_eval_shape(trace, unknowns)
    return used


def _noise_levels(problem: Problem, noisy: list[str], sigma) -> dict[str, float]:
    """`{field: sigma_f}` for the data fields the residual reads directly."""
    if sigma is None:
        return noise_sigma({n: problem.data[n] for n in noisy},
                           {n: problem.masks[n] for n in noisy})
    if isinstance(sigma, Mapping):
        extra = sorted(set(sigma) - set(noisy))
        missing = sorted(set(noisy) - set(sigma))
        if extra or missing:
            raise MollijaxError(
                f"readout: `sigma` must give the noise level of each data field the residual "
                f"reads, {noisy}; missing {missing}, not such a field {extra}."
            )
        table = dict(sigma)
    else:
        table = dict.fromkeys(noisy, sigma)
    for n, s in table.items():
        if not (isinstance(s, int | float | np.floating) and math.isfinite(s) and s >= 0):
            raise MollijaxError(
                f"readout: the noise level `sigma` of {n!r} must be a finite number >= 0, "
                f"got {s!r}."
            )
    return {n: float(s) for n, s in table.items()}


def _residual_at(problem: Problem, unknowns, name: str, free, fn, v) -> Array:
    """The residual `fn` on the interior with the unknown `name` replaced by `free` at `v`."""
    trial = dict(unknowns)
    trial[name] = eqx.tree_at(lambda f: f.raw, free, v)
    return problem._evaluation(trial, problem.grid_values(trial)).residual(fn)


@eqx.filter_jit
def _at_values(problem: Problem, unknowns, name: str, free, fn, vs) -> Array:
    """The residual at each coefficient value in the stack `vs` (one compilation per problem
    structure: the data are leaves, so other data reuse it)."""
    return jax.vmap(lambda v: _residual_at(problem, unknowns, name, free, fn, v))(vs)


@eqx.filter_jit
def _noise_variance(problem: Problem, unknowns, name: str, free, fn, point, A, keep, noisy,
                    levels, seed, samples: int) -> Array:
    """`E[(sum A dr)^2]` per coefficient node over noise draws: `dr` is the residual's jvp
    in the data fields `noisy` at the coefficient `point`, along white noise of standard
    deviation `levels`, `samples` draws (in batches, to bound the memory)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    data = {n: problem.data[n] for n in noisy}

    def r(d):
        return _residual_at(problem.with_data(d), unknowns, name, free, fn, point)

    def one(key):
        ks = jax.random.split(key, len(noisy))
        tangent = {n: levels[i].astype(data[n].dtype)
                   * jax.random.normal(ks[i], data[n].shape, data[n].dtype)
                   for i, n in enumerate(noisy)}
        _, dr = jax.jvp(r, (data,), (tangent,))
        return _sub_node_sums(A * dr, keep) ** 2

    return jnp.mean(jax.lax.map(one, keys, batch_size=min(samples, 16)), axis=0)


def readout(
    problem: Problem,
    unknowns: Mapping[str, AbstractField],
    name: str,
    *,
    residual: str | None = None,
    sigma: float | Mapping[str, float] | None = None,
    max_rel_std: float = 0.2,
    samples: int = 64,
    seed: int = 0,
) -> Readout:
    """Read the coefficient `name` out of a residual that is affine in it node by node.

    With the residual `r = A c + b` (the problem's own residual, through its own
    differentiator and margin, the other unknowns as given),

        b = r(c = 0),   A = r(c = 1) - r(c = 0),   c = -b / A  node by node,

    and for a coefficient on fewer axes than the grid (`D(x)` in a problem on `(x, t)`, or a
    `Constant`) the least-squares value over the residual nodes that share it,
    `c = -sum A b / sum A^2`.

    **The assumption is checked, not trusted:** `r(c = 2)` must equal `2 A + b`, and for a
    `GridField` `r` at a random field `c` must equal `A c + b`, to `10 sqrt(eps)` of
    `|A| max|c| + |b| + |r|` (plus its mean over the nodes, for round-off where all vanish). A
    coefficient that is not affine (`c**2`) or enters through a derivative (`d(D d u)`:
    changing `D` at one node changes `r` at its neighbours) raises a `MollijaxError`
    saying which.

    **Noise.** To first order the read-out's error is `dc = -dr / A` with `dr` the residual's
    response, at `c` fixed to the read-out, to the data's noise `dz` (`dr = db + c dA`: `A`
    and `b` are computed from the same data, so their covariance is included), hence

        std(c) = sqrt(E[dr^2]) / |A|   (sqrt(E[(sum A dr)^2]) / sum A^2 on a sub-grid).

    `E[dr^2]` is the mean over `samples` draws of white Gaussian noise of standard deviation
    `sigma_f` on each data field the residual reads, pushed through the linearised residual
    (`jax.jvp`, in batches of 16 draws). The exact variance, the row norms of the residual's
    Jacobian in the data, needs one reverse pass per node; the draws cost one forward pass
    each for any grid, and estimate the std to a relative error of about
    `1 / sqrt(2 samples)` (9 % for 64). Noise in fields represented by unknowns, or in
    `known` fields, is not included.

    **Masking.** A node is kept (`valid`) where `A != 0` and `std <= max_rel_std * |c|`.
    The default 0.2 keeps the nodes where the first-order std is still the read-out's
    spread: `-b / A` grows a heavy tail once the denominator's noise is a sizeable part of
    `A`, and `std(c) / |c| >= std(A) / |A|` (the denominator's noise is part of it), so
    bounding the first bounds the second. Past a relative std of about 0.2 the actual std
    outgrows the first-order one quickly (the interquartile spread still follows it). The
    threshold is relative to `|c|`: a coefficient that crosses zero is masked around the
    crossing (use `std` there). `std` is the noise's only: the derivatives' own bias
    (`O(eps^2)` for a `Mollifier`) is not in it.

    **Arguments:**

    - `problem`: a `Problem` without an `Evolution` or `Steady` state (their states depend
      on the unknowns, not on the data).
    - `unknowns`: `{name: field}`, as for `fit`; the other unknowns are used as given.
    - `name`: a `GridField` or `Constant` unknown.
    - `residual`: the residual's label when the problem has several.
    - `sigma`: the data's noise standard deviation, one number for every data field the
      residual reads or `{field: sigma_f}`; default `noise_sigma` of those fields.
    - `max_rel_std`: the largest relative standard deviation kept (`inf`: keep all nodes
      with `A != 0`).
    - `samples`, `seed`: the noise draws.

    **Returns:** a `Readout` (`values`, `std`, `valid`, `A`, `b`).

        >>> import mollijax as mj, numpy as np
        >>> grid = mj.Grid.from_bounds((33,), 0.0, 1.0, axes="x")
        >>> u = np.exp(grid.mesh()[0])
        >>> problem = mj.Problem(grid, lambda s: s.c * s.u - 2 * s.d(s.u, "x"), data={"u": u},
        ...                      derivatives=mj.FiniteDifference(grid))
        >>> out = mj.readout(problem, {"c": mj.GridField(np.ones(33), "x")}, "c", sigma=0.0)
        >>> float(np.nanmax(np.abs(out.values - 2.0))) < 1e-3
        True
        >>> int(out.valid.sum())  # all but the residual's margin, 2 nodes at each end
        29
    """
    if not isinstance(problem, Problem):
        raise MollijaxError(f"readout: `problem` must be a Problem, got {type(problem).__name__}.")
    problem._check_unknowns(unknowns)
    field = _check_name(problem, unknowns, name)
    term = _pick_residual(problem, residual)
    if problem.solved_names():
        raise MollijaxError(
            f"readout: the problem evolves or solves {list(problem.solved_names())}, whose "
            "values depend on the unknowns; read out of a Problem with the same residuals "
            "and data but no `evolution` or `steady`."
        )
    if not (isinstance(max_rel_std, int | float) and max_rel_std > 0):
        raise MollijaxError(f"readout: `max_rel_std` must be a number > 0, got {max_rel_std!r}.")
    if not (isinstance(samples, int) and samples >= 2):
        raise MollijaxError(f"readout: `samples` must be an integer >= 2, got {samples!r}.")
    problem = problem.prepare(unknowns)

    grid = problem.grid
    sub_shape = tuple(grid.shape[grid.axis_index(a)] for a in field.axes)
    keep = tuple(grid.axis_index(a) for a in field.axes)
    dtype = jnp.asarray(field.raw).dtype
    if isinstance(field, Constant):
        free = Constant(0.0)
    else:
        free = GridField(np.zeros(sub_shape), field.axes)
    read = _fields_read(problem, unknowns, term.fn)
    noisy = [n for n in problem.data if n in read and n not in unknowns]
    sig = _noise_levels(problem, noisy, sigma)

    # the residual at c = 0, 1, 2 and (for a GridField) a random field, in one batch
    ones = np.ones(sub_shape, dtype)
    trials = [0.0 * ones, ones, 2.0 * ones]
    if sub_shape:
        trials.append(np.random.default_rng(seed).uniform(0.5, 1.5, sub_shape).astype(dtype))
    rs = np.asarray(_at_values(problem, unknowns, name, free, term.fn, np.stack(trials)))
    b, A = rs[0], rs[1] - rs[0]
    rtol = 10 * math.sqrt(float(np.finfo(A.dtype).eps))

    def mismatch(got, v):
        scale = np.max(np.abs(v)) * np.abs(A) + np.abs(b) + np.abs(got)
        return np.abs(got - b - A * _broadcast_interior(v, A.shape, keep)) / np.maximum(
            scale + np.mean(scale), np.finfo(A.dtype).tiny)

    bad = float(np.max(mismatch(rs[2], trials[2])))
    if not bad <= rtol:
        raise MollijaxError(
            f"readout: residual {term.label!r} is not affine in {name!r}: r({name} = 2) "
            f"differs from 2 r({name} = 1) - r({name} = 0) by {bad:.2g} of its size; "
            + _HINT.format(n=name)
        )
    if sub_shape:
        err = mismatch(rs[3], trials[3])
        if not float(np.max(err)) <= rtol:
            evaluate = lambda vs: np.asarray(  # noqa: E731
                _at_values(problem, unknowns, name, free, term.fn, vs))
            raise _nonlocal_or_nonlinear(evaluate, trials[3], err, keep, term.label, name, rtol)
    if not np.any(A != 0):
        raise MollijaxError(
            f"readout: {name!r} does not enter residual {term.label!r} (A = 0 at every node)."
        )

    # the read-out: least squares over the residual nodes sharing a coefficient node (with a
    # `domain`, a Problem's residuals count only on its band: the other nodes get no weight)
    band = problem.band
    weight = A if band is None else np.where(np.broadcast_to(np.asarray(band), A.shape), A, 0.0)
    num = _sub_node_sums(weight * b, keep)
    den = _sub_node_sums(weight * A, keep)
    safe = np.where(den > 0, den, 1.0)
    c = np.where(den > 0, -num / safe, np.nan)

    # first-order noise: dc = -sum A dr / sum A^2, dr the linearised response to the noise
    names = tuple(n for n in sorted(sig) if sig[n] > 0)
    if names:
        point = _embed(np.where(np.isfinite(c), c, 0.0), problem.margin, keep, 0.0)
        levels = np.asarray([sig[n] for n in names], dtype)
        var = np.asarray(_noise_variance(problem, unknowns, name, free, term.fn, point, weight,
                                         keep, names, levels, np.asarray(seed), samples))
    else:
        var = np.zeros_like(den)
    std = np.where(den > 0, np.sqrt(var) / safe, np.inf)
    valid = (den > 0) & np.isfinite(c)
    if math.isfinite(max_rel_std):
        valid &= std <= max_rel_std * np.abs(c)
    full = tuple(range(grid.ndim))
    return Readout(
        values=jnp.asarray(_embed(np.where(valid, c, np.nan), problem.margin, keep, np.nan)),
        std=jnp.asarray(_embed(std, problem.margin, keep, np.nan)),
        valid=jnp.asarray(_embed(valid, problem.margin, keep, False)),
        A=jnp.asarray(_embed(A, problem.margin, full, np.nan)),
        b=jnp.asarray(_embed(b, problem.margin, full, np.nan)),
    )


def _sub_node_sums(x: np.ndarray | Array, keep: tuple[int, ...]):
    """Sum over the residual's axes that the coefficient does not depend on."""
    return x.sum(axis=tuple(a for a in range(x.ndim) if a not in keep))


def _broadcast_interior(v, shape: tuple[int, ...], keep: tuple[int, ...]) -> np.ndarray:
    """A coefficient `v` on its sub-grid, cropped and broadcast to the residual's interior."""
    v = np.asarray(v)
    if not keep:
        return v
    crop = tuple(slice((v.shape[k] - shape[a]) // 2, v.shape[k] - (v.shape[k] - shape[a]) // 2)
                 for k, a in enumerate(keep))
    full = [shape[a] if a in keep else 1 for a in range(len(shape))]
    return np.broadcast_to(v[crop].reshape(full), shape)


def _embed(x, margin: tuple[int, ...], keep: tuple[int, ...], fill) -> np.ndarray:
    """`x`, given on the interior along the axes `keep`, padded with `fill` by the margin."""
    x = np.asarray(x)
    if not keep:
        return x
    return np.pad(x, [(margin[a], margin[a]) for a in keep], constant_values=fill)


def _nonlocal_or_nonlinear(evaluate, v, err, keep, label, name, rtol) -> MollijaxError:
    """The error for `r(v) != A v + b` at a random field `v`: perturb `v` at the coefficient
    node of the worst residual node and see whether other residual nodes move."""
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    interior = tuple(int(worst[a]) for a in keep)
    node = tuple(i + (v.shape[k] - err.shape[a]) // 2
                 for k, (a, i) in enumerate(zip(keep, interior, strict=True)))
    bumped = v.copy()
    bumped[node] += 1.0
    r0, r1 = evaluate(np.stack([v, bumped]))
    scale = np.abs(r0) + np.abs(r1)
    moved = np.abs(r1 - r0) > rtol * (scale + np.mean(scale))
    same = np.ones(moved.shape, bool)
    for a, i in zip(keep, interior, strict=True):
        same &= (np.arange(moved.shape[a]) == i).reshape(
            [-1 if b == a else 1 for b in range(moved.ndim)])
    others = int(np.sum(moved & ~same))
    if others:
        return MollijaxError(
            f"readout: {name!r} does not enter residual {label!r} pointwise: changing it at "
            f"one node changes the residual at {others} other nodes (it enters through a "
            "derivative, e.g. d(D d u)); " + _HINT.format(n=name)
        )
    return MollijaxError(
        f"readout: residual {label!r} is not affine in {name!r}: at a random {name} it "
        f"differs from A {name} + b by {float(np.max(err)):.2g} of its size; "
        + _HINT.format(n=name)
    )
