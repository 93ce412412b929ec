"""The real-time driver: feeds the sans-I/O engine from a packet device.

One thread runs the loop: wait on the device's fd (and a wake-up pipe) until
the engine's next deadline, read a batch of packets, hand them to
``Stack.receive``, fire due timers, write what the engine wants to send.
No busy polling: with nothing to do it sleeps in ``select`` until a packet
arrives, a user call needs it, or a timer is due.  No per-connection threads.

User code (the blocking socket API) runs in its own threads and enters the
engine through ``Driver.call(fn)``, which holds the driver's lock, runs
``fn(now)``, flushes output and wakes the loop if the next deadline moved
earlier.  Waiting for readiness uses ``Driver.cond``, a Condition on that
same lock which connection wakers notify (``Driver.notify``).

Two extras for tests and labs:

* ``pcap=`` (a :class:`tcpstack.pcap.PcapWriter`) records every packet at the
  stack's boundary -- what the engine sent, before any egress impairment, and
  what it was handed, after any ingress impairment -- with wall-clock
  timestamps, as tcpdump on the host would.
* ``egress=`` / ``ingress=`` (an :class:`Impairment`) put netem-like loss,
  delay, reordering and duplication between the engine and the device.
  ``tc netem`` on the kernel's side of a TUN only shapes what the kernel
  sends (a qdisc acts on egress); the driver's egress impairment covers the
  other direction without an ifb device, and both work on kernels built
  without sch_netem.

:class:`LoopbackDevice` is a device that hands every packet back to the
same stack (like ``lo``): one stack talking to itself, in real time, with no
privileges -- what the socket API's unit tests run on.
"""

from __future__ import annotations

import errno
import heapq
import os
import random
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from ..tcp import Stack
from ..wire.checksum import internet_checksum
from .tun import VnetHdr

T = TypeVar("T")


class PacketDevice(Protocol):
    def fileno(self) -> int: ...
    def read_batch(self, max_packets: int = 64) -> list[bytes]: ...
    def write_batch(self, packets: Any) -> int: ...
    def close(self) -> None: ...


def now_us() -> int:
    """The driver's clock: CLOCK_MONOTONIC in microseconds."""
    return time.monotonic_ns() // 1000


