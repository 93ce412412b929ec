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
same lock which connection wakers notify.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..tcp import Stack

T = TypeVar("T")


class PacketDevice(Protocol):
    def fileno(self) -> int: ...
    def read_batch(self, max_packets: int = 64) -> list[bytes]: ...
    def write_batch(self, packets: Any) -> int: ...
    def close(self) -> None: ...


def now_us() -> int:
    """The driver's clock: CLOCK_MONOTONIC in microseconds."""
    return time.monotonic_ns() // 1000


class Driver:
    def __init__(self, stack: Stack, device: PacketDevice, *, pcap: Any = None, batch: int = 64) -> None:
        self.stack = stack
        self.device = device
        self.pcap = pcap  # a PcapWriter (tcpstack.pcap) or None
        self.batch = batch
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sleep_until: int | None = None  # deadline the loop sleeps for (None = forever)
        self._sleeping = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.loops = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Driver:
        if self._thread is not None:
            raise RuntimeError("driver already started")
        self._thread = threading.Thread(target=self._run, name="tcpstack-driver", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self._poke()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Driver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ user side
    def call(self, fn: Callable[[int], T]) -> T:
        """Run ``fn(now)`` on the engine under the lock, then flush its output."""
        with self.lock:
            try:
                return fn(now_us())
            finally:
                self._flush()
                self._maybe_poke()

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (evaluated under the lock) is true or the timeout passes."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def notify(self, _obj: object = None) -> None:
        """A waker for connections and listeners: wakes threads blocked in ``wait``.
        Called with the lock held (from inside engine processing)."""
        self.cond.notify_all()

    # ------------------------------------------------------------------ the loop
    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is already going to wake

    def _maybe_poke(self) -> None:
        if not self._sleeping:
            return
        d = self.stack.next_deadline()
        if d is not None and (self._sleep_until is None or d < self._sleep_until):
            self._poke()

    def _flush(self) -> None:
        out = self.stack.transmit()
        if out:
            if self.pcap is not None:
                t = now_us()
                for p in out:
                    self.pcap.write(t, p)
            self.device.write_batch(out)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        dev_fd = self.device.fileno()
        sel.register(dev_fd, selectors.EVENT_READ, "dev")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        stack = self.stack
        try:
            while not self._stop:
                with self.lock:
                    d = stack.next_deadline()
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
                    stack.poll(now_us())
                    self._flush()
        except BaseException as exc:  # surface it to user threads instead of dying silently
            self.error = exc
            with self.cond:
                self.cond.notify_all()
            raise
        finally:
            sel.close()

    def _read_device(self) -> None:
        stack = self.stack
        pcap = self.pcap
        # Drain the device (bounded: a few batches per wake-up so timers still run).
        for _ in range(16):
            pkts = self.device.read_batch(self.batch)
            if not pkts:
                return
            now = now_us()
            for p in pkts:
                if pcap is not None:
                    pcap.write(now, p)
                stack.receive(p, now)
            self._flush()
            if len(pkts) < self.batch:
                return
