"""Settings from the data alone: the noise estimate, units-free losses, the discrepancy
principle against the best weight of the same grid (the truth is used only to score), and a
weight sweep that does not recompile the fit."""

import jax.monitoring
import numpy as np
import pytest

import mollijax as mj
from mollijax import cross_validate, discrepancy, gcv, noise_sigma, scaled

N = 49
WEIGHTS = np.geomspace(1.6, 6.25e-3, 9)  # ratio 2
COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(str(kw.get("fun_name", "")))
    if event == "/jax/core/compile/backend_compile_duration" else None
)


def _divergence(s):
    return s.d(s.k * s.d(s.u, "x"), "x") + s.f


def _setup(scale=1.0, noise=0.05, seed=0):
    """-(k u')' = f on [0, 1], u = 0 on the walls; data: the solved u plus Gaussian noise."""
    grid = mj.Grid.from_bounds((N,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    k_true = 1.0 + 0.5 * np.sin(2 * np.pi * x)
    f = scale * (10.0 + 5.0 * x)
    walls = [mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0)]
    steady = mj.Steady(_divergence)  # one function: problems differ only in values
    clean = mj.Problem(grid, None, data={"u": np.zeros(N)}, known={"f": f}, steady=steady,
                       conditions=walls)
    u = np.asarray(clean.grid_values({"k": mj.GridField(k_true, "x")})["u"])
    sigma = noise * u.std()
    u_obs = u + sigma * np.random.default_rng(seed).standard_normal(N)
    problem = mj.Problem(grid, None, data={"u": u_obs}, known={"f": f}, steady=steady,
                         conditions=walls, regularisers=[mj.H1("k", 1.0)])
    return problem, {"u": sigma}, k_true


def _unknowns():
    return {"k": mj.GridField(np.ones(N), "x", constraint="positive")}


def _error(k, k_true):
    return float(np.linalg.norm(k - k_true) / np.linalg.norm(k_true))


@pytest.fixture(scope="module")
def setup():
    # one data set for the module: each _setup() solves the steady state eagerly, which
    # compiles the linear solve again (0.8 and 1.0 s in the two tests that only needed a problem)
    return _setup()


@pytest.fixture(scope="module")
def scan(setup):
    problem, sigma, k_true = setup
    choice = discrepancy(scaled(problem, sigma), _unknowns(), term="reg:k:smooth", sigma=sigma,
                         weights=WEIGHTS, steps=100)
    return choice, k_true


def test_discrepancy_picks_a_weight_near_the_best(scan):
    # the best weight of the grid uses the truth, which the criterion never sees; the error
    # curve is flat near its minimum, so the weight is allowed two grid steps (a factor 4)
    # and the error 25 % above the best
    choice, k_true = scan
    errors = [_error(t.values["k"], k_true) for t in choice.curve]
    best = choice.curve[int(np.argmin(errors))].weight
    assert [t.weight for t in choice.curve] == sorted(WEIGHTS, reverse=True)
    assert best / 4.01 <= choice.weight <= 4.01 * best, (choice.weight, best, errors)
    assert _error(choice.result.values["k"], k_true) <= 1.25 * min(errors), errors
    # the rule itself: the chosen fit meets its bound and every larger weight misses it
    i = [t.weight for t in choice.curve].index(choice.weight)
    assert choice.curve[i].misfit <= choice.curve[i].threshold
    assert all(t.misfit > t.threshold for t in choice.curve[:i])
    # the misfit falls as the weight falls; the bound is below 1 (degrees of freedom)
    misfits = [t.misfit for t in choice.curve]
    assert all(b <= a * 1.05 for a, b in zip(misfits, misfits[1:], strict=False))
    assert all(0 < t.threshold < 1 for t in choice.curve)
    assert choice.result.status == mj.Status.completed
    assert "discrepancy" in choice.message and choice.corner in [t.weight for t in choice.curve]


def test_gcv_picks_a_weight_near_the_best_whatever_the_noise_level_said(setup):
    """V = chi2 / (1 - p / n)^2 needs no noise level: telling it a sigma 20 % off scales
    every V alike and leaves the choice in place (the fits are the same problem's)."""
    problem, sigma, k_true = setup
    fitted = scaled(problem, sigma)
    choice = gcv(fitted, _unknowns(), term="reg:k:smooth", sigma=sigma, weights=WEIGHTS,
                 steps=100)
    errors = [_error(t.values["k"], k_true) for t in choice.curve]
    best = choice.curve[int(np.argmin(errors))].weight
    assert best / 4.01 <= choice.weight <= 4.01 * best, (choice.weight, best, errors)
    assert _error(choice.result.values["k"], k_true) <= 1.25 * min(errors), errors
    assert choice.criterion == "gcv"
    for t in choice.curve:  # the score is V, from the trial's misfit and 1 - p / n
        assert 0.0 < t.threshold < 1.0
        np.testing.assert_allclose(t.score, t.misfit / t.threshold**2, rtol=1e-12)
    assert min(t.score for t in choice.curve) == next(
        t.score for t in choice.curve if t.weight == choice.weight)
    # modified GCV (gamma > 1) charges each effective parameter more: the same fits, a
    # larger V where p is larger, so never a smaller weight
    wide = gcv(fitted, _unknowns(), term="reg:k:smooth", sigma=sigma, weights=WEIGHTS,
               steps=100, gamma=1.4)
    assert wide.weight >= choice.weight
    for t, u in zip(wide.curve, choice.curve, strict=True):
        np.testing.assert_allclose(t.misfit, u.misfit, rtol=1e-12)
        share = 1.0 - t.threshold
        np.testing.assert_allclose(t.score, t.misfit / (1.0 - 1.4 * share) ** 2, rtol=1e-12)
    assert "1 - 1.4 p / n" in wide.message
    with pytest.raises(mj.MollijaxError, match="gcv `gamma` must be a finite number >= 1"):
        gcv(fitted, _unknowns(), term="reg:k:smooth", sigma=sigma, weights=WEIGHTS, gamma=0.5)
    # told a sigma 20 % low, and stopping one weight past the first local minimum of V:
    # the same weight
    early = gcv(fitted, _unknowns(), term="reg:k:smooth", sigma={"u": 0.8 * sigma["u"]},
                weights=WEIGHTS, steps=100, stop_early=True)
    assert early.weight == choice.weight
    scores = [t.score for t in early.curve]
    assert len(scores) < len(WEIGHTS) and scores[-1] > min(scores[:-1])
    assert all(b <= a for a, b in zip(scores[:-2], scores[1:-1], strict=False))
    # a minimum inside the range is not flagged; one at its small end is (V still falling)
    assert "may lie below" not in choice.message
    big = sorted(WEIGHTS, reverse=True)[:2]  # both above the best: V falls between them
    edge = gcv(fitted, _unknowns(), term="reg:k:smooth", sigma=sigma, weights=big, steps=100)
    assert edge.weight == big[-1] and "the minimum may lie below it" in edge.message


def test_discrepancy_bound_stays_below_one_at_tiny_weights(setup):
    """Each trial's bound is tau (1 - p / n) with 0 <= p <= n effective parameters. With a
    positive (log-parametrised) coefficient the regulariser's Hessian in the fitted
    parameters is indefinite away from a smooth coefficient; only its positive part may act
    as a prior precision, else p < 0 and the bound rises above tau."""
    problem, sigma, _ = setup
    rough = np.exp(np.random.default_rng(5).normal(0.0, 1.5, N))
    start = {"k": mj.GridField(rough, "x", constraint="positive")}
    # a few steps from a rough start: the fits stay far from smooth (with the whole Hessian
    # the bounds here were 1.07, 0.98, 1.32, 0.52: above 1 and not monotone)
    choice = discrepancy(scaled(problem, sigma), start, term="reg:k:smooth", sigma=sigma,
                         weights=[10.0, 1.0, 0.1, 0.01], steps=3, continuation=False)
    bounds = [t.threshold for t in choice.curve]
    assert all(0.0 < b < 1.0 for b in bounds), bounds
    # a smaller weight fits more effective parameters: the bound falls with the weight
    assert all(b <= a for a, b in zip(bounds, bounds[1:], strict=False)), bounds


def test_classical_discrepancy_over_smooths(scan):
    # tau = 1 without the degrees-of-freedom correction picks a larger weight (its known bias)
    choice, _ = scan
    classical = max(t.weight for t in choice.curve if t.misfit <= 1.0)
    assert classical >= choice.weight


@pytest.mark.parametrize("noise", [0.01, 0.05, 0.2])
def test_noise_sigma_recovers_the_noise_of_smooth_fields(noise):
    x = np.linspace(0.0, 1.0, 400)
    y = np.linspace(0.0, 1.0, 300)
    rng = np.random.default_rng(1)
    fields = {"wave": np.sin(2 * np.pi * x) + 0.5 * np.cos(5 * x),
              "bump": np.exp(-((y[:, None] - 0.5) ** 2) / 0.1) * np.cos(3 * x[None, ::4])}
    data = {k: v + noise * v.std() * rng.standard_normal(v.shape) for k, v in fields.items()}
    sigma = noise_sigma(data)
    for k, v in fields.items():
        assert abs(sigma[k] / (noise * v.std()) - 1) < 0.2, (k, sigma[k], noise * v.std())
    # a mask drops the unobserved nodes (garbage there does not count)
    masked = data["wave"].copy()
    masked[100:150] = 1e6
    mask = np.ones(400, bool)
    mask[100:150] = False
    s = noise_sigma({"wave": masked}, {"wave": mask})["wave"]
    assert abs(s / (noise * fields["wave"].std()) - 1) < 0.2


def test_noise_sigma_scatters_less_than_the_median_of_differences():
    """On 101 nodes the root mean square of 4th differences scatters over noise draws by
    about 1.1 / sqrt(97) = 11 %; the median alone by about 15 % (measured here on the same
    draws): the estimate must be unbiased to a few percent and beat the median's spread."""
    x = np.linspace(0.0, 1.0, 101)
    clean = np.sin(np.pi * x) + 0.3 * np.sin(3 * np.pi * x)
    rng = np.random.default_rng(7)
    ours, median = [], []
    for _ in range(200):
        noise = 0.05 * rng.standard_normal(x.size)
        ours.append(noise_sigma({"u": clean + noise})["u"] / noise.std())
        d = np.diff(clean + noise, n=4) / np.sqrt(70.0)
        median.append(np.median(np.abs(d)) / 0.6745 / noise.std())
    ours, median = np.array(ours), np.array(median)
    assert abs(ours.mean() - 1) < 0.03, ours.mean()
    assert ours.std() < 0.13 and ours.std() < 0.85 * median.std(), (ours.std(), median.std())


def test_noise_sigma_ignores_a_few_outliers():
    x = np.linspace(0.0, 1.0, 201)
    rng = np.random.default_rng(3)
    noisy = np.cos(2 * np.pi * x) + 0.02 * rng.standard_normal(x.size)
    spiked = noisy.copy()
    spiked[[20, 90, 150]] += 5.0  # three hot pixels, 250 noise standard deviations
    clean_est = noise_sigma({"u": noisy})["u"]
    assert noise_sigma({"u": spiked})["u"] == pytest.approx(clean_est, rel=0.1)
    # without the trim the three spikes alone would add sqrt(3 * 70 * 25 / (70 * 197)) = 0.6
    d = np.diff(spiked, n=4) / np.sqrt(70.0)
    assert np.sqrt(np.mean(d**2)) > 10 * clean_est


def test_noise_sigma_floors_noise_free_data():
    x = np.linspace(0.0, 1.0, 64)
    sigma = noise_sigma({"line": 3.0 * x, "zero": np.zeros(64)})
    assert 0 < sigma["line"] <= 1e-7 * np.std(3.0 * x) and sigma["zero"] > 0
    with pytest.raises(mj.MollijaxError, match="NaN"):
        noise_sigma({"u": np.full(64, np.nan)})


def test_noise_sigma_names_a_field_with_too_few_observed_windows():
    mask = np.zeros(64, bool)
    mask[::2] = True  # no 5 observed neighbours in a row
    with pytest.raises(mj.MollijaxError, match="too few observed windows of 5 nodes in 'u'"):
        noise_sigma({"u": np.arange(64.0)}, {"u": mask})


@pytest.mark.parametrize("criterion", [gcv, discrepancy])
def test_weight_scans_name_bad_input(setup, criterion):
    problem, sigma, _ = setup
    name = criterion.__name__
    with pytest.raises(mj.MollijaxError, match=f"{name}: `sigma` has no value .*'u'"):
        criterion(problem, _unknowns(), term="reg:k:smooth", sigma={}, weights=[1.0])
    with pytest.raises(mj.MollijaxError, match="reg:k:nope"):
        criterion(problem, _unknowns(), term="reg:k:nope", sigma=sigma, weights=[1.0])
    with pytest.raises(mj.MollijaxError, match=f"{name} `optimiser`.*'gauss-newton'"):
        criterion(problem, _unknowns(), term="reg:k:smooth", sigma=sigma, weights=[1.0],
                  optimiser="gauss-newton")


def test_scaled_divides_data_terms_by_the_noise_variance(setup):
    problem, sigma, _ = setup
    out = scaled(problem, sigma)
    w = {t.name: float(t.weight) for t in out.terms}
    assert w["data:u"] == pytest.approx(1.0 / sigma["u"] ** 2)
    assert w["reg:k:smooth"] == 1.0
    with pytest.raises(mj.MollijaxError, match="no data term"):
        scaled(problem, {"v": 1.0})


def test_units_do_not_change_the_choice_and_the_sweep_does_not_recompile(scan):
    # u and f times 1000 (k unchanged): the scaled losses are the same, so is the choice;
    # the same grid and optimiser reuse the compiled fit of the fixture (weights, data and
    # the continuation's unknowns are values)
    choice, k_true = scan
    problem, sigma, _ = _setup(scale=1000.0)
    sigma = {"u": sigma["u"]}
    before = len(COMPILES)
    big = discrepancy(scaled(problem, sigma), _unknowns(), term="reg:k:smooth", sigma=sigma,
                      weights=WEIGHTS, steps=100, stop_early=True)
    new = COMPILES[before:]
    assert big.weight == choice.weight
    assert abs(_error(big.result.values["k"], k_true)
               - _error(choice.result.values["k"], k_true)) < 1e-3
    assert not [n for n in new if "run_chunk" in n or "_evaluate" in n or "_sens" in n], new


def test_cross_validation_refuses_fewer_than_two_folds(setup):
    # (the fold pattern and the neighbour fill are internals of mj.cross_validate; a whole
    # cross-validation run is too slow for the suite: benchmarks/auto_weights.py)
    with pytest.raises(mj.MollijaxError, match="folds"):
        cross_validate(lambda e: None, {}, field="u", term="t", forward=setup[0], eps=[1.0],
                       folds=1)


def test_gcv_effective_parameters_do_not_depend_on_the_linear_solver():
    # 2-D, every wall pinned: the residual never reads k at the four corners. The
    # effective parameters (each trial's `threshold = 1 - p / n`) through BiCGStab (whose
    # Jacobian goes by the block-tridiagonal LU where the operator has a band) equal the
    # direct solve's; before, the corner tangents were NaN and every V inf
    grid = mj.Grid.from_bounds((17, 17), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    f = 10.0 * np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) / 0.05)
    walls = [mj.Condition("u", {a: i}, 0.0) for a in grid.axes for i in (0, -1)]

    def residual(s):
        return s.d(s.k * s.d(s.u, "x"), "x") + s.d(s.k * s.d(s.u, "y"), "y") + s.f

    k_true = 1.0 + 0.3 * x + 0.2 * np.sin(3 * y)
    clean = mj.Problem(grid, None, data={"u": np.zeros(grid.shape)}, known={"f": f},
                       steady=mj.Steady(residual, solver="direct"), conditions=walls)
    u = np.asarray(clean.grid_values({"k": mj.GridField(k_true, grid.axes)})["u"])
    sigma = {"u": 0.05 * float(u.std())}
    data = u + sigma["u"] * np.random.default_rng(0).standard_normal(grid.shape)
    unknowns = {"k": mj.GridField(np.ones(grid.shape), grid.axes, constraint="positive")}
    trials = {}
    for solver in ("direct", "bicgstab"):
        problem = mj.Problem(grid, None, data={"u": data}, known={"f": f},
                             steady=mj.Steady(residual, solver=solver, max_steps=500),
                             conditions=walls, regularisers=[mj.Curvature("k", 1.0)])
        choice = gcv(scaled(problem, sigma), unknowns, term="reg:k:curvature", sigma=sigma,
                     weights=[1e-2, 1e-4], steps=20)
        trials[solver] = [t.threshold for t in choice.curve]
        assert all(np.isfinite(t.score) for t in choice.curve), solver
    np.testing.assert_allclose(trials["bicgstab"], trials["direct"], rtol=1e-6)
    assert all(0.0 < t < 1.0 for t in trials["direct"])
