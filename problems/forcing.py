"""First order: a time-varying forcing of the linear ODE u_t = u + lambda(t) on [0, T].

Recover `lambda(t)` from noisy samples of `u(t)` on a 1-D grid with axis `"t"`. Truth
variants (`forcing`):

- `"sine"`: lambda(t) = sin(2 pi t / T);
- `"bump"`: lambda(t) = exp(-(t - T/2)^2 / (2 (0.1 T)^2));
- `"step"`: lambda(t) = tanh((t - T/2) / (0.05 T)), a smoothed switch.

The forward model integrates `u' = u + lambda(t)`, `u(0) = u0`, with classical RK4 and
`substeps` steps per output interval (global error `O(dt^4)`, below 1e-10 at the defaults).
"""

from __future__ import annotations

import numpy as np

import mollijax as mj

from ._common import observe, pick_variant, require, resolve_params

DESCRIPTION = "u_t = u + lambda(t) on [0,T]: recover the forcing lambda(t) from u"
ORDER = 1
DEFAULTS = {"nt": 201, "t_final": 1.0, "u0": 1.0, "forcing": "sine", "substeps": 50}
UNKNOWNS = {"lam": {"axes": ("t",), "constraint": "free", "init": 0.0}}
STATE = ("u",)


def _sine(t, period):
    return np.sin(2 * np.pi * t / period)


def _bump(t, period):
    return np.exp(-((t - 0.5 * period) ** 2) / (2 * (0.1 * period) ** 2))


def _step(t, period):
    return np.tanh((t - 0.5 * period) / (0.05 * period))


_VARIANTS = {"sine": _sine, "bump": _bump, "step": _step}


def integrate(forcing, t: np.ndarray, u0: float, substeps: int) -> np.ndarray:
    """RK4 for `u' = u + forcing(t)` with `substeps` steps between consecutive `t` nodes."""
    u = np.empty_like(t)
    u[0] = u0
    for k in range(t.size - 1):
        dt = (t[k + 1] - t[k]) / substeps
        s, v = t[k], u[k]
        for _ in range(substeps):
            k1 = v + forcing(s)
            k2 = v + 0.5 * dt * k1 + forcing(s + 0.5 * dt)
            k3 = v + 0.5 * dt * k2 + forcing(s + 0.5 * dt)
            k4 = v + dt * k3 + forcing(s + dt)
            v = v + dt * (k1 + 2 * k2 + 2 * k3 + k4) / 6
            s = s + dt
        u[k + 1] = v
    return u


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Simulate `u(t)`; `params` override `DEFAULTS`.

    **Returns:** a `mj.Dataset` with `data["u"]`, `clean["u"]` of shape `(nt,)` and
    `truth["lam"]` of shape `(nt,)`.
    """
    p = resolve_params("forcing", DEFAULTS, params)
    require(
        p["nt"] >= 3 and p["substeps"] >= 1 and p["t_final"] > 0,
        "forcing",
        f"`nt` >= 3, `substeps` >= 1 and `t_final` > 0, got nt={p['nt']}, "
        f"substeps={p['substeps']}, t_final={p['t_final']}",
    )
    period = float(p["t_final"])
    shape = pick_variant("forcing", "forcing", p["forcing"], _VARIANTS)
    forcing = lambda t: shape(t, period)
    grid = mj.Grid.from_bounds((int(p["nt"]),), (0.0,), (period,), axes=("t",))
    t = grid.coords("t")
    clean = {"u": integrate(forcing, t, float(p["u0"]), int(p["substeps"]))}
    truth = {"lam": forcing(t)}
    return mj.Dataset(grid, observe(clean, noise, seed), clean=clean, truth=truth, params=p)


def residual(s):
    """u_t - u - lambda, with `u` the mollified state (`s.d(u, "")`)."""
    return s.d(s.u, "t") - s.d(s.u, "") - s.lam


residuals = {"ode": residual}
