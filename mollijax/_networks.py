"""Coordinate networks: MLP, Fourier-feature MLP, PirateNet and PINNsFormer.

Each maps one point `x` of shape `(in_size,)` (coordinates already scaled to about [-1, 1])
to a scalar. Any equinox Module with that signature can be used instead.

    network        published as
    MLP            a multilayer perceptron with tanh activations
    FourierMLP     an MLP on random Fourier features (Tancik et al., 2020)
    PirateNet      PirateNets (Wang, Li, Chen, Perdikaris, 2024): gated residual blocks
                   with alpha = 0 at the start, random weight factorisation, and the
                   physics-informed start `pirate_init`
    PINNsFormer    PINNsFormer (Zhao, Ding, Prakash, ICLR 2024): a pseudo-sequence in time
                   through an encoder-decoder transformer with wavelet activations; its
                   sequential loss is the term `SequentialResidual`
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._errors import MollijaxError
from ._fields import NetworkField
from ._scope import PointField
from ._terms import AbstractTerm, Evaluation, check_weight


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


# ------------------------------------------------------------------------------ PirateNet


class _FactorisedLinear(eqx.Module):
    """A dense layer with random weight factorisation: `y = diag(exp(s)) V x + b`.

    At initialisation `W` is Glorot-normal, `s ~ N(mu, sigma^2)` per output and
    `V = diag(exp(-s)) W`, so the effective weight starts as `W`; `s`, `V` and `b` are all
    trained (Wang et al., "Random weight factorization", 2023).
    """

    log_scale: Float[Array, " out"]
    direction: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __init__(self, in_size: int, out_size: int, *, mu: float = 1.0, sigma: float = 0.1,
                 key: PRNGKeyArray):
        kw, ks = jax.random.split(key)
        std = float(np.sqrt(2.0 / (in_size + out_size)))
        w = std * jax.random.normal(kw, (out_size, in_size))
        s = mu + sigma * jax.random.normal(ks, (out_size,))
        self.log_scale = s
        self.direction = w / jnp.exp(s)[:, None]
        self.bias = jnp.zeros((out_size,), w.dtype)

    @property
    def weight(self) -> Float[Array, "out in"]:
        """The effective weight `diag(exp(s)) V`."""
        return jnp.exp(self.log_scale)[:, None] * self.direction

    def with_weight(self, weight: Array, bias: Array) -> _FactorisedLinear:
        """This layer with effective weight `weight` and bias `bias` (`s` kept, `V` solved)."""
        direction = weight / jnp.exp(self.log_scale)[:, None]
        return eqx.tree_at(lambda m: (m.direction, m.bias), self,
                           (direction.astype(self.direction.dtype), bias.astype(self.bias.dtype)))

    def __call__(self, x: Array) -> Array:
        return self.weight @ x + self.bias


class _PirateBlock(eqx.Module):
    """`f = tanh(W1 x + b1)`, `z1 = f U + (1 - f) V`, `g = tanh(W2 z1 + b2)`,
    `z2 = g U + (1 - g) V`, `h = tanh(W3 z2 + b3)`; returns `alpha h + (1 - alpha) x`."""

    dense1: _FactorisedLinear
    dense2: _FactorisedLinear
    dense3: _FactorisedLinear
    alpha: Float[Array, ""]

    def __call__(self, x, u, v):
        f = jnp.tanh(self.dense1(x))
        z1 = f * u + (1 - f) * v
        g = jnp.tanh(self.dense2(z1))
        z2 = g * u + (1 - g) * v
        h = jnp.tanh(self.dense3(z2))
        return self.alpha * h + (1 - self.alpha) * x


class PirateNet(eqx.Module):
    """PirateNet (Wang, Li, Chen, Perdikaris, 2024): gated residual blocks over a fixed
    random Fourier embedding, every dense layer with random weight factorisation.

    With the embedding `Phi(x) = [cos(2 pi B x), sin(2 pi B x)]`, `B ~ N(0, scale^2)` fixed
    (shape `(features, in_size)`, so `Phi` has `2 features` entries):

        U = tanh(W_u Phi + b_u),  V = tanh(W_v Phi + b_v),  x_1 = Phi(x)
        block l:  f = tanh(W_1 x_l + b_1),  z_1 = f U + (1 - f) V
                  g = tanh(W_2 z_1 + b_2),  z_2 = g U + (1 - g) V
                  h = tanh(W_3 z_2 + b_3),  x_{l+1} = alpha_l h + (1 - alpha_l) x_l
        u(x) = W_out x_{L+1} + b_out

    `U`, `V`, `f`, `g`, `z_1`, `z_2` have `width` entries; `h` and every `x_l` have
    `2 features`. Each `alpha_l` starts at 0: the network starts as the linear model
    `W_out Phi(x) + b_out` of the embedding (which `pirate_init` fits to data by least
    squares) and deepens as the `alpha_l` grow in training. Every dense layer, `W_out`
    included, is factorised `W = diag(exp(s)) V` with `s ~ N(1, 0.1^2)` at the start and
    `s`, `V` trained.

    **Arguments:**

    - `in_size`: the number of coordinates.
    - `features`: the number of random frequencies (the embedding has twice as many entries).
    - `scale`: the standard deviation of the frequencies `B` (in cycles per unit of the
      scaled coordinates).
    - `width`: the width of the gates and of the blocks' hidden layers.
    - `blocks`: the number of residual blocks `L`.
    - `key`: a PRNG key.
    """

    frequencies: Float[Array, "features in_size"]
    gate_u: _FactorisedLinear
    gate_v: _FactorisedLinear
    blocks: tuple[_PirateBlock, ...]
    head: _FactorisedLinear

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
        keys = jax.random.split(key, 4 + 3 * blocks)
        embed = 2 * features
        self.frequencies = scale * jax.random.normal(keys[0], (features, in_size))
        self.gate_u = _FactorisedLinear(embed, width, key=keys[1])
        self.gate_v = _FactorisedLinear(embed, width, key=keys[2])
        self.head = _FactorisedLinear(embed, 1, key=keys[3])
        self.blocks = tuple(
            _PirateBlock(
                _FactorisedLinear(embed, width, key=keys[4 + 3 * b]),
                _FactorisedLinear(width, width, key=keys[5 + 3 * b]),
                _FactorisedLinear(width, embed, key=keys[6 + 3 * b]),
                jnp.zeros(()),
            )
            for b in range(blocks)
        )

    def embedding(self, x: Float[Array, " in_size"]) -> Float[Array, " embed"]:
        """`Phi(x) = [cos(2 pi B x), sin(2 pi B x)]`, shape `(2 features,)`."""
        return _fourier_embedding(self.frequencies, x)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        phi = self.embedding(x)
        u, v = jnp.tanh(self.gate_u(phi)), jnp.tanh(self.gate_v(phi))
        h = phi
        for block in self.blocks:
            h = block(h, u, v)
        return self.head(h)[0]


def pirate_init(
    net: PirateNet,
    points: Float[Array | np.ndarray, "n in_size"],
    values: Float[Array | np.ndarray, " n"],
) -> PirateNet:
    """PirateNet's physics-informed initialisation: the output layer fitted by least squares.

    While every block's `alpha_l` is 0 the network is `u(x) = W_out Phi(x) + b_out`, linear
    in its embedding; this sets `(W_out, b_out)` to the least-squares solution of
    `[Phi(x_i), 1] (W_out, b_out) = u_i` (the minimum-norm one when it is not unique), keeping
    the factorisation's `s` (`V_out = diag(exp(-s)) W_out`). A target that the embedding
    spans is then reproduced to round-off. Pure: returns a new network.

    **Arguments:**

    - `net`: a `PirateNet` whose `alpha_l` are all 0 (as built).
    - `points`: `(n, in_size)` coordinates, scaled as the network sees them (a
      `NetworkField` maps the grid to [-1, 1] on each axis).
    - `values`: `(n,)` values of the field there (data, or an initial condition).

    **Returns:** the `PirateNet` with its output layer fitted.
    """
    if not isinstance(net, PirateNet):
        raise MollijaxError(f"pirate_init: `net` must be a PirateNet, got {type(net).__name__}.")
    points, values = jnp.asarray(points), jnp.asarray(values)
    if points.ndim != 2 or values.shape != points.shape[:1]:
        raise MollijaxError(
            f"pirate_init: `points` must be (n, in_size) and `values` (n,), got "
            f"{points.shape} and {values.shape}."
        )
    for i, block in enumerate(net.blocks):
        if not isinstance(block.alpha, jax.core.Tracer) and float(block.alpha) != 0.0:
            raise MollijaxError(
                f"pirate_init: block {i} has alpha = {float(block.alpha):g}, expected 0: the "
                "network is linear in its embedding only while every alpha is 0."
            )
    phi = jax.vmap(net.embedding)(points.astype(net.frequencies.dtype))
    design = jnp.concatenate([phi, jnp.ones((phi.shape[0], 1), phi.dtype)], axis=1)
    coef = jnp.linalg.lstsq(design, values.astype(phi.dtype))[0]
    head = net.head.with_weight(coef[None, :-1], coef[-1:])
    return eqx.tree_at(lambda n: n.head, net, head)


# ---------------------------------------------------------------------------- PINNsFormer


class _Wavelet(eqx.Module):
    """`w1 sin(z) + w2 cos(z)` with learnable scalars `w1 = w2 = 1` at the start, the
    activation of PINNsFormer."""

    w1: Float[Array, ""]
    w2: Float[Array, ""]

    def __init__(self):
        self.w1 = jnp.ones(())
        self.w2 = jnp.ones(())

    def __call__(self, z):
        return self.w1 * jnp.sin(z) + self.w2 * jnp.cos(z)


class _WaveletMLP(eqx.Module):
    """`L3(act2(L2(act1(L1 z))))`: `size -> width -> width -> out_size`."""

    linear1: eqx.nn.Linear
    act1: _Wavelet
    linear2: eqx.nn.Linear
    act2: _Wavelet
    linear3: eqx.nn.Linear

    def __init__(self, size: int, width: int, out_size: int, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.linear1 = eqx.nn.Linear(size, width, key=k1)
        self.act1 = _Wavelet()
        self.linear2 = eqx.nn.Linear(width, width, key=k2)
        self.act2 = _Wavelet()
        self.linear3 = eqx.nn.Linear(width, out_size, key=k3)

    def __call__(self, z):
        return self.linear3(self.act2(self.linear2(self.act1(self.linear1(z)))))


def _attention(heads: int, size: int, key) -> eqx.nn.MultiheadAttention:
    return eqx.nn.MultiheadAttention(heads, size, use_query_bias=True, use_key_bias=True,
                                     use_value_bias=True, use_output_bias=True, key=key)


class _TransformerLayer(eqx.Module):
    """One encoder layer (`memory` None: self-attention) or decoder layer (attention to the
    encoder's output `memory`): `x <- x + Attn(act1(x), m, m)`, `x <- x + FF(act2(x))`."""

    act1: _Wavelet
    attention: eqx.nn.MultiheadAttention
    act2: _Wavelet
    feed_forward: _WaveletMLP

    def __init__(self, d_model: int, heads: int, width: int, *, key):
        ka, kf = jax.random.split(key)
        self.act1 = _Wavelet()
        self.attention = _attention(heads, d_model, ka)
        self.act2 = _Wavelet()
        self.feed_forward = _WaveletMLP(d_model, width, d_model, key=kf)

    def __call__(self, x, memory=None):
        q = self.act1(x)
        kv = q if memory is None else memory
        x = x + self.attention(q, kv, kv)
        return x + jax.vmap(self.feed_forward)(self.act2(x))


class PINNsFormer(eqx.Module):
    """PINNsFormer (Zhao, Ding, Prakash, ICLR 2024): a transformer over a pseudo-sequence in
    time, with wavelet activations.

    1. Pseudo-sequence: the point `x` becomes `k = seq_len` tokens
       `x_j = x + j delta e_time`, `j = 0..k-1` (a shift of the coordinate `time`, by default
       the last; `delta` in the scaled coordinates the network sees).
    2. Spatio-temporal mixer: a linear embedding `E x_j + b` of width `d_model`.
    3. Encoder (`depth` layers, then a wavelet): `h <- h + SelfAttn(act(h))`,
       `h <- h + FF(act(h))`.
    4. Decoder (`depth` layers, then a wavelet) on the embedded tokens, attending to the
       encoder's output `m`: `h <- h + Attn(act(h), m, m)`, `h <- h + FF(act(h))`.
    5. Output: a wavelet MLP `d_model -> width -> width -> 1` per token.

    Every activation is a wavelet `act(z) = w1 sin(z) + w2 cos(z)` with its own learnable
    `w1, w2` (1 at the start); `FF` is `d_model -> width -> width -> d_model` with two
    of them. Token `j` approximates `u(x + j delta e_time)`: `sequence(x)` returns all `k`
    values, `__call__(x)` the first (`j = 0`), so the network is a drop-in scalar field. The
    attention mixes the tokens, so every value depends on the whole pseudo-sequence. The
    sequential loss (the residual at every pseudo-time, data and conditions at `j = 0`) is
    `SequentialResidual`.

    **Arguments:**

    - `in_size`: the number of coordinates.
    - `d_model`: the width of the embedding and attention (32 in the paper).
    - `heads`: attention heads (2 in the paper); must divide `d_model`.
    - `width`: the hidden width of the feed-forward and output MLPs (512 in the paper; 64
      here by default, for CPU).
    - `depth`: encoder and decoder layers (1 in the paper).
    - `seq_len`: `k`, the pseudo-sequence length (5 in the paper).
    - `delta`: the pseudo-time step in scaled coordinates (the paper's 1e-4 in its time
      units is `2e-4 / T` here for a time span `T`).
    - `time`: the index of the coordinate that is shifted (default: the last).
    - `key`: a PRNG key.
    """

    embed: eqx.nn.Linear
    encoder: tuple[_TransformerLayer, ...]
    encoder_act: _Wavelet
    decoder: tuple[_TransformerLayer, ...]
    decoder_act: _Wavelet
    output: _WaveletMLP
    seq_len: int = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    time: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        *,
        d_model: int = 32,
        heads: int = 2,
        width: int = 64,
        depth: int = 1,
        seq_len: int = 5,
        delta: float = 0.01,
        time: int = -1,
        key: PRNGKeyArray,
    ):
        if d_model % heads:
            raise MollijaxError(
                f"PINNsFormer: `heads` ({heads}) must divide `d_model` ({d_model})."
            )
        if not -in_size <= time < in_size:
            raise MollijaxError(
                f"PINNsFormer: `time` must index one of the {in_size} coordinates, got {time}."
            )
        if seq_len < 1 or not np.isfinite(delta):
            raise MollijaxError(
                f"PINNsFormer: `seq_len` must be >= 1 and `delta` finite, got {seq_len} and "
                f"{delta}."
            )
        keys = jax.random.split(key, 2 + 2 * depth)
        self.embed = eqx.nn.Linear(in_size, d_model, key=keys[0])
        self.encoder = tuple(_TransformerLayer(d_model, heads, width, key=keys[2 + i])
                             for i in range(depth))
        self.decoder = tuple(_TransformerLayer(d_model, heads, width, key=keys[2 + depth + i])
                             for i in range(depth))
        self.encoder_act = _Wavelet()
        self.decoder_act = _Wavelet()
        self.output = _WaveletMLP(d_model, width, 1, key=keys[1])
        self.seq_len = int(seq_len)
        self.delta = float(delta)
        self.time = int(time) % in_size

    def pseudo_sequence(self, x: Float[Array, " in_size"]) -> Float[Array, "seq in_size"]:
        """The tokens `x + j delta e_time`, `j = 0..seq_len-1`."""
        shifts = self.delta * jnp.arange(self.seq_len, dtype=x.dtype)
        return x[None, :] + jnp.zeros((self.seq_len, x.shape[0]), x.dtype).at[:, self.time].set(
            shifts
        )

    def on_sequence(self, tokens: Float[Array, "seq in_size"]) -> Float[Array, " seq"]:
        """The value of every token of a (pseudo-)sequence: embedding, encoder, decoder,
        output MLP."""
        src = jax.vmap(self.embed)(tokens)
        memory = src
        for layer in self.encoder:
            memory = layer(memory)
        memory = self.encoder_act(memory)
        h = src
        for layer in self.decoder:
            h = layer(h, memory)
        h = self.decoder_act(h)
        return jax.vmap(self.output)(h)[:, 0]

    def sequence(self, x: Float[Array, " in_size"]) -> Float[Array, " seq"]:
        """`u_j(x)`, `j = 0..seq_len-1`: the value at every pseudo-time of `x`."""
        return self.on_sequence(self.pseudo_sequence(x))

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        return self.sequence(x)[0]


