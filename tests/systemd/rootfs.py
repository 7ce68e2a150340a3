"""Build or reuse the cached Debian root that the systemd test tier boots.

The root lives in ``/var/cache/reeve-lite-test/rootfs-<key>/``. The key hashes the
build recipe: the debootstrap arguments (mirror included), the packages, the Python
requirements read from ``pyproject.toml`` and this file's own content, so any change
to how the root is made produces a new key and a fresh build. A completion marker is
written last, after a sync, so an interrupted build is never reused; older roots are
removed once a new one is complete (unless a running session still holds them).

The root carries a virtualenv at ``/opt/reeve-lite`` with the project's runtime
dependencies and its build backend already installed, created with the container's
own ``python3``, so a test session only installs the project itself (``--no-deps
--no-index``) into a throw-away copy of the root.

Run as a script (as root) to build ahead of the tests and print the path::

    python3 tests/systemd/rootfs.py

Measured on a 2-core Debian 12 host: a cold build takes 75 to 85 seconds (debootstrap
about 60, the virtualenv about 15), a warm lookup well under a second, and the cache
holds about 290 MB.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("REEVE_LITE_TEST_CACHE", "/var/cache/reeve-lite-test"))

SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# libpam-systemd: without pam_systemd a lingering user manager cannot start;
# dbus-user-session: systemd-run --user needs the user bus.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "dbus-user-session",
    "libpam-systemd",
    "python3",
    "python3-venv",
)
# Where the runtime dependencies live inside the root; the project is added per session.
VENV = "/opt/reeve-lite"
# Building the project with --no-build-isolation needs the backend in the venv, and
# `wheel` lets pip build sdist-only dependencies (sdnotify) without the legacy path.
EXTRA_VENV_PACKAGES = ("wheel",)
# Written last: its presence means the root is complete. Holds the recipe as JSON.
MARKER = ".reeve-lite-test-complete"
HOST_PACKAGES = ("systemd-container", "debootstrap")
HOST_TOOLS = ("systemd-nspawn", "debootstrap", "nsenter")
# Host CA bundle, bound into the build so pip trusts the same CAs as the host
# (TLS-intercepting proxies); pip's vendored certifi would not know them.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINER_CA_BUNDLE = "/run/host-ca-certificates.crt"
# Passed through to pip inside the root so a CI proxy or index mirror keeps working.
FORWARDED_ENV = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
)
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], None]


class HostToolsUnavailable(RuntimeError):
    """systemd-nspawn or debootstrap is missing and could not be installed."""


class BuildFailed(RuntimeError):
    """A build step failed; the message ends with the tail of the build log."""


def _stderr(message: str) -> None:
    print(f"[rootfs] {message}", file=sys.stderr, flush=True)


def which(name: str) -> str | None:
    """`shutil.which` that also looks in the sbin directories (pytest's PATH may lack them)."""
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=f"{path}:{SEARCH_PATH}" if path else SEARCH_PATH)


def ensure_host_tools(progress: Progress = _stderr) -> None:
    """Install systemd-nspawn and debootstrap with apt-get when missing (needs root)."""
    if all(which(tool) for tool in HOST_TOOLS):
        return
    if os.geteuid() != 0 or which("apt-get") is None:
        raise HostToolsUnavailable(
            f"need {', '.join(HOST_TOOLS)}; install {' '.join(HOST_PACKAGES)} as root"
        )
    progress(f"installing {' '.join(HOST_PACKAGES)} with apt-get")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", *HOST_PACKAGES],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HostToolsUnavailable(
                f"`{shlex.join(argv)}` failed ({done.returncode}): {_tail(done.stderr)}"
            )
    missing = [tool for tool in HOST_TOOLS if which(tool) is None]
    if missing:
        raise HostToolsUnavailable(f"still missing after apt-get install: {', '.join(missing)}")


