"""Data-set registry: digits, npz (with its decoded cache), folder, cifar wrapping, shared set."""

from __future__ import annotations

import os
import stat
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coopt_flwr.registry import datasets
from coopt_flwr.registry.datasets import (
    ImageData,
    UnknownDatasetError,
    clear_dataset_cache,
    create_dataset,
    list_datasets,
    npz_cache_entry,
    register_dataset,
    shared_subset,
)
from coopt_flwr.registry.spec import Spec


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Every test gets its own on-disk cache and starts from an empty in-process cache.
    monkeypatch.setenv("COOPT_CACHE_DIR", str(tmp_path / "cache"))
    clear_dataset_cache()


def _toy(n: int = 6, size: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    y = np.arange(n, dtype=np.int64) % 3
    return x, y


# --------------------------------------------------------------------------- registry


def test_registered_names() -> None:
    assert {"digits", "cifar10", "cifar100", "npz", "folder"} <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_unknown_name_lists_available() -> None:
    with pytest.raises(UnknownDatasetError, match=r"available: .*digits.*npz") as info:
        create_dataset("mnist")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("unknown data set 'mnist'")  # no KeyError quoting


def test_register_custom_and_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets._DATASETS, "_factories", dict(datasets._DATASETS._factories))
    x, y = _toy()

    @register_dataset("toy")
    def _toy_factory(spec: Spec, *, data_root: str | None) -> ImageData:
        return ImageData(spec.text, x, y, 3)

    assert "toy" in list_datasets()
    assert len(create_dataset("toy")) == 6
    with pytest.raises(ValueError, match=r"already registered"):
        register_dataset("toy")(_toy_factory)
    with pytest.raises(ValueError, match=r"invalid"):
        register_dataset("bad name")


def test_bad_options_and_args() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'colour'.*allowed options: size"):
        create_dataset("digits?colour=red")
    with pytest.raises(ValueError, match=r"takes no ':' argument"):
        create_dataset("digits:foo")
    with pytest.raises(ValueError, match=r"needs"):
        create_dataset("npz")
    with pytest.raises(ValueError, match=r"must be >= 1"):
        create_dataset("digits?size=0")


# --------------------------------------------------------------------------- ImageData


def test_image_data_batch_and_errors() -> None:
    x, y = _toy(n=5)
    data = ImageData("toy", x, y.astype(np.int32), 3)
    assert data.labels is not None and data.labels.dtype == np.int64  # converted
    assert len(data) == 5 and data.image_shape == (4, 4, 3)
    out = data.batch(np.array([4, 0, 4]))
    assert out.dtype == np.uint8 and out.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(out, x[[4, 0, 4]])
    np.testing.assert_array_equal(data.batch_labels(np.array([1, 2])), y[[1, 2]])
    assert data.batch(np.array([], dtype=np.int64)).shape == (0, 4, 4, 3)
    with pytest.raises(IndexError, match=r"sample id 5 out of range \[0, 5\)"):
        data.batch(np.array([0, 5]))
    with pytest.raises(IndexError, match=r"sample id -1"):
        data.batch(np.array([-1]))
    with pytest.raises(IndexError, match=r"integers"):
        data.batch(np.array([0.5]))


def test_image_data_validation() -> None:
    x, y = _toy(n=4)
    with pytest.raises(ValueError, match=r"uint8"):
        ImageData("t", x.astype(np.float32), None, None)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        ImageData("t", x[..., :1], None, None)
    with pytest.raises(ValueError, match=r"labels must be integers"):
        ImageData("t", x, y[:3], 3)
    with pytest.raises(ValueError, match=r"labels must lie"):
        ImageData("t", x, y, 2)
    with pytest.raises(ValueError, match=r"unlabelled"):
        ImageData("t", x, None, 3)


# --------------------------------------------------------------------------- digits


