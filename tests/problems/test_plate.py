"""plate: the simulator's order, its agreement with the library's solved steady state and with
the residual, noise, named errors, and a CLI smoke run."""

import numpy as np
import pytest
from _runs import load, run_cli

import mollijax as mj

pl = load("plate")
PI = np.pi


def _sine(x, y):
    return np.sin(PI * x) * np.sin(PI * y)


def _manufactured_load(x, y):
    """q = Lap(D Lap w) for the "cosine" D and w = sin(pi x) sin(pi y): D w = w + 0.075
    sin(2 pi x) sin(2 pi y), so q = 4 pi^4 w + 1.2 pi^4 sin(2 pi x) sin(2 pi y)."""
    return 4 * PI**4 * _sine(x, y) + 1.2 * PI**4 * np.sin(2 * PI * x) * np.sin(2 * PI * y)


def _max_error(stiffness, load, intervals):
    x, w, _ = pl.solve_fd(stiffness, load, intervals)
    X, Y = np.meshgrid(x, x, indexing="ij")
    return np.abs(w - _sine(X, Y)).max()


@pytest.mark.parametrize("stiffness", ["constant", "cosine"])
def test_simulator_is_second_order(stiffness):
    load = pl.LOADS["sine"] if stiffness == "constant" else _manufactured_load
    D = pl.STIFFNESSES[stiffness]
    e16, e32 = _max_error(D, load, 16), _max_error(D, load, 32)
    assert 1.9 < np.log2(e16 / e32) < 2.1, (e16, e32)  # measured 2.00 and 2.00
    assert e32 < 3e-3


def test_moment_is_negative_inside():
    # q > 0: M < 0 in the open square, so Lap w = M / D never vanishes there (D identifiable)
    x, w, M = pl.solve_fd(pl.STIFFNESSES["bump"], pl.LOADS["bumps"], 32)
    assert M[1:-1, 1:-1].max() < 0 and np.abs(M[[0, -1], :]).max() == 0
    assert w[1:-1, 1:-1].min() > 0


@pytest.fixture(scope="module")
def cosine33():
    return pl.simulate(n=33, refine=4)


def test_truth_and_load_as_documented(cosine33):
    x, y = cosine33.grid.mesh()
    np.testing.assert_allclose(cosine33.truth["D"], 1 + 0.3 * np.cos(PI * x) * np.cos(PI * y))
    q = cosine33.known["q"]
    assert q[1:-1, 1:-1].min() > 0 and np.abs(q[:, [0, -1]]).max() < 1e-9
    assert not np.allclose(q, q.T)  # off-centre load


def _residual(dataset, derivatives):
    values = {"w": dataset.clean["w"], "D": dataset.truth["D"], "q": dataset.known["q"]}
    scope = mj.Scope(dataset.grid, values.__getitem__, derivatives, "grid")
    return np.asarray(pl.residual(scope))


def test_clean_data_satisfy_the_equation(cosine33):
    grid, q = cosine33.grid, cosine33.known["q"]
    inner = (slice(4, -4), slice(4, -4))
    scale = np.abs(q[inner]).max()

    def worst(dataset, derivatives):
        return np.abs(_residual(dataset, derivatives)[inner]).max() / scale

    h = grid.spacing[0]
    assert worst(cosine33, mj.FiniteDifference(grid)) < 1e-2  # measured 5.4e-3
    assert worst(cosine33, mj.FiniteDifference(grid, accuracy=4)) < 1e-3  # measured 2.8e-4
    # the mollifier's bias grows like eps^2: 1.6e-2 at eps = 2h, 4.8e-2 at 3h
    narrow = worst(cosine33, mj.Mollifier(grid, eps=2 * h))
    wide = worst(cosine33, mj.Mollifier(grid, eps=3 * h))
    assert narrow < 3e-2 and 1.8 < wide / narrow < 4.0, (narrow, wide)
    wrong = dict(cosine33.truth, D=1.2 * cosine33.truth["D"])
    bad = mj.Dataset(grid, cosine33.data, clean=cosine33.clean, known=cosine33.known, truth=wrong)
    assert worst(bad, mj.FiniteDifference(grid, accuracy=4)) > 0.1


def _library_state(dataset):
    steady = mj.Steady(pl.residual, ("w",))
    problem = mj.Problem(dataset, None, steady=steady, conditions=pl.conditions(dataset))
    return np.asarray(problem.grid_values({"D": mj.GridField(dataset.truth["D"], ("x", "y"))})["w"])


def test_library_solution_is_the_simulator_on_its_own_grid():
    # refine = 1: the library's nested Laplacians with odd padding and w pinned on the walls
    # are exactly the simulator's two Dirichlet solves
    dataset = pl.simulate(n=17, stiffness="bump", refine=1)
    w = dataset.clean["w"]
    np.testing.assert_allclose(_library_state(dataset), w, rtol=0, atol=1e-10 * w.max())


def test_library_solution_agrees_with_refined_simulator():
    errors = {}
    for n in (13, 25):
        dataset = pl.simulate(n=n, refine=4)
        w = dataset.clean["w"]
        errors[n] = np.abs(_library_state(dataset) - w).max() / w.max()
    assert errors[25] < 5e-3, errors  # measured 2.9e-3 (49 nodes: 7e-4)
    assert 3.0 < errors[13] / errors[25] < 5.0, errors


def test_noise_is_reproducible():
    a = pl.simulate(n=9, noise=0.05, seed=3, refine=1)
    b = pl.simulate(n=9, noise=0.05, seed=3, refine=1)
    c = pl.simulate(n=9, noise=0.05, seed=4, refine=1)
    np.testing.assert_array_equal(a.data["w"], b.data["w"])
    assert not np.array_equal(a.data["w"], c.data["w"])
    level = (a.data["w"] - a.clean["w"]).std() / a.clean["w"].std()
    assert 0.03 < level < 0.07
    np.testing.assert_array_equal(pl.simulate(n=9, refine=1).data["w"], a.clean["w"])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n": 4}, "`n` >= 5"),
        ({"refine": -1}, "`refine` >= 1"),
        ({"refine": 2.0}, "`refine` must be an int"),
        ({"stiffness": "steel"}, "`stiffness` must be one of"),
        ({"load": 3}, "`load` must be a str"),
        ({"thickness": 0.1}, "no simulation parameter"),
    ],
)
def test_bad_parameters_are_named(params, match):
    with pytest.raises(mj.MollijaxError, match=match) as info:
        pl.simulate(**params)
    assert info.type.__name__ == "ProblemSpecError"


def test_cli_small_config(tmp_path):
    metrics = run_cli("plate_small.toml", tmp_path)
    assert metrics["status"] == "completed"
    err, start = metrics["errors"]["D"]["rel_l2"], metrics["initial_errors"]["D"]["rel_l2"]
    # auto_run (equation error, then the solved state by output error): measured 0.0051
    # from 0.123
    assert err < 0.1 * start and err < 0.02, (err, start)
