"""Scaling with JAX's own machinery: device meshes, halo-exchange convolutions, tiled evaluation.

- `batch_mesh(devices)`: a 1-D `jax.sharding.Mesh` with axis `"batch"` (or any name).
- `shard_stack(x, mesh)`: place a stacked array `(B, ...)` with its leading axis split over
  the mesh (`NamedSharding(mesh, P(axis))`); works on one host or many.
- `sharded_derivatives(D, u, alphas, mesh)`: a tap-based differentiator (`Mollifier`,
  `FiniteDifference`) applied to a field split along one grid axis over the devices of a
  1-D mesh. Inside `shard_map` each device holds a slab, receives a halo of width `w`
  (the widest tap half-width along that axis) from each neighbour with
  `jax.lax.ppermute`, builds the boundary padding itself on the outer ends, and correlates
  locally. The result equals the unsharded one to round-off.
- `Sharded(D, mesh)`: the same, as a differentiator a `Problem` accepts.
- `evaluate_tiled(fn, points, tile)`: `vmap(fn)` over points in tiles with `lax.map` and
  `jax.checkpoint`, so that the backward pass holds one tile of activations at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Shaped

from ._conv import pad_axis, separable_apply
from ._differentiators import AbstractDifferentiator, _Separable, check_values
from ._errors import GridMismatchError, MollijaxError, describe
from ._grid import Grid
from ._multiindex import MultiIndexLike, parse_multi_index
from ._types import FieldLike, PointFn

OutputValues = Float[Array, "*output"]


# ----------------------------------------------------------------------------- meshes


def batch_mesh(devices: int | Sequence[jax.Device] | None = None, axis: str = "batch") -> Mesh:
    """A 1-D device mesh with one axis named `axis`.

    **Arguments:**

    - `devices`: `None` (every device of every process, `jax.devices()`), a count `n`
      (the first `n` of them) or an explicit list of devices.
    - `axis`: the mesh axis name (`"batch"` for stacks of problems, e.g. `"grid"` for a
      field split along one grid axis).

    **Returns:** a `jax.sharding.Mesh` of shape `(n,)`.
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise MollijaxError(
                f"`devices` must be between 1 and the {len(available)} available device(s) "
                f"({jax.default_backend()}), got {devices}. On CPU, more host devices need "
                "jax.config.update('jax_num_cpu_devices', n) before jax starts."
            )
        chosen = list(available[:devices])
    else:
        chosen = list(devices)
        if not chosen:
            raise MollijaxError("`devices` must name at least one device, got an empty list.")
    return Mesh(np.array(chosen), (axis,))


