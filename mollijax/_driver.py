"""The training driver behind `fit` and `fit_batch`: one jitted chunk, one Python loop.

A run's whole mutable state is one `TrainState`. One jitted function advances it by a chunk
of optimiser steps with `lax.scan` (`run_chunk`); a batch runs the same chunk `vmap`-ed over
a leading item axis (`run_batch_chunk`). Each step keeps its update only if the loss, the
gradients and the new parameters are finite, and the chunk tracks the last iterate whose loss
was finite; an item whose chunk ends non-finite is frozen at that iterate (`alive` False), so
the state always holds the last finite parameters of every item.

`drive` is the one Python loop over chunks: it records the history, drives the progress bar
and the callback, writes checkpoints (atomically, every `checkpoint_every` steps, at the end,
on divergence and on interrupt; the history goes to an append-only companion file) and turns
Ctrl-C, and SIGTERM while it runs, into a clean stop that keeps the state of the last
finished chunk.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import signal
import sys
import threading
import types
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PyTree

from . import _cache, _checkpoint
from ._checkpoint import CheckpointMismatchError, CorruptFileError, HistoryLog
from ._errors import MollijaxError
from ._lbfgs import trial_state


class TrainState(eqx.Module):
    """Everything a run carries from one chunk to the next (a leading item axis in a batch).

    - `params`: the inexact-array leaves of the unknowns (the last finite-loss iterate once
      an item diverged);
    - `opt_state`: the optimiser's state at `params`;
    - `weights`: adaptive loss weights `{term: scalar}` (empty without `adaptive`);
    - `step`: optimiser steps behind `params`;
    - `loss`: weighted loss at `params` (NaN before the first chunk);
    - `alive`: False once the item diverged.
    """

    params: PyTree
    opt_state: PyTree
    weights: dict
    step: Int[Array, "*items"]
    loss: Float[Array, "*items"]
    alive: Bool[Array, "*items"]


def strongly_typed(tree):
    """`tree` with every weakly typed array leaf made strongly typed (same dtype).

    An optimiser's initial state may hold weakly typed scalars (optax's L-BFGS line-search
    info); the state a compiled chunk returns holds strongly typed ones, so without this the
    second chunk would miss the compilation cache and compile again.
    """

    def strong(x):
        if isinstance(x, jax.Array) and getattr(x, "weak_type", False):
            return jnp.asarray(x, dtype=x.dtype)
        return x

    return jax.tree_util.tree_map(strong, tree)


def init_state(params, opt_state, weights: dict, items: tuple[int, ...] = ()) -> TrainState:
    """The state before the first step (`items`: `()` for one fit, `(B,)` for a batch)."""
    return TrainState(
        params=params,
        opt_state=strongly_typed(opt_state),
        weights=weights,
        step=jnp.zeros(items, jnp.int32),
        loss=jnp.full(items, jnp.nan, jnp.zeros(()).dtype),
        alive=jnp.ones(items, bool),
    )


# ----------------------------------------------------------------------------- the chunk

GRAD_NORM = "grad_norm"  # history key of the per-step gradient norm (convergence tests only)
OUTPUTS = "outputs"  # chunk history key of the result's outputs at the accepted point
KEPT = "kept"  # chunk history key of the accepted point's terms after the chunk's last step


def _all_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if eqx.is_inexact_array(x)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _tree_where(cond, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)


def _loss_fn(p, static, w, prob):
    return prob.loss(eqx.combine(p, static), w or None)


def outputs(prob, trained, fields=None):
    """`(values, fields)` of a fit's result: each unknown on its sub-grid, and every field on
    the full grid (`prob.grid_values`, unless already computed and given as `fields`)."""
    values = {k: f.on_subgrid(prob.grid) for k, f in trained.items()}
    return values, prob.grid_values(trained) if fields is None else fields


def _loss_outputs_fn(p, static, w, prob):
    """`_loss_fn` with the result's `outputs` at `p` in its auxiliary output."""
    trained = eqx.combine(p, static)
    terms, fields = prob._terms_and_fields(trained)
    return prob.total(terms, w or None), (terms, outputs(prob, trained, fields))


def _stores_value_and_grad(opt_state) -> bool:
    """Whether the optimiser keeps the loss and gradient at its current iterate in its state
    (a line search does: optax's L-BFGS stores them for the accepted step)."""
    try:
        return (optax.tree.get(opt_state, "value") is not None
                and optax.tree.get(opt_state, "grad") is not None)
    except (KeyError, ValueError):  # absent, or more than one
        return False


