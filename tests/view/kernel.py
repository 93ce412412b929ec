"""Kernel-to-kernel conversations, captured by tcpdump and tshark, for the trace tests.

Two network namespaces of our own (``tcpstack-tv<pid>-<n>c`` and ``...s``),
joined by a veth pair (client 198.18.77.1, server 198.18.77.2), each end
running a plain Python program started with ``ip netns exec``.  While they
talk, tcpdump and tshark capture to files.  Everything is removed at the end.

What the kernel went through is read from the kernel itself, independently
of any capture: the ``sock:inet_sock_set_state`` tracepoint (through a
tracefs instance of our own, filtered to the test's port) reports every
state change of the full sockets, and ``ss`` reports the TIME-WAIT sockets,
which the kernel keeps as separate mini-sockets: when a socket is handed to
one, the tracepoint shows it going to CLOSE, and ``ss`` shows TIME-WAIT.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CLIENT_ADDR = "198.18.77.1"
SERVER_ADDR = "198.18.77.2"
_counter = itertools.count()
LOG: list[tuple[list[str], str]] = []  # capture commands and what they said at exit

# The two programs.  argv: role mode address port
PROGRAM = r"""
import socket, struct, sys, time
role, mode, addr, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if role == "server":
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(1)
    print("ready", flush=True)
    ls.settimeout(10)
    s, _ = ls.accept(); s.settimeout(10)
    if mode == "client-closes":       # read to EOF, answer the FIN later with our own
        while s.recv(65536):
            pass
        time.sleep(0.3); s.close()
    elif mode == "server-closes":     # send, then close first
        s.sendall(bytes(3000)); s.close()
    elif mode == "rst":               # the client aborts
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            print("reset", flush=True)
        s.close()
    time.sleep(0.2)
    ls.close()
