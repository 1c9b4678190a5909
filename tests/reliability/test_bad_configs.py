"""Bad run configurations: every one is a `ConfigError` naming the file, the table and the
key with what was expected, raised when the file is read (nothing is simulated or compiled).
Files that are not UTF-8 text are named with the place of the first bad byte."""

import pathlib
import re

import pytest

from mollijax.config import ConfigError, from_dict, load_config

F = '[problem]\nname = "forcing"\n'
H = '[problem]\nname = "heat1d"\n'

# (TOML text, pattern the message must match)
CASES = [
    # [problem]
    ("", r"\[problem\] needs file"),
    ('[problem]\n', r"needs either file .* got neither"),
    ('[problem]\nname = "forcing"\nfile = "x.py"\n', r"not both"),
    ('[problem]\nname = "nope"\n', r"unknown problem 'nope'; shipped problems are"),
    ('[problem]\nname = "../forcing"\n', r"unknown problem '../forcing'"),
    ('[problem]\nname = 3\n', r"\[problem\] key 'name' must be a string"),
    ('[problem]\nfile = "missing.py"\n', r"file = 'missing.py'.*does not exist"),
    ('problem = "forcing"\n', r"\[problem\] must be a table"),
    (F + "nt = 41.5\n", r"\[problem\] key 'nt' must be an integer"),
    (F + 'nt = "many"\n', r"'nt' must be an integer"),
    (F + "nt = true\n", r"'nt' must be an integer"),
    (F + "t_final = nan\n", r"'t_final' must be a finite number"),
    (F + 'forcing = true\n', r"'forcing' must be a string"),
    (F + "t_final = inf\n", r"'t_final' must be a finite number"),
    (F + 't_final = "1"\n', r"'t_final' must be a finite number"),
    (F + "forcing = 3\n", r"'forcing' must be a string"),
    (F + "ny = 3\n", r"unknown key\(s\) \['ny'\] for problem 'forcing'"),
    (F + "[extra]\nx = 1\n", r"unknown table\(s\) \['extra'\]"),
    # [data]
    (F + '[data]\nsource = "camera"\n', r"\[data\] key 'source' must be one of"),
    (F + "[data]\nnoise = -0.1\n", r"\[data\] key 'noise' must be a finite number >= 0"),
    (F + "[data]\nnoise = nan\n", r"'noise' must be a finite number >= 0, got nan"),
    (F + "[data]\nnoise = inf\n", r"'noise' must be a finite number >= 0, got inf"),
    (F + '[data]\nnoise = "low"\n', r"'noise' must be a number"),
    (F + "[data]\nseed = -1\n", r"\[data\] key 'seed' must be an integer from 0 to"),
    (F + "[data]\nseed = 1.5\n", r"'seed' must be an integer"),
    (F + "[data]\nseed = 99999999999\n", r"'seed' must be an integer from 0 to 4294967295"),
    (F + "[data]\nnoise = 0.1\nsource = \"file\"\nfields = {u = \"u.npy\"}\n",
     r"key\(s\) \['noise'\] apply only to source = \"simulate\""),
    (F + '[data]\npath = "d.npz"\n', r"key\(s\) \['path'\] apply only to source = \"file\""),
    (F + '[data]\nsource = "file"\n', r'source = "file" needs `fields`'),
    (F + '[data]\nsource = "file"\npath = ""\nfields = {u = "u"}\n',
     r"'path' must be a non-empty path"),
    (F + '[data]\nsource = "file"\nfields = {u = 3}\n', r"'fields' must be a table of field"),
    (F + '[data]\nsource = "file"\nfields = "u.npy"\n', r"'fields' must be a table"),
    (F + '[data]\nsource = "file"\nfields = {u = "u.npy"}\nspacing = 0\n',
     r"'spacing' must be a number > 0 or one per axis"),
    (F + '[data]\nsource = "file"\nfields = {u = "u.npy"}\nspacing = [-1.0]\n',
     r"'spacing' must be a number > 0"),
    (F + '[data]\nsource = "file"\nfields = {u = "u.npy"}\nspacing = []\n', r"'spacing'"),
    (F + '[data]\nsource = "file"\nfields = {u = "u.npy"}\norigin = [nan]\n',
     r"'origin' must be a number or one per axis"),
    (F + '[data]\nsource = "file"\nfields = {u = "u.npy"}\naxes = ["t", "t"]\n',
     r"'axes' must be a non-empty array of distinct axis names"),
    (F + '[data]\nsource = "file"\nfields = {u = "u.npy"}\naxes = []\n', r"'axes' must be"),
    (F + '[data]\nsource = "file"\nfields = {u = "u.npy"}\naxes = ["1t"]\n', r"'axes' must"),
    (F + "[data]\ncolour = 1\n", r"\[data\] unknown key 'colour'"),
    # [derivatives]
    (F + '[derivatives]\neps = "wide"\n', r"\[derivatives\] key 'eps' must be \"auto\""),
    (F + "[derivatives]\neps = 0\n", r"'eps' must be"),
    (F + "[derivatives]\neps = -0.1\n", r"'eps' must be"),
    (F + "[derivatives]\neps = nan\n", r"'eps' must be"),
    (F + "[derivatives]\neps = []\n", r"'eps' must be"),
    (F + "[derivatives]\neps = [0.1, 0]\n", r"'eps' must be"),
    (F + '[derivatives]\nmethod = "magic"\n', r"'method' must be a derivatives name"),
    (F + '[derivatives]\nkernel = "box"\n', r"'kernel' must be a kernel name"),
    (F + '[derivatives]\nboundary = "mirror"\n', r"'boundary' must be a boundary name"),
    (F + "[derivatives]\nboundary = []\n", r"'boundary' must be a boundary name"),
    (F + "[derivatives]\nboundary = 1\n", r"'boundary' must be a string or an array"),
    # [unknowns]
    (F + "[unknowns.mu]\ninit = 1.0\n", r"\[unknowns\.mu\] is not an unknown of 'forcing'"),
    (F + "[unknowns]\nlam = 3\n", r"\[unknowns\.lam\] must be a table"),
    ("unknowns = 3\n" + F, r"\[unknowns\] must be a table of tables"),
    (F + '[unknowns.lam]\nrepresentation = "spline"\n', r"'representation' must be one of"),
    (F + '[unknowns.lam]\nconstraint = "even"\n', r"'constraint' must be 'free'"),
    (F + '[unknowns.lam]\nconstraint = ["bounded", 2, 1]\n', r"'constraint' must be"),
    (F + '[unknowns.lam]\nconstraint = ["bounded", 1, nan]\n', r"'constraint' must be"),
    (F + '[unknowns.lam]\nconstraint = "positive"\ninit = -1.0\n',
     r"'init' = -1\.0 violates the constraint 'positive'"),
    (F + "[unknowns.lam]\ninit = nan\n", r"'init' must be a finite number"),
    (F + "[unknowns.lam]\nwidth = 8\n", r"'width' is a network option"),
    (F + '[unknowns.lam]\nrepresentation = "mlp"\nwidth = 0\n', r"'width' must be an integer >= 1"),
    (F + '[unknowns.lam]\nrepresentation = "mlp"\ndepth = -2\n', r"'depth' must be an integer"),
    (F + '[unknowns.lam]\nrepresentation = "mlp"\nscale = 0\n', r"'scale' must be a finite"),
    (F + '[unknowns.lam]\naxes = ["t", "t"]\n', r"'axes' must be a non-empty array of distinct"),
    (F + "[unknowns.lam]\nsize = 3\n", r"\[unknowns\.lam\] unknown key 'size'"),
    # [state]
    (F + '[state]\nrepresentation = "evolve"\n', r"has no evolution form"),
    (F + '[state]\nrepresentation = "solve"\n', r"defines no `conditions"),
    (F + '[state]\nrepresentation = "guess"\n', r"\[state\] key 'representation' must be"),
    (F + "[state]\naccuracy = 3\n", r"'accuracy' must be an even integer >= 2"),
    (F + "[state]\naccuracy = 4\n", r"'accuracy' applies only to representation"),
    (F + "[state]\nwidth = 8\n", r"'width' is a network option"),
    (H + '[state]\nrepresentation = "evolve"\nsolver = "gmres"\n', r"'solver' applies only"),
    (H + '[state]\nrepresentation = "evolve"\nsubsteps = 0\n', r"'substeps' must be an integer"),
    # [regularisers] and [weights]
    (F + "[regularisers.lam]\nsmooth = -1e-4\n", r"\[regularisers\.lam\] key 'smooth' must be"),
    (F + "[regularisers.lam]\nsmooth = nan\n", r"'smooth' must be a finite number >= 0"),
    (F + "[regularisers.lam]\nwiggle = 1.0\n", r"unknown key 'wiggle'; expected one of"),
    (F + '[regularisers.lam]\nsmooth = "a bit"\n', r"'smooth' must be a finite number"),
    (F + "[regularisers.mu]\nsmooth = 1.0\n", r"\[regularisers\.mu\] is not an unknown"),
    (F + "[weights]\ndata = -1\n", r"\[weights\] key 'data' must be a finite number >= 0"),
    (F + "[weights]\ndata = nan\n", r"\[weights\] key 'data' must be a finite number >= 0"),
    (F + "[weights]\ndata = inf\n", r"\[weights\] key 'data' must be"),
    (F + "[weights]\ndata = true\n", r"\[weights\] key 'data' must be"),
    ("weights = 1\n" + F, r"\[weights\] must be a table"),
    # [optimiser]
    (F + "[optimiser]\nlr = 0.1\n", r"\[optimiser\] unknown key 'lr'; expected one of"),
    (F + '[optimiser]\nname = "sgd2"\n', r"'name' must be a optimiser name"),
    (F + "[optimiser]\nlearning_rate = -0.1\n", r"'learning_rate' must be a finite number > 0"),
    (F + "[optimiser]\nlearning_rate = 0\n", r"'learning_rate' must be a finite number > 0"),
    (F + "[optimiser]\nlearning_rate = nan\n", r"'learning_rate' must be a finite number > 0"),
    (F + "[optimiser]\nsteps = 0\n", r"'steps' must be an integer >= 1"),
    (F + "[optimiser]\nsteps = 10.5\n", r"'steps' must be an integer"),
    (F + "[optimiser]\nsteps = 1e3\n", r"'steps' must be an integer"),
    (F + "[optimiser]\nchunk = 0\n", r"'chunk' must be an integer >= 1"),
    (F + "[optimiser]\nseed = -1\n", r"'seed' must be an integer from 0 to"),
    (F + "[optimiser]\nseed = 99999999999999999\n", r"'seed' must be an integer from 0 to"),
    (F + "[optimiser]\ntol = 0.0\n", r"'tol' must be a number > 0 and < 1"),
    (F + "[optimiser]\ntol = 2.0\n", r"'tol' must be a number > 0 and < 1"),
    # [batch] and [output]
    (F + "[batch]\ndevices = -1\n", r"\[batch\] key 'devices' must be an integer >= 0"),
    (F + '[batch]\ndtype = "float16"\n', r"'dtype' must be one of \('float32', 'float64'\)"),
    (F + '[batch]\nfield = "u v"\n', r"\[batch\] key 'field' must be a field name"),
    (F + '[output]\ndir = ""\n', r"\[output\] key 'dir' must be a non-empty path"),
    (F + "[output]\ndir = 3\n", r"\[output\] key 'dir' must be a string"),
    # not TOML
    (F + "[optimiser\nsteps = 3\n", r"not valid TOML"),
    (F + "steps == 3\n", r"not valid TOML"),
    ('[problem]\nname = "forcing"\n[problem]\nname = "heat1d"\n', r"not valid TOML"),
]


