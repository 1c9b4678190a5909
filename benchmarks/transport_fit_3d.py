"""Drift and diffusion fitted in 3-D against an exact answer (theory/transport.py,
docs/theory_transport.md).

Usage (from the repository root):

    python benchmarks/transport_fit_3d.py [--grids 24 32 40 48] [--particles 100000 1000000]

A four-component Gaussian mixture in 3-D (components at alternate corners of a cube, so the
density is non-Gaussian along every axis and an affine drift and a constant diffusion are
separately identifiable) is carried by the Ornstein-Uhlenbeck flow
`dx = (G x + c) dt + (2 D)^{1/2} dW` with a rotating, contracting `G` and an anisotropic `D`.
Its law stays a mixture whose components are known in closed form at every time
(`GaussianMixture.ornstein_uhlenbeck`), so `(G, c, D)` is the exact answer of
`fit_fokker_planck` on snapshots at `t = 0, h, 2h` (`h = 0.05`) on the box `[-6, 6]^3`:

1. exact densities at the nodes of `n^3` grids (no sampling): the error of the fit against
   the grid, and its observed order in the spacing (the differentiator's derivatives are
   central differences of the mollified density: order 2 expected);
2. particles moved by the exact transition (`ou_transition`) and binned by cloud-in-cell on
   the 32^3 grid (`snapshot_densities`): the error at each particle count, against the
   exact-density fit of the same grid (the sampling-free floor).

Mollifier: `density_differentiator(grid, eps=1.5)` (bump kernel, zero boundary), fixed
before the first run. Errors are max-abs over the entries of `G`, `c` and `D`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mollijax as mj  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from theory import transport as tr  # noqa: E402

MIX = dict(weights=[0.3, 0.25, 0.25, 0.2],
           means=[[-1.4, -1.4, -1.4], [1.4, 1.4, -1.4], [1.4, -1.4, 1.4], [-1.4, 1.4, 1.4]],
           covs=[0.6, 0.8, 0.7, 0.5])
G = np.array([[-0.5, 0.8, 0.0], [-0.6, -0.2, 0.3], [0.1, -0.3, -0.4]])
C = np.array([0.3, -0.2, 0.1])
D = np.array([[0.3, 0.05, 0.0], [0.05, 0.2, 0.04], [0.0, 0.04, 0.25]])
STEP, EPS, BOX = 0.05, 1.5, 6.0


def _grid(n: int) -> mj.Grid:
    return mj.Grid.from_bounds((n,) * 3, (-BOX,) * 3, (BOX,) * 3)


def _errors(rho, grid) -> tuple[float, float, float, float, float]:
    start = time.perf_counter()
    fit = tr.fit_fokker_planck(rho, STEP * np.arange(len(rho)),
                               tr.density_differentiator(grid, EPS))
    return (float(np.abs(fit.drift_matrix - G).max()), float(np.abs(fit.drift_constant - C).max()),
            float(np.abs(fit.diffusion - D).max()), fit.relative_residual,
            time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[24, 32, 40, 48])
    parser.add_argument("--particles", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--particle-grid", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mix = tr.GaussianMixture(**MIX)
    print(f"3-D Ornstein-Uhlenbeck transport of a 4-component mixture, h = {STEP}, eps = {EPS}, "
          f"box [-{BOX}, {BOX}]^3; jax {jax.__version__}, {jax.devices()[0].platform}")
    print("\n1. exact densities: fit error against the grid")
    print(f"{'n^3':>6} {'spacing':>8} {'G err':>8} {'c err':>8} {'D err':>8} {'resid':>7} "
          f"{'order G':>8} {'s':>6}")
    previous = None
    for n in args.grids:
        grid = _grid(n)
        rho = np.stack([np.asarray(mix.ornstein_uhlenbeck(G, C, D, k * STEP).density_on(grid))
                        for k in range(3)])
        eg, ec, ed, res, sec = _errors(rho, grid)
        order = "" if previous is None else (
            f"{np.log(previous[1] / eg) / np.log(previous[0] / grid.spacing[0]):8.2f}")
        print(f"{n:6d} {grid.spacing[0]:8.4f} {eg:8.4f} {ec:8.4f} {ed:8.4f} {res:7.4f} "
              f"{order:>8} {sec:6.1f}")
        previous = (grid.spacing[0], eg)

    n = args.particle_grid
    grid = _grid(n)
    exact = np.stack([np.asarray(mix.ornstein_uhlenbeck(G, C, D, k * STEP).density_on(grid))
                      for k in range(3)])
    floor = _errors(exact, grid)
    e_tg, shift, q = tr.ou_transition(G, C, D, STEP, 3)
    root = np.linalg.cholesky(q)
    print(f"\n2. particles (exact transitions), cloud-in-cell on {n}^3; exact-density floor "
          f"G {floor[0]:.4f}, c {floor[1]:.4f}, D {floor[2]:.4f}")
    print(f"{'particles':>10} {'G err':>8} {'c err':>8} {'D err':>8} {'resid':>7} {'s':>6}")
    key = jax.random.PRNGKey(args.seed)
    for count in args.particles:
        key, k_sample, k_noise = jax.random.split(key, 3)
        x = [np.asarray(mix.sample(k_sample, count))]
        for k in jax.random.split(k_noise, 2):
            xi = np.asarray(jax.random.normal(k, (count, 3), dtype=x[0].dtype))
            x.append(x[-1] @ e_tg.T + shift + xi @ root.T)
        rho = np.asarray(tr.snapshot_densities(np.stack(x), grid))
        eg, ec, ed, res, sec = _errors(rho, grid)
        print(f"{count:10d} {eg:8.4f} {ec:8.4f} {ed:8.4f} {res:7.4f} {sec:6.1f}")


if __name__ == "__main__":
    main()
