"""TIME-WAIT as compact records, not whole TCBs (Linux: inet_timewait_sock,
net/ipv4/tcp_minisocks.c).

RFC 9293 §3.6.1 / §3.10.7.4: the side that closed first waits 2*MSL so that
old duplicates die and a lost final ACK can be repeated.  That needs the two
sequence numbers, the window to advertise, the timestamp state and a
deadline -- a few dozen bytes.  A busy client or HTTP/1.0 server holds tens
of thousands of these, so their size is what TIME-WAIT costs.

What a record is.  ``TimeWait`` is a plain immutable ``bytes`` of 31 bytes
of packed fields (``_REC``), 64 bytes with the object header, not an object
with int attributes (every int above 256 is another 28--32 bytes, which
would make a record four times larger).  The 4-tuple is the dictionary key
and is not stored again; the timestamp offset is the stack's keyed function
of the 4-tuple and is recomputed (stored only if the TCB had another one).
The rare segment that reaches a record unpacks it; a change (a restarted
timer, a newer TS.Recent) makes a new record.  Per entry the table holds the
record (64), the key tuple (72) and its port int (32), a dict slot (~30)
and two deque slots (16): about 215 bytes; ``TimeWaitTable.memory()`` counts
them.

The expiry queue.  Every record waits the same ``tcp_timewait_len``, so
records expire in the order they were made: one FIFO (two parallel deques of
keys and records) replaces a timer per record, and the stack's timer heap
holds one entry for the whole table.  A queue entry whose record was removed
or replaced is skipped when it reaches the head (identity check).  Restarting
the 2*MSL timer appends a fresh entry; it is done at most once per second per
record, so a peer replaying segments cannot grow the queue faster than that.

Segment processing follows Linux's tcp_timewait_state_process():

* In-window bare ACK (SEG.SEQ = RCV.NXT): restart 2*MSL, update TS.Recent.
* RST with SEG.SEQ = RCV.NXT: ends TIME-WAIT (TIME-WAIT assassination,
  RFC 1337) unless tcp_rfc1337=1; any other RST is ignored.
* A retransmitted FIN (our last ACK was lost): ACK again, restart 2*MSL
  (RFC 9293 §3.10.7.4 "TIME-WAIT STATE").
* A SYN that is provably a new incarnation -- a higher sequence number, or a
  newer timestamp when the old connection used timestamps (RFC 6191) -- is
  handed to the listener with ISN = SND.NXT + 65535 + 2, beyond anything the
  old peer saw (RFC 1122 §4.2.2.13).
* Anything else is answered with an ACK; a PAWS failure (RFC 7323 §5) too.
"""

from __future__ import annotations

import struct
import sys
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from ..wire.tcp import ACK, FIN, RST, SYN, Opt, Segment
from . import events as ev
from . import seq
from .state import State

if TYPE_CHECKING:
    from .config import Config
    from .connection import Connection
    from .stack import Stack

Key = tuple[str, int, str, int]
NOP = Opt(1, None)
TW_ISN_GAP = 65535 + 2  # Linux: tw_snd_nxt + 65535 + 2, beyond the old peer's largest window
RESTART_GRANULE_US = 1_000_000  # restart the 2*MSL timer at most once a second per record
TS_OK = 1  # flags: the connection used timestamps
OWN_OFFSET = 2  # flags: a timestamp offset follows (not the stack's for this 4-tuple)
AGE_MAX_MS = 0xFFFFFFFF

# snd_nxt, rcv_nxt, ts_recent, conn_id (u32 each); window field (u16); flags (u8);
# expires - ts_recent_at in ms (u32); expires (i64 µs).  [+ ts_offset (u32)]
_REC = struct.Struct("=IIIIHBIq")
_OFF = struct.Struct("=I")


