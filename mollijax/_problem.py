"""Declarative inverse problems: a data set, loss terms and a derivative method.

A `Problem` says *what* is fitted; `fit` says *how*. Its loss is a weighted sum of terms
(`mollijax._terms`), each reported separately in the fit history:

    L = sum_k w_k L_k,   L_k in {data:<f>, residual:<r>, condition:<c>, reg:<u>:<kind>}.

The weights are values inside the terms, so a fit with other weights reuses the compiled
code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._dataset import Dataset, check_domain, check_field_name
from ._differentiators import AbstractDifferentiator, Autodiff, FiniteDifference, Mollifier, Taylor
from ._errors import GridMismatchError, MollijaxError
from ._evolution import Evolution
from ._fields import AbstractField, check_axes
from ._grid import Grid
from ._scope import PointField, Scope, UnknownFieldError
from ._steady import Steady
from ._terms import AbstractTerm, Condition, DataMisfit, Evaluation, Residual, check_weight

KINDS = ("data", "residual", "condition", "reg")
POINT_MODES = {"autodiff": Autodiff, "taylor": Taylor}


def _derivatives(derivatives, grid: Grid, has_residuals: bool):
    """`(differentiator, mode)`: mode "grid" for grid differentiators, "autodiff" or
    "taylor" for pointwise differentiation of network fields."""
    if derivatives is None:
        if not has_residuals:  # nothing to mollify
            return FiniteDifference(grid), "grid"
        return Mollifier(grid, tuple(4 * h for h in grid.spacing)), "grid"
    if isinstance(derivatives, str):
        if derivatives not in POINT_MODES:
            raise MollijaxError(
                f"`derivatives` must be a differentiator (Mollifier, FiniteDifference, "
                f"Spectral, Autodiff, Taylor) or one of {tuple(POINT_MODES)}, got "
                f"{derivatives!r}."
            )
        return POINT_MODES[derivatives](grid), derivatives
    if not isinstance(derivatives, AbstractDifferentiator):
        raise MollijaxError(
            "`derivatives` must be a differentiator (Mollifier, FiniteDifference, Spectral, "
            f"Autodiff, Taylor) or one of {tuple(POINT_MODES)}, got "
            f"{type(derivatives).__name__}."
        )
    if derivatives.grid != grid:
        raise GridMismatchError(
            "`derivatives` was built for a different grid than the problem's: "
            f"{derivatives.grid} vs {grid}."
        )
    for mode, cls in POINT_MODES.items():
        if isinstance(derivatives, cls):
            return derivatives, mode
    return derivatives, "grid"


def _erode(mask: np.ndarray, width: tuple[int, ...]) -> np.ndarray:
    """The nodes of `mask` whose box of half-widths `width` lies inside `mask` (nodes
    beyond the grid's edge count as outside): one erosion along each axis in turn."""
    out = mask.copy()
    for axis, w in enumerate(width):
        n = mask.shape[axis]
        if w == 0:
            continue
        if 2 * w >= n:
            return np.zeros_like(mask)
        base = out
        out = base.copy()
        for shift in range(1, w + 1):
            ahead = np.zeros_like(base)
            behind = np.zeros_like(base)
            idx = [slice(None)] * mask.ndim
            src, dst = list(idx), list(idx)
            src[axis], dst[axis] = slice(shift, n), slice(0, n - shift)
            ahead[tuple(dst)] = base[tuple(src)]  # ahead[i] = base[i + shift]
            src[axis], dst[axis] = slice(0, n - shift), slice(shift, n)
            behind[tuple(dst)] = base[tuple(src)]  # behind[i] = base[i - shift]
            out &= ahead & behind
    return out


class Problem(eqx.Module):
    """An inverse problem on a grid.

    **Arguments:**

    - `grid`: the `Grid`, or a `Dataset` (then `data`, `masks` and `known` come from it).
    - `residuals`: a function `r(s) -> field` of a `Scope`, or a dict of named ones (`None`:
      none, e.g. when an `evolution` makes the PDE hold by construction).
    - `data`: observed fields, `{name: array of grid shape}`. A name that is also an
      unknown gets a data-misfit term; a name that is not is used as the field itself
      (derivatives of the mollified data).
    - `masks`: `{name: bool array}`, True where the data is observed. NaN in data is an
      error unless masked out.
    - `known`: fields that are given, not fitted (a source term, a known coefficient).
    - `conditions`: `Condition`s (boundary, initial).
    - `regularisers`: loss terms on the unknowns (`Tikhonov`, `H1`, `TV`, or
      `Regulariser(unknown, kind, weight)`), or `(term, weight)` pairs.
    - `weights`: per term (`"data:u"`) or per kind (`"data"`, `"residual"`, `"condition"`,
      `"reg"`) loss weights, multiplying the terms' own; default 1. Finite and >= 0.
    - `derivatives`: a grid differentiator (default: a `Mollifier` with `eps` 4 grid steps
      on every axis); `Autodiff(grid)` / `Taylor(grid)` (or `"autodiff"` / `"taylor"`)
      differentiate network fields pointwise.
    - `margin`: nodes dropped from each end of every axis in the residual terms (default:
      the differentiator's halo on non-periodic axes, where padding biases derivatives).
    - `evolution`: an `Evolution`: the fields it names are not fitted freely but integrated
      in time from their initial values (their unknowns live on the spatial axes), so their
      PDE holds by construction; their data terms then fit the whole evolution.
    - `steady`: a `Steady`: the fields it names are the solution of its residual
      `R(u; coefficients) = 0` with their conditions imposed exactly, solved inside the loss
      and differentiated implicitly (they are not unknowns); their data terms then measure
      the misfit of the solution (output error).
    - `terms`: further loss terms (any `AbstractTerm`).
    - `mollified_data`: True (every data field), or names of data fields, whose data term
      compares the mollified field `f * phi_eps` with the data (on the residuals' interior)
      instead of `f` itself (`DataMisfit(..., mollified=True)`; the mollifier-layers paper's
      choice for a network state). Default False.
    - `domain`: a boolean array of the grid's shape, True inside an irregular domain (a
      nucleus in a field of view). The data terms count observed nodes inside it, the
      regularisers the nodes (and neighbour pairs) inside it, and the residuals only its
      band: the nodes at least `domain_margin` nodes from its edge along every axis, whose
      residual reads no value outside (mollified derivatives of a field that is arbitrary
      outside are wrong within a kernel's reach of the edge). Nested derivatives
      (`d(D d(u))`) reach further: `prepare` (run by `fit`, `laplace`, `auto_run`) drops the
      band nodes whose residual still reads a value outside, found by perturbing every
      field outside the domain. Values of the unknowns outside the domain are not
      determined by the loss (their error bars are NaN).
    - `domain_margin`: the band's distance from the domain's edge, an integer or one per
      axis (default: the differentiator's halo, the reach of one derivative).

    Field names are checked when the problem is built: a name that the residual's scope
    uses for a method (`d`, `lap`, `grad`, `div`, `coord`, `apply`, `grid`, `used`) is an
    error.
    """

    grid: Grid = eqx.field(static=True)
    data: dict[str, Array]
    masks: dict[str, Array]
    known: dict[str, Array]
    terms: tuple[AbstractTerm, ...]
    derivatives: AbstractDifferentiator = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    margin: tuple[int, ...] = eqx.field(static=True)
    complete: tuple[str, ...] = eqx.field(static=True)
    evolution: Evolution | None
    steady: Steady | None
    domain: Array | None
    band: Array | None
    domain_width: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        grid: Grid | Dataset,
        residuals: Callable | Mapping[str, Callable] | None = None,
        data: Mapping[str, object] | None = None,
        *,
        masks: Mapping[str, object] | None = None,
        known: Mapping[str, object] | None = None,
        conditions: Sequence[Condition] = (),
        regularisers: Sequence[AbstractTerm | tuple[AbstractTerm, float]] = (),
        weights: Mapping[str, float] | None = None,
        derivatives: AbstractDifferentiator | str | None = None,
        margin: int | Sequence[int] | None = None,
        evolution: Evolution | None = None,
        steady: Steady | None = None,
        terms: Sequence[AbstractTerm] = (),
        domain: ArrayLike | None = None,
        domain_margin: int | Sequence[int] | None = None,
        mollified_data: bool | Sequence[str] = False,
    ):
        if isinstance(grid, Dataset):
            if data is not None or masks is not None or known is not None:
                raise MollijaxError(
                    "`grid` is a Dataset: give `data`, `masks` and `known` in it, not again."
                )
            dataset = grid
            if dataset.domain is not None:
                if domain is not None:
                    raise MollijaxError(
                        "`grid` is a Dataset with a `domain`: give the domain in it, not again."
                    )
                domain = dataset.domain
        else:
            dataset = Dataset(grid, dict(data or {}), masks=dict(masks or {}),
                              known=dict(known or {}))
        grid = dataset.grid
        self.grid = grid
        self.data = {k: jnp.asarray(v) for k, v in dataset.data.items()}
        self.masks = {k: jnp.asarray(dataset.mask(k)) for k in dataset.data}
        self.known = {k: jnp.asarray(v) for k, v in dataset.known.items()}
        self.complete = dataset.complete

        if residuals is None:
            residuals = {}
        if callable(residuals):
            residuals = {"pde": residuals}
        if not isinstance(residuals, Mapping) or not all(callable(r) for r in residuals.values()):
            raise MollijaxError("`residuals` must be a function or a dict of named functions.")
        if isinstance(mollified_data, bool):
            smooth = set(self.data) if mollified_data else set()
        else:
            smooth = set(mollified_data)
            if not all(isinstance(n, str) for n in smooth) or not smooth <= set(self.data):
                raise MollijaxError(
                    f"`mollified_data` must be True, False or names of data fields "
                    f"{sorted(self.data)}, got {mollified_data!r}."
                )
        all_terms: list[AbstractTerm] = [DataMisfit(n, mollified=n in smooth)
                                         for n in self.data]
        all_terms += [Residual(fn, str(label)) for label, fn in residuals.items()]
        for c in conditions:
            if not isinstance(c, Condition):
                raise MollijaxError(f"`conditions` must hold Condition objects, got {c!r}.")
            all_terms.append(c)
        for r in regularisers:
            term, w = (r, None) if isinstance(r, AbstractTerm) else tuple(r)
            if not isinstance(term, AbstractTerm):
                raise MollijaxError(
                    f"`regularisers` must hold loss terms (Tikhonov, H1, TV, Regulariser(...)) "
                    f"or (term, weight) pairs, got {r!r}."
                )
            if w is not None:
                term = term.with_weight(term.weight * check_weight(w, f"weight of {term.name!r}"))
            all_terms.append(term)
        for t in terms:
            if not isinstance(t, AbstractTerm):
                raise MollijaxError(f"`terms` must hold loss terms, got {t!r}.")
            all_terms.append(t)
        names = [t.name for t in all_terms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise MollijaxError(f"Loss terms {dup} are given more than once.")
        table = dict(weights or {})
        for key, value in table.items():
            if key not in KINDS and key not in names:
                raise MollijaxError(
                    f"`weights` names {key!r}, which is not a loss term or kind; terms are "
                    f"{sorted(names)}, kinds {KINDS}."
                )
            check_weight(value, f"`weights[{key!r}]`")
        scaled = []
        for t in all_terms:
            factor = table.get(t.name, table.get(t.kind))
            if factor is not None:
                t = t.with_weight(t.weight * check_weight(factor, f"`weights[{t.name!r}]`"))
            scaled.append(t)
        self.terms = tuple(scaled)

        self.derivatives, self.mode = _derivatives(derivatives, grid, bool(residuals))
        if evolution is not None:
            if not isinstance(evolution, Evolution):
                raise MollijaxError(
                    f"`evolution` must be a mollijax.Evolution, got {type(evolution).__name__}."
                )
            evolution.check_grid(grid)
            if self.mode != "grid":
                raise MollijaxError(
                    f"`evolution` needs grid derivatives for the residuals, not {self.mode!r}: "
                    "the evolved fields exist only on the grid."
                )
            for name in evolution.names:
                check_field_name(name, f"evolution[{name!r}]")
                if name in self.known:
                    raise MollijaxError(
                        f"Field {name!r} is both evolved by `evolution` and `known`; pick one."
                    )
        self.evolution = evolution
        if steady is not None:
            if not isinstance(steady, Steady):
                raise MollijaxError(
                    f"`steady` must be a mollijax.Steady, got {type(steady).__name__}."
                )
            if self.mode != "grid":
                raise MollijaxError(
                    f"`steady` needs grid derivatives, not {self.mode!r}: the solved state "
                    "exists only on the grid."
                )
            steady.check_grid(grid)
            for name in steady.names:
                check_field_name(name, f"steady[{name!r}]")
                if name in self.known:
                    raise MollijaxError(
                        f"Field {name!r} is both solved by `steady` and `known`; pick one."
                    )
                if evolution is not None and name in evolution.names:
                    raise MollijaxError(
                        f"Field {name!r} is both evolved and solved as a steady state; pick one."
                    )
        self.steady = steady
        if not residuals and evolution is None and steady is None and not self.data:
            raise MollijaxError("A Problem needs residuals, data, an evolution or a steady state.")
        if margin is None:
            halo = getattr(self.derivatives, "halo", (0,) * grid.ndim)
            modes = getattr(self.derivatives, "boundary", ("",) * grid.ndim)
            margin = tuple(0 if m in ("periodic", "valid") else h
                           for h, m in zip(halo, modes, strict=True))
        elif isinstance(margin, int | np.integer):
            margin = (int(margin),) * grid.ndim
        margin = tuple(margin)
        if (len(margin) != grid.ndim
                or any(not isinstance(m, int | np.integer) or m < 0 for m in margin)
                or any(2 * m >= n for m, n in zip(margin, grid.shape, strict=True))):
            raise MollijaxError(
                f"`margin` {margin} must give one integer width >= 0 per axis that leaves "
                f"an interior in the grid {grid.shape}."
            )
        self.margin = tuple(int(m) for m in margin)
        self.domain, self.band, self.domain_width = None, None, ()
        if domain is not None:
            self._set_domain(domain, domain_margin)
        elif domain_margin is not None:
            raise MollijaxError("`domain_margin` is given without a `domain`.")

    def _set_domain(self, domain, domain_margin) -> None:
        """Check the domain, restrict the data to it and erode it to the residuals' band."""
        grid = self.grid
        mask = check_domain(domain, grid)
        if self.evolution is not None or self.steady is not None:
            raise MollijaxError(
                "`domain` with an `evolution` or a `steady` state is not supported: the state "
                "is computed on the whole rectangle, where the coefficients outside the domain "
                "are undetermined; fit the state (equation error) on the domain instead."
            )
        halo = getattr(self.derivatives, "halo", (0,) * grid.ndim)
        if domain_margin is None:  # one derivative deep; `prepare` trims deeper reads
            width = tuple(halo)
        elif isinstance(domain_margin, int | np.integer):
            width = (int(domain_margin),) * grid.ndim
        else:
            width = tuple(domain_margin)
        if (len(width) != grid.ndim
                or any(not isinstance(w, int | np.integer) or w < 0 for w in width)):
            raise MollijaxError(
                f"`domain_margin` {domain_margin!r} must be an integer >= 0 or one per axis "
                f"({grid.ndim} axes)."
            )
        self.domain_width = tuple(int(w) for w in width)
        band = _erode(mask, width)
        crop = tuple(slice(m, n - m) for m, n in zip(self.margin, grid.shape, strict=True))
        band = band[crop]
        if not band.any() and any(isinstance(t, Residual) for t in self.terms):
            raise MollijaxError(
                f"`domain` ({int(mask.sum())} nodes) has no node farther than "
                f"`domain_margin` {width} from its edge and inside the residuals' margin "
                f"{self.margin}: no residual can be evaluated on it; give a larger domain, a "
                "finer grid or a narrower kernel."
            )
        # a data field is usable as a field itself when observed on the whole domain
        self.complete = tuple(n for n in self.data
                              if bool(np.all(np.asarray(self.masks[n]) | ~mask)))
        for name, m in self.masks.items():
            inside = np.asarray(m) & mask
            if not inside.any():
                raise MollijaxError(
                    f"`data[{name!r}]` has no observed node inside `domain`."
                )
            self.masks[name] = jnp.asarray(inside)
        self.domain = jnp.asarray(mask)
        self.band = jnp.asarray(band)

    # ------------------------------------------------------------------ evaluation
    def term_names(self) -> list[str]:
        """Every loss term that does not depend on the unknowns (data terms do: see
        `active_terms`)."""
        return [t.name for t in self.terms if not isinstance(t, DataMisfit)]

    def active_terms(self, unknowns) -> tuple[AbstractTerm, ...]:
        """The terms of the loss for these unknowns: a data term only where its field is
        fitted (an unknown) or evolved."""
        solved = self.solved_names()
        return tuple(
            t for t in self.terms
            if not isinstance(t, DataMisfit) or t.field in unknowns or t.field in solved
        )

    def solved_names(self) -> tuple[str, ...]:
        """The fields that are computed, not fitted: evolved or solved steady states."""
        out: tuple[str, ...] = ()
        if self.evolution is not None:
            out += self.evolution.names
        if self.steady is not None:
            out += self.steady.names
        return out

    def divergence_hint(self) -> str:
        """What to change when a fit of this problem diverges ('' without a solved state)."""
        hints = [s.divergence_hint() for s in (self.evolution, self.steady) if s is not None]
        return " ".join(hints)

    def _check_unknowns(self, unknowns) -> None:
        if not isinstance(unknowns, Mapping):
            raise MollijaxError(
                f"`unknowns` must be a dict of name -> field, got {type(unknowns).__name__}."
            )
        for name, field in unknowns.items():
            check_field_name(name, f"unknowns[{name!r}]")
            if not isinstance(field, AbstractField):
                raise MollijaxError(
                    f"Unknown {name!r} must be a Constant, GridField or NetworkField, got "
                    f"{type(field).__name__}."
                )
            check_axes(field.axes, self.grid, name)
            if name in self.known:
                raise MollijaxError(f"Field {name!r} is both an unknown and `known`.")
        for t in self.terms:
            target = getattr(t, "unknown", None) or getattr(t, "field", None)
            if isinstance(t, DataMisfit) or target is None or target in unknowns:
                continue
            if target in self.solved_names():
                continue
            raise UnknownFieldError(
                f"Loss term {t.name!r} names {target!r}, which is not an unknown; "
                f"unknowns are {sorted(unknowns)}."
            )

    def grid_values(self, unknowns, used: set | None = None) -> dict[str, Array]:
        """Every unknown on the full grid (an evolved field: its integrated evolution)."""
        solved = self.solved_names()
        values = {
            name: f.on_grid(self.grid) for name, f in unknowns.items() if name not in solved
        }
        conditions = self._conditions()
        if self.evolution is not None:
            values.update(
                self.evolution.integrate(self.grid, unknowns, self.known, conditions, used)
            )
        if self.steady is not None:
            values.update(self.steady.solve(self.grid, unknowns, self.known, conditions, used))
        return values

    def _conditions(self) -> tuple[Condition, ...]:
        return tuple(t for t in self.terms if isinstance(t, Condition))

    def prepare(self, unknowns) -> Problem:
        """This problem with every choice that depends on the initial unknowns made (an
        `Evolution`'s integrator settings, e.g. RK4 substeps from the stiffness; `fit` calls
        this)."""
        out = self
        conditions = self._conditions()
        if self.evolution is not None:
            evo = self.evolution.prepare(self.grid, unknowns, self.known, conditions)
            out = eqx.tree_at(lambda p: p.evolution, out, evo)
        if self.steady is not None:
            steady = self.steady.prepare(self.grid, unknowns, self.known, conditions)
            out = eqx.tree_at(lambda p: p.steady, out, steady, is_leaf=lambda x: x is None)
        if self.domain is not None and self.mode == "grid":
            band = self._clean_band(unknowns)
            out = eqx.tree_at(lambda p: p.band, out, jnp.asarray(band))
        return out

    def band_on_grid(self) -> np.ndarray | None:
        """The domain's band on the full grid (False in the residuals' margin), or None
        without a domain: the nodes whose residuals count."""
        if self.band is None:
            return None
        out = np.zeros(self.grid.shape, bool)
        out[tuple(slice(m, n - m) for m, n in zip(self.margin, self.grid.shape,
                                                  strict=True))] = np.asarray(self.band)
        return out

    def _clean_band(self, unknowns) -> np.ndarray:
        """The band without the nodes whose residual reads a value outside the domain (nested
        derivatives reach further than one halo): every field is perturbed outside the domain
        at random and the residuals compared; a read with a weight below 1e-6 of the
        strongest one is round-off (an FFT mixes every node)."""
        band = np.asarray(self.band).copy()
        fns = [t.fn for t in self.active_terms(unknowns) if isinstance(t, Residual)]
        if not fns:
            return band
        outside = ~np.asarray(self.domain)
        rng = np.random.default_rng(0)

        def perturbed(arr):
            arr = jnp.asarray(arr)
            scale = float(jnp.max(jnp.abs(arr))) + 1.0
            noise = rng.standard_normal(self.grid.shape) * scale * outside
            return arr + jnp.asarray(noise, arr.dtype)

        values = self.grid_values(unknowns)
        other = eqx.tree_at(
            lambda p: (p.data, p.known), self,
            ({k: perturbed(v) for k, v in self.data.items()},
             {k: perturbed(v) for k, v in self.known.items()}),
        )
        moved = {k: perturbed(jnp.broadcast_to(v, self.grid.shape)) for k, v in values.items()}
        before, after = self._scope(unknowns, values), other._scope(unknowns, moved)
        for fn in fns:
            change = np.abs(np.asarray(self._evaluate_residual(fn, after))
                            - np.asarray(self._evaluate_residual(fn, before)))
            change = np.broadcast_to(change, band.shape)
            top = float(change.max())
            if top > 0:
                band &= change <= 1e-6 * top
        if not band.any():
            raise MollijaxError(
                f"`domain` ({int(np.asarray(self.domain).sum())} nodes): every residual node "
                "reads values outside it (nested derivatives reach further than the domain is "
                "wide); give a larger domain, a finer grid or a narrower kernel."
            )
        return band

    def _scope(self, unknowns, values) -> Scope:
        grid = self.grid
        mode = self.mode

        solved = self.solved_names()

        def lookup(name):
            if name in solved and mode == "grid":
                return values[name]
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
                        "(missing) nodes; represent it by an unknown fitted to the observed "
                        "nodes (e.g. a NetworkField; in a config, [state] representation = "
                        "\"mlp\")."
                    )
                if mode == "grid":
                    return arr
                flat = arr.reshape(-1)
                return PointField(lambda i, x: flat[i].astype(x.dtype), False)
            available = sorted(set(unknowns) | set(self.known) | set(self.data))
            raise UnknownFieldError(
                f"Field {name!r} is not an unknown, data or known field; available: "
                f"{available}. A field the equations use without fitting it is given as a "
                "known field: `Dataset(known={...})`, in a configuration `[data] known = "
                f"{{ {name} = \"<array in the file>\" }}`."
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

    def _evaluation(self, unknowns, values) -> Evaluation:
        scope = self._scope(unknowns, values)
        return Evaluation(self.grid, dict(unknowns), values, self.data, self.masks,
                          lambda fn: self._evaluate_residual(fn, scope), self.domain,
                          self.band)

    def loss_terms(self, unknowns) -> dict[str, Float[Array, ""]]:
        """Unweighted loss terms, keyed `data:<f>`, `residual:<r>`, `condition:<c>`, `reg:...`."""
        return self._terms_and_fields(unknowns)[0]

    def _terms_and_fields(self, unknowns):
        """`(loss_terms, grid_values)`: the terms and the fields they were computed from."""
        fields = self.grid_values(unknowns)
        ev = self._evaluation(unknowns, fields)
        return {t.name: t(ev) for t in self.active_terms(unknowns)}, fields

    def total(self, terms: Mapping[str, Array], adaptive: Mapping[str, Array] | None = None):
        """`sum_k w_k L_k` over the given terms (times adaptive weights where given)."""
        weights = {t.name: t.weight for t in self.terms}
        out = 0.0
        for name, value in terms.items():
            w = weights[name]
            if adaptive is not None and name in adaptive:
                w = w * adaptive[name]
            out = out + w.astype(value.dtype) * value
        return out

    def loss(self, unknowns, adaptive: Mapping[str, Array] | None = None):
        """`(total, terms)`: the weighted loss of `unknowns` and its unweighted terms."""
        terms = self.loss_terms(unknowns)
        return self.total(terms, adaptive), terms

    def with_data(
        self, data: Mapping[str, ArrayLike], known: Mapping[str, ArrayLike] | None = None
    ) -> Problem:
        """This problem with the values of (some of) its data and known fields replaced, same
        shapes and names (one item of a batch). Masked nodes keep no meaning: the masks are
        the problem's."""
        for name, value in {**data, **(known or {})}.items():
            table = self.data if name in data else self.known
            if name not in table:
                raise UnknownFieldError(
                    f"`with_data`: {name!r} is not a data or known field of the problem; data "
                    f"fields are {sorted(self.data)}, known {sorted(self.known)}."
                )
            if jnp.shape(value) != self.grid.shape:
                raise GridMismatchError(
                    f"`with_data`: {name!r} must have the grid's shape {self.grid.shape}, got "
                    f"{jnp.shape(value)}."
                )
        new = {k: jnp.asarray(v) for k, v in data.items()}
        out = eqx.tree_at(lambda p: p.data, self, dict(self.data, **new))
        if known:
            new = {k: jnp.asarray(v) for k, v in known.items()}
            out = eqx.tree_at(lambda p: p.known, out, dict(self.known, **new))
        return out

    def with_weights(self, weights: Mapping[str, float]) -> Problem:
        """This problem with the named terms' weights replaced (values, so a fit with other
        weights reuses the compiled code)."""
        names = [t.name for t in self.terms]
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise MollijaxError(f"`weights` names {unknown}, not loss terms; terms are {names}.")
        return eqx.tree_at(
            lambda p: p.terms, self,
            tuple(t.with_weight(weights[t.name]) if t.name in weights else t for t in self.terms),
        )

    def check(self, unknowns) -> dict[str, jax.ShapeDtypeStruct]:
        """Validate `unknowns` against the problem without compiling anything.

        Traces the loss abstractly (`jax.eval_shape`), so that an unknown field name in a
        residual, an unknown that no term uses, or a residual of the wrong shape is reported
        before any compilation.
        """
        self._check_unknowns(unknowns)
        used: set[str] = set()
        # shapes and names do not depend on the integrator's settings: trace with one
        # substep, so that checking does not run the stiffness estimate `prepare` runs
        prepared = self
        if self.evolution is not None:
            prepared = eqx.tree_at(lambda p: p.evolution, self, self.evolution.traceable())

        def run(u):
            values = prepared.grid_values(u, used)
            scope = self._scope(u, values)
            for t in self.active_terms(u):
                if not isinstance(t, Residual):
                    continue
                out = t.fn(scope)
                if self.mode == "grid":
                    shape = np.shape(out)
                    try:
                        np.broadcast_shapes(shape, self.grid.shape)
                    except ValueError:
                        raise GridMismatchError(
                            f"Residual {t.label!r} returned shape {shape}, which does not "
                            f"broadcast to the grid {self.grid.shape}."
                        ) from None
            used.update(scope.used)
            return prepared.loss_terms(u)

        shapes = eqx.filter_eval_shape(run, unknowns)
        used |= {n for n in self.data if n in unknowns}
        used |= set(self.solved_names())
        used |= {c.field for c in self._conditions()}
        unused = sorted(set(unknowns) - used)
        if unused:
            raise MollijaxError(
                f"Unknown(s) {unused} are never used by a residual, data term or condition; "
                "remove them or use them."
            )
        return shapes
