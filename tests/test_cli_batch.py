"""`mollijax run` with a [batch] table: one fit per item of a stack, optionally sharded."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import mollijax as mj
from mollijax import cli
from mollijax.config import load_problem

heat1d = load_problem(pathlib.Path(__file__).resolve().parents[1] / "problems" / "heat1d.py")

SMALL = """
[problem]
name = "heat1d"
nx = 41
nt = 41

[unknowns.D]
representation = "grid"
init = 0.03

[regularisers.D]
smooth = 1e-4

[optimiser]
learning_rate = 1e-3
steps = 300
chunk = 150

[batch]
stack = "{stack}"
field = "u"
devices = {devices}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    items = [heat1d.simulate(nx=41, nt=41, noise=n, seed=s).data["u"]
             for n, s in [(0.0, 0), (0.01, 1), (0.01, 2)]]
    path = folder / "u_stack.npy"
    np.save(path, np.stack(items))
    return path


def _config(tmp_path, stack, devices):
    cfg = tmp_path / "batch.toml"
    cfg.write_text(SMALL.format(stack=stack.as_posix(), devices=devices))
    return cfg


def test_batch_run_fits_every_item(tmp_path, stack):
    out = tmp_path / "out"
    assert cli.main(["run", str(_config(tmp_path, stack, 0)), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batch"] == 3 and metrics["status"] == ["completed"] * 3
    result_class = getattr(mj, "BatchResult", None) or mj.FitResult
    result = result_class.load(out / "batch_result.mjx")
    d = result.values["D"]
    truth = heat1d.simulate(nx=41, nt=41).truth["D"]
    inner = slice(6, -6)
    errs = [np.linalg.norm(d[b][inner] - truth[inner]) / np.linalg.norm(truth[inner])
            for b in range(3)]
    start = np.linalg.norm(0.03 - truth[inner]) / np.linalg.norm(truth[inner])
    assert max(errs) < 0.5 * start, errs


def test_batch_run_sharded_over_two_host_devices(tmp_path, stack):
    out = tmp_path / "out2"
    cache = tmp_path / "cache"
    env = dict(os.environ, JAX_PLATFORMS="cpu", MOLLIJAX_COMPILATION_CACHE=str(cache))
    root = pathlib.Path(__file__).parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "mollijax", "run", str(_config(tmp_path, stack, 2)), "--out",
         str(out), "--quiet"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["status"] == ["completed"] * 3
    # the command line kept its compiled programs in the folder MOLLIJAX_COMPILATION_CACHE names
    assert any(p.name.startswith("jit_") for p in cache.iterdir()), list(cache.iterdir())
