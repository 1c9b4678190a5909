"""Parsing of derivative multi-indices: `(2, 0)`, `"xx"`, `"xxt"`."""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import DerivativeOrderError
from ._grid import Grid

MultiIndexLike = str | Sequence[int]


def parse_multi_index(alpha: MultiIndexLike, grid: Grid) -> tuple[int, ...]:
    """Turn a derivative spec into a tuple of per-axis orders.

    `alpha` is a tuple of non-negative integers, one per grid axis, or a string of axis
    names (`"xxy"` is `d^3/dx^2 dy` on a grid with axes `("x", "y")`; `""` is the mollified
    field itself).
    """
    if isinstance(alpha, str):
        orders = [0] * grid.ndim
        for letter in alpha:
            if letter not in grid.axes:
                raise DerivativeOrderError(
                    f"Unknown derivative {alpha!r}: axis {letter!r} is not one of the grid's "
                    f"axes {grid.axes}."
                )
            orders[grid.axes.index(letter)] += 1
        return tuple(orders)
    try:
        orders = tuple(int(a) for a in alpha)
    except (TypeError, ValueError):
        raise DerivativeOrderError(
            f"A derivative multi-index must be a string of axis names or a tuple of "
            f"{grid.ndim} integers, got {alpha!r}."
        ) from None
    if len(orders) != grid.ndim or any(o != a for o, a in zip(orders, alpha, strict=True)):
        raise DerivativeOrderError(
            f"A derivative multi-index must have one integer per grid axis ({grid.ndim}), "
            f"got {alpha!r}."
        )
    if any(o < 0 for o in orders):
        raise DerivativeOrderError(f"Derivative orders must be >= 0, got {alpha!r}.")
    return orders


def name_of(alpha: tuple[int, ...], grid: Grid) -> str:
    """Inverse of `parse_multi_index` for display: `(2, 1) -> "xxy"`."""
    return "".join(ax * o for ax, o in zip(grid.axes, alpha, strict=True))
