"""Derivative methods behind one interface: mollified, finite-difference, spectral, autodiff.

Each differentiator is an immutable, hashable `equinox.Module` bound to a `Grid`. Call it as
`D(u, alpha)` for one derivative or `D.derivatives(u, alphas)` for several, where `u` is either
an array of the grid's shape or a function `f(x) -> scalar` of one point `x` of shape
`(ndim,)`. Grid-based methods evaluate a function on the grid first; `Autodiff` and `Taylor`
differentiate the function itself and evaluate the derivative at the nodes.
"""

from __future__ import annotations

import abc
import functools
import warnings
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import jet
from jaxtyping import Array, Float

from ._conv import canonical_boundary, separable_apply, separable_combination
from ._errors import (
    DerivativeOrderError,
    DTypeError,
    GridMismatchError,
    KernelTooWideError,
    MollijaxError,
    NonFiniteError,
    PrecisionWarning,
    describe,
)
from ._grid import Grid
from ._kernels import AbstractKernel, Bump
from ._multiindex import MultiIndexLike, parse_multi_index
from ._taps import SCHEMES, central_difference_taps, half_width, mollifier_taps
from ._types import FieldLike, FieldValues, PointFn

# Outputs of tap-based methods have the grid's shape, or the interior shape on 'valid' axes,
# so they get their own axis name in annotations (tying them to the input's "*grid" would
# reject every 'valid' result under runtime type checking).
OutputValues = Float[Array, "*output"]
GradientValues = Float[Array, "ndim *output"]

# Relative round-off level above which a PrecisionWarning is raised.
_PRECISION_TOLERANCE = 1e-2


def evaluate(fn: PointFn, grid: Grid) -> FieldValues:
    """Evaluate a point function `fn(x) -> scalar`, `x` of shape `(ndim,)`, at every node."""
    values = jax.vmap(fn)(grid.points())
    if values.shape != (grid.size,):
        raise MollijaxError(
            f"A field function must map one point of shape ({grid.ndim},) to a scalar; "
            f"over the grid it returned shape {values.shape}."
        )
    return values.reshape(grid.shape)


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_values(u, grid: Grid, name: str = "u") -> jax.Array:
    """Validate field values against `grid`: rank, shape, floating dtype, finiteness.

    The finiteness check runs only on concrete arrays (not inside `jit`), where it costs one
    pass over the data.
    """
    if not hasattr(u, "shape"):
        u = np.asarray(u)
    if len(u.shape) != grid.ndim:
        raise GridMismatchError(
            f"`{name}` must be a {grid.ndim}-D array of shape {grid.shape}, got {describe(u)}."
        )
    grid.check(u, name)
    if not jnp.issubdtype(u.dtype, jnp.floating):
        raise DTypeError(
            f"`{name}` must have a real floating dtype (float32 or float64), got {u.dtype}."
        )
    if not _is_tracer(u):
        host = np.asarray(u)
        if not np.all(np.isfinite(host)):
            bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
            raise NonFiniteError(
                f"`{name}` contains {bad} NaN or inf value(s) out of {host.size}; mask or "
                "fill them before differentiating."
            )
    return jnp.asarray(u)


