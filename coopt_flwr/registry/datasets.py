"""Data-set registry: spec string -> all images of a data set ``D`` as one NHWC uint8 array.

Registered names
----------------
``digits``
    scikit-learn's bundled 8x8 digits (1797 images, 10 classes); the embedded default, no
    download. Option ``size=N`` upsamples to NxN.
``cifar10``, ``cifar100``
    Through torchvision (downloads on first use). Option ``split=train|test``.
``npz:<path>``
    Local arrays: ``x`` uint8 (N, H, W, 3) and optional integer ``y`` (N,). A decoded copy is
    cached as plain ``.npy`` files so later loads are memory-mapped and fast.
``folder:<path>``
    A folder of images, either with class subfolders (labelled) or flat (unlabelled).
    Option ``size=N`` (default 64) resizes every image to NxN.

Files are cached under ``$COOPT_CACHE_DIR`` (default ``~/.cache/coopt-flwr``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coopt_flwr.registry.registry import Registry, UnknownNameError
from coopt_flwr.registry.spec import Spec, check_options, parse_spec, reject_arg, require_arg
from coopt_flwr.store.storage import atomic_write

__all__ = [
    "DEFAULT_DATASET",
    "DatasetFactory",
    "ImageData",
    "UnknownDatasetError",
    "cache_dir",
    "clear_dataset_cache",
    "create_dataset",
    "list_datasets",
    "npz_cache_entry",
    "register_dataset",
    "shard_split",
    "shared_subset",
]

DEFAULT_DATASET = "digits"
"""The data set that needs neither internet nor local files."""

# Same extensions torchvision's ImageFolder accepts, so both folder layouts agree.
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True, eq=False)
class ImageData:
    """All samples of a data set.

    Attributes
    ----------
    name : str
        The spec text the data set was created from.
    images : np.ndarray
        uint8 array of shape (N, H, W, 3), RGB, NHWC. May be a read-only memory map.
    labels : np.ndarray or None
        int64 array of shape (N,) (other integer dtypes are converted), or None when the
        data set is unlabelled.
    num_classes : int or None
        Number of classes, or None when unlabelled.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    num_classes: int | None

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be a uint8 numpy array")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{self.name}: images must have shape (N, H, W, 3), got {images.shape}")
        if self.labels is None:
            if self.num_classes is not None:
                raise ValueError(f"{self.name}: num_classes given for an unlabelled data set")
            return
        labels = np.asarray(self.labels)
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (images.shape[0],):
            raise ValueError(
                f"{self.name}: labels must be integers of shape ({images.shape[0]},), "
                f"got {labels.dtype} {labels.shape}"
            )
        # Any integer labels are accepted; consumers rely on one dtype.
        labels = labels.astype(np.int64, copy=False)
        if labels is not self.labels:
            object.__setattr__(self, "labels", labels)
        if self.num_classes is None or self.num_classes < 1:
            raise ValueError(f"{self.name}: a labelled data set needs num_classes >= 1")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes})")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (H, W, 3) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def batch(self, ids: np.ndarray) -> np.ndarray:
        """Gather images by sample id.

        Parameters
        ----------
        ids : np.ndarray
            Integer ids of shape (B,), each in ``[0, N)``.

        Returns
        -------
        np.ndarray
            uint8 array of shape (B, H, W, 3), a fresh in-memory copy.

        Raises
        ------
        IndexError
            If an id is negative or >= N.
        """
        idx = self._check_ids(ids)
        return np.asarray(self.images[idx])

    def batch_labels(self, ids: np.ndarray) -> np.ndarray | None:
        """Gather labels by sample id: int64 (B,), or None when unlabelled."""
        idx = self._check_ids(ids)
        return None if self.labels is None else np.asarray(self.labels[idx])

    def _check_ids(self, ids: np.ndarray) -> np.ndarray:
        idx = np.asarray(ids)
        if idx.ndim != 1:
            raise IndexError(f"{self.name}: ids must be 1-D, got shape {idx.shape}")
        if idx.size == 0:
            return idx.astype(np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"{self.name}: ids must be integers, got dtype {idx.dtype}")
        lo, hi = int(idx.min()), int(idx.max())
        # Negative ids would silently wrap around; reject them like too-large ones.
        if lo < 0 or hi >= len(self):
            bad = lo if lo < 0 else hi
            raise IndexError(
                f"{self.name}: sample id {bad} out of range [0, {len(self)}) (ids span {lo}..{hi})"
            )
        return idx


