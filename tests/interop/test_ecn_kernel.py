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

ECHO_SERVER = r'''
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

ECHO_CLIENT = r'''
import hashlib, socket, sys, threading
data = bytes(range(256)) * int(sys.argv[3])
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
th = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR))); th.start()
got = bytearray()
while d := c.recv(65536): got += d
th.join(); c.close(); print("OK" if bytes(got) == data else "MISMATCH", len(got), flush=True)
'''

# tcpdump -v -n: "IP (tos 0x2,ECT(0), ttl 64, ...)" then "    a.p > b.q: Flags [P.], ... length 1448"
_PKT = re.compile(r"IP \(tos (0x[0-9a-f]+)(?:,([A-Za-z0-9()]+))?.*?\n\s+(\S+) > (\S+): Flags \[([^\]]*)\].*?length (\d+)", re.S)


def in_ns(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def host(netns_name: str) -> Iterator[Host]:
    with Host(netns_name, seed=1) as h:
        tsocket.set_default_driver(h)
        try:
            assert in_ns(h.netns, "sysctl", "-qw", "net.ipv4.tcp_ecn=1").returncode == 0
            yield h
        finally:
            tsocket.set_default_driver(None)


class Capture:
    """tcpdump -v in the namespace; ``wait_for(pred)`` reads until the packets seen satisfy it."""

    def __init__(self, host: Host, port: int) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "tcpdump", "-l", "-n", "-v", "-i", host.ifname, f"tcp port {port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None and self.proc.stdout is not None
        banner = self.proc.stderr.readline()
        assert "listening" in banner, banner
        self.text = ""
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.text += line
                self._cond.notify_all()

    def packets(self) -> list[tuple[int, str, str, str, str, int]]:
        """(tos, ecn name, src, dst, flags, length) per packet, in order."""
        return [(int(t, 16), e or "", s, d, f, int(n)) for t, e, s, d, f, n in _PKT.findall(self.text)]

    def wait_for(self, pred: object, timeout: float = T) -> list[tuple[int, str, str, str, str, int]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.packets()):  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        self.proc.terminate()
        self.proc.communicate(timeout=10)
        self._reader.join(10)
        return self.packets()


def both_fins(pkts: list[tuple[int, str, str, str, str, int]]) -> bool:
    return len({src for _, _, src, _, flags, _ in pkts if "F" in flags}) == 2


def check_rfc3168(pkts: list[tuple[int, str, str, str, str, int]], client: str) -> None:
    syn = [p for p in pkts if p[4] in ("SEW", "S")]
    synack = [p for p in pkts if p[4].startswith("S.")]
    assert syn and syn[0][4] == "SEW" and syn[0][2].startswith(client), pkts[:3]  # ECN-setup SYN
    assert synack and synack[0][4] == "S.E", pkts[:3]  # ECN-setup SYN-ACK
    assert all(p[0] & 3 == 0 for p in syn + synack)  # the handshake is not ECN-capable
    data = [p for p in pkts if p[5] > 0]
    acks = [p for p in pkts if p[5] == 0 and "S" not in p[4]]
    assert len({p[2] for p in data}) == 2  # data both ways
    # Every data segment is ECT(0) (nothing was retransmitted on this clean link); no pure ACK is.
    assert {(p[0] & 3, p[1]) for p in data} == {(2, "ECT(0)")}, [p for p in data if p[0] & 3 != 2][:3]
    assert all(p[0] & 3 == 0 for p in acks), [p for p in acks if p[0] & 3][:3]


def test_kernel_client_negotiates_ecn_with_our_listener(host: Host) -> None:
    cap = Capture(host, 9500)
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
    r = in_ns(host.netns, sys.executable, "-c", ECHO_CLIENT, STACK4, "9500", "1024")
    t.join(T)
    srv.close()
    assert r.stdout.split() == ["OK", str(256 * 1024)], r.stderr
    info = seen["info"]
    assert isinstance(info, dict) and "ecn" in info["options"] and "ecnseen" in info["options"]
    check_rfc3168(cap.wait_for(both_fins), KERNEL4)


def test_our_client_negotiates_ecn_with_a_kernel_listener(host: Host) -> None:
    host.driver.call(lambda now: host.stack.config.set("tcp_ecn", 1))
    cap = Capture(host, 9501)
    srv = subprocess.Popen(["ip", "netns", "exec", host.netns, sys.executable, "-c", ECHO_SERVER, KERNEL4, "9501"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "READY"
        c = tsocket.create_connection((KERNEL4, 9501), timeout=T)
        data = os.urandom(256 * 1024)
        w = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(tsocket.SHUT_WR)))
        w.start()
        got = bytearray()
        while d := c.recv(1 << 20):
            got += d
        w.join(T)
        info = c.tcp_info()
        c.close()
        out, _ = srv.communicate(timeout=T)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate(timeout=10)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest() and out.strip() == str(len(data))
    assert "ecn" in info["options"] and "ecnseen" in info["options"]
    mib = host.driver.call(lambda now: host.stack.mib.nstat())
    assert mib["IpExtInECT0Pkts"] > 0 and mib["IpExtInCEPkts"] == 0
    check_rfc3168(cap.wait_for(both_fins), STACK4)
