"""Denoising autoencoders trained with optax, stacked layer by layer.

A DAE of noise `tau A` is trained on pairs `(x + e, x)`, `e ~ N(0, tau A)`, to minimise
`E |f(x + e) - x|^2`; the minimiser is the posterior mean
`f*(x~) = x~ + tau A grad log(mu * W_{tau A})(x~)` (Tweedie). As a layer of a deep network
its *features* are `f(x)` of the clean inputs, and the next layer is trained on those.
Sonoda & Murata show that stacking `L` such layers of noise `t / L` tends, as `L -> inf`, to
the flow `dx/dt = A grad log mu_t` (see `_transport_mixture`).

Two denoisers are provided:

- `AffineDenoiser`: `f(x) = W x + b`. The optimal denoiser of a Gaussian is affine, so for
  Gaussian data the trained layer is the ideal one up to sampling error.
- `RBFDenoiser`: `f(x) = x + C x + c + sum_j w_j exp(-|x - z_j|^2 / (2 l^2))`, a residual
  score model on fixed centres `z_j` (linear in its trainable parameters, so training is a
  convex problem).

`train_denoiser` draws a fixed set of antithetic noise pairs `(e, -e)` (which cancels the
first-order sampling error of the cross term `E[e x]`), then runs full-batch optax steps in
one `lax.scan`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

import mollijax as mj

from ._transport_mixture import Numbers, _psd_sqrt, noise_matrix


class AffineDenoiser(eqx.Module):
    """`f(x) = W x + b`, initialised at the identity. `x` has shape `(d,)`."""

    weight: Float[Array, "d d"]
    bias: Float[Array, " d"]

    def __init__(self, dim: int, dtype=jnp.float64):
        self.weight = jnp.eye(dim, dtype=dtype)
        self.bias = jnp.zeros(dim, dtype)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        return self.weight @ x + self.bias


class RBFDenoiser(eqx.Module):
    """`f(x) = x + C x + c + W^T phi(x)`, `phi_j(x) = exp(-|x - z_j|^2 / (2 l^2))`.

    The centres `z_j` (shape `(M, d)`) and length `l` are fixed (not trained); `C`, `c`, `W`
    start at zero, so the untrained denoiser is the identity.
    """

    centres: Float[Array, "M d"]
    length: float = eqx.field(static=True)
    linear: Float[Array, "d d"]
    bias: Float[Array, " d"]
    coef: Float[Array, "M d"]

    def __init__(self, centres: Float[ArrayLike, "M d"], length: float):
        c = jnp.asarray(centres)
        if c.ndim != 2 or not (np.isfinite(length) and length > 0):
            raise mj.MollijaxError(
                f"RBFDenoiser needs `centres` of shape (M, d) and a positive `length`, got "
                f"shape {tuple(c.shape)} and length {length!r}."
            )
        d = c.shape[1]
        self.centres = c
        self.length = float(length)
        self.linear = jnp.zeros((d, d), c.dtype)
        self.bias = jnp.zeros(d, c.dtype)
        self.coef = jnp.zeros(c.shape, c.dtype)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        z = jax.lax.stop_gradient(self.centres)
        phi = jnp.exp(-jnp.sum((x[None] - z) ** 2, axis=1) / (2 * self.length**2))
        return x + self.linear @ x + self.bias + phi @ self.coef


def grid_centres(points: Float[ArrayLike, "n d"], per_axis: int) -> tuple[np.ndarray, float]:
    """RBF centres on a `per_axis^d` grid spanning the points' 0.5%-99.5% quantiles, and a
    length equal to the centre spacing (the largest over axes)."""
    p = np.asarray(points)
    lo, hi = np.quantile(p, 0.005, axis=0), np.quantile(p, 0.995, axis=0)
    axes = [np.linspace(a, b, per_axis) for a, b in zip(lo, hi, strict=True)]
    centres = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)
    return centres, float(np.max((hi - lo) / max(per_axis - 1, 1)))


def _noise_pairs(key, x, tau, root, copies):
    """`copies` antithetic pairs of noise per point: shape `(2 copies n, d)` each for x~ and x."""
    n, d = x.shape
    xi = jax.random.normal(key, (copies, n, d), dtype=x.dtype) @ jnp.asarray(root).T
    e = jnp.sqrt(tau) * jnp.concatenate([xi, -xi]).reshape(-1, d)
    clean = jnp.tile(x, (2 * copies, 1))
    return clean + e, clean


def adam_scan(loss, model, schedule, steps: int, xs=None):
    """`steps` Adam steps on `loss(model, x)` in one `lax.scan`, `x` the step's slice of
    `xs` (None: no per-step input). **Returns:** `(trained model, loss history)`."""
    optimiser = optax.adam(schedule)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def step(carry, x):
        p, state = carry
        value, grads = jax.value_and_grad(lambda q: loss(eqx.combine(q, static), x))(p)
        # optax mixes its integer step count with Python floats internally
        with jax.numpy_dtype_promotion("standard"):
            updates, state = optimiser.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), value

    (params, _), history = jax.lax.scan(step, (params, optimiser.init(params)), xs,
                                        length=steps)
    return eqx.combine(params, static), history


@eqx.filter_jit
def _fit(model, noisy, clean, learning_rate, steps):
    # the schedule is built here from static numbers, so that every layer of a stack reuses
    # one compilation
    def schedule(count):  # cosine decay to 1e-3 of the initial rate
        frac = jnp.minimum(count.astype(noisy.dtype) / steps, 1.0)
        return learning_rate * (1e-3 + (1 - 1e-3) * 0.5 * (1 + jnp.cos(np.pi * frac)))

    def loss(f, _):
        return jnp.mean(jnp.sum((jax.vmap(f)(noisy) - clean) ** 2, axis=1))

    return adam_scan(loss, model, schedule, steps)


def train_denoiser(
    model: eqx.Module,
    x: Float[ArrayLike, "n d"],
    key: PRNGKeyArray,
    tau: float,
    noise: Numbers = 1.0,
    steps: int = 300,
    learning_rate: float = 0.05,
    copies: int = 1,
) -> tuple[eqx.Module, Float[Array, " steps"]]:
    """Train `model` as a DAE of noise covariance `tau A` on clean points `x` (shape `(n, d)`).

    Minimises `mean |f(x_i + e_ij) - x_i|^2` over `2 copies` antithetic noise draws per point
    with `optax.adam` and a cosine-decayed learning rate, full batch, `steps` steps in one
    compiled `lax.scan`. Returns the trained model and the loss history (shape `(steps,)`).
    The loss at the optimum is `tr(tau A) - tau^2 E|A grad log mu~|^2`-ish, not zero: compare
    histories, not values.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise mj.MollijaxError(f"`x` must have shape (n, d), got shape {tuple(x.shape)}.")
    if not (np.isfinite(tau) and tau > 0):
        raise mj.MollijaxError(f"`tau` must be a positive number, got {tau!r}.")
    root = _psd_sqrt(noise_matrix(noise, x.shape[1]))
    noisy, clean = _noise_pairs(key, x, tau, root, copies)
    return _fit(model, noisy, clean, float(learning_rate), int(steps))


