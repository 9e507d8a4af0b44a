import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from coopt_flwr import config as config_module
from coopt_flwr.config import (
    BUILTIN_PRIORS,
    CONF_DIR,
    DEFAULTS,
    MIN_SHARED_SAMPLES,
    ConfigError,
    Settings,
    check_data_size,
    check_node_prior,
    check_run_config,
    conf_dir,
    known_priors,
    load_mix,
    prior_entries,
    shared_set_size,
)
from coopt_flwr.protocol.evolution import parse_path
from coopt_flwr.registry.prior_options import BUILTIN_PRIOR_OPTIONS, check_prior_spec

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


# ------------------------------------------------------------------ bad input: one clear error
@pytest.mark.parametrize(
    "override,match",
    [
        ({"seed": -1}, "seed must be an integer between 0 and 4,294,967,295, got -1"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"target-dim": 1e9}, "target-dim must be an integer between 1 and 65,536"),
        ({"target-dim": "1e9"}, "target-dim must be an integer between 1 and 65,536"),
        ({"target-dim": 65_537}, "target-dim must be an integer between 1 and 65,536"),
        ({"target-dim": 2.5}, "target-dim must be an integer"),
        ({"num-rounds": "two"}, "num-rounds must be an integer >= 1, got 'two'"),
        ({"shared-fraction": "half"}, "shared-fraction must be a number, got 'half'"),
        ({"shared-fraction": float("nan")}, "shared-fraction must lie in"),
        ({"step-timeout": float("nan")}, "step-timeout must be > 0"),
        ({"upload-max-samples": 0}, "upload-max-samples must be an integer >= 1"),
        ({"priors": "a >> b"}, "priors: evolution path"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        Settings.from_config({}, override)


@pytest.mark.parametrize(
    "value,want", [(64, 64), (64.0, 64), ("64", 64), ("1e3", 1000), (" 7 ", 7), (65_536, 65_536)]
)
def test_integers_may_come_as_integral_floats_or_strings(value, want):
    assert Settings.from_config({}, {"target-dim": value}).target_dim == want


def test_every_check_error_is_a_value_error_for_existing_callers():
    assert issubclass(ConfigError, ValueError)


def test_a_valid_run_config_passes_the_full_check_without_creating_anything(tmp_path):
    out = tmp_path / "a" / "b"
    settings = check_run_config({}, {"output-dir": str(out), "priors": "human > timm:resnet10t,weak:x"})
    assert settings.output_dir == out and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "override,match",
    [
        ({"priors": "efficientnet_lit0?size=64,human"}, "unknown prior 'efficientnet_lit0'"),
        ({"priors": "efficientnet_lit0?size=64"}, "did you mean efficientnet_lite0"),
        ({"priors": "human,human > nosuch:x"}, "unknown prior 'nosuch' in 'nosuch:x'"),
        ({"prior-mix": "default", "priors": "ignored"}, None),
        ({"priors": "human?fraction"}, "priors: bad option"),
        ({"dataset": "nosuch"}, "dataset: unknown data set 'nosuch'"),
        ({"dataset": "digit"}, "did you mean digits"),
        ({"dataset": "digits?"}, "dataset: spec 'digits?' has an empty option list"),
    ],
)
def test_names_are_resolved_against_the_registries(tmp_path, override, match):
    config = {"output-dir": str(tmp_path), **override}
    if match is None:
        check_run_config({}, config)
        return
    with pytest.raises(ConfigError, match=re.escape(match)):
        check_run_config({}, config)


@pytest.mark.parametrize(
    "priors,message",
    [
        (
            "human?fraction=2",
            "priors: option 'fraction' of spec 'human?fraction=2' must lie in (0, 1], got 2",
        ),
        (
            "human,efficientnet_lite0?size=-3",
            "priors: option 'size' of spec 'efficientnet_lite0?size=-3' must lie in [1, 4096], got -3",
        ),
        (
            "timm:resnet18?sizee=64",
            "priors: unknown option 'sizee' in spec 'timm:resnet18?sizee=64'; did you mean size? "
            "allowed options: checkpoint, pretrained, size",
        ),
        ("human?fraction=abc", "priors: option 'fraction' of spec 'human?fraction=abc' must be a number"),
        ("human > human?classes=0", "priors: option 'classes' of spec 'human?classes=0' must lie in"),
        ("weak:resnet18?pretrained=true", "priors: spec 'weak:resnet18?pretrained=true': weak priors are"),
        ("timm?size=32", "priors: spec 'timm?size=32' needs a timm architecture"),
        ("human:x", "priors: spec 'human:x': 'human' takes no ':' argument"),
    ],
)
def test_prior_options_are_checked_before_any_node_work(tmp_path, priors, message):
    with pytest.raises(ConfigError) as info:
        check_run_config({}, {"output-dir": str(tmp_path), "priors": priors})
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def _conf_prior_specs() -> dict[str, list[str]]:
    """Every prior spec the checkout's configs name: each stage of every ``priors`` entry of a
    mix or profile (``conf/**/*.yaml``) and every single-prior row (``singles``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        entries = list(data.get("priors") or []) + list((data.get("singles") or {}).values())
        specs = []
        for entry in entries:
            specs += list(entry) if isinstance(entry, list) else list(parse_path(entry))
        if specs:
            found[str(path.relative_to(CONF_DIR))] = specs
    return found


CONF_PRIOR_SPECS = _conf_prior_specs()


def test_the_configs_name_priors_in_every_mix_file():
    mixes = {f"mix/{p.name}" for p in (CONF_DIR / "mix").glob("*.yaml")}
    assert len(mixes) >= 12 and mixes <= set(CONF_PRIOR_SPECS)


@pytest.mark.parametrize("where", sorted(CONF_PRIOR_SPECS))
def test_every_prior_spec_of_every_config_passes_its_schema(where, tmp_path, monkeypatch):
    specs = CONF_PRIOR_SPECS[where]
    for spec in specs:
        assert check_prior_spec(spec) is not None, spec  # every built-in has a schema
    if where.startswith("mix/"):
        mix = Path(where).stem
        settings = check_run_config({}, {"prior-mix": mix, "output-dir": str(tmp_path)})
        assert [s for p in settings.paths for s in p] == specs
    # And the platform's torch-free check (the prior registry not loaded) agrees.
    monkeypatch.delitem(sys.modules, "coopt_flwr.registry.priors", raising=False)
    for spec in specs:
        assert check_prior_spec(spec) is not None, spec


def test_the_default_priors_pass_their_schemas(tmp_path):
    settings = check_run_config({}, {"output-dir": str(tmp_path)})
    assert all(check_prior_spec(s) is not None for p in settings.paths for s in p)


def test_prior_options_are_checked_without_torch(tmp_path):
    code = (
        "import sys\n"
        "from coopt_flwr.config import ConfigError, check_run_config\n"
        f"check_run_config({{}}, {{'output-dir': {str(tmp_path)!r}, 'prior-mix': 'diverse-human'}})\n"
        "try:\n"
        f"    check_run_config({{}}, {{'output-dir': {str(tmp_path)!r}, 'priors': 'human?fraction=2'}})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "priors: option 'fraction' of spec 'human?fraction=2' must lie in (0, 1], got 2"
    )


def test_a_node_s_own_prior_is_checked_as_the_run_config_s():
    assert check_node_prior("human?fraction=0.5 > efficientnet_lite0?size=64") == (
        "human?fraction=0.5",
        "efficientnet_lite0?size=64",
    )
    with pytest.raises(ConfigError, match=re.escape("node config 'prior': option 'size' of spec")):
        check_node_prior("human > efficientnet_lite0?size=0")
    with pytest.raises(ConfigError, match=re.escape("node config 'prior': unknown prior 'humn'")):
        check_node_prior("humn")
    with pytest.raises(ConfigError, match=re.escape("node config 'prior': evolution path")):
        check_node_prior("human >> timm:resnet18")


def test_builtin_prior_names_are_the_prior_registry_s():
    from coopt_flwr.registry import priors

    builtin = {
        name
        for name, factory in priors._PRIORS._factories.items()
        if getattr(factory, "func", factory).__module__ == priors.__name__
    }
    assert builtin == set(BUILTIN_PRIORS) == set(BUILTIN_PRIOR_OPTIONS)
    assert set(known_priors()) == set(priors.list_priors())  # loaded: runtime registrations count


def test_an_output_dir_that_is_a_file_or_under_one_is_refused(tmp_path):
    afile = tmp_path / "results.txt"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=rf"output-dir {re.escape(str(afile))} is an existing file"):
        check_run_config({}, {"output-dir": str(afile)})
    with pytest.raises(ConfigError, match=r"cannot be created: .* is a file"):
        check_run_config({}, {"output-dir": str(afile / "run")})


def test_an_output_dir_this_user_cannot_write_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="is not writable"):
        check_run_config({}, {"output-dir": str(tmp_path / "new")})


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            check_run_config({}, {"output-dir": str(locked / "run")})
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("n", [2, 3, 7, 30, 39, 40, 41, 100, 1797])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.125, 0.5, 0.9])
def test_shared_set_size_is_the_registry_s(n, fraction):
    from coopt_flwr.registry.datasets import shared_subset

    assert shared_set_size(n, fraction) == len(shared_subset(n, fraction, seed=0))


def test_a_data_set_too_small_for_the_shared_set_is_refused_with_the_fix(tmp_path):
    settings = Settings.from_config({}, {"output-dir": str(tmp_path), "dataset": "npz:tiny.npz"})
    want = (
        "dataset 'npz:tiny.npz' has 30 samples, so shared-fraction 0.1 gives a shared set S of 3; the "
        "protocol needs at least 4 (screening fits S in two halves): raise shared-fraction to at least "
        "0.134, or use a data set of at least 40 samples"
    )
    with pytest.raises(ConfigError, match=re.escape(want)):
        check_data_size(settings, 30)
    check_data_size(settings, 40)  # |S| = 4: enough
    with pytest.raises(ConfigError, match=r"S of 2; .*: use a data set of at least 40 samples$"):
        check_data_size(settings, 3)
    small = Settings.from_config({}, {"shared-fraction": 0.01})
    for n in (5, 31, 100, 349):  # the suggested fraction gives enough
        with pytest.raises(ConfigError, match="raise shared-fraction to at least") as info:
            check_data_size(small, n)
        least = float(re.search(r"shared-fraction to at least ([0-9.]+),", str(info.value)).group(1))
        assert 0 < least < 1 and shared_set_size(n, least) >= MIN_SHARED_SAMPLES