TransformerPINN = PINNsFormer
"""The former name of `PINNsFormer` (network name `"transformer"`)."""


class _PseudoTime(eqx.Module):
    """A PINNsFormer's output `j` as a scalar network."""

    net: PINNsFormer
    j: Array

    def __call__(self, x):
        return self.net.sequence(x)[self.j]


class _ShiftedScope:
    """A scope in which the fields in `values` are replaced (grid values, or point fields in
    point mode); everything else is the underlying scope's."""

    def __init__(self, scope, values: dict, fields: dict, grid):
        self._scope, self._values, self._fields, self._grid = scope, values, fields, grid

    def __getitem__(self, name: str):
        value = self._scope[name]  # also marks it as used
        if name not in self._values:
            return value
        if isinstance(value, PointField):
            field, grid = self._fields[name], self._grid
            return PointField(lambda i, x: field.at_point(grid, i, x), True)
        return self._values[name]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self[name]
        return getattr(self._scope, name)


class SequentialResidual(AbstractTerm):
    """PINNsFormer's sequential loss: a residual at the later pseudo-times of the state.

    For state fields `u` represented by `PINNsFormer` networks, the field of pseudo-time `j`,
    `u_j(x) = net.sequence(x)[j]`, approximates `u(x + j delta e_t)`; this term is

        L = sum_{j=1}^{k-1} mean over the residuals' nodes of r(u_j)^2,

    with `r(u_j)` the residual `fn` evaluated, by the problem's derivatives, on the grid
    values of every `u_j` (all fields in `fields` shifted together). Beside the problem's
    own `Residual` (which is `j = 0`), the residual kind then sums the residual at all `k`
    pseudo-times, while data and conditions see only `j = 0` (the network's value): the
    paper's sequential loss. (The paper averages the residual over the `k` pseudo-times: a
    weight `1/k` on the kind `"residual"` reproduces that scale.)

    Valid when nothing else the residual reads depends on time: the other unknowns, known
    fields and data are read at `t`, not `t + j delta`. An unknown other than `fields` on the
    shifted axis is refused. Cost: `k - 1` further evaluations of the network on the grid and
    of the residual.

    **Arguments:**

    - `fn`: the residual function `r(s)` of a `Scope` (the problem's own).
    - `fields`: the names of the state unknowns, each a `NetworkField` over a `PINNsFormer`
      with the same `seq_len`.
    - `label`: the residual's label; the term is named `residual:<label>:seq`.
    - `weight`: the term's weight.
    """

    fn: Callable = eqx.field(static=True)
    fields: tuple[str, ...] = eqx.field(static=True)
    label: str = eqx.field(static=True)
    weight: Float[Array, ""]

    def __init__(self, fn: Callable, fields: str | tuple[str, ...] | list[str],
                 label: str = "pde", weight=1.0):
        if not callable(fn):
            raise MollijaxError(
                f"SequentialResidual {label!r}: `fn` must be a function r(s), got {fn!r}."
            )
        fields = (fields,) if isinstance(fields, str) else tuple(fields)
        if not fields or not all(isinstance(f, str) for f in fields):
            raise MollijaxError(
                f"SequentialResidual {label!r}: `fields` must name the PINNsFormer state "
                f"field(s), got {fields!r}."
            )
        self.fn = fn
        self.fields = fields
        self.label = str(label)
        self.weight = check_weight(weight, f"weight of 'residual:{label}:seq'")

    @property
    def name(self) -> str:
        return f"residual:{self.label}:seq"

    def _networks(self, ev: Evaluation) -> tuple[dict, int]:
        nets, lengths, shifted_axes = {}, set(), set()
        for name in self.fields:
            field = ev.unknowns.get(name)
            net = getattr(field, "net", None)
            if not isinstance(field, NetworkField) or not isinstance(net, PINNsFormer):
                raise MollijaxError(
                    f"{self.name}: field {name!r} must be an unknown NetworkField over a "
                    f"PINNsFormer, got {type(field).__name__}"
                    + (f" over {type(net).__name__}" if net is not None else "") + "."
                )
            nets[name] = field
            lengths.add(net.seq_len)
            shifted_axes.add(field.axes[net.time])
        if len(lengths) != 1 or len(shifted_axes) != 1:
            raise MollijaxError(
                f"{self.name}: the fields {self.fields} must share one pseudo-sequence: "
                f"seq_len {sorted(lengths)}, shifted axes {sorted(shifted_axes)}."
            )
        (axis,) = shifted_axes
        for name, field in ev.unknowns.items():
            if name not in self.fields and axis in field.axes:
                raise MollijaxError(
                    f"{self.name}: unknown {name!r} depends on {axis!r}, the axis the "
                    "pseudo-sequence shifts; the residual at a later pseudo-time would read it "
                    "at the wrong time. The sequential loss needs the other unknowns "
                    f"independent of {axis!r}."
                )
        return nets, lengths.pop()

    def __call__(self, ev: Evaluation) -> Float[Array, ""]:
        fields, k = self._networks(ev)
        if k < 2:
            return jnp.zeros(())

        def at(j):
            shifted = {
                name: eqx.tree_at(lambda f: f.net, f, _PseudoTime(f.net, j))
                for name, f in fields.items()
            }
            values = {name: f.on_grid(ev.grid) for name, f in shifted.items()}
            r, count = ev.residual_in_band(
                lambda s: self.fn(_ShiftedScope(s, values, shifted, ev.grid))
            )
            return jnp.sum(r**2) / count

        return jnp.sum(jax.vmap(at)(jnp.arange(1, k)))
