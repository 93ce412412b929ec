"""RFC 9293 MUST-49 (configurable TTL) against the real kernel.

(a) IP_TTL on our client: every packet the kernel receives from us, SYN
    included, has that TTL (tcpdump in the namespace reads the IPv4 header).
(b) IPV6_UNICAST_HOPS on our listener: the SYN-ACK and every later packet of
    the accepted connection carry that Hop Limit.
(c) A TTL / Hop Limit of 1 towards a destination behind the namespace's
    kernel, which forwards: the kernel answers our SYN with ICMP time
    exceeded (RFC 792 / RFC 4443 §3.3), which we count (IcmpInTimeExcds,
    Icmp6InTimeExcds) and which fails the connect at once with EHOSTUNREACH,
    as Linux's tcp_v4_err/tcp_v6_err do in SYN-SENT.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tcpstack import socket as tsocket
from tcpstack.runtime.host import Host

T = 30.0
KERNEL4, STACK4 = "198.18.0.1", "198.18.0.2"
KERNEL6, STACK6 = "fd00:198:18::1", "fd00:198:18::2"

ECHO_SERVER = r'''
import socket, sys
ls = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2]))); ls.listen(4); ls.settimeout(30)
print("READY", flush=True)
c, _ = ls.accept(); c.settimeout(30)
n = 0
while True:
    d = c.recv(65536)
    if not d: break
    c.sendall(d); n += len(d)
c.close(); print(n, flush=True)
'''

ECHO_CLIENT = r'''
import socket, sys
data = bytes(range(256)) * int(sys.argv[3])
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(data); c.shutdown(socket.SHUT_WR)
got = bytearray()
while d := c.recv(65536): got += d
c.close(); print("OK" if bytes(got) == data else "MISMATCH", len(got), flush=True)
'''


def in_ns(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=60, check=False)


def ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr}"


@pytest.fixture
def host(netns_name: str) -> Iterator[Host]:
    with Host(netns_name, seed=1, kernel_addr6=f"{KERNEL6}/64", stack_addr6=STACK6) as h:
        tsocket.set_default_driver(h)
        try:
            yield h
        finally:
            tsocket.set_default_driver(None)


class Capture:
    """tcpdump -v in the namespace on the TUN's kernel side, until ``count`` packets or stop()."""

    def __init__(self, host: Host, count: int, expr: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "tcpdump", "-l", "-n", "-v", "-i", host.ifname, "-c", str(count), expr],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        banner = self.proc.stderr.readline()  # "tcpdump: listening on ..." once capturing
        assert "listening" in banner, banner

    def lines(self) -> list[str]:
        try:
            out, _ = self.proc.communicate(timeout=T)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate(timeout=10)
        return out.splitlines()


def echo(c: tsocket.socket, data: bytes) -> bytes:
    w = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(tsocket.SHUT_WR)))
    w.start()
    got = bytearray()
    while d := c.recv(1 << 20):
        got += d
    w.join(T)
    return bytes(got)


def test_ip_ttl_of_our_client_is_what_the_kernel_receives(host: Host) -> None:
    cap = Capture(host, 6, f"tcp port 9300 and src host {STACK4}")
    srv = subprocess.Popen(["ip", "netns", "exec", host.netns, sys.executable, "-c", ECHO_SERVER, KERNEL4, "9300"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "READY"
        c = tsocket.socket()
        c.setsockopt(tsocket.IPPROTO_IP, tsocket.IP_TTL, 17)
        c.settimeout(T)
        c.connect((KERNEL4, 9300))
        data = os.urandom(5000)
        assert echo(c, data) == data
        c.close()
        out, _ = srv.communicate(timeout=T)
        assert out.strip() == "5000"
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate(timeout=10)
    ttls = [line.split("ttl ", 1)[1].split(",")[0] for line in cap.lines() if "ttl " in line]
    assert len(ttls) == 6 and set(ttls) == {"17"}, ttls


def test_ipv6_unicast_hops_of_our_listener_is_inherited_and_on_the_syn_ack(host: Host) -> None:
    cap = Capture(host, 6, f"tcp port 9301 and src host {STACK6}")
    srv = tsocket.socket(tsocket.AF_INET6)
    srv.setsockopt(tsocket.IPPROTO_IPV6, tsocket.IPV6_UNICAST_HOPS, 33)
    srv.bind((STACK6, 9301))
    srv.listen()
    srv.settimeout(T)
    done: list[int] = []

    def serve() -> None:
        a, _ = srv.accept()
        a.settimeout(T)
        done.append(a.getsockopt(tsocket.IPPROTO_IPV6, tsocket.IPV6_UNICAST_HOPS))
        while d := a.recv(65536):
            a.sendall(d)
        a.close()

    t = threading.Thread(target=serve)
    t.start()
    r = in_ns(host.netns, sys.executable, "-c", ECHO_CLIENT, STACK6, "9301", "20")
    t.join(T)
    srv.close()
    assert r.stdout.split() == ["OK", "5120"], r.stderr
    assert done == [33]
    lines = cap.lines()
    hlims = [line.split("hlim ", 1)[1].split(",")[0] for line in lines if "hlim " in line]
    assert len(hlims) == 6 and set(hlims) == {"33"}, lines
    assert any("[S.]" in line for line in lines), lines  # the SYN-ACK is among them


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_ttl_1_through_a_forwarding_kernel_draws_time_exceeded(host: Host, family: str) -> None:
    ns = host.netns
    # A veth pair inside the namespace: a route to forward onto (the TTL check comes first).
    ip("-n", ns, "link", "add", "far0", "type", "veth", "peer", "name", "far1")
    ip("-n", ns, "link", "set", "far0", "up")
    ip("-n", ns, "link", "set", "far1", "up")
    if family == "ipv4":
        ip("-n", ns, "addr", "add", "198.19.2.1/24", "dev", "far0")
        assert in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1").returncode == 0
        dest, fam, level, opt, counter = "198.19.2.2", tsocket.AF_INET, tsocket.IPPROTO_IP, tsocket.IP_TTL, "IcmpInTimeExcds"
    else:
        ip("-n", ns, "addr", "add", "fd00:198:19:2::1/64", "dev", "far0", "nodad")
        assert in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1").returncode == 0
        dest, fam, level, opt, counter = ("fd00:198:19:2::2", tsocket.AF_INET6, tsocket.IPPROTO_IPV6,
                                          tsocket.IPV6_UNICAST_HOPS, "Icmp6InTimeExcds")
    before = host.driver.call(lambda now: host.stack.mib.nstat())
    s = tsocket.socket(fam)
    s.setsockopt(level, opt, 1)
    s.settimeout(T)
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        s.connect((dest, 80))
    elapsed = time.monotonic() - t0
    s.close()
    assert info.value.errno == errno.EHOSTUNREACH, info.value
    assert elapsed < 0.9  # before the first SYN retransmission (1 s): the ICMP did it
    mib = host.driver.call(lambda now: host.stack.mib.nstat())
    assert mib[counter] == before[counter] + 1
