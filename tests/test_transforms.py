"""Differentiators under jax transformations: grad, jit, vmap, and no recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import max_error

import mollijax as mj

GRID = mj.Grid.from_bounds((24, 20), (0.0, 0.0), (1.0, 0.8))
ALPHAS = ["x", "yy", "xy", "xxyy"]


def _field(seed=0):
    x, y = GRID.mesh()
    rng = np.random.default_rng(seed)
    return np.sin(3 * x) * np.cos(2 * y) + 0.1 * rng.standard_normal(GRID.shape)


def _loss(d):
    def loss(v):
        ux, uyy, uxy, u4 = d.derivatives(v, ALPHAS)
        return jnp.sum(ux**2) + jnp.sum(jnp.sin(uyy)) + jnp.sum(uxy * ux) + 1e-4 * jnp.sum(u4**2)

    return loss


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("boundary", ["odd", "linear", "valid", "periodic"])
def test_grad_matches_central_differences(method, boundary):
    d = mj.Mollifier(GRID, 0.15, boundary=boundary, method=method)
    loss = jax.jit(_loss(d))
    u = jnp.asarray(_field())
    g = jax.jit(jax.grad(_loss(d)))(u)
    rng = np.random.default_rng(3)
    for _ in range(3):
        direction = jnp.asarray(rng.standard_normal(GRID.shape))
        delta = 1e-5
        fd = (loss(u + delta * direction) - loss(u - delta * direction)) / (2 * delta)
        assert float(jnp.vdot(g, direction)) == pytest.approx(float(fd), rel=1e-7)


def test_jit_matches_eager():
    d = mj.Mollifier(GRID, 0.15)
    u = _field()
    eager = d.derivatives(u, ALPHAS)
    jitted = jax.jit(lambda v: d.derivatives(v, ALPHAS))(u)
    for a, b in zip(eager, jitted, strict=True):
        assert max_error(a, b) < 1e-12 * max(1.0, float(jnp.max(jnp.abs(a))))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_vmap_equals_python_loop(method):
    d = mj.Mollifier(GRID, 0.15, method=method)
    batch = np.stack([_field(s) for s in range(4)])
    fn = jax.jit(lambda v: d.derivatives(v, ALPHAS))
    batched = jax.jit(jax.vmap(lambda v: d.derivatives(v, ALPHAS)))(batch)
    for i in range(batch.shape[0]):
        for a, b in zip(fn(batch[i]), batched, strict=True):
            assert max_error(a, b[i]) < 1e-12 * max(1.0, float(jnp.max(jnp.abs(a))))


def test_no_recompilation_for_new_values():
    d = mj.Mollifier(GRID, 0.15)
    traces = []

    @jax.jit
    def step(v):
        traces.append(None)  # runs only while tracing
        return d.laplacian(v)

    first = step(jnp.asarray(_field(0)))
    second = step(jnp.asarray(_field(1)))
    assert len(traces) == 1
    assert not np.allclose(first, second)
    # an equal differentiator built again is the same static description: still no retrace
    d2 = mj.Mollifier(GRID, 0.15)
    assert d2 == d and hash(d2) == hash(d)

    @jax.jit
    def step2(op, v):
        traces.append(None)
        return op.laplacian(v)

    step2(d, jnp.asarray(_field(0)))
    step2(d2, jnp.asarray(_field(1)))
    assert len(traces) == 2


def test_fft_path_in_value_and_grad_at_256_squared():
    """Several FFT derivatives of a 256^2 field inside value_and_grad, against the direct path.

    A batched multi-channel inverse FFT in this position has crashed jaxlib CPU builds.
    """
    grid = mj.Grid.from_bounds((256, 256), 0.0, 1.0)
    x, y = grid.mesh()
    u = jnp.asarray(np.sin(4 * x) * np.cos(3 * y) + x * y)
    alphas = ["x", "y", "xx", "yy", "xy"]
    results = {}
    for method in ("fft", "direct"):
        d = mj.Mollifier(grid, 0.04, boundary="odd", method=method)

        def loss(v, d=d):
            return sum(jnp.mean(o**2) for o in d.derivatives(v, alphas))

        results[method] = jax.jit(jax.value_and_grad(loss))(u)
    (vf, gf), (vd, gd) = results["fft"], results["direct"]
    assert np.isfinite(float(vf))
    assert float(vf) == pytest.approx(float(vd), rel=1e-11)
    assert max_error(gf, gd) < 1e-9 * float(jnp.max(jnp.abs(gd)))


def test_grad_of_3d_divergence_form_direct_matches_fft():
    """Regression: reverse mode through the direct path on a 3-D grid once crashed XLA's CPU
    convolution gradient (float64, derivatives along two axes, eps = 5h)."""
    g = mj.Grid.from_bounds((12, 12, 12), 0.0, 1.0, axes=("x", "y", "t"))
    u = jnp.asarray(np.random.default_rng(0).standard_normal(g.shape))

    def loss(method):
        m = mj.Mollifier(g, 5 * g.spacing[0], method=method)

        def f(d):
            big = jnp.broadcast_to(d[:, :, None], g.shape)
            return jnp.mean((m(big * m(u, "x"), "x") + m(big * m(u, "y"), "y")) ** 2)

        return jax.jit(jax.grad(f))(jnp.ones((12, 12)))

    np.testing.assert_allclose(loss("direct"), loss("fft"), rtol=1e-9, atol=1e-12)
