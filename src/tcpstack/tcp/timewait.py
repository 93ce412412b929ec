"""TIME-WAIT as a compact record, not a whole TCB (Linux: inet_timewait_sock).

RFC 9293 §3.6.1 / §3.10.7.4: a connection that closed first waits 2*MSL so
that old duplicates die and a lost final ACK can be repeated.  All that needs
is the 4-tuple, the two sequence numbers, the timestamp state and a deadline.

* A retransmitted FIN is ACKed again and restarts the timer.
* RST: with tcp_rfc1337=1 it is ignored (RFC 1337 "TIME-WAIT assassination");
  otherwise an exactly in-sequence RST ends TIME-WAIT early, as in Linux.
* A new SYN for the same 4-tuple is accepted as a new connection when it is
  provably newer: a higher sequence number, or a newer timestamp when both
  sides use timestamps (RFC 6191 and Linux's tcp_timewait_state_process).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from ..wire.tcp import ACK, FIN, RST, SYN, Opt, Segment
from . import seq

if TYPE_CHECKING:
    from .config import Config
    from .connection import Connection
    from .stack import Stack

NOP = Opt(1, None)


class TimeWait:
    __slots__ = (
        "stack", "key", "conn_id", "snd_nxt", "rcv_nxt", "rcv_wnd", "rcv_wscale", "ts_ok",
        "ts_recent", "ts_recent_at", "ts_offset", "expires", "timer_at", "_conn",
    )

    stack: Stack
    key: tuple[str, int, str, int]
    conn_id: int
    snd_nxt: int
    rcv_nxt: int
    rcv_wnd: int
    rcv_wscale: int
    ts_ok: bool
    ts_recent: int
    ts_recent_at: int
    ts_offset: int
    expires: int
    _conn: weakref.ReferenceType[Connection]

    def __init__(self) -> None:  # use from_connection
        self.timer_at: int | None = None

    @classmethod
    def from_connection(cls, conn: Connection, now: int) -> TimeWait:
        tw = cls()
        tw.stack = conn.stack
        tw.key = conn.key
        tw.conn_id = conn.conn_id
        tw.snd_nxt = conn.snd_nxt
        tw.rcv_nxt = conn.rcv_nxt
        tw.rcv_wnd = conn._window_offered()
        tw.rcv_wscale = conn.rcv_wscale
        tw.ts_ok = conn.ts_ok
        tw.ts_recent = conn.ts_recent
        tw.ts_recent_at = conn.ts_recent_at
        tw.ts_offset = conn.ts_offset
        tw.expires = now + conn.config.tcp_timewait_len * 1_000_000
        tw._conn = weakref.ref(conn)
        # Release the receive queue only if nobody can read it any more: after a
        # half-close the application may still hold unread data (Linux keeps it too).
        if conn.user_closed:
            conn.recvbuf.clear()
        return tw

    def conn(self) -> Connection | None:
        return self._conn()

    @property
    def state(self) -> str:
        return "TIME-WAIT"

    def on_timer(self, now: int) -> None:
        if now >= self.expires:
            self.stack._timewait_done(self, now, "2MSL timeout")
        else:
            self.stack._arm(self, self.expires)

    def reusable(self, now: int, config: Config, local: str) -> bool:
        """tcp_tw_reuse: may an outgoing connection take over this 4-tuple?
        Only with timestamps and at least one second after the last one seen
        (Linux's tcp_twsk_unique), so PAWS protects the new connection."""
        mode = config.tcp_tw_reuse
        if mode == 0 or (mode == 2 and not (local.startswith("127.") or local == "::1")):
            return False
        return self.ts_ok and now - self.ts_recent_at >= 1_000_000

    def _ack(self, now: int) -> None:
        opts: tuple[Opt, ...] = ()
        if self.ts_ok:
            opts = (NOP, NOP, Opt(8, ((now // 1000 + self.ts_offset) & 0xFFFFFFFF, self.ts_recent)))
        wnd = min(self.rcv_wnd >> self.rcv_wscale, 0xFFFF)
        seg = Segment(self.key[1], self.key[3], self.snd_nxt, self.rcv_nxt, ACK, wnd, 0, opts, b"")
        self.stack.output_raw(self.conn_id, self.key[0], self.key[2], seg, now)

    def on_segment(self, seg: Segment, now: int) -> int | None:
        """Process a segment for this 4-tuple.  Returns an ISN for a new connection
        when a SYN may reuse the 4-tuple (the caller hands it to the listener),
        else None."""
        flags = seg.flags
        stack = self.stack
        ts = seg.ts if self.ts_ok else None
        paws_reject = ts is not None and seq.lt(ts[0], self.ts_recent) and not flags & RST
        if flags & RST:
            if stack.config.tcp_rfc1337:
                return None  # RFC 1337: do not let a RST assassinate TIME-WAIT
            if seg.seq == self.rcv_nxt:
                stack.mib.TWKilled += 1
                stack._timewait_done(self, now, "rcv RST")
            return None
        if flags & SYN and not flags & ACK:
            newer = (
                (ts is not None and seq.gt(ts[0], self.ts_recent))
                if ts is not None
                else seq.gt(seg.seq, self.rcv_nxt)
            )
            if newer and not paws_reject:
                isn = seq.add(self.snd_nxt, 65535 + 2)  # Linux: beyond anything the old peer saw
                stack.mib.TWRecycled += 1
                stack._timewait_done(self, now, "new SYN reuses the 4-tuple (RFC 6191)")
                return isn
            stack.mib.TCPChallengeACK += 1
            self._ack(now)
            return None
        if paws_reject:
            stack.mib.PAWSEstab += 1
            self._ack(now)
            return None
        if flags & FIN and seq.add(seg.seq, len(seg.payload) + 1) == self.rcv_nxt:
            # A retransmitted FIN: our last ACK was lost.  ACK again, restart 2 MSL.
            self.expires = now + stack.config.tcp_timewait_len * 1_000_000
            self._ack(now)
            return None
        if seg.seq == self.rcv_nxt and not seg.payload and not flags & (SYN | FIN):
            return None  # a bare in-window ACK: nothing to do (Linux)
        self._ack(now)
        return None
