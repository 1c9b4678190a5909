"""Edge-preserving prior on the 2-D inclusion: smoothed TV instead of H1 in the solved-state fit.

Usage (from the repository root):

    python benchmarks/inclusion_tv.py [--n 25] [--draws 5] [--first-seed 100] [--core N]
        [--delta 0.1]

`-div(k grad u) = f` with `k = 3` in a disk and 1 outside (the project's simulator, 5 %
noise). `mj.auto_run` on a tuning draw (seed 1000) gives the default output-error problem
(solved steady state, H1 smoothness, weight by the discrepancy principle) and its start.
The same problem with the H1 term replaced by the smoothed total variation
`mean(sqrt(|grad k|^2 + delta^2))` (`mj.TV`, `delta = --delta x mean(k) / length`: a
gradient that changes k by a tenth of its size across the domain counts as flat) gets its
weight from the discrepancy principle on the same tuning draw (`mj.discrepancy`, the weights
`geomspace(10, 1e-5, 13) x length / mean(k)`, `tau = 1`, each fit from the start).

Both problems are then fitted (L-BFGS, the same tolerance) to the evaluation draws
(seeds `first-seed ..`, chosen nothing) and `mj.laplace` gives each fit's default error bar.
Printed per draw and as a mean: the relative L2 error of k and the fraction of nodes with
`|estimate - truth| <= 2 std`, for H1 and TV side by side (the same draws, the same run).
"""

from __future__ import annotations

import sys
import time

from _one_core import pin

pin(sys.argv)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import option  # noqa: E402

jax.config.update("jax_enable_x64", True)

import mollijax as mj  # noqa: E402

N = option(sys.argv, "--n", 25)
DRAWS = option(sys.argv, "--draws", 5)
FIRST = option(sys.argv, "--first-seed", 100)
DELTA = option(sys.argv, "--delta", 0.1)
NOISE = 0.05


def main() -> None:
    module = mj.load_problem("darcy2d")
    params = {"n": N, "coefficient": "inclusion"}
    tuning = module.simulate(noise=NOISE, seed=1000, **params)
    t0 = time.perf_counter()
    auto = mj.auto_run(module, tuning)
    print(f"auto_run {time.perf_counter() - t0:.0f} s; {auto.record['criterion']}", flush=True)
    h1, start = auto.problem, auto.unknowns
    sigma = auto.record["noise"]["sigma"]
    c = float(np.mean(np.asarray(auto.stages["equation error"].values["k"])))
    length = 1.0
    tv_term = mj.TV("k", 1.0, delta=DELTA * c / length)
    tv = eqx.tree_at(lambda p: p.terms, h1,
                     tuple(tv_term if t.name == "reg:k:smooth" else t for t in h1.terms))
    weights = [w * length / c for w in np.geomspace(1e1, 1e-5, 13)]
    t0 = time.perf_counter()
    choice = mj.discrepancy(tv, start, term="reg:k:tv", sigma=sigma, weights=weights,
                            optimiser=optax.lbfgs(), steps=100, chunk=50, tau=1.0,
                            stop_early=True, continuation=False)
    print(f"TV weight {time.perf_counter() - t0:.0f} s; {choice.message}", flush=True)
    tv = tv.with_weights({"reg:k:tv": float(choice.weight)})
    tol = float(auto.record.get("tol_output_error", 1e-9))
    truth = np.asarray(module.simulate(noise=0.0, seed=0, **params).truth["k"])
    rows = {"H1 (default)": [], "TV": []}
    for seed in range(FIRST, FIRST + DRAWS):
        data = module.simulate(noise=NOISE, seed=seed, **params).data["u"]
        line = [f"seed {seed}"]
        for label, problem in (("H1 (default)", h1), ("TV", tv)):
            p = problem.with_data({"u": data})
            t0 = time.perf_counter()
            r = mj.fit(p, start, optax.lbfgs(), steps=1000, chunk=50, tol=tol, progress=False)
            seconds = time.perf_counter() - t0
            k = np.asarray(r.values["k"])
            std = mj.laplace(p, r).std["k"]
            error = float(np.linalg.norm(k - truth) / np.linalg.norm(truth))
            cover = float(np.mean(np.abs(k - truth) <= 2.0 * std))
            rows[label].append((error, cover, seconds))
            line.append(f"{label}: error {error:.1%} cover {cover:.1%} "
                        f"({int(r.steps)} steps, {seconds:.1f} s, {r.status.value})")
        print("; ".join(line), flush=True)
    print()
    print("| prior | draws | mean rel error | cover 2 std | fit s (median) |")
    print("|---|---|---|---|---|")
    for label, values in rows.items():
        e, cv, s = (np.array(v) for v in zip(*values, strict=True))
        print(f"| {label} | {len(e)} | {e.mean():.1%} | {cv.mean():.1%} | {np.median(s):.1f} |")


if __name__ == "__main__":
    main()
