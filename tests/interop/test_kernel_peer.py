"""The Linux kernel as the peer of tcpstack's socket API, both directions.

Each test brings up a ``Host`` (a stack on its own TUN device) in a fresh
namespace and runs the kernel's side as a plain Python program with
``ip netns exec`` (``kernel_peer.PEER``, standard library only). What is
asserted: sha256 of every byte stream, the states each side went through,
where TIME-WAIT lands, the kernel's own counters (``nstat``: no checksum
errors, no TCPAbortOnData, no RST it did not have to send), and that tshark
finds nothing malformed in a capture. Throughput of the 64 MiB transfers is
printed (``pytest -s``), never asserted.

Impairment (the lossy tests): issue #5 asks for 64 MiB both ways under
``tc qdisc add dev TUN root netem loss 3% delay 20ms reorder 5% duplicate 1%``.
A qdisc shapes what the kernel *transmits* on the device, so that command
impairs kernel->stack only (the data of downloads, the ACKs of uploads).
Where the kernel has sch_netem the test runs exactly that command; where it
does not (CONFIG_NET_SCH_NETEM unset, as on some CI kernels) the driver's
``Impairment`` on its *ingress* does what the qdisc would have done, draw for
draw (see ``tcpstack.runtime.driver.Impairment``), and nothing else.  A second,
smaller test impairs both directions in the driver: beyond netem-on-TUN, it is
what makes the stack's own loss recovery work as a sender against the kernel.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tcpstack import socket as tsocket
from tcpstack.pcap import PcapWriter
from tcpstack.runtime.driver import Impairment
from tcpstack.runtime.host import Host
from tcpstack.tcp import State

from .kernel_peer import (
    MiB,
    PeerServer,
    assert_kernel_clean,
    in_ns,
    mbps,
    nstat,
    peer,
    read_to_eof,
    sha,
    wait_until,
)

BIG = 64 * MiB  # the clean transfers (required size)
KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
T = 60.0  # bound of any single blocking step


def echo_server(host: Host, port: int, record: dict[str, Any]) -> threading.Thread:
    """A tcpstack.socket echo server for one connection, in a thread."""
    srv = tsocket.create_server(("", port), driver=host)
    srv.settimeout(T)

    def run() -> None:
        try:
            c, _ = srv.accept()
            c.settimeout(T)
            record["conn"] = c.connection
            n = 0
            while True:
                d = c.recv(1 << 18)
                if not d:
                    break
                n += len(d)
                c.sendall(d)
            record["echoed"] = n
            c.close()
        except BaseException as exc:  # reported by the test
            record["error"] = exc
        finally:
            srv.close()

    t = threading.Thread(target=run, name="stack-echo")
    t.start()
    return t


def stack_upload(host: Host, port: int, data: bytes, t: float) -> float:
    """The stack sends ``data`` to a kernel sink-server and half-closes; the kernel
    answers "n sha" and closes. Asserts both sides saw every byte; returns seconds."""
    with PeerServer(host.netns, "sink-server", KERNEL, port, sock_timeout=t) as srv:
        t0 = time.monotonic()
        c = tsocket.create_connection((KERNEL, port), timeout=t, driver=host)
        c.sendall(data)
        c.shutdown(tsocket.SHUT_WR)
        reply = c.makefile("rb").readline()
        secs = time.monotonic() - t0
        assert c.recv(10) == b""
        c.close()
        res = srv.result(timeout=t + 30)
    assert reply.decode().split() == [str(len(data)), sha(data)]
    assert res["got"] == len(data) and res["got_sha"] == sha(data)
    return secs


@pytest.fixture
def host(netns_name: str) -> Iterator[Host]:
    with Host(netns_name, seed=1) as h:
        yield h


@pytest.fixture(params=[False, True], ids=["plain", "offload"])
def any_host(request: pytest.FixtureRequest, netns_name: str) -> Iterator[Host]:
    """A host reading plain packets, or (offload) the kernel's 64 KiB super-segments."""
    with Host(netns_name, seed=1, offload=request.param) as h:
        assert h.tun.tun.offload == request.param
        yield h


# -- kernel client -> stack server ------------------------------------------------------------


