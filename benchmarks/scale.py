"""Scaling benchmark: batch throughput and the largest grid that trains in a memory budget.

Part 1, throughput. `B` copies of a small inverse problem (one coefficient map `lam(x, y)`
per image, `-lap u + lam u = f` on a 32x32 grid, `GridField` unknown, Adam, `--steps`
steps) are fitted (a) by a Python loop of `fit` calls (compiled once, reused) and (b) by one
`fit_batch` call, in the same run. Reported: problems per second and the ratio (b)/(a).
With `--devices n > 1` (host CPU devices, set before jax starts), (c) `fit_batch` with the
batch split over a `batch_mesh(n)` is timed too.

Part 2, memory. One training step (value and gradient of `mean((u - d)^2) + mean((lap u - f)^2)`
with `u` a `NetworkField` MLP on the grid, Mollifier Laplacian, Adam update) is compiled for
growing 2-D and 3-D grids, tiled (`tile=` nodes per `jax.checkpoint`-ed tile) and untiled.
XLA's compiled memory plan (argument + output + temp) is read for every size without
running it; sizes whose plan fits `--budget-gb` are reported. The step is then run (a few
times, after a warm-up) for sizes whose plan is below `--run-gb`; time per step for larger
sizes is extrapolated linearly in the number of nodes from the largest measured size and
marked as such.

    python benchmarks/scale.py                      # float32, ~6 GiB budget
    python benchmarks/scale.py --quick              # small sizes only
"""

from __future__ import annotations

import argparse
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=32, help="grid nodes per axis in part 1")
    p.add_argument("--devices", type=int, default=1, help="host CPU devices (part 1, sharded)")
    p.add_argument("--budget-gb", type=float, default=6.0, help="memory budget (GiB) of part 2")
    p.add_argument("--run-gb", type=float, default=1.0, help="run steps only below this plan")
    p.add_argument("--tile", type=int, default=65536, help="nodes per tile in part 2")
    p.add_argument("--width", type=int, default=32, help="MLP width in part 2")
    p.add_argument("--x64", action="store_true", help="float64 instead of float32")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip", choices=["throughput", "memory"], default=None)
    p.add_argument("--json", default=None)
    return p.parse_args()


ARGS = _parse()

import jax  # noqa: E402

if ARGS.devices > 1:
    jax.config.update("jax_num_cpu_devices", ARGS.devices)
if ARGS.x64:
    jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, __import__("os").path.dirname(__file__))
# the float32 Laplacian at 3 grid steps trips the conservative round-off warning on the
# larger grids; it does not change the cost measured here
import warnings  # noqa: E402

from _common import (  # noqa: E402
    RssPeak,
    describe_machine,
    fmt_bytes,
    fmt_ratio,
    fmt_seconds,
    format_table,
    machine_info,
    write_json,
    xla_memory,
)

import mollijax as mj  # noqa: E402

warnings.filterwarnings("ignore", category=mj.PrecisionWarning)
fit_batch, batch_mesh = mj.fit_batch, mj.batch_mesh

GIB = 2**30


# ----------------------------------------------------------------------------- part 1


def _images(count: int, n: int, seed: int = 0):
    """Smooth positive images `u`, their coefficient maps `lam` and sources `f`."""
    grid = mj.Grid.from_bounds((n, n), 0.0, 1.0, axes=("x", "y"))
    x, y = grid.mesh()
    rng = np.random.default_rng(seed)
    D = mj.Mollifier(grid, 3 * grid.spacing[0])
    us, lams, fs = [], [], []
    for _ in range(count):
        a, b, c = rng.uniform(0.5, 2.0, 3)
        u = 2.0 + np.sin(np.pi * a * x) * np.cos(np.pi * b * y)
        lam = 1.0 + 0.5 * np.sin(np.pi * c * (x + y))
        f = -np.asarray(D.laplacian(jnp.asarray(u))) + lam * u
        us.append(u), lams.append(lam), fs.append(f)
    return grid, D, np.stack(us), np.stack(lams), np.stack(fs)


def _residual(s):
    return -s.lap(s.u) + s.lam * s.u - s.f


