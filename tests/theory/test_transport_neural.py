"""Trained networks as transport: known answers for Sinkhorn, drift/diffusion fits and stacks.

Expected values are exact: the discrete W2 of a cloud and its image under a symmetric
positive definite affine map (the map is the Brenier map), the `|m|^2` of a translation, the
generator `logm` of an affine residual stack (and the Ornstein-Uhlenbeck diffusion of a
noisy one), the covariance recursion of ideal Gaussian
DAE layers, and `D = -I`, zero drift of the exact deep-DAE flow of a mixture.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import mollijax as mj

GRID = mj.Grid.from_bounds((64, 64), (-6.0, -6.0), (6.0, 6.0))
# four components: non-Gaussian along both axes, so an affine drift and a constant diffusion
# are separately identifiable (see theory/_transport_fokker.py)
MIXTURE_4 = dict(weights=[0.3, 0.2, 0.25, 0.25],
                 means=[[-1.5, -1.5], [1.5, -1.5], [-1.5, 1.5], [1.5, 1.5]],
                 covs=[0.6, 0.8, 0.7, 0.5])


# an Ornstein-Uhlenbeck flow in 3-D: a rotating, contracting drift and an anisotropic D
OU_G = np.array([[-0.5, 0.8, 0.0], [-0.6, -0.2, 0.3], [0.1, -0.3, -0.4]])
OU_C = np.array([0.3, -0.2, 0.1])
OU_D = np.array([[0.3, 0.05, 0.0], [0.05, 0.2, 0.04], [0.0, 0.04, 0.25]])


@pytest.fixture(scope="module")
def mixture4(tr):
    return tr.GaussianMixture(**MIXTURE_4)


@pytest.fixture(scope="module")
def x0_mix(mixture4):
    return mixture4.sample(jax.random.PRNGKey(10), 40_000)


@pytest.fixture(scope="module")
def diff(tr):
    return tr.density_differentiator(GRID, 1.5)


# ----------------------------------------------------------------- Sinkhorn


def _spd_map(rng, d):
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return q @ np.diag(np.linspace(0.5, 1.6, d)) @ q.T, np.linspace(0.3, -0.5, d)


@pytest.mark.parametrize("d", [2, 3])
def test_sinkhorn_w2_is_exact_for_brenier_map(tr, d):
    # x -> M x + m with M symmetric positive definite is the gradient of a convex function,
    # hence the optimal map: the exact discrete W2 is the mean displacement
    rng = np.random.default_rng(d)
    a = rng.standard_normal((300, d))
    m_mat, shift = _spd_map(rng, d)
    b = a @ m_mat + shift
    exact = np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1)))
    assert abs(tr.sinkhorn_w2(a, b, 0.01, 200) / exact - 1) < 1e-4
    # the plan's own cost is above W2^2 and tends to it as eps -> 0
    costs = [tr.sinkhorn(a, b, eps, 200).transport_cost for eps in (0.1, 0.01)]
    assert costs[0] > costs[1] > exact**2 - 1e-9
    # a cloud against an independent one: below the cost of the identity coupling
    c = rng.standard_normal((300, d))
    assert tr.sinkhorn_w2(a, c, 0.01, 200) < np.sqrt(np.mean(np.sum((a - c) ** 2, axis=1)))


def test_sinkhorn_divergence_of_translation_and_1d(tr):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 3))
    m = np.array([0.4, -0.3, 0.2])
    # a translation adds separable terms to the cost only: S_eps = |m|^2 for every eps
    for eps in (0.5, 0.05):
        assert abs(tr.sinkhorn_divergence(a, a + m, eps, 300) - m @ m) < 1e-5
    # 1-D: against the exact W2 by sorting, for a non-monotone pairing of samples
    x, y = rng.standard_normal((250, 1)), rng.exponential(size=(250, 1))
    assert abs(tr.sinkhorn_w2(x, y, 1e-3, 300) / tr.w2_sorted(x, y) - 1) < 1e-3


def test_sinkhorn_errors_name_the_argument(tr):
    with pytest.raises(mj.MollijaxError, match="epsilon"):
        tr.sinkhorn(np.zeros((3, 2)), np.zeros((3, 2)), 0.0)
    with pytest.raises(mj.MollijaxError, match="`a` and `b`"):
        tr.sinkhorn(np.zeros((3, 2)), np.zeros((3, 3)), 0.1)


# ----------------------------------------------------------------- drift and diffusion fits


def test_affine_resnet_layers_fit_their_exact_generator(tr, x0_mix, diff):
    b_mat = np.array([[-0.5, 1.0], [-0.8, 0.2]])
    b_vec = np.array([0.3, -0.2])
    h = 0.05
    xs = tr.affine_residual_stack(x0_mix, b_mat, b_vec, 2, h)
    g, c = tr.affine_generator(b_mat, b_vec, h)
    # the generator is not the block: G = B - h B^2 / 2 + O(h^2)
    assert np.max(np.abs(g - b_mat)) > 0.01
    for fit in tr.layer_fits(xs, GRID, diff, h):
        np.testing.assert_allclose(fit.drift_matrix, g, atol=0.04)
        np.testing.assert_allclose(fit.drift_constant, c, atol=0.01)
        np.testing.assert_allclose(fit.diffusion, 0.0, atol=0.02)
        assert fit.relative_residual < 0.02


def test_stochastic_affine_stack_fits_exact_drift_and_diffusion(tr, x0_mix, diff):
    # x_{l+1} = x_l + h (B x_l + b) + (2 h D)^{1/2} xi: each layer has exactly the law of an
    # Ornstein-Uhlenbeck flow over time h with the logm generator (G, c) and a diffusion D'
    # solving int_0^h e^{sG} 2 D' e^{sG^T} ds = 2 h D (Kronecker form below); D' = D + O(h)
    b_mat, b_vec, h = np.array([[-0.5, 1.0], [-0.8, 0.2]]), np.array([0.3, -0.2]), 0.05
    d_mat = np.array([[0.3, 0.1], [0.1, 0.2]])
    root = np.linalg.cholesky(2 * h * d_mat)
    xs = [np.asarray(x0_mix)]
    for k in jax.random.split(jax.random.PRNGKey(16), 4):
        xi = np.asarray(jax.random.normal(k, x0_mix.shape, dtype=x0_mix.dtype))
        xs.append(xs[-1] + h * (xs[-1] @ b_mat.T + b_vec) + xi @ root.T)
    g, c = tr.affine_generator(b_mat, b_vec, h)
    kron = np.kron(g, np.eye(2)) + np.kron(np.eye(2), g)
    aug = np.zeros((8, 8))
    aug[:4, :4], aug[:4, 4:] = kron, np.eye(4)
    phi = scipy.linalg.expm(h * aug)[:4, 4:]  # int_0^h exp(s kron) ds
    d_exact = np.linalg.solve(phi, (2 * h * d_mat).reshape(-1)).reshape(2, 2) / 2
    # one fit over the four identical layers (their coefficients are the same)
    fit = tr.fit_fokker_planck(tr.snapshot_densities(np.stack(xs), GRID), h * np.arange(5), diff)
    np.testing.assert_allclose(fit.drift_matrix, g, atol=0.04)
    np.testing.assert_allclose(fit.drift_constant, c, atol=0.05)
    np.testing.assert_allclose(fit.diffusion, d_exact, atol=0.03)


def test_ornstein_uhlenbeck_mixture_matches_its_moment_equations(tr):
    # m' = G m + c, S' = G S + S G^T + 2 D, integrated by RK4 in small steps
    mix = tr.GaussianMixture([1.0], [[0.5, -1.0, 0.2]], [[[0.6, 0.1, 0.0], [0.1, 0.5, 0.05],
                                                          [0.0, 0.05, 0.7]]])
    m, s, t, n = np.asarray(mix.means[0]), np.asarray(mix.covs[0]), 0.3, 300
    for _ in range(n):
        def f(m, s):
            return OU_G @ m + OU_C, OU_G @ s + s @ OU_G.T + 2 * OU_D
        k1 = f(m, s)
        k2 = f(m + t / n / 2 * k1[0], s + t / n / 2 * k1[1])
        k3 = f(m + t / n / 2 * k2[0], s + t / n / 2 * k2[1])
        k4 = f(m + t / n * k3[0], s + t / n * k3[1])
        m = m + t / n / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        s = s + t / n / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    ou = mix.ornstein_uhlenbeck(OU_G, OU_C, OU_D, t)
    np.testing.assert_allclose(ou.means[0], m, atol=1e-10)
    np.testing.assert_allclose(ou.covs[0], s, atol=1e-10)
    with pytest.raises(tr.MixtureError, match="drift_constant"):
        mix.ornstein_uhlenbeck(OU_G, [0.0, 1.0], OU_D, t)
    with pytest.raises(tr.MixtureError, match="diffusion"):  # not positive semi-definite
        mix.ornstein_uhlenbeck(OU_G, OU_C, -OU_D, t)
    with pytest.raises(tr.MixtureError, match="must be 3-D"):
        mix.density_on(GRID)


def test_fokker_planck_fit_in_3d_converges_to_the_exact_drift_and_diffusion(tr):
    """3-D: exact densities of a mixture carried by an Ornstein-Uhlenbeck flow; the fitted
    (G, c, D) approach the flow's, the error falling as h^2 (the differentiator's central
    differences of the mollified density)."""
    mix = tr.GaussianMixture([0.3, 0.25, 0.25, 0.2],
                             [[-1.4, -1.4, -1.4], [1.4, 1.4, -1.4], [1.4, -1.4, 1.4],
                              [-1.4, 1.4, 1.4]], [0.6, 0.8, 0.7, 0.5])
    step, errors = 0.05, []
    for n in (20, 28):
        grid = mj.Grid.from_bounds((n,) * 3, (-6.0,) * 3, (6.0,) * 3)
        rho = np.stack([np.asarray(mix.ornstein_uhlenbeck(OU_G, OU_C, OU_D, k * step)
                                   .density_on(grid)) for k in range(3)])
        fit = tr.fit_fokker_planck(rho, step * np.arange(3), tr.density_differentiator(grid, 1.5))
        errors.append([np.abs(fit.drift_matrix - OU_G).max(),
                       np.abs(fit.drift_constant - OU_C).max(),
                       np.abs(fit.diffusion - OU_D).max()])
    errors = np.array(errors)
    assert np.all(errors[1] < [0.06, 0.03, 0.01]), errors[1]  # measured 0.043, 0.022, 0.0055
    order = np.log(errors[0] / errors[1]) / np.log((28 - 1) / (20 - 1))
    assert np.all((order > 1.5) & (order < 2.6)), order


def test_oracle_dae_layers_of_gaussian_fit_the_covariance_recursion(tr, diff):
    # Gaussian: drift and diffusion are not separable, fit D alone. Ideal layer k maps
    # x -> S_k (S_k + tau)^{-1} x (S_k = S - 2 k tau, the flow's density), so the features'
    # covariance C follows C -> M C M^T and the heat flow between layers has
    # D_k = (C_{k+1} - C_k) / (2 tau) exactly
    s = np.array([[1.0, 0.3], [0.3, 0.8]])
    g = tr.GaussianMixture([1.0], [[0.0, 0.0]], [s])
    total, layers = 0.04, 2
    tau = total / layers
    xs = tr.oracle_dae_stack(g, g.sample(jax.random.PRNGKey(11), 40_000), total, layers)
    fits = tr.layer_fits(xs, GRID, diff, tau, drift="none")
    cov = s
    for k, fit in enumerate(fits):
        sk = s - 2 * k * tau * np.eye(2)
        m = sk @ np.linalg.inv(sk + tau * np.eye(2))
        new = m @ cov @ m.T
        np.testing.assert_allclose(fit.diffusion, (new - cov) / (2 * tau), atol=0.03)
        cov = new


def test_exact_deep_flow_fits_zero_drift_and_minus_identity(tr, mixture4, x0_mix, diff):
    times = np.array([0.0, 0.02, 0.04])
    fits = tr.layer_fits(tr.exact_flow(mixture4, x0_mix, times), GRID, diff, 0.02)
    for fit in fits:
        np.testing.assert_allclose(fit.diffusion, -np.eye(2), atol=0.04)
        np.testing.assert_allclose(fit.drift_matrix, 0.0, atol=0.03)
        np.testing.assert_allclose(fit.drift_constant, 0.0, atol=0.04)


def test_fokker_planck_errors_name_the_argument(tr, diff):
    rho = jnp.zeros((2,) + GRID.shape)
    with pytest.raises(mj.MollijaxError, match="`drift`"):
        tr.fit_fokker_planck(rho, [0.0, 1.0], diff, drift="quadratic")
    with pytest.raises(mj.MollijaxError, match="`times`"):
        tr.fit_fokker_planck(rho, [1.0, 0.0], diff)
    with pytest.raises(mj.GridMismatchError, match="`densities`"):
        tr.fit_fokker_planck(jnp.zeros((2, 8, 8)), [0.0, 1.0], diff)


# ----------------------------------------------------------------- trained networks


def test_neural_dae_stack_follows_gaussian_recursion_in_3d(tr):
    # ideal layers on N(0, S) trained on their own features: x -> C (C + tau)^{-1} x with C
    # the current covariance; the trained MLP stack must land near the same particles
    s = np.array([[1.0, 0.2, 0.0], [0.2, 0.8, 0.1], [0.0, 0.1, 1.2]])
    g = tr.GaussianMixture([1.0], [[0.0, 0.0, 0.0]], [s])
    x0 = g.sample(jax.random.PRNGKey(12), 4000)
    total, layers = 0.15, 3
    # every layer (the first too) trains for the same number of steps: one compiled training
    # scan instead of two (err / moved measured 0.067, sinkhorn 0.069; 0.074, 0.076 with 400
    # first steps)
    xs, _ = tr.neural_dae_stack(x0, jax.random.PRNGKey(13), total, layers, width=16,
                                steps=150, first_steps=150, batch=512)
    ideal, cov = np.asarray(x0), s
    for _ in range(layers):
        m = cov @ np.linalg.inv(cov + total / layers * np.eye(3))
        ideal, cov = ideal @ m.T, m @ cov @ m.T
    moved = np.sqrt(np.mean(np.sum((ideal - np.asarray(x0)) ** 2, axis=1)))
    err = np.sqrt(np.mean(np.sum((np.asarray(xs[-1]) - ideal) ** 2, axis=1)))
    assert err < 0.15 * moved
    assert tr.sinkhorn_w2(xs[-1][:400], ideal[:400], 0.01, 200) < 0.15 * moved


def test_neural_dae_stack_transports_a_mixture_towards_the_exact_flow(tr, mixture4):
    # 2-D, against the exact deep flow (RK4 on the known mixture): particle-wise and in sliced
    # W2, a fraction of the distance the exact flow moves the cloud (the untrained stack is
    # the identity: ratio 1; 3 layers carry a depth error of their own)
    x0 = mixture4.sample(jax.random.PRNGKey(17), 10_000)
    total, layers = 0.12, 3
    exact = tr.exact_flow(mixture4, x0, total * np.arange(layers + 1) / layers)
    # the same number of steps for every layer: one compiled training scan instead of two
    # (ratios measured 0.242 and 0.182; 0.237 and 0.179 with 800 first and 200 later steps)
    xs, _ = tr.neural_dae_stack(x0, jax.random.PRNGKey(18), total, layers, steps=500,
                                first_steps=500, batch=512)
    rms = lambda a, b: float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))
    assert rms(xs[-1], exact[-1]) < 0.3 * rms(x0, exact[-1])
    key = jax.random.PRNGKey(19)
    assert (tr.sliced_w2(xs[-1], exact[-1], key, 64)
            < 0.25 * tr.sliced_w2(x0, exact[-1], key, 64))


def test_residual_net_separates_two_moons_by_its_residual_recursion(tr, diff):
    x, y = tr.two_moons(jax.random.PRNGKey(14), 400)
    assert int(y.sum()) == 200
    net = tr.ResidualNet(2, 2, 6, jax.random.PRNGKey(15), width=16)
    net, history, accuracy = tr.train_classifier(net, x, y, steps=300)
    assert history[-1] < 0.1 * history[0]
    assert accuracy > 0.97
    feats = jax.vmap(net.features)(x)  # (n, L + 1, d)
    assert feats.shape == (400, 7, 2)
    # the scanned features are the residual recursion with the stored blocks
    k = 3
    step = feats[:, k] + net.step * jax.vmap(lambda p: net.velocity(k, p))(feats[:, k])
    np.testing.assert_allclose(step, feats[:, k + 1], atol=1e-12)
