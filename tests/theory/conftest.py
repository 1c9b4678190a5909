"""The theory demonstrations, imported by path from the top-level `theory/` folder.

`theory/` is not an installed package: `mollijax theory ...` loads its files by path, and so do
these tests. The folder is imported once as a package under a private name, so that its files'
relative imports work, and its modules are imported with jaxtyping's runtime checks on, as the
`--jaxtyping-packages` option of pytest turns them on for `mollijax` itself.
"""

import importlib
import importlib.util
import pathlib
import sys
import types

import jaxtyping
import pytest

THEORY = pathlib.Path(__file__).resolve().parents[2] / "theory"
PACKAGE = "_mollijax_theory_under_test"


def load_theory(name: str) -> types.ModuleType:
    """`theory/<name>.py` as a module of the `theory/` package (imported once)."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, THEORY / "__init__.py", submodule_search_locations=[str(THEORY)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    with jaxtyping.install_import_hook(PACKAGE, "beartype.beartype"):
        return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def theory():
    """The loader: `theory("_electro_potentials")` for a helper module."""
    return load_theory


@pytest.fixture(scope="module")
def el():
    """`theory/electro.py`."""
    return load_theory("electro")


@pytest.fixture(scope="module")
def tr():
    """`theory/transport.py`."""
    return load_theory("transport")
