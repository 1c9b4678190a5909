"""The ready problems' evolution forms converge to their own (independent) simulators."""

import numpy as np
import pytest
from _runs import PROBLEMS

import mollijax as mj
from mollijax.cli import prepare
from mollijax.config import from_dict


def _mismatch(name, params, scale=1.0):
    config = from_dict({"problem": {"file": str(PROBLEMS / f"{name}.py"), **params},
                        "state": {"representation": "evolve"}})
    _, sim, problem, fields = prepare(config)
    t = sim.grid.axis_index("t")
    space = tuple(a for a in sim.grid.axes if a != "t")
    fields["u"] = mj.GridField(np.take(sim.clean["u"], 0, axis=t), space)
    fields["D"] = mj.GridField(scale * sim.truth["D"], space)
    u = np.asarray(problem.prepare(fields).grid_values(fields)["u"])
    return np.linalg.norm(u - sim.clean["u"]) / np.linalg.norm(sim.clean["u"])


@pytest.mark.parametrize(
    "name, coarse, fine",
    [("heat1d", {"nx": 21, "nt": 21}, {"nx": 41, "nt": 21}),
     ("heat2d", {"n": 9, "nt": 9}, {"n": 17, "nt": 9})],
)
def test_evolution_with_the_truth_converges_to_the_simulator(name, coarse, fine):
    # the simulators are second-order finite volumes + Crank-Nicolson on finer grids; the
    # evolution is 4th-order finite differences + RK4 on the observation grid: two solvers.
    # Their difference must shrink at least like h^2 (the simulators' order) when h halves.
    e_coarse, e_fine = _mismatch(name, coarse), _mismatch(name, fine)
    order = np.log2(e_coarse / e_fine)
    assert order > 1.6 and e_fine < 1e-2, (e_coarse, e_fine, order)
    # a diffusivity 20 % off does not match (the comparison can fail)
    assert _mismatch(name, fine, 1.2) > 5 * e_fine
