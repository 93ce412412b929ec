"""ICMP from the real kernel, and the TOS octet as the kernel sees it.

(a) The kernel in the namespace routes 198.19.255.0/24 nowhere (an
    ``unreachable`` route, forwarding on): our SYN draws an ICMP host
    unreachable and the connect fails at once with EHOSTUNREACH, as a Linux
    client's would (tcp_v4_err aborts in SYN-SENT).
(b) Path MTU: the kernel forwards to a second namespace over a route with
    MTU 1280; our 1500-byte DF packets draw "fragmentation needed" and a
    bulk echo still completes byte-exact with the smaller MSS.
(c) IP_TOS set on our socket is the TOS tcpdump sees on the kernel's side.
Also: a fresh namespace does not accept source-routed packets
(accept_source_route=0), the Linux behaviour tcpstack's refusal follows.
"""

from __future__ import annotations

import errno
import hashlib
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
KERNEL4 = "198.18.0.1"

ECHO = r'''
import socket, sys
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def in_ns(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=20, check=False)


def ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr}"


@pytest.fixture
def host(netns_name: str) -> Iterator[Host]:
    with Host(netns_name, seed=1) as h:
        tsocket.set_default_driver(h)
        try:
            yield h
        finally:
            tsocket.set_default_driver(None)


def echo_server(ns: str, addr: str, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO, addr, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "READY", proc.stderr.read() if proc.stderr else line
    return proc


def echo_through(c: tsocket.socket, data: bytes) -> bytes:
    w = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(tsocket.SHUT_WR)))
    w.start()
    got = bytearray()
    while d := c.recv(1 << 20):
        got += d
    w.join(T)
    return bytes(got)


def test_connect_through_an_unreachable_route_fails_at_once_with_ehostunreach(host: Host) -> None:
    ns = host.netns
    assert in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1").returncode == 0
    ip("-n", ns, "route", "add", "unreachable", "198.19.255.0/24")
    before = host.driver.call(lambda now: host.stack.mib.IcmpInDestUnreachs)
    s = tsocket.socket()
    s.settimeout(T)
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        s.connect(("198.19.255.1", 80))
    elapsed = time.monotonic() - t0
    s.close()
    assert info.value.errno == errno.EHOSTUNREACH, info.value
    assert elapsed < 0.9  # before the first SYN retransmission (1 s): the ICMP did it
    mib = host.driver.call(lambda now: host.stack.mib.nstat())
    assert mib["IcmpInDestUnreachs"] == before + 1 and mib["IcmpInErrors"] == 0
    assert mib["TcpAttemptFails"] >= 1


def test_path_mtu_discovery_through_a_1280_byte_hop(host: Host, netns_name: str) -> None:
    ns, far = host.netns, netns_name + "-far"
    ip("netns", "add", far)
    try:
        ip("-n", ns, "link", "add", "vnear", "type", "veth", "peer", "name", "vfar", "netns", far)
        ip("-n", ns, "addr", "add", "198.19.1.1/24", "dev", "vnear")
        ip("-n", ns, "link", "set", "vnear", "up")
        # Both ends have MTU 1500 (the far kernel offers MSS 1460); the route
        # between them says 1280, which forwarding honours (ip_dst_mtu_maybe_forward).
        ip("-n", ns, "route", "replace", "198.19.1.0/24", "dev", "vnear", "mtu", "1280")
        ip("-n", far, "addr", "add", "198.19.1.2/24", "dev", "vfar")
        ip("-n", far, "link", "set", "vfar", "up")
        ip("-n", far, "link", "set", "lo", "up")
        ip("-n", far, "route", "add", "default", "via", "198.19.1.1")
        assert in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1").returncode == 0
        srv = echo_server(far, "198.19.1.2", 9100)
        try:
            c = tsocket.create_connection(("198.19.1.2", 9100), timeout=T)
            data = os.urandom(1 << 20)
            got = echo_through(c, data)
            info = c.tcp_info()
            c.close()
            out, _ = srv.communicate(timeout=T)
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.communicate(timeout=10)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert out.strip() == str(1 << 20)
        # 1280 - 20 (IPv4) - 20 (TCP) - 12 (timestamps, taken off as Linux's mss_cache); the far end offered 1460
        assert info["snd_mss"] == 1228
        mib = host.driver.call(lambda now: host.stack.mib.nstat())
        assert mib["IcmpInDestUnreachs"] >= 1 and mib["TcpExtOutOfWindowIcmps"] == 0
    finally:
        subprocess.run(["ip", "netns", "del", far], capture_output=True, timeout=10, check=False)


def test_ip_tos_is_what_the_kernel_receives(host: Host) -> None:
    ns = host.netns
    dump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-l", "-n", "-v", "-i", host.ifname, "-c", "4",
                             "tcp port 9200 and dst host " + KERNEL4],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        banner = dump.stderr.readline()  # "tcpdump: listening on ..." once capturing
        assert "listening" in banner, banner
        srv = echo_server(ns, KERNEL4, 9200)
        c = tsocket.socket()
        c.setsockopt(tsocket.IPPROTO_IP, tsocket.IP_TOS, 0xB9)  # EF + an ECN bit the stack clears
        assert c.getsockopt(tsocket.IPPROTO_IP, tsocket.IP_TOS) == 0xB8
        c.settimeout(T)
        c.connect((KERNEL4, 9200))
        assert echo_through(c, b"x" * 3000) == b"x" * 3000
        c.close()
        srv.communicate(timeout=T)
        out, _ = dump.communicate(timeout=T)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.communicate(timeout=10)
    tos = [line.split("tos ", 1)[1].split(",")[0] for line in out.splitlines() if "tos " in line]
    assert tos and set(tos) == {"0xb8"}, out


def test_a_fresh_linux_namespace_refuses_source_routed_packets(netns_name: str) -> None:
    ip("netns", "add", netns_name)
    r = in_ns(netns_name, "sysctl", "-n", "net.ipv4.conf.all.accept_source_route")
    assert r.stdout.strip() == "0", r
