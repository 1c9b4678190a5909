"""diffusion_reaction: simulator against an exact solution, recovery of k(x) via the CLI."""

import numpy as np
from _runs import load, run_cli

dr = load("diffusion_reaction")


def test_simulator_exact_for_constant_reaction():
    # nu u'' - k u = sin(2 pi x) with constant k: u = -sin(2 pi x) / (4 pi^2 nu + k), which
    # also meets u(0) = u(1) = 0
    sim = dr.simulate(nx=51, reaction="constant", refine=8)
    x = sim.grid.coords("x")
    exact = -np.sin(2 * np.pi * x) / (4 * np.pi**2 * 0.01 + 0.5)
    np.testing.assert_allclose(sim.clean["u"], exact, rtol=0, atol=1e-9)


def test_richardson_beats_single_solve():
    sim = dr.simulate(nx=21, reaction="constant", refine=4)
    x, u_h = dr.solve_fd(lambda s: 0.5 + 0 * s, 0.01, 80)
    exact = -np.sin(2 * np.pi * x[::4]) / (4 * np.pi**2 * 0.01 + 0.5)
    plain = np.abs(u_h[::4] - exact).max()
    extrapolated = np.abs(sim.clean["u"] - exact).max()
    assert extrapolated < 1e-2 * plain


def test_solve_is_fourth_order():
    """Richardson's combination of two 2nd-order solves: halving h divides the error by 16
    (the simulator and the information-limit benchmark both use `solve`)."""
    k = 0.5
    x = np.linspace(0.0, 1.0, 11)
    exact = -np.sin(2 * np.pi * x) / (4 * np.pi**2 * 0.01 + k)
    errs = [np.abs(dr.solve(lambda s: k + 0 * s, 0.01, 11, r) - exact).max() for r in (2, 4)]
    assert 16 / 1.3 < errs[0] / errs[1] < 16 * 1.3, errs


def test_reaction_recovered_through_cli(tmp_path):
    metrics = run_cli("diffusion_reaction_small.toml", tmp_path)
    err = metrics["errors"]["k"]
    start = metrics["initial_errors"]["k"]["rel_l2"]
    # smooth = "auto": measured 0.075 from 0.53 on 61 nodes, clean data (0.019 with the
    # hand-set weight 1e-6 the config had)
    assert err["rel_l2"] < 0.1, err
    assert err["rel_l2"] < 0.2 * start
    assert err["corr"] > 0.99
