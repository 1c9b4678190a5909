"""Batched fitting: each item equals its own fit; a diverging item is isolated; loading stacks."""

import jax
import numpy as np
import optax
import pytest

import mollijax as mj
from mollijax import BatchResult, fit_batch, io as mio, list_stack, load_stack, run_batch

SGD = optax.sgd(0.5)  # one object: compiled chunks are reused across calls
ADAM = optax.adam(5e-2)


def _screened(grid, data):
    # u_xx + k u = 0 with u = a sin(pi x): k = pi^2 whatever the amplitude a, but the loss's
    # curvature in k grows like a^2, so plain SGD with a fixed step diverges for large a
    return mj.Problem(grid, lambda s: s.d(s.u, "xx") + s.k * s.u, data={"u": data},
                      derivatives=mj.Mollifier(grid, 4 * grid.spacing[0]))


@pytest.fixture(scope="module")
def line():
    grid = mj.Grid.from_bounds((40,), 0.0, 1.0)
    (x,) = grid.mesh()
    return grid, np.sin(np.pi * x)


def test_items_equal_individual_fits_and_divergence_is_isolated(line):
    grid, base = line
    amps = np.array([1.0, 0.7, 30.0, 1.3])
    stack = amps[:, None] * base[None]
    unknowns = {"k": mj.Constant(1.0)}
    res = fit_batch(_screened(grid, base), {"u": stack}, unknowns, SGD, steps=120, chunk=50)
    assert res.status.tolist() == ["completed", "completed", "diverged", "completed"]
    assert res.ok.tolist() == [True, True, False, True]
    for b in range(4):
        single = mj.fit(_screened(grid, stack[b]), unknowns, SGD, steps=120, chunk=50,
                        progress=False)
        assert res.steps[b] == single.steps
        np.testing.assert_allclose(res.values["k"][b], single.values["k"], rtol=1e-13)
        # the single fit's chunk compiles with the quick options, the batch's at full
        # optimisation: equal up to round-off of the loss's scale (the loss falls to ~1e-17)
        np.testing.assert_allclose(res.history["total"][b, : single.steps],
                                   single.history["total"], rtol=1e-12,
                                   atol=1e-13 * single.history["total"][0])
    assert 0 < res.steps[2] < 120
    assert np.isnan(res.history["total"][2, res.steps[2]:]).all()
    assert np.isfinite(res.final_loss).all()  # the diverged item keeps a finite iterate
    ok = res.ok
    np.testing.assert_allclose(res.values["k"][ok], np.pi**2, rtol=1e-2)  # smoothing bias
    assert "item 2: diverged" in res.summary()
    assert float(res.item(0)["k"].value) == pytest.approx(res.values["k"][0], rel=1e-14)


def test_per_item_initial_guesses_and_grid_fields():
    # one diffusivity-like map per item: u = lam * f, lam(x, y) a GridField per image
    grid = mj.Grid.from_bounds((12, 10), 0.0, 1.0, axes=("x", "y"))
    x, y = grid.mesh()
    f = 1.0 + x * y
    lams = [1.0 + 0.5 * np.sin(np.pi * x), 2.0 - y]
    stack = np.stack([lam * f for lam in lams])
    problem = mj.Problem(grid, {"fit": lambda s: s.lam * s.f - s.u}, data={"u": stack[0]},
                         known={"f": f}, derivatives=mj.Mollifier(grid, 2 * grid.spacing[0]))
    guesses = [{"lam": mj.GridField(np.full(grid.shape, 1.5), "xy")},
               {"lam": mj.GridField(np.full(grid.shape, 0.5), "xy")}]
    res = fit_batch(problem, {"u": stack}, guesses, ADAM, steps=60, chunk=30)
    assert res.values["lam"].shape == (2,) + grid.shape
    for b in range(2):
        pb = mj.Problem(grid, {"fit": lambda s: s.lam * s.f - s.u}, data={"u": stack[b]},
                        known={"f": f}, derivatives=mj.Mollifier(grid, 2 * grid.spacing[0]))
        single = mj.fit(pb, guesses[b], ADAM, steps=60, chunk=30, progress=False)
        np.testing.assert_allclose(res.values["lam"][b], single.values["lam"], rtol=1e-12)
    # and a stack of known fields instead of data
    res2 = fit_batch(problem, {"f": np.stack([f, 2 * f])}, guesses[0], ADAM, steps=5, chunk=5)
    assert res2.values["lam"].shape == (2,) + grid.shape


def test_float32_on_request(line):
    grid, base = line
    res = fit_batch(_screened(grid, base), {"u": np.stack([base, 0.5 * base])},
                    {"k": mj.Constant(1.0)}, SGD, steps=40, chunk=40, dtype="float32")
    assert res.values["k"].dtype == np.float32
    assert res.ok.all()
    np.testing.assert_allclose(res.values["k"], np.pi**2, rtol=1e-2)


