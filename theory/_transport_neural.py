"""Neural networks as transport: stacks of trained MLP denoisers, and deep residual networks.

- `MLPDenoiser`: `f(x~) = x~ + tau s(x~)`, `s` an `eqx.nn.MLP` whose last layer starts at
  zero (the untrained layer is the identity). Trained as a DAE of noise `tau A` on pairs
  `(x + e, x)`, its optimum is Tweedie's `s = A grad log(mu * W_{tau A})`: the network learns
  the (scaled) score, the ideal layer of `_transport_mixture.oracle_dae_layer`.
- `train_mlp_denoiser`: minibatch Adam on the denoising loss `|f(x + e) - x|^2 / tau^2`,
  fresh noise every step (antithetic pairs `+-e`), one compiled `lax.scan`.
- `neural_dae_stack`: `L` such layers of noise `t / L`, layer `k` trained on the features of
  layer `k - 1` and warm-started from it (consecutive optimal layers differ by `O(t / L)`).
- `ResidualNet`: `x_{l+1} = x_l + h f_l(x_l)`, `L` blocks `f_l` (small MLPs, stacked and
  scanned), a linear read-out; `train_classifier` fits it to labelled points with Adam;
  `two_moons` generates a classification set in code.
- `affine_residual_stack` and `affine_generator`: a residual stack of affine blocks and the
  exact generator `(G, c)` of the continuous affine flow that passes through its layers
  (`exp(h [[G, c], [0, 0]]) = [[M, s], [0, 1]]` for the layer map `x -> M x + s`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

import mollijax as mj

from ._transport_dae import adam_scan
from ._transport_mixture import Numbers, _psd_sqrt, noise_matrix


def _zero_last(mlp: eqx.nn.MLP) -> eqx.nn.MLP:
    last = mlp.layers[-1]
    return eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                       (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))


class MLPDenoiser(eqx.Module):
    """`f(x~) = x~ + tau s(x~)`, `s: R^d -> R^d` an MLP (`width`, `depth` hidden layers, SiLU).

    `x~` has shape `(d,)`. The last layer starts at zero, so the untrained denoiser is the
    identity; `tau` (static) is the layer's noise variance, which makes `s` an `O(1)` score
    whatever the noise.
    """

    score: eqx.nn.MLP
    tau: float = eqx.field(static=True)

    def __init__(self, dim: int, tau: float, key: PRNGKeyArray, width: int = 32,
                 depth: int = 2, dtype=None):
        if not (np.isfinite(tau) and tau > 0):
            raise mj.MollijaxError(f"`tau` must be a positive number, got {tau!r}.")
        mlp = eqx.nn.MLP(dim, dim, width, depth, activation=jax.nn.silu, dtype=dtype, key=key)
        self.score = _zero_last(mlp)
        self.tau = float(tau)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        return x + self.tau * self.score(x)


def _cosine(learning_rate: float, steps: int):
    # cosine decay to 1e-2 of the initial rate; the count is cast so that strict promotion holds
    def schedule(count):
        frac = jnp.minimum(count.astype(jnp.float32) / steps, 1.0)
        return learning_rate * (1e-2 + (1 - 1e-2) * 0.5 * (1 + jnp.cos(np.pi * frac)))

    return schedule


@eqx.filter_jit
def _fit_dae(model, x, key, root, learning_rate, steps, batch):
    tau = model.tau
    n, d = x.shape

    def loss(f, k):  # a fresh minibatch and antithetic noise pair per step
        k_idx, k_noise = jax.random.split(k)
        xb = x[jax.random.randint(k_idx, (batch,), 0, n)]
        e = np.sqrt(tau) * jax.random.normal(k_noise, (batch, d), x.dtype) @ root.T
        clean = jnp.concatenate([xb, xb])
        return jnp.mean(jnp.sum((jax.vmap(f)(clean + jnp.concatenate([e, -e])) - clean) ** 2,
                                axis=1)) / tau**2

    return adam_scan(loss, model, _cosine(learning_rate, steps), steps,
                     jax.random.split(key, steps))


def train_mlp_denoiser(
    model: MLPDenoiser,
    x: Float[ArrayLike, "n d"],
    key: PRNGKeyArray,
    noise: Numbers = 1.0,
    steps: int = 400,
    learning_rate: float = 1e-2,
    batch: int = 1024,
) -> tuple[MLPDenoiser, Float[Array, " steps"]]:
    """Train `model` as a DAE of noise `model.tau * A` (`A = noise`) on clean points `x`.

    Each of `steps` Adam steps (cosine-decayed rate) draws `batch` points and fresh noise
    `e ~ N(0, tau A)` and uses both `x + e` and `x - e`. Returns the trained model and the
    loss history (its floor is `tr(A) / tau - E|A grad log mu~|^2`, not zero).
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise mj.MollijaxError(f"`x` must have shape (n, d), got shape {tuple(x.shape)}.")
    for name, v in (("steps", steps), ("batch", batch)):
        if int(v) < 1:
            raise mj.MollijaxError(f"`{name}` must be a positive integer, got {v!r}.")
    root = jnp.asarray(_psd_sqrt(noise_matrix(noise, x.shape[1])), x.dtype)
    return _fit_dae(model, x, key, root, float(learning_rate), int(steps), int(batch))


