"""TCP connections and both ends' states, inferred from a capture.

A capture holds segments, not states.  An observer on the wire can still
follow RFC 9293's state machine (§3.3.2, Figure 5) for *both* ends, because
every transition of an established conversation is announced by a segment:

=================================  ==================================================
segment seen                       inference
=================================  ==================================================
SYN from A                         A: CLOSED -> SYN-SENT (active OPEN)
SYN,ACK from B                     B: LISTEN -> SYN-RECEIVED (it got the SYN);
                                   A: SYN-SENT -> ESTABLISHED, if it acknowledges
                                   A's SYN
ACK of B's SYN from A              B: SYN-RECEIVED -> ESTABLISHED
first FIN from A                   A: ESTABLISHED -> FIN-WAIT-1, CLOSE-WAIT -> LAST-ACK
ACK of A's FIN from B              B (it got the FIN): ESTABLISHED -> CLOSE-WAIT,
                                   FIN-WAIT-1 -> CLOSING, FIN-WAIT-2 -> TIME-WAIT;
                                   then A: FIN-WAIT-1 -> FIN-WAIT-2, CLOSING ->
                                   TIME-WAIT, LAST-ACK -> CLOSED
RST from A                         A: CLOSED; B: CLOSED if the RST is acceptable
                                   (SYN-RECEIVED of a passive open: back to LISTEN)
=================================  ==================================================

A transition an end makes on *receiving* is inferred from the first segment
that proves it: its own ACK of the peer's FIN proves it received the FIN
("rcv FIN / snd ACK" in RFC 9293's Figure 5), and is not assumed from the
FIN alone, which may have been lost after the capture point.  The sender's
transitions come first within one segment, then the receiver's in
§3.10.7.4's order (SYN, then ACK).  So a FIN,ACK that acknowledges the
closer's FIN shows the closer FIN-WAIT-1 -> FIN-WAIT-2, and its own ACK of
that FIN then TIME-WAIT, the path RFC 9293 (§3.10.7.4, fifth and eighth
steps) and Linux both take.

What an observer cannot see, and what is assumed instead:

- A server's LISTEN is inferred when it answers a SYN with SYN,ACK; if it
  answers with RST it had no listener and its only state is CLOSED.
- A capture that starts mid-connection starts both ends at ESTABLISHED.
- TIME-WAIT's end (2 MSL later) sends nothing, so it is the last state shown.
- Segments are assumed to reach the other end.  Times are capture times: a
  transition at the far end really happened one one-way delay later.

Which end is the client: the sender of the SYN; without one, the receiver of
the SYN,ACK; without either (mid-connection), the end with the higher port
(ephemeral ports are high), the first sender on a tie.

Connections are keyed by the 4-tuple; a new SYN (not a retransmission of the
current connection's SYN) on a tuple starts a new connection, so port reuse
after TIME-WAIT shows as two connections.

Two capture points: if the same packet (identical TCP header and the same
non-zero IPv4 identification) is seen twice within a second -- a capture
merged from both ends, or one taken on both sides of a router -- the copies
are one segment with a send and a receive time.  Once such copies show the
capture was taken at two points, packets without an identification (IPv6,
ID 0) are matched by their TCP timestamp too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from ..pcap import read_packets
from ..tcp.seq import add, ge, in_window
from ..tcp.state import State
from ..wire.errors import MalformedPacket
from ..wire.ip import parse_ip_tcp
from ..wire.tcp import ACK, FIN, RST, SYN, Segment, format_options
from . import expert as _expert
from .expert import Expert
from .ladder import LEFT, RIGHT, Row, segment_label

__all__ = [
    "CLIENT",
    "SERVER",
    "Capture",
    "CapturedPacket",
    "StateChange",
    "TcpConnection",
    "TracedSegment",
    "connections",
    "fmt_endpoint",
    "iter_selected",
    "load",
    "read_capture",
    "rows_for_connection",
]

CLIENT, SERVER = LEFT, RIGHT
SIDE_NAMES = ("client", "server")

_DUP_WINDOW_US = 1_000_000  # copies of a packet further apart than this are not one segment


@dataclass(slots=True)
class CapturedPacket:
    """One TCP segment as read from a capture file."""

    frame: int  # 1-based number among the capture's IP packets
    time: int  # µs since the epoch
    src: str
    dst: str
    seg: Segment
    truncated: bool = False  # the capture cut the packet short (snap length)
    ip_id: int | None = None  # IPv4 identification, to recognise a second copy
    recv_time: int | None = None  # set when a second capture point saw it again


@dataclass
class Capture:
    path: str
    packets: list[CapturedPacket]
    ip_packets: int  # all IP packets, TCP or not
    skipped: dict[str, int]  # reason -> count (not TCP, malformed)
    merged: int = 0  # second copies folded into one segment


@dataclass(slots=True)
class TracedSegment:
    frame: int
    time: int  # µs, when captured (the send time when two capture points saw it)
    direction: int  # CLIENT (0): client -> server; SERVER (1): server -> client
    seg: Segment
    truncated: bool = False
    recv_time: int | None = None  # µs, from a second capture point, if any
    expert: tuple[Expert, ...] = ()


@dataclass(slots=True)
class StateChange:
    time: int  # µs
    side: int  # CLIENT or SERVER
    state: str  # RFC 9293 name, "SYN-SENT"
    cause: str  # "snd SYN", "rcv ACK of FIN", "capture starts mid-connection", ...
    frame: int | None  # the segment that showed it (None for initial states)
    at_receive: bool = False  # the receiver's transition (drawn at the arrow's tip)


@dataclass
class TcpConnection:
    index: int  # 1-based, in order of first appearance (``--conn N``)
    client: tuple[str, int]
    server: tuple[str, int]
    segments: list[TracedSegment] = field(default_factory=list)
    states: list[StateChange] = field(default_factory=list)
    isn: list[int | None] = field(default_factory=lambda: [None, None])
    handshake_seen: bool = False  # the capture has the client's SYN
    rtt_us: int | None = None  # SYN -> ACK of SYN,ACK, from the capture point
    # One-way delays from the capture point to the client and to the server,
    # from the handshake (None when it is not in the capture).
    delay_to: tuple[int, int] | None = None

    @property
    def start(self) -> int:
        return self.segments[0].time

    @property
    def end(self) -> int:
        return self.segments[-1].time

    def state_sequence(self, side: int) -> list[str]:
        return [c.state for c in self.states if c.side == side]

    @property
    def capture_point(self) -> str:
        """'client', 'server', 'between' or 'unknown', judged from the handshake delays."""
        if self.delay_to is None:
            return "unknown"
        to_c, to_s = self.delay_to
        if to_c + to_s < 100:
            return "unknown"  # both ends within 0.1 ms: cannot tell (loopback, veth)
        if to_c * 4 < to_s:
            return "client"
        if to_s * 4 < to_c:
            return "server"
        return "between"

    def endpoint(self, side: int) -> tuple[str, int]:
        return self.client if side == CLIENT else self.server

    def base(self, side: int) -> int:
        """The number relative sequence numbers of ``side`` count from.

        Its ISN when the SYN was seen; otherwise one less than the first
        sequence number seen from it (or the first ACK of it), as Wireshark
        does, so the first byte is 1 either way.
        """
        isn = self.isn[side]
        if isn is not None:
            return isn
        for s in self.segments:
            if s.direction == side:
                return add(s.seg.seq, -1)
        for s in self.segments:
            if s.direction != side and s.seg.flags & ACK:
                return add(s.seg.ack, -1)
        return 0

    def tuples(self) -> list[tuple[int, int, Segment]]:
        """The neutral form the plots and expert analysis take: (time µs, direction, Segment)."""
        return [(s.time, s.direction, s.seg) for s in self.segments]

    def timing(self) -> list[tuple[int, int, bool]]:
        """(send µs, receive µs, measured) per segment.

        Measured when a second capture point saw the segment; otherwise
        estimated from the handshake's one-way delays (a segment from the
        client was sent ``delay_to[0]`` before it passed the capture point
        and arrives ``delay_to[1]`` after); with neither, both are the
        capture time.
        """
        out = []
        for s in self.segments:
            if s.recv_time is not None:
                out.append((s.time, s.recv_time, True))
            elif self.delay_to is not None:
                back, ahead = self.delay_to if s.direction == CLIENT else self.delay_to[::-1]
                out.append((s.time - back, s.time + ahead, False))
            else:
                out.append((s.time, s.time, False))
        return out

    def expert_summary(self) -> dict[str, int]:
        return _expert.summary([s.expert for s in self.segments])

    def as_dict(self, t0: int | None = None, absolute: bool = False) -> dict[str, Any]:
        """The JSON form: endpoints, inferred states per side, segments with expert notes."""
        if t0 is None:
            t0 = self.start
        bases = (0, 0) if absolute else (self.base(CLIENT), self.base(SERVER))
        segs = []
        for s in self.segments:
            seg = s.seg
            other = 1 - s.direction
            d: dict[str, Any] = {
                "frame": s.frame,
                "time_us": s.time,
                "t": round((s.time - t0) / 1e6, 6),
                "from": SIDE_NAMES[s.direction],
                "flags": seg.flags_str,
                "seq": (seg.seq - bases[s.direction]) & 0xFFFFFFFF,
                "ack": (seg.ack - bases[other]) & 0xFFFFFFFF if seg.flags & ACK else None,
                "win": seg.window,
                "len": len(seg.payload),
            }
            if not absolute:
                d["seq_raw"] = seg.seq
                d["ack_raw"] = seg.ack if seg.flags & ACK else None
            if seg.options:
                d["options"] = _options_text(seg)
            if s.recv_time is not None:
                d["recv_time_us"] = s.recv_time
            if s.truncated:
                d["truncated"] = True
            d["expert"] = [e.as_dict() for e in s.expert]
            segs.append(d)
        return {
            "index": self.index,
            "client": f"{fmt_endpoint(self.client)}",
            "server": f"{fmt_endpoint(self.server)}",
            "start_us": self.start,
            "duration_s": round((self.end - self.start) / 1e6, 6),
            "handshake_seen": self.handshake_seen,
            "rtt_us": self.rtt_us,
            "capture_point": self.capture_point,
            "isn": {"client": self.isn[CLIENT], "server": self.isn[SERVER]},
            "relative_seq": not absolute,
            "states": {
                name: [
                    {
                        "t": round((c.time - t0) / 1e6, 6),
                        "state": c.state,
                        "cause": c.cause,
                        "frame": c.frame,
                    }
                    for c in self.states
                    if c.side == side
                ]
                for side, name in enumerate(SIDE_NAMES)
            },
            "state_sequence": {
                name: self.state_sequence(side) for side, name in enumerate(SIDE_NAMES)
            },
            "expert_summary": self.expert_summary(),
            "segments": segs,
        }


def fmt_endpoint(ep: tuple[str, int]) -> str:
    addr, port = ep
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _options_text(seg: Segment) -> str:
    return format_options(seg.options)


# ---------------------------------------------------------------- reading


def _repair(buf: bytes) -> bytes | None:
    """A parseable copy of a packet the capture cut short or took before TSO.

    A snap length shorter than the packet (``tcpdump -s 96``) leaves the IP
    length field larger than the bytes captured: pad with zeros so the
    headers parse and the payload keeps its true length (its bytes are
    unknown anyway).  A capture on the sending host before segmentation
    offload may show IPv4 total length 0: use the captured length.
    """
    if not buf:
        return None
    version = buf[0] >> 4
    if version == 4 and len(buf) >= 20:
        total = int.from_bytes(buf[2:4], "big")
        if total == 0:
            return buf[:2] + len(buf).to_bytes(2, "big") + buf[4:]
        if total > len(buf):
            return buf + bytes(total - len(buf))
    elif version == 6 and len(buf) >= 40:
        end = 40 + int.from_bytes(buf[4:6], "big")
        if end > len(buf):
            return buf + bytes(end - len(buf))
    return None


def _parse(buf: bytes) -> tuple[str, str, Segment, bool] | str:
    """(src, dst, Segment, truncated), or why the packet is skipped.

    Checksums are not verified: a capture on the sending host sees packets
    before the NIC fills the checksum in (offload), and a tracer must show
    what was on the wire anyway.
    """
    try:
        src, dst, seg = parse_ip_tcp(buf, verify_checksum=False)
        return src, dst, seg, False
    except MalformedPacket as exc:
        reason = str(exc)
    fixed = _repair(buf)
    if fixed is not None:
        try:
            src, dst, seg = parse_ip_tcp(fixed, verify_checksum=False)
            return src, dst, seg, True
        except MalformedPacket:
            pass
    return reason if reason.startswith("not TCP") else f"malformed: {reason}"


def _dup_key(p: CapturedPacket, strong: bool) -> tuple[Any, ...] | None:
    """What makes two captured copies one packet; None if a copy cannot be told from a resend.

    Strong: a non-zero IPv4 identification, which Linux (and most stacks)
    change for every packet a connection sends, retransmissions included.
    Weak: the TCP timestamp alone, which a retransmission within the same
    clock tick repeats -- used only once strong keys have shown that the
    capture was taken at two points.
    """
    seg = p.seg
    if strong and not p.ip_id:
        return None
    ts = seg.ts
    if not strong and not ts:
        return None
    return (p.src, p.dst, seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window,
            len(seg.payload), ts, p.ip_id)


class _Recent:
    """Packets of the last ``_DUP_WINDOW_US`` by key (bounded, oldest dropped first)."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], CapturedPacket] = {}
        self.order: deque[tuple[int, tuple[Any, ...]]] = deque()

    def copy_of(self, key: tuple[Any, ...], p: CapturedPacket) -> CapturedPacket | None:
        """The earlier copy of ``p`` (None if this is the first), remembering ``p`` if so."""
        while self.order and (
            p.time - self.order[0][0] > _DUP_WINDOW_US or len(self.order) > 100_000
        ):
            _t, old = self.order.popleft()
            q = self.by_key.get(old)
            if q is not None and q.time == _t:
                del self.by_key[old]
        first = self.by_key.get(key)
        if first is not None and first.recv_time is None and 0 <= p.time - first.time:
            return first
        self.by_key[key] = p
        self.order.append((p.time, key))
        return None


