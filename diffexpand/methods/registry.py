"""Expansion methods found by name (timm-style registry): `register_method("name")` on a method class
makes it a config value (`method: {class_path: …}`), a manifest's `method` field, and a subject of the
shared method tests (tests/test_method_contract.py), which run for every registered name."""

from __future__ import annotations

from collections.abc import Callable

from diffexpand.typed_args import typed_kwargs

_METHODS: dict[str, Callable] = {}


def register_method(name: str):
    def decorate(cls):
        if name in _METHODS:
            raise ValueError(f"expansion method {name!r} registered twice")
        _METHODS[name] = cls
        cls.name = name
        return cls

    return decorate


def method_class(name: str) -> type:
    if name not in _METHODS:
        raise ValueError(f"unknown expansion method {name!r}; available: {', '.join(available_methods())}")
    return _METHODS[name]


def create_method(name: str, **kwargs):
    """Instantiate method `name`, checking and converting `kwargs` against its signature (values
    given on the command line arrive as strings)."""
    cls = method_class(name)
    return cls(**typed_kwargs(cls, kwargs, f"expansion method {name!r}"))


def available_methods() -> list[str]:
    return sorted(_METHODS)
