"""Settings: one table, read from `REEVE_LITE_<NAME>` variables and `serve` flags.

Every setting is declared once, as a field of `Settings` with its parser,
default, help, flag and marks; `SETTINGS` (the rows the environment, the
command line and the table in docs/operations.md come from) and `RESTART_ONLY` are read off
those fields. Secrets (the API token) are read, in order, from `--token-file`, the
systemd credential `api-token` in `$CREDENTIALS_DIRECTORY`, then
`REEVE_LITE_API_TOKEN`, and never shown by `repr`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from reeve_lite.sources import SOURCE_PATTERN
from reeve_lite.timeparse import TimeParseError, parse_duration

PREFIX = "REEVE_LITE_"
# The agent profiles (reeve_lite.agent), here so that the CLI need not import it.
AGENT_PROFILES = ("auto", "hapi", "claude", "command")
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting with an unknown name or an invalid value; str() names the variable."""


# --- parsers: each takes the raw string and returns the value or raises ValueError


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def _duration(raw: str) -> float:
    try:
        return parse_duration(raw)
    except TimeParseError as exc:
        raise ValueError(str(exc)) from None


def _expiry_defaults(raw: str) -> Mapping[str, float]:
    found: dict[str, float] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        source, sep, value = item.partition("=")
        source = source.strip()
        if not sep or not re.fullmatch(SOURCE_PATTERN, source):
            raise ValueError("expected SOURCE=DURATION pairs, e.g. telegram=1h,reeve=6h")
        found[source] = _duration(value)
    return MappingProxyType(found)


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _listen(raw: str) -> tuple[str, int] | None:
    raw = raw.strip()
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def _mode(raw: str) -> int:
    try:
        value = int(raw.strip(), 8)
    except ValueError:
        raise ValueError("expected an octal file mode such as 0600 or 0660") from None
    if value & ~0o777 or not value & 0o600 == 0o600:
        raise ValueError("expected a mode from 0600 to 0777 that the owner can read and write")
    return value


def _command(raw: str) -> tuple[str, ...]:
    try:
        parts = tuple(shlex.split(raw))
    except ValueError as exc:
        raise ValueError(f"cannot split the command: {exc}") from None
    if not parts:
        raise ValueError("expected a command, e.g. 'hapi'")
    return parts


def _optional_command(raw: str) -> tuple[str, ...]:
    return _command(raw) if raw.strip() else ()


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    return parse


def _required_url(raw: str) -> str:
    url = _url(raw)
    if url is None:
        raise ValueError("expected an http:// or https:// URL")
    return url