def test_kernel_client_echo_64mib_through_stack_server(any_host: Host) -> None:
    host = any_host
    ns = host.netns
    before = nstat(ns)
    rec: dict[str, Any] = {}
    t = echo_server(host, 7000, rec)
    res = peer(ns, "exchange-client", STACK, 7000, BIG)
    t.join(T)
    assert "error" not in rec, rec.get("error")
    assert res["got"] == BIG and res["got_sha"] == res["sent_sha"]
    assert rec["echoed"] == BIG
    delta = assert_kernel_clean(ns, before)
    mode = "offload" if host.tun.tun.offload else "plain"
    print(f"\n[echo 64 MiB, {mode}] kernel -> stack -> kernel: {mbps(2 * BIG, res['secs'])} "
          f"({res['secs']:.2f} s round trip; retransmitted segments: stack {host.stack.mib.RetransSegs}, "
          f"kernel {delta.get('TcpRetransSegs', 0)})")


def test_half_close_kernel_shuts_down_write_side(host: Host) -> None:
    """The kernel half-closes at once; the stack still echoes everything, then
    closes: its connection goes CLOSE-WAIT -> LAST-ACK -> CLOSED."""
    ns = host.netns
    rec: dict[str, Any] = {}
    events: list[Any] = []
    host.stack.observers.append(lambda e: events.append(e) if e.kind == "state" else None)
    t = echo_server(host, 7001, rec)
    res = peer(ns, "exchange-client", STACK, 7001, 3 * MiB)
    t.join(T)
    assert res["got"] == 3 * MiB and res["got_sha"] == res["sent_sha"]  # the whole echo, then EOF
    conn = rec["conn"]
    assert wait_until(lambda: conn.state is State.CLOSED)
    hist = [s.value for s in conn.history]
    assert hist[-4:] == ["ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"], hist
    # The same, seen through the observer hook.
    seen = [(e.detail[0].value, e.detail[1].value) for e in events if e.conn_id == conn.conn_id]
    assert ("ESTABLISHED", "CLOSE-WAIT") in seen and ("CLOSE-WAIT", "LAST-ACK") in seen
    assert ("LAST-ACK", "CLOSED") in seen


# -- stack client -> kernel server ------------------------------------------------------------


def test_stack_client_upload_and_download_64mib(any_host: Host) -> None:
    host = any_host
    ns = host.netns
    before = nstat(ns)
    up_secs = stack_upload(host, 9000, os.urandom(BIG), T)
    # Download: the kernel sends and closes first.
    with PeerServer(ns, "source-server", KERNEL, 9001, BIG) as srv:
        t0 = time.monotonic()
        c = tsocket.create_connection((KERNEL, 9001), timeout=T, driver=host)
        n, got_sha = read_to_eof(c)
        down_secs = time.monotonic() - t0
        c.close()
        res = srv.result()
    assert n == BIG and got_sha == res["sent_sha"]
    mode = "offload" if host.tun.tun.offload else "plain"
    print(f"\n[socket API 64 MiB, {mode}] upload stack -> kernel: {mbps(BIG, up_secs)} ({up_secs:.2f} s); "
          f"download kernel -> stack: {mbps(BIG, down_secs)} ({down_secs:.2f} s)")
    assert_kernel_clean(ns, before)


# -- who closes first keeps TIME-WAIT --------------------------------------------------------------


def kernel_time_wait(ns: str, port: int) -> list[str]:
    p = in_ns(ns, "ss", "-Htan", "state", "time-wait", timeout=20)
    return [line for line in p.stdout.splitlines() if f":{port} " in line + " "]


