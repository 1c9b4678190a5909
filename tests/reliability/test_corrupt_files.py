"""Corruption of every kind of file the project writes, read back by the code that reads it:
verified files (`result.mjx`, `checkpoint.mjx`: `FitResult.load`, `mollijax.io.read_header`),
the append-only history, `metrics.json` and `run.json`. Each damage is a `CorruptFileError`
(or a named `MollijaxError`) naming the file and what is wrong; none is accepted."""

import json
import math
import struct

import numpy as np
import pytest

import mollijax as mj
from mollijax import CorruptFileError, MollijaxError
from mollijax.cli import dump_metrics, read_metrics, strict_json
from mollijax.io import HistoryLog, read_header

HEAD = 8 + 8 + 32  # magic, header length, header SHA-256


def _result(tmp_path):
    res = mj.FitResult(
        unknowns=None, values={"D": np.linspace(0.0, 1.0, 7)}, fields={"D": np.ones((7, 3))},
        history={"total": np.array([3.0, 2.0, 1.0])}, status=mj.Status.completed, steps=3,
        wall_time=0.5, message="completed 3 steps", final_loss=1.0,
    )
    path = tmp_path / "result.mjx"
    res.save(path)
    return path


def _header_length(raw: bytes) -> int:
    return struct.unpack("<Q", raw[8:16])[0]


def _flip(at):
    def damage(raw: bytes) -> bytes:
        i = at(raw) if callable(at) else at
        return raw[:i] + bytes([raw[i] ^ 0x55]) + raw[i + 1:]
    return damage


DAMAGE = [
    ("empty", lambda r: b"", r"not a mollijax file"),
    ("other magic", lambda r: b"MJXFILE1" + r[8:], r"not a mollijax file of format"),
    ("text file", lambda r: b"hello, I am not a result\n" * 4, r"not a mollijax file"),
    ("cut in prefix", lambda r: r[:20], r"truncated: 20 bytes end inside the file prefix"),
    ("cut in header", lambda r: r[:HEAD + 10], r"truncated or corrupted: its header claims"),
    ("cut in arrays", lambda r: r[:-5], r"is truncated: the header lists"),
    ("trailing bytes", lambda r: r + b"\0" * 9, r"longer than its header says"),
    ("72 TiB header", lambda r: r[:8] + struct.pack("<Q", 72 << 40) + r[16:],
     r"header claims 79164837199872 bytes, but only"),
    ("zero header", lambda r: r[:8] + struct.pack("<Q", 0) + r[16:],
     r"header's SHA-256 does not match"),
    ("header hash", _flip(20), r"header's SHA-256 does not match"),
    ("header byte", _flip(HEAD + 5), r"header's SHA-256 does not match"),
    ("first array", _flip(lambda r: HEAD + _header_length(r) + 3),
     r"array 0 of \d+ .* fails its SHA-256 check"),
    ("last byte", _flip(lambda r: len(r) - 1), r"array \d+ of \d+ .* fails its SHA-256 check"),
]


@pytest.mark.parametrize("damage, pattern", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_result_file_is_refused(tmp_path, damage, pattern):
    path = _result(tmp_path)
    assert mj.FitResult.load(path).steps == 3  # undamaged: reads back
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptFileError, match=pattern) as err:
        mj.FitResult.load(path)
    assert str(path) in str(err.value)
    with pytest.raises(CorruptFileError):
        read_header(path) if "array" not in pattern else mj.FitResult.load(path)


def test_missing_or_folder_result(tmp_path):
    with pytest.raises(MollijaxError, match=r"does not exist"):
        mj.FitResult.load(tmp_path / "none.mjx")
    with pytest.raises(CorruptFileError, match=r"not a regular file"):
        mj.FitResult.load(tmp_path)


def test_a_forged_header_cannot_ask_for_a_huge_array(tmp_path):
    """A header rewritten with a valid SHA-256 but a leaf table that does not add up to the
    file: every length is checked against the file size before anything is allocated."""
    import hashlib

    path = _result(tmp_path)
    raw = path.read_bytes()
    n = _header_length(raw)
    header = json.loads(raw[HEAD:HEAD + n])
    header["leaves"][0]["shape"] = [2**40, 2**20]
    header["leaves"][0]["nbytes"] = 2**63
    blob = json.dumps(header).encode()
    forged = raw[:8] + struct.pack("<Q", len(blob)) + hashlib.sha256(blob).digest() + blob
    path.write_bytes(forged + raw[HEAD + n:])
    with pytest.raises(CorruptFileError, match=r"truncated: the header lists"):
        mj.FitResult.load(path)
    header["leaves"][0]["shape"] = ["a"]
    blob = json.dumps(header).encode()
    path.write_bytes(raw[:8] + struct.pack("<Q", len(blob)) + hashlib.sha256(blob).digest()
                     + blob + raw[HEAD + n:])
    with pytest.raises(CorruptFileError, match=r"leaf table is malformed"):
        mj.FitResult.load(path)


