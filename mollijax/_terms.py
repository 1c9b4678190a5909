"""Loss terms: small typed modules, each one scalar of a problem's loss.

A `Problem`'s loss is `L = sum_k w_k L_k`. Each term `L_k` is a module here, and its weight
`w_k` is a value (an array leaf), not a static setting: a sweep over weights reuses one
compiled fit, and `jax.vmap` can run it as a batch.

    term                name in the history   L_k
    DataMisfit(f)       data:f                mean over observed nodes of (f - f_obs)^2
    Residual(r)         residual:r            mean over the interior of r(s)^2 (with a
                                              domain: over its band)
    Condition(f, ...)   condition:<label>     mean over the selected nodes of (f - value)^2
    Tikhonov(u)         reg:u:tikhonov        mean(u^2)
    H1(u)               reg:u:smooth          sum_a mean((du/dx_a)^2)  (forward differences)
    Curvature(u)        reg:u:curvature       sum_a mean((d^2u/dx_a^2)^2)  (mixed: thin plate)
    ThirdDerivative(u)  reg:u:third           sum_a mean((d^3u/dx_a^3)^2)
    SquaredExponential  reg:u:se:<length>     p^T (K^-1 (x) ...) p / n, p = u minus its
      (u, length)                             affine part (a Gaussian-process prior)
    TV(u, delta)        reg:u:tv              mean(sqrt(|grad u|^2 + delta^2))

With a problem's `domain` (an irregular region of the grid) the observed nodes are those
inside it, and the regularisers' means run over the nodes and neighbour pairs inside it.

Terms are evaluated against an `Evaluation` (what one loss evaluation knows: the grid, every
field's values, the data and a residual evaluator), built by `Problem.loss_terms`.
"""

from __future__ import annotations

import abc
import math
import operator
from collections.abc import Callable, Mapping
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import GridMismatchError, MollijaxError, NonFiniteError, describe
from ._fields import AbstractField
from ._grid import Grid


def check_weight(value, where: str) -> Float[Array, ""]:
    """A loss weight as a 0-d array; negative, NaN or inf weights are errors naming `where`."""
    try:
        w = float(value)
    except jax.errors.ConcretizationTypeError:
        return value  # a traced weight (a sweep under vmap): its caller checks it
    except (TypeError, ValueError):
        raise MollijaxError(f"{where} must be a number, got {value!r}.") from None
    if not math.isfinite(w) or w < 0:
        raise MollijaxError(f"{where} must be a finite number >= 0, got {value!r}.")
    return jnp.asarray(w)


class Evaluation(eqx.Module):
    """What a term sees in one loss evaluation."""

    grid: Grid = eqx.field(static=True)
    unknowns: Mapping[str, AbstractField]
    values: Mapping[str, Array]  # every unknown (and evolved field) on the full grid
    data: Mapping[str, Array]
    masks: Mapping[str, Array]
    residual: Callable[[Callable], Array] = eqx.field(static=True)
    domain: Array | None = None  # the problem's domain on the full grid (None: all of it)
    band: Array | None = None  # where the residuals count, on their cropped interior

    def residual_in_band(self, fn: Callable) -> tuple[Array, Array]:
        """`(r, count)`: the residual `fn` on the interior, zero outside the domain's band,
        and the number of nodes that count (every interior node without a domain)."""
        r = self.residual(fn)
        if self.band is None:
            return r, jnp.asarray(float(r.size), r.dtype)
        band = jnp.broadcast_to(self.band, r.shape)
        return jnp.where(band, r, 0.0), jnp.maximum(jnp.sum(band.astype(r.dtype)), 1.0)


