"""The Linux kernel as the peer of tcpstack's socket API, both directions.

Each test brings up a ``Host`` (a stack on its own TUN device) in a fresh
namespace and runs the kernel's side as a plain Python program with
``ip netns exec`` (the ``PEER`` script below, standard library only). What
is asserted: sha256 of every byte stream, the states each side went through,
where TIME-WAIT lands, the kernel's own counters (``nstat``: no checksum
errors, no TCPAbortOnData, no RST it did not have to send), and that tshark
finds nothing malformed in a capture. Throughput of the 64 MiB transfers is
printed (``pytest -s``), never asserted.

Impairment (the lossy tests): ``tc qdisc ... netem`` on the kernel's end of
the TUN shapes only what the kernel *sends* (a qdisc acts on egress), so the
stack->kernel direction is impaired in the driver (``Driver(egress=
Impairment(...))``, same parameters and meaning as netem). When the kernel
has no sch_netem (as some CI kernels), kernel->stack is impaired by the
driver too (``ingress=``); the test prints which was used.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tcpstack import socket as tsocket
from tcpstack.pcap import PcapWriter
from tcpstack.runtime.driver import Impairment
from tcpstack.runtime.host import Host
from tcpstack.tcp import State

MiB = 1 << 20
BIG = 64 * MiB  # the clean transfers (required size)
# The impaired transfers, sized so the whole test stays well under 60 s: on a
# 2-vCPU machine ~5 s kernel->stack (Linux's SACK/RACK recovery) and ~15 s
# stack->kernel (the engine's RFC 6675 recovery, with RTOs for lost retransmissions).
LOSSY_IN = 4 * MiB
LOSSY_OUT = 2 * MiB
KERNEL = "198.18.0.1"
STACK = "198.18.0.2"
T = 60.0  # bound of any single blocking step

# The kernel's side: a plain Python program (stdlib only), run in the namespace.
# Prints "READY" (servers) and one JSON line with what it saw.
PEER = r'''
import hashlib, json, os, socket, sys, threading, time
mode, args = sys.argv[1], sys.argv[2:]
T = 60

def out(**kw):
    print(json.dumps(kw), flush=True)

def listener(port):
    ls = socket.socket(socket.AF_INET6 if ":" in args[0] else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args[0], port)); ls.listen(8); ls.settimeout(T)
    print("READY", flush=True)
    c, peer = ls.accept(); c.settimeout(T); ls.close()
    return c, peer

def read_all(c):
    h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            return n, h.hexdigest()
        h.update(d); n += len(d)

if mode == "echo-client":          # host port nbytes: send, half-close, read the echo, then EOF
    host, port, nbytes = args[0], int(args[1]), int(args[2])
    data = os.urandom(nbytes)
    t0 = time.monotonic()
    c = socket.create_connection((host, port), timeout=T)
    def send():
        c.sendall(data); c.shutdown(socket.SHUT_WR)
    th = threading.Thread(target=send); th.start()
    n, sha = read_all(c)
    th.join(); secs = time.monotonic() - t0; c.close()
    out(sent=nbytes, sent_sha=hashlib.sha256(data).hexdigest(), got=n, got_sha=sha, secs=secs)
elif mode == "sink-server":        # addr port: read to EOF, answer "n sha", close
    c, peer = listener(int(args[1]))
    t0 = time.monotonic(); n, sha = read_all(c); secs = time.monotonic() - t0
    c.sendall(f"{n} {sha}\n".encode()); c.close()
    out(got=n, got_sha=sha, secs=secs, peer=list(peer[:2]))
elif mode == "source-server":      # addr port nbytes: send nbytes, close first
    nbytes = int(args[2])
    data = os.urandom(nbytes)
    c, peer = listener(int(args[1]))
    t0 = time.monotonic(); c.sendall(data); c.close(); secs = time.monotonic() - t0
    out(sent=nbytes, sent_sha=hashlib.sha256(data).hexdigest(), secs=secs, peer=list(peer[:2]))
elif mode == "close-first-client":  # host port: one byte each way, then the kernel closes first
    c = socket.create_connection((args[0], int(args[1])), timeout=T)
    c.sendall(b"k"); got = c.recv(1); port = c.getsockname()[1]; c.close()
    out(got=got.decode(), port=port)
elif mode == "wait-close-server":  # addr port: echo one byte, wait for the peer to close, then close
    c, peer = listener(int(args[1]))
    c.sendall(c.recv(1)); rest = c.recv(10); c.close()
    out(eof=rest == b"", peer=list(peer[:2]))
elif mode == "connect":            # host port: report how connect ended
    t0 = time.monotonic()
    try:
        socket.create_connection((args[0], int(args[1])), timeout=10).close(); err = None
    except OSError as e:
        err = type(e).__name__
    out(error=err, secs=time.monotonic() - t0)
'''


# -- helpers ------------------------------------------------------------------------


def in_ns(ns: str, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)


def peer(ns: str, *args: Any, timeout: float = 180) -> dict[str, Any]:
    """Run the kernel-side program to completion; its JSON result."""
    p = in_ns(ns, sys.executable, "-c", PEER, *map(str, args), timeout=timeout)
    assert p.returncode == 0, f"kernel peer {args} failed: {p.stderr[-2000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


class PeerServer:
    """A kernel-side server started in the background; ``result()`` waits for its JSON."""

    def __init__(self, ns: str, *args: Any) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PEER, *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            raise AssertionError(f"kernel server {args} did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def result(self, timeout: float = 180) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"kernel server failed: {err[-2000:]}"
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def nstat(ns: str) -> dict[str, int]:
    """The kernel's absolute TCP/IP counters in the namespace (history untouched)."""
    p = in_ns(ns, "nstat", "-asz", "--json", timeout=20)
    assert p.returncode == 0, p.stderr
    return {k: int(v) for k, v in json.loads(p.stdout)["kernel"].items()}


