"""tcpstack.socket against the kernel: the behaviours a port of socket code relies on.

IPv6 both ways, addresses as the kernel sees them, resets in both directions,
SO_LINGER 0, keepalive probes the kernel answers, timeouts, makefile() on a
line protocol, and a selectors-based server multiplexing kernel clients.
The kernel's side is ``kernel_peer.PEER``, run with ``ip netns exec``.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import threading
import time
from typing import Any

import pytest

from tcpstack import socket as tsocket
from tcpstack.runtime.host import Host
from tcpstack.tcp import State

from .kernel_peer import (
    KERNEL4,
    KERNEL6,
    STACK4,
    STACK6,
    PeerServer,
    echo_through,
    peer,
)

T = 30.0


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_echo_both_ways_and_addresses_as_the_kernel_sees_them(host: Host, family: str) -> None:
    kernel, stack = (KERNEL4, STACK4) if family == "ipv4" else (KERNEL6, STACK6)
    fam = tsocket.AF_INET if family == "ipv4" else tsocket.AF_INET6
    # kernel client -> stack server
    srv = tsocket.create_server(("", 7000), family=fam)
    srv.settimeout(T)
    seen: dict[str, Any] = {}

    def serve() -> None:
        c, addr = srv.accept()
        c.settimeout(T)
        seen.update(addr=addr[:2], local=c.getsockname()[:2])
        while d := c.recv(65536):
            c.sendall(d)
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    res = peer(host.netns, "exchange-client", stack, 7000, 1 << 20)
    t.join(T)
    srv.close()
    assert res["got_sha"] == res["sent_sha"] and res["got"] == 1 << 20
    assert tuple(res["local"]) == seen["addr"] and tuple(res["peer"]) == seen["local"] == (stack, 7000)
    # stack client -> kernel server
    with PeerServer(host.netns, "echo-server", kernel, 9000) as ks:
        c = tsocket.create_connection((kernel, 9000), timeout=T)
        data = os.urandom(1 << 20)
        got = echo_through(c, data, T)
        local = c.getsockname()[:2]
        assert c.getpeername()[:2] == (kernel, 9000)
        c.close()
        kres = ks.result()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert kres["n"] == 1 << 20 and tuple(kres["peer"]) == local


def test_resets_both_ways(host: Host) -> None:
    ns = host.netns
    # The kernel aborts: our recv raises ConnectionResetError.
    with PeerServer(ns, "reset-server", KERNEL4, 9001) as ks:
        c = tsocket.create_connection((KERNEL4, 9001), timeout=T)
        c.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            while c.recv(10):
                pass
        assert c.connection.state is State.CLOSED
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            c.send(b"y")
        c.close()
        ks.result()
    # We abort with SO_LINGER 0: the kernel's recv raises ConnectionResetError.
    srv = tsocket.create_server(("", 7001))
    srv.settimeout(T)

    def serve() -> None:
        a, _ = srv.accept()
        a.settimeout(T)
        a.recv(1)
        a.setsockopt(tsocket.SOL_SOCKET, tsocket.SO_LINGER, (1, 0))
        a.close()

    t = threading.Thread(target=serve)
    t.start()
    res = peer(ns, "recv-until-reset", STACK4, 7001)
    t.join(T)
    srv.close()
    assert res["error"] == "ConnectionResetError"
    assert host.stack.mib.TCPAbortOnLinger == 1


def test_keepalive_probes_are_answered_by_the_kernel(host: Host) -> None:
    with PeerServer(host.netns, "idle-server", KERNEL4, 9002, 3.5) as ks:
        c = tsocket.create_connection((KERNEL4, 9002), timeout=T)
        c.setsockopt(tsocket.IPPROTO_TCP, tsocket.TCP_KEEPIDLE, 1)
        c.setsockopt(tsocket.IPPROTO_TCP, tsocket.TCP_KEEPINTVL, 1)
        c.setsockopt(tsocket.IPPROTO_TCP, tsocket.TCP_KEEPCNT, 2)
        c.setsockopt(tsocket.SOL_SOCKET, tsocket.SO_KEEPALIVE, 1)
        c.settimeout(10)
        assert c.recv(10) == b""  # idle ~3.5 s, then the kernel closes
        # Probes went out after each idle second and the kernel answered every one
        # (two unanswered would have killed the connection with TimeoutError).
        assert host.stack.mib.TCPKeepAlive >= 2
        assert c.connection.error is None
        c.close()
        ks.result()


def test_timeouts(host: Host) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        tsocket.create_connection(("198.18.0.77", 80), timeout=0.5)  # the kernel does not forward
    assert time.monotonic() - t0 < 5
    with PeerServer(host.netns, "idle-server", KERNEL4, 9003, 1.0) as ks:
        c = tsocket.create_connection((KERNEL4, 9003), timeout=0.2)
        with pytest.raises(tsocket.timeout):
            c.recv(10)
        c.settimeout(T)
        assert c.recv(10) == b""
        c.close()
        ks.result()


def test_makefile_line_protocol(host: Host) -> None:
    with PeerServer(host.netns, "line-server", KERNEL4, 9004) as ks:
        c = tsocket.create_connection((KERNEL4, 9004), timeout=T)
        f = c.makefile("rw", encoding="ascii", newline="\n")
        for i in range(200):
            f.write(f"{i}\n")
            f.flush()
            assert f.readline() == f"{2 * i}\n"
        f.write("quit\n")
        f.flush()
        assert f.readline() == ""
        f.close()
        c.close()
        ks.result()


def test_selector_server_multiplexes_kernel_clients(host: Host) -> None:
    """One thread, one Selector, 30 concurrent kernel clients: each gets its bytes reversed."""
    n = 30
    srv = tsocket.create_server(("", 7005), backlog=n)
    srv.setblocking(False)
    sel = tsocket.Selector()
    sel.register(srv, selectors.EVENT_READ, None)
    stop = threading.Event()
    served: list[int] = []

    def serve() -> None:
        bufs: dict[Any, bytearray] = {}
        deadline = time.monotonic() + T
        while not stop.is_set() and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                if key.data is None:
                    try:
                        a, _ = srv.accept()
                    except BlockingIOError:
                        continue
                    a.setblocking(False)
                    bufs[a] = bytearray()
                    sel.register(a, selectors.EVENT_READ, "conn")
                    continue
                s = key.fileobj
                try:
                    d = s.recv(65536)
                except BlockingIOError:
                    continue
                if d:
                    bufs[s] += d
                    continue
                sel.unregister(s)
                s.setblocking(True)
                s.settimeout(T)
                s.sendall(bytes(bufs.pop(s))[::-1])
                s.close()
                served.append(1)

    t = threading.Thread(target=serve)
    t.start()
    try:
        res = peer(host.netns, "many-clients", STACK4, 7005, n)
    finally:
        stop.set()
        t.join(T)
        sel.close()
        srv.close()
    assert res["results"] == [True] * n
    assert len(served) == n


def test_flow_control_both_ways(host: Host) -> None:
    """A small SO_RCVBUF and a slow reader on the stack: the window closes and
    reopens; a kernel reader that pauses with a 4 KiB buffer: the stack's persist
    timer probes the zero window until it reopens. Bytes exact both ways."""
    srv = tsocket.create_server(("", 7006))
    srv.setsockopt(tsocket.SOL_SOCKET, tsocket.SO_RCVBUF, 8192)  # inherited by the accepted socket
    srv.settimeout(T)
    got: dict[str, Any] = {}

    def slow() -> None:
        c, _ = srv.accept()
        c.settimeout(T)
        got["rcvbuf"] = c.getsockopt(tsocket.SOL_SOCKET, tsocket.SO_RCVBUF)
        h, n = hashlib.sha256(), 0
        while d := c.recv(4096):
            h.update(d)
            n += len(d)
            if n % 65536 < 4096:
                time.sleep(0.02)
        got.update(n=n, sha=h.hexdigest())
        c.close()

    t = threading.Thread(target=slow)
    t.start()
    res = peer(host.netns, "send-client", STACK4, 7006, 1 << 20)
    t.join(T)
    srv.close()
    assert got["rcvbuf"] == 8192
    assert got["n"] == 1 << 20 and got["sha"] == res["sha"]

    with PeerServer(host.netns, "slow-reader", KERNEL4, 9006, 1.5) as ks:
        data = os.urandom(1 << 20)
        c = tsocket.create_connection((KERNEL4, 9006), timeout=T)
        c.sendall(data)
        c.close()
        kres = ks.result()
    assert kres["n"] == 1 << 20 and kres["sha"] == hashlib.sha256(data).hexdigest()
    assert host.stack.mib.TCPWinProbe >= 1  # the zero window was probed, not waited out blindly
