"""Seed statistics of the fitted diffusion tensors, for `docs/theory_transport.md`.

Run from the repository root:

    python -m theory._transport_study [number of seeds]

For each seed it repeats the settings of `tests/theory/test_transport.py` (2-D mixture,
100 000 particles, 64 x 64 grid, eps = 1.5, `scheme="difference"`; trained affine DAEs on a
2-D Gaussian, 40 000 particles, 15 layers of noise 0.01) and prints the mean, standard
deviation and worst absolute error over seeds of every entry of `D` against its expected
value.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import mollijax as mj

from .transport import (
    AffineDenoiser,
    GaussianMixture,
    brownian_flow,
    density_differentiator,
    exact_flow,
    fit_diffusion,
    snapshot_densities,
    trained_dae_stack,
)


def seed_study(seeds: int = 5) -> dict[str, np.ndarray]:
    """Fitted `D` (shape `(seeds, 2, 2)`) per experiment; see the module docstring."""
    jax.config.update("jax_enable_x64", True)
    mix = GaussianMixture([0.5, 0.5], [[-1.2, 0.0], [1.2, 0.3]], [[1.0, 0.8], [0.7, 1.0]])
    gauss = GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.3], [0.3, 0.8]]])
    grid = mj.Grid.from_bounds((64, 64), (-6.0, -6.0), (6.0, 6.0))
    diff = density_differentiator(grid, 1.5)
    times = np.linspace(0.0, 0.25, 6)
    depth = 0.15 * np.arange(16) / 15
    fit = lambda xs, t: fit_diffusion(snapshot_densities(xs, grid), t, diff).matrix
    out: dict[str, list] = {k: [] for k in ("exact_flow", "one_axis", "brownian", "dae",
                                            "dae_one_axis")}
    for s in range(seeds):
        x0 = mix.sample(jax.random.PRNGKey(1000 + s), 100_000)
        out["exact_flow"].append(fit(exact_flow(mix, x0, times), times))
        out["one_axis"].append(fit(exact_flow(mix, x0, times, noise=[1.0, 0.0]), times))
        out["brownian"].append(fit(brownian_flow(jax.random.PRNGKey(2000 + s), x0, times), times))
        g0 = gauss.sample(jax.random.PRNGKey(3000 + s), 40_000)
        for name, noise in (("dae", 1.0), ("dae_one_axis", [1.0, 0.0])):
            xs, _ = trained_dae_stack(AffineDenoiser(2), g0, jax.random.PRNGKey(4000 + s), 0.15,
                                      15, noise, steps=100, train_size=8000)
            out[name].append(fit(xs, depth))
    return {k: np.stack(v) for k, v in out.items()}


EXPECTED = {"exact_flow": -np.eye(2), "one_axis": np.diag([-1.0, 0.0]),
            "brownian": 0.5 * np.eye(2), "dae": -np.eye(2), "dae_one_axis": np.diag([-1.0, 0.0])}


def main(argv: list[str]) -> None:
    seeds = int(argv[0]) if argv else 5
    results = seed_study(seeds)
    print(f"{seeds} seeds; entries (xx, xy, yy): mean +- std, worst |error|")
    for name, d in results.items():
        cells = []
        for a, b in ((0, 0), (0, 1), (1, 1)):
            v = d[:, a, b]
            cells.append(f"{v.mean():+.3f} +- {v.std(ddof=1) if seeds > 1 else 0:.3f}")
        worst = float(np.max(np.abs(d - EXPECTED[name])))
        print(f"{name:13s} expected {np.diag(EXPECTED[name]).tolist()}: "
              f"{' | '.join(cells)} | worst {worst:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
