"""Command-line interface.

    mollijax run [CONFIG] [--problem NAME] [--out DIR] [--resume | --force] [--steps N]
                 [--uncertainty METHOD] [--quiet] [--no-plots]
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
`configs/NAME.toml`.

The output folder (`--out`) holds one run: `run.json` (the run's signature), the checkpoint
`checkpoint.mjx` (with its history `checkpoint.mjx.history`) while it trains, then the
output set `result.mjx` (`FitResult.save`; `batch_result.mjx` for a batch), `fields.npz`
(recovered unknowns and their truth), PNG plots and `metrics.json` (errors against the
truth, final losses (each term unweighted) with every term's weight (`term_weights`), wall
time, status, versions, hashes of the configuration and the data, checksums of the other
files; strict JSON, non-finite numbers as null with the reason under `"non_finite"`). The
output set is written to a temporary folder beside the target and moved into place at the
end, `metrics.json` last, so an interrupted or killed run never leaves a new file beside an
old `metrics.json`. A folder that holds an earlier run is refused unless `--resume`
(continue it: the configuration except the step count, the problem file, the data, the grid,
the unknowns and the optimiser must match, and what differs is named) or `--force` (replace
it; the earlier files are removed once the new run's data are loaded). `show` reports a
finished, partial, stale or batch folder and checks the files against `metrics.json`.
`examples` copies the shipped problems/, configs/ and theory/ folders out of the installed
package, to read and edit.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import signal
import sys
import time
import types
from typing import NamedTuple

from ._checkpoint import CheckpointMismatchError as CheckpointMismatchError, CorruptFileError
from ._errors import MollijaxError
from ._plots import (  # the figures a run draws
    loss_figure as loss_figure,
    plot_losses as plot_losses,
    plot_unknown as plot_unknown,
    split_terms as split_terms,
    unknown_figure as unknown_figure,
)
from ._run_folder import (
    _STAGING,
    CHECKPOINT,
    METRICS,
    SIGNATURE,
    RunFolderError as RunFolderError,
    Staging,
    _canonical,
    _checkpoint_record,
    _sha256_file,
    _write_atomic,
    check_folder,
    check_resume,
    clear_earlier,
    dump_metrics as dump_metrics,
    earlier_run,
    make_folder,
    read_metrics as read_metrics,
    run_signature as run_signature,
    strict_json,
    versions,
    write_signature,
)


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


def prepare(config, log=None) -> Prepared:
    """Load the problem file, simulate or read the data, and build the problem (`log`: told
    the regulariser weights chosen for `"auto"`)."""
    from ._build import build

    module, dataset = load_data(config)
    problem, fields = build(module, dataset, config, log=log)
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
    # an identifiability warning comes once: in the log where there is one, else as a warning
    auto = auto_run(module, dataset, config, log=print if progress else None,
                    progress=progress)
    return module, dataset, auto


def _final_losses(problem, result) -> dict:
    """Each loss term's last value (unweighted) and the total: from the fit's history, and
    where a fit records only its total (Levenberg-Marquardt) the terms evaluated at its
    result."""
    final = {k: float(v[-1]) for k, v in result.history.items() if len(v)}
    missing = [t.name for t in problem.terms if t.name not in final]
    if missing and result.unknowns is not None:
        terms = problem.loss_terms(result.unknowns)
        final.update({k: float(terms[k]) for k in missing if k in terms})
    return final


def _steps_run(auto, result) -> int:
    """The optimiser steps of the run: the final fit's, or every stage's and weight trial's
    of an automatic run (what the automatic error bars are weighed against)."""
    if auto is None:
        return int(result.steps)
    trials = auto.choice.curve if auto.choice is not None else ()
    return (sum(int(r.steps) for r in auto.stages.values())
            + sum(int(t.steps) for t in trials))


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
        force: bool = False, progress: bool = True, plots: bool = True) -> dict:
    """Train the configured problem and write the outputs; returns the metrics dict.

    `out` must not hold an earlier run unless `resume` (continue it: its signature must
    match, see `run_signature`) or `force` (replace it). The output set goes to a temporary
    folder beside `out` and is moved into place at the end, `metrics.json` last.
    `plots=False` skips the PNG figures (metrics, fields and the result are written all the
    same)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from mollijax import fit  # through the package, so that a test can wrap it

    from ._build import initial_values, regulariser_weights
    from ._problem_files import score

    out = pathlib.Path(out or config.output.dir or f"runs/{config.problem}")
    check_folder(out, resume, force,
                 resumable=config.state.representation != "auto" or bool(config.batch.stack))
    if config.batch.stack:
        return run_batch_config(config, out, progress=progress, resume=resume, force=force)
    start = time.perf_counter()
    auto = None
    if config.state.representation == "auto":
        try:
            module, dataset, auto = _auto(config, out, resume, progress)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                "interrupted before any output was written: an automatic run ([state] "
                'representation = "auto") keeps no checkpoint to resume; run it again'
                + (" (the folder keeps its earlier complete files)" if earlier_run(out)
                   else "")) from None
        fit_time = time.perf_counter() - start  # every stage and trial of auto_run
        problem, fields, initial = auto.problem, auto.unknowns, auto.initial
        problem = problem.prepare(fields)
        signature = run_signature(config, dataset, problem, fields)
        _start_folder(out, signature, resume=False, force=force, progress=progress)
        result = auto.result
    else:
        module, dataset, problem, fields = prepare(config, log=print if progress else None)
        problem = problem.prepare(fields)  # once: fit and the metrics below reuse it
        initial = initial_values(fields, dataset.grid)
        signature = run_signature(config, dataset, problem, fields)
        _start_folder(out, signature, resume=resume, force=force, progress=progress)
        opt = config.optimiser
        result = fit(problem, fields, optimiser(opt), steps=opt.steps, chunk=opt.chunk,
                     checkpoint=out / CHECKPOINT, resume=resume, progress=progress,
                     tol=opt.tol)
        fit_time = result.wall_time
    with Staging(out) as stage:
        result.save(stage.path / "result.mjx")
        arrays = {k: np.asarray(v) for k, v in result.values.items()}
        arrays.update({f"{k}_truth": np.asarray(v) for k, v in dataset.truth.items()})
        evolved = problem.evolution.names if problem.evolution is not None else ()
        # an evolved field's unknown is its initial profile; its integration is kept too
        arrays.update({f"{k}_evolved": np.asarray(result.fields[k]) for k in evolved})
        from ._uncertainty import run_outputs  # <unknown>_std, uncertainty.json, figures
        std_arrays, figures, error_bars = run_outputs(config, problem, result, dataset,
                                                      _steps_run(auto, result),
                                                      folder=stage.path)
        arrays.update(std_arrays)
        domain = None if problem.domain is None else np.asarray(problem.domain)
        if domain is not None:  # the raw values are kept; the mask says where they count
            arrays.setdefault("domain", domain)
        np.savez(stage.path / "fields.npz", **arrays)
        eps = getattr(problem.derivatives, "eps", None)
        metrics = {
            "kind": "run",
            "problem": config.problem,
            "problem_file": config.problem_file,
            "status": result.status.value,
            "message": result.message,
            "steps": result.steps,
            "wall_time": time.perf_counter() - start,
            "fit_time": fit_time,
            "errors": score(result.values, dataset),
            "initial_errors": score(initial, dataset),
            "final_losses": _final_losses(problem, result),
            # the terms above are unweighted; "total" is the sum of weight x term
            "term_weights": {t.name: float(t.weight) for t in problem.terms},
            "eps": list(eps) if isinstance(eps, tuple) else eps,
            "derivatives": type(problem.derivatives).__name__,
            "evolution": _evolution_metrics(problem.evolution, dataset.grid),
            "steady": None if problem.steady is None else problem.steady.describe(dataset.grid),
            "grid": {"shape": list(dataset.grid.shape), "spacing": list(dataset.grid.spacing),
                     "axes": list(dataset.grid.axes),
                     "spacing_from": dataset.params.get("spacing_from", "the configuration")
                     if config.data.source == "file" else "the simulation"},
            "error_bars": error_bars,
            "plots": [],  # drawn after the result is written, see `_draw`
            "config": config.to_dict(),
        }
        if problem.domain is not None:
            # the domain's nodes that a residual reads: outside them (the rim within a
            # kernel's reach of the edge) only the regularisers or the start set the values
            band = problem.band_on_grid()
            metrics["domain"] = {"nodes": int(np.asarray(problem.domain).sum()),
                                 "band": int(band.sum())}
            metrics["errors_on_band"] = score(result.values, dataset.replace(domain=band))
        chosen = regulariser_weights(config, problem)  # those configured "auto"
        if chosen:
            metrics["weights"] = chosen
        if auto is not None:
            record = dict(auto.record)
            record["stages"] = [
                dict(stage_, errors=score(auto.stages[stage_["stage"]].values, dataset))
                for stage_ in record["stages"]
            ]
            record["wall_time"] = metrics["wall_time"]
            metrics["auto"] = record
        _provenance(metrics, out, signature)
        metrics = stage.commit(metrics)
    if plots:  # off the critical path: the result above is complete and checked without them
        figures = _unknown_figures(result, fields, dataset, problem) + figures
        metrics = _draw(out, metrics, figures, result.history)
    return metrics


