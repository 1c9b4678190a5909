"""mollijax: inverse PDE problems in JAX with mollified derivatives."""

from ._differentiators import (
    AbstractDifferentiator as AbstractDifferentiator,
    Autodiff as Autodiff,
    FiniteDifference as FiniteDifference,
    Mollifier as Mollifier,
    Operator as Operator,
    Spectral as Spectral,
    Taylor as Taylor,
    evaluate as evaluate,
)
from ._eps import estimate_noise as estimate_noise, suggest_eps as suggest_eps
from ._errors import (
    DerivativeOrderError as DerivativeOrderError,
    DTypeError as DTypeError,
    GridMismatchError as GridMismatchError,
    KernelTooWideError as KernelTooWideError,
    MollijaxError as MollijaxError,
    NonFiniteError as NonFiniteError,
    NonUniformGridError as NonUniformGridError,
    PrecisionWarning as PrecisionWarning,
)
from ._grid import Grid as Grid
from ._kernels import (
    AbstractKernel as AbstractKernel,
    Bump as Bump,
    Polynomial as Polynomial,
    TruncatedGaussian as TruncatedGaussian,
)
from ._taps import mollifier_taps as mollifier_taps

__version__ = "0.1.0"
