"""`mollijax theory ...` runs each demonstration from a config and writes checked metrics."""

import json
import pathlib
import tomllib

import jax
import numpy as np
import pytest

import mollijax as mj
from mollijax.cli import main

CONFIGS = pathlib.Path(__file__).parent.parent.parent / "configs"


def _run(part, tmp_path):
    out = tmp_path / part
    assert main(["theory", part, str(CONFIGS / f"theory_{part}_small.toml"), "--out", str(out),
                 "--quiet"]) == 0
    assert any(out.glob("*.png"))
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def electro_metrics(tmp_path_factory):
    """One run of the small electrodynamics demonstration, shared by the two tests below (each
    checks different metrics of the same run; a second run only reproduced the first)."""
    return _run("electro", tmp_path_factory.mktemp("theory_cli"))


def test_theory_electro_cli(electro_metrics):
    m = electro_metrics
    assert max(m["screened_nodewise_to_protons"]) < 0.02
    assert m["gaussian_first_electron_to_midpoint"] < 1e-6
    assert m["recovery_max_position_error"] < 0.03
    assert m["recovery_max_charge_error"] < 0.1


def test_theory_electro_auto_width_is_the_rule(el, electro_metrics):
    # the small config says eps = "auto": seed 0's width is the library's rule applied to the
    # potential estimated from seed 0's samples, recomputed here outside `run_recovery`
    with open(CONFIGS / "theory_electro_small.toml", "rb") as f:
        assert tomllib.load(f)["recovery"]["eps"] == "auto"
    m = electro_metrics
    cfg = el.electro_config({"recovery": {"grid": 64, "samples": 100_000}})["recovery"]
    grid = mj.Grid.from_bounds((64, 64), (0.0, 0.0), (1.0, 1.0), periodic=True)
    kt, ks = jax.random.split(jax.random.key(0))
    teacher = el.random_teacher(kt, cfg["protons"], 1.0, cfg["min_separation"],
                                tuple(cfg["charge_range"]), cfg["signed"])
    v = el.estimate_potential(*el.sample_teacher(
        teacher, el.ScreenedUnit(cfg["lam"], cfg["delta"]), grid, ks, cfg["samples"]), grid)
    noise = mj.estimate_noise(v)
    assert noise > 0  # Monte Carlo noise: the rule is above its floor of 4 steps
    expected = mj.suggest_eps(grid, 2, noise)
    assert expected > 4 * grid.spacing[0]
    assert m["recovery_eps_rule"] == "auto"
    np.testing.assert_allclose(m["recovery_eps"], [expected], rtol=1e-12)
    assert m["recovery_per_seed"][0]["eps"] == m["recovery_eps"][0]


def test_theory_transport_cli(tmp_path, tr):
    # the one run of the whole transport demonstration in the suite (seconds of compiles)
    m = _run("transport", tmp_path)
    assert {p.name for p in (tmp_path / "transport").glob("*.png")} == {
        "transport_particles.png", "transport_densities.png", "transport_entropy.png",
        "transport_fit.png"}
    assert len(m["D_exact_flow"]) == 2 and all(len(row) == 2 for row in m["D_exact_flow"])
    assert m["D_exact_flow_max_error"] < 0.06
    assert m["D_brownian_max_error"] < 0.06
    assert m["dH_dt_plus_I_max_relative"] < 1e-2
    # eps = "auto" (the small config says so): each fit's widths are the library's rule on
    # its own snapshots, inside their common support; recomputed here for the exact flow
    with open(CONFIGS / "theory_transport_small.toml", "rb") as f:
        assert tomllib.load(f)["eps"] == "auto"
    assert m["eps_rule"] == "auto"
    cfg = tr.make_config({"particles": 20000, "grid_points": 48})
    mix = tr.GaussianMixture(cfg["weights"], cfg["means"], cfg["covariances"])
    x0 = mix.sample(jax.random.split(jax.random.PRNGKey(cfg["seed"]), 4)[0], cfg["particles"])
    grid = mj.Grid.from_bounds((48, 48), (-6.0, -6.0), (6.0, 6.0))
    times = np.linspace(0.0, cfg["total_time"], cfg["snapshots"])
    rho = np.asarray(tr.snapshot_densities(tr.exact_flow(mix, x0, times), grid))
    support = np.all(rho > 0, axis=0)
    expected = mj.suggest_widths(grid, 2, dict(enumerate(rho)), domain=support)
    np.testing.assert_allclose(m["eps_exact_flow"], expected, rtol=1e-12)
    assert min(expected) > 4 * grid.spacing[0]  # above the rule's floor: the noise was seen
    for name in ("dae_layers", "brownian"):
        assert len(m[f"eps_{name}"]) == 2 and min(m[f"eps_{name}"]) >= 4 * grid.spacing[0]
