"""The Propagator integrator: exact on a linear evolution (against scipy's expm of the
semi-discrete system, independently built), gradients agree with a fine RK4, and it hands
over to its fallback where it does not apply (nonlinear, time-dependent, too large)."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import mollijax as mj

NX, NT, T, D = 21, 11, 0.5, 0.1
GRID = mj.Grid.from_bounds((NX, NT), (0.0, 0.0), (1.0, T), axes=("x", "t"))
DIRICHLET = (mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 1.0))


def _initial():
    u0 = np.random.default_rng(0).standard_normal(NX)
    u0[0], u0[-1] = 0.0, 1.0
    return u0


def _unknowns(d=D):
    return {"u": mj.GridField(_initial(), "x"), "D": mj.Constant(d)}


def _prepare(rhs, integrator, unknowns=None, known=None):
    evo = mj.Evolution(rhs, integrator=integrator)
    return evo.prepare(GRID, _unknowns() if unknowns is None else unknowns, known or {},
                       DIRICHLET)


def test_exact_on_heat_with_a_source_and_inhomogeneous_ends():
    # u_t = D u_xx + 1 with u(0) = 0, u(1) = 1 and the 3-point second difference: on the
    # interior u' = A u + c, c = D / h^2 e_last + 1, so u(t) = expm(tA) u0 + A^-1 (expm(tA) - I) c
    rhs = lambda s: s.D * s.d(s.u, "xx") + 1.0  # noqa: E731
    evo = _prepare(rhs, mj.Propagator())
    assert isinstance(evo.integrator, mj.Propagator)
    got = np.asarray(eqx.filter_jit(lambda u: evo.integrate(GRID, u, {}, DIRICHLET)["u"])(
        _unknowns()))
    h, m = GRID.spacing[0], NX - 2
    a = D / h**2 * (np.diag(-2.0 * np.ones(m)) + np.diag(np.ones(m - 1), 1)
                    + np.diag(np.ones(m - 1), -1))
    c = np.ones(m)
    c[-1] += D / h**2
    u0 = _initial()[1:-1]
    for k, t in enumerate(GRID.coords("t")):
        e = scipy.linalg.expm(t * a)
        want = e @ u0 + np.linalg.solve(a, (e - np.eye(m)) @ c)
        np.testing.assert_allclose(got[1:-1, k], want, rtol=0, atol=1e-11)
        assert got[0, k] == 0.0 and got[-1, k] == 1.0


def test_gradient_matches_a_fine_rk4():
    rhs = lambda s: s.D * s.d(s.u, "xx")  # noqa: E731
    target = jnp.asarray(np.random.default_rng(1).standard_normal(GRID.shape))

    def loss_of(integrator):
        evo = _prepare(rhs, integrator)

        @eqx.filter_jit
        @eqx.filter_value_and_grad
        def loss(unknowns):
            u = evo.integrate(GRID, unknowns, {}, DIRICHLET)["u"]
            return jnp.sum((u - target) ** 2)

        value, grads = loss(_unknowns())
        return value, grads["D"].raw, grads["u"].raw

    (v_p, d_p, u_p), (v_r, d_r, u_r) = loss_of(mj.Propagator()), loss_of(mj.RK4(substeps=64))
    np.testing.assert_allclose(v_p, v_r, rtol=1e-8)
    np.testing.assert_allclose(d_p, d_r, rtol=1e-7)
    # RK4 with tau = dt / 64 still differs by ~1e-8 of the largest gradient entry
    np.testing.assert_allclose(u_p, u_r, rtol=0, atol=1e-8 * np.abs(u_r).max())


@pytest.mark.parametrize("case", ["nonlinear", "zero nonlinear coefficient", "time", "size"])
def test_falls_back_where_it_does_not_apply(case):
    unknowns, known, limit = _unknowns(), {}, 4096
    if case == "nonlinear":
        rhs = lambda s: s.D * s.d(s.u, "xx") + s.u**2  # noqa: E731
    elif case == "zero nonlinear coefficient":
        rhs = lambda s: s.D * s.d(s.u, "xx") + s.c * s.u**2  # noqa: E731
        unknowns["c"] = mj.Constant(0.0)
    elif case == "time":
        rhs = lambda s: s.D * s.d(s.u, "xx") + s.f  # noqa: E731
        known = {"f": np.broadcast_to(GRID.coords("t"), GRID.shape).copy()}
    else:
        rhs, limit = (lambda s: s.D * s.d(s.u, "xx")), NX - 1
    evo = _prepare(rhs, mj.Propagator(fallback=mj.RK4(substeps=3), max_nodes=limit), unknowns,
                   known)
    assert evo.integrator == mj.RK4(substeps=3)


def test_propagator_refuses_a_bad_fallback_and_an_unprepared_call():
    with pytest.raises(mj.MollijaxError, match="fallback"):
        mj.Propagator(fallback="rk4")
    with pytest.raises(mj.MollijaxError, match="max_nodes"):
        mj.Propagator(max_nodes=0)
    with pytest.raises(mj.MollijaxError, match="squarings"):
        mj.Propagator(squarings=-1)
    evo = mj.Evolution(lambda s: s.D * s.d(s.u, "xx"), integrator=mj.Propagator())
    with pytest.raises(mj.MollijaxError, match="prepare"):
        evo.integrate(GRID, _unknowns(), {}, DIRICHLET)
