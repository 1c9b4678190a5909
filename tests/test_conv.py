"""Padding and convolution: boundary modes, direct vs FFT, and the exact periodic convolution."""

import numpy as np
import pytest
from helpers import BOUNDARIES, PlaneWave, jit_derivatives, max_error, roundoff_scale

import mollijax as mj

# ----------------------------------------------------------------------------- helpers


def _extended(grid: mj.Grid, pad: tuple[int, ...]) -> mj.Grid:
    """The grid with `pad[a]` extra nodes on both ends of each axis (same spacing)."""
    return mj.Grid(
        tuple(n + 2 * p for n, p in zip(grid.shape, pad, strict=True)),
        grid.spacing,
        tuple(o - p * h for o, p, h in zip(grid.origin, pad, grid.spacing, strict=True)),
        grid.axes,
    )


def _reference(grid, eps, alpha, values_on, kernel=None):
    """`D^alpha` computed without any padding, on a grid extended by the kernel's halo.

    `values_on(ext_grid)` gives the field's values on the extended grid (the "true" extension
    that a boundary mode should reproduce); the 'valid' output is exactly the original grid.
    """
    probe = mj.Mollifier(grid, eps, kernel=kernel, boundary="valid", method="direct")
    ext = _extended(grid, probe.halo)
    d = mj.Mollifier(ext, eps, kernel=kernel, boundary="valid", method="direct")
    out = d(values_on(ext), alpha)
    assert out.shape == grid.shape
    return np.asarray(out)


# ----------------------------------------------------------------------------- boundary modes

GRID_1D = mj.Grid.from_bounds(61, 0.0, 1.0)
EPS_1D = 0.1  # 6 cells


@pytest.mark.parametrize("mode", ["odd", "linear"])
@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_odd_and_linear_are_exact_on_lines_up_to_the_edge(mode, k):
    (x,) = GRID_1D.mesh()
    u = 0.7 - 2.5 * x
    out = mj.Mollifier(GRID_1D, EPS_1D, boundary=mode)(u, (k,))
    exact = {0: u, 1: -2.5 * np.ones_like(x)}.get(k, np.zeros_like(x))
    gain = np.abs(mj.mollifier_taps(mj.Bump(), EPS_1D, GRID_1D.spacing[0], k)).sum()
    assert max_error(out, exact) < 1e-12 * max(1.0, gain)


@pytest.mark.parametrize("k", [2, 4])
def test_odd_mode_kills_even_derivatives_at_the_edge(k):
    # odd reflection about the end value makes u - u_0 odd there; even taps then give 0
    (x,) = GRID_1D.mesh()
    u = np.exp(x) + x**3
    out = np.asarray(mj.Mollifier(GRID_1D, EPS_1D, boundary="odd")(u, (k,)))
    roundoff = 1e-14 * np.abs(mj.mollifier_taps(mj.Bump(), EPS_1D, GRID_1D.spacing[0], k)).sum()
    assert abs(out[0]) < roundoff * abs(u[0]) and abs(out[-1]) < roundoff * abs(u[-1])
    assert abs(out[30]) > 1.0


def test_even_mode_kills_first_derivative_at_the_edge():
    (x,) = GRID_1D.mesh()
    u = 0.7 - 2.5 * x  # even mode is *not* exact for lines: u_x(0) becomes 0
    out = np.asarray(mj.Mollifier(GRID_1D, EPS_1D, boundary="even")(u, "x"))
    assert abs(out[0]) < 1e-12 and abs(out[-1]) < 1e-12
    np.testing.assert_allclose(out[10:-10], -2.5, rtol=1e-12)


# natural extension of each mode, on [0, 1]: the mode must reproduce the infinite-domain result
_EXTENSIONS = {
    "even": lambda x: np.cos(np.pi * x) + 0.3 * np.cos(3 * np.pi * x),
    "odd": lambda x: 0.4 + 1.3 * x + np.sin(np.pi * x) - 0.2 * np.sin(2 * np.pi * x),
    "linear": lambda x: 0.4 + 1.3 * x,
}