def _chat_ids(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError("expected chat ids separated by commas, e.g. 123456,-1009876") from None


def _link_template(raw: str) -> str | None:
    raw = raw.strip()
    if raw and (not raw.startswith(("http://", "https://")) or "{session_id}" not in raw):
        raise ValueError("expected an http(s) URL containing {session_id}")
    return raw or None


def _zone(raw: str) -> str:
    name = raw.strip().lstrip(":")
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfo raises several types for bad names
        raise ValueError("expected an IANA time zone such as Europe/Berlin or UTC") from None
    return name


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("expected a path")
    return Path(raw).expanduser()


def _optional_path(raw: str) -> Path | None:
    return _path(raw) if raw.strip() else None


def _text(raw: str) -> str:
    return raw.strip()


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _url(raw: str) -> str | None:
    raw = raw.strip()
    if raw and not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/") or None


# --- defaults that depend on who runs the daemon


def state_dir(env: Mapping[str, str]) -> Path:
    """Where the database lives by default: systemd's StateDirectory, /var/lib or XDG."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/reeve-lite")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "reeve-lite"


def runtime_dir(env: Mapping[str, str]) -> Path:
    """Where the socket lives by default: systemd's RuntimeDirectory, /run or XDG."""
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/reeve-lite")
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "reeve-lite"
    return Path(f"/tmp/reeve-lite-{os.geteuid()}")  # noqa: S108 - private per-user dir


def config_file(env: Mapping[str, str]) -> Path:
    """The configuration file: systemd's ConfigurationDirectory, /etc or XDG."""
    if env.get("CONFIGURATION_DIRECTORY"):
        return Path(env["CONFIGURATION_DIRECTORY"].split(":")[0]) / "reeve-lite.conf"
    if os.geteuid() == 0:
        return Path("/etc/reeve-lite/reeve-lite.conf")
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "reeve-lite" / "reeve-lite.conf"


def read_config_file(path: Path) -> dict[str, str]:
    """`REEVE_LITE_NAME=value` lines of `path` (blank lines and `#` comments
    ignored, a value may be quoted); a missing file is empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.startswith(PREFIX):
            raise ConfigError(f"{path}:{number}: expected REEVE_LITE_NAME=value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def local_zone_name(env: Mapping[str, str]) -> str:
    """The machine's IANA zone name: $TZ, /etc/timezone, the /etc/localtime link, or UTC."""
    candidates = [env.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return _zone(name)
            except ValueError:
                continue
    return "UTC"


def _const(value: str) -> Callable[[Mapping[str, str]], str]:
    return lambda _env: value


def _setting(
    parse: Callable[[str], T],
    default: Callable[[Mapping[str, str]], str],
    help: str,
    *,
    flag: str | None = None,
    secret: bool = False,
    restart_only: bool = False,
) -> T:
    """Declare a field of `Settings` as a setting: `default` gives the raw text used
    when nothing sets it; a secret is left out of repr; a restart-only setting keeps
    its value on a reload (it is bound to what was opened at start).

    Typed as the parser's result so that mypy checks it against the field's type.
    """
    declared = field(
        repr=not secret,
        metadata={
            "parse": parse,
            "default": default,
            "help": help,
            "flag": flag,
            "secret": secret,
            "restart_only": restart_only,
        },
    )
    return cast(T, declared)


# _setting returns a dataclasses.field (ruff knows only field() itself as one).
# ruff: noqa: RUF009
@dataclass(frozen=True)
class Settings:
    """Every setting of the daemon and its clients, already validated.

    Each field but `explicit` declares one setting; their order is that of the
    command line's flags, the configuration template and `reeve-lite config`.
    """

    config: Path = _setting(
        _path,
        lambda env: str(config_file(env)),
        "Configuration file of REEVE_LITE_NAME=value lines (the environment wins; "
        "re-read on SIGHUP)",
        flag="--config",
        restart_only=True,
    )
    db: Path = _setting(
        _path,
        lambda env: str(state_dir(env) / "reeve-lite.db"),
        "SQLite database file (created on first start)",
        flag="--db",
        restart_only=True,
    )
    socket: Path = _setting(
        _path,
        lambda env: str(runtime_dir(env) / "api.sock"),
        "Unix socket of the REST API (daemon binds it; clients connect to it)",
        flag="--socket",
        restart_only=True,
    )
    listen: tuple[str, int] | None = _setting(
        _listen,
        _const(""),
        "Also serve the API on TCP HOST:PORT (needs an API token); empty: off",
        flag="--listen",
        restart_only=True,
    )
    url: str | None = _setting(
        _url,
        _const(""),
        "Clients: talk to this http(s) URL instead of the Unix socket",
        restart_only=True,
    )
    api_token: str | None = _setting(
        _optional_text,
        _const(""),
        "Bearer token for the API (prefer the credential `api-token` or a token file)",
        secret=True,
    )
    token_file: Path | None = _setting(
        _optional_path,
        _const(""),
        "File holding the API token",
        flag="--token-file",
    )
    socket_mode: int = _setting(
        _mode, _const("0600"), "File mode of the Unix socket", restart_only=True
    )
    socket_require_token: bool = _setting(
        _bool,
        _const("false"),
        "Require the token on the Unix socket too",
    )
    agent: str = _setting(
        _choice(*AGENT_PROFILES),
        _const("auto"),
        "Agent CLI: hapi (`hapi claude`), claude, command (AGENT_COMMAND), or auto: "
        "AGENT_COMMAND if set, else hapi, else claude, from the daemon's PATH",
        flag="--agent",
    )
    agent_command: tuple[str, ...] = _setting(
        _optional_command,
        _const(""),
        "With AGENT=command (or auto): a Claude Code-compatible command (split like a "
        "shell, never run by one), Claude Code's flags appended; with hapi or claude: "
        "the program's path",
        flag="--agent-command",
    )
    agent_mcp: bool = _setting(
        _bool,
        _const("on"),
        "Give each run this daemon's MCP tools (--mcp-config) and allow exactly those; "
        "off: wire MCP yourself",
    )
    desk: Path = _setting(
        _path,
        lambda env: str(state_dir(env) / "desk"),
        "Working directory of agent runs (created if missing)",
        flag="--desk",
    )
    max_concurrent: int = _setting(
        _int_in(1, 64),
        _const("4"),
        "Agent runs at the same time (pulses with the same concurrency key never overlap)",
        flag="--max-concurrent",
    )
    timezone: str = _setting(
        _zone,
        local_zone_name,
        "Zone of wall-clock times ('tomorrow at 9am', ISO without offset) and cron",
        flag="--timezone",
    )
    agent_timeout: float = _setting(
        _duration, _const("1h"), "Longest agent run; then its tree is killed"
    )
    retry_base: float = _setting(_duration, _const("60s"), "First retry delay; doubles per retry")
    retry_max: float = _setting(_duration, _const("1h"), "Longest retry delay")
    max_retries: int = _setting(_int_in(0, 100), _const("3"), "Default retries after a failed run")
    shutdown_grace: float = _setting(
        _duration,
        _const("30s"),
        "On SIGTERM, wait this long for running agents before stopping them",
    )
    executor: str = _setting(
        _choice("auto", "on", "off"),
        _const("auto"),
        "Run agents in transient systemd scopes: auto (when a manager answers), on, off",
        restart_only=True,
    )
    scope_memory_max: str = _setting(_text, _const("4G"), "MemoryMax= of an agent's scope")
    scope_cpu_quota: str = _setting(_text, _const("200%"), "CPUQuota= of an agent's scope")
    scope_tasks_max: int = _setting(_int_in(1, 1_000_000), _const("1024"), "TasksMax= of a scope")
    max_prompt_bytes: int = _setting(
        _int_in(1, 128000),  # Linux refuses an argv string over 128 KiB
        _const("32768"),
        "Largest prompt with its sticky notes (UTF-8 bytes; at most 128000)",
    )
    max_body_bytes: int = _setting(
        _int_in(1024, 64 * 1024 * 1024),
        _const("262144"),
        "Largest request body",
    )
    output_tail_bytes: int = _setting(
        _int_in(0, 16 * 1024 * 1024),
        _const("16384"),
        "How much of the end of an agent's output each attempt keeps",
    )
    max_sleep: float = _setting(
        _duration,
        _const("60s"),
        "Longest scheduler sleep where no wall-clock timer (timerfd) is to be had",
    )
    idle_exit: float = _setting(
        _duration,
        _const("10m"),
        "When socket-activated: exit after this long with nothing pending, running or "
        "asked; 0: never",
    )
    telegram_token: str | None = _setting(
        _optional_text,
        _const(""),
        "Telegram bot token (prefer the credential `telegram-token`)",
        secret=True,
        restart_only=True,
    )
    telegram_chat_ids: tuple[int, ...] = _setting(
        _chat_ids,
        _const(""),
        "Telegram chats that may talk to the bot and get notifications (comma-separated)",
    )
    telegram_api_url: str = _setting(
        _required_url,
        _const("https://api.telegram.org"),
        "Telegram Bot API base URL",
        restart_only=True,
    )
    telegram_priority: str = _setting(
        _choice("critical", "high", "normal", "low", "deferred"),
        _const("critical"),
        "Priority of the pulse a Telegram message becomes",
    )
    session_url: str | None = _setting(
        _link_template,
        _const(""),
        "Link to an agent session for notifications, with {session_id}; empty: no link",
    )
    missed_grace: float = _setting(
        _duration,
        _const("60s"),
        "An occurrence starting later than this after its time has missed it "
        "(the pulse's on_missed applies)",
    )
    catchup_max: int = _setting(
        _int_in(0, 100),
        _const("10"),
        "on_missed=all: most catch-up runs for one outage (older ones are dropped)",
    )
    catchup_spacing: float = _setting(
        _duration, _const("1m"), "on_missed=all: time between catch-up runs"
    )
    default_expires_after: Mapping[str, float] = _setting(
        _expiry_defaults,
        _const("telegram=1h,reeve=6h"),
        "expires_after of pulses that give none, by source (SOURCE=DURATION,...)",
    )
    self_min_delay: float = _setting(
        _duration,
        _const("1m"),
        "Pulses the agent schedules itself (source reeve) are due at least this far ahead",
    )
    self_max_pending: int = _setting(
        _int_in(1, 100_000),
        _const("20"),
        "Most pending pulses the agent may have scheduled itself",
    )
    log_level: str = _setting(
        _choice("debug", "info", "warning", "error"),
        _const("info"),
        "Least severe log level written",
    )
    # The settings given by a flag, the environment or the file (not defaults).
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def zone(self) -> ZoneInfo:
        """The local time zone for wall-clock times and cron defaults."""
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Setting:
    """One row of the settings table, read off a field of `Settings`."""

    name: str
    parse: Callable[[str], Any]
    default: Callable[[Mapping[str, str]], str]
    help: str
    flag: str | None = None
    secret: bool = False
    restart_only: bool = False

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return PREFIX + self.name.upper()


# A field without a declaration fails here, at import.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, **f.metadata) for f in fields(Settings) if f.name != "explicit"
)
# Settings bound to what was opened at start; a reload cannot change them.
RESTART_ONLY: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.restart_only)

