"""Batched fitting: one `Problem`, a stack of `B` datasets, one fit per item.

`fit_batch(problem, {"u": stack}, unknowns, optimiser)` fits `B` independent copies of the
problem at once. Item `b` is `problem.with_data(...)` with its data (or known) arrays
replaced by `stack[b]`; its unknowns start from the same initial guess (or from the `b`-th of
a list of guesses). The per-item chunk of optimiser steps is exactly `fit`'s
(`_driver.run_chunk`), `vmap`-ed over the item axis of the training state and the data, and
the Python loop around it is `fit`'s too (`_driver.drive`): checkpoints, resume, interrupts,
progress bar, callback and history. So item `b`'s iterates equal those of
`fit(problem_b, ...)` to round-off. Each item carries its own NaN guard: an item whose loss,
gradients or parameters become non-finite is frozen at its last finite-loss iterate and
reported `diverged`; the others run on. An item whose data are NaN or inf at observed nodes
is left out before training (`skipped`, with the reason).

With a `mesh` (a 1-D `jax.sharding.Mesh`, `batch_mesh`), the training state and the data are
placed with their item axis split over the devices (`NamedSharding(mesh, P("batch"))`); the
jitted chunk then runs item-parallel on every device, and the results equal the unsharded
ones to round-off.
"""

from __future__ import annotations

import os
import pathlib
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from . import _driver
from ._driver import Checkpointer, item_problem
from ._errors import DTypeError, GridMismatchError, MollijaxError, NonFiniteError, describe
from ._fit import _with_extra_args, default_optimiser
from ._problem import Problem
from ._result import FitResult, Status
from ._sharding import _single_axis, batch_mesh, gather, shard_stack

BatchResult = FitResult  # the same class: `fit_batch` returns a batched `FitResult`


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


def _check_stack(problem: Problem, data_stack: Mapping) -> tuple[dict, dict, int, dict]:
    """`(data, known, B, skipped)`: validated float64 stacks, and `{item: reason}` for the
    items whose data are NaN or inf at observed nodes (or whose known fields are)."""
    if not isinstance(data_stack, Mapping) or not data_stack:
        raise MollijaxError(
            "`data_stack` must be a non-empty dict {name: array of shape (B, *grid)}, got "
            f"{type(data_stack).__name__}."
        )
    grid = problem.grid
    data, known, sizes = {}, {}, {}
    reasons: dict[int, list[str]] = {}
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
            where = "observed node(s) of data"
            data[name] = np.where(mask, arr, 0.0)
        else:
            bad = ~np.isfinite(arr)
            where = "node(s) of the known field"
            known[name] = arr
        counts = bad.reshape(arr.shape[0], -1).sum(axis=1)
        for b in np.flatnonzero(counts):
            reasons.setdefault(int(b), []).append(
                f"NaN or inf at {int(counts[b])} {where} {name!r}"
            )
        sizes[name] = arr.shape[0]
    if len(set(sizes.values())) != 1:
        raise GridMismatchError(
            f"Every array of `data_stack` must have the same batch size; got {sizes}."
        )
    size = next(iter(sizes.values()))
    if len(reasons) == size:
        items = sorted(reasons)
        raise NonFiniteError(
            f"`data_stack` has NaN or inf at observed nodes of every item(s) {items[:10]}"
            f"{' ...' if size > 10 else ''}: nothing to fit; mask them in the problem."
        )
    return data, known, size, {b: "; ".join(r) for b, r in sorted(reasons.items())}


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


def _krylov_steady(problem: Problem) -> Problem:
    """`problem` with a `Steady` state that would be solved by the dense LU (`solver="direct"`,
    or `"auto"` on a small grid) solved by BiCGStab instead (same tolerances, DST
    preconditioner), on the CPU backend; any other problem unchanged.

    Why: on the XLA CPU runtime (jaxlib 0.10), the batched chunk of a fit whose steady solve
    is the dense LU, under L-BFGS, can wait forever inside one compiled executable (0 % CPU,
    no host callback in flight, also with `EQX_ON_ERROR=nan`, single-threaded Eigen or
    XNNPACK off); two items of a 9x9 problem were enough. BiCGStab batches ran.
    """
    steady = problem.steady
    if steady is None or jax.default_backend() != "cpu":
        return problem
    if steady.choose_solver(problem.grid) != "direct":
        return problem
    if steady.solver == "direct":
        warnings.warn(
            "fit_batch: the Steady state's solver='direct' (dense LU) is replaced by "
            "'bicgstab' in a batch on the CPU backend, where the batched LU step can hang "
            "inside XLA's CPU runtime.", RuntimeWarning, stacklevel=3,
        )
    return eqx.tree_at(lambda p: p.steady, problem, steady._replace(solver="bicgstab"))


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


