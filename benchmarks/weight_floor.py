"""How far can a better weight take the default estimator? A fine weight curve, with the truth.

Usage (from the repository root):

    python benchmarks/weight_floor.py [--cases diffusion_reaction darcy_inclusion ...]
        [--noise 0.05] [--draws 5] [--per-decade 4] [--decades 2] [--steps 2000]
        [--core N] [--json out.json]

A benchmark, not a test; it uses the truth, so nothing in it may choose a default. For the
solved-state cases of `benchmarks/accuracy_suite.py` (same simulators, grids and evaluation
draws, noise seeds 100, 101, ...), per draw:

1. `run = mj.auto_run(module, dataset)`: the default (its weight chosen by modified GCV over
   decades, each trial a short fit from the equation-error estimate);
2. the same output-error problem refitted from the default's result (`run.problem`,
   `run.unknowns`) at `per-decade` weights per decade over `decades` decades on either side
   of the default's weight, each fit run much longer (`--steps` evaluations of the
   one-evaluation L-BFGS, `mollijax.lbfgs`, the default's optimiser) so that the curve is
   that of the weight and not of where a short fit stopped. Each fit's error against the
   truth, chi-square per node and `V` (GCV with the default's gamma,
   `run.record["gcv_gamma"]`) are recorded.

Printed per case (mean over the draws): the default's error, the **fine oracle** (the
smallest error on the fine curve or the default's: the best any weight of this estimator
reaches, with the truth), the error of the fine curve's own `V` minimum (GCV evaluated on
long fits), and the median factor between the fine oracle's weight and the default's. A
target below the fine oracle cannot be met by choosing the weight better: it needs another
estimator or prior.
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

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import accuracy_suite as suite  # noqa: E402

import mollijax as mj  # noqa: E402

SOLVED = ("diffusion_reaction", "darcy_smooth", "darcy_inclusion", "plate")


def one_draw(case: dict, module, noise: float, seed: int, weights_per_decade: int,
             decades: int, steps: int) -> dict:
    name = case["unknown"]
    ds = module.simulate(noise=noise, seed=seed, **case["full"])
    start = time.process_time()
    run = mj.auto_run(module, ds)
    cpu = time.process_time() - start
    default = suite.rel_error(run.result.values, ds, name)
    if run.choice is None:
        raise SystemExit(f"{case['problem']}: the default chose no weight (no solved state).")
    w0 = float(run.choice.weight)
    term = next(t for t in run.record["weights"] if t.startswith(f"reg:{name}:"))
    n = weights_per_decade * decades
    weights = [w0 * 10.0 ** (j / weights_per_decade) for j in range(n, -n - 1, -1)]
    start = time.process_time()
    curve = mj.gcv(run.problem, run.unknowns, term=term, sigma=run.record["noise"]["sigma"],
                   weights=weights, optimiser=mj.lbfgs(), steps=steps, continuation=False,
                   gamma=run.record["gcv_gamma"])
    fine_cpu = time.process_time() - start
    trials = [{"factor": t.weight / w0, "V": t.score, "chi2": t.misfit,
               "error": suite.rel_error(t.values, ds, name)} for t in curve.curve]
    best = min(trials, key=lambda t: t["error"])
    v_min = min(trials, key=lambda t: t["V"])
    return {"seed": seed, "default": default, "default_cpu_s": cpu, "fine_cpu_s": fine_cpu,
            "default_weight": w0, "fine_oracle": min(default, best["error"]),
            "fine_oracle_factor": best["factor"], "fine_gcv": v_min["error"],
            "fine_gcv_factor": v_min["factor"], "curve": trials}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["diffusion_reaction", "darcy_inclusion"],
                    choices=SOLVED)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--per-decade", type=int, default=4)
    ap.add_argument("--decades", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.draws < 1 or args.per_decade < 1 or args.decades < 1 or args.steps < 1:
        ap.error("--draws, --per-decade, --decades and --steps must be >= 1")

    out = {"provenance": suite.provenance(), "noise": args.noise, "steps": args.steps,
           "per_decade": args.per_decade, "decades": args.decades, "cases": {}}
    print(f"commit {out['provenance']['commit'][:10]}"
          + (" (mollijax/ modified)" if out["provenance"]["mollijax_dirty"] else ""))
    rows = []
    for key in args.cases:
        case = suite.CASES[key]
        module = mj.load_problem(case["problem"])
        draws = []
        for i in range(args.draws):
            seed = suite.EVAL_SEEDS_START + i
            d = one_draw(case, module, args.noise, seed, args.per_decade, args.decades,
                         args.steps)
            draws.append(d)
            print(f"{key} seed {seed}: default {d['default']:.2%} (cpu {d['default_cpu_s']:.1f} s),"
                  f" fine oracle {d['fine_oracle']:.2%} at {d['fine_oracle_factor']:.3g} x the "
                  f"default's weight, V's minimum on the fine curve {d['fine_gcv']:.2%} at "
                  f"{d['fine_gcv_factor']:.3g} x (fine curve {d['fine_cpu_s']:.0f} s)",
                  flush=True)
            out["cases"][key] = draws
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(out, f, indent=1)
        rows.append({
            "case": key, "noise": f"{args.noise:.0%}", "draws": len(draws),
            "default": f"{np.mean([d['default'] for d in draws]):.2%}",
            "fine oracle": f"{np.mean([d['fine_oracle'] for d in draws]):.2%}",
            "V min, long fits": f"{np.mean([d['fine_gcv'] for d in draws]):.2%}",
            "oracle weight / default's (median)":
                f"{np.median([d['fine_oracle_factor'] for d in draws]):.3g}",
            "target": f"{case['target']:.1%}" if case["target"] else "-",
        })
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