else:
    if mode == "refused":
        try:
            socket.create_connection((addr, port), timeout=10)
        except ConnectionRefusedError:
            print("refused", flush=True)
        sys.exit(0)
    c = socket.create_connection((addr, port), timeout=10)
    if mode == "client-closes":
        c.sendall(bytes(5000)); time.sleep(0.1); c.close()
    elif mode == "server-closes":
        while c.recv(65536):
            pass
        time.sleep(0.3); c.close()
    elif mode == "rst":
        c.sendall(bytes(1000)); time.sleep(0.1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()                     # SO_LINGER 0: close(2) sends RST
"""

KERNEL_STATE_NAMES = {
    "TCP_CLOSE": "CLOSED",
    "TCP_LISTEN": "LISTEN",
    "TCP_SYN_SENT": "SYN-SENT",
    "TCP_SYN_RECV": "SYN-RECEIVED",
    "TCP_ESTABLISHED": "ESTABLISHED",
    "TCP_FIN_WAIT1": "FIN-WAIT-1",
    "TCP_FIN_WAIT2": "FIN-WAIT-2",
    "TCP_CLOSE_WAIT": "CLOSE-WAIT",
    "TCP_CLOSING": "CLOSING",
    "TCP_LAST_ACK": "LAST-ACK",
    "TCP_TIME_WAIT": "TIME-WAIT",
}


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=15, check=check)


@dataclass
class Pair:
    client_ns: str
    server_ns: str


@contextlib.contextmanager
def namespace_pair() -> Iterator[Pair]:
    base = f"tcpstack-tv{os.getpid()}-{next(_counter)}"
    pair = Pair(base + "c", base + "s")
    try:
        for ns in (pair.client_ns, pair.server_ns):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", pair.client_ns, "link", "add", "veth-c", "type", "veth",
             "peer", "name", "veth-s", "netns", pair.server_ns)
        for ns, dev, addr in ((pair.client_ns, "veth-c", CLIENT_ADDR),
                              (pair.server_ns, "veth-s", SERVER_ADDR)):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        for ns in (pair.client_ns, pair.server_ns):
            if os.path.exists(f"/run/netns/{ns}"):
                _run("ip", "netns", "del", ns, check=False)


def _wait_for(proc: subprocess.Popen[bytes], stream: str, pattern: bytes, timeout: float) -> bytes:
    """Read ``proc``'s stdout or stderr until ``pattern`` appears (bounded)."""
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    fd = pipe.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while pattern not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
            raise RuntimeError(f"{proc.args!r} did not print {pattern!r} in {timeout} s: {seen!r}")
        if select.select([fd], [], [], min(left, 0.2))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                continue
            seen += chunk
    return seen


@contextlib.contextmanager
def capture(ns: str, cmd: list[str], ready: bytes) -> Iterator[None]:
    """Run a capture command in ``ns`` until the block ends (then SIGINT, bounded wait)."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        seen = _wait_for(proc, "stderr", ready, 20)
        if ready == _TSHARK_READY and _TSHARK_STARTED not in seen:
            # tshark says "Capturing on" before dumpcap has the interface open;
            # "Capture started" (logged by recent versions) means it has.
            try:
                _wait_for(proc, "stderr", _TSHARK_STARTED, 3)
            except RuntimeError:
                time.sleep(1.0)
        yield
        time.sleep(0.5)  # the last packets reach the file
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        assert proc.stderr is not None
        LOG.append((cmd, proc.stderr.read().decode(errors="replace")))


def tcpdump(path: Path, iface: str = "any", nano: bool = False) -> tuple[list[str], bytes]:
    # --immediate-mode: without it packets wait in the kernel ring for up to a
    # second, and a capture stopped before then loses them.  -Z root: do not
    # drop privileges to write into the test's root-owned directory.
    cmd = ["tcpdump", "-n", "-U", "--immediate-mode", "-Z", "root", "-i", iface, "-w", str(path),
           "tcp"]
    if nano:
        cmd[1:1] = ["--time-stamp-precision=nano"]
    return cmd, b"listening on"


def tshark(path: Path, iface: str, fmt: str = "pcapng") -> tuple[list[str], bytes]:
    return ["tshark", "-n", "-q", "-i", iface, "-F", fmt, "-w", str(path), "-f", "tcp"], _TSHARK_READY


_TSHARK_READY = b"Capturing on"
_TSHARK_STARTED = b"Capture started"


# ---------------------------------------------------------------- the kernel's own record


def _tracefs() -> tuple[Path, bool] | None:
    """A tracefs mount: (path, mounted by us), or None if there is none to be had."""
    for p in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
        if (p / "instances").is_dir():
            return p, False
    tmp = Path(tempfile.mkdtemp(prefix="tcpstack-tracefs-"))
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(tmp)], capture_output=True,
                       timeout=10, check=False)
    if r.returncode != 0 or not (tmp / "instances").is_dir():
        tmp.rmdir()
        return None
    return tmp, True


@dataclass
class KernelRecord:
    """State changes the kernel reported for sockets with the test's port."""

    available: bool
    reason: str = ""
    lines: list[str] = field(default_factory=list)

    def sequence(self, local_port: int, remote_port: int, server_port: int) -> list[str]:
        """The states one socket went through: its first old state, then every new one.

        The client's first change (CLOSE -> SYN_SENT) happens before it has a
        port (sport 0): it is taken as the client's if it goes to the server port.
        """
        seq: list[str] = []
        for line in self.lines:
            m = re.search(r"sport=(\d+) dport=(\d+) .*oldstate=(\w+) newstate=(\w+)", line)
            if not m:
                continue
            sport, dport, old, new = int(m[1]), int(m[2]), m[3], m[4]
            mine = (sport, dport) == (local_port, remote_port) or (
                sport == 0 and dport == server_port and remote_port == server_port
            )
            if mine:
                if not seq:
                    seq.append(KERNEL_STATE_NAMES[old])
                seq.append(KERNEL_STATE_NAMES[new])
        return seq


@contextlib.contextmanager
def kernel_states(port: int) -> Iterator[KernelRecord]:
    """Record sock:inet_sock_set_state for ``port`` in a tracefs instance of our own."""
    rec = KernelRecord(False)
    fs = _tracefs()
    if fs is None:
        rec.reason = "no tracefs (mount -t tracefs failed)"
        yield rec
        return
    root, mounted = fs
    inst = root / "instances" / f"tcpstack-{os.getpid()}-{next(_counter)}"
    event = inst / "events" / "sock" / "inet_sock_set_state"
    try:
        try:
            inst.mkdir()
            (event / "filter").write_text(f"sport == {port} || dport == {port}\n")
            (event / "enable").write_text("1\n")
            rec.available = True
        except OSError as exc:
            rec.reason = f"tracefs instance unusable: {exc}"
        yield rec
        if rec.available:
            rec.lines = [ln for ln in (inst / "trace").read_text().splitlines()
                         if not ln.startswith("#")]
    finally:
        with contextlib.suppress(OSError):
            (event / "enable").write_text("0\n")
        with contextlib.suppress(OSError):
            inst.rmdir()
        if mounted:
            subprocess.run(["umount", str(root)], capture_output=True, timeout=10, check=False)
            with contextlib.suppress(OSError):
                root.rmdir()


def time_wait_sockets(ns: str) -> set[tuple[str, str]]:
    """(local, peer) of the TIME-WAIT sockets ``ss`` shows in ``ns``."""
    out = _run("ip", "netns", "exec", ns, "ss", "-tanH", "state", "time-wait").stdout
    socks = set()
    for line in out.splitlines():
        cols = line.split()
        # With a state filter ss leaves the state column out.
        if len(cols) >= 4:
            socks.add((cols[-2], cols[-1]))
    return socks


# ---------------------------------------------------------------- one conversation


@dataclass
class Conversation:
    mode: str
    port: int
    files: dict[str, Path]
    kernel: KernelRecord
    time_wait: dict[str, set[tuple[str, str]]]  # "client"/"server" -> ss TIME-WAIT sockets
    outputs: dict[str, str]


def converse(workdir: Path, mode: str, port: int, captures: dict[str, tuple[str, list[str], bytes]]
             ) -> Conversation:
    """Run one conversation between the namespaces, capturing with each of ``captures``.

    ``captures``: file name -> ("client" or "server" namespace, command, ready marker).
    """
    with namespace_pair() as pair, kernel_states(port) as rec:
        ns = {"client": pair.client_ns, "server": pair.server_ns}
        files = {}
        with contextlib.ExitStack() as stack:
            for name, (side, cmd, ready) in captures.items():
                files[name] = workdir / name
                stack.enter_context(capture(ns[side], cmd, ready))
            outputs = {}
            server = None
            if mode != "refused":
                server = subprocess.Popen(
                    ["ip", "netns", "exec", pair.server_ns, sys.executable, "-c", PROGRAM,
                     "server", mode, SERVER_ADDR, str(port)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                _wait_for(server, "stdout", b"ready", 10)
            client = subprocess.run(
                ["ip", "netns", "exec", pair.client_ns, sys.executable, "-c", PROGRAM,
                 "client", mode, SERVER_ADDR, str(port)],
                capture_output=True, text=True, timeout=30, check=False)
            outputs["client"] = client.stdout + client.stderr
            assert client.returncode == 0, outputs["client"]
            if server is not None:
                out, err = server.communicate(timeout=30)
                outputs["server"] = (out + err).decode()
                assert server.returncode == 0, outputs["server"]
        time_wait = {side: time_wait_sockets(n) for side, n in ns.items()}
    return Conversation(mode, port, files, rec, time_wait, outputs)
