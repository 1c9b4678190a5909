"""End-to-end fits with known answers, divergence guard, checkpoints and resume."""

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mollijax as mj
from mollijax.config import load_problem

heat1d = load_problem(pathlib.Path(__file__).resolve().parents[2] / "problems" / "heat1d.py")


ADAM = optax.adam(1e-2)  # one object: fits reuse its compiled steps


def _heat(**params):
    sim = heat1d.simulate(**params)
    return sim.grid, sim.clean["u"], sim.truth["D"]


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def heat_data():
    grid, u, d_true = _heat(nx=101, nt=101, t_final=2.0)
    return grid, u, d_true


def _heat_problem(grid, u, eps_steps=4, reg=0.0):
    ex, et = (eps_steps, eps_steps) if np.isscalar(eps_steps) else eps_steps
    moll = mj.Mollifier(grid, (ex * grid.spacing[0], et * grid.spacing[1]))
    regs = [(mj.Regulariser("D", "smooth"), reg)] if reg else []
    return mj.Problem(grid, heat1d.residual, data={"u": u}, derivatives=moll, regularisers=regs)


@pytest.mark.parametrize(
    "noise, eps_steps, reg, tol",
    [(0.0, 3, 0.0, 0.015), (0.05, (7, 8), 3e-3, 0.08)],
)
def test_heat_diffusivity_recovered(heat_data, noise, eps_steps, reg, tol):
    grid, u, d_true = heat_data
    rng = np.random.default_rng(1)
    noisy = u + noise * u.std() * rng.standard_normal(u.shape)
    problem = _heat_problem(grid, noisy, eps_steps, reg)
    unknowns = {"D": mj.GridField(np.full(grid.shape[0], 0.03), "x")}
    result = mj.fit(problem, unknowns, mj.default_optimiser(1500, 1e-3), steps=1500, chunk=500,
                    progress=False)
    assert result.status == mj.Status.completed
    interior = slice(10, -10)
    err = _rel(result.values["D"][interior], d_true[interior])
    start_err = _rel(np.full_like(d_true, 0.03)[interior], d_true[interior])
    assert err < tol, err
    assert err < 0.25 * start_err


def test_constant_diffusivity_to_one_percent():
    grid, u, _ = _heat(nx=61, nt=61, diffusivity=lambda x: 0.03 + 0 * x)
    problem = _heat_problem(grid, u, eps_steps=3)
    result = mj.fit(problem, {"D": mj.Constant(0.01, "positive")},
                    mj.default_optimiser(800, 3e-2), steps=800, chunk=400, progress=False)
    d = float(result.values["D"])
    assert abs(d - 0.03) / 0.03 < 1e-2, d


def test_negative_diffusivity_backward_heat():
    # forward data reversed in time satisfies u_t = -D u_xx
    grid, u, _ = _heat(nx=61, nt=61, diffusivity=lambda x: 0.02 + 0 * x)
    problem = _heat_problem(grid, u[:, ::-1].copy(), eps_steps=3)
    result = mj.fit(problem, {"D": mj.Constant(0.01)}, mj.default_optimiser(800, 3e-2),
                    steps=800, chunk=400, progress=False)
    d = float(result.values["D"])
    assert abs(d + 0.02) / 0.02 < 2e-2, d


def _small_problem():
    grid = mj.Grid.from_bounds((24,), 0.0, 1.0)
    (x,) = grid.mesh()
    data = np.sin(np.pi * x)
    problem = mj.Problem(grid, lambda s: s.d(s.u, "xx") + s.k * s.u, data={"u": data},
                         derivatives=mj.Mollifier(grid, 4 * grid.spacing[0]))
    unknowns = {"u": mj.NetworkField(mj.MLP(1, width=8, depth=2, key=jax.random.PRNGKey(0)), "x"),
                "k": mj.Constant(1.0)}
    return problem, unknowns


