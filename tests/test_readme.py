"""The README's Python examples run as written, at a small size (so they stay true).

Each block runs with the sizes in `SMALL` swapped in (grid nodes, steps); every swap must
apply somewhere, so a README edit cannot silently leave a block at full size. The full-size
blocks, exactly as written, run in `benchmarks/readme_examples.py`.
"""

import pathlib
import re

import pytest

README = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)

# full size -> test size
SMALL = {
    "nx=101, nt=101": "nx=41, nt=41",
    "(128, 128)": "(48, 48)",
    "steps=1500": "steps=150",
    "steps=600": "steps=40",
    "np.full(101, ": "np.full(41, ",
    "steps=400": "steps=60",
}


def small(code: str) -> str:
    for full, short in SMALL.items():
        code = code.replace(full, short)
    return code


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_every_size_swap_applies():
    unused = [full for full in SMALL if not any(full in b for b in BLOCKS)]
    assert not unused, f"README no longer contains {unused}: update SMALL"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    namespace: dict = {}
    exec(compile(small(BLOCKS[index]), f"README.md[python block {index}]", "exec"), namespace)