def _after_chunk(state: TrainState, first, length: int, p, s, gp, gs, gk, gl, end, ok):
    """The state after a chunk that ended at `(p, s)` with loss `end`: an item that had
    diverged before stays frozen (its chunk runs, its result is dropped), one that failed in
    this chunk (`ok` false) returns to its last good step `(gp, gs, gk, gl)`."""
    keep = ~state.alive
    failed = state.alive & ~ok
    return TrainState(
        params=_tree_where(keep, state.params, _tree_where(failed, gp, p)),
        opt_state=_tree_where(keep, state.opt_state, _tree_where(failed, gs, s)),
        weights=state.weights,
        step=jnp.where(keep, state.step, jnp.where(failed, gk, first + length)),
        loss=jnp.where(keep, state.loss, jnp.where(failed, gl, end)),
        alive=state.alive & ok,
    )


def result_params(state: TrainState):
    """The parameters a fit reports: `state.params`, or for a trial-point optimiser
    (`mollijax.lbfgs`, whose parameters are the next trial) the accepted point in its state.
    `state` may carry an item axis (a batch)."""
    ts = trial_state(state.opt_state)
    if ts is None:
        return state.params
    if state.step.ndim == 0:
        return ravel_pytree(state.params)[1](ts.accepted)
    unravel = ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], state.params))[1]
    return jax.vmap(unravel)(ts.accepted)


def _trial_chunk(state: TrainState, prob, first, length: int, static, opt, grad_norm: bool,
                 with_outputs: bool = False):
    """`_chunk` for a trial-point optimiser (`mollijax.lbfgs`): one loss-and-gradient
    evaluation per step, at the trial; the history, the loss and the last good step are the
    accepted point's (a rejected trial, even a non-finite one, is the optimiser's business).
    With `with_outputs` the history also holds, under `OUTPUTS`, `(found, (params,
    outputs))`: the last point accepted in this chunk and the result's `outputs` there
    (`found` False when none was), kept from the evaluation that accepted it (no further
    integration or solve, no eager unravelling of the optimiser's flat point)."""
    w = state.weights

    def value_fn(q):
        return _loss_fn(q, static, w, prob)[0]

    def evaluate(q):
        if with_outputs:
            loss, (terms, out) = _loss_outputs_fn(q, static, w, prob)
            return loss, (terms, (q, out))
        loss, terms = _loss_fn(q, static, w, prob)
        return loss, (terms, None)

    shapes = jax.eval_shape(lambda q: evaluate(q)[1], state.params)
    terms0, out0 = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype), shapes)

    def step(carry, k):
        p, s, gk, gl, ok, kept, found, out = carry
        (loss, (terms, new_out)), grads = jax.value_and_grad(evaluate, has_aux=True)(p)
        # the history holds the accepted point at the start of each step (as `_chunk`'s
        # holds the iterate the step starts from); the very first trial is the start itself
        before = trial_state(s)
        start = ~jnp.isfinite(before.accepted_value)
        kept = _tree_where(start, terms, kept)
        record = dict(kept, total=jnp.where(start, loss, before.accepted_value))
        if grad_norm:
            record[GRAD_NORM] = jnp.where(start, optax.tree.norm(grads),
                                          jnp.linalg.norm(before.accepted_grad))
        with jax.numpy_dtype_promotion("standard"):
            updates, s_new = opt.update(grads, s, p, value=loss, grad=grads, value_fn=value_fn)
        p_new = optax.apply_updates(p, updates)
        ts = trial_state(s_new)
        value = ts.accepted_value
        step_ok = ok & jnp.isfinite(value) & _all_finite(p_new)
        p, s = _tree_where(step_ok, p_new, p), _tree_where(step_ok, s_new, s)
        kept = _tree_where(ts.last_accepted, terms, kept)
        accepted = step_ok & ts.last_accepted
        out = _tree_where(accepted, new_out, out)
        gk = jnp.where(step_ok, k + 1, gk)
        gl = jnp.where(step_ok, value.astype(gl.dtype), gl)
        return (p, s, gk, gl, step_ok, kept, found | accepted, out), record

    init = (state.params, state.opt_state, first, state.loss, jnp.array(True), terms0,
            jnp.array(False), out0)
    ks = first + jnp.arange(length, dtype=first.dtype)
    (p, s, gk, gl, ok, kept, found, out), hist = jax.lax.scan(step, init, ks)
    if with_outputs:
        # `kept`: the terms of the point accepted last in this chunk (NaN where none was);
        # a step before the chunk's first acceptance records NaN terms (the accepted point
        # came from an earlier chunk), which the caller fills from the previous `kept`
        hist = dict(hist, **{OUTPUTS: (found, out), KEPT: kept})
    # a step is kept only when it is good, so the final iterate is the last good one
    return _after_chunk(state, first, length, p, s, p, s, gk, gl, gl, ok), hist


