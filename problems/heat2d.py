"""2-D heat equation with a spatially varying diffusivity: u_t = div(D(x, y) grad u).

Domain `[0, 1]^2 x [0, t_final]`, `u = 0` on the boundary of the square. The inverse problem
recovers `D(x, y)` from (noisy) observations of `u` on an `(x, y, t)` grid, using the
divergence-form residual

    r = u_t - d/dx (D u_x) - d/dy (D u_y)

with mollified derivatives of the observed `u`.

The forward simulator is a conservative finite-volume discretisation (five-point flux form
with `D` sampled at the cell faces, second order in space) on a grid `refine` times finer
than the output grid, integrated with the classical fourth-order Runge-Kutta method at a
step well inside its stability limit, so that the time error is negligible against the
`O(h^2)` space error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jaxtyping import Float

import mollijax as mj

from ._common import ProblemSpecError, observe, resolve_params

DESCRIPTION = "2-D heat equation u_t = div(D grad u), recover D(x, y) from u(x, y, t)"
ORDER = 2
DEFAULTS: dict[str, object] = {
    "n": 33,  # output nodes per space axis (both ends included)
    "nt": 33,  # output time nodes (both ends included)
    "t_final": 1.0,
    "refine": 3,  # the simulator's grid is `refine` times finer in space
    "truth": "sines",  # "sines", "bump" or "constant"
    "d_base": 0.02,
    "d_amp": 0.01,
}
UNKNOWNS = {"D": {"axes": ("x", "y"), "constraint": "positive", "init": 0.02}}
STATE = ("u",)
TRUTHS = ("sines", "bump", "constant")


# ------------------------------------------------------------------------ truths and data


def diffusivity(
    x: Float[np.ndarray, "*shape"],
    y: Float[np.ndarray, "*shape"],
    truth: str = "sines",
    d_base: float = 0.02,
    d_amp: float = 0.01,
) -> Float[np.ndarray, "*shape"]:
    """The true diffusivity at points `(x, y)`.

    - `"sines"`: `d_base + d_amp sin(2 pi x) sin(pi y)`;
    - `"bump"`: `d_base + d_amp exp(-|(x, y) - (0.4, 0.6)|^2 / (2 0.15^2))`;
    - `"constant"`: `d_base`.

    Positive as long as `d_amp < d_base`.
    """
    if truth == "sines":
        return d_base + d_amp * np.sin(2 * np.pi * x) * np.sin(np.pi * y)
    if truth == "bump":
        return d_base + d_amp * np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) / (2 * 0.15**2))
    if truth == "constant":
        return d_base + 0.0 * x * y
    raise ProblemSpecError(f"heat2d parameter `truth` must be one of {TRUTHS}, got {truth!r}.")


def initial(
    x: Float[np.ndarray, "*shape"], y: Float[np.ndarray, "*shape"]
) -> Float[np.ndarray, "*shape"]:
    """`u(x, y, 0) = s1(x) s1(y) + 0.6 s2(x) s1(y) + 0.4 s1(x) s2(y)`, `sk(z) = sin(k pi z)`.

    Three Dirichlet modes decaying at different rates, so that `grad u` turns over time at
    most points (a single mode would leave `D` unidentifiable where `grad u` vanishes); no
    higher modes, whose mollification bias `~ (k eps)^2` would dominate on coarse grids.
    """
    s1x, s1y = np.sin(np.pi * x), np.sin(np.pi * y)
    return s1x * s1y + 0.6 * np.sin(2 * np.pi * x) * s1y + 0.4 * s1x * np.sin(2 * np.pi * y)


# ------------------------------------------------------------------------------ simulator


def flux_operator(
    dx_face: Float[np.ndarray, "mx ny"], dy_face: Float[np.ndarray, "nx my"], h: float
) -> Callable[[np.ndarray], np.ndarray]:
    """The finite-volume operator `L u = div(D grad u)` on interior nodes, `u = 0` outside.

    `(L u)_ij = [D_{i+1/2,j} (u_{i+1,j} - u_ij) - D_{i-1/2,j} (u_ij - u_{i-1,j})
               + D_{i,j+1/2} (u_{i,j+1} - u_ij) - D_{i,j-1/2} (u_ij - u_{i,j-1})] / h^2`,

    for `u` of shape `(nx, ny)` (interior nodes), `mx = nx + 1`, `my = ny + 1`; `dx_face[i]` is
    `D` on the face between padded nodes `i` and `i + 1` along x, likewise `dy_face` along y.
    """

    def apply(u):
        p = np.pad(u, 1)
        fx = dx_face * (p[1:, 1:-1] - p[:-1, 1:-1])
        fy = dy_face * (p[1:-1, 1:] - p[1:-1, :-1])
        return (fx[1:] - fx[:-1] + fy[:, 1:] - fy[:, :-1]) / h**2

    return apply


def solve_forward(
    d_fn: Callable,
    u0_fn: Callable,
    n_fine: int,
    times: Float[np.ndarray, " nt"],
    safety: float = 0.5,
) -> Float[np.ndarray, "n_fine n_fine nt"]:
    """Solve `u_t = div(D grad u)` on `[0, 1]^2`, `u = 0` on the boundary.

    **Arguments:**

    - `d_fn(x, y)`: diffusivity; `u0_fn(x, y)`: initial condition (vectorised NumPy).
    - `n_fine`: nodes per axis of the simulation grid (ends included, `h = 1 / (n_fine - 1)`).
    - `times`: increasing output times starting at 0.
    - `safety`: RK4 step as a fraction of its stability limit `2.78 / (8 max D / h^2)`.

    **Returns:** `u` at every node of the simulation grid and every output time.
    """
    x = np.linspace(0.0, 1.0, n_fine)
    h = x[1] - x[0]
    mid = 0.5 * (x[1:] + x[:-1])
    xi = x[1:-1]
    dx_face = d_fn(*np.meshgrid(mid, xi, indexing="ij"))
    dy_face = d_fn(*np.meshgrid(xi, mid, indexing="ij"))
    op = flux_operator(dx_face, dy_face, h)
    d_max = max(dx_face.max(), dy_face.max())
    dt_max = safety * 2.78 * h**2 / (8 * d_max)
    u = u0_fn(*np.meshgrid(xi, xi, indexing="ij"))
    out = np.zeros((n_fine, n_fine, times.size))
    out[1:-1, 1:-1, 0] = u
    for k in range(1, times.size):
        interval = times[k] - times[k - 1]
        m = int(np.ceil(interval / dt_max))
        dt = interval / m
        for _ in range(m):
            k1 = op(u)
            k2 = op(u + 0.5 * dt * k1)
            k3 = op(u + 0.5 * dt * k2)
            k4 = op(u + dt * k3)
            u = u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[1:-1, 1:-1, k] = u
    return out


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Simulate `u(x, y, t)` with the true `D` and return noisy observations.

    Parameters are those of `DEFAULTS`. The output grid has `n x n x nt` nodes on
    `[0, 1]^2 x [0, t_final]`, axes `("x", "y", "t")`; the simulator runs on
    `(n - 1) refine + 1` nodes per space axis and is sampled at the output nodes. Noise is
    Gaussian with standard deviation `noise * std(u)`.

    **Returns:** a `mj.Dataset` with `data["u"]`, `clean["u"]` (shape `(n, n, nt)`) and
    `truth["D"]` (shape `(n, n)`).
    """
    p = resolve_params("heat2d", DEFAULTS, params)
    n, nt, refine = int(p["n"]), int(p["nt"]), int(p["refine"])
    if n < 5 or nt < 3 or refine < 1:
        raise ProblemSpecError(
            f"heat2d needs `n` >= 5, `nt` >= 3 and `refine` >= 1, got n={n}, nt={nt}, "
            f"refine={refine}."
        )
    if not 0 <= abs(float(p["d_amp"])) < float(p["d_base"]):
        raise ProblemSpecError(
            f"heat2d needs |`d_amp`| < `d_base` for a positive D, got d_amp={p['d_amp']}, "
            f"d_base={p['d_base']}."
        )
    truth_kind = str(p["truth"])
    diffusivity(np.zeros(1), np.zeros(1), truth_kind)  # validates `truth`

    def d_fn(x, y):
        return diffusivity(x, y, truth_kind, float(p["d_base"]), float(p["d_amp"]))

    grid = mj.Grid.from_bounds(
        (n, n, nt), (0.0, 0.0, 0.0), (1.0, 1.0, float(p["t_final"])), axes=("x", "y", "t")
    )
    fine = solve_forward(d_fn, initial, (n - 1) * refine + 1, grid.coords("t"))
    u = fine[::refine, ::refine, :]
    x, y = np.meshgrid(grid.coords("x"), grid.coords("y"), indexing="ij")
    clean = {"u": u}
    return mj.Dataset(
        grid,
        data=observe(clean, noise, seed),
        clean=clean,
        truth={"D": d_fn(x, y)},
        params=p,
    )


# ------------------------------------------------------------------------------ residual


def residual(s):
    """`u_t - div(D grad u)` in divergence form."""
    return s.d(s.u, "t") - s.d(s.D * s.d(s.u, "x"), "x") - s.d(s.D * s.d(s.u, "y"), "y")


residuals = {"pde": residual}


def flux_divergence(s):
    """div(D grad u): the time derivative of `u`, for the `evolve` state."""
    return s.d(s.D * s.d(s.u, "x"), "x") + s.d(s.D * s.d(s.u, "y"), "y")


EVOLUTION = {"u": flux_divergence}


def conditions(dataset: mj.Dataset) -> list[mj.Condition]:
    """u = 0 on the four sides of the square (network and evolved states)."""
    return [
        mj.Condition("u", {axis: i}, 0.0, f"u({axis}={end})")
        for axis in ("x", "y")
        for i, end in ((0, 0), (-1, 1))
    ]
