"""Servers under pressure, in the simulator: a SYN flood and TIME-WAIT at scale.

Both scenarios are what ``tcpstack bench synflood|timewait`` runs and what
tests/sim/test_pressure.py asserts on.  Virtual-time results (who connected,
after how many SYNs, how many TIME-WAIT entries) are deterministic for a
seed; wall-clock rates and memory are measured, never asserted tightly.

**SYN flood** (:func:`run_synflood`).  An attacker node injects ``syns``
SYNs from random spoofed sources in 198.19.0.0/16 (inside the RFC 2544
benchmarking range 198.18.0.0/15, owned by no node, so the SYN-ACKs are
unroutable -- the spoofed hosts never answer) back to back at ``rate_bps``
("line rate", 1 Gbit/s by default: 60-byte SYNs every 0.48 µs).  They carry
the options a Linux client sends (mss, sackOK, TS, nop, wscale).  A
legitimate client starts a connection half-way through the flood and sends
``legit_bytes``; we record whether it connected, after how many SYNs and how
long (virtual), and whether the server read exactly what it sent.

**TIME-WAIT** (:func:`run_timewait`).  A client opens ``connections`` short
connections (connect, a small request, close) to one server port, one every
``interval_us``; whoever closes first holds TIME-WAIT (the client by
default; ``close_first="server"`` is HTTP/1.0 style, the server closes after
its response).  tracemalloc measures what the TIME-WAIT entries cost, and
what idle ESTABLISHED connections cost for comparison; then 2*MSL later all
entries must be gone.  :func:`run_port_reuse` checks tcp_tw_reuse against a
narrow ip_local_port_range.
"""

from __future__ import annotations

import gc
import hashlib
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..tcp import Config, Connection, Listener, Stack, State
from ..wire.ip import build_ip_tcp
from ..wire.tcp import ACK, SYN, Opt, Segment
from .link import LinkParams
from .network import Network

CLIENT_ADDR = "198.18.0.1"
SERVER_ADDR = "198.18.0.2"
ATTACKER_ADDR = "198.18.0.66"
SERVER_PORT = 80
SPOOF_PREFIX = "198.19."  # 198.19.0.0/16: spoofed sources nobody owns
SYN_BYTES = 60  # IPv4 20 + TCP 20 + options 20 (mss, sackOK, TS, nop, wscale)