def _problem(grid, D, u, f):
    # a module-level residual: the same static function in every problem, so the loop's
    # `fit` calls reuse one compilation (a new lambda per problem would recompile each time)
    return mj.Problem(grid, _residual, data={"u": u}, known={"f": f}, derivatives=D)


def throughput() -> list[dict]:
    steps, n = ARGS.steps, ARGS.n
    opt = optax.adam(5e-2)
    biggest = max(ARGS.batches)
    grid, D, us, lams, fs = _images(biggest, n)
    guess = {"lam": mj.GridField(np.ones(grid.shape), "xy")}
    problems = [_problem(grid, D, us[b], fs[b]) for b in range(biggest)]
    template = problems[0]
    mesh = batch_mesh(ARGS.devices) if ARGS.devices > 1 else None
    # compile everything once, outside the timings
    mj.fit(template, guess, opt, steps=steps, chunk=steps, progress=False)
    rows = []
    for B in ARGS.batches:
        stack = {"u": us[:B], "f": fs[:B]}
        t0 = time.perf_counter()
        loop = [mj.fit(problems[b], guess, opt, steps=steps, chunk=steps, progress=False)
                for b in range(B)]
        t_loop = time.perf_counter() - t0
        fit_batch(template, stack, guess, opt, steps=steps, chunk=steps)  # compile for B
        t0 = time.perf_counter()
        res = fit_batch(template, stack, guess, opt, steps=steps, chunk=steps)
        t_batch = time.perf_counter() - t0
        same = max(float(np.max(np.abs(res.values["lam"][b] - loop[b].values["lam"])))
                   for b in range(B))
        row = {"B": B, "loop_s": t_loop, "batch_s": t_batch,
               "loop_per_s": B / t_loop, "batch_per_s": B / t_batch,
               "speedup": t_loop / t_batch, "max_diff_vs_loop": same,
               "completed": int(res.ok.sum())}
        if mesh is not None:
            fit_batch(template, stack, guess, opt, steps=steps, chunk=steps, mesh=mesh)
            t0 = time.perf_counter()
            fit_batch(template, stack, guess, opt, steps=steps, chunk=steps, mesh=mesh)
            row["sharded_s"] = time.perf_counter() - t0
            row["sharded_per_s"] = B / row["sharded_s"]
        rows.append(row)
        print(f"  B={B}: loop {fmt_seconds(t_loop)}, batch {fmt_seconds(t_batch)}, "
              f"x{t_loop / t_batch:.2f}", flush=True)
    return rows


# ----------------------------------------------------------------------------- part 2


def _step_fn(grid, tile):
    """A compiled-ready training step on `grid` (NetworkField, Mollifier Laplacian, Adam)."""
    net = mj.MLP(grid.ndim, width=ARGS.width, depth=2, key=jax.random.PRNGKey(0))
    field = mj.NetworkField(net, grid.axes, tile=tile)
    D = mj.Mollifier(grid, tuple(3 * h for h in grid.spacing))
    opt = optax.adam(1e-3)
    params, static = eqx.partition(field, eqx.is_inexact_array)
    state = opt.init(params)

    def loss(p, d, f):
        u = eqx.combine(p, static).on_grid(grid)
        return jnp.mean((u - d) ** 2) + jnp.mean((D.laplacian(u) - f) ** 2)

    def step(p, s, d, f):
        value, g = jax.value_and_grad(loss)(p, d, f)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    return step, params, state


def _probe(shape, tile):
    grid = mj.Grid.from_bounds(shape, 0.0, 1.0)
    step, params, state = _step_fn(grid, tile)
    spec = jax.ShapeDtypeStruct(grid.shape, jnp.zeros(()).dtype)
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, state, spec, spec).compile()
    return grid, step, params, state, compiled, time.perf_counter() - t0


