"""Cost of ONE training step with a 4th-order residual: mollifier vs nested autodiff vs Taylor.

Usage (from the repository root, with the package installed):

    python benchmarks/fourth_order_step.py [--dtype float32|float64] [--sizes 64 128]
                                           [--rounds 7] [--json out.json] [--markdown out.md]

The problem is the biharmonic equation on the unit square, `Lap(Lap u) = f`, with `u` a
network (`mollijax.MLP`, width 64, depth 3, tanh, `(x, y) -> u`) evaluated on an `n x n`
grid, and `f = 4 pi^4 sin(pi x) sin(pi y)`. One training step is

    loss, grads = value_and_grad(problem.total(problem.loss_terms(unknowns)))
    updates, opt_state = adam.update(grads, opt_state, params); params += updates

built from a `mollijax.Problem`, jitted as one function. The residual is written once,
`u_xxxx + 2 u_xxyy + u_yyyy - f`, and the problem's `derivatives` decides how it is computed:

- `data only`: no residual, only the data misfit of the same network on the same grid (the
  floor: one forward and one backward pass of the network over the nodes);
- `mollifier-fft`, `mollifier-direct`: `Mollifier(grid, eps, Bump())` on the network's grid
  values (3 convolutions and their transposes), FFT or direct path;
- `autodiff`: `derivatives="autodiff"`, nested reverse mode per node (`jax.grad` four times);
- `taylor (axes)`: `derivatives="taylor"`, i.e. `jax.experimental.jet` for `u_xxxx` and
  `u_yyyy`; the mixed `u_xxyy` falls back to nested autodiff (what the scope does);
- `taylor (4 jets)`: the whole biharmonic from four 4th-order jets along `e_x`, `e_y`,
  `e_x + e_y`, `e_x - e_y` (polarisation: `Lap^2 u = 2/3 (D_x^4 + D_y^4) u +
  1/6 (D_{x+y}^4 + D_{x-y}^4) u`), the best Taylor mode can do without mixed jets;
- `autodiff (fwd, interior)`: the competent hand-written baseline, outside `Problem`:
  nested forward mode (`jax.jvp` four deep along `e_x`/`e_y`, the inner second derivatives
  shared between `u_xxxx`, `u_xxyy` and `u_yyyy`), the network `u(x) = net(2x - 1)` exactly
  as `NetworkField` evaluates it, only at the interior nodes, which are an argument of the
  compiled step (not constants folded into it). Its initial loss equals the `autodiff`
  method's (printed: a check that it computes the same thing).

Residual terms are averaged over the same interior (the mollifier's halo is dropped from
every side, for every method), so each method computes the same loss up to its
discretisation.

Measured per method and grid: compile time (lower + compile), XLA's memory analysis of the
compiled step (argument + output + temp bytes), and the run time of one step: rounds of
repeated calls, interleaved across methods within each round (the machine may be shared and
drift; each method gets one untimed call before its timed calls in a round), median over
rounds. Everything is reported as ratios to the data-only step and
between methods, from the same run.

Float32 is the default (what users train in). With float32 and a 4th-order mollified
derivative, mollijax's `PrecisionWarning` fires; the script records whether it did. Float64:
`--dtype float64` (a separate process, because `jax_enable_x64` is global).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

_DTYPE = "float64" if "float64" in sys.argv else "float32"

import jax  # noqa: E402

if _DTYPE == "float64":
    jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import jet  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mollijax as mj  # noqa: E402

EPS_STEPS = 6  # kernel half-width in grid steps (>= 5 for well-conditioned 4th-order taps)
METHODS = ("data only", "mollifier-fft", "mollifier-direct", "autodiff", "taylor (axes)",
           "taylor (4 jets)", "autodiff (fwd, interior)")
COMPETENT = "autodiff (fwd, interior)"


def biharmonic_residual(s):
    """`u_xxxx + 2 u_xxyy + u_yyyy - f`, the same expression for every derivative mode."""
    u = s.u
    return s.d(u, "xxxx") + 2.0 * s.d(u, "xxyy") + s.d(u, "yyyy") - s.f


def _jet4(fn, x, direction):
    """4th derivative of `fn` at `x` along `direction` (one Taylor-mode pass)."""
    zero = jnp.zeros_like(x)
    _, series = jet.jet(fn, (x,), ((direction, zero, zero, zero),))
    return series[3]


def jet_biharmonic_residual(s):
    """The biharmonic from four directional 4th-order jets (polarisation identity)."""
    u, f = s.u, s.f

    def point(i, x):
        g = lambda y: u.fn(i, y)  # noqa: E731
        e = jnp.eye(2, dtype=x.dtype)
        d4 = [_jet4(g, x, v) for v in (e[0], e[1], e[0] + e[1], e[0] - e[1])]
        return (2.0 / 3.0) * (d4[0] + d4[1]) + (d4[2] + d4[3]) / 6.0 - f.fn(i, x)

    return mj.PointField(point, True)


def forward_biharmonic(fn, x):
    """`u_xxxx + 2 u_xxyy + u_yyyy` of a point function at `x` by nested forward mode."""

    def along(g, v):
        return lambda y: jax.jvp(g, (y,), (v,))[1]

    ex, ey = jnp.eye(2, dtype=x.dtype)
    uxx, uyy = along(along(fn, ex), ex), along(along(fn, ey), ey)
    return (along(along(uxx, ex), ex)(x) + 2.0 * along(along(uxx, ey), ey)(x)
            + along(along(uyy, ey), ey)(x))


def competent_step(net_static, optimiser):
    """`(net params, opt_state, interior points, f at them) -> (params, opt_state, loss)`."""

    def step(params, opt_state, points, f):
        def loss(p):
            net = eqx.combine(p, net_static)
            u = lambda y: net(2.0 * y - 1.0)  # noqa: E731  (NetworkField's scaling)
            r = jax.vmap(lambda x: forward_biharmonic(u, x))(points) - f
            return jnp.mean(r**2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def make_problem(method: str, grid: mj.Grid, target, source):
    moll = mj.Mollifier(grid, EPS_STEPS * grid.spacing[0], kernel=mj.Bump(),
                        method="direct" if method == "mollifier-direct" else "fft")
    margin = moll.halo
    if method == "data only":
        return mj.Problem(grid, {}, data={"u": target})
    if method.startswith("mollifier"):
        return mj.Problem(grid, biharmonic_residual, known={"f": source}, derivatives=moll,
                          margin=margin)
    if method == "autodiff":
        return mj.Problem(grid, biharmonic_residual, known={"f": source},
                          derivatives="autodiff", margin=margin)
    if method == "taylor (axes)":
        return mj.Problem(grid, biharmonic_residual, known={"f": source},
                          derivatives="taylor", margin=margin)
    if method == "taylor (4 jets)":
        return mj.Problem(grid, jet_biharmonic_residual, known={"f": source},
                          derivatives="taylor", margin=margin)
    raise ValueError(method)


def bench_grid(n: int, methods, rounds: int, reps: int, budget: float):
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
    x, y = grid.mesh()
    target = np.sin(np.pi * x) * np.sin(np.pi * y)
    source = 4 * np.pi**4 * target
    net = mj.MLP(2, width=64, depth=3, key=jax.random.PRNGKey(0))
    unknowns = {"u": mj.NetworkField(net, ("x", "y"))}
    params, static_u = eqx.partition(unknowns, eqx.is_inexact_array)
    optimiser = optax.adam(1e-3)
    opt_state = optimiser.init(params)

    entries = {}
    for method in methods:
        if method == COMPETENT:
            halo = mj.Mollifier(grid, EPS_STEPS * grid.spacing[0]).halo[0]
            inner = (slice(halo, n - halo),) * 2
            points = jnp.stack([x[inner].ravel(), y[inner].ravel()], axis=1)
            net_params, net_static = eqx.partition(unknowns["u"].net, eqx.is_inexact_array)
            step = competent_step(net_static, optimiser)
            args = (net_params, optimiser.init(net_params), points,
                    jnp.asarray(source[inner].ravel(), points.dtype))
            compiled, t_lower, t_compile = C.compile_fn(step, *args)
            precision = []
        else:
            problem = make_problem(method, grid, target, source)
            problem.check(unknowns)
            parr, pstat = eqx.partition(problem, eqx.is_array)
            step = C.make_train_step(static_u, pstat, optimiser)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                compiled, t_lower, t_compile = C.compile_fn(step, params, opt_state, parr)
            precision = [str(w.message) for w in caught
                         if issubclass(w.category, mj.PrecisionWarning)]
            args = (params, opt_state, parr)
        t0 = time.perf_counter()
        loss = float(C.block(compiled(*args))[2])  # warm-up
        first = time.perf_counter() - t0
        entries[method] = {
            "compiled": compiled, "args": args, "first": first, "samples": [],
            "compile_s": t_lower + t_compile, "memory": C.xla_memory(compiled),
            "precision_warning": precision[0] if precision else "", "loss": loss,
        }
        print(f"  {n}x{n} {method:18s} compile {t_lower + t_compile:6.1f} s, first call "
              f"{C.fmt_seconds(first)}, XLA memory {C.fmt_bytes(entries[method]['memory']['peak'])}"
              f", loss0 {loss:.6g}{', PrecisionWarning' if precision else ''}", flush=True)

    # interleaved timing: each round gives every method one untimed call (so that it does not
    # pay for the previous method's cache and allocator state), then times `k` calls; `k` is
    # sized from the method's previous samples so that slow methods get fewer calls
    for _ in range(rounds):
        for e in entries.values():
            C.block(e["compiled"](*e["args"]))
            typical = np.median(e["samples"]) if e["samples"] else e["first"]
            k = max(1, min(reps, int(budget / max(typical, 1e-4))))
            t0 = time.perf_counter()
            for _ in range(k):
                C.block(e["compiled"](*e["args"]))
            e["samples"].append((time.perf_counter() - t0) / k)
    out = {}
    for method, e in entries.items():
        out[method] = {
            "step_s": float(np.median(e["samples"])),
            "step_min_s": float(np.min(e["samples"])),
            "rounds": len(e["samples"]),
            "compile_s": e["compile_s"],
            "memory": e["memory"],
            "precision_warning": e["precision_warning"],
            "loss0": e["loss"],
        }
    return out


def report(results: dict, dtype: str) -> str:
    lines = []
    rows = []
    for n, res in results.items():
        base = res["data only"]
        for method, r in res.items():
            rows.append({
                "grid": f"{n}x{n}",
                "method": method,
                "step": C.fmt_seconds(r["step_s"]),
                "time / data only": C.fmt_ratio(r["step_s"] / base["step_s"]),
                "XLA memory": C.fmt_bytes(r["memory"]["peak"]),
                "memory / data only": C.fmt_ratio(r["memory"]["peak"] / base["memory"]["peak"]),
                "compile": C.fmt_seconds(r["compile_s"]),
                "PrecisionWarning": "yes" if r["precision_warning"] else "no",
            })
    cols = ["grid", "method", "step", "time / data only", "XLA memory", "memory / data only",
            "compile", "PrecisionWarning"]
    lines.append(f"One training step, {dtype}, eps = {EPS_STEPS} grid steps (Bump):\n")
    lines.append(C.format_table(rows, cols))

    rows = []
    for n, res in results.items():
        best = min((m for m in res if m.startswith("mollifier")), key=lambda m: res[m]["step_s"])
        mo = res[best]
        row = {"grid": f"{n}x{n}", "mollifier path": best.split("-")[1]}
        for other, label in (("autodiff", "autodiff"), (COMPETENT, "autodiff fwd"),
                             ("taylor (axes)", "taylor (axes)"),
                             ("taylor (4 jets)", "taylor (4 jets)")):
            if other in res:
                row[f"time {label} / moll."] = C.fmt_ratio(res[other]["step_s"] / mo["step_s"])
                row[f"memory {label} / moll."] = C.fmt_ratio(
                    res[other]["memory"]["peak"] / mo["memory"]["peak"])
        row["moll. / data only"] = C.fmt_ratio(mo["step_s"] / res["data only"]["step_s"])
        rows.append(row)
    cols = list(rows[0]) if rows else []
    lines.append("\nRatios against the faster mollifier path (targets: autodiff >= 30x time and "
                 ">= 15x memory, Taylor >= 15x time, mollifier <= 1.2x the data-only step):\n")
    lines.append(C.format_table(rows, cols))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"subset of {METHODS} ('data only' is always included)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--reps", type=int, default=10, help="calls per method and round (max)")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds per method and round (slow methods get fewer calls)")
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    args = parser.parse_args(argv)
    methods = ["data only"] + [m for m in args.methods if m != "data only"]

    info = C.machine_info()
    print(C.describe_machine(info))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, CPU affinity: {cores}")
    results = {}
    for n in args.sizes:
        results[n] = bench_grid(n, methods, args.rounds, args.reps, args.budget)
    text = report(results, args.dtype)
    print()
    print(text)
    if args.json:
        C.write_json(args.json, {"machine": info, "dtype": args.dtype, "eps_steps": EPS_STEPS,
                                 "results": {str(k): v for k, v in results.items()}})
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
