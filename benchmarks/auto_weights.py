"""The discrepancy principle on 1-D steady diffusion-reaction, against the oracle weight.

Usage (from the repository root):

    python benchmarks/auto_weights.py [--core N] [--nx 101]

`nu u'' - k(x) u = f` on [0, 1], `u(0) = u(1) = 0` (`mj.load_problem("diffusion_reaction")`,
its own simulator), `k` a positive grid unknown with an H1 penalty, `u` the solved steady
state (`mj.Steady(problem.residuals["pde"])`, walls as conditions), so the data term is an
output error. For noise 1 %, 5 %, 10 % and noise draws 0-4:

- `sigma` from the data alone (`noise_sigma`), the loss scaled to a chi-square per node
  (`scaled`), and the regulariser weight chosen by `discrepancy` (degrees-of-freedom bound,
  `tau = 1`) over the grid `geomspace(100, 1e-3, 11)`;
- the oracle: the weight of the same scan with the smallest error of `k` against the truth;
- printed: chosen and oracle weights, their relative L2 errors of `k`, the error ratio, the
  L-curve corner (diagnostic), the ratio of estimated to true noise and the CPU time of
  each scan (compilation included in the first row only).

This is a measurement, not a tuning run: nothing here is chosen from these draws; the
criterion, its threshold and the weight grid were fixed before running it, and the truth
is used only to score.
"""

from __future__ import annotations

import sys
import time

from _one_core import pin

pin(sys.argv)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _common import format_table  # noqa: E402

jax.config.update("jax_enable_x64", True)

import mollijax as mj  # noqa: E402
from mollijax import discrepancy, noise_sigma, scaled  # noqa: E402

WEIGHTS = np.geomspace(1e2, 1e-3, 11)


def main(argv: list[str]) -> None:
    nx = int(argv[argv.index("--nx") + 1]) if "--nx" in argv else 101
    spec = mj.load_problem("diffusion_reaction")
    steady = mj.Steady(spec.residuals["pde"])
    walls = [mj.Condition("u", {"x": 0}, 0.0), mj.Condition("u", {"x": -1}, 0.0)]
    rows = []
    for noise in (0.01, 0.05, 0.10):
        for seed in range(5):
            data = spec.simulate(nx=nx, noise=noise, seed=seed)
            k_true = data.truth["k"]
            u_obs = data.data["u"]
            sigma = noise_sigma({"u": u_obs})
            problem = mj.Problem(data.grid, None, data={"u": u_obs}, known=data.known,
                                 steady=steady, conditions=walls, regularisers=[mj.H1("k", 1.0)])
            unknowns = {"k": mj.GridField(np.full(nx, 0.5), "x", constraint="positive")}
            start = time.process_time()
            choice = discrepancy(scaled(problem, sigma), unknowns, term="reg:k:smooth",
                                 sigma=sigma, weights=WEIGHTS, steps=200)
            cpu = time.process_time() - start
            errors = [np.linalg.norm(t.values["k"] - k_true) / np.linalg.norm(k_true)
                      for t in choice.curve]
            best = int(np.argmin(errors))
            chosen = [t.weight for t in choice.curve].index(choice.weight)
            true_sigma = noise * float(np.std(data.clean["u"]))
            rows.append({
                "noise": f"{noise:.0%}", "draw": seed,
                "weight": f"{choice.weight:.3g}", "oracle": f"{choice.curve[best].weight:.3g}",
                "err": f"{errors[chosen]:.4f}", "oracle err": f"{errors[best]:.4f}",
                "ratio": f"{errors[chosen] / errors[best]:.2f}",
                "corner": f"{choice.corner:.3g}" if choice.corner else "-",
                "sigma est/true": f"{sigma['u'] / true_sigma:.2f}", "cpu s": f"{cpu:.1f}",
            })
            print(rows[-1], flush=True)
    print(format_table(rows, list(rows[0])))
    ratios = [float(r["ratio"]) for r in rows]
    print(f"error ratio chosen/oracle: median {np.median(ratios):.2f}, max {max(ratios):.2f}")


if __name__ == "__main__":
    main(sys.argv)
