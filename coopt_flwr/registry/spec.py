"""Spec strings shared by the data-set and prior registries.

A spec names a registered factory plus an optional argument and options::

    name[:arg][?key=value[&key=value...]]

Examples: ``timm:resnet18?size=64&checkpoint=/tmp/a.pth``, ``efficientnet_lite0?size=96``,
``human``, ``npz:/data/cifar10/train.npz``, ``digits``.

What a registered name accepts is declared by a :class:`SpecSchema`: whether it takes the
argument, and each option as an :class:`Option` (type, default, bounds).
:meth:`SpecSchema.validate` checks a spec against it and returns the typed option values,
without building anything, so a launcher can refuse a bad spec before any node work.

The name ends at the first ``:`` or ``?``; the argument runs from the first ``:`` to the first
``?`` (so it may itself contain ``:``, e.g. ``timm:hf-hub:org/model``); options follow the first
``?``. Arguments therefore cannot contain ``?``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, overload

__all__ = [
    "Option",
    "Spec",
    "SpecSchema",
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
        Naming the first unknown option, the closest allowed one, and listing them all.
    """
    allowed_set = set(allowed)
    for key in spec.options:
        if key not in allowed_set:
            raise ValueError(_unknown_option_message(spec, key, allowed_set))


def _unknown_option_message(spec: Spec, key: str, allowed: Iterable[str]) -> str:
    names = sorted(allowed)
    if not names:
        return f"unknown option {key!r} in spec {spec.text!r}; {spec.name!r} takes no options"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown option {key!r} in spec {spec.text!r}; {hint}allowed options: {', '.join(names)}"


_OPTION_TYPES = (int, float, bool, str)


def _number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Option:
    """One option a registered name accepts: its type, its default and its bounds.

    Attributes
    ----------
    type : type
        ``int`` (base-10 digits, as :meth:`Spec.get_int`), ``float`` (finite), ``bool``
        (as :meth:`Spec.get_bool`) or ``str`` (the text as given).
    default : object
        The value when the option is absent; None means "the factory's own choice".
    low, high : float or None
        Bounds of a number, inclusive unless ``low_open`` / ``high_open``; None: unbounded.
    low_open, high_open : bool
        Whether the bound itself is excluded.
    choices : tuple of str or None
        The values a ``str`` option may take; None: any.
    help : str
        What the option does, for listings.
    """

    type: type = str
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in _OPTION_TYPES:
            raise TypeError(f"an option's type must be one of int, float, bool, str; got {self.type!r}")
        numeric = self.type in (int, float)
        if not numeric and (self.low is not None or self.high is not None):
            raise TypeError(f"bounds apply to int and float options, not {self.type.__name__}")
        if self.choices is not None and self.type is not str:
            raise TypeError("choices apply to str options")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"option bounds are reversed: low {self.low} > high {self.high}")

    def bounds(self) -> str:
        """The allowed range in interval notation (``[1, 4096]``, ``(0, 1]``, ``>= 1``), or ""."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{left}{_number_text(low)}, {_number_text(high)}{right}"
        if low is not None:
            return f"{'>' if self.low_open else '>='} {_number_text(low)}"
        if high is not None:
            return f"{'<' if self.high_open else '<='} {_number_text(high)}"
        return ""

    def parse(self, spec: Spec, key: str) -> Any:
        """The value of option ``key`` of ``spec``, typed and checked; ``default`` when absent.

        Raises
        ------
        ValueError
            If the value is not of the option's type, outside its bounds or not a choice,
            naming the option, the spec and what is allowed.
        """
        raw = spec.options.get(key)
        if raw is None:
            return self.default
        if self.type is bool:
            return spec.get_bool(key, False)
        if self.type is str:
            if self.choices is not None and raw not in self.choices:
                allowed = ", ".join(self.choices)
                raise ValueError(
                    f"option {key!r} of spec {spec.text!r} must be one of {allowed}, got {raw!r}"
                )
            return raw
        value: float
        if self.type is int:
            value = spec.get_int(key, None)  # type: ignore[assignment]
        else:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(
                    f"option {key!r} of spec {spec.text!r} must be a number, got {raw!r}"
                ) from None
            if not math.isfinite(value):
                raise ValueError(f"option {key!r} of spec {spec.text!r} must be a finite number, got {raw!r}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            where = "lie in" if self.low is not None and self.high is not None else "be"
            raise ValueError(f"option {key!r} of spec {spec.text!r} must {where} {self.bounds()}, got {raw}")
        return value


@dataclass(frozen=True, eq=False)
class SpecSchema:
    """What a registered name accepts: its ``:`` argument and its options.

    A registry checks a spec against its name's schema before the factory runs
    (:meth:`coopt_flwr.registry.registry.Registry.check`), so the factory receives values that
    are already typed and in bounds, and a launcher can check a spec without building anything.

    Attributes
    ----------
    arg : str or None
        None: the name takes no ``:`` argument. Otherwise what its required argument is,
        for messages (``"a timm architecture"``).
    options : Mapping of str to Option
        Every option the name accepts.
    refused : Mapping of str to str
        Options refused with a reason of their own, which the message gives instead of the
        list of allowed options.
    check : callable or None
        ``check(spec, values)`` for rules across options (``values`` as :meth:`validate`
        returns them); raises ValueError.
    """

    arg: str | None = None
    options: Mapping[str, Option] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[Spec, Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        # Read-only copies: a schema is shared by every spec checked against it.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))
        for key in (*self.options, *self.refused):
            if not _KEY_RE.fullmatch(key):
                raise ValueError(f"invalid option key {key!r} in a spec schema")
        both = set(self.options) & set(self.refused)
        if both:
            raise ValueError(f"options both accepted and refused: {sorted(both)}")

    def validate(self, spec: Spec) -> dict[str, Any]:
        """Check ``spec`` against this schema and return every option's value.

        Parameters
        ----------
        spec : Spec
            A parsed spec of the name this schema belongs to.

        Returns
        -------
        dict
            Option key to its typed value (its ``default`` when absent), for every option of
            the schema, in the schema's order.

        Raises
        ------
        ValueError
            For an argument the name does not take (or a missing one), an unknown or refused
            option (with the closest allowed one), a value of the wrong type or out of bounds,
            or a broken rule across options.
        """
        if self.arg is None:
            reject_arg(spec)
        else:
            require_arg(spec, self.arg)
        for key in spec.options:
            if key in self.refused:
                raise ValueError(f"spec {spec.text!r}: {self.refused[key]}")
            if key not in self.options:
                raise ValueError(_unknown_option_message(spec, key, self.options))
        values = {key: option.parse(spec, key) for key, option in self.options.items()}
        if self.check is not None:
            self.check(spec, MappingProxyType(values))
        return values


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
