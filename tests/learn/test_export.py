"""save_student / load_student: the exported backbone loads back as a timm model with the same
features, its normalization travels with it, and broken folders fail clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from coopt_flwr.learn.export import (
    STUDENT_META,
    STUDENT_WEIGHTS,
    load_student,
    read_student_meta,
    save_student,
)
from coopt_flwr.learn.probe import extract_features
from coopt_flwr.learn.student import Student

MEAN = (0.4, 0.45, 0.5)
STD = (0.2, 0.25, 0.3)


def _trained_like(arch: str, cifar_stem: bool) -> Student:
    """A student whose weights and BN statistics differ from a fresh seed-0 backbone's."""
    student = Student.create(arch, 8, cifar_stem=cifar_stem, seed=7)
    student.train()
    with torch.no_grad():
        student(torch.randn(4, 3, 16, 16) * 2 + 1)  # moves the running statistics
    return student.eval()


def _save(folder, student: Student, arch: str = "cifar_resnet10", cifar_stem: bool = True) -> None:
    save_student(
        folder,
        student,
        arch=arch,
        cifar_stem=cifar_stem,
        image_size=16,
        mean=MEAN,
        std=STD,
        optimized_fingerprint="0123456789abcdef",
        extra={"dataset": "toy"},
    )


@pytest.mark.parametrize(("arch", "cifar_stem"), [("cifar_resnet10", True), ("resnet10t", True)])
def test_saved_weights_load_back_with_the_same_features(tmp_path, arch, cifar_stem):
    student = _trained_like(arch, cifar_stem)
    _save(tmp_path, student, arch, cifar_stem)
    assert (tmp_path / STUDENT_WEIGHTS).is_file() and (tmp_path / STUDENT_META).is_file()
    model = load_student(tmp_path, device="cpu")
    assert not model.training and isinstance(model, timm.models.ResNet)
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), student.backbone(x), atol=1e-6)
    fresh = Student.create(arch, 8, cifar_stem=cifar_stem, seed=0).backbone.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), model(x))  # the weights came from the file


def test_the_normalization_travels_with_the_model(tmp_path):
    student = _trained_like("cifar_resnet10", True)
    _save(tmp_path, student)
    model = load_student(tmp_path, device="cpu")
    cfg = model.pretrained_cfg
    assert cfg["mean"] == MEAN and cfg["std"] == STD and cfg["input_size"] == (3, 16, 16)
    assert timm.data.resolve_data_config({}, model=model)["mean"] == MEAN
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    feats = extract_features(model, images, mean=cfg["mean"], std=cfg["std"])
    expected = extract_features(student.backbone, images, mean=MEAN, std=STD)
    assert feats.shape == (6, 256) and np.allclose(feats, expected, atol=1e-5)


def test_the_meta_records_what_rebuilds_the_model(tmp_path):
    _save(tmp_path, _trained_like("cifar_resnet10", True))
    meta = read_student_meta(tmp_path)
    assert (meta.arch, meta.cifar_stem, meta.input_size) == ("cifar_resnet10", True, (3, 16, 16))
    assert (meta.mean, meta.std, meta.feature_dim, meta.target_dim) == (MEAN, STD, 256, 8)
    assert meta.optimized_fingerprint == "0123456789abcdef" and meta.extra["dataset"] == "toy"
    raw = json.loads((tmp_path / STUDENT_META).read_text())
    assert set(raw["created_by"]) >= {"coopt-flwr", "torch", "timm"} and raw["created_at"]


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no student\.json"):
        load_student(tmp_path)
    _save(tmp_path, _trained_like("cifar_resnet10", True))
    (tmp_path / STUDENT_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"no student\.safetensors"):
        load_student(tmp_path)


def test_a_corrupt_json_or_weight_file_is_refused(tmp_path):
    _save(tmp_path, _trained_like("cifar_resnet10", True))
    (tmp_path / STUDENT_WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_student(tmp_path)
    (tmp_path / STUDENT_META).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_student(tmp_path)
    (tmp_path / STUDENT_META).write_text(json.dumps({"arch": "cifar_resnet10"}))
    with pytest.raises(ValueError, match="lacks cifar_stem, input_size, mean, std, feature_dim"):
        load_student(tmp_path)


def _edit_meta(folder, **changes) -> None:
    path = folder / STUDENT_META
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, **changes}))


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    _save(tmp_path, _trained_like("cifar_resnet10", True))
    _edit_meta(tmp_path, arch="resnet10t")
    with pytest.raises(ValueError, match=r"do not fit resnet10t.*missing.*unexpected"):
        load_student(tmp_path)
    _edit_meta(tmp_path, arch="no_such_net")
    with pytest.raises(ValueError, match="unknown timm architecture"):
        load_student(tmp_path)
    _edit_meta(tmp_path, arch="cifar_resnet10", feature_dim=128)
    with pytest.raises(ValueError, match="gives 256 features"):
        load_student(tmp_path)
