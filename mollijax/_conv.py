"""Pure array functions: boundary padding and separable correlation along grid axes.

Everything here takes and returns plain arrays and is safe under `jit`, `vmap` and `grad`.
Taps are static NumPy arrays (correlation form, odd length `2M + 1`); they are cast to the
field's dtype at trace time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import MollijaxError

BOUNDARIES = ("periodic", "even", "odd", "linear", "zero", "valid")
_ALIASES = {"wrap": "periodic", "reflect": "even", "symmetric": "even", "constant": "zero"}


def canonical_boundary(mode: str) -> str:
    """Map a boundary name (or alias) to one of `BOUNDARIES`, with a clear error otherwise."""
    if not isinstance(mode, str):
        raise MollijaxError(f"`boundary` must be a string, got {mode!r}.")
    name = _ALIASES.get(mode.lower(), mode.lower())
    if name not in BOUNDARIES:
        raise MollijaxError(
            f"Unknown `boundary` {mode!r}; expected one of {BOUNDARIES} "
            f"(aliases {sorted(_ALIASES)})."
        )
    return name


def pad_axis(u: jax.Array, axis: int, left: int, right: int, mode: str) -> jax.Array:
    """Extend `u` by `left`/`right` nodes along `axis` according to a boundary `mode`.

    - `periodic`: `u_{-j} = u_{n-j}`;
    - `even`: even reflection about the end node, `u_{-j} = u_j`;
    - `odd`: odd reflection about the end value, `u_{-j} = 2 u_0 - u_j` (exact for lines,
      and `-u_j` when `u_0 = 0`);
    - `linear`: linear extrapolation of the last two nodes, `u_{-j} = u_0 + j (u_0 - u_1)`;
    - `zero`: `u_{-j} = 0`.
    """
    if left == 0 and right == 0:
        return u
    width = [(0, 0)] * u.ndim
    width[axis] = (left, right)
    if mode == "periodic":
        return jnp.pad(u, width, mode="wrap")
    if mode == "even":
        return jnp.pad(u, width, mode="reflect")
    if mode == "odd":
        return jnp.pad(u, width, mode="reflect", reflect_type="odd")
    if mode == "zero":
        return jnp.pad(u, width, mode="constant")
    if mode == "linear":
        n = u.shape[axis]
        take = lambda i: jax.lax.index_in_dim(u, i, axis, keepdims=True)
        shape = [1] * u.ndim
        parts = []
        if left:
            j = jnp.arange(left, 0, -1, dtype=u.dtype).reshape(shape[:axis] + [left] + shape[axis + 1 :])
            parts.append(take(0) + j * (take(0) - take(1)))
        parts.append(u)
        if right:
            j = jnp.arange(1, right + 1, dtype=u.dtype).reshape(
                shape[:axis] + [right] + shape[axis + 1 :]
            )
            parts.append(take(n - 1) + j * (take(n - 1) - take(n - 2)))
        return jnp.concatenate(parts, axis=axis)
    raise MollijaxError(f"Cannot pad with boundary {mode!r}.")


# Above this many taps the direct correlation loops instead of unrolling one slice per tap.
_UNROLL_LIMIT = 65


def correlate_axis(u: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
    """`out_i = sum_j taps[j] u_{i+j}` along `axis`, 'valid' (length `n - len(taps) + 1`).

    Written as a sum of shifted slices, which XLA fuses into one loop. XLA's CPU convolution
    (`lax.conv_general_dilated`) was 10-50x slower in float32, and its gradient crashed the
    process for some 3-D float64 shapes (jaxlib 0.10.2); slices have neither problem and
    are differentiable in forward and reverse mode.
    """
    if taps.size == 1:
        return u * jnp.asarray(taps[0], u.dtype)
    n_out = u.shape[axis] - taps.size + 1
    if taps.size > _UNROLL_LIMIT:
        # wide kernels: a loop over the taps keeps compile time independent of their number
        coeffs = jnp.asarray(taps, u.dtype)

        def add_tap(acc, j):
            return acc + coeffs[j] * jax.lax.dynamic_slice_in_dim(u, j, n_out, axis=axis), None

        zero = jnp.zeros_like(jax.lax.slice_in_dim(u, 0, n_out, axis=axis))
        return jax.lax.scan(add_tap, zero, jnp.arange(taps.size))[0]
    out = None
    for j, c in enumerate(taps):
        if c == 0.0:
            continue
        term = jnp.asarray(c, u.dtype) * jax.lax.slice_in_dim(u, j, j + n_out, axis=axis)
        out = term if out is None else out + term
    if out is None:
        out = jnp.zeros_like(jax.lax.slice_in_dim(u, 0, n_out, axis=axis))
    return out


# Up to this many nodes along a padded axis, padding and correlation along it are applied as
# one dense matrix.
_MATRIX_MAX_NODES = 128


@functools.lru_cache(maxsize=256)
def _axis_matrix(n: int, taps: bytes, mode: str) -> np.ndarray:
    """The `(n, n)` matrix of padding `n` nodes by `mode` and correlating with `taps` (float64
    bytes): row `i` holds the weights of `out_i = sum_j taps[j] padded_{i+j}`."""
    t = np.frombuffer(taps, np.float64)
    w = (t.size - 1) // 2
    eye = np.eye(n)
    if mode == "linear":
        j = np.arange(w, 0, -1)[:, None]
        below = eye[0] + j * (eye[0] - eye[1])
        above = eye[n - 1] + np.arange(1, w + 1)[:, None] * (eye[n - 1] - eye[n - 2])
        padded = np.concatenate([below, eye, above])
    else:
        kind = {"periodic": {"mode": "wrap"}, "even": {"mode": "reflect"},
                "odd": {"mode": "reflect", "reflect_type": "odd"},
                "zero": {"mode": "constant"}}[mode]
        padded = np.pad(eye, ((w, w), (0, 0)), **kind)
    return sum(c * padded[j:j + n] for j, c in enumerate(t))


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast FFT lengths)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _transfer(taps: np.ndarray, n: int, real: bool) -> np.ndarray:
    """Fourier symbol of circular correlation with `taps` on `n` points."""
    m = (taps.size - 1) // 2
    g = np.zeros(n)
    for j in range(-m, m + 1):
        g[(-j) % n] += taps[j + m]
    return np.fft.rfft(g) if real else np.fft.fft(g)


def separable_apply(
    u: jax.Array,
    taps: Sequence[Sequence[np.ndarray]],
    modes: Sequence[str],
    halo: Sequence[int],
    method: str,
) -> list[jax.Array]:
    """Apply several separable operators to one field, sharing work between them.

    **Arguments:**

    - `u`: field values, shape `(n_0, ..., n_{d-1})`.
    - `taps`: one entry per output; each is a tuple of `d` odd-length 1-D tap arrays (one per
      axis, correlation form).
    - `modes`: boundary mode per axis (`BOUNDARIES`).
    - `halo`: per axis, the band cropped from each end in `valid` mode (at least the widest
      tap's half-width); ignored for padded modes.
    - `method`: `"direct"` (per-axis convolutions, shared prefixes) or `"fft"` (one forward
      transform of the padded field, one inverse per output).

    **Returns:** a list of arrays, the grid's shape (or the valid region's shape).
    """
    d = u.ndim
    widths = [max((t[a].size - 1) // 2 for t in taps) for a in range(d)]
    if method == "fft":
        return _separable_fft(u, taps, modes, halo, widths)
    # direct: along a short padded axis, padding and correlation are one small matrix (one
    # product to compile instead of a slice per tap); along the others pad each axis once by
    # the widest half-width, then pass axis by axis
    matrix = [modes[a] != "valid" and u.shape[a] <= _MATRIX_MAX_NODES
              and 2 * widths[a] < u.shape[a] for a in range(d)]
    padded = u
    for a in range(d):
        if modes[a] != "valid" and not matrix[a]:
            padded = pad_axis(padded, a, widths[a], widths[a], modes[a])
    cache: dict[tuple, jax.Array] = {}
    outs = []
    for t in taps:
        v = padded
        key: tuple = ()
        for a in range(d):
            key = key + (t[a].tobytes(), t[a].size)
            if key not in cache:
                if matrix[a] and t[a].size > 1:
                    m = jnp.asarray(_axis_matrix(u.shape[a], np.asarray(t[a], np.float64).tobytes(),
                                                  modes[a]),
                                    v.dtype)
                    cache[key] = jnp.moveaxis(jnp.tensordot(m, v, axes=(1, a)), 0, a)
                elif matrix[a]:
                    cache[key] = correlate_axis(v, t[a], a)
                else:
                    extra = 0 if modes[a] == "valid" else widths[a] - (t[a].size - 1) // 2
                    trimmed = jax.lax.slice_in_dim(v, extra, v.shape[a] - extra, axis=a)
                    cache[key] = correlate_axis(trimmed, t[a], a)
            v = cache[key]
        outs.append(_crop_valid(v, t, modes, halo))
    return outs


def separable_combination(
    u: jax.Array,
    taps: Sequence[Sequence[np.ndarray]],
    coeffs: Sequence[float],
    modes: Sequence[str],
    halo: Sequence[int],
    method: str,
) -> jax.Array:
    """`sum_k coeffs[k] T_k u` for separable operators `T_k` given by `taps[k]`, in one pass.

    On the FFT path the symbols are combined in Fourier space, `F^-1[(sum_k c_k S_k) F u]`:
    one forward and one inverse transform whatever the number of terms (a biharmonic in 2-D
    has three). On the direct path it is the coefficient-weighted sum of `separable_apply`'s
    outputs (shared per-axis prefixes). Arguments as in `separable_apply`; returns one array.
    """
    if len(taps) != len(coeffs):
        raise MollijaxError(
            f"`coeffs` must have one value per operator ({len(taps)}), got {len(coeffs)}."
        )
    d = u.ndim
    widths = [max((t[a].size - 1) // 2 for t in taps) for a in range(d)]
    if method == "fft":
        return _separable_fft(u, taps, modes, halo, widths, coeffs)[0]
    outs = separable_apply(u, taps, modes, halo, method)
    total = None
    for c, v in zip(coeffs, outs, strict=True):
        term = v if c == 1.0 else jnp.asarray(c, v.dtype) * v
        total = term if total is None else total + term
    return total


def _crop_valid(v, t, modes, halo):
    for a, mode in enumerate(modes):
        if mode == "valid":
            cut = halo[a] - (t[a].size - 1) // 2
            v = jax.lax.slice_in_dim(v, cut, v.shape[a] - cut, axis=a)
    return v


def _separable_fft(u, taps, modes, halo, widths, coeffs=None):
    """FFT path of `separable_apply` (one output per operator), or of `separable_combination`
    when `coeffs` is given (one output: the symbols summed before a single inverse)."""
    d = u.ndim
    padded = u
    rights = []
    for a in range(d):
        if modes[a] in ("periodic", "valid"):
            rights.append(0)
            continue
        n_pad = _fft_size(u.shape[a] + 2 * widths[a])
        right = n_pad - u.shape[a] - widths[a]
        padded = pad_axis(padded, a, widths[a], right, modes[a])
        rights.append(right)
    sizes = padded.shape
    spectrum = jnp.fft.rfftn(padded, axes=tuple(range(d)))
    cdtype = spectrum.dtype

    def symbol(t):
        # the 1-D symbols as broadcastable factors, multiplied at trace time (XLA fuses the
        # products): their outer product would be a grid-sized constant baked into the
        # compiled program
        out = None
        for a in range(d):
            s = _transfer(t[a], sizes[a], real=(a == d - 1))
            shape = [1] * d
            shape[a] = s.size
            factor = jnp.asarray(s.reshape(shape), cdtype)
            out = factor if out is None else out * factor
        return out

    if coeffs is None:
        products = [spectrum * symbol(t) for t in taps]
    else:
        combined = None
        for c, t in zip(coeffs, taps, strict=True):
            term = symbol(t) if c == 1.0 else jnp.asarray(c, cdtype) * symbol(t)
            combined = term if combined is None else combined + term
        products = [spectrum * combined]
    outs = []
    for product in products:
        # one inverse transform per output: batched multi-channel inverse FFTs inside
        # value_and_grad have crashed some jaxlib CPU builds
        v = jnp.fft.irfftn(product, s=sizes, axes=tuple(range(d)))
        v = v.astype(u.dtype)
        for a in range(d):
            if modes[a] == "valid":
                v = jax.lax.slice_in_dim(v, halo[a], v.shape[a] - halo[a], axis=a)
            elif modes[a] != "periodic":
                v = jax.lax.slice_in_dim(v, widths[a], widths[a] + u.shape[a], axis=a)
        outs.append(v)
    return outs