class AbstractDifferentiator(eqx.Module):
    """A method that maps a field on a grid to its partial derivatives on the same grid."""

    grid: eqx.AbstractVar[Grid]

    @abc.abstractmethod
    def derivatives(
        self, u: FieldLike | PointFn, alphas: Sequence[MultiIndexLike]
    ) -> tuple[OutputValues, ...]:
        """All derivatives `D^alpha u` for `alpha` in `alphas`, sharing work where possible."""

    def __call__(self, u: FieldLike | PointFn, alpha: MultiIndexLike) -> OutputValues:
        """One derivative `D^alpha u` (`alpha` a tuple of orders or a string such as "xx")."""
        return self.derivatives(u, (alpha,))[0]

    def combination(
        self, u: FieldLike | PointFn, terms: Sequence[tuple[float, MultiIndexLike]]
    ) -> OutputValues:
        """`sum_k c_k D^{alpha_k} u` for `terms = ((c_0, alpha_0), ...)`.

        Equal to the coefficient-weighted sum of `derivatives(u, alphas)`; tap-based methods
        on the FFT path compute it with one inverse transform (the symbols are summed).
        """
        if not terms:
            raise MollijaxError("`terms` must hold at least one (coefficient, alpha) pair.")
        values = self.derivatives(u, [alpha for _, alpha in terms])
        return sum(c * v for (c, _), v in zip(terms, values, strict=True))

    # -------------------------------------------------------- common compound operators
    def gradient(self, u: FieldLike | PointFn) -> GradientValues:
        """`(d u / d x_0, ..., d u / d x_{d-1})` stacked on a leading axis."""
        alphas = [tuple(int(a == b) for b in range(self.grid.ndim)) for a in range(self.grid.ndim)]
        return jnp.stack(self.derivatives(u, alphas))

    def laplacian(self, u: FieldLike | PointFn) -> OutputValues:
        """`sum_a d^2 u / d x_a^2`."""
        alphas = [tuple(2 * int(a == b) for b in range(self.grid.ndim)) for a in range(self.grid.ndim)]
        return self.combination(u, [(1.0, alpha) for alpha in alphas])

    def biharmonic(self, u: FieldLike | PointFn) -> OutputValues:
        """`Laplacian(Laplacian(u)) = sum_{a,b} d^4 u / d x_a^2 d x_b^2`."""
        d = self.grid.ndim
        alphas = []
        for a in range(d):
            for b in range(d):
                alphas.append(tuple(2 * int(c == a) + 2 * int(c == b) for c in range(d)))
        # the mixed terms d^4/dx_a^2 dx_b^2 (a != b) appear twice: one term with weight 2
        weights: dict[tuple[int, ...], float] = {}
        for alpha in alphas:
            weights[alpha] = weights.get(alpha, 0.0) + 1.0
        return self.combination(u, [(c, alpha) for alpha, c in weights.items()])

    def divergence(self, flux: Sequence[FieldLike]) -> OutputValues:
        """`sum_a d F_a / d x_a` for a flux given as one array per axis."""
        if len(flux) != self.grid.ndim:
            raise MollijaxError(
                f"`flux` must have one component per grid axis ({self.grid.ndim}), "
                f"got {len(flux)}."
            )
        out = 0.0
        for a, f in enumerate(flux):
            out = out + self(f, tuple(int(a == b) for b in range(self.grid.ndim)))
        return out

    def op(self, alpha: MultiIndexLike) -> Operator:
        """The linear operator `D^alpha` as an `Operator` (supports `+`, `-`, scalar `*`)."""
        return Operator(self, ((1.0, parse_multi_index(alpha, self.grid)),))


class Operator(eqx.Module):
    """A linear combination `sum_k c_k D^{alpha_k}` of derivatives of one differentiator.

    Built with `D.op("xx") + D.op("yy")` or `2.0 * D.op("x")`; calling it computes all its
    derivatives in one shared pass.
    """

    differentiator: AbstractDifferentiator
    terms: tuple[tuple[float, tuple[int, ...]], ...] = eqx.field(static=True)

    def __call__(self, u: FieldLike | PointFn) -> OutputValues:
        return self.differentiator.combination(u, self.terms)

    def _check_same(self, other):
        if not isinstance(other, Operator):
            return NotImplemented
        if other.differentiator != self.differentiator:
            raise MollijaxError("Operators can only be added when built from the same differentiator.")
        return None

    def __add__(self, other: Operator) -> Operator:
        bad = self._check_same(other)
        if bad is NotImplemented:
            return NotImplemented
        return Operator(self.differentiator, self.terms + other.terms)

    def __neg__(self) -> Operator:
        return Operator(self.differentiator, tuple((-c, a) for c, a in self.terms))

    def __sub__(self, other: Operator) -> Operator:
        return self + (-other)

    def __mul__(self, scalar: float) -> Operator:
        if not isinstance(scalar, int | float):
            return NotImplemented
        return Operator(self.differentiator, tuple((scalar * c, a) for c, a in self.terms))

    __rmul__ = __mul__

    @property
    def order(self) -> int:
        return max(sum(a) for _, a in self.terms)


