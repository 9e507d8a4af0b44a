"""Spec-string parsing shared by the data-set and prior registries."""

from __future__ import annotations

import pickle

import pytest

from coopt_flwr.registry.spec import Spec, check_options, parse_spec, reject_arg, require_arg


@pytest.mark.parametrize(
    ("text", "name", "arg", "options"),
    [
        (
            "timm:resnet18?size=64&checkpoint=/tmp/a.pth",
            "timm",
            "resnet18",
            {"size": "64", "checkpoint": "/tmp/a.pth"},
        ),
        ("efficientnet_lite0?size=96", "efficientnet_lite0", None, {"size": "96"}),
        ("human", "human", None, {}),
        ("npz:/data/cifar10/train.npz", "npz", "/data/cifar10/train.npz", {}),
        ("  digits  ", "digits", None, {}),
        # The argument runs to the first '?', so it may hold ':' (hub names, drive letters).
        ("timm:hf-hub:org/model?size=32", "timm", "hf-hub:org/model", {"size": "32"}),
        # Values may contain '=' after the first one.
        ("npz:x.npz?note=a=b", "npz", "x.npz", {"note": "a=b"}),
        ("weak:resnet10t ? size = 32 ", "weak", "resnet10t", {"size": "32"}),
    ],
)
def test_parse_examples(text: str, name: str, arg: str | None, options: dict[str, str]) -> None:
    spec = parse_spec(text)
    assert spec.name == name
    assert spec.arg == arg
    assert dict(spec.options) == options
    assert spec.text == text.strip()
    assert str(spec) == text.strip()


def test_options_keep_order_and_spec_is_hashable_and_picklable() -> None:
    spec = parse_spec("timm:resnet18?size=64&checkpoint=a.pth")
    assert list(spec.options) == ["size", "checkpoint"]
    assert hash(spec) == hash(parse_spec("timm:resnet18?size=64&checkpoint=a.pth"))
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_spec_copies_caller_options() -> None:
    opts = {"size": "3"}
    spec = Spec(name="x", arg=None, options=opts, text="x?size=3")
    opts["size"] = "4"
    assert spec.get_int("size", None) == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty spec"),
        ("   ", "empty spec"),
        (":resnet18", "empty name"),
        ("?size=3", "empty name"),
        ("npz:", "empty argument"),
        ("timm:resnet18?", "empty option list"),
        ("timm:resnet18?size", "expected key=value"),
        ("timm:resnet18?size=3&", "expected key=value"),
        ("timm:resnet18?=3", "bad option key"),
        ("timm:resnet18?size=", "empty value"),
        ("timm:resnet18?size=3&size=4", "given twice"),
        ("bad name", "invalid name"),
        ("a/b", "invalid name"),
    ],
)
def test_parse_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_spec(text)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(TypeError):
        parse_spec(3)  # type: ignore[arg-type]


def test_typed_getters() -> None:
    spec = parse_spec("x?size=64&neg=-3&on=TRUE&off=no&one=1&path=/a/b")
    assert spec.get_int("size", None) == 64
    assert spec.get_int("neg", None) == -3
    assert spec.get_int("missing", 7) == 7
    assert spec.get_int("missing", None) is None
    assert spec.get_bool("on", False) is True
    assert spec.get_bool("off", True) is False
    assert spec.get_bool("one", False) is True
    assert spec.get_bool("missing", True) is True
    assert spec.get_str("path", None) == "/a/b"
    assert spec.get_str("missing", "d") == "d"


def test_typed_getter_errors_name_the_option() -> None:
    spec = parse_spec("x?size=big&flag=maybe&f=1.5")
    with pytest.raises(ValueError, match=r"'size'.*integer.*'big'"):
        spec.get_int("size", None)
    with pytest.raises(ValueError, match=r"'f'.*integer"):
        spec.get_int("f", None)
    with pytest.raises(ValueError, match=r"'flag'.*boolean.*'maybe'"):
        spec.get_bool("flag", False)


def test_check_options() -> None:
    spec = parse_spec("timm:resnet18?size=3&colour=red")
    check_options(parse_spec("timm:resnet18?size=3"), {"size", "checkpoint"})
    with pytest.raises(ValueError, match=r"unknown option 'colour'.*allowed options: checkpoint, size"):
        check_options(spec, {"size", "checkpoint"})
    with pytest.raises(ValueError, match=r"takes no options"):
        check_options(parse_spec("human?x=1"), set())


def test_arg_helpers() -> None:
    assert require_arg(parse_spec("npz:a.npz"), "a path") == "a.npz"
    with pytest.raises(ValueError, match=r"needs a path"):
        require_arg(parse_spec("npz"), "a path")
    reject_arg(parse_spec("digits"))
    with pytest.raises(ValueError, match=r"takes no ':' argument"):
        reject_arg(parse_spec("digits:foo"))


def test_get_positive_int() -> None:
    spec = parse_spec("x?size=3&zero=0&word=big")
    assert spec.get_positive_int("size", None) == 3
    assert spec.get_positive_int("missing", None) is None
    assert spec.get_positive_int("missing", 64) == 64
    with pytest.raises(
        ValueError, match=r"option 'zero' of spec 'x\?size=3&zero=0&word=big' must be >= 1, got 0"
    ):
        spec.get_positive_int("zero", None)
    with pytest.raises(ValueError, match=r"must be an integer"):
        spec.get_positive_int("word", 1)
