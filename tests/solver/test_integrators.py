"""Integrators of an Evolution: RK4 and Diffrax against the exact semi-discrete solution,
orders, per-interval coefficients, exact conditions, gradients, failures, interface."""

import json

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import mollijax as mj
from mollijax import RK4, AbstractIntegrator, Diffrax

# u_t = D u_xx on [0, 1] x [0, 0.5], zero Dirichlet ends, a rough initial profile (every mode,
# the stiff ones too): with the 3-point second difference the semi-discrete system on the
# interior nodes is u' = A u, A = D / h^2 tridiag(1, -2, 1), solved by u(t) = expm(t A) u(0).
NX, NT, T, D = 21, 11, 0.5, 0.1
GRID = mj.Grid.from_bounds((NX, NT), (0.0, 0.0), (1.0, T), axes=("x", "t"))
DIRICHLET = (mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0))
TIGHT = Diffrax(rtol=1e-10, atol=1e-12)


def _heat(s):
    return s.D * s.d(s.u, "xx")


def _initial():
    u0 = np.random.default_rng(0).standard_normal(NX)
    u0[0] = u0[-1] = 0.0
    return u0


def _unknowns(d=D):
    return {"u": mj.GridField(_initial(), "x"), "D": mj.Constant(d)}


@pytest.fixture(scope="module")
def exact():
    h = GRID.spacing[0]
    m = NX - 2
    a = D / h**2 * (np.diag(-2.0 * np.ones(m)) + np.diag(np.ones(m - 1), 1)
                    + np.diag(np.ones(m - 1), -1))
    out = np.zeros(GRID.shape)
    for k, t in enumerate(GRID.coords("t")):
        out[1:-1, k] = scipy.linalg.expm(t * a) @ _initial()[1:-1]
    return out


def _integrate(integrator, unknowns=None, grid=GRID, conditions=DIRICHLET, rhs=_heat):
    """`(prepared evolution, u on the grid, jitted unknowns -> u)`."""
    evo = mj.Evolution(rhs, integrator=integrator)
    unknowns = _unknowns() if unknowns is None else unknowns
    evo = evo.prepare(grid, unknowns, {}, conditions)
    run = eqx.filter_jit(lambda u: evo.integrate(grid, u, {}, conditions)["u"])
    return evo, np.asarray(run(unknowns)), run


# (integrator, bound on the max error relative to max |u|); measured: 1.7e-6, 4e-8, 2e-12, 3e-11
ACCURATE = [
    (RK4(16), 5e-6),
    (Diffrax(), 1e-6),
    (TIGHT, 1e-10),
    (Diffrax(diffrax.Kvaerno5(), rtol=1e-10, atol=1e-12), 1e-9),  # implicit, L-stable
]


@pytest.mark.parametrize("integrator, bound", ACCURATE,
                         ids=["rk4", "tsit5", "tsit5-tight", "kvaerno5"])
def test_integrators_match_the_matrix_exponential(integrator, bound, exact):
    _, u, run = _integrate(integrator)
    err = np.abs(u - exact).max() / np.abs(exact).max()
    assert err < bound, err
    np.testing.assert_array_equal(u[[0, -1]], 0.0)  # pinned exactly
    # the comparison can fail: a diffusivity 1 % off is far outside every bound
    off = np.asarray(run(_unknowns(1.01 * D)))
    assert np.abs(off - exact).max() / np.abs(exact).max() > 100 * bound


def test_fixed_step_diffrax_converges_at_the_solver_order(exact):
    # explicit Euler, dt0 = dt/8 and dt/16 (stable: tau * 4 D / h^2 <= 1): first order
    dt = GRID.spacing[1]
    errors = [np.abs(_integrate(Diffrax(diffrax.Euler(), dt0=dt / n))[1] - exact).max()
              for n in (8, 16)]
    order = np.log2(errors[0] / errors[1])
    assert 0.9 < order < 1.1, (errors, order)


