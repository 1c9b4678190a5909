"""`mj.lbfgs`: L-BFGS with one loss evaluation per step (trial points as iterates). Answers
are analytic (Rosenbrock's minimum, a barrier's zero) or from an independent optimiser
(scipy's L-BFGS-B on the same loss)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.optimize import minimize

import mollijax as mj

LBFGS = mj.lbfgs()  # one object: fits reuse its compiled steps


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_rosenbrock_reaches_its_minimum():
    value_and_grad = jax.jit(jax.value_and_grad(_rosenbrock))
    update = jax.jit(lambda g, s, x, v: LBFGS.update(g, s, x, value=v))
    x = jnp.array([-1.2, 1.0, -0.5, 0.3])
    state = LBFGS.init(x)
    values = []
    for _ in range(150):
        v, g = value_and_grad(x)
        u, state = update(g, state, x, v)
        x = x + u
        values.append(float(state.accepted_value))
    np.testing.assert_allclose(state.accepted, np.ones(4), atol=1e-6)
    assert np.all(np.diff(values) <= 0.0)  # the accepted loss never rises


def test_a_non_finite_trial_shrinks_the_step():
    f = jax.value_and_grad(lambda x: jnp.sum((x - 1.0) ** 2))
    x = jnp.zeros(2)
    state = LBFGS.init(x)
    v, g = f(x)
    u, state = LBFGS.update(g, state, x, value=v)  # the start, accepted
    trial = x + u
    step = float(state.step)
    _, g = f(trial)
    u, after = LBFGS.update(g, state, trial, value=jnp.nan)
    assert not bool(after.last_accepted)
    np.testing.assert_array_equal(after.accepted, state.accepted)
    assert float(after.step) == pytest.approx(0.1 * step)
    np.testing.assert_allclose(trial + u, state.accepted + 0.1 * step * state.direction)


def _barrier_problem():
    # r = (u - 1.2) sqrt(1.5 - u): the loss is 0 at u = 1.2 and NaN beyond u = 1.5, and the
    # first (steepest-descent, unit-length) step from u = 1 lands at u = 2
    grid = mj.Grid.from_bounds((8,), (0.0,), (1.0,), axes=("x",))
    problem = mj.Problem(grid, lambda s: (s.u - 1.2) * jnp.sqrt(1.5 - s.u),
                         derivatives=mj.FiniteDifference(grid))
    return problem, {"u": mj.Constant(1.0)}


def test_fit_rejects_non_finite_trials_and_reports_the_accepted_point():
    problem, unknowns = _barrier_problem()
    result = mj.fit(problem, unknowns, LBFGS, steps=60, chunk=20, progress=False)
    assert result.status == mj.Status.completed, result.message
    assert float(result.values["u"]) == pytest.approx(1.2, abs=1e-6)
    total = result.history["total"]
    assert np.all(np.isfinite(total)) and np.all(np.diff(total) <= 0.0)
    # the result is the accepted point: its loss is the reported one
    assert float(problem.loss(result.unknowns)[0]) == pytest.approx(result.final_loss, rel=1e-12)


def test_result_fields_are_those_of_the_accepted_point():
    # the result's values and fields are kept from the evaluation that accepted the point
    # (no integration of their own): they must equal a fresh evaluation at the reported
    # unknowns, also where the last chunks accepted nothing (one-step chunks, a rejection
    # right after the start) and for an evolved state
    problem, unknowns = _barrier_problem()
    result = mj.fit(problem, unknowns, LBFGS, steps=2, chunk=1, progress=False)
    assert float(result.values["u"]) == 1.0  # the start; the second trial (u = 2) is NaN
    np.testing.assert_array_equal(result.fields["u"], problem.grid_values(result.unknowns)["u"])
    assert float(result.values["u"]) == float(result.unknowns["u"].value)
    # ... and the point is the accepted one (its loss is the reported one), not a trial
    assert float(problem.loss(result.unknowns)[0]) == pytest.approx(result.final_loss, rel=1e-12)

    grid = mj.Grid.from_bounds((21, 11), (0.0, 0.0), (1.0, 0.5), axes=("x", "t"))
    x = grid.coords("x")
    data = np.exp(-0.1 * np.pi**2 * grid.coords("t"))[None, :] * np.sin(np.pi * x)[:, None]
    evo = mj.Evolution(lambda s: s.D * s.d(s.u, "xx"), integrator=mj.Propagator())
    problem = mj.Problem(grid, None, data={"u": data}, evolution=evo,
                         conditions=[mj.Condition("u", {"x": 0}, 0.0),
                                     mj.Condition("u", {"x": -1}, 0.0)])
    unknowns = {"u": mj.GridField(data[:, 0], "x"), "D": mj.Constant(0.05)}
    result = mj.fit(problem, unknowns, LBFGS, steps=30, chunk=10, progress=False)
    # the data decay at rate 0.1 pi^2; the 3-point Laplacian's eigenvalue of sin(pi x) is
    # 4 / h^2 sin^2(pi h / 2), so the fitted D is 0.1 pi^2 over it
    h = grid.spacing[0]
    want = 0.1 * np.pi**2 / (4 / h**2 * np.sin(np.pi * h / 2) ** 2)
    assert float(result.values["D"]) == pytest.approx(want, rel=1e-6)
    prepared = problem.prepare(unknowns)
    assert float(prepared.loss(result.unknowns)[0]) == pytest.approx(result.final_loss,
                                                                     rel=1e-10)
    fresh = prepared.grid_values(result.unknowns)
    np.testing.assert_allclose(result.fields["u"], fresh["u"], rtol=0, atol=1e-13)
    np.testing.assert_allclose(result.values["u"], result.unknowns["u"].on_subgrid(grid),
                               rtol=0, atol=0)


def _smoothing():
    grid = mj.Grid.from_bounds((33,), (0.0,), (1.0,), axes=("x",))
    d = np.sin(3 * grid.coords("x")) + 0.1 * np.cos(17 * grid.coords("x"))
    problem = mj.Problem(grid, None, data={"u": d}, regularisers=[mj.Curvature("u", 1e-4)])
    return problem, {"u": mj.GridField(np.zeros(33), "x")}


@pytest.fixture(scope="module")
def smoothing_optimum():
    """The minimiser by scipy's L-BFGS-B on the same loss (an independent optimiser)."""
    problem, unknowns = _smoothing()
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def loss(v):
        return problem.loss(eqx.combine(unravel(v), static))[0]

    vg = jax.jit(jax.value_and_grad(loss))
    out = minimize(lambda v: tuple(np.asarray(a, np.float64) for a in vg(jnp.asarray(v))),
                   np.asarray(flat), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
    return out.x


def test_fit_matches_an_independent_optimiser(smoothing_optimum):
    problem, unknowns = _smoothing()
    result = mj.fit(problem, unknowns, LBFGS, steps=400, chunk=50, tol=1e-12, progress=False)
    assert result.status == mj.Status.completed
    np.testing.assert_allclose(result.values["u"], smoothing_optimum, atol=1e-6)


def test_the_term_history_is_the_accepted_point_s_at_every_step():
    # a chunk's steps before its first acceptance record the accepted point of an earlier
    # chunk, whose terms that chunk did not evaluate: they were NaN ("non-finite steps" in
    # losses.png of a completed run); filled, the weighted terms add up to the recorded
    # total (the accepted loss) at every step, chunk starts included
    problem, unknowns = _smoothing()
    result = mj.fit(problem, unknowns, LBFGS, steps=60, chunk=7, progress=False)
    terms = {k: v for k, v in result.history.items() if k != "total"}
    assert terms and all(np.all(np.isfinite(v)) for v in terms.values())
    np.testing.assert_allclose(terms["data:u"] + 1e-4 * terms["reg:u:curvature"],
                               result.history["total"],
                               rtol=1e-12)


def test_resume_and_batch_equal_one_uninterrupted_fit(tmp_path, smoothing_optimum):
    problem, unknowns = _smoothing()
    full = mj.fit(problem, unknowns, LBFGS, steps=40, chunk=20, progress=False)
    ckpt = tmp_path / "run.ckpt"
    mj.fit(problem, unknowns, LBFGS, steps=20, chunk=20, checkpoint=ckpt, progress=False)
    resumed = mj.fit(problem, unknowns, LBFGS, steps=40, chunk=20, checkpoint=ckpt,
                     resume=True, progress=False)
    np.testing.assert_allclose(resumed.values["u"], full.values["u"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(resumed.history["total"], full.history["total"], rtol=1e-12)
    # a batch of the same data and a scaled copy: each item equals its own single fit
    d = np.asarray(problem.data["u"])
    batch = mj.fit_batch(problem, {"u": np.stack([d, 0.5 * d])}, unknowns, LBFGS, steps=40,
                         chunk=20)
    np.testing.assert_allclose(batch.values["u"][0], full.values["u"], atol=1e-10)
    half = mj.fit(problem.with_data({"u": 0.5 * d}), unknowns, LBFGS, steps=40, chunk=20,
                  progress=False)
    np.testing.assert_allclose(batch.values["u"][1], half.values["u"], atol=1e-10)


def test_the_configuration_name_is_this_optimiser(smoothing_optimum):
    problem, unknowns = _smoothing()
    named = mj.from_name("optimiser", "lbfgs_armijo", steps=400)
    result = mj.fit(problem, unknowns, named, steps=400, chunk=50, tol=1e-12, progress=False)
    np.testing.assert_allclose(result.values["u"], smoothing_optimum, atol=1e-6)
    assert "lbfgs_armijo" in mj.names("optimiser")


def test_bad_memory_size_is_refused():
    for bad in (0, -1, True):
        with pytest.raises(mj.MollijaxError, match="memory_size"):
            mj.lbfgs(bad)
    # an update without the loss at the trial cannot decide: named
    x = jnp.zeros(2)
    with pytest.raises(mj.MollijaxError, match="value="):
        LBFGS.update(jnp.ones(2), LBFGS.init(x), x)