DatasetFactory = Callable[..., ImageData]
"""``factory(spec: Spec, *, data_root: str | None) -> ImageData``."""


class UnknownDatasetError(UnknownNameError):
    """Raised by :func:`create_dataset` for a name that is not registered."""


# No bound: a data set stays cached for the life of the process (clear_dataset_cache empties it).
_DATASETS: Registry[ImageData] = Registry("data set", error=UnknownDatasetError, cache_size=None)


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorator registering ``factory(spec, *, data_root) -> ImageData`` under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is invalid or already registered.
    """
    return _DATASETS.register(name)


def list_datasets() -> list[str]:
    """Return the registered data-set names, sorted."""
    return _DATASETS.names()


def create_dataset(spec: str, *, data_root: str | None = None) -> ImageData:
    """Build (or fetch from the per-process cache) the data set described by ``spec``.

    Parameters
    ----------
    spec : str
        A spec string such as ``digits``, ``cifar10?split=test`` or ``npz:train.npz``.
    data_root : str or None
        Base folder for relative paths and for torchvision downloads.

    Returns
    -------
    ImageData
        The same object for repeated calls with the same spec, root and working directory.

    Raises
    ------
    UnknownDatasetError
        If the name is not registered; the message suggests close names and lists them all.
    ValueError
        For a malformed spec or bad options.
    """
    parsed = parse_spec(spec)
    factory = _DATASETS.factory(parsed)
    root = None if data_root is None else os.path.abspath(os.path.expanduser(data_root))

    def build() -> ImageData:
        subset = _pop_subset_options(parsed)
        data = factory(subset[0], data_root=root)
        if subset[1] is not None:
            data = balanced_subset(data, subset[1], subset[2], name=parsed.text)
        return data

    # cwd is part of the key because relative paths resolve against it when no root is given.
    return _DATASETS.cached((parsed.text, root, os.getcwd()), build)


# Options every data set accepts, handled here rather than by each factory.
_SUBSET_OPTIONS = ("subset", "subset-seed")


def _pop_subset_options(spec: Spec) -> tuple[Spec, int | None, int]:
    size = spec.get_int("subset", None)
    seed = spec.get_int("subset-seed", 0)
    if size is None and "subset-seed" in spec.options:
        raise ValueError(f"{spec.text!r}: 'subset-seed' needs 'subset'")
    options = {k: v for k, v in spec.options.items() if k not in _SUBSET_OPTIONS}
    return Spec(name=spec.name, arg=spec.arg, options=options, text=spec.text), size, int(seed or 0)


def balanced_subset(data: ImageData, size: int, seed: int, name: str | None = None) -> ImageData:
    """A seeded subset of ``size`` samples, class-balanced when the data set is labelled.

    Each class contributes ``size // C`` samples (the remainder goes to the first classes in
    a seeded order); unlabelled data sets are sampled uniformly. Order follows the original.

    Raises
    ------
    ValueError
        If ``size`` is not in [1, N] or a class has too few samples.
    """
    n = len(data)
    if not 1 <= size <= n:
        raise ValueError(f"subset size must be in [1, {n}], got {size}")
    rng = np.random.default_rng([seed, 0x5B])
    if data.labels is None:
        idx = rng.choice(n, size=size, replace=False)
    else:
        classes = np.unique(data.labels)
        quota = np.full(len(classes), size // len(classes))
        quota[rng.permutation(len(classes))[: size % len(classes)]] += 1
        picks = []
        for c, q in zip(classes, quota, strict=True):
            members = np.flatnonzero(data.labels == c)
            if q > len(members):
                raise ValueError(f"class {c} has {len(members)} samples, a balanced subset needs {q}")
            picks.append(rng.choice(members, size=q, replace=False))
        idx = np.concatenate(picks)
    idx = np.sort(idx)
    return ImageData(
        name=name or f"{data.name}[subset {size}]",
        images=np.ascontiguousarray(data.images[idx]),
        labels=None if data.labels is None else data.labels[idx],
        num_classes=data.num_classes,
    )


def clear_dataset_cache() -> None:
    """Forget every data set cached by :func:`create_dataset`."""
    _DATASETS.clear()


def shared_subset(num_samples: int, fraction: float, seed: int) -> np.ndarray:
    """Draw the shared set ``S``: a seeded sample of sample ids without replacement.

    Parameters
    ----------
    num_samples : int
        N, the size of the data set (ids are ``0..N-1``); at least 2.
    fraction : float
        Fraction of the ids to draw, strictly between 0 and 1.
    seed : int
        Seed of the draw; the same arguments always give the same ids.

    Returns
    -------
    np.ndarray
        Sorted, unique int64 ids of shape (max(2, round(fraction * N)),), capped at N.

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1) or ``num_samples < 2``.
    """
    n = int(num_samples)
    if n != num_samples or n < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    frac = float(fraction)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"fraction must be in the open interval (0, 1), got {fraction!r}")
    size = min(n, max(2, round(frac * n)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def shard_split(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """The platform's seeded split of ids ``0..N-1`` into ``num_partitions`` disjoint shards.

    Returns
    -------
    list of np.ndarray
        int64 ids per partition (a seeded permutation cut into near-equal parts, not sorted);
        together every id exactly once.
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    rng = np.random.default_rng([int(seed), 0xC0])
    return np.array_split(rng.permutation(int(num_samples)).astype(np.int64), int(num_partitions))


