"""The generic registry behind the prior and data-set registries, tested by its properties."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from coopt_flwr.registry.datasets import UnknownDatasetError
from coopt_flwr.registry.priors import UnknownPriorError
from coopt_flwr.registry.registry import Registry, UnknownNameError
from coopt_flwr.registry.spec import Option, Spec, SpecSchema, parse_spec


def _registry(cache_size: int | None = None) -> tuple[Registry[object], Counter[str]]:
    """A registry of ``thing`` and ``other`` whose factories count their builds."""
    builds: Counter[str] = Counter()
    reg: Registry[object] = Registry("widget", cache_size=cache_size)
    for name in ("thing", "other"):

        @reg.register(name)
        def _build(spec: Spec, *, n: int = 0) -> object:
            builds[spec.text] += 1
            return object()

    return reg, builds


def _create(reg: Registry[object], text: str, n: int = 0) -> object:
    spec = parse_spec(text)
    factory = reg.factory(spec)
    return reg.cached((spec.text, n), lambda: factory(spec, n=n))


def test_register_returns_factory_and_lists_sorted_names() -> None:
    reg: Registry[int] = Registry("widget")

    def _zeta(spec: Spec) -> int:
        return 1

    assert reg.register("zeta")(_zeta) is _zeta
    reg.register("alpha")(_zeta)
    assert reg.names() == ["alpha", "zeta"]
    assert "alpha" in reg and "beta" not in reg


def test_duplicate_name_refused_and_first_kept() -> None:
    reg, _ = _registry()
    first = reg.factory(parse_spec("thing"))
    with pytest.raises(ValueError, match=r"widget 'thing' is already registered"):
        reg.register("thing")(lambda spec: object())
    assert reg.factory(parse_spec("thing")) is first


@pytest.mark.parametrize("name", ["", "bad name", "-lead", "a/b", "a:b"])
def test_invalid_name_refused_at_once(name: str) -> None:
    with pytest.raises(ValueError, match=r"invalid widget name"):
        Registry("widget").register(name)


def test_unknown_name_suggests_close_ones_and_lists_all() -> None:
    reg, _ = _registry()
    with pytest.raises(UnknownNameError) as info:
        reg.factory(parse_spec("thnig?x=1"))
    message = str(info.value)
    assert message.startswith("unknown widget 'thnig' in spec 'thnig?x=1'")  # no KeyError quoting
    assert "did you mean thing?" in message
    assert message.endswith("available: other, thing")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownNameError) as far:
        reg.factory(parse_spec("zzzzzz"))
    assert "did you mean" not in str(far.value)


@pytest.mark.parametrize(
    ("error", "registry_kind"), [(UnknownPriorError, "prior"), (UnknownDatasetError, "data set")]
)
def test_error_type_is_the_registry_s(error: type[UnknownNameError], registry_kind: str) -> None:
    reg: Registry[object] = Registry(registry_kind, error=error)
    with pytest.raises(error, match=rf"^unknown {registry_kind} 'x'"):
        reg.factory(parse_spec("x"))


def test_cache_hit_returns_same_object_and_builds_once() -> None:
    reg, builds = _registry()
    first = _create(reg, "thing")
    assert _create(reg, "thing") is first
    assert _create(reg, "thing", n=1) is not first  # the key holds the arguments too
    assert builds["thing"] == 2


def test_unbounded_cache_keeps_everything() -> None:
    reg, builds = _registry(cache_size=None)
    kept = [_create(reg, "thing", n) for n in range(50)]
    assert all(_create(reg, "thing", n) is obj for n, obj in enumerate(kept))
    assert builds["thing"] == 50


@pytest.mark.parametrize("size", [1, 2, 4])
def test_lru_evicts_least_recently_used(size: int) -> None:
    reg, _ = _registry(cache_size=size)
    oldest = _create(reg, "thing", 0)
    for n in range(1, size + 1):
        _create(reg, "other", n)
    assert _create(reg, "thing", 0) is not oldest  # evicted by the size+1-th entry


def test_lru_hit_refreshes_entry() -> None:
    reg, _ = _registry(cache_size=2)
    a = _create(reg, "thing", 0)
    b = _create(reg, "thing", 1)
    assert _create(reg, "thing", 0) is a  # now a is the most recent
    _create(reg, "thing", 2)  # evicts b, not a
    assert _create(reg, "thing", 0) is a
    assert _create(reg, "thing", 1) is not b


def test_pools_are_separate_lrus() -> None:
    reg, _ = _registry(cache_size=2)
    spec = parse_spec("thing")
    factory = reg.factory(spec)
    shared = reg.cached("shared", lambda: factory(spec), pool="shared")
    for n in range(10):  # a churn of one-off objects in another pool
        reg.cached(("seeded", n), lambda: factory(spec), pool="seeded")
    assert reg.cached("shared", lambda: factory(spec), pool="shared") is shared
    assert reg.cached(("seeded", 9), lambda: factory(spec), pool="seeded") is not None
    reg.clear()
    assert reg.cached("shared", lambda: factory(spec), pool="shared") is not shared


def test_cache_size_zero_never_caches() -> None:
    reg, builds = _registry(cache_size=0)
    assert _create(reg, "thing") is not _create(reg, "thing")
    assert builds["thing"] == 2


@pytest.mark.parametrize("size", [-1, 1.5])
def test_bad_cache_size_refused(size: float) -> None:
    with pytest.raises(ValueError, match=r"cache_size"):
        Registry("widget", cache_size=size)  # type: ignore[arg-type]


def test_clear_empties_cache_but_keeps_factories() -> None:
    reg, builds = _registry(cache_size=4)
    first = _create(reg, "thing")
    reg.clear()
    assert _create(reg, "thing") is not first
    assert builds["thing"] == 2
    assert reg.names() == ["other", "thing"]


def test_failed_build_caches_nothing() -> None:
    reg: Registry[object] = Registry("widget")
    calls: list[int] = []

    def _flaky() -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first build fails")
        return object()

    with pytest.raises(RuntimeError):
        reg.cached("k", _flaky)
    first = reg.cached("k", _flaky)
    assert reg.cached("k", _flaky) is first and len(calls) == 2


def test_concurrent_requests_build_once() -> None:
    reg, builds = _registry()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(_create(reg, "thing"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds["thing"] == 1
    assert all(r is results[0] for r in results)


def test_check_uses_the_schema_and_builds_nothing() -> None:
    reg: Registry[object] = Registry("widget")
    built: list[str] = []
    schema = SpecSchema(options={"n": Option(int, 1, low=1)})
    reg.register("typed", schema=schema)(lambda spec, **kw: built.append(spec.text))
    reg.register("free")(lambda spec, **kw: built.append(spec.text))
    assert reg.schema("typed") is schema and reg.schema("free") is None and reg.schema("none") is None
    assert reg.check(parse_spec("typed?n=3")) == {"n": 3}
    assert reg.check(parse_spec("free?anything=1")) is None  # no schema: only the name is checked
    with pytest.raises(ValueError, match=r"must be >= 1, got 0"):
        reg.check(parse_spec("typed?n=0"))
    with pytest.raises(UnknownNameError, match=r"did you mean typed"):
        reg.check(parse_spec("typd?n=1"))
    assert built == []
