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

Direct processing.  A user thread that has to wait (``Driver.wait``: recv,
accept, send with a full buffer, connect) does not just sleep on the
condition while the loop thread takes the packet and then wakes it: one such
thread at a time, the *poller*, waits on the device itself and runs the
engine on what arrives, as Linux processes a socket's backlog in process
context instead of in softirq.  A request/response round trip then costs one
thread wake-up instead of two plus a hand-over of the GIL.  The loop thread
and the poller both watch the device with ``EPOLLEXCLUSIVE``, the poller's
epoll registered first, so the kernel wakes the poller while it is waiting
and the loop thread only otherwise; the loop thread keeps the timers.  Since
a wake-up meant for the device may reach the poller along with another one,
the poller always reads the device after waking.

When the loop thread is woken while a user thread is *busy* (inside ``call``
or ``wait``: typically writing its answer, during which the next request
arrives) it sets ``_backlog``, stops watching the device and sleeps on; the
last busy thread reads the device on its way out and resumes the loop's
watch, as ``release_sock`` runs a socket's backlog.  A user thread reads one
batch; a longer burst is left to the loop thread, so that the caller's own
work overlaps the engine's.

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
import select
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
        direct: bool = True,
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
        # Direct processing (module doc): the poller's epoll (device + an eventfd that
        # notify() signals), registered on the device before the loop's own epoll so
        # that an EPOLLEXCLUSIVE wake-up goes to a waiting poller first.
        self.direct = direct
        self._poller: int | None = None  # thread ident of the user thread polling the device
        self._poller_signalled = False
        self._poller_closed = False
        self._poller_efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller_ep = select.epoll()
        _register_exclusive(self._poller_ep, device.fileno())
        self._poller_ep.register(self._poller_efd, select.EPOLLIN)
        #: Wake-ups of a user thread that ran the engine itself (direct processing).
        self.direct_polls = 0
        #: Device wake-ups the loop thread left to such a thread.
        self.skips = 0
        #: Times call() found such a wake-up left to it and read the device on its way out.
        self.backlogs = 0
        self._busy = 0  # user threads inside call() or wait(), awake (nested calls count twice)
        self._backlog = False  # the device was ready while _busy: call() reads it on exit
        self._more = False  # the device may hold packets nobody will be woken for: the loop drains it
        # While a user thread is busy the loop thread stops watching the device (one
        # wake-up per busy spell, not one per packet); the last busy thread resumes it.
        self._paused = False
        self._reg_lock = threading.Lock()  # serialises pausing and resuming (epoll_ctl)
        self._ep: select.epoll | None = None  # the loop thread's epoll

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
            self.notify()
            if self._poller is None:  # else the poller closes them when it wakes
                self._close_poller()
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
            self._busy += 1
            try:
                return fn(now_us())
            finally:
                # Nested so that a flush that raises (a Ctrl-C in the main thread, a
                # device error) still wakes the loop for the timers fn armed and still
                # ends this thread's busy spell: else the loop would go on leaving the
                # device to a thread that has left.
                try:
                    try:
                        self._flush()
                    finally:
                        self._maybe_poke()
                finally:
                    self._unbusy()

    def down_error(self) -> OSError:
        why = f"the driver loop failed: {self.error!r}" if self.error is not None else "the stack was stopped"
        return OSError(errno.ENETDOWN, f"Network is down ({why})")

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (evaluated under the lock) is true, the
        timeout passes, or the driver stops (then the result is ``predicate()``).

        While it waits, the calling thread may be the poller: it runs the
        engine on the packets that arrive (direct processing, module doc)."""
        with self.cond:
            if predicate():
                return True
            self._busy += 1  # the loop may leave the device to us (see call())
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self.running:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    if self.direct and self._poller is None:
                        self._poll_direct(remaining)  # reads the device whenever it wakes
                    else:
                        # Asleep on the condition this thread reads nothing: stop being
                        # busy first (taking what the loop left to it, if anything).
                        try:
                            if not self._unbusy():
                                self.cond.wait(remaining)
                        finally:
                            self._busy += 1
                    if predicate():
                        return True
                return predicate()
            finally:
                self._unbusy()

    def _unbusy(self) -> bool:
        """A user thread stops being busy (lock held). The last one takes what the
        loop thread left to it (as Linux's release_sock runs the socket backlog):
        the device's backlog, and the device's wake-ups, which the loop paused
        meanwhile. True if it read the device."""
        self._busy -= 1
        if self._busy:
            return False
        try:
            if self._backlog and self.running:
                self.backlogs += 1
                self._process_device()
                return True
            return False
        finally:
            if self._paused:
                self._resume()

    def _poll_direct(self, timeout: float | None) -> None:
        """Wait on the device as the poller (lock held on entry and exit), then run
        the engine on whatever arrived."""
        self._poller = threading.get_ident()
        state = self.lock._release_save()  # type: ignore[attr-defined]  # as Condition.wait does
        try:
            try:
                self._poller_ep.poll(-1 if timeout is None else timeout)
            finally:
                # A signal that came while this thread waited for the lock raises
                # right after _acquire_restore returns: it must stop being the
                # poller all the same, or the loop would leave the device to it.
                try:
                    self.lock._acquire_restore(state)  # type: ignore[attr-defined]
                finally:
                    self._poller = None
            if self._poller_signalled:
                self._poller_signalled = False
                try:
                    os.eventfd_read(self._poller_efd)
                except OSError:
                    pass
            if not self.running:
                if self.stopped:
                    self._close_poller()
                return
            self.direct_polls += 1
        except BaseException:
            self._more = True  # interrupted before reading: a wake-up the loop left to us may be lost
            self._poke()
            raise
        # Always read: the device's wake-up may have come to this epoll with the
        # eventfd's (EPOLLEXCLUSIVE then did not wake the loop thread).
        self._process_device()

    def _process_device(self) -> None:
        """Direct processing in a user thread (lock held): one batch from the device,
        due timers, flush.  A longer burst is the loop thread's: it drains the rest
        while this thread goes back to its caller (who may have work of its own: the
        two then overlap, as softirq and process context do).  If the engine fails
        here the stack is down for every thread.

        A KeyboardInterrupt (or SystemExit) that a signal handler raises here, in
        the main thread, is not the engine failing: it reaches the caller as
        itself, as one landing in ``call()`` does, and the stack stays up (what is
        left on the device is the loop thread's)."""
        try:
            if self._read_device(1):
                self._poke()  # more is waiting (_more is set): the loop thread drains it
            self.stack.poll(now_us())
            self._flush()
            self._maybe_poke()  # a timer the segments armed may be due before the loop wakes
        except Exception as exc:
            self.error = exc
            self.notify()
            self._poke()
            raise self.down_error() from exc
        except BaseException:
            self._more = True
            self._poke()
            raise

    def _pause(self) -> None:
        with self._reg_lock:
            if not self._paused and self._ep is not None:
                self._paused = True
                self._ep.unregister(self.device.fileno())

    def _resume(self) -> None:
        with self._reg_lock:
            if self._paused and self._ep is not None:
                self._paused = False
                # Readable already? Then the loop is woken at once (edge-triggered too).
                _register_exclusive(self._ep, self.device.fileno(), select.EPOLLET)

    def _close_poller(self) -> None:
        if not self._poller_closed:
            self._poller_closed = True
            self._poller_ep.close()
            os.close(self._poller_efd)

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
        if self._poller is not None and not self._poller_signalled:
            self._poller_signalled = True  # one eventfd write per wait, not per segment
            try:
                os.eventfd_write(self._poller_efd, 1)
            except OSError:
                pass

    # ------------------------------------------------------------------ the loop
    def _poke(self) -> None:
        if self.stopped:
            return  # the pipe is closed (or about to be), and its numbers may be reused
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
        if pcap is not None:
            t = now + self._epoch_offset
            for p in pkts:
                pcap.write(t, p)
        self.stack.receive_batch(pkts, now)

    def _run(self) -> None:
        ep = select.epoll()
        dev_fd, wake_fd = self.device.fileno(), self._wake_r
        # Edge-triggered, after the poller's registration: a waiting poller is woken
        # first, and a wake-up this loop leaves to the poller does not repeat.
        _register_exclusive(ep, dev_fd, select.EPOLLET)
        ep.register(wake_fd, select.EPOLLIN)
        self._ep = ep
        stack = self.stack
        direct = self.direct
        try:
            with self.lock:
                d = self._sleep_until = self._next_wakeup()
                self._sleeping = True
            while not self._stop:
                more = self._more
                if more:
                    timeout = 0.0
                else:
                    timeout = -1.0 if d is None else max(0.0, (d - now_us()) / 1e6)
                ready = ep.poll(timeout)
                if direct and not more and len(ready) == 1 and ready[0][0] == dev_fd:
                    # Only the device: leave it to a user thread that will read it anyway
                    # (direct processing) -- the poller, which reads whenever it wakes, or
                    # one busy in call() or wait(), which reads on its way out (or before
                    # it sleeps) if _backlog is set. _backlog is set before _busy is read
                    # and a user thread lowers _busy before reading _backlog, so one of
                    # the two threads always sees the other (the GIL orders them).
                    if self._poller is not None:
                        self.skips += 1
                        continue
                    self._backlog = True
                    if self._busy:
                        # Pause first, then look again: a thread that stopped being busy
                        # meanwhile either saw _paused (and resumed) or left it to us.
                        self._pause()
                        if self._busy:
                            self.skips += 1
                            continue
                        self._resume()
                with self.lock:
                    self._sleeping = False
                    self.loops += 1
                    dev = self._more
                    for fd, _ in ready:
                        if fd == wake_fd:
                            try:
                                while os.read(self._wake_r, 4096):
                                    pass
                            except BlockingIOError:
                                pass
                        else:
                            dev = True
                    if dev:
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
                    # Sleep until the next deadline; a user call that moves it earlier
                    # pokes (_maybe_poke). A skipped wake-up above keeps this deadline
                    # and does not take the lock at all.
                    d = self._sleep_until = self._next_wakeup()
                    self._sleeping = True
        except BaseException as exc:  # surface it to user threads instead of dying silently
            with self.cond:
                self.error = exc
                self.notify()
            raise
        finally:
            with self._reg_lock:
                self._ep = None
                ep.close()

    def _read_device(self, batches: int = 16) -> bool:
        """Drain the device, bounded (a few batches per wake-up so that timers and
        user calls still get their turn); True (and _more set) if it stopped at the bound."""
        self._backlog = self._more = False
        vnet = self._vnet
        for _ in range(batches):
            if vnet:
                frames = self.device.read_batch_vnet(self.batch)  # type: ignore[attr-defined]
                if self.pcap is None:
                    pkts: list[Any] = [p for _, p in frames]  # the engine skips checksums
                else:  # capture what the wire would carry: finish the kernel's checksums
                    pkts = [_complete_checksum(h, p) for h, p in frames]
            else:
                pkts = self.device.read_batch(self.batch)
            if not pkts:
                return False
            now = now_us()
            n = len(pkts)
            if self.ingress is not None:
                pkts = self.ingress.apply(pkts, now)
            if pkts:
                self._deliver(pkts, now)
            self._flush()
            if n < self.batch:
                return False
        self._more = True
        return True


def _register_exclusive(ep: select.epoll, fd: int, flags: int = 0) -> None:
    """Watch ``fd`` for input with EPOLLEXCLUSIVE (Linux >= 4.5): of the epolls
    registered on it with the flag, a wake-up goes to the first that has a thread
    waiting.  Older kernels refuse the flag; then both are woken (correct, slower)."""
    try:
        ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE | flags)
    except OSError:
        ep.register(fd, select.EPOLLIN | flags)


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
