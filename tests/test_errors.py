"""Every named error fires, and its message names the argument at fault."""

import re

import numpy as np
import pytest

import mollijax as mj

GRID = mj.Grid.from_bounds((16, 12), 0.0, 1.0)
U = np.ones(GRID.shape)


def test_error_hierarchy():
    for cls in (mj.GridMismatchError, mj.NonUniformGridError, mj.KernelTooWideError,
                mj.DerivativeOrderError, mj.NonFiniteError, mj.DTypeError):
        assert issubclass(cls, mj.MollijaxError)
    assert issubclass(mj.MollijaxError, ValueError)
    assert issubclass(mj.PrecisionWarning, UserWarning)


def test_kernel_wider_than_grid():
    with pytest.raises(mj.KernelTooWideError, match=r"wider than the grid.*axis 0.*'x'.*eps=0\.8"):
        mj.Mollifier(GRID, (0.8, 0.2))


@pytest.mark.parametrize("eps", [0.5 / 15, 0.0, -0.1, float("nan")])
def test_eps_below_one_step_or_not_positive(eps):
    with pytest.raises(mj.KernelTooWideError, match="eps"):
        mj.Mollifier(GRID, eps)


def test_taps_eps_below_one_step():
    with pytest.raises(mj.KernelTooWideError, match="narrower than one grid step"):
        mj.mollifier_taps(mj.Bump(), 0.005, 0.01, 1)


def test_too_few_points_for_the_order():
    # 1 step per half-width cannot hold the moment conditions of a 4th derivative
    with pytest.raises(mj.KernelTooWideError, match=r"order 4.*eps >="):
        mj.mollifier_taps(mj.Bump(), 0.015, 0.01, 4)


@pytest.mark.parametrize("order", [4, 8, 10])
def test_too_few_points_names_a_width_that_works(order):
    """The width the message suggests is enough, and one step less is not."""
    h = 0.01
    with pytest.raises(mj.KernelTooWideError, match=r"eps >= ([0-9.e-]+)") as info:
        mj.mollifier_taps(mj.Bump(), 1.0 * h, h, order)
    suggested = float(re.search(r"eps >= ([0-9.e-]+)", str(info.value)).group(1))
    mj.mollifier_taps(mj.Bump(), suggested, h, order)
    with pytest.raises(mj.KernelTooWideError):
        mj.mollifier_taps(mj.Bump(), suggested - h, h, order)


def test_non_uniform_coordinates():
    with pytest.raises(mj.NonUniformGridError, match=r"coords\[1\]"):
        mj.Grid.from_coords(np.linspace(0, 1, 5), np.array([0.0, 0.1, 0.3, 0.4]))


@pytest.mark.parametrize(
    "u,match",
    [
        (np.ones((16,)), r"`u` must be a 2-D array of shape \(16, 12\).*\(16,\)"),
        (np.ones((16, 12, 1)), r"`u` must be a 2-D array"),
        (np.ones((12, 16)), r"`u` must have the grid's shape \(16, 12\).*\(12, 16\)"),
    ],
)
def test_shape_and_rank_mismatch(u, match):
    with pytest.raises(mj.GridMismatchError, match=match):
        mj.Mollifier(GRID, 0.2)(u, "x")


@pytest.mark.parametrize(
    "alpha,match",
    [
        ((-1, 0), r"Derivative orders must be >= 0.*\(-1, 0\)"),
        ("xq", r"axis 'q' is not one of the grid's axes"),
        ((1, 0, 0), r"one integer per grid axis \(2\)"),
        ((1,), r"one integer per grid axis \(2\)"),
    ],
)
def test_bad_multi_index(alpha, match):
    with pytest.raises(mj.DerivativeOrderError, match=match):
        mj.Mollifier(GRID, 0.2)(U, alpha)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad):
    u = U.copy()
    u[3, 4] = bad
    with pytest.raises(mj.NonFiniteError, match=r"`u` contains 1 NaN or inf"):
        mj.Mollifier(GRID, 0.2)(u, "x")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, bool])
