"""Small coordinate networks: MLP, Fourier-feature MLP and a PirateNet-style residual network.

Each maps one point `x` of shape `(in_size,)` (coordinates already scaled to about [-1, 1])
to a scalar. Any equinox Module with that signature can be used instead.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def _fourier_embedding(frequencies, x):
    """`[cos(2 pi B x), sin(2 pi B x)]` with the frequencies `B` held fixed."""
    z = 2 * jnp.pi * jax.lax.stop_gradient(frequencies) @ x
    return jnp.concatenate([jnp.cos(z), jnp.sin(z)])


class MLP(eqx.Module):
    """A plain multilayer perceptron `R^in_size -> R` with `tanh` activations."""

    net: eqx.nn.MLP

    def __init__(
        self,
        in_size: int,
        *,
        width: int = 64,
        depth: int = 3,
        activation: Callable = jnp.tanh,
        key: PRNGKeyArray,
    ):
        self.net = eqx.nn.MLP(in_size, "scalar", width, depth, activation=activation, key=key)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        return self.net(x)


class FourierMLP(eqx.Module):
    """An MLP on random Fourier features `[cos(2 pi B x), sin(2 pi B x)]`, `B ~ N(0, scale^2)`.

    `B` is fixed at initialisation (gradients are stopped through it); Fourier features let a
    small network represent oscillatory fields that a plain MLP fits slowly.
    """

    frequencies: Float[Array, "features in_size"]
    net: eqx.nn.MLP

    def __init__(
        self,
        in_size: int,
        *,
        features: int = 32,
        scale: float = 1.0,
        width: int = 64,
        depth: int = 2,
        key: PRNGKeyArray,
    ):
        kb, kn = jax.random.split(key)
        self.frequencies = scale * jax.random.normal(kb, (features, in_size))
        self.net = eqx.nn.MLP(2 * features, "scalar", width, depth, activation=jnp.tanh, key=kn)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        return self.net(_fourier_embedding(self.frequencies, x))


class _PirateBlock(eqx.Module):
    dense1: eqx.nn.Linear
    dense2: eqx.nn.Linear
    dense3: eqx.nn.Linear
    alpha: Float[Array, ""]

    def __call__(self, x, u, v):
        f = jnp.tanh(self.dense1(x))
        z1 = f * u + (1 - f) * v
        g = jnp.tanh(self.dense2(z1))
        z2 = g * u + (1 - g) * v
        h = jnp.tanh(self.dense3(z2))
        return self.alpha * h + (1 - self.alpha) * x


class PirateNet(eqx.Module):
    """A PirateNet-style network: Fourier embedding, two gates, and gated residual blocks.

    Each block computes `x <- alpha * H(x) + (1 - alpha) * x` with `alpha` initialised to 0,
    so the network starts as a shallow model of the embedding and deepens as it trains (after
    Wang et al., 2024).
    """

    frequencies: Float[Array, "features in_size"]
    gate_u: eqx.nn.Linear
    gate_v: eqx.nn.Linear
    embed: eqx.nn.Linear
    blocks: tuple[_PirateBlock, ...]
    head: eqx.nn.Linear

    def __init__(
        self,
        in_size: int,
        *,
        features: int = 32,
        scale: float = 1.0,
        width: int = 64,
        blocks: int = 2,
        key: PRNGKeyArray,
    ):
        keys = jax.random.split(key, 5 + 3 * blocks)
        self.frequencies = scale * jax.random.normal(keys[0], (features, in_size))
        self.embed = eqx.nn.Linear(2 * features, width, key=keys[1])
        self.gate_u = eqx.nn.Linear(2 * features, width, key=keys[2])
        self.gate_v = eqx.nn.Linear(2 * features, width, key=keys[3])
        self.blocks = tuple(
            _PirateBlock(
                eqx.nn.Linear(width, width, key=keys[5 + 3 * b]),
                eqx.nn.Linear(width, width, key=keys[6 + 3 * b]),
                eqx.nn.Linear(width, width, key=keys[7 + 3 * b]),
                jnp.zeros(()),
            )
            for b in range(blocks)
        )
        self.head = eqx.nn.Linear(width, "scalar", key=keys[4])

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        phi = _fourier_embedding(self.frequencies, x)
        u, v = jnp.tanh(self.gate_u(phi)), jnp.tanh(self.gate_v(phi))
        h = jnp.tanh(self.embed(phi))
        for block in self.blocks:
            h = block(h, u, v)
        return self.head(h)


class _Wavelet(eqx.Module):
    """`w1 sin(z) + w2 cos(z)` with learnable scalars, the activation of PINNsFormer."""

    w1: Float[Array, ""]
    w2: Float[Array, ""]

    def __call__(self, z):
        return self.w1 * jnp.sin(z) + self.w2 * jnp.cos(z)


class TransformerPINN(eqx.Module):
    """A transformer-style coordinate network in the manner of PINNsFormer (Zhao et al., 2024).

    The point `x` becomes a short pseudo-sequence `x + k * delta * e_last`, `k = 0..seq_len-1`
    (shifts along the last coordinate, usually time); tokens are embedded linearly, pass one
    self-attention block and a feed-forward block with wavelet activations, and the first
    token is read out as the scalar value.
    """

    embed: eqx.nn.Linear
    attention: eqx.nn.MultiheadAttention
    ff1: eqx.nn.Linear
    ff2: eqx.nn.Linear
    act: _Wavelet
    head: eqx.nn.Linear
    seq_len: int = eqx.field(static=True)
    delta: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        *,
        d_model: int = 32,
        heads: int = 2,
        seq_len: int = 5,
        delta: float = 0.01,
        key: PRNGKeyArray,
    ):
        k = jax.random.split(key, 5)
        self.embed = eqx.nn.Linear(in_size, d_model, key=k[0])
        self.attention = eqx.nn.MultiheadAttention(heads, d_model, key=k[1])
        self.ff1 = eqx.nn.Linear(d_model, d_model, key=k[2])
        self.ff2 = eqx.nn.Linear(d_model, d_model, key=k[3])
        self.act = _Wavelet(jnp.ones(()), jnp.ones(()))
        self.head = eqx.nn.Linear(d_model, "scalar", key=k[4])
        self.seq_len = int(seq_len)
        self.delta = float(delta)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        shifts = self.delta * jnp.arange(self.seq_len, dtype=x.dtype)
        offset = jnp.zeros((self.seq_len, x.shape[0]), x.dtype).at[:, -1].set(shifts)
        tokens = jax.vmap(self.embed)(x[None, :] + offset)
        h = self.act(tokens)
        h = h + self.attention(h, h, h)
        h = h + jax.vmap(lambda t: self.ff2(self.act(self.ff1(t))))(h)
        return self.head(h[0])
