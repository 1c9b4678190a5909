"""1-D heat equation with a spatially varying diffusivity: u_t = (D(x) u_x)_x on [0, 1].

Recover `D(x)` from observations of `u(x, t)`. The truth is `D(x) = 0.02 + 0.015 sin(2 pi x)`
(`diffusivity="sine"`), the constant 0.02 (`"constant"`) or a narrow bump
`0.01 + 0.008 exp(-((x - 0.3) / 0.1)^2)` (`"bump"`); a callable `D(x)` may be given
from Python. The forward simulator is a conservative second-order finite-volume
discretisation in space and Crank-Nicolson in time on a grid `refine` times finer in x, with
`substeps` implicit steps per output interval and u(0, t) = u(1, t) = 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import mollijax as mj

from ._common import observe, pick_variant, require, resolve_params

DESCRIPTION = "u_t = (D(x) u_x)_x on [0,1] x [0,T]: recover the diffusivity D(x) from u"
ORDER = 2
DEFAULTS = {
    "nx": 101,
    "nt": 101,
    "t_final": 2.0,
    "diffusivity": "sine",
    "refine": 4,
    "substeps": 20,
}
UNKNOWNS = {"D": {"axes": ("x",), "constraint": "free", "init": 0.03}}
STATE = ("u",)


def default_diffusivity(x):
    """The benchmark's truth, D(x) = 0.02 + 0.015 sin(2 pi x)."""
    return 0.02 + 0.015 * np.sin(2 * np.pi * x)


def default_initial(x):
    return np.sin(np.pi * x) + 0.5 * np.sin(3 * np.pi * x) + 0.25 * np.sin(5 * np.pi * x)


def bump_diffusivity(x):
    """A narrow bump, `0.01 + 0.008 exp(-((x - 0.3) / 0.1)^2)`: finer structure than the
    sine, on which the evolved fit's network coefficient goes on fitting 5 % noise (the
    accuracy suite's `heat1d_bump` case)."""
    return 0.01 + 0.008 * np.exp(-(((np.asarray(x) - 0.3) / 0.1) ** 2))


_VARIANTS = {"sine": default_diffusivity, "constant": lambda x: 0.02 + 0.0 * x,
             "bump": bump_diffusivity}


def solve(
    nx: int,
    nt: int,
    t_final: float,
    diffusivity: Callable,
    initial: Callable = default_initial,
    refine: int = 4,
    substeps: int = 20,
) -> tuple[mj.Grid, np.ndarray]:
    """The clean solution `u` of shape `(nx, nt)` on the grid with axes `("x", "t")`."""
    nf = (nx - 1) * refine + 1
    x = np.linspace(0.0, 1.0, nf)
    h = x[1] - x[0]
    d_half = diffusivity(0.5 * (x[1:] + x[:-1]))
    n = nf - 2  # interior unknowns (Dirichlet zero ends)
    a = (
        np.diag(-(d_half[:-1] + d_half[1:])) + np.diag(d_half[1:-1], 1) + np.diag(d_half[1:-1], -1)
    ) / h**2
    dt = t_final / (nt - 1) / substeps
    eye = np.eye(n)
    step = np.linalg.solve(eye - 0.5 * dt * a, eye + 0.5 * dt * a)
    block = np.linalg.matrix_power(step, substeps)
    u = np.zeros((nx, nt))
    state = initial(x)[1:-1]
    for k in range(nt):
        u[:, k] = np.concatenate([[0.0], state, [0.0]])[::refine]
        state = block @ state
    grid = mj.Grid.from_bounds((nx, nt), (0.0, 0.0), (1.0, t_final), axes=("x", "t"))
    return grid, u


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Simulate `u(x, t)` with the truth `D(x)`; `params` override `DEFAULTS`.

    **Returns:** a `mj.Dataset` with `data["u"]`, `clean["u"]` of shape `(nx, nt)` and
    `truth["D"]` of shape `(nx,)`.
    """
    p = resolve_params("heat1d", DEFAULTS, params)
    require(
        p["nx"] >= 5
        and p["nt"] >= 2
        and p["refine"] >= 1
        and p["substeps"] >= 1
        and p["t_final"] > 0,
        "heat1d",
        f"`nx` >= 5, `nt` >= 2, `refine` >= 1, `substeps` >= 1 and `t_final` > 0, got "
        f"nx={p['nx']}, nt={p['nt']}, refine={p['refine']}, substeps={p['substeps']}, "
        f"t_final={p['t_final']}",
    )
    diffusivity = pick_variant("heat1d", "diffusivity", p["diffusivity"], _VARIANTS)
    grid, u = solve(
        int(p["nx"]),
        int(p["nt"]),
        float(p["t_final"]),
        diffusivity,
        refine=int(p["refine"]),
        substeps=int(p["substeps"]),
    )
    clean = {"u": u}
    truth = {"D": np.asarray(diffusivity(grid.coords("x")), dtype=np.float64)}
    return mj.Dataset(grid, observe(clean, noise, seed), clean=clean, truth=truth, params=p)


def residual(s):
    """u_t - (D u_x)_x, written like the maths."""
    return s.d(s.u, "t") - s.d(s.D * s.d(s.u, "x"), "x")


residuals = {"pde": residual}


def flux_divergence(s):
    """(D u_x)_x: the time derivative of `u`, for the `evolve` state."""
    return s.d(s.D * s.d(s.u, "x"), "x")


EVOLUTION = {"u": flux_divergence}


def conditions(dataset: mj.Dataset) -> list[mj.Condition]:
    """u(0, t) = u(1, t) = 0 (network and evolved states)."""
    return [mj.Condition("u", {"x": 0}, 0.0, "u(0)"), mj.Condition("u", {"x": -1}, 0.0, "u(1)")]
