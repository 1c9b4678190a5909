"""A batch of solved-steady-state fits runs BiCGStab, not the dense LU, on the CPU backend.

The batched dense-LU chunk under L-BFGS can hang inside the XLA CPU runtime (`fit_batch`'s
docstring; this very problem with `solver="direct"` batched hung in its first chunk), so a
batch solves the steady state by BiCGStab. The tolerance here is
loose (1e-6) so that the two solvers' fits differ far above round-off and the test can tell
which one a batch used.

The optimiser is `mj.lbfgs`, whose first trial is a steepest-descent step of unit length:
for the second item it lands on `k = 0`, where the operator is singular. That solve must
fail alone (NaN, a rejected trial) and not stop the batch: every solve of the Krylov path,
its tangents and adjoint included, reports failure as NaN instead of raising.
"""

import numpy as np
import pytest

import mollijax as mj

LBFGS = mj.lbfgs()  # one object: compiled chunks are reused across calls
STEPS, CHUNK = 10, 5


def _poisson(s):
    # a known, varying factor `a`: the DST preconditioner (built on mean coefficients) is not
    # exact, so BiCGStab stops at its tolerance instead of solving in one step
    c = s.a * s.k
    return s.d(c * s.d(s.u, "x"), "x") + s.d(c * s.d(s.u, "y"), "y") + s.f


def _walls(grid):
    return [mj.Condition("u", {a: i}, 0.0) for a in grid.axes for i in (0, -1)]


def _problem(grid, u, known, solver):
    steady = mj.Steady(_poisson, solver=solver, rtol=1e-6, atol=1e-8)
    return mj.Problem(grid, None, data={"u": u}, known=known, steady=steady,
                      conditions=_walls(grid))


@pytest.fixture(scope="module")
def case():
    grid = mj.Grid.from_bounds((9, 9), 0.0, 1.0, axes=("x", "y"))
    x, y = grid.mesh()
    known = {"f": 2 * np.pi**2 * np.sin(np.pi * x) * np.sin(np.pi * y), "a": 1.0 + 0.8 * x * y}
    # the discrete solution for k = 1 (dense LU); amplitude c makes the exact answer k = 1 / c
    u = mj.Steady(_poisson, solver="direct").solve(grid, {"k": mj.Constant(1.0)}, known,
                                                     _walls(grid))["u"]
    stack = np.stack([0.8 * np.asarray(u), 1.3 * np.asarray(u)])
    return grid, known, stack


def _fits(grid, known, stack, solver):
    unknowns = {"k": mj.Constant(1.0)}
    return [mj.fit(_problem(grid, u, known, solver), unknowns, LBFGS, steps=STEPS, chunk=CHUNK,
                   progress=False).values["k"] for u in stack]


def test_steady_batch_is_bicgstab(case):
    grid, known, stack = case
    unknowns = {"k": mj.Constant(1.0)}
    krylov = _fits(grid, known, stack, "bicgstab")
    dense = _fits(grid, known, stack, "direct")
    # the two solvers' fits differ (else the comparison below could not fail)
    assert np.max(np.abs(np.subtract(krylov, dense))) > 1e-10
    auto = mj.fit_batch(_problem(grid, stack[0], known, "auto"), {"u": stack}, unknowns, LBFGS,
                        steps=STEPS, chunk=CHUNK)
    assert auto.status.tolist() == ["completed", "completed"]
    np.testing.assert_allclose(auto.values["k"], krylov, rtol=1e-12)
    # both recover the exact k = 1 / amplitude (to the solvers' tolerance)
    np.testing.assert_allclose(auto.values["k"], [1 / 0.8, 1 / 1.3], rtol=1e-4)
    np.testing.assert_allclose(dense, [1 / 0.8, 1 / 1.3], rtol=1e-4)
    # an explicit solver="direct" is replaced too, and says so
    with pytest.warns(RuntimeWarning, match="bicgstab"):
        direct = mj.fit_batch(_problem(grid, stack[0], known, "direct"), {"u": stack},
                              unknowns, LBFGS, steps=STEPS, chunk=CHUNK)
    np.testing.assert_allclose(direct.values["k"], krylov, rtol=1e-12)
