"""Cost of a derivative, by method, relative to one forward pass of a network over the grid.

Usage (from the repository root, with the package installed):

    python benchmarks/derivatives.py [--quick] [--json out.json] [--markdown out.md]

Part 1 (methods). For derivative orders 1, 2, 4 (`d^k/dx^k` along the first axis) on 1-D
grids of 1e3, 1e4, 1e5 nodes and 2-D grids of 64^2, 128^2, 256^2 nodes, and for the methods

    mollifier-direct, mollifier-fft, finite-difference, spectral   (grid based)
    autodiff (nested jax.grad), taylor (jax.experimental.jet)       (of the network itself)

it measures, for the function "network on every node, then the derivative":

- run time: median of repeated calls after a warm-up, `block_until_ready`;
- compile time: `jax.jit(f).lower(...)` plus `.compile()`;
- memory: XLA's compiled memory analysis, argument + output + temp bytes; and the growth of
  the process RSS during the timed calls (in the JSON only; it is noise below ~10 MB).

Every number is reported as a ratio to the same measurement for ONE forward pass of the same
network on the same grid (an `equinox.nn.MLP`, width 64, depth 3, tanh, `(ndim,) -> scalar`,
`jax.vmap`-ed over the nodes), measured in the same run. For the grid-based methods the
derivative-only cost (field values given) is reported as well. Combinations whose predicted
run time exceeds `--budget` seconds or whose XLA memory exceeds `--max-gb` are skipped and
printed as such.

The mollifier uses the `Bump` kernel at a fixed half-width of 8 grid steps, boundary "odd"
(finite differences: second-order central stencils, boundary "odd"; spectral: periodic).
All computations are in float64 (`jax_enable_x64`), which mollijax recommends for orders
above 2; PrecisionWarnings are silenced here because only cost is measured.

Part 2 (crossover). On a 256^2 grid, the Laplacian (two outputs, `xx` and `yy`) by the direct
and FFT paths for kernel half-widths 2..64 steps, forward and `value_and_grad` of its sum of
squares, in float64 and float32: where does FFT become cheaper? `Mollifier(method="auto")`
now always picks FFT (this crossover is what decided it). A third column times a prototype
direct path ("shifted": fused shifted slices with an explicit transpose, `laplacian_shifted`,
padded by NumPy's modes as `Mollifier` pads) against the same FFT, to show how much of the
crossover is owed to `lax.conv_general_dilated`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mollijax as mj  # noqa: E402

ORDERS = (1, 2, 4)
GRIDS = ((1_000,), (10_000,), (100_000,), (64, 64), (128, 128), (256, 256))
QUICK_GRIDS = ((1_000,), (10_000,), (64, 64), (128, 128))
GRID_METHODS = ("mollifier-direct", "mollifier-fft", "finite-difference", "spectral")
POINT_METHODS = ("autodiff", "taylor")
METHODS = GRID_METHODS + POINT_METHODS
HALF_WIDTH = 8  # mollifier half-width in grid steps for part 1
WIDTH, DEPTH = 64, 3
CROSSOVER_WIDTHS = (2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32, 48, 64)
QUICK_CROSSOVER_WIDTHS = (4, 8, 12, 16, 24)


# ----------------------------------------------------------------------------- problem


def make_grid(shape: tuple[int, ...]) -> mj.Grid:
    """A periodic grid on the unit box (periodic so that `Spectral` applies)."""
    return mj.Grid.from_bounds(shape, 0.0, 1.0, periodic=True)


def make_network(ndim: int, seed: int = 0):
    """`(params, static)` of an MLP `(ndim,) -> scalar`, width 64, depth 3, tanh, float64."""
    net = eqx.nn.MLP(ndim, "scalar", WIDTH, DEPTH, activation=jnp.tanh,
                     key=jax.random.PRNGKey(seed), dtype=jnp.float64)
    return eqx.partition(net, eqx.is_array)


def make_differentiator(method: str, grid: mj.Grid, half_width: int = HALF_WIDTH):
    eps = tuple(half_width * h for h in grid.spacing)
    if method == "mollifier-direct":
        return mj.Mollifier(grid, eps, kernel=mj.Bump(), boundary="odd", method="direct")
    if method == "mollifier-fft":
        return mj.Mollifier(grid, eps, kernel=mj.Bump(), boundary="odd", method="fft")
    if method == "finite-difference":
        return mj.FiniteDifference(grid, boundary="odd", accuracy=2)
    if method == "spectral":
        return mj.Spectral(grid)
    if method == "autodiff":
        return mj.Autodiff(grid)
    if method == "taylor":
        return mj.Taylor(grid)
    raise ValueError(f"unknown method {method!r}")


def measure(fn, *args) -> tuple[dict, object]:
    """Compile `fn(*args)`: compile time and XLA memory, and the compiled executable."""
    compiled, t_lower, t_compile = C.compile_fn(fn, *args)
    mem = C.xla_memory(compiled)
    out = {"lower_s": t_lower, "compile_s": t_lower + t_compile, "xla": mem}
    return out, compiled


def run_timed(compiled, *args, budget: float, quick: bool) -> dict:
    with C.RssPeak() as rss:
        timing = C.time_compiled(
            compiled, *args,
            min_reps=3 if quick else 5,
            min_seconds=0.05 if quick else 0.3,
            max_seconds=min(budget, 3.0 if quick else 10.0),
        )
    timing["rss_delta"] = rss.peak_delta
    return timing


# ----------------------------------------------------------------------------- part 1


def bench_methods(grids, budget: float, max_bytes: float, quick: bool, log=print) -> list[dict]:
    """Part 1: one record per (grid, method, order), ratios to a forward pass."""
    records = []
    per_node: dict[tuple, float] = {}  # (ndim, method, order) -> seconds per node, last grid
    for shape in grids:
        grid = make_grid(shape)
        params, static = make_network(grid.ndim)

        def forward(p, grid=grid, static=static):
            return mj.evaluate(eqx.combine(p, static), grid)

        base, base_c = measure(forward, params)
        base["time"] = run_timed(base_c, params, budget=budget, quick=quick)
        values = base_c(params)
        log(f"\n== grid {shape} ({grid.size} nodes): forward pass "
            f"{C.fmt_seconds(base['time']['median'])}, compile {C.fmt_seconds(base['compile_s'])}, "
            f"XLA memory {C.fmt_bytes(base['xla']['peak'])}")
        block_records = []
        for order in ORDERS:
            alpha = grid.axes[0] * order
            for method in METHODS:
                rec = {"shape": list(shape), "nodes": grid.size, "ndim": grid.ndim,
                       "order": order, "alpha": alpha, "method": method}
                key = (grid.ndim, method, order)
                if key in per_node and per_node[key] * grid.size > budget:
                    rec["skipped"] = (f"too slow: predicted {per_node[key] * grid.size:.0f} s "
                                      f"> {budget:.0f} s")
                    log(f"  {method:18s} order {order}: skipped: {rec['skipped']}")
                    records.append(rec)
                    block_records.append(rec)
                    continue
                D = make_differentiator(method, grid)

                def full(p, D=D, alpha=alpha, static=static):
                    return D(eqx.combine(p, static), alpha)

                res, comp = measure(full, params)
                rec.update(res)
                if res["xla"]["peak"] > max_bytes:
                    rec["skipped"] = (f"too much memory: XLA plans "
                                      f"{C.fmt_bytes(res['xla']['peak'])}")
                    log(f"  {method:18s} order {order}: skipped: {rec['skipped']}")
                else:
                    rec["time"] = run_timed(comp, params, budget=budget, quick=quick)
                    per_node[key] = rec["time"]["median"] / grid.size
                    if method in GRID_METHODS:

                        def only(u, D=D, alpha=alpha):
                            return D(u, alpha)

                        dres, dcomp = measure(only, values)
                        dres["time"] = run_timed(dcomp, values, budget=budget, quick=quick)
                        rec["derivative_only"] = dres
                    log(f"  {method:18s} order {order}: {C.fmt_seconds(rec['time']['median'])}"
                        f" ({rec['time']['reps']} reps), compile {C.fmt_seconds(rec['compile_s'])},"
                        f" XLA {C.fmt_bytes(res['xla']['peak'])}")
                del comp
                records.append(rec)
                block_records.append(rec)
        # baseline again after the block: the smaller median is the least disturbed
        again = run_timed(base_c, params, budget=budget, quick=quick)
        base["time_after"] = again
        t_base = min(base["time"]["median"], again["median"])
        for rec in block_records:
            rec["baseline"] = {"time_s": t_base, "compile_s": base["compile_s"],
                               "xla_peak": base["xla"]["peak"],
                               "time_before_s": base["time"]["median"],
                               "time_after_s": again["median"]}
            if "time" in rec:
                rec["ratio_time"] = rec["time"]["median"] / t_base
                rec["ratio_compile"] = rec["compile_s"] / base["compile_s"]
                rec["ratio_memory"] = rec["xla"]["peak"] / base["xla"]["peak"]
            if "derivative_only" in rec:
                d = rec["derivative_only"]
                rec["ratio_time_derivative_only"] = d["time"]["median"] / t_base
                rec["ratio_memory_derivative_only"] = d["xla"]["peak"] / base["xla"]["peak"]
    return records


def methods_table(records: list[dict], ndim: int, quantity: str) -> str:
    """Rows: (grid, order); columns: methods; cells: the ratio `quantity`."""
    rows = []
    shapes = []
    for r in records:
        if r["ndim"] == ndim and tuple(r["shape"]) not in shapes:
            shapes.append(tuple(r["shape"]))
    for shape in shapes:
        for order in ORDERS:
            row = {"grid": "x".join(map(str, shape)), "order": order}
            for r in records:
                if tuple(r["shape"]) == shape and r["order"] == order:
                    row[r["method"]] = "skipped" if "skipped" in r else C.fmt_ratio(r.get(quantity))
            rows.append(row)
    return C.format_table(rows, ["grid", "order", *METHODS])


def baseline_table(records: list[dict]) -> str:
    rows, seen = [], set()
    for r in records:
        shape = tuple(r["shape"])
        if shape in seen or "baseline" not in r:
            continue
        seen.add(shape)
        b = r["baseline"]
        rows.append({"grid": "x".join(map(str, shape)), "nodes": r["nodes"],
                     "forward (used)": C.fmt_seconds(b["time_s"]),
                     "before": C.fmt_seconds(b["time_before_s"]),
                     "after": C.fmt_seconds(b["time_after_s"]),
                     "compile": C.fmt_seconds(b["compile_s"]),
                     "XLA memory": C.fmt_bytes(b["xla_peak"])})
    return C.format_table(rows, ["grid", "nodes", "forward (used)", "before", "after",
                                 "compile", "XLA memory"])


# ----------------------------------------------------------------------------- part 2


def _shifted_sum(u, taps: np.ndarray, axis: int):
    """`out_i = sum_j taps[j] u_{i+j}` ('valid') as a sum of shifted slices (XLA fuses it)."""
    n, size = u.shape[axis], taps.size
    out = None
    for j, c in enumerate(taps):
        if c == 0.0:
            continue
        term = jnp.asarray(c, u.dtype) * jax.lax.slice_in_dim(u, j, n - size + 1 + j, axis=axis)
        out = term if out is None else out + term
    return out


def _correlate_shifted(u, taps: np.ndarray, axis: int):
    """A prototype of the direct path without `lax.conv_general_dilated`.

    Forward: `_shifted_sum`. Reverse mode: the transpose of a 'valid' correlation is the
    'full' correlation with the reversed taps, `g -> shifted_sum(pad(g, L - 1), taps[::-1])`,
    given explicitly (JAX's own transpose of `2M + 1` slices is `2M + 1` padded copies,
    which XLA does not fuse well). `custom_vjp` costs forward-mode differentiation.
    """
    size = taps.size
    flipped = np.ascontiguousarray(taps[::-1])

    @jax.custom_vjp
    def corr(v):
        return _shifted_sum(v, taps, axis)

    def corr_fwd(v):
        return corr(v), None

    def corr_bwd(_, g):
        width = [(0, 0)] * g.ndim
        width[axis] = (size - 1, size - 1)
        return (_shifted_sum(jnp.pad(g, width), flipped, axis),)

    corr.defvjp(corr_fwd, corr_bwd)
    return corr(u)


_PAD_MODES = {"periodic": {"mode": "wrap"}, "even": {"mode": "reflect"},
              "odd": {"mode": "reflect", "reflect_type": "odd"}, "zero": {"mode": "constant"}}


def pad_axis(u, axis: int, width: int, boundary: str):
    """`u` extended by `width` nodes at both ends of `axis` as `Mollifier` pads for
    `boundary` (`periodic`: wrap; `even`: reflect about the end node; `odd`: `2 u_0 - u_j`;
    `zero`)."""
    if boundary not in _PAD_MODES:
        raise ValueError(f"laplacian_shifted pads {sorted(_PAD_MODES)}, not {boundary!r}")
    pad = [(0, 0)] * u.ndim
    pad[axis] = (width, width)
    return jnp.pad(u, pad, **_PAD_MODES[boundary])


def laplacian_shifted(u, D: mj.Mollifier):
    """The Laplacian of `D` (padded boundaries) through `_correlate_shifted`."""
    d = u.ndim
    padded = u
    for a in range(d):
        padded = pad_axis(padded, a, D.halo[a], D.boundary[a])
    total = None
    for b in range(d):
        v = padded
        for a in range(d):
            v = _correlate_shifted(v, D.taps(a, 2 if a == b else 0), a)
        total = v if total is None else total + v
    return total


def bench_crossover(widths, dtypes, shape=(256, 256), quick=False, log=print) -> list[dict]:
    """Part 2: direct vs FFT Laplacian as a function of the half-width (grid steps).

    Also times `laplacian_shifted` ("shifted"), a prototype direct path made of fused
    shifted slices instead of XLA's convolution, with the same taps and padding.
    """
    grid = make_grid(shape)
    rng = np.random.default_rng(0)
    records = []
    for dtype in dtypes:
        u = jnp.asarray(rng.standard_normal(shape), dtype=dtype)
        log(f"\n== crossover on {shape}, {np.dtype(dtype).name}")
        D = mj.Mollifier(grid, tuple(8 * h for h in grid.spacing), boundary="odd")
        ref, proto = D.laplacian(u), laplacian_shifted(u, D)
        gap = float(jnp.max(jnp.abs(ref - proto)) / jnp.max(jnp.abs(ref)))
        if gap > 100 * float(jnp.finfo(dtype).eps):
            raise AssertionError(f"shifted-slice prototype disagrees with Mollifier: {gap:.2e}")
        for m in widths:
            rec = {"shape": list(shape), "dtype": np.dtype(dtype).name, "half_width": m}
            for path in ("direct", "fft", "shifted"):
                eps = tuple(m * h for h in grid.spacing)
                D = mj.Mollifier(grid, eps, boundary="odd",
                                 method="direct" if path == "shifted" else path)
                lap = (lambda v, D=D: laplacian_shifted(v, D)) if path == "shifted" else D.laplacian

                def fwd(v, lap=lap):
                    return lap(v)

                def loss(v, lap=lap):
                    return jnp.sum(lap(v) ** 2)

                vag = jax.value_and_grad(loss)
                for kind, fn in (("forward", fwd), ("value_and_grad", vag)):
                    comp, _, _ = C.compile_fn(fn, u)
                    t = C.time_compiled(comp, u, min_reps=3 if quick else 7,
                                        min_seconds=0.05 if quick else 0.25)
                    rec[f"{kind}_{path}_s"] = t["median"]
            for kind in ("forward", "value_and_grad"):
                rec[f"{kind}_direct_over_fft"] = rec[f"{kind}_direct_s"] / rec[f"{kind}_fft_s"]
                rec[f"{kind}_shifted_over_fft"] = rec[f"{kind}_shifted_s"] / rec[f"{kind}_fft_s"]
            log(f"  M={m:3d}: forward direct/fft {rec['forward_direct_over_fft']:.2f} "
                f"(shifted/fft {rec['forward_shifted_over_fft']:.2f}), value_and_grad "
                f"direct/fft {rec['value_and_grad_direct_over_fft']:.2f} "
                f"(shifted/fft {rec['value_and_grad_shifted_over_fft']:.2f})")
            records.append(rec)
    return records


def crossover_point(records: list[dict], dtype: str, kind: str, path: str = "direct"):
    """Smallest half-width from which FFT is faster than `path` at every larger width."""
    rows = [r for r in records if r["dtype"] == dtype]
    rows.sort(key=lambda r: r["half_width"])
    best = None
    for r in reversed(rows):
        if r[f"{kind}_{path}_over_fft"] > 1.0:
            best = r["half_width"]
        else:
            break
    return best


def crossover_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        rows.append({
            "dtype": r["dtype"], "M": r["half_width"],
            "fwd direct": C.fmt_seconds(r["forward_direct_s"]),
            "fwd fft": C.fmt_seconds(r["forward_fft_s"]),
            "fwd direct/fft": C.fmt_ratio(r["forward_direct_over_fft"]),
            "fwd shifted/fft": C.fmt_ratio(r["forward_shifted_over_fft"]),
            "v&g direct": C.fmt_seconds(r["value_and_grad_direct_s"]),
            "v&g fft": C.fmt_seconds(r["value_and_grad_fft_s"]),
            "v&g direct/fft": C.fmt_ratio(r["value_and_grad_direct_over_fft"]),
            "v&g shifted/fft": C.fmt_ratio(r["value_and_grad_shifted_over_fft"]),
        })
    return C.format_table(rows, ["dtype", "M", "fwd direct", "fwd fft", "fwd direct/fft",
                                 "fwd shifted/fft", "v&g direct", "v&g fft", "v&g direct/fft",
                                 "v&g shifted/fft"])


# ----------------------------------------------------------------------------- main


def report(payload: dict) -> str:
    """The Markdown report: machine, baselines, ratio tables, crossover."""
    recs = payload["methods"]
    out = [f"Machine: {C.describe_machine(payload['machine'])}", "",
           "Forward pass of the network (the baseline; `before`/`after` the grid's block):", "",
           baseline_table(recs)]
    titles = {
        "ratio_time": "Run time, network + derivative, / forward pass",
        "ratio_time_derivative_only": "Run time, derivative only (values given), / forward pass",
        "ratio_compile": "Compile time (lower + compile), / forward pass",
        "ratio_memory": "XLA memory (argument + output + temp), / forward pass",
    }
    for quantity, title in titles.items():
        for ndim in (1, 2):
            if any(r["ndim"] == ndim for r in recs):
                out += ["", f"{title}, {ndim}-D:", "", methods_table(recs, ndim, quantity)]
    skipped = [r for r in recs if "skipped" in r]
    if skipped:
        out += ["", "Skipped:", ""]
        out += [f"- {r['method']}, order {r['order']}, grid {r['shape']}: {r['skipped']}"
                for r in skipped]
    if payload.get("crossover"):
        cross = payload["crossover"]
        out += ["", "Direct vs FFT, Laplacian on 256x256 (M = half-width in grid steps):", "",
                crossover_table(cross), ""]
        for dtype in sorted({r["dtype"] for r in cross}):
            for kind in ("forward", "value_and_grad"):
                out.append(f"- {dtype} {kind}: FFT faster than direct from M = "
                           f"{crossover_point(cross, dtype, kind)}, than the shifted-slice "
                           f"prototype from M = {crossover_point(cross, dtype, kind, 'shifted')}")
        out.append("- `method=\"auto\"` uses the FFT path at every width")
    return "\n".join(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grids, fewer repetitions")
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="skip a combination predicted to run longer than this (s)")
    parser.add_argument("--max-gb", type=float, default=2.0,
                        help="skip a combination whose XLA memory exceeds this (GB)")
    parser.add_argument("--no-crossover", action="store_true", help="skip part 2")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", mj.PrecisionWarning)

    t0 = time.perf_counter()
    info = C.machine_info()
    print(f"Machine: {C.describe_machine(info)}")
    grids = QUICK_GRIDS if args.quick else GRIDS
    methods = bench_methods(grids, args.budget, args.max_gb * 1e9, args.quick)
    crossover = []
    if not args.no_crossover:
        widths = QUICK_CROSSOVER_WIDTHS if args.quick else CROSSOVER_WIDTHS
        crossover = bench_crossover(widths, (jnp.float64, jnp.float32), quick=args.quick)
    payload = {
        "command": "python benchmarks/derivatives.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv),
        "machine": info, "quick": args.quick, "half_width": HALF_WIDTH,
        "network": {"width": WIDTH, "depth": DEPTH, "activation": "tanh", "dtype": "float64"},
        "methods": methods, "crossover": crossover,
        "wall_s": time.perf_counter() - t0,
    }
    text = report(payload)
    print("\n" + text)
    print(f"\nTotal wall time {payload['wall_s']:.0f} s")
    if args.json:
        C.write_json(args.json, payload)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return payload


if __name__ == "__main__":
    main()
