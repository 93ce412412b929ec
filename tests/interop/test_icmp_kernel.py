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
import time

import pytest

from tcpstack import socket as tsocket
from tcpstack.runtime.host import Host

from .forwarding import FAR4, far_namespace, forwarding, ip
from .kernel_peer import KERNEL4, Capture, PeerServer, echo_through, in_ns

T = 30.0


def test_connect_through_an_unreachable_route_fails_at_once_with_ehostunreach(host: Host) -> None:
    ns = host.netns
    forwarding(ns)
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


def test_path_mtu_discovery_through_a_1280_byte_hop(host: Host) -> None:
    # Both ends have MTU 1500 (the far kernel offers MSS 1460); the route
    # between them says 1280, which forwarding honours (ip_dst_mtu_maybe_forward).
    with far_namespace(host.netns, mtu=1280) as far, PeerServer(far, "echo-server", FAR4, 9100) as srv:
        c = tsocket.create_connection((FAR4, 9100), timeout=T)
        data = os.urandom(1 << 20)
        got = echo_through(c, data, T)
        info = c.tcp_info()
        c.close()
        res = srv.result(timeout=T)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert res["n"] == 1 << 20
    # 1280 - 20 (IPv4) - 20 (TCP) - 12 (timestamps, taken off as Linux's mss_cache); the far end offered 1460
    assert info["snd_mss"] == 1228
    mib = host.driver.call(lambda now: host.stack.mib.nstat())
    assert mib["IcmpInDestUnreachs"] >= 1 and mib["TcpExtOutOfWindowIcmps"] == 0


def test_ip_tos_is_what_the_kernel_receives(host: Host) -> None:
    with Capture(host, "tcp port 9200 and dst host " + KERNEL4, count=4) as cap, \
            PeerServer(host.netns, "echo-server", KERNEL4, 9200) as srv:
        c = tsocket.socket()
        c.setsockopt(tsocket.IPPROTO_IP, tsocket.IP_TOS, 0xB9)  # EF + an ECN bit the stack clears
        assert c.getsockopt(tsocket.IPPROTO_IP, tsocket.IP_TOS) == 0xB8
        c.settimeout(T)
        c.connect((KERNEL4, 9200))
        assert echo_through(c, b"x" * 3000, T) == b"x" * 3000
        c.close()
        srv.result(timeout=T)
        out = cap.wait(timeout=T)
    tos = [line.split("tos ", 1)[1].split(",")[0] for line in out.splitlines() if "tos " in line]
    assert tos and set(tos) == {"0xb8"}, out


def test_a_fresh_linux_namespace_refuses_source_routed_packets(netns_name: str) -> None:
    ip("netns", "add", netns_name)
    r = in_ns(netns_name, "sysctl", "-n", "net.ipv4.conf.all.accept_source_route")
    assert r.stdout.strip() == "0", r
