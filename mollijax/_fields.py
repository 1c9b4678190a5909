"""Representations of unknown fields: constants, grid values and networks, with constraints.

An unknown depends on a subset of the grid's axes (a diffusivity `D(x)` in a problem on
`(x, t)` depends on `"x"` only). `on_grid` evaluates it on that sub-grid and broadcasts to
the full grid; `at_point` evaluates it at one point, for autodiff derivatives.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._errors import GridMismatchError, MollijaxError, NonFiniteError, describe
from ._grid import Grid

CONSTRAINTS = ("free", "positive", "negative", "bounded")


class Constraint(eqx.Module):
    """Map from an unconstrained raw value to the admissible set.

    - `free`: identity (a negative diffusivity is legitimate: backward heat flow has D < 0);
    - `positive`: `softplus(raw)`; `negative`: `-softplus(raw)`;
    - `bounded`: `lower + (upper - lower) * sigmoid(raw)`.
    """

    kind: str = eqx.field(static=True)
    lower: float = eqx.field(static=True, default=0.0)
    upper: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if self.kind not in CONSTRAINTS:
            raise MollijaxError(
                f"Unknown constraint {self.kind!r}; expected one of {CONSTRAINTS}."
            )
        if self.kind == "bounded" and not self.lower < self.upper:
            raise MollijaxError(
                f"A bounded constraint needs lower < upper, got ({self.lower}, {self.upper})."
            )

    def __call__(self, raw):
        if self.kind == "positive":
            return jax.nn.softplus(raw)
        if self.kind == "negative":
            return -jax.nn.softplus(raw)
        if self.kind == "bounded":
            return self.lower + (self.upper - self.lower) * jax.nn.sigmoid(raw)
        return raw

    def inverse(self, value):
        """Raw value that maps to `value` (NumPy, for initialisation)."""
        v = np.asarray(value, dtype=np.float64)
        if self.kind in ("positive", "negative"):
            s = v if self.kind == "positive" else -v
            if np.any(s <= 0):
                raise MollijaxError(
                    f"Initial value {_offending(v, s <= 0)} violates the {self.kind} "
                    "constraint."
                )
            return np.where(s > 30, s, np.log(np.expm1(np.minimum(s, 30))))
        if self.kind == "bounded":
            outside = (v <= self.lower) | (v >= self.upper)
            if np.any(outside):
                raise MollijaxError(
                    f"Initial value {_offending(v, outside)} is outside the bounds "
                    f"({self.lower}, {self.upper})."
                )
            p = (v - self.lower) / (self.upper - self.lower)
            return np.log(p) - np.log1p(-p)
        return v


def _offending(v: np.ndarray, bad) -> str:
    """A number as itself; an array by how many of its entries are bad, and the first one
    (a grid of thousands of values is not printed)."""
    if v.ndim == 0:
        return f"{float(v)!r}"
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return (f"of shape {v.shape} ({int(bad.sum())} of {v.size} entries, the first "
            f"{float(v[first])!r} at index {first})")


def as_constraint(spec) -> Constraint:
    """`"free"`, `"positive"`, `"negative"`, `("bounded", lower, upper)` or a `Constraint`."""
    if isinstance(spec, Constraint):
        return spec
    if isinstance(spec, str):
        if spec == "bounded":
            raise MollijaxError(
                "The 'bounded' constraint needs its bounds: use ('bounded', lower, upper)."
            )
        return Constraint(spec)
    if isinstance(spec, Sequence) and len(spec) == 3 and spec[0] == "bounded":
        return Constraint("bounded", float(spec[1]), float(spec[2]))
    raise MollijaxError(
        f"Unknown constraint {spec!r}; expected 'free', 'positive', 'negative' or "
        "('bounded', lower, upper)."
    )


def _axes_tuple(axes) -> tuple[str, ...]:
    if isinstance(axes, str):
        return tuple(axes)
    return tuple(axes)


def _broadcast(values, grid: Grid, axes: tuple[str, ...]):
    """Broadcast an array over `axes` (in grid order) to the full grid."""
    idx = [grid.axis_index(a) for a in axes]
    shape = [grid.shape[i] if i in idx else 1 for i in range(grid.ndim)]
    return jnp.broadcast_to(values.reshape(shape), grid.shape)


def check_axes(axes: tuple[str, ...], grid: Grid, name: str) -> None:
    for a in axes:
        if a not in grid.axes:
            raise GridMismatchError(
                f"Unknown `{name}` depends on axis {a!r}, which the grid {grid.axes} lacks."
            )
    order = [grid.axes.index(a) for a in axes]
    if order != sorted(order) or len(set(order)) != len(order):
        raise GridMismatchError(
            f"Unknown `{name}`: axes {axes} must be distinct and in the grid's order {grid.axes}."
        )


class AbstractField(eqx.Module):
    """An unknown field: evaluated on a grid, or at one point for autodiff."""

    axes: eqx.AbstractVar[tuple[str, ...]]
    constraint: eqx.AbstractVar[Constraint]

    @abc.abstractmethod
    def on_subgrid(self, grid: Grid) -> Array:
        """Values on the sub-grid of `axes` (shape `grid.shape` restricted to `axes`)."""

    def on_grid(self, grid: Grid) -> Float[Array, "*grid"]:
        """Values at every node of `grid`, broadcast along axes the field does not use."""
        return _broadcast(self.on_subgrid(grid), grid, self.axes)

    def at_point(self, grid: Grid, index, x) -> Float[Array, ""]:
        """Value at node `index` (flat) with coordinates `x` (only smooth fields need `x`)."""
        raise NotImplementedError

    smooth: eqx.AbstractClassVar[bool]


class Constant(AbstractField):
    """A single unknown number (`axes=()`), optionally constrained."""

    raw: Float[Array, ""]
    constraint: Constraint
    axes: tuple[str, ...] = eqx.field(static=True)
    smooth: ClassVar[bool] = True

    def __init__(self, value: float, constraint="free"):
        self.constraint = as_constraint(constraint)
        self.raw = jnp.asarray(self.constraint.inverse(value))
        self.axes = ()

    @property
    def value(self) -> Float[Array, ""]:
        return self.constraint(self.raw)

    def on_subgrid(self, grid: Grid) -> Array:
        return self.value

    def at_point(self, grid, index, x):
        return self.value


class GridField(AbstractField):
    """An unknown given by its values on the nodes of the sub-grid of `axes`."""

    raw: Float[Array, ...]
    constraint: Constraint
    axes: tuple[str, ...] = eqx.field(static=True)
    smooth: ClassVar[bool] = False

    def __init__(self, values, axes: str | Sequence[str], constraint="free"):
        self.constraint = as_constraint(constraint)
        self.axes = _axes_tuple(axes)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != len(self.axes):
            raise GridMismatchError(
                f"GridField `values` must have one dimension per axis {self.axes}, got "
                f"{describe(values)}."
            )
        if not np.all(np.isfinite(values)):
            raise NonFiniteError("GridField `values` contains NaN or inf.")
        self.raw = jnp.asarray(self.constraint.inverse(values))

    def on_subgrid(self, grid: Grid) -> Array:
        expected = tuple(grid.shape[grid.axis_index(a)] for a in self.axes)
        if self.raw.shape != expected:
            raise GridMismatchError(
                f"GridField on axes {self.axes} has shape {self.raw.shape}; the grid needs "
                f"{expected}."
            )
        return self.constraint(self.raw)

    def at_point(self, grid, index, x):
        full = self.on_grid(grid).reshape(-1)
        return full[index]


class NetworkField(AbstractField):
    """An unknown `c(x) = constraint(offset + scale * net(xi))` of the coordinates on `axes`.

    `xi` is the point rescaled to `[-1, 1]` over the grid's extent on each axis, so networks
    see well-conditioned inputs whatever the physical units. `offset` is set from `init`,
    the value the field starts near when the network's output is small.

    **Arguments:**

    - `net`: any callable Module mapping `(len(axes),)` to a scalar (e.g. `MLP`).
    - `axes`: grid axis names the field depends on (`"x"`, `("x", "y")`, ...).
    - `constraint`: `"free"` (default), `"positive"`, `"negative"`, `("bounded", lo, hi)`.
    - `init`: starting value (default 0 for free fields, 1 for positive ones).
    - `scale`: multiplier of the network output in raw units.
    - `tile`: `None` (evaluate every node at once) or a number of nodes per tile: the grid
      is then evaluated `tile` nodes at a time with `jax.checkpoint` (`evaluate_tiled`), so
      the backward pass stores one tile of activations instead of all of them. Same values
      and gradients, one extra forward pass.
    """

    net: eqx.Module
    constraint: Constraint
    axes: tuple[str, ...] = eqx.field(static=True)
    offset: float = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    tile: int | None = eqx.field(static=True)
    smooth: ClassVar[bool] = True

    def __init__(
        self, net, axes, constraint="free", init: float | None = None, scale=1.0,
        tile: int | None = None,
    ):
        if tile is not None and (not isinstance(tile, int) or tile < 1):
            raise MollijaxError(f"`tile` must be None or a positive integer, got {tile!r}.")
        self.tile = tile
        self.net = net
        self.axes = _axes_tuple(axes)
        self.constraint = as_constraint(constraint)
        if init is None:
            init = {"free": 0.0, "positive": 1.0, "negative": -1.0}.get(
                self.constraint.kind, 0.5 * (self.constraint.lower + self.constraint.upper)
            )
        self.offset = float(self.constraint.inverse(init))
        self.scale = float(scale)

    def _scaled(self, grid: Grid, x):
        idx = [grid.axis_index(a) for a in self.axes]
        lo = np.array([grid.origin[i] for i in idx])
        hi = np.array([grid.origin[i] + (grid.shape[i] - 1) * grid.spacing[i] for i in idx])
        span = np.where(hi > lo, hi - lo, 1.0)
        return 2.0 * (x - jnp.asarray(lo, x.dtype)) / jnp.asarray(span, x.dtype) - 1.0

    def _value(self, xi):
        return self.constraint(self.offset + self.scale * self.net(xi))

    def on_subgrid(self, grid: Grid) -> Array:
        if not self.axes:
            return self._value(jnp.zeros((0,)))
        sub = Grid(
            tuple(grid.shape[grid.axis_index(a)] for a in self.axes),
            tuple(grid.spacing[grid.axis_index(a)] for a in self.axes),
            tuple(grid.origin[grid.axis_index(a)] for a in self.axes),
            self.axes,
        )
        if self.tile is not None:
            from ._sharding import evaluate_grid_tiled

            return evaluate_grid_tiled(lambda x: self._value(self._scaled(grid, x)), sub, self.tile)
        pts = self._scaled(grid, sub.points())
        return jax.vmap(self._value)(pts).reshape(sub.shape)

    def at_point(self, grid, index, x):
        idx = np.array([grid.axis_index(a) for a in self.axes], dtype=int)
        return self._value(self._scaled(grid, x[idx]))
