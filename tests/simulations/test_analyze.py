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
