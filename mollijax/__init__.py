"""mollijax: inverse PDE problems in JAX with mollified derivatives."""

from ._batch import (
    BatchResult as BatchResult,
)
from ._batch import (
    fit_batch as fit_batch,
)
from ._batch import (
    list_stack as list_stack,
)
from ._batch import (
    load_stack as load_stack,
)
from ._batch import (
    run_batch as run_batch,
)
from ._checkpoint import (
    CheckpointMismatchError as CheckpointMismatchError,
)
from ._checkpoint import (
    CorruptFileError as CorruptFileError,
)
from ._dataset import Dataset as Dataset
from ._differentiators import (
    AbstractDifferentiator as AbstractDifferentiator,
)
from ._differentiators import (
    Autodiff as Autodiff,
)
from ._differentiators import (
    FiniteDifference as FiniteDifference,
)
from ._differentiators import (
    Mollifier as Mollifier,
)
from ._differentiators import (
    Operator as Operator,
)
from ._differentiators import (
    Spectral as Spectral,
)
from ._differentiators import (
    Taylor as Taylor,
)
from ._differentiators import (
    evaluate as evaluate,
)
from ._eps import estimate_noise as estimate_noise
from ._eps import suggest_eps as suggest_eps
from ._errors import (
    DerivativeOrderError as DerivativeOrderError,
)
from ._errors import (
    DTypeError as DTypeError,
)
from ._errors import (
    GridMismatchError as GridMismatchError,
)
from ._errors import (
    KernelTooWideError as KernelTooWideError,
)
from ._errors import (
    MollijaxError as MollijaxError,
)
from ._errors import (
    NonFiniteError as NonFiniteError,
)
from ._errors import (
    NonUniformGridError as NonUniformGridError,
)
from ._errors import (
    PrecisionWarning as PrecisionWarning,
)
from ._evolution import Evolution as Evolution
from ._examples import examples_root as examples_root
from ._examples import load_file as load_file
from ._fields import (
    AbstractField as AbstractField,
)
from ._fields import (
    Constant as Constant,
)
from ._fields import (
    Constraint as Constraint,
)
from ._fields import (
    GridField as GridField,
)
from ._fields import (
    NetworkField as NetworkField,
)
from ._fit import FitResult as FitResult
from ._fit import Status as Status
from ._fit import default_optimiser as default_optimiser
from ._fit import fit as fit
from ._grid import Grid as Grid
from ._integrators import (
    RK4 as RK4,
)
from ._integrators import (
    AbstractIntegrator as AbstractIntegrator,
)
from ._integrators import (
    Diffrax as Diffrax,
)
from ._kernels import (
    AbstractKernel as AbstractKernel,
)
from ._kernels import (
    Bump as Bump,
)
from ._kernels import (
    Polynomial as Polynomial,
)
from ._kernels import (
    TruncatedGaussian as TruncatedGaussian,
)
from ._names import UnknownNameError as UnknownNameError
from ._names import from_name as from_name
from ._names import names as names
from ._networks import (
    MLP as MLP,
)
from ._networks import (
    FourierMLP as FourierMLP,
)
from ._networks import (
    PirateNet as PirateNet,
)
from ._networks import (
    TransformerPINN as TransformerPINN,
)
from ._problem import Problem as Problem
from ._problem_files import load_problem as load_problem
from ._problem_files import score as score
from ._scope import PointField as PointField
from ._scope import Scope as Scope
from ._scope import UnknownFieldError as UnknownFieldError
from ._sharding import (
    Sharded as Sharded,
)
from ._sharding import (
    batch_mesh as batch_mesh,
)
from ._sharding import (
    evaluate_grid_tiled as evaluate_grid_tiled,
)
from ._sharding import (
    evaluate_tiled as evaluate_tiled,
)
from ._sharding import (
    shard_stack as shard_stack,
)
from ._sharding import (
    sharded_derivatives as sharded_derivatives,
)
from ._steady import Steady as Steady
from ._taps import mollifier_taps as mollifier_taps
from ._terms import (
    H1 as H1,
)
from ._terms import (
    TV as TV,
)
from ._terms import (
    AbstractTerm as AbstractTerm,
)
from ._terms import (
    Condition as Condition,
)
from ._terms import (
    DataMisfit as DataMisfit,
)
from ._terms import (
    Regulariser as Regulariser,
)
from ._terms import (
    Residual as Residual,
)
from ._terms import (
    Tikhonov as Tikhonov,
)

__version__ = "0.1.0"
