"""Cost of a solved steady state inside a loss, and the Krylov iterations it takes.

Usage (from the repository root):

    python benchmarks/steady_cost.py [--core N]

The problem is 2-D `div(k grad u) + f = 0` on the unit square, `u` pinned on the walls,
`k = 1 + 0.5 sin(2 x) cos(3 y) + x y` a grid unknown, `f` a Gaussian source, second-order
finite differences (`mollijax.Steady` defaults). Printed:

1. the time of one `value_and_grad` of the data misfit `mean((u(k) - u_obs)^2)` through the
   solved state at 65^2 (GMRES with the sine-transform preconditioner; the gradient is one
   adjoint solve), against one evaluation of the equation-error residual `mean(R(u_obs)^2)`
   and its gradient on the same grid, measured in the same run;
2. the Krylov iterations per solve at 33^2, 65^2, 129^2, with and without the
   preconditioner: operator applications counted at run time (GMRES, restart 20:
   lineax tests convergence once per cycle), and BiCGStab
   iterations as lineax counts them (two applications each). Without the preconditioner the
   iterations grow like 1/h; with it they stay bounded.

One process, pinned to one core (`--core`, default 0), float64.
"""

from __future__ import annotations

import sys

from _one_core import pin

pin(sys.argv)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import compile_fn, format_table, time_compiled  # noqa: E402

jax.config.update("jax_enable_x64", True)

import mollijax as mj  # noqa: E402
from mollijax import Steady  # noqa: E402

CAP = 4000  # iterations allowed without the preconditioner


def residual(s):
    return s.d(s.k * s.d(s.u, "x"), "x") + s.d(s.k * s.d(s.u, "y"), "y") + s.f


def case(n):
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    k = 1.0 + 0.5 * np.sin(2 * x) * np.cos(3 * y) + x * y
    f = 10.0 * np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) / 0.05)
    walls = [mj.Condition("u", {a: i}, 0.0) for a in grid.axes for i in (0, -1)]
    return grid, k, f, walls


def cost_at(n=65):
    grid, k, f, walls = case(n)
    template = mj.GridField(k, "xy")
    u_obs = Steady(residual).solve(grid, {"k": template}, {"f": f}, walls)["u"]

    def output_error(kv, solver):
        field = eqx.tree_at(lambda g: g.raw, template, kv)
        u = Steady(residual, solver=solver).solve(grid, {"k": field}, {"f": f}, walls)["u"]
        return jnp.mean((u - u_obs) ** 2)

    diff = mj.FiniteDifference(grid)

    def equation_error(kv):
        flux = (kv * diff(u_obs, "x"), kv * diff(u_obs, "y"))
        return jnp.mean((diff(flux[0], "x") + diff(flux[1], "y") + f) ** 2)

    k1 = jnp.asarray(1.1 * k)
    rows = []
    for name, fn in (("output error, GMRES + DST", lambda kv: output_error(kv, "gmres")),
                     ("output error, BiCGStab + DST", lambda kv: output_error(kv, "bicgstab")),
                     ("equation error (residual)", equation_error)):
        compiled, lower, comp = compile_fn(jax.value_and_grad(fn), k1)
        t = time_compiled(compiled, k1)
        rows.append({"loss at 65^2": name, "compile s": f"{lower + comp:.2f}",
                     "value_and_grad ms": f"{1e3 * t['median']:.2f}"})
    ratio = float(rows[0]["value_and_grad ms"]) / float(rows[-1]["value_and_grad ms"])
    return rows, ratio


def iterations(n, solver, preconditioner):
    grid, k, f, walls = case(n)
    calls = []

    def counted(s):
        jax.debug.callback(lambda: calls.append(1))
        return residual(s)

    steady = Steady(counted, solver=solver, preconditioner=preconditioner, max_steps=CAP,
                    linear=True)
    fn = jax.jit(lambda kv: steady.solve_with_stats(grid, {"k": mj.GridField(k, "xy")},
                                                    {"f": f}, walls)[1])
    info = jax.block_until_ready(fn(jnp.asarray(k)))
    calls.clear()
    info = jax.block_until_ready(fn(jnp.asarray(k)))
    ok = bool(info["converged"])
    applications = len(calls) - (2 if preconditioner else 1)  # initial residual, stencil
    if solver == "bicgstab":
        count = int(info["num_steps"])
    else:
        count = applications
    return count if ok else f">{CAP} (not converged)"


def main():
    rows, ratio = cost_at(65)
    print(format_table(rows, list(rows[0])))
    print(f"output error (GMRES) / equation error per value_and_grad: {ratio:.1f}x\n")
    table = []
    for n in (33, 65, 129):
        row = {"grid": f"{n}^2"}
        for solver in ("gmres", "bicgstab"):
            for pre in ("dst", None):
                row[f"{solver} {pre or 'none'}"] = iterations(n, solver, pre)
        table.append(row)
    print("Krylov iterations per solve (rtol 1e-10; GMRES: operator applications, restart 20;"
          " BiCGStab: iterations)")
    print(format_table(table, list(table[0])))


if __name__ == "__main__":
    main()
