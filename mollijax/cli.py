"""Command-line interface.

    mollijax run [CONFIG] [--problem NAME] [--out DIR] [--resume] [--steps N] [--quiet]
    mollijax list
    mollijax examples DIR [--force]
    mollijax show RESULT_DIR
    mollijax demo
    mollijax theory PART [CONFIG]
    mollijax --version

`run` trains the problem a TOML configuration describes: its `[problem]` table names a
problem file (`file = "my_pde.py"`, a user's own PDE) or a shipped one (`name = "<name>"`,
the file `problems/<name>.py`; `mollijax list` shows them).
With no CONFIG it runs the shipped `configs/default.toml`; `--problem NAME` runs the shipped
`configs/NAME.toml`. It writes to the output folder: `metrics.json` (errors against the
truth, final losses, wall time, status, the configuration), `result.mjx` (`FitResult.save`),
`fields.npz` (recovered unknowns and their truth), PNG plots and `checkpoint.mjx`, from which
`--resume` continues an interrupted run. `examples` copies the shipped problems/, configs/
and theory/ folders out of the installed package, to read and edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import sys
import time
import types
from typing import NamedTuple


class Prepared(NamedTuple):
    """What a configuration becomes before fitting."""

    module: types.ModuleType  # the problem file
    dataset: object  # mollijax.Dataset: simulated or read from files
    problem: object  # mollijax.Problem
    unknowns: dict  # the initial unknowns


def optimiser(cfg):
    """The optax optimiser of an `[optimiser]` table, from the table of names."""
    from ._names import from_name

    return from_name("optimiser", cfg.name, steps=cfg.steps, learning_rate=cfg.learning_rate)


def load_data(config):
    """`(problem file, dataset)`: the problem file imported, its data simulated or read."""
    from ._problem_files import simulate
    from .io import load_dataset

    module = config.module()
    if config.data.source == "simulate":
        dataset = simulate(module, noise=config.data.noise, seed=config.data.seed,
                           **config.params)
    else:
        base = pathlib.Path(config.source).parent if config.source[:1] != "<" else pathlib.Path()
        dataset = load_dataset(config.data, module, base)
    return module, dataset


def prepare(config) -> Prepared:
    """Load the problem file, simulate or read the data, and build the problem."""
    from ._build import build

    module, dataset = load_data(config)
    problem, fields = build(module, dataset, config)
    return Prepared(module, dataset, problem, fields)


def _auto(config, out: pathlib.Path, resume: bool, progress: bool):
    """The `[state] representation = "auto"` branch of `run`: `auto_run`'s sequence of fits."""
    from ._build import auto_run
    from .config import ConfigError

    if resume:
        raise ConfigError(
            f'{config.source}: --resume: [state] representation = "auto" runs several short '
            "fits and writes no checkpoint; run it again, or pick a representation."
        )
    module, dataset = load_data(config)
    auto = auto_run(module, dataset, config, log=print if progress else None, progress=progress)
    return module, dataset, auto


def _evolution_metrics(evolution, grid) -> dict | None:
    if evolution is None:
        return None
    describe = getattr(evolution, "describe", None)
    if describe is not None:
        return {"fields": list(evolution.names), **describe(grid)}
    return {
        "fields": list(evolution.names),
        "substeps": getattr(evolution, "substeps", None),
        "differentiator": repr(evolution.differentiator(grid)),
    }


