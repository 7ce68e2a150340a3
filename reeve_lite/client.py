"""A small synchronous client of the daemon's REST API, over the Unix socket or TCP.

Standard library only (`http.client`), so that the CLI starts fast; async
callers run it in a thread. Connecting to the socket is what socket-activates
the daemon under systemd.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from reeve_lite.config import SYSTEM_DIRECTORIES, Settings

# The socket of the system service (reeve-lite.socket of the Debian package).
SYSTEM_SOCKET = Path(SYSTEM_DIRECTORIES["RUNTIME_DIRECTORY"]) / "api.sock"


class DaemonUnreachable(Exception):
    """The daemon does not answer; str() says where it was looked for and how to start it."""


class ApiFailure(Exception):
    """The daemon answered with an error."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True, kw_only=True)
class PulseRequest:
    """A pulse to create: the body of `POST /api/pulse/trigger`, field for field
    (`reeve_lite.models.PulseCreate` checks it there). A field left None is not sent,
    so the daemon's default applies."""

    prompt: str
    scheduled_at: str | None = None
    priority: str | None = None
    source: str | None = None
    tags: list[str] | None = None
    session_id: str | None = None
    sticky_notes: list[str] | None = None
    max_retries: int | None = None
    cron: str | None = None
    timezone: str | None = None
    idempotency_key: str | None = None
    on_missed: str | None = None
    expires_after: str | None = None
    expires_at: str | None = None
    concurrency_key: str | None = None
    jitter: str | None = None
    pace_min: str | None = None
    pace_max: str | None = None
    comment: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body: the fields that are set."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {name: value for name, value in values if value is not None}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """Calls the daemon; one connection per request (the daemon is local)."""

    def __init__(
        self,
        *,
        socket_path: Path,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.socket_path = socket_path
        self.url = url
        self._token = token
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = 30.0) -> Client:
        """A client for the daemon the settings name. A socket the user named is the
        only one tried; without one, where the default socket does not exist, the
        system daemon's (a member of group reeve may use it) stands in."""
        socket_path = settings.socket
        if (
            "socket" not in settings.explicit
            and not socket_path.exists()
            and SYSTEM_SOCKET.exists()
            and os.access(SYSTEM_SOCKET, os.W_OK)
        ):
            socket_path = SYSTEM_SOCKET
        return cls(
            socket_path=socket_path,
            url=settings.url,
            token=settings.api_token,
            timeout=timeout,
        )

    @property
    def where(self) -> str:
        """The daemon's address, for messages."""
        return self.url or str(self.socket_path)

    def _connection(self) -> http.client.HTTPConnection:
        if self.url:
            parts = urlsplit(self.url)
            cls = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            return cls(parts.hostname or "localhost", parts.port, timeout=self.timeout)
        return _UnixConnection(str(self.socket_path), self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or ApiFailure / DaemonUnreachable."""
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        prefix = urlsplit(self.url).path.rstrip("/") if self.url else ""
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        conn = self._connection()
        try:
            conn.request(method, prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnreachable(self._unreachable(exc)) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if response.status >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise ApiFailure(
                response.status,
                str(err.get("code", "http_error")),
                str(err.get("message", response.reason)),
                err.get("field"),
            )
        return data

    def _unreachable(self, exc: Exception) -> str:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if self.url:
            return f"cannot reach the daemon at {self.url}: {reason}"
        return (
            f"cannot reach the daemon at {self.socket_path}: {reason}. Start it with "
            "`reeve-lite serve` (or `systemctl --user start reeve-lite.socket`), or point "
            "REEVE_LITE_SOCKET / --socket at its socket"
        )

    # --- the API, one method per operation

    def health(self) -> Any:
        """`GET /api/health`."""
        return self.request("GET", "/api/health")

    def status(self) -> Any:
        """`GET /api/status`."""
        return self.request("GET", "/api/status")

    def create(self, request: PulseRequest | None = None, /, **values: Any) -> Any:
        """`POST /api/pulse/trigger`: create `request`, or the PulseRequest whose fields
        are the keyword arguments (`create(prompt="…", scheduled_at="in 1 hour")`)."""
        if request is None:
            request = PulseRequest(**values)
        elif values:
            raise TypeError("give a PulseRequest or its fields as keywords, not both")
        return self.request("POST", "/api/pulse/trigger", request.body())

    def upcoming(self, limit: int = 20) -> Any:
        """`GET /api/pulse/upcoming`."""
        return self.request("GET", "/api/pulse/upcoming", query={"limit": limit})

    def list(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> Any:
        """`GET /api/pulses`."""
        return self.request(
            "GET", "/api/pulses", query={"status": status, "limit": limit, "offset": offset}
        )

    def get(self, pulse_id: int) -> Any:
        """`GET /api/pulse/{id}`."""
        return self.request("GET", f"/api/pulse/{pulse_id}")

    def agenda(self, days: int = 7) -> Any:
        """`GET /api/agenda`."""
        return self.request("GET", "/api/agenda", query={"days": days})

    def history(self, since: str = "7d", limit: int = 50) -> Any:
        """`GET /api/history`."""
        return self.request("GET", "/api/history", query={"since": since, "limit": limit})

    def cancel(self, pulse_id: int) -> Any:
        """`POST /api/pulse/{id}/cancel`."""
        return self.request("POST", f"/api/pulse/{pulse_id}/cancel")

    def notify(self, **fields: Any) -> Any:
        """`POST /api/notify` with the given fields (None values are left out)."""
        body = {k: v for k, v in fields.items() if v is not None}
        return self.request("POST", "/api/notify", body)

    def reschedule(self, pulse_id: int, scheduled_at: str) -> Any:
        """`POST /api/pulse/{id}/reschedule`."""
        return self.request(
            "POST", f"/api/pulse/{pulse_id}/reschedule", {"scheduled_at": scheduled_at}
        )
