"""Biharmonic on the FFT path of `Mollifier` vs a minimal hand-written spectral biharmonic.

    python benchmarks/fft_biharmonic.py [--n 256] [--repeats 41] [--quick]

The baseline is the least an FFT biharmonic can do: one forward real FFT, one product with a
precomputed symbol `(kx^2 + ky^2)^2`, one inverse (and, for the odd boundary, the same padding
to a fast length and cropping the library does). The library's path is timed as
`Mollifier.biharmonic` (one inverse transform for the whole combination) and, for reference,
as the sum of its three single derivatives (one inverse each, as before). Forward calls and
the gradient of the sum of squares (as in a loss), float64 and float32, median of `--repeats`
calls after a warm-up, all interleaved in the same run. Target: library / minimal <= 1.3.
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mollijax as mj  # noqa: E402

# float32 fourth derivatives warn of round-off; this script times them, it does not use them
warnings.filterwarnings("ignore", category=mj.PrecisionWarning)


def _interleaved_median_ms(fns, x, repeats):
    """Median time of each function, called in turn `repeats` times (after a warm-up), so
    that a busy spell of the machine hits all of them alike."""
    for f in fns.values():
        jax.block_until_ready(f(x))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f(x))
            times[name].append(time.perf_counter() - t)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def _fast_length(n):
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def minimal_biharmonic(shape, lengths, pad, dtype):
    """`u -> F^-1[|k|^4 F u]` on a grid padded by `pad` nodes per side (odd reflection) to a
    fast FFT length, or unpadded (`pad = 0`, periodic)."""
    sizes = [n if pad == 0 else _fast_length(n + 2 * pad) for n in shape]
    spacing = [length / n for length, n in zip(lengths, shape, strict=True)]
    kx = 2 * np.pi * np.fft.fftfreq(sizes[0], spacing[0])
    ky = 2 * np.pi * np.fft.rfftfreq(sizes[1], spacing[1])
    symbol = jnp.asarray((kx[:, None] ** 2 + ky[None, :] ** 2) ** 2,
                         jnp.complex128 if dtype == jnp.float64 else jnp.complex64)

    def apply(u):
        if pad:
            width = [(pad, s - n - pad) for s, n in zip(sizes, shape, strict=True)]
            u = jnp.pad(u, width, mode="reflect", reflect_type="odd")
        v = jnp.fft.irfftn(jnp.fft.rfftn(u) * symbol, s=sizes).astype(u.dtype)
        return v[pad : pad + shape[0], pad : pad + shape[1]] if pad else v

    return apply


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--cells", type=float, default=6.0, help="kernel half-width in steps")
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--quick", action="store_true", help="n = 64, 5 repeats")
    args = parser.parse_args(argv)
    n, repeats = (64, 5) if args.quick else (args.n, args.repeats)
    print(f"biharmonic on {n}^2, kernel half-width {args.cells:g} steps, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}, median of {repeats}")
    print(f"{'dtype':8} {'boundary':9} {'call':5} {'minimal':>9} {'biharmonic':>11} "
          f"{'3 singles':>10} {'ratio':>6} {'singles ratio':>14}")
    worst = 0.0
    for dtype in (jnp.float64, jnp.float32):
        for boundary in ("periodic", "odd"):
            grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0),
                                       periodic=boundary == "periodic")
            h = grid.spacing[0]
            d = mj.Mollifier(grid, args.cells * h, boundary=boundary, method="fft")
            pad = 0 if boundary == "periodic" else d.halo[0]
            lengths = [s * m for s, m in zip(grid.spacing, grid.shape, strict=True)]
            minimal = minimal_biharmonic(grid.shape, lengths, pad, dtype)
            singles_terms = ((1.0, "xxxx"), (2.0, "xxyy"), (1.0, "yyyy"))

            def singles(u, d=d, terms=singles_terms):
                values = d.derivatives(u, [a for _, a in terms])
                return sum(c * v for (c, _), v in zip(terms, values, strict=True))

            u = jnp.asarray(np.random.default_rng(0).standard_normal(grid.shape), dtype)
            fns = {"minimal": minimal, "biharmonic": d.biharmonic, "singles": singles}
            for call in ("fwd", "grad"):
                compiled = {
                    name: (jax.jit(f) if call == "fwd"
                           else jax.jit(jax.value_and_grad(lambda v, f=f: jnp.sum(f(v) ** 2))))
                    for name, f in fns.items()
                }
                times = _interleaved_median_ms(compiled, u, repeats)
                ratio = times["biharmonic"] / times["minimal"]
                worst = max(worst, ratio)
                print(f"{jnp.dtype(dtype).name:8} {boundary:9} {call:5} {times['minimal']:7.2f}ms "
                      f"{times['biharmonic']:9.2f}ms {times['singles']:8.2f}ms {ratio:5.2f}x "
                      f"{times['singles'] / times['minimal']:13.2f}x")
    print(f"worst biharmonic / minimal: {worst:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