def run(config, out: str | pathlib.Path | None = None, *, resume: bool = False,
        progress: bool = True, plots: bool = True) -> dict:
    """Train the configured problem and write the outputs; returns the metrics dict.
    `plots=False` skips the PNG figures (metrics, fields and the result are written all the
    same)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from mollijax import fit  # through the package, so that a test can wrap it

    from . import _plots
    from ._build import initial_values
    from ._problem_files import score

    out = pathlib.Path(out or config.output.dir or f"runs/{config.problem}")
    out.mkdir(parents=True, exist_ok=True)
    if config.batch.stack:
        return run_batch_config(config, out, progress=progress)
    start = time.perf_counter()
    auto = None
    if config.state.representation == "auto":
        module, dataset, auto = _auto(config, out, resume, progress)
        problem, fields, initial = auto.problem, auto.unknowns, auto.initial
        problem = problem.prepare(fields)
        result = auto.result
    else:
        module, dataset, problem, fields = prepare(config)
        problem = problem.prepare(fields)  # once: fit and the metrics below reuse it
        initial = initial_values(fields, dataset.grid)
        opt = config.optimiser
        result = fit(problem, fields, optimiser(opt), steps=opt.steps, chunk=opt.chunk,
                     checkpoint=out / "checkpoint.mjx", resume=resume, progress=progress,
                     tol=opt.tol)
    result.save(out / "result.mjx")
    arrays = {k: np.asarray(v) for k, v in result.values.items()}
    arrays.update({f"{k}_truth": np.asarray(v) for k, v in dataset.truth.items()})
    evolved = problem.evolution.names if problem.evolution is not None else ()
    # an evolved field's unknown is its initial profile; its integration is kept too
    arrays.update({f"{k}_evolved": np.asarray(result.fields[k]) for k in evolved})
    np.savez(out / "fields.npz", **arrays)
    drawn = []
    for name, values in (result.values.items() if plots else ()):
        axes = fields[name].axes
        truth = dataset.truth.get(name)
        if name in evolved and name in dataset.clean:
            time_axis = dataset.grid.axis_index(problem.evolution.time)
            truth = np.take(dataset.clean[name], 0, axis=time_axis)
        p = _plots.plot_unknown(name, axes, dataset.grid, values, truth, out / f"{name}.png")
        if p is not None:
            drawn.append(p.name)
    if plots and result.history:
        drawn.append(_plots.plot_losses(result.history, out / "losses.png").name)
    eps = getattr(problem.derivatives, "eps", None)
    metrics = {
        "problem": config.problem,
        "problem_file": config.problem_file,
        "status": result.status.value,
        "message": result.message,
        "steps": result.steps,
        "wall_time": time.perf_counter() - start,
        "fit_time": result.wall_time,
        "errors": score(result.values, dataset),
        "initial_errors": score(initial, dataset),
        "final_losses": {k: float(v[-1]) for k, v in result.history.items() if len(v)},
        "eps": list(eps) if isinstance(eps, tuple) else eps,
        "derivatives": type(problem.derivatives).__name__,
        "evolution": _evolution_metrics(problem.evolution, dataset.grid),
        "steady": None if problem.steady is None else problem.steady.describe(dataset.grid),
        "grid": {"shape": list(dataset.grid.shape), "spacing": list(dataset.grid.spacing),
                 "axes": list(dataset.grid.axes)},
        "plots": drawn,
        "config": config.to_dict(),
    }
    if auto is not None:
        record = dict(auto.record)
        record["stages"] = [
            dict(stage, errors=score(auto.stages[stage["stage"]].values, dataset))
            for stage in record["stages"]
        ]
        record["wall_time"] = metrics["wall_time"]
        metrics["auto"] = record
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


def _batch_api():
    """`(run_batch, result class)` from the public API (whatever it calls the batch result)."""
    import mollijax as mj

    return mj.run_batch, getattr(mj, "BatchResult", None) or mj.FitResult


def run_batch_config(config, out: pathlib.Path, *, progress: bool = True) -> dict:
    """The `[batch]` branch of `run`: one fit per item of a stack, sharded over devices."""
    import jax
    import numpy as np

    b = config.batch
    if b.devices > 1:
        # on CPU, host devices must be requested before the backend starts; once it has
        # started (e.g. inside a notebook) the devices that exist are used
        try:
            jax.config.update("jax_num_cpu_devices", b.devices)
        except RuntimeError:
            pass
    run_batch, _ = _batch_api()

    start = time.perf_counter()
    module, dataset, problem, fields = prepare(config)
    field = b.field or module.STATE[0]
    if field not in problem.data and field not in problem.known:
        from .config import ConfigError

        raise ConfigError(
            f"{config.source}: [batch] field {field!r} is not a data or known field of "
            f"{config.problem!r}; expected one of {sorted(problem.data) + sorted(problem.known)}."
        )
    opt = config.optimiser
    result = run_batch(
        problem, fields, b.stack, field=field, devices=b.devices or None,
        optimiser=optimiser(opt), steps=opt.steps, chunk=opt.chunk,
        dtype=np.dtype(b.dtype), key=b.key or None, output=out / "batch_result.mjx",
    )
    status = np.atleast_1d(np.asarray([getattr(s, "value", str(s)) for s in result.status]))
    metrics = {
        "problem": config.problem,
        "problem_file": config.problem_file,
        "batch": len(status),
        "status": [str(s) for s in status],
        "steps": [int(s) for s in np.atleast_1d(result.steps)],
        "final_loss": [float(v) for v in np.atleast_1d(result.final_loss)],
        "wall_time": time.perf_counter() - start,
        "devices": b.devices or 1,
        "config": config.to_dict(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    if progress:
        print(result.summary())
    return metrics


def summary(metrics: dict) -> str:
    """A few readable lines from a metrics dict."""
    lines = [
        f"problem {metrics['problem']}: {metrics['status']} after {metrics['steps']} steps "
        f"in {metrics['wall_time']:.1f} s",
    ]
    for name, e in metrics["errors"].items():
        start = metrics.get("initial_errors", {}).get(name, {})
        if "rel_l2" in e:
            lines.append(
                f"  {name}: relative L2 error {e['rel_l2']:.3e} (initial guess "
                f"{start.get('rel_l2', float('nan')):.3e}), correlation {e['corr']:.4f}"
            )
        else:
            lines.append(f"  {name}: {e['value']:.6g} (truth {e['truth']:.6g}, relative error "
                         f"{e['rel_error']:.3e})")
    losses = ", ".join(f"{k} {v:.3e}" for k, v in metrics["final_losses"].items())
    lines.append(f"  final losses: {losses}")
    auto = metrics.get("auto")
    if auto:
        lines.append(f"  estimator (auto): {auto['estimator']}: {auto['why']}")
        for stage in auto["stages"]:
            errs = ", ".join(f"{k} {e['rel_l2']:.3e}" if "rel_l2" in e
                             else f"{k} {e['rel_error']:.3e}"
                             for k, e in stage.get("errors", {}).items())
            lines.append(f"    {stage['stage']} ({stage['state']}): {stage['message']}"
                         + (f"; relative error {errs}" if errs else ""))
        if auto.get("criterion"):
            lines.append(f"    weight: {auto['criterion']}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from .config import load_config, shipped_config

    if args.config is not None and args.problem is not None:
        raise SystemExit("mollijax run: give a CONFIG file or --problem, not both.")
    if args.config is not None:
        config = load_config(args.config)
    else:
        config = shipped_config(args.problem or "default")
    if args.steps is not None:
        if args.steps < 1:
            raise SystemExit(f"mollijax run: --steps must be >= 1, got {args.steps}.")
        config = config.replace(optimiser=dataclasses.replace(config.optimiser, steps=args.steps))
    out = pathlib.Path(args.out or config.output.dir or f"runs/{config.problem}")
    if not args.quiet:
        print(f"mollijax run: {config.problem} ({config.problem_file}) from {config.source} "
              f"-> {out}")
    metrics = run(config, out, resume=args.resume, progress=not args.quiet,
                  plots=not args.no_plots)
    if "batch" in metrics:  # one status per item; the summary was printed by the batch run
        return 0 if all(s == "completed" for s in metrics["status"]) else 1
    if not args.quiet:
        print(summary(metrics))
    return 0 if metrics["status"] == "completed" else 1


def _list(args: argparse.Namespace) -> int:
    from ._examples import examples_root
    from ._problem_files import load_problem
    from .config import find_configs

    root = examples_root()
    print(f"shipped problems in {root / 'problems'} (mollijax run --problem NAME):")
    for path in sorted((root / "problems").glob("*.py")):
        if path.name.startswith("_"):
            continue
        print(f"  {path.stem:<22} {load_problem(path).DESCRIPTION}")
    folder = pathlib.Path(args.configs) if args.configs else root / "configs"
    found = find_configs(folder)
    if found:
        print(f"configurations in {folder} (mollijax run PATH):")
        for path in found:
            print(f"  {path.stem:<34} {path}")
    return 0


def _examples(args: argparse.Namespace) -> int:
    from ._examples import FOLDERS, examples_root

    dest = pathlib.Path(args.dir)
    if dest.exists() and not args.force:
        raise SystemExit(
            f"mollijax examples: {dest} already exists; choose a new folder or pass --force "
            "to overwrite the copies in it."
        )
    root = examples_root()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in FOLDERS:
        shutil.copytree(root / folder, dest / folder, ignore=ignore, dirs_exist_ok=True)
    if not args.quiet:
        print(f"mollijax examples: copied {', '.join(f + '/' for f in FOLDERS)} to {dest}; "
              f"run e.g. mollijax run {dest / 'configs' / 'default.toml'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    path = pathlib.Path(args.result) / "metrics.json"
    if not path.is_file():
        print(f"mollijax show: {path} does not exist", file=sys.stderr)
        return 2
    print(summary(json.loads(path.read_text())))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import mollijax as mj

    rng = np.random.default_rng(args.seed)
    grid = mj.Grid.from_bounds((args.n, args.n), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    w = 2 * np.pi
    u = np.sin(w * x) * np.cos(w * y)
    exact = {"x": w * np.cos(w * x) * np.cos(w * y), "xx": -(w**2) * u,
             "xy": -(w**2) * np.cos(w * x) * np.sin(w * y), "xxyy": w**4 * u}
    noisy = u + args.noise * u.std() * rng.standard_normal(u.shape)
    interior = (slice(args.n // 8, -args.n // 8),) * 2
    print(f"u = sin(2 pi x) cos(2 pi y) on a {args.n}x{args.n} grid, noise {args.noise:.0%}")
    print(f"{'derivative':>10} {'eps':>8} {'mollified':>10} {'finite diff':>12}"
          "   (relative L2 error)")
    fd = mj.FiniteDifference(grid)
    for name, ref in exact.items():
        order = len(name)
        level = mj.estimate_noise(noisy) if args.noise > 0 else 0.0
        eps = mj.suggest_eps(grid, order, level)
        mol = mj.Mollifier(grid, eps)(noisy, name)
        err = lambda v, ref=ref: float(
            np.linalg.norm((v - ref)[interior]) / np.linalg.norm(ref[interior])
        )
        print(f"{name:>10} {eps:8.4f} {err(mol):10.3e} {err(fd(noisy, name)):12.3e}")
    return 0


# part -> (file in the shipped theory/ folder, loaded by path and run as `run(config, out)`, help)
THEORY = {
    "electro": ("electro.py",
                "depth-2 networks as electrodynamics (docs/theory_electrodynamics.md)"),
    "transport": ("transport.py", "deep DAEs as transport (docs/theory_transport.md)"),
}


def _theory(args: argparse.Namespace) -> int:
    import tomllib

    import jax

    jax.config.update("jax_enable_x64", True)  # the theory checks compare to 1e-6 and below
    from ._examples import load_file, shipped

    config: dict = {}
    if args.config:
        path = pathlib.Path(args.config)
        if not path.is_file():
            raise SystemExit(f"mollijax theory: no such configuration file: {path}")
        with open(path, "rb") as f:
            config = tomllib.load(f)
    out = pathlib.Path(args.out or f"runs/theory_{args.part}")
    out.mkdir(parents=True, exist_ok=True)
    module = load_file(shipped("theory", THEORY[args.part][0]))
    metrics = module.run(config, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    if not args.quiet:
        print(f"mollijax theory {args.part}: wrote {out / 'metrics.json'} and plots in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="mollijax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mollijax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train the problem of a TOML configuration")
    run_p.add_argument("config", nargs="?", help="TOML file (default: the shipped "
                       "configs/default.toml, or configs/NAME.toml with --problem NAME)")
    run_p.add_argument("--problem", help="run the shipped configuration configs/NAME.toml")
    run_p.add_argument("--out", help="output folder (default: [output] dir, else runs/<problem>)")
    run_p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    run_p.add_argument("--steps", type=int, help="override [optimiser] steps")
    run_p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run_p.add_argument("--no-plots", action="store_true",
                       help="skip the PNG figures (metrics, fields and result are written)")
    run_p.set_defaults(func=_run)
    list_p = sub.add_parser("list", help="list the shipped problems and configurations")
    list_p.add_argument("--configs", default=None,
                        help="folder of TOML configurations (default: the shipped configs/)")
    list_p.set_defaults(func=_list)
    ex_p = sub.add_parser("examples", help="copy the shipped problems/, configs/ and theory/ "
                          "into a folder")
    ex_p.add_argument("dir", help="destination folder (must not exist, unless --force)")
    ex_p.add_argument("--force", action="store_true", help="copy into an existing folder, "
                      "overwriting files of the same name")
    ex_p.add_argument("--quiet", action="store_true")
    ex_p.set_defaults(func=_examples)
    show_p = sub.add_parser("show", help="print the metrics of a finished run")
    show_p.add_argument("result", help="output folder of `mollijax run`")
    show_p.set_defaults(func=_show)
    demo = sub.add_parser("demo",
                          help="mollified vs finite-difference derivatives of a noisy field")
    demo.add_argument("--n", type=int, default=128, help="grid points per axis")
    demo.add_argument("--noise", type=float, default=0.05, help="relative noise level")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    theory_p = sub.add_parser("theory", help="run a theory demonstration: "
                              + ", ".join(f"{k} ({v[1]})" for k, v in THEORY.items()))
    theory_p.add_argument("part", choices=sorted(THEORY))
    theory_p.add_argument("config", nargs="?", help="TOML file (default: built-in defaults; "
                          "see configs/theory_<part>.toml)")
    theory_p.add_argument("--out", help="output folder (default: runs/theory_<part>)")
    theory_p.add_argument("--quiet", action="store_true")
    theory_p.set_defaults(func=_theory)
    args = parser.parse_args(argv)
    from ._errors import MollijaxError

    try:
        return int(args.func(args))
    except MollijaxError as e:  # bad input: a clear message, not a traceback
        print(f"mollijax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
