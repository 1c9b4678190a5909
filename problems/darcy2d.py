"""Second order, steady, divergence form: -div(k(x, y) grad u) = f(x, y) on [0, 1]^2, u = 0 on
the boundary.

Recover the conductivity `k(x, y)` from noisy samples of `u` on an `n x n` grid, the source
`f` known. Truth variants (`coefficient`):

- `"smooth"`: k = 1 + 0.5 sin(2 pi x) sin(pi y), in [0.5, 1.5];
- `"inclusion"`: k = 3 in the disk |(x, y) - (0.35, 0.6)| < 0.2, 1 outside (piecewise
  constant; `u` has a kink across the circle);
- `"constant"`: k = 1 (for tests).

The source (`source = "bumps"`) is a sum of two smooth loads on sin(pi x) sin(pi y),

    f = 2 pi^2 sin(pi x) sin(pi y) (1 + 1.5 exp(-|(x, y) - (0.7, 0.3)|^2 / 0.08)),

positive in the open square and zero on the walls (so `u` has no corner singularity), and
off-centre so that `u`'s maximum lies away from the inclusion. `source = "sine"` is
`2 pi^2 sin(pi x) sin(pi y)` (with k = 1: u = sin(pi x) sin(pi y)); a callable
`f(x, y)` may be given for either variant parameter.

**Identifiability.** `k` solves the transport equation `grad u . grad k + k Lap u = -f`
along the gradient lines of `u`. With `f > 0` every interior critical point of `u` (its
maximum) has `Lap u = -f / k < 0`, so `|grad u| + |Lap u| > 0` in the open square and `k`
is identifiable there; at a critical point `k = -f / Lap u` is carried by second
derivatives only, the most noise-sensitive place. At the four corners `grad u = 0` *and*
`Lap u = 0` (u vanishes on both walls), so `k` is unidentifiable there; near the corners it
rests on regularity (a smoothness penalty).

**Simulator.** A conservative vertex-centred finite-volume scheme (5-point flux form) on a
grid `refine` times finer than the output grid: the flux between neighbouring nodes uses
the harmonic mean of `k` along the edge joining them (`1 / mean(1 / k)` at `QUADRATURE`
midpoints, exact for layered media and exact at the circle's crossing up to the
quadrature), the source is sampled at the node; one sparse direct solve
(`scipy.sparse.linalg.spsolve`), sampled at the output nodes. Second order for smooth `k`
(`tests/problems/test_darcy2d.py` measures it); about first order across the inclusion's
interface.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

import mollijax as mj

from ._common import observe, pick_variant, require, resolve_params

DESCRIPTION = "-div(k(x,y) grad u) = f, u = 0 on the walls: recover k(x,y) from u"
ORDER = 2
DEFAULTS: dict[str, object] = {
    "n": 65,  # output nodes per axis (both walls included)
    "coefficient": "smooth",  # "smooth", "inclusion" or "constant"
    "source": "bumps",  # "bumps" or "sine"
    "refine": 4,  # the simulator's grid is `refine` times finer
}
UNKNOWNS = {"k": {"axes": ("x", "y"), "constraint": "positive", "init": 1.0}}
STATE = ("u",)
QUADRATURE = 4  # midpoints per edge for the harmonic mean of k


def _smooth(x, y):
    return 1.0 + 0.5 * np.sin(2 * np.pi * x) * np.sin(np.pi * y)


def _inclusion(x, y):
    return np.where((x - 0.35) ** 2 + (y - 0.6) ** 2 < 0.2**2, 3.0, 1.0)


def _constant(x, y):
    return np.ones(np.broadcast(x, y).shape)


def _bumps(x, y):
    s = np.sin(np.pi * x) * np.sin(np.pi * y)
    return 2 * np.pi**2 * s * (1.0 + 1.5 * np.exp(-((x - 0.7) ** 2 + (y - 0.3) ** 2) / 0.08))


def _sine(x, y):
    return 2 * np.pi**2 * np.sin(np.pi * x) * np.sin(np.pi * y)


COEFFICIENTS = {"smooth": _smooth, "inclusion": _inclusion, "constant": _constant}
SOURCES = {"bumps": _bumps, "sine": _sine}


def _edge_harmonic(k: Callable, x0, y0, dx: float, dy: float) -> np.ndarray:
    """`1 / mean(1 / k)` over the edges from `(x0, y0)` to `(x0 + dx, y0 + dy)`."""
    t = (np.arange(QUADRATURE) + 0.5) / QUADRATURE
    inv = sum(1.0 / k(x0 + ti * dx, y0 + ti * dy) for ti in t) / QUADRATURE
    return 1.0 / inv


def solve_fv(k: Callable, f: Callable, intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """`-div(k grad u) = f`, `u = 0` on the walls, by finite volumes on `intervals`^2 cells.

    Node `(i, j)` at `(i h, j h)`, `h = 1 / intervals`; at each interior node the balance
    `sum_nb k_e (u_P - u_nb) = h^2 f_P` over its four neighbours, `k_e` the harmonic mean
    of `k` along the edge to the neighbour.

    **Returns:** the node coordinates `x` (`(intervals + 1,)`, the same along `y`) and `u`
    of shape `(intervals + 1, intervals + 1)`, indexed `[i, j]` = `(x_i, y_j)`.
    """
    m = intervals
    h = 1.0 / m
    x = np.linspace(0.0, 1.0, m + 1)
    X, Y = np.meshgrid(x, x, indexing="ij")
    kx = _edge_harmonic(k, X[:-1, :], Y[:-1, :], h, 0.0)  # (m, m+1): edge (i, j)-(i+1, j)
    ky = _edge_harmonic(k, X[:, :-1], Y[:, :-1], 0.0, h)  # (m+1, m): edge (i, j)-(i, j+1)
    west, east = kx[:-1, 1:-1], kx[1:, 1:-1]  # (m-1, m-1) on the interior nodes
    south, north = ky[1:-1, :-1], ky[1:-1, 1:]
    p = m - 1
    diag = (west + east + south + north).ravel()
    # row-major interior index i * p + j: a step in j is +-1, in i is +-p
    to_north = -north.ravel()[:-1].copy()
    to_north[p - 1 :: p] = 0.0  # no coupling from the last j of a row to the next row
    to_south = -south.ravel()[1:].copy()
    to_south[p - 1 :: p] = 0.0
    to_east = -east.ravel()[:-p]
    to_west = -west.ravel()[p:]
    a = sp.diags([diag, to_north, to_south, to_east, to_west], [0, 1, -1, p, -p], format="csc")
    u = np.zeros((m + 1, m + 1))
    u[1:-1, 1:-1] = spsolve(a, h**2 * f(X[1:-1, 1:-1], Y[1:-1, 1:-1]).ravel()).reshape(p, p)
    return x, u


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Solve for `u` on the fine grid and sample it at `n x n` nodes; `params` override
    `DEFAULTS`.

    **Returns:** a `mj.Dataset` with `data["u"]`, `clean["u"]`, `known["f"]` and
    `truth["k"]`, all of shape `(n, n)` (axes `("x", "y")`).
    """
    p = resolve_params("darcy2d", DEFAULTS, params)
    require(
        p["n"] >= 5 and p["refine"] >= 1,
        "darcy2d",
        f"`n` >= 5 and `refine` >= 1, got n={p['n']}, refine={p['refine']}",
    )
    k = pick_variant("darcy2d", "coefficient", p["coefficient"], COEFFICIENTS)
    f = pick_variant("darcy2d", "source", p["source"], SOURCES)
    n, refine = int(p["n"]), int(p["refine"])
    _, u_fine = solve_fv(k, f, (n - 1) * refine)
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
    x, y = grid.mesh()
    clean = {"u": u_fine[::refine, ::refine]}
    return mj.Dataset(
        grid,
        observe(clean, noise, seed),
        clean=clean,
        truth={"k": np.asarray(k(x, y), dtype=np.float64)},
        known={"f": np.asarray(f(x, y), dtype=np.float64)},
        params=p,
    )


def conditions(dataset: mj.Dataset) -> list[mj.Condition]:
    """u = 0 on the four walls."""
    walls = {"x=0": {"x": 0}, "x=1": {"x": -1}, "y=0": {"y": 0}, "y=1": {"y": -1}}
    return [mj.Condition("u", where, 0.0, f"u({name})") for name, where in walls.items()]


def residual(s):
    """div(k grad u) + f."""
    return s.div((s.k * s.d(s.u, "x"), s.k * s.d(s.u, "y")), ("x", "y")) + s.f


residuals = {"pde": residual}