_BY_NAME = {s.name: s for s in SETTINGS}
_BY_ENV = {s.env: s for s in SETTINGS}


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Settings from `env` (default: os.environ) and raw `overrides` by setting name.

    Raises ConfigError naming the variable (or flag) for an unknown
    `REEVE_LITE_*` name or a value that does not parse.
    """
    env = os.environ if env is None else env
    overrides = overrides or {}
    explicit = overrides.get("config") or env.get(PREFIX + "CONFIG")
    path = Path(explicit) if explicit else config_file(env)
    if explicit and not path.exists():
        raise ConfigError(f"the configuration file {path} does not exist")
    from_file = read_config_file(path)
    if PREFIX + "CONFIG" in from_file:
        raise ConfigError(f"{path}: REEVE_LITE_CONFIG cannot be set in the file itself")
    real_env = env
    env = {**from_file, **env}
    for key in env:
        if key.startswith(PREFIX) and key not in _BY_ENV:
            known = ", ".join(sorted(_BY_ENV))
            where = f" in {path}" if key in from_file else ""
            raise ConfigError(f"unknown setting {key}{where}; known settings: {known}")
    values: dict[str, Any] = {}
    explicit_names: set[str] = set()
    for setting in SETTINGS:
        raw = overrides.get(setting.name)
        origin = setting.flag or setting.env
        if raw is None:
            raw = env.get(setting.env)
            origin = setting.env if setting.env in real_env else f"{setting.env} in {path}"
        if raw is None:
            raw, origin = setting.default(env), f"default of {setting.env}"
        else:
            explicit_names.add(setting.name)
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = "***" if setting.secret else repr(raw)
            raise ConfigError(f"invalid {origin}={shown}: {exc}") from None
    values["api_token"] = _resolve_token(values["token_file"], values["api_token"], env)
    values["telegram_token"] = _credential(env, "telegram-token") or values["telegram_token"]
    settings = Settings(**values, explicit=frozenset(explicit_names))
    if settings.retry_base <= 0:
        raise ConfigError(f"invalid {_BY_NAME['retry_base'].env}: must be more than 0 seconds")
    if settings.agent_timeout <= 0:
        raise ConfigError(f"invalid {_BY_NAME['agent_timeout'].env}: must be more than 0 seconds")
    if settings.max_sleep < 1:
        raise ConfigError(f"invalid {_BY_NAME['max_sleep'].env}: must be at least 1 second")
    return settings


def duration_text(seconds: float) -> str:
    """A duration as a user writes one in the file: `90` → `1m30s`, `0.2` → `0.2s`."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0"


