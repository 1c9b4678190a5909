"""Error bars: the Laplace posterior against the exact posterior of a linear Gaussian problem
(dense inverse, independent of the low-rank machinery), its convergence in the rank, its
samples, the ensemble against the Laplace std on a nonlinear problem, and named errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mollijax as mj

N = 21
SIGMA = 0.01
H1_WEIGHT, TIKHONOV_WEIGHT = 1e-4, 1e-3


def _grid():
    return mj.Grid.from_bounds((N,), (0.0,), (1.0,), axes=("x",))


def _walls():
    return [mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0)]


def _source_problem(u):
    """-u'' = f, u = 0 on the walls, f unknown: linear in f; H1 and Tikhonov on f (a
    proper Gaussian prior); the data term scaled by the noise variance."""
    steady = mj.Steady(lambda s: s.d(s.d(s.u, "x"), "x") + s.f)
    p = mj.Problem(_grid(), None, data={"u": u}, steady=steady, conditions=_walls(),
                   regularisers=[mj.H1("f", H1_WEIGHT), mj.Tikhonov("f", TIKHONOV_WEIGHT)])
    return mj.scaled(p, {"u": SIGMA})


@pytest.fixture(scope="module")
def linear():
    x = _grid().coords("x")
    f_true = 10.0 * np.sin(np.pi * x)
    forward = _source_problem(np.zeros(N))
    u = np.asarray(forward.grid_values({"f": mj.GridField(f_true, "x")})["u"])
    # the forward map's matrix (forward-mode autodiff of the solve; the model is linear)
    template = mj.GridField(np.zeros(N), "x")
    jac = np.asarray(jax.jacfwd(lambda v: forward.grid_values(
        {"f": eqx.tree_at(lambda g: g.raw, template, v)})["u"])(jnp.asarray(f_true)))
    u_obs = u + SIGMA * np.random.default_rng(0).standard_normal(N)
    # the posterior of  u_obs = J f + noise (sigma),  prior ~ exp(-(n/2) (w1 H1 + w2 Tikhonov)):
    # the scaled loss is (1/(n sigma^2)) |J f - u_obs|^2 + penalties, i.e. the negative log
    # posterior times 2/n
    h = x[1] - x[0]
    diff = np.diff(np.eye(N), axis=0) / h
    prior = (N / 2) * (H1_WEIGHT * 2 / (N - 1) * diff.T @ diff
                       + TIKHONOV_WEIGHT * 2 / N * np.eye(N))
    cov = np.linalg.inv(jac.T @ jac / SIGMA**2 + prior)
    problem = _source_problem(u_obs)
    # a linear model's Gauss-Newton Hessian does not depend on the point: no fit needed
    unknowns = {"f": mj.GridField(f_true, "x")}
    return problem, unknowns, np.sqrt(np.diag(cov)), (jac.T @ jac / SIGMA**2, prior, f_true)


def test_laplace_equals_the_exact_posterior_of_a_linear_gaussian_problem(linear):
    problem, unknowns, exact, _ = linear
    post = mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, nugget=0.0,
                          prior_scale=1.0,
                          kind="posterior")
    assert post.std["f"].shape == (N,)
    np.testing.assert_allclose(post.std["f"], exact, rtol=1e-9)
    assert post.rank == N and post.method == "laplace"
    # the posterior mean of the scaled loss's temperature: 2 / n
    assert post.temperature == pytest.approx(2.0 / N, rel=1e-12)


def test_low_rank_converges_to_the_full_posterior(linear):
    problem, unknowns, exact, _ = linear
    errors = []
    for rank in (2, 6, 12):
        post = mj.laplace(problem, unknowns, rank=rank, oversampling=2, sigma=SIGMA,
                          nugget=0.0, prior_scale=1.0,
                          kind="posterior")
        assert post.rank == rank
        errors.append(float(np.max(np.abs(post.std["f"] - exact) / exact)))
    assert errors[0] > errors[1] > errors[2] > 1e-8
    assert errors[0] > 0.1  # two directions are not enough
    # rank + oversampling >= n: the probes span everything, the result is exact
    post = mj.laplace(problem, unknowns, rank=N - 2, oversampling=2, sigma=SIGMA, nugget=0.0,
                          prior_scale=1.0,
                          kind="posterior")
    np.testing.assert_allclose(post.std["f"], exact, rtol=1e-9)


def test_laplace_samples_have_the_posterior_spread(linear):
    problem, unknowns, exact, _ = linear
    post = mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, nugget=0.0, samples=4000,
                        prior_scale=1.0,
                          kind="posterior")
    assert post.samples["f"].shape == (4000, N)
    spread = post.samples["f"].std(axis=0)
    # 4000 draws: the sample std has a relative error of about 1.1 %; 5 of them
    np.testing.assert_allclose(spread, exact, rtol=0.055)
    # and are centred on the fit: 5 standard errors of the mean
    np.testing.assert_allclose(post.samples["f"].mean(axis=0), post.mean["f"],
                               atol=5 * np.max(exact) / np.sqrt(4000))


def test_evidence_scale_maximises_the_exact_evidence(linear):
    """`prior_scale="evidence"` against a dense maximisation of the Laplace evidence of the
    prior `s * prior` at the given point: `-s f.P f / 2 + (n/2) log s - log det(A + s P) / 2`."""
    import scipy.optimize

    problem, unknowns, exact, (misfit, prior, f) = linear

    def minus_log_evidence(log_s):
        s = np.exp(log_s)
        return (0.5 * s * f @ prior @ f - 0.5 * N * log_s
                + 0.5 * np.linalg.slogdet(misfit + s * prior)[1])

    best = scipy.optimize.minimize_scalar(minus_log_evidence, bracket=(-5.0, 5.0), tol=1e-12)
    post = mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, nugget=0.0,
                      prior_scale="evidence", kind="posterior")
    assert post.prior_scale == pytest.approx(np.exp(best.x), rel=1e-5)
    assert abs(np.log(post.prior_scale)) > 0.5  # the test point is not the fit's own scale
    # the std is the exact posterior's under the scaled prior
    cov = np.linalg.inv(misfit + post.prior_scale * prior)
    np.testing.assert_allclose(post.std["f"], np.sqrt(np.diag(cov)), rtol=1e-8)
    # and a given scale is used as such
    post2 = mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, nugget=0.0, prior_scale=2.0,
                       kind="posterior")
    cov2 = np.linalg.inv(misfit + 2.0 * prior)
    np.testing.assert_allclose(post2.std["f"], np.sqrt(np.diag(cov2)), rtol=1e-8)
    with pytest.raises(mj.UncertaintyError, match="prior_scale"):
        mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, prior_scale="mackay",
                   kind="posterior")
    with pytest.raises(mj.UncertaintyError, match="prior_scale"):
        mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, prior_scale=-1.0,
                   kind="posterior")


def test_mse_is_the_estimators_spread_and_bias(linear):
    """`kind="mse"` against the dense formulas of a linear Gaussian problem: the estimate
    `f_hat = H^-1 J^T u / sigma^2` (H = A + P) has covariance `H^-1 A H^-1` and, at the
    truth `f`, bias `-H^-1 P f`, evaluated by twicing at the given point `f`: at
    `f - b1`, `b1 = -H^-1 P f`."""
    problem, unknowns, exact, (misfit, prior, f) = linear
    post = mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, nugget=0.0, kind="mse")
    h_inv = np.linalg.inv(misfit + prior)
    spread = np.diag(h_inv @ misfit @ h_inv)
    first = -h_inv @ prior @ f
    bias = -h_inv @ prior @ (f - first)
    np.testing.assert_allclose(post.std["f"], np.sqrt(spread + bias**2), rtol=1e-8)
    assert np.all(post.std["f"] < exact * (1 + 1e-9))  # never wider than the posterior
    # k evaluations of the pull: b_(k+1) = b_1 + H^-1 P b_k (1: the plain plug-in)
    for steps in (1, 3):
        bias_k = first
        for _ in range(steps - 1):
            bias_k = first + h_inv @ prior @ bias_k
        other = mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, nugget=0.0,
                           bias_steps=steps)
        np.testing.assert_allclose(other.std["f"], np.sqrt(spread + bias_k**2), rtol=1e-8)
    with pytest.raises(mj.UncertaintyError, match="bias_steps"):
        mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, bias_steps=0)
    with pytest.raises(mj.UncertaintyError, match="bias_steps` applies to kind='mse'"):
        mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, bias_steps=3, kind="posterior")
    with pytest.raises(mj.UncertaintyError, match="kind"):
        mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, kind="bayes")
    # a prior scale would be ignored by the estimator's own error bar: refused, named
    with pytest.raises(mj.UncertaintyError, match="applies to kind='posterior'"):
        mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, prior_scale=2.0)


def test_newton_step_measures_the_distance_to_the_optimum(linear):
    """`newton_step` against the dense posterior: at a point `f` it is the Mahalanobis
    distance `sqrt((f - f*) . Sigma^-1 (f - f*))` to the exact optimum `f*`, and 0 there."""
    problem, unknowns, _, (misfit, prior, f) = linear
    template = mj.GridField(np.zeros(N), "x")

    def field(v):
        return eqx.tree_at(lambda g: g.raw, template, v)

    forward = _source_problem(np.zeros(N))
    jac = np.asarray(jax.jacfwd(lambda v: forward.grid_values({"f": field(v)})["u"])(
        jnp.asarray(f)))
    u_obs = np.asarray(problem.data["u"])
    precision = misfit + prior
    optimum = np.linalg.solve(precision, jac.T @ u_obs / SIGMA**2)
    expected = float(np.sqrt((f - optimum) @ precision @ (f - optimum)))
    post = mj.laplace(problem, unknowns, rank="full", sigma=SIGMA, nugget=0.0)
    assert expected > 2.0  # the truth is not the noisy data's optimum
    assert post.newton_step == pytest.approx(expected, rel=1e-6)
    assert "not at an optimum" in post.message
    at_optimum = mj.laplace(problem, {"f": mj.GridField(optimum, "x")}, rank="full",
                            sigma=SIGMA, nugget=0.0)
    assert at_optimum.newton_step < 1e-6 * expected
    assert "not at an optimum" not in at_optimum.message


def test_unresolved_bias_is_continued_from_the_resolved_spectrum():
    """A truth drawn from the prior has a flat whitened spectrum, and its Bayes risk at
    each node is the exact posterior variance (dense inverse). The plug-in bias misses
    the directions the data do not resolve, so `unresolved=False` is narrower than that;
    the continued spectrum (`unresolved=True`, the default) restores it, reads the
    spectrum as flat, and adds nothing for a smooth truth, whose power falls below the
    noise after one group of directions."""
    n, sigma, h1, tikhonov = 161, 4e-5, 1e-4, 1e-3
    grid = mj.Grid.from_bounds((n,), (0.0,), (1.0,), axes=("x",))
    walls = [mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0)]
    steady = mj.Steady(lambda s: s.d(s.d(s.u, "x"), "x") + s.f)

    def problem(u):
        p = mj.Problem(grid, None, data={"u": u}, steady=steady, conditions=walls,
                       regularisers=[mj.H1("f", h1), mj.Tikhonov("f", tikhonov)])
        return mj.scaled(p, {"u": sigma})

    template = mj.GridField(np.zeros(n), "x")
    forward = problem(np.zeros(n))
    jac = np.asarray(jax.jacfwd(lambda v: forward.grid_values(
        {"f": eqx.tree_at(lambda g: g.raw, template, v)})["u"])(jnp.zeros(n)))
    diff = np.diff(np.eye(n), axis=0) * (n - 1)
    prior = (n / 2) * (h1 * 2 / (n - 1) * diff.T @ diff + tikhonov * 2 / n * np.eye(n))
    h_inv = np.linalg.inv(jac.T @ jac / sigma**2 + prior)
    risk = np.sqrt(np.mean(np.diag(h_inv)))  # root mean Bayes risk over the nodes
    rng = np.random.default_rng(0)
    x = grid.coords("x")
    truths = [np.linalg.solve(np.linalg.cholesky(prior).T, rng.standard_normal(n))
              for _ in range(3)] + [10.0 + 5.0 * np.sin(np.pi * x)]
    ratios = {True: [], False: []}
    for i, truth in enumerate(truths):
        u_obs = jac @ truth + sigma * rng.standard_normal(n)
        fitted = {"f": mj.GridField(h_inv @ jac.T @ u_obs / sigma**2, "x")}  # the optimum
        std = {}
        for unresolved in (True, False):
            out = mj.laplace(problem(u_obs), fitted, rank="full", sigma=sigma, nugget=0.0,
                             unresolved=unresolved)
            std[unresolved] = out.std["f"]
            if unresolved and i < 3:
                assert "continued from" in out.message
                slope = float(out.message.split("spectrum slope ")[1].rstrip(")"))
                assert abs(slope) < 0.3  # a prior draw's spectrum is flat
        if i == 3:  # the smooth truth: next to nothing added
            np.testing.assert_allclose(std[True], std[False], rtol=0.05)
        else:
            for k in ratios:
                ratios[k].append(np.sqrt(np.mean(std[k] ** 2)) / risk)
    assert np.mean(ratios[False]) < 0.95
    assert 0.95 <= np.mean(ratios[True]) <= 1.4
    with pytest.raises(mj.UncertaintyError, match="`unresolved`"):
        mj.laplace(forward, {"f": template}, sigma=sigma, unresolved="yes")


@pytest.fixture(scope="module")
def reaction():
    """-u'' + c(x) u = f, u = 0 on the walls, c > 0 unknown (nonlinear in c), 1 % noise; a
    small smoothness weight, so that the data dominate in the interior."""
    grid = _grid()
    x = grid.coords("x")
    steady = mj.Steady(lambda s: s.d(s.d(s.u, "x"), "x") - s.c * s.u + s.f)
    f = 50.0 * np.sin(np.pi * x)
    c_true = 20.0 + 10.0 * np.sin(2 * np.pi * x)

    def make(u):
        return mj.Problem(grid, None, data={"u": u}, known={"f": f}, steady=steady,
                          conditions=_walls(), regularisers=[mj.H1("c", 1e-5)])

    u = np.asarray(make(np.zeros(N)).grid_values({"c": mj.GridField(c_true, "x")})["u"])
    sigma = 0.01 * u.std()
    u_obs = u + sigma * np.random.default_rng(1).standard_normal(N)
    problem = mj.scaled(make(u_obs), {"u": sigma})
    start = {"c": mj.GridField(np.full(N, 10.0), "x", constraint="positive")}
    result = mj.fit(problem, start, optax.lbfgs(), steps=300, chunk=50, tol=1e-9,
                    progress=False)
    return problem, result, sigma, c_true


def test_ensemble_and_laplace_agree_where_the_data_dominate(reaction):
    problem, result, sigma, c_true = reaction
    post = mj.laplace(problem, result, rank="full", sigma=sigma, prior_scale=1.0,
                          kind="posterior")
    spread = mj.ensemble(problem, result, sigma, draws=20, steps=200)
    assert spread.rank == 20 and spread.samples["c"].shape == (20, N)
    inner = slice(3, N - 3)  # near the walls u -> 0: c is set by the prior there
    ratio = spread.std["c"][inner] / post.std["c"][inner]
    assert 0.7 <= np.median(ratio) <= 1.3
    assert 0.7 <= spread.std["c"][inner].mean() / post.std["c"][inner].mean() <= 1.3
    # near the walls the posterior keeps the prior's variance; the estimator's spread does not
    assert spread.std["c"][0] < 0.6 * post.std["c"][0]
    # the noise level: given, and re-estimated from the redrawn data and from the residual
    assert spread.noise["u"].sigma == sigma and post.noise["u"].source == "given"
    level = post.noise["u"]  # from the residual: n - p degrees of freedom
    assert 0 < level.dof < N and level.std == pytest.approx(level.estimate / np.sqrt(2 * level.dof))
    # the errors of the fit are of the size the posterior says
    err = np.abs(result.values["c"] - c_true)[inner]
    assert np.mean(err <= 2 * post.std["c"][inner]) >= 0.8


def test_bad_arguments_are_named(linear, reaction):
    problem, unknowns, _, _ = linear
    with pytest.raises(mj.UncertaintyError, match="`rank`"):
        mj.laplace(problem, unknowns, rank=0)
    with pytest.raises(mj.UncertaintyError, match="`nugget`"):
        mj.laplace(problem, unknowns, nugget=-1.0)
    with pytest.raises(mj.UncertaintyError, match="`sigma` of 'u'"):
        mj.laplace(problem, unknowns, sigma=-0.1)
    with pytest.raises(mj.UncertaintyError, match="missing \\['u'\\]"):
        mj.laplace(problem, unknowns, sigma={"v": 0.1})
    with pytest.raises(mj.UncertaintyError, match="`fitted`"):
        mj.laplace(problem, [1.0])
    with pytest.raises(mj.UncertaintyError, match="not `result.values`"):
        mj.laplace(problem, {"f": np.zeros(N)})
    with pytest.raises(mj.UncertaintyError, match="`draws`"):
        mj.ensemble(problem, unknowns, SIGMA, draws=1)
    # H1 alone leaves the constants unbounded: without a nugget the prior is singular
    h1_only = problem.with_weights({"reg:f:tikhonov": 0.0})
    with pytest.raises(mj.UncertaintyError, match="not positive definite"):
        mj.laplace(h1_only, unknowns, rank="full", sigma=SIGMA, nugget=0.0,
                          prior_scale=1.0,
                          kind="posterior")
    # with the nugget the constants are bounded by the data, and the std stays finite
    post = mj.laplace(h1_only, unknowns, rank="full", sigma=SIGMA)
    assert np.all(np.isfinite(post.std["f"]))
