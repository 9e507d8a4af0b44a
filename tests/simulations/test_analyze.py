"""Each analysis of simulations.analyze on tiny data: its JSON, CSV and PNG, and their content."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from harness import register_counting_prior
from hydra import compose, initialize_config_dir

from simulations.analyze import ANALYSES, CONF_PATH, main, run_analysis

PNG = b"\x89PNG\r\n\x1a\n"
PRIORS = ["counting:a?dim=8", "counting:b?dim=24", "human?fraction=0.5"]
POOL = ["counting:a?dim=8", "counting:b", "counting:c?dim=4", "human", "human?fraction=0.3"]


def _list(specs) -> str:
    """A Hydra override list of spec strings (quoted: specs hold '?' and '=')."""
    return "[" + ",".join(f"'{s}'" for s in specs) + "]"


def _cfg(tmp_path, *overrides: str):
    register_counting_prior()
    base = [
        "profile=tiny",
        f"output-dir={tmp_path}",
        "data.subset=300",
        "target-dim=8",
        "g-max-samples=64",
        "probe.max_train=200",
        "student.probe_train=100",
        "student.train.time_budget_s=0.5",
        "student.train.batch_size=50",
        f"alignment.priors={_list(PRIORS)}",
        f"shared_size.priors={_list(PRIORS)}",
        f"tsne.priors={_list(['counting:a?dim=8', 'human'])}",
        "tsne.points=40",
        f"uniformity.pool={_list(POOL)}",
        "uniformity.probe_train=150",
    ]
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        return compose(config_name="config", overrides=base + list(overrides))


def _outputs(tmp_path, name):
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["analysis"] == name and result["profile"] == "tiny"
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG
    rows = list(csv.DictReader(open(tmp_path / f"{name}.csv")))
    return result, rows


def test_uniformity_against_probe_accuracy(tmp_path):
    run_analysis("uniformity", _cfg(tmp_path), log=lambda s: None)
    result, rows = _outputs(tmp_path, "uniformity")
    assert len(result["priors"]) == len(rows) == 5 and result["paper_spearman"] == -0.97
    by_spec = {r["spec"]: r for r in result["priors"]}
    # labels as features: the complete annotator is perfect, the partial one is not
    assert by_spec["human"]["probe_acc"] == 1.0
    assert 0.2 < by_spec["human?fraction=0.3"]["probe_acc"] < 0.6
    assert all(-4.0 <= r["uniformity"] <= 0.0 for r in result["priors"])
    v = [r["uniformity"] for r in result["priors"]]
    acc = [r["probe_acc"] for r in result["priors"]]
    from coopt_flwr.learn.quality import spearman

    assert result["spearman"] == pytest.approx(spearman(np.array(v), np.array(acc)))
    # the consensus rule's and the effective rank's scores of the same pool, ranked the same way
    c = np.array([r["consensus"] for r in result["priors"]])
    erank = np.array([r["effective_rank"] for r in result["priors"]])
    assert np.all(c > 0) and np.all(erank >= 1.0)
    assert result["spearman_consensus"] == pytest.approx(spearman(c, np.array(acc)))
    assert result["spearman_effective_rank"] == pytest.approx(spearman(erank, np.array(acc)))
    assert result["consensus_ridge"] > 0


def test_uniformity_adds_the_zoo_and_needs_its_index(tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "zoo.json").write_text(json.dumps([{"spec": "counting:z?dim=6", "kind": "weak"}]))
    run_analysis("uniformity", _cfg(tmp_path, f"uniformity.zoo={zoo}"), log=lambda s: None)
    result, _ = _outputs(tmp_path, "uniformity")
    assert result["priors"][-1]["spec"] == "counting:z?dim=6" and result["priors"][-1]["kind"] == "zoo-weak"
    with pytest.raises(FileNotFoundError, match=r"simulations\.zoo"):
        run_analysis("uniformity", _cfg(tmp_path, f"uniformity.zoo={tmp_path / 'none'}"), log=lambda s: None)


def test_alignment_modes_and_student_curves_per_epoch(tmp_path):
    run_analysis("alignment", _cfg(tmp_path, "alignment.epochs=2"), log=lambda s: None)
    result, rows = _outputs(tmp_path, "alignment")
    modes = result["modes"]
    assert list(modes) == ["none", "worst", "medium", "best"]
    v = [p["uniformity_projected"] for p in result["priors"]]
    assert modes["best"]["anchor"] == int(np.argmin(v)) and modes["worst"]["anchor"] == int(np.argmax(v))
    assert modes["none"]["anchor"] is None and modes["none"]["g_after"] == modes["none"]["g_before"]
    assert modes["best"]["g_after"] < modes["none"]["g_after"]
    for m in modes.values():
        assert [e for e, _ in m["curve_epochs"]] == [0.0, 1.0, 2.0]
        assert all(0.0 <= a <= 1.0 for _, a in m["curve_epochs"])
    assert len(rows) == 4 * 3
    assert result["none_minus_best_points"] == pytest.approx(
        100 * (modes["none"]["student_acc"] - modes["best"]["student_acc"])
    )


def test_shared_size_sweep(tmp_path):
    run_analysis("shared-size", _cfg(tmp_path, "shared_size.fractions=[0.05,0.2,0.4]"), log=lambda s: None)
    result, rows = _outputs(tmp_path, "shared-size")
    assert [r["fraction"] for r in result["rows"]] == [0.05, 0.2, 0.4] and len(rows) == 3
    assert [r["shared_samples"] for r in result["rows"]] == [15, 60, 120]
    for r in result["rows"]:
        assert 0.0 <= r["target_probe_acc"] <= 1.0 and 0.0 <= r["g_after_eval"] <= 1.0
        assert r["student_acc"] is None  # student off in the tiny profile


def test_tsne_before_and_after_alignment(tmp_path):
    run_analysis("tsne", _cfg(tmp_path), log=lambda s: None)
    result, rows = _outputs(tmp_path, "tsne")
    assert result["points_per_participant"] == [40, 40]
    assert result["anchor_prior"] == "human"  # labels are the most uniform targets here
    assert result["g_after"] < result["g_before"]
    assert len(rows) == 2 * 80 and {r["phase"] for r in rows} == {"before", "after"}
    assert {r["participant"] for r in rows} == {"0", "1"}


def test_mixes_table_with_g_before_and_after(tmp_path):
    run_analysis("mixes", _cfg(tmp_path, "mixes.names=[tiny,weak]", "mixes.student=true"), log=lambda s: None)
    result, rows = _outputs(tmp_path, "mixes")
    assert [r["mix"] for r in result["rows"]] == ["tiny", "weak"] and len(rows) == 2
    for r in result["rows"]:
        assert r["g_after"] < r["g_before"] and 0.0 <= r["student_acc"] <= 1.0
        assert r["participants"] == len(r["priors"])
    assert result["paper_cifar10_student_acc"]["diverse-human"] == 0.867


def test_cli_takes_the_analysis_name_first(tmp_path, monkeypatch, capsys):
    register_counting_prior()
    monkeypatch.setattr(sys, "argv", ["analyze", "nope"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and all(a in err for a in ANALYSES)
    out = tmp_path / "cli"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "analyze",
            "tsne",
            "profile=tiny",
            f"output-dir={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "data.subset=200",
            "tsne.priors=['counting:a','counting:b']",
            "tsne.points=30",
        ],
    )
    main()
    assert json.loads((out / "tsne.json").read_text())["priors"] == ["counting:a", "counting:b"]


def test_plot_titles_name_the_data_set_briefly():
    from simulations.analyze import _data_label

    assert (
        _data_label("npz:/data/cifar10/train.npz?subset=10000&subset-seed=0")
        == "train.npz, 10,000-image subset"
    )
    assert _data_label("npz:/data/cifar10/test.npz") == "test.npz"
    assert _data_label("digits") == "digits"


def test_scatter_labels_of_coincident_points_do_not_overprint():
    from simulations.analyze import _annotate_without_overlap
    from simulations.common import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.scatter([0.0, 0.001, 1.0], [10.0, 10.0, 20.0])
    _annotate_without_overlap(
        ax, [(0.0, 10.0, "first prior"), (0.001, 10.0, "second prior"), (1.0, 20.0, "far")]
    )
    fig.canvas.draw()
    boxes = {t.get_text(): t.get_window_extent() for t in ax.texts}
    assert not boxes["first prior"].overlaps(boxes["second prior"])
    plt.close(fig)


# ----------------------------------------------------------------------------- collaboration
COLLAB_PRIORS = ["counting:a?dim=8", "counting:b?dim=24", "counting:c?dim=6"]


def _collab_cfg(tmp_path, *overrides: str):
    feds = (
        "collaboration.federations=["
        "{priors:[a,b,c]},"
        "{priors:[a,b,c],redundancy:2,anchor-rule:consensus,alignment:procrustes,standardize:true},"
        "{priors:[a,b,'counting:b?dim=24'],anchor-rule:consensus}]"
    )
    return _cfg(
        tmp_path,
        "collaboration.d_size=200",
        "collaboration.val_size=100",
        "collaboration.probe_train=150",
        "collaboration.target-dim=8",
        "collaboration.g-max-samples=64",
        "+collaboration.priors.a='counting:a?dim=8'",
        "+collaboration.priors.b='counting:b?dim=24'",
        "+collaboration.priors.c='counting:c?dim=6'",
        feds,
        "collaboration.student.train.time_budget_s=0.3",
        "collaboration.student.train.batch_size=50",
        "data.test='npz:/nonexistent/test.npz'",  # never loaded: the analysis does not touch test
        *overrides,
    )


def test_collaboration_rows_files_and_validation_split(tmp_path):
    from simulations.analyze import Federation

    result = run_analysis("collaboration", _collab_cfg(tmp_path), log=lambda s: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["analysis"] == "collaboration" and saved["rows"] == result["rows"]
    assert (tmp_path / "collaboration.png").read_bytes()[:8] == PNG
    csv_rows = list(csv.DictReader(open(tmp_path / "collaboration.csv")))
    labels = [r["row"] for r in result["rows"]]
    feds = [Federation.from_config(f) for f in result["config"]["collaboration"]["federations"]]
    singles = ["a alone", "b alone", "c alone", "counting:b?dim=24 alone"]
    assert labels == singles + [f.label for f in feds] and [r["row"] for r in csv_rows] == labels
    assert feds[1].label == "a+b+c r=2 consensus procrustes std"
    assert (result["d_size"], result["validation_size"], result["probe_train"]) == (200, 100, 150)
    assert result["shared_samples"] == 20  # the tiny shared-fraction 0.1 of D (not of D + validation)
    table = (tmp_path / "table.md").read_text()
    assert "validation split of 100" in table and "test set is not used" in table
    assert all(label in table for label in labels)
    best = max(r["student_acc"] for r in result["rows"] if r["kind"] == "single")
    assert result["best_single_student_acc"] == best
    for r in result["rows"]:
        assert 0.0 <= r["target_probe_acc"] <= 1.0 and 0.0 <= r["student_acc"] <= 1.0
        assert r["vs_best_single_points"] == pytest.approx(100 * (r["student_acc"] - best))
        assert r["data_seconds"] <= r["data_cpu_seconds"] + 1e-12 and r["train_seconds"] > 0
    fed = [r for r in result["rows"] if r["kind"] == "federation"]
    assert [r["redundancy"] for r in fed] == [1, 2, 1]
    assert [r["anchor-rule"] for r in fed] == ["uniformity", "consensus", "consensus"]
    for r in fed:
        assert len(r["consensus"]) == len(r["cv_residuals"]) == r["participants"] == 3
        assert r["cv_residuals"][r["anchor"]] == 0.0 and r["target_dim"] == 8
        if r["anchor-rule"] == "consensus":
            assert r["anchor"] == int(np.argmin(r["consensus"]))
    # the duplicated prior b: one set of features, shared by both participants holding it
    assert fed[2]["specs"] == ["counting:a?dim=8", "counting:b?dim=24", "counting:b?dim=24"]


def test_collaboration_carves_disjoint_balanced_splits_and_caches_features(tmp_path):
    from harness import EMBEDDED

    from simulations.analyze import Collaboration

    cfg = _collab_cfg(tmp_path)
    cb = Collaboration(cfg, log=lambda s: None)
    ids = cb.source_ids
    assert len(np.unique(ids)) == len(ids) == 300 and cb.d == 200
    labels = cb.data.labels
    assert np.bincount(labels[:200]).tolist() == [20] * 10 and np.bincount(labels[200:]).tolist() == [10] * 10
    assert np.all(cb.shared_ids < cb.d) and np.all(cb.labeled < cb.d)
    before = EMBEDDED["counting:a?dim=8"]
    first = cb.embedded("a")
    assert EMBEDDED["counting:a?dim=8"] == before + 300
    again = Collaboration(cfg, log=lambda s: None).embedded("a")  # a re-run: from the disk cache
    assert EMBEDDED["counting:a?dim=8"] == before + 300
    np.testing.assert_array_equal(again.features, first.features)
    assert again.seconds == first.seconds and len(list((tmp_path / "features").glob("*.npz"))) == 1
    other_seed = Collaboration(_collab_cfg(tmp_path, "seed=1"), log=lambda s: None)
    assert not np.array_equal(other_seed.source_ids, ids)
    other_seed.embedded("a")
    assert EMBEDDED["counting:a?dim=8"] == before + 600


def test_collaboration_rejects_bad_federations_and_human_priors(tmp_path):
    from simulations.analyze import Collaboration, Federation

    with pytest.raises(ValueError, match="anchor-rule"):
        Federation.from_config({"priors": ["a", "b"], "anchor-rule": "median"})
    with pytest.raises(ValueError, match="redundancy"):
        Federation.from_config({"priors": ["a", "b"], "redundancy": 3})
    with pytest.raises(ValueError, match="takes only"):
        Federation.from_config({"priors": ["a"], "anchor_rule": "consensus"})  # snake case: a typo
    cb = Collaboration(_collab_cfg(tmp_path), log=lambda s: None)
    with pytest.raises(ValueError, match="human prior"):
        cb.embedded("human")


def test_collaboration_cifar10_profile_matches_the_benchmark_student():
    """The cifar10 profile: the cpu benchmark's student and optimizer, a shorter budget, the issue's rows."""
    import yaml

    from coopt_flwr.config import CONF_DIR
    from simulations.analyze import Federation

    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["profile=cifar10"])
    c = cfg.collaboration
    cpu = yaml.safe_load((CONF_DIR / "profile" / "cpu.yaml").read_text())
    train = dict(c.student.train)
    assert train.pop("time_budget_s") == 150
    assert train == {k: v for k, v in cpu["train"].items() if k != "time_budget_s"}
    assert {k: c.student[k] for k in cpu["student"]} == cpu["student"]
    assert c["target-dim"] == cpu["coopt"]["target-dim"] and (c.d_size, c.val_size) == (10000, 2000)
    feds = [Federation.from_config(f) for f in c.federations]
    assert [f.label for f in feds] == [
        "lite0+lite1+lite2+resnet18 r=1 uniformity ridge",
        "lite0+lite1+lite2+resnet18 r=1 consensus ridge",
        "lite0+lite1+lite2+resnet18 r=2 consensus ridge",
        "lite0+lite1+lite2+resnet18 r=2 consensus procrustes",
        "lite0+lite1+lite2+resnet18 r=3 consensus ridge",
        "lite0+lite1+lite2+lite2 r=1 consensus ridge",
        "lite0+lite1+lite2+lite2 r=2 consensus ridge",
    ]
    assert c.priors.resnet18 == "timm:resnet18?size=32" and c.priors.lite2 == "efficientnet_lite2?size=160"
