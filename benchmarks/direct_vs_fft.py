"""Direct (shifted slices) vs FFT path of `Mollifier`, forward and inside `value_and_grad`.

    python benchmarks/direct_vs_fft.py [--n 256] [--widths 3 6 10 16 24]

For each dtype and kernel half-width (in grid steps) it times the Laplacian of a random
n x n field (forward) and the gradient of the sum of its squares (reverse mode), median of 7
calls after a warm-up, both paths interleaved in the same run, and prints the ratio
direct / FFT. This is the measurement behind `method="auto"` being the FFT path.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mollijax as mj  # noqa: E402


def _median_ms(f, x, repeats=7):
    jax.block_until_ready(f(x))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--widths", type=int, nargs="+", default=[3, 6, 10, 16, 24])
    args = parser.parse_args(argv)
    grid = mj.Grid.from_bounds((args.n, args.n), (0.0, 0.0), (1.0, 1.0))
    print(f"Laplacian on {args.n}^2, jax {jax.__version__}, {jax.devices()[0].platform}")
    print(f"{'dtype':8} {'M':>3} {'direct fwd':>11} {'fft fwd':>9} {'direct grad':>12} "
          f"{'fft grad':>9} {'grad ratio':>11}")
    for dtype in (jnp.float64, jnp.float32):
        u = jnp.asarray(np.random.default_rng(0).standard_normal(grid.shape), dtype)
        for m in args.widths:
            row = {}
            for method in ("direct", "fft"):
                d = mj.Mollifier(grid, m * grid.spacing[0], method=method)
                fwd = jax.jit(d.laplacian)
                grad = jax.jit(jax.grad(lambda v, d=d: (d.laplacian(v) ** 2).sum()))
                row[method] = (_median_ms(fwd, u), _median_ms(grad, u))
            ratio = row["direct"][1] / row["fft"][1]
            print(f"{jnp.dtype(dtype).name:8} {m:3d} {row['direct'][0]:9.2f}ms "
                  f"{row['fft'][0]:7.2f}ms {row['direct'][1]:10.2f}ms {row['fft'][1]:7.2f}ms "
                  f"{ratio:10.1f}x")


if __name__ == "__main__":
    main()
