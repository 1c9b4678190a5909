"""The mollifier paper's comparison on our own footing: autodiff vs mollifier derivatives of the
same network, for three architectures, three derivative orders and four noise levels.

Usage (from the repository root, with the package installed):

    python benchmarks/paper_comparison.py [--quick] [--json out.json] [--markdown out.md]

For every problem (the shipped problem files `problems/forcing.py`, 1st order;
`problems/heat1d.py`, 2nd order; `problems/chromatin.py`, 4th order), every architecture of
the state network `u` (`MLP`, `PirateNet`, `TransformerPINN`) and both derivative methods:

- the state `u` is a `NetworkField` of that architecture, fitted to the noisy data by the
  `data:u` term; the unknown coefficient is a small `MLP` field; both methods start from the
  same parameters (same PRNG keys), use the same residual function, loss weights, optimiser
  (Adam, cosine decay) and number of steps;
- `autodiff`: `derivatives="autodiff"` (nested reverse mode per node);
  `mollifier`: `Mollifier(grid, eps)` on the network's grid values, `eps` the width of
  `eps = "auto"` (the default rule, `_common.auto_eps`);
- measured once per (problem, architecture, method): compile time of one training step,
  XLA's memory analysis of that step (argument + output + temp), and its run time (median of
  interleaved rounds across the two methods, because the machine may be shared);
- measured per noise level: a training run of `--steps` steps of that same compiled step
  (Adam with `mollijax.default_optimiser`, i.e. what `fit` does, without recompiling per
  noise level: the data are arguments), its wall time (reported with the compile time added),
  the growth of the process RSS during it, and the recovered coefficient's relative L2 error
  and correlation with the truth (`mollijax.score`, interior nodes).

`eps` is one width per problem, `auto_eps` of the 5 %-noise data (the default rule), so that
the compiled step serves every noise level.

Accuracy numbers are at a fixed, small step budget (see the report): they compare the two
derivative methods at equal cost in steps, not converged recoveries. On the 4th-order problem
only the architectures in `--train-order4` (default: MLP) are trained; PirateNet and the
transformer get the per-step cost only (nested 4th-order autodiff of those networks costs
seconds per step on a 2-core machine, beyond the budget of the full run).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
import types
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mollijax as mj  # noqa: E402
from mollijax.config import shipped_config  # noqa: E402

NOISES = (0.0, 0.01, 0.05, 0.10)
ARCHS = ("mlp", "pirate", "transformer")
METHODS = ("autodiff", "mollifier")


def problem_modules() -> dict[str, types.ModuleType]:
    """The shipped problem files of orders 1, 2 and 4 (`problems/*.py`)."""
    return {name: mj.load_problem(name) for name in ("forcing", "heat1d", "chromatin")}


def small_params(module, quick: bool) -> dict:
    """Modest grids: at most 101 (quick: 41) nodes in 1-D, 25 (quick: 17) per axis otherwise."""
    cap1, cap = (41, 17) if quick else (101, 25)
    dims = [k for k in ("nx", "ny", "nt", "n") if k in module.DEFAULTS]
    limit = cap1 if dims == ["nt"] or dims == ["nx"] else cap  # `n`: two axes (square grids)
    out = {}
    for k in dims:
        v = module.DEFAULTS[k]
        if isinstance(v, int) and v > limit:
            out[k] = limit
    return out


# ------------------------------------------------------------------ networks
def make_net(arch: str, in_size: int, key):
    if arch == "mlp":
        return mj.MLP(in_size, width=32, depth=3, key=key)
    if arch == "pirate":
        return mj.PirateNet(in_size, features=16, width=32, blocks=1, key=key)
    if arch == "transformer":
        return mj.TransformerPINN(in_size, d_model=16, heads=2, seq_len=3, key=key)
    raise ValueError(arch)


def build_run(module, sim, arch: str, method: str, eps):
    """`(problem, unknowns)`: state `u` of architecture `arch`, coefficient(s) a small MLP.

    The boundary mode of the mollifier is the one of the problem's shipped configuration
    (`configs/<name>.toml`: `periodic` for `chromatin`, else `odd`).
    The coefficient network's output is scaled by `|init|` (1 if 0) so that it starts near
    the size of the truth (the diffusivity of `heat1d` is about 0.02).
    """
    if method == "autodiff":
        derivatives = "autodiff"
    else:
        boundary = shipped_config(pathlib.Path(module.__file__).stem).derivatives.boundary
        boundary = boundary if isinstance(boundary, str) else tuple(boundary)
        derivatives = mj.Mollifier(sim.grid, eps, kernel=mj.Bump(), boundary=boundary)
    problem = C.network_problem(module, sim, derivatives)
    fields = {}
    for k, (name, hint) in enumerate(module.UNKNOWNS.items()):
        axes = tuple(hint.get("axes", ()))
        init = float(hint.get("init", 0.0))
        if not axes:
            fields[name] = mj.Constant(init, hint.get("constraint", "free"))
            continue
        net = mj.MLP(len(axes), width=16, depth=2, key=jax.random.PRNGKey(10 + k))
        fields[name] = mj.NetworkField(net, axes, hint.get("constraint", "free"), init=init,
                                       scale=abs(init) if init else 1.0)
    for k, name in enumerate(module.STATE):
        net = make_net(arch, sim.grid.ndim, jax.random.PRNGKey(100 + k))
        fields[name] = mj.NetworkField(net, sim.grid.axes)
    return problem, fields


class Runner:
    """One compiled training step of (problem, architecture, method), reused for timing and
    for training at every noise level (the data are arguments, not constants)."""

    def __init__(self, problem, fields, optimiser, tag):
        self.tag = tag
        self.params, self.static_u = eqx.partition(fields, eqx.is_inexact_array)
        self.optimiser = optimiser
        self.opt_state = optimiser.init(self.params)
        parr, self.pstat = eqx.partition(problem, eqx.is_array)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mj.PrecisionWarning)
            step = C.make_train_step(self.static_u, self.pstat, optimiser)
            self.compiled, t_lower, t_compile = C.compile_fn(step, self.params, self.opt_state,
                                                             parr)
        self.compile_s = t_lower + t_compile
        self.memory = C.xla_memory(self.compiled)
        self.args = (self.params, self.opt_state, parr)
        t0 = time.perf_counter()
        C.block(self.compiled(*self.args))
        self.first = time.perf_counter() - t0
        self.samples: list[float] = []

    def time_round(self, budget: float):
        k = max(1, min(20, int(budget / max(self.first, 1e-4))))
        t0 = time.perf_counter()
        for _ in range(k):
            C.block(self.compiled(*self.args))
        self.samples.append((time.perf_counter() - t0) / k)

    def train(self, problem, steps: int, sim) -> dict:
        parr, pstat = eqx.partition(problem, eqx.is_array)
        if pstat != self.pstat:
            raise RuntimeError("the problem's static part changed; the step would recompile")
        params, opt_state = self.params, self.optimiser.init(self.params)
        loss = None
        diverged = False
        with C.RssPeak() as rss:
            t0 = time.perf_counter()
            for _ in range(steps):
                new_params, opt_state, loss = self.compiled(params, opt_state, parr)
                if not bool(np.isfinite(loss)):
                    diverged = True
                    break
                params = new_params
            C.block(params)
            wall = time.perf_counter() - t0
        trained = eqx.combine(params, self.static_u)
        values = {k: np.asarray(f.on_subgrid(sim.grid)) for k, f in trained.items()}
        return {"status": "diverged" if diverged else "completed", "train_s": wall,
                "rss_delta": rss.peak_delta, **C.first_error(values, sim),
                "final_loss": float(loss) if loss is not None else float("nan")}


def run(args):
    mods = problem_modules()
    results = []
    for pname, module in mods.items():
        if args.problems and pname not in args.problems:
            continue
        params = small_params(module, args.quick)
        sims = {noise: module.simulate(noise=noise, seed=0, **params) for noise in args.noises}
        grid = sims[args.noises[0]].grid
        eps = C.auto_eps(grid, module.ORDER, module.simulate(noise=0.05, seed=0,
                                                                 **params).data)
        print(f"\n== {pname} (order {module.ORDER}), grid {grid.shape}, params {params}, "
              f"eps {tuple(round(e, 4) for e in eps)}", flush=True)
        optimiser = mj.default_optimiser(args.steps, args.lr)
        for arch in args.archs:
            runners = {}
            for method in METHODS:
                problem, fields = build_run(module, sims[args.noises[0]], arch, method, eps)
                r = runners[method] = Runner(problem, fields, optimiser, method)
                print(f"  {arch:11s} {method:9s} step compile {r.compile_s:6.1f} s, "
                      f"XLA {C.fmt_bytes(r.memory['peak'])}, first call {C.fmt_seconds(r.first)}",
                      flush=True)
            for _ in range(args.rounds):  # interleaved: the machine may be shared
                for r in runners.values():
                    r.time_round(args.budget)
            if module.ORDER >= 4 and arch not in args.train_order4:
                for method, runner in runners.items():
                    results.append({"problem": pname, "order": module.ORDER, "arch": arch,
                                    "method": method, "noise": None, "grid": list(grid.shape),
                                    "eps": list(eps), "steps": 0,
                                    "step_s": float(np.median(runner.samples)),
                                    "compile_s": runner.compile_s, "memory": runner.memory})
                print(f"  {arch:11s} cost only (no training at order 4)", flush=True)
                del runners
                continue
            for noise in args.noises:
                sim = sims[noise]
                for method in METHODS:
                    problem, _ = build_run(module, sim, arch, method, eps)
                    runner = runners[method]
                    t = runner.train(problem, args.steps, sim)
                    step_s = float(np.median(runner.samples))
                    row = {"problem": pname, "order": module.ORDER, "arch": arch,
                           "method": method, "noise": noise, "grid": list(grid.shape),
                           "eps": list(eps), "steps": args.steps, "step_s": step_s,
                           "compile_s": runner.compile_s, "memory": runner.memory,
                           "total_s": runner.compile_s + t["train_s"], **t}
                    results.append(row)
                    print(f"  {arch:11s} {method:9s} noise {noise:4.2f}: rel_l2 "
                          f"{t.get('rel_l2', float('nan')):.3f} corr "
                          f"{t.get('corr', float('nan')):.3f} train {t['train_s']:6.1f} s "
                          f"({t['status']})", flush=True)
            del runners
            if args.json:  # partial results survive an interrupted run
                C.write_json(args.json, {"partial": True, "results": results})
    return results


# ------------------------------------------------------------------ report
def report(results, steps: int) -> str:
    out = []
    keyed = {(r["problem"], r["arch"], r["method"], r["noise"]): r for r in results}
    probs = list(dict.fromkeys(r["problem"] for r in results))
    archs = list(dict.fromkeys(r["arch"] for r in results))
    noises = sorted({r["noise"] for r in results if r["noise"] is not None})

    rows = []
    for p in probs:
        for a in archs:
            ad = next((r for r in results if (r["problem"], r["arch"], r["method"])
                       == (p, a, "autodiff")), None)
            mo = next((r for r in results if (r["problem"], r["arch"], r["method"])
                       == (p, a, "mollifier")), None)
            if not ad or not mo:
                continue
            trained = all((p, a, m, n) in keyed for m in METHODS for n in noises)
            fit_ad = (np.median([keyed[(p, a, "autodiff", n)]["total_s"] for n in noises])
                      if trained else None)
            fit_mo = (np.median([keyed[(p, a, "mollifier", n)]["total_s"] for n in noises])
                      if trained else None)
            rows.append({
                "problem": f"{p} (k={ad['order']})", "grid": "x".join(map(str, ad["grid"])),
                "arch": a,
                "step autodiff": C.fmt_seconds(ad["step_s"]),
                "step mollifier": C.fmt_seconds(mo["step_s"]),
                "time ratio AD/moll": C.fmt_ratio(ad["step_s"] / mo["step_s"]),
                "total AD": C.fmt_seconds(fit_ad), "total moll": C.fmt_seconds(fit_mo),
                "total ratio": C.fmt_ratio(fit_ad / fit_mo) if trained else "-",
                "XLA mem AD": C.fmt_bytes(ad["memory"]["peak"]),
                "XLA mem moll": C.fmt_bytes(mo["memory"]["peak"]),
                "mem ratio": C.fmt_ratio(ad["memory"]["peak"] / mo["memory"]["peak"]),
                "compile AD/moll": C.fmt_ratio(ad["compile_s"] / mo["compile_s"]),
            })
    out.append("Cost of one training step (median of interleaved rounds) and of a whole "
               f"training run (compile + {steps} steps, median over the noise levels), "
               "autodiff (AD) vs mollifier (moll):\n")
    out.append(C.format_table(rows, list(rows[0]) if rows else []))

    rows = []
    for p in probs:
        for a in archs:
            for m in METHODS:
                row = {"problem": p, "arch": a, "method": m}
                ok = True
                for n in noises:
                    r = keyed.get((p, a, m, n))
                    if r is None:
                        ok = False
                        break
                    flag = "" if r["status"] == "completed" else "!"
                    row[f"L2 {n:.0%}"] = f"{r.get('rel_l2', float('nan')):.3f}{flag}"
                    row[f"corr {n:.0%}"] = f"{r.get('corr', float('nan')):.2f}"
                if ok:
                    row["RSS growth (max)"] = C.fmt_bytes(max(keyed[(p, a, m, n)]["rss_delta"]
                                                            for n in noises))
                    rows.append(row)
    out.append(f"\nRecovered coefficient after {steps} steps: relative L2 error and correlation "
               "with the truth (interior nodes; `!` = the fit diverged):\n")
    out.append(C.format_table(rows, list(rows[0]) if rows else []))

    # summary: wins per problem
    rows = []
    for p in probs:
        sub = [(keyed[(p, a, "autodiff", n)], keyed[(p, a, "mollifier", n)])
               for a in archs for n in noises if (p, a, "autodiff", n) in keyed
               and (p, a, "mollifier", n) in keyed]
        if not sub:
            continue
        wins = sum(mo.get("rel_l2", np.inf) < ad.get("rel_l2", np.inf) for ad, mo in sub)
        rows.append({
            "problem": p,
            "mollifier more accurate": f"{wins} / {len(sub)}",
            "median L2 AD": f"{np.median([ad.get('rel_l2', np.nan) for ad, _ in sub]):.3f}",
            "median L2 moll": f"{np.median([mo.get('rel_l2', np.nan) for _, mo in sub]):.3f}",
            "step time ratio (range)": "{}-{}".format(*[C.fmt_ratio(f(
                [ad["step_s"] / mo["step_s"] for ad, mo in sub])) for f in (min, max)]),
            "XLA memory ratio (range)": "{}-{}".format(*[C.fmt_ratio(f(
                [ad["memory"]["peak"] / mo["memory"]["peak"] for ad, mo in sub]))
                for f in (min, max)]),
        })
    out.append("\nSummary per problem (all architectures and noise levels):\n")
    out.append(C.format_table(rows, list(rows[0]) if rows else []))
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small grids, MLP only, 2 noise levels, 40 steps (development)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (full: 200)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam peak learning rate")
    parser.add_argument("--archs", nargs="+", default=None, choices=ARCHS,
                        help="default: all three (quick: mlp)")
    parser.add_argument("--problems", nargs="+", default=None,
                        help="subset of problem names (default: all three)")
    parser.add_argument("--train-order4", nargs="*", default=["mlp"], choices=ARCHS,
                        help="architectures trained on the 4th-order problem (the others get "
                             "the per-step cost only; default: mlp)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--budget", type=float, default=0.3,
                        help="seconds per method and round in the step timing")
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 40 if args.quick else 200
    if args.archs is None:
        args.archs = ["mlp"] if args.quick else list(ARCHS)
    args.noises = (0.0, 0.05) if args.quick else NOISES
    if args.quick:
        args.rounds = min(args.rounds, 3)

    info = C.machine_info()
    print(C.describe_machine(info))
    t0 = time.perf_counter()
    results = run(args)
    wall = time.perf_counter() - t0
    text = report(results, args.steps)
    print()
    print(text)
    print(f"\nTotal wall time {wall:.0f} s")
    if args.json:
        C.write_json(args.json, {"machine": info, "steps": args.steps, "lr": args.lr,
                                 "quick": args.quick, "wall_s": wall, "results": results})
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
