"""The `mollijax` command: run (with --steps, --resume, the shipped defaults), list, show,
examples, --version."""

import json
import pathlib

import numpy as np
import pytest

import mollijax as mj
from mollijax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMALL = str(CONFIGS / "forcing_small.toml")


def _run(out, *extra):
    return cli.main(["run", SMALL, "--out", str(out), "--quiet", "--uncertainty", "none",
                     *extra])


def test_interrupted_run_resumes_to_the_same_answer(tmp_path, monkeypatch):
    assert _run(tmp_path / "full", "--steps", "200") == 0
    real_fit = mj.fit

    def stop(step, terms):
        if step >= 100:
            raise KeyboardInterrupt

    monkeypatch.setattr(mj, "fit", lambda *a, **k: real_fit(*a, callback=stop, **k))
    assert _run(tmp_path / "cut", "--steps", "200") == 1  # interrupted: non-zero exit
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut["status"] == "interrupted" and cut["steps"] == 100
    monkeypatch.setattr(mj, "fit", real_fit)
    assert _run(tmp_path / "cut", "--steps", "200", "--resume") == 0
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["steps"] == 200
    a = np.load(tmp_path / "full" / "fields.npz")["lam"]
    b = np.load(tmp_path / "cut" / "fields.npz")["lam"]
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


def test_default_error_bars_do_not_depend_on_how_long_the_fit_took(tmp_path, monkeypatch):
    # the same configuration and data give the same outputs: whether the automatic error
    # bars are computed is weighed in evaluations, not seconds (a warm compilation cache or a
    # busy machine changes the seconds a thousandfold, not the steps)
    import dataclasses

    real_fit = mj.fit
    outputs = []
    for factor in (1e-6, 1e6):  # an instant fit, then one a million times as slow
        monkeypatch.setattr(mj, "fit", lambda *a, factor=factor, **k: dataclasses.replace(
            r := real_fit(*a, **k), wall_time=r.wall_time * factor))
        out = tmp_path / f"x{factor:g}"
        assert cli.main(["run", SMALL, "--out", str(out), "--quiet", "--no-plots",
                         "--steps", "200"]) == 0
        record = json.loads((out / "uncertainty.json").read_text())
        with np.load(out / "fields.npz") as fields:
            outputs.append((record["method"], "skipped" in record, sorted(fields.files)))
    assert outputs[0] == outputs[1], outputs
    # forcing_small: 101 values of lam, 101 products against 200 steps: error bars written
    assert "lam_std" in outputs[0][2], outputs


def test_error_bars_off_an_optimum_are_withheld_or_marked(tmp_path, capsys):
    # heat1d_small stopped after 60 Adam steps: 41 parameters, so the automatic rule can
    # afford Laplace (41 products < 60 steps), but the fit is far from its optimum (one
    # Newton step: 22 posterior stds, measured) and bars about it would be centred wrong
    config = str(CONFIGS / "heat1d_small.toml")
    found = {}
    for ask in ("auto", "laplace"):
        out = tmp_path / ask
        assert cli.main(["run", config, "--out", str(out), "--quiet", "--no-plots",
                         "--steps", "60", "--uncertainty", ask]) == 0
        record = json.loads((out / "uncertainty.json").read_text())
        metrics = json.loads((out / "metrics.json").read_text())
        with np.load(out / "fields.npz") as fields:
            found[ask] = (record, metrics["error_bars"], "D_std" in fields.files)
        capsys.readouterr()
        assert cli.main(["show", str(out)]) == 0
        found[ask] += (capsys.readouterr().out,)
    record, bars, written, shown = found["auto"]
    assert record["newton_step"] > 2 and record["trusted"] is False
    assert not written and bars["written"] == [] and "not at an optimum" in bars["note"]
    assert "error bars: none: auto: the fit is not at an optimum" in shown
    record, bars, written, shown = found["laplace"]  # asked for: written, and marked
    assert written and bars["written"] == ["D_std"] and record["trusted"] is False
    assert "error bars: D_std in fields.npz (laplace): NOT TRUSTED" in shown


