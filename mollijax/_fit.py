"""Training: `fit(problem, unknowns, optimiser) -> FitResult`.

One jitted function runs a chunk of optimiser steps with `lax.scan`; a Python loop runs the
chunks, records the history, updates adaptive weights, writes checkpoints and drives the
progress bar. Each step keeps its update only if the loss and the new parameters are finite;
the first non-finite step freezes the parameters at their last finite value and the run stops
with status `diverged`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import pathlib
import time
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checkpoint
from ._errors import MollijaxError
from ._problem import Problem


class Status(str, enum.Enum):
    """How a fit ended."""

    completed = "completed"
    diverged = "diverged"
    interrupted = "interrupted"


def default_optimiser(steps: int, learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """Adam with a cosine decay of the learning rate to 1 % over `steps`."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.01))


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _tree_where(cond, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)


@functools.lru_cache(maxsize=64)
def _with_extra_args(optimiser):
    # one wrapper per optimiser object, so that compiled chunks are reused across fits
    return optax.with_extra_args_support(optimiser)


def _loss_fn(p, static, w, prob):
    terms = prob.loss_terms(eqx.combine(p, static))
    return prob.total(terms, w), terms


@eqx.filter_jit
def _run_chunk(p, s, w, prob, first, length, static, opt):
    """`length` optimiser steps from global step `first`, as one `lax.scan`.

    Module-level (not a closure) so that repeated fits of the same architecture and optimiser
    reuse the compiled code. Tracks the last iterate whose loss was finite.
    """

    def step(carry, k):
        p, s, gp, gs, gk, ok = carry
        (loss, terms), grads = jax.value_and_grad(_loss_fn, has_aux=True)(p, static, w, prob)
        # optax's schedules mix Python floats with int32 counters: keep its update out of
        # strict dtype promotion (which tests enable for mollijax's own code)
        with jax.numpy_dtype_promotion("standard"):
            updates, s_new = opt.update(
                grads, s, p, value=loss, grad=grads,
                value_fn=lambda q: _loss_fn(q, static, w, prob)[0],
            )
        p_new = optax.apply_updates(p, updates)
        loss_ok = ok & jnp.isfinite(loss)
        gp, gs = _tree_where(loss_ok, p, gp), _tree_where(loss_ok, s, gs)
        gk = jnp.where(loss_ok, k, gk)
        step_ok = loss_ok & _all_finite(grads) & _all_finite(p_new)
        p, s = _tree_where(step_ok, p_new, p), _tree_where(step_ok, s_new, s)
        return (p, s, gp, gs, gk, step_ok), dict(terms, total=loss)

    steps_k = first + jnp.arange(length)
    init = (p, s, p, s, first, jnp.array(True))
    (p, s, gp, gs, gk, ok), hist = jax.lax.scan(step, init, steps_k)
    return p, s, gp, gs, gk, ok, hist


@eqx.filter_jit
def _balance(p, w, prob, static, balanced):
    """Gradient-norm balancing: `w_k <- 0.9 w_k + 0.1 sum_j |grad L_j| / |grad L_k|`."""
    norms = {}
    for t in balanced:
        g = jax.grad(lambda q, t=t: prob.loss_terms(eqx.combine(q, static))[t])(p)
        norms[t] = optax.tree.norm(g)
    total = sum(norms.values())
    return {t: 0.9 * w[t] + 0.1 * total / jnp.maximum(norms[t], 1e-12) for t in balanced}



