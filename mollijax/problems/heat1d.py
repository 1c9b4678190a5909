"""1-D heat equation with a spatially varying diffusivity: u_t = (D(x) u_x)_x on [0, 1].

The forward simulator is a conservative second-order finite-volume discretisation in space and
Crank-Nicolson in time on a grid finer than the output grid, with u(0, t) = u(1, t) = 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._grid import Grid


def default_diffusivity(x):
    """The benchmark's truth, D(x) = 0.02 + 0.015 sin(2 pi x)."""
    return 0.02 + 0.015 * np.sin(2 * np.pi * x)


def default_initial(x):
    return np.sin(np.pi * x) + 0.5 * np.sin(3 * np.pi * x) + 0.25 * np.sin(5 * np.pi * x)


def simulate(
    nx: int = 101,
    nt: int = 101,
    t_final: float = 2.0,
    diffusivity: Callable = default_diffusivity,
    initial: Callable = default_initial,
    refine: int = 4,
    substeps: int = 20,
):
    """Solve the forward problem; returns `(grid, u, D)` with `u` of shape `(nx, nt)`.

    The solution is computed on a grid `refine` times finer in x with `substeps` implicit
    steps per output interval, then sampled at the output nodes.
    """
    nf = (nx - 1) * refine + 1
    x = np.linspace(0.0, 1.0, nf)
    h = x[1] - x[0]
    d_half = diffusivity(0.5 * (x[1:] + x[:-1]))
    # interior operator (Dirichlet zero ends)
    n = nf - 2
    a = np.zeros((n, n))
    for i in range(n):
        left, right = d_half[i], d_half[i + 1]
        a[i, i] = -(left + right) / h**2
        if i > 0:
            a[i, i - 1] = left / h**2
        if i < n - 1:
            a[i, i + 1] = right / h**2
    dt = t_final / (nt - 1) / substeps
    eye = np.eye(n)
    step = np.linalg.solve(eye - 0.5 * dt * a, eye + 0.5 * dt * a)
    block = np.linalg.matrix_power(step, substeps)
    u = np.zeros((nx, nt))
    state = initial(x)[1:-1]
    for k in range(nt):
        full = np.concatenate([[0.0], state, [0.0]])
        u[:, k] = full[::refine]
        state = block @ state
    grid = Grid.from_bounds((nx, nt), (0.0, 0.0), (1.0, t_final), axes=("x", "t"))
    return grid, u, diffusivity(grid.coords("x"))


def residual(s):
    """u_t - (D u_x)_x, written like the maths."""
    return s.d(s.u, "t") - s.d(s.D * s.d(s.u, "x"), "x")
