"""The training driver shared by `fit` and `fit_batch`: batch checkpoints and resume,
interrupts (Ctrl-C and SIGTERM), skipped NaN items, verified files, append-only history."""

import os
import signal

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

import mollijax as mj
from mollijax import (
    CheckpointMismatchError,
    CorruptFileError,
    FitResult,
    io as mio,  # read_header, HistoryLog: a run's files, verified
)

SGD = optax.sgd(0.5)  # one object: compiled chunks are reused across calls
ADAM = optax.adam(5e-2)
STEPS, CHUNK = 60, 20
AMPS = np.array([1.0, 30.0, 0.7, 1.3])  # item 1 diverges under this SGD step


def _screened(grid, data):
    return mj.Problem(grid, lambda s: s.d(s.u, "xx") + s.k * s.u, data={"u": data},
                      derivatives=mj.Mollifier(grid, 4 * grid.spacing[0]))


@pytest.fixture(scope="module")
def line():
    grid = mj.Grid.from_bounds((40,), 0.0, 1.0)
    (x,) = grid.mesh()
    base = np.sin(np.pi * x)
    return grid, base, AMPS[:, None] * base[None]


@pytest.fixture(scope="module")
def full_batch(line):
    grid, base, stack = line
    return mj.fit_batch(_screened(grid, base), {"u": stack}, {"k": mj.Constant(1.0)}, SGD,
                        steps=STEPS, chunk=CHUNK)


def _batch(line, **kw):
    grid, base, stack = line
    kw.setdefault("steps", STEPS)
    return mj.fit_batch(_screened(grid, base), {"u": kw.pop("stack", stack)},
                        {"k": mj.Constant(1.0)}, kw.pop("opt", SGD), chunk=CHUNK, **kw)


def _assert_same(a: FitResult, b: FitResult):
    """Bit for bit: status, steps, values, fields, history, final loss, unknowns."""
    assert a.status.tolist() == b.status.tolist()
    np.testing.assert_array_equal(a.steps, b.steps)
    for group in ("values", "fields", "history"):
        x, y = getattr(a, group), getattr(b, group)
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{group}[{k!r}]")
    np.testing.assert_array_equal(a.final_loss, b.final_loss)
    for u, v in zip(jax.tree_util.tree_leaves(eqx.filter(a.unknowns, eqx.is_array)),
                    jax.tree_util.tree_leaves(eqx.filter(b.unknowns, eqx.is_array)), strict=True):
        np.testing.assert_array_equal(u, v)


def test_batch_checkpoint_and_resume_equal_an_uninterrupted_run(tmp_path, line, full_batch):
    assert full_batch.status.tolist() == ["completed", "diverged", "completed", "completed"]
    ckpt = tmp_path / "batch.ckpt"
    half = _batch(line, steps=40, checkpoint=ckpt)
    assert half.steps.tolist()[0] == 40 and ckpt.exists()
    header = mio.read_header(ckpt)
    assert header["done"] == 40 and header["status"][0] == "completed"
    resumed = _batch(line, checkpoint=ckpt, resume=True, progress=True)
    _assert_same(resumed, full_batch)
    # resuming a finished run returns it unchanged
    _assert_same(_batch(line, checkpoint=ckpt, resume=True), full_batch)


def test_batch_interrupt_keeps_state_and_resumes(tmp_path, line, full_batch):
    ckpt = tmp_path / "batch.ckpt"
    seen = []

    def stop(step, terms):
        seen.append((step, terms["total"].shape))
        if step >= 40:
            raise KeyboardInterrupt

    cut = _batch(line, checkpoint=ckpt, checkpoint_every=1000, callback=stop)
    assert seen == [(20, (4,)), (40, (4,))]
    alive = full_batch.status != "diverged"
    assert cut.status[alive].tolist() == ["interrupted"] * 3
    assert cut.steps[alive].tolist() == [40] * 3
    assert "interrupted at step 40" in cut.reasons[0]
    assert mio.read_header(ckpt)["status"][0] == "interrupted"
    resumed = _batch(line, checkpoint=ckpt, resume=True)
    _assert_same(resumed, full_batch)


