"""The kernel's side of the interop tests, and the helpers every interop test shares.

``PEER`` is a plain Python program (standard library only) that the tests run
inside a namespace with ``ip netns exec``, so the Linux kernel's own TCP is the
peer.  Servers print ``READY`` once listening; every mode ends by printing one
JSON line with what it saw.  ``peer()`` runs a mode to completion,
``PeerServer`` starts a server mode in the background.

Also here: the addresses of both ends of the TUN, ``in_ns`` (any command in a
namespace), ``Capture``
(tcpdump on the kernel's side of the TUN), the kernel's counters (``nstat``,
``assert_kernel_clean``), ``echo_through``, sha256 helpers, ``mbps`` and
``wait_until``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcpstack import socket as tsocket
from tcpstack.runtime import KERNEL_ADDR4, KERNEL_ADDR6, STACK_ADDR4, STACK_ADDR6

MiB = 1 << 20
# Both ends of the TUN: the kernel's side and ours.
KERNEL4, STACK4 = KERNEL_ADDR4.split("/")[0], STACK_ADDR4
KERNEL6, STACK6 = KERNEL_ADDR6.split("/")[0], STACK_ADDR6

# Modes and their arguments are listed at each branch.  Every blocking call is
# bounded by the socket timeout T (``sock_timeout=`` below; for sendall it bounds
# the whole call, so long lossy transfers need more than the default 60 s).
PEER = r'''
import hashlib, json, os, socket, struct, sys, threading, time
mode, args = sys.argv[1], sys.argv[2:]
T = float(os.environ.get("PEER_T", "60"))  # sendall's timeout bounds the whole call

def out(**kw):
    print(json.dumps(kw), flush=True)

def listener(addr, port, rcvbuf=0):
    ls = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:  # before listen(): the accepted socket inherits it
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ls.bind((addr, port)); ls.listen(64); ls.settimeout(T)
    print("READY", flush=True)
    c, peer = ls.accept(); c.settimeout(T); ls.close()
    return c, list(peer[:2])

def read_all(c, size=1 << 20, pause=0.0):
    """Read to EOF: (bytes, sha256); with `pause`, sleep that long every 64 KiB."""
    h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(size)
        if not d:
            return n, h.hexdigest()
        h.update(d); n += len(d)
        if pause and n % 65536 < size:
            time.sleep(pause)

if mode == "exchange-client":      # host port nbytes: send nbytes and half-close while reading to EOF
    host, port, nbytes = args[0], int(args[1]), int(args[2])
    data = os.urandom(nbytes)
    t0 = time.monotonic()
    c = socket.create_connection((host, port), timeout=T)
    local, peer = list(c.getsockname()[:2]), list(c.getpeername()[:2])
    def send():
        c.sendall(data); c.shutdown(socket.SHUT_WR)
    th = threading.Thread(target=send); th.start()
    n, sha = read_all(c)
    th.join(); secs = time.monotonic() - t0; c.close()
    out(sent=nbytes, sent_sha=hashlib.sha256(data).hexdigest(), got=n, got_sha=sha, secs=secs,
        local=local, peer=peer)
elif mode == "sink-server":        # addr port: read to EOF, answer "n sha", close
    c, peer = listener(args[0], int(args[1]))
    t0 = time.monotonic(); n, sha = read_all(c); secs = time.monotonic() - t0
    c.sendall(f"{n} {sha}\n".encode()); c.close()
    out(got=n, got_sha=sha, secs=secs, peer=peer)
elif mode == "source-server":      # addr port nbytes: send nbytes, close first
    nbytes = int(args[2])
    data = os.urandom(nbytes)
    c, peer = listener(args[0], int(args[1]))
    t0 = time.monotonic(); c.sendall(data); c.close(); secs = time.monotonic() - t0
    out(sent=nbytes, sent_sha=hashlib.sha256(data).hexdigest(), secs=secs, peer=peer)
elif mode == "echo-server":        # addr port: echo one connection, report the peer
    c, peer = listener(args[0], int(args[1]))
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d); n += len(d)
    c.close(); out(n=n, peer=peer)
elif mode == "close-first-client":  # host port: one byte each way, then the kernel closes first
    c = socket.create_connection((args[0], int(args[1])), timeout=T)
    c.sendall(b"k"); got = c.recv(1); port = c.getsockname()[1]; c.close()
    out(got=got.decode(), port=port)
elif mode == "wait-close-server":  # addr port: echo one byte, wait for the peer to close, then close
    c, peer = listener(args[0], int(args[1]))
    c.sendall(c.recv(1)); rest = c.recv(10); c.close()
    out(eof=rest == b"", peer=peer)
elif mode == "connect":            # host port: report how connect ended
    t0 = time.monotonic()
    try:
        socket.create_connection((args[0], int(args[1])), timeout=10).close(); err = None
    except OSError as e:
        err = type(e).__name__
    out(error=err, secs=time.monotonic() - t0)
elif mode == "recv-until-reset":   # host port: send a byte, then read until the peer resets
    c = socket.create_connection((args[0], int(args[1])), timeout=T)
    c.sendall(b"x")
    try:
        while c.recv(100):
            pass
        err = None
    except OSError as e:
        err = type(e).__name__
    out(error=err)
elif mode == "reset-server":       # addr port: read a byte, then abort with RST (SO_LINGER 0)
    c, _ = listener(args[0], int(args[1])); c.recv(1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close(); out(reset=True)
elif mode == "idle-server":        # addr port secs: hold the connection idle, then close
    c, _ = listener(args[0], int(args[1])); time.sleep(float(args[2])); c.close(); out(done=True)
elif mode == "line-server":        # addr port: answer each line "n" with "n*2\n", until "quit"
    c, _ = listener(args[0], int(args[1])); f = c.makefile("rwb")
    for line in f:
        if line.strip() == b"quit":
            break
        f.write(b"%d\n" % (2 * int(line))); f.flush()
    f.close(); c.close(); out(done=True)
elif mode == "send-client":        # host port nbytes: send, half-close, wait for EOF
    data = os.urandom(int(args[2]))
    c = socket.create_connection((args[0], int(args[1])), timeout=T)
    c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
    out(sha=hashlib.sha256(data).hexdigest())
elif mode == "slow-reader":        # addr port pause: 4 KiB SO_RCVBUF, read nothing for `pause` s, then slowly
    c, _ = listener(args[0], int(args[1]), rcvbuf=4096); time.sleep(float(args[2]))
    n, sha = read_all(c, 2048, pause=0.02)
    c.close(); out(n=n, sha=sha)
elif mode == "urgent-client":      # host port: "hello", "!" as urgent data (MSG_OOB), "after"; half-close, read a byte
    c = socket.create_connection((args[0], int(args[1])), timeout=T)
    c.sendall(b"hello"); c.send(b"!", socket.MSG_OOB); c.sendall(b"after")
    c.shutdown(socket.SHUT_WR); got = c.recv(1); c.close()
    out(got=got.decode())
elif mode == "urgent-server":      # addr port: with SO_OOBINLINE, where the urgent mark is (SIOCATMARK)
    import fcntl, select
    c, _ = listener(args[0], int(args[1]))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    _, _, x = select.select([], [], [c], T)
    before = c.recv(100)  # stops before the mark
    atmark = struct.unpack("i", fcntl.ioctl(c.fileno(), 0x8905, b"\0" * 4))[0]  # SIOCATMARK
    rest = b""
    while d := c.recv(100):
        rest += d
    c.close(); out(exceptional=len(x), before=before.decode(), atmark=atmark, rest=rest.decode())
elif mode == "many-clients":       # host port n: n concurrent clients, each gets its bytes reversed
    host, port, n = args[0], int(args[1]), int(args[2])
    res = [None] * n
    def one(i):
        try:
            with socket.create_connection((host, port), timeout=T) as c:
                msg = os.urandom(1000 + i * 100)
                c.sendall(msg); c.shutdown(socket.SHUT_WR)
                got = b""
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    got += d
                res[i] = got == msg[::-1]
        except OSError as e:
            res[i] = repr(e)
    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    [t.start() for t in ths]; [t.join() for t in ths]
    out(results=res)
else:
    sys.exit(f"unknown mode {mode!r}")
'''


def in_ns(ns: str, *cmd: str, timeout: float = 60, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in namespace ``ns`` to completion (text output, no check)."""
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def _peer_env(sock_timeout: float | None) -> dict[str, str] | None:
    return None if sock_timeout is None else {**os.environ, "PEER_T": str(sock_timeout)}


