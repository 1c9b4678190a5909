"""Problem specs: clear errors before compilation, and residuals that match the maths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mollijax as mj

GRID = mj.Grid.from_bounds((33, 17), (0.0, 0.0), (1.0, 0.5), axes=("x", "t"))


def _heat(s):
    return s.d(s.u, "t") - s.d(s.D * s.d(s.u, "x"), "x")


def _data():
    x, t = GRID.mesh()
    return np.sin(np.pi * x) * np.exp(-t)


def _unknowns():
    return {"D": mj.GridField(np.full(33, 0.1), "x", constraint="positive")}


def test_unknown_field_name_in_residual_is_named():
    problem = mj.Problem(GRID, lambda s: s.d(s.v, "t"), data={"u": _data()})
    with pytest.raises(mj.UnknownFieldError, match="'v'.*available.*'D'.*'u'"):
        problem.check(_unknowns())
    # and where such a field goes: a known field, in Python and in a configuration
    with pytest.raises(mj.UnknownFieldError, match=r"known=.*\[data\] known = \{ v = "):
        problem.check(_unknowns())


def test_data_shape_mismatch_is_named():
    with pytest.raises(mj.GridMismatchError, match=r"data\['u'\].*\(33, 17\).*\(17, 33\)"):
        mj.Problem(GRID, _heat, data={"u": _data().T})


def test_nan_in_data_needs_a_mask():
    data = _data()
    data[3, 4] = np.nan
    with pytest.raises(mj.NonFiniteError, match=r"data\['u'\].*1 NaN"):
        mj.Problem(GRID, _heat, data={"u": data})
    mask = np.isfinite(data)
    problem = mj.Problem(GRID, lambda s: s.u - s.c, data={"u": data}, masks={"u": mask})
    net = mj.NetworkField(mj.MLP(2, width=4, depth=1, key=jax.random.PRNGKey(0)), "xt")
    terms = problem.loss_terms({"u": net, "c": mj.Constant(0.0)})
    assert np.isfinite(terms["data:u"])


def test_masked_data_cannot_be_used_as_the_field_itself():
    data = _data()
    mask = np.ones(GRID.shape, bool)
    mask[0, 0] = False
    problem = mj.Problem(GRID, _heat, data={"u": data}, masks={"u": mask})
    with pytest.raises(mj.MollijaxError, match="masked"):
        problem.check(_unknowns())


def test_unused_unknown_is_reported():
    problem = mj.Problem(GRID, _heat, data={"u": _data()})
    unknowns = dict(_unknowns(), k=mj.Constant(1.0))
    with pytest.raises(mj.MollijaxError, match=r"\['k'\] are never used"):
        problem.check(unknowns)


@pytest.mark.parametrize("bad", ["postive", "bounded", ("bounded", 1.0, 0.0), 3])
def test_constraint_that_does_not_exist(bad):
    with pytest.raises(mj.MollijaxError, match="constraint|bounds|lower < upper"):
        mj.Constant(0.5, constraint=bad)


def test_unknown_axis_and_bad_weights_and_regulariser():
    problem = mj.Problem(GRID, _heat, data={"u": _data()})
    with pytest.raises(mj.GridMismatchError, match="axis 'y'"):
        problem.check({"D": mj.GridField(np.ones(33), "y")})
    with pytest.raises(mj.MollijaxError, match="unknown regulariser 'l1'"):
        mj.Regulariser("D", "l1")
    # a weight for a term that does not exist is refused when the problem is built
    with pytest.raises(mj.MollijaxError, match="'residual:heat', which is not a loss term"):
        mj.Problem(GRID, _heat, data={"u": _data()}, weights={"residual:heat": 2.0})
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(mj.MollijaxError, match="weights\\['residual'\\].*finite number >= 0"):
            mj.Problem(GRID, _heat, data={"u": _data()}, weights={"residual": bad})
    with pytest.raises(mj.MollijaxError, match="'reg:D:smooth'.*finite number >= 0"):
        mj.Regulariser("D", "smooth", -1e-3)
    regularised = mj.Problem(GRID, _heat, data={"u": _data()},
                             regularisers=[mj.Regulariser("E", "smooth")])
    with pytest.raises(mj.UnknownFieldError, match="'E'"):
        regularised.check(_unknowns())


def test_differentiator_for_another_grid_is_refused():
    other = mj.Grid.from_bounds((20, 17), (0.0, 0.0), (1.0, 0.5), axes=("x", "t"))
    with pytest.raises(mj.GridMismatchError, match="different grid"):
        mj.Problem(GRID, _heat, data={"u": _data()}, derivatives=mj.Mollifier(other, 0.2))


class _Exact(mj.AbstractField.__mro__[1]):  # an equinox Module: u(x, t) = sin(pi x) exp(-t)
    def __call__(self, xi):
        # NetworkField feeds coordinates rescaled to [-1, 1]
        x = 0.5 * (xi[0] + 1.0)
        t = 0.25 * (xi[1] + 1.0)
        return jnp.sin(jnp.pi * x) * jnp.exp(-t)


def _divergence_residual_error(mode, nx, nt, margin):
    # u = sin(pi x) e^{-t} with D(x) = 1 + x: (D u_x)_x - u_t = pi cos(pi x) e^{-t}
    #   - (1 + x) pi^2 sin(pi x) e^{-t} + sin(pi x) e^{-t}
    fine = mj.Grid.from_bounds((nx, nt), (0.0, 0.0), (1.0, 0.5), axes=("x", "t"))
    x, t = fine.mesh()
    expected = (np.pi * np.cos(np.pi * x) - (1 + x) * np.pi**2 * np.sin(np.pi * x)
                + np.sin(np.pi * x)) * np.exp(-t)
    derivatives = mode if mode != "grid" else mj.Mollifier(fine, (4 * fine.spacing[0],
                                                                  4 * fine.spacing[1]))
    problem = mj.Problem(fine, lambda s: s.d(s.D * s.d(s.u, "x"), "x") - s.d(s.u, "t"),
                         derivatives=derivatives, margin=margin)
    unknowns = {"u": mj.NetworkField(_Exact(), "xt"), "D": mj.NetworkField(_Linear(), "x")}
    scope = problem._scope(unknowns, problem.grid_values(unknowns))
    (term,) = [t for t in problem.terms if isinstance(t, mj.Residual)]
    residual = problem._evaluate_residual(term.fn, scope)
    want = expected[margin:-margin, margin:-margin]
    return float(np.max(np.abs(residual - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("mode", ["grid", "autodiff"])
def test_grad_and_div_read_as_the_equation(mode):
    """`s.div(s.D * s.grad(s.u))` is the hand-written `(D u_x)_x` (grad over the axes but
    "t"), in both modes; the vector arithmetic is component-wise and refuses mismatches."""
    fine = mj.Grid.from_bounds((21, 11), (0.0, 0.0), (1.0, 0.5), axes=("x", "t"))
    derivatives = mode if mode != "grid" else mj.Mollifier(fine, (4 * fine.spacing[0],
                                                                  4 * fine.spacing[1]))
    unknowns = {"u": mj.NetworkField(_Exact(), "xt"), "D": mj.NetworkField(_Linear(), "x")}

    def vector(s):
        flux = 0.5 * (s.D * s.grad(s.u)) + s.grad(s.u) * s.D / 2 - (-s.grad(s.u)) + s.grad(s.u)
        return s.div(flux) - s.d(s.u, "t")

    def by_hand(s):
        return s.d(s.D * s.d(s.u, "x") + 2 * s.d(s.u, "x"), "x") - s.d(s.u, "t")

    values = [mj.Problem(fine, fn, derivatives=derivatives).loss_terms(unknowns)["residual:pde"]
              for fn in (vector, by_hand)]
    np.testing.assert_allclose(values[0], values[1], rtol=1e-12)

    def unequal(s):
        return s.div(s.grad(s.u) + (s.u, s.u))

    def bare(s):
        return s.div(s.D * s.d(s.u, "x"))

    for fn, match in ((unequal, "1 components can only be added"), (bare, "one flux component")):
        with pytest.raises(mj.MollijaxError, match=match):
            mj.Problem(fine, fn, derivatives=derivatives).loss_terms(unknowns)


@pytest.mark.parametrize("mode", ["autodiff", "taylor"])
def test_divergence_form_residual_is_exact_in_point_mode(mode):
    assert _divergence_residual_error(mode, 41, 21, 4) < 1e-12


def test_divergence_form_residual_converges_at_second_order_in_grid_mode():
    coarse = _divergence_residual_error("grid", 81, 41, 8)
    fine = _divergence_residual_error("grid", 161, 81, 16)
    assert coarse < 1e-2
    assert np.log2(coarse / fine) > 1.7, (coarse, fine)


class _Linear(mj.AbstractField.__mro__[1]):
    def __call__(self, xi):
        return 1.0 + 0.5 * (xi[0] + 1.0)


def test_point_mode_refuses_to_differentiate_grid_data():
    problem = mj.Problem(GRID, lambda s: s.d(s.u, "x") - s.c, data={"u": _data()},
                         derivatives="autodiff")
    with pytest.raises(mj.MollijaxError, match="Cannot differentiate"):
        problem.check({"c": mj.Constant(0.0)})


@pytest.mark.parametrize("name", ["d", "lap", "grad", "div", "grid", "coord"])
def test_reserved_field_names_are_refused_when_built(name):
    with pytest.raises(mj.MollijaxError, match=f"field name '{name}' is reserved"):
        mj.Problem(GRID, _heat, data={name: _data()})
    problem = mj.Problem(GRID, _heat, data={"u": _data()})
    with pytest.raises(mj.MollijaxError, match=f"field name '{name}' is reserved"):
        problem.check({name: mj.GridField(np.ones(33), "x")})


def test_autodiff_differentiator_object_means_point_mode():
    # the object and the string are the same choice: residuals are differentiated pointwise
    unknowns = {"u": mj.NetworkField(_Exact(), "xt"), "D": mj.NetworkField(_Linear(), "x")}
    by_object = mj.Problem(GRID, _heat, derivatives=mj.Autodiff(GRID))
    by_name = mj.Problem(GRID, _heat, derivatives="autodiff")
    assert by_object.mode == by_name.mode == "autodiff"
    a = by_object.loss_terms(unknowns)["residual:pde"]
    b = by_name.loss_terms(unknowns)["residual:pde"]
    assert float(a) == float(b)


def test_weights_are_values_a_new_weight_does_not_recompile():
    import equinox as eqx

    problem = mj.Problem(GRID, _heat, data={"u": _data()},
                         regularisers=[mj.H1("D", 1e-3)])
    unknowns = _unknowns()
    traces = []

    @eqx.filter_jit
    def total(p, u):
        traces.append(1)
        return p.loss(u)[0]

    base = float(total(problem, unknowns))
    heavier = problem.with_weights({"reg:D:smooth": 1.0})
    reg = float(problem.loss_terms(unknowns)["reg:D:smooth"])
    assert abs(float(total(heavier, unknowns)) - (base + (1.0 - 1e-3) * reg)) < 1e-9 * max(1, base)
    assert len(traces) == 1


def test_steady_state_in_a_problem_is_the_solution_and_recovers_the_coefficient():
    # -(k u')' = f, u(0) = u(1) = 0: data of the solution for k_true; the steady state makes
    # the data term an output error, and a fit from k = 1 recovers k_true
    import optax

    grid = mj.Grid.from_bounds((33,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    k_true = 1.0 + 0.5 * np.sin(2 * np.pi * x)
    f = 10.0 + 5.0 * x  # u' vanishes nowhere inside: k is identifiable everywhere
    walls = [mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0)]
    steady = mj.Steady(lambda s: s.d(s.k * s.d(s.u, "x"), "x") + s.f)
    forward = mj.Problem(grid, None, data={"u": np.zeros(33)}, known={"f": f},
                         steady=steady, conditions=walls)
    u = np.asarray(forward.grid_values({"k": mj.GridField(k_true, "x")})["u"])
    # the solution satisfies the walls exactly and the discrete equation (nested central
    # differences, written again here in NumPy) to round-off away from the walls
    assert u[0] == 0.0 and u[-1] == 0.0
    h = grid.spacing[0]
    du = (u[2:] - u[:-2]) / (2 * h)
    q = k_true[1:-1] * du
    residual = (q[2:] - q[:-2]) / (2 * h) + f[2:-2]
    assert np.max(np.abs(residual)) < 1e-8 * np.max(f)
    # nested central differences leave k an odd-even (checkerboard) null space: the misfit
    # reaches 1e-23 with k 10 % off; a tiny H1 weight picks the smooth member
    problem = mj.Problem(grid, None, data={"u": u}, known={"f": f}, steady=steady,
                         conditions=walls, regularisers=[mj.H1("k", 1e-8)])
    unknowns = {"k": mj.GridField(np.ones(33), "x", constraint="positive")}
    result = mj.fit(problem, unknowns, optax.lbfgs(), steps=600, chunk=200, progress=False)
    err = np.linalg.norm(result.values["k"] - k_true) / np.linalg.norm(k_true)
    assert result.status == mj.Status.completed
    assert err < 0.01
    # the steady field is computed, not fitted: it is not an unknown, yet it has a data term
    assert "data:u" in result.history and "u" not in result.values