def assert_kernel_clean(ns: str, before: dict[str, int], *, rsts: int = 0) -> dict[str, int]:
    """The kernel logged nothing against us: no checksum errors, no TCPAbortOnData,
    no RST beyond the ``rsts`` the test provoked on purpose."""
    after = nstat(ns)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    bad = {k: delta[k] for k in ("TcpInCsumErrors", "TcpInErrs", "TcpExtTCPAbortOnData",
                                 "IpInHdrErrors", "IpExtInCsumErrors") if delta.get(k)}
    assert not bad, f"the kernel counted errors against us: {bad}"
    # One benign race: when the kernel retransmits its FIN (a tail loss probe after a
    # few ms of scheduling delay on our side), the stack's TIME-WAIT rightly ACKs the
    # copy again (RFC 9293 §3.10.7.4); if the first ACK already closed the kernel's
    # socket, the kernel answers the second with a RST. Allow that many, no more.
    extra = delta.get("TcpOutRsts", 0) - rsts
    retrans = delta.get("TcpRetransSegs", 0)
    assert 0 <= extra <= retrans, (
        f"kernel sent {delta.get('TcpOutRsts')} RSTs, expected {rsts} "
        f"(+ at most {retrans} answering ACKs of its own retransmissions)")
    return delta


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def mbps(nbytes: int, secs: float) -> str:
    return f"{nbytes / max(secs, 1e-9) / 1e6:.1f} MB/s"