def test_integer_dtype(dtype):
    with pytest.raises(mj.DTypeError, match=r"`u` must have a real floating dtype"):
        mj.Mollifier(GRID, 0.2)(U.astype(dtype), "x")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(boundary="mirror"), r"Unknown `boundary` 'mirror'"),
        (dict(boundary=("odd", "nope")), r"Unknown `boundary` 'nope'"),
        (dict(boundary=("odd",) * 3), r"`boundary` must be one value or one per grid axis"),
        (dict(method="spectral"), r"`method` must be 'auto', 'direct' or 'fft'.*'spectral'"),
        (dict(scheme="raw"), r"`scheme` must be one of.*'raw'"),
        (dict(eps=(0.2, 0.2, 0.2)), r"`eps` must be one value or one per grid axis"),
    ],
)
def test_unknown_names(kwargs, match):
    kwargs = {"eps": 0.2, **kwargs}
    with pytest.raises(mj.MollijaxError, match=match):
        mj.Mollifier(GRID, **kwargs)


def test_unknown_kernel_and_scheme_names():
    with pytest.raises(mj.MollijaxError, match=r"unknown kernel 'bumpy'"):
        mj.from_name("kernel", "bumpy")
    assert mj.from_name("kernel", "polynomial", power=4) == mj.Polynomial(4)
    with pytest.raises(mj.MollijaxError, match=r"Unknown tap `scheme` 'raw'"):
        mj.mollifier_taps(mj.Bump(), 0.05, 0.01, 1, scheme="raw")


def test_unknown_boundary_for_finite_difference():
    with pytest.raises(mj.MollijaxError, match=r"Unknown `boundary`"):
        mj.FiniteDifference(GRID, boundary="mirror")


@pytest.mark.parametrize("method", [mj.Autodiff, mj.Taylor])
def test_autodiff_refuses_arrays(method):
    match = rf"{method.__name__} differentiates a function.*array of shape \(16, 12\)"
    with pytest.raises(mj.MollijaxError, match=match):
        method(GRID)(U, "x")


def test_bad_grid_arguments():
    with pytest.raises(mj.GridMismatchError, match=r"`upper > lower`"):
        mj.Grid.from_bounds(8, 1.0, 0.0)
    with pytest.raises(mj.GridMismatchError, match=r"`spacing` must be positive"):
        mj.Grid((8,), (0.0,))
    with pytest.raises(mj.GridMismatchError, match=r"`axes` must be distinct single letters"):
        mj.Grid((8, 8), (1.0, 1.0), axes=("x", "x"))
    with pytest.raises(mj.GridMismatchError, match=r"Unknown axis name 'q'"):
        GRID.axis_index("q")


def test_noise_and_eps_arguments():
    with pytest.raises(mj.MollijaxError, match=r"`u` contains NaN"):
        mj.estimate_noise(np.array([np.nan] * 10))
    with pytest.raises(mj.MollijaxError, match=r"`order` must be >= 0"):
        mj.suggest_eps(GRID, -1)
    with pytest.raises(mj.MollijaxError, match=r"`noise` must be a non-negative number"):
        mj.suggest_eps(GRID, 2, noise=-0.1)


def test_valid_band_too_narrow_for_difference_scheme():
    grid = mj.Grid.from_bounds(40, 0.0, 1.0)
    d = mj.Mollifier(grid, 0.1, boundary="valid", scheme="difference")
    with pytest.raises(mj.DerivativeOrderError, match=r"wider 'valid' band"):
        d(np.ones(40), "xxxxx")


def test_initial_values_outside_a_constraint_name_the_count_and_first_entry():
    start = np.full((40, 50), 1.0)
    start[3, 7], start[20, 1] = -0.5, 0.0
    with pytest.raises(mj.MollijaxError) as err:
        mj.GridField(start, ("x", "y"), constraint="positive")
    message = str(err.value)
    assert ("of shape (40, 50) (2 of 2000 entries, the first -0.5 at index (3, 7)) violates "
            "the positive constraint") in message
    assert len(message) < 200  # the grid itself is not printed
    with pytest.raises(mj.MollijaxError, match=r"Initial value 2\.0 is outside the bounds"):
        mj.Constant(2.0, constraint=("bounded", 0.0, 1.0))
