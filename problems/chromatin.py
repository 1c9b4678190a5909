"""Chromatin phase field: recover the methylation/acetylation ratio lambda(x, y).

The steady state of the chromatin model of Kant et al. (Nat. Commun. 2024) on the periodic
square `[0, L)^2`: nucleoplasm `phi_w`, heterochromatin `phi_h` and euchromatin `phi_e`
(`phi_w + phi_h + phi_e = 1`), observed through `phi_w` and `phi_d = phi_h - phi_e`, so

    phi_h = ((1 - phi_w) + phi_d) / 2,     phi_e = 1 - phi_w - phi_h,
    mu_d  = -phi_e + phi_h (0.7 - phi_h) (0.7 - 2 phi_h) - kappa^2 Laplacian(phi_d),
    0     = Laplacian(mu_d) + 2 (lambda phi_e - phi_h),        kappa = 0.03,

a fourth-order equation (the residual). `lambda` enters linearly, so where `phi_e > 0`

    lambda = (phi_h - Laplacian(mu_d) / 2) / phi_e,

a pointwise estimate (`pointwise_lambda`) to compare fits with.

The simulator relaxes `d phi_d / dt = Laplacian(mu_d) + 2 (lambda phi_e - phi_h)` with `phi_w`
fixed (a smooth nucleus-like field) to its steady state by a semi-implicit Fourier scheme: the
biharmonic term and stabilising linear terms `a Laplacian - c` are implicit, the rest explicit,
until the steady residual (evaluated spectrally) is at round-off. The steady state therefore
satisfies the equation with the given `lambda` exactly. A microscopy variant blurs the fields
with a Gaussian point-spread function and adds Poisson (shot) and Gaussian (read) noise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jaxtyping import Float

import mollijax as mj

from ._common import ProblemSpecError, observe, resolve_params

DESCRIPTION = "steady chromatin phase field (4th order): recover lambda(x, y) from phi_w, phi_d"
ORDER = 4
KAPPA = 0.03
DEFAULTS: dict[str, object] = {
    "n": 64,  # nodes per axis of the periodic output grid
    "length": 10.0,  # side of the square domain
    "refine": 2,  # the steady state is computed on an n * refine grid and subsampled
    "truth": "smooth",  # "constant", "smooth" or "lognormal"
    "lam_mean": 1.5,  # lambda's constant value / mean level
    "lam_amp": 0.3,  # relative amplitude of the smooth truth
    "lam_sigma": 0.25,  # standard deviation of log(lambda) for the log-normal truth
    "correlation": 1.5,  # correlation length of the log-normal truth's Gaussian field
    "field_seed": 0,  # seed of the log-normal truth (the noise uses `seed`)
    "psf_sigma": 0.0,  # microscopy: Gaussian PSF standard deviation (length units; 0 = off)
    "photons": 0.0,  # microscopy: photons at the brightest pixel (0 = no shot noise)
    "read_noise": 0.0,  # microscopy: Gaussian read noise, standard deviation in photons
    "tol": 1e-11,  # stop relaxing when max |steady residual| < tol
    "max_steps": 20000,
}
UNKNOWNS = {"lam": {"axes": ("x", "y"), "constraint": "positive", "init": 1.0}}
STATE = ("phi_w", "phi_d")
TRUTHS = ("constant", "smooth", "lognormal")


# ----------------------------------------------------------------------- model functions


def fractions(phi_w, phi_d):
    """`(phi_h, phi_e)` from the observed `phi_w` and `phi_d = phi_h - phi_e` (any arrays)."""
    phi_h = ((1.0 - phi_w) + phi_d) / 2
    return phi_h, 1.0 - phi_w - phi_h


def local_potential(phi_w, phi_d):
    """`mu_d` without its gradient term: `-phi_e + phi_h (0.7 - phi_h) (0.7 - 2 phi_h)`."""
    phi_h, phi_e = fractions(phi_w, phi_d)
    return -phi_e + phi_h * (0.7 - phi_h) * (0.7 - 2 * phi_h)


def residual(s):
    """`Laplacian(mu_d) + 2 (lambda phi_e - phi_h)`, `mu_d = local - kappa^2 Laplacian(phi_d)`."""
    phi_h, phi_e = fractions(s.phi_w, s.phi_d)
    mu = -phi_e + phi_h * (0.7 - phi_h) * (0.7 - 2 * phi_h) - KAPPA**2 * s.lap(s.phi_d)
    return s.lap(mu) + 2 * (s.lam * phi_e - phi_h)


residuals = {"pde": residual}


def pointwise_lambda(
    phi_w: Float[np.ndarray, "n m"], phi_d: Float[np.ndarray, "n m"], laplacian: Callable
) -> Float[np.ndarray, "n m"]:
    """`lambda = (phi_h - Laplacian(mu_d) / 2) / phi_e`, node by node.

    `laplacian(f)` is any Laplacian on the grid (e.g. `Mollifier(...).laplacian`); the
    estimate is as good as its fourth derivatives and is undefined where `phi_e = 0`.
    """
    phi_h, phi_e = fractions(phi_w, phi_d)
    mu = local_potential(phi_w, phi_d) - KAPPA**2 * np.asarray(laplacian(phi_d))
    return (phi_h - np.asarray(laplacian(mu)) / 2) / phi_e


# ------------------------------------------------------------------------ truths, inputs


def wavenumbers(n: int, length: float) -> Float[np.ndarray, "n n"]:
    """`|k|^2` of the periodic `n x n` grid on `[0, length)^2`, in FFT order."""
    k = 2 * np.pi * np.fft.fftfreq(n, d=length / n)
    return k[:, None] ** 2 + k[None, :] ** 2


def spectral_laplacian(f: Float[np.ndarray, "n n"], length: float) -> Float[np.ndarray, "n n"]:
    """Exact Laplacian of the trigonometric interpolant of a periodic field."""
    return np.real(np.fft.ifft2(-wavenumbers(f.shape[0], length) * np.fft.fft2(f)))


def nucleoplasm(
    x: Float[np.ndarray, "*s"], y: Float[np.ndarray, "*s"], length: float
) -> Float[np.ndarray, "*s"]:
    """The fixed `phi_w`: `0.45 + 0.12 sin(k x) cos(2 k y) + 0.08 cos(k (x + y))`, `k = 2 pi / L`.

    Smooth, periodic and within `[0.25, 0.65]`: interchromatin channels of varying width.
    """
    k = 2 * np.pi / length
    return 0.45 + 0.12 * np.sin(k * x) * np.cos(2 * k * y) + 0.08 * np.cos(k * (x + y))


def gaussian_field(
    n: int, length: float, correlation: float, seed: int
) -> Float[np.ndarray, "n n"]:
    """A periodic Gaussian random field of zero mean and unit standard deviation.

    White noise filtered by `exp(-|k|^2 correlation^2 / 4)` (a Gaussian covariance of
    length `correlation`), then normalised; seeded, so the same `seed` gives the same field.
    """
    white = np.random.default_rng(seed).standard_normal((n, n))
    g = np.real(
        np.fft.ifft2(np.fft.fft2(white) * np.exp(-wavenumbers(n, length) * correlation**2 / 4))
    )
    g = g - g.mean()
    return g / g.std()


def truth_lambda(x, y, p: dict) -> np.ndarray:
    """The true `lambda` at the nodes `(x, y)` of an `n x n` periodic grid, per `p["truth"]`.

    - `"constant"`: `lam_mean`;
    - `"smooth"`: `lam_mean (1 + lam_amp sin(k x) sin(k y))`, `k = 2 pi / L`;
    - `"lognormal"`: `lam_mean exp(lam_sigma g - lam_sigma^2 / 2)`, `g` a `gaussian_field`.
    """
    mean, length, kind = float(p["lam_mean"]), float(p["length"]), p["truth"]
    if kind == "constant":
        return np.full(x.shape, mean)
    if kind == "smooth":
        k = 2 * np.pi / length
        return mean * (1 + float(p["lam_amp"]) * np.sin(k * x) * np.sin(k * y))
    if kind == "lognormal":
        s = float(p["lam_sigma"])
        g = gaussian_field(x.shape[0], length, float(p["correlation"]), int(p["field_seed"]))
        return mean * np.exp(s * g - s**2 / 2)
    raise ProblemSpecError(f"chromatin parameter `truth` must be one of {TRUTHS}, got {kind!r}.")


# ------------------------------------------------------------------------------ simulator


def steady_residual(
    phi_w: Float[np.ndarray, "n n"],
    phi_d: Float[np.ndarray, "n n"],
    lam: Float[np.ndarray, "n n"],
    length: float,
) -> Float[np.ndarray, "n n"]:
    """The steady residual `Laplacian(mu_d) + 2 (lambda phi_e - phi_h)`, spectrally."""
    phi_h, phi_e = fractions(phi_w, phi_d)
    mu = local_potential(phi_w, phi_d) - KAPPA**2 * spectral_laplacian(phi_d, length)
    return spectral_laplacian(mu, length) + 2 * (lam * phi_e - phi_h)


def relax(
    phi_w: Float[np.ndarray, "n n"],
    lam: Float[np.ndarray, "n n"],
    length: float,
    tol: float = 1e-11,
    max_steps: int = 20000,
    dt: float = 10.0,
) -> tuple[Float[np.ndarray, "n n"], float, int]:
    """The steady `phi_d` for fixed `phi_w` and `lambda`, by semi-implicit relaxation.

    With `N(phi) = Laplacian(local_potential(phi)) + 2 (lambda phi_e - phi_h)`, each step solves

        (1 + dt (kappa^2 |k|^4 + a |k|^2 + c)) phi^+ = phi + dt (N(phi) + a |k|^2 phi + c phi)

    in Fourier space (hats omitted), with `a = 0.75 >= d local_potential / d phi_d` and
    `c = 1 + max lambda >= -d (2 (lambda phi_e - phi_h)) / d phi_d`, which makes the
    iteration a contraction for any `dt`. A fixed point is a steady state.

    **Returns:** `(phi_d, max |steady_residual|, steps)`.
    """
    n = phi_w.shape[0]
    k2 = wavenumbers(n, length)
    a, c = 0.75, 1.0 + float(lam.max())
    denominator = 1 + dt * (KAPPA**2 * k2**2 + a * k2 + c)
    # start from the uniform steady state of each node
    phi = (lam - 1) / (lam + 1) * (1 - phi_w)
    worst = np.inf
    for step in range(1, max_steps + 1):
        phi_h, phi_e = fractions(phi_w, phi)
        explicit = np.fft.fft2(local_potential(phi_w, phi) - a * phi)
        reaction = np.fft.fft2(2 * (lam * phi_e - phi_h) + c * phi)
        phi = np.real(
            np.fft.ifft2((np.fft.fft2(phi) + dt * (-k2 * explicit + reaction)) / denominator)
        )
        if step % 20 == 0:
            worst = float(np.abs(steady_residual(phi_w, phi, lam, length)).max())
            if worst < tol:
                return phi, worst, step
    return phi, worst, max_steps


def gaussian_blur(
    f: Float[np.ndarray, "n n"], sigma: float, length: float
) -> Float[np.ndarray, "n n"]:
    """Periodic convolution with a Gaussian PSF of standard deviation `sigma` (length units)."""
    return np.real(
        np.fft.ifft2(np.fft.fft2(f) * np.exp(-wavenumbers(f.shape[0], length) * sigma**2 / 2))
    )


def microscope(
    f: Float[np.ndarray, "n n"],
    psf_sigma: float,
    photons: float,
    read_noise: float,
    length: float,
    rng: np.random.Generator,
) -> Float[np.ndarray, "n n"]:
    """A microscopy image of `f`, rescaled back to `f`'s units.

    Blur by the PSF, map `[min f, max f]` to `[0, photons]` counts, sample Poisson counts, add
    Gaussian read noise of standard deviation `read_noise` counts, and map back. `photons = 0`
    skips the noise (blur only).
    """
    lo, hi = float(f.min()), float(f.max())
    blurred = gaussian_blur(f, psf_sigma, length) if psf_sigma > 0 else f
    if photons <= 0:
        return blurred
    expected = photons * np.clip((blurred - lo) / (hi - lo), 0.0, None)
    counts = rng.poisson(expected) + read_noise * rng.standard_normal(f.shape)
    return lo + counts / photons * (hi - lo)


def simulate(*, noise: float = 0.0, seed: int = 0, **params) -> mj.Dataset:
    """Steady chromatin fields for a true `lambda`, with optional microscopy and noise.

    Parameters are those of `DEFAULTS`. The output grid is periodic, `n x n` on
    `[0, length)^2`, axes `("x", "y")`. The steady state is computed on a grid `refine` times
    finer and subsampled (exact for a resolved periodic field). `data` holds the observed
    `phi_w` and `phi_d`: the microscopy images (when `psf_sigma` or `photons` is set), then
    Gaussian noise of relative level `noise`; `clean` holds the steady fields themselves.

    **Returns:** a `mj.Dataset` with `truth["lam"]` of shape `(n, n)`.
    """
    p = resolve_params("chromatin", DEFAULTS, params)
    n, refine, length = int(p["n"]), int(p["refine"]), float(p["length"])
    if n < 8 or refine < 1 or length <= 0:
        raise ProblemSpecError(
            f"chromatin needs `n` >= 8, `refine` >= 1 and `length` > 0, got n={n}, "
            f"refine={refine}, length={length}."
        )
    if p["truth"] not in TRUTHS:
        raise ProblemSpecError(
            f"chromatin parameter `truth` must be one of {TRUTHS}, got {p['truth']!r}."
        )
    if float(p["lam_mean"]) <= 0 or not 0 <= float(p["lam_amp"]) < 1:
        raise ProblemSpecError(
            f"chromatin needs `lam_mean` > 0 and 0 <= `lam_amp` < 1 for a positive lambda, got "
            f"lam_mean={p['lam_mean']}, lam_amp={p['lam_amp']}."
        )
    fine = mj.Grid.from_bounds((n * refine,) * 2, 0.0, length, periodic=True, axes=("x", "y"))
    xf, yf = fine.mesh()
    # the log-normal truth is drawn on the output grid and interpolated spectrally (exactly
    # band-limited), so the same `field_seed` gives the same truth at every `refine`
    grid = mj.Grid.from_bounds((n, n), 0.0, length, periodic=True, axes=("x", "y"))
    x, y = grid.mesh()
    lam = truth_lambda(x, y, p)
    lam_fine = lam if refine == 1 else fourier_upsample(lam, refine)
    phi_w_fine = nucleoplasm(xf, yf, length)
    phi_d_fine, worst, steps = relax(
        phi_w_fine, lam_fine, length, float(p["tol"]), int(p["max_steps"])
    )
    if worst > 1e3 * float(p["tol"]):
        raise ProblemSpecError(
            f"chromatin: relaxation did not reach a steady state in `max_steps`={steps} steps "
            f"(max residual {worst:.2e}, `tol` {p['tol']})."
        )
    clean = {"phi_w": phi_w_fine[::refine, ::refine], "phi_d": phi_d_fine[::refine, ::refine]}
    rng = np.random.default_rng(seed)
    imaged = {
        k: microscope(
            v, float(p["psf_sigma"]), float(p["photons"]), float(p["read_noise"]), length, rng
        )
        for k, v in clean.items()
    }
    return mj.Dataset(
        grid,
        data=observe(imaged, noise, seed + 1),
        clean=clean,
        truth={"lam": lam},
        params={**p, "relax_steps": steps, "relax_residual": worst},
    )


def fourier_upsample(f: Float[np.ndarray, "n n"], factor: int) -> Float[np.ndarray, "m m"]:
    """The trigonometric interpolant of a periodic field on a grid `factor` times finer.

    The Nyquist row and column (even `n`) are split evenly between +/- frequencies, so a real
    field stays real and the coarse nodes are reproduced exactly.
    """
    n = f.shape[0]
    m = n * factor
    spec = np.fft.fftshift(np.fft.fft2(f))
    if n % 2 == 0:
        spec = np.pad(spec, ((0, 1), (0, 1)))
        spec[0, :] /= 2
        spec[-1, :] = spec[0, :]
        spec[:, 0] /= 2
        spec[:, -1] = spec[:, 0]
    big = np.zeros((m, m), dtype=complex)
    lo = m // 2 - n // 2
    big[lo : lo + spec.shape[0], lo : lo + spec.shape[1]] = spec
    return np.real(np.fft.ifft2(np.fft.ifftshift(big))) * factor**2