class Impairment:
    """netem-like impairment of one direction, applied by the driver.

    Same meaning as ``tc qdisc ... netem loss L delay D J reorder R duplicate P``
    (without correlation, rate or a queue limit), drawn in the order Linux's
    ``netem_enqueue`` draws (net/sched/sch_netem.c):

    * duplication first, then loss; a loss takes one copy away, so a packet
      both duplicated and lost goes out once, unchanged;
    * a duplicate re-enters netem with duplication off: its own loss draw,
      its own reorder and delay draws;
    * each copy that goes on is held ``delay_ms`` (± ``jitter_ms``, uniform:
      netem's ``tabledist`` without a distribution table), except that with
      probability ``reorder`` it goes out at once, overtaking the held ones.
      That is netem's reordering with ``gap`` unset (tc then sets gap 1, so
      every packet draws independently); like tc, reordering needs a delay.

    Deterministic for a given ``seed``.  ``dropped`` counts the copies netem
    would drop (its ``drops`` statistic), ``duplicated`` the clones made.
    """

    def __init__(
        self,
        *,
        loss: float = 0.0,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        for name, p in (("loss", loss), ("reorder", reorder), ("duplicate", duplicate)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if delay_ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must not be negative")
        if reorder and not delay_ms:
            # tc refuses it too: "reordering not possible without specifying some delay"
            raise ValueError("reordering needs a delay (give delay_ms > 0, as tc netem requires)")
        self.loss = loss
        self.delay_us = int(delay_ms * 1000)
        self.jitter_us = int(jitter_ms * 1000)
        self.reorder = reorder
        self.duplicate = duplicate
        self.rng = random.Random(seed)
        self._held: list[tuple[int, int, Any]] = []  # (release time, tiebreak, packet)
        self._n = 0
        # counters
        self.packets = 0
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0

    def __repr__(self) -> str:
        return (
            f"Impairment(loss={self.loss}, delay_ms={self.delay_us / 1000}, jitter_ms={self.jitter_us / 1000}, "
            f"reorder={self.reorder}, duplicate={self.duplicate})"
        )

    def counters(self) -> dict[str, int]:
        return {"packets": self.packets, "dropped": self.dropped, "duplicated": self.duplicated,
                "reordered": self.reordered, "held": len(self._held)}

    def apply(self, packets: Iterable[Any], now: int) -> list[Any]:
        """Impair ``packets`` (any objects: bytes, or (packet, gso) pairs with offload);
        returns those to deliver now (held ones come from ``release``)."""
        rnd = self.rng.random
        loss, duplicate = self.loss, self.duplicate
        out: list[Any] = []
        for p in packets:
            self.packets += 1
            dup = bool(duplicate) and rnd() < duplicate
            lost = bool(loss) and rnd() < loss
            if lost and not dup:
                self.dropped += 1
                continue
            if dup and not lost:
                self.duplicated += 1
                if loss and rnd() < loss:  # the clone's own pass through netem
                    self.dropped += 1
                else:
                    self._enqueue(p, now, out)
            self._enqueue(p, now, out)
        return out

    def _enqueue(self, p: Any, now: int, out: list[Any]) -> None:
        if not self.delay_us and not self.jitter_us:
            out.append(p)
            return
        rnd = self.rng.random
        if self.reorder and rnd() < self.reorder:
            self.reordered += 1
            out.append(p)
            return
        d = self.delay_us
        if self.jitter_us:
            d = max(0, d + int((rnd() * 2 - 1) * self.jitter_us))
        self._n += 1
        heapq.heappush(self._held, (now + d, self._n, p))

    def release(self, now: int) -> list[Any]:
        """Held packets whose delay has passed, in release order."""
        held = self._held
        out = []
        while held and held[0][0] <= now:
            out.append(heapq.heappop(held)[2])
        return out

    def next_release(self) -> int | None:
        return self._held[0][0] if self._held else None


class LoopbackDevice:
    """A packet device that delivers every packet written to it back to its reader.

    One stack on it talks to itself, as a host does over ``lo``: a connection
    from 198.18.0.2:40000 to 198.18.0.2:7 and the one accepted for it are two
    TCBs with mirrored 4-tuples.  Readiness is signalled through a pipe so the
    driver's ``select`` sees it.  Not thread-safe by itself: the driver only
    touches it under its lock.
    """

    def __init__(self) -> None:
        self._q: deque[bytes] = deque()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._signalled = False
        self.rx_packets = self.tx_packets = 0

    def fileno(self) -> int:
        return self._r

    def write_batch(self, packets: Iterable[bytes | bytearray | memoryview]) -> int:
        n = 0
        for p in packets:
            self._q.append(bytes(p))
            n += 1
        self.tx_packets += n
        if n and not self._signalled:
            self._signalled = True
            os.write(self._w, b"\0")
        return n

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        return self.write_batch((packet,)) == 1

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        q = self._q
        out = [q.popleft() for _ in range(min(max_packets, len(q)))]
        self.rx_packets += len(out)
        if not q and self._signalled:
            self._signalled = False
            try:
                while os.read(self._r, 4096):
                    pass
            except BlockingIOError:
                pass
        return out

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._r = self._w = -1


class Driver:
    """Runs ``stack`` on ``device`` in one thread; user threads enter through ``call``."""

    def __init__(
        self,
        stack: Stack,
        device: PacketDevice,
        *,
        pcap: Any = None,
        batch: int = 64,
        egress: Impairment | None = None,
        ingress: Impairment | None = None,
    ) -> None:
        self.stack = stack
        self.device = device
        self.pcap = pcap  # a PcapWriter (tcpstack.pcap) or None
        self.batch = batch
        self.egress = egress
        self.ingress = ingress
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sleep_until: int | None = None  # deadline the loop sleeps for (None = forever)
        self._sleeping = False
        self._stop = False
        self._thread: threading.Thread | None = None
        #: Set when the loop died of an exception (user calls then fail with ENETDOWN).
        self.error: BaseException | None = None
        #: True once stop() was called: blocked user calls wake up and fail.
        self.stopped = False
        self.loops = 0
        # A device with a virtio-net header (TUN offload): the engine leaves checksums
        # to the device (Stack(checksum_offload=True)) and, with gso_max, hands it
        # TSO super-segments; the kernel hands us GRO/TSO super-segments in return.
        self._vnet = bool(getattr(device, "vnet_hdr_len", 0))
        if self._vnet and not stack.checksum_offload:
            raise ValueError(
                "the device has offload on (virtio-net headers): create the Stack with "
                "checksum_offload=True (and gso_max for TSO), or open the device without offload"
            )
        self._hdrs: dict[tuple[int, int, int], Any] = {}
        self._deferred: deque[Callable[[int], Any]] = deque()
        # pcap wants wall-clock time; the engine runs on the monotonic clock.
        self._epoch_offset = time.time_ns() // 1000 - now_us()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Driver:
        if self._thread is not None:
            raise RuntimeError("driver already started")
        self._thread = threading.Thread(target=self._run, name="tcpstack-driver", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (idempotent). Threads blocked in ``wait`` wake up; later
        ``call``s raise ``OSError(ENETDOWN)``."""
        if self.stopped:
            return
        self._stop = True
        self._poke()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.pcap is not None:
            self.pcap.flush()

    @property
    def running(self) -> bool:
        return not self.stopped and self.error is None

    def __enter__(self) -> Driver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ user side
    def call(self, fn: Callable[[int], T]) -> T:
        """Run ``fn(now)`` on the engine under the lock, then flush its output."""
        with self.lock:
            if not self.running:
                raise self.down_error()
            try:
                return fn(now_us())
            finally:
                self._flush()
                self._maybe_poke()

    def down_error(self) -> OSError:
        why = f"the driver loop failed: {self.error!r}" if self.error is not None else "the stack was stopped"
        return OSError(errno.ENETDOWN, f"Network is down ({why})")

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (evaluated under the lock) is true, the
        timeout passes, or the driver stops (then the result is ``predicate()``)."""
        with self.cond:
            return self.cond.wait_for(lambda: predicate() or not self.running, timeout) and predicate()

    def defer(self, fn: Callable[[int], Any]) -> None:
        """Run ``fn(now)`` on the loop thread at its next safe point, without waiting.
        For callers that must not take the lock (a ``__del__`` run by the garbage
        collector may interrupt any thread, even the loop in mid-segment)."""
        self._deferred.append(fn)
        self._poke()

    def notify(self, _obj: object = None) -> None:
        """A waker for connections and listeners: wakes threads blocked in ``wait``.
        Called with the lock held (from inside engine processing)."""
        self.cond.notify_all()

    # ------------------------------------------------------------------ the loop
    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full (the loop is going to wake) or already closed

    def _next_wakeup(self) -> int | None:
        d = self.stack.next_deadline()
        for imp in (self.egress, self.ingress):
            if imp is not None:
                r = imp.next_release()
                if r is not None and (d is None or r < d):
                    d = r
        return d

    def _maybe_poke(self) -> None:
        if not self._sleeping:
            return
        d = self._next_wakeup()
        if d is not None and (self._sleep_until is None or d < self._sleep_until):
            self._poke()

    def _flush(self) -> None:
        stack = self.stack
        vnet = self._vnet
        out: list[Any]  # packets, or (packet, gso_size) pairs with offload
        if not vnet:
            out = stack.transmit()
        elif stack.gso_max:
            out = stack.transmit_gso()  # (packet, gso_size) pairs
        else:
            out = [(p, 0) for p in stack.transmit()]
        if self.pcap is not None and out:
            t = now_us() + self._epoch_offset
            for item in out:
                # With offload the engine wrote only the pseudo-header sum: record the
                # packet as it will be on the wire (the kernel completes the checksum).
                pkt: Any = item[0] if vnet else item
                self.pcap.write(t, _finish_outgoing(pkt) if vnet else pkt)
        egress = self.egress
        if egress is not None:
            now = now_us()
            out = egress.release(now) + egress.apply(out, now) if out else egress.release(now)
        if not out:
            return
        if vnet:
            items = [(self._vnet_hdr(p, gso), p) for p, gso in out]
            self.device.write_batch_vnet(items)  # type: ignore[attr-defined]
        else:
            self.device.write_batch(out)

    def _vnet_hdr(self, p: Any, gso: int) -> Any:
        ip_len = 20 if p[0] >> 4 == 4 else 40
        tcp_len = (p[ip_len + 12] >> 4) * 4
        key = (ip_len, tcp_len, gso)
        h = self._hdrs.get(key)
        if h is None:
            if gso:
                h = VnetHdr.tcp_gso(ip_len, tcp_len, gso, ipv6=ip_len == 40)
            else:
                h = VnetHdr.tcp_csum(ip_len)
            self._hdrs[key] = h
        return h

    def _deliver(self, pkts: list[Any], now: int) -> None:
        pcap = self.pcap
        receive = self.stack.receive
        if pcap is not None:
            t = now + self._epoch_offset
            for p in pkts:
                pcap.write(t, p)
                receive(p, now)
        else:
            for p in pkts:
                receive(p, now)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.device.fileno(), selectors.EVENT_READ, "dev")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        stack = self.stack
        try:
            while not self._stop:
                with self.lock:
                    d = self._next_wakeup()
                    self._sleep_until = d
                    self._sleeping = True
                timeout = None if d is None else max(0.0, (d - now_us()) / 1e6)
                ready = sel.select(timeout)
                with self.lock:
                    self._sleeping = False
                    self.loops += 1
                    for key, _ in ready:
                        if key.data == "wake":
                            try:
                                while os.read(self._wake_r, 4096):
                                    pass
                            except BlockingIOError:
                                pass
                        else:
                            self._read_device()
                    while self._deferred:
                        self._deferred.popleft()(now_us())
                    if self.ingress is not None:
                        now = now_us()
                        due = self.ingress.release(now)
                        if due:
                            self._deliver(due, now)
                    stack.poll(now_us())
                    self._flush()
        except BaseException as exc:  # surface it to user threads instead of dying silently
            with self.cond:
                self.error = exc
                self.cond.notify_all()
            raise
        finally:
            sel.close()

    def _read_device(self) -> None:
        # Drain the device (bounded: a few batches per wake-up so timers still run).
        vnet = self._vnet
        for _ in range(16):
            if vnet:
                frames = self.device.read_batch_vnet(self.batch)  # type: ignore[attr-defined]
                if self.pcap is None:
                    pkts: list[Any] = [p for _, p in frames]  # the engine skips checksums
                else:  # capture what the wire would carry: finish the kernel's checksums
                    pkts = [_complete_checksum(h, p) for h, p in frames]
            else:
                pkts = self.device.read_batch(self.batch)
            if not pkts:
                return
            now = now_us()
            n = len(pkts)
            if self.ingress is not None:
                pkts = self.ingress.apply(pkts, now)
            if pkts:
                self._deliver(pkts, now)
            self._flush()
            if n < self.batch:
                return


_NEEDS_CSUM = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM


def _complete_checksum(hdr: Any, packet: memoryview) -> bytes | memoryview:
    """A packet read with virtio-net offload, made whole (for the capture).

    With ``NEEDS_CSUM`` the kernel left the L4 checksum unfinished (Linux's
    CHECKSUM_PARTIAL): the field at ``csum_start + csum_offset`` holds the
    folded pseudo-header sum, so the checksum over ``packet[csum_start:]`` as
    it stands is the value to store.  GSO super-segments (up to 64 KiB, one
    TCP segment whose payload spans many MSS) need nothing else.
    """
    if not hdr.flags & _NEEDS_CSUM:
        return packet
    start = hdr.csum_start
    field = start + hdr.csum_offset
    if field + 2 > len(packet):
        return packet  # malformed header: let the engine count the bad checksum
    buf = bytearray(packet)
    buf[field:field + 2] = internet_checksum(memoryview(buf)[start:]).to_bytes(2, "big")
    return bytes(buf)


def _finish_outgoing(packet: bytes) -> bytes:
    """An engine packet built for checksum offload (pseudo-header sum in the TCP
    checksum field), with the checksum the kernel will complete."""
    ip_len = 20 if packet[0] >> 4 == 4 else 40  # the engine sends no IP options
    return bytes(_complete_checksum(VnetHdr.tcp_csum(ip_len), memoryview(packet)))
