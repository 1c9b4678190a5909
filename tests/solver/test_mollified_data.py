"""The mollified data term: the mollified field compared with the data on the residuals'
interior, its value against a hand computation and its error bars' temperature."""

import jax
import numpy as np
import pytest

import mollijax as mj

jax.config.update("jax_enable_x64", True)

N = 33
GRID = mj.Grid.from_bounds((N, N), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
X, Y = GRID.mesh()
DATA = np.sin(2 * X) * np.cos(3 * Y) + 0.05 * np.random.default_rng(0).standard_normal(X.shape)


def _problem(**kw):
    return mj.Problem(GRID, lambda s: s.lap(s.u) - s.f, data={"u": DATA},
                      known={"f": np.zeros((N, N))}, **kw)


def test_value_is_the_mollified_field_against_the_data_on_the_interior():
    problem = _problem(mollified_data=True)
    field = np.cos(X + 2 * Y)
    terms = problem.loss_terms({"u": mj.GridField(field, "xy")})
    smooth = np.asarray(problem.derivatives(field, (0, 0)))
    crop = tuple(slice(m, N - m) for m in problem.margin)
    by_hand = np.mean((smooth[crop] - DATA[crop]) ** 2)
    assert float(terms["data:u"]) == pytest.approx(by_hand, rel=1e-12)
    # the plain term compares the field itself, everywhere
    plain = _problem().loss_terms({"u": mj.GridField(field, "xy")})
    assert float(plain["data:u"]) == pytest.approx(np.mean((field - DATA) ** 2), rel=1e-12)


def test_error_bars_count_the_interior_nodes():
    problem = _problem(mollified_data=True, regularisers=[mj.H1("u", 1e-3)])
    unknowns = {"u": mj.GridField(DATA, "xy")}
    sigma = 0.05
    bars = mj.laplace(problem, unknowns, sigma=sigma, rank=5)
    interior = np.prod([N - 2 * m for m in problem.margin])
    # T = 2 w sigma^2 / n with n the interior nodes the mollified term counts
    assert bars.temperature == pytest.approx(2 * sigma**2 / interior, rel=1e-12)


def test_bad_names_are_refused():
    with pytest.raises(mj.MollijaxError, match="`mollified_data`.*'v'"):
        _problem(mollified_data=["v"])