@pytest.mark.parametrize("mode", list(_EXTENSIONS))
@pytest.mark.parametrize("k", [0, 1, 2, 4])
def test_mode_reproduces_its_natural_extension(mode, k):
    f = _EXTENSIONS[mode]
    (x,) = GRID_1D.mesh()
    out = mj.Mollifier(GRID_1D, EPS_1D, boundary=mode)(f(x), (k,))
    ref = _reference(GRID_1D, EPS_1D, (k,), lambda g: f(g.mesh()[0]))
    scale = np.abs(mj.mollifier_taps(mj.Bump(), EPS_1D, GRID_1D.spacing[0], k)).sum()
    assert max_error(out, ref) < 1e-13 * scale


def test_periodic_and_zero_modes_reproduce_their_extensions():
    grid = mj.Grid.from_bounds(64, 0.0, 1.0, periodic=True)
    (x,) = grid.mesh()
    f = PlaneWave((2 * np.pi * 3,), phase=0.4)
    for k in (0, 1, 2, 4):
        out = mj.Mollifier(grid, 0.1, boundary="periodic")(f(x), (k,))
        ref = _reference(grid, 0.1, (k,), lambda g: f(g.mesh()[0]))
        scale = np.abs(mj.mollifier_taps(mj.Bump(), 0.1, grid.spacing[0], k)).sum()
        assert max_error(out, ref) < 1e-13 * scale
        # zero padding: the extension is 0 outside the grid
        out = mj.Mollifier(grid, 0.1, boundary="zero")(f(x), (k,))
        inside = (lambda g: np.where((g.mesh()[0] >= -1e-12) & (g.mesh()[0] <= x[-1] + 1e-12),
                                     f(g.mesh()[0]), 0.0))
        ref = _reference(grid, 0.1, (k,), inside)
        assert max_error(out, ref) < 1e-13 * scale


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_valid_mode_shape_and_polynomial_exactness(k):
    grid = mj.Grid.from_bounds(50, -1.0, 2.0)
    (x,) = grid.mesh()
    d = mj.Mollifier(grid, 7.5 * grid.spacing[0], boundary="valid")
    region = d.valid_region()
    # exact on polynomials of degree <= k + 1 (moments <= k exact, moment k + 1 zero by parity)
    p = np.polynomial.Polynomial([0.3, -1.2, 0.8, 0.5, -0.25, 0.1][: k + 2])
    out = d(p(x), (k,))
    assert out.shape == d.output_shape == x[region].shape == (50 - 2 * 7,)
    exact = p.deriv(k)(x[region]) if k else p(x[region])
    scale = np.abs(mj.mollifier_taps(mj.Bump(), 7.5 * grid.spacing[0], grid.spacing[0], k)).sum()
    assert max_error(out, exact) < 1e-13 * scale * np.max(np.abs(p(x)))
    # one degree more is not exact (the error is the O(eps^2) smoothing bias)
    q = p + np.polynomial.Polynomial([0.0] * (k + 3) + [1.0])
    out = d(q(x), (k,))
    assert max_error(out, q.deriv(k)(x[region]) if k else q(x[region])) > 1e-6


def test_valid_mode_per_axis_in_2d():
    grid = mj.Grid.from_bounds((30, 40), (0.0, 0.0), (1.0, 2.0))
    x, y = grid.mesh()
    d = mj.Mollifier(grid, (0.15, 0.25), boundary=("valid", "linear"))
    region = d.valid_region()
    assert region[1] == slice(None)
    u = 1.0 + 2.0 * x - 3.0 * y + 0.5 * x * y + x**2
    out = d.derivatives(u, ["x", "y", "xy", "xx"])
    assert all(o.shape == d.output_shape == x[region].shape for o in out)
    xr, yr = x[region], y[region]
    for o, e in zip(out, [2.0 + 0.5 * yr + 2 * xr, -3.0 + 0.5 * xr, 0.5 + 0 * xr, 2.0 + 0 * xr],
                    strict=True):
        assert max_error(o, e) < 1e-10


# ----------------------------------------------------------------------------- direct vs FFT


@pytest.fixture(scope="module")
def field_2d():
    grid = mj.Grid.from_bounds((36, 45), (0.0, 0.0), (1.0, 1.2))
    x, y = grid.mesh()
    u = np.sin(3 * x + 1) * np.cos(2 * y) + x**2 * y
    return grid, u


