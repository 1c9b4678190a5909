"""Shared helper: run a configuration through the CLI in-process and read its metrics."""

import json
import pathlib

from mollijax import cli

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def run_cli(config: str, out: pathlib.Path, *extra: str) -> dict:
    code = cli.main(["run", str(CONFIGS / config), "--out", str(out), "--quiet", *extra])
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0, metrics["message"]
    return metrics