def _per_axis(value, grid: Grid, name: str) -> tuple:
    if isinstance(value, str) or not isinstance(value, Sequence):
        return (value,) * grid.ndim
    value = tuple(value)
    if len(value) != grid.ndim:
        raise MollijaxError(
            f"`{name}` must be one value or one per grid axis ({grid.ndim}), got {value!r}."
        )
    return value


@functools.lru_cache(maxsize=512)
def _cached_mollifier_taps(kernel, eps, h, order, scheme):
    taps = mollifier_taps(kernel, eps, h, order, scheme)
    taps.setflags(write=False)
    return taps


class _Separable(AbstractDifferentiator):
    """Shared machinery of tap-based methods (mollifier, finite differences)."""

    @abc.abstractmethod
    def taps(self, axis: int, order: int) -> np.ndarray:
        """1-D taps (float64, odd length) for `d^order / d x_axis^order`."""

    @property
    @abc.abstractmethod
    def halo(self) -> tuple[int, ...]:
        """Per axis, the band cropped from each end in `valid` mode."""

    boundary: eqx.AbstractVar[tuple[str, ...]]
    method: eqx.AbstractVar[str]

    def valid_region(self) -> tuple[slice, ...]:
        """Where on the grid the outputs live: the full grid, or the interior for 'valid' axes."""
        return tuple(
            slice(w, n - w) if m == "valid" else slice(None)
            for w, n, m in zip(self.halo, self.grid.shape, self.boundary, strict=True)
        )

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(
            n - 2 * w if m == "valid" else n
            for w, n, m in zip(self.halo, self.grid.shape, self.boundary, strict=True)
        )

    def _resolve_method(self, dtype) -> str:
        # "auto" is the FFT path: inside a loss (reverse mode) it is 2-200x faster than the
        # direct path at every width measured, in float32 and float64 (docs/design.md, 7)
        return "fft" if self.method == "auto" else self.method

    def derivatives(
        self, u: FieldLike | PointFn, alphas: Sequence[MultiIndexLike]
    ) -> tuple[OutputValues, ...]:
        if callable(u) and not hasattr(u, "shape"):
            u = evaluate(u, self.grid)
        u = check_values(u, self.grid)
        parsed = [parse_multi_index(a, self.grid) for a in alphas]
        taps = [tuple(self.taps(a, o) for a, o in enumerate(alpha)) for alpha in parsed]
        self._warn_precision(u.dtype, parsed, taps)
        return tuple(
            separable_apply(u, taps, self.boundary, self.halo, self._resolve_method(u.dtype))
        )

    def combination(
        self, u: FieldLike | PointFn, terms: Sequence[tuple[float, MultiIndexLike]]
    ) -> OutputValues:
        if not terms:
            raise MollijaxError("`terms` must hold at least one (coefficient, alpha) pair.")
        if callable(u) and not hasattr(u, "shape"):
            u = evaluate(u, self.grid)
        u = check_values(u, self.grid)
        parsed = [parse_multi_index(a, self.grid) for _, a in terms]
        coeffs = []
        for c, _ in terms:
            if not isinstance(c, int | float | np.floating | np.integer):
                raise MollijaxError(
                    f"`terms` coefficients must be Python or NumPy numbers, got {describe(c)}."
                )
            coeffs.append(float(c))
        taps = [tuple(self.taps(a, o) for a, o in enumerate(alpha)) for alpha in parsed]
        self._warn_precision(u.dtype, parsed, taps)
        return separable_combination(
            u, taps, coeffs, self.boundary, self.halo, self._resolve_method(u.dtype)
        )

    def _warn_precision(self, dtype, parsed, taps):
        finfo = jnp.finfo(dtype)
        for alpha, t in zip(parsed, taps, strict=True):
            # round-off ~ machine eps * |u| * sum|c|; signal ~ |u| / L^k on a domain of size L
            amplification = 1.0
            for a, order in enumerate(alpha):
                amplification *= np.abs(t[a]).sum() * self.grid.lengths[a] ** order
            level = float(finfo.eps) * amplification
            if level > _PRECISION_TOLERANCE:
                warnings.warn(
                    f"Derivative {alpha} in {np.dtype(dtype).name}: round-off may reach "
                    f"{level:.1%} of the signal (taps amplify it {amplification:.3g}x). Use "
                    "float64 (jax.config.update('jax_enable_x64', True)) or a wider `eps`.",
                    PrecisionWarning,
                    stacklevel=4,
                )


