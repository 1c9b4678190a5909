"""Faults around a run's output folder, on one tiny problem compiled once (forcing, 101
nodes, 40 steps): an earlier run is never overwritten without --resume or --force, a resume
that is not the same run is refused naming what differs, damage to every file of the folder
is named, an interrupted write leaves the earlier output set whole, and `show` tells
finished, partial, stale and batch folders apart."""

import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest

import mollijax as mj
from mollijax import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "configs" / "forcing_small.toml").read_text().replace("steps = 400", "steps = 40")


def _files(folder: pathlib.Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _run(config, out, *extra):
    return cli.main(["run", str(config), "--out", str(out), "--quiet", "--no-plots", *extra])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished run (and the files it came from), copied by each test before it harms it."""
    root = tmp_path_factory.mktemp("base")
    (root / "run.toml").write_text(CONFIG)
    assert _run(root / "run.toml", root / "out") == 0
    return root


@pytest.fixture
def work(base, tmp_path):
    shutil.copytree(base, tmp_path / "w")
    return tmp_path / "w"


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_second_run_into_the_folder_is_refused_and_nothing_changes(work, capsys):
    before = _files(work / "out")
    assert _run(work / "run.toml", work / "out", "--steps", "50") == 2
    err = _err(capsys)
    assert "holds an earlier run (completed after 40 steps" in err and "--resume" in err
    assert "--force" in err and _files(work / "out") == before


def test_resume_and_force_together_are_refused(work, capsys):
    assert _run(work / "run.toml", work / "out", "--resume", "--force") == 2
    assert "give one of them" in _err(capsys)


@pytest.mark.parametrize(
    "old, new, named",
    [
        ("noise = 0.01", "noise = 0.02", "config.data.noise: earlier 0.01, now 0.02"),
        ("learning_rate = 0.05", "learning_rate = 0.02",
         "config.optimiser.learning_rate: earlier 0.05, now 0.02"),
        ('eps = "auto"', "eps = 0.1", "config.derivatives.eps: earlier 'auto', now 0.1"),
        ("nt = 101", "nt = 81", "config.params.nt: earlier 101, now 81"),
        ("chunk = 100", "chunk = 20", "config.optimiser.chunk: earlier 100, now 20"),
        ('representation = "grid"', 'representation = "grid"\ninit = 0.5',
         "config.unknowns.lam.init: earlier None, now 0.5"),
        ("[optimiser]", "[optimiser]\nseed = 3", "config.optimiser.seed: earlier 0, now 3"),
        ("[data]", "[data]\nseed = 4", "data: the data differ"),
    ],
)
def test_resume_of_a_different_run_is_refused_naming_the_difference(work, capsys, old, new,
                                                                    named):
    before = _files(work / "out")
    cfg = work / "run.toml"
    assert old in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(old, new))
    assert _run(cfg, work / "out", "--resume") == 2
    err = _err(capsys)
    assert "CheckpointMismatchError" not in err and "refusing to resume it" in err
    assert named in err and _files(work / "out") == before


def test_resume_after_the_problem_file_changed_is_refused(work, capsys):
    shutil.copytree(ROOT / "problems", work / "problems",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cfg = work / "mine.toml"
    cfg.write_text(CONFIG.replace('name = "forcing"', 'file = "problems/forcing.py"'))
    assert _run(cfg, work / "mine", "--steps", "1") == 0
    problem = work / "problems" / "forcing.py"
    problem.write_text(problem.read_text() + "\n# edited\n")
    assert _run(cfg, work / "mine", "--resume", "--steps", "1") == 2
    assert "problem_file: the problem file's content changed" in _err(capsys)


def test_resume_continues_and_only_the_step_count_may_change(work):
    assert _run(work / "run.toml", work / "out", "--resume", "--steps", "60") == 0
    metrics = cli.read_metrics(work / "out" / "metrics.json")
    assert metrics["status"] == "completed" and metrics["steps"] == 60
    assert cli.inspect_folder(work / "out")[1] == 0


def test_force_with_a_bad_config_keeps_the_earlier_run(work, capsys):
    before = _files(work / "out")
    bad = work / "bad.toml"
    assert 'eps = "auto"' in CONFIG
    bad.write_text(CONFIG.replace('eps = "auto"', "eps = 50.0"))
    assert _run(bad, work / "out", "--force") == 2
    assert "Kernel wider than the grid" in _err(capsys) and _files(work / "out") == before


def test_force_replaces_the_earlier_run(work):
    (work / "out" / "notes.txt").write_text("mine")
    assert _run(work / "run.toml", work / "out", "--force", "--steps", "20") == 0
    metrics = cli.read_metrics(work / "out" / "metrics.json")
    assert metrics["steps"] == 20
    assert set(metrics["files"]) == {"result.mjx", "fields.npz", "uncertainty.json"}
    assert (work / "out" / "notes.txt").read_text() == "mine"  # not a file of the run
    assert cli.inspect_folder(work / "out")[1] == 0


DAMAGE = [
    ("checkpoint.mjx", lambda b: b[:-3], r"checkpoint\.mjx is truncated"),
    ("checkpoint.mjx", lambda b: b[:-1] + bytes([b[-1] ^ 1]), r"fails its SHA-256 check"),
    ("checkpoint.mjx.history", lambda b: b[:10], r"history is truncated|is truncated: the"),
    ("checkpoint.mjx.history", lambda b: b[:-1] + b"\0", r"fail the SHA-256"),
    ("run.json", lambda b: b"{", r"run\.json is corrupted or was edited"),
    ("run.json", lambda b: b.replace(b"0.05", b"0.06"), r"run\.json is corrupted or was edited"),
    ("run.json", None, r"run\.json is missing: the checkpoint .* cannot be matched"),
]


@pytest.mark.parametrize("name, damage, pattern", DAMAGE,
                         ids=[f"{d[0]}-{i}" for i, d in enumerate(DAMAGE)])
def test_damaged_run_files_refuse_a_resume(work, capsys, name, damage, pattern):
    path = work / "out" / name
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    before = _files(work / "out")
    assert _run(work / "run.toml", work / "out", "--resume") == 2
    assert __import__("re").search(pattern, _err(capsys))
    assert _files(work / "out") == before


def _flip_last(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


SHOW = [
    ("metrics.json", lambda p: p.write_text("{"), 2, "is not valid JSON"),
    ("metrics.json", lambda p: p.write_text(p.read_text().replace('"steps": 40', '"steps": 9')),
     2, "modified or corrupted"),
    ("fields.npz", lambda p: p.write_bytes(p.read_bytes() + b"\0"), 1,
     "fields.npz changed since the run wrote it"),
    ("result.mjx", lambda p: p.unlink(), 1, "result.mjx is missing"),
    ("checkpoint.mjx", lambda p: p.write_bytes(_flip_last(p.read_bytes())), 1,
     "the checkpoint is newer than metrics.json"),
    ("metrics.json", lambda p: p.unlink(), 1, "partial run: no metrics.json"),
]


@pytest.mark.parametrize("name, damage, code, text", SHOW,
                         ids=[f"{s[0]}-{i}" for i, s in enumerate(SHOW)])
def test_show_names_damage_and_partial_folders(work, capsys, name, damage, code, text):
    damage(work / "out" / name)
    assert cli.main(["show", str(work / "out")]) == code
    out = capsys.readouterr()
    assert text in out.out + out.err and "Traceback" not in out.err


def test_interrupt_while_writing_outputs_keeps_the_earlier_set(work, capsys, monkeypatch):
    """Ctrl-C while the outputs of a resumed run are staged: the earlier output set stays
    whole (no new result.mjx beside the old metrics.json), no temporary folder is left, and
    show says the checkpoint is ahead of the outputs."""
    before = _files(work / "out")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.Staging, "commit", interrupted)
    code = cli.main(["run", str(work / "run.toml"), "--out", str(work / "out"), "--quiet",
                     "--resume", "--steps", "60"])
    assert code == 130 and "interrupted" in _err(capsys)
    after = _files(work / "out")
    for name in ("metrics.json", "result.mjx", "fields.npz"):
        assert after[name] == before[name], name
    assert not list(work.glob(".out.partial-*"))
    text, status = cli.inspect_folder(work / "out")
    assert status == 1 and "the checkpoint is newer than metrics.json (step 60" in text
    monkeypatch.undo()
    assert _run(work / "run.toml", work / "out", "--resume", "--steps", "60") == 0
    assert cli.read_metrics(work / "out" / "metrics.json")["steps"] == 60


def test_figures_come_after_the_result_and_never_cost_it(work, capsys, monkeypatch):
    """The figures are drawn after the result is in place: a figure that fails is named
    (stderr and `plots_failed`) and the run stands; Ctrl-C while drawing leaves the new
    result whole and checked, with no figure listed that is not there."""
    def broken(*a, **k):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(cli, "plot_losses", broken)
    code = cli.main(["run", str(work / "run.toml"), "--out", str(work / "out"), "--quiet",
                     "--force", "--steps", "50"])
    assert code == 0 and "figure losses.png was not drawn (RuntimeError: no fonts)" in _err(capsys)
    metrics = cli.read_metrics(work / "out" / "metrics.json")
    assert metrics["steps"] == 50 and metrics["plots_failed"] == {
        "losses.png": "RuntimeError: no fonts"}
    assert metrics["plots"] == ["lam.png"] and (work / "out" / "lam.png").is_file()
    assert not (work / "out" / "losses.png").exists()
    assert cli.inspect_folder(work / "out")[1] == 0  # every listed file present and intact

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "plot_losses", interrupted)
    code = cli.main(["run", str(work / "run.toml"), "--out", str(work / "out"), "--quiet",
                     "--force", "--steps", "60"])
    assert code == 130
    metrics = cli.read_metrics(work / "out" / "metrics.json")
    assert metrics["steps"] == 60 and metrics["plots"] == []
    assert not list(work.glob(".out.partial-*")) and not list((work / "out").glob("*.png"))
    assert cli.inspect_folder(work / "out")[1] == 0


def test_leftover_staging_folder_is_reported(work):
    (work / ".out.partial-abc").mkdir()
    text, status = cli.inspect_folder(work / "out")
    assert status == 1 and ".out.partial-abc" in text


def test_interrupted_fit_is_kept_and_resumed(work, monkeypatch):
    real = mj.fit

    def stop(step, terms):
        raise KeyboardInterrupt

    monkeypatch.setattr(mj, "fit", lambda *a, **k: real(*a, callback=stop, **k))
    out = work / "cut"
    assert cli.main(["run", str(work / "run.toml"), "--out", str(out), "--quiet",
                     "--no-plots", "--steps", "200"]) == 1
    metrics = cli.read_metrics(out / "metrics.json")
    assert metrics["status"] == "interrupted" and metrics["steps"] == 100  # one chunk
    monkeypatch.undo()
    assert _run(work / "run.toml", out, "--steps", "200") == 2  # no silent restart
    assert _run(work / "run.toml", out, "--steps", "150", "--resume") == 0
    assert cli.read_metrics(out / "metrics.json")["steps"] == 150


@pytest.mark.parametrize(
    "target, text",
    [("file", "is a file, not a folder"), ("file/sub", "is a file, so the folder cannot be")],
)
def test_out_that_cannot_be_a_folder(work, capsys, target, text):
    (work / "file").write_text("x")
    assert _run(work / "run.toml", work / target) == 2
    assert text in _err(capsys) and (work / "file").read_text() == "x"


def test_resume_into_an_empty_folder_starts_the_run(work, capsys):
    (work / "empty").mkdir()
    assert cli.main(["run", str(work / "run.toml"), "--out", str(work / "empty"),
                     "--no-plots", "--resume", "--steps", "20"]) == 0
    assert "no checkpoint" in capsys.readouterr().out


def test_metrics_record_versions_and_hashes(base):
    m = cli.read_metrics(base / "out" / "metrics.json")
    assert set(m["versions"]) == {"mollijax", "jax", "jaxlib", "numpy", "python"}
    assert all(len(m["hashes"][k]) == 64 for k in ("config", "data", "problem_file", "run"))
    assert m["checkpoint"]["step"] == 40
    assert set(m["files"]) == {"result.mjx", "fields.npz", "uncertainty.json"}
    json.loads((base / "out" / "uncertainty.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"uncertainty.json holds {c}"))
    assert m["non_finite"] == {"initial_errors.lam.corr": pytest.approx(
        m["non_finite"]["initial_errors.lam.corr"])}  # a constant initial guess


def test_batch_folder_checkpoints_skips_and_shows(work, capsys):
    sim = mj.load_problem("forcing").simulate(noise=0.01, nt=101)
    stack = np.stack([sim.data["u"], sim.data["u"] * 1.01, sim.data["u"]])
    stack[2, 5] = np.nan
    np.save(work / "stack.npy", stack)
    cfg = work / "batch.toml"
    cfg.write_text(CONFIG.replace("steps = 40", "steps = 20")
                   + '\n[batch]\nstack = "stack.npy"\nfield = "u"\n')
    out = work / "batch"
    assert _run(cfg, out) == 1  # one item skipped: not all completed
    text, status = cli.inspect_folder(out)
    assert status == 0 and "batch of 3 items, 2 completed" in text
    assert "item 2: skipped" in text and "NaN or inf" in text
    assert (out / "checkpoint.mjx").is_file() and (out / "batch_result.mjx").is_file()
    assert _run(cfg, out) == 2 and "holds an earlier run (a batch of 3" in _err(capsys)
    assert _run(cfg, out, "--resume", "--steps", "40") == 1
    assert cli.read_metrics(out / "metrics.json")["steps"] == [40, 40, 0]