def read_capture(path: str | PathLike[str]) -> Capture:
    """Every TCP segment of a pcap or pcapng file (any link type ``tcpstack.pcap`` reads).

    Raises ``ValueError`` for a file that is not a capture (from ``read_packets``).
    """
    parsed_packets: list[CapturedPacket] = []
    skipped: dict[str, int] = {}
    n = 0
    for n, (ts, buf) in enumerate(read_packets(path), 1):
        parsed = _parse(buf)
        if isinstance(parsed, str):
            skipped[parsed] = skipped.get(parsed, 0) + 1
            continue
        src, dst, seg, truncated = parsed
        ip_id = int.from_bytes(buf[4:6], "big") if buf[0] >> 4 == 4 else None
        parsed_packets.append(CapturedPacket(n, ts, src, dst, seg, truncated, ip_id))
    # Is this a capture from two points?  Only packets with an IP ID can say.
    recent = _Recent()
    with_id = copies = 0
    for p in parsed_packets:
        key = _dup_key(p, strong=True)
        if key is not None:
            with_id += 1
            if recent.copy_of(key, p) is not None:
                copies += 1
    two_points = copies > 0 and copies * 4 >= with_id  # a quarter of them: not chance
    packets: list[CapturedPacket] = []
    merged = 0
    recent = _Recent()
    for p in parsed_packets:
        key = _dup_key(p, strong=True) or (_dup_key(p, strong=False) if two_points else None)
        if key is not None:
            first = recent.copy_of(key, p)
            if first is not None:
                first.recv_time = p.time
                merged += 1
                continue
        packets.append(p)
    return Capture(str(path), packets, n, skipped, merged)


