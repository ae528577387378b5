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
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from tunescope.errors import UserError


def deprecated(old: str, new: str) -> None:
    """Say on stderr (once per spelling) that ``old`` is an old spelling of ``new``, which still works for now.

    Every renamed flag, positional argument and YAML key goes through here, so the message reads the same
    everywhere; the CLI prints warnings as one ``warning: ...`` line.
    """
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}", FutureWarning, 2)


class Config(BaseModel):
    """Base class of every settings object: unknown keys are errors, docstrings are help text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    RENAMED: ClassVar[dict[str, str]] = {}
    """Old setting names mapped to their new ones: the old YAML key and flag keep working, with a warning."""

    @classmethod
    def renamed_settings(cls) -> dict[str, str]:
        """Old names of this class's settings, declared by it or any class it derives from."""
        return {old: new for owner in reversed(cls.__mro__) for old, new in vars(owner).get("RENAMED", {}).items()}

    @model_validator(mode="before")
    @classmethod
    def _accept_old_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for old, new in cls.renamed_settings().items():
            if old in data:
                deprecated(f"setting '{old}'", f"'{new}' (--{new.replace('_', '-')})")
                data = {key: value for key, value in data.items() if key != old} | {new: data.get(new, data[old])}
        return data


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


def _shown_default(field: Any) -> str | None:
    """The ``(default: ...)`` a flag's help ends with, or None where the help text states its own default."""
    if field.is_required():
        return "(required)"
    if "default" in (field.description or "").lower():
        return None
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "(default: unset)"
    if isinstance(value, list):  # as it is typed on the command line
        return f"(default: {' '.join(map(str, value))})"
    return f"(default: {value!r})"


def _renamed_flag(action: type[argparse.Action], new: str) -> type[argparse.Action]:
    """``action``, warning that the flag it was given under is an old spelling of ``new``."""

    class RenamedFlag(action):  # type: ignore[misc,valid-type]
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
            negated = option_string is not None and option_string.startswith("--no-")
            deprecated(str(option_string), new.replace("--", "--no-", 1) if negated else new)
            super().__call__(parser, namespace, values, option_string)

    return RenamedFlag


def required_group(parser: argparse.ArgumentParser, title: str = "required settings") -> Any:
    """A group of ``parser``'s flags shown first in its help, before argparse's own "options"."""
    group = parser.add_argument_group(title)
    # argparse prints groups in the order they were made; its positionals and options come first.
    parser._action_groups.insert(1, parser._action_groups.pop())  # noqa: SLF001
    return group


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """Add ``--config`` and one flag per field of ``cls``: required ones first, the rest grouped by declaring class.

    Flags default to "not given" so that only what the user typed overrides the YAML file; the
    strings are converted and checked by pydantic, not by argparse, so YAML and CLI values go
    through exactly the same validation. A field's old names (``RENAMED``) are hidden flags that
    still work, with a deprecation warning.
    """
    groups: dict[str, list[str]] = {}
    for owner in reversed(cls.__mro__):
        if not (isinstance(owner, type) and issubclass(owner, Config)) or owner is Config:
            continue
        title = (owner.__doc__ or owner.__name__).strip().splitlines()[0].rstrip(".")
        # A field a subclass declares again (to give it its own default and help) gets one flag, in its first group.
        seen = {name for names in groups.values() for name in names}
        own = [name for name in owner.__annotations__ if name in cls.model_fields and name not in seen]
        groups.setdefault(title, []).extend(own)
    old_names: dict[str, list[str]] = {}
    for old, new in cls.renamed_settings().items():
        old_names.setdefault(new, []).append(old)

    required = required_group(parser, "required settings (flags or keys of the --config file)")
    for name in (name for names in groups.values() for name in names if cls.model_fields[name].is_required()):
        _add_setting(parser, required, cls, name, old_names.get(name, []))
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings; flags override it")
    for title, names in groups.items():
        optional = [name for name in names if not cls.model_fields[name].is_required()]
        if optional:
            group = parser.add_argument_group(title)
            for name in optional:
                _add_setting(parser, group, cls, name, old_names.get(name, []))


def _add_setting(parser: argparse.ArgumentParser, group: Any, cls: type[Config], name: str, old: list[str]) -> None:
    """The flag of setting ``name`` in ``group``, and a hidden, warning flag for each of its old names."""
    field = cls.model_fields[name]
    annotation = _unwrap_optional(field.annotation)
    text = " ".join(part for part in (field.description, _shown_default(field)) if part)
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(annotation) is Literal:
        kwargs["choices"] = [str(choice) for choice in typing.get_args(annotation)]
    elif typing.get_origin(annotation) is list:
        kwargs["nargs"] = "+"
    if "action" not in kwargs:
        kwargs["metavar"] = None if "choices" in kwargs else name.upper()
    group.add_argument(flag(name), **kwargs)
    for old_name in old:
        action = _renamed_flag(kwargs.get("action", argparse._StoreAction), flag(name))  # noqa: SLF001
        parser.add_argument(flag(old_name), **{**kwargs, "help": argparse.SUPPRESS, "action": action})


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


def upgraded_settings(cls: type[Config], saved: dict[str, Any]) -> dict[str, Any]:
    """Settings saved by an earlier version, as this one names them.

    Old names are renamed and settings added since get their defaults, so that a run started before an
    upgrade still resumes.
    """
    renamed = cls.renamed_settings()
    settings = {renamed.get(key, key): value for key, value in saved.items()}
    for name, field in cls.model_fields.items():
        if name not in settings and not field.is_required():
            settings[name] = field.get_default(call_default_factory=True)
    return settings


def config_to_dict(config: Config) -> dict[str, Any]:
    """Return the settings as plain, YAML-ready values in declaration order."""
    return config.model_dump(mode="json")


def config_from_args(cls: type[C], args: argparse.Namespace, *, base: dict[str, Any] | None = None) -> C:
    """The settings a command was given: ``base`` < its ``--config`` file < the flags typed."""
    overrides = {name: getattr(args, name) for name in cls.model_fields if hasattr(args, name)}
    return build_config(cls, yaml_path=getattr(args, "config", None), overrides=overrides, base=base)
