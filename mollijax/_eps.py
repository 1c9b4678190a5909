"""Choosing the kernel width: a noise estimate and a bias-variance rule for `eps`."""

from __future__ import annotations

import numpy as np

from ._errors import MollijaxError
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
    observed fields; with a boolean `domain`, the noise inside it): the rule behind
    `eps = "auto"` in a run configuration.

    `suggest_eps(grid, order, noise)` (noise: the largest `estimate_noise` of the fields)
    gives a width for the shortest axis of length `L`; each axis `a` gets the same fraction
    of its own length `L_a = n_a h_a`, and never fewer than `order // 2 + 3` of its own steps
    `h_a` (which is all it gets when the suggestion sits at `suggest_eps`'s floor, e.g. for
    clean data: that floor is set by the coarsest axis). With a domain, the lengths are those
    of its bounding box: the field varies on the scale of the domain, not of the image.
    """
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
