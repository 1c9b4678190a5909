"""Every notebook runs top to bottom (small sizes: MOLLIJAX_SMALL=1), so none can rot.

At the small sizes a notebook's time is mostly XLA compiling (about 80 % of each cell that
fits), so the kernel compiles as the suite's workers do (tests/conftest.py): LLVM's
optimisations off (notebook 02 took 33 s of CPU instead of 45 s) and the older fusion
emitters, its compiled code running slower where the small sizes barely use it. The flags
change how fast the compiled code runs, not what it computes.
"""

import os
import pathlib

import pytest
from xla_flags import QUICK

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MOLLIJAX_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    flags = os.environ.get("XLA_FLAGS", "")
    monkeypatch.setenv("XLA_FLAGS", f"{flags} {QUICK}".strip())
    monkeypatch.chdir(tmp_path)  # anything a notebook writes lands in a scratch folder
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
