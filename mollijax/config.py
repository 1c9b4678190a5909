"""Run configurations: TOML files parsed into frozen dataclasses.

A configuration has the tables

    [problem]            name = "<ready problem>", then any of its simulation parameters
    [data]               source = "simulate" (noise, seed) or "file" (path, fields, grid)
    [derivatives]        method, kernel, eps ("auto" or a number or one per axis), boundary
    [unknowns.<name>]    representation, constraint, init, axes, network options
    [state]              representation of the observed fields, network options
    [regularisers.<u>]   kind = weight, e.g. smooth = 1e-4
    [weights]            term or kind = weight
    [optimiser]          name (adam | lbfgs), learning_rate, steps, chunk, seed
    [output]             dir

Every key is checked: an unknown key or a value of the wrong type is a `ConfigError` naming
the file, the table and the key. `default_config(name)` builds a ready problem's default run
in code (from its `CONFIG` dict), so it works without any file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tomllib
from collections.abc import Mapping
from typing import Any

from ._errors import MollijaxError

_NUMBER = (int, float)
_EPS = (str, int, float, list)
_CONSTRAINT = (str, list)


class ConfigError(MollijaxError):
    """A configuration file or table is malformed: unknown key, wrong type, bad value."""


def _f(default: Any, types: tuple, choices: tuple | None = None):
    meta = {"types": types, "choices": choices}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the observations come from.

    `source = "simulate"` runs the problem's simulator with relative `noise` and `seed`.
    `source = "file"` reads `path` (.npz, .npy, .tif); `fields` maps each observed field to
    an array name in an .npz (or to a file of its own); `known`, `masks` and `truth` do the
    same for given fields, observation masks and true unknowns. The grid has the data's
    shape, `spacing` and `origin` per axis, and axis names `axes`.
    """

    source: str = _f("simulate", (str,), ("simulate", "file"))
    noise: float = _f(0.0, _NUMBER)
    seed: int = _f(0, (int,))
    path: str | None = _f(None, (str,))
    fields: dict = _f({}, (dict,))
    known: dict = _f({}, (dict,))
    masks: dict = _f({}, (dict,))
    truth: dict = _f({}, (dict,))
    spacing: list | float | None = _f(None, (list, float, int))
    origin: list | float | None = _f(None, (list, float, int))
    axes: list | None = _f(None, (list,))


@dataclasses.dataclass(frozen=True)
class DerivativesConfig:
    method: str = _f("mollifier", (str,), ("mollifier", "finite_difference", "autodiff", "taylor"))
    kernel: str = _f("bump", (str,), ("bump", "polynomial", "gaussian"))
    eps: str | float | list = _f("auto", _EPS)
    boundary: str | list = _f("odd", (str, list))


@dataclasses.dataclass(frozen=True)
class UnknownConfig:
    representation: str | None = _f(None, (str,), ("grid", "constant", "mlp", "fourier", "pirate"))
    constraint: str | list | None = _f(None, _CONSTRAINT)
    init: float | None = _f(None, _NUMBER)
    axes: list | None = _f(None, (list,))
    width: int | None = _f(None, (int,))
    depth: int | None = _f(None, (int,))
    features: int | None = _f(None, (int,))
    scale: float | None = _f(None, _NUMBER)
    blocks: int | None = _f(None, (int,))
    output_scale: float | None = _f(None, _NUMBER)


@dataclasses.dataclass(frozen=True)
class StateConfig:
    representation: str = _f("data", (str,), ("data", "mlp", "fourier", "pirate", "evolve"))
    width: int | None = _f(None, (int,))
    depth: int | None = _f(None, (int,))
    features: int | None = _f(None, (int,))
    scale: float | None = _f(None, _NUMBER)
    blocks: int | None = _f(None, (int,))
    accuracy: int | None = _f(None, (int,))
    substeps: int | None = _f(None, (int,))


@dataclasses.dataclass(frozen=True)
class OptimiserConfig:
    """`adam` uses a cosine decay from `learning_rate` to 1 % over `steps`; `lbfgs` is optax's
    L-BFGS with its line search (`learning_rate` unused)."""

    name: str = _f("adam", (str,), ("adam", "lbfgs"))
    learning_rate: float = _f(1e-3, _NUMBER)
    steps: int = _f(1000, (int,))
    chunk: int = _f(250, (int,))
    seed: int = _f(0, (int,))


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
    field: str = _f("", (str,))
    key: str = _f("", (str,))
    devices: int = _f(0, (int,))
    dtype: str = _f("float64", (str,), ("float32", "float64"))


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    dir: str | None = _f(None, (str,))