def _expand(x: np.ndarray, active: np.ndarray, size: int, fill) -> np.ndarray:
    """Rows of the active items put back at their places in a `(size, ...)` array."""
    x = np.asarray(x)
    out = np.full((size, *x.shape[1:]), fill, dtype=x.dtype)
    out[active] = x
    return out


def _nan_fill(x: np.ndarray):
    return np.nan if np.issubdtype(x.dtype, np.inexact) else 0


@eqx.filter_jit
def _batch_outputs(p, data, known, prob, static):
    """Per item: each unknown on its sub-grid, and every unknown on the full grid."""

    def one(p, d, k):
        u = eqx.combine(p, static)
        values = {name: f.on_subgrid(prob.grid) for name, f in u.items()}
        return values, item_problem(prob, d, k).grid_values(u)

    return jax.vmap(one)(p, data, known)


class _Batched(_driver.Run):
    desc = "fit_batch"

    def __init__(self, prob, data, known, static, opt, active, size, mesh):
        self.prob, self.data, self.known = prob, data, known
        self.static, self.opt, self.mesh = static, opt, mesh
        self.active, self.size = active, size
        count = 1 if mesh is None else mesh.devices.size
        self.padded = -(-len(active) // count) * count

    def place(self, tree):
        """Pad the item axis to a multiple of the device count and place it on the mesh."""
        return _place(_pad(tree, len(self.active), self.padded), self.mesh)

    def advance(self, state, done, n):
        first = jnp.asarray(done, jnp.int32)
        state, hist = _driver.run_batch_chunk(
            state, self.data, self.known, self.prob, first, n, self.static, self.opt
        )
        return state, {k: gather(v)[: len(self.active)] for k, v in hist.items()}

    def any_alive(self, state):
        return bool(np.any(gather(state.alive)[: len(self.active)]))

    def host(self, state):
        return jax.tree_util.tree_map(lambda x: gather(x)[: len(self.active)], state)

    def statuses(self, host, done, steps) -> np.ndarray:
        finished = done >= steps or self.converged_at is not None
        running = Status.completed if finished else Status.interrupted
        status = np.where(host.alive, running.value, Status.diverged.value).astype(object)
        full = np.full(self.size, Status.skipped.value, dtype=object)
        full[self.active] = status
        return full.astype(str)

    def header(self, state, done, steps, interrupted):
        host = self.host(state)
        return {
            "step": _expand(host.step, self.active, self.size, 0).tolist(),
            "status": self.statuses(host, done, steps).tolist(),
        }

    def report(self, hist):
        terms = {k: _expand(v[:, -1], self.active, self.size, np.nan) for k, v in hist.items()}
        total = terms["total"][np.isfinite(terms["total"])]
        median = float(np.median(total)) if total.size else np.nan
        return terms, f"median loss={median:.3e}"


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
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = False,
    callback: Callable[[int, dict], None] | None = None,
    tol: float | None = None,
) -> FitResult:
    """Fit the same `problem` to each of `B` datasets, item by item in parallel.

    Item `b` minimises `L_b(theta_b) = sum_k w_k L_k(theta_b; data_b)`, the problem's
    weighted loss with its data (or known) fields replaced by `data_stack[name][b]`. The
    items share nothing but the compiled code: the update of item `b` is `fit`'s optimiser
    step on `L_b`, and `vmap` runs all `B` at once.

    **Arguments:**

    - `problem`: a `Problem`; its own data arrays give the shapes (and the masks, shared by
      all items).
    - `data_stack`: `{name: array of shape (B, *grid)}` for data or known fields of `problem`.
      An item with NaN or inf at observed nodes (or in a known field) is left out: status
      `"skipped"`, the reason in `reasons`, NaN in its arrays; the others are unaffected.
    - `unknowns`: one initial guess `{name: field}` used for every item, or a list of `B`
      guesses of the same structure.
    - `optimiser`: any optax transformation (default `default_optimiser(steps)`).
    - `steps`, `chunk`: total steps per item, and steps per compiled `lax.scan`.
    - `mesh`: `None` (default devices) or a 1-D `jax.sharding.Mesh` (`batch_mesh(n)`): the
      item axis is split over its devices (padded with copies of the last item to a
      multiple of the device count; the copies are dropped from the result).
    - `dtype`: working float dtype of data and parameters: `None` (JAX's default: float32,
      or float64 under `jax_enable_x64`), `"float32"` or `"float64"`.
    - `names`: optional item labels, kept in the result.
    - `checkpoint`, `checkpoint_every`, `resume`: as in `fit` (the whole batch's state in one
      file, its history in `<checkpoint>.history`); the signature also covers the stacked
      data, the skipped items and `dtype`. A checkpoint may be resumed with another `mesh`.
    - `progress`: show a progress bar; `callback(step, terms)` after each chunk, `terms`
      `{term: (B,) array}` of each item's last values (NaN for skipped items).
    - `tol`: as in `fit`: stop after the first chunk over which every item's total loss
      changed by less than `tol` (relatively); the items then end `completed`.

    **Returns:** a batched `FitResult` with per-item `values`, `fields`, `history`,
    `status`, `steps` and `final_loss`. Deterministic; item `b` equals
    `fit(problem_b, unknowns_b, optimiser, steps, chunk)` to round-off (up to the step of a
    divergence, which `fit` stops at and `fit_batch` records per item), and a resumed batch
    equals an uninterrupted one.

    **Solved steady states.** On the CPU backend a `Steady` state is solved by BiCGStab
    (its `rtol`/`atol`, DST preconditioner) in a batch even where `fit` would factorise the
    dense Jacobian (`solver="auto"` on a small grid; an explicit `"direct"` too, with a
    `RuntimeWarning`): the batched dense-LU step can hang inside the XLA CPU runtime. Item
    `b` then equals `fit` of `problem_b` with `Steady(..., solver="bicgstab")` to round-off,
    and the LU fit to the solver's tolerance.
    """
    start = time.perf_counter()
    if not isinstance(problem, Problem):
        raise MollijaxError(f"`problem` must be a mollijax.Problem, got {type(problem).__name__}.")
    every = _driver.check_run(steps, chunk, checkpoint, checkpoint_every, resume)
    tol = _driver.check_tol(tol)
    if mesh is not None:
        _single_axis(mesh, "mesh")
    if names and len(names) != len(next(iter(data_stack.values()))):
        raise MollijaxError(
            f"`names` must give one label per item: got {len(names)} for a batch of "
            f"{len(next(iter(data_stack.values())))}."
        )
    dtype = _float_dtype(dtype)
    data, known, size, skipped = _check_stack(problem, data_stack)
    active = np.array([b for b in range(size) if b not in skipped], dtype=np.int64)
    template, params, static = _stack_unknowns(unknowns, size)
    problem.check(template)
    # an Evolution's substeps, from the (first) initial guess
    problem = problem.prepare(unknowns if isinstance(unknowns, Mapping) else unknowns[0])
    problem = _krylov_steady(problem)
    optimiser = default_optimiser(steps) if optimiser is None else optimiser
    opt = _with_extra_args(optimiser)

    prob = _cast(problem, dtype)
    params = jax.tree_util.tree_map(lambda x: x[active], _cast(params, dtype))
    data = {k: jnp.asarray(v[active], dtype) for k, v in data.items()}
    known = {k: jnp.asarray(v[active], dtype) for k, v in known.items()}
    state = _driver.init_state(params, _driver.initial_opt_state(opt, params, True), {},
                               (len(active),))
    run = _Batched(prob, None, None, static, opt, active, size, mesh)
    run.data, run.known = run.place((data, known))

    ckpt = None
    if checkpoint is not None:
        signature = {
            "grid": list(problem.grid.shape),
            "terms": sorted(problem.term_names()),
            "unknowns": sorted(template),
            "optimiser": _driver.optimiser_kind(state.opt_state),
            "batch": size,
            "skipped": sorted(skipped),
            "dtype": dtype.name,
            "data": _driver.data_hash(problem.data, problem.masks, problem.known, data, known),
        }
        ckpt = Checkpointer(checkpoint, signature)
    done, history = 0, []
    if resume:
        loaded = ckpt.load(state)
        if loaded is not None:
            header, state, history = loaded
            done = int(header["done"])

    state, done, interrupted = _driver.drive(
        run, run.place(state), done, history, steps=steps, chunk=chunk, checkpointer=ckpt,
        every=every, progress=progress, callback=callback, tol=tol,
    )
    return _batch_result(problem, run, state, done, steps, history, skipped, names, start, ckpt)