def memory() -> list[dict]:
    sizes = {2: [256, 512, 1024, 2048, 4096, 6144, 8192, 11264, 16384],
             3: [32, 64, 96, 128, 192, 256, 320, 384, 448, 512]}
    if ARGS.quick:
        sizes = {2: [128, 256, 512], 3: [16, 32, 48]}
    rows = []
    for ndim, ns in sizes.items():
        last_measured = None
        for tiled in (True, False):
            for n in ns:
                shape = (n,) * ndim
                tile = ARGS.tile if tiled else None
                grid, step, params, state, compiled, t_compile = _probe(shape, tile)
                mem = xla_memory(compiled)
                row = {"ndim": ndim, "n": n, "nodes": grid.size, "tiled": tiled,
                       "plan_bytes": mem["peak"], "temp_bytes": mem["temp"],
                       "bytes_per_node": mem["peak"] / grid.size, "compile_s": t_compile,
                       "fits": mem["peak"] <= ARGS.budget_gb * GIB}
                if mem["peak"] <= ARGS.run_gb * GIB:
                    rng = np.random.default_rng(0)
                    dtype = jnp.zeros(()).dtype
                    d = jnp.asarray(rng.standard_normal(shape), dtype)
                    f = jnp.asarray(rng.standard_normal(shape), dtype)
                    with RssPeak() as rss:
                        p, s, v = compiled(params, state, d, f)
                        jax.block_until_ready(v)
                        times = []
                        for _ in range(3):
                            t0 = time.perf_counter()
                            p, s, v = compiled(p, s, d, f)
                            jax.block_until_ready(v)
                            times.append(time.perf_counter() - t0)
                    row["step_s"] = float(np.median(times))
                    row["rss_delta"] = rss.peak_delta
                    row["measured"] = True
                    if tiled:
                        last_measured = (grid.size, row["step_s"])
                elif tiled and last_measured is not None:
                    row["step_s"] = last_measured[1] * grid.size / last_measured[0]
                    row["measured"] = False
                rows.append(row)
                print(f"  {ndim}-D n={n} tiled={tiled}: plan {fmt_bytes(mem['peak'])}"
                      f" ({mem['peak'] / grid.size:.0f} B/node), step "
                      f"{fmt_seconds(row.get('step_s'))}"
                      f"{'' if row.get('measured', True) else ' (extrapolated)'}", flush=True)
                if not row["fits"]:
                    break  # the first size over the budget ends the probe
    return rows


def main() -> None:
    info = machine_info()
    print(describe_machine(info))
    print(f"dtype {jnp.zeros(()).dtype}, devices {jax.device_count()}")
    payload = {"machine": info, "args": vars(ARGS)}
    if ARGS.skip != "throughput":
        print("Part 1: throughput")
        rows = throughput()
        payload["throughput"] = rows
        cols = ["B", "loop/s", "batch/s", "batch vs loop", "max |diff|"]
        if ARGS.devices > 1:
            cols.insert(3, f"sharded/s ({ARGS.devices} dev)")
        table = [{"B": r["B"], "loop/s": f"{r['loop_per_s']:.1f}",
                  "batch/s": f"{r['batch_per_s']:.1f}",
                  f"sharded/s ({ARGS.devices} dev)": f"{r.get('sharded_per_s', 0):.1f}",
                  "batch vs loop": fmt_ratio(r["speedup"]),
                  "max |diff|": f"{r['max_diff_vs_loop']:.1e}"} for r in rows]
        print(format_table(table, cols))
    if ARGS.skip != "memory":
        print("Part 2: memory")
        rows = memory()
        payload["memory"] = rows
        table = [{"grid": "x".join([str(r["n"])] * r["ndim"]), "nodes": f"{r['nodes']:.2e}",
                  "tiled": "yes" if r["tiled"] else "no", "XLA plan": fmt_bytes(r["plan_bytes"]),
                  "B/node": f"{r['bytes_per_node']:.0f}",
                  "fits": "yes" if r["fits"] else "no",
                  "step": fmt_seconds(r.get("step_s"))
                  + ("" if r.get("measured", True) else " (extrap.)"),
                  "RSS delta": fmt_bytes(r.get("rss_delta"))} for r in rows]
        print(format_table(table, ["grid", "nodes", "tiled", "XLA plan", "B/node", "fits",
                                   "step", "RSS delta"]))
    if ARGS.json:
        write_json(ARGS.json, payload)


if __name__ == "__main__":
    main()
