"""readout: a coefficient read out node by node from a residual affine in it, with its noise.

The test problem is the heat equation with a source on (x, t) in [0, 1]^2,

    r = u_t - c u_xx - f,   u = exp(-t) cos(pi x),   c = 1 + sin(2 pi x) exp(-t) / 2,

with `f = u_t - c u_xx` known, so `A = -u_xx` vanishes on the line x = 1/2 and the read-out
is `c = (u_t - f) / u_xx`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mollijax as mj

N = 33


def _heat(s):
    return s.d(s.u, "t") - s.c * s.d(s.u, "xx") - s.f


def _case(n, noise=0.0, seed=0, residual=_heat, axes="xt"):
    """`(problem, true c on the grid)` with data `u` plus white noise of std `noise`."""
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), axes=("x", "t"))
    x, t = grid.mesh()
    u = np.exp(-t) * np.cos(np.pi * x)
    c = 1.0 + 0.5 * np.sin(2 * np.pi * x) * (np.exp(-t) if axes == "xt" else 1.0)
    f = -u - c * (-(np.pi**2) * u)
    data = u + noise * np.random.default_rng(seed).standard_normal(u.shape)
    return mj.Problem(grid, residual, data={"u": data}, known={"f": f}), c


def _unknowns(n, axes="xt"):
    return {"c": mj.GridField(np.ones((n,) * len(axes)), axes)}


def _direct(problem):
    """The read-out written out by hand with the problem's differentiator, per data draw."""
    D, f = problem.derivatives, problem.known["f"]
    return jax.jit(jax.vmap(lambda u: (D(u, (0, 1)) - f) / D(u, (2, 0))))


@pytest.fixture(scope="module")
def noisy():
    """Noise of 1e-3 (0.1 % of max |u|): `(problem, truth, readout)`."""
    problem, c = _case(N, noise=1e-3)
    return problem, c, mj.readout(problem, _unknowns(N), "c")


def test_recovers_the_coefficient_at_second_order():
    # the default Mollifier (eps = 4 h) is second order: so is the read-out where A is not
    # small (a fixed box away from the line x = 1/2 where u_xx = 0)
    errors = []
    for n in (17, 33):
        problem, c = _case(n)
        out = mj.readout(problem, _unknowns(n), "c", sigma=0.0)
        x, t = problem.grid.mesh()
        box = (x >= 0.25) & (x <= 0.4) & (t >= 0.3) & (t <= 0.7)
        assert out.valid[box].all()
        errors.append(np.max(np.abs(np.asarray(out.values)[box] - c[box])))
    ratio = errors[0] / errors[1]
    assert 3.6 < ratio < 4.4, (ratio, errors)  # measured 4.02 (0.026, 0.0065; 0.0016 at 65)


def test_values_are_minus_b_over_a_from_the_problems_own_derivatives(noisy):
    problem, _, out = noisy
    margin = problem.margin
    assert margin == (4, 4)
    inner = tuple(slice(m, n - m) for m, n in zip(margin, problem.grid.shape, strict=True))
    by_hand = np.asarray(_direct(problem)(problem.data["u"][None]))[0]
    valid = np.asarray(out.valid)
    np.testing.assert_allclose(np.asarray(out.values)[valid], by_hand[valid], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out.A)[inner],
                               -np.asarray(problem.derivatives(problem.data["u"], (2, 0)))[inner],
                               rtol=1e-12)
    # outside the residual's interior: NaN and not valid
    edge = np.ones(problem.grid.shape, bool)
    edge[inner] = False
    assert np.isnan(np.asarray(out.values)[edge]).all() and not valid[edge].any()
    assert np.isnan(np.asarray(out.std)[edge]).all() and np.isnan(np.asarray(out.A)[edge]).all()


def test_the_mask_follows_the_vanishing_denominator(noisy):
    problem, c, out = noisy
    x = problem.grid.mesh()[0][:, 0]
    valid = np.asarray(out.valid)
    inner = slice(4, N - 4)
    assert not valid[x == 0.5, inner].any()  # u_xx = 0: masked along the whole line
    far = (np.abs(x - 0.5) >= 0.2) & (x > 0.1) & (x < 0.9)
    assert valid[far, inner].all()  # far from it: kept
    # the kept values are within a few reported std of the truth
    z = (np.asarray(out.values) - c) / np.asarray(out.std)
    assert np.nanmax(np.abs(z[valid])) < 5.0
    assert np.all(np.asarray(out.std)[valid] <= 0.2 * np.abs(np.asarray(out.values)[valid]))


