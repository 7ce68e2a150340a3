"""The Debian package in a fresh bookworm under a real systemd: install with apt
(dependencies from Debian), socket activation, a member of group reeve schedules a
pulse that the fake agent runs, backup, upgrade with pending pulses, remove, purge.

The tests run in file order on one container of their own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.report import record
from tests.systemd import rootfs
from tests.systemd.conftest import (
    BOOT_TIMEOUT,
    FAKE_CLAUDE,
    PROJECT_ROOT,
    Container,
    boot,
    poll,
    wait_until_up,
)

pytestmark = pytest.mark.systemd

OLD, NEW = "0.1.0", "0.1.0+upgrade1"
AS_ALICE = "runuser -u alice -- reeve-lite"


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The package built from this tree, and the same repacked as a newer version."""
    out = tmp_path_factory.mktemp("debs")
    started = time.monotonic()
    built = subprocess.run(
        [str(PROJECT_ROOT / "packaging" / "build-deb")],
        env=os.environ | {"OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    old = Path(built.stdout.strip().splitlines()[-1])
    if not old.is_absolute():
        old = PROJECT_ROOT / old
    print(
        f"\n[deb] built {old.name} ({old.stat().st_size / 1e6:.1f} MB) in "
        f"{time.monotonic() - started:.0f}s"
    )
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(old), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(f"Version: {OLD}\n", f"Version: {NEW}\n"))
    new = out / f"reeve-lite_{NEW}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(new)],
        check=True,
        capture_output=True,
    )
    return {"old": old, "new": new}


@pytest.fixture(scope="module")
def machine(
    container: Container, tmp_path_factory: pytest.TempPathFactory, debs: dict[str, Path]
) -> Iterator[Container]:
    """A fresh container of the cached root, nothing of the project installed."""
    log = tmp_path_factory.mktemp("deb-console") / "console.log"
    deadline = time.monotonic() + BOOT_TIMEOUT
    booted = boot(container.root, log, "-deb")
    fresh: Container | None = None
    try:
        fresh = Container(booted.wait_for_init(deadline), booted.machine, container.root, log)
        wait_until_up(fresh, deadline)
        for deb in debs.values():
            fresh.copy_in(deb, f"/tmp/{deb.name}")
        fresh.copy_in(PROJECT_ROOT / "tests" / "fake_hapi.py", "/opt/fake-hapi.py")
        # The fake Claude Code where the units' PATH finds it (REEVE_LITE_AGENT=auto).
        fresh.run(FAKE_CLAUDE)
        yield fresh
    finally:
        booted.stop(fresh)


def _pulse(machine: Container, pulse_id: int) -> dict[str, Any]:
    shown = machine.run(f"{AS_ALICE} show --json {pulse_id}").stdout
    return json.loads(shown)  # type: ignore[no-any-return]


def test_apt_installs_it_with_its_dependencies_from_debian(
    machine: Container, debs: dict[str, Path]
) -> None:
    # Fresh bookworm: what the package needs beyond the base system comes from Debian.
    machine.run("apt-get remove -y -qq python3-venv dbus-user-session", timeout=120)
    machine.run("apt-get update -qq", timeout=300)
    started = time.monotonic()
    done = machine.run(
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/{debs['old'].name}",
        timeout=600,
    )
    took = time.monotonic() - started
    print(f"\n[deb] apt-get install took {took:.1f}s")
    assert "python3-venv" in done.stdout
    assert "dbus-user-session" in done.stdout
    status = machine.run("dpkg-query -W -f '${Status} ${Version}' reeve-lite").stdout
    assert status == f"install ok installed {OLD}"
    assert machine.run("systemctl is-enabled reeve-lite.socket").stdout.strip() == "enabled"
    assert machine.run("systemctl is-active reeve-lite.socket").stdout.strip() == "active"
    inactive = machine.run("systemctl is-active reeve-lite.service", check=False).stdout
    assert inactive.strip() == "inactive"
    assert machine.run("stat -c '%U:%G %a' /run/reeve-lite/api.sock").stdout.strip() == (
        "root:reeve 660"
    )
    assert machine.run("getent group reeve", check=False).returncode == 0
    conf = machine.run("cat /etc/reeve-lite/reeve-lite.conf").stdout
    assert "#REEVE_LITE_MAX_CONCURRENT=4" in conf
    assert (
        machine.run("dpkg-query -W -f '${Conffiles}' reeve-lite")
        .stdout.strip()
        .startswith("/etc/reeve-lite/reeve-lite.conf")
    )
    assert machine.run("test -s /usr/share/man/man1/reeve-lite.1.gz").returncode == 0
    # Installing again (dpkg --configure twice) is harmless.
    machine.run(f"dpkg -i /tmp/{debs['old'].name}", timeout=300)
    assert machine.run("systemctl is-active reeve-lite.socket").stdout.strip() == "active"


