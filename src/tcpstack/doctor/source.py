"""Where the doctor reads from: this host, a network namespace, or a snapshot.

A source answers two questions:

- ``read(paths)``: the text of files named relative to a /proc root
  (``"net/tcp"``, ``"sys/net/ipv4/tcp_fin_timeout"``); ``None`` for a file
  that does not exist (an older kernel, or a snapshot without it).
- ``proc_root``: a directory holding ``PID/fd/*`` links and ``PID/comm``,
  for mapping socket inodes to processes (or ``None``).

Network namespaces (``--netns``): /proc/net/* and /proc/sys/net/* show the
namespace *of the task that reads them*. We open /run/netns/NAME (or any
``/proc/PID/ns/net``), start one helper thread, ``setns(fd, CLONE_NEWNET)`` in
that thread only, read every file through ``/proc/thread-self/...`` and let
the thread exit. Why this way:

- a namespace is a property of a thread, so switching one short-lived thread
  never disturbs the rest of the process, and nothing has to be restored;
- no fork: forking a multi-threaded Python (pytest, rich) is unsafe, and
  ``ip netns exec NAME cat FILE`` costs a process (and a /sys remount) per
  read and needs iproute2;
- /proc/PID/net of a process inside would need such a process to exist
  (``ip netns add`` creates none) and does not give the namespace's sysctls:
  /proc/sys/net resolves against the reader's namespace.

``/proc/self/net`` would be wrong here: it follows the thread-group leader's
namespace, not the helper thread's; ``/proc/thread-self/net`` follows ours.
Socket inodes are global (sockfs), so owners are still found by scanning the
host's /proc/*/fd.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

CLONE_NEWNET = 0x40000000

# Files read per sample, relative to a /proc root.
NET_FILES = ("net/tcp", "net/tcp6", "net/netstat", "net/snmp", "net/sockstat", "net/sockstat6")
COUNTER_FILES = ("net/netstat", "net/snmp")

# sysctls in force, relative to /proc (name in output -> file).
TUNABLE_FILES: dict[str, str] = {
    name: f"sys/net/ipv4/{name}"
    for name in (
        "tcp_syncookies",
        "tcp_max_syn_backlog",
        "tcp_synack_retries",
        "tcp_syn_retries",
        "tcp_abort_on_overflow",
        "tcp_fin_timeout",
        "tcp_tw_reuse",
        "tcp_tw_reuse_delay",
        "tcp_tw_recycle",  # removed in Linux 4.12; present only on older kernels
        "tcp_max_tw_buckets",
        "tcp_max_orphans",
        "tcp_orphan_retries",
        "ip_local_port_range",
        "tcp_keepalive_time",
        "tcp_keepalive_intvl",
        "tcp_keepalive_probes",
        "tcp_retries1",
        "tcp_retries2",
        "tcp_rmem",
        "tcp_wmem",
        "tcp_mem",
        "tcp_congestion_control",
        "tcp_window_scaling",
        "tcp_timestamps",
        "tcp_sack",
    )
}
TUNABLE_FILES["somaxconn"] = "sys/net/core/somaxconn"

OSRELEASE = "sys/kernel/osrelease"
SNAPSHOT_META = "doctor-snapshot.json"


class SourceError(RuntimeError):
    """The requested source cannot be read (no such namespace, no permission...)."""


def all_files() -> list[str]:
    return [*NET_FILES, *TUNABLE_FILES.values(), OSRELEASE]


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


class LiveSource:
    """The network namespace this process runs in."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.proc_root: str | None = proc
        self.label = "this host"
        # Our own thread's view; /proc/net would follow the main thread.
        thread_self = os.path.join(proc, "thread-self")
        self._net_base = thread_self if os.path.isdir(os.path.join(thread_self, "net")) else proc
        self.little_endian = sys.byteorder == "little"

    def _path(self, rel: str) -> str:
        if rel.startswith("net/"):
            return os.path.join(self._net_base, rel)
        return os.path.join(self.proc, rel)

    def read(self, paths: Iterable[str]) -> dict[str, str | None]:
        return {rel: _read_text(self._path(rel)) for rel in paths}


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name: str) -> str:
    """``NAME`` -> /run/netns/NAME; a path (``/proc/1234/ns/net``) is used as is."""
    if "/" in name:
        return name
    return os.path.join("/run/netns", name)