def wait_until(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


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
    res = peer(ns, "echo-client", STACK, 7000, BIG)
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
    res = peer(ns, "echo-client", STACK, 7001, 3 * MiB)
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
    # Upload: the stack sends, the kernel reads to EOF and answers with what it got.
    data = os.urandom(BIG)
    srv = PeerServer(ns, "sink-server", KERNEL, 9000)
    try:
        t0 = time.monotonic()
        c = tsocket.create_connection((KERNEL, 9000), timeout=T, driver=host)
        c.sendall(data)
        c.shutdown(tsocket.SHUT_WR)
        reply = c.makefile("rb").readline()
        up_secs = time.monotonic() - t0
        assert c.recv(10) == b""
        c.close()
        res = srv.result()
    finally:
        srv.kill()
    assert reply.decode().split() == [str(BIG), sha(data)]
    assert res["got"] == BIG and res["got_sha"] == sha(data)
    # Download: the kernel sends and closes first.
    srv = PeerServer(ns, "source-server", KERNEL, 9001, BIG)
    try:
        t0 = time.monotonic()
        c = tsocket.create_connection((KERNEL, 9001), timeout=T, driver=host)
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
        down_secs = time.monotonic() - t0
        c.close()
        res = srv.result()
    finally:
        srv.kill()
    assert n == BIG and h.hexdigest() == res["sent_sha"]
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
    srv = PeerServer(ns, "wait-close-server", KERNEL, 9002)
    try:
        c = tsocket.create_connection((KERNEL, 9002), timeout=T, driver=host)
        c.sendall(b"s")
        assert c.recv(1) == b"s"
        conn = c.connection
        port = c.getsockname()[1]
        c.close()  # the stack closes first
        res = srv.result()
    finally:
        srv.kill()
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

NETEM = dict(loss=0.03, delay_ms=20, reorder=0.05, duplicate=0.01)


def _netem(ns: str, dev: str) -> bool:
    p = in_ns(ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", "3%", "delay", "20ms",
              "reorder", "5%", "duplicate", "1%", "limit", "10000", timeout=20)
    return p.returncode == 0


@pytest.fixture
def lossy_host(netns_name: str) -> Iterator[Host]:
    """A host whose stack->kernel direction is impaired in the driver, and whose
    kernel->stack direction is impaired by netem when the kernel has it."""
    egress = Impairment(**NETEM, seed=1)
    ingress = Impairment(**NETEM, seed=2)
    with Host(netns_name, seed=3, egress=egress) as h:
        if _netem(h.netns, h.ifname):
            h.impaired_by = "tc netem on the kernel's device (kernel->stack), driver egress (stack->kernel)"
        else:
            h.driver.ingress = ingress
            h.impaired_by = "driver ingress and egress (this kernel has no sch_netem)"
        yield h


def test_lossy_transfers_complete_byte_exact_both_ways(lossy_host: Host) -> None:
    host = lossy_host
    ns = host.netns
    before = nstat(ns)
    # kernel -> stack
    srv = tsocket.create_server(("", 7003), driver=host)
    srv.settimeout(T)
    got: dict[str, Any] = {}

    def sink() -> None:
        c, _ = srv.accept()
        c.settimeout(T)
        h, n = hashlib.sha256(), 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
        got.update(n=n, sha=h.hexdigest())
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    t0 = time.monotonic()
    res = peer(ns, "echo-client", STACK, 7003, LOSSY_IN)  # the sink sends nothing back
    in_secs = time.monotonic() - t0
    t.join(T)
    srv.close()
    assert got["n"] == LOSSY_IN and got["sha"] == res["sent_sha"]
    # stack -> kernel
    data = os.urandom(LOSSY_OUT)
    ksrv = PeerServer(ns, "sink-server", KERNEL, 9003)
    try:
        t0 = time.monotonic()
        c = tsocket.create_connection((KERNEL, 9003), timeout=T, driver=host)
        c.settimeout(T)
        c.sendall(data)
        c.shutdown(tsocket.SHUT_WR)
        reply = c.makefile("rb").readline()
        out_secs = time.monotonic() - t0
        c.close()
        kres = ksrv.result()
    finally:
        ksrv.kill()
    assert kres["got"] == LOSSY_OUT and kres["got_sha"] == sha(data)
    assert reply.decode().split() == [str(LOSSY_OUT), sha(data)]
    eg = host.driver.egress
    assert eg is not None and eg.dropped > 0 and eg.duplicated > 0 and eg.reordered > 0
    assert host.stack.mib.RetransSegs > 0
    print(f"\n[lossy, {host.impaired_by}] kernel -> stack {LOSSY_IN // MiB} MiB {mbps(LOSSY_IN, in_secs)} "
          f"({in_secs:.1f} s), stack -> kernel {LOSSY_OUT // MiB} MiB {mbps(LOSSY_OUT, out_secs)} ({out_secs:.1f} s); "
          f"egress {eg.counters()}, stack retransmitted {host.stack.mib.RetransSegs}")
    assert_kernel_clean(ns, before)


# -- a capture of an interop session, judged by tshark ------------------------------------------------------


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_pcap_of_an_interop_session_is_clean_in_tshark(netns_name: str, tmp_path: Any, offload: bool) -> None:
    path = tmp_path / "session.pcap"
    pcap = PcapWriter(str(path))
    with Host(netns_name, seed=4, pcap=pcap, offload=offload) as host:
        rec: dict[str, Any] = {}
        t = echo_server(host, 7004, rec)
        res = peer(host.netns, "echo-client", STACK, 7004, 2 * MiB)
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