def test_a_member_of_group_reeve_schedules_a_pulse_that_runs_in_a_transient_unit(
    machine: Container,
) -> None:
    machine.run(
        "useradd --create-home --groups reeve alice"
        " && echo 'REEVE_LITE_AGENT=claude' >> /etc/reeve-lite/reeve-lite.conf"
    )
    made = json.loads(machine.run(f'{AS_ALICE} schedule --json now "hello from alice"').stdout)
    pulse = poll(
        lambda: (p := _pulse(machine, made["pulse_id"]))["status"] == "completed" and p,
        60,
        "the pulse to complete",
    )
    [attempt] = pulse["attempts"]
    assert attempt["result"].startswith("done: hello from alice")
    status = json.loads(machine.run(f"{AS_ALICE} status --json").stdout)
    assert status["executor"] in ("scope", "service")
    journal = machine.run("journalctl -u reeve-lite --no-pager -o cat").stdout
    assert f"pulse={made['pulse_id']} attempt=1 started" in journal
    assert f"pulse={made['pulse_id']} attempt=1 succeeded" in journal
    # Without the group, the socket is closed to a user.
    machine.run("useradd --create-home bob")
    refused = machine.run(
        "runuser -u bob -- reeve-lite --version && runuser -u bob -- reeve-lite status "
        "--socket /run/reeve-lite/api.sock",
        check=False,
    )
    assert refused.returncode == 1
    assert "/run/reeve-lite/api.sock" in refused.stderr


def test_the_backup_of_the_timer_works(machine: Container) -> None:
    assert machine.run("systemctl is-enabled reeve-lite-backup.timer").stdout.strip() == "enabled"
    assert "reeve-lite-backup.timer" in machine.run("systemctl list-timers --all").stdout
    machine.run("systemctl start reeve-lite-backup.service", timeout=120)
    listed = machine.run("ls /var/lib/reeve-lite/backups/").stdout.split()
    assert len(listed) == 1
    assert listed[0].endswith(".db")
    check = machine.run(
        '/usr/lib/reeve-lite/bin/python3 -c "import sqlite3,sys; '
        "print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])\" "
        f"/var/lib/reeve-lite/backups/{listed[0]}"
    )
    assert check.stdout.strip() == "ok"


def test_an_upgrade_keeps_pending_pulses_and_they_still_fire(
    machine: Container, debs: dict[str, Path]
) -> None:
    made = json.loads(
        machine.run(f'{AS_ALICE} schedule --json "in 15 seconds" "after the upgrade"').stdout
    )
    assert machine.run("systemctl is-active reeve-lite.service").stdout.strip() == "active"
    machine.run(
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/{debs['new'].name}",
        timeout=600,
    )
    assert machine.run("dpkg-query -W -f '${Version}' reeve-lite").stdout == NEW
    # It ran before the upgrade, so it runs again after it, with the pulse pending.
    assert machine.run("systemctl is-active reeve-lite.service").stdout.strip() == "active"
    assert _pulse(machine, made["pulse_id"])["status"] in ("pending", "processing", "completed")
    pulse = poll(
        lambda: (p := _pulse(machine, made["pulse_id"]))["status"] == "completed" and p,
        90,
        "the pending pulse to fire after the upgrade",
    )
    assert pulse["attempts"][0]["result"].startswith("done: after the upgrade")
    # The configuration the admin changed is kept (it is a conffile).
    assert "REEVE_LITE_AGENT=claude" in machine.run("cat /etc/reeve-lite/reeve-lite.conf").stdout


