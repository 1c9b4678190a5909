"""Depth-2 networks as electrodynamics: every check is against an analytic answer or an
independent computation (Monte Carlo, a different quadrature, autodiff, a direct sum)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mollijax as mj

# `el` (theory/electro.py) and `theory` (the loader of its helper modules) are fixtures of
# conftest.py, which imports the top-level theory/ folder by path.

# --------------------------------------------------------------------------- potentials

ANGLES = np.array([0.0, 0.4, 1.1, np.pi / 2, 2.2, 2.9, np.pi])
DIM = 3
MC_SAMPLES = 100_000

ACTIVATIONS = ("hermite1", "hermite2", "hermite3", "relu", "sign")


@pytest.fixture(scope="module")
def activations(el):
    """name -> (activation, closed-form potential)."""
    return {
        "sign": (el.sign_activation, el.sign_potential),
        "relu": (el.relu_activation, el.relu_potential),
        **{f"hermite{m}": (lambda z, m=m: el.hermite_activation(z, m),
                           lambda t, w, m=m: el.hermite_potential(t, w, m)) for m in (1, 2, 3)},
    }


def _pairs(scale_w=1.0):
    theta = jnp.zeros(DIM).at[0].set(1.0)
    w = jnp.zeros((ANGLES.size, DIM)).at[:, 0].set(np.cos(ANGLES)).at[:, 1].set(np.sin(ANGLES))
    return theta, scale_w * w


def _mc_curve(el, activation, theta, ws, seed):
    key = jax.random.key(seed)
    out = [el.monte_carlo_potential(activation, theta, w, jax.random.fold_in(key, i), MC_SAMPLES)
           for i, w in enumerate(ws)]
    return np.array([float(m) for m, _ in out]), np.array([float(e) for _, e in out])


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_closed_form_potential_matches_monte_carlo(el, activations, name):
    activation, potential = activations[name]
    theta, ws = _pairs(scale_w=1.7 if name == "relu" else 1.0)  # ReLU is not scale-free
    exact = np.asarray(potential(jnp.broadcast_to(theta, ws.shape), ws))
    mean, err = _mc_curve(el, activation, theta, ws, seed=1)
    # sign(x) sign(-x) = -1 exactly: zero variance, compare directly
    z = np.abs(mean - exact) / np.maximum(err, 1e-12)
    assert np.all(z < 4.5), (name, z)


def test_monte_carlo_separates_neighbouring_hermite_degrees(el, activations):
    # The check above has power: (theta . w)^3 is rejected for the He_2 unit.
    activation, _ = activations["hermite2"]
    theta, ws = _pairs()
    wrong = np.asarray(el.hermite_potential(jnp.broadcast_to(theta, ws.shape), ws, 3))
    mean, err = _mc_curve(el, activation, theta, ws, seed=2)
    assert np.max(np.abs(mean - wrong) / err) > 20


def test_potentials_special_values(el):
    e1, e2 = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(el.sign_potential(e1, 3 * e1), 1.0, atol=1e-15)
    np.testing.assert_allclose(el.sign_potential(e1, -e1), -1.0, atol=1e-15)
    np.testing.assert_allclose(el.sign_potential(e1, e2), 0.0, atol=1e-15)
    np.testing.assert_allclose(el.relu_potential(2 * e1, 2 * e1), 2.0, rtol=1e-14)  # |t|^2 / 2
    np.testing.assert_allclose(el.relu_potential(e1, e2), 1 / (2 * np.pi), rtol=1e-14)
    z = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(el.hermite_activation(z, 3), (z**3 - 3 * z) / math.sqrt(6),
                               rtol=1e-14)


# --------------------------------------------------------------------------- K_0, E_1


def test_bessel_k0_tabulated_values(el):
    # Abramowitz & Stegun, table 9.8, rounded to 10 decimals
    z = jnp.array([0.1, 0.5, 1.0, 2.0, 5.0])
    table = np.array([2.4270690247, 0.9244190712, 0.4210244382, 0.1138938727, 0.0036910983])
    np.testing.assert_allclose(el.bessel_k0(z), table, rtol=0, atol=5.01e-11)


def test_bessel_k0_series_and_integral_agree_on_their_overlap(theory):
    z = jnp.linspace(0.5, 2.5, 21)
    potentials = theory("_electro_potentials")
    np.testing.assert_allclose(potentials._bessel_k0_series(z),
                               potentials._bessel_k0_integral(z), rtol=1e-13)


def test_bessel_k0_solves_modified_bessel_equation_and_asymptotics(el):
    # z^2 K'' + z K' - z^2 K = 0 on both branches (autodiff of our implementation)
    k = lambda z: el.bessel_k0(z)
    d1 = jax.jit(jax.vmap(jax.grad(k)))
    d2 = jax.jit(jax.vmap(jax.grad(jax.grad(k))))
    z = jnp.array([0.05, 0.3, 1.0, 1.9, 2.1, 4.0, 12.0])
    resid = z**2 * d2(z) + z * d1(z) - z**2 * k(z)
    np.testing.assert_allclose(resid / (z**2 * k(z)), 0.0, atol=1e-11)
    # large z: sqrt(pi / 2z) e^-z (1 - 1/8z + 9/128z^2 - 225/3072z^3 + ...)
    zz = jnp.array([30.0, 40.0])
    series = 1 - 1 / (8 * zz) + 9 / (128 * zz**2) - 225 / (3072 * zz**3)
    asym = jnp.sqrt(jnp.pi / (2 * zz)) * jnp.exp(-zz) * series
    np.testing.assert_allclose(el.bessel_k0(zz), asym, rtol=1e-6)


def test_exp1_against_quadrature(el):
    x = np.array([1e-4, 0.01, 0.3, 1.0])
    # t = x e^u, dt / t = du; the integrand is below e^-60 beyond u = ln(60 / x)
    ref = []
    for xi in x:
        u = np.linspace(0.0, np.log(60.0 / xi), 400_001)
        ref.append(np.trapezoid(np.exp(-xi * np.exp(u)), u))
    np.testing.assert_allclose(el.exp1(jnp.asarray(x)), ref, rtol=1e-9)


# --------------------------------------------------------------------------- screened unit


@pytest.fixture(scope="module")
def unit(el):
    return el.ScreenedUnit(4.0, 0.05)


def _ring(r):
    r = jnp.asarray(r)
    return jnp.stack([r * math.cos(0.3), r * math.sin(0.3)], -1)


def test_screened_unit_far_field_and_self_energy(el, unit):
    r = jnp.array([0.4, 0.7, 1.0, 2.0, 4.0])  # >= 8 delta: the core term is below 1e-13
    np.testing.assert_allclose(unit.potential(_ring(r)), unit.far_field(r), rtol=1e-10)
    x = 4.0 * 0.05**2 / 2
    ref = math.exp(x) * el.exp1(jnp.asarray(x)) / (4 * math.pi)
    np.testing.assert_allclose(unit.potential(jnp.zeros(2)), ref, rtol=1e-12)


def test_screened_unit_is_lambda_harmonic_up_to_its_core(unit):
    lap = jax.jit(jax.vmap(lambda p: jnp.trace(jax.hessian(unit.potential)(p))))
    pts = _ring(jnp.array([0.0, 0.02, 0.05, 0.1, 0.3, 0.6, 1.5]))
    g = unit.potential(pts)
    # exactly: Laplacian G = lambda G - rho_delta (everywhere, core included)
    np.testing.assert_allclose(lap(pts), unit.lam * g - unit.core(pts), rtol=1e-9, atol=1e-9)
    # away from the core lambda-harmonic: the defect rho_delta / (lambda G) is 2e-6 at
    # r = 6 delta and below 1e-12 from r = 12 delta on
    np.testing.assert_allclose(lap(pts[4:5]), unit.lam * unit.potential(pts[4:5]), rtol=3e-6)
    far = pts[5:]
    np.testing.assert_allclose(lap(far), unit.lam * unit.potential(far), rtol=1e-9)


@pytest.mark.parametrize("name", ["screened", "gaussian"])
def test_torus_fourier_series_equals_periodised_plane_potential(el, name):
    unit = el.ScreenedUnit(25.0, 0.02) if name == "screened" else el.GaussianUnit(0.08)
    g = el.torus_potential(unit, (128, 128), 1.0)
    nodes = np.array([[0, 0], [10, 0], [40, 20], [64, 64]])
    images = jnp.array([[i, j] for i in range(-6, 7) for j in range(-6, 7)], dtype=float)
    plane = jnp.sum(unit.potential(jnp.asarray(nodes[:, None, :] / 128.0) + images[None]), axis=-1)
    np.testing.assert_allclose(g[nodes[:, 0], nodes[:, 1]], plane, rtol=1e-10, atol=1e-14)


def test_lattice_features_realise_the_torus_potential(el):
    unit, shape = el.ScreenedUnit(25.0, 0.02), (128, 128)
    m, beta, amp = el.lattice_features(unit, shape, 1.0, jax.random.key(3), 300_000)
    g = el.torus_potential(unit, shape, 1.0)
    w = jnp.array([0.2, 0.7])
    nodes = np.array([[0, 0], [3, 1], [8, 0], [20, 30]])
    theta = jnp.asarray(nodes / 128.0) + w
    prods = el.lattice_unit(theta, m, beta, amp, shape, 1.0) * el.lattice_unit(
        w, m, beta, amp, shape, 1.0)
    mean = jnp.mean(prods, axis=-1)
    err = jnp.std(prods, axis=-1) / math.sqrt(prods.shape[-1])
    z = np.abs(mean - g[nodes[:, 0], nodes[:, 1]]) / err
    assert np.all(z < 4.5), z


def test_energy_is_the_squared_loss_of_the_network(el):
    # Gaussian unit realised by sigma(theta, x) = sqrt(2) cos(omega.theta + beta),
    # omega ~ N(0, I / s^2): E[(f - y)^2] by Monte Carlo against the energy formula.
    unit = el.GaussianUnit(0.7)
    student = el.Charges(jnp.array([0.8, -0.3, 0.5]),
                         jnp.array([[0.1, 0.2], [-0.4, 0.3], [0.5, -0.6]]))
    teacher = el.Charges(jnp.array([1.0, 0.6]), jnp.array([[0.0, 0.0], [0.6, -0.2]]))
    ko, kb = jax.random.split(jax.random.key(4))
    n = 400_000
    omega = jax.random.normal(ko, (n, 2)) / unit.width
    beta = jax.random.uniform(kb, (n,), maxval=2 * jnp.pi)
    sig = lambda p: math.sqrt(2.0) * jnp.cos(p @ omega.T + beta)
    sq = (student.charge @ sig(student.position) - teacher.charge @ sig(teacher.position)) ** 2
    z = abs(float(jnp.mean(sq) - el.energy(student, unit, teacher))) / float(
        jnp.std(sq) / math.sqrt(n))
    assert z < 4.5


# --------------------------------------------------------------------------- Laplacian identity


def test_laplacian_identity_away_from_the_core(el, unit):
    # Laplacian_{theta_i} L = lam a_i dL/da_i - 2 lam a_i^2 G(0) wherever electron i is
    # farther than 6 delta from every other charge (asserted below).
    student = el.Charges(jnp.array([0.7, -0.4, 0.3]),
                         jnp.array([[0.1, 0.35], [-0.25, -0.4], [0.8, 0.5]]))
    teacher = el.Charges(jnp.array([1.0, 0.6]), jnp.array([[-0.5, 0.0], [0.5, 0.0]]))
    pos = np.concatenate([np.asarray(student.position), np.asarray(teacher.position)])
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 9
    assert dist.min() > 6 * unit.delta
    out = el.check_laplacian_identity(unit, student, teacher)
    np.testing.assert_allclose(out["laplacian"], out["rhs"], rtol=1e-11)


def test_laplacian_identity_inside_the_core_needs_the_core_term(el, unit):
    # electron 0 sits 0.03 < delta from proton 0: the plain identity fails, the exact one
    # (with -2 a_i sum_k q_k rho_delta) holds
    student = el.Charges(jnp.array([0.7, 0.3, -0.2]),
                         jnp.array([[-0.47, 0.0], [0.2, 0.4], [0.1, -0.5]]))
    teacher = el.Charges(jnp.array([1.0, 0.6]), jnp.array([[-0.5, 0.0], [0.5, 0.0]]))
    out = el.check_laplacian_identity(unit, student, teacher)
    assert out["relative_residual"] > 0.1
    assert out["relative_residual_with_core"] < 1e-9


# --------------------------------------------------------------------------- dynamics

STEPS = 1500


@pytest.fixture(scope="module")
def teacher(el):
    return el.Charges(jnp.array([1.0, 1.0]), jnp.array([[-0.5, 0.0], [0.5, 0.0]]))


@pytest.fixture(scope="module")
def init(el):
    return el.Charges(jnp.array([0.0, 0.0]), jnp.array([[0.1, 0.3], [-0.05, -0.25]]))


@pytest.fixture(scope="module")
def gauss(el):
    return el.GaussianUnit(1.0)


@pytest.fixture(scope="module")
def nodewise(el, unit, gauss, teacher, init):
    return {name: el.descend_nodewise(init, u, teacher, 0.02, STEPS)[0]
            for name, u in (("screened", unit), ("gaussian", gauss))}


def test_nodewise_screened_electrons_land_on_distinct_protons(nodewise, teacher):
    pos = np.asarray(nodewise["screened"].position)
    protons = np.asarray(teacher.position)
    d = np.linalg.norm(pos[:, None] - protons[None], axis=-1)
    assert d[0].argmin() != d[1].argmin()
    assert d.min(axis=1).max() < 0.02, d


def test_nodewise_gaussian_electron_stops_at_the_midpoint(el, nodewise, gauss, teacher):
    first = el.Charges(nodewise["gaussian"].charge[:1], nodewise["gaussian"].position[:1])
    assert np.linalg.norm(np.asarray(first.position[0])) < 0.02
    # and it is a genuine local minimum of the one-electron loss in (a, theta)
    flat = jnp.concatenate([first.charge, first.position[0]])
    loss = lambda v: el.energy(el.Charges(v[:1], v[1:][None]), gauss, teacher)
    assert np.all(np.linalg.eigvalsh(jax.jit(jax.hessian(loss))(flat)) > 0)


@pytest.mark.parametrize("name", ["screened", "gaussian"])
def test_midpoint_curvature_sign(el, unit, gauss, teacher, name):
    # At the midpoint with the best charge a = V / G(0), dL/da = 0: for the screened unit the
    # identity gives Laplacian_theta L = -2 lam a^2 G(0) < 0 (no minimum); the Gaussian has > 0.
    unit = unit if name == "screened" else gauss
    a = -el.felt_potential(jnp.zeros(2), el.Charges(jnp.zeros(0), jnp.zeros((0, 2))), unit,
                           teacher) / unit.self_energy()
    student = el.Charges(a[None], jnp.zeros((1, 2)))
    lap = float(el.position_laplacians(student, unit, teacher)[0])
    if name == "screened":
        expected = -2 * unit.lam * float(a) ** 2 * float(unit.self_energy())
        np.testing.assert_allclose(lap, expected, rtol=1e-8)
    else:
        assert lap > 0


def test_descend_freezes_inactive_electrons(el, unit, teacher, init):
    active = jnp.array([False, True])
    start = el.Charges(jnp.array([0.5, 0.1]), init.position)
    final, path = el.descend(start, unit, teacher, 0.02, 5, active)
    assert path.position.shape == (6, 2, 2)
    np.testing.assert_array_equal(final.position[0], start.position[0])
    assert float(final.charge[0]) == 0.5 and float(final.charge[1]) != 0.1


# --------------------------------------------------------------------------- recovery

GRID = mj.Grid.from_bounds((128, 128), (0.0, 0.0), (1.0, 1.0), periodic=True)
MOLL = mj.Mollifier(GRID, 0.05, boundary="periodic")


@pytest.fixture(scope="module")
def runit(el):
    return el.ScreenedUnit(25.0, 0.02)


def test_estimate_potential_equals_direct_sum(el, runit):
    teacher = el.Charges(jnp.array([1.0, -0.7]), jnp.array([[0.3, 0.3], [0.7, 0.6]]))
    m, beta, amp, y = el.sample_teacher(teacher, runit, GRID, jax.random.key(0), 500)
    v = el.estimate_potential(m, beta, amp, y, GRID)
    nodes = np.array([[0, 0], [5, 90], [77, 13]])
    theta = jnp.asarray(nodes / 128.0)
    direct = el.lattice_unit(theta, m, beta, amp, GRID.shape, 1.0) @ y / y.shape[0]
    np.testing.assert_allclose(v[nodes[:, 0], nodes[:, 1]], direct, rtol=1e-10, atol=1e-12)


def test_operator_maps_exact_potential_to_unit_charge(el, runit):
    g = el.torus_potential(runit, GRID.shape, 1.0)
    shifted = jnp.roll(g, (40, 90), axis=(0, 1))  # proton at (40 h, 90 h)
    found = el.read_charges(el.source_density(shifted, runit.lam, MOLL), GRID, 0.11)
    assert found.charge.shape == (1,)
    np.testing.assert_allclose(found.charge, 1.0, atol=2e-3)
    np.testing.assert_allclose(found.position[0], [40 / 128, 90 / 128], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_teacher_recovery_from_samples(el, runit, seed):
    kt, ks = jax.random.split(jax.random.key(seed))
    teacher = el.random_teacher(kt, 4, 1.0, 0.25)
    m, beta, amp, y = el.sample_teacher(teacher, runit, GRID, ks, 300_000)
    v = el.estimate_potential(m, beta, amp, y, GRID)
    # the width of eps = "auto", from the sampled potential alone
    (eps, _) = el.recovery_widths(GRID, v)
    assert eps == mj.suggest_eps(GRID, 2, mj.estimate_noise(v))
    density = el.source_density(v, runit.lam, mj.Mollifier(GRID, eps, boundary="periodic"))
    found = el.read_charges(density, GRID, 0.11)
    pos_err, chg_err = el.match_errors(found, teacher, 1.0)
    assert float(pos_err) < 0.03 and float(chg_err) < 0.1


# --------------------------------------------------------------------------- config / errors


@pytest.mark.parametrize(
    ("config", "needle"),
    [({"dynamic": {}}, "'dynamic'"), ({"dynamics": {"step": 3}}, "dynamics.step"),
     ({"recovery": {"samples": "many"}}, "recovery.samples"),
     ({"recovery": {"eps": "automatic"}}, "recovery.eps"),
     ({"recovery": {"eps": -0.05}}, "recovery.eps"),
     ({"recovery": {"eps": True}}, "recovery.eps")],
)
def test_config_errors_name_the_key(el, config, needle):
    with pytest.raises(el.ElectroConfigError, match=needle.replace(".", r"\.")):
        el.electro_config(config)


def test_eps_auto_is_the_default_and_a_number_is_still_accepted(el):
    assert el.ELECTRO_DEFAULTS["recovery"]["eps"] == "auto"
    assert el.electro_config({"recovery": {"eps": "auto"}})["recovery"]["eps"] == "auto"
    assert el.electro_config({"recovery": {"eps": 0.05}})["recovery"]["eps"] == 0.05
    assert el.electro_config({"recovery": {"eps": 1}})["recovery"]["eps"] == 1.0


def test_bad_arguments_raise_named_errors(el):
    with pytest.raises(mj.MollijaxError, match="lam"):
        el.ScreenedUnit(-1.0, 0.05)
    with pytest.raises(mj.MollijaxError, match="position"):
        el.Charges(jnp.ones(2), jnp.ones((3, 2)))
    with pytest.raises(mj.MollijaxError, match="radius"):
        el.read_charges(jnp.zeros(GRID.shape), GRID, 0.5)
