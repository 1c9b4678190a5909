"""Command-line interface: `mollijax demo` (and, as the package grows, `run`, `list`, `show`)."""

from __future__ import annotations

import argparse
import sys


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mollijax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="mollified vs finite-difference derivatives of a noisy field")
    demo.add_argument("--n", type=int, default=128, help="grid points per axis")
    demo.add_argument("--noise", type=float, default=0.05, help="relative noise level")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
