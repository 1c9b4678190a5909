"""Run the README's Python examples exactly as written (full size) and time each.

    python benchmarks/readme_examples.py

The test suite runs the same blocks at a small size (tests/test_readme.py); this script is
where the README's full-size claims (e.g. "about 1 % at 5 % noise") are checked. It prints
each block's wall time and whatever the block prints.
"""

from __future__ import annotations

import pathlib
import re
import time

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def main() -> None:
    for i, code in enumerate(BLOCKS):
        start = time.perf_counter()
        exec(compile(code, f"README.md[python block {i}]", "exec"), {})
        print(f"README block {i}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
