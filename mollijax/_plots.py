"""PNG figures of a run: recovered unknowns against their truth, and the loss curves.

Draws on standalone matplotlib figures (no display, no pyplot state). 1-D unknowns are line plots (truth,
recovery, and their difference); 2-D unknowns are images (truth, recovery, error map).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

import numpy as np

from ._grid import Grid


def _figure(**kwargs):
    """A figure that is not registered with pyplot: drawing files never changes the
    interactive backend (so the CLI can run inside Jupyter with inline plots)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_unknown(
    name: str, axes: tuple[str, ...], grid: Grid, estimate: np.ndarray,
    truth: np.ndarray | None, path: str | os.PathLike,
) -> pathlib.Path | None:
    """Write one figure of `estimate` (and `truth`, error) on its sub-grid; None for 0-d."""
    estimate = np.asarray(estimate)
    if estimate.ndim not in (1, 2):
        return None
    coords = [grid.coords(a) for a in axes]
    if estimate.ndim == 1:
        fig = _figure(figsize=(6, 5))
        top, bottom = fig.subplots(2, 1, sharex=True)
        if truth is not None:
            top.plot(coords[0], truth, "k-", label="truth")
            bottom.plot(coords[0], estimate - truth, "r-")
            bottom.set_ylabel("recovered - truth")
        top.plot(coords[0], estimate, "C0--", label="recovered")
        top.set_ylabel(name)
        top.legend()
        bottom.set_xlabel(axes[0])
    else:
        panels = [("recovered", estimate)]
        if truth is not None:
            panels = [("truth", truth), *panels, ("error", estimate - truth)]
        fig = _figure(figsize=(4.2 * len(panels), 3.6))
        ax = fig.subplots(1, len(panels), squeeze=False)
        extent = [coords[1][0], coords[1][-1], coords[0][0], coords[0][-1]]
        lo = min(float(np.min(p)) for t, p in panels if t != "error")
        hi = max(float(np.max(p)) for t, p in panels if t != "error")
        for a, (title, values) in zip(ax[0], panels, strict=True):
            big = float(np.max(np.abs(values))) or 1.0
            kw = ({"vmin": lo, "vmax": hi} if title != "error"
                  else {"cmap": "RdBu_r", "vmin": -big, "vmax": big})
            im = a.imshow(values, origin="lower", extent=extent, aspect="auto", **kw)
            a.set_title(f"{name}: {title}")
            a.set_xlabel(axes[1])
            a.set_ylabel(axes[0])
            fig.colorbar(im, ax=a)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_losses(history: Mapping[str, np.ndarray], path: str | os.PathLike) -> pathlib.Path:
    """Every loss term (and the weighted total) against the step, on a log scale."""
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, values in sorted(history.items()):
        values = np.asarray(values)
        if values.size and np.all(values >= 0):
            ax.semilogy(np.arange(1, values.size + 1), np.maximum(values, 1e-300), label=name,
                        lw=2 if name == "total" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path
