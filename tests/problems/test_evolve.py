"""The ready problems' evolution forms converge to their own (independent) simulators."""

import jax
import numpy as np
import pytest
from _runs import PROBLEMS

import mollijax as mj
from mollijax.cli import prepare
from mollijax.config import from_dict


def _mismatches(name, params, scales):
    """Relative L2 mismatch of the evolution from the true initial state, with the true D
    times each of `scales`, against the simulator's clean u.

    The data are simulated once per grid and the integration is compiled once per grid
    (jitted, D an argument): the eager integration compiled its scan again for every D."""
    config = from_dict({"problem": {"file": str(PROBLEMS / f"{name}.py"), **params},
                        "state": {"representation": "evolve"}})
    _, sim, problem, fields = prepare(config)
    t = sim.grid.axis_index("t")
    space = tuple(a for a in sim.grid.axes if a != "t")
    fields["u"] = mj.GridField(np.take(sim.clean["u"], 0, axis=t), space)
    fields["D"] = mj.GridField(sim.truth["D"], space)
    problem = problem.prepare(fields)  # RK4 substeps from the true D (stable with margin 2)
    integrate = jax.jit(lambda f: problem.grid_values(f)["u"])
    clean = sim.clean["u"]
    out = []
    for scale in scales:
        u = np.asarray(integrate(dict(fields, D=mj.GridField(scale * sim.truth["D"], space))))
        out.append(np.linalg.norm(u - clean) / np.linalg.norm(clean))
    return out


@pytest.mark.parametrize(
    "name, coarse, fine",
    [("heat1d", {"nx": 21, "nt": 21}, {"nx": 41, "nt": 21}),
     ("heat2d", {"n": 9, "nt": 9}, {"n": 17, "nt": 9})],
)
def test_evolution_with_the_truth_converges_to_the_simulator(name, coarse, fine):
    # the simulators are second-order finite volumes + Crank-Nicolson on finer grids; the
    # evolution is 4th-order finite differences + RK4 on the observation grid: two solvers.
    # Their difference must shrink at least like h^2 (the simulators' order) when h halves.
    (e_coarse,) = _mismatches(name, coarse, [1.0])
    e_fine, e_wrong = _mismatches(name, fine, [1.0, 1.2])
    order = np.log2(e_coarse / e_fine)
    assert order > 1.6 and e_fine < 1e-2, (e_coarse, e_fine, order)
    # a diffusivity 20 % off does not match (the comparison can fail)
    assert e_wrong > 5 * e_fine, (e_wrong, e_fine)