def _chunk(state: TrainState, prob, first, length: int, static, opt, grad_norm: bool = False,
           with_outputs: bool = False):
    """`length` steps of one item from global step `first` (a `lax.scan`); with `grad_norm`
    the history also holds each step's gradient norm under `GRAD_NORM`. `with_outputs`: see
    `_trial_chunk` (other optimisers ignore it: their final iterate is never evaluated)."""
    if trial_state(state.opt_state) is not None:
        return _trial_chunk(state, prob, first, length, static, opt, grad_norm, with_outputs)
    w = state.weights
    # (not with adaptive weights: the stored loss was weighted by the previous chunk's)
    reuse = _stores_value_and_grad(state.opt_state) and not w

    def value_fn(q):
        return _loss_fn(q, static, w, prob)[0]

    def step(carry, k):
        p, s, gp, gs, gk, gl, ok = carry
        if reuse:
            # the line search already evaluated the loss and its gradient at the accepted
            # iterate: take them from the state (computed afresh only on the first step,
            # where the state holds inf); the terms for the history need a forward pass only
            loss, grads = optax.value_and_grad_from_state(value_fn)(p, state=s)
            terms = _loss_fn(p, static, w, prob)[1]
        else:
            (loss, terms), grads = jax.value_and_grad(_loss_fn, has_aux=True)(p, static, w, prob)
        # optax's schedules mix Python floats with int32 counters: keep its update out of
        # strict dtype promotion (which tests enable for mollijax's own code)
        with jax.numpy_dtype_promotion("standard"):
            updates, s_new = opt.update(grads, s, p, value=loss, grad=grads, value_fn=value_fn)
        p_new = optax.apply_updates(p, updates)
        loss_ok = ok & jnp.isfinite(loss)
        gp, gs = _tree_where(loss_ok, p, gp), _tree_where(loss_ok, s, gs)
        gk = jnp.where(loss_ok, k, gk)
        gl = jnp.where(loss_ok, loss.astype(gl.dtype), gl)
        step_ok = loss_ok & _all_finite(grads) & _all_finite(p_new)
        p, s = _tree_where(step_ok, p_new, p), _tree_where(step_ok, s_new, s)
        record = dict(terms, total=loss)
        if grad_norm:
            record[GRAD_NORM] = optax.tree.norm(grads)
        return (p, s, gp, gs, gk, gl, step_ok), record

    p0, s0 = state.params, state.opt_state
    init = (p0, s0, p0, s0, first, state.loss, jnp.array(True))
    ks = first + jnp.arange(length, dtype=first.dtype)
    (p, s, gp, gs, gk, gl, ok), hist = jax.lax.scan(step, init, ks)
    # the loss at the final iterate: a last update that left finite parameters with a
    # non-finite loss is caught here, not one chunk later (a line search evaluated it at
    # the accepted iterate already: taken from its state, no further copy of the loss)
    if reuse:
        end = optax.tree.get(s, "value").astype(gl.dtype)
    else:
        end = _loss_fn(p, static, w, prob)[0].astype(gl.dtype)
    ok = ok & jnp.isfinite(end)
    return _after_chunk(state, first, length, p, s, gp, gs, gk, gl, end, ok), hist


# How many times each compiled function was traced (each trace is followed by a compile):
# tests count compilations with it, and `fit` warns when a fit compiles again.
TRACES: collections.Counter = collections.Counter()


def _run_chunk(state: TrainState, prob, first, length: int, static, opt, grad_norm: bool = False,
               with_outputs: bool = False):
    """One fit: `length` steps of `state` (module level, so compiled chunks are reused)."""
    TRACES["run_chunk"] += 1
    return _chunk(state, prob, first, length, static, opt, grad_norm, with_outputs)