def _unknown_figures(result, fields, dataset, problem) -> list:
    """`(file name, draw(path))` of each unknown's figure against its truth (on the domain
    only, where there is one; an evolved field's truth is its initial profile)."""
    import numpy as np

    domain = None if problem.domain is None else np.asarray(problem.domain)
    evolved = problem.evolution.names if problem.evolution is not None else ()
    figures = []
    for name, values in result.values.items():
        axes = fields[name].axes
        truth = dataset.truth.get(name)
        if domain is not None and axes:  # drawn on the domain only
            from ._terms import domain_on_axes

            inside = np.asarray(domain_on_axes(domain, dataset.grid, axes))
            values = np.where(inside, np.asarray(values), np.nan)
            truth = None if truth is None else np.where(inside, truth, np.nan)
        if name in evolved and name in dataset.clean:
            time_axis = dataset.grid.axis_index(problem.evolution.time)
            truth = np.take(dataset.clean[name], 0, axis=time_axis)
        figures.append((f"{name}.png", lambda path, name=name, axes=axes, values=values,
                        truth=truth: plot_unknown(name, axes, dataset.grid, values, truth, path)))
    return figures


def _draw(out: pathlib.Path, metrics: dict, figures: list, history: dict) -> dict:
    """Draw the run's figures after its result is in place, and add them to its
    `metrics.json`. A figure that fails is named in `metrics["plots_failed"]` (and on
    stderr) and the run stands; Ctrl-C here leaves the written result whole."""
    if history:
        figures = [*figures, ("losses.png", lambda path: plot_losses(history, path))]
    failed = {}
    with Staging(out) as stage:
        for name, draw in figures:
            try:
                draw(stage.path / name)
            except Exception as e:  # noqa: BLE001 -- a figure never costs the run its result
                failed[name] = f"{type(e).__name__}: {e}"
                with contextlib.suppress(OSError):
                    (stage.path / name).unlink()
        for name, why in failed.items():
            print(f"mollijax run: figure {name} was not drawn ({why}); the run's result is "
                  "written.", file=sys.stderr)
        return stage.add_to_run(metrics, {"plots_failed": failed} if failed else {})


