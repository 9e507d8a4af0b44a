"""Spec-string parsing shared by the data-set and prior registries."""

from __future__ import annotations

import pickle

import pytest

from coopt_flwr.registry.spec import (
    Option,
    Spec,
    SpecSchema,
    check_options,
    parse_spec,
    reject_arg,
    require_arg,
)


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
    with pytest.raises(ValueError, match=r"unknown option 'sizee'.*; did you mean size\? allowed options"):
        check_options(parse_spec("timm:resnet18?sizee=3"), {"size", "checkpoint"})


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


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("option", "bounds", "good", "bad"),
    [
        (Option(int, low=1), ">= 1", ["1", "900"], ["0", "-3"]),
        (Option(int, low=1, high=64), "[1, 64]", ["1", "64"], ["0", "65"]),
        (Option(float, low=0.0, high=1.0, low_open=True), "(0, 1]", ["1", "1e-9", "0.5"], ["0", "1.01"]),
        (Option(float, low=0.0, high=1.0, high_open=True), "[0, 1)", ["0", "0.999"], ["1", "-0.1"]),
        (Option(float, high=2.5), "<= 2.5", ["-7", "2.5"], ["2.6"]),
        (Option(float, high=2.5, high_open=True), "< 2.5", ["2.4"], ["2.5"]),
    ],
)
def test_option_bounds(option: Option, bounds: str, good: list[str], bad: list[str]) -> None:
    assert option.bounds() == bounds
    for value in good:
        option.parse(parse_spec(f"x?k={value}"), "k")
    for value in bad:
        with pytest.raises(ValueError, match=rf"option 'k' of spec 'x\?k={value}' must .*{value}$"):
            option.parse(parse_spec(f"x?k={value}"), "k")


def test_option_types_and_defaults() -> None:
    spec = parse_spec("x?i=7&f=2.5&b=off&s=hello&bad=seven&inf=inf")
    assert Option(int).parse(spec, "i") == 7 and Option(float).parse(spec, "f") == 2.5
    assert Option(float).parse(spec, "i") == 7.0 and isinstance(Option(float).parse(spec, "i"), float)
    assert Option(bool, True).parse(spec, "b") is False and Option(str).parse(spec, "s") == "hello"
    assert Option(int, 3).parse(spec, "missing") == 3 and Option(str).parse(spec, "missing") is None
    assert Option(str, choices=("hello", "bye")).parse(spec, "s") == "hello"
    with pytest.raises(ValueError, match=r"'s' .* must be one of bye, hi, got 'hello'"):
        Option(str, choices=("bye", "hi")).parse(spec, "s")
    with pytest.raises(ValueError, match=r"'bad' .* must be an integer, got 'seven'"):
        Option(int).parse(spec, "bad")
    with pytest.raises(ValueError, match=r"'bad' .* must be a number, got 'seven'"):
        Option(float).parse(spec, "bad")
    with pytest.raises(ValueError, match=r"'inf' .* must be a finite number, got 'inf'"):
        Option(float).parse(spec, "inf")
    with pytest.raises(ValueError, match=r"'s' .* must be a boolean"):
        Option(bool).parse(spec, "s")


@pytest.mark.parametrize(
    "kwargs",
    [{"type": list}, {"type": str, "low": 1}, {"type": int, "choices": ("a",)}, {"low": 2, "high": 1}],
)
def test_bad_option_declarations_are_refused(kwargs: dict) -> None:
    with pytest.raises((TypeError, ValueError)):
        Option(**({"type": int} | kwargs))


def test_schema_validates_argument_options_and_rules() -> None:
    def _not_both(spec: Spec, values: object) -> None:
        if values["a"] and values["b"]:  # type: ignore[index]
            raise ValueError("a and b are exclusive")

    schema = SpecSchema(
        arg="a thing",
        options={"a": Option(bool, False), "b": Option(bool, False), "n": Option(int, 4, low=1)},
        refused={"c": "c is gone; use a"},
        check=_not_both,
    )
    assert schema.validate(parse_spec("w:x?n=2&a=1")) == {"a": True, "b": False, "n": 2}
    assert list(schema.validate(parse_spec("w:x"))) == ["a", "b", "n"]  # every option, in order
    for text, match in [
        ("w", r"needs a thing"),
        ("w:x?c=1", r"spec 'w:x\?c=1': c is gone; use a"),
        ("w:x?nn=1", r"unknown option 'nn'.*did you mean n\? allowed options: a, b, n"),
        ("w:x?n=0", r"must be >= 1, got 0"),
        ("w:x?a=1&b=1", r"exclusive"),
    ]:
        with pytest.raises(ValueError, match=match):
            schema.validate(parse_spec(text))
    no_arg = SpecSchema()
    assert no_arg.validate(parse_spec("w")) == {}
    with pytest.raises(ValueError, match=r"takes no ':' argument"):
        no_arg.validate(parse_spec("w:x"))
    with pytest.raises(ValueError, match=r"'w' takes no options"):
        no_arg.validate(parse_spec("w?x=1"))
    with pytest.raises(TypeError):
        schema.options["z"] = Option()  # type: ignore[index]
    with pytest.raises(ValueError, match=r"both accepted and refused"):
        SpecSchema(options={"a": Option()}, refused={"a": "no"})