def _single_axis(mesh: Mesh, name: str) -> str:
    if not isinstance(mesh, Mesh):
        raise MollijaxError(f"`{name}` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    if len(mesh.axis_names) != 1:
        raise MollijaxError(
            f"`{name}` must be a 1-D mesh (one axis name), got axes {mesh.axis_names}."
        )
    return mesh.axis_names[0]


def shard_stack(
    x: Shaped[Array | np.ndarray, "batch ..."], mesh: Mesh
) -> Shaped[Array, "batch ..."]:
    """Place `x` with its leading axis split over the 1-D `mesh`.

    Every process must hold the full `x` (the usual case: each host loads the same stack);
    only the rows of its own devices are transferred, via `jax.make_array_from_callback`.
    The leading size must be a multiple of the mesh size.
    """
    axis = _single_axis(mesh, "mesh")
    n = mesh.devices.size
    if x.shape[0] % n:
        raise MollijaxError(
            f"The leading (batch) axis of size {x.shape[0]} must be a multiple of the "
            f"{n} devices of the mesh; pad the stack (fit_batch does this itself)."
        )
    sharding = NamedSharding(mesh, P(axis))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global: reshard
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def gather(x) -> np.ndarray:
    """A (possibly multi-host) sharded array as one NumPy array on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# ----------------------------------------------------------------------------- halo exchange


def _exchange(u, axis: int, width: int, mode: str, name: str, count: int):
    """Extend a local slab by `width` nodes per side along `axis` (inside `shard_map`).

    Interior sides receive the neighbours' edge rows with `ppermute`; the two outer ends of
    the global field are padded with the boundary `mode` from the local slab (for
    `periodic`, the cyclic neighbour's rows are the padding; for `valid`, the outer band is
    zero and is cropped afterwards).
    """
    n = u.shape[axis]
    first = jax.lax.slice_in_dim(u, 0, width, axis=axis)
    last = jax.lax.slice_in_dim(u, n - width, n, axis=axis)
    to_right = [(i, (i + 1) % count) for i in range(count)]
    to_left = [(i, (i - 1) % count) for i in range(count)]
    from_left = jax.lax.ppermute(last, name, to_right)
    from_right = jax.lax.ppermute(first, name, to_left)
    if mode != "periodic":
        index = jax.lax.axis_index(name)
        if mode == "valid":
            outer_left = jnp.zeros_like(first)
            outer_right = jnp.zeros_like(last)
        else:
            padded = pad_axis(u, axis, width, width, mode)
            outer_left = jax.lax.slice_in_dim(padded, 0, width, axis=axis)
            outer_right = jax.lax.slice_in_dim(padded, n + width, n + 2 * width, axis=axis)
        from_left = jnp.where(index == 0, outer_left, from_left)
        from_right = jnp.where(index == count - 1, outer_right, from_right)
    return jnp.concatenate([from_left, u, from_right], axis=axis)


def sharded_derivatives(
    differentiator: AbstractDifferentiator,
    u: FieldLike,
    alphas: Sequence[MultiIndexLike],
    mesh: Mesh,
    *,
    axis: int | str = 0,
) -> tuple[OutputValues, ...]:
    """`differentiator.derivatives(u, alphas)` with `u` split along one grid axis over `mesh`.

    With `P` devices each holds a slab of `n_a / P` nodes along grid axis `a`. A derivative
    `sum_j c_j u_{i+j}` near a slab edge needs the `w = max_j |j|` nodes beyond it: they
    arrive from the neighbouring devices (`jax.lax.ppermute`, two messages of `w` rows per
    device), or, on the two outer ends, come from the boundary padding of `pad_axis` (built
    locally, so the outer devices need `n_a / P >= w + 1` nodes). The local slab of
    `n_a / P + 2 w` nodes is then correlated in 'valid' mode along `a` (and with the
    differentiator's own boundary modes along the other axes), giving exactly the nodes of
    the slab: the result equals the unsharded one to round-off, for every boundary mode.

    **Arguments:**

    - `differentiator`: a tap-based differentiator (`Mollifier`, `FiniteDifference`).
    - `u`: field values of the grid's shape `(n_0, ..., n_{d-1})`; NumPy, a replicated or an
      already sharded `jax.Array`.
    - `alphas`: multi-indices (`"xx"`, `(1, 0)`, ...).
    - `mesh`: a 1-D `jax.sharding.Mesh` (`batch_mesh(n, "grid")`).
    - `axis`: the grid axis to split (index or name); its size must be a multiple of the
      mesh size.

    **Returns:** one array per multi-index, sharded along `axis`: the grid's shape, or the
    interior shape on `valid` axes.
    """
    if not isinstance(differentiator, _Separable):
        raise MollijaxError(
            "`differentiator` must be tap-based (Mollifier or FiniteDifference) to be "
            f"sharded with halos, got {type(differentiator).__name__}."
        )
    grid = differentiator.grid
    name = _single_axis(mesh, "mesh")
    count = mesh.devices.size
    a = grid.axis_index(axis)
    u = check_values(u, grid)
    parsed = [parse_multi_index(al, grid) for al in alphas]
    taps = [tuple(differentiator.taps(b, o) for b, o in enumerate(al)) for al in parsed]
    differentiator._warn_precision(u.dtype, parsed, taps)
    width = max((t[a].size - 1) // 2 for t in taps)
    n = grid.shape[a]
    if n % count:
        raise GridMismatchError(
            f"Grid axis {grid.axes[a]!r} has {n} nodes, which is not a multiple of the "
            f"{count} devices of `mesh`; choose a size divisible by {count}."
        )
    if n // count < width + 1:
        raise GridMismatchError(
            f"Each device would hold {n // count} node(s) along axis {grid.axes[a]!r}, but "
            f"the kernel's halo needs at least {width + 1}; use fewer devices or a larger grid."
        )
    modes = tuple(differentiator.boundary)
    method = differentiator._resolve_method(u.dtype)
    local_modes = tuple("valid" if b == a else m for b, m in enumerate(modes))
    local_halo = tuple(width if b == a else h for b, h in enumerate(differentiator.halo))
    spec = P(*[name if b == a else None for b in range(grid.ndim)])

    def local(v):
        ext = _exchange(v, a, width, modes[a], name, count) if width else v
        return tuple(separable_apply(ext, taps, local_modes, local_halo, method))

    run = jax.shard_map(local, mesh=mesh, in_specs=(spec,), out_specs=spec)
    outs = run(jax.device_put(u, NamedSharding(mesh, spec)))
    if modes[a] == "valid":
        h = differentiator.halo[a]
        outs = tuple(jax.lax.slice_in_dim(o, h, n - h, axis=a) for o in outs)
    return outs


class Sharded(AbstractDifferentiator):
    """A tap-based differentiator whose fields are split along one grid axis over a mesh.

    `Sharded(D, mesh, axis)` computes what `D` computes (`sharded_derivatives`), so a
    `Problem(..., derivatives=Sharded(D, mesh))` trains on a grid spread over the devices.
    """

    inner: _Separable = eqx.field(static=True)
    mesh: Mesh = eqx.field(static=True)
    axis: int = eqx.field(static=True)

    def __init__(self, inner: AbstractDifferentiator, mesh: Mesh, axis: int | str = 0):
        if not isinstance(inner, _Separable):
            raise MollijaxError(
                "`inner` must be tap-based (Mollifier or FiniteDifference), got "
                f"{type(inner).__name__}."
            )
        _single_axis(mesh, "mesh")
        self.inner = inner
        self.mesh = mesh
        self.axis = inner.grid.axis_index(axis)

    @property
    def grid(self) -> Grid:
        return self.inner.grid

    @property
    def halo(self) -> tuple[int, ...]:
        return self.inner.halo

    @property
    def boundary(self) -> tuple[str, ...]:
        return self.inner.boundary

    def derivatives(
        self, u: FieldLike | PointFn, alphas: Sequence[MultiIndexLike]
    ) -> tuple[OutputValues, ...]:
        if callable(u) and not hasattr(u, "shape"):
            from ._differentiators import evaluate

            u = evaluate(u, self.grid)
        return sharded_derivatives(self.inner, u, alphas, self.mesh, axis=self.axis)


# ----------------------------------------------------------------------------- tiling


def evaluate_tiled(
    fn: Callable[[Float[Array, " ndim"]], Float[Array, ""]],
    points: Float[Array, "size ndim"],
    tile: int,
    *,
    remat: bool = True,
) -> Float[Array, " size"]:
    """`jax.vmap(fn)(points)`, computed `tile` points at a time.

    The `size` points are padded (by repeating the last one) to `T * tile`, reshaped to
    `(T, tile, ndim)` and mapped with `jax.lax.map`, whose body is `vmap(fn)` wrapped in
    `jax.checkpoint` (with `remat=True`): the forward pass holds one tile of intermediate
    activations, and the backward pass recomputes each tile's activations instead of
    storing all `size` of them. Values and gradients equal the untiled ones to round-off;
    the price is one extra forward evaluation in the backward pass.

    **Arguments:**

    - `fn`: a point function `(ndim,) -> ()` (e.g. a network, or `NetworkField` internals).
    - `points`: `(size, ndim)` coordinates (`Grid.points()`).
    - `tile`: points per tile (positive).
    - `remat`: wrap each tile in `jax.checkpoint` (default True).

    **Returns:** `(size,)` values.
    """
    if not isinstance(tile, int | np.integer) or tile < 1:
        raise MollijaxError(f"`tile` must be a positive integer, got {tile!r}.")
    if points.ndim != 2:
        raise GridMismatchError(f"`points` must have shape (size, ndim), got {describe(points)}.")
    size = points.shape[0]
    tile = int(min(tile, size))
    count = -(-size // tile)
    pad = count * tile - size
    if pad:
        points = jnp.concatenate([points, jnp.broadcast_to(points[-1:], (pad, points.shape[1]))])
    body = jax.vmap(fn)
    if remat:
        body = jax.checkpoint(body)
    out = jax.lax.map(body, points.reshape(count, tile, points.shape[1]))
    return out.reshape(-1)[:size]


def evaluate_grid_tiled(
    fn: PointFn, grid: Grid, tile: int, *, remat: bool = True, dtype=None
) -> Float[Array, "*grid"]:
    """`fn` at every node of `grid`, `tile` nodes at a time, coordinates made in the graph.

    Like `evaluate_tiled(fn, grid.points(), tile)`, but tile `t` builds its own coordinates
    `x_a = origin_a + h_a i_a` from the flat node indices `t * tile + [0, tile)` (C order),
    so no `(size, ndim)` array of points is ever stored (it would be a constant of the
    compiled program, as large as the grid times `ndim`).

    **Arguments:** `fn` a point function `(ndim,) -> ()`; `grid`; `tile` nodes per tile;
    `remat` as in `evaluate_tiled`; `dtype` of the coordinates (default: JAX's default float,
    float32 unless `jax_enable_x64`).

    **Returns:** values of the grid's shape.
    """
    if not isinstance(tile, int | np.integer) or tile < 1:
        raise MollijaxError(f"`tile` must be a positive integer, got {tile!r}.")
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    size = grid.size
    tile = int(min(tile, size))
    count = -(-size // tile)
    strides = np.cumprod((1,) + grid.shape[::-1])[-2::-1]  # C-order strides per axis
    origin = jnp.asarray(grid.origin, dtype)
    spacing = jnp.asarray(grid.spacing, dtype)

    def body(t):
        flat = jnp.minimum(t * tile + jnp.arange(tile), size - 1)
        index = jnp.stack(
            [(flat // int(s)) % n for s, n in zip(strides, grid.shape, strict=True)], -1
        )
        return jax.vmap(fn)(origin + spacing * index.astype(dtype))

    if remat:
        body = jax.checkpoint(body)
    out = jax.lax.map(body, jnp.arange(count))
    return out.reshape(-1)[:size].reshape(grid.shape)
