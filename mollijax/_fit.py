"""Training: `fit(problem, unknowns, optimiser) -> FitResult`.

One jitted function runs a chunk of optimiser steps with `lax.scan`; the driver's Python loop
(`_driver.drive`, shared with `fit_batch`) runs the chunks, records the history, updates
adaptive weights, writes checkpoints and drives the progress bar. Each step keeps its update
only if the loss and the new parameters are finite; the first non-finite step freezes the
parameters at their last finite value and the run stops with status `diverged`.
"""

from __future__ import annotations

import functools
import os
import pathlib
import time
import warnings
from collections.abc import Callable, Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax

from . import _cache, _driver
from ._driver import Checkpointer, RecompileWarning as RecompileWarning, TrainState
from ._errors import MollijaxError
from ._problem import Problem
from ._result import FitResult as FitResult, Status as Status


def default_optimiser(steps: int, learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """Adam with a cosine decay of the learning rate to 1 % over `steps`."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.01))


@functools.lru_cache(maxsize=64)
def _with_extra_args(optimiser):
    # one wrapper per optimiser object, so that compiled chunks are reused across fits
    return optax.with_extra_args_support(optimiser)


def _term_names(problem: Problem, unknowns) -> list[str]:
    names = [f"data:{n}" for n in problem.data if n in unknowns]
    return names + problem.term_names()


def _signature(problem: Problem, unknowns, opt_state) -> dict:
    """What a checkpoint must match to be resumed: grid, terms, unknowns, optimiser, data."""
    return {
        "grid": list(problem.grid.shape),
        "terms": sorted(problem.term_names()),
        "unknowns": sorted(unknowns),
        "optimiser": _driver.optimiser_kind(opt_state),
        "data": _driver.data_hash(problem.data, problem.masks, problem.known),
    }


class _Single(_driver.Run):
    desc = "fit"

    def __init__(self, problem, static, opt, balanced, tol=None, note=None):
        self.problem, self.static, self.opt, self.balanced = problem, static, opt, balanced
        self.tol = tol
        self.grad_norms: tuple[float, float] | None = None  # (first step's, latest step's)
        self.note = note  # why a compilation of this fit would be a recompilation
        self.compiled: set[tuple] = set()  # (compiled version, chunk length) run so far
        # the accepted point and the result's (values, fields) there, where a chunk kept
        # them (`mollijax.lbfgs`): the result then needs no integration or solve of its own
        self.outputs = None
        self._kept = None  # a trial-point chunk's accepted terms, for the next chunk

    def _check_compiles(self, before: int, key: tuple):
        """`key`: (the chunk's compiled version, its length)."""
        if _driver.TRACES["run_chunk"] != before:
            if key in self.compiled:
                warnings.warn(
                    f"fit: the training step for chunks of {key[1]} steps compiled again "
                    "within one fit (the training state changed type between chunks).",
                    _driver.RecompileWarning, stacklevel=5,
                )
            elif self.note is not None:
                warnings.warn(f"fit: {self.note}", _driver.RecompileWarning, stacklevel=5)
                self.note = None
        self.compiled.add(key)

    def advance(self, state, done, n):
        if self.balanced:
            w = _driver.balance(state.params, state.weights, self.problem, self.static,
                                self.balanced)
            state = eqx.tree_at(lambda s: s.weights, state, w)
        first = jnp.asarray(done, jnp.int32)
        before = _driver.TRACES["run_chunk"]
        # the gradient norm is always recorded (a norm per step): a fit with `tol` and one
        # without then share one compiled chunk (auto_run's weight trials run without `tol`,
        # its final fit with it: that was a second compile of the same step, 8-10 s on a
        # 33 x 33 plate)
        runner = _driver.chunk_runner(self.problem, done)
        state, hist = runner(state, self.problem, first, n, self.static, self.opt, True, True)
        self._check_compiles(before, (id(runner), n))
        found, outputs = hist.pop(_driver.OUTPUTS, (False, None))
        if bool(found):
            self.outputs = outputs
        kept = hist.pop(_driver.KEPT, None)
        hist = {k: np.asarray(v) for k, v in hist.items()}
        if kept is not None:
            hist = self._fill_kept(hist, {k: float(v) for k, v in kept.items()})
        norms = hist.pop(_driver.GRAD_NORM, None)
        if norms is not None and norms.size:
            start = self.grad_norms[0] if self.grad_norms else float(norms[0])
            self.grad_norms = (start, float(norms[-1]))
        return state, hist

    def _fill_kept(self, hist: dict, kept: dict) -> dict:
        """The terms of a trial-point optimiser's chunk, with the steps before its first
        acceptance (NaN: their accepted point is the previous chunk's last) given the
        previous chunk's accepted terms; without them (a resumed run) they stay NaN."""
        previous, self._kept = self._kept, (
            kept if all(np.isfinite(v) for v in kept.values()) else self._kept)
        if previous is None:
            return hist
        out = dict(hist)
        for k, value in previous.items():
            h = out.get(k)
            if h is None or not h.size:
                continue
            finite = np.isfinite(h)
            lead = int(np.argmax(finite)) if finite.any() else h.size
            if lead:
                out[k] = h.copy()
                out[k][:lead] = value
        return out

    def converged(self, state, hist, tol):
        total = np.asarray(hist["total"], dtype=np.float64)
        # from the loss before the chunk's first step to the loss at its final iterate
        why = _driver.relative_change(total[0], float(state.loss), tol, total.shape[0])
        if why is not None and self.grad_norms is not None:
            g0, g = self.grad_norms
            why += f"; gradient norm {g:.2e}" + (f" ({g / g0:.1e} of the first step's)"
                                                  if g0 > 0 else "")
        return why

    def any_alive(self, state):
        return bool(state.alive)

    def host(self, state):
        return state

    def status(self, state, done, steps, interrupted) -> Status:
        if not bool(state.alive):
            return Status.diverged
        if self.converged_at is not None:
            return Status.completed
        return Status.completed if done >= steps else Status.interrupted

    def header(self, state, done, steps, interrupted):
        status = self.status(state, done, steps, interrupted)
        out = {"step": int(state.step), "status": status.value}
        if self.converged_at is not None:
            out["converged"] = {"step": self.converged_at, "why": self.convergence}
        return out

    def report(self, hist):
        terms = {k: float(v[-1]) for k, v in hist.items()}
        return terms, f"loss={terms['total']:.3e}"


def fit(
    problem: Problem,
    unknowns: Mapping,
    optimiser: optax.GradientTransformation | None = None,
    *,
    steps: int = 1000,
    chunk: int = 100,
    adaptive: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    tol: float | None = None,
) -> FitResult:
    """Fit the `unknowns` of `problem` by minimising its weighted loss.

    **Arguments:**

    - `problem`: a `Problem`.
    - `unknowns`: `{name: field}` (`Constant`, `GridField`, `NetworkField`), the initial guess.
    - `optimiser`: any optax transformation (default `default_optimiser(steps)`); L-BFGS
      (`optax.lbfgs()`) works too: the step passes `value`, `grad` and `value_fn`.
    - `steps`: total optimiser steps (including those done before a resume).
    - `chunk`: steps per compiled `lax.scan` (history, progress and checks happen between).
    - `adaptive`: `None` or `"gradnorm"` (weights `w_k = sum_j |grad L_j| / |grad L_k|`,
      smoothed, updated every chunk, for data/residual/condition terms).
    - `checkpoint`: file path; written atomically every `checkpoint_every` steps (default:
      each chunk), at the end, on divergence (last finite state) and on Ctrl-C or SIGTERM.
      The loss history goes to the append-only companion file `<checkpoint>.history`.
    - `resume`: continue from `checkpoint` if it exists. It must come from the same run:
      grid, loss terms, unknowns, optimiser kind and data (SHA-256) are compared, and a
      mismatch raises `CheckpointMismatchError` naming what differs; a corrupted or
      truncated checkpoint or history raises `CorruptFileError`. A diverged run stays
      diverged.
    - `progress`: show a progress bar; `callback(step, terms)` is called after each chunk
      (`terms`: the chunk's last `{term: float}`); raising `KeyboardInterrupt` from it stops
      the run like Ctrl-C; returning a string stops it as converged, the string saying why
      (a stopping rule of the caller's, e.g. the discrepancy principle).
    - `tol`: `None` (run all `steps`) or a convergence test, decided after each chunk: stop
      when the relative change of the total loss over the chunk,
      `|L_start - L_end| / max(|L_start|, |L_end|)`, is below `tol`. The run then ends
      `completed` with the message `"converged at step N (...)"` (which also gives the
      gradient norm) and `steps = N`; `steps` stays the cap. A resumed run that had
      converged stays converged.

    **Returns:** a `FitResult`. Deterministic: the same inputs give the same result, and a
    resumed run reaches the same parameters as an uninterrupted one.
    """
    start = time.perf_counter()
    every = _driver.check_run(steps, chunk, checkpoint, checkpoint_every, resume)
    tol = _driver.check_tol(tol)
    problem.check(unknowns)
    problem = problem.prepare(unknowns)
    if adaptive not in (None, "gradnorm"):
        raise MollijaxError(f"`adaptive` must be None or 'gradnorm', got {adaptive!r}.")
    optimiser = default_optimiser(steps) if optimiser is None else optimiser
    unknowns = dict(unknowns)
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)
    # an equal problem (the same shapes, and functions with the same code and closed-over
    # values, an inline lambda included) reuses an earlier fit's compiled step
    (problem, static, optimiser), note = _driver.canonical(problem, static, optimiser)
    opt = _with_extra_args(optimiser)
    balanced = tuple(t for t in _term_names(problem, unknowns) if not t.startswith("reg:"))
    weights = {t: jnp.asarray(1.0) for t in balanced} if adaptive else {}
    state = _driver.init_state(params, _driver.initial_opt_state(opt, params), weights)
    run = _Single(problem, static, opt, balanced if adaptive else (), tol, note)

    ckpt = None
    if checkpoint is not None:
        ckpt = Checkpointer(checkpoint, _signature(problem, unknowns, state.opt_state))
    done, history = 0, []
    if resume:
        loaded = ckpt.load(state)
        if loaded is not None:
            header, state, history = loaded
            done = int(header["done"])
            converged = header.get("converged")
            if tol is not None and converged is not None:
                run.converged_at, run.convergence = int(converged["step"]), converged["why"]

    state, done, interrupted = _driver.drive(
        run, state, done, history, steps=steps, chunk=chunk, checkpointer=ckpt, every=every,
        progress=progress, callback=callback, tol=tol,
    )
    return _result(problem, static, state, done, steps, history, run, interrupted, start, ckpt)


@_cache.quick_jit  # runs once
def _final_values(problem: Problem, params, static):
    """`(values, fields)` of a fit's result: each unknown on its sub-grid, and every field on
    the full grid (an evolved or solved state integrated or solved). One compiled function:
    run eagerly, an evolved state's propagator or a solved state's factorisation compiled each
    primitive on its own (about 2.6 s of a 1-D heat fit's 10 s, ad hoc profile). `problem` and
    `static` are the fit's canonical ones, so an equal problem reuses the compiled code."""
    return _driver.outputs(problem, eqx.combine(params, static))


def _result(problem, static, state: TrainState, done, steps, history, run, interrupted, start,
            ckpt) -> FitResult:
    status = run.status(state, done, steps, interrupted)
    taken = int(state.step)
    if status == Status.diverged:
        message = (
            f"diverged at step {taken + 1}: the loss, gradients or parameters became "
            f"NaN/inf; returning the last parameters with a finite loss (step {taken})"
        )
        if run.failure:
            message += f"; a runtime check failed in the compiled step: {run.failure}"
        hint = _driver.divergence_hint(problem)
        if hint:
            message += f". {hint}"
    elif status == Status.interrupted:
        message = f"interrupted at step {taken}; the state of step {taken} is kept"
    elif run.converged_at is not None:
        message = f"converged at step {taken} ({run.convergence})"
    elif getattr(run, "tol", None) is not None:
        # the step cap, not the convergence test, ended it: a user reads "completed" as done
        message = (f"stopped at the step cap ({taken} steps) before meeting tol "
                   f"{run.tol:g}: not converged")
    else:
        message = f"completed {taken} steps"
    if run.outputs is not None:
        params, (values, fields) = run.outputs
    else:
        params = _driver.result_params(state)
        values, fields = _final_values(problem, params, static)
    trained = eqx.combine(params, static)
    values = {k: np.asarray(v) for k, v in values.items()}
    fields = {k: np.asarray(v) for k, v in fields.items()}
    names = list(history[0][1]) if history else []
    hist = {k: np.concatenate([h[k] for _, h in history])[:taken] for k in names}
    return FitResult(
        unknowns=trained,
        values=values,
        fields=fields,
        history=hist,
        status=status,
        steps=taken,
        wall_time=time.perf_counter() - start,
        message=message,
        checkpoint=str(pathlib.Path(ckpt.path)) if ckpt is not None else None,
        final_loss=float(state.loss),
    )
