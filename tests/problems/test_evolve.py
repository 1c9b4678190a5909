"""The ready problems' evolution forms converge to their own (independent) simulators."""

import numpy as np
import pytest

import mollijax as mj
from mollijax import problems


def _mismatch(module, params, scale=1.0):
    sim = module.simulate(**params)
    problem, fields = problems.build(module, sim, state="evolve")
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
    module = problems.get(name)
    e_coarse, e_fine = _mismatch(module, coarse), _mismatch(module, fine)
    order = np.log2(e_coarse / e_fine)
    assert order > 1.6 and e_fine < 1e-2, (e_coarse, e_fine, order)
    # a diffusivity 20 % off does not match (the comparison can fail)
    assert _mismatch(module, fine, 1.2) > 5 * e_fine