class Mollifier(_Separable):
    """Mollified derivatives `D^alpha (u * Phi_eps) = u * D^alpha Phi_eps`.

    `Phi_eps` is the tensor product of a 1-D kernel of half-width `eps` along each axis, so a
    derivative is one 1-D convolution per axis (or one FFT product). On a grid of spacing `h`
    the convolution is the discrete sum `sum_j c_j u_{i+j}` with taps `c` from the kernel's
    analytic derivative, corrected so that `sum_j c_j (j h)^m / m! = delta_{m k}` for
    `m <= k` (`scheme="corrected"`, default).

    **Arguments:**

    - `grid`: the `Grid` the field lives on.
    - `eps`: kernel half-width in the grid's units, one value or one per axis. It is static:
      a new `eps` builds new taps (and a new compilation). `suggest_eps` proposes one.
    - `kernel`: an `AbstractKernel` (default `Bump()`). For 3rd and 4th derivatives with
      fewer than about 20 cells per half-width, the bump's corrected taps amplify noise up to
      10x more than `Polynomial(6)` or `scheme="difference"` (see `docs/design.md`).
    - `boundary`: `"odd"` (default), `"even"`, `"periodic"`, `"linear"`, `"zero"` or
      `"valid"`; one value or one per axis. See `docs/design.md`.
    - `method`: `"fft"` (what `"auto"`, the default, picks) or `"direct"` (a sum of shifted
      slices per axis: the fastest forward evaluation for narrow kernels, but slow under
      reverse-mode differentiation).
    - `scheme`: `"corrected"` (default), `"difference"` (central differences of the
      mollified field) or `"sampled"` (raw analytic samples, for comparison only).

    **Accuracy:** for smooth `u`, `D^alpha (u * Phi_eps) - D^alpha u = O(eps^2)`; the discrete
    operator is exact on polynomials of total degree `<= |alpha| + 1`. Noise of standard
    deviation `sigma` is amplified by about `sigma * sqrt(h / eps) / eps^k` per axis.
    """

    grid: Grid = eqx.field(static=True)
    eps: tuple[float, ...] = eqx.field(static=True)
    kernel: AbstractKernel = eqx.field(static=True)
    boundary: tuple[str, ...] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    scheme: str = eqx.field(static=True)

    def __init__(
        self,
        grid: Grid,
        eps: float | Sequence[float],
        kernel: AbstractKernel | None = None,
        boundary: str | Sequence[str] = "odd",
        method: str = "auto",
        scheme: str = "corrected",
    ):
        if not isinstance(grid, Grid):
            raise MollijaxError(f"`grid` must be a mollijax.Grid, got {type(grid).__name__}.")
        self.grid = grid
        self.eps = tuple(float(e) for e in _per_axis(eps, grid, "eps"))
        self.kernel = Bump() if kernel is None else kernel
        if not isinstance(self.kernel, AbstractKernel):
            raise MollijaxError(
                f"`kernel` must be an AbstractKernel (Bump, Polynomial, TruncatedGaussian), "
                f"got {type(self.kernel).__name__}."
            )
        self.boundary = tuple(canonical_boundary(b) for b in _per_axis(boundary, grid, "boundary"))
        if method not in ("auto", "direct", "fft"):
            raise MollijaxError(f"`method` must be 'auto', 'direct' or 'fft', got {method!r}.")
        self.method = method
        if scheme not in SCHEMES:
            raise MollijaxError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}.")
        self.scheme = scheme
        for a, (e, h, n) in enumerate(zip(self.eps, grid.spacing, grid.shape, strict=True)):
            if not (np.isfinite(e) and e > 0):
                raise KernelTooWideError(f"`eps[{a}]` must be positive and finite, got {e!r}.")
            m = half_width(e, h)
            if 2 * self.halo[a] + 1 > n:
                raise KernelTooWideError(
                    f"Kernel wider than the grid along axis {a} ({grid.axes[a]!r}): eps={e:.6g} "
                    f"spans {2 * m + 1} nodes of spacing {h:.6g} but the axis has {n}. "
                    f"Use eps <= {(n - 1) // 2 * h:.6g}."
                )
            if m < 1:
                raise KernelTooWideError(
                    f"`eps[{a}]`={e:.6g} is narrower than one grid step h={h:.6g} along axis "
                    f"{grid.axes[a]!r}; use eps >= {2 * h:.6g}."
                )

    @property
    def halo(self) -> tuple[int, ...]:
        extra = 2 if self.scheme == "difference" else 0  # stencil half-width up to order 4
        return tuple(
            half_width(e, h) + extra for e, h in zip(self.eps, self.grid.spacing, strict=True)
        )

    def taps(self, axis: int, order: int) -> np.ndarray:
        taps = _cached_mollifier_taps(
            self.kernel, self.eps[axis], self.grid.spacing[axis], order, self.scheme
        )
        if self.boundary[axis] == "valid" and (taps.size - 1) // 2 > self.halo[axis]:
            raise DerivativeOrderError(
                f"Order {order} along axis {axis} needs a wider 'valid' band than this "
                f"Mollifier's halo {self.halo[axis]}; use scheme='corrected'."
            )
        return taps