# ---------------------------------------------------------------- states


class _End:
    """What the observer knows about one end."""

    __slots__ = ("state", "iss", "fin_seq", "acked_peer_fin", "snd_max", "sent_any")

    def __init__(self, state: str) -> None:
        self.state = state
        self.iss: int | None = None
        self.fin_seq: int | None = None  # sequence number of its FIN
        self.acked_peer_fin = False
        self.snd_max: int | None = None  # highest seq + SEG.LEN it sent
        self.sent_any = False


_CLOSED = State.CLOSED.value
_LISTEN = State.LISTEN.value
_SYN_SENT = State.SYN_SENT.value
_SYN_RECEIVED = State.SYN_RECEIVED.value
_ESTABLISHED = State.ESTABLISHED.value
_FIN_WAIT_1 = State.FIN_WAIT_1.value
_FIN_WAIT_2 = State.FIN_WAIT_2.value
_CLOSE_WAIT = State.CLOSE_WAIT.value
_CLOSING = State.CLOSING.value
_LAST_ACK = State.LAST_ACK.value
_TIME_WAIT = State.TIME_WAIT.value


class _Observer:
    """Follows RFC 9293's state machine for both ends of one connection."""

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.ends: tuple[_End, _End] | None = None
        self.window = [65535, 65535]  # last advertised windows (unscaled), for RST acceptance

    def _set(self, t: int, side: int, state: str, cause: str, frame: int | None, rcv: bool) -> None:
        assert self.ends is not None
        end = self.ends[side]
        if end.state == state:
            return
        end.state = state
        self.conn.states.append(StateChange(t, side, state, cause, frame, rcv))

    def _start(self, ts: TracedSegment) -> None:
        f = ts.seg.flags
        a = ts.direction
        if f & SYN and not f & ACK:
            init = {a: _CLOSED, 1 - a: _LISTEN}
            cause = {a: "before its SYN", 1 - a: "assumed: answers SYN with SYN,ACK"}
        elif f & SYN:
            init = {a: _LISTEN, 1 - a: _SYN_SENT}
            cause = {a: "assumed: answered a SYN", 1 - a: "its SYN is not in the capture"}
        else:
            init = {0: _ESTABLISHED, 1: _ESTABLISHED}
            cause = {0: "capture starts mid-connection", 1: "capture starts mid-connection"}
        self.ends = (_End(init[0]), _End(init[1]))
        for side in (CLIENT, SERVER):
            self.conn.states.append(StateChange(ts.time, side, init[side], cause[side], None))

    def segment(self, ts: TracedSegment, recv_t: int) -> None:
        if self.ends is None:
            self._start(ts)
        assert self.ends is not None
        seg, t, frame = ts.seg, ts.time, ts.frame
        a_side = ts.direction
        b_side = 1 - a_side
        a, b = self.ends[a_side], self.ends[b_side]
        f = seg.flags

        def snd(state: str, cause: str) -> None:
            self._set(t, a_side, state, cause, frame, False)

        def rcv(state: str, cause: str) -> None:
            self._set(recv_t, b_side, state, cause, frame, True)

        first_of_a = not a.sent_any
        a.sent_any = True
        end_seq = add(seg.seq, seg.seg_len)
        if not f & RST and (a.snd_max is None or ge(end_seq, a.snd_max)):
            a.snd_max = end_seq

        if f & RST:
            # §3.10.7: a RST aborts the sender's connection, or answers for one it
            # does not have.  A "listener" whose first word is RST had none.
            if a.state == _LISTEN and first_of_a:
                self._reinitialise(a_side, _CLOSED, "no listener: answered the SYN with RST")
            else:
                snd(_CLOSED, "snd RST")
            if self._rst_acceptable(a_side, seg):
                if b.state == _SYN_RECEIVED and b.iss is not None and self._passive(b_side):
                    # §3.10.7.4: "If this connection was initiated with a passive
                    # OPEN (i.e., came from the LISTEN state), then return this
                    # connection to LISTEN state".
                    rcv(_LISTEN, "rcv RST (passive open: back to LISTEN)")
                elif b.state not in (_LISTEN, _CLOSED):
                    rcv(_CLOSED, "rcv RST")
            self.window[a_side] = seg.window
            return

        # The sender's transitions happen as it sends.
        if f & SYN:
            a.iss = seg.seq
            if not f & ACK:
                if a.state == _LISTEN and first_of_a:
                    # Its first word is a SYN of its own: not a listener but the
                    # other half of a simultaneous open (§3.5, Figure 8).
                    self._reinitialise(a_side, _CLOSED, "before its SYN (simultaneous open)")
                if a.state == _CLOSED:
                    snd(_SYN_SENT, "active OPEN / snd SYN")
            elif a.state == _LISTEN:
                snd(_SYN_RECEIVED, "rcv SYN / snd SYN,ACK")
        if f & ACK and b.fin_seq is not None and not a.acked_peer_fin:
            if ge(seg.ack, add(b.fin_seq, 1)):
                # Acknowledging the peer's FIN proves it arrived.
                a.acked_peer_fin = True
                if a.state == _ESTABLISHED:
                    snd(_CLOSE_WAIT, "rcv FIN / snd ACK")
                elif a.state == _FIN_WAIT_1:
                    snd(_CLOSING, "rcv FIN / snd ACK (simultaneous close)")
                elif a.state == _FIN_WAIT_2:
                    snd(_TIME_WAIT, "rcv FIN / snd ACK")
        if f & FIN and a.fin_seq is None:
            a.fin_seq = add(seg.seq, len(seg.payload) + (1 if f & SYN else 0))
            if a.state in (_ESTABLISHED, _SYN_RECEIVED):
                snd(_FIN_WAIT_1, "CLOSE / snd FIN")
            elif a.state == _CLOSE_WAIT:
                snd(_LAST_ACK, "CLOSE / snd FIN")

        # The receiver's, in §3.10.7.4's order: SYN, then ACK, then FIN.
        if f & SYN:
            if b.state == _SYN_SENT:
                if f & ACK and (b.iss is None or seg.ack == add(b.iss, 1)):
                    rcv(_ESTABLISHED, "rcv SYN,ACK / snd ACK")
                elif not f & ACK:
                    rcv(_SYN_RECEIVED, "rcv SYN / snd SYN,ACK (simultaneous open)")
            elif b.state == _SYN_RECEIVED and f & ACK and self._acks_syn(b, seg):
                rcv(_ESTABLISHED, "rcv SYN,ACK (simultaneous open)")
        elif f & ACK:
            if b.state == _SYN_RECEIVED and self._acks_syn(b, seg):
                rcv(_ESTABLISHED, "rcv ACK of SYN")
            if b.fin_seq is not None and ge(seg.ack, add(b.fin_seq, 1)):
                if b.state == _FIN_WAIT_1:
                    rcv(_FIN_WAIT_2, "rcv ACK of FIN")
                elif b.state == _CLOSING:
                    rcv(_TIME_WAIT, "rcv ACK of FIN")
                elif b.state == _LAST_ACK:
                    rcv(_CLOSED, "rcv ACK of FIN")
        self.window[a_side] = seg.window

    def _reinitialise(self, side: int, state: str, cause: str) -> None:
        """Correct an assumed initial state once the end's first segment shows otherwise."""
        assert self.ends is not None
        self.ends[side].state = state
        for c in self.conn.states:
            if c.side == side and c.frame is None:
                c.state, c.cause = state, cause

    def _passive(self, side: int) -> bool:
        return any(c.side == side and c.state == _LISTEN for c in self.conn.states)

    @staticmethod
    def _acks_syn(b: _End, seg: Segment) -> bool:
        return b.iss is None or ge(seg.ack, add(b.iss, 1))

    def _rst_acceptable(self, a_side: int, seg: Segment) -> bool:
        """RFC 9293 §3.10.7.3 / §3.10.7.4, as far as an observer can judge."""
        assert self.ends is not None
        a, b = self.ends[a_side], self.ends[1 - a_side]
        if b.state == _SYN_SENT:
            # "the RST is acceptable if the ACK field acknowledges the SYN"
            return bool(seg.flags & ACK) and (b.iss is None or seg.ack == add(b.iss, 1))
        if a.snd_max is None:
            return True
        # In the receive window: around what the sender had sent, up to the
        # window the receiver last advertised (generous: scaling may be unknown).
        wnd = max(self.window[1 - a_side] << 14, 1)
        return in_window(seg.seq, add(a.snd_max, -(1 << 16)), wnd + (1 << 16))


