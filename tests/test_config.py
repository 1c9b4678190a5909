"""Run configurations: the shipped files parse, bad keys and values are named at parse time."""

import pathlib

import pytest

import mollijax as mj
from mollijax.config import (
    ConfigError,
    from_dict,
    load_config,
    shipped_config,
    shipped_configs,
    shipped_problems,
)

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(p.stem for p in CONFIGS.glob("*.toml") if not p.stem.startswith("theory_"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_parse(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    assert cfg.problem in shipped_problems()
    assert pathlib.Path(cfg.problem_file).is_file()


def test_every_shipped_problem_has_its_default_run():
    assert set(shipped_problems()) <= set(shipped_configs())
    for name in shipped_problems():
        assert shipped_config(name).problem == name


def test_default_run_is_the_heat1d_run():
    default = load_config(CONFIGS / "default.toml").to_dict()
    heat1d = load_config(CONFIGS / "heat1d.toml").to_dict()
    default.pop("source"), heat1d.pop("source")
    assert default == heat1d


def _write(tmp_path, text):
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_table_and_key(tmp_path):
    path = _write(tmp_path, '[problem]\nname = "forcing"\n[optimiser]\nlr = 0.1\n')
    with pytest.raises(ConfigError, match=r"x\.toml: \[optimiser\] unknown key 'lr'; expected"):
        load_config(path)


F = '[problem]\nname = "forcing"\n'


@pytest.mark.parametrize(
    "text, pattern",
    [
        (F + '[optimiser]\nsteps = "many"\n', r"\[optimiser\] key 'steps' must be an integer"),
        (F + '[optimiser]\nsteps = true\n', r"'steps'"),
        (F + '[optimiser]\nsteps = 10.5\n', r"'steps' must be an integer"),
        (F + '[optimiser]\nsteps = 0\n', r"'steps' must be an integer >= 1"),
        (F + '[optimiser]\nlearning_rate = -0.1\n', r"'learning_rate' must be a finite number > 0"),
        (F + '[optimiser]\nlearning_rate = nan\n', r"'learning_rate' must be a finite number > 0"),
        (F + '[optimiser]\nname = "sgd"\n', r"'name' must be a optimiser name"),
        (F + '[optimiser]\nseed = -1\n', r"\[optimiser\] key 'seed' must be an integer from 0 to 4294967295"),
        (F + '[data]\nseed = -1\n', r"\[data\] key 'seed' must be an integer from 0 to 4294967295"),
        (F + '[data]\nnoise = -0.01\n', r"\[data\] key 'noise' must be a finite number >= 0"),
        (F + '[derivatives]\nmethod = "magic"\n', r"'method' must be a derivatives name"),
        (F + '[derivatives]\nkernel = "gauss"\n', r"'kernel' must be a kernel name"),
        (F + '[derivatives]\neps = "wide"\n', r"\[derivatives\] key 'eps' must be \"auto\""),
        (F + '[derivatives]\neps = -0.1\n', r"key 'eps' must be"),
        (F + '[derivatives]\neps = [0.1, 0.0]\n', r"key 'eps' must be"),
        (F + '[derivatives]\nboundary = "mirror"\n', r"key 'boundary' must be a boundary name"),
        (F + '[unknowns.lam]\nrepresentation = "spline"\n', r"'representation' must be one of"),
        (F + '[unknowns.lam]\nconstraint = "huge"\n', r"'constraint' must be 'free'"),
        (F + '[unknowns.lam]\nconstraint = ["bounded", 1.0, 0.0]\n', r"'constraint' must be"),
        (F + '[unknowns.lam]\nconstraint = "positive"\ninit = -1.0\n', r"violates the constraint"),
        (F + '[unknowns.lam]\nwidth = 8\n', r"'width' is a network option"),
        (F + '[unknowns.lam]\nrepresentation = "mlp"\nwidth = 0\n',
         r"'width' must be an integer >= 1"),
        (F + '[state]\naccuracy = 4\n', r"'accuracy' applies only to representation = \"evolve\""),
        (F + '[regularisers.lam]\nsmooth = -1.0\n',
         r"\[regularisers\.lam\] key 'smooth' must be a finite number >= 0"),
        (F + '[regularisers.lam]\nsmoothh = 1.0\n', r"unknown key 'smoothh'"),
        (F + '[regularisers.lam]\n"se:-0.2" = 1.0\n',
         r"\[regularisers\.lam\] key 'se:-0\.2': a squared-exponential prior is written "
         r"'se:<length>' with a length > 0"),
        (F + '[regularisers.lam]\nse = 1.0\n', r"key 'se': a squared-exponential prior"),
        (F + '[regularisers.lam]\n"se:wide" = 1.0\n', r"key 'se:wide': a squared-exponential"),
        (F + '[regularisers.lam]\nsmooth = "autoo"\n',
         r"\[regularisers\.lam\] key 'smooth' must be a finite number >= 0 or \"auto\".*"
         r"got 'autoo'"),
        (F + '[regularisers.lam]\nsmooth = -1e-4\n',
         r"\[regularisers\.lam\] key 'smooth' must be a finite number >= 0 or \"auto\""),
        (F + '[regularisers.lam]\ntv = "auto"\n',
         r"\[regularisers\.lam\] key 'tv' must be a finite number >= 0 \(\"auto\" is for "
         r"smooth only"),
        (F + '[weights]\n"residual:pde" = "auto"\n',
         r"\[weights\] key 'residual:pde' must be a finite number >= 0, got 'auto'"),
        (F + '[weights]\n"data" = nan\n', r"\[weights\] key 'data' must be a finite number >= 0"),
        (F + '[batch]\ndevices = -2\n', r"'devices' must be an integer >= 0"),
        (F + '[optimiser]\ntol = 0.0\n', r"\[optimiser\] key 'tol' must be a number > 0 and < 1"),
        (F + '[uncertainty]\nkind = "bayes"\n',
         r"\[uncertainty\] key 'kind' must be one of \('mse', 'posterior'\)"),
        (F + '[uncertainty]\nrank = 0\n',
         r"\[uncertainty\] key 'rank' must be \"auto\", \"full\" or an integer >= 1"),
        (F + '[uncertainty]\nrank = "most"\n',
         r"\[uncertainty\] key 'rank' must be \"auto\", \"full\" or an integer >= 1"),
        (F + '[optimiser]\ntol = "small"\n', r"\[optimiser\] key 'tol' must be a number"),
        (F + '[state]\nrepresentation = "solve"\nsolver = "cg"\n',
         r"\[state\] key 'solver' must be one of \('auto', 'direct', 'gmres', 'bicgstab'\)"),
        (F + '[state]\nsolver = "direct"\n',
         r"'solver' applies only to representation = \"solve\" or \"auto\""),
        (F + '[state]\nrepresentation = "evolve"\nintegrator = "euler"\n',
         r"\[state\] key 'integrator' must be one of \('rk4', 'propagator'\)"),
        (F + '[state]\nintegrator = "propagator"\n',
         r"'integrator' applies only to representation = \"evolve\" or \"auto\""),
        (F + '[state]\nmollified_data = true\n',
         r"'mollified_data' applies to a network state; representation 'data'"),
        (F + '[state]\nrepresentation = "mlp"\nmollified_data = "yes"\n',
         r"\[state\] key 'mollified_data' must be"),
        ('[problem]\nname = "heat1d"\n[state]\nrepresentation = "solve"\n',
         r"representation = \"solve\": problem 'heat1d' evolves in time .* use representation "
         r"= \"evolve\""),
        ('[problem]\nname = "nope"\n', r"unknown problem 'nope'; shipped problems are"),
        ('[problem]\nname = "forcing"\nfile = "x.py"\n', r"either file = .* not both"),
        (F + 'nx = 3\n', r"\[problem\] unknown key\(s\) \['nx'\]"),
        (F + 'nt = 41.5\n', r"\[problem\] key 'nt' must be an integer \(its default is 201\)"),
        (F + 'forcing = 3\n', r"\[problem\] key 'forcing' must be a string"),
        (F + 't_final = "long"\n', r"\[problem\] key 't_final' must be a finite number"),
        (F + '[unknowns.k]\ninit = 1.0\n', r"\[unknowns\.k\] is not an unknown"),
        (F + '[solver]\nx = 1\n', r"unknown table\(s\) \['solver'\]"),
        ('[data]\nnoise = 0.1\n', r"\[problem\] needs file"),
        ('[problem\nname = 1', r"not valid TOML"),
    ],
)
def test_bad_configs_are_named(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(_write(tmp_path, text))


def test_a_network_state_may_fit_its_mollified_output():
    cfg = from_dict({"problem": {"name": "forcing"},
                     "state": {"representation": "mlp", "mollified_data": True}})
    assert cfg.state.mollified_data is True


def test_numbers_accept_integers_and_missing_file():
    cfg = from_dict({"problem": {"name": "forcing", "t_final": 2},
                     "optimiser": {"learning_rate": 1}})
    assert cfg.optimiser.learning_rate == 1.0 and isinstance(cfg.optimiser.learning_rate, float)
    assert cfg.params["t_final"] == 2.0 and isinstance(cfg.params["t_final"], float)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/file.toml")
    with pytest.raises(ConfigError, match="No shipped configuration 'nope'"):
        shipped_config("nope")


def test_evolve_configs_parse_and_bad_state_keys_are_named(tmp_path):
    for name in ("heat1d_evolve", "heat1d_evolve_small"):
        cfg = load_config(CONFIGS / f"{name}.toml")
        assert cfg.state.representation == "evolve" and cfg.state.accuracy == 4
        assert cfg.unknowns["D"].output_scale == 0.01
    path = _write(tmp_path, '[problem]\nname = "heat1d"\n[state]\nrepresentation = "evolve"\n'
                            'accuracy = "high"\n')
    with pytest.raises(ConfigError, match=r"\[state\] key 'accuracy' must be an integer"):
        load_config(path)
    path = _write(tmp_path, '[problem]\nname = "heat1d"\n[state]\nrepresentation = "evolve"\n'
                            'accuracy = 3\n')
    with pytest.raises(ConfigError, match=r"'accuracy' must be an even integer >= 2"):
        load_config(path)


def test_evolve_integrator_option_builds_the_propagator_or_rk4():
    from mollijax import cli

    def prepared(state):
        cfg = from_dict({"problem": {"name": "heat1d", "nx": 21, "nt": 11},
                         "state": {"representation": "evolve", **state}})
        _, _, problem, fields = cli.prepare(cfg)
        return problem.prepare(fields).evolution.integrator

    # heat1d's evolution is linear with D constant in time: exact propagator
    prop = prepared({"integrator": "propagator"})
    assert isinstance(prop, mj.Propagator) and prop.squarings is not None
    assert prop.max_nodes == mj.config.PROPAGATOR_NODES
    # the default, and substeps beside the propagator: RK4 (its fallback takes them)
    assert isinstance(prepared({}), mj.RK4)
    assert prepared({"integrator": "rk4", "substeps": 3}) == mj.RK4(3)
    assert prepared({"integrator": "propagator", "substeps": 3}).fallback == mj.RK4(3)


def test_auto_integrator_takes_the_propagator_on_one_spatial_axis_only():
    from mollijax.config import StateConfig, auto_integrator

    assert auto_integrator(StateConfig(), ("x", "t")) == "propagator"
    assert auto_integrator(StateConfig(), ("t", "x")) == "propagator"
    # two spatial axes: RK4 is cheaper there (None: the build's default, RK4)
    assert auto_integrator(StateConfig(), ("x", "y", "t")) is None
    # the configuration's choice wins, and substeps mean RK4
    assert auto_integrator(StateConfig(integrator="rk4"), ("x", "t")) == "rk4"
    assert auto_integrator(StateConfig(integrator="propagator"), ("x", "y", "t")) == "propagator"
    assert auto_integrator(StateConfig(substeps=3), ("x", "t")) is None


def test_problem_file_is_relative_to_the_config(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.py").write_text(
        "import mollijax as mj\nDESCRIPTION = 'x'\nORDER = 1\nDEFAULTS = {'n': 3}\n"
        "UNKNOWNS = {'c': {'axes': ()}}\nSTATE = ('u',)\nresiduals = {'pde': lambda s: s.u}\n"
        "def simulate(*, noise=0.0, seed=0, **p):\n    raise NotImplementedError\n"
    )
    cfg = load_config(_write(tmp_path, '[problem]\nfile = "sub/mine.py"\nn = 4\n'))
    assert cfg.problem == "mine" and cfg.params == {"n": 4}
    assert pathlib.Path(cfg.problem_file) == (tmp_path / "sub" / "mine.py").resolve()


def test_only_problem_and_data_default_to_the_auto_state():
    cfg = from_dict({"problem": {"name": "heat1d"}, "data": {"noise": 0.05}})
    assert cfg.state.representation == "auto"
    assert from_dict({"problem": {"name": "heat1d"}}).state.representation == "auto"
    # any other table keeps the single-estimator default, and "auto" stays explicit-able
    cfg = from_dict({"problem": {"name": "heat1d"}, "optimiser": {"steps": 5}})
    assert cfg.state.representation == "data"
    cfg = from_dict({"problem": {"name": "heat1d"}, "optimiser": {"tol": 1e-9},
                     "state": {"representation": "auto"}})
    assert cfg.state.representation == "auto" and cfg.optimiser.tol == 1e-9


def test_solve_state_options_and_refusals(tmp_path):
    cfg = from_dict({"problem": {"name": "diffusion_reaction"},
                     "state": {"representation": "solve", "solver": "gmres", "accuracy": 4}})
    assert cfg.state.solver == "gmres" and cfg.state.accuracy == 4
    (tmp_path / "nocond.py").write_text(
        "import mollijax as mj\nDESCRIPTION = 'x'\nORDER = 2\nDEFAULTS = {}\n"
        "UNKNOWNS = {'c': {'axes': ()}}\nSTATE = ('u',)\nresiduals = {'pde': lambda s: s.u}\n"
        "def simulate(*, noise=0.0, seed=0, **p):\n    raise NotImplementedError\n"
    )
    with pytest.raises(ConfigError, match=r"'nocond' defines no `conditions\(dataset\)`"):
        from_dict({"problem": {"file": "nocond.py"}, "state": {"representation": "solve"}},
                  base=tmp_path)


# ------------------------------------------------------------- regulariser weight "auto"
AUTO = {"problem": {"name": "poisson_coefficient", "nx": 17, "ny": 15},
        "data": {"noise": 0.01},
        "unknowns": {"lam": {"representation": "grid", "constraint": "positive", "init": 2.0}},
        "state": {"representation": "data"},
        "optimiser": {"steps": 3, "chunk": 3}}


def _with(regularisers):
    return from_dict({**AUTO, "regularisers": regularisers})


def test_auto_weight_parses_and_equals_the_rule():
    import numpy as np

    from mollijax import cli

    cfg = _with({"lam": {"smooth": "auto"}})
    assert cfg.regularisers == {"lam": {"smooth": "auto"}}
    said = []
    _, dataset, problem, fields = cli.prepare(cfg, log=said.append)
    chosen = {t.name: float(t.weight) for t in problem.terms if t.name.startswith("reg:")}
    # the rule, computed here from its definition: 1e-3 x the residual loss at the initial
    # guess (lam = 2 everywhere, no regulariser) x length^2 / lam0^2, length = n h of the
    # longer axis
    _, _, bare, start = cli.prepare(_with({}))
    res0 = sum(float(v) for k, v in bare.loss_terms(start).items() if k.startswith("residual:"))
    assert res0 > 0
    length = max(n * h for n, h in zip(dataset.grid.shape, dataset.grid.spacing, strict=True))
    expected = 1e-3 * res0 * length**2 / 2.0**2
    np.testing.assert_allclose(chosen["reg:lam:smooth"], expected, rtol=1e-12)
    assert len(said) == 1 and "lam" in said[0] and f"{expected:.3g}" in said[0]
    # a number stays the number
    fixed = cli.prepare(_with({"lam": {"smooth": 0.25}})).problem
    assert {t.name: float(t.weight) for t in fixed.terms}["reg:lam:smooth"] == 0.25


def test_auto_weight_is_recorded_by_a_run(tmp_path, capsys):
    import json

    from mollijax import cli

    path = _write(tmp_path, '[problem]\nname = "forcing"\nnt = 41\n[data]\nnoise = 0.01\n'
                            '[unknowns.lam]\nrepresentation = "grid"\ninit = 0.5\n'
                            '[regularisers.lam]\nsmooth = "auto"\n[optimiser]\nsteps = 2\n'
                            'chunk = 2\n')
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--no-plots",
                     "--uncertainty", "none"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    w = metrics["weights"]["reg:lam:smooth"]
    assert w > 0
    assert f"smoothness weight lam {w:.3g}" in capsys.readouterr().out


def test_auto_weight_needs_an_equation_error_state():
    from mollijax import cli

    cfg = from_dict({"problem": {"name": "heat1d", "nx": 11, "nt": 11},
                     "unknowns": {"D": {"representation": "mlp"}},
                     "state": {"representation": "evolve"},
                     "regularisers": {"D": {"smooth": "auto"}}})
    with pytest.raises(mj.MollijaxError, match=r"\['reg:D:smooth'\] = \"auto\" .* "
                                               r"output-error state 'evolve'"):
        cli.prepare(cfg)


def test_a_squared_exponential_key_is_normalised_to_its_term_name():
    # "se:0.20" and the term it builds carry one name, so that weights set by name reach it
    cfg = from_dict({"problem": {"name": "diffusion_reaction"},
                     "regularisers": {"k": {"se:0.20": 2.0}}})
    assert cfg.regularisers == {"k": {"se:0.2": 2.0}}
    term = mj.SquaredExponential("k", 2.0, length=0.20)
    assert term.name == "reg:k:" + next(iter(cfg.regularisers["k"]))

