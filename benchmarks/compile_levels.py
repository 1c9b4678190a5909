"""Compile and call time of the evolved 1-D heat loss's value and gradient under XLA CPU
compiler options: the backend optimisation levels and the fusion-emitter switch (the quick
compile of small evolved or solved fits uses level 0 with the older emitters).

    python benchmarks/compile_levels.py [--repeats 2]

heat1d (101 x 101, 5 % noise, seed 0), the README's evolved recipe: `D` a small MLP, 4th-order
finite differences, the exact `Propagator`. Each row of `OPTIONS` compiles a fresh `jax.jit`
of `value_and_grad(loss)` with those `compiler_options` (`None`: XLA's default); "first call"
is compile plus one call, "call" the mean of 20 more. The rows are interleaved `--repeats`
times (the machine's scatter shows between repeats).
"""
from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)
import equinox as eqx  # noqa: E402

import mollijax as mj  # noqa: E402

LEVEL = "xla_backend_optimization_level"
EMITTERS = "xla_cpu_use_fusion_emitters"
OPTIONS = {
    "default": None,
    "level 1": {LEVEL: 1},
    "level 0": {LEVEL: 0},
    "no emitters": {EMITTERS: False},
    "level 0, no emitters": {LEVEL: 0, EMITTERS: False},
}


def evolved_loss():
    heat1d = mj.load_problem("heat1d")
    data = heat1d.simulate(nx=101, nt=101, noise=0.05, seed=0)
    evolution = mj.Evolution(heat1d.flux_divergence,
                             derivatives=lambda g: mj.FiniteDifference(g, accuracy=4),
                             integrator=mj.Propagator())
    problem = mj.Problem(data.grid, None, data={"u": data.data["u"]}, evolution=evolution,
                         conditions=heat1d.conditions(data))
    net = mj.MLP(1, width=16, depth=2, key=jax.random.PRNGKey(1))
    unknowns = {"u": mj.GridField(data.data["u"][:, 0], "x"),
                "D": mj.NetworkField(net, "x", init=0.02, scale=0.01)}
    problem = problem.prepare(unknowns)
    params, static = eqx.partition(unknowns, eqx.is_inexact_array)

    def loss(p):
        return problem.loss(eqx.combine(p, static))[0]

    return loss, params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    loss, params = evolved_loss()
    print(f"evolved heat1d loss, value and gradient; jax {jax.__version__}, "
          f"{jax.devices()[0].platform}")
    print(f"{'options':>22} {'first call':>11} {'call':>9}")
    for _ in range(args.repeats):
        for name, options in OPTIONS.items():
            f = jax.jit(jax.value_and_grad(loss), compiler_options=options)
            start = time.perf_counter()
            jax.block_until_ready(f(params))
            first = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(20):
                jax.block_until_ready(f(params))
            call = (time.perf_counter() - start) / 20
            print(f"{name:>22} {first:10.2f}s {call * 1e3:7.2f}ms")


if __name__ == "__main__":
    main()