class Fields(NamedTuple):
    """A record unpacked (names as in RFC 9293 §3.3.1 and RFC 7323)."""

    snd_nxt: int
    rcv_nxt: int
    ts_recent: int
    conn_id: int
    window: int  # the 16-bit window field we advertise (already scaled down)
    flags: int
    ts_recent_at: int  # µs: when TS.Recent was last updated (kept to the ms)
    expires: int  # µs
    ts_offset: int | None  # None: the stack's offset for the 4-tuple

    @property
    def ts_ok(self) -> bool:
        return bool(self.flags & TS_OK)


# A record is a plain ``bytes``: no object header of its own beyond bytes',
# and not tracked by the garbage collector (20,000 records are 20,000
# objects fewer for every full collection to visit).
TimeWait = bytes


def pack(f: Fields) -> TimeWait:
    age = min(max((f.expires - f.ts_recent_at) // 1000, 0), AGE_MAX_MS)
    flags = f.flags & ~OWN_OFFSET
    head = (f.snd_nxt, f.rcv_nxt, f.ts_recent, f.conn_id, f.window)
    if f.ts_offset is None:
        return _REC.pack(*head, flags, age, f.expires)
    return _REC.pack(*head, flags | OWN_OFFSET, age, f.expires) + _OFF.pack(f.ts_offset)


def unpack(rec: TimeWait) -> Fields:
    snd_nxt, rcv_nxt, ts_recent, conn_id, window, flags, age, expires = _REC.unpack_from(rec)
    off = _OFF.unpack_from(rec, _REC.size)[0] if flags & OWN_OFFSET else None
    return Fields(snd_nxt, rcv_nxt, ts_recent, conn_id, window, flags, expires - age * 1000, expires, off)


def reusable(rec: TimeWait, now: int, config: Config, local: str, remote: str = "") -> bool:
    """tcp_tw_reuse: may an outgoing connection take over this 4-tuple?

    Linux's tcp_twsk_unique(): only if the old connection used timestamps
    (PAWS then rejects its old duplicates) and the last timestamp arrived at
    least a second ago; tcp_tw_reuse=2 allows it for loopback only."""
    mode = config.tcp_tw_reuse
    if mode == 2 and not (_loopback(local) or _loopback(remote)):
        mode = 0
    f = unpack(rec)
    return bool(mode) and f.ts_ok and now - f.ts_recent_at >= 1_000_000


def _loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1" or addr.startswith("::ffff:127.")


class _ConnRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference that knows the connection id it is filed under."""

    __slots__ = ("conn_id",)
    conn_id: int

    def __new__(cls, conn: Connection, callback: Callable[[_ConnRef], None], conn_id: int) -> _ConnRef:
        self = super().__new__(cls, conn, callback)
        self.conn_id = conn_id
        return self

    def __init__(self, conn: Connection, callback: Callable[[_ConnRef], None], conn_id: int) -> None:
        super().__init__(conn, callback)  # type: ignore[call-arg]


class TimeWaitView(NamedTuple):
    """What ``ss`` shows of a TIME-WAIT record (built on demand)."""

    key: Key
    conn_id: int
    snd_nxt: int
    rcv_nxt: int
    expires: int

    @property
    def state(self) -> str:
        return State.TIME_WAIT.value


class TimeWaitTable:
    """The stack's TIME-WAIT records: ``records`` (4-tuple -> record, what the
    stack demultiplexes on) and their expiry queue.  It is a timer owner of
    the stack (``timer_at``, ``on_timer``) with one heap entry for all."""

    __slots__ = ("stack", "records", "_keys", "_recs", "timer_at", "_conns", "_conns_high")

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.records: dict[Key, TimeWait] = {}
        self._keys: deque[Key] = deque()
        self._recs: deque[TimeWait] = deque()
        self.timer_at: int | None = None
        # Connections the application still holds, so that their state can
        # move TIME-WAIT -> CLOSED at the end.  Weak: an orphaned TCB is
        # freed at once and its entry goes with it (``_gone``).
        self._conns: dict[int, _ConnRef] = {}
        self._conns_high = 0  # its size at the last rebuild: a dict never shrinks by itself

    def __len__(self) -> int:
        return len(self.records)

    def views(self) -> Iterator[TimeWaitView]:
        for key, rec in self.records.items():
            f = unpack(rec)
            yield TimeWaitView(key, f.conn_id, f.snd_nxt, f.rcv_nxt, f.expires)

    def conn(self, rec: TimeWait) -> Connection | None:
        """The TCB that entered this TIME-WAIT, if the application still holds it."""
        ref = self._conns.get(unpack(rec).conn_id)
        return ref() if ref is not None else None

    def _gone(self, ref: _ConnRef) -> None:
        """Weakref callback: a TCB in TIME-WAIT was freed (the application let it go)."""
        conns = self._conns
        if conns.get(ref.conn_id) is ref:
            del conns[ref.conn_id]
        if len(conns) * 4 < self._conns_high:
            self._conns = dict(conns)  # right-sized: a dict does not shrink by deleting
            self._conns_high = len(conns)

    def memory(self) -> int:
        """Bytes the table owns (sys.getsizeof of the dict, the queues, every
        record, every key tuple and the port ints in it that are not cached,
        the weak references to TCBs still held); shared objects -- address
        strings, the stack, the TCBs themselves -- are not counted."""
        size = sys.getsizeof(self.records) + sys.getsizeof(self._keys) + sys.getsizeof(self._recs)
        size += sys.getsizeof(self._conns) + sum(sys.getsizeof(r) for r in self._conns.values())
        for key, rec in self.records.items():
            size += sys.getsizeof(rec) + sys.getsizeof(key)
            size += sum(sys.getsizeof(p) for p in (key[1], key[3]) if p > 256)
        return size

    # ------------------------------------------------------------------ life cycle
    def enter(self, conn: Connection, now: int) -> TimeWait:
        """Replace ``conn`` (just moved to TIME-WAIT) by a record."""
        wnd = min(conn._window_offered() >> conn.rcv_wscale, 0xFFFF)
        offset = conn.ts_offset & 0xFFFFFFFF
        rec = pack(Fields(
            conn.snd_nxt, conn.rcv_nxt, conn.ts_recent, conn.conn_id & 0xFFFFFFFF, wnd,
            TS_OK if conn.ts_ok else 0, conn.ts_recent_at,
            now + conn.config.tcp_timewait_len * 1_000_000,
            None if offset == self.stack.ts_offset_for(conn.key) & 0xFFFFFFFF else offset,
        ))
        # Release the receive queue only if nobody can read it any more: after a
        # half-close the application may still hold unread data (Linux keeps it too).
        if conn.user_closed:
            conn.recvbuf.clear()
        conn_id = conn.conn_id & 0xFFFFFFFF
        self._conns[conn_id] = _ConnRef(conn, self._gone, conn_id)
        self._conns_high = max(self._conns_high, len(self._conns))
        self._store(conn.key, rec)
        return rec

    def _store(self, key: Key, rec: TimeWait) -> None:
        self.records[key] = rec
        self._keys.append(key)
        self._recs.append(rec)
        self.stack._arm(self, unpack(rec).expires)

    def remove(self, key: Key, rec: TimeWait | None = None) -> TimeWait | None:
        """Forget the record for ``key`` (its queue entry goes stale)."""
        cur = self.records.get(key)
        if cur is None or (rec is not None and cur is not rec):
            return None
        del self.records[key]
        return cur

    def done(self, key: Key, rec: TimeWait, now: int, cause: str) -> None:
        """TIME-WAIT -> CLOSED: the record goes; a TCB still held is told."""
        if self.remove(key, rec) is None:
            return
        conn_id = unpack(rec).conn_id
        ref = self._conns.pop(conn_id, None)
        conn = ref() if ref is not None else None
        if conn is not None and conn.state is State.TIME_WAIT:
            conn.set_state(State.CLOSED, now, cause)
        elif self.stack.observers:
            self.stack._emit_raw(now, conn_id, ev.STATE, key, (State.TIME_WAIT, State.CLOSED, cause))

    def on_timer(self, now: int) -> None:
        """Expire every record whose 2*MSL is over (the queue is in expiry order)."""
        keys, recs, records = self._keys, self._recs, self.records
        mib = self.stack.mib
        while keys:
            key, rec = keys[0], recs[0]
            if records.get(key) is not rec:
                keys.popleft()  # removed or replaced: a stale entry
                recs.popleft()
                continue
            expires = unpack(rec).expires
            if expires > now:
                self.stack._arm(self, expires)
                return
            keys.popleft()
            recs.popleft()
            mib.TW += 1  # Linux: TCPTimeWaited ("TW"), counted when the timer ends it
            self.done(key, rec, now, "2MSL timeout")

    def _restart(self, key: Key, rec: TimeWait, now: int, **changes: int) -> TimeWait:
        """Restart the 2*MSL timer (and apply ``changes``), at most once a second."""
        f = unpack(rec)
        new_expires = now + self.stack.config.tcp_timewait_len * 1_000_000
        if new_expires - f.expires < RESTART_GRANULE_US:
            return rec
        new = pack(f._replace(expires=new_expires, **changes))
        self._store(key, new)
        return new

    # ------------------------------------------------------------------ segments
    def on_segment(self, key: Key, rec: TimeWait, seg: Segment, now: int) -> int | None:
        """Process a segment for a TIME-WAIT 4-tuple.  Returns the ISN for a new
        connection when a SYN may reopen the 4-tuple (the caller hands the SYN
        to the listener), else None."""
        stack = self.stack
        f = unpack(rec)
        flags = seg.flags
        ts = seg.ts if f.flags & TS_OK else None
        # RFC 7323 §5.3 PAWS (as tcp_paws_reject: a RST is never rejected by it).
        paws_reject = ts is not None and not flags & RST and seq.lt(ts[0], f.ts_recent)

        # In window: SEG.SEQ = RCV.NXT and either a RST or no data, SYN or FIN.
        if not paws_reject and seg.seq == f.rcv_nxt and (flags & RST or (not seg.payload and not flags & (SYN | FIN))):
            if flags & RST and not stack.config.tcp_rfc1337:
                # TIME-WAIT assassination (RFC 1337 hazard H1); Linux does it by default.
                self.done(key, rec, now, "rcv RST")
                return None
            if ts is not None:
                self._restart(key, rec, now, ts_recent=ts[0], ts_recent_at=now)
            else:
                self._restart(key, rec, now)
            return None

        # A new SYN (RFC 1122 §4.2.2.13, RFC 6191): newer sequence number, or newer timestamp.
        if flags & SYN and not flags & (RST | ACK) and not paws_reject and (
            seq.gt(seg.seq, f.rcv_nxt) or (ts is not None and seq.gt(ts[0], f.ts_recent))
        ):
            isn = seq.add(f.snd_nxt, TW_ISN_GAP) or 1
            self.done(key, rec, now, "new SYN reopens the 4-tuple (RFC 6191)")
            return isn

        if paws_reject:
            stack.mib.PAWSEstab += 1
        if flags & RST:
            return None  # out of window: ignored
        if paws_reject or flags & ACK:
            # Linux restarts the timer here; this covers the retransmitted FIN.
            rec = self._restart(key, rec, now)
        self._ack(key, rec, now)
        return None

    def _ack(self, key: Key, rec: TimeWait, now: int) -> None:
        f = unpack(rec)
        opts: tuple[Opt, ...] = ()
        if f.flags & TS_OK:
            offset = f.ts_offset if f.ts_offset is not None else self.stack.ts_offset_for(key)
            opts = (NOP, NOP, Opt(8, ((now // 1000 + offset) & 0xFFFFFFFF, f.ts_recent)))
        seg = Segment(key[1], key[3], f.snd_nxt, f.rcv_nxt, ACK, f.window, 0, opts, b"")
        self.stack.output_raw(f.conn_id, key[0], key[2], seg, now)