# ----------------------------------------------------------------------------- history


def _history(tmp_path):
    log = HistoryLog(tmp_path / "checkpoint.mjx.history")
    log.append([(0, {"total": np.arange(4.0)})])
    committed = log.append([(4, {"total": np.arange(4.0, 8.0)})])
    return log.path, committed


HISTORY = [
    ("deleted", lambda p: p.unlink(), r"is missing; the checkpoint needs"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:-7]), r"is truncated: the checkpoint"),
    ("flipped", lambda p: p.write_bytes(_flip(60)(p.read_bytes())),
     r"fail the SHA-256 the checkpoint recorded"),
    ("replaced", lambda p: p.write_bytes(b"x" * p.stat().st_size),
     r"fail the SHA-256 the checkpoint recorded"),
]


@pytest.mark.parametrize("damage, pattern", [h[1:] for h in HISTORY], ids=[h[0] for h in HISTORY])
def test_damaged_history_is_refused(tmp_path, damage, pattern):
    path, committed = _history(tmp_path)
    damage(path)
    with pytest.raises(CorruptFileError, match=pattern):
        HistoryLog(path).load(committed)


@pytest.mark.parametrize("committed", [{"bytes": -1}, {"bytes": "10"}, {}, {"bytes": True}])
def test_malformed_history_entry(tmp_path, committed):
    path, _ = _history(tmp_path)
    with pytest.raises(CorruptFileError, match=r"history entry is malformed"):
        HistoryLog(path).load(committed)


def test_uncommitted_tail_is_dropped_not_trusted(tmp_path):
    path, committed = _history(tmp_path)
    with open(path, "ab") as f:
        f.write(b"half a record")
    records = HistoryLog(path).load(committed)
    assert [s for s, _ in records] == [0, 4] and path.stat().st_size == committed["bytes"]


# ----------------------------------------------------------------------------- metrics.json


def _metrics(tmp_path):
    data, text = dump_metrics({"status": "completed", "steps": 3, "errors": {"D": {
        "rel_l2": 0.1, "corr": math.nan}}, "final_losses": {"total": math.inf}})
    path = tmp_path / "metrics.json"
    path.write_text(text)
    return path, data


def test_metrics_are_strict_json_with_reasons(tmp_path):
    path, data = _metrics(tmp_path)
    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert strict["errors"]["D"]["corr"] is None and strict["final_losses"]["total"] is None
    assert "correlation undefined" in strict["non_finite"]["errors.D.corr"]
    assert "diverged" in strict["non_finite"]["final_losses.total"]
    assert read_metrics(path) == data


METRICS_DAMAGE = [
    ("truncated", lambda t: t[: len(t) // 2], r"is not valid JSON"),
    ("bare NaN", lambda t: t.replace('"steps": 3', '"steps": NaN'), r"NaN is not JSON"),
    ("edited", lambda t: t.replace('"steps": 3', '"steps": 4'), r"modified or corrupted"),
    ("a list", lambda t: "[1, 2]", r"not a metrics file: it holds a list"),
    ("binary", lambda t: "\udcff", r"is not valid JSON"),
]


@pytest.mark.parametrize("damage, pattern", [m[1:] for m in METRICS_DAMAGE],
                         ids=[m[0] for m in METRICS_DAMAGE])
def test_damaged_metrics_are_refused(tmp_path, damage, pattern):
    path, _ = _metrics(tmp_path)
    path.write_bytes(damage(path.read_text()).encode("utf-8", "surrogateescape"))
    with pytest.raises(CorruptFileError, match=pattern):
        read_metrics(path)


@pytest.mark.parametrize(
    "value, expected, notes",
    [
        ({"a": np.float32(np.nan)}, {"a": None}, {"a"}),
        ({"a": (1, np.int64(2), [np.inf])}, {"a": [1, 2, [None]]}, {"a[2][0]"}),
        ({"a": np.arange(3.0)}, {"a": [0.0, 1.0, 2.0]}, set()),
        ({"p": __import__("pathlib").Path("x")}, {"p": "x"}, set()),
    ],
)
def test_strict_json_converts_and_records(value, expected, notes):
    found = {}
    assert strict_json(value, "", found) == expected and set(found) == notes
