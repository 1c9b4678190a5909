"""Problem files: a plain Python file that describes one inverse problem, loaded by path.

A problem file (a shipped one in `problems/`, or a user's own anywhere) defines

    DESCRIPTION   str, one line
    ORDER         int >= 1, the highest derivative order of its residuals (sets `eps = "auto"`)
    UNKNOWNS      {name: {"axes": (...), "constraint": ..., "init": ...}}, hints for the
                  fields to recover (`axes=()`: a constant)
    STATE         the observed field names, e.g. ("u",)
    residuals     {name: r(s)} (or one function), written like the maths on the scope `s`

and optionally a simulator, `simulate(*, noise=0.0, seed=0, **params) -> Dataset` with
`DEFAULTS` (`{parameter: default}` of its parameters; without `simulate` the data come from
a file or a `Dataset`), `EVOLUTION` (`{field: F(s)}`, the right-hand side of `field_t = F`,
for an evolved state) and `conditions(dataset) -> list[Condition]`. It imports only `mollijax`
(and NumPy, SciPy, ...). Its name is the file's stem. `load_problem` imports and checks it;
`score` compares recovered unknowns with a data set's truth.
"""

from __future__ import annotations

import os
import pathlib
import types
from collections.abc import Mapping

import numpy as np

from ._dataset import Dataset, check_field_name
from ._errors import MollijaxError
from ._examples import ProblemFileError, load_file, shipped

REQUIRED = ("DESCRIPTION", "ORDER", "UNKNOWNS", "STATE", "residuals")
HINTS = ("axes", "constraint", "init")


def problem_name(module: types.ModuleType) -> str:
    """The name of a problem file: its stem (`my_pde.py` -> `"my_pde"`)."""
    return pathlib.Path(module.__file__).stem


def _is_path(problem) -> bool:
    if isinstance(problem, os.PathLike):
        return True
    return problem.endswith(".py") or "/" in problem or os.sep in problem


def load_problem(problem: str | os.PathLike) -> types.ModuleType:
    """The problem file `problem`: a path to a `.py` file, or the name of a shipped one.

        >>> import mollijax as mj
        >>> mine = mj.load_problem("my_pde.py")  # doctest: +SKIP
        >>> dataset = mine.simulate(noise=0.01)  # doctest: +SKIP

    A shipped problem is loaded by its name, the stem of its file in `problems/`
    (`mollijax list` shows them).

    **Returns:** the imported module, checked against the contract of a problem file (a
    `ProblemFileError` names the file and what is missing or malformed).
    """
    if not isinstance(problem, str | os.PathLike):
        raise ProblemFileError(
            f"A problem is a path to a .py file or a shipped problem's name, got {problem!r}."
        )
    if _is_path(problem):
        path = pathlib.Path(problem)
    else:
        if not problem.isidentifier() or problem.startswith("_"):
            raise ProblemFileError(f"{problem!r} is not the name of a shipped problem.")
        path = shipped("problems", f"{problem}.py")
    module = load_file(path)
    check_problem(module)
    return module


def check_problem(module: types.ModuleType) -> types.ModuleType:
    """`module` if it follows the contract of a problem file; a `ProblemFileError` naming
    the file and the attribute otherwise."""
    where = getattr(module, "__file__", module.__name__)
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise ProblemFileError(
            f"{where}: a problem file must define {list(REQUIRED)}; missing {missing}."
        )

    def bad(attr: str, expected: str):
        value = getattr(module, attr)
        return ProblemFileError(f"{where}: `{attr}` must be {expected}, got {value!r}.")

    if not isinstance(module.DESCRIPTION, str):
        raise bad("DESCRIPTION", "a string")
    if isinstance(module.ORDER, bool) or not isinstance(module.ORDER, int) or module.ORDER < 1:
        raise bad("ORDER", "an integer >= 1")
    if hasattr(module, "simulate") and not hasattr(module, "DEFAULTS"):
        raise ProblemFileError(
            f"{where}: a problem file with `simulate` must define `DEFAULTS`, the dict of its "
            "parameters' defaults ({} where it takes none)."
        )
    if not isinstance(defaults(module), Mapping) or not all(
        isinstance(k, str) for k in defaults(module)
    ):
        raise bad("DEFAULTS", "a dict of parameter name -> default value")
    state = module.STATE
    if isinstance(state, str) or not isinstance(state, tuple | list) or not state:
        raise bad("STATE", "a non-empty tuple of observed field names")
    for name in state:
        _field(name, where, "STATE")
    if not isinstance(module.UNKNOWNS, Mapping) or not module.UNKNOWNS:
        raise bad(
            "UNKNOWNS", "a non-empty dict {name: {'axes': ..., 'constraint': ..., 'init': ...}}"
        )
    for name, hint in module.UNKNOWNS.items():
        _field(name, where, "UNKNOWNS")
        if not isinstance(hint, Mapping) or set(hint) - set(HINTS):
            raise ProblemFileError(
                f"{where}: `UNKNOWNS[{name!r}]` must be a dict with keys among {HINTS}, got "
                f"{hint!r}."
            )
        axes = hint.get("axes", ())
        if isinstance(axes, str) or not all(isinstance(a, str) for a in axes):
            raise ProblemFileError(
                f"{where}: `UNKNOWNS[{name!r}]['axes']` must be a tuple of axis names, got "
                f"{axes!r}."
            )
    res = module.residuals
    if not callable(res) and not (
        isinstance(res, Mapping) and all(callable(f) for f in res.values())
    ):
        raise bad("residuals", "a function r(s) or a dict {name: r(s)}")
    if hasattr(module, "simulate") and not callable(module.simulate):
        raise bad("simulate", "a function simulate(*, noise, seed, **params) -> Dataset")
    evo = getattr(module, "EVOLUTION", None)
    if evo is not None and not (
        isinstance(evo, Mapping) and evo and all(callable(f) for f in evo.values())
    ):
        raise bad("EVOLUTION", "a dict {field: F(s)} (the right-hand side of field_t = F)")
    if evo is not None:
        for name in evo:
            if name not in state:
                raise ProblemFileError(
                    f"{where}: `EVOLUTION` evolves {name!r}, which is not in `STATE` {state}."
                )
    if hasattr(module, "conditions") and not callable(module.conditions):
        raise bad("conditions", "a function conditions(dataset) -> list[Condition]")
    return module


