"""Python files loaded by path (a user's problem file, the shipped problems and theory
demonstrations) and the folder of shipped examples.

The shipped `problems/`, `theory/` and `configs/` folders live beside the package in a source
checkout and inside it (`mollijax/_shipped/`) in an installed wheel; `examples_root()`
finds whichever exists. Nothing in the package names a ready problem: it only loads files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
import types

from ._errors import MollijaxError

FOLDERS = ("problems", "theory", "configs")


class ProblemFileError(MollijaxError):
    """A problem or demonstration file that cannot be found, read or imported."""


def examples_root() -> pathlib.Path:
    """The folder holding `problems/`, `theory/` and `configs/`: the source checkout's root,
    or the copy shipped inside an installed package."""
    here = pathlib.Path(__file__).resolve().parent
    for root in (here / "_shipped", here.parent):
        if all((root / f).is_dir() for f in FOLDERS):
            return root
    raise ProblemFileError(
        "The shipped examples (problems/, theory/, configs/) were not found beside or inside "
        "the installed package."
    )


def load_file(path: str | os.PathLike) -> types.ModuleType:
    """Import the Python file at `path` as a module (once per resolved path and content).

    A file inside a folder with an `__init__.py` is imported as part of that package, so
    that it can import its siblings with relative imports. Otherwise, while the file is
    imported, its own folder comes first on `sys.path` (as for `python file.py`), so that
    `import my_helpers` finds `my_helpers.py` beside it.
    """
    path = pathlib.Path(path)
    if path.suffix != ".py":
        raise ProblemFileError(f"{str(path)!r} is not a Python file (expected a .py file).")
    if not path.is_file():
        raise ProblemFileError(f"Python file {str(path)!r} does not exist.")
    path = path.resolve()
    try:
        source = path.read_bytes()
    except OSError as e:
        raise ProblemFileError(f"Cannot read {str(path)!r}: {e}") from None
    digest = hashlib.sha256(str(path).encode() + source).hexdigest()[:12]
    package = None
    if (path.parent / "__init__.py").is_file():
        package = _load_package(path.parent)
    if package is not None:
        name = f"{package.__name__}.{path.stem}" if path.stem != "__init__" else package.__name__
    else:
        name = f"_mollijax_file_{path.stem}_{digest}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProblemFileError(f"Cannot import {str(path)!r}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # as `python file.py` does: the file's own folder is searched first while it is
    # imported, so that it can import a helper module beside it (`import my_helpers`)
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except MollijaxError:
        del sys.modules[name]
        raise
    except Exception as e:  # a user's file: report where, not a bare traceback
        del sys.modules[name]
        raise ProblemFileError(
            f"Importing {str(path)!r} failed: {type(e).__name__}: {e}"
        ) from e
    finally:
        if folder in sys.path:  # (unless the file took it out itself)
            sys.path.remove(folder)
    return module


def _load_package(folder: pathlib.Path) -> types.ModuleType:
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    name = f"_mollijax_pkg_{folder.name}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    init = folder / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise ProblemFileError(f"Cannot import the package {str(folder)!r}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def shipped(folder: str, name: str) -> pathlib.Path:
    """The path of the shipped file `name` in `folder` (`"problems"`, `"theory"`,
    `"configs"`), with a clear error listing what is there otherwise."""
    root = examples_root() / folder
    path = root / name
    if not path.is_file():
        have = sorted(p.name for p in root.iterdir() if not p.name.startswith("_"))
        raise ProblemFileError(f"No shipped file {name!r} in {folder}/; there are {have}.")
    return path