def test_show_and_list(tmp_path, capsys, monkeypatch):
    assert _run(tmp_path, "--steps", "50") == 0
    capsys.readouterr()
    assert cli.main(["show", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "problem forcing: completed after 50 steps" in text and "lam: relative L2" in text
    assert 'error bars: none: none: [uncertainty] method = "none"' in text
    assert "fit:" not in text  # ran its steps, no tol to meet: the status says it all
    # stopped at the step cap before meeting tol: "completed", and the summary says how
    capped = tmp_path / "capped.toml"
    capped.write_text(pathlib.Path(SMALL).read_text().replace("chunk = 100",
                                                              "chunk = 10\ntol = 1e-300"))
    assert cli.main(["run", str(capped), "--out", str(tmp_path / "c"), "--quiet",
                     "--uncertainty", "none", "--no-plots", "--steps", "20"]) == 0
    capsys.readouterr()
    assert cli.main(["show", str(tmp_path / "c")]) == 0
    assert ("fit: stopped at the step cap (20 steps) before meeting tol 1e-300: not converged"
            in capsys.readouterr().out)
    assert cli.main(["show", str(tmp_path / "missing")]) == 2
    monkeypatch.chdir(tmp_path)  # `list` shows the shipped files wherever it runs
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("heat1d", "heat2d", "forcing", "poisson_coefficient", "diffusion_reaction",
                 "chromatin"):
        assert f"  {name} " in text
    assert "forcing_small" in text and "default" in text


def test_show_into_a_closed_pipe_is_not_a_traceback(tmp_path, monkeypatch):
    # `mollijax show DIR | head -1`: the reader closes the pipe before the summary is out
    import io
    import os
    import sys

    assert _run(tmp_path, "--steps", "20") == 0
    read, write = os.pipe()
    os.close(read)
    stdout = io.TextIOWrapper(io.FileIO(write, "w"))
    monkeypatch.setattr(sys, "stdout", stdout)
    assert cli.main(["show", str(tmp_path)]) == 1  # no BrokenPipeError raised
    stdout.close()  # nothing left to flush into the closed pipe


def test_summary_leaves_out_terms_at_weight_zero():
    # an inclusion chosen over the smooth field keeps the curvature term at weight 0: its
    # (huge, unweighted) value at the inclusion's edge is not part of the loss
    metrics = {"problem": "plate", "status": "completed", "steps": 3, "wall_time": 1.0,
               "final_losses": {"data:w": 0.9, "reg:D:curvature": 3.2e3, "total": 0.9},
               "term_weights": {"data:w": 1.0, "reg:D:curvature": 0.0}}
    text = cli.summary(metrics)
    assert "data:w 9.000e-01" in text and "total 9.000e-01" in text
    assert "reg:D:curvature" not in text and "1 term(s) at weight 0 not shown" in text


def test_shipped_problem_runs_without_config_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert cli.main(["run", "--problem", "forcing", "--steps", "50", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "runs" / "forcing" / "metrics.json").read_text())
    assert pathlib.Path(metrics["config"]["source"]).name == "forcing.toml"
    assert metrics["steps"] == 50 and metrics["problem"] == "forcing"
    assert cli.main(["run", "--problem", "nope", "--quiet"]) == 2


def test_no_config_runs_the_shipped_default(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "run", lambda config, out, **k: calls.append(config) or {
        "status": "completed"})
    assert cli.main(["run", "--quiet", "--out", str(tmp_path)]) == 0
    (config,) = calls
    assert pathlib.Path(config.source).name == "default.toml" and config.problem == "heat1d"


def test_bad_config_is_a_clear_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[problem]\nname = "heat1d"\n[optimiser]\nlr = 0.1\n')
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: [optimiser] unknown key 'lr'" in err and "Traceback" not in err
    bad.write_text('[problem]\nname = "heat1d"\n[derivatives]\neps = "wide"\n')
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "[derivatives] key 'eps' must be" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mollijax {mj.__version__}"


def test_examples_copies_the_shipped_folders(tmp_path, capsys):
    dest = tmp_path / "ex"
    assert cli.main(["examples", str(dest), "--quiet"]) == 0
    for folder in ("problems", "configs", "theory"):
        shipped = {p.name for p in (ROOT / folder).iterdir() if p.name != "__pycache__"}
        assert {p.name for p in (dest / folder).iterdir()} == shipped, folder
    assert (dest / "configs" / "default.toml").read_text() == (CONFIGS / "default.toml").read_text()
    with pytest.raises(SystemExit, match="already exists"):
        cli.main(["examples", str(dest), "--quiet"])
    (dest / "configs" / "default.toml").write_text("edited")
    assert cli.main(["examples", str(dest), "--force", "--quiet"]) == 0
    assert (dest / "configs" / "default.toml").read_text() == (CONFIGS / "default.toml").read_text()
    # a copied configuration runs the copied problem file it names
    from mollijax.config import load_config

    (dest / "configs" / "mine.toml").write_text('[problem]\nfile = "../problems/forcing.py"\n')
    cfg = load_config(dest / "configs" / "mine.toml")
    assert pathlib.Path(cfg.problem_file) == (dest / "problems" / "forcing.py").resolve()