class AbstractTerm(eqx.Module):
    """One scalar of the loss, with its weight (a value)."""

    weight: eqx.AbstractVar[Float[Array, ""]]

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The key of this term in the loss history."""

    @property
    def kind(self) -> str:
        """`"data"`, `"residual"`, `"condition"` or `"reg"` (weights may be given per kind)."""
        return self.name.split(":", 1)[0]

    def active(self, unknowns: Mapping) -> bool:
        """Whether the term is part of the loss for these unknowns."""
        return True

    @abc.abstractmethod
    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        """The unweighted value `L_k`."""

    def with_weight(self, weight) -> AbstractTerm:
        weight = check_weight(weight, f"weight of {self.name!r}")
        return eqx.tree_at(lambda t: t.weight, self, weight)


class DataMisfit(AbstractTerm):
    """`mean over observed nodes of (f - f_obs)^2` for an observed field `f` that is fitted
    (an unknown) or evolved; inactive when `f` is used as data directly.

    `mollified=True` compares the mollified field `f * phi_eps` (the problem's differentiator
    at derivative order 0) with the data instead, on the residuals' interior (and the
    domain's band), as the mollifier-layers paper does: the field is then free to carry
    fine-scale detail that its mollified version, and so every mollified derivative, does
    not see."""

    field: str = eqx.field(static=True)
    weight: Float[Array, ""]
    mollified: bool = eqx.field(static=True)

    def __init__(self, field: str, weight=1.0, mollified: bool = False):
        if not isinstance(mollified, bool):
            raise MollijaxError(
                f"DataMisfit {field!r}: `mollified` must be True or False, got {mollified!r}."
            )
        self.field = field
        self.weight = check_weight(weight, f"weight of 'data:{field}'")
        self.mollified = mollified

    @property
    def name(self) -> str:
        return f"data:{self.field}"

    def misfit(self, ev: Evaluation) -> tuple[Array, Array]:
        """`(r, count)`: the misfit at every counted node (0 elsewhere) and their number."""
        if not self.mollified:
            mask = ev.masks[self.field]
            r = jnp.where(mask, ev.values[self.field] - ev.data[self.field], 0.0)
            return r, jnp.maximum(jnp.sum(mask.astype(r.dtype)), 1.0)
        zero = (0,) * ev.grid.ndim
        field = self.field
        smooth = ev.residual(lambda s: s.d(getattr(s, field), zero))
        crop = tuple(slice((n - m) // 2, (n - m) // 2 + m)
                     for n, m in zip(ev.grid.shape, smooth.shape, strict=True))
        mask = ev.masks[field][crop]
        if ev.band is not None:
            mask = mask & jnp.broadcast_to(ev.band, mask.shape)
        r = jnp.where(mask, smooth - ev.data[field][crop], 0.0)
        return r, jnp.maximum(jnp.sum(mask.astype(r.dtype)), 1.0)

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        r, count = self.misfit(ev)
        return jnp.sum(r**2) / count


class Residual(AbstractTerm):
    """`mean over the interior of r(s)^2` for a residual function `r` of a `Scope`."""

    fn: Callable = eqx.field(static=True)
    label: str = eqx.field(static=True)
    weight: Float[Array, ""]

    def __init__(self, fn: Callable, label: str = "pde", weight=1.0):
        if not callable(fn):
            raise MollijaxError(f"Residual {label!r}: `fn` must be a function r(s), got {fn!r}.")
        self.fn = fn
        self.label = str(label)
        self.weight = check_weight(weight, f"weight of 'residual:{label}'")

    @property
    def name(self) -> str:
        return f"residual:{self.label}"

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        r, count = ev.residual_in_band(self.fn)
        return jnp.sum(r**2) / count


def domain_on_axes(domain: ArrayLike, grid: Grid, axes: tuple[str, ...]) -> Array:
    """A domain (bool, the grid's shape) on the sub-grid of `axes`, in their order: a node of
    the sub-grid is inside when some node of the full grid above it is."""
    keep = [grid.axis_index(a) for a in axes]
    other = tuple(i for i in range(grid.ndim) if i not in keep)
    inside = jnp.any(domain, axis=other) if other else domain
    # what is left follows the grid's axis order; the sub-grid follows `axes`
    rank = np.argsort(np.argsort(keep))
    return jnp.transpose(inside, rank) if inside.ndim > 1 else inside


def _pairs(inside: Array, k: int) -> Array:
    """The neighbour pairs along axis `k` with both nodes inside (the shape of a forward
    difference along `k`)."""
    n = inside.shape[k]
    return (jax.lax.slice_in_dim(inside, 0, n - 1, axis=k)
            & jax.lax.slice_in_dim(inside, 1, n, axis=k))


class _Penalty(AbstractTerm):
    """A penalty on one unknown's values on its own sub-grid."""

    unknown: eqx.AbstractVar[str]
    kind_name: eqx.AbstractClassVar[str]

    @property
    def name(self) -> str:
        return f"reg:{self.unknown}:{self.kind_name}"

    def _gradients(self, ev: Evaluation, *, common: bool = False) -> list[Array]:
        """Forward difference quotients of the unknown along each of its axes, each on its
        own shape (`n_a - 1` along its axis, full along the others), so that every node
        enters some difference. `common=True`: each padded with a zero slab at the end of its
        axis to the unknown's shape (the Neumann condition of the usual discrete gradient),
        for terms that combine the components node by node."""
        field, v = self._subgrid(ev)
        inside = self._inside(ev)
        grads = []
        for k, axis in enumerate(field.axes):
            h = ev.grid.spacing[ev.grid.axis_index(axis)]
            g = jnp.diff(v, axis=k) / h
            if inside is not None:  # a difference counts when both its nodes are inside
                g = jnp.where(_pairs(inside, k), g, 0.0)
            if common:
                pad = [(0, 0)] * v.ndim
                pad[k] = (0, 1)
                g = jnp.pad(g, pad)
            grads.append(g)
        return grads

    def _subgrid(self, ev: Evaluation) -> tuple[AbstractField, Array]:
        """The unknown and its values on its sub-grid; a constant has nothing to penalise."""
        field = ev.unknowns[self.unknown]
        if not field.axes:
            raise MollijaxError(
                f"Regulariser {self.kind_name!r} on {self.unknown!r} does nothing: it is a "
                "constant."
            )
        return field, field.on_subgrid(ev.grid)

    def _inside(self, ev: Evaluation) -> Array | None:
        """The problem's domain on the unknown's sub-grid, or None without a domain."""
        if ev.domain is None:
            return None
        return domain_on_axes(ev.domain, ev.grid, ev.unknowns[self.unknown].axes)

    def _mean(self, values: Array, ev: Evaluation) -> Array:
        """Mean over the sub-grid's nodes inside the domain (all of them without one)."""
        return _masked_mean(values, self._inside(ev))

    def _pure(self, ev: Evaluation, order: int) -> Array:
        """`sum_a mean((d^order u / dx_a^order)^2)`: the squared difference quotients of
        `order` along each axis, over the nodes whose stencil lies inside the domain (axes
        shorter than `order + 1` nodes contribute nothing)."""
        field, v = self._subgrid(ev)
        inside = self._inside(ev)
        total = jnp.zeros((), v.dtype)
        for k, axis in enumerate(field.axes):
            if v.shape[k] < order + 1:
                continue
            h = ev.grid.spacing[ev.grid.axis_index(axis)]
            g = jnp.diff(v, n=order, axis=k) / h**order
            ok = inside
            if ok is not None:
                for _ in range(order):
                    ok = _pairs(ok, k)
            total = total + _masked_mean(g**2, ok)
        return total

    def _pair_mean(self, g: Array, k: int, ev: Evaluation) -> Array:
        """Mean of `g` (differences along axis `k`) over the pairs inside the domain."""
        inside = self._inside(ev)
        return _masked_mean(g, None if inside is None else _pairs(inside, k))


class Tikhonov(_Penalty):
    """`mean(u^2)` over the unknown's sub-grid."""

    unknown: str = eqx.field(static=True)
    weight: Float[Array, ""]
    kind_name: ClassVar[str] = "tikhonov"

    def __init__(self, unknown: str, weight=1.0):
        self.unknown = unknown
        self.weight = check_weight(weight, f"weight of 'reg:{unknown}:tikhonov'")

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        return self._mean(ev.unknowns[self.unknown].on_subgrid(ev.grid) ** 2, ev)


class H1(_Penalty):
    """The H1 seminorm `sum_a mean((du/dx_a)^2)`: for each axis `a` the mean of the squared
    forward difference quotients along it, over every pair of neighbours on the sub-grid
    (all `(n_a - 1) prod_(b != a) n_b` of them, so every node is reached)."""

    unknown: str = eqx.field(static=True)
    weight: Float[Array, ""]
    kind_name: ClassVar[str] = "smooth"

    def __init__(self, unknown: str, weight=1.0):
        self.unknown = unknown
        self.weight = check_weight(weight, f"weight of 'reg:{unknown}:smooth'")

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        return sum(self._pair_mean(g**2, k, ev) for k, g in enumerate(self._gradients(ev)))


class Curvature(_Penalty):
    """A second-derivative (curvature) seminorm: the mean over the sub-grid of the squared
    second difference quotients along each axis,

        sum_a mean((d^2 u / dx_a^2)^2)                       (mixed=False, default)
        sum_{a, b} mean((d^2 u / dx_a dx_b)^2)               (mixed=True: thin-plate energy)

    each pure term over every interior node of each line, each mixed term (forward
    differences along both axes, every cell) counted twice for `a != b`. With `mixed` it is
    the Frobenius norm of the Hessian (the H2 seminorm, rotation invariant, null space: the
    affine functions); without, its null space also holds the products of affine functions
    of single axes (`x y`). Unlike `H1` neither pulls a linear trend towards a constant: for
    smooth coefficients the bias is of higher order at the same variance. Tuning draws 0-2
    of darcy2d smooth and the plate at 5 % noise (ad hoc, while choosing `auto_run`'s
    default): without the mixed term 2.3 % and 2.7 % mean error, with it 2.7 % and 3.1 %."""

    unknown: str = eqx.field(static=True)
    weight: Float[Array, ""]
    mixed: bool = eqx.field(static=True)
    kind_name: ClassVar[str] = "curvature"

    def __init__(self, unknown: str, weight=1.0, mixed: bool = False):
        if not isinstance(mixed, bool):
            raise MollijaxError(f"Curvature on {unknown!r}: `mixed` must be True or False, "
                                f"got {mixed!r}.")
        self.unknown = unknown
        self.weight = check_weight(weight, f"weight of 'reg:{unknown}:curvature'")
        self.mixed = mixed

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        field, v = self._subgrid(ev)
        inside = self._inside(ev)
        spacing = [ev.grid.spacing[ev.grid.axis_index(a)] for a in field.axes]
        total = self._pure(ev, 2)
        pairs = [(k, j) for k in range(v.ndim) for j in range(k + 1, v.ndim)] if self.mixed else []
        for k, j in pairs:
            g = jnp.diff(jnp.diff(v, axis=k), axis=j) / (spacing[k] * spacing[j])
            ok = None if inside is None else _pairs(_pairs(inside, k), j)
            total = total + 2.0 * _masked_mean(g**2, ok)
        return total


class ThirdDerivative(_Penalty):
    """A third-derivative seminorm: `sum_a mean((d^3 u / dx_a^3)^2)`, the mean over each
    line's interior nodes of the squared third difference quotients along each axis. Its null
    space holds the quadratics of each axis (in 1-D: the quadratic functions), so beside
    `Curvature` it describes smoother coefficients: the prior `w (Curvature + a length^2
    ThirdDerivative)` has the curvature prior's null space for every `a >= 0` and becomes
    smoother as `a` grows, which is what `auto_run` lets the marginal likelihood choose
    (`PRIOR_MIX` in `mollijax._build`)."""

    unknown: str = eqx.field(static=True)
    weight: Float[Array, ""]
    kind_name: ClassVar[str] = "third"

    def __init__(self, unknown: str, weight=1.0):
        self.unknown = unknown
        self.weight = check_weight(weight, f"weight of 'reg:{unknown}:third'")

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        return self._pure(ev, 3)


# relative nugget of the squared-exponential prior's kernel along each axis (see below)
SE_NUGGET = 1e-6


class SquaredExponential(_Penalty):
    """The quadratic form of a squared-exponential (Gaussian-process) prior with the
    curvature prior's null space,

        R(u) = p^T (K_1^-1 (x) ... (x) K_d^-1) p / n,    p = u - A u,

    on the unknown's `n` sub-grid nodes: `K_a[i, j] = exp(-(x_i - x_j)^2 / (2 length^2))
    + nugget` along axis `a` (the nugget `SE_NUGGET` times its largest eigenvalue, which
    keeps the inverse finite: the kernel's eigenvalues fall faster than exponentially), `A`
    the orthogonal projector onto the products of affine functions of single axes (in 1-D:
    the affine functions), which the prior leaves flat as `Curvature` does. With weight `w`
    the prior `exp(-w R / 2)` is a Gaussian process of variance `n / w` and correlation
    length `length` (coordinate units) about an unpenalised affine trend: its sample paths
    are analytic, smoother than any finite-order difference prior's. Where the evidence is
    compared across priors (`mix_evidence`'s `alternatives`) the shared null space keeps the
    comparison free of the flat prior's scale.

    Every node of the sub-grid counts (a problem's domain does not restrict it). The
    matrices are built in NumPy from the grid's coordinates when the term is traced."""

    unknown: str = eqx.field(static=True)
    weight: Float[Array, ""]
    length: float = eqx.field(static=True)
    kind_name: ClassVar[str] = "se"

    def __init__(self, unknown: str, weight=1.0, length: float = 0.2):
        if not (isinstance(length, int | float) and not isinstance(length, bool)
                and length > 0 and math.isfinite(length)):
            raise MollijaxError(f"SquaredExponential on {unknown!r}: `length` must be a number "
                                f"> 0 (coordinate units), got {length!r}.")
        self.unknown = unknown
        self.weight = check_weight(weight, f"weight of 'reg:{unknown}:se'")
        self.length = float(length)

    @property
    def name(self) -> str:
        from ._names import se_key

        return f"reg:{self.unknown}:{se_key(self.length)}"

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        field, v = self._subgrid(ev)
        factors = [_se_factors(ev.grid.coords(a), self.length) for a in field.axes]
        flat = v
        for k, (basis, _) in enumerate(factors):  # A u: project every axis onto its affines
            flat = _along(basis @ basis.T, flat, k)
        p = v - flat
        q = p
        for k, (_, inverse) in enumerate(factors):
            q = _along(inverse, q, k)
        return jnp.sum(p * q) / v.size


def _se_factors(x: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis: an orthonormal basis of the affine functions on nodes `x`, and the
    inverse of the squared-exponential kernel with its relative nugget `SE_NUGGET`."""
    x = np.asarray(x, np.float64)
    kernel = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2.0 * length**2))
    lam, vec = np.linalg.eigh(kernel)
    lam = np.maximum(lam, 0.0) + SE_NUGGET * lam.max()
    inverse = (vec / lam) @ vec.T
    cols = [np.ones_like(x)] + ([x - x.mean()] if x.size > 1 else [])
    basis, _ = np.linalg.qr(np.stack(cols, axis=1))
    return basis, inverse


def _along(matrix: np.ndarray, values: Array, axis: int) -> Array:
    """`matrix` applied along `axis` of `values` (a mode-`axis` product)."""
    m = jnp.asarray(matrix, values.dtype)
    return jnp.moveaxis(jnp.tensordot(m, values, axes=([1], [axis])), 0, axis)


def _masked_mean(values: Array, ok: Array | None) -> Array:
    """Mean of `values` where `ok` (a boolean mask of their shape; everywhere if None)."""
    if ok is None:
        return jnp.mean(values)
    w = ok.astype(values.dtype)
    return jnp.sum(w * values) / jnp.maximum(jnp.sum(w), 1.0)


class TV(_Penalty):
    """Smoothed total variation `mean(sqrt(|grad u|^2 + delta^2))` (edge-preserving), the
    mean over every node of the sub-grid, with the forward-difference gradient taken as 0
    across the far end of each axis (the usual discrete gradient with a Neumann end)."""

    unknown: str = eqx.field(static=True)
    weight: Float[Array, ""]
    delta: float = eqx.field(static=True)
    kind_name: ClassVar[str] = "tv"

    def __init__(self, unknown: str, weight=1.0, delta: float = 1e-6):
        if not (isinstance(delta, int | float) and delta > 0 and math.isfinite(delta)):
            raise MollijaxError(f"TV on {unknown!r}: `delta` must be a number > 0, got {delta!r}.")
        self.unknown = unknown
        self.weight = check_weight(weight, f"weight of 'reg:{unknown}:tv'")
        self.delta = float(delta)

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        sq = sum(g**2 for g in self._gradients(ev, common=True))
        return self._mean(jnp.sqrt(sq + self.delta**2), ev)


def Regulariser(unknown: str, kind: str, weight=1.0, **options) -> AbstractTerm:
    """The regulariser named `kind` (`"tikhonov"`, `"smooth"`, `"curvature"`, `"third"`,
    `"se"`, `"tv"`) on `unknown`: `Tikhonov`, `H1`, `Curvature`, `ThirdDerivative`,
    `SquaredExponential` or `TV` from the table of names."""
    from ._names import from_name

    return from_name("regulariser", kind, unknown, weight, **options)


def regulariser_from_key(unknown: str, key: str, weight=1.0) -> AbstractTerm:
    """The regulariser a configuration key names: a kind (`"curvature"`), or
    `"se:<length>"` for `SquaredExponential` of that length (its term's name then ends in
    the same key, `reg:<unknown>:se:<length>`)."""
    kind, _, option = key.partition(":")
    if kind == "se" and option:
        try:
            length = float(option)
        except ValueError:
            raise MollijaxError(f"Regulariser key {key!r} on {unknown!r}: expected "
                                f"'se:<length>' with a number > 0, got {option!r}.") from None
        return SquaredExponential(unknown, weight, length=length)
    return Regulariser(unknown, key, weight)


class Condition(AbstractTerm):
    """A boundary or initial condition `f = value` on part of the grid, as a loss term
    `mean over the selected nodes of (f - value)^2` (an `Evolution` imposes it exactly
    instead, on the fields it evolves).

    **Arguments:**

    - `field`: name of the field it constrains.
    - `where`: `{"t": 0}` (node 0 along axis t; several axes allowed, negative indices too)
      or a boolean mask of the grid's shape.
    - `value`: number or array broadcastable to the selected nodes.
    - `name`: label in the loss history (default `"<field>@<where>"`).
    - `weight`: its loss weight (default 1).
    """

    field: str = eqx.field(static=True)
    index: tuple = eqx.field(static=True)
    mask: Array | None
    value: Array
    label: str = eqx.field(static=True)
    weight: Float[Array, ""]

    def __init__(self, field: str, where, value, name: str | None = None, weight=1.0):
        self.field = field
        if isinstance(where, Mapping):
            try:
                self.index = tuple(sorted((str(k), operator.index(v)) for k, v in where.items()))
            except TypeError:
                raise MollijaxError(
                    f"Condition on {field!r}: `where` must map axis names to integer node "
                    f"indices, got {dict(where)!r}."
                ) from None
            self.mask = None
            label = ",".join(f"{k}={v}" for k, v in self.index)
        else:
            where = np.asarray(where)
            if where.dtype != bool:
                raise MollijaxError(
                    f"Condition on {field!r}: `where` must be a dict {{axis: index}} or a "
                    f"boolean mask, got {describe(where)}."
                )
            self.index = ()
            self.mask = jnp.asarray(where)
            label = "mask"
        value = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(f"Condition on {field!r}: `value` contains NaN or inf.")
        self.value = jnp.asarray(value)
        self.label = name or f"{field}@{label}"
        self.weight = check_weight(weight, f"weight of 'condition:{self.label}'")

    @property
    def name(self) -> str:
        return f"condition:{self.label}"

    def select(self, values: Array | np.ndarray,
               grid: Grid) -> tuple[Array | np.ndarray, Array | None]:
        """The constrained nodes of `values` (or all of them and the mask; NumPy in, NumPy
        out)."""
        if self.mask is not None:
            if self.mask.shape != grid.shape:
                raise GridMismatchError(
                    f"Condition {self.label!r}: mask must have the grid's shape {grid.shape}, "
                    f"got {self.mask.shape}."
                )
            return values, self.mask
        idx: list = [slice(None)] * grid.ndim
        for axis, i in self.index:
            a = grid.axis_index(axis)
            if not -grid.shape[a] <= i < grid.shape[a]:
                raise GridMismatchError(
                    f"Condition {self.label!r}: index {i} out of range for axis {axis!r} of "
                    f"size {grid.shape[a]}."
                )
            idx[a] = i
        return values[tuple(idx)], None

    def loss(self, values: Array, grid: Grid) -> Float[Array, ""]:
        """The mean squared violation on `values` (the field on the full grid)."""
        selected, mask = self.select(values, grid)
        err = (selected - self.value.astype(selected.dtype)) ** 2
        if mask is None:
            return jnp.mean(err)
        count = jnp.maximum(jnp.sum(mask.astype(err.dtype)), 1.0)
        return jnp.sum(jnp.where(mask, err, 0.0)) / count

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        return self.loss(ev.values[self.field], ev.grid)