def test_digits_default() -> None:
    data = create_dataset("digits")
    assert data.name == "digits"
    assert data.images.shape == (1797, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.images.min() == 0 and data.images.max() == 255
    # Gray repeated into three identical channels.
    np.testing.assert_array_equal(data.images[..., 0], data.images[..., 2])
    assert data.labels is not None and data.labels.dtype == np.int64
    assert data.labels.shape == (1797,) and set(np.unique(data.labels)) == set(range(10))
    assert data.num_classes == 10
    assert create_dataset("digits") is data  # per-process cache


def test_digits_size_option() -> None:
    data = create_dataset("digits?size=16")
    assert data.images.shape == (1797, 16, 16, 3) and data.images.dtype == np.uint8
    assert create_dataset("digits?size=8").images.shape == (1797, 8, 8, 3)


# --------------------------------------------------------------------------- shared_subset


def test_shared_subset_seeded_sorted_unique() -> None:
    a = shared_subset(1000, 0.1, seed=3)
    assert a.dtype == np.int64 and a.shape == (100,)
    assert np.all(np.diff(a) > 0)  # sorted and unique
    assert a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, shared_subset(1000, 0.1, seed=3))
    assert not np.array_equal(a, shared_subset(1000, 0.1, seed=4))


@pytest.mark.parametrize(
    ("n", "fraction", "size"), [(10, 0.01, 2), (2, 0.5, 2), (1797, 0.1, 180), (3, 0.9, 3)]
)
def test_shared_subset_size(n: int, fraction: float, size: int) -> None:
    assert shared_subset(n, fraction, seed=0).shape == (size,)


@pytest.mark.parametrize(
    ("n", "fraction", "match"),
    [(100, 0.0, "fraction"), (100, 1.0, "fraction"), (100, -0.1, "fraction"), (1, 0.5, ">= 2")],
)
def test_shared_subset_errors(n: int, fraction: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shared_subset(n, fraction, seed=0)


# --------------------------------------------------------------------------- npz


def test_npz_round_trip_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _toy(n=7)
    path = tmp_path / "toy.npz"
    np.savez_compressed(path, x=x, y=y.astype(np.int32))
    data = create_dataset(f"npz:{path}")
    np.testing.assert_array_equal(data.images, x)
    np.testing.assert_array_equal(data.labels, y)
    assert data.labels is not None and data.labels.dtype == np.int64
    assert data.num_classes == 3
    np.testing.assert_array_equal(data.batch(np.array([6, 1])), x[[6, 1]])

    entry = npz_cache_entry(path.resolve())
    assert entry.parent.parent == tmp_path / "cache"
    assert {p.name for p in entry.iterdir()} == {"x.npy", "y.npy", "meta.json"}

    # Second load in a fresh process state: must come from the cache, not the source.
    def _no_decode(p: Path) -> None:
        raise AssertionError("source decoded again")

    monkeypatch.setattr(datasets, "_decode_npz", _no_decode)
    clear_dataset_cache()
    again = create_dataset(f"npz:{path}")
    assert again is not data
    assert isinstance(again.images, np.memmap)
    assert Path(again.images.filename).parent == entry
    np.testing.assert_array_equal(again.images, x)
    np.testing.assert_array_equal(again.labels, y)


@pytest.mark.parametrize(
    ("source_mode", "file_mode", "dir_mode"), [(0o600, 0o600, 0o700), (0o640, 0o640, 0o750)]
)
def test_npz_cache_is_no_more_readable_than_its_source(
    tmp_path: Path, source_mode: int, file_mode: int, dir_mode: int
) -> None:
    # An institution's private file must not leave a world-readable decoded copy behind.
    x, y = _toy(n=5)
    path = tmp_path / "private.npz"
    np.savez(path, x=x, y=y)
    path.chmod(source_mode)
    create_dataset(f"npz:{path}")
    entry = npz_cache_entry(path.resolve())
    assert stat.S_IMODE(entry.stat().st_mode) == dir_mode
    for name in ("x.npy", "y.npy", "meta.json"):
        assert stat.S_IMODE((entry / name).stat().st_mode) == file_mode, name


def test_npz_cache_written_world_readable_before_is_narrowed_on_use(tmp_path: Path) -> None:
    x, y = _toy(n=5)
    path = tmp_path / "private.npz"
    np.savez(path, x=x, y=y)
    path.chmod(0o600)
    create_dataset(f"npz:{path}")
    entry = npz_cache_entry(path.resolve())
    for p in (entry, *entry.iterdir()):  # what the cache used to write
        p.chmod(0o755 if p.is_dir() else 0o644)
    clear_dataset_cache()
    np.testing.assert_array_equal(create_dataset(f"npz:{path}").images, x)  # still read from the cache
    assert stat.S_IMODE(entry.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in entry.iterdir()} == {0o600}


def test_npz_cache_invalidated_by_new_file(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    x1, _ = _toy(n=4, seed=1)
    np.savez_compressed(path, x=x1)
    first = create_dataset(f"npz:{path}")
    assert first.labels is None and first.num_classes is None
    x2, y2 = _toy(n=5, seed=2)
    np.savez_compressed(path, x=x2, y=y2)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a certainly newer mtime
    clear_dataset_cache()
    second = create_dataset(f"npz:{path}")
    np.testing.assert_array_equal(second.images, x2)
    np.testing.assert_array_equal(second.labels, y2)


def test_npz_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    x, y = _toy()
    path = tmp_path / "toy.npz"
    np.savez_compressed(path, x=x, y=y)
    create_dataset(f"npz:{path}")
    (npz_cache_entry(path.resolve()) / "x.npy").write_bytes(b"garbage")
    clear_dataset_cache()
    np.testing.assert_array_equal(create_dataset(f"npz:{path}").images, x)


def test_npz_relative_path_uses_data_root(tmp_path: Path) -> None:
    x, _ = _toy()
    (tmp_path / "sub").mkdir()
    np.savez_compressed(tmp_path / "sub" / "a.npz", x=x)
    data = create_dataset("npz:sub/a.npz", data_root=str(tmp_path))
    np.testing.assert_array_equal(data.images, x)
    assert create_dataset("npz:sub/a.npz", data_root=str(tmp_path)) is data


def test_npz_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"nope.npz"):
        create_dataset(f"npz:{missing}")


@pytest.mark.parametrize("content", [b"this is not a zip file at all", b""])
def test_npz_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"is not a readable .npz"):
        create_dataset(f"npz:{path}")


