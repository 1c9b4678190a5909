"""A data set on a grid: observations, masks, known fields and (optionally) the truth.

`Dataset` is validated once, when it is made: every array has the grid's shape (a truth has
the shape of the grid restricted to its unknown's axes), observations are finite wherever
their mask says they are observed, masks are boolean and belong to an observed field, and no
field is both observed and known. Everything downstream (`Problem`, the CLI, scoring) takes
it as correct.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping

import numpy as np
from jaxtyping import ArrayLike

from ._errors import GridMismatchError, MollijaxError, NonFiniteError, describe
from ._grid import Grid
from ._scope import RESERVED


def check_field_name(name: object, where: str) -> str:
    """`name` if it can name a field in a residual's scope; a `MollijaxError` otherwise."""
    if not isinstance(name, str) or not name.isidentifier():
        raise MollijaxError(f"{where}: a field name must be a Python identifier, got {name!r}.")
    if name in RESERVED or name.startswith("_"):
        raise MollijaxError(
            f"{where}: the field name {name!r} is reserved (the residual's `s.{name}` is a "
            f"method or private); reserved names are {RESERVED}. Rename the field."
        )
    return name


def _real(value, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise MollijaxError(f"`{where}` must be a real array, got dtype {arr.dtype}.")
    return arr.astype(np.float64)


def _on_grid(value, grid: Grid, where: str) -> np.ndarray:
    arr = _real(value, where)
    if arr.shape != grid.shape:
        raise GridMismatchError(
            f"`{where}` must have the grid's shape {grid.shape} (axes {grid.axes}), got "
            f"{describe(arr)}."
        )
    return arr


def check_domain(value, grid: Grid) -> np.ndarray:
    """A domain mask checked: a boolean (or 0/1, as a data file may hold it) array of the
    grid's shape with at least one node inside."""
    mask = np.asarray(value)
    if mask.dtype != bool and mask.shape == grid.shape and np.isin(mask, (0, 1)).all():
        mask = mask.astype(bool)
    if mask.shape != grid.shape or mask.dtype != bool:
        raise GridMismatchError(
            f"`domain` must be a boolean (or 0/1) array of the grid's shape {grid.shape}, got "
            f"{describe(mask)}."
        )
    if not mask.any():
        raise MollijaxError("`domain` is empty: no node of the grid is inside it.")
    return mask


def _sub_grid_shapes(grid: Grid) -> set[tuple[int, ...]]:
    """The shapes of `grid` restricted to each subset of its axes, in order."""
    axes = range(grid.ndim)
    return {tuple(grid.shape[a] for a in keep) for r in range(grid.ndim + 1)
            for keep in itertools.combinations(axes, r)}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Observations on a grid, with what is given and, for simulated data, the truth.

    **Arguments:**

    - `grid`: the `Grid` of the observations.
    - `data`: `{field: array of the grid's shape}`, the observed (noisy) fields.
    - `masks`: `{field: bool array of the grid's shape}`, True where `data[field]` is
      observed (default: everywhere). NaN or inf in data is an error unless masked out;
      masked nodes are set to 0.
    - `known`: `{field: array of the grid's shape}`, given fields (a source term).
    - `truth`: `{unknown: array}` on the unknown's own sub-grid (0-d for a constant), for
      scoring only; never used by a fit.
    - `clean`: the observed fields without noise (simulated data; for plots).
    - `params`: the parameters that made the data (simulators), for the record.
    - `domain`: a boolean array of the grid's shape, True inside the region where the
      equations hold and the data count (a nucleus in a field of view); None: the whole
      grid. A `Problem` built on the dataset uses it (see `Problem`'s `domain`).
    """

    grid: Grid
    data: Mapping[str, ArrayLike]
    masks: Mapping[str, ArrayLike] = dataclasses.field(default_factory=dict)
    known: Mapping[str, ArrayLike] = dataclasses.field(default_factory=dict)
    truth: Mapping[str, ArrayLike] = dataclasses.field(default_factory=dict)
    clean: Mapping[str, ArrayLike] = dataclasses.field(default_factory=dict)
    params: dict[str, object] = dataclasses.field(default_factory=dict)
    domain: ArrayLike | None = None

    def __post_init__(self):
        grid = self.grid
        if not isinstance(grid, Grid):
            raise MollijaxError(f"`grid` must be a mollijax.Grid, got {type(grid).__name__}.")
        for attr in ("data", "masks", "known", "truth", "clean", "params"):
            if not isinstance(getattr(self, attr), Mapping):
                raise MollijaxError(
                    f"`{attr}` must be a dict of name -> array, got "
                    f"{type(getattr(self, attr)).__name__}."
                )
        masks = {}
        for name, m in self.masks.items():
            if name not in self.data:
                raise MollijaxError(
                    f"`masks[{name!r}]` has no matching data; observed fields are "
                    f"{sorted(self.data)}."
                )
            m = np.asarray(m)
            if m.shape != grid.shape or m.dtype != bool:
                raise GridMismatchError(
                    f"`masks[{name!r}]` must be a boolean array of the grid's shape "
                    f"{grid.shape}, got {describe(m)}."
                )
            if not m.any():
                raise MollijaxError(f"`masks[{name!r}]` masks out every node: nothing is observed.")
            masks[name] = m
        data = {}
        for name, value in self.data.items():
            check_field_name(name, f"data[{name!r}]")
            arr = _on_grid(value, grid, f"data[{name!r}]")
            observed = masks.get(name, np.ones(grid.shape, bool))
            bad = ~np.isfinite(arr) & observed
            if bad.any():
                raise NonFiniteError(
                    f"`data[{name!r}]` has {int(bad.sum())} NaN or inf value(s) at observed "
                    "nodes; mask them out with `masks`."
                )
            data[name] = np.where(observed, arr, 0.0)
        known = {}
        for name, value in self.known.items():
            check_field_name(name, f"known[{name!r}]")
            if name in data:
                raise MollijaxError(f"Field {name!r} is both `known` and `data`; pick one.")
            arr = _on_grid(value, grid, f"known[{name!r}]")
            if not np.all(np.isfinite(arr)):
                raise NonFiniteError(f"`known[{name!r}]` contains NaN or inf.")
            known[name] = arr
        truth = {}
        for name, value in self.truth.items():
            arr = _real(value, f"truth[{name!r}]")
            if not np.all(np.isfinite(arr)):
                raise NonFiniteError(f"`truth[{name!r}]` contains NaN or inf.")
            if arr.shape not in _sub_grid_shapes(grid):
                raise GridMismatchError(
                    f"`truth[{name!r}]` has shape {arr.shape}; a truth lives on the grid "
                    f"{grid.shape} (axes {grid.axes}) or on the sub-grid of some of its axes, "
                    f"in order (e.g. {grid.shape[:1]} for {grid.axes[:1]}; () for a constant)."
                )
            truth[name] = arr
        clean = {}
        for name, value in self.clean.items():
            clean[name] = _on_grid(value, grid, f"clean[{name!r}]")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "known", known)
        object.__setattr__(self, "truth", truth)
        object.__setattr__(self, "clean", clean)
        object.__setattr__(self, "params", dict(self.params))
        if self.domain is not None:
            object.__setattr__(self, "domain", check_domain(self.domain, grid))

    def mask(self, name: str) -> np.ndarray:
        """The observation mask of `name` (all True when none was given)."""
        return self.masks.get(name, np.ones(self.grid.shape, bool))

    @property
    def complete(self) -> tuple[str, ...]:
        """The observed fields with no masked node (usable directly as fields)."""
        return tuple(n for n in self.data if n not in self.masks or bool(self.masks[n].all()))

    def replace(self, **changes) -> Dataset:
        """A copy with some attributes replaced (validated again)."""
        return dataclasses.replace(self, **changes)
