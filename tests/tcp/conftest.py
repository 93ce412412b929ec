"""Helpers for engine tests: the test plays the remote host, segment by segment.

    out = peer.send(t, seg(...))      # feed one segment, get what the stack emitted
    assert out == [seg(...)]          # exact segments, and nothing else
"""

from __future__ import annotations

import pytest

from tcpstack.tcp import Config, FixedIsn, Stack, State
from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, Opt, Segment

LOCAL = "198.18.0.2"
REMOTE = "198.18.0.1"
LPORT = 80
RPORT = 49152
ISS = 1000  # our ISN (fixed)
IRS = 5000  # the peer's ISN
C = ISS + 1  # our first data sequence number
P = IRS + 1  # the peer's first data sequence number
MSS = 1460

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "URG", "Opt", "Segment", "State"]


def plain_config(**overrides: object) -> Config:
    """No window scaling, timestamps or SACK: segments carry only MSS on SYNs."""
    cfg = Config(tcp_window_scaling=0, tcp_timestamps=0, tcp_sack=0)
    for k, v in overrides.items():
        cfg.set(k, v)
    return cfg


def make_stack(config: Config | None = None, iss: int = ISS, addr: str = LOCAL, seed: int = 1) -> Stack:
    """A stack at ``addr`` whose ISN is ``iss`` (timestamps, if on, start at 0)."""
    return Stack([addr], config or plain_config(), isn=FixedIsn(iss), seed=seed, ts_offset=lambda key: 0)


class Peer:
    """The remote end, driven by hand."""

    def __init__(self, stack: Stack, addr: str = REMOTE) -> None:
        self.stack = stack
        self.addr = addr

    def send(self, now: int, segment: Segment) -> list[Segment]:
        self.stack.receive(build_ip_tcp(self.addr, LOCAL, segment), now)
        return self.recv()

    def send_ip(self, now: int, segment: Segment, tos: int = 0) -> list[bytes]:
        """Feed one segment in a packet with TOS octet ``tos``; the whole IP packets
        the stack emitted (to read their TOS or TTL)."""
        self.stack.receive(build_ip_tcp(self.addr, LOCAL, segment, tos=tos), now)
        return self.stack.transmit()

    def recv(self) -> list[Segment]:
        out = []
        for pkt in self.stack.transmit():
            src, dst, s = parse_ip_tcp(pkt)
            assert (src, dst) == (LOCAL, self.addr)
            out.append(s)
        return out

    def poll(self, now: int) -> list[Segment]:
        self.stack.poll(now)
        return self.recv()


def seg(seq: int, ack: int = 0, flags: int = ACK, win: int = 65535, payload: bytes = b"",
        opts: tuple[Opt, ...] = (), sport: int = RPORT, dport: int = LPORT, urg: int = 0) -> Segment:
    """A segment from the peer (ports default to peer -> us)."""
    return Segment(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, win, urg, opts, payload)


def out(seq: int, ack: int = 0, flags: int = ACK, win: int = 65535, payload: bytes = b"",
        opts: tuple[Opt, ...] = (), sport: int = LPORT, dport: int = RPORT) -> Segment:
    """A segment we expect from the stack (ports default to us -> peer)."""
    return Segment(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, win, 0, opts, payload)


MSS_OPT = (Opt(2, MSS),)
SACK_PERM = Opt(4, None)


@pytest.fixture
def stack() -> Stack:
    return make_stack()


@pytest.fixture
def peer(stack: Stack) -> Peer:
    return Peer(stack)


def established_server(stack: Stack, peer: Peer, now: int = 0, opts: tuple[Opt, ...] = MSS_OPT,
                       synack_opts: tuple[Opt, ...] = MSS_OPT, rtt: int = 1000):
    """A passive connection in ESTABLISHED: LISTEN, SYN in (with ``opts``), SYN-ACK out
    (with ``synack_opts``), ACK in ``rtt`` later."""
    lst = stack.listen(LPORT, now)
    r = peer.send(now, seg(IRS, 0, SYN, 65535, opts=opts))
    assert r == [out(ISS, IRS + 1, SYN | ACK, 65535, opts=synack_opts)]
    assert peer.send(now + rtt, seg(IRS + 1, ISS + 1, ACK)) == []
    conn = lst.accept()
    assert conn is not None and conn.state is State.ESTABLISHED
    return lst, conn


def established_client(stack: Stack, peer: Peer, now: int = 0, win: int = 65535):
    """An active connection in ESTABLISHED (``win``: the window we advertise)."""
    conn = stack.connect(REMOTE, RPORT, now, local_port=LPORT)
    assert peer.recv() == [out(ISS, 0, SYN, win, opts=MSS_OPT)]
    r = peer.send(now + 1000, seg(IRS, ISS + 1, SYN | ACK, 65535, opts=MSS_OPT))
    assert r == [out(ISS + 1, IRS + 1, ACK, win)]
    assert conn.state is State.ESTABLISHED
    return conn
