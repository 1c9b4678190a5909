"""Self-describing, verified files without pickle: a JSON header followed by raw array leaves.

Layout of a file (`FORMAT`):

    8 bytes   magic b"MJXFILE2"
    8 bytes   header length `n` (little-endian unsigned)
    32 bytes  SHA-256 of the header bytes
    n bytes   UTF-8 JSON header; its "leaves" entry lists every array leaf as
              {"dtype", "shape", "nbytes", "sha256"}
    ...       the leaves' raw bytes, in that order, nothing after them

The leaves are those of a pytree in `jax.tree_util` order that `eqx.tree_serialise_leaves`
would store (arrays and Python scalars); everything else (functions, static fields) comes
back from the `like` template given to `read`. Every length is bounded by the file size
before it is used, the header and every leaf are checked against their SHA-256, and a file
that fails any check raises `CorruptFileError` naming what is wrong. Writes go to a temporary
file in the same folder and are moved into place with `os.replace`, so a crash never leaves a
half-written file behind.

`HistoryLog` is the append-only companion of a checkpoint: the loss history, one record per
chunk of steps, so that a checkpoint writes only what is new. The checkpoint's header holds
the log's committed length and SHA-256, which `HistoryLog.load` verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import MollijaxError

FORMAT = "mollijax-file-2"
MAGIC = b"MJXFILE2"
_PREFIX = len(MAGIC) + 8 + 32
RECORD_MAGIC = b"MJXHIST2"
_RECORD_PREFIX = len(RECORD_MAGIC) + 8 + 32


class CorruptFileError(MollijaxError):
    """A mollijax file (result, checkpoint or history) is truncated, corrupted or not one."""


class CheckpointMismatchError(MollijaxError):
    """A checkpoint does not belong to the run that tries to resume from it."""


# ----------------------------------------------------------------------------- leaves


def _stored(x) -> bool:
    """Leaves that are written (as `eqx.tree_serialise_leaves` does); others come from `like`."""
    return isinstance(x, jax.Array | np.ndarray | np.generic | bool | int | float | complex)


def _leaf_bytes(x) -> tuple[dict, bytes]:
    arr = np.asarray(x)
    if arr.dtype.hasobject:
        raise MollijaxError(f"Cannot store an array of dtype {arr.dtype} (objects).")
    raw = arr.tobytes()
    entry = {
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "nbytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    return entry, raw


def _dtype(name: str, where: str):
    try:
        return np.dtype(jnp.dtype(name))
    except TypeError:
        raise CorruptFileError(f"{where}: unknown dtype {name!r}.") from None


def _from_bytes(raw: bytes, entry: dict, where: str) -> np.ndarray:
    dtype = _dtype(entry["dtype"], where)
    shape = tuple(int(s) for s in entry["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    if any(s < 0 for s in shape) or count * dtype.itemsize != len(raw):
        raise CorruptFileError(
            f"{where}: {len(raw)} bytes do not hold an array of shape {shape} and dtype {dtype}."
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


# ----------------------------------------------------------------------------- files


def _atomic_write(path: pathlib.Path, chunks) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(path: str | os.PathLike, header: dict, tree=None) -> pathlib.Path:
    """Atomically write `header` (a JSON-able dict) and the array leaves of `tree` to `path`."""
    path = pathlib.Path(path)
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if _stored(x)] if tree is not None else []
    entries, blobs = [], []
    for x in leaves:
        entry, raw = _leaf_bytes(x)
        entries.append(entry)
        blobs.append(raw)
    blob = json.dumps(dict(header, format=FORMAT, leaves=entries)).encode()
    head = MAGIC + struct.pack("<Q", len(blob)) + hashlib.sha256(blob).digest()
    _atomic_write(path, [head, blob, *blobs])
    return path


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _valid_entry(e) -> bool:
    """A leaf-table entry: dtype name, shape of counts, byte length and a SHA-256 string."""
    return (
        isinstance(e, dict)
        and _count(e.get("nbytes"))
        and isinstance(e.get("dtype"), str)
        and isinstance(e.get("shape"), list)
        and all(_count(n) for n in e["shape"])
        and isinstance(e.get("sha256"), str)
    )


def _open_for_reading(path) -> int:
    """The size of the file `path`; a named error when it is missing or not a file."""
    p = pathlib.Path(path)
    if not p.exists():
        raise MollijaxError(f"{path} does not exist.")
    if not p.is_file():
        raise CorruptFileError(f"{path} is not a mollijax file (not a regular file).")
    return p.stat().st_size


def _read_header(f, path, size: int) -> tuple[dict, int]:
    prefix = f.read(_PREFIX)
    if len(prefix) < len(MAGIC) or prefix[: len(MAGIC)] != MAGIC:
        raise CorruptFileError(
            f"{path} is not a mollijax file of format {FORMAT!r} (no {MAGIC!r} at its start)."
        )
    if len(prefix) != _PREFIX:
        raise CorruptFileError(f"{path} is truncated: {size} bytes end inside the file prefix.")
    (n,) = struct.unpack("<Q", prefix[8:16])
    if n > size - _PREFIX:
        raise CorruptFileError(
            f"{path} is truncated or corrupted: its header claims {n} bytes, but only "
            f"{size - _PREFIX} follow the prefix."
        )
    blob = f.read(n)
    if hashlib.sha256(blob).digest() != prefix[16:]:
        raise CorruptFileError(f"{path} is corrupted: the header's SHA-256 does not match.")
    try:
        header = json.loads(blob.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptFileError(f"{path} is corrupted: the header is not JSON.") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is not a mollijax file of format {FORMAT!r}.")
    entries = header.get("leaves")
    if not isinstance(entries, list) or not all(_valid_entry(e) for e in entries):
        raise CorruptFileError(f"{path} is corrupted: the header's leaf table is malformed.")
    expected = _PREFIX + n + sum(e["nbytes"] for e in entries)
    if expected != size:
        what = "truncated" if size < expected else "longer than its header says"
        raise CorruptFileError(
            f"{path} is {what}: the header lists {len(entries)} arrays ending at byte "
            f"{expected}, the file has {size} bytes."
        )
    return header, n


def read_header(path: str | os.PathLike) -> dict:
    """The verified JSON header of `path` (arrays unread; their total length is checked)."""
    size = _open_for_reading(path)
    with open(path, "rb") as f:
        return _read_header(f, path, size)[0]


def read(path: str | os.PathLike, like=None):
    """Read `(header, tree)`, every array verified.

    With `like` (a pytree of the saved structure), `tree` has that structure with the stored
    leaves in place (same shapes and dtypes, else `CheckpointMismatchError`); without it,
    `tree` is the list of stored arrays.
    """
    size = _open_for_reading(path)
    with open(path, "rb") as f:
        header, _ = _read_header(f, path, size)
        arrays = []
        for i, entry in enumerate(header["leaves"]):
            raw = f.read(entry["nbytes"])
            if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
                raise CorruptFileError(
                    f"{path} is corrupted: array {i} of {len(header['leaves'])} (shape "
                    f"{entry.get('shape')}) fails its SHA-256 check."
                )
            arrays.append(_from_bytes(raw, entry, f"{path}, array {i}"))
    if like is None:
        return header, arrays
    return header, unflatten(like, arrays, path)


def unflatten(like, arrays, where="file", dtypes: bool = True):
    """`like` with its stored leaves replaced by `arrays` (in `jax.tree_util` order).

    Shapes must match; dtypes too unless `dtypes=False` (then the stored dtype is kept).
    """
    leaves, treedef = jax.tree_util.tree_flatten(like)
    slots = [i for i, x in enumerate(leaves) if _stored(x)]
    if len(slots) != len(arrays):
        raise CheckpointMismatchError(
            f"{where} holds {len(arrays)} arrays, the expected structure has {len(slots)} "
            "(different unknowns, networks or optimiser?)."
        )
    out = list(leaves)
    for i, arr in zip(slots, arrays, strict=True):
        x = leaves[i]
        ref = np.asarray(x)
        if ref.shape != arr.shape or (dtypes and ref.dtype != arr.dtype):
            raise CheckpointMismatchError(
                f"{where}: array {slots.index(i)} has shape {arr.shape} and dtype {arr.dtype}, "
                f"the expected structure has shape {ref.shape} and dtype {ref.dtype}."
            )
        if isinstance(x, jax.Array):
            out[i] = jnp.asarray(arr)
        elif isinstance(x, np.ndarray | np.generic):
            out[i] = arr if isinstance(x, np.ndarray) else arr[()]
        else:
            out[i] = type(x)(arr.item())
    return jax.tree_util.tree_unflatten(treedef, out)


# ----------------------------------------------------------------------------- history log


class HistoryLog:
    """Append-only log of loss-history chunks, the companion file of a checkpoint.

    Each record is `RECORD_MAGIC`, the payload length, the payload's SHA-256 and the payload:
    a length-prefixed JSON description `{"start", "terms": [[name, dtype, shape], ...]}`
    followed by the raw arrays. `append` writes new records only (and fsyncs), so a
    checkpoint costs what the new steps cost, not the whole history. `committed()` is
    `(length, sha256)` of the file so far, which the checkpoint's header records; `load`
    reads exactly that prefix, verifies it and drops any uncommitted tail.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._hash = hashlib.sha256()
        self._length = 0
        self._fresh = True

    def committed(self) -> dict:
        return {"file": self.path.name, "bytes": self._length, "sha256": self._hash.hexdigest()}

    def append(self, records: list[tuple[int, dict[str, np.ndarray]]]) -> dict:
        """Write `[(start step, {term: array}), ...]` at the end; returns `committed()`."""
        data = b"".join(_record(start, terms) for start, terms in records)
        if self._fresh:  # a new run starts a new log (atomically replacing an old one)
            _atomic_write(self.path, [data])
            self._fresh = False
        elif data:
            with open(self.path, "r+b") as f:
                f.seek(self._length)
                f.write(data)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
        self._hash.update(data)
        self._length += len(data)
        return self.committed()

    def load(self, committed: dict) -> list[tuple[int, dict[str, np.ndarray]]]:
        """The records of the first `committed["bytes"]` bytes, verified against its SHA-256."""
        n = committed.get("bytes") if isinstance(committed, dict) else None
        if not _count(n):
            raise CorruptFileError(f"The checkpoint's history entry is malformed: {committed!r}.")
        if n and not self.path.exists():
            raise CorruptFileError(
                f"History {self.path} is missing; the checkpoint needs {n} bytes."
            )
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < n:
            raise CorruptFileError(
                f"History {self.path} is truncated: the checkpoint committed {n} bytes, the "
                f"file has {size}."
            )
        data = b""
        if n:
            with open(self.path, "rb") as f:
                data = f.read(n)
        digest = hashlib.sha256(data)
        if digest.hexdigest() != committed.get("sha256"):
            raise CorruptFileError(
                f"History {self.path} is corrupted (or belongs to another checkpoint): its "
                f"first {n} bytes fail the SHA-256 the checkpoint recorded."
            )
        records, at = [], 0
        while at < n:
            record, at = _parse_record(data, at, self.path)
            records.append(record)
        self._hash, self._length, self._fresh = digest, n, False
        if size > n:  # steps logged after the last checkpoint: not part of the resumed run
            with open(self.path, "r+b") as f:
                f.truncate(n)
        return records


