"""The smooth-or-inclusion choice of `auto_run` with and without its margin, from one run.

Usage (from the repository root, with the package installed):

    python benchmarks/inclusion_margin.py [--core 1] [--json out.json]
        [--cases plate_bump darcy_inclusion ...] [--noise 0.05 0.1] [--seeds 100 101 ...]

For a solved state with one positive 2-D coefficient, `auto_run` fits the smooth field
(curvature prior, weight by GCV) and inclusions (two values and one or two star-shaped
curves) and compares them by GCV's `V`; an inclusion replaces the smooth field only where its
`V` is below the smooth field's by more than `sqrt(2 / n)` relative (`n` observed nodes:
`ModelChoice.margin`). Every candidate's fit is kept in `run.stages`, so one run
gives both rules' results: **margin** (the default's choice, `run.result`) and **no margin**
(the candidate of smallest `V`, the rule before the margin). For each case, noise level and
draw: both errors against the truth (relative L2, `mj.score`'s interior), the two models,
the relative gap `1 - V_inclusion / V_smooth` of the best inclusion, and the margin.

Cases (the project's own simulators): `plate_bump` (`plate`, `stiffness = "bump"`: a
compact smooth bump, 41 x 41), `plate` (its default cosine stiffness, 33 x 33),
`darcy_inclusion` (`darcy2d`, a disk, 33 x 33) and `darcy_smooth` (33 x 33).

Draws: noise seeds 100, 101, ... are evaluation draws that chose nothing; the margin's form
came from the noise statistics and was checked on tuning draws 0-4 (`--seeds 0 1 2 3 4`).
float64, as `mollijax run` uses; CPU per run (process time, compilation included).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _one_core  # noqa: E402

if __name__ == "__main__":
    _one_core.pin(sys.argv)

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

import mollijax as mj  # noqa: E402

CASES = {
    "plate_bump": ("plate", {"n": 41, "stiffness": "bump"}),
    "plate": ("plate", {"n": 33}),
    "darcy_inclusion": ("darcy2d", {"n": 33, "coefficient": "inclusion"}),
    "darcy_smooth": ("darcy2d", {"n": 33}),
}


def one_draw(case: str, noise: float, seed: int) -> dict:
    name, params = CASES[case]
    module = mj.load_problem(name)
    unknown = next(iter(module.UNKNOWNS))
    data = module.simulate(noise=noise, seed=seed, **params)
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mj.IdentifiabilityWarning)
        run = mj.auto_run(module, data)
    cpu = time.process_time() - start
    choice = run.record.get("model_choice") or {}
    candidates = choice.get("candidates", [])

    def err(values) -> float:
        return float(mj.score(values, data)[unknown]["rel_l2"])

    smallest = min(candidates, key=lambda c: c["V"])["model"] if candidates else "smooth"
    stage = run.stages["output error"] if smallest == "smooth" else run.stages[smallest]
    gap = (1.0 - min(c["V"] for c in candidates[1:]) / candidates[0]["V"]
           if len(candidates) > 1 else float("nan"))
    return {"case": case, "noise": noise, "seed": seed,
            "margin_model": run.record.get("model"), "margin_err": err(run.result.values),
            "no_margin_model": smallest, "no_margin_err": err(stage.values),
            "gap": gap, "margin": choice.get("margin", float("nan")), "cpu_s": cpu}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05])
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--json", help="write every draw's numbers (after each draw)")
    args = parser.parse_args(argv)
    info = C.machine_info()
    print(C.describe_machine(info), flush=True)
    rows: list[dict] = []
    for case in args.cases:
        for noise in args.noise:
            for seed in args.seeds:
                row = one_draw(case, noise, seed)
                rows.append(row)
                print(f"{case:16s} {noise:4.2f} {seed:4d}: margin {row['margin_model']:16s} "
                      f"{100 * row['margin_err']:6.2f} % | no margin "
                      f"{row['no_margin_model']:16s} {100 * row['no_margin_err']:6.2f} % | gap "
                      f"{row['gap']:7.4f}, margin {row['margin']:.4f} | {row['cpu_s']:.0f} s",
                      flush=True)
                if args.json:
                    C.write_json(args.json, {"machine": info, "rows": rows, "partial": True})
    print("\n| case | noise | draws | margin: error (mean +- std) | no margin | inclusion "
          "chosen (margin / no margin) | gap range |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases:
        for noise in args.noise:
            sel = [r for r in rows if r["case"] == case and r["noise"] == noise]
            a = np.array([r["margin_err"] for r in sel]) * 100
            b = np.array([r["no_margin_err"] for r in sel]) * 100
            na = sum(r["margin_model"] != "smooth" for r in sel)
            nb = sum(r["no_margin_model"] != "smooth" for r in sel)
            gaps = [r["gap"] for r in sel]
            print(f"| {case} | {noise:.0%} | {len(sel)} | {a.mean():.2f} +- {a.std():.2f} % | "
                  f"{b.mean():.2f} +- {b.std():.2f} % | {na} / {nb} | "
                  f"{min(gaps):.3f} to {max(gaps):.3f} |")
    if args.json:
        C.write_json(args.json, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