@pytest.mark.parametrize("text, pattern", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_bad_config_is_named(tmp_path, text, pattern):
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(path)
    assert "run.toml" in str(err.value) or "Configuration file" in str(err.value)


def test_the_table_of_cases_is_large():
    assert len(CASES) >= 100


ENCODINGS = [
    (b'[problem]\nname = "forc\xe9"\n', r"not UTF-8 text: byte 0xe9 at line 2, column 13"),
    ('[problem]\nname = "forcing"\n'.encode("utf-16"), r"not UTF-8 text: byte 0xff at line 1"),
    (b'[problem]\nname = "forcing"\n\x00\x00', r"not a text file \(it holds NUL bytes\)"),
    (b"\xff\xfe\xfd", r"not UTF-8 text"),
]


@pytest.mark.parametrize("raw, pattern", ENCODINGS)
def test_non_utf8_config_is_named(tmp_path, raw, pattern):
    path = tmp_path / "run.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_a_byte_order_mark_is_read_as_utf8(tmp_path):
    text = F + '[optimiser]\nlearning_rate = 0.05\n[data]\nnoise = 0.01\n'
    plain, bom = tmp_path / "plain.toml", tmp_path / "bom.toml"
    plain.write_text(text, encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    a, b = load_config(plain).to_dict(), load_config(bom).to_dict()
    a.pop("source"), b.pop("source")
    assert a == b and a["optimiser"]["learning_rate"] == 0.05


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match=r"is not a file \(a folder\?\)"):
        load_config(tmp_path)


@pytest.mark.parametrize("raw", [{"problem": {"name": "forcing"}, "optimiser": []},
                                 {"problem": {"name": "forcing"}, "data": "x"}])
def test_from_dict_tables_must_be_tables(raw):
    with pytest.raises(ConfigError, match=re.escape("must be a table")):
        from_dict(raw, "mem.toml", pathlib.Path())