def test_kernel_closes_first_time_wait_is_in_the_kernel(host: Host) -> None:
    ns = host.netns
    before = nstat(ns)
    srv = tsocket.create_server(("", 7002), driver=host)
    srv.settimeout(T)
    got: dict[str, Any] = {}

    def serve() -> None:
        c, _ = srv.accept()
        c.settimeout(T)
        c.sendall(c.recv(1))
        got["eof"] = c.recv(10)  # the kernel closes first
        got["conn"] = c.connection
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    res = peer(ns, "close-first-client", STACK, 7002)
    t.join(T)
    srv.close()
    assert res["got"] == "k" and got["eof"] == b""
    conn = got["conn"]
    assert wait_until(lambda: conn.state is State.CLOSED)
    assert [s.value for s in conn.history][-3:] == ["CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    assert not any(k[3] == res["port"] for k in host.stack.timewait)
    assert wait_until(lambda: kernel_time_wait(ns, res["port"]) != [])
    assert_kernel_clean(ns, before)


def test_stack_closes_first_time_wait_is_in_the_stack(host: Host) -> None:
    ns = host.netns
    before = nstat(ns)
    with PeerServer(ns, "wait-close-server", KERNEL, 9002) as srv:
        c = tsocket.create_connection((KERNEL, 9002), timeout=T, driver=host)
        c.sendall(b"s")
        assert c.recv(1) == b"s"
        conn = c.connection
        port = c.getsockname()[1]
        c.close()  # the stack closes first
        res = srv.result()
    assert res["eof"] is True
    assert wait_until(lambda: conn.key in host.stack.timewait)
    assert [s.value for s in conn.history][-4:] == ["ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]
    assert kernel_time_wait(ns, port) == []
    assert_kernel_clean(ns, before)


# -- closed ports --------------------------------------------------------------------------------------


def test_connect_to_closed_ports_is_refused_at_once(host: Host) -> None:
    ns = host.netns
    before = nstat(ns)
    # The stack connects to a port where the kernel listens on nothing: the kernel's RST.
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        tsocket.create_connection((KERNEL, 9999), timeout=T, driver=host)
    assert time.monotonic() - t0 < 1.0
    # The kernel connects to a port of the stack with no listener: our RST.
    res = peer(ns, "connect", STACK, 9999)
    assert res["error"] == "ConnectionRefusedError" and res["secs"] < 1.0
    assert host.stack.mib.OutRsts >= 1
    assert_kernel_clean(ns, before, rsts=1)


# -- impaired paths ---------------------------------------------------------------------------------------

NETEM = dict(loss=0.03, delay_ms=20, reorder=0.05, duplicate=0.01)  # issue #5's netem line
NETEM_ARGS = ("loss", "3%", "delay", "20ms", "reorder", "5%", "duplicate", "1%")
# Measured on a 2-vCPU machine with the driver fallback: kernel->stack 0.9-1.0 MB/s
# (the kernel's CUBIC and RACK against 3 % loss at a 20 ms RTT: 70-73 s for 64 MiB),
# stack->kernel 5-9 MB/s (only its ACKs are impaired: 7-13 s for 64 MiB). Run
# concurrently on two connections, the test takes as long as the download (~75 s).
NETEM_BYTES = 64 * MiB
NETEM_T = 240.0  # bound of any single blocking step of the netem test
# Both directions impaired in the driver (beyond netem-on-TUN), smaller: the stack's
# own RFC 6675 recovery, RTOs for lost retransmissions, is slow as a sender here.
BOTH_IN = 4 * MiB
BOTH_OUT = 2 * MiB


@pytest.fixture
def netem_host(netns_name: str) -> Iterator[Host]:
    """A host whose kernel->stack direction is impaired as issue #5's netem line
    says: by tc netem on the TUN device when the kernel has it, otherwise by the
    driver's ingress Impairment (the same semantics). stack->kernel is untouched."""
    with Host(netns_name, seed=3) as h:
        p = in_ns(h.netns, "tc", "qdisc", "add", "dev", h.ifname, "root", "netem", *NETEM_ARGS,
                  "limit", "10000", timeout=20)
        if p.returncode == 0:
            h.impaired_by = f"tc netem {' '.join(NETEM_ARGS)} on {h.ifname} (kernel->stack)"
        else:
            with h.driver.lock:
                h.driver.ingress = Impairment(**NETEM, seed=2)
            h.impaired_by = (f"driver ingress as netem {' '.join(NETEM_ARGS)} (kernel->stack; "
                             f"this kernel has no sch_netem: {p.stderr.strip()})")
        yield h


def _both_ways(host: Host, pool: ThreadPoolExecutor, n_in: int, n_out: int, t: float,
               ) -> tuple[float, float]:
    """kernel->stack ``n_in`` bytes and stack->kernel ``n_out`` bytes at the same time,
    on two connections, each checked byte-exact; returns (in_secs, out_secs)."""
    ns = host.netns
    srv = tsocket.create_server(("", 7003), driver=host)
    srv.settimeout(t)

    def stack_sink() -> tuple[int, str]:
        try:
            c, _ = srv.accept()
        finally:
            srv.close()
        c.settimeout(t)
        got = read_to_eof(c)
        c.close()
        return got

    def download() -> tuple[dict[str, Any], float]:  # the kernel sends, the stack sends nothing back
        t0 = time.monotonic()
        res = peer(ns, "exchange-client", STACK, 7003, n_in, timeout=t + 30, sock_timeout=t)
        return res, time.monotonic() - t0

    sunk = pool.submit(stack_sink)
    down = pool.submit(download)
    out_secs = stack_upload(host, 9003, os.urandom(n_out), t)
    res, in_secs = down.result(timeout=t + 60)
    assert sunk.result(timeout=t) == (n_in, res["sent_sha"])
    return in_secs, out_secs


def _qdisc_drops(ns: str, dev: str) -> int:
    p = in_ns(ns, "tc", "-s", "qdisc", "show", "dev", dev, timeout=20)
    m = re.search(r"dropped (\d+)", p.stdout)
    assert m, p.stdout
    return int(m.group(1))


def test_netem_on_the_tun_64mib_both_ways_byte_exact(netem_host: Host, pool: ThreadPoolExecutor) -> None:
    """Issue #5: under netem loss 3% delay 20ms reorder 5% duplicate 1% on the TUN
    device (kernel->stack), 64 MiB each way, concurrently, arrive byte-exact."""
    host = netem_host
    ns = host.netns
    before = nstat(ns)
    in_secs, out_secs = _both_ways(host, pool, NETEM_BYTES, NETEM_BYTES, NETEM_T)
    assert host.driver.egress is None  # stack->kernel is not impaired: netem cannot see it
    ing = host.driver.ingress
    if ing is not None:
        assert ing.dropped > 0 and ing.duplicated > 0 and ing.reordered > 0
        seen = f"ingress {ing.counters()}"
    else:
        drops = _qdisc_drops(ns, host.ifname)
        assert drops > 0
        seen = f"qdisc dropped {drops}"
    delta = assert_kernel_clean(ns, before)
    assert delta.get("TcpRetransSegs", 0) > 0  # the kernel recovered from the losses
    print(f"\n[netem, {host.impaired_by}] kernel -> stack {NETEM_BYTES // MiB} MiB {mbps(NETEM_BYTES, in_secs)} "
          f"({in_secs:.1f} s), stack -> kernel {NETEM_BYTES // MiB} MiB {mbps(NETEM_BYTES, out_secs)} "
          f"({out_secs:.1f} s), concurrently; {seen}; kernel retransmitted {delta.get('TcpRetransSegs', 0)}, "
          f"stack {host.stack.mib.RetransSegs}")


def test_lossy_both_directions_beyond_netem_on_tun(netns_name: str, pool: ThreadPoolExecutor) -> None:
    """Harsher than netem on the TUN device: the driver impairs both directions
    (egress too, which a qdisc on the kernel's side cannot), so the stack's data
    is lost and its own loss recovery has to deliver to the kernel receiver."""
    with Host(netns_name, seed=3, egress=Impairment(**NETEM, seed=1), ingress=Impairment(**NETEM, seed=2)) as host:
        ns = host.netns
        before = nstat(ns)
        in_secs, out_secs = _both_ways(host, pool, BOTH_IN, BOTH_OUT, T)
        eg, ing = host.driver.egress, host.driver.ingress
        assert eg is not None and eg.dropped > 0 and eg.duplicated > 0 and eg.reordered > 0
        assert ing is not None and ing.dropped > 0
        assert host.stack.mib.RetransSegs > 0
        delta = assert_kernel_clean(ns, before)
        print(f"\n[lossy both ways, driver egress and ingress, beyond netem-on-TUN] kernel -> stack "
              f"{BOTH_IN // MiB} MiB {mbps(BOTH_IN, in_secs)} ({in_secs:.1f} s), stack -> kernel "
              f"{BOTH_OUT // MiB} MiB {mbps(BOTH_OUT, out_secs)} ({out_secs:.1f} s), concurrently; "
              f"egress {eg.counters()}, stack retransmitted {host.stack.mib.RetransSegs}, "
              f"kernel {delta.get('TcpRetransSegs', 0)}")


# -- a capture of an interop session, judged by tshark ------------------------------------------------------


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_pcap_of_an_interop_session_is_clean_in_tshark(netns_name: str, tmp_path: Any, offload: bool) -> None:
    path = tmp_path / "session.pcap"
    pcap = PcapWriter(str(path))
    with Host(netns_name, seed=4, pcap=pcap, offload=offload) as host:
        rec: dict[str, Any] = {}
        t = echo_server(host, 7004, rec)
        res = peer(host.netns, "exchange-client", STACK, 7004, 2 * MiB)
        t.join(T)
        assert res["got_sha"] == res["sent_sha"]
        with pytest.raises(ConnectionRefusedError):
            tsocket.create_connection((KERNEL, 9999), timeout=T, driver=host)
    pcap.close()
    base = ["tshark", "-n", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]
    count = subprocess.run(base, capture_output=True, text=True, timeout=120, check=True)
    packets = count.stdout.count("\n")
    assert packets > 2 * MiB // 1460 // (45 if offload else 1), f"only {packets} packets in the capture"
    bad = subprocess.run(
        [*base, "-Y", "_ws.malformed || tcp.analysis.ack_lost_segment || tcp.checksum.status == 0 "
         "|| ip.checksum.status == 0"],
        capture_output=True, text=True, timeout=120, check=True)
    assert bad.stdout.strip() == "", bad.stdout[:2000]
