"""The one table of names: strings a config, the CLI or a script may use for an object.

    kind          names
    kernel        bump, polynomial, gaussian
    boundary      odd, even, periodic, linear, zero, valid
    derivatives   mollifier, finite_difference, spectral, autodiff, taylor
    network       mlp, fourier, pirate, pinnsformer (transformer: the same)
    optimiser     adam, lbfgs, lbfgs_armijo
    regulariser   tikhonov, smooth (H1 seminorm), curvature (second derivatives), third
                (third derivatives), se (squared-exponential prior; in a config
                `"se:<length>"`), tv

`from_name(kind, name, **options)` builds the object; `names(kind)` lists the choices. Every
place that turns a string into an object goes through here, so that a name means the same
thing everywhere and an unknown one fails the same way, naming the kind and the choices.
"""

from __future__ import annotations

from collections.abc import Callable

from ._errors import MollijaxError


def se_key(length: float) -> str:
    """`"se:<length>"`: the key of a squared-exponential prior of that length, in a
    configuration's `[regularisers.<u>]` and at the end of its term's name."""
    return f"se:{float(length):g}"


class UnknownNameError(MollijaxError):
    """A name that the table of `kind` does not hold."""


def _kernels() -> dict[str, Callable]:
    from ._kernels import Bump, Polynomial, TruncatedGaussian

    return {"bump": Bump, "polynomial": Polynomial, "gaussian": TruncatedGaussian}


def _boundaries() -> dict[str, Callable]:
    from ._conv import BOUNDARIES

    return {b: (lambda b=b: b) for b in BOUNDARIES}


def _derivatives() -> dict[str, Callable]:
    from ._differentiators import Autodiff, FiniteDifference, Mollifier, Spectral, Taylor

    return {
        "mollifier": Mollifier,
        "finite_difference": FiniteDifference,
        "spectral": Spectral,
        "autodiff": Autodiff,
        "taylor": Taylor,
    }


def _networks() -> dict[str, Callable]:
    from ._networks import MLP, FourierMLP, PINNsFormer, PirateNet

    return {"mlp": MLP, "fourier": FourierMLP, "pirate": PirateNet,
            "pinnsformer": PINNsFormer, "transformer": PINNsFormer}


def _optimisers() -> dict[str, Callable]:
    import optax

    from ._fit import default_optimiser

    def adam(steps: int = 1000, learning_rate: float = 1e-3):
        return default_optimiser(steps, learning_rate)

    def lbfgs(steps: int = 1000, learning_rate: float | None = None):
        del steps, learning_rate  # L-BFGS takes its step from the line search
        return optax.lbfgs()

    def lbfgs_armijo(steps: int = 1000, learning_rate: float | None = None):
        from ._lbfgs import lbfgs as one_evaluation

        del steps, learning_rate  # its steps come from the backtracking over trials
        return one_evaluation()

    return {"adam": adam, "lbfgs": lbfgs, "lbfgs_armijo": lbfgs_armijo}


def _regularisers() -> dict[str, Callable]:
    from ._terms import H1, TV, Curvature, SquaredExponential, ThirdDerivative, Tikhonov

    return {"tikhonov": Tikhonov, "smooth": H1, "curvature": Curvature,
            "third": ThirdDerivative, "se": SquaredExponential, "tv": TV}


_TABLES: dict[str, Callable[[], dict[str, Callable]]] = {
    "kernel": _kernels,
    "boundary": _boundaries,
    "derivatives": _derivatives,
    "network": _networks,
    "optimiser": _optimisers,
    "regulariser": _regularisers,
}

# the names, without importing the objects (configs validate against these)
NAMES: dict[str, tuple[str, ...]] = {
    "kernel": ("bump", "polynomial", "gaussian"),
    "boundary": ("odd", "even", "periodic", "linear", "zero", "valid"),
    "derivatives": ("mollifier", "finite_difference", "spectral", "autodiff", "taylor"),
    "network": ("mlp", "fourier", "pirate", "pinnsformer", "transformer"),
    "optimiser": ("adam", "lbfgs", "lbfgs_armijo"),
    "regulariser": ("tikhonov", "smooth", "curvature", "third", "se", "tv"),
}


def names(kind: str) -> tuple[str, ...]:
    """The names the table of `kind` holds (`"kernel"`, `"boundary"`, `"derivatives"`,
    `"network"`, `"optimiser"`, `"regulariser"`)."""
    if kind not in NAMES:
        raise UnknownNameError(f"Unknown kind {kind!r}; expected one of {tuple(NAMES)}.")
    return NAMES[kind]


def check_name(kind: str, name: object, where: str = "") -> str:
    """`name` if the table of `kind` holds it; otherwise an `UnknownNameError` naming `where`."""
    choices = names(kind)
    if not isinstance(name, str) or name not in choices:
        at = f"{where}: " if where else ""
        raise UnknownNameError(f"{at}unknown {kind} {name!r}; expected one of {choices}.")
    return name


def from_name(kind: str, name: str, /, *args, **options):
    """The object named `name` in the table of `kind`, built with `args` and `options`.

        >>> import mollijax as mj
        >>> mj.from_name("kernel", "bump")
        Bump()
    """
    check_name(kind, name)
    return _TABLES[kind]()[name](*args, **options)
