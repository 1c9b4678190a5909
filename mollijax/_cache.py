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

import os
import pathlib
import sys

ENV = "MOLLIJAX_COMPILATION_CACHE"

# Compiler options of programs whose time is mostly their compilation (run once per fit, or
# a training chunk on a small grid): XLA's CPU backend without LLVM's optimisations. The
# evolved 1-D heat loss's value and gradient compiles (and runs once) in 0.8-0.9 s instead of
# 2.0-2.2 s, a call then takes 5.2-6.0 ms instead of 3.0-3.1 ms
# (`benchmarks/compile_levels.py`): only elementwise loops run slower (products and solves
# go to the same library routines either way). `benchmarks/evolve_cost.py` measures fits.
QUICK_COMPILE = {"xla_backend_optimization_level": 0}
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
