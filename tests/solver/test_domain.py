"""Irregular domains: residuals on the domain's band, data and regularisers inside it,
nothing outside it reaching the loss, and clear errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mollijax as mj

jax.config.update("jax_enable_x64", True)

N = 41
GRID = mj.Grid.from_bounds((N, N), (0.0, 0.0), (np.pi, np.pi), axes=("x", "y"))
X, Y = GRID.mesh()
DISK = (X - np.pi / 2) ** 2 + (Y - np.pi / 2) ** 2 < 1.2**2
U = np.sin(X) * np.sin(Y)  # -lap u = 2 u
GARBAGE = np.where(DISK, U, 10.0 * np.random.default_rng(1).standard_normal(U.shape))


def _helmholtz(s):
    return s.lap(s.u) + s.c * s.u


def _band_by_hand(mask, w):
    """Nodes whose (2w+1)^2 box lies in `mask` (brute force)."""
    out = np.zeros_like(mask)
    n, m = mask.shape
    for i in range(w, n - w):
        for j in range(w, m - w):
            out[i, j] = mask[i - w:i + w + 1, j - w:j + w + 1].all()
    return out


@pytest.fixture(scope="module")
def problems():
    inside = mj.Problem(GRID, _helmholtz, data={"u": GARBAGE}, domain=DISK)
    clean = mj.Problem(GRID, _helmholtz, data={"u": U})
    return inside, clean


def test_band_is_the_eroded_domain(problems):
    inside, _ = problems
    halo = inside.derivatives.halo[0]
    expected = _band_by_hand(DISK, halo)
    crop = tuple(slice(m, N - m) for m in inside.margin)
    np.testing.assert_array_equal(np.asarray(inside.band), expected[crop])


def test_residual_ignores_values_outside_the_domain(problems):
    inside, clean = problems
    c = {"c": mj.Constant(2.0)}
    with_domain = float(inside.loss_terms(c)["residual:pde"])
    # the clean problem's residual, averaged over the same band by hand
    r = np.asarray(clean._evaluate_residual(_helmholtz, clean._scope(c, clean.grid_values(c))))
    by_hand = float(np.mean(r[np.asarray(inside.band)] ** 2))
    assert with_domain == pytest.approx(by_hand, rel=1e-10)
    # without the domain the garbage outside dominates
    garbage = mj.Problem(GRID, _helmholtz, data={"u": GARBAGE})
    assert float(garbage.loss_terms(c)["residual:pde"]) > 1e3 * with_domain


def test_nothing_outside_the_domain_reaches_the_loss():
    # residual, data misfit and H1 on a grid unknown: the gradient in its values outside
    # the domain vanishes, inside it does not
    problem = mj.Problem(GRID, lambda s: s.lap(s.v) + 2.0 * s.v, data={"v": GARBAGE},
                         regularisers=[mj.H1("v", 1e-3), mj.Tikhonov("v", 1e-4)], domain=DISK)
    v = mj.GridField(np.cos(X) + Y, "xy")

    def loss(raw):
        return problem.loss({"v": eqx.tree_at(lambda f: f.raw, v, raw)})[0]

    grad = np.abs(np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(v.raw))))
    # zero up to the round-off of an FFT convolution, which mixes every node
    assert grad[~DISK].max() < 1e-10 * grad[DISK].max()
    assert grad[DISK].min() > 1e-8 * grad[DISK].max()


def test_data_and_regularisers_count_only_the_domain():
    a, b = 1.3, -0.4
    linear = a * X + b * Y
    values = np.where(DISK, linear, 5.0 * np.random.default_rng(2).standard_normal(X.shape))
    problem = mj.Problem(GRID, None, data={"v": np.where(DISK, linear + 0.5, 0.0)},
                         regularisers=[mj.H1("v"), mj.Tikhonov("v")], domain=DISK)
    terms = problem.loss_terms({"v": mj.GridField(values, "xy")})
    assert float(terms["data:v"]) == pytest.approx(0.25, rel=1e-12)
    assert float(terms["reg:v:smooth"]) == pytest.approx(a**2 + b**2, rel=1e-12)
    assert float(terms["reg:v:tikhonov"]) == pytest.approx(np.mean(linear[DISK] ** 2), rel=1e-12)


def test_curvature_counts_only_differences_inside_the_domain():
    # a quadratic inside the disk, noise outside: only stencils wholly inside count
    a, b, c = 0.7, 0.4, -0.9
    quadratic = a * X**2 + b * X * Y + c * Y**2
    values = np.where(DISK, quadratic, 5.0 * np.random.default_rng(3).standard_normal(X.shape))
    problem = mj.Problem(GRID, None, data={"v": quadratic},
                         regularisers=[mj.Curvature("v", mixed=True)], domain=DISK)
    terms = problem.loss_terms({"v": mj.GridField(values, "xy")})
    assert float(terms["reg:v:curvature"]) == pytest.approx(4 * a**2 + 2 * b**2 + 4 * c**2,
                                                            rel=1e-10)


def test_fit_on_the_domain_recovers_the_coefficient():
    # c(x, y) = 2 on the disk; outside, the data are noise: only the domain makes it work
    problem = mj.Problem(GRID, _helmholtz, data={"u": GARBAGE},
                         regularisers=[mj.H1("c", 1e-6)], domain=DISK)
    start = {"c": mj.GridField(np.ones((N, N)), "xy")}
    result = mj.fit(problem, start, optax.lbfgs(), steps=60, progress=False)
    c = np.asarray(result.values["c"])
    band = np.zeros((N, N), bool)
    crop = tuple(slice(m, N - m) for m in problem.margin)
    band[crop] = np.asarray(problem.band)
    # mollified Laplacian of sin sin: a few per cent low on this grid, the same everywhere
    assert np.median(np.abs(c[band] - 2.0)) < 0.1
    assert result.status == mj.Status.completed


def test_domain_errors_are_named():
    with pytest.raises(mj.GridMismatchError, match="`domain`.*boolean.*41, 41"):
        mj.Problem(GRID, _helmholtz, data={"u": U}, domain=DISK[:-1])
    with pytest.raises(mj.GridMismatchError, match="`domain`.*boolean \\(or 0/1\\)"):
        mj.Problem(GRID, _helmholtz, data={"u": U}, domain=np.where(DISK, 0.5, 0.0))
    with pytest.raises(mj.MollijaxError, match="`domain` is empty"):
        mj.Problem(GRID, _helmholtz, data={"u": U}, domain=np.zeros((N, N), bool))
    # 0/1 numbers, as a data file may hold them, are the same domain
    as_numbers = mj.Problem(GRID, _helmholtz, data={"u": U}, domain=DISK.astype(float))
    np.testing.assert_array_equal(np.asarray(as_numbers.domain), DISK)
    tiny = np.zeros((N, N), bool)
    tiny[20:23, 20:23] = True
    with pytest.raises(mj.MollijaxError, match="no node farther than"):
        mj.Problem(GRID, _helmholtz, data={"u": U}, domain=tiny)
    # without residuals nothing needs a band: data and regularisers on a tiny domain are fine
    smoothing = mj.Problem(GRID, None, data={"u": U}, regularisers=[mj.H1("u")], domain=tiny)
    terms = smoothing.loss_terms({"u": mj.GridField(U, "xy")})
    assert float(terms["data:u"]) == 0.0 and float(terms["reg:u:smooth"]) > 0.0
    with pytest.raises(mj.MollijaxError, match="domain_margin.*without a `domain`"):
        mj.Problem(GRID, _helmholtz, data={"u": U}, domain_margin=3)
    outside = ~DISK
    outside[:5] = False
    with pytest.raises(mj.MollijaxError, match=r"data\['u'\].*no observed node inside"):
        mj.Problem(GRID, _helmholtz, data={"u": U}, masks={"u": outside}, domain=DISK)


def test_prepare_drops_band_nodes_that_nested_derivatives_read_outside():
    # d(D d(u)) reads two halos deep along each axis: prepare drops the band nodes whose
    # residual still sees outside values, and keeps those two halos inside along both axes
    def divergence(s):
        return s.d(s.D * s.d(s.u, "x"), "x") + s.d(s.D * s.d(s.u, "y"), "y")

    problem = mj.Problem(GRID, divergence, data={"u": GARBAGE}, domain=DISK)
    halo = problem.derivatives.halo[0]
    unknowns = {"D": mj.GridField(np.ones((N, N)), "xy")}
    prepared = problem.prepare(unknowns)
    crop = tuple(slice(m, N - m) for m in problem.margin)
    before, after = np.asarray(problem.band), np.asarray(prepared.band)
    assert np.all(after <= before) and after.sum() < before.sum()
    assert np.all(after[_band_by_hand(DISK, 2 * halo)[crop]])
    # what is left reads nothing outside: garbage there leaves the residual unchanged
    clean = mj.Problem(GRID, divergence, data={"u": np.where(DISK, GARBAGE, 0.0)}, domain=DISK)
    r_kept, r_clean = (
        np.asarray(p._evaluate_residual(divergence, p._scope(unknowns, p.grid_values(unknowns))))
        for p in (prepared, clean)
    )
    assert np.allclose(r_kept[after], r_clean[after], rtol=1e-9, atol=1e-9)


def test_error_bars_only_inside_the_domain():
    # no term sees an unknown's values outside the domain: no error bar there (NaN), finite
    # ones inside (a small grid and a narrow kernel: laplace's dense algebra is n^2)
    n = 21
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (np.pi, np.pi), axes=("x", "y"))
    x, y = grid.mesh()
    disk = (x - np.pi / 2) ** 2 + (y - np.pi / 2) ** 2 < 1.3**2
    h = grid.spacing[0]
    problem = mj.Problem(grid, _helmholtz, data={"u": np.sin(x) * np.sin(y)},
                         regularisers=[mj.H1("c", 1e-4)], domain=disk,
                         derivatives=mj.Mollifier(grid, 2 * h))
    bars = mj.laplace(problem, {"c": mj.GridField(np.full((n, n), 2.0), "xy")},
                      sigma="residual").std["c"]
    assert np.all(np.isnan(bars[~disk]))
    assert np.all(np.isfinite(bars[disk])) and np.all(bars[disk] > 0)


def test_readout_on_the_domain(problems):
    # the pointwise read-out of c in lap(u) + c u = 0 sees only the band: NaN elsewhere,
    # and the garbage outside does not reach the nodes it reads
    inside, clean = problems
    start = {"c": mj.GridField(np.ones((N, N)), "xy")}
    out = mj.readout(inside, start, "c", sigma=1e-6)
    reference = mj.readout(clean, start, "c", sigma=1e-6)
    band = np.zeros((N, N), bool)
    crop = tuple(slice(m, N - m) for m in inside.margin)
    band[crop] = np.asarray(inside.prepare(start).band)
    assert np.all(np.isnan(out.values[~band]))
    np.testing.assert_allclose(out.values[band], reference.values[band], rtol=1e-8)


def test_identifiability_reports_only_nodes_the_band_reads(problems):
    # outside the domain no residual reads c: that is the domain's doing, not a weak equation
    inside, _ = problems
    report = mj.identifiability(inside, {"c": mj.GridField(np.full((N, N), 2.0), "xy")}, "c")
    assert not report.poor[~DISK].any()
    assert report.message == ""  # u = sin sin does not vanish inside the disk


def test_auto_widths_follow_the_domains_size():
    # eps = "auto" on a domain: the rule of a grid the size of the domain's bounding box (a
    # rectangle here, so exactly the cropped problem), not of the whole image
    noisy = U + 0.02 * np.random.default_rng(3).standard_normal(U.shape)
    box = np.zeros((N, N), bool)
    box[5:30, 8:26] = True
    widths = mj.suggest_widths(GRID, 2, {"u": noisy}, box)
    small = mj.Grid.from_bounds((25, 18), (0.0, 0.0), (24 * GRID.spacing[0], 17 * GRID.spacing[1]),
                                axes=("x", "y"))
    assert widths == pytest.approx(mj.suggest_widths(small, 2, {"u": noisy[5:30, 8:26]}))
    assert max(widths) < max(mj.suggest_widths(GRID, 2, {"u": noisy}))