def setting_text(setting: Setting, value: Any) -> str:
    """A setting's value as it would be written in the configuration file; a secret
    that is set shows as `(hidden)`."""
    if setting.secret:
        return "(hidden)" if value else ""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if setting.parse is _duration:
        return duration_text(float(value))
    if setting.name == "socket_mode":
        return f"{value:04o}"
    if setting.name == "listen":
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if setting.name == "agent_command":
        return shlex.join(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={duration_text(v)}" for k, v in value.items())
    return str(value)


def settings_text(settings: Settings) -> dict[str, str]:
    """Every setting by its variable, as it would be written in the file."""
    return {s.env: setting_text(s, getattr(settings, s.name)) for s in SETTINGS}


# What systemd gives the system service (StateDirectory= and friends).
SYSTEM_DIRECTORIES = {
    "STATE_DIRECTORY": "/var/lib/reeve-lite",
    "RUNTIME_DIRECTORY": "/run/reeve-lite",
    "CONFIGURATION_DIRECTORY": "/etc/reeve-lite",
}


def config_template(env: Mapping[str, str] = SYSTEM_DIRECTORIES) -> str:
    """A configuration file with every setting commented out at its default (for
    the system service by default): what `reeve-lite config --template` prints and
    the Debian package installs as /etc/reeve-lite/reeve-lite.conf."""
    lines = [
        "# reeve-lite settings: REEVE_LITE_NAME=value lines, '#' starts a comment.",
        "# Each setting below is commented out at its default; the environment wins",
        "# over this file. `systemctl reload reeve-lite` re-reads it; a setting marked",
        "# (restart) changes only with a restart (systemctl restart reeve-lite).",
        "# Durations take 90, 90s, 5m, 2h, 1h30m, 1 day.",
    ]
    for setting in SETTINGS:
        if setting.name == "config":
            continue  # names this file; it cannot be set in it
        if setting.name == "timezone":
            value, note = "", " (default: the machine's zone)"
        elif setting.secret:
            value, note = "", " (default: none)"
        else:
            value, note = setting.default(env), ""
        if setting.restart_only:
            note += " (restart)"
        lines += ["", f"# {setting.help}{note}", f"#{setting.env}={value}"]
    return "\n".join(lines) + "\n"


def _credential(env: Mapping[str, str], name: str) -> str | None:
    """A systemd credential's text, or None when there is none."""
    if not env.get("CREDENTIALS_DIRECTORY"):
        return None
    path = Path(env["CREDENTIALS_DIRECTORY"]) / name
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the credential {name}: {exc.strerror}") from None


def _resolve_token(
    token_file: Path | None, env_token: str | None, env: Mapping[str, str]
) -> str | None:
    sources: list[Path] = []
    if token_file is not None:
        sources.append(token_file)
    elif env.get("CREDENTIALS_DIRECTORY"):
        credential = Path(env["CREDENTIALS_DIRECTORY"]) / "api-token"
        if credential.exists():
            sources.append(credential)
    for path in sources:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the API token from {path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"the API token file {path} is empty")
        return token
    return env_token