def test_sigterm_interrupts_like_ctrl_c_and_handlers_are_restored(tmp_path, line):
    grid, base, _ = line
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def term(step, terms):
        os.kill(os.getpid(), signal.SIGTERM)

    ckpt = tmp_path / "one.ckpt"
    cut = mj.fit(_screened(grid, base), {"k": mj.Constant(1.0)}, SGD, steps=STEPS, chunk=CHUNK,
                 checkpoint=ckpt, callback=term, progress=False)
    assert cut.status == mj.Status.interrupted and cut.steps == CHUNK
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous
    resumed = mj.fit(_screened(grid, base), {"k": mj.Constant(1.0)}, SGD, steps=STEPS,
                     chunk=CHUNK, checkpoint=ckpt, resume=True, progress=False)
    full = mj.fit(_screened(grid, base), {"k": mj.Constant(1.0)}, SGD, steps=STEPS,
                  chunk=CHUNK, progress=False)
    np.testing.assert_array_equal(resumed.values["k"], full.values["k"])
    np.testing.assert_array_equal(resumed.history["total"], full.history["total"])


def test_nan_item_is_skipped_and_the_others_equal_their_single_fits(line, full_batch):
    grid, base, stack = line
    bad = stack.copy()
    bad[2, 7] = np.nan
    res = _batch(line, stack=bad, names=["a", "b", "c", "d"])
    assert res.status.tolist() == ["completed", "diverged", "skipped", "completed"]
    assert res.ok.tolist() == [True, False, False, True]
    assert "NaN or inf at 1 observed node(s) of data 'u'" in res.reasons[2]
    assert "item c: skipped at step 0 (NaN or inf" in res.summary()
    assert res.steps[2] == 0 and np.isnan(res.values["k"][2]) and np.isnan(res.final_loss[2])
    assert np.isnan(res.history["total"][2]).all()
    for b in (0, 1, 3):
        single = mj.fit(_screened(grid, stack[b]), {"k": mj.Constant(1.0)}, SGD, steps=STEPS,
                        chunk=CHUNK, progress=False)
        assert res.steps[b] == single.steps
        np.testing.assert_allclose(res.values["k"][b], single.values["k"], rtol=1e-13)
        # the single fit's chunk compiles with the quick options, the batch's at full
        # optimisation: equal up to round-off of the loss's scale (it falls to ~1e-27)
        scale = 1e-13 * single.history["total"][0]
        np.testing.assert_allclose(res.history["total"][b, : single.steps],
                                   single.history["total"], rtol=1e-12, atol=scale)
        np.testing.assert_allclose(res.final_loss[b], single.final_loss, rtol=1e-12,
                                   atol=scale)
        # leaving an item out changes nothing for the others
        np.testing.assert_allclose(res.values["k"][b], full_batch.values["k"][b], rtol=1e-13)


