"""Recovering D(x) in u_t = (D(x) u_x)_x from noisy u: error, wall time and memory on one core.

Usage (from the repository root, with the package installed):

    python benchmarks/heat1d.py [--noise 0 0.01 0.05] [--core 0] [--pinn-steps 300]
                                [--repeats 3] [--json out.json] [--markdown out.md]

Data: `problems/heat1d.py`'s `simulate` on a 101 x 101 (x, t) grid, t in [0, 2], with
D(x) = 0.02 + 0.015 sin(2 pi x) and Gaussian noise of standard deviation `noise * std(u)`
(seed 0). The error is the relative L2 error of D on the interior nodes 10..90 (a margin
of 10 nodes at each end, where u = 0 and D is not identifiable).

One core: before jax is imported the process pins itself to the CPU `--core` (Linux
`sched_setaffinity`, like `taskset -c 0`) and sets
`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`.

Estimators, all in the same run:

- `FD least squares`: the plain closed-form baseline. D on the x nodes; at each interior
  node and every time, central differences give `(D_{i+1} - D_{i-1}) / (2h) u_x + D_i u_xx
  = u_t` (second-order differences, one-sided in t at the ends, `numpy.gradient`); one
  linear least-squares solve for the 101 values. No smoothing, no regularisation.
- `mollified, D grid + smooth`: the solver with the mollified data as the state (no model
  for u), residual `u_t - (D u_x)_x`, D a `GridField` on x with an H1 (`smooth`)
  regulariser; Adam.
- `mollified, D network`: the same, with D a `NetworkField` of a small `MLP` on x (width
  16, depth 2, tanh, `init=0.02`, `scale=0.01`): a smooth, low-dimensional D, no
  regulariser.
- `evolved, D network`: no derivative of the data at all. The state is an `Evolution`: u is
  integrated in time (classical RK4, substeps from the stiffness) from a fitted initial
  profile u(x, 0) (a `GridField`), with `(D u_x)_x` by finite differences of order 4 in x
  and u = 0 at both ends imposed exactly; D is the same small network; the loss is the data
  misfit of the integrated u alone (the output-error, maximum-likelihood estimator for
  Gaussian noise); optax L-BFGS.
- `PINN (mollifier)` vs `PINN (autodiff)`: u a `NetworkField` (`MLP`, width 32, depth 3)
  fitted jointly to the data and the residual, D the same small network; the derivatives of
  u by a `Mollifier` on the network's grid values, or by nested reverse-mode autodiff
  (`derivatives="autodiff"`), with the same network, initialisation, loss, optimiser and
  number of steps. This is the cost comparison of the two derivative modes; with the
  `--pinn-steps` that fit in the time budget it is not a competitive estimator.

The kernel widths `eps` (per axis, in grid steps) and learning rates are per noise level,
chosen by a small sweep on this data (seed 0); `--seeds` re-runs all the estimators
on other noise draws to show how much of that is luck.

Reported: the error, the wall time of `fit` (first call in the process, so compilation is
included: what a user waits; `fit` keeps compiled chunks across calls, so a later noise level
with the same architecture and widths reuses them, as the PINN rows after the first do), the
warm wall time (median of `--repeats` interleaved re-runs, compiled code reused), XLA's
memory analysis of one compiled `value_and_grad` of the loss, and the growth of the process
RSS during the first fit.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _one_core  # noqa: E402

_one_core.pin(sys.argv)  # before jax is imported

import time  # noqa: E402

import _common as C  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import mollijax as mj  # noqa: E402

heat1d = mj.load_problem("heat1d")  # problems/heat1d.py

MARGIN = 10  # nodes dropped at each end of x in the error of D

# per noise level: (eps_x, eps_t) in grid steps, Adam learning rate, steps
GRID_D = {0.0: ((3, 3), 1e-3, 1500, 0.0), 0.01: ((5, 5), 1e-3, 1500, 1e-3),
          0.05: ((7, 8), 1e-3, 1500, 3e-3)}  # last: smooth-regulariser weight
NET_D = {0.0: ((4, 3), 1e-2, 1500), 0.01: ((5, 3), 1e-2, 1500), 0.05: ((7, 3), 1e-2, 1500)}
EVOLVED = {0.0: (4, 600), 0.01: (4, 600), 0.05: (4, 600)}  # finite-difference order, L-BFGS steps
LBFGS = optax.lbfgs()  # one object, so that re-runs reuse the compiled chunks
PINN_EPS = (3, 3)


def simulate(noise: float, seed: int = 0):
    """`(grid, clean u, noisy u, D_true)` from the ready problem's simulator."""
    sim = heat1d.simulate(noise=noise, seed=seed, nx=101, nt=101)
    return sim.grid, sim.clean["u"], sim.data["u"], sim.truth["D"]


