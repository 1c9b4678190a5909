"""PNG figures of a run: recovered unknowns against their truth, and the loss curves.

Draws on standalone matplotlib figures (no display, no pyplot state). 1-D unknowns are line
plots (truth, recovery, and their difference); 2-D unknowns are images (truth, recovery, error
map) with the first axis to the right and the second up, each with a colour bar. Loss curves
use a log axis only for terms whose values are all positive.
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


def unknown_figure(
    name: str, axes: tuple[str, ...], grid: Grid, estimate: np.ndarray,
    truth: np.ndarray | None,
):
    """The figure of one unknown (None for a 0-d one).

    1-D: the recovery and the truth against the axis, their difference below (the recovery
    alone without a truth). 2-D: images
    in one orientation everywhere (and as the notebooks draw them): the unknown's first axis
    to the right, its second axis up, origin at the lower left (`imshow(values.T,
    origin="lower")`), truth and recovery on one colour scale, the error on a symmetric one,
    each with a colour bar.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    if estimate.ndim not in (1, 2):
        return None
    coords = [np.asarray(grid.coords(a)) for a in axes]
    if estimate.ndim == 1:
        # without a truth one panel (no empty difference panel below)
        fig = _figure(figsize=(6, 5) if truth is not None else (6, 3))
        if truth is not None:
            top, bottom = fig.subplots(2, 1, sharex=True)
            top.plot(coords[0], truth, "k-", label="truth")
            bottom.plot(coords[0], estimate - truth, "r-")
            bottom.set_ylabel("recovered - truth")
        else:
            top = bottom = fig.subplots(1, 1)
        top.plot(coords[0], estimate, "C0--", label="recovered")
        top.set_ylabel(name)
        top.legend()
        bottom.set_xlabel(axes[0])
        return fig
    panels = [("recovered", estimate)]
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        panels = [("truth", truth), *panels, ("error", estimate - truth)]
    fig = _figure(figsize=(4.2 * len(panels), 3.6))
    ax = fig.subplots(1, len(panels), squeeze=False)
    extent = [coords[0][0], coords[0][-1], coords[1][0], coords[1][-1]]
    shared = np.concatenate([p.ravel() for t, p in panels if t != "error"])
    shared = shared[np.isfinite(shared)]
    lo, hi = (float(shared.min()), float(shared.max())) if shared.size else (0.0, 1.0)
    for a, (title, values) in zip(ax[0], panels, strict=True):
        finite = np.abs(values[np.isfinite(values)])
        big = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        kw = ({"vmin": lo, "vmax": hi} if title != "error"
              else {"cmap": "RdBu_r", "vmin": -big, "vmax": big})
        # values[i, j] sits at (x_i, y_j): transposed so that x runs right and y up
        im = a.imshow(values.T, origin="lower", extent=extent, aspect="auto", **kw)
        a.set_title(f"{name}: {title}")
        a.set_xlabel(axes[0])
        a.set_ylabel(axes[1])
        fig.colorbar(im, ax=a)
    return fig


def plot_unknown(
    name: str, axes: tuple[str, ...], grid: Grid, estimate: np.ndarray,
    truth: np.ndarray | None, path: str | os.PathLike,
) -> pathlib.Path | None:
    """Write one figure of `estimate` (and `truth`, error) on its sub-grid; None for 0-d."""
    fig = unknown_figure(name, axes, grid, estimate, truth)
    if fig is None:
        return None
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def split_terms(history: Mapping[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """`(log, linear, notes)`: the terms whose finite values are all > 0 (drawn on a log
    axis), the others (a zero, negative or sign-changing term: drawn on a linear axis), and
    `{term: why}` for what the figure marks (non-finite steps left out, a term that is zero
    throughout, one with no finite value)."""
    log, linear, notes = {}, {}, {}
    for name, values in sorted(history.items()):
        values = np.asarray(values, dtype=np.float64).ravel()
        if not values.size:
            continue
        finite = np.isfinite(values)
        bad = int((~finite).sum())
        if not finite.any():
            notes[name] = f"no finite value in {values.size} steps: not drawn"
            continue
        if bad:
            notes[name] = f"{bad} non-finite step(s) not drawn"
        kept = np.where(finite, values, np.nan)
        if np.all(values[finite] > 0):
            log[name] = kept
        else:
            if np.all(values[finite] == 0):
                notes[name] = "zero throughout" + (f"; {notes[name]}" if name in notes else "")
            linear[name] = kept
    return log, linear, notes


def loss_figure(history: Mapping[str, np.ndarray]):
    """Every loss term (and the weighted total) against the step: terms with only positive
    values on a log axis; a term that is zero, negative or changes sign on a linear axis
    below (a log axis cannot show it, and clamping it would stretch the scale over hundreds
    of decades); non-finite steps are gaps, counted in the legend."""
    log, linear, notes = split_terms(history)
    panels = [("log", log), ("linear", linear)]
    panels = [(kind, terms) for kind, terms in panels if terms] or [("log", {})]
    fig = _figure(figsize=(6, 4 if len(panels) == 1 else 6))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (kind, terms) in zip(axes, panels, strict=True):
        for name, values in terms.items():
            label = f"{name} ({notes[name]})" if name in notes else name
            ax.plot(np.arange(1, values.size + 1), values, label=label,
                    lw=2 if name == "total" else 1)
        if kind == "log":
            ax.set_yscale("log")
            ax.set_ylabel("loss")
        else:
            ax.set_ylabel("loss (terms not > 0)")
        if terms:
            ax.legend(fontsize=8)
    missing = [f"{n}: {why}" for n, why in notes.items() if n not in log and n not in linear]
    if missing:
        axes[0].set_title("; ".join(missing), fontsize=8)
    axes[-1].set_xlabel("step")
    return fig


def plot_losses(history: Mapping[str, np.ndarray], path: str | os.PathLike) -> pathlib.Path:
    """Write `loss_figure(history)` to `path`."""
    fig = loss_figure(history)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path