# On small problems a fit's time is mostly compiling its chunk: compiled quickly
# (`_cache.QUICK_COMPILE`, or `_cache.LEVEL_0` for plain residual fits; `chunk_runner`).
# Grids of at most this many nodes compile their training chunks quickly; the environment
# variable overrides it (0: never).
QUICK_COMPILE_MAX_NODES = 20_000
QUICK_COMPILE_ENV = "MOLLIJAX_QUICK_COMPILE_MAX_NODES"
# ... but only the chunks that start before this step: a quick chunk's steps run up to about
# 2x slower, so a long fit (a noise-free fit to its cap) pays one full compile at this step
# and runs the rest at full speed. On the step count, not on timings, so that a fit stays
# deterministic and a resumed run equals an uninterrupted one.
QUICK_COMPILE_STEPS = 2000

run_chunk = eqx.filter_jit(_run_chunk)
run_chunk_quick = _cache.quick_jit(_run_chunk)  # evolved or solved states
run_chunk_level0 = _cache.quick_jit(_run_chunk, level_only=True)  # plain residual fits


def quick_compile_max_nodes() -> int:
    """`QUICK_COMPILE_MAX_NODES`, or the environment variable `MOLLIJAX_QUICK_COMPILE_MAX_NODES`
    (a non-negative integer) when it is set."""
    value = os.environ.get(QUICK_COMPILE_ENV)
    if value is None:
        return QUICK_COMPILE_MAX_NODES
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise MollijaxError(
            f"Environment variable {QUICK_COMPILE_ENV}={value!r}: expected a non-negative "
            "integer (the most grid nodes whose training chunks compile quickly; 0: never)."
        )
    return limit


@_cache.quick_jit  # runs once per fit
def initial_opt_state(opt, params, batched: bool = False):
    """`opt.init(params)` as one compiled program (eagerly, each array it creates compiled an
    operation of its own: about 0.2 s of a small fit); `batched`: `params` has an item axis
    (`fit_batch`), each item initialised on its own."""
    return jax.vmap(opt.init)(params) if batched else opt.init(params)


def chunk_runner(prob, first: int = 0):
    """`run_chunk`, or for a problem on a grid of at most `quick_compile_max_nodes()` nodes
    and a chunk that starts before step `QUICK_COMPILE_STEPS` a quickly compiled one:
    `run_chunk_quick` (level 0, the older fusion emitters) where an evolved or solved state
    makes the loss a long program of small operations, `run_chunk_level0` (level 0 only)
    for a plain residual fit, whose steps the older emitters slow more than they speed its
    compile (`_cache.LEVEL_0`)."""
    if prob.grid.size > quick_compile_max_nodes() or first >= QUICK_COMPILE_STEPS:
        return run_chunk
    if prob.evolution is not None or prob.steady is not None:
        return run_chunk_quick
    return run_chunk_level0


# ----------------------------------------------------------------------------- cache keys
#
# `filter_jit` keys its compiled code on the static parts of its arguments, and a Python
# function is hashed by identity: a residual written as an inline lambda is a new object on
# every call of the code that builds the problem, so every fit would compile again although
# nothing it computes changed. `canonical` keys the arguments on what matters instead: array
# shapes and dtypes, and for functions their code, closed-over values, defaults and the
# globals they read. When that key was seen before, the static parts of the earlier
# arguments (equal by that key, so computing the same thing) are reused with the new
# arrays, and the compiled chunk is found in the cache.

