"""The shipped inverse problems, one plain Python file each, loaded by path
(`mollijax.load_problem("heat1d")`, or `[problem] name = "heat1d"` in a run configuration).

A problem file uses only the public API (`import mollijax as mj`) and defines

- `DESCRIPTION`: one line; `ORDER`: the highest derivative order of its residuals;
- `DEFAULTS`: `{parameter: default}` of `simulate`'s parameters;
- `UNKNOWNS`: `{name: {"axes": (...), "constraint": ..., "init": ...}}` (`axes=()`: a constant);
- `STATE`: the observed field names;
- `residuals`: `{name: r(s)}`, functions of the residual's scope `s`;
- `simulate(*, noise=0.0, seed=0, **params) -> mj.Dataset`;
- optionally `EVOLUTION` (`{field: F(s)}`, the right-hand side of `field_t = F`) and
  `conditions(dataset) -> list[mj.Condition]`.

This file only makes the folder a package, so that the shipped files can share
`_common.py`; a file of your own can live anywhere and needs neither.
"""
