"""Sharding and tiling: sharded results equal unsharded ones to round-off.

The multi-device checks run `sharding_script.py` in a subprocess with 4 host CPU devices
(`XLA_FLAGS` must be set before jax starts); the tiling checks run in this process.
"""

import json
import os
import pathlib
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from xla_flags import QUICK

import mollijax as mj
from mollijax import batch_mesh, evaluate_tiled, sharded_derivatives

SCRIPT = pathlib.Path(__file__).with_name("sharding_script.py")


def _run_script(*cases: str) -> dict:
    # compiled without LLVM's optimisations, as in the suite's workers (tests/conftest.py): the
    # script is mostly compiling (22 s -> 13 s); the differences stay at round-off (~1e-15)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {QUICK}")
    proc = subprocess.run([sys.executable, str(SCRIPT), *cases], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def split_runs():
    # both cases in one subprocess: jax, mollijax and the 4 host devices start once (the
    # separate runs' startup was about a third of the batch case's time)
    out = _run_script("grid", "batch")
    assert sorted(out) == ["batch", "grid"]
    return out


@pytest.fixture(scope="module")
def grid_split(split_runs):
    return split_runs["grid"]


@pytest.fixture(scope="module")
def batch_split(split_runs):
    return split_runs["batch"]


def test_grid_split_with_halos_equals_unsharded(grid_split):
    assert grid_split["devices"] == 4
    assert grid_split["shards"] == [4]  # the outputs really live on 4 devices
    assert len(grid_split["errors"]) == 12
    for key, err in grid_split["errors"].items():
        assert err < 1e-13, (key, err)


def test_grid_split_gradient_and_problem(grid_split):
    for key, err in grid_split["grads"].items():
        assert err < 1e-13, (key, err)
    assert grid_split["problem_loss"] < 1e-13
    assert grid_split["problem_grad"] < 1e-12


def test_batch_split_equals_unsharded(batch_split):
    assert batch_split["devices"] == 4
    assert batch_split["stack_shards"] == 4 and batch_split["shard_rows"] == [2]
    expected = ["completed", "completed", "diverged", "completed", "completed", "completed"]
    assert batch_split["status_plain"] == expected
    assert batch_split["status_split"] == expected
    assert batch_split["steps_split"] == batch_split["steps_plain"]
    assert batch_split["steps_plain"][2] < 120
    assert batch_split["values"] < 1e-13
    assert batch_split["diverged_values"] < 1e-13
    assert batch_split["history"] < 1e-13


# ----------------------------------------------------------------------------- one device


def test_sharded_derivatives_on_one_device_is_exact():
    # the halo exchange on a 1-device mesh sends each slab to itself: periodic wraps, other
    # modes take the outer padding
    grid = mj.Grid.from_bounds((32, 20), 0.0, 1.0)
    u = np.random.default_rng(3).standard_normal(grid.shape)
    mesh = batch_mesh(1, "grid")
    for boundary in ("periodic", "linear"):
        D = mj.Mollifier(grid, 3 * grid.spacing[0], boundary=boundary, method="direct")
        out = jax.jit(lambda v, D=D: sharded_derivatives(D, v, ["xy"], mesh))(u)[0]
        np.testing.assert_allclose(out, D(u, "xy"), rtol=0, atol=1e-12)


def test_sharded_derivatives_errors_name_the_problem():
    grid = mj.Grid.from_bounds((30, 30), 0.0, 1.0)
    D = mj.Mollifier(grid, 3 * grid.spacing[0])
    u = np.zeros(grid.shape)
    with pytest.raises(mj.GridMismatchError, match="not a multiple"):
        sharded_derivatives(D, u, ["x"], _fake_mesh(4), axis=0)
    with pytest.raises(mj.GridMismatchError, match="halo needs"):
        sharded_derivatives(D, u, ["x"], _fake_mesh(10), axis=1)
    with pytest.raises(mj.MollijaxError, match="tap-based"):
        sharded_derivatives(mj.Spectral(grid), u, ["x"], batch_mesh(1, "grid"))
    with pytest.raises(mj.MollijaxError, match="`devices`"):
        batch_mesh(jax.device_count() + 1)


def _fake_mesh(n):
    # a mesh of n entries of the one CPU device is enough to reach the size checks
    from jax.sharding import Mesh

    return Mesh(np.array([jax.devices()[0]] * n), ("grid",))


# ----------------------------------------------------------------------------- tiling


def _net_fn(key):
    net = eqx.nn.MLP(2, "scalar", 16, 2, activation=jnp.tanh, key=key)
    return net


@pytest.mark.parametrize("tile", [1, 7, 64, 1000])
def test_evaluate_tiled_equals_untiled_with_gradient(tile):
    net = _net_fn(jax.random.PRNGKey(0))
    grid = mj.Grid.from_bounds((13, 11), 0.0, 1.0)  # 143 points: no tile divides it
    pts = grid.points()
    w = jnp.asarray(np.random.default_rng(0).standard_normal(grid.size))

    def loss(n, tiled):
        v = evaluate_tiled(n, pts, tile) if tiled else jax.vmap(n)(pts)
        return jnp.sum(w * jnp.sin(v))

    np.testing.assert_allclose(evaluate_tiled(net, pts, tile), jax.vmap(net)(pts),
                               rtol=1e-14, atol=1e-14)
    g1 = eqx.filter_grad(lambda n: loss(n, True))(net)
    g0 = eqx.filter_grad(lambda n: loss(n, False))(net)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_tiled_network_field_in_a_problem():
    grid = mj.Grid.from_bounds((24, 20), 0.0, 1.0, axes=("x", "y"))
    x, y = grid.mesh()
    data = np.sin(np.pi * x) * y
    net = mj.MLP(2, width=8, depth=2, key=jax.random.PRNGKey(1))
    D = mj.Mollifier(grid, 3 * grid.spacing[0])
    problem = mj.Problem(grid, lambda s: s.lap(s.u) + s.k * s.u, data={"u": data}, derivatives=D)
    k = mj.Constant(2.0)
    plain = {"u": mj.NetworkField(net, "xy"), "k": k}
    tiled = {"u": mj.NetworkField(net, "xy", tile=50), "k": k}
    loss = lambda q: problem.total(problem.loss_terms(q))
    assert abs(float(loss(tiled)) - float(loss(plain))) < 1e-13 * abs(float(loss(plain)))
    g_t, g_p = eqx.filter_grad(loss)(tiled), eqx.filter_grad(loss)(plain)
    for a, b in zip(jax.tree_util.tree_leaves(g_t), jax.tree_util.tree_leaves(g_p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)
    with pytest.raises(mj.MollijaxError, match="`tile`"):
        mj.NetworkField(net, "xy", tile=0)


def test_evaluate_tiled_rejects_bad_tile():
    with pytest.raises(mj.MollijaxError, match="`tile`"):
        evaluate_tiled(lambda p: p.sum(), jnp.zeros((4, 2)), 0)


def test_evaluate_grid_tiled_matches_evaluate():
    from mollijax import evaluate_grid_tiled

    grid = mj.Grid((5, 7, 3), (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    fn = lambda x: x[0] * 100 + x[1] * 10 + x[2] ** 2
    for tile in (1, 4, 105, 500):
        np.testing.assert_allclose(evaluate_grid_tiled(fn, grid, tile), mj.evaluate(fn, grid),
                                   rtol=1e-15, atol=1e-13)
