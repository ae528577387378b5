"""Typed settings shared by every command, mirrored one-to-one by YAML files and CLI flags.

A command's settings are a pydantic model whose fields carry attribute docstrings. The same
field is ``lora_r: 16`` in a YAML file and ``--lora-r 16`` on the command line; its docstring is
the ``--help`` text. Values are validated before any model or data is touched, and a bad value
is reported in one line naming the field and where it came from.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from tunescope.errors import UserError


class Config(BaseModel):
    """Base class of every settings object: unknown keys are errors, docstrings are help text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


C = TypeVar("C", bound=Config)


def flag(name: str) -> str:
    """Return the command-line flag that mirrors the field ``name``."""
    return "--" + name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """Add one flag per field of ``cls``, grouped by the settings class that declares it.

    Flags default to "not given" so that only what the user typed overrides the YAML file; the
    strings are converted and checked by pydantic, not by argparse, so YAML and CLI values go
    through exactly the same validation.
    """
    added: set[str] = set()
    for owner in reversed(cls.__mro__):
        if not (isinstance(owner, type) and issubclass(owner, Config)) or owner is Config:
            continue
        # A field a subclass declares again (to give it its own default and help) gets one flag, in its first group.
        own_fields = [name for name in owner.__annotations__ if name in cls.model_fields and name not in added]
        added |= set(own_fields)
        if not own_fields:
            continue
        title = (owner.__doc__ or owner.__name__).strip().splitlines()[0].rstrip(".")
        group = parser.add_argument_group(title)
        for name in own_fields:
            field = cls.model_fields[name]
            annotation = _unwrap_optional(field.annotation)
            default = "required" if field.is_required() else f"default: {field.default!r}"
            kwargs: dict[str, Any] = {
                "dest": name,
                "default": argparse.SUPPRESS,
                "help": f"{field.description or ''} ({default})".replace("%", "%%"),
            }
            if annotation is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(annotation) is Literal:
                kwargs["choices"] = [str(choice) for choice in typing.get_args(annotation)]
            elif typing.get_origin(annotation) is list:
                kwargs["nargs"] = "+"
            kwargs.setdefault("metavar", None if "choices" in kwargs else name.upper())
            if kwargs.get("action"):
                kwargs.pop("metavar")
            group.add_argument(flag(name), **kwargs)


def read_yaml_settings(path: str | Path) -> dict[str, Any]:
    """Read a YAML settings file into a dict, with one-line errors for unreadable files."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read config file: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of setting names to values")
    return data


def build_config(
    cls: type[C],
    *,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> C:
    """Merge ``base`` < YAML file < ``overrides`` and validate the result as ``cls``.

    Raises:
        UserError: naming the offending field and whether it came from the YAML file or a flag.
    """
    overrides = overrides or {}
    from_yaml = read_yaml_settings(yaml_path) if yaml_path else {}
    merged = {**(base or {}), **from_yaml, **overrides}
    try:
        return cls.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        if first["type"] == "missing":
            raise UserError(f"missing required setting {flag(name)} (or '{name}:' in a config file)") from None
        if name in overrides:
            where = flag(name)
        elif name in from_yaml:
            where = f"{yaml_path}: {name}"
        else:
            where = name
        if first["type"] == "extra_forbidden":
            raise UserError(f"{where}: unknown setting '{name}'") from None
        message = first["msg"].removeprefix("Value error, ")
        if not name:  # a check across several settings
            raise UserError(f"{yaml_path or 'settings'}: {message}") from None
        raise UserError(f"{where}: {message} (got {first.get('input')!r})") from None


def config_to_dict(config: Config) -> dict[str, Any]:
    """Return the settings as plain, YAML-ready values in declaration order."""
    return config.model_dump(mode="json")
