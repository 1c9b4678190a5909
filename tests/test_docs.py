"""The documentation site builds with `mkdocs build --strict`, and the API reference is complete."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
API = ROOT / "docs" / "api"


def _public_names() -> set[str]:
    """The names `mollijax/__init__.py` re-exports (`from ._x import Name as Name`)."""
    tree = ast.parse((ROOT / "mollijax" / "__init__.py").read_text())
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if not (alias.asname or alias.name).startswith("_")
    }


def test_every_public_name_has_a_reference_entry():
    documented = set()
    for page in API.glob("*.md"):
        documented |= set(re.findall(r"^::: mollijax\.(\w+)\s*$", page.read_text(), re.M))
    missing = sorted(_public_names() - documented)
    assert not missing, f"add `::: mollijax.Name` entries to a page in docs/api/ for {missing}"


def test_index_quick_start_is_the_readme_example():
    index = (ROOT / "docs" / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", index, re.S)
    assert blocks, "docs/index.md has no python example"
    for block in blocks:
        assert block in readme, "docs/index.md's example differs from the README's"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    derivatives = (site / "api" / "derivatives" / "index.html").read_text()
    problems = (site / "api" / "problems" / "index.html").read_text()
    assert 'id="mollijax.Mollifier"' in derivatives
    assert "Mollified derivatives" in derivatives  # the docstring text, not only the heading
    assert 'id="mollijax.fit"' in problems
