"""The default estimator on heat data from a simulator that is not heat1d's.

Usage (from the repository root):

    python benchmarks/independent_heat.py [--seeds 2000 2001 2002 2003 2004] [--noise 0.05]
        [--core N] [--json out.json]

A benchmark, not a test. `u_t = (D(x) u_x)_x` on [0, 1] with `u = 0` at both ends, written
here in the non-conservative form `D u_xx + D' u_x` with the analytic `D'`, by the method of
lines: fourth-order central differences (second order at the nodes next to the walls) on a
grid 8 times finer than the output, integrated by scipy's Radau (`rtol` 1e-10, `atol`
1e-12), sampled on 101 x 101 nodes of (x, t), t in [0, 4]. `heat1d`'s own simulator is a
conservative second-order finite-volume scheme with Crank-Nicolson steps; the library's
evolved state is neither. `D(x) = 0.01 + 0.008 exp(-((x - 0.3) / 0.1)^2)` (narrower than
heat1d's sine), `u(x, 0) = sin(pi x) + 0.5 sin(2 pi x)`. Gaussian noise of `noise` times the
field's standard deviation, one draw per seed.

Per seed: `mj.auto_run(heat1d, dataset)` with no options (the CLI's default with only
[problem] and [data]), its D error (`mj.score`: relative L2 on the interior), CPU time and
the output-error fit's steps. The default seeds (2000-2004) chose nothing; seeds 1000-1002
of the same data were the tuning draws of a stopping rule that was tried and not taken
(docs/benchmarks.md, "Held-out nodes in the evolved fit").
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
import scipy.sparse as sp  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

jax.config.update("jax_enable_x64", True)

import mollijax as mj  # noqa: E402

T_FINAL, NX, NT = 4.0, 101, 101


def diffusivity(x):
    return 0.01 + 0.008 * np.exp(-(((x - 0.3) / 0.1) ** 2))


def diffusivity_x(x):
    return -2.0 * (x - 0.3) / 0.1**2 * (diffusivity(x) - 0.01)


def initial(x):
    return np.sin(np.pi * x) + 0.5 * np.sin(2 * np.pi * x)


def _stencils(n: int, h: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """First- and second-derivative matrices on the `n` interior nodes (walls at 0)."""
    d1, d2 = sp.lil_matrix((n, n)), sp.lil_matrix((n, n))
    wide = [(-2, 1 / 12, -1 / 12), (-1, -8 / 12, 16 / 12), (0, 0.0, -30 / 12),
            (1, 8 / 12, 16 / 12), (2, -1 / 12, -1 / 12)]
    near = [(-1, -0.5, 1.0), (0, 0.0, -2.0), (1, 0.5, 1.0)]
    for i in range(n):
        for off, c1, c2 in (wide if 1 <= i <= n - 2 else near):
            k = i + off
            if 0 <= k < n:
                d1[i, k] += c1 / h
                d2[i, k] += c2 / h**2
    return d1.tocsr(), d2.tocsr()


def simulate(refine: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(u, x, t)`: the clean field on the output grid, `u[i, j]` at `(x_i, t_j)`."""
    nf = (NX - 1) * refine + 1
    x = np.linspace(0.0, 1.0, nf)
    inner = x[1:-1]
    d1, d2 = _stencils(nf - 2, x[1] - x[0])
    a = (sp.diags(diffusivity(inner)) @ d2 + sp.diags(diffusivity_x(inner)) @ d1).tocsc()
    t = np.linspace(0.0, T_FINAL, NT)
    sol = solve_ivp(lambda _t, y: a @ y, (0.0, T_FINAL), initial(inner), method="Radau",
                    t_eval=t, jac=a, rtol=1e-10, atol=1e-12)
    if not sol.success:
        raise SystemExit(f"the reference solve failed: {sol.message}")
    u = np.zeros((nf, NT))
    u[1:-1] = sol.y
    return u[::refine], x[::refine], t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2000, 2001, 2002, 2003, 2004])
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--evolved", choices=("auto", "network", "grid"), default="auto",
                    help="auto_run's `evolved` option (default: the default's choice)")
    args = ap.parse_args(argv)

    clean, x, t = simulate(8)
    finer, _, _ = simulate(16)
    print(f"reference solve: |u(h/8) - u(h/16)| / |u| = "
          f"{np.linalg.norm(clean - finer) / np.linalg.norm(finer):.1e}")
    grid = mj.Grid.from_bounds((NX, NT), (0.0, 0.0), (1.0, T_FINAL), axes=("x", "t"))
    heat = mj.load_problem("heat1d")
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        noisy = clean + args.noise * clean.std() * rng.standard_normal(clean.shape)
        ds = mj.Dataset(grid, {"u": noisy}, truth={"D": diffusivity(x)})
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mj.IdentifiabilityWarning)
            run = mj.auto_run(heat, ds, evolved=args.evolved)
        cpu = time.process_time() - start
        row = {"seed": seed, "error": mj.score(run.result.values, ds)["D"]["rel_l2"],
               "cpu_s": cpu, "steps": int(run.result.steps),
               "start_error": mj.score(run.stages["equation error"].values, ds)["D"]["rel_l2"]}
        rows.append(row)
        print(f"seed {seed}: D error {row['error']:.2%} ({cpu:.1f} s CPU, output-error fit "
              f"{row['steps']} steps; equation-error start {row['start_error']:.2%})",
              flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"noise": args.noise, "evolved": args.evolved, "rows": rows}, f,
                          indent=1)
    errors = [r["error"] for r in rows]
    print(f"\nnoise {args.noise:.0%}, {len(rows)} draws, evolved={args.evolved!r}: D error "
          f"{np.mean(errors):.2%} "
          f"+- {np.std(errors):.2%}; CPU mean "
          f"{np.mean([r['cpu_s'] for r in rows]):.1f} s, max "
          f"{np.max([r['cpu_s'] for r in rows]):.1f} s")


if __name__ == "__main__":
    main()
