"""Bad data files: each is a named error (`DataFileError`, `GridMismatchError`,
`NonFiniteError`) that names the file or field, raised while reading, before anything is
compiled; nothing is unpickled. TIFF stacks are read page by page, with their metadata."""

import io
import pathlib
import pickle
import zipfile

import numpy as np
import pytest
import tifffile

from mollijax import GridMismatchError, MollijaxError, NonFiniteError
from mollijax.config import DataConfig, load_problem
from mollijax.io import DataFileError, load_array, load_dataset, read_stack, read_tiff

HEAT = load_problem("heat1d")
GOOD = np.arange(24.0).reshape(4, 6)


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_claiming(shape) -> bytes:
    """A valid .npy header that claims `shape`, followed by 8 bytes."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return head.getvalue() + b"\0" * 8


FILES = [
    # (file name, bytes, array name, error class, pattern)
    ("a.npy", b"", None, DataFileError, r"is empty \(0 bytes\)"),
    ("a.npy", b"hello world, not an array", None, DataFileError, r"not a NumPy \.npy file"),
    ("a.npy", pickle.dumps([1, 2, 3]), None, DataFileError, r"not a NumPy \.npy file"),
    ("a.npy", _npy_bytes(GOOD)[:-40], None, DataFileError, r"is truncated: its header describes"),
    ("a.npy", _npy_bytes(GOOD)[:9], None, DataFileError, r"not a readable \.npy array"),
    ("a.npy", _npy_claiming((2**40, 2**20)), None, DataFileError, r"is truncated.*only 8 bytes"),
    ("a.npy", _npy_bytes(np.array([{"a": 1}], dtype=object)), None, DataFileError,
     r"holds Python objects \(pickled data\).*never unpickles"),
    ("a.npy", _npy_bytes(np.array(["a", "b"])), None, DataFileError, r"must be a real"),
    ("a.npy", _npy_bytes(np.ones(3, complex)), None, DataFileError, r"dtype complex128"),
    ("a.npy", _npy_bytes(np.zeros((0, 4))), None, DataFileError, r"is empty \(shape \(0, 4\)\)"),
    ("a.npy", _npy_bytes(np.array(["2020-01-01"], "datetime64[D]")), None, DataFileError,
     r"must be a real"),
    ("a.npy", _npy_bytes(np.zeros(2, [("x", "f8"), ("y", "f8")])), None, DataFileError,
     r"must be a real"),
    ("a.npz", b"", "u", DataFileError, r"is empty \(0 bytes\)"),
    ("a.npz", b"garbage bytes", "u", DataFileError, r"is not an \.npz archive"),
    ("a.npz", _npz_bytes(u=GOOD)[:60], "u", DataFileError, r"truncated or corrupted"),
    ("a.npz", _npz_bytes(u=GOOD)[:-30], "u", DataFileError, r"truncated or corrupted"),
    ("a.npz", _npz_bytes(u=GOOD), "v", DataFileError, r"array 'v' not found; .*\['u'\]"),
    ("a.npz", _npz_bytes(u=GOOD), None, DataFileError, r"array None not found"),
    ("a.npz", _npz_bytes(u=np.array([None, 1], dtype=object)), "u", DataFileError,
     r"array 'u' holds Python objects"),
    ("a.npz", _npz_bytes(u=np.array(["x"])), "u", DataFileError, r"'u' must be a real"),
    ("a.npz", _npz_bytes(u=np.ones((2, 0))), "u", DataFileError, r"'u' is empty"),
    ("a.tif", b"", None, DataFileError, r"is empty \(0 bytes\)"),
    ("a.tif", b"II*\x00garbage", None, DataFileError, r"holds no image pages \(truncated"),
    ("a.tif", b"not a tiff at all", None, DataFileError, r"not a readable TIFF file"),
    ("a.csv", b"1,2,3", None, DataFileError, r"unsupported file type '\.csv'"),
    ("a", b"1", None, DataFileError, r"unsupported file type ''"),
]


@pytest.mark.parametrize("name, raw, array, cls, pattern", FILES,
                         ids=[f"f{i}-{f[0]}" for i, f in enumerate(FILES)])
def test_bad_file_is_named(tmp_path, name, raw, array, cls, pattern):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(cls, match=pattern) as err:
        load_array(path, array)
    assert str(path) in str(err.value)


def _corrupt_member(tmp_path) -> pathlib.Path:
    """An .npz whose member's bytes are flipped (the zip's CRC catches it)."""
    raw = bytearray(_npz_bytes(u=GOOD))
    raw[200] ^= 0xFF
    path = tmp_path / "a.npz"
    path.write_bytes(bytes(raw))
    return path


def test_flipped_byte_in_npz_member(tmp_path):
    with pytest.raises(DataFileError, match=r"truncated or corrupted"):
        load_array(_corrupt_member(tmp_path), "u")


def test_npz_member_claiming_more_than_the_archive_holds(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("u.npy", _npy_claiming((2**30,)))
    with pytest.raises(DataFileError, match=r"array 'u' is truncated"):
        load_array(path, "u")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataFileError, match=r"does not exist"):
        load_array(tmp_path / "none.npy")
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(DataFileError, match=r"is not a file"):
        load_array(tmp_path / "d.npy")


# ------------------------------------------------------------------------- TIFF stacks


def test_ragged_tiff_stack_is_an_error(tmp_path):
    path = tmp_path / "s.tif"
    with tifffile.TiffWriter(path) as w:
        w.write(np.zeros((4, 5), np.float32), photometric="minisblack")
        w.write(np.zeros((4, 5), np.float32), photometric="minisblack")
        w.write(np.zeros((3, 5), np.float32), photometric="minisblack")
    with pytest.raises(DataFileError, match=r"ragged stack: page 0 has shape \(4, 5\), page 2"):
        load_array(path)


def test_every_page_of_a_tiff_is_read(tmp_path):
    path = tmp_path / "s.tif"
    pages = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    with tifffile.TiffWriter(path) as w:  # three separate pages, not one shaped series
        for p in pages:
            w.write(p, photometric="minisblack")
    np.testing.assert_array_equal(load_array(path), pages)


def test_colour_tiff_pages_are_refused(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataFileError, match=r"page 0 has shape \(4, 5, 3\); expected a single"):
        load_array(path)


def test_tiff_metadata_gives_pixel_size_and_frame_interval(tmp_path):
    path = tmp_path / "m.tif"
    stack = np.zeros((3, 4, 5), np.float32)
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"unit": "um", "finterval": 0.5, "axes": "TYX"})
    t = read_tiff(path)
    assert t.spacing == (0.5, 0.5, 0.25) and t.unit == "um"
    plain = tmp_path / "p.tif"
    tifffile.imwrite(plain, stack, photometric="minisblack")
    assert read_tiff(plain).spacing == (None, None, None)  # tifffile's default: no claim


def test_spacing_from_tiff_metadata_reaches_the_grid(tmp_path):
    u = np.random.default_rng(0).random((11, 6)).astype(np.float32)  # one page, (x, t)
    tifffile.imwrite(tmp_path / "u.tif", u, resolution=(1 / 0.2, 1 / 0.1),
                     resolutionunit="CENTIMETER")
    data = DataConfig(source="file", fields={"u": "u.tif"}, axes=["x", "t"])
    ds = load_dataset(data, HEAT, tmp_path)
    # resolution is (x, y): rows (the first axis) are y, 0.1 apart; columns 0.2 apart
    assert ds.grid.spacing == pytest.approx((0.1, 0.2))
    assert "TIFF metadata of u.tif, unit cm" in ds.params["spacing_from"]
    given = DataConfig(source="file", fields={"u": "u.tif"}, axes=["x", "t"], spacing=[1.0, 2.0])
    assert load_dataset(given, HEAT, tmp_path).grid.spacing == (1.0, 2.0)  # the config wins


# ------------------------------------------------------------------------- datasets


def _dataset(tmp_path, **kw):
    base = {"source": "file", "axes": ["x", "t"], "spacing": [0.1, 0.2]}
    return load_dataset(DataConfig(**{**base, **kw}), HEAT, tmp_path)


@pytest.fixture
def folder(tmp_path):
    u = np.ones((11, 6))
    nan = u.copy()
    nan[2, 3] = np.nan
    np.savez(tmp_path / "d.npz", u=u, nan=nan, inf=u * np.inf, u3=np.ones((11, 6, 2)),
             short=np.ones((11, 5)), D=np.ones(11), D10=np.ones(10), Dnan=np.full(11, np.nan),
             half=np.full((11, 6), 0.5), m=np.isfinite(nan), none=np.zeros((11, 6), bool),
             m5=np.ones((11, 5), bool))
    return tmp_path


DATASETS = [
    (dict(path="d.npz", fields={"u": "nan"}), NonFiniteError, r"'u' has 1 NaN or inf"),
    (dict(path="d.npz", fields={"u": "inf"}), NonFiniteError, r"'u' has 66 NaN or inf"),
    (dict(path="d.npz", fields={"u": "u3"}), GridMismatchError, r"3 dimension\(s\)"),
    (dict(path="d.npz", fields={"u": "u"}, known={"f": "short"}), GridMismatchError,
     r"Known field 'f' has shape \(11, 5\)"),
    (dict(path="d.npz", fields={"u": "u"}, known={"f": "inf"}), NonFiniteError,
     r"Known field 'f' has 66 NaN"),
    (dict(path="d.npz", fields={"u": "u"}, truth={"D": "D10"}), GridMismatchError,
     r"Truth of 'D' .* must have shape \(11,\), got \(10,\)"),
    (dict(path="d.npz", fields={"u": "u"}, truth={"D": "Dnan"}), NonFiniteError,
     r"`truth\['D'\]` contains NaN"),
    (dict(path="d.npz", fields={"u": "u"}, truth={"K": "D"}), DataFileError,
     r"\[data\.truth\] names 'K', which is not an unknown of 'heat1d'"),
    (dict(path="d.npz", fields={"u": "u", "v": "u"}), DataFileError,
     r"\[data\.fields\] names \['v'\], which is not observed by 'heat1d'"),
    (dict(path="d.npz", fields={"u": "nan"}, masks={"u": "half"}), DataFileError,
     r"Mask of 'u' must be boolean"),
    (dict(path="d.npz", fields={"u": "nan"}, masks={"u": "m5"}), GridMismatchError,
     r"Mask of 'u' has shape \(11, 5\)"),
    (dict(path="d.npz", fields={"u": "u"}, masks={"u": "none"}), MollijaxError,
     r"masks out every node: nothing is observed"),
    (dict(path="d.npz", fields={"u": "u"}, masks={"v": "m"}), DataFileError,
     r"\[data\.masks\] names 'v', which is not under \[data\.fields\]"),
    (dict(fields={"u": "u"}), DataFileError, r"names an array, but \[data\] has no `path`"),
    (dict(path="missing.npz", fields={"u": "u"}), DataFileError, r"does not exist"),
    (dict(path="d.npz", fields={"u": "missing.npy"}), DataFileError, r"does not exist"),
    (dict(path="d.npz", fields={"u": "u"}, spacing=[0.1, 0.2, 0.3]), GridMismatchError,
     r"`spacing` must give one value per axis \(2\)"),
    (dict(path="d.npz", fields={"u": "u"}, axes=["x"]), GridMismatchError,
     r"2 dimension\(s\) \(11, 6\) but \[data\] `axes` names 1"),
]


@pytest.mark.parametrize("kw, cls, pattern", DATASETS, ids=[f"d{i}" for i in range(len(DATASETS))])
def test_bad_dataset_is_named(folder, kw, cls, pattern):
    with pytest.raises(cls, match=pattern):
        _dataset(folder, **kw)


def test_masked_nan_is_accepted_and_zeroed(folder):
    ds = _dataset(folder, path="d.npz", fields={"u": "nan"}, masks={"u": "m"})
    assert not ds.masks["u"][2, 3] and ds.data["u"][2, 3] == 0.0


# ------------------------------------------------------------------------- batch stacks


def test_stack_folder_with_items_of_different_shapes(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 5)))
    np.save(tmp_path / "b.npy", np.ones((4, 6)))
    with pytest.raises(DataFileError, match=r"a\.npy has \(4, 5\), b\.npy has \(4, 6\)"):
        read_stack(tmp_path)


def test_stack_folder_reads_every_tiff_page(tmp_path):
    for i in range(2):
        tifffile.imwrite(tmp_path / f"item{i}.tif", np.full((3, 4, 5), i, np.float32),
                         photometric="minisblack")
    arr, names = read_stack(tmp_path)
    assert arr.shape == (2, 3, 4, 5) and names == ["item0.tif", "item1.tif"]
    np.testing.assert_array_equal(arr[1], 1.0)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda p: p.mkdir(), r"holds no \.npy, TIFF or image files"),
        (lambda p: None, r"does not exist"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones(5)), r"must have shape \(B, \*grid\)"),
        (lambda p: np.savez(p.with_suffix(".npz"), a=np.ones((2, 3)), b=np.ones((2, 3))),
         r"key is needed to pick one of the arrays \['a', 'b'\]"),
        (lambda p: (p.mkdir(), (p / "x.png").write_bytes(b"not a png")), r"not a readable image"),
    ],
)
def test_bad_stack_is_named(tmp_path, make, pattern):
    target = tmp_path / "stack"
    make(target)
    path = target
    for suffix in (".npy", ".npz"):
        if target.with_suffix(suffix).exists():
            path = target.with_suffix(suffix)
    with pytest.raises(DataFileError, match=pattern):
        read_stack(path)
