"""Loading user data: file kinds, validation errors, and a run on data read from a file."""

import json
import pathlib
import re
import tomllib

import numpy as np
import pytest
import tifffile

from mollijax import GridMismatchError, NonFiniteError, cli
from mollijax.config import ConfigError, DataConfig, from_dict, load_problem
from mollijax.io import DataFileError, load_array, load_dataset

HEAT = load_problem("heat1d")


def _data(**kw):
    base = {"source": "file", "axes": ["x", "t"], "spacing": [0.1, 0.2]}
    return DataConfig(**{**base, **kw})


def test_npz_npy_and_tiff_read_back(tmp_path):
    a = np.arange(24.0).reshape(2, 3, 4)
    np.savez(tmp_path / "d.npz", u=a)
    np.save(tmp_path / "d.npy", a)
    tifffile.imwrite(tmp_path / "d.tif", a.astype(np.float32), photometric="minisblack")
    np.testing.assert_array_equal(load_array(tmp_path / "d.npz", "u"), a)
    np.testing.assert_array_equal(load_array(tmp_path / "d.npy"), a)
    np.testing.assert_array_equal(load_array(tmp_path / "d.tif"), a)
    with pytest.raises(DataFileError, match=r"array 'v' not found; the file holds \['u'\]"):
        load_array(tmp_path / "d.npz", "v")
    with pytest.raises(DataFileError, match="unsupported file type '.csv'"):
        (tmp_path / "d.csv").write_text("1")
        load_array(tmp_path / "d.csv")


def test_grid_and_fields_from_config(tmp_path):
    u = np.random.default_rng(0).standard_normal((11, 6))
    np.savez(tmp_path / "d.npz", obs=u, D=np.full(11, 0.02))
    sim = load_dataset(_data(path="d.npz", fields={"u": "obs"}, truth={"D": "D"}), HEAT,
                          tmp_path)
    assert sim.grid.shape == (11, 6) and sim.grid.spacing == (0.1, 0.2)
    assert sim.grid.axes == ("x", "t")
    np.testing.assert_array_equal(sim.data["u"], u)
    np.testing.assert_array_equal(sim.truth["D"], np.full(11, 0.02))


def test_nan_is_an_error_unless_masked(tmp_path):
    u = np.ones((11, 6))
    u[3, 2] = np.nan
    mask = np.isfinite(u)
    np.savez(tmp_path / "d.npz", u=u, m=mask)
    with pytest.raises(NonFiniteError, match=r"'u' has 1 NaN"):
        load_dataset(_data(path="d.npz", fields={"u": "u"}), HEAT, tmp_path)
    sim = load_dataset(_data(path="d.npz", fields={"u": "u"}, masks={"u": "m"}), HEAT,
                          tmp_path)
    assert np.all(np.isfinite(sim.data["u"])) and not sim.masks["u"][3, 2]


def test_rank_and_shape_errors(tmp_path):
    np.savez(tmp_path / "d.npz", u=np.ones((11, 6)), u3=np.ones((11, 6, 2)), f=np.ones((11, 5)),
             D=np.ones(10))
    with pytest.raises(GridMismatchError, match=r"3 dimension\(s\) \(11, 6, 2\) but \[data\] `axes`"):
        load_dataset(_data(path="d.npz", fields={"u": "u3"}), HEAT, tmp_path)
    np.savez(tmp_path / "e.npz", u=np.ones((11, 6)), v=np.ones((11, 6, 2)))
    with pytest.raises(GridMismatchError, match=r"'v' must have 2 dimension\(s\)"):
        load_dataset(_data(path="e.npz", fields={"u": "u"}, known={"v": "v"}), HEAT, tmp_path)
    with pytest.raises(DataFileError, match=r"names \['v'\], which is not observed by 'heat1d'"):
        load_dataset(_data(path="e.npz", fields={"u": "u", "v": "v"}), HEAT, tmp_path)
    # the mismatch may be the observed field's fault: the message says where the grid's
    # shape came from (a new-user trial's wrong-shaped data blamed only the known field)
    with pytest.raises(GridMismatchError, match=r"'f' has shape \(11, 5\), the grid \(11, 6\) "
                       r"\(the shape of the observed field 'u', \[data.fields\]'s first\)"):
        load_dataset(_data(path="d.npz", fields={"u": "u"}, known={"f": "f"}), HEAT, tmp_path)
    with pytest.raises(GridMismatchError, match=r"Truth of 'D'.*\(11,\), got \(10,\)"):
        load_dataset(_data(path="d.npz", fields={"u": "u"}, truth={"D": "D"}), HEAT, tmp_path)
    with pytest.raises(GridMismatchError, match="spacing"):
        load_dataset(_data(path="d.npz", fields={"u": "u"}, spacing=[1.0, 2.0, 3.0]), HEAT,
                        tmp_path)
    with pytest.raises(DataFileError, match=r"missing \['u'\]"):
        load_dataset(_data(path="d.npz", fields={}), HEAT, tmp_path)