class _Keyer:
    """Computes `key(x)`: a hashable value equal for objects that compute the same thing.

    Arrays of up to 4096 elements by value, larger ones by identity; functions defined at a
    module's top level by their qualified name; other functions (lambdas, closures) by their
    code, closed-over values, defaults and the globals they read; modules by name; Modules,
    dataclasses, tuples, lists and dicts by their parts; other hashable objects by value and
    the rest by identity. Each object is keyed once per call (shared parts are not walked
    again). Identity keys are safe: the arguments keyed are alive while compared, and the
    cache keeps the ones it stores alive.
    """

    def __init__(self, loose: bool = False):
        self.memo: dict[int, object] = {}
        self.loose = loose  # identity keys without the identity (which objects they were)

    def _identity(self, x):
        return ("id",) if self.loose else ("id", id(x))

    def __call__(self, x):
        if x is None or isinstance(x, bool | int | float | complex | str | bytes):
            return (type(x).__name__, x)
        i = id(x)
        if i in self.memo:
            return self.memo[i]
        self.memo[i] = ("cycle", i)
        key = self._key(x)
        self.memo[i] = key
        return key

    def _key(self, x):
        if isinstance(x, type):
            return ("type", x)
        if isinstance(x, jax.Array | np.ndarray | np.generic):
            if isinstance(x, jax.core.Tracer):
                return self._identity(x)
            a = np.asarray(x)
            if a.size <= 4096:
                return ("array", a.dtype.str, a.shape, a.tobytes())
            return self._identity(x)
        if isinstance(x, types.ModuleType):
            return ("module", x.__name__)
        if isinstance(x, functools.partial):
            return ("partial", self(x.func), tuple(self(a) for a in x.args),
                    tuple(sorted((k, self(v)) for k, v in x.keywords.items())))
        if isinstance(x, types.MethodType):
            return ("method", self(x.__func__), self(x.__self__))
        if isinstance(x, types.FunctionType):
            return self._function(x)
        if isinstance(x, tuple | list):
            kind = type(x) if hasattr(x, "_fields") else type(x).__name__
            return (kind, tuple(self(v) for v in x))
        if isinstance(x, dict):
            return ("dict", tuple((self(k), self(v)) for k, v in x.items()))
        if isinstance(x, eqx.Module) or dataclasses.is_dataclass(x):
            return (type(x), tuple((f.name, self(getattr(x, f.name, None)))
                                   for f in dataclasses.fields(x)))
        try:
            hash(x)
        except TypeError:
            return self._identity(x)
        if type(x).__hash__ is object.__hash__:
            return self._identity(x)
        return ("object", type(x), x)

    def _function(self, f):
        module = sys.modules.get(getattr(f, "__module__", None) or "")
        if module is not None and "<" not in f.__qualname__:
            owner = module
            for part in f.__qualname__.split("."):
                owner = getattr(owner, part, None)
            if owner is f:  # reachable by name: the same function whenever it is found
                return ("global function", f.__module__, f.__qualname__)
        closure = tuple(
            self(cell.cell_contents) if _cell_filled(cell) else ("empty",)
            for cell in (f.__closure__ or ())
        )
        glob = tuple((n, self(f.__globals__[n])) for n in _global_names(f.__code__)
                     if n in f.__globals__)
        return ("function", f.__code__, closure, glob, self(f.__defaults__),
                self(f.__kwdefaults__))


def static_key(x):
    """A hashable key of `x`, equal for objects that compute the same thing (`_Keyer`)."""
    return _Keyer()(x)


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _global_names(code) -> tuple[str, ...]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


_CANONICAL: collections.OrderedDict = collections.OrderedDict()
_CANONICAL_SIZE = 128


def _structure_key(tree, loose: bool = False):
    """`(leaf shapes and dtypes, key of everything else)` of a pytree."""
    keyer = _Keyer(loose)
    leaves = jax.tree_util.tree_leaves(tree)
    shapes = tuple(
        (tuple(np.shape(v)), np.dtype(v.dtype).str, bool(getattr(v, "weak_type", False)))
        if isinstance(v, jax.Array | np.ndarray | np.generic) else keyer(v)
        for v in leaves
    )
    return shapes, keyer(_static_view(tree))


def _static_view(tree):
    """`tree` with its array leaves replaced by None (what stays when the arrays change)."""
    return jax.tree_util.tree_map(
        lambda v: None if isinstance(v, jax.Array | np.ndarray | np.generic) else v, tree
    )


class RecompileWarning(UserWarning):
    """A fit compiled its training step again where it could have reused compiled code."""


_LOOSE_SEEN: collections.OrderedDict = collections.OrderedDict()


