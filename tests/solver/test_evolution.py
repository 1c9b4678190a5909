"""The evolved state: integration accuracy, exact conditions, stiffness, recovery, errors."""

import pathlib

import jax
import numpy as np
import optax
import pytest

import mollijax as mj
from mollijax.config import load_problem

heat1d = load_problem(pathlib.Path(__file__).resolve().parents[2] / "problems" / "heat1d.py")

LBFGS = optax.lbfgs()  # one object: fits reuse their compiled chunks


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _diffusion(s):
    return s.d(s.D * s.d(s.u, "x"), "x")


def _dirichlet():
    return [mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0)]


def _sine_problem(nx, nt, t_final, substeps, d=0.1):
    grid = mj.Grid.from_bounds((nx, nt), (0.0, 0.0), (1.0, t_final), axes=("x", "t"))
    problem = mj.Problem(grid, None, evolution=mj.Evolution(_diffusion, substeps=substeps),
                         conditions=_dirichlet(), data={"u": np.zeros(grid.shape)})
    x = grid.coords("x")
    unknowns = {"u": mj.GridField(np.sin(np.pi * x), "x"), "D": mj.Constant(d)}
    return grid, problem, unknowns


def test_time_integration_is_fourth_order():
    # for sin(pi x) the nested central differences are exact up to their symbol, so the
    # semi-discrete solution is exp(-D (sin(pi h) / h)^2 t) sin(pi x): only RK4 errs
    d, errors = 0.1, []
    for substeps in (1, 2, 4):
        grid, problem, unknowns = _sine_problem(21, 11, 1.0, substeps, d)
        u = np.asarray(problem.grid_values(unknowns)["u"])
        x, t = grid.mesh()
        h = grid.spacing[0]
        exact = np.exp(-d * (np.sin(np.pi * h) / h) ** 2 * t) * np.sin(np.pi * x)
        errors.append(np.abs(u - exact).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 3.7), (errors, orders)


def test_space_discretisation_is_second_order():
    d, errors = 0.1, []
    for nx in (11, 21, 41):
        grid, problem, unknowns = _sine_problem(nx, 11, 1.0, 8, d)
        u = np.asarray(problem.grid_values(unknowns)["u"])
        x, t = grid.mesh()
        errors.append(np.abs(u - np.exp(-d * np.pi**2 * t) * np.sin(np.pi * x)).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.3)), (errors, orders)


def test_conditions_hold_exactly_and_time_axis_may_come_first():
    # the time axis first, a non-zero Dirichlet value, the state still pinned exactly
    grid = mj.Grid.from_bounds((9, 17), (0.0, 0.0), (0.5, 1.0), axes=("t", "x"))
    conds = [mj.Condition("u", {"x": 0}, 0.3), mj.Condition("u", {"x": -1}, -0.2)]
    problem = mj.Problem(grid, None, evolution=mj.Evolution(_diffusion, substeps=4),
                         conditions=conds, data={"u": np.zeros(grid.shape)})
    x = grid.coords("x")
    unknowns = {"u": mj.GridField(np.sin(3 * np.pi * x), "x"), "D": mj.Constant(0.05)}
    u = np.asarray(problem.grid_values(unknowns)["u"])
    assert u.shape == grid.shape
    np.testing.assert_array_equal(u[:, 0], 0.3)
    np.testing.assert_array_equal(u[:, -1], -0.2)
    # the steady state of u_t = D u_xx is the line between the two values: the state
    # moves towards it (its distance to the line shrinks in time)
    line = 0.3 + (-0.5) * x
    dist = np.abs(u - line[None]).max(axis=1)
    assert np.all(np.diff(dist) < 0)
    # a zero initial profile with zero ends stays zero
    unknowns["u"] = mj.GridField(np.zeros_like(x), "x")
    flat = mj.Problem(grid, None, evolution=mj.Evolution(_diffusion, substeps=4),
                      conditions=[mj.Condition("u", {"x": 0}, 0.0)],
                      data={"u": np.zeros(grid.shape)})
    np.testing.assert_array_equal(np.asarray(flat.grid_values(unknowns)["u"]), 0.0)


def test_stiffness_estimate_matches_the_largest_eigenvalue():
    # nested central differences of D u: largest eigenvalue magnitude D / h^2 (checkerboard)
    d = 0.3
    for nx in (21, 41):
        grid, problem, unknowns = _sine_problem(nx, 6, 0.5, None, d)
        evo = problem.evolution
        n = evo.prepare(grid, unknowns, problem.known, _dirichlet()).substeps
        dt, h = grid.spacing[1], grid.spacing[0]
        expected = evo.safety * dt * d / h**2 / 2.78
        assert abs(n - expected) <= 1.0, (n, expected)
        prepared = problem.prepare(unknowns)
        assert prepared.evolution.substeps == n
        u = np.asarray(prepared.grid_values(unknowns)["u"])
        assert np.all(np.isfinite(u)) and np.abs(u).max() <= 1.0 + 1e-12


