"""A whole conversation in the simulator: connect, transfer, close, TIME-WAIT.

This is what ``tcpstack demo`` runs and what the simulator tests assert on:
a client on 198.18.0.1 sends N deterministic pseudo-random bytes to a server
on 198.18.0.2 over a link with the given impairments, then the connection
closes in the chosen order.  Applications are plain callbacks in virtual
time; a connection's waker only schedules them (never runs user code inside
segment processing).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..tcp import Config, Connection, Event, Listener, Stack, State
from ..wire.errors import MalformedPacket
from ..wire.ip import parse_ip_tcp
from .link import LinkParams
from .network import Network

CLIENT_ADDR = "198.18.0.1"
SERVER_ADDR = "198.18.0.2"
SERVER_PORT = 80
CLOSE_MODES = ("client", "server", "both")


@dataclass
class TransferResult:
    bytes: int
    sent_sha256: str
    received_sha256: str
    received_bytes: int
    client_states: list[str]
    server_states: list[str]
    segments: int
    retransmits: int
    sim_time_s: float
    completed: bool
    client_info: dict[str, Any]
    server_info: dict[str, Any]
    client_mib: dict[str, int]
    server_mib: dict[str, int]
    goodput_bps: float
    lost_data_bytes: int  # client->server payload bytes the network dropped (loss or queue)
    run_wall_s: float | None = None  # wall-clock seconds of the simulation run (given a clock)
    link: dict[str, int] = field(default_factory=dict)  # the client->server link's counters
    events: list[tuple[int, Event]] = field(repr=False, default_factory=list)
    lost: set[tuple[int, int, int, int, int]] = field(repr=False, default_factory=set)

    def summary(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "sent_sha256": self.sent_sha256,
            "received_sha256": self.received_sha256,
            "received_bytes": self.received_bytes,
            "completed": self.completed,
            "client_states": self.client_states,
            "server_states": self.server_states,
            "segments": self.segments,
            "retransmits": self.retransmits,
            "sim_time_s": self.sim_time_s,
            "goodput_bps": self.goodput_bps,
            "lost_data_bytes": self.lost_data_bytes,
            "client_tcp_info": self.client_info,
            "server_tcp_info": self.server_info,
            "client_mib": self.client_mib,
            "server_mib": self.server_mib,
        }


def payload(nbytes: int, seed: int) -> bytes:
    """The deterministic bytes the client sends (seeded, so reruns match)."""
    return random.Random(seed ^ 0x5EED).randbytes(nbytes)


def run_transfer(
    nbytes: int = 10_000,
    *,
    seed: int = 1,
    link: LinkParams | None = None,
    close_first: str = "client",
    config: Config | None = None,
    record: bool = True,
    pcap: str | None = None,
    max_sim_s: float = 3600.0,
    max_events: int = 50_000_000,
    checksum_offload: bool = False,
    clock: Callable[[], float] | None = None,
) -> TransferResult:
    if close_first not in CLOSE_MODES:
        raise ValueError(f"close_first must be one of {', '.join(CLOSE_MODES)}, got {close_first!r}")
    link = link or LinkParams(delay_us=10_000)
    cfg = config or Config()
    net = Network(seed=seed)
    if checksum_offload and link.corrupt:
        raise ValueError("checksum offload trusts the link: it cannot be combined with corruption")
    client = Stack([CLIENT_ADDR], cfg.copy(), seed=seed * 2 + 1, name="client", checksum_offload=checksum_offload)
    server = Stack([SERVER_ADDR], cfg.copy(), seed=seed * 2 + 2, name="server", checksum_offload=checksum_offload)
    net.add_host("client", client, [CLIENT_ADDR])
    net.add_host("server", server, [SERVER_ADDR])
    net.connect("client", "server", link)

    events: list[tuple[int, Event]] = []
    if record:
        client.observers.append(lambda e: events.append((0, e)))
        server.observers.append(lambda e: events.append((1, e)))
    lost: set[tuple[int, int, int, int, int]] = set()
    lost_data = [0]

    def on_packet(t: int, lnk: Any, packet: bytes, what: str) -> None:
        if what == "drop-loss" or what == "drop-queue":
            try:
                src, _dst, s = parse_ip_tcp(packet)
            except MalformedPacket:
                return
            side = 0 if src == CLIENT_ADDR else 1
            if side == 0:
                lost_data[0] += len(s.payload)
            if record:
                lost.add((side, s.seq, s.ack, s.flags, len(s.payload)))

    net.on_packet(on_packet)
    writer = None
    if pcap:
        writer = net.pcap(pcap, node="client")

    data = payload(nbytes, seed)
    sent_hash = hashlib.sha256(data).hexdigest()
    rx_hash = hashlib.sha256()
    st: dict[str, Any] = {"sent": 0, "rcvd": 0, "closing": False, "conn": None, "t_start": None, "t_end": None}

    listener: Listener = server.listen(SERVER_PORT, net.now)
    conn: Connection = client.connect(SERVER_ADDR, SERVER_PORT, net.now)

    scheduled: set[str] = set()

    def defer(name: str, fn: Any) -> Any:
        def waker(_obj: Any) -> None:
            if name not in scheduled:
                scheduled.add(name)
                net.call_later(0, lambda: (scheduled.discard(name), fn()))
        return waker

    def both_ready() -> None:
        if close_first == "both" and not st["closing"] and st["rcvd"] == nbytes and len(conn.sendbuf) == 0 and st["sent"] == nbytes:
            st["closing"] = True
            # Both applications close at the same instant: the FINs cross (RFC 9293 Figure 13).
            def close_both() -> None:
                conn.close(net.now)
                st["conn"].close(net.now)
            net.call_later(1000, close_both)

    def client_step() -> None:
        now = net.now
        if conn.state is State.CLOSED:
            return
        if st["sent"] < nbytes and conn.state in (State.ESTABLISHED, State.CLOSE_WAIT):
            if st["t_start"] is None:
                st["t_start"] = now
            n = conn.send(memoryview(data)[st["sent"] : st["sent"] + (1 << 20)], now)
            st["sent"] += n
        if st["sent"] == nbytes and close_first == "client" and not st["closing"]:
            st["closing"] = True
            conn.close(now)
        got = conn.recv(65536, now) if conn.state is not State.CLOSED and not conn.user_closed else None
        if got == b"" and not conn.user_closed:
            conn.close(now)  # the server closed first: close our side
        both_ready()

    def server_step() -> None:
        now = net.now
        sc: Connection | None = st["conn"]
        if sc is None:
            sc = listener.accept()
            if sc is None:
                return
            st["conn"] = sc
            sc.waker = defer("server", server_step)
        while not sc.user_closed:
            chunk = sc.recv(1 << 20, now)
            if not chunk:
                if chunk == b"" and close_first != "both" and not sc.user_closed:
                    sc.close(now)  # EOF: the client closed first; close ours (LAST-ACK)
                break
            rx_hash.update(chunk)
            st["rcvd"] += len(chunk)
            if st["rcvd"] == nbytes:
                st["t_end"] = now
        if st["rcvd"] == nbytes and close_first == "server" and not st["closing"]:
            st["closing"] = True
            sc.close(now)
        both_ready()

    conn.waker = defer("client", client_step)
    listener.waker = defer("listener", server_step)

    def finished() -> bool:
        sc = st["conn"]
        return conn.state is State.CLOSED and sc is not None and sc.state is State.CLOSED

    # ``clock`` (a wall clock, for benchmarks): how long the simulation itself
    # ran, apart from making and hashing the payload up front.
    t0 = clock() if clock is not None else 0.0
    net.run(until=int(max_sim_s * 1_000_000), stop_when=finished, max_events=max_events)
    run_wall_s = clock() - t0 if clock is not None else None
    if writer is not None:
        writer.close()
    sc = st["conn"]
    now = net.now
    sim_s = now / 1e6
    return TransferResult(
        bytes=nbytes,
        sent_sha256=sent_hash,
        received_sha256=rx_hash.hexdigest(),
        received_bytes=st["rcvd"],
        client_states=[s.value for s in conn.history],
        server_states=[s.value for s in listener.history] + ([s.value for s in sc.history] if sc else []),
        segments=client.mib.OutSegs + server.mib.OutSegs,
        retransmits=client.mib.RetransSegs + server.mib.RetransSegs,
        sim_time_s=round(sim_s, 6),
        completed=finished(),
        client_info=conn.info(now),
        server_info=sc.info(now) if sc else {},
        client_mib=client.mib.as_dict(),
        server_mib=server.mib.as_dict(),
        goodput_bps=_goodput(st),
        lost_data_bytes=lost_data[0],
        run_wall_s=run_wall_s,
        link=net.link("client", "server").counters(),
        events=events,
        lost=lost,
    )


def _goodput(st: dict[str, Any]) -> float:
    """Application bytes per second, from the first write (connection established)
    to the moment the server application had the last byte, in virtual time."""
    if st["t_start"] is None or st["t_end"] is None:
        return 0.0
    return round(st["rcvd"] * 8 / max((st["t_end"] - st["t_start"]) / 1e6, 1e-9), 1)