def defaults(module: types.ModuleType) -> Mapping:
    """The problem file's `DEFAULTS` (its simulator's parameters); `{}` without one."""
    return getattr(module, "DEFAULTS", {})


def _field(name, where: str, attr: str) -> None:
    try:
        check_field_name(name, f"{where}: `{attr}`")
    except MollijaxError as e:
        raise ProblemFileError(str(e)) from None


def simulate(module: types.ModuleType, **kwargs) -> Dataset:
    """`module.simulate(**kwargs)`, checked to return a `Dataset` holding every `STATE`
    field."""
    where = getattr(module, "__file__", module.__name__)
    if not hasattr(module, "simulate"):
        raise ProblemFileError(
            f"{where} defines no `simulate`, so its data cannot be simulated: read them from "
            'a file ([data] source = "file", path = ...) or pass a mollijax.Dataset.'
        )
    dataset = module.simulate(**kwargs)
    if not isinstance(dataset, Dataset):
        raise ProblemFileError(
            f"{where}: `simulate` must return a mollijax.Dataset, got {type(dataset).__name__}."
        )
    missing = [f for f in module.STATE if f not in dataset.data]
    if missing:
        raise ProblemFileError(
            f"{where}: `simulate` returned no data for the observed field(s) {missing} of `STATE`."
        )
    return dataset


# ------------------------------------------------------------------------------ scoring
def _interior(shape: tuple[int, ...], margin: int | None) -> tuple[slice, ...]:
    out = []
    for n in shape:
        m = max(1, n // 10) if margin is None else int(margin)
        out.append(slice(m, n - m) if n > 2 * m else slice(None))
    return tuple(out)


def score(
    values: Mapping[str, np.ndarray], dataset: Dataset, margin: int | None = None
) -> dict[str, dict[str, float | int | list[int]]]:
    """Relative L2 error and correlation of each recovered unknown against its truth.

    For an unknown with truth `c` and recovery `c_hat` on its sub-grid, on the interior
    (`margin` nodes dropped from each end of every axis; default a tenth of the axis):

        rel_l2 = |c_hat - c|_2 / |c|_2,   corr = Pearson correlation of c_hat and c,
        max_abs = max |c_hat - c|,

    with `nodes` (how many were scored) and `margin` (the nodes dropped at each end, per
    axis) beside them, so an error computed over the whole grid (e.g. from `fields.npz`) is
    not mistaken for a different result.

    With a `dataset.domain`, an unknown on the whole grid is scored on the interior nodes
    inside the domain. Constants report `value`, `truth` and `rel_error = |c_hat - c| /
    |c|`. `values` is a dict `{unknown: array}` (`FitResult.values`, or an object with a
    `values` dict); unknowns without a truth in `dataset.truth` are skipped.
    """
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | np.integer)
                               or margin < 0):
        raise MollijaxError(
            f"score: `margin` must be None or an integer >= 0 (nodes dropped from each end "
            f"of every axis), got {margin!r}."
        )
    if not isinstance(dataset, Dataset):
        raise MollijaxError(
            f"score: `dataset` must be the `mj.Dataset` holding the truth, got "
            f"{type(dataset).__name__}."
        )
    if not isinstance(values, Mapping):
        values = values.values
    out: dict[str, dict[str, float | int | list[int]]] = {}
    for name, truth in dataset.truth.items():
        if name not in values:
            continue
        est = np.asarray(values[name], dtype=np.float64)
        truth = np.asarray(truth, dtype=np.float64)
        if est.shape != truth.shape:
            raise MollijaxError(
                f"Recovered {name!r} has shape {est.shape}, its truth {truth.shape}."
            )
        if truth.ndim == 0:
            out[name] = {
                "value": float(est),
                "truth": float(truth),
                "rel_error": float(abs(est - truth) / max(abs(truth), 1e-300)),
            }
            continue
        cut = _interior(truth.shape, margin)
        e, t = est[cut].ravel(), truth[cut].ravel()
        if dataset.domain is not None and truth.shape == dataset.grid.shape:
            inside = dataset.domain[cut].ravel()  # a grid unknown: its domain nodes only
            e, t = e[inside], t[inside]
        corr = float(np.corrcoef(e, t)[0, 1]) if e.std() > 0 and t.std() > 0 else float("nan")
        out[name] = {
            "rel_l2": float(np.linalg.norm(e - t) / max(np.linalg.norm(t), 1e-300)),
            "corr": corr,
            "max_abs": float(np.max(np.abs(e - t))),
            "nodes": int(e.size),  # of truth.size: the interior scored
            "margin": [0 if c.start is None else int(c.start) for c in cut],
        }
    return out
