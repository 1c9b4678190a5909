"""Uniform N-D grids: a static, hashable description of where field values live."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._errors import GridMismatchError, NonUniformGridError, describe

_DEFAULT_AXES = ("x", "y", "z", "w")


@dataclasses.dataclass(frozen=True)
class Grid:
    """A uniform, node-centred grid in N dimensions.

    Node `i` along axis `a` sits at `origin[a] + i * spacing[a]`. A grid is static and
    hashable: it is safe as a static field of an `equinox.Module` and as a `jax.jit` static
    argument.

    **Arguments:**

    - `shape`: number of nodes along each axis.
    - `spacing`: distance `h_a` between neighbouring nodes along each axis (positive).
    - `origin`: coordinate of node 0 along each axis (default all zero).
    - `axes`: one-letter names of the axes, used in derivative strings such as `"xxt"`
      (default `"x", "y", "z", "w"`; a time axis is conventionally named `"t"`).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = ()
    axes: tuple[str, ...] = ()

    def __post_init__(self):
        shape = tuple(int(n) for n in np.atleast_1d(self.shape))
        ndim = len(shape)
        spacing = tuple(float(h) for h in np.broadcast_to(np.asarray(self.spacing), (ndim,)))
        origin = self.origin if len(self.origin) else (0.0,) * ndim
        origin = tuple(float(o) for o in np.broadcast_to(np.asarray(origin), (ndim,)))
        axes = tuple(self.axes) if len(self.axes) else _DEFAULT_AXES[:ndim]
        if ndim == 0:
            raise GridMismatchError("Grid `shape` must name at least one axis, got ().")
        if any(n < 1 for n in shape):
            raise GridMismatchError(f"Grid `shape` must be positive integers, got {shape}.")
        if any(not np.isfinite(h) or h <= 0 for h in spacing):
            raise GridMismatchError(f"Grid `spacing` must be positive and finite, got {spacing}.")
        if len(axes) != ndim:
            raise GridMismatchError(
                f"Grid `axes` must name each of the {ndim} axes, got {axes}."
            )
        if len(set(axes)) != ndim or any(len(a) != 1 for a in axes):
            raise GridMismatchError(
                f"Grid `axes` must be distinct single letters, got {axes}."
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "axes", axes)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_bounds(
        cls,
        shape: int | Sequence[int],
        lower: float | Sequence[float],
        upper: float | Sequence[float],
        *,
        periodic: bool | Sequence[bool] = False,
        axes: Sequence[str] = (),
    ) -> Grid:
        """Grid on the box `[lower, upper]` per axis.

        With `periodic=False` both ends are nodes (`h = (upper - lower) / (n - 1)`); with
        `periodic=True` the upper end is the image of the lower one and is not a node
        (`h = (upper - lower) / n`).
        """
        shape = tuple(int(n) for n in np.atleast_1d(shape))
        ndim = len(shape)
        lower = np.broadcast_to(np.asarray(lower, dtype=float), (ndim,))
        upper = np.broadcast_to(np.asarray(upper, dtype=float), (ndim,))
        periodic = np.broadcast_to(np.asarray(periodic, dtype=bool), (ndim,))
        if np.any(upper <= lower):
            raise GridMismatchError(
                f"Grid bounds need `upper > lower` on every axis, got lower={lower.tolist()}, "
                f"upper={upper.tolist()}."
            )
        spacing = tuple(
            (u - l) / (n if p else max(n - 1, 1))
            for n, l, u, p in zip(shape, lower, upper, periodic, strict=True)
        )
        return cls(shape, spacing, tuple(lower.tolist()), tuple(axes))

    @classmethod
    def from_coords(
        cls, *coords: Sequence[float] | np.ndarray, axes: Sequence[str] = (), rtol: float = 1e-6
    ) -> Grid:
        """Grid from 1-D coordinate arrays, one per axis; they must be uniformly spaced."""
        shape, spacing, origin = [], [], []
        for a, c in enumerate(coords):
            c = np.asarray(c, dtype=float)
            if c.ndim != 1 or c.size < 2:
                raise GridMismatchError(
                    f"`coords[{a}]` must be a 1-D array of at least 2 points, got {describe(c)}."
                )
            d = np.diff(c)
            h = float(np.mean(d))
            if h <= 0 or np.max(np.abs(d - h)) > rtol * abs(h):
                raise NonUniformGridError(
                    f"`coords[{a}]` must be uniformly increasing; its steps range from "
                    f"{d.min():.6g} to {d.max():.6g}."
                )
            shape.append(c.size)
            spacing.append(h)
            origin.append(float(c[0]))
        return cls(tuple(shape), tuple(spacing), tuple(origin), tuple(axes))

    # ----------------------------------------------------------------- properties
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def lengths(self) -> tuple[float, ...]:
        """Period lengths `n_a * h_a` (the extent of a periodic axis)."""
        return tuple(n * h for n, h in zip(self.shape, self.spacing, strict=True))

    def coords(self, axis: int | str) -> np.ndarray:
        """The 1-D node coordinates along `axis` (an index or an axis name)."""
        a = self.axis_index(axis)
        return self.origin[a] + self.spacing[a] * np.arange(self.shape[a])

    def mesh(self) -> tuple[np.ndarray, ...]:
        """Coordinate arrays of grid shape, one per axis (`indexing="ij"`)."""
        return tuple(np.meshgrid(*(self.coords(a) for a in range(self.ndim)), indexing="ij"))

    def points(self) -> Float[Array, "size ndim"]:
        """All nodes as a `(size, ndim)` array, in C order of the grid."""
        return jnp.stack([jnp.asarray(m).reshape(-1) for m in self.mesh()], axis=-1)

    def axis_index(self, axis: int | str) -> int:
        if isinstance(axis, str):
            if axis not in self.axes:
                raise GridMismatchError(f"Unknown axis name {axis!r}; this grid has {self.axes}.")
            return self.axes.index(axis)
        if not -self.ndim <= axis < self.ndim:
            raise GridMismatchError(f"Axis {axis} out of range for a {self.ndim}-D grid.")
        return axis % self.ndim

    def check(self, u, name: str = "u") -> None:
        """Raise `GridMismatchError` unless `u` has exactly this grid's shape."""
        shape = getattr(u, "shape", None)
        if shape is None or tuple(shape) != self.shape:
            raise GridMismatchError(
                f"`{name}` must have the grid's shape {self.shape}, got {describe(u)}."
            )