def test_unprepared_auto_substeps_is_an_error():
    grid, problem, unknowns = _sine_problem(11, 5, 0.5, None)
    with pytest.raises(mj.MollijaxError, match="prepare"):
        problem.evolution.integrate(grid, unknowns, {}, _dirichlet())


@pytest.fixture(scope="module")
def heat41():
    return heat1d.simulate(nx=41, nt=41, noise=0.05, seed=3)


def _fd4(grid):
    return mj.FiniteDifference(grid, accuracy=4)


def _evolved_fit(sim, steps):
    evolution = mj.Evolution(_diffusion, derivatives=_fd4)
    problem = mj.Problem(sim.grid, None, data={"u": sim.data["u"]}, evolution=evolution,
                         conditions=_dirichlet())
    net = mj.MLP(1, width=16, depth=2, key=jax.random.PRNGKey(1))
    unknowns = {"u": mj.GridField(sim.data["u"][:, 0], "x"),
                "D": mj.NetworkField(net, "x", init=0.02, scale=0.01)}
    return mj.fit(problem, unknowns, LBFGS, steps=steps, chunk=steps, progress=False)


def test_evolved_fit_beats_mollified_data_on_the_same_noisy_heat_data(heat41):
    sim = heat41
    m = slice(4, -4)
    result = _evolved_fit(sim, 300)
    assert result.status == mj.Status.completed
    assert result.values["u"].shape == (41,) and result.fields["u"].shape == (41, 41)
    err_evolved = _rel(result.values["D"][m], sim.truth["D"][m])
    # the same D network on the mollified data (residual u_t - (D u_x)_x)
    h = sim.grid.spacing
    moll = mj.Problem(sim.grid, heat1d.residual, data={"u": sim.data["u"]},
                      derivatives=mj.Mollifier(sim.grid, (4 * h[0], 3 * h[1])))
    net = mj.MLP(1, width=16, depth=2, key=jax.random.PRNGKey(1))
    base = mj.fit(moll, {"D": mj.NetworkField(net, "x", init=0.02, scale=0.01)},
                  mj.default_optimiser(1500, 1e-2), steps=1500, chunk=1500, progress=False)
    err_moll = _rel(base.values["D"][m], sim.truth["D"][m])
    assert err_evolved < 0.04, err_evolved
    assert err_evolved < 0.5 * err_moll, (err_evolved, err_moll)
    # the fitted evolution explains the data down to the noise, not below it by much
    noise_var = np.mean((sim.data["u"] - sim.clean["u"]) ** 2)
    assert 0.8 * noise_var < result.history["data:u"][-1] < 1.1 * noise_var


def test_constant_diffusivity_recovered_without_noise():
    sim = heat1d.simulate(nx=61, nt=41, diffusivity="constant")
    problem = mj.Problem(sim.grid, None, data={"u": sim.data["u"]},
                         evolution=mj.Evolution(_diffusion), conditions=_dirichlet())
    unknowns = {"u": mj.GridField(sim.data["u"][:, 0], "x"), "D": mj.Constant(0.03, "positive")}
    result = mj.fit(problem, unknowns, LBFGS, steps=100, chunk=100, progress=False)
    assert abs(float(result.values["D"]) - 0.02) / 0.02 < 1e-2


def test_evolution_errors():
    grid = mj.Grid.from_bounds((11, 6), (0.0, 0.0), (1.0, 1.0), axes=("x", "t"))
    data = {"u": np.zeros(grid.shape)}
    with pytest.raises(mj.MollijaxError, match="time axis 's'"):
        mj.Problem(grid, None, data=data, evolution=mj.Evolution(_diffusion, time="s"))
    with pytest.raises(mj.MollijaxError, match="substeps"):
        mj.Evolution(_diffusion, substeps=0)
    with pytest.raises(mj.MollijaxError, match="not 'autodiff'"):
        mj.Problem(grid, None, data=data, evolution=mj.Evolution(_diffusion),
                   derivatives="autodiff")
    wrong = mj.FiniteDifference(grid)
    with pytest.raises(mj.MollijaxError, match="spatial grid"):
        mj.Problem(grid, None, data=data, evolution=mj.Evolution(_diffusion, derivatives=wrong))
    problem = mj.Problem(grid, None, data=data, evolution=mj.Evolution(_diffusion, substeps=2))
    x = grid.coords("x")
    with pytest.raises(mj.MollijaxError, match="initial values"):
        problem.check({"u": mj.GridField(np.zeros(grid.shape), ("x", "t")), "D": mj.Constant(0.1)})
    with pytest.raises(mj.UnknownFieldError, match="'D'"):
        problem.check({"u": mj.GridField(x, "x")})
    with pytest.raises(mj.MollijaxError, match=r"\['E'\] are never used"):
        problem.check({"u": mj.GridField(x, "x"), "D": mj.Constant(0.1), "E": mj.Constant(1.0)})
    with pytest.raises(mj.UnknownFieldError, match="initial values"):
        problem.check({"D": mj.Constant(0.1)})
    with pytest.raises(mj.MollijaxError, match="rhs"):
        mj.Evolution({})
    with pytest.raises(mj.MollijaxError, match="safety"):
        mj.Evolution(_diffusion, safety=0.5)
    with pytest.raises(mj.MollijaxError, match="both evolved"):
        mj.Problem(grid, None, known={"u": np.zeros(grid.shape)},
                   evolution=mj.Evolution(_diffusion, substeps=2))
    with pytest.raises(mj.KernelTooWideError, match="axis 0"):  # 11 nodes in x
        mj.Problem(grid, None, data=data, evolution=mj.Evolution(
            _diffusion, derivatives=lambda g: mj.Mollifier(g, 0.8)))
    far = mj.Problem(grid, None, data=data, evolution=mj.Evolution(_diffusion, substeps=2),
                     conditions=[mj.Condition("u", {"x": 20}, 0.0)])
    with pytest.raises(mj.GridMismatchError, match="index 20 out of range for axis 'x'"):
        far.check({"u": mj.GridField(x, "x"), "D": mj.Constant(0.1)})


