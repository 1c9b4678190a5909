"""`import mollijax` stays light: the libraries only some runs need (SciPy for error bars,
lineax and optimistix for solved states, diffrax for its integrator, matplotlib for figures,
tifffile for image stacks) are imported on first use, not at start-up."""

import subprocess
import sys

LAZY = ("scipy", "lineax", "optimistix", "diffrax", "matplotlib", "tifffile")


def test_import_leaves_the_heavy_optional_libraries_unloaded():
    code = ("import sys, mollijax, mollijax.cli; "
            f"print(','.join(m for m in {LAZY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"
