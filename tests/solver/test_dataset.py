"""Dataset: validated once, each bad input named."""

import numpy as np
import pytest

import mollijax as mj

GRID = mj.Grid.from_bounds((9, 5), (0.0, 0.0), (1.0, 1.0), axes=("x", "t"))
U = np.arange(45.0).reshape(9, 5)


def test_masked_nan_is_zeroed_and_the_dataset_is_complete_only_without_masks():
    u = U.copy()
    u[2, 3] = np.nan
    mask = np.ones((9, 5), bool)
    mask[2, 3] = False
    ds = mj.Dataset(GRID, {"u": u, "v": U}, masks={"u": mask})
    assert ds.data["u"][2, 3] == 0.0 and np.array_equal(ds.data["u"][mask], U[mask])
    assert ds.complete == ("v",) and ds.mask("v").all()


@pytest.mark.parametrize("kwargs, message", [
    ({"data": {"u": np.ones((9, 4))}}, r"`data\['u'\]` must have the grid's shape \(9, 5\)"),
    ({"data": {"u": np.where(U > 40, np.nan, U)}}, r"`data\['u'\]` has 4 NaN or inf"),
    ({"data": {"u": U}, "masks": {"w": np.ones((9, 5), bool)}}, r"`masks\['w'\]` has no matching"),
    ({"data": {"u": U}, "masks": {"u": np.ones((9, 5))}}, r"`masks\['u'\]` must be a boolean"),
    ({"data": {"u": U}, "masks": {"u": np.zeros((9, 5), bool)}}, "masks out every node"),
    ({"data": {"u": U}, "known": {"u": U}}, "both `known` and `data`"),
    ({"data": {"u": U}, "known": {"f": np.full((9, 5), np.inf)}}, r"`known\['f'\]` contains"),
    ({"data": {"grad": U}}, "field name 'grad' is reserved"),
    ({"data": {"u": U}, "truth": {"D": np.array([1.0, np.nan])}}, r"`truth\['D'\]` contains NaN"),
    ({"data": {"u": U.astype(complex)}}, "must be a real array"),
    ({"data": {"u": U}, "truth": {"D": np.ones(8)}},
     r"`truth\['D'\]` has shape \(8,\); a truth lives on the grid \(9, 5\)"),
    ({"data": {"u": U}, "truth": {"D": np.ones((5, 9))}}, r"has shape \(5, 9\)"),
])
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(mj.MollijaxError, match=message):
        mj.Dataset(GRID, **kwargs)


def test_a_truth_on_any_sub_grid_is_accepted_and_score_wants_the_dataset():
    ds = mj.Dataset(GRID, {"u": U}, truth={"D": np.ones(9), "c": np.ones(5), "k": 2.0,
                                           "m": np.ones((9, 5))})
    assert ds.truth["c"].shape == (5,) and ds.truth["k"].shape == ()
    assert mj.score({"D": np.ones(9)}, ds)["D"]["rel_l2"] == 0.0
    # (under the test suite's runtime type checks the annotation refuses it first)
    with pytest.raises((mj.MollijaxError, TypeError), match="dataset"):
        mj.score({"D": np.ones(9)}, {"D": np.ones(9)})
