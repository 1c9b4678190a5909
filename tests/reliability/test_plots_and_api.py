"""Figures a run draws (log axes over positive values only; one orientation for 2-D maps,
with colour bars) and misuse of the API behind the command line."""

import numpy as np
import pytest

import mollijax as mj
from mollijax import cli
from mollijax.config import load_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "history, log, linear",
    [
        ({"total": [3.0, 2.0], "reg:smooth": [0.0, 0.0]}, {"total"}, {"reg:smooth"}),
        ({"total": [-1.0, -2.0], "data:u": [1.0, 0.5]}, {"data:u"}, {"total"}),
        ({"total": [1.0, np.nan, 0.5]}, {"total"}, set()),
        ({"a": [np.nan, np.inf]}, set(), set()),
        ({"a": [1e-30, 1e30], "b": [-1.0, 1.0]}, {"a"}, {"b"}),
    ],
)
def test_loss_terms_on_log_axes_only_when_positive(history, log, linear):
    history = {k: np.asarray(v, dtype=float) for k, v in history.items()}
    got_log, got_linear, notes = cli.split_terms(history)
    assert set(got_log) == log and set(got_linear) == linear
    fig = cli.loss_figure(history)
    for ax in fig.axes:
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), float)
            if ax.get_yscale() == "log":
                assert np.all(y[np.isfinite(y)] > 0)
    if "a" in history and not log:
        assert "no finite value" in notes["a"]


def test_two_d_maps_have_x_right_y_up_and_colour_bars():
    grid = mj.Grid.from_bounds((5, 3), (0.0, 10.0), (1.0, 12.0), axes=("x", "y"))
    values = np.arange(15.0).reshape(5, 3)  # values[i, j] at (x_i, y_j)
    fig = cli.unknown_figure("k", ("x", "y"), grid, values, values + 1.0)
    images = [a for a in fig.axes if a.images]
    assert len(images) == 3 and len(fig.axes) == 6  # truth, recovered, error + colour bars
    for ax in images:
        im = ax.images[0]
        assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y"
        assert im.origin == "lower" and tuple(im.get_extent()) == (0.0, 1.0, 10.0, 12.0)
        shown = np.asarray(im.get_array())
        assert shown.shape == (3, 5)  # rows are y, columns are x
    np.testing.assert_array_equal(np.asarray(images[1].images[0].get_array()), values.T)


def test_a_one_d_unknown_without_truth_has_no_empty_panel():
    grid = mj.Grid.from_bounds((7,), (0.0,), (1.0,), axes=("x",))
    values = np.linspace(0.0, 1.0, 7)
    alone = cli.unknown_figure("u", ("x",), grid, values, None)
    assert len(alone.axes) == 1 and len(alone.axes[0].get_lines()) == 1
    both = cli.unknown_figure("u", ("x",), grid, values, values + 0.1)
    assert len(both.axes) == 2 and all(ax.get_lines() for ax in both.axes)


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "configs" / "forcing_small.toml")


@pytest.mark.parametrize(
    "call, cls, pattern",
    [
        (lambda c, t: cli.run(c, t / "o", resume=True, force=True), cli.RunFolderError,
         "give one of them"),
        (lambda c, t: cli.run(c, t / "f"), cli.RunFolderError, "is a file, not a folder"),
        (lambda c, t: cli.inspect_folder(t / "none"), cli.RunFolderError, "does not exist"),
        (lambda c, t: cli.inspect_folder(t / "empty"), cli.RunFolderError, "holds no mollijax"),
        (lambda c, t: cli.read_metrics(t / "f"), mj.CorruptFileError, "is not valid JSON"),
        (lambda c, t: mj.FitResult.load(t / "f"), mj.CorruptFileError, "not a mollijax file"),
        (lambda c, t: cli.run(c.replace(batch=c.batch.__class__(stack="none.npy")), t / "b"),
         mj.MollijaxError, "does not exist"),
    ],
)
def test_api_misuse_is_named(config, tmp_path, call, cls, pattern):
    (tmp_path / "f").write_text("not json [")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cls, match=pattern):
        call(config, tmp_path)


def test_theory_with_a_bad_config_or_out(tmp_path, capsys):
    (tmp_path / "f").write_text("not toml [")
    assert cli.main(["theory", "electro", str(tmp_path / "f"), "--out", str(tmp_path)]) == 2
    assert cli.main(["theory", "electro", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "not valid TOML" in err and "is a file, not a folder" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"steps": -1}, r"`steps` must be >= 0 and `chunk` >= 1"),
        ({"chunk": 0}, r"`steps` must be >= 0 and `chunk` >= 1"),
        ({"resume": True}, r"`resume=True` needs a `checkpoint` path"),
        ({"checkpoint_every": 0}, r"`checkpoint_every` must be >= 1"),
        ({"tol": -1.0}, r"`tol` must be None or a finite number > 0"),
        ({"tol": float("nan")}, r"`tol` must be None or a finite number > 0"),
        ({"adaptive": "magic"}, r"`adaptive` must be None or 'gradnorm'"),
    ],
)
def test_fit_arguments_are_checked_before_compiling(config, kwargs, pattern):
    prepared = cli.prepare(config)
    with pytest.raises(mj.MollijaxError, match=pattern):
        mj.fit(prepared.problem, prepared.unknowns, **kwargs)


@pytest.mark.parametrize("margin", [-3, -1, True])  # (other types: the annotations)
def test_score_refuses_a_bad_margin(margin):
    grid = mj.Grid.from_bounds((12,), 0.0, 1.0)
    data = mj.Dataset(grid, {"u": np.zeros(12)}, truth={"k": np.ones(12)})
    with pytest.raises(mj.MollijaxError, match=r"score: `margin` must be None or an integer >= 0"):
        mj.score({"k": np.ones(12)}, data, margin=margin)
    assert mj.score({"k": 1.1 * np.ones(12)}, data, margin=2)["k"]["rel_l2"] == pytest.approx(0.1)


def test_score_says_which_nodes_it_scored():
    # the error is over the interior only, and says so: an error over the whole grid
    # (e.g. recomputed from fields.npz) differs, and the record explains why
    grid = mj.Grid.from_bounds((20, 30), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
    truth = np.ones((20, 30))
    est = truth.copy()
    est[0, :] = 3.0  # an error on the wall only
    data = mj.Dataset(grid, {"u": np.zeros((20, 30))}, truth={"k": truth})
    s = mj.score({"k": est}, data)["k"]
    assert s["margin"] == [2, 3] and s["nodes"] == 16 * 24
    assert s["rel_l2"] == 0.0  # the wall is not scored
    whole = mj.score({"k": est}, data, margin=0)["k"]
    assert whole["margin"] == [0, 0] and whole["nodes"] == 600
    assert whole["rel_l2"] == pytest.approx(np.sqrt(30 * 4) / np.sqrt(600))