def _batch_result(problem, run, state, done, steps, history, skipped, names, start, ckpt):
    active, size = run.active, run.size
    host = run.host(state)
    taken = np.asarray(host.step, dtype=np.int64)
    status = run.statuses(host, done, steps)
    hint = _driver.divergence_hint(problem)
    reasons = []
    for b in range(size):
        if b in skipped:
            reasons.append(skipped[b])
            continue
        s = int(taken[np.searchsorted(active, b)])
        if status[b] == Status.diverged.value:
            why = (f"diverged at step {s + 1}; kept the last parameters with a finite loss "
                   f"(step {s})")
            reasons.append(f"{why}. {hint}" if hint else why)
        elif status[b] == Status.interrupted.value:
            reasons.append(f"interrupted at step {s}")
        else:
            reasons.append("")

    def expand(x):
        x = np.asarray(x)
        return _expand(x, active, size, _nan_fill(x))

    params = jax.tree_util.tree_map(lambda x: jnp.asarray(expand(x)),
                                    _driver.result_params(host))
    values, fields = _batch_outputs(_driver.result_params(state), run.data, run.known,
                                    run.prob, run.static)
    values = {k: expand(gather(v)[: len(active)]) for k, v in values.items()}
    fields = {k: expand(gather(v)[: len(active)]) for k, v in fields.items()}
    names_ = list(history[0][1]) if history else []
    hist = {}
    for k in names_:
        h = np.concatenate([r[k] for _, r in history], axis=1)
        t = np.arange(h.shape[1])
        hist[k] = expand(np.where(t[None, :] < taken[:, None], h, np.nan))
    n_ok = int(np.sum(status == Status.completed.value))
    return FitResult(
        unknowns=eqx.combine(params, run.static),
        values=values,
        fields=fields,
        history=hist,
        status=status,
        steps=_expand(taken, active, size, 0),
        wall_time=time.perf_counter() - start,
        message=f"{n_ok}/{size} items completed ({len(skipped)} skipped)" + (
            f"; converged at step {run.converged_at} ({run.convergence})"
            if run.converged_at is not None else ""
        ),
        checkpoint=str(ckpt.path) if ckpt is not None else None,
        final_loss=expand(host.loss),
        names=tuple(str(n) for n in names),
        reasons=tuple(reasons),
    )