def test_reported_std_matches_the_spread_over_noise_redraws(noisy):
    # 50 redraws of the noise through the same read-out (written out by hand: the previous
    # test shows it is the read-out to round-off). A and b are both noisy here (u_t and
    # u_xx), so leaving out the denominator's noise would fail this badly
    problem, _, out = noisy
    u = np.asarray(problem.data["u"])
    draws = u + 1e-3 * np.random.default_rng(1).standard_normal((50,) + u.shape)
    empirical = np.asarray(_direct(problem)(jnp.asarray(draws))).std(axis=0)
    valid = np.asarray(out.valid)
    ratio = np.asarray(out.std)[valid] / empirical[valid]
    assert 0.9 < np.median(ratio) < 1.1, np.median(ratio)  # measured 0.99
    within = np.mean(np.abs(np.log(ratio)) < np.log(1.3))
    assert within > 0.8, within  # measured 0.88 (sampling error of 64 vs 50 draws)


def test_coefficient_on_fewer_axes_and_a_constant():
    # c(x) on (x, t): least squares over t at each x; a constant: over every node
    problem, c = _case(N, axes="x")
    out = mj.readout(problem, _unknowns(N, "x"), "c", sigma=0.0)
    assert out.values.shape == (N,)
    x = problem.grid.coords(0)
    kept = np.asarray(out.valid) & (np.abs(x - 0.5) > 0.1)  # u_xx = 0 at x = 1/2: no noise
    assert kept.sum() == N - 8 - 7  # the margin and x within 0.1 of 1/2 (no mask, no noise)
    np.testing.assert_allclose(np.asarray(out.values)[kept], c[kept, 0], atol=1e-2)
    grid = problem.grid
    u = np.exp(-grid.mesh()[1]) * np.cos(np.pi * grid.mesh()[0])
    problem = mj.Problem(grid, _heat, data={"u": u}, known={"f": -u + 0.7 * np.pi**2 * u})
    out = mj.readout(problem, {"c": mj.Constant(1.0, "positive")}, "c", sigma=1e-3)
    assert out.values.shape == () and bool(out.valid)
    # the Mollifier's O(eps^2) bias (0.003), not noise (std 8e-4): std is the noise's only
    assert abs(float(out.values) - 0.7) < 1e-2 and 0 < float(out.std) < 2e-3


def test_a_coefficient_inside_a_derivative_is_refused():
    problem, _ = _case(N, residual=lambda s: s.d(s.u, "t") - s.d(s.c * s.d(s.u, "x"), "x") - s.f)
    with pytest.raises(mj.MollijaxError, match=r"'c' does not enter.*pointwise.*derivative.*fit"):
        mj.readout(problem, _unknowns(N), "c")


def test_a_non_affine_coefficient_is_refused():
    problem, _ = _case(N, residual=lambda s: s.d(s.u, "t") - s.c**2 * s.d(s.u, "xx") - s.f)
    with pytest.raises(mj.MollijaxError, match=r"not affine in 'c'.*fit 'c' instead"):
        mj.readout(problem, _unknowns(N), "c")


def test_bad_input_is_named():
    problem, _ = _case(17)
    with pytest.raises(mj.MollijaxError, match=r"'f' is a known field, not an unknown"):
        mj.readout(problem, _unknowns(17), "f")
    net = mj.NetworkField(mj.MLP(2, width=4, depth=1, key=jax.random.PRNGKey(0)), "xt")
    with pytest.raises(mj.MollijaxError, match=r"'c' is a NetworkField.*GridField or Constant"):
        mj.readout(problem, {"c": net}, "c")
    with pytest.raises(mj.MollijaxError, match=r"`sigma`.*missing \['u'\]"):
        mj.readout(problem, _unknowns(17), "c", sigma={"v": 0.1})
    two = mj.Problem(problem.grid, {"a": _heat, "b": _heat}, data=problem.data,
                     known=problem.known)
    with pytest.raises(mj.MollijaxError, match=r"2 residuals \['a', 'b'\].*`residual=`"):
        mj.readout(two, _unknowns(17), "c")
    with pytest.raises(mj.MollijaxError, match=r"`residual` 'pde' is not a residual"):
        mj.readout(two, _unknowns(17), "c", residual="pde")
    out = mj.readout(two, _unknowns(17), "c", residual="b", sigma=0.0)
    assert np.asarray(out.valid).any()


def test_agrees_with_chromatins_pointwise_lambda():
    chromatin = mj.load_problem("chromatin")
    sim = chromatin.simulate(n=32, noise=0.002)
    grid = sim.grid
    diff = mj.Mollifier(grid, 4 * grid.spacing[0], boundary="periodic")
    problem = mj.Problem(grid, chromatin.residuals, data=sim.data, derivatives=diff)
    out = mj.readout(problem, {"lam": mj.GridField(np.ones(grid.shape), "xy")}, "lam")
    by_hand = chromatin.pointwise_lambda(sim.data["phi_w"], sim.data["phi_d"], diff.laplacian)
    valid = np.asarray(out.valid)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(np.asarray(out.values)[valid], by_hand[valid], rtol=1e-9)
    # A = 2 phi_e: the denominator of pointwise_lambda
    phi_e = chromatin.fractions(sim.data["phi_w"], sim.data["phi_d"])[1]
    np.testing.assert_allclose(np.asarray(out.A), 2 * phi_e, rtol=1e-12)