def test_a_file_without_spacing_or_axes_is_refused_by_name(tmp_path):
    # a spacing of 1 or the axes ("x", "y") taken silently gave a heat D off by ~400x
    np.savez(tmp_path / "d.npz", u=np.ones((11, 6)))
    with pytest.raises(DataFileError, match=r"`spacing` is required.*\['x', 't'\]"):
        load_dataset(_data(path="d.npz", fields={"u": "u"}, spacing=None), HEAT, tmp_path)
    with pytest.raises(DataFileError, match=r"`axes` is required.*\(11, 6\).*'heat1d' uses "
                                            r"the axes \['x', 't'\]"):
        load_dataset(_data(path="d.npz", fields={"u": "u"}, axes=None), HEAT, tmp_path)
    sim = load_dataset(_data(path="d.npz", fields={"u": "u"}, spacing=1.0), HEAT, tmp_path)
    assert sim.grid.spacing == (1.0, 1.0)  # said explicitly: nodes as the unit


def test_simulator_parameters_with_file_data_are_refused():
    raw = {"problem": {"name": "heat1d", "nx": 41},
           "data": {"source": "file", "path": "d.npz", "fields": {"u": "u"},
                    "axes": ["x", "t"], "spacing": [0.1, 0.2]}}
    with pytest.raises(ConfigError, match=r"\[problem\] key\(s\) \['nx'\] are parameters of "
                                          r"the problem's simulator"):
        from_dict(raw)
    raw["problem"] = {"name": "heat1d"}
    assert from_dict(raw).params == {}  # not the simulator's defaults (metrics.json)


def test_the_readme_file_data_example_reads_a_file(tmp_path):
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S)
                 if 'source = "file"' in b)
    raw = tomllib.loads(block)
    nx, nt = 11, 6
    np.savez(tmp_path / raw["data"]["path"], u=np.ones((nx, nt)))
    cfg = from_dict(raw, base=tmp_path)
    ds = load_dataset(cfg.data, HEAT, tmp_path)
    assert ds.grid.axes == ("x", "t") and ds.grid.spacing == tuple(raw["data"]["spacing"])


def test_run_on_user_file_recovers_forcing(tmp_path):
    sim = load_problem("forcing").simulate(noise=0.0, nt=101)
    np.save(tmp_path / "u.npy", sim.data["u"])
    np.savez(tmp_path / "truth.npz", lam=sim.truth["lam"])
    (tmp_path / "run.toml").write_text(
        '[problem]\nname = "forcing"\n'
        '[data]\nsource = "file"\npath = "truth.npz"\nfields = {u = "u.npy"}\n'
        'truth = {lam = "lam"}\naxes = ["t"]\nspacing = 0.01\n'
        '[derivatives]\neps = 0.05\n'
        '[optimiser]\nlearning_rate = 0.05\nsteps = 300\nchunk = 300\n'
    )
    assert cli.main(["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "o"),
                     "--quiet"]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["grid"]["spacing"] == [0.01]
    assert metrics["errors"]["lam"]["rel_l2"] < 0.02, metrics["errors"]


def test_domain_from_the_data_file(tmp_path, capsys):
    # a nucleus-like disk in a field of view whose outside is noise: with [data] domain the
    # equation-error fit and its score use the disk only
    sim = load_problem("poisson_coefficient").simulate(noise=0.0, nx=33, ny=33)
    x, y = sim.grid.mesh()
    disk = (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.4**2
    noise = np.random.default_rng(0).standard_normal(disk.shape)
    u = np.where(disk, sim.data["u"], noise)
    np.savez(tmp_path / "d.npz", u=u, m=sim.known["m"], lam=sim.truth["lam"], disk=disk,
             short=disk[:-1])
    config = ('[problem]\nname = "poisson_coefficient"\n'
              '[data]\nsource = "file"\npath = "d.npz"\nfields = {u = "u"}\n'
              'known = {m = "m"}\ntruth = {lam = "lam"}\naxes = ["x", "y"]\n'
              'spacing = [0.03125, 0.03125]\ndomain = "DOMAIN"\n'
              '[unknowns.lam]\nrepresentation = "grid"\nconstraint = "positive"\ninit = 1.0\n'
              '[optimiser]\nlearning_rate = 0.02\nsteps = 300\nchunk = 300\n')
    (tmp_path / "run.toml").write_text(config.replace("DOMAIN", "disk"))
    assert cli.main(["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "o"),
                     "--quiet", "--no-plots", "--uncertainty", "none"]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    margin = metrics["errors"]["lam"]["margin"]
    cut = tuple(slice(m, 33 - m) for m in margin)
    assert metrics["errors"]["lam"]["nodes"] == int(disk[cut].sum())
    assert metrics["errors"]["lam"]["rel_l2"] < 0.1, metrics["errors"]
    # the band alone (no regulariser here: the rim keeps its start) is scored beside it
    on_band = metrics["errors_on_band"]["lam"]
    assert on_band["nodes"] == metrics["domain"]["band"] < metrics["domain"]["nodes"]
    assert on_band["rel_l2"] < metrics["errors"]["lam"]["rel_l2"]
    with np.load(tmp_path / "o" / "fields.npz") as saved:
        np.testing.assert_array_equal(saved["domain"], disk)
    # a domain of the wrong shape is named
    (tmp_path / "bad.toml").write_text(config.replace("DOMAIN", "short"))
    assert cli.main(["run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "b"),
                     "--quiet"]) == 2
    assert "[data] domain has shape (32, 33); the data has (33, 33)" in capsys.readouterr().err