def test_errors_name_the_argument(line):
    grid, base = line
    problem = _screened(grid, base)
    unk = {"k": mj.Constant(1.0)}
    with pytest.raises(mj.GridMismatchError, match=r"data_stack\['u'\].*\(B, \*\(40,\)\)"):
        fit_batch(problem, {"u": np.zeros((3, 41))}, unk, SGD, steps=1)
    with pytest.raises(mj.MollijaxError, match="names no data or known field"):
        fit_batch(problem, {"v": np.zeros((3, 40))}, unk, SGD, steps=1)
    bad = np.full((3, 40), np.nan)
    with pytest.raises(mj.NonFiniteError, match=r"item\(s\) \[0, 1, 2\]"):
        fit_batch(problem, {"u": bad}, unk, SGD, steps=1)  # nothing left to fit
    with pytest.raises(mj.MollijaxError, match="list of 2 initial guesses"):
        fit_batch(problem, {"u": np.zeros((3, 40))}, [unk, unk], SGD, steps=1)
    with pytest.raises(mj.MollijaxError, match="`names`"):
        fit_batch(problem, {"u": np.zeros((3, 40))}, unk, SGD, steps=1, names=["a"])
    with pytest.raises(mj.DTypeError, match="`dtype`"):
        fit_batch(problem, {"u": np.zeros((3, 40))}, unk, SGD, steps=1, dtype="int32")


def test_load_stack_formats(tmp_path):
    rng = np.random.default_rng(0)
    items = rng.standard_normal((3, 6, 5))
    folder = tmp_path / "arrays"
    folder.mkdir()
    for b, name in enumerate(["c.npy", "a.npy", "b.npy"]):
        np.save(folder / name, items[b])
    (folder / "notes.txt").write_text("ignored")
    assert list_stack(folder) == ["a.npy", "b.npy", "c.npy"]
    np.testing.assert_array_equal(load_stack(folder), items[[1, 2, 0]])
    np.save(tmp_path / "stack.npy", items)
    np.testing.assert_array_equal(load_stack(tmp_path / "stack.npy"), items)
    np.savez(tmp_path / "two.npz", u=items, v=items[:1])
    np.testing.assert_array_equal(load_stack(tmp_path / "two.npz", key="v"), items[:1])
    with pytest.raises(mio.DataFileError, match="key is needed"):
        load_stack(tmp_path / "two.npz")
    np.save(folder / "d.npy", np.zeros((4, 4)))
    with pytest.raises(mio.DataFileError, match="same shape; a.npy has .6, 5., d.npy has .4, 4."):
        load_stack(folder)
    with pytest.raises(mio.DataFileError, match="does not exist"):
        load_stack(tmp_path / "missing.npy")


def test_load_stack_reads_every_page_of_a_tiff(tmp_path):
    """A multi-page TIFF is one item of shape (pages, h, w) in a folder, and a stack of
    items as one file; a ragged TIFF is refused, not cut to its first page."""
    tifffile = pytest.importorskip("tifffile")
    pages = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)

    def write(path, frames):
        with tifffile.TiffWriter(path) as w:
            for frame in frames:
                w.write(frame)

    (tmp_path / "f").mkdir()
    for b in range(2):
        write(tmp_path / "f" / f"m{b}.tif", pages + b)
    np.testing.assert_array_equal(load_stack(tmp_path / "f"), np.stack([pages, pages + 1]))
    write(tmp_path / "one.tif", pages)
    np.testing.assert_array_equal(load_stack(tmp_path / "one.tif"), pages)
    write(tmp_path / "ragged.tif", [pages[0], np.zeros((2, 2), np.float32)])
    with pytest.raises(mio.DataFileError, match="ragged.tif"):
        load_stack(tmp_path / "ragged.tif")


def test_load_stack_images(tmp_path):
    image = pytest.importorskip("PIL.Image")
    pixels = (np.arange(24 * 2).reshape(2, 4, 6) % 256).astype(np.uint8)
    for b in range(2):
        image.fromarray(pixels[b]).save(tmp_path / f"img{b}.png")
    np.testing.assert_array_equal(load_stack(tmp_path), pixels.astype(np.float64))


def test_run_batch_end_to_end(tmp_path, line):
    grid, base = line
    np.save(tmp_path / "stack.npy", np.stack([base, 2 * base]))
    out = tmp_path / "result.mjx"
    res = run_batch(_screened(grid, base), {"k": mj.Constant(1.0)}, tmp_path / "stack.npy",
                    field="u", optimiser=SGD, steps=40, chunk=20, devices=1, output=out)
    back = BatchResult.load(out)
    assert back.status.tolist() == res.status.tolist() == ["completed", "completed"]
    np.testing.assert_array_equal(back.values["k"], res.values["k"])
    np.testing.assert_array_equal(back.history["total"], res.history["total"])
    assert jax.device_count() >= 1
