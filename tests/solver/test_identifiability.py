"""`identifiability`: where the residuals barely determine a grid unknown."""

import numpy as np
import pytest

import mollijax as mj


def _reaction(grid, u):
    """r = k u - f with u known on the grid: dr_j / d(log k_j) = k_j u_j exactly."""
    return mj.Problem(grid, lambda s: s.k * s.u - s.f, known={"u": u, "f": 0.0 * u},
                      derivatives=mj.FiniteDifference(grid))


def test_sensitivity_is_the_analytic_column_norm_and_the_zero_of_u_is_named():
    grid = mj.Grid.from_bounds((41,), 0.0, 1.0)
    (x,) = grid.mesh()
    u = np.cos(np.pi * x)  # vanishes at x = 0.5 only
    k = 1.0 + x
    problem = _reaction(grid, u)
    ident = mj.identifiability(problem, {"k": mj.GridField(k, ("x",))}, "k")
    (m,) = problem.margin  # residuals are evaluated on the interior: the walls are unseen
    exact = np.abs(k * u)
    exact[:m] = exact[-m:] = 0.0
    np.testing.assert_allclose(ident.sensitivity, exact / np.median(exact[m:-m]), rtol=1e-10)
    assert ident.poor.sum() == 1 and ident.poor[20]  # the margin's nodes are not reported
    assert ident.regions == ({"x": (0.5, 0.5)},)
    assert "x in [0.5, 0.5]" in ident.message and "'k' is poorly identified" in ident.message


def test_two_d_regions_are_boxes_of_connected_poor_nodes():
    grid = mj.Grid.from_bounds((21, 11), (0.0, 0.0), (2.0, 1.0), axes=("x", "y"))
    x, y = grid.mesh()
    u = np.where(x < 0.5, 1e-4, 1.0) * (1.0 + y)  # u nearly zero on the strip x < 0.5
    ident = mj.identifiability(_reaction(grid, u), {"k": mj.GridField(np.ones(grid.shape),
                                                                      ("x", "y"))}, "k")
    inner = np.zeros(grid.shape, bool)
    inner[2:-2, 2:-2] = True  # the residuals' interior (margin 2)
    assert np.array_equal(ident.poor, inner & (x < 0.5))
    assert len(ident.regions) == 1
    assert ident.regions[0]["x"] == pytest.approx((0.2, 0.4))
    assert ident.regions[0]["y"] == pytest.approx((0.2, 0.8))
    well = mj.identifiability(_reaction(grid, 1.0 + y), {"k": mj.GridField(
        np.ones(grid.shape), ("x", "y"))}, "k")
    assert not well.poor.any() and well.message == "" and well.regions == ()


def test_bad_arguments_are_named():
    grid = mj.Grid.from_bounds((11,), 0.0, 1.0)
    problem = _reaction(grid, np.ones(11))
    with pytest.raises(mj.MollijaxError, match="must be a GridField unknown"):
        mj.identifiability(problem, {"k": mj.Constant(1.0)}, "k")
    with pytest.raises(mj.MollijaxError, match="`threshold` must be in"):
        mj.identifiability(problem, {"k": mj.GridField(np.ones(11), ("x",))}, "k", threshold=2.0)
    with pytest.raises(mj.MollijaxError, match="more than max_nodes"):
        mj.identifiability(problem, {"k": mj.GridField(np.ones(11), ("x",))}, "k", max_nodes=5)