# ----------------------------------------------------------------------------- loading and CLI


def list_stack(path: str | os.PathLike) -> list[str]:
    """Item names of a stack: the sorted file names of a folder, or indices (`load_stack`)."""
    from .io import read_stack

    return read_stack(path)[1]


def load_stack(
    path: str | os.PathLike, *, key: str | None = None, dtype=np.float64
) -> np.ndarray:
    """A stack of datasets as one array of shape `(B, *grid)`, read defensively
    (`mollijax.io.read_stack`: no unpickling, truncated or damaged files named).

    **Arguments:**

    - `path`: a folder of one item per file, in sorted file-name order: `.npy` arrays, TIFF
      files (every page: a multi-page TIFF is one item of shape `(pages, h, w)`; a ragged
      one is an error) or PNG/JPEG/BMP images (through Pillow; colour averaged over
      channels); or one `.npy`/TIFF file or `.npz` archive whose first axis is the item
      axis (`key` names the archive's array; it may be omitted when it holds one).
    - `dtype`: NumPy dtype of the result (float64 by default; `fit_batch` casts to its
      working dtype).

    **Returns:** a NumPy array `(B, *grid)`. Items of different shapes, missing or damaged
    files are a `mollijax.io.DataFileError` naming the file.
    """
    from .io import read_stack

    return read_stack(path, key)[0].astype(dtype)


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
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = False,
) -> FitResult:
    """Load a stack, fit every item, optionally save: the function behind a batch CLI run.

    **Arguments:**

    - `problem`, `unknowns`, `optimiser`, `steps`, `chunk`, `dtype`: as in `fit_batch`.
    - `stack`: a folder of images or `.npy` files, a `.npy`/`.npz` file (see `load_stack`)
      or an array `(B, *grid)`.
    - `field`: the data (or known) field of `problem` the stack provides.
    - `devices`: `None` for one device (no sharding), or how many devices to split the
      batch over (`batch_mesh(devices)`).
    - `key`: the array's name in an `.npz` file.
    - `output`: where to write the result (`FitResult.save`), or `None`.
    - `checkpoint`, `checkpoint_every`, `resume`, `progress`: as in `fit_batch`.
    """
    if isinstance(stack, str | os.PathLike):
        names = list_stack(stack) if pathlib.Path(stack).is_dir() else []
        arr = load_stack(stack, key=key)
    else:
        arr, names = np.asarray(stack), []
    mesh = None if devices is None else batch_mesh(devices)
    result = fit_batch(
        problem, {field: arr}, unknowns, optimiser, steps=steps, chunk=chunk, mesh=mesh,
        dtype=dtype, names=names, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        resume=resume, progress=progress,
    )
    if output is not None:
        result.save(output)
    return result
