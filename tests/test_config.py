"""Run configurations: the shipped files parse, defaults match them, bad keys are named."""

import pathlib

import pytest

from mollijax.config import ConfigError, default_config, from_dict, load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
MINE = ("heat1d", "forcing", "poisson_coefficient", "diffusion_reaction")


@pytest.mark.parametrize("name", MINE)
def test_shipped_config_is_the_builtin_default(name):
    from_file = load_config(CONFIGS / f"{name}.toml").to_dict()
    builtin = default_config(name).to_dict()
    from_file.pop("source"), builtin.pop("source")
    assert from_file == builtin
    load_config(CONFIGS / f"{name}_small.toml")


def _write(tmp_path, text):
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_table_and_key(tmp_path):
    path = _write(tmp_path, '[problem]\nname = "forcing"\n[optimiser]\nlr = 0.1\n')
    with pytest.raises(ConfigError, match=r"x\.toml: \[optimiser\] unknown key 'lr'; expected"):
        load_config(path)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ('[problem]\nname = "forcing"\n[optimiser]\nsteps = "many"\n', r"\[optimiser\] key 'steps' must be a integer"),
        ('[problem]\nname = "forcing"\n[optimiser]\nsteps = true\n', r"'steps'"),
        ('[problem]\nname = "forcing"\n[derivatives]\nmethod = "magic"\n', r"'method' must be one of"),
        ('[problem]\nname = "nope"\n', r"Unknown problem 'nope'"),
        ('[problem]\nname = "forcing"\nnx = 3\n', r"\[problem\] unknown key\(s\) \['nx'\]"),
        ('[problem]\nname = "forcing"\n[unknowns.k]\ninit = 1.0\n', r"\[unknowns\.k\] is not an unknown"),
        ('[problem]\nname = "forcing"\n[regularisers.lam]\nsmoothh = 1.0\n', r"unknown key 'smoothh'"),
        ('[problem]\nname = "forcing"\n[solver]\nx = 1\n', r"unknown table\(s\) \['solver'\]"),
        ('[data]\nnoise = 0.1\n', r"\[problem\] needs name"),
        ('[problem\nname = 1', r"not valid TOML"),
    ],
)
def test_bad_configs_are_named(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(_write(tmp_path, text))


def test_numbers_accept_integers_and_missing_file():
    cfg = from_dict({"problem": {"name": "forcing"}, "optimiser": {"learning_rate": 1}})
    assert cfg.optimiser.learning_rate == 1.0 and isinstance(cfg.optimiser.learning_rate, float)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/file.toml")


def test_evolve_configs_parse_and_bad_state_keys_are_named(tmp_path):
    for name in ("heat1d_evolve", "heat1d_evolve_small"):
        cfg = load_config(CONFIGS / f"{name}.toml")
        assert cfg.state.representation == "evolve" and cfg.state.accuracy == 4
        assert cfg.unknowns["D"].output_scale == 0.01
    path = _write(tmp_path, '[problem]\nname = "heat1d"\n[state]\nrepresentation = "evolve"\n'
                            'accuracy = "high"\n')
    with pytest.raises(ConfigError, match=r"\[state\] key 'accuracy' must be a integer"):
        load_config(path)
