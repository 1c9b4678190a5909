"""Levenberg-Marquardt fits: the exact minimiser of a quadratic loss in one or two steps, the
same minimum as a long L-BFGS fit on a nonlinear (solved-state) loss, and named errors."""

import functools

import numpy as np
import pytest

import mollijax as mj
from mollijax import evidence, gauss_newton

N = 41


def _smoothing(lam):
    """`w mean((u - d)^2) + lam mean((du/dx)^2)`: quadratic in the grid values of `u`."""
    grid = mj.Grid.from_bounds((N,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    d = np.sin(3 * x) + 0.1 * np.random.default_rng(0).standard_normal(N)
    problem = mj.Problem(grid, None, data={"u": d}, regularisers=[mj.H1("u", lam)])
    return problem, d, grid.spacing[0]


def test_quadratic_loss_is_solved_exactly():
    lam = 3e-3
    problem, d, h = _smoothing(lam)
    res = gauss_newton(problem, {"u": mj.GridField(np.zeros(N), "x")})
    # normal equations of  (1/N) |u - d|^2 + lam / (N - 1) |G u|^2,  G = first differences / h
    g = (np.eye(N, k=1) - np.eye(N))[:-1] / h
    a = np.eye(N) / N + lam / (N - 1) * g.T @ g
    exact = np.linalg.solve(a, d / N)
    assert res.ok, res.message
    # each damped step leaves about mu (1e-3, then a third of it per step) of the error
    assert res.steps <= 5
    np.testing.assert_allclose(res.values["u"], exact, rtol=0, atol=1e-9)


def _divergence(s):
    return s.d(s.k * s.d(s.u, "x"), "x") + s.f


@pytest.fixture(scope="module")
def solved():
    """-(k u')' = f, u = 0 on the walls, k > 0 (exp of the parameters): nonlinear in them."""
    n = 33
    grid = mj.Grid.from_bounds((n,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    f = 10.0 + 5.0 * x
    walls = [mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0)]
    steady = mj.Steady(_divergence)
    clean = mj.Problem(grid, None, data={"u": np.zeros(n)}, known={"f": f}, steady=steady,
                       conditions=walls)
    k_true = 1.0 + 0.5 * np.sin(2 * np.pi * x)
    u = np.asarray(clean.grid_values({"k": mj.GridField(k_true, "x")})["u"])
    u_obs = u + 0.02 * u.std() * np.random.default_rng(1).standard_normal(n)
    problem = mj.Problem(grid, None, data={"u": u_obs}, known={"f": f}, steady=steady,
                         conditions=walls, regularisers=[mj.Curvature("k", 1e-6)])
    start = {"k": mj.GridField(np.ones(n), "x", constraint="positive")}
    return problem, start


def test_nonlinear_fit_reaches_the_minimum_of_a_long_lbfgs_fit(solved):
    problem, start = solved
    gn = gauss_newton(problem, start, steps=100, tol=1e-13)
    ref = mj.fit(problem, start, mj.lbfgs(), steps=20000, chunk=500, tol=1e-14, progress=False)
    assert gn.ok and gn.steps < 60, gn.message
    # L-BFGS is the independent reference; Gauss-Newton must be at least as low, and at
    # the same coefficients
    assert gn.final_loss <= ref.final_loss * (1 + 1e-6)
    np.testing.assert_allclose(gn.values["k"], ref.values["k"], rtol=2e-3)


def test_bad_arguments_are_named(solved):
    problem, start = solved
    with pytest.raises(mj.MollijaxError, match="steps"):
        gauss_newton(problem, start, steps=0)
    with pytest.raises(mj.MollijaxError, match="GN_MAX_PARAMETERS"):
        gauss_newton(problem, start, max_parameters=10)


# ----------------------------------------------------------------------------- the evidence
def _curvature_smoothing(seed=2, sigma=0.05, n=N):
    """Data `sin(2 pi x) + noise` on 41 nodes, a grid field `u` under the curvature prior,
    the data term in chi-square per node: linear and Gaussian, so the Laplace evidence is
    exact and has a closed form."""
    grid = mj.Grid.from_bounds((n,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    clean = np.sin(2 * np.pi * x)
    d = clean + sigma * np.random.default_rng(seed).standard_normal(n)
    problem = mj.Problem(grid, None, data={"u": d},
                         regularisers=[mj.Curvature("u", 1.0), mj.ThirdDerivative("u", 0.0)])
    problem = mj.scaled(problem, {"u": sigma})
    return problem, d, clean, grid.spacing[0], sigma


@functools.cache
def _differences(n, h, order):
    """`mean((D_order u)^2) = u^T Q u`: the `Q` of the squared difference quotients (cached:
    the same few grids throughout; callers never write to it)."""
    dk = np.eye(n)
    for _ in range(order):
        dk = np.diff(dk, axis=0)
    dk = dk / h**order
    return dk.T @ dk / (n - order)


@functools.cache
def _curvature_eigenvalues(n, h):
    return np.linalg.eigvalsh(_differences(n, h, 2))


def _se_precision(n, length):
    """`R(u) = u^T Q u` of `SquaredExponential` on `n` nodes of [0, 1], built densely: the
    affine part removed by least squares, the kernel with its documented nugget inverted."""
    x = np.linspace(0.0, 1.0, n)
    k = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * length**2))
    k = k + 1e-6 * np.linalg.eigvalsh(k).max() * np.eye(n)
    basis = np.stack([np.ones(n), x], axis=1)
    proj = np.eye(n) - basis @ np.linalg.pinv(basis)
    return proj @ np.linalg.inv(k) @ proj / n


def _exact_log_evidence(w, d, h, sigma, n=N, third=0.0, extra=None):
    """`max_s log p(d | w, s)` of the Gaussian model `d = u + e`, `e ~ N(0, s sigma^2 I)`,
    prior `exp(-N R(u) / (2 s))` with `R = w u^T Q2 u + third u^T Q3 u` (the mean squared
    second and third differences) and the linear functions (its null space) under a flat
    prior, by Gaussian integrals, up to a constant that depends on neither the weights nor
    `s`."""
    import scipy.optimize

    lam = n * (w * _differences(n, h, 2) + third * _differences(n, h, 3))  # precision, s = 1
    if extra is not None:  # a further prior term's precision (`u^T extra u`, weighted)
        lam = lam + n * extra
    h1 = np.eye(n) / sigma**2 + lam
    u = np.linalg.solve(h1, d / sigma**2)
    phi1 = 0.5 * np.sum((u - d) ** 2) / sigma**2 + 0.5 * u @ lam @ u
    if third == 0.0 and extra is None:
        # the curvature prior alone: its eigenvalues are n w times those of Q2, one dense
        # decomposition per grid instead of one per weight (5 s each at 801 nodes)
        eig = n * w * _curvature_eigenvalues(n, h)
    else:
        eig = np.linalg.eigvalsh(lam)
    r = n - 2  # the null space: the linear functions
    logpdet = np.sum(np.log(np.sort(eig)[2:]))
    logdet = np.linalg.slogdet(h1)[1]

    def neg(logs):
        s = np.exp(logs)
        return -(-phi1 / s - n / 2 * np.log(s) - r / 2 * np.log(s) + n / 2 * np.log(s)
                 + 0.5 * logpdet - 0.5 * logdet)

    best = scipy.optimize.minimize_scalar(neg, bounds=(-30, 10), method="bounded",
                                          options={"xatol": 1e-10})
    return -best.fun, u


@pytest.mark.parametrize("n", [N, 801])
def test_evidence_equals_the_exact_marginal_likelihood_of_a_linear_gaussian_model(n):
    # 801 nodes: the prior's smallest nonzero eigenvalue is about 1e-11 of its largest, which
    # a rank cut at a fixed 1e-10 counted as null space (log Z then off by up to 5)
    problem, d, _, h, sigma = _curvature_smoothing(n=n)
    weights = np.geomspace(1e-2, 1e-7, 6)
    choice = evidence(problem, {"u": mj.GridField(np.zeros(n), "x")}, term="reg:u:curvature",
                      sigma={"u": sigma}, weights=weights)
    got = -np.array([t.score for t in choice.curve])
    exact = np.array([_exact_log_evidence(w, d, h, sigma, n)[0] for w in weights])
    # equal up to one constant: compare differences from the first weight
    np.testing.assert_allclose(got - got[0], exact - exact[0], rtol=1e-6, atol=1e-6)
    assert choice.weight == weights[int(np.argmax(exact))]


def test_evidence_picks_a_weight_near_the_best():
    problem, d, clean, h, sigma = _curvature_smoothing(seed=3)
    weights = np.geomspace(1e-2, 1e-8, 25)  # quarter decades
    choice = evidence(problem, {"u": mj.GridField(np.zeros(N), "x")}, term="reg:u:curvature",
                      sigma={"u": sigma}, weights=weights)
    errors = [np.linalg.norm(t.values["u"] - clean) for t in choice.curve]
    best = weights[int(np.argmin(errors))]
    assert best / 10 <= choice.weight <= best * 10, (choice.weight, best)
    assert min(errors) <= np.linalg.norm(choice.result.values["u"] - clean) <= 1.5 * min(errors)


@pytest.mark.parametrize("start", [1, 7])
def test_evidence_started_inside_the_grid_finds_the_same_maximum_with_fewer_fits(start):
    # the maximum lies at index 3 or 4 of these eight weights: from index 1 the scan goes
    # down to one past it; from index 7 (below it) it goes up from the start's fit
    problem, _, _, _, sigma = _curvature_smoothing(seed=3)
    weights = np.geomspace(1e-1, 1e-8, 8)
    unknowns = {"u": mj.GridField(np.zeros(N), "x")}
    full = evidence(problem, unknowns, term="reg:u:curvature", sigma={"u": sigma},
                    weights=weights, stop_early=True)
    assert 2 <= int(np.flatnonzero(weights == full.weight)[0]) <= 5, full.weight
    part = evidence(problem, unknowns, term="reg:u:curvature", sigma={"u": sigma},
                    weights=weights, stop_early=True, start=start)
    assert part.weight == full.weight
    assert len(part.curve) < len(full.curve) or start == 7
    scanned = [t.weight for t in part.curve]
    assert scanned == sorted(scanned, reverse=True)  # the curve from large to small
    if start == 7:  # went up past the maximum and stopped one beyond it
        assert weights[start] in scanned and max(scanned) < weights[0]
    same = {t.weight: t.score for t in full.curve}
    for t in part.curve:
        if t.weight in same:
            assert np.isclose(t.score, same[t.weight], rtol=1e-6, atol=1e-6)


def test_evidence_names_bad_arguments():
    problem, _, _, _, sigma = _curvature_smoothing()
    start = {"u": mj.GridField(np.zeros(N), "x")}
    with pytest.raises(mj.MollijaxError, match="refine"):
        evidence(problem, start, term="reg:u:curvature", sigma={"u": sigma}, refine=-1)
    with pytest.raises(mj.MollijaxError, match="reg:u:smooth"):
        evidence(problem, start, term="reg:u:smooth", sigma={"u": sigma})
    with pytest.raises(mj.MollijaxError, match="sigma"):
        evidence(problem, start, term="reg:u:curvature", sigma={})
    with pytest.raises(mj.MollijaxError, match="`start` must be an index into the 3 weights"):
        evidence(problem, start, term="reg:u:curvature", sigma={"u": sigma},
                 weights=[1e-2, 1e-3, 1e-4], start=3)


def _each_maximum_is_interior(candidates, offsets):
    """Each prior's candidates (by prior and ratio) hold at least the `offsets` weights and
    their largest log Z at an interior weight: the scan extends past an edge maximum."""
    groups = {}
    for prior, ratio, weights, z in candidates:
        w = max(weights.values())
        groups.setdefault((prior, ratio), []).append((w, z))
    for key, rows in groups.items():
        rows.sort()
        assert len(rows) >= offsets, key
        best = int(np.argmax([z for _, z in rows]))
        assert 0 < best < len(rows) - 1, (key, rows)


def test_mixed_prior_evidence_is_the_exact_marginal_likelihood_and_its_maximum():
    # linear and Gaussian: the linearised candidates' log Z is exact, so it must equal the
    # closed form at every candidate (up to one constant), the choice must be the best of
    # them, and its fit the posterior mean at the chosen weights
    problem, d, _, h, sigma = _curvature_smoothing(seed=4)
    start = {"u": mj.GridField(np.zeros(N), "x")}
    first = evidence(problem, start, term="reg:u:curvature", sigma={"u": sigma},
                     weights=np.geomspace(1e-2, 1e-8, 7), stop_early=True)
    ratios = [0.0, 1e-3, 1e-2, 1e-1]
    mix = mj.mix_evidence(problem.with_weights({"reg:u:curvature": first.weight}),
                          first.result, lead="reg:u:curvature", extra="reg:u:third",
                          sigma={"u": sigma}, ratios=ratios, offsets=[-1.0, -0.5, 0.0, 0.5])
    _each_maximum_is_interior(mix.candidates, 4)
    got = np.array([z for _, _, _, z in mix.candidates])
    exact = np.array([_exact_log_evidence(w["reg:u:curvature"], d, h, sigma,
                                          third=w["reg:u:third"])[0]
                      for _, _, w, _ in mix.candidates])
    np.testing.assert_allclose(got - got[0], exact - exact[0], rtol=0, atol=1e-6)
    best = mix.candidates[int(np.argmax(exact))][2]
    assert all(np.isclose(mix.weights[k], best[k], rtol=1e-12) for k in best), (mix, best)
    _, mean = _exact_log_evidence(mix.weights["reg:u:curvature"], d, h, sigma,
                                  third=mix.weights["reg:u:third"])
    np.testing.assert_allclose(mix.result.values["u"], mean, rtol=0, atol=1e-8)
    assert mix.log_z >= -first.curve[[t.weight for t in first.curve].index(first.weight)].score


def test_evidence_of_a_positive_field_is_that_of_its_values():
    # the same smoothing problem with u > 0 as a `positive` grid field (softplus of raw
    # parameters) and as a free one: the prior and the Laplace integral are over the values,
    # so the evidence curve must not depend on the parametrisation (in the raw parameters
    # the curvature penalty's Hessian gains g softplus'', which fills its null space)
    grid = mj.Grid.from_bounds((N,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    sigma = 0.05
    d = 2.0 + np.sin(2 * np.pi * x) + sigma * np.random.default_rng(5).standard_normal(N)
    problem = mj.scaled(mj.Problem(grid, None, data={"u": d},
                                   regularisers=[mj.Curvature("u", 1.0)]), {"u": sigma})
    weights = np.geomspace(1e-3, 1e-7, 5)
    curves = {}
    for constraint in ("free", "positive"):
        start = {"u": mj.GridField(np.full(N, 2.0), "x", constraint=constraint)}
        choice = evidence(problem, start, term="reg:u:curvature", sigma={"u": sigma},
                          weights=weights)
        curves[constraint] = np.array([t.score for t in choice.curve])
    np.testing.assert_allclose(curves["positive"], curves["free"], rtol=0, atol=1e-5)


def test_alternative_priors_share_the_evidence_scale_of_the_mix():
    # linear and Gaussian, squared-exponential alternatives beside the curvature + third mix:
    # every candidate's log Z, mix or alternative, equals the closed form up to ONE constant
    # (the priors share the affine null space, so their evidences compare), and the choice
    # is the best of all of them
    problem, d, _, h, sigma = _curvature_smoothing(seed=4)
    lengths = (0.15, 0.4)
    problem = mj.Problem(problem.grid, None, data={"u": d},
                         regularisers=[mj.Curvature("u", 1.0), mj.ThirdDerivative("u", 0.0)]
                         + [mj.SquaredExponential("u", 0.0, length=ell) for ell in lengths])
    problem = mj.scaled(problem, {"u": sigma})
    start = {"u": mj.GridField(np.zeros(N), "x")}
    first = evidence(problem, start, term="reg:u:curvature", sigma={"u": sigma},
                     weights=np.geomspace(1e-2, 1e-8, 7), stop_early=True)
    names = [f"reg:u:se:{ell:g}" for ell in lengths]
    mix = mj.mix_evidence(problem.with_weights({"reg:u:curvature": first.weight}),
                          first.result, lead="reg:u:curvature", extra="reg:u:third",
                          sigma={"u": sigma}, ratios=[0.0, 0.1], offsets=[-2.0, -1.0, 0.0, 1.0],
                          alternatives=names)
    _each_maximum_is_interior(mix.candidates, 4)
    assert {c[0] for c in mix.candidates} == {"mix", *names}
    precision = {name: _se_precision(N, ell) for name, ell in zip(names, lengths, strict=True)}

    def exact_z(w):
        extra = sum(w[k] * precision[k] for k in names)
        return _exact_log_evidence(w["reg:u:curvature"], d, h, sigma, third=w["reg:u:third"],
                                   extra=extra)[0]

    got = np.array([z for _, _, _, z in mix.candidates])
    exact = np.array([exact_z(w) for _, _, w, _ in mix.candidates])
    np.testing.assert_allclose(got - got[0], exact - exact[0], rtol=0, atol=1e-5)
    best = mix.candidates[int(np.argmax(exact))]
    assert mix.prior == best[0] and all(
        np.isclose(mix.weights[k], best[2][k], rtol=1e-12) for k in best[2]), (mix, best)


def test_mixed_prior_evidence_takes_the_smoother_prior_only_where_the_data_are_smooth():
    # 101 nodes, 5 % noise: a sine (analytic) is far smoother than a curvature (cubic-spline)
    # prior's draws, a bump of width 0.05 is not; the evidence should mix in the third
    # derivative for the first (and gain accuracy) and not for the second
    n, sigma = 101, 0.05
    grid = mj.Grid.from_bounds((n,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    for name, clean in (("sine", np.sin(2 * np.pi * x)),
                        ("bump", np.exp(-(((x - 0.3) / 0.05) ** 2)))):
        for seed in (0, 1):
            d = clean + sigma * np.random.default_rng(seed).standard_normal(n)
            problem = mj.scaled(mj.Problem(
                grid, None, data={"u": d},
                regularisers=[mj.Curvature("u", 1.0), mj.ThirdDerivative("u", 0.0)]),
                {"u": sigma})
            first = evidence(problem, {"u": mj.GridField(np.zeros(n), "x")},
                             term="reg:u:curvature", sigma={"u": sigma},
                             weights=np.geomspace(1e-1, 1e-10, 10), stop_early=True)
            mix = mj.mix_evidence(
                problem.with_weights({"reg:u:curvature": first.weight}), first.result,
                lead="reg:u:curvature", extra="reg:u:third", sigma={"u": sigma},
                ratios=[0.0, 1e-3, 1e-2, 1e-1, 1.0], offsets=np.arange(-3.0, 1.01, 0.25))
            err = np.linalg.norm(mix.result.values["u"] - clean)
            err_first = np.linalg.norm(first.result.values["u"] - clean)
            if name == "sine":  # measured: a = 0.1, error 0.20 -> 0.14 and 0.13 -> 0.08
                assert mix.ratio >= 1e-2 and err < 0.9 * err_first, (seed, mix.ratio, err)
            else:  # measured: a = 0
                assert mix.ratio <= 1e-3, (seed, mix.ratio)


def test_mixed_prior_evidence_names_bad_arguments():
    problem, _, _, _, sigma = _curvature_smoothing()
    fit = gauss_newton(problem, {"u": mj.GridField(np.zeros(N), "x")})
    good = {"lead": "reg:u:curvature", "extra": "reg:u:third", "sigma": {"u": sigma},
            "ratios": [0.0, 0.1], "offsets": [0.0]}
    for change, match in (({"extra": "reg:u:curvature"}, "different"),
                          ({"alternatives": ["reg:u:third"]}, "different"),
                          ({"alternatives": ["reg:u:se:0.3"]}, "reg:u:se:0.3"),
                          ({"ratios": [-1.0]}, "ratios"), ({"ratios": []}, "ratios"),
                          ({"offsets": [np.nan]}, "offsets"), ({"rounds": 0}, "rounds"),
                          ({"extra": "reg:u:smooth"}, "reg:u:smooth")):
        with pytest.raises(mj.MollijaxError, match=match):
            mj.mix_evidence(problem, fit, **{**good, **change})
    # the start is the lead's prior: a lead at weight 0, or an alternative already weighted,
    # is refused by name
    with pytest.raises(mj.MollijaxError, match=r"'reg:u:curvature' \(weight > 0, got 0"):
        mj.mix_evidence(problem.with_weights({"reg:u:curvature": 0.0}), fit, **good)
    weighted = mj.Problem(problem.grid, None, data=problem.data, regularisers=[
        mj.Curvature("u", 1.0), mj.ThirdDerivative("u", 0.0),
        mj.SquaredExponential("u", 0.5, length=0.3)])
    with pytest.raises(mj.MollijaxError, match=r"alternatives` at weight 0 \(got .*se:0\.3"):
        mj.mix_evidence(weighted, fit, **good, alternatives=["reg:u:se:0.3"])
