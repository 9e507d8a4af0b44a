"""The architecture's import rules, checked on the source: the folders say what may use what.

- ``coopt_flwr/protocol/`` is the protocol without Flower and without training code;
- only ``coopt_flwr/learn/`` and ``simulations/`` import the learning stack;
- the Flower apps import only ``strategies/``, ``protocol/``, ``registry/``, ``store/``,
  ``config`` and ``devices``;
- no module imports a package above it (``registry/`` and ``store/`` stay below ``protocol/``
  at run time, ``devices`` is a leaf).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("coopt_flwr", "strategies", "simulations")


def _imports(path: Path) -> set[str]:
    """Every module name imported by a file, at any depth (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in _files(folder):
        hits = sorted(n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in forbidden))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


def test_the_layout_has_its_rooms() -> None:
    for room in ("protocol", "registry", "learn", "store"):
        assert (ROOT / "coopt_flwr" / room / "__init__.py").is_file(), room
    for module in ("server_app", "client_app", "config", "devices"):
        assert (ROOT / "coopt_flwr" / f"{module}.py").is_file(), module


def test_protocol_imports_neither_flower_nor_training_code() -> None:
    assert _offenders("coopt_flwr/protocol", ("flwr", "coopt_flwr.learn", "strategies", "simulations")) == {}


@pytest.mark.parametrize(
    "folder", ["coopt_flwr/protocol", "coopt_flwr/registry", "coopt_flwr/store", "strategies"]
)
def test_only_learn_and_simulations_import_the_learning_stack(folder: str) -> None:
    assert _offenders(folder, ("coopt_flwr.learn", "lightly")) == {}


def test_flower_apps_import_only_the_layers_below_them() -> None:
    allowed = (
        "coopt_flwr.protocol",
        "coopt_flwr.registry",
        "coopt_flwr.store",
        "coopt_flwr.config",
        "coopt_flwr.devices",
        "strategies",
    )
    for app in ("server_app.py", "client_app.py"):
        ours = {n for n in _imports(ROOT / "coopt_flwr" / app) if n.split(".")[0] in PACKAGES}
        stray = sorted(n for n in ours if not any(n == a or n.startswith(a + ".") for a in allowed))
        assert stray == [], f"{app} imports {stray}"


def test_lower_layers_do_not_import_upper_ones() -> None:
    upper = ("coopt_flwr.server_app", "coopt_flwr.client_app", "strategies", "simulations")
    for folder in ("coopt_flwr/protocol", "coopt_flwr/registry", "coopt_flwr/store", "coopt_flwr/learn"):
        assert _offenders(folder, upper) == {}, folder
    assert _offenders("strategies", ("simulations", "coopt_flwr.server_app", "coopt_flwr.client_app")) == {}
    devices = {n for n in _imports(ROOT / "coopt_flwr" / "devices.py") if n.split(".")[0] in PACKAGES}
    assert devices == set()