def peer(ns: str, *args: Any, timeout: float = 180, sock_timeout: float | None = None) -> dict[str, Any]:
    """Run a ``PEER`` mode to completion in ``ns``; its JSON result."""
    p = in_ns(ns, sys.executable, "-c", PEER, *map(str, args), timeout=timeout, env=_peer_env(sock_timeout))
    assert p.returncode == 0, f"kernel peer {args} failed: {p.stderr[-2000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


class PeerServer:
    """A ``PEER`` server mode started in the background (returns once it listens);
    ``result()`` waits for its JSON. As a context manager it is killed on exit
    if still running."""

    def __init__(self, ns: str, *args: Any, sock_timeout: float | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PEER, *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=_peer_env(sock_timeout))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            raise AssertionError(f"kernel server {args} did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def result(self, timeout: float = 180) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"kernel server {self.args} failed: {err[-2000:]}"
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)

    def __enter__(self) -> PeerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- what the kernel sees on the wire -----------------------------------------------------


class Capture:
    """``tcpdump -l -n -v`` on the kernel's side of the host's TUN, in its namespace,
    for packets matching ``expr``; with ``count``, tcpdump ends by itself after that
    many.  Capturing has begun when the constructor returns.  ``wait`` returns the
    text once ``until(text)`` holds, tcpdump has ended or ``timeout`` seconds pass;
    tcpdump is stopped then, and when a ``with`` block around it ends."""

    def __init__(self, host: Any, expr: str, count: int | None = None) -> None:
        limit = ["-c", str(count)] if count else []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "tcpdump", "-l", "-n", "-v", "-i", host.ifname, *limit, expr],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        banner = self.proc.stderr.readline()  # "tcpdump: listening on ..." once capturing
        if "listening" not in banner:
            self.stop()
            raise AssertionError(f"tcpdump did not start: {banner!r}")
        self.text = ""
        self._ended = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.text += line
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def wait(self, until: Callable[[str], bool] | None = None, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ended and not (until is not None and until(self.text)):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        self.stop()
        return self.text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        with self.proc:  # then closes the pipes and reaps tcpdump
            if hasattr(self, "_reader"):
                self._reader.join(10)  # it reads to the EOF tcpdump's end makes

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the kernel's counters ----------------------------------------------------------------


def nstat(ns: str) -> dict[str, int]:
    """The kernel's absolute TCP/IP counters in the namespace (history untouched)."""
    p = in_ns(ns, "nstat", "-asz", "--json", timeout=20)
    assert p.returncode == 0, p.stderr
    return {k: int(v) for k, v in json.loads(p.stdout)["kernel"].items()}


def assert_kernel_clean(ns: str, before: dict[str, int], *, rsts: int = 0) -> dict[str, int]:
    """The kernel logged nothing against us: no checksum errors, no TCPAbortOnData,
    no RST beyond the ``rsts`` the test provoked on purpose. Returns the deltas."""
    after = nstat(ns)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    bad = {k: delta[k] for k in ("TcpInCsumErrors", "TcpInErrs", "TcpExtTCPAbortOnData",
                                 "IpInHdrErrors", "IpExtInCsumErrors") if delta.get(k)}
    assert not bad, f"the kernel counted errors against us: {bad}"
    # One benign race: when the kernel retransmits its FIN (a tail loss probe after a
    # few ms of scheduling delay on our side), the stack's TIME-WAIT rightly ACKs the
    # copy again (RFC 9293 §3.10.7.4); if the first ACK already closed the kernel's
    # socket, the kernel answers the second with a RST. Allow that many, no more.
    extra = delta.get("TcpOutRsts", 0) - rsts
    retrans = delta.get("TcpRetransSegs", 0)
    assert 0 <= extra <= retrans, (
        f"kernel sent {delta.get('TcpOutRsts')} RSTs, expected {rsts} "
        f"(+ at most {retrans} answering ACKs of its own retransmissions)")
    return delta


# -- bytes, rates, waiting ----------------------------------------------------------------


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def echo_through(sock: Any, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data`` on a (tcpstack) socket and half-close, from a thread, while reading
    to EOF: what the peer echoed."""
    w = threading.Thread(target=lambda: (sock.sendall(data), sock.shutdown(tsocket.SHUT_WR)))
    w.start()
    got = bytearray()
    while d := sock.recv(1 << 20):
        got += d
    w.join(timeout)
    return bytes(got)


def read_to_eof(sock: Any, size: int = 1 << 20) -> tuple[int, str]:
    """Read a (tcpstack) socket to EOF: (bytes read, their sha256)."""
    h, n = hashlib.sha256(), 0
    while d := sock.recv(size):
        h.update(d)
        n += len(d)
    return n, h.hexdigest()


def mbps(nbytes: int, secs: float) -> str:
    return f"{nbytes / max(secs, 1e-9) / 1e6:.1f} MB/s"


def wait_until(pred: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``pred`` every 10 ms until true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