def test_rk4_converges_at_fourth_order(exact):
    # substeps 32 and 64 (in the asymptotic range: measured order 4.52, 4.24, 4.12 from 8 to
    # 64): a wrong stage weight or offset of the tableau drops the order to 1 or 2
    errors = [np.abs(_integrate(RK4(n))[1] - exact).max() for n in (32, 64)]
    order = np.log2(errors[0] / errors[1])
    assert 3.8 < order < 4.3, (errors, order)


def test_time_dependent_coefficient_is_read_per_interval_and_conditions_hold():
    # time axis first, u_t = -k(t) u with k(t_j) held on [t_j, t_{j+1}]: the semi-discrete
    # solution is exp(-sum_j k(t_j) dt) exactly; the node x = 0 is pinned at 0.3
    grid = mj.Grid.from_bounds((11, 9), (0.0, 0.0), (1.0, 1.0), axes=("t", "x"))
    t, x = grid.mesh()
    unknowns = {"u": mj.GridField(np.ones(9), "x"),
                "k": mj.GridField(1.0 + t + 0.0 * x, ("t", "x"))}
    cond = (mj.Condition("u", {"x": 0}, 0.3),)
    _, u, _ = _integrate(TIGHT, unknowns, grid, cond, lambda s: -s.k * s.u + 0.0 * s.d(s.u, "x"))
    assert u.shape == grid.shape
    dt = grid.spacing[0]
    steps = np.concatenate([[0.0], np.cumsum(1.0 + grid.coords("t")[:-1]) * dt])
    np.testing.assert_allclose(u[:, 1:], np.exp(-steps)[:, None] * np.ones((1, 8)), rtol=1e-9)
    np.testing.assert_array_equal(u[:, 0], 0.3)


@pytest.fixture(scope="module")
def loss_and_grad():
    weights = np.cos(np.arange(NX * NT)).reshape(GRID.shape)
    out = {}
    for name, integrator in (("rk4", RK4(16)), ("diffrax", TIGHT)):
        evo = mj.Evolution(_heat, integrator=integrator)

        def loss(unknowns, evo=evo):
            return jnp.sum(weights * evo.integrate(GRID, unknowns, {}, DIRICHLET)["u"])

        out[name] = eqx.filter_jit(loss), eqx.filter_jit(eqx.filter_grad(loss))
    return out


def test_gradient_through_diffrax_matches_central_differences(loss_and_grad):
    loss, grad = loss_and_grad["diffrax"]
    unknowns = _unknowns()
    g = grad(unknowns)
    e = 1e-5

    def central(where, direction):
        plus = eqx.tree_at(where, unknowns, where(unknowns) + e * direction)
        minus = eqx.tree_at(where, unknowns, where(unknowns) - e * direction)
        return (float(loss(plus)) - float(loss(minus))) / (2 * e)

    def d_raw(u):
        return u["D"].raw

    def u_raw(u):
        return u["u"].raw

    fd = central(d_raw, jnp.asarray(1.0))
    np.testing.assert_allclose(float(g["D"].raw), fd, rtol=1e-6)  # measured 2e-8
    v = jnp.asarray(np.random.default_rng(1).standard_normal(NX))
    np.testing.assert_allclose(float(jnp.vdot(g["u"].raw, v)), central(u_raw, v), rtol=1e-6)
    # the RK4 gradient is the derivative of another discretisation of the same system
    g_rk4 = loss_and_grad["rk4"][1](unknowns)
    np.testing.assert_allclose(float(g_rk4["D"].raw), float(g["D"].raw), rtol=1e-4)


