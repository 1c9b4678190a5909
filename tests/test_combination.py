"""Linear combinations of derivatives (`combination`, `Operator`, `laplacian`, `biharmonic`)
equal the sum of the single derivatives, and the FFT path computes them with one inverse
transform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mollijax as mj

GRID = mj.Grid.from_bounds((24, 20), (0.0, 0.0), (1.0, 0.8))
FIELD = jnp.asarray(np.random.default_rng(3).standard_normal(GRID.shape))
TERMS = ((1.0, "xxxx"), (2.0, "xxyy"), (1.0, "yyyy"), (-0.5, "x"), (3.0, "yy"))


def _sum_of_singles(d, u, terms):
    values = d.derivatives(u, [alpha for _, alpha in terms])
    return sum(c * v for (c, _), v in zip(terms, values, strict=True))


def _count_ffts(fn, u):
    """Forward and inverse FFT primitives in the jaxpr of `fn(u)`, counted separately."""
    counts = {"forward": 0, "inverse": 0}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "fft":
                kind = jax.lax.FftType(eqn.params["fft_type"])
                inverse = kind in (jax.lax.FftType.IFFT, jax.lax.FftType.IRFFT)
                counts["inverse" if inverse else "forward"] += 1
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    walk(inner)

    walk(jax.make_jaxpr(fn)(u).jaxpr)
    return counts


@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize("boundary", ["odd", "periodic", "valid", ("even", "linear")])
def test_combination_equals_sum_of_single_derivatives(method, boundary):
    d = mj.Mollifier(GRID, 3.0 * GRID.spacing[0], boundary=boundary, method=method)
    combined = jax.jit(lambda u: d.combination(u, TERMS))(FIELD)
    reference = _sum_of_singles(d, FIELD, TERMS)
    scale = float(jnp.max(jnp.abs(reference)))
    assert combined.shape == reference.shape
    np.testing.assert_allclose(combined, reference, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_biharmonic_laplacian_and_operator_match_their_terms(method):
    d = mj.Mollifier(GRID, 3.0 * GRID.spacing[0], method=method)
    bih = _sum_of_singles(d, FIELD, ((1.0, "xxxx"), (2.0, "xxyy"), (1.0, "yyyy")))
    lap = _sum_of_singles(d, FIELD, ((1.0, "xx"), (1.0, "yy")))
    np.testing.assert_allclose(d.biharmonic(FIELD), bih, rtol=0, atol=1e-12 * np.abs(bih).max())
    np.testing.assert_allclose(d.laplacian(FIELD), lap, rtol=0, atol=1e-12 * np.abs(lap).max())
    op = d.op("xxxx") + 2.0 * d.op("xxyy") + d.op("yyyy")
    np.testing.assert_allclose(op(FIELD), bih, rtol=0, atol=1e-12 * np.abs(bih).max())


def test_gradient_of_combination_matches_sum_of_singles():
    d = mj.Mollifier(GRID, 3.0 * GRID.spacing[0], method="fft")
    weight = jnp.asarray(np.random.default_rng(4).standard_normal(GRID.shape))
    g_comb = jax.grad(lambda u: jnp.sum(weight * d.combination(u, TERMS)))(FIELD)
    g_sum = jax.grad(lambda u: jnp.sum(weight * _sum_of_singles(d, u, TERMS)))(FIELD)
    np.testing.assert_allclose(g_comb, g_sum, rtol=0, atol=1e-12 * np.abs(g_sum).max())


def test_fft_path_uses_one_inverse_transform_per_combination():
    d = mj.Mollifier(GRID, 3.0 * GRID.spacing[0], method="fft")
    assert _count_ffts(d.biharmonic, FIELD) == {"forward": 1, "inverse": 1}
    assert _count_ffts(lambda u: d.combination(u, TERMS), FIELD) == {"forward": 1, "inverse": 1}
    # the separate derivatives still need one inverse each
    singles = _count_ffts(lambda u: d.derivatives(u, [a for _, a in TERMS]), FIELD)
    assert singles == {"forward": 1, "inverse": len(TERMS)}


def test_biharmonic_of_a_plane_wave():
    # independent check of the weights: Lap^2 sin(2 pi (x + y)) = (2 (2 pi)^2)^2 sin(...)
    grid = mj.Grid.from_bounds((64, 64), (0.0, 0.0), (1.0, 1.0), periodic=True)
    x, y = grid.mesh()
    u = jnp.sin(2 * np.pi * (x + y))
    d = mj.Mollifier(grid, 4.0 * grid.spacing[0], boundary="periodic")
    exact = (2 * (2 * np.pi) ** 2) ** 2 * u
    assert float(jnp.max(jnp.abs(d.biharmonic(u) - exact))) < 2e-2 * float(jnp.max(jnp.abs(exact)))


def test_combination_names_bad_terms():
    d = mj.Mollifier(GRID, 3.0 * GRID.spacing[0])
    with pytest.raises(mj.MollijaxError, match="at least one"):
        d.combination(FIELD, [])
