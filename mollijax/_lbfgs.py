"""L-BFGS with one loss-and-gradient evaluation per step: the iterate is a trial point.

optax's `lbfgs` searches along each direction with a zoom line search whose loss
evaluations sit inside the update: a compiled step then holds several copies of the loss and
its gradient (the search's first trial, its loop body, and the driver's own evaluation), and
compiling those copies is most of a small fit's cost. Here the line search is spread over
the optimiser's steps instead: each step's parameters are a *trial point*
`x_a + alpha d` on the current direction, the driver evaluates the loss and gradient there
(its one evaluation), and the update decides:

- **accept** (the Armijo condition `f(x_t) <= f(x_a) + c1 alpha g_a . d`, with a finite loss
  and gradient): `x_t` becomes the accepted point; the pair `s = x_t - x_a`,
  `y = g_t - g_a` enters the memory when `s . y > 1e-10 |s| |y|` (positive curvature:
  the inverse-Hessian estimate stays positive definite; a pair without it is skipped);
  the next direction is `d = -H g` by the two-loop recursion (`H_0 = (s . y / y . y) I`
  from the newest pair; `-g` with a step `1 / |g|` on the first step or after a reset), and
  the next trial is `x_a + d`;
- **reject**: the step shrinks to the minimiser of the quadratic through `f(x_a)`,
  `g_a . d` and `f(x_t)`, kept within `[0.1, 0.5]` times the rejected step (`0.1` for a
  non-finite loss), and the next trial is `x_a + alpha d` on the same direction. A step
  that shrinks below a relative `1e-12` resets the memory to steepest descent.

The accepted point, its loss and gradient live in the optimiser state (`accepted`,
`accepted_value`, `accepted_grad`); `mollijax.fit` reports those, not the trial's (a
rejected trial's loss is never a result), and a non-finite trial loss is a rejection, not a
divergence. Without a zoom search the accepted steps need not meet the curvature (Wolfe)
condition; the skipped pairs above are the usual safeguard.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from ._errors import MollijaxError

C1 = 1e-4
"""Armijo's sufficient-decrease constant."""


class TrialLBFGSState(NamedTuple):
    """The state of `lbfgs`: the accepted point (flat), its loss and gradient, the direction
    and step of the current trial, the memory of `(s, y)` pairs and its fill."""

    count: jax.Array  # steps taken (trials evaluated)
    accepted: jax.Array  # (n,) the accepted point, flat
    accepted_value: jax.Array  # f at the accepted point (inf before the first step)
    accepted_grad: jax.Array  # (n,)
    direction: jax.Array  # (n,)
    step: jax.Array  # alpha of the current trial
    last_accepted: jax.Array  # bool: the previous trial was accepted
    s: jax.Array  # (m, n)
    y: jax.Array  # (m, n)
    filled: jax.Array  # int: pairs in the memory (newest at index filled - 1, rolled)


def _two_loop(g, s, y, filled):
    """`-H g`: the L-BFGS two-loop recursion over the newest `filled` of the rolled memory
    (index `m - 1` newest); `H_0 = (s . y / y . y) I` from the newest pair."""
    m = s.shape[0]
    valid = jnp.arange(m, dtype=filled.dtype) >= m - filled
    sy = jnp.sum(s * y, axis=1)
    rho = jnp.where(valid, 1.0 / jnp.where(valid, sy, 1.0), 0.0)

    def first(q, i):  # newest to oldest
        a = rho[i] * jnp.dot(s[i], q)
        return q - a * y[i], a

    q, alphas = jax.lax.scan(first, g, jnp.arange(m - 1, -1, -1, dtype=filled.dtype))
    yy = jnp.dot(y[-1], y[-1])
    gamma = jnp.where(filled > 0, sy[-1] / jnp.where(yy > 0, yy, 1.0), 1.0)
    r = gamma * q

    def second(r, ia):  # oldest to newest
        i, a = ia
        b = rho[i] * jnp.dot(y[i], r)
        return r + s[i] * (a - b), None

    r, _ = jax.lax.scan(second, r, (jnp.arange(m, dtype=filled.dtype), alphas[::-1]))
    return -r


