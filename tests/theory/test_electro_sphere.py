"""Electron dynamics on the sphere: the loss, its gradient and the dynamics against
independent computations (Monte Carlo of the network, autodiff of the arccos closed forms,
the closed-form answer of a one-unit linear teacher)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mollijax as mj

UNITS = ("sign", "relu", "hermite2", "hermite3")


@pytest.fixture(scope="module")
def pair(el):
    """A student and a teacher with k = 3 units in d = 4, charges of both signs."""
    kt, ks, ka = jax.random.split(jax.random.key(3), 3)
    teacher = el.SphereNetwork(jnp.array([1.0, -0.7, 1.3]), el.random_directions(kt, 3, 4))
    student = el.SphereNetwork(jax.random.normal(ka, (3,)), el.random_directions(ks, 3, 4))
    return student, teacher


@pytest.mark.parametrize("name", UNITS)
def test_population_loss_matches_monte_carlo(el, pair, name):
    unit = el.sphere_unit(name)
    student, teacher = pair
    x = jax.random.normal(jax.random.key(7), (200_000, 4))
    sq = (el.network_output(student, unit, x) - el.network_output(teacher, unit, x)) ** 2
    mean, err = float(jnp.mean(sq)), float(jnp.std(sq)) / math.sqrt(x.shape[0])
    exact = float(el.population_loss(student, unit, teacher))
    assert abs(mean - exact) < 4.5 * err, (name, mean, exact, err)


@pytest.mark.parametrize("name", UNITS)
def test_gradient_is_the_tangential_part_of_autodiff_of_the_closed_forms(el, pair, name):
    # Independent formula: the arccos closed forms of _electro_potentials with raw vectors
    # (for ReLU including its |theta| factors), differentiated by autodiff and projected.
    student, teacher = pair
    potentials = {"sign": el.sign_potential, "relu": el.relu_potential,
                  "hermite2": lambda p, q: el.hermite_potential(p, q, 2),
                  "hermite3": lambda p, q: el.hermite_potential(p, q, 3)}
    phi = potentials[name]

    def self_energy(a, p):  # sum_{i != j} a_i a_j phi(p_i, p_j) + diagonal, pair by pair
        i, j = np.triu_indices(a.shape[0], 1)
        diagonal = jnp.sum(p * p, -1) / 2 if name == "relu" else jnp.ones(a.shape[0])
        return 2 * jnp.sum(a[i] * a[j] * phi(p[i], p[j])) + jnp.sum(a * a * diagonal)

    def loss(a, theta):
        w, b = teacher.position, teacher.charge
        p, q = jnp.broadcast_arrays(theta[:, None, :], w[None, :, :])
        cross = a @ phi(p, q) @ b
        return self_energy(a, theta) - 2 * cross + self_energy(b, w)

    theta = student.position
    ga, gt = jax.grad(loss, argnums=(0, 1))(student.charge, theta)
    tangential = gt - jnp.sum(gt * theta, -1, keepdims=True) * theta
    value, g = el.sphere_gradient(student, el.sphere_unit(name), teacher)
    np.testing.assert_allclose(value, loss(student.charge, theta), rtol=1e-12)
    np.testing.assert_allclose(g.charge, ga, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.position, tangential, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(jnp.sum(g.position * theta, -1), 0.0, atol=1e-13)
    if name == "relu":  # the raw ReLU gradient has a radial part, which the projection removes
        assert float(jnp.max(jnp.abs(jnp.sum(gt * theta, -1)))) > 1e-2


@pytest.mark.parametrize("name", UNITS)
def test_the_teacher_is_a_fixed_point(el, pair, name):
    # student = teacher: loss 0 and gradient 0 (for sign the minimal-norm subgradient at the
    # kink); descent stays there, on the sphere
    _, teacher = pair
    unit = el.sphere_unit(name)
    loss, g = el.sphere_gradient(teacher, unit, teacher)
    assert abs(float(loss)) < 1e-14
    assert float(jnp.max(jnp.abs(g.charge))) < 1e-13
    assert float(jnp.max(jnp.abs(g.position))) < 1e-13
    final, losses = el.descend_sphere(teacher, unit, teacher, 0.1, 0.1, 20, every=10)
    np.testing.assert_allclose(final.position, teacher.position, atol=1e-13)
    np.testing.assert_allclose(jnp.linalg.norm(final.position, axis=-1), 1.0, rtol=1e-14)
    # the angle comes from cosines, resolved to sqrt(machine epsilon) ~ 1.5e-8 rad near 0:
    # the smooth potentials see that squared (1e-16), the sign unit's kink sees it linearly
    floor = 1e-7 if name == "sign" else 1e-14
    assert float(jnp.max(jnp.abs(losses))) < floor


def test_descent_stays_on_the_sphere_and_decreases_the_loss(el, pair):
    student, teacher = pair
    unit = el.sphere_unit("relu")
    final, losses = el.descend_sphere(student, unit, teacher, 0.05, 0.05, 200, every=10)
    np.testing.assert_allclose(jnp.linalg.norm(final.position, axis=-1), 1.0, rtol=1e-14)
    assert np.all(np.diff(np.asarray(losses)) <= 1e-15)


def test_hermite1_descent_follows_the_closed_form(el):
    # One He_1 unit (a linear function a theta.x) learning b w.x with the charge frozen at
    # a = b = 1: the loss is 2 - 2 cos(phi) of the angle phi to w; Riemannian gradient flow
    # on the circle through theta and w is phi' = -2 sin(phi), i.e.
    # tan(phi(t) / 2) = tan(phi0 / 2) exp(-2 t). Small steps approach the flow.
    d, phi0, eta, steps = 5, 2.0, 1e-3, 1000
    w = jnp.zeros(d).at[0].set(1.0)
    theta0 = jnp.zeros(d).at[0].set(math.cos(phi0)).at[1].set(math.sin(phi0))
    teacher = el.SphereNetwork(jnp.ones(1), w[None])
    student = el.SphereNetwork(jnp.ones(1), theta0[None])
    final, losses = el.descend_sphere(student, el.HermiteSphere(1), teacher, eta, 0.0, steps,
                                      every=100)
    t = np.arange(losses.shape[0]) * 100 * eta
    phi = 2 * np.arctan(np.tan(phi0 / 2) * np.exp(-2 * t))
    exact = 2 - 2 * np.cos(phi)
    # explicit Euler on the flow: error O(eta), measured 1e-3 relative; a 10 % slower
    # flow would be off by more than 5 %
    np.testing.assert_allclose(np.asarray(losses), exact, rtol=3e-3)
    assert float(jnp.max(jnp.abs(final.position[0, 2:]))) < 1e-15  # stays in the plane


def test_matching_respects_symmetry_and_distinctness(el):
    e = jnp.eye(3)
    teacher = el.SphereNetwork(jnp.ones(2), e[:2])
    flipped = el.SphereNetwork(-jnp.ones(2), -e[:2])
    ok, angles = el.match_teacher(flipped, el.SignSphere(), teacher, 0.05)
    assert bool(ok) and float(jnp.max(angles)) < 1e-12
    ok, angles = el.match_teacher(flipped, el.ReluSphere(), teacher, 0.05)  # relu: no symmetry
    assert not bool(ok) and float(jnp.min(angles)) > 1.5  # pi / 2, to the other unit
    both_on_one = el.SphereNetwork(jnp.ones(2), jnp.stack([e[0], e[0] + 1e-3 * e[1]]))
    ok, _ = el.match_teacher(both_on_one, el.SignSphere(), teacher, 0.05)
    assert not bool(ok)
    # an inactive (padded) unit does not take part
    padded_t = el.SphereNetwork(jnp.array([1.0, 1.0, 0.0]), e)
    padded_s = el.SphereNetwork(jnp.array([1.0, 1.0, 0.0]), jnp.stack([e[1], e[0], -e[2]]))
    ok, _ = el.match_teacher(padded_s, el.ReluSphere(), padded_t, 0.05,
                             active=jnp.array([True, True, False]))
    assert bool(ok)


def test_sgd_on_samples_recovers_a_small_teacher(el):
    # k = 2 ReLU units in d = 4 from a start 0.5 rad away from each teacher unit: SGD on
    # minibatches drives the population loss to the teacher (the sample loss is 0 at the
    # teacher, so the gradient noise vanishes there).
    e = jnp.eye(4)
    teacher = el.SphereNetwork(jnp.array([1.0, 0.8]), e[:2])
    start = el.SphereNetwork(jnp.array([0.5, 0.5]),
                             el.normalise(e[:2] + 0.55 * e[2:]))
    final, losses = el.sgd_sphere(start, el.ReluSphere(), teacher, jax.random.key(0),
                                  el.sphere_sgd(0.3, 0.3), 600, batch=32, every=100)
    assert float(losses[-1]) < 1e-6 * float(losses[0])
    ok, angles = el.match_teacher(final, el.ReluSphere(), teacher, 1e-3)
    assert bool(ok), angles
    np.testing.assert_allclose(jnp.linalg.norm(final.position, axis=-1), 1.0, rtol=1e-14)
    # the same optimiser through optax.sgd on the whole pytree gives the same step
    g = jax.grad(el.sample_loss)(start, el.ReluSphere(), teacher, e)
    mine, _ = el.sphere_sgd(0.3, 0.3).update(g, el.sphere_sgd(0.3, 0.3).init(start))
    ref, _ = optax.sgd(0.3).update(g, optax.sgd(0.3).init(start))
    np.testing.assert_allclose(mine.position, ref.position, rtol=1e-15)


def test_sign_units_get_no_position_gradient_from_samples(el, pair):
    # sign(theta.x) is piecewise constant in theta: the sample gradient in the positions is
    # 0 almost surely, while the population gradient is not
    student, teacher = pair
    x = jax.random.normal(jax.random.key(1), (64, 4))
    g = jax.grad(el.sample_loss)(student, el.SignSphere(), teacher, x)
    assert float(jnp.max(jnp.abs(g.position))) == 0.0
    _, gp = el.sphere_gradient(student, el.SignSphere(), teacher)
    assert float(jnp.max(jnp.abs(gp.position))) > 1e-2


def test_fit_rates_recovers_known_rates(el):
    t = np.arange(10, 500, 10.0)
    lin = el.fit_rates(t, 0.97**t, 1e-9, 1.0)
    assert abs(lin["rho"] - 0.97) < 1e-12 and lin["rho_resid"] < 1e-10
    pw = el.fit_rates(t, 3.0 * t**-0.5, 1e-9, 10.0)
    assert abs(pw["power"] - 0.5) < 1e-12 and pw["power_resid"] < lin["rho_resid"] + 1e-9


def test_bad_input_is_named(el):
    with pytest.raises(mj.MollijaxError, match="position"):
        el.SphereNetwork(jnp.ones(2), jnp.ones((3, 4)))
    with pytest.raises(mj.MollijaxError, match="hermiteM"):
        el.sphere_unit("tanh")
    with pytest.raises(mj.MollijaxError, match="degree"):
        el.HermiteSphere(0)
    with pytest.raises(mj.MollijaxError, match="k <= d"):
        el.orthonormal_directions(jax.random.key(0), 5, 3)