def cache_dir() -> Path:
    """Root of the on-disk cache: ``$COOPT_CACHE_DIR`` or ``~/.cache/coopt-flwr``."""
    env = os.environ.get("COOPT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "coopt-flwr"


def _resolve_path(arg: str, data_root: str | None) -> Path:
    path = Path(arg).expanduser()
    if not path.is_absolute():
        path = Path(data_root or os.getcwd()) / path
    return path.resolve()


def _resize_nhwc(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 (N, H, W, 3) to uint8 (N, size, size, 3)."""
    import torch  # deferred: the server only indexes data sets and need not load torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    x = x.round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return np.ascontiguousarray(x.numpy())


# --------------------------------------------------------------------------- digits


@register_dataset("digits")
def _digits(spec: Spec, *, data_root: str | None) -> ImageData:
    from sklearn.datasets import load_digits

    reject_arg(spec)
    check_options(spec, {"size"})
    size = spec.get_positive_int("size", None)
    bunch = load_digits()
    gray = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    gray = np.rint(gray * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.repeat(gray[..., None], 3, axis=-1)
    if size is not None and size != images.shape[1]:
        images = _resize_nhwc(images, size)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ImageData(spec.text, images, labels, 10)


# --------------------------------------------------------------------------- cifar


def _torchvision_cifar(spec: Spec, data_root: str | None, cls_name: str) -> ImageData:
    import torchvision.datasets

    reject_arg(spec)
    check_options(spec, {"split"})
    split = spec.get_str("split", "train")
    if split not in ("train", "test"):
        raise ValueError(f"option 'split' of spec {spec.text!r} must be train or test")
    root = Path(data_root) if data_root else cache_dir() / "torchvision"
    cls = getattr(torchvision.datasets, cls_name)
    try:
        ds = cls(root=str(root), train=split == "train", download=True)
    except Exception as err:  # network and archive errors come in many types
        raise RuntimeError(
            f"could not load {spec.name} ({split}) with torchvision under {root}: {err}. "
            "Downloading it needs internet access, or a local copy already extracted under "
            "that root (pass data_root). Offline, convert the data to an .npz with 'x' uint8 "
            "(N, H, W, 3) and 'y' labels and use the 'npz:<path>' data set instead."
        ) from err
    images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8))
    labels = np.asarray(ds.targets, dtype=np.int64)
    return ImageData(spec.text, images, labels, len(ds.classes))


@register_dataset("cifar10")
def _cifar10(spec: Spec, *, data_root: str | None) -> ImageData:
    return _torchvision_cifar(spec, data_root, "CIFAR10")


@register_dataset("cifar100")
def _cifar100(spec: Spec, *, data_root: str | None) -> ImageData:
    return _torchvision_cifar(spec, data_root, "CIFAR100")


# --------------------------------------------------------------------------- npz


def _decode_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and validate ``x`` (and ``y``) from an .npz file into memory."""
    keys: list[str] = []
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not named arrays")
        with loaded as npz:
            keys = list(npz.files)
            if "x" in keys:
                x = npz["x"]
                y = npz["y"] if "y" in keys else None
    except MemoryError:
        raise
    except Exception as err:  # zipfile, lzma, zlib and numpy each raise their own types
        raise ValueError(f"{path} is not a readable .npz: {type(err).__name__}: {err}") from err
    if x is None:
        raise ValueError(f"{path} has no 'x' array (found keys: {', '.join(keys) or 'none'})")
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: 'x' must be uint8, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{path}: 'x' must have 4 dims (N, H, W, 3), got shape {x.shape}")
    if x.shape[-1] != 3:
        raise ValueError(f"{path}: 'x' must have 3 channels last (N, H, W, 3), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{path}: 'x' holds no images")
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: 'y' must hold integer labels, got {y.dtype}")
        if y.ndim != 1:
            raise ValueError(f"{path}: 'y' must be 1-D, got shape {y.shape}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{path}: 'y' has {y.shape[0]} labels but 'x' has {x.shape[0]} images")
        if y.min() < 0:
            raise ValueError(f"{path}: 'y' holds negative labels")
        y = y.astype(np.int64, copy=False)
    return x, y


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a bare name
        np.save(fh, array, allow_pickle=False)


def npz_cache_entry(path: Path) -> Path:
    """Cache folder for the decoded copy of ``path`` (keyed by absolute path, size, mtime)."""
    st = path.stat()
    digest = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "npz" / digest[:32]


def _load_npz_cache(entry: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Memory-map a complete cache entry, or return None when there is none (or it is bad)."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        x = np.load(entry / "x.npy", mmap_mode="r", allow_pickle=False)
        y = np.load(entry / "y.npy", allow_pickle=False) if meta["has_y"] else None
        if list(x.shape) != meta["x_shape"] or x.dtype != np.uint8:
            return None
        if y is not None and (y.dtype != np.int64 or y.shape != (x.shape[0],)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged entry is rebuilt from the source file
    return x, y


def _cache_modes(source: Path) -> tuple[int, int]:
    """Modes of a cache entry's files and folder: no wider than the source file's.

    The decoded copy is the source's data: an institution's private (0600) file must not
    become a world-readable cache. Files get the source's read/write bits (never execute);
    the folder is the owner's, plus search for whoever may read the source.
    """
    readable = stat.S_IMODE(source.stat().st_mode) & 0o666
    return readable, 0o700 | (readable & 0o044) | ((readable & 0o044) >> 2)


def _store_npz_cache(entry: Path, source: Path, x: np.ndarray, y: np.ndarray | None) -> None:
    file_mode, dir_mode = _cache_modes(source)
    entry.mkdir(parents=True, exist_ok=True)
    os.chmod(entry, dir_mode)
    atomic_write(entry / "x.npy", lambda tmp: _save_npy(tmp, x), mode=file_mode)
    if y is not None:
        atomic_write(entry / "y.npy", lambda tmp: _save_npy(tmp, y), mode=file_mode)
    # meta.json is written last: its presence marks the entry complete.
    meta = {"source": str(source), "has_y": y is not None, "x_shape": list(x.shape)}
    atomic_write(
        entry / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta), "utf-8"), mode=file_mode
    )


def _narrow_npz_cache(entry: Path, source: Path) -> None:
    """Take back what an entry written before :func:`_cache_modes` (0644) grants beyond the source."""
    file_mode, dir_mode = _cache_modes(source)
    for path, mode in ((entry, dir_mode), *((entry / n, file_mode) for n in ("x.npy", "y.npy", "meta.json"))):
        try:
            current = stat.S_IMODE(path.stat().st_mode)
            if current & ~mode:
                os.chmod(path, current & mode)
        except OSError:
            pass  # absent (no labels) or not ours: the entry is still read as it is


@register_dataset("npz")
def _npz(spec: Spec, *, data_root: str | None) -> ImageData:
    path = _resolve_path(require_arg(spec, "path to an .npz file"), data_root)
    check_options(spec, set())
    if not path.is_file():
        raise FileNotFoundError(2, "npz data set file not found", str(path))
    entry = npz_cache_entry(path)
    cached = _load_npz_cache(entry)
    if cached is not None:
        x, y = cached
        _narrow_npz_cache(entry, path)
    else:
        x, y = _decode_npz(path)
        try:
            _store_npz_cache(entry, path, x, y)
            cached = _load_npz_cache(entry)
            if cached is not None:
                x, y = cached  # prefer the memory map: it is shared between processes
        except OSError as err:
            warnings.warn(
                f"could not write the decoded cache of {path} to {entry} ({err}); keeping it in memory only",
                RuntimeWarning,
                stacklevel=2,
            )
    num_classes = None if y is None else int(y.max()) + 1
    return ImageData(spec.text, x, y, num_classes)


# --------------------------------------------------------------------------- folder


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in _IMAGE_EXTENSIONS


def _load_image(path: str | Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as err:  # PIL raises OSError, ValueError, DecompressionBombError, ...
        raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


@register_dataset("folder")
def _folder(spec: Spec, *, data_root: str | None) -> ImageData:
    from torchvision.datasets import ImageFolder

    root = _resolve_path(require_arg(spec, "path to an image folder"), data_root)
    check_options(spec, {"size"})
    size = spec.get_positive_int("size", 64)
    if not root.is_dir():
        raise FileNotFoundError(2, "image folder not found", str(root))
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    subdirs = [p for p in entries if p.is_dir()]
    top_images = [p for p in entries if _is_image_file(p)]

    labels: np.ndarray | None
    num_classes: int | None
    if subdirs:
        if top_images:
            raise ValueError(
                f"{root} mixes top-level images ({top_images[0].name}, ...) with subfolders "
                f"({subdirs[0].name}, ...); use one class subfolder per class, or a flat folder"
            )
        try:
            ds = ImageFolder(str(root), loader=lambda p: p)
        except FileNotFoundError as err:
            raise ValueError(f"no images found in the class subfolders of {root}: {err}") from err
        paths = [p for p, _ in ds.samples]
        labels = np.asarray([c for _, c in ds.samples], dtype=np.int64)
        num_classes = len(ds.classes)
    else:
        paths = [str(p) for p in top_images]
        labels, num_classes = None, None
    if not paths:
        raise ValueError(f"no images found in {root} (extensions: {', '.join(_IMAGE_EXTENSIONS)})")
    images = np.stack([_load_image(p, size) for p in paths])
    return ImageData(spec.text, images, labels, num_classes)