def _start_folder(out: pathlib.Path, signature: dict, *, resume: bool, force: bool,
                  progress: bool) -> None:
    """After the data are loaded and the problem is built: check a resumed run's signature
    (or clear the earlier run for --force), make the folder and record the signature."""
    if resume:
        if not check_resume(out, signature) and progress:
            print(f"mollijax run: --resume: no checkpoint in {out}; starting the run")
    elif force and out.is_dir():
        clear_earlier(out)
    make_folder(out)
    write_signature(out, signature)


def _provenance(metrics: dict, out: pathlib.Path, signature: dict) -> None:
    """Versions, the configuration's and the data's hashes and the checkpoint's state."""
    config = metrics["config"]
    metrics["versions"] = versions()
    metrics["hashes"] = {
        "config": hashlib.sha256(_canonical(strict_json(
            {k: v for k, v in config.items() if k != "source"}))).hexdigest(),
        "data": signature["data"],
        "problem_file": signature["problem_file"],
        "run": hashlib.sha256(_canonical(signature)).hexdigest(),
    }
    metrics["checkpoint"] = _checkpoint_record(out)


def run_batch_config(config, out: pathlib.Path, *, progress: bool = True, resume: bool = False,
                     force: bool = False) -> dict:
    """The `[batch]` branch of `run`: one fit per item of a stack, sharded over devices,
    checkpointed in `out` (so `resume` continues it); a non-finite item is left out."""
    import jax
    import numpy as np

    import mollijax as mj

    from .io import read_stack

    b = config.batch
    if b.devices > 1:
        # on CPU, host devices must be requested before the backend starts; once it has
        # started (e.g. inside a notebook) the devices that exist are used
        try:
            jax.config.update("jax_num_cpu_devices", b.devices)
        except RuntimeError:
            pass

    start = time.perf_counter()
    module, dataset, problem, fields = prepare(config)
    field = b.field or module.STATE[0]
    if field not in problem.data and field not in problem.known:
        from .config import ConfigError

        raise ConfigError(
            f"{config.source}: [batch] field {field!r} is not a data or known field of "
            f"{config.problem!r}; expected one of {sorted(problem.data) + sorted(problem.known)}."
        )
    base = pathlib.Path(config.source).parent if config.source[:1] != "<" else pathlib.Path()
    stack, names = read_stack(base / b.stack, key=b.key or None)
    signature = run_signature(config, dataset, problem, fields, stack=stack)
    _start_folder(out, signature, resume=resume, force=force, progress=progress)
    opt = config.optimiser
    mesh = mj.batch_mesh(b.devices) if b.devices else None
    result = mj.fit_batch(
        problem, {field: stack}, fields, optimiser(opt), steps=opt.steps, chunk=opt.chunk,
        mesh=mesh, dtype=np.dtype(b.dtype), names=names, checkpoint=out / CHECKPOINT,
        resume=resume, progress=progress, tol=opt.tol,
    )
    with Staging(out) as stage:
        result.save(stage.path / "batch_result.mjx")
        status = [str(getattr(s, "value", s)) for s in np.atleast_1d(result.status)]
        metrics = {
            "kind": "batch",
            "problem": config.problem,
            "problem_file": config.problem_file,
            "batch": len(status),
            "names": list(result.names),
            "status": status,
            "reasons": list(result.reasons),
            "message": result.message,
            "steps": [int(s) for s in np.atleast_1d(result.steps)],
            "final_loss": [float(v) for v in np.atleast_1d(result.final_loss)],
            "wall_time": time.perf_counter() - start,
            "devices": b.devices or 1,
            "config": config.to_dict(),
        }
        _provenance(metrics, out, signature)
        metrics = stage.commit(metrics)
    if progress:
        print(result.summary())
    return metrics


