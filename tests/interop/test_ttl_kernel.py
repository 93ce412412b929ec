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
import threading
import time

import pytest

from tcpstack import socket as tsocket
from tcpstack.runtime.host import Host

from .forwarding import FAR4, FAR6, far_namespace
from .kernel_peer import (
    KERNEL4,
    STACK4,
    STACK6,
    Capture,
    PeerServer,
    echo_through,
    peer,
)

T = 30.0


def test_ip_ttl_of_our_client_is_what_the_kernel_receives(host: Host) -> None:
    with Capture(host, f"tcp port 9300 and src host {STACK4}", count=6) as cap, \
            PeerServer(host.netns, "echo-server", KERNEL4, 9300) as srv:
        c = tsocket.socket()
        c.setsockopt(tsocket.IPPROTO_IP, tsocket.IP_TTL, 17)
        c.settimeout(T)
        c.connect((KERNEL4, 9300))
        data = os.urandom(5000)
        assert echo_through(c, data, T) == data
        c.close()
        assert srv.result(timeout=T)["n"] == 5000
        lines = cap.wait(timeout=T).splitlines()
    ttls = [line.split("ttl ", 1)[1].split(",")[0] for line in lines if "ttl " in line]
    assert len(ttls) == 6 and set(ttls) == {"17"}, ttls


def test_ipv6_unicast_hops_of_our_listener_is_inherited_and_on_the_syn_ack(host: Host) -> None:
    with Capture(host, f"tcp port 9301 and src host {STACK6}", count=6) as cap:
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
        res = peer(host.netns, "exchange-client", STACK6, 9301, 5120, timeout=60, sock_timeout=T)
        t.join(T)
        srv.close()
        assert res["got"] == 5120 and res["got_sha"] == res["sent_sha"], res
        assert done == [33]
        lines = cap.wait(timeout=T).splitlines()
    hlims = [line.split("hlim ", 1)[1].split(",")[0] for line in lines if "hlim " in line]
    assert len(hlims) == 6 and set(hlims) == {"33"}, lines
    assert any("[S.]" in line for line in lines), lines  # the SYN-ACK is among them


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_ttl_1_through_a_forwarding_kernel_draws_time_exceeded(host: Host, family: str) -> None:
    # Our SYN is for the namespace behind the kernel's: the kernel would forward it,
    # but with TTL / Hop Limit 1 it answers time exceeded instead (the TTL check comes first).
    if family == "ipv4":
        dest, fam, level, opt, counter = FAR4, tsocket.AF_INET, tsocket.IPPROTO_IP, tsocket.IP_TTL, "IcmpInTimeExcds"
    else:
        dest, fam, level, opt, counter = (FAR6, tsocket.AF_INET6, tsocket.IPPROTO_IPV6,
                                          tsocket.IPV6_UNICAST_HOPS, "Icmp6InTimeExcds")
    with far_namespace(host.netns):
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
