"""One direction of a simulated wire: delay, rate, queue and seeded impairments.

A :class:`Link` carries raw IP packets from one node to another. It models,
in this order, what a packet meets on its way (the order is netem's, so a
user who knows ``tc qdisc ... netem`` can predict the counters):

1. **loss** — the packet vanishes before it uses the link (``dropped_loss``);
2. **queue and rate** — with ``rate_bps`` set, the packet waits behind the
   bytes not yet serialized; if they and it exceed ``queue_bytes`` it is
   tail-dropped (``dropped_queue``), else it occupies the wire for
   ``len * 8 / rate`` seconds; with ``ecn_mark_bytes`` set, an ECN-capable
   packet (ECT(0) or ECT(1), RFC 3168 §5) that finds more than that many
   bytes queued ahead of it is marked CE instead (``ce_marked``): a step
   AQM, like RED with equal thresholds or DCTCP's K, that signals
   congestion before the queue overflows; packets that are not ECT queue on;
3. **corruption** — 1 to 3 random bits anywhere in the packet flip
   (``corrupted``); the receiver's checksum must catch it, the link does not.
   As on a real wire, some 2- and 3-bit flips leave the Internet checksum
   unchanged (same bit of two 16-bit words, one 0->1 and one 1->0), so about
   1 corrupted packet in 100 gets through; ``corrupt_detectable=True`` redraws
   such flips, for tests that assert end-to-end data integrity;
4. **delay and jitter** — ``delay_us`` plus a uniform ``[0, jitter_us]``,
   clamped so a packet never arrives before the one sent ahead of it: jitter
   alone never reorders (netem's jitter does, which surprises everyone);
5. **reordering** — with probability ``reorder`` the packet is held back an
   extra ``reorder_delay_us`` so the packets behind it overtake it
   (``reordered`` counts packets held back);
6. **duplication** — with probability ``dup`` a second copy goes through
   steps 2–5 right after the first (``duplicated``), so it can be queued,
   dropped or corrupted on its own.

Every random choice comes from the one ``random.Random`` the network passes
in, and a probability of 0 draws nothing, so a seed fixes a run byte for byte
and an unimpaired link never perturbs the random stream of the others.

Why serialization is computed in units of ``1 / rate_bps`` microseconds:
back-to-back packets then finish at exact multiples of their size, with one
rounding up at the end instead of one per packet, so ``N`` packets of ``S``
bytes take exactly ``ceil(N * S * 8 / rate)`` and tests can assert on it.

Per packet the link allocates one heap tuple and nothing else: the simulator
must move hundreds of thousands of segments per wall-clock second.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from fractions import Fraction
from heapq import heappush
from random import Random
from typing import Any

__all__ = [
    "DEFAULT_QUEUE_PACKETS",
    "Link",
    "LinkParams",
    "PacketObserver",
    "parse_rate",
    "serialization_us",
]

#: Default queue limit, in full-size (1500-byte) packets: about one
#: bandwidth-delay product of a 10 Mbit/s, 100 ms path, and the order of
#: magnitude of a Linux pfifo_fast/txqueuelen default.
DEFAULT_QUEUE_PACKETS = 100
_DEFAULT_MTU = 1500

# One microsecond of wire time at R bit/s is R "units"; one byte is 8e6 units.
_UNITS_PER_BYTE = 8_000_000

# tc(8) "RATES": a bare number or `bit` is bits per second, `bps` is BYTES per
# second; SI prefixes k/m/g/t are powers of 1000, IEC ki/mi/gi/ti of 1024.
_RATE_UNITS: dict[str, int] = {"": 1, "bit": 1, "bps": 8}
for _i, _p in enumerate(("k", "m", "g", "t"), start=1):
    _RATE_UNITS[_p + "bit"] = 1000**_i
    _RATE_UNITS[_p + "ibit"] = 1024**_i
    _RATE_UNITS[_p + "bps"] = 8 * 1000**_i
    _RATE_UNITS[_p + "ibps"] = 8 * 1024**_i
_RATE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e([+-]?[0-9]+))?\s*([a-z]*)\s*", re.I)


def parse_rate(rate: str | int) -> int:
    """Parse a tc(8)-style rate into bits per second: ``"10mbit" -> 10_000_000``.

    Units as tc(8) defines them (case-insensitive): ``bit`` or none (bit/s),
    ``kbit mbit gbit tbit`` (SI), ``kibit mibit gibit tibit`` (IEC), and
    ``bps kbps mbps gbps tbps`` / ``kibps ...`` which are **bytes** per second
    — ``"1mbps"`` is 8 Mbit/s, tc's classic trap. Decimals are exact
    (``"1.5mbit"`` is 1,500,000). An int is taken as bit/s.
    """
    if isinstance(rate, bool):
        raise ValueError(f"invalid rate {rate!r}: expected bits per second or a tc(8) rate string")
    if isinstance(rate, int):
        if rate <= 0:
            raise ValueError(f"invalid rate {rate}: must be a positive number of bits per second")
        return rate
    if not isinstance(rate, str):
        raise ValueError(f"invalid rate {rate!r}: expected str or int, got {type(rate).__name__}")
    m = _RATE_RE.fullmatch(rate)
    unit = m.group(3).lower() if m else None
    if m is None or unit not in _RATE_UNITS:
        raise ValueError(
            f"invalid rate {rate!r}: expected a number with a tc(8) unit, e.g. '10mbit', "
            f"'1.5gbit', '512kibit' or '125kbps' (bytes/s); units: "
            + ", ".join(u for u in _RATE_UNITS if u)
        )
    value = Fraction(m.group(1)) * _RATE_UNITS[unit]
    if m.group(2):
        value *= Fraction(10) ** int(m.group(2))
    bps = round(value)
    if bps < 1:
        raise ValueError(f"invalid rate {rate!r}: below 1 bit per second")
    return bps


@dataclass(frozen=True, slots=True)
class LinkParams:
    """How one direction of a link behaves. Times in microseconds.

    ``rate_bps`` may be given as a tc-style string (``"10mbit"``); it is stored
    parsed. ``queue_bytes`` defaults to 100 full-size packets and only matters
    when ``rate_bps`` is set (an infinitely fast link never queues).
    ``reorder_delay_us`` defaults to ``max(delay_us, 1000)``: a held-back
    packet takes roughly the path twice, enough for the next few to overtake.
    ``corrupt_detectable`` avoids the bit flips the ones'-complement checksum
    cannot see (see the module docstring); it is off by default because real
    links do not avoid them.
    """

    delay_us: int = 0
    jitter_us: int = 0
    rate_bps: int | None = None
    queue_bytes: int | None = None
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    reorder_delay_us: int | None = None
    corrupt: float = 0.0
    corrupt_detectable: bool = False
    ecn_mark_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("delay_us", "jitter_us"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int (microseconds), got {value!r}")
        for name in ("loss", "dup", "reorder", "corrupt"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.rate_bps is not None:
            object.__setattr__(self, "rate_bps", parse_rate(self.rate_bps))
        if self.queue_bytes is None:
            object.__setattr__(self, "queue_bytes", DEFAULT_QUEUE_PACKETS * _DEFAULT_MTU)
        elif not isinstance(self.queue_bytes, int) or self.queue_bytes <= 0:
            raise ValueError(f"queue_bytes must be a positive int, got {self.queue_bytes!r}")
        if self.ecn_mark_bytes is not None and (not isinstance(self.ecn_mark_bytes, int) or self.ecn_mark_bytes < 0):
            raise ValueError(f"ecn_mark_bytes must be a non-negative int (bytes queued), got {self.ecn_mark_bytes!r}")
        if self.reorder_delay_us is None:
            object.__setattr__(self, "reorder_delay_us", max(self.delay_us, 1000))
        elif not isinstance(self.reorder_delay_us, int) or self.reorder_delay_us < 0:
            raise ValueError(
                f"reorder_delay_us must be a non-negative int, got {self.reorder_delay_us!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Observer signature: ``callback(time_us, link, packet, event)``.
PacketObserver = Callable[[int, "Link", bytes, str], None]


class Link:
    """A unidirectional pipe from node ``src`` to node ``dst``.

    The link does not own a clock or an event loop: it pushes
    ``(arrival_time, sequence, self._arrive, packet)`` onto the heap it is
    given and calls ``deliver(packet)`` when the owner pops that entry, so it
    can be driven (and tested) by anything that runs such a heap.
    ``clock()`` is only consulted to timestamp observer events on delivery.
    """

    __slots__ = (
        "src",
        "dst",
        "params",
        "packets_sent",
        "bytes_sent",
        "packets_delivered",
        "bytes_delivered",
        "dropped_loss",
        "dropped_queue",
        "duplicated",
        "reordered",
        "corrupted",
        "ce_marked",
        "_max_q_units",
        "_mark_units",
        "_rng",
        "_heap",
        "_counter",
        "_deliver",
        "_clock",
        "_observers",
        "_arrive_cb",
        "_delay",
        "_jitter",
        "_rate",
        "_queue_units",
        "_loss",
        "_dup",
        "_reorder",
        "_reorder_delay",
        "_corrupt",
        "_detectable",
        "_simple",
        "_busy",
        "_last_arrival",
    )

    def __init__(
        self,
        src: str,
        dst: str,
        params: LinkParams,
        rng: Random,
        heap: list[tuple[int, int, Callable[[Any], None], Any]],
        counter: Iterator[int],
        deliver: Callable[[bytes], None],
        clock: Callable[[], int],
        observers: list[PacketObserver] | None = None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.params = params
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_delivered = 0
        self.bytes_delivered = 0
        self.dropped_loss = 0
        self.dropped_queue = 0
        self.duplicated = 0
        self.reordered = 0
        self.corrupted = 0
        self.ce_marked = 0
        self._max_q_units = 0
        self._rng = rng
        self._heap = heap
        self._counter = counter
        self._deliver = deliver
        self._clock = clock
        self._observers: list[PacketObserver] = observers if observers is not None else []
        # Bound once: a bound method per packet would be an allocation per packet.
        self._arrive_cb = self._arrive
        self._busy = 0  # when serialization of the queue ends, in units of 1/rate µs
        self._last_arrival = 0  # FIFO clamp for jitter
        self._rate: int | None = None
        self.set_params(params)

    def __repr__(self) -> str:
        return f"Link({self.src!r} -> {self.dst!r})"

    def set_params(self, params: LinkParams) -> None:
        """Change the link's behaviour from now on (e.g. cut it with loss=1.0);
        packets already in flight keep their fate."""
        # Packets already serialized keep their finish time, so the link stays
        # busy until the same instant; re-express it in the new rate's units.
        old_rate, new_rate = self._rate, params.rate_bps
        if old_rate is None or new_rate is None:
            self._busy = 0
        elif new_rate != old_rate:
            self._busy = -(-self._busy // old_rate) * new_rate
        self.params = params
        self._delay = params.delay_us
        self._jitter = params.jitter_us
        self._rate = new_rate
        # Both resolved by LinkParams.__post_init__.
        assert params.queue_bytes is not None and params.reorder_delay_us is not None
        self._queue_units = params.queue_bytes * _UNITS_PER_BYTE
        mark = params.ecn_mark_bytes
        self._mark_units = None if mark is None else mark * _UNITS_PER_BYTE
        self._loss = params.loss
        self._dup = params.dup
        self._reorder = params.reorder
        self._reorder_delay: int = params.reorder_delay_us
        self._corrupt = params.corrupt
        self._detectable = params.corrupt_detectable
        # The common case (pure delay) takes a three-line path.
        self._simple = not (
            self._rate or self._jitter or self._loss or self._dup or self._reorder or self._corrupt
        )

    @property
    def max_queue_bytes(self) -> int:
        """Deepest backlog seen (bytes not yet serialized, including the new packet)."""
        return -(-self._max_q_units // _UNITS_PER_BYTE)

    def counters(self) -> dict[str, int]:
        return {
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_delivered": self.packets_delivered,
            "bytes_delivered": self.bytes_delivered,
            "dropped_loss": self.dropped_loss,
            "dropped_queue": self.dropped_queue,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "corrupted": self.corrupted,
            "ce_marked": self.ce_marked,
            "max_queue_bytes": self.max_queue_bytes,
        }

    def queue_bytes_at(self, now: int) -> int:
        """Bytes offered but not yet serialized at ``now`` (0 on an unlimited link)."""
        rate = self._rate
        if rate is None:
            return 0
        backlog = self._busy - now * rate
        return -(-backlog // _UNITS_PER_BYTE) if backlog > 0 else 0

    def send(self, packet: bytes, now: int) -> None:
        """Offer ``packet`` to the link at time ``now`` (it is never mutated)."""
        self.packets_sent += 1
        self.bytes_sent += len(packet)
        if self._observers:
            self._notify(now, packet, "send")
        if self._simple:
            t = now + self._delay
            heappush(self._heap, (t, next(self._counter), self._arrive_cb, packet))
            return
        loss = self._loss
        if loss and self._rng.random() < loss:
            self.dropped_loss += 1
            if self._observers:
                self._notify(now, packet, "drop-loss")
            return
        self._transmit(packet, now)
        dup = self._dup
        if dup and self._rng.random() < dup:
            self.duplicated += 1
            if self._observers:
                self._notify(now, packet, "dup")
            self._transmit(packet, now)

    def _transmit(self, packet: bytes, now: int) -> None:
        rate = self._rate
        if rate is None:
            t = now
        else:
            now_units = now * rate
            busy = self._busy
            if busy < now_units:
                busy = now_units  # the link went idle since the last packet
            size = len(packet) * _UNITS_PER_BYTE
            backlog = busy - now_units + size
            if backlog > self._queue_units:
                self.dropped_queue += 1
                if self._observers:
                    self._notify(now, packet, "drop-queue")
                return
            if backlog > self._max_q_units:
                self._max_q_units = backlog
            mark = self._mark_units
            if mark is not None and backlog - size > mark:
                marked = _mark_ce(packet)
                if marked is not None:
                    packet = marked
                    self.ce_marked += 1
                    if self._observers:
                        self._notify(now, packet, "mark-ce")
            busy += size
            self._busy = busy
            t = -(-busy // rate)  # last bit leaves the sender, rounded up to a µs
        rng = self._rng
        corrupt = self._corrupt
        if corrupt and rng.random() < corrupt:
            packet = self._flip_bits(packet)
            self.corrupted += 1
            if self._observers:
                self._notify(now, packet, "corrupt")
        t += self._delay
        jitter = self._jitter
        if jitter:
            t += int(rng.random() * (jitter + 1))
        if t < self._last_arrival:
            t = self._last_arrival
        self._last_arrival = t
        reorder = self._reorder
        if reorder and rng.random() < reorder:
            # Held back without moving the FIFO clamp: later packets keep
            # their own arrival times and so overtake this one.
            t += self._reorder_delay
            self.reordered += 1
            if self._observers:
                self._notify(now, packet, "reorder")
        heappush(self._heap, (t, next(self._counter), self._arrive_cb, packet))

    def _flip_bits(self, packet: bytes) -> bytes:
        nbits = len(packet) * 8
        if not nbits:
            return packet
        rng = self._rng
        count = min(rng.randint(1, 3), nbits)
        # Distinct positions: flipping one bit twice would silently undo it.
        positions = rng.sample(range(nbits), count)
        if self._detectable:
            # Redraw while the flips leave the ones'-complement sum unchanged
            # (mod 0xFFFF): such a packet would pass the IPv4 and TCP/UDP
            # checksums, which sum 16-bit words aligned like the packet.
            # A 1-bit flip always shows; the bound is never reached in practice.
            for _ in range(100):
                delta = 0
                for pos in positions:
                    i = pos >> 3
                    weight = 1 << ((pos & 7) + (0 if i & 1 else 8))
                    delta += -weight if packet[i] >> (pos & 7) & 1 else weight
                if delta % 0xFFFF:
                    break
                positions = rng.sample(range(nbits), count)
        buf = bytearray(packet)
        for pos in positions:
            buf[pos >> 3] ^= 1 << (pos & 7)
        return bytes(buf)

    def _arrive(self, packet: bytes) -> None:
        self.packets_delivered += 1
        self.bytes_delivered += len(packet)
        if self._observers:
            self._notify(self._clock(), packet, "deliver")
        self._deliver(packet)

    def _notify(self, now: int, packet: bytes, event: str) -> None:
        for callback in tuple(self._observers):
            callback(now, self, packet, event)


def _mark_ce(packet: bytes) -> bytes | None:
    """``packet`` with its ECN field set to CE (RFC 3168 §5), or None if it is
    not ECN-capable (or not IP).  IPv4's header checksum is recomputed."""
    if len(packet) < 2:
        return None
    version = packet[0] >> 4
    if version == 4:
        if not packet[1] & 3 or len(packet) < 20:
            return None
        buf = bytearray(packet)
        buf[1] |= 3
        hl = (buf[0] & 0x0F) * 4
        buf[10:12] = b"\0\0"
        s = sum(int.from_bytes(buf[i:i + 2], "big") for i in range(0, hl, 2))
        while s > 0xFFFF:
            s = (s & 0xFFFF) + (s >> 16)
        buf[10:12] = (~s & 0xFFFF).to_bytes(2, "big")
        return bytes(buf)
    if version == 6:
        if not packet[1] & 0x30:
            return None
        buf = bytearray(packet)
        buf[1] |= 0x30
        return bytes(buf)
    return None


def serialization_us(nbytes: int, rate_bps: int) -> int:
    """Wire time of ``nbytes`` at ``rate_bps``, rounded up to a whole microsecond."""
    return -(-nbytes * _UNITS_PER_BYTE // rate_bps)
