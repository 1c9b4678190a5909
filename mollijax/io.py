"""Loading user data onto a grid: .npz (named arrays), .npy and TIFF stacks.

`load_array(path, name)` reads one array; `load_dataset(data, module, base)` reads every
field a `[data] source = "file"` table names, builds the `Grid` from the data's shape and the
configured spacing, origin and axes, and checks them: NaN or inf only where masked out, one
dimension per axis, and every field of the same shape (a `GridMismatchError` or
`NonFiniteError` naming the field otherwise). The result is a `Dataset` whose `truth` holds
whatever true unknowns the user supplied (often none).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import types
import zipfile
import zlib
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
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # read through Pillow, one page each
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP = b"PK\x05\x06"  # an archive with no member


class DataFileError(MollijaxError):
    """A data file is missing, of an unsupported kind, truncated or corrupted, holds
    something other than a real array (pickled objects, strings, complex numbers), or lacks
    the named array."""


@dataclasses.dataclass(frozen=True)
class TiffStack:
    """The pages of a TIFF file and what its metadata say about their spacing.

    `array` is `(pages, height, width)` (or `(height, width)` for one page); `spacing` has
    one entry per axis of `array`: the frame interval (ImageJ `finterval`) or the slice
    spacing (ImageJ `spacing`) for the page axis, the pixel height and width from the
    `YResolution` and `XResolution` tags; `None` where the file says nothing (a resolution
    of 1 pixel per unit with no unit, tifffile's default, counts as nothing). `unit` is the
    length unit the file names, if any.
    """

    array: np.ndarray
    spacing: tuple[float | None, ...]
    unit: str | None = None

    @property
    def has_spacing(self) -> bool:
        return any(s is not None for s in self.spacing)


def _real_array(arr: np.ndarray, path, name) -> np.ndarray:
    what = f"{path}" if name is None else f"{path}: array {name!r}"
    if arr.dtype.hasobject:
        raise DataFileError(
            f"{what} holds Python objects (pickled data); mollijax reads only numeric arrays "
            "and never unpickles. Save a float or integer array (np.save / np.savez)."
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == bool):
        raise DataFileError(
            f"{what} must be a real (float, integer or boolean) array, got dtype {arr.dtype}."
        )
    if arr.size == 0:
        raise DataFileError(f"{what} is empty (shape {arr.shape}).")
    return arr


def _npy_header(f, where: str, size: int) -> tuple[tuple[int, ...], np.dtype]:
    """Read and check an .npy header from `f` (at its start); the array must fit in what
    is left of the `size` bytes of the file (or archive member) after the header."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise DataFileError(f"{where} is not a readable .npy array: {e}.") from None
    if dtype.hasobject:
        raise DataFileError(
            f"{where} holds Python objects (pickled data); mollijax reads only numeric arrays "
            "and never unpickles. Save a float or integer array (np.save / np.savez)."
        )
    need = math.prod(shape) * dtype.itemsize
    available = size - f.tell()
    if need > available:
        raise DataFileError(
            f"{where} is truncated: its header describes an array of shape {shape} and dtype "
            f"{dtype} ({need} bytes), but only {available} bytes follow the header."
        )
    return shape, dtype


def _read_npy(path: pathlib.Path) -> np.ndarray:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
        if head != _NPY_MAGIC:
            raise DataFileError(
                f"{path} is not a NumPy .npy file (it does not start with the .npy magic "
                f"bytes; got {head!r}). Save arrays with np.save."
            )
        f.seek(0)
        _npy_header(f, str(path), size)
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataFileError(f"{path} is truncated or corrupted: {e}.") from None


def _read_npz(path: pathlib.Path, name: str | None) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in (_ZIP_MAGIC, _EMPTY_ZIP):
        raise DataFileError(
            f"{path} is not an .npz archive (a zip file; it starts with {head!r}). Save "
            "named arrays with np.savez."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
            if name is None or name not in members:
                raise DataFileError(
                    f"{path}: array {name!r} not found; the file holds {sorted(members)}."
                )
            info = archive.getinfo(members[name])
            with archive.open(info) as member:
                where = f"{path}: array {name!r}"
                _npy_header(member, where, info.file_size)
            with archive.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
    except DataFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise DataFileError(
            f"{path} is truncated or corrupted (not a readable .npz archive): {e}."
        ) from None


def _tiff_spacing(tif) -> tuple[tuple[float | None, float | None], str | None]:
    """`((pixel height, pixel width), unit)` from the first page's resolution tags."""
    page = tif.pages[0]
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    unit_code = int(unit_tag.value) if unit_tag is not None else 1
    unit = {2: "inch", 3: "cm"}.get(unit_code)
    ij = tif.imagej_metadata or {}
    if isinstance(ij.get("unit"), str) and ij["unit"] not in ("", "pixel"):
        unit = ij["unit"]
    sizes = []
    for tag in ("YResolution", "XResolution"):
        t = tags.get(tag)
        size = None
        if t is not None:
            try:
                num, den = t.value
                per_unit = num / den
            except (TypeError, ValueError, ZeroDivisionError):
                per_unit = None
            if per_unit is not None and per_unit > 0 and math.isfinite(per_unit):
                # 1 pixel per unit without a unit is the writers' default, not a measurement
                if not (per_unit == 1 and unit is None):
                    size = 1.0 / per_unit
        sizes.append(size)
    return (sizes[0], sizes[1]), unit


def read_tiff(path: str | os.PathLike) -> TiffStack:
    """Every page of a TIFF file as one array, with the spacing its metadata give.

    Pages must all have the same shape (a ragged stack is a `DataFileError` naming the first
    page that differs); colour pages are refused (save one channel). Reads through
    `tifffile`.
    """
    import tifffile

    path = pathlib.Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            if not pages:
                raise DataFileError(
                    f"{path} holds no image pages (truncated, or not a TIFF image)."
                )
            arrays = []
            for i, page in enumerate(pages):
                arr = page.asarray()
                if i and arr.shape != arrays[0].shape:
                    raise DataFileError(
                        f"{path} is a ragged stack: page 0 has shape {arrays[0].shape}, page "
                        f"{i} has shape {arr.shape}; every page of a stack must have the "
                        f"same shape ({len(pages)} pages)."
                    )
                if arr.ndim != 2:
                    raise DataFileError(
                        f"{path}: page {i} has shape {arr.shape}; expected a single-channel "
                        "2-D image (save one channel per file, or the channels as pages)."
                    )
                arrays.append(arr)
            (dy, dx), unit = _tiff_spacing(tif)
            ij = tif.imagej_metadata or {}
    except DataFileError:
        raise
    except Exception as e:  # tifffile raises many kinds on a damaged file
        raise DataFileError(
            f"{path} is not a readable TIFF file (truncated or corrupted): "
            f"{type(e).__name__}: {e}."
        ) from None
    array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
    if array.ndim == 2:
        spacing: tuple[float | None, ...] = (dy, dx)
    else:
        step = None
        for key in ("finterval", "spacing"):
            v = ij.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) \
                    and v > 0:
                step = float(v)
                break
        spacing = (step, dy, dx)
    return TiffStack(_real_array(array, path, None), spacing, unit)


def _read_image(path: pathlib.Path) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataFileError(
            f"Reading image {path.name} needs Pillow (`pip install pillow`); or save the "
            "images as .npy or .tif files."
        ) from None
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames != 1:
                raise DataFileError(
                    f"{path} holds {frames} frames; save a stack as a TIFF (every page is read)."
                )
            arr = np.asarray(im)
    except DataFileError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataFileError(f"{path} is not a readable image: {e}.") from None
    if arr.ndim == 3:  # colour: luminance-like mean over channels
        arr = arr[..., :3].mean(axis=-1)
    return arr


def load_array(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """One real array from `path`: `name` selects an array of an .npz; .npy and TIFF files
    hold one array (a TIFF stack of `k` pages of `h x w` images reads as `(k, h, w)`).

    Every file is read defensively: nothing is unpickled (`allow_pickle=False`), a file that
    is not of its kind (no .npy magic, not a zip archive, not a TIFF), a header that claims
    more bytes than the file holds, a truncated archive, a ragged TIFF stack, object,
    string or complex arrays, and empty arrays are `DataFileError`s naming the file.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise DataFileError(f"Data file {str(path)!r} does not exist.")
    if not path.is_file():
        raise DataFileError(f"Data file {str(path)!r} is not a file (a folder?).")
    suffix = path.suffix.lower()
    if suffix in SUFFIXES and path.stat().st_size == 0:
        raise DataFileError(f"Data file {str(path)!r} is empty (0 bytes).")
    if suffix == ".npz":
        arr = _read_npz(path, name)
        return _real_array(arr, path, name)
    if suffix == ".npy":
        return _real_array(_read_npy(path), path, None)
    if suffix in (".tif", ".tiff"):
        return read_tiff(path).array
    raise DataFileError(f"{path}: unsupported file type {suffix!r}; expected one of {SUFFIXES}.")


def read_stack(path: str | os.PathLike, key: str | None = None) -> tuple[np.ndarray, list[str]]:
    """`(array (B, *grid), item names)` of a batch stack, read defensively.

    `path` is a folder of one item per file (`.npy`, TIFF: every page, so a multi-page TIFF
    is one item of shape `(pages, h, w)`; PNG/JPEG/BMP through Pillow), in sorted file-name
    order; or one `.npy`/TIFF file or `.npz` archive (`key` names the array; it may be
    omitted when the archive holds one) whose first axis is the item axis. Items of
    different shapes are a `DataFileError` naming two of them.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise DataFileError(f"[batch] stack {str(path)!r} does not exist.")
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file()
                       and f.suffix.lower() in (".npy", ".tif", ".tiff", *IMAGE_SUFFIXES))
        if not files:
            raise DataFileError(
                f"[batch] stack folder {path} holds no .npy, TIFF or image files."
            )
        items = []
        for f in files:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                items.append(_real_array(_read_image(f), f, None))
            else:
                items.append(load_array(f))
            if items[-1].shape != items[0].shape:
                raise DataFileError(
                    f"[batch] stack {path}: every item must have the same shape; "
                    f"{files[0].name} has {items[0].shape}, {f.name} has {items[-1].shape}."
                )
        return np.stack(items).astype(np.float64), [f.name for f in files]
    suffix = path.suffix.lower()
    if suffix == ".npz" and key is None:
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        except (zipfile.BadZipFile, OSError) as e:
            raise DataFileError(f"{path} is truncated or corrupted: {e}.") from None
        if len(names) != 1:
            raise DataFileError(
                f"[batch] key is needed to pick one of the arrays {sorted(names)} in {path}."
            )
        key = names[0]
    arr = load_array(path, key if suffix == ".npz" else None)
    if arr.ndim < 2:
        raise DataFileError(
            f"[batch] stack {path} must have shape (B, *grid) with at least one grid axis, "
            f"got {describe(arr)}."
        )
    return arr.astype(np.float64), [str(b) for b in range(arr.shape[0])]


def _source(entry: str, path: pathlib.Path | None, base: pathlib.Path, what: str):
    """`(file, array name or None)` of an entry: a file of its own, or an array in `path`."""
    if pathlib.PurePath(entry).suffix.lower() in SUFFIXES:
        return base / entry, None
    if path is None:
        raise DataFileError(
            f"[data] {what} = {entry!r} names an array, but [data] has no `path` to read it from."
        )
    return path, entry


def _read(entry: str, path: pathlib.Path | None, base: pathlib.Path, what: str) -> np.ndarray:
    """`entry` is an array name in the .npz at `path`, or a file of its own."""
    return load_array(*_source(entry, path, base, what))


def _read_mask(entry: str, path, base: pathlib.Path, what: str, grid: Grid, label: str,
               meaning: str) -> np.ndarray:
    """A boolean (or 0/1) array of the grid's shape read from `entry`; `label` names it in
    the errors, `meaning` says what True means."""
    m = _read(entry, path, base, what)
    if m.shape != grid.shape:
        raise GridMismatchError(f"{label} has shape {m.shape}; the data has {grid.shape}.")
    if m.dtype != bool and not np.isin(m, (0, 1)).all():
        raise DataFileError(
            f"{label} must be boolean ({meaning}) or 0/1, got dtype {m.dtype} with values "
            "other than 0 and 1."
        )
    return m.astype(bool)


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


def make_grid(shape: tuple[int, ...], spacing, origin, axes) -> Grid:
    """The grid of data of `shape`: `spacing` (one number or one per axis), `origin` (default
    0) and the axis names `axes` (one per dimension; `load_dataset` requires both)."""
    ndim = len(shape)
    if len(axes) != ndim:
        raise GridMismatchError(
            f"The data has {ndim} dimension(s) {shape} but [data] `axes` names {len(axes)}: "
            f"{list(axes)}."
        )
    return Grid(shape, _per_axis(spacing, ndim, "spacing", 1.0),
                _per_axis(origin, ndim, "origin", 0.0), tuple(axes))


def check_fields(
    arrays: Mapping[str, np.ndarray], grid: Grid, masks: Mapping[str, np.ndarray], kind: str,
    grid_from: str = "",
) -> dict[str, np.ndarray]:
    """Float64 copies of `arrays`, each of the grid's shape, finite wherever observed;
    `grid_from` says where the grid's shape came from (for the message of a mismatch, which
    may be the other array's fault)."""
    out = {}
    source = f" (the shape of {grid_from})" if grid_from else ""
    for name, arr in arrays.items():
        if arr.ndim != grid.ndim:
            raise GridMismatchError(
                f"{kind} field {name!r} must have {grid.ndim} dimension(s) (axes {grid.axes}), "
                f"got {describe(arr)}."
            )
        if arr.shape != grid.shape:
            raise GridMismatchError(
                f"{kind} field {name!r} has shape {arr.shape}, the grid {grid.shape}{source}: "
                "every field must have the grid's shape; check which of the two is wrong."
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


def _problem_axes(module: types.ModuleType) -> list[str]:
    """The axis names a problem file's hints mention: its unknowns' axes, and `t` for an
    evolution."""
    axes: list[str] = []
    for hint in module.UNKNOWNS.values():
        axes += [a for a in hint.get("axes", ()) if a not in axes]
    if getattr(module, "EVOLUTION", None) is not None and "t" not in axes:
        axes.append("t")
    return axes


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
    extra = [f for f in data.fields if f not in module.STATE]
    if extra:
        raise DataFileError(
            f"[data.fields] names {extra}, which {'is' if len(extra) == 1 else 'are'} not "
            f"observed by {problem_name(module)!r}; its observed fields (STATE) are "
            f"{list(module.STATE)}. Given fields go under [data.known]."
        )
    observed, spacing, spacing_from = {}, data.spacing, None
    for f, e in data.fields.items():
        file, name = _source(str(e), path, base, f"fields.{f}")
        if file.suffix.lower() in (".tif", ".tiff") and file.is_file():
            stack = read_tiff(file)
            observed[f] = stack.array
            if spacing is None and stack.has_spacing:
                spacing = [1.0 if s is None else s for s in stack.spacing]
                unit = f", unit {stack.unit}" if stack.unit else ""
                spacing_from = f"the TIFF metadata of {file.name}{unit}"
        else:
            observed[f] = load_array(file, name)
    first_name, first = next(iter(observed.items()))
    grid_from = f"the observed field {first_name!r}, [data.fields]'s first"
    if data.axes is None:
        raise DataFileError(
            "[data] `axes` is required for data read from a file: one name per dimension of "
            f"the arrays, in order (the data have shape {first.shape}); "
            f"{problem_name(module)!r} uses the axes {_problem_axes(module)}."
        )
    if spacing is None:
        raise DataFileError(
            "[data] `spacing` is required for data read from a file: the distance between "
            f"neighbouring nodes along each axis {list(data.axes)}, in the units of the "
            "problem's coefficients (a spacing of 1 where the true one is h would put every "
            "derivative, and so every coefficient, off by a power of h). A TIFF stack with "
            "resolution metadata gives it itself; write spacing = 1 to work in nodes."
        )
    grid = make_grid(first.shape, spacing, data.origin, data.axes)
    masks = {}
    for f, e in data.masks.items():
        if f not in observed:
            raise DataFileError(f"[data.masks] names {f!r}, which is not under [data.fields].")
        masks[f] = _read_mask(str(e), path, base, f"masks.{f}", grid, f"Mask of {f!r}",
                              "True where observed")
    observed = check_fields(observed, grid, masks, "Observed", grid_from)
    observed = {f: np.where(masks[f], v, 0.0) if f in masks else v for f, v in observed.items()}
    known = check_fields(
        {f: _read(str(e), path, base, f"known.{f}") for f, e in data.known.items()}, grid, {},
        "Known", grid_from,
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
    params = {"spacing_from": spacing_from} if spacing_from else {}
    domain = None if data.domain is None else _read_mask(
        str(data.domain), path, base, "domain", grid, "[data] domain", "True inside")
    return Dataset(grid, observed, masks=masks, known=known, truth=truth, params=params,
                   domain=domain)