# ---------------------------------------------------------------- connections


def _pick_client(first: CapturedPacket) -> tuple[tuple[str, int], tuple[str, int]]:
    seg = first.seg
    a = (first.src, seg.src_port)
    b = (first.dst, seg.dst_port)
    if seg.flags & SYN:
        return (a, b) if not seg.flags & ACK else (b, a)
    # Mid-connection: ephemeral ports are high; on a tie the first sender.
    if b[1] > a[1]:
        return b, a
    return a, b


def connections(capture: Capture) -> list[TcpConnection]:
    """Split a capture's segments into connections, infer states and expert notes."""
    current: dict[tuple[tuple[str, int], tuple[str, int]], TcpConnection] = {}
    conns: list[TcpConnection] = []
    for p in capture.packets:
        seg = p.seg
        src = (p.src, seg.src_port)
        dst = (p.dst, seg.dst_port)
        key = (src, dst) if src <= dst else (dst, src)
        conn = current.get(key)
        if conn is not None and seg.flags & SYN and not seg.flags & ACK:
            # A SYN belongs to the current connection only if it repeats that
            # end's SYN (a retransmission) or is the other end's first SYN
            # while nothing but SYNs has passed (a simultaneous open, §3.5).
            side = CLIENT if src == conn.client else SERVER
            same_end = [s.seg for s in conn.segments if s.direction == side]
            only_syns = all(s.seg.flags & SYN and not s.seg.flags & ACK for s in conn.segments)
            retransmitted_syn = any(x.flags & SYN and x.seq == seg.seq for x in same_end)
            simultaneous_open = only_syns and not same_end
            if not (retransmitted_syn or simultaneous_open):
                conn = None  # the tuple is reused: a new connection
        if conn is None:
            client, server = _pick_client(p)
            conn = TcpConnection(len(conns) + 1, client, server)
            current[key] = conn
            conns.append(conn)
        direction = CLIENT if src == conn.client else SERVER
        conn.segments.append(
            TracedSegment(p.frame, p.time, direction, seg, p.truncated, p.recv_time)
        )
    for conn in conns:
        _analyse(conn)
    return conns


