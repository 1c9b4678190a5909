"""Teacher recovery as an inverse PDE problem.

The correlation of the teacher's output with a probe unit at `theta`,

    V(theta) = E_x[y(x) sigma(theta, x)] = sum_j b_j G(theta - w_j),

is the electrostatic potential of the protons. With the screened unit `(lambda - Laplacian) G
= rho_delta`, so `(lambda - Laplacian) V = sum_j b_j rho_delta(theta - w_j)`: bumps of mass
`b_j` centred on the `w_j`. From samples `(x_n, y_n)` we estimate `V` on a periodic grid,
apply the mollified operator `lambda (V * phi_eps) - Laplacian (V * phi_eps)` and read the
protons off the peaks: positions by centroid, charges by integrating each bump.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

import mollijax as mj

from ._electro_dynamics import Charges
from ._electro_potentials import ScreenedUnit, lattice_features, lattice_unit


def _square_periodic(grid: mj.Grid) -> tuple[tuple[int, int], float]:
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or not np.isclose(*grid.spacing):
        raise mj.MollijaxError(
            f"`grid` must be a square 2-D periodic grid, got shape {grid.shape} and spacing "
            f"{grid.spacing}."
        )
    return grid.shape, grid.shape[0] * grid.spacing[0]


def sample_teacher(
    teacher: Charges,
    unit: ScreenedUnit,
    grid: mj.Grid,
    key: PRNGKeyArray,
    n: int,
    noise: float = 0.0,
) -> tuple[Int[Array, "n 2"], Float[Array, " n"], Float[Array, ""], Float[Array, " n"]]:
    """Draw `n` inputs (lattice Fourier features of `unit` on `grid`'s periodic box) and labels
    `y_n = sum_j b_j sigma(w_j, x_n) + noise * N(0, 1)`.

    **Returns:** `(m, beta, amplitude, y)`; see `lattice_features` for the first three.
    """
    shape, length = _square_periodic(grid)
    kf, kn = jax.random.split(key)
    m, beta, amp = lattice_features(unit, shape, length, kf, n)
    sig = lattice_unit(teacher.position - jnp.asarray(grid.origin), m, beta, amp, shape, length)
    y = teacher.charge @ sig
    return m, beta, amp, y + noise * jax.random.normal(kn, y.shape, dtype=y.dtype)


def estimate_potential(
    m: Int[Array, "n 2"],
    beta: Float[Array, " n"],
    amplitude: Float[Array, ""],
    y: Float[Array, " n"],
    grid: mj.Grid,
) -> Float[Array, "n0 n1"]:
    """Monte Carlo `V_hat(theta) = (1/n) sum_n y_n sigma(theta, x_n)` on every node of `grid`.

    Features on the lattice make this exact and cheap: the amplitudes `y_n exp(i beta_n)` are
    summed per frequency and one inverse FFT gives all nodes, O(n + N log N) for `N` nodes.
    Unbiased for `V`; its standard deviation falls as `1 / sqrt(n)`.
    """
    shape, _ = _square_periodic(grid)
    flat = m[:, 0] * shape[1] + m[:, 1]
    size = shape[0] * shape[1]
    real = jnp.zeros(size, dtype=y.dtype).at[flat].add(y * jnp.cos(beta))
    imag = jnp.zeros(size, dtype=y.dtype).at[flat].add(y * jnp.sin(beta))
    coeff = jax.lax.complex(real, imag)
    values = jnp.fft.ifft2(coeff.reshape(shape)).real * (shape[0] * shape[1])
    return amplitude * values / y.shape[0]


def source_density(
    potential: Float[Array, "n0 n1"], lam: float, D: mj.Mollifier
) -> Float[Array, "n0 n1"]:
    """`(lambda - Laplacian)(V * phi_eps)` with the mollified derivatives of `D`.

    For `V = sum_j b_j G(theta - w_j)` this is `sum_j b_j (rho_delta * phi_eps)(theta - w_j)`:
    bumps of mass `b_j`, width about `delta + eps`, on the protons.
    """
    smooth, dxx, dyy = D.derivatives(potential, [(0, 0), (2, 0), (0, 2)])
    return lam * smooth - dxx - dyy


def _periodic_offsets(grid: mj.Grid, radius: float):
    h = grid.spacing[0]
    q = int(np.ceil(radius / h))
    offs = [(i, j) for i in range(-q, q + 1) for j in range(-q, q + 1)
            if (i * i + j * j) * h * h <= radius * radius]
    return np.asarray(offs, dtype=int)


def read_charges(
    density: Float[Array, "n0 n1"], grid: mj.Grid, radius: float, threshold: float = 0.3
) -> Charges:
    """Protons from the bumps of `density` on a periodic grid.

    A node is a peak if `|density|` there is the largest within `radius` and at least
    `threshold * max |density|`. Each peak's charge is the sum of `density * h^2` over the
    disk of radius `radius` around it, and its position the centroid of `density` over the
    disk (periodic offsets, result wrapped into the box). Bumps must be `2 radius` apart.
    """
    shape, length = _square_periodic(grid)
    if not (0 < threshold < 1):
        raise mj.MollijaxError(f"`threshold` must lie in (0, 1), got {threshold!r}.")
    if not (grid.spacing[0] <= radius < length / 4):
        raise mj.MollijaxError(
            f"`radius` must lie in [h, length / 4) = [{grid.spacing[0]:.4g}, {length / 4:.4g}), "
            f"got {radius!r}."
        )
    s = np.asarray(density)
    mag = np.abs(s)
    offs = _periodic_offsets(grid, radius)
    local_max = np.ones(shape, dtype=bool)
    for i, j in offs:
        if i or j:
            local_max &= mag >= np.roll(mag, (i, j), axis=(0, 1))
    peaks = np.argwhere(local_max & (mag >= threshold * mag.max()))
    h = grid.spacing[0]
    charges, positions = [], []
    for p in peaks:
        idx = (p[None, :] + offs) % np.asarray(shape)
        vals = s[idx[:, 0], idx[:, 1]]
        q = vals.sum() * h * h
        centroid = p * h + (vals @ (offs * h)) / vals.sum()
        charges.append(q)
        positions.append(np.mod(centroid, length) + np.asarray(grid.origin))
    return Charges(jnp.asarray(np.asarray(charges, dtype=float)),
                   jnp.asarray(np.asarray(positions, dtype=float).reshape(-1, 2)))


def match_errors(
    found: Charges, truth: Charges, length: float
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Best matching (over permutations) of recovered to true protons on a periodic box.

    **Returns:** `(max position error, max charge error)`; `inf` if the counts differ.
    """
    n = truth.charge.shape[0]
    if found.charge.shape[0] != n:
        return jnp.asarray(np.inf), jnp.asarray(np.inf)
    fp, tp = np.asarray(found.position), np.asarray(truth.position)
    fc, tc = np.asarray(found.charge), np.asarray(truth.charge)
    best = None
    for perm in itertools.permutations(range(n)):
        d = fp[list(perm)] - tp
        d = d - length * np.round(d / length)
        pos = float(np.max(np.linalg.norm(d, axis=-1)))
        chg = float(np.max(np.abs(fc[list(perm)] - tc)))
        if best is None or pos + chg < best[0] + best[1]:
            best = (pos, chg)
    return jnp.asarray(best[0]), jnp.asarray(best[1])


def random_teacher(
    key: PRNGKeyArray, k: int, length: float, min_separation: float,
    charge_range: tuple[float, float] = (0.5, 1.5), signed: bool = True,
) -> Charges:
    """`k` protons uniform on the periodic box, pairwise (periodic) distance at least
    `min_separation` (by rejection), charges uniform in `charge_range`, random signs if
    `signed`."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    for _ in range(10_000):
        pos = rng.uniform(0.0, length, (k, 2))
        d = pos[:, None] - pos[None]
        d = np.linalg.norm(d - length * np.round(d / length), axis=-1) + np.eye(k) * length
        if d.min() >= min_separation:
            break
    else:
        raise mj.MollijaxError(
            f"Could not place {k} protons {min_separation} apart in a box of side {length}."
        )
    charge = rng.uniform(*charge_range, k)
    if signed:
        charge = charge * rng.choice([-1.0, 1.0], k)
    return Charges(jnp.asarray(charge), jnp.asarray(pos))
