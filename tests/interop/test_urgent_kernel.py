"""Urgent data with the real kernel (RFC 9293 MUST-30..33; inline, RFC 6093).

(a) The kernel sends ``send(b"!", MSG_OOB)`` after ordinary data: our socket
    reports the exceptional condition (select's third list), a read stops just
    before the mark, sockatmark() is true there, and all bytes arrive inline.
(b) We send urgent data: the kernel, with SO_OOBINLINE, finds the mark where we
    put it (ioctl SIOCATMARK after reading the ordinary bytes) and select()
    reports the exceptional condition on its side.
"""

from __future__ import annotations

import concurrent.futures

from tcpstack import socket as tsocket
from tcpstack.runtime.host import Host

from .kernel_peer import KERNEL4, STACK4, PeerServer, peer

T = 30.0


def test_kernel_urgent_data_reaches_sockatmark_and_select(
        host: Host, pool: concurrent.futures.ThreadPoolExecutor) -> None:
    srv = tsocket.create_server((STACK4, 9400))
    srv.settimeout(T)
    try:
        kernel = pool.submit(peer, host.netns, "urgent-client", STACK4, 9400, timeout=60, sock_timeout=T)
        a, _ = srv.accept()
        a.settimeout(T)
        assert tsocket.select([], [], [a], T) == ([], [], [a])
        got = a.recv(100)
        assert got == b"hello" and a.sockatmark()  # the mark may be all that is in yet
        while len(got) < 11:
            got += a.recv(100)
        assert got == b"hello!after" and not a.sockatmark()
        assert a.recv(100) == b""
        a.sendall(b"k")
        a.close()
        assert kernel.result(timeout=60) == {"got": "k"}
    finally:
        srv.close()


def test_our_urgent_data_is_where_the_kernel_finds_the_mark(host: Host) -> None:
    with PeerServer(host.netns, "urgent-server", KERNEL4, 9401, sock_timeout=T) as kernel:
        c = tsocket.create_connection((KERNEL4, 9401), timeout=T)
        c.sendall(b"hello")
        c.send(b"!", tsocket.MSG_OOB)
        c.sendall(b"after")
        c.close()
        res = kernel.result(timeout=T)
    # select saw the exceptional condition, a read stopped at the mark, SIOCATMARK was 1 there.
    assert res == {"exceptional": 1, "before": "hello", "atmark": 1, "rest": "!after"}
