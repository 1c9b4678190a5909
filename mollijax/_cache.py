"""The persistent compilation cache of the command line.

A run's compiled programs are stored on disk, so that a second run of the same configuration
loads them instead of compiling again. On by default for `mollijax run`; the environment
variable `MOLLIJAX_COMPILATION_CACHE` overrides the folder, and `0`, `off`, `false`, `no` or an
empty value turn it off. The default folder is `<user cache dir>/mollijax/jax`:
`$XDG_CACHE_HOME` (else `~/.cache`) on Linux, `~/Library/Caches` on macOS and
`%LOCALAPPDATA%` on Windows. A user who set `jax_compilation_cache_dir` already (e.g. with
`JAX_COMPILATION_CACHE_DIR`) keeps that folder.
"""

from __future__ import annotations

import functools
import os
import pathlib
import sys

ENV = "MOLLIJAX_COMPILATION_CACHE"

# Compiler options of programs whose time is mostly their compilation (run once per fit, or
# a training chunk on a small grid): XLA's CPU backend without LLVM's optimisations, and its
# fusions emitted by the older direct LLVM emitters rather than the MLIR fusion emitters
# (whose compile dominates small programs). The evolved 1-D heat loss's value and gradient
# compiles (and runs once) in about 0.4 s instead of 2.1-2.3 s at XLA's defaults (1.0 s at
# level 0 alone); a call then takes about 2x as long (elementwise loops run slower; products
# and solves go to the same library routines either way): `benchmarks/compile_levels.py`.
# `benchmarks/evolve_cost.py` measures whole fits.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_OFF = ("0", "off", "false", "no", "")


def user_cache_dir() -> pathlib.Path:
    """The user's cache folder on this platform."""
    if sys.platform == "darwin":
        return pathlib.Path.home() / "Library" / "Caches"
    if os.name == "nt":
        default = pathlib.Path.home() / "AppData" / "Local"
        return pathlib.Path(os.environ.get("LOCALAPPDATA", default))
    xdg = os.environ.get("XDG_CACHE_HOME")
    return pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"


def cache_dir() -> pathlib.Path | None:
    """The folder the command line caches compiled programs in, or None when turned off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else pathlib.Path(value).expanduser()
    return user_cache_dir() / "mollijax" / "jax"


def enable_compilation_cache() -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in `cache_dir()` (every compiled program,
    however quick to compile: a short run's compiles are its largest fixed cost). Returns the
    folder, or None when turned off or when the folder cannot be created (the run then
    compiles as usual)."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return pathlib.Path(jax.config.jax_compilation_cache_dir)
    folder = cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


# Only the optimisation level: for training chunks of plain residual fits (mollified or
# finite-difference derivatives of the data), whose steps the older emitters slow more than
# they speed the compile (a 1500-step mollified fit of 101^2 nodes: 1.52 s at level 0 alone,
# 1.6 s with the older emitters too, 1.8 s at full optimisation; 141^2 nodes, 2000 steps:
# 2.6 / 3.1-3.2 / 2.0 s; ad hoc, one core each)
LEVEL_0 = {"xla_backend_optimization_level": 0}


@functools.cache
def quick_compile_options(level_only: bool = False) -> dict:
    """`QUICK_COMPILE` (or `LEVEL_0` with `level_only`), less what this XLA does not know: an
    option name XLA lacks fails the compile, so the options are tried once on a
    one-operation program (the emitter switch may go in a later XLA; the optimisation level
    alone is the fallback)."""
    import jax

    first = LEVEL_0 if level_only else QUICK_COMPILE
    for options in (first, LEVEL_0, {}):
        try:
            jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
        except Exception:  # noqa: BLE001 (XLA's error type varies between versions)
            continue
        return dict(options)
    return {}


class quick_jit:
    """`equinox.filter_jit(fun)` (or `jax.jit(fun)` with `filtered=False`) compiled with
    `quick_compile_options(level_only)`, which are settled at the first call (so importing
    mollijax compiles nothing). For functions that run once per fit, where compiling is most
    of the cost."""

    def __init__(self, fun, *, filtered: bool = True, level_only: bool = False):
        self.fun, self.filtered, self.level_only, self._jitted = fun, filtered, level_only, None
        functools.update_wrapper(self, fun)

    def __call__(self, *args, **kwargs):
        if self._jitted is None:
            import equinox as eqx
            import jax

            jit = eqx.filter_jit if self.filtered else jax.jit
            self._jitted = jit(self.fun,
                               compiler_options=quick_compile_options(self.level_only))
        return self._jitted(*args, **kwargs)
