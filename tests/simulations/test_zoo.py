"""The prior zoo: checkpoints of two paradigms, loadable through their metadata's spec."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from coopt_flwr.learn.student import create_backbone
from coopt_flwr.registry.datasets import create_dataset
from coopt_flwr.registry.priors import clear_prior_cache, create_prior
from simulations.zoo import CONF_PATH, META_KEYS, ZOO_CSV, ZOO_FILE, ZOO_PLOT, checkpoint_spec, run_zoo


def test_checkpoint_spec(tmp_path):
    f = tmp_path / "a.safetensors"
    assert checkpoint_spec("resnet18", f, 32, weak=True) == f"weak:resnet18?checkpoint={f}&size=32"
    assert checkpoint_spec("resnet18", f, 64, weak=False).startswith("timm:resnet18?checkpoint=")
    for bad in ("a?b", "a&b", "a,b", "a>b"):
        with pytest.raises(ValueError, match="choose an output folder"):
            checkpoint_spec("resnet18", tmp_path / bad / "x.safetensors", 32, weak=False)


def test_zoo_trains_both_paradigms_and_keeps_weak_checkpoints(tmp_path):
    out = tmp_path / "zoo"
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "profile=tiny",
                f"output-dir={out}",
                "data.subset=200",
                "size=16",
                "epochs=2",
                "weak_epochs=[1]",
                "train.batch_size=50",
                "probe.max_train=150",
                "probe.max_test=50",
            ],
        )
        records = run_zoo(cfg, log=lambda s: None)
    assert [(r["paradigm"], r["epoch"], r["kind"]) for r in records] == [
        ("supervised", 1, "weak"),
        ("supervised", 2, "trained"),
        ("byol", 1, "weak"),
        ("byol", 2, "trained"),
    ]
    assert json.loads((out / ZOO_FILE).read_text()) == records
    assert len(list(csv.DictReader(open(out / ZOO_CSV)))) == 4
    assert (out / ZOO_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.is_dir()]  # the epoch checkpoints are cleaned up
    images = create_dataset("digits").images[:4]
    for r in records:
        assert set(META_KEYS) <= set(r) and 0.0 <= r["probe_acc"] <= 1.0
        assert json.loads((out / f"{r['name']}.json").read_text()) == r
        assert r["spec"].startswith("weak:" if r["kind"] == "weak" else "timm:")
        # the spec loads exactly the saved backbone through the prior registry
        clear_prior_cache()
        prior = create_prior(r["spec"], seed=123)
        assert prior.kind == ("weak" if r["kind"] == "weak" else "checkpoint")
        backbone, _ = create_backbone("resnet10t", cifar_stem=False, seed=0)
        from safetensors.torch import load_file

        backbone.load_state_dict(load_file(r["file"]))
        with torch.inference_mode():
            direct = backbone.eval()(prior.preprocess(torch.from_numpy(images))).numpy()
        np.testing.assert_allclose(prior.embed(images), direct, rtol=1e-4, atol=1e-5)
    # the weak and the trained checkpoints of one run differ
    w = create_prior(records[0]["spec"]).embed(images)
    t = create_prior(records[1]["spec"]).embed(images)
    assert not np.allclose(w, t)
