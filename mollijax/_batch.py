"""Batched fitting: one `Problem`, a stack of `B` datasets, one fit per item.

`fit_batch(problem, {"u": stack}, unknowns, optimiser)` fits `B` independent copies of the
problem at once. Item `b` is the problem with its data leaves replaced by `stack[b]`
(`eqx.tree_at`); its unknowns start from the same initial guess (or from the `b`-th of a list
of guesses). The per-item chunk of optimiser steps is exactly `fit`'s (`_fit._run_chunk`),
`vmap`-ed over the batch axis of the parameters, optimiser states and data, so item `b`'s
iterates equal those of `fit(problem_b, ...)` to round-off. Each item carries its own NaN
guard: an item whose loss, gradients or parameters become non-finite is frozen at its last
finite-loss iterate and reported `diverged`; the others run on.

With a `mesh` (a 1-D `jax.sharding.Mesh`, `batch_mesh`), the stacked parameters, optimiser
states and data are placed with their batch axis split over the devices
(`NamedSharding(mesh, P("batch"))`); the jitted chunk then runs item-parallel on every
device, and the results equal the unsharded ones to round-off.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from . import _checkpoint
from ._errors import DTypeError, GridMismatchError, MollijaxError, NonFiniteError, describe
from ._fit import Status, _run_chunk, _with_extra_args, default_optimiser
from ._problem import Problem
from ._sharding import _single_axis, batch_mesh, gather, shard_stack

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
ARRAY_SUFFIXES = (".npy",)


# ----------------------------------------------------------------------------- result


@dataclasses.dataclass
class BatchResult:
    """What `fit_batch` returns; every array has the batch size `B` as leading axis.

    - `unknowns`: the trained unknowns, stacked (each array leaf has a leading `B` axis);
      `item(b)` gives item `b`'s unknowns as `fit` would return them;
    - `values`: `{name: (B, *subgrid)}` each unknown on its own sub-grid;
    - `history`: `{term: (B, steps)}` per-step loss terms and `"total"`; NaN after an item
      stopped;
    - `status`: `(B,)` array of `Status` values (`"completed"` / `"diverged"`);
    - `steps`: `(B,)` steps each item took (for a diverged item, the step of the returned
      last finite-loss iterate);
    - `final_loss`: `(B,)` weighted loss of the returned parameters;
    - `names`: item labels (file names when loaded from a folder);
    - `wall_time`: seconds spent in the call (compilation included).
    """

    unknowns: dict
    values: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    status: np.ndarray
    steps: np.ndarray
    final_loss: np.ndarray
    wall_time: float
    names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return int(self.status.shape[0])

    @property
    def ok(self) -> np.ndarray:
        """`(B,)` booleans: True where the item completed."""
        return self.status == Status.completed.value

    def item(self, b: int) -> dict:
        """Unknowns of item `b` (the structure `fit` takes and returns)."""
        return jax.tree_util.tree_map(
            lambda x: x[b] if eqx.is_array(x) else x, self.unknowns
        )

    def summary(self) -> str:
        done = int(self.ok.sum())
        lines = [f"{done}/{self.size} items completed in {self.wall_time:.1f} s"]
        for b in np.flatnonzero(~self.ok):
            label = self.names[b] if self.names else str(b)
            lines.append(f"  item {label}: {self.status[b]} at step {int(self.steps[b])}")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write a self-describing file: JSON header (status, steps, names) + arrays."""
        arrays = {
            "values": {k: np.asarray(v) for k, v in self.values.items()},
            "history": {k: np.asarray(v) for k, v in self.history.items()},
            "final_loss": np.asarray(self.final_loss),
        }
        header = {
            "kind": "batch-result",
            "status": [str(s) for s in self.status],
            "steps": [int(s) for s in self.steps],
            "names": list(self.names),
            "wall_time": self.wall_time,
            "shapes": {
                g: {k: list(v.shape) for k, v in arrays[g].items()} for g in ("values", "history")
            },
        }
        return _checkpoint.write(path, header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BatchResult:
        """Read a saved result (values, history, status; not the unknowns' structure)."""
        header = _checkpoint.read_header(path)
        if header.get("kind") != "batch-result":
            raise MollijaxError(f"`path` {path} is not a saved BatchResult.")
        size = len(header["status"])
        like = {
            g: {k: np.zeros(s) for k, s in header["shapes"][g].items()}
            for g in ("values", "history")
        }
        like["final_loss"] = np.zeros(size)
        _, arrays = _checkpoint.read(path, like=like)
        return cls(
            unknowns={},
            values={k: np.asarray(v) for k, v in arrays["values"].items()},
            history={k: np.asarray(v) for k, v in arrays["history"].items()},
            status=np.asarray(header["status"]),
            steps=np.asarray(header["steps"]),
            final_loss=np.asarray(arrays["final_loss"]),
            wall_time=float(header["wall_time"]),
            names=tuple(header["names"]),
        )


# ----------------------------------------------------------------------------- helpers


def _float_dtype(dtype) -> np.dtype:
    """The working float dtype: `dtype`, or JAX's default float (float32 unless x64 is on)."""
    default = jnp.zeros(()).dtype
    if dtype is None:
        return np.dtype(default)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise DTypeError(f"`dtype` must be float32 or float64, got {dtype}.")
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise DTypeError(
            "`dtype` float64 needs jax.config.update('jax_enable_x64', True) before any "
            "array is created; got dtype=float64 with x64 disabled."
        )
    return dtype


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


def _check_stack(problem: Problem, data_stack: Mapping) -> tuple[dict, dict, int]:
    if not isinstance(data_stack, Mapping) or not data_stack:
        raise MollijaxError(
            "`data_stack` must be a non-empty dict {name: array of shape (B, *grid)}, got "
            f"{type(data_stack).__name__}."
        )
    grid = problem.grid
    data, known, sizes = {}, {}, {}
    for name, value in data_stack.items():
        if name not in problem.data and name not in problem.known:
            raise MollijaxError(
                f"`data_stack[{name!r}]` names no data or known field of the problem; it has "
                f"data {sorted(problem.data)} and known {sorted(problem.known)}."
            )
        arr = np.asarray(value)
        if arr.ndim != grid.ndim + 1 or arr.shape[1:] != grid.shape:
            raise GridMismatchError(
                f"`data_stack[{name!r}]` must have shape (B, *{grid.shape}), got "
                f"{describe(arr)}."
            )
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise DTypeError(f"`data_stack[{name!r}]` must be real, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
        if name in problem.data:
            mask = np.asarray(problem.masks[name])
            bad = ~np.isfinite(arr) & mask
            if bad.any():
                items = sorted({int(b) for b in np.nonzero(bad)[0]})
                raise NonFiniteError(
                    f"`data_stack[{name!r}]` has NaN or inf at observed nodes of item(s) "
                    f"{items[:10]}; mask them in the problem or drop the item(s)."
                )
            data[name] = np.where(mask, arr, 0.0)
        else:
            if not np.all(np.isfinite(arr)):
                raise NonFiniteError(f"`data_stack[{name!r}]` (a known field) has NaN or inf.")
            known[name] = arr
        sizes[name] = arr.shape[0]
    if len(set(sizes.values())) != 1:
        raise GridMismatchError(
            f"Every array of `data_stack` must have the same batch size; got {sizes}."
        )
    return data, known, next(iter(sizes.values()))


def _stack_unknowns(unknowns, size: int):
    """`(template, stacked params, static)` from one guess (broadcast) or `B` guesses."""
    if isinstance(unknowns, Mapping):
        template = dict(unknowns)
        params, static = eqx.partition(template, eqx.is_inexact_array)
        stacked = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (size,) + x.shape), params
        )
        return template, stacked, static
    is_list = isinstance(unknowns, Sequence) and bool(unknowns)
    if is_list and all(isinstance(u, Mapping) for u in unknowns):
        if len(unknowns) != size:
            raise MollijaxError(
                f"`unknowns` is a list of {len(unknowns)} initial guesses, but the batch has "
                f"{size} items."
            )
        parts = [eqx.partition(dict(u), eqx.is_inexact_array) for u in unknowns]
        structure = {jax.tree_util.tree_structure(p) for p, _ in parts}
        if len(structure) != 1:
            raise MollijaxError(
                "`unknowns`: every initial guess in the list must have the same structure."
            )
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[p for p, _ in parts])
        return dict(unknowns[0]), stacked, parts[0][1]
    raise MollijaxError(
        "`unknowns` must be a dict {name: field} (one guess for every item) or a list of B "
        f"such dicts, got {type(unknowns).__name__}."
    )


