"""Command-line interface.

    mollijax run [CONFIG] [--problem NAME] [--out DIR] [--resume] [--steps N] [--quiet]
    mollijax list
    mollijax show RESULT_DIR
    mollijax demo

`run` trains a ready problem from a TOML configuration (or, with no CONFIG, the built-in
default run of `--problem`, `heat1d` unless given) and writes to the output folder:
`metrics.json` (errors against the truth, final losses, wall time, status, the configuration),
`result.mjx` (`FitResult.save`), `fields.npz` (recovered unknowns and their truth),
PNG plots and `checkpoint.mjx`, from which `--resume` continues an interrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

DEFAULT_PROBLEM = "heat1d"


def _optimiser(cfg):
    import optax

    from ._fit import default_optimiser

    if cfg.name == "lbfgs":
        return optax.lbfgs()
    return default_optimiser(cfg.steps, cfg.learning_rate)


def prepare(config):
    """`(module, sim, problem, unknowns)` of a configuration: simulate or load the data and
    build the problem."""
    import jax

    from . import problems
    from .io import load_simulation

    module = problems.get(config.problem)
    if config.data.source == "simulate":
        sim = module.simulate(noise=config.data.noise, seed=config.data.seed, **config.params)
    else:
        base = pathlib.Path(config.source).parent if config.source[:1] != "<" else pathlib.Path()
        sim = load_simulation(config.data, module, base)
    d = config.derivatives
    unknowns = {
        name: {k: v for k, v in dataclasses.asdict(u).items() if v is not None}
        for name, u in config.unknowns.items()
    }
    state = {k: v for k, v in dataclasses.asdict(config.state).items() if v is not None}
    eps = d.eps if d.eps != "auto" else None
    if isinstance(eps, int):
        eps = float(eps)
    problem, fields = problems.build(
        module, sim, derivatives=d.method, eps=eps, kernel=d.kernel,
        boundary=d.boundary if isinstance(d.boundary, str) else tuple(d.boundary), state=state,
        unknowns=unknowns, regularisers=config.regularisers, weights=config.weights or None,
        key=jax.random.PRNGKey(config.optimiser.seed),
    )
    return module, sim, problem, fields


def run(config, out: str | pathlib.Path | None = None, *, resume: bool = False,
        progress: bool = True) -> dict:
    """Train the configured problem and write the outputs; returns the metrics dict."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from . import _plots
    from ._fit import fit
    from .problems._base import errors, initial_values

    out = pathlib.Path(out or config.output.dir or f"runs/{config.problem}")
    out.mkdir(parents=True, exist_ok=True)
    if config.batch.stack:
        return run_batch_config(config, out, progress=progress)
    start = time.perf_counter()
    module, sim, problem, fields = prepare(config)
    problem = problem.prepare(fields)  # once: fit and the metrics below reuse it
    initial = initial_values(fields, sim.grid)
    opt = config.optimiser
    result = fit(problem, fields, _optimiser(opt), steps=opt.steps, chunk=opt.chunk,
                 checkpoint=out / "checkpoint.mjx", resume=resume, progress=progress)
    result.save(out / "result.mjx")
    arrays = {k: np.asarray(v) for k, v in result.values.items()}
    arrays.update({f"{k}_truth": np.asarray(v) for k, v in sim.truth.items()})
    evolved = problem.evolution.names if problem.evolution is not None else ()
    # an evolved field's unknown is its initial profile; its integration is kept too
    arrays.update({f"{k}_evolved": np.asarray(result.fields[k]) for k in evolved})
    np.savez(out / "fields.npz", **arrays)
    plots = []
    for name, values in result.values.items():
        axes = fields[name].axes
        truth = sim.truth.get(name)
        if name in evolved and name in sim.clean:
            truth = np.take(sim.clean[name], 0, axis=sim.grid.axis_index(problem.evolution.time))
        p = _plots.plot_unknown(name, axes, sim.grid, values, truth, out / f"{name}.png")
        if p is not None:
            plots.append(p.name)
    if result.history:
        plots.append(_plots.plot_losses(result.history, out / "losses.png").name)
    eps = getattr(problem.derivatives, "eps", problem.derivatives)
    metrics = {
        "problem": config.problem,
        "status": result.status.value,
        "message": result.message,
        "steps": result.steps,
        "wall_time": time.perf_counter() - start,
        "fit_time": result.wall_time,
        "errors": errors(result.values, sim),
        "initial_errors": errors(initial, sim),
        "final_losses": {k: float(v[-1]) for k, v in result.history.items() if len(v)},
        "eps": list(eps) if isinstance(eps, tuple) else eps,
        "evolution": None if problem.evolution is None else {
            "fields": list(evolved),
            "substeps": problem.evolution.substeps,
            "differentiator": repr(problem.evolution.differentiator(sim.grid)),
        },
        "grid": {"shape": list(sim.grid.shape), "spacing": list(sim.grid.spacing),
                 "axes": list(sim.grid.axes)},
        "plots": plots,
        "config": config.to_dict(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


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
    from ._batch import run_batch

    start = time.perf_counter()
    module, sim, problem, fields = prepare(config)
    field = b.field or module.STATE[0]
    if field not in problem.data and field not in problem.known:
        raise SystemExit(
            f"{config.source}: [batch] field {field!r} is not a data or known field of "
            f"{config.problem!r}; expected one of {sorted(problem.data) + sorted(problem.known)}."
        )
    opt = config.optimiser
    result = run_batch(
        problem, fields, b.stack, field=field, devices=b.devices or None,
        optimiser=_optimiser(opt), steps=opt.steps, chunk=opt.chunk,
        dtype=np.dtype(b.dtype), key=b.key or None, output=out / "batch_result.mjx",
    )
    metrics = {
        "problem": config.problem,
        "batch": len(result.status),
        "status": [getattr(s, "value", str(s)) for s in result.status],
        "steps": [int(s) for s in result.steps],
        "final_loss": [float(v) for v in result.final_loss],
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
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from .config import default_config, load_config

    if args.config is not None and args.problem is not None:
        raise SystemExit("mollijax run: give a CONFIG file or --problem, not both.")
    config = (load_config(args.config) if args.config is not None
              else default_config(args.problem or DEFAULT_PROBLEM))
    if args.steps is not None:
        config = config.replace(optimiser=dataclasses.replace(config.optimiser, steps=args.steps))
    out = pathlib.Path(args.out or config.output.dir or f"runs/{config.problem}")
    if not args.quiet:
        print(f"mollijax run: {config.problem} from {config.source} -> {out}")
    metrics = run(config, out, resume=args.resume, progress=not args.quiet)
    if "batch" in metrics:  # one status per item; the summary was printed by the batch run
        return 0 if all(s == "completed" for s in metrics["status"]) else 1
    if not args.quiet:
        print(summary(metrics))
    return 0 if metrics["status"] == "completed" else 1


def _list(args: argparse.Namespace) -> int:
    from . import problems
    from .config import find_configs

    print("ready problems (mollijax run --problem NAME):")
    for name, module in problems.registry().items():
        print(f"  {name:<22} {module.DESCRIPTION}")
    found = find_configs(args.configs)
    if found:
        print(f"configurations in {args.configs}/ (mollijax run PATH):")
        for path in found:
            print(f"  {path}")
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
    print(f"{'derivative':>10} {'eps':>8} {'mollified':>10} {'finite diff':>12}   (relative L2 error)")
    fd = mj.FiniteDifference(grid)
    for name, ref in exact.items():
        order = len(name)
        level = mj.estimate_noise(noisy) if args.noise > 0 else 0.0
        eps = mj.suggest_eps(grid, order, level)
        mol = mj.Mollifier(grid, eps)(noisy, name)
        err = lambda v: float(np.linalg.norm((v - ref)[interior]) / np.linalg.norm(ref[interior]))
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
    parser = argparse.ArgumentParser(prog="mollijax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train a ready problem from a TOML configuration")
    run_p.add_argument("config", nargs="?", help="TOML file (default: the built-in run of "
                       f"--problem, {DEFAULT_PROBLEM!r} unless given)")
    run_p.add_argument("--problem", help="run this ready problem's built-in default")
    run_p.add_argument("--out", help="output folder (default: [output] dir, else runs/<problem>)")
    run_p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    run_p.add_argument("--steps", type=int, help="override [optimiser] steps")
    run_p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run_p.set_defaults(func=_run)
    list_p = sub.add_parser("list", help="list the ready problems and configurations")
    list_p.add_argument("--configs", default="configs", help="folder of TOML configurations")
    list_p.set_defaults(func=_list)
    show_p = sub.add_parser("show", help="print the metrics of a finished run")
    show_p.add_argument("result", help="output folder of `mollijax run`")
    show_p.set_defaults(func=_show)
    demo = sub.add_parser("demo", help="mollified vs finite-difference derivatives of a noisy field")
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
