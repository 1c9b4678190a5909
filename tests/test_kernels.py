"""Kernel families: analytic derivatives, symmetry, masses and scaling."""

import math

import numpy as np
import pytest
from helpers import KERNELS

import mollijax as mj


def _max_order(kernel):
    return 4 if kernel.max_order is None else min(4, kernel.max_order)


def _cases():
    for name, kernel in KERNELS.items():
        for k in range(1, _max_order(kernel) + 1):
            yield pytest.param(kernel, k, id=f"{name}-{k}")


def _central_fd(f, r, delta):
    """Sixth-order central difference of `f` at `r`: error `delta^6 f^(7) / 140`."""
    w = (-1.0 / 60, 3.0 / 20, -3.0 / 4, 0.0, 3.0 / 4, -3.0 / 20, 1.0 / 60)
    return sum(c * f(r + (j - 3) * delta) for j, c in enumerate(w)) / delta


@pytest.mark.parametrize("kernel,k", list(_cases()))
def test_derivative_matches_finite_difference_of_lower_order(kernel, k):
    # stay away from |r| = 1, where the truncated Gaussian jumps and the bump is flat
    r = np.linspace(-0.9, 0.9, 181)
    delta = 1e-3
    exact = kernel.derivative(r, k)
    approx = _central_fd(lambda s: kernel.derivative(s, k - 1), r, delta)
    scale = np.max(np.abs(exact))
    assert np.max(np.abs(approx - exact)) < 1e-8 * scale


@pytest.mark.parametrize("kernel,k", list(_cases()))
def test_derivative_integrates_to_jump_of_lower_order(kernel, k):
    # int_{-1}^{1} phi^(k) = phi^(k-1)(1) - phi^(k-1)(-1): zero for the bump and the
    # polynomial family, the truncation jump for the truncated Gaussian
    r = np.linspace(-1.0, 1.0, 400_001)
    f = kernel.derivative(r, k)
    # exact step: r[1] - r[0] is rounded
    integral = np.sum((f[1:] + f[:-1]) / 2) * (2.0 / (r.size - 1))
    ends = kernel.derivative(np.array([-1.0, 1.0]), k - 1)
    jump = ends[1] - ends[0]
    assert abs(integral - jump) < 1e-7 * np.max(np.abs(f))
    if not isinstance(kernel, mj.TruncatedGaussian):
        assert abs(jump) < 1e-300


@pytest.mark.parametrize("kernel,k", list(_cases()))
def test_parity(kernel, k):
    r = np.linspace(0.0, 1.0, 51)
    np.testing.assert_allclose(
        kernel.derivative(-r, k), (-1) ** k * kernel.derivative(r, k), rtol=1e-13, atol=0
    )


def _bump_mass_trapezoid():
    # all derivatives of the bump vanish at +-1, so the trapezoid rule converges faster than
    # any power of the step (Euler-Maclaurin): an independent reference for the mass
    r = np.linspace(-1.0, 1.0, 20_001)
    f = np.where(np.abs(r) < 1, np.exp(-1.0 / np.maximum(1 - r * r, 1e-300)), 0.0)
    return float(np.sum(f) * (2.0 / (r.size - 1)))


@pytest.mark.parametrize(
    "kernel,expected",
    [
        (mj.Bump(), _bump_mass_trapezoid()),
        # int (1 - r^2)^p = 2^(2p+1) (p!)^2 / (2p+1)!
        *[
            (
                mj.Polynomial(p),
                2 ** (2 * p + 1) * math.factorial(p) ** 2 / math.factorial(2 * p + 1),
            )
            for p in (1, 2, 6, 9)
        ],
        # int_{-1}^{1} exp(-r^2 / (2 s^2)) = s sqrt(2 pi) erf(1 / (s sqrt 2))
        *[
            (mj.TruncatedGaussian(s), s * math.sqrt(2 * math.pi) * math.erf(1 / (s * math.sqrt(2))))
            for s in (0.2, 1.0 / 3.0, 0.7)
        ],
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, mj.AbstractKernel) else "",
)
def test_mass_matches_independent_quadrature(kernel, expected):
    assert kernel.mass() == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("eps", [0.05, 0.3, 2.0])
def test_scaled_kernel_has_unit_mass_and_chain_rule(name, eps):
    kernel = KERNELS[name]
    x = np.linspace(-eps, eps, 200_001)
    phi = kernel.scaled_derivative(x, eps, 0)
    mass = np.sum((phi[1:] + phi[:-1]) / 2) * (2.0 * eps / (x.size - 1))
    # the truncated Gaussian jumps at the ends: the trapezoid rule is then O(dx^2)
    assert mass == pytest.approx(1.0, rel=1e-9)
    # d/dx phi_eps^(k-1) = phi_eps^(k): the eps^-(k+1) scaling is consistent
    xs = np.linspace(-0.9 * eps, 0.9 * eps, 37)
    for k in range(1, _max_order(kernel) + 1):
        exact = kernel.scaled_derivative(xs, eps, k)
        approx = _central_fd(lambda s, k=k: kernel.scaled_derivative(s, eps, k - 1), xs, 1e-3 * eps)
        assert np.max(np.abs(approx - exact)) < 1e-8 * np.max(np.abs(exact))


@pytest.mark.parametrize("power", [1, 2, 4, 6])
def test_polynomial_refuses_orders_above_its_power(power):
    kernel = mj.Polynomial(power)
    kernel.scaled_derivative(np.zeros(3), 1.0, power)  # the highest order is allowed
    with pytest.raises(mj.DerivativeOrderError, match=str(power)):
        kernel.scaled_derivative(np.zeros(3), 1.0, power + 1)
    with pytest.raises(mj.DerivativeOrderError):
        mj.mollifier_taps(kernel, 0.1, 0.01, power + 1)


@pytest.mark.parametrize("bad", [0, -2])
def test_polynomial_power_must_be_positive_integer(bad):
    with pytest.raises(mj.MollijaxError, match="power"):
        mj.Polynomial(bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_gaussian_sigma_range(bad):
    with pytest.raises(mj.MollijaxError, match="sigma"):
        mj.TruncatedGaussian(bad)


def test_kernels_are_hashable_and_compare_by_value():
    # kernels are static fields of differentiators: equal kernels must hash equal
    assert hash(mj.Polynomial(6)) == hash(mj.Polynomial(6))
    assert mj.Polynomial(6) == mj.Polynomial(6)
    assert mj.Polynomial(6) != mj.Polynomial(4)