def test_npz_truncated_file(tmp_path: Path) -> None:
    x, y = _toy(n=50, size=16)
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=x, y=y)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"is not a readable .npz"):
        create_dataset(f"npz:{bad}")


def test_npz_single_array_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with open(path, "wb") as fh:
        np.save(fh, _toy()[0])
    with pytest.raises(ValueError, match=r"is not a readable .npz.*single"):
        create_dataset(f"npz:{path}")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": np.zeros((2, 4, 4, 3), np.uint8)}, "no 'x' array.*images"),
        ({"x": np.zeros((2, 4, 4, 3), np.float32)}, "'x' must be uint8"),
        ({"x": np.zeros((2, 4, 4), np.uint8)}, "4 dims"),
        ({"x": np.zeros((2, 3, 4, 4), np.uint8)}, "3 channels last"),
        ({"x": np.zeros((0, 4, 4, 3), np.uint8)}, "no images"),
        ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.zeros(3, np.int64)}, "3 labels.*2 images"),
        ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.zeros(2, np.float32)}, "integer labels"),
        ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.array([0, -1])}, "negative"),
    ],
)
def test_npz_validation(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        create_dataset(f"npz:{path}")


def test_npz_unwritable_cache_falls_back_to_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should go")
    monkeypatch.setenv("COOPT_CACHE_DIR", str(blocker))
    x, y = _toy()
    path = tmp_path / "toy.npz"
    np.savez_compressed(path, x=x, y=y)
    with pytest.warns(RuntimeWarning, match=r"in memory only"):
        data = create_dataset(f"npz:{path}")
    np.testing.assert_array_equal(data.images, x)


# --------------------------------------------------------------------------- folder


def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _png(root / "cat" / "a.png", (10, 7), (255, 0, 0))
    _png(root / "cat" / "b.png", (5, 5), (250, 0, 0))
    _png(root / "dog" / "c.png", (12, 20), (0, 0, 255))
    Image.new("L", (9, 9), 128).save(root / "dog" / "gray.png")  # converted to RGB
    data = create_dataset(f"folder:{root}?size=8")
    assert data.images.shape == (4, 8, 8, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1])
    assert data.num_classes == 2
    assert tuple(data.images[0, 4, 4]) == (255, 0, 0)
    assert tuple(data.images[2, 4, 4]) == (0, 0, 255)
    assert tuple(data.images[3, 4, 4]) == (128, 128, 128)


