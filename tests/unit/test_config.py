"""Settings: defaults, environment, flags, secrets and clear errors."""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path

import pytest

from reeve_lite.config import (
    RESTART_ONLY,
    SETTINGS,
    SYSTEM_DIRECTORIES,
    ConfigError,
    Settings,
    config_template,
    load_settings,
    settings_text,
)


def test_embedded_defaults_for_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    settings = load_settings(
        {"XDG_STATE_HOME": str(tmp_path / "s"), "XDG_RUNTIME_DIR": str(tmp_path / "r"), "TZ": "UTC"}
    )
    assert settings.db == tmp_path / "s" / "reeve-lite" / "reeve-lite.db"
    assert settings.socket == tmp_path / "r" / "reeve-lite" / "api.sock"
    assert load_settings({}).socket == Path("/tmp/reeve-lite-1000/api.sock")


def test_embedded_defaults_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    settings = load_settings({})
    assert settings.db == Path("/var/lib/reeve-lite/reeve-lite.db")
    assert settings.socket == Path("/run/reeve-lite/api.sock")


def test_systemd_directories_win_over_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(
        {"STATE_DIRECTORY": "/var/lib/reeve-lite:/other", "RUNTIME_DIRECTORY": "/run/reeve-lite"}
    )
    assert settings.db == Path("/var/lib/reeve-lite/reeve-lite.db")
    assert settings.socket == Path("/run/reeve-lite/api.sock")
    assert settings.desk == Path("/var/lib/reeve-lite/desk")


def test_defaults_of_the_scheduling_settings() -> None:
    s = load_settings({})
    assert (s.max_concurrent, s.max_retries, s.retry_base, s.retry_max) == (4, 3, 60.0, 3600.0)
    assert (s.missed_grace, s.catchup_max, s.catchup_spacing) == (60.0, 10, 60.0)
    assert dict(s.default_expires_after) == {"telegram": 3600.0, "reeve": 21600.0}
    assert (s.self_min_delay, s.self_max_pending) == (60.0, 20)
    assert (s.agent_timeout, s.agent, s.agent_command, s.executor) == (3600.0, "auto", (), "auto")
    assert s.agent_mcp is True
    assert (s.listen, s.api_token, s.socket_mode, s.max_prompt_bytes) == (None, None, 0o600, 32768)


@pytest.mark.parametrize("raw", ["telegram", "Tele=1h", "telegram=soon", "=1h"])
def test_bad_expiry_defaults_name_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="REEVE_LITE_DEFAULT_EXPIRES_AFTER"):
        load_settings({"REEVE_LITE_DEFAULT_EXPIRES_AFTER": raw})


def test_expiry_defaults_can_be_emptied() -> None:
    assert dict(load_settings({"REEVE_LITE_DEFAULT_EXPIRES_AFTER": ""}).default_expires_after) == {}


def test_environment_values_are_parsed() -> None:
    s = load_settings(
        {
            "REEVE_LITE_LISTEN": "127.0.0.1:8765",
            "REEVE_LITE_AGENT_COMMAND": "hapi --model 'claude x'",
            "REEVE_LITE_MAX_CONCURRENT": "4",
            "REEVE_LITE_RETRY_BASE": "90s",
            "REEVE_LITE_AGENT_TIMEOUT": "2h",
            "REEVE_LITE_SOCKET_MODE": "0660",
            "REEVE_LITE_TIMEZONE": "America/New_York",
            "REEVE_LITE_SOCKET_REQUIRE_TOKEN": "yes",
        }
    )
    assert s.listen == ("127.0.0.1", 8765)
    assert s.agent_command == ("hapi", "--model", "claude x")
    assert (s.max_concurrent, s.retry_base, s.agent_timeout) == (4, 90.0, 7200.0)
    assert (s.socket_mode, s.timezone, s.socket_require_token) == (0o660, "America/New_York", True)


