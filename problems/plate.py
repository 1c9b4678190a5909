"""Fourth order, steady: a simply supported plate of varying stiffness,
Laplacian(D(x, y) Laplacian w) = q(x, y) on [0, 1]^2, w = 0 and Laplacian w = 0 on the walls.

Recover the flexural stiffness `D(x, y)` from noisy samples of the deflection `w` on an
`n x n` grid, the load `q` known. Truth variants (`stiffness`):

- `"cosine"`: D = 1 + 0.3 cos(pi x) cos(pi y), in [0.7, 1.3];
- `"bump"`: D = 1 + 0.5 exp(-|(x, y) - (0.6, 0.4)|^2 / (2 * 0.15^2));
- `"constant"`: D = 1 (for tests).

The load (`load = "bumps"`) is positive in the open square, zero on the walls and
off-centre,

    q = 4 pi^4 sin(pi x) sin(pi y) (1 + 1.5 exp(-|(x, y) - (0.3, 0.65)|^2 / 0.08));

`load = "sine"` is `4 pi^4 sin(pi x) sin(pi y)` (with D = 1: w = sin(pi x) sin(pi y)). A
callable `q(x, y)` may be given for either variant parameter.

**Identifiability.** With the bending moment `M = D Laplacian w` the problem splits into two
Dirichlet problems, `Laplacian M = q` with `M = 0` on the walls, then
`Laplacian w = M / D` with `w = 0` on the walls. `M` depends on `q` alone, and `q > 0`
gives `M < 0` in the open square (maximum principle), so `D = M / Laplacian w` is
identifiable at every interior point. On the walls `M = 0` and `Laplacian w = 0`: `D` there
is unidentifiable (0 / 0) and rests on regularity.

**Simulator.** The same split on a grid `refine` times finer than the output grid: the
5-point Laplacian with Dirichlet walls (one sparse LU factorisation, `scipy.sparse.linalg.
splu`, used for both solves), sampled at the output nodes. Second order
(`tests/problems/test_plate.py` measures it).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

import mollijax as mj

from ._common import observe, pick_variant, require, resolve_params

DESCRIPTION = "Lap(D(x,y) Lap w) = q, simply supported plate: recover the stiffness D(x,y) from w"
ORDER = 4
DEFAULTS: dict[str, object] = {
    "n": 49,  # output nodes per axis (both walls included)
    "stiffness": "cosine",  # "cosine", "bump" or "constant"
    "load": "bumps",  # "bumps" or "sine"
    "refine": 4,  # the simulator's grid is `refine` times finer
}
UNKNOWNS = {"D": {"axes": ("x", "y"), "constraint": "positive", "init": 1.0}}
STATE = ("w",)


def _cosine(x, y):
    return 1.0 + 0.3 * np.cos(np.pi * x) * np.cos(np.pi * y)


def _bump(x, y):
    return 1.0 + 0.5 * np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / (2 * 0.15**2))


def _constant(x, y):
    return np.ones(np.broadcast(x, y).shape)


def _bumps(x, y):
    s = np.sin(np.pi * x) * np.sin(np.pi * y)
    return 4 * np.pi**4 * s * (1.0 + 1.5 * np.exp(-((x - 0.3) ** 2 + (y - 0.65) ** 2) / 0.08))


def _sine(x, y):
    return 4 * np.pi**4 * np.sin(np.pi * x) * np.sin(np.pi * y)


STIFFNESSES = {"cosine": _cosine, "bump": _bump, "constant": _constant}
LOADS = {"bumps": _bumps, "sine": _sine}


def solve_fd(stiffness, load, intervals: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`Laplacian M = q`, `Laplacian w = M / D`, both zero on the walls, on `intervals`^2 cells.

    The 5-point Laplacian on the interior nodes of the uniform grid `x_i = i / intervals`.

    **Returns:** the node coordinates `x` (`(intervals + 1,)`, the same along `y`), `w` and
    `M`, each of shape `(intervals + 1, intervals + 1)`, indexed `[i, j]` = `(x_i, y_j)`.
    """
    m = intervals
    h = 1.0 / m
    x = np.linspace(0.0, 1.0, m + 1)
    X, Y = np.meshgrid(x[1:-1], x[1:-1], indexing="ij")
    p = m - 1
    second = sp.diags([np.ones(p - 1), -2 * np.ones(p), np.ones(p - 1)], [-1, 0, 1]) / h**2
    eye = sp.identity(p)
    lu = splu((sp.kron(second, eye) + sp.kron(eye, second)).tocsc())
    moment = lu.solve(np.asarray(load(X, Y), dtype=np.float64).ravel())
    w_in = lu.solve(moment / np.asarray(stiffness(X, Y), dtype=np.float64).ravel())
    w, M = np.zeros((m + 1, m + 1)), np.zeros((m + 1, m + 1))
    w[1:-1, 1:-1] = w_in.reshape(p, p)
    M[1:-1, 1:-1] = moment.reshape(p, p)
    return x, w, M


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Solve for `w` on the fine grid and sample it at `n x n` nodes; `params` override
    `DEFAULTS`.

    **Returns:** a `mj.Dataset` with `data["w"]`, `clean["w"]`, `known["q"]` and
    `truth["D"]`, all of shape `(n, n)` (axes `("x", "y")`).
    """
    p = resolve_params("plate", DEFAULTS, params)
    require(
        p["n"] >= 5 and p["refine"] >= 1,
        "plate",
        f"`n` >= 5 and `refine` >= 1, got n={p['n']}, refine={p['refine']}",
    )
    stiffness = pick_variant("plate", "stiffness", p["stiffness"], STIFFNESSES)
    load = pick_variant("plate", "load", p["load"], LOADS)
    n, refine = int(p["n"]), int(p["refine"])
    _, w_fine, _ = solve_fd(stiffness, load, (n - 1) * refine)
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
    x, y = grid.mesh()
    clean = {"w": w_fine[::refine, ::refine]}
    return mj.Dataset(
        grid,
        observe(clean, noise, seed),
        clean=clean,
        truth={"D": np.asarray(stiffness(x, y), dtype=np.float64)},
        known={"q": np.asarray(load(x, y), dtype=np.float64)},
        params=p,
    )


def conditions(dataset: mj.Dataset) -> list[mj.Condition]:
    """w = 0 on the four walls (`Laplacian w = 0` there comes with `mj.Steady`'s odd padding)."""
    walls = {"x=0": {"x": 0}, "x=1": {"x": -1}, "y=0": {"y": 0}, "y=1": {"y": -1}}
    return [mj.Condition("w", where, 0.0, f"w({name})") for name, where in walls.items()]


def residual(s):
    """Laplacian(D Laplacian w) - q."""
    return s.lap(s.D * s.lap(s.w)) - s.q


residuals = {"pde": residual}
