"""ECN (RFC 3168) negotiated with the real kernel, both directions.

The namespace's kernel runs with ``net.ipv4.tcp_ecn=1`` (request and
accept).  tcpdump on the kernel's side of the TUN reads what each side put on
the wire: the ECN-setup SYN (ECE|CWR, tcpdump's ``[SEW]``), the ECN-setup
SYN-ACK (ECE alone, ``[S.E]``), ECT(0) on every data segment sent for the
first time and never on pure ACKs or the handshake.  The data is echoed
byte-exact.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading

import pytest

from tcpstack import socket as tsocket
from tcpstack.runtime.host import Host

from .kernel_peer import (
    KERNEL4,
    STACK4,
    Capture,
    PeerServer,
    echo_through,
    in_ns,
    nstat,
    peer,
)

T = 30.0

# tcpdump -v -n: "IP (tos 0x2,ECT(0), ttl 64, ...)" then "    a.p > b.q: Flags [P.], ... length 1448"
_PKT = re.compile(r"IP \(tos (0x[0-9a-f]+)(?:,([A-Za-z0-9()]+))?.*?\n\s+(\S+) > (\S+): Flags \[([^\]]*)\].*?length (\d+)", re.S)
Packet = tuple[int, str, str, str, str, int]


@pytest.fixture
def host(host: Host) -> Host:
    """conftest's host, with the namespace's kernel asking for ECN too (tcp_ecn=1)."""
    assert in_ns(host.netns, "sysctl", "-qw", "net.ipv4.tcp_ecn=1").returncode == 0
    return host


def packets(text: str) -> list[Packet]:
    """(tos, ecn name, src, dst, flags, length) per packet in tcpdump's text, in order."""
    return [(int(t, 16), e or "", s, d, f, int(n)) for t, e, s, d, f, n in _PKT.findall(text)]


def both_fins(text: str) -> bool:
    return len({src for _, _, src, _, flags, _ in packets(text) if "F" in flags}) == 2


def retransmitted(host: Host) -> int:
    """Segments either side retransmitted (ours from the stack's MIB, the kernel's
    from nstat): a tail loss probe can fire on a loaded machine even on this clean
    link (PTO is 2*SRTT + 2 ms here, as Linux's), and a retransmission is never
    ECN-capable (RFC 3168 §6.1.5)."""
    ours = host.driver.call(lambda now: host.stack.mib.RetransSegs)
    return int(ours) + nstat(host.netns).get("TcpRetransSegs", 0)


def check_rfc3168(pkts: list[Packet], client: str, retransmissions: int) -> None:
    syn = [p for p in pkts if p[4] in ("SEW", "S")]
    synack = [p for p in pkts if p[4].startswith("S.")]
    assert syn and syn[0][4] == "SEW" and syn[0][2].startswith(client), pkts[:3]  # ECN-setup SYN
    assert synack and synack[0][4] == "S.E", pkts[:3]  # ECN-setup SYN-ACK
    assert all(p[0] & 3 == 0 for p in syn + synack)  # the handshake is not ECN-capable
    data = [p for p in pkts if p[5] > 0]
    acks = [p for p in pkts if p[5] == 0 and "S" not in p[4]]
    assert len({p[2] for p in data}) == 2  # data both ways
    # Data is ECT(0) both ways -- every segment but retransmissions (§6.1.5); no pure ACK is.
    ect = [p for p in data if (p[0] & 3, p[1]) == (2, "ECT(0)")]
    not_ect = [p for p in data if p[0] & 3 == 0]
    assert len({p[2] for p in ect}) == 2 and len(ect) + len(not_ect) == len(data), data[:3]
    assert len(not_ect) <= retransmissions, (not_ect[:3], retransmissions)
    assert all(p[0] & 3 == 0 for p in acks), [p for p in acks if p[0] & 3][:3]


def test_kernel_client_negotiates_ecn_with_our_listener(host: Host) -> None:
    with Capture(host, "tcp port 9500") as cap:
        srv = tsocket.create_server((STACK4, 9500))  # tcp_ecn=2 (Linux's default): we accept
        srv.settimeout(T)
        seen: dict[str, object] = {}

        def serve() -> None:
            a, _ = srv.accept()
            a.settimeout(T)
            while d := a.recv(65536):
                a.sendall(d)
            seen["info"] = a.tcp_info()
            a.close()

        t = threading.Thread(target=serve)
        t.start()
        res = peer(host.netns, "exchange-client", STACK4, 9500, 256 * 1024, timeout=60, sock_timeout=T)
        t.join(T)
        srv.close()
        assert res["got"] == 256 * 1024 and res["got_sha"] == res["sent_sha"], res
        info = seen["info"]
        assert isinstance(info, dict) and "ecn" in info["options"] and "ecnseen" in info["options"]
        text = cap.wait(both_fins, timeout=T)
    check_rfc3168(packets(text), KERNEL4, retransmitted(host))


def test_our_client_negotiates_ecn_with_a_kernel_listener(host: Host) -> None:
    host.driver.call(lambda now: host.stack.config.set("tcp_ecn", 1))
    with Capture(host, "tcp port 9501") as cap, PeerServer(host.netns, "echo-server", KERNEL4, 9501) as srv:
        c = tsocket.create_connection((KERNEL4, 9501), timeout=T)
        data = os.urandom(256 * 1024)
        got = echo_through(c, data, T)
        info = c.tcp_info()
        c.close()
        res = srv.result(timeout=T)
        text = cap.wait(both_fins, timeout=T)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest() and res["n"] == len(data)
    assert "ecn" in info["options"] and "ecnseen" in info["options"]
    mib = host.driver.call(lambda now: host.stack.mib.nstat())
    assert mib["IpExtInECT0Pkts"] > 0 and mib["IpExtInCEPkts"] == 0
    check_rfc3168(packets(text), STACK4, retransmitted(host))
