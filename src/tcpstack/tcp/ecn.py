"""ECN, RFC 3168, as Linux's tcp_ecn 0/1/2: what a connection does with the ECN
bits of the segments it sends and receives, and the per-connection state
beyond "ECN agreed" (``EcnState``, made only when first needed).

Negotiation (ECE|CWR in the SYN, ECE in the SYN-ACK) is in the connection's
and listener's handshake code; the congestion response goes through
``CongestionControl.on_cwnd_reduction``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar, cast, overload

from ..wire.tcp import ACK, CWR, ECE, IP_CE, IP_ECN_SHIFT, SYN, Segment
from . import events as ev
from . import seq
from .state import State as S

if TYPE_CHECKING:
    from .connection import Connection

ECT0 = 0b10  # RFC 3168 §5: ECN-Capable Transport (0), the low two bits of the TOS octet

_T = TypeVar("_T")


class Field(Generic[_T]):
    """A Connection attribute kept in its EcnState, which is made on the first
    write: reads give ``default`` until then (one slot per connection instead
    of five for connections that never see ECN)."""

    def __init__(self, name: str, default: _T) -> None:
        self.name, self.default = name, default

    @overload
    def __get__(self, conn: None, owner: type | None = None) -> Field[_T]: ...
    @overload
    def __get__(self, conn: Connection, owner: type | None = None) -> _T: ...
    def __get__(self, conn: Connection | None, owner: type | None = None) -> _T | Field[_T]:
        if conn is None:
            return self
        e = conn.ecn
        return self.default if e is None else cast(_T, getattr(e, self.name))

    def __set__(self, conn: Connection, value: _T) -> None:
        e = conn.ecn
        if e is None:
            if value == self.default:
                return  # nothing to record
            e = conn.ecn = EcnState()
        setattr(e, self.name, value)


class EcnState:
    """A connection's RFC 3168 state beyond "ECN agreed": made on first use, so
    a connection that never sees an ECN mark carries one empty slot."""

    __slots__ = ("seen", "demand_cwr", "queue_cwr", "cwr_high", "delivered_ce")

    def __init__(self) -> None:
        self.seen = False  # an ECT or CE field arrived (tcpi "ecnseen")
        self.demand_cwr = False  # echo ECE until data with CWR (§6.1.3)
        self.queue_cwr = False  # set CWR on the next new data (§6.1.2)
        self.cwr_high: int | None = None  # Linux's high_seq in the CWR state
        self.delivered_ce = 0  # segments newly delivered by ECE ACKs (tcpi_delivered_ce)


def outgoing(conn: Connection, sseq: int, flags: int, payload: bytes | memoryview) -> int:
    """RFC 3168 §6.1 on an outgoing segment, as Linux's tcp_ecn_send: ECT(0)
    on new data only -- not on pure ACKs (§6.1.4), retransmissions (§6.1.5)
    or window probes without new data; CWR on the first new data after a
    reduction (§6.1.2); ECE while a CE mark is to be echoed (§6.1.3).  The
    ECN bits ride in ``tos``, the TOS octet the stack writes per packet."""
    if payload and seq.ge(sseq, conn.snd_nxt):
        conn.tos = conn.tos & 0xFC | ECT0
        if conn.ecn_queue_cwr:
            conn.ecn_queue_cwr = False
            flags |= CWR
    else:
        conn.tos &= 0xFC
    if conn.ecn_demand_cwr:
        flags |= ECE
    return flags

def on_segment(conn: Connection, seg: Segment, now: int) -> None:
    """A segment with ECE, CWR or a non-zero IP ECN field (the stack calls
    ``Connection.on_ecn`` before ``on_segment``; see wire.tcp.IP_CE).  RFC 3168 §6.1.3: CE on
    data starts the echo (ECE on every segment) until data with CWR; §6.1.2:
    an ECE ACK reduces cwnd once per window of data (Linux's CWR state:
    ``cwr_high`` is SND.NXT at the reduction; no growth until it is acked),
    not again in recovery."""
    if not conn.ecn_ok or conn.state is S.SYN_SENT:
        return
    # Only a segment that passes §3.10.7.4's acceptability test counts (Linux
    # reacts after tcp_validate_incoming): an out-of-window one is a signal of
    # nothing and draws just its duplicate ACK in on_segment.
    if conn.state is not S.SYN_RECEIVED and not conn._acceptable(seg.seq, seg.seg_len, conn._window_offered()):
        return
    flags = seg.flags
    field = flags >> IP_ECN_SHIFT & 3
    if field:
        conn.ecn_seen = True
        mib = conn.stack.mib
        if field == 3:
            mib.InCEPkts += 1
        elif field == 2:
            mib.InECT0Pkts += 1
        else:
            mib.InECT1Pkts += 1
    if seg.payload:
        if flags & CWR:  # Linux's tcp_ecn_accept_cwr: stop echoing, ACK at once
            conn.ecn_demand_cwr = False
            conn._ack_now()
        if flags & IP_CE == IP_CE:
            if not conn.ecn_demand_cwr:
                conn.quickack = max(conn.quickack, 2)  # Linux: the sender's cwnd may be tiny
            conn.ecn_demand_cwr = True
    if flags & ECE and flags & ACK and not flags & SYN:
        ack, una, nxt = seg.ack, conn.snd_una, conn.snd_nxt
        if not (seq.le(una, ack) and seq.le(ack, nxt)):
            return  # an unacceptable ACK is not a congestion signal
        if ack != una:  # Linux's TCPDeliveredCE: segments newly delivered by ECE ACKs
            n = -(-seq.diff(ack, una) // max(conn.snd_mss, 1))
            conn.delivered_ce += n
            conn.stack.mib.TCPDeliveredCE += n
        if conn.cwr_high is None and not conn.in_recovery and conn.established:
            conn.cc.on_cwnd_reduction(seq.diff(nxt, una), now)
            conn.cwr_high = nxt
            conn.ecn_queue_cwr = True
            conn.stack._emit(now, conn, ev.INFO, "ECE: cwnd reduced (RFC 3168 §6.1.2)")