def rel_error(d, d_true) -> float:
    s = slice(MARGIN, -MARGIN)
    return float(np.linalg.norm(d[s] - d_true[s]) / np.linalg.norm(d_true[s]))


# ----------------------------------------------------------------------------- baseline
def fd_least_squares(u: np.ndarray, h: float, dt: float) -> np.ndarray:
    """Closed-form least-squares D on the x nodes from central differences (no smoothing)."""
    n, nt = u.shape
    ux = (u[2:] - u[:-2]) / (2 * h)
    uxx = (u[2:] - 2 * u[1:-1] + u[:-2]) / h**2
    ut = np.gradient(u, dt, axis=1)[1:-1]
    a = np.zeros((n - 2, nt, n))
    i = np.arange(1, n - 1)
    a[i - 1, :, i + 1] += ux / (2 * h)
    a[i - 1, :, i - 1] -= ux / (2 * h)
    a[i - 1, :, i] += uxx
    return np.linalg.lstsq(a.reshape(-1, n), ut.reshape(-1), rcond=None)[0]


# ----------------------------------------------------------------------------- solver runs
def small_d_net(key):
    return mj.NetworkField(mj.MLP(1, width=16, depth=2, key=key), "x", init=0.02, scale=0.01)


def _fd4(grid):
    return mj.FiniteDifference(grid, accuracy=4)


def setup(name: str, noise: float, grid, noisy):
    """`(problem, unknowns, optimiser, steps)` of one estimator at one noise level."""
    h = grid.spacing
    if name == "mollified, D grid + smooth":
        (ex, et), lr, steps, reg = GRID_D[noise]
        moll = mj.Mollifier(grid, (ex * h[0], et * h[1]))
        regs = [(mj.Regulariser("D", "smooth"), reg)] if reg else []
        problem = mj.Problem(grid, heat1d.residual, data={"u": noisy}, derivatives=moll,
                             regularisers=regs)
        unknowns = {"D": mj.GridField(np.full(grid.shape[0], 0.03), "x")}
        return problem, unknowns, mj.default_optimiser(steps, lr), steps
    if name == "mollified, D network":
        (ex, et), lr, steps = NET_D[noise]
        moll = mj.Mollifier(grid, (ex * h[0], et * h[1]))
        problem = mj.Problem(grid, heat1d.residual, data={"u": noisy}, derivatives=moll)
        unknowns = {"D": small_d_net(jax.random.PRNGKey(1))}
        return problem, unknowns, mj.default_optimiser(steps, lr), steps
    if name == "evolved, D network":
        accuracy, steps = EVOLVED[noise]
        assert accuracy == 4
        evolution = mj.Evolution(heat1d.flux_divergence, derivatives=_fd4)
        problem = mj.Problem(grid, None, data={"u": noisy}, evolution=evolution,
                             conditions=heat1d.conditions(None))
        unknowns = {"u": mj.GridField(noisy[:, 0], "x"), "D": small_d_net(jax.random.PRNGKey(1))}
        return problem, unknowns, LBFGS, steps
    raise ValueError(name)


def pinn_setup(mode: str, grid, noisy, steps: int):
    moll = mj.Mollifier(grid, (PINN_EPS[0] * grid.spacing[0], PINN_EPS[1] * grid.spacing[1]))
    derivatives = moll if mode == "mollifier" else "autodiff"
    problem = mj.Problem(grid, heat1d.residual, data={"u": noisy}, derivatives=derivatives,
                         margin=moll.halo, weights={"residual": 10.0})
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    unknowns = {"u": mj.NetworkField(mj.MLP(2, width=32, depth=3, key=k1), ("x", "t")),
                "D": small_d_net(k2)}
    return problem, unknowns, mj.default_optimiser(steps, 3e-3), steps


def loss_memory(problem, unknowns) -> dict:
    """XLA memory analysis of one compiled value_and_grad of the problem's loss."""
    problem = problem.prepare(unknowns)  # an Evolution's substeps
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)
    parr, pstat = eqx.partition(problem, eqx.is_array)

    def f(p, pa):
        prob = eqx.combine(pa, pstat)
        return jax.value_and_grad(lambda q: prob.total(prob.loss_terms(eqx.combine(q, static))))(p)

    compiled, _, _ = C.compile_fn(f, params, parr)
    return C.xla_memory(compiled)