def neural_dae_stack(
    x0: Float[ArrayLike, "n d"],
    key: PRNGKeyArray,
    total_time: float,
    layers: int,
    noise: Numbers = 1.0,
    width: int = 32,
    depth: int = 2,
    steps: int = 400,
    first_steps: int | None = None,
    learning_rate: float = 1e-2,
    batch: int = 1024,
    train_size: int | None = None,
) -> tuple[Float[Array, "T n d"], list[MLPDenoiser]]:
    """`layers` MLP denoisers of noise `tau = total_time / layers`, layer `k` trained on the
    features of the first `train_size` particles after layer `k - 1` (warm-started from layer
    `k - 1`; the first layer gets `first_steps`, default `4 steps`, from scratch) and applied
    to all of them. Returns the features after every layer, shape `(layers + 1, n, d)`, and
    the trained layers. Tends to `exact_flow` at `t = k tau` up to the `O(tau)` depth error
    of `oracle_dae_stack` and the training error."""
    x0 = jnp.asarray(x0)
    layers = int(layers)
    if layers < 1 or not (np.isfinite(total_time) and total_time > 0):
        raise mj.MollijaxError(
            f"`layers` must be >= 1 and `total_time` positive, got {layers} and {total_time}."
        )
    m = x0.shape[0] if train_size is None else int(train_size)
    if not 0 < m <= x0.shape[0]:
        raise mj.MollijaxError(
            f"`train_size` must be between 1 and the number of particles {x0.shape[0]}, "
            f"got {train_size}."
        )
    tau = float(total_time) / layers
    k_init, k_train = jax.random.split(key)
    model = MLPDenoiser(x0.shape[1], tau, k_init, width, depth, dtype=x0.dtype)
    xs, trained = [x0], []
    for i, k in enumerate(jax.random.split(k_train, layers)):
        n_steps = (4 * steps if first_steps is None else int(first_steps)) if i == 0 else steps
        model, _ = train_mlp_denoiser(model, xs[-1][:m], k, noise, n_steps, learning_rate,
                                      batch)
        trained.append(model)
        xs.append(jax.vmap(model)(xs[-1]))
    return jnp.stack(xs), trained


# ----------------------------------------------------------------- deep residual networks


class ResidualNet(eqx.Module):
    """`x_{l+1} = x_l + h f_l(x_l)`, `l = 0 .. L-1`, `h = 1 / L`, then logits `W x_L + b`.

    The blocks `f_l: R^d -> R^d` are MLPs (one hidden layer of `width`, tanh), stored stacked
    (leading axis `L`) and applied by `lax.scan`. `x` has shape `(d,)`.
    """

    blocks: eqx.nn.MLP
    readout: eqx.nn.Linear
    step: float = eqx.field(static=True)

    def __init__(self, dim: int, classes: int, blocks: int, key: PRNGKeyArray,
                 width: int = 16, dtype=None):
        if int(blocks) < 1 or int(classes) < 2:
            raise mj.MollijaxError(
                f"ResidualNet needs `blocks` >= 1 and `classes` >= 2, got {blocks} and {classes}."
            )
        k_blocks, k_out = jax.random.split(key)
        make = lambda k: eqx.nn.MLP(dim, dim, width, 1, activation=jnp.tanh, dtype=dtype, key=k)
        self.blocks = eqx.filter_vmap(make)(jax.random.split(k_blocks, int(blocks)))
        self.readout = eqx.nn.Linear(dim, classes, dtype=dtype, key=k_out)
        self.step = 1.0 / int(blocks)

    def features(self, x: Float[Array, " d"]) -> Float[Array, "L1 d"]:
        """`x_0 .. x_L`, shape `(L + 1, d)`."""
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def layer(h, p):
            h = h + self.step * eqx.combine(p, static)(h)
            return h, h

        _, hs = jax.lax.scan(layer, x, params)
        return jnp.concatenate([x[None], hs])

    def velocity(self, layer: int, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """`f_layer(x)`, the block's velocity (`x_{l+1} = x_l + h f_l(x_l)`)."""
        params, static = eqx.partition(self.blocks, eqx.is_array)
        p = jax.tree_util.tree_map(lambda a: a[layer], params)
        return eqx.combine(p, static)(x)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " classes"]:
        return self.readout(self.features(x)[-1])