def _record(start: int, terms: dict[str, np.ndarray]) -> bytes:
    arrays = {k: np.asarray(v) for k, v in terms.items()}
    meta = {
        "start": int(start),
        "terms": [[k, v.dtype.name, list(v.shape)] for k, v in arrays.items()],
    }
    blob = json.dumps(meta).encode()
    payload = struct.pack("<I", len(blob)) + blob + b"".join(v.tobytes() for v in arrays.values())
    return (
        RECORD_MAGIC + struct.pack("<Q", len(payload)) + hashlib.sha256(payload).digest() + payload
    )


def _parse_record(data: bytes, at: int, path) -> tuple[tuple[int, dict], int]:
    where = f"History {path}, record at byte {at}"
    if len(data) - at < _RECORD_PREFIX or data[at : at + len(RECORD_MAGIC)] != RECORD_MAGIC:
        raise CorruptFileError(f"{where}: no record header.")
    (n,) = struct.unpack("<Q", data[at + 8 : at + 16])
    body = at + _RECORD_PREFIX
    if n > len(data) - body:
        raise CorruptFileError(f"{where}: claims {n} bytes, {len(data) - body} remain.")
    payload = data[body : body + n]
    if hashlib.sha256(payload).digest() != data[at + 16 : body]:
        raise CorruptFileError(f"{where}: fails its SHA-256 check.")
    if n < 4:
        raise CorruptFileError(f"{where}: too short.")
    (m,) = struct.unpack("<I", payload[:4])
    if m > n - 4:
        raise CorruptFileError(f"{where}: its description claims {m} bytes, {n - 4} remain.")
    try:
        meta = json.loads(payload[4 : 4 + m].decode())
        start, specs = int(meta["start"]), meta["terms"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise CorruptFileError(f"{where}: malformed description.") from None
    terms, pos = {}, 4 + m
    ok = isinstance(specs, list) and all(
        isinstance(t, list) and len(t) == 3 and isinstance(t[0], str) and isinstance(t[1], str)
        and isinstance(t[2], list) and all(_count(n) for n in t[2])
        for t in specs
    )
    if not ok:
        raise CorruptFileError(f"{where}: malformed description of its terms.")
    for name, dtype, shape in specs:
        itemsize = _dtype(dtype, where).itemsize
        nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
        if nbytes < 0 or nbytes > n - pos:
            raise CorruptFileError(f"{where}: term {name!r} runs past the record.")
        entry = {"dtype": dtype, "shape": shape}
        terms[name] = _from_bytes(payload[pos : pos + nbytes], entry, where)
        pos += nbytes
    if pos != n:
        raise CorruptFileError(f"{where}: {n - pos} unexplained bytes.")
    return (start, terms), body + n
