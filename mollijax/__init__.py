"""mollijax: inverse PDE problems in JAX with mollified derivatives."""

from ._auto import (
    Choice as Choice,
    Identifiability as Identifiability,
    IdentifiabilityWarning as IdentifiabilityWarning,
    MixChoice as MixChoice,
    cross_validate as cross_validate,
    discrepancy as discrepancy,
    evidence as evidence,
    gcv as gcv,
    identifiability as identifiability,
    mix_evidence as mix_evidence,
    noise_sigma as noise_sigma,
    scaled as scaled,
)
from ._batch import (
    BatchResult as BatchResult,
    fit_batch as fit_batch,
    list_stack as list_stack,
    load_stack as load_stack,
    run_batch as run_batch,
)
from ._build import (
    AutoRun as AutoRun,
    auto_run as auto_run,
    auto_smooth_weights as auto_smooth_weights,
    quasi_optimal as quasi_optimal,
)
from ._checkpoint import (
    CheckpointMismatchError as CheckpointMismatchError,
    CorruptFileError as CorruptFileError,
)
from ._dataset import Dataset as Dataset
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
from ._eps import (
    WidthChoice as WidthChoice,
    estimate_noise as estimate_noise,
    spectral_widths as spectral_widths,
    suggest_eps as suggest_eps,
    suggest_widths as suggest_widths,
)
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
from ._evolution import Evolution as Evolution
from ._examples import examples_root as examples_root, load_file as load_file
from ._fields import (
    AbstractField as AbstractField,
    Constant as Constant,
    Constraint as Constraint,
    GridField as GridField,
    NetworkField as NetworkField,
)
from ._fit import (
    FitResult as FitResult,
    RecompileWarning as RecompileWarning,
    Status as Status,
    default_optimiser as default_optimiser,
    fit as fit,
)
from ._gauss_newton import gauss_newton as gauss_newton
from ._grid import Grid as Grid
from ._inclusion import (
    Inclusion as Inclusion,
    ModelChoice as ModelChoice,
    choose_inclusion as choose_inclusion,
    inclusion_posterior as inclusion_posterior,
    inclusion_start as inclusion_start,
)
from ._integrators import (
    RK4 as RK4,
    AbstractIntegrator as AbstractIntegrator,
    Diffrax as Diffrax,
    Propagator as Propagator,
)
from ._kernels import (
    AbstractKernel as AbstractKernel,
    Bump as Bump,
    Polynomial as Polynomial,
    TruncatedGaussian as TruncatedGaussian,
)
from ._lbfgs import lbfgs as lbfgs
from ._names import UnknownNameError as UnknownNameError, from_name as from_name, names as names
from ._networks import (
    MLP as MLP,
    FourierMLP as FourierMLP,
    PINNsFormer as PINNsFormer,
    PirateNet as PirateNet,
    SequentialResidual as SequentialResidual,
    TransformerPINN as TransformerPINN,
    pirate_init as pirate_init,
)
from ._problem import Problem as Problem
from ._problem_files import load_problem as load_problem, score as score
from ._readout import Readout as Readout, readout as readout
from ._scope import PointField as PointField, Scope as Scope, UnknownFieldError as UnknownFieldError
from ._sharding import (
    Sharded as Sharded,
    batch_mesh as batch_mesh,
    evaluate_grid_tiled as evaluate_grid_tiled,
    evaluate_tiled as evaluate_tiled,
    shard_stack as shard_stack,
    sharded_derivatives as sharded_derivatives,
)
from ._steady import Steady as Steady
from ._taps import mollifier_taps as mollifier_taps
from ._terms import (
    H1 as H1,
    TV as TV,
    AbstractTerm as AbstractTerm,
    Condition as Condition,
    Curvature as Curvature,
    DataMisfit as DataMisfit,
    Regulariser as Regulariser,
    Residual as Residual,
    SquaredExponential as SquaredExponential,
    ThirdDerivative as ThirdDerivative,
    Tikhonov as Tikhonov,
)
from ._uncertainty import (
    NoiseLevel as NoiseLevel,
    Uncertainty as Uncertainty,
    UncertaintyError as UncertaintyError,
    ensemble as ensemble,
    laplace as laplace,
)

__version__ = "0.1.0"
