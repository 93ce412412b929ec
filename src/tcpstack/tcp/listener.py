"""Passive open: the listener, its SYN queue of compact half-open requests,
and its accept queue (RFC 9293 §3.10.7.2 LISTEN; Linux's request socks).

A half-open connection is a ``Request`` — a handful of integers — not a TCB:
a SYN costs a small record and one SYN-ACK, and a full ``Connection`` is
created only when the handshake's final ACK arrives (RFC 4987 §3.2 "Reduce
state").  When the SYN queue is full, SYN cookies keep no state at all
(RFC 4987 §3.6, ``syncookie.py``): the returning ACK is decoded into a
``Request`` and the same ``_child`` builds the TCB.

The bounds, as Linux (net/ipv4/tcp_input.c, tcp_conn_request()) has them:

* SYN queue full: more than ``backlog`` requests (Linux >= 6.12 tests
  ``qlen > sk_max_ack_backlog``; older kernels ``>=``).  Then tcp_syncookies
  1 or 2 answers with a cookie (TCPReqQFullDoCookies), 0 drops the SYN
  (TCPReqQFullDrop).  tcp_syncookies=2 sends cookies for every SYN.
* Without cookies, tcp_max_syn_backlog also applies: once fewer than a
  quarter of it is free, SYNs are dropped (Linux keeps that quarter for
  peers its metrics cache has proven alive; tcpstack has no such cache, so
  no peer is proven).  With backlog 128 and tcp_max_syn_backlog 128 the
  queue therefore stops at 97 requests.
* Accept queue full (``len > backlog``): SYNs are dropped (ListenOverflows),
  final ACKs too (or answered with RST under tcp_abort_on_overflow).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..wire.tcp import ACK, CWR, ECE, IP_ECN_SHIFT, RST, SYN, Opt, Segment
from . import events as ev
from . import seq
from .connection import Connection, default_mss, syn_options
from .state import State
from .syncookie import VALID_US, CookieOptions, decode_ts, encode_ts

if TYPE_CHECKING:
    from .stack import Stack

S = State


def ecn_requested(syn: Segment, tcp_ecn: int) -> bool:
    """RFC 3168 §6.1.1: an ECN-setup SYN has ECE and CWR; any tcp_ecn but 0
    accepts it (Linux's tcp_ecn_create_request), unless the SYN itself came
    ECN-capable in IP, which RFC 3168 §6.1.1 forbids (Linux: !ect)."""
    f = syn.flags
    return bool(tcp_ecn) and f & (ECE | CWR) == ECE | CWR and not f >> IP_ECN_SHIFT & 3


class Request:
    """A half-open connection in SYN-RECEIVED (Linux: struct request_sock)."""

    __slots__ = (
        "listener", "conn_id", "key", "iss", "irs", "snd_mss", "snd_wscale", "ws_ok", "sack_ok",
        "ts_ok", "ts_recent", "snd_wnd", "rcv_wnd", "retries", "timer_at", "sent_at", "acked", "ecn_ok",
    )

    def __init__(self, listener: Listener, conn_id: int, key: tuple[str, int, str, int], syn: Segment, iss: int, now: int) -> None:
        cfg = listener.stack.config
        self.listener = listener
        self.conn_id = conn_id
        self.key = key
        self.iss = iss
        self.irs = syn.seq
        mss = syn.mss if syn.mss is not None else default_mss(key[2])
        self.snd_mss = min(max(mss, cfg.tcp_min_snd_mss), listener.stack.mss_for(key[2]))
        self.ws_ok = bool(cfg.tcp_window_scaling and syn.wscale is not None)
        self.snd_wscale = min(syn.wscale or 0, 14) if self.ws_ok else 0
        self.sack_ok = bool(cfg.tcp_sack and syn.sack_permitted)
        ts = syn.ts
        self.ts_ok = bool(cfg.tcp_timestamps and ts is not None)
        self.ts_recent = ts[0] if ts is not None else 0
        self.ecn_ok = ecn_requested(syn, cfg.tcp_ecn)
        self.snd_wnd = syn.window
        self.rcv_wnd = min(cfg.tcp_rmem[1], 0xFFFF)
        self.retries = 0
        self.timer_at: int | None = None
        self.sent_at = now
        self.acked = False

    @classmethod
    def from_cookie(
        cls, listener: Listener, conn_id: int, key: tuple[str, int, str, int], irs: int, iss: int,
        mss: int, opts: CookieOptions, ts_recent: int | None, now: int,
    ) -> Request:
        """The request a valid cookie ACK stands for (Linux's cookie_v4_check):
        what the SYN said, as far as the cookie and the echoed TSval kept it."""
        cfg = listener.stack.config
        req = cls.__new__(cls)
        req.listener = listener
        req.conn_id = conn_id
        req.key = key
        req.iss = iss
        req.irs = irs
        req.snd_mss = min(max(mss, cfg.tcp_min_snd_mss), listener.stack.mss_for(key[2]))
        req.ws_ok = opts.wscale is not None
        req.snd_wscale = opts.wscale or 0
        req.sack_ok = opts.sack
        req.ts_ok = ts_recent is not None
        req.ts_recent = ts_recent or 0
        req.ecn_ok = opts.ecn  # the cookie check refused it if tcp_ecn is 0 now
        req.snd_wnd = 0  # the ACK's window replaces it at once
        req.rcv_wnd = min(cfg.tcp_rmem[1], 0xFFFF)
        req.retries = 0
        req.timer_at = None
        req.sent_at = -1  # unknown: no RTT sample from the handshake
        req.acked = True
        return req

    def on_timer(self, now: int) -> None:
        self.listener._request_timer(self, now)


class Listener:
    """A socket in LISTEN."""

    def __init__(self, stack: Stack, conn_id: int, addr: str, port: int, backlog: int, now: int) -> None:
        self.stack = stack
        self.conn_id = conn_id
        self.local_addr = addr
        self.local_port = port
        self.backlog = max(0, min(backlog, stack.config.somaxconn))
        self.requests: dict[tuple[str, int, str, int], Request] = {}
        self.accept_queue: deque[Connection] = deque()
        self.waker: Callable[[Listener], None] | None = None
        self.state = S.CLOSED
        self.history: tuple[State, ...] = (S.CLOSED,)
        self.syn_queue_max = 0  # the longest the SYN queue has been
        self.young = 0  # requests whose SYN-ACK was never retransmitted (Linux: queue->young)
        self.last_cookie_at: int | None = None  # Linux: tcp_synq_overflow() stamp
        self.tos = 0  # IP_TOS / IPV6_TCLASS: SYN-ACKs carry it, children inherit it (as Linux)
        self.ttl: int | None = None  # IP_TTL / IPV6_UNICAST_HOPS the same way; None: the tunable
        self._set_state(S.LISTEN, now, "passive OPEN")

    def __repr__(self) -> str:
        return f"<Listener #{self.conn_id} {self.local_addr or '*'}:{self.local_port} {self.state.value}>"

    def _set_state(self, new: State, now: int, cause: str) -> None:
        old = self.state
        self.state = new
        self.history += (new,)
        if self.stack.observers:
            self.stack._emit_raw(now, self.conn_id, ev.STATE, (self.local_addr or "*", self.local_port, "*", 0), (old, new, cause))

    # ------------------------------------------------------------------ user side
    def accept(self) -> Connection | None:
        """The next established connection, or None if the accept queue is empty."""
        if self.state is not S.LISTEN:
            raise OSError(22, "accept() on a closed listener (EINVAL)")
        return self.accept_queue.popleft() if self.accept_queue else None

    @property
    def readable(self) -> bool:
        return bool(self.accept_queue) or self.state is not S.LISTEN

    def set_backlog(self, backlog: int) -> None:
        self.backlog = max(0, min(backlog, self.stack.config.somaxconn))

    def close(self, now: int) -> None:
        """CLOSE in LISTEN (§3.10.4): pending requests are dropped; connections
        not yet accepted are reset, as Linux does."""
        if self.state is S.CLOSED:
            return
        for req in self.requests.values():
            req.timer_at = None
        self.requests.clear()
        self.young = 0
        while self.accept_queue:
            self.accept_queue.popleft().abort(now)
        self.stack.listeners.pop((self.local_addr, self.local_port), None)
        self._set_state(S.CLOSED, now, "CLOSE")

    def _accept_queue_full(self) -> bool:
        # Linux's sk_acceptq_is_full() is "len > backlog", so backlog+1 fit.
        return len(self.accept_queue) > self.backlog

    @property
    def syn_queue_limit(self) -> int:
        """The most half-open requests this listener can hold."""
        limit = self.backlog + 1  # Linux >= 6.12: full when qlen > backlog
        if not self.stack.config.tcp_syncookies:
            msb = self.stack.config.tcp_max_syn_backlog
            limit = min(limit, max(msb - (msb >> 2) + 1, 0))
        return limit

    def _syn_queue_full(self) -> bool:
        return len(self.requests) > self.backlog

    # ------------------------------------------------------------------ segments
    def on_segment(self, src: str, dst: str, seg: Segment, now: int, isn: int | None = None) -> None:
        stack = self.stack
        key = (dst, seg.dst_port, src, seg.src_port)
        req = self.requests.get(key)
        if req is not None:
            if stack.observers:
                stack._emit_raw(now, req.conn_id, ev.RECV, key, seg)
            self._on_request_segment(req, seg, now)
            return
        if stack.observers:
            stack._emit_raw(now, self.conn_id, ev.RECV, key, seg)
        flags = seg.flags
        # §3.10.7.2 LISTEN. First, an incoming RST is ignored.
        if flags & RST:
            return
        # Second, any acknowledgment is bad: <SEQ=SEG.ACK><CTL=RST> -- unless it
        # returns one of our SYN cookies.
        if flags & ACK:
            if flags & SYN or not self._cookie_ack(key, seg, now):
                stack.reply_rst(dst, src, seg, now, conn_id=self.conn_id)
            return
        # Third, a SYN.
        if not flags & SYN:
            return
        self._on_syn(key, seg, now, isn)

    def _on_syn(self, key: tuple[str, int, str, int], seg: Segment, now: int, isn: int | None) -> None:
        """A new SYN (§3.10.7.2 LISTEN, third): a request, a cookie or a drop,
        in the order of Linux's tcp_conn_request()."""
        stack = self.stack
        mib = stack.mib
        cookies = stack.config.tcp_syncookies
        want_cookie = False
        # A SYN that reopens a TIME-WAIT 4-tuple (isn given) is never limited:
        # "TW buckets are converted to open requests without limitations".
        if isn is None and (cookies == 2 or self._syn_queue_full()):
            if cookies:
                want_cookie = True
                mib.TCPReqQFullDoCookies += 1
            else:
                mib.TCPReqQFullDrop += 1
                mib.ListenDrops += 1
                if stack.observers:
                    stack._emit_raw(now, self.conn_id, ev.DROP, key, "SYN queue full: SYN dropped")
                return
        if self._accept_queue_full():
            mib.ListenOverflows += 1
            mib.ListenDrops += 1
            if stack.observers:
                stack._emit_raw(now, self.conn_id, ev.DROP, key, "accept queue full: SYN dropped")
            return
        if want_cookie:
            self._send_cookie(key, seg, now)
            return
        if isn is None and not cookies:
            msb = stack.config.tcp_max_syn_backlog
            if msb - len(self.requests) < msb >> 2:
                # Linux: "without syncookies last quarter of backlog is filled
                # with destinations proven to be alive" -- none are, here.
                mib.ListenDrops += 1
                if stack.observers:
                    stack._emit_raw(now, self.conn_id, ev.DROP, key, "tcp_max_syn_backlog: SYN dropped")
                return
        if isn is None:
            isn = stack.isn(key, now)
        req = Request(self, stack._new_id(), key, seg, isn, now)
        self.requests[key] = req
        self.young += 1
        if len(self.requests) > self.syn_queue_max:
            self.syn_queue_max = len(self.requests)
        if stack.observers:
            stack._emit_raw(now, req.conn_id, ev.STATE, key, (S.LISTEN, S.SYN_RECEIVED, "rcv SYN"))
        self._send_synack(req, now)
        stack._arm(req, now + stack.config.tcp_rto_initial_ms * 1000)

    # ------------------------------------------------------------------ SYN cookies
    def _send_cookie(self, key: tuple[str, int, str, int], syn: Segment, now: int) -> None:
        """Answer a SYN with a cookie SYN-ACK and keep nothing (RFC 4987 §3.6)."""
        stack = self.stack
        cfg = stack.config
        peer_mss = syn.mss if syn.mss is not None else default_mss(key[2])
        isn, _ = stack.syncookies.make(key, syn.seq, peer_mss, now)
        ts = syn.ts if cfg.tcp_timestamps else None
        if ts is not None:
            ws_ok = bool(cfg.tcp_window_scaling and syn.wscale is not None)
            sack_ok = bool(cfg.tcp_sack and syn.sack_permitted)
            # ECN is remembered in the TSval, as Linux's cookie_init_timestamp (none without timestamps).
            ecn_ok = ecn_requested(syn, cfg.tcp_ecn)
            opts = CookieOptions(min(syn.wscale or 0, 14) if ws_ok else None, sack_ok, ecn_ok)
            ts_val = (encode_ts(now // 1000, opts) + stack.ts_offset_for(key)) & 0xFFFFFFFF
            options = syn_options(stack.mss_for(key[2]), ts_val, ts[0], sack_ok,
                                  stack.rcv_wscale() if ws_ok else None)
        else:
            # Linux (tcp_clear_options): without timestamps nothing but the MSS survives.
            options = syn_options(stack.mss_for(key[2]), None, 0, False, None)
            ecn_ok = False
        wnd = min(cfg.tcp_rmem[1], 0xFFFF)
        flags = SYN | ACK | ECE if ecn_ok else SYN | ACK
        synack = Segment(key[1], key[3], isn, seq.add(syn.seq, 1), flags, wnd, 0, options, b"")
        stack.mib.SyncookiesSent += 1
        self.last_cookie_at = now
        if stack.observers:
            stack._emit_raw(now, self.conn_id, ev.INFO, key, "SYN cookie sent")
        stack.output_raw(self.conn_id, key[0], key[2], synack, now, self.tos, self.ttl)

    def _cookie_ack(self, key: tuple[str, int, str, int], seg: Segment, now: int) -> bool:
        """An ACK with no request: is it the return of one of our cookies?
        True if it was consumed (a connection, or dropped on overflow);
        False sends the usual RST (Linux: cookie_v4_check returns the listener)."""
        stack = self.stack
        cfg = stack.config
        if not cfg.tcp_syncookies or self.last_cookie_at is None or now - self.last_cookie_at > VALID_US:
            return False  # Linux: tcp_synq_no_recent_overflow() -- not looked at as a cookie
        mss = stack.syncookies.check(key, seq.add(seg.seq, -1), seq.add(seg.ack, -1), now)
        if not mss:
            stack.mib.SyncookiesFailed += 1
            return False
        stack.mib.SyncookiesRecv += 1
        ts = seg.ts
        ts_recent: int | None = None
        opts = CookieOptions(None, False, False)
        if ts is not None:
            if not cfg.tcp_timestamps:
                return False
            if ts[1]:
                opts = decode_ts((ts[1] - stack.ts_offset_for(key)) & 0xFFFFFFFF)
            if ((opts.sack and not cfg.tcp_sack) or (opts.wscale is not None and not cfg.tcp_window_scaling)
                    or (opts.ecn and not cfg.tcp_ecn)):
                return False  # Linux's cookie_timestamp_decode(): an option we no longer allow
            ts_recent = ts[0]
        if self._accept_queue_full():
            # Linux: tcp_v4_syn_recv_sock() fails (exit_overflow); the ACK is dropped.
            stack.mib.ListenOverflows += 1
            stack.mib.ListenDrops += 1
            if stack.observers:
                stack._emit_raw(now, self.conn_id, ev.DROP, key, "accept queue full: cookie ACK dropped")
            return True
        req = Request.from_cookie(self, stack._new_id(), key, seq.add(seg.seq, -1), seq.add(seg.ack, -1),
                                  mss, opts, ts_recent, now)
        if stack.observers:
            stack._emit_raw(now, req.conn_id, ev.STATE, key, (S.LISTEN, S.SYN_RECEIVED, "rcv cookie ACK"))
        self._establish(req, seg, now)
        return True

    def _send_synack(self, req: Request, now: int) -> None:
        stack = self.stack
        ts_val = None
        if req.ts_ok:
            ts_val = (now // 1000 + stack.ts_offset_for(req.key)) & 0xFFFFFFFF
        opts = syn_options(
            stack.mss_for(req.key[2]), ts_val, req.ts_recent, req.sack_ok,
            stack.rcv_wscale() if req.ws_ok else None,
        )
        flags = SYN | ACK | ECE if req.ecn_ok else SYN | ACK  # RFC 3168 §6.1.1: ECN-setup SYN-ACK
        seg = Segment(req.key[1], req.key[3], req.iss, seq.add(req.irs, 1), flags, req.rcv_wnd, 0, opts, b"")
        req.sent_at = now
        stack.output_raw(req.conn_id, req.key[0], req.key[2], seg, now, self.tos, self.ttl)

    def _send_ack(self, req: Request, now: int) -> None:
        """<SEQ=ISS+1><ACK=RCV.NXT><CTL=ACK> for a half-open connection (challenge ACK)."""
        stack = self.stack
        opts: tuple[Opt, ...] = ()
        if req.ts_ok:
            ts_val = (now // 1000 + stack.ts_offset_for(req.key)) & 0xFFFFFFFF
            opts = (Opt(1, None), Opt(1, None), Opt(8, (ts_val, req.ts_recent)))
        wnd = min(req.rcv_wnd >> (stack.rcv_wscale() if req.ws_ok else 0), 0xFFFF)
        seg = Segment(req.key[1], req.key[3], seq.add(req.iss, 1), seq.add(req.irs, 1), ACK, wnd, 0, opts, b"")
        stack.output_raw(req.conn_id, req.key[0], req.key[2], seg, now)

    def _synack_retries(self) -> int:
        """tcp_synack_retries, cut down when old requests clog the queue (Linux's
        reqsk_timer_handler: "we reserve half of room for young embrions; and
        abort old ones without pity").  Once the queue is more than half full,
        each halving of the share of young requests (never retransmitted to)
        takes one retry off, down to 2: a queue full of spoofed SYNs then
        drains after 1 + 2 + 4 = 7 s instead of 63 s."""
        retries = self.stack.config.tcp_synack_retries
        qlen = len(self.requests)
        if qlen * 2 > max(8, self.backlog):
            young = self.young * 2
            while retries > 2 and qlen >= young:
                retries -= 1
                young <<= 1
        return retries

    def _request_timer(self, req: Request, now: int) -> None:
        """SYN-ACK retransmission with exponential backoff (1, 2, 4, ... s) up to
        tcp_synack_retries (or fewer, _synack_retries), then the request is dropped."""
        if self.requests.get(req.key) is not req:
            return
        stack = self.stack
        if req.retries >= self._synack_retries():
            self._forget(req)
            # Linux counts nothing for an expired request.
            if stack.observers:
                stack._emit_raw(now, req.conn_id, ev.STATE, req.key, (S.SYN_RECEIVED, S.CLOSED, "SYN-ACK retries exhausted"))
            return
        if req.retries == 0:
            self.young -= 1
        req.retries += 1
        stack.mib.TCPSynRetrans += 1
        stack.mib.RetransSegs += 1
        self._send_synack(req, now)
        rto = min(stack.config.tcp_rto_initial_ms * 1000 << req.retries, stack.config.tcp_rto_max_ms * 1000)
        stack._arm(req, now + rto)

    def _forget(self, req: Request) -> None:
        """Take ``req`` out of the SYN queue (keeping the count of young requests)."""
        if self.requests.pop(req.key, None) is req and req.retries == 0:
            self.young -= 1
        req.timer_at = None

    def _drop_request(self, req: Request, now: int, cause: str) -> None:
        self._forget(req)
        if self.stack.observers:
            self.stack._emit_raw(now, req.conn_id, ev.STATE, req.key, (S.SYN_RECEIVED, S.CLOSED, cause))

    def _on_request_segment(self, req: Request, seg: Segment, now: int) -> None:
        """§3.10.7.4 for a half-open connection (SYN-RECEIVED)."""
        stack = self.stack
        flags = seg.flags
        rcv_nxt = seq.add(req.irs, 1)
        if flags & RST:
            # RFC 5961 §3.2: only an exact RCV.NXT match resets (§3.10.7.4 SYN-RECEIVED:
            # passive -> LISTEN); elsewhere in the window it draws a challenge ACK.
            if seg.seq == rcv_nxt:
                stack.mib.EmbryonicRsts += 1
                self._drop_request(req, now, "rcv RST")
            elif seq.in_window(seg.seq, rcv_nxt, max(req.rcv_wnd, 1)) and stack.challenge_ack_allowed(now):
                stack.mib.TCPChallengeACK += 1
                self._send_ack(req, now)
            return
        if flags & SYN:
            if seg.seq == req.irs and not flags & ACK:
                self._send_synack(req, now)  # our SYN-ACK was lost: the peer retransmitted its SYN
                return
            # Any other SYN (a SYN-ACK, a SYN with a new ISN): Linux's "embryonic reset"
            # (tcp_check_req) -- answer with the reset rules and forget the request.
            stack.mib.EmbryonicRsts += 1
            stack.reply_rst(req.key[0], req.key[2], seg, now, conn_id=req.conn_id)
            self._drop_request(req, now, "SYN in SYN-RECEIVED")
            return
        if not flags & ACK:
            return
        if seg.ack != seq.add(req.iss, 1):
            stack.reply_rst(req.key[0], req.key[2], seg, now, conn_id=req.conn_id)
            return
        if not seq.in_window(seg.seq, rcv_nxt, max(req.rcv_wnd, 1)):
            return
        if self._accept_queue_full():
            stack.mib.ListenOverflows += 1
            stack.mib.ListenDrops += 1
            if stack.config.tcp_abort_on_overflow:
                stack.reply_rst(req.key[0], req.key[2], seg, now, conn_id=req.conn_id)
                self._drop_request(req, now, "accept queue full (tcp_abort_on_overflow)")
            else:
                req.acked = True  # keep it: a later SYN-ACK retransmission re-elicits the ACK
                stack._emit_raw(now, req.conn_id, ev.DROP, req.key, "accept queue full: final ACK dropped")
            return
        self._forget(req)
        self._establish(req, seg, now)

    def _establish(self, req: Request, ack: Segment, now: int) -> None:
        """The final ACK of a handshake: build the TCB, let it process the ACK
        (which may carry data or a FIN), queue it for accept()."""
        conn = self._child(req, ack, now)
        conn.on_segment(ack, now)
        if conn.state is not S.CLOSED:
            self.stack.mib.PassiveOpens += 1
            self.accept_queue.append(conn)
            if self.waker is not None:
                self.waker(self)

    def _child(self, req: Request, ack: Segment, now: int) -> Connection:
        """The full TCB, born in SYN-RECEIVED from the request record."""
        stack = self.stack
        key = req.key
        conn = Connection(stack, req.conn_id, (key[0], key[1]), (key[2], key[3]), now)
        conn.state = S.SYN_RECEIVED  # the request already reported LISTEN -> SYN-RECEIVED
        conn.history = (S.SYN_RECEIVED,)  # which also makes it passive
        conn.tos = self.tos
        if self.ttl is not None:
            conn.ttl = self.ttl
        conn.iss = conn.snd_una = req.iss
        conn.snd_nxt = conn.rtx_nxt = seq.add(req.iss, 1)
        conn.recover = conn.snd_sml = req.iss
        conn.irs = req.irs
        conn.rcv_nxt = conn.rcv_up = seq.add(req.irs, 1)  # RCV.UP: no urgent data yet
        conn.rcv_adv = seq.add(conn.rcv_nxt, req.rcv_wnd)
        conn.last_ack_sent = conn.rcv_nxt
        conn.snd_mss = req.snd_mss
        conn.ws_ok = req.ws_ok
        conn.snd_wscale = req.snd_wscale
        conn.rcv_wscale = stack.rcv_wscale() if req.ws_ok else 0
        conn.sack_ok = req.sack_ok
        conn.ecn_ok = req.ecn_ok
        conn.ts_ok = req.ts_ok
        conn.ts_recent = req.ts_recent
        conn.ts_recent_at = now
        conn.snd_wnd = conn.max_snd_wnd = req.snd_wnd
        conn.snd_wl1 = req.irs
        conn.cc.set_mss(conn.snd_mss, stack.config.tcp_init_cwnd)
        if req.retries == 0 and req.sent_at >= 0:
            conn.rtt_seq, conn.rtt_time = req.iss, req.sent_at  # Karn: SYN-ACK not retransmitted
        stack.conns[key] = conn
        return conn