def _fmt(value, spec: str = ".3e") -> str:
    """A number for the summary; `null` (a non-finite value, see "non_finite") as n/a."""
    return "n/a" if value is None else format(value, spec)


def summary(metrics: dict) -> str:
    """A few readable lines from a metrics dict (a single run or a batch)."""
    if metrics.get("kind") == "batch" or isinstance(metrics.get("status"), list):
        status = metrics["status"]
        done = sum(s == "completed" for s in status)
        lines = [f"problem {metrics['problem']}: batch of {len(status)} items, {done} completed"
                 f" in {_fmt(metrics.get('wall_time'), '.1f')} s"]
        names = metrics.get("names") or [str(i) for i in range(len(status))]
        reasons = metrics.get("reasons") or [""] * len(status)
        for name, s, step, loss, why in zip(names, status, metrics["steps"],
                                            metrics["final_loss"], reasons, strict=False):
            line = f"  item {name}: {s} after {step} steps, final loss {_fmt(loss)}"
            lines.append(line + (f" ({why})" if why else ""))
        return "\n".join(lines)
    stages = (metrics.get("auto") or {}).get("stages") or []
    if stages:  # the automatic estimator: a sequence of fits, each with its own steps
        ran = ", ".join(f"{st['stage']} {st['steps']} steps" for st in stages)
        lines = [f"problem {metrics['problem']}: {metrics['status']} in "
                 f"{_fmt(metrics.get('wall_time'), '.1f')} s ({ran})"]
    else:
        lines = [
            f"problem {metrics['problem']}: {metrics['status']} after {metrics['steps']} steps "
            f"in {_fmt(metrics.get('wall_time'), '.1f')} s",
        ]
        message = metrics.get("message") or ""
        if message and not message.startswith("completed"):
            # how it ended, where the status alone misleads: "completed" at the step cap
            # without meeting tol, converged, interrupted or diverged
            lines.append(f"  fit: {message}")
    for name, e in metrics.get("errors", {}).items():
        start = (metrics.get("initial_errors") or {}).get(name, {})
        if "rel_l2" in e:
            lines.append(
                f"  {name}: relative L2 error {_fmt(e['rel_l2'])} (initial guess "
                f"{_fmt(start.get('rel_l2'))}), correlation {_fmt(e.get('corr'), '.4f')}"
                + (f", on the domain ({e['nodes']} nodes)" if metrics.get("domain") else
                   f", on the interior ({e['nodes']} nodes; {e['margin']} dropped at each end)"
                   if any(e.get("margin") or ()) else "")
            )
            band = (metrics.get("errors_on_band") or {}).get(name, {})
            if "rel_l2" in band:
                lines.append(f"    on the residuals' band ({band['nodes']} nodes; the rest is "
                             f"set by the regularisers or the start alone): relative L2 error "
                             f"{_fmt(band['rel_l2'])}")
        else:
            lines.append(f"  {name}: {_fmt(e['value'], '.6g')} (truth {_fmt(e['truth'], '.6g')}"
                         f", relative error {_fmt(e['rel_error'])})")
    weights = metrics.get("term_weights") or {}
    shown = {k: v for k, v in metrics.get("final_losses", {}).items() if weights.get(k) != 0}
    hidden = len(metrics.get("final_losses", {})) - len(shown)
    losses = ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
    left_out = f"; {hidden} term(s) at weight 0 not shown" if hidden else ""
    lines.append("  final losses (terms unweighted; total = sum of weight x term, the weights "
                 f"in metrics.json's term_weights{left_out}): {losses}")
    auto = metrics.get("auto")
    if auto:
        lines.append(f"  estimator (auto): {auto['estimator']}: {auto['why']}")
        for stage in auto["stages"]:
            errs = ", ".join(f"{k} {_fmt(e['rel_l2'])}" if "rel_l2" in e
                             else f"{k} {_fmt(e['rel_error'])}"
                             for k, e in stage.get("errors", {}).items())
            lines.append(f"    {stage['stage']} ({stage['state']}): {stage['message']}"
                         + (f"; relative error {errs}" if errs else ""))
        if auto.get("criterion"):
            lines.append(f"    weight: {auto['criterion']}")
    bars = metrics.get("error_bars")
    if bars:  # (runs written before error bars were summarised have none)
        where = (f"{', '.join(bars['written'])} in fields.npz ({bars['method']}): "
                 if bars["written"] else "none: ")
        lines.append(f"  error bars: {where}{bars['note']}")
    # a constant start has no correlation with the truth: expected, recorded, not reported
    notes = {k: v for k, v in (metrics.get("non_finite") or {}).items()
             if not (k.startswith("initial_errors.") and k.endswith(".corr"))}
    if notes:
        lines.append("  not finite (null in metrics.json): "
                     + "; ".join(f"{k}: {v}" for k, v in notes.items()))
    return "\n".join(lines)