def test_mollifier_in_the_right_hand_side_and_time_dependent_coefficient():
    # a factory builds the differentiator on the spatial grid; a coefficient on (x, t) is read
    # at the start of each interval; u_t = -k(t) u has the solution exp(-int k) u0
    grid = mj.Grid.from_bounds((21, 11), (0.0, 0.0), (1.0, 1.0), axes=("x", "t"))
    evo = mj.Evolution({"u": lambda s: -s.k * s.u + 0.0 * s.d(s.u, "x")}, substeps=1,
                       derivatives=lambda g: mj.Mollifier(g, 3 * g.spacing[0]))
    problem = mj.Problem(grid, None, data={"u": np.zeros(grid.shape)}, evolution=evo)
    x, t = grid.mesh()
    k = 1.0 + 0.0 * x + t
    unknowns = {"u": mj.GridField(np.ones(21), "x"), "k": mj.GridField(k, ("x", "t"))}
    u = np.asarray(problem.grid_values(unknowns)["u"])
    # piecewise-constant k: exact exp(-sum_j k(t_j) dt) up to RK4's error in each interval
    dt = grid.spacing[1]
    steps = np.concatenate([[0.0], np.cumsum(1.0 + grid.coords("t")[:-1]) * dt])
    np.testing.assert_allclose(u[0], np.exp(-steps), rtol=1e-3)


def _tiny():
    grid, problem, unknowns = _sine_problem(21, 11, 1.0, None, 0.1)
    x, t = grid.mesh()
    data = np.exp(-0.2 * np.pi**2 * t) * np.sin(np.pi * x)  # D = 0.2
    problem = mj.Problem(grid, None, data={"u": data}, evolution=problem.evolution,
                         conditions=_dirichlet())
    return problem, {"u": unknowns["u"], "D": mj.Constant(0.1, "positive")}


ADAM = optax.adam(3e-2)


def test_resume_equals_uninterrupted(tmp_path):
    problem, unknowns = _tiny()
    full = mj.fit(problem, unknowns, ADAM, steps=40, chunk=20, progress=False)
    ckpt = tmp_path / "run.ckpt"
    mj.fit(problem, unknowns, ADAM, steps=20, chunk=20, checkpoint=ckpt, progress=False)
    resumed = mj.fit(problem, unknowns, ADAM, steps=40, chunk=20, checkpoint=ckpt, resume=True,
                     progress=False)
    np.testing.assert_allclose(resumed.values["D"], full.values["D"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(resumed.fields["u"], full.fields["u"], rtol=0, atol=1e-12)
    assert full.values["D"] > 0.11  # it moved towards the truth 0.2


def test_batch_items_equal_individual_fits():
    problem, unknowns = _tiny()
    x, t = problem.grid.mesh()
    stack = np.stack([np.exp(-d * np.pi**2 * t) * np.sin(np.pi * x) for d in (0.15, 0.25)])
    batch = mj.fit_batch(problem, {"u": stack}, unknowns, ADAM, steps=30, chunk=30)
    for i in range(2):
        one = mj.Problem(problem.grid, None, data={"u": stack[i]}, evolution=problem.evolution,
                         conditions=_dirichlet())
        single = mj.fit(one, unknowns, ADAM, steps=30, chunk=30, progress=False)
        np.testing.assert_allclose(batch.values["D"][i], single.values["D"], rtol=1e-10)


def test_unstable_integration_stops_with_a_message():
    # one substep is far below the stability limit of D = 3 on this grid: the state blows up,
    # the fit stops as diverged, keeps the (finite) starting point and says what to raise
    grid, _, unknowns = _sine_problem(21, 61, 1.0, 1, 3.0)
    rough = np.random.default_rng(0).standard_normal(21)  # every mode, the unstable ones too
    unknowns["u"] = mj.GridField(rough, "x")
    problem = mj.Problem(grid, None, data={"u": np.zeros(grid.shape)},
                         evolution=mj.Evolution(_diffusion, substeps=1), conditions=_dirichlet())
    result = mj.fit(problem, unknowns, ADAM, steps=5, chunk=5, progress=False)
    assert result.status == mj.Status.diverged and result.steps == 0
    assert "substeps" in result.message
    np.testing.assert_allclose(result.values["D"], 3.0)
