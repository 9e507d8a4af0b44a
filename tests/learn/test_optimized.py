"""OptimizedDataset, paired_arrays and fingerprint: pairing, subsets, centering and every refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from coopt_flwr.learn.optimized import OptimizedDataset, fingerprint, optimized_rows, paired_arrays
from coopt_flwr.learn.student import center_targets
from coopt_flwr.registry.datasets import ImageData
from coopt_flwr.store.storage import write_tensors


@pytest.fixture
def data() -> ImageData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 4, 5, 3), dtype=np.uint8)
    return ImageData("toy", images, np.arange(10) % 3, 3)


def _optimized(ids=(3, 1, 4, 0, 2), dim: int = 6, seed: int = 1) -> dict[str, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64)
    targets = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32) + 2.0
    zeros = np.zeros(len(ids), dtype=np.int64)
    return {"ids": ids, "targets": targets, "participant": zeros, "round": zeros, "stage": zeros}


def test_items_are_image_target_id(data):
    opt = _optimized()
    ds = OptimizedDataset(data, opt)
    assert len(ds) == 5 and ds.target_dim == 6
    x, y, i = ds[1]
    assert i == 1 and isinstance(i, int)
    assert x.dtype == torch.float32 and x.shape == (3, 4, 5)
    expected = torch.from_numpy(data.images[1]).permute(2, 0, 1).float() / 255.0
    assert torch.allclose(x, expected) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y.dtype == torch.float32 and torch.equal(y, torch.from_numpy(opt["targets"][1]))
    assert ds[-1][2] == 2  # Python indexing
    with pytest.raises(IndexError):
        ds[5]


def test_a_subset_keeps_its_order_and_its_targets(data):
    opt = _optimized()
    ds = OptimizedDataset(data, opt, ids=np.array([2, 3]))
    assert ds.ids.tolist() == [2, 3] and len(ds) == 2
    assert np.array_equal(ds.targets, opt["targets"][[4, 0]])
    assert ds[0][2] == 2 and torch.equal(ds[1][1], torch.from_numpy(opt["targets"][0]))


def test_centering_subtracts_the_mean_over_the_served_samples(data):
    opt = _optimized()
    ds = OptimizedDataset(data, opt, center=True)
    assert np.allclose(ds.targets.mean(0), 0.0, atol=1e-6)
    assert np.allclose(ds.targets, center_targets(opt["targets"]))
    sub = OptimizedDataset(data, opt, ids=np.array([0, 4, 1]), center=True)
    assert np.allclose(sub.targets, center_targets(opt["targets"][[3, 2, 1]]))
    assert np.allclose(OptimizedDataset(data, opt).targets, opt["targets"])  # off by default


def test_transform_gets_the_uint8_hwc_array(data):
    seen = []

    def transform(image: np.ndarray) -> str:
        seen.append(image)
        return "img"

    ds = OptimizedDataset(data, _optimized(), transform=transform)
    assert ds[0][0] == "img"
    assert (
        seen[0].dtype == np.uint8 and seen[0].shape == (4, 5, 3) and np.array_equal(seen[0], data.images[3])
    )
    seen[0][:] = 0  # a copy: the data set is not changed through it
    assert data.images[3].any()


def test_a_data_loader_batches_the_items(data):
    ds = OptimizedDataset(data, _optimized(), center=True)
    x, y, ids = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 4, 5) and y.shape == (4, 6) and ids.tolist() == [3, 1, 4, 0]


def test_paired_arrays_agree_with_the_dataset(data):
    opt = _optimized()
    images, targets, ids = paired_arrays(data, opt)
    assert images.dtype == np.uint8 and images.shape == (5, 4, 5, 3) and targets.dtype == np.float32
    assert np.array_equal(images, data.images[opt["ids"]]) and np.array_equal(ids, opt["ids"])
    assert np.array_equal(targets, opt["targets"])
    images, targets, ids = paired_arrays(data, opt, ids=np.array([4]))
    assert ids.tolist() == [4] and np.array_equal(images[0], data.images[4])
    assert np.array_equal(targets[0], opt["targets"][2])


def test_a_path_and_a_spec_are_accepted(tmp_path):
    opt = _optimized(ids=range(20), dim=4)
    write_tensors(tmp_path / "optimized.safetensors", opt)
    ds = OptimizedDataset("digits", tmp_path)
    assert len(ds) == 20 and ds[0][0].shape == (3, 8, 8)
    assert np.array_equal(ds.targets, opt["targets"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ids": np.array([3, 1, 4, 0, 10])}, r"id 10, outside the data set's range \[0, 10\)"),
        ({"ids": np.array([3, 1, -1, 0, 2])}, r"id -1, outside"),
        ({"ids": np.array([3, 1, 3, 0, 2])}, "the optimized set holds 1 duplicate ids"),
        ({"targets": np.zeros((4, 6), np.float32)}, "4 target rows for 5 ids"),
        ({"targets": np.zeros(5, np.float32)}, "'targets' must be 2-D"),
        ({"ids": np.zeros((5, 1), np.int64)}, "'ids' must be 1-D"),
        ({"local-index": np.arange(5)}, "local data mode.*cannot be paired with a data-set spec"),
    ],
)
def test_a_set_that_does_not_fit_is_refused(data, change, match):
    opt = {**_optimized(), **change}
    with pytest.raises(ValueError, match=match):
        OptimizedDataset(data, opt)
    with pytest.raises(ValueError, match=match):
        paired_arrays(data, opt)


def test_non_finite_targets_are_refused_where_used(data):
    opt = _optimized()
    opt["targets"][2, 1] = np.nan  # id 4
    with pytest.raises(ValueError, match=r"1 targets hold NaN or infinity.*id 4"):
        OptimizedDataset(data, opt)
    assert len(OptimizedDataset(data, opt, ids=np.array([3, 1]))) == 2  # the bad row is not served


def test_missing_arrays_are_named(data):
    with pytest.raises(ValueError, match="no 'targets'"):
        OptimizedDataset(data, {"ids": np.arange(3)})


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (np.array([3, 5]), r"1 of the 2 ids are not in the optimized set \(first: 5\)"),
        (np.array([3, 3]), "ids holds 1 duplicate ids"),
        (np.array([], dtype=np.int64), "ids is empty"),
        (np.array([0.5, 1.0]), "ids must be 1-D integers"),
    ],
)
def test_a_bad_subset_is_refused(data, ids, match):
    with pytest.raises(ValueError, match=match):
        OptimizedDataset(data, _optimized(), ids=ids)


def test_optimized_rows_does_not_need_images():
    ids, targets = optimized_rows(_optimized(), 5, np.array([0, 1]))
    assert ids.tolist() == [0, 1] and targets.shape == (2, 6)


def test_fingerprint_names_ids_and_targets_only():
    opt = _optimized()
    fp = fingerprint(opt)
    assert len(fp) == 16 and int(fp, 16) >= 0 and fingerprint(_optimized()) == fp
    assert fingerprint({**opt, "round": opt["round"] + 1}) == fp  # bookkeeping arrays do not count
    assert fingerprint({**opt, "ids": opt["ids"].astype(np.int32)}) == fp  # nor the dtype read
    assert fingerprint(_optimized(seed=2)) != fp
    assert fingerprint({**opt, "ids": opt["ids"][::-1].copy()}) != fp
