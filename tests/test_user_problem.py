"""A user's own PDE file, not among the shipped ones, run through `mollijax run`.

The file describes steady diffusion with an unknown conductivity, -(k(x) u')' = f on [0, 1],
u(0) = u(1) = 0, observed through u for two sources f (two experiments make k identifiable
where one u' vanishes). It has its own simulator (a finite-volume solve on a finer grid) and
uses only the public API.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mollijax as mj
from mollijax import cli

PDE = textwrap.dedent('''
    """-(k(x) u')' = f on [0, 1], u(0) = u(1) = 0: recover the conductivity k(x) from u."""

    import numpy as np

    import mollijax as mj

    DESCRIPTION = "-(k u')' = f, two sources: recover k(x) from u1, u2"
    ORDER = 2
    DEFAULTS = {"nx": 81, "refine": 8, "k_amp": 0.3}
    UNKNOWNS = {"k": {"axes": ("x",), "constraint": "positive", "init": 1.0}}
    STATE = ("u1", "u2")


    def conductivity(x, amp):
        return 1.0 + amp * np.sin(2 * np.pi * x)


    def _solve(k_face, f, h):
        n = f.size
        main = (k_face[:-1] + k_face[1:]) / h**2
        off = -k_face[1:-1] / h**2
        a = np.diag(main) + np.diag(off, 1) + np.diag(off, -1)
        return np.linalg.solve(a, f)


    def simulate(*, noise=0.0, seed=0, **params):
        p = {**DEFAULTS, **params}
        if set(params) - set(DEFAULTS):
            raise mj.MollijaxError(f"unknown parameter(s) {sorted(set(params) - set(DEFAULTS))}")
        if not isinstance(p["nx"], int) or p["nx"] < 9:
            raise mj.MollijaxError(f"`nx` must be an integer >= 9, got {p['nx']!r}")
        nx, refine = p["nx"], p["refine"]
        nf = (nx - 1) * refine + 1
        xf = np.linspace(0.0, 1.0, nf)
        h = xf[1] - xf[0]
        k_face = conductivity(0.5 * (xf[1:] + xf[:-1]), p["k_amp"])
        sources = {"f1": np.ones_like(xf), "f2": np.sin(np.pi * xf) + 2 * xf}
        grid = mj.Grid.from_bounds((nx,), (0.0,), (1.0,), axes=("x",))
        clean, known = {}, {}
        for i, (name, f) in enumerate(sources.items(), start=1):
            u = np.zeros(nf)
            u[1:-1] = _solve(k_face, f[1:-1], h)
            clean[f"u{i}"] = u[::refine]
            known[name] = f[::refine]
        rng = np.random.default_rng(seed)
        data = {k: v + noise * v.std() * rng.standard_normal(v.shape) for k, v in clean.items()}
        truth = {"k": conductivity(grid.coords("x"), p["k_amp"])}
        return mj.Dataset(grid, data, known=known, truth=truth, clean=clean, params=p)


    def flux_residual(u, f):
        return lambda s: -s.d(s.k * s.d(getattr(s, u), "x"), "x") - getattr(s, f)


    residuals = {"one": flux_residual("u1", "f1"), "two": flux_residual("u2", "f2")}


    def conditions(dataset):
        return [mj.Condition(u, {"x": i}, 0.0) for u in STATE for i in (0, -1)]
''')

CONFIG = textwrap.dedent('''
    [problem]
    file = "my_pde.py"
    nx = 81

    [data]
    noise = 0.0

    [derivatives]
    method = "mollifier"
    eps = 0.05

    [unknowns.k]
    representation = "grid"
    init = 1.0

    [regularisers.k]
    smooth = 1e-6

    [optimiser]
    learning_rate = 0.05
    steps = 800
    chunk = 400
''')


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "my_pde.py").write_text(PDE)
    (tmp_path / "run.toml").write_text(CONFIG)
    return tmp_path


def test_users_own_pde_recovered_through_mollijax_run(user_dir):
    out = user_dir / "out"
    assert cli.main(["run", str(user_dir / "run.toml"), "--out", str(out), "--quiet",
                     "--uncertainty", "none"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["problem"] == "my_pde" and metrics["status"] == "completed"
    err = metrics["errors"]["k"]
    start = metrics["initial_errors"]["k"]["rel_l2"]
    assert err["rel_l2"] < 0.01, err  # measured 0.0038 (81 nodes, clean data, 800 steps)
    assert err["rel_l2"] < 0.1 * start and err["corr"] > 0.99
    with np.load(out / "fields.npz") as fields:
        assert fields["k"].shape == (81,)


def test_users_pde_from_a_subprocess(user_dir):
    # the installed entry point, in a fresh interpreter, from the config's own folder
    proc = subprocess.run(
        [sys.executable, "-m", "mollijax", "run", "run.toml", "--steps", "5", "--out", "o",
         "--quiet"],
        cwd=user_dir, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((user_dir / "o" / "metrics.json").read_text())["steps"] == 5


# the same equation for measured data: no simulator, so no `simulate` and no `DEFAULTS`
MEASURED = textwrap.dedent('''
    """-(k(x) u')' = f on [0, 1], u(0) = u(1) = 0, for measurements: recover k(x) from u."""

    import mollijax as mj

    DESCRIPTION = "-(k u')' = f, two sources, measured: recover k(x) from u1, u2"
    ORDER = 2
    UNKNOWNS = {"k": {"axes": ("x",), "constraint": "positive", "init": 1.0}}
    STATE = ("u1", "u2")


    def flux_residual(u, f):
        return lambda s: -s.d(s.k * s.d(getattr(s, u), "x"), "x") - getattr(s, f)


    residuals = {"one": flux_residual("u1", "f1"), "two": flux_residual("u2", "f2")}


    def conditions(dataset):
        return [mj.Condition(u, {"x": i}, 0.0) for u in STATE for i in (0, -1)]
''')


def test_a_problem_file_without_a_simulator_runs_on_data_from_a_file(user_dir):
    data = mj.load_problem(str(user_dir / "my_pde.py")).simulate(nx=81)
    np.savez(user_dir / "measured.npz", **data.data, **data.known, k=data.truth["k"])
    (user_dir / "measured_pde.py").write_text(MEASURED)
    body = CONFIG.split("[derivatives]", 1)[1]
    (user_dir / "measured.toml").write_text(
        '[problem]\nfile = "measured_pde.py"\n\n[data]\nsource = "file"\n'
        'path = "measured.npz"\nfields = { u1 = "u1", u2 = "u2" }\n'
        'known = { f1 = "f1", f2 = "f2" }\ntruth = { k = "k" }\naxes = ["x"]\n'
        "spacing = [0.0125]\n\n[derivatives]" + body)
    out = user_dir / "out"
    assert cli.main(["run", str(user_dir / "measured.toml"), "--out", str(out), "--quiet",
                     "--uncertainty", "none", "--no-plots"]) == 0
    err = json.loads((out / "metrics.json").read_text())["errors"]["k"]
    assert err["rel_l2"] < 0.01, err  # as the simulated run of the same data and settings


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: (d / "run.toml").write_text(CONFIG.replace("my_pde.py", "missing.py")),
         r"\[problem\] file = 'missing.py'.*does not exist"),
        (lambda d: (d / "my_pde.py").write_text(PDE.replace("residuals = {", "_res = {")),
         r"my_pde\.py: a problem file must define .*missing \['residuals'\]"),
        (lambda d: (d / "run.toml").write_text(CONFIG.replace("nx = 81", "nx = 81.5")),
         r"run\.toml: \[problem\] key 'nx' must be an integer"),
        (lambda d: (d / "run.toml").write_text(CONFIG.replace("nx = 81", "nx = 81\nny = 3")),
         r"run\.toml: \[problem\] unknown key\(s\) \['ny'\] for problem 'my_pde'"),
        (lambda d: (d / "run.toml").write_text(CONFIG.replace("nx = 81", "nx = 5")),
         r"`nx` must be an integer >= 9"),
        (lambda d: (d / "my_pde.py").write_text(PDE.replace("ORDER = 2", "ORDER = 'two'")),
         r"my_pde\.py: `ORDER` must be an integer >= 1"),
        (lambda d: (d / "my_pde.py").write_text(PDE + "\nraise RuntimeError('broken')\n"),
         r"Importing .*my_pde\.py' failed: RuntimeError: broken"),
        (lambda d: (d / "my_pde.py").write_text(PDE.replace("DEFAULTS = {", "_DEF = {")),
         r"my_pde\.py: a problem file with `simulate` must define `DEFAULTS`"),
        (lambda d: ((d / "my_pde.py").write_text(MEASURED),
                    (d / "run.toml").write_text(CONFIG.replace("nx = 81\n", ""))),
         r'\[data\] source = "simulate" \(the default\), but the problem file \'my_pde\' '
         r"defines no `simulate`"),
    ],
)
def test_bad_user_files_are_named_errors(user_dir, capsys, change, message):
    change(user_dir)
    code = cli.main(["run", str(user_dir / "run.toml"), "--out", str(user_dir / "o"),
                     "--quiet", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert __import__("re").search(message, err), err


def test_a_problem_file_imports_a_helper_module_beside_it(user_dir):
    # as with `python my_pde.py`: a module next to the file is importable while it loads,
    # whatever the working directory; sys.path is left as it was
    (user_dir / "my_pde_helpers.py").write_text(
        "def conductivity(x, amp):\n    return 2.0 + amp * x\n")
    (user_dir / "my_pde_sibling.py").write_text(
        PDE + "\nfrom my_pde_helpers import conductivity  # noqa: E402, F811\n")
    before = list(sys.path)
    module = mj.load_problem(str(user_dir / "my_pde_sibling.py"))
    assert sys.path == before
    assert module.conductivity(np.array([0.5]), 1.0) == pytest.approx([2.5])
