"""engine's public surface: `__all__` names exactly what the package exports (as httpx's
tests/test_exported_members.py checks for httpx)."""

from __future__ import annotations

from types import ModuleType

import engine


def test_all_is_what_engine_exports() -> None:
    exported = sorted(
        name
        for name, value in vars(engine).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    )
    assert engine.__all__ == exported


def test_every_exported_name_is_defined() -> None:
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name