def test_too_few_max_steps_give_nan_and_a_diverged_fit():
    # the stiff modes need more than two Tsit5 steps per interval: the solve fails, and the
    # state is NaN from the failed interval on instead of an unfinished (silently wrong) one
    starved = Diffrax(max_steps=2)
    _, u, _ = _integrate(starved)
    assert np.all(np.isfinite(u[:, 0]))
    bad = ~np.all(np.isfinite(u), axis=0)
    assert bad.any() and np.all(np.diff(bad.astype(int)) >= 0), bad
    evolution = mj.Evolution(_heat, integrator=starved)
    assert "max_steps" in evolution.divergence_hint()
    problem = mj.Problem(GRID, None, data={"u": np.zeros(GRID.shape)}, evolution=evolution,
                         conditions=DIRICHLET)
    result = mj.fit(problem, _unknowns(), optax.adam(1e-2), steps=2, chunk=2, progress=False)
    assert result.status == mj.Status.diverged and result.steps == 0
    assert evolution.divergence_hint() in result.message


def test_evolution_interface_and_shorthand():
    rk4 = mj.Evolution(_heat)
    assert rk4.integrator == RK4() and rk4.substeps is None and rk4.safety == 2.0
    assert mj.Evolution(_heat, substeps=3, safety=4.0).integrator == RK4(3, 4.0)
    assert rk4.names == ("u",) and rk4.time == "t"
    rk4.check_grid(GRID)
    prepared = rk4.prepare(GRID, _unknowns(), {}, DIRICHLET)
    n = prepared.substeps
    # the stiffness estimate: |lambda| ~ 4 D / h^2, substeps = ceil(2 dt |lambda| / 2.78)
    h, dt = GRID.spacing
    assert abs(n - 2.0 * dt * 4 * D / h**2 / 2.78) <= 1.0, n
    assert prepared.prepare(GRID, _unknowns(), {}, DIRICHLET) is prepared
    assert rk4.with_integrator(RK4(5)).substeps == 5
    assert rk4.traceable().substeps == 1 and prepared.traceable() is prepared
    assert "substeps" in prepared.divergence_hint() and str(n) in prepared.divergence_hint()
    meta = prepared.describe(GRID)
    assert meta["integrator"] == "RK4" and meta["substeps"] == n and meta["fields"] == ["u"]

    dfx = mj.Evolution(_heat, integrator=Diffrax(rtol=1e-7))
    assert isinstance(dfx.integrator, AbstractIntegrator) and dfx.substeps is None
    assert dfx.prepare(GRID, _unknowns(), {}, DIRICHLET) is dfx
    assert dfx.traceable() is dfx
    meta = json.loads(json.dumps(dfx.describe(GRID)))
    assert meta["integrator"] == "Diffrax" and meta["solver"] == "Tsit5"
    assert meta["rtol"] == 1e-7 and meta["adjoint"] == "RecursiveCheckpointAdjoint"
    # equal settings, equal (hashable, static) evolutions: a fit's compiled chunks are reused
    again = mj.Evolution(_heat, integrator=Diffrax(rtol=1e-7))
    assert again == dfx and hash(again) == hash(dfx)
    assert mj.Evolution(_heat, integrator=Diffrax(rtol=1e-8)) != dfx


def test_integrator_errors():
    with pytest.raises(mj.MollijaxError, match="either `integrator` or"):
        mj.Evolution(_heat, integrator=Diffrax(), substeps=4)
    # (with runtime type checking on, as in these tests, the annotation refuses it first)
    with pytest.raises((mj.MollijaxError, TypeError), match="integrator"):
        mj.Evolution(_heat, integrator="rk4")
    with pytest.raises(mj.MollijaxError, match="substeps"):
        RK4(0)
    with pytest.raises(mj.MollijaxError, match="safety"):
        RK4(safety=0.9)
    with pytest.raises(mj.MollijaxError, match="Euler needs `dt0`"):
        Diffrax(diffrax.Euler())
    with pytest.raises(mj.MollijaxError, match="max_steps"):
        Diffrax(max_steps=0)
    with pytest.raises(mj.MollijaxError, match="diffrax solver"):
        Diffrax("tsit5")
    with pytest.raises(mj.MollijaxError, match="rtol"):
        Diffrax(rtol=0.0)
    with pytest.raises(mj.MollijaxError, match="prepare"):
        mj.Evolution(_heat).integrate(GRID, _unknowns(), {}, DIRICHLET)