def two_moons(
    key: PRNGKeyArray, n: int, noise: float = 0.1, dtype=jnp.float64
) -> tuple[Float[Array, "n 2"], Int[Array, " n"]]:
    """Two interleaved half circles (radius 1, the second shifted by `(1, -0.5)`), `n` points
    with labels 0/1 in equal numbers, Gaussian jitter of standard deviation `noise`, centred
    at the origin."""
    k_angle, k_noise = jax.random.split(key)
    half = n // 2
    angle = jnp.pi * jax.random.uniform(k_angle, (n,), dtype)
    label = (jnp.arange(n) >= half).astype(jnp.int32)
    upper = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(angle), 0.5 - jnp.sin(angle)], axis=1)
    x = jnp.where(label[:, None] == 0, upper, lower)
    x = x + noise * jax.random.normal(k_noise, (n, 2), dtype) - jnp.asarray([0.5, 0.25], dtype)
    return x, label


@eqx.filter_jit
def _fit_classifier(model, x, y, learning_rate, steps):
    def loss(net, _):
        logits = jax.vmap(net)(x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    return adam_scan(loss, model, _cosine(learning_rate, steps), steps)


def train_classifier(
    model: ResidualNet,
    x: Float[ArrayLike, "n d"],
    labels: Int[ArrayLike, " n"],
    steps: int = 1000,
    learning_rate: float = 1e-2,
) -> tuple[ResidualNet, Float[Array, " steps"], float]:
    """Full-batch Adam on the softmax cross-entropy. Returns the trained net, the loss
    history and the training accuracy."""
    x, y = jnp.asarray(x), jnp.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise mj.MollijaxError(
            f"`x` must have shape (n, d) and `labels` shape (n,), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}."
        )
    model, history = _fit_classifier(model, x, y, float(learning_rate), int(steps))
    accuracy = float(jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=1).astype(y.dtype) == y))
    return model, history, accuracy


def affine_residual_stack(
    x0: Float[ArrayLike, "n d"], matrix: Float[ArrayLike, "d d"], shift: Float[ArrayLike, " d"],
    layers: int, step: float,
) -> Float[Array, "T n d"]:
    """`x_{l+1} = x_l + h (B x_l + b)` for `layers` layers (`B = matrix`, `b = shift`,
    `h = step`): a residual network whose every block is the same affine map."""
    x = jnp.asarray(x0)
    b_mat, b_vec = jnp.asarray(matrix, x.dtype), jnp.asarray(shift, x.dtype)
    xs = [x]
    for _ in range(int(layers)):
        xs.append(xs[-1] + step * (xs[-1] @ b_mat.T + b_vec))
    return jnp.stack(xs)


def affine_generator(
    matrix: Float[ArrayLike, "d d"], shift: Float[ArrayLike, " d"], step: float
) -> tuple[np.ndarray, np.ndarray]:
    """The exact `(G, c)` of the affine flow `dx/dt = G x + c` whose time-`h` map is the
    layer `x -> x + h (B x + b)`: `[[G, c], [0, 0]] = logm([[I + hB, hb], [0, 1]]) / h`.
    `G = B - h B^2 / 2 + O(h^2)`: the layer is the flow's explicit Euler step."""
    b_mat, b_vec = np.asarray(matrix, np.float64), np.asarray(shift, np.float64)
    d = b_vec.shape[0]
    aug = np.eye(d + 1)
    aug[:d, :d] += step * b_mat
    aug[:d, d] = step * b_vec
    gen = np.real(scipy.linalg.logm(aug)) / step
    return gen[:d, :d], gen[:d, d]