@dataclasses.dataclass
class FitResult:
    """What a fit returns.

    - `unknowns`: the trained unknowns (same structure as given);
    - `values`: each unknown on its own sub-grid (NumPy), e.g. `D(x)` as a 1-D array;
    - `fields`: each unknown on the full grid (NumPy);
    - `history`: `{term: array of per-step values}`, plus `"total"` (weighted);
    - `status`: a `Status`; `message`: why it ended; `steps`: steps taken;
    - `wall_time`: seconds spent in this call (compilation included).
    """

    unknowns: dict | None
    values: dict[str, np.ndarray]
    fields: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    status: Status
    steps: int
    wall_time: float
    message: str = ""
    checkpoint: str | None = None

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write a self-describing file: JSON header + arrays (and the trained unknowns)."""
        arrays = {
            "values": {k: np.asarray(v) for k, v in self.values.items()},
            "fields": {k: np.asarray(v) for k, v in self.fields.items()},
            "history": {k: np.asarray(v) for k, v in self.history.items()},
        }
        header = {
            "kind": "fit-result",
            "status": self.status.value,
            "steps": self.steps,
            "wall_time": self.wall_time,
            "message": self.message,
            "shapes": {g: {k: list(v.shape) for k, v in d.items()} for g, d in arrays.items()},
            "has_unknowns": self.unknowns is not None,
        }
        tree = {"arrays": arrays}
        if self.unknowns is not None:
            tree["unknowns"] = self.unknowns
        return _checkpoint.write(path, header, tree)

    @classmethod
    def load(cls, path: str | os.PathLike, like: dict | None = None) -> FitResult:
        """Read a saved result; pass `like` (unknowns of the same structure) to restore them."""
        header = _checkpoint.read_header(path)
        if header.get("kind") != "fit-result":
            raise MollijaxError(f"{path} is not a saved FitResult.")
        template = {
            "arrays": {
                g: {k: np.zeros(s) for k, s in d.items()} for g, d in header["shapes"].items()
            }
        }
        if header["has_unknowns"] and like is not None:
            template["unknowns"] = like
        elif header["has_unknowns"]:
            template["unknowns"] = None
        _, tree = _checkpoint.read(path, like=_strip_none(template))
        arrays = tree["arrays"]
        return cls(
            unknowns=tree.get("unknowns"),
            values=arrays["values"],
            fields=arrays["fields"],
            history=arrays["history"],
            status=Status(header["status"]),
            steps=int(header["steps"]),
            wall_time=float(header["wall_time"]),
            message=header["message"],
        )


def _strip_none(template):
    return {k: v for k, v in template.items() if v is not None}


def _signature(problem: Problem, unknowns) -> dict:
    return {
        "grid": list(problem.grid.shape),
        "terms": sorted(problem.term_names()),
        "unknowns": sorted(unknowns),
    }


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
      each chunk), at the end, on divergence (last finite state) and on Ctrl-C.
    - `resume`: continue from `checkpoint` if it exists (same problem and unknowns).
    - `progress`: show a progress bar; `callback(step, terms)` is called after each chunk.

    **Returns:** a `FitResult`. Deterministic: the same inputs give the same result, and a
    resumed run reaches the same parameters as an uninterrupted one.
    """
    start = time.perf_counter()
    problem.check(unknowns)
    problem = problem.prepare(unknowns)
    if steps < 0 or chunk < 1:
        raise MollijaxError(f"`steps` must be >= 0 and `chunk` >= 1, got {steps}, {chunk}.")
    if adaptive not in (None, "gradnorm"):
        raise MollijaxError(f"`adaptive` must be None or 'gradnorm', got {adaptive!r}.")
    optimiser = default_optimiser(steps) if optimiser is None else optimiser
    opt = _with_extra_args(optimiser)
    unknowns = dict(unknowns)
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)
    opt_state = opt.init(params)
    balanced = [t for t in _term_names(problem, unknowns) if not t.startswith("reg:")]
    weights = {t: jnp.asarray(1.0) for t in balanced} if adaptive else {}
    history: dict[str, list[np.ndarray]] = {}
    done = 0
    path = pathlib.Path(checkpoint) if checkpoint is not None else None
    signature = _signature(problem, unknowns)

    if resume:
        if path is None:
            raise MollijaxError("`resume=True` needs a `checkpoint` path.")
        if path.exists():
            header, state = _checkpoint.read(path, like=(params, opt_state, weights))
            if header.get("signature") != signature:
                raise MollijaxError(
                    f"Checkpoint {path} belongs to a different problem: {header.get('signature')}"
                    f" vs {signature}."
                )
            params, opt_state, weights = state
            done = int(header["step"])
            history = {k: [np.asarray(v)] for k, v in header["history"].items()}

    every = checkpoint_every or chunk
    status, message = Status.completed, f"completed {steps} steps"
    bar = _progress(progress, steps, done)
    last_saved = done

    def save(status_now):
        if path is None:
            return
        header = {
            "kind": "checkpoint",
            "step": done,
            "status": status_now.value,
            "signature": signature,
            "history": {k: np.concatenate(v).tolist() for k, v in history.items()},
        }
        _checkpoint.write(path, header, (params, opt_state, weights))

    try:
        while done < steps:
            n = min(chunk, steps - done)
            if adaptive:
                weights = _balance(params, weights, problem, static, tuple(balanced))
            out = _run_chunk(params, opt_state, weights, problem, jnp.asarray(done), n, static, opt)
            new_params, new_state, good_params, good_state, good_step, ok, hist = out
            hist = {k: np.asarray(v) for k, v in hist.items()}
            if not bool(ok):
                last = int(good_step)
                for k, v in hist.items():
                    history.setdefault(k, []).append(v[: last - done])
                params, opt_state, done = good_params, good_state, last
                status = Status.diverged
                message = (
                    f"diverged at step {done + 1}: the loss, gradients or parameters became "
                    f"NaN/inf; returning the last parameters with a finite loss (step {done})"
                )
                if problem.evolution is not None:
                    message += (
                        f". The evolution takes {problem.evolution.substeps} explicit Runge-Kutta "
                        "substeps per time interval: coefficients that grew past their stability "
                        "limit blow the state up; raise `substeps` (or `safety`) of the Evolution"
                    )
                break
            params, opt_state = new_params, new_state
            for k, v in hist.items():
                history.setdefault(k, []).append(v)
            done += n
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{hist['total'][-1]:.3e}")
            if callback is not None:
                callback(done, {k: float(v[-1]) for k, v in hist.items()})
            if path is not None and done - last_saved >= every:
                save(Status.completed if done >= steps else Status.interrupted)
                last_saved = done
    except KeyboardInterrupt:
        status = Status.interrupted
        message = f"interrupted at step {done}; the state of step {done} is kept"
    finally:
        if bar is not None:
            bar.close()
    save(status)
    trained = eqx.combine(params, static)
    values = {k: np.asarray(f.on_subgrid(problem.grid)) for k, f in trained.items()}
    fields = {k: np.asarray(v) for k, v in problem.grid_values(trained).items()}
    return FitResult(
        unknowns=trained,
        values=values,
        fields=fields,
        history={k: np.concatenate(v) for k, v in history.items()},
        status=status,
        steps=done,
        wall_time=time.perf_counter() - start,
        message=message,
        checkpoint=str(path) if path is not None else None,
    )


def _term_names(problem: Problem, unknowns) -> list[str]:
    names = [f"data:{n}" for n in problem.data if n in unknowns]
    return names + problem.term_names()


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are a convenience
        return None
    return tqdm(total=total, initial=initial, desc="fit", unit="step", leave=False)
