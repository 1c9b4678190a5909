"""Evolved state vs mollified data, through the shipped configurations, at several noise levels.

Usage (from the repository root, with the package installed):

    python benchmarks/evolve_table.py [--problems heat1d heat2d] [--noise 0 0.01 0.05 0.1]
                                      [--seeds 0 1 2] [--core 0] [--steps N]
                                      [--markdown out.md]

For each problem two configurations are run exactly as `mollijax run` runs them (same
`prepare`, optimiser and steps), with only `[data] noise` and `seed` changed:

- `mollified`: `configs/<problem>.toml`, the problem's default run (the observed field as
  mollified data in the residual, a grid unknown with its regulariser, Adam);
- `evolved`: `configs/<problem>_evolve.toml` (an `Evolution` state integrated in time from a
  fitted initial profile, a small network unknown, L-BFGS).

Both run on the evolved configuration's grid (its `[problem]` parameters), so they see the
same data.

Reported per noise level: the relative L2 error of D on interior nodes
(`mollijax.score`), mean and max over the seeds, and the median wall time of `fit`
(compilation included: each run builds a fresh optimiser, as the CLI does). One core: as in
`benchmarks/heat1d.py`, the process pins itself to `--core` and one XLA thread before jax is
imported. float32 (the CLI's default).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _one_core  # noqa: E402

_one_core.pin(sys.argv)  # before jax is imported

import dataclasses  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

import mollijax as mj  # noqa: E402
from mollijax.cli import optimiser, prepare  # noqa: E402
from mollijax.config import load_config  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def run_one(config, noise: float, seed: int) -> tuple[float, float, str]:
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, noise=noise,
                                                                  seed=seed))
    _, sim, problem, fields = prepare(config)
    opt = config.optimiser
    t0 = time.perf_counter()
    result = mj.fit(problem, fields, optimiser(opt), steps=opt.steps, chunk=opt.chunk,
                 progress=False)
    wall = time.perf_counter() - t0
    return mj.score(result.values, sim)["D"]["rel_l2"], wall, result.status.value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["heat1d", "heat2d"])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--core", type=int, default=0, help="the one CPU core to run on")
    parser.add_argument("--steps", type=int, default=None,
                        help="cap on both configurations' steps (a quick check; default: theirs)")
    parser.add_argument("--markdown", help="write the report table to this Markdown file")
    args = parser.parse_args(argv)
    print(C.describe_machine(C.machine_info()), flush=True)
    rows = []
    for name in args.problems:
        evolved = load_config(CONFIGS / f"{name}_evolve.toml")
        mollified = load_config(CONFIGS / f"{name}.toml")
        # the same data for both: the evolved configuration's grid and time span
        mollified = dataclasses.replace(mollified, params=dict(evolved.params))
        if args.steps is not None:
            evolved, mollified = (
                c.replace(optimiser=dataclasses.replace(
                    c.optimiser, steps=min(args.steps, c.optimiser.steps),
                    chunk=min(args.steps, c.optimiser.chunk)))
                for c in (evolved, mollified))
        configs = {"mollified": mollified, "evolved": evolved}
        for noise in args.noise:
            seeds = args.seeds if noise > 0 else args.seeds[:1]  # no draws without noise
            for label, config in configs.items():
                out = [run_one(config, noise, s) for s in seeds]
                errs = np.array([o[0] for o in out])
                grid = "x".join(str(n) for n in prepare(config)[1].grid.shape)
                rows.append({
                    "problem": name, "grid": grid, "noise": f"{noise:.0%}", "state": label,
                    "seeds": len(seeds), "D error mean": f"{errs.mean():.2%}",
                    "D error max": f"{errs.max():.2%}",
                    "fit (median)": C.fmt_seconds(float(np.median([o[1] for o in out]))),
                    "status": ",".join(sorted({o[2] for o in out})),
                })
                print(rows[-1], flush=True)
    text = C.format_table(rows, list(rows[0]))
    print()
    print(text)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
