"""The registered methods and their settings as text (`python expand.py methods [NAME …]`): the
first docstring line of each method, and for the named ones every setting with its type, default and
the meaning its docstring's Args section gives."""

from __future__ import annotations

import dataclasses
import difflib
import inspect

import docstring_parser

from .registry import _METHODS, available_methods


def _class_path(cls: type) -> str:
    return f"diffexpand.methods.{cls.__name__}"


def _lookup(name: str) -> type:
    """By registry name (`diffii`) or class name (`DiffII`), case-insensitively."""
    for key, cls in _METHODS.items():
        if name.lower() in (key.lower(), cls.__name__.lower()):
            return cls
    known = available_methods() + [c.__name__ for c in _METHODS.values()]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown expansion method {name!r}{hint}; available: {', '.join(available_methods())}")


def _settings(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, meaning) of each init setting of a method class."""
    docs = {
        p.arg_name: " ".join((p.description or "").split())
        for p in docstring_parser.parse(cls.__doc__ or "").params
    }
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append((f.name, str(kind), default, docs.get(f.name, "")))
    return rows


def describe_methods(names: list[str] | None = None) -> str:
    """A table of every registered method; with `names`, each named method's settings in full."""
    if not names:
        lines = ["Expansion methods (python expand.py methods NAME shows a method's settings):", ""]
        for key in available_methods():
            cls = _METHODS[key]
            summary = (inspect.getdoc(cls) or "").split("\n", 1)[0]
            lines.append(f"  {key:<14} {_class_path(cls):<36} {summary}")
        lines += [
            "",
            "Use one in a config (method: {class_path: diffexpand.methods.DiffII, init_args: {...}})",
            "or on the command line: --model.init_args.method=DiffII "
            "--model.init_args.method.split_ratio=0.5",
        ]
        return "\n".join(lines)
    blocks = []
    for name in names:
        cls = _lookup(name)
        summary = (inspect.getdoc(cls) or "").split("\n", 1)[0]
        lines = [f"{cls.name}  ({_class_path(cls)}): {summary}", ""]
        for setting, kind, default, meaning in _settings(cls):
            lines.append(f"  {setting} ({kind}, default {default})")
            if meaning:
                lines.append(f"      {meaning}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