def inspect_folder(folder: str | os.PathLike) -> tuple[str, int]:
    """`(report, exit status)` of a run folder: 0 for a finished run whose files match
    `metrics.json`; 1 for a partial folder (no metrics yet, a checkpoint newer than the
    metrics, a file that changed since); a `MollijaxError` when there is no run or
    `metrics.json` is damaged."""
    from ._checkpoint import read_header

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder} does not exist or is not a folder.")
    leftovers = sorted(p.name for p in folder.parent.glob(f".{folder.name}{_STAGING}*"))
    leftovers += sorted(f"{folder.name}/{p.name}" for p in folder.glob(f"{_STAGING}*"))
    notes = []
    if leftovers:
        notes.append(f"unfinished output folders of an interrupted write (safe to delete): "
                     f"{leftovers}")
    metrics_path = folder / METRICS
    if not metrics_path.exists():
        if (folder / CHECKPOINT).exists():
            h = read_header(folder / CHECKPOINT)
            steps = h.get("done")
            text = (f"{folder}: partial run: no {METRICS} (the outputs were never written or "
                    f"their writing was interrupted); its checkpoint is at step {steps}, "
                    f"status {h.get('status')}. `mollijax run CONFIG --out {folder} --resume` "
                    "continues it and writes the outputs.")
        elif (folder / SIGNATURE).exists():
            text = (f"{folder}: a run started here but stopped before its first checkpoint; "
                    "nothing to show.")
        else:
            raise RunFolderError(f"{folder} holds no mollijax run (no {METRICS}).")
        return "\n".join([text, *notes]), 1
    metrics = read_metrics(metrics_path)
    if "status" not in metrics:
        return json.dumps(metrics, indent=2), 0  # another command's metrics (theory)
    try:
        text = summary(metrics)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptFileError(f"{metrics_path} lacks what a run records: {e!r}.") from None
    for name, digest in (metrics.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            notes.append(f"{name} is missing")
        elif _sha256_file(path) != digest:
            notes.append(f"{name} changed since the run wrote it (its SHA-256 differs)")
    record = metrics.get("checkpoint")
    if record and (folder / CHECKPOINT).exists() and \
            _sha256_file(folder / CHECKPOINT) != record.get("sha256"):
        try:
            h = read_header(folder / CHECKPOINT)
            where = f"step {h.get('done')}, status {h.get('status')}"
        except MollijaxError as e:
            where = f"unreadable: {e}"
        notes.append(f"the checkpoint is newer than {METRICS} ({where}; the metrics are of "
                     f"step {record.get('step')}): a later run stopped before writing its "
                     "outputs; --resume writes them")
    if notes:
        text += "\n" + "\n".join(f"  warning: {n}" for n in notes)
    return text, 1 if notes else 0


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
    if args.uncertainty is not None:
        config = config.replace(
            uncertainty=dataclasses.replace(config.uncertainty, method=args.uncertainty))
    out = pathlib.Path(args.out or config.output.dir or f"runs/{config.problem}")
    if not args.quiet:
        print(f"mollijax run: {config.problem} ({config.problem_file}) from {config.source} "
              f"-> {out}")
    metrics = run(config, out, resume=args.resume, force=args.force, progress=not args.quiet,
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
    text, code = inspect_folder(args.result)
    print(text)
    return code


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
    import jax

    jax.config.update("jax_enable_x64", True)  # the theory checks compare to 1e-6 and below
    from ._examples import load_file, shipped
    from .config import read_toml

    config: dict = read_toml(args.config) if args.config else {}
    out = pathlib.Path(args.out or f"runs/theory_{args.part}")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose a folder.")
    make_folder(out)
    module = load_file(shipped("theory", THEORY[args.part][0]))
    metrics = module.run(config, out)
    _, text = dump_metrics(dict(metrics, versions=versions()))
    _write_atomic(out / METRICS, text.encode())
    if not args.quiet:
        print(f"mollijax theory {args.part}: wrote {out / 'metrics.json'} and plots in {out}")
    return 0


def _startup() -> None:
    """Process-wide settings of the command line: the persistent compilation cache (on by
    default; `MOLLIJAX_COMPILATION_CACHE` sets the folder or turns it off, see `_cache`).
    Only for the command itself: `main(argv)` called from Python (tests) changes nothing."""
    from ._cache import enable_compilation_cache

    enable_compilation_cache()


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _startup()
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
    run_p.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (the configuration, "
                       "except the step count, and the data must be the same)")
    run_p.add_argument("--force", action="store_true",
                       help="replace the earlier run in --out (without it, a folder holding a "
                       "run is refused)")
    run_p.add_argument("--steps", type=int, help="override [optimiser] steps")
    run_p.add_argument("--uncertainty", choices=("auto", "laplace", "ensemble", "none"),
                       help="override [uncertainty] method (error bars; 'none' skips them)")
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
    show_p = sub.add_parser("show", help="print the metrics of a run folder (finished, "
                            "partial or batch) and check its files")
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
    try:
        with _sigterm_as_interrupt():
            code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
        return code
    except MollijaxError as e:  # bad input: a clear message, not a traceback
        print(f"mollijax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader closed the pipe (`mollijax show DIR | head`): what it wanted was read;
        # no traceback, and none at exit when Python flushes the closed stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as e:
        why = str(e) or ("interrupted; an output folder keeps its earlier complete files "
                         "(and a run its last checkpoint: --resume continues it; an automatic "
                         "run keeps none: run it again)")
        print(f"mollijax {args.command}: {why}", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises `KeyboardInterrupt`, as Ctrl-C does, so that a terminated command
    cleans up like an interrupted one (training installs its own handler meanwhile)."""
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handle(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