# ============================================================================ helpers
class _TimedEndpoint:
    """A stack as a simulator endpoint, timing the wall-clock cost of ``receive``."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.receive_s = 0.0
        self.received = 0
        self.poll = stack.poll
        self.next_deadline = stack.next_deadline
        self.transmit = stack.transmit

    def receive(self, packet: bytes, now: int) -> None:
        t = time.perf_counter()
        self.stack.receive(packet, now)
        self.receive_s += time.perf_counter() - t
        self.received += 1


def _defer(net: Network, fn: Callable[[], None]) -> Callable[[Any], None]:
    """A waker that only schedules ``fn`` (wakers must not call into the engine)."""
    pending = [False]

    def run() -> None:
        pending[0] = False
        fn()

    def waker(_obj: Any) -> None:
        if not pending[0]:
            pending[0] = True
            net.call_later(0, run)

    return waker


def _mem() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


_ENGINE = (tracemalloc.Filter(True, "*/tcpstack/tcp/*"), tracemalloc.Filter(True, "*/tcpstack/wire/*"))


def _engine_mem() -> int:
    """Bytes the engine allocated and still holds (TCBs, their buffers, the
    stack's tables and timer heap, parsed ints they keep): tracemalloc's live
    blocks whose allocating frame is in tcp/ or wire/, so the simulator's and
    the test application's own objects do not count."""
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(_ENGINE)
    return sum(st.size for st in snap.statistics("filename"))


def _config(config: Config | None, overrides: dict[str, Any] | None = None) -> Config:
    cfg = config.copy() if config is not None else Config()
    for k, v in (overrides or {}).items():
        cfg.set(k, v)
    return cfg


# ============================================================================ SYN flood
@dataclass
class SynFloodResult:
    syns: int  # spoofed SYNs injected
    syncookies: int  # the server's tcp_syncookies
    backlog: int
    syn_queue_limit: int  # the most requests the listener may hold
    syn_queue_max: int  # the most it held
    syncookies_sent: int
    syncookies_recv: int
    syncookies_failed: int
    listen_drops: int
    legit_connected: bool
    legit_connect_ms: float | None  # virtual: connect() to ESTABLISHED at the client
    legit_syn_transmissions: int  # SYNs the legitimate client sent (1 = no retransmission)
    legit_bytes: int
    legit_bytes_ok: bool  # the server read exactly what the client sent (sha256)
    legit_error: str | None
    flood_ms: float  # virtual duration of the flood
    sim_s: float  # virtual time simulated
    wall_s: float  # wall-clock time of the whole run
    server_receive_s: float  # wall-clock time the server spent in receive()
    syns_per_s: float  # spoofed SYNs the server handled per wall-clock second of receive()
    peak_bytes: int | None  # tracemalloc peak above the set-up baseline (None: not measured)
    server_requests_end: int
    server_mib: dict[str, int] = field(repr=False, default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("server_mib")
        return d


def _flood_syn(rng: random.Random) -> bytes:
    src = f"{SPOOF_PREFIX}{rng.randrange(256)}.{rng.randrange(1, 255)}"
    opts = (Opt(2, 1460), Opt(4, None), Opt(8, (rng.getrandbits(32), 0)), Opt(1, None), Opt(3, 7))
    seg = Segment(rng.randrange(1024, 65536), SERVER_PORT, rng.getrandbits(32), 0, SYN, 64240, 0, opts, b"")
    return build_ip_tcp(src, SERVER_ADDR, seg)


def run_synflood(
    syns: int = 100_000,
    *,
    config: Config | None = None,
    backlog: int = 128,
    rate_bps: int = 1_000_000_000,
    delay_us: int = 1_000,
    legit_start_us: int | None = None,
    legit_bytes: int = 100_000,
    seed: int = 1,
    measure_memory: bool = False,
    max_sim_s: float = 200.0,
    max_events: int = 20_000_000,
) -> SynFloodResult:
    """Flood a listener (backlog ``backlog``) with ``syns`` spoofed SYNs while a
    legitimate client connects and sends ``legit_bytes``.  ``config`` is the
    server's (the client keeps the defaults)."""
    if syns < 0 or legit_bytes < 0:
        raise ValueError("syns and legit_bytes must not be negative")
    cfg = _config(config)
    if measure_memory:
        tracemalloc.start()
    wall0 = time.perf_counter()
    net = Network(seed=seed)
    server = Stack([SERVER_ADDR], cfg, seed=seed * 2 + 2, name="server")
    client = Stack([CLIENT_ADDR], Config(), seed=seed * 2 + 1, name="client")
    ep = _TimedEndpoint(server)
    net.add_host("server", ep, [SERVER_ADDR])
    net.add_host("client", client, [CLIENT_ADDR])
    attacker = net.add_injector("attacker", [ATTACKER_ADDR])
    link = LinkParams(delay_us=delay_us)
    net.connect("attacker", "server", link)
    net.connect("client", "server", link)

    listener: Listener = server.listen(SERVER_PORT, 0, backlog=backlog)
    rng = random.Random(seed ^ 0xF100D)
    # Back to back at line rate: SYN i leaves at i * 480 ns (1 Gbit/s).
    ns_per_syn = SYN_BYTES * 8 * 1_000_000_000 // rate_bps
    flood_us = syns * ns_per_syn // 1000
    sent = [0]
    batch_us = 100

    def flood() -> None:
        now = net.now
        horizon = now + batch_us
        i = sent[0]
        while i < syns:
            at = i * ns_per_syn // 1000
            if at >= horizon:
                break
            attacker.send(_flood_syn(rng), at=max(at, now))
            i += 1
        sent[0] = i
        if i < syns:
            net.call_at(horizon, flood)

    if syns:
        net.call_at(0, flood)

    # The legitimate client and the server application.
    data = random.Random(seed).randbytes(legit_bytes)
    rx = hashlib.sha256()
    st: dict[str, Any] = {"t0": None, "t_est": None, "sent": 0, "rcvd": 0, "conn": None, "sconn": None, "syns": 0}

    def count_syn(_t: int, lnk: Any, packet: bytes, what: str) -> None:
        # IPv4 without options: TCP flags at byte 33.
        if what == "send" and lnk.src == "client" and len(packet) > 33 and packet[33] & 0x12 == SYN:
            st["syns"] += 1

    net.on_packet(count_syn)

    def client_step() -> None:
        conn: Connection = st["conn"]
        now = net.now
        if conn.state is State.ESTABLISHED and st["t_est"] is None:
            st["t_est"] = now
        if conn.state is State.ESTABLISHED and st["sent"] < legit_bytes:
            st["sent"] += conn.send(memoryview(data)[st["sent"]:], now)
            if st["sent"] == legit_bytes:
                conn.shutdown(now)

    def server_step() -> None:
        now = net.now
        while True:
            c = listener.accept()
            if c is None:
                break
            if c.remote_addr == CLIENT_ADDR:
                st["sconn"] = c
                c.waker = _defer(net, server_step)
        sc: Connection | None = st["sconn"]
        if sc is None:
            return
        while True:
            chunk = sc.recv(1 << 20, now)
            if not chunk:
                break
            rx.update(chunk)
            st["rcvd"] += len(chunk)

    listener.waker = _defer(net, server_step)
    start = legit_start_us if legit_start_us is not None else flood_us // 2

    def legit_connect() -> None:
        st["t0"] = net.now
        conn = client.connect(SERVER_ADDR, SERVER_PORT, net.now)
        conn.waker = _defer(net, client_step)
        st["conn"] = conn

    net.call_at(start, legit_connect)

    flood_end = flood_us + delay_us + 1  # every spoofed SYN has reached the server

    def done() -> bool:
        conn = st["conn"]
        if conn is None or sent[0] < syns or net.now < flood_end:
            return False
        return st["rcvd"] >= legit_bytes or conn.state is State.CLOSED

    baseline = 0
    if measure_memory:
        baseline = _mem()
        tracemalloc.reset_peak()
    net.run(until=int(max_sim_s * 1_000_000), stop_when=done, max_events=max_events)
    peak = None
    if measure_memory:
        peak = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()
    wall = time.perf_counter() - wall0
    conn = st["conn"]
    connected = st["t_est"] is not None
    mib = server.mib
    return SynFloodResult(
        syns=syns,
        syncookies=cfg.tcp_syncookies,
        backlog=listener.backlog,
        syn_queue_limit=listener.syn_queue_limit,
        syn_queue_max=listener.syn_queue_max,
        syncookies_sent=mib.SyncookiesSent,
        syncookies_recv=mib.SyncookiesRecv,
        syncookies_failed=mib.SyncookiesFailed,
        listen_drops=mib.ListenDrops,
        legit_connected=connected,
        legit_connect_ms=round((st["t_est"] - st["t0"]) / 1000, 3) if connected else None,
        legit_syn_transmissions=st["syns"],
        legit_bytes=legit_bytes,
        legit_bytes_ok=st["rcvd"] == legit_bytes and rx.hexdigest() == hashlib.sha256(data).hexdigest(),
        legit_error=str(conn.error) if conn is not None and conn.error is not None else None,
        flood_ms=round(flood_us / 1000, 3),
        sim_s=round(net.now / 1e6, 6),
        wall_s=round(wall, 3),
        server_receive_s=round(ep.receive_s, 3),
        syns_per_s=round(syns / ep.receive_s) if ep.receive_s else 0.0,
        peak_bytes=peak,
        server_requests_end=len(listener.requests),
        server_mib=mib.as_dict(),
    )


# ============================================================================ TIME-WAIT
@dataclass
class TimeWaitResult:
    connections: int
    close_first: str
    open_connections: int  # TCBs left on either side once the exchanges are over (should be 0)
    timewait_entries: int  # TIME-WAIT entries held by the side that closed first, at the peak
    other_side_timewait: int  # ... and by the other side (should be 0)
    bytes_per_timewait: int | None  # the table's memory() per entry (sys.getsizeof of what it owns)
    bytes_per_timewait_traced: int | None  # tracemalloc over the whole run, per entry (None: not traced)
    record_bytes: int  # sys.getsizeof of one record + its 4-tuple key + the port int in it
    established_sample: int
    bytes_per_established: int | None  # tracemalloc: per idle ESTABLISHED endpoint (one TCB)
    timewait_after_2msl: int  # entries left 2*MSL after the last one was made
    tw_counter: int  # TcpExtTW of the closing side: entries that ended by the timer
    sim_s: float
    wall_s: float

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _pair(seed: int, config: Config, link: LinkParams | None = None) -> tuple[Network, Stack, Stack]:
    net = Network(seed=seed)
    client = Stack([CLIENT_ADDR], config.copy(), seed=seed * 2 + 1, name="client")
    server = Stack([SERVER_ADDR], config.copy(), seed=seed * 2 + 2, name="server")
    net.add_host("client", client, [CLIENT_ADDR])
    net.add_host("server", server, [SERVER_ADDR])
    net.connect("client", "server", link or LinkParams(delay_us=250))
    return net, client, server


class _ShortConnections:
    """Applications on both hosts: the client opens a connection, sends a
    request and (client-close) closes; the server reads the request and
    either closes on EOF (client-close) or answers and closes first
    (``close_first="server"``, HTTP/1.0); the client then closes on EOF."""

    def __init__(self, net: Network, client: Stack, server: Stack, close_first: str,
                 request: bytes = b"GET / HTTP/1.0\r\n\r\n", response: bytes = b"HTTP/1.0 200 OK\r\n\r\nhello") -> None:
        if close_first not in ("client", "server"):
            raise ValueError(f"close_first must be 'client' or 'server', got {close_first!r}")
        self.net, self.client, self.server = net, client, server
        self.close_first = close_first
        self.request, self.response = request, response
        self.listener = server.listen(SERVER_PORT, net.now, backlog=4096)
        self.listener.waker = _defer(net, self._accept)
        self.opened = 0
        self.errors: list[OSError] = []
        self.hold: list[Connection] | None = None  # set: keep client connections (idle) instead of closing

    # -- client side
    def open(self, local_port: int | None = None) -> Connection | None:
        try:
            conn = self.client.connect(SERVER_ADDR, SERVER_PORT, self.net.now, local_port=local_port)
        except OSError as exc:
            self.errors.append(exc)
            return None
        self.opened += 1
        sent = [False]
        conn.waker = _defer(self.net, lambda: self._client_step(conn, sent))
        if self.hold is not None:
            self.hold.append(conn)
        return conn

    def _client_step(self, conn: Connection, sent: list[bool]) -> None:
        now = self.net.now
        if conn.user_closed:
            return
        if not sent[0] and conn.state in (State.ESTABLISHED, State.CLOSE_WAIT):
            sent[0] = True
            conn.send(self.request, now)
            if self.close_first == "client" and self.hold is None:
                conn.close(now)  # FIN right after the request: TIME-WAIT here
                return
        while True:
            got = conn.recv(65536, now)
            if got is None:
                return
            if got == b"":
                conn.close(now)  # the server closed first: close ours (LAST-ACK)
                return

    # -- server side
    def _accept(self) -> None:
        while True:
            sc = self.listener.accept()
            if sc is None:
                return
            self._serve(sc)

    def _serve(self, sc: Connection) -> None:
        sc.waker = _defer(self.net, lambda: self._server_step(sc))
        self._server_step(sc)

    def _server_step(self, sc: Connection) -> None:
        now = self.net.now
        if sc.user_closed:
            return
        while True:
            got = sc.recv(65536, now)
            if got is None:
                return
            if got == b"":
                sc.close(now)  # the client closed first
                return
            if self.close_first == "server" and self.hold is None:
                sc.send(self.response, now)
                sc.close(now)  # HTTP/1.0: the server closes first -> TIME-WAIT here
                return


def run_timewait(
    connections: int = 20_000,
    *,
    config: Config | None = None,
    close_first: str = "client",
    interval_us: int = 50,
    established_sample: int = 1_000,
    trace_memory: bool = False,
    seed: int = 1,
) -> TimeWaitResult:
    """``connections`` short connections; the side that closes first ends up
    holding them all in TIME-WAIT.  Measures bytes per entry (and per idle
    ESTABLISHED endpoint), then checks that 2*MSL later none is left.

    Bytes per TIME-WAIT entry come from the table's own accounting
    (``TimeWaitTable.memory()``); ``trace_memory`` also measures them with
    tracemalloc over the whole run (everything the closing host keeps, about
    three times slower).  ESTABLISHED connections are always measured with
    tracemalloc, started only for that phase."""
    cfg = _config(config)
    lo, hi = cfg.ip_local_port_range
    if connections > hi - lo + 1 and close_first == "client":
        raise ValueError(f"{connections} connections need more ephemeral ports than ip_local_port_range {lo}-{hi}")
    wall0 = time.perf_counter()
    if trace_memory:
        tracemalloc.start()
    net, client, server = _pair(seed, cfg)
    apps = _ShortConnections(net, client, server, close_first)
    closer, other = (client, server) if close_first == "client" else (server, client)
    before = _mem() if trace_memory else 0
    for i in range(connections):
        net.call_at(i * interval_us, apps.open)
    last_open = max(connections - 1, 0) * interval_us
    # Let every connection finish and stale timers (delayed ACK, RTO) drain.
    net.run(until=last_open + 3_000_000, max_events=50 * connections + 100_000)
    entries = len(closer.timewait)
    other_entries = len(other.timewait)
    open_conns = len(closer.conns) + len(other.conns)
    per_tw = round(closer._tw.memory() / entries) if entries else None
    per_tw_traced = None
    if trace_memory:
        if entries:
            per_tw_traced = round((_mem() - before) / entries)
        tracemalloc.stop()
    record_bytes = 0
    if entries:
        key, rec = next(iter(closer.timewait.items()))
        port = key[1] if close_first == "client" else key[3]
        record_bytes = sys.getsizeof(rec) + sys.getsizeof(key) + sys.getsizeof(port)

    # 2*MSL after the last entry was made, none is left.
    net.run(until=net.now + cfg.tcp_timewait_len * 1_000_000 + 1_000_000, max_events=10 * connections + 100_000)
    left = len(closer.timewait)
    tw_counter = closer.mib.TW

    # For comparison: idle ESTABLISHED connections (both ends hold a TCB).
    per_est = None
    if established_sample:
        apps.hold = []
        tracemalloc.start()
        try:
            base = _engine_mem()
            for i in range(established_sample):
                net.call_at(net.now + i * interval_us, apps.open)
            net.run(until=net.now + established_sample * interval_us + 3_000_000,
                    max_events=50 * established_sample + 100_000)
            est = sum(1 for c in apps.hold if c.state is State.ESTABLISHED)
            if est:
                per_est = round((_engine_mem() - base) / (2 * est))
        finally:
            tracemalloc.stop()
        apps.hold = None
    return TimeWaitResult(
        connections=connections,
        close_first=close_first,
        open_connections=open_conns,
        timewait_entries=entries,
        other_side_timewait=other_entries,
        bytes_per_timewait=per_tw,
        bytes_per_timewait_traced=per_tw_traced,
        record_bytes=record_bytes,
        established_sample=established_sample if per_est is not None else 0,
        bytes_per_established=per_est,
        timewait_after_2msl=left,
        tw_counter=tw_counter,
        sim_s=round(net.now / 1e6, 6),
        wall_s=round(time.perf_counter() - wall0, 3),
    )


@dataclass
class PortReuseResult:
    ports: int  # the size of the narrowed ip_local_port_range
    tcp_tw_reuse: int
    timewait_entries: int  # after filling every port
    connected: bool  # the extra connection got a port and completed its exchange
    reused_port: int | None  # the TIME-WAIT port it took over
    errno: int | None  # connect()'s error (EADDRNOTAVAIL when the range is exhausted)
    tw_recycled: int  # TcpExtTWRecycled

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def run_port_reuse(
    ports: int = 64, *, tcp_tw_reuse: int = 1, timestamps: int = 1, wait_s: float = 2.0, seed: int = 1,
    config: Config | None = None,
) -> PortReuseResult:
    """Fill a narrow ip_local_port_range with client-side TIME-WAIT entries,
    wait ``wait_s``, then open one more connection to the same server."""
    lo = 50_000
    cfg = _config(config, {"ip_local_port_range": f"{lo} {lo + ports - 1}",
                           "tcp_tw_reuse": tcp_tw_reuse, "tcp_timestamps": timestamps})
    net, client, server = _pair(seed, cfg)
    apps = _ShortConnections(net, client, server, "client")
    for i in range(ports):
        net.call_at(i * 200, apps.open)
    net.run(until=ports * 200 + int(wait_s * 1_000_000), max_events=100 * ports + 100_000)
    entries = len(client.timewait)
    before = set(client.timewait)
    extra: list[Connection | None] = []

    def one_more() -> None:
        extra.append(apps.open())

    net.call_at(net.now, one_more)
    net.run(until=net.now + 3_000_000, max_events=100_000)
    conn = extra[0]
    err = apps.errors[-1].errno if apps.errors else None
    reused = None
    if conn is not None and (conn.local_addr, conn.local_port, conn.remote_addr, conn.remote_port) in before:
        reused = conn.local_port
    ok = conn is not None and conn.state in (State.TIME_WAIT, State.CLOSED) and conn.error is None and \
        conn.bytes_acked >= len(apps.request)
    return PortReuseResult(
        ports=ports,
        tcp_tw_reuse=tcp_tw_reuse,
        timewait_entries=entries,
        connected=ok,
        reused_port=reused,
        errno=err,
        tw_recycled=client.mib.TWRecycled,
    )


# ============================================================================ forged cookies
@dataclass
class ForgedAcksResult:
    tries: int
    accepted: int  # forged ACKs that made a connection (SyncookiesRecv)
    failed: int  # SyncookiesFailed: checked and refused
    rsts: int  # RSTs the listener answered with
    wall_s: float  # wall-clock time of the stack's receive() for all of them
    per_s: float

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def run_forged_acks(tries: int = 1_000_000, *, seed: int = 1, batch: int = 10_000) -> ForgedAcksResult:
    """Blind cookie guessing: ``tries`` ACKs with random sequence and
    acknowledgment numbers from random spoofed sources, at a listener that has
    just sent a cookie (so every ACK is checked as one).  None should pass:
    the odds are about 2/256 * 4/2**24 per try."""
    cfg = Config()
    cfg.set("tcp_syncookies", 2)
    server = Stack([SERVER_ADDR], cfg, seed=seed, name="server")
    listener = server.listen(SERVER_PORT, 0)
    now = 1_000_000
    server.receive(build_ip_tcp(CLIENT_ADDR, SERVER_ADDR, Segment(40000, SERVER_PORT, 1, 0, SYN, 65535, 0,
                                                                   (Opt(2, 1460),), b"")), now)
    server.transmit()
    rng = random.Random(seed ^ 0xC00C1E)
    spent = 0.0
    rsts = 0
    done = 0
    while done < tries:
        n = min(batch, tries - done)
        packets = []
        for _ in range(n):
            src = f"{SPOOF_PREFIX}{rng.randrange(256)}.{rng.randrange(1, 255)}"
            seg = Segment(rng.randrange(1024, 65536), SERVER_PORT, rng.getrandbits(32), rng.getrandbits(32),
                          ACK, 502, 0, (), b"")
            packets.append(build_ip_tcp(src, SERVER_ADDR, seg))
        receive = server.receive
        t = time.perf_counter()
        for p in packets:
            receive(p, now)
        spent += time.perf_counter() - t
        rsts += len(server.transmit())
        done += n
    mib = server.mib
    return ForgedAcksResult(
        tries=tries,
        accepted=mib.SyncookiesRecv + len(listener.accept_queue),
        failed=mib.SyncookiesFailed,
        rsts=rsts,
        wall_s=round(spent, 3),
        per_s=round(tries / spent) if spent else 0.0,
    )
