"""Compiled training steps are reused: one compilation per fit with L-BFGS, none for a new
inline lambda or new data of the same shapes, a `RecompileWarning` when a fit compiles again
for a reason it could avoid; L-BFGS takes the line search's loss and gradient from its state.

Compilations are counted with JAX's own monitoring events (one backend compile each)."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mollijax as mj

GRID = mj.Grid.from_bounds((33, 9), (0.0, 0.0), (1.0, 0.4), axes=("x", "t"))
X, T = GRID.mesh()
D_TRUE = 0.3


def _data(seed=0):
    # u = exp(-D pi^2 t) sin(pi x) solves u_t = D u_xx; a seed adds a small perturbation
    u = np.exp(-D_TRUE * np.pi**2 * T) * np.sin(np.pi * X)
    return u + 1e-3 * np.random.default_rng(seed).standard_normal(u.shape) * (seed > 0)


@contextlib.contextmanager
def count_compiles():
    counts = {"n": 0}

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            counts["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _problem(u, residual=None):
    moll = mj.Mollifier(GRID, (3 * GRID.spacing[0], 2 * GRID.spacing[1]))
    residual = residual or (lambda s: s.d(s.u, "t") - s.D * s.d(s.u, "xx"))
    return mj.Problem(GRID, residual, data={"u": u}, derivatives=moll)


def _unknowns():
    return {"D": mj.Constant(0.1)}


LBFGS = optax.lbfgs()


def _fit(problem, optimiser=LBFGS, steps=12, chunk=4):
    return mj.fit(problem, _unknowns(), optimiser, steps=steps, chunk=chunk, progress=False)


def test_lbfgs_fit_compiles_its_chunk_once_and_recovers_d():
    problem = _problem(_data(), lambda s: s.d(s.u, "t") - s.D * s.d(s.u, "xx") + 0.0 * s.u)
    _fit(problem, steps=4, chunk=4)  # compiles the 4-step chunk for the initial state
    # three chunks: had the second chunk missed the cache (a weakly typed optimiser state
    # in, a strongly typed one out), it would compile again
    with count_compiles() as three_chunks:
        result = _fit(problem, steps=12, chunk=4)
    assert three_chunks["n"] == 0
    assert abs(float(result.unknowns["D"].value) - D_TRUE) < 0.05 * D_TRUE


def test_new_inline_lambda_and_new_data_do_not_recompile():
    _fit(_problem(_data(0)))  # the lambda in _problem is a new object on every call
    with count_compiles() as again:
        result = _fit(_problem(_data(1)))
    assert again["n"] == 0
    assert abs(float(result.unknowns["D"].value) - D_TRUE) < 0.05 * D_TRUE


def test_closure_values_are_part_of_the_key():
    # the same code closing over a different constant computes something else: it compiles,
    # and the constant is honoured
    def make(scale):
        return _problem(_data(), lambda s: s.d(s.u, "t") - scale * s.D * s.d(s.u, "xx"))

    r1 = _fit(make(1.0))
    r2 = _fit(make(2.0))
    d1, d2 = float(r1.unknowns["D"].value), float(r2.unknowns["D"].value)
    assert abs(d1 - D_TRUE) < 0.05 * D_TRUE and abs(2 * d2 - D_TRUE) < 0.05 * D_TRUE


def test_warning_when_a_large_closed_over_array_forces_a_recompile():
    def make():
        weight = jnp.ones(5000)[: GRID.shape[0], None] * jnp.ones(GRID.shape[1])  # noqa: B023
        big = jnp.ones(5000)  # closed over, more than 4096 elements: keyed by identity
        return _problem(_data(), lambda s: (s.d(s.u, "t") - s.D * s.d(s.u, "xx")) * weight
                        * big[0])

    _fit(make())
    with pytest.warns(mj.RecompileWarning, match="known"):
        _fit(make())


def test_lbfgs_reuses_the_line_search_gradient():
    backward = {"n": 0}

    @jax.custom_vjp
    def tap(x):
        return x

    def tap_fwd(x):
        return x, None

    def tap_bwd(_, g):
        jax.debug.callback(lambda: backward.__setitem__("n", backward["n"] + 1))
        return (g,)

    tap.defvjp(tap_fwd, tap_bwd)
    problem = _problem(_data(), lambda s: tap(s.d(s.u, "t") - s.D * s.d(s.u, "xx")))
    steps = 12
    unknowns = {"D": mj.GridField(np.full(GRID.shape[0], 0.1), "x")}
    result = mj.fit(problem, unknowns, LBFGS, steps=steps, chunk=steps, progress=False)
    jax.effects_barrier()
    assert result.steps == steps
    # each step's gradient comes from the line search that accepted it (one evaluation when
    # the first trial step is accepted); recomputing it would double the count (25 here)
    assert backward["n"] <= 1.3 * steps, backward["n"]


def test_a_long_fit_switches_to_the_fully_optimised_step_once(monkeypatch):
    # a small grid's chunks compile quickly (slower steps) only while the fit is short: the
    # chunk that starts at step 2000 compiles the fully optimised step, once, with no
    # RecompileWarning; the result equals a fit at full optimisation throughout up to
    # round-off
    problem = _problem(_data())
    sgd = optax.sgd(1e-2)

    def fit(steps, **kwargs):
        return mj.fit(problem, _unknowns(), sgd, steps=steps, chunk=500, progress=False,
                      **kwargs)

    fit(2000)  # compiles the quick chunk
    with count_compiles() as short:
        fit(2000)
    with count_compiles() as long:
        switched = fit(2500)
    with count_compiles() as again:
        fit(2500)
    assert short["n"] == 0 and long["n"] >= 1 and again["n"] == 0
    monkeypatch.setenv("MOLLIJAX_QUICK_COMPILE_MAX_NODES", "0")
    full = fit(2500)
    np.testing.assert_allclose(switched.values["D"], full.values["D"], rtol=1e-12)
    np.testing.assert_allclose(switched.values["D"], D_TRUE, rtol=2e-2)