def test_flags_override_the_environment() -> None:
    s = load_settings({"REEVE_LITE_MAX_CONCURRENT": "4"}, {"max_concurrent": "2"})
    assert s.max_concurrent == 2


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REEVE_LITE_MAX_CONCURRENT", "0", "from 1 to 64"),
        ("REEVE_LITE_LISTEN", "8765", "HOST:PORT"),
        ("REEVE_LITE_LISTEN", "localhost:99999", "HOST:PORT"),
        ("REEVE_LITE_AGENT_COMMAND", "hapi 'unclosed", "cannot split"),
        ("REEVE_LITE_AGENT", "codex", "auto, hapi, claude, command"),
        ("REEVE_LITE_TIMEZONE", "Atlantis/Capital", "IANA time zone"),
        ("REEVE_LITE_SOCKET_MODE", "0666x", "octal"),
        ("REEVE_LITE_SOCKET_MODE", "0200", "owner can read and write"),
        ("REEVE_LITE_EXECUTOR", "maybe", "auto, on, off"),
        ("REEVE_LITE_RETRY_BASE", "soon", "REEVE_LITE_RETRY_BASE"),
        ("REEVE_LITE_RETRY_BASE", "0s", "more than 0 seconds"),
        ("REEVE_LITE_SOCKET_REQUIRE_TOKEN", "perhaps", "true or false"),
        ("REEVE_LITE_URL", "ftp://x", "http"),
        ("REEVE_LITE_SOCKETT", "/x", "unknown setting REEVE_LITE_SOCKETT"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({name: value})
    assert name in str(err.value)
    assert message in str(err.value)


def test_token_comes_from_file_then_credential_then_environment(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-token").write_text("from-credential\n")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    env = {"REEVE_LITE_API_TOKEN": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert load_settings(env).api_token == "from-credential"
    assert load_settings(env, {"token_file": str(token_file)}).api_token == "from-file"
    assert load_settings({"REEVE_LITE_API_TOKEN": "from-env"}).api_token == "from-env"


def test_token_is_never_shown(tmp_path: Path) -> None:
    settings = load_settings({"REEVE_LITE_API_TOKEN": "hunter2-secret"})
    assert "hunter2-secret" not in repr(settings)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings({}, {"token_file": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="cannot read the API token"):
        load_settings({}, {"token_file": str(tmp_path / "missing")})


def test_every_setting_has_help_and_a_valid_default() -> None:
    for setting in SETTINGS:
        assert setting.help
        assert setting.env == "REEVE_LITE_" + setting.name.upper()
        setting.parse(setting.default({}))


def test_every_field_but_explicit_is_a_declared_setting() -> None:
    declared = [f for f in fields(Settings) if f.name != "explicit"]
    # The rows are the fields, in order: none left out, none made up elsewhere.
    assert [s.name for s in SETTINGS] == [f.name for f in declared]
    for f in declared:
        assert callable(f.metadata.get("parse")), f.name
        assert f.metadata.get("help"), f.name
    for setting in SETTINGS:
        if setting.flag:
            assert setting.flag == "--" + setting.name.replace("_", "-")


def test_secret_settings_stay_out_of_repr_and_the_listing() -> None:
    secrets = [s for s in SETTINGS if s.secret]
    assert {s.name for s in secrets} == {"api_token", "telegram_token"}
    settings = load_settings({s.env: f"hunter2-{s.name}" for s in secrets})
    for setting in secrets:
        assert getattr(settings, setting.name) == f"hunter2-{setting.name}"
        assert f"hunter2-{setting.name}" not in repr(settings)
        assert settings_text(settings)[setting.env] == "(hidden)"


def test_what_the_template_says_needs_a_restart_is_marked_so() -> None:
    # The template marks each restart-only setting, read off its declaration.
    text = config_template()
    assert "a setting marked\n# (restart) changes only with a restart" in text
    assert {"db", "socket", "listen", "socket_mode", "executor"} <= set(RESTART_ONLY)
    assert set(RESTART_ONLY) <= {s.name for s in SETTINGS}
    for setting in SETTINGS:
        if setting.name == "config":
            continue  # not in the file it names
        comment = text.split(f"\n#{setting.env}=")[0].rsplit("\n", 1)[-1]
        assert comment.endswith("(restart)") == (setting.name in RESTART_ONLY), comment


def test_config_file_values_sit_under_the_environment(tmp_path: Path) -> None:
    conf = tmp_path / "reeve-lite.conf"
    conf.write_text(
        "# a comment\n\nREEVE_LITE_MAX_CONCURRENT=3\n"
        "REEVE_LITE_AGENT_COMMAND='hapi --model x'\nREEVE_LITE_RETRY_BASE=30s\n"
    )
    settings = load_settings({"REEVE_LITE_CONFIG": str(conf), "REEVE_LITE_RETRY_BASE": "5s"})
    assert settings.max_concurrent == 3
    assert settings.agent_command == ("hapi", "--model", "x")
    assert settings.retry_base == 5.0  # the environment wins
    assert settings.config == conf


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "reeve-lite.conf"
    conf.write_text("REEVE_LITE_MAX_CONCURRENT=many\n")
    with pytest.raises(ConfigError, match=f"REEVE_LITE_MAX_CONCURRENT in {conf}='many'"):
        load_settings({"REEVE_LITE_CONFIG": str(conf)})
    conf.write_text("REEVE_LITE_TYPO=1\n")
    with pytest.raises(ConfigError, match=f"unknown setting REEVE_LITE_TYPO in {conf}"):
        load_settings({"REEVE_LITE_CONFIG": str(conf)})
    conf.write_text("max_concurrent 3\n")
    with pytest.raises(ConfigError, match=f"{conf}:1: expected REEVE_LITE_NAME=value"):
        load_settings({"REEVE_LITE_CONFIG": str(conf)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"REEVE_LITE_CONFIG": str(tmp_path / "missing.conf")})


def test_the_default_config_file_may_be_missing(tmp_path: Path) -> None:
    settings = load_settings({"CONFIGURATION_DIRECTORY": str(tmp_path)})
    assert settings.config == tmp_path / "reeve-lite.conf"


def test_the_template_lists_every_setting_at_a_default_that_parses(tmp_path: Path) -> None:
    text = config_template()
    for setting in SETTINGS:
        if setting.name != "config":
            assert f"\n#{setting.env}=" in text, setting.env
    # Every line is a comment: the template as installed changes nothing ...
    assert all(not line or line.startswith("#") for line in text.splitlines())
    # ... and uncommenting every default gives the same settings.
    uncommented = tmp_path / "all.conf"
    uncommented.write_text(
        "\n".join(
            line[1:]
            for line in text.splitlines()
            if line.startswith("#REEVE_LITE_") and not line.endswith("=")
        )
    )
    (tmp_path / "none").write_text("")
    plain = load_settings(dict(SYSTEM_DIRECTORIES, REEVE_LITE_CONFIG=str(tmp_path / "none")))
    filled = load_settings(dict(SYSTEM_DIRECTORIES, REEVE_LITE_CONFIG=str(uncommented)))
    assert replace(filled, config=plain.config) == plain
