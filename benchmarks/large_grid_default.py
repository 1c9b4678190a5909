"""The default estimator on the solved-state problems at their own (larger) default grids.

Usage (from the repository root):

    python benchmarks/large_grid_default.py [--cases plate darcy_smooth darcy_inclusion]
        [--noise 0.05] [--seeds 100 101] [--core N] [--json out.json]

A benchmark, not a test; the truth only scores. The accuracy suite runs darcy2d and the
plate at 33 x 33 (1089 nodes), where the solved state's automatic solver is the direct one;
their problem files default to 65 x 65 and 49 x 49, where it is BiCGStab
(`mollijax.DIRECT_MAX_NODES`), and a user who writes only `[problem]` and `[data]` gets those
grids. Per case and noise seed this runs `mj.auto_run(module, dataset)` with no options and
prints the coefficient's relative L2 error on interior nodes (`mj.score`), the CPU time
(`time.process_time()`, compilation included, the process pinned to one core with
`--core`), the weight generalised cross-validation chose (its index in the scan, 0 the
largest) and whether every trial's effective number of parameters was finite (a NaN there
scores the trial inf, and a scan whose every trial is inf takes its first, largest weight).
Evaluation seeds (100, 101, ...) as in `benchmarks/accuracy_suite.py`: nothing is chosen
from them.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _one_core  # noqa: E402

_one_core.pin(sys.argv)  # before jax is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import accuracy_suite as suite  # noqa: E402

import mollijax as mj  # noqa: E402

CASES = {
    "plate": ("plate", "D", {}),
    "darcy_smooth": ("darcy2d", "k", {"coefficient": "smooth"}),
    "darcy_inclusion": ("darcy2d", "k", {"coefficient": "inclusion"}),
}


def one(case: str, noise: float, seed: int) -> dict:
    problem, unknown, params = CASES[case]
    module = mj.load_problem(problem)
    ds = module.simulate(noise=noise, seed=seed, **params)
    start = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = mj.auto_run(module, ds)
    cpu = time.process_time() - start
    error = suite.rel_error(run.result.values, ds, unknown)
    trials = run.record.get("weight_choice", {}).get("curve", [])
    scores = [t.get("score") for t in trials]
    finite = all(s is not None and np.isfinite(s) for s in scores)
    weights = [t["weight"] for t in trials]
    chosen = run.record.get("weight_choice", {}).get("weight")
    index = weights.index(chosen) if chosen in weights else None
    return {"case": case, "grid": list(ds.grid.shape), "noise": noise, "seed": seed,
            "error": error, "cpu_s": cpu, "trials": len(trials), "chosen_index": index,
            "all_scores_finite": finite,
            "warnings": sorted({str(w.message)[:120] for w in caught})}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    provenance = suite.provenance()
    print(f"commit {provenance['commit'][:10]}"
          + (" (mollijax/ modified)" if provenance["mollijax_dirty"] else ""))
    rows = []
    for case in args.cases:
        for seed in args.seeds:
            r = one(case, args.noise, seed)
            rows.append(r)
            print(f"{case} {'x'.join(map(str, r['grid']))} noise {args.noise:.0%} seed {seed}: "
                  f"error {r['error']:.2%}, cpu {r['cpu_s']:.0f} s, GCV chose weight "
                  f"{r['chosen_index']} of {r['trials']} tried, every V finite: "
                  f"{r['all_scores_finite']}", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"provenance": provenance, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
