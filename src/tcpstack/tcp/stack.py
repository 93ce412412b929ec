"""The host: demultiplexing, listeners, ports, ISNs, TIME-WAIT, timers, output.

The stack is sans-I/O (DESIGN.md): the driver calls

* ``receive(packet, now)`` for every IP packet that arrives,
* ``poll(now)`` when ``next_deadline()`` is due,
* ``transmit()`` to collect the packets to put on the wire,

and user calls (``connect``, ``listen``, then methods of ``Connection`` and
``Listener``) carry ``now`` too.  Time is an int in microseconds.

Timers: one binary heap of ``(when, tiebreak, owner)``.  Each owner
(connection, half-open request, TIME-WAIT record) keeps ``timer_at``, the
time of its earliest pending heap entry.  Re-arming *later* (the common case:
every ACK pushes the RTO back) costs nothing; the early entry fires, the
owner finds nothing due and re-arms once.  Re-arming *earlier* pushes a new
entry.  So an idle connection has at most one heap entry and costs nothing
per tick.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import random
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..wire.errors import ChecksumError, IPChecksumError, MalformedPacket, NotTcp
from ..wire.icmp import (
    ICMP4_DEST_UNREACH,
    ICMP4_PARAMETER_PROBLEM,
    ICMP4_REDIRECT,
    ICMP4_SOURCE_QUENCH,
    ICMP4_TIME_EXCEEDED,
    ICMP6_DEST_UNREACH,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_PARAMETER_PROBLEM,
    ICMP6_TIME_EXCEEDED,
    PROTO_ICMP,
    PROTO_ICMPV6,
    parse_icmp,
)
from ..wire.ip import PROTO_TCP, IPPacket, build_ip_tcp, parse_ip_tcp
from ..wire.tcp import ACK, CWR, ECE, IP_CE, RST, SYN, Segment
from . import events as ev
from .config import Config, shared_int
from .connection import Connection
from .events import Event
from .icmp import classify, request_abort
from .isn import IsnGenerator, Key, Rfc6528Isn, keyed_offset
from .listener import Listener
from .mib import Mib
from .state import State
from .syncookie import SynCookies
from .timewait import TW_ISN_GAP, TimeWait, TimeWaitTable, reusable, unpack

S = State
ENETUNREACH = 101
# Per-type input counters of /proc/net/snmp (Icmp:) and /proc/net/snmp6 (Icmp6).
_ICMP4_IN = {
    ICMP4_DEST_UNREACH: "IcmpInDestUnreachs",
    ICMP4_SOURCE_QUENCH: "IcmpInSrcQuenchs",
    ICMP4_REDIRECT: "IcmpInRedirects",
    ICMP4_TIME_EXCEEDED: "IcmpInTimeExcds",
    ICMP4_PARAMETER_PROBLEM: "IcmpInParmProbs",
}
_ICMP6_IN = {
    ICMP6_DEST_UNREACH: "Icmp6InDestUnreachs",
    ICMP6_PACKET_TOO_BIG: "Icmp6InPktTooBigs",
    ICMP6_TIME_EXCEEDED: "Icmp6InTimeExcds",
    ICMP6_PARAMETER_PROBLEM: "Icmp6InParmProblems",
}
_ECN_BITS = ECE | CWR | IP_CE
EADDRINUSE = 98
EADDRNOTAVAIL = 99


def not_unicast(addr: str) -> bool:
    """Multicast, limited broadcast or unspecified (IPv4 224/4, 240/4 incl.
    255.255.255.255, 0.0.0.0; IPv6 ff00::/8, ::)."""
    if ":" in addr:
        return addr.lower().startswith("ff") or addr == "::"
    first = addr.split(".", 1)[0]
    return int(first) >= 224 or addr == "0.0.0.0"


class TimerOwner(Protocol):
    timer_at: int | None

    def on_timer(self, now: int) -> None: ...


class Stack:
    """One host's TCP.  ``addresses`` are the IPv4/IPv6 addresses it answers for."""

    def __init__(
        self,
        addresses: list[str] | tuple[str, ...] = ("198.18.0.2",),
        config: Config | None = None,
        *,
        mtu: int = 1500,
        isn: IsnGenerator | None = None,
        secret: bytes | None = None,
        seed: int | None = None,
        ts_offset: Callable[[Key], int] | None = None,
        name: str = "stack",
        checksum_offload: bool = False,
        gso_max: int = 0,
    ) -> None:
        self.name = name
        # Checksum offload: the device computes and verifies TCP checksums (a TUN
        # with NEEDS_CSUM, or a simulated link without corruption); we write only
        # the pseudo-header sum and skip verification -- no per-byte work here.
        self.checksum_offload = checksum_offload
        # Segmentation offload (TSO/GSO): new data may leave as one super-segment of
        # up to gso_max payload bytes that the device cuts into MSS-sized segments.
        # Sequence, window and congestion accounting stay per MSS in the engine.
        # Drivers that can do it collect packets with transmit_gso().
        self.gso_max = gso_max
        self._gso: list[int] = []
        self.addresses = list(addresses)
        self.config = config if config is not None else Config()
        self.mtu = mtu
        self._rto_pairs: dict[tuple[int, int], tuple[int, int]] = {}  # shared RTO bounds (rto_bounds)
        # Connections owing an ACK for in-order data during receive_batch (else None).
        self.ack_batch: list[Connection] | None = None
        self.secret = secret if secret is not None else (os.urandom(32) if seed is None else random.Random(seed).randbytes(32))
        self.isn: IsnGenerator = isn if isn is not None else Rfc6528Isn(self.secret)
        self._ts_offset = ts_offset
        self.rng = random.Random(seed if seed is not None else int.from_bytes(self.secret[:8], "big"))
        self.mib = Mib()
        self.observers: list[Callable[[Event], None]] = []

        self.conns: dict[Key, Connection] = {}
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.syncookies = SynCookies(self.secret)
        self._port_perturb: dict[int, int] = {}  # RFC 6056 Algorithm 4's table (see _ephemeral_port)
        # TIME-WAIT records (timewait.py): ``timewait`` maps 4-tuple -> record.
        self._tw = TimeWaitTable(self)
        self.timewait: dict[Key, TimeWait] = self._tw.records
        self._timers: list[tuple[int, int, Any]] = []
        self._tiebreak = 0
        self._outq: list[bytes] = []
        self._next_id = 1
        self._challenge_window = 0
        self._challenge_count = 0

    # ------------------------------------------------------------------ driver API
    def receive_batch(self, packets: Iterable[bytes | memoryview], now: int) -> None:
        """Packets that arrived together (one read of a device): as ``receive``
        for each, except that a connection's header-predicted segments (in-order
        data, ACKs of new data) are answered once, after the batch: one ACK for
        the data -- what GRO gives Linux, one ACK per coalesced packet, at most
        ACK_BATCH_MAX segments each -- and one pass of sending for the ACKs.
        Duplicate ACKs for out-of-order data are not held back."""
        owed: list[Connection] = []
        self.ack_batch = owed
        try:
            for p in packets:
                self.receive(p, now)
        finally:
            # Even if a packet raised (receive never should), what is owed goes out.
            self.ack_batch = None
            for conn in dict.fromkeys(owed):  # each once, in arrival order
                if conn.state is not S.CLOSED:
                    conn._push(now)
                    conn._flush_ack(now)
                    conn._rearm()

    def receive(self, packet: bytes | memoryview, now: int) -> None:
        """A packet arrived from the network."""
        mib = self.mib
        try:
            src, dst, seg = parse_ip_tcp(packet, not self.checksum_offload, True)
        except ChecksumError as exc:
            mib.InErrs += 1
            mib.InCsumErrors += 1
            self._emit_drop(now, f"bad checksum: {exc.reason}")
            return
        except IPChecksumError as exc:
            self._emit_drop(now, f"bad IPv4 header checksum: {exc.reason}")
            return
        except NotTcp as exc:
            pkt: IPPacket = exc.packet  # type: ignore[assignment]
            if pkt.proto == (PROTO_ICMP if pkt.version == 4 else PROTO_ICMPV6):
                self._receive_icmp(pkt, now)
                return
            mib.InErrs += 1
            self._emit_drop(now, f"malformed: {exc.reason}")
            return
        except MalformedPacket as exc:
            mib.InErrs += 1
            self._emit_drop(now, f"malformed: {exc.reason}")
            return
        mib.InSegs += 1
        if dst not in self.addresses:
            self._emit_drop(now, f"not for us: {dst}")
            return
        if seg.flags & SYN and not_unicast(src):
            # RFC 9293 §3.9.2.2 (MUST-63): a SYN from a broadcast or multicast source is dropped.
            mib.InErrs += 1
            self._emit_drop(now, f"SYN from a non-unicast source {src}")
            return
        key = (dst, seg.dst_port, src, seg.src_port)
        conn = self.conns.get(key)
        if conn is not None:
            if self.observers:
                self._emit(now, conn, ev.RECV, seg)
            if seg.flags & _ECN_BITS:
                conn.on_ecn(seg, now)  # RFC 3168: ECE, CWR, or an ECN-capable / CE-marked packet
            conn.on_segment(seg, now)
            return
        tw = self.timewait.get(key)
        isn = None
        if tw is not None:
            if self.observers:
                self._emit_raw(now, unpack(tw).conn_id, ev.RECV, key, seg)
            isn = self._tw.on_segment(key, tw, seg, now)
            if isn is None:
                return
            # A SYN that TIME-WAIT accepts as a new connection (RFC 6191) goes to the listener.
        listener = self.listeners.get((dst, seg.dst_port)) or self.listeners.get(("", seg.dst_port))
        if listener is not None:
            listener.on_segment(src, dst, seg, now, isn)
            return
        if self.observers:
            self._emit_raw(now, 0, ev.RECV, key, seg)
        self._closed_port(src, dst, seg, now)

    def _receive_icmp(self, pkt: IPPacket, now: int) -> None:
        """ICMP input (RFC 9293 §3.9.2.2, RFC 1122 §4.2.3.9, RFC 4443), as Linux's
        icmp_rcv()/icmpv6_rcv() then tcp_v4_err()/tcp_v6_err(): count the
        message, find the connection (or half-open request) by the quoted
        4-tuple, and let it act (``Connection.on_icmp_error``).  Malformed
        messages and errors about no socket of ours count as InErrors."""
        mib = self.mib
        v4 = pkt.version == 4
        if v4:
            mib.IcmpInMsgs += 1
        else:
            mib.Icmp6InMsgs += 1
        try:
            msg = parse_icmp(pkt.version, pkt.src, pkt.dst, pkt.payload, pkt.src_packed, pkt.dst_packed,
                             not self.checksum_offload)
        except MalformedPacket as exc:
            if v4:
                mib.IcmpInErrors += 1
                mib.IcmpInCsumErrors += isinstance(exc, ChecksumError)
            else:
                mib.Icmp6InErrors += 1
                mib.Icmp6InCsumErrors += isinstance(exc, ChecksumError)
            self._emit_drop(now, f"malformed ICMP: {exc.reason}")
            return
        counter = (_ICMP4_IN if v4 else _ICMP6_IN).get(msg.type)
        if counter is not None:
            setattr(mib, counter, getattr(mib, counter) + 1)
        if pkt.dst not in self.addresses:
            self._emit_drop(now, f"ICMP not for us: {pkt.dst}")
            return
        if not msg.quoted or msg.orig_proto != PROTO_TCP:
            self._emit_drop(now, f"ICMP type {msg.type} code {msg.code}: not an error about TCP")
            return
        key = (msg.orig_src, msg.orig_sport, msg.orig_dst, msg.orig_dport)
        effect, err = classify(msg)
        conn = self.conns.get(key)
        if conn is not None:
            if self.observers:
                self._emit(now, conn, ev.RECV, msg)
            conn.on_icmp_error(msg, effect, err, now)
            return
        if key in self.timewait:
            self._emit_drop(now, "ICMP for a connection in TIME-WAIT ignored")
            return
        listener = self.listeners.get((key[0], key[1])) or self.listeners.get(("", key[1]))
        req = listener.requests.get(key) if listener is not None else None
        if listener is not None and req is not None:
            # Linux's tcp_req_err(): the quoted sequence number must be our ISN.
            if msg.orig_seq != req.iss:
                mib.OutOfWindowIcmps += 1
                self._emit_drop(now, "ICMP for a half-open connection quotes a sequence number other than ISS")
            elif request_abort(msg):
                mib.ListenDrops += 1
                listener._drop_request(req, now, f"ICMP type {msg.type} code {msg.code}")
            return
        # Linux counts an error for no socket as an ICMP input error.
        if v4:
            mib.IcmpInErrors += 1
        else:
            mib.Icmp6InErrors += 1
        self._emit_drop(now, f"ICMP for no connection {key[0]}:{key[1]} -> {key[2]}:{key[3]}")

    def poll(self, now: int) -> None:
        """Fire every timer due at or before ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, owner = heapq.heappop(timers)
            if owner.timer_at != when:
                continue  # stale: the owner re-armed earlier, or was released
            owner.timer_at = None
            owner.on_timer(now)

    def next_deadline(self) -> int | None:
        timers = self._timers
        while timers:
            when, _, owner = timers[0]
            if owner.timer_at == when:
                return when
            heapq.heappop(timers)
        return None

    def transmit(self) -> list[bytes]:
        """Packets to put on the wire, in order (the queue is emptied)."""
        out = self._outq
        if not out:
            return []  # never hand out the live queue: a caller may keep the list
        self._outq = []
        if self.gso_max:
            self._gso = []
        return out

    def transmit_gso(self) -> list[tuple[bytes, int]]:
        """Like transmit(), for a device with segmentation offload: each packet with
        its GSO segment size (0 = a plain packet, no segmentation)."""
        out, sizes = self._outq, self._gso
        if not out:
            return []
        self._outq = []
        self._gso = []
        return list(zip(out, sizes, strict=True))

    # ------------------------------------------------------------------ user API
    def listen(self, port: int, now: int, addr: str = "", backlog: int = 128, reuse: bool = False) -> Listener:
        """Passive OPEN (§3.10.1): a listener on addr:port ("" = every local address).

        ``reuse`` is SO_REUSEADDR: without it, connections still using the port
        -- established or in TIME-WAIT, typically from the previous run of the
        same server -- make it EADDRINUSE, as bind(2) does.  (Linux also wants
        SO_REUSEADDR on the old sockets; tcpstack only asks the new one.)
        A second listener on the same port is EADDRINUSE either way."""
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port}")
        if addr and addr not in self.addresses:
            raise OSError(EADDRNOTAVAIL, f"cannot bind to {addr}: not an address of this stack ({', '.join(self.addresses)})")
        if (addr, port) in self.listeners or ("", port) in self.listeners or (not addr and any(p == port for _, p in self.listeners)):
            raise OSError(EADDRINUSE, f"address already in use: port {port} has a listener")
        if not reuse and any(k[1] == port and (not addr or k[0] == addr) for k in self.conns):
            raise OSError(EADDRINUSE, f"address already in use: port {port} has connections (set SO_REUSEADDR)")
        if not reuse and any(k[1] == port and (not addr or k[0] == addr) for k in self.timewait):
            raise OSError(EADDRINUSE, f"address already in use: port {port} has connections in TIME-WAIT (set SO_REUSEADDR)")
        lst = Listener(self, self._new_id(), addr, port, backlog, now)
        self.listeners[(addr, port)] = lst
        return lst

    def connect(
        self,
        remote_addr: str,
        remote_port: int,
        now: int,
        local_addr: str | None = None,
        local_port: int | None = None,
        *,
        setup: Callable[[Connection], None] | None = None,
    ) -> Connection:
        """Active OPEN (§3.10.1): sends a SYN; the connection is in SYN-SENT.
        ``setup`` runs on the TCB before the SYN goes out (socket options)."""
        if not 0 < remote_port < 65536:
            raise ValueError(f"port must be 1..65535, got {remote_port}")
        if not_unicast(remote_addr):
            # RFC 9293 §3.9.1.1 (MUST-46): an OPEN to a broadcast or multicast address is refused.
            raise OSError(ENETUNREACH, f"cannot open a TCP connection to {remote_addr}: not a unicast address")
        if local_addr is None:
            local_addr = self._source_for(remote_addr)
        elif local_addr not in self.addresses:
            raise OSError(EADDRNOTAVAIL, f"cannot bind to {local_addr}: not an address of this stack")
        if local_port is None:
            local_port = self._ephemeral_port(local_addr, remote_addr, remote_port, now)
        key = (local_addr, local_port, remote_addr, remote_port)
        if key in self.conns:
            raise OSError(EADDRINUSE, f"address already in use: {local_addr}:{local_port} -> {remote_addr}:{remote_port}")
        iss = None
        tw = self.timewait.get(key)
        if tw is not None:
            # Take over the TIME-WAIT 4-tuple (Linux: tcp_twsk_unique).  An
            # ephemeral port was chosen only if tcp_tw_reuse allows it; an
            # explicitly bound port needs the old connection to have used
            # timestamps (Linux passes no twp there, so tcp_tw_reuse is not asked).
            old = unpack(tw)
            if not old.ts_ok:
                raise OSError(EADDRNOTAVAIL, f"{local_addr}:{local_port} -> {remote_addr}:{remote_port} is in TIME-WAIT "
                              "without timestamps (EADDRNOTAVAIL)")
            self._tw.done(key, tw, now, "4-tuple taken over by a new connection")
            self.mib.TWRecycled += 1
            iss = (old.snd_nxt + TW_ISN_GAP) & 0xFFFFFFFF or 1
        conn = Connection(self, self._new_id(), (local_addr, local_port), (remote_addr, remote_port), now)
        if tw is not None:
            conn.ts_recent, conn.ts_recent_at = old.ts_recent, old.ts_recent_at  # inherited, as Linux
        if setup is not None:
            setup(conn)
        self.conns[key] = conn
        conn.open_active(self.isn(key, now) if iss is None else iss, now)
        return conn

    # ------------------------------------------------------------------ helpers used by the engine
    def mss_for(self, remote: str) -> int:
        """MSS from the interface MTU: MTU - 40 (IPv4) or - 60 (IPv6) (RFC 9293 §3.7.1)."""
        mss = self.mtu - (60 if ":" in remote else 40)
        return shared_int(mss)  # one int object for every TCB (28 B each)

    def rto_bounds(self, cfg: Config) -> tuple[int, int, int, tuple[int, int]]:
        """(initial, min, max, (min, max)) RTO in µs for a new TCB, as objects
        shared by every TCB with the same values."""
        b = (cfg.tcp_rto_initial_ms * 1000, cfg.tcp_rto_min_us, cfg.tcp_rto_max_ms * 1000)
        lo, hi = shared_int(b[1]), shared_int(b[2])
        pair = self._rto_pairs.get((lo, hi))
        if pair is None:
            pair = self._rto_pairs[(lo, hi)] = (lo, hi)
        return shared_int(b[0]), lo, hi, pair

    def rcv_wscale(self) -> int:
        """The window scale we offer, chosen as Linux does from tcp_rmem's maximum:
        the smallest shift that lets a 16-bit window cover it (RFC 7323 §2.3)."""
        space = self.config.tcp_rmem[2]
        ws = 0
        while space > 0xFFFF and ws < 14:
            space >>= 1
            ws += 1
        return ws

    def ts_offset_for(self, key: Key) -> int:
        if self._ts_offset is not None:
            return self._ts_offset(key)
        return keyed_offset(self.secret, key)

    def challenge_ack_allowed(self, now: int) -> bool:
        """RFC 5961 §7: limit challenge ACKs (Linux: tcp_challenge_ack_limit per second)."""
        sec = now // 1_000_000
        if sec != self._challenge_window:
            self._challenge_window = sec
            self._challenge_count = 0
        self._challenge_count += 1
        return self._challenge_count <= 1000

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def _source_for(self, remote: str) -> str:
        v6 = ":" in remote
        for a in self.addresses:
            if (":" in a) == v6:
                return a
        raise OSError(EADDRNOTAVAIL, f"no local {'IPv6' if v6 else 'IPv4'} address to reach {remote}")

    def _ephemeral_port(self, local: str, remote: str, rport: int, now: int) -> int:
        """A port in ip_local_port_range for this 4-tuple: RFC 6056 Algorithm 4
        (double hash), as Linux's __inet_hash_connect().  A keyed hash of
        (local, remote, remote port) gives a start and one of 65536
        perturbation counters; the counter moves past the port taken (plus a
        little randomness, as Linux >= 5.18), so successive connections to
        one destination walk the range instead of landing on ports just used
        and still in TIME-WAIT.  A port is usable if its 4-tuple is free, or
        in TIME-WAIT and tcp_tw_reuse allows taking it over; ports with a
        listener are skipped.  Running out gives EADDRNOTAVAIL, as connect(2).

        Unlike Linux, every port is tried in one pass: Linux tries the ports
        of the range's first parity, then the others (leaving odd ports to
        bind()), which makes each connect() scan half the range once that
        half is taken."""
        lo, hi = self.config.ip_local_port_range
        remaining = hi - lo + 1
        h = int.from_bytes(hashlib.blake2b(f"{local} {remote} {rport}".encode(), key=self.secret[:64],
                                           digest_size=8, person=b"ephemeral").digest(), "big")
        index = h & 0xFFFF
        perturb = self._port_perturb.get(index, 0)
        offset = perturb + (h >> 32)
        conns, tws, listeners = self.conns, self.timewait, self.listeners
        for i in range(remaining):
            port = lo + (offset + i) % remaining
            key = (local, port, remote, rport)
            if key in conns or (local, port) in listeners or ("", port) in listeners:
                continue
            tw = tws.get(key)
            if tw is not None and not reusable(tw, now, self.config, local, remote):
                continue
            self._port_perturb[index] = perturb + max(i, self.rng.randrange(8)) + 1
            return port
        raise OSError(EADDRNOTAVAIL, f"no free local port in ip_local_port_range {lo}-{hi} to {remote}:{rport} (EADDRNOTAVAIL)")

    def _arm(self, owner: TimerOwner, when: int) -> None:
        t = owner.timer_at
        if t is None or when < t:
            owner.timer_at = when
            self._tiebreak += 1
            heapq.heappush(self._timers, (when, self._tiebreak, owner))

    def _output(self, conn: Connection | None, seg: Segment, now: int, local: str | None = None, remote: str | None = None) -> None:
        if conn is not None:
            conn.segs_out += 1
            self._outq.append(build_ip_tcp(conn.local_addr, conn.remote_addr, seg, conn.ttl, 0, self.checksum_offload, conn.tos))
        else:
            assert local is not None and remote is not None
            self._outq.append(build_ip_tcp(local, remote, seg, self.default_ttl(remote), 0, self.checksum_offload))
        if self.gso_max:
            mss = conn.eff_mss() if conn is not None else 0
            n = len(seg.payload)
            if mss and n > mss:
                self._gso.append(mss)
                self.mib.OutSegs += (n + mss - 1) // mss  # counted after segmentation, as Linux
            else:
                self._gso.append(0)
                self.mib.OutSegs += 1
        else:
            self.mib.OutSegs += 1
        if self.observers:
            if conn is not None:
                self._emit(now, conn, ev.SEND, seg)
            else:
                assert local is not None and remote is not None
                self._emit_raw(now, 0, ev.SEND, (local, seg.src_port, remote, seg.dst_port), seg)

    def default_ttl(self, remote: str) -> int:
        """RFC 9293 MUST-49: the TTL (ip_default_ttl) or Hop Limit (hop_limit) of
        packets no socket option chose, e.g. resets (Linux's control socket)."""
        cfg = self.config
        return cfg.hop_limit if ":" in remote else cfg.ip_default_ttl

    def output_raw(self, conn_id: int, local: str, remote: str, seg: Segment, now: int, tos: int = 0,
                   ttl: int | None = None) -> None:
        """Send a segment on behalf of a compact record (request, TIME-WAIT)."""
        if ttl is None:
            ttl = self.default_ttl(remote)
        self._outq.append(build_ip_tcp(local, remote, seg, ttl, 0, self.checksum_offload, tos))
        if self.gso_max:
            self._gso.append(0)
        self.mib.OutSegs += 1
        if seg.flags & RST:
            self.mib.OutRsts += 1
        if self.observers:
            self._emit_raw(now, conn_id, ev.SEND, (local, seg.src_port, remote, seg.dst_port), seg)

    def reply_rst(self, local: str, remote: str, bad: Segment, now: int, conn: Connection | None = None, conn_id: int = 0) -> None:
        """The reset rules of §3.10.7.1 (and LISTEN/SYN-SENT): if the segment has
        an ACK, <SEQ=SEG.ACK><CTL=RST>; else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>."""
        if bad.flags & RST:
            return
        if bad.flags & ACK:
            rst = Segment(bad.dst_port, bad.src_port, bad.ack, 0, RST, 0)
        else:
            rst = Segment(bad.dst_port, bad.src_port, 0, (bad.seq + bad.seg_len) & 0xFFFFFFFF, RST | ACK, 0)
        self.output_raw(conn.conn_id if conn is not None else conn_id, local, remote, rst, now)

    def _closed_port(self, src: str, dst: str, seg: Segment, now: int) -> None:
        """§3.10.7.1 CLOSED: everything but a RST is answered with a RST."""
        self._emit_drop(now, f"no socket for {dst}:{seg.dst_port}", seg)
        self.reply_rst(dst, src, seg, now)

    # ------------------------------------------------------------------ bookkeeping
    def _state_changed(self, conn: Connection, old: State, new: State, now: int, cause: str) -> None:
        mib = self.mib
        if old is S.CLOSED and new is S.SYN_SENT:
            mib.ActiveOpens += 1
        was = old in (S.ESTABLISHED, S.CLOSE_WAIT)
        is_ = new in (S.ESTABLISHED, S.CLOSE_WAIT)
        if is_ and not was:
            mib.CurrEstab += 1
        elif was and not is_:
            mib.CurrEstab -= 1
            if new is S.CLOSED:
                mib.EstabResets += 1  # Linux counts ESTABLISHED/CLOSE-WAIT -> CLOSE as a reset
        if new is S.CLOSED:
            if old in (S.SYN_SENT, S.SYN_RECEIVED):
                mib.AttemptFails += 1
            if self.conns.get(conn.key) is conn:
                del self.conns[conn.key]
            conn.timer_at = None
        if self.observers:
            self._emit(now, conn, ev.STATE, (old, new, cause))

    def _enter_time_wait(self, conn: Connection, now: int) -> None:
        """Replace the TCB by a compact TIME-WAIT record (timewait.py)."""
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]
        conn.timer_at = None
        if len(self.timewait) >= self.config.tcp_max_tw_buckets:
            # Linux: "TCP: time wait bucket table overflow"; the socket closes at once.
            self.mib.TCPTimeWaitOverflow += 1
            conn.set_state(S.CLOSED, now, "tcp_max_tw_buckets overflow")
            return
        self._tw.enter(conn, now)

    def _emit(self, now: int, conn: Connection, kind: str, detail: Any) -> None:
        e = Event(now, conn.conn_id, kind, (conn.local_addr, conn.local_port), (conn.remote_addr, conn.remote_port), detail)
        for obs in self.observers:
            obs(e)

    def _emit_raw(self, now: int, conn_id: int, kind: str, key: Key, detail: Any) -> None:
        e = Event(now, conn_id, kind, (key[0], key[1]), (key[2], key[3]), detail)
        for obs in self.observers:
            obs(e)

    def _emit_drop(self, now: int, reason: str, seg: Segment | None = None) -> None:
        if self.observers:
            e = Event(now, 0, ev.DROP, None, None, reason)
            for obs in self.observers:
                obs(e)

    # ------------------------------------------------------------------ views
    def sockets(self) -> list[Any]:
        """Every socket: listeners, connections, TIME-WAIT records (for ss/stat)."""
        return [*self.listeners.values(), *self.conns.values(), *self._tw.views()]

    def state_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in State}
        for lst in self.listeners.values():
            counts[S.LISTEN.value] += 1
            counts[S.SYN_RECEIVED.value] += len(lst.requests)
        for c in self.conns.values():
            counts[c.state.value] += 1
        counts[S.TIME_WAIT.value] += len(self.timewait)
        return counts
