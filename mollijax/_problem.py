"""Declarative inverse problems: data, residuals, conditions and regularisers.

A `Problem` says *what* is fitted; `fit` says *how*. Its loss is a weighted sum of terms,

    L = sum_k w_k L_k,
    data:<f>        mean over observed nodes of (f - f_obs)^2,
    residual:<r>    mean over the interior of r(s)^2,
    condition:<c>   mean over the selected nodes of (f - value)^2,
    reg:<u>:<kind>  tikhonov: mean(u^2); smooth: sum_a mean((du/dx_a)^2); tv: mean(|grad u|),

each term reported separately in the fit history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._differentiators import AbstractDifferentiator, FiniteDifference, Mollifier
from ._errors import GridMismatchError, MollijaxError, NonFiniteError, describe
from ._evolution import Evolution, integrate, stable_substeps, with_substeps
from ._fields import AbstractField, check_axes
from ._grid import Grid
from ._scope import PointField, Scope, UnknownFieldError

REGULARISERS = ("tikhonov", "smooth", "tv")
POINT_MODES = ("autodiff", "taylor")


class Condition(eqx.Module):
    """A boundary or initial condition `f = value` on part of the grid.

    **Arguments:**

    - `field`: name of the field it constrains.
    - `where`: `{"t": 0}` (node 0 along axis t; several axes allowed, negative indices too)
      or a boolean mask of the grid's shape.
    - `value`: number or array broadcastable to the selected nodes.
    - `name`: label in the loss history (default `"<field>@<where>"`).
    """

    field: str = eqx.field(static=True)
    index: tuple = eqx.field(static=True)
    mask: Array | None
    value: Array
    name: str = eqx.field(static=True)

    def __init__(self, field: str, where, value, name: str | None = None):
        self.field = field
        if isinstance(where, Mapping):
            self.index = tuple(sorted((str(k), int(v)) for k, v in where.items()))
            self.mask = None
            label = ",".join(f"{k}={v}" for k, v in self.index)
        else:
            self.index = ()
            self.mask = jnp.asarray(np.asarray(where, dtype=bool))
            label = "mask"
        value = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(f"Condition on {field!r}: `value` contains NaN or inf.")
        self.value = jnp.asarray(value)
        self.name = name or f"{field}@{label}"

    def select(self, values: Array, grid: Grid) -> tuple[Array, Array | None]:
        if self.mask is not None:
            if self.mask.shape != grid.shape:
                raise GridMismatchError(
                    f"Condition {self.name!r}: mask must have the grid's shape {grid.shape}, "
                    f"got {self.mask.shape}."
                )
            return values, self.mask
        idx: list = [slice(None)] * grid.ndim
        for axis, i in self.index:
            a = grid.axis_index(axis)
            if not -grid.shape[a] <= i < grid.shape[a]:
                raise GridMismatchError(
                    f"Condition {self.name!r}: index {i} out of range for axis {axis!r} of "
                    f"size {grid.shape[a]}."
                )
            idx[a] = i
        return values[tuple(idx)], None

    def loss(self, values: Array, grid: Grid) -> Array:
        selected, mask = self.select(values, grid)
        err = (selected - self.value.astype(selected.dtype)) ** 2
        if mask is None:
            return jnp.mean(err)
        return jnp.sum(jnp.where(mask, err, 0.0)) / jnp.maximum(jnp.sum(mask.astype(err.dtype)), 1.0)


class Regulariser(eqx.Module):
    """A penalty on one unknown: `"tikhonov"`, `"smooth"` (H1 seminorm) or `"tv"`."""

    unknown: str = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    delta: float = eqx.field(static=True, default=1e-6)

    def __check_init__(self):
        if self.kind not in REGULARISERS:
            raise MollijaxError(
                f"Unknown regulariser kind {self.kind!r} for {self.unknown!r}; expected one of "
                f"{REGULARISERS}."
            )

    @property
    def name(self) -> str:
        return f"reg:{self.unknown}:{self.kind}"

    def __call__(self, field: AbstractField, grid: Grid) -> Array:
        v = field.on_subgrid(grid)
        if self.kind == "tikhonov":
            return jnp.mean(v**2)
        if not field.axes:
            raise MollijaxError(
                f"Regulariser {self.kind!r} on {self.unknown!r} does nothing: it is a constant."
            )
        grads = []
        for k, axis in enumerate(field.axes):
            h = grid.spacing[grid.axis_index(axis)]
            g = jnp.diff(v, axis=k) / h
            # trim the other axes to a common shape
            for j in range(v.ndim):
                if j != k:
                    g = jax.lax.slice_in_dim(g, 0, v.shape[j] - 1, axis=j)
            grads.append(g)
        sq = sum(g**2 for g in grads)
        if self.kind == "smooth":
            return jnp.mean(sq)
        return jnp.mean(jnp.sqrt(sq + self.delta**2))


def _as_array(value, grid: Grid, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise MollijaxError(f"`{where}` must be a real array, got dtype {arr.dtype}.")
    if arr.shape != grid.shape:
        raise GridMismatchError(
            f"`{where}` must have the grid's shape {grid.shape}, got {describe(arr)}."
        )
    return arr.astype(np.float64)


class Problem(eqx.Module):
    """An inverse problem on a grid.

    **Arguments:**

    - `grid`: the `Grid`.
    - `residuals`: a function `r(s) -> field` of a `Scope`, or a dict of named ones (`None`:
      none, e.g. when an `evolution` makes the PDE hold by construction).
    - `data`: observed fields, `{name: array of grid shape}`. A name that is also an
      unknown gets a data-misfit term; a name that is not is used as the field itself
      (derivatives of the mollified data).
    - `masks`: `{name: bool array}`, True where the data is observed. NaN in data is an
      error unless masked out.
    - `known`: fields that are given, not fitted (a source term, a known coefficient).
    - `conditions`: `Condition`s (boundary, initial).
    - `regularisers`: `Regulariser`s.
    - `weights`: per term (`"data:u"`) or per kind (`"data"`, `"residual"`, `"condition"`,
      `"reg"`) loss weights; default 1.
    - `derivatives`: a grid differentiator (default: a `Mollifier` with `eps` 4 grid steps
      on every axis), or `"autodiff"` / `"taylor"` to differentiate network fields pointwise.
    - `margin`: nodes dropped from each end of every axis in the residual terms (default:
      the differentiator's halo on non-periodic axes, where padding biases derivatives).
    - `evolution`: an `Evolution`: the fields it names are not fitted freely but integrated
      in time from their initial values (their unknowns live on the spatial axes), so their
      PDE holds by construction; their data terms then fit the whole evolution.
    """

    grid: Grid = eqx.field(static=True)
    residuals: tuple[tuple[str, Callable], ...] = eqx.field(static=True)
    data: dict[str, Array]
    masks: dict[str, Array]
    known: dict[str, Array]
    conditions: tuple[Condition, ...]
    regularisers: tuple[tuple[Regulariser, float], ...] = eqx.field(static=True)
    weights: tuple[tuple[str, float], ...] = eqx.field(static=True)
    derivatives: AbstractDifferentiator | str = eqx.field(static=True)
    margin: tuple[int, ...] = eqx.field(static=True)
    complete: tuple[str, ...] = eqx.field(static=True)
    evolution: Evolution | None

    def __init__(
        self,
        grid: Grid,
        residuals: Callable | Mapping[str, Callable] | None,
        data: Mapping[str, object] | None = None,
        *,
        masks: Mapping[str, object] | None = None,
        known: Mapping[str, object] | None = None,
        conditions: Sequence[Condition] = (),
        regularisers: Sequence[Regulariser | tuple[Regulariser, float]] = (),
        weights: Mapping[str, float] | None = None,
        derivatives: AbstractDifferentiator | str | None = None,
        margin: int | Sequence[int] | None = None,
        evolution: Evolution | None = None,
    ):
        if not isinstance(grid, Grid):
            raise MollijaxError(f"`grid` must be a mollijax.Grid, got {type(grid).__name__}.")
        self.grid = grid
        if residuals is None:
            residuals = {}
        if callable(residuals):
            residuals = {"pde": residuals}
        if not isinstance(residuals, Mapping) or not all(callable(r) for r in residuals.values()):
            raise MollijaxError("`residuals` must be a function or a dict of named functions.")
        self.residuals = tuple((str(k), v) for k, v in residuals.items())
        data, masks, known = dict(data or {}), dict(masks or {}), dict(known or {})
        for name in masks:
            if name not in data:
                raise UnknownFieldError(
                    f"`masks[{name!r}]` has no matching data; data fields are {sorted(data)}."
                )
        clean_data, clean_masks = {}, {}
        for name, value in data.items():
            arr = _as_array(value, grid, f"data[{name!r}]")
            mask = np.ones(grid.shape, bool)
            if name in masks:
                mask = np.asarray(masks[name])
                if mask.shape != grid.shape or mask.dtype != bool:
                    raise GridMismatchError(
                        f"`masks[{name!r}]` must be a boolean array of the grid's shape "
                        f"{grid.shape}, got {describe(mask)}."
                    )
            bad = ~np.isfinite(arr) & mask
            if bad.any():
                raise NonFiniteError(
                    f"`data[{name!r}]` has {int(bad.sum())} NaN or inf value(s) at observed "
                    "nodes; mask them out with `masks`."
                )
            clean_data[name] = jnp.asarray(np.where(mask, arr, 0.0))
            clean_masks[name] = jnp.asarray(mask)
        self.data, self.masks = clean_data, clean_masks
        self.complete = tuple(n for n, m in clean_masks.items() if bool(np.all(np.asarray(m))))
        clean_known = {}
        for name, value in known.items():
            if name in data:
                raise MollijaxError(f"Field {name!r} is both `known` and `data`; pick one.")
            arr = _as_array(value, grid, f"known[{name!r}]")
            if not np.all(np.isfinite(arr)):
                raise NonFiniteError(f"`known[{name!r}]` contains NaN or inf.")
            clean_known[name] = jnp.asarray(arr)
        self.known = clean_known
        for c in conditions:
            if not isinstance(c, Condition):
                raise MollijaxError(f"`conditions` must hold Condition objects, got {c!r}.")
        self.conditions = tuple(conditions)
        regs = []
        for r in regularisers:
            reg, w = (r, 1.0) if isinstance(r, Regulariser) else r
            if not isinstance(reg, Regulariser):
                raise MollijaxError(f"`regularisers` must hold Regulariser objects, got {r!r}.")
            regs.append((reg, float(w)))
        self.regularisers = tuple(regs)
        self.weights = tuple(sorted((str(k), float(v)) for k, v in (weights or {}).items()))
        if derivatives is None and not self.residuals:
            derivatives = FiniteDifference(grid)  # nothing to mollify: no residuals
        elif derivatives is None:
            derivatives = Mollifier(grid, tuple(4 * h for h in grid.spacing))
        if isinstance(derivatives, str):
            if derivatives not in POINT_MODES:
                raise MollijaxError(
                    f"`derivatives` must be a differentiator or one of {POINT_MODES}, got "
                    f"{derivatives!r}."
                )
        elif not isinstance(derivatives, AbstractDifferentiator):
            raise MollijaxError(
                f"`derivatives` must be a differentiator (Mollifier, ...) or one of "
                f"{POINT_MODES}, got {type(derivatives).__name__}."
            )
        elif derivatives.grid != grid:
            raise GridMismatchError(
                "`derivatives` was built for a different grid than the problem's: "
                f"{derivatives.grid} vs {grid}."
            )
        self.derivatives = derivatives
        if evolution is not None:
            if not isinstance(evolution, Evolution):
                raise MollijaxError(
                    f"`evolution` must be a mollijax.Evolution, got {type(evolution).__name__}."
                )
            evolution.check_grid(grid)
            if isinstance(derivatives, str):
                raise MollijaxError(
                    f"`evolution` needs grid derivatives for the residuals, not {derivatives!r}: "
                    "the evolved fields exist only on the grid."
                )
            for name in evolution.names:
                if name in known:
                    raise MollijaxError(
                        f"Field {name!r} is both evolved by `evolution` and `known`; pick one."
                    )
        self.evolution = evolution
        if not self.residuals and evolution is None and not data:
            raise MollijaxError("A Problem needs residuals, data or an evolution.")
        if margin is None:
            halo = getattr(derivatives, "halo", (0,) * grid.ndim)
            modes = getattr(derivatives, "boundary", ("",) * grid.ndim)
            margin = tuple(0 if m in ("periodic", "valid") else h for h, m in zip(halo, modes, strict=True))
        elif isinstance(margin, int):
            margin = (margin,) * grid.ndim
        self.margin = tuple(int(m) for m in margin)
        if len(self.margin) != grid.ndim or any(2 * m >= n for m, n in zip(self.margin, grid.shape, strict=True)):
            raise MollijaxError(
                f"`margin` {self.margin} must give one non-negative width per axis that leaves "
                f"an interior in the grid {grid.shape}."
            )

    # ------------------------------------------------------------------ evaluation
    @property
    def mode(self) -> str:
        return self.derivatives if isinstance(self.derivatives, str) else "grid"

    def term_names(self) -> list[str]:
        names = [f"residual:{n}" for n, _ in self.residuals]
        names += [f"condition:{c.name}" for c in self.conditions]
        names += [reg.name for reg, _ in self.regularisers]
        return names

    def weight(self, term: str) -> float:
        table = dict(self.weights)
        if term in table:
            return table[term]
        kind = term.split(":", 1)[0]
        return table.get(kind, 1.0)

    def _check_unknowns(self, unknowns) -> None:
        if not isinstance(unknowns, Mapping):
            raise MollijaxError(
                f"`unknowns` must be a dict of name -> field, got {type(unknowns).__name__}."
            )
        for name, field in unknowns.items():
            if not isinstance(field, AbstractField):
                raise MollijaxError(
                    f"Unknown {name!r} must be a Constant, GridField or NetworkField, got "
                    f"{type(field).__name__}."
                )
            check_axes(field.axes, self.grid, name)
            if name in self.known:
                raise MollijaxError(f"Field {name!r} is both an unknown and `known`.")
        for reg, _ in self.regularisers:
            if reg.unknown not in unknowns:
                raise UnknownFieldError(
                    f"Regulariser {reg.kind!r} names {reg.unknown!r}, which is not an unknown; "
                    f"unknowns are {sorted(unknowns)}."
                )
        for c in self.conditions:
            if c.field not in unknowns:
                raise UnknownFieldError(
                    f"Condition {c.name!r} constrains {c.field!r}, which is not an unknown; "
                    f"unknowns are {sorted(unknowns)}."
                )
        named = set(dict(self.weights)) - {"data", "residual", "condition", "reg"}
        known_terms = set(self.term_names()) | {f"data:{n}" for n in self.data if n in unknowns}
        for key in named:
            if key not in known_terms:
                raise MollijaxError(
                    f"`weights` names {key!r}, which is not a loss term; terms are "
                    f"{sorted(known_terms)}."
                )

    def grid_values(self, unknowns, used: set | None = None) -> dict[str, Array]:
        """Every unknown on the full grid (an evolved field: its integrated evolution)."""
        values = {
            name: f.on_grid(self.grid)
            for name, f in unknowns.items()
            if self.evolution is None or name not in self.evolution.names
        }
        if self.evolution is not None:
            values.update(
                integrate(self.evolution, self.grid, unknowns, self.known, self.conditions, used)
            )
        return values

    def prepare(self, unknowns) -> Problem:
        """This problem with every choice that depends on the initial unknowns made.

        An `Evolution` with `substeps=None` gets its Runge-Kutta substeps from the stiffness
        of its right-hand side at `unknowns` (`fit` calls this).
        """
        evo = self.evolution
        if evo is None or evo.substeps is not None:
            return self
        n = stable_substeps(evo, self.grid, unknowns, self.known, self.conditions)
        return self._with_substeps(n)

    def _with_substeps(self, n: int) -> Problem:
        return eqx.tree_at(lambda p: p.evolution, self, with_substeps(self.evolution, n))

    def _scope(self, unknowns, values) -> Scope:
        grid = self.grid
        mode = self.mode

        def lookup(name):
            if name in unknowns:
                if mode == "grid":
                    return values[name]
                field = unknowns[name]
                return PointField(lambda i, x: field.at_point(grid, i, x), field.smooth)
            if name in self.known or name in self.data:
                arr = self.known[name] if name in self.known else self.data[name]
                if name in self.data and name not in self.complete:
                    raise MollijaxError(
                        f"Field {name!r} is used as data directly, but its data has masked "
                        "(missing) nodes; represent it by an unknown fitted to the observed nodes (e.g. a "
                        "NetworkField; in a config, [state] representation = \"mlp\")."
                    )
                if mode == "grid":
                    return arr
                flat = arr.reshape(-1)
                return PointField(lambda i, x: flat[i].astype(x.dtype), False)
            available = sorted(set(unknowns) | set(self.known) | set(self.data))
            raise UnknownFieldError(
                f"Field {name!r} is not an unknown, data or known field; available: "
                f"{available}."
            )

        return Scope(grid, lookup, self.derivatives, mode)

    def _evaluate_residual(self, fn, scope) -> Array:
        out = fn(scope)
        if self.mode == "grid":
            out = jnp.broadcast_to(out, self.grid.shape)
        else:
            if not isinstance(out, PointField):
                raise MollijaxError("A residual in point mode must return a field expression.")
            points = self.grid.points()
            idx = jnp.arange(self.grid.size)
            out = jax.vmap(out.fn)(idx, points).reshape(self.grid.shape)
        crop = tuple(slice(m, n - m) for m, n in zip(self.margin, self.grid.shape, strict=True))
        return out[crop]

    def loss_terms(self, unknowns) -> dict[str, Float[Array, ""]]:
        """Unweighted loss terms, keyed `data:<f>`, `residual:<r>`, `condition:<c>`, `reg:...`."""
        values = self.grid_values(unknowns)
        terms = {}
        for name in self.data:
            if name in unknowns:
                mask = self.masks[name]
                err = jnp.where(mask, values[name] - self.data[name], 0.0)
                terms[f"data:{name}"] = jnp.sum(err**2) / jnp.maximum(jnp.sum(mask.astype(err.dtype)), 1.0)
        scope = self._scope(unknowns, values)
        for name, fn in self.residuals:
            r = self._evaluate_residual(fn, scope)
            terms[f"residual:{name}"] = jnp.mean(r**2)
        for c in self.conditions:
            terms[f"condition:{c.name}"] = c.loss(values[c.field], self.grid)
        for reg, _ in self.regularisers:
            terms[reg.name] = reg(unknowns[reg.unknown], self.grid)
        return terms

    def total(self, terms: Mapping[str, Array], adaptive: Mapping[str, Array] | None = None):
        """`sum_k w_k L_k` (times adaptive weights where given)."""
        out = 0.0
        for name, value in terms.items():
            w = self.weight(name)
            if name.startswith("reg:"):
                w = w * dict((r.name, rw) for r, rw in self.regularisers)[name]
            if adaptive is not None and name in adaptive:
                w = w * adaptive[name]
            out = out + w * value
        return out

    def loss(self, unknowns, adaptive: Mapping[str, Array] | None = None):
        """`(total, terms)`: the weighted loss of `unknowns` and its unweighted terms."""
        terms = self.loss_terms(unknowns)
        return self.total(terms, adaptive), terms

    def with_data(self, data: Mapping[str, Array], known: Mapping[str, Array] | None = None) -> Problem:
        """This problem with the values of its data (and known) fields replaced, same shapes
        and names (one item of a batch)."""
        out = eqx.tree_at(lambda p: p.data, self, dict(data))
        if known is not None:
            out = eqx.tree_at(lambda p: p.known, out, dict(known))
        return out

    def check(self, unknowns) -> dict[str, jax.ShapeDtypeStruct]:
        """Validate `unknowns` against the problem without compiling anything.

        Traces the loss abstractly (`jax.eval_shape`), so that an unknown field name in a
        residual, an unknown that no term uses, or a residual of the wrong shape is reported
        before any compilation.
        """
        self._check_unknowns(unknowns)
        used: set[str] = set()
        # shapes and names do not depend on the substeps: trace with one, so that checking
        # does not run the stiffness estimate that `prepare` (in `fit`) runs
        evo = self.evolution
        prepared = self if evo is None or evo.substeps is not None else self._with_substeps(1)

        def run(u):
            values = prepared.grid_values(u, used)
            scope = self._scope(u, values)
            for name, fn in self.residuals:
                out = fn(scope)
                if self.mode == "grid":
                    shape = np.shape(out)
                    try:
                        np.broadcast_shapes(shape, self.grid.shape)
                    except ValueError:
                        raise GridMismatchError(
                            f"Residual {name!r} returned shape {shape}, which does not "
                            f"broadcast to the grid {self.grid.shape}."
                        ) from None
            used.update(scope.used)
            return prepared.loss_terms(u)

        shapes = eqx.filter_eval_shape(run, unknowns)
        used |= {n for n in self.data if n in unknowns}
        if self.evolution is not None:
            used |= set(self.evolution.names)
        used |= {c.field for c in self.conditions}
        unused = sorted(set(unknowns) - used)
        if unused:
            raise MollijaxError(
                f"Unknown(s) {unused} are never used by a residual, data term or condition; "
                "remove them or use them."
            )
        return shapes
