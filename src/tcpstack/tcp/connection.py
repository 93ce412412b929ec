"""The transmission control block and RFC 9293 §3.10 event processing.

A ``Connection`` is one TCB.  It is driven by three kinds of call, all of
which carry the current time ``now`` (microseconds) and none of which block:

* user calls (§3.10.1–3.10.6): ``send``, ``recv``, ``shutdown`` (the RFC's
  CLOSE: no more data from us, we keep receiving), ``close`` (release the
  socket, like close(2)), ``abort``;
* ``on_segment`` (§3.10.7), called by the stack after demultiplexing;
* ``on_timer`` (§3.10.8), called by the stack when ``timer_at`` is due.

Segments leave through ``Stack._output``; state changes only through
``set_state``, which checks them against ``state.TRANSITIONS`` and emits
the trace event.  The order of checks in ``on_segment`` follows §3.10.7.4
(sequence number, RST, security, SYN, ACK, URG, text, FIN) and each step
cites it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..wire.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    OPT_SACK,
    OPT_TS,
    PSH,
    RST,
    SYN,
    URG,
    Opt,
    Segment,
)
from . import ecn, icmp, seq
from . import events as ev
from .congestion import create as create_cc
from .rack import PERSIST_RECOVERIES, Rack
from .recvbuf import RecvBuffer
from .rto import RtoEstimator
from .sack import NO_SACKS, Scoreboard
from .sendbuf import SendBuffer
from .state import CAN_RECEIVE, CAN_SEND, LEGAL, State

if TYPE_CHECKING:
    from ..wire.icmp import IcmpMessage
    from .stack import Stack

S = State
NOP = Opt(1, None)
MAX_WSCALE = 14  # RFC 7323 §2.3: a shift above 14 is treated as 14
TS_WRAP = 1 << 32
PAWS_24DAYS_MS = 24 * 24 * 3600 * 1000  # RFC 7323 §5.5: ts_recent older than this is invalid
ACK_BATCH_MAX = 16  # segments one batched ACK may cover (Stack.receive_batch)
RCVBUF_LOCKED = (1 << 63) - 1  # rcv_space once the application set SO_RCVBUF
QUICKACK_SEGMENTS = 16  # Linux: ACK every segment while in quick-ACK mode at connection start
MAX_ORPHAN_RETRIES = 8  # Linux: tcp_orphan_retries=0 means 8
# The fast path is an optimisation with exactly the full path's effects; a test
# runs the same conversations with it off and compares the bytes on the wire.
HEADER_PREDICTION = True
FIN_RECEIVED_STATES = frozenset({S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK})
# States in which segments carrying data or FIN may be (re)sent.
PUSH_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
# §3.10.5 ABORT: these states send a RST (CLOSING, LAST-ACK, TIME-WAIT just go away).
SYN_RETRY_AFTER_RST_US = 2_000  # Linux TCP_TIMEOUT_MIN: 2 jiffies (HZ=1000)
NEED_RESET = frozenset({S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT})
# What rtx_at is when it is not the RTO (Connection.pto; Linux's icsk_pending).
PTO = 1  # a tail loss probe timeout (RFC 8985 §7.2)
REO = 2  # the RACK reordering timer (RFC 8985 §6.3)
RACK_TIMER_SLACK_US = 2_000  # Linux adds TCP_TIMEOUT_MIN (2 jiffies) to the reordering timeout
# tcp_recovery bits (Linux's TCP_RACK_*)
RACK_LOSS_DETECTION = 1
RACK_STATIC_REO_WND = 2
RACK_NO_DUPTHRESH = 4


def default_mss(remote: str) -> int:
    """RFC 9293 §3.7.1 (MUST-15): without an MSS option assume 536 (IPv4) or 1220 (IPv6)."""
    return 1220 if ":" in remote else 536


def syn_options(mss: int, ts_val: int | None, ts_ecr: int, sack: bool, wscale: int | None) -> tuple[Opt, ...]:
    """SYN / SYN-ACK options in Linux's byte layout, so packetdrill scripts written
    against Linux match: mss, [sackOK,TS | nop,nop,TS | nop,nop,sackOK], [nop,wscale]."""
    opts: list[Opt] = [Opt(2, mss)]
    if ts_val is not None:
        if sack:
            opts += [Opt(4, None), Opt(OPT_TS, (ts_val, ts_ecr))]
        else:
            opts += [NOP, NOP, Opt(OPT_TS, (ts_val, ts_ecr))]
    elif sack:
        opts += [NOP, NOP, Opt(4, None)]
    if wscale is not None:
        opts += [NOP, Opt(3, wscale)]
    return tuple(opts)


class Connection:
    """One TCB.  Attribute names are those of RFC 9293 §3.3.1."""

    __slots__ = (
        "stack", "config", "conn_id", "local_addr", "local_port", "remote_addr", "remote_port",
        "key", "state", "history",
        # send sequence variables (§3.3.1)
        "iss", "snd_una", "snd_nxt", "snd_wnd", "snd_up", "snd_wl1", "snd_wl2", "max_snd_wnd", "urgent",
        "snd_mss", "snd_wscale", "rtx_nxt", "recover", "dupacks", "in_recovery", "snd_sml",
        "sb", "high_rxt", "sack_recent", "dsack", "pto", "tlp",
        # receive sequence variables
        "irs", "rcv_nxt", "rcv_wnd", "rcv_up", "rcv_adv", "rcv_mss", "rcv_wscale",
        "last_ack_sent", "ack_pending", "quickack", "pingpong", "lrcvtime", "delack_segs", "rcv_fin_seq",
        # options
        "ws_ok", "ts_ok", "sack_ok", "ts_recent", "ts_recent_at", "ts_offset",
        # buffers and user side
        "sendbuf", "recvbuf", "fin_queued", "fin_seq", "user_closed", "shut_rd", "eof",
        "error", "waker", "nodelay", "cork", "keepalive", "user_timeout_ms", "linger",
        # timers (absolute µs, None = off)
        "rtx_at", "persist_at", "delack_at", "keepalive_at", "fin2_at", "timer_at",
        "persist_backoff", "keepalive_probes", "retries", "first_rtx_at", "last_rcv_at", "last_oow_ack_at",
        # estimators and congestion control
        "rtt", "rtt_seq", "rtt_time", "cc", "last_send_at",
        # statistics (tcp_info)
        "total_retrans", "bytes_acked", "bytes_received", "segs_out", "segs_in", "bytes_retrans",
        "rcv_space", "rcv_space_copied", "rcv_space_time",
        "data_segs_out", "data_segs_in", "created_at",
        # IP: TOS / Traffic Class and TTL / Hop Limit of our packets, path MTU, the last ICMP soft error
        "tos", "ttl", "pmtu", "soft_error",
        # ECN (RFC 3168): negotiated; echo ECE until CWR; CWR due; end of the reduced window
        "ecn_ok", "ecn",
        "__weakref__",
    )

    def __init__(
        self,
        stack: Stack,
        conn_id: int,
        local: tuple[str, int],
        remote: tuple[str, int],
        now: int,
    ) -> None:
        cfg = stack.config
        self.stack = stack
        self.config = cfg
        self.conn_id = conn_id
        self.local_addr, self.local_port = local
        self.remote_addr, self.remote_port = remote
        self.key = (self.local_addr, self.local_port, self.remote_addr, self.remote_port)
        self.state = S.CLOSED
        self.history: tuple[State, ...] = (S.CLOSED,)  # every state passed, in order

        self.iss = self.snd_una = self.snd_nxt = self.rtx_nxt = 0
        self.snd_wnd = self.snd_up = self.snd_wl1 = self.snd_wl2 = self.max_snd_wnd = 0
        self.urgent = False  # SND.UP is meaningful (urgent data not yet acknowledged)
        mtu_mss = stack.mss_for(self.remote_addr)
        self.snd_mss = min(mtu_mss, 536)  # RFC 9293 §3.7.1: 536 until the peer says otherwise
        self.rcv_mss = mtu_mss
        self.snd_wscale = self.rcv_wscale = 0
        self.recover = 0
        self.snd_sml = 0  # end of the last small segment sent (Minshall's Nagle)
        self.dupacks = 0
        self.in_recovery = False
        self.sb = NO_SACKS  # what the peer SACKed (RFC 2018), stream offsets; made on the first block
        self.high_rxt = 0  # RFC 6675 HighRxt, as a stream offset
        self.sack_recent: list[int] | None = None  # offsets of recent out-of-order arrivals (RFC 2018 §4)
        self.dsack: tuple[int, int] | None = None  # a duplicate to report (RFC 2883)
        # Tail loss probe (RFC 8985 §7): rtx_at is a probe timeout while pto is
        # PTO, RACK's reordering timeout (§6.3) while it is REO, else the RTO; tlp
        # is (TLP.end_seq, whether the probe was a retransmission) for the
        # episode in progress, or None.  With RACK (tcp_recovery) sb is a
        # rack.Rack while data is in flight: the scoreboard and the log of
        # transmissions RACK needs.
        self.pto = 0
        self.tlp: tuple[int, bool] | None = None

        self.irs = self.rcv_nxt = self.rcv_up = self.rcv_adv = self.last_ack_sent = 0
        self.rcv_wnd = 0
        self.ack_pending = False
        self.quickack = QUICKACK_SEGMENTS
        # Linux's interactive mode (icsk_ack.pingpong): once the application answers
        # data within the delayed-ACK timeout, ACKs are delayed so they ride on
        # replies; lrcvtime is when in-order data last arrived (tcp_event_data_recv).
        self.pingpong = False
        self.lrcvtime = -(1 << 62)  # no data yet: no send is a reply (Linux's ato is 0 until then)
        self.delack_segs = 0
        self.rcv_fin_seq: int | None = None

        self.ws_ok = self.ts_ok = self.sack_ok = False
        self.ts_recent = 0
        self.ts_recent_at = 0
        self.ts_offset = stack.ts_offset_for(self.key)

        self.sendbuf = SendBuffer(cfg.tcp_wmem[2])
        self.recvbuf = RecvBuffer(cfg.tcp_rmem[1])
        self.fin_queued = False
        self.fin_seq = 0
        self.user_closed = False
        self.shut_rd = False
        self.eof = False
        self.error: OSError | None = None
        self.waker: Callable[[Connection], None] | None = None
        self.nodelay = False
        self.cork = False
        self.keepalive = False
        self.user_timeout_ms = 0
        self.linger: int | None = None

        self.rtx_at: int | None = None
        self.persist_at: int | None = None
        self.delack_at: int | None = None
        self.keepalive_at: int | None = None
        self.fin2_at: int | None = None
        self.timer_at: int | None = None  # owned by the stack's timer queue
        self.persist_backoff = 0
        self.keepalive_probes = 0
        self.retries = 0
        self.first_rtx_at: int | None = None
        self.last_rcv_at = now  # keepalive idles from the last segment received (as Linux)
        self.last_oow_ack_at = -(1 << 62)  # the last challenge ACK (rate limit)

        self.rtt = RtoEstimator(*stack.rto_bounds(cfg))
        self.rtt_seq: int | None = None
        self.rtt_time = 0
        self.cc = create_cc(cfg.tcp_congestion_control, self.snd_mss, cfg.tcp_init_cwnd, now)
        self.last_send_at = now

        self.total_retrans = self.bytes_acked = self.bytes_received = self.bytes_retrans = 0
        # Receive-buffer auto-tuning (Linux's tcp_rcv_space_adjust, "DRS").
        self.rcv_space = 0
        self.rcv_space_copied = 0
        self.rcv_space_time = now
        self.segs_out = self.segs_in = self.data_segs_out = self.data_segs_in = 0
        self.created_at = now
        self.tos = 0  # IP_TOS / IPV6_TCLASS (RFC 9293 MUST-48), ECN bits clear
        # IP_TTL / IPV6_UNICAST_HOPS (RFC 9293 MUST-49), resolved here so output reads one attribute
        self.ttl = cfg.hop_limit if ":" in self.remote_addr else cfg.ip_default_ttl
        self.pmtu = stack.mtu  # lowered by ICMP fragmentation-needed / Packet Too Big
        # (SND.UNA when recorded, error): an ICMP soft error, reported if the
        # connection times out before SND.UNA moves (see on_icmp_error).
        self.soft_error: tuple[int, OSError] | None = None
        self.ecn_ok = False
        self.ecn: ecn.EcnState | None = None  # made when an ECN field is first set (see EcnState)

    def __repr__(self) -> str:
        return (
            f"<Connection #{self.conn_id} {self.local_addr}:{self.local_port} -> "
            f"{self.remote_addr}:{self.remote_port} {self.state.value}>"
        )

    # ==========================================================================
    # State changes: the only place state is assigned.
    # ==========================================================================
    def set_state(self, new: State, now: int, cause: str = "") -> None:
        old = self.state
        if old is new:
            return
        if (old, new) not in LEGAL:
            raise AssertionError(f"illegal transition {old.value} -> {new.value} ({cause})")
        self.state = new
        self.history += (new,)
        self.stack._state_changed(self, old, new, now, cause)
        self._wake()

    def _wake(self) -> None:
        if self.waker is not None:
            self.waker(self)

    def _fail(self, err: OSError, now: int) -> None:
        """Report an error to the user and move to CLOSED (§3.10.7.4 'connection reset')."""
        if self.error is None:
            self.error = err
        self.stack._emit(now, self, ev.ERROR, err)
        self._to_closed(now, str(err))

    def _to_closed(self, now: int, cause: str) -> None:
        self.rtx_at = self.persist_at = self.delack_at = self.keepalive_at = self.fin2_at = None
        self.sendbuf = SendBuffer(0)
        if self.state is not S.CLOSED:
            self.set_state(S.CLOSED, now, cause)

    # ==========================================================================
    # Opening (§3.10.1)
    # ==========================================================================
    def open_active(self, iss: int, now: int) -> None:
        """Active OPEN: select ISS, send SYN, enter SYN-SENT."""
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = seq.add(iss, 1)
        self.rtx_nxt = self.snd_nxt
        self.recover = self.snd_sml = iss
        self.rcv_wscale = self.stack.rcv_wscale() if self.config.tcp_window_scaling else 0
        self.set_state(S.SYN_SENT, now, "active OPEN")
        self._send_syn(now, ack=False)
        self.rtt_seq, self.rtt_time = iss, now
        self._arm_rtx(now)

    def _syn_options(self, ack: bool, now: int) -> tuple[Opt, ...]:
        """SYN / SYN-ACK options.  A SYN offers what the tunables allow; a passive
        open's SYN-ACK answers with what was agreed (``_negotiate``).  In a
        simultaneous open the SYN-ACK repeats the SYN's offer, as Linux does (it
        resends its SYN with ACK set: tcp_send_synack)."""
        cfg = self.config
        if ack and self.passive:
            ts, sack, ws = self.ts_ok, self.sack_ok, self.ws_ok
        else:
            ts, sack, ws = bool(cfg.tcp_timestamps), bool(cfg.tcp_sack), bool(cfg.tcp_window_scaling)
        return syn_options(self.rcv_mss, self._ts_val(now) if ts else None,
                           self.ts_recent if ack else 0, sack, self.rcv_wscale if ws else None)

    def _send_syn(self, now: int, ack: bool) -> None:
        flags = SYN | ACK if ack else SYN
        if ack:
            if self.ecn_ok:
                flags |= ECE  # RFC 3168 §6.1.1: an ECN-setup SYN-ACK
        elif self.config.tcp_ecn == 1 and not self.retries:
            # RFC 3168 §6.1.1: an ECN-setup SYN; a retransmitted SYN goes without,
            # in case a middlebox drops it (§6.1.1.1; Linux's tcp_ecn_clear_syn).
            flags |= ECE | CWR
        # RFC 7323 §2.2: the window field of a SYN is never scaled.
        wnd = min(self.recvbuf.free, 0xFFFF)
        self.rcv_adv = seq.add(self.rcv_nxt, wnd) if ack else 0
        seg = Segment(
            self.local_port, self.remote_port, self.iss, self.rcv_nxt if ack else 0,
            flags, wnd, 0, self._syn_options(ack, now), b"",
        )
        if ack:
            self.last_ack_sent = self.rcv_nxt
            self.ack_pending = False
        self.stack._output(self, seg, now)

    def accept_syn(self, syn: Segment, now: int) -> None:
        """Record a peer's SYN in SYN-SENT (§3.10.7.3 fourth; a listener's SYN
        becomes a compact request record instead, see listener.py)."""
        self.irs = syn.seq
        self.rcv_nxt = self.rcv_up = seq.add(syn.seq, 1)  # RCV.UP: no urgent data yet
        # The peer may send up to the window our SYN (or SYN-ACK) advertised.
        self.rcv_adv = seq.add(self.rcv_nxt, min(self.recvbuf.free, 0xFFFF))
        self._negotiate(syn)
        # SND.WND <- SEG.WND (unscaled in a SYN), SND.WL1 <- SEG.SEQ (§3.10.7.3)
        self.snd_wnd = syn.window
        self.max_snd_wnd = syn.window
        self.snd_wl1 = syn.seq
        self.snd_wl2 = syn.ack

    def _negotiate(self, syn: Segment) -> None:
        """Options are agreed only on SYN / SYN-ACK (RFC 7323 §1.3, RFC 2018 §2)."""
        cfg = self.config
        mss = syn.mss
        if mss is None:
            mss = default_mss(self.remote_addr)
        mss = max(mss, cfg.tcp_min_snd_mss)  # Linux clamps tiny MSS (CVE-2019-11479)
        self.snd_mss = min(mss, self.stack.mss_for(self.remote_addr))
        ws = syn.wscale
        if cfg.tcp_window_scaling and ws is not None:
            self.ws_ok = True
            self.snd_wscale = min(ws, MAX_WSCALE)
            self.rcv_wscale = self.stack.rcv_wscale()
        else:
            self.ws_ok = False
            self.snd_wscale = self.rcv_wscale = 0
        ts = syn.ts
        if cfg.tcp_timestamps and ts is not None:
            self.ts_ok = True
            self.ts_recent = ts[0]
        else:
            self.ts_ok = False
        self.sack_ok = bool(cfg.tcp_sack and syn.sack_permitted)
        # RFC 3168 §6.1.1: a SYN-ACK answering our ECN-setup SYN has ECE without
        # CWR; a SYN (simultaneous open) asks with both, and we must have asked too.
        want = ECE if syn.flags & ACK else ECE | CWR
        self.ecn_ok = cfg.tcp_ecn == 1 and syn.flags & (ECE | CWR) == want
        self.cc.set_mss(self.snd_mss, cfg.tcp_init_cwnd)

    # ==========================================================================
    # User calls (§3.10.2–3.10.6)
    # ==========================================================================
    def send(self, data: bytes | bytearray | memoryview, now: int, urgent: bool = False) -> int:
        """SEND (§3.10.2): queue data; returns how many bytes fit in the send buffer.
        ``urgent`` marks the data urgent (MSG_OOB): per RFC 6093 the urgent pointer
        points one past its last byte, and the data itself stays inline."""
        if self.error is not None:
            raise self._user_error()
        st = self.state
        if self.fin_queued or st not in CAN_SEND and st not in (S.SYN_SENT, S.SYN_RECEIVED):
            if st is S.CLOSED:
                raise OSError(107, "connection is not open (ENOTCONN): connect() first")
            raise BrokenPipeError(32, "cannot send after shutdown(SHUT_WR) or close (EPIPE)")
        n = self.sendbuf.write(data)
        if n and urgent:
            self.snd_up = seq.add(self.snd_una, len(self.sendbuf) + (1 if st is S.SYN_RECEIVED else 0))
            self.urgent = True
        if n and st in CAN_SEND:
            self._push(now)
            self._rearm()
        return n

    def recv(self, max_bytes: int, now: int) -> bytes | None:
        """RECEIVE (§3.10.3): up to max_bytes in order; b"" at end of stream;
        None if nothing is available yet."""
        if max_bytes <= 0:
            raise ValueError("recv size must be positive")
        rb = self.recvbuf
        if rb.ready:
            before = self._window_now()
            data = rb.read(max_bytes)
            consumed = seq.add(self.irs, 1 + rb.nxt - rb.ready)
            if seq.lt(self.rcv_up, consumed):
                # RCV.UP follows the data read while no urgent data is pending, so it
                # never falls 2^31 behind (sequence comparisons would turn around).
                self.rcv_up = consumed
            self._rcv_space_adjust(len(data), now)
            self._maybe_window_update(before, now)
            self._rearm()
            return data
        if self.error is not None:
            raise self._user_error()
        if self.eof or self.shut_rd or self.state is S.CLOSED:
            return b""
        return None

    @property
    def user_rcvbuf(self) -> bool:
        """SO_RCVBUF was set: no auto-tuning (as Linux's SOCK_RCVBUF_LOCK)."""
        return self.rcv_space == RCVBUF_LOCKED

    @user_rcvbuf.setter
    def user_rcvbuf(self, locked: bool) -> None:
        self.rcv_space = RCVBUF_LOCKED if locked else 0

    def _rcv_space_adjust(self, copied: int, now: int) -> None:
        """Grow the receive buffer when the application drains more than it holds
        per round trip, so the window keeps up with the path's bandwidth-delay
        product (as Linux's dynamic right-sizing), up to tcp_rmem's maximum."""
        self.rcv_space_copied += copied
        rtt = self.rtt.srtt or 100_000
        if now - self.rcv_space_time < rtt:
            return
        got = self.rcv_space_copied
        self.rcv_space_copied = 0
        self.rcv_space_time = now
        if got <= self.rcv_space:  # (RCVBUF_LOCKED, the largest int, once SO_RCVBUF is set)
            return
        self.rcv_space = got
        rb = self.recvbuf
        want = min(self.config.tcp_rmem[2], 4 * got)
        if want > rb.capacity:
            rb.capacity = want

    def shutdown(self, now: int) -> None:
        """The RFC's CLOSE (§3.10.4): no more data from us; a FIN follows the
        queued data.  Receiving continues (half-close)."""
        st = self.state
        if st in (S.CLOSED, S.LISTEN):
            raise OSError(107, "connection is not open (ENOTCONN)")
        if self.fin_queued:
            return
        if st is S.SYN_SENT:
            # §3.10.4 SYN-SENT: delete the TCB; pending SENDs get "closing".
            self._to_closed(now, "CLOSE in SYN-SENT")
            return
        self.fin_queued = True
        self.fin_seq = seq.add(self.snd_una, len(self.sendbuf) + (1 if st is S.SYN_RECEIVED else 0))
        if st is S.SYN_RECEIVED:
            # §3.10.4: queue the FIN until ESTABLISHED... Linux sends it once the
            # handshake completes; we do the same (the FIN is sent by _push).
            return
        if st is S.ESTABLISHED:
            self.set_state(S.FIN_WAIT_1, now, "CLOSE")
        elif st is S.CLOSE_WAIT:
            self.set_state(S.LAST_ACK, now, "CLOSE")
        self._push(now)
        self._rearm()

    def close(self, now: int) -> None:
        """Release the connection as close(2) does: shut down both directions.
        Unread data makes it an abort with RST (RFC 2525 §2.17, Linux's
        TCPAbortOnClose); SO_LINGER 0 makes it an abort too."""
        if self.user_closed:
            return
        self.user_closed = True
        self.shut_rd = True
        self.waker = None
        st = self.state
        if st is S.CLOSED or st is S.TIME_WAIT:
            return
        if self.recvbuf.ready or self.linger == 0:
            if self.recvbuf.ready:
                self.stack.mib.TCPAbortOnClose += 1
            else:
                self.stack.mib.TCPAbortOnLinger += 1
            self.abort(now)
            return
        if st is S.SYN_SENT:
            self._to_closed(now, "CLOSE in SYN-SENT")
            return
        self.shutdown(now)
        if self.state is S.FIN_WAIT_2:
            self._arm_fin2(now)
        self._rearm()

    def abort(self, now: int) -> None:
        """ABORT (§3.10.5): send RST in synchronized states, delete the TCB."""
        if self.state in NEED_RESET:
            self._send_rst(self.snd_nxt, now)
        self.recvbuf.clear()
        self._to_closed(now, "ABORT")

    def _user_error(self) -> OSError:
        err = self.error
        assert err is not None
        return type(err)(*err.args)

    # -- readiness, for the API layer ------------------------------------------
    @property
    def readable(self) -> bool:
        return bool(self.recvbuf.ready) or self.eof or self.error is not None or self.state is S.CLOSED

    @property
    def writable(self) -> bool:
        if self.error is not None or self.fin_queued:
            return True  # a send will raise at once
        return self.state in CAN_SEND and self.sendbuf.free > 0

    @property
    def passive(self) -> bool:
        """Opened by a listener (its TCB is born in SYN-RECEIVED)."""
        return self.history[0] is S.SYN_RECEIVED

    @property
    def established(self) -> bool:
        return self.state not in (S.CLOSED, S.LISTEN, S.SYN_SENT, S.SYN_RECEIVED)

    @property
    def urgent_offset(self) -> int | None:
        """RFC 9293 MUST-32/33: bytes the application reads before the urgent
        mark (0: it is at the mark, POSIX sockatmark()), or None when no urgent
        data is pending -- RCV.UP is not ahead of the data consumed (§3.10.7.4
        sixth).  The mark is the last urgent byte, RCV.UP - 1 (RFC 6093: the
        pointer points one past it), as Linux's urg_seq.  It may lie beyond
        the data received so far (the pointer came first)."""
        rb = self.recvbuf
        consumed = seq.add(self.irs, 1 + rb.nxt - rb.ready)  # the next sequence number to read
        d = seq.diff(self.rcv_up, consumed)
        return d - 1 if d > 0 else None

    # ==========================================================================
    # Segment arrival (§3.10.7)
    # ==========================================================================
    def on_segment(self, seg: Segment, now: int) -> None:
        self.segs_in += 1
        self.last_rcv_at = now
        self.keepalive_probes = 0
        st = self.state
        fast = False
        if st is S.ESTABLISHED and HEADER_PREDICTION and self._fast_path(seg, now):
            fast = True
        elif st is S.SYN_SENT:
            self._on_segment_syn_sent(seg, now)
        elif st is S.CLOSED:
            return  # the stack answers segments for closed connections
        else:
            self._on_segment_synchronized(seg, now)
        if self.state is not S.CLOSED:
            batch = self.stack.ack_batch
            if fast and batch is not None and self.delack_segs < ACK_BATCH_MAX:
                # Header-predicted segments read in one batch from a device: the
                # sending and the ACK owed wait for the end of the batch
                # (Stack.receive_batch): one ACK per batch, as GRO gives Linux,
                # and one send decision for all the ACKs that arrived together.
                # Out-of-order data and everything else are answered at once.
                batch.append(self)
            else:
                self._push(now)
                self._flush_ack(now)
        self._rearm()

    def _fast_path(self, seg: Segment, now: int) -> bool:
        """Header prediction (Van Jacobson; RFC 9293 §3.10.7.4 taken as a whole):
        in ESTABLISHED, the next in-order segment that is either a pure ACK of new
        data or data acknowledging nothing new, with no control bits, no window
        change (a pure ACK may move a nonzero window), no SACK and a fresh timestamp,
        needs none of the general checks —
        every one of them would pass.  Anything else returns False and takes the
        full path.  The effects are exactly the full path's for these segments."""
        flags = seg.flags
        if flags & (SYN | FIN | RST | URG) or not flags & ACK or seg.seq != self.rcv_nxt:
            return False
        wnd = seg.window << self.snd_wscale
        if self.in_recovery or self.sb.sacked or (wnd != self.snd_wnd and (seg.payload or not wnd or not self.snd_wnd)):
            return False  # (a pure ACK may move a nonzero window: the update is done below)
        if self.sack_ok and seg.sack_blocks:
            return False
        ts = None
        if self.ts_ok:
            ts = seg.ts
            if ts is None or seq.lt(ts[0], self.ts_recent):
                return False
        elif seg.options:
            return False
        ack = seg.ack
        payload = seg.payload
        if payload:
            # In-order data that acknowledges nothing new.
            if (
                ack != self.snd_una
                or self.recvbuf.ooo_count
                or self.shut_rd
                or self.user_closed
                or len(payload) > self._window_offered()
            ):
                return False
            if ts is not None and seq.le(seg.seq, self.last_ack_sent):
                self.ts_recent = ts[0]  # RFC 7323 §4.3 (3)
                self.ts_recent_at = now
            self.data_segs_in += 1
            n = len(payload)
            self.recvbuf.insert(0, payload)
            self.rcv_nxt = seq.add(self.rcv_nxt, n)
            self.bytes_received += n
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            self._wake()
            self._schedule_ack(n, now)
            return True
        # A pure ACK of new data.
        if not (seq.lt(self.snd_una, ack) and seq.le(ack, self.snd_nxt)) or self.fin_queued:
            return False
        if ts is not None and seq.le(seg.seq, self.last_ack_sent):
            self.ts_recent = ts[0]
            self.ts_recent_at = now
        self._new_ack(seg, ack, now)
        # §3.10.7.4 fifth: SND.WL1 < SEG.SEQ or (= and SND.WL2 =< SEG.ACK) holds for
        # the next in-order segment acknowledging new data: take its window.
        self.snd_wnd = wnd
        if wnd > self.max_snd_wnd:
            self.max_snd_wnd = wnd
        self.snd_wl1 = seg.seq
        self.snd_wl2 = ack
        return True

    def _on_segment_syn_sent(self, seg: Segment, now: int) -> None:
        """§3.10.7.3 SYN-SENT."""
        flags = seg.flags
        # First, check the ACK bit.
        if flags & ACK:
            # If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless RST) and discard.
            if seq.le(seg.ack, self.iss) or seq.gt(seg.ack, self.snd_nxt):
                if not flags & RST:
                    self._send_rst_for(seg, now)
                self._drop(seg, now, "SYN-SENT: unacceptable ACK")
                if self.retries == 0:
                    # Linux: "previous FIN/ACK or RST/ACK might be ignored" -- a stale
                    # peer just got our RST; resend the SYN at once (TCP_TIMEOUT_MIN)
                    # instead of waiting a whole initial RTO.
                    self.rtx_at = now + SYN_RETRY_AFTER_RST_US
                return
        # Second, check the RST bit.
        if flags & RST:
            if flags & ACK:  # ACK was acceptable: the peer refused us.
                self._fail(ConnectionRefusedError(111, "Connection refused (the peer answered SYN with RST)"), now)
            else:
                self._drop(seg, now, "SYN-SENT: RST without ACK")
            return
        # Fourth, check the SYN bit.
        if not flags & SYN:
            self._drop(seg, now, "SYN-SENT: neither SYN nor RST")
            return
        self.accept_syn(seg, now)
        if flags & ACK:
            self._ack_of_syn(seg, now)
            # RFC 7323 §4.3: our SYN was timed by its TSval; Karn: only if not retransmitted.
            self.set_state(S.ESTABLISHED, now, "rcv SYN,ACK")
            self._established(now)
            # §3.10.7.3: form an ACK segment and send it; data or controls in
            # the SYN-ACK are processed from the sixth step on.
            self.ack_pending = True
            if seg.payload or flags & (FIN | URG):
                self._process_text_and_fin(seg, seq.add(seg.seq, 1), now)
            self._send_ack(now)
        else:
            # Simultaneous open: SYN-RECEIVED, send SYN,ACK with our ISS.
            self.set_state(S.SYN_RECEIVED, now, "rcv SYN (simultaneous open)")
            self.snd_nxt = seq.add(self.iss, 1)
            self._send_syn(now, ack=True)
            self._arm_rtx(now)

    def _ack_of_syn(self, seg: Segment, now: int) -> None:
        self.snd_una = seg.ack
        self.snd_wnd = seg.window  # unscaled in a SYN (RFC 7323 §2.2)
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        if self.retries == 0 and self.rtt_seq is not None:
            self.rtt.sample(now - self.rtt_time)
        else:
            self.rtt.reset_backoff()
        self.rtt_seq = None
        self.retries = 0
        self.first_rtx_at = None
        self.rtx_at = None

    def _established(self, now: int) -> None:
        self.rtx_at = None
        if self.keepalive:
            self._arm_keepalive(now)
        if self.fin_queued:
            # A CLOSE that came in SYN-RECEIVED: now send the FIN (§3.10.4).
            self.set_state(S.FIN_WAIT_1, now, "CLOSE queued in SYN-RECEIVED")

    def _on_segment_synchronized(self, seg: Segment, now: int) -> None:
        """§3.10.7.4: SYN-RECEIVED and the synchronized states."""
        flags = seg.flags
        seg_len = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        rcv_wnd = self._window_offered()

        # RFC 7323 §5.3 PAWS, before the acceptability test.
        ts = seg.ts if self.ts_ok else None
        if ts is not None and not flags & RST and self.ts_recent_valid(now):
            if seq.lt(ts[0], self.ts_recent):
                self.stack.mib.PAWSEstab += 1
                self._drop(seg, now, "PAWS: old timestamp")
                self._send_ack(now)
                return

        # Linux's tcp_reset_check: once the peer's FIN is in (CLOSE-WAIT, CLOSING,
        # LAST-ACK), a RST carrying the FIN's own sequence number (RCV.NXT - 1) is
        # taken as exact -- peers that reset "from" their FIN are common.
        if flags & RST and self.eof and self.state in FIN_RECEIVED_STATES and seg.seq == seq.add(self.rcv_nxt, -1):
            self._on_rst(now)
            return

        # First, check the sequence number (the four cases of §3.10.7.4).
        if not self._acceptable(seg.seq, seg_len, rcv_wnd):
            if not flags & RST:
                # "If an incoming segment is not acceptable, an acknowledgment should be sent"
                self._drop(seg, now, "sequence number outside the window")
                if self.sack_ok and seg.payload and seq.le(seq.add(seg.seq, len(seg.payload)), self.rcv_nxt):
                    # RFC 2883: tell the sender it retransmitted needlessly (a D-SACK).
                    self.dsack = (seg.seq, seq.add(seg.seq, len(seg.payload)))
                    self.stack.mib.TCPDSACKOldSent += 1
                self._send_ack(now)
            else:
                self._drop(seg, now, "RST outside the window")
            return

        # Second, check the RST bit (RFC 5961 §3.2: exact match resets, in-window challenges).
        if flags & RST:
            if seg.seq == self.rcv_nxt:
                self._on_rst(now)
            else:
                self._challenge_ack(now, "in-window RST")
            return

        # Third (security) does not apply: no IP security compartments here.

        # Fourth, check the SYN bit (RFC 5961 §4.2: challenge ACK in synchronized states).
        if flags & SYN:
            if self.state is S.SYN_RECEIVED and self.passive:
                # §3.10.7.4: a passive open returns to LISTEN: the listener still exists
                # in our design, so the TCB simply goes away.
                self._drop(seg, now, "SYN in SYN-RECEIVED (passive)")
                self._to_closed(now, "SYN in SYN-RECEIVED")
                return
            self.stack.mib.TCPSYNChallenge += 1
            self._challenge_ack(now, "SYN in synchronized state")
            return

        # Fifth, check the ACK field.
        if not flags & ACK:
            self._drop(seg, now, "no ACK bit")
            return
        if not self._process_ack(seg, now):
            return
        if self.state is S.CLOSED:
            return

        # RFC 7323 §4.3 (3): update TS.Recent if the segment covers Last.ACK.sent.
        if ts is not None and seq.le(seg.seq, self.last_ack_sent):
            if seq.ge(ts[0], self.ts_recent):
                self.ts_recent = ts[0]
                self.ts_recent_at = now

        # Sixth (URG), seventh (text), eighth (FIN).
        if seg.payload or flags & (FIN | URG):
            self._process_text_and_fin(seg, seg.seq, now)

    def ts_recent_valid(self, now: int) -> bool:
        return (now - self.ts_recent_at) // 1000 < PAWS_24DAYS_MS

    def _acceptable(self, sseq: int, seg_len: int, rcv_wnd: int) -> bool:
        """§3.10.7.4 'There are four cases for the acceptability test'."""
        rcv_nxt = self.rcv_nxt
        if seg_len == 0:
            if rcv_wnd == 0:
                return sseq == rcv_nxt
            return seq.in_window(sseq, rcv_nxt, rcv_wnd)
        if rcv_wnd == 0:
            return False
        return seq.in_window(sseq, rcv_nxt, rcv_wnd) or seq.in_window(
            seq.add(sseq, seg_len - 1), rcv_nxt, rcv_wnd
        )

    def _on_rst(self, now: int) -> None:
        """§3.10.7.4 second: an acceptable RST."""
        st = self.state
        if st is S.SYN_RECEIVED:
            if self.passive:
                self.stack.mib.EmbryonicRsts += 1
                self._to_closed(now, "rcv RST in SYN-RECEIVED")
            else:
                self._fail(ConnectionRefusedError(111, "Connection refused"), now)
        elif st in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
            # Data already received stays readable; recv() raises once it is drained (Linux).
            self._fail(ConnectionResetError(104, "Connection reset by peer"), now)
        else:  # CLOSING, LAST-ACK, TIME-WAIT
            self._to_closed(now, "rcv RST")

    def _challenge_ack(self, now: int, why: str) -> None:
        """RFC 5961 §3.2/§4.2/§5.2: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>.  Rate-limited
        (RFC 5961 §7) per connection, at most one per tcp_invalid_ratelimit (Linux:
        500 ms), and per stack (tcp_challenge_ack_limit per second)."""
        if now - self.last_oow_ack_at < self.config.tcp_invalid_ratelimit * 1000:
            return
        if self.stack.challenge_ack_allowed(now):
            self.last_oow_ack_at = now
            self.stack.mib.TCPChallengeACK += 1
            self.stack._emit(now, self, ev.INFO, f"challenge ACK ({why})")
            self._send_ack(now)

    # -- fifth: the ACK field ------------------------------------------------------
    def _process_ack(self, seg: Segment, now: int) -> bool:
        """§3.10.7.4 fifth.  Returns False if the segment must be dropped."""
        ack = seg.ack
        st = self.state
        if st is S.SYN_RECEIVED:
            # If SND.UNA < SEG.ACK =< SND.NXT, enter ESTABLISHED; else send a reset.
            if seq.lt(self.snd_una, ack) and seq.le(ack, self.snd_nxt):
                self._ack_of_syn(seg, now)
                self.snd_wnd = seg.window << self.snd_wscale
                self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
                self.set_state(S.ESTABLISHED, now, "rcv ACK of SYN")
                self._established(now)
                # ... and continue processing (the ACK may carry data or FIN).
                return True
            self._send_rst_for(seg, now)
            self._drop(seg, now, "SYN-RECEIVED: unacceptable ACK")
            return False

        # RFC 5961 §5.2: acceptable iff (SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT.
        if seq.gt(ack, self.snd_nxt):
            self._drop(seg, now, "ACK of data never sent")
            self._challenge_ack(now, "ACK beyond SND.NXT")
            return False
        # MAX.SND.WND bounded by what was ever acknowledged, as Linux does
        # (min(max_window, bytes_acked)): early in a connection no old ACK is plausible.
        if seq.lt(ack, seq.add(self.snd_una, -max(min(self.max_snd_wnd, self.bytes_acked + 1), 1))):
            self._drop(seg, now, "ACK too old")
            self._challenge_ack(now, "ACK older than the window")
            return False

        sacked_new = self._sack_update(seg, now) if self.sack_ok else 0
        if seq.lt(self.snd_una, ack):
            self._new_ack(seg, ack, now)
        elif ack == self.snd_una:
            tlp = self.tlp
            if tlp is not None and ack == tlp[0] and not sacked_new and not seg.payload:
                self.tlp = None  # §7.4.2: a pure duplicate ACK: original and probe both arrived
            self._maybe_dupack(seg, now, sacked_new)
        sb = self.sb
        if sb.is_rack:
            self._rack_on_ack(cast(Rack, sb), now)
        elif self.sack_ok and not self.in_recovery and sb.sacked:
            self._maybe_enter_sack_recovery(now)

        # Update the send window (§3.10.7.4 fifth, ESTABLISHED).
        if seq.lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and seq.le(self.snd_wl2, ack)):
            if seq.le(self.snd_una, ack):
                wnd = seg.window << self.snd_wscale
                if wnd > 0 and self.snd_wnd == 0:
                    self.persist_at = None
                    self.persist_backoff = 0
                self.snd_wnd = wnd
                if wnd > self.max_snd_wnd:
                    self.max_snd_wnd = wnd
                self.snd_wl1 = seg.seq
                self.snd_wl2 = ack

        # State-specific ACK processing.
        fin_acked = self.fin_queued and seq.gt(self.snd_una, self.fin_seq)
        if st is S.FIN_WAIT_1 and fin_acked:
            self.set_state(S.FIN_WAIT_2, now, "rcv ACK of FIN")
            if self.user_closed:
                self._arm_fin2(now)
        elif st is S.CLOSING and fin_acked:
            self._enter_time_wait(now, "rcv ACK of FIN")
            return False
        elif st is S.LAST_ACK and fin_acked:
            self._to_closed(now, "rcv ACK of FIN")
            return False
        return True

    def _new_ack(self, seg: Segment, ack: int, now: int) -> None:
        """SND.UNA < SEG.ACK =< SND.NXT: new data acknowledged."""
        acked = seq.diff(ack, self.snd_una)
        data_acked = acked
        tlp_loss = False
        tlp = self.tlp
        if tlp is not None and seq.ge(ack, tlp[0]) and (not tlp[1] or seq.gt(ack, tlp[0])):
            # RFC 8985 §7.4.2 (Linux's tcp_process_tlp_ack): the episode of a probe of
            # new data ends when it is acknowledged; that of a retransmitted probe
            # ends with a loss once an ACK goes beyond it with no D-SACK having
            # called the probe a duplicate (at exactly TLP.end_seq the D-SACK may
            # still come).  The reduction comes before cwnd grows on this ACK.
            tlp_loss = tlp[1]
            self.tlp = None
            if tlp_loss:
                self.cc.on_cwnd_reduction(seq.diff(self.snd_nxt, self.snd_una), now)
                self.stack.mib.TCPLossProbeRecovery += 1
                if self.ecn_ok:
                    self.ecn_queue_cwr = True  # RFC 3168 §6.1.2: CWR after any reduction
        if self.fin_queued and seq.gt(ack, self.fin_seq):
            data_acked -= 1  # the FIN's sequence number carries no data
        if data_acked > 0:
            sb = self.sb
            if sb.is_rack:
                if cast(Rack, sb).acked(self.sendbuf.head + data_acked, now, self.rtt.min_rtt):
                    self.stack.mib.TCPSACKReorder += 1
            self.sendbuf.ack(data_acked)
            if sb.sacked:
                sb.advance(self.sendbuf.head)
        self.snd_una = ack
        if seq.lt(self.rtx_nxt, ack):
            self.rtx_nxt = ack
        self.bytes_acked += data_acked
        self.retries = 0
        self.first_rtx_at = None
        self.keepalive_probes = 0

        # RTT sample: Karn's algorithm on the one timed segment; else TSecr (RFC 7323 §4.1).
        rtt_us = 0
        if self.rtt_seq is not None and seq.gt(ack, self.rtt_seq):
            rtt_us = now - self.rtt_time
            self.rtt_seq = None
        elif self.ts_ok and seg.ts is not None and seg.ts[1]:
            rtt_us = ((self._ts_val(now) - seg.ts[1]) % TS_WRAP) * 1000
            if rtt_us > 60_000_000:
                rtt_us = 0
        if rtt_us > 0:
            self.rtt.sample(rtt_us)
        else:
            self.rtt.reset_backoff()

        flight = seq.diff(self.snd_nxt, ack)
        if self.in_recovery:
            if seq.ge(ack, self.recover):
                # RFC 6582 §3.2 step 4 / RFC 6675 §5: full acknowledgment, exit recovery.
                self.in_recovery = False
                self.dupacks = 0
                self.cc.on_exit_recovery(flight)
                sb = self.sb
                if sb.is_rack:
                    rk = cast(Rack, sb)
                    if rk.persist:  # RFC 8985 §6.2 step 4: reo_wnd_mult lasts 16 recoveries
                        rk.persist -= 1
                        if not rk.persist:
                            rk.mult = 1
            elif self.sack_ok:
                pass  # RFC 6675: the pipe shrank; _push sends what the window now allows
            else:
                # Step 5: partial ACK: retransmit the next unacknowledged segment.
                self.cc.on_partial_ack(acked)
                self._retransmit_head(now)
        else:
            self.dupacks = 0
            if seq.lt(self.recover, ack):
                # recover follows SND.UNA once passed, so that it never falls 2^31
                # behind (where SND.UNA >= recover would read false for 2 GiB).
                self.recover = ack
            e = self.ecn
            cwr = e is not None and e.cwr_high is not None
            if cwr and e is not None and e.cwr_high is not None and seq.gt(ack, e.cwr_high):
                e.cwr_high = None  # RFC 3168 §6.1.2: the reduced window is acknowledged
                cwr = False
            # Grow only a window that is in use (RFC 7661; Linux's tcp_is_cwnd_limited):
            # data waiting to be sent, or the flight this ACK found filled the window
            # (in slow start, half of it).  An application-limited sender's cwnd
            # stays put.  None in the CWR state or on the ACK that ended a probe
            # with a loss.
            cc = self.cc
            was = flight + acked
            if not tlp_loss and not cwr and (
                len(self.sendbuf) > flight
                or (cc.cwnd < 2 * was if cc.cwnd < cc.ssthresh else was + self.snd_mss >= cc.cwnd)
            ):
                cc.on_ack(data_acked, flight, now, rtt_us or self.rtt.srtt)
        # RFC 6298 (5.2)/(5.3): all acked -> stop the timer; else restart it
        # (or schedule a loss probe, RFC 8985 §7.2, as Linux's tcp_set_xmit_timer).
        self.pto = 0
        if self.snd_una == self.snd_nxt:
            self.rtx_at = None
            sb = self.sb
            if sb.is_rack and not self.in_recovery and cast(Rack, sb).pristine:
                self.sb = NO_SACKS  # nothing in flight: an idle TCB keeps no log
        else:
            self.rtx_at = now + self.rtt.rto
            if self.sack_ok:
                self._schedule_probe(now)
        self._wake()  # send buffer space was freed

    def _maybe_dupack(self, seg: Segment, now: int, sacked_new: int = 0) -> None:
        """RFC 5681 §2 'duplicate acknowledgment' and §3.2 fast retransmit; RFC 6582
        recovery.  With SACK, an ACK that SACKs new data counts too (RFC 6675 §5)."""
        if not sacked_new and (
            seg.payload
            or seg.flags & (SYN | FIN)
            or self.snd_una == self.snd_nxt
            or (seg.window << self.snd_wscale) != self.snd_wnd
        ):
            return
        self.dupacks += 1
        if self.in_recovery:
            if not self.sack_ok:
                self.cc.on_dupack_in_recovery()
            return
        if self.sack_ok:
            return  # _maybe_enter_sack_recovery decides
        if self.dupacks == 3:
            # RFC 6582 §3.2 step 2: enter fast retransmit unless this loss is already recovered
            # ("covers more than recover", the highest sequence number sent: recover here
            # is SND.NXT then, one past it, hence >=).
            if seq.ge(self.snd_una, self.recover):
                self.recover = self.snd_nxt
                self.in_recovery = True
                flight = seq.diff(self.snd_nxt, self.snd_una)
                self._enter_recovery_cc(flight, now)
                self.stack.mib.TCPRenoRecovery += 1
                self.stack.mib.TCPFastRetrans += 1
                self.stack._emit(now, self, ev.INFO, "fast retransmit (3 duplicate ACKs)")
                self._retransmit_head(now)

    # -- SACK (RFC 2018) and SACK-based loss recovery (RFC 6675) ---------------------
    def _sack_update(self, seg: Segment, now: int) -> int:
        """Merge the segment's SACK blocks into the scoreboard; returns new SACKed bytes."""
        blocks = seg.sack_blocks
        if not blocks:
            return 0
        head = self.sendbuf.head
        una, nxt = self.snd_una, self.snd_nxt
        new = 0
        rk = cast(Rack, self.sb) if self.sb.is_rack else None
        high = -1
        for left, right in blocks:
            # RFC 2883: a block below SND.UNA (or the cumulative ACK) is a D-SACK.
            if seq.le(right, seg.ack) or seq.le(right, una):
                self.stack.mib.TCPDSACKRecv += 1
                if rk is not None:
                    rk.dsack = True
                if self.tlp is not None and right == self.tlp[0] and self.tlp[1]:
                    self.tlp = None  # RFC 8985 §7.4.2: the probe was a duplicate, no loss
                continue
            if not (seq.lt(left, right) and seq.le(una, left) and seq.le(right, nxt)):
                self.stack.mib.TCPSACKDiscard += 1  # a block outside what we sent: ignore it
                continue
            s = head + seq.diff(left, una)
            e = head + seq.diff(right, una)
            if self.fin_queued and seq.gt(right, self.fin_seq):
                e -= 1  # a SACKed FIN is not data
            sb = self.sb
            if sb is NO_SACKS:
                sb = self.sb = Scoreboard()  # the first SACK block this connection sees
            if rk is not None:
                # RACK_update (RFC 8985 §6.2) with what this block newly SACKs.
                if high < 0:
                    high = rk.highest() or head
                for ps, pe in rk.unsacked(s, e):
                    if rk.sacked_range(ps, pe, now, self.rtt.min_rtt, high):
                        self.stack.mib.TCPSACKReorder += 1
            got = sb.add(s, e)
            if got < 0:
                self.stack.mib.TCPSACKDiscard += 1
            else:
                new += got
        return new

    def _maybe_enter_sack_recovery(self, now: int) -> None:
        """RFC 6675 §5: enter loss recovery when DupAcks >= DupThresh or
        IsLost(HighACK + 1), unless this loss was already recovered."""
        mss = self.eff_mss()
        lost_head = self.sb.sacked_above(self.sendbuf.head) > 2 * mss
        # A loss at RecoveryPoint itself is a new episode (HighACK > the highest
        # sequence number sent, which is RecoveryPoint - 1 here).
        if (self.dupacks >= 3 or lost_head) and seq.ge(self.snd_una, self.recover):
            self._enter_sack_recovery(now, "SACK loss recovery (RFC 6675)")

    def _enter_recovery_cc(self, flight: int, now: int) -> None:
        """The congestion response to a loss at the start of fast recovery: once
        per window together with ECN (RFC 3168 §6.1.2) -- a window an ECE already
        reduced is not reduced again (Linux's tcp_enter_recovery skips
        tcp_init_cwnd_reduction in CWR; recovery takes over from it) -- and
        followed by CWR on the next new data (tcp_ecn_queue_cwr)."""
        cc = self.cc
        if self.cwr_high is not None:
            self.cwr_high = None
            cc.cwnd = cc.ssthresh + 3 * cc.mss  # RFC 6582 §3.2 step 2's inflation, no new ssthresh
        else:
            cc.on_enter_recovery(flight, now)
        if self.ecn_ok:
            self.ecn_queue_cwr = True

    def _enter_sack_recovery(self, now: int, why: str) -> None:
        self.recover = self.snd_nxt  # RecoveryPoint = HighData
        self.in_recovery = True
        self.tlp = None  # recovery takes over from the probe
        if self.pto == PTO:
            # ... and from its timeout: the timer is the RTO again, from the
            # head's retransmission (RFC 8985 §7.2; Linux: tcp_xmit_retransmit_queue).
            self.pto = 0
            self.rtx_at = now + self.rtt.rto
        self.high_rxt = self.sendbuf.head
        flight = seq.diff(self.snd_nxt, self.snd_una)
        self._enter_recovery_cc(flight, now)
        self.cc.cwnd = self.cc.ssthresh  # RFC 6675 §5 (4.2): cwnd = ssthresh; the pipe does the rest
        self.stack.mib.TCPSackRecovery += 1
        self.stack.mib.TCPFastRetrans += 1
        self.stack._emit(now, self, ev.INFO, why)

    # -- RACK (RFC 8985 §6) ----------------------------------------------------------
    def _rack_reo_wnd(self, rk: Rack) -> int:
        """RFC 8985 §6.2 step 4's reordering window, as Linux's tcp_rack_reo_wnd:
        0 while no reordering was seen and either in recovery or with DupThresh
        segments SACKed (unless tcp_recovery has bit 4); else min_rtt/4 times the
        D-SACK-adapted multiplier, at most SRTT."""
        if not rk.reord:
            if self.in_recovery:
                return 0
            if rk.sacked >= 3 * self.eff_mss() and not self.config.tcp_recovery & RACK_NO_DUPTHRESH:
                return 0
        return min((self.rtt.min_rtt >> 2) * rk.mult, self.rtt.srtt)

    def _rack_on_ack(self, rk: Rack, now: int) -> None:
        """After an ACK's RACK_update: adapt reo_wnd to D-SACKs (§6.2 step 4), then
        RACK_detect_loss (step 5) when the ACK delivered something and there is
        SACK information or a recovery in progress (Linux: a "dubious" ACK)."""
        if rk.dsack_round is not None and rk.base >= rk.dsack_round:
            rk.dsack_round = None
        if rk.dsack:
            rk.dsack = False
            if rk.dsack_round is None and not self.config.tcp_recovery & RACK_STATIC_REO_WND:
                rk.dsack_round = self.sendbuf.head + seq.diff(self.snd_nxt, self.snd_una)
                rk.mult = min(rk.mult + 1, 0xFF)
                rk.persist = PERSIST_RECOVERIES
        if rk.advanced and (rk.sacked or rk.nlost or self.in_recovery):
            self._rack_detect(rk, now)

    def _rack_detect(self, rk: Rack, now: int) -> int:
        """RACK_detect_loss; a loss starts recovery (Linux: tcp_rack_mark_lost, then
        tcp_time_to_recover sees lost_out); segments not yet old enough arm the
        reordering timer (§6.3).  Returns how many were newly marked lost."""
        new, lost_rtx, timeout = rk.detect(now, self._rack_reo_wnd(rk))
        if lost_rtx:
            self.stack.mib.TCPLostRetransmit += lost_rtx
        if rk.nlost and not self.in_recovery and seq.ge(self.snd_una, self.recover):
            self._enter_sack_recovery(now, "RACK loss recovery (RFC 8985)")
        if timeout:
            at = now + timeout + RACK_TIMER_SLACK_US
            if self.rtx_at is None or self.pto or at < self.rtx_at:
                self.rtx_at = at
                self.pto = REO
        return new

    def _on_reo_timeout(self, now: int) -> None:
        """RFC 8985 §6.3 (Linux's tcp_rack_reo_timeout): detect again; send what is
        now lost; the RTO runs again unless the timer was re-armed."""
        sb = self.sb
        if self.snd_una == self.snd_nxt or self.state not in PUSH_STATES or not sb.is_rack:
            return
        self.stack._emit(now, self, ev.TIMER, "RACK reordering timeout (RFC 8985)")
        if self._rack_detect(cast(Rack, sb), now):
            self._push(now)
        if self.rtx_at is None:
            self.rtx_at = now + self.rtt.rto

    def _pipe(self, lost_holes: list[tuple[int, int]]) -> int:
        """RFC 6675 SetPipe(), in bytes: outstanding, less SACKed, less what is
        deemed lost and not yet retransmitted (holes above HighRxt)."""
        outstanding = seq.diff(self.snd_nxt, self.snd_una)
        lost = 0
        for s, e in lost_holes:
            if e > self.high_rxt:
                lost += e - max(s, self.high_rxt)
        return max(outstanding - self.sb.sacked - lost, 0)

    def _sack_retransmit(self, now: int) -> int:
        """RFC 6675 NextSeg() rule 1: retransmit lost holes above HighRxt while
        cwnd - pipe allows.  Returns the pipe after sending."""
        mss = self.eff_mss()
        sb = self.sendbuf
        if self.sb.is_rack:
            return self._rack_retransmit(cast(Rack, self.sb), mss, now)
        holes = self.sb.lost_holes(sb.head, 2 * mss)
        pipe = self._pipe(holes)
        for s, e in holes:
            if e <= self.high_rxt:
                continue
            off = max(s, self.high_rxt)
            while off < e and self.cc.cwnd - pipe >= mss:
                n = min(mss, e - off, sb.tail - off)
                if n <= 0:
                    break
                sseq = seq.add(self.snd_una, off - sb.head)
                self._send_retransmission(sseq, n, now)
                off += n
                self.high_rxt = off
                pipe += n
            if self.cc.cwnd - pipe < mss:
                break
        return pipe

    def _rack_retransmit(self, rk: Rack, mss: int, now: int) -> int:
        """NextSeg() rule 1 with RACK's marks: retransmit what RACK marked lost,
        lowest first, while cwnd - pipe allows.  The pipe is Linux's in-flight
        count in bytes: outstanding, less SACKed, less marked lost and not yet
        retransmitted.  Returns the pipe after sending."""
        holes = rk.lost_ranges()
        lost = 0
        for s, e in holes:
            lost += e - s
        pipe = max(seq.diff(self.snd_nxt, self.snd_una) - rk.sacked - lost, 0)
        sb = self.sendbuf
        cwnd = self.cc.cwnd
        for s, e in holes:
            off = s
            while off < e and cwnd - pipe >= mss:
                n = min(mss, e - off, sb.tail - off)
                if n <= 0:
                    break
                self._send_retransmission(seq.add(self.snd_una, off - sb.head), n, now)
                off += n
                pipe += n
            if cwnd - pipe < mss:
                break
        return pipe

    def _send_retransmission(self, sseq: int, n: int, now: int) -> None:
        """Resend n data bytes starting at sseq (plus the FIN if it follows them)."""
        sb = self.sendbuf
        off = sb.head + seq.diff(sseq, self.snd_una)
        payload = sb.peek(off, n)
        flags = PSH if off + n == sb.tail else 0
        if self.fin_queued and seq.add(sseq, n) == self.fin_seq and seq.gt(self.snd_nxt, self.fin_seq):
            flags |= FIN
        seg = self._make_segment(sseq, flags, payload, now)
        if n and self.sb.is_rack:
            cast(Rack, self.sb).retransmitted(off, off + n, now)
        self.total_retrans += 1
        self.bytes_retrans += n
        self.stack.mib.RetransSegs += 1
        self.rtt_seq = None  # Karn: no RTT sample across a retransmission
        self.data_segs_out += 1
        self.stack._output(self, seg, now)
        if self.rtx_at is None:
            self.rtx_at = now + self.rtt.rto

    # -- sixth to eighth: URG, text, FIN ----------------------------------------------
    def _process_text_and_fin(self, seg: Segment, data_seq: int, now: int) -> None:
        """§3.10.7.4 sixth (URG), seventh (segment text), eighth (FIN).
        ``data_seq`` is the sequence number of the first payload byte."""
        flags = seg.flags
        payload = seg.payload
        if flags & URG and self.state in CAN_RECEIVE:
            # RFC 6093: the urgent pointer points one past the last urgent byte; data is inline.
            up = seq.add(data_seq, seg.urg)
            if seq.gt(up, self.rcv_up):
                self.rcv_up = up
        fin_seq = seq.add(data_seq, len(payload)) if flags & FIN else None
        if payload:
            if self.state in CAN_RECEIVE and not self.shut_rd:
                self._receive_text(data_seq, payload, now)
            elif self.user_closed and self.state in CAN_RECEIVE:
                # Linux: data for a closed socket is answered with RST (TCPAbortOnData).
                self.stack.mib.TCPAbortOnData += 1
                self._send_rst_for(seg, now)  # as Linux: a reset that answers this segment
                self._to_closed(now, "data after close()")
                return
            # CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: "ignore the segment text".
        if fin_seq is not None:
            if self.rcv_fin_seq is None and self.state in CAN_RECEIVE:
                wnd = self._window_offered()
                if seq.in_window(fin_seq, self.rcv_nxt, wnd + 1):
                    self.rcv_fin_seq = fin_seq
        if self.rcv_fin_seq is not None and self.rcv_fin_seq == self.rcv_nxt and not self.eof:
            self._on_fin(now)
        elif fin_seq is not None and self.eof:
            self._ack_now()  # a retransmitted FIN (our ACK was lost): acknowledge it again

    def _receive_text(self, data_seq: int, payload: bytes | memoryview, now: int) -> None:
        rcv_nxt = self.rcv_nxt
        off = seq.diff(data_seq, rcv_nxt)
        n = len(payload)
        if off < 0:  # trim what we already have (§3.10.7.4: "only the new parts are processed")
            if -off >= n:
                if self.sack_ok:
                    self.dsack = (data_seq, seq.add(data_seq, n))  # RFC 2883: report the duplicate
                    self.stack.mib.TCPDSACKOldSent += 1
                self.pingpong = False  # Linux's tcp_enter_quickack_mode on a duplicate
                self._dsack_or_ack(now)
                return
            payload = memoryview(payload)[-off:]
            n += off
            off = 0
        wnd = self._window_offered()
        if off + n > wnd:  # trim to the right edge of the window
            n = max(0, wnd - off)
            if n == 0:
                self.stack.mib.TCPZeroWindowDrop += 1
                self._ack_now()
                return
            payload = memoryview(payload)[:n]
        self.data_segs_in += 1
        if off > 0 and self.sack_ok:
            # RFC 2018 §4: the first SACK block reports the most recent arrival.
            start = self.recvbuf.nxt + off
            recent = self.sack_recent
            if recent is None:
                recent = self.sack_recent = []
            elif start in recent:
                recent.remove(start)
            recent.insert(0, start)
            del recent[4:]
        advanced = self.recvbuf.insert(off, payload)
        if advanced > 0:
            self.rcv_nxt = seq.add(rcv_nxt, advanced)
            self.bytes_received += advanced
            self._wake()
            if off > 0 or self.recvbuf.ooo_bytes or advanced > n:
                self._ack_now()  # filling a hole: ACK at once (RFC 5681 §4.2)
            else:
                self._schedule_ack(n, now)
        else:
            if advanced < 0:
                self.stack.mib.TCPOFODrop += 1
            else:
                self.stack.mib.TCPOFOQueue += 1
            # Out-of-order segment: an immediate duplicate ACK (RFC 5681 §4.2, RFC 9293 §3.8.6.3).
            self._ack_now()

    def _dsack_or_ack(self, now: int) -> None:
        # An old duplicate: ACK at once so a sender that lost our ACK moves on.
        self._ack_now()

    def _ack_now(self) -> None:
        """An ACK is due without delay; it goes out once, at the end of segment
        processing (or on a data segment sent meanwhile)."""
        self.ack_pending = True
        self.delack_at = None
        self.delack_segs = 2  # due now, as if two segments were waiting (a FIN keeps it so)

    def _on_fin(self, now: int) -> None:
        """§3.10.7.4 eighth: the FIN is in order."""
        self.rcv_nxt = seq.add(self.rcv_nxt, 1)
        self.eof = True
        self._wake()
        st = self.state
        if st in (S.SYN_RECEIVED, S.ESTABLISHED):
            self.set_state(S.CLOSE_WAIT, now, "rcv FIN")
            # Linux's tcp_fin: the application is expected to answer with its own
            # FIN, so the ACK is delayed (interactive mode) to ride on it -- unless
            # more than a full segment is still unacknowledged.
            # Before any data has arrived Linux's ato is still 0: the "delayed" ACK
            # goes out on the next tick, so here at once.  An ACK already due now
            # (a hole just filled, two segments waiting) stays due now.
            self.pingpong = True
            self.ack_pending = True
            if self.delack_segs >= 2 or not self.bytes_received:
                self.delack_at = None
            elif self.delack_at is None:
                self.delack_at = now + self.config.tcp_delack_min_ms * 1000
            return
        self._ack_now()
        if st is S.FIN_WAIT_1:
            if self.fin_queued and seq.gt(self.snd_una, self.fin_seq):
                self._send_ack(now)
                self._enter_time_wait(now, "rcv FIN (our FIN acked)")
                return
            self.set_state(S.CLOSING, now, "rcv FIN (simultaneous close)")
        elif st is S.FIN_WAIT_2:
            self._send_ack(now)  # now: the TIME-WAIT record takes over from here
            self._enter_time_wait(now, "rcv FIN")

    def _enter_time_wait(self, now: int, cause: str) -> None:
        self.rtx_at = self.persist_at = self.delack_at = self.keepalive_at = self.fin2_at = None
        self.set_state(S.TIME_WAIT, now, cause)
        # The stack replaces the TCB by a compact TIME-WAIT record (timewait.py).
        self.stack._enter_time_wait(self, now)

    # ==========================================================================
    # Output
    # ==========================================================================
    def _ts_val(self, now: int) -> int:
        """RFC 7323 §5.4: a TS clock in milliseconds (as Linux), with a per-connection offset."""
        return (now // 1000 + self.ts_offset) % TS_WRAP

    def _options(self, now: int) -> tuple[Opt, ...]:
        if self.ts_ok:
            return (NOP, NOP, Opt(OPT_TS, (self._ts_val(now), self.ts_recent)))
        return ()

    def _sack_options(self) -> tuple[Opt, ...]:
        """SACK blocks (RFC 2018 §4): a D-SACK first if one is due (RFC 2883), then
        the block holding the most recent arrival, then other recent ones, then the rest."""
        rb = self.recvbuf
        dsack = self.dsack
        if not self.sack_ok or not (rb.ooo_count or dsack):
            return ()
        base = self.recvbuf.nxt
        nxt = self.rcv_nxt
        limit = 3 if self.ts_ok else 4
        out: list[tuple[int, int]] = []
        if dsack is not None:
            out.append(dsack)
            self.dsack = None
        chosen: list[tuple[int, int]] = []
        recent = self.sack_recent or ()
        for start in recent:
            blk = rb.block_containing(start)
            if blk is not None and blk not in chosen:
                chosen.append(blk)
        self.sack_recent = [s for s in recent if s >= base] or None
        for b in rb.first_blocks(2 * limit):  # O(limit) work, whatever the queue holds
            if len(chosen) >= limit:
                break
            if b not in chosen:
                chosen.append(b)
        for s, e in chosen:
            if len(out) >= limit:
                break
            out.append((seq.add(nxt, s - base), seq.add(nxt, e - base)))
        return (NOP, NOP, Opt(OPT_SACK, tuple(out)))

    def eff_mss(self) -> int:
        """Payload bytes per segment: the peer's MSS less our per-segment options
        (RFC 9293 §3.7.1: Eff.snd.MSS subtracts the TCP header options; with
        timestamps that is 12 bytes, so 1460 becomes 1448 as on Linux)."""
        mss = self.snd_mss
        if self.ts_ok:
            mss -= 12
        # Linux's tcp_bound_to_half_wnd: against a peer with a tiny window, segments
        # of at most half the largest window it offered (the whole window if < 536).
        mw = self.max_snd_wnd
        cutoff = mw >> 1 if mw > 536 else mw
        if 0 < cutoff < mss:
            mss = max(cutoff, 48 - (12 if self.ts_ok else 0))
        if self.sack_ok and self.recvbuf.ooo_bytes:
            mss -= 4 + 8 * min(self.recvbuf.ooo_count, 3 if self.ts_ok else 4)
        return mss

    def _window_offered(self) -> int:
        """RCV.WND as the peer sees it: what we last advertised beyond RCV.NXT."""
        w = seq.diff(self.rcv_adv, self.rcv_nxt)
        return w if w > 0 else 0

    def _window_now(self) -> int:
        """The window to advertise now, with receiver SWS avoidance (§3.8.6.2.1):
        move the right edge only when the increase is at least min(BUFF/2, MSS)."""
        free = self.recvbuf.free
        cur = self._window_offered()
        if free <= cur:
            return cur  # never shrink the window (§3.8.6: SHLD-14)
        if free - cur >= min(self.recvbuf.capacity // 2, self.rcv_mss):
            return free
        return cur

    def _window_field(self) -> int:
        """The 16-bit window field.  A new window is rounded down to the scale, but
        the window already offered is rounded *up*, so the right edge never moves
        left (§3.8.6, SHLD-14; Linux's tcp_select_window aligns up the same way)."""
        ws = self.rcv_wscale
        w = self._window_now() >> ws
        cur = self._window_offered()
        if cur:
            held = (cur + (1 << ws) - 1) >> ws
            if held > w:
                w = held
        if w > 0xFFFF:
            w = 0xFFFF
        self.rcv_adv = seq.add(self.rcv_nxt, w << self.rcv_wscale)
        return w

    def _maybe_window_update(self, before: int, now: int) -> None:
        if self.state not in CAN_RECEIVE or self.eof:
            return
        after = self._window_now()
        # Linux-like: announce when the window at least doubles and grows by a segment,
        # in particular when it reopens from zero (no deadlock on a closed window).
        if after >= 2 * before and after - before >= self.rcv_mss:
            if before == 0:
                self.stack.mib.TCPFromZeroWindowAdv += 1
            self.ack_pending = True
            self._send_ack(now)

    def _make_segment(self, sseq: int, flags: int, payload: bytes | memoryview, now: int) -> Segment:
        opts = self._options(now)
        if self.sack_ok and (self.recvbuf.ooo_bytes or self.dsack is not None):
            opts = opts + self._sack_options()
        wnd = self._window_field()
        self.last_ack_sent = self.rcv_nxt
        self.ack_pending = False
        self.delack_at = None
        self.delack_segs = 0
        urg = 0
        if self.urgent:
            if seq.gt(self.snd_up, sseq):
                # §3.8.5 / RFC 6093: URG set while the pointer lies ahead of this segment.
                flags |= URG
                urg = min(seq.diff(self.snd_up, sseq), 0xFFFF)
            elif seq.ge(self.snd_una, self.snd_up):
                self.urgent = False
        if self.ecn_ok:
            flags = ecn.outgoing(self, sseq, flags, payload)
        return Segment(self.local_port, self.remote_port, sseq, self.rcv_nxt, flags | ACK, wnd, urg, opts, payload)

    # The ECN state's fields (EcnState), read as their defaults while there is none.
    ecn_seen = ecn.Field[bool]("seen", False)
    ecn_demand_cwr = ecn.Field[bool]("demand_cwr", False)
    ecn_queue_cwr = ecn.Field[bool]("queue_cwr", False)
    cwr_high = ecn.Field["int | None"]("cwr_high", None)
    delivered_ce = ecn.Field[int]("delivered_ce", 0)

    def on_ecn(self, seg: Segment, now: int) -> None:
        """RFC 3168 signals on an arriving segment (the stack calls this before
        ``on_segment`` when there are any): see ``ecn.on_segment``."""
        ecn.on_segment(self, seg, now)

    def _send_ack(self, now: int) -> None:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>."""
        if self.state is S.SYN_SENT or self.state is S.CLOSED:
            return
        seg = self._make_segment(self.snd_nxt, 0, b"", now)
        self.stack._output(self, seg, now)

    def _flush_ack(self, now: int) -> None:
        if self.ack_pending and self.delack_at is None:
            self._send_ack(now)

    def _schedule_ack(self, n: int, now: int) -> None:
        """Delayed ACK (RFC 9293 §3.8.6.3, RFC 5681 §4.2): ACK at least every second
        full-sized segment, otherwise within the delayed-ACK timeout."""
        self.ack_pending = True
        self.lrcvtime = now
        # A GRO super-segment counts as the segments it coalesced.
        self.delack_segs += 1 if n <= self.rcv_mss else n // self.rcv_mss
        if self.quickack > 0 and not self.pingpong:
            self.quickack -= 1
            self.delack_at = None
            return
        if self.delack_segs >= 2:
            self.delack_at = None
            return
        if self.delack_at is None:
            self.delack_at = now + self.config.tcp_delack_min_ms * 1000

    def _send_rst(self, sseq: int, now: int) -> None:
        """An abortive RST: <SEQ=SND.NXT><CTL=RST>, with ACK as Linux sends it."""
        seg = Segment(self.local_port, self.remote_port, sseq, self.rcv_nxt, RST | ACK, 0, 0, (), b"")
        self.tos &= 0xFC  # not ECN-capable (RFC 3168 §6.1.4 spirit; Linux's INET_ECN_dontxmit)
        self.stack.mib.OutRsts += 1
        self.stack._output(self, seg, now)

    def _send_rst_for(self, bad: Segment, now: int) -> None:
        self.stack.reply_rst(self.local_addr, self.remote_addr, bad, now, self)

    def _push(self, now: int) -> None:
        """Send what the windows allow (§3.8.6): first what an RTO marked for
        retransmission (``rtx_nxt`` .. ``snd_nxt``), then new data, then the FIN.
        Sender SWS avoidance (§3.8.6.2.1) and Nagle (§3.8.6.2.2, unless
        TCP_NODELAY) hold back small segments while data is outstanding."""
        st = self.state
        if st not in PUSH_STATES:
            return
        snd_nxt = self.snd_nxt
        if self.rtx_nxt == snd_nxt and not self.in_recovery:
            # Nothing to resend: is there anything new (data, or the FIN)?
            queued_end = seq.add(self.snd_una, len(self.sendbuf) + (1 if self.fin_queued else 0))
            if snd_nxt == queued_end:
                return
        mss = self.eff_mss()
        gso_max = self.stack.gso_max
        # With segmentation offload, new data leaves in super-segments of whole MSSs.
        chunk = (gso_max // mss) * mss if gso_max > mss else mss
        sb = self.sendbuf
        snd_una = self.snd_una
        data_end = seq.add(snd_una, len(sb))  # seq just past the last queued byte
        fin_queued = self.fin_queued
        if (
            snd_una == self.snd_nxt
            and self.config.tcp_slow_start_after_idle
            and now - self.last_send_at > self.rtt.rto
        ):
            self.cc.on_idle_restart(self.config.tcp_init_cwnd)  # RFC 5681 §4.1
        sent = False
        sack_recovery = self.in_recovery and self.sack_ok
        pipe = 0
        # RACK's log of transmissions (RFC 8985 §6.1), made when a flight starts.
        log: Scoreboard | None = self.sb
        if log is not None and not log.is_rack:
            if (log is NO_SACKS and self.sack_ok and self.config.tcp_recovery & RACK_LOSS_DETECTION
                    and snd_una == self.snd_nxt):
                log = self.sb = Rack(sb.head)
            else:
                log = None
        if sack_recovery:
            pipe = self._sack_retransmit(now)
        while True:
            retransmitting = seq.lt(self.rtx_nxt, self.snd_nxt)
            if retransmitting:
                sseq, limit = self.rtx_nxt, self.snd_nxt
            else:
                sseq = self.snd_nxt
                limit = seq.add(data_end, 1) if fin_queued else data_end
            if seq.ge(sseq, limit):
                break
            data_left = seq.diff(data_end, sseq)
            if retransmitting:
                # Resend only what was sent before (new data goes out from SND.NXT).
                data_left = min(data_left, seq.diff(self.snd_nxt, sseq))
            if data_left < 0:
                data_left = 0
            in_flight = seq.diff(sseq, snd_una)
            wnd_room = self.snd_wnd - in_flight
            room = min(self.cc.cwnd - (pipe if sack_recovery else in_flight), wnd_room)
            n = min(data_left, mss if retransmitting else chunk, room)
            if n < 0:
                n = 0
            fin = fin_queued and seq.add(sseq, n) == self.fin_seq and seq.lt(self.fin_seq, limit)
            if n == 0 and not (fin and room >= 1):
                # Blocked by a window.  A zero send window with nothing in flight
                # arms the persist timer (§3.8.6.1), so a lost update cannot deadlock us.
                if wnd_room <= 0 and snd_una == self.snd_nxt and self.persist_at is None:
                    self._arm_persist(now)
                break
            if n < mss and n < data_left and not retransmitting:
                # A window-limited fragment: send it only if it is at least half the
                # largest window the peer offered or nothing is in flight (§3.8.6.2.1).
                if n < self.max_snd_wnd // 2 and snd_una != self.snd_nxt:
                    break
            if n < mss and n == data_left and not retransmitting and self._hold_small(snd_una):
                # Nagle (§3.7.4) in Minshall's form, as Linux: a small segment waits
                # while an earlier *small* segment is unacknowledged; TCP_CORK holds it anyway.
                if self.cork and snd_una == self.snd_nxt and self.persist_at is None:
                    # Linux's probe timer bounds corking (about 200 ms): tcp_write_wakeup
                    # then sends what is held.
                    self._arm_persist(now)
                break
            flags = FIN if fin else 0
            payload: bytes | memoryview = b""
            if n:
                payload = sb.peek(sb.head + seq.diff(sseq, snd_una), n)
                rest = data_left - n
                if n == data_left or (not retransmitting and (
                    room - n < min(mss, rest)
                    or (rest < mss and self._hold_small(snd_una))
                )):
                    # The end of what is queued, or the last segment a window or
                    # Nagle (holding the small rest) lets out now: PSH (Linux marks
                    # the last segment of each such flight).
                    flags |= PSH
            seg = self._make_segment(sseq, flags, payload, now)
            end = seq.add(sseq, n + (1 if fin else 0))
            if retransmitting:
                self.rtx_nxt = end
                self.total_retrans += 1
                self.bytes_retrans += n
                self.stack.mib.RetransSegs += 1
                if n and log is not None:
                    off = sb.head + seq.diff(sseq, snd_una)
                    cast(Rack, log).retransmitted(off, off + n, now)
            else:
                if n:
                    self.stack.mib.TCPOrigDataSent += 1
                    if self.rtt_seq is None:
                        self.rtt_seq, self.rtt_time = sseq, now
                    if log is not None:
                        cast(Rack, log).rec_end.append(sb.head + seq.diff(sseq, snd_una) + n)
                        cast(Rack, log).rec_ts.append(now << 2)
                self.snd_nxt = end
                self.rtx_nxt = end
                if n < mss:
                    self.snd_sml = end
            if n:
                self.data_segs_out += 1 if n <= mss else (n + mss - 1) // mss
                if not self.pingpong and now - self.lrcvtime < self.config.tcp_delack_min_ms * 1000:
                    self.pingpong = True  # a reply within ato (Linux's tcp_event_data_sent)
            pipe += n
            self.stack._output(self, seg, now)
            sent = True
            if self.rtx_at is None:
                self.rtx_at = now + self.rtt.rto  # RFC 6298 (5.1)
            if fin:
                break
        if sent:
            self.last_send_at = now
            if self.sack_ok and self.snd_nxt != snd_nxt:
                self._schedule_probe(now)  # Linux: after new data goes out (tcp_write_xmit)
            if self.stack.observers:
                self.stack._emit(now, self, ev.CC, ev.CcSample(
                    self.cc.cwnd, min(self.cc.ssthresh, 0x7FFFFFFF), seq.diff(self.snd_nxt, self.snd_una),
                    self.snd_wnd, self.rtt.srtt))

    def _hold_small(self, snd_una: int) -> bool:
        """Would a segment shorter than the MSS that ends the queued data wait?
        Linux's tcp_nagle_check: TCP_CORK holds it (even with TCP_NODELAY);
        else Nagle holds it while a small segment is unacknowledged.  A queued
        FIN sends everything."""
        if self.fin_queued:
            return False
        return self.cork or (not self.nodelay and seq.gt(self.snd_sml, snd_una))

    def set_nodelay(self, on: bool, now: int) -> None:
        """TCP_NODELAY: turning it on sends what Nagle held (tcp_push_pending_frames)."""
        self.nodelay = on
        if on and self.established:
            self._push(now)
            self._rearm()

    def set_cork(self, on: bool, now: int) -> None:
        """TCP_CORK (Linux, not RFC 9293): hold partial segments until uncorked;
        uncorking sends them at once, Nagle or not (tcp_push_pending_frames)."""
        self.cork = on
        if not on and self.established:
            self._push_held(now)
            self._rearm()

    def _push_held(self, now: int) -> None:
        """Send what Nagle or TCP_CORK holds (Linux's tcp_push_pending_frames with
        TCP_NAGLE_PUSH, and tcp_write_wakeup)."""
        cork, nodelay = self.cork, self.nodelay
        self.cork, self.nodelay = False, True
        try:
            self._push(now)
        finally:
            self.cork, self.nodelay = cork, nodelay

    def _retransmit_head(self, now: int) -> None:
        """Retransmit the first unacknowledged segment (fast retransmit / partial ACK)."""
        n = min(self.eff_mss(), len(self.sendbuf))
        if n == 0 and not (self.fin_queued and seq.gt(self.snd_nxt, self.fin_seq)):
            return
        self._send_retransmission(self.snd_una, n, now)
        self.rtx_at = now + self.rtt.rto

    # ==========================================================================
    # Timers (§3.10.8)
    # ==========================================================================
    def _rearm(self) -> None:
        """Tell the stack our earliest deadline (one heap entry per connection)."""
        t = None
        for x in (self.rtx_at, self.persist_at, self.delack_at, self.keepalive_at, self.fin2_at):
            if x is not None and (t is None or x < t):
                t = x
        if t is not None:
            self.stack._arm(self, t)

    def _arm_rtx(self, now: int) -> None:
        self.rtx_at = now + self.rtt.rto
        self._rearm()

    def _arm_persist(self, now: int) -> None:
        # Persist timer: RTO-based with exponential backoff, bounded by the maximum RTO.
        base = max(self.rtt.rto, self.config.tcp_rto_min_us)
        self.persist_at = now + min(base << self.persist_backoff, self.rtt.max_rto)

    def _arm_keepalive(self, now: int) -> None:
        self.keepalive_at = now + self.config.tcp_keepalive_time * 1_000_000

    def _arm_fin2(self, now: int) -> None:
        self.fin2_at = now + self.config.tcp_fin_timeout * 1_000_000

    def on_timer(self, now: int) -> None:
        if self.delack_at is not None and self.delack_at <= now:
            self.delack_at = None
            if self.ack_pending:
                self.stack.mib.DelayedACKs += 1
                # The application did not answer in time: leave interactive mode
                # (Linux's tcp_delack_timer_handler).
                self.pingpong = False
                self._send_ack(now)
        if self.rtx_at is not None and self.rtx_at <= now:
            self.rtx_at = None
            kind = self.pto
            self.pto = 0
            if kind == PTO:
                self._on_probe_timeout(now)
            elif kind == REO:
                self._on_reo_timeout(now)
            else:
                self._on_rto(now)
        if self.persist_at is not None and self.persist_at <= now:
            self.persist_at = None
            self._on_persist(now)
        if self.keepalive_at is not None and self.keepalive_at <= now:
            self.keepalive_at = None
            self._on_keepalive(now)
        if self.fin2_at is not None and self.fin2_at <= now:
            self.fin2_at = None
            if self.state is S.FIN_WAIT_2:
                self._to_closed(now, "tcp_fin_timeout (orphaned FIN-WAIT-2)")
        if self.state is not S.CLOSED:
            self._rearm()

    def _max_retries(self) -> int:
        st = self.state
        if st is S.SYN_SENT:
            return self.config.tcp_syn_retries
        if st is S.SYN_RECEIVED:
            return self.config.tcp_synack_retries
        if self.user_closed:
            return self.config.tcp_orphan_retries or MAX_ORPHAN_RETRIES
        return self.config.tcp_retries2

    def _give_up_after(self) -> int | None:
        """How long (µs, from the first transmission of what is being retransmitted)
        before giving up.  Linux turns the retry count into a time budget, as if
        every retry had doubled the RTO from a base (tcp_model_timeout): the SYN
        base is the initial RTO (tcp_syn_retries=6 -> 127 s), the data base is
        the minimum RTO (tcp_retries2=15 -> 924.6 s, RFC 1122's "at least 100 s").
        None: count retries instead (a simultaneous open's SYN-ACK)."""
        st = self.state
        if st is S.SYN_RECEIVED:
            return None
        base = self.config.tcp_rto_initial_ms * 1000 if st is S.SYN_SENT else self.config.tcp_rto_min_us
        boundary = self._max_retries()
        rto_max = self.rtt.max_rto
        thresh = max((rto_max // max(base, 1)).bit_length() - 1, 0)  # ilog2(RTO_MAX / base)
        if boundary <= thresh:
            return ((2 << boundary) - 1) * base
        return ((2 << thresh) - 1) * base + (boundary - thresh) * rto_max

    # -- tail loss probe (RFC 8985 §7) -----------------------------------------------
    def _schedule_probe(self, now: int) -> None:
        """RFC 8985 §7.2, as Linux's tcp_schedule_loss_probe: with SACK, outside
        loss recovery and with no probe outstanding, arm a probe timeout of
        2*SRTT (plus the peer's worst-case delayed ACK, Linux's RTO minimum, when
        one segment is in flight; else 2 ms) if it comes before the RTO."""
        if self.in_recovery or self.tlp is not None or self.config.tcp_early_retrans < 3 or self.pto == REO:
            return
        srtt = self.rtt.srtt
        if not srtt or self.state not in PUSH_STATES:
            return
        one = seq.diff(self.snd_nxt, self.snd_una) <= self.eff_mss()
        pto = 2 * srtt + (self.config.tcp_rto_min_us if one else 2_000)
        rto_at = self.rtx_at if self.rtx_at is not None and not self.pto else now + self.rtt.rto
        if now + pto < rto_at:
            self.rtx_at = now + pto
            self.pto = PTO
        else:
            self.rtx_at = rto_at
            self.pto = 0

    def _on_probe_timeout(self, now: int) -> None:
        """RFC 8985 §7.3: send one segment of new data if the peer's window allows
        (whatever the congestion window), else retransmit the last segment; then
        the RTO runs again."""
        if self.snd_una == self.snd_nxt or self.state not in PUSH_STATES:
            return
        self.stack._emit(now, self, ev.TIMER, "loss probe (RFC 8985)")
        mss = self.eff_mss()
        flight = seq.diff(self.snd_nxt, self.snd_una)
        high = self.snd_nxt
        self.tlp = (high, False)  # no further probe while this one is out
        unsent = len(self.sendbuf) - flight
        if unsent > 0 and self.snd_wnd - flight >= min(mss, unsent):
            self.cc.cwnd += mss  # Linux: a probe ignores cwnd (tcp_write_xmit push_one=2)
            try:
                self._push(now)
            finally:
                self.cc.cwnd -= mss
        retrans = self.snd_nxt == high
        if retrans:
            # The last segment again: what lies past the last MSS boundary of the flight.
            fin_out = self.fin_queued and seq.gt(self.snd_nxt, self.fin_seq)
            data = flight - (1 if fin_out else 0)
            n = data % mss or min(mss, data)
            self._send_retransmission(seq.add(self.snd_una, data - n), n, now)
        self.tlp = (self.snd_nxt, retrans)
        self.stack.mib.TCPLossProbes += 1
        self.pto = 0
        self.rtx_at = now + self.rtt.rto

    def _on_rto(self, now: int) -> None:
        """RFC 6298 §5 (5.4)-(5.7): retransmit the earliest unacknowledged segment,
        back off, restart the timer; give up after the retry limit."""
        st = self.state
        if st is S.CLOSED or st is S.TIME_WAIT:
            return
        if self.snd_una == self.snd_nxt and st not in (S.SYN_SENT, S.SYN_RECEIVED):
            return
        self.stack._emit(now, self, ev.TIMER, "rto")
        if self.first_rtx_at is None:
            # When the timer now expiring was armed: the head segment's (re)transmission.
            self.first_rtx_at = now - self.rtt.rto
        elapsed = now - self.first_rtx_at
        user_timeout = self.user_timeout_ms and elapsed >= self.user_timeout_ms * 1000
        budget = self._give_up_after()
        exhausted = self.retries >= self._max_retries() if budget is None else elapsed >= budget
        if exhausted or user_timeout:
            self.stack.mib.TCPAbortOnTimeout += 1
            soft = self.soft_error  # Linux's tcp_write_err(): sk_err_soft ?: ETIMEDOUT
            self._fail(soft[1] if soft is not None and soft[0] == self.snd_una else
                       TimeoutError(110, "Connection timed out (no acknowledgment after retransmissions)"), now)
            return
        self.retries += 1
        self.stack.mib.TCPTimeouts += 1
        if not (st is S.SYN_SENT and self.retries <= self.config.tcp_syn_linear_timeouts):
            self.rtt.on_timeout()  # RFC 6298 (5.5); Linux keeps the first SYN retries linear
        self.rtt_seq = None  # Karn: no sample from retransmitted data
        if st is S.SYN_SENT:
            self.stack.mib.TCPSynRetrans += 1
            self.total_retrans += 1
            self.stack.mib.RetransSegs += 1
            self._send_syn(now, ack=False)
        elif st is S.SYN_RECEIVED:
            self.stack.mib.TCPSynRetrans += 1
            self.total_retrans += 1
            self.stack.mib.RetransSegs += 1
            self._send_syn(now, ack=True)
        else:
            flight = seq.diff(self.snd_nxt, self.snd_una)
            self.cc.on_rto(flight, now)
            self.in_recovery = False
            self.tlp = None
            self.cwr_high = None  # an RTO ends an ECN reduction (Linux: CWR -> Loss)
            if self.ecn_ok:
                self.ecn_queue_cwr = True  # RFC 3168 §6.1.2: CWR after any reduction
            self.sb.clear()  # RFC 2018 §8: after a timeout, SACK information is not trusted
            self.dupacks = 0
            self.recover = self.snd_nxt  # RFC 6582 §4: no fast retransmit for losses before this
            self.rtx_nxt = self.snd_una  # go back: resend from SND.UNA as the window allows
            self._push(now)
        self.rtx_at = now + self.rtt.rto

    def _on_persist(self, now: int) -> None:
        """Zero-window probe (§3.8.6.1).  Like Linux: a zero-length segment with
        SEQ = SND.UNA - 1, which the peer must answer with an ACK carrying its window."""
        if self.snd_wnd > 0 or not len(self.sendbuf) and not self.fin_queued:
            self.persist_backoff = 0
            if self.cork:
                self._push_held(now)
            else:
                self._push(now)
            return
        self.stack._emit(now, self, ev.TIMER, "persist")
        self.stack.mib.TCPWinProbe += 1
        seg = self._make_segment(seq.add(self.snd_una, -1), 0, b"", now)
        self.stack._output(self, seg, now)
        if self.persist_backoff < 16:
            self.persist_backoff += 1
        self._arm_persist(now)

    def _on_keepalive(self, now: int) -> None:
        """RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6: after idle, probe; give up after the probes."""
        if not self.keepalive or self.state not in (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_2):
            return
        cfg = self.config
        if self.snd_una != self.snd_nxt or len(self.sendbuf):
            self._arm_keepalive(now)  # data in flight: the RTO handles a dead peer
            return
        idle_until = self.last_rcv_at + cfg.tcp_keepalive_time * 1_000_000
        if self.keepalive_probes == 0 and now < idle_until:
            self.keepalive_at = idle_until  # the peer spoke since: idle again from then
            return
        if self.keepalive_probes >= cfg.tcp_keepalive_probes:
            self._send_rst(self.snd_nxt, now)  # Linux tells a peer that might come back
            self._fail(TimeoutError(110, "Connection timed out (keepalive probes unanswered)"), now)
            return
        self.keepalive_probes += 1
        self.stack.mib.TCPKeepAlive += 1
        self.stack._emit(now, self, ev.TIMER, "keepalive")
        seg = self._make_segment(seq.add(self.snd_una, -1), 0, b"", now)
        self.stack._output(self, seg, now)
        self.keepalive_at = now + self.config.tcp_keepalive_intvl * 1_000_000

    # ==========================================================================
    def _drop(self, seg: Segment, now: int, reason: str) -> None:
        self.stack._emit(now, self, ev.DROP, reason)

    def info(self, now: int) -> dict[str, object]:
        """Per-connection info in the spirit of Linux's struct tcp_info (tcpi_* without the prefix)."""
        timer = "off"
        expires = None
        for name, at in (("on", self.rtx_at), ("persist", self.persist_at), ("keepalive", self.keepalive_at), ("on", self.fin2_at)):
            if at is not None and (expires is None or at < expires):
                timer, expires = name, at
        flight = seq.diff(self.snd_nxt, self.snd_una) if self.established else 0
        return {
            "state": self.state.value,
            "rto": self.rtt.rto,
            "ato": self.config.tcp_delack_min_ms * 1000,
            "snd_mss": self.eff_mss(),  # as Linux's mss_cache: timestamps taken off
            "rcv_mss": self.rcv_mss,
            "rtt": self.rtt.srtt,
            "rttvar": self.rtt.rttvar,
            "min_rtt": self.rtt.min_rtt,
            "snd_cwnd": self.cc.cwnd // max(self.snd_mss, 1),
            "snd_cwnd_bytes": self.cc.cwnd,
            "snd_ssthresh": min(self.cc.ssthresh, 0x7FFFFFFF) // max(self.snd_mss, 1),
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": self._window_offered(),
            "snd_wscale": self.snd_wscale,
            "rcv_wscale": self.rcv_wscale,
            "options": [n for n, on in (("ts", self.ts_ok), ("sack", self.sack_ok), ("wscale", self.ws_ok),
                                        ("ecn", self.ecn_ok), ("ecnseen", self.ecn_seen)) if on],
            "delivered_ce": self.delivered_ce,
            "unacked": flight,
            "sacked": 0,
            "lost": cast(Rack, self.sb).nlost if self.sb.is_rack else 0,  # RACK's marks not yet resent
            "retrans": seq.diff(self.snd_nxt, self.rtx_nxt) if seq.lt(self.rtx_nxt, self.snd_nxt) else 0,
            "retransmits": self.retries,
            "total_retrans": self.total_retrans,
            "bytes_retrans": self.bytes_retrans,
            "rcvbuf": self.recvbuf.capacity,
            "backoff": self.rtt.backoff,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "segs_out": self.segs_out,
            "segs_in": self.segs_in,
            "data_segs_out": self.data_segs_out,
            "data_segs_in": self.data_segs_in,
            "delivery_rate": (self.bytes_acked * 1_000_000 // max(now - self.created_at, 1)),
            "ca_state": "recovery" if self.in_recovery else ("loss" if self.retries else "open"),
            "congestion_control": self.cc.name,
            "timer": timer,
            "timer_expires_us": None if expires is None else expires - now,
            "send_q": len(self.sendbuf),
            "recv_q": self.recvbuf.ready,
        }

    # ==========================================================================
    # ICMP errors (RFC 9293 §3.9.2.2, RFC 1122 §4.2.3.9), as Linux's
    # tcp_v4_err()/tcp_v6_err(); the stack demultiplexed the quoted 4-tuple.
    # ==========================================================================
    def on_icmp_error(self, msg: IcmpMessage, effect: int, err: int, now: int) -> None:
        """An ICMP error quoting one of our segments: see ``icmp.apply_to``."""
        icmp.apply_to(self, msg, effect, err, now)


__all__ = ["Connection", "OPT_SACK"]
