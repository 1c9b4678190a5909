"""What a residual function sees: named fields, derivatives and coordinates.

A residual is a plain Python function `residual(s)` of a `Scope` `s`. It reads fields by
name (`s.u`, `s["D"]`), takes derivatives with `s.d(f, "xx")` (or `s.lap`, `s.grad`), and
returns the residual field. The same function runs in two modes:

- grid mode: fields are arrays on the grid and `s.d` is a grid differentiator (a `Mollifier`
  by default), so `s.d(s.D * s.d(s.u, "x"), "x")` is the divergence form, one convolution per
  derivative;
- point mode (`derivatives="autodiff"` or `"taylor"`): fields are `PointField`s, functions of
  one point, and `s.d` differentiates them with nested autodiff (or Taylor mode), so the same
  expression is the textbook PINN residual.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import jet

from ._errors import MollijaxError
from ._grid import Grid
from ._multiindex import parse_multi_index

# names a field cannot take: `s.<name>` is a method or attribute of the scope
RESERVED = ("d", "lap", "grad", "div", "coord", "apply", "grid", "used")


class UnknownFieldError(MollijaxError, KeyError):
    """A residual or loss refers to a field name that the problem does not define."""

    def __str__(self):
        return str(self.args[0])


def _lift(value) -> PointField:
    if isinstance(value, PointField):
        return value
    const = value
    return PointField(lambda i, x: jnp.asarray(const, x.dtype), smooth=True)


class PointField:
    """A field as a function `f(index, x) -> scalar` of one node (flat `index`, coordinates `x`).

    Supports `+ - * / **` with other point fields and numbers. `smooth` is False for fields
    known only at nodes (data, grid unknowns): they can be multiplied but not differentiated.
    """

    __array_priority__ = 1000

    def __init__(self, fn: Callable, smooth: bool):
        self.fn = fn
        self.smooth = smooth

    def _binary(self, other, op, reverse=False):
        if isinstance(other, tuple):  # a `Vector`: it applies the operation per component
            return NotImplemented
        other = _lift(other)
        a, b = (other, self) if reverse else (self, other)
        return PointField(lambda i, x: op(a.fn(i, x), b.fn(i, x)), a.smooth and b.smooth)

    def __add__(self, o):
        return self._binary(o, jnp.add)

    def __radd__(self, o):
        return self._binary(o, jnp.add, True)

    def __sub__(self, o):
        return self._binary(o, jnp.subtract)

    def __rsub__(self, o):
        return self._binary(o, jnp.subtract, True)

    def __mul__(self, o):
        return self._binary(o, jnp.multiply)

    def __rmul__(self, o):
        return self._binary(o, jnp.multiply, True)

    def __truediv__(self, o):
        return self._binary(o, jnp.divide)

    def __rtruediv__(self, o):
        return self._binary(o, jnp.divide, True)

    def __pow__(self, p):
        return PointField(lambda i, x: self.fn(i, x) ** p, self.smooth)

    def __neg__(self):
        return PointField(lambda i, x: -self.fn(i, x), self.smooth)


def point_derivative(f: PointField, alpha: tuple[int, ...], taylor: bool, name: str) -> PointField:
    """`D^alpha f` by nested reverse-mode autodiff, or Taylor mode for unmixed `alpha`."""
    if not f.smooth:
        raise MollijaxError(
            f"Cannot differentiate {name} in point (autodiff) mode: it is known only at the "
            "grid nodes (data or a GridField). Use grid derivatives (a Mollifier) or "
            "represent it by a network."
        )
    nonzero = [a for a, o in enumerate(alpha) if o]
    if taylor and len(nonzero) == 1:
        axis, order = nonzero[0], alpha[nonzero[0]]

        def along(i, x):
            direction = jnp.zeros_like(x).at[axis].set(1.0)
            series = [direction] + [jnp.zeros_like(x)] * (order - 1)
            _, out = jet.jet(lambda y: f.fn(i, y), (x,), (series,))
            return out[order - 1]

        return PointField(along, True)
    g = f.fn
    for axis, order in enumerate(alpha):
        for _ in range(order):
            g = (lambda h, a: (lambda i, x: jax.grad(h, argnums=1)(i, x)[a]))(g, axis)
    return PointField(g, True)


class Vector(tuple):
    """The components of `Scope.grad` (a tuple, one per axis), with component-wise arithmetic,
    so that the divergence form reads as the equation: `s.div(s.k * s.grad(s.u))`.

    `a * v`, `v * a`, `v / a` scale every component by a field or number `a`; `v + w`,
    `v - w` add vectors of the same length; `-v` negates.
    """

    def __mul__(self, other):
        return Vector(c * other for c in self)

    def __rmul__(self, other):
        return Vector(other * c for c in self)

    def __truediv__(self, other):
        return Vector(c / other for c in self)

    def __neg__(self):
        return Vector(-c for c in self)

    def _pair(self, other, op):
        if not isinstance(other, tuple) or len(other) != len(self):
            raise MollijaxError(
                f"A vector of {len(self)} components can only be added to or subtracted "
                f"from another of {len(self)}, got {type(other).__name__}"
                + (f" of {len(other)}" if isinstance(other, tuple) else "") + "."
            )
        return Vector(op(a, b) for a, b in zip(self, other, strict=True))

    def __add__(self, other):
        return self._pair(other, lambda a, b: a + b)

    def __radd__(self, other):
        return self._pair(other, lambda a, b: b + a)

    def __sub__(self, other):
        return self._pair(other, lambda a, b: a - b)

    def __rsub__(self, other):
        return self._pair(other, lambda a, b: b - a)


jax.tree_util.register_pytree_node(Vector, lambda v: (tuple(v), None),
                                   lambda _, children: Vector(children))


class Scope:
    """Named fields, derivative operators and coordinates for one residual evaluation."""

    def __init__(self, grid: Grid, lookup: Callable, differentiator, mode: str):
        self._grid = grid
        self._lookup = lookup
        self._diff = differentiator
        self._mode = mode  # "grid", "autodiff" or "taylor"
        self.used: set[str] = set()

    @property
    def grid(self) -> Grid:
        return self._grid

    def __getitem__(self, name: str):
        value = self._lookup(name)
        self.used.add(name)
        return value

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    # ---------------------------------------------------------------- derivatives
    def d(self, f, alpha):
        """`D^alpha f`: `alpha` is a string of axis names (`"xx"`, `"t"`) or a tuple of orders."""
        parsed = parse_multi_index(alpha, self._grid)
        if self._mode == "grid":
            if isinstance(f, int | float) or np.ndim(f) == 0:
                return jnp.zeros(self._grid.shape) if sum(parsed) else f
            return self._diff(jnp.broadcast_to(f, self._grid.shape), parsed)
        return point_derivative(_lift(f), parsed, self._mode == "taylor", "this field")

    def lap(self, f, axes=None):
        """Laplacian over `axes` (default: all axes but one named "t")."""
        axes = [a for a in self._grid.axes if a != "t"] if axes is None else list(axes)
        out = 0.0
        for a in axes:
            out = out + self.d(f, a + a)
        return out

    def grad(self, f, axes=None) -> Vector:
        """`(d f / d a for a in axes)` (default: all axes but one named "t"), a `Vector`:
        `s.k * s.grad(s.u)` is the flux `k grad u`, component by component."""
        axes = [a for a in self._grid.axes if a != "t"] if axes is None else list(axes)
        return Vector(self.d(f, a) for a in axes)

    def div(self, flux, axes=None):
        """`sum_a d flux_a / d a` of one component per axis in `axes` (default: all axes but
        one named "t"), e.g. `s.div(s.k * s.grad(s.u))` for `div(k grad u)`."""
        axes = [a for a in self._grid.axes if a != "t"] if axes is None else list(axes)
        if not isinstance(flux, tuple | list) or len(flux) != len(axes):
            raise MollijaxError(
                f"`div` takes one flux component per axis {axes}, got "
                + (f"{len(flux)} components." if isinstance(flux, tuple | list)
                   else f"a {type(flux).__name__}.")
            )
        out = 0.0
        for a, f in zip(axes, flux, strict=True):
            out = out + self.d(f, a)
        return out

    def coord(self, axis: str):
        """The coordinate along `axis` as a field."""
        a = self._grid.axis_index(axis)
        if self._mode == "grid":
            return jnp.asarray(self._grid.mesh()[a])
        return PointField(lambda i, x: x[a], True)

    def apply(self, fn: Callable, *fields):
        """Apply an elementwise function (e.g. `jnp.exp`) to fields in either mode."""
        if self._mode == "grid":
            return fn(*fields)
        lifted = [_lift(f) for f in fields]
        return PointField(
            lambda i, x: fn(*(f.fn(i, x) for f in lifted)), all(f.smooth for f in lifted)
        )
