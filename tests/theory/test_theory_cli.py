"""`mollijax theory ...` runs each demonstration from a config and writes checked metrics."""

import json
import pathlib

from mollijax.cli import main

CONFIGS = pathlib.Path(__file__).parent.parent.parent / "configs"


def _run(part, tmp_path):
    out = tmp_path / part
    assert main(["theory", part, str(CONFIGS / f"theory_{part}_small.toml"), "--out", str(out),
                 "--quiet"]) == 0
    assert any(out.glob("*.png"))
    return json.loads((out / "metrics.json").read_text())


def test_theory_electro_cli(tmp_path):
    m = _run("electro", tmp_path)
    assert max(m["screened_nodewise_to_protons"]) < 0.02
    assert m["gaussian_first_electron_to_midpoint"] < 1e-6
    assert m["recovery_max_position_error"] < 0.03
    assert m["recovery_max_charge_error"] < 0.1


def test_theory_transport_cli(tmp_path):
    # the one run of the whole transport demonstration in the suite (seconds of compiles)
    m = _run("transport", tmp_path)
    assert {p.name for p in (tmp_path / "transport").glob("*.png")} == {
        "transport_particles.png", "transport_densities.png", "transport_entropy.png",
        "transport_fit.png"}
    assert len(m["D_exact_flow"]) == 2 and all(len(row) == 2 for row in m["D_exact_flow"])
    assert m["D_exact_flow_max_error"] < 0.06
    assert m["D_brownian_max_error"] < 0.06
    assert m["dH_dt_plus_I_max_relative"] < 1e-2
