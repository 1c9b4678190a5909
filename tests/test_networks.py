"""The shipped coordinate networks: shapes, differentiability, and that they can learn."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mollijax as mj

NETWORKS = [mj.MLP, mj.FourierMLP, mj.PirateNet, mj.TransformerPINN]


@pytest.mark.parametrize("cls", NETWORKS, ids=lambda c: c.__name__)
def test_scalar_output_and_smooth_derivatives(cls):
    net = cls(2, key=jax.random.PRNGKey(0))
    x = jnp.array([0.3, -0.2])
    assert net(x).shape == ()
    # jitted: one compile of the whole Hessian instead of one per operation run eagerly (the
    # TransformerPINN's took 7.3 s of CPU eagerly, 1.5 s jitted)
    hess = jax.jit(jax.hessian(net))(x)
    assert hess.shape == (2, 2) and np.all(np.isfinite(hess))
    np.testing.assert_allclose(hess, hess.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", NETWORKS, ids=lambda c: c.__name__)
def test_networks_learn_a_smooth_field(cls):
    grid = mj.Grid.from_bounds((32,), 0.0, 1.0)
    (x,) = grid.mesh()
    target = np.sin(2 * np.pi * x) + 0.3 * x
    problem = mj.Problem(grid, {}, data={"u": target})
    field = mj.NetworkField(cls(1, key=jax.random.PRNGKey(1)), "x")
    result = mj.fit(problem, {"u": field}, optax.adam(3e-3), steps=300, chunk=300,
                    progress=False)
    first, last = result.history["data:u"][0], result.history["data:u"][-1]
    assert last < 0.05 * first, (first, last)
