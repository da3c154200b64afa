"""Check and convert a dict of keyword arguments against a class's signature.

Nested settings given as plain dicts in a config (`real`) arrive from the command line as
strings; jsonargparse, which parses the rest of the config, converts them the same way and names any
unknown key.
"""

from __future__ import annotations

from jsonargparse import ArgumentError, ArgumentParser


def typed_kwargs(cls, kwargs: dict | None, what: str) -> dict:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls)
    # `--...real.x=null` on the command line reaches a plain dict as the string "None"
    kwargs = {k: None if v in ("None", "null") else v for k, v in (kwargs or {}).items()}
    try:
        cfg = parser.parse_object(kwargs)
    except ArgumentError as err:
        raise ValueError(f"bad settings for {what}: {err}") from err
    return parser.instantiate(cfg).as_dict()