@pytest.mark.parametrize("mode", BOUNDARIES)
def test_direct_and_fft_agree_for_every_boundary(field_2d, mode):
    grid, u = field_2d
    alphas = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 4), (2, 2), (3, 1)]
    kw = dict(eps=(0.12, 0.15), boundary=mode)
    d = mj.Mollifier(grid, method="direct", **kw)
    direct = jit_derivatives(d, alphas)(u)
    fft = jit_derivatives(mj.Mollifier(grid, method="fft", **kw), alphas)(u)
    for alpha, a, b in zip(alphas, direct, fft, strict=True):
        assert a.shape == b.shape == d.output_shape
        # both are sums of the same products; they differ by round-off only
        assert max_error(a, b) < 4 * roundoff_scale(d, alpha, u), alpha


@pytest.mark.parametrize("modes", [("periodic", "odd"), ("valid", "zero"), ("even", "linear")])
def test_direct_and_fft_agree_for_mixed_boundaries(field_2d, modes):
    grid, u = field_2d
    alphas = [(1, 0), (0, 2), (2, 1), (2, 2)]
    kw = dict(eps=0.1, boundary=modes)
    d = mj.Mollifier(grid, method="direct", **kw)
    direct = jit_derivatives(d, alphas)(u)
    fft = jit_derivatives(mj.Mollifier(grid, method="fft", **kw), alphas)(u)
    for alpha, a, b in zip(alphas, direct, fft, strict=True):
        assert max_error(a, b) < 4 * roundoff_scale(d, alpha, u), alpha


def test_auto_method_matches_direct_on_wide_kernel():
    grid = mj.Grid.from_bounds(200, 0.0, 1.0)
    (x,) = grid.mesh()
    u = np.sin(5 * x)
    wide = 20.5 * grid.spacing[0]  # beyond the FFT threshold
    auto = mj.Mollifier(grid, wide)(u, "xx")
    direct = mj.Mollifier(grid, wide, method="direct")(u, "xx")
    assert max_error(auto, direct) < 1e-11 * np.max(np.abs(direct))


# ----------------------------------------------------------------------------- exact periodic


def _exact_periodic_convolution(kernel, eps, k, waves, x):
    """`u * phi_eps^(k)` for `u = sum_w a_w cos(w x + p_w)`, from `int psi(y) e^{-iwy} dy`."""
    n_quad = 20_001
    y = np.linspace(-eps, eps, n_quad)
    psi = kernel.scaled_derivative(y, eps, k)
    out = np.zeros_like(x)
    for amp, w, phase in waves:
        # psi is C-infinity with all derivatives zero at +-eps: the trapezoid rule is spectral
        integral = np.sum(psi * np.exp(-1j * w * y)) * (2 * eps / (n_quad - 1))
        out = out + amp * np.real(np.exp(1j * (w * x + phase)) * integral)
    return out


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_periodic_sampled_mode_is_the_exact_continuous_convolution(method):
    """At full resolution, the raw analytic samples give `u * D^k phi_eps` to round-off."""
    grid = mj.Grid.from_bounds(2048, 0.0, 2 * np.pi, periodic=True)
    (x,) = grid.mesh()
    waves = [(1.0, 1.0, 0.2), (0.5, 3.0, -0.4), (-0.3, 7.0, 1.1)]
    u = sum(a * np.cos(w * x + p) for a, w, p in waves)
    eps = 500 * grid.spacing[0]
    d = mj.Mollifier(grid, eps, boundary="periodic", scheme="sampled", method=method)
    for k in (0, 1, 2, 4):
        exact = _exact_periodic_convolution(mj.Bump(), eps, k, waves, x)
        assert max_error(d(u, (k,)), exact) < 1e-12 * np.max(np.abs(exact)), k


def test_periodic_sampled_error_is_aliasing_that_vanishes_with_resolution():
    """Below full resolution the sampled sum differs from the integral by aliasing only."""
    waves = [(1.0, 3.0, 0.2)]
    errors = []
    for ratio in (40, 80, 160):
        grid = mj.Grid.from_bounds(1024, 0.0, 2 * np.pi, periodic=True)
        (x,) = grid.mesh()
        eps = ratio * grid.spacing[0]
        d = mj.Mollifier(grid, eps, boundary="periodic", scheme="sampled")
        exact = _exact_periodic_convolution(mj.Bump(), eps, 2, waves, x)
        errors.append(max_error(d(np.cos(3 * x + 0.2), "xx"), exact) / np.max(np.abs(exact)))
    assert errors[0] > 1e-7  # 40 cells of a bump: visible aliasing
    assert errors[1] < errors[0] / 100 and errors[2] < 1e-10
