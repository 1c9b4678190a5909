"""Noise-free heat1d: the D error of the evolved state against the order of its x differences.

Usage (from the repository root, with the package installed):

    python benchmarks/heat1d_evolve_order.py [--orders 2 4 6] [--steps 1000]

Data: `problems/heat1d.py`'s `simulate` on the 101 x 101 benchmark grid without noise.
Estimator: the `evolved, D network` row of `benchmarks/heat1d.py` (an `Evolution` with
`FiniteDifference(accuracy=order)` in x, RK4 in t, a small MLP for D, optax L-BFGS), in float64
so that the optimiser's stopping point is not the limit. With exact data the remaining error
is the discretisation of the evolution (and the network's fit of D), which is what chooses the
default order. Prints the relative L2 error of D on the x nodes 10..90, the RK4 substeps and
the wall time of each fit.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402

import mollijax as mj  # noqa: E402

heat1d = mj.load_problem("heat1d")  # problems/heat1d.py


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args(argv)
    sim = heat1d.simulate(nx=101, nt=101)
    m = slice(10, -10)
    lbfgs = optax.lbfgs()
    print("| FD order | D error | RK4 substeps | L-BFGS steps | wall |")
    print("|---|---|---|---|---|")
    for order in args.orders:
        evolution = mj.Evolution(heat1d.flux_divergence,
                                 derivatives=lambda g, k=order: mj.FiniteDifference(g, accuracy=k))
        problem = mj.Problem(sim.grid, None, data={"u": sim.data["u"]}, evolution=evolution,
                             conditions=heat1d.conditions(sim))
        net = mj.MLP(1, width=16, depth=2, key=jax.random.PRNGKey(1))
        unknowns = {"u": mj.GridField(sim.data["u"][:, 0], "x"),
                    "D": mj.NetworkField(net, "x", init=0.02, scale=0.01)}
        t0 = time.perf_counter()
        result = mj.fit(problem, unknowns, lbfgs, steps=args.steps, chunk=args.steps,
                        progress=False)
        wall = time.perf_counter() - t0
        d, d_true = result.values["D"][m], sim.truth["D"][m]
        err = np.linalg.norm(d - d_true) / np.linalg.norm(d_true)
        substeps = problem.prepare(unknowns).evolution.substeps
        print(f"| {order} | {err:.3%} | {substeps} | {result.steps} | {wall:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
