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

Units: length in micrometres (`kappa` = 30 nm).

**Regimes** (`regime`). `"smooth"` (the default): `phi_w` is `nucleoplasm`, a few smooth
modes on the 10 um box; the fields vary on micrometres, the kappa^2 term is 0.15 % of the
residual (L2 norms of its three terms, `residual_terms`) and dropping it moves the pointwise
lambda by 0.02 %. `"phase_separated"` (issue 16): heterochromatin/euchromatin domains of
about `domain` = 100 nm with sharp interfaces, on a box of about 1 um (`length = 0.5` to `1`,
`n` = 96 to 192: a 5.2 nm grid step, see `configs/chromatin_phase.toml`):

- the phi_d equation cannot phase-separate by itself: with `phi_w` fixed its local potential
  is convex, `d local_potential / d phi_d = 0.745 - 2.1 phi_h + 3 phi_h^2 >= 0.3775`, and the
  reaction only damps, so for uniform `phi_w` and `lambda` the steady state is uniform. The
  demixing is that of chromatin and nucleoplasm: `phi_w` is `microphase`, a labyrinth of
  nucleoplasm channels (`phi_w` about 0.64) and dense chromatin (about 0.26) from a seeded
  random start (`pattern_seed`) relaxed by an Ohta-Kawasaki stand-in whose turnover sets
  the domain size (`(e^2 / r)^(1/4)`, proportional to `domain`);
- `phi_d` then solves the same equation as above, to a true steady state: it follows the
  pattern within `kappa / sqrt(0.4-0.75)` = 35-50 nm, giving heterochromatin domains in the
  dense chromatin (`phi_h` about 0.47, `phi_e` 0.26) and euchromatin-dominated chromatin in
  the channels (`phi_h` about 0.19, `phi_e` 0.18). Measured on the 0.5 um, 96-node state
  (`refine = 2`): `phi_h` bimodal (72 % of the nodes in the outer fifths of its range, 8 % in
  the middle fifth), `domain_size` 0.106 um, interfaces 40 nm (range / largest gradient: 7.8
  grid steps);
- the fourth-order term is half the residual (share 0.4998): `-kappa^2 Laplacian^2(phi_d)`
  cancels `Laplacian(local_potential)` (each about 1.8e4 in L2 norm), while the reaction
  term, the only one with lambda, is about 16, 1/1000 of them. Dropping the kappa^2 term
  makes the pointwise lambda wrong by 30 000 % (relative L2; 0.16 % with it).
  The same ratio makes lambda ill-conditioned: any error of the fourth derivatives is
  multiplied by about 1000. Exact (spectral) derivatives of the clean fields recover it to
  0.2 % when the fields resolve the interfaces (5.2 nm step; 7 % at 7.8 nm, 44 % at 10.4 nm,
  each read out from a steady state on a grid twice finer), a mollifier does not (eps =
  "auto": 180 %), and noise of any useful level ruins it.

**A nucleus in a microscope image** (`nucleus`, issue 16). A field of view of `n x n` pixels
of size `pixel` (micrometres) holding one nucleus, an ellipse with a smooth irregular outline
(`nucleus_mask`, seeded); inside it the channels show the chromatin fields, outside only
background; the optics blur the scene and the camera counts photons (`nucleus_image`). The
state underneath is the smooth regime's periodic steady state on the field of view, so it
satisfies the equation with the true `lambda` everywhere, in particular inside the nucleus;
only the nucleus is observed, and a fit on the returned dataset (its `domain` is the nucleus)
reads residuals only on the band inside it. `write_tiffs` stores the images as ImageJ TIFF
files with the pixel size, as a microscope's software would, and
`configs/chromatin_nucleus*.toml` read them back with `[data] source = "file"`.

