"""Shared helpers for the benchmark scripts: machine description, compile/run timing, memory.

Every benchmark reports ratios against a baseline measured in the same run, because the
machines these scripts run on are shared and their absolute speed drifts. The helpers here
return plain dicts of floats so that results go straight into JSON.

- `machine_info()`: CPU model, core count, jax/jaxlib versions, backend, default float dtype.
- `compile_fn(fn, *args)`: `jax.jit(fn).lower(*args).compile()`, timed.
- `xla_memory(compiled)`: XLA's compile-time memory analysis (argument/output/temp bytes).
- `time_compiled(compiled, *args)`: median wall time of calls after one warm-up call.
- `RssPeak`: a context manager sampling the process resident set size in a thread.
- `format_table(rows, columns)`: a Markdown table, readable in a terminal too.
- `auto_eps(grid, order, data)`: the per-axis widths of `eps = "auto"` in a run configuration.
- `network_problem(module, dataset, derivatives)`: a problem file's residuals and conditions
  on a data set, for fields that the caller represents by networks.
- `first_error(values, dataset)`: the error of the first unknown with a truth (`mj.score`).
- `option(argv, name, default)`: the value after `name` in `argv`, of `default`'s type.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), or `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a benchmark ran on: enough to tell whether two runs are comparable."""
    import jaxlib

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line: `CPU model, N cores, jax X (backend)`."""
    return (
        f"{info['cpu']}, {info['cores']} cores, jax {info['jax']} / jaxlib {info['jaxlib']} "
        f"({info['backend']}), x64={'on' if info['x64'] else 'off'}"
    )


# ----------------------------------------------------------------------------- timing


def block(tree):
    """Wait for every array in `tree` (`jax.block_until_ready` on a pytree)."""
    return jax.block_until_ready(tree)


def compile_fn(fn: Callable, *args) -> tuple[Any, float, float]:
    """Jit, lower and compile `fn` for `args`.

    **Returns:** `(compiled, lower_seconds, compile_seconds)`; the compile time a user pays is
    the sum of the two (tracing happens in `lower`).
    """
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return compiled, t1 - t0, t2 - t1


def xla_memory(compiled) -> dict[str, int]:
    """XLA's memory analysis of a compiled function, in bytes.

    `peak` is `argument + output + temp - alias`: the buffers live at once during a call,
    as XLA planned them (an upper bound on the device memory the call needs, excluding the
    runtime's own overheads and constants folded into the executable).
    """
    stats = compiled.memory_analysis()
    if stats is None:  # some backends do not report
        return {"argument": -1, "output": -1, "temp": -1, "alias": -1, "peak": -1}
    arg = int(stats.argument_size_in_bytes)
    out = int(stats.output_size_in_bytes)
    temp = int(stats.temp_size_in_bytes)
    alias = int(stats.alias_size_in_bytes)
    return {"argument": arg, "output": out, "temp": temp, "alias": alias,
            "peak": arg + out + temp - alias}


def time_compiled(
    compiled,
    *args,
    min_reps: int = 5,
    max_reps: int = 100,
    min_seconds: float = 0.2,
    max_seconds: float = 10.0,
) -> dict[str, float]:
    """Median wall time of `compiled(*args)` after one warm-up call.

    Repeats until at least `min_reps` calls and `min_seconds` of measurement, but stops at
    `max_reps` calls or once `max_seconds` have been spent (so a slow call is timed fewer
    times rather than hanging the run).

    **Returns:** `{"median": s, "min": s, "reps": n, "first": s}` where `first` is the
    warm-up call (includes one-off runtime costs such as allocating buffers).
    """
    t0 = time.perf_counter()
    block(compiled(*args))
    first = time.perf_counter() - t0
    samples: list[float] = []
    spent = 0.0
    while len(samples) < max_reps:
        t0 = time.perf_counter()
        block(compiled(*args))
        dt = time.perf_counter() - t0
        samples.append(dt)
        spent += dt
        if len(samples) >= min_reps and spent >= min_seconds:
            break
        if spent + first >= max_seconds:
            break
    return {"median": statistics.median(samples), "min": min(samples),
            "reps": len(samples), "first": first}


# ----------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class RssPeak:
    """Sample the process RSS every `interval` seconds while the block runs.

    `peak_delta` is the highest RSS seen minus the RSS on entry: the extra host memory the
    block touched. It is only meaningful when that extra is large compared with the
    allocator's noise (tens of MB); XLA's `xla_memory` is the exact, planned figure.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> RssPeak:
        self.start = self.peak = _rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        return False

    @property
    def peak_delta(self) -> int:
        return max(self.peak - self.start, 0)


# ----------------------------------------------------------------------------- output


def fmt_ratio(x: float | None) -> str:
    """A ratio with 2-3 significant digits; `-` for a missing value."""
    if x is None or not np.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_seconds(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} us"


def fmt_bytes(b: float | None) -> str:
    if b is None or b < 0:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b:.0f} B"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `rows` (dicts) restricted to `columns`, padded for terminals."""
    cells = [[str(c) for c in columns]] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write `payload` as indented JSON (NumPy scalars converted), atomically."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    # written beside the target and renamed over it: a study that writes its partial
    # results after every run and is stopped mid-write keeps the previous complete file
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, default=default)
        f.write("\n")
    os.replace(tmp, path)


def finish_report(args, info: dict, rows: list, text: str, wall: float) -> None:
    """Print a finished table and write `--json` / `--markdown` outputs if requested."""
    print()
    print(text)
    print(f"\nTotal wall time {wall:.0f} s")
    if args.json:
        write_json(args.json, {"machine": info, "quick": args.quick, "wall_s": wall,
                               "rows": rows})
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


def make_train_step(static_unknowns, problem_static, optimiser):
    """One plain training step `(params, opt_state, problem_arrays) -> (params, opt_state,
    loss)` of a partitioned `Problem` and unknowns: what the benchmarks time and compile."""
    import equinox as eqx
    import jax
    import optax

    def step(params, opt_state, problem_arrays):
        prob = eqx.combine(problem_arrays, problem_static)

        def loss(p):
            return prob.total(prob.loss_terms(eqx.combine(p, static_unknowns)))

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


# ----------------------------------------------------------------------------- problems


def auto_eps(grid, order: int, data) -> tuple[float, ...]:
    """Per-axis kernel half-widths of `eps = "auto"` in a run configuration
    (`mj.suggest_widths`)."""
    import mollijax as mj

    return mj.suggest_widths(grid, order, data)


def network_problem(module, dataset, derivatives):
    """`mj.Problem` of a problem file's residuals on `dataset` (its data, masks and known
    fields), with the file's conditions, no regulariser, and `derivatives` (a
    differentiator or `"autodiff"`): the unknowns and observed fields are the caller's
    (networks, so that both derivative methods see the same fields)."""
    import mollijax as mj

    names = set(module.UNKNOWNS) | set(module.STATE)
    conditions = module.conditions(dataset) if hasattr(module, "conditions") else []
    return mj.Problem(dataset, module.residuals, derivatives=derivatives,
                      conditions=[c for c in conditions if c.field in names])


def first_error(values, dataset) -> dict[str, float]:
    """`mj.score` of the first unknown that has a truth, with its name under `"unknown"`."""
    import mollijax as mj

    errs = mj.score(values, dataset)
    name = next(iter(errs))
    return {"unknown": name, **errs[name]}


def option(argv: Sequence[str], name: str, default):
    """The value after `name` in `argv` (e.g. `--draws 20`), converted to `default`'s type;
    `default` when `name` is absent."""
    if name in argv:
        return type(default)(argv[list(argv).index(name) + 1])
    return default