def canonical(*trees):
    """`(trees, note)`: `trees` with their static parts replaced by those of an earlier call
    whose key (see above) was the same, so that compiled chunks are reused.

    `note` is None, or (when no earlier call had this key but one differed only in objects
    keyed by identity: arrays of more than 4096 elements or unhashable objects that a
    function closes over) a sentence for a `RecompileWarning` when the fit does compile.
    """
    try:
        key = _structure_key(trees)
        loose = _structure_key(trees, loose=True)
        hash((key, loose))
    except Exception:  # an unkeyable part: leave the arguments as they are
        return trees, None
    old = _CANONICAL.get(key)
    if old is not None:
        _CANONICAL.move_to_end(key)
        treedef = old[0]
        return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(trees)), None
    note = None
    # warn only when an earlier fit with the same loose key had a different key: the same key
    # seen before but evicted from the table (more than `_CANONICAL_SIZE` other fits since)
    # compiles again for the table's size, not for the caller's objects
    if loose in _LOOSE_SEEN and _LOOSE_SEEN[loose] != key:
        note = (
            "this fit compiles its training step again although an earlier fit had the same "
            "shapes, functions and settings: they differ only in objects compared by identity "
            "(an array of more than 4096 elements or an unhashable object that a function "
            "closes over, whose values are baked into the compiled code). Pass such arrays as "
            "data or `known` fields of the problem instead."
        )
    # the tree structure (its static parts) and, to keep every object keyed by identity
    # alive while its key is stored, the static view; not the arrays
    _CANONICAL[key] = (jax.tree_util.tree_structure(trees), _static_view(trees))
    _LOOSE_SEEN[loose] = key
    _LOOSE_SEEN.move_to_end(loose)
    for table in (_CANONICAL, _LOOSE_SEEN):
        if len(table) > _CANONICAL_SIZE:
            table.popitem(last=False)
    return trees, note


def item_problem(prob, data: dict, known: dict):
    """`prob` with one batch item's data (and known) arrays swapped in."""
    return prob.with_data(data, known or None)  # with_data keeps the fields not given


@eqx.filter_jit
def run_batch_chunk(state: TrainState, data, known, prob, first, length: int, static, opt):
    """A batch: the single chunk `vmap`-ed over the item axis of `state`, `data`, `known`."""

    TRACES["run_batch_chunk"] += 1

    def one(st, d, k):
        return _chunk(st, item_problem(prob, d, k), first, length, static, opt)

    return jax.vmap(one)(state, data, known)


@eqx.filter_jit
def balance(p, w, prob, static, balanced: tuple[str, ...]):
    """Gradient-norm balancing: `w_k <- 0.9 w_k + 0.1 sum_j |grad L_j| / |grad L_k|`."""
    norms = {}
    for t in balanced:
        g = jax.grad(lambda q, t=t: prob.loss_terms(eqx.combine(q, static))[t])(p)
        norms[t] = optax.tree.norm(g)
    total = sum(norms.values())
    return {t: 0.9 * w[t] + 0.1 * total / jnp.maximum(norms[t], 1e-12) for t in balanced}


# ----------------------------------------------------------------------------- signatures


def data_hash(*arrays: dict) -> str:
    """SHA-256 over named arrays (names, dtypes, shapes and bytes), in sorted-name order."""
    h = hashlib.sha256()
    for group in arrays:
        for name in sorted(group):
            a = np.asarray(group[name])
            h.update(json.dumps([name, a.dtype.name, list(a.shape)]).encode())
            h.update(a.tobytes())
        h.update(b"|")
    return h.hexdigest()


def optimiser_kind(opt_state) -> str:
    """The optimiser as its state's node types, e.g. `ScaleByAdamState/ScaleByScheduleState`."""
    kinds: list[str] = []

    def walk(x):
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            kinds.append(type(x).__name__)
        if isinstance(x, tuple | list):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for y in x.values():
                walk(y)

    walk(opt_state)
    return "/".join(kinds) or type(opt_state).__name__


