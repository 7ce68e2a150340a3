"""The system units under a real systemd: activation, STATUS, agents as transient
units of the `reeve` user's manager, journald, reload, watchdog and idle exit."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import pytest

from tests.report import record
from tests.systemd.conftest import FAKE_CLAUDE, Container, poll

pytestmark = pytest.mark.systemd

SETUP = f"""
set -e
id reeve >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/reeve-lite \
    --no-create-home --shell /usr/sbin/nologin reeve
ln -sf /opt/reeve-lite/bin/reeve-lite /usr/bin/reeve-lite
install -m 0755 /src/tests/fake_hapi.py /opt/fake-hapi.py
# The fake Claude Code on the units' PATH: REEVE_LITE_AGENT=auto finds it.
{FAKE_CLAUDE}
cp /src/units/system/* /etc/systemd/system/
mkdir -p /etc/reeve-lite
cat > /etc/reeve-lite/reeve-lite.conf <<'EOF'
REEVE_LITE_RETRY_BASE=1s
REEVE_LITE_SCOPE_MEMORY_MAX=256M
EOF
loginctl enable-linger reeve
systemctl daemon-reload
systemctl enable --now reeve-lite.socket
"""
USER_SYSTEMCTL = "runuser -u reeve -- env XDG_RUNTIME_DIR=/run/user/$(id -u reeve) systemctl --user"


@pytest.fixture(scope="module")
def system(container: Container) -> Container:
    container.run(SETUP, timeout=120)
    # The user manager of `reeve` comes up with the linger.
    poll(
        lambda: (
            container.run(
                "test -S /run/user/$(id -u reeve)/systemd/private", check=False
            ).returncode
            == 0
        ),
        30,
        "reeve's user manager",
    )
    return container


def client(container: Container, *args: str) -> Any:
    done = container.run("reeve-lite " + " ".join(args) + " --json")
    return json.loads(done.stdout)


def show(container: Container, unit: str, prop: str) -> str:
    return str(container.run(f"systemctl show -P {prop} {unit}").stdout.strip())


def calls(container: Container) -> list[dict[str, Any]]:
    done = container.run("cat /var/lib/reeve-lite/desk/calls.jsonl", check=False)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_socket_starts_the_service_on_the_first_request(system: Container) -> None:
    assert show(system, "reeve-lite.socket", "ActiveState") == "active"
    assert show(system, "reeve-lite.service", "ActiveState") == "inactive"
    assert system.run("stat -c '%a %G' /run/reeve-lite/api.sock").stdout.strip() == "660 reeve"
    status = client(system, "status")  # this request activates the daemon
    assert status["counts"]["pending"] == 0
    assert show(system, "reeve-lite.service", "ActiveState") == "active"
    assert show(system, "reeve-lite.service", "User") == "reeve"
    text = poll(lambda: show(system, "reeve-lite.service", "StatusText"), 10, "a STATUS line")
    assert text.endswith(" running")


def test_status_line_follows_the_queue(system: Container) -> None:
    client(system, "schedule", "'in 2 hours'", "later", "--priority", "low")
    poll(
        lambda: show(system, "reeve-lite.service", "StatusText").startswith("1 pending, next in"),
        10,
        "STATUS to show the pending pulse",
    )
    assert "(low)" in show(system, "reeve-lite.service", "StatusText")
    listed = system.run("systemctl status --no-pager reeve-lite.service", check=False).stdout
    assert 'Status: "1 pending, next in' in listed


def test_a_pulse_runs_as_a_transient_service_of_the_reeve_user(system: Container) -> None:
    status = client(system, "status")
    assert status["executor"] == "service"
    # This container has no cgroup controllers: the daemon says so instead of pretending.
    assert "scope_memory_max" in status["limits_unenforced"]
    pulse = client(system, "schedule", "now", "'[sleep 3] water the plants $HOME %h'")
    unit = f"reeve-pulse-{pulse['pulse_id']}-1.service"
    poll(lambda: calls(system), 20, "the agent to start")
    assert system.run(f"{USER_SYSTEMCTL} show -P ActiveState {unit}").stdout.strip() == "active"
    memory = system.run(f"{USER_SYSTEMCTL} show -P MemoryMax {unit}").stdout.strip()
    assert memory == str(256 * 1024 * 1024)
    done = poll(
        lambda: (
            (p := client(system, "show", str(pulse["pulse_id"])))["status"] == "completed" and p
        ),
        30,
        "the pulse to complete",
    )
    [attempt] = done["attempts"]
    assert uuid.UUID(attempt["session_id"])  # the fake's own, from its init event
    [call] = calls(system)
    # The prompt arrived literally on stdin (through systemd-run --pipe), neither
    # $-expanded nor %-expanded by systemd, and is in no argv.
    assert call["prompt"] == "[sleep 3] water the plants $HOME %h"
    assert not any("water the plants" in word for word in call["received"])
    assert call["cwd"] == "/var/lib/reeve-lite/desk"
    assert call["leaked"] == []
    # The run's unit is gone once it ended (--collect).
    gone = system.run(f"{USER_SYSTEMCTL} show -P LoadState {unit}").stdout.strip()
    assert gone == "not-found"


def test_failures_reach_the_journal_with_their_priority(system: Container) -> None:
    pulse = client(system, "schedule", "now", "'[exit 3]'", "--max-retries", "0")
    poll(
        lambda: client(system, "show", str(pulse["pulse_id"]))["status"] == "failed",
        30,
        "the pulse to fail",
    )
    warnings = system.run("journalctl -u reeve-lite -p warning -o cat --no-pager").stdout
    assert (
        f"pulse={pulse['pulse_id']} attempt=1 failed: claude exited with status 3: "
        "Error: asked to exit 3; now failed"
    ) in warnings
    # The agent's own output, line by line, tagged with its pulse.
    output = system.run(f"journalctl -t reeve-pulse-{pulse['pulse_id']}-1 -o cat --no-pager")
    assert "Error: asked to exit 3" in output.stdout
    assert '"subtype": "init"' in output.stdout
    by_field = system.run(f"journalctl REEVE_PULSE_ID={pulse['pulse_id']} -o cat --no-pager")
    assert by_field.stdout == output.stdout
    info_only = system.run("journalctl -u reeve-lite -p info -o cat --no-pager").stdout
    assert f"pulse={pulse['pulse_id']} attempt=1 started" in info_only
    assert f"pulse={pulse['pulse_id']} attempt=1 started" not in warnings


def test_reload_rereads_the_configuration(system: Container) -> None:
    pid = show(system, "reeve-lite.service", "MainPID")
    system.run("echo REEVE_LITE_MAX_CONCURRENT=2 >> /etc/reeve-lite/reeve-lite.conf")
    system.run("systemctl reload reeve-lite.service")
    assert client(system, "status")["max_concurrent"] == 2
    assert show(system, "reeve-lite.service", "MainPID") == pid
    assert client(system, "list")["total"] == 1  # the pending pulse is still there


def test_watchdog_restarts_a_frozen_daemon_and_nothing_is_lost(system: Container) -> None:
    system.run(
        "mkdir -p /etc/systemd/system/reeve-lite.service.d && printf "
        "'[Service]\\nWatchdogSec=3\\n' > /etc/systemd/system/reeve-lite.service.d/wd.conf "
        "&& systemctl daemon-reload && systemctl restart reeve-lite.service"
    )
    pid = show(system, "reeve-lite.service", "MainPID")
    pending = client(system, "list")["pulses"]
    system.run(f"kill -STOP {pid}")
    poll(
        lambda: (
            show(system, "reeve-lite.service", "MainPID") not in ("0", pid)
            and show(system, "reeve-lite.service", "ActiveState") == "active"
        ),
        30,
        "the watchdog to restart the daemon",
    )
    assert "watchdog" in system.run("journalctl -u reeve-lite --no-pager -o cat").stdout.lower()
    assert client(system, "list")["pulses"] == pending
    system.run("rm -r /etc/systemd/system/reeve-lite.service.d && systemctl daemon-reload")


def test_after_boot_a_pending_pulse_fires_without_any_client(system: Container) -> None:
    system.run("systemctl enable reeve-lite.service")
    pulse = client(system, "schedule", "'in 6 seconds'", "'after the reboot'")
    system.run("systemctl stop reeve-lite.service reeve-lite.socket")
    # What boot does: start the default target and what it wants. No client connects.
    system.run("systemctl start multi-user.target")
    assert show(system, "reeve-lite.service", "ActiveState") == "active"
    poll(
        lambda: any(c["pulse_id"] == str(pulse["pulse_id"]) for c in calls(system)),
        30,
        "the pulse to fire",
    )
    system.run("systemctl disable reeve-lite.service")


def test_idle_exit_then_the_socket_starts_it_again(system: Container) -> None:
    for pulse in client(system, "list")["pulses"]:
        client(system, "cancel", str(pulse["pulse_id"]))
    system.run("echo REEVE_LITE_IDLE_EXIT=2s >> /etc/reeve-lite/reeve-lite.conf")
    system.run("systemctl restart reeve-lite.service")
    client(system, "status")
    poll(
        lambda: show(system, "reeve-lite.service", "ActiveState") == "inactive",
        30,
        "the daemon to idle out",
    )
    assert show(system, "reeve-lite.service", "Result") == "success"
    assert show(system, "reeve-lite.socket", "ActiveState") == "active"
    assert client(system, "status")["counts"]["cancelled"] >= 1  # activated again
    assert show(system, "reeve-lite.service", "ActiveState") == "active"


def test_the_api_token_is_a_credential_and_never_shows(system: Container) -> None:
    token = "tok-" + secrets.token_hex(16)
    wrong = "bad-" + secrets.token_hex(16)
    system.run(
        "install -d -m 0700 /etc/credstore"
        " && install -m 0600 /dev/stdin /etc/credstore/reeve-lite-api-token"
        " && mkdir -p /etc/systemd/system/reeve-lite.service.d"
        " && printf '[Service]\\nLoadCredential=api-token:/etc/credstore/reeve-lite-api-token\\n'"
        " > /etc/systemd/system/reeve-lite.service.d/token.conf"
        # As docs/operations.md says: a socket cannot start while its service runs.
        " && systemctl daemon-reload && systemctl stop reeve-lite.service"
        " && systemctl enable --now reeve-lite-tcp.socket && systemctl start reeve-lite.service",
        input=token,
    )
    system.run("umask 077 && cat > /root/token", input=token)
    system.run("umask 077 && cat > /root/wrong", input=wrong)
    tcp = "reeve-lite status --json --url http://127.0.0.1:8765"
    assert json.loads(system.run(f"{tcp} --token-file /root/token").stdout)["version"]
    refused = system.run(f"{tcp} --token-file /root/wrong", check=False)
    anonymous = system.run(tcp, check=False)
    for answer in (refused, anonymous):
        assert answer.returncode == 2
        assert "missing or wrong bearer token" in answer.stderr
    # Where a token could leak: the journal (every field), command lines and
    # environments of every process, the units' properties, the answers.
    places = {
        "journal": "journalctl -b --no-pager -o verbose",
        "cmdline": "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done",
        "environ": "cat /proc/[0-9]*/environ | tr '\\0' '\\n'",
        "systemctl show": "systemctl show reeve-lite.service reeve-lite-tcp.socket",
    }
    for name, command in places.items():
        seen = system.run(command, check=False).stdout
        assert seen, name
        assert token not in seen, name
        assert wrong not in seen, name
    for answer in (refused, anonymous):
        assert token not in answer.stdout + answer.stderr
    record(
        "access",
        "API token as a systemd credential",
        "absent from the journal, every command line and environment, systemctl show, answers",
    )
    system.run(
        "systemctl disable --now reeve-lite-tcp.socket"
        " && rm -r /etc/systemd/system/reeve-lite.service.d && systemctl daemon-reload"
        " && systemctl restart reeve-lite.service"
    )
