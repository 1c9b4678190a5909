"""One table per ready problem: error of the recovered coefficient at noise 0, 1, 5 and 10 %,
mollifier vs autodiff derivatives, with time and memory.

Usage (from the repository root, with the package installed):

    python benchmarks/problems_table.py [--quick] [--json out.json] [--markdown out.md]

For every shipped problem file (`problems/*.py`, `mollijax.config.shipped_problems()`) with a
shipped configuration of the same name, in order of their derivative order, two configurations
are run at each noise level (seed 0):

- `default`: the problem's default run, its shipped configuration `configs/<name>.toml`
  (`mollijax.config.shipped_config(name)`: the observed field used as mollified data, a grid
  unknown, its regularisers, eps and optimiser, at its grid size and number of steps), built
  as `mollijax run` builds it (`mollijax.cli.prepare`). Mollifier derivatives only: nested
  autodiff cannot differentiate data, only a network. A configuration with only [problem]
  and [data] (`[state] representation = "auto"`) is a sequence of fits: it runs
  `mj.auto_run` as `mollijax run` does (derivatives "auto_run"; no single step to time, so
  "step" and "XLA memory" are "-", "total" is the call's wall time).
- `equal footing`: the state `u` is an `MLP` (width 32, depth 3) fitted to the data, the
  coefficient an `MLP` (width 16, depth 2, output scaled by its initial value), no
  regulariser, the problem's boundary conditions where it has them; the same networks,
  initial parameters, residual, optimiser (Adam, cosine decay, `--lr`) and number of steps
  for `mollifier` (eps from the default rule of `eps = "auto"`, `_common.auto_eps`) and
  `autodiff`. Grids are capped
  (101 nodes in 1-D, 17 per axis in 2-D, 9 in 3-D) so that nested autodiff fits the budget.

Each run compiles one training step (value and gradient of the loss, optimiser update;
`benchmarks/paper_comparison.py`'s `Runner`) and trains with it, which is what `fit` does.
Reported: relative L2 error of the recovered coefficient on interior nodes
(`mollijax.score`; relative error for a constant), the median time of one step,
the total time of a run (compile + all steps, median over noise levels), XLA's memory
analysis of the step (argument + output + temp) and the growth of the process RSS during
training (largest over noise levels).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from paper_comparison import Runner, build_run  # noqa: E402  (enables float64)

import mollijax as mj  # noqa: E402
from mollijax.cli import load_data, prepare  # noqa: E402
from mollijax.config import shipped_config, shipped_configs, shipped_problems  # noqa: E402

NOISES = (0.0, 0.01, 0.05, 0.10)
CAPS = {1: 101, 2: 17, 3: 9}


def capped_params(module, ndim_hint: int | None = None, quick: bool = False) -> dict:
    dims = [k for k in ("nx", "ny", "nt", "n") if k in module.DEFAULTS]
    ndim = ndim_hint or len(dims) + ("n" in dims)  # `n` is the size of two axes (heat2d)
    cap = CAPS.get(ndim, 15)
    if quick:
        cap = {1: 41, 2: 13}.get(ndim, 7)
    return {k: cap for k in dims if isinstance(module.DEFAULTS[k], int)
            and module.DEFAULTS[k] > cap}


def time_runner(r: Runner, rounds: int, budget: float) -> float:
    for _ in range(rounds):
        r.time_round(budget)
    return float(np.median(r.samples))


def default_rows(name, noises, steps_cap, rounds, budget):
    cfg0 = shipped_config(name)
    steps = min(cfg0.optimiser.steps, steps_cap)
    opt = mj.default_optimiser(steps, cfg0.optimiser.learning_rate)
    out = []
    if cfg0.state.representation == "auto":
        return auto_rows(name, cfg0, noises)
    for noise in noises:
        cfg = cfg0.replace(data=dataclasses.replace(cfg0.data, noise=noise, seed=0))
        module, sim, problem, fields = prepare(cfg)
        r = Runner(problem, fields, opt, "mollifier")
        step_s = time_runner(r, rounds, budget)
        t = r.train(problem, steps, sim)
        eps = getattr(problem.derivatives, "eps", None)
        out.append({"problem": name, "config": "default", "method": "mollifier",
                    "noise": noise, "grid": list(sim.grid.shape), "steps": steps,
                    "eps": list(eps) if isinstance(eps, tuple) else eps,
                    "step_s": step_s, "compile_s": r.compile_s, "memory": r.memory,
                    "total_s": r.compile_s + t["train_s"], **t})
        print(f"  {name:20s} default   mollifier noise {noise:4.2f}: L2 "
              f"{out[-1].get('rel_l2', out[-1].get('rel_error', np.nan)):.4f} "
              f"({t['status']}), step {C.fmt_seconds(step_s)}", flush=True)
    return out


def auto_rows(name, cfg0, noises):
    """The default of a configuration with `[state] representation = "auto"` (only [problem]
    and [data]): `mj.auto_run`, as `mollijax run` runs it. A sequence of fits, so no single
    step to time: `step_s` is NaN, `total_s` the whole call's wall time, memory not
    measured (XLA's analysis is of one compiled step)."""
    out = []
    for noise in noises:
        cfg = cfg0.replace(data=dataclasses.replace(cfg0.data, noise=noise, seed=0))
        module, sim = load_data(cfg)
        with C.RssPeak() as rss:
            start = time.perf_counter()
            run = mj.auto_run(module, sim, cfg)
            wall = time.perf_counter() - start
        error = C.first_error(run.result.values, sim)
        rel = error.get("rel_l2", error.get("rel_error", np.nan))
        out.append({"problem": name, "config": "default", "method": "auto_run",
                    "noise": noise, "grid": list(sim.grid.shape),
                    "steps": int(sum(st["steps"] for st in run.record["stages"])),
                    "estimator": run.record.get("estimator"),
                    "evolved": run.record.get("evolved"),
                    "step_s": float("nan"), "compile_s": float("nan"),
                    "memory": {"peak": None}, "total_s": wall,
                    "rss_delta": rss.peak_delta,
                    "status": "completed" if run.result.ok else "diverged", **error})
        print(f"  {name:20s} default   auto_run  noise {noise:4.2f}: L2 {rel:.4f} "
              f"({run.record.get('estimator')}), {wall:.1f} s", flush=True)
    return out


def equal_rows(name, noises, steps, lr, rounds, budget, quick):
    module = mj.load_problem(name)
    params = capped_params(module, quick=quick)
    sims = {n: module.simulate(noise=n, seed=0, **params) for n in noises}
    opt = mj.default_optimiser(steps, lr)
    out = []
    runners: dict = {}
    for noise in noises:
        sim = sims[noise]
        eps = C.auto_eps(sim.grid, module.ORDER, sim.data)
        fresh = []
        for method in ("autodiff", "mollifier"):
            key = (method, None if method == "autodiff" else eps)
            problem, fields = build_run(module, sim, "mlp", method, eps)
            if key not in runners:
                runners[key] = Runner(problem, fields, opt, method)
                fresh.append(runners[key])
        for _ in range(rounds):  # interleaved timing of the newly compiled steps
            for r in fresh:
                r.time_round(budget)
        for method in ("autodiff", "mollifier"):
            key = (method, None if method == "autodiff" else eps)
            r = runners[key]
            problem, _ = build_run(module, sim, "mlp", method, eps)
            t = r.train(problem, steps, sim)
            out.append({"problem": name, "config": "equal footing", "method": method,
                        "noise": noise, "grid": list(sim.grid.shape), "steps": steps,
                        "eps": list(eps) if method == "mollifier" else None,
                        "step_s": float(np.median(r.samples)), "compile_s": r.compile_s,
                        "memory": r.memory, "total_s": r.compile_s + t["train_s"], **t})
            print(f"  {name:20s} equal     {method:9s} noise {noise:4.2f}: L2 "
                  f"{out[-1].get('rel_l2', out[-1].get('rel_error', np.nan)):.4f} "
                  f"({t['status']}), step {C.fmt_seconds(out[-1]['step_s'])}", flush=True)
    return out


def report(rows) -> str:
    out = []
    for p in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == p]
        module = mj.load_problem(p)
        table = []
        for cfg in ("default", "equal footing"):
            for method in ("auto_run", "mollifier", "autodiff"):
                rs = [r for r in sub if r["config"] == cfg and r["method"] == method]
                if not rs:
                    continue
                first = rs[0]
                row = {"configuration": cfg, "derivatives": method,
                       "grid": "x".join(map(str, first["grid"])), "steps": first["steps"]}
                for r in sorted(rs, key=lambda r: r["noise"]):
                    v = r.get("rel_l2", r.get("rel_error", np.nan))
                    row[f"L2 {r['noise']:.0%}"] = f"{v:.3f}" + ("" if r["status"] == "completed"
                                                               else "!")
                row["step"] = C.fmt_seconds(np.median([r["step_s"] for r in rs]))
                row["total"] = C.fmt_seconds(np.median([r["total_s"] for r in rs]))
                peaks = [r["memory"]["peak"] for r in rs if r["memory"]["peak"] is not None]
                row["XLA memory"] = C.fmt_bytes(max(peaks) if peaks else None)
                row["RSS growth"] = C.fmt_bytes(max(r["rss_delta"] for r in rs))
                table.append(row)
        eq = {m: [r for r in sub if r["config"] == "equal footing" and r["method"] == m]
              for m in ("autodiff", "mollifier")}
        note = ""
        if eq["autodiff"] and eq["mollifier"]:
            ts = np.median([r["step_s"] for r in eq["autodiff"]]) / np.median(
                [r["step_s"] for r in eq["mollifier"]])
            ms = max(r["memory"]["peak"] for r in eq["autodiff"]) / max(
                r["memory"]["peak"] for r in eq["mollifier"])
            note = (f" Equal footing, autodiff / mollifier: step time {C.fmt_ratio(ts)}x, "
                    f"XLA memory {C.fmt_ratio(ms)}x.")
        out.append(f"\n**{p}** (order {module.ORDER}; {module.DESCRIPTION}): relative L2 error "
                   f"of the recovered coefficient at each noise level (`!`: diverged).{note}\n")
        out.append(C.format_table(table, list(table[0])))
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 noise levels, smaller grids, 200 default / 60 network steps")
    parser.add_argument("--problems", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="equal-footing steps (full: 150)")
    parser.add_argument("--default-steps", type=int, default=None,
                        help="cap on the default runs' steps (full: their configs')")
    parser.add_argument("--lr", type=float, default=3e-3, help="equal-footing Adam rate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    args = parser.parse_args(argv)
    noises = (0.0, 0.05) if args.quick else NOISES
    steps = args.steps or (60 if args.quick else 150)
    default_cap = args.default_steps or (200 if args.quick else 10**9)
    default = [n for n in shipped_problems() if n in shipped_configs()]  # with a default run
    names = args.problems or sorted(default, key=lambda n: mj.load_problem(n).ORDER)

    info = C.machine_info()
    print(C.describe_machine(info))
    t0 = time.perf_counter()
    rows = []
    for name in names:
        rows += default_rows(name, noises, default_cap, args.rounds, args.budget)
        rows += equal_rows(name, noises, steps, args.lr, args.rounds, args.budget, args.quick)
        if args.json:  # partial results survive an interrupted run
            C.write_json(args.json, {"partial": True, "rows": rows})
    C.finish_report(args, info, rows, report(rows), time.perf_counter() - t0)


if __name__ == "__main__":
    main()
