import numpy as np

import mollijax as mj


def test_periodic_first_derivative_of_sine():
    grid = mj.Grid.from_bounds(64, 0.0, 2 * np.pi, periodic=True)
    (x,) = grid.mesh()
    d = mj.Mollifier(grid, 0.3, boundary="periodic")(np.sin(x), "x")
    assert np.max(np.abs(d - np.cos(x))) < 0.02