def _analyse(conn: TcpConnection) -> None:
    segs = conn.segments
    first = segs[0].seg
    conn.handshake_seen = bool(first.flags & SYN and not first.flags & ACK)
    for s in segs:
        if s.seg.flags & SYN and conn.isn[s.direction] is None:
            conn.isn[s.direction] = s.seg.seq
    _handshake_timing(conn)
    obs = _Observer(conn)
    timing = conn.timing()
    for s, (_send, recv, measured) in zip(segs, timing, strict=True):
        obs.segment(s, recv if measured else s.time)
    notes = _expert.analyze(conn.tuples(), [s.frame for s in segs], conn.rtt_us)
    for s, n in zip(segs, notes, strict=True):
        s.expert = n


def _handshake_timing(conn: TcpConnection) -> None:
    """RTT and one-way delays from the capture point, from SYN, SYN,ACK and its ACK.

    Seen at the capture point at t0, t1, t2: the server is (t1 - t0) / 2 away
    and the client (t2 - t1) / 2 (Linux answers both at once, so the gaps are
    round trips to each end).
    """
    syn = synack = ack = None
    for s in conn.segments:
        f = s.seg.flags
        if syn is None and f & SYN and not f & ACK and s.direction == CLIENT:
            syn = s
        elif syn is not None and synack is None and f & SYN and f & ACK and s.direction == SERVER:
            if s.seg.ack == add(syn.seg.seq, 1):
                synack = s
        elif (
            synack is not None
            and ack is None
            and s.direction == CLIENT
            and f & ACK
            and not f & SYN
            and ge(s.seg.ack, add(synack.seg.seq, 1))
        ):
            ack = s
            break
    if syn is None or synack is None or ack is None:
        return
    if syn.recv_time is not None and synack.recv_time is not None:
        conn.rtt_us = synack.recv_time - syn.time + (ack.time - synack.recv_time)
        return
    to_server = max(0, synack.time - syn.time) // 2
    to_client = max(0, ack.time - synack.time) // 2
    conn.rtt_us = max(0, ack.time - syn.time)  # Wireshark's tcp.analysis.initial_rtt
    conn.delay_to = (to_client, to_server)


