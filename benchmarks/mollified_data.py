"""A network state fitted to the data raw or mollified (the mollifier-layers paper's choice).

Usage (from the repository root):

    python benchmarks/mollified_data.py [--n 41] [--seeds 3] [--steps 4000] [--core N]

The 1-D heat problem `u_t = (D(x) u_x)_x` (the project's simulator, `n x n` nodes) at 1 % and
5 % noise. The state `u(x, t)` and `D(x)` are networks (MLP 2-32-32-32-1 and 1-16-16-1,
positive `D`), the residual uses mollified derivatives (Bump kernel, half-widths from
`mj.suggest_widths`, i.e. from the data's own noise), Adam (learning rate 1e-3, cosine decay)
for `--steps` steps with the loss recorded. Two data terms, everything else equal:

- raw: `mean (u - u_obs)^2` over every node (the default `DataMisfit`);
- mollified: `mean (u * phi_eps - u_obs)^2` on the residual's interior
  (`Problem(..., mollified_data=True)`), the network's mollified output against the data,
  as in the paper.

Nothing is tuned: the settings above were fixed before the first run and are the same for
both terms and every draw. Printed per draw: the relative L2 error of `D` on the interior
(`mj.score`), the final loss terms and the wall time; then the mean per noise level.
"""

from __future__ import annotations

import sys
import time

from _one_core import pin

pin(sys.argv)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import format_table, option  # noqa: E402

jax.config.update("jax_enable_x64", True)

import mollijax as mj  # noqa: E402

N = option(sys.argv, "--n", 41)
SEEDS = option(sys.argv, "--seeds", 3)
STEPS = option(sys.argv, "--steps", 4000)
NOISES = (0.01, 0.05)


def heat(s):
    return s.d(s.u, "t") - s.d(s.D * s.d(s.u, "x"), "x")


def fit(sim, mollified: bool):
    grid = sim.grid
    eps = mj.suggest_widths(grid, 2, sim.data)
    problem = mj.Problem(grid, heat, data={"u": sim.data["u"]},
                         derivatives=mj.Mollifier(grid, eps, kernel=mj.Bump()),
                         mollified_data=mollified)
    k_u, k_d = jax.random.split(jax.random.PRNGKey(0))
    unknowns = {
        "u": mj.NetworkField(mj.MLP(2, width=32, depth=3, key=k_u), "xt"),
        "D": mj.NetworkField(mj.MLP(1, width=16, depth=2, key=k_d), "x",
                             constraint="positive", init=0.03, scale=0.1),
    }
    schedule = optax.cosine_decay_schedule(1e-3, STEPS, alpha=0.05)
    start = time.perf_counter()
    result = mj.fit(problem, unknowns, optax.adam(schedule), steps=STEPS, chunk=STEPS // 4,
                    progress=False)
    seconds = time.perf_counter() - start
    error = mj.score(result.values, sim)["D"]["rel_l2"]
    return error, result, seconds, eps


def main() -> None:
    heat1d = mj.load_problem("heat1d")
    rows = []
    for noise in NOISES:
        for seed in range(SEEDS):
            sim = heat1d.simulate(nx=N, nt=N, noise=noise, seed=seed)
            row = {"noise": f"{noise:.0%}", "seed": seed}
            for label, mollified in (("raw", False), ("mollified", True)):
                err, res, sec, eps = fit(sim, mollified)
                row[f"{label}: D error"] = err
                row[f"{label}: data term"] = f"{float(res.history['data:u'][-1]):.2e}"
                row[f"{label}: s"] = f"{sec:.0f}"
                row["eps_x"] = f"{eps[0]:.3f}"
            print(row, flush=True)
            rows.append(row)
    print()
    shown = []
    for r in rows:
        shown.append({k: (f"{v:.2%}" if "D error" in k else v) for k, v in r.items()})
    for noise in NOISES:
        sel = [r for r in rows if r["noise"] == f"{noise:.0%}"]
        shown.append({"noise": f"{noise:.0%}", "seed": "mean",
                      "raw: D error": f"{np.mean([r['raw: D error'] for r in sel]):.2%}",
                      "mollified: D error":
                          f"{np.mean([r['mollified: D error'] for r in sel]):.2%}"})
    print(format_table(shown, ["noise", "seed", "eps_x", "raw: D error", "mollified: D error",
                               "raw: data term", "mollified: data term", "raw: s",
                               "mollified: s"]))


if __name__ == "__main__":
    main()
