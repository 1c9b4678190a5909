"""heat1d through the CLI, and the contract of the shipped problem files."""

import numpy as np
import pytest
from _runs import SHIPPED, load, run_cli

from mollijax.cli import prepare
from mollijax.config import ConfigError, from_dict


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_follow_the_contract(name):
    module = load(name)
    assert set(module.UNKNOWNS) and module.STATE and module.ORDER >= 1
    assert module.DESCRIPTION and set(module.DEFAULTS)
    assert not hasattr(module, "CONFIG")  # the default run lives only in configs/<name>.toml


def test_every_ready_problem_is_shipped():
    for name in ("heat1d", "heat2d", "forcing", "poisson_coefficient", "diffusion_reaction",
                 "chromatin"):
        assert name in SHIPPED


def test_diffusivity_recovered_through_cli(tmp_path):
    metrics = run_cli("heat1d_small.toml", tmp_path)
    err = metrics["errors"]["D"]
    start = metrics["initial_errors"]["D"]["rel_l2"]
    assert err["rel_l2"] < 0.12, err  # measured 0.068 on 41x41 after 600 steps (smooth "auto")
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
        # the run records its integration: the evolved field, and the initial profile is the
        # unknown, except at the pinned ends (u = 0 exactly there)
        assert fields["u_evolved"].shape == (41, 41)
        np.testing.assert_allclose(fields["u_evolved"][1:-1, 0], fields["u"][1:-1])
        np.testing.assert_array_equal(fields["u_evolved"][[0, -1]], 0.0)
    evolution = metrics["evolution"]
    assert evolution["fields"] == ["u"]
    assert evolution.get("substeps", 1) >= 1


def _config(**tables):
    return from_dict({"problem": {"name": "heat1d", "nx": 21, "nt": 11}, **tables})


def test_evolve_state_errors():
    with pytest.raises(ConfigError, match=r"\[state\] key 'width' is a network option"):
        _config(state={"representation": "evolve", "width": 8})
    with pytest.raises(Exception, match="exists only on the grid"):
        prepare(_config(derivatives={"method": "autodiff"}, state={"representation": "evolve"},
                        unknowns={"D": {"representation": "mlp"}}))
    with pytest.raises(ConfigError, match="no evolution form"):
        from_dict({"problem": {"name": "forcing"}, "state": {"representation": "evolve"}})