def debian_mirror() -> str:
    """The Debian mirror apt uses for the main suite, so debootstrap fetches from it too.

    Reads both the one-line (``*.list``) and deb822 (``*.sources``) formats; the
    ``REEVE_LITE_TEST_MIRROR`` environment variable overrides.
    """
    override = os.environ.get("REEVE_LITE_TEST_MIRROR")
    if override:
        return override.rstrip("/")
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.name.endswith(".sources"):
            entries = _deb822_entries(text)
        elif path.name.endswith(".list"):
            entries = _one_line_entries(text)
        else:
            continue  # e.g. *.disabled: apt ignores those, so do we
        for uri, suites in entries:
            if SUITE in suites and re.match(r"(https?|file):", uri):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def _deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    entries: list[tuple[str, list[str]]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        entries.extend((uri, suites) for uri in fields.get("uris", "").split())
    return entries


def _one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    entries: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = re.sub(r"\[[^]]*\]", "", raw.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            entries.append((line[1], [line[2]]))
    return entries


def _apt_proxy_env() -> dict[str, str]:
    """apt's configured HTTP proxy as http_proxy, for debootstrap's wget."""
    if "http_proxy" in os.environ or which("apt-config") is None:
        return {}
    done = subprocess.run(
        ["apt-config", "shell", "PROXY", "Acquire::http::Proxy"],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"PROXY='([^']+)'", done.stdout)
    return {"http_proxy": match.group(1)} if match else {}


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the root's content; its hash is the cache key."""

    mirror: str
    debootstrap_args: tuple[str, ...]
    venv_requirements: tuple[str, ...]
    harness_sha256: str

    @classmethod
    def current(cls, project_root: Path = PROJECT_ROOT) -> Recipe:
        pyproject = tomllib.loads((project_root / "pyproject.toml").read_text())
        runtime = tuple(pyproject["project"].get("dependencies", ()))
        backend = tuple(pyproject.get("build-system", {}).get("requires", ()))
        return cls(
            mirror=debian_mirror(),
            debootstrap_args=("--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE),
            venv_requirements=(*runtime, *backend, *EXTRA_VENV_PACKAGES),
            harness_sha256=hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        )

    @property
    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def rootfs_path(recipe: Recipe) -> Path:
    return CACHE_DIR / f"rootfs-{recipe.key}"


def is_complete(root: Path) -> bool:
    return (root / MARKER).is_file()


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def ensure_rootfs(progress: Progress = _stderr) -> Path:
    """Build the root for the current recipe unless a complete one is cached; return it."""
    with leased_rootfs(progress) as root:
        return root


@contextlib.contextmanager
def leased_rootfs(progress: Progress = _stderr) -> Iterator[Path]:
    """Build or reuse the root and hold a shared lock on it while the caller uses it.

    The lock keeps a concurrent session with a newer recipe from deleting a root that
    a running container still has as its lower layer.
    """
    ensure_host_tools(progress)
    recipe = Recipe.current()
    root = rootfs_path(recipe)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    lease = os.open(CACHE_DIR / f"{root.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # Builds and clean-ups are serialised; the lease is taken before the build
        # lock is released so no clean-up can slip in between.
        with _flock(CACHE_DIR / ".build.lock", fcntl.LOCK_EX):
            if is_complete(root):
                progress(f"reusing {root}")
            else:
                build(root, recipe, progress)
            fcntl.flock(lease, fcntl.LOCK_SH)
            remove_stale(recipe.key, progress)
        yield root
    finally:
        os.close(lease)


def build(root: Path, recipe: Recipe, progress: Progress = _stderr) -> None:
    """Build `root` from scratch: debootstrap, trim, virtualenv, marker (last)."""
    log = CACHE_DIR / f"{root.name}.build.log"
    busy = CACHE_DIR / f"{root.name}.busy"
    if root.exists():
        progress(f"removing incomplete {root}")
        # Steps of a build whose runner was killed may still be writing into it.
        with _flock(busy, fcntl.LOCK_EX):
            safe_rmtree(root)
    started = time.monotonic()
    progress(f"building {root} from {recipe.mirror} (takes about 80 s)")
    with log.open("w") as log_file:
        try:
            steps = _Steps(log_file, busy)
            _debootstrap(root, recipe, steps, progress)
            _configure(root)
            _make_venv(root, recipe, steps)
        except BaseException:
            safe_rmtree(root)  # free the space now; the marker is absent anyway
            raise
    os.sync()  # the marker must not reach the disk before the files it vouches for
    record = asdict(recipe) | {"built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    partial = root / f"{MARKER}.tmp"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.rename(root / MARKER)
    os.sync()
    progress(f"built {root} in {time.monotonic() - started:.0f}s (log: {log})")


@dataclass
class _Steps:
    """Runs build commands with their output appended to the build log."""

    log_file: TextIO
    # Each step runs under `flock busy`: if we are killed, the lock lives on in the
    # orphaned step, and the next build waits for it before deleting the root.
    # (Passing an fd down does not work: debootstrap closes it.)
    busy: Path

    def run(
        self, argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
    ) -> None:
        self.log_file.write(f"\n$ {shlex.join(argv)}\n")
        self.log_file.flush()
        proc = subprocess.Popen(
            [which("flock") or "flock", "--shared", str(self.busy), *argv],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # one group: debootstrap's dpkg and wget go with it
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except BaseException as exc:  # a timeout, Ctrl-C, pytest giving up
            _stop_group(proc)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise BuildFailed(f"`{shlex.join(argv)}` timed out after {timeout:.0f}s") from exc
            raise
        if returncode != 0:
            self.log_file.flush()
            tail = _tail(Path(self.log_file.name).read_text(errors="replace"))
            raise BuildFailed(
                f"`{shlex.join(argv)}` exited {returncode}; log {self.log_file.name}:\n{tail}"
            )


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a step's process group, then SIGKILL what is left (dpkg-deb, wget)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    # Nothing may still write into the root when the caller deletes it.
    while processes(pgrp=proc.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.05)
    proc.wait()


def processes(*, ppid: int | None = None, pgrp: int | None = None) -> list[int]:
    """PIDs of the live (not zombie) processes with this parent and/or process group."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The comm field may contain spaces or parentheses: parse after the last ')'.
        state, parent, group = stat.rsplit(")", 1)[1].split()[:3]
        if state == "Z":
            continue
        if (ppid is None or int(parent) == ppid) and (pgrp is None or int(group) == pgrp):
            found.append(int(entry.name))
    return found


def _debootstrap(root: Path, recipe: Recipe, steps: _Steps, progress: Progress) -> None:
    debootstrap = which("debootstrap") or "debootstrap"
    env = os.environ | _apt_proxy_env()
    argv = [debootstrap, *recipe.debootstrap_args, str(root), recipe.mirror]
    try:
        steps.run(argv, timeout=1200, env=env)
    except BuildFailed as first:
        # The default extractor (dpkg-deb) fails in some sandboxes; `ar` is the
        # documented fallback and yields the same tree.
        progress(f"debootstrap failed, retrying with --extractor=ar ({first})")
        safe_rmtree(root)
        steps.run([argv[0], "--extractor=ar", *argv[1:]], timeout=1200, env=env)


def _configure(root: Path) -> None:
    """Touches for life as a container: its own hostname (debootstrap copied the host's)."""
    (root / "etc/hostname").write_text("reeve-lite-test\n")
    # Downloaded packages and indexes are dead weight (about 100 MB) in every copy.
    for directory in (root / "var/cache/apt/archives", root / "var/lib/apt/lists"):
        for entry in directory.glob("*"):
            if entry.is_file() and entry.name != "lock":
                entry.unlink()


def nspawn_build_args(root: Path) -> list[str]:
    """systemd-nspawn options to run one command in `root` (not booted) with network."""
    args = [
        which("systemd-nspawn") or "systemd-nspawn",
        "--quiet",
        f"--directory={root}",
        "--register=no",
        "--keep-unit",
    ]
    if HOST_CA_BUNDLE.is_file():
        args += [
            f"--bind-ro={HOST_CA_BUNDLE}:{CONTAINER_CA_BUNDLE}",
            f"--setenv=PIP_CERT={CONTAINER_CA_BUNDLE}",
        ]
    for name in FORWARDED_ENV:
        value = os.environ.get(name)
        if value and "file:" not in value:  # the host's file:// indexes are not inside
            args.append(f"--setenv={name}={value}")
    return args


def _make_venv(root: Path, recipe: Recipe, steps: _Steps) -> None:
    base = [*nspawn_build_args(root), "--setenv=PIP_DISABLE_PIP_VERSION_CHECK=1"]
    pip = f"{VENV}/bin/pip"
    steps.run([*base, "/usr/bin/python3", "-m", "venv", VENV], timeout=300)
    install = [pip, "install", "--no-cache-dir", "--progress-bar=off"]
    steps.run([*base, *install, *recipe.venv_requirements], timeout=900)
    steps.run([*base, pip, "freeze", "--all"], timeout=120)


def remove_stale(current_key: str, progress: Progress = _stderr) -> None:
    """Remove roots (and their logs and locks) of other recipes that nobody holds."""
    current = f"rootfs-{current_key}"
    names = {path.name.split(".", 1)[0] for path in CACHE_DIR.glob("rootfs-*")}
    for name in sorted(names - {current}):
        lock = CACHE_DIR / f"{name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"keeping {name}: a running session still uses it")
                continue
            progress(f"removing stale {CACHE_DIR / name}")
            if (CACHE_DIR / name).exists():
                safe_rmtree(CACHE_DIR / name)
            for leftover in CACHE_DIR.glob(f"{name}.*"):
                leftover.unlink(missing_ok=True)
        finally:
            os.close(fd)


def safe_rmtree(path: Path) -> None:
    """rmtree that first unmounts anything below `path`.

    An interrupted debootstrap can leave /proc, /sys or a bind of the host's /dev
    mounted inside the target; a plain rmtree would descend into them.
    """
    if not os.path.lexists(path):
        return
    path = path.resolve()
    for mountpoint in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False, capture_output=True)
    remaining = _mounts_below(path)
    if remaining:
        raise RuntimeError(f"refusing to delete {path}: still mounted: {remaining}")
    shutil.rmtree(path)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like octal-escaped.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == str(path) or point.startswith(prefix):
            mounts.append(point)
    return mounts


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def main() -> int:
    if os.geteuid() != 0:
        print("rootfs.py must run as root (debootstrap, systemd-nspawn)", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        root = ensure_rootfs()
    except KeyboardInterrupt:
        return 130
    print(root)
    _stderr(f"ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
