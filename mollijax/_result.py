"""What a training run returns: `FitResult` (one fit, or a batch of fits) and `Status`."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import pathlib

import equinox as eqx
import jax
import numpy as np

from . import _checkpoint
from ._checkpoint import CorruptFileError
from ._errors import MollijaxError


class Status(enum.StrEnum):
    """How a fit (or one item of a batch) ended."""

    completed = "completed"
    diverged = "diverged"
    interrupted = "interrupted"
    skipped = "skipped"  # a batch item left out before training (e.g. NaN data)


_GROUPS = ("values", "fields", "history")


@dataclasses.dataclass
class FitResult:
    """What `fit` and `fit_batch` return.

    For a single fit:

    - `unknowns`: the trained unknowns (same structure as given);
    - `values`: each unknown on its own sub-grid (NumPy), e.g. `D(x)` as a 1-D array;
    - `fields`: each unknown on the full grid (NumPy);
    - `history`: `{term: (steps,)}` per-step unweighted terms, plus `"total"` (weighted);
    - `status`: a `Status`; `message`: why it ended; `steps`: steps taken (for a diverged
      fit, the step of the returned last finite-loss iterate);
    - `final_loss`: weighted loss of the returned unknowns;
    - `wall_time`: seconds spent in the call (compilation included); `checkpoint`: its path.

    For a batch of `B` items (`batched` is True), every array has a leading item axis:
    `unknowns` leaves `(B, ...)` (`item(b)` gives item `b`'s unknowns as `fit` returns
    them), `values`/`fields` `(B, ...)`, `history` `(B, steps)` with NaN after an item
    stopped, `status` a `(B,)` array of `Status` values (strings), `steps` and `final_loss`
    `(B,)`, `names` the item labels and `reasons` why each item stopped (`""` when it
    completed). A skipped item (e.g. NaN data at observed nodes) has NaN everywhere.
    """

    unknowns: dict | None
    values: dict[str, np.ndarray]
    fields: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    status: Status | np.ndarray
    steps: int | np.ndarray
    wall_time: float
    message: str = ""
    checkpoint: str | None = None
    final_loss: float | np.ndarray = math.nan
    names: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def batched(self) -> bool:
        """True for the result of `fit_batch` (leading item axis everywhere)."""
        return isinstance(self.status, np.ndarray)

    @property
    def size(self) -> int:
        """Number of items of a batch."""
        self._need_batch("size")
        return int(self.status.shape[0])

    @property
    def ok(self) -> bool | np.ndarray:
        """True where the fit (item) completed: a bool, or `(B,)` booleans for a batch."""
        if self.batched:
            return self.status == Status.completed.value
        return self.status == Status.completed

    def item(self, b: int) -> dict:
        """Unknowns of item `b` (the structure `fit` takes and returns)."""
        self._need_batch("item")
        if self.unknowns is None:
            raise MollijaxError("This result holds no unknowns: load it with `like=`.")
        return jax.tree_util.tree_map(
            lambda x: x[b] if eqx.is_inexact_array(x) else x, self.unknowns
        )

    def _need_batch(self, what: str) -> None:
        if not self.batched:
            raise MollijaxError(f"`FitResult.{what}` is for batch results (from `fit_batch`).")

    def summary(self) -> str:
        """A few readable lines: how each fit ended."""
        if not self.batched:
            return f"{self.status.value} after {self.steps} steps in {self.wall_time:.1f} s"
        done = int(self.ok.sum())
        lines = [f"{done}/{self.size} items completed in {self.wall_time:.1f} s"]
        for b in np.flatnonzero(~self.ok):
            label = self.names[b] if self.names else str(b)
            line = f"  item {label}: {self.status[b]} at step {int(self.steps[b])}"
            if self.status[b] == Status.skipped.value and self.reasons:
                line += f" ({self.reasons[b]})"
            lines.append(line)
        return "\n".join(lines)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write a self-describing, checksummed file: JSON header + arrays (+ the unknowns)."""
        arrays = {g: {k: np.asarray(v) for k, v in getattr(self, g).items()} for g in _GROUPS}
        arrays["final_loss"] = np.asarray(self.final_loss)
        batched = self.batched
        header = {
            "kind": "fit-result",
            "batched": batched,
            "status": [str(s) for s in self.status] if batched else self.status.value,
            "steps": [int(s) for s in self.steps] if batched else int(self.steps),
            "wall_time": float(self.wall_time),
            "message": self.message,
            "names": list(self.names),
            "reasons": list(self.reasons),
            "layout": {g: sorted(arrays[g]) for g in _GROUPS},
            "has_unknowns": self.unknowns is not None,
        }
        tree = {"arrays": arrays}
        if self.unknowns is not None:
            tree["unknowns"] = self.unknowns
        return _checkpoint.write(path, header, tree)

    @classmethod
    def load(cls, path: str | os.PathLike, like: dict | None = None) -> FitResult:
        """Read a saved result, verifying every checksum and length.

        Pass `like` (unknowns of the same structure; for a batch, one item's) to restore
        the unknowns. A truncated or corrupted file raises `CorruptFileError`.
        """
        header, leaves = _checkpoint.read(path)
        if header.get("kind") != "fit-result":
            raise MollijaxError(f"`path` {path} is not a saved FitResult.")
        try:
            layout = {g: list(header["layout"][g]) for g in _GROUPS}
            batched = bool(header["batched"])
            count = sum(len(v) for v in layout.values()) + 1
        except (KeyError, TypeError):
            raise CorruptFileError(f"{path}: the header lacks the result's layout.") from None
        if len(leaves) < count:
            raise CorruptFileError(f"{path} holds {len(leaves)} arrays, its layout needs {count}.")
        # jax.tree_util flattens dicts in sorted-key order: arrays (final_loss last), unknowns
        it = iter(leaves[:count])
        groups = {}
        for g in sorted([*_GROUPS, "final_loss"]):
            if g == "final_loss":
                final = next(it)
            else:
                groups[g] = {k: next(it) for k in sorted(layout[g])}
        unknowns = None
        if header.get("has_unknowns") and like is not None:
            template = dict(like)
            if batched:
                size = len(header["status"])
                template = jax.tree_util.tree_map(
                    lambda x: np.zeros((size, *np.shape(x)), np.asarray(x).dtype)
                    if eqx.is_inexact_array(x) else x,
                    template,
                )
            unknowns = _checkpoint.unflatten(template, leaves[count:], path, dtypes=False)
        if batched:
            status = np.asarray(header["status"])
            steps = np.asarray(header["steps"], dtype=np.int64)
            final_loss = final
        else:
            status, steps, final_loss = Status(header["status"]), int(header["steps"]), float(final)
        return cls(
            unknowns=unknowns,
            values=groups["values"],
            fields=groups["fields"],
            history=groups["history"],
            status=status,
            steps=steps,
            wall_time=float(header["wall_time"]),
            message=header.get("message", ""),
            final_loss=final_loss,
            names=tuple(header.get("names", ())),
            reasons=tuple(header.get("reasons", ())),
        )