def test_resume_equals_uninterrupted(tmp_path):
    problem, unknowns = _small_problem()
    opt = ADAM
    full = mj.fit(problem, unknowns, opt, steps=60, chunk=20, progress=False)
    ckpt = tmp_path / "run.ckpt"
    half = mj.fit(problem, unknowns, opt, steps=40, chunk=20, checkpoint=ckpt, progress=False)
    assert half.steps == 40 and ckpt.exists()
    resumed = mj.fit(problem, unknowns, opt, steps=60, chunk=20, checkpoint=ckpt, resume=True,
                     progress=False)
    assert resumed.steps == 60
    np.testing.assert_allclose(resumed.values["k"], full.values["k"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(resumed.fields["u"], full.fields["u"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(resumed.history["total"], full.history["total"], rtol=1e-12)


def test_quick_compile_switch_computes_the_same_fit(monkeypatch):
    # small grids compile their training chunk with XLA's optimisation level 0; the
    # environment variable sets the largest such grid (0: never), and a bad value is named
    problem, unknowns = _small_problem()
    quick = mj.fit(problem, unknowns, ADAM, steps=20, chunk=20, progress=False)
    monkeypatch.setenv("MOLLIJAX_QUICK_COMPILE_MAX_NODES", "0")
    full = mj.fit(problem, unknowns, ADAM, steps=20, chunk=20, progress=False)
    np.testing.assert_allclose(full.values["k"], quick.values["k"], rtol=1e-10)
    np.testing.assert_allclose(full.history["total"], quick.history["total"], rtol=1e-10)
    monkeypatch.setenv("MOLLIJAX_QUICK_COMPILE_MAX_NODES", "many")
    with pytest.raises(mj.MollijaxError, match="MOLLIJAX_QUICK_COMPILE_MAX_NODES='many'"):
        mj.fit(problem, unknowns, ADAM, steps=20, chunk=20, progress=False)


def test_interrupt_keeps_state_and_resumes(tmp_path):
    problem, unknowns = _small_problem()
    opt = ADAM
    ckpt = tmp_path / "run.ckpt"

    def stop(step, terms):
        if step >= 40:
            raise KeyboardInterrupt

    cut = mj.fit(problem, unknowns, opt, steps=60, chunk=20, checkpoint=ckpt, callback=stop,
                 progress=False)
    assert cut.status == mj.Status.interrupted and cut.steps == 40
    resumed = mj.fit(problem, unknowns, opt, steps=60, chunk=20, checkpoint=ckpt, resume=True,
                     progress=False)
    full = mj.fit(problem, unknowns, opt, steps=60, chunk=20, progress=False)
    np.testing.assert_allclose(resumed.values["k"], full.values["k"], atol=1e-12)


def test_divergence_returns_last_finite_parameters(tmp_path):
    grid = mj.Grid.from_bounds((16,), 0.0, 1.0)
    data = np.linspace(1.0, 2.0, 16)
    # plain gradient descent on c^2 * mean(u^2) with a step far beyond 1 / curvature grows c
    # geometrically until the loss overflows to inf
    problem = mj.Problem(grid, lambda s: s.c * s.u, data={"u": data},
                         derivatives=mj.Mollifier(grid, 3 * grid.spacing[0]))
    unknowns = {"c": mj.Constant(3.0)}
    ckpt = tmp_path / "div.ckpt"
    result = mj.fit(problem, unknowns, optax.sgd(1e5), steps=200, chunk=10, checkpoint=ckpt,
                    progress=False)
    assert result.status == mj.Status.diverged
    assert "diverged" in result.message and 10 < result.steps < 200
    assert np.isfinite(result.values["c"])
    # replay the steps by hand: the returned value is the last iterate with a finite loss
    def loss_at(v):
        c_field = eqx.tree_at(lambda f: f.raw, unknowns["c"], jnp.asarray(v))
        return problem.loss({"c": c_field})[0]

    c, seen = 3.0, [3.0]
    for _ in range(result.steps):
        c = float(c - 1e5 * jax.grad(loss_at)(c))
        seen.append(c)
    np.testing.assert_allclose(float(result.values["c"]), seen[-1], rtol=1e-10)
    assert np.isfinite(loss_at(seen[-1]))
    next_c = seen[-1] - 1e5 * float(jax.grad(loss_at)(seen[-1]))
    assert not np.isfinite(loss_at(next_c))
    assert len(result.history["total"]) == result.steps
    header = mj._checkpoint.read_header(ckpt)
    assert header["status"] == "diverged" and header["step"] == result.steps


def test_result_save_load_roundtrip(tmp_path):
    problem, unknowns = _small_problem()
    result = mj.fit(problem, unknowns, ADAM, steps=20, chunk=10, progress=False)
    path = result.save(tmp_path / "result.mjx")
    back = mj.FitResult.load(path, like=unknowns)
    assert back.status == result.status and back.steps == result.steps
    np.testing.assert_array_equal(back.fields["u"], result.fields["u"])
    np.testing.assert_array_equal(back.history["total"], result.history["total"])
    leaves = lambda t: jax.tree_util.tree_leaves(eqx.filter(t, eqx.is_array))
    for a, b in zip(leaves(back.unknowns), leaves(result.unknowns), strict=True):
        np.testing.assert_array_equal(a, b)
    arrays_only = mj.FitResult.load(path)
    assert arrays_only.unknowns is None
    np.testing.assert_array_equal(arrays_only.values["k"], result.values["k"])


def test_lbfgs_beats_adam_at_equal_steps():
    problem, unknowns = _small_problem()
    lbfgs = mj.fit(problem, unknowns, optax.lbfgs(), steps=20, chunk=20, progress=False)
    adam = mj.fit(problem, unknowns, ADAM, steps=20, chunk=20, progress=False)
    assert lbfgs.status == mj.Status.completed
    assert lbfgs.history["total"][-1] < adam.history["total"][-1] < adam.history["total"][0]


def test_gradnorm_weights_balance_terms():
    problem, unknowns = _small_problem()
    result = mj.fit(problem, unknowns, ADAM, steps=20, chunk=10, adaptive="gradnorm",
                    progress=False)
    assert result.status == mj.Status.completed
    assert np.all(np.isfinite(result.history["total"]))
    # the weighted total differs from the plain sum once the weights move off 1
    plain = result.history["data:u"] + result.history["residual:pde"]
    assert not np.allclose(result.history["total"][10:], plain[10:])


def _quadratic():
    # a quadratic loss: a grid field fitted to data with a smoothness penalty (minimum known
    # in closed form: (I + w L) u = d, L the H1 penalty's normal matrix)
    grid = mj.Grid.from_bounds((33,), (0.0,), (1.0,), axes=("x",))
    d = np.sin(3 * grid.coords("x"))
    problem = mj.Problem(grid, None, data={"u": d}, regularisers=[mj.H1("u", 1e-3)])
    return problem, {"u": mj.GridField(np.zeros(33), "x")}


def test_tol_stops_a_converged_fit_early(tmp_path):
    problem, unknowns = _quadratic()
    lbfgs = optax.lbfgs()
    result = mj.fit(problem, unknowns, lbfgs, steps=1000, chunk=10, tol=1e-9, progress=False,
                    checkpoint=tmp_path / "c.mjx")
    assert result.status == mj.Status.completed
    assert result.steps < 100 and result.steps % 10 == 0  # decided per chunk
    assert result.message.startswith(f"converged at step {result.steps} (relative loss change")
    assert "gradient norm" in result.message
    assert result.history["total"].shape == (result.steps,)
    full = mj.fit(problem, unknowns, lbfgs, steps=result.steps + 20, chunk=10, progress=False)
    assert full.message == f"completed {result.steps + 20} steps"  # tol=None: every step
    np.testing.assert_allclose(result.values["u"], full.values["u"], atol=1e-9)
    # a resumed converged run stays converged (no further steps)
    again = mj.fit(problem, unknowns, lbfgs, steps=1000, chunk=10, tol=1e-9, progress=False,
                   checkpoint=tmp_path / "c.mjx", resume=True)
    assert again.steps == result.steps and again.message == result.message
    # a tolerance that no chunk meets runs to the cap
    capped = mj.fit(problem, unknowns, ADAM, steps=30, chunk=10, tol=1e-300, progress=False)
    assert capped.steps == 30 and capped.message == (
        "stopped at the step cap (30 steps) before meeting tol 1e-300: not converged")
    for bad in (0.0, -1e-9, float("nan"), float("inf")):
        with pytest.raises(mj.MollijaxError, match="`tol` must be None or a finite number > 0"):
            mj.fit(problem, unknowns, lbfgs, steps=10, tol=bad, progress=False)


def test_tol_stops_a_converged_batch_early():
    # the same test over a batch: every item converges, the batch stops at one chunk
    # boundary, and each item equals its own single fit stopped there
    problem, unknowns = _quadratic()
    lbfgs = optax.lbfgs()
    d = np.asarray(problem.data["u"])
    stack = np.stack([d, 0.5 * d, d + 0.1])
    batch = mj.fit_batch(problem, {"u": stack}, unknowns, lbfgs, steps=1000, chunk=10, tol=1e-9)
    assert list(batch.status) == ["completed"] * 3
    stop = int(batch.steps[0])
    assert stop < 100 and stop % 10 == 0 and (batch.steps == stop).all()
    assert f"converged at step {stop}" in batch.message
    for b in range(3):
        single = mj.fit(problem.with_data({"u": stack[b]}), unknowns, lbfgs, steps=stop,
                        chunk=10, progress=False)
        np.testing.assert_allclose(batch.values["u"][b], single.values["u"], atol=1e-9)
