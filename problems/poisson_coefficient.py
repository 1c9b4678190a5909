"""Second order, steady: 0 = lambda(x, y) Laplacian(u) + m(x, y) on [0, 1]^2.

Recover the coefficient `lambda(x, y)` from noisy samples of `u` with the source `m` known.
The state is analytic,

    u = sin(pi x) sin(pi y) - (x^2 + y^2),   Laplacian(u) = -2 pi^2 sin(pi x) sin(pi y) - 4,

so `Laplacian(u) <= -4` everywhere (lambda is identifiable at every node), and the source is
set to `m = -lambda Laplacian(u)` exactly, so the truth is exact. Truth variants
(`coefficient`):

- `"bump"`: lambda = 1 + 0.5 exp(-|x - (0.5, 0.5)|^2 / (2 * 0.15^2));
- `"sine"`: lambda = 1 + 0.3 sin(2 pi x) sin(2 pi y).
"""

from __future__ import annotations

import numpy as np

import mollijax as mj

from ._common import observe, pick_variant, require, resolve_params

DESCRIPTION = "0 = lambda(x,y) Lap(u) + m(x,y), m known: recover lambda(x,y) from u"
ORDER = 2
DEFAULTS = {"nx": 41, "ny": 41, "coefficient": "bump"}
UNKNOWNS = {"lam": {"axes": ("x", "y"), "constraint": "positive", "init": 1.0}}
STATE = ("u",)


def state(x, y):
    """The analytic state `u` and its Laplacian."""
    s = np.sin(np.pi * x) * np.sin(np.pi * y)
    return s - (x**2 + y**2), -2 * np.pi**2 * s - 4.0


def _bump(x, y):
    return 1.0 + 0.5 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / (2 * 0.15**2))


def _sine(x, y):
    return 1.0 + 0.3 * np.sin(2 * np.pi * x) * np.sin(2 * np.pi * y)


_VARIANTS = {"bump": _bump, "sine": _sine}


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Sample `u` on an `nx x ny` grid; `params` override `DEFAULTS`.

    **Returns:** a `mj.Dataset` with `data["u"]`, `clean["u"]`, `known["m"]` and
    `truth["lam"]`, all of shape `(nx, ny)`.
    """
    p = resolve_params("poisson_coefficient", DEFAULTS, params)
    require(
        p["nx"] >= 5 and p["ny"] >= 5,
        "poisson_coefficient",
        f"`nx` >= 5 and `ny` >= 5, got nx={p['nx']}, ny={p['ny']}",
    )
    coefficient = pick_variant("poisson_coefficient", "coefficient", p["coefficient"], _VARIANTS)
    grid = mj.Grid.from_bounds(
        (int(p["nx"]), int(p["ny"])), (0.0, 0.0), (1.0, 1.0), axes=("x", "y")
    )
    x, y = grid.mesh()
    u, lap = state(x, y)
    lam = coefficient(x, y)
    clean = {"u": u}
    return mj.Dataset(
        grid,
        observe(clean, noise, seed),
        clean=clean,
        truth={"lam": lam},
        known={"m": -lam * lap},
        params=p,
    )


def residual(s):
    """lambda Laplacian(u) + m."""
    return s.lam * s.lap(s.u) + s.m


residuals = {"pde": residual}