def _flips(size: int):
    """Byte positions to corrupt: the whole prefix and header start, then a spread."""
    return sorted(set(range(min(size, 120))) | set(range(120, size, max(1, size // 150))))


def _corrupt(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    return bytes(data)


def test_corrupted_or_truncated_files_are_refused(tmp_path, line, full_batch):
    path = full_batch.save(tmp_path / "result.mjx")
    good = path.read_bytes()
    back = FitResult.load(path, like={"k": mj.Constant(1.0)})
    _assert_same(back, full_batch)
    assert back.reasons == full_batch.reasons and back.batched
    for at in _flips(len(good)):
        path.write_bytes(good)
        _corrupt(path, at)
        with pytest.raises(CorruptFileError):
            FitResult.load(path)
    for n in (0, 5, 30, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:n])
        with pytest.raises(CorruptFileError, match="truncated|not a mollijax file"):
            FitResult.load(path)
    path.write_bytes(good + b"\0")
    with pytest.raises(CorruptFileError, match="longer than its header says"):
        FitResult.load(path)


def test_resume_refuses_a_corrupted_checkpoint_or_history(tmp_path, line):
    ckpt = tmp_path / "batch.ckpt"
    _batch(line, steps=40, checkpoint=ckpt)
    hist = ckpt.with_name(ckpt.name + ".history")
    good_ckpt, good_hist = ckpt.read_bytes(), hist.read_bytes()
    for at in (3, 60, len(good_ckpt) - 3):
        _corrupt(ckpt, at)
        with pytest.raises(CorruptFileError):
            _batch(line, checkpoint=ckpt, resume=True)
        ckpt.write_bytes(good_ckpt)
    ckpt.write_bytes(good_ckpt[:-8])
    with pytest.raises(CorruptFileError, match="truncated"):
        _batch(line, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(good_ckpt)
    for at in (0, 20, 50, len(good_hist) // 2, len(good_hist) - 1):
        _corrupt(hist, at)
        with pytest.raises(CorruptFileError, match="History"):
            _batch(line, checkpoint=ckpt, resume=True)
        hist.write_bytes(good_hist)
    hist.write_bytes(good_hist[:-1])
    with pytest.raises(CorruptFileError, match="truncated"):
        _batch(line, checkpoint=ckpt, resume=True)


def test_resume_refuses_changed_data_or_optimiser(tmp_path, line):
    ckpt = tmp_path / "batch.ckpt"
    _batch(line, steps=20, checkpoint=ckpt)
    changed = line[2].copy()
    changed[0, 3] += 1e-9
    with pytest.raises(CheckpointMismatchError, match="the data differ"):
        _batch(line, stack=changed, checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointMismatchError, match="optimiser: checkpoint 'EmptyState"):
        _batch(line, opt=ADAM, checkpoint=ckpt, resume=True)


def test_history_is_appended_not_rewritten(tmp_path, line, full_batch):
    ckpt = tmp_path / "batch.ckpt"
    hist = ckpt.with_name(ckpt.name + ".history")
    sizes, contents = [], []

    def watch(step, terms):
        if hist.exists():
            sizes.append(hist.stat().st_size)
            contents.append(hist.read_bytes())

    _batch(line, steps=40, checkpoint=ckpt, callback=watch)
    _batch(line, checkpoint=ckpt, resume=True, callback=watch)
    final = hist.read_bytes()
    sizes.append(len(final))
    contents.append(final)
    # one record per chunk: the file grows at each checkpoint, earlier bytes stay as they were
    assert len(sizes) == 3 and 0 < sizes[0] < sizes[1] < sizes[2]
    assert all(abs(d - sizes[0]) <= 2 for d in np.diff(sizes))  # one chunk's worth each time
    for earlier in contents:
        assert final[: len(earlier)] == earlier
    header = mio.read_header(ckpt)
    assert header["history"]["bytes"] == len(final) and header["done"] == STEPS
    assert "history" not in str(header.get("leaves"))  # the history is not in the checkpoint
    records = mio.HistoryLog(hist).load(header["history"])
    assert [start for start, _ in records] == [0, 20, 40]
    got = np.concatenate([r["total"] for _, r in records], axis=1)
    ok = full_batch.ok
    np.testing.assert_array_equal(got[ok], full_batch.history["total"][ok])


def test_a_callback_returning_a_reason_stops_the_fit_there(line):
    """A caller's stopping rule: the first chunk whose callback returns a string ends the
    run as converged with that reason; the steps and history end there, and the unknowns
    are those of that step (equal to a fit run for exactly that many steps)."""
    grid, base, _ = line
    seen = []

    def rule(step, terms):
        seen.append(step)
        return "enough chunks" if step >= 2 * CHUNK else None

    problem = _screened(grid, base)
    res = mj.fit(problem, {"k": mj.Constant(1.0)}, SGD, steps=STEPS, chunk=CHUNK,
                 progress=False, callback=rule)
    assert seen == [CHUNK, 2 * CHUNK] and res.steps == 2 * CHUNK
    assert res.status == mj.Status.completed and "enough chunks" in res.message
    assert len(res.history["total"]) == 2 * CHUNK
    same = mj.fit(problem, {"k": mj.Constant(1.0)}, SGD, steps=2 * CHUNK, chunk=CHUNK,
                  progress=False)
    np.testing.assert_array_equal(res.values["k"], same.values["k"])


def test_a_failed_runtime_check_in_the_step_stops_as_diverged_with_its_message(line):
    """A check inside the compiled step (here `eqx.error_if`, as lineax raises on a Krylov
    breakdown) stops the fit as diverged, naming the check, with the last good state."""
    grid, base, _ = line

    def guarded(s):
        r = s.d(s.u, "xx") + s.k * s.u
        return eqx.error_if(r, s.k > 1.5, "k rose above 1.5")

    problem = mj.Problem(grid, guarded, data={"u": base},
                         derivatives=mj.Mollifier(grid, 4 * grid.spacing[0]))
    res = mj.fit(problem, {"k": mj.Constant(1.0)}, ADAM, steps=STEPS, chunk=5, progress=False)
    assert res.status == mj.Status.diverged
    assert "k rose above 1.5" in res.message
    assert 1.0 < float(res.values["k"]) <= 1.5  # moved, and stopped before the check failed
