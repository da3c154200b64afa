"""Expansion methods found by name (timm-style registry of factories)."""

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


def create_method(name: str, **kwargs):
    """Instantiate method `name`, checking and converting `kwargs` against its signature (values
    given on the command line arrive as strings)."""
    if name not in _METHODS:
        raise ValueError(f"unknown expansion method {name!r}; available: {', '.join(available_methods())}")
    cls = _METHODS[name]
    return cls(**typed_kwargs(cls, kwargs, f"expansion method {name!r}"))


def available_methods() -> list[str]:
    return sorted(_METHODS)
