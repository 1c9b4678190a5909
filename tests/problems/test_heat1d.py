"""heat1d through the CLI, and its contract."""

import numpy as np
from _runs import run_cli

from mollijax import problems


def test_registry_lists_contract_modules():
    names = problems.names()
    for name in ("heat1d", "forcing", "poisson_coefficient", "diffusion_reaction"):
        assert name in names
        module = problems.get(name)
        assert set(module.UNKNOWNS) and module.STATE and module.ORDER >= 1


def test_diffusivity_recovered_through_cli(tmp_path):
    metrics = run_cli("heat1d_small.toml", tmp_path)
    err = metrics["errors"]["D"]
    start = metrics["initial_errors"]["D"]["rel_l2"]
    assert err["rel_l2"] < 0.12, err  # measured 0.087 on 41x41 after 600 steps
    assert err["rel_l2"] < 0.2 * start
    fields = np.load(tmp_path / "fields.npz")
    np.testing.assert_allclose(fields["D_truth"], 0.02 + 0.015 * np.sin(
        2 * np.pi * np.linspace(0, 1, 41)))


def test_evolved_state_through_cli(tmp_path):
    # the same 41 x 41 grid at 5 % noise: the evolved state recovers D from noisy data
    metrics = run_cli("heat1d_evolve_small.toml", tmp_path)
    err = metrics["errors"]["D"]["rel_l2"]
    assert err < 0.04, err  # measured 0.028 (tests/solver/test_evolution.py, same draw)
    assert set(metrics["final_losses"]) == {"data:u", "condition:u(0)", "condition:u(1)", "total"}
    with np.load(tmp_path / "fields.npz") as fields:
        assert fields["u"].shape == (41,)  # the fitted initial profile


def test_evolve_state_errors():
    import pytest

    from mollijax.problems import ProblemSpecError

    heat = problems.get("heat1d")
    sim = heat.simulate(nx=21, nt=11)
    with pytest.raises(ProblemSpecError, match=r"takes only \('accuracy', 'substeps'\)"):
        problems.build(heat, sim, state={"representation": "evolve", "width": 8})
    with pytest.raises(ProblemSpecError, match="exists only on the grid"):
        problems.build(heat, sim, derivatives="autodiff", state="evolve",
                       unknowns={"D": "mlp"})
    forcing = problems.get("forcing")
    with pytest.raises(ProblemSpecError, match="no evolution form"):
        problems.build(forcing, forcing.simulate(), state="evolve")


def test_evolved_run_records_its_integration(tmp_path):
    metrics = run_cli("heat1d_evolve_small.toml", tmp_path, "--steps", "2")
    assert metrics["evolution"]["fields"] == ["u"] and metrics["evolution"]["substeps"] >= 1
    with np.load(tmp_path / "fields.npz") as fields:
        assert fields["u_evolved"].shape == (41, 41)
        # the initial profile is the unknown, except at the pinned ends (u = 0 exactly there)
        np.testing.assert_allclose(fields["u_evolved"][1:-1, 0], fields["u"][1:-1])
        np.testing.assert_array_equal(fields["u_evolved"][[0, -1]], 0.0)
