"""A trained student's backbone on disk, and back as a ready timm model in one call.

A student folder holds two files:

``student.safetensors``
    The backbone's state dict (no head): a timm model built by
    :func:`coopt_flwr.learn.student.create_backbone` (``num_classes=0``, pooled features).
``student.json``
    What is needed to rebuild and feed it: ``arch``, ``cifar_stem``, ``input_size``
    ``[3, H, W]``, the input normalization ``mean`` / ``std`` (per channel, in [0, 1] units),
    ``feature_dim``, ``target_dim`` (the width the student regressed), the optimized set's
    ``optimized_fingerprint`` (:func:`coopt_flwr.learn.optimized.fingerprint`), ``created_by``
    (package versions), ``created_at`` and free-form ``extra``.

Use::

    from coopt_flwr.learn.export import load_student
    from coopt_flwr.learn.probe import extract_features

    model = load_student("outputs/train/my-student")       # timm model, eval mode
    cfg = model.pretrained_cfg                              # mean, std, input_size
    feats = extract_features(model, images_uint8_nhwc, mean=cfg["mean"], std=cfg["std"])
    # or by hand: model((x_float01_nchw - mean) / std) -> (B, feature_dim)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from coopt_flwr.devices import resolve_device
from coopt_flwr.learn.student import Student, create_backbone
from coopt_flwr.store.storage import atomic_write, write_json

__all__ = [
    "STUDENT_META",
    "STUDENT_WEIGHTS",
    "StudentMeta",
    "load_student",
    "read_student_meta",
    "save_student",
]

STUDENT_WEIGHTS = "student.safetensors"
STUDENT_META = "student.json"
FORMAT = "coopt-student"
FORMAT_VERSION = 1

_REQUIRED = ("arch", "cifar_stem", "input_size", "mean", "std", "feature_dim")


@dataclass(frozen=True)
class StudentMeta:
    """The content of ``student.json``.

    Attributes
    ----------
    arch : str
        timm architecture name.
    cifar_stem : bool
        Whether the stem was adapted to small images (:func:`coopt_flwr.learn.student.apply_cifar_stem`).
    input_size : tuple of int
        (3, H, W) of the images trained on.
    mean, std : tuple of float
        Per-channel input normalization, [0, 1] units: the model expects ``(x - mean) / std``.
    feature_dim : int
        Width of the backbone's pooled features.
    target_dim : int or None
        Width of the targets the student regressed.
    optimized_fingerprint : str or None
        :func:`coopt_flwr.learn.optimized.fingerprint` of the optimized set trained on.
    extra : dict
        Anything else the writer recorded (``created_by``, ``created_at``, training details).
    """

    arch: str
    cifar_stem: bool
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    feature_dim: int
    target_dim: int | None = None
    optimized_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("coopt-flwr", "torch", "timm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    out["python"] = sys.version.split()[0]
    return out


def _input_size(image_size: int | tuple[int, int]) -> tuple[int, int, int]:
    if isinstance(image_size, int):
        h = w = image_size
    else:
        h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return 3, int(h), int(w)


def save_student(
    folder: str | Path,
    student: Student,
    *,
    arch: str,
    cifar_stem: bool,
    image_size: int | tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    optimized_fingerprint: str | None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``student.safetensors`` (the backbone's weights) and ``student.json`` into ``folder``.

    Both files are written atomically, the JSON last (a folder with a JSON holds its weights).

    Parameters
    ----------
    folder : str or Path
        Created when missing.
    student : Student
        The trained student; only ``student.backbone`` is saved (its head maps to the targets).
    arch, cifar_stem : str, bool
        What the backbone was built with (:func:`coopt_flwr.learn.student.create_backbone`).
    image_size : int or (int, int)
        H (= W) or (H, W) of the training images.
    mean, std : tuple of float
        The input normalization used in training, [0, 1] units, one value per channel.
    optimized_fingerprint : str or None
        :func:`coopt_flwr.learn.optimized.fingerprint` of the optimized set trained on.
    extra : dict or None
        JSON-serializable additions (e.g. the data-set spec, epochs).

    Returns
    -------
    Path
        ``folder``.
    """
    folder = Path(folder)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values each, got {len(mean)} and {len(std)}")
    # Contiguous CPU copies: safetensors needs dense tensors (CUDA training leaves channels-last ones).
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in student.backbone.state_dict().items()}
    atomic_write(folder / STUDENT_WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": str(arch),
        "cifar_stem": bool(cifar_stem),
        "input_size": list(_input_size(image_size)),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "feature_dim": int(student.feature_dim),
        "target_dim": int(student.target_dim),
        "optimized_fingerprint": optimized_fingerprint,
        "weights": STUDENT_WEIGHTS,
        "created_by": _versions(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    write_json(folder / STUDENT_META, meta)
    return folder


def read_student_meta(folder: str | Path) -> StudentMeta:
    """Read and check ``student.json`` of a student folder.

    Raises
    ------
    FileNotFoundError
        No ``student.json`` in ``folder``.
    ValueError
        A JSON that does not parse or lacks a field.
    """
    path = Path(folder) / STUDENT_META
    if not path.is_file():
        raise FileNotFoundError(
            f"no {STUDENT_META} in {Path(folder)}: not a student folder (written by "
            "python -m simulations.train or coopt_flwr.learn.export.save_student)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    try:
        known = {*_REQUIRED, "target_dim", "optimized_fingerprint", "extra"}
        meta = StudentMeta(
            arch=str(raw["arch"]),
            cifar_stem=bool(raw["cifar_stem"]),
            input_size=tuple(int(v) for v in raw["input_size"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in raw["mean"]),
            std=tuple(float(v) for v in raw["std"]),
            feature_dim=int(raw["feature_dim"]),
            target_dim=None if raw.get("target_dim") is None else int(raw["target_dim"]),
            optimized_fingerprint=raw.get("optimized_fingerprint"),
            extra={**(raw.get("extra") or {}), **{k: v for k, v in raw.items() if k not in known}},
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} has a malformed field: {err}") from err
    if len(meta.input_size) != 3 or len(meta.mean) != 3 or len(meta.std) != 3:
        raise ValueError(f"{path}: input_size, mean and std need 3 values each")
    return meta


def _fit_report(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading into ``model`` strictly (empty when it fits)."""
    own = model.state_dict()
    problems = []
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing:
        problems.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} of another shape (first: {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
        )
    return problems


def load_student(folder: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """Load a student folder as a ready timm backbone: weights in, eval mode, on ``device``.

    ``features = model(x)`` for ``x`` float (B, 3, H, W) normalized as in training:
    ``(pixels / 255 - mean) / std`` with the folder's ``mean`` and ``std``. They are on the
    returned model as timm keeps a model's data config, ``model.pretrained_cfg["mean"]`` /
    ``["std"]`` / ``["input_size"]`` (so ``timm.data.resolve_data_config(model=model)`` sees
    them); :func:`read_student_meta` gives the whole ``student.json``.

    Parameters
    ----------
    folder : str or Path
        Holding ``student.safetensors`` and ``student.json`` (:func:`save_student`).
    device : str, torch.device or None
        None / ``"auto"``: CUDA when available, else CPU.

    Returns
    -------
    nn.Module
        The timm model (``num_classes=0``): float (B, 3, H, W) -> (B, feature_dim).

    Raises
    ------
    FileNotFoundError
        A missing ``student.json`` or ``student.safetensors``.
    ValueError
        A corrupt JSON or weight file, an unknown architecture, or weights that do not fit it.

    Examples
    --------
    ::

        model = load_student("outputs/train/run")
        m = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
        s = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
        with torch.no_grad():
            feats = model((x - m) / s)  # x float (B, 3, H, W) in [0, 1]
    """
    folder = Path(folder)
    meta = read_student_meta(folder)
    weights = folder / STUDENT_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no {STUDENT_WEIGHTS} in {folder} (its {STUDENT_META} is there)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from err
    model, dim = create_backbone(meta.arch, cifar_stem=meta.cifar_stem)
    problems = _fit_report(model, state)
    if problems:
        raise ValueError(
            f"the weights in {weights} do not fit {meta.arch} (cifar_stem={meta.cifar_stem}): "
            + "; ".join(problems)
        )
    if dim != meta.feature_dim:
        raise ValueError(f"{meta.arch} gives {dim} features, {folder / STUDENT_META} says {meta.feature_dim}")
    model.load_state_dict(state)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(
        input_size=tuple(meta.input_size),
        mean=tuple(meta.mean),
        std=tuple(meta.std),
        crop_pct=1.0,
        num_classes=0,
    )
    model.pretrained_cfg = cfg
    model.default_cfg = cfg  # timm's older name of the same dict
    return model.to(resolve_device(device)).eval()
