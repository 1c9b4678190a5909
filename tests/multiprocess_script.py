"""One process of the 2-process check in test_multiprocess.py.

Usage: python multiprocess_script.py PROCESS_ID PORT OUT.json

Starts JAX's distributed runtime on this machine (CPU collectives through gloo, 2 processes
with 2 CPU devices each: a 4-device global mesh), then computes, on that mesh, (1) a batch
of fits with the stack sharded over the 4 devices and (2) Laplacian and 4th derivatives of
a field split along x over the 4 devices with halo exchange (`sharded_derivatives`), and
the single-process results of the same computations on this process's first device alone.
Process 0 writes the differences to OUT.json.
"""

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_num_cpu_devices", 2)
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{sys.argv[2]}", num_processes=2,
                           process_id=int(sys.argv[1]), initialization_timeout=60)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

import mollijax as mj  # noqa: E402


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def batch_case(mesh) -> dict:
    grid = mj.Grid.from_bounds((40,), 0.0, 1.0)
    (x,) = grid.mesh()
    base = np.sin(np.pi * x)
    problem = mj.Problem(grid, lambda s: s.d(s.u, "xx") + s.k * s.u, data={"u": base},
                         derivatives=mj.Mollifier(grid, 4 * grid.spacing[0]))
    stack = np.array([1.0, 0.7, 1.3, 0.9])[:, None] * base[None]
    opt, unk = optax.sgd(0.5), {"k": mj.Constant(1.0)}
    with jax.default_device(jax.local_devices()[0]):
        plain = mj.fit_batch(problem, {"u": stack}, unk, opt, steps=60, chunk=30,
                             progress=False)
    split = mj.fit_batch(problem, {"u": stack}, unk, opt, steps=60, chunk=30, mesh=mesh,
                         progress=False)
    return {"values": _rel(split.values["k"], plain.values["k"]),
            "history": _rel(split.history["total"], plain.history["total"]),
            "k": np.asarray(split.values["k"]).tolist()}


def grid_case(mesh) -> dict:
    grid = mj.Grid.from_bounds((32, 12), (0.0, 0.0), (1.0, 0.4), axes=("x", "y"))
    u = np.random.default_rng(0).standard_normal(grid.shape)
    out = {}
    for boundary in ("odd", "periodic"):
        d = mj.Mollifier(grid, 3 * grid.spacing[0], boundary=boundary)
        alphas = ["xx", "xxxx", "xy"]
        with jax.default_device(jax.local_devices()[0]):
            plain = d.derivatives(u, alphas)
        split = mj.sharded_derivatives(d, u, alphas, mesh, axis="x")
        gathered = [multihost_utils.process_allgather(s, tiled=True) for s in split]
        out[boundary] = max(_rel(g, p) for g, p in zip(gathered, plain, strict=True))
    return out


if __name__ == "__main__":
    mesh_b = mj.batch_mesh(None, "batch")
    mesh_g = mj.batch_mesh(None, "grid")
    result = {"processes": jax.process_count(), "devices": jax.device_count(),
              "batch": batch_case(mesh_b), "grid": grid_case(mesh_g)}
    if jax.process_index() == 0:
        with open(sys.argv[3], "w") as f:
            json.dump(result, f)
    jax.distributed.shutdown()
