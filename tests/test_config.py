import dataclasses
from pathlib import Path

import pytest
import tomllib

from coopt_flwr.config import CONF_DIR, DEFAULTS, Settings, conf_dir, load_mix, prior_entries

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_run_config_matches_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert list(table) == list(DEFAULTS)  # the same keys, in the same order
    for key, value in DEFAULTS.items():  # the same values, of the same type (1 == 1.0 == True)
        assert (type(table[key]), table[key]) == (type(value), value), key


def test_settings_fields_have_no_defaults_of_their_own():
    # DEFAULTS is the one source: from_config sets every field.
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Settings))


def test_defaults_build_valid_settings(tmp_path):
    s = Settings.from_config({}, {"output-dir": str(tmp_path)})
    assert s.output_dir == tmp_path.resolve() and s.output_dir.is_absolute()
    assert len(s.priors) == 4 and s.prior_for(5) == s.priors[1]


def test_default_output_dir_is_absolute_and_timestamped():
    s = Settings.from_config({})
    assert s.output_dir.is_absolute() and s.output_dir.parent.name == "outputs"


@pytest.mark.parametrize(
    "override,match",
    [
        ({"shared-fraction": 0.0}, "shared-fraction"),
        ({"shared-fraction": 1.5}, "shared-fraction"),
        ({"target-dim": 0}, "target-dim"),
        ({"ridge": -1.0}, "ridge"),
        ({"ridge": "strong"}, "ridge must be a number >= 0 or 'auto'"),
        ({"ridge": "inf"}, "ridge must be a finite number"),
        ({"shard-max-residual": 0}, "shard-max-residual must be > 0"),
        ({"max-reassign": -1}, "max-reassign"),
        ({"priors": " , "}, "priors"),
        ({"no-such-key": 1}, "unknown run-config keys"),
        ({"prior-mix": "nope"}, "unknown prior mix"),
        ({"redundancy": 0}, "redundancy must be an integer >= 1"),
        ({"redundancy": 1.5}, "redundancy must be an integer >= 1"),
        ({"redundancy": "two"}, "redundancy must be an integer >= 1"),
        ({"redundancy": True}, "redundancy must be an integer >= 1"),
        ({"redundancy": 2, "data-mode": "local"}, "redundancy 2 needs data-mode 'platform'"),
        ({"ensemble-weighting": "median"}, "ensemble-weighting must be one of"),
        ({"anchor-rule": "best"}, "anchor-rule must be one of"),
        ({"alignment": "lstsq"}, "alignment must be one of"),
        ({"standardize-targets": "maybe"}, "standardize-targets must be true or false"),
    ],
)
def test_bad_config_is_a_clear_error(override, match):
    with pytest.raises(ValueError, match=match):
        Settings.from_config({}, override)


def test_named_mixes_load():
    names = sorted(p.stem for p in (CONF_DIR / "mix").glob("*.yaml"))
    assert "default" in names
    for name in names:
        assert all(isinstance(p, str) and p for p in load_mix(name))
    assert Settings.from_config({"prior-mix": "default"}).priors == tuple(load_mix("default"))


def test_default_mix_file_matches_default_priors():
    assert ",".join(load_mix("default")) == DEFAULTS["priors"]
    assert Settings.from_config({}).priors == tuple(load_mix("default"))


def test_priors_may_be_a_string_or_a_list():
    text = "a?size=3, b > c ,human"
    entries = ["a?size=3", "b > c", "human"]
    assert prior_entries(text) == entries
    assert prior_entries(entries) == entries
    assert prior_entries(["a?size=3", ["b", "c"], "human"]) == entries  # a path as a list of specs
    s = Settings.from_config({}, {"priors": entries})
    assert s.priors == tuple(entries) and s.paths[1] == ("b", "c")
    assert s == Settings.from_config({}, {"priors": text, "output-dir": str(s.output_dir)})
    with pytest.raises(ValueError, match="priors"):
        Settings.from_config({}, {"priors": ["a", 3]})
    with pytest.raises(ValueError, match="priors"):
        Settings.from_config({}, {"priors": []})


def test_conf_dir_holds_the_mixes():
    assert conf_dir() == CONF_DIR and (CONF_DIR / "mix" / "default.yaml").is_file()


def test_bad_mix_file(tmp_path):
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "bad.yaml").write_text("priors: 3\n")
    with pytest.raises(ValueError, match="non-empty list"):
        load_mix("bad", conf_dir=tmp_path)


def test_table5_mixes_exist_and_extend_the_diverse_mix():
    diverse = load_mix("diverse")
    for name, kind in (("diverse-weak", "weak:"), ("diverse-human", "human")):
        mix = load_mix(name)
        assert mix[: len(diverse)] == diverse and len(mix) > len(diverse)
        assert all(p.startswith(kind) for p in mix[len(diverse) :])
    assert all(p.startswith("weak:") for p in load_mix("weak"))


def test_mix_entries_may_be_evolution_paths(tmp_path):
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "evo.yaml").write_text("priors:\n  - - a\n    - b?size=3\n  - c > d\n  - e\n")
    assert load_mix("evo", conf_dir=tmp_path) == ["a > b?size=3", "c > d", "e"]
    (tmp_path / "mix" / "bad.yaml").write_text("priors:\n  - [a, 3]\n")
    with pytest.raises(ValueError, match="evolution paths"):
        load_mix("bad", conf_dir=tmp_path)


def test_ensemble_and_alignment_keys_parse():
    s = Settings.from_config({})
    assert (s.redundancy, s.ensemble_weighting, s.anchor_rule, s.alignment, s.standardize_targets) == (
        1,
        "mean",
        "uniformity",
        "ridge",
        False,
    )
    s = Settings.from_config(
        {},
        {
            "redundancy": "3",  # --run-config may give numbers as strings
            "ensemble-weighting": "residual",
            "anchor-rule": "consensus",
            "alignment": "procrustes",
            "standardize-targets": "true",
        },
    )
    assert (s.redundancy, s.ensemble_weighting, s.anchor_rule, s.alignment, s.standardize_targets) == (
        3,
        "residual",
        "consensus",
        "procrustes",
        True,
    )
    assert Settings.from_config({}, {"data-mode": "local", "redundancy": 1}).redundancy == 1


@pytest.mark.parametrize("value,want", [("auto", None), ("AUTO", None), (0.5, 0.5), ("0.25", 0.25), (0, 0.0)])
def test_ridge_is_a_strength_or_auto(value, want):
    assert Settings.from_config({}, {"ridge": value}).ridge == want
