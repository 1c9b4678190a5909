"""Kernel width `eps` against noise: derivative error and coefficient recovery, compared with
the width the default rule `eps = "auto"` picks (built on `suggest_eps`; `_common.auto_eps`).

Usage (from the repository root, with the package installed):

    python benchmarks/eps_study.py [--quick] [--json out.json] [--markdown out.md]

For each problem (full: `heat1d` and `diffusion_reaction`; quick:
`diffusion_reaction`), each noise level (0, 1, 5, 10 %) and each width
`eps = f * eps_auto` (`f` from 0.5 to 2, per axis, never below the rule's floor of
`order // 2 + 3` grid steps nor above its ceiling of a quarter of the axis), the script measures

- the derivative error: the highest-order derivative the residual uses, along the first axis
  (`ORDER` times), of the noisy data mollified at `eps`, against the same derivative of the
  clean data at the narrowest width (the floor), relative L2 on interior nodes (a tenth of
  each axis dropped, and the kernel's halo);
- the recovery error: the problem's default run (its shipped `configs/<name>.toml`: data
  state, grid unknown, its regularisers and optimiser, built by `mollijax.cli.prepare`) with
  `eps` overridden, relative L2 error of the recovered coefficient on the interior
  (`mollijax.score`).

Both curves show the bias-variance trade-off: too narrow amplifies the noise, too wide biases
the derivative. The report gives, per problem and noise level, the width the rule picks, the
best width of the scan and the errors at both.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mollijax as mj  # noqa: E402
from mollijax.cli import prepare  # noqa: E402
from mollijax.config import shipped_config  # noqa: E402

NOISES = (0.0, 0.01, 0.05, 0.10)
FACTORS = (0.5, 0.71, 1.0, 1.41, 2.0)


def candidate_widths(grid, order, base, factors):
    """`f * base` per axis, each axis at least `(order // 2 + 3) h_a`; duplicates dropped."""
    floors = [(order // 2 + 3) * h for h in grid.spacing]
    ceilings = [max(n * h / 4, fl) for n, h, fl in zip(grid.shape, grid.spacing, floors,
                                                       strict=True)]
    out = []
    for f in sorted(factors, key=lambda f: f != 1.0):  # the rule's own width first
        eps = tuple(min(max(f * b, fl), c)
                    for b, fl, c in zip(base, floors, ceilings, strict=True))
        if not any(np.allclose(eps, e, rtol=1e-9) for _, e in out):
            out.append((f, eps))
    return sorted(out)


def derivative_error(sim, order, eps):
    grid = sim.grid
    alpha = grid.axes[0] * order
    floors = tuple((order // 2 + 3) * h for h in grid.spacing)
    ref = np.asarray(mj.Mollifier(grid, floors, boundary="odd")(sim.clean["u"], alpha))
    d = mj.Mollifier(grid, eps, boundary="odd")
    est = np.asarray(d(sim.data["u"], alpha))
    cut = tuple(slice(max(n // 10, m), n - max(n // 10, m))
                for n, m in zip(grid.shape, d.halo, strict=True))
    return float(np.linalg.norm(est[cut] - ref[cut]) / np.linalg.norm(ref[cut]))


def recover(config, eps, steps):
    cfg = config.replace(derivatives=dataclasses.replace(config.derivatives, eps=list(eps)))
    module, sim, problem, fields = prepare(cfg)
    opt = cfg.optimiser
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mj.PrecisionWarning)
        res = mj.fit(problem, fields, mj.default_optimiser(steps, opt.learning_rate),
                     steps=steps, chunk=min(opt.chunk, steps), progress=False)
    return {"status": res.status.value, "wall_s": res.wall_time,
            **C.first_error(res.values, sim)}


def study(name, noises, factors, steps_cap):
    module = mj.load_problem(name)
    base_cfg = shipped_config(name)
    steps = min(base_cfg.optimiser.steps, steps_cap)
    rows = []
    for noise in noises:
        cfg = base_cfg.replace(data=dataclasses.replace(base_cfg.data, noise=noise, seed=0))
        sim = module.simulate(noise=noise, seed=0, **cfg.params)
        grid = sim.grid
        auto = C.auto_eps(grid, module.ORDER, sim.data)
        est = mj.estimate_noise(sim.data["u"])
        for f, eps in candidate_widths(grid, module.ORDER, auto, factors):
            d_err = derivative_error(sim, module.ORDER, eps)
            rec = recover(cfg, eps, steps)
            row = {"problem": name, "order": module.ORDER, "grid": list(grid.shape),
                   "noise": noise, "noise_estimate": est, "factor": f, "eps": list(eps),
                   "eps_steps": eps[0] / grid.spacing[0], "auto_eps": list(auto),
                   "derivative_rel_l2": d_err, "steps": steps, **rec}
            rows.append(row)
            print(f"  {name:20s} noise {noise:4.2f} (est {est:.3f}) f {f:4.2f} eps "
                  f"{eps[0]:.4f} ({row['eps_steps']:4.1f} h): d^{module.ORDER} err {d_err:8.3f}, "
                  f"recovery L2 {rec.get('rel_l2', float('nan')):.4f} ({rec['status']}, "
                  f"{rec['wall_s']:.1f} s)", flush=True)
    return rows


def report(rows) -> str:
    out = []
    probs = list(dict.fromkeys(r["problem"] for r in rows))
    summary = []
    for p in probs:
        sub = [r for r in rows if r["problem"] == p]
        noises = sorted({r["noise"] for r in sub})
        factors = sorted({r["factor"] for r in sub})
        table = []
        for n in noises:
            row = {"noise": f"{n:.0%}"}
            for f in factors:
                r = next((r for r in sub if r["noise"] == n and r["factor"] == f), None)
                row[f"f={f:g}"] = ("-" if r is None else
                                   f"{r.get('rel_l2', np.nan):.3f} / {r['derivative_rel_l2']:.2g}")
            table.append(row)
        first = sub[0]
        out.append(f"\n{p} (order {first['order']}, grid {'x'.join(map(str, first['grid']))}, "
                   f"{first['steps']} steps): recovery rel. L2 / derivative rel. L2 at "
                   "eps = f * eps_auto (f = 1 is the rule's choice; widths below the floor "
                   "are clipped to it and not repeated):\n")
        out.append(C.format_table(table, list(table[0])))
        for n in noises:
            at = [r for r in sub if r["noise"] == n]
            auto = next((r for r in at if r["factor"] == 1.0), None)
            best = min(at, key=lambda r: r.get("rel_l2", np.inf))
            best_d = min(at, key=lambda r: r["derivative_rel_l2"])
            if auto is None:
                continue
            summary.append({
                "problem": p, "noise": f"{n:.0%}", "noise est.": f"{auto['noise_estimate']:.3f}",
                "eps_auto (h)": f"{auto['eps_steps']:.1f}",
                "best eps, recovery (h)": f"{best['eps_steps']:.1f}",
                "best eps, derivative (h)": f"{best_d['eps_steps']:.1f}",
                "L2 at auto": f"{auto.get('rel_l2', np.nan):.3f}",
                "L2 at best": f"{best.get('rel_l2', np.nan):.3f}",
                "auto / best": C.fmt_ratio(auto.get("rel_l2", np.nan)
                                           / best.get("rel_l2", np.nan)),
            })
    out.insert(0, "Rule vs best width of the scan (widths in grid steps h of the first axis):\n\n"
               + C.format_table(summary, list(summary[0])))
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="diffusion_reaction only, 2 noise levels, 3 widths, 400 steps")
    parser.add_argument("--problems", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="cap on the default run's steps (full: 1000)")
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    args = parser.parse_args(argv)
    if args.quick:
        names = args.problems or ["diffusion_reaction"]
        noises, factors, steps = (0.0, 0.05), (0.5, 1.0, 2.0), args.steps or 400
    else:
        names = args.problems or ["heat1d", "diffusion_reaction"]
        noises, factors, steps = NOISES, FACTORS, args.steps or 1000

    info = C.machine_info()
    print(C.describe_machine(info))
    t0 = time.perf_counter()
    rows = []
    for name in names:
        rows += study(name, noises, factors, steps)
        if args.json:  # partial results survive an interrupted run
            C.write_json(args.json, {"partial": True, "rows": rows})
    C.finish_report(args, info, rows, report(rows), time.perf_counter() - t0)


if __name__ == "__main__":
    main()
