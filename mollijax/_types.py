"""Shared jaxtyping aliases.

Field values carry no batch axis: one sample lives on one grid, and users `jax.vmap` over
samples. `"*grid"` names the grid's axes in annotations. Inputs may be NumPy or JAX arrays;
outputs are JAX arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jaxtyping import Array, Float, Shaped

FieldLike = Shaped[Array | np.ndarray, "*grid"]
FieldValues = Float[Array, "*grid"]
PointFn = Callable[[Float[Array, " ndim"]], Float[Array, ""]]
Scalar = Float[Array, ""]
