"""Urgent data with the real kernel (RFC 9293 MUST-30..33; inline, RFC 6093).

(a) The kernel sends ``send(b"!", MSG_OOB)`` after ordinary data: our socket
    reports the exceptional condition (select's third list), a read stops just
    before the mark, sockatmark() is true there, and all bytes arrive inline.
(b) We send urgent data: the kernel, with SO_OOBINLINE, finds the mark where we
    put it (ioctl SIOCATMARK after reading the ordinary bytes) and select()
    reports the exceptional condition on its side.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tcpstack import socket as tsocket
from tcpstack.runtime.host import Host

T = 30.0
KERNEL4, STACK4 = "198.18.0.1", "198.18.0.2"

KERNEL_SENDER = r'''
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(b"hello"); c.send(b"!", socket.MSG_OOB); c.sendall(b"after")
c.shutdown(socket.SHUT_WR); c.recv(1); c.close(); print("SENT", flush=True)
'''

KERNEL_RECEIVER = r'''
import fcntl, select, socket, struct, sys
SIOCATMARK = 0x8905
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2]))); ls.listen(1); ls.settimeout(30)
print("READY", flush=True)
c, _ = ls.accept(); c.settimeout(30)
c.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
_, _, x = select.select([], [], [c], 30)
atmark = lambda: struct.unpack("i", fcntl.ioctl(c.fileno(), SIOCATMARK, b"\0" * 4))[0]
before = c.recv(100)  # stops before the mark
mark = atmark()
rest = b""
while d := c.recv(100): rest += d
print(len(x), before.decode(), mark, rest.decode(), flush=True)
'''


@pytest.fixture
def host(netns_name: str) -> Iterator[Host]:
    with Host(netns_name, seed=1) as h:
        tsocket.set_default_driver(h)
        try:
            yield h
        finally:
            tsocket.set_default_driver(None)


def test_kernel_urgent_data_reaches_sockatmark_and_select(host: Host) -> None:
    srv = tsocket.create_server((STACK4, 9400))
    srv.settimeout(T)
    kernel = subprocess.Popen(["ip", "netns", "exec", host.netns, sys.executable, "-c", KERNEL_SENDER, STACK4, "9400"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
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
        out, err = kernel.communicate(timeout=T)
        assert out.strip() == "SENT", err
    finally:
        srv.close()
        if kernel.poll() is None:
            kernel.kill()
            kernel.communicate(timeout=10)


def test_our_urgent_data_is_where_the_kernel_finds_the_mark(host: Host) -> None:
    kernel = subprocess.Popen(["ip", "netns", "exec", host.netns, sys.executable, "-c", KERNEL_RECEIVER, KERNEL4, "9401"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout is not None and kernel.stdout.readline().strip() == "READY"
        c = tsocket.create_connection((KERNEL4, 9401), timeout=T)
        c.sendall(b"hello")
        c.send(b"!", tsocket.MSG_OOB)
        c.sendall(b"after")
        c.close()
        out, err = kernel.communicate(timeout=T)
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.communicate(timeout=10)
    # select saw the exceptional condition, a read stopped at the mark, SIOCATMARK was 1 there.
    assert out.split() == ["1", "hello", "1", "!after"], err


