"""Spec strings shared by the data-set and prior registries.

A spec names a registered factory plus an optional argument and options::

    name[:arg][?key=value[&key=value...]]

Examples: ``timm:resnet18?size=64&checkpoint=/tmp/a.pth``, ``efficientnet_lite0?size=96``,
``human``, ``npz:/data/cifar10/train.npz``, ``digits``.

The name ends at the first ``:`` or ``?``; the argument runs from the first ``:`` to the first
``?`` (so it may itself contain ``:``, e.g. ``timm:hf-hub:org/model``); options follow the first
``?``. Arguments therefore cannot contain ``?``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import overload

__all__ = [
    "Spec",
    "check_options",
    "parse_spec",
    "reject_arg",
    "require_arg",
    "validate_name",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Spec:
    """A parsed spec string.

    Attributes
    ----------
    name : str
        Registry name (the part before ``:`` / ``?``).
    arg : str or None
        The argument after ``:``, or None when there is none.
    options : Mapping[str, str]
        The ``key=value`` options, in the order given.
    text : str
        The original spec string, stripped of surrounding whitespace.
    """

    name: str
    arg: str | None
    options: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    def __post_init__(self) -> None:
        # A private copy keeps the frozen spec independent of the caller's dict.
        object.__setattr__(self, "options", dict(self.options))

    def __hash__(self) -> int:
        # The generated hash would fail on the dict field; sort so it agrees with ==.
        return hash((self.name, self.arg, tuple(sorted(self.options.items())), self.text))

    def __str__(self) -> str:
        return self.text

    def get_str(self, key: str, default: str | None) -> str | None:
        """Return option ``key`` as a string, or ``default`` when it is absent."""
        return self.options.get(key, default)

    def get_int(self, key: str, default: int | None) -> int | None:
        """Return option ``key`` as an int, or ``default`` when it is absent.

        Raises
        ------
        ValueError
            If the value is not an integer.
        """
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return int(value, 10)
        except ValueError:
            raise ValueError(
                f"option {key!r} of spec {self.text!r} must be an integer, got {value!r}"
            ) from None

    @overload
    def get_positive_int(self, key: str, default: int) -> int: ...
    @overload
    def get_positive_int(self, key: str, default: None) -> int | None: ...
    def get_positive_int(self, key: str, default: int | None) -> int | None:
        """Return option ``key`` as an int >= 1, or ``default`` when it is absent.

        Raises
        ------
        ValueError
            If the value is not an integer, or is below 1.
        """
        value = self.get_int(key, default)
        if value is not None and value < 1:
            raise ValueError(f"option {key!r} of spec {self.text!r} must be >= 1, got {value}")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        """Return option ``key`` as a bool (true/false/1/0/yes/no/on/off), or ``default``.

        Raises
        ------
        ValueError
            If the value is not one of the accepted spellings.
        """
        value = self.options.get(key)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(
            f"option {key!r} of spec {self.text!r} must be a boolean (true/false/1/0/yes/no), got {value!r}"
        )


def validate_name(name: str, what: str = "name") -> str:
    """Check that ``name`` is a valid registry name and return it.

    Raises
    ------
    ValueError
        If ``name`` is empty or contains characters other than letters, digits, ``_.-``.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return name


def parse_spec(text: str) -> Spec:
    """Parse ``name[:arg][?key=value[&key=value...]]`` into a :class:`Spec`.

    Parameters
    ----------
    text : str
        The spec string; surrounding whitespace is ignored.

    Returns
    -------
    Spec
        The parsed spec.

    Raises
    ------
    ValueError
        For empty text, an empty or invalid name, an empty argument after ``:``, an option
        without ``=``, an empty key or value, or a key given twice.
    """
    if not isinstance(text, str):
        raise TypeError(f"a spec must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty spec: expected 'name[:arg][?key=value&...]'")

    head, has_query, query = stripped.partition("?")
    name, has_arg, arg = head.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"spec {stripped!r} has an empty name before ':' or '?'")
    validate_name(name, what=f"name in spec {stripped!r}")

    arg_value: str | None = None
    if has_arg:
        arg_value = arg.strip()
        if not arg_value:
            raise ValueError(f"spec {stripped!r} has an empty argument after ':'")

    options: dict[str, str] = {}
    if has_query:
        if not query.strip():
            raise ValueError(f"spec {stripped!r} has an empty option list after '?'")
        for item in query.split("&"):
            key, has_eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not has_eq:
                raise ValueError(
                    f"bad option {item!r} in spec {stripped!r}: expected key=value "
                    "(options are separated by '&')"
                )
            if not _KEY_RE.fullmatch(key):
                raise ValueError(f"bad option key {key!r} in spec {stripped!r}")
            if not value:
                raise ValueError(f"option {key!r} in spec {stripped!r} has an empty value")
            if key in options:
                raise ValueError(f"option {key!r} is given twice in spec {stripped!r}")
            options[key] = value

    return Spec(name=name, arg=arg_value, options=options, text=stripped)


def check_options(spec: Spec, allowed: Iterable[str]) -> None:
    """Raise if ``spec`` has an option outside ``allowed``.

    Raises
    ------
    ValueError
        Naming the first unknown option and listing the allowed ones.
    """
    allowed_set = set(allowed)
    for key in spec.options:
        if key not in allowed_set:
            hint = (
                f"allowed options: {', '.join(sorted(allowed_set))}"
                if allowed_set
                else f"{spec.name!r} takes no options"
            )
            raise ValueError(f"unknown option {key!r} in spec {spec.text!r}; {hint}")


def require_arg(spec: Spec, what: str) -> str:
    """Return the spec's argument, raising if it has none.

    Parameters
    ----------
    spec : Spec
        The parsed spec.
    what : str
        What the argument is, for the message (e.g. ``"a timm architecture"``).

    Raises
    ------
    ValueError
        If the spec has no ``:arg`` part.
    """
    if spec.arg is None:
        raise ValueError(f"spec {spec.text!r} needs {what}: write '{spec.name}:<{what}>'")
    return spec.arg


def reject_arg(spec: Spec) -> None:
    """Raise ValueError if the spec has an ``:arg`` part that its factory does not take."""
    if spec.arg is not None:
        raise ValueError(f"spec {spec.text!r}: {spec.name!r} takes no ':' argument, got {spec.arg!r}")
