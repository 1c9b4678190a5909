"""The default estimator in float32 and in float64: the same `mj.auto_run` call with JAX's x64
off for the call (`x64=False`, what a fresh Python session had before `auto_run` took float64
for itself) and on (`x64=True`, its default; `mollijax run` enables x64 globally).

    python benchmarks/auto_precision.py [--core N] [--cases heat1d diffusion_reaction]
                                        [--seeds 100 101 102 103 104] [--noise 0.05]

Per case and noise seed: the relative L2 error of the unknown (`mj.score`, interior nodes)
and the CPU time of the call (`time.process_time()`, one core, one XLA thread, compilation
included: the first seed of each precision compiles). Seeds are the accuracy suite's
evaluation draws (100, ...); nothing is chosen from them here: the comparison has no setting
to tune. Grids: heat1d 101 x 101, diffusion_reaction 101 (the accuracy suite's full size).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _one_core  # noqa: E402

_one_core.pin(sys.argv)  # before jax is imported

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

import mollijax as mj  # noqa: E402

CASES = {
    "heat1d": ("D", {"nx": 101, "nt": 101}),
    "diffusion_reaction": ("k", {"nx": 101}),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--noise", type=float, default=0.05)
    args = parser.parse_args(argv)
    print(f"auto_run in float32 (x64=False) and float64 (x64=True), noise {args.noise:.0%}, "
          f"seeds {args.seeds}")
    print(f"{'case':20s} {'seed':>5s} {'float32':>9s} {'float64':>9s} {'ratio':>6s} "
          f"{'cpu32 s':>8s} {'cpu64 s':>8s}")
    for name in args.cases:
        unknown, params = CASES[name]
        module = mj.load_problem(name)
        rows = []
        for seed in args.seeds:
            data = module.simulate(noise=args.noise, seed=seed, **params)
            out = {}
            for x64 in (False, True):
                start = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", mj.IdentifiabilityWarning)
                    run = mj.auto_run(module, data, x64=x64)
                cpu = time.process_time() - start
                assert run.record["dtype"] == ("float64" if x64 else "float32")
                out[x64] = (float(mj.score(run.result.values, data)[unknown]["rel_l2"]), cpu)
            rows.append((out[False][0], out[True][0]))
            print(f"{name:20s} {seed:5d} {out[False][0]:9.2%} {out[True][0]:9.2%} "
                  f"{out[False][0] / out[True][0]:6.2f} {out[False][1]:8.1f} {out[True][1]:8.1f}",
                  flush=True)
        e32, e64 = np.mean(rows, axis=0)
        print(f"{name:20s} {'mean':>5s} {e32:9.2%} {e64:9.2%} {e32 / e64:6.2f}", flush=True)


if __name__ == "__main__":
    main()
