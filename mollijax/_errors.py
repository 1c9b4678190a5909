"""Named exceptions and warnings.

Every error raised by mollijax names the offending argument, what was expected and what was
received, so that a user can fix the call without reading the source.
"""

from __future__ import annotations


class MollijaxError(ValueError):
    """Base class of every error mollijax raises on bad input."""


class GridMismatchError(MollijaxError):
    """An array does not match the grid it is used with (shape, rank or spacing)."""


class NonUniformGridError(MollijaxError):
    """Coordinates that should be uniformly spaced are not."""


class KernelTooWideError(MollijaxError):
    """A kernel's support covers more points than the grid has (or too few to be accurate)."""


class DerivativeOrderError(MollijaxError):
    """An unknown, negative or unsupported derivative multi-index."""


class NonFiniteError(MollijaxError):
    """NaN or inf in an input array."""


class DTypeError(MollijaxError):
    """An array has a dtype the operation cannot use (integer, complex, ...)."""


class PrecisionWarning(UserWarning):
    """The requested derivative is likely swamped by floating-point round-off in this dtype."""


def describe(x) -> str:
    """Short description of an array-like for error messages: shape and dtype."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None:
        return f"{type(x).__name__}"
    return f"array of shape {tuple(shape)} and dtype {dtype}"
