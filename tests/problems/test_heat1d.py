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
