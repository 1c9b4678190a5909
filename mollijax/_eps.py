"""Choosing the kernel width: a noise estimate and a bias-variance rule for `eps`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ._errors import KernelTooWideError, MollijaxError
from ._grid import Grid


def difference_noise(u, inside, min_windows: int = 1) -> float | None:
    """The absolute noise standard deviation of `u` from its 4th differences, or None when
    no axis has `min_windows` windows of 5 neighbours inside the boolean mask `inside`.

    Along each axis with at least 8 nodes, `d = Delta^4 u / sqrt(70)` over the windows
    inside the mask (for white noise of standard deviation `sigma`, `d` has standard
    deviation `sigma`: `1 + 16 + 36 + 16 + 1 = 70`; a smooth field adds `O(h^4 u^(4))`):

        s_med = median |d| / 0.6745                         (robust first guess)
        s_a   = sqrt(mean(d^2 over |d| <= 5 s_med))         (root mean square, trimmed)

    The axes whose `s_a` is within 10 % of the smallest are pooled (mean square weighted by
    their numbers of windows) and the others, where the field itself shows in the
    differences, left out: the smoothest directions are the least contaminated, and pooling
    them avoids the low bias of taking the minimum of equally good estimates (2 % on a
    33 x 33 grid). The root mean square has about half the sampling variance of the median
    (on 101 nodes the median's estimate scatters by about 14 % over noise draws, the root
    mean square's by about 9 %); the trim at five robust standard deviations keeps outliers
    and isolated jumps of the field out of it, and removes a negligible part of Gaussian
    noise (`< 0.1 %` of its variance, even when the first guess is a third low).
    """
    u = np.asarray(u, dtype=np.float64)
    inside = np.asarray(inside, bool)
    estimates = []
    for axis in range(u.ndim):
        n = u.shape[axis]
        if n < 8:
            continue
        d4 = np.diff(np.where(inside, u, 0.0), n=4, axis=axis) / np.sqrt(70.0)
        ok = np.ones(d4.shape, bool)
        for k in range(5):
            ok &= np.take(inside, np.arange(k, n - 4 + k), axis=axis)
        d = d4[ok]
        if d.size < max(min_windows, 1):
            continue
        first = np.median(np.abs(d)) / 0.6745
        kept = d[np.abs(d) <= 5.0 * first]
        estimates.append((float(np.mean(kept**2)) if kept.size else 0.0, d.size))
    if not estimates:
        return None
    low = min(ms for ms, _ in estimates)
    pooled = [(ms, n) for ms, n in estimates if ms <= 1.21 * low]  # s_a within 10 %
    return float(np.sqrt(sum(ms * n for ms, n in pooled) / sum(n for _, n in pooled)))


def estimate_noise(u, grid: Grid | None = None, mask=None) -> float:
    """Relative noise level `sigma / std(u)` of white noise on a smooth field.

    `sigma` is `difference_noise`: along each axis with at least 8 nodes, the trimmed root
    mean square of the normalised 4th differences `Delta^4 u / sqrt(70)` (white noise of
    standard deviation `sigma` gives `sigma`; a smooth field `O(h^4)`), pooled over the
    axes within 10 % of the smoothest. With a boolean `mask` (a domain), only the
    differences of 5 neighbours inside it count, and `std(u)` is over the mask.
    """
    u = np.asarray(u, dtype=np.float64)
    if grid is not None:
        grid.check(u)
    inside = np.ones(u.shape, bool) if mask is None else np.asarray(mask, bool)
    if inside.shape != u.shape:
        raise MollijaxError(f"`mask` has shape {inside.shape}, `u` {u.shape}.")
    if not np.all(np.isfinite(u[inside])):
        raise MollijaxError("`u` contains NaN or inf; cannot estimate its noise level.")
    scale = float(np.std(u[inside])) if inside.any() else 0.0
    if scale == 0.0:
        return 0.0
    sigma = difference_noise(u, inside)
    if sigma is None:
        raise MollijaxError(
            f"`u` of shape {u.shape} is too small to estimate noise (need 8 nodes)."
        )
    return float(sigma / scale)


def suggest_eps(grid: Grid, order: int, noise: float = 0.0) -> float:
    """A kernel half-width `eps` for derivatives of total `order` at relative `noise`.

    Balances the smoothing bias `~ (eps / L)^2` against the noise amplification
    `~ noise * sqrt(prod_a h_a / eps) * (L / eps)^order` for a field that varies on the
    scale of the domain `L` (the shortest axis), which gives

        eps = c_k * L * (noise^2 * prod_a (h_a / L))^(1 / (2 k + 4 + d)),
        c_k = 0.1 + 0.25 k,

    with the constant fitted on fields with about one oscillation per domain (see
    `docs/design.md`). The result is never below the narrowest width that still gives
    accurate taps, `(k // 2 + 3) * max(h)`, nor above a quarter of the shortest axis.
    """
    if order < 0:
        raise MollijaxError(f"`order` must be >= 0, got {order}.")
    if not (np.isfinite(noise) and noise >= 0):
        raise MollijaxError(f"`noise` must be a non-negative number, got {noise!r}.")
    h_max = max(grid.spacing)
    floor = (order // 2 + 3) * h_max
    length = min(n * h for n, h in zip(grid.shape, grid.spacing, strict=True))
    ceiling = max(length / 4, floor)
    if noise == 0.0:
        return float(floor)
    ratio = float(np.prod([h / length for h in grid.spacing]))
    c = 0.1 + 0.25 * order
    eps = c * length * (noise**2 * ratio) ** (1.0 / (2 * order + 4 + grid.ndim))
    return float(min(max(eps, floor), ceiling))


def suggest_widths(grid: Grid, order: int, data, domain=None) -> tuple[float, ...]:
    """Per-axis kernel half-widths from `suggest_eps` and the noise of `data` (a dict of
    observed fields, or one array; with a boolean `domain`, the noise inside it): the rule behind
    `eps = "auto"` in a run configuration.

    `suggest_eps(grid, order, noise)` (noise: the largest `estimate_noise` of the fields)
    gives a width for the shortest axis of length `L`; each axis `a` gets the same fraction
    of its own length `L_a = n_a h_a`, and never fewer than `order // 2 + 3` of its own steps
    `h_a` (which is all it gets when the suggestion sits at `suggest_eps`'s floor, e.g. for
    clean data: that floor is set by the coarsest axis). With a domain, the lengths are those
    of its bounding box: the field varies on the scale of the domain, not of the image.
    """
    if not isinstance(data, Mapping):
        data = {"data": data}  # one array
    noise = max((estimate_noise(v, mask=domain) for v in data.values()), default=0.0)
    if domain is not None:
        grid = _bounding_grid(grid, np.asarray(domain, bool))
    eps = suggest_eps(grid, order, noise)
    floors = [(order // 2 + 3) * h for h in grid.spacing]
    if eps <= max(floors) * (1 + 1e-12):
        return tuple(floors)
    lengths = [n * h for n, h in zip(grid.shape, grid.spacing, strict=True)]
    base = min(lengths)
    return tuple(max(eps * length / base, f) for length, f in zip(lengths, floors, strict=True))



def _bounding_grid(grid: Grid, domain: np.ndarray) -> Grid:
    """A grid with `grid`'s spacing and the shape of the bounding box of `domain`."""
    if domain.shape != grid.shape or not domain.any():
        raise MollijaxError(
            f"`domain` must be a boolean array of the grid's shape {grid.shape} with a node "
            f"inside, got shape {domain.shape} with {int(domain.sum())} nodes inside."
        )
    shape = []
    for axis in range(grid.ndim):
        hit = np.flatnonzero(np.any(domain, axis=tuple(a for a in range(grid.ndim) if a != axis)))
        shape.append(int(hit[-1] - hit[0] + 1))
    hi = tuple(max(n - 1, 1) * h for n, h in zip(shape, grid.spacing, strict=True))
    return Grid.from_bounds(tuple(max(n, 2) for n in shape), (0.0,) * grid.ndim, hi,
                            axes=grid.axes)


class WidthChoice(NamedTuple):
    """What `spectral_widths` chose:

    - `eps`: the half-width of least estimated risk on each axis;
    - `kernel`: the kernel it is for (of those compared, the one of least total relative
      risk);
    - `risk`: the estimated mean square error per node of the derivative along each axis at
      `eps` (in the data's units over length^order, squared; with several fields, the sum
      of each field's risk over its estimated derivative power);
    - `widths`, `risks`: every scanned half-width and its estimated risk, per axis, for
      `kernel`;
    - `sigma`: the absolute noise standard deviation used, per field.
    """

    eps: tuple[float, ...]
    kernel: object
    risk: tuple[float, ...]
    widths: tuple[np.ndarray, ...]
    risks: tuple[np.ndarray, ...]
    sigma: dict


SPECTRAL_GROWTH = 1.1
"""`spectral_widths` scans half-widths from the floor up in steps of this factor."""

SPECTRAL_GAP = 8
"""The estimated signal spectrum ends at the first run of more than this many bins
without signal (`_signal_spectrum`): a bin far above the band is noise far more often than
signal, and at 4th order its weight `w^8` decides the width."""


def _odd_transform(lines: np.ndarray) -> np.ndarray:
    """Bins `k = 1 .. n - 2` of the discrete Fourier transform of each row, extended oddly
    about both ends (period `2 (n - 1)`): `-2 i sum_j v_j sin(pi k j / (n - 1))` over the
    interior nodes, plus real terms of the two end values."""
    n = lines.shape[-1]
    extended = np.concatenate([lines, -lines[..., -2:0:-1]], axis=-1)
    return np.fft.fft(extended, axis=-1)[..., 1:n - 1]


def _signal_spectrum(u: np.ndarray, axis: int, sigma: float, h: float):
    """`(w, S)`: the signal's power per node `S` at the angular frequencies `w = pi k / L`
    (`L = (n - 1) h`, `k = 1 .. n - 2`) along `axis`. Each line along the axis, less the
    straight line through its two end values, is extended oddly about both ends (period
    `2 L`; continuous with its first derivative, so a smooth line's power stays at low
    frequencies) and Fourier transformed: by Parseval `S_k = 2 (|F_k|^2 - f_k) / N^2` with
    `N = 2 (n - 1)` and `f_k` the noise's expected power in bin `k`: white noise of standard
    deviation `sigma` puts `sigma^2 N` in every bin, and the noise of the two end values,
    through the subtracted line, `4 sigma^2 (A_k^2 + B_k^2)` more (`A_k = sum_j (1 - t_j)
    sin(pi k j / (n - 1))`, `B_k` the same with `t_j`; at 401 nodes 160 times the white
    floor in bin 1, falling as `k^-2`: without it, pure noise showed "signal" in its lowest
    bins on most draws). The powers are averaged over the lines along the other axes, and
    soft-thresholded: each bin's power less `(1 + 2 ln M) f_k` (`M = n - 2` frequencies),
    never below zero. A
    bin of noise alone exceeds that threshold with probability about `M^-2` and then by
    little, so that noise is not read as signal at the high frequencies a derivative
    amplifies most (at 4th order a single spurious bin there, kept at full power, made the
    rule choose the narrowest width); a field's own bins lose a noise-sized share. On 401
    nodes even the soft threshold let an occasional noise bin through far above the band
    (one draw in ten at 1 % noise, bin 235 of 399 beside a band below 20), so the spectrum
    is also cut at the first gap of more than `SPECTRAL_GAP` empty bins: a field whose power
    resumes above such a gap is read as band-limited below it."""
    lines = np.moveaxis(u, axis, -1).reshape(-1, u.shape[axis])
    n = lines.shape[1]
    big = 2 * (n - 1)
    t = np.linspace(0.0, 1.0, n)
    lines = lines - (lines[:, :1] + (lines[:, -1:] - lines[:, :1]) * t)
    power = np.mean(np.abs(_odd_transform(lines)) ** 2, axis=0)
    # the noise of the two end values moves the subtracted line: its sine series adds
    # 4 sigma^2 (A_k^2 + B_k^2) to bin k, A_k = sum_j (1 - t_j) sin(pi k j / (n - 1)) and
    # B_k the same with t_j over the interior nodes j (the same transform: -2 i A_k)
    a, b = np.imag(_odd_transform(np.stack([1.0 - t, t]))) / 2.0
    floor = sigma**2 * big * (1.0 + 2.0 * (a**2 + b**2) / (n - 1))
    count = max(power.size, 2)
    threshold = floor * (1.0 + 2.0 * np.log(count))
    signal = 2.0 * np.maximum(power - threshold, 0.0) / big**2
    found = np.flatnonzero(signal > 0)
    if found.size:  # the band ends at the first gap of more than SPECTRAL_GAP empty bins
        gaps = np.flatnonzero(np.diff(found) > SPECTRAL_GAP)
        end = found[gaps[0]] if gaps.size else found[-1]
        signal[end + 1:] = 0.0
    w = np.pi * np.arange(1, n - 1) / ((n - 1) * h)
    return w, signal


def spectral_widths(
    grid: Grid,
    order: int,
    data,
    *,
    kernel=None,
    scheme: str = "corrected",
    sigma=None,
) -> WidthChoice:
    """Per-axis kernel half-widths, and the kernel, that minimise an estimate of the
    derivative's mean square error read from the data's own spectrum (a plug-in rule;
    `suggest_widths` is a rule of thumb for fields that vary on the scale of the domain).

    Along axis `a` (spacing `h`) the mollified derivative of `order` at an interior node is
    `sum_j c_j y_{i+j}` with the taps `c` of `Mollifier(..., kernel, scheme=scheme)`, whose
    response to `exp(i w x)` is `H(w) = sum_j c_j exp(i w j h)`. For data `y = u + noise`
    (white, standard deviation `sigma`) its mean square error per node is

        R(eps) = sum_w |H(w) - (i w)^order|^2 S(w) + sigma^2 sum_j c_j^2,

    `S(w)` the power of `u` per node at frequency `w`. `S` is estimated from the data (the
    power spectrum of each line along the axis, less the straight line through its ends and
    extended oddly, averaged over the other axes, soft-thresholded at a few times the noise
    floor: `_signal_spectrum`); `sigma` from `difference_noise` unless
    given. `R` is scanned over half-widths from `(order // 2 + 3) h` (the floor of accurate
    taps, as in `suggest_eps`) up to a quarter of the axis (and no wider than the axis
    holds) in steps of `SPECTRAL_GROWTH`; the smallest wins. Where several kernels are
    given, each is scanned and the one of least total relative risk (summed over axes, each
    over its estimated derivative power) wins: for 3rd and 4th derivatives of noisy data the
    bump's corrected taps can amplify noise ten times more than `Polynomial(6)`'s, and the
    risk says so. Without noise the bias alone counts and the narrowest width wins (with
    `sigma` estimated from noise-free data, the field's own 4th differences count as noise
    and the width comes out somewhat wider).

    What it assumes, and where it fails (a new user's trial on fields of their own, noted in
    docs/benchmarks.md "Kernel widths from the data's spectrum"): **white** noise (with
    AR(1)-correlated noise, correlation 0.5, `sigma` came out at 0.58 of the truth, the
    excess read as signal, and the width chosen far too narrow, without a warning: give
    `sigma` from the instrument and check `risks`); a field whose character is the same
    across the domain (a boundary layer's high frequencies are averaged over the whole line,
    and the widths come out too narrow for the interior); and the estimated `risk` is
    optimistic where the derivative's power lies below the noise (4th order at 10 % noise:
    a fraction of the true error).

    **Arguments:**

    - `grid`: the `Grid` of the data.
    - `order`: the derivative's order along each axis (an integer >= 0).
    - `data`: one array of the grid's shape, or a dict of them (then each field's risk is
      divided by its estimated derivative power and the sum is minimised).
    - `kernel`: an `AbstractKernel`, or a sequence of them to choose from (default: `Bump()`
      and `Polynomial(6)` up to order 6, `Bump()` and `TruncatedGaussian()` above).
    - `scheme`: as for `Mollifier` (default `"corrected"`).
    - `sigma`: the absolute noise standard deviation (one number, or a dict per field);
      None estimates it.

    **Returns:** a `WidthChoice`; `Mollifier(grid, choice.eps, kernel=choice.kernel)` is the
    chosen operator. A `UserWarning` says when the chosen width's estimated root-mean-square
    error exceeds the derivative's estimated size on an axis: the data do not determine that
    derivative (with several fields, one warning per field of which this holds, naming it).
    """
    from ._kernels import AbstractKernel, Bump, Polynomial, TruncatedGaussian
    from ._taps import half_width

    if not isinstance(grid, Grid):
        raise MollijaxError(f"spectral_widths `grid` must be a mollijax.Grid, got "
                            f"{type(grid).__name__}.")
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
        raise MollijaxError(f"spectral_widths `order` must be an integer >= 0, got {order!r}.")
    order = int(order)
    if kernel is None:
        kernels = (Bump(), Polynomial(6)) if order <= 6 else (Bump(), TruncatedGaussian())
    elif isinstance(kernel, list | tuple):
        kernels = tuple(kernel)
    else:
        kernels = (kernel,)
    bad = [k for k in kernels if not isinstance(k, AbstractKernel)]
    if bad or not kernels:
        raise MollijaxError(f"spectral_widths `kernel` must be an AbstractKernel or a sequence "
                            f"of them, got {kernel!r}.")
    for a, (n, h) in enumerate(zip(grid.shape, grid.spacing, strict=True)):
        if 2 * half_width((order // 2 + 3) * h, h) + 1 > n:
            raise MollijaxError(f"spectral_widths: axis {grid.axes[a]!r} has {n} nodes, too "
                                f"few for a kernel of order {order} ({2 * (order // 2 + 3) + 1}"
                                " needed).")
    if kernel is None:  # the default pair: a kernel that cannot take the order drops out
        kernels = tuple(k for k in kernels if _supports(k, order, grid.spacing[0]))
        if not kernels:
            raise MollijaxError(f"spectral_widths: none of the default kernels has taps of "
                                f"order {order}; pass a `kernel`.")
    values = _checked_fields(grid, data)
    noise = _noise_of(values, sigma, grid)
    spectra = [{k: _signal_spectrum(v, a, float(noise[k]), float(h))
                for k, v in values.items()}
               for a, h in enumerate(grid.spacing)]
    best = None
    for kern in kernels:
        axes = [_scan_axis(kern, scheme, order, float(h), n, spectra[a], noise)
                for a, (n, h) in enumerate(zip(grid.shape, grid.spacing, strict=True))]
        total = sum(sum(ax[4].values()) for ax in axes)
        if best is None or total < best[0]:
            best = (total, kern, axes)
    _, kern, axes = best
    for a, ax in enumerate(axes):
        for name, relative in ax[4].items():  # one warning per field whose derivative is lost
            if relative <= 1.0:
                continue
            which = "" if len(values) == 1 else f" of {name!r}"
            warnings.warn(f"spectral_widths: along axis {grid.axes[a]!r} the estimated error of "
                          f"the order-{order} derivative{which} is {math.sqrt(relative):.3g} times "
                          f"its estimated size (root mean square, {kern!r} at eps={ax[0]:.4g}): "
                          "the data do not determine it at this noise.", UserWarning,
                          stacklevel=2)
    return WidthChoice(tuple(ax[0] for ax in axes), kern, tuple(ax[1] for ax in axes),
                       tuple(ax[2] for ax in axes), tuple(ax[3] for ax in axes),
                       {k: float(s) for k, s in noise.items()})


def _supports(kernel, order: int, h: float) -> bool:
    """Whether `kernel` has taps of derivative `order` (a polynomial kernel's are limited)."""
    from ._differentiators import _cached_mollifier_taps
    from ._errors import DerivativeOrderError

    try:
        _cached_mollifier_taps(kernel, 100.0 * h, h, order, "corrected")
    except (DerivativeOrderError, KernelTooWideError):
        return False
    return True


def _checked_fields(grid: Grid, data) -> dict:
    fields = dict(data) if isinstance(data, Mapping) else {"data": data}
    if not fields:
        raise MollijaxError("spectral_widths `data`: no field given.")
    values = {}
    for name, v in fields.items():
        v = np.asarray(v)
        if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            raise MollijaxError(f"spectral_widths `data[{name!r}]` must hold real numbers, got "
                                f"dtype {v.dtype}.")
        v = v.astype(np.float64)
        if v.shape != grid.shape:
            raise MollijaxError(f"spectral_widths `data[{name!r}]` has shape {v.shape}, the "
                                f"grid {grid.shape}.")
        if not np.all(np.isfinite(v)):
            raise MollijaxError(f"spectral_widths `data[{name!r}]` contains NaN or inf.")
        values[name] = v
    return values


def _noise_of(values: dict, sigma, grid: Grid) -> dict:
    if sigma is None:
        noise = {k: difference_noise(v, np.ones(v.shape, bool)) for k, v in values.items()}
        if any(s is None for s in noise.values()):
            raise MollijaxError(f"spectral_widths: the data of shape {grid.shape} are too "
                                "small to estimate their noise (need 8 nodes on an axis); "
                                "give `sigma`.")
    elif isinstance(sigma, dict):
        if set(sigma) != set(values):
            raise MollijaxError(f"spectral_widths `sigma` names {sorted(sigma)}, `data` "
                                f"{sorted(values)}.")
        noise = dict(sigma)
    else:
        noise = {k: sigma for k in values}
    for k, s in noise.items():
        if not isinstance(s, bool) and np.ndim(s) == 0 and hasattr(s, "dtype") and (
                np.issubdtype(np.asarray(s).dtype, np.number)):
            s = noise[k] = float(np.asarray(s))  # a 0-d NumPy or JAX array
        if isinstance(s, bool) or not (isinstance(s, int | float | np.floating)
                                       and np.isfinite(s) and s >= 0):
            raise MollijaxError(f"spectral_widths `sigma` of {k!r} must be a number >= 0, got "
                                f"{s!r}.")
    return noise


def _scan_axis(kernel, scheme: str, order: int, h: float, n: int, spectra: dict,
               noise: dict) -> tuple:
    """`(eps, risk, widths, risks, {field: relative risk at eps})` of one kernel along one
    axis; a field's relative risk is its risk over its estimated derivative power."""
    from ._differentiators import _cached_mollifier_taps

    floor = (order // 2 + 3) * h
    top = min(n * h / 4.0, ((n - 1) // 2) * h)
    scan = [floor]
    while scan[-1] * SPECTRAL_GROWTH <= max(top, floor):
        scan.append(scan[-1] * SPECTRAL_GROWTH)
    w = next(iter(spectra.values()))[0]
    target = (1j * w) ** order
    scale = {k: float(np.sum(np.abs(target) ** 2 * s)) for k, (_, s) in spectra.items()}
    several = len(spectra) > 1
    curve, kept, per_field = [], [], []
    for e in scan:
        try:
            taps = _cached_mollifier_taps(kernel, float(e), h, int(order), scheme)
        except KernelTooWideError:
            continue  # too few nodes inside the kernel for this order: a wider width
        kept.append(e)
        m = (taps.size - 1) // 2
        response = np.exp(1j * np.outer(w, np.arange(-m, m + 1) * h)) @ taps
        total, fields = 0.0, {}
        for k, (_, s) in spectra.items():
            r = (float(np.sum(np.abs(response - target) ** 2 * s))
                 + float(noise[k]) ** 2 * float(np.sum(taps**2)))
            total += r / scale[k] if several and scale[k] > 0 else r
            fields[k] = r / scale[k] if scale[k] > 0 else r
        curve.append(total)
        per_field.append(fields)
    if not curve:
        raise KernelTooWideError(f"spectral_widths: no width up to {scan[-1]:.6g} gives taps of "
                                 f"order {order} on spacing {h:.6g}; the axis is too short.")
    scan, curve = kept, np.asarray(curve)
    i = int(np.argmin(curve))
    return float(scan[i]), float(curve[i]), np.asarray(scan), curve, per_field[i]