def run_fit(problem, unknowns, optimiser, steps):
    with C.RssPeak() as rss:
        t0 = time.perf_counter()
        result = mj.fit(problem, unknowns, optimiser, steps=steps, chunk=min(steps, 500),
                        progress=False)
        wall = time.perf_counter() - t0
    return result, wall, rss.peak_delta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.01, 0.05])
    parser.add_argument("--core", type=int, default=0, help="the one CPU core to run on")
    parser.add_argument("--pinn-steps", type=int, default=300,
                        help="steps of the PINN mollifier/autodiff comparison (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="warm re-runs for timing")
    parser.add_argument("--seeds", type=int, nargs="*", default=[],
                        help="extra noise seeds (held out: settings were chosen on seed 0)")
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    args = parser.parse_args(argv)
    for n in args.noise:
        if n not in GRID_D:
            parser.error(f"no tuned settings for noise {n}; choose from {sorted(GRID_D)}")

    info = C.machine_info()
    info["affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    print(C.describe_machine(info))
    print(f"pinned to CPU {info['affinity']}, XLA_FLAGS={info['xla_flags']!r}", flush=True)

    names = ["mollified, D grid + smooth", "mollified, D network", "evolved, D network"]
    rows, records = [], []
    for noise in args.noise:
        grid, u, noisy, d_true = simulate(noise)
        t0 = time.perf_counter()
        d_fd = fd_least_squares(noisy, grid.spacing[0], grid.spacing[1])
        t_fd = time.perf_counter() - t0
        rec = {"noise": noise, "fd": {"error": rel_error(d_fd, d_true), "wall_s": t_fd}}
        rows.append({"noise": f"{noise:.0%}", "estimator": "FD least squares",
                     "D error": f"{rel_error(d_fd, d_true):.2%}",
                     "wall (cold)": C.fmt_seconds(t_fd), "wall (warm)": "-",
                     "XLA memory": "-", "RSS growth": "-", "settings": "closed form"})
        setups = {name: setup(name, noise, grid, noisy) for name in names}
        # cold runs: first fit of each estimator in this process (compilation included)
        for name, (problem, unknowns, opt, steps) in setups.items():
            result, wall, rss = run_fit(problem, unknowns, opt, steps)
            rec[name] = {"error": rel_error(result.values["D"], d_true), "wall_cold_s": wall,
                         "rss_bytes": rss, "memory": loss_memory(problem, unknowns),
                         "steps": steps, "status": result.status.value, "warm_s": [],
                         "D": result.values["D"].tolist()}
        # warm re-runs, interleaved between estimators
        for _ in range(args.repeats):
            for name, (problem, unknowns, opt, steps) in setups.items():
                _, wall, _ = run_fit(problem, unknowns, opt, steps)
                rec[name]["warm_s"].append(wall)
        for name in names:
            r = rec[name]
            if name.startswith("evolved"):
                settings = (f"FD order {EVOLVED[noise][0]} in x, RK4, "
                            f"{r['steps']} L-BFGS steps")
            else:
                eps = GRID_D[noise][0] if "grid" in name else NET_D[noise][0]
                extra = (f", smooth {GRID_D[noise][3]:g}"
                         if "grid" in name and GRID_D[noise][3] else "")
                settings = f"eps {eps} steps, {r['steps']} Adam steps{extra}"
            rows.append({"noise": f"{noise:.0%}", "estimator": name,
                         "D error": f"{r['error']:.2%}",
                         "wall (cold)": C.fmt_seconds(r["wall_cold_s"]),
                         "wall (warm)": (C.fmt_seconds(np.median(r["warm_s"]))
                                         if r["warm_s"] else "-"),
                         "XLA memory": C.fmt_bytes(r["memory"]["peak"]),
                         "RSS growth": C.fmt_bytes(r["rss_bytes"]),
                         "settings": settings})
            print(rows[-1], flush=True)
        for seed in args.seeds if noise > 0 else []:  # noise-free data has no draws
            _, _, noisy_s, _ = simulate(noise, seed)
            rec.setdefault("seeds", {})[seed] = {}
            for name in names:
                problem, unknowns, opt, steps = setup(name, noise, grid, noisy_s)
                result, _, _ = run_fit(problem, unknowns, opt, steps)
                rec["seeds"][seed][name] = rel_error(result.values["D"], d_true)
            d_fd = fd_least_squares(noisy_s, grid.spacing[0], grid.spacing[1])
            rec["seeds"][seed]["FD least squares"] = rel_error(d_fd, d_true)
            print(f"noise {noise:.0%} seed {seed}: {rec['seeds'][seed]}", flush=True)
        if args.pinn_steps:
            pinn = {}
            setups_p = {mode: pinn_setup(mode, grid, noisy, args.pinn_steps)
                        for mode in ("mollifier", "autodiff")}
            for mode, (problem, unknowns, opt, steps) in setups_p.items():
                result, wall, rss = run_fit(problem, unknowns, opt, steps)
                pinn[mode] = {"error": rel_error(result.values["D"], d_true), "wall_cold_s": wall,
                              "rss_bytes": rss, "memory": loss_memory(problem, unknowns),
                              "u_error": float(np.linalg.norm(result.fields["u"] - u)
                                               / np.linalg.norm(u)),
                              "status": result.status.value, "warm_s": []}
            for _ in range(max(args.repeats, 1)):
                for mode, (problem, unknowns, opt, steps) in setups_p.items():
                    _, wall, _ = run_fit(problem, unknowns, opt, steps)
                    pinn[mode]["warm_s"].append(wall)
            for mode in setups_p:
                print(f"noise {noise:.0%} PINN ({mode}): {pinn[mode]}", flush=True)
            rec["pinn"] = pinn
        records.append(rec)

    text = ["D error (relative L2 on x nodes 10..90), wall time of fit on one core:\n",
            C.format_table(rows, ["noise", "estimator", "D error", "wall (cold)", "wall (warm)",
                                  "XLA memory", "RSS growth", "settings"])]
    prow = []
    for rec in records:
        if "pinn" not in rec:
            continue
        m, a = rec["pinn"]["mollifier"], rec["pinn"]["autodiff"]
        prow.append({
            "noise": f"{rec['noise']:.0%}", "steps": args.pinn_steps,
            "D error moll.": f"{m['error']:.2%}", "D error autodiff": f"{a['error']:.2%}",
            "u error moll.": f"{m['u_error']:.2%}", "u error autodiff": f"{a['u_error']:.2%}",
            "wall moll. (cold)": C.fmt_seconds(m["wall_cold_s"]),
            "wall autodiff (cold)": C.fmt_seconds(a["wall_cold_s"]),
            "wall moll. (warm)": C.fmt_seconds(np.median(m["warm_s"])),
            "wall autodiff (warm)": C.fmt_seconds(np.median(a["warm_s"])),
            "time autodiff / moll. (warm)": C.fmt_ratio(np.median(a["warm_s"])
                                                        / np.median(m["warm_s"])),
            "memory autodiff / moll.": C.fmt_ratio(a["memory"]["peak"] / m["memory"]["peak"]),
        })
    if prow:
        text += ["\nPINN, same network, loss, optimiser and steps; mollifier vs nested autodiff "
                 "(cold: first fit of this\n"
                 "network in the process, compilation included when it happens; warm: median of "
                 "interleaved re-runs, compiled code reused):\n",
                 C.format_table(prow, list(prow[0]))]
    srow = []
    for rec in records:
        for seed, errs in rec.get("seeds", {}).items():
            srow.append({"noise": f"{rec['noise']:.0%}", "seed": seed,
                         **{k: f"{v:.2%}" for k, v in errs.items()}})
    if srow:
        text += ["\nOther noise draws (same settings):\n", C.format_table(srow, list(srow[0]))]
        summary = []
        for rec in records:
            draws = list(rec.get("seeds", {}).values())
            for name in (draws[0] if draws else {}):
                errs = np.array([d[name] for d in draws])
                summary.append({"noise": f"{rec['noise']:.0%}", "estimator": name,
                                "draws": len(errs), "mean": f"{errs.mean():.2%}",
                                "median": f"{np.median(errs):.2%}", "max": f"{errs.max():.2%}",
                                "draws under 1.5 %": f"{int(np.sum(errs < 0.015))}/{len(errs)}"})
        text += ["\nOver those draws:\n", C.format_table(summary, list(summary[0]))]
    text = "\n".join(text)
    print()
    print(text)
    if args.json:
        C.write_json(args.json, {"machine": info, "margin": MARGIN, "records": records})
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
