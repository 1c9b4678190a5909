"""Loading user data onto a grid: .npz (named arrays), .npy and TIFF stacks.

`load_array(path, name)` reads one array; `load_dataset(data, module, base)` reads every
field a `[data] source = "file"` table names, builds the `Grid` from the data's shape and the
configured spacing, origin and axes, and checks them: NaN or inf only where masked out, one
dimension per axis, and every field of the same shape (a `GridMismatchError` or
`NonFiniteError` naming the field otherwise). The result is a `Dataset` whose `truth` holds
whatever true unknowns the user supplied (often none).
"""

from __future__ import annotations

import os
import pathlib
import types
from collections.abc import Mapping

import numpy as np

from ._checkpoint import (
    HistoryLog as HistoryLog,  # the append-only loss history beside a checkpoint
    read_header as read_header,  # the verified JSON header of a file the project wrote
)
from ._dataset import Dataset
from ._errors import GridMismatchError, MollijaxError, NonFiniteError, describe
from ._grid import Grid
from ._problem_files import problem_name

SUFFIXES = (".npz", ".npy", ".tif", ".tiff")


class DataFileError(MollijaxError):
    """A data file is missing, of an unsupported kind, or lacks the named array."""


def load_array(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """One real array from `path`: `name` selects an array of an .npz; .npy and TIFF files
    hold one array (a TIFF stack of `k` pages of `h x w` images reads as `(k, h, w)`)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataFileError(f"Data file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if name is None or name not in archive.files:
                raise DataFileError(
                    f"{path}: array {name!r} not found; the file holds {sorted(archive.files)}."
                )
            arr = archive[name]
    elif suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        raise DataFileError(
            f"{path}: unsupported file type {suffix!r}; expected one of {SUFFIXES}."
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == bool):
        raise DataFileError(f"{path}: array {name!r} must be real, got dtype {arr.dtype}.")
    return np.asarray(arr)


def _read(entry: str, path: pathlib.Path | None, base: pathlib.Path, what: str) -> np.ndarray:
    """`entry` is an array name in the .npz at `path`, or a file of its own."""
    if pathlib.PurePath(entry).suffix.lower() in SUFFIXES:
        return load_array(base / entry)
    if path is None:
        raise DataFileError(
            f"[data] {what} = {entry!r} names an array, but [data] has no `path` to read it from."
        )
    return load_array(path, entry)


def _per_axis(value, ndim: int, key: str, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,) * ndim
    vals = [value] if np.isscalar(value) else list(value)
    if len(vals) == 1:
        vals = vals * ndim
    if len(vals) != ndim:
        raise GridMismatchError(
            f"[data] `{key}` must give one value per axis ({ndim}), got {value!r}."
        )
    return tuple(float(v) for v in vals)


def make_grid(shape: tuple[int, ...], spacing=None, origin=None, axes=None) -> Grid:
    """The grid of data of `shape`: spacing (default 1) and origin (default 0) per axis."""
    ndim = len(shape)
    if axes is not None and len(axes) != ndim:
        raise GridMismatchError(
            f"The data has {ndim} dimension(s) {shape} but [data] `axes` names {len(axes)}: "
            f"{list(axes)}."
        )
    return Grid(shape, _per_axis(spacing, ndim, "spacing", 1.0),
                _per_axis(origin, ndim, "origin", 0.0), tuple(axes or ()))


def check_fields(
    arrays: Mapping[str, np.ndarray], grid: Grid, masks: Mapping[str, np.ndarray], kind: str
) -> dict[str, np.ndarray]:
    """Float64 copies of `arrays`, each of the grid's shape, finite wherever observed."""
    out = {}
    for name, arr in arrays.items():
        if arr.ndim != grid.ndim:
            raise GridMismatchError(
                f"{kind} field {name!r} must have {grid.ndim} dimension(s) (axes {grid.axes}), "
                f"got {describe(arr)}."
            )
        if arr.shape != grid.shape:
            raise GridMismatchError(
                f"{kind} field {name!r} has shape {arr.shape}; the other fields and the grid "
                f"have {grid.shape}."
            )
        arr = arr.astype(np.float64)
        observed = masks.get(name, np.ones(grid.shape, bool))
        bad = ~np.isfinite(arr) & observed
        if bad.any():
            raise NonFiniteError(
                f"{kind} field {name!r} has {int(bad.sum())} NaN or inf value(s) at observed "
                "nodes; list it under [data.masks] (a boolean array, False where missing)."
            )
        out[name] = arr
    return out


def load_dataset(data, module: types.ModuleType, base: str | os.PathLike = ".") -> Dataset:
    """Read user data as described by a `DataConfig` (`source = "file"`).

    `module` is the problem file (`load_problem`). Every field of `module.STATE` must be
    listed under `fields`; paths are relative to `base` (the configuration file's folder).
    """
    base = pathlib.Path(base)
    path = None if data.path is None else base / data.path
    missing = [f for f in module.STATE if f not in data.fields]
    if missing:
        raise DataFileError(
            f"[data.fields] must name an array for each observed field {list(module.STATE)}; "
            f"missing {missing}."
        )
    observed = {f: _read(str(e), path, base, f"fields.{f}") for f, e in data.fields.items()}
    first = next(iter(observed.values()))
    grid = make_grid(first.shape, data.spacing, data.origin, data.axes)
    masks = {}
    for f, e in data.masks.items():
        if f not in observed:
            raise DataFileError(f"[data.masks] names {f!r}, which is not under [data.fields].")
        m = _read(str(e), path, base, f"masks.{f}")
        if m.shape != grid.shape:
            raise GridMismatchError(
                f"Mask of {f!r} has shape {m.shape}; the data has {grid.shape}."
            )
        masks[f] = m.astype(bool)
    observed = check_fields(observed, grid, masks, "Observed")
    observed = {f: np.where(masks[f], v, 0.0) if f in masks else v for f, v in observed.items()}
    known = check_fields(
        {f: _read(str(e), path, base, f"known.{f}") for f, e in data.known.items()}, grid, {},
        "Known",
    )
    truth = {}
    for f, e in data.truth.items():
        if f not in module.UNKNOWNS:
            raise DataFileError(
                f"[data.truth] names {f!r}, which is not an unknown of {problem_name(module)!r}."
            )
        t = _read(str(e), path, base, f"truth.{f}")
        axes = tuple(module.UNKNOWNS[f].get("axes", ()))
        expected = tuple(grid.shape[grid.axis_index(a)] for a in axes)
        if t.shape != expected:
            raise GridMismatchError(
                f"Truth of {f!r} (axes {axes}) must have shape {expected}, got {t.shape}."
            )
        truth[f] = t.astype(np.float64)
    return Dataset(grid, observed, masks=masks, known=known, truth=truth)
