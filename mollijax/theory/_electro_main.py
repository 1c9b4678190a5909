"""`python -m mollijax.theory._electro_main CONFIG.toml OUT_DIR`: the electrodynamics demo."""

from __future__ import annotations

import json
import pathlib
import sys

from .electro import run_electro


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m mollijax.theory._electro_main CONFIG.toml OUT_DIR",
              file=sys.stderr)
        return 2
    import tomllib

    config = tomllib.loads(pathlib.Path(argv[0]).read_text())
    metrics = run_electro(config, pathlib.Path(argv[1]))
    short = {k: v for k, v in metrics.items() if k != "recovery_per_seed"}
    print(json.dumps(short, indent=2))
    for row in metrics["recovery_per_seed"]:
        print(f"seed {row['seed']}: position error {row['position_error']:.4f}, "
              f"charge error {row['charge_error']:.4f}, protons found {row['found']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
