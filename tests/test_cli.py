"""The `mollijax` command: run (with --steps, --resume, the built-in default), list, show."""

import json
import pathlib

import numpy as np

from mollijax import cli

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
SMALL = str(CONFIGS / "forcing_small.toml")


def _run(out, *extra):
    return cli.main(["run", SMALL, "--out", str(out), "--quiet", *extra])


def test_interrupted_run_resumes_to_the_same_answer(tmp_path, monkeypatch):
    import mollijax._fit as fit_module

    assert _run(tmp_path / "full", "--steps", "200") == 0
    real_fit = fit_module.fit

    def stop(step, terms):
        if step >= 100:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: real_fit(*a, callback=stop, **k))
    assert _run(tmp_path / "cut", "--steps", "200") == 1  # interrupted: non-zero exit
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut["status"] == "interrupted" and cut["steps"] == 100
    monkeypatch.setattr(fit_module, "fit", real_fit)
    assert _run(tmp_path / "cut", "--steps", "200", "--resume") == 0
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["steps"] == 200
    a = np.load(tmp_path / "full" / "fields.npz")["lam"]
    b = np.load(tmp_path / "cut" / "fields.npz")["lam"]
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


def test_show_and_list(tmp_path, capsys, monkeypatch):
    assert _run(tmp_path, "--steps", "50") == 0
    capsys.readouterr()
    assert cli.main(["show", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "problem forcing: completed after 50 steps" in text and "lam: relative L2" in text
    assert cli.main(["show", str(tmp_path / "missing")]) == 2
    monkeypatch.chdir(CONFIGS.parent)
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("heat1d", "forcing", "poisson_coefficient", "diffusion_reaction"):
        assert name in text
    assert "configs/forcing_small.toml" in text


def test_builtin_default_runs_without_config_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert cli.main(["run", "--problem", "forcing", "--steps", "50", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "runs" / "forcing" / "metrics.json").read_text())
    assert metrics["config"]["source"] == "<default forcing>" and metrics["steps"] == 50


def test_bad_config_is_a_clear_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[problem]\nname = "heat1d"\n[optimiser]\nlr = 0.1\n')
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: [optimiser] unknown key 'lr'" in err and "Traceback" not in err
