"""A run's output folder: refusing an earlier run, the run's signature for `--resume`, the
output set staged beside the folder and moved into place (`metrics.json` last), strict JSON
metrics with versions, hashes and file checksums, and the report of `mollijax show`.

Layout of a folder (see `mollijax.cli`): `run.json` (the signature), `checkpoint.mjx` and
`checkpoint.mjx.history` while training, then `result.mjx` or `batch_result.mjx`,
`fields.npz`, PNG plots and `metrics.json`, which lists the SHA-256 of every other file of
the output set and of itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pathlib
import shutil
import signal
import tempfile
from collections.abc import Mapping

from ._checkpoint import CheckpointMismatchError, CorruptFileError, read_header
from ._errors import MollijaxError

# ----------------------------------------------------------------------------- run folders

METRICS = "metrics.json"
SIGNATURE = "run.json"
CHECKPOINT = "checkpoint.mjx"
# the files a run writes with fixed names (plots are listed in metrics.json's "files")
RUN_FILES = (METRICS, "result.mjx", "batch_result.mjx", "fields.npz", CHECKPOINT,
             CHECKPOINT + ".history", SIGNATURE)
_STAGING = ".partial-"  # temporary folders beside the target: .<name>.partial-XXXX


class RunFolderError(MollijaxError):
    """The output folder cannot take this run: it holds an earlier run (and neither
    `--resume` nor `--force` was given), it is a file, or it cannot be written."""


def _sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_arrays(*groups: Mapping) -> str:
    """SHA-256 over named arrays (names, dtypes, shapes and bytes), in sorted-name order."""
    import numpy as np

    h = hashlib.sha256()
    for group in groups:
        for name in sorted(group):
            a = np.ascontiguousarray(np.asarray(group[name]))
            h.update(json.dumps([name, a.dtype.name, list(a.shape)]).encode())
            h.update(a.tobytes())
        h.update(b"|")
    return h.hexdigest()


# why a value is not a number, by the key it sits under (the rest: generic)
_NULL_REASONS = {
    "corr": "correlation undefined: the recovered or the true field is constant on the interior",
    "rel_l2": "relative error not finite: the recovered field holds NaN or inf",
    "max_abs": "error not finite: the recovered field holds NaN or inf",
    "final_loss": "the loss was not finite (the fit diverged or the item was skipped)",
}


def strict_json(value, where: str = "", notes: dict | None = None):
    """`value` as strict JSON data: NumPy scalars and arrays become numbers and lists, tuples
    lists, other objects strings; NaN and inf become None, with `notes[path] = reason`."""
    import numpy as np

    notes = {} if notes is None else notes
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        key = where.rsplit(".", 1)[-1]
        why = _NULL_REASONS.get(key) or (
            "the loss was not finite (the fit diverged)" if ".final_losses." in f".{where}"
            else "not a finite number")
        notes[where] = f"{'NaN' if math.isnan(value) else value} -> null: {why}"
        return None
    if isinstance(value, Mapping):
        return {str(k): strict_json(v, f"{where}.{k}" if where else str(k), notes)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v, f"{where}[{i}]", notes) for i, v in enumerate(value)]
    return str(value)


def _canonical(data) -> bytes:
    return json.dumps(data, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()


def dump_metrics(metrics: dict, notes: dict | None = None) -> tuple[dict, str]:
    """`(data, text)`: `metrics` as strict JSON with its non-finite values recorded under
    `"non_finite"` (after `notes`, those of metrics read back, whose values are already
    null) and a SHA-256 of the rest under `"sha256"`."""
    notes = dict(notes or {})
    data = strict_json({k: v for k, v in metrics.items() if k not in ("non_finite", "sha256")},
                       "", notes)
    data["non_finite"] = notes
    data["sha256"] = hashlib.sha256(_canonical(data)).hexdigest()
    return data, json.dumps(data, indent=2, allow_nan=False)


def read_metrics(path: str | os.PathLike) -> dict:
    """A run's `metrics.json`, parsed strictly and checked against its own SHA-256; a
    `CorruptFileError` naming the file otherwise."""
    path = pathlib.Path(path)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    try:
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptFileError(f"{path} is not valid JSON (truncated or corrupted): {e}.") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} is not a metrics file: it holds a {type(data).__name__}.")
    recorded = data.get("sha256")
    if recorded is not None:
        rest = {k: v for k, v in data.items() if k != "sha256"}
        if hashlib.sha256(_canonical(rest)).hexdigest() != recorded:
            raise CorruptFileError(
                f"{path} was modified or corrupted after the run: its content does not match "
                "the SHA-256 it records."
            )
    return data


def versions() -> dict:
    """Versions of mollijax, jax, jaxlib, numpy and Python (what made a run's numbers)."""
    import importlib.metadata
    import platform

    import jax
    import numpy as np

    from . import __version__

    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib = None
    return {"mollijax": __version__, "jax": jax.__version__, "jaxlib": jaxlib,
            "numpy": np.__version__, "python": platform.python_version()}


def _flatten(value, prefix: str, out: dict) -> dict:
    if isinstance(value, Mapping) and value:
        for k in sorted(value):
            _flatten(value[k], f"{prefix}.{k}", out)
    else:
        out[prefix] = strict_json(value)
    return out


def run_signature(config, dataset, problem, unknowns, stack=None) -> dict:
    """What defines a run apart from its step count, for `--resume` to check: the problem
    file's content, every configuration value (`config.<table>.<key>`; not `[optimiser]
    steps`, `[output] dir` or the file's own path), the data's SHA-256, the grid, the
    unknowns (kind and parameter shapes) and the optimiser."""
    import jax
    import numpy as np

    cfg = config.to_dict()
    for key in ("source", "problem_file"):
        cfg.pop(key, None)
    cfg["optimiser"].pop("steps", None)
    cfg["output"].pop("dir", None)
    grid = dataset.grid
    shapes = {
        name: [type(u).__name__,
               [list(np.shape(x)) for x in jax.tree_util.tree_leaves(u) if hasattr(x, "shape")]]
        for name, u in sorted(unknowns.items())
    }
    groups = [dataset.data, dataset.masks, dataset.known]
    if stack is not None:
        groups.append({"stack": stack})
    sig = {
        "problem_file": _sha256_file(pathlib.Path(config.problem_file)),
        "data": hash_arrays(*groups),
        "grid": strict_json({"shape": grid.shape, "spacing": grid.spacing,
                             "origin": getattr(grid, "origin", None), "axes": grid.axes}),
        "unknowns": shapes,
        "optimiser": f"{config.optimiser.name} (learning rate {config.optimiser.learning_rate:g}"
                     f", chunk {config.optimiser.chunk}, tol {config.optimiser.tol})",
    }
    return _flatten(cfg, "config", sig)


def _differences(earlier: dict, now: dict) -> list[str]:
    out = []
    for key in sorted(set(earlier) | set(now)):
        a, b = earlier.get(key, "<absent>"), now.get(key, "<absent>")
        if a == b:
            continue
        if key == "data":
            out.append("data: the data differ (their SHA-256 changed)")
        elif key == "problem_file":
            out.append("problem_file: the problem file's content changed")
        else:
            out.append(f"{key}: earlier {a!r}, now {b!r}")
    return out


def write_signature(out: pathlib.Path, signature: dict) -> None:
    data = {"kind": "mollijax-run", "signature": signature,
            "sha256": hashlib.sha256(_canonical(signature)).hexdigest()}
    _write_atomic(out / SIGNATURE, json.dumps(data, indent=1, allow_nan=False).encode())


def read_signature(out: pathlib.Path) -> dict:
    """The signature in `out/run.json`, verified; `CorruptFileError` if damaged."""
    path = out / SIGNATURE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        signature = data["signature"]
        ok = (data.get("kind") == "mollijax-run" and isinstance(signature, dict)
              and hashlib.sha256(_canonical(signature)).hexdigest() == data.get("sha256"))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise CorruptFileError(
            f"{path} is corrupted or was edited: the run's signature cannot be verified, so "
            "its checkpoint cannot be resumed; use --force to start the run again."
        )
    return signature


def check_resume(out: pathlib.Path, signature: dict) -> bool:
    """True when `out` holds a run to continue (its signature equal to `signature`); False
    when there is nothing to resume. A different run is a `CheckpointMismatchError` naming
    what differs."""
    has_checkpoint = (out / CHECKPOINT).exists()
    if not (out / SIGNATURE).exists():
        if has_checkpoint:
            raise CorruptFileError(
                f"{out / SIGNATURE} is missing: the checkpoint in {out} cannot be matched to "
                "this run; use --force to start the run again."
            )
        return False
    diffs = _differences(read_signature(out), signature)
    if diffs:
        raise CheckpointMismatchError(
            f"{out} holds a different run, refusing to resume it: " + "; ".join(diffs)
            + ". Run with the earlier settings, or --force to replace it."
        )
    return has_checkpoint


def _describe_earlier(out: pathlib.Path) -> str:
    try:
        m = read_metrics(out / METRICS)
        status, steps = m.get("status"), m.get("steps")
        if isinstance(status, list):
            return f"a batch of {len(status)} items"
        return f"{status} after {steps} steps"
    except (OSError, MollijaxError):
        pass
    try:
        h = read_header(out / CHECKPOINT)
        return f"checkpoint at step {h.get('done')}, {h.get('status')}"
    except (OSError, MollijaxError):
        return "unfinished"


def earlier_run(out: pathlib.Path) -> list[str]:
    """The files of an earlier run in `out` (a lone `run.json`, a run that never reached its
    first checkpoint, does not count)."""
    if not out.is_dir():
        return []
    found = [f for f in RUN_FILES if (out / f).exists()]
    return [] if found in ([], [SIGNATURE]) else found


def check_folder(out: pathlib.Path, resume: bool, force: bool, resumable: bool = True) -> None:
    """Refuse an output folder that cannot take this run (before anything is computed);
    `resumable`: whether this kind of run can continue an earlier one (`--resume`)."""
    if resume and force:
        raise RunFolderError("--resume continues the run in the folder and --force replaces "
                             "it: give one of them.")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose a folder.")
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunFolderError(f"--out {out}: {ancestor} is a file, so the folder cannot be made.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunFolderError(f"--out {out}: cannot write to {ancestor} (permission denied).")
    found = earlier_run(out)
    if found and not (resume or force):
        raise RunFolderError(
            f"{out} holds an earlier run ({_describe_earlier(out)}; files {found}). Pass "
            + ("--resume to continue it, --force to replace it" if resumable else
               "--force to replace it (an automatic run, [state] representation = \"auto\", "
               "keeps no checkpoint and cannot be resumed)")
            + ", or choose another --out."
        )


def make_folder(out: pathlib.Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"--out {out} cannot be made: {e.strerror or e}.") from None


def clear_earlier(out: pathlib.Path) -> list[str]:
    """Remove the files of the run in `out` (for --force): the fixed names and the files its
    metrics list; nothing else in the folder is touched."""
    names = set(RUN_FILES)
    try:
        names |= set(read_metrics(out / METRICS).get("files", {}))
    except (OSError, MollijaxError):
        names.add("losses.png")
    removed = []
    for name in sorted(names):
        path = out / name
        if path.is_file() and path.parent == out:
            path.unlink()
            removed.append(name)
    return removed


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _deferred_signals():
    """Ctrl-C and SIGTERM wait until the block ends (then raise `KeyboardInterrupt`)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda n, f: caught.append(n))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


class Staging:
    """The output set, written into a temporary folder beside `out` and moved into place by
    `commit` (the earlier `metrics.json` first out, the new one last in)."""

    def __init__(self, out: pathlib.Path):
        self.out = out
        self.path: pathlib.Path | None = None

    def __enter__(self) -> Staging:
        # made here, with Ctrl-C and SIGTERM held until its path is recorded: a signal
        # between making the folder and entering the block would otherwise leave it behind
        try:
            with _deferred_signals():
                try:
                    made = tempfile.mkdtemp(prefix=f".{self.out.name}{_STAGING}",
                                            dir=self.out.parent)
                except OSError:  # the parent cannot be written: stage inside the folder
                    made = tempfile.mkdtemp(prefix=_STAGING, dir=self.out)
                self.path = pathlib.Path(made)
        except BaseException:
            if self.path is not None:
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc) -> bool:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        return False

    def commit(self, metrics: dict) -> dict:
        """Checksum the staged files into `metrics`, write it, and move everything into
        place; returns the metrics as written."""
        files = sorted(p.name for p in self.path.iterdir() if p.is_file())
        metrics["files"] = {name: _sha256_file(self.path / name) for name in files}
        data, text = dump_metrics(metrics)
        (self.path / METRICS).write_text(text)
        try:
            stale = set(read_metrics(self.out / METRICS).get("files", {}))
        except (OSError, MollijaxError):
            stale = set()
        with _deferred_signals():
            with contextlib.suppress(FileNotFoundError):
                (self.out / METRICS).unlink()  # from here the folder says "unfinished"
            for name in sorted(stale - set(files)):
                with contextlib.suppress(FileNotFoundError):
                    (self.out / name).unlink()
            for name in files:
                os.replace(self.path / name, self.out / name)
            os.replace(self.path / METRICS, self.out / METRICS)
            with contextlib.suppress(OSError):
                fd = os.open(self.out, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return data

    def add_to_run(self, metrics: dict, extra: dict) -> dict:
        """Move the files staged here into the finished run in `out` and record them in its
        `metrics.json` (checksums under `"files"`, names under `"plots"`, and `extra`):
        for what a run writes after its result (the figures). `metrics` is what `commit`
        returned for that run (no second read of the file); it is rewritten atomically, so
        an interruption leaves either the earlier, valid metrics or the new ones."""
        metrics = dict(metrics)
        names = sorted(p.name for p in self.path.iterdir() if p.is_file())
        files = dict(metrics.get("files", {}))
        files.update({name: _sha256_file(self.path / name) for name in names})
        metrics.update(extra, files=files, plots=names)
        data, text = dump_metrics(metrics, metrics.get("non_finite"))
        with _deferred_signals():
            for name in names:
                os.replace(self.path / name, self.out / name)
            _write_atomic(self.out / METRICS, text.encode())
        return data


def _checkpoint_record(out: pathlib.Path) -> dict | None:
    path = out / CHECKPOINT
    if not path.exists():
        return None
    header = read_header(path)
    return {"file": CHECKPOINT, "sha256": _sha256_file(path), "step": header.get("done"),
            "status": header.get("status")}
