"""The services' settings (`tritonkit.settings`): a flag beats its environment variable, which
beats the default; booleans take every spelling the CLIs took; an invalid value names its flag
and variable; every option's help is its field's description."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tritonkit.errors import SettingsError
from tritonkit.gateway.settings import GatewaySettings
from tritonkit.settings import ServiceSettings, add_flags, settings_from


class _Example(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRITONKIT_EXAMPLE_")

    port: int = Field(9108, description="port of 5 % of things")
    heal: bool = Field(True, description="reload what died")
    profile: Path | None = Field(None, description="a file")


def _parsed(argv: list[str]) -> _Example:
    parser = argparse.ArgumentParser()
    add_flags(parser, _Example)
    return settings_from(_Example, parser.parse_args(argv))


def test_settings_take_flag_then_environment_then_default_when_several_are_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITONKIT_EXAMPLE_PORT", "9200")
    monkeypatch.setenv("TRITONKIT_EXAMPLE_PROFILE", "")  # empty: unset

    assert _parsed([]).port == 9200
    assert _parsed(["--port", "9300"]).port == 9300
    assert _parsed([]).profile is None


@pytest.mark.parametrize(("argv", "env", "heal"), [
    (["--heal"], "false", True),
    (["--heal", "false"], None, False),
    (["--no-heal"], "true", False),
    ([], "off", False),
    ([], None, True),
])
def test_settings_read_a_boolean_when_spelt_as_the_clis_took_it(
        monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None, heal: bool) -> None:
    if env is not None:
        monkeypatch.setenv("TRITONKIT_EXAMPLE_HEAL", env)

    assert _parsed(argv).heal is heal


def test_settings_name_the_flag_and_variable_when_a_value_is_invalid(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITONKIT_EXAMPLE_PORT", "lots")

    with pytest.raises(SettingsError, match=r"--port \(env TRITONKIT_EXAMPLE_PORT\).*'lots'"):
        _parsed([])


def test_help_is_the_description_with_variable_and_default_when_asked_for() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, _Example)

    text = " ".join(parser.format_help().split())

    assert "port of 5 % of things (env TRITONKIT_EXAMPLE_PORT; default: 9108)" in text
    assert "reload what died (env TRITONKIT_EXAMPLE_HEAL; default: true)" in text
    assert "a file (env TRITONKIT_EXAMPLE_PROFILE)" in text


def test_gateway_settings_default_to_tritons_http_port_when_no_launcher_says_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRITON_URL", "PROTOCOL"):
        monkeypatch.delenv(f"TRITONKIT_GATEWAY_{name}", raising=False)

    settings = GatewaySettings()

    assert (settings.triton_url, settings.protocol) == ("127.0.0.1:8000", "http")
