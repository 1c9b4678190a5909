"""Mollifier kernel families with analytic derivatives of any order.

A kernel is a smooth, even profile `phi(r)` supported on `[-1, 1]`. The mollifier of width
`eps` along one axis is

    phi_eps(x) = phi(x / eps) / (eps * m),    m = int_{-1}^{1} phi(r) dr,

so that `int phi_eps = 1`, and its `k`-th derivative is

    phi_eps^(k)(x) = phi^(k)(x / eps) / (m * eps^(k + 1)).

In N dimensions mollijax uses the tensor product `Phi_eps(x) = prod_a phi_eps(x_a)`, so every
partial derivative `D^alpha Phi_eps = prod_a phi_eps^(alpha_a)(x_a)` is separable.

Kernel profiles are evaluated once, in float64 NumPy, when an operator is built; nothing here
runs inside a traced function.
"""

from __future__ import annotations

import abc

import equinox as eqx
import numpy as np
from numpy.polynomial import hermite_e as H
from numpy.polynomial import polynomial as P

from ._errors import DerivativeOrderError, MollijaxError

# Gauss-Legendre rule used for kernel masses; the profiles vanish smoothly at +-1, so this is
# accurate to round-off for every family below.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(400)


class AbstractKernel(eqx.Module):
    """Interface of a 1-D mollifier profile on `[-1, 1]`.

    Subclasses implement `derivative(r, order)`, the analytic `order`-th derivative of the
    unnormalised profile at points `r` (zero outside `[-1, 1]`), and may cap `max_order`.
    """

    @abc.abstractmethod
    def derivative(self, r: np.ndarray, order: int) -> np.ndarray:
        """`order`-th derivative of the unnormalised profile at `r` (float64 NumPy)."""

    @property
    def max_order(self) -> int | None:
        """Largest derivative order whose profile is a bounded function (None: unlimited)."""
        return None

    def profile(self, r: np.ndarray) -> np.ndarray:
        return self.derivative(r, 0)

    def mass(self) -> float:
        """`int_{-1}^{1} phi(r) dr`."""
        return float(np.sum(_GL_WEIGHTS * self.derivative(_GL_NODES, 0)))

    def check_order(self, order: int) -> None:
        if order < 0:
            raise DerivativeOrderError(f"Derivative order must be >= 0, got {order}.")
        if self.max_order is not None and order > self.max_order:
            raise DerivativeOrderError(
                f"{type(self).__name__} supports derivative orders up to {self.max_order}, "
                f"got {order}; use a smoother kernel (e.g. TruncatedGaussian() or Bump()) or a "
                "higher power."
            )

    def scaled_derivative(self, x: np.ndarray, eps: float, order: int) -> np.ndarray:
        """`phi_eps^(order)(x)`: derivative of the normalised kernel of half-width `eps`."""
        self.check_order(order)
        r = np.asarray(x, dtype=np.float64) / eps
        return self.derivative(r, order) / (self.mass() * eps ** (order + 1))


class Bump(AbstractKernel):
    """The C-infinity bump `phi(r) = exp(-1 / (1 - r^2))` for `|r| < 1`, zero outside.

    Derivatives follow from `phi^(k)(r) = P_k(r) (1 - r^2)^(-2k) phi(r)` with `P_0 = 1` and

        P_{k+1} = (1 - r^2)^2 P_k' + (4 k r (1 - r^2) - 2 r) P_k,

    exact polynomials, so every order is available in closed form. They also grow like
    `(k!)^2` (the bump is Gevrey class 2), with steep features near `|r| = 1`, so sampled taps
    of order 6 and above need many nodes per half-width: on `cos(2x)` the order-6 taps miss
    the mollified derivative by a factor 4 at 25 nodes per half-width and by 3 % at 60. For
    orders 6-10 `TruncatedGaussian` is the better kernel (0.6-0.8 % off at 25 nodes for
    orders 6-8; both checked in `tests/test_taps.py`).
    """

    def derivative(self, r: np.ndarray, order: int) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        one_minus = 1.0 - r * r
        poly = np.array([1.0])
        sq = np.array([1.0, 0.0, -2.0, 0.0, 1.0])  # (1 - r^2)^2
        for k in range(order):
            lin = np.array([0.0, 4.0 * k - 2.0, 0.0, -4.0 * k])  # 4k r (1 - r^2) - 2 r
            poly = P.polyadd(P.polymul(sq, P.polyder(poly)), P.polymul(lin, poly))
        # exp(-1 / (1 - r^2)) underflows to 0 long before the prefactor overflows
        inside = one_minus > 1e-3
        safe = np.where(inside, one_minus, 1.0)
        value = P.polyval(r, poly) * safe ** (-2.0 * order) * np.exp(-1.0 / safe)
        return np.where(inside, value, 0.0)


class Polynomial(AbstractKernel):
    """The polynomial family `phi(r) = (1 - r^2)^power` for `|r| <= 1`, zero outside.

    `phi` is `C^(power - 1)`, so derivatives up to order `power` are bounded functions;
    higher orders would contain Dirac masses at `|r| = 1` and are refused.
    """

    power: int = 6

    def __check_init__(self):
        if not isinstance(self.power, int) or self.power < 1:
            raise MollijaxError(
                f"Polynomial `power` must be a positive integer, got {self.power!r}."
            )

    @property
    def max_order(self) -> int:
        return self.power

    def derivative(self, r: np.ndarray, order: int) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        coeffs = P.polypow(np.array([1.0, 0.0, -1.0]), self.power)
        coeffs = P.polyder(coeffs, order) if order else coeffs
        return np.where(np.abs(r) <= 1.0, P.polyval(r, coeffs), 0.0)


class TruncatedGaussian(AbstractKernel):
    """A Gaussian `exp(-r^2 / (2 sigma^2))` truncated to `|r| <= 1` (`sigma` in units of eps).

    With `x = r / sigma`, `d^k/dr^k exp(-x^2/2) = (-1)^k sigma^(-k) He_k(x) exp(-x^2/2)`, with
    `He_k` the probabilists' Hermite polynomials. The truncation leaves a jump of relative size
    `exp(-1 / (2 sigma^2))` (1e-2 at the default `sigma = 1/3`); moment-corrected taps make the
    discrete operator exact on polynomials regardless.
    """

    sigma: float = 1.0 / 3.0

    def __check_init__(self):
        if not (0 < self.sigma <= 1):
            raise MollijaxError(
                f"TruncatedGaussian `sigma` must be in (0, 1], got {self.sigma!r}."
            )

    def derivative(self, r: np.ndarray, order: int) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        x = r / self.sigma
        he = H.hermeval(x, [0.0] * order + [1.0])
        value = (-1.0) ** order * self.sigma ** (-order) * he * np.exp(-0.5 * x * x)
        return np.where(np.abs(r) <= 1.0, value, 0.0)