def _describe_mismatch(saved: dict, now: dict) -> str:
    parts = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if a != b:
            if key == "data":
                parts.append("the data differ (their SHA-256 changed)")
            else:
                parts.append(f"{key}: checkpoint {a!r}, now {b!r}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- checkpoints


class Checkpointer:
    """Writes and reads a run's checkpoint: the state file plus its append-only history log."""

    def __init__(self, path: str | os.PathLike, signature: dict):
        self.path = pathlib.Path(path)
        self.signature = signature
        self.log = HistoryLog(self.path.with_name(self.path.name + ".history"))

    def save(self, tree, done: int, extra: dict, new_records: list) -> None:
        committed = self.log.append(new_records)
        header = dict(
            extra, kind="checkpoint", done=int(done), signature=self.signature, history=committed
        )
        _checkpoint.write(self.path, header, tree)

    def load(self, like):
        """`(header, tree, records)` from the checkpoint, or None if there is none yet."""
        if not self.path.exists():
            return None
        header = _checkpoint.read_header(self.path)
        if header.get("kind") != "checkpoint":
            raise CheckpointMismatchError(f"{self.path} is not a training checkpoint.")
        saved = header.get("signature")
        if saved != self.signature:
            what = _describe_mismatch(saved or {}, self.signature)
            raise CheckpointMismatchError(
                f"Checkpoint {self.path} belongs to a different run, refusing to resume: {what}."
            )
        _, tree = _checkpoint.read(self.path, like=like)
        records = self.log.load(header.get("history"))
        done, at, names = int(header["done"]), 0, None
        for start, terms in records:
            lengths = {v.shape[-1] for v in terms.values()}
            if start != at or len(lengths) != 1 or (names is not None and set(terms) != names):
                raise CorruptFileError(
                    f"History {self.log.path}: records are not a contiguous run of the same "
                    f"terms (record at step {start}, expected {at})."
                )
            names, at = set(terms), at + lengths.pop()
        if at != done:
            raise CorruptFileError(
                f"History {self.log.path} covers {at} steps, the checkpoint {done}."
            )
        return header, tree, records


# ----------------------------------------------------------------------------- interrupts


class Interrupts:
    """While active, SIGTERM (and SIGINT, if Python's default handler has it) are recorded and
    raised as `KeyboardInterrupt` at the end of the next (outermost) `critical()` section, so
    the state, the step count and the history are always updated together, and the raise
    never lands inside other code: a `KeyboardInterrupt` raised by the handler wherever the
    interpreter was (e.g. in a `__eq__` that numpy calls from C while JAX checks a dtype)
    surfaced as a `SystemError` and lost the interrupted run's outputs. A signal waits at
    most for the chunk in progress (compiled code does not run Python handlers anyway).

    The previous handlers come back on exit. Outside the main thread nothing is installed.
    """

    def __enter__(self) -> Interrupts:
        self._depth, self._pending, self._previous = 0, False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                current = signal.getsignal(sig)
                if sig == signal.SIGINT and current is not signal.default_int_handler:
                    continue
                if current is signal.SIG_IGN:
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame):
        self._pending = True

    def take_pending(self) -> bool:
        """Whether a signal came since the last raise (and forget it)."""
        pending, self._pending = self._pending, False
        return pending

    @contextlib.contextmanager
    def critical(self, raise_pending: bool = True):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending:
            self._pending = False
            if raise_pending:
                raise KeyboardInterrupt


# ----------------------------------------------------------------------------- the loop


class Run:
    """What `drive` needs from a fit or a batch (implemented by `_fit` and `_batch`)."""

    desc: str = "fit"

    def advance(self, state, done: int, n: int):
        """`(new state, {term: host array (n,) or (B, n)})`: one chunk from step `done`."""
        raise NotImplementedError

    def any_alive(self, state) -> bool:
        raise NotImplementedError

    def host(self, state):
        """The state as written to a checkpoint (host arrays, no padding)."""
        raise NotImplementedError

    def header(self, state, done: int, steps: int, interrupted: bool) -> dict:
        """Status and step(s) for a checkpoint header."""
        raise NotImplementedError

    def report(self, hist: dict) -> tuple[dict, str]:
        """`(terms for the callback, progress-bar postfix)` after a chunk."""
        raise NotImplementedError

    # set by `drive` when a convergence test (`tol`) stopped the run: the step and why
    converged_at: int | None = None
    convergence: str = ""
    # set by `drive` when a runtime check inside the compiled step failed: its message
    failure: str = ""

    def converged(self, state, hist: dict, tol: float) -> str | None:
        """Why the run has converged after this chunk, or None: the relative change of the
        total loss over the chunk, `|L_first - L_last| / max(|L_first|, |L_last|)`, is below
        `tol` (for a batch: for every item with a finite loss)."""
        total = np.asarray(hist["total"], dtype=np.float64)
        if total.shape[-1] < 2:
            return None
        return relative_change(total[..., 0], total[..., -1], tol, total.shape[-1])


def relative_change(first, last, tol: float, n: int) -> str | None:
    first, last = np.asarray(first, np.float64), np.asarray(last, np.float64)
    scale = np.maximum(np.maximum(np.abs(first), np.abs(last)), np.finfo(np.float64).tiny)
    change = np.abs(first - last) / scale
    change = change[np.isfinite(change)]
    if change.size == 0 or float(np.max(change)) >= tol:
        return None
    return f"relative loss change {float(np.max(change)):.2e} over the last {n} steps < tol {tol:g}"


