"""Self-describing files without pickle: a JSON header followed by equinox-serialised leaves.

Layout: 8 bytes little-endian header length, the UTF-8 JSON header, then the leaves as written
by `equinox.tree_serialise_leaves`. Writes go to a temporary file in the same folder and are
moved into place with `os.replace`, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import struct
import tempfile

import equinox as eqx

from ._errors import MollijaxError

FORMAT = "mollijax-checkpoint-1"


def write(path: str | os.PathLike, header: dict, tree=None) -> pathlib.Path:
    """Atomically write `header` (JSON-able dict) and the array leaves of `tree` to `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = dict(header, format=FORMAT)
    blob = json.dumps(header).encode()
    leaves = io.BytesIO()
    if tree is not None:
        eqx.tree_serialise_leaves(leaves, tree)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            f.write(leaves.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_header(path: str | os.PathLike) -> dict:
    with open(path, "rb") as f:
        return _header(f, path)


def _header(f, path) -> dict:
    raw = f.read(8)
    if len(raw) != 8:
        raise MollijaxError(f"{path} is not a mollijax file (too short).")
    (n,) = struct.unpack("<Q", raw)
    try:
        header = json.loads(f.read(n).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MollijaxError(f"{path} is not a mollijax file (bad header).") from None
    if header.get("format") != FORMAT:
        raise MollijaxError(f"{path} has format {header.get('format')!r}, expected {FORMAT!r}.")
    return header


def read(path: str | os.PathLike, like=None):
    """Read `(header, tree)`; `like` is a pytree with the structure of the saved one."""
    with open(path, "rb") as f:
        header = _header(f, path)
        tree = None
        if like is not None:
            try:
                tree = eqx.tree_deserialise_leaves(f, like)
            except Exception as e:  # structure or shape mismatch
                raise MollijaxError(
                    f"{path} does not match the given structure (different unknowns, "
                    f"networks or optimiser?): {e}"
                ) from None
    return header, tree
