"""Second order, steady diffusion-reaction: nu u'' - k(x) u = f(x) on [0, 1], u(0) = u(1) = 0.

Recover the reaction rate `k(x)` from observations of `u`, with `nu = 0.01`,
`f = sin(2 pi x)` and the truth `k(x) = 0.1 + exp(-(x - 0.5)^2 / (2 * 0.15^2))`
(`reaction="gaussian"`; `"constant"` gives k = 0.5). With a `k` symmetric about 1/2 and an
antisymmetric `f`, `u` is antisymmetric and vanishes at x = 1/2, where `k u = 0` carries no
information on `k`: the recovery there rests on regularity (a smoothness penalty or a network).

The forward model is the second-order central-difference solve on `fine` intervals and on
`2 fine` intervals (tridiagonal), combined by Richardson extrapolation
`(4 u_{h/2} - u_h) / 3` (fourth order), then sampled at the output nodes.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

import mollijax as mj

from ._common import observe, pick_variant, require, resolve_params

DESCRIPTION = "nu u'' - k(x) u = sin(2 pi x), u(0)=u(1)=0: recover the reaction rate k(x) from u"
ORDER = 2
DEFAULTS = {"nx": 101, "nu": 0.01, "reaction": "gaussian", "refine": 40}
UNKNOWNS = {"k": {"axes": ("x",), "constraint": "positive", "init": 0.5}}
STATE = ("u",)


def _gaussian(x):
    return 0.1 + np.exp(-((x - 0.5) ** 2) / (2 * 0.15**2))


_VARIANTS = {"gaussian": _gaussian, "constant": lambda x: 0.5 + 0.0 * x}


def source(x):
    return np.sin(2 * np.pi * x)


def solve_fd(reaction, nu: float, intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """Central differences `nu (u_{i-1} - 2 u_i + u_{i+1}) / h^2 - k_i u_i = f_i`, Dirichlet 0."""
    x = np.linspace(0.0, 1.0, intervals + 1)
    h = 1.0 / intervals
    xi = x[1:-1]
    bands = np.zeros((3, xi.size))
    bands[0, 1:] = nu / h**2
    bands[1] = -2 * nu / h**2 - reaction(xi)
    bands[2, :-1] = nu / h**2
    u = np.zeros_like(x)
    u[1:-1] = solve_banded((1, 1), bands, source(xi))
    return x, u


def solve(reaction, nu: float, nx: int, refine: int) -> np.ndarray:
    """`u` at `nx` nodes of [0, 1]: `solve_fd` on `(nx - 1) refine` and twice as many
    intervals, combined by Richardson extrapolation (`(4 u_{h/2} - u_h) / 3`, 4th order)."""
    coarse = (nx - 1) * refine
    _, u_h = solve_fd(reaction, nu, coarse)
    _, u_h2 = solve_fd(reaction, nu, 2 * coarse)
    return ((4 * u_h2[::2] - u_h) / 3)[::refine]


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Solve for `u` and sample it at `nx` nodes; `params` override `DEFAULTS`.

    **Returns:** a `mj.Dataset` with `data["u"]`, `clean["u"]`, `known["f"]`, `known["nu"]`
    (the constant `nu` as a field) and `truth["k"]`, all of shape `(nx,)`.
    """
    p = resolve_params("diffusion_reaction", DEFAULTS, params)
    require(
        p["nx"] >= 5 and p["refine"] >= 1 and p["nu"] > 0,
        "diffusion_reaction",
        f"`nx` >= 5, `refine` >= 1 and `nu` > 0, got nx={p['nx']}, refine={p['refine']}, "
        f"nu={p['nu']}",
    )
    reaction = pick_variant("diffusion_reaction", "reaction", p["reaction"], _VARIANTS)
    nx, nu = int(p["nx"]), float(p["nu"])
    u = solve(reaction, nu, nx, int(p["refine"]))
    grid = mj.Grid.from_bounds((nx,), (0.0,), (1.0,), axes=("x",))
    x = grid.coords("x")
    clean = {"u": u}
    known = {"f": source(x), "nu": np.full(nx, nu)}
    return mj.Dataset(
        grid,
        observe(clean, noise, seed),
        clean=clean,
        truth={"k": reaction(x)},
        known=known,
        params=p,
    )


def conditions(dataset: mj.Dataset) -> list[mj.Condition]:
    """u(0) = u(1) = 0 (used when `u` is represented by a network)."""
    return [mj.Condition("u", {"x": 0}, 0.0, "u(0)"), mj.Condition("u", {"x": -1}, 0.0, "u(1)")]


def residual(s):
    """nu u'' - k u - f, with `u` the mollified state (`s.d(u, "")`)."""
    return s.nu * s.d(s.u, "xx") - s.k * s.d(s.u, "") - s.f


residuals = {"pde": residual}