@dataclasses.dataclass(frozen=True)
class Config:
    """A parsed run configuration; `source` is the file it came from (or `<default NAME>`)."""

    problem: str
    params: dict
    data: DataConfig
    derivatives: DerivativesConfig
    unknowns: dict[str, UnknownConfig]
    state: StateConfig
    regularisers: dict[str, dict[str, float]]
    weights: dict[str, float]
    optimiser: OptimiserConfig
    output: OutputConfig
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    source: str = "<memory>"

    def to_dict(self) -> dict:
        """A JSON-able echo of the configuration."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


_TABLES = ("problem", "data", "derivatives", "unknowns", "state", "regularisers", "weights",
           "optimiser", "output", "batch")


def _type_name(types: tuple) -> str:
    names = {int: "integer", float: "number", str: "string", list: "array", dict: "table"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


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
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigError(
                f"{source}: [{where}] key {key!r} must be a {_type_name(types)}, got "
                f"{value!r} ({type(value).__name__})."
            )
        if meta["choices"] and value not in meta["choices"]:
            raise ConfigError(
                f"{source}: [{where}] key {key!r} must be one of {meta['choices']}, got {value!r}."
            )
        out[key] = float(value) if isinstance(value, int) and float in types else value
    return cls(**out)


def _numbers(table: Any, where: str, source: str) -> dict[str, float]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [{where}] must be a table, got {table!r}.")
    out = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, _NUMBER):
            raise ConfigError(
                f"{source}: [{where}] key {key!r} must be a number, got {value!r}."
            )
        out[str(key)] = float(value)
    return out


def from_dict(raw: Mapping[str, Any], source: str = "<memory>") -> Config:
    """Validate a configuration given as nested dicts (the parsed TOML)."""
    from . import problems

    extra = sorted(set(raw) - set(_TABLES))
    if extra:
        raise ConfigError(
            f"{source}: unknown table(s) {extra}; expected some of {list(_TABLES)}."
        )
    prob = dict(raw.get("problem", {}))
    if "name" not in prob or not isinstance(prob["name"], str):
        raise ConfigError(
            f"{source}: [problem] needs name = \"<problem>\"; ready problems are "
            f"{problems.names()}."
        )
    name = prob.pop("name")
    try:
        module = problems.get(name)
    except MollijaxError as e:
        raise ConfigError(f"{source}: [problem] {e}") from None
    bad = sorted(set(prob) - set(module.DEFAULTS))
    if bad:
        raise ConfigError(
            f"{source}: [problem] unknown key(s) {bad} for problem {name!r}; expected some of "
            f"{sorted(module.DEFAULTS)}."
        )
    unknowns_raw = raw.get("unknowns", {})
    if not isinstance(unknowns_raw, Mapping):
        raise ConfigError(f"{source}: [unknowns] must be a table of tables.")
    unknowns = {}
    for uname, table in unknowns_raw.items():
        if uname not in module.UNKNOWNS:
            raise ConfigError(
                f"{source}: [unknowns.{uname}] is not an unknown of {name!r}; its unknowns are "
                f"{sorted(module.UNKNOWNS)}."
            )
        unknowns[uname] = _section(UnknownConfig, table, f"unknowns.{uname}", source)
    regs_raw = raw.get("regularisers", {})
    if not isinstance(regs_raw, Mapping):
        raise ConfigError(f"{source}: [regularisers] must be a table of tables.")
    regs = {}
    for uname, table in regs_raw.items():
        if uname not in module.UNKNOWNS:
            raise ConfigError(
                f"{source}: [regularisers.{uname}] is not an unknown of {name!r}; its unknowns "
                f"are {sorted(module.UNKNOWNS)}."
            )
        kinds = _numbers(table, f"regularisers.{uname}", source)
        for kind in kinds:
            if kind not in ("tikhonov", "smooth", "tv"):
                raise ConfigError(
                    f"{source}: [regularisers.{uname}] unknown key {kind!r}; expected one of "
                    "['smooth', 'tikhonov', 'tv']."
                )
        regs[uname] = kinds
    return Config(
        problem=name,
        params={**module.DEFAULTS, **prob},
        data=_section(DataConfig, raw.get("data", {}), "data", source),
        derivatives=_section(DerivativesConfig, raw.get("derivatives", {}), "derivatives", source),
        unknowns=unknowns,
        state=_section(StateConfig, raw.get("state", {}), "state", source),
        regularisers=regs,
        weights=_numbers(raw.get("weights", {}), "weights", source),
        optimiser=_section(OptimiserConfig, raw.get("optimiser", {}), "optimiser", source),
        output=_section(OutputConfig, raw.get("output", {}), "output", source),
        batch=_section(BatchConfig, raw.get("batch", {}), "batch", source),
        source=source,
    )


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a TOML run configuration."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"Configuration file {str(path)!r} does not exist.")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(raw, str(path))


def default_config(name: str) -> Config:
    """The default run of a ready problem, built in code from its `CONFIG` dict."""
    from . import problems

    module = problems.get(name)
    raw = {k: dict(v) for k, v in getattr(module, "CONFIG", {}).items()}
    raw["problem"] = {"name": name, **raw.get("problem", {})}
    return from_dict(raw, f"<default {name}>")


def find_configs(root: str | os.PathLike = "configs") -> list[pathlib.Path]:
    """TOML files under `root` whose [problem] names a ready problem."""
    out = []
    for path in sorted(pathlib.Path(root).glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if isinstance(raw.get("problem"), Mapping) and "name" in raw["problem"]:
            out.append(path)
    return out