class NetnsSource(LiveSource):
    """A named network namespace, read from a helper thread that joined it."""

    def __init__(self, name: str, proc: str = "/proc", timeout: float = 10.0) -> None:
        super().__init__(proc)
        self.name = name
        self.path = netns_path(name)
        self.label = f"network namespace {name}"
        self.timeout = timeout
        if not os.path.exists(self.path):
            raise SourceError(f"no network namespace {name!r} ({self.path} does not exist)")
        # thread-self is what we must read through inside the helper thread.
        self._net_base = os.path.join(proc, "thread-self")

    def read(self, paths: Iterable[str]) -> dict[str, str | None]:
        wanted = list(paths)
        result: dict[str, str | None] = {}
        error: list[BaseException] = []

        def worker() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                error.append(exc)
                return
            try:
                _setns(fd)
                for rel in wanted:
                    result[rel] = _read_text(self._path(rel))
            except BaseException as exc:  # reported to the caller below
                error.append(exc)
            finally:
                os.close(fd)

        thread = threading.Thread(target=worker, name=f"doctor-netns-{self.name}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise SourceError(f"reading namespace {self.name!r} took more than {self.timeout} s")
        if error:
            exc = error[0]
            if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == 1:
                raise SourceError(
                    f"entering network namespace {self.name!r} needs CAP_SYS_ADMIN (run as root)"
                ) from exc
            raise SourceError(f"cannot read network namespace {self.name!r}: {exc}") from exc
        return result


class SnapshotSource:
    """A directory tree mirroring /proc (see docs/doctor.md, "Snapshots")."""

    def __init__(self, root: str) -> None:
        if not os.path.isdir(root):
            raise SourceError(f"--proc {root}: not a directory")
        if not os.path.exists(os.path.join(root, "net", "tcp")):
            raise SourceError(f"--proc {root}: no net/tcp inside; not a /proc snapshot")
        self.root = root
        self.label = f"snapshot {root}"
        self.proc_root: str | None = root
        self.little_endian = sys.byteorder == "little"
        self.meta: dict[str, object] = {}
        meta_path = os.path.join(root, SNAPSHOT_META)
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
            order = self.meta.get("byteorder")
            if order in ("little", "big"):
                self.little_endian = order == "little"

    def read(self, paths: Iterable[str]) -> dict[str, str | None]:
        return {rel: _read_text(os.path.join(self.root, rel)) for rel in paths}


# --- sockets -> processes ---------------------------------------------------


class OwnerMap:
    """Socket inode -> pids holding a descriptor to it, from one pass over
    ``PROC/*/fd``; ``comm`` of those pids read lazily, once each."""

    def __init__(self, proc_root: str | None, wanted: set[int] | None = None) -> None:
        self.proc_root = proc_root
        self.available = proc_root is not None  # False: owners were not looked for
        self.inode_pids: dict[int, list[int]] = {}
        self.unreadable_pids = 0  # fd directories we may not read (not root)
        self.scanned_pids = 0
        self._comm: dict[int, str] = {}
        if proc_root is not None:
            self._scan(proc_root, wanted)

    def _scan(self, root: str, wanted: set[int] | None) -> None:
        inode_pids = self.inode_pids
        readlink = os.readlink
        try:
            entries = os.scandir(root)
        except OSError:
            return
        with entries:
            for entry in entries:
                name = entry.name
                if not name.isdigit():
                    continue
                # readlink relative to an open fd directory: no path walk
                # through /proc/PID/fd for each of thousands of descriptors.
                try:
                    dir_fd = os.open(f"{root}/{name}/fd", os.O_RDONLY | os.O_DIRECTORY)
                except PermissionError:
                    self.unreadable_pids += 1
                    continue
                except OSError:  # exited meanwhile, or not a process directory
                    continue
                self.scanned_pids += 1
                pid = int(name)
                try:
                    fd_names = os.listdir(dir_fd)
                    for fd_name in fd_names:
                        try:
                            target = readlink(fd_name, dir_fd=dir_fd)
                        except OSError:
                            continue
                        if not target.startswith("socket:["):
                            continue
                        try:
                            inode = int(target[8:-1])
                        except ValueError:
                            continue
                        if wanted is not None and inode not in wanted:
                            continue
                        pids = inode_pids.get(inode)
                        if pids is None:
                            inode_pids[inode] = [pid]
                        elif pid not in pids:
                            pids.append(pid)
                except OSError:
                    continue
                finally:
                    os.close(dir_fd)

    @classmethod
    def from_mapping(cls, inode_pids: dict[int, list[int]], comms: dict[int, str]) -> OwnerMap:
        """An owner map built by hand (tests, or owners found some other way)."""
        owners = cls(None)
        owners.inode_pids = {inode: list(pids) for inode, pids in inode_pids.items()}
        owners._comm = dict(comms)
        owners.available = True
        return owners

    def pids(self, inode: int) -> list[int]:
        return self.inode_pids.get(inode, [])

    def comm(self, pid: int) -> str:
        name = self._comm.get(pid)
        if name is None:
            name = "?"
            if self.proc_root is not None:
                text = _read_text(f"{self.proc_root}/{pid}/comm")
                if text is not None:
                    name = text.strip() or "?"
            self._comm[pid] = name
        return name


# --- snapshots ----------------------------------------------------------------


def save_snapshot(
    source: LiveSource, dest: str, owners: OwnerMap | None = None
) -> dict[str, object]:
    """Write what the doctor reads from ``source`` to ``dest`` as a tree
    mirroring /proc: net/*, sys/net/..., sys/kernel/osrelease, and for every
    process holding a TCP socket ``PID/comm`` and ``PID/fd/N`` symlinks whose
    target is ``socket:[INODE]`` (dangling on purpose, as in /proc).
    Returns the metadata written to doctor-snapshot.json.
    """
    from .procnet import AddressDecoder, ProcFormatError, parse_tcp_table

    texts = source.read(all_files())
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    written = 0
    for rel, text in texts.items():
        if text is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="ascii")
        written += 1

    inodes: set[int] = set()
    decode = AddressDecoder(source.little_endian)
    for rel, family in (("net/tcp", 4), ("net/tcp6", 6)):
        text = texts.get(rel)
        if text:
            try:
                inodes.update(s.inode for s in parse_tcp_table(text, family, decode) if s.inode)
            except ProcFormatError:
                pass
    if owners is None:
        owners = OwnerMap(source.proc_root, inodes)
    links = 0
    by_pid: dict[int, list[int]] = {}
    for inode in sorted(inodes):
        for pid in owners.pids(inode):
            by_pid.setdefault(pid, []).append(inode)
    for pid, pid_inodes in by_pid.items():
        fd_dir = root / str(pid) / "fd"
        fd_dir.mkdir(parents=True, exist_ok=True)
        (root / str(pid) / "comm").write_text(owners.comm(pid) + "\n", encoding="utf-8")
        # The fd numbers are not kept (they mean nothing off the host); one
        # link per socket is what the owner scan needs.
        for n, inode in enumerate(pid_inodes, 3):
            link = fd_dir / str(n)
            if link.is_symlink():
                link.unlink()
            os.symlink(f"socket:[{inode}]", link)
            links += 1
    meta: dict[str, object] = {
        "format": "tcpstack-doctor-proc-snapshot/1",
        "source": source.label,
        "created_unix": time.time(),
        "byteorder": "little" if source.little_endian else "big",
        "kernel": (texts.get(OSRELEASE) or "").strip() or None,
        "files": written,
        "processes": len(by_pid),
        "socket_links": links,
    }
    (root / SNAPSHOT_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta
