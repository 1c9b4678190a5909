"""Discrete 1-D taps of mollified derivatives, with exact discrete moments.

All taps are in *correlation* form: applied at node `i` they give

    (D^k u)_i ~= sum_{j=-M}^{M} c_j u_{i+j}.

Sampling the analytic kernel derivative, `c_j = h * phi_eps^(k)(-j h)`, converges only when the
kernel spans many grid cells; with a handful of cells per half-width its discrete moments are
far from the continuous ones and high-order derivatives are useless. mollijax therefore
corrects the sampled taps so that the discrete moment conditions hold exactly,

    sum_j c_j (j h)^m / m! = delta_{m k}     for m = 0, ..., k,

which makes the operator exact on polynomials of degree <= k (and, by symmetry, k + 1). The
correction is the smallest change in the norm weighted by the kernel profile, so it vanishes
where the kernel does and keeps the taps smooth:

    c = c0 + W V^T lam,    (V W V^T) lam = e_k - V c0,    W = diag(phi(j h / eps)).
"""

from __future__ import annotations

import math

import numpy as np

from ._errors import DerivativeOrderError, KernelTooWideError
from ._kernels import AbstractKernel

SCHEMES = ("corrected", "sampled", "difference")


def half_width(eps: float, h: float) -> int:
    """Number `M` of grid steps inside the support `|x| <= eps`."""
    return int(math.floor(eps / h + 1e-9))


def _moment_matrix(offsets: np.ndarray, order: int) -> np.ndarray:
    """`V[m, j] = s_j^m / m!` for m = 0..order (offsets `s` already scaled)."""
    return np.stack([offsets**m / math.factorial(m) for m in range(order + 1)])


def sampled_taps(kernel: AbstractKernel, eps: float, h: float, order: int) -> np.ndarray:
    """Taps `c_j = h phi_eps^(k)(-j h)`, `j = -M..M`, with no correction (for comparison)."""
    m = half_width(eps, h)
    x = -h * np.arange(-m, m + 1)
    return h * kernel.scaled_derivative(x, eps, order)


def corrected_taps(kernel: AbstractKernel, eps: float, h: float, order: int) -> np.ndarray:
    """Sampled taps corrected to exact discrete moments `0..order` (see module docstring)."""
    c0 = sampled_taps(kernel, eps, h, order)
    m = (c0.size - 1) // 2
    s = h * np.arange(-m, m + 1) / eps  # offsets in units of eps: well conditioned
    # conditions in scaled units: sum_j c_j s_j^q / q! = delta_{q k} * eps^-k
    vmat = _moment_matrix(s, order)
    target = np.zeros(order + 1)
    target[order] = eps ** (-order)
    weights = kernel.profile(s)
    # keep only conditions of the kernel's parity: the others hold by symmetry
    rows = [q for q in range(order + 1) if (q - order) % 2 == 0]
    vmat, target = vmat[rows], target[rows]
    gram = (vmat * weights) @ vmat.T
    # the rows' scales differ by factorials (1/8! at order 8): test the rank, and solve, on
    # the Jacobi-equilibrated Gram, whose diagonal is 1
    diag = np.sqrt(np.diag(gram))
    if np.any(diag <= 0.0):
        rank = 0
    else:
        gram = gram / np.outer(diag, diag)
        rank = np.linalg.matrix_rank(gram, tol=1e-12)
    if rank < len(rows):
        raise KernelTooWideError(
            f"eps={eps:.6g} spans only {m} grid steps of h={h:.6g}; a derivative of order "
            f"{order} needs more points inside the kernel. Use eps >= "
            f"{((order + 1) // 2 + 1) * h:.6g} (or a coarser grid)."
        )
    lam = np.linalg.solve(gram, (target - vmat @ c0) / diag) / diag
    return c0 + weights * (vmat.T @ lam)


def difference_stencil(h: float, order: int) -> np.ndarray:
    """Central difference stencil for `d^k/dx^k`, second-order accurate, in correlation form."""
    if order == 0:
        return np.ones(1)
    p = (order + 1) // 2
    s = np.arange(-p, p + 1, dtype=np.float64)
    vmat = _moment_matrix(s, 2 * p)
    target = np.zeros(2 * p + 1)
    target[order] = 1.0
    return np.linalg.solve(vmat, target) / h**order


def central_difference_taps(h: float, order: int, accuracy: int = 2) -> np.ndarray:
    """Central finite-difference taps of even `accuracy` order (2, 4, 6, ...)."""
    if accuracy < 2 or accuracy % 2:
        raise DerivativeOrderError(f"`accuracy` must be an even integer >= 2, got {accuracy}.")
    if order == 0:
        return np.ones(1)
    p = (order + 1) // 2 + accuracy // 2 - 1
    s = np.arange(-p, p + 1, dtype=np.float64)
    vmat = _moment_matrix(s, 2 * p)
    target = np.zeros(2 * p + 1)
    target[order] = 1.0
    return np.linalg.solve(vmat, target) / h**order


def smoothed_difference_taps(kernel: AbstractKernel, eps: float, h: float, order: int):
    """Central differences of the mollified field: smoothing taps convolved with a stencil.

    The smoothing taps are normalised to sum 1, and the convolution of a moment-exact
    stencil with them is again moment-exact to order `k`.
    """
    smooth = sampled_taps(kernel, eps, h, 0)
    smooth = smooth / smooth.sum()
    return np.convolve(smooth, difference_stencil(h, order))


def mollifier_taps(
    kernel: AbstractKernel, eps: float, h: float, order: int, scheme: str = "corrected"
) -> np.ndarray:
    """1-D taps of `d^k/dx^k (u * phi_eps)` on a grid of spacing `h` (float64, odd length)."""
    if not isinstance(order, int | np.integer) or order < 0:
        raise DerivativeOrderError(f"Derivative order must be a non-negative integer, got {order!r}.")
    kernel.check_order(order)
    if not (np.isfinite(eps) and eps > 0):
        raise KernelTooWideError(f"`eps` must be positive and finite, got {eps!r}.")
    if half_width(eps, h) < 1:
        raise KernelTooWideError(
            f"eps={eps:.6g} is narrower than one grid step h={h:.6g}; the kernel sees no "
            "neighbours. Use eps >= 2h."
        )
    if scheme == "corrected":
        taps = corrected_taps(kernel, eps, h, order)
        if order == 0:
            taps = taps / taps.sum()
        return taps
    if scheme == "sampled":
        return sampled_taps(kernel, eps, h, order)
    if scheme == "difference":
        return smoothed_difference_taps(kernel, eps, h, order)
    raise DerivativeOrderError(f"Unknown tap `scheme` {scheme!r}; expected one of {SCHEMES}.")
