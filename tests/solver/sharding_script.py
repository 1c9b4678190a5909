"""Sharded-vs-unsharded checks, run in a subprocess with 4 host devices.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=4 python sharding_script.py CASE...
with each CASE `grid` or `batch`. Prints one JSON line, {case: measured differences}; the
tests in test_sharding.py assert on them (XLA_FLAGS must be set before jax starts, hence the
separate process; one process runs both cases, so jax and mollijax start once).
"""

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import mollijax as mj  # noqa: E402
from mollijax import (  # noqa: E402
    Sharded,
    batch_mesh,
    fit_batch,  # noqa: E402
    shard_stack,
    sharded_derivatives,
)


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def grid_case() -> dict:
    mesh = batch_mesh(4, "grid")
    rng = np.random.default_rng(0)
    errors, grads, shards = {}, {}, set()
    boundaries = ("periodic", "even", "odd", "linear", "zero", "valid")
    # every boundary on a 2-D grid split along x (direct); some split along y (FFT) and in 3-D
    cases = [((64, 40), ("x", "xx", "xy"), b, "direct", 0) for b in boundaries]
    cases += [((64, 40), ("x", "xx", "xy"), b, "fft", 1) for b in ("periodic", "odd", "valid")]
    cases += [((24, 16, 20), ("x", "yy", "xz"), b, "direct", a)
              for b, a in (("odd", 0), ("periodic", 1), ("valid", 0))]
    for shape, alphas, boundary, method, axis in cases:
        grid = mj.Grid.from_bounds(shape, 0.0, 1.0)
        u = rng.standard_normal(shape)
        D = mj.Mollifier(grid, 4 * grid.spacing[0], boundary=boundary, method=method)
        ref = jax.jit(lambda v, D=D, alphas=alphas: D.derivatives(v, alphas))(u)
        run = jax.jit(lambda v, D=D, alphas=alphas, axis=axis:
                      sharded_derivatives(D, v, alphas, mesh, axis=axis))
        out = run(u)
        key = f"{len(shape)}d-{boundary}-{method}-{axis}"
        errors[key] = max(_rel(o, r) for o, r in zip(out, ref, strict=True))
        if boundary != "valid":
            shards.add(len(out[0].addressable_shards))
    # gradient through the halo exchange (ppermute transposes to the reverse shift)
    for shape, alpha in (((64, 40), "xx"), ((24, 16, 20), "xz")):
        grid = mj.Grid.from_bounds(shape, 0.0, 1.0)
        u = rng.standard_normal(shape)
        D = mj.Mollifier(grid, 4 * grid.spacing[0], boundary="odd")
        g_ref = jax.jit(jax.grad(lambda v, D=D, alpha=alpha: (D(v, alpha) ** 2).sum()))(u)
        g = jax.jit(jax.grad(lambda v, D=D, alpha=alpha:
                             (sharded_derivatives(D, v, [alpha], mesh)[0] ** 2).sum()))(u)
        grads[f"{len(shape)}d"] = _rel(g, g_ref)
    # the wrapper inside a Problem: same loss and gradient
    grid = mj.Grid.from_bounds((48, 32), 0.0, 1.0, axes=("x", "y"))
    x, y = grid.mesh()
    data = np.sin(np.pi * x) * np.cos(np.pi * y)
    D = mj.Mollifier(grid, 3 * grid.spacing[0])
    res = lambda s: s.lap(s.u) + s.k * s.u
    unk = {"u": mj.GridField(data + 0.1 * rng.standard_normal(grid.shape), "xy"),
           "k": mj.Constant(1.0)}
    plain = mj.Problem(grid, res, data={"u": data}, derivatives=D)
    split = mj.Problem(grid, res, data={"u": data}, derivatives=Sharded(D, mesh, "x"))
    # under jit, as in `fit` (eagerly, JAX refuses to mix the 4-device results with
    # single-device arrays)
    loss = eqx.filter_jit(lambda p, q: p.total(p.loss_terms(q)))
    grad = eqx.filter_jit(eqx.filter_grad(lambda q, p: p.total(p.loss_terms(q))))
    g1, g2 = grad(unk, plain), grad(unk, split)
    problem_loss = _rel(loss(split, unk), loss(plain, unk))
    problem_grad = max(_rel(a, b) for a, b in zip(jax.tree_util.tree_leaves(g2),
                                                   jax.tree_util.tree_leaves(g1), strict=True))
    return {"devices": jax.device_count(), "errors": errors, "grads": grads,
            "shards": sorted(shards), "problem_loss": problem_loss, "problem_grad": problem_grad}


def batch_case() -> dict:
    grid = mj.Grid.from_bounds((40,), 0.0, 1.0)
    (x,) = grid.mesh()
    base = np.sin(np.pi * x)
    problem = mj.Problem(grid, lambda s: s.d(s.u, "xx") + s.k * s.u, data={"u": base},
                         derivatives=mj.Mollifier(grid, 4 * grid.spacing[0]))
    amps = np.array([1.0, 0.7, 30.0, 1.3, 0.9, 1.1])  # item 2 diverges under this SGD step
    stack = amps[:, None] * base[None]
    opt = optax.sgd(0.5)
    unk = {"k": mj.Constant(1.0)}
    plain = fit_batch(problem, {"u": stack}, unk, opt, steps=120, chunk=50)
    mesh = batch_mesh(4)
    split = fit_batch(problem, {"u": stack}, unk, opt, steps=120, chunk=50, mesh=mesh)
    placed = shard_stack(np.zeros((8, 3)), mesh)
    ok = plain.ok
    return {
        "devices": jax.device_count(),
        "status_plain": plain.status.tolist(), "status_split": split.status.tolist(),
        "steps_plain": plain.steps.tolist(), "steps_split": split.steps.tolist(),
        "values": _rel(split.values["k"][ok], plain.values["k"][ok]),
        "diverged_values": _rel(split.values["k"][~ok], plain.values["k"][~ok]),
        "history": _rel(split.history["total"][ok], plain.history["total"][ok]),
        "stack_shards": len(placed.addressable_shards),
        "shard_rows": sorted({s.data.shape[0] for s in placed.addressable_shards}),
    }


if __name__ == "__main__":
    cases = {"grid": grid_case, "batch": batch_case}
    print(json.dumps({case: cases[case]() for case in sys.argv[1:]}))
