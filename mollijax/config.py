"""Run configurations: TOML files parsed into frozen, validated dataclasses.

A configuration has the tables

    [problem]            file = "my_pde.py" (relative to the configuration's folder) or
                         name = "<shipped problem>", then any of its simulation parameters
    [data]               source = "simulate" (noise, seed) or "file" (path, fields, grid)
    [derivatives]        method, kernel, eps ("auto", a number or one per axis), boundary
    [unknowns.<name>]    representation, constraint, init, axes, network options
    [state]              representation of the observed fields ("auto", "data", a network,
                         "evolve", "solve") and its options
    [regularisers.<u>]   kind = weight, e.g. smooth = 1e-4, or smooth = "auto"
                         ("se:<length>" = weight: a squared-exponential prior)
    [weights]            term or kind = weight
    [optimiser]          name, learning_rate, steps, chunk, seed, tol
    [batch]              stack, field, key, devices, dtype
    [uncertainty]        method ("auto", "laplace", "ensemble", "none"), kind, rank, draws
    [output]             dir

Every key and value is checked when the file is read: an unknown key, a value of the wrong
type (no silent casting: `nx = 41.5` for an integer parameter is an error; an integer is
accepted for a number) or out of range (`eps = "wide"`, a negative weight or learning rate,
`seed = -1`) is a `ConfigError` naming the file, the table and the key.

A smoothness weight may be `"auto"` (`[regularisers.k] smooth = "auto"`): it is then set
from the data when the problem is built, by the rule of the automatic run's equation-error
stage (`mollijax.auto_smooth_weights`): `AUTO_SMOOTH * L_res(k0) * length^2 / k0^2`,
with `L_res(k0)` the residual loss at the initial unknowns (the mollified data), `length`
the largest extent of k's axes and `k0` the root mean square of k's initial values, so the
weight is free of the units of the data and of k. The chosen weight is printed and recorded
in `metrics.json` under `"weights"`. Only `smooth` takes `"auto"` (the rule is for a
penalty on gradients), and only with an equation-error state (`[state] representation` of
`"data"` or a network; the automatic run, a configuration of `[problem]` and `[data]`
only, chooses the output-error weight itself: by generalised cross-validation for a solved
state, by the marginal likelihood for an evolved one on the grid path). Simulation parameters
are checked against the problem file's `DEFAULTS` (name and type). Names of kernels,
boundaries, derivative methods, networks, optimisers and regularisers are those of the one
table of names (`mollijax.names(kind)`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tomllib
import types
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import MollijaxError
from ._examples import examples_root, shipped
from ._fields import as_constraint
from ._names import UnknownNameError, check_name, names, se_key
from ._problem_files import defaults, load_problem as load_problem, problem_name, score as score


class ConfigError(MollijaxError):
    """A configuration file or table is malformed: unknown key, wrong type, bad value."""


# --------------------------------------------------------------------------- value checks
# a check returns None when the value is fine, else what was expected ("a number > 0")


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v):
    return None if _finite(v) and v > 0 else "a finite number > 0"


def _non_negative(v):
    return None if _finite(v) and v >= 0 else "a finite number >= 0"


def _finite_number(v):
    return None if _finite(v) else "a finite number"


def _at_least(n: int) -> Callable:
    def check(v):
        return None if v >= n else f"an integer >= {n}"

    return check


def _rank(v):
    if isinstance(v, str):
        return None if v in ("auto", "full") else '"auto", "full" or an integer >= 1'
    return None if v >= 1 else '"auto", "full" or an integer >= 1'


def _even(v):
    return None if v >= 2 and v % 2 == 0 else "an even integer >= 2"


def _choice(*choices: str) -> Callable:
    def check(v):
        return None if v in choices else f"one of {choices}"

    return check


def _named(kind: str) -> Callable:
    def check(v):
        try:
            check_name(kind, v)
        except UnknownNameError:
            return f"a {kind} name, one of {names(kind)}"
        return None

    return check


def _eps(v):
    expected = '"auto", a number > 0, or one number > 0 per axis'
    if isinstance(v, str):
        return None if v == "auto" else expected
    if isinstance(v, list):
        return None if v and all(_finite(e) and e > 0 for e in v) else expected
    return None if _finite(v) and v > 0 else expected


def _boundary(v):
    items = v if isinstance(v, list) else [v]
    ok = items and all(isinstance(b, str) and b in names("boundary") for b in items)
    return None if ok else f"a boundary name or one per axis, from {names('boundary')}"


def _constraint(v):
    expected = "'free', 'positive', 'negative' or ['bounded', lower, upper]"
    if isinstance(v, list) and not (len(v) == 3 and all(_finite(b) for b in v[1:])):
        return expected
    try:
        as_constraint(v)
    except MollijaxError:
        return expected
    return None


def _spacing(v):
    items = v if isinstance(v, list) else [v]
    return (
        None
        if items and all(_finite(e) and e > 0 for e in items)
        else ("a number > 0 or one per axis")
    )


def _origin(v):
    items = v if isinstance(v, list) else [v]
    return None if items and all(_finite(e) for e in items) else "a number or one per axis"


def _identifiers(v):
    ok = bool(v) and all(isinstance(a, str) and a.isidentifier() for a in v)
    ok = ok and len(set(v)) == len(v)
    return None if ok else "a non-empty array of distinct axis names"


SEED_MAX = 2**32 - 1  # what every random generator here takes


def _seed(v):
    return None if 0 <= v <= SEED_MAX else f"an integer from 0 to {SEED_MAX}"


def _fraction(v):
    return None if _finite(v) and 0 < v < 1 else "a number > 0 and < 1"


def _path(v):
    return None if v.strip() else "a non-empty path"


def _string_table(v):
    ok = all(isinstance(k, str) and isinstance(e, str) for k, e in v.items())
    return None if ok else 'a table of field = "array name or file"'


def _f(default: Any, types: tuple, check: Callable | None = None):
    meta = {"types": types, "check": check}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_NUMBER = (int, float)
_REPRESENTATIONS = ("grid", "constant")  # of an unknown, besides the networks
_STATES = ("auto", "data", "evolve", "solve")  # of the observed fields, besides the networks
STEADY_SOLVERS = ("auto", "direct", "gmres", "bicgstab")  # of the "solve" state (`Steady`)
# of the "evolve" state: RK4 (substeps from the stiffness), or the exact propagator where the
# evolution is linear with coefficients constant in time (RK4 elsewhere)
EVOLVE_INTEGRATORS = ("rk4", "propagator")
PROPAGATOR_NODES = 512
"""`[state] integrator = "propagator"`: the most evolved nodes for which the exact propagator
(a dense `n x n` matrix exponential per loss evaluation) is used; RK4 beyond. It pays on one
spatial axis; on two, RK4 is cheaper already at a few hundred nodes (heat2d 17^2: 38.5 ms
against 3.6 ms per value and gradient), and `auto_run` uses it on one axis only."""
EVOLVE_STEPS = 5
"""`auto_run`'s evolved output-error fit may take `EVOLVE_STEPS` times the step cap of the
other fits where the exact propagator advances it (a value and gradient of heat1d 101 x
101's loss then takes 4.4 ms, against 14.4 ms with RK4; ad hoc timing, one core); it still
stops on its statistical tolerance. Noisy fits stop long before either cap; at 1 % noise
the RK4 fit of heat1d ended at its 1000-step cap on four of five tuning draws, the
propagator's converged at 1300-2100 steps (ad hoc runs, tuning draws 0-4: mean D error
0.29 -> 0.18 %; the measured claim is the accuracy suite's table)."""
TRIAL_STEPS = 2
"""`auto_run`'s evolved stage (its network pre-fit and its output-error fit) runs
`mollijax.lbfgs`, one loss evaluation per step, where optax's L-BFGS takes about 2.2 per
step (its zoom line search): those fits' step caps and convergence chunks are `TRIAL_STEPS`
times the others', so that both count about as many evaluations."""

# a configuration with no table but these gets `[state] representation = "auto"`
_AUTO_TABLES = {"problem", "data", "output", "uncertainty"}


# ------------------------------------------------------------------------------- schema


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the observations come from.

    `source = "simulate"` runs the problem's simulator with relative `noise` and `seed`.
    `source = "file"` reads `path` (.npz, .npy, .tif); `fields` maps each observed field to
    an array name in an .npz (or to a file of its own); `known`, `masks` and `truth` do the
    same for given fields, observation masks and true unknowns. `domain` names a boolean
    (or 0/1) array, True inside the region where the equations hold and the data count (a
    nucleus in a field of view; the fit is then an equation-error one). The grid has the
    data's shape, `spacing` (required: the node distance per axis, unless a TIFF stack's
    resolution metadata gives it) and `origin` (default 0) per axis, and the axis names
    `axes` (required: one per array dimension, in order, e.g. `["x", "t"]`). The `[problem]`
    table then takes no simulator parameters.
    """

    source: str = _f("simulate", (str,), _choice("simulate", "file"))
    noise: float = _f(0.0, _NUMBER, _non_negative)
    seed: int = _f(0, (int,), _seed)
    path: str | None = _f(None, (str,), _path)
    fields: dict = _f({}, (dict,), _string_table)
    known: dict = _f({}, (dict,), _string_table)
    masks: dict = _f({}, (dict,), _string_table)
    truth: dict = _f({}, (dict,), _string_table)
    domain: str | None = _f(None, (str,), _path)
    spacing: list | float | None = _f(None, (list, float, int), _spacing)
    origin: list | float | None = _f(None, (list, float, int), _origin)
    axes: list | None = _f(None, (list,), _identifiers)


@dataclasses.dataclass(frozen=True)
class DerivativesConfig:
    """`method` (a derivative method name), `kernel` and `eps` (mollifier only: `"auto"`
    from the noise and the problem's `ORDER`, a half-width, or one per axis), `boundary`
    (mollifier and finite differences: a mode or one per axis)."""

    method: str = _f("mollifier", (str,), _named("derivatives"))
    kernel: str = _f("bump", (str,), _named("kernel"))
    eps: str | float | list = _f("auto", (str, int, float, list), _eps)
    boundary: str | list = _f("odd", (str, list), _boundary)


@dataclasses.dataclass(frozen=True)
class UnknownConfig:
    """One unknown: `representation` ("grid", "constant" or a network name), `constraint`,
    `init`, `axes` (default: the problem file's hints), network options (`width`, `depth`,
    `features`, `scale`, `blocks`; PINNsFormer: `d_model`, `heads`, `seq_len`, `delta`) and
    `output_scale` (a network's output multiplier)."""

    representation: str | None = _f(
        None, (str,), lambda v: _choice(*_REPRESENTATIONS, *names("network"))(v)
    )
    constraint: str | list | None = _f(None, (str, list), _constraint)
    init: float | None = _f(None, _NUMBER, _finite_number)
    axes: list | None = _f(None, (list,), _identifiers)
    width: int | None = _f(None, (int,), _at_least(1))
    depth: int | None = _f(None, (int,), _at_least(1))
    features: int | None = _f(None, (int,), _at_least(1))
    scale: float | None = _f(None, _NUMBER, _positive)
    blocks: int | None = _f(None, (int,), _at_least(1))
    d_model: int | None = _f(None, (int,), _at_least(1))
    heads: int | None = _f(None, (int,), _at_least(1))
    seq_len: int | None = _f(None, (int,), _at_least(1))
    delta: float | None = _f(None, _NUMBER, _positive)
    output_scale: float | None = _f(None, _NUMBER, _positive)


@dataclasses.dataclass(frozen=True)
class StateConfig:
    """How the observed fields enter the problem: `"data"` (the data themselves, mollified
    in the residuals), a network name (fitted to the data; network options), `"evolve"`
    (integrated in time by the problem's `EVOLUTION`; `accuracy` of the spatial differences,
    `integrator`: `"rk4"` (the default; `substeps`, else chosen from the stiffness) or
    `"propagator"` (exact in time where the evolution is linear with coefficients constant in
    time and has at most `PROPAGATOR_NODES` evolved nodes, RK4 elsewhere; the automatic
    run's evolved stage uses it on one spatial axis unless told otherwise); a network state
    may set `mollified_data = true`: its mollified output is fitted to the data, as in the
    mollifier-layers paper; a PINNsFormer state may set `sequential = true`: its residuals
    also at the later pseudo-times, `SequentialResidual`),
    `"solve"` (the solution of the problem's residual with its `conditions`, a solved
    steady state; `accuracy`, `solver`), or `"auto"` (the estimator picked from
    the problem: a mollified equation-error fit, refined by output error, evolved or solved,
    where the problem allows; `mollijax.config.auto_run`). `"auto"` is the default of a
    configuration that gives only [problem] and [data] (and [output]); otherwise `"data"`."""

    representation: str = _f("data", (str,), lambda v: _choice(*_STATES, *names("network"))(v))
    width: int | None = _f(None, (int,), _at_least(1))
    depth: int | None = _f(None, (int,), _at_least(1))
    features: int | None = _f(None, (int,), _at_least(1))
    scale: float | None = _f(None, _NUMBER, _positive)
    blocks: int | None = _f(None, (int,), _at_least(1))
    d_model: int | None = _f(None, (int,), _at_least(1))
    heads: int | None = _f(None, (int,), _at_least(1))
    seq_len: int | None = _f(None, (int,), _at_least(1))
    delta: float | None = _f(None, _NUMBER, _positive)
    sequential: bool | None = _f(None, (bool,))
    accuracy: int | None = _f(None, (int,), _even)
    substeps: int | None = _f(None, (int,), _at_least(1))
    integrator: str | None = _f(None, (str,), _choice(*EVOLVE_INTEGRATORS))
    solver: str | None = _f(None, (str,), _choice(*STEADY_SOLVERS))
    mollified_data: bool | None = _f(None, (bool,))


def auto_integrator(state: StateConfig, axes) -> str | None:
    """The integrator of `auto_run`'s evolved stage: the configuration's (`state.integrator`,
    or RK4 when it gives `substeps`), else `"propagator"` on one spatial axis and RK4 (None)
    on more. The exact propagator's dense `exp(dt A)` costs ~N^3 for N evolved nodes; RK4
    costs ~nt N substeps with substeps ~ 1/h^2, which is ~N^3 too on one axis (N = n: the
    propagator wins by its constant) but ~N^2 on two (N = n^2: RK4 wins). Per value and
    gradient (ad hoc, one core): heat1d 101 nodes 4.4 ms against RK4's 14.4 ms; heat2d 17^2
    38.5 ms against 3.6 ms, 21^2 144 ms against 6.6 ms."""
    if state.integrator is not None or state.substeps is not None:
        return state.integrator
    return "propagator" if sum(a != "t" for a in axes) == 1 else None


@dataclasses.dataclass(frozen=True)
class OptimiserConfig:
    """`adam` uses a cosine decay from `learning_rate` to 1 % over `steps`; `lbfgs` is optax's
    L-BFGS with its line search (`learning_rate` unused); `lbfgs_armijo` is `mollijax.lbfgs`,
    one loss evaluation per step (trial points, Armijo backtracking spread over the steps:
    a step is about half of optax's in evaluations, and it compiles faster). `seed`
    initialises networks. `tol` (a number > 0) stops the fit once the relative change of the
    total loss over a chunk is below it (`fit(..., tol=...)`); `steps` stays the cap."""

    name: str = _f("adam", (str,), _named("optimiser"))
    learning_rate: float = _f(1e-3, _NUMBER, _positive)
    steps: int = _f(1000, (int,), _at_least(1))
    chunk: int = _f(250, (int,), _at_least(1))
    seed: int = _f(0, (int,), _seed)
    tol: float | None = _f(None, _NUMBER, _fraction)


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Fit one problem per item of a stack (`mollijax.fit_batch`).

    `stack` is a folder of images or `.npy` files, or one `.npy`/`.npz` file (`key` names the
    array in an `.npz`), with a leading batch axis; `field` is the data field every item
    replaces (default: the problem's first observed field). `devices` splits the batch over
    that many devices (on CPU, host devices are created as needed); `dtype` is "float32" or
    "float64". An empty `stack` means no batch run.
    """

    stack: str = _f("", (str,))
    field: str = _f("", (str,), lambda v: None if v == "" or v.isidentifier() else "a field name")
    key: str = _f("", (str,))
    devices: int = _f(0, (int,), _at_least(0))
    dtype: str = _f("float64", (str,), _choice("float32", "float64"))


@dataclasses.dataclass(frozen=True)
class UncertaintyConfig:
    """Error bars of the unknowns (`mollijax.laplace`, `mollijax.ensemble`): `method`
    `"auto"` (Laplace when it costs fewer evaluations than the fit), `"laplace"`, `"ensemble"` or
    `"none"`; `kind` of the Laplace error bar (`"mse"`: the estimator's root mean square
    error, `"posterior"`: the Laplace posterior's std); `rank` of the Laplace approximation
    (`"auto"` or an integer >= 1); `draws` of the ensemble."""

    method: str = _f("auto", (str,), _choice("auto", "laplace", "ensemble", "none"))
    kind: str = _f("mse", (str,), _choice("mse", "posterior"))
    rank: int | str = _f("auto", (int, str), _rank)
    draws: int = _f(20, (int,), _at_least(2))


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    dir: str | None = _f(None, (str,), _path)


@dataclasses.dataclass(frozen=True)
class Config:
    """A parsed run configuration.

    `problem` is the problem's name (its file's stem), `problem_file` the resolved path of
    the problem file, `params` its simulation parameters (`DEFAULTS` updated by the
    `[problem]` table), `source` the configuration file it came from.
    """

    problem: str
    problem_file: str
    params: dict
    data: DataConfig
    derivatives: DerivativesConfig
    unknowns: dict[str, UnknownConfig]
    state: StateConfig
    regularisers: dict[str, dict[str, float | str]]
    weights: dict[str, float]
    optimiser: OptimiserConfig
    output: OutputConfig
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    uncertainty: UncertaintyConfig = dataclasses.field(default_factory=UncertaintyConfig)
    source: str = "<memory>"

    def module(self) -> types.ModuleType:
        """The problem file, imported (cached: the same module every call)."""
        return load_problem(self.problem_file)

    def to_dict(self) -> dict:
        """A JSON-able echo of the configuration."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


_TABLES = (
    "problem",
    "data",
    "derivatives",
    "unknowns",
    "state",
    "regularisers",
    "weights",
    "optimiser",
    "output",
    "batch",
    "uncertainty",
)
_NETWORK_KEYS = ("width", "depth", "features", "scale", "blocks", "d_model", "heads", "seq_len",
                 "delta")
SEQUENCE_NETWORKS = ("pinnsformer", "transformer")  # networks with a pseudo-sequence


def _type_name(types: tuple) -> str:
    words = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
        bool: "true or false",
    }
    if float in types:
        types = tuple(t for t in types if t is not int)
    return " or ".join(dict.fromkeys(words.get(t, t.__name__) for t in types))


def _section(cls, table: Any, where: str, source: str):
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [{where}] must be a table, got {table!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(
                f"{source}: [{where}] unknown key {key!r}; expected one of {sorted(fields)}."
            )
        meta = fields[key].metadata
        types = meta["types"]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ConfigError(
                f"{source}: [{where}] key {key!r} must be {_type_name(types)}, got "
                f"{value!r} ({type(value).__name__})."
            )
        problem = meta["check"](value) if meta["check"] else None
        if problem:
            raise ConfigError(f"{source}: [{where}] key {key!r} must be {problem}, got {value!r}.")
        out[key] = float(value) if isinstance(value, int) and float in types else value
    return cls(**out)


AUTO_WEIGHT_KINDS = ("smooth",)
"""Regulariser kinds whose weight may be `"auto"` (the rule scales a penalty on gradients)."""


def _weights(
    table: Any, where: str, source: str, kind: str | None = None
) -> dict[str, float | str]:
    """`{key: weight}` of a `[weights]` table, or of a `[regularisers.<u>]` table (`kind`
    `"regulariser"`), where a `smooth` weight may also be `"auto"`."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [{where}] must be a table, got {table!r}.")
    out: dict[str, float | str] = {}
    for key, value in table.items():
        base = key
        if kind == "regulariser" and isinstance(key, str) and key.startswith("se"):
            key, base = _se_key(key, where, source), "se"
        if kind is not None and base not in names(kind):
            raise ConfigError(
                f"{source}: [{where}] unknown key {key!r}; expected one of {names(kind)}."
            )
        if kind == "regulariser" and key in AUTO_WEIGHT_KINDS:
            if value == "auto":
                out[str(key)] = "auto"
                continue
            expected = 'a finite number >= 0 or "auto" (chosen from the data)'
        elif kind == "regulariser":
            expected = (f'a finite number >= 0 ("auto" is for {" or ".join(AUTO_WEIGHT_KINDS)} '
                        "only: its rule scales a penalty on gradients)")
        else:
            expected = "a finite number >= 0"
        if _non_negative(value):
            raise ConfigError(
                f"{source}: [{where}] key {key!r} must be {expected}, got {value!r}."
            )
        out[str(key)] = float(value)
    return out


def _se_key(key: str, where: str, source: str) -> str:
    """`"se:<length>"` (a squared-exponential prior of that length), normalised to the name
    its term carries; anything else starting with "se" is refused by name."""
    kind, _, option = key.partition(":")
    try:
        length = float(option)
    except ValueError:
        length = float("nan")
    if kind != "se" or not (length > 0 and math.isfinite(length)):
        raise ConfigError(f"{source}: [{where}] key {key!r}: a squared-exponential prior is "
                          "written 'se:<length>' with a length > 0 in the grid's units, e.g. "
                          "\"se:0.2\".")
    return se_key(length)


def auto_weights(regularisers: Mapping[str, Mapping[str, float | str]]) -> list[str]:
    """The loss terms (`"reg:<u>:<kind>"`) of `[regularisers]` whose weight is `"auto"`."""
    return [f"reg:{u}:{k}" for u, kinds in regularisers.items() for k, w in kinds.items()
            if w == "auto"]


def _param(name: str, default: Any, value: Any, where: str):
    """`value` if it has the type of `default` (an integer for a float is widened)."""
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif isinstance(default, float):
        ok, expected = _finite(value), "a finite number"
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    else:
        ok, expected = True, ""
    if not ok:
        raise ConfigError(
            f"{where} key {name!r} must be {expected} (its default is {default!r}), got "
            f"{value!r} ({type(value).__name__})."
        )
    return value


def _problem_table(raw: Any, source: str, base: pathlib.Path):
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: [problem] must be a table, got {raw!r}.")
    prob = dict(raw)
    has_file, has_name = "file" in prob, "name" in prob
    if has_file == has_name:
        raise ConfigError(
            f'{source}: [problem] needs either file = "my_pde.py" (a problem file, relative '
            f'to the configuration\'s folder) or name = "<shipped problem>" (one of '
            f"{shipped_problems()}), {'not both' if has_file else 'got neither'}."
        )
    key = "file" if has_file else "name"
    value = prob.pop(key)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: [problem] key {key!r} must be a string, got {value!r}.")
    if has_file:
        target: str | pathlib.Path = base / value
    else:
        if value not in shipped_problems():
            raise ConfigError(
                f"{source}: [problem] unknown problem {value!r}; shipped problems are "
                f'{shipped_problems()} (or give file = "my_pde.py").'
            )
        target = value
    try:
        module = load_problem(target)
    except MollijaxError as e:
        raise ConfigError(f"{source}: [problem] {key} = {value!r}: {e}") from None
    where = f"{source}: [problem]"
    known = defaults(module)
    bad = sorted(set(prob) - set(known))
    if bad:
        raise ConfigError(
            f"{where} unknown key(s) {bad} for problem {problem_name(module)!r}; expected some "
            f"of {sorted(known)}."
        )
    params = {k: _param(k, known[k], v, where) for k, v in prob.items()}
    return module, {**known, **params}


def _per_unknown(raw: Any, table: str, module, source: str) -> dict:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: [{table}] must be a table of tables.")
    for uname in raw:
        if uname not in module.UNKNOWNS:
            raise ConfigError(
                f"{source}: [{table}.{uname}] is not an unknown of "
                f"{problem_name(module)!r}; its unknowns are {sorted(module.UNKNOWNS)}."
            )
    return dict(raw)


def _check_unknown(u: UnknownConfig, hint: Mapping, where: str, source: str) -> None:
    networked = u.representation is not None and u.representation not in _REPRESENTATIONS
    for key in (*_NETWORK_KEYS, "output_scale"):
        if getattr(u, key) is not None and not networked:
            raise ConfigError(
                f"{source}: [{where}] key {key!r} is a network option; set representation to "
                f"a network ({names('network')}) or remove it."
            )
    constraint = u.constraint if u.constraint is not None else hint.get("constraint", "free")
    init = u.init if u.init is not None else hint.get("init")
    if init is None:
        return
    c = as_constraint(tuple(constraint) if isinstance(constraint, list) else constraint)
    try:
        c.inverse(init)
    except MollijaxError:
        raise ConfigError(
            f"{source}: [{where}] key 'init' = {init!r} violates the constraint {constraint!r}."
        ) from None


def _check_state(s: StateConfig, module, source: str) -> None:
    rep = s.representation
    if s.mollified_data is not None and rep in _STATES:
        raise ConfigError(
            f"{source}: [state] key 'mollified_data' applies to a network state; "
            f"representation {rep!r} fits no network to the data."
        )
    if s.sequential is not None and rep not in SEQUENCE_NETWORKS:
        raise ConfigError(
            f"{source}: [state] key 'sequential' applies to a PINNsFormer state "
            f"(representation {' or '.join(repr(n) for n in SEQUENCE_NETWORKS)}), not {rep!r}."
        )
    for key in _NETWORK_KEYS:
        if getattr(s, key) is not None and rep in _STATES:
            raise ConfigError(
                f"{source}: [state] key {key!r} is a network option; representation {rep!r} "
                "takes none."
            )
    for key, reps in (("accuracy", ("evolve", "solve", "auto")), ("substeps", ("evolve",)),
                      ("integrator", ("evolve", "auto")), ("solver", ("solve", "auto"))):
        if getattr(s, key) is not None and rep not in reps:
            which = " or ".join(f'"{r}"' for r in reps)
            raise ConfigError(
                f"{source}: [state] key {key!r} applies only to representation = {which}."
            )
    if rep == "evolve" and getattr(module, "EVOLUTION", None) is None:
        raise ConfigError(
            f'{source}: [state] representation = "evolve": problem '
            f"{problem_name(module)!r} has no evolution form u_t = F(u) (`EVOLUTION`)."
        )
    if rep == "solve":
        why = steady_refusal(module)
        if why:
            raise ConfigError(f'{source}: [state] representation = "solve": {why}')


def steady_refusal(module) -> str:
    """Why the observed fields of a problem file cannot be a solved steady state ('' if
    they can): a time axis (an `EVOLUTION`), no `conditions`, or more than one field."""
    name = problem_name(module)
    if getattr(module, "EVOLUTION", None) is not None:
        return (f"problem {name!r} evolves in time (`EVOLUTION`); a steady state has no time "
                'axis: use representation = "evolve".')
    if not callable(getattr(module, "conditions", None)):
        return (f"problem {name!r} defines no `conditions(dataset)`: a solved state needs its "
                "boundary values.")
    if len(module.STATE) != 1:
        return (f"problem {name!r} observes {len(module.STATE)} fields {tuple(module.STATE)}; "
                "a solved steady state is one field.")
    res = module.residuals
    if not callable(res) and len(res) != 1 and "pde" not in res:
        return (f"problem {name!r} has residuals {sorted(res)}; the steady state solves one: "
                'name it "pde".')
    return ""


_SIMULATE_KEYS = ("noise", "seed")
_FILE_KEYS = ("path", "fields", "known", "masks", "truth", "domain", "spacing", "origin",
              "axes")


def _data_section(table: Any, source: str) -> DataConfig:
    """[data], with the keys of the other source refused (they would be ignored)."""
    data = _section(DataConfig, table, "data", source)
    other = _FILE_KEYS if data.source == "simulate" else _SIMULATE_KEYS
    ignored = [k for k in other if k in table]
    if ignored:
        wanted = "file" if data.source == "simulate" else "simulate"
        raise ConfigError(
            f'{source}: [data] key(s) {ignored} apply only to source = "{wanted}"; this table '
            f"has source = {data.source!r} (they would be ignored)."
        )
    if data.source == "file" and not data.fields:
        raise ConfigError(
            f'{source}: [data] source = "file" needs `fields` (a table field = "array name '
            'or file") naming the observed data.'
        )
    return data


def from_dict(
    raw: Mapping[str, Any], source: str = "<memory>", base: str | os.PathLike | None = None
) -> Config:
    """Validate a configuration given as nested dicts (the parsed TOML).

    `base` is the folder a `[problem] file` is relative to (default: the current folder).
    """
    extra = sorted(set(raw) - set(_TABLES))
    if extra:
        raise ConfigError(f"{source}: unknown table(s) {extra}; expected some of {list(_TABLES)}.")
    if "problem" not in raw:
        raise ConfigError(
            f'{source}: [problem] needs file = "my_pde.py" or name = "<shipped problem>".'
        )
    base = pathlib.Path(base) if base is not None else pathlib.Path()
    module, params = _problem_table(raw["problem"], source, base)
    data = _data_section(raw.get("data", {}), source)
    if data.source == "simulate" and not hasattr(module, "simulate"):
        raise ConfigError(
            f"{source}: [data] source = \"simulate\" (the default), but the problem file "
            f"{problem_name(module)!r} defines no `simulate`: give the measurements with "
            '[data] source = "file", path = ..., fields = {...}.'
        )
    if data.source == "file":
        given = sorted(k for k in raw["problem"] if k not in ("name", "file"))
        if given:
            raise ConfigError(
                f"{source}: [problem] key(s) {given} are parameters of the problem's simulator, "
                f'used only with [data] source = "simulate"; this run reads its data from a '
                "file (they would be ignored)."
            )
        params = {}  # the simulator's parameters say nothing about data read from a file
    unknowns = {}
    for uname, table in _per_unknown(raw.get("unknowns", {}), "unknowns", module, source).items():
        where = f"unknowns.{uname}"
        unknowns[uname] = _section(UnknownConfig, table, where, source)
        _check_unknown(unknowns[uname], module.UNKNOWNS[uname], where, source)
    regs = {
        uname: _weights(table, f"regularisers.{uname}", source, "regulariser")
        for uname, table in _per_unknown(
            raw.get("regularisers", {}), "regularisers", module, source
        ).items()
    }
    state_table = raw.get("state", {})
    if "state" not in raw and set(raw) <= _AUTO_TABLES:
        state_table = {"representation": "auto"}  # only [problem] and [data]: the default
    state = _section(StateConfig, state_table, "state", source)
    _check_state(state, module, source)
    return Config(
        problem=problem_name(module),
        problem_file=str(pathlib.Path(module.__file__).resolve()),
        params=params,
        data=data,
        derivatives=_section(DerivativesConfig, raw.get("derivatives", {}), "derivatives", source),
        unknowns=unknowns,
        state=state,
        regularisers=regs,
        weights=_weights(raw.get("weights", {}), "weights", source),
        optimiser=_section(OptimiserConfig, raw.get("optimiser", {}), "optimiser", source),
        output=_section(OutputConfig, raw.get("output", {}), "output", source),
        batch=_section(BatchConfig, raw.get("batch", {}), "batch", source),
        uncertainty=_section(UncertaintyConfig, raw.get("uncertainty", {}), "uncertainty",
                             source),
        source=source,
    )


def read_toml(path: str | os.PathLike) -> dict:
    """The parsed TOML file `path`: UTF-8 text (a leading byte-order mark is allowed, as some
    editors write one); anything else is a `ConfigError` naming the file and the place."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ConfigError(f"Configuration file {str(path)!r} does not exist.")
    if not path.is_file():
        raise ConfigError(f"Configuration file {str(path)!r} is not a file (a folder?).")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or e}.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line}, column "
            f"{column}; save the file as UTF-8."
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes).")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a TOML run configuration (UTF-8, see `read_toml`)."""
    path = pathlib.Path(path)
    return from_dict(read_toml(path), str(path), path.parent)


def shipped_config(name: str) -> Config:
    """The shipped configuration `configs/<name>.toml` (`"default"`: the default run)."""
    try:
        path = shipped("configs", f"{name}.toml")
    except MollijaxError:
        raise ConfigError(
            f"No shipped configuration {name!r}; there are {shipped_configs()}."
        ) from None
    return load_config(path)


def shipped_problems() -> list[str]:
    """The names of the shipped problem files (`problems/*.py`)."""
    folder = examples_root() / "problems"
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def shipped_configs() -> list[str]:
    """The names of the shipped configurations (`configs/*.toml`)."""
    return [p.stem for p in find_configs(examples_root() / "configs")]


def find_configs(root: str | os.PathLike = "configs") -> list[pathlib.Path]:
    """TOML files under `root` whose [problem] table names a problem (file or name)."""
    out = []
    for path in sorted(pathlib.Path(root).glob("*.toml")):
        try:
            raw = read_toml(path)
        except ConfigError:
            continue
        prob = raw.get("problem")
        if isinstance(prob, Mapping) and ("name" in prob or "file" in prob):
            out.append(path)
    return out
