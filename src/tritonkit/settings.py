"""Runtime settings of the long-running services (the gateway, the monitoring sidecar, the serve
CLI): one pydantic-settings class each, with an environment prefix of its own, and the flags
generated from its fields.

Each field is one option, documented once, in its `description`: `--kebab-name` on the command
line (its `--help` line is the description, the variable and the default), `<PREFIX><NAME>` in
the environment. A flag beats its variable, which beats the default; an empty variable counts
as unset. A boolean takes `--name`, `--name false` or `--no-name`::

    class SidecarSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="TRITONKIT_MONITOR_")
        port: int = Field(9108, description="port of /health and /metrics (0: any free port)")

    add_flags(parser, SidecarSettings)              # --port, help "… (env …_PORT; default: 9108)"
    settings = settings_from(SidecarSettings, parser.parse_args())   # flag > env > default
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from tritonkit.errors import SettingsError
from tritonkit.paths import PROJECT_ROOT

S = TypeVar("S", bound="ServiceSettings")
_TRUE, _FALSE = "true", "false"


class ServiceSettings(BaseSettings):
    """Base of a service's settings: frozen, unknown names refused, empty variables unset.
    A subclass sets `model_config = SettingsConfigDict(env_prefix=...)` and describes every
    field (the description is its flag's help)."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_ignore_empty=True)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of `field`: the prefix, then the name in capitals."""
        return f"{cls.model_config.get('env_prefix') or ''}{field.upper()}"


def flag_name(field: str) -> str:
    """`--triton-url` for `triton_url`."""
    return "--" + field.replace("_", "-")


def _bare(annotation: Any) -> Any:
    """The annotation without `| None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(others) == 1:
            return others[0]
    return annotation


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return _TRUE if default else _FALSE
    if isinstance(default, Path) and default.is_relative_to(PROJECT_ROOT):
        return str(default.relative_to(PROJECT_ROOT))  # the same on every checkout
    return str(default)


def _help(cls: type[ServiceSettings], name: str, field: FieldInfo) -> str:
    if not field.description:
        raise TypeError(f"{cls.__name__}.{name} has no description: it is its flag's help")
    default = "" if field.default is None else f"; default: {_shown(field.default)}"
    # argparse %-formats help texts
    return f"{field.description} (env {cls.env_name(name)}{default})".replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, cls: type[ServiceSettings]) -> None:
    """One flag per field of `cls`, with the field's description as its help. A flag not given
    is absent from the parsed namespace (`settings_from` leaves it to the variable or the
    default); values stay text for pydantic to check and convert."""
    for name, field in cls.model_fields.items():
        flag = flag_name(name)
        text = _help(cls, name, field)
        kind = _bare(field.annotation)
        if kind is bool:
            parser.add_argument(flag, dest=name, nargs="?", const=_TRUE, metavar="true|false",
                                default=argparse.SUPPRESS, help=text)
            parser.add_argument("--no-" + flag[2:], dest=name, action="store_const",
                                const=_FALSE, default=argparse.SUPPRESS,
                                help=f"the same as {flag} false")
            continue
        choices = list(typing.get_args(kind)) if typing.get_origin(kind) is Literal else None
        metavar = "PATH" if kind is Path else None
        parser.add_argument(flag, dest=name, choices=choices, metavar=metavar,
                            default=argparse.SUPPRESS, help=text)


def settings_from(cls: type[S], args: argparse.Namespace, **values: Any) -> S:
    """`cls` from the flags given in `args` (and `values`), the environment and the defaults.

    Raises:
        SettingsError: a value a field cannot take, naming its flag and variable.
    """
    given = {name: getattr(args, name) for name in cls.model_fields if hasattr(args, name)}
    try:
        return cls(**{**given, **values})
    except ValidationError as exc:
        raise SettingsError(_described(cls, exc)) from None


def _described(cls: type[ServiceSettings], exc: ValidationError) -> str:
    found = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"] and str(error["loc"][0]) in cls.model_fields:
            name = str(error["loc"][0])
            found.append(f"{flag_name(name)} (env {cls.env_name(name)}): {message}, not "
                         f"{error['input']!r}")
        else:
            found.append(message)
    return "; ".join(found)
