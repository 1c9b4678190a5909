"""Cost of an evolved-state fit against a mollified fit of the same data, and the memory of a
2-D evolved loss.

    python benchmarks/evolve_cost.py [--quick] [--skip-1d] [--skip-2d] [--run-2d]
                                     [--n2d 129] [--nt2d 33] [--ladder 25 50 100 600]

1-D: heat1d (101 x 101, 5 % noise, seed 0), `D(x)` as a `GridField` on the x nodes.

- mollified: the residual `u_t - (D u_x)_x` on mollified data (eps = 7 x 8 steps, a smoothness
  regulariser 3e-3), Adam with a cosine decay, 1500 steps (the recipe of the fit tests);
- evolved: the README's recipe: `Evolution` of `(D u_x)_x` with 4th-order finite
  differences, the initial profile fitted too, `D` a small `MLP` (`NetworkField`), L-BFGS
  (at most 600 steps, `tol` 1e-7), integrated by `RK4` (stiffness-chosen substeps) and by
  the exact `Propagator`, with optax's `lbfgs` (a zoom line search) and, for the
  propagator, `mj.lbfgs` (one loss evaluation per step).

Each fit runs in this process from a cold start (`jax.clear_caches()` first, so its compile
is included; two tiny untimed fits first take the process's one-time costs; the evolved
fits at several step caps, each from scratch); its CPU time is
`time.process_time()` over the `fit` call (all threads), its error the relative L2 error of
`D` on the interior nodes (10 from each end) against the truth. The evolved fits are compared
at the same accuracy target: they must end at or below the mollified fit's error.

2-D: heat2d's evolved loss (`n^2` nodes, `nt` frames, `D(x, y)` a `GridField`), the memory
XLA's memory analysis reports for the compiled value-and-gradient (temporaries + arguments +
outputs), for `RK4` (stores every stage of every step for reverse mode) and `Diffrax` (Tsit5,
recursive checkpointing: mollijax's default of 16 checkpoints per solve, and diffrax's own
default, up to `max_steps`), the last also compiled with the quick-compile options a fit's
first chunks get on a grid of at most 20000 nodes (time frames counted: smaller 2-D grids
than the default); and, with `--run-2d`, one timed call of each.
"""

from __future__ import annotations

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)
import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import mollijax as mj  # noqa: E402

QUICK = "MOLLIJAX_QUICK_COMPILE_MAX_NODES"  # 0: every chunk at full optimisation

MiB = 2.0**20


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _timed_fit(*args, **kwargs):
    cpu, wall = time.process_time(), time.perf_counter()
    result = mj.fit(*args, progress=False, **kwargs)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _warm_up(heat1d):
    """A tiny mollified and a tiny evolved fit (other shapes), untimed: the process's one-time
    costs (lazy imports, the first compilation's set-up) are then not charged to the first
    timed fit, the mollified baseline."""
    data = heat1d.simulate(nx=17, nt=17, noise=0.05, seed=0)
    grid, u = data.grid, data.data["u"]
    moll = mj.Mollifier(grid, (3 * grid.spacing[0], 3 * grid.spacing[1]))
    problem = mj.Problem(grid, heat1d.residual, data={"u": u}, derivatives=moll,
                         regularisers=[(mj.Regulariser("D", "smooth"), 3e-3)])
    mj.fit(problem, {"D": mj.GridField(np.full(17, 0.03), "x")}, mj.default_optimiser(5, 1e-3),
           steps=5, progress=False)
    evolution = mj.Evolution(heat1d.flux_divergence, integrator=mj.Propagator())
    problem = mj.Problem(grid, None, data={"u": u}, evolution=evolution,
                         conditions=heat1d.conditions(data))
    mj.fit(problem, {"u": mj.GridField(u[:, 0], "x"), "D": mj.GridField(np.full(17, 0.03), "x")},
           mj.lbfgs(), steps=5, progress=False)