def trained_dae_stack(
    model: eqx.Module,
    x0: Float[ArrayLike, "n d"],
    key: PRNGKeyArray,
    total_time: float,
    layers: int,
    noise: Numbers = 1.0,
    steps: int = 300,
    learning_rate: float = 0.05,
    copies: int = 1,
    train_size: int | None = None,
    warm_start: bool = False,
) -> tuple[Float[Array, "T n d"], list[eqx.Module]]:
    """Stack `layers` DAEs of noise `tau = total_time / layers`, each trained (from `model`,
    untrained) on the previous layer's features. Returns the features after every layer,
    shape `(layers + 1, n, d)` (entry 0 is `x0`), and the trained layers.

    With `train_size = m`, each layer is trained on the features of the first `m` particles
    only (a sample of the feature distribution) and then applied to all `n`: the
    transported cloud can be larger than the training set. With `warm_start`, layer `k + 1`
    starts training from trained layer `k` (consecutive optimal layers differ by `O(tau)`),
    which lets a slowly converging model accumulate training over depth.

    Layer `k`'s features approximate the flow `dx/dt = A grad log mu_t` at `t = k tau`, with
    an `O(tau)` depth error (`deep_dae_variance`) plus the training error.
    """
    xs = [jnp.asarray(x0)]
    trained = []
    tau = float(total_time) / int(layers)
    m = xs[0].shape[0] if train_size is None else int(train_size)
    if not 0 < m <= xs[0].shape[0]:
        raise mj.MollijaxError(
            f"`train_size` must be between 1 and the number of particles {xs[0].shape[0]}, "
            f"got {train_size}."
        )
    for k in jax.random.split(key, int(layers)):
        start = trained[-1] if (warm_start and trained) else model
        layer, _ = train_denoiser(start, xs[-1][:m], k, tau, noise, steps, learning_rate, copies)
        trained.append(layer)
        xs.append(jax.vmap(layer)(xs[-1]))
    return jnp.stack(xs), trained
