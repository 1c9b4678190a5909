"""`mj.auto_smooth_weights`, the public form of the `smooth = "auto"` rule (issue 16)."""

import numpy as np

import mollijax as mj
from mollijax import cli
from mollijax.config import from_dict

CONFIG = {"problem": {"name": "poisson_coefficient", "nx": 17, "ny": 15},
          "data": {"noise": 0.01},
          "unknowns": {"lam": {"representation": "grid", "constraint": "positive", "init": 2.0}},
          "state": {"representation": "data"},
          "optimiser": {"steps": 3, "chunk": 3}}


def test_equals_the_weight_a_config_chooses():
    auto = from_dict({**CONFIG, "regularisers": {"lam": {"smooth": "auto"}}})
    configured = cli.prepare(auto).problem
    chosen = {t.name: float(t.weight) for t in configured.terms}["reg:lam:smooth"]
    _, _, bare, start = cli.prepare(from_dict(CONFIG))
    for names in (["lam"], "lam", None):
        w = mj.auto_smooth_weights(bare, start, names)
        assert list(w) == ["lam"]
        np.testing.assert_allclose(w["lam"], chosen, rtol=1e-12)


def heat(s):
    return s.d(s.u, "t") - s.d(s.D * s.d(s.u, "x"), "x")


def _heat_problem(scale):
    grid = mj.Grid.from_bounds((21, 11), (0.0, 0.0), (2.0, 1.0), axes=("x", "t"))
    x, t = grid.mesh()
    u = scale * (np.sin(np.pi * x / 2) * np.exp(-t) + 0.01 * np.cos(7 * x + 3 * t))
    return grid, mj.Problem(grid, heat, data={"u": u},
                            derivatives=mj.FiniteDifference(grid, accuracy=2),
                            regularisers=[(mj.Regulariser("D", "smooth"), 0.0)])


def test_the_rule_in_python_and_its_units():
    """1e-3 x the residual at the start x length^2 / D0^2; scaling the data by `s` scales
    the residual loss and so the weight by `s^2`, and scaling the start of D by `a` leaves
    the weight of a relative variation unchanged (the weight goes as res0 / a^2)."""
    grid, problem = _heat_problem(1.0)
    unknowns = {"D": mj.GridField(np.full(21, 0.5), "x")}
    res0 = sum(float(v) for k, v in problem.loss_terms(unknowns).items()
               if k.startswith("residual:"))
    assert res0 > 0
    w = mj.auto_smooth_weights(problem, unknowns)["D"]
    np.testing.assert_allclose(w, 1e-3 * res0 * (21 * grid.spacing[0]) ** 2 / 0.5**2,
                               rtol=1e-12)
    _, scaled = _heat_problem(1e3)
    np.testing.assert_allclose(mj.auto_smooth_weights(scaled, unknowns)["D"], 1e6 * w,
                               rtol=1e-9)
    weighted = problem.with_weights({"reg:D:smooth": w})
    assert {t.name: float(t.weight) for t in weighted.terms}["reg:D:smooth"] == w
