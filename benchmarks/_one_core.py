"""Pin this process to one CPU core and one XLA thread; import before jax.

`pin(argv)` reads `--core N` from `argv` (default 0), calls `sched_setaffinity` (Linux; the
same as `taskset -c N`), appends `--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1` to `XLA_FLAGS` and sets `OPENBLAS_NUM_THREADS=1` unless
given (LAPACK calls, e.g. the propagator's solve, then spawn no threads that would wait on
the one core). It imports nothing heavy, so that the benchmark scripts can call it before
jax reads its flags.
"""

from __future__ import annotations

import os


def pin(argv: list[str]) -> int:
    """Pin to the core after `--core` in `argv` (0 if absent); return that core."""
    core = 0
    for i, arg in enumerate(argv):
        if arg == "--core" and i + 1 < len(argv):
            core = int(argv[i + 1])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()
    return core
