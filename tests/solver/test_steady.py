"""The solved steady state: accuracy against independent solvers, the implicit adjoint, Newton,
and failure as NaN."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import mollijax as mj
from mollijax import MollijaxError, Steady, UnknownFieldError


def _divergence_1d(s):
    return s.d(s.k * s.d(s.u, "x"), "x") + s.f


def _divergence_2d(s):
    return s.d(s.k * s.d(s.u, "x"), "x") + s.d(s.k * s.d(s.u, "y"), "y") + s.f


def _plate(s):
    return s.lap(s.D * s.lap(s.w)) - s.q


def _cubic(s):
    return -s.d(s.u, "xx") + s.u**3 - s.f


def _walls(field, grid, value=0.0):
    return [mj.Condition(field, {a: i}, value) for a in grid.axes for i in (0, -1)]


def _wall_mask(grid):
    mask = np.ones(grid.shape, bool)
    mask[tuple(slice(1, n - 1) for n in grid.shape)] = False
    return mask


# ------------------------------------------------------------ independent assemblies (scipy)
def _central(n, h):
    """Central first difference on n nodes with the odd end padding u_{-1} = 2 u_0 - u_1."""
    d = sp.diags([-np.ones(n - 1), np.ones(n - 1)], [-1, 1], format="lil") / (2 * h)
    d[0, 0], d[0, 1] = -1 / h, 1 / h
    d[n - 1, n - 2], d[n - 1, n - 1] = -1 / h, 1 / h
    return d.tocsr()


def _dirichlet_second(n, h):
    """Compact second difference on the n - 2 inner nodes, zero on the walls."""
    m = n - 2
    return sp.diags([np.ones(m - 1), -2 * np.ones(m), np.ones(m - 1)], [-1, 0, 1]) / h**2


def _solve_pinned(a, rhs, pinned, values):
    """Solve the rows of `a u = rhs` at free nodes with u = values at pinned ones."""
    free = ~pinned.ravel()
    a = a.tocsr()
    b = rhs.ravel()[free] - a[free][:, ~free] @ values.ravel()[~free]
    u = values.ravel().copy()
    u[free] = spla.spsolve(a[free][:, free].tocsc(), b)
    return u.reshape(pinned.shape)


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def square():
    grid = mj.Grid.from_bounds((33, 33), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    k = 1.0 + 0.5 * np.sin(2 * x) * np.cos(3 * y) + x * y
    f = 10.0 * np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) / 0.05)
    g = np.where(_wall_mask(grid), 0.3 * x - 0.2 * y**2, 0.0)
    h = grid.spacing[0]
    dx = sp.kron(_central(33, h), sp.identity(33))
    dy = sp.kron(sp.identity(33), _central(33, h))
    kk = sp.diags(k.ravel())
    a = dx @ kk @ dx + dy @ kk @ dy
    reference = _solve_pinned(a, -f, _wall_mask(grid), g)
    conditions = [mj.Condition("u", _wall_mask(grid), g)]
    return grid, k, f, conditions, reference


@pytest.fixture(scope="module")
def plate():
    n = 17
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    d = 1.0 + 0.5 * x + 0.3 * np.cos(np.pi * y)
    q = np.ones(grid.shape)
    lap = sp.kron(_dirichlet_second(n, grid.spacing[0]), sp.identity(n - 2))
    lap = lap + sp.kron(sp.identity(n - 2), _dirichlet_second(n, grid.spacing[1]))
    inner = (slice(1, -1), slice(1, -1))
    a = (lap @ sp.diags(d[inner].ravel()) @ lap).tocsc()
    reference = np.zeros(grid.shape)
    reference[inner] = spla.spsolve(a, q[inner].ravel()).reshape(n - 2, n - 2)
    return grid, d, q, reference


# ---------------------------------------------------------------------------------- tests
def test_1d_divergence_form_is_second_order():
    # u = sin(pi x), k = 1 + x / 2: f = -(k u')'; the error must fall 4x per halving of h
    errors = []
    for n in (33, 65):
        grid = mj.Grid.from_bounds(n, 0.0, 1.0)
        x = grid.coords("x")
        k = 1 + x / 2
        f = -(0.5 * np.pi * np.cos(np.pi * x) - k * np.pi**2 * np.sin(np.pi * x))
        u = Steady(_divergence_1d).solve(grid, {"k": mj.GridField(k, "x")}, {"f": f},
                                         _walls("u", grid))["u"]
        errors.append(float(jnp.max(jnp.abs(u - np.sin(np.pi * x)))))
    assert errors[0] < 5e-3
    assert 3.6 < errors[0] / errors[1] < 4.4


@pytest.mark.parametrize("solver", ["direct", "gmres"])
def test_2d_divergence_form_matches_scipy(square, solver):
    grid, k, f, conditions, reference = square
    steady = Steady(_divergence_2d, solver=solver)
    u, info = steady.solve_with_stats(grid, {"k": mj.GridField(k, "xy")}, {"f": f}, conditions)
    assert bool(info["converged"])
    np.testing.assert_allclose(u["u"], reference, rtol=0, atol=1e-8 * np.abs(reference).max())


def test_prepared_direct_solve_is_block_tridiagonal_and_matches_scipy(square):
    # nested central differences of the divergence form reach two nodes along each axis;
    # the prepared direct solve assembles that band by colour probing and solves it by
    # block LU: the same solution as scipy's sparse solve of the independent assembly
    grid, k, f, conditions, reference = square
    unknowns, known = {"k": mj.GridField(k, "xy")}, {"f": f}
    steady = Steady(_divergence_2d, solver="direct").prepare(grid, unknowns, known, conditions)
    assert steady.band == (2, 2)
    assert steady.describe(grid)["band"] == [2, 2]
    u, info = steady.solve_with_stats(grid, unknowns, known, conditions)
    assert bool(info["converged"])
    np.testing.assert_allclose(u["u"], reference, rtol=0, atol=1e-8 * np.abs(reference).max())


def test_prepared_plate_band_pads_the_last_block(plate):
    # 17 nodes along x in blocks of two planes: the last block is padded with identity rows
    grid, d, q, reference = plate
    unknowns, known, walls = {"D": mj.GridField(d, "xy")}, {"q": q}, _walls("w", grid)
    steady = Steady(_plate, "w").prepare(grid, unknowns, known, walls)
    assert steady.band == (2, 2)
    w = steady.solve(grid, unknowns, known, walls)["w"]
    np.testing.assert_allclose(w, reference, rtol=0, atol=1e-8 * np.abs(reference).max())


def test_band_follows_the_stencil_of_each_axis():
    # second differences along x (one node), a fourth along y (two), a 3-D grid, and a zero
    # coefficient at the initial guess that must not hide the term it multiplies
    grid = mj.Grid.from_bounds((9, 8, 7), (0.0,) * 3, (1.0,) * 3, axes=("x", "y", "z"))
    x, y, z = grid.mesh()
    f = np.sin(3 * x) * np.cos(2 * y) + z

    def residual(s):
        return s.d(s.u, "xx") - s.c * s.d(s.u, "yyyy") + s.d(s.u, "zz") - s.u - s.f

    unknowns = {"c": mj.GridField(np.zeros(grid.shape), "xyz")}
    walls = _walls("u", grid)
    steady = Steady(residual, solver="direct").prepare(grid, unknowns, {"f": f}, walls)
    assert steady.band == (1, 2, 1)
    c = 0.01 * (1.0 + x)
    unknowns = {"c": mj.GridField(c, "xyz")}
    banded = steady.solve(grid, unknowns, {"f": f}, walls)["u"]
    dense = Steady(residual, solver="direct", band=()).solve(grid, unknowns, {"f": f}, walls)["u"]
    np.testing.assert_allclose(banded, dense, rtol=0, atol=1e-10 * np.abs(dense).max())


def test_eager_prepare_and_solve_compile_once_and_are_reused():
    # called outside `jit`, `prepare` and `solve` are each one compiled program, reused for
    # new coefficient values of the same shapes (op by op, a small 3-D grid compiled
    # hundreds of programs)
    grid = mj.Grid.from_bounds((9, 8, 7), (0.0,) * 3, (1.0,) * 3, axes=("x", "y", "z"))
    x, y, z = grid.mesh()
    f = np.sin(3 * x) * np.cos(2 * y) + z

    def residual(s):
        return s.k * (s.d(s.u, "xx") + s.d(s.u, "yy") + s.d(s.u, "zz")) - s.f

    walls = _walls("u", grid)
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    def count(call):
        compiles.clear()
        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            out = call()
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)
        return out, len(compiles)

    def unknowns(scale):
        return {"k": mj.GridField(scale * (1.0 + x), "xyz")}

    steady, first = count(lambda: Steady(residual, solver="direct").prepare(
        grid, unknowns(1.0), {"f": f}, walls))
    again, second = count(lambda: Steady(residual, solver="direct").prepare(
        grid, unknowns(2.0), {"f": f}, walls))
    assert steady.band == again.band == (1, 1, 1) and steady.linear
    assert first <= 3 and second == 0, (first, second)
    u1, first = count(lambda: steady.solve(grid, unknowns(1.0), {"f": f}, walls)["u"])
    u2, second = count(lambda: steady.solve(grid, unknowns(2.0), {"f": f}, walls)["u"])
    assert first <= 3 and second == 0, (first, second)
    # the compiled solve is the same solve: k scaled by 2 halves the solution
    np.testing.assert_allclose(u2, u1 / 2, rtol=1e-10, atol=1e-12)


def test_periodic_stencil_has_no_band():
    # (a grid above BANDED_MIN_NODES, where prepare looks for a band)
    grid = mj.Grid.from_bounds((20, 16), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    periodic = mj.FiniteDifference(grid, boundary="periodic")
    steady = Steady(_divergence_2d, derivatives=periodic, solver="direct")
    steady = steady.prepare(grid, {"k": mj.GridField(1.0 + x, "xy")}, {"f": np.sin(6 * y)},
                            [mj.Condition("u", {"x": 0}, 0.0)])
    assert steady.band == ()


def test_preconditioner_bounds_iterations(square):
    grid, k, f, conditions, _ = square
    counts = {}
    for pre in ("dst", None):
        # BiCGStab: lineax counts its iterations (GMRES: restart cycles)
        steady = Steady(_divergence_2d, solver="bicgstab", preconditioner=pre, max_steps=2000)
        _, info = steady.solve_with_stats(grid, {"k": mj.GridField(k, "xy")}, {"f": f},
                                          conditions)
        counts[pre] = int(info["num_steps"])
    assert counts["dst"] <= 15
    assert counts[None] > 5 * counts["dst"]


def test_simply_supported_plate_matches_scipy(plate):
    grid, d, q, reference = plate
    steady = Steady(_plate, "w", solver="gmres")
    w = steady.solve(grid, {"D": mj.GridField(d, "xy")}, {"q": q}, _walls("w", grid))["w"]
    np.testing.assert_allclose(w, reference, rtol=0, atol=1e-8 * np.abs(reference).max())


def test_plate_constant_stiffness_matches_navier_series():
    grid = mj.Grid.from_bounds((33, 33), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    d = 2.0
    navier = np.zeros(grid.shape)
    for m in range(1, 80, 2):
        for n in range(1, 80, 2):
            navier += (np.sin(m * np.pi * x) * np.sin(n * np.pi * y)
                       / (m * n * (m**2 + n**2) ** 2))
    navier *= 16.0 / (np.pi**6 * d)
    w = Steady(_plate, "w").solve(grid, {"D": mj.Constant(d)}, {"q": np.ones(grid.shape)},
                                  _walls("w", grid))["w"]
    assert float(jnp.max(jnp.abs(w - navier)) / navier.max()) < 5e-3


@pytest.mark.parametrize("shape,solver", [((17, 17), "gmres"), ((17, 17), "band"),
                                          ((41,), "direct")])
def test_gradient_of_misfit_is_the_adjoint(shape, solver):
    # d/dk of mean((u(k) - d)^2) against central differences along random directions;
    # 2-D through GMRES (lineax's adjoint solve) and through the block-tridiagonal LU
    # (reverse mode through the elimination), 1-D through LU
    grid = mj.Grid.from_bounds(shape, (0.0,) * len(shape), (1.0,) * len(shape))
    x = grid.mesh()
    k0 = 1.0 + 0.3 * x[0] + 0.2 * np.sin(3 * x[-1])
    f = np.exp(-sum((c - 0.5) ** 2 for c in x) / 0.1)
    data = 0.02 * np.prod([np.sin(np.pi * c) for c in x], axis=0)
    residual = _divergence_2d if len(shape) == 2 else _divergence_1d
    band = (2,) * len(shape) if solver == "band" else None
    steady = Steady(residual, solver="direct" if solver == "band" else solver, band=band)
    conditions = _walls("u", grid)
    template = mj.GridField(k0, grid.axes)

    @jax.jit
    def misfit(k):
        field = eqx.tree_at(lambda g: g.raw, template, k)
        u = steady.solve(grid, {"k": field}, {"f": f}, conditions)["u"]
        return jnp.mean((u - data) ** 2)

    grad = jax.grad(misfit)(jnp.asarray(k0))
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(grid.shape)
        step = 1e-5
        fd = (misfit(k0 + step * v) - misfit(k0 - step * v)) / (2 * step)
        assert float(jnp.abs(jnp.vdot(grad, v) - fd)) <= 1e-6 * float(jnp.abs(fd)) + 1e-14


@pytest.mark.parametrize("solver", ["gmres", "bicgstab"])
def test_jacobian_over_every_coefficient_node_matches_the_direct_solve(solver):
    # with every wall pinned the residual never reads k at the four corners: their tangents
    # have a zero right-hand side, which a Krylov iteration turned into NaN columns (and
    # GCV's effective parameters into NaN above DIRECT_MAX_NODES nodes)
    grid = mj.Grid.from_bounds((9, 9), (0.0, 0.0), (1.0, 1.0))
    x, y = grid.mesh()
    k0 = 1.0 + 0.3 * x + 0.2 * np.sin(3 * y)
    f = np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) / 0.1)
    conditions = _walls("u", grid)
    template = mj.GridField(k0, grid.axes)

    def solution(steady):
        def u(k):
            field = eqx.tree_at(lambda g: g.raw, template, k)
            return steady.solve(grid, {"k": field}, {"f": f}, conditions)["u"]
        return jax.jit(jax.jacfwd(u))(jnp.asarray(k0))

    krylov = np.asarray(solution(Steady(_divergence_2d, solver=solver, max_steps=500)))
    direct = np.asarray(solution(Steady(_divergence_2d, solver="direct")))
    assert np.all(np.isfinite(krylov))
    corners = (np.array([0, 0, -1, -1]), np.array([0, -1, 0, -1]))
    assert np.all(krylov[..., corners[0], corners[1]] == 0.0)
    np.testing.assert_allclose(krylov, direct, atol=1e-8 * np.abs(direct).max())


def _cubic_case(n):
    grid = mj.Grid.from_bounds(n, 0.0, 1.0)
    x = grid.coords("x")
    f = 200.0 * np.sin(np.pi * x) + 50.0 * x
    conditions = [mj.Condition("u", {"x": 0}, 0.5), mj.Condition("u", {"x": -1}, -0.3)]
    h = grid.spacing[0]

    def fd_system(inner):
        u = np.concatenate([[0.5], inner, [-0.3]])
        return -(u[2:] - 2 * u[1:-1] + u[:-2]) / h**2 + u[1:-1] ** 3 - f[1:-1]

    reference = scipy.optimize.fsolve(fd_system, np.zeros(n - 2), xtol=1e-13)
    return grid, f, conditions, np.concatenate([[0.5], reference, [-0.3]])


@pytest.mark.parametrize("solver", ["direct", "gmres"])
def test_nonlinear_newton_matches_fsolve(solver):
    grid, f, conditions, reference = _cubic_case(41)
    steady = Steady(_cubic, solver=solver)  # linear=None: detected as nonlinear
    u, info = steady.solve_with_stats(grid, {}, {"f": f}, conditions)
    assert bool(info["converged"]) and int(info["num_steps"]) > 1
    np.testing.assert_allclose(u["u"], reference, rtol=0, atol=1e-9)


def test_nonlinear_gradient_is_the_adjoint():
    grid, f, conditions, _ = _cubic_case(41)
    steady = Steady(lambda s: -s.d(s.u, "xx") + s.c * s.u**3 - s.f)

    c0 = 1.0 + grid.coords("x")
    template = mj.GridField(c0, "x")

    @jax.jit
    def misfit(c):
        field = eqx.tree_at(lambda g: g.raw, template, c)
        u = steady.solve(grid, {"c": field}, {"f": f}, conditions)["u"]
        return jnp.sum(u**2)
    v = np.random.default_rng(2).standard_normal(c0.shape)
    fd = (misfit(c0 + 1e-5 * v) - misfit(c0 - 1e-5 * v)) / 2e-5
    assert float(jnp.abs(jnp.vdot(jax.grad(misfit)(jnp.asarray(c0)), v) - fd)) < 1e-6 * abs(fd)


def test_linearity_is_detected():
    grid, f, conditions, _ = _cubic_case(21)
    linear = Steady(lambda s: s.d(s.u, "xx") - s.f)
    cubic = Steady(_cubic)
    assert linear.prepare(grid, {}, {"f": f}, conditions).linear is True
    assert cubic.prepare(grid, {}, {"f": f}, conditions).linear is False
    for steady, expected in ((linear, True), (cubic, False)):  # the trace-time test
        r, _, lift, c, _, _ = steady._system(grid, {}, {"f": f}, conditions, None)
        assert steady._is_linear(r, lift, c) is expected


def test_no_convergence_gives_nan_and_a_hint(square):
    grid, k, f, conditions, _ = square
    steady = Steady(_divergence_2d, solver="gmres", preconditioner=None, max_steps=1)
    u, info = steady.solve_with_stats(grid, {"k": mj.GridField(k, "xy")}, {"f": f}, conditions)
    assert not bool(info["converged"])
    assert bool(jnp.all(jnp.isnan(u["u"])))
    hint = steady.divergence_hint()
    assert "max_steps=1" in hint and "gmres" in hint and "rtol" in hint


def test_interface_and_errors(square):
    grid, k, f, conditions, _ = square
    steady = Steady(_divergence_2d)
    assert steady.names == ("u",)
    used = set()
    steady.solve(grid, {"k": mj.GridField(k, "xy")}, {"f": f}, conditions, used)
    assert used == {"k", "f"}
    info = steady.describe(grid)
    assert info["solver"] == "direct" and info["fields"] == ["u"]
    prepared = steady.prepare(grid, {"k": mj.GridField(k, "xy")}, {"f": f}, conditions)
    assert prepared.linear is True and prepared.prepare(grid, {}, {}, conditions) is prepared
    with pytest.raises(MollijaxError, match="no Condition"):
        steady.solve(grid, {"k": mj.GridField(k, "xy")}, {"f": f}, [])
    with pytest.raises(UnknownFieldError, match="'k'"):
        steady.solve(grid, {}, {"f": f}, conditions)
    with pytest.raises(MollijaxError, match="solver"):
        Steady(_divergence_2d, solver="cg")
    with pytest.raises(MollijaxError, match="one field"):
        Steady(_divergence_2d, ("u", "v"))
    with pytest.raises(MollijaxError, match="`band`.*half-widths"):
        Steady(_divergence_2d, band=(2, 0))
    with pytest.raises(mj.GridMismatchError, match="`band`.*2 axes"):
        Steady(_divergence_2d, band=(2,)).check_grid(grid)
    with pytest.raises(MollijaxError, match="at least 5 nodes"):
        steady.check_grid(mj.Grid.from_bounds((4, 9), (0.0, 0.0), (1.0, 1.0)))
