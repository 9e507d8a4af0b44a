"""One typed registry behind the prior and data-set registries (after timm's model registry).

A :class:`Registry` maps names to factories, each optionally with a
:class:`~coopt_flwr.registry.spec.SpecSchema` of the argument and options it accepts (checked by
:meth:`Registry.check` without building anything). It refuses a name registered twice, answers an
unknown name with the closest registered ones and the full list, and keeps what its factories
built in a thread-safe cache: unbounded (``cache_size=None``), an LRU of ``cache_size``
entries, or none (``cache_size=0``). The caller chooses the cache key, so each registry decides
what makes two requests the same (the spec plus the arguments that change the result).
"""

from __future__ import annotations

import difflib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

from coopt_flwr.registry.spec import Spec, SpecSchema, validate_name

__all__ = ["Registry", "UnknownNameError", "unknown_name_message"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A spec names nothing registered: a KeyError for a lookup, a ValueError for bad config."""

    def __str__(self) -> str:
        # KeyError would otherwise print the repr of the message, quotes and all.
        return str(self.args[0]) if self.args else ""


def unknown_name_message(kind: str, spec: Spec, names: Iterable[str]) -> str:
    """The message for a spec naming nothing registered: the closest names, then all of them."""
    known = sorted(names)
    close = difflib.get_close_matches(spec.name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown {kind} {spec.name!r} in spec {spec.text!r}; {hint}available: {', '.join(known)}"


class Registry(Generic[T]):
    """Named factories of ``T`` with a cache of the objects they built.

    Parameters
    ----------
    kind : str
        What is registered, for messages (``"prior"``, ``"data set"``).
    error : type of UnknownNameError
        Raised by :meth:`factory` for a name that is not registered.
    cache_size : int or None
        None: cache without bound; N >= 1: keep the N most recently used; 0: do not cache.
    """

    def __init__(
        self, kind: str, *, error: type[UnknownNameError] = UnknownNameError, cache_size: int | None = None
    ) -> None:
        if cache_size is not None and (int(cache_size) != cache_size or cache_size < 0):
            raise ValueError(f"cache_size must be None or an integer >= 0, got {cache_size!r}")
        self.kind = kind
        self.error = error
        self.cache_size = cache_size
        self._factories: dict[str, Callable[..., T]] = {}
        self._schemas: dict[str, SpecSchema] = {}
        self._caches: dict[Hashable, OrderedDict[Hashable, T]] = {}  # pool -> its LRU
        self._lock = threading.Lock()

    def register(
        self, name: str, *, schema: SpecSchema | None = None
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory under ``name``; returns the factory unchanged.

        Parameters
        ----------
        name : str
            The registry name.
        schema : SpecSchema or None
            The argument and options the factory accepts, checked by :meth:`check`; None: the
            factory checks its own options when it builds (only the name is checked before).

        Raises
        ------
        ValueError
            If ``name`` is invalid (at once) or already registered (when the decorator is applied).
        """
        validate_name(name, what=f"{self.kind.replace(' ', '-')} name")

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            if schema is None:
                self._schemas.pop(name, None)
            else:
                self._schemas[name] = schema
            return factory

        return decorator

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def factory(self, spec: Spec) -> Callable[..., T]:
        """Return the factory registered under ``spec.name``.

        Raises
        ------
        UnknownNameError
            (the registry's ``error`` type) naming the closest registered names, then all of them.
        """
        found = self._factories.get(spec.name)
        if found is not None:
            return found
        raise self.error(unknown_name_message(self.kind, spec, self._factories))

    def schema(self, name: str) -> SpecSchema | None:
        """The schema ``name`` was registered with, or None (also for an unregistered name)."""
        return self._schemas.get(name) if name in self._factories else None

    def check(self, spec: Spec) -> dict[str, Any] | None:
        """Check ``spec`` without building anything: its name, and its argument and options
        against the name's schema.

        Returns
        -------
        dict or None
            The typed option values (:meth:`SpecSchema.validate`), or None when the name was
            registered without a schema (its factory checks its options when it builds).

        Raises
        ------
        UnknownNameError
            (the registry's ``error`` type) for a name that is not registered.
        ValueError
            For an argument or option the schema refuses.
        """
        self.factory(spec)
        schema = self.schema(spec.name)
        return None if schema is None else schema.validate(spec)

    def cached(self, key: Hashable, build: Callable[[], T], pool: Hashable = None) -> T:
        """Return the object cached under ``key``, or ``build()`` it and cache it.

        The lock is held while building, so concurrent requests build each object once. A hit
        makes the entry the most recently used; past ``cache_size`` the least recent of its
        ``pool`` is dropped. Pools are separate LRUs of ``cache_size`` each, so objects of one
        kind (e.g. hundreds of seeded networks, each used once) never evict another's (the one
        pretrained network every holder shares).
        """
        with self._lock:
            cache = self._caches.setdefault(pool, OrderedDict())
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            value = build()
            if self.cache_size != 0:
                cache[key] = value
                while self.cache_size is not None and len(cache) > self.cache_size:
                    cache.popitem(last=False)
            return value

    def clear(self) -> None:
        """Forget every cached object (the registered factories stay)."""
        with self._lock:
            self._caches.clear()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()}, cache_size={self.cache_size})"
