"""Shared helpers: the shipped problem files loaded by path, and runs through the CLI."""

import json
import pathlib

import numpy as np

from mollijax import cli
from mollijax.config import load_problem

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
PROBLEMS = ROOT / "problems"
SHIPPED = sorted(p.stem for p in PROBLEMS.glob("*.py") if not p.name.startswith("_"))


def load(name: str):
    """The shipped problem file `problems/<name>.py`, loaded by path like a user's own."""
    return load_problem(PROBLEMS / f"{name}.py")


def run_cli(config: str, out: pathlib.Path, *extra: str, plots: bool = False,
            uncertainty: str = "none") -> dict:
    """`mollijax run` of a shipped config; figures and error bars only when a test looks at
    them (each costs seconds per run)."""
    flags = ([] if plots else ["--no-plots"]) + ["--uncertainty", uncertainty]
    code = cli.main(["run", str(CONFIGS / config), "--out", str(out), "--quiet", *flags,
                     *extra])
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0, metrics["message"]
    if uncertainty == "none":  # --uncertainty none: no error bars, said in uncertainty.json
        assert json.loads((out / "uncertainty.json").read_text())["method"] == "none"
        with np.load(out / "fields.npz") as fields:
            assert not [k for k in fields.files if k.endswith("_std")]
    if not plots:  # --no-plots: everything but the figures
        assert metrics["plots"] == [] and not list(out.glob("*.png"))
        assert (out / "result.mjx").is_file() and (out / "fields.npz").is_file()
    return metrics
