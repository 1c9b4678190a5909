"""Shared test material: analytic fields, the convergence-slope fit and the table of methods.

Every analytic field here has closed-form partial derivatives of any order, so tests compare
numerical derivatives against exact ones rather than against stored numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

import mollijax as mj

# --------------------------------------------------------------------------- analytic fields


@dataclasses.dataclass(frozen=True)
class PlaneWave:
    """`u(x) = amp * sin(k . x + phase)` in any dimension.

    `D^alpha u = amp * prod_a k_a^alpha_a * sin(k . x + phase + |alpha| pi / 2)`, so mixed
    derivatives are exact and the field is not separable when two `k_a` are non-zero.
    """

    k: tuple[float, ...]
    phase: float = 0.3
    amp: float = 1.0

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        return self.derivative((0,) * len(self.k), *xs)

    def derivative(self, alpha: Sequence[int], *xs: np.ndarray) -> np.ndarray:
        arg = sum(ka * xa for ka, xa in zip(self.k, xs, strict=True)) + self.phase
        scale = self.amp * math.prod(ka**o for ka, o in zip(self.k, alpha, strict=True))
        return scale * np.sin(arg + sum(alpha) * np.pi / 2)


@dataclasses.dataclass(frozen=True)
class Separable:
    """`u(x) = prod_a f_a(x_a)` from 1-D plane waves; `D^alpha u = prod_a f_a^(alpha_a)`."""

    factors: tuple[PlaneWave, ...]

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        return self.derivative((0,) * len(self.factors), *xs)

    def derivative(self, alpha: Sequence[int], *xs: np.ndarray) -> np.ndarray:
        out = 1.0
        for f, o, x in zip(self.factors, alpha, xs, strict=True):
            out = out * f.derivative((o,), x)
        return out


# --------------------------------------------------------------------------- grids and errors


def interior(grid: mj.Grid, margin: float) -> tuple[slice, ...]:
    """Index slices of the nodes at least `margin` (grid units) from every end of every axis."""
    out = []
    for a in range(grid.ndim):
        x = grid.coords(a)
        inside = np.nonzero((x >= x[0] + margin) & (x <= x[-1] - margin))[0]
        out.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return tuple(out)


def max_error(approx, exact, region=...) -> float:
    return float(np.max(np.abs(np.asarray(approx)[region] - np.asarray(exact)[region])))


def rel_l2(approx, exact, region=...) -> float:
    a, e = np.asarray(approx)[region], np.asarray(exact)[region]
    return float(np.linalg.norm(a - e) / np.linalg.norm(e))


def convergence_slope(widths: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of `log(error)` against `log(width)`: the observed order."""
    widths, errors = np.asarray(widths, float), np.asarray(errors, float)
    if np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        raise ValueError(f"errors must be positive and finite to fit a slope, got {errors}")
    return float(np.polyfit(np.log(widths), np.log(errors), 1)[0])


def moments(taps: np.ndarray, h: float, up_to: int) -> np.ndarray:
    """Discrete moments `mu_m = sum_j c_j (j h)^m / m!`, m = 0..up_to, of correlation taps."""
    m = (taps.size - 1) // 2
    s = h * np.arange(-m, m + 1)
    return np.array([np.sum(taps * s**q) / math.factorial(q) for q in range(up_to + 1)])


def moment_scale(taps: np.ndarray, h: float, up_to: int) -> np.ndarray:
    """Round-off scale of each moment: `sum_j |c_j| |j h|^m / m!`."""
    m = (taps.size - 1) // 2
    s = np.abs(h * np.arange(-m, m + 1))
    return np.array([np.sum(np.abs(taps) * s**q) / math.factorial(q) for q in range(up_to + 1)])


# --------------------------------------------------------------------------- method table

KERNELS: dict[str, mj.AbstractKernel] = {
    "bump": mj.Bump(),
    "polynomial": mj.Polynomial(6),
    "gaussian": mj.TruncatedGaussian(),
}

# Grid-based mollified methods: name -> factory(grid, eps, boundary, kernel).
MOLLIFIERS: dict[str, Callable[..., mj.Mollifier]] = {
    "direct": lambda g, eps, boundary="odd", kernel=None: mj.Mollifier(
        g, eps, kernel=kernel, boundary=boundary, method="direct"
    ),
    "fft": lambda g, eps, boundary="odd", kernel=None: mj.Mollifier(
        g, eps, kernel=kernel, boundary=boundary, method="fft"
    ),
    "difference": lambda g, eps, boundary="odd", kernel=None: mj.Mollifier(
        g, eps, kernel=kernel, boundary=boundary, method="direct", scheme="difference"
    ),
}

BOUNDARIES = ("periodic", "even", "odd", "linear", "zero", "valid")


def roundoff_scale(d: mj.Mollifier, alpha: Sequence[int], u) -> float:
    """Round-off level of `d(u, alpha)`: `eps_mach * prod_a sum_j |c_j^(a)| * max |u|`."""
    gain = math.prod(float(np.abs(d.taps(a, o)).sum()) for a, o in enumerate(alpha))
    return float(np.finfo(np.asarray(u).dtype).eps) * gain * float(np.max(np.abs(u)))


def jit_derivatives(d: mj.AbstractDifferentiator, alphas: Sequence) -> Callable:
    """`v -> d.derivatives(v, alphas)` compiled once: far cheaper than op-by-op dispatch."""
    import jax

    return jax.jit(lambda v: d.derivatives(v, alphas))