class FiniteDifference(_Separable):
    """Central finite differences of even `accuracy` order, one 1-D stencil per axis.

    `D^alpha u ~= prod_a delta_a^{alpha_a} u` with the standard central stencils (error
    `O(h^accuracy)`), boundaries handled by the same padding modes as `Mollifier`.
    """

    grid: Grid = eqx.field(static=True)
    boundary: tuple[str, ...] = eqx.field(static=True)
    accuracy: int = eqx.field(static=True)
    method: str = eqx.field(static=True)

    def __init__(self, grid: Grid, boundary: str | Sequence[str] = "odd", accuracy: int = 2):
        self.grid = grid
        self.boundary = tuple(canonical_boundary(b) for b in _per_axis(boundary, grid, "boundary"))
        self.accuracy = int(accuracy)
        self.method = "direct"
        central_difference_taps(1.0, 1, self.accuracy)  # validates accuracy

    @property
    def halo(self) -> tuple[int, ...]:
        return ((4 + 1) // 2 + self.accuracy // 2 - 1,) * self.grid.ndim

    def taps(self, axis: int, order: int) -> np.ndarray:
        return central_difference_taps(self.grid.spacing[axis], order, self.accuracy)


class Spectral(AbstractDifferentiator):
    """Fourier (spectral) derivatives on a periodic grid: `D^alpha u = F^-1[(i k)^alpha F u]`.

    Exact to round-off on trigonometric polynomials resolved by the grid. For odd orders on
    an even number of nodes the Nyquist mode is dropped (its derivative is not real).
    """

    grid: Grid = eqx.field(static=True)

    def derivatives(
        self, u: FieldLike | PointFn, alphas: Sequence[MultiIndexLike]
    ) -> tuple[FieldValues, ...]:
        if callable(u) and not hasattr(u, "shape"):
            u = evaluate(u, self.grid)
        u = check_values(u, self.grid)
        d = self.grid.ndim
        spectrum = jnp.fft.rfftn(u, axes=tuple(range(d)))
        outs = []
        for alpha in (parse_multi_index(a, self.grid) for a in alphas):
            symbol = np.ones((1,) * d, dtype=complex)
            for a, order in enumerate(alpha):
                n, length = self.grid.shape[a], self.grid.lengths[a]
                freq = np.fft.rfftfreq(n) if a == d - 1 else np.fft.fftfreq(n)
                ik = (2j * np.pi * freq * n / length) ** order
                if order % 2 and n % 2 == 0:
                    ik[np.isclose(np.abs(freq), 0.5)] = 0.0
                shape = [1] * d
                shape[a] = ik.size
                symbol = symbol * ik.reshape(shape)
            v = jnp.fft.irfftn(spectrum * jnp.asarray(symbol, spectrum.dtype), s=u.shape,
                               axes=tuple(range(d)))
            outs.append(v.astype(u.dtype))
        return tuple(outs)


def _require_function(u, name):
    if not callable(u) or hasattr(u, "shape"):
        raise MollijaxError(
            f"{name} differentiates a function f(x) -> scalar, not grid values; got "
            f"{describe(u)}. Use Mollifier, FiniteDifference or Spectral for arrays."
        )


def _nested_grad(fn: Callable, alpha: tuple[int, ...]) -> Callable:
    g = fn
    for axis, order in enumerate(alpha):
        for _ in range(order):
            g = (lambda h, a: (lambda x: jax.grad(h)(x)[a]))(g, axis)
    return g


class Autodiff(AbstractDifferentiator):
    """Nested reverse-mode autodiff of a point function, evaluated at the grid's nodes.

    `D^alpha f(x_i)` exactly (to round-off) for the function given; a derivative of order `k`
    nests `k` `jax.grad` calls, so cost and memory grow quickly with the order.
    """

    grid: Grid = eqx.field(static=True)

    def derivatives(
        self, u: FieldLike | PointFn, alphas: Sequence[MultiIndexLike]
    ) -> tuple[FieldValues, ...]:
        _require_function(u, "Autodiff")
        points = self.grid.points()
        outs = []
        for alpha in (parse_multi_index(a, self.grid) for a in alphas):
            outs.append(jax.vmap(_nested_grad(u, alpha))(points).reshape(self.grid.shape))
        return tuple(outs)


class Taylor(AbstractDifferentiator):
    """Taylor-mode derivatives (`jax.experimental.jet`) of a point function along grid axes.

    One jet of order `k` along the unit vector `e_a` gives `d^k f / d x_a^k`. Only unmixed
    multi-indices are supported (a mixed one raises `DerivativeOrderError`; use `Autodiff`).
    """

    grid: Grid = eqx.field(static=True)

    def derivatives(
        self, u: FieldLike | PointFn, alphas: Sequence[MultiIndexLike]
    ) -> tuple[FieldValues, ...]:
        _require_function(u, "Taylor")
        points = self.grid.points()
        outs = []
        for alpha in (parse_multi_index(a, self.grid) for a in alphas):
            nonzero = [a for a, o in enumerate(alpha) if o]
            if len(nonzero) > 1:
                raise DerivativeOrderError(
                    f"Taylor mode handles derivatives along one axis; {alpha} is mixed."
                )
            if not nonzero:
                outs.append(evaluate(u, self.grid))
                continue
            axis, order = nonzero[0], alpha[nonzero[0]]

            def along(x, axis=axis, order=order):
                direction = jnp.zeros_like(x).at[axis].set(1.0)
                series = [direction] + [jnp.zeros_like(x)] * (order - 1)
                _, out = jet.jet(u, (x,), (series,))
                return out[order - 1]

            outs.append(jax.vmap(along)(points).reshape(self.grid.shape))
        return tuple(outs)


def differentiator_on(
    derivatives, grid: Grid, default: Callable[[Grid], AbstractDifferentiator], owner: str,
    grid_name: str = "its grid",
) -> AbstractDifferentiator:
    """The differentiator a state solver uses on `grid`: `derivatives` itself (built for
    `grid`), or `derivatives(grid)` for a factory, or `default(grid)` for `None`."""
    d = derivatives
    if d is None:
        return default(grid)
    if not isinstance(d, AbstractDifferentiator) and callable(d):
        d = d(grid)
    if not isinstance(d, AbstractDifferentiator):
        raise MollijaxError(
            f"{owner} `derivatives` must be None, a differentiator on {grid_name} or a function "
            f"grid -> differentiator, got {type(d).__name__}."
        )
    if d.grid != grid:
        raise GridMismatchError(
            f"{owner} `derivatives` was built for {d.grid}; {grid_name} is {grid}."
        )
    return d

