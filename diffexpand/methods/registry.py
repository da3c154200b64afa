"""Expansion methods found by name (timm-style registry): `register_method("name")` on a method class
makes it a config value (`method: {class_path: …}`), a manifest's `method` field, and a subject of the
shared method tests (tests/test_method_contract.py), which run for every registered name."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from diffexpand.typed_args import typed_kwargs

_METHODS: dict[str, Callable] = {}


def register_method(name: str):
    def decorate(cls):
        if name in _METHODS:
            raise ValueError(f"expansion method {name!r} registered twice")
        _METHODS[name] = cls
        cls.name = name
        return accept_null_strings(cls)

    return decorate


def accept_null_strings(cls):
    """A method's optional text settings read "None" / "null" as None. jsonargparse (4.53) hands
    `--model.init_args.method.suffix_preset=null` to a subclass nested in another subclass as the
    string "None"; without this, clearing a config's value from the command line would not work."""
    optional_text = [f.name for f in dataclasses.fields(cls) if str(f.type).replace(" ", "") in OPTIONAL_TEXT]
    if not optional_text:
        return cls
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for key in optional_text:
            if kwargs.get(key) in ("None", "null"):
                kwargs[key] = None
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


OPTIONAL_TEXT = {"str|None", "None|str", "Optional[str]", str | None}


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