def _pad(tree, size: int, padded: int):
    """Repeat the last item so that the batch axis has `padded` entries."""
    if padded == size:
        return tree

    def grow(x):
        tail = jnp.broadcast_to(x[-1:], (padded - size,) + x.shape[1:])
        return jnp.concatenate([x, tail])

    return jax.tree_util.tree_map(grow, tree)


def _place(tree, mesh: Mesh | None):
    if mesh is None:
        return tree
    # through host memory: each process hands over only its own devices' rows
    return jax.tree_util.tree_map(lambda x: shard_stack(np.asarray(x), mesh), tree)


def _item(prob: Problem, data, known) -> Problem:
    """The problem with (some of) its data and known arrays replaced by one item's."""
    new = (dict(prob.data, **data), dict(prob.known, **known))
    return eqx.tree_at(lambda q: (q.data, q.known), prob, new)


def _item_chunk(p, s, data, known, prob, first, length, static, opt):
    item = _item(prob, data, known)
    return _run_chunk(p, s, {}, item, first, length, static, opt)


@eqx.filter_jit
def _batch_chunk(p, s, data, known, prob, first, length, static, opt):
    """`length` steps of every item: `fit`'s chunk, `vmap`-ed over the batch axis."""
    run = jax.vmap(
        lambda p, s, d, k: _item_chunk(p, s, d, k, prob, first, length, static, opt)
    )
    return run(p, s, data, known)