The relaxation converges in 40-300 steps in both regimes (1.6 s and 6.4 s for the steady
states of the small and full phase configs, on one core). For sharp states the residual's
round-off floor is above `tol` (the terms it cancels are hundreds): `relax` stops relative to
`residual_scale` or when the residual no longer falls.
"""

from __future__ import annotations

import os
import pathlib
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
    "tol": 1e-11,  # stop relaxing when max |steady residual| < tol (relative, see `relax`)
    "max_steps": 20000,
    "regime": "smooth",  # "smooth" (phi_w a few smooth modes) or "phase_separated" (domains)
    "domain": 0.1,  # phase_separated: target domain size (half the pattern's period), um
    "pattern_seed": 0,  # phase_separated: seed of the random start of the domain pattern
}
UNKNOWNS = {"lam": {"axes": ("x", "y"), "constraint": "positive", "init": 1.0}}
STATE = ("phi_w", "phi_d")
TRUTHS = ("constant", "smooth", "lognormal")
REGIMES = ("smooth", "phase_separated")
# the phase-separation stand-in for phi_w (`microphase`): interface parameter and turnover
# rate in units of the domain size (calibrated once so that `domain_size` of phi_h is close
# to `domain`; see `microphase`)
PATTERN_EPS = 1 / 9.5
PATTERN_RATE = 0.01


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


def microphase(
    n: int, length: float, domain: float, seed: int, steps: int = 200
) -> Float[np.ndarray, "n n"]:
    """A phase-separated `phi_w = 0.45 + 0.2 psi`: nucleoplasm channels and chromatin domains.

    `psi` (about -1 in chromatin, +1 in nucleoplasm) relaxes from a seeded random start
    (`0.05` times white noise, mean 0) by the Ohta-Kawasaki equation

        d psi / dt = Laplacian(psi^3 - psi - e^2 Laplacian(psi)) - r psi,
        e = domain / 9.5,     r = 0.01 / e^2,

    a Cahn-Hilliard demixing whose turnover `r` arrests coarsening at a domain size set by
    `(e^2 / r)^(1/4)`: a labyrinth of domains of about `domain` (half the period; `e` and `r`
    were calibrated once so that `domain_size` of the steady `phi_h` is close to `domain`)
    with tanh interfaces of width `3.1 e` (10-90 %). The scheme is the semi-implicit Fourier
    step of `relax` (`e^2 |k|^4 + 2 |k|^2 + r` implicit) with `dt = 100 e^2`, run for `steps`
    steps: the pattern is then near-stationary but not a round-off steady state, which it
    need not be (`phi_w` is prescribed and observed; only `phi_d` solves the model).

    **Arguments:** `n` nodes per axis of the periodic grid on `[0, length)^2`; `domain` in
    length units; `seed` of the random start.

    **Returns:** `phi_w` of shape `(n, n)`, within about `[0.25, 0.65]` like `nucleoplasm`.
    """
    e = PATTERN_EPS * domain
    rate, dt, a = PATTERN_RATE / e**2, 100 * e**2, 2.0
    k2 = np.fft.fftfreq(n, d=length / n)[:, None] ** 2 + np.fft.rfftfreq(n, d=length / n) ** 2
    k2 = (2 * np.pi) ** 2 * k2
    denominator = 1 + dt * (e**2 * k2**2 + a * k2 + rate)
    psi = 0.05 * np.random.default_rng(seed).standard_normal((n, n))
    for _ in range(steps):
        explicit = np.fft.rfft2(psi**3 - (1 + a) * psi)
        psi = np.fft.irfft2((np.fft.rfft2(psi) - dt * k2 * explicit) / denominator, s=(n, n))
    return 0.45 + 0.2 * psi


def domain_size(f: Float[np.ndarray, "n n"], length: float) -> float:
    """The domain size of a periodic pattern: `pi / <|k|>`, `<.>` weighted by `|f_hat(k)|^2`.

    Half the mean period: for stripes `f = sin(k x)` it is `pi / k`, the stripe width.
    """
    power = np.abs(np.fft.fft2(f - f.mean())) ** 2
    return float(np.pi * power.sum() / (np.sqrt(wavenumbers(f.shape[0], length)) * power).sum())


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


def residual_terms(
    phi_w: Float[np.ndarray, "n n"],
    phi_d: Float[np.ndarray, "n n"],
    lam: Float[np.ndarray, "n n"],
    length: float,
) -> dict[str, Float[np.ndarray, "n n"]]:
    """The three terms of the steady residual, spectrally: they sum to `steady_residual`.

    `"local"`: `Laplacian(local_potential)`; `"fourth_order"`: `-kappa^2 Laplacian^2(phi_d)`;
    `"reaction"`: `2 (lambda phi_e - phi_h)`, the only term with `lambda`.
    """
    phi_h, phi_e = fractions(phi_w, phi_d)
    return {
        "local": spectral_laplacian(local_potential(phi_w, phi_d), length),
        "fourth_order": -(KAPPA**2) * spectral_laplacian(spectral_laplacian(phi_d, length), length),
        "reaction": 2 * (lam * phi_e - phi_h),
    }


def residual_scale(phi_d: Float[np.ndarray, "n n"], length: float) -> float:
    """`max(1, max |kappa^2 Laplacian^2(phi_d)|)`: the size of the residual's largest terms.

    The steady residual cancels terms of this size, so its round-off floor is proportional
    to it (about 1 for smooth states, hundreds for sharp interfaces).
    """
    fourth = KAPPA**2 * spectral_laplacian(spectral_laplacian(phi_d, length), length)
    return max(1.0, float(np.abs(fourth).max()))


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
    iteration a contraction for any `dt`. A fixed point is a steady state. It stops when
    `max |steady_residual| < tol * residual_scale(phi_d)`: `tol` itself for smooth states,
    relative to the cancelling terms for sharp ones (whose round-off floor is above `1e-11`),
    or when the residual has not fallen for 100 steps (its round-off floor: on a fine grid
    that resolves sharp interfaces the floor grows as `kappa^2 |k_max|^4`).

    **Returns:** `(phi_d, max |steady_residual|, steps)`.
    """
    n = phi_w.shape[0]
    k2 = wavenumbers(n, length)
    a, c = 0.75, 1.0 + float(lam.max())
    denominator = 1 + dt * (KAPPA**2 * k2**2 + a * k2 + c)
    # start from the uniform steady state of each node
    phi = (lam - 1) / (lam + 1) * (1 - phi_w)
    worst = best = np.inf
    stalled = 0
    for step in range(1, max_steps + 1):
        phi_h, phi_e = fractions(phi_w, phi)
        explicit = np.fft.fft2(local_potential(phi_w, phi) - a * phi)
        reaction = np.fft.fft2(2 * (lam * phi_e - phi_h) + c * phi)
        phi = np.real(
            np.fft.ifft2((np.fft.fft2(phi) + dt * (-k2 * explicit + reaction)) / denominator)
        )
        if step % 20 == 0:
            worst = float(np.abs(steady_residual(phi_w, phi, lam, length)).max())
            if worst < tol * residual_scale(phi, length):
                return phi, worst, step
            # at the round-off floor the residual stops falling: 5 checks without a new
            # best end the iteration (the caller judges the residual)
            stalled = 0 if worst < best else stalled + 1
            best = min(best, worst)
            if stalled == 5:
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

    `regime` picks `phi_w`: `"smooth"` is `nucleoplasm`, `"phase_separated"` the domain
    pattern `microphase(n, length, domain, pattern_seed)` drawn on the output grid (and
    interpolated spectrally when `refine` > 1). The other defaults are the smooth regime's:
    a phase-separated state needs `length` of about 1 (um) and `n` of 100-200 (see the module
    docstring), and `domain` is refused unless the grid resolves it.

    **Returns:** a `mj.Dataset` with `truth["lam"]` of shape `(n, n)`.
    """
    p = resolve_params("chromatin", DEFAULTS, params)
    if p["regime"] not in REGIMES:
        raise ProblemSpecError(
            f"chromatin parameter `regime` must be one of {REGIMES}, got {p['regime']!r}."
        )
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
    domain = float(p["domain"])
    if p["regime"] == "phase_separated" and not 7 * length / n <= domain <= length / 4:
        # 7 grid steps per domain put 2 on the interface parameter e = domain / 9.5, about 3
        # on the interface; 4 domains per box are 2 periods of the pattern
        raise ProblemSpecError(
            f"chromatin parameter `domain` must be between 7 grid steps ({7 * length / n:.3g}) "
            f"and a quarter of `length` ({length / 4:.3g}) for resolved interfaces and at "
            f"least two periods in the box, got domain={domain} (n={n}, length={length})."
        )
    fine = mj.Grid.from_bounds((n * refine,) * 2, 0.0, length, periodic=True, axes=("x", "y"))
    xf, yf = fine.mesh()
    # the log-normal truth is drawn on the output grid and interpolated spectrally (exactly
    # band-limited), so the same `field_seed` gives the same truth at every `refine`
    grid = mj.Grid.from_bounds((n, n), 0.0, length, periodic=True, axes=("x", "y"))
    x, y = grid.mesh()
    lam = truth_lambda(x, y, p)
    lam_fine = lam if refine == 1 else fourier_upsample(lam, refine)
    if p["regime"] == "smooth":
        phi_w_fine = nucleoplasm(xf, yf, length)
    else:
        phi_w = microphase(n, length, domain, int(p["pattern_seed"]))
        phi_w_fine = phi_w if refine == 1 else fourier_upsample(phi_w, refine)
    phi_d_fine, worst, steps = relax(
        phi_w_fine, lam_fine, length, float(p["tol"]), int(p["max_steps"])
    )
    scale = residual_scale(phi_d_fine, length)
    if worst > 1e3 * float(p["tol"]) * scale:
        raise ProblemSpecError(
            f"chromatin: relaxation did not reach a steady state in `max_steps`={steps} steps "
            f"(max residual {worst:.2e}, `tol` {p['tol']} times the residual scale {scale:.3g})."
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
        params={**p, "relax_steps": steps, "relax_residual": worst, "relax_scale": scale},
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


# ------------------------------------------------------------- a nucleus in a microscope image

NUCLEUS_DEFAULTS: dict[str, object] = {
    "n": 128,  # pixels per side of the field of view
    "pixel": 0.1,  # pixel size, um (the field of view is n * pixel wide)
    "major": 5.0,  # the nucleus' semi-axes, um, before the outline's roughness
    "minor": 4.0,
    "roughness": 0.05,  # relative amplitude of the outline's modes 2-6 (0: an ellipse)
    "shape_seed": 0,  # seed of the outline and its orientation (the noise uses `seed`)
    "psf_sigma": 0.1,  # Gaussian PSF standard deviation, um (a 235 nm FWHM)
    "photons": 1000.0,  # photons at the brightest pixel of each channel
    "read_noise": 2.0,  # Gaussian read noise, standard deviation in photons
    "background": 20.0,  # photons per pixel outside the nucleus (before blur and noise)
    "camera_noise": True,  # False: the expected counts, without Poisson or read noise
    # the true lambda and the steady state (as in `DEFAULTS`)
    **{k: DEFAULTS[k] for k in ("truth", "lam_mean", "lam_amp", "lam_sigma", "correlation",
                                "field_seed", "refine", "tol", "max_steps")},
}
UNIT = "um"  # the length unit written into the TIFF files


def nucleus_mask(
    grid: mj.Grid, major: float, minor: float, roughness: float, seed: int
) -> np.ndarray:
    """A nucleus-shaped boolean mask: a rotated ellipse with a smooth irregular outline.

    In the ellipse's own polar coordinates `(r, theta)` (`r = 1` on the ellipse of semi-axes
    `major`, `minor`, centred in the grid's box and rotated by a seeded angle), the inside is

        r < 1 + sum_{m=2..6} a_m cos(m theta + p_m),     a_m = roughness g_m / m,

    with `g_m` standard normal and `p_m` uniform phases drawn from `seed`: lobes and dents
    that fall off with the mode number, so the outline stays smooth.

    **Returns:** a boolean array of the grid's shape, True inside the nucleus.
    """
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0.0, np.pi)
    modes = np.arange(2, 7)
    amplitude = roughness * rng.standard_normal(modes.size) / modes
    phase = rng.uniform(0.0, 2 * np.pi, modes.size)
    x, y = grid.mesh()
    centre = [o + (n - 1) * h / 2 for o, n, h in zip(grid.origin, grid.shape, grid.spacing,
                                                       strict=True)]
    dx, dy = x - centre[0], y - centre[1]
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    theta = np.arctan2(v / minor, u / major)
    outline = 1 + (amplitude[:, None, None] * np.cos(modes[:, None, None] * theta
                                                     + phase[:, None, None])).sum(axis=0)
    return np.hypot(u / major, v / minor) < outline


def nucleus_image(
    f: Float[np.ndarray, "n n"],
    inside: np.ndarray,
    psf_sigma: float,
    photons: float,
    read_noise: float,
    background: float,
    length: float,
    rng: np.random.Generator | None,
) -> tuple[Float[np.ndarray, "n n"], tuple[float, float]]:
    """A microscope's image of the field `f` shown only `inside` the nucleus, calibrated.

    The channel's brightness is affine in `f`: with `lo, hi` the range of `f` inside the
    nucleus, a pixel there emits `photons (f - lo) / (hi - lo)` photons and a pixel outside
    `background`. The scene is blurred by the Gaussian PSF (periodic over the field of view,
    whose edges hold only background), the camera counts Poisson photons and adds Gaussian
    read noise of standard deviation `read_noise` photons, and the counts are calibrated back
    to `f`'s units, `lo + counts (hi - lo) / photons` (what a user does with a known
    calibration; the nonlinear residual needs the fields' own units). `rng = None` skips
    the noise: the image of the expected counts.

    **Returns:** `(image, (lo, hi))`, the calibrated image of `f`'s shape and the calibration.
    """
    lo, hi = float(f[inside].min()), float(f[inside].max())
    expected = np.where(inside, photons * (f - lo) / (hi - lo), background)
    if psf_sigma > 0:
        expected = np.clip(gaussian_blur(expected, psf_sigma, length), 0.0, None)
    counts = expected
    if rng is not None:
        counts = rng.poisson(expected) + read_noise * rng.standard_normal(f.shape)
    return lo + counts * (hi - lo) / photons, (lo, hi)


def nucleus(*, seed: int = 0, **params) -> mj.Dataset:
    """A nucleus in a microscope's field of view: what the chromatin model looks like on a
    camera, with the true `lambda` known.

    Parameters are those of `NUCLEUS_DEFAULTS` (lengths in micrometres). The state is
    `simulate`'s smooth-regime steady state on the periodic square of side `n * pixel` (it
    satisfies the equation with the true `lambda` at every node, `relax_residual` in
    `params`); the nucleus is `nucleus_mask(grid, major, minor, roughness, shape_seed)`;
    each channel (`phi_w`, `phi_d`) is imaged by `nucleus_image`: the fields inside the
    nucleus, `background` outside, blurred by the PSF, Poisson and read noise drawn from
    `seed` (unless `camera_noise` is False), calibrated back to volume fractions.

    **Returns:** a `mj.Dataset` on the non-periodic grid of the field of view (axes
    `("x", "y")`, spacing `pixel`; a field of view has no periodic wrap) with `domain` the
    nucleus, `data` the calibrated images, `clean` the steady fields on the whole field of
    view, `truth["lam"]` of shape `(n, n)` and `params` with the calibrations `(lo, hi)`
    per channel.
    """
    p = resolve_params("chromatin (nucleus)", NUCLEUS_DEFAULTS, params)
    n, pixel = int(p["n"]), float(p["pixel"])
    major, minor, roughness = float(p["major"]), float(p["minor"]), float(p["roughness"])
    if n < 16 or pixel <= 0:
        raise ProblemSpecError(
            f"chromatin nucleus needs `n` >= 16 pixels and `pixel` > 0, got n={n}, "
            f"pixel={pixel}."
        )
    if major <= 0 or minor <= 0 or not 0 <= roughness <= 0.3:
        raise ProblemSpecError(
            f"chromatin nucleus needs semi-axes `major`, `minor` > 0 and 0 <= `roughness` <= "
            f"0.3, got major={major}, minor={minor}, roughness={roughness}."
        )
    if float(p["photons"]) <= 0:
        raise ProblemSpecError(
            f"chromatin nucleus needs `photons` > 0 (the brightness scale; `camera_noise` = "
            f"false turns the noise off), got {p['photons']}."
        )
    for key in ("psf_sigma", "read_noise", "background"):
        if float(p[key]) < 0:
            raise ProblemSpecError(f"chromatin nucleus needs `{key}` >= 0, got {p[key]}.")
    length = n * pixel
    # the outline's radius is at most (1 + sum |a_m|) <= 1 + 1.3 roughness times the semi-axis
    # (5 sigma of the modes); with 4 PSF widths of background around it the blur of the
    # nucleus never wraps around the periodic field of view
    reach = max(major, minor) * (1 + 1.3 * roughness) + 4 * float(p["psf_sigma"])
    if 2 * reach > length:
        raise ProblemSpecError(
            f"chromatin nucleus: the nucleus (semi-axes `major`={major}, `minor`={minor}, "
            f"`roughness`={roughness}, with 4 `psf_sigma` of background) needs a field of view "
            f"of {2 * reach:.3g} um, but `n` * `pixel` = {length:.3g} um; raise `n` or "
            f"`pixel`, or shrink the nucleus."
        )
    state = simulate(
        n=n, length=length, **{k: p[k] for k in ("truth", "lam_mean", "lam_amp", "lam_sigma",
                                                  "correlation", "field_seed", "refine", "tol",
                                                  "max_steps")}
    )
    grid = mj.Grid((n, n), (pixel, pixel), (0.0, 0.0), ("x", "y"))
    inside = nucleus_mask(grid, major, minor, roughness, int(p["shape_seed"]))
    rng = np.random.default_rng(seed) if p["camera_noise"] else None
    data, calibration = {}, {}
    for name in STATE:
        data[name], calibration[name] = nucleus_image(
            state.clean[name], inside, float(p["psf_sigma"]), float(p["photons"]),
            float(p["read_noise"]), float(p["background"]), length, rng,
        )
    params_out = {**p, "seed": seed, "unit": UNIT, "calibration": calibration}
    params_out.update({k: state.params[k] for k in ("relax_steps", "relax_residual",
                                                      "relax_scale")})
    return mj.Dataset(grid, data=data, clean=state.clean, truth=state.truth, params=params_out,
                      domain=inside)


def write_tiffs(dataset: mj.Dataset, folder: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Write a nucleus dataset as ImageJ TIFF files with the pixel size, one per image.

    `phi_w.tif` and `phi_d.tif` (the calibrated images, float32), `nucleus.tif` (the mask,
    uint8 0/1) and `lam_truth.tif` (the true `lambda`, float32; a user's own data have none)
    go into `folder` (created). Rows are the grid's `x` axis, columns `y` (so a configuration
    names the axes `["x", "y"]`); the resolution tags hold `1 / pixel` pixels per micrometre
    and the ImageJ metadata the unit, which `mollijax.io.read_tiff` (and `[data] source =
    "file"`, when `spacing` is not given) reads back as the grid's spacing. Needs tifffile.

    **Returns:** `{"phi_w": path, "phi_d": path, "domain": path, "lam": path}`.
    """
    import tifffile

    if dataset.domain is None:
        raise ProblemSpecError(
            "write_tiffs needs a dataset with a `domain` (the nucleus), as `nucleus` returns."
        )
    hx, hy = dataset.grid.spacing
    if dataset.grid.ndim != 2 or hx != hy:
        raise ProblemSpecError(
            f"write_tiffs needs a 2-D grid of square pixels, got shape {dataset.grid.shape} "
            f"and spacing {dataset.grid.spacing}."
        )
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "phi_w": ("phi_w.tif", np.asarray(dataset.data["phi_w"], np.float32)),
        "phi_d": ("phi_d.tif", np.asarray(dataset.data["phi_d"], np.float32)),
        "domain": ("nucleus.tif", np.asarray(dataset.domain, np.uint8)),
        "lam": ("lam_truth.tif", np.asarray(dataset.truth["lam"], np.float32)),
    }
    out = {}
    for key, (name, array) in images.items():
        path = folder / name
        tifffile.imwrite(path, array, imagej=True, resolution=(1 / hx, 1 / hx),
                         metadata={"unit": UNIT, "axes": "YX"})
        out[key] = path
    return out
