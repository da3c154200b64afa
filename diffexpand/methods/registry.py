"""Expansion methods found by name (timm-style registry of factories)."""

from __future__ import annotations

from collections.abc import Callable

from jsonargparse import ArgumentError, ArgumentParser

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
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls)
    try:
        cfg = parser.parse_object(kwargs)
    except ArgumentError as err:
        raise ValueError(f"bad settings for expansion method {name!r}: {err}") from err
    return cls(**parser.instantiate(cfg).as_dict())


def available_methods() -> list[str]:
    return sorted(_METHODS)