def test_folder_flat_is_unlabelled(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (6, 6), (1, 2, 3))
    _png(tmp_path / "b.JPG", (6, 6), (200, 100, 50))
    (tmp_path / "notes.txt").write_text("not an image")
    data = create_dataset(f"folder:{tmp_path}")
    assert data.images.shape == (2, 64, 64, 3)  # default size
    assert data.labels is None and data.num_classes is None


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no images found"):
        create_dataset(f"folder:{empty}")
    with pytest.raises(FileNotFoundError, match=r"missing"):
        create_dataset(f"folder:{tmp_path / 'missing'}")

    bad = tmp_path / "bad"
    _png(bad / "ok.png", (4, 4), (0, 0, 0))
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken.png"):
        create_dataset(f"folder:{bad}")

    mixed = tmp_path / "mixed"
    _png(mixed / "top.png", (4, 4), (0, 0, 0))
    _png(mixed / "cls" / "in.png", (4, 4), (0, 0, 0))
    with pytest.raises(ValueError, match=r"mixes top-level images"):
        create_dataset(f"folder:{mixed}")

    empty_class = tmp_path / "empty_class"
    _png(empty_class / "a" / "x.png", (4, 4), (0, 0, 0))
    (empty_class / "b").mkdir()
    with pytest.raises(ValueError, match=r"no images found in the class subfolders"):
        create_dataset(f"folder:{empty_class}")


# --------------------------------------------------------------------------- cifar (no network)


class _FakeCifar:
    def __init__(self, root: str, train: bool, download: bool) -> None:
        assert download
        self.classes = [f"c{i}" for i in range(10)]
        n = 6 if train else 4
        self.data = np.full((n, 32, 32, 3), 7, dtype=np.uint8)
        self.targets = list(range(n))


def test_cifar_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeCifar)
    train = create_dataset("cifar10", data_root=str(tmp_path))
    assert train.images.shape == (6, 32, 32, 3) and train.num_classes == 10
    assert train.labels is not None and train.labels.dtype == np.int64
    assert len(create_dataset("cifar10?split=test", data_root=str(tmp_path))) == 4
    with pytest.raises(ValueError, match=r"train or test"):
        create_dataset("cifar10?split=val")


def test_cifar_offline_error_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def _offline(**kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _offline)
    with pytest.raises(RuntimeError, match=r"needs internet access.*npz:<path>"):
        create_dataset("cifar100")


def test_balanced_subset_option_is_seeded_and_balanced():
    from coopt_flwr.registry.datasets import create_dataset

    a = create_dataset("digits?subset=200&subset-seed=3")
    b = create_dataset("digits?subset=200&subset-seed=3")
    c = create_dataset("digits?subset=200&subset-seed=4")
    assert len(a) == 200 and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.labels, c.labels) or not np.array_equal(a.images, c.images)
    counts = np.bincount(a.labels, minlength=10)
    assert counts.max() - counts.min() <= 1


def test_subset_option_errors():
    from coopt_flwr.registry.datasets import create_dataset

    with pytest.raises(ValueError, match="subset size"):
        create_dataset("digits?subset=999999")
    with pytest.raises(ValueError, match="needs 'subset'"):
        create_dataset("digits?subset-seed=2")