def test_remove_keeps_the_database_and_purge_deletes_everything(machine: Container) -> None:
    machine.run("DEBIAN_FRONTEND=noninteractive apt-get remove -y reeve-lite", timeout=300)
    assert machine.run("test -f /var/lib/reeve-lite/reeve-lite.db").returncode == 0
    assert machine.run("test -e /usr/bin/reeve-lite", check=False).returncode != 0
    assert machine.run("systemctl is-active reeve-lite.socket", check=False).returncode != 0
    assert machine.run("test -S /run/reeve-lite/api.sock", check=False).returncode != 0
    machine.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y reeve-lite", timeout=300)
    for path in ("/var/lib/reeve-lite", "/etc/reeve-lite", "/usr/lib/reeve-lite"):
        assert machine.run(f"test -e {path}", check=False).returncode != 0, path
    assert machine.run("getent passwd reeve", check=False).returncode != 0
    assert machine.run("getent group reeve", check=False).returncode != 0


def test_lintian_finds_no_errors(debs: dict[str, Path]) -> None:
    if not shutil.which("lintian"):
        if os.environ.get("REEVE_LITE_TEST_REQUIRE_SYSTEMD") == "1":
            pytest.fail("lintian is not installed (apt-get install lintian)")
        pytest.skip("lintian is not installed")
    done = subprocess.run(
        ["lintian", "--tag-display-limit", "0", str(debs["old"])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:")]
    summary = sorted({" ".join(line.split()[:3]) for line in tags})
    print("\n[deb] lintian: " + ("; ".join(summary) or "clean"))
    assert [line for line in tags if line.startswith("E:")] == []
    # The warnings docs/reliability.md lists, with their reasons; a new one must be looked at.
    assert {line.split()[2] for line in tags} <= {"unusual-interpreter"}


# Directories that systemd (a dependency) makes at install and that outlive it;
# piuparts cannot tell them apart from the package's own in its upgrade test.
PIUPARTS_IGNORED = (
    "/root/.ssh/",
    "/var/cache/private/",
    "/var/lib/private/",
    "/var/lib/systemd/coredump/",
    "/var/lib/systemd/pstore/",
    "/var/log/private/",
)


def test_piuparts_install_purge_and_upgrade_pass(debs: dict[str, Path], tmp_path: Path) -> None:
    """Debian's own package checker on a bookworm base made with debootstrap (cached
    as a tarball): install and purge of this build, and an upgrade to it from the
    previous one, served from a local archive."""
    if not shutil.which("piuparts"):
        if os.environ.get("REEVE_LITE_TEST_REQUIRE_SYSTEMD") == "1":
            pytest.fail("piuparts is not installed (apt-get install piuparts)")
        pytest.skip("piuparts is not installed")
    mirror = rootfs.debian_mirror()
    version = subprocess.run(
        ["piuparts", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    key = hashlib.sha256(f"bookworm {mirror} {version}".encode()).hexdigest()[:16]
    base = rootfs.CACHE_DIR / f"piuparts-bookworm-{key}.tgz"
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(debs["old"], repo)
    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    (repo / "Packages").write_bytes(packages)
    argv = [
        "piuparts",
        "-d",
        "bookworm",
        "-m",
        mirror,
        "--warn-on-others",
        "--allow-database",
        *(arg for path in PIUPARTS_IGNORED for arg in ("-i", path)),
        "--bindmount",
        str(repo),
        "--extra-repo",
        f"deb [trusted=yes] file://{repo} ./",
    ]
    fresh = base.with_name(base.name + f".{os.getpid()}.partial")
    argv += ["-b", str(base)] if base.exists() else ["-s", str(fresh)]
    started = time.monotonic()
    done = subprocess.run([*argv, str(debs["new"])], capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    verdicts = [
        line.split("INFO: ", 1)[-1].split("ERROR: ", 1)[-1]
        for line in output.splitlines()
        if "PASS:" in line or "FAIL:" in line
    ]
    print(f"\n[deb] piuparts ({took:.0f}s): " + "; ".join(verdicts))
    assert done.returncode == 0, output[-4000:]
    assert not [v for v in verdicts if v.startswith("FAIL")]
    assert "PASS: Installation and purging test." in verdicts
    assert "PASS: Installation, upgrade and purging tests." in verdicts
    if fresh.exists():
        fresh.rename(base)  # the base for the next runs, complete
    record(
        "package",
        "piuparts 1.1.7: install and purge; upgrade from the previous build",
        f"{'; '.join(verdicts)} ({took:.0f} s)",
    )
