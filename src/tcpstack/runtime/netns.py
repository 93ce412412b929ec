"""Network namespaces, compatible with ``ip netns``.

Why the ``ip`` command (iproute2) and not pyroute2 to create and delete them:
a namespace that ``ip netns exec NAME`` and ``ip netns list`` can see is a
convention, not a kernel object: an nsfs bind mount on ``/run/netns/NAME``,
with ``/run/netns`` itself made a shared mount so the bind survives in other
mount namespaces, plus ``/etc/netns/NAME`` handling on exec. iproute2 *is* that
convention, so calling it is compatible by definition; it is already a test and
runtime prerequisite (``make deps-debian``), adds no Python dependency, and it
keeps mount(2) juggling out of this process. Creating a namespace happens
once per run, so a ~2 ms subprocess does not matter. pyroute2 would re-implement
the same steps (forking a helper to unshare) behind an API that changed across
its 0.7 -> 0.9 rewrite.

Everything else is done in-process with no subprocess: :func:`in_netns`
switches the calling *thread* into a namespace with setns(2) (through ctypes,
since Python 3.11 has no ``os.setns``), which is what opening sockets, creating
a TUN device, or writing ``/proc/sys/net/...`` of that namespace needs.

Privileges: creating a namespace or entering one needs CAP_SYS_ADMIN; creating
and configuring network devices needs CAP_NET_ADMIN. Without them the
functions raise :class:`PermissionError` with a message that says so, before
anything half-done is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

__all__ = [
    "NETNS_RUN_DIR",
    "NetnsLease",
    "delete_netns",
    "ensure_netns",
    "has_capability",
    "in_netns",
    "netns_exists",
    "netns_path",
    "require_privileges",
]

#: Where ``ip netns`` keeps its namespace bind mounts (iproute2's NETNS_RUN_DIR).
NETNS_RUN_DIR = "/run/netns"

CLONE_NEWNET = 0x40000000

# linux/capability.h
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

# `ip netns add` accepts any file name; we accept a conservative subset so a
# name can never escape /run/netns or need quoting in a shell command.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")

_IP_TIMEOUT_S = 10.0

PRIVILEGE_HINT = (
    "tcpstack up needs CAP_NET_ADMIN (run as root, or "
    '`sudo setcap cap_net_admin,cap_sys_admin+ep "$(readlink -f "$(command -v python3)")"`'
    " and create the namespace beforehand with `sudo ip netns add NAME`)"
)


def _privilege_message(what: str, missing: list[str]) -> str:
    return f"{PRIVILEGE_HINT}; {what} needs {' and '.join(missing)}, which this process lacks"


# ---------------------------------------------------------------------------
# capabilities


def _effective_caps() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    # No /proc: assume root has everything and nobody else has anything.
    return -1 if os.geteuid() == 0 else 0


def has_capability(cap: int) -> bool:
    """Whether this process has capability number ``cap`` in its effective set."""
    return bool(_effective_caps() >> cap & 1)


def require_privileges(what: str, *, net_admin: bool = False, sys_admin: bool = False) -> None:
    """Raise :class:`PermissionError` naming the missing capabilities for ``what``."""
    caps = _effective_caps()
    missing = []
    if net_admin and not caps >> CAP_NET_ADMIN & 1:
        missing.append("CAP_NET_ADMIN")
    if sys_admin and not caps >> CAP_SYS_ADMIN & 1:
        missing.append("CAP_SYS_ADMIN")
    if missing:
        raise PermissionError(_privilege_message(what, missing))


# ---------------------------------------------------------------------------
# names and the ip command


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid network namespace name {name!r}: use 1-63 of [A-Za-z0-9_.-], "
            "not starting with '.' or '-'"
        )
    return name


def netns_path(name: str) -> str:
    """The nsfs file of namespace ``name`` (``/run/netns/NAME``)."""
    return os.path.join(NETNS_RUN_DIR, _check_name(name))


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if exe is None:
        raise FileNotFoundError(
            "the `ip` command (iproute2) is needed to manage network namespaces; "
            "install it (Debian/Ubuntu: apt-get install iproute2)"
        )
    return subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        timeout=_IP_TIMEOUT_S,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"},
    )


def _ip_failed(what: str, proc: subprocess.CompletedProcess[str]) -> OSError:
    msg = (proc.stderr or proc.stdout or "").strip()
    low = msg.lower()
    if "permission denied" in low or "operation not permitted" in low:
        return PermissionError(_privilege_message(what, ["CAP_SYS_ADMIN"]) + f" ({msg})")
    return OSError(f"{what} failed: `ip {' '.join(proc.args[1:])}`: {msg}")


# ---------------------------------------------------------------------------
# lifecycle


def netns_exists(name: str) -> bool:
    """Whether ``ip netns list`` would show ``name``."""
    return os.path.exists(netns_path(name))


def ensure_netns(name: str) -> bool:
    """Create namespace ``name`` unless it exists. Returns True if this call created it."""
    path = netns_path(name)
    if os.path.exists(path):
        return False
    require_privileges(f"creating network namespace {name!r}", sys_admin=True)
    proc = _ip("netns", "add", name)
    if proc.returncode != 0:
        # Lost a race with another creator: that is fine, it exists now.
        if os.path.exists(path) and "exists" in (proc.stderr or ""):
            return False
        raise _ip_failed(f"creating network namespace {name!r}", proc)
    return True


def delete_netns(name: str, *, missing_ok: bool = True) -> None:
    """Delete namespace ``name`` (``ip netns del``).

    Devices owned by the namespace (a non-persistent TUN whose fd is still open
    keeps it alive) are destroyed when the last reference goes away.
    """
    path = netns_path(name)
    if not os.path.exists(path):
        if missing_ok:
            return
        raise FileNotFoundError(f"network namespace {name!r} does not exist ({path})")
    require_privileges(f"deleting network namespace {name!r}", sys_admin=True)
    proc = _ip("netns", "del", name)
    if proc.returncode != 0 and os.path.exists(path):
        raise _ip_failed(f"deleting network namespace {name!r}", proc)


class NetnsLease:
    """Use namespace ``name``, creating it if missing; on exit remove it only if we created it.

    >>> with NetnsLease("tcpstack-demo") as lease:   # doctest: +SKIP
    ...     lease.created
    True
    """

    def __init__(self, name: str) -> None:
        self.name = _check_name(name)
        self.created = False
        self._open = False

    def acquire(self) -> NetnsLease:
        if not self._open:
            self.created = ensure_netns(self.name)
            self._open = True
        return self

    def close(self) -> None:
        """Release the lease; idempotent. Deletes the namespace only if this lease created it."""
        if not self._open:
            return
        self._open = False
        if self.created:
            self.created = False
            delete_netns(self.name)

    @property
    def path(self) -> str:
        return netns_path(self.name)

    def __enter__(self) -> NetnsLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetnsLease({self.name!r}, created={self.created}, open={self._open})"


# ---------------------------------------------------------------------------
# entering a namespace from this process

_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
        _libc.setns.restype = ctypes.c_int
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _ns_file(name: str) -> str:
    # An absolute path (e.g. /proc/PID/ns/net) is accepted as well as a name.
    return name if name.startswith("/") else netns_path(name)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace ``name``.

    ``name`` is an ``ip netns`` name or an absolute path to an nsfs file
    (``/proc/PID/ns/net``). Only the calling OS thread switches; other threads
    keep theirs, but a thread *started* inside the block inherits the namespace
    (clone(2) copies its creator's). What is created inside stays bound to it
    after the block: sockets, TUN devices (their fds keep working anywhere).
    Do not ``await`` inside the block: other asyncio tasks would run in the
    namespace too.
    """
    path = _ns_file(name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"network namespace {name!r} does not exist ({path}); create it with "
            f"ensure_netns() or `ip netns add {name}`"
        ) from None
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        try:
            _setns(target, CLONE_NEWNET)
        except PermissionError:
            raise PermissionError(
                _privilege_message(f"entering network namespace {name!r}", ["CAP_SYS_ADMIN"])
            ) from None
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                _setns(original, CLONE_NEWNET)
            except OSError as e:  # pragma: no cover - would need a kernel bug
                # The thread is stranded in the wrong namespace; nothing it does
                # afterwards can be trusted, so make the failure loud.
                raise RuntimeError(f"could not return from network namespace {name!r}: {e}") from e
    finally:
        os.close(original)
