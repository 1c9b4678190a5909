"""How long `mollijax run` takes from process start to the start of training, with and without
the persistent compilation cache.

    python benchmarks/cli_startup.py [--config configs/heat1d_evolve_small.toml] [--steps 50]

Runs the command line as a user would (`python -m mollijax run CONFIG --out DIR --force
--no-plots`) in a fresh process, each time with a fresh, empty cache folder for the first run
(`MOLLIJAX_COMPILATION_CACHE`), then again with that folder filled, then with the cache
turned off. "Training starts" is the moment the progress bar first appears on stderr (the
driver draws it right before the first compiled chunk is called; with a warm cache that
call loads rather than compiles). Also timed: the bare `import ml_dtypes`, `import jax` and
`import mollijax` in a fresh process (the floor). Target: the second run starts training within 2 s.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _until_training(cmd, env) -> tuple[float, float]:
    """`(seconds to the first progress bar, seconds to exit)` of `cmd`."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    seen, buffer = None, b""
    while True:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        if seen is None and b"fit:" in buffer:
            seen = time.perf_counter() - start
    proc.wait()
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{buffer.decode(errors='replace')[-2000:]}")
    return (seen if seen is not None else float("nan")), total


def _import_time(module: str, env) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/heat1d_evolve_small.toml")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="warm-cache runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MOLLIJAX_COMPILATION_CACHE=str(pathlib.Path(tmp) / "cache"))
        cmd = [sys.executable, "-m", "mollijax", "run", args.config, "--out",
               str(pathlib.Path(tmp) / "out"), "--force", "--no-plots", "--steps",
               str(args.steps)]
        print(f"{args.config}, {args.steps} steps; seconds from process start")
        print(f"{'run':34} {'training starts':>16} {'process ends':>13}")
        import ml_dtypes  # jax's dtypes: its 0.7.0 release imports 100x slower than 0.6.0

        label = f"import ml_dtypes {ml_dtypes.__version__}"
        print(f"{label:34} {_import_time('ml_dtypes', env):15.2f}s")
        print(f"{'import jax (floor)':34} {_import_time('jax', env):15.2f}s")
        print(f"{'import mollijax':34} {_import_time('mollijax', env):15.2f}s")
        rows = [("first run, empty cache", *_until_training(cmd, env))]
        for i in range(args.repeats):
            rows.append((f"second run, warm cache ({i + 1})", *_until_training(cmd, env)))
        off = dict(env, MOLLIJAX_COMPILATION_CACHE="off")
        rows.append(("cache off", *_until_training(cmd, off)))
        for name, seen, total in rows:
            print(f"{name:34} {seen:15.2f}s {total:12.2f}s")
        best = min(seen for name, seen, _ in rows if name.startswith("second"))
        print(f"second run starts training after {best:.2f} s (target <= 2 s)")


if __name__ == "__main__":
    main()