def lbfgs(memory_size: int = 10) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with one loss-and-gradient evaluation per step (the module docstring has the
    algorithm). Its `update` needs `value=` (the loss at the parameters, which are the trial
    point); `mollijax.fit` passes it and reports the accepted point from the state.

    **Arguments:**

    - `memory_size`: the number of `(s, y)` pairs kept (10, as optax's).
    """
    if isinstance(memory_size, bool) or int(memory_size) != memory_size or memory_size < 1:
        raise MollijaxError(f"lbfgs `memory_size` must be a positive integer, got "
                            f"{memory_size!r}.")
    m = int(memory_size)

    def init(params):
        flat, _ = ravel_pytree(params)
        zero = jnp.zeros_like(flat)
        return TrialLBFGSState(
            count=jnp.zeros((), jnp.int32),
            accepted=flat,
            accepted_value=jnp.asarray(jnp.inf, flat.dtype),
            accepted_grad=zero,
            direction=zero,
            step=jnp.zeros((), flat.dtype),
            last_accepted=jnp.zeros((), bool),
            s=jnp.zeros((m, flat.size), flat.dtype),
            y=jnp.zeros((m, flat.size), flat.dtype),
            filled=jnp.zeros((), jnp.int32),
        )

    def update(grads, state: TrialLBFGSState, params=None, *, value=None, **extra):
        if params is None or value is None:
            raise MollijaxError("lbfgs needs the parameters and `value=` (the loss at them) "
                                "in its update; mollijax.fit passes both.")
        x_t, unravel = ravel_pytree(params)
        g_t = ravel_pytree(grads)[0].astype(x_t.dtype)
        f_t = jnp.asarray(value, x_t.dtype)
        tiny = jnp.finfo(x_t.dtype).tiny
        finite = jnp.isfinite(f_t) & jnp.all(jnp.isfinite(g_t))
        first = state.count == 0
        gd = jnp.dot(state.accepted_grad, state.direction)
        armijo = f_t <= state.accepted_value + C1 * state.step * gd
        accept = finite & (first | armijo)

        # accepted: the new pair, then the next direction from the new point
        s_new, y_new = x_t - state.accepted, g_t - state.accepted_grad
        sy = jnp.dot(s_new, y_new)
        good = accept & ~first & (sy > 1e-10 * jnp.linalg.norm(s_new) * jnp.linalg.norm(y_new))
        s_mem = jnp.where(good, jnp.roll(state.s, -1, axis=0).at[-1].set(s_new), state.s)
        y_mem = jnp.where(good, jnp.roll(state.y, -1, axis=0).at[-1].set(y_new), state.y)
        filled = jnp.where(good, jnp.minimum(state.filled + 1, m), state.filled)
        x_a = jnp.where(accept, x_t, state.accepted)
        f_a = jnp.where(accept, f_t, state.accepted_value)
        g_a = jnp.where(accept, g_t, state.accepted_grad)

        # rejected: a shorter step on the same direction (safeguarded quadratic)
        alpha = state.step
        curv = f_t - state.accepted_value - gd * alpha
        quad = -gd * alpha**2 / (2.0 * jnp.where(curv > 0, curv, 1.0))
        shrunk = jnp.where(finite & (curv > 0), jnp.clip(quad, 0.1 * alpha, 0.5 * alpha),
                           0.1 * alpha)
        stalled = ~accept & (shrunk * jnp.linalg.norm(state.direction)
                             <= 1e-12 * (1.0 + jnp.linalg.norm(state.accepted)))
        # a stall empties the memory (the two-loop reads only the newest `filled` pairs)
        filled = jnp.where(stalled, 0, filled)

        # the next direction: quasi-Newton from an accepted point; steepest descent with an
        # empty memory (the first step, after a stall) or where the quasi-Newton one does
        # not descend
        d_qn = _two_loop(g_a, s_mem, y_mem, filled)
        descent = jnp.dot(d_qn, g_a) < 0
        use_sd = (filled == 0) | ~descent
        gnorm = jnp.linalg.norm(g_a)
        d_new = jnp.where(use_sd, -g_a, d_qn)
        step_new = jnp.where(use_sd, 1.0 / jnp.maximum(gnorm, tiny), 1.0)
        direction = jnp.where(accept | stalled, d_new, state.direction)
        step = jnp.where(accept | stalled, step_new, shrunk).astype(x_t.dtype)
        x_next = x_a + step * direction
        new = TrialLBFGSState(
            count=state.count + 1, accepted=x_a, accepted_value=f_a, accepted_grad=g_a,
            direction=direction, step=step, last_accepted=accept, s=s_mem, y=y_mem,
            filled=filled,
        )
        return unravel(x_next - x_t), new

    return optax.GradientTransformationExtraArgs(init, update)


def trial_state(opt_state) -> TrialLBFGSState | None:
    """The `TrialLBFGSState` inside an optimiser state (a chain's or a wrapper's), or None."""
    found = [s for s in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda x: isinstance(x, TrialLBFGSState))
        if isinstance(s, TrialLBFGSState)]
    return found[0] if len(found) == 1 else None
