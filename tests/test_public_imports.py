"""Nothing outside the package imports a private module of it.

Problem files, theory demonstrations, benchmarks, notebooks, tests and the code blocks of the
docs use the public API: `mollijax`, `mollijax.cli`, `mollijax.config`, `mollijax.io`. A
private module is any dotted part starting with `_` (`mollijax._fit`, `mollijax.x._y`,
`from mollijax import _fit`). A file that needs one shows a missing public name.
"""

import ast
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("problems", "theory", "benchmarks", "notebooks", "tests", "docs", "tools")
SKIP = {".venv", "site", "__pycache__", ".git"}


def _sources() -> list[pathlib.Path]:
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if SKIP & set(path.relative_to(ROOT).parts):
                continue
            if path.suffix in (".py", ".ipynb", ".md"):
                found.append(path)
    found += sorted(ROOT.glob("*.md"))
    return found


def _code(path: pathlib.Path) -> list[str]:
    text = path.read_text()
    if path.suffix == ".py":
        return [text]
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return re.findall(r"```(?:python|py)\n(.*?)```", text, flags=re.S)


def _private(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "mollijax" and any(p.startswith("_") for p in parts[1:])


def private_imports(source: str) -> list[str]:
    """`mollijax` imports in `source` that reach a private module."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return []
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if _private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _private(node.module):
                bad.append(node.module)
            elif node.module.split(".")[0] == "mollijax":
                bad += [f"{node.module}.{a.name}" for a in node.names if _private(
                    f"{node.module}.{a.name}") and a.name.startswith("_")]
    return bad


def test_the_scan_finds_private_imports():
    assert private_imports("import mollijax._fit") == ["mollijax._fit"]
    assert private_imports("from mollijax._fit import fit") == ["mollijax._fit"]
    assert private_imports("from mollijax import _fit, fit") == ["mollijax._fit"]
    assert private_imports("from mollijax.theory import _x") == ["mollijax.theory._x"]
    assert private_imports("import mollijax as mj\nfrom mollijax.config import load_config") == []
    assert private_imports("from ._common import observe") == []  # a sibling, not the package


def _params():
    for path in _sources():
        yield pytest.param(path, id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize("path", list(_params()))
def test_no_private_imports(path):
    bad = [m for block in _code(path) for m in private_imports(block)]
    assert not bad, f"{path.relative_to(ROOT)} imports private module(s) {sorted(set(bad))}"
