"""Drift and diffusion of a Fokker-Planck equation fitted to density snapshots.

The model is

    d rho/dt = -div(b rho) + sum_{a,b} D_ab d_a d_b rho,    b(x) = c + G x,

with a constant vector `c`, a constant matrix `G` (an affine drift, `drift="affine"`; or
`G = 0`, `drift="constant"`; or `b = 0`, `drift="none"`) and a constant symmetric `D`
(`diffusion=False` fixes `D = 0`). Every term is a derivative of a field, so mollifying the
equation with one kernel `phi_eps` gives the same equation for mollified fields:

    d rho~/dt = -sum_a [c_a d_a rho~ + sum_e G_ae d_a (x_e rho)~] + sum_ab D_ab d_a d_b rho~,

`f~ = f * phi_eps`. The drift regressors are derivatives of the mollified *products*
`x_e rho` (not `x_e` times a derivative of `rho~`, which would differ by a commutator of
order `eps^2 G Hess rho` and bias `D` by about `-s^2 sym(G)`, `s^2` the kernel's variance).
So the only biases left are the grid's and the time step's. Consecutive snapshots give the
midpoint relation (regressors averaged over the two snapshots), solved by least squares
over every node and pair, as `fit_diffusion` does for `D` alone.

**Identifiability.** A density's evolution fixes the velocity only up to fields `w` with
`div(w rho) = 0`, and a diffusion `D` moves a density exactly as the drift `-D grad log rho`
does. For a Gaussian the two are both affine, so `(G, D)` is not identifiable (the
backward heat flow `D = -I` of `N(0, S)` is also the linear drift `G = -S^{-1}` with
`D = 0`); fit `drift="none"` there. For a non-Gaussian density (e.g. a mixture) the regressors are
independent and the fit separates an affine drift from a constant diffusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

import mollijax as mj

from ._transport_density import check_snapshots, second_order_indices, snapshot_densities

DRIFTS = ("affine", "constant", "none")


class FokkerPlanckFit(NamedTuple):
    """Result of `fit_fokker_planck`.

    - `drift_constant`: `c`, shape `(d,)` (zeros when `drift="none"`).
    - `drift_matrix`: `G`, shape `(d, d)` (zeros unless `drift="affine"`).
    - `diffusion`: `D`, shape `(d, d)`, symmetric (zeros when `diffusion=False`).
    - `relative_residual`: `|rho~_t - model| / |rho~_t|` over all nodes and pairs.
    - `rho_t`, `prediction`: left-hand side and fitted right-hand side, `(T - 1, *grid)`.
    """

    drift_constant: np.ndarray
    drift_matrix: np.ndarray
    diffusion: np.ndarray
    relative_residual: float
    rho_t: np.ndarray
    prediction: np.ndarray


def _unit(ndim: int, *axes: int) -> tuple[int, ...]:
    return tuple(sum(int(a == c) for a in axes) for c in range(ndim))


def fit_fokker_planck(
    densities: Float[ArrayLike, " T *grid"],
    times: Float[ArrayLike, " T"] | Sequence[float],
    differentiator: mj.Mollifier,
    drift: str = "affine",
    diffusion: bool = True,
) -> FokkerPlanckFit:
    """Fit `c`, `G`, `D` in `d rho/dt = -div((c + G x) rho) + D : Hess rho` to snapshots.

    **Arguments:**

    - `densities`: shape `(T, *grid)`, `T >= 2` (e.g. `snapshot_densities`), vanishing at the
      box's edges.
    - `times`: shape `(T,)`, increasing.
    - `differentiator`: a `mj.Mollifier` on the densities' grid (`density_differentiator`:
      zero boundary, `scheme="difference"`).
    - `drift`: `"affine"` (`c` and `G`), `"constant"` (`c`) or `"none"`.
    - `diffusion`: fit `D` (else `D = 0`).

    **Returns:** a `FokkerPlanckFit`; `x` are the grid's coordinates.
    """
    if not isinstance(differentiator, mj.Mollifier):
        raise mj.MollijaxError(
            f"`differentiator` must be a mollijax.Mollifier, got {type(differentiator).__name__}."
        )
    if drift not in DRIFTS:
        raise mj.MollijaxError(f"`drift` must be one of {DRIFTS}, got {drift!r}.")
    if drift == "none" and not diffusion:
        raise mj.MollijaxError("`drift='none'` with `diffusion=False` leaves nothing to fit.")
    grid = differentiator.grid
    d = grid.ndim
    rho, t = check_snapshots(densities, times, grid)
    coords = [jnp.asarray(c, rho.dtype) for c in grid.mesh()]
    pairs = second_order_indices(d)
    first = [_unit(d, a) for a in range(d)]
    second = [_unit(d, a, b) for a, b in pairs]

    def regressors(r):
        # the field itself, then -d_a rho~ (constant drift), -d_a (x_e rho)~ (affine drift),
        # (2 - delta_ab) d_a d_b rho~ (diffusion)
        out = list(differentiator.derivatives(r, [(0,) * d] + first + second))
        smooth, grads, hess = out[0], out[1:1 + d], out[1 + d:]
        cols = []
        if drift != "none":
            cols += [-g for g in grads]
        if drift == "affine":
            for a in range(d):
                for e in range(d):
                    cols.append(-differentiator.derivatives(coords[e] * r, [first[a]])[0])
        if diffusion:
            cols += [h if a == b else 2.0 * h for h, (a, b) in zip(hess, pairs, strict=True)]
        return smooth, jnp.stack(cols)

    smooth, cols = jax.vmap(regressors)(rho)
    smooth, cols = np.asarray(smooth), np.asarray(cols)  # (T, *grid), (T, P, *grid)
    dt = np.diff(t).reshape((-1,) + (1,) * d)
    lhs = (smooth[1:] - smooth[:-1]) / dt
    mid = 0.5 * (cols[1:] + cols[:-1])
    design = np.moveaxis(mid, 1, -1).reshape(-1, cols.shape[1])
    coef, *_ = np.linalg.lstsq(design, lhs.reshape(-1), rcond=None)
    prediction = (design @ coef).reshape(lhs.shape)
    resid = float(np.linalg.norm(lhs - prediction) / np.linalg.norm(lhs))

    c, g, dm = np.zeros(d), np.zeros((d, d)), np.zeros((d, d))
    k = 0
    if drift != "none":
        c, k = coef[:d].copy(), d
    if drift == "affine":
        g, k = coef[k:k + d * d].reshape(d, d).copy(), k + d * d
    if diffusion:
        for (a, b), v in zip(pairs, coef[k:], strict=True):
            dm[a, b] = dm[b, a] = v
    return FokkerPlanckFit(c, g, dm, resid, lhs, prediction)


def layer_fits(
    particles: Float[ArrayLike, "T n d"],
    grid: mj.Grid,
    differentiator: mj.Mollifier,
    step: float,
    drift: str = "affine",
    diffusion: bool = True,
) -> list[FokkerPlanckFit]:
    """`fit_fokker_planck` between every pair of consecutive layers of a particle history
    (entry `l` of `particles` is the cloud after layer `l`), with layer `l` at time `l step`:
    one drift and one diffusion per layer."""
    if not (np.isfinite(step) and step > 0):
        raise mj.MollijaxError(f"`step` must be a positive number, got {step!r}.")
    rho = snapshot_densities(particles, grid)
    return [fit_fokker_planck(rho[k:k + 2], [k * step, (k + 1) * step], differentiator,
                              drift, diffusion) for k in range(rho.shape[0] - 1)]