@eqx.filter_jit
def _batch_loss(p, data, known, prob, static):
    def one(p, d, k):
        item = _item(prob, d, k)
        return item.total(item.loss_terms(eqx.combine(p, static)))

    return jax.vmap(one)(p, data, known)


def _select(flag, a, b):
    """Per item: `a` where `flag` (shape `(B,)`) else `b`, for pytrees of stacked leaves."""

    def pick(x, y):
        f = flag.reshape(flag.shape + (1,) * (x.ndim - 1))
        return jnp.where(f, x, y)

    return jax.tree_util.tree_map(pick, a, b)


# ----------------------------------------------------------------------------- fit_batch


def fit_batch(
    problem: Problem,
    data_stack: Mapping[str, np.ndarray | jax.Array],
    unknowns: Mapping | Sequence[Mapping],
    optimiser: optax.GradientTransformation | None = None,
    *,
    steps: int = 1000,
    chunk: int = 100,
    mesh: Mesh | None = None,
    dtype=None,
    names: Sequence[str] = (),
) -> BatchResult:
    """Fit the same `problem` to each of `B` datasets, item by item in parallel.

    Item `b` minimises `L_b(theta_b) = sum_k w_k L_k(theta_b; data_b)`, the problem's
    weighted loss with its data (or known) fields replaced by `data_stack[name][b]`. The
    items share nothing but the compiled code: the update of item `b` is `fit`'s optimiser
    step on `L_b`, and `vmap` runs all `B` at once.

    **Arguments:**

    - `problem`: a `Problem`; its own data arrays give the shapes (and the masks, shared by
      all items).
    - `data_stack`: `{name: array of shape (B, *grid)}` for data or known fields of `problem`.
    - `unknowns`: one initial guess `{name: field}` used for every item, or a list of `B`
      guesses of the same structure.
    - `optimiser`: any optax transformation (default `default_optimiser(steps)`).
    - `steps`, `chunk`: total steps per item, and steps per compiled `lax.scan`.
    - `mesh`: `None` (default devices) or a 1-D `jax.sharding.Mesh` (`batch_mesh(n)`): the
      batch axis is split over its devices (the batch is padded with copies of the last
      item to a multiple of the device count; the copies are dropped from the result).
    - `dtype`: working float dtype of data and parameters: `None` (JAX's default: float32,
      or float64 under `jax_enable_x64`), `"float32"` or `"float64"`.
    - `names`: optional item labels, kept in the result.

    **Returns:** a `BatchResult` with per-item `values`, `history`, `status` and `steps`.
    Deterministic; item `b` equals `fit(problem_b, unknowns_b, optimiser, steps, chunk)`
    to round-off (up to the step of a divergence, which `fit` stops at and `fit_batch`
    records per item).
    """
    start = time.perf_counter()
    if not isinstance(problem, Problem):
        raise MollijaxError(f"`problem` must be a mollijax.Problem, got {type(problem).__name__}.")
    if steps < 0 or chunk < 1:
        raise MollijaxError(f"`steps` must be >= 0 and `chunk` >= 1, got {steps}, {chunk}.")
    if mesh is not None:
        _single_axis(mesh, "mesh")
    if names and len(names) != len(next(iter(data_stack.values()))):
        raise MollijaxError(
            f"`names` must give one label per item: got {len(names)} for a batch of "
            f"{len(next(iter(data_stack.values())))}."
        )
    dtype = _float_dtype(dtype)
    data, known, size = _check_stack(problem, data_stack)
    # an Evolution's substeps, from the (first) initial guess
    problem = problem.prepare(unknowns if isinstance(unknowns, Mapping) else unknowns[0])
    template, params, static = _stack_unknowns(unknowns, size)
    problem.check(template)
    optimiser = default_optimiser(steps) if optimiser is None else optimiser
    opt = _with_extra_args(optimiser)

    prob = _cast(problem, dtype)
    params = _cast(params, dtype)
    data = {k: jnp.asarray(v, dtype) for k, v in data.items()}
    known = {k: jnp.asarray(v, dtype) for k, v in known.items()}
    state = jax.vmap(opt.init)(params)

    count = 1 if mesh is None else mesh.devices.size
    padded = -(-size // count) * count
    params, state, data, known = _place(_pad((params, state, data, known), size, padded), mesh)

    alive = jnp.ones((padded,), bool)
    stop_step = jnp.full((padded,), steps)
    best_params, best_state = params, state
    history: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        out = _batch_chunk(params, state, data, known, prob, jnp.asarray(done), n, static, opt)
        new_params, new_state, good_params, good_state, good_step, ok, hist = out
        failed = alive & ~ok
        # an item that diverges in this chunk keeps its last finite-loss iterate
        best_params = _select(failed, good_params, _select(alive, new_params, best_params))
        best_state = _select(failed, good_state, _select(alive, new_state, best_state))
        stop_step = jnp.where(failed, good_step, stop_step)
        alive = alive & ok
        params, state = new_params, new_state
        for k, v in hist.items():
            history.setdefault(k, []).append(gather(v))
        done += n
        if not bool(jnp.any(alive)):
            break

    final_loss = gather(_batch_loss(best_params, data, known, prob, static))[:size]
    stop = gather(stop_step)[:size]
    hist = {k: np.concatenate(v, axis=1)[:size] for k, v in history.items()}
    taken = np.arange(next(iter(hist.values())).shape[1]) if hist else np.arange(0)
    hist = {k: np.where(taken[None, :] < stop[:, None], v, np.nan) for k, v in hist.items()}
    trained = eqx.combine(
        jax.tree_util.tree_map(lambda x: jnp.asarray(gather(x)[:size]), best_params), static
    )
    values = {k: gather(v)[:size] for k, v in _batch_values(best_params, static, prob).items()}
    alive_host = gather(alive)[:size]
    status = np.where(alive_host, Status.completed.value, Status.diverged.value)
    return BatchResult(
        unknowns=trained,
        values=values,
        history=hist,
        status=status,
        steps=stop,
        final_loss=final_loss,
        wall_time=time.perf_counter() - start,
        names=tuple(str(n) for n in names),
    )


@eqx.filter_jit
def _batch_values(p, static, prob):
    def one(p):
        return {k: f.on_subgrid(prob.grid) for k, f in eqx.combine(p, static).items()}

    return jax.vmap(one)(p)


# ----------------------------------------------------------------------------- loading and CLI


def list_stack(path: str | os.PathLike) -> list[str]:
    """Item names of a stack: the sorted image/array file names of a folder, or indices."""
    path = pathlib.Path(path)
    if path.is_dir():
        return [f.name for f in _stack_files(path)]
    return [str(b) for b in range(load_stack(path).shape[0])]


def _stack_files(folder: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(
        f for f in folder.iterdir()
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES
    )
    if not files:
        raise MollijaxError(
            f"`path` {folder} holds no image ({', '.join(IMAGE_SUFFIXES)}) or .npy files."
        )
    return files


def _read_item(f: pathlib.Path) -> np.ndarray:
    if f.suffix.lower() in ARRAY_SUFFIXES:
        return np.load(f, allow_pickle=False)
    try:
        from PIL import Image
    except ImportError:
        raise MollijaxError(
            f"Reading image {f.name} needs Pillow (`pip install pillow`); or save the images "
            "as .npy files."
        ) from None
    with Image.open(f) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:  # colour: luminance-like mean over channels
        arr = arr[..., :3].mean(axis=-1)
    return arr


def load_stack(
    path: str | os.PathLike, *, key: str | None = None, dtype=np.float64
) -> np.ndarray:
    """A stack of datasets as one array of shape `(B, *grid)`.

    **Arguments:**

    - `path`: a folder of images (`.png`, `.tif`, ...; colour images are averaged over
      channels) or `.npy` files, one item each in sorted file-name order; or one `.npy`
      file holding a `(B, *grid)` array; or one `.npz` file (`key` names the array; may be
      omitted when it holds one).
    - `dtype`: NumPy dtype of the result (float64 by default; `fit_batch` casts to its
      working dtype).

    **Returns:** a NumPy array `(B, *grid)`. Items of different shapes are an error.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        files = _stack_files(path)
        items = [_read_item(f) for f in files]
        shapes = {a.shape for a in items}
        if len(shapes) != 1:
            first = {f.name: a.shape for f, a in list(zip(files, items, strict=True))[:5]}
            raise GridMismatchError(
                f"Every item in {path} must have the same shape; got shapes {sorted(shapes)} "
                f"(e.g. {first})."
            )
        return np.stack(items).astype(dtype)
    if not path.exists():
        raise MollijaxError(f"`path` {path} does not exist.")
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if key is None:
                if len(z.files) != 1:
                    raise MollijaxError(
                        f"`key` is needed to pick one of the arrays {z.files} in {path}."
                    )
                key = z.files[0]
            if key not in z.files:
                raise MollijaxError(f"`key` {key!r} is not in {path}; it holds {z.files}.")
            arr = z[key]
    else:
        raise MollijaxError(
            f"`path` must be a folder, a .npy or a .npz file, got {path.name!r}."
        )
    if arr.ndim < 2:
        raise GridMismatchError(
            f"A stack must have shape (B, *grid) with at least one grid axis, got "
            f"{describe(arr)} from {path}."
        )
    return arr.astype(dtype)


def run_batch(
    problem: Problem,
    unknowns: Mapping | Sequence[Mapping],
    stack: str | os.PathLike | np.ndarray,
    *,
    field: str,
    devices: int | None = None,
    optimiser: optax.GradientTransformation | None = None,
    steps: int = 1000,
    chunk: int = 100,
    dtype=None,
    key: str | None = None,
    output: str | os.PathLike | None = None,
) -> BatchResult:
    """Load a stack, fit every item, optionally save: the function behind a batch CLI run.

    **Arguments:**

    - `problem`, `unknowns`, `optimiser`, `steps`, `chunk`, `dtype`: as in `fit_batch`.
    - `stack`: a folder of images or `.npy` files, a `.npy`/`.npz` file (see `load_stack`)
      or an array `(B, *grid)`.
    - `field`: the data (or known) field of `problem` the stack provides.
    - `devices`: `None` for one device (no sharding), or how many devices to split the
      batch over (`batch_mesh(devices)`).
    - `key`: the array's name in an `.npz` file.
    - `output`: where to write the `BatchResult` (`BatchResult.save`), or `None`.
    """
    if isinstance(stack, str | os.PathLike):
        names = list_stack(stack) if pathlib.Path(stack).is_dir() else []
        arr = load_stack(stack, key=key)
    else:
        arr, names = np.asarray(stack), []
    mesh = None if devices is None else batch_mesh(devices)
    result = fit_batch(
        problem, {field: arr}, unknowns, optimiser, steps=steps, chunk=chunk, mesh=mesh,
        dtype=dtype, names=names,
    )
    if output is not None:
        result.save(output)
    return result