def one_d(quick: bool, ladder):
    heat1d = mj.load_problem("heat1d")
    nx = nt = 51 if quick else 101
    data = heat1d.simulate(nx=nx, nt=nt, noise=0.05, seed=0)
    grid, u, truth = data.grid, data.data["u"], data.truth["D"]
    inner = slice(10, -10) if not quick else slice(5, -5)
    rows = []
    _warm_up(heat1d)

    steps = 400 if quick else 1500
    moll = mj.Mollifier(grid, (7 * grid.spacing[0], 8 * grid.spacing[1]))
    problem = mj.Problem(grid, heat1d.residual, data={"u": u}, derivatives=moll,
                         regularisers=[(mj.Regulariser("D", "smooth"), 3e-3)])
    unknowns = {"D": mj.GridField(np.full(nx, 0.03), "x")}
    # the baseline at its best: its 1500 steps run about 7 % slower with the quick compile
    # small grids get by default, so it is timed both ways and the faster one is the baseline
    timed = []
    for label, limit in ((", full optimisation", "0"), ("", None)):
        if limit is None:
            os.environ.pop(QUICK, None)
        else:
            os.environ[QUICK] = limit
        jax.clear_caches()
        result, cpu, wall = _timed_fit(problem, unknowns, mj.default_optimiser(steps, 1e-3),
                                       steps=steps, chunk=steps // 3)
        timed.append((f"mollified, Adam{label}", result.steps, cpu, wall,
                      _rel(result.values["D"][inner], truth[inner])))
    os.environ.pop(QUICK, None)
    rows.append(min(timed, key=lambda r: r[2]))
    rows.append(max(timed, key=lambda r: r[2]))
    target = rows[0][4]

    for name, integrator, optimiser in (
        ("evolved, RK4, L-BFGS", mj.RK4(), optax.lbfgs),
        ("evolved, Propagator, L-BFGS", mj.Propagator(), optax.lbfgs),
        ("evolved, Propagator, mj.lbfgs", mj.Propagator(), mj.lbfgs),
    ):
        for cap in ladder:
            evolution = mj.Evolution(heat1d.flux_divergence,
                                     derivatives=lambda g: mj.FiniteDifference(g, accuracy=4),
                                     integrator=integrator)
            problem = mj.Problem(grid, None, data={"u": u}, evolution=evolution,
                                 conditions=heat1d.conditions(data))
            net = mj.MLP(1, width=16, depth=2, key=jax.random.PRNGKey(1))
            unknowns = {"u": mj.GridField(u[:, 0], "x"),
                        "D": mj.NetworkField(net, "x", init=0.02, scale=0.01)}
            jax.clear_caches()  # every fit from a cold start: its compile counted
            result, cpu, wall = _timed_fit(problem, unknowns, optimiser(), steps=cap,
                                           chunk=min(cap, 50), tol=1e-7)
            rows.append((f"{name}, <= {cap}", result.steps, cpu, wall,
                         _rel(result.values["D"][inner], truth[inner])))

    print(f"1-D heat {nx}x{nt}, 5 % noise: CPU time of a fit from a cold start (compile "
          f"included), jax {jax.__version__}, {jax.devices()[0].platform}")
    print(f"{'fit':38} {'steps':>6} {'CPU':>8} {'wall':>7} {'CPU / mollified':>16} {'D error':>8}")
    base = rows[0][2]
    for name, steps, cpu, wall, err in rows:
        print(f"{name:38} {steps:6d} {cpu:7.1f}s {wall:6.1f}s {cpu / base:15.2f}x {err:8.2%}")
    print(f"accuracy target: the mollified fit's error, {target:.2%}")
    for kind in ("RK4, L-BFGS", "Propagator, L-BFGS", "Propagator, mj.lbfgs"):
        met = [r for r in rows[1:] if kind in r[0] and r[4] <= target]
        if met:
            best = min(met, key=lambda r: r[2])
            print(f"  {kind}: cheapest fit at or below the target: {best[0]} steps cap, "
                  f"{best[2]:.1f} s CPU = {best[2] / base:.2f}x the mollified fit (target <= 2x)")
        else:
            print(f"  {kind}: no fit reached the target")


def two_d(n: int, nt: int, run: bool):
    heat2d = mj.load_problem("heat2d")
    data = heat2d.simulate(n=n, nt=nt, noise=0.0, seed=0, refine=1)
    grid, u = data.grid, data.data["u"]
    print(f"\n2-D heat {n}^2 x {nt} frames: one value-and-gradient of the evolved loss "
          "(XLA memory analysis of the compiled function)")
    print(f"{'integrator':32} {'temp':>10} {'args+out':>10} {'total':>10} {'compile':>8} "
          f"{'call':>8}")
    import diffrax

    many = diffrax.RecursiveCheckpointAdjoint()  # diffrax's default: max_steps checkpoints
    # a fit on a grid of at most 20000 nodes (time frames counted) compiles its first 2000
    # steps with these (mollijax's quick compile, docs/design.md section 12)
    quick = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    for name, integrator, options in (
        ("RK4 (stiffness substeps)", mj.RK4(), None),
        ("Diffrax Tsit5, max_steps ckpts", mj.Diffrax(rtol=1e-5, atol=1e-7, adjoint=many),
         None),
        ("Diffrax Tsit5 (16 checkpoints)", mj.Diffrax(rtol=1e-5, atol=1e-7), None),
        ("Diffrax Tsit5 (16), quick", mj.Diffrax(rtol=1e-5, atol=1e-7), quick),
    ):
        evolution = mj.Evolution(heat2d.flux_divergence, integrator=integrator)
        problem = mj.Problem(grid, None, data={"u": u}, evolution=evolution,
                             conditions=heat2d.conditions(data))
        unknowns = {"u": mj.GridField(u[..., 0], ("x", "y")),
                    "D": mj.GridField(np.full((n, n), 0.05), ("x", "y"))}
        problem = problem.prepare(unknowns)
        params, static = eqx.partition(unknowns, eqx.is_inexact_array)

        def loss(p, problem=problem, static=static):
            return problem.loss(eqx.combine(p, static))[0]

        start = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(loss),
                           compiler_options=options).lower(params).compile()
        compile_s = time.perf_counter() - start
        mem = compiled.memory_analysis()
        temp = mem.temp_size_in_bytes / MiB
        io = (mem.argument_size_in_bytes + mem.output_size_in_bytes) / MiB
        call = float("nan")
        if run:
            jax.block_until_ready(compiled(params))
            start = time.perf_counter()
            jax.block_until_ready(compiled(params))
            call = time.perf_counter() - start
        desc = evolution.integrator if not isinstance(integrator, mj.RK4) else None
        extra = f" (substeps {problem.evolution.substeps})" if desc is None else ""
        print(f"{name + extra:32} {temp:8.1f}Mi {io:8.1f}Mi {temp + io:8.1f}Mi "
              f"{compile_s:7.1f}s {call:7.2f}s")
    print("target: <= 500 MiB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="51x51 1-D, 33^2 x 9 2-D")
    parser.add_argument("--skip-2d", action="store_true")
    parser.add_argument("--run-2d", action="store_true", help="also time one 2-D call")
    parser.add_argument("--n2d", type=int, default=129)
    parser.add_argument("--nt2d", type=int, default=33)
    parser.add_argument("--skip-1d", action="store_true")
    parser.add_argument("--ladder", type=int, nargs="+", default=[25, 50, 100, 600],
                        help="step caps of the evolved fits (each a cold start)")
    args = parser.parse_args(argv)
    if not args.skip_1d:
        one_d(args.quick, args.ladder)
    if not args.skip_2d:
        two_d(33 if args.quick else args.n2d, 9 if args.quick else args.nt2d, args.run_2d)


if __name__ == "__main__":
    main()
