"""From particles to densities, transport PDEs and Wasserstein distances.

- `particle_density`: cloud-in-cell deposit of particles on a grid (a density whose integral
  is the fraction of particles inside the box). It is continuous in the particle positions,
  so the difference of two snapshots of the same particles moved a little is small and
  smooth, which is what a time derivative needs.
- `fit_diffusion`: the inverse problem. Given snapshots `rho_k` at times `t_k`, mollify them
  with a `mj.Mollifier` (the kernel-density estimate) and fit the constant symmetric tensor `D`
  in `d rho/dt = div(D grad rho) = sum_{a,b} D_ab d_a d_b rho` by least squares.
- `w2_sorted`, `w2_gaussian`, `sliced_w2`: 2-Wasserstein distances between point clouds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

import mollijax as mj


def particle_density(points: Float[ArrayLike, "n d"], grid: mj.Grid) -> Float[Array, "*grid"]:
    """Cloud-in-cell density of `n` particles on `grid`.

    Each particle spreads mass `1 / n` over the `2^d` nodes of its cell with multilinear
    weights; the result is divided by the cell volume `prod h_a`, so `sum(rho) * prod h_a` is
    the fraction of particles inside the grid's box (particles outside are dropped). As a
    density estimate it is the empirical measure convolved with a tent of half-width `h` and
    sampled at the nodes; its bias is `O(h^2)`.
    """
    x = jnp.asarray(points)
    if x.ndim != 2 or x.shape[1] != grid.ndim:
        raise mj.GridMismatchError(
            f"`points` must have shape (n, {grid.ndim}) for a {grid.ndim}-D grid, "
            f"got shape {tuple(x.shape)}."
        )
    origin = jnp.asarray(grid.origin, x.dtype)
    spacing = jnp.asarray(grid.spacing, x.dtype)
    shape = jnp.asarray(grid.shape, jnp.int32)
    r = (x - origin) / spacing
    cell = jnp.floor(r)
    frac = r - cell
    i0 = cell.astype(jnp.int32)
    rho = jnp.zeros(grid.shape, x.dtype)
    for corner in itertools.product((0, 1), repeat=grid.ndim):
        c = jnp.asarray(corner, jnp.int32)
        idx = i0 + c
        weight = jnp.prod(jnp.where(c == 1, frac, 1.0 - frac), axis=1)
        inside = jnp.all((idx >= 0) & (idx < shape), axis=1)
        idx = jnp.clip(idx, 0, shape - 1)
        rho = rho.at[tuple(idx.T)].add(jnp.where(inside, weight, 0.0))
    return rho / (x.shape[0] * float(np.prod(grid.spacing)))


def second_order_indices(ndim: int) -> list[tuple[int, int]]:
    """The pairs `(a, b)`, `a <= b`, that parametrise a symmetric `ndim x ndim` tensor."""
    return [(a, b) for a in range(ndim) for b in range(a, ndim)]


def check_snapshots(densities, times, grid: mj.Grid) -> tuple[Array, np.ndarray]:
    """`(rho, t)`: density snapshots `(T, *grid.shape)` and their `T` increasing times,
    checked (named errors otherwise)."""
    rho = jnp.asarray(densities)
    t = np.asarray(times, dtype=np.float64)
    if rho.ndim != grid.ndim + 1 or tuple(rho.shape[1:]) != grid.shape:
        raise mj.GridMismatchError(
            f"`densities` must have shape (T, *{grid.shape}), got shape {tuple(rho.shape)}."
        )
    if t.shape != (rho.shape[0],) or t.size < 2 or np.any(np.diff(t) <= 0):
        raise mj.MollijaxError(
            f"`times` must be {rho.shape[0]} increasing numbers (one per snapshot), "
            f"got {t.tolist()}."
        )
    return rho, t


class DiffusionFit(NamedTuple):
    """Result of `fit_diffusion`.

    - `matrix`: the fitted symmetric tensor `D`, shape `(d, d)`.
    - `relative_residual`: `|rho_t - D : Hess rho| / |rho_t|` over all nodes and pairs.
    - `rho_t`, `prediction`: the left-hand side and the fitted right-hand side, shape
      `(T - 1, *grid)`, for plots.
    """

    matrix: np.ndarray
    relative_residual: float
    rho_t: np.ndarray
    prediction: np.ndarray


def fit_diffusion(
    densities: Float[ArrayLike, " T *grid"],
    times: Float[ArrayLike, " T"] | Sequence[float],
    differentiator: mj.Mollifier,
) -> DiffusionFit:
    """Fit `D` in `d rho/dt = sum_{a,b} D_ab d_a d_b rho` to density snapshots.

    With `rho~ = rho * phi_eps` (the mollified snapshot) and the mollified second derivatives
    `d_a d_b rho~ = rho * d_a d_b phi_eps`, each pair of consecutive snapshots gives the
    midpoint (Crank-Nicolson) relation

        (rho~_{k+1} - rho~_k) / (t_{k+1} - t_k)
            = sum_{a <= b} (2 - delta_ab) D_ab (d_a d_b rho~_k + d_a d_b rho~_{k+1}) / 2,

    which holds to `O(dt^2)` for a smooth solution. Mollifying both sides with the same kernel
    commutes with a constant-coefficient operator, so the width `eps` smooths the particle
    noise without biasing `D`. The `d (d + 1) / 2` unknowns are solved for by least squares
    over every node and pair (`numpy.linalg.lstsq`, float64).

    **Arguments:**

    - `densities`: shape `(T, *grid)`, `T >= 2`, e.g. from `particle_density`.
    - `times`: shape `(T,)`, increasing.
    - `differentiator`: a `mj.Mollifier` on the densities' grid (use `boundary="zero"` when the
      densities vanish at the edges).

    **Returns:** a `DiffusionFit`.
    """
    if not isinstance(differentiator, mj.Mollifier):
        raise mj.MollijaxError(
            f"`differentiator` must be a mollijax.Mollifier, got {type(differentiator).__name__}."
        )
    grid = differentiator.grid
    rho, t = check_snapshots(densities, times, grid)
    pairs = second_order_indices(grid.ndim)
    alphas = [(0,) * grid.ndim] + [
        tuple(int(c == a) + int(c == b) for c in range(grid.ndim)) for a, b in pairs
    ]
    fields = jax.vmap(lambda r: jnp.stack(differentiator.derivatives(r, alphas)))(rho)
    fields = np.asarray(fields)  # (T, 1 + P, *grid)
    dt = np.diff(t).reshape((-1,) + (1,) * grid.ndim)
    lhs = (fields[1:, 0] - fields[:-1, 0]) / dt
    mid = 0.5 * (fields[1:, 1:] + fields[:-1, 1:])  # (T-1, P, *grid)
    factors = np.array([1.0 if a == b else 2.0 for a, b in pairs])
    design = np.moveaxis(mid, 1, -1).reshape(-1, len(pairs)) * factors
    coef, *_ = np.linalg.lstsq(design, lhs.reshape(-1), rcond=None)
    matrix = np.zeros((grid.ndim, grid.ndim))
    for (a, b), c in zip(pairs, coef, strict=True):
        matrix[a, b] = matrix[b, a] = c
    prediction = (design @ coef).reshape(lhs.shape)
    resid = float(np.linalg.norm(lhs - prediction) / np.linalg.norm(lhs))
    return DiffusionFit(matrix, resid, lhs, prediction)


def snapshot_densities(
    particles: Float[ArrayLike, "T n d"], grid: mj.Grid
) -> Float[Array, " T *grid"]:
    """`particle_density` of every snapshot of a `(T, n, d)` particle history."""
    return jnp.stack([particle_density(p, grid) for p in jnp.asarray(particles)])


# ----------------------------------------------------------------- Wasserstein distances


def w2_sorted(a: Float[ArrayLike, "*n"], b: Float[ArrayLike, "*n"]) -> float:
    """Exact 2-Wasserstein distance between two 1-D empirical measures of `n` atoms each
    (arrays of any shape holding `n` values, e.g. `(n,)` or `(n, 1)`; they are flattened).

    In 1-D the optimal coupling is monotone: `W2^2 = mean_i (a_(i) - b_(i))^2` over the
    sorted samples.
    """
    a, b = jnp.ravel(jnp.asarray(a)), jnp.ravel(jnp.asarray(b))
    if a.shape != b.shape:
        raise mj.MollijaxError(
            f"`a` and `b` must hold the same number of samples, got {a.shape[0]} and {b.shape[0]}."
        )
    return float(jnp.sqrt(jnp.mean((jnp.sort(a) - jnp.sort(b)) ** 2)))


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    return v @ np.diag(np.sqrt(np.clip(w, 0.0, None))) @ v.T


def w2_gaussian(a: Float[ArrayLike, "n d"], b: Float[ArrayLike, "m d"]) -> float:
    """2-Wasserstein distance between the Gaussian fits (mean, covariance) of two clouds:

        W2^2 = |m_a - m_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})

    (closed form, the Bures metric). Exact for Gaussian clouds up to sampling error; a lower
    bound of the true W2 between the clouds in general.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise mj.MollijaxError(
            f"`a` and `b` must have shapes (n, d) and (m, d), got {a.shape} and {b.shape}."
        )
    sa, sb = np.cov(a.T, bias=True).reshape(a.shape[1], -1), np.cov(b.T, bias=True).reshape(
        b.shape[1], -1
    )
    ra = _sqrtm_psd(sa)
    cross = _sqrtm_psd(ra @ sb @ ra)
    w2sq = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa + sb - 2 * cross)
    return float(np.sqrt(max(w2sq, 0.0)))


def sliced_w2(
    a: Float[ArrayLike, "n d"], b: Float[ArrayLike, "n d"], key: PRNGKeyArray, directions: int = 64
) -> float:
    """Sliced 2-Wasserstein distance `(E_theta W2^2(theta.a, theta.b))^{1/2}`, `theta` uniform
    on the sphere, by Monte Carlo over `directions` random directions (each slice exact by
    sorting). For a translation by `m` it equals `|m| / sqrt(d)`."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise mj.MollijaxError(
            f"`a` and `b` must have the same shape (n, d), got {a.shape} and {b.shape}."
        )
    theta = jax.random.normal(key, (directions, a.shape[1]), dtype=a.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
    pa, pb = jnp.sort(a @ theta.T, axis=0), jnp.sort(b @ theta.T, axis=0)
    return float(jnp.sqrt(jnp.mean((pa - pb) ** 2)))