def check_tol(tol) -> float | None:
    """`tol` as a float, or None; anything but a finite number > 0 (or None) is an error."""
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not (0 < tol < np.inf):
        raise MollijaxError(f"`tol` must be None or a finite number > 0, got {tol!r}.")
    return float(tol)


def drive(
    run: Run,
    state,
    done: int,
    history: list,
    *,
    steps: int,
    chunk: int,
    checkpointer: Checkpointer | None,
    every: int,
    progress: bool,
    callback: Callable[[int, dict], None] | None,
    tol: float | None = None,
):
    """The Python loop over compiled chunks; returns `(state, done, interrupted)`.

    `history` (a list of `(start step, {term: array})`) is extended in place. With `tol`, the
    run stops after the first chunk that `run.converged` accepts (decided per chunk: the
    chunk stays the compiled unit), and `run.converged_at`/`run.convergence` say when and why.
    """
    bar = _progress(progress, steps, done, run.desc)
    unsaved: list = []
    last_saved = done
    interrupted = False

    def save(final: bool):
        nonlocal unsaved, last_saved
        extra = run.header(state, done, steps, interrupted if final else False)
        checkpointer.save(run.host(state), done, extra, unsaved)
        unsaved, last_saved = [], done

    with Interrupts() as irq:
        try:
            while done < steps and run.any_alive(state) and run.converged_at is None:
                n = min(chunk, steps - done)
                try:
                    new_state, hist = run.advance(state, done, n)
                except eqx.EquinoxRuntimeError as error:
                    # a check inside the compiled step failed (e.g. a linear solve's
                    # breakdown in an adjoint): the run stops as diverged at its last state
                    lines = [ln for ln in str(error).splitlines() if ln.strip()]
                    run.failure = next((ln for ln in lines if "rror" in ln and "JIT" not in ln),
                                       lines[0] if lines else "runtime check failed")
                    state = eqx.tree_at(lambda s: s.alive, state, jnp.zeros_like(state.alive))
                    break
                with irq.critical():
                    state, done = new_state, done + n
                    history.append((done - n, hist))
                    unsaved.append((done - n, hist))
                if not run.any_alive(state):
                    break
                terms, postfix = run.report(hist)
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix_str(postfix)
                if callback is not None:
                    why = callback(done, terms)
                    if isinstance(why, str):  # the callback's own stopping rule
                        run.converged_at, run.convergence = done, why
                        break
                if tol is not None:
                    why = run.converged(state, hist, tol)
                    if why is not None:
                        run.converged_at, run.convergence = done, why
                        break
                if checkpointer is not None and done - last_saved >= every:
                    with irq.critical():
                        save(final=False)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if bar is not None:
                bar.close()
        if irq.take_pending():  # a signal after the last chunk's critical section
            interrupted = True
        if checkpointer is not None:
            with irq.critical(raise_pending=not interrupted):
                save(final=True)
    if interrupted and _PROPAGATE.get():  # a sequence of fits: the user's stop ends it
        raise KeyboardInterrupt
    return state, done, interrupted


_PROPAGATE = contextvars.ContextVar("mollijax_interrupts_propagate", default=False)


def interrupts_propagating() -> bool:
    """Whether `interrupts_propagate` is active."""
    return _PROPAGATE.get()


@contextlib.contextmanager
def interrupts_propagate():
    """Inside, a fit stopped by Ctrl-C or SIGTERM raises `KeyboardInterrupt` after its clean
    stop (and its final checkpoint, if it has one) instead of returning an interrupted
    result: for a sequence of fits such as `auto_run`'s, whose next stage would otherwise
    start as if the user had not asked it to stop."""
    token = _PROPAGATE.set(True)
    try:
        yield
    finally:
        _PROPAGATE.reset(token)


def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are a convenience
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False)


def divergence_hint(problem) -> str:
    """What to change when a problem with a solved state (evolved or steady) diverges ('' when
    it has none)."""
    return problem.divergence_hint()


def check_run(steps: int, chunk: int, checkpoint, checkpoint_every, resume: bool) -> int:
    """Validate the loop arguments; returns the checkpoint interval in steps."""
    if steps < 0 or chunk < 1:
        raise MollijaxError(f"`steps` must be >= 0 and `chunk` >= 1, got {steps}, {chunk}.")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise MollijaxError(f"`checkpoint_every` must be >= 1 or None, got {checkpoint_every}.")
    if resume and checkpoint is None:
        raise MollijaxError("`resume=True` needs a `checkpoint` path.")
    return checkpoint_every or chunk