def load(path: str | PathLike[str]) -> tuple[Capture, list[TcpConnection]]:
    """Read a capture file and return it with its connections."""
    cap = read_capture(path)
    return cap, connections(cap)


# ---------------------------------------------------------------- ladder rows


def rows_for_connection(
    conn: TcpConnection, t0: int | None = None, absolute: bool = False
) -> list[Row]:
    """Ladder rows (``view.ladder.Row``) for ``render_text``: states, segments, expert notes.

    Times are µs since ``t0`` (default: the connection's first segment).
    A sender's state change comes before its segment's row, the receiver's
    after it; expert notes follow their segment on the sender's side.
    """
    if t0 is None:
        t0 = conn.start
    bases = (None, None) if absolute else (conn.base(CLIENT), conn.base(SERVER))
    by_frame: dict[int | None, list[StateChange]] = {}
    for c in conn.states:
        by_frame.setdefault(c.frame, []).append(c)
    rows: list[Row] = []
    for c in by_frame.get(None, []):
        rows.append(Row(c.time - t0, c.side, "state", c.state, data={"cause": c.cause}))
    for s in conn.segments:
        changes = by_frame.get(s.frame, [])
        for c in changes:
            if not c.at_receive:
                rows.append(Row(c.time - t0, c.side, "state", c.state, data={"cause": c.cause}))
        label = segment_label(s.seg, bases[s.direction], bases[1 - s.direction])
        rows.append(
            Row(
                s.time - t0,
                s.direction,
                "seg",
                label,
                seg=s.seg,
                data={"frame": s.frame, "expert": [e.as_dict() for e in s.expert]},
            )
        )
        if s.expert:
            rows.append(Row(s.time - t0, s.direction, "note", ", ".join(e.text for e in s.expert)))
        for c in changes:
            if c.at_receive:
                rows.append(Row(c.time - t0, c.side, "state", c.state, data={"cause": c.cause}))
    rows.sort(key=lambda r: r.time)  # stable; only a second capture point's times move
    return rows


def iter_selected(
    conns: Iterable[TcpConnection],
    numbers: Iterable[int] = (),
    ports: Iterable[int] = (),
    hosts: Iterable[str] = (),
) -> Iterator[TcpConnection]:
    """Connections matching every given filter (an empty filter matches all)."""
    nums, pset, hset = set(numbers), set(ports), set(hosts)
    for c in conns:
        if nums and c.index not in nums:
            continue
        if pset and not ({c.client[1], c.server[1]} & pset):
            continue
        if hset and not ({c.client[0], c.server[0]} & hset):
            continue
        yield c

