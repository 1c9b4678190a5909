"""Regularisers: exact values on fields where the difference quotients are known, every node
reached (no node left out of the prior), and convergence to the continuous seminorms."""

import equinox as eqx
import jax
import numpy as np
import pytest

import mollijax as mj

jax.config.update("jax_enable_x64", True)

SHAPE = (9, 7)
GRID = mj.Grid.from_bounds(SHAPE, (0.0, 0.0), (1.0, 0.5), axes=("x", "y"))
A, B = 1.7, -0.6


def _terms(values, *regularisers, grid=GRID):
    problem = mj.Problem(grid, None, data={"u": np.zeros(grid.shape)},
                         regularisers=list(regularisers))
    k = mj.GridField(values, "xy")
    return problem.loss_terms({"u": mj.GridField(np.zeros(grid.shape), "xy"), "k": k})


def _linear():
    x, y = GRID.mesh()
    return A * x + B * y


def test_h1_of_a_linear_field_is_its_squared_slope():
    # every forward difference quotient of A x + B y is exactly A (along x) or B (along y)
    terms = _terms(_linear(), mj.H1("k"))
    assert float(terms["reg:k:smooth"]) == pytest.approx(A**2 + B**2, rel=1e-12)


def test_tv_of_a_linear_field_counts_the_neumann_end():
    # |grad| = sqrt(A^2 + B^2) at the interior nodes, |A| or |B| on the far row or column,
    # 0 at the far corner (the difference across the far end is taken as 0)
    delta = 1e-3
    terms = _terms(_linear(), mj.TV("k", delta=delta))
    nx, ny = SHAPE
    expected = ((nx - 1) * (ny - 1) * np.sqrt(A**2 + B**2 + delta**2)
                + (nx - 1) * np.sqrt(A**2 + delta**2) + (ny - 1) * np.sqrt(B**2 + delta**2)
                + delta) / (nx * ny)
    assert float(terms["reg:k:tv"]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("term", [mj.H1("k"), mj.TV("k", delta=1e-3)], ids=["h1", "tv"])
def test_every_node_is_reached(term):
    # the Hessian (H1) or gradient (TV, at a generic field) of the penalty in the values has
    # no zero row: no node, the far corner included, is left free of the prior
    problem = mj.Problem(GRID, None, data={"u": np.zeros(SHAPE)}, regularisers=[term])
    state = mj.GridField(np.zeros(SHAPE), "xy")
    template = mj.GridField(np.zeros(SHAPE), "xy")

    def penalty(flat):
        k = eqx.tree_at(lambda f: f.raw, template, flat.reshape(SHAPE))
        return problem.loss_terms({"u": state, "k": k})[term.name]

    flat = np.random.default_rng(0).standard_normal(np.prod(SHAPE))
    if isinstance(term, mj.H1):
        diag = np.diag(np.asarray(jax.hessian(penalty)(flat)))
        assert np.all(diag > 0), np.argwhere(diag.reshape(SHAPE) <= 0)
    else:
        grad = np.asarray(jax.grad(penalty)(flat))
        assert np.all(np.abs(grad) > 0), np.argwhere(grad.reshape(SHAPE) == 0)


def test_curvature_of_a_quadratic_and_of_affine_fields():
    # u = a x^2 + b x y + c y^2: u_xx = 2a, u_xy = b, u_yy = 2c exactly in every difference,
    # so the pure terms give 4a^2 + 4c^2 and the thin-plate energy adds 2b^2; an affine field
    # has neither
    x, y = GRID.mesh()
    a, b, c = 0.8, -1.3, 2.1
    quadratic = a * x**2 + b * x * y + c * y**2
    pure = _terms(quadratic, mj.Curvature("k"))["reg:k:curvature"]
    assert float(pure) == pytest.approx(4 * a**2 + 4 * c**2, rel=1e-10)
    plate = _terms(quadratic, mj.Curvature("k", mixed=True))["reg:k:curvature"]
    assert float(plate) == pytest.approx(4 * a**2 + 2 * b**2 + 4 * c**2, rel=1e-10)
    for mixed in (False, True):
        affine = _terms(_linear() + 3.0, mj.Curvature("k", mixed=mixed))["reg:k:curvature"]
        assert abs(float(affine)) < 1e-20
    assert isinstance(mj.Regulariser("k", "curvature", 2.0), mj.Curvature)


def test_curvature_converges_to_the_continuous_seminorms():
    # u = sin(pi x) cos(pi y) on [0, 1]^2: mean(u_xx^2 + u_yy^2) = pi^4 / 2, and with the
    # mixed term twice (thin plate) pi^4; means over interior nodes and cells are first-order
    errors = {False: [], True: []}
    for n in (9, 17, 33):
        grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
        x, y = grid.mesh()
        u = np.sin(np.pi * x) * np.cos(np.pi * y)
        for mixed in errors:
            value = _terms(u, mj.Curvature("k", mixed=mixed), grid=grid)["reg:k:curvature"]
            errors[mixed].append(abs(float(value) - np.pi**4 * (1.0 if mixed else 0.5)))
    for mixed, e in errors.items():
        rates = np.log2(np.array(e[:-1]) / np.array(e[1:]))
        assert e[-1] < 0.1 * np.pi**4 and np.all(rates > 0.8), (mixed, e, rates)


def test_third_derivative_of_cubic_and_quadratic_fields():
    # u = a x^3 + c y^3 + (a quadratic in x and y): u_xxx = 6a, u_yyy = 6c exactly in every
    # third difference, so the penalty is 36 (a^2 + c^2); a quadratic has none (null space),
    # and the x^2 y cross term none either (pure differences only)
    x, y = GRID.mesh()
    a, c = 0.8, -1.3
    quadratic = 0.5 * x**2 - 2.0 * x * y + 1.5 * y**2 + x - 3.0 + 4.0 * x**2 * y
    cubic = _terms(a * x**3 + c * y**3 + quadratic, mj.ThirdDerivative("k"))["reg:k:third"]
    assert float(cubic) == pytest.approx(36 * (a**2 + c**2), rel=1e-9)
    flat = _terms(quadratic, mj.ThirdDerivative("k"))["reg:k:third"]
    assert abs(float(flat)) < 1e-16
    assert isinstance(mj.Regulariser("k", "third", 2.0), mj.ThirdDerivative)


def test_third_derivative_converges_to_the_continuous_seminorm():
    # u = sin(pi x) on [0, 1] (1-D): mean(u_xxx^2) = pi^6 / 2; the mean over the interior
    # third differences is first-order accurate (their centres are offset by half a step)
    errors = []
    for n in (17, 33, 65, 129):
        grid = mj.Grid.from_bounds((n,), (0.0,), (1.0,), axes=("x",))
        u = np.sin(np.pi * grid.coords("x"))
        problem = mj.Problem(grid, None, data={"u": np.zeros(n)},
                             regularisers=[mj.ThirdDerivative("k")])
        value = problem.loss_terms({"u": mj.GridField(np.zeros(n), "x"),
                                    "k": mj.GridField(u, "x")})["reg:k:third"]
        errors.append(abs(float(value) - np.pi**6 / 2))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 0.05 * np.pi**6 and np.all(rates > 0.8), (errors, rates)


def test_h1_and_tv_converge_to_the_continuous_seminorms():
    # u = sin(pi x) cos(pi y) on [0, 1]^2: the mean of |grad u|^2 is pi^2 / 2; forward
    # differences are first-order accurate, so the error falls about 2x per grid doubling
    errors = {"h1": [], "tv": []}
    for n in (9, 17, 33):
        grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
        x, y = grid.mesh()
        u = np.sin(np.pi * x) * np.cos(np.pi * y)
        terms = _terms(u, mj.H1("k"), mj.TV("k", delta=1e-8), grid=grid)
        errors["h1"].append(abs(float(terms["reg:k:smooth"]) - np.pi**2 / 2))
        # mean |grad u| by a fine midpoint rule
        m = 1000
        s = (np.arange(m) + 0.5) / m
        xs, ys = np.meshgrid(s, s, indexing="ij")
        exact_tv = np.mean(np.pi * np.sqrt((np.cos(np.pi * xs) * np.cos(np.pi * ys)) ** 2
                                           + (np.sin(np.pi * xs) * np.sin(np.pi * ys)) ** 2))
        errors["tv"].append(abs(float(terms["reg:k:tv"]) - exact_tv))
    for name, e in errors.items():
        rates = np.log2(np.array(e[:-1]) / np.array(e[1:]))
        assert np.all(rates > 0.8), (name, e, rates)


@pytest.mark.parametrize("term", [mj.H1("k"), mj.TV("k"), mj.Curvature("k"),
                                  mj.ThirdDerivative("k")],
                         ids=["smooth", "tv", "curvature", "third"])
def test_a_penalty_on_a_constant_is_refused_by_name(term):
    problem = mj.Problem(GRID, None, data={"u": np.zeros(GRID.shape)}, regularisers=[term])
    unknowns = {"u": mj.GridField(np.zeros(GRID.shape), "xy"), "k": mj.Constant(2.0)}
    with pytest.raises(mj.MollijaxError, match=f"'{term.kind_name}' on 'k' does nothing"):
        problem.loss_terms(unknowns)


def _se_dense(values, length, grid=GRID):
    """The squared-exponential prior's form built densely, independently of the term's
    factorised code: the Kronecker product's inverse, the affine part by least squares."""
    x, y = (grid.coords(a) for a in range(2))

    def kernel(c):
        k = np.exp(-((c[:, None] - c[None, :]) ** 2) / (2 * length**2))
        return k + 1e-6 * np.linalg.eigvalsh(k).max() * np.eye(c.size)  # the documented nugget

    full = np.kron(kernel(x), kernel(y))
    mx, my = grid.mesh()
    basis = np.stack([np.ones(mx.size), mx.ravel(), my.ravel(), (mx * my).ravel()], axis=1)
    u = np.ravel(values)
    p = u - basis @ np.linalg.lstsq(basis, u, rcond=None)[0]
    return p @ np.linalg.solve(full, p) / u.size, np.linalg.cond(full)


@pytest.mark.parametrize("length", [0.15, 0.4])
def test_squared_exponential_matches_its_dense_form(length):
    values = np.random.default_rng(3).standard_normal(SHAPE)
    term = mj.SquaredExponential("k", length=length)
    got = float(_terms(values, term)[term.name])
    dense, condition = _se_dense(values, length)
    # the nugget bounds the Kronecker kernel's condition number near 1e12: both routes
    # agree to its round-off, a wrong axis or projector would be off by O(1)
    assert got == pytest.approx(dense, rel=condition * np.finfo(float).eps)


def test_squared_exponential_leaves_the_curvature_null_space_flat():
    x, y = GRID.mesh()
    flat = 0.3 + 1.2 * x - 0.7 * y + 2.5 * x * y
    term = mj.SquaredExponential("k", length=0.3)
    bumpy = flat + np.sin(7 * x) * np.cos(5 * y)
    assert abs(float(_terms(flat, term)[term.name])) < 1e-9 * float(_terms(bumpy, term)[term.name])
    assert term.name == "reg:k:se:0.3"


@pytest.mark.parametrize("length", [0.0, -1.0, float("nan"), float("inf")])
def test_squared_exponential_refuses_a_bad_length_by_name(length):
    with pytest.raises(mj.MollijaxError, match="length"):
        mj.SquaredExponential("k", length=length)
