"""Deep DAEs as transport: known answers of Sonoda & Murata's infinite-depth limit.

Every expected value is analytic (variances of Gaussian DAEs, `D = -A` for the deep-DAE flow,
`D = +I/2` for Brownian motion, `dH/dt = -I`) or an independent computation (least squares
for the optimal affine denoiser, closed-form W2 of Gaussians).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mollijax as mj

# `tr` (theory/transport.py) and `theory` (the loader of its helper modules) are fixtures of
# conftest.py, which imports the top-level theory/ folder by path.

MIXTURE_2D = dict(weights=[0.5, 0.5], means=[[-1.2, 0.0], [1.2, 0.3]],
                  covs=[[1.0, 0.8], [0.7, 1.0]])
GRID_2D = mj.Grid.from_bounds((64, 64), (-6.0, -6.0), (6.0, 6.0))
TIMES = np.linspace(0.0, 0.25, 6)
TOL_D = 0.06


@pytest.fixture(scope="module")
def mixture2d(tr):
    return tr.GaussianMixture(**MIXTURE_2D)


@pytest.fixture(scope="module")
def x0_2d(mixture2d):
    return mixture2d.sample(jax.random.PRNGKey(0), 100_000)


@pytest.fixture(scope="module")
def exact_2d(tr, mixture2d, x0_2d):
    """The exact deep-DAE flow of `x0_2d` at `TIMES` (RK4 on 100 000 particles), shared by
    the fit of `D` and the width rule below, which both read it."""
    return tr.exact_flow(mixture2d, x0_2d, TIMES)


@pytest.fixture(scope="module")
def fit_snapshots(tr):
    diff = tr.density_differentiator(GRID_2D, 1.5)

    def fit(particles, times):
        return tr.fit_diffusion(tr.snapshot_densities(particles, GRID_2D), times, diff).matrix

    return fit


# ----------------------------------------------------------------- shallow and deep Gaussian DAEs


def test_oracle_dae_on_gaussian_is_shrinkage(tr):
    s0, t = 1.3, 0.5
    g = tr.GaussianMixture([1.0], [[0.0]], [s0])
    x = jnp.linspace(-3.0, 3.0, 7)[:, None]
    out = tr.oracle_dae_layer(g, x, t)
    np.testing.assert_allclose(out, x * s0 / (s0 + t), rtol=1e-12)


def test_shallow_trained_dae_variance(tr, theory):
    s0, t = 1.3, 0.5
    x = np.sqrt(s0) * jax.random.normal(jax.random.PRNGKey(1), (4000, 1))
    model, history = tr.train_denoiser(tr.AffineDenoiser(1), x, jax.random.PRNGKey(2), t,
                                       steps=300, copies=2)
    assert history[-1] < history[0]
    # independent computation: least squares on the same antithetic pairs
    noise_pairs = theory("_transport_dae")._noise_pairs
    noisy, clean = noise_pairs(jax.random.PRNGKey(2), jnp.asarray(x), t, np.ones((1, 1)), 2)
    design = np.concatenate([np.asarray(noisy), np.ones((noisy.shape[0], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.asarray(clean)[:, 0], rcond=None)
    assert abs(float(model.weight[0, 0]) - coef[0]) < 1e-4
    assert abs(float(model.bias[0]) - coef[1]) < 1e-4
    features = jax.vmap(model)(jnp.asarray(x))
    s_hat = float(np.var(x))
    expected = tr.shallow_dae_variance(s_hat, t)  # s0^3 / (s0 + t)^2 for the sample
    assert abs(float(np.var(features)) / expected - 1) < 0.02
    assert abs(tr.shallow_dae_variance(s0, t) - s0**3 / (s0 + t) ** 2) < 1e-15


def test_deep_dae_converges_at_first_order_in_depth(tr):
    s0, t = 1.0, 0.3
    depths = np.array([16, 32, 64, 128, 256])
    errors = np.array([tr.deep_dae_variance(s0, t, int(L)) - (s0 - 2 * t) for L in depths])
    assert np.all(errors > 0)
    slope = np.polyfit(np.log(depths), np.log(errors), 1)[0]
    assert abs(slope + 1) < 0.05
    # leading term: layer k adds 3 tau^2 / s_k, summed: (3 t / 2L) log(s0 / (s0 - 2t))
    leading = 1.5 * t * np.log(s0 / (s0 - 2 * t)) / depths[-1]
    assert abs(errors[-1] / leading - 1) < 0.05


def test_trained_deep_dae_matches_variance_recursion(tr):
    s0, t, layers = 1.0, 0.4, 4
    x = np.sqrt(s0) * jax.random.normal(jax.random.PRNGKey(3), (4000, 1))
    xs, _ = tr.trained_dae_stack(tr.AffineDenoiser(1), x, jax.random.PRNGKey(4), t, layers,
                                 steps=300, copies=2)
    got = float(np.var(xs[-1]))
    expected = tr.deep_dae_variance(float(np.var(x)), t, layers)
    assert abs(got / expected - 1) < 0.02
    # and it is distinguishable from the infinite-depth limit s0 - 2t at this depth
    assert got - (float(np.var(x)) - 2 * t) > 0.05


# ----------------------------------------------------------------- entropy, Fisher, Wasserstein


@pytest.mark.parametrize("noise", [1.0, [1.0, 0.0]])
def test_entropy_decreases_at_fisher_rate(tr, mixture2d, noise):
    quad = mj.Grid.from_bounds((96, 96), (-7.0, -7.0), (7.0, 7.0))
    t, dt = 0.1, 1e-4
    h_plus = tr.entropy_fisher(mixture2d.at(t + dt, noise), quad, noise)[0]
    h_minus = tr.entropy_fisher(mixture2d.at(t - dt, noise), quad, noise)[0]
    _, fisher, mass = tr.entropy_fisher(mixture2d.at(t, noise), quad, noise)
    assert abs(mass - 1) < 1e-8
    assert abs((h_plus - h_minus) / (2 * dt) + fisher) < 1e-4 * fisher


def test_entropy_fisher_of_gaussian(tr):
    s = 0.7
    grid = mj.Grid.from_bounds(201, -8.0, 8.0)
    h, fisher, _ = tr.entropy_fisher(tr.GaussianMixture([1.0], [[0.0]], [s]), grid)
    assert abs(h - 0.5 * np.log(2 * np.pi * np.e * s)) < 1e-10
    assert abs(fisher - 1 / s) < 1e-10


def test_wasserstein_distances(tr):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(5000)
    b = 1.5 * a + 0.3  # monotone map: it is the optimal coupling
    assert abs(tr.w2_sorted(a, b) - np.sqrt(np.mean((0.5 * a + 0.3) ** 2))) < 1e-12
    # Gaussian fits: whiten a cloud exactly, then map it linearly
    z = rng.standard_normal((2000, 2))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T
    m = np.array([0.5, -1.0])
    w = z * np.array([2.0, 0.5]) + m  # covariance diag(4, 0.25), mean m
    assert abs(tr.w2_gaussian(z, w) ** 2 - (m @ m + (2 - 1) ** 2 + (0.5 - 1) ** 2)) < 1e-10
    sw = tr.sliced_w2(z, z + m, jax.random.PRNGKey(0), directions=500)
    assert abs(sw / (np.linalg.norm(m) / np.sqrt(2)) - 1) < 0.05


def test_w2_speed_is_sqrt_fisher_1d(tr):
    # the flow is the W2 gradient flow of the entropy: metric speed |mu'| = sqrt(I)
    mix = tr.GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [0.6, 0.9])
    times = np.array([0.05, 0.07])
    xs = tr.exact_flow(mix, mix.at(times[0]).sample(jax.random.PRNGKey(5), 20000), times)
    speed = tr.w2_sorted(xs[0], xs[1]) / (times[1] - times[0])
    quad = mj.Grid.from_bounds(801, -9.0, 9.0)
    fisher = tr.entropy_fisher(mix.at(times.mean()), quad)[1]
    assert abs(speed / np.sqrt(fisher) - 1) < 0.03


# ----------------------------------------------------------------- densities, inverse problem


def test_particle_density_conserves_mass_and_mean(tr):
    p = jax.random.normal(jax.random.PRNGKey(6), (3000, 2)) * 0.8 + jnp.array([0.3, -0.2])
    rho = tr.particle_density(p, GRID_2D)
    dv = np.prod(GRID_2D.spacing)
    assert abs(float(rho.sum()) * dv - 1) < 1e-12
    x, y = GRID_2D.mesh()
    np.testing.assert_allclose([float((rho * x).sum() * dv), float((rho * y).sum() * dv)],
                               np.asarray(p.mean(0)), atol=1e-12)


def test_fit_recovers_minus_one_from_exact_snapshots(tr, mixture2d):
    pts = GRID_2D.points()
    rho = jnp.stack([jnp.exp(jax.vmap(mixture2d.at(t).log_density)(pts)).reshape(GRID_2D.shape)
                     for t in TIMES])
    fit = tr.fit_diffusion(rho, TIMES, tr.density_differentiator(GRID_2D, 1.5))
    np.testing.assert_allclose(fit.matrix, -np.eye(2), atol=0.01)
    assert fit.relative_residual < 0.01


def test_exact_deep_flow_gives_minus_laplacian(exact_2d, fit_snapshots):
    d = fit_snapshots(exact_2d, TIMES)
    np.testing.assert_allclose(d, -np.eye(2), atol=TOL_D)


def test_noise_on_one_axis_gives_diag_minus_one_zero(tr, mixture2d, x0_2d, fit_snapshots):
    d = fit_snapshots(tr.exact_flow(mixture2d, x0_2d, TIMES, noise=[1.0, 0.0]), TIMES)
    np.testing.assert_allclose(d, np.diag([-1.0, 0.0]), atol=TOL_D)


def test_brownian_control_gives_plus_half(tr, x0_2d, fit_snapshots):
    d = fit_snapshots(tr.brownian_flow(jax.random.PRNGKey(7), x0_2d, TIMES), TIMES)
    np.testing.assert_allclose(d, 0.5 * np.eye(2), atol=TOL_D)


@pytest.mark.parametrize("noise, expected", [(1.0, -np.eye(2)),
                                             ([1.0, 0.0], np.diag([-1.0, 0.0]))])
def test_trained_dae_layers_give_minus_noise(tr, fit_snapshots, noise, expected):
    g = tr.GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.3], [0.3, 0.8]]])
    x0 = g.sample(jax.random.PRNGKey(8), 40000)
    total, layers = 0.15, 15
    xs, _ = tr.trained_dae_stack(tr.AffineDenoiser(2), x0, jax.random.PRNGKey(9), total,
                                 layers, noise, steps=100, train_size=8000)
    d = fit_snapshots(xs, total * np.arange(layers + 1) / layers)
    np.testing.assert_allclose(d, expected, atol=TOL_D)


# ----------------------------------------------------------------- errors and the demonstration


def test_errors_name_the_argument(tr, mixture2d):
    with pytest.raises(tr.TransportConfigError, match="'particle'"):
        tr.make_config({"particle": 10})
    with pytest.raises(tr.MixtureError, match="blow-up"):
        tr.exact_flow(mixture2d, jnp.zeros((3, 2)), [0.0, 1.0])
    with pytest.raises(tr.MixtureError, match="covs"):
        tr.GaussianMixture([1.0], [[0.0]], [-1.0])
    with pytest.raises(mj.MollijaxError, match="times"):
        tr.fit_diffusion(jnp.zeros((2,) + GRID_2D.shape), [0.0, 0.0],
                         tr.density_differentiator(GRID_2D, 1.5))


@pytest.mark.parametrize("kernel", ["bump", "polynomial", "gaussian"])
def test_kernel_names_are_the_library_table(tr, kernel):
    assert tr.make_config({"kernel": kernel})["kernel"] == kernel
    diff = tr.density_differentiator(GRID_2D, 1.5, kernel)
    assert type(diff.kernel) is type(mj.from_name("kernel", kernel))


def test_unknown_kernel_name_lists_the_choices(tr):
    with pytest.raises(tr.TransportConfigError, match="'kernel'.*'gaussian'"):
        tr.make_config({"kernel": "truncated_gaussian"})


def test_config_file_matches_defaults(tr):
    import pathlib
    import tomllib

    path = pathlib.Path(__file__).parents[2] / "configs" / "theory_transport.toml"
    with open(path, "rb") as f:
        assert tr.make_config(tomllib.load(f)) == tr.DEFAULT_CONFIG


def test_eps_auto_is_the_default_and_a_bad_width_is_refused_by_name(tr, exact_2d):
    assert tr.DEFAULT_CONFIG["eps"] == "auto"
    assert tr.make_config({"eps": 1.5})["eps"] == 1.5  # a number is still accepted
    for bad in ("automatic", -1.0, 0, True, [1.0, 1.0]):
        with pytest.raises(tr.TransportConfigError, match="'eps'"):
            tr.make_config({"eps": bad})
    # the rule, computed independently: the largest relative noise inside the common support
    # (`mj.estimate_noise`), then `mj.suggest_eps` on the support's bounding box, scaled to
    # each axis's length there
    rho = np.asarray(tr.snapshot_densities(exact_2d, GRID_2D))
    support = np.all(rho > 0, axis=0)
    noise = max(mj.estimate_noise(r, mask=support) for r in rho)
    rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
    n = (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
    h = GRID_2D.spacing[0]
    box = mj.Grid.from_bounds(n, (0.0, 0.0), ((n[0] - 1) * h, (n[1] - 1) * h))
    eps = mj.suggest_eps(box, 2, noise)
    expected = tuple(eps * k / min(n) for k in n)
    assert noise > 0 and min(expected) > 4 * h  # the particle noise is seen
    np.testing.assert_allclose(tr.auto_density_widths(GRID_2D, rho), expected, rtol=1e-12)
    # over the whole box the empty nodes hide the noise and the rule sits at its floor
    assert mj.suggest_widths(GRID_2D, 2, dict(enumerate(rho))) == (4 * h, 4 * h)
